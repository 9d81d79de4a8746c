//! Negotiated CHILD_SAs in a fastpath SAD and SPD, shared by the software
//! and DPDK data planes: SA parameters from the control plane's
//! [`ChildSaInstall`], policies (switched to the new SA on rekey), per-child
//! counters, byte/packet lifetime events routed back to the control plane,
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
use fastpath::sad::{Direction, SaEvent, SaId, SaParams, Sad, UdpEncap};
use fastpath::spd::{Policy, PolicyAction, PolicyId, Spd, TrafficSelector};
use tracing::{debug, info, warn};

use crate::dataplane::ChildCounters;

/// Where IKE messages a data plane receives go (local, remote, message without marker).
pub type IkeSink = Arc<dyn Fn(SocketAddr, SocketAddr, Vec<u8>) + Send + Sync>;

/// What the data plane asks of the control plane when a CHILD_SA reaches a
/// byte/packet lifetime or runs out of sequence numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LifetimeRequest {
    /// Soft lifetime or sequence space exhausted: rekey the child.
    Rekey,
    /// Hard lifetime: the SA no longer passes traffic; delete the child.
    Delete,
}

/// Receives lifetime requests: (IKE SPIs, child inbound SPI, request).
pub type LifetimeSink = Arc<dyn Fn((u64, u64), u32, LifetimeRequest) + Send + Sync>;

pub use ironsa::config_file::{ChildDataSettings, ChildSettings};

/// Inbound SPIs unique on this gateway.
#[derive(Default)]
pub struct UniqueSpis {
    used: DashSet<u32>,
}

