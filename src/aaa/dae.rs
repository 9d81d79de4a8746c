//! Dynamic authorization (RFC 5176): a listener on its own thread for
//! Disconnect-Requests and CoA-Requests from the RADIUS clients an
//! operator allows.
//!
//! A request is taken only from an allowed address, with a Request
//! Authenticator (and Message-Authenticator, when present) made with that
//! client's secret and an Event-Timestamp, when present, within
//! [`TIMESTAMP_WINDOW`]; anything else is dropped and counted. A
//! Disconnect-Request names sessions by User-Name, Acct-Session-Id and
//! Framed-IP-Address (all given must match); the sessions are ended by
//! the shards that hold them (a DELETE to the client) and the request is
//! answered Disconnect-ACK, or NAK with Error-Cause 503 when none matched.
//! A CoA-Request with a Session-Timeout shortens the named sessions (CoA-ACK);
//! the only authorization this gateway changes in place is when a session
//! ends, so a CoA-Request without Session-Timeout is answered CoA-NAK with
//! Error-Cause 405, one asking for other changes with 401.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use zeroize::Zeroizing;

use super::accounting::unix_seconds;
use super::radius::{self, Attr, Code};

/// How far an Event-Timestamp may be from our clock (RFC 5176 §3.5
/// suggests 300 s).
pub const TIMESTAMP_WINDOW: Duration = Duration::from_secs(300);
/// Answers kept for retransmitted requests (RFC 5080 §2.2.2).
const REPLAY_CACHE: usize = 256;

/// Error-Cause values (RFC 5176 §3.6).
#[derive(Debug)]
#[non_exhaustive]
pub struct ErrorCause;

impl ErrorCause {
    pub const UNSUPPORTED_ATTRIBUTE: u32 = 401;
    pub const MISSING_ATTRIBUTE: u32 = 402;
    pub const NAS_IDENTIFICATION_MISMATCH: u32 = 403;
    pub const UNSUPPORTED_SERVICE: u32 = 405;
    pub const SESSION_CONTEXT_NOT_FOUND: u32 = 503;
}

/// A RADIUS client allowed to send dynamic-authorization requests.
#[derive(Clone)]
pub struct DaeClient {
    pub address: IpAddr,
    pub secret: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for DaeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DaeClient")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

/// The listener's configuration.
#[derive(Debug, Clone)]
pub struct DaeConfig {
    pub listen: SocketAddr,
    pub clients: Vec<DaeClient>,
    /// Our NAS-Identifier: a request naming another NAS is refused.
    pub nas_identifier: String,
}

/// One session dynamic authorization can find.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRef {
    /// The shard holding its IKE SA.
    pub shard: usize,
    /// Our SPI of its IKE SA.
    pub spi: u64,
    pub user_name: Vec<u8>,
    pub framed_ip: Option<Ipv4Addr>,
}

/// The sessions of EAP-RADIUS users across shards, by Acct-Session-Id;
/// the shards keep it current.
#[derive(Debug, Default)]
pub struct SessionIndex {
    by_id: Mutex<HashMap<String, SessionRef>>,
}

impl SessionIndex {
    pub fn insert(&self, id: &str, r: SessionRef) {
        if let Ok(mut m) = self.by_id.lock() {
            m.insert(id.to_string(), r);
        }
    }

    /// The session moved to another IKE SA (a rekey).
    pub fn moved(&self, id: &str, shard: usize, spi: u64) {
        if let Some(r) = self.by_id.lock().ok().as_mut().and_then(|m| m.get_mut(id)) {
            r.shard = shard;
            r.spi = spi;
        }
    }

    pub fn remove(&self, id: &str) {
        if let Ok(mut m) = self.by_id.lock() {
            m.remove(id);
        }
    }

