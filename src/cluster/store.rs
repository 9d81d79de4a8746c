//! The cluster's store client: one thread with its own single-threaded
//! runtime that talks to etcd, so that no shard ever waits on the store.
//!
//! Keys, under `/<name>/`:
//! - `nodes/<id>`: a live node's link address and load, bound to its lease:
//!   the key vanishes when the node stops renewing it.
//! - `owner/<range>`: which node serves the SAs whose SPIs carry node id
//!   `range`. Changed only by compare-and-swap transactions, so exactly one
//!   survivor adopts a dead node's range.
//! - `sa/<range>/<IKE SPI>`: an IKE SA's resumable state with its CHILD_SAs,
//!   sealed with the cluster key under its own key name. Written in batches,
//!   each guarded by the writer still owning the range.
//!
//! Shards hand records over with [`StoreHandle::checkpoint`] (a bounded
//! queue; a full queue drops the update and counts it: the next checkpoint
//! of that SA carries its whole state again).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use control::crypto::CryptoProvider;
use etcd_client::{Client, Compare, CompareOp, ConnectOptions, GetOptions, PutOptions, Txn, TxnOp};
use ironsa_crypto::sealed::SealingKey;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::{ClusterConfig, MAX_NODES, NodeId, node_of_ike_spi};

/// Updates queued for the store thread before new ones are dropped.
const QUEUE: usize = 65_536;
/// Operations in one transaction (etcd refuses more than 128 by default).
const OPS_PER_TXN: usize = 100;
/// SA records waiting for a reachable store before the oldest updates are
/// dropped (each SA has at most one entry: a newer update replaces it).
const MAX_PENDING: usize = 4_000_000;

/// SA records as (local IKE SPI, record).
pub type SaRecords = Vec<(u64, Vec<u8>)>;

/// An SA update: its whole record, or `None` to delete it.
type Update = (u64, Option<Vec<u8>>);

/// What the store tells the daemon.
#[derive(Debug)]
#[non_exhaustive]
pub enum StoreEvent {
    /// This node serves range `range` from now on (its own at start, a dead
    /// node's, or its own back from the node that adopted it): these are
    /// the SAs stored for it, as (local IKE SPI, record).
    Adopted {
        /// The range (node id in the SPIs).
        range: NodeId,
        /// Who owned it before (`None`: nobody).
        from: Option<NodeId>,
        /// The records.
        records: SaRecords,
    },
    /// Another node serves range `range` now (it adopted the range while this
    /// node's lease had lapsed, or the range's own node came back): its SAs
    /// must leave this node without a word to the peers.
    Lost {
        /// The range.
        range: NodeId,
        /// The new owner.
        to: NodeId,
    },
}

/// Errors of the store client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store did not answer in time.
    #[error("store did not answer within {0:?}")]
    Timeout(Duration),
    /// The store answered with an error, or the connection failed.
    #[error("store: {0}")]
    Etcd(#[from] etcd_client::Error),
    /// Sealing a record failed (the random generator).
    #[error("sealing a record: {0}")]
    Seal(#[from] control::crypto::CryptoError),
    /// This node's lease expired while it was cut off.
    #[error("lease {0:x} expired")]
    LeaseExpired(i64),
    /// The store thread could not start.
    #[error("cannot start the store thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// What a node publishes about itself under `nodes/<id>`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeInfo {
    /// Its inter-node link address.
    pub link: SocketAddr,
    /// IKE SAs it serves.
    pub load: usize,
    /// The address clients reach it at (where redirects send them).
    #[serde(default)]
    pub address: Option<std::net::IpAddr>,
}

/// One node as `ironsa cluster` shows it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct NodeStatus {
    /// Its id.
    pub id: NodeId,
    /// Its link address and load, while it is alive.
    pub info: Option<NodeInfo>,
    /// The SPI ranges it serves.
    pub ranges: Vec<NodeId>,
}

/// The cluster as this node last saw it in the store.
#[derive(Clone, Debug, Serialize)]
pub struct ClusterStatus {
    /// This node.
    pub node: NodeId,
    /// The store answered the last request.
    pub connected: bool,
    /// Milliseconds since the store last answered (lag).
    pub store_lag_ms: Option<u64>,
    /// Nodes alive or owning a range.
    pub nodes: Vec<NodeStatus>,
    /// SA updates waiting to be written.
    pub pending: usize,
    /// SA records written.
    pub records_written: u64,
    /// Sealed bytes written.
    pub bytes_written: u64,
    /// Updates dropped because the queue was full.
    pub updates_dropped: u64,
}

