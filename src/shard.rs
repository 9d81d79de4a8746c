//! One control-plane shard: a mio event loop with its own UDP sockets
//! (SO_REUSEPORT on the IKE and NAT-T ports), its own IKE SAs (an
//! [`Endpoint`]) and timers. The shard id lives in the top bits of our IKE
//! SPIs; a datagram that reaches the wrong shard is handed to its owner.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant, SystemTime};

use control::config::ConnectionConfig;
use control::config::IkeVersions;
use control::endpoint::{AdmissionConfig, Endpoint, EndpointStats};
use control::ike_sa::{ChildState, Context, DownReason, Event, Task};
use control::ikev1::{Ikev1Endpoint, Ikev1Policy};
use control::wire::ikev2::{Header, NotifyType};
use control::wire::ingress::{IkeVersion, Ingress, classify};
use mio::{Events, Interest, Poll, Token, Waker};
use tracing::{debug, info, warn};

use crate::config_file::{ReloadEffect, reload_effect};
use crate::dataplane::DataPlane;
use crate::ike_io::{IkeSocket, Outgoing, RecvBatch};
use crate::registry::{Registry, SaSummary};
use ironsa::aaa::accounting::{Accounting, Sessions, TerminateCause, Usage};
use ironsa::aaa::dae::{SessionIndex, SessionRef};
use ironsa::aaa::radius::AcctStatus;

const WAKER: Token = Token(usize::MAX);
pub use ironsa::cluster::SHARD_BITS;

/// `MemAvailable` of /proc/meminfo, in bytes.
fn available_memory() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_mem_available(&text)
}

/// The `MemAvailable:` line of /proc/meminfo text, in bytes.
fn parse_mem_available(meminfo: &str) -> Option<usize> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// Heap a tunnel holds (IKE SA, CHILD_SA pair in the fastpath, indexes: 3.7–3.8 KiB
/// measured by tests/gateway_load.rs) plus room for the handshakes in flight.
const BYTES_PER_EXPECTED_SA: usize = 8 << 10;

/// A request to a shard from another thread.
pub enum ShardMsg {
    /// Authenticated ESP of the CHILD_SA with inbound SPI `spi_in` came from
    /// `source`, not from its peer's address: its IKE SA may follow the NAT rebinding.
    PeerMoved {
        /// The child's inbound SPI.
        spi_in: u32,
        /// The packet's outer source.
        source: SocketAddr,
    },
    /// An IKE message the data plane received on its own ports (or found on
    /// the NAT-T port), routed by [`route`] to the shard owning its SPI.
    Received {
        /// Our address it was sent to.
        local: SocketAddr,
        /// The sender.
        remote: SocketAddr,
        /// Its header as routing read it (`None`: too short to hold one).
        header: Option<Header>,
        /// The IKE message (marker stripped).
        data: Vec<u8>,
        /// Another cluster node forwarded it: it goes no further, even if
        /// the ranges moved meanwhile (a datagram crosses one link at most).
        from_node: bool,
    },
    /// A datagram that arrived at another shard but belongs to this one.
    Datagram {
        /// Our address it was sent to.
        local: SocketAddr,
        /// The sender.
        remote: SocketAddr,
        /// Its header as routing read it.
        header: Header,
        /// The IKE message (marker stripped).
        data: Vec<u8>,
    },
    /// Start an IKE SA.
    Initiate {
        /// The connection.
        config: Arc<ConnectionConfig>,
        /// Our address.
        local: SocketAddr,
        /// The peer.
        remote: SocketAddr,
        /// Bring up only this child template (all of them when `None`).
        template: Option<usize>,
        /// Answer: our SPI or why not.
        reply: Sender<Result<u64, String>>,
        /// Where to say how the negotiation ended, if someone waits for it.
        outcome: Option<Sender<Result<String, String>>>,
    },
    /// Delete IKE SAs (by SPI, ours or the peer's, or all of a connection, or all).
    Terminate {
        /// Either SPI of the IKE SA.
        spi: Option<u64>,
        /// Connection name.
        connection: Option<String>,
        /// Answer: how many were deleted.
        reply: Sender<usize>,
    },
    /// Rekey, delete or add to the SAs an operator names.
    Command {
        /// Which SAs.
        selection: Selection,
        /// What to do.
        op: Op,
        /// Answer: what was started, one line each.
        reply: Sender<Vec<String>>,
    },
    /// List the SAs.
    List(Sender<Vec<SaSummary>>),
    /// Counters.
    Stats(Sender<ShardStats>),
    /// New connection list (reload).
    Reload(Vec<Arc<ConnectionConfig>>),
    /// Continue these IKE SAs of a range this node adopted (cluster).
    Adopt(Vec<control::ike_sa::resume::ResumableIkeSa>),
    /// Let go of the IKE SAs of this range: another node serves it (cluster).
    Release(ironsa::cluster::NodeId),
    /// The RADIUS server's answer to an EAP packet an IKE SA relayed.
    EapReply {
        /// Our SPI of the IKE SA.
        spi: u64,
        /// The answer.
        reply: control::ike_sa::eap::EapBackendReply,
    },
    /// A dynamic-authorization request (RFC 5176) for these IKE SAs of
    /// RADIUS sessions: end them, or shorten their lives.
    Dae {
        /// Our SPIs.
        spis: Vec<u64>,
        /// What to do.
        action: ironsa::aaa::dae::Action,
        /// Answer: to how many it was done.
        reply: Sender<usize>,
    },
    /// The host's addresses after a change (or its routes changed): MOBIKE
    /// client SAs move to the source that now reaches their peer.
    LocalAddresses {
        /// The addresses a peer could reach us at.
        addresses: Arc<[std::net::IpAddr]>,
        /// Whether the set differs from the last one (announced to peers).
        set_changed: bool,
    },
    /// Delete every SA, then stop.
    Shutdown,
}

/// The IKE SAs an operator's command names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IkeRef {
    /// Every IKE SA of this connection.
    Connection(String),
    /// The IKE SA with this SPI (ours or the peer's), or the one holding
    /// the CHILD_SA with this SPI (inbound or outbound).
    Spi(u64),
    /// Every IKE SA.
    Any,
}

/// The SAs an operator's command names: IKE SAs and, within them, CHILD_SAs
/// by name or SPI (inbound or outbound, hex).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selection {
    /// Which IKE SAs.
    pub ike: IkeRef,
    /// Which of their children, when the command is about children.
    pub child: Option<String>,
}

/// What an operator's command does to the SAs it names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Rekey the CHILD_SAs named, else the IKE SAs.
    Rekey,
    /// Delete the CHILD_SAs named (the IKE SA stays).
    DeleteChild,
    /// Negotiate a new CHILD_SA from this template of the connection.
    CreateChild(usize),
}

