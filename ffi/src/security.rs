//! `rte_security` capability probing (inline / lookaside IPsec offload).

use crate::cryptodev::CryptoDev;
use crate::ethdev::EthPort;
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
