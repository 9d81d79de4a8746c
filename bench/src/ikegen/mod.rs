//! `ikegen`: ironsa's IKEv2 handshake generator.
//!
//! An event-driven initiator ([`engine`]) that drives many IKE SAs from many
//! UDP sockets and source addresses through the sans-IO IKE core
//! (`control::endpoint::Endpoint`), with scenarios to establish/hold/rekey/tear
//! down tunnels, to flood a responder with IKE_SA_INIT requests, or both; and
//! a [`report::Report`] with counts, failure reasons, latency percentiles,
//! rates and the generator's own CPU use. [`responder`] is a small in-process
//! ironsa responder for self-tests.
//!
//! ```no_run
//! use ironsa_bench::ikegen::{options::Settings, run};
//! let cfg = Settings { remote: Some("127.0.0.1:500".parse().unwrap()), tunnels: Some(100), ..Default::default() }
//!     .resolve()
//!     .unwrap();
//! let report = run(&cfg, None).unwrap();
//! println!("{}", report.render_text());
//! ```

pub mod cpu;
pub mod engine;
pub mod esp;
pub mod gateway;
pub mod net;
pub mod options;
pub mod plot;
pub mod report;
pub mod responder;
pub mod template;
pub mod wire;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use engine::{EngineError, LiveCounters, SocketPlan, Worker, WorkerResult};
use options::{GenConfig, Mode};
use report::{CpuReport, FloodReport, HoldReport, Percentiles, Report, TeardownReport, TimelineBucket};

/// A snapshot of a running generator, for progress displays.
#[derive(Clone, Debug, Default)]
pub struct Progress {
    /// Seconds since the start.
    pub elapsed_secs: f64,
    /// Negotiations started.
    pub attempted: u64,
    /// IKE SAs established.
    pub established: u64,
    /// Negotiations failed.
    pub failed: u64,
    /// First CHILD_SAs installed.
    pub children: u64,
    /// Flood packets sent.
    pub flood_sent: u64,
    /// IKE SAs deleted in the teardown.
    pub deleted: u64,
}

/// Distributes sockets over workers: socket k goes to worker k mod threads.
fn plan_sockets(cfg: &GenConfig) -> Vec<SocketPlan> {
    let mut plans = vec![SocketPlan::default(); cfg.threads];
    let addrs = |ips: &[std::net::IpAddr], fixed_port: bool| -> Vec<SocketAddr> {
        let mut v = Vec::with_capacity(ips.len() * cfg.ports_per_source);
        for p in 0..cfg.ports_per_source {
            for ip in ips {
                let port = if fixed_port && cfg.source_port != 0 {
                    cfg.source_port + p as u16
                } else {
                    0
                };
                v.push(SocketAddr::new(*ip, port));
            }
        }
        v
    };
    if cfg.mode != Mode::Flood {
        for (k, a) in addrs(&cfg.sources, true).into_iter().enumerate() {
            plans[k % cfg.threads].legit.push(a);
        }
    }
    if cfg.mode != Mode::Establish {
        // Flood sockets use the configured port only when they are the only sockets.
        for (k, a) in addrs(&cfg.flood_sources, cfg.mode == Mode::Flood)
            .into_iter()
            .enumerate()
        {
            plans[k % cfg.threads].flood.push(a);
        }
    }
    plans
}

/// Runs the generator to the end; `progress` (if any) is called about every 100 ms.
pub fn run(cfg: &GenConfig, progress: Option<&mut dyn FnMut(&Progress)>) -> Result<Report, EngineError> {
    run_until(cfg, progress, &AtomicBool::new(false))
}

