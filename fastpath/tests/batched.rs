//! The worker's batched AEAD path (SAs whose AES-GCM has an
//! [`AeadAccelerator`]): same bytes as the one-by-one aws-lc path, and the
//! same replay, forgery, ESN and lifetime handling, including duplicates and
//! forgeries inside one batch. The accelerator here is aws-lc itself,
//! counting batch calls; one that does not batch is called packet by packet,
//! and a [`DirectGcm`] is called directly by a worker made for its type.

use aws_lc_rs::aead;
use fastpath::buf::{PacketBuf, PacketBuffer};
use fastpath::esp::EspError;
use fastpath::esp::aead::{AeadAccelerator, AeadJob, CipherKeys, DirectGcm, EncAlg, IntegAlg, NoDirectGcm};
use fastpath::sad::{Direction, SaParams, Sad};
use fastpath::spd::{Policy, PolicyAction, Spd, TrafficSelector};
use fastpath::stats::DropReason;
use fastpath::worker::{InboundKind, PacketMeta, Verdict, Worker};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use zeroize::Zeroizing;

struct AwsLcBatch {
    key: aead::LessSafeKey,
    batches: Arc<AtomicUsize>,
    /// Whether it asks for batches ([`AeadAccelerator::batches`]).
    batching: bool,
    /// Calls of `seal` and `open` (per packet, or from the batch loops).
    calls: Arc<AtomicUsize>,
    /// Calls of `seal_icv` and `open_icv` ([`DirectGcm`]).
    direct: Arc<AtomicUsize>,
}

impl DirectGcm for AwsLcBatch {
    fn seal_icv(&self, nonce: &[u8; 12], aad: &[u8], data: &mut [u8], icv: &mut [u8; 16]) {
        self.direct.fetch_add(1, Ordering::Relaxed);
        let tag = self
            .key
            .seal_in_place_separate_tag(aead::Nonce::assume_unique_for_key(*nonce), aead::Aad::from(aad), data)
            .expect("AES-GCM seal of a packet-sized input");
        icv.copy_from_slice(tag.as_ref());
    }

    fn open_icv(&self, nonce: &[u8; 12], aad: &[u8], data: &mut [u8], icv: &[u8; 16]) -> Result<(), EspError> {
        self.direct.fetch_add(1, Ordering::Relaxed);
        let mut joined = [&*data, icv].concat();
        let n = aead::Nonce::assume_unique_for_key(*nonce);
        let pt = self
            .key
            .open_in_place(n, aead::Aad::from(aad), &mut joined)
            .map_err(|_| EspError::IcvFailure)?;
        data.copy_from_slice(pt);
        Ok(())
    }
}

impl AeadAccelerator for AwsLcBatch {
    fn seal(&self, nonce: &[u8; 12], aad: &[u8], data: &mut [u8], icv: &mut [u8]) -> Result<(), EspError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let tag = self
            .key
            .seal_in_place_separate_tag(aead::Nonce::assume_unique_for_key(*nonce), aead::Aad::from(aad), data)
            .map_err(|_| EspError::Malformed("seal"))?;
        icv.copy_from_slice(tag.as_ref());
        Ok(())
    }

    fn open(&self, nonce: &[u8; 12], aad: &[u8], data: &mut [u8], icv: &[u8]) -> Result<(), EspError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let mut joined = [&*data, icv].concat();
        let n = aead::Nonce::assume_unique_for_key(*nonce);
        let pt = self
            .key
            .open_in_place(n, aead::Aad::from(aad), &mut joined)
            .map_err(|_| EspError::IcvFailure)?;
        data.copy_from_slice(pt);
        Ok(())
    }

    fn batches(&self) -> bool {
        self.batching
    }

    fn seal_batch(&self, jobs: &mut [AeadJob<'_>]) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        for j in jobs {
            j.result = self.seal(&j.nonce, &j.aad[..j.aad_len], j.data, j.icv);
        }
    }

    fn open_batch(&self, jobs: &mut [AeadJob<'_>]) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        for j in jobs {
            j.result = self.open(&j.nonce, &j.aad[..j.aad_len], j.data, j.icv);
        }
    }
}

