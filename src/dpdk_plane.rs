//! The DPDK data plane (feature `dpdk`): the fastpath crate's DPDK backend
//! on the ports of a hardware profile, driven by the control plane.
//!
//! - CHILD_SAs go into the backend's SAD/SPD through [`ChildSas`] (the same
//!   parameters and policies as the software data plane); with lookaside
//!   crypto the backend also creates the crypto-device session.
//! - One thread per poll loop (queue), registered with EAL for an lcore id
//!   (per-lcore mbuf caches); an idle loop backs off to short sleeps
//!   so a quiet gateway does not burn its cores. They stop on shutdown,
//!   after the shards have sent their DELETEs.
//! - IKE arrives on the DPDK ports (the kernel never sees it): a forwarder
//!   thread hands each message to the daemon's IKE sink (the shard owning the
//!   SPI), and the shards send through the backend's [`IkeSender`]
//!   ([`DataPlane::carries_ike`]).
//! - CPUs: with `[cpus] poll` in the profile each poll loop's thread is
//!   pinned to its CPU; with `[cpus] control` the daemon's other threads
//!   (shards, IKE forwarder, control socket, metrics) stay on those CPUs.
//!   A CPU the process cannot use is an error at start.
//! - Counters: per CHILD_SA from the SAD, per port, queue, poll loop, crypto
//!   device and CPU fallback from the backend, in `ironsa stats` and `/metrics`.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use control::ike_sa::{ChildSaInstall, SpiAllocator, Transmit};
use fastpath::dpdk::DpdkError;
use fastpath::dpdk::backend::{DpdkBackend, IkeDatagram, IkeSender, PollLoop};
use fastpath::dpdk::counters::DpdkCounters;
use fastpath::dpdk::cpus::{self, CpuError};
use fastpath::dpdk::profile::HwProfile;
use fastpath::sad::{SaId, SaParams};
use fastpath::stats::{CountersSnapshot, DropReason};
use serde_json::{Map, Value, json};
use tracing::{debug, info, warn};

use crate::child_sas::{ChildSas, ChildSettings, IkeSink, LifetimeSink, SaStore};
use crate::dataplane::{ChildCounters, DataPlane, DataPlaneError};

/// Empty polls in a row before an idle loop starts sleeping.
const IDLE_POLLS: u32 = 1024;
/// Sleep of an idle poll loop between polls.
const IDLE_SLEEP: Duration = Duration::from_micros(100);
/// How often the IKE forwarder looks at the stop flag.
const IKE_WAIT: Duration = Duration::from_millis(100);

