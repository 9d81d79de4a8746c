//! The running daemon: shards, the data plane and the operations the CLI
//! and the control socket call.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing::{debug, info, warn};

use control::pool::SharedPools;

use crate::config_file::{DaemonConfig, ReloadEffect, StartAction, reload_effect};
use crate::dataplane::DataPlane;
use crate::registry::{Registry, SaSummary};
use control::ike_sa::resume::ResumableIkeSa;
use ironsa::cluster::store::{ClusterStatus, StoreEvent, StoreHandle};

use crate::cluster_shard::ShardCluster;
use crate::shard::{self, IkeRef, Op, Selection, Shard, ShardConfig, ShardHandle, ShardMsg, ShardStats};

/// Waits for every thread in `threads` to end (and empties the list).
pub fn join_threads(threads: &Mutex<Vec<JoinHandle<()>>>) {
    let threads = threads.lock().map(|mut t| std::mem::take(&mut *t)).unwrap_or_default();
    for t in threads {
        let _ = t.join();
    }
}

/// Changes the log filter at run time.
pub type LogReload = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// The daemon's shared state.
pub struct Daemon {
    shards: Arc<Vec<ShardHandle>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    config: Mutex<DaemonConfig>,
    config_path: PathBuf,
    dataplane: Arc<dyn DataPlane>,
    registry: Arc<Registry>,
    log_reload: LogReload,
    /// The cluster store client, when clustered.
    store: Option<Arc<StoreHandle>>,
    /// The inter-node link, when clustered.
    link: Mutex<Option<ironsa::cluster::link::Link>>,
    pools: Arc<SharedPools>,
    aaa: Aaa,
    /// The thread that tells the shards when the host's addresses change
    /// (MOBIKE clients), when IKE goes through wildcard sockets.
    address_watch: Mutex<Option<crate::address_watch::AddressWatch>>,
}

/// The RADIUS parts that run beside the shards, for their counters.
struct Aaa {
    radius: Option<Arc<ironsa::aaa::relay::EapRadius>>,
    accounting: Option<Arc<ironsa::aaa::accounting::Accounting>>,
    dae: Option<ironsa::aaa::dae::DaeServer>,
}

/// How dynamic authorization reaches sessions: each shard acts on its own
/// IKE SAs; the listener's thread waits for them (never a shard).
fn dae_apply(shards: Arc<Vec<ShardHandle>>) -> ironsa::aaa::dae::Apply {
    Box::new(move |refs, action| {
        let mut by_shard: std::collections::BTreeMap<usize, Vec<u64>> = Default::default();
        for r in refs {
            by_shard.entry(r.shard).or_default().push(r.spi);
        }
        let waits: Vec<_> = by_shard
            .into_iter()
            .filter_map(|(shard, spis)| {
                let (tx, rx) = mpsc::channel();
                shards
                    .get(shard)?
                    .send(ShardMsg::Dae {
                        spis,
                        action,
                        reply: tx,
                    })
                    .then_some(rx)
            })
            .collect();
        waits
            .into_iter()
            .filter_map(|rx| rx.recv_timeout(REPLY_TIMEOUT).ok())
            .sum()
    })
}

const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a shutdown waits for the accounting Stops of its sessions.
const ACCOUNTING_DRAIN: Duration = Duration::from_secs(5);

