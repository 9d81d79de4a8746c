//! Traffic through a tunnel between the two namespaces of a [`NetnsPair`].

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::NetnsPair;
use super::netns::{INNER_A, INNER_B};

/// iperf3 TCP for `secs` with `streams` parallel streams: server on B's inner
/// address, client on A's (`reverse`: B sends). Returns the Mbit/s received
/// (0 when iperf3 failed).
pub fn iperf(ns: &NetnsPair, reverse: bool, secs: u32, streams: u32) -> f64 {
    let server = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns.b.name(),
            "iperf3",
            "-s",
            "-1",
            "-B",
            INNER_B,
            "-p",
            "5201",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut server) = server else { return 0.0 };
    std::thread::sleep(Duration::from_millis(300));
    let (s, p) = (secs.to_string(), streams.to_string());
    let mut argv = vec![
        "iperf3", "-c", INNER_B, "-B", INNER_A, "-p", "5201", "-J", "-P", &p, "-t", &s,
    ];
    if reverse {
        argv.push("-R");
    }
    let out = ns.a.exec_bounded(&argv, Duration::from_secs(u64::from(secs) + 20));
    let _ = server.kill();
    let _ = server.wait();
    let v: serde_json::Value = out
        .ok()
        .and_then(|o| serde_json::from_slice(&o.stdout).ok())
        .unwrap_or(serde_json::Value::Null);
    v["end"]["sum_received"]["bits_per_second"].as_f64().unwrap_or(0.0) / 1e6
}

/// Pings `to` from `from` inside namespace `ns`, `count` times every
/// `interval` seconds; returns (sent, received).
pub fn ping(ns: &super::Netns, from: &str, to: &str, count: u32, interval: &str) -> (u32, u32) {
    let count = count.to_string();
    let out = ns
        .exec_bounded(
            &["ping", "-q", "-c", &count, "-i", interval, "-W", "2", "-I", from, to],
            Duration::from_secs(60),
        )
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_else(|e| format!("{e}"));
    let line = out
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_default();
    let nums: Vec<u32> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|s| s.parse().ok())
        .collect();
    assert!(nums.len() >= 2, "ping output: {out}");
    (nums[0], nums[1])
}

/// Waits (up to `within`) until one echo from `from` to `to` comes back:
/// the peer may report a CHILD_SA installed a moment before its user-space
/// ESP (kernel-libipsec) carries traffic. Panics with the last result.
pub fn wait_for_path(ns: &super::Netns, from: &str, to: &str, within: Duration) {
    let start = Instant::now();
    loop {
        let (sent, got) = ping(ns, from, to, 1, "0.2");
        if got == 1 {
            return;
        }
        assert!(
            start.elapsed() < within,
            "no echo from {to} to {from} within {within:?} ({got}/{sent} on the last try)"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Pings B's inner address from A's and A's from B's, `count` times each
/// every `interval` seconds; panics unless every echo came back.
pub fn ping_both_ways(ns: &NetnsPair, count: u32, interval: &str) {
    assert_eq!(
        ping(&ns.a, INNER_A, INNER_B, count, interval),
        (count, count),
        "ping A -> B"
    );
    assert_eq!(
        ping(&ns.b, INNER_B, INNER_A, count, interval),
        (count, count),
        "ping B -> A"
    );
}

/// Waits (up to 30 s) until a capture started with `-w pcap` is running: tshark
/// writes the file's header once it captures. A fixed sleep is not enough on
/// a loaded machine, where tshark can take seconds to start.
pub fn wait_capturing(pcap: &std::path::Path) {
    let start = Instant::now();
    while std::fs::metadata(pcap).map(|m| m.len() < 24).unwrap_or(true) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "tshark did not start capturing into {} within 30 s",
            pcap.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The header is written as capturing starts: a moment for the filter.
    std::thread::sleep(Duration::from_millis(300));
}
