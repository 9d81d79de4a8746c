//! The DPDK backend: ports and queues from a [`HwProfile`], one
//! [`PollLoop`] per lcore (queue), IKE to and from the control plane.
//!
//! A poll loop owns queue `i` of every port, worker `i` and steering ring `i`:
//! rx burst → classify each frame → ARP replies, IKE to the control plane,
//! ESP to decapsulation, cleartext to the policy and encapsulation → tx burst.
//!
//! Core affinity of SAs: with RSS (NIC hash on IP addresses and UDP ports) a
//! peer's ESP always lands on the same queue, hence the same loop. Without
//! RSS (vdevs, single-queue NICs) only queue 0 receives, and loop 0 steers
//! ESP by SPI to loop `spi % loops` over the rings. Outbound SAs are pinned to
//! a worker (sequence numbers have one writer); a loop that gets a packet of an
//! SA pinned elsewhere passes it over the owner's ring
//! ([`Verdict::Redirect`]).

use super::DpdkError;
use super::PollWorker;
use super::counters::{DpdkCounters, LoopCounters, LoopReport, PortCounters};
use super::cpu_crypto::IpsecMbCrypto;
use super::frame::{self, BROADCAST_MAC, ETH_HDR_LEN, FrameClass};
use super::inline::{InlineEngine, InlineSas};
use super::lookaside::{CryptoSessions, LookasideEngine};
use super::neighbours::Neighbours;
use super::profile::{BackendKind, CryptoMode, HwProfile, PortRole, parse_mac};
use crate::buf::PacketBuffer;
use crate::reassembly::Reassembly;
use crate::sad::{Direction, SaId, SaParams, Sad};
use crate::spd::Spd;
use crate::worker::{InboundKind, NON_ESP_MARKER_LEN, PacketMeta, Verdict, WorkerCounters};
use ffi::{
    CryptoDev, CryptoOpPool, Eal, EthPort, Mbuf, Mempool, PortConfig, Ring, RxQueue, SessionPool, TxQueue, offload,
};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, SyncSender, TryRecvError, TrySendError, channel, sync_channel};
use std::sync::{Arc, Mutex};

/// Unique suffix for DPDK object names (several backends may share a process).
static INSTANCE: AtomicUsize = AtomicUsize::new(0);
/// Where a copy of each transmitted frame goes: `(port id, frame)`.
type TapSender = Sender<(u16, Vec<u8>)>;
/// The registered taps, shared by the backend and its loops.
type Taps = Arc<TapRegistry>;

/// The taps and their number: a loop sees that none was added with one load,
/// without taking the lock on every poll.
#[derive(Default)]
struct TapRegistry {
    list: Mutex<Vec<TapSender>>,
    count: AtomicUsize,
}
/// IKE messages queued between the data plane and the control plane, each way;
/// beyond that, received IKE is dropped (counted) and sending reports `Busy`.
pub const IKE_QUEUE: usize = 4096;
/// MTU of the ports' links: IKE messages of ours above it leave as IP fragments.
const LINK_MTU: usize = 1500;
/// IP and UDP header bytes in front of an IKE message to `peer`.
fn ip_udp_headers(peer: IpAddr) -> usize {
    if peer.is_ipv4() { 20 + 8 } else { 40 + 8 }
}

/// rte_security sessions per inline-capable port.
const INLINE_SESSIONS: u32 = 16384;
/// Empty transmit attempts before the rest of a burst is dropped.
const TX_RETRIES: usize = 4;

/// An IKE datagram between the data plane and the control plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IkeDatagram {
    /// Our address and port (500 or 4500).
    pub local: SocketAddr,
    /// The peer's address and port.
    pub remote: SocketAddr,
    /// The IKE message (without the non-ESP marker).
    pub payload: Vec<u8>,
}

/// The control plane's handle for sending IKE messages out of the DPDK ports
/// (port 4500 messages get the non-ESP marker).
#[derive(Debug, Clone)]
pub struct IkeSender {
    tx: SyncSender<IkeDatagram>,
    /// Messages sent and not yet taken by the loop (an upper bound: counted
    /// before sending), so an idle loop checks one counter per poll instead
    /// of the channel (whose empty check includes a full memory fence).
    pending: Arc<AtomicUsize>,
}

impl IkeSender {
    /// Queues `d` for transmission by poll loop 0 (never blocks).
    pub fn send(&self, d: IkeDatagram) -> Result<(), DpdkError> {
        self.pending.fetch_add(1, Ordering::Release);
        self.tx.try_send(d).map_err(|e| {
            self.pending.fetch_sub(1, Ordering::Relaxed);
            match e {
                TrySendError::Full(_) => DpdkError::Busy,
                TrySendError::Disconnected(_) => DpdkError::Closed,
            }
        })
    }
}

/// Inline-crypto capability of one port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InlineStatus {
    /// Port name.
    pub port: String,
    /// The port has an rte_security context with inline IPsec capabilities.
    pub capable: bool,
}

/// A port as the backend knows it.
#[derive(Debug, Clone)]
struct PortState {
    port: EthPort,
    name: String,
    role: PortRole,
    mac: [u8; 6],
    gateway: [u8; 6],
    addrs: Vec<IpAddr>,
    rss: bool,
}

/// A started DPDK backend (shared state; the poll loops run separately).
pub struct DpdkBackend {
    eal: Eal,
    profile: HwProfile,
    pool: Mempool,
    ports: Vec<PortState>,
    loops: Vec<(Arc<LoopCounters>, Arc<WorkerCounters>)>,
    sessions: Option<Arc<CryptoSessions>>,
    cpu_crypto: Option<IpsecMbCrypto>,
    sad: Arc<Sad>,
    ike_out: IkeSender,
    inline: Vec<InlineStatus>,
    inline_sas: Option<Arc<InlineSas>>,
    taps: Taps,
}

impl std::fmt::Debug for DpdkBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DpdkBackend")
            .field("profile", &self.profile.name)
            .field("ports", &self.ports.len())
            .field("loops", &self.loops.len())
            .finish_non_exhaustive()
    }
}

/// What [`DpdkBackend::start`] returns.
pub struct Started {
    /// The backend (SA installation, counters, IKE sender).
    pub backend: DpdkBackend,
    /// One poll loop per queue; run each on its own core ([`PollLoop::run`]).
    pub loops: Vec<PollLoop>,
    /// IKE messages received on the ports, for the control plane.
    pub ike: Receiver<IkeDatagram>,
}

