//! `rte_security`: capability probing (inline / lookaside IPsec offload) and
//! inline-crypto ESP sessions (AES-GCM; the NIC encrypts on transmit and
//! decrypts/verifies on receive, software builds and checks ESP).

use std::net::IpAddr;
use std::os::raw::c_void;
use std::ptr::NonNull;
use std::sync::Arc;

use crate::cryptodev::CryptoDev;
use crate::eal::Eal;
use crate::error::{Error, Result, c_string, check};
use crate::ethdev::EthPort;
use crate::mbuf::Mbuf;
use crate::mempool::RawPool;
use crate::sys;

/// Where the IPsec work happens for a security capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecurityAction {
    /// NIC encrypts/decrypts inline; software builds ESP.
    InlineCrypto,
    /// NIC handles the whole ESP protocol inline.
    InlineProtocol,
    /// Crypto device handles the whole ESP protocol.
    LookasideProtocol,
    /// CPU crypto (synchronous).
    CpuCrypto,
    /// A value this crate does not know.
    Other(i32),
}

/// One capability of a security context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SecurityCapability {
    /// Action type.
    pub action: SecurityAction,
    /// Protocol (`RTE_SECURITY_PROTOCOL_*`, 1 = IPsec).
    pub protocol: i32,
    /// For IPsec: true when ESP (false = AH).
    pub ipsec_esp: bool,
    /// For IPsec: true for tunnel mode, false for transport.
    pub ipsec_tunnel: bool,
    /// For IPsec: true for ingress (decrypt), false for egress.
    pub ipsec_ingress: bool,
    /// For IPsec: largest anti-replay window (0 = none).
    pub replay_window_max: u32,
}

impl SecurityCapability {
    /// Whether this is an IPsec capability.
    pub fn is_ipsec(&self) -> bool {
        self.protocol == sys::RTE_SECURITY_PROTOCOL_IPSEC as i32
    }
}

/// Result of probing a device for rte_security support.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecuritySupport {
    /// The device has no security context (the usual case for vdevs).
    None,
    /// The device has a security context with these capabilities.
    Capabilities(Vec<SecurityCapability>),
}

impl SecuritySupport {
    /// Whether any inline-crypto IPsec capability is present.
    pub fn has_inline_ipsec(&self) -> bool {
        match self {
            SecuritySupport::None => false,
            SecuritySupport::Capabilities(caps) => caps.iter().any(|c| {
                c.is_ipsec() && matches!(c.action, SecurityAction::InlineCrypto | SecurityAction::InlineProtocol)
            }),
        }
    }
}

fn action_from_raw(raw: i32) -> SecurityAction {
    match raw as u32 {
        sys::RTE_SECURITY_ACTION_TYPE_INLINE_CRYPTO => SecurityAction::InlineCrypto,
        sys::RTE_SECURITY_ACTION_TYPE_INLINE_PROTOCOL => SecurityAction::InlineProtocol,
        sys::RTE_SECURITY_ACTION_TYPE_LOOKASIDE_PROTOCOL => SecurityAction::LookasideProtocol,
        sys::RTE_SECURITY_ACTION_TYPE_CPU_CRYPTO => SecurityAction::CpuCrypto,
        _ => SecurityAction::Other(raw),
    }
}

/// Read the capabilities of a security context pointer (NULL = none).
fn probe_ctx(ctx: *mut std::os::raw::c_void) -> SecuritySupport {
    if ctx.is_null() {
        return SecuritySupport::None;
    }
    const MAX: usize = 64;
    let mut raw = [sys::ironsa_sec_cap::default(); MAX];
    // SAFETY: ctx is a live security context returned by DPDK; raw has room
    // for MAX entries and the shim never writes more.
    let total = unsafe { sys::ironsa_security_caps(ctx, raw.as_mut_ptr(), MAX as i32) };
    let n = usize::try_from(total).unwrap_or(0).min(MAX);
    SecuritySupport::Capabilities(
        raw[..n]
            .iter()
            .map(|c| SecurityCapability {
                action: action_from_raw(c.action),
                protocol: c.protocol,
                ipsec_esp: c.ipsec_proto == sys::RTE_SECURITY_IPSEC_SA_PROTO_ESP as i32,
                ipsec_tunnel: c.ipsec_mode == sys::RTE_SECURITY_IPSEC_SA_MODE_TUNNEL as i32,
                ipsec_ingress: c.ipsec_direction == sys::RTE_SECURITY_IPSEC_SA_DIR_INGRESS as i32,
                replay_window_max: c.replay_win_sz_max,
            })
            .collect(),
    )
}

