//! Lookaside crypto: ESP through a DPDK crypto device (`crypto_aesni_gcm`,
//! `crypto_aesni_mb`, `crypto_openssl`, QAT...) with enqueue/dequeue bursts.
//!
//! The ESP framing is done here, in place on the mbufs, around the device's
//! AES-GCM AEAD operation (RFC 4106): ESP header, IV = the 64-bit sequence
//! number (as the CPU path, so both produce identical packets), padding and
//! trailer; the device gets nonce = salt || IV and AAD = SPI || SEQ (or
//! SPI || SEQ-high || SEQ-low with ESN). Tunnel-mode AES-GCM SAs whose key
//! size the device takes are offloaded; every other SA runs on the CPU
//! through the [`crate::worker::Worker`] (counted as fallbacks).

use super::DpdkError;
use super::counters::LoopCounters;
use crate::buf::PacketBuffer;
use crate::esp::aead::{CipherKeys, DirectGcm};
use crate::esp::encap::esp_len_for;
use crate::esp::{ESP_HEADER_LEN, Mode, NEXT_HEADER_IPV4, NEXT_HEADER_IPV6, NEXT_HEADER_NONE};
use crate::ip;
use crate::sad::{InboundSa, OutboundSa, SaId, Sad};
use crate::spd::{PolicyAction, Spd};
use crate::stats::DropReason;
use crate::worker::{InboundKind, PacketMeta, Verdict, Worker, WorkerCounters};
use dashmap::DashMap;
use ffi::{
    AeadDirection, AeadParams, CryptoDev, CryptoOp, CryptoOpPool, CryptoQueuePair, Mbuf, OpStatus, SessionPool,
    SymSession,
};
use std::sync::Arc;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// IV carried in each ESP packet (the sequence number).
const IV_LEN: usize = 8;
/// AES-GCM ICV length.
const ICV_LEN: usize = 16;
/// Polls of an empty device before in-flight operations count as lost.
const MAX_IDLE_POLLS: u32 = 1_000_000;

/// The 4-byte GCM salt of an SA (zeroized on drop).
#[derive(Zeroize, ZeroizeOnDrop)]
struct Salt([u8; 4]);

/// The device session of one SA.
struct OffloadedSa {
    session: SymSession,
    salt: Salt,
    esn: bool,
}

/// Crypto device sessions of the offloaded SAs, shared by all poll loops.
pub struct CryptoSessions {
    dev: CryptoDev,
    pool: SessionPool,
    sas: DashMap<SaId, Arc<OffloadedSa>>,
}

impl std::fmt::Debug for CryptoSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CryptoSessions")
            .field("device", &self.dev.name())
            .field("sessions", &self.sas.len())
            .finish()
    }
}

impl CryptoSessions {
    /// A session table on `dev`, sessions from `pool`.
    pub fn new(dev: CryptoDev, pool: SessionPool) -> Self {
        Self {
            dev,
            pool,
            sas: DashMap::new(),
        }
    }

    /// The crypto device.
    pub fn device(&self) -> CryptoDev {
        self.dev
    }

    /// Creates the device session of SA `id` if the device can take it:
    /// tunnel-mode AES-GCM with a key size the device supports. Returns
    /// `false` (the SA then runs on the CPU) otherwise.
    pub fn register(
        &self,
        id: SaId,
        direction: crate::sad::Direction,
        mode: Mode,
        esn: bool,
        keys: &CipherKeys,
    ) -> Result<bool, DpdkError> {
        if mode != Mode::Tunnel {
            return Ok(false);
        }
        let Some(key) = super::cpu_crypto::aes_gcm_key(keys)? else {
            return Ok(false);
        };
        let Some(caps) = self.dev.aes_gcm_caps() else {
            return Ok(false);
        };
        let aad_len: u16 = if esn { 12 } else { 8 };
        if !caps.key_size.contains(key.len() as u16)
            || !caps.aad_size.contains(aad_len)
            || !caps.iv_size.contains(12)
            || !caps.digest_size.contains(ICV_LEN as u16)
        {
            return Ok(false);
        }
        let dir = match direction {
            crate::sad::Direction::Outbound => AeadDirection::Encrypt,
            crate::sad::Direction::Inbound => AeadDirection::Decrypt,
        };
        let session = SymSession::aes_gcm(&self.dev, &self.pool, dir, key, 12, aad_len, ICV_LEN as u16)?;
        // The salt is the last 4 bytes of the key material (RFC 4106 §8.1).
        let mut s = [0u8; 4];
        s.copy_from_slice(&keys.enc_key[key.len()..key.len() + 4]);
        self.sas.insert(
            id,
            Arc::new(OffloadedSa {
                session,
                salt: Salt(s),
                esn,
            }),
        );
        Ok(true)
    }