fn ipa(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn keys() -> CipherKeys {
    CipherKeys {
        enc: EncAlg::AesGcm16_128,
        integ: IntegAlg::None,
        enc_key: Zeroizing::new((0..20).map(|i| i * 3 + 1).collect()),
        integ_key: Zeroizing::new(Vec::new()),
    }
}

/// Counters of an [`AwsLcBatch`]: batch calls, `seal`/`open` calls, direct calls.
#[derive(Default, Clone)]
struct Calls {
    batches: Arc<AtomicUsize>,
    dynamic: Arc<AtomicUsize>,
    direct: Arc<AtomicUsize>,
}

fn counted_accelerator(calls: &Calls, batching: bool) -> Box<AwsLcBatch> {
    let k = keys();
    Box::new(AwsLcBatch {
        key: aead::LessSafeKey::new(aead::UnboundKey::new(&aead::AES_128_GCM, &k.enc_key[..16]).unwrap()),
        batches: calls.batches.clone(),
        batching,
        calls: calls.dynamic.clone(),
        direct: calls.direct.clone(),
    })
}

fn udp(len: usize, tag: u8) -> Vec<u8> {
    let mut p = vec![tag; len];
    let total = (len as u16).to_be_bytes();
    p[..20].copy_from_slice(&[
        0x45, 0, total[0], total[1], 0, 0, 0, 0, 64, 17, 0, 0, 10, 1, 0, 5, 10, 2, 0, 1,
    ]);
    let c = fastpath::ip::checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p
}

/// Receive metadata of `n` packets as the peer sees them: it receives what
/// the outbound SA sent.
fn peer_meta(n: usize) -> Vec<PacketMeta> {
    let m = PacketMeta {
        src: ipa("192.0.2.1"),
        dst: Some(ipa("198.51.100.7")),
        src_port: 0,
    };
    vec![m; n]
}

/// A worker with one outbound SA (10.1/16 -> 10.2/16) and its inbound
/// mirror, accelerated (by a batching accelerator) or not.
fn side(accel: Option<&Arc<AtomicUsize>>, esn: bool) -> (Worker, Arc<Sad>) {
    side_with(accel.map(|b| (b, true, Arc::new(AtomicUsize::new(0)))), esn)
}

/// [`side`] with the accelerator's batch counter, batching choice and call counter.
fn side_with(accel: Option<(&Arc<AtomicUsize>, bool, Arc<AtomicUsize>)>, esn: bool) -> (Worker, Arc<Sad>) {
    let accel = accel.map(|(b, batching, calls)| {
        (
            Calls {
                batches: b.clone(),
                dynamic: calls,
                direct: Arc::new(AtomicUsize::new(0)),
            },
            batching,
        )
    });
    side_for(accel.as_ref().map(|(c, batching)| (c, *batching)), esn)
}

/// [`side_with`] for a worker made for the [`DirectGcm`] `G`.
fn side_for<G: DirectGcm>(accel: Option<(&Calls, bool)>, esn: bool) -> (Worker<G>, Arc<Sad>) {
    let (sad, _ev) = Sad::new(1);
    let (sad, spd) = (Arc::new(sad), Arc::new(Spd::new()));
    let mut out = SaParams::new(
        0x7001,
        Direction::Outbound,
        keys(),
        ipa("192.0.2.1"),
        ipa("198.51.100.7"),
    );
    out.esn = esn;
    let id = sad.install_outbound(&out).unwrap();
    let mut inb = SaParams::new(
        0x7001,
        Direction::Inbound,
        keys(),
        ipa("198.51.100.7"),
        ipa("192.0.2.1"),
    );
    inb.esn = esn;
    let in_id = sad.install_inbound(&inb).unwrap();
    if let Some((calls, batching)) = accel {
        assert!(
            sad.outbound(id)
                .unwrap()
                .cipher
                .attach_accelerator(counted_accelerator(calls, batching))
        );
        assert!(
            sad.inbound_by_id(in_id)
                .unwrap()
                .cipher
                .attach_accelerator(counted_accelerator(calls, batching))
        );
    }
    if esn {
        sad.outbound(id).unwrap().set_next_seq((1 << 32) - 3);
        let w = &sad.inbound_by_id(in_id).unwrap().replay;
        w.lock().unwrap().accept((1 << 32) - 4).unwrap();
    }
    spd.insert(&Policy {
        local: TrafficSelector::prefix(ipa("10.1.0.0"), 16).unwrap(),
        remote: TrafficSelector::prefix(ipa("10.2.0.0"), 16).unwrap(),
        action: PolicyAction::Protect(id),
        priority: 1,
    })
    .unwrap();
    (Worker::for_direct_gcm(0, sad.clone(), spd).without_pinning(), sad)
}

#[test]
fn batched_path_matches_one_by_one_with_replays_and_forgeries() {
    for esn in [false, true] {
        let batches = Arc::new(AtomicUsize::new(0));
        let (mut fast, _) = side(Some(&batches), esn);
        let (mut plain, _) = side(None, esn);
        let sizes = [64usize, 65, 100, 1000, 1420, 33, 500, 77];
        let inners: Vec<Vec<u8>> = sizes.iter().enumerate().map(|(i, &n)| udp(n, i as u8)).collect();
        let mut a: Vec<PacketBuf> = inners.iter().map(|p| PacketBuf::from_slice(p).unwrap()).collect();
        let mut b = a.clone();
        let mut va = vec![Verdict::Keepalive; a.len()];
        let mut vb = va.clone();
        fast.outbound_burst(&mut a, &mut va);
        plain.outbound_burst(&mut b, &mut vb);
        assert_eq!(va, vb);
        assert!(va.iter().all(|v| matches!(v, Verdict::ToPeer { .. })));
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x.data(), y.data(), "esn {esn}: batched ESP differs");
        }
        let sealed_batches = batches.load(Ordering::Relaxed);
        assert_eq!(sealed_batches, 1, "one seal batch for one run");

        // Inbound burst: every packet, a duplicate inside the batch, a forgery.
        let mut rx: Vec<PacketBuf> = a.clone();
        rx.push(a[2].clone());
        let mut forged = a[5].clone();
        let at = forged.len() - 3;
        forged.data_mut()[at] ^= 1;
        rx.push(forged);
        let meta = peer_meta(rx.len());
        let mut v = vec![Verdict::Keepalive; rx.len()];
        fast.inbound_burst(InboundKind::RawEsp, &mut rx, &meta, &mut v);
        assert_eq!(batches.load(Ordering::Relaxed), sealed_batches + 1, "one open batch");
        for i in 0..inners.len() {
            assert_eq!(v[i], Verdict::ToTunnel, "esn {esn}: packet {i}");
            assert_eq!(rx[i].data(), inners[i].as_slice());
        }
        // The exact duplicate decrypts but its sequence number was taken in
        // the same batch; the forgery of a sequence number not yet accepted
        // when the batch was checked fails verification.
        assert_eq!(v[inners.len()], Verdict::Drop(DropReason::Replay));
        assert_eq!(v[inners.len() + 1], Verdict::Drop(DropReason::IcvFailure));
        // The forgery's sequence number is fresh when not a duplicate: send it alone.
        let mut forged = b[5].clone();
        let at = forged.len() - 3;
        forged.data_mut()[at] ^= 1;
        let mut lone = vec![forged];
        let mut v1 = [Verdict::Keepalive];
        let (mut fresh, _) = side(Some(&batches), esn);
        fresh.inbound_burst(InboundKind::RawEsp, &mut lone, &meta[..1], &mut v1);
        assert_eq!(v1[0], Verdict::Drop(DropReason::IcvFailure));
    }
}

