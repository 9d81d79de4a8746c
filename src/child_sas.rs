//! Negotiated CHILD_SAs in a fastpath SAD and SPD, shared by the software
//! and DPDK data planes: SA parameters from the control plane's
//! [`ChildSaInstall`], policies (one set per child and the children that
//! replace it by rekeys, on the newest one's SA), per-child counters (policy
//! misses included), byte/packet lifetime events routed back to the control plane,
//! unique inbound SPIs and the optional Wireshark key log.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use control::config::IpsecMode;
use control::crypto::{CryptoError, CryptoProvider, EncrAlg, IntegAlg as IkeInteg};
use control::ike_sa::{ChildSaInstall, SpiAllocator};
use dashmap::DashSet;
use fastpath::esp::Mode;
use fastpath::esp::aead::{CipherKeys, EncAlg, IntegAlg};
use fastpath::sad::{Direction, OuterPath, SaEvent, SaId, SaParams, Sad, UdpEncap};
use fastpath::spd::{Policy, PolicyAction, PolicyId, Spd, TrafficSelector};
use tracing::{debug, info, warn};

use crate::dataplane::{ChildCounters, DataPlaneError};

/// Where IKE messages a data plane receives go (local, remote, message without marker).
pub type IkeSink = Arc<dyn Fn(SocketAddr, SocketAddr, Vec<u8>) + Send + Sync>;

/// What the data plane asks of the control plane when a CHILD_SA reaches a
/// byte/packet lifetime, runs out of sequence numbers, or hears its peer
/// from a new address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LifetimeRequest {
    /// Soft lifetime or sequence space exhausted: rekey the child.
    Rekey,
    /// Hard lifetime: the SA no longer passes traffic; delete the child.
    Delete,
    /// Authenticated ESP of the child arrived from this other peer address
    /// (NAT rebinding): the IKE SA decides whether to follow it.
    PeerMoved(SocketAddr),
}

/// Receives lifetime requests: (IKE SPIs, child inbound SPI, request).
pub type LifetimeSink = Arc<dyn Fn((u64, u64), u32, LifetimeRequest) + Send + Sync>;

pub use ironsa::config_file::{ChildDataSettings, ChildSettings};

/// Inbound SPIs unique on this gateway; a clustered node's carry its node
/// id in their top bits, so any node can tell the owner of an ESP packet.
#[derive(Default)]
pub struct UniqueSpis {
    used: DashSet<u32>,
    /// The node id in the top [`ironsa::cluster::NODE_BITS`], plus one (0: not clustered).
    node: std::sync::atomic::AtomicU32,
}

impl UniqueSpis {
    /// Marks `spi` used (an adopted child's, allocated by another node),
    /// so it is never handed out again; false if it was in use already.
    pub fn claim(&self, spi: u32) -> bool {
        self.used.insert(spi)
    }

