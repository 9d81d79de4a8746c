//! A blocking RADIUS authentication client on its own thread.
//!
//! Callers (the shards, later) [`RadiusClient::submit`] a request
//! with a completion callback and never wait on the network. The client
//! thread owns one UDP socket, retransmits the same datagram after
//! `timeout` up to `tries_per_server` times, then fails over to the next
//! server (re-signed with that server's secret). The outstanding table is
//! capped at `max_outstanding` (at most 256, the identifier space): a RADIUS
//! outage makes new requests fail fast with [`ClientError::Overloaded`]
//! instead of growing memory. Replies that do not verify are dropped and
//! counted in [`ClientStats`].

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use super::radius::{
    self, Attr, Code, MS_MPPE_RECV_KEY, MS_MPPE_SEND_KEY, RadiusError, RequestBuilder, VENDOR_MICROSOFT,
};

/// One RADIUS server and its shared secret.
#[derive(Clone)]
pub struct RadiusServer {
    pub addr: SocketAddr,
    pub secret: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for RadiusServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RadiusServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// The client's configuration.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Tried in order; the one that answered last is tried first.
    pub servers: Vec<RadiusServer>,
    /// Wait before each retransmission.
    pub timeout: Duration,
    /// Transmissions to one server before failing over.
    pub tries_per_server: u32,
    /// Requests in flight at once (1..=256).
    pub max_outstanding: usize,
    /// The local address to send from.
    pub bind: SocketAddr,
    /// Access-Requests (authentication port) or Accounting-Requests
    /// (accounting port); one client serves one kind of server.
    pub purpose: Purpose,
}

/// What a client's servers are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Purpose {
    #[default]
    Authentication,
    Accounting,
}

/// A request: its attributes (without EAP-Message, State and
/// Message-Authenticator, which the client adds to Access-Requests).
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub user_name: Vec<u8>,
    pub eap_message: Option<Vec<u8>>,
    /// The State of the previous Access-Challenge (RFC 2865 §5.24).
    pub state: Option<Vec<u8>>,
    /// Further attributes (NAS-Identifier, Calling-Station-Id, ...).
    pub attributes: Vec<(u8, Vec<u8>)>,
}

/// A verified reply.
#[derive(Debug)]
pub struct Reply {
    pub code: Code,
    pub server: SocketAddr,
    pub eap_message: Option<Vec<u8>>,
    pub state: Option<Vec<u8>>,
    pub mppe_send_key: Option<Zeroizing<Vec<u8>>>,
    pub mppe_recv_key: Option<Zeroizing<Vec<u8>>>,
    pub framed_ip_address: Option<Ipv4Addr>,
    pub framed_pool: Option<Vec<u8>>,
    pub session_timeout: Option<u32>,
    /// Acct-Interim-Interval in seconds (RFC 2869 §5.16).
    pub acct_interim_interval: Option<u32>,
    pub class: Vec<Vec<u8>>,
}

impl Reply {
    /// The EAP MSK from MS-MPPE-Recv-Key || MS-MPPE-Send-Key (RFC 3748
    /// §7.10 and RFC 2548; the order strongSwan's eap-radius uses).
    pub fn msk(&self) -> Option<control::eap::Msk> {
        let (recv, send) = (self.mppe_recv_key.as_ref()?, self.mppe_send_key.as_ref()?);
        Some(control::eap::mschapv2::msk_from_mppe(recv, send))
    }
}

/// Why a request did not get a reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error("RADIUS client has {limit} requests in flight; request refused")]
    Overloaded { limit: usize },
    #[error("no RADIUS server answered ({servers} servers, {tries} tries each)")]
    AllServersDown { servers: usize, tries: u32 },
    #[error("RADIUS client stopped")]
    Stopped,
    #[error("RADIUS client configuration: {0}")]
    Config(String),
    #[error("RADIUS socket: {0}")]
    Io(String),
    #[error("RADIUS request: {0}")]
    Encode(#[from] RadiusError),
}

/// Counters for the metrics and the tests.
#[derive(Debug, Default)]
pub struct ClientStats {
    pub sent: AtomicU64,
    pub retransmitted: AtomicU64,
    pub failovers: AtomicU64,
    pub answered: AtomicU64,
    pub timed_out: AtomicU64,
    pub overloaded: AtomicU64,
    pub dropped_malformed: AtomicU64,
    pub dropped_unknown_identifier: AtomicU64,
    pub dropped_bad_authenticator: AtomicU64,
}