    pub fn len(&self) -> usize {
        self.by_id.lock().map_or(0, |m| m.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The sessions that match every identification given.
    pub fn find(&self, m: &SessionMatch) -> Vec<SessionRef> {
        let Ok(map) = self.by_id.lock() else { return Vec::new() };
        if let Some(id) = &m.session_id {
            return map.get(id).filter(|r| m.matches(r)).cloned().into_iter().collect();
        }
        map.values().filter(|r| m.matches(r)).cloned().collect()
    }
}

/// The session identification of a Disconnect-Request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionMatch {
    pub user_name: Option<Vec<u8>>,
    pub session_id: Option<String>,
    pub framed_ip: Option<Ipv4Addr>,
}

impl SessionMatch {
    fn is_empty(&self) -> bool {
        self.user_name.is_none() && self.session_id.is_none() && self.framed_ip.is_none()
    }

    fn matches(&self, r: &SessionRef) -> bool {
        self.user_name.as_ref().is_none_or(|u| *u == r.user_name)
            && self.framed_ip.is_none_or(|ip| r.framed_ip == Some(ip))
    }
}

/// What a dynamic-authorization request does to the sessions it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Disconnect-Request: end them (a DELETE to each client).
    Disconnect,
    /// CoA-Request with Session-Timeout: end them this long from now at
    /// the latest.
    SessionTimeout(Duration),
}

/// Applies an action to the sessions given; returns to how many.
pub type Apply = Box<dyn Fn(&[SessionRef], Action) -> usize + Send>;

/// The attributes a CoA-Request may carry here: session identification,
/// housekeeping and Session-Timeout.
const COA_ATTRIBUTES: [u8; 16] = [
    Attr::USER_NAME,
    Attr::NAS_IP_ADDRESS,
    Attr::NAS_PORT,
    Attr::FRAMED_IP_ADDRESS,
    Attr::STATE,
    Attr::SESSION_TIMEOUT,
    Attr::CALLED_STATION_ID,
    Attr::CALLING_STATION_ID,
    Attr::NAS_IDENTIFIER,
    Attr::PROXY_STATE,
    Attr::ACCT_SESSION_ID,
    Attr::ACCT_MULTI_SESSION_ID,
    Attr::EVENT_TIMESTAMP,
    Attr::NAS_PORT_TYPE,
    Attr::MESSAGE_AUTHENTICATOR,
    Attr::NAS_IPV6_ADDRESS,
];

/// Counters of the listener.
#[derive(Debug, Default)]
pub struct DaeStats {
    pub disconnect_acks: AtomicU64,
    pub disconnect_naks: AtomicU64,
    pub coa_acks: AtomicU64,
    pub coa_naks: AtomicU64,
    pub retransmissions: AtomicU64,
    pub dropped_unknown_client: AtomicU64,
    pub dropped_malformed: AtomicU64,
    pub dropped_bad_authenticator: AtomicU64,
    pub dropped_stale_timestamp: AtomicU64,
    pub dropped_unsupported_code: AtomicU64,
}

/// Why the listener did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaeError {
    #[error("cannot bind the dynamic-authorization listener to {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the dynamic-authorization thread: {0}")]
    Spawn(#[source] std::io::Error),
}

