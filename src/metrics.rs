//! Prometheus metrics over plain HTTP (text exposition format 0.0.4).

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use tracing::warn;

use crate::daemon::Daemon;

/// Renders all metrics.
pub fn render(daemon: &Daemon) -> String {
    let stats = daemon.stats();
    let mut out = String::new();
    let mut counter = |name: &str, help: &str, kind: &str, f: &dyn Fn(&crate::shard::ShardStats) -> u64| {
        let _ = writeln!(out, "# HELP ironsa_{name} {help}\n# TYPE ironsa_{name} {kind}");
        for (i, s) in stats.iter().enumerate() {
            let _ = writeln!(out, "ironsa_{name}{{shard=\"{i}\"}} {}", f(s));
        }
    };
    counter(
        "ike_init_requests_total",
        "IKE_SA_INIT requests for new SAs",
        "counter",
        &|s| s.endpoint.init_requests,
    );
    counter("ike_established_total", "IKE SAs established", "counter", &|s| {
        s.endpoint.established
    });
    counter(
        "ike_established_post_quantum_total",
        "IKE SAs established with a post-quantum (ML-KEM) key exchange",
        "counter",
        &|s| s.endpoint.established_post_quantum,
    );
    counter(
        "ike_established_classical_total",
        "IKE SAs established with classical key exchanges only",
        "counter",
        &|s| s.endpoint.established - s.endpoint.established_post_quantum,
    );
    counter(
        "ike_init_rejected_total",
        "IKE_SA_INIT requests rejected",
        "counter",
        &|s| s.endpoint.init_rejected,
    );
    counter("cookies_sent_total", "COOKIE challenges sent", "counter", &|s| {
        s.endpoint.cookies_sent
    });
    counter("cookies_valid_total", "valid cookies received", "counter", &|s| {
        s.endpoint.cookies_valid
    });
    counter("cookies_invalid_total", "invalid cookies received", "counter", &|s| {
        s.endpoint.cookies_invalid
    });
    counter(
        "dropped_per_source_total",
        "IKE_SA_INIT dropped by the per-source limit",
        "counter",
        &|s| s.endpoint.dropped_per_source,
    );
    counter(
        "dropped_capacity_total",
        "IKE_SA_INIT dropped by the half-open cap",
        "counter",
        &|s| s.endpoint.dropped_capacity,
    );
    counter(
        "dropped_invalid_total",
        "undecodable or unmatched IKE datagrams",
        "counter",
        &|s| s.endpoint.dropped_invalid,
    );
    counter("ike_sas", "IKE SAs", "gauge", &|s| s.ike_sas as u64);
    counter("half_open_sas", "half-open IKE SAs", "gauge", &|s| s.half_open as u64);
    counter("child_sas", "CHILD_SAs", "gauge", &|s| s.child_sas as u64);
    counter("ike_rx_datagrams_total", "IKE datagrams received", "counter", &|s| {
        s.rx_datagrams
    });
    counter("ike_tx_datagrams_total", "IKE datagrams sent", "counter", &|s| {
        s.tx_datagrams
    });
    let _ = writeln!(
        out,
        "# HELP ironsa_handshakes_failed_total IKE SAs that failed, by reason\n# TYPE ironsa_handshakes_failed_total counter"
    );
    for (i, s) in stats.iter().enumerate() {
        for (reason, n) in &s.failures {
            let _ = writeln!(
                out,
                "ironsa_handshakes_failed_total{{shard=\"{i}\",reason=\"{reason}\"}} {n}"
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP ironsa_ike_dropped_total IKE datagrams dropped and IKE_SA_INIT requests refused, by reason\n# TYPE ironsa_ike_dropped_total counter"
    );
    for (i, s) in stats.iter().enumerate() {
        for (reason, n) in &s.endpoint.drops {
            let _ = writeln!(out, "ironsa_ike_dropped_total{{shard=\"{i}\",reason=\"{reason}\"}} {n}");
        }
    }
    out.push_str(&daemon.dataplane().metrics());
    out
}

/// Serves `/metrics` on `addr`.
pub fn spawn(daemon: Arc<Daemon>, addr: SocketAddr) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr)?;
    std::thread::Builder::new()
        .name("ironsa-metrics".into())
        .spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { continue };
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut req = [0u8; 1024];
                let n = s.read(&mut req).unwrap_or(0);
                let head = String::from_utf8_lossy(&req[..n]);
                let (status, body) = if head.starts_with("GET /metrics") {
                    ("200 OK", render(&daemon))
                } else {
                    ("404 Not Found", "see /metrics\n".to_string())
                };
                let resp = format!(
                    "HTTP/1.0 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                if let Err(e) = s.write_all(resp.as_bytes()) {
                    warn!("metrics client: {e}");
                }
            }
        })?;
    Ok(())
}
