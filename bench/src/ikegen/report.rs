//! The result of a run: counts, failure reasons, latency percentiles, rates,
//! CPU use; rendered as text for people or as one JSON object.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::cpu::CpuTime;
use super::options::Mode;

/// Latency percentiles in milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Number of samples.
    pub count: u64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Maximum.
    pub max: f64,
}

impl Percentiles {
    /// Summarises a histogram of microseconds.
    pub fn from_micros(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            count: h.len(),
            mean: h.mean() / 1000.0,
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }

    /// True if p50 <= p90 <= p99 <= p99.9 <= max.
    pub fn is_monotonic(&self) -> bool {
        self.p50 <= self.p90 && self.p90 <= self.p99 && self.p99 <= self.p999 && self.p999 <= self.max
    }
}

/// What happened while the tunnels were held.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HoldReport {
    /// Seconds held.
    pub secs: f64,
    /// DPD delay configured (seconds, 0 = off).
    pub dpd_delay_secs: f64,
    /// IKE SA rekeys started.
    pub rekeys_ike_started: u64,
    /// IKE SA rekeys completed.
    pub rekeys_ike_done: u64,
    /// CHILD_SA rekeys started.
    pub rekeys_child_started: u64,
    /// CHILD_SA rekeys completed.
    pub rekeys_child_done: u64,
    /// IKE SA rekeys the responder started (and completed).
    #[serde(default)]
    pub rekeys_ike_by_peer: u64,
    /// CHILD_SA rekeys the responder started (and completed).
    #[serde(default)]
    pub rekeys_child_by_peer: u64,
    /// Established tunnels that went down on their own (DPD timeout, peer delete), by reason.
    pub lost: BTreeMap<String, u64>,
}

/// The DELETE of every tunnel at the end.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TeardownReport {
    /// DELETEs started.
    pub requested: u64,
    /// IKE SAs deleted (the peer answered).
    pub deleted: u64,
    /// IKE SAs that went down otherwise (timeout), by reason.
    pub failed: BTreeMap<String, u64>,
    /// Seconds the teardown took.
    pub secs: f64,
}

/// The flood part of a flood or mixed run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FloodReport {
    /// IKE_SA_INIT requests sent.
    pub sent: u64,
    /// Requests the kernel refused (buffer full, ...).
    pub send_errors: u64,
    /// Seconds the flood ran.
    pub secs: f64,
    /// Achieved requests per second.
    pub rate: f64,
    /// Responses with a COOKIE demand.
    pub cookies: u64,
    /// Real responses (the responder kept half-open state).
    pub accepted: u64,
    /// Error responses, by notify.
    pub rejected: BTreeMap<String, u64>,
    /// Requests never answered.
    pub unanswered: u64,
}

/// CPU use of one part of the process.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuReport {
    /// User-mode seconds.
    pub user_secs: f64,
    /// Kernel-mode seconds.
    pub sys_secs: f64,
    /// (user + sys) / wall time, in percent (100 = one core).
    pub percent_of_wall: f64,
    /// Cores the machine has.
    pub cores: usize,
    /// Threads that did the work.
    pub threads: usize,
    /// True if those threads were busy most of the time: the generator, not the
    /// responder, may have set the pace.
    pub saturated: bool,
}

impl CpuReport {
    /// From a measurement over `wall` seconds by `threads` threads.
    pub fn new(t: CpuTime, wall_secs: f64, threads: usize) -> Self {
        let pct = if wall_secs > 0.0 {
            100.0 * t.total_secs() / wall_secs
        } else {
            0.0
        };
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        Self {
            user_secs: t.user_secs,
            sys_secs: t.sys_secs,
            percent_of_wall: pct,
            cores,
            threads,
            saturated: pct >= 85.0 * threads.min(cores) as f64,
        }
    }
}

/// What the in-process self-test responder counted.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ResponderReport {
    /// IKE SAs it established.
    pub established: u64,
    /// CHILD_SAs it installed (first children and rekeys).
    pub children: u64,
    /// IKE_SA_INIT requests that reached its admission control.
    pub init_requests: u64,
    /// COOKIE demands it sent.
    pub cookies_sent: u64,
    /// Its CPU use.
    pub cpu: CpuReport,
}

