//! CHILD_SAs of an IKE SA and what the fastpath needs to install them.

use std::net::SocketAddr;
use std::time::Instant;

use zeroize::Zeroizing;

use crate::config::IpsecMode;
use crate::crypto::{EncrAlg, IntegAlg, KeGroup};
use crate::wire::ikev2::TrafficSelector;

/// Lifecycle of a CHILD_SA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChildState {
    /// Installed and carrying traffic.
    Installed,
    /// A rekey exchange for it is in progress.
    Rekeying,
    /// Replaced by a rekey; waiting for the DELETE exchange.
    Rekeyed,
    /// A DELETE for it is in progress.
    Deleting,
}

/// One CHILD_SA as the IKE SA tracks it.
pub struct ChildSa {
    /// Name of the child template it came from.
    pub name: String,
    /// Index of the template in the connection's children.
    pub template: usize,
    /// Our inbound SPI (the peer sends ESP with it).
    pub spi_in: u32,
    /// The peer's inbound SPI (we send ESP with it).
    pub spi_out: u32,
    /// Encryption algorithm.
    pub encr: EncrAlg,
    /// Integrity algorithm (None with AEAD).
    pub integ: Option<IntegAlg>,
    /// PFS group used when it was created or rekeyed.
    pub pfs: Option<KeGroup>,
    /// Extended sequence numbers.
    pub esn: bool,
    /// Tunnel or transport.
    pub mode: IpsecMode,
    /// Our selectors.
    pub local_ts: Vec<TrafficSelector>,
    /// The peer's selectors.
    pub remote_ts: Vec<TrafficSelector>,
    /// State.
    pub state: ChildState,
    /// When it was installed.
    pub installed_at: Instant,
    /// When to rekey it (soft lifetime), if ever.
    pub rekey_at: Option<Instant>,
    /// When it expires (hard lifetime), if ever.
    pub expire_at: Option<Instant>,
}

/// Keys of one direction of a CHILD_SA.
pub struct DirectionKeys {
    /// Encryption key, with the 4-byte salt at the end for AEADs.
    pub encr: Zeroizing<Vec<u8>>,
    /// Integrity key (empty with AEAD).
    pub integ: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for DirectionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "DirectionKeys {{ encr: <{} bytes>, integ: <{} bytes> }}",
            self.encr.len(),
            self.integ.len()
        )
    }
}

/// Everything the fastpath needs to install a CHILD_SA (both directions).
#[derive(Debug)]
pub struct ChildSaInstall {
    /// IKE SA it belongs to (initiator SPI, responder SPI).
    pub ike_spis: (u64, u64),
    /// Connection name.
    pub connection: String,
    /// Child name.
    pub name: String,
    /// Our inbound SPI.
    pub spi_in: u32,
    /// The peer's inbound SPI (our outbound).
    pub spi_out: u32,
    /// Encryption algorithm.
    pub encr: EncrAlg,
    /// Integrity algorithm (None with AEAD).
    pub integ: Option<IntegAlg>,
    /// PFS group, if any.
    pub pfs: Option<KeGroup>,
    /// Extended sequence numbers.
    pub esn: bool,
    /// Tunnel or transport.
    pub mode: IpsecMode,
    /// Our selectors.
    pub local_ts: Vec<TrafficSelector>,
    /// The peer's selectors.
    pub remote_ts: Vec<TrafficSelector>,
    /// Our outer address (IKE address; with UDP encapsulation, our NAT-T socket).
    pub local: SocketAddr,
    /// The peer's outer address.
    pub remote: SocketAddr,
    /// True when ESP must be UDP-encapsulated (RFC 3948) between `local` and `remote`.
    pub udp_encap: bool,
    /// Keys for packets we receive.
    pub inbound: DirectionKeys,
    /// Keys for packets we send.
    pub outbound: DirectionKeys,
    /// If this child replaces another one (rekey), that one's inbound SPI.
    pub rekey_of: Option<u32>,
}
