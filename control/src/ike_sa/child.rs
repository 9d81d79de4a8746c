//! CHILD_SAs of an IKE SA and what the fastpath needs to install them.

use std::net::SocketAddr;
use std::time::Instant;

use zeroize::Zeroizing;

use crate::config::IpsecMode;
use crate::crypto::{EncrAlg, IntegAlg, KeGroup};
use crate::proposal::{AdditionalKeSlots, additional_ke_list, key_exchange_names};
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

/// Traffic selectors of a CHILD_SA: one inline (nearly always), more on the heap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selectors {
    /// A single selector.
    One(TrafficSelector),
    /// Any number of them.
    Many(Vec<TrafficSelector>),
}

impl Selectors {
    /// Heap bytes held (0 for a single selector).
    pub fn heap_bytes(&self) -> usize {
        match self {
            Self::One(_) => 0,
            Self::Many(v) => v.capacity() * std::mem::size_of::<TrafficSelector>(),
        }
    }
}

impl std::ops::Deref for Selectors {
    type Target = [TrafficSelector];

    fn deref(&self) -> &[TrafficSelector] {
        match self {
            Self::One(t) => std::slice::from_ref(t),
            Self::Many(v) => v,
        }
    }
}

impl From<&[TrafficSelector]> for Selectors {
    fn from(ts: &[TrafficSelector]) -> Self {
        match ts {
            [one] => Self::One(one.clone()),
            more => Self::Many(more.to_vec()),
        }
    }
}

/// One CHILD_SA as the IKE SA tracks it (its name is its template's:
/// [`crate::ike_sa::IkeSa::child_name`]).
pub struct ChildSa {
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
    /// RFC 9370 additional key exchanges run after the PFS one (IKE_FOLLOWUP_KE).
    pub additional_ke: AdditionalKeSlots,
    /// Extended sequence numbers.
    pub esn: bool,
    /// Tunnel or transport.
    pub mode: IpsecMode,
    /// Our selectors.
    pub local_ts: Selectors,
    /// The peer's selectors.
    pub remote_ts: Selectors,
    /// State.
    pub state: ChildState,
    /// When it was installed.
    pub installed_at: Instant,
    /// When to rekey it (soft lifetime), if ever.
    pub rekey_at: Option<Instant>,
    /// When it expires (hard lifetime), if ever.
    pub expire_at: Option<Instant>,
}

impl ChildSa {
    /// The key exchanges that keyed it, as proposals name them
    /// (`["x25519", "ke1_mlkem768"]`); none when it was keyed from SK_d alone.
    pub fn key_exchanges(&self) -> Vec<String> {
        key_exchange_names(self.pfs, &additional_ke_list(&self.additional_ke))
    }
}

/// Keys of one direction of a CHILD_SA.
#[derive(Clone)]
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
    /// RFC 9370 additional key exchanges run after the PFS one (ADDKE
    /// number, method), in order.
    pub additional_ke: Vec<(u8, KeGroup)>,
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
    /// The virtual IPs the peer assigned us that our selectors name: the
    /// data plane installs them as the inner source of the tunnel.
    pub local_vips: Vec<std::net::IpAddr>,
}
