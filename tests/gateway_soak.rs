//! The `ironsa` daemon under sustained load from the bundled generator
//! (`ikegen` as a library), with the gateway's own counters as the judge:
//! - ESP through tunnels whose CHILD_SAs are rekeyed by both sides keeps
//!   arriving (the generator follows every rekey to the new outbound SA);
//! - a short soak: a few hundred tunnels held with IKE and CHILD_SA rekeys
//!   from both sides, DPD and ESP lose no SA and no traffic, and the
//!   gateway's memory stays flat.
//!
//! `IRONSA_SOAK_TUNNELS` and `IRONSA_SOAK_SECS` scale the soak up (default
//! 300 tunnels held 30 s). Needs root (TUN device, raw ESP socket).

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use ironsa_bench::ikegen::options::Settings;
use ironsa_bench::ikegen::report::Report;
use ironsa_bench::ikegen::{Progress, run};
use support::Ironsa;
use support::Need;
use support::ironsa::{metric, metrics};
use support::util::free_udp_port_pair;

const PSK: &str = "soak-test-Zq8#kP2!vR9@wX4$yT7&uN1*";

/// Both tests load the machine: one at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// Timers of the gateway's connection.
struct Timers {
    ike_rekey: &'static str,
    child_rekey: &'static str,
    dpd: &'static str,
}

/// A gateway on loopback with the software fastpath, its metrics on `metrics`
/// (returned once they answer: the daemon opens them after its control socket).
fn gateway(ports: (u16, u16), metrics: u16, tun: &str, t: &Timers) -> Ironsa {
    let gw = start_gateway(ports, metrics, tun, t);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], metrics))).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the gateway's metrics never answered"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    gw
}

fn start_gateway(ports: (u16, u16), metrics: u16, tun: &str, t: &Timers) -> Ironsa {
    Ironsa::start(
        &format!(
            r#"
[daemon]
listen = ["127.0.0.1"]
ike_port = {}
nat_port = {}
shards = 2
control_socket = "SOCKET"
metrics = "127.0.0.1:{metrics}"
log_level = "info"

[fastpath]
backend = "software"
tun_name = "{tun}"
install_routes = false

[dos]
per_source_half_open = 2000

[[connection]]
name = "soak"
remote_addrs = ["%any"]
local_id = "gw@soak.test"
remote_id = "*@soak.test"
psk = "{PSK}"
ike_proposals = "aes256gcm16-prfsha256-x25519"
ike_rekey = "{}"
dpd_delay = "{}"

[[connection.child]]
name = "net"
local_ts = ["10.0.0.0/8"]
remote_ts = ["0.0.0.0/0"]
esp_proposals = "aes256gcm16"
rekey = "{}"
"#,
            ports.0, ports.1, t.ike_rekey, t.dpd, t.child_rekey
        ),
        None,
    )
}