impl Daemon {
    /// Starts the shards.
    pub fn start(
        config: DaemonConfig,
        config_path: PathBuf,
        dataplane: Arc<dyn DataPlane>,
        nat_sockets: Option<Vec<(SocketAddr, std::net::UdpSocket)>>,
        log_reload: LogReload,
    ) -> std::io::Result<Arc<Self>> {
        let n = config.shards.clamp(1, 1 << shard::SHARD_BITS);
        let mut prepared = Vec::new();
        let mut handles = Vec::new();
        for id in 0..n {
            let (poll, handle, rx) = shard::prepare(id)?;
            prepared.push((poll, rx));
            handles.push(handle);
        }
        let handles = Arc::new(handles);
        let registry = Arc::new(Registry::with_capacity(config.expected_tunnels));
        let conns: Vec<_> = config.connections.iter().map(|c| c.config.clone()).collect();
        let remote_nat_port = config.nat_port;
        let crypto = ironsa_crypto::AwsLcProvider::new().shared();
        if let Some(c) = &config.cluster {
            dataplane.set_spi_node(c.node);
        }
        let load = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let store = match &config.cluster {
            None => None,
            Some(c) => Some(Arc::new(
                StoreHandle::start(c, crypto.clone(), load.clone(), store_events(handles.clone()))
                    .map_err(|e| std::io::Error::other(e.to_string()))?,
            )),
        };
        let link = match &config.cluster {
            None => None,
            Some(c) => {
                use ironsa::cluster::link::{Forwarded, FrameKind};
                let shards = handles.clone();
                let plane = dataplane.clone();
                let deliver = Box::new(move |f: Forwarded| match f.kind {
                    FrameKind::Ike => to_owning_shard(&shards, f.local, f.remote, f.data, true),
                    FrameKind::Esp => plane.esp_forwarded(f.local, f.remote, false, &f.data),
                    FrameKind::EspInUdp => plane.esp_forwarded(f.local, f.remote, true, &f.data),
                    other => {
                        debug!(from = f.from, kind = ?other, "forwarded datagram of a kind this node does not take; dropped")
                    }
                });
                let link = ironsa::cluster::link::Link::start(c.node, c.link, &c.link_key, deliver)?;
                if let Some(store) = &store {
                    let (view, sender) = (store.view().clone(), link.sender());
                    dataplane.set_esp_forward(crate::dataplane::EspForward {
                        ranges: view.foreign_ranges().clone(),
                        send: Arc::new(move |spi, local, remote, udp, packet: &[u8]| {
                            let Some((_, to)) = view.forward_to(ironsa::cluster::node_of_esp_spi(spi)) else {
                                return;
                            };
                            let kind = if udp { FrameKind::EspInUdp } else { FrameKind::Esp };
                            sender.forward(to, kind, local, remote, packet);
                        }),
                    });
                }
                Some(link)
            }
        };
        let ike_key_log: Option<Arc<dyn control::ike_sa::IkeKeyLog>> = match &config.keylog {
            None => None,
            Some(p) => Some(Arc::new(crate::keylog::IkeKeyLogFile::open(p)?)),
        };
        let pools = Arc::new(SharedPools::new(
            crate::config_file::build_pools(&config.pools)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?,
        ));
        // One RADIUS client thread for all shards (never a shard's loop).
        let radius = match &config.radius {
            None => None,
            Some(r) => {
                let client = ironsa::aaa::client::RadiusClient::start(r.client.clone())
                    .map_err(|e| std::io::Error::other(format!("RADIUS client: {e}")))?;
                Some(Arc::new(ironsa::aaa::relay::EapRadius::new(
                    client,
                    r.nas_identifier.clone(),
                )))
            }
        };
        // Accounting on a client thread of its own, beside authentication's.
        let accounting = match config.radius.as_ref().and_then(|r| Some((r, r.accounting.as_ref()?))) {
            None => None,
            Some((r, acct)) => {
                let client = ironsa::aaa::client::RadiusClient::start(acct.clone())
                    .map_err(|e| std::io::Error::other(format!("RADIUS accounting client: {e}")))?;
                Some(Arc::new(ironsa::aaa::accounting::Accounting::new(
                    client,
                    r.nas_identifier.clone(),
                    r.interim_interval,
                )))
            }
        };
        let sessions = Arc::new(ironsa::aaa::dae::SessionIndex::default());
        let dae = match config.radius.as_ref().and_then(|r| r.dae.clone()) {
            None => None,
            Some(dae) => Some(
                ironsa::aaa::dae::DaeServer::start(dae, sessions.clone(), dae_apply(handles.clone()))
                    .map_err(|e| std::io::Error::other(e.to_string()))?,
            ),
        };
        let mut threads = Vec::new();
        for (id, (poll, rx)) in prepared.into_iter().enumerate() {
            let shard = Shard::new(
                ShardConfig {
                    id,
                    listen: config.listen.clone(),
                    ike_port: config.ike_port,
                    nat_port: config.nat_port,
                    connections: conns.clone(),
                    admission: config.admission.clone(),
                    remote_nat_port,
                    expected_sas: config.expected_tunnels.div_ceil(n),
                    ike_key_log: ike_key_log.clone(),
                    nat_sockets: match &nat_sockets {
                        None => None,
                        Some(v) => Some(
                            v.iter()
                                .map(|(a, s)| Ok((*a, s.try_clone()?)))
                                .collect::<std::io::Result<Vec<_>>>()?,
                        ),
                    },
                    crypto: crypto.clone(),
                    node: config.cluster.as_ref().map(|c| c.node),
                    cluster: match (&store, &config.cluster) {
                        (Some(s), Some(c)) => Some(ShardCluster::new(
                            s.clone(),
                            link.as_ref().map(|l| l.sender()),
                            load.clone(),
                            c.checkpoint_interval,
                            c.redirect_margin,
                        )),
                        _ => None,
                    },
                    pools: pools.clone(),
                    eap_users: config
                        .eap_users
                        .clone()
                        .map(|u| u as Arc<dyn control::eap::UserStore + Send + Sync>),
                    radius: radius.clone(),
                    accounting: accounting.clone(),
                    sessions: sessions.clone(),
                },
                poll,
                rx,
                handles.clone(),
                dataplane.clone(),
                registry.clone(),
            )?;
            threads.push(
                std::thread::Builder::new()
                    .name(format!("ironsa-shard-{id}"))
                    .spawn(move || shard.run())?,
            );
        }
        // MOBIKE clients follow the host's addresses only through wildcard
        // sockets (and not when the data plane carries IKE on its own ports).
        let address_watch = if config.listen.iter().any(IpAddr::is_unspecified) && !dataplane.carries_ike() {
            crate::address_watch::AddressWatch::start(handles.clone())
                .inspect_err(|e| {
                    warn!("cannot watch the host's addresses: {e}; MOBIKE clients will not follow address changes")
                })
                .ok()
        } else {
            None
        };
        info!(shards = n, listen = ?config.listen, ike_port = config.ike_port, nat_port = config.nat_port, "ironsa started");
        let daemon = Arc::new(Daemon {
            shards: handles,
            threads: Mutex::new(threads),
            config: Mutex::new(config),
            config_path,
            dataplane,
            registry,
            log_reload,
            store,
            link: Mutex::new(link),
            pools,
            aaa: Aaa {
                radius,
                accounting,
                dae,
            },
            address_watch: Mutex::new(address_watch),
        });
        let starts: Vec<String> = daemon
            .config
            .lock()
            .map(|c| {
                c.connections
                    .iter()
                    .filter(|c| c.start_action == StartAction::Start)
                    .map(|c| c.config.name.clone())
                    .collect()
            })
            .unwrap_or_default();
        for name in starts {
            if let Err(e) = daemon.initiate(&name, None, None) {
                warn!(connection = %name, "start_action: {e}");
            }
        }
        Ok(daemon)
    }