/// Like [`run`], but ends early (with a report of what happened so far) once `stop` is set.
pub fn run_until(
    cfg: &GenConfig,
    progress: Option<&mut dyn FnMut(&Progress)>,
    stop: &AtomicBool,
) -> Result<Report, EngineError> {
    let cfg = Arc::new(cfg.clone());
    let live = Arc::new(LiveCounters::default());
    let run_start = Instant::now();
    let plans = plan_sockets(&cfg);
    let gateway_before = cfg.gateway_metrics.map(gateway::GatewayEsp::scrape).transpose()?;
    let sockets = plans.iter().map(|p| p.legit.len()).sum();
    // Bind everything before starting, so a bad source address fails the run at once.
    let mut workers = Vec::with_capacity(cfg.threads);
    for (id, plan) in plans.into_iter().enumerate() {
        workers.push(Worker::new(id, cfg.clone(), plan, live.clone(), run_start)?);
    }
    let main_cpu = cpu::CpuTime::thread();
    let handles: Vec<_> = workers
        .into_iter()
        .enumerate()
        .map(|(id, w)| {
            std::thread::Builder::new()
                .name(format!("ikegen-{id}"))
                .spawn(move || w.run())
                .map_err(EngineError::Io)
        })
        .collect::<Result<_, _>>()?;
    let mut progress = progress;
    let snapshot = |live: &LiveCounters| Progress {
        elapsed_secs: run_start.elapsed().as_secs_f64(),
        attempted: live.attempted.load(Ordering::Relaxed),
        established: live.established.load(Ordering::Relaxed),
        failed: live.failed.load(Ordering::Relaxed),
        children: live.children.load(Ordering::Relaxed),
        flood_sent: live.flood_sent.load(Ordering::Relaxed),
        deleted: live.deleted.load(Ordering::Relaxed),
    };
    while !handles.iter().all(|h| h.is_finished()) {
        std::thread::sleep(Duration::from_millis(100));
        if stop.load(Ordering::Relaxed) {
            live.stop.store(true, Ordering::Relaxed);
        }
        if let Some(p) = progress.as_mut() {
            p(&snapshot(&live));
        }
    }
    let mut results = Vec::with_capacity(handles.len());
    for (id, h) in handles.into_iter().enumerate() {
        match h.join() {
            Ok(r) => results.push(r?),
            Err(_) => return Err(EngineError::WorkerPanicked(id)),
        }
    }
    if let Some(p) = progress.as_mut() {
        p(&snapshot(&live));
    }
    let wall = run_start.elapsed();
    let main_cpu = cpu::CpuTime::thread().since(&main_cpu);
    let mut report = merge(&cfg, sockets, results, wall, main_cpu);
    if let (Some(addr), Some(before)) = (cfg.gateway_metrics, gateway_before) {
        let received = gateway_settled(addr)?.since(&before);
        if let Some(e) = report.esp.as_mut() {
            e.delivered = Some(received.packets_in);
            e.lost = Some(e.packets.saturating_sub(received.packets_in));
            e.gateway_drops = received.drops_in;
        }
    }
    Ok(report)
}

/// The gateway's counters once the last packets sent have been processed:
/// read until the decrypted count stops growing (at most about 2 s).
fn gateway_settled(addr: SocketAddr) -> Result<gateway::GatewayEsp, EngineError> {
    let mut last = gateway::GatewayEsp::scrape(addr)?;
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(100));
        let now = gateway::GatewayEsp::scrape(addr)?;
        if now.packets_in == last.packets_in {
            return Ok(now);
        }
        last = now;
    }
    Ok(last)
}

fn add_map(into: &mut std::collections::BTreeMap<String, u64>, from: &std::collections::BTreeMap<String, u64>) {
    for (k, v) in from {
        *into.entry(k.clone()).or_default() += v;
    }
}