/// True when `spec` names `child`: its template's name, or one of its SPIs in hex.
fn names_child(spec: &str, name: &str, child: &control::ike_sa::ChildSa) -> bool {
    spec == name
        || u32::from_str_radix(spec.trim_start_matches("0x"), 16).is_ok_and(|s| s == child.spi_in || s == child.spi_out)
}

/// The tasks `op` on `selection` means for `sa`, each with a line for the operator.
fn tasks_for(sa: &control::ike_sa::IkeSa, selection: &Selection, op: Op) -> Vec<(Task, String)> {
    if !sa.is_established() || sa.is_deleting() || sa.is_rekeyed() {
        return Vec::new();
    }
    let (spi_i, spi_r) = sa.spis();
    let conn = &sa.config().name;
    // A CHILD_SA named by the SPI that selected its IKE SA.
    let mut child = selection.child.clone();
    match &selection.ike {
        IkeRef::Connection(name) if name != conn => return Vec::new(),
        IkeRef::Spi(spi) if *spi != spi_i && *spi != spi_r => {
            let by_child = sa
                .children()
                .iter()
                .any(|c| *spi == u64::from(c.spi_in) || *spi == u64::from(c.spi_out));
            if !by_child || child.is_some() {
                return Vec::new();
            }
            child = Some(format!("{spi:08x}"));
        }
        _ => {}
    }
    let ike = format!("IKE SA {conn} {spi_i:016x}_i {spi_r:016x}_r");
    let children = |verb: &str, task: fn(u32) -> Task| -> Vec<(Task, String)> {
        let spec = child.as_deref().unwrap_or_default();
        // A rekey needs an installed child; a deletion takes any not already being deleted.
        let eligible = |c: &control::ike_sa::ChildSa| match op {
            Op::Rekey => c.state == ChildState::Installed,
            _ => c.state != ChildState::Deleting,
        };
        sa.children()
            .iter()
            .filter(|c| eligible(c) && names_child(spec, sa.child_name(c), c))
            .map(|c| {
                let line = format!(
                    "{verb} CHILD_SA {} (in {:08x}, out {:08x}) of {ike}",
                    sa.child_name(c),
                    c.spi_in,
                    c.spi_out
                );
                (task(c.spi_in), line)
            })
            .collect()
    };
    match (op, &child) {
        (Op::Rekey, None) => vec![(Task::RekeyIke, format!("rekeying {ike}"))],
        (Op::Rekey, Some(_)) => children("rekeying", Task::RekeyChild),
        (Op::DeleteChild, Some(_)) => children("deleting", Task::DeleteChild),
        (Op::DeleteChild, None) => Vec::new(),
        (Op::CreateChild(t), _) => {
            let name = sa.config().children.get(t).map_or("", |c| c.name.as_str());
            vec![(Task::CreateChild(t), format!("creating CHILD_SA {name} on {ike}"))]
        }
    }
}

/// Counters of one shard.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ShardStats {
    /// Endpoint counters.
    #[serde(flatten)]
    pub endpoint: EndpointStatsSer,
    /// IKE SAs held.
    pub ike_sas: usize,
    /// Half-open SAs.
    pub half_open: usize,
    /// CHILD_SAs held.
    pub child_sas: usize,
    /// Datagrams received.
    pub rx_datagrams: u64,
    /// Datagrams sent.
    pub tx_datagrams: u64,
    /// Datagrams handed to another shard.
    pub forwarded: u64,
    /// Datagrams sent to the cluster node serving their SPI.
    pub forwarded_to_nodes: u64,
    /// IKE_SA_INIT requests refused (TEMPORARY_FAILURE) while the cluster store was unreachable.
    pub refused_store_down: u64,
    /// Handshake failures by reason.
    pub failures: HashMap<String, u64>,
    /// Bytes the IKE SAs hold by item (their own accounting, summed).
    pub memory: SaMemory,
    /// EAP outcomes by method and EAP packets dropped.
    pub eap: EapStatsSer,
}

/// Serializable copy of [`control::ike_sa::eap::EapStats`].
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct EapStatsSer {
    /// Peers that passed EAP, by method.
    pub successes: std::collections::BTreeMap<&'static str, u64>,
    /// Peers refused by EAP, by method.
    pub failures: std::collections::BTreeMap<&'static str, u64>,
    /// EAP packets dropped (malformed, out of state, while RADIUS works).
    pub dropped: u64,
}

impl From<&control::ike_sa::eap::EapStats> for EapStatsSer {
    fn from(s: &control::ike_sa::eap::EapStats) -> Self {
        use std::sync::atomic::Ordering::Relaxed;
        let by_method = |c: &[std::sync::atomic::AtomicU64]| {
            control::ike_sa::eap::METHOD_NAMES
                .iter()
                .zip(c)
                .map(|(m, n)| (*m, n.load(Relaxed)))
                .collect()
        };
        Self {
            successes: by_method(&s.successes),
            failures: by_method(&s.failures),
            dropped: s.dropped.load(Relaxed),
        }
    }
}

/// Bytes held by a shard's IKE SAs, by item (serialized as a map of
/// `control::ike_sa::MemoryUsage`'s items).
#[derive(Clone, Debug, Default)]
pub struct SaMemory(pub control::ike_sa::MemoryUsage);

impl serde::Serialize for SaMemory {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.items())
    }
}

/// Serializable copy of [`EndpointStats`].
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct EndpointStatsSer {
    /// IKE_SA_INIT requests for new SAs.
    pub init_requests: u64,
    /// COOKIE notifies sent.
    pub cookies_sent: u64,
    /// Valid cookies received.
    pub cookies_valid: u64,
    /// Invalid cookies received.
    pub cookies_invalid: u64,
    /// Dropped by the per-source limit.
    pub dropped_per_source: u64,
    /// Dropped by the half-open cap.
    pub dropped_capacity: u64,
    /// Rejected IKE_SA_INIT requests.
    pub init_rejected: u64,
    /// IKE SAs established.
    pub established: u64,
    /// Of those, keyed by a post-quantum (ML-KEM) key exchange.
    pub established_post_quantum: u64,
    /// Undecodable or unmatched datagrams.
    pub dropped_invalid: u64,
    /// New IKE SAs redirected to a less loaded cluster node (RFC 5685).
    pub redirected: u64,
    /// Dropped datagrams and refused requests by reason.
    pub drops: std::collections::BTreeMap<&'static str, u64>,
}

impl From<&EndpointStats> for EndpointStatsSer {
    fn from(s: &EndpointStats) -> Self {
        Self {
            init_requests: s.init_requests,
            cookies_sent: s.cookies_sent,
            cookies_valid: s.cookies_valid,
            cookies_invalid: s.cookies_invalid,
            dropped_per_source: s.dropped_per_source,
            dropped_capacity: s.dropped_capacity,
            init_rejected: s.init_rejected,
            established: s.established,
            established_post_quantum: s.established_post_quantum,
            dropped_invalid: s.dropped_invalid,
            redirected: s.redirected,
            drops: s.drops.iter().map(|(r, n)| (r.name(), n)).collect(),
        }
    }
}