    /// Where a data plane hands the IKE messages it receives (on the NAT-T port,
    /// or on its own DPDK ports): to the shard owning the SPI.
    pub fn ike_sink(self: &Arc<Self>) -> crate::child_sas::IkeSink {
        let shards = self.shards.clone();
        Arc::new(move |local, remote, data: Vec<u8>| to_owning_shard(&shards, local, remote, data, false))
    }

    /// Where the data plane's lifetime requests go: a rekey or delete of the
    /// child, on the IKE SA that holds it now.
    pub fn lifetime_sink(self: &Arc<Self>) -> crate::child_sas::LifetimeSink {
        let me = Arc::downgrade(self);
        Arc::new(move |(spi_i, spi_r), spi_in, req| {
            let Some(d) = me.upgrade() else { return };
            let op = match req {
                crate::child_sas::LifetimeRequest::Rekey => Op::Rekey,
                crate::child_sas::LifetimeRequest::Delete => Op::DeleteChild,
                crate::child_sas::LifetimeRequest::PeerMoved(source) => {
                    // The child's IKE SA is on the shard of one of the SPIs it
                    // was installed on, or (after an IKE rekey) elsewhere: each
                    // shard looks among its own SAs.
                    for s in d.shards.iter() {
                        s.send(ShardMsg::PeerMoved { spi_in, source });
                    }
                    return;
                }
            };
            let selection = Selection {
                ike: IkeRef::Spi(u64::from(spi_in)),
                child: None,
            };
            // The shard of the IKE SA it was installed on (our SPI is one of the
            // two); after an IKE rekey the child lives on another SA, maybe on
            // another shard: then every shard looks.
            let n = d.shards.len();
            let (a, b) = (shard::owner_of(spi_i, n), shard::owner_of(spi_r, n));
            let found =
                !d.command_on(a, &selection, op).is_empty() || (b != a && !d.command_on(b, &selection, op).is_empty());
            if !found && d.command(&selection, op).is_empty() {
                debug!(
                    spi_in = format_args!("{spi_in:08x}"),
                    "fastpath lifetime reached: the CHILD_SA is already being rekeyed or deleted, or gone"
                );
            }
        })
    }

    /// The data plane.
    pub fn dataplane(&self) -> &Arc<dyn DataPlane> {
        &self.dataplane
    }