/// The running listener; dropping it stops the thread.
pub struct DaeServer {
    stats: Arc<DaeStats>,
    local: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl DaeServer {
    /// Binds the socket and starts the thread.
    pub fn start(config: DaeConfig, index: Arc<SessionIndex>, apply: Apply) -> Result<Self, DaeError> {
        let socket = UdpSocket::bind(config.listen).map_err(|source| DaeError::Bind {
            addr: config.listen,
            source,
        })?;
        let local = socket.local_addr().unwrap_or(config.listen);
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .map_err(|source| DaeError::Bind { addr: local, source })?;
        let stats = Arc::new(DaeStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let mut worker = Worker {
            socket,
            responder: Responder::new(config, index, apply, stats.clone()),
        };
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("radius-dae".into())
            .spawn(move || {
                let mut buf = vec![0u8; radius::MAX_PACKET_LEN + 1];
                while !flag.load(Ordering::Acquire) {
                    match worker.socket.recv_from(&mut buf) {
                        Ok((n, from)) => {
                            if let Some(reply) = worker.responder.answer(&buf[..n], from, SystemTime::now()) {
                                if let Err(e) = worker.socket.send_to(&reply, from) {
                                    tracing::warn!(to = %from, "dynamic-authorization answer not sent: {e}");
                                }
                            }
                        }
                        Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                        }
                        Err(e) => tracing::warn!("dynamic authorization: receive failed: {e}"),
                    }
                }
            })
            .map_err(DaeError::Spawn)?;
        tracing::info!(listen = %local, "RADIUS dynamic authorization (RFC 5176) listening");
        Ok(DaeServer {
            stats,
            local,
            stop,
            thread: Some(thread),
        })
    }

    pub fn stats(&self) -> &DaeStats {
        &self.stats
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

impl Drop for DaeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Answered {
    from: SocketAddr,
    identifier: u8,
    authenticator: [u8; 16],
    reply: Vec<u8>,
}

struct Worker {
    socket: UdpSocket,
    responder: Responder,
}

/// What the listener answers, without its socket.
pub struct Responder {
    config: DaeConfig,
    index: Arc<SessionIndex>,
    apply: Apply,
    stats: Arc<DaeStats>,
    /// The last answers, for retransmitted requests.
    answered: VecDeque<Answered>,
}

/// What a verified request asks for, and the answer.
fn outcome(
    packet: &radius::Packet<'_>,
    nas_identifier: &str,
    index: &SessionIndex,
    apply: &Apply,
) -> (Code, Option<u32>) {
    let coa = packet.code == Code::CoaRequest;
    let (what, ack, nak) = if coa {
        ("CoA-Request", Code::CoaAck, Code::CoaNak)
    } else {
        ("Disconnect-Request", Code::DisconnectAck, Code::DisconnectNak)
    };
    if packet
        .attr(Attr::NAS_IDENTIFIER)
        .is_some_and(|n| n != nas_identifier.as_bytes())
    {
        return (nak, Some(ErrorCause::NAS_IDENTIFICATION_MISMATCH));
    }
    let action = if coa {
        // The only authorization this gateway changes in place is when a
        // session ends; any other change is refused whole.
        if let Some((t, _)) = packet.attributes.iter().find(|(t, _)| !COA_ATTRIBUTES.contains(t)) {
            tracing::info!(
                attribute = t,
                "CoA-Request asks for a change this gateway cannot make: NAK"
            );
            return (nak, Some(ErrorCause::UNSUPPORTED_ATTRIBUTE));
        }
        match packet
            .attr(Attr::SESSION_TIMEOUT)
            .and_then(|v| <[u8; 4]>::try_from(v).ok())
        {
            Some(v) => Action::SessionTimeout(Duration::from_secs(u64::from(u32::from_be_bytes(v)))),
            None => return (nak, Some(ErrorCause::UNSUPPORTED_SERVICE)),
        }
    } else {
        Action::Disconnect
    };
    let m = SessionMatch {
        user_name: packet.attr(Attr::USER_NAME).map(<[u8]>::to_vec),
        session_id: packet
            .attr(Attr::ACCT_SESSION_ID)
            .map(|v| String::from_utf8_lossy(v).into_owned()),
        framed_ip: packet
            .attr(Attr::FRAMED_IP_ADDRESS)
            .and_then(|v| <[u8; 4]>::try_from(v).ok())
            .map(Ipv4Addr::from),
    };
    if m.is_empty() {
        return (nak, Some(ErrorCause::MISSING_ATTRIBUTE));
    }
    let found = index.find(&m);
    if found.is_empty() {
        tracing::info!(request = ?m, "{what} matches no session: NAK");
        return (nak, Some(ErrorCause::SESSION_CONTEXT_NOT_FOUND));
    }
    let applied = apply(&found, action);
    tracing::info!(request = ?m, ?action, matched = found.len(), applied, "{what} applied");
    if applied == 0 {
        return (nak, Some(ErrorCause::SESSION_CONTEXT_NOT_FOUND));
    }
    (ack, None)
}

impl Responder {
    pub fn new(config: DaeConfig, index: Arc<SessionIndex>, apply: Apply, stats: Arc<DaeStats>) -> Self {
        Responder {
            config,
            index,
            apply,
            stats,
            answered: VecDeque::new(),
        }
    }

    /// The answer to the datagram `data` from `from` received at `now`
    /// (`None`: dropped and counted); a Disconnect-Request's sessions are
    /// ended before it returns.
    pub fn answer(&mut self, data: &[u8], from: SocketAddr, now: SystemTime) -> Option<Vec<u8>> {
        let Some(client) = self.config.clients.iter().find(|c| c.address == from.ip()) else {
            self.stats.dropped_unknown_client.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(from = %from, "dynamic-authorization request from an address not in [[radius.dae_client]]; dropped");
            return None;
        };
        let secret = client.secret.clone();
        let packet = match radius::decode(data) {
            Ok(p) => p,
            Err(e) => {
                self.stats.dropped_malformed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(from = %from, "dynamic-authorization request dropped: {e}");
                return None;
            }
        };
        if !matches!(packet.code, Code::DisconnectRequest | Code::CoaRequest) {
            self.stats.dropped_unsupported_code.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(from = %from, code = packet.code.to_u8(), "RADIUS packet of a code the dynamic-authorization port does not take; dropped");
            return None;
        }
        if let Err(e) = radius::verify_request(data, &secret) {
            self.stats.dropped_bad_authenticator.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(from = %from, "dynamic-authorization request dropped: {e}");
            return None;
        }
        if let Some(ts) = packet.attr(Attr::EVENT_TIMESTAMP) {
            let fresh = <[u8; 4]>::try_from(ts)
                .ok()
                .map(u32::from_be_bytes)
                .is_some_and(|ts| u64::from(unix_seconds(now).abs_diff(ts)) <= TIMESTAMP_WINDOW.as_secs());
            if !fresh {
                self.stats.dropped_stale_timestamp.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(from = %from, "dynamic-authorization request with an Event-Timestamp outside ±{} s (a replay?); dropped", TIMESTAMP_WINDOW.as_secs());
                return None;
            }
        }
        // A retransmission gets the same answer and acts no twice.
        if let Some(a) = self
            .answered
            .iter()
            .find(|a| a.from == from && a.identifier == packet.identifier && a.authenticator == packet.authenticator)
        {
            self.stats.retransmissions.fetch_add(1, Ordering::Relaxed);
            return Some(a.reply.clone());
        }
        let (code, cause) = outcome(&packet, &self.config.nas_identifier, &self.index, &self.apply);
        let counter = match code {
            Code::DisconnectAck => &self.stats.disconnect_acks,
            Code::DisconnectNak => &self.stats.disconnect_naks,
            Code::CoaAck => &self.stats.coa_acks,
            _ => &self.stats.coa_naks,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        // Proxy-State comes back in order (RFC 5176 §3.3, RFC 2865 §5.33).
        let attrs: Vec<(u8, Vec<u8>)> = packet
            .attrs(Attr::PROXY_STATE)
            .map(|v| (Attr::PROXY_STATE, v.to_vec()))
            .chain(cause.map(|c| (Attr::ERROR_CAUSE, c.to_be_bytes().to_vec())))
            .collect();
        let reply = match radius::sign_reply(code, &packet, &attrs, &secret) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(from = %from, "dynamic-authorization answer could not be encoded: {e}");
                return None;
            }
        };
        if self.answered.len() >= REPLAY_CACHE {
            self.answered.pop_front();
        }
        self.answered.push_back(Answered {
            from,
            identifier: packet.identifier,
            authenticator: packet.authenticator,
            reply: reply.clone(),
        });
        Some(reply)
    }
}

/// The fuzz target's entry point: arbitrary bytes as a dynamic-authorization
/// request from an allowed client (secret "secret") to a gateway with one
/// session (alice, 10.9.0.7, Acct-Session-Id
/// `00000000000011220000000000003344`); never a panic, and any answer is
/// a well-formed reply signed with the secret.
pub fn fuzz_request(data: &[u8]) {
    let index = Arc::new(SessionIndex::default());
    index.insert(
        "00000000000011220000000000003344",
        SessionRef {
            shard: 0,
            spi: 1,
            user_name: b"alice".to_vec(),
            framed_ip: Some(Ipv4Addr::new(10, 9, 0, 7)),
        },
    );
    let from = SocketAddr::from(([127, 0, 0, 1], 1700));
    let mut r = Responder::new(
        DaeConfig {
            listen: from,
            clients: vec![DaeClient {
                address: from.ip(),
                secret: Zeroizing::new(b"secret".to_vec()),
            }],
            nas_identifier: "moon".into(),
        },
        index,
        Box::new(|refs, _| refs.len()),
        Arc::default(),
    );
    let now = std::time::UNIX_EPOCH + Duration::from_secs(1_796_689_852);
    if let Some(reply) = r.answer(data, from, now) {
        let request: [u8; 16] = data[4..20]
            .try_into()
            .expect("a request that was answered has a header");
        assert!(
            radius::verify_response(&reply, &request, b"secret").is_ok(),
            "an answer that does not verify"
        );
        // A retransmission gets the same answer.
        assert_eq!(r.answer(data, from, now), Some(reply));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aaa::radius::RequestBuilder;
    use std::sync::atomic::AtomicUsize;
    use std::time::Instant;

    const SECRET: &[u8] = b"dae-secret";

    fn request(code: Code, id: u8, attrs: &[(u8, Vec<u8>)], secret: &[u8], with_ma: bool) -> Vec<u8> {
        let mut b = RequestBuilder::new(code, id, &[0; 16]);
        for (t, v) in attrs {
            b.attr(*t, v).expect("attr");
        }
        let mut pkt = if with_ma {
            b.finish(secret).expect("finish")
        } else {
            b.finish_accounting(secret).expect("finish")
        };
        if with_ma {
            // Message-Authenticator over the zero authenticator, then the
            // Request Authenticator over the whole packet.
            pkt[4..20].fill(0);
            let mut h = <md5::Md5 as md5::Digest>::new();
            md5::Digest::update(&mut h, &pkt);
            md5::Digest::update(&mut h, secret);
            let a: [u8; 16] = md5::Digest::finalize(h).into();
            pkt[4..20].copy_from_slice(&a);
        }
        pkt
    }

    struct Harness {
        server: DaeServer,
        index: Arc<SessionIndex>,
        ended: Arc<AtomicUsize>,
        limited: Arc<Mutex<Vec<(u64, Duration)>>>,
        sock: UdpSocket,
    }

    fn harness() -> Harness {
        let index = Arc::new(SessionIndex::default());
        index.insert(
            "s1",
            SessionRef {
                shard: 0,
                spi: 11,
                user_name: b"alice".to_vec(),
                framed_ip: Some(Ipv4Addr::new(10, 9, 0, 7)),
            },
        );
        let ended = Arc::new(AtomicUsize::new(0));
        let e = ended.clone();
        let limited = Arc::new(Mutex::new(Vec::new()));
        let l = limited.clone();
        let server = DaeServer::start(
            DaeConfig {
                listen: "127.0.0.1:0".parse().expect("addr"),
                clients: vec![DaeClient {
                    address: "127.0.0.1".parse().expect("ip"),
                    secret: Zeroizing::new(SECRET.to_vec()),
                }],
                nas_identifier: "gw".into(),
            },
            index.clone(),
            Box::new(move |refs, action| {
                match action {
                    Action::Disconnect => {
                        e.fetch_add(refs.len(), Ordering::SeqCst);
                    }
                    Action::SessionTimeout(d) => l.lock().expect("lock").push((refs[0].spi, d)),
                }
                refs.len()
            }),
        )
        .expect("starts");
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
        sock.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        Harness {
            server,
            index,
            ended,
            limited,
            sock,
        }
    }

    impl Harness {
        fn ask(&self, pkt: &[u8]) -> (Code, Option<u32>) {
            self.sock.send_to(pkt, self.server.local_addr()).expect("send");
            let mut buf = [0u8; 4096];
            let n = self.sock.recv(&mut buf).expect("an answer");
            let req_auth: [u8; 16] = pkt[4..20].try_into().expect("16");
            radius::verify_response(&buf[..n], &req_auth, SECRET).expect("answer signed with the client's secret");
            let p = radius::decode(&buf[..n]).expect("decodes");
            assert_eq!(p.identifier, pkt[1]);
            let cause = p
                .attr(Attr::ERROR_CAUSE)
                .map(|v| u32::from_be_bytes(v.try_into().expect("4 bytes")));
            (p.code, cause)
        }

        /// Sends `pkt`, which must be dropped: no answer, `counter` counts it.
        fn dropped(&self, pkt: &[u8], counter: impl Fn(&DaeStats) -> &AtomicU64) {
            let before = counter(self.server.stats()).load(Ordering::Relaxed);
            self.sock.send_to(pkt, self.server.local_addr()).expect("send");
            let deadline = Instant::now() + Duration::from_secs(5);
            while counter(self.server.stats()).load(Ordering::Relaxed) == before {
                assert!(Instant::now() < deadline, "the drop was not counted");
                std::thread::sleep(Duration::from_millis(5));
            }
            self.sock
                .set_read_timeout(Some(Duration::from_millis(100)))
                .expect("timeout");
            let mut buf = [0u8; 64];
            assert!(self.sock.recv(&mut buf).is_err(), "a dropped request got an answer");
            self.sock
                .set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
        }
    }

    #[test]
    fn disconnect_by_user_session_or_address_and_nak_otherwise() {
        let h = harness();
        let now = unix_seconds(SystemTime::now()).to_be_bytes().to_vec();
        let user = |u: &[u8]| (Attr::USER_NAME, u.to_vec());
        // No such user: 503, nothing ended.
        let pkt = request(Code::DisconnectRequest, 1, &[user(b"bob")], SECRET, false);
        assert_eq!(h.ask(&pkt), (Code::DisconnectNak, Some(503)));
        assert_eq!(h.ended.load(Ordering::SeqCst), 0);
        // User-Name and Framed-IP-Address both have to match.
        let pkt = request(
            Code::DisconnectRequest,
            2,
            &[user(b"alice"), (Attr::FRAMED_IP_ADDRESS, vec![10, 9, 0, 8])],
            SECRET,
            true,
        );
        assert_eq!(h.ask(&pkt), (Code::DisconnectNak, Some(503)));
        // Nothing to match by.
        let pkt = request(
            Code::DisconnectRequest,
            3,
            &[(Attr::EVENT_TIMESTAMP, now.clone())],
            SECRET,
            true,
        );
        assert_eq!(h.ask(&pkt), (Code::DisconnectNak, Some(402)));
        // Another NAS's request.
        let pkt = request(
            Code::DisconnectRequest,
            4,
            &[user(b"alice"), (Attr::NAS_IDENTIFIER, b"other".to_vec())],
            SECRET,
            false,
        );
        assert_eq!(h.ask(&pkt), (Code::DisconnectNak, Some(403)));
        // CoA: a Session-Timeout is honoured, other changes are refused.
        let pkt = request(
            Code::CoaRequest,
            5,
            &[user(b"alice"), (Attr::SESSION_TIMEOUT, vec![0, 0, 0, 60])],
            SECRET,
            true,
        );
        assert_eq!(h.ask(&pkt), (Code::CoaAck, None));
        assert_eq!(*h.limited.lock().expect("lock"), [(11, Duration::from_secs(60))]);
        let pkt = request(Code::CoaRequest, 7, &[user(b"alice")], SECRET, true);
        assert_eq!(h.ask(&pkt), (Code::CoaNak, Some(405)));
        let filter_id = (11u8, b"gold-acl".to_vec());
        let pkt = request(
            Code::CoaRequest,
            8,
            &[user(b"alice"), (Attr::SESSION_TIMEOUT, vec![0, 0, 0, 60]), filter_id],
            SECRET,
            false,
        );
        assert_eq!(h.ask(&pkt), (Code::CoaNak, Some(401)));
        let pkt = request(
            Code::CoaRequest,
            9,
            &[user(b"bob"), (Attr::SESSION_TIMEOUT, vec![0, 0, 0, 60])],
            SECRET,
            false,
        );
        assert_eq!(h.ask(&pkt), (Code::CoaNak, Some(503)));
        assert_eq!(h.limited.lock().expect("lock").len(), 1);
        assert_eq!(h.ended.load(Ordering::SeqCst), 0);
        // Proxy-State is echoed.
        let pkt = request(
            Code::DisconnectRequest,
            10,
            &[user(b"bob"), (Attr::PROXY_STATE, b"p1".to_vec())],
            SECRET,
            false,
        );
        h.sock.send_to(&pkt, h.server.local_addr()).expect("send");
        let mut buf = [0u8; 4096];
        let n = h.sock.recv(&mut buf).expect("an answer");
        assert_eq!(
            radius::decode(&buf[..n]).expect("decodes").attr(Attr::PROXY_STATE),
            Some(&b"p1"[..])
        );
        // By Acct-Session-Id, with a fresh timestamp and a Message-Authenticator: ACK.
        let pkt = request(
            Code::DisconnectRequest,
            6,
            &[(Attr::ACCT_SESSION_ID, b"s1".to_vec()), (Attr::EVENT_TIMESTAMP, now)],
            SECRET,
            true,
        );
        assert_eq!(h.ask(&pkt), (Code::DisconnectAck, None));
        assert_eq!(h.ended.load(Ordering::SeqCst), 1);
        // Its retransmission is answered the same, without acting again.
        assert_eq!(h.ask(&pkt), (Code::DisconnectAck, None));
        assert_eq!(h.ended.load(Ordering::SeqCst), 1);
        assert_eq!(h.server.stats().retransmissions.load(Ordering::Relaxed), 1);
        h.index.remove("s1");
        assert!(h.index.is_empty());
    }

    #[test]
    fn forged_stale_malformed_and_foreign_requests_are_dropped_and_counted() {
        let h = harness();
        let alice = [(Attr::USER_NAME, b"alice".to_vec())];
        // Wrong secret.
        let pkt = request(Code::DisconnectRequest, 1, &alice, b"not-the-secret", false);
        h.dropped(&pkt, |s| &s.dropped_bad_authenticator);
        // Right Request Authenticator, wrong Message-Authenticator.
        let mut pkt = request(Code::DisconnectRequest, 2, &alice, SECRET, true);
        let n = pkt.len();
        pkt[n - 1] ^= 1;
        pkt[4..20].fill(0);
        let mut hsh = <md5::Md5 as md5::Digest>::new();
        md5::Digest::update(&mut hsh, &pkt);
        md5::Digest::update(&mut hsh, SECRET);
        let a: [u8; 16] = md5::Digest::finalize(hsh).into();
        pkt[4..20].copy_from_slice(&a);
        h.dropped(&pkt, |s| &s.dropped_bad_authenticator);
        // An Event-Timestamp an hour old: a replay.
        let old = (unix_seconds(SystemTime::now()) - 3600).to_be_bytes().to_vec();
        let pkt = request(
            Code::DisconnectRequest,
            3,
            &[(Attr::USER_NAME, b"alice".to_vec()), (Attr::EVENT_TIMESTAMP, old)],
            SECRET,
            true,
        );
        h.dropped(&pkt, |s| &s.dropped_stale_timestamp);
        // Truncated, and a length that lies.
        h.dropped(&pkt[..pkt.len() - 3], |s| &s.dropped_malformed);
        h.dropped(&[40, 1, 0, 20], |s| &s.dropped_malformed);
        // An Access-Request on the DAE port.
        let pkt = request(Code::AccessRequest, 4, &alice, SECRET, true);
        h.dropped(&pkt, |s| &s.dropped_unsupported_code);
        assert_eq!(h.ended.load(Ordering::SeqCst), 0, "no forged request ended a session");
        // Still answering real requests.
        let pkt = request(Code::DisconnectRequest, 5, &alice, SECRET, false);
        assert_eq!(h.ask(&pkt), (Code::DisconnectAck, None));
    }

    #[test]
    fn requests_from_unlisted_addresses_are_dropped() {
        let h = harness();
        let sock = UdpSocket::bind("127.0.0.2:0").expect("bind 127.0.0.2");
        let pkt = request(
            Code::DisconnectRequest,
            1,
            &[(Attr::USER_NAME, b"alice".to_vec())],
            SECRET,
            false,
        );
        sock.send_to(&pkt, h.server.local_addr()).expect("send");
        let deadline = Instant::now() + Duration::from_secs(5);
        while h.server.stats().dropped_unknown_client.load(Ordering::Relaxed) == 0 {
            assert!(Instant::now() < deadline, "not counted");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(h.ended.load(Ordering::SeqCst), 0);
    }
}
