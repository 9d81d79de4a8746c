//! The seam between the control plane and a data plane: CHILD_SA events go
//! in, ESP packets from the NAT-T socket go in, counters come out.

use std::net::SocketAddr;
use std::sync::Arc;

use control::ike_sa::{ChildSa, ChildSaInstall, Event, RandomSpis, SpiAllocator, Transmit};
use serde::{Deserialize, Serialize};

/// Why a data plane did not start, or refused an SA or an IKE datagram.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataPlaneError {
    /// The software data plane's sockets or TUN device could not be set up.
    #[error("cannot start the software fastpath: {0}")]
    SoftwareStart(#[source] std::io::Error),
    /// The DPDK data plane did not start.
    #[cfg(feature = "dpdk")]
    #[error("cannot start the DPDK fastpath: {0}")]
    DpdkStart(#[source] crate::dpdk_plane::DpdkPlaneError),
    /// The configuration selects DPDK, but this build has no DPDK.
    #[cfg(not(feature = "dpdk"))]
    #[error("profile '{profile}' selects the DPDK backend, but this ironsa was built without DPDK")]
    NoDpdk {
        /// The hardware profile that selects DPDK.
        profile: String,
    },
    /// The SAD refused the SA (keys, algorithm, SPI already in use).
    #[error(transparent)]
    Sad(#[from] fastpath::sad::SadError),
    /// The DPDK backend refused the SA or the datagram (its queue is full or closed).
    #[cfg(feature = "dpdk")]
    #[error(transparent)]
    Dpdk(#[from] fastpath::dpdk::DpdkError),
    /// IKE was handed to a data plane that has no ports of its own.
    #[error("this data plane does not carry IKE")]
    CarriesNoIke,
}

/// Per-CHILD_SA counters shown by `ironsa sas`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChildCounters {
    /// Packets received (decrypted).
    pub packets_in: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Packets sent (encrypted).
    pub packets_out: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Packets dropped on this SA (replay, ICV failure...), outbound
    /// packets inside its selectors that found no policy included.
    pub drops: u64,
    /// Outbound packets inside its selectors that found no policy.
    #[serde(default)]
    pub no_policy: u64,
}

/// Forwards one ESP packet to another node: its SPI, where it arrived
/// (local, remote), whether it came in UDP, and the packet.
pub type EspSend = Arc<dyn Fn(u32, SocketAddr, SocketAddr, bool, &[u8]) + Send + Sync>;

/// Where ESP of other cluster nodes goes: the ranges they serve (the data
/// plane's workers test each unknown SPI against them), and the sender.
#[derive(Clone)]
pub struct EspForward {
    /// SPI ranges another node serves.
    pub ranges: Arc<fastpath::worker::ForeignRanges>,
    /// The sender.
    pub send: EspSend,
}

/// What the daemon needs from a data plane.
pub trait DataPlane: Send + Sync {
    /// Installs a negotiated CHILD_SA (both directions) and its policies.
    fn install(&self, child: &ChildSaInstall);
    /// Removes a CHILD_SA.
    fn remove(&self, spi_in: u32, spi_out: u32);
    /// Moves installed CHILD_SAs (by inbound SPI) to new outer addresses,
    /// ports and encapsulation in place: same SAs, sequence numbers and
    /// replay windows, so no rekey and no reordering.
    fn move_children(&self, spis_in: &[u32], local: SocketAddr, remote: SocketAddr, udp_encap: bool);
    /// New data-plane settings of the child templates (reload): for the SAs
    /// installed from now on.
    fn set_child_settings(&self, _settings: crate::child_sas::ChildSettings) {}
    /// An ESP-in-UDP packet that arrived on a control-plane NAT-T socket.
    fn esp_received(&self, local: SocketAddr, remote: SocketAddr, packet: &[u8]);
    /// Every IKE event, for logging or key export.
    fn ike_event(&self, _event: &Event) {}
    /// Counters of a CHILD_SA.
    fn child_counters(&self, _child: &ChildSa) -> Option<ChildCounters> {
        None
    }
    /// Counters of an ESP SA pair by inbound SPI and selectors (IKEv1 Quick Mode SAs).
    fn esp_sa_counters(
        &self,
        _spi_in: u32,
        _local_ts: &[control::wire::ikev2::TrafficSelector],
        _remote_ts: &[control::wire::ikev2::TrafficSelector],
    ) -> Option<ChildCounters> {
        None
    }
    /// The allocator of inbound SPIs (unique across the gateway).
    fn spi_allocator(&self) -> Arc<dyn SpiAllocator> {
        Arc::new(RandomSpis)
    }
    /// Makes the inbound SPIs allocated from now on carry this clustered
    /// node's id (a data plane without ESP has none to mark).
    fn set_spi_node(&self, _node: ironsa::cluster::NodeId) {}
    /// The next outbound ESP sequence number of the child with inbound SPI
    /// `spi_in` (`None`: no such child, or a data plane without ESP).
    fn esp_seq_out(&self, _spi_in: u32) -> Option<u64> {
        None
    }
    /// The highest inbound ESP sequence number the child with inbound SPI
    /// `spi_in` accepted (`None`: no such child, or no ESP here).
    fn esp_seq_in(&self, _spi_in: u32) -> Option<u64> {
        None
    }
    /// Restarts an adopted child's replay window at `top`: packets up to it
    /// count as seen; false if there is no such child.
    fn set_esp_seq_in(&self, _spi_in: u32, _top: u64) -> bool {
        false
    }
    /// Sends ESP without an SA here whose SPI names a range another cluster
    /// node serves to that node (set before the data plane runs).
    fn set_esp_forward(&self, _forward: EspForward) {}
    /// An ESP packet another node forwarded over the cluster link, as it
    /// arrived there (`udp`: ESP-in-UDP); decrypted like one received here.
    fn esp_forwarded(&self, _local: SocketAddr, _remote: SocketAddr, _udp: bool, _packet: &[u8]) {}
    /// Marks an adopted child's inbound SPI (allocated by another node) used
    /// here, so this node never allocates it again; false if it is in use.
    fn claim_spi(&self, _spi_in: u32) -> bool {
        true
    }
    /// Continues the child's outbound sequence numbers at `seq`; false if
    /// there is no such child.
    fn set_esp_seq_out(&self, _spi_in: u32, _seq: u64) -> bool {
        false
    }
    /// Prometheus lines for the data plane.
    fn metrics(&self) -> String {
        String::new()
    }
    /// Counters for `ironsa stats` (ports, queues, crypto devices...), if the data plane has any.
    fn stats(&self) -> Option<serde_json::Value> {
        None
    }
    /// True when IKE travels through the data plane's own ports (DPDK: the
    /// kernel never sees it). The shards then bind no sockets: they send with
    /// [`DataPlane::send_ike`] and receive what the data plane hands to the
    /// daemon's IKE sink.
    fn carries_ike(&self) -> bool {
        false
    }
    /// Sends an IKE message out of the data plane's ports (when [`DataPlane::carries_ike`]).
    fn send_ike(&self, _t: Transmit) -> Result<(), DataPlaneError> {
        Err(DataPlaneError::CarriesNoIke)
    }
    /// Stops the data plane's threads; called after the shards have sent their DELETEs.
    fn shutdown(&self) {}
}

/// IKE only: CHILD_SAs are negotiated and listed but carry no traffic.
#[derive(Default)]
pub struct NoDataPlane {
    installed: dashmap::DashMap<u32, u32>,
}

impl DataPlane for NoDataPlane {
    fn install(&self, child: &ChildSaInstall) {
        self.installed.insert(child.spi_in, child.spi_out);
    }
    fn remove(&self, spi_in: u32, _spi_out: u32) {
        self.installed.remove(&spi_in);
    }
    fn move_children(&self, _spis_in: &[u32], _local: SocketAddr, _remote: SocketAddr, _udp_encap: bool) {}
    fn esp_received(&self, _local: SocketAddr, _remote: SocketAddr, _packet: &[u8]) {}
    fn metrics(&self) -> String {
        format!(
            "# HELP ironsa_child_sas_installed CHILD_SAs known to the data plane\n# TYPE ironsa_child_sas_installed gauge\nironsa_child_sas_installed {}\n",
            self.installed.len()
        )
    }
}
