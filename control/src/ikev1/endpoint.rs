//! All IKEv1 SAs of one driver (a daemon shard), sans-IO: demultiplexing
//! by cookies, creation of responder SAs from first Phase 1 messages with a
//! cap on unauthenticated ones, timers, and the merged queues of datagrams
//! and events. The IKEv2 [`crate::endpoint::Endpoint`] is its sibling; a
//! driver tells them apart with [`crate::wire::ingress::classify`].

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use super::{Ikev1Error, Ikev1Policy, Ikev1Sa, MainModeState, starts_phase1};
use crate::config::ConnectionConfig;
use crate::ike_sa::{Context, Event, Role, Transmit};
use crate::wire::isakmp;

/// Unauthenticated responder SAs kept at once, unless configured otherwise.
pub const DEFAULT_MAX_HALF_OPEN: usize = 1024;

/// The IKEv1 SAs of one driver.
pub struct Ikev1Endpoint {
    ctx: Context,
    policy: Ikev1Policy,
    max_half_open: usize,
    /// By (initiator cookie, responder cookie); an SA we initiate is keyed
    /// with a zero responder cookie until the responder's first answer.
    sas: HashMap<(u64, u64), Ikev1Sa>,
    /// Responder SAs by the peer's initiator cookie, for its repeated
    /// first messages (which carry no responder cookie).
    responders: HashMap<u64, (u64, u64)>,
    /// Responder SAs not authenticated yet.
    half_open: std::collections::HashSet<(u64, u64)>,
    /// Deadlines by SA, earliest first; entries an SA has since moved are
    /// skipped when they come up.
    timers: BinaryHeap<Reverse<(Instant, (u64, u64))>>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
}

