//! The resumable state of an established IKE SA: what another process (a
//! surviving cluster node) needs to continue it without a new IKE_SA_INIT,
//! and its byte encoding.
//!
//! The IKE SA does not keep its CHILD_SAs' keys or ESP sequence numbers
//! (the data plane holds them): its driver fills [`ResumableChild::inbound`],
//! [`ResumableChild::outbound`], [`ResumableChild::esp_seq_out`] and
//! [`ResumableChild::esp_seq_in`] before
//! encoding. Only AEAD IKE suites can be resumed: an AES-CBC SA's keys live
//! only inside aws-lc's key schedules.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::info;
use zeroize::Zeroizing;

use super::{ChildSa, ChildSaInstall, ChildState, Context, DirectionKeys, Event, IkeSa, Role, SaKeys, State};
use crate::config::{ConnectionConfig, IpsecMode};
use crate::crypto::{EncrAlg, IkeSuite, IntegAlg, KeGroup, PrfAlg, SkCipher};
use crate::proposal::{AdditionalKeSlots, MAX_ADDITIONAL_KE, additional_ke_list};
use crate::wire::ikev2::{IdType, Identification, TrafficSelector};

/// Version of the encoding written by [`ResumableIkeSa::encode`].
const VERSION: u8 = 3;

/// Why a resumable state could not be decoded or resumed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResumeError {
    /// The encoding ends early.
    #[error("resumable IKE SA state is truncated")]
    Truncated,
    /// Written by an unknown version of this encoding.
    #[error("resumable IKE SA state of unknown version {0}")]
    Version(u8),
    /// A value the encoding does not allow.
    #[error("resumable IKE SA state: invalid {0}")]
    Invalid(&'static str),
    /// The connection it belongs to is not configured here.
    #[error("connection '{0}' is not configured on this node")]
    NoConnection(String),
    /// Its connection has no child template of that index here.
    #[error("connection '{connection}' has no child template {template} on this node")]
    NoTemplate {
        /// The connection.
        connection: String,
        /// The template index.
        template: usize,
    },
    /// The keys did not load.
    #[error("resumable IKE SA keys: {0}")]
    Crypto(#[from] crate::crypto::CryptoError),
}

/// One CHILD_SA of a [`ResumableIkeSa`].
pub struct ResumableChild {
    /// Index of its template in the connection.
    pub template: usize,
    /// Our inbound SPI.
    pub spi_in: u32,
    /// The peer's inbound SPI.
    pub spi_out: u32,
    /// Encryption.
    pub encr: EncrAlg,
    /// Integrity (None with an AEAD).
    pub integ: Option<IntegAlg>,
    /// PFS group.
    pub pfs: Option<KeGroup>,
    /// RFC 9370 additional key exchanges run after the PFS one.
    pub additional_ke: AdditionalKeSlots,
    /// Extended sequence numbers.
    pub esn: bool,
    /// Tunnel or transport.
    pub mode: IpsecMode,
    /// Our selectors.
    pub local_ts: Vec<TrafficSelector>,
    /// The peer's selectors.
    pub remote_ts: Vec<TrafficSelector>,
    /// Seconds to its rekey and expiry when the state was taken.
    pub lifetimes: (Option<u64>, Option<u64>),
    /// Keys of packets we receive (filled by the driver).
    pub inbound: DirectionKeys,
    /// Keys of packets we send (filled by the driver).
    pub outbound: DirectionKeys,
    /// The next outbound ESP sequence number when the state was taken
    /// (filled by the driver; the adopter starts past it by a margin).
    pub esp_seq_out: u64,
    /// The highest inbound ESP sequence number accepted when the state was
    /// taken (filled by the driver; the adopter's replay window starts
    /// there, so older packets are refused as replays).
    pub esp_seq_in: u64,
}

/// An established IKE SA and its CHILD_SAs, as another node continues them.
pub struct ResumableIkeSa {
    /// We initiated it.
    pub initiator: bool,
    /// (initiator SPI, responder SPI).
    pub spis: (u64, u64),
    /// Our address.
    pub local: SocketAddr,
    /// The peer's address.
    pub remote: SocketAddr,
    /// IKE on the NAT-T ports; NAT in front of us; NAT in front of the peer.
    pub nat: (bool, bool, bool),
    /// The peer does RFC 7383 fragmentation.
    pub peer_fragmentation: bool,
    /// MOBIKE (RFC 4555) was negotiated.
    pub mobike: bool,
    /// The connection's name.
    pub connection: String,
    /// Negotiated algorithms.
    pub suite: IkeSuite,
    /// RFC 9370 additional key exchanges included in the keys.
    pub additional_ke: AdditionalKeSlots,
    /// SK_d.
    pub sk_d: Zeroizing<Vec<u8>>,
    /// SK_e (with salt) of messages we send.
    pub sk_e_out: Zeroizing<Vec<u8>>,
    /// SK_e (with salt) of messages we receive.
    pub sk_e_in: Zeroizing<Vec<u8>>,
    /// Message ID of our next request.
    pub next_request_id: u32,
    /// Message ID of the peer's next request.
    pub expected_request_id: u32,
    /// The peer's authenticated identity.
    pub peer_id: Identification,
    /// Seconds to the IKE SA's rekey and expiry when the state was taken.
    pub lifetimes: (Option<u64>, Option<u64>),
    /// Its CHILD_SAs.
    pub children: Vec<ResumableChild>,
}

fn remaining(now: Instant, t: Option<Instant>) -> Option<u64> {
    t.map(|t| t.saturating_duration_since(now).as_secs())
}

fn deadline(now: Instant, secs: Option<u64>) -> Option<Instant> {
    secs.map(|s| now + Duration::from_secs(s))
}

fn empty_keys() -> DirectionKeys {
    DirectionKeys {
        encr: Zeroizing::new(Vec::new()),
        integ: Zeroizing::new(Vec::new()),
    }
}

impl IkeSa {
    /// This SA's resumable state, if it is established, idle (no exchange
    /// of ours in flight) and uses an AEAD suite. Children keys and ESP
    /// sequence numbers are left for the driver to fill.
    pub fn resumable(&self, now: Instant) -> Option<ResumableIkeSa> {
        if !matches!(self.state, State::Established(_)) || self.outstanding().is_some() || self.replaced {
            return None;
        }
        let keys = self.keys.as_ref()?;
        let children = self
            .children
            .iter()
            .filter(|c| c.state == ChildState::Installed)
            .map(|c| ResumableChild {
                template: c.template,
                spi_in: c.spi_in,
                spi_out: c.spi_out,
                encr: c.encr,
                integ: c.integ,
                pfs: c.pfs,
                additional_ke: c.additional_ke,
                esn: c.esn,
                mode: c.mode,
                local_ts: c.local_ts.to_vec(),
                remote_ts: c.remote_ts.to_vec(),
                lifetimes: (remaining(now, c.rekey_at), remaining(now, c.expire_at)),
                inbound: empty_keys(),
                outbound: empty_keys(),
                esp_seq_out: 0,
                esp_seq_in: 0,
            })
            .collect();
        Some(ResumableIkeSa {
            initiator: self.role == Role::Initiator,
            spis: (self.spi_i, self.spi_r),
            local: self.local,
            remote: self.remote,
            nat: (self.nat.t(), self.nat.local(), self.nat.remote()),
            peer_fragmentation: self.peer_fragmentation,
            mobike: self.nat.mobike(),
            connection: self.config.name.clone(),
            suite: keys.suite,
            additional_ke: keys.additional_ke,
            sk_d: Zeroizing::new(keys.sk_d.to_vec()),
            sk_e_out: keys.outbound.aead_keymat()?,
            sk_e_in: keys.inbound.aead_keymat()?,
            next_request_id: self.next_request_id,
            expected_request_id: self.expected_request_id,
            peer_id: self.peer_id.clone()?,
            lifetimes: (remaining(now, self.rekey_at), remaining(now, self.expire_at)),
            children,
        })
    }

    /// Continues an IKE SA another node established, from its resumable
    /// state: no message goes to the peer. Reports [`Event::IkeSaUp`] and
    /// one [`Event::ChildSaInstalled`] per child, as a negotiation would,
    /// so the driver registers the SA and installs the children.
    pub fn resume(
        now: Instant,
        r: &ResumableIkeSa,
        config: Arc<ConnectionConfig>,
        ctx: Arc<Context>,
    ) -> Result<IkeSa, ResumeError> {
        if config.name != r.connection {
            return Err(ResumeError::NoConnection(r.connection.clone()));
        }
        for c in &r.children {
            if c.template >= config.children.len() {
                return Err(ResumeError::NoTemplate {
                    connection: r.connection.clone(),
                    template: c.template,
                });
            }
        }
        let role = if r.initiator { Role::Initiator } else { Role::Responder };
        let mut sa = IkeSa::blank(
            role,
            now,
            config,
            ctx,
            r.local,
            r.remote,
            r.spis.0,
            r.spis.1,
            State::Established(None),
        );
        let (nat_t, nat_local, nat_remote) = r.nat;
        sa.nat.set_t(nat_t);
        sa.nat.set_local(nat_local);
        sa.nat.set_remote(nat_remote);
        sa.nat.set_mobike(r.mobike);
        sa.peer_fragmentation = r.peer_fragmentation;
        sa.peer_id = Some(r.peer_id.clone());
        sa.next_request_id = r.next_request_id;
        sa.expected_request_id = r.expected_request_id;
        sa.resync_request_id = true;
        let outbound = SkCipher::new(r.suite.encr, r.suite.integ, &r.sk_e_out, &[], &sa.ctx.crypto)?;
        let inbound = SkCipher::new(r.suite.encr, r.suite.integ, &r.sk_e_in, &[], &sa.ctx.crypto)?;
        sa.keys = Some(SaKeys {
            suite: r.suite,
            sk_d: Zeroizing::new(r.sk_d.to_vec().into_boxed_slice()),
            auth: None,
            outbound,
            inbound,
            additional_ke: r.additional_ke,
        });
        sa.rekey_at = deadline(now, r.lifetimes.0);
        sa.expire_at = deadline(now, r.lifetimes.1);
        sa.push_event(Event::IkeSaUp {
            spis: r.spis,
            peer_id: r.peer_id.clone(),
            suite: r.suite,
            connection: r.connection.clone(),
            initial_contact: false,
        });
        let udp_encap = sa.udp_encapsulation();
        let (mut local, mut remote) = (sa.local, sa.remote);
        if !udp_encap {
            local.set_port(0);
            remote.set_port(0);
        }
        for c in &r.children {
            sa.children.push(ChildSa {
                template: c.template,
                spi_in: c.spi_in,
                spi_out: c.spi_out,
                encr: c.encr,
                integ: c.integ,
                pfs: c.pfs,
                additional_ke: c.additional_ke,
                esn: c.esn,
                mode: c.mode,
                local_ts: c.local_ts.as_slice().into(),
                remote_ts: c.remote_ts.as_slice().into(),
                state: ChildState::Installed,
                installed_at: now,
                rekey_at: deadline(now, c.lifetimes.0),
                expire_at: deadline(now, c.lifetimes.1),
            });
            let name = sa.config.children[c.template].name.clone();
            sa.push_event(Event::ChildSaInstalled(Box::new(ChildSaInstall {
                ike_spis: r.spis,
                connection: r.connection.clone(),
                name,
                spi_in: c.spi_in,
                spi_out: c.spi_out,
                encr: c.encr,
                integ: c.integ,
                pfs: c.pfs,
                additional_ke: additional_ke_list(&c.additional_ke),
                esn: c.esn,
                mode: c.mode,
                local_ts: c.local_ts.clone(),
                remote_ts: c.remote_ts.clone(),
                local,
                remote,
                udp_encap,
                inbound: DirectionKeys {
                    encr: c.inbound.encr.clone(),
                    integ: c.inbound.integ.clone(),
                },
                outbound: DirectionKeys {
                    encr: c.outbound.encr.clone(),
                    integ: c.outbound.integ.clone(),
                },
                rekey_of: None,
                local_vips: Vec::new(),
            })));
        }
        info!(
            connection = %r.connection,
            peer = %r.remote,
            spi_i = format_args!("{:016x}", r.spis.0),
            spi_r = format_args!("{:016x}", r.spis.1),
            children = r.children.len(),
            next_request_id = r.next_request_id,
            expected_request_id = r.expected_request_id,
            "IKE SA resumed from another node's state"
        );
        Ok(sa)
    }
}

/// Appends values in network order.
struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn additional_ke(&mut self, slots: &AdditionalKeSlots) {
        for g in slots {
            self.u16(g.map_or(0, KeGroup::number));
        }
    }
    fn bytes(&mut self, b: &[u8]) {
        self.u16(u16::try_from(b.len()).unwrap_or(u16::MAX));
        self.0.extend_from_slice(&b[..b.len().min(usize::from(u16::MAX))]);
    }
    fn ip(&mut self, ip: IpAddr) {
        match ip {
            IpAddr::V4(a) => {
                self.u8(4);
                self.0.extend_from_slice(&a.octets());
            }
            IpAddr::V6(a) => {
                self.u8(6);
                self.0.extend_from_slice(&a.octets());
            }
        }
    }
    fn addr(&mut self, a: SocketAddr) {
        self.ip(a.ip());
        self.u16(a.port());
    }
    fn opt_secs(&mut self, s: Option<u64>) {
        self.u64(s.map_or(u64::MAX, |s| s.min(u64::MAX - 1)));
    }
    fn selectors(&mut self, ts: &[TrafficSelector]) {
        self.u16(u16::try_from(ts.len()).unwrap_or(u16::MAX));
        for t in ts.iter().take(usize::from(u16::MAX)) {
            self.u8(t.ip_protocol);
            self.u16(t.start_port);
            self.u16(t.end_port);
            self.ip(t.start_addr);
            self.ip(t.end_addr);
        }
    }
    fn encr(&mut self, e: EncrAlg) {
        self.u16(e.transform_id());
        self.u16(e.key_length_attribute().unwrap_or(0));
    }
}

