//! Inline crypto (rte_security `INLINE_CRYPTO`, AES-GCM): the NIC encrypts
//! ESP on transmit and decrypts and verifies it on receive; software keeps
//! everything else (policy, SA choice, sequence numbers, ESP framing and
//! padding, replay window, trailer checks, lifetimes, counters).
//!
//! SAs are chosen one by one: an SA is offloaded when the port that carries
//! it (the one owning its local address) has an rte_security context whose
//! capabilities match it (ESP, tunnel mode, direction, ESN / NAT-T options,
//! AES-GCM key size) and the session is created; otherwise it runs in
//! software on the CPU (counted). On transmit the engine builds the ESP frame
//! with an empty ICV and marks the mbuf (`RTE_MBUF_F_TX_SEC_OFFLOAD`,
//! l2/l3 lengths, `rte_security_set_pkt_metadata`); on receive it trusts
//! `RTE_MBUF_F_RX_SEC_OFFLOAD` only for SAs it offloaded, drops
//! `..._FAILED` packets as ICV failures, and finishes the ESP checks.
//!
//! The NIC keeps no replay window here (software does) and the outer header
//! is built in software, so the session's tunnel addresses only select the SA.
//!
//! Each offloaded SA also gets an rte_flow rule matching its outer addresses,
//! NAT-T port and SPI with a `SECURITY` action naming the session (NICs
//! decrypt only what such a rule selects); an ingress rule delivers to the
//! queue of the loop that owns the SPI (`spi % loops`, as software steering
//! does) when the driver allows. An SA whose rule the driver refuses stays in
//! software (its session is destroyed), except an egress SA on a driver
//! without egress rules, which encrypts from the packet metadata alone.

use super::DpdkError;
use super::counters::LoopCounters;
use super::frame::ETH_HDR_LEN;
use super::lookaside::{drop_in, drop_out, finish_decap, frame_esp, next_packet_seq, policy_sa};
use crate::buf::PacketBuffer;
use crate::esp::aead::{DirectGcm, EncAlg};
use crate::esp::{ESP_HEADER_LEN, Mode};
use crate::ip;
use crate::sad::{Direction, SaId, SaParams, Sad};
use crate::spd::Spd;
use crate::stats::DropReason;
use crate::worker::{InboundKind, PacketMeta, Verdict, Worker};
use dashmap::DashMap;
use ffi::{InlineIpsecSa, InlineSession, InlineSessionPool, Mbuf, RxSecurity, SecurityFlow};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The inline session description of an SA, or `None` when inline crypto
/// cannot carry it (not AES-GCM). The key and salt are borrowed from `p`.
pub fn inline_sa(p: &SaParams) -> Option<InlineIpsecSa<'_>> {
    if !matches!(p.keys.enc, EncAlg::AesGcm16_128 | EncAlg::AesGcm16_256) {
        return None;
    }
    let material = &p.keys.enc_key[..];
    if material.len() != p.keys.enc.key_material_len() {
        return None;
    }
    let (key, salt) = material.split_at(material.len() - 4);
    let egress = p.direction == Direction::Outbound;
    // Tunnel endpoints as the packets carry them: egress local → peer, ingress peer → local.
    let (src, dst) = if egress {
        (p.local, p.remote)
    } else {
        (p.remote, p.local)
    };
    let udp = p.udp_encap.map(|u| {
        if egress {
            (u.local_port, u.remote_port)
        } else {
            (u.remote_port, u.local_port)
        }
    });
    Some(InlineIpsecSa {
        spi: p.spi,
        salt: [salt[0], salt[1], salt[2], salt[3]],
        egress,
        tunnel: (p.mode == Mode::Tunnel).then_some((src, dst)),
        ipv6: p.local.is_ipv6(),
        esn: p.esn,
        esn_initial: 0,
        udp,
        // The replay window is software's (finish_decap); the NIC checks none.
        replay_window: 0,
        key,
    })
}

/// An offloaded SA direction: its session and the flow rule that selects its packets.
#[derive(Debug)]
struct Offloaded {
    /// Declared first: the rule goes before the session it names.
    _flow: Option<SecurityFlow>,
    session: InlineSession,
}

/// The receive queue an inbound SA's ingress rule delivers to: the loop
/// software steering would hand its SPI to.
pub fn rule_queue(spi: u32, loops: usize) -> u16 {
    u16::try_from(spi as usize % loops.max(1)).unwrap_or(0)
}

/// Inline sessions of the offloaded SAs, shared by the backend and its loops.
pub struct InlineSas {
    /// Session pools of the capable ports, by backend port index.
    ports: Vec<Option<InlineSessionPool>>,
    /// Poll loops (one receive queue each) of the backend.
    loops: usize,
    sas: DashMap<SaId, Arc<Offloaded>>,
    offloaded: AtomicU64,
    fallback: AtomicU64,
}