impl EthPort {
    /// rte_security support of the port (inline IPsec). `None` on vdevs.
    pub fn security(&self) -> SecuritySupport {
        probe_ctx(self.security_ctx_ptr())
    }
}

impl CryptoDev {
    /// rte_security support of the crypto device (lookaside protocol).
    pub fn security(&self) -> SecuritySupport {
        // SAFETY: self.id() is a valid device; NULL when unsupported.
        probe_ctx(unsafe { sys::rte_cryptodev_get_sec_ctx(self.id()) })
    }
}

/// An ESP SA as an rte_security INLINE_CRYPTO session sees it (AES-GCM: the
/// NIC encrypts and verifies; software builds and checks ESP around it).
#[derive(Clone, Copy)]
pub struct InlineIpsecSa<'a> {
    /// SPI.
    pub spi: u32,
    /// The 4-byte GCM salt (the last bytes of the key material).
    pub salt: [u8; 4],
    /// Egress (we encrypt) or ingress (we decrypt).
    pub egress: bool,
    /// Tunnel mode: `(our address, the peer's)`; `None` for transport mode.
    pub tunnel: Option<(IpAddr, IpAddr)>,
    /// The outer (transport mode: the only) IP header is IPv6.
    pub ipv6: bool,
    /// Extended sequence numbers.
    pub esn: bool,
    /// Initial ESN (64-bit sequence number) of the SA.
    pub esn_initial: u64,
    /// UDP encapsulation `(source port, destination port)` (RFC 3948).
    pub udp: Option<(u16, u16)>,
    /// Replay window (0: the NIC checks none; software does).
    pub replay_window: u32,
    /// AES key (16 or 32 bytes; the salt excluded), borrowed for the call.
    pub key: &'a [u8],
}

impl std::fmt::Debug for InlineIpsecSa<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InlineIpsecSa")
            .field("spi", &format_args!("{:#x}", self.spi))
            .field("egress", &self.egress)
            .field("tunnel", &self.tunnel)
            .field("esn", &self.esn)
            .field("udp", &self.udp)
            .finish_non_exhaustive()
    }
}

/// IV (nonce) length of ESP AES-GCM as the session declares it.
const GCM_IV_LEN: u16 = 12;
/// ICV length of ESP AES-GCM.
const GCM_ICV_LEN: u16 = 16;

impl InlineIpsecSa<'_> {
    /// The flat C description (key borrowed from `self`).
    pub(crate) fn raw(&self) -> Result<sys::ironsa_ipsec_sa> {
        let key_len = u16::try_from(self.key.len())
            .ok()
            .filter(|l| *l == 16 || *l == 32)
            .ok_or_else(|| Error::InvalidArgument(format!("AES-GCM key of {} bytes", self.key.len())))?;
        let mut r = sys::ironsa_ipsec_sa {
            spi: self.spi,
            salt: self.salt,
            egress: i32::from(self.egress),
            esn: i32::from(self.esn),
            esn_initial: self.esn_initial,
            replay_win_sz: self.replay_window,
            key: self.key.as_ptr(),
            key_len,
            iv_len: GCM_IV_LEN,
            digest_len: GCM_ICV_LEN,
            aad_len: if self.esn { 12 } else { 8 },
            ipv6: i32::from(self.ipv6),
            ..Default::default()
        };
        if let Some((sport, dport)) = self.udp {
            r.udp_encap = 1;
            r.sport = sport;
            r.dport = dport;
        }
        if let Some((src, dst)) = self.tunnel {
            r.tunnel = 1;
            match (src, dst) {
                (IpAddr::V4(s), IpAddr::V4(d)) if !self.ipv6 => {
                    r.src[..4].copy_from_slice(&s.octets());
                    r.dst[..4].copy_from_slice(&d.octets());
                }
                (IpAddr::V6(s), IpAddr::V6(d)) if self.ipv6 => {
                    r.src = s.octets();
                    r.dst = d.octets();
                }
                _ => {
                    return Err(Error::InvalidArgument(
                        "tunnel addresses of different families, or not of the SA's".into(),
                    ));
                }
            }
        }
        Ok(r)
    }

    /// The `rte_security_session_conf` DPDK would get for this SA, read back
    /// field by field (what the C side builds; for tests and diagnostics).
    pub fn conf_view(&self) -> Result<InlineConfView> {
        let raw = self.raw()?;
        let mut v = sys::ironsa_ipsec_conf_view::default();
        // SAFETY: raw (with its borrowed key) and v are valid for the call;
        // the shim only fills local DPDK structures and v.
        check("rte_security_session_conf", unsafe {
            sys::ironsa_security_ipsec_conf_view(&raw, &mut v)
        })?;
        let addr = |b: [u8; 16]| match v.tunnel_type as u32 {
            sys::RTE_SECURITY_IPSEC_TUNNEL_IPV4 => Some(IpAddr::from([b[0], b[1], b[2], b[3]])),
            sys::RTE_SECURITY_IPSEC_TUNNEL_IPV6 => Some(IpAddr::from(b)),
            _ => None,
        };
        Ok(InlineConfView {
            inline_crypto: v.action as u32 == sys::RTE_SECURITY_ACTION_TYPE_INLINE_CRYPTO,
            ipsec: v.protocol as u32 == sys::RTE_SECURITY_PROTOCOL_IPSEC,
            spi: v.spi,
            salt: v.salt,
            egress: v.direction as u32 == sys::RTE_SECURITY_IPSEC_SA_DIR_EGRESS,
            esp: v.proto as u32 == sys::RTE_SECURITY_IPSEC_SA_PROTO_ESP,
            tunnel: v.mode as u32 == sys::RTE_SECURITY_IPSEC_SA_MODE_TUNNEL,
            esn: v.esn != 0,
            esn_value: v.esn_value,
            udp: (v.udp_encap != 0).then_some((v.sport, v.dport)),
            replay_window: v.replay_win_sz,
            tunnel_src: addr(v.src),
            tunnel_dst: addr(v.dst),
            ttl: v.ttl,
            aes_gcm: v.xform_type as u32 == sys::RTE_CRYPTO_SYM_XFORM_AEAD
                && v.aead_algo as u32 == sys::RTE_CRYPTO_AEAD_AES_GCM,
            encrypt: v.aead_op as u32 == sys::RTE_CRYPTO_AEAD_OP_ENCRYPT,
            key_len: v.key_len,
            iv_len: v.iv_len,
            icv_len: v.digest_len,
            aad_len: v.aad_len,
        })
    }
}