type Done = Box<dyn FnOnce(Result<Reply, ClientError>) + Send>;

struct Job {
    request: Request,
    done: Done,
}

struct Pending {
    request: Request,
    done: Done,
    /// Index into the servers, and how many servers were tried.
    server: usize,
    servers_tried: usize,
    tries: u32,
    authenticator: [u8; 16],
    datagram: Vec<u8>,
    deadline: Instant,
}

/// The running client; dropping it stops the thread and fails what is in
/// flight with [`ClientError::Stopped`].
pub struct RadiusClient {
    jobs: Sender<Job>,
    outstanding: Arc<AtomicUsize>,
    max_outstanding: usize,
    stats: Arc<ClientStats>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl RadiusClient {
    /// Binds the socket and starts the client thread.
    pub fn start(config: ClientConfig) -> Result<Self, ClientError> {
        if config.servers.is_empty() {
            return Err(ClientError::Config("no RADIUS servers".into()));
        }
        if !(1..=256).contains(&config.max_outstanding) {
            return Err(ClientError::Config(format!(
                "max_outstanding {} is not in 1..=256",
                config.max_outstanding
            )));
        }
        if config.tries_per_server == 0 {
            return Err(ClientError::Config("tries_per_server must be at least 1".into()));
        }
        let socket = UdpSocket::bind(config.bind).map_err(|e| ClientError::Io(format!("bind {}: {e}", config.bind)))?;
        let (tx, rx) = mpsc::channel();
        let stats = Arc::new(ClientStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let outstanding = Arc::new(AtomicUsize::new(0));
        let max_outstanding = config.max_outstanding;
        let worker = Worker {
            config,
            socket,
            jobs: rx,
            table: (0..256).map(|_| None).collect(),
            next_id: 0,
            preferred: 0,
            stats: stats.clone(),
            stop: stop.clone(),
            outstanding: outstanding.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("radius-client".into())
            .spawn(move || worker.run())
            .map_err(|e| ClientError::Io(format!("spawn: {e}")))?;
        Ok(RadiusClient {
            jobs: tx,
            outstanding,
            max_outstanding,
            stats,
            stop,
            thread: Some(thread),
        })
    }

    /// Queues `request`; `done` runs on the client thread with the verified
    /// reply or the reason there is none.
    pub fn submit(&self, request: Request, done: Done) -> Result<(), ClientError> {
        let prev = self.outstanding.fetch_add(1, Ordering::AcqRel);
        if prev >= self.max_outstanding {
            self.outstanding.fetch_sub(1, Ordering::AcqRel);
            self.stats.overloaded.fetch_add(1, Ordering::Relaxed);
            return Err(ClientError::Overloaded {
                limit: self.max_outstanding,
            });
        }
        self.jobs.send(Job { request, done }).map_err(|_| {
            self.outstanding.fetch_sub(1, Ordering::AcqRel);
            ClientError::Stopped
        })
    }

    /// Sends `request` and waits for the outcome (for tests and tools, not
    /// for shards).
    pub fn access(&self, request: Request) -> Result<Reply, ClientError> {
        let (tx, rx) = mpsc::channel();
        self.submit(
            request,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        )?;
        rx.recv().map_err(|_| ClientError::Stopped)?
    }

    pub fn stats(&self) -> &ClientStats {
        &self.stats
    }

    /// Requests queued or waiting for an answer.
    pub fn in_flight(&self) -> usize {
        self.outstanding.load(Ordering::Acquire)
    }
}

impl Drop for RadiusClient {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Worker {
    config: ClientConfig,
    socket: UdpSocket,
    jobs: Receiver<Job>,
    table: Vec<Option<Pending>>,
    next_id: u8,
    preferred: usize,
    stats: Arc<ClientStats>,
    stop: Arc<AtomicBool>,
    outstanding: Arc<AtomicUsize>,
}

/// How long the thread sleeps at most, so that a stop is noticed.
const POLL: Duration = Duration::from_millis(20);

fn random_authenticator() -> Result<[u8; 16], ClientError> {
    use aws_lc_rs::rand::SecureRandom;
    let mut a = [0u8; 16];
    aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut a)
        .map_err(|_| ClientError::Io("random number generator failed".into()))?;
    Ok(a)
}

impl Worker {
    fn run(mut self) {
        let mut buf = vec![0u8; radius::MAX_PACKET_LEN + 1];
        loop {
            if self.stop.load(Ordering::Acquire) {
                break;
            }
            loop {
                match self.jobs.try_recv() {
                    Ok(job) => self.start_job(job),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return self.fail_all(),
                }
            }
            let now = Instant::now();
            let next = self.table.iter().flatten().map(|p| p.deadline).min();
            let wait = next
                .map_or(POLL, |d| d.saturating_duration_since(now).min(POLL))
                .max(Duration::from_millis(1));
            if let Err(e) = self.socket.set_read_timeout(Some(wait)) {
                tracing::error!("RADIUS client: cannot set the socket timeout: {e}");
            }
            match self.socket.recv_from(&mut buf) {
                Ok((n, from)) => self.on_datagram(&buf[..n], from),
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(e) => tracing::warn!("RADIUS client: receive failed: {e}"),
            }
            self.on_timers(Instant::now());
        }
        self.fail_all();
    }

    fn fail_all(&mut self) {
        for slot in self.table.iter_mut() {
            if let Some(p) = slot.take() {
                self.outstanding.fetch_sub(1, Ordering::AcqRel);
                (p.done)(Err(ClientError::Stopped));
            }
        }
    }

    fn free_id(&mut self) -> Option<u8> {
        for _ in 0..256 {
            let id = self.next_id;
            self.next_id = self.next_id.wrapping_add(1);
            if self.table[usize::from(id)].is_none() {
                return Some(id);
            }
        }
        None
    }

    fn encode(&self, id: u8, request: &Request, server: usize) -> Result<([u8; 16], Vec<u8>), ClientError> {
        let accounting = self.config.purpose == Purpose::Accounting;
        let code = if accounting {
            Code::AccountingRequest
        } else {
            Code::AccessRequest
        };
        let authenticator = if accounting { [0; 16] } else { random_authenticator()? };
        let mut b = RequestBuilder::new(code, id, &authenticator);
        b.attr(Attr::USER_NAME, &request.user_name)?;
        for (t, v) in &request.attributes {
            b.attr(*t, v)?;
        }
        if let Some(state) = &request.state {
            b.attr(Attr::STATE, state)?;
        }
        if let Some(eap) = &request.eap_message {
            b.eap_message(eap)?;
        }
        let secret = &self.config.servers[server].secret;
        if accounting {
            let datagram = b.finish_accounting(secret)?;
            let mut authenticator = [0u8; 16];
            authenticator.copy_from_slice(&datagram[4..20]);
            return Ok((authenticator, datagram));
        }
        Ok((authenticator, b.finish(secret)?))
    }

    fn start_job(&mut self, job: Job) {
        let Some(id) = self.free_id() else {
            // Unreachable while max_outstanding <= 256, kept as an error path.
            self.outstanding.fetch_sub(1, Ordering::AcqRel);
            (job.done)(Err(ClientError::Overloaded { limit: 256 }));
            return;
        };
        let server = self.preferred;
        match self.encode(id, &job.request, server) {
            Ok((authenticator, datagram)) => {
                let p = Pending {
                    request: job.request,
                    done: job.done,
                    server,
                    servers_tried: 1,
                    tries: 0,
                    authenticator,
                    datagram,
                    deadline: Instant::now(),
                };
                self.table[usize::from(id)] = Some(p);
                self.transmit(id);
            }
            Err(e) => {
                self.outstanding.fetch_sub(1, Ordering::AcqRel);
                (job.done)(Err(e));
            }
        }
    }

    fn transmit(&mut self, id: u8) {
        let Some(p) = self.table[usize::from(id)].as_mut() else {
            return;
        };
        let addr = self.config.servers[p.server].addr;
        p.tries += 1;
        p.deadline = Instant::now() + self.config.timeout;
        if p.tries > 1 {
            self.stats.retransmitted.fetch_add(1, Ordering::Relaxed);
        }
        self.stats.sent.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = self.socket.send_to(&p.datagram, addr) {
            tracing::warn!("RADIUS client: sending to {addr} failed: {e}");
        }
    }

    fn on_timers(&mut self, now: Instant) {
        for id in 0..=255u8 {
            let Some(p) = self.table[usize::from(id)].as_ref() else {
                continue;
            };
            if p.deadline > now {
                continue;
            }
            if p.tries < self.config.tries_per_server {
                self.transmit(id);
                continue;
            }
            let n = self.config.servers.len();
            if p.servers_tried < n {
                let failed = self.config.servers[p.server].addr;
                let next = (p.server + 1) % n;
                tracing::warn!(
                    "RADIUS server {failed} did not answer {} tries; failing over to {}",
                    p.tries,
                    self.config.servers[next].addr
                );
                self.stats.failovers.fetch_add(1, Ordering::Relaxed);
                if self.preferred == p.server {
                    self.preferred = next;
                }
                let request = p.request.clone();
                match self.encode(id, &request, next) {
                    Ok((authenticator, datagram)) => {
                        if let Some(p) = self.table[usize::from(id)].as_mut() {
                            p.server = next;
                            p.servers_tried += 1;
                            p.tries = 0;
                            p.authenticator = authenticator;
                            p.datagram = datagram;
                        }
                        self.transmit(id);
                    }
                    Err(e) => self.complete(id, Err(e)),
                }
                continue;
            }
            tracing::warn!(
                "RADIUS request for {:?} failed: no server answered",
                String::from_utf8_lossy(&p.request.user_name)
            );
            self.stats.timed_out.fetch_add(1, Ordering::Relaxed);
            let err = ClientError::AllServersDown {
                servers: n,
                tries: self.config.tries_per_server,
            };
            self.complete(id, Err(err));
        }
    }

    fn complete(&mut self, id: u8, result: Result<Reply, ClientError>) {
        if let Some(p) = self.table[usize::from(id)].take() {
            self.outstanding.fetch_sub(1, Ordering::AcqRel);
            (p.done)(result);
        }
    }

    fn on_datagram(&mut self, data: &[u8], from: SocketAddr) {
        let packet = match radius::decode(data) {
            Ok(p) => p,
            Err(e) => {
                self.stats.dropped_malformed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("RADIUS reply from {from} dropped: {e}");
                return;
            }
        };
        let id = packet.identifier;
        let Some(p) = self.table[usize::from(id)]
            .as_ref()
            .filter(|p| self.config.servers[p.server].addr == from)
        else {
            self.stats.dropped_unknown_identifier.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("RADIUS reply from {from} with identifier {id} matches no request in flight; dropped");
            return;
        };
        let secret = &self.config.servers[p.server].secret;
        if let Err(e) = radius::verify_response(data, &p.authenticator, secret) {
            self.stats.dropped_bad_authenticator.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("RADIUS reply from {from} (identifier {id}) dropped: {e}");
            return;
        }
        let keys = |t| {
            packet
                .vendor_attr(VENDOR_MICROSOFT, t)
                .map(|v| radius::decrypt_mppe_key(v, secret, &p.authenticator))
                .transpose()
        };
        let (send, recv) = match (keys(MS_MPPE_SEND_KEY), keys(MS_MPPE_RECV_KEY)) {
            (Ok(s), Ok(r)) => (s, r),
            (Err(e), _) | (_, Err(e)) => {
                self.stats.dropped_malformed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("RADIUS reply from {from} (identifier {id}) dropped: {e}");
                return;
            }
        };
        let reply = Reply {
            code: packet.code,
            server: from,
            eap_message: packet.eap_message(),
            state: packet.attr(Attr::STATE).map(<[u8]>::to_vec),
            mppe_send_key: send,
            mppe_recv_key: recv,
            framed_ip_address: packet
                .attr(Attr::FRAMED_IP_ADDRESS)
                .and_then(|v| <[u8; 4]>::try_from(v).ok())
                .map(Ipv4Addr::from),
            framed_pool: packet.attr(Attr::FRAMED_POOL).map(<[u8]>::to_vec),
            session_timeout: packet
                .attr(Attr::SESSION_TIMEOUT)
                .and_then(|v| <[u8; 4]>::try_from(v).ok())
                .map(u32::from_be_bytes),
            acct_interim_interval: packet
                .attr(Attr::ACCT_INTERIM_INTERVAL)
                .and_then(|v| <[u8; 4]>::try_from(v).ok())
                .map(u32::from_be_bytes),
            class: packet.attrs(Attr::CLASS).map(<[u8]>::to_vec).collect(),
        };
        self.stats.answered.fetch_add(1, Ordering::Relaxed);
        self.preferred = p.server;
        self.complete(id, Ok(reply));
    }
}