fn settings(port: u16, metrics: u16, source: &str, tunnels: u64) -> Settings {
    Settings {
        remote: Some(format!("127.0.0.1:{port}").parse().unwrap()),
        source: Some(vec![source.into()]),
        tunnels: Some(tunnels),
        concurrency: Some(200),
        local_id: Some("user{n}@soak.test".into()),
        remote_id: Some("gw@soak.test".into()),
        psk: Some(PSK.into()),
        local_ts: Some(vec!["10.128.{n/256%256}.{n%256}/32".into()]),
        remote_ts: Some(vec!["10.0.0.0/8".into()]),
        retransmit_timeout: Some(2.0),
        retransmit_tries: Some(5),
        timeout: Some(60.0),
        esp_size: Some(256),
        gateway_metrics: Some(format!("127.0.0.1:{metrics}")),
        ..Settings::default()
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap()
}

/// ESP sent, delivered and lost, and the gateway's `no_sa` drops, from the report.
fn esp_outcome(report: &Report) -> (u64, u64, u64, u64) {
    let e = report.esp.as_ref().expect("the report has an ESP section");
    (
        e.packets,
        e.delivered.expect("delivered is reported with --gateway-metrics"),
        e.lost.expect("lost is reported with --gateway-metrics"),
        e.gateway_drops.get("no_sa").copied().unwrap_or(0),
    )
}

#[test]
fn esp_load_follows_child_sa_rekeys_of_both_sides() {
    if support::skip_unless(&[Need::Root]) {
        return;
    }
    let _machine = exclusive();
    let ports = free_udp_port_pair().unwrap();
    let mport = free_udp_port_pair().unwrap().0;
    // The gateway rekeys every CHILD_SA every 3 s or so; the generator rekeys some too.
    let timers = Timers {
        ike_rekey: "1h",
        child_rekey: "3s",
        dpd: "0",
    };
    let gw = gateway(ports, mport, "ironsa-rk0", &timers);
    let mut s = settings(ports.0, mport, "127.0.8.0/24", 100);
    s.hold = Some(10.0);
    s.rekey_child_rate = Some(10.0);
    s.esp_rate = Some(2000.0);
    let report = run(&s.resolve().unwrap(), None).unwrap();
    let text = report.render_text();
    eprintln!("{text}");
    assert_eq!(report.children_installed, 100, "all CHILD_SAs up");
    // Both forms of the report say what arrived beside what was sent.
    assert!(text.contains("ESP at the gateway: sent"), "{text}");
    let v = serde_json::to_value(&report).unwrap();
    for key in ["packets", "delivered", "lost", "rekeys_followed"] {
        assert!(v["esp"][key].is_u64(), "--json has esp.{key}: {}", v["esp"]);
    }
    let hold = report.hold.as_ref().unwrap();
    assert!(hold.rekeys_child_done > 0, "the generator rekeyed CHILD_SAs");
    assert!(hold.rekeys_child_by_peer > 0, "the gateway rekeyed CHILD_SAs");
    assert!(hold.lost.is_empty(), "no tunnel lost: {:?}", hold.lost);
    let (sent, delivered, lost, no_sa) = esp_outcome(&report);
    assert!(sent > 10_000, "ESP was sent: {sent}");
    assert!(
        no_sa * 200 <= sent,
        "the gateway dropped {no_sa} of {sent} packets for want of an SA: traffic stayed on rekeyed SAs"
    );
    assert!(
        lost * 100 <= sent * 2,
        "{lost} of {sent} ESP packets lost ({delivered} delivered)"
    );
    drop(gw);
}

#[test]
fn short_soak_loses_no_sa_and_keeps_memory_flat() {
    if support::skip_unless(&[Need::Root]) {
        return;
    }
    let _machine = exclusive();
    let n: u64 = std::env::var("IRONSA_SOAK_TUNNELS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let secs: f64 = std::env::var("IRONSA_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30.0);
    let ports = free_udp_port_pair().unwrap();
    let mport = free_udp_port_pair().unwrap().0;
    // Lifetimes with a margin (10 %) that a rekey queued behind another
    // exchange on a loaded machine still meets.
    let timers = Timers {
        ike_rekey: "15s",
        child_rekey: "10s",
        dpd: "5s",
    };
    let gw = gateway(ports, mport, "ironsa-soak0", &timers);
    let pid = gw.pid();
    let mut s = settings(ports.0, mport, "127.0.9.0/24", n);
    s.hold = Some(secs);
    s.dpd = Some(5.0);
    s.rekey_ike_rate = Some(n as f64 / 40.0);
    s.rekey_child_rate = Some(n as f64 / 20.0);
    s.esp_rate = Some(3000.0);
    s.teardown = Some(true);
    // While the tunnels are held: the gateway's RSS and its SA counts, once a second.
    let mut samples: Vec<(f64, u64, u64, u64)> = Vec::new();
    let mut next_sample = 0.0;
    let mut on_progress = |p: &Progress| {
        let holding = p.established == n && p.deleted == 0;
        if holding && p.elapsed_secs >= next_sample {
            next_sample = p.elapsed_secs + 1.0;
            let body = metrics(mport);
            samples.push((
                p.elapsed_secs,
                rss_kib(pid),
                metric(&body, "ironsa_ike_sas"),
                metric(&body, "ironsa_child_sas"),
            ));
        }
    };
    let report = run(&s.resolve().unwrap(), Some(&mut on_progress)).unwrap();
    eprintln!("{}", report.render_text());
    assert_eq!(report.established, n, "all tunnels up");
    assert_eq!(report.children_installed, n, "all CHILD_SAs up");
    let hold = report.hold.as_ref().unwrap();
    assert!(hold.lost.is_empty(), "SAs lost while held: {:?}", hold.lost);
    assert!(
        hold.rekeys_ike_done > 0 && hold.rekeys_ike_by_peer > 0,
        "IKE SAs rekeyed by both sides"
    );
    assert!(
        hold.rekeys_child_done > 0 && hold.rekeys_child_by_peer > 0,
        "CHILD_SAs rekeyed by both sides"
    );
    let teardown = report.teardown.as_ref().unwrap();
    // Every tunnel is still there to delete, also one whose DELETE crosses a
    // rekey of the gateway (RFC 7296 §2.25.2).
    assert_eq!(
        teardown.deleted, n,
        "every tunnel was still there to delete ({:?})",
        teardown.failed
    );
    let (sent, delivered, lost, no_sa) = esp_outcome(&report);
    assert!(sent > 50_000, "ESP was sent: {sent}");
    assert!(no_sa * 200 <= sent, "{no_sa} of {sent} ESP packets found no SA");
    assert!(
        lost * 100 <= sent,
        "{lost} of {sent} ESP packets lost ({delivered} delivered)"
    );

    assert!(samples.len() >= 6, "sampled while held: {samples:?}");
    for (t, _, ike, child) in &samples {
        assert!(
            *ike >= n && *child >= n,
            "at {t:.0} s the gateway held {ike} IKE SAs, {child} CHILD_SAs"
        );
    }
    // Memory: the middle third of the hold (every SA rekeyed at least once by
    // then) against the last third; a leak per rekey or DPD exchange grows it.
    let third = samples.len() / 3;
    let median = |v: &[(f64, u64, u64, u64)]| {
        let mut r: Vec<u64> = v.iter().map(|s| s.1).collect();
        r.sort_unstable();
        r[r.len() / 2]
    };
    let (early, late) = (median(&samples[third..2 * third]), median(&samples[2 * third..]));
    eprintln!(
        "gateway RSS while held: {early} KiB -> {late} KiB ({} samples: {:?})",
        samples.len(),
        samples.iter().map(|s| s.1).collect::<Vec<_>>()
    );
    assert!(
        late <= early + 4096,
        "gateway memory grew from {early} KiB to {late} KiB while holding {n} tunnels"
    );
    let body = metrics(mport);
    assert_eq!(metric(&body, "ironsa_ike_sas"), 0, "the teardown removed every IKE SA");
    drop(gw);
}
