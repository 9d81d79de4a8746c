//! Active-active clustering: nodes that share their SAs through a
//! distributed store (etcd), so that a surviving node can take over the
//! tunnels of one that died.
//!
//! Every node carries its id in the SPIs it allocates, next to the shard
//! id: in an IKE SPI the [`NODE_BITS`] below the shard bits, in an ESP SPI
//! the top [`NODE_BITS`]. Whoever receives a datagram can thus tell which
//! node owns it without asking the store. With no `[cluster]` section the
//! node bits are not reserved and nothing here runs.
pub mod link;
pub mod store;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use zeroize::Zeroizing;

/// Bits of the IKE SPI that carry the shard id (its top bits).
pub const SHARD_BITS: u32 = 6;
/// Bits of an SPI (IKE and ESP) that carry the node id of a clustered node.
pub const NODE_BITS: u32 = 6;
/// Node ids are `0..MAX_NODES`.
pub const MAX_NODES: u8 = 1 << NODE_BITS;

/// A node's id within its cluster.
pub type NodeId = u8;

/// The node whose id is in our IKE SPI `spi` (meaningful for SPIs a
/// clustered node allocated).
pub fn node_of_ike_spi(spi: u64) -> NodeId {
    ((spi >> (64 - SHARD_BITS - NODE_BITS)) & u64::from(MAX_NODES - 1)) as NodeId
}

/// The node whose id is in our inbound ESP SPI `spi`.
pub fn node_of_esp_spi(spi: u32) -> NodeId {
    (spi >> (32 - NODE_BITS)) as NodeId
}

/// The IKE SPI prefix of `shard` on `node` (`None`: not clustered) as the
/// endpoint takes it: the value that goes in the top bits, and how many
/// top bits it has.
pub fn ike_spi_prefix(shard: usize, node: Option<NodeId>) -> (u64, u32) {
    match node {
        None => (shard as u64, SHARD_BITS),
        Some(n) => (((shard as u64) << NODE_BITS) | u64::from(n), SHARD_BITS + NODE_BITS),
    }
}

/// The settings of `[cluster]`.
#[derive(Clone)]
pub struct ClusterConfig {
    /// This node's id, unique in the cluster.
    pub node: NodeId,
    /// The store's client endpoints (`host:port` or `http://host:port`).
    pub store: Vec<String>,
    /// Prefix of every key this cluster writes in the store, so several
    /// clusters can share one store.
    pub name: String,
    /// The inter-node link: this node receives forwarded datagrams here.
    pub link: SocketAddr,
    /// Authenticates inter-node datagrams (HMAC-SHA-256).
    pub link_key: Zeroizing<Vec<u8>>,
    /// Seals SA state at rest in the store (AES-256-GCM).
    pub cluster_key: Zeroizing<Vec<u8>>,
    /// How long a node's lease lives without a keep-alive: a node silent
    /// this long is dead, and another node adopts its SAs.
    pub lease: Duration,
    /// How often SA state changes are written to the store, in one batch.
    pub checkpoint_interval: Duration,
    /// Where the keys came from (for messages).
    pub key_files: (PathBuf, PathBuf),
    /// The address clients reach this node at (published, for redirects).
    pub address: Option<std::net::IpAddr>,
    /// Redirect new clients that support it (RFC 5685) to the least loaded
    /// node when this node serves more than this many IKE SAs above it
    /// (`None`: never).
    pub redirect_margin: Option<usize>,
}

impl ClusterConfig {
    /// True if `other` sets the same (keys compared in constant time): a
    /// reload cannot change a running node's cluster settings.
    pub fn same_as(&self, other: &ClusterConfig) -> bool {
        let keys_same = |a: &[u8], b: &[u8]| aws_lc_rs::constant_time::verify_slices_are_equal(a, b).is_ok();
        self.node == other.node
            && self.store == other.store
            && self.name == other.name
            && self.link == other.link
            && self.lease == other.lease
            && self.checkpoint_interval == other.checkpoint_interval
            && self.address == other.address
            && self.redirect_margin == other.redirect_margin
            && keys_same(&self.link_key, &other.link_key)
            && keys_same(&self.cluster_key, &other.cluster_key)
    }
}

impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("node", &self.node)
            .field("store", &self.store)
            .field("name", &self.name)
            .field("link", &self.link)
            .field("lease", &self.lease)
            .field("checkpoint_interval", &self.checkpoint_interval)
            .field("address", &self.address)
            .field("redirect_margin", &self.redirect_margin)
            .field("key_files", &self.key_files)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_sit_below_the_shard_in_ike_spis_and_on_top_of_esp_spis() {
        let (prefix, bits) = ike_spi_prefix(5, Some(42));
        assert_eq!(bits, 12);
        let spi = (prefix << (64 - bits)) | 0xdead_beef;
        assert_eq!(spi >> (64 - SHARD_BITS), 5);
        assert_eq!(node_of_ike_spi(spi), 42);
        assert_eq!(ike_spi_prefix(5, None), (5, SHARD_BITS));
        assert_eq!(node_of_esp_spi((42 << 26) | 0x1234), 42);
        assert_eq!(node_of_esp_spi(u32::MAX), MAX_NODES - 1);
    }

    #[test]
    fn cluster_settings_compare_keys_too() {
        let c = ClusterConfig {
            node: 1,
            store: vec!["127.0.0.1:2379".into()],
            name: "ironsa".into(),
            link: "127.0.0.1:4510".parse().unwrap(),
            link_key: Zeroizing::new(vec![1; 32]),
            cluster_key: Zeroizing::new(vec![2; 32]),
            lease: Duration::from_secs(2),
            checkpoint_interval: Duration::from_secs(1),
            key_files: Default::default(),
            address: None,
            redirect_margin: None,
        };
        assert!(c.same_as(&c.clone()));
        let mut other = c.clone();
        other.cluster_key = Zeroizing::new(vec![3; 32]);
        assert!(!c.same_as(&other));
        let mut other = c.clone();
        other.node = 2;
        assert!(!c.same_as(&other));
    }
}
