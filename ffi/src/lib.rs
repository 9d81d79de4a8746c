//! ironsa's own bindings to the system DPDK 22.11.
//!
//! Everything DPDK-related is behind the `dpdk` cargo feature; without it this
//! crate builds with neither DPDK nor clang installed and holds only the
//! aws-lc pieces aws-lc-rs lacks (FFI too, so they live here): [`modp`], the
//! constant-time MODP Diffie-Hellman; [`mlkem`], ML-KEM-512/768/1024 from caller-given
//! seeds; [`rsa_legacy`], RSA PKCS#1 v1.5 signatures over SHA-1.
//!
//! # Layers
//! - [`sys`]: raw bindgen output for an allowlist of EAL, ethdev, mbuf/mempool,
//!   ring, cryptodev and rte_security items, plus `ironsa_*` functions from a
//!   small C shim (`csrc/shim.c`) that re-exports DPDK's `static inline`
//!   fast-path functions (rx/tx bursts, mbuf helpers, crypto enqueue/dequeue,
//!   ring bursts, `rte_errno`) and flattens union-heavy structures.
//! - Safe wrappers: [`Eal`], [`Mempool`], [`Mbuf`], [`EthPort`] with
//!   [`RxQueue`]/[`TxQueue`], [`Ring`], [`CryptoDev`] with [`SymSession`],
//!   [`CryptoOp`] and [`CryptoQueuePair`], rte_security probing, and
//!   [`probe()`].
//! - [`ImbGcm`]: AES-GCM on intel-ipsec-mb's direct API (`csrc/imb.c`, no
//!   device), its ICV compared in constant time here.
//!
//! # Safety model
//! - **EAL first.** Every constructor takes `&Eal`, which only
//!   [`Eal::init`] creates, and `Eal::init` succeeds at most once per process
//!   (a second call returns [`Error::AlreadyInitialized`]). EAL is never
//!   cleaned up, so DPDK objects stay valid for the life of the process.
//! - **Ownership of buffers.** [`Mbuf`] and [`CryptoOp`] own one DPDK object
//!   each and free it on drop. Handing one to DPDK (tx burst, ring enqueue,
//!   crypto enqueue) removes it from the caller's `Vec` and forgets it;
//!   receiving one (rx burst, dequeue) creates a new owner. A [`CryptoOp`]
//!   owns its source mbuf and keeps its [`SymSession`] alive through an `Arc`
//!   stored in the op's private area, so sessions outlive in-flight ops.
//! - **Pools are never freed under live objects.** Dropping a [`Mempool`],
//!   [`SessionPool`] or [`CryptoOpPool`] frees it only when all its elements
//!   are back; otherwise the pool is leaked on purpose.
//! - **Queues are single-threaded.** DPDK rx/tx queues and crypto queue pairs
//!   are not thread-safe, so each is a separate handle whose bursts take
//!   `&mut self`: a queue can move to a worker thread but cannot be polled from
//!   two threads at once. Pools and rings are created multi-producer /
//!   multi-consumer and are `Sync`.
//! - **Errors, not UB.** Lengths and offsets are checked before calling DPDK
//!   (mbuf prepend/append/adj/trim, crypto data/ICV ranges, key/IV/AAD sizes
//!   against the device capability). DPDK failures become [`Error::Dpdk`]
//!   with the `rte_strerror` message.
//! - Every `unsafe` block carries a `// SAFETY:` comment stating the invariant
//!   it relies on.

#![warn(clippy::undocumented_unsafe_blocks, missing_docs)]

pub mod alloc;
pub mod mlkem;
pub mod modp;
pub mod rsa_legacy;

#[cfg(feature = "dpdk")]
pub mod sys;

#[cfg(feature = "dpdk")]
mod cpu_crypto;
#[cfg(feature = "dpdk")]
mod cryptodev;
#[cfg(feature = "dpdk")]
mod eal;
#[cfg(feature = "dpdk")]
mod error;
#[cfg(feature = "dpdk")]
mod ethdev;
#[cfg(feature = "dpdk")]
mod imb_gcm;
#[cfg(feature = "dpdk")]
mod mbuf;
#[cfg(feature = "dpdk")]
mod mempool;
#[cfg(feature = "dpdk")]
mod probe;
#[cfg(feature = "dpdk")]
mod ring;
#[cfg(feature = "dpdk")]
mod security;
#[cfg(feature = "dpdk")]
mod security_flow;

#[cfg(feature = "dpdk")]
pub use cpu_crypto::{CpuAeadOp, CpuAeadSession, CpuCryptoError, CpuOpStatus};
#[cfg(feature = "dpdk")]
pub use cryptodev::{
    AeadCaps, AeadDirection, AeadParams, CryptoDev, CryptoDevInfo, CryptoOp, CryptoOpPool, CryptoQueuePair,
    MAX_AAD_LEN, MAX_CRYPTO_BURST, OpStatus, ParamRange, SessionPool, SymSession,
};
#[cfg(feature = "dpdk")]
pub use eal::{Eal, LcoreInfo, LcoreRegistration};
#[cfg(feature = "dpdk")]
pub use error::{Error, Result, rte_errno, strerror};
#[cfg(feature = "dpdk")]
pub use ethdev::{
    EthPort, MAX_BURST, PortConfig, PortInfo, PortQueues, PortStats, RxQueue, TxQueue, offload, port_ids,
};
#[cfg(feature = "dpdk")]
pub use imb_gcm::{IMB_GCM_NONCE_LEN, IMB_GCM_TAG_LEN, ImbGcm};
#[cfg(feature = "dpdk")]
pub use mbuf::Mbuf;
#[cfg(feature = "dpdk")]
pub use mempool::{DEFAULT_DATA_ROOM, Mempool};
#[cfg(feature = "dpdk")]
pub use probe::{CryptoReport, PortReport, ProbeReport, probe};
#[cfg(feature = "dpdk")]
pub use ring::Ring;
#[cfg(feature = "dpdk")]
pub use security::{
    InlineConfView, InlineIpsecSa, InlineSession, InlineSessionPool, RxSecurity, SecurityAction, SecurityCapability,
    SecuritySupport,
};
#[cfg(feature = "dpdk")]
pub use security_flow::{FlowPart, IngressFate, InlineFlowView, SecurityFlow};

/// Whether this build of the crate has DPDK support compiled in.
pub const DPDK_ENABLED: bool = cfg!(feature = "dpdk");