impl DpdkBackend {
    /// Initialises EAL with the profile's arguments (once per process).
    pub fn init_eal(profile: &HwProfile) -> Result<Eal, DpdkError> {
        if profile.backend != BackendKind::Dpdk {
            return Err(DpdkError::Config(format!(
                "profile {} is not a DPDK profile",
                profile.name
            )));
        }
        Ok(Eal::init(&profile.eal_args)?)
    }

    /// Configures and starts the profile's ports (and crypto device) and
    /// builds its poll loops over `sad` and `spd` (`sad` must have been
    /// created for `profile.queues` workers). Each port and crypto device
    /// can be started once per process.
    pub fn start(eal: Eal, profile: &HwProfile, sad: Arc<Sad>, spd: Arc<Spd>) -> Result<Started, DpdkError> {
        profile.validate()?;
        if profile.backend != BackendKind::Dpdk {
            return Err(DpdkError::Config(format!(
                "profile {} is not a DPDK profile",
                profile.name
            )));
        }
        let inst = INSTANCE.fetch_add(1, Ordering::Relaxed);
        let s = &profile.sizing;
        let nloops = usize::from(profile.queues);
        let pool = Mempool::new(
            &eal,
            &format!("ironsa_mb{inst}"),
            s.mbufs,
            s.mbuf_cache,
            ffi::DEFAULT_DATA_ROOM,
            -1,
        )?;
        let mut ports = Vec::new();
        let mut queues: Vec<(Vec<RxQueue>, Vec<TxQueue>)> = Vec::new();
        let mut inline = Vec::new();
        let mut inline_pools = Vec::new();
        let inline_mode = profile.crypto.mode == CryptoMode::Inline;
        for spec in &profile.ports {
            let port = EthPort::by_name(&eal, &spec.name).map_err(|_| {
                DpdkError::Config(format!(
                    "port {} not found (is it in eal_args / bound to a DPDK driver?)",
                    spec.name
                ))
            })?;
            let info = port.info()?;
            if info.max_tx_queues < profile.queues {
                return Err(DpdkError::Config(format!(
                    "port {} has {} tx queues, the profile needs {}",
                    spec.name, info.max_tx_queues, profile.queues
                )));
            }
            let rss = profile.offloads.rss
                && profile.queues > 1
                && info.rss_offloads != 0
                && info.max_rx_queues >= profile.queues;
            // A device that spreads frames over its rx queues by itself: every
            // loop polls its own queue (ESP is still steered by SPI).
            let fanout = profile.offloads.rx_fanout && profile.queues > 1;
            if fanout && info.max_rx_queues < profile.queues {
                return Err(DpdkError::Config(format!(
                    "port {} has {} rx queues, rx_fanout with {} queues needs as many",
                    spec.name, info.max_rx_queues, profile.queues
                )));
            }
            let mut rx_offloads = 0;
            if profile.offloads.rx_checksum {
                rx_offloads |= offload::RX_IPV4_CKSUM | offload::RX_UDP_CKSUM | offload::RX_TCP_CKSUM;
            }
            if rss {
                rx_offloads |= offload::RX_RSS_HASH;
            }
            let mut tx_offloads = if profile.offloads.tx_fast_free {
                offload::TX_MBUF_FAST_FREE
            } else {
                0
            };
            let capable = port.security().has_inline_ipsec();
            if inline_mode && capable {
                // Masked by the device's capabilities in configure.
                rx_offloads |= offload::RX_SECURITY;
                tx_offloads |= offload::TX_SECURITY;
            }
            let config = PortConfig {
                rx_queues: if rss || fanout { profile.queues } else { 1 },
                tx_queues: profile.queues,
                rx_descriptors: s.descriptors,
                tx_descriptors: s.descriptors,
                rss,
                rx_offloads,
                tx_offloads,
                promiscuous: true,
            };
            let q = port.configure(&config, &pool)?;
            port.start()?;
            // vdevs may not support promiscuous mode: not an error.
            let _ = port.promiscuous_enable();
            let gateway = spec.gateway_mac.as_deref().and_then(parse_mac).unwrap_or(BROADCAST_MAC);
            inline.push(InlineStatus {
                port: spec.name.clone(),
                capable,
            });
            inline_pools.push(if inline_mode && capable {
                match port.inline_session_pool(&eal, &format!("ironsa_is{inst}_{}", port.id()), INLINE_SESSIONS) {
                    Ok(p) => Some(p),
                    Err(e) => {
                        tracing::warn!(port = %spec.name, error = %e, "no inline IPsec session pool; SAs stay in software");
                        None
                    }
                }
            } else {
                None
            });
            ports.push(PortState {
                port,
                name: spec.name.clone(),
                role: spec.role,
                mac: port.mac_address()?,
                gateway,
                addrs: spec.addresses.clone(),
                rss,
            });
            queues.push((q.rx, q.tx));
        }
        let sessions = match profile.crypto.mode {
            CryptoMode::Lookaside => {
                let name = profile.crypto.device.as_deref().unwrap_or_default();
                let dev = CryptoDev::by_name(&eal, name)
                    .map_err(|_| DpdkError::Config(format!("crypto device {name} not found")))?;
                if dev.aes_gcm_caps().is_none() {
                    return Err(DpdkError::Config(format!("crypto device {name} has no AES-GCM")));
                }
                let sp = SessionPool::new(&eal, &format!("ironsa_ss{inst}"), 16384, &[dev], -1)?;
                Some((dev, sp))
            }
            _ => None,
        };
        let mut qps = match &sessions {
            Some((dev, sp)) => dev
                .configure_and_start(profile.queues, profile.crypto.descriptors.unwrap_or(2048), sp)?
                .into_iter()
                .map(Some)
                .collect(),
            None => Vec::new(),
        };
        let sessions = sessions.map(|(dev, sp)| Arc::new(CryptoSessions::new(dev, sp)));
        let cpu_crypto = match profile.crypto.mode {
            CryptoMode::CpuIpsecMb => Some(IpsecMbCrypto::new()?),
            _ => None,
        };
        let inline_sas = inline_mode.then(|| Arc::new(InlineSas::new(inline_pools, nloops)));
        let rings: Arc<Vec<Ring>> = Arc::new(if nloops > 1 {
            (0..nloops)
                .map(|i| Ring::new(&eal, &format!("ironsa_st{inst}_{i}"), s.ring, -1))
                .collect::<Result<_, _>>()?
        } else {
            Vec::new()
        });
        let (ike_in_tx, ike_in_rx) = sync_channel(IKE_QUEUE);
        let (ike_out_tx, ike_out_rx) = sync_channel(IKE_QUEUE);
        let mut ike_out_rx = Some(ike_out_rx);
        let taps: Taps = Arc::default();
        let ike_pending = Arc::new(AtomicUsize::new(0));
        let ours: Arc<[IpAddr]> = ports.iter().flat_map(|p| p.addrs.clone()).collect();
        let steer_by_spi = nloops > 1 && ports.iter().any(|p| !p.rss);
        let mut loops = Vec::with_capacity(nloops);
        let mut counters = Vec::with_capacity(nloops);
        for i in 0..nloops {
            let lc = Arc::new(LoopCounters::default());
            let worker = PollWorker::for_direct_gcm(i, sad.clone(), spd.clone()).with_outer_headers(true);
            counters.push((lc.clone(), worker.counters()));
            let lookaside = match (&sessions, qps.get_mut(i).and_then(Option::take)) {
                (Some(sess), Some(qp)) => Some(LookasideEngine::new(
                    sess.clone(),
                    qp,
                    CryptoOpPool::new(&eal, &format!("ironsa_op{inst}_{i}"), 4096, 128, -1)?,
                    lc.clone(),
                )),
                _ => None,
            };
            let mut lports = Vec::with_capacity(ports.len());
            for (p, (rx, tx)) in ports.iter().zip(queues.iter_mut()) {
                let rxq = if rx.is_empty() { None } else { Some(rx.remove(0)) };
                lports.push(LoopPort {
                    id: p.port.id(),
                    role: p.role,
                    mac: p.mac,
                    gateway: p.gateway,
                    addrs: p.addrs.clone(),
                    rx: rxq,
                    tx: tx.remove(0),
                    out: Vec::with_capacity(2 * ffi::MAX_BURST),
                });
            }
            let burst = usize::from(s.burst);
            loops.push(PollLoop {
                id: i,
                worker,
                sad: sad.clone(),
                spd: spd.clone(),
                inside_port: lports.iter().position(|p| p.role != PortRole::Outside).unwrap_or(0),
                last_outside: None,
                hops: [HopHeader::NONE; 2],
                udp_tx: 0,
                ports: lports,
                pool: pool.clone(),
                rings: rings.clone(),
                steer_by_spi,
                lookaside,
                inline: inline_sas.as_ref().map(|s| InlineEngine::new(s.clone(), lc.clone())),
                counters: lc,
                ike_in: ike_in_tx.clone(),
                ike_out: if i == 0 { ike_out_rx.take() } else { None },
                ike_pending: ike_pending.clone(),
                neighbours: Neighbours::new().map_err(|_| DpdkError::Random)?,
                ours: ours.clone(),
                reassembly: Reassembly::new(),
                ip_id: 1,
                burst,
                taps: taps.clone(),
                tap_cache: Vec::new(),
                scratch: Scratch::new(nloops),
            });
        }
        let backend = DpdkBackend {
            eal,
            profile: profile.clone(),
            pool,
            ports,
            loops: counters,
            sessions,
            cpu_crypto,
            sad,
            ike_out: IkeSender {
                tx: ike_out_tx,
                pending: ike_pending,
            },
            inline,
            inline_sas,
            taps,
        };
        Ok(Started {
            backend,
            loops,
            ike: ike_in_rx,
        })
    }

