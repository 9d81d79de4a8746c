//! The gateway's own view of the ESP load: its Prometheus endpoint
//! (`[daemon] metrics` of ironsa) is read before and after a run, so the
//! report says how many of the packets sent were decrypted and why the rest
//! were dropped, instead of only what the generator sent.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use thiserror::Error;

/// How long one scrape may take (ironsa answers from its shards, which a
/// loaded gateway may keep busy for a while).
const TIMEOUT: Duration = Duration::from_secs(15);
/// Largest metrics page read.
const MAX_PAGE: u64 = 16 << 20;

/// Why the gateway's metrics could not be read.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum GatewayMetricsError {
    /// Connecting, sending or reading failed.
    #[error("cannot read the gateway's metrics at http://{addr}/metrics: {source}")]
    Io {
        /// The metrics address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The answer was not an HTTP 200 with ironsa's ESP counters.
    #[error("the gateway's metrics at http://{addr}/metrics: {reason}")]
    Unexpected {
        /// The metrics address.
        addr: SocketAddr,
        /// What was wrong.
        reason: String,
    },
}

/// The gateway's inbound ESP counters at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GatewayEsp {
    /// ESP packets decrypted (`ironsa_esp_packets_total{direction="in"}`).
    pub packets_in: u64,
    /// Inbound drops by reason (`ironsa_esp_drops_total{direction="in",reason=...}`).
    pub drops_in: BTreeMap<String, u64>,
}

impl GatewayEsp {
    /// Reads the counters from the gateway's metrics endpoint at `addr`.
    pub fn scrape(addr: SocketAddr) -> Result<Self, GatewayMetricsError> {
        let io = |source| GatewayMetricsError::Io { addr, source };
        let mut s = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(io)?;
        s.set_read_timeout(Some(TIMEOUT)).map_err(io)?;
        s.set_write_timeout(Some(TIMEOUT)).map_err(io)?;
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").map_err(io)?;
        let mut page = Vec::new();
        if let Err(e) = s.take(MAX_PAGE).read_to_end(&mut page) {
            // A server that resets the connection after a complete answer still answered.
            if !(e.kind() == std::io::ErrorKind::ConnectionReset && is_complete(&page)) {
                return Err(io(e));
            }
        }
        let page = String::from_utf8_lossy(&page);
        let unexpected = |reason: &str| GatewayMetricsError::Unexpected {
            addr,
            reason: reason.to_string(),
        };
        let (head, body) = page
            .split_once("\r\n\r\n")
            .ok_or_else(|| unexpected("not an HTTP response"))?;
        let status = head.lines().next().unwrap_or_default();
        if status.split_whitespace().nth(1) != Some("200") {
            return Err(unexpected(&format!("answered '{status}'")));
        }
        Self::parse(body)
            .ok_or_else(|| unexpected("no ironsa_esp_packets_total{direction=\"in\"} (is the gateway's fastpath off?)"))
    }

    /// The counters in a Prometheus text page; `None` without the inbound packet counter.
    pub fn parse(body: &str) -> Option<Self> {
        let mut packets_in = None;
        let mut drops_in = BTreeMap::new();
        for line in body.lines().filter(|l| !l.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.trim().parse::<f64>() else {
                continue;
            };
            let value = value as u64;
            let (name, labels) = series.split_once('{').unwrap_or((series, ""));
            let label = |key: &str| {
                labels
                    .trim_end_matches('}')
                    .split(',')
                    .filter_map(|kv| kv.split_once('='))
                    .find(|(k, _)| k.trim() == key)
                    .map(|(_, v)| v.trim().trim_matches('"'))
            };
            if label("direction") != Some("in") {
                continue;
            }
            match name {
                "ironsa_esp_packets_total" => *packets_in.get_or_insert(0) += value,
                "ironsa_esp_drops_total" => {
                    *drops_in
                        .entry(label("reason").unwrap_or("unknown").to_string())
                        .or_default() += value
                }
                _ => {}
            }
        }
        Some(Self {
            packets_in: packets_in?,
            drops_in,
        })
    }

    /// What changed from `earlier` to `self` (counters that only grow).
    pub fn since(&self, earlier: &GatewayEsp) -> GatewayEsp {
        let mut drops_in = BTreeMap::new();
        for (reason, n) in &self.drops_in {
            let d = n.saturating_sub(earlier.drops_in.get(reason).copied().unwrap_or(0));
            if d > 0 {
                drops_in.insert(reason.clone(), d);
            }
        }
        GatewayEsp {
            packets_in: self.packets_in.saturating_sub(earlier.packets_in),
            drops_in,
        }
    }
}

/// True if `page` holds an HTTP head and as many body bytes as its Content-Length.
fn is_complete(page: &[u8]) -> bool {
    let Some(end) = page.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&page[..end]);
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .is_some_and(|len| page.len() >= end + 4 + len)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = "# HELP ironsa_esp_packets_total ESP packets processed\n\
        # TYPE ironsa_esp_packets_total counter\n\
        ironsa_esp_packets_total{direction=\"in\"} 120\n\
        ironsa_esp_bytes_total{direction=\"in\"} 9000\n\
        ironsa_esp_packets_total{direction=\"out\"} 7\n\
        ironsa_esp_drops_total{direction=\"in\",reason=\"no_sa\"} 5\n\
        ironsa_esp_drops_total{direction=\"in\",reason=\"replay\"} 1\n\
        ironsa_esp_drops_total{direction=\"out\",reason=\"no_policy\"} 3\n\
        ironsa_ike_sas{shard=\"0\"} 4\n";

    #[test]
    fn reads_inbound_counters_only() {
        let g = GatewayEsp::parse(PAGE).unwrap();
        assert_eq!(g.packets_in, 120);
        assert_eq!(g.drops_in.len(), 2);
        assert_eq!(g.drops_in["no_sa"], 5);
        assert_eq!(g.drops_in["replay"], 1);
        assert!(GatewayEsp::parse("ironsa_ike_sas{shard=\"0\"} 4\n").is_none());
    }

    #[test]
    fn complete_answers_are_recognised() {
        assert!(is_complete(b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nabc"));
        assert!(!is_complete(b"HTTP/1.0 200 OK\r\nContent-Length: 4\r\n\r\nabc"));
        assert!(!is_complete(b"HTTP/1.0 200 OK\r\n\r\nabc"));
        assert!(!is_complete(b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n"));
    }

    #[test]
    fn difference_keeps_what_grew() {
        let before = GatewayEsp::parse(PAGE).unwrap();
        let after = GatewayEsp::parse(&PAGE.replace("} 120", "} 150").replace("} 5", "} 9")).unwrap();
        let d = after.since(&before);
        assert_eq!(d.packets_in, 30);
        assert_eq!(d.drops_in.len(), 1);
        assert_eq!(d.drops_in["no_sa"], 4);
    }
}