    /// Forgets SA `id` (its session is freed when no operation uses it).
    pub fn unregister(&self, id: SaId) {
        self.sas.remove(&id);
    }

    /// Number of offloaded SAs.
    pub fn len(&self) -> usize {
        self.sas.len()
    }

    /// True when no SA is offloaded.
    pub fn is_empty(&self) -> bool {
        self.sas.is_empty()
    }

    fn get(&self, id: SaId) -> Option<Arc<OffloadedSa>> {
        self.sas.get(&id).map(|e| e.value().clone())
    }
}

/// What a queued operation belongs to.
enum Pending {
    Encap {
        mbuf: usize,
        sa: Arc<OutboundSa>,
        inner_len: u64,
    },
    Decap {
        mbuf: usize,
        sa: Arc<InboundSa>,
        seq: u64,
        /// The outer source of a UDP-encapsulated packet (NAT rebinding is
        /// noted once it authenticates).
        source: Option<std::net::SocketAddr>,
    },
}

impl Pending {
    fn mbuf(&self) -> usize {
        match self {
            Pending::Encap { mbuf, .. } | Pending::Decap { mbuf, .. } => *mbuf,
        }
    }
}

/// One poll loop's lookaside engine: its own queue pair and operation pool.
pub struct LookasideEngine {
    sessions: Arc<CryptoSessions>,
    qp: CryptoQueuePair,
    ops: CryptoOpPool,
    queued: Vec<CryptoOp>,
    done: Vec<CryptoOp>,
    pending: Vec<Pending>,
    counters: Arc<LoopCounters>,
}

impl std::fmt::Debug for LookasideEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LookasideEngine")
            .field("qp", &self.qp)
            .finish_non_exhaustive()
    }
}

/// RFC 4106 nonce: salt || IV.
fn nonce(salt: &[u8; 4], iv: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[..4].copy_from_slice(salt);
    n[4..].copy_from_slice(&iv.to_be_bytes());
    n
}

/// RFC 4106 §5 AAD; returns it and its length.
fn aad(spi: u32, seq: u64, esn: bool) -> ([u8; 12], usize) {
    let mut a = [0u8; 12];
    a[..4].copy_from_slice(&spi.to_be_bytes());
    if esn {
        a[4..8].copy_from_slice(&((seq >> 32) as u32).to_be_bytes());
        a[8..].copy_from_slice(&(seq as u32).to_be_bytes());
        (a, 12)
    } else {
        a[4..8].copy_from_slice(&(seq as u32).to_be_bytes());
        (a, 8)
    }
}

impl LookasideEngine {
    /// An engine on queue pair `qp` of the sessions' device, with operations from `ops`.
    pub fn new(
        sessions: Arc<CryptoSessions>,
        qp: CryptoQueuePair,
        ops: CryptoOpPool,
        counters: Arc<LoopCounters>,
    ) -> Self {
        Self {
            sessions,
            qp,
            ops,
            queued: Vec::with_capacity(ffi::MAX_CRYPTO_BURST),
            done: Vec::with_capacity(ffi::MAX_CRYPTO_BURST),
            pending: Vec::with_capacity(ffi::MAX_CRYPTO_BURST),
            counters,
        }
    }