impl std::fmt::Debug for InlineSas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InlineSas")
            .field("capable_ports", &self.ports.iter().filter(|p| p.is_some()).count())
            .field("sessions", &self.sas.len())
            .finish()
    }
}

impl InlineSas {
    /// Inline sessions over the given per-port pools (`None`: the port has
    /// no inline IPsec and its SAs stay in software), for a backend of
    /// `loops` poll loops.
    pub fn new(ports: Vec<Option<InlineSessionPool>>, loops: usize) -> Self {
        Self {
            ports,
            loops: loops.max(1),
            sas: DashMap::new(),
            offloaded: AtomicU64::new(0),
            fallback: AtomicU64::new(0),
        }
    }

    /// Offloads SA `id` (carried by port index `port`) when the port can take
    /// it; `Ok(false)` (counted as a fallback) when it stays in software.
    /// Transport-mode SAs stay in software (the framing here is tunnel mode).
    pub fn register(&self, id: SaId, p: &SaParams, port: usize) -> Result<bool, DpdkError> {
        let pool = self.ports.get(port).and_then(Option::as_ref);
        let offloaded = match (pool, inline_sa(p)) {
            (Some(pool), Some(sa)) if p.mode == Mode::Tunnel && pool.supports(&sa) => self.offload(pool, &sa),
            _ => None,
        };
        match offloaded {
            Some(o) => {
                self.sas.insert(id, Arc::new(o));
                self.offloaded.fetch_add(1, Ordering::Relaxed);
                Ok(true)
            }
            None => {
                self.fallback.fetch_add(1, Ordering::Relaxed);
                Ok(false)
            }
        }
    }

    /// The session and flow rule of `sa`, or `None` (logged) when the port
    /// refuses either.
    fn offload(&self, pool: &InlineSessionPool, sa: &InlineIpsecSa<'_>) -> Option<Offloaded> {
        let session = match pool.create(sa) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(spi = sa.spi, error = %e, "inline IPsec session not created; SA stays in software");
                return None;
            }
        };
        let queue = rule_queue(sa.spi, self.loops);
        match session.install_flow(sa, queue) {
            Ok(flow) => {
                tracing::debug!(spi = sa.spi, fate = ?flow.fate(), "inline IPsec flow rule installed");
                Some(Offloaded {
                    _flow: Some(flow),
                    session,
                })
            }
            // Drivers that take egress SAs from the packet metadata alone have no egress rules.
            Err(ffi::Error::Unsupported(why)) if sa.egress => {
                tracing::debug!(spi = sa.spi, %why, "no egress flow rule on this port; metadata only");
                Some(Offloaded { _flow: None, session })
            }
            Err(e) => {
                tracing::warn!(
                    spi = sa.spi,
                    error = %e,
                    "inline IPsec flow rule refused; SA stays in software"
                );
                None
            }
        }
    }

    /// Forgets SA `id` (its session is destroyed when no loop holds it).
    pub fn unregister(&self, id: SaId) {
        self.sas.remove(&id);
    }

    /// SA directions offloaded so far.
    pub fn offloaded(&self) -> u64 {
        self.offloaded.load(Ordering::Relaxed)
    }

    /// SA directions left in software so far.
    pub fn fallback(&self) -> u64 {
        self.fallback.load(Ordering::Relaxed)
    }

    /// Number of SAs with a live session.
    pub fn len(&self) -> usize {
        self.sas.len()
    }

    /// True when no SA has a live session.
    pub fn is_empty(&self) -> bool {
        self.sas.is_empty()
    }

    fn get(&self, id: SaId) -> Option<Arc<Offloaded>> {
        self.sas.get(&id).map(|e| e.value().clone())
    }
}

/// One poll loop's inline crypto path.
#[derive(Debug)]
pub struct InlineEngine {
    sas: Arc<InlineSas>,
    counters: Arc<LoopCounters>,
}

impl InlineEngine {
    /// An engine over the shared inline sessions.
    pub fn new(sas: Arc<InlineSas>, counters: Arc<LoopCounters>) -> Self {
        Self { sas, counters }
    }

