//! ironsa's ESP data plane: packet buffers, ESP (RFC 4303) with replay
//! protection, the SA and policy databases, burst workers and I/O backends.
//!
//! Packet code works in place on caller-owned buffers through
//! [`buf::PacketBuffer`], in bursts, without per-packet allocation, so the same
//! code runs on DPDK mbufs.
//!
//! How the daemon drives it (one [`worker::Worker`] per core; the SAD and SPD
//! are shared and updated by the control plane while workers run):
//!
//! ```
//! use fastpath::buf::{PacketBuf, PacketBuffer};
//! use fastpath::esp::aead::{CipherKeys, EncAlg, IntegAlg};
//! use fastpath::sad::{Direction, SaEvent, SaParams, Sad};
//! use fastpath::spd::{Policy, PolicyAction, Spd, TrafficSelector};
//! use fastpath::worker::{Verdict, Worker};
//! use std::sync::Arc;
//!
//! // From the IKE ChildSaInstalled event: one SaParams per direction.
//! let keys = CipherKeys {
//!     enc: EncAlg::AesGcm16_256,
//!     integ: IntegAlg::None,
//!     enc_key: zeroize::Zeroizing::new(vec![7u8; 36]), // key || salt
//!     integ_key: zeroize::Zeroizing::new(Vec::new()),
//! };
//! let (local, remote) = ("192.0.2.1".parse().unwrap(), "198.51.100.7".parse().unwrap());
//! let (sad, events) = Sad::new(2);
//! let out = sad.install_outbound(&SaParams::new(0xc1a0_0001, Direction::Outbound, keys.clone(), local, remote)).unwrap();
//! sad.install_inbound(&SaParams::new(0xc1a0_0002, Direction::Inbound, keys, local, remote)).unwrap();
//! let spd = Spd::new();
//! spd.insert(&Policy {
//!     local: TrafficSelector::prefix("10.1.0.0".parse().unwrap(), 16).unwrap(),
//!     remote: TrafficSelector::prefix("10.2.0.0".parse().unwrap(), 16).unwrap(),
//!     action: PolicyAction::Protect(out),
//!     priority: 100,
//! }).unwrap();
//! let (sad, spd) = (Arc::new(sad), Arc::new(spd));
//! let owner = sad.outbound(out).unwrap().worker;
//! let mut worker = Worker::new(owner, sad.clone(), spd.clone());
//!
//! // A packet read from the TUN device: 10.1.0.1 -> 10.2.0.1, UDP.
//! let mut pkt = PacketBuf::with_defaults();
//! pkt.set_data(&[0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0, 10, 1, 0, 1, 10, 2, 0, 1,
//!                0, 1, 0, 2, 0, 8, 0, 0]).unwrap();
//! let mut verdicts = [Verdict::Keepalive];
//! worker.outbound_burst(std::slice::from_mut(&mut pkt), &mut verdicts);
//! assert!(matches!(verdicts[0], Verdict::ToPeer { .. }));
//! // Lifetime / sequence events come back for rekeying.
//! assert!(matches!(events.try_recv(), Err(_)));
//! # let _ = SaEvent::SoftExpired { sa: out };
//! ```
//!
//! # Unsafe code
//! Denied crate-wide. The modules allowed it are named here, each for one
//! reason, and every `unsafe` block in them states its invariant in a
//! `// SAFETY:` comment:
//! - `sys`: raw calls into C (the aws-lc-sys AEAD context, the batched
//!   socket calls `recvmmsg`/`sendmmsg`, the TUN ioctls);
//! - [`epoch_table`]: the lock-free SAD/SPD tables with epoch reclamation;
//! - `huge`: arrays allocated on their own huge pages;
//! - [`stats`]: the lazily allocated drop counters;
//! - [`prefetch`]: cache prefetch intrinsics.
//!
//! DPDK's mbufs are reached only through `ffi`'s safe wrappers.

#![deny(unsafe_code)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod buf;
pub mod dpdk;
// Lock-free reads and epoch-deferred frees of the SAD/SPD slots.
#[allow(unsafe_code)]
pub mod epoch_table;
pub mod esp;
pub mod fuzzing;
// Aligned allocation, `madvise` and raw element access of huge-page arrays.
#[allow(unsafe_code)]
mod huge;
pub mod io;
pub mod ip;
// The prefetch intrinsic (a hint that never faults).
#[allow(unsafe_code)]
pub mod prefetch;
pub mod reassembly;
pub mod sad;
pub mod spd;
// Drop counters behind an atomic pointer, allocated on first use.
#[allow(unsafe_code)]
pub mod stats;
// Raw calls into aws-lc-sys, the socket calls and the TUN ioctls, behind safe wrappers.
#[allow(unsafe_code)]
mod sys;
pub mod worker;