    /// Prepares one AEAD op on `m` (taken by the op; `Ok(false)` when the
    /// device rejected the op, which freed the packet) or hands `m` back.
    fn queue_op(&mut self, sa: &OffloadedSa, m: Mbuf, iv: u64, spi: u32, seq: u64) -> Result<bool, (Mbuf, DropReason)> {
        let len = usize::from(m.data_len());
        let Some(ct_len) = len.checked_sub(ESP_HEADER_LEN + IV_LEN + ICV_LEN) else {
            return Err((m, DropReason::Malformed));
        };
        let mut op = match self.ops.alloc() {
            Ok(op) => op,
            Err(_) => {
                LoopCounters::add(&self.counters.crypto_errors, 1);
                return Err((m, DropReason::Oversize));
            }
        };
        let n = nonce(&sa.salt.0, iv);
        let (a, a_len) = aad(spi, seq, sa.esn);
        let params = AeadParams {
            data_offset: (ESP_HEADER_LEN + IV_LEN) as u32,
            data_len: ct_len as u32,
            digest_offset: (len - ICV_LEN) as u32,
            iv: &n,
            aad: &a[..a_len],
        };
        // Offsets were checked above, so a failure is a device problem.
        if op.set_aead(&sa.session, m, &params).is_err() {
            LoopCounters::add(&self.counters.crypto_errors, 1);
            return Ok(false);
        }
        self.queued.push(op);
        Ok(true)
    }

    /// Runs every queued op through the device; they come back in `self.done`.
    fn run_device(&mut self) {
        let total = self.queued.len();
        let (mut sent, mut got, mut idle) = (0usize, 0usize, 0u32);
        while got < total {
            let mut accepted = 0;
            if !self.queued.is_empty() {
                accepted = self.qp.enqueue_burst(&mut self.queued);
                sent += accepted;
                LoopCounters::add(&self.counters.crypto_enqueued, accepted as u64);
            }
            let n = self.qp.dequeue_burst(&mut self.done, ffi::MAX_CRYPTO_BURST);
            LoopCounters::add(&self.counters.crypto_dequeued, n as u64);
            got += n;
            if n > 0 {
                idle = 0;
                continue;
            }
            if accepted == 0 && sent == got && !self.queued.is_empty() {
                // Nothing in flight and the device takes nothing: give up on these.
                let lost = self.queued.len();
                self.queued.clear();
                LoopCounters::add(&self.counters.crypto_errors, lost as u64);
                break;
            }
            idle += 1;
            if idle > MAX_IDLE_POLLS {
                // In-flight ops never came back: their packets are lost.
                LoopCounters::add(&self.counters.crypto_errors, (sent - got) as u64);
                self.queued.clear();
                break;
            }
        }
    }

    /// Encapsulates a burst of inner IP packets (`pkts`, drained). Results go
    /// to `out` as `(mbuf, verdict)`; ESP packets carry their outer IP (and
    /// UDP) header. Packets of SAs the device does not take go through `worker`.
    #[allow(clippy::too_many_arguments)]
    pub fn encap_burst<G: DirectGcm>(
        &mut self,
        worker: &mut Worker<G>,
        sad: &Sad,
        spd: &Spd,
        pinning: bool,
        pkts: &mut Vec<Mbuf>,
        out: &mut Vec<(Mbuf, Verdict)>,
    ) {
        let wc = worker.counters();
        for mut m in pkts.drain(..) {
            let sa = policy_sa(&m, spd, sad);
            let Some(sa) = sa else {
                // Malformed, bypass, discard, no SA: the worker decides and counts.
                let v = worker.outbound_packet(&mut m);
                out.push((m, v));
                continue;
            };
            if pinning && sa.worker != worker.id() {
                out.push((m, Verdict::Redirect(sa.worker)));
                continue;
            }
            let off = match self.sessions.get(sa.id) {
                Some(o) if sa.mode == Mode::Tunnel => o,
                _ => {
                    LoopCounters::add(&self.counters.crypto_cpu_fallback, 1);
                    let v = worker.outbound_packet(&mut m);
                    out.push((m, v));
                    continue;
                }
            };
            let seq = match next_packet_seq(&sa, sad) {
                Ok(s) => s,
                Err(r) => {
                    out.push((m, drop_out(&wc, &sa, r)));
                    continue;
                }
            };
            let inner_len = PacketBuffer::len(&m);
            match frame_esp(&mut m, &sa, seq) {
                Ok(()) => {}
                Err(r) => {
                    out.push((m, drop_out(&wc, &sa, r)));
                    continue;
                }
            }
            let ptr = m.as_ptr() as usize;
            match self.queue_op(&off, m, seq, sa.spi, seq) {
                Ok(true) => self.pending.push(Pending::Encap {
                    mbuf: ptr,
                    sa,
                    inner_len: inner_len as u64,
                }),
                Ok(false) => {}
                Err((m, r)) => out.push((m, drop_out(&wc, &sa, r))),
            }
        }
        self.finish(&wc, sad, out);
    }

