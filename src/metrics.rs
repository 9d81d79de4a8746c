//! Prometheus metrics over plain HTTP (text exposition format 0.0.4).

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use tracing::debug;

use crate::daemon::Daemon;

/// Renders all metrics.
pub fn render(daemon: &Daemon) -> String {
    let mut out = render_shards(&daemon.stats());
    out.push_str(&render_pools(&daemon.pool_occupancy()));
    if let Some(r) = daemon.radius_stats() {
        out.push_str(&render_radius(&r));
    }
    out.push_str(&daemon.dataplane().metrics());
    out
}

/// The RADIUS counters of `ironsa stats` (`radius`: authentication,
/// accounting, dae), one series per part and event.
fn render_radius(radius: &serde_json::Value) -> String {
    let mut out = String::from(
        "# HELP ironsa_radius_events_total RADIUS requests, answers and drops by part (authentication, accounting, dae) and event\n# TYPE ironsa_radius_events_total counter\n",
    );
    for (part, counters) in radius.as_object().into_iter().flatten() {
        for (event, n) in counters.as_object().into_iter().flatten() {
            if let Some(n) = n.as_u64() {
                let _ = writeln!(
                    out,
                    "ironsa_radius_events_total{{part=\"{part}\",event=\"{event}\"}} {n}"
                );
            }
        }
    }
    out
}

/// Size and use of each virtual-IP pool: (name, size, used).
fn render_pools(pools: &[(String, u64, u64)]) -> String {
    let mut out = String::new();
    if pools.is_empty() {
        return out;
    }
    let _ = writeln!(
        out,
        "# HELP ironsa_pool_size addresses in a virtual-IP pool\n# TYPE ironsa_pool_size gauge"
    );
    for (name, size, _) in pools {
        let _ = writeln!(out, "ironsa_pool_size{{pool=\"{name}\"}} {size}");
    }
    let _ = writeln!(
        out,
        "# HELP ironsa_pool_used addresses of a virtual-IP pool leased to peers\n# TYPE ironsa_pool_used gauge"
    );
    for (name, _, used) in pools {
        let _ = writeln!(out, "ironsa_pool_used{{pool=\"{name}\"}} {used}");
    }
    out
}