    /// The EAL token.
    pub fn eal(&self) -> Eal {
        self.eal
    }

    /// The profile the backend runs.
    pub fn profile(&self) -> &HwProfile {
        &self.profile
    }

    /// The packet pool (for callers that build frames).
    pub fn pool(&self) -> &Mempool {
        &self.pool
    }

    /// The IKE sender for the control plane.
    pub fn ike_sender(&self) -> IkeSender {
        self.ike_out.clone()
    }

    /// MAC address of the port named `name`.
    pub fn port_mac(&self, name: &str) -> Option<[u8; 6]> {
        self.ports.iter().find(|p| p.name == name).map(|p| p.mac)
    }

    /// Inline-crypto capability found on each port at start. With an inline
    /// profile, SAs carried by a capable port get an rte_security session
    /// when the port's capabilities match them; the others run on the CPU.
    pub fn inline_status(&self) -> &[InlineStatus] {
        &self.inline
    }

    /// Creates the crypto device session of an installed SA when the profile
    /// uses lookaside crypto and the device takes the SA (or hands an AES-GCM
    /// SA to intel-ipsec-mb in `cpu-ipsec-mb` mode); returns whether it is offloaded (otherwise it
    /// runs on aws-lc).
    pub fn offload_sa(&self, id: SaId, p: &SaParams) -> Result<bool, DpdkError> {
        if let Some(c) = &self.cpu_crypto {
            let attached = match p.direction {
                Direction::Inbound => self.sad.inbound_by_id(id).map(|sa| c.attach(&sa.cipher, &p.keys)),
                Direction::Outbound => self.sad.outbound(id).map(|sa| c.attach(&sa.cipher, &p.keys)),
            };
            return attached.unwrap_or(Ok(false));
        }
        if let Some(i) = &self.inline_sas {
            let port = self
                .ports
                .iter()
                .position(|x| x.addrs.contains(&p.local))
                .or_else(|| self.ports.iter().position(|x| x.role != PortRole::Inside))
                .unwrap_or(0);
            return i.register(id, p, port);
        }
        match &self.sessions {
            Some(s) => s.register(id, p.direction, p.mode, p.esn, &p.keys),
            None => Ok(false),
        }
    }

    /// Installs an SA in the SAD and, with lookaside crypto, on the device.
    pub fn install_sa(&self, p: &SaParams) -> Result<(SaId, bool), DpdkError> {
        let id = match p.direction {
            Direction::Inbound => self.sad.install_inbound(p)?,
            Direction::Outbound => self.sad.install_outbound(p)?,
        };
        match self.offload_sa(id, p) {
            Ok(off) => Ok((id, off)),
            Err(e) => {
                let _ = self.sad.remove(id);
                Err(e)
            }
        }
    }

    /// Moves an SA to new outer addresses in place (see [`Sad::move_path`]).
    /// Lookaside and CPU crypto sessions do not depend on the addresses; an
    /// inline session carries them in the NIC, so a moved SA leaves inline
    /// offload and runs in software from then on.
    pub fn move_sa(&self, id: SaId, path: &crate::sad::OuterPath) -> Result<(), DpdkError> {
        self.sad.move_path(id, path)?;
        if let Some(i) = &self.inline_sas {
            i.unregister(id);
        }
        Ok(())
    }

    /// Removes an SA from the SAD and the crypto device.
    pub fn remove_sa(&self, id: SaId) -> Result<(), DpdkError> {
        if let Some(s) = &self.sessions {
            s.unregister(id);
        }
        if let Some(i) = &self.inline_sas {
            i.unregister(id);
        }
        Ok(self.sad.remove(id)?)
    }

