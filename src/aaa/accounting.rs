//! RADIUS accounting (RFC 2866) of the sessions of EAP-RADIUS users: Start
//! when a user's IKE SA is established, Interim-Update at an interval (the
//! Access-Accept's Acct-Interim-Interval wins over `[radius]
//! interim_interval`), Stop when it ends, with the bytes and packets of
//! the fastpath's per-SA counters summed over the IKE SA's CHILD_SAs.
//!
//! Requests go through a [`RadiusClient`] of purpose
//! [`Purpose::Accounting`](super::client::Purpose::Accounting) (its own
//! thread, retransmission, failover, a bounded outstanding table), so a
//! shard only queues them. [`Sessions`] is a shard's bookkeeping: what each
//! session has used on CHILD_SAs already gone, and when its next
//! Interim-Update is due.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use control::ike_sa::DownReason;
use control::ike_sa::eap::EapAuthenticated;

use super::client::{ClientError, RadiusClient, Request};
use super::radius::{AcctStatus, Attr, Code};

/// NAS-Port-Type Virtual (RFC 2865 §5.41), as for the Access-Requests.
const NAS_PORT_TYPE_VIRTUAL: u32 = 5;
/// Service-Type Framed (RFC 2865 §5.6).
const SERVICE_TYPE_FRAMED: u32 = 2;

/// Bytes and packets of a session, as the NAS sees them: input is what the
/// user sent (our inbound ESP), output what the user received.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub octets_in: u64,
    pub packets_in: u64,
    pub octets_out: u64,
    pub packets_out: u64,
}

impl std::ops::AddAssign for Usage {
    fn add_assign(&mut self, o: Usage) {
        self.octets_in = self.octets_in.saturating_add(o.octets_in);
        self.packets_in = self.packets_in.saturating_add(o.packets_in);
        self.octets_out = self.octets_out.saturating_add(o.octets_out);
        self.packets_out = self.packets_out.saturating_add(o.packets_out);
    }
}

/// Acct-Terminate-Cause (RFC 2866 §5.10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TerminateCause {
    /// The user (the peer) deleted the IKE SA.
    UserRequest = 1,
    /// The peer stopped answering (DPD, retransmissions).
    LostCarrier = 2,
    /// RADIUS Session-Timeout or the IKE SA's hard lifetime.
    SessionTimeout = 5,
    /// An operator or a Disconnect-Request (RFC 5176) ended it.
    AdminReset = 6,
    /// The IKE SA failed.
    NasError = 9,
    /// The gateway let go of it (another cluster node continues it).
    NasRequest = 10,
    /// The daemon is shutting down.
    NasReboot = 11,
}

impl TerminateCause {
    /// The cause of an IKE SA's end as the control core reports it.
    pub fn of(reason: &DownReason) -> Self {
        match reason {
            DownReason::Deleted | DownReason::Rekeyed => TerminateCause::UserRequest,
            DownReason::Timeout => TerminateCause::LostCarrier,
            DownReason::Expired => TerminateCause::SessionTimeout,
            DownReason::Failed(_) | DownReason::PeerError(_) => TerminateCause::NasError,
        }
    }
}

/// What accounting says about one session.
#[derive(Debug, Clone)]
pub struct Session {
    /// Acct-Session-Id, one per IKE SA (kept across IKE SA rekeys).
    pub id: String,
    /// The EAP identity (User-Name).
    pub user_name: Vec<u8>,
    /// Class attributes of the Access-Accept, echoed (RFC 2865 §5.25).
    pub class: Vec<Vec<u8>>,
    /// The virtual IP (Framed-IP-Address).
    pub framed_ip: Option<Ipv4Addr>,
    /// The peer's address (Calling-Station-Id).
    pub calling_station: String,
    /// When the IKE SA was established.
    pub started: Instant,
}

/// The Acct-Session-Id of the IKE SA with these SPIs: unique per IKE SA
/// and stable for the life of the session.
pub fn session_id(spis: (u64, u64)) -> String {
    format!("{:016x}{:016x}", spis.0, spis.1)
}

/// Counters of accounting requests that did not get an answer.
#[derive(Debug, Default)]
pub struct AccountingStats {
    /// Requests refused before leaving (the outstanding table was full).
    pub refused: AtomicU64,
    /// Requests no server answered.
    pub unanswered: AtomicU64,
}

/// The accounting client and what every Accounting-Request carries.
pub struct Accounting {
    client: RadiusClient,
    nas_identifier: String,
    interim_interval: Option<Duration>,
    stats: std::sync::Arc<AccountingStats>,
}

