//! A shard's part in a cluster: it checkpoints the SAs it serves to the
//! store thread, continues the SAs of a range its node adopted, and lets go
//! of those of a range another node took.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use control::endpoint::Endpoint;
use control::ike_sa::resume::ResumableIkeSa;
use control::ike_sa::{ChildState, DirectionKeys, Event};
use control::wire::ikev2::Header;
use ironsa::cluster::link::{FrameKind, LinkSender};
use ironsa::cluster::store::StoreHandle;
use ironsa::cluster::{NodeId, node_of_ike_spi};
use std::net::SocketAddr;
use tracing::{info, warn};

use crate::dataplane::DataPlane;
use crate::registry::Registry;

/// A child's outbound sequence number is checkpointed again each time it
/// enters a new block of this many packets (and when the IKE SA changes).
const SEQ_STEP: u64 = 1 << 16;

/// How far past the last checkpoint an adopting node starts a child's
/// outbound sequence numbers: room for the packets the dead node sent after
/// it (a block, plus what a busy SA sends in the checkpoint intervals
/// before the node died), so that the peer's replay window drops none of ours.
pub const SEQ_MARGIN: u64 = 1 << 22;

/// The cluster state of one shard.
pub struct ShardCluster {
    store: Arc<StoreHandle>,
    /// Where datagrams of SAs another node serves go.
    link: Option<Arc<LinkSender>>,
    /// IKE SAs of the whole node (each shard adds its own).
    load: Arc<AtomicUsize>,
    counted: usize,
    /// The keys of the children this shard's SAs hold (the IKE SA does not
    /// keep them; another node needs them to continue the children).
    child_keys: HashMap<u32, (DirectionKeys, DirectionKeys)>,
    /// A digest of what was last checkpointed, by local IKE SPI.
    written: HashMap<u64, u64>,
    next_checkpoint: Instant,
    interval: Duration,
    /// Redirect new clients when this node serves this many IKE SAs more
    /// than the least loaded node (`None`: never).
    redirect_margin: Option<usize>,
    /// Sequence numbers to set once adopted children are installed: by
    /// inbound SPI, the next outbound one and the replay window's top.
    pending_seqs: Vec<(u32, u64, u64)>,
}

impl ShardCluster {
    /// A shard's cluster state; it checkpoints every `interval`.
    pub fn new(
        store: Arc<StoreHandle>,
        link: Option<Arc<LinkSender>>,
        load: Arc<AtomicUsize>,
        interval: Duration,
        redirect_margin: Option<usize>,
    ) -> Self {
        Self {
            store,
            link,
            load,
            counted: 0,
            child_keys: HashMap::new(),
            written: HashMap::new(),
            next_checkpoint: Instant::now() + interval,
            interval,
            redirect_margin,
            pending_seqs: Vec::new(),
        }
    }

    /// Where the endpoint sends new clients that support redirects: the
    /// least loaded node, while this one is above it by the margin.
    pub fn redirect_policy(&self) -> Option<control::endpoint::RedirectPolicy> {
        let margin = self.redirect_margin?;
        let view = self.store.view().clone();
        Some(Arc::new(move || view.redirect_target(margin)))
    }

    /// The store connection (for admission of new IKE SAs).
    pub fn store(&self) -> &StoreHandle {
        &self.store
    }

    /// Sends an IKE message to the node serving the range in its SPI, if
    /// that is another node; false when this node serves it.
    pub fn forward_ike(&self, header: &Header, local: SocketAddr, remote: SocketAddr, data: &[u8]) -> bool {
        let spi = header.recipient_spi();
        if spi == 0 {
            return false;
        }
        let Some(link) = &self.link else { return false };
        match self.store.view().forward_to(node_of_ike_spi(spi)) {
            Some((_, to)) => {
                link.forward(to, FrameKind::Ike, local, remote, data);
                true
            }
            None => false,
        }
    }

    /// When the next checkpoint is due.
    pub fn deadline(&self) -> Instant {
        self.next_checkpoint
    }

    /// Keeps the keys of installed children and forgets those of deleted ones.
    pub fn on_event(&mut self, ev: &Event) {
        match ev {
            Event::ChildSaInstalled(c) => {
                self.child_keys
                    .insert(c.spi_in, (c.inbound.clone(), c.outbound.clone()));
            }
            Event::ChildSaDeleted { spi_in, .. } => {
                self.child_keys.remove(spi_in);
            }
            _ => {}
        }
    }

    /// Sets the outbound sequence numbers and replay windows of the
    /// children adopted since the last call, once the data plane has
    /// installed them: packets the peer sent before the last checkpoint are
    /// refused as replays, later ones are taken.
    pub fn after_install(&mut self, dataplane: &dyn DataPlane) {
        for (spi_in, seq_out, seq_in) in self.pending_seqs.drain(..) {
            if !dataplane.set_esp_seq_out(spi_in, seq_out) || !dataplane.set_esp_seq_in(spi_in, seq_in) {
                warn!(
                    spi_in = format_args!("{spi_in:08x}"),
                    "adopted CHILD_SA is not in the data plane: its sequence numbers and replay window were not carried on"
                );
            }
        }
    }