/// The fields of an inline IPsec session configuration (see [`InlineIpsecSa::conf_view`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InlineConfView {
    /// Action is `RTE_SECURITY_ACTION_TYPE_INLINE_CRYPTO`.
    pub inline_crypto: bool,
    /// Protocol is IPsec.
    pub ipsec: bool,
    /// SPI.
    pub spi: u32,
    /// Salt bytes.
    pub salt: [u8; 4],
    /// Direction egress.
    pub egress: bool,
    /// Protocol ESP.
    pub esp: bool,
    /// Tunnel mode.
    pub tunnel: bool,
    /// ESN option.
    pub esn: bool,
    /// Initial ESN value.
    pub esn_value: u64,
    /// UDP encapsulation ports.
    pub udp: Option<(u16, u16)>,
    /// Replay window.
    pub replay_window: u32,
    /// Tunnel source.
    pub tunnel_src: Option<IpAddr>,
    /// Tunnel destination.
    pub tunnel_dst: Option<IpAddr>,
    /// Outer TTL / hop limit.
    pub ttl: u8,
    /// The crypto transform is AES-GCM AEAD.
    pub aes_gcm: bool,
    /// AEAD operation is encrypt.
    pub encrypt: bool,
    /// Key length.
    pub key_len: u16,
    /// IV length.
    pub iv_len: u16,
    /// ICV length.
    pub icv_len: u16,
    /// AAD length.
    pub aad_len: u16,
}

/// Inline IPsec sessions of one port (its rte_security context and a session pool).
#[derive(Debug, Clone)]
pub struct InlineSessionPool {
    port: EthPort,
    ctx: NonNull<c_void>,
    pool: Arc<RawPool>,
}

// SAFETY: the security context belongs to the port for the life of the
// process; session creation/destruction through it is thread-safe in DPDK
// (control path), and the pool is MP/MC-safe.
unsafe impl Send for InlineSessionPool {}
// SAFETY: see Send.
unsafe impl Sync for InlineSessionPool {}

impl EthPort {
    /// A pool of `count` inline IPsec sessions for this port; fails with
    /// [`Error::Unsupported`] when the port has no rte_security context.
    pub fn inline_session_pool(&self, _eal: &Eal, name: &str, count: u32) -> Result<InlineSessionPool> {
        let ctx = NonNull::new(self.security_ctx_ptr())
            .ok_or_else(|| Error::Unsupported(format!("port {} has no rte_security context", self.id())))?;
        let cname = c_string("security session pool name", name)?;
        // SAFETY: EAL initialised; ctx is the port's live context; cname NUL-terminated.
        let ptr = unsafe { sys::ironsa_security_session_pool(cname.as_ptr(), ctx.as_ptr(), count) };
        Ok(InlineSessionPool {
            port: *self,
            ctx,
            pool: Arc::new(RawPool::from_created("rte_mempool_create (security sessions)", ptr)?),
        })
    }
}