    /// Number of SAs offloaded to the crypto device (lookaside) or to
    /// intel-ipsec-mb CPU crypto.
    pub fn offloaded_sas(&self) -> usize {
        self.sessions.as_ref().map_or(0, |s| s.len()) + self.cpu_crypto.as_ref().map_or(0, |c| c.attached())
    }

    /// Mirrors a copy of every transmitted frame (`(port id, frame)`) to the
    /// returned receiver (debugging and tests; costs a copy per frame).
    pub fn tap(&self) -> Receiver<(u16, Vec<u8>)> {
        let (tx, rx) = channel();
        let mut list = self.taps.list.lock().unwrap_or_else(|e| e.into_inner());
        list.push(tx);
        self.taps.count.store(list.len(), Ordering::Release);
        rx
    }

    /// Port, queue, loop and crypto counters.
    pub fn counters(&self) -> DpdkCounters {
        DpdkCounters {
            ports: self
                .ports
                .iter()
                .map(|p| PortCounters {
                    name: p.name.clone(),
                    id: p.port.id(),
                    stats: p.port.stats().unwrap_or_default(),
                })
                .collect(),
            loops: self
                .loops
                .iter()
                .enumerate()
                .map(|(id, (io, w))| LoopReport {
                    id,
                    io: io.snapshot(),
                    inbound: w.inbound.snapshot(),
                    outbound: w.outbound.snapshot(),
                })
                .collect(),
            crypto_device: self.sessions.as_ref().map(|s| s.device().name()),
            inline_sas_offloaded: self.inline_sas.as_ref().map_or(0, |i| i.offloaded()),
            inline_sas_fallback: self.inline_sas.as_ref().map_or(0, |i| i.fallback()),
        }
    }

    /// Runs each loop on its own thread until `stop` is set.
    pub fn spawn(
        loops: Vec<PollLoop>,
        stop: Arc<AtomicBool>,
    ) -> std::io::Result<Vec<std::thread::JoinHandle<PollLoop>>> {
        loops
            .into_iter()
            .map(|mut l| {
                let stop = stop.clone();
                std::thread::Builder::new()
                    .name(format!("ironsa-dp{}", l.id))
                    .spawn(move || {
                        l.run(&stop);
                        l
                    })
            })
            .collect()
    }
}

/// One port as seen by one loop: its queues and pending transmissions.
struct LoopPort {
    id: u16,
    role: PortRole,
    mac: [u8; 6],
    gateway: [u8; 6],
    addrs: Vec<IpAddr>,
    rx: Option<RxQueue>,
    tx: TxQueue,
    out: Vec<Mbuf>,
}

/// Where a poll loop sends IP packets it processed.
#[derive(Debug, Clone, Copy)]
enum Lane {
    /// ESP to a peer, by the port owning its outer source address.
    Peer = 0,
    /// Decapsulated packets, by the inside port.
    Inside = 1,
}

/// The "source" of the inside lane's next hops (the port does not depend on it).
const UNSPECIFIED: IpAddr = IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);

/// The port and Ethernet header towards a next hop, valid while the
/// neighbour table's version is `version`.
#[derive(Debug, Clone, Copy)]
struct HopHeader {
    src: IpAddr,
    next_hop: IpAddr,
    /// `src` and `next_hop` as one integer when both are IPv4 (see
    /// [`hop_key_v4`]), 0 otherwise: IPv4 packets match with one compare.
    key: u128,
    port: usize,
    version: u64,
    header: [u8; ETH_HDR_LEN],
}

/// The [`HopHeader::key`] of IPv4 `src` and `next_hop` on `lane` (never 0).
#[inline(always)]
fn hop_key_v4(lane: Lane, src: u32, next_hop: u32) -> u128 {
    (1u128 << (96 + lane as u32)) | u128::from(src) << 32 | u128::from(next_hop)
}

impl HopHeader {
    /// Matches no packet (no neighbour table reaches this version).
    const NONE: HopHeader = HopHeader {
        src: UNSPECIFIED,
        next_hop: UNSPECIFIED,
        key: 0,
        port: 0,
        version: u64::MAX,
        header: [0; ETH_HDR_LEN],
    };
}

/// Per-burst buffers, allocated once.
struct Scratch {
    rx: Vec<Mbuf>,
    esp_udp: Vec<Mbuf>,
    meta_udp: Vec<PacketMeta>,
    esp_raw: Vec<Mbuf>,
    meta_raw: Vec<PacketMeta>,
    clear: Vec<Mbuf>,
    verdicts: Vec<Verdict>,
    results: Vec<(Mbuf, Verdict)>,
    steer: Vec<Vec<Mbuf>>,
}

impl Scratch {
    fn new(loops: usize) -> Self {
        let b = ffi::MAX_BURST;
        Self {
            rx: Vec::with_capacity(b),
            esp_udp: Vec::with_capacity(b),
            meta_udp: Vec::with_capacity(b),
            esp_raw: Vec::with_capacity(b),
            meta_raw: Vec::with_capacity(b),
            clear: Vec::with_capacity(b),
            verdicts: vec![Verdict::Keepalive; b],
            results: Vec::with_capacity(b),
            steer: (0..loops).map(|_| Vec::with_capacity(b)).collect(),
        }
    }
}

/// One poll loop: queue `id` of every port, worker `id`, steering ring `id`.
pub struct PollLoop {
    id: usize,
    worker: PollWorker,
    sad: Arc<Sad>,
    spd: Arc<Spd>,
    ports: Vec<LoopPort>,
    /// The port decapsulated packets leave by (the first inside-facing one).
    inside_port: usize,
    /// The last source address [`PollLoop::outside_port_for`] was asked about, and its port.
    last_outside: Option<(IpAddr, usize)>,
    /// The next hop and Ethernet header each [`Lane`] used last.
    hops: [HopHeader; 2],
    /// UDP-encapsulated ESP sent since the counter was last updated (it is
    /// updated once per burst: an atomic addition each).
    udp_tx: u64,
    pool: Mempool,
    rings: Arc<Vec<Ring>>,
    steer_by_spi: bool,
    lookaside: Option<LookasideEngine>,
    inline: Option<InlineEngine>,
    counters: Arc<LoopCounters>,
    ike_in: SyncSender<IkeDatagram>,
    ike_out: Option<Receiver<IkeDatagram>>,
    /// [`IkeSender`]'s count of messages not yet taken.
    ike_pending: Arc<AtomicUsize>,
    neighbours: Neighbours,
    ours: Arc<[IpAddr]>,
    /// IP fragments addressed to us (IKE larger than the link MTU).
    reassembly: Reassembly,
    /// Identification of the next IP packet we fragment.
    ip_id: u32,
    burst: usize,
    taps: Taps,
    tap_cache: Vec<TapSender>,
    scratch: Scratch,
}