    /// Decapsulates a burst of ESP packets (starting at the SPI; `pkts`
    /// drained, `meta[i]` describes `pkts[i]`). Results go to `out`; inner
    /// packets get [`Verdict::ToTunnel`]. Other packets go through `worker`.
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
            let d = PacketBuffer::data(&m);
            let header = crate::esp::parse_header(d).ok();
            let sa = header.and_then(|(spi, _)| sad.inbound(spi, meta.dst));
            let (Some((spi, seq_lo)), Some(sa)) = (header, sa) else {
                // Keepalive, IKE, runt or unknown SPI: the worker decides and counts.
                let v = worker.inbound_packet(kind, &mut m, meta);
                out.push((m, v));
                continue;
            };
            let off = match self.sessions.get(sa.id) {
                Some(o) if sa.mode == Mode::Tunnel => o,
                _ => {
                    LoopCounters::add(&self.counters.crypto_cpu_fallback, 1);
                    let v = worker.inbound_packet(kind, &mut m, meta);
                    out.push((m, v));
                    continue;
                }
            };
            let len = d.len();
            if len < ESP_HEADER_LEN + IV_LEN + ICV_LEN + 4 || (len - ESP_HEADER_LEN - IV_LEN - ICV_LEN) % 4 != 0 {
                out.push((m, drop_in(&wc, &sa, DropReason::Malformed)));
                continue;
            }
            let (budget_p, budget_b) = sa.hard_budget();
            if sa.is_expired() || budget_p == 0 || budget_b == 0 {
                out.push((m, drop_in(&wc, &sa, DropReason::Expired)));
                continue;
            }
            let mut iv = [0u8; 8];
            iv.copy_from_slice(&d[ESP_HEADER_LEN..ESP_HEADER_LEN + IV_LEN]);
            let checked = sa.replay.lock().unwrap_or_else(|e| e.into_inner()).check(seq_lo);
            let seq = match checked {
                Ok(s) => s,
                Err(e) => {
                    out.push((m, drop_in(&wc, &sa, e.into())));
                    continue;
                }
            };
            let ptr = m.as_ptr() as usize;
            match self.queue_op(&off, m, u64::from_be_bytes(iv), spi, seq) {
                Ok(true) => self.pending.push(Pending::Decap {
                    mbuf: ptr,
                    sa,
                    seq,
                    source: (kind == InboundKind::Udp).then(|| std::net::SocketAddr::new(meta.src, meta.src_port)),
                }),
                Ok(false) => {}
                Err((m, r)) => out.push((m, drop_in(&wc, &sa, r))),
            }
        }
        self.finish(&wc, sad, out);
    }

    /// Runs the device and completes every pending packet into `out`.
    fn finish(&mut self, wc: &WorkerCounters, sad: &Sad, out: &mut Vec<(Mbuf, Verdict)>) {
        if self.queued.is_empty() {
            self.pending.clear();
            return;
        }
        self.run_device();
        for mut op in self.done.drain(..) {
            let status = op.status();
            let Some(mut m) = op.take_mbuf() else {
                continue;
            };
            let ptr = m.as_ptr() as usize;
            let Some(i) = self.pending.iter().position(|p| p.mbuf() == ptr) else {
                LoopCounters::add(&self.counters.crypto_errors, 1);
                continue;
            };
            let v = match self.pending.swap_remove(i) {
                Pending::Encap { sa, inner_len, .. } => match status {
                    OpStatus::Success => {
                        let path = sa.path();
                        let ports = path.udp_encap.map(|u| (u.local_port, u.remote_port));
                        if ip::prepend_outer(&mut m, path.local, path.remote, ports).is_err() {
                            drop_out(wc, &sa, DropReason::Oversize)
                        } else {
                            sa.account(1, inner_len, sad.events());
                            wc.outbound.add(1, inner_len);
                            Verdict::ToPeer {
                                src: path.local,
                                dst: path.remote,
                                udp: path.udp_encap,
                            }
                        }
                    }
                    _ => {
                        LoopCounters::add(&self.counters.crypto_errors, 1);
                        drop_out(wc, &sa, DropReason::Malformed)
                    }
                },
                Pending::Decap { sa, seq, source, .. } => match status {
                    OpStatus::Success => match finish_decap(&mut m, &sa, seq) {
                        Ok(()) => {
                            let n = PacketBuffer::len(&m) as u64;
                            sa.account(1, n, sad.events());
                            wc.inbound.add(1, n);
                            if let Some(source) = source {
                                sad.note_source(&sa, source);
                            }
                            Verdict::ToTunnel
                        }
                        Err(r) => drop_in(wc, &sa, r),
                    },
                    OpStatus::AuthFailed => drop_in(wc, &sa, DropReason::IcvFailure),
                    _ => {
                        LoopCounters::add(&self.counters.crypto_errors, 1);
                        drop_in(wc, &sa, DropReason::Malformed)
                    }
                },
            };
            out.push((m, v));
        }
        // Ops the device never returned are lost with their packets (counted).
        self.pending.clear();
    }
}