impl InlineSessionPool {
    /// The port.
    pub fn port(&self) -> EthPort {
        self.port
    }

    /// Whether the port reports an inline-crypto ESP capability matching
    /// `sa` (mode, direction, ESN/UDP options, AES-GCM key size).
    pub fn supports(&self, sa: &InlineIpsecSa<'_>) -> bool {
        let Ok(raw) = sa.raw() else {
            return false;
        };
        // SAFETY: ctx is live; raw and its borrowed key are valid for the call.
        unsafe { sys::ironsa_security_ipsec_supported(self.ctx.as_ptr(), &raw) == 1 }
    }

    /// Creates the session of `sa` (`rte_security_session_create`).
    pub fn create(&self, sa: &InlineIpsecSa<'_>) -> Result<InlineSession> {
        let raw = sa.raw()?;
        // SAFETY: ctx is live; raw/key valid for the call; the pool was sized
        // for this context; the PMD copies the key.
        let ptr = unsafe { sys::ironsa_security_ipsec_session_create(self.ctx.as_ptr(), &raw, self.pool.as_ptr()) };
        let ptr = NonNull::new(ptr).ok_or_else(|| Error::from_errno("rte_security_session_create"))?;
        Ok(InlineSession {
            ctx: self.ctx,
            ptr,
            egress: sa.egress,
            port: self.port,
            _pool: self.pool.clone(),
        })
    }
}

/// One SA direction offloaded to a NIC (destroyed on drop).
#[derive(Debug)]
pub struct InlineSession {
    ctx: NonNull<c_void>,
    ptr: NonNull<c_void>,
    egress: bool,
    port: EthPort,
    _pool: Arc<RawPool>,
}

// SAFETY: a session is immutable after creation and usable from any lcore;
// destruction happens once, on drop.
unsafe impl Send for InlineSession {}
// SAFETY: see Send; `prepare_tx` only reads the session.
unsafe impl Sync for InlineSession {}

impl InlineSession {
    /// Whether this is an egress (encrypting) session.
    pub fn is_egress(&self) -> bool {
        self.egress
    }

    /// The port whose security context holds the session.
    pub fn port(&self) -> EthPort {
        self.port
    }

    /// The session pointer DPDK's SECURITY flow action takes.
    pub(crate) fn as_ptr(&self) -> *mut c_void {
        self.ptr.as_ptr()
    }

    /// Marks `m` (a complete frame: `l2_len` bytes of Ethernet, an outer IP
    /// header of `l3_len` bytes, then ESP with room for the ICV) for inline
    /// encryption by this session on transmit.
    pub fn prepare_tx(&self, m: &mut Mbuf, l2_len: u16, l3_len: u16, ipv6: bool) -> Result<()> {
        if !self.egress {
            return Err(Error::InvalidArgument("transmit with an ingress session".into()));
        }
        // SAFETY: ctx and session are live; m is a valid mbuf we own exclusively.
        check("rte_security_set_pkt_metadata", unsafe {
            sys::ironsa_security_tx_prepare(
                self.ctx.as_ptr(),
                self.ptr.as_ptr(),
                m.as_ptr(),
                l2_len,
                l3_len,
                i32::from(ipv6),
            )
        })
        .map(|_| ())
    }
}

impl Drop for InlineSession {
    fn drop(&mut self) {
        // SAFETY: created on ctx from _pool (alive); not used after this.
        unsafe { sys::ironsa_security_session_destroy(self.ctx.as_ptr(), self.ptr.as_ptr()) };
    }
}

/// What the NIC did to a received packet with inline IPsec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxSecurity {
    /// Not processed by the NIC (software decrypts).
    NotProcessed,
    /// Decrypted and ICV verified by the NIC.
    Verified,
    /// The NIC processed it and the ICV did not verify.
    Failed,
}

impl Mbuf {
    /// The inline IPsec receive status from the mbuf's offload flags.
    pub fn rx_security(&self) -> RxSecurity {
        let f = self.ol_flags();
        // SAFETY: immutable globals defined by the shim.
        let (done, failed) = unsafe {
            (
                sys::ironsa_mbuf_f_rx_sec_offload,
                sys::ironsa_mbuf_f_rx_sec_offload_failed,
            )
        };
        if f & failed != 0 {
            RxSecurity::Failed
        } else if f & done != 0 {
            RxSecurity::Verified
        } else {
            RxSecurity::NotProcessed
        }
    }
}