    /// Puts `node` in the top bits of every SPI allocated from now on.
    pub fn set_node(&self, node: ironsa::cluster::NodeId) {
        self.node
            .store(u32::from(node) + 1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl SpiAllocator for UniqueSpis {
    fn allocate(&self, random: &dyn CryptoProvider) -> Result<u32, CryptoError> {
        use ironsa::cluster::NODE_BITS;
        let node = self.node.load(std::sync::atomic::Ordering::Relaxed);
        loop {
            let mut v = control::crypto::random_u32(random)?;
            if node != 0 {
                v = (v >> NODE_BITS) | ((node - 1) << (32 - NODE_BITS));
            }
            if v > 255 && self.used.insert(v) {
                return Ok(v);
            }
        }
    }
    fn release(&self, spi: u32) {
        self.used.remove(&spi);
    }
}

/// Puts SAs into a data plane's SAD: the SAD itself for the software data
/// plane, the SAD plus the crypto device for DPDK lookaside.
pub trait SaStore: Send + Sync {
    /// Installs one direction of a CHILD_SA.
    fn install_sa(&self, p: &SaParams) -> Result<SaId, DataPlaneError>;
    /// Removes an SA installed by [`SaStore::install_sa`].
    fn remove_sa(&self, id: SaId);
    /// Moves an SA to new outer addresses, ports and encapsulation in place.
    fn move_sa(&self, id: SaId, path: &OuterPath) -> Result<(), String>;
}

impl SaStore for Sad {
    fn install_sa(&self, p: &SaParams) -> Result<SaId, DataPlaneError> {
        Ok(match p.direction {
            Direction::Inbound => self.install_inbound(p),
            Direction::Outbound => self.install_outbound(p),
        }?)
    }
    fn remove_sa(&self, id: SaId) {
        let _ = self.remove(id);
    }
    fn move_sa(&self, id: SaId, path: &OuterPath) -> Result<(), String> {
        self.move_path(id, path).map_err(|e| e.to_string())
    }
}

/// What a data plane should do after [`ChildSas::install`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Installed {
    /// A new child: its policies were added (the software data plane adds routes).
    New,
    /// A rekey: the policies of the child it replaces now point to the new outbound SA.
    Rekeyed,
}

struct Child {
    inbound: SaId,
    outbound: SaId,
    /// The IKE SA it belongs to (where lifetime events go).
    ike_spis: (u64, u64),
    /// The lineage whose policies it shares.
    lineage: u64,
    /// The member of the lineage installed before it, if still there.
    prev: Option<u32>,
}

/// A child's policy ids: one inline (a road-warrior child has one), more on the heap.
enum PolicyIds {
    One(PolicyId),
    Many(Box<[PolicyId]>),
}

impl PolicyIds {
    fn from_vec(v: Vec<PolicyId>) -> Self {
        match v[..] {
            [one] => Self::One(one),
            _ => Self::Many(v.into_boxed_slice()),
        }
    }

    fn as_slice(&self) -> &[PolicyId] {
        match self {
            Self::One(p) => std::slice::from_ref(p),
            Self::Many(v) => v,
        }
    }
}

/// A child and the children that replaced it by rekeys, one after another
/// (linked newest to oldest through [`Child::prev`]). They share one set of
/// policies, which protect with the outbound SA of the newest member and go
/// when the last member goes. In a rekey collision (RFC 7296 §2.8.1) two new
/// children replace the same one; whichever of them is deleted as
/// redundant, the policies stay with the survivor.
struct Lineage {
    policies: PolicyIds,
    /// Inbound SPI of the newest member.
    newest: u32,
    /// Policy misses inside the selectors before the lineage began (not its own).
    misses_before: u64,
}

/// The children by inbound SPI, the inbound SPI of each outbound SA (so that
/// a lifetime event of either SA finds its child without a map per SA id),
/// and the lineages that own the policies.
#[derive(Default)]
struct Children {
    by_spi_in: HashMap<u32, Child>,
    spi_in_of_outbound: HashMap<u64, u32>,
    lineages: HashMap<u64, Lineage>,
    next_lineage: u64,
}

impl Children {
    /// (IKE SPIs, child inbound SPI) of the child that fastpath SA `id` belongs to.
    fn owner(&self, id: SaId) -> Option<((u64, u64), u32)> {
        let spi_in = match id.inbound_spi() {
            Some(spi) => spi,
            None => *self.spi_in_of_outbound.get(&id.0)?,
        };
        let c = self.by_spi_in.get(&spi_in)?;
        (c.inbound == id || c.outbound == id).then_some((c.ike_spis, spi_in))
    }

    /// Takes child `gone` (just removed from `by_spi_in`) out of its lineage:
    /// the policies move to the newest remaining member, or are returned
    /// for removal when it was the last one.
    fn unlink(&mut self, spi_in: u32, gone: &Child, spd: &Spd) -> Option<PolicyIds> {
        let lineage = self.lineages.get_mut(&gone.lineage)?;
        if lineage.newest == spi_in {
            let next = gone.prev.and_then(|p| self.by_spi_in.get(&p).map(|c| (p, c.outbound)));
            let Some((next, outbound)) = next else {
                return self.lineages.remove(&gone.lineage).map(|l| l.policies);
            };
            spd.replace_sa_of(lineage.policies.as_slice(), gone.outbound, outbound);
            lineage.newest = next;
            return None;
        }
        let mut cur = lineage.newest;
        while let Some(c) = self.by_spi_in.get_mut(&cur) {
            match c.prev {
                Some(p) if p == spi_in => {
                    c.prev = gone.prev;
                    break;
                }
                Some(p) => cur = p,
                None => break,
            }
        }
        None
    }
}

/// The CHILD_SAs of a data plane, in its SAD and SPD.
pub struct ChildSas {
    sad: Arc<Sad>,
    spd: Arc<Spd>,
    /// Where SAs go: the SAD itself, or a data plane that also programs hardware.
    store: Arc<dyn SaStore>,
    spis: Arc<UniqueSpis>,
    children: Arc<Mutex<Children>>,
    /// Replaced on reload; read once per SA installed.
    settings: RwLock<ChildSettings>,
    keylog: Option<Mutex<std::fs::File>>,
    lifetime_sink: Arc<OnceLock<LifetimeSink>>,
}

fn selector(ts: &control::wire::ikev2::TrafficSelector) -> Option<TrafficSelector> {
    TrafficSelector::new(ts.start_addr, ts.end_addr, ts.ip_protocol, ts.start_port, ts.end_port).ok()
}

/// Wireshark's name of an ESP algorithm in the esp_sa table.
fn wireshark_names(c: &ChildSaInstall) -> (&'static str, &'static str) {
    let enc = match c.encr {
        EncrAlg::AesGcm16 { .. } => "AES-GCM with 16 octet ICV [RFC4106]",
        EncrAlg::AesCbc { .. } => "AES-CBC [RFC3602]",
        EncrAlg::ChaCha20Poly1305 => "ChaCha20 with Poly1305 [RFC7634]",
    };
    let integ = match c.integ {
        None => "NULL",
        Some(IkeInteg::HmacSha256_128) => "HMAC-SHA-256-128 [RFC4868]",
        Some(IkeInteg::HmacSha384_192) => "HMAC-SHA-384-192 [RFC4868]",
        Some(IkeInteg::HmacSha512_256) => "HMAC-SHA-512-256 [RFC4868]",
    };
    (enc, integ)
}

fn hex(b: &[u8]) -> String {
    b.iter().fold(String::with_capacity(b.len() * 2), |mut s, x| {
        let _ = write!(s, "{x:02x}");
        s
    })
}

impl ChildSas {
    /// An empty SAD (for `workers` pinned workers) and SPD; a thread routes
    /// the SAD's lifetime events to the sink set by [`ChildSas::set_lifetime_sink`].
    pub fn new(workers: usize, settings: ChildSettings, keylog: Option<&Path>) -> io::Result<Self> {
        let keylog = match keylog {
            None => None,
            Some(p) => {
                warn!(file = %p.display(), "WRITING ESP KEYS TO A FILE: anyone who can read it can decrypt the tunnels; for debugging only");
                Some(Mutex::new(crate::keylog::open_private(p)?))
            }
        };
        let (sad, events) = Sad::new(workers.max(1));
        let children: Arc<Mutex<Children>> = Arc::default();
        let lifetime_sink: Arc<OnceLock<LifetimeSink>> = Arc::new(OnceLock::new());
        {
            let children = children.clone();
            let sink = lifetime_sink.clone();
            std::thread::Builder::new().name("ironsa-sa-events".into()).spawn(move || {
                for e in events {
                    let (id, req) = match e {
                        SaEvent::SoftExpired { sa } | SaEvent::SeqExhausted { sa } => (sa, LifetimeRequest::Rekey),
                        SaEvent::HardExpired { sa } => (sa, LifetimeRequest::Delete),
                        SaEvent::PeerMoved { sa, source } => (sa, LifetimeRequest::PeerMoved(source)),
                    };
                    let owner = children.lock().ok().and_then(|c| c.owner(id));
                    let Some(owner) = owner else { continue };
                    match req {
                        LifetimeRequest::PeerMoved(source) => info!(
                            spi_in = format_args!("{:08x}", owner.1),
                            %source,
                            "authenticated ESP from a new peer address"
                        ),
                        _ => info!(event = ?e, spi_in = format_args!("{:08x}", owner.1), "fastpath lifetime reached: {req:?}"),
                    }
                    if let Some(s) = sink.get() {
                        s(owner.0, owner.1, req);
                    }
                }
            })?;
        }
        let sad = Arc::new(sad);
        Ok(Self {
            store: sad.clone(),
            sad,
            spd: Arc::new(Spd::new()),
            spis: Arc::new(UniqueSpis::default()),
            children,
            settings: RwLock::new(settings),
            keylog,
            lifetime_sink,
        })
    }

    /// Installs SAs through `store` from now on (a data plane that programs
    /// hardware next to the SAD); the SAD itself otherwise.
    #[cfg(feature = "dpdk")]
    pub fn with_store(mut self, store: Arc<dyn SaStore>) -> Self {
        self.store = store;
        self
    }

    /// The data-plane settings of child `child` of connection `connection`.
    fn settings_of(&self, connection: &str, child: &str) -> ChildDataSettings {
        let settings = self.settings.read().unwrap_or_else(|e| e.into_inner());
        // Found without building an owned key: this runs for every CHILD_SA installed.
        settings
            .iter()
            .find(|((conn, ch), _)| conn == connection && ch == child)
            .map(|(_, s)| *s)
            .unwrap_or_default()
    }

    /// Replaces the child templates' data-plane settings (on reload): SAs
    /// installed from now on, rekeys included, get the new ones.
    pub fn set_settings(&self, settings: ChildSettings) {
        *self.settings.write().unwrap_or_else(|e| e.into_inner()) = settings;
    }

    /// The SAD.
    pub fn sad(&self) -> &Arc<Sad> {
        &self.sad
    }

    /// The SPD.
    pub fn spd(&self) -> &Arc<Spd> {
        &self.spd
    }

    /// Where lifetime requests go (set once, when the control plane runs).
    pub fn set_lifetime_sink(&self, sink: LifetimeSink) {
        let _ = self.lifetime_sink.set(sink);
    }

    /// The next outbound ESP sequence number of the child with inbound SPI `spi_in`.
    pub fn outbound_seq(&self, spi_in: u32) -> Option<u64> {
        let id = self.children.lock().ok()?.by_spi_in.get(&spi_in)?.outbound;
        Some(self.sad.outbound(id)?.peek_next_seq())
    }

    /// Continues the child's outbound ESP sequence numbers at `seq` (a
    /// child taken over from another node starts past that node's last one).
    pub fn set_outbound_seq(&self, spi_in: u32, seq: u64) -> bool {
        let Some(id) = self
            .children
            .lock()
            .ok()
            .and_then(|c| c.by_spi_in.get(&spi_in).map(|c| c.outbound))
        else {
            return false;
        };
        self.sad.outbound(id).map(|sa| sa.set_next_seq(seq)).is_some()
    }

    /// The highest inbound ESP sequence number the child with inbound SPI
    /// `spi_in` accepted so far.
    pub fn inbound_seq(&self, spi_in: u32) -> Option<u64> {
        let id = self.children.lock().ok()?.by_spi_in.get(&spi_in)?.inbound;
        let sa = self.sad.inbound_by_id(id)?;
        let top = sa.replay.lock().unwrap_or_else(|e| e.into_inner()).top();
        Some(top)
    }

    /// Restarts the child's replay window at `top` (a child taken over from
    /// another node: what that node accepted up to its last checkpoint is
    /// refused as replays here).
    pub fn resume_inbound_seq(&self, spi_in: u32, top: u64) -> bool {
        let Some(id) = self
            .children
            .lock()
            .ok()
            .and_then(|c| c.by_spi_in.get(&spi_in).map(|c| c.inbound))
        else {
            return false;
        };
        let Some(sa) = self.sad.inbound_by_id(id) else {
            return false;
        };
        sa.replay.lock().unwrap_or_else(|e| e.into_inner()).resume_at(top);
        true
    }

    /// Marks an adopted child's inbound SPI used on this node.
    pub fn claim_spi(&self, spi: u32) -> bool {
        self.spis.claim(spi)
    }

    /// Puts this clustered node's id in the inbound SPIs allocated from now on.
    pub fn set_spi_node(&self, node: ironsa::cluster::NodeId) {
        self.spis.set_node(node);
    }

    /// The allocator of inbound SPIs.
    pub fn spi_allocator(&self) -> Arc<dyn SpiAllocator> {
        self.spis.clone()
    }

    fn params(&self, c: &ChildSaInstall, direction: Direction) -> Option<SaParams> {
        let (spi, keys) = match direction {
            Direction::Inbound => (c.spi_in, &c.inbound),
            Direction::Outbound => (c.spi_out, &c.outbound),
        };
        let keys = CipherKeys {
            enc: EncAlg::from_ikev2(c.encr.transform_id(), c.encr.key_length_attribute())?,
            integ: IntegAlg::from_ikev2(c.integ.map(|i| i.transform_id()))?,
            enc_key: keys.encr.clone(),
            integ_key: keys.integ.clone(),
        };
        let mut p = SaParams::new(spi, direction, keys, c.local.ip(), c.remote.ip());
        p.mode = match c.mode {
            IpsecMode::Tunnel => Mode::Tunnel,
            IpsecMode::Transport => Mode::Transport,
        };
        if c.udp_encap {
            p.udp_encap = Some(UdpEncap {
                local_port: c.local.port(),
                remote_port: c.remote.port(),
            });
        }
        p.esn = c.esn;
        let settings = self.settings_of(&c.connection, &c.name);
        let (bytes, packets) = (settings.rekey_bytes, settings.rekey_packets);
        if bytes > 0 || packets > 0 {
            p.lifetime = fastpath::sad::Lifetime {
                soft_bytes: bytes,
                hard_bytes: bytes.saturating_add(bytes / 10),
                soft_packets: packets,
                hard_packets: packets.saturating_add(packets / 10),
            };
        }
        p.replay_window = settings.replay_window;
        // Only inbound SAs check traffic selectors (the SPD steers outbound traffic).
        if direction == Direction::Inbound {
            p.local_ts = c.local_ts.iter().filter_map(selector).collect();
            p.remote_ts = c.remote_ts.iter().filter_map(selector).collect();
        }
        Some(p)
    }

    /// Installs both directions of `c` and its policies (on a rekey, the
    /// policies of the child it replaces switch to the new outbound SA at
    /// once; the old inbound SA keeps decrypting until the old child is
    /// removed). `None` when the fastpath cannot take the child (logged).
    pub fn install(&self, c: &ChildSaInstall) -> Option<Installed> {
        let store = &*self.store;
        let (Some(inp), Some(outp)) = (self.params(c, Direction::Inbound), self.params(c, Direction::Outbound)) else {
            warn!(child = %c.name, encr = %c.encr.name(), "the fastpath does not support this cipher");
            return None;
        };
        let inbound = match store.install_sa(&inp) {
            Ok(id) => id,
            Err(e) => {
                warn!(spi = format_args!("{:08x}", c.spi_in), "inbound SA not installed: {e}");
                return None;
            }
        };
        let outbound = match store.install_sa(&outp) {
            Ok(id) => id,
            Err(e) => {
                warn!(
                    spi = format_args!("{:08x}", c.spi_out),
                    "outbound SA not installed: {e}"
                );
                store.remove_sa(inbound);
                return None;
            }
        };
        let Ok(mut children) = self.children.lock() else {
            store.remove_sa(inbound);
            store.remove_sa(outbound);
            return None;
        };
        // A rekey joins the lineage of the child it replaces. When that child
        // is gone already (a collision's late response), the new child starts
        // a lineage of its own: for a moment two sets of policies cover the
        // selectors, until the redundant child goes with its set.
        let joined = c.rekey_of.and_then(|old| {
            let lineage = children.by_spi_in.get(&old)?.lineage;
            let newest = children.lineages.get(&lineage)?.newest;
            Some((lineage, newest, children.by_spi_in.get(&newest)?.outbound))
        });
        let (lineage, prev, installed) = match joined {
            Some((id, newest, current)) => {
                if let Some(l) = children.lineages.get_mut(&id) {
                    self.spd.replace_sa_of(l.policies.as_slice(), current, outbound);
                    l.newest = c.spi_in;
                }
                (id, Some(newest), Installed::Rekeyed)
            }
            None => {
                let local_ts: Vec<TrafficSelector> = c.local_ts.iter().filter_map(selector).collect();
                let remote_ts: Vec<TrafficSelector> = c.remote_ts.iter().filter_map(selector).collect();
                let mut policies = Vec::with_capacity(local_ts.len() * remote_ts.len());
                for l in &local_ts {
                    for r in &remote_ts {
                        match self.spd.insert(&Policy {
                            local: *l,
                            remote: *r,
                            action: PolicyAction::Protect(outbound),
                            priority: 100,
                        }) {
                            Ok(id) => policies.push(id),
                            Err(e) => warn!("policy not installed: {e}"),
                        }
                    }
                }
                let id = children.next_lineage;
                children.next_lineage += 1;
                children.lineages.insert(
                    id,
                    Lineage {
                        policies: PolicyIds::from_vec(policies),
                        newest: c.spi_in,
                        misses_before: self.spd.misses_within(&local_ts, &remote_ts),
                    },
                );
                (id, None, Installed::New)
            }
        };
        children.by_spi_in.insert(
            c.spi_in,
            Child {
                inbound,
                outbound,
                ike_spis: c.ike_spis,
                lineage,
                prev,
            },
        );
        children.spi_in_of_outbound.insert(outbound.0, c.spi_in);
        drop(children);
        self.write_keylog(c);
        debug!(
            spi_in = format_args!("{:08x}", c.spi_in),
            spi_out = format_args!("{:08x}", c.spi_out),
            "CHILD_SA in the fastpath"
        );
        Some(installed)
    }

    /// Removes the child with inbound SPI `spi_in` and its SAs; its policies
    /// switch to the newest remaining child of its lineage, or go with the
    /// last one.
    pub fn remove(&self, spi_in: u32) {
        let Ok(mut children) = self.children.lock() else {
            return;
        };
        let Some(old) = children.by_spi_in.remove(&spi_in) else {
            return;
        };
        children.spi_in_of_outbound.remove(&old.outbound.0);
        let gone = children.unlink(spi_in, &old, &self.spd);
        drop(children);
        for p in gone.iter().flat_map(|p| p.as_slice()) {
            let _ = self.spd.remove(*p);
        }
        self.store.remove_sa(old.inbound);
        self.store.remove_sa(old.outbound);
    }

    /// Moves the children with these inbound SPIs (both their SAs) to new
    /// outer addresses in place; see [`Sad::move_path`].
    pub fn move_children(&self, spis_in: &[u32], local: SocketAddr, remote: SocketAddr, udp_encap: bool) {
        let ids: Vec<(u32, SaId, SaId)> = {
            let Ok(children) = self.children.lock() else { return };
            spis_in
                .iter()
                .filter_map(|spi| children.by_spi_in.get(spi).map(|c| (*spi, c.inbound, c.outbound)))
                .collect()
        };
        let ports = |ours: SocketAddr, theirs: SocketAddr| {
            udp_encap.then_some(UdpEncap {
                local_port: ours.port(),
                remote_port: theirs.port(),
            })
        };
        let outbound = OuterPath {
            local: local.ip(),
            remote: remote.ip(),
            udp_encap: ports(local, remote),
        };
        for (spi_in, inbound, out) in ids {
            // Both directions carry the same path: inbound checks our address
            // and notes the peer's, outbound sends between them.
            let moved = self
                .store
                .move_sa(out, &outbound)
                .and_then(|()| self.store.move_sa(inbound, &outbound));
            match moved {
                Ok(()) => info!(
                    spi_in = format_args!("{spi_in:08x}"),
                    %local,
                    %remote,
                    udp_encap,
                    "CHILD_SA moved to new outer addresses"
                ),
                Err(e) => warn!(spi_in = format_args!("{spi_in:08x}"), %remote, "CHILD_SA not moved: {e}"),
            }
        }
    }

    /// Counters of CHILD_SA `child`; its drops include the outbound packets
    /// inside its selectors that found no policy.
    pub fn counters(&self, child: &control::ike_sa::ChildSa) -> Option<ChildCounters> {
        self.counters_of(child.spi_in, &child.local_ts, &child.remote_ts)
    }

    /// Counters of the ESP SA pair with inbound SPI `spi_in` and these selectors
    /// (an IKEv1 Quick Mode SA has no IKEv2 `ChildSa` record).
    pub fn counters_of(
        &self,
        spi_in: u32,
        local_ts: &[control::wire::ikev2::TrafficSelector],
        remote_ts: &[control::wire::ikev2::TrafficSelector],
    ) -> Option<ChildCounters> {
        let children = self.children.lock().ok()?;
        let c = children.by_spi_in.get(&spi_in)?;
        let i = self.sad.inbound_by_id(c.inbound)?.counters.snapshot();
        let o = self.sad.outbound(c.outbound)?.counters.snapshot();
        let no_policy = children.lineages.get(&c.lineage).map_or(0, |l| {
            let local: Vec<TrafficSelector> = local_ts.iter().filter_map(selector).collect();
            let remote: Vec<TrafficSelector> = remote_ts.iter().filter_map(selector).collect();
            self.spd.misses_within(&local, &remote).saturating_sub(l.misses_before)
        });
        Some(ChildCounters {
            packets_in: i.packets,
            bytes_in: i.bytes,
            packets_out: o.packets,
            bytes_out: o.bytes,
            drops: i.drops.iter().sum::<u64>() + o.drops.iter().sum::<u64>() + no_policy,
            no_policy,
        })
    }

    /// The `ironsa_esp_sas` gauge (SAs in the SAD, by direction), Prometheus text.
    pub fn sa_gauge(&self) -> String {
        let (ins, outs) = self.sad.len();
        format!(
            "# HELP ironsa_esp_sas ESP SAs in the fastpath\n# TYPE ironsa_esp_sas gauge\nironsa_esp_sas{{direction=\"in\"}} {ins}\nironsa_esp_sas{{direction=\"out\"}} {outs}\n"
        )
    }

    fn write_keylog(&self, c: &ChildSaInstall) {
        let Some(f) = &self.keylog else { return };
        let (enc, integ) = wireshark_names(c);
        let fam = if c.local.is_ipv4() { "IPv4" } else { "IPv6" };
        let line = |src: IpAddr, dst: IpAddr, spi: u32, k: &control::ike_sa::DirectionKeys| {
            let ik = if k.integ.is_empty() {
                String::new()
            } else {
                format!("0x{}", hex(&k.integ))
            };
            format!(
                "\"{fam}\",\"{src}\",\"{dst}\",\"0x{spi:08x}\",\"{enc}\",\"0x{}\",\"{integ}\",\"{ik}\"\n",
                hex(&k.encr)
            )
        };
        if let Ok(mut f) = f.lock() {
            let _ = f.write_all(line(c.remote.ip(), c.local.ip(), c.spi_in, &c.inbound).as_bytes());
            let _ = f.write_all(line(c.local.ip(), c.remote.ip(), c.spi_out, &c.outbound).as_bytes());
            let _ = f.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_adopted_childs_outbound_sequence_numbers_continue_where_told() {
        let children = ChildSas::new(1, ChildSettings::default(), None).unwrap();
        let c = child("gw", "lan", 0x100);
        assert_eq!(children.install(&c), Some(Installed::New));
        assert_eq!(children.outbound_seq(0x100), Some(1));
        assert!(children.set_outbound_seq(0x100, 5_000_000));
        assert_eq!(children.outbound_seq(0x100), Some(5_000_000));
        assert!(!children.set_outbound_seq(0x999, 1), "no such child");
        assert!(children.claim_spi(0x4000_0001));
        assert!(!children.claim_spi(0x4000_0001), "an SPI is claimed once");
        assert_eq!(children.outbound_seq(0x999), None);
    }

    #[test]
    fn a_clustered_node_marks_its_inbound_spis() {
        let spis = UniqueSpis::default();
        let rng = ironsa_crypto::AwsLcProvider::seeded(3);
        let plain: Vec<u32> = (0..64).map(|_| spis.allocate(&rng).unwrap()).collect();
        assert!(plain.iter().any(|s| ironsa::cluster::node_of_esp_spi(*s) != 9));
        spis.set_node(9);
        for _ in 0..256 {
            let s = spis.allocate(&rng).unwrap();
            assert_eq!(ironsa::cluster::node_of_esp_spi(s), 9, "{s:08x}");
        }
    }
    use control::ike_sa::DirectionKeys;
    use zeroize::Zeroizing;

    fn child(connection: &str, name: &str, spi_in: u32) -> ChildSaInstall {
        let keys = || DirectionKeys {
            encr: Zeroizing::new(vec![7u8; 36]),
            integ: Zeroizing::new(Vec::new()),
        };
        ChildSaInstall {
            ike_spis: (1, 2),
            connection: connection.into(),
            name: name.into(),
            spi_in,
            spi_out: spi_in + 1,
            encr: EncrAlg::AesGcm16 { key_bits: 256 },
            integ: None,
            pfs: None,
            additional_ke: Vec::new(),
            esn: false,
            mode: IpsecMode::Tunnel,
            local_ts: Vec::new(),
            remote_ts: Vec::new(),
            local: "192.0.2.1:4500".parse().unwrap(),
            remote: "192.0.2.2:4500".parse().unwrap(),
            udp_encap: false,
            inbound: keys(),
            outbound: keys(),
            rekey_of: None,
            local_vips: Vec::new(),
        }
    }

    fn window_of(children: &ChildSas, spi_in: u32) -> u32 {
        let sa = children.sad().inbound(spi_in, None).expect("inbound SA installed");
        sa.replay.lock().unwrap().size()
    }

    /// A child template's replay window and lifetimes reach its SAs; new
    /// settings (reload) apply to the SAs installed after them.
    #[test]
    fn child_settings_reach_the_sas_and_follow_reloads() {
        let key = ("gw".to_string(), "lan".to_string());
        let settings = |window: u32| {
            ChildSettings::from([(
                key.clone(),
                ChildDataSettings {
                    rekey_bytes: 0,
                    rekey_packets: 1000,
                    replay_window: window,
                },
            )])
        };
        let children = ChildSas::new(1, settings(8192), None).unwrap();
        assert!(children.install(&child("gw", "lan", 0x100)).is_some());
        assert_eq!(window_of(&children, 0x100), 8192);
        let sa = children.sad().inbound(0x100, None).unwrap();
        assert_eq!(sa.hard_budget().0, 1100, "soft 1000 packets, hard 10 % later");
        // Another child of the connection: the defaults.
        assert!(children.install(&child("gw", "other", 0x200)).is_some());
        assert_eq!(window_of(&children, 0x200), fastpath::esp::replay::DEFAULT_WINDOW);
        assert_eq!(children.sad().inbound(0x200, None).unwrap().hard_budget().0, u64::MAX);
        // Reload: a window of 3000 (rounded up to 4096) for what comes next.
        children.set_settings(settings(3000));
        assert!(children.install(&child("gw", "lan", 0x300)).is_some());
        assert_eq!(window_of(&children, 0x300), 4096);
        assert_eq!(window_of(&children, 0x100), 8192, "installed SAs keep theirs");
    }

    /// The outbound SA the SPD protects 10.1.0.1 -> 10.2.0.1 with, by its SPI.
    fn protecting_spi(children: &ChildSas) -> Option<u32> {
        let flow = fastpath::ip::FlowKey {
            src: "10.1.0.1".parse().unwrap(),
            dst: "10.2.0.1".parse().unwrap(),
            proto: 17,
            src_port: 1,
            dst_port: 2,
        };
        match children.spd().lookup(&flow)?.action {
            PolicyAction::Protect(id) => children.sad().outbound(id).map(|sa| sa.spi),
            _ => None,
        }
    }

    /// Rekeys, collisions and deletions in every order leave one set of
    /// policies, on the newest child still there, until the last one goes.
    #[test]
    fn policies_follow_the_newest_child_of_a_lineage() {
        let children = ChildSas::new(1, ChildSettings::default(), None).unwrap();
        let sel = |s: &str| control::ts::parse_selector(s).unwrap();
        let install = |spi_in: u32, rekey_of: Option<u32>| {
            let mut c = child("gw", "lan", spi_in);
            c.local_ts = vec![sel("10.1.0.0/24")];
            c.remote_ts = vec![sel("10.2.0.0/24")];
            c.rekey_of = rekey_of;
            children.install(&c)
        };
        // Outbound SPI = inbound + 1 (see `child`).
        assert_eq!(install(0x100, None), Some(Installed::New));
        assert_eq!(install(0x200, Some(0x100)), Some(Installed::Rekeyed));
        assert_eq!(install(0x300, Some(0x100)), Some(Installed::Rekeyed), "collision");
        assert_eq!((children.spd().len(), protecting_spi(&children)), (1, Some(0x301)));
        children.remove(0x300); // the newest, redundant
        assert_eq!((children.spd().len(), protecting_spi(&children)), (1, Some(0x201)));
        children.remove(0x100); // the old one
        assert_eq!(protecting_spi(&children), Some(0x201));
        assert_eq!(install(0x400, Some(0x200)), Some(Installed::Rekeyed));
        children.remove(0x200);
        assert_eq!((children.spd().len(), protecting_spi(&children)), (1, Some(0x401)));
        // A rekey of a child already gone starts its own policies; either goes alone.
        assert_eq!(install(0x500, Some(0x200)), Some(Installed::New));
        assert_eq!(children.spd().len(), 2);
        children.remove(0x500);
        assert_eq!((children.spd().len(), protecting_spi(&children)), (1, Some(0x401)));
        children.remove(0x401 - 1);
        assert_eq!((children.spd().len(), protecting_spi(&children)), (0, None));
        assert_eq!(children.sad().len(), (0, 0));
    }

    /// The child's policies stop matching (as when a rekey collision lost
    /// them): its outbound packets show up in its own drop counter.
    #[test]
    fn child_counters_include_policy_misses() {
        let children = ChildSas::new(1, ChildSettings::default(), None).unwrap();
        let sel = |s: &str| control::ts::parse_selector(s).unwrap();
        let mut c = child("gw", "lan", 0x100);
        c.local_ts = vec![sel("10.1.0.0/24")];
        c.remote_ts = vec![sel("10.2.0.0/24")];
        assert_eq!(children.install(&c), Some(Installed::New));
        let mut worker = fastpath::worker::Worker::new(0, children.sad().clone(), children.spd().clone());
        let mut send = |dst: &str| {
            let mut pkt = collision::inner_packet("10.1.0.1", dst);
            worker.outbound_packet(&mut pkt)
        };
        assert!(matches!(send("10.2.0.1"), fastpath::worker::Verdict::ToPeer { .. }));
        let policies: Vec<PolicyId> = {
            let all = children.children.lock().unwrap();
            all.lineages
                .values()
                .flat_map(|l| l.policies.as_slice().to_vec())
                .collect()
        };
        for p in policies {
            children.spd().remove(p).unwrap();
        }
        for _ in 0..3 {
            assert_eq!(
                send("10.2.0.1"),
                fastpath::worker::Verdict::Drop(fastpath::stats::DropReason::NoPolicy)
            );
        }
        // Outside its selectors: not its loss.
        send("10.3.0.1");
        let installed = control::ike_sa::ChildSa {
            template: 0,
            spi_in: c.spi_in,
            spi_out: c.spi_out,
            encr: c.encr,
            integ: c.integ,
            pfs: None,
            additional_ke: Default::default(),
            esn: false,
            mode: c.mode,
            local_ts: c.local_ts.as_slice().into(),
            remote_ts: c.remote_ts.as_slice().into(),
            state: control::ike_sa::ChildState::Installed,
            installed_at: std::time::Instant::now(),
            rekey_at: None,
            expire_at: None,
        };
        let k = children.counters(&installed).unwrap();
        assert_eq!((k.packets_out, k.no_policy, k.drops), (1, 3, 3));
    }
}

/// Rekey collisions (RFC 7296 §2.8.1) between two gateways, each with its
/// own control plane and fastpath: traffic must flow both ways afterwards,
/// whoever won, with and without PFS, and through the next rekey.
#[cfg(test)]
mod collision {
    use std::collections::VecDeque;
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use control::config::{ChildConfig, ConnectionConfig, IdentityMatch, IpsecMode, Lifetime, parse_identity};
    use control::endpoint::{AdmissionConfig, Endpoint};
    use control::ike_sa::{Context, Event, Task, Transmit};
    use control::proposal::{parse_esp_proposals, parse_ike_proposals};
    use fastpath::buf::{PacketBuf, PacketBuffer};
    use fastpath::worker::{InboundKind, PacketMeta, Verdict, Worker};

    use super::{ChildSas, ChildSettings};

    /// A UDP packet from `src` to `dst` (inner addresses).
    pub(super) fn inner_packet(src: &str, dst: &str) -> PacketBuf {
        let (src, dst) = (src.parse().unwrap(), dst.parse().unwrap());
        let mut b = PacketBuf::new(128, 2048);
        b.set_data(&[0u8; 8]).unwrap();
        b.append(32).unwrap().fill(0x5a);
        let len = b.len() as u16;
        let d = b.data_mut();
        d[0..2].copy_from_slice(&1234u16.to_be_bytes());
        d[2..4].copy_from_slice(&5678u16.to_be_bytes());
        d[4..6].copy_from_slice(&len.to_be_bytes());
        let c = fastpath::ip::l4_checksum(src, dst, 17, d);
        d[6..8].copy_from_slice(&c.to_be_bytes());
        fastpath::ip::prepend_ip_header(&mut b, src, dst, 17).unwrap();
        b
    }

    /// One gateway: its IKE endpoint, its CHILD_SAs and a fastpath worker.
    struct Gateway {
        ep: Endpoint,
        children: ChildSas,
        worker: Worker,
        addr: SocketAddr,
        lan: &'static str,
        /// (inbound SPI, rekey of) of every child installed, in order.
        installed: Vec<(u32, Option<u32>)>,
        removed: Vec<u32>,
    }

    impl Gateway {
        fn new(now: Instant, name: &str, addr: &str, lan: &'static str, peer_lan: &str, esp: &str) -> Self {
            let children = ChildSas::new(1, ChildSettings::default(), None).unwrap();
            let mut c = ConnectionConfig::new(
                name,
                parse_identity(&format!("{name}@test")),
                IdentityMatch::Any,
                b"a-long-random-test-secret",
            );
            c.ike_proposals = parse_ike_proposals("aes256gcm16-prfsha256-x25519").unwrap();
            c.retransmit_timeout = Duration::from_secs(1);
            c.children.push(ChildConfig {
                name: "net".into(),
                esp_proposals: parse_esp_proposals(esp).unwrap(),
                local_ts: vec![control::ts::parse_selector(&format!("{lan}/24")).unwrap()],
                remote_ts: vec![control::ts::parse_selector(&format!("{peer_lan}/24")).unwrap()],
                mode: IpsecMode::Tunnel,
                lifetime: Lifetime::rekey_after(Duration::from_secs(3600)),
            });
            let mut ctx = Context::new(vec![Arc::new(c)], ironsa_crypto::AwsLcProvider::new().shared());
            ctx.child_spis = children.spi_allocator();
            let worker = Worker::new(0, children.sad().clone(), children.spd().clone()).without_pinning();
            Self {
                ep: Endpoint::new(now, ctx, AdmissionConfig::default(), 0, 0),
                children,
                worker,
                addr: addr.parse().unwrap(),
                lan,
                installed: Vec::new(),
                removed: Vec::new(),
            }
        }

        /// Feeds the endpoint's CHILD_SA events to the fastpath, as a shard does.
        fn events(&mut self) {
            while let Some((_, e)) = self.ep.poll_event() {
                match e {
                    Event::ChildSaInstalled(c) => {
                        assert!(self.children.install(&c).is_some());
                        self.installed.push((c.spi_in, c.rekey_of));
                    }
                    Event::ChildSaDeleted { spi_in, .. } => {
                        self.children.remove(spi_in);
                        self.removed.push(spi_in);
                    }
                    _ => {}
                }
            }
        }

        fn local_spi(&self) -> u64 {
            self.ep.sas().next().expect("an IKE SA").local_spi()
        }

        /// Counters of the (only) child.
        fn counters(&self) -> crate::dataplane::ChildCounters {
            let sa = self.ep.sas().next().expect("an IKE SA");
            self.children
                .counters(&sa.children()[0])
                .expect("the child is in the fastpath")
        }

        fn child_spis(&self) -> Vec<u32> {
            self.ep
                .sas()
                .flat_map(|sa| sa.children().iter().map(|c| c.spi_in))
                .collect()
        }
    }

    /// How the network orders datagrams in flight.
    #[derive(Clone, Copy, Debug)]
    enum Order {
        /// First sent, first delivered.
        Fifo,
        /// Last sent, first delivered (responses overtake requests).
        Lifo,
    }

    struct Net {
        now: Instant,
        a: Gateway,
        b: Gateway,
    }

    impl Net {
        fn up(esp: &str) -> Self {
            let now = Instant::now();
            let mut net = Net {
                now,
                a: Gateway::new(now, "a", "192.0.2.1:500", "10.1.0.1", "10.2.0.0", esp),
                b: Gateway::new(now, "b", "192.0.2.2:500", "10.2.0.1", "10.1.0.0", esp),
            };
            let conn = net.a.ep.context().connections[0].clone();
            let (la, lb) = (net.a.addr, net.b.addr);
            net.a.ep.initiate(now, conn, la, lb).unwrap();
            net.run(Order::Fifo);
            assert_eq!((net.a.child_spis().len(), net.b.child_spis().len()), (1, 1));
            net
        }

        /// Delivers datagrams (and fires timers) until both sides are idle.
        fn run(&mut self, order: Order) {
            let mut flight: VecDeque<(bool, Transmit)> = VecDeque::new();
            let end = self.now + Duration::from_secs(60);
            loop {
                for (from_a, g) in [(true, &mut self.a), (false, &mut self.b)] {
                    g.events();
                    while let Some(t) = g.ep.poll_transmit() {
                        flight.push_back((from_a, t));
                    }
                }
                let next = match order {
                    Order::Fifo => flight.pop_front(),
                    Order::Lifo => flight.pop_back(),
                };
                if let Some((from_a, t)) = next {
                    let to = if from_a { &mut self.b } else { &mut self.a };
                    to.ep.handle(self.now, t.remote, t.local, &t.data);
                    continue;
                }
                match [self.a.ep.poll_timeout(), self.b.ep.poll_timeout()]
                    .into_iter()
                    .flatten()
                    .min()
                {
                    Some(t) if t <= end && t < self.now + Duration::from_secs(120) => {
                        self.now = self.now.max(t);
                        self.a.ep.handle_timeout(self.now);
                        self.b.ep.handle_timeout(self.now);
                    }
                    _ => return,
                }
            }
        }

        /// Both sides rekey their (only) child at the same moment.
        fn collide(&mut self, order: Order) {
            let (a_old, b_old) = (self.a.child_spis()[0], self.b.child_spis()[0]);
            let (a_spi, b_spi) = (self.a.local_spi(), self.b.local_spi());
            let now = self.now;
            assert!(self.a.ep.queue(now, a_spi, Task::RekeyChild(a_old)));
            assert!(self.b.ep.queue(now, b_spi, Task::RekeyChild(b_old)));
            self.run(order);
        }

        /// Packets from each side's LAN reach the other's, and the child
        /// both sides keep is the one that carried them.
        fn assert_traffic_both_ways(&mut self, what: &str) {
            let (ca, cb) = (self.a.child_spis(), self.b.child_spis());
            assert_eq!((ca.len(), cb.len()), (1, 1), "{what}: one child each: {ca:x?} {cb:x?}");
            for a_sends in [true, false] {
                let (from, to) = if a_sends {
                    (&mut self.a, &mut self.b)
                } else {
                    (&mut self.b, &mut self.a)
                };
                let before = from.counters();
                let sent = inner_packet(from.lan, to.lan);
                let mut pkt = sent.clone();
                let v = from.worker.outbound_packet(&mut pkt);
                assert!(
                    matches!(v, Verdict::ToPeer { .. }),
                    "{what}: {} -> {}: {v:?}",
                    from.lan,
                    to.lan
                );
                let meta = PacketMeta {
                    src: from.addr.ip(),
                    dst: Some(to.addr.ip()),
                    src_port: 0,
                };
                let v = to.worker.inbound_packet(InboundKind::RawEsp, &mut pkt, &meta);
                assert_eq!(v, Verdict::ToTunnel, "{what}: {} <- {}", to.lan, from.lan);
                assert_eq!(pkt.data(), sent.data(), "{what}: decrypted as sent");
                let after = from.counters();
                assert_eq!(
                    after.packets_out,
                    before.packets_out + 1,
                    "{what}: counted on the child"
                );
                assert_eq!(after.drops, 0, "{what}: {after:?}");
            }
        }

        /// True when A's own new child survived the collision (A won).
        fn a_won(&self) -> bool {
            let survivor = self.a.child_spis()[0];
            // A's responder child (the peer's) is installed first in FIFO order.
            let rekeys: Vec<u32> = self
                .a
                .installed
                .iter()
                .filter(|(_, r)| r.is_some())
                .map(|(s, _)| *s)
                .collect();
            assert_eq!(rekeys.len(), 2, "both rekeys completed on A: {:x?}", self.a.installed);
            survivor == rekeys[1]
        }
    }

    fn collisions_keep_traffic_flowing(esp: &str) {
        let (mut won, mut lost) = (0, 0);
        for round in 0..64 {
            let mut net = Net::up(esp);
            net.assert_traffic_both_ways("before");
            net.collide(Order::Fifo);
            let a_won = net.a_won();
            net.assert_traffic_both_ways(&format!("round {round}, A won: {a_won}"));
            // Later rekeys start from the survivor's policies.
            let (a_spi, child) = (net.a.local_spi(), net.a.child_spis()[0]);
            let now = net.now;
            net.a.ep.queue(now, a_spi, Task::RekeyChild(child));
            net.run(Order::Fifo);
            net.assert_traffic_both_ways("rekey after the collision");
            if a_won {
                won += 1;
            } else {
                lost += 1;
            }
            if won > 0 && lost > 0 {
                return;
            }
        }
        panic!("64 collisions, all with the same winner ({won} won, {lost} lost)");
    }

    #[test]
    fn child_rekey_collision_won_and_lost_keeps_traffic() {
        collisions_keep_traffic_flowing("aes256gcm16");
    }

    #[test]
    fn child_rekey_collision_won_and_lost_with_pfs_keeps_traffic() {
        collisions_keep_traffic_flowing("aes256gcm16-x25519");
    }

    /// Responses overtake requests: a rekey completes before the peer's
    /// crossing request (or its DELETE) arrives.
    #[test]
    fn child_rekey_collision_with_reordered_messages_keeps_traffic() {
        for esp in ["aes256gcm16", "aes128-sha256-x25519"] {
            for _ in 0..8 {
                let mut net = Net::up(esp);
                net.collide(Order::Lifo);
                net.assert_traffic_both_ways(&format!("{esp}, reordered"));
                assert!(net.a.children.spd().len() == 1 && net.b.children.spd().len() == 1);
            }
        }
    }
}