/// The EAP conversations of EAP road warriors (`--eap-user`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EapReport {
    /// The method the clients ran.
    pub method: String,
    /// EAP round trips of all tunnels: the IKE_AUTH exchanges that carried
    /// EAP (every one but the final AUTH exchange).
    pub round_trips: u64,
    /// Mean EAP round trips per established tunnel.
    pub round_trips_per_tunnel: f64,
    /// One EAP round trip: our IKE_AUTH request → the responder's answer.
    pub latency_ms: Percentiles,
}

/// Virtual IPs asked for with `--vip`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AddressReport {
    /// Tunnels that asked for an address.
    pub requested: u64,
    /// Tunnels up with an address.
    pub assigned: u64,
    /// Distinct addresses among them (less than `assigned`: the responder
    /// handed one address to several clients).
    pub unique: u64,
    /// Tunnels refused an address: up without one, or refused with
    /// INTERNAL_ADDRESS_FAILURE / FAILED_CP_REQUIRED.
    pub refused: u64,
}

/// One time bucket of the run (for plots).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TimelineBucket {
    /// Start of the bucket, seconds since the run started.
    pub t: f64,
    /// IKE SAs established in the bucket.
    pub established: u64,
    /// Negotiations failed in the bucket.
    pub failed: u64,
    /// Mean IKE latency of those established, ms.
    pub mean_latency_ms: f64,
    /// Highest IKE latency of those established, ms.
    pub max_latency_ms: f64,
    /// Flood packets sent in the bucket.
    pub flood_sent: u64,
}

/// Everything a run measured.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Scenario.
    pub mode: Option<Mode>,
    /// Responder address.
    pub remote: String,
    /// IKE proposals.
    pub ike: String,
    /// Worker threads.
    pub threads: usize,
    /// Sockets of legitimate clients.
    pub sockets: usize,
    /// Tunnels asked for.
    pub tunnels: u64,
    /// Negotiations started.
    pub attempted: u64,
    /// IKE SAs established.
    pub established: u64,
    /// Negotiations that failed (attempted - established), see `failures`.
    pub failed: u64,
    /// Failed negotiations by reason (TIMEOUT, NO_PROPOSAL_CHOSEN, AUTHENTICATION_FAILED, UNFINISHED, ...).
    pub failures: BTreeMap<String, u64>,
    /// established / attempted (in mixed mode: of the legitimate clients).
    pub success_rate: f64,
    /// First CHILD_SAs installed.
    pub children_installed: u64,
    /// First CHILD_SAs that failed, by reason.
    pub child_failures: BTreeMap<String, u64>,
    /// Seconds from the first initiation to the last establishment.
    pub establish_secs: f64,
    /// established / establish_secs.
    pub handshakes_per_sec: f64,
    /// established / CPU seconds of the generator: the rate one generator core
    /// sustains, independent of other load on the machine.
    pub handshakes_per_cpu_sec: f64,
    /// Latency initiate → IKE SA up.
    pub latency_ike_ms: Percentiles,
    /// Latency initiate → first CHILD_SA installed.
    pub latency_child_ms: Percentiles,
    /// COOKIE demands received by legitimate clients.
    pub cookies_received: u64,
    /// Requests retransmitted by legitimate clients.
    pub retransmissions: u64,
    /// Most negotiations in flight at once (sum of the workers' maxima).
    pub max_in_flight: u64,
    /// Datagrams the kernel refused to send.
    pub send_errors: u64,
    /// The hold phase, if any.
    pub hold: Option<HoldReport>,
    /// The teardown, if asked for.
    pub teardown: Option<TeardownReport>,
    /// The flood, in flood and mixed modes.
    pub flood: Option<FloodReport>,
    /// ESP traffic sent through the tunnels while holding.
    #[serde(default)]
    pub esp: Option<super::esp::EspReport>,
    /// EAP round trips of EAP road warriors.
    #[serde(default)]
    pub eap: Option<EapReport>,
    /// Virtual IP assignment, when asked for.
    #[serde(default)]
    pub addresses: Option<AddressReport>,
    /// Seconds the whole run took.
    pub wall_secs: f64,
    /// CPU use of the generator's threads.
    pub cpu: CpuReport,
    /// The in-process self-test responder's view, if one ran.
    pub responder: Option<ResponderReport>,
    /// The machine's 1-minute load average at the end of the run (from
    /// /proc/loadavg): above the core count, other processes competed for the CPU.
    pub load_average: Option<f64>,
    /// Per-bucket timeline (not in the JSON output; used for `--plot`).
    #[serde(default, skip_serializing)]
    pub timeline: Vec<TimelineBucket>,
}