    /// Number of distinct authenticated peers.
    pub fn peers(&self) -> usize {
        self.registry.peers()
    }

    /// Asks every shard; entry `i` is shard `i`'s answer, or `None` (with a
    /// warning) when it did not answer in time, so that a stuck shard shows
    /// as missing instead of shifting the others' numbers.
    fn ask_each<T>(&self, make: impl Fn(mpsc::Sender<T>) -> ShardMsg) -> Vec<Option<T>> {
        let rxs: Vec<_> = self
            .shards
            .iter()
            .map(|s| {
                let (tx, rx) = mpsc::channel();
                s.send(make(tx)).then_some(rx)
            })
            .collect();
        rxs.into_iter()
            .enumerate()
            .map(|(i, rx)| {
                let answer = rx.and_then(|rx| rx.recv_timeout(REPLY_TIMEOUT).ok());
                if answer.is_none() {
                    warn!(
                        shard = i,
                        timeout_secs = REPLY_TIMEOUT.as_secs(),
                        "shard did not answer a control request; its figures are missing from this answer"
                    );
                }
                answer
            })
            .collect()
    }

    fn ask<T>(&self, make: impl Fn(mpsc::Sender<T>) -> ShardMsg) -> Vec<T> {
        self.ask_each(make).into_iter().flatten().collect()
    }

    /// All IKE SAs of all shards.
    pub fn list_sas(&self) -> Vec<SaSummary> {
        let mut v: Vec<SaSummary> = self.ask(ShardMsg::List).into_iter().flatten().collect();
        v.sort_by(|a, b| (a.connection.as_str(), a.spi_i.as_str()).cmp(&(b.connection.as_str(), b.spi_i.as_str())));
        v
    }

    /// The cluster as this node sees it (`None`: not clustered).
    pub fn cluster_status(&self) -> Option<ClusterStatus> {
        self.store.as_ref().map(|s| s.status())
    }

    /// The address pools with their leases, for `ironsa pools` and metrics.
    pub fn pools(&self) -> Vec<crate::registry::PoolSummary> {
        self.pools
            .with(|p| p.iter().map(crate::registry::PoolSummary::of).collect())
    }

    /// Size and use of each pool (name, size, used), without the leases.
    pub fn pool_occupancy(&self) -> Vec<(String, u64, u64)> {
        self.pools.with(|p| {
            p.iter()
                .map(|pool| {
                    let s = pool.stats();
                    (pool.name().to_string(), s.size, s.leased)
                })
                .collect()
        })
    }

    /// Counters of every shard, indexed by shard; `None` for a shard that
    /// did not answer.
    pub fn stats(&self) -> Vec<Option<ShardStats>> {
        self.ask_each(ShardMsg::Stats)
    }

    /// Counters of the RADIUS clients and the dynamic-authorization
    /// listener (`None` without a `[radius]` table).
    pub fn radius_stats(&self) -> Option<serde_json::Value> {
        use std::sync::atomic::Ordering::Relaxed;
        let a = &self.aaa;
        let radius = a.radius.as_ref()?;
        let client = |s: &ironsa::aaa::client::ClientStats| {
            serde_json::json!({
                "sent": s.sent.load(Relaxed),
                "retransmitted": s.retransmitted.load(Relaxed),
                "failovers": s.failovers.load(Relaxed),
                "answered": s.answered.load(Relaxed),
                "timed_out": s.timed_out.load(Relaxed),
                "overloaded": s.overloaded.load(Relaxed),
                "dropped_malformed": s.dropped_malformed.load(Relaxed),
                "dropped_unknown_identifier": s.dropped_unknown_identifier.load(Relaxed),
                "dropped_bad_authenticator": s.dropped_bad_authenticator.load(Relaxed),
            })
        };
        let mut v = serde_json::json!({ "authentication": client(radius.client().stats()) });
        if let Some(acct) = &a.accounting {
            let mut c = client(acct.client().stats());
            c["lost"] = (acct.stats().refused.load(Relaxed) + acct.stats().unanswered.load(Relaxed)).into();
            v["accounting"] = c;
        }
        if let Some(dae) = &a.dae {
            let s = dae.stats();
            v["dae"] = serde_json::json!({
                "disconnect_acks": s.disconnect_acks.load(Relaxed),
                "disconnect_naks": s.disconnect_naks.load(Relaxed),
                "coa_acks": s.coa_acks.load(Relaxed),
                "coa_naks": s.coa_naks.load(Relaxed),
                "retransmissions": s.retransmissions.load(Relaxed),
                "dropped_unknown_client": s.dropped_unknown_client.load(Relaxed),
                "dropped_malformed": s.dropped_malformed.load(Relaxed),
                "dropped_bad_authenticator": s.dropped_bad_authenticator.load(Relaxed),
                "dropped_stale_timestamp": s.dropped_stale_timestamp.load(Relaxed),
                "dropped_unsupported_code": s.dropped_unsupported_code.load(Relaxed),
            });
        }
        Some(v)
    }