#[test]
fn accelerator_that_does_not_batch_is_called_per_packet() {
    for esn in [false, true] {
        let (batches, calls) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (mut fast, _) = side_with(Some((&batches, false, calls.clone())), esn);
        let (mut plain, _) = side(None, esn);
        let inners: Vec<Vec<u8>> = [64usize, 1420, 33, 500].iter().map(|&n| udp(n, n as u8)).collect();
        let mut a: Vec<PacketBuf> = inners.iter().map(|p| PacketBuf::from_slice(p).unwrap()).collect();
        let mut b = a.clone();
        let (mut va, mut vb) = (vec![Verdict::Keepalive; a.len()], vec![Verdict::Keepalive; a.len()]);
        fast.outbound_burst(&mut a, &mut va);
        plain.outbound_burst(&mut b, &mut vb);
        assert_eq!(va, vb);
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x.data(), y.data(), "esn {esn}: accelerated ESP differs");
        }
        assert_eq!(calls.load(Ordering::Relaxed), inners.len(), "one seal per packet");
        // A replayed packet and a forgery among good ones.
        let mut rx = a.clone();
        rx.push(a[1].clone());
        let mut forged = a[3].clone();
        let at = forged.len() - 1;
        forged.data_mut()[at] ^= 0x80;
        rx.push(forged);
        let meta = peer_meta(rx.len());
        let mut v = vec![Verdict::Keepalive; rx.len()];
        fast.inbound_burst(InboundKind::RawEsp, &mut rx, &meta, &mut v);
        for i in 0..inners.len() {
            assert_eq!(v[i], Verdict::ToTunnel, "esn {esn}: packet {i}");
            assert_eq!(rx[i].data(), inners[i].as_slice());
        }
        assert_eq!(v[inners.len()], Verdict::Drop(DropReason::Replay));
        // A replay is refused before decryption; the forgery was a duplicate too.
        assert_eq!(v[inners.len() + 1], Verdict::Drop(DropReason::Replay));
        assert_eq!(
            calls.load(Ordering::Relaxed),
            2 * inners.len(),
            "one open per fresh packet"
        );
        assert_eq!(batches.load(Ordering::Relaxed), 0, "no batch calls");
        // A forgery of a fresh sequence number is opened, and fails.
        let mut forged = b[2].clone();
        let at = forged.len() - 1;
        forged.data_mut()[at] ^= 0x80;
        let (mut fresh, _) = side_with(Some((&batches, false, calls.clone())), esn);
        let mut v1 = [Verdict::Keepalive];
        fresh.inbound_burst(
            InboundKind::RawEsp,
            std::slice::from_mut(&mut forged),
            &meta[..1],
            &mut v1,
        );
        assert_eq!(v1[0], Verdict::Drop(DropReason::IcvFailure));
        assert_eq!(calls.load(Ordering::Relaxed), 2 * inners.len() + 1);
    }
}