/// The outbound SA the SPD names for the packet in `m`, if any (malformed,
/// bypass, discard and missing SAs all give `None`: the worker decides those).
pub(super) fn policy_sa(m: &Mbuf, spd: &Spd, sad: &Sad) -> Option<Arc<OutboundSa>> {
    ip::flow_key(PacketBuffer::data(m))
        .and_then(|f| spd.lookup(&f))
        .and_then(|p| match p.action {
            PolicyAction::Protect(id) => sad.outbound(id),
            _ => None,
        })
}

/// The sequence number of one more packet on `sa`, or why it may not go
/// (expired, hard lifetime spent, sequence numbers exhausted).
pub(super) fn next_packet_seq(sa: &OutboundSa, sad: &Sad) -> Result<u64, DropReason> {
    let (budget_p, budget_b) = sa.hard_budget();
    if sa.is_expired() || budget_p == 0 || budget_b == 0 {
        return Err(DropReason::Expired);
    }
    sa.next_seq(sad.events()).map_err(Into::into)
}

pub(super) fn drop_out(wc: &WorkerCounters, sa: &OutboundSa, r: DropReason) -> Verdict {
    wc.outbound.drop_one(r);
    sa.counters.drop_one(r);
    Verdict::Drop(r)
}

pub(super) fn drop_in(wc: &WorkerCounters, sa: &InboundSa, r: DropReason) -> Verdict {
    wc.inbound.drop_one(r);
    sa.counters.drop_one(r);
    Verdict::Drop(r)
}

/// Writes ESP header, IV, padding and trailer around the inner packet in `m`
/// and leaves room for the ICV; the device then encrypts in place.
pub(super) fn frame_esp(m: &mut Mbuf, sa: &OutboundSa, seq: u64) -> Result<(), DropReason> {
    let next_header = match PacketBuffer::data(m).first().map(|b| b >> 4) {
        Some(4) => NEXT_HEADER_IPV4,
        Some(6) => NEXT_HEADER_IPV6,
        _ => return Err(DropReason::Malformed),
    };
    let payload_len = PacketBuffer::len(m);
    let esp_len = esp_len_for(&sa.cipher, payload_len);
    if esp_len > sa.max_esp_len() {
        return Err(DropReason::Oversize);
    }
    let pad_len = esp_len - ESP_HEADER_LEN - IV_LEN - ICV_LEN - payload_len - 2;
    let trailer = PacketBuffer::append(m, pad_len + 2 + ICV_LEN).map_err(|_| DropReason::Oversize)?;
    for (i, b) in trailer[..pad_len].iter_mut().enumerate() {
        *b = (i + 1) as u8;
    }
    trailer[pad_len] = pad_len as u8;
    trailer[pad_len + 1] = next_header;
    let hdr = PacketBuffer::prepend(m, ESP_HEADER_LEN + IV_LEN).map_err(|_| DropReason::Oversize)?;
    hdr[..4].copy_from_slice(&sa.spi.to_be_bytes());
    hdr[4..8].copy_from_slice(&(seq as u32).to_be_bytes());
    hdr[8..16].copy_from_slice(&seq.to_be_bytes());
    Ok(())
}