    /// Initiates the named connection to its first remote address; with
    /// `child`, only that child template: on the connection's established
    /// IKE SA when there is one, else with a new IKE SA. With `wait`, waits
    /// that long for the outcome: the IKE SA and its first CHILD_SA
    /// established, or why the negotiation failed.
    pub fn initiate(&self, name: &str, child: Option<&str>, wait: Option<Duration>) -> Result<String, String> {
        let (conn, local, remote, template) = {
            let cfg = self.config.lock().map_err(|_| "config lock poisoned")?;
            let c = cfg
                .connections
                .iter()
                .find(|c| c.config.name == name)
                .ok_or_else(|| format!("no connection '{name}'"))?;
            let template = match child {
                None => None,
                Some(child) => Some(
                    c.config
                        .children
                        .iter()
                        .position(|t| t.name == child)
                        .ok_or_else(|| format!("connection '{name}' has no child '{child}'"))?,
                ),
            };
            let remote_ip = c
                .config
                .remote_addrs
                .as_ref()
                .and_then(|a| a.first().copied())
                .ok_or_else(|| format!("connection '{name}' has no concrete remote address"))?;
            let remote = SocketAddr::new(remote_ip, c.remote_port);
            let local_ip = initiation_source(&cfg.listen, c.config.local_addrs.as_deref(), remote_ip, || {
                crate::ike_io::source_for(remote)
            })
            .map_err(|e| format!("connection '{name}': {e}"))?;
            (
                c.config.clone(),
                SocketAddr::new(local_ip, cfg.ike_port),
                remote,
                template,
            )
        };
        if let Some(t) = template {
            let selection = Selection {
                ike: IkeRef::Connection(name.to_string()),
                child: None,
            };
            let started = self.command(&selection, Op::CreateChild(t));
            if !started.is_empty() {
                return Ok(operator_did(started));
            }
        }
        if template.is_none() {
            // Initiating is idempotent, as an operator expects: a second IKE SA
            // for the same connection would duplicate its tunnels and policies.
            if let Some(up) = self
                .list_sas()
                .into_iter()
                .find(|s| s.connection == name && (s.state == "ESTABLISHED" || s.state == "CONNECTING"))
            {
                return Ok(format!(
                    "{name} is already {} with {} (IKE SA {}/{}): nothing initiated",
                    if up.state == "ESTABLISHED" {
                        "up"
                    } else {
                        "being negotiated"
                    },
                    up.remote,
                    up.spi_i,
                    up.spi_r
                ));
            }
        }
        let shard = &self.shards[0];
        let (tx, rx) = mpsc::channel();
        let (outcome_tx, outcome_rx) = mpsc::channel();
        shard.send(ShardMsg::Initiate {
            config: conn,
            local,
            remote,
            template,
            reply: tx,
            outcome: wait.map(|_| outcome_tx),
        });
        let spi = rx
            .recv_timeout(REPLY_TIMEOUT)
            .map_err(|_| "shard did not answer".to_string())??;
        let Some(wait) = wait else {
            return Ok(format!(
                "initiating {name} from {local} to {remote}, local SPI {spi:016x}"
            ));
        };
        match outcome_rx.recv_timeout(wait) {
            Ok(Ok(done)) => Ok(done),
            Ok(Err(why)) => Err(format!("{name} from {local} to {remote} failed: {why}")),
            Err(_) => Err(format!(
                "{name} from {local} to {remote}: no outcome within {} s (IKE SA {spi:016x} is still negotiating)",
                wait.as_secs_f64()
            )),
        }
    }

    /// Deletes IKE SAs by connection name or by SPI (hex, either side).
    pub fn terminate(&self, connection: Option<String>, spi: Option<u64>) -> usize {
        let (tx_all, rx_all) = mpsc::channel();
        for s in self.shards.iter() {
            s.send(ShardMsg::Terminate {
                spi,
                connection: connection.clone(),
                reply: tx_all.clone(),
            });
        }
        drop(tx_all);
        rx_all.iter().take(self.shards.len()).sum()
    }