/// Why the DPDK data plane did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DpdkPlaneError {
    /// EAL initialisation failed (arguments, devices, permissions).
    #[error("EAL initialisation (profile {profile}): {source}")]
    Eal {
        /// Profile name.
        profile: String,
        /// The cause.
        source: DpdkError,
    },
    /// The ports or the crypto device did not start.
    #[error("starting the DPDK ports of profile {profile}: {source}")]
    Start {
        /// Profile name.
        profile: String,
        /// The cause.
        source: DpdkError,
    },
    /// The profile's CPUs cannot be used here, or pinning failed.
    #[error(transparent)]
    Cpus(#[from] CpuError),
    /// A thread could not be created, or the key log not opened.
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl SaStore for DpdkBackend {
    fn install_sa(&self, p: &SaParams) -> Result<SaId, DataPlaneError> {
        let (id, offloaded) = DpdkBackend::install_sa(self, p)?;
        debug!(spi = format_args!("{:08x}", p.spi), offloaded, "SA in the DPDK backend");
        Ok(id)
    }
    fn remove_sa(&self, id: SaId) {
        if let Err(e) = DpdkBackend::remove_sa(self, id) {
            debug!("SA removal: {e}");
        }
    }
    fn move_sa(&self, id: SaId, path: &fastpath::sad::OuterPath) -> Result<(), String> {
        DpdkBackend::move_sa(self, id, path).map_err(|e| e.to_string())
    }
}

/// The poll loops and IKE receiver until [`DpdkDataPlane::run`] takes them.
struct Pending {
    loops: Vec<PollLoop>,
    ike: Receiver<IkeDatagram>,
}

/// The DPDK data plane.
pub struct DpdkDataPlane {
    children: ChildSas,
    backend: Arc<DpdkBackend>,
    ike_out: IkeSender,
    pending: Mutex<Option<Pending>>,
    stop: Arc<AtomicBool>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl DpdkDataPlane {
    /// Initialises EAL with the profile's arguments and starts its ports and
    /// crypto device (once per process); threads start with [`DpdkDataPlane::run`].
    pub fn open(
        profile: &HwProfile,
        child_settings: ChildSettings,
        keylog: Option<&Path>,
    ) -> Result<Self, DpdkPlaneError> {
        let available = cpus::current_thread_cpus().map_err(CpuError::Io)?;
        cpus::check_available(&profile.name, &profile.cpus, &available)?;
        let children = ChildSas::new(usize::from(profile.queues), child_settings, keylog)?;
        let name = || profile.name.clone();
        // EAL pins the thread that initialises it to the main lcore, and threads
        // inherit that: a helper thread takes the pin, so the shards and poll
        // loops started later are not all confined to one core.
        let (sad, spd) = (children.sad().clone(), children.spd().clone());
        let started = std::thread::scope(|s| {
            std::thread::Builder::new()
                .name("ironsa-eal".into())
                .spawn_scoped(s, || {
                    let eal = DpdkBackend::init_eal(profile).map_err(|source| DpdkPlaneError::Eal {
                        profile: name(),
                        source,
                    })?;
                    DpdkBackend::start(eal, profile, sad, spd).map_err(|source| DpdkPlaneError::Start {
                        profile: name(),
                        source,
                    })
                })
                .map_err(DpdkPlaneError::Io)?
                .join()
                .map_err(|_| DpdkPlaneError::Io(io::Error::other("EAL initialisation panicked")))?
        })?;
        let backend = Arc::new(started.backend);
        let children = children.with_store(backend.clone());
        if !profile.cpus.control.is_empty() {
            // Threads started from here on (shards, control socket, metrics,
            // the IKE forwarder) inherit this; the poll loops pin themselves.
            cpus::pin_current_thread(&profile.cpus.control).map_err(CpuError::Io)?;
            info!(cpus = ?profile.cpus.control, "control plane pinned");
        }
        for p in &profile.ports {
            let mac = backend
                .port_mac(&p.name)
                .map(|m| m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":"));
            info!(port = %p.name, role = ?p.role, addresses = ?p.addresses, mac = mac.as_deref().unwrap_or("?"), "DPDK port up");
        }
        for s in backend.inline_status() {
            if profile.crypto.mode == fastpath::dpdk::profile::CryptoMode::Inline && !s.capable {
                warn!(port = %s.port, "no inline IPsec on this port: ESP runs on the CPU (counted as inline fallback)");
            }
        }
        info!(profile = %profile.name, loops = started.loops.len(), crypto = ?profile.crypto.mode, "DPDK fastpath ready");
        Ok(Self {
            children,
            ike_out: backend.ike_sender(),
            backend,
            pending: Mutex::new(Some(Pending {
                loops: started.loops,
                ike: started.ike,
            })),
            stop: Arc::new(AtomicBool::new(false)),
            threads: Mutex::new(Vec::new()),
        })
    }

    /// Starts one thread per poll loop and the IKE forwarder, which hands
    /// received IKE to `sink`; lifetime requests go to `lifetimes`.
    pub fn run(&self, sink: IkeSink, lifetimes: LifetimeSink) -> io::Result<()> {
        self.children.set_lifetime_sink(lifetimes);
        let Some(p) = self.pending.lock().map_err(|_| io::Error::other("lock"))?.take() else {
            return Err(io::Error::other("already running"));
        };
        let mut threads = self.threads.lock().map_err(|_| io::Error::other("lock"))?;
        let poll_cpus = self.backend.profile().cpus.poll.clone();
        let eal = self.backend.eal();
        for l in p.loops {
            let stop = self.stop.clone();
            let cpu = poll_cpus.get(l.id()).copied();
            let (pinned_tx, pinned) = std::sync::mpsc::sync_channel(1);
            let id = l.id();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("ironsa-dp{id}"))
                    .spawn(move || {
                        if let Some(cpu) = cpu {
                            let r = cpus::pin_current_thread(&[cpu]);
                            let failed = r.is_err();
                            let _ = pinned_tx.send(r);
                            if failed {
                                return;
                            }
                        } else {
                            let _ = pinned_tx.send(Ok(()));
                        }
                        // An lcore id (after pinning: DPDK records the affinity)
                        // gives the loop per-lcore mempool caches.
                        let lcore = match eal.register_thread() {
                            Ok(r) => Some(r),
                            Err(e) => {
                                warn!(id, "poll loop without an lcore id (no mbuf cache): {e}");
                                None
                            }
                        };
                        debug!(id, lcore = lcore.as_ref().map(|r| r.lcore()), "poll loop running");
                        poll(l, &stop);
                        drop(lcore);
                    })?,
            );
            match pinned.recv() {
                Ok(Ok(())) => debug!(id, ?cpu, "poll loop started"),
                Ok(Err(e)) => {
                    self.stop.store(true, Ordering::Relaxed);
                    return Err(io::Error::new(
                        e.kind(),
                        format!("pinning poll loop {id} to CPU {cpu:?}: {e}"),
                    ));
                }
                Err(_) => return Err(io::Error::other(format!("poll loop {id} ended at start"))),
            }
        }
        let stop = self.stop.clone();
        threads.push(
            std::thread::Builder::new()
                .name("ironsa-dpdk-ike".into())
                .spawn(move || forward_ike(p.ike, sink, &stop))?,
        );
        Ok(())
    }
}