/// A worker made for the accelerator's type calls its [`DirectGcm`] methods
/// (not `seal`/`open`, not batches) and produces the same bytes; a worker
/// made for no direct type reaches the same accelerator through `seal`/`open`.
#[test]
fn direct_gcm_is_called_directly_by_a_worker_made_for_it() {
    for esn in [false, true] {
        let inners: Vec<Vec<u8>> = [64usize, 1420, 33, 500, 77].iter().map(|&n| udp(n, n as u8)).collect();
        let (mut plain, _) = side(None, esn);
        let mut reference: Vec<PacketBuf> = inners.iter().map(|p| PacketBuf::from_slice(p).unwrap()).collect();
        let mut vr = vec![Verdict::Keepalive; inners.len()];
        plain.outbound_burst(&mut reference, &mut vr);
        let n = inners.len();
        let direct = round_trip::<AwsLcBatch>(&inners, &reference, &vr, esn);
        assert_eq!((direct.0, direct.1), (2 * n + 1, 0), "esn {esn}: all direct");
        let dynamic = round_trip::<NoDirectGcm>(&inners, &reference, &vr, esn);
        assert_eq!(
            (dynamic.0, dynamic.1),
            (0, 2 * n + 1),
            "esn {esn}: all through the trait"
        );
    }
}

/// Seals `inners` with a worker made for `G` whose SAs have an
/// [`AwsLcBatch`] (not batching), checks the bytes against `reference`,
/// opens them back and opens one forgery; returns the accelerator's
/// (direct, `seal`/`open`) call counts. Batches are never called.
fn round_trip<G: DirectGcm>(
    inners: &[Vec<u8>],
    reference: &[PacketBuf],
    verdicts: &[Verdict],
    esn: bool,
) -> (usize, usize) {
    let n = inners.len();
    let calls = Calls::default();
    let (mut w, _) = side_for::<G>(Some((&calls, false)), esn);
    let mut pkts: Vec<PacketBuf> = inners.iter().map(|p| PacketBuf::from_slice(p).unwrap()).collect();
    let mut v = vec![Verdict::Keepalive; n];
    w.outbound_burst(&mut pkts, &mut v);
    assert_eq!(v, verdicts);
    for (x, y) in pkts.iter().zip(reference) {
        assert_eq!(x.data(), y.data(), "esn {esn}: ESP differs");
    }
    let mut forged = pkts[2].clone();
    let at = forged.len() - 1;
    forged.data_mut()[at] ^= 0x80;
    // Back through the same worker (its inbound SA mirrors the outbound one).
    let meta = peer_meta(n);
    w.inbound_burst(InboundKind::RawEsp, &mut pkts, &meta, &mut v);
    for i in 0..n {
        assert_eq!(v[i], Verdict::ToTunnel, "esn {esn}: packet {i}");
        assert_eq!(pkts[i].data(), inners[i].as_slice());
    }
    // A forgery of a fresh sequence number is opened, and fails.
    let (mut fresh, _) = side_for::<G>(Some((&calls, false)), esn);
    let mut v1 = [Verdict::Keepalive];
    fresh.inbound_burst(
        InboundKind::RawEsp,
        std::slice::from_mut(&mut forged),
        &meta[..1],
        &mut v1,
    );
    assert_eq!(v1[0], Verdict::Drop(DropReason::IcvFailure));
    assert_eq!(calls.batches.load(Ordering::Relaxed), 0, "no batch calls");
    (
        calls.direct.load(Ordering::Relaxed),
        calls.dynamic.load(Ordering::Relaxed),
    )
}