    /// Applies `op` to the SAs `selection` names on every shard; one line per task started.
    pub fn command(&self, selection: &Selection, op: Op) -> Vec<String> {
        self.ask(|reply| ShardMsg::Command {
            selection: selection.clone(),
            op,
            reply,
        })
        .into_iter()
        .flatten()
        .collect()
    }

    /// [`Daemon::command`] on one shard only.
    fn command_on(&self, shard: usize, selection: &Selection, op: Op) -> Vec<String> {
        let (tx, rx) = mpsc::channel();
        let sent = self.shards.get(shard).is_some_and(|s| {
            s.send(ShardMsg::Command {
                selection: selection.clone(),
                op,
                reply: tx,
            })
        });
        if !sent {
            return Vec::new();
        }
        rx.recv_timeout(REPLY_TIMEOUT).unwrap_or_default()
    }

    /// What an operator's `target` names: a connection, else an SPI in hex
    /// (either SPI of an IKE SA or of a CHILD_SA).
    pub fn target(&self, target: &str) -> Result<IkeRef, String> {
        let is_connection = self
            .config
            .lock()
            .map_err(|_| "config lock poisoned")?
            .connections
            .iter()
            .any(|c| c.config.name == target);
        if is_connection {
            return Ok(IkeRef::Connection(target.to_string()));
        }
        u64::from_str_radix(target.trim_start_matches("0x"), 16)
            .map(IkeRef::Spi)
            .map_err(|_| format!("'{target}' is neither a connection nor a hex SPI"))
    }

    /// Rekeys the IKE SA(s) `target` names, or their CHILD_SAs named `child`
    /// (a name or an SPI); a CHILD_SA's own SPI as `target` rekeys that child.
    pub fn rekey(&self, target: &str, child: Option<String>) -> Result<String, String> {
        let selection = Selection {
            ike: self.target(target)?,
            child,
        };
        let started = self.command(&selection, Op::Rekey);
        if started.is_empty() {
            return Err(format!("no established SA matches {}", describe(&selection)));
        }
        Ok(operator_did(started))
    }

    /// Deletes the CHILD_SAs named `child` (a name or an SPI, inbound or
    /// outbound) of the IKE SAs `target` names (all when `None`).
    pub fn terminate_child(&self, target: Option<&str>, child: String) -> Result<String, String> {
        let selection = Selection {
            ike: target.map_or(Ok(IkeRef::Any), |t| self.target(t))?,
            child: Some(child),
        };
        let started = self.command(&selection, Op::DeleteChild);
        if started.is_empty() {
            return Err(format!("no installed CHILD_SA matches {}", describe(&selection)));
        }
        Ok(operator_did(started))
    }

    /// Re-reads the configuration file and applies its connections: what
    /// each change does to existing SAs is decided by [`reload_effect`];
    /// settings read only at start are reported as waiting for a restart.
    pub fn reload(&self) -> Result<String, String> {
        let new = DaemonConfig::load(&self.config_path).map_err(|e| e.to_string())?;
        for w in &new.warnings {
            warn!(line = w.line, key = %w.key, "{}", w.message);
        }
        let conns: Vec<_> = new.connections.iter().map(|c| c.config.clone()).collect();
        let mut cfg = self.config.lock().map_err(|_| "config lock poisoned")?;
        let mut changes = Vec::new();
        for c in &new.connections {
            let name = &c.config.name;
            match cfg.connections.iter().find(|o| &o.config.name == name) {
                None => changes.push(format!("{name}: added")),
                Some(old) => match reload_effect(&old.config, &c.config) {
                    ReloadEffect::Unchanged => {}
                    ReloadEffect::InPlace => {
                        info!(connection = %name, "connection changed in settings its SAs follow in place: they are kept");
                        changes.push(format!("{name}: updated in place"));
                    }
                    ReloadEffect::NewSa(key) => {
                        warn!(connection = %name, key, "{key} changed: the connection's SAs are deleted and must be negotiated anew");
                        changes.push(format!("{name}: {key} changed, SAs deleted"));
                    }
                },
            }
        }
        for old in cfg
            .connections
            .iter()
            .filter(|o| conns.iter().all(|n| n.name != o.config.name))
        {
            info!(connection = %old.config.name, "connection removed: its SAs are deleted");
            changes.push(format!("{}: removed, SAs deleted", old.config.name));
        }
        for key in restart_only_changes(&cfg, &new) {
            warn!(key, "{key} changed: it takes effect when ironsa restarts");
            changes.push(format!("{key}: takes effect at restart"));
        }
        let n = conns.len();
        self.dataplane.set_child_settings(new.child_settings.clone());
        for s in self.shards.iter() {
            s.send(ShardMsg::Reload(conns.clone()));
        }
        cfg.connections = new.connections;
        let what = if changes.is_empty() {
            "no change".to_string()
        } else {
            changes.join("; ")
        };
        Ok(format!(
            "reloaded {n} connections from {}: {what}",
            self.config_path.display()
        ))
    }