fn reasons(out: &mut String, title: &str, m: &BTreeMap<String, u64>) {
    if m.is_empty() {
        return;
    }
    let _ = writeln!(out, "  {title}:");
    let mut v: Vec<_> = m.iter().collect();
    v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    for (k, n) in v {
        let _ = writeln!(out, "    {n:>10}  {k}");
    }
}

fn pct_line(out: &mut String, title: &str, p: &Percentiles) {
    if p.count == 0 {
        return;
    }
    let _ = writeln!(
        out,
        "  {title:<22} p50 {:>8.2}  p90 {:>8.2}  p99 {:>8.2}  p99.9 {:>8.2}  max {:>8.2} ms",
        p.p50, p.p90, p.p99, p.p999, p.max
    );
}

/// The 1-minute load average, if /proc/loadavg can be read.
pub fn load_average() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

impl Report {
    /// True if the counts add up: established + failed == attempted, failures sum to failed.
    pub fn is_consistent(&self) -> bool {
        self.established + self.failed == self.attempted
            && self.failures.values().sum::<u64>() == self.failed
            && self.latency_ike_ms.is_monotonic()
            && self.latency_child_ms.is_monotonic()
            && self.eap.as_ref().is_none_or(|e| e.latency_ms.is_monotonic())
            && self
                .addresses
                .as_ref()
                .is_none_or(|a| a.unique <= a.assigned && a.assigned + a.refused <= a.requested)
    }