/// Reads what [`Writer`] wrote.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ResumeError> {
        if self.buf.len() < n {
            return Err(ResumeError::Truncated);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], ResumeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, ResumeError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, ResumeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, ResumeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, ResumeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    fn flag(&mut self) -> Result<bool, ResumeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(ResumeError::Invalid("flag")),
        }
    }
    fn bytes(&mut self) -> Result<&'a [u8], ResumeError> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }
    fn secret(&mut self) -> Result<Zeroizing<Vec<u8>>, ResumeError> {
        Ok(Zeroizing::new(self.bytes()?.to_vec()))
    }
    fn ip(&mut self) -> Result<IpAddr, ResumeError> {
        match self.u8()? {
            4 => Ok(IpAddr::from(self.array::<4>()?)),
            6 => Ok(IpAddr::from(self.array::<16>()?)),
            _ => Err(ResumeError::Invalid("address family")),
        }
    }
    fn addr(&mut self) -> Result<SocketAddr, ResumeError> {
        let ip = self.ip()?;
        Ok(SocketAddr::new(ip, self.u16()?))
    }
    fn opt_secs(&mut self) -> Result<Option<u64>, ResumeError> {
        let v = self.u64()?;
        Ok((v != u64::MAX).then_some(v))
    }
    fn selectors(&mut self) -> Result<Vec<TrafficSelector>, ResumeError> {
        let n = self.u16()?;
        (0..n)
            .map(|_| {
                Ok(TrafficSelector {
                    ip_protocol: self.u8()?,
                    start_port: self.u16()?,
                    end_port: self.u16()?,
                    start_addr: self.ip()?,
                    end_addr: self.ip()?,
                })
            })
            .collect()
    }
    fn encr(&mut self) -> Result<EncrAlg, ResumeError> {
        let id = self.u16()?;
        let bits = self.u16()?;
        EncrAlg::from_transform(id, (bits != 0).then_some(bits)).ok_or(ResumeError::Invalid("encryption algorithm"))
    }
    fn integ(&mut self) -> Result<Option<IntegAlg>, ResumeError> {
        match self.u16()? {
            0 => Ok(None),
            id => IntegAlg::from_transform(id)
                .map(Some)
                .ok_or(ResumeError::Invalid("integrity algorithm")),
        }
    }
    fn group(&mut self) -> Result<Option<KeGroup>, ResumeError> {
        match self.u16()? {
            0 => Ok(None),
            n => KeGroup::from_number(n)
                .map(Some)
                .ok_or(ResumeError::Invalid("key exchange group")),
        }
    }

    fn additional_ke(&mut self) -> Result<AdditionalKeSlots, ResumeError> {
        let mut slots = [None; MAX_ADDITIONAL_KE];
        for slot in &mut slots {
            *slot = self.group()?;
        }
        Ok(slots)
    }
}

