//! The per-core burst loop pieces: classify → decap/encap → verdict.
//!
//! A [`Worker`] owns its scratch state (CBC IV pool, SA cache) and counters.
//! It takes a burst of packet buffers and writes one [`Verdict`] per packet;
//! the I/O layer then transmits according to the verdicts. No allocation
//! happens per packet.
//!
//! Sequence numbers: each outbound SA is pinned to one worker
//! ([`crate::sad::OutboundSa::worker`]); a worker that gets a packet for an SA
//! pinned elsewhere answers [`Verdict::Redirect`] so the caller hands the packet
//! to the owner, keeping a single writer per SA.

use crate::buf::PacketBuffer;
use crate::esp::aead::IvSource;
use crate::esp::decap::{DecapParams, decap};
use crate::esp::encap::{EncapParams, encap};
use crate::esp::{EspError, Mode, parse_header};
use crate::ip::{self, FlowKey};
use crate::sad::{InboundSa, OutboundSa, Sad, UdpEncap};
use crate::spd::{PolicyAction, Spd};
use crate::stats::{Counters, DropReason};
use std::net::IpAddr;
use std::sync::Arc;

/// UDP port of IKE and ESP-in-UDP after NAT detection (RFC 3948).
pub const NAT_T_PORT: u16 = 4500;
/// The single-byte NAT keepalive payload (RFC 3948 §2.3).
pub const NAT_KEEPALIVE: u8 = 0xFF;
/// Length of the non-ESP marker that precedes IKE on port 4500.
pub const NON_ESP_MARKER_LEN: usize = 4;

/// Outer addressing of a received packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketMeta {
    /// Outer source (the peer, after NAT).
    pub src: IpAddr,
    /// Outer destination, when the receive path knows it.
    pub dst: Option<IpAddr>,
    /// UDP source port (0 for raw ESP).
    pub src_port: u16,
}

/// How an inbound burst arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboundKind {
    /// UDP payloads from port 4500: ESP, IKE behind a non-ESP marker, or keepalives.
    Udp,
    /// Raw ESP (IP protocol 50) payloads starting at the SPI.
    RawEsp,
}

/// What to do with a packet after processing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Inbound: the buffer holds the inner IP packet; write it to the tunnel device.
    ToTunnel,
    /// Outbound: the buffer holds the ESP packet (or full outer packet when the
    /// worker builds outer headers); send it from `src` to `dst`.
    ToPeer {
        /// Our outer address.
        src: IpAddr,
        /// Peer outer address.
        dst: IpAddr,
        /// UDP ports when NAT-T is used.
        udp: Option<UdpEncap>,
    },
    /// Outbound: policy says send in the clear; the buffer is unchanged.
    Bypass,
    /// Inbound on port 4500: an IKE message (marker removed) for the control plane.
    Ike,
    /// Inbound on port 4500: a NAT keepalive; nothing to do.
    Keepalive,
    /// Outbound: the SA is pinned to this other worker; hand the packet over unchanged.
    Redirect(usize),
    /// Dropped (already counted).
    Drop(DropReason),
}

/// Per-worker counters.
#[derive(Debug, Default)]
pub struct WorkerCounters {
    /// Inbound (decapsulated) packets and inbound drops.
    pub inbound: Counters,
    /// Outbound (encapsulated) packets and outbound drops.
    pub outbound: Counters,
}

/// One data-plane worker.
pub struct Worker {
    id: usize,
    sad: Arc<Sad>,
    spd: Arc<Spd>,
    ivs: IvSource,
    counters: Arc<WorkerCounters>,
    build_outer: bool,
    enforce_pinning: bool,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// Worker `id` over the shared SAD and SPD. By default it produces bare
    /// ESP packets (sockets add outer headers) and enforces SA pinning.
    pub fn new(id: usize, sad: Arc<Sad>, spd: Arc<Spd>) -> Self {
        Self {
            id,
            sad,
            spd,
            ivs: IvSource::new(),
            counters: Arc::new(WorkerCounters::default()),
            build_outer: false,
            enforce_pinning: true,
        }
    }