impl std::fmt::Debug for PollLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PollLoop").field("id", &self.id).finish_non_exhaustive()
    }
}

impl PollLoop {
    /// Loop id (= queue id = worker id).
    pub fn id(&self) -> usize {
        self.id
    }

    /// This loop's counters.
    pub fn counters(&self) -> Arc<LoopCounters> {
        self.counters.clone()
    }

    /// Polls until `stop` is set.
    pub fn run(&mut self, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            if self.poll_once() == 0 {
                std::hint::spin_loop();
            }
        }
    }

    /// One round: every rx queue, the steering ring and the IKE queue, then
    /// the transmissions. Returns the number of frames handled.
    pub fn poll_once(&mut self) -> usize {
        // One epoch pin for the whole round: the workers' own pins (one per
        // burst and direction) then nest in it for free, instead of each
        // paying the pin's memory fence.
        let _pin = crate::epoch_table::pin();
        self.refresh_taps();
        let mut handled = 0;
        for p in 0..self.ports.len() {
            let mut rx = std::mem::take(&mut self.scratch.rx);
            if let Some(q) = self.ports[p].rx.as_mut() {
                let n = q.rx_burst(&mut rx, self.burst);
                LoopCounters::add(&self.counters.rx_frames, n as u64);
                handled += n;
            }
            if !rx.is_empty() {
                self.dispatch(&mut rx, false);
            }
            self.scratch.rx = rx;
        }
        if self.id < self.rings.len() {
            let mut rx = std::mem::take(&mut self.scratch.rx);
            let n = self.rings[self.id].dequeue_burst(&mut rx, self.burst);
            if n > 0 {
                LoopCounters::add(&self.counters.steered_in, n as u64);
                handled += n;
                self.dispatch(&mut rx, true);
            }
            self.scratch.rx = rx;
        }
        handled += self.send_ike();
        self.flush();
        handled
    }

    /// Transmits `frames` (complete Ethernet frames) on the port with id
    /// `port` through this loop's queue; returns how many were taken.
    pub fn transmit(&mut self, port: u16, frames: &mut Vec<Mbuf>) -> usize {
        let Some(p) = self.ports.iter().position(|p| p.id == port) else {
            return 0;
        };
        let n = frames.len();
        self.ports[p].out.append(frames);
        self.flush();
        n
    }

    fn refresh_taps(&mut self) {
        if self.taps.count.load(Ordering::Acquire) != self.tap_cache.len()
            && let Ok(t) = self.taps.list.try_lock()
        {
            self.tap_cache = t.clone();
        }
    }

    fn port_index(&self, port_id: u16) -> usize {
        self.ports.iter().position(|p| p.id == port_id).unwrap_or(0)
    }

    #[inline]
    fn learn(&mut self, ip: IpAddr, mac: [u8; 6]) {
        self.neighbours.learn(ip, mac);
    }

    /// Sorts a burst of received frames into ESP, cleartext, IKE and the rest.
    fn dispatch(&mut self, rx: &mut Vec<Mbuf>, from_ring: bool) {
        let nloops = self.rings.len();
        // The mbufs and frames of a burst are cold (a ring or the NIC wrote
        // them): each packet's mbuf header starts loading HEADER_AHEAD packets
        // before its turn and its frame's first line DATA_AHEAD packets
        // before (reading the header, which has arrived by then), so the
        // misses overlap the work on the packets in between. (Prefetching a
        // whole burst at once stalls on the CPU's outstanding-miss limit.)
        const HEADER_AHEAD: usize = 10;
        const DATA_AHEAD: usize = 5;
        for m in rx.iter().take(HEADER_AHEAD) {
            super::mbuf::prefetch_header(m);
        }
        for m in rx.iter().take(DATA_AHEAD) {
            super::mbuf::prefetch_data(m);
        }
        // Counted once per burst (an atomic addition each).
        let mut udp_rx = 0;
        let mut burst = rx.drain(..);
        while let Some(mut m) = burst.next() {
            let ahead = burst.as_slice();
            if let Some(a) = ahead.get(HEADER_AHEAD - 1) {
                super::mbuf::prefetch_header(a);
            }
            if let Some(a) = ahead.get(DATA_AHEAD - 1) {
                super::mbuf::prefetch_data(a);
            }
            if super::mbuf::segments(&m) != 1 {
                LoopCounters::add(&self.counters.rx_unsupported, 1);
                continue;
            }
            let class = {
                let d = PacketBuffer::data(&m);
                let ours = |a: &IpAddr| self.ours.is_empty() || self.ours.contains(a);
                frame::classify(d, ours)
            };
            match class {
                FrameClass::Arp => {
                    if let Some((spa, sha, tpa)) = frame::arp_request(PacketBuffer::data(&m)) {
                        self.learn(IpAddr::V4(spa), sha);
                        let pidx = self.port_index(super::mbuf::input_port(&m));
                        let p = &self.ports[pidx];
                        if p.addrs.contains(&IpAddr::V4(tpa))
                            && frame::make_arp_reply(PacketBuffer::data_mut(&mut m), p.mac)
                        {
                            LoopCounters::add(&self.counters.arp_replies, 1);
                            self.ports[pidx].out.push(m);
                        }
                    }
                }
                FrameClass::Ike {
                    payload_off,
                    payload_end,
                    src_port,
                    dst_port,
                } => {
                    let d = PacketBuffer::data(&m);
                    if let Some((src, dst)) = frame::ip_addrs(d) {
                        self.learn(src, frame::src_mac(d));
                        let (local, remote) = (SocketAddr::new(dst, dst_port), SocketAddr::new(src, src_port));
                        self.pass_to_control(local, remote, &d[payload_off..payload_end]);
                    }
                }
                FrameClass::Keepalive => {
                    LoopCounters::add(&self.counters.keepalives, 1);
                }
                FrameClass::Esp {
                    payload_off,
                    payload_end,
                    udp,
                    src_port,
                } => {
                    if self.steer_by_spi && !from_ring && nloops > 1 {
                        let d = PacketBuffer::data(&m);
                        if payload_off + 4 <= d.len() {
                            let spi = u32::from_be_bytes([
                                d[payload_off],
                                d[payload_off + 1],
                                d[payload_off + 2],
                                d[payload_off + 3],
                            ]);
                            let target = spi as usize % nloops;
                            if target != self.id {
                                self.scratch.steer[target].push(m);
                                continue;
                            }
                        }
                    }
                    // Classified as IP, so the addresses are there.
                    let d = PacketBuffer::data(&m);
                    let Some(meta) = frame::esp_meta(d, src_port) else {
                        LoopCounters::add(&self.counters.rx_unsupported, 1);
                        continue;
                    };
                    self.neighbours.learn_frame(d);
                    if !super::mbuf::narrow(&mut m, payload_off, payload_end) {
                        LoopCounters::add(&self.counters.rx_unsupported, 1);
                        continue;
                    }
                    if udp {
                        udp_rx += 1;
                        self.scratch.esp_udp.push(m);
                        self.scratch.meta_udp.push(meta);
                    } else {
                        self.scratch.esp_raw.push(m);
                        self.scratch.meta_raw.push(meta);
                    }
                }
                FrameClass::Fragment { ip_end } => {
                    let d = PacketBuffer::data(&m);
                    if let Some((src, _)) = frame::ip_addrs(d) {
                        self.learn(src, frame::src_mac(d));
                    }
                    self.reassemble(ip_end, &m);
                }
                FrameClass::Ip { ip_end } => {
                    self.neighbours.learn_frame(PacketBuffer::data(&m));
                    if !super::mbuf::narrow(&mut m, ETH_HDR_LEN, ip_end) {
                        LoopCounters::add(&self.counters.rx_unsupported, 1);
                        continue;
                    }
                    self.scratch.clear.push(m);
                }
                FrameClass::Other => {
                    LoopCounters::add(&self.counters.rx_unsupported, 1);
                }
            }
        }
        LoopCounters::add(&self.counters.esp_udp_rx, udp_rx);
        self.flush_steering();
        self.inbound(InboundKind::Udp);
        self.inbound(InboundKind::RawEsp);
        self.outbound();
    }

    /// Adds an IP fragment addressed to us (frame `m`, IP packet ending at
    /// `ip_end`) to its datagram; a complete IKE datagram goes to the
    /// control plane. Anything else that was fragmented to us is dropped
    /// (counted as unsupported).
    fn reassemble(&mut self, ip_end: usize, m: &Mbuf) {
        let d = PacketBuffer::data(m);
        let Some(packet) = d.get(ETH_HDR_LEN..ip_end) else {
            LoopCounters::add(&self.counters.rx_unsupported, 1);
            return;
        };
        let datagram = match self.reassembly.add(packet, std::time::Instant::now()) {
            Ok(None) => return,
            Ok(Some(dg)) => dg,
            Err(_) => {
                LoopCounters::add(&self.counters.rx_unsupported, 1);
                return;
            }
        };
        match frame::ike_in_udp(datagram.protocol, &datagram.payload) {
            Some((src_port, dst_port, ike)) => {
                let (local, remote) = (
                    SocketAddr::new(datagram.dst, dst_port),
                    SocketAddr::new(datagram.src, src_port),
                );
                self.pass_to_control(local, remote, ike);
            }
            None => LoopCounters::add(&self.counters.rx_unsupported, 1),
        }
    }

    fn pass_to_control(&mut self, local: SocketAddr, remote: SocketAddr, payload: &[u8]) {
        let d = IkeDatagram {
            local,
            remote,
            payload: payload.to_vec(),
        };
        // A flood of IKE must not grow memory: drop (and count) when full.
        if self.ike_in.try_send(d).is_ok() {
            LoopCounters::add(&self.counters.ike_rx, 1);
        } else {
            LoopCounters::add(&self.counters.ike_rx_dropped, 1);
        }
    }

    fn flush_steering(&mut self) {
        for t in 0..self.scratch.steer.len() {
            if self.scratch.steer[t].is_empty() {
                continue;
            }
            let mut v = std::mem::take(&mut self.scratch.steer[t]);
            let total = v.len();
            while !v.is_empty() {
                if self.rings[t].enqueue_burst(&mut v) == 0 {
                    break;
                }
            }
            let full = v.len();
            v.clear();
            LoopCounters::add(&self.counters.steered_out, (total - full) as u64);
            LoopCounters::add(&self.counters.steer_ring_full, full as u64);
            self.scratch.steer[t] = v;
        }
    }

    /// Decapsulates the collected ESP packets of one kind.
    fn inbound(&mut self, kind: InboundKind) {
        let (mut pkts, meta) = match kind {
            InboundKind::Udp => (
                std::mem::take(&mut self.scratch.esp_udp),
                std::mem::take(&mut self.scratch.meta_udp),
            ),
            InboundKind::RawEsp => (
                std::mem::take(&mut self.scratch.esp_raw),
                std::mem::take(&mut self.scratch.meta_raw),
            ),
        };
        if !pkts.is_empty() {
            if let Some(ie) = self.inline.as_mut() {
                let mut results = std::mem::take(&mut self.scratch.results);
                ie.decap_burst(&mut self.worker, &self.sad, kind, &mut pkts, &meta, &mut results);
                for (m, v) in results.drain(..) {
                    self.after_inbound(m, &v);
                }
                self.scratch.results = results;
            }
            match self.lookaside.as_mut() {
                _ if pkts.is_empty() => {}
                Some(lk) => {
                    let mut results = std::mem::take(&mut self.scratch.results);
                    lk.decap_burst(&mut self.worker, &self.sad, kind, &mut pkts, &meta, &mut results);
                    for (m, v) in results.drain(..) {
                        self.after_inbound(m, &v);
                    }
                    self.scratch.results = results;
                }
                None => {
                    // Verdicts are handled in place: no (packet, verdict) copies.
                    let n = pkts.len();
                    let mut verdicts = std::mem::take(&mut self.scratch.verdicts);
                    self.worker.inbound_burst(kind, &mut pkts, &meta, &mut verdicts[..n]);
                    // Verdicts are read where the worker wrote them: a fresh
                    // copy read back at once stalls on store forwarding.
                    for (m, v) in pkts.drain(..).zip(verdicts.iter()) {
                        self.after_inbound(m, v);
                    }
                    self.scratch.verdicts = verdicts;
                }
            }
        }
        let mut meta = meta;
        meta.clear();
        match kind {
            InboundKind::Udp => {
                self.scratch.esp_udp = pkts;
                self.scratch.meta_udp = meta;
            }
            InboundKind::RawEsp => {
                self.scratch.esp_raw = pkts;
                self.scratch.meta_raw = meta;
            }
        }
    }

    /// Sends a decapsulated packet inside (other verdicts were counted and
    /// the packet is freed).
    #[inline]
    fn after_inbound(&mut self, m: Mbuf, v: &Verdict) {
        match v {
            Verdict::ToTunnel => self.send_inside(m),
            Verdict::Ike => {
                // The worker strips the marker; the addresses are in meta,
                // which classification already handled: not reached.
                LoopCounters::add(&self.counters.rx_unsupported, 1);
            }
            _ => {}
        }
    }

    /// Applies the outbound policy to the collected cleartext packets.
    fn outbound(&mut self) {
        let mut pkts = std::mem::take(&mut self.scratch.clear);
        if !pkts.is_empty() {
            if let Some(ie) = self.inline.as_mut() {
                let mut results = std::mem::take(&mut self.scratch.results);
                ie.encap_burst(&mut self.worker, &self.sad, &self.spd, &mut pkts, &mut results);
                for (m, v) in results.drain(..) {
                    self.after_outbound(m, &v);
                }
                self.scratch.results = results;
            }
            match self.lookaside.as_mut() {
                _ if pkts.is_empty() => {}
                Some(lk) => {
                    // Lookaside reorders nothing within an SA; the bypass port
                    // is taken from the inner packet's receive port below.
                    let mut results = std::mem::take(&mut self.scratch.results);
                    lk.encap_burst(&mut self.worker, &self.sad, &self.spd, true, &mut pkts, &mut results);
                    for (m, v) in results.drain(..) {
                        self.after_outbound(m, &v);
                    }
                    self.scratch.results = results;
                }
                None => {
                    let n = pkts.len();
                    let mut verdicts = std::mem::take(&mut self.scratch.verdicts);
                    self.worker.outbound_burst(&mut pkts, &mut verdicts[..n]);
                    for (m, v) in pkts.drain(..).zip(verdicts.iter()) {
                        self.after_outbound(m, v);
                    }
                    self.scratch.verdicts = verdicts;
                }
            }
            self.flush_steering();
            LoopCounters::add(&self.counters.esp_udp_tx, std::mem::take(&mut self.udp_tx));
        }
        self.scratch.clear = pkts;
    }

    /// Sends an encapsulated packet to its peer, a bypassed one on, or hands
    /// a packet of an SA pinned elsewhere to its loop.
    #[inline(always)]
    fn after_outbound(&mut self, mut m: Mbuf, v: &Verdict) {
        match v {
            Verdict::ToPeer { src, dst, udp } => {
                if udp.is_some() {
                    self.udp_tx += 1;
                }
                if let (IpAddr::V4(s), IpAddr::V4(d)) = (src, dst)
                    && self.hop_is(Lane::Peer, hop_key_v4(Lane::Peer, s.to_bits(), d.to_bits()))
                {
                    self.queue_on_hop(Lane::Peer, m);
                } else {
                    self.send_on_lane(Lane::Peer, src, dst, m);
                }
            }
            Verdict::Bypass => {
                let from = self.port_index(super::mbuf::input_port(&m));
                let p = self.forward_port(from);
                match frame::ip_dst(PacketBuffer::data(&m)) {
                    Some(d) => self.send_ip(p, d, m),
                    None => LoopCounters::add(&self.counters.rx_unsupported, 1),
                }
            }
            // The Ethernet header is still in front of the data.
            &Verdict::Redirect(w)
                if w < self.scratch.steer.len() && PacketBuffer::prepend(&mut m, ETH_HDR_LEN).is_ok() =>
            {
                self.scratch.steer[w].push(m);
            }
            _ => {}
        }
    }

    /// The port ESP from `src` leaves by: the one owning `src`, else the first
    /// outside-facing one.
    fn outside_port_for(&mut self, src: IpAddr) -> usize {
        // The ports never change: the last answer holds for the same source.
        if let Some((a, p)) = self.last_outside
            && a == src
        {
            return p;
        }
        let p = self
            .ports
            .iter()
            .position(|p| p.addrs.contains(&src))
            .or_else(|| self.ports.iter().position(|p| p.role != PortRole::Inside))
            .unwrap_or(0);
        self.last_outside = Some((src, p));
        p
    }

    /// Where bypassed cleartext received on port `from` goes.
    fn forward_port(&self, from: usize) -> usize {
        let want_inside = match self.ports.get(from).map(|p| p.role) {
            Some(PortRole::Outside) => true,
            Some(PortRole::Inside) => false,
            _ => return from,
        };
        self.ports
            .iter()
            .position(|p| {
                if want_inside {
                    p.role != PortRole::Outside
                } else {
                    p.role != PortRole::Inside
                }
            })
            .unwrap_or(from)
    }

    /// Sends a decapsulated inner packet out of the first inside-facing port.
    #[inline]
    fn send_inside(&mut self, m: Mbuf) {
        let d = PacketBuffer::data(&m);
        // IPv4 to the last next hop: one compare of the destination's bits,
        // no address built.
        if let Some(h) = d.get(..20)
            && h[0] >> 4 == 4
            && self.hop_is(
                Lane::Inside,
                hop_key_v4(Lane::Inside, 0, u32::from_be_bytes([h[16], h[17], h[18], h[19]])),
            )
        {
            return self.queue_on_hop(Lane::Inside, m);
        }
        match frame::ip_dst(d) {
            Some(d) => self.send_on_lane(Lane::Inside, &UNSPECIFIED, &d, m),
            None => LoopCounters::add(&self.counters.rx_unsupported, 1),
        }
    }

    /// Adds the Ethernet header towards `next_hop` and queues `m` on the
    /// lane's port: ESP to a peer leaves by the port owning its source
    /// `src`, inner packets by the inside port. The header is built once per
    /// next hop and reused while the neighbour table is unchanged (a burst's
    /// packets mostly go to one next hop): a few compares per packet instead
    /// of a port search, a neighbour lookup and a header build.
    #[inline(always)]
    fn send_on_lane(&mut self, lane: Lane, src: &IpAddr, next_hop: &IpAddr, m: Mbuf) {
        let hop = &self.hops[lane as usize];
        if hop.version != self.neighbours.version() || hop.next_hop != *next_hop || hop.src != *src {
            self.hops[lane as usize] = self.build_hop(lane, *src, *next_hop);
        }
        self.queue_on_hop(lane, m);
    }

    /// Whether the lane's hop is current and has IPv4 key `key`.
    #[inline(always)]
    fn hop_is(&self, lane: Lane, key: u128) -> bool {
        let hop = &self.hops[lane as usize];
        hop.key == key && hop.version == self.neighbours.version()
    }

    /// Adds the lane's current Ethernet header to `m` and queues it on the lane's port.
    #[inline(always)]
    fn queue_on_hop(&mut self, lane: Lane, mut m: Mbuf) {
        let hop = &self.hops[lane as usize];
        match PacketBuffer::prepend(&mut m, ETH_HDR_LEN) {
            Ok(h) => {
                h.copy_from_slice(&hop.header);
                self.ports[hop.port].out.push(m);
            }
            Err(_) => LoopCounters::add(&self.counters.tx_dropped, 1),
        }
    }

    /// The port and Ethernet header of a lane's next hop (see [`PollLoop::send_on_lane`]).
    #[cold]
    fn build_hop(&mut self, lane: Lane, src: IpAddr, next_hop: IpAddr) -> HopHeader {
        let port = match lane {
            Lane::Peer => self.outside_port_for(src),
            Lane::Inside => self.inside_port,
        };
        let dst = self.neighbours.get(&next_hop).unwrap_or(self.ports[port].gateway);
        let key = match (lane, src, next_hop) {
            (Lane::Inside, _, IpAddr::V4(d)) => hop_key_v4(lane, 0, d.to_bits()),
            (Lane::Peer, IpAddr::V4(s), IpAddr::V4(d)) => hop_key_v4(lane, s.to_bits(), d.to_bits()),
            _ => 0,
        };
        HopHeader {
            src,
            next_hop,
            key,
            port,
            version: self.neighbours.version(),
            header: frame::ethernet_header(dst, self.ports[port].mac, next_hop.is_ipv6()),
        }
    }

    /// Adds the Ethernet header towards `next_hop` and queues `m` on port `p`
    /// (`m` is an IP packet of `next_hop`'s family).
    #[inline]
    fn send_ip(&mut self, p: usize, next_hop: IpAddr, mut m: Mbuf) {
        let dst = self.neighbours.get(&next_hop).unwrap_or(self.ports[p].gateway);
        // The packet's family is the next hop's (outer header, or the inner
        // packet's destination).
        if frame::prepend_ethernet(&mut m, dst, self.ports[p].mac, next_hop.is_ipv6()).is_ok() {
            self.ports[p].out.push(m);
        } else {
            LoopCounters::add(&self.counters.tx_dropped, 1);
        }
    }

    /// Builds and queues the IKE messages the control plane sent (loop 0).
    fn send_ike(&mut self) -> usize {
        let mut n = 0;
        if self.ike_pending.load(Ordering::Acquire) == 0 {
            return 0;
        }
        while n < self.burst {
            let d = match self.ike_out.as_ref().map(|r| r.try_recv()) {
                Some(Ok(d)) => {
                    self.ike_pending.fetch_sub(1, Ordering::Relaxed);
                    d
                }
                Some(Err(TryRecvError::Empty)) | None => break,
                Some(Err(TryRecvError::Disconnected)) => {
                    self.ike_out = None;
                    break;
                }
            };
            n += 1;
            let mut m = match self.pool.alloc() {
                Ok(m) => m,
                Err(_) => {
                    LoopCounters::add(&self.counters.mbuf_alloc_failed, 1);
                    continue;
                }
            };
            // A NAT keepalive (one 0xFF byte) goes without the non-ESP marker.
            let keepalive = d.payload == [crate::worker::NAT_KEEPALIVE];
            let marker = if d.local.port() == crate::worker::NAT_T_PORT && !keepalive {
                NON_ESP_MARKER_LEN
            } else {
                0
            };
            if ip_udp_headers(d.remote.ip()) + marker + d.payload.len() > LINK_MTU {
                drop(m);
                self.send_ike_fragments(&d, marker);
                continue;
            }
            let built = PacketBuffer::append(&mut m, marker + d.payload.len())
                .map(|b| {
                    b[..marker].fill(0);
                    b[marker..].copy_from_slice(&d.payload);
                })
                .is_ok()
                && crate::ip::prepend_outer(
                    &mut m,
                    d.local.ip(),
                    d.remote.ip(),
                    Some((d.local.port(), d.remote.port())),
                )
                .is_ok();
            if !built {
                LoopCounters::add(&self.counters.tx_dropped, 1);
                continue;
            }
            let p = self.outside_port_for(d.local.ip());
            LoopCounters::add(&self.counters.ike_tx, 1);
            self.send_ip(p, d.remote.ip(), m);
        }
        n
    }

    /// Sends an IKE message larger than the link as IP fragments (an
    /// IKE_AUTH with certificates when the peer cannot take IKE fragments).
    fn send_ike_fragments(&mut self, d: &IkeDatagram, marker: usize) {
        let headers = ip_udp_headers(d.remote.ip());
        let mut whole = crate::buf::PacketBuf::new(headers, headers + marker + d.payload.len());
        let mut body = vec![0u8; marker];
        body.extend_from_slice(&d.payload);
        let frags = whole
            .set_data(&body)
            .map_err(crate::ip::IpError::from)
            .and_then(|()| {
                crate::ip::prepend_outer(
                    &mut whole,
                    d.local.ip(),
                    d.remote.ip(),
                    Some((d.local.port(), d.remote.port())),
                )
            })
            .and_then(|()| crate::ip::fragment(whole.data(), LINK_MTU, self.ip_id));
        self.ip_id = self.ip_id.wrapping_add(1);
        let Ok(frags) = frags else {
            LoopCounters::add(&self.counters.tx_dropped, 1);
            return;
        };
        let p = self.outside_port_for(d.local.ip());
        for f in frags {
            let mut m = match self.pool.alloc() {
                Ok(m) => m,
                Err(_) => {
                    LoopCounters::add(&self.counters.mbuf_alloc_failed, 1);
                    return;
                }
            };
            match PacketBuffer::append(&mut m, f.len()) {
                Ok(b) => b.copy_from_slice(&f),
                Err(_) => {
                    LoopCounters::add(&self.counters.tx_dropped, 1);
                    return;
                }
            }
            self.send_ip(p, d.remote.ip(), m);
        }
        LoopCounters::add(&self.counters.ike_tx, 1);
    }

    /// Transmits what every port has queued; drops what the port will not take.
    fn flush(&mut self) {
        for p in &mut self.ports {
            if p.out.is_empty() {
                continue;
            }
            if !self.tap_cache.is_empty() {
                for m in &p.out {
                    let copy = PacketBuffer::data(m).to_vec();
                    for t in &self.tap_cache {
                        let _ = t.send((p.id, copy.clone()));
                    }
                }
            }
            let total = p.out.len();
            let sent = p.tx.tx_all(&mut p.out, TX_RETRIES);
            LoopCounters::add(&self.counters.tx_frames, sent as u64);
            LoopCounters::add(&self.counters.tx_dropped, (total - sent) as u64);
        }
    }
}