impl ResumableIkeSa {
    /// The state as bytes (secrets included: seal them before they leave
    /// the process).
    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        let mut w = Writer(Vec::with_capacity(512));
        w.u8(VERSION);
        w.u8(u8::from(self.initiator));
        w.u64(self.spis.0);
        w.u64(self.spis.1);
        w.addr(self.local);
        w.addr(self.remote);
        for f in [self.nat.0, self.nat.1, self.nat.2, self.peer_fragmentation, self.mobike] {
            w.u8(u8::from(f));
        }
        w.bytes(self.connection.as_bytes());
        w.encr(self.suite.encr);
        w.u16(self.suite.integ.map_or(0, IntegAlg::transform_id));
        w.u16(self.suite.prf.transform_id());
        w.u16(self.suite.ke.number());
        w.additional_ke(&self.additional_ke);
        w.bytes(&self.sk_d);
        w.bytes(&self.sk_e_out);
        w.bytes(&self.sk_e_in);
        w.u32(self.next_request_id);
        w.u32(self.expected_request_id);
        w.u8(self.peer_id.id_type.0);
        w.bytes(&self.peer_id.data);
        w.opt_secs(self.lifetimes.0);
        w.opt_secs(self.lifetimes.1);
        w.u16(u16::try_from(self.children.len()).unwrap_or(u16::MAX));
        for c in self.children.iter().take(usize::from(u16::MAX)) {
            w.u16(u16::try_from(c.template).unwrap_or(u16::MAX));
            w.u32(c.spi_in);
            w.u32(c.spi_out);
            w.encr(c.encr);
            w.u16(c.integ.map_or(0, IntegAlg::transform_id));
            w.u16(c.pfs.map_or(0, KeGroup::number));
            w.additional_ke(&c.additional_ke);
            w.u8(u8::from(c.esn));
            w.u8(u8::from(c.mode == IpsecMode::Transport));
            w.selectors(&c.local_ts);
            w.selectors(&c.remote_ts);
            w.opt_secs(c.lifetimes.0);
            w.opt_secs(c.lifetimes.1);
            w.bytes(&c.inbound.encr);
            w.bytes(&c.inbound.integ);
            w.bytes(&c.outbound.encr);
            w.bytes(&c.outbound.integ);
            w.u64(c.esp_seq_out);
            w.u64(c.esp_seq_in);
        }
        Zeroizing::new(w.0)
    }

    /// Decodes [`ResumableIkeSa::encode`]'s bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, ResumeError> {
        let mut r = Reader { buf: bytes };
        let version = r.u8()?;
        if version != VERSION {
            return Err(ResumeError::Version(version));
        }
        let initiator = r.flag()?;
        let spis = (r.u64()?, r.u64()?);
        let local = r.addr()?;
        let remote = r.addr()?;
        let nat = (r.flag()?, r.flag()?, r.flag()?);
        let peer_fragmentation = r.flag()?;
        let mobike = r.flag()?;
        let connection = String::from_utf8(r.bytes()?.to_vec()).map_err(|_| ResumeError::Invalid("connection name"))?;
        let encr = r.encr()?;
        let integ = r.integ()?;
        let prf = PrfAlg::from_transform(r.u16()?).ok_or(ResumeError::Invalid("PRF"))?;
        let ke = r.group()?.ok_or(ResumeError::Invalid("key exchange group"))?;
        let additional_ke = r.additional_ke()?;
        let sk_d = r.secret()?;
        let sk_e_out = r.secret()?;
        let sk_e_in = r.secret()?;
        let next_request_id = r.u32()?;
        let expected_request_id = r.u32()?;
        let peer_id = Identification {
            id_type: IdType(r.u8()?),
            data: r.bytes()?.to_vec(),
        };
        let lifetimes = (r.opt_secs()?, r.opt_secs()?);
        let n = r.u16()?;
        let mut children = Vec::with_capacity(usize::from(n));
        for _ in 0..n {
            children.push(ResumableChild {
                template: usize::from(r.u16()?),
                spi_in: r.u32()?,
                spi_out: r.u32()?,
                encr: r.encr()?,
                integ: r.integ()?,
                pfs: r.group()?,
                additional_ke: r.additional_ke()?,
                esn: r.flag()?,
                mode: if r.flag()? {
                    IpsecMode::Transport
                } else {
                    IpsecMode::Tunnel
                },
                local_ts: r.selectors()?,
                remote_ts: r.selectors()?,
                lifetimes: (r.opt_secs()?, r.opt_secs()?),
                inbound: DirectionKeys {
                    encr: r.secret()?,
                    integ: r.secret()?,
                },
                outbound: DirectionKeys {
                    encr: r.secret()?,
                    integ: r.secret()?,
                },
                esp_seq_out: r.u64()?,
                esp_seq_in: r.u64()?,
            });
        }
        if !r.buf.is_empty() {
            return Err(ResumeError::Invalid("trailing bytes"));
        }
        Ok(Self {
            initiator,
            spis,
            local,
            remote,
            nat,
            peer_fragmentation,
            mobike,
            connection,
            suite: IkeSuite { encr, integ, prf, ke },
            additional_ke,
            sk_d,
            sk_e_out,
            sk_e_in,
            next_request_id,
            expected_request_id,
            peer_id,
            lifetimes,
            children,
        })
    }
}
