//! Cross-shard indexes: which shard holds which IKE SAs of a peer identity
//! (for INITIAL_CONTACT and duplicate SAs), and the SA listings the CLI shows.

use std::hash::{BuildHasher, RandomState};
use std::time::Instant;

use control::config::display_identity;
use control::ike_sa::IkeSa;
use control::ikev1::{Ikev1Sa, MainModeState};
use control::ts;
use control::wire::ikev2::Identification;
use dashmap::DashMap;
use serde::{Deserialize, Serialize};

use crate::dataplane::{ChildCounters, DataPlane};

/// A 128-bit keyed digest of a peer identity (SipHash with a key chosen at
/// start, over the identity and over the identity with a tag): the indexes
/// hold it instead of a copy of the identity. Peers cannot aim at collisions
/// without the key, and a chance collision needs ≈ 2^64 identities. Two
/// words rather than a `u128`, whose 16-byte alignment would pad map entries.
type PeerKey = [u64; 2];

/// The established IKE SAs of one peer as (shard, local SPI): one inline
/// (the rule), more on the heap.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PeerSas {
    One(usize, u64),
    Many(Vec<(usize, u64)>),
}

impl PeerSas {
    fn push(&mut self, sa: (usize, u64)) {
        match self {
            Self::One(shard, spi) => *self = Self::Many(vec![(*shard, *spi), sa]),
            Self::Many(v) if v.is_empty() => *self = Self::One(sa.0, sa.1),
            Self::Many(v) => v.push(sa),
        }
    }

    /// Removes every SA and returns them.
    fn take(&mut self) -> Vec<(usize, u64)> {
        match std::mem::replace(self, Self::Many(Vec::new())) {
            Self::One(shard, spi) => vec![(shard, spi)],
            Self::Many(v) => v,
        }
    }

    fn retain(&mut self, keep: impl Fn(&(usize, u64)) -> bool) {
        match self {
            Self::One(shard, spi) => {
                if !keep(&(*shard, *spi)) {
                    *self = Self::Many(Vec::new());
                }
            }
            Self::Many(v) => {
                v.retain(keep);
                if let [one] = v[..] {
                    *self = Self::One(one.0, one.1);
                }
            }
        }
    }

    fn replace(&mut self, old: (usize, u64), new: (usize, u64)) {
        match self {
            Self::One(shard, spi) if (*shard, *spi) == old => *self = Self::One(new.0, new.1),
            Self::One(..) => {}
            Self::Many(v) => v.iter_mut().filter(|x| **x == old).for_each(|x| *x = new),
        }
    }

    fn is_empty(&self) -> bool {
        matches!(self, Self::Many(v) if v.is_empty())
    }
}

/// Peer identity → (shard, local SPI) of its established IKE SAs.
pub struct Registry {
    by_peer: DashMap<PeerKey, PeerSas>,
    by_spi: DashMap<(usize, u64), PeerKey>,
    key: RandomState,
}

impl Default for Registry {
    fn default() -> Self {
        Self {
            by_peer: DashMap::new(),
            by_spi: DashMap::new(),
            key: RandomState::new(),
        }
    }
}

impl Registry {
    /// An empty registry with room for `sas` established IKE SAs.
    pub fn with_capacity(sas: usize) -> Self {
        Self {
            by_peer: DashMap::with_capacity(sas),
            by_spi: DashMap::with_capacity(sas),
            key: RandomState::new(),
        }
    }

    fn key(&self, peer: &Identification) -> PeerKey {
        [self.key.hash_one(peer), self.key.hash_one((peer, 1u8))]
    }

    /// Records an established SA; with INITIAL_CONTACT returns the peer's older SAs to delete.
    pub fn established(
        &self,
        peer: &Identification,
        shard: usize,
        spi: u64,
        initial_contact: bool,
    ) -> Vec<(usize, u64)> {
        let peer = self.key(peer);
        let mut entry = self.by_peer.entry(peer).or_insert(PeerSas::Many(Vec::new()));
        let stale = if initial_contact { entry.take() } else { Vec::new() };
        entry.push((shard, spi));
        drop(entry);
        self.by_spi.insert((shard, spi), peer);
        for s in &stale {
            self.by_spi.remove(s);
        }
        stale
    }