    /// If due, queues the state of every SA that changed since its last
    /// checkpoint, and the removal of those that are gone.
    pub fn checkpoint(&mut self, now: Instant, endpoint: &Endpoint, dataplane: &dyn DataPlane) {
        if now < self.next_checkpoint {
            return;
        }
        self.next_checkpoint = now + self.interval;
        let mut seen = HashMap::with_capacity(self.written.len());
        for sa in endpoint.sas() {
            if !sa.is_established() {
                continue;
            }
            let spi = sa.local_spi();
            let mut digest = std::collections::hash_map::DefaultHasher::new();
            sa.message_ids().hash(&mut digest);
            for c in sa.children().iter().filter(|c| c.state == ChildState::Installed) {
                c.spi_in.hash(&mut digest);
                (dataplane.esp_seq_out(c.spi_in).unwrap_or(0) / SEQ_STEP).hash(&mut digest);
                (dataplane.esp_seq_in(c.spi_in).unwrap_or(0) / SEQ_STEP).hash(&mut digest);
            }
            let digest = digest.finish();
            if self.written.get(&spi) == Some(&digest) {
                seen.insert(spi, digest);
                continue;
            }
            // Busy (an exchange of ours in flight) or not resumable (AES-CBC): next time.
            let Some(mut state) = sa.resumable(now) else { continue };
            state.children.retain_mut(|c| match self.child_keys.get(&c.spi_in) {
                Some((inbound, outbound)) => {
                    c.inbound = inbound.clone();
                    c.outbound = outbound.clone();
                    c.esp_seq_out = dataplane.esp_seq_out(c.spi_in).unwrap_or(0);
                    c.esp_seq_in = dataplane.esp_seq_in(c.spi_in).unwrap_or(0);
                    true
                }
                None => false,
            });
            self.store.checkpoint(spi, state.encode().to_vec());
            seen.insert(spi, digest);
        }
        for spi in self.written.keys() {
            if !seen.contains_key(spi) && endpoint.sa(*spi).is_none() {
                self.store.forget(*spi);
            }
        }
        // SAs still there but not written this time keep their old digest.
        for (spi, d) in &self.written {
            if endpoint.sa(*spi).is_some() {
                seen.entry(*spi).or_insert(*d);
            }
        }
        self.written = seen;
        let n = endpoint.len();
        if n >= self.counted {
            self.load.fetch_add(n - self.counted, Ordering::Relaxed);
        } else {
            self.load.fetch_sub(self.counted - n, Ordering::Relaxed);
        }
        self.counted = n;
    }

    /// Continues IKE SAs of a range this node adopted; their children get
    /// outbound sequence numbers [`SEQ_MARGIN`] past the checkpoint and
    /// replay windows that start at the checkpoint.
    pub fn adopt(
        &mut self,
        now: Instant,
        endpoint: &mut Endpoint,
        dataplane: &dyn DataPlane,
        states: Vec<ResumableIkeSa>,
    ) {
        let (mut ok, mut failed) = (0usize, 0usize);
        for state in states {
            for c in &state.children {
                if !dataplane.claim_spi(c.spi_in) {
                    warn!(
                        spi_in = format_args!("{:08x}", c.spi_in),
                        "adopted CHILD_SA's inbound SPI is in use here already"
                    );
                }
            }
            match endpoint.adopt(now, &state) {
                Ok(spi) => {
                    ok += 1;
                    for c in &state.children {
                        self.pending_seqs
                            .push((c.spi_in, c.esp_seq_out.saturating_add(SEQ_MARGIN), c.esp_seq_in));
                    }
                    // The new owner writes it again, under its ownership.
                    self.written.remove(&spi);
                }
                Err(e) => {
                    failed += 1;
                    warn!(
                        spi_i = format_args!("{:016x}", state.spis.0),
                        connection = %state.connection,
                        "cannot continue an adopted IKE SA: {e}"
                    );
                }
            }
        }
        info!(adopted = ok, failed, "IKE SAs taken over from another node");
    }

    /// Lets go, without a word to the peers, of the IKE SAs of `range`,
    /// which another node serves now.
    pub fn release(
        &mut self,
        range: NodeId,
        shard: usize,
        endpoint: &mut Endpoint,
        dataplane: &dyn DataPlane,
        registry: &Registry,
    ) {
        let spis: Vec<u64> = endpoint
            .sas()
            .map(|sa| sa.local_spi())
            .filter(|spi| node_of_ike_spi(*spi) == range)
            .collect();
        for spi in &spis {
            let Some(sa) = endpoint.release(*spi) else { continue };
            for c in sa.children() {
                dataplane.remove(c.spi_in, c.spi_out);
                endpoint.context().child_spis.release(c.spi_in);
                self.child_keys.remove(&c.spi_in);
            }
            registry.gone(shard, *spi);
            self.written.remove(spi);
        }
        if !spis.is_empty() {
            info!(
                shard,
                range,
                sas = spis.len(),
                "IKE SAs handed to the node that serves their range now"
            );
        }
    }
}
