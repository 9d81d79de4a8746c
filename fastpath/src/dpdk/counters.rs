//! Counters of the DPDK backend: per port (from the NIC), per poll loop
//! (queue), crypto device and fallback counts, with a Prometheus text renderer.

use crate::stats::{CountersSnapshot, DropReason};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! loop_counters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// Counters of one poll loop (one queue per port, one lcore); relaxed
        /// atomics written by the loop, read by anyone.
        #[derive(Debug, Default)]
        pub struct LoopCounters {
            $($(#[$doc])* pub $name: AtomicU64,)*
        }

        /// A copy of [`LoopCounters`].
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct LoopSnapshot {
            $($(#[$doc])* pub $name: u64,)*
        }

        impl LoopCounters {
            /// Copies the counters.
            pub fn snapshot(&self) -> LoopSnapshot {
                LoopSnapshot { $($name: self.$name.load(Ordering::Relaxed),)* }
            }
        }

        impl LoopSnapshot {
            /// `(metric suffix, value)` pairs, in declaration order.
            pub fn fields(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($name), self.$name),)*]
            }
        }
    };
}

loop_counters! {
    /// Frames received from the ports.
    rx_frames,
    /// Frames handed to the ports for transmission.
    tx_frames,
    /// Frames the ports did not take (queue full), freed.
    tx_dropped,
    /// Frames dropped before ESP: not IP, VLAN, chained mbufs, truncated.
    rx_unsupported,
    /// IKE messages passed to the control plane.
    ike_rx,
    /// IKE messages dropped: the control plane is gone or not keeping up.
    ike_rx_dropped,
    /// IKE messages sent for the control plane.
    ike_tx,
    /// NAT keepalives received.
    keepalives,
    /// UDP-encapsulated ESP packets received (RFC 3948, port 4500).
    esp_udp_rx,
    /// UDP-encapsulated ESP packets sent.
    esp_udp_tx,
    /// ARP requests answered.
    arp_replies,
    /// Packets handed to another loop (SPI steering or SA pinning).
    steered_out,
    /// Packets received from other loops.
    steered_in,
    /// Packets dropped because a steering ring was full.
    steer_ring_full,
    /// Crypto operations enqueued to the crypto device.
    crypto_enqueued,
    /// Crypto operations dequeued from the crypto device.
    crypto_dequeued,
    /// Crypto operations that failed (other than ICV failures) or were lost.
    crypto_errors,
    /// Packets of SAs the crypto device cannot take, done on the CPU instead.
    crypto_cpu_fallback,
    /// Packets that inline crypto could not take, done on the CPU instead.
    inline_cpu_fallback,
    /// mbuf allocation failures.
    mbuf_alloc_failed,
}

impl LoopCounters {
    /// Adds `n` to `c`.
    #[inline]
    pub fn add(c: &AtomicU64, n: u64) {
        if n != 0 {
            c.fetch_add(n, Ordering::Relaxed);
        }
    }
}

/// A port metric: name, help text, value.
type PortMetric = (&'static str, &'static str, fn(&ffi::PortStats) -> u64);
/// A per-queue port metric: name, help text, values by queue.
type QueueMetric = (&'static str, &'static str, fn(&ffi::PortStats) -> &Vec<u64>);

/// Port counters as the NIC reports them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortCounters {
    /// DPDK device name.
    pub name: String,
    /// Port id.
    pub id: u16,
    /// The NIC's counters (`rte_eth_stats`), per-queue ones included.
    pub stats: ffi::PortStats,
}

/// One poll loop's counters: the loop's own and its ESP worker's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoopReport {
    /// Loop id (= queue id = worker id).
    pub id: usize,
    /// Frame-level counters.
    pub io: LoopSnapshot,
    /// ESP decapsulation counters.
    pub inbound: CountersSnapshot,
    /// ESP encapsulation counters.
    pub outbound: CountersSnapshot,
}