/// Runs a poll loop until `stop`; sleeps briefly between polls once idle.
fn poll(mut l: PollLoop, stop: &AtomicBool) {
    let mut idle = 0u32;
    while !stop.load(Ordering::Relaxed) {
        if l.poll_once() > 0 {
            idle = 0;
        } else if idle < IDLE_POLLS {
            idle += 1;
            std::hint::spin_loop();
        } else {
            std::thread::sleep(IDLE_SLEEP);
        }
    }
    debug!(id = l.id(), "poll loop stopped");
}

/// Hands IKE received on the ports to the control plane until `stop`.
fn forward_ike(rx: Receiver<IkeDatagram>, sink: IkeSink, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        match rx.recv_timeout(IKE_WAIT) {
            Ok(d) => sink(d.local, d.remote, d.payload),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

fn esp_json(c: &CountersSnapshot) -> Value {
    let drops: Map<String, Value> = DropReason::ALL
        .iter()
        .filter(|r| c.dropped(**r) != 0)
        .map(|r| (r.name().to_string(), json!(c.dropped(*r))))
        .collect();
    json!({ "packets": c.packets, "bytes": c.bytes, "drops": drops })
}

/// `ironsa stats` JSON of the backend's counters.
fn stats_json(c: &DpdkCounters) -> Value {
    let ports: Vec<Value> = c
        .ports
        .iter()
        .map(|p| {
            let s = &p.stats;
            let queues: Vec<Value> = (0..s.q_ipackets.len().max(s.q_opackets.len()))
                .map(|q| {
                    json!({
                        "queue": q,
                        "rx_packets": s.q_ipackets.get(q).copied().unwrap_or(0),
                        "tx_packets": s.q_opackets.get(q).copied().unwrap_or(0),
                        "errors": s.q_errors.get(q).copied().unwrap_or(0),
                    })
                })
                .filter(|q| q["rx_packets"] != 0 || q["tx_packets"] != 0 || q["errors"] != 0)
                .collect();
            json!({
                "name": p.name,
                "id": p.id,
                "rx_packets": s.ipackets,
                "tx_packets": s.opackets,
                "rx_bytes": s.ibytes,
                "tx_bytes": s.obytes,
                "rx_missed": s.imissed,
                "rx_errors": s.ierrors,
                "tx_errors": s.oerrors,
                "rx_nombuf": s.rx_nombuf,
                "queues": queues,
            })
        })
        .collect();
    let loops: Vec<Value> = c
        .loops
        .iter()
        .map(|l| {
            let mut m: Map<String, Value> =
                l.io.fields()
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), json!(v)))
                    .collect();
            m.insert("id".into(), json!(l.id));
            m.insert("esp_in".into(), esp_json(&l.inbound));
            m.insert("esp_out".into(), esp_json(&l.outbound));
            Value::Object(m)
        })
        .collect();
    json!({
        "ports": ports,
        "loops": loops,
        "crypto_device": c.crypto_device,
        "crypto_cpu_fallback": c.total(|l| l.crypto_cpu_fallback),
        "inline_cpu_fallback": c.total(|l| l.inline_cpu_fallback),
        "inline_sas_offloaded": c.inline_sas_offloaded,
        "inline_sas_fallback": c.inline_sas_fallback,
    })
}