impl std::fmt::Debug for Accounting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accounting")
            .field("nas_identifier", &self.nas_identifier)
            .field("interim_interval", &self.interim_interval)
            .finish_non_exhaustive()
    }
}

/// Seconds since the Unix epoch, for Event-Timestamp (RFC 2869 §5.3).
pub fn unix_seconds(t: SystemTime) -> u32 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
}

impl Accounting {
    /// Wraps a started client of purpose accounting; `interim_interval`
    /// applies to sessions whose Access-Accept named none.
    pub fn new(client: RadiusClient, nas_identifier: String, interim_interval: Option<Duration>) -> Self {
        Accounting {
            client,
            nas_identifier,
            interim_interval,
            stats: Default::default(),
        }
    }

    /// The client (its counters).
    pub fn client(&self) -> &RadiusClient {
        &self.client
    }

    /// Requests lost (refused or unanswered).
    pub fn stats(&self) -> &AccountingStats {
        &self.stats
    }

    /// Waits up to `limit` for the requests in flight (the Stops of a
    /// shutdown) to be answered or given up; returns how many are left.
    pub fn drain(&self, limit: Duration) -> usize {
        let deadline = Instant::now() + limit;
        loop {
            let left = self.client.in_flight();
            if left == 0 || Instant::now() >= deadline {
                return left;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The interval of Interim-Updates of a session: the Access-Accept's
    /// Acct-Interim-Interval, else the configured one, else none.
    pub fn interim_for(&self, from_server: Option<Duration>) -> Option<Duration> {
        from_server.or(self.interim_interval)
    }

    /// The Accounting-Request of `status` for `session` (the Request
    /// Authenticator is added by the client, per server secret). `usage`
    /// and `cause` go into Interim-Updates and Stops.
    pub fn request(
        &self,
        session: &Session,
        status: u32,
        usage: Option<Usage>,
        cause: Option<TerminateCause>,
        now: Instant,
        wall: SystemTime,
    ) -> Request {
        let u32v = |v: u32| v.to_be_bytes().to_vec();
        let mut attributes = vec![
            (Attr::ACCT_STATUS_TYPE, u32v(status)),
            (Attr::ACCT_SESSION_ID, session.id.as_bytes().to_vec()),
            (Attr::NAS_IDENTIFIER, self.nas_identifier.as_bytes().to_vec()),
            (Attr::NAS_PORT_TYPE, u32v(NAS_PORT_TYPE_VIRTUAL)),
            (Attr::SERVICE_TYPE, u32v(SERVICE_TYPE_FRAMED)),
            (Attr::CALLING_STATION_ID, session.calling_station.as_bytes().to_vec()),
            (Attr::EVENT_TIMESTAMP, u32v(unix_seconds(wall))),
        ];
        if let Some(ip) = session.framed_ip {
            attributes.push((Attr::FRAMED_IP_ADDRESS, ip.octets().to_vec()));
        }
        for class in &session.class {
            attributes.push((Attr::CLASS, class.clone()));
        }
        if status != AcctStatus::START {
            let secs = now.saturating_duration_since(session.started).as_secs();
            attributes.push((Attr::ACCT_SESSION_TIME, u32v(u32::try_from(secs).unwrap_or(u32::MAX))));
            let u = usage.unwrap_or_default();
            // Octets beyond 32 bits go in the Gigawords (RFC 2869 §5.1).
            let split = |v: u64| ((v & 0xffff_ffff) as u32, (v >> 32).min(u64::from(u32::MAX)) as u32);
            let (in_lo, in_hi) = split(u.octets_in);
            let (out_lo, out_hi) = split(u.octets_out);
            attributes.push((Attr::ACCT_INPUT_OCTETS, u32v(in_lo)));
            attributes.push((Attr::ACCT_OUTPUT_OCTETS, u32v(out_lo)));
            attributes.push((Attr::ACCT_INPUT_GIGAWORDS, u32v(in_hi)));
            attributes.push((Attr::ACCT_OUTPUT_GIGAWORDS, u32v(out_hi)));
            attributes.push((Attr::ACCT_INPUT_PACKETS, u32v(split(u.packets_in).0)));
            attributes.push((Attr::ACCT_OUTPUT_PACKETS, u32v(split(u.packets_out).0)));
        }
        if let (true, Some(c)) = (status == AcctStatus::STOP, cause) {
            attributes.push((Attr::ACCT_TERMINATE_CAUSE, u32v(c as u32)));
        }
        attributes.retain(|(_, v)| !v.is_empty());
        Request {
            user_name: session.user_name.clone(),
            attributes,
            ..Default::default()
        }
    }

    /// Queues `request`; what goes wrong is logged and counted on the
    /// client's thread (accounting never holds up a shard).
    pub fn send(&self, request: Request, what: &'static str, session: &str) {
        let stats = self.stats.clone();
        let id = session.to_string();
        let user = String::from_utf8_lossy(&request.user_name).into_owned();
        let done = Box::new(
            move |outcome: Result<super::client::Reply, ClientError>| match outcome {
                Ok(r) if r.code == Code::AccountingResponse => {
                    tracing::debug!(session = %id, user = %user, server = %r.server, "accounting {what} acknowledged")
                }
                Ok(r) => tracing::warn!(
                    session = %id,
                    user = %user,
                    server = %r.server,
                    "RADIUS server answered accounting {what} with code {} instead of Accounting-Response",
                    r.code.to_u8()
                ),
                Err(e) => {
                    stats.unanswered.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(session = %id, user = %user, "accounting {what} lost: {e}");
                }
            },
        );
        if let Err(e) = self.client.submit(request, done) {
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(session = %session, "accounting {what} not sent: {e}");
        }
    }
}

/// One session's state in a shard.
#[derive(Debug)]
pub struct Tracked {
    /// What EAP and RADIUS said at authentication.
    pub auth: Box<EapAuthenticated>,
    /// Set once Start went out (the IKE SA is established).
    pub session: Option<Session>,
    /// Usage of the session's CHILD_SAs that are gone.
    pub closed: Usage,
    /// Interim-Update interval.
    pub interim: Option<Duration>,
    /// Why it will end, when the gateway ends it.
    pub cause: Option<TerminateCause>,
}

/// A shard's sessions by our IKE SPI, with the Interim-Update schedule.
#[derive(Debug, Default)]
pub struct Sessions {
    by_spi: HashMap<u64, Tracked>,
    /// (due, our SPI); entries of SPIs no longer tracked are skipped.
    interims: BinaryHeap<Reverse<(Instant, u64)>>,
}

impl Sessions {
    /// A user passed EAP on the IKE SA `spi` (not yet established).
    pub fn authenticated(&mut self, spi: u64, auth: Box<EapAuthenticated>) {
        self.by_spi.insert(
            spi,
            Tracked {
                auth,
                session: None,
                closed: Usage::default(),
                interim: None,
                cause: None,
            },
        );
    }

    /// The session of the IKE SA `spi`.
    pub fn get(&self, spi: u64) -> Option<&Tracked> {
        self.by_spi.get(&spi)
    }

    /// The session of the IKE SA `spi`, to change.
    pub fn get_mut(&mut self, spi: u64) -> Option<&mut Tracked> {
        self.by_spi.get_mut(&spi)
    }

    /// All sessions by our SPI.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &Tracked)> {
        self.by_spi.iter().map(|(s, t)| (*s, t))
    }

    /// The IKE SA `spi` is established: its session starts. Returns the
    /// session (for the Start) unless it had started already (an IKE SA
    /// rekey moves a session, it does not start one).
    pub fn established(
        &mut self,
        spi: u64,
        framed_ip: Option<IpAddr>,
        calling_station: String,
        interim: Option<Duration>,
        now: Instant,
    ) -> Option<&Session> {
        let t = self.by_spi.get_mut(&spi)?;
        if t.session.is_some() {
            return None;
        }
        t.session = Some(Session {
            id: session_id(t.auth.spis),
            user_name: t.auth.identity.clone(),
            class: t.auth.class.clone(),
            framed_ip: match framed_ip {
                Some(IpAddr::V4(a)) => Some(a),
                _ => None,
            },
            calling_station,
            started: now,
        });
        t.interim = interim.filter(|d| !d.is_zero());
        if let Some(d) = t.interim {
            self.interims.push(Reverse((now + d, spi)));
        }
        t.session.as_ref()
    }

    /// A CHILD_SA of the IKE SA `spi` is gone: its counters stay with the session.
    pub fn child_gone(&mut self, spi: u64, usage: Usage) {
        if let Some(t) = self.by_spi.get_mut(&spi) {
            t.closed += usage;
        }
    }

    /// An IKE SA rekey: the session goes on under the new SA's SPI.
    pub fn rekeyed(&mut self, old: u64, new: u64, now: Instant) {
        if let Some(t) = self.by_spi.remove(&old) {
            if let Some(d) = t.interim {
                self.interims.push(Reverse((now + d, new)));
            }
            self.by_spi.insert(new, t);
        }
    }

    /// The IKE SA `spi` ended: its session, if it had one.
    pub fn ended(&mut self, spi: u64) -> Option<Tracked> {
        self.by_spi.remove(&spi)
    }

    /// When the next Interim-Update is due.
    pub fn next_interim(&self) -> Option<Instant> {
        self.interims.peek().map(|Reverse((t, _))| *t)
    }

    /// The SPIs whose Interim-Update is due by `now`, each rescheduled.
    pub fn due(&mut self, now: Instant) -> Vec<u64> {
        let mut out = Vec::new();
        while let Some(Reverse((t, spi))) = self.interims.peek().copied() {
            if t > now {
                break;
            }
            self.interims.pop();
            let Some(tr) = self.by_spi.get(&spi) else { continue };
            let (Some(d), Some(_)) = (tr.interim, &tr.session) else {
                continue;
            };
            // A rekeyed session has a newer entry under its new SPI; one
            // per session remains because the old SPI no longer resolves.
            let next = if t + d > now { t + d } else { now + d };
            self.interims.push(Reverse((next, spi)));
            out.push(spi);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aaa::client::{ClientConfig, Purpose, RadiusServer};
    use crate::aaa::radius;
    use md5::{Digest, Md5};

    const SECRET: &[u8] = b"acct-secret";

    fn auth(spis: (u64, u64)) -> Box<EapAuthenticated> {
        Box::new(EapAuthenticated {
            spis,
            identity: b"alice".to_vec(),
            method: "eap-radius",
            class: vec![b"gold".to_vec()],
            session_timeout: None,
            interim_interval: None,
        })
    }

    /// A one-shot accounting server that checks what arrives.
    fn server() -> (std::net::UdpSocket, RadiusServer) {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        sock.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        let addr = sock.local_addr().expect("addr");
        (
            sock,
            RadiusServer {
                addr,
                secret: zeroize::Zeroizing::new(SECRET.to_vec()),
            },
        )
    }

    #[test]
    fn stop_carries_usage_gigawords_class_and_a_valid_request_authenticator() {
        let (sock, srv) = server();
        let client = RadiusClient::start(ClientConfig {
            servers: vec![srv],
            timeout: Duration::from_secs(5),
            tries_per_server: 1,
            max_outstanding: 4,
            bind: "127.0.0.1:0".parse().expect("addr"),
            purpose: Purpose::Accounting,
        })
        .expect("client");
        let acct = Accounting::new(client, "gw-1".into(), Some(Duration::from_secs(60)));
        let t0 = Instant::now();
        let session = Session {
            id: session_id((0x1122, 0x3344)),
            user_name: b"alice".to_vec(),
            class: vec![b"gold".to_vec(), b"x".to_vec()],
            framed_ip: Some(Ipv4Addr::new(10, 9, 0, 7)),
            calling_station: "192.0.2.9".into(),
            started: t0,
        };
        let usage = Usage {
            octets_in: (5 << 32) + 1234,
            packets_in: 77,
            octets_out: 99,
            packets_out: 3,
        };
        let req = acct.request(
            &session,
            AcctStatus::STOP,
            Some(usage),
            Some(TerminateCause::AdminReset),
            t0 + Duration::from_secs(42),
            UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        );
        acct.send(req, "Stop", &session.id);
        let mut buf = [0u8; 4096];
        let (n, from) = sock.recv_from(&mut buf).expect("an Accounting-Request arrives");
        let pkt = &buf[..n];
        // RFC 2866 §3: MD5(Code+Identifier+Length+16 zero octets+Attributes+Secret).
        let mut zeroed = pkt.to_vec();
        zeroed[4..20].fill(0);
        let mut h = Md5::new();
        h.update(&zeroed);
        h.update(SECRET);
        let expected: [u8; 16] = h.finalize().into();
        assert_eq!(&pkt[4..20], &expected, "Request Authenticator");
        let p = radius::decode(pkt).expect("decodes");
        assert_eq!(p.code, Code::AccountingRequest);
        let u32_of = |t| u32::from_be_bytes(p.attr(t).expect("attribute").try_into().expect("4 bytes"));
        assert_eq!(u32_of(Attr::ACCT_STATUS_TYPE), AcctStatus::STOP);
        assert_eq!(
            p.attr(Attr::ACCT_SESSION_ID),
            Some(&b"00000000000011220000000000003344"[..])
        );
        assert_eq!(p.attr(Attr::USER_NAME), Some(&b"alice"[..]));
        assert_eq!(u32_of(Attr::ACCT_INPUT_OCTETS), 1234);
        assert_eq!(u32_of(Attr::ACCT_INPUT_GIGAWORDS), 5);
        assert_eq!(u32_of(Attr::ACCT_OUTPUT_OCTETS), 99);
        assert_eq!(u32_of(Attr::ACCT_OUTPUT_GIGAWORDS), 0);
        assert_eq!(u32_of(Attr::ACCT_INPUT_PACKETS), 77);
        assert_eq!(u32_of(Attr::ACCT_OUTPUT_PACKETS), 3);
        assert_eq!(u32_of(Attr::ACCT_SESSION_TIME), 42);
        assert_eq!(u32_of(Attr::ACCT_TERMINATE_CAUSE), 6);
        assert_eq!(u32_of(Attr::EVENT_TIMESTAMP), 1_700_000_000);
        assert_eq!(p.attr(Attr::FRAMED_IP_ADDRESS), Some(&[10, 9, 0, 7][..]));
        assert_eq!(p.attrs(Attr::CLASS).collect::<Vec<_>>(), [&b"gold"[..], &b"x"[..]]);
        assert_eq!(p.attr(Attr::NAS_IDENTIFIER), Some(&b"gw-1"[..]));
        // Accounting-Requests carry no Message-Authenticator of their own.
        assert_eq!(p.attr(Attr::MESSAGE_AUTHENTICATOR), None);
        // The answer: the client matches it and nothing is lost.
        let mut resp = pkt[..20].to_vec();
        resp[0] = 5;
        resp[2..4].copy_from_slice(&20u16.to_be_bytes());
        let mut h = Md5::new();
        h.update(&resp);
        h.update(SECRET);
        let ra: [u8; 16] = h.finalize().into();
        resp[4..20].copy_from_slice(&ra);
        sock.send_to(&resp, from).expect("send");
        let deadline = Instant::now() + Duration::from_secs(5);
        while acct.client().stats().answered.load(Ordering::Relaxed) == 0 {
            assert!(Instant::now() < deadline, "the Accounting-Response was not taken");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(acct.stats().unanswered.load(Ordering::Relaxed), 0);

        // A Start has no usage, time or cause.
        let start = acct.request(&session, AcctStatus::START, None, None, t0, SystemTime::now());
        for t in [
            Attr::ACCT_INPUT_OCTETS,
            Attr::ACCT_SESSION_TIME,
            Attr::ACCT_TERMINATE_CAUSE,
        ] {
            assert!(
                start.attributes.iter().all(|(a, _)| *a != t),
                "attribute {t} in a Start"
            );
        }
    }

    #[test]
    fn sessions_follow_rekeys_keep_closed_usage_and_schedule_interims() {
        let mut s = Sessions::default();
        let t0 = Instant::now();
        s.authenticated(7, auth((1, 7)));
        assert!(
            s.established(
                7,
                Some("10.9.0.7".parse().expect("ip")),
                "p".into(),
                Some(Duration::from_secs(10)),
                t0
            )
            .is_some()
        );
        assert!(
            s.established(7, None, "p".into(), None, t0).is_none(),
            "one Start per session"
        );
        s.child_gone(
            7,
            Usage {
                octets_in: 100,
                packets_in: 1,
                ..Default::default()
            },
        );
        assert_eq!(s.next_interim(), Some(t0 + Duration::from_secs(10)));
        assert!(s.due(t0 + Duration::from_secs(9)).is_empty());
        s.rekeyed(7, 8, t0 + Duration::from_secs(5));
        assert!(s.get(7).is_none());
        assert_eq!(s.get(8).map(|t| t.closed.octets_in), Some(100));
        assert_eq!(
            s.get(8).and_then(|t| t.session.as_ref()).map(|x| x.id.clone()),
            Some(session_id((1, 7))),
            "the session keeps its id across a rekey"
        );
        // The old SPI's entry is dropped, the new one fires.
        assert_eq!(s.due(t0 + Duration::from_secs(16)), vec![8]);
        assert_eq!(s.due(t0 + Duration::from_secs(20)), Vec::<u64>::new());
        assert_eq!(s.due(t0 + Duration::from_secs(26)), vec![8]);
        let ended = s.ended(8).expect("tracked");
        assert_eq!(ended.closed.packets_in, 1);
        assert!(s.due(t0 + Duration::from_secs(100)).is_empty());
        assert_eq!(s.next_interim(), None);
    }
}