    /// Also prepend outer IP (and UDP) headers to outbound packets (raw ports, DPDK).
    pub fn with_outer_headers(mut self, on: bool) -> Self {
        self.build_outer = on;
        self
    }

    /// Process outbound packets of any SA here (single-worker setups and benches).
    pub fn without_pinning(mut self) -> Self {
        self.enforce_pinning = false;
        self
    }

    /// This worker's id.
    pub fn id(&self) -> usize {
        self.id
    }

    /// Shared handle to this worker's counters.
    pub fn counters(&self) -> Arc<WorkerCounters> {
        self.counters.clone()
    }

    /// Processes a burst of received packets. `meta[i]` describes `pkts[i]`;
    /// `verdicts` must be at least as long as `pkts`.
    pub fn inbound_burst<B: PacketBuffer>(
        &mut self,
        kind: InboundKind,
        pkts: &mut [B],
        meta: &[PacketMeta],
        verdicts: &mut [Verdict],
    ) {
        let mut cache: Option<Arc<InboundSa>> = None;
        for ((pkt, m), v) in pkts.iter_mut().zip(meta).zip(verdicts.iter_mut()) {
            *v = self.inbound_one(kind, pkt, m, &mut cache);
        }
    }

    /// Processes one received packet (see [`Worker::inbound_burst`]).
    pub fn inbound_packet<B: PacketBuffer>(
        &mut self,
        kind: InboundKind,
        pkt: &mut B,
        meta: &PacketMeta,
    ) -> Verdict {
        self.inbound_one(kind, pkt, meta, &mut None)
    }

    fn inbound_one<B: PacketBuffer>(
        &mut self,
        kind: InboundKind,
        pkt: &mut B,
        meta: &PacketMeta,
        cache: &mut Option<Arc<InboundSa>>,
    ) -> Verdict {
        if kind == InboundKind::Udp {
            let d = pkt.data();
            if d == [NAT_KEEPALIVE] {
                return Verdict::Keepalive;
            }
            if d.len() >= NON_ESP_MARKER_LEN && d[..NON_ESP_MARKER_LEN] == [0, 0, 0, 0] {
                return match pkt.trim_front(NON_ESP_MARKER_LEN) {
                    Ok(()) => Verdict::Ike,
                    Err(_) => self.drop_in(None, DropReason::Malformed),
                };
            }
        }
        let spi = match parse_header(pkt.data()) {
            Ok((spi, _)) => spi,
            Err(_) => return self.drop_in(None, DropReason::Malformed),
        };
        let sa = match cache {
            Some(sa) if sa.spi == spi && meta.dst.is_none_or(|d| d == sa.local) => sa.clone(),
            _ => match self.sad.inbound(spi, meta.dst) {
                Some(sa) => {
                    *cache = Some(sa.clone());
                    sa
                }
                None => return self.drop_in(None, DropReason::NoSa),
            },
        };
        if sa.is_expired() {
            return self.drop_in(Some(&sa), DropReason::Expired);
        }
        let params = DecapParams {
            cipher: &sa.cipher,
            esn: sa.esn,
            mode: sa.mode,
            outer_src: meta.src,
            outer_dst: meta.dst.unwrap_or(sa.local),
            udp_encapsulated: kind == InboundKind::Udp,
        };
        let result = {
            let mut window = sa.replay.lock().unwrap_or_else(|e| e.into_inner());
            decap(pkt, &params, &mut window)
        };
        if let Err(e) = result {
            return self.drop_in(Some(&sa), e.into());
        }
        if sa.mode == Mode::Tunnel && !(sa.local_ts.is_empty() && sa.remote_ts.is_empty()) {
            match ip::flow_key(pkt.data()) {
                Some(flow) if sa.allows(&flow) => {}
                _ => return self.drop_in(Some(&sa), DropReason::PolicyMismatch),
            }
        }
        let len = pkt.len();
        sa.account(len, self.sad.events());
        self.counters.inbound.count(len);
        Verdict::ToTunnel
    }

    fn drop_in(&self, sa: Option<&InboundSa>, r: DropReason) -> Verdict {
        self.counters.inbound.drop_one(r);
        if let Some(sa) = sa {
            sa.counters.drop_one(r);
        }
        Verdict::Drop(r)
    }