/// How to reach a shard from other threads.
#[derive(Clone)]
pub struct ShardHandle {
    tx: Sender<ShardMsg>,
    waker: Arc<Waker>,
}

impl ShardHandle {
    /// Sends a message and wakes the shard.
    pub fn send(&self, msg: ShardMsg) -> bool {
        self.tx.send(msg).is_ok() && self.waker.wake().is_ok()
    }
}

/// Settings a shard starts with.
pub struct ShardConfig {
    /// This shard's id.
    pub id: usize,
    /// Addresses to listen on.
    pub listen: Vec<std::net::IpAddr>,
    /// IKE port.
    pub ike_port: u16,
    /// NAT-T port.
    pub nat_port: u16,
    /// Connections.
    pub connections: Vec<Arc<ConnectionConfig>>,
    /// Anti-DoS.
    pub admission: AdmissionConfig,
    /// Peers' NAT-T port.
    pub remote_nat_port: u16,
    /// IKE SAs to size the tables for at start (0 = grow on demand).
    pub expected_sas: usize,
    /// NAT-T sockets owned by the data plane (which reads them); the shard only sends on them.
    pub nat_sockets: Option<Vec<(SocketAddr, std::net::UdpSocket)>>,
    /// Randomness, key exchanges, legacy signing and time of the IKE SAs.
    pub crypto: Arc<dyn control::crypto::CryptoProvider>,
    /// Where the keys of new IKE SAs are written (`daemon.keylog`).
    pub ike_key_log: Option<Arc<dyn control::ike_sa::IkeKeyLog>>,
    /// This node's id when clustered: our IKE SPIs carry it below the shard id.
    pub node: Option<ironsa::cluster::NodeId>,
    /// The shard's part in the cluster, when clustered.
    pub cluster: Option<crate::cluster_shard::ShardCluster>,
    /// The gateway's address pools, shared by all shards.
    pub pools: Arc<control::pool::SharedPools>,
    /// The local EAP users (`[eap] users_file`).
    pub eap_users: Option<Arc<dyn control::eap::UserStore + Send + Sync>>,
    /// The RADIUS back end of `remote_auth = "eap-radius"`.
    pub radius: Option<Arc<ironsa::aaa::relay::EapRadius>>,
    /// RADIUS accounting of EAP-RADIUS sessions (`[[radius.accounting_server]]`).
    pub accounting: Option<Arc<Accounting>>,
    /// The EAP-RADIUS sessions of all shards, for dynamic authorization.
    pub sessions: Arc<SessionIndex>,
}

/// A shard's event loop state.
pub struct Shard {
    id: usize,
    poll: Poll,
    sockets: Vec<IkeSocket>,
    rx: Receiver<ShardMsg>,
    peers: Arc<Vec<ShardHandle>>,
    endpoint: Endpoint,
    /// The IKEv1 SAs (connections with `version = 1` or `"any"`).
    ikev1: Ikev1Endpoint,
    dataplane: Arc<dyn DataPlane>,
    /// IKE goes in and out through the data plane's ports, not sockets.
    ike_via_dataplane: bool,
    registry: Arc<Registry>,
    stats: ShardStats,
    cluster: Option<crate::cluster_shard::ShardCluster>,
    shutting_down: Option<Instant>,
    /// IKE SAs the shard sized itself for.
    expected_sas: usize,
    /// Outcomes of our initiations someone waits for, by our SPI.
    waiters: HashMap<u64, Waiter>,
    /// The RADIUS back end of `remote_auth = "eap-radius"`.
    radius: Option<Arc<ironsa::aaa::relay::EapRadius>>,
    /// The EAP-RADIUS sessions of this shard's IKE SAs (Class, interim
    /// schedule, usage of CHILD_SAs gone), for accounting.
    aaa_sessions: Sessions,
    /// RADIUS accounting, when configured.
    accounting: Option<Arc<Accounting>>,
    /// The EAP-RADIUS sessions of all shards, for dynamic authorization.
    session_index: Arc<SessionIndex>,
}

/// Creates the shard's channel and waker before the loop runs (so all handles exist first).
pub fn prepare(id: usize) -> io::Result<(Poll, ShardHandle, Receiver<ShardMsg>)> {
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let (tx, rx) = mpsc::channel();
    let _ = id;
    Ok((poll, ShardHandle { tx, waker }, rx))
}

/// The shard owning our SPI `spi`.
pub fn owner_of(spi: u64, shards: usize) -> usize {
    ((spi >> (64 - SHARD_BITS)) as usize) % shards.max(1)
}

/// The shard owning an IKE message: the one whose id is in the SPI we chose
/// for it. `None` for a first IKE_SA_INIT request (we have chosen no SPI
/// yet: any shard may take it) and for datagrams too short for a header.
pub fn route(header: Option<&Header>, shards: usize) -> Option<usize> {
    header
        .map(Header::recipient_spi)
        .filter(|spi| *spi != 0)
        .map(|spi| owner_of(spi, shards))
}

/// The connections the IKEv2 endpoint answers and initiates: all but
/// `version = 1` ones.
fn ikev2_connections(all: &[Arc<ConnectionConfig>]) -> Vec<Arc<ConnectionConfig>> {
    all.iter()
        .filter(|c| c.ike_versions != IkeVersions::V1)
        .cloned()
        .collect()
}

/// Who waits for the outcome of an IKE SA we initiated.
struct Waiter {
    outcome: Sender<Result<String, String>>,
    config: Arc<ConnectionConfig>,
    /// The child template asked for, if only one (else the first).
    template: Option<usize>,
    /// The name of the child that rides in IKE_AUTH, once the IKE SA is up.
    child_pending: Option<String>,
}