impl DataPlane for DpdkDataPlane {
    fn set_child_settings(&self, settings: ChildSettings) {
        self.children.set_settings(settings);
    }

    fn install(&self, child: &ChildSaInstall) {
        self.children.install(child);
    }

    fn remove(&self, spi_in: u32, _spi_out: u32) {
        self.children.remove(spi_in);
    }

    fn move_children(
        &self,
        spis_in: &[u32],
        local: std::net::SocketAddr,
        remote: std::net::SocketAddr,
        udp_encap: bool,
    ) {
        self.children.move_children(spis_in, local, remote, udp_encap);
    }

    fn esp_received(&self, _local: std::net::SocketAddr, _remote: std::net::SocketAddr, _packet: &[u8]) {
        // ESP arrives on the DPDK ports; the control plane has no sockets.
    }

    fn child_counters(&self, child: &control::ike_sa::ChildSa) -> Option<ChildCounters> {
        self.children.counters(child)
    }

    fn esp_sa_counters(
        &self,
        spi_in: u32,
        local_ts: &[control::wire::ikev2::TrafficSelector],
        remote_ts: &[control::wire::ikev2::TrafficSelector],
    ) -> Option<ChildCounters> {
        self.children.counters_of(spi_in, local_ts, remote_ts)
    }

    fn spi_allocator(&self) -> Arc<dyn SpiAllocator> {
        self.children.spi_allocator()
    }

    fn set_spi_node(&self, node: ironsa::cluster::NodeId) {
        self.children.set_spi_node(node);
    }

    fn esp_seq_out(&self, spi_in: u32) -> Option<u64> {
        self.children.outbound_seq(spi_in)
    }

    fn set_esp_seq_out(&self, spi_in: u32, seq: u64) -> bool {
        self.children.set_outbound_seq(spi_in, seq)
    }

    fn esp_seq_in(&self, spi_in: u32) -> Option<u64> {
        self.children.inbound_seq(spi_in)
    }

    fn set_esp_seq_in(&self, spi_in: u32, top: u64) -> bool {
        self.children.resume_inbound_seq(spi_in, top)
    }

    fn claim_spi(&self, spi_in: u32) -> bool {
        self.children.claim_spi(spi_in)
    }

    fn metrics(&self) -> String {
        let mut out = self.children.sa_gauge();
        out.push_str(&format!(
            "# HELP ironsa_dpdk_offloaded_sas SAs on the crypto device\n# TYPE ironsa_dpdk_offloaded_sas gauge\nironsa_dpdk_offloaded_sas {}\n",
            self.backend.offloaded_sas()
        ));
        out.push_str(&self.backend.counters().prometheus());
        out
    }