    fn drop_out(&self, sa: Option<&OutboundSa>, r: DropReason) -> Verdict {
        self.counters.outbound.drop_one(r);
        if let Some(sa) = sa {
            sa.counters.drop_one(r);
        }
        Verdict::Drop(r)
    }

    /// Processes a burst of inner IP packets read from the tunnel device.
    pub fn outbound_burst<B: PacketBuffer>(&mut self, pkts: &mut [B], verdicts: &mut [Verdict]) {
        let mut cache: Option<(FlowKey, Arc<OutboundSa>)> = None;
        for (pkt, v) in pkts.iter_mut().zip(verdicts.iter_mut()) {
            *v = self.outbound_one(pkt, &mut cache);
        }
    }

    /// Processes one inner IP packet (see [`Worker::outbound_burst`]).
    pub fn outbound_packet<B: PacketBuffer>(&mut self, pkt: &mut B) -> Verdict {
        self.outbound_one(pkt, &mut None)
    }

    fn outbound_one<B: PacketBuffer>(
        &mut self,
        pkt: &mut B,
        cache: &mut Option<(FlowKey, Arc<OutboundSa>)>,
    ) -> Verdict {
        let Some(flow) = ip::flow_key(pkt.data()) else {
            return self.drop_out(None, DropReason::Malformed);
        };
        let sa = match cache {
            // Same flow as the previous packet of the burst: same policy decision.
            Some((f, sa)) if *f == flow => sa.clone(),
            _ => {
                let Some(m) = self.spd.lookup(&flow) else {
                    return self.drop_out(None, DropReason::NoPolicy);
                };
                let id = match m.action {
                    PolicyAction::Protect(id) => id,
                    PolicyAction::Bypass => return Verdict::Bypass,
                    PolicyAction::Discard => {
                        return self.drop_out(None, DropReason::PolicyDiscard);
                    }
                };
                let Some(sa) = self.sad.outbound(id) else {
                    return self.drop_out(None, DropReason::NoSa);
                };
                *cache = Some((flow, sa.clone()));
                sa
            }
        };
        if self.enforce_pinning && sa.worker != self.id {
            return Verdict::Redirect(sa.worker);
        }
        if sa.is_expired() {
            return self.drop_out(Some(&sa), DropReason::Expired);
        }
        let inner_len = pkt.len();
        let seq = match sa.next_seq(self.sad.events()) {
            Ok(s) => s,
            Err(e) => return self.drop_out(Some(&sa), e.into()),
        };
        let params = EncapParams {
            cipher: &sa.cipher,
            spi: sa.spi,
            seq,
            esn: sa.esn,
            mode: sa.mode,
            max_esp_len: sa.max_esp_len,
        };
        if let Err(e) = encap(pkt, &params, &mut self.ivs) {
            return self.drop_out(Some(&sa), e.into());
        }
        if self.build_outer {
            let ports = sa.udp_encap.map(|u| (u.local_port, u.remote_port));
            if ip::prepend_outer(pkt, sa.local, sa.remote, ports).is_err() {
                return self.drop_out(Some(&sa), EspError::Oversize("outer headers").into());
            }
        }
        sa.account(inner_len, self.sad.events());
        self.counters.outbound.count(inner_len);
        Verdict::ToPeer {
            src: sa.local,
            dst: sa.remote,
            udp: sa.udp_encap,
        }
    }
}

/// Writes a NAT keepalive (RFC 3948 §2.3) into `buf`.
pub fn write_nat_keepalive<B: PacketBuffer>(buf: &mut B) -> Result<(), crate::buf::BufError> {
    let n = buf.len();
    buf.trim_back(n)?;
    buf.append(1)?[0] = NAT_KEEPALIVE;
    Ok(())
}

/// Prepends the non-ESP marker to an IKE message sent on port 4500 (RFC 3948 §2.2).
pub fn add_non_esp_marker<B: PacketBuffer>(buf: &mut B) -> Result<(), crate::buf::BufError> {
    buf.prepend(NON_ESP_MARKER_LEN)?.fill(0);
    Ok(())
}