/// Everything the DPDK backend counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DpdkCounters {
    /// Per port.
    pub ports: Vec<PortCounters>,
    /// Per poll loop / queue.
    pub loops: Vec<LoopReport>,
    /// Crypto device name, when lookaside crypto is used.
    pub crypto_device: Option<String>,
    /// SA directions given an rte_security inline session (inline mode).
    pub inline_sas_offloaded: u64,
    /// SA directions an inline profile left in software (no capable port,
    /// no matching capability, or session creation failed).
    pub inline_sas_fallback: u64,
}

impl DpdkCounters {
    /// Sum of one loop counter over all loops.
    pub fn total(&self, f: impl Fn(&LoopSnapshot) -> u64) -> u64 {
        self.loops.iter().map(|l| f(&l.io)).sum()
    }

    /// Prometheus text exposition format (metric prefix `ironsa_dpdk_`).
    pub fn prometheus(&self) -> String {
        let mut o = String::new();
        let port_metrics: [PortMetric; 8] = [
            ("rx_packets", "Packets received by the port", |s| s.ipackets),
            ("tx_packets", "Packets sent by the port", |s| s.opackets),
            ("rx_bytes", "Bytes received by the port", |s| s.ibytes),
            ("tx_bytes", "Bytes sent by the port", |s| s.obytes),
            ("rx_missed", "Packets dropped by the port: rx queues full", |s| {
                s.imissed
            }),
            ("rx_errors", "Receive errors", |s| s.ierrors),
            ("tx_errors", "Transmit errors", |s| s.oerrors),
            ("rx_nombuf", "Receive failures for lack of mbufs", |s| s.rx_nombuf),
        ];
        for (name, help, get) in port_metrics {
            let _ = writeln!(o, "# HELP ironsa_dpdk_port_{name}_total {help}.");
            let _ = writeln!(o, "# TYPE ironsa_dpdk_port_{name}_total counter");
            for p in &self.ports {
                let _ = writeln!(
                    o,
                    "ironsa_dpdk_port_{name}_total{{port=\"{}\"}} {}",
                    p.name,
                    get(&p.stats)
                );
            }
        }
        let queue_metrics: [QueueMetric; 3] = [
            ("queue_rx_packets", "Packets received per rx queue", |s| &s.q_ipackets),
            ("queue_tx_packets", "Packets sent per tx queue", |s| &s.q_opackets),
            ("queue_errors", "Errors per queue", |s| &s.q_errors),
        ];
        for (name, help, get) in queue_metrics {
            let _ = writeln!(o, "# HELP ironsa_dpdk_port_{name}_total {help}.");
            let _ = writeln!(o, "# TYPE ironsa_dpdk_port_{name}_total counter");
            for p in &self.ports {
                for (q, v) in get(&p.stats).iter().enumerate().filter(|(_, v)| **v != 0) {
                    let _ = writeln!(
                        o,
                        "ironsa_dpdk_port_{name}_total{{port=\"{}\",queue=\"{q}\"}} {v}",
                        p.name
                    );
                }
            }
        }
        let names = self.loops.first().map(|l| l.io.fields()).unwrap_or_default();
        for (i, (name, _)) in names.iter().enumerate() {
            let _ = writeln!(o, "# TYPE ironsa_dpdk_loop_{name}_total counter");
            for l in &self.loops {
                let _ = writeln!(
                    o,
                    "ironsa_dpdk_loop_{name}_total{{loop=\"{}\"}} {}",
                    l.id,
                    l.io.fields()[i].1
                );
            }
        }
        for (dir, get) in [
            (
                "inbound",
                (|l: &LoopReport| l.inbound) as fn(&LoopReport) -> CountersSnapshot,
            ),
            ("outbound", |l: &LoopReport| l.outbound),
        ] {
            let _ = writeln!(o, "# TYPE ironsa_dpdk_esp_{dir}_packets_total counter");
            for l in &self.loops {
                let _ = writeln!(
                    o,
                    "ironsa_dpdk_esp_{dir}_packets_total{{loop=\"{}\"}} {}",
                    l.id,
                    get(l).packets
                );
            }
            let _ = writeln!(o, "# TYPE ironsa_dpdk_esp_{dir}_bytes_total counter");
            for l in &self.loops {
                let _ = writeln!(
                    o,
                    "ironsa_dpdk_esp_{dir}_bytes_total{{loop=\"{}\"}} {}",
                    l.id,
                    get(l).bytes
                );
            }
            let _ = writeln!(o, "# TYPE ironsa_dpdk_esp_{dir}_drops_total counter");
            for l in &self.loops {
                for r in DropReason::ALL {
                    let v = get(l).dropped(r);
                    if v != 0 {
                        let _ = writeln!(
                            o,
                            "ironsa_dpdk_esp_{dir}_drops_total{{loop=\"{}\",reason=\"{}\"}} {v}",
                            l.id,
                            r.name()
                        );
                    }
                }
            }
        }
        for (name, v) in [
            ("offloaded", self.inline_sas_offloaded),
            ("fallback", self.inline_sas_fallback),
        ] {
            let _ = writeln!(o, "# TYPE ironsa_dpdk_inline_sas_{name}_total counter");
            let _ = writeln!(o, "ironsa_dpdk_inline_sas_{name}_total {v}");
        }
        if let Some(dev) = &self.crypto_device {
            for (name, get) in [
                (
                    "enqueued",
                    (|s: &LoopSnapshot| s.crypto_enqueued) as fn(&LoopSnapshot) -> u64,
                ),
                ("dequeued", |s| s.crypto_dequeued),
                ("errors", |s| s.crypto_errors),
            ] {
                let _ = writeln!(o, "# TYPE ironsa_dpdk_cryptodev_{name}_total counter");
                let _ = writeln!(
                    o,
                    "ironsa_dpdk_cryptodev_{name}_total{{device=\"{dev}\"}} {}",
                    self.total(get)
                );
            }
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text() {
        let c = LoopCounters::default();
        LoopCounters::add(&c.rx_frames, 5);
        LoopCounters::add(&c.crypto_cpu_fallback, 2);
        let mut inbound = CountersSnapshot::default();
        inbound.drops[DropReason::Replay as usize] = 3;
        let report = DpdkCounters {
            ports: vec![PortCounters {
                name: "net_ring0".into(),
                id: 0,
                stats: ffi::PortStats {
                    ipackets: 7,
                    q_ipackets: vec![7, 0],
                    ..Default::default()
                },
            }],
            loops: vec![LoopReport {
                id: 0,
                io: c.snapshot(),
                inbound,
                outbound: CountersSnapshot::default(),
            }],
            crypto_device: Some("crypto_aesni_gcm0".into()),
            inline_sas_offloaded: 0,
            inline_sas_fallback: 4,
        };
        let t = report.prometheus();
        for line in [
            "ironsa_dpdk_port_rx_packets_total{port=\"net_ring0\"} 7",
            "ironsa_dpdk_port_queue_rx_packets_total{port=\"net_ring0\",queue=\"0\"} 7",
            "ironsa_dpdk_loop_rx_frames_total{loop=\"0\"} 5",
            "ironsa_dpdk_loop_crypto_cpu_fallback_total{loop=\"0\"} 2",
            "ironsa_dpdk_esp_inbound_drops_total{loop=\"0\",reason=\"replay\"} 3",
            "ironsa_dpdk_cryptodev_enqueued_total{device=\"crypto_aesni_gcm0\"} 0",
            "ironsa_dpdk_inline_sas_fallback_total 4",
        ] {
            assert!(t.lines().any(|l| l == line), "missing {line} in\n{t}");
        }
        assert_eq!(report.total(|s| s.rx_frames), 5);
    }
}
