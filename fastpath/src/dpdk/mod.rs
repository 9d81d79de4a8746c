//! The DPDK poll-mode data plane (feature `dpdk`).
//!
//! - [`profile`]: hardware profiles (TOML, `hw-profiles/`); available without
//!   the feature so a daemon can read a profile and pick its backend.
//! - [`frame`]: Ethernet/ARP framing and the classification of received
//!   frames (IKE, ESP, keepalive, cleartext).
//! - `impl PacketBuffer for ffi::Mbuf`: ESP works in place on mbuf data.
//! - [`backend`]: EAL, ports, queues and one [`backend::PollLoop`] per lcore:
//!   rx burst → classify → decap / policy + encap → tx burst; IKE to and from
//!   the control plane over channels.
//! - [`lookaside`]: ESP through a DPDK crypto device.
//! - [`inline`]: rte_security inline-crypto sessions per SA, software fallback.
//! - [`cpus`]: CPU affinity of the poll loops and the control plane.
//! - [`cpu_crypto`]: AES-GCM on intel-ipsec-mb's direct API (`cpu-ipsec-mb`).
//! - [`counters`]: port, queue, loop and crypto counters, Prometheus text.
//! - [`probe`]: what DPDK sees and which profile fits (`ironsa hw-probe`).

#[cfg(feature = "dpdk")]
pub mod backend;
#[cfg(feature = "dpdk")]
pub mod counters;
#[cfg(feature = "dpdk")]
pub mod cpu_crypto;
#[cfg(feature = "dpdk")]
pub mod cpus;
pub mod frame;
#[cfg(feature = "dpdk")]
pub mod inline;
#[cfg(feature = "dpdk")]
pub mod lookaside;
#[cfg(feature = "dpdk")]
mod mbuf;
#[cfg(feature = "dpdk")]
mod neighbours;
#[cfg(feature = "dpdk")]
pub mod probe;
pub mod profile;

/// The poll loops' worker: intel-ipsec-mb's AES-GCM ([`cpu_crypto`]) sealed
/// and opened with static calls.
#[cfg(feature = "dpdk")]
pub(crate) type PollWorker = crate::worker::Worker<cpu_crypto::ImbGcmAead>;

/// Errors of the DPDK backend.
#[cfg(feature = "dpdk")]
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DpdkError {
    /// A DPDK call failed.
    #[error(transparent)]
    Dpdk(#[from] ffi::Error),
    /// The profile is unusable.
    #[error(transparent)]
    Profile(#[from] profile::ProfileError),
    /// Installing an SA failed.
    #[error(transparent)]
    Sad(#[from] crate::sad::SadError),
    /// The profile does not fit the devices found.
    #[error("configuration: {0}")]
    Config(String),
    /// The data plane is gone (its poll loops were dropped).
    #[error("the data plane is not running")]
    Closed,
    /// The queue towards the data plane is full; try again later.
    #[error("the data plane's queue is full")]
    Busy,
    /// The system random generator failed (never replaced by a fixed value).
    #[error("the random generator failed")]
    Random,
}