    /// Forgets an SA.
    pub fn gone(&self, shard: usize, spi: u64) {
        if let Some((_, peer)) = self.by_spi.remove(&(shard, spi)) {
            if let Some(mut v) = self.by_peer.get_mut(&peer) {
                v.retain(|x| *x != (shard, spi));
            }
            self.by_peer.remove_if(&peer, |_, v| v.is_empty());
        }
    }

    /// Moves an SA's record to its rekeyed successor.
    pub fn rekeyed(&self, shard: usize, old: u64, new: u64) {
        if let Some((_, peer)) = self.by_spi.remove(&(shard, old)) {
            if let Some(mut v) = self.by_peer.get_mut(&peer) {
                v.replace((shard, old), (shard, new));
            }
            self.by_spi.insert((shard, new), peer);
        }
    }

    /// Number of distinct authenticated peers.
    pub fn peers(&self) -> usize {
        self.by_peer.len()
    }
}

/// One CHILD_SA as listed by `ironsa sas`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChildSummary {
    /// Child name.
    pub name: String,
    /// State.
    pub state: String,
    /// Mode.
    pub mode: String,
    /// Our inbound SPI (hex).
    pub spi_in: String,
    /// Our outbound SPI (hex).
    pub spi_out: String,
    /// Encryption.
    pub encr: String,
    /// Integrity.
    pub integ: Option<String>,
    /// PFS group.
    pub pfs: Option<String>,
    /// Every key exchange that keyed it: the PFS group, then the RFC 9370
    /// additional ones as `keN_method`; empty when keyed from SK_d alone.
    #[serde(default)]
    pub key_exchanges: Vec<String>,
    /// ESN in use.
    pub esn: bool,
    /// Our selectors.
    pub local_ts: Vec<String>,
    /// The peer's selectors.
    pub remote_ts: Vec<String>,
    /// Seconds since installed.
    pub installed_secs: u64,
    /// Seconds until rekey.
    pub rekey_in_secs: Option<u64>,
    /// Fastpath counters, when a fastpath is running.
    pub counters: Option<ChildCounters>,
}

/// One IKE SA as listed by `ironsa sas`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SaSummary {
    /// Owning shard.
    pub shard: usize,
    /// Connection name.
    pub connection: String,
    /// State.
    pub state: String,
    /// Our role.
    pub role: String,
    /// Initiator SPI (hex).
    pub spi_i: String,
    /// Responder SPI (hex).
    pub spi_r: String,
    /// Our address.
    pub local: String,
    /// Peer address.
    pub remote: String,
    /// Peer identity.
    pub peer_id: Option<String>,
    /// IKE algorithms.
    pub algorithms: Option<String>,
    /// Every key exchange that went into the IKE SA's keys: the one of
    /// IKE_SA_INIT, then the RFC 9370 additional ones as `keN_method`.
    #[serde(default)]
    pub key_exchanges: Vec<String>,
    /// One of those key exchanges resists quantum computers (ML-KEM).
    #[serde(default)]
    pub post_quantum: bool,
    /// UDP encapsulation in use.
    pub nat_t: bool,
    /// A NAT was detected in front of us (we send NAT keepalives).
    #[serde(default)]
    pub nat_local: bool,
    /// A NAT was detected in front of the peer (we follow its rebindings).
    #[serde(default)]
    pub nat_remote: bool,
    /// MOBIKE (RFC 4555) negotiated: the peer may move the SA to new addresses.
    #[serde(default)]
    pub mobike: bool,
    /// CHILD_SAs (IKEv1: the ESP SAs of Quick Mode).
    pub children: Vec<ChildSummary>,
    /// IKE major version (1 or 2).
    #[serde(default = "ikev2_version")]
    pub version: u8,
    /// IKEv1: the Phase 1 state (MM_* or AM_*).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase1_state: Option<String>,
    /// IKEv1 gateway of a connection with XAUTH: its state (XAUTH_*).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xauth_state: Option<String>,
    /// IKEv1: the user name XAUTH authenticated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xauth_user: Option<String>,
    /// Virtual IPs we leased to the peer from our pools.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remote_vips: Vec<String>,
    /// Virtual IPs the peer assigned us.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub local_vips: Vec<String>,
    /// DNS servers the peer sent us with them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<String>,
}