    /// Changes the log filter.
    pub fn set_log_level(&self, filter: &str) -> Result<String, String> {
        (self.log_reload)(filter)?;
        Ok(format!("log level set to {filter}"))
    }

    /// Sends DELETE for every SA and waits for the shards to stop.
    pub fn shutdown(&self) {
        if let Some(mut w) = self.address_watch.lock().ok().and_then(|mut w| w.take()) {
            w.stop();
        }
        for s in self.shards.iter() {
            s.send(ShardMsg::Shutdown);
        }
        join_threads(&self.threads);
        if let Some(acct) = &self.aaa.accounting {
            let left = acct.drain(ACCOUNTING_DRAIN);
            if left > 0 {
                warn!(
                    requests = left,
                    "RADIUS accounting requests still unanswered at shutdown; given up"
                );
            }
        }
        if let Some(store) = &self.store {
            store.shutdown();
        }
        if let Some(mut link) = self.link.lock().ok().and_then(|mut l| l.take()) {
            link.stop();
        }
        self.dataplane.shutdown();
        info!("ironsa stopped");
    }
}

/// Hands an IKE message received outside the shards' sockets (by the data
/// plane, or from another node over the cluster link) to the shard owning it.
/// `from_node`: another cluster node forwarded it (it is not forwarded again).
fn to_owning_shard(shards: &[ShardHandle], local: SocketAddr, remote: SocketAddr, data: Vec<u8>, from_node: bool) {
    let header = control::wire::ingress::peek_header(&data);
    // A first IKE_SA_INIT goes by source port, so its retransmissions meet its SA.
    let owner = shard::route(header.as_ref(), shards.len()).unwrap_or(usize::from(remote.port()) % shards.len());
    shards[owner].send(ShardMsg::Received {
        local,
        remote,
        header,
        data,
        from_node,
    });
}

/// Routes what the store thread reports to the shards: the SAs of an
/// adopted range to the shard their SPI names, a lost range to all.
fn store_events(shards: Arc<Vec<ShardHandle>>) -> ironsa::cluster::store::EventSink {
    Box::new(move |event| match event {
        StoreEvent::Adopted { range, records, .. } => {
            let n = shards.len();
            let mut per_shard: Vec<Vec<ResumableIkeSa>> = (0..n).map(|_| Vec::new()).collect();
            for (spi, bytes) in records {
                match ResumableIkeSa::decode(&bytes) {
                    Ok(state) => per_shard[shard::owner_of(spi, n)].push(state),
                    Err(e) => tracing::error!(range, spi = format_args!("{spi:016x}"), "stored IKE SA skipped: {e}"),
                }
            }
            for (shard, states) in per_shard.into_iter().enumerate() {
                if !states.is_empty() {
                    shards[shard].send(ShardMsg::Adopt(states));
                }
            }
        }
        StoreEvent::Lost { range, .. } => {
            for s in shards.iter() {
                s.send(ShardMsg::Release(range));
            }
        }
        _ => {}
    })
}

/// How an operator named what a command found nothing for.
fn describe(selection: &Selection) -> String {
    let ike = match &selection.ike {
        IkeRef::Connection(name) => format!("connection '{name}'"),
        IkeRef::Spi(spi) => format!("SPI {spi:x}"),
        IkeRef::Any => "any IKE SA".to_string(),
    };
    match &selection.child {
        Some(child) => format!("child '{child}' of {ike}"),
        None => ike,
    }
}

/// Logs what an operator's command started and returns it as the answer.
fn operator_did(started: Vec<String>) -> String {
    for line in &started {
        info!("operator request: {line}");
    }
    started.join("\n")
}