    /// The human-readable report.
    pub fn render_text(&self) -> String {
        let mut o = String::new();
        let mode = match self.mode {
            Some(Mode::Establish) | None => "establish",
            Some(Mode::Flood) => "flood",
            Some(Mode::Mixed) => "mixed",
        };
        let _ = writeln!(
            o,
            "ikegen {mode} → {}  ({}, {} threads, {} sockets)",
            self.remote, self.ike, self.threads, self.sockets
        );
        if self.mode != Some(Mode::Flood) {
            let _ = writeln!(
                o,
                "  attempted {:>10}   established {:>10}   failed {:>8}   success {:.2}%",
                self.attempted,
                self.established,
                self.failed,
                100.0 * self.success_rate
            );
            reasons(&mut o, "failures", &self.failures);
            let _ = writeln!(o, "  children installed {:>10}", self.children_installed);
            reasons(&mut o, "child failures", &self.child_failures);
            let _ = writeln!(
                o,
                "  rate {:>10.1} handshakes/s over {:.2} s ({:.0} per generator CPU-second)",
                self.handshakes_per_sec, self.establish_secs, self.handshakes_per_cpu_sec
            );
            let _ = writeln!(
                o,
                "  max in flight {}   cookies received {}   retransmissions {}   send errors {}",
                self.max_in_flight, self.cookies_received, self.retransmissions, self.send_errors
            );
            pct_line(&mut o, "latency → IKE SA up", &self.latency_ike_ms);
            pct_line(&mut o, "latency → CHILD_SA", &self.latency_child_ms);
            if let Some(e) = &self.eap {
                let _ = writeln!(
                    o,
                    "  {}: {} EAP round trips ({:.1} per tunnel)",
                    e.method, e.round_trips, e.round_trips_per_tunnel
                );
                pct_line(&mut o, "EAP round trip", &e.latency_ms);
            }
            if let Some(a) = &self.addresses {
                let _ = writeln!(
                    o,
                    "  virtual IPs: requested {}  assigned {}  unique {}  refused {}",
                    a.requested, a.assigned, a.unique, a.refused
                );
            }
        }
        if let Some(h) = &self.hold {
            let _ = writeln!(
                o,
                "  hold {:.1} s (dpd {:.0} s): IKE rekeys {}/{}  CHILD rekeys {}/{} (done/started); by the responder: IKE {}  CHILD {}",
                h.secs,
                h.dpd_delay_secs,
                h.rekeys_ike_done,
                h.rekeys_ike_started,
                h.rekeys_child_done,
                h.rekeys_child_started,
                h.rekeys_ike_by_peer,
                h.rekeys_child_by_peer
            );
            reasons(&mut o, "lost while held", &h.lost);
        }
        if let Some(t) = &self.teardown {
            let _ = writeln!(
                o,
                "  teardown: {} of {} deleted in {:.2} s",
                t.deleted, t.requested, t.secs
            );
            reasons(&mut o, "teardown failures", &t.failed);
        }
        if let Some(e) = &self.esp {
            let _ = writeln!(
                o,
                "  ESP: {} packets of {} B through {} tunnels in {:.2} s = {:.0} Mbit/s sent ({} errors, {} rekeys followed)",
                e.packets, e.size, e.tunnels, e.secs, e.mbps, e.errors, e.rekeys_followed
            );
            if let (Some(delivered), Some(lost)) = (e.delivered, e.lost) {
                let pct = |n: u64| 100.0 * n as f64 / e.packets.max(1) as f64;
                let _ = writeln!(
                    o,
                    "  ESP at the gateway: sent {}  delivered {} ({:.2}%)  lost {} ({:.2}%)",
                    e.packets,
                    delivered,
                    pct(delivered),
                    lost,
                    pct(lost)
                );
                reasons(&mut o, "gateway ESP drops (inbound, all traffic)", &e.gateway_drops);
            } else {
                let _ = writeln!(
                    o,
                    "  ESP at the gateway: not measured (--gateway-metrics HOST:PORT reads what arrived)"
                );
            }
        }
        if let Some(f) = &self.flood {
            let _ = writeln!(
                o,
                "  flood: {} IKE_SA_INIT sent in {:.1} s ({:.0}/s), {} send errors",
                f.sent, f.secs, f.rate, f.send_errors
            );
            let _ = writeln!(
                o,
                "         answered: {} cookie, {} accepted (half-open), {} rejected; {} unanswered",
                f.cookies,
                f.accepted,
                f.rejected.values().sum::<u64>(),
                f.unanswered
            );
            reasons(&mut o, "rejections", &f.rejected);
        }
        let c = &self.cpu;
        let _ = writeln!(
            o,
            "  generator CPU: user {:.2} s + sys {:.2} s = {:.0}% of {:.2} s wall ({} threads, {} cores){}",
            c.user_secs,
            c.sys_secs,
            c.percent_of_wall,
            self.wall_secs,
            c.threads,
            c.cores,
            if c.saturated {
                "  ← generator saturated: results may be limited by the generator"
            } else {
                ""
            }
        );
        if let Some(l) = self.load_average {
            if l > c.cores as f64 {
                let _ = writeln!(
                    o,
                    "  machine load average {l:.1} on {} cores: other processes competed for the CPU",
                    c.cores
                );
            }
        }
        if let Some(r) = &self.responder {
            let _ = writeln!(
                o,
                "  responder: established {}  children {}  IKE_SA_INIT requests {}  cookies sent {}",
                r.established, r.children, r.init_requests, r.cookies_sent
            );
            let _ = writeln!(
                o,
                "  responder CPU: user {:.2} s + sys {:.2} s = {:.0}% ({} threads)",
                r.cpu.user_secs, r.cpu.sys_secs, r.cpu.percent_of_wall, r.cpu.threads
            );
        }
        o
    }
}