/// Who serves each range and where to reach each node: read by the shards
/// and data-plane threads for every datagram they forward, written by the
/// store thread after each poll.
pub struct ClusterView {
    me: NodeId,
    connected: AtomicBool,
    table: RwLock<Table>,
    /// The ranges another live node serves, for the data plane's workers.
    foreign: Arc<fastpath::worker::ForeignRanges>,
}

#[derive(Clone, Default)]
struct Table {
    owners: BTreeMap<NodeId, NodeId>,
    nodes: BTreeMap<NodeId, NodeInfo>,
    last_ok: Option<Instant>,
}

impl ClusterView {
    /// A view of node `me` before the store answered: it owns its own range.
    pub fn new(me: NodeId) -> Self {
        let table = Table {
            owners: BTreeMap::from([(me, me)]),
            ..Table::default()
        };
        Self {
            me,
            connected: AtomicBool::new(false),
            table: RwLock::new(table),
            foreign: Arc::new(fastpath::worker::ForeignRanges::new(super::NODE_BITS)),
        }
    }

    /// The SPI ranges another live node serves (kept up to date after
    /// each poll of the store): ESP of these ranges goes to that node.
    pub fn foreign_ranges(&self) -> &Arc<fastpath::worker::ForeignRanges> {
        &self.foreign
    }

    /// This node's id.
    pub fn me(&self) -> NodeId {
        self.me
    }

    /// The store answered the last request: new IKE SAs can be recorded.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// The node serving `range` and its link address, if it is another
    /// live node (`None`: this node, or nobody known).
    pub fn forward_to(&self, range: NodeId) -> Option<(NodeId, SocketAddr)> {
        let t = self.table.read().unwrap_or_else(|e| e.into_inner());
        let owner = *t.owners.get(&range)?;
        if owner == self.me {
            return None;
        }
        t.nodes.get(&owner).map(|i| (owner, i.link))
    }

    /// Where to redirect a new client: the address of the least loaded
    /// live node, if this node serves more than `margin` IKE SAs above it
    /// (loads as the nodes last published them).
    pub fn redirect_target(&self, margin: usize) -> Option<std::net::IpAddr> {
        let t = self.table.read().unwrap_or_else(|e| e.into_inner());
        let mine = t.nodes.get(&self.me)?.load;
        let (load, address) = t
            .nodes
            .iter()
            .filter(|(id, _)| **id != self.me)
            .filter_map(|(_, i)| Some((i.load, i.address?)))
            .min_by_key(|(load, _)| *load)?;
        (mine > load.saturating_add(margin)).then_some(address)
    }

    /// True if this node serves `range`.
    pub fn serves(&self, range: NodeId) -> bool {
        let t = self.table.read().unwrap_or_else(|e| e.into_inner());
        t.owners.get(&range) == Some(&self.me)
    }

    /// The node ids alive with their link addresses.
    pub fn links(&self) -> Vec<(NodeId, SocketAddr)> {
        let t = self.table.read().unwrap_or_else(|e| e.into_inner());
        t.nodes.iter().map(|(id, i)| (*id, i.link)).collect()
    }

    fn set(&self, owners: BTreeMap<NodeId, NodeId>, nodes: BTreeMap<NodeId, NodeInfo>) {
        let foreign = owners
            .iter()
            .filter(|(_, o)| **o != self.me && nodes.contains_key(o))
            .fold(0u64, |set, (range, _)| set | (1u64 << range));
        self.foreign.set(foreign);
        let mut t = self.table.write().unwrap_or_else(|e| e.into_inner());
        *t = Table {
            owners,
            nodes,
            last_ok: Some(Instant::now()),
        };
    }

    fn set_connected(&self, up: bool) {
        if up {
            let mut t = self.table.write().unwrap_or_else(|e| e.into_inner());
            t.last_ok = Some(Instant::now());
        }
        self.connected.store(up, Ordering::Relaxed);
    }
}

#[derive(Default)]
struct Counters {
    records_written: AtomicU64,
    bytes_written: AtomicU64,
    updates_dropped: AtomicU64,
    pending: AtomicUsize,
}

enum Cmd {
    Put(u64, Vec<u8>),
    Delete(u64),
    Shutdown,
}