/// One address pool as listed by `ironsa pools`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PoolSummary {
    /// Pool name.
    pub name: String,
    /// `ipv4` or `ipv6`.
    pub family: String,
    /// Addresses in the pool.
    pub size: u64,
    /// Addresses leased.
    pub used: u64,
    /// Current leases.
    pub leases: Vec<LeaseSummary>,
}

/// One lease of a pool.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LeaseSummary {
    /// The virtual IP.
    pub address: String,
    /// The identity holding it.
    pub identity: String,
}

impl PoolSummary {
    /// Snapshot of a pool.
    pub fn of(pool: &control::pool::Pool) -> Self {
        let stats = pool.stats();
        let mut leases: Vec<LeaseSummary> = pool
            .leases()
            .map(|(a, id)| LeaseSummary {
                address: a.to_string(),
                identity: id.to_string(),
            })
            .collect();
        leases.sort_by(|a, b| a.identity.cmp(&b.identity));
        PoolSummary {
            name: pool.name().to_string(),
            family: if pool.is_ipv4() { "ipv4" } else { "ipv6" }.into(),
            size: stats.size,
            used: stats.leased,
            leases,
        }
    }
}

fn ikev2_version() -> u8 {
    2
}

impl SaSummary {
    /// Snapshot of an SA.
    pub fn of(sa: &IkeSa, shard: usize, now: Instant, dp: &dyn DataPlane) -> Self {
        let state = if sa.is_rekeyed() {
            "REKEYED"
        } else if sa.is_deleting() {
            "DELETING"
        } else if sa.is_established() {
            "ESTABLISHED"
        } else if sa.is_half_open() {
            "CONNECTING"
        } else {
            "DELETING"
        };
        let (spi_i, spi_r) = sa.spis();
        let key_exchanges = sa.key_exchanges();
        SaSummary {
            shard,
            connection: sa.config().name.clone(),
            state: state.into(),
            role: format!("{:?}", sa.role()).to_lowercase(),
            spi_i: format!("{spi_i:016x}"),
            spi_r: format!("{spi_r:016x}"),
            local: sa.local_addr().to_string(),
            remote: sa.remote_addr().to_string(),
            peer_id: sa.peer_id().map(display_identity),
            algorithms: sa.suite().map(|s| {
                let integ = s.integ.map(|i| format!("-{}", i.name())).unwrap_or_default();
                format!(
                    "{}{}-{}-{}",
                    s.encr.name(),
                    integ,
                    s.prf.name(),
                    key_exchanges.join("-")
                )
            }),
            post_quantum: sa.is_post_quantum(),
            key_exchanges,
            nat_t: sa.udp_encapsulation(),
            nat_local: sa.nat_detected().0,
            nat_remote: sa.nat_detected().1,
            mobike: sa.mobike(),
            children: sa
                .children()
                .iter()
                .map(|c| ChildSummary {
                    name: sa.child_name(c).to_string(),
                    state: format!("{:?}", c.state).to_uppercase(),
                    mode: format!("{:?}", c.mode).to_uppercase(),
                    spi_in: format!("{:08x}", c.spi_in),
                    spi_out: format!("{:08x}", c.spi_out),
                    encr: c.encr.name(),
                    integ: c.integ.map(|i| i.name().to_string()),
                    pfs: c.pfs.map(|g| g.name().to_string()),
                    key_exchanges: c.key_exchanges(),
                    esn: c.esn,
                    local_ts: c.local_ts.iter().map(ts::display).collect(),
                    remote_ts: c.remote_ts.iter().map(ts::display).collect(),
                    installed_secs: now.saturating_duration_since(c.installed_at).as_secs(),
                    rekey_in_secs: c.rekey_at.map(|r| r.saturating_duration_since(now).as_secs()),
                    counters: dp.child_counters(c),
                })
                .collect(),
            version: 2,
            phase1_state: None,
            xauth_state: None,
            xauth_user: None,
            remote_vips: sa
                .virtual_ips()
                .map(|v| v.remote.iter().map(ToString::to_string).collect())
                .unwrap_or_default(),
            local_vips: sa
                .virtual_ips()
                .map(|v| v.local.iter().map(ToString::to_string).collect())
                .unwrap_or_default(),
            dns: sa
                .virtual_ips()
                .map(|v| v.dns.iter().map(ToString::to_string).collect())
                .unwrap_or_default(),
        }
    }