/// After the device verified and decrypted `m`: advance the replay window,
/// check the trailer and the inner packet, strip ESP.
pub(super) fn finish_decap(m: &mut Mbuf, sa: &InboundSa, seq: u64) -> Result<(), DropReason> {
    sa.replay
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .accept(seq)
        .map_err(DropReason::from)?;
    let d = PacketBuffer::data(m);
    let len = d.len();
    let ct_len = len - ESP_HEADER_LEN - IV_LEN - ICV_LEN;
    let trailer_end = len - ICV_LEN;
    let next_header = d[trailer_end - 1];
    let pad_len = usize::from(d[trailer_end - 2]);
    if pad_len + 2 > ct_len {
        return Err(DropReason::BadPadding);
    }
    if d[trailer_end - 2 - pad_len..trailer_end - 2]
        .iter()
        .enumerate()
        .any(|(i, b)| usize::from(*b) != i + 1)
    {
        return Err(DropReason::BadPadding);
    }
    PacketBuffer::trim_back(m, ICV_LEN + pad_len + 2).map_err(|_| DropReason::Malformed)?;
    PacketBuffer::trim_front(m, ESP_HEADER_LEN + IV_LEN).map_err(|_| DropReason::Malformed)?;
    if next_header == NEXT_HEADER_NONE {
        return Err(DropReason::Dummy);
    }
    let pkt = PacketBuffer::data(m);
    let ip_len = match (next_header, pkt.first().map(|b| b >> 4)) {
        (NEXT_HEADER_IPV4, Some(4)) if pkt.len() >= 20 => {
            let ihl = usize::from(pkt[0] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([pkt[2], pkt[3]]));
            if ihl < 20 || total < ihl || total > pkt.len() {
                return Err(DropReason::Malformed);
            }
            total
        }
        (NEXT_HEADER_IPV6, Some(6)) if pkt.len() >= 40 => {
            let total = 40 + usize::from(u16::from_be_bytes([pkt[4], pkt[5]]));
            if total > pkt.len() {
                return Err(DropReason::Malformed);
            }
            total
        }
        _ => return Err(DropReason::Malformed),
    };
    let extra = pkt.len() - ip_len;
    PacketBuffer::trim_back(m, extra).map_err(|_| DropReason::Malformed)?;
    let check_policy = !(sa.local_ts.is_empty() && sa.remote_ts.is_empty());
    if check_policy && !ip::flow_key(PacketBuffer::data(m)).is_some_and(|f| sa.allows(&f)) {
        return Err(DropReason::PolicyMismatch);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4106_nonce_and_aad() {
        assert_eq!(
            nonce(&[1, 2, 3, 4], 0x0102_0304_0506_0708),
            [1, 2, 3, 4, 1, 2, 3, 4, 5, 6, 7, 8]
        );
        let (a, n) = aad(0xc0a8_0001, 0x0000_0005_0000_0009, false);
        assert_eq!(&a[..n], &[0xc0, 0xa8, 0, 1, 0, 0, 0, 9]);
        let (a, n) = aad(0xc0a8_0001, 0x0000_0005_0000_0009, true);
        assert_eq!(&a[..n], &[0xc0, 0xa8, 0, 1, 0, 0, 0, 5, 0, 0, 0, 9]);
    }
}