impl Shard {
    /// Binds the sockets and builds the endpoint.
    pub fn new(
        cfg: ShardConfig,
        poll: Poll,
        rx: Receiver<ShardMsg>,
        peers: Arc<Vec<ShardHandle>>,
        dataplane: Arc<dyn DataPlane>,
        registry: Arc<Registry>,
    ) -> io::Result<Self> {
        let mut sockets = Vec::new();
        for (addr, s) in cfg.nat_sockets.iter().flatten() {
            sockets.push(IkeSocket::send_only(s.try_clone()?, *addr));
        }
        let external_nat = cfg.nat_sockets.is_some();
        let ike_via_dataplane = dataplane.carries_ike();
        // With IKE on the data plane's ports there is nothing to bind.
        let listen: &[std::net::IpAddr] = if ike_via_dataplane { &[] } else { &cfg.listen };
        for ip in listen {
            for (port, nat) in [(cfg.ike_port, false), (cfg.nat_port, true)] {
                if nat && external_nat {
                    continue;
                }
                let addr = SocketAddr::new(*ip, port);
                // charon (and RFC 3948 on 4500) marks IKE with a non-ESP marker on
                // every port but 500; so do we.
                let mut socket = IkeSocket::bind(addr, nat || port != 500)
                    .map_err(|e| io::Error::new(e.kind(), format!("cannot bind {addr}: {e}")))?;
                let token = Token(sockets.len());
                // Only sockets the shard reads are registered; data-plane sockets are send-only here.
                poll.registry()
                    .register(&mut socket.socket, token, Interest::READABLE)?;
                sockets.push(socket);
            }
        }
        let mut ctx = Context::new(ikev2_connections(&cfg.connections), cfg.crypto);
        ctx.local_nat_port = cfg.nat_port;
        ctx.remote_nat_port = cfg.remote_nat_port;
        ctx.child_spis = dataplane.spi_allocator();
        ctx.key_log = cfg.ike_key_log;
        ctx.addresses = cfg.pools;
        ctx.eap_users = cfg.eap_users;
        let mut ikev1_ctx = ctx.clone();
        ikev1_ctx.connections = Arc::new(cfg.connections);
        let (prefix, prefix_bits) = ironsa::cluster::ike_spi_prefix(cfg.id, cfg.node);
        ikev1_ctx.spi_prefix = prefix << (64 - prefix_bits);
        ikev1_ctx.spi_prefix_bits = prefix_bits;
        let ikev1 = Ikev1Endpoint::new(ikev1_ctx, Ikev1Policy::main_mode_only());
        let mut endpoint = Endpoint::new(Instant::now(), ctx, cfg.admission, prefix, prefix_bits);
        endpoint.reserve(cfg.expected_sas);
        endpoint.set_redirect_policy(cfg.cluster.as_ref().and_then(|c| c.redirect_policy()));
        let expected_sas = cfg.expected_sas;
        Ok(Self {
            id: cfg.id,
            poll,
            sockets,
            rx,
            peers,
            endpoint,
            ikev1,
            dataplane,
            ike_via_dataplane,
            registry,
            stats: ShardStats::default(),
            cluster: cfg.cluster,
            shutting_down: None,
            expected_sas,
            waiters: HashMap::new(),
            radius: cfg.radius,
            aaa_sessions: Sessions::default(),
            accounting: cfg.accounting,
            session_index: cfg.sessions,
        })
    }