/// Our address to initiate from towards `remote`: with `local_addrs`, the
/// first of the peer's family that we listen on; otherwise the source the
/// routing table picks (`routed`), if we listen on it (or on the wildcard),
/// else our first listen address of the peer's family.
fn initiation_source(
    listen: &[IpAddr],
    local_addrs: Option<&[IpAddr]>,
    remote: IpAddr,
    routed: impl FnOnce() -> std::io::Result<IpAddr>,
) -> Result<IpAddr, String> {
    let family: Vec<IpAddr> = listen
        .iter()
        .copied()
        .filter(|l| l.is_ipv4() == remote.is_ipv4())
        .collect();
    let wildcard = family.iter().any(IpAddr::is_unspecified);
    let listened = |a: &IpAddr| wildcard || family.contains(a);
    if let Some(locals) = local_addrs {
        return locals
            .iter()
            .copied()
            .find(|a| a.is_ipv4() == remote.is_ipv4() && listened(a))
            .ok_or_else(|| format!("no local_addrs entry of the peer's family that is in listen {listen:?}"));
    }
    let Some(first) = family.first().copied() else {
        return Err(format!("no listen address of the family of {remote}"));
    };
    match routed() {
        Ok(src) if listened(&src) => Ok(src),
        Ok(src) if !wildcard => {
            debug!(peer = %remote, routed = %src, chosen = %first, "the routed source is not a listen address");
            Ok(first)
        }
        Ok(_) => Ok(first),
        Err(e) if wildcard => Err(format!("no route to {remote}: {e}")),
        Err(_) => Ok(first),
    }
}

/// The settings read only at start that differ between `old` and `new`.
fn restart_only_changes(old: &DaemonConfig, new: &DaemonConfig) -> Vec<&'static str> {
    [
        ("daemon.listen", old.listen == new.listen),
        ("daemon.ike_port", old.ike_port == new.ike_port),
        ("daemon.nat_port", old.nat_port == new.nat_port),
        ("daemon.shards", old.shards == new.shards),
        ("daemon.control_socket", old.control_socket == new.control_socket),
        ("daemon.control_socket_group", old.control_group == new.control_group),
        ("daemon.metrics", old.metrics == new.metrics),
        ("daemon.log_level", old.log_level == new.log_level),
        ("daemon.keylog", old.keylog == new.keylog),
        ("daemon.expected_tunnels", old.expected_tunnels == new.expected_tunnels),
        ("dos", old.admission == new.admission),
        (
            "fastpath.backend",
            std::mem::discriminant(&old.fastpath) == std::mem::discriminant(&new.fastpath),
        ),
        ("fastpath.hw_profile", old.hw_profile == new.hw_profile),
        ("fastpath.tun_name", old.tun_name == new.tun_name),
        ("fastpath.workers", old.fastpath_workers == new.fastpath_workers),
        ("fastpath.install_routes", old.install_routes == new.install_routes),
        ("fastpath.socket_buffer", old.socket_buffer == new.socket_buffer),
        (
            "cluster",
            match (&old.cluster, &new.cluster) {
                (None, None) => true,
                (Some(a), Some(b)) => a.same_as(b),
                _ => false,
            },
        ),
        ("pool", old.pools == new.pools),
    ]
    .into_iter()
    .filter(|(_, same)| !same)
    .map(|(key, _)| key)
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn initiation_source_follows_the_route_among_listen_addresses() {
        let listen = ips(&["10.73.1.1", "10.73.2.1", "fd00::1"]);
        let peer: IpAddr = "10.73.2.9".parse().unwrap();
        let routed = |a: &'static str| move || Ok(a.parse().unwrap());
        assert_eq!(
            initiation_source(&listen, None, peer, routed("10.73.2.1")),
            Ok("10.73.2.1".parse().unwrap())
        );
        // A routed source we do not listen on: the first listen address of the family.
        assert_eq!(
            initiation_source(&listen, None, peer, routed("192.0.2.1")),
            Ok("10.73.1.1".parse().unwrap())
        );
        // Wildcard: the routed source, whatever it is.
        assert_eq!(
            initiation_source(&ips(&["0.0.0.0"]), None, peer, routed("192.0.2.1")),
            Ok("192.0.2.1".parse().unwrap())
        );
        // local_addrs wins over the route, if we listen on it.
        let locals = ips(&["fd00::1", "10.73.1.1"]);
        assert_eq!(
            initiation_source(&listen, Some(&locals), peer, routed("10.73.2.1")),
            Ok("10.73.1.1".parse().unwrap())
        );
        assert!(initiation_source(&listen, Some(&ips(&["10.9.9.9"])), peer, routed("10.73.2.1")).is_err());
        assert!(initiation_source(&ips(&["fd00::1"]), None, peer, routed("10.73.2.1")).is_err());
    }
}