impl Ikev1Endpoint {
    /// An endpoint answering with `ctx`'s connections under `policy`.
    pub fn new(ctx: Context, policy: Ikev1Policy) -> Self {
        Ikev1Endpoint {
            ctx,
            policy,
            max_half_open: DEFAULT_MAX_HALF_OPEN,
            sas: HashMap::new(),
            responders: HashMap::new(),
            half_open: std::collections::HashSet::new(),
            timers: BinaryHeap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// Replaces the connections new SAs are made from (existing SAs keep theirs).
    pub fn set_connections(&mut self, connections: Vec<Arc<ConnectionConfig>>) {
        self.ctx.connections = Arc::new(connections);
    }

    /// True when some connection speaks IKEv1 or an IKEv1 SA exists: else a
    /// driver leaves IKEv1 datagrams to the IKEv2 endpoint, which counts
    /// and logs them as an unsupported version.
    pub fn serves(&self) -> bool {
        !self.sas.is_empty() || self.ctx.connections.iter().any(|c| c.ike_versions.allows_v1())
    }

    /// Caps the unauthenticated responder SAs (new Phase 1 requests beyond
    /// it are refused until some complete or time out).
    pub fn set_max_half_open(&mut self, max: usize) {
        self.max_half_open = max;
    }

    /// Starts Main Mode (or Aggressive Mode) to `remote`; returns the
    /// initiator cookie.
    pub fn initiate(
        &mut self,
        now: Instant,
        conn: Arc<ConnectionConfig>,
        local: SocketAddr,
        remote: SocketAddr,
        aggressive: bool,
    ) -> Result<u64, Ikev1Error> {
        let sa = if aggressive {
            Ikev1Sa::initiate_aggressive(&self.ctx, conn, local, remote, now)?
        } else {
            Ikev1Sa::initiate(&self.ctx, conn, local, remote, now)?
        };
        let cookies = sa.cookies();
        self.sas.insert(cookies, sa);
        self.pump(cookies);
        Ok(cookies.0)
    }

    /// Processes a datagram (without non-ESP marker) received on `local`
    /// from `remote`.
    pub fn handle(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        datagram: &[u8],
    ) -> Result<(), Ikev1Error> {
        let (h, _) = isakmp::split_message(datagram)?;
        let key = (h.cookie_i, h.cookie_r);
        if self.sas.contains_key(&key) {
            let r = self.sas.get_mut(&key).map_or(Ok(()), |sa| {
                // Answers go where an authenticated message came from (an
                // encrypted one, or Aggressive Mode's HASH_I in the clear).
                let authenticated = h.is_encrypted() || h.exchange == isakmp::ExchangeType::AGGRESSIVE;
                let moved = authenticated.then(|| sa.peer_sent_from(local, remote)).flatten();
                let r = sa.handle(now, datagram);
                match (moved, &r) {
                    (Some(before), Ok(())) => sa.confirm_peer_move(&before),
                    (Some(before), Err(_)) => sa.undo_peer_move(before),
                    (None, _) => {}
                }
                r
            });
            self.pump(key);
            return r;
        }
        // The responder's first answer to an SA we initiated.
        let ours = (h.cookie_i, 0);
        if h.cookie_r != 0
            && self
                .sas
                .get(&ours)
                .is_some_and(|sa| sa.role() == Role::Initiator && sa.state() == MainModeState::SaSent)
        {
            let r = self.sas.get_mut(&ours).map_or(Ok(()), |sa| sa.handle(now, datagram));
            if let Some(sa) = self.sas.remove(&ours) {
                let cookies = sa.cookies();
                self.sas.insert(cookies, sa);
                self.pump(cookies);
            }
            return r;
        }
        // A repeated first message of a responder SA we created: its answer again.
        if h.cookie_r == 0
            && let Some(&k) = self.responders.get(&h.cookie_i)
        {
            let r = self.sas.get_mut(&k).map_or(Ok(()), |sa| sa.handle(now, datagram));
            self.pump(k);
            return r;
        }
        if h.cookie_r != 0 || !starts_phase1(datagram) {
            return Err(Ikev1Error::InvalidMessage(format!("{h}: no such ISAKMP SA")));
        }
        if self.half_open.len() >= self.max_half_open {
            return Err(Ikev1Error::NoConnection(format!(
                "{} unauthenticated IKEv1 SAs already: new Phase 1 requests are refused",
                self.max_half_open
            )));
        }
        let sa = Ikev1Sa::respond(&self.ctx, &self.policy, local, remote, datagram, now)?;
        let cookies = sa.cookies();
        self.sas.insert(cookies, sa);
        self.responders.insert(cookies.0, cookies);
        self.half_open.insert(cookies);
        self.pump(cookies);
        Ok(())
    }

    /// Moves an SA's datagrams and events to the endpoint; forgets it once down.
    fn pump(&mut self, key: (u64, u64)) {
        let Some(sa) = self.sas.get_mut(&key) else { return };
        while let Some(t) = sa.poll_transmit() {
            self.transmits.push_back(t);
        }
        let mut came_up = None;
        while let Some(e) = sa.poll_event() {
            if let Event::IkeSaUp { initial_contact, .. } = &e {
                came_up = Some(*initial_contact);
            }
            self.events.push_back(e);
        }
        let reauth = sa.take_reauth_due();
        if let Some(initial_contact) = came_up {
            self.adopt_children(key, initial_contact);
        }
        if let Some(now) = reauth {
            self.start_reauth(key, now);
        }
        let Some(sa) = self.sas.get_mut(&key) else { return };
        if let Some(t) = sa.poll_timeout() {
            self.timers.push(Reverse((t, key)));
        }
        if sa.state() == MainModeState::Done || sa.is_down() {
            self.half_open.remove(&key);
        }
        if sa.is_down() {
            self.sas.remove(&key);
            if self.responders.get(&key.0) == Some(&key) {
                self.responders.remove(&key.0);
            }
        }
        self.drop_stale_timers();
    }

    /// An ISAKMP SA just came up: the older established SAs of the same
    /// peer hand it their ESP SAs when it replaces them, which is when we
    /// started it as a reauthentication, or when the peer started it
    /// without INITIAL_CONTACT (strongSwan's IKEv1 reauthentication).
    fn adopt_children(&mut self, key: (u64, u64), initial_contact: bool) {
        let Some(mut new) = self.sas.remove(&key) else { return };
        let adopts = match new.role() {
            Role::Initiator => new.is_reauth(),
            Role::Responder => !initial_contact,
        };
        let mut touched = Vec::new();
        if adopts {
            for (k, old) in self.sas.iter_mut() {
                if new.replaces(old) {
                    new.adopt_from(old);
                    touched.push(*k);
                }
            }
        }
        self.sas.insert(key, new);
        for k in touched {
            self.pump(k);
        }
    }

    /// Starts the Phase 1 that replaces the SA `key` at its soft lifetime.
    fn start_reauth(&mut self, key: (u64, u64), now: Instant) {
        let Some(old) = self.sas.get(&key) else { return };
        match Ikev1Sa::initiate_reauth(&self.ctx, old, now) {
            Ok(sa) => {
                let cookies = sa.cookies();
                self.sas.insert(cookies, sa);
                self.pump(cookies);
            }
            Err(e) => tracing::warn!(
                connection = %old.connection().name,
                "IKEv1 reauthentication of {:016x}/{:016x} not started: {e}",
                key.0,
                key.1
            ),
        }
    }

    /// Pops heap entries whose SA is gone or has another deadline now, so
    /// that the top is a real deadline (every deadline change goes through
    /// `pump`, which pushes the new one).
    fn drop_stale_timers(&mut self) {
        while let Some(&Reverse((t, key))) = self.timers.peek() {
            if self.sas.get(&key).and_then(Ikev1Sa::poll_timeout) == Some(t) {
                return;
            }
            self.timers.pop();
        }
    }

    /// Fires the timers that are due.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&Reverse((t, key))) = self.timers.peek() {
            if t > now {
                break;
            }
            self.timers.pop();
            let Some(sa) = self.sas.get_mut(&key) else { continue };
            // A stale entry: the SA's deadline moved (a later entry holds it).
            if sa.poll_timeout().is_none_or(|d| d > now) {
                continue;
            }
            sa.handle_timeout(now);
            self.pump(key);
        }
        self.drop_stale_timers();
    }

    /// The earliest deadline of all SAs.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((t, _))| *t)
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event of any SA.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The SAs, for listings.
    pub fn sas(&self) -> impl Iterator<Item = &Ikev1Sa> {
        self.sas.values()
    }

    /// Deletes the SA with initiator cookie `cookie_i` (telling the peer).
    pub fn delete(&mut self, cookie_i: u64) -> Result<bool, Ikev1Error> {
        let Some(&k) = self.sas.keys().find(|k| k.0 == cookie_i) else {
            return Ok(false);
        };
        let r = self.sas.get_mut(&k).map_or(Ok(()), Ikev1Sa::delete);
        self.pump(k);
        r.map(|()| true)
    }
}