    fn stats(&self) -> Option<Value> {
        let mut v = stats_json(&self.backend.counters());
        if let Value::Object(m) = &mut v {
            m.insert("backend".into(), json!("dpdk"));
            m.insert("profile".into(), json!(self.backend.profile().name));
            m.insert("offloaded_sas".into(), json!(self.backend.offloaded_sas()));
            let inline: Vec<Value> = self
                .backend
                .inline_status()
                .iter()
                .map(|s| json!({ "port": s.port, "capable": s.capable }))
                .collect();
            m.insert("inline".into(), json!(inline));
            let cpus = &self.backend.profile().cpus;
            m.insert("cpus".into(), json!({ "poll": cpus.poll, "control": cpus.control }));
            if let Some(Value::Array(loops)) = m.get_mut("loops") {
                for l in loops {
                    let cpu = l["id"].as_u64().and_then(|id| cpus.poll.get(usize::try_from(id).ok()?));
                    l["cpu"] = json!(cpu);
                }
            }
        }
        Some(v)
    }

    fn carries_ike(&self) -> bool {
        true
    }

    fn send_ike(&self, t: Transmit) -> Result<(), DataPlaneError> {
        Ok(self.ike_out.send(IkeDatagram {
            local: t.local,
            remote: t.remote,
            payload: t.data,
        })?)
    }

    fn shutdown(&self) {
        self.stop.store(true, Ordering::Relaxed);
        crate::daemon::join_threads(&self.threads);
        info!("DPDK fastpath stopped");
    }
}

impl Drop for DpdkDataPlane {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fastpath::dpdk::counters::{LoopCounters, LoopReport, PortCounters};

    #[test]
    fn stats_json_has_ports_queues_loops_and_fallbacks() {
        let io = LoopCounters::default();
        LoopCounters::add(&io.rx_frames, 9);
        LoopCounters::add(&io.crypto_cpu_fallback, 2);
        LoopCounters::add(&io.inline_cpu_fallback, 3);
        let mut inbound = CountersSnapshot {
            packets: 4,
            bytes: 400,
            ..Default::default()
        };
        inbound.drops[DropReason::Replay as usize] = 1;
        let c = DpdkCounters {
            ports: vec![PortCounters {
                name: "net_af_packet0".into(),
                id: 0,
                stats: ffi::PortStats {
                    ipackets: 9,
                    q_ipackets: vec![9, 0],
                    q_opackets: vec![0, 0],
                    q_errors: vec![0, 0],
                    ..Default::default()
                },
            }],
            loops: vec![LoopReport {
                id: 0,
                io: io.snapshot(),
                inbound,
                outbound: CountersSnapshot::default(),
            }],
            crypto_device: Some("crypto_aesni_gcm0".into()),
            inline_sas_offloaded: 1,
            inline_sas_fallback: 5,
        };
        let v = stats_json(&c);
        assert_eq!(v["ports"][0]["name"], "net_af_packet0");
        assert_eq!(v["ports"][0]["rx_packets"], 9);
        assert_eq!(v["ports"][0]["queues"].as_array().map(Vec::len), Some(1));
        assert_eq!(v["ports"][0]["queues"][0]["rx_packets"], 9);
        assert_eq!(v["loops"][0]["rx_frames"], 9);
        assert_eq!(v["loops"][0]["esp_in"]["packets"], 4);
        assert_eq!(v["loops"][0]["esp_in"]["drops"]["replay"], 1);
        assert_eq!(v["crypto_device"], "crypto_aesni_gcm0");
        assert_eq!(v["crypto_cpu_fallback"], 2);
        assert_eq!(v["inline_cpu_fallback"], 3);
        assert_eq!(v["inline_sas_offloaded"], 1);
        assert_eq!(v["inline_sas_fallback"], 5);
    }
}