/// The daemon's side of the store thread.
pub struct StoreHandle {
    tx: mpsc::Sender<Cmd>,
    view: Arc<ClusterView>,
    counters: Arc<Counters>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// Called on the store thread for each [`StoreEvent`]; must not block.
pub type EventSink = Box<dyn Fn(StoreEvent) + Send>;

impl StoreHandle {
    /// Starts the store thread of node `cfg.node`. `load` is the number of
    /// IKE SAs this node serves (published for the others); `events` gets
    /// the ranges this node gains and loses.
    pub fn start(
        cfg: &ClusterConfig,
        crypto: Arc<dyn CryptoProvider>,
        load: Arc<AtomicUsize>,
        events: EventSink,
    ) -> Result<Self, StoreError> {
        let key = SealingKey::new(&cfg.cluster_key)?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let view = Arc::new(ClusterView::new(cfg.node));
        let counters = Arc::new(Counters::default());
        let worker = Worker {
            cfg: cfg.clone(),
            crypto,
            key,
            load,
            events,
            view: view.clone(),
            counters: counters.clone(),
            pending: HashMap::new(),
            mine: BTreeSet::new(),
            published_load: None,
            cursor: 0,
        };
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let thread = std::thread::Builder::new()
            .name("ironsa-store".into())
            .spawn(move || runtime.block_on(worker.run(rx)))?;
        Ok(Self {
            tx,
            view,
            counters,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Queues the whole resumable state of the IKE SA with local SPI
    /// `ike_spi` for the next batch; never blocks.
    pub fn checkpoint(&self, ike_spi: u64, record: Vec<u8>) {
        self.send(Cmd::Put(ike_spi, record));
    }

    /// Queues the removal of the IKE SA's record; never blocks.
    pub fn forget(&self, ike_spi: u64) {
        self.send(Cmd::Delete(ike_spi));
    }

    fn send(&self, cmd: Cmd) {
        if self.tx.try_send(cmd).is_err() {
            let n = self.counters.updates_dropped.fetch_add(1, Ordering::Relaxed);
            if n.is_power_of_two() {
                warn!(
                    dropped = n + 1,
                    "store queue full: SA updates dropped (the next checkpoint of each SA carries its whole state)"
                );
            }
        }
    }

    /// Who serves what, for forwarding.
    pub fn view(&self) -> &Arc<ClusterView> {
        &self.view
    }

    /// The cluster as last seen, for `ironsa cluster`.
    pub fn status(&self) -> ClusterStatus {
        let t = self.view.table.read().unwrap_or_else(|e| e.into_inner()).clone();
        let mut ids: BTreeSet<NodeId> = t.nodes.keys().copied().collect();
        ids.extend(t.owners.values().copied());
        let nodes = ids
            .into_iter()
            .map(|id| NodeStatus {
                id,
                info: t.nodes.get(&id).cloned(),
                ranges: t.owners.iter().filter(|(_, o)| **o == id).map(|(r, _)| *r).collect(),
            })
            .collect();
        ClusterStatus {
            node: self.view.me,
            connected: self.view.connected(),
            store_lag_ms: t.last_ok.map(|i| i.elapsed().as_millis() as u64),
            nodes,
            pending: self.counters.pending.load(Ordering::Relaxed),
            records_written: self.counters.records_written.load(Ordering::Relaxed),
            bytes_written: self.counters.bytes_written.load(Ordering::Relaxed),
            updates_dropped: self.counters.updates_dropped.load(Ordering::Relaxed),
        }
    }

    /// Writes what is queued, leaves the cluster (revokes the lease: the
    /// other nodes adopt what this node still serves) and stops the thread.
    pub fn shutdown(&self) {
        // A full queue still takes the stop: wait for room, the thread drains it.
        let _ = self.tx.blocking_send(Cmd::Shutdown);
        let thread = self.thread.lock().map(|mut t| t.take()).unwrap_or(None);
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

/// The store thread's state.
struct Worker {
    cfg: ClusterConfig,
    crypto: Arc<dyn CryptoProvider>,
    key: SealingKey,
    load: Arc<AtomicUsize>,
    events: EventSink,
    view: Arc<ClusterView>,
    counters: Arc<Counters>,
    /// SA updates not yet written (`None`: delete), by local IKE SPI.
    pending: HashMap<u64, Option<Vec<u8>>>,
    /// The ranges this node serves.
    mine: BTreeSet<NodeId>,
    published_load: Option<usize>,
    /// The store member to try first.
    cursor: usize,
}

/// A connection to the store with this node's lease.
struct Session {
    client: Client,
    lease: i64,
    keeper: etcd_client::LeaseKeeper,
    responses: etcd_client::LeaseKeepAliveStream,
}

impl Worker {
    fn timeout(&self) -> Duration {
        (self.cfg.lease / 2).max(Duration::from_millis(500))
    }

    fn node_key(&self, id: NodeId) -> String {
        format!("/{}/nodes/{id:02}", self.cfg.name)
    }

    fn owner_key(&self, range: NodeId) -> String {
        format!("/{}/owner/{range:02}", self.cfg.name)
    }

    fn sa_prefix(&self, range: NodeId) -> String {
        format!("/{}/sa/{range:02}/", self.cfg.name)
    }

    fn sa_key(&self, spi: u64) -> String {
        format!("{}{spi:016x}", self.sa_prefix(node_of_ike_spi(spi)))
    }

    /// `fut` within the store timeout.
    async fn timed<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, StoreError> {
        let t = self.timeout();
        match tokio::time::timeout(t, fut).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(StoreError::Timeout(t)),
        }
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Cmd>) {
        let mut backoff = Duration::from_millis(200);
        let mut down_since: Option<Instant> = None;
        loop {
            let session = match self.open().await {
                Ok(s) => s,
                Err(e) => {
                    // A leader election after a member loss stalls the store
                    // for a second or two: only longer is "unreachable".
                    let since = *down_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= self.cfg.lease * 2 && self.view.connected() {
                        self.view.set_connected(false);
                        tracing::error!(
                            store = ?self.cfg.store,
                            for_ = ?since.elapsed(),
                            "cluster store unreachable: established tunnels keep working, new IKE SAs are refused with TEMPORARY_FAILURE until it answers"
                        );
                    }
                    warn!(store = ?self.cfg.store, error = %e, retry_in = ?backoff, "cluster store does not answer; retrying");
                    let until = tokio::time::Instant::now() + backoff;
                    backoff = (backoff * 2).min(self.cfg.lease);
                    loop {
                        tokio::select! {
                            _ = tokio::time::sleep_until(until) => break,
                            cmd = rx.recv() => if !self.take(cmd) { return; },
                        }
                    }
                    continue;
                }
            };
            backoff = Duration::from_millis(200);
            match self.serve(session, &mut rx).await {
                Ok(()) => return,
                Err(e) => {
                    // Still "connected" while another member takes over: one
                    // member lost must not refuse new tunnels.
                    down_since = Some(Instant::now());
                    self.cursor += 1;
                    warn!(error = %e, "cluster store connection lost; trying the other members");
                }
            }
        }
    }

    /// Queues a command; false on shutdown.
    fn take(&mut self, cmd: Option<Cmd>) -> bool {
        match cmd {
            Some(Cmd::Put(spi, r)) => self.pend(spi, Some(r)),
            Some(Cmd::Delete(spi)) => self.pend(spi, None),
            Some(Cmd::Shutdown) | None => return false,
        }
        true
    }

    fn pend(&mut self, spi: u64, r: Option<Vec<u8>>) {
        if self.pending.len() >= MAX_PENDING && !self.pending.contains_key(&spi) {
            self.counters.updates_dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.pending.insert(spi, r);
        self.counters.pending.store(self.pending.len(), Ordering::Relaxed);
    }

    /// Connects to the first member that answers, starting with the one
    /// after the member of the last session that failed.
    async fn open(&mut self) -> Result<Session, StoreError> {
        let n = self.cfg.store.len().max(1);
        let mut last = StoreError::Timeout(self.timeout());
        for k in 0..n {
            let at = (self.cursor + k) % n;
            match self.open_at(at).await {
                Ok(s) => {
                    self.cursor = at;
                    return Ok(s);
                }
                Err(e) => {
                    debug!(endpoint = %self.cfg.store[at], error = %e, "store member does not answer");
                    last = e;
                }
            }
        }
        Err(last)
    }

    /// Connects to member `at`, takes a lease, publishes this node and
    /// claims its own range. One member at a time: a client balanced over
    /// all of them keeps sending to a dead one.
    async fn open_at(&mut self, at: usize) -> Result<Session, StoreError> {
        let options = ConnectOptions::new()
            .with_connect_timeout(self.timeout())
            .with_timeout(self.timeout())
            .with_keep_alive(self.cfg.lease / 2, self.timeout());
        let endpoint = self.cfg.store[at].clone();
        let mut client = self.timed(Client::connect([endpoint], Some(options))).await?;
        let ttl = self.cfg.lease.as_secs().max(1) as i64;
        let lease = self.timed(client.lease_grant(ttl, None)).await?.id();
        let (keeper, responses) = self.timed(client.lease_keep_alive(lease)).await?;
        let mut s = Session {
            client,
            lease,
            keeper,
            responses,
        };
        self.publish(&mut s).await?;
        self.view.set_connected(true);
        info!(node = self.cfg.node, lease = format_args!("{lease:x}"), store = %self.cfg.store[at], "joined the cluster");
        let me = self.cfg.node;
        if !self.mine.contains(&me) {
            self.claim(&mut s, me, None).await?;
        }
        self.poll(&mut s).await?;
        Ok(s)
    }

    /// Publishes this node's link and load under its lease.
    async fn publish(&mut self, s: &mut Session) -> Result<(), StoreError> {
        let load = self.load.load(Ordering::Relaxed);
        let info = NodeInfo {
            link: self.cfg.link,
            load,
            address: self.cfg.address,
        };
        let value = serde_json::to_vec(&info).unwrap_or_default();
        let key = self.node_key(self.cfg.node);
        self.timed(s.client.put(key, value, Some(PutOptions::new().with_lease(s.lease))))
            .await?;
        self.published_load = Some(load);
        Ok(())
    }

    /// Takes range `range` if nobody owns it, if it is this node's own
    /// range, or if it is still owned by `orphaned_by` (a node seen dead);
    /// then loads its SAs. Returns whether this node serves it now.
    ///
    /// The owner is read and replaced in one revision-guarded transaction,
    /// so a survivor that lost the race to another survivor sees the new
    /// owner and leaves the range alone instead of taking it from a live node.
    async fn claim(&mut self, s: &mut Session, range: NodeId, orphaned_by: Option<NodeId>) -> Result<bool, StoreError> {
        let key = self.owner_key(range);
        let me = self.cfg.node.to_string();
        let current = self.timed(s.client.get(key.clone(), None)).await?;
        let previous = current.kvs().first().map(|kv| {
            let owner = std::str::from_utf8(kv.value())
                .ok()
                .and_then(|v| v.parse::<NodeId>().ok());
            (owner, kv.mod_revision())
        });
        if let (Some(dead), Some((owner, _))) = (orphaned_by, previous) {
            if owner != Some(dead) {
                debug!(range, dead, owner = ?owner, "another node adopted the range first");
                return Ok(false);
            }
        }
        let guard = match previous {
            None => Compare::create_revision(key.clone(), CompareOp::Equal, 0),
            Some((_, rev)) => Compare::mod_revision(key.clone(), CompareOp::Equal, rev),
        };
        let txn = Txn::new().when([guard]).and_then([TxnOp::put(key, me, None)]);
        let won = self.timed(s.client.txn(txn)).await?.succeeded();
        let from = previous.and_then(|(o, _)| o).filter(|o| *o != self.cfg.node);
        if !won {
            debug!(range, "another node claimed the range first");
            return Ok(false);
        }
        let records = self.load_range(s, range).await?;
        match from {
            Some(from) if range == self.cfg.node => info!(
                range,
                from,
                sas = records.len(),
                "took this node's own SPI range back from the node that adopted it"
            ),
            Some(from) => info!(
                range,
                from,
                sas = records.len(),
                "adopted the SPI range of dead node {from}"
            ),
            None => info!(range, sas = records.len(), "serving SPI range {range}"),
        }
        self.mine.insert(range);
        (self.events)(StoreEvent::Adopted { range, from, records });
        Ok(true)
    }

    /// The records of range `range`, opened; one that fails to open is
    /// skipped with an error (a wrong cluster key, or tampering).
    async fn load_range(&mut self, s: &mut Session, range: NodeId) -> Result<SaRecords, StoreError> {
        let prefix = self.sa_prefix(range);
        let resp = self
            .timed(s.client.get(prefix.clone(), Some(GetOptions::new().with_prefix())))
            .await?;
        let mut out = Vec::with_capacity(resp.kvs().len());
        for kv in resp.kvs() {
            let name = kv.key();
            let spi = std::str::from_utf8(&name[prefix.len().min(name.len())..])
                .ok()
                .and_then(|h| u64::from_str_radix(h, 16).ok());
            let Some(spi) = spi else {
                warn!(key = %String::from_utf8_lossy(name), "store: not an SA record key; skipped");
                continue;
            };
            match self.key.open(name, kv.value()) {
                Ok(plain) => out.push((spi, plain)),
                Err(_) => tracing::error!(
                    key = %String::from_utf8_lossy(name),
                    "store: SA record fails to open with this node's cluster_key (another key, or altered); skipped"
                ),
            }
        }
        Ok(out)
    }

    /// Reads nodes and owners; adopts the ranges of dead nodes; notices
    /// ranges taken from this node.
    async fn poll(&mut self, s: &mut Session) -> Result<(), StoreError> {
        let nodes_prefix = format!("/{}/nodes/", self.cfg.name);
        let owners_prefix = format!("/{}/owner/", self.cfg.name);
        let nodes = self
            .timed(
                s.client
                    .get(nodes_prefix.clone(), Some(GetOptions::new().with_prefix())),
            )
            .await?;
        let owners = self
            .timed(
                s.client
                    .get(owners_prefix.clone(), Some(GetOptions::new().with_prefix())),
            )
            .await?;
        let id_of = |key: &[u8], prefix: &str| {
            std::str::from_utf8(key.get(prefix.len()..)?)
                .ok()?
                .parse::<NodeId>()
                .ok()
                .filter(|n| *n < MAX_NODES)
        };
        let mut alive = BTreeMap::new();
        for kv in nodes.kvs() {
            let (Some(id), Ok(info)) = (
                id_of(kv.key(), &nodes_prefix),
                serde_json::from_slice::<NodeInfo>(kv.value()),
            ) else {
                continue;
            };
            alive.insert(id, info);
        }
        let mut owner_of = BTreeMap::new();
        for kv in owners.kvs() {
            let owner = std::str::from_utf8(kv.value())
                .ok()
                .and_then(|v| v.parse::<NodeId>().ok());
            if let (Some(range), Some(owner)) = (id_of(kv.key(), &owners_prefix), owner) {
                owner_of.insert(range, owner);
            }
        }
        let me = self.cfg.node;
        if !alive.contains_key(&me) {
            return Err(StoreError::LeaseExpired(s.lease));
        }
        for range in self.mine.clone() {
            match owner_of.get(&range) {
                Some(o) if *o == me => {}
                other => {
                    let to = other.copied().unwrap_or(range);
                    warn!(
                        range,
                        to, "node {to} serves SPI range {range} now: its SAs leave this node"
                    );
                    self.mine.remove(&range);
                    (self.events)(StoreEvent::Lost { range, to });
                }
            }
        }
        // A range whose owner is gone goes to one survivor (the transaction decides which).
        let orphans: Vec<(NodeId, NodeId)> = owner_of
            .iter()
            .filter(|(_, o)| !alive.contains_key(o))
            .map(|(r, o)| (*r, *o))
            .collect();
        for (range, dead) in orphans {
            if self.claim(s, range, Some(dead)).await? {
                owner_of.insert(range, me);
            }
        }
        // This node's own range, if another node adopted it while this one was away.
        if !self.mine.contains(&me) && self.claim(s, me, None).await? {
            owner_of.insert(me, me);
        }
        if self.published_load != Some(self.load.load(Ordering::Relaxed)) {
            self.publish(s).await?;
            if let Some(i) = alive.get_mut(&me) {
                i.load = self.published_load.unwrap_or(0);
            }
        }
        self.view.set(owner_of, alive);
        self.view.set_connected(true);
        Ok(())
    }

    async fn keep_alive(&mut self, s: &mut Session) -> Result<(), StoreError> {
        self.timed(s.keeper.keep_alive()).await?;
        match self.timed(s.responses.message()).await? {
            Some(r) if r.ttl() > 0 => Ok(()),
            _ => Err(StoreError::LeaseExpired(s.lease)),
        }
    }

    /// Writes the pending updates of the ranges this node serves, each
    /// transaction guarded by the ownership of its range.
    async fn flush(&mut self, s: &mut Session) -> Result<(), StoreError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        let mut by_range: BTreeMap<NodeId, Vec<Update>> = BTreeMap::new();
        for (spi, r) in pending {
            by_range.entry(node_of_ike_spi(spi)).or_default().push((spi, r));
        }
        let me = self.cfg.node.to_string();
        let mut failed: Option<StoreError> = None;
        for (range, updates) in by_range {
            if !self.mine.contains(&range) {
                debug!(
                    range,
                    updates = updates.len(),
                    "updates of a range this node no longer serves dropped"
                );
                continue;
            }
            for chunk in updates.chunks(OPS_PER_TXN) {
                if failed.is_some() {
                    for (spi, r) in chunk {
                        self.pending.entry(*spi).or_insert_with(|| r.clone());
                    }
                    continue;
                }
                let mut ops = Vec::with_capacity(chunk.len());
                let mut bytes = 0u64;
                for (spi, r) in chunk {
                    let key = self.sa_key(*spi);
                    match r {
                        Some(plain) => {
                            let sealed = self.key.seal(&*self.crypto, key.as_bytes(), plain)?;
                            bytes += sealed.len() as u64;
                            ops.push(TxnOp::put(key, sealed, None));
                        }
                        None => ops.push(TxnOp::delete(key, None)),
                    }
                }
                let txn = Txn::new()
                    .when([Compare::value(self.owner_key(range), CompareOp::Equal, me.clone())])
                    .and_then(ops);
                match self.timed(s.client.txn(txn)).await {
                    Ok(r) if r.succeeded() => {
                        self.counters
                            .records_written
                            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                        self.counters.bytes_written.fetch_add(bytes, Ordering::Relaxed);
                    }
                    Ok(_) => {
                        warn!(
                            range,
                            "SPI range {range} is no longer this node's: its updates are dropped"
                        );
                        break;
                    }
                    Err(e) => {
                        for (spi, r) in chunk {
                            self.pending.entry(*spi).or_insert_with(|| r.clone());
                        }
                        failed = Some(e);
                    }
                }
            }
        }
        self.counters.pending.store(self.pending.len(), Ordering::Relaxed);
        match failed {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Runs a session until shutdown (`Ok`) or a store error.
    async fn serve(&mut self, mut s: Session, rx: &mut mpsc::Receiver<Cmd>) -> Result<(), StoreError> {
        let mut flush = tokio::time::interval(self.cfg.checkpoint_interval);
        let mut poll = tokio::time::interval(self.cfg.lease / 4);
        let mut renew = tokio::time::interval(self.cfg.lease / 3);
        for t in [&mut flush, &mut poll, &mut renew] {
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        loop {
            tokio::select! {
                cmd = rx.recv() => if !self.take(cmd) {
                    if let Err(e) = self.flush(&mut s).await {
                        warn!(error = %e, unwritten = self.pending.len(), "leaving the cluster with SA updates unwritten");
                    }
                    let _ = self.timed(s.client.lease_revoke(s.lease)).await;
                    info!(node = self.cfg.node, "left the cluster");
                    return Ok(());
                },
                _ = flush.tick() => self.flush(&mut s).await?,
                _ = poll.tick() => self.poll(&mut s).await?,
                _ = renew.tick() => self.keep_alive(&mut s).await?,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(port: u16, load: usize, address: Option<&str>) -> NodeInfo {
        NodeInfo {
            link: SocketAddr::from(([127, 0, 0, 1], port)),
            load,
            address: address.map(|a| a.parse().unwrap()),
        }
    }

    #[test]
    fn redirects_go_to_the_least_loaded_node_beyond_the_margin_and_foreign_ranges_follow_owners() {
        let view = ClusterView::new(1);
        let nodes = BTreeMap::from([
            (1, info(1, 10, Some("192.0.2.1"))),
            (2, info(2, 4, Some("192.0.2.2"))),
            (3, info(3, 2, None)),
            (4, info(4, 7, Some("192.0.2.4"))),
        ]);
        // Range 5's owner is dead: not foreign (nobody to forward to).
        let owners = BTreeMap::from([(1, 1), (2, 2), (3, 1), (4, 4), (5, 5)]);
        view.set(owners, nodes);
        // Node 3 publishes no address: node 2 is the least loaded one to send to.
        assert_eq!(view.redirect_target(5), Some("192.0.2.2".parse().unwrap()));
        assert_eq!(view.redirect_target(6), None);
        let foreign = view.foreign_ranges();
        assert_eq!(foreign.get(), (1 << 2) | (1 << 4));
        assert!(foreign.contains(4 << 26 | 0x1234));
        assert!(!foreign.contains(3 << 26));
        assert_eq!(ClusterView::new(9).redirect_target(0), None, "no loads known yet");
    }
}