fn merge(
    cfg: &GenConfig,
    sockets: usize,
    results: Vec<WorkerResult>,
    wall: Duration,
    main_cpu: cpu::CpuTime,
) -> Report {
    let mut r = Report {
        mode: Some(cfg.mode),
        remote: cfg.remote.to_string(),
        ike: cfg.ike_text.clone(),
        threads: cfg.threads,
        sockets,
        tunnels: if cfg.mode == Mode::Flood { 0 } else { cfg.tunnels },
        wall_secs: wall.as_secs_f64(),
        ..Report::default()
    };
    let mut ike = results.first().map(|w| w.ike_latency.clone());
    let mut child = results.first().map(|w| w.child_latency.clone());
    let mut eap = results.first().map(|w| w.eap_latency.clone());
    if let Some(h) = eap.as_mut() {
        h.reset();
    }
    let mut vips = std::collections::HashSet::new();
    let (mut vip_assigned, mut vip_refused) = (0, 0);
    if let Some(h) = ike.as_mut() {
        h.reset();
    }
    if let Some(h) = child.as_mut() {
        h.reset();
    }
    let mut first: Option<Instant> = None;
    let mut last: Option<Instant> = None;
    let mut cpu = main_cpu;
    let mut hold: Option<HoldReport> = None;
    let mut teardown: Option<TeardownReport> = None;
    let mut flood: Option<FloodReport> = None;
    let mut esp: Option<esp::EspReport> = None;
    let mut timeline: Vec<TimelineBucket> = Vec::new();
    for w in &results {
        r.attempted += w.attempted;
        r.established += w.established;
        add_map(&mut r.failures, &w.failures);
        r.children_installed += w.children;
        add_map(&mut r.child_failures, &w.child_failures);
        r.cookies_received += w.cookies;
        r.retransmissions += w.retransmissions;
        r.send_errors += w.send_errors;
        r.max_in_flight += w.max_in_flight as u64;
        if let Some(h) = ike.as_mut() {
            let _ = h.add(&w.ike_latency);
        }
        if let Some(h) = child.as_mut() {
            let _ = h.add(&w.child_latency);
        }
        if let Some(h) = eap.as_mut() {
            let _ = h.add(&w.eap_latency);
        }
        vip_assigned += w.vip_assigned;
        vip_refused += w.vip_refused_up;
        vips.extend(w.vips.iter().copied());
        first = match (first, w.first_initiate) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        last = match (last, w.last_up) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        cpu = cpu.plus(&w.cpu);
        if let Some(wh) = &w.hold {
            let h = hold.get_or_insert_with(HoldReport::default);
            h.secs = h.secs.max(wh.secs);
            h.dpd_delay_secs = wh.dpd_delay_secs;
            h.rekeys_ike_started += wh.rekeys_ike_started;
            h.rekeys_ike_done += wh.rekeys_ike_done;
            h.rekeys_child_started += wh.rekeys_child_started;
            h.rekeys_child_done += wh.rekeys_child_done;
            h.rekeys_ike_by_peer += wh.rekeys_ike_by_peer;
            h.rekeys_child_by_peer += wh.rekeys_child_by_peer;
            add_map(&mut h.lost, &wh.lost);
        }
        if let Some(wt) = &w.teardown {
            let t = teardown.get_or_insert_with(TeardownReport::default);
            t.requested += wt.requested;
            t.deleted += wt.deleted;
            t.secs = t.secs.max(wt.secs);
            add_map(&mut t.failed, &wt.failed);
        }
        if let Some(we) = &w.esp {
            let e = esp.get_or_insert_with(esp::EspReport::default);
            e.tunnels += we.tunnels;
            e.packets += we.packets;
            e.bytes += we.bytes;
            e.errors += we.errors;
            e.rekeys_followed += we.rekeys_followed;
            e.size = we.size;
            e.secs = e.secs.max(we.secs);
        }
        if let Some(wf) = &w.flood {
            let f = flood.get_or_insert_with(FloodReport::default);
            f.sent += wf.sent;
            f.send_errors += wf.send_errors;
            f.secs = f.secs.max(wf.secs);
            f.cookies += wf.cookies;
            f.accepted += wf.accepted;
            f.unanswered += wf.unanswered;
            add_map(&mut f.rejected, &wf.rejected);
        }
        for (i, b) in w.timeline.iter().enumerate() {
            if timeline.len() <= i {
                timeline.resize_with(i + 1, TimelineBucket::default);
                timeline[i].t = b.t;
            }
            let t = &mut timeline[i];
            let total = t.established + b.established;
            if total > 0 {
                t.mean_latency_ms = (t.mean_latency_ms * t.established as f64
                    + b.mean_latency_ms * b.established as f64)
                    / total as f64;
            }
            t.established = total;
            t.failed += b.failed;
            t.max_latency_ms = t.max_latency_ms.max(b.max_latency_ms);
            t.flood_sent += b.flood_sent;
        }
    }
    for (i, b) in timeline.iter_mut().enumerate() {
        b.t = i as f64 * engine::BUCKET.as_secs_f64();
    }
    r.failed = r.failures.values().sum();
    r.success_rate = if r.attempted > 0 {
        r.established as f64 / r.attempted as f64
    } else {
        0.0
    };
    if let (Some(a), Some(b)) = (first, last) {
        r.establish_secs = b.saturating_duration_since(a).as_secs_f64();
        if r.establish_secs > 0.0 {
            r.handshakes_per_sec = r.established as f64 / r.establish_secs;
        }
    }
    r.latency_ike_ms = ike.as_ref().map(Percentiles::from_micros).unwrap_or_default();
    r.latency_child_ms = child.as_ref().map(Percentiles::from_micros).unwrap_or_default();
    if cfg.eap.is_some() {
        let latency_ms = eap.as_ref().map(Percentiles::from_micros).unwrap_or_default();
        r.eap = Some(report::EapReport {
            method: "eap-mschapv2".into(),
            round_trips: latency_ms.count,
            round_trips_per_tunnel: latency_ms.count as f64 / r.established.max(1) as f64,
            latency_ms,
        });
    }
    if cfg.vip {
        let refused_by_notify: u64 = ["INTERNAL_ADDRESS_FAILURE", "FAILED_CP_REQUIRED"]
            .iter()
            .filter_map(|k| r.failures.get(*k))
            .sum();
        r.addresses = Some(report::AddressReport {
            requested: r.attempted,
            assigned: vip_assigned,
            unique: vips.len() as u64,
            refused: vip_refused + refused_by_notify,
        });
    }
    if let Some(f) = flood.as_mut() {
        f.rate = if f.secs > 0.0 { f.sent as f64 / f.secs } else { 0.0 };
    }
    r.hold = hold;
    r.teardown = teardown;
    r.flood = flood;
    if let Some(e) = esp.as_mut() {
        e.mbps = if e.secs > 0.0 {
            e.bytes as f64 * 8.0 / e.secs / 1e6
        } else {
            0.0
        };
    }
    r.esp = esp;
    r.cpu = CpuReport::new(cpu, r.wall_secs, cfg.threads);
    if cpu.total_secs() > 0.0 {
        r.handshakes_per_cpu_sec = r.established as f64 / cpu.total_secs();
    }
    r.timeline = timeline;
    r.load_average = report::load_average();
    r
}