impl SpiAllocator for UniqueSpis {
    fn allocate(&self, random: &dyn CryptoProvider) -> Result<u32, CryptoError> {
        loop {
            let v = control::crypto::random_u32(random)?;
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
pub trait SaStore {
    /// Installs one direction of a CHILD_SA.
    fn install_sa(&self, p: &SaParams) -> Result<SaId, String>;
    /// Removes an SA installed by [`SaStore::install_sa`].
    fn remove_sa(&self, id: SaId);
}

impl SaStore for Sad {
    fn install_sa(&self, p: &SaParams) -> Result<SaId, String> {
        match p.direction {
            Direction::Inbound => self.install_inbound(p),
            Direction::Outbound => self.install_outbound(p),
        }
        .map_err(|e| e.to_string())
    }
    fn remove_sa(&self, id: SaId) {
        let _ = self.remove(id);
    }
}

/// What a data plane should do after [`ChildSas::install`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Installed {
    /// A new child: its policies were added (the software data plane adds routes).
    New,
    /// A rekey: the old child's policies now point to the new outbound SA.
    Rekeyed,
}

struct Child {
    inbound: SaId,
    outbound: SaId,
    /// The IKE SA it belongs to (where lifetime events go).
    ike_spis: (u64, u64),
    policies: PolicyIds,
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

/// The children by inbound SPI, and the inbound SPI of each outbound SA (so
/// that a lifetime event of either SA finds its child without a map per SA id).
#[derive(Default)]
struct Children {
    by_spi_in: HashMap<u32, Child>,
    spi_in_of_outbound: HashMap<u64, u32>,
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
}

/// The CHILD_SAs of a data plane, in its SAD and SPD.
pub struct ChildSas {
    sad: Arc<Sad>,
    spd: Arc<Spd>,
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
                Some(Mutex::new(
                    std::fs::OpenOptions::new().create(true).append(true).open(p)?,
                ))
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
                    };
                    let owner = children.lock().ok().and_then(|c| c.owner(id));
                    let Some(owner) = owner else { continue };
                    info!(event = ?e, spi_in = format_args!("{:08x}", owner.1), "fastpath lifetime reached: {req:?}");
                    if let Some(s) = sink.get() {
                        s(owner.0, owner.1, req);
                    }
                }
            })?;
        }
        Ok(Self {
            sad: Arc::new(sad),
            spd: Arc::new(Spd::new()),
            spis: Arc::new(UniqueSpis::default()),
            children,
            settings: RwLock::new(settings),
            keylog,
            lifetime_sink,
        })
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

    /// Installs both directions of `c` through `store` and its policies (on a
    /// rekey, the old child's policies switch to the new outbound SA at once;
    /// the old inbound SA keeps decrypting until the old child is removed).
    /// `None` when the fastpath cannot take the child (logged).
    pub fn install(&self, c: &ChildSaInstall, store: &dyn SaStore) -> Option<Installed> {
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
        let replaced = c.rekey_of.and_then(|old| children.by_spi_in.get_mut(&old)).map(|old| {
            self.spd.replace_sa_of(old.policies.as_slice(), old.outbound, outbound);
            std::mem::replace(&mut old.policies, PolicyIds::Many(Box::default()))
        });
        let (policies, installed) = match replaced {
            Some(p) => (p, Installed::Rekeyed),
            None => {
                let mut policies = Vec::with_capacity(c.local_ts.len() * c.remote_ts.len());
                for l in c.local_ts.iter().filter_map(selector) {
                    for r in c.remote_ts.iter().filter_map(selector) {
                        match self.spd.insert(&Policy {
                            local: l,
                            remote: r,
                            action: PolicyAction::Protect(outbound),
                            priority: 100,
                        }) {
                            Ok(id) => policies.push(id),
                            Err(e) => warn!("policy not installed: {e}"),
                        }
                    }
                }
                (PolicyIds::from_vec(policies), Installed::New)
            }
        };
        children.by_spi_in.insert(
            c.spi_in,
            Child {
                inbound,
                outbound,
                ike_spis: c.ike_spis,
                policies,
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

    /// Removes the child with inbound SPI `spi_in`, its SAs (through `store`) and policies.
    pub fn remove(&self, spi_in: u32, store: &dyn SaStore) {
        let Some(old) = self.children.lock().ok().and_then(|mut c| {
            let old = c.by_spi_in.remove(&spi_in)?;
            c.spi_in_of_outbound.remove(&old.outbound.0);
            Some(old)
        }) else {
            return;
        };
        for p in old.policies.as_slice() {
            let _ = self.spd.remove(*p);
        }
        store.remove_sa(old.inbound);
        store.remove_sa(old.outbound);
    }

    /// Counters of the child with inbound SPI `spi_in`.
    pub fn counters(&self, spi_in: u32) -> Option<ChildCounters> {
        let children = self.children.lock().ok()?;
        let c = children.by_spi_in.get(&spi_in)?;
        let i = self.sad.inbound_by_id(c.inbound)?.counters.snapshot();
        let o = self.sad.outbound(c.outbound)?.counters.snapshot();
        Some(ChildCounters {
            packets_in: i.packets,
            bytes_in: i.bytes,
            packets_out: o.packets,
            bytes_out: o.bytes,
            drops: i.drops.iter().sum::<u64>() + o.drops.iter().sum::<u64>(),
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
        let store: &dyn SaStore = &**children.sad();
        assert!(children.install(&child("gw", "lan", 0x100), store).is_some());
        assert_eq!(window_of(&children, 0x100), 8192);
        let sa = children.sad().inbound(0x100, None).unwrap();
        assert_eq!(sa.hard_budget().0, 1100, "soft 1000 packets, hard 10 % later");
        // Another child of the connection: the defaults.
        assert!(children.install(&child("gw", "other", 0x200), store).is_some());
        assert_eq!(window_of(&children, 0x200), fastpath::esp::replay::DEFAULT_WINDOW);
        assert_eq!(children.sad().inbound(0x200, None).unwrap().hard_budget().0, u64::MAX);
        // Reload: a window of 3000 (rounded up to 4096) for what comes next.
        children.set_settings(settings(3000));
        assert!(children.install(&child("gw", "lan", 0x300), store).is_some());
        assert_eq!(window_of(&children, 0x300), 4096);
        assert_eq!(window_of(&children, 0x100), 8192, "installed SAs keep theirs");
    }
}