    /// Runs the loop until shutdown completes.
    pub fn run(mut self) {
        self.prefault();
        let mut events = Events::with_capacity(256);
        let mut batch = RecvBatch::default();
        loop {
            let now = Instant::now();
            let checkpoint = self.cluster.as_ref().map(|c| c.deadline());
            let interim = self.aaa_sessions.next_interim();
            let next = [
                self.endpoint.poll_timeout(),
                self.ikev1.poll_timeout(),
                checkpoint,
                interim,
            ]
            .into_iter()
            .flatten()
            .min();
            let mut timeout = next.map(|t| t.saturating_duration_since(now));
            if self.shutting_down.is_some() {
                timeout = Some(timeout.map_or(Duration::from_millis(50), |t| t.min(Duration::from_millis(50))));
            }
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    warn!(shard = self.id, "poll failed: {e}");
                }
                continue;
            }
            for ev in events.iter() {
                if ev.token() == WAKER {
                    continue;
                }
                self.drain_socket(ev.token().0, &mut batch);
            }
            self.drain_channel();
            let now = Instant::now();
            self.endpoint.handle_timeout(now);
            self.ikev1.handle_timeout(now);
            self.flush();
            self.interim_updates(now);
            if let Some(c) = &mut self.cluster {
                c.checkpoint(now, &self.endpoint, &*self.dataplane);
            }
            if let Some(since) = self.shutting_down {
                if self.endpoint.is_empty() || now.duration_since(since) > Duration::from_secs(3) {
                    // Sessions whose DELETE was not answered end here.
                    let left: Vec<u64> = self.aaa_sessions.iter().map(|(spi, _)| spi).collect();
                    for spi in left {
                        self.end_session_as(spi, TerminateCause::NasReboot);
                        self.session_ended(spi, &DownReason::Deleted);
                    }
                    info!(shard = self.id, remaining = self.endpoint.len(), "shard stopped");
                    return;
                }
            }
        }
    }

    /// Faults in allocator memory for this shard's expected tunnels, so that
    /// bringing them up does not wait for the kernel to zero new pages.
    fn prefault(&self) {
        if self.expected_sas == 0 {
            return;
        }
        let started = Instant::now();
        let mut want = self.expected_sas.saturating_mul(BYTES_PER_EXPECTED_SA);
        // Never more than half of the memory available, shared by the shards:
        // an oversized setting costs speed, not the gateway.
        if let Some(avail) = available_memory() {
            let cap = avail / 2 / self.peers.len().max(1);
            if want > cap {
                warn!(
                    shard = self.id,
                    wanted_mib = want >> 20,
                    cap_mib = cap >> 20,
                    "expected_tunnels needs more memory than is available; pre-faulting less"
                );
                want = cap;
            }
        }
        let bytes = ffi::alloc::prefault_this_thread(want);
        info!(
            shard = self.id,
            mib = bytes >> 20,
            ms = started.elapsed().as_millis() as u64,
            "allocator memory faulted in for the expected tunnels"
        );
    }

    /// Reads the socket in batches until it is empty; the replies of each batch leave together.
    fn drain_socket(&mut self, idx: usize, batch: &mut RecvBatch) {
        loop {
            let Some(s) = self.sockets.get(idx) else { return };
            let nat = s.nat;
            let got = match s.recv_batch(batch) {
                Ok(n) => n,
                Err(e) => {
                    debug!("recv failed: {e}");
                    return;
                }
            };
            for (r, data) in batch.iter() {
                if r.len == 0 {
                    continue;
                }
                self.stats.rx_datagrams += 1;
                let (local, remote) = (r.local, r.remote);
                match classify(data, nat) {
                    Ingress::Ike { header, offset } => self.dispatch(local, remote, Some(header), &data[offset..]),
                    Ingress::Esp { .. } => self.dataplane.esp_received(local, remote, data),
                    Ingress::NatKeepalive => {}
                    Ingress::Runt => self.dispatch(local, remote, None, data),
                }
            }
            self.flush();
            // Fewer than a full batch: the queue was empty (a later datagram raises a new event).
            if got < crate::ike_io::BATCH {
                return;
            }
        }
    }

    /// Hands an IKE message to its owner: this shard's endpoint, or the
    /// shard [`route`] names (which takes the header as read here).
    fn dispatch(&mut self, local: SocketAddr, remote: SocketAddr, header: Option<Header>, data: &[u8]) {
        if let (Some(c), Some(h)) = (&self.cluster, &header) {
            if c.forward_ike(h, local, remote, data) {
                self.stats.forwarded_to_nodes += 1;
                return;
            }
        }
        if let (Some(h), Some(owner)) = (header, route(header.as_ref(), self.peers.len())) {
            if owner != self.id {
                self.stats.forwarded += 1;
                self.peers[owner].send(ShardMsg::Datagram {
                    local,
                    remote,
                    header: h,
                    data: data.to_vec(),
                });
                return;
            }
        }
        self.deliver(local, remote, header, data);
    }

    /// Feeds an IKE message routed to this shard to the endpoint.
    fn deliver(&mut self, local: SocketAddr, remote: SocketAddr, header: Option<Header>, data: &[u8]) {
        let now = Instant::now();
        match header {
            Some(h) if h.version() == IkeVersion::V1 && self.ikev1.serves() => {
                if let Err(e) = self.ikev1.handle(now, local, remote, data) {
                    debug!(shard = self.id, remote = %remote, "IKEv1 datagram dropped: {e}");
                }
            }
            Some(h) if self.store_refuses(&h, remote) => self.endpoint.refuse_temporarily(local, remote, &h),
            Some(h) => self.endpoint.handle_peeked(now, local, remote, h, data),
            None => self.endpoint.handle(now, local, remote, data),
        }
    }

    /// True (the request is then answered with TEMPORARY_FAILURE) for a new
    /// IKE SA while the cluster store is unreachable: its state could not be
    /// shared, so no other node could continue it.
    fn store_refuses(&mut self, h: &Header, remote: SocketAddr) -> bool {
        let Some(c) = &self.cluster else { return false };
        let new_sa = h.exchange == control::wire::ikev2::ExchangeType::IKE_SA_INIT && h.spi_r == 0 && !h.is_response();
        if !new_sa || c.store().view().connected() {
            return false;
        }
        self.stats.refused_store_down += 1;
        if self.stats.refused_store_down.is_power_of_two() {
            warn!(
                shard = self.id,
                peer = %remote,
                refused = self.stats.refused_store_down,
                "cluster store unreachable: new IKE SA refused with TEMPORARY_FAILURE (established tunnels keep working)"
            );
        }
        true
    }

    fn drain_channel(&mut self) {
        while let Ok(msg) = self.rx.try_recv() {
            let now = Instant::now();
            match msg {
                ShardMsg::Datagram {
                    local,
                    remote,
                    header,
                    data,
                } => self.deliver(local, remote, Some(header), &data),
                ShardMsg::Received {
                    local,
                    remote,
                    header,
                    data,
                    from_node,
                } => {
                    self.stats.rx_datagrams += 1;
                    // What the data plane found on the NAT-T port may belong
                    // to another node, as what the shard's sockets read.
                    if let (false, Some(c), Some(h)) = (from_node, &self.cluster, &header) {
                        if c.forward_ike(h, local, remote, &data) {
                            self.stats.forwarded_to_nodes += 1;
                            continue;
                        }
                    }
                    self.deliver(local, remote, header, &data);
                }
                ShardMsg::Initiate {
                    config,
                    local,
                    remote,
                    template,
                    reply,
                    outcome,
                } => {
                    let r = if config.ike_versions == IkeVersions::V1 {
                        self.ikev1
                            .initiate(now, config.clone(), local, remote, config.aggressive)
                            .map_err(|e| e.to_string())
                    } else {
                        match template {
                            None => self.endpoint.initiate(now, config.clone(), local, remote),
                            Some(t) => self.endpoint.initiate_child(now, config.clone(), local, remote, t),
                        }
                        .map_err(|e| e.to_string())
                    };
                    if let (Ok(spi), Some(outcome)) = (&r, outcome) {
                        self.waiters.insert(
                            *spi,
                            Waiter {
                                outcome,
                                config,
                                template,
                                child_pending: None,
                            },
                        );
                    }
                    let _ = reply.send(r);
                }
                ShardMsg::Terminate { spi, connection, reply } => {
                    let targets: Vec<u64> = self
                        .endpoint
                        .sas()
                        .filter(|sa| spi.is_none_or(|s| sa.spis().0 == s || sa.spis().1 == s))
                        .filter(|sa| connection.as_ref().is_none_or(|c| &sa.config().name == c))
                        .map(|sa| sa.local_spi())
                        .collect();
                    for s in &targets {
                        self.end_session_as(*s, TerminateCause::AdminReset);
                        self.endpoint.delete(now, *s);
                    }
                    // IKEv1 SAs by our cookie (the responder cookie when we responded).
                    let ours = |sa: &control::ikev1::Ikev1Sa| match sa.role() {
                        control::ike_sa::Role::Initiator => sa.cookies().0,
                        control::ike_sa::Role::Responder => sa.cookies().1,
                    };
                    let v1: Vec<u64> = self
                        .ikev1
                        .sas()
                        .filter(|sa| spi.is_none_or(|s| ours(sa) == s))
                        .filter(|sa| connection.as_ref().is_none_or(|c| &sa.connection().name == c))
                        .map(|sa| sa.cookies().0)
                        .collect();
                    for cookie_i in &v1 {
                        if let Err(e) = self.ikev1.delete(*cookie_i) {
                            warn!(shard = self.id, "IKEv1 SA {cookie_i:016x} not deleted cleanly: {e}");
                        }
                    }
                    self.flush();
                    let _ = reply.send(targets.len() + v1.len());
                }
                ShardMsg::Command { selection, op, reply } => {
                    let planned: Vec<(u64, Task, String)> = self
                        .endpoint
                        .sas()
                        .flat_map(|sa| {
                            let spi = sa.local_spi();
                            tasks_for(sa, &selection, op).into_iter().map(move |(t, l)| (spi, t, l))
                        })
                        .collect();
                    let mut done = Vec::with_capacity(planned.len());
                    for (spi, task, line) in planned {
                        if self.endpoint.queue(now, spi, task) {
                            done.push(line);
                        }
                    }
                    let _ = reply.send(done);
                }
                ShardMsg::List(reply) => {
                    let list = self
                        .endpoint
                        .sas()
                        .map(|sa| SaSummary::of(sa, self.id, now, &*self.dataplane))
                        .chain(
                            self.ikev1
                                .sas()
                                .map(|sa| SaSummary::of_ikev1(sa, self.id, now, &*self.dataplane)),
                        )
                        .collect();
                    let _ = reply.send(list);
                }
                ShardMsg::Stats(reply) => {
                    let mut s = self.stats.clone();
                    s.endpoint = self.endpoint.stats().into();
                    s.ike_sas = self.endpoint.len();
                    s.half_open = self.endpoint.half_open();
                    s.child_sas = self.endpoint.sas().map(|sa| sa.children().len()).sum();
                    s.eap = EapStatsSer::from(&*self.endpoint.context().eap_stats);
                    self.endpoint.sas().for_each(|sa| s.memory.0 += &sa.memory());
                    let _ = reply.send(s);
                }
                ShardMsg::Reload(conns) => self.reload(now, conns),
                ShardMsg::Adopt(states) => {
                    if let Some(c) = &mut self.cluster {
                        c.adopt(now, &mut self.endpoint, &*self.dataplane, states);
                    }
                    self.flush();
                }
                ShardMsg::Release(range) => {
                    // Another node continues these IKE SAs, without their
                    // RADIUS sessions: this node's accounting of them ends.
                    let leaving: Vec<u64> = self
                        .aaa_sessions
                        .iter()
                        .map(|(spi, _)| spi)
                        .filter(|spi| ironsa::cluster::node_of_ike_spi(*spi) == range)
                        .collect();
                    for spi in leaving {
                        self.end_session_as(spi, TerminateCause::NasRequest);
                        self.session_ended(spi, &DownReason::Deleted);
                    }
                    if let Some(c) = &mut self.cluster {
                        c.release(range, self.id, &mut self.endpoint, &*self.dataplane, &self.registry);
                    }
                }
                ShardMsg::PeerMoved { spi_in, source } => {
                    let owner = self
                        .endpoint
                        .sas()
                        .find(|sa| sa.children().iter().any(|c| c.spi_in == spi_in))
                        .map(|sa| sa.local_spi());
                    if let Some(spi) = owner {
                        self.endpoint.follow_peer(spi, source);
                        self.flush();
                    }
                }
                ShardMsg::EapReply { spi, reply } => {
                    if !self.endpoint.eap_backend_reply(now, spi, reply) {
                        debug!(
                            spi = format_args!("{spi:016x}"),
                            "RADIUS answer for an IKE SA that no longer waits for it"
                        );
                    }
                }
                ShardMsg::Dae { spis, action, reply } => {
                    use ironsa::aaa::dae::Action;
                    let mut done = 0;
                    for spi in spis {
                        if self.endpoint.sa(spi).is_none() {
                            continue;
                        }
                        match action {
                            Action::Disconnect => {
                                self.end_session_as(spi, TerminateCause::AdminReset);
                                self.endpoint.delete(now, spi);
                            }
                            Action::SessionTimeout(d) => {
                                self.endpoint.limit_session(now, spi, d);
                            }
                        }
                        done += 1;
                    }
                    self.flush();
                    let _ = reply.send(done);
                }
                ShardMsg::LocalAddresses { addresses, set_changed } => {
                    self.local_addresses_changed(now, &addresses, set_changed)
                }
                ShardMsg::Shutdown => {
                    if self.shutting_down.is_none() {
                        self.shutting_down = Some(now);
                        let all: Vec<u64> = self.endpoint.sas().map(|sa| sa.local_spi()).collect();
                        for s in all {
                            self.end_session_as(s, TerminateCause::NasReboot);
                            self.endpoint.delete(now, s);
                        }
                    }
                }
            }
            self.flush();
        }
    }

    /// MOBIKE client role: each IKE SA we initiated with MOBIKE moves to the
    /// source the routing table now picks towards its peer, if we have a
    /// socket for it; with the same source, a changed address set is only
    /// announced. The route lookups are connects of unbound UDP sockets
    /// (no I/O), one per peer address.
    fn local_addresses_changed(&mut self, now: Instant, addresses: &[std::net::IpAddr], set_changed: bool) {
        let mut routed: HashMap<std::net::IpAddr, Option<std::net::IpAddr>> = HashMap::new();
        let mut moves = Vec::new();
        for sa in self.endpoint.sas() {
            if !sa.mobike() || !sa.is_established() || sa.role() != control::ike_sa::Role::Initiator {
                continue;
            }
            let (local, remote) = (sa.local_addr(), sa.remote_addr());
            let source = *routed.entry(remote.ip()).or_insert_with(|| match crate::ike_io::source_for(remote) {
                Ok(ip) => Some(ip),
                Err(e) => {
                    warn!(peer = %remote, "no route to a MOBIKE peer after an address change: {e}; its IKE SA stays until one appears");
                    None
                }
            });
            let Some(source) = source else { continue };
            if source == local.ip() && !set_changed {
                continue;
            }
            if !self.sockets.iter().any(|s| {
                s.local.port() == local.port()
                    && (s.local.ip() == source || (s.is_wildcard() && s.local.is_ipv4() == source.is_ipv4()))
            }) {
                warn!(
                    peer = %remote,
                    new = %source,
                    "the route to a MOBIKE peer now leaves from an address we do not listen on: listen on the wildcard address to follow it"
                );
                continue;
            }
            moves.push((sa.local_spi(), SocketAddr::new(source, local.port())));
        }
        for (spi, local) in moves {
            self.endpoint.local_addresses_changed(now, spi, local, addresses);
        }
    }

    /// Applies a new connection list: SAs of removed connections, and of
    /// connections changed in what they were negotiated with, are deleted;
    /// SAs of connections changed only in timers follow the new settings.
    fn reload(&mut self, now: Instant, conns: Vec<Arc<ConnectionConfig>>) {
        let mut stale = Vec::new();
        let mut updated = Vec::new();
        for sa in self.endpoint.sas() {
            let old = sa.config();
            match conns.iter().find(|n| n.name == old.name) {
                None => stale.push(sa.local_spi()),
                Some(new) => match reload_effect(old, new) {
                    ReloadEffect::Unchanged => {}
                    ReloadEffect::InPlace => updated.push((sa.local_spi(), new.clone())),
                    ReloadEffect::NewSa(_) => stale.push(sa.local_spi()),
                },
            }
        }
        for s in &stale {
            self.endpoint.delete(now, *s);
        }
        for (s, config) in &updated {
            self.endpoint.update_config(*s, config.clone());
        }
        info!(
            shard = self.id,
            connections = conns.len(),
            deleted = stale.len(),
            updated = updated.len(),
            "configuration reloaded"
        );
        self.ikev1.set_connections(conns.clone());
        self.endpoint.set_connections(ikev2_connections(&conns));
    }

    /// Tells whoever waits for the IKE SA `spi` how its negotiation ended:
    /// established with its first CHILD_SA, or why not.
    fn tell_waiter(&mut self, spi: u64, ev: &Event) {
        let Some(w) = self.waiters.get_mut(&spi) else { return };
        let ended = match ev {
            Event::IkeSaUp { connection, .. } => match w.config.children.get(w.template.unwrap_or(0)) {
                Some(child) => {
                    w.child_pending = Some(child.name.clone());
                    None
                }
                None => Some(Ok(format!("{connection}: IKE SA {spi:016x} established"))),
            },
            Event::ChildSaInstalled(c) if w.child_pending.as_deref() == Some(c.name.as_str()) => Some(Ok(format!(
                "{}: IKE SA {spi:016x} and CHILD_SA '{}' established (SPIs in {:08x} out {:08x})",
                c.connection, c.name, c.spi_in, c.spi_out
            ))),
            Event::ChildSaFailed { name, reason } if w.child_pending.as_deref() == Some(name.as_str()) => Some(Err(
                format!("IKE SA {spi:016x} established, but CHILD_SA '{name}' failed: {reason}"),
            )),
            Event::IkeSaDown { reason, .. } => Some(Err(match reason {
                DownReason::PeerError(NotifyType::NO_PROPOSAL_CHOSEN) => format!(
                    "{reason}; we offered {}",
                    control::proposal::offered(&w.config.ike_proposals)
                ),
                other => other.to_string(),
            })),
            _ => None,
        };
        if let Some(result) = ended {
            if let Some(w) = self.waiters.remove(&spi) {
                let _ = w.outcome.send(result);
            }
        }
    }

    /// Sends an IKE SA's EAP packet to RADIUS; the answer comes back
    /// through the shard's channel ([`ShardMsg::EapReply`]).
    fn relay_eap(&mut self, spi: u64, relay: &control::ike_sa::eap::EapRelay) {
        use control::ike_sa::eap::EapBackendReply;
        let refused = match &self.radius {
            None => Some("no [radius] servers are configured".to_string()),
            Some(radius) => {
                let me = self.peers[self.id].clone();
                radius
                    .relay(relay, move |reply| {
                        me.send(ShardMsg::EapReply { spi, reply });
                    })
                    .err()
                    .map(|e| e.to_string())
            }
        };
        if let Some(reason) = refused {
            let reply = EapBackendReply::Reject { eap: None, reason };
            self.endpoint.eap_backend_reply(Instant::now(), spi, reply);
        }
    }

    /// Usage of the CHILD_SA with inbound SPI `spi_in` in the fastpath.
    fn child_usage(&self, spi_in: u32) -> Usage {
        self.dataplane
            .esp_sa_counters(spi_in, &[], &[])
            .map(|c| Usage {
                octets_in: c.bytes_in,
                packets_in: c.packets_in,
                octets_out: c.bytes_out,
                packets_out: c.packets_out,
            })
            .unwrap_or_default()
    }

    /// Usage of the session of IKE SA `spi`: its CHILD_SAs gone and alive.
    fn session_usage(&self, spi: u64) -> Usage {
        let mut u = self.aaa_sessions.get(spi).map(|t| t.closed).unwrap_or_default();
        if let Some(sa) = self.endpoint.sa(spi) {
            for c in sa.children() {
                u += self.child_usage(c.spi_in);
            }
        }
        u
    }

    /// The gateway ends the IKE SA `spi`: its Stop will say why.
    fn end_session_as(&mut self, spi: u64, cause: TerminateCause) {
        if let Some(t) = self.aaa_sessions.get_mut(spi) {
            t.cause.get_or_insert(cause);
        }
    }

    /// The IKE SA `spi` is established: an EAP-RADIUS user's session starts
    /// (accounting Start, and dynamic authorization can find it).
    fn session_started(&mut self, spi: u64) {
        let Some(t) = self.aaa_sessions.get(spi) else { return };
        let from_server = t.auth.interim_interval;
        let Some(sa) = self.endpoint.sa(spi) else { return };
        let framed_ip = sa
            .virtual_ips()
            .and_then(|v| v.remote.iter().find(|a| a.is_ipv4()).copied());
        let calling = sa.remote_addr().ip().to_string();
        let interim = self.accounting.as_ref().and_then(|a| a.interim_for(from_server));
        let Some(session) = self
            .aaa_sessions
            .established(spi, framed_ip, calling, interim, Instant::now())
            .cloned()
        else {
            return;
        };
        self.session_index.insert(
            &session.id,
            SessionRef {
                shard: self.id,
                spi,
                user_name: session.user_name.clone(),
                framed_ip: session.framed_ip,
            },
        );
        if let Some(acct) = &self.accounting {
            let req = acct.request(
                &session,
                AcctStatus::START,
                None,
                None,
                Instant::now(),
                SystemTime::now(),
            );
            acct.send(req, "Start", &session.id);
        }
    }

    /// The IKE SA `spi` is gone: the session's Stop with its usage.
    fn session_ended(&mut self, spi: u64, reason: &DownReason) {
        if matches!(reason, DownReason::Rekeyed) {
            return;
        }
        let usage = self.session_usage(spi);
        let Some(t) = self.aaa_sessions.ended(spi) else { return };
        let Some(session) = &t.session else { return };
        self.session_index.remove(&session.id);
        if let Some(acct) = &self.accounting {
            let cause = t.cause.unwrap_or_else(|| TerminateCause::of(reason));
            let req = acct.request(
                session,
                AcctStatus::STOP,
                Some(usage),
                Some(cause),
                Instant::now(),
                SystemTime::now(),
            );
            acct.send(req, "Stop", &session.id);
        }
    }

    /// Sends the Interim-Updates due by `now`.
    fn interim_updates(&mut self, now: Instant) {
        if self.aaa_sessions.next_interim().is_none_or(|t| t > now) {
            return;
        }
        let Some(acct) = self.accounting.clone() else { return };
        for spi in self.aaa_sessions.due(now) {
            let usage = self.session_usage(spi);
            if let Some(session) = self.aaa_sessions.get(spi).and_then(|t| t.session.as_ref()) {
                let req = acct.request(
                    session,
                    AcctStatus::INTERIM_UPDATE,
                    Some(usage),
                    None,
                    now,
                    SystemTime::now(),
                );
                acct.send(req, "Interim-Update", &session.id);
            }
        }
    }

    fn flush(&mut self) {
        while let Some((spi, ev)) = self.endpoint.poll_event() {
            if !self.waiters.is_empty() {
                self.tell_waiter(spi, &ev);
            }
            if let Some(c) = &mut self.cluster {
                c.on_event(&ev);
            }
            match &ev {
                Event::ChildSaInstalled(c) => self.dataplane.install(c),
                Event::ChildSaDeleted { spi_in, spi_out } => {
                    if self.aaa_sessions.get(spi).is_some() {
                        let usage = self.child_usage(*spi_in);
                        self.aaa_sessions.child_gone(spi, usage);
                    }
                    self.dataplane.remove(*spi_in, *spi_out)
                }
                Event::ChildSasMoved {
                    spis_in,
                    local,
                    remote,
                    udp_encap,
                } => self.dataplane.move_children(spis_in, *local, *remote, *udp_encap),
                Event::IkeSaUp {
                    peer_id,
                    initial_contact,
                    ..
                } => {
                    self.session_started(spi);
                    let stale = self.registry.established(peer_id, self.id, spi, *initial_contact);
                    for (shard, old) in stale {
                        if shard == self.id {
                            self.endpoint.delete(Instant::now(), old);
                        } else {
                            let (tx, _rx) = mpsc::channel();
                            self.peers[shard].send(ShardMsg::Terminate {
                                spi: Some(old),
                                connection: None,
                                reply: tx,
                            });
                        }
                    }
                }
                Event::IkeSaDown { reason, .. } => {
                    self.session_ended(spi, reason);
                    self.registry.gone(self.id, spi);
                    if let control::ike_sa::DownReason::Failed(_)
                    | control::ike_sa::DownReason::PeerError(_)
                    | control::ike_sa::DownReason::Timeout = reason
                    {
                        let key = match reason {
                            control::ike_sa::DownReason::PeerError(n) => format!("{n}"),
                            control::ike_sa::DownReason::Timeout => "timeout".into(),
                            _ => "failed".into(),
                        };
                        *self.stats.failures.entry(key).or_default() += 1;
                    }
                }
                Event::IkeSaRekeyed { new_local_spi, .. } => {
                    self.aaa_sessions.rekeyed(spi, *new_local_spi, Instant::now());
                    if let Some(id) = self.aaa_sessions.get(*new_local_spi).and_then(|t| t.session.as_ref()) {
                        self.session_index.moved(&id.id, self.id, *new_local_spi);
                    }
                    self.registry.rekeyed(self.id, spi, *new_local_spi)
                }
                Event::ChildSaFailed { .. } | Event::Refused { .. } => {}
                Event::EapRelay(relay) => self.relay_eap(spi, relay),
                Event::EapAuthenticated(a) => {
                    // Accounting and dynamic authorization are RADIUS's.
                    if a.method == "eap-radius" {
                        self.aaa_sessions.authenticated(spi, a.clone());
                    }
                }
            }
            self.dataplane.ike_event(&ev);
        }
        while let Some(ev) = self.ikev1.poll_event() {
            if !self.waiters.is_empty() {
                // Our initiator cookie is the key of an IKEv1 initiation's waiter.
                let key = match &ev {
                    Event::IkeSaUp { spis, .. } | Event::IkeSaDown { spis, .. } => Some(spis.0),
                    Event::ChildSaInstalled(c) => Some(c.ike_spis.0),
                    Event::ChildSaFailed { name, .. } => self
                        .waiters
                        .iter()
                        .find(|(_, w)| w.child_pending.as_deref() == Some(name.as_str()))
                        .map(|(k, _)| *k),
                    _ => None,
                };
                if let Some(key) = key {
                    self.tell_waiter(key, &ev);
                }
            }
            match &ev {
                Event::ChildSaInstalled(c) => self.dataplane.install(c),
                Event::ChildSaDeleted { spi_in, spi_out } => self.dataplane.remove(*spi_in, *spi_out),
                Event::IkeSaDown {
                    reason: control::ike_sa::DownReason::Failed(_) | control::ike_sa::DownReason::Timeout,
                    ..
                } => *self.stats.failures.entry("ikev1".into()).or_default() += 1,
                _ => {}
            }
            self.dataplane.ike_event(&ev);
        }
        if let Some(c) = &mut self.cluster {
            c.after_install(&*self.dataplane);
        }
        let mut out: Vec<(usize, control::ike_sa::Transmit)> = Vec::new();
        let ikev1_out: Vec<_> = std::iter::from_fn(|| self.ikev1.poll_transmit()).collect();
        for t in std::iter::from_fn(|| self.endpoint.poll_transmit()).chain(ikev1_out) {
            if self.ike_via_dataplane {
                let remote = t.remote;
                match self.dataplane.send_ike(t) {
                    Ok(()) => self.stats.tx_datagrams += 1,
                    Err(e) => debug!(remote = %remote, "send failed: {e}"),
                }
                continue;
            }
            // The socket bound to the SA's address, else the wildcard socket of its port.
            let same_port = |s: &IkeSocket| s.local.port() == t.local.port() && s.local.is_ipv4() == t.local.is_ipv4();
            let idx = self
                .sockets
                .iter()
                .position(|s| s.local == t.local)
                .or_else(|| self.sockets.iter().position(|s| same_port(s) && s.is_wildcard()))
                .or_else(|| self.sockets.iter().position(same_port));
            match idx {
                Some(i) => out.push((i, t)),
                None => warn!(local = %t.local, "no socket for local address"),
            }
        }
        out.sort_by_key(|(i, t)| (*i, t.local.ip()));
        for group in out.chunk_by(|a, b| a.0 == b.0 && a.1.local.ip() == b.1.local.ip()) {
            let sock = &self.sockets[group[0].0];
            // The marker is used between two ports that are both not 500 (RFC 3948, and what charon reads).
            let items: Vec<Outgoing<'_>> = group
                .iter()
                .map(|(_, t)| Outgoing {
                    local: t.local,
                    remote: t.remote,
                    marker: sock.nat && t.remote.port() != 500 && !t.is_nat_keepalive(),
                    data: &t.data,
                })
                .collect();
            match sock.send_batch(&items) {
                Ok(n) => {
                    self.stats.tx_datagrams += n as u64;
                    if n < items.len() {
                        debug!(dropped = items.len() - n, "send buffer full");
                    }
                }
                Err(e) => debug!(local = %sock.local, "send failed: {e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_available_is_read_from_meminfo() {
        let text = "MemTotal:       16318436 kB\nMemFree:         1000 kB\nMemAvailable:    8000 kB\n";
        assert_eq!(parse_mem_available(text), Some(8000 * 1024));
        assert_eq!(parse_mem_available("MemTotal: 1 kB\n"), None);
        assert_eq!(parse_mem_available("MemAvailable: lots kB\n"), None);
        assert!(available_memory().is_some_and(|b| b > 0));
    }

    #[test]
    fn route_follows_the_spi_we_chose() {
        let ours = 3u64 << (64 - SHARD_BITS) | 0x1234;
        let datagram = |spi_i: u64, spi_r: u64, flags: u8| {
            let mut d = vec![0u8; 28];
            d[..8].copy_from_slice(&spi_i.to_be_bytes());
            d[8..16].copy_from_slice(&spi_r.to_be_bytes());
            d[17] = 0x20;
            d[19] = flags;
            d
        };
        let route_of = |d: &[u8]| route(control::wire::ingress::peek_header(d).as_ref(), 4);
        // From the initiator: the responder's SPI is ours; to the initiator: the initiator's.
        assert_eq!(route_of(&datagram(0x77, ours, 0x08)), Some(3));
        assert_eq!(route_of(&datagram(ours, 0x77, 0x20)), Some(3));
        // A first IKE_SA_INIT names no SPI of ours; a runt has no header.
        assert_eq!(route_of(&datagram(0x77, 0, 0x08)), None);
        assert_eq!(route_of(&[0u8; 20]), None);
    }

    #[test]
    fn owner_of_reads_the_top_bits() {
        assert_eq!(owner_of(3u64 << (64 - SHARD_BITS), 4), 3);
        assert_eq!(owner_of(5u64 << (64 - SHARD_BITS), 4), 1);
        assert_eq!(owner_of(0, 1), 0);
    }
}