    /// Encapsulates a burst of inner packets (`pkts`, drained) into `out`:
    /// packets of offloaded SAs are framed for the NIC, the rest go through
    /// `worker` (counted as inline fallbacks when ESP).
    pub fn encap_burst<G: DirectGcm>(
        &mut self,
        worker: &mut Worker<G>,
        sad: &Sad,
        spd: &Spd,
        pkts: &mut Vec<Mbuf>,
        out: &mut Vec<(Mbuf, Verdict)>,
    ) {
        let wc = worker.counters();
        for mut m in pkts.drain(..) {
            let sa = policy_sa(&m, spd, sad);
            let session = sa.as_ref().and_then(|sa| self.sas.get(sa.id));
            let (Some(sa), Some(session)) = (sa, session) else {
                let v = worker.outbound_packet(&mut m);
                if matches!(v, Verdict::ToPeer { .. }) {
                    LoopCounters::add(&self.counters.inline_cpu_fallback, 1);
                }
                out.push((m, v));
                continue;
            };
            if sa.worker != worker.id() {
                out.push((m, Verdict::Redirect(sa.worker)));
                continue;
            }
            let seq = match next_packet_seq(&sa, sad) {
                Ok(s) => s,
                Err(r) => {
                    out.push((m, drop_out(&wc, &sa, r)));
                    continue;
                }
            };
            let inner_len = PacketBuffer::len(&m) as u64;
            if let Err(r) = frame_esp(&mut m, &sa, seq) {
                out.push((m, drop_out(&wc, &sa, r)));
                continue;
            }
            let path = sa.path();
            let ports = path.udp_encap.map(|u| (u.local_port, u.remote_port));
            if ip::prepend_outer(&mut m, path.local, path.remote, ports).is_err() {
                out.push((m, drop_out(&wc, &sa, DropReason::Oversize)));
                continue;
            }
            let ipv6 = matches!(path.local, IpAddr::V6(_));
            let l3 = if ipv6 { 40 } else { 20 };
            // Never send a framed but unencrypted packet: no metadata, no packet.
            if session
                .session
                .prepare_tx(&mut m, ETH_HDR_LEN as u16, l3, ipv6)
                .is_err()
            {
                LoopCounters::add(&self.counters.crypto_errors, 1);
                out.push((m, drop_out(&wc, &sa, DropReason::Malformed)));
                continue;
            }
            sa.account(1, inner_len, sad.events());
            wc.outbound.add(1, inner_len);
            out.push((
                m,
                Verdict::ToPeer {
                    src: path.local,
                    dst: path.remote,
                    udp: path.udp_encap,
                },
            ));
        }
    }

    /// Decapsulates a burst of ESP packets (starting at the SPI; `pkts`
    /// drained, `meta[i]` describes `pkts[i]`) into `out`. Packets the NIC
    /// processed for an offloaded SA are checked and stripped here; the
    /// rest go through `worker`.
    pub fn decap_burst<G: DirectGcm>(
        &mut self,
        worker: &mut Worker<G>,
        sad: &Sad,
        kind: InboundKind,
        pkts: &mut Vec<Mbuf>,
        meta: &[PacketMeta],
        out: &mut Vec<(Mbuf, Verdict)>,
    ) {
        let wc = worker.counters();
        for (mut m, meta) in pkts.drain(..).zip(meta) {
            let status = m.rx_security();
            let header = crate::esp::parse_header(PacketBuffer::data(&m)).ok();
            let sa = header.and_then(|(spi, _)| sad.inbound(spi, meta.dst));
            let offloaded = sa.as_ref().is_some_and(|sa| self.sas.get(sa.id).is_some());
            let (Some((_, seq_lo)), Some(sa), true, false) =
                (header, sa, offloaded, status == RxSecurity::NotProcessed)
            else {
                if status != RxSecurity::NotProcessed {
                    // The NIC touched a packet of an SA we did not offload
                    // (removed meanwhile): its bytes are not ESP any more.
                    LoopCounters::add(&self.counters.rx_unsupported, 1);
                    continue;
                }
                let v = worker.inbound_packet(kind, &mut m, meta);
                if v == Verdict::ToTunnel {
                    LoopCounters::add(&self.counters.inline_cpu_fallback, 1);
                }
                out.push((m, v));
                continue;
            };
            if status == RxSecurity::Failed {
                out.push((m, drop_in(&wc, &sa, DropReason::IcvFailure)));
                continue;
            }
            let len = PacketBuffer::len(&m);
            if len < ESP_HEADER_LEN + 8 + 16 + 4 || (len - ESP_HEADER_LEN - 8 - 16) % 4 != 0 {
                out.push((m, drop_in(&wc, &sa, DropReason::Malformed)));
                continue;
            }
            let (budget_p, budget_b) = sa.hard_budget();
            if sa.is_expired() || budget_p == 0 || budget_b == 0 {
                out.push((m, drop_in(&wc, &sa, DropReason::Expired)));
                continue;
            }
            let checked = sa.replay.lock().unwrap_or_else(|e| e.into_inner()).check(seq_lo);
            let seq = match checked {
                Ok(s) => s,
                Err(e) => {
                    out.push((m, drop_in(&wc, &sa, e.into())));
                    continue;
                }
            };
            let v = match finish_decap(&mut m, &sa, seq) {
                Ok(()) => {
                    let n = PacketBuffer::len(&m) as u64;
                    sa.account(1, n, sad.events());
                    wc.inbound.add(1, n);
                    if kind == InboundKind::Udp {
                        sad.note_source(&sa, std::net::SocketAddr::new(meta.src, meta.src_port));
                    }
                    Verdict::ToTunnel
                }
                Err(r) => drop_in(&wc, &sa, r),
            };
            out.push((m, v));
        }
    }
}