/// Renders the shards' metrics; entry `i` of `stats` is shard `i`.
fn render_shards(stats: &[Option<crate::shard::ShardStats>]) -> String {
    let mut out = String::new();
    let mut counter = |name: &str, help: &str, kind: &str, f: &dyn Fn(&crate::shard::ShardStats) -> u64| {
        let _ = writeln!(out, "# HELP ironsa_{name} {help}\n# TYPE ironsa_{name} {kind}");
        for (i, s) in answered(stats) {
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
    counter(
        "redirected_total",
        "new IKE SAs redirected to a less loaded cluster node (RFC 5685)",
        "counter",
        &|s| s.endpoint.redirected,
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
    counter(
        "cluster_forwarded_total",
        "IKE datagrams sent to the cluster node serving their SPI",
        "counter",
        &|s| s.forwarded_to_nodes,
    );
    counter(
        "cluster_refused_store_down_total",
        "IKE_SA_INIT requests answered TEMPORARY_FAILURE while the cluster store was unreachable",
        "counter",
        &|s| s.refused_store_down,
    );
    let _ = writeln!(
        out,
        "# HELP ironsa_handshakes_failed_total IKE SAs that failed, by reason\n# TYPE ironsa_handshakes_failed_total counter"
    );
    for (i, s) in answered(stats) {
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
    for (i, s) in answered(stats) {
        for (reason, n) in &s.endpoint.drops {
            let _ = writeln!(out, "ironsa_ike_dropped_total{{shard=\"{i}\",reason=\"{reason}\"}} {n}");
        }
    }
    let _ = writeln!(
        out,
        "# HELP ironsa_shard_answering 1 if the shard answered this scrape in time, 0 if its figures are missing\n# TYPE ironsa_shard_answering gauge"
    );
    for (i, s) in stats.iter().enumerate() {
        let _ = writeln!(out, "ironsa_shard_answering{{shard=\"{i}\"}} {}", u8::from(s.is_some()));
    }
    for (name, help, pick) in [
        (
            "ironsa_eap_successes_total",
            "Peers that passed EAP, by method",
            (|s: &crate::shard::ShardStats| &s.eap.successes)
                as fn(&crate::shard::ShardStats) -> &std::collections::BTreeMap<&'static str, u64>,
        ),
        ("ironsa_eap_failures_total", "Peers refused by EAP, by method", |s| {
            &s.eap.failures
        }),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (i, s) in answered(stats) {
            for (method, n) in pick(s) {
                let _ = writeln!(out, "{name}{{shard=\"{i}\",method=\"{method}\"}} {n}");
            }
        }
    }
    let _ = writeln!(
        out,
        "# HELP ironsa_eap_dropped_total EAP packets dropped: malformed, out of state, or while RADIUS works\n# TYPE ironsa_eap_dropped_total counter"
    );
    for (i, s) in answered(stats) {
        let _ = writeln!(out, "ironsa_eap_dropped_total{{shard=\"{i}\"}} {}", s.eap.dropped);
    }
    out
}

/// The shards that answered, with their numbers.
fn answered(stats: &[Option<crate::shard::ShardStats>]) -> impl Iterator<Item = (usize, &crate::shard::ShardStats)> {
    stats.iter().enumerate().filter_map(|(i, s)| s.as_ref().map(|s| (i, s)))
}

/// Longest request head read; a scrape's is a few hundred bytes.
const MAX_REQUEST_HEAD: usize = 16 * 1024;

/// How long a client may take to send its request, and to close after the answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);

/// Reads the request head (up to the blank line), so that nothing the client
/// sent is left unread when the connection closes: closing a socket with
/// unread input makes the kernel reset the connection instead of closing it.
fn read_head(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 2048];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST_HEAD {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    Ok(head)
}

/// Answers one client and closes the connection cleanly: the answer, our
/// FIN, then the client's remaining input read until it closes too.
fn answer(daemon: &Daemon, mut s: TcpStream) -> std::io::Result<()> {
    s.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    s.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    let head = read_head(&mut s)?;
    let (status, body) = if head.starts_with(b"GET /metrics ") || head.starts_with(b"GET /metrics?") {
        ("200 OK", render(daemon))
    } else {
        ("404 Not Found", "see /metrics\n".to_string())
    };
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(resp.as_bytes())?;
    s.shutdown(Shutdown::Write)?;
    let mut rest = [0u8; 2048];
    while s.read(&mut rest)? > 0 {}
    Ok(())
}

/// Serves `/metrics` on `addr`, one client at a time.
pub fn spawn(daemon: Arc<Daemon>, addr: SocketAddr) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr)?;
    std::thread::Builder::new()
        .name("ironsa-metrics".into())
        .spawn(move || {
            for stream in listener.incoming() {
                let Ok(s) = stream else { continue };
                if let Err(e) = answer(&daemon, s) {
                    debug!("metrics client: {e}");
                }
            }
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::ShardStats;

    #[test]
    fn a_shard_that_did_not_answer_is_shown_missing_and_the_others_keep_their_numbers() {
        let shard = |ike_sas| ShardStats {
            ike_sas,
            ..ShardStats::default()
        };
        let text = render_shards(&[Some(shard(10)), None, Some(shard(30))]);
        assert!(text.contains("ironsa_ike_sas{shard=\"0\"} 10"), "{text}");
        assert!(
            text.contains("ironsa_cluster_refused_store_down_total{shard=\"2\"} 0"),
            "{text}"
        );
        assert!(text.contains("ironsa_ike_sas{shard=\"2\"} 30"), "{text}");
        assert!(!text.contains("ironsa_ike_sas{shard=\"1\"}"), "{text}");
        assert!(text.contains("ironsa_shard_answering{shard=\"0\"} 1"), "{text}");
        assert!(text.contains("ironsa_shard_answering{shard=\"1\"} 0"), "{text}");
        assert!(text.contains("ironsa_shard_answering{shard=\"2\"} 1"), "{text}");
    }

    #[test]
    fn radius_counters_are_one_series_per_part_and_event() {
        let text = render_radius(&serde_json::json!({
            "authentication": {"sent": 3, "failovers": 1},
            "dae": {"dropped_bad_authenticator": 2},
        }));
        for line in [
            "ironsa_radius_events_total{part=\"authentication\",event=\"sent\"} 3",
            "ironsa_radius_events_total{part=\"authentication\",event=\"failovers\"} 1",
            "ironsa_radius_events_total{part=\"dae\",event=\"dropped_bad_authenticator\"} 2",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in:\n{text}");
        }
    }

    #[test]
    fn eap_outcomes_are_counted_per_method() {
        let eap = control::ike_sa::eap::EapStats::default();
        eap.successes[0].fetch_add(2, std::sync::atomic::Ordering::Relaxed);
        eap.failures[2].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        eap.dropped.fetch_add(5, std::sync::atomic::Ordering::Relaxed);
        let shard = ShardStats {
            eap: (&eap).into(),
            ..ShardStats::default()
        };
        let text = render_shards(&[Some(shard)]);
        for line in [
            "ironsa_eap_successes_total{shard=\"0\",method=\"eap-mschapv2\"} 2",
            "ironsa_eap_failures_total{shard=\"0\",method=\"eap-radius\"} 1",
            "ironsa_eap_failures_total{shard=\"0\",method=\"eap-md5\"} 0",
            "ironsa_eap_dropped_total{shard=\"0\"} 5",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in:\n{text}");
        }
    }
}