    /// Snapshot of an IKEv1 SA: its Quick Modes are its children (state QM_*).
    pub fn of_ikev1(sa: &Ikev1Sa, shard: usize, now: Instant, dp: &dyn DataPlane) -> Self {
        let (spi_i, spi_r) = sa.cookies();
        let xauth_pending = sa.xauth_state().is_some_and(|x| x != control::ikev1::XauthState::Done);
        let state = match (sa.is_down(), sa.state()) {
            (true, _) => "DELETING",
            (false, MainModeState::Done) if !xauth_pending => "ESTABLISHED",
            (false, _) => "CONNECTING",
        };
        SaSummary {
            shard,
            connection: sa.connection().name.clone(),
            state: state.into(),
            role: format!("{:?}", sa.role()).to_lowercase(),
            spi_i: format!("{spi_i:016x}"),
            spi_r: format!("{spi_r:016x}"),
            local: sa.local_addr().to_string(),
            remote: sa.remote_addr().to_string(),
            peer_id: sa.peer_id().map(display_identity),
            algorithms: sa
                .suite()
                .map(|s| format!("{}-{}-{}", s.encr.name(), s.hash.name(), s.group.name())),
            key_exchanges: sa.suite().map(|s| s.group.name().to_string()).into_iter().collect(),
            post_quantum: false,
            nat_t: false,
            nat_local: false,
            nat_remote: false,
            mobike: false,
            children: sa
                .esp_sas()
                .into_iter()
                .map(|q| ChildSummary {
                    name: q.name,
                    state: q.state.to_string(),
                    mode: q
                        .suite
                        .map_or_else(String::new, |s| format!("{:?}", s.mode).to_uppercase()),
                    spi_in: format!("{:08x}", q.spi_in),
                    spi_out: format!("{:08x}", q.spi_out),
                    encr: q.suite.map_or_else(String::new, |s| s.encr.name()),
                    integ: q.suite.and_then(|s| s.integ).map(|i| i.name().to_string()),
                    pfs: q.suite.and_then(|s| s.pfs).map(|g| g.name().to_string()),
                    key_exchanges: q
                        .suite
                        .and_then(|s| s.pfs)
                        .map(|g| g.name().to_string())
                        .into_iter()
                        .collect(),
                    esn: false,
                    local_ts: vec![ts::display(&q.local_ts)],
                    remote_ts: vec![ts::display(&q.remote_ts)],
                    installed_secs: q.installed_at.map_or(0, |t| now.saturating_duration_since(t).as_secs()),
                    rekey_in_secs: None,
                    counters: dp.esp_sa_counters(
                        q.spi_in,
                        std::slice::from_ref(&q.local_ts),
                        std::slice::from_ref(&q.remote_ts),
                    ),
                })
                .collect(),
            version: 1,
            phase1_state: Some(sa.state_name()),
            xauth_state: sa.xauth_state().map(|x| x.to_string()),
            xauth_user: sa.xauth_user().map(str::to_string),
            remote_vips: sa.remote_virtual_ips().iter().map(ToString::to_string).collect(),
            local_vips: Vec::new(),
            dns: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use control::config::parse_identity;

    #[test]
    fn initial_contact_returns_older_sas_of_the_same_peer_only() {
        let r = Registry::default();
        let (a, b) = (parse_identity("a@test"), parse_identity("b@test"));
        assert!(r.established(&a, 0, 1, false).is_empty());
        assert!(r.established(&a, 1, 2, false).is_empty());
        assert!(r.established(&b, 0, 3, true).is_empty());
        assert_eq!(r.peers(), 2);
        r.rekeyed(1, 2, 20);
        let mut stale = r.established(&a, 0, 4, true);
        stale.sort();
        assert_eq!(
            stale,
            vec![(0, 1), (1, 20)],
            "a's older SAs, rekeyed one under its new SPI"
        );
        r.gone(0, 4);
        r.gone(0, 1); // already dropped by INITIAL_CONTACT: no effect
        assert_eq!(r.peers(), 1, "a has no SA left, b keeps one");
        assert_eq!(r.established(&b, 1, 5, true), vec![(0, 3)]);
    }
}
