//! EAP inside IKE_AUTH against the responder (RFC 7296 §2.16, RFC 5998):
//! a scripted initiator runs a real IKE_SA_INIT, then IKE_AUTH without AUTH
//! and EAP with the client-side state machine ([`control::eap::Peer`]),
//! checks the gateway's AUTH payloads (certificate-less: a PSK, then the
//! MSK) and computes its own over the MSK. Local users and a relayed back
//! end (answered by the test, as the daemon's RADIUS thread would), wrong
//! passwords, malformed EAP, EAP in the wrong state and huge identities.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use control::config::{
    AuthConfig, ChildConfig, ConnectionConfig, EapAuth, EapBackend, EapIdentity, IdentityMatch, IpsecMode, Lifetime,
    parse_identity,
};
use control::crypto::CryptoProvider;
use control::crypto::auth::{PresharedKey, SignedOctets};
use control::eap::{
    self, Authenticator, AuthenticatorConfig, AuthenticatorStep, Credential, Method, Peer, PeerConfig, PeerStep,
    SystemRng, UserStore, mschapv2,
};
use control::endpoint::{AdmissionConfig, Endpoint};
use control::ike_sa::eap::{EapBackendReply, EapRelay};
use control::ike_sa::{Context, Event, Transmit};
use control::proposal::{parse_esp_proposals, parse_ike_proposals};
use control::ts::parse_selector;
use control::wire::ikev2::{
    AuthMethod, ExchangeType, FLAG_INITIATOR, Header, Identification, Notify, NotifyType, Payload, PayloadType,
    ProtocolId, sk,
};
use ironsa_crypto::AwsLcProvider;
use zeroize::Zeroizing;

#[path = "harness/responder.rs"]
mod harness;
use harness::{InitiatorInit, InitiatorKeys};

const GATEWAY_PSK: &[u8] = b"gateway pre-shared key for the eap tests";
const GATEWAY_ID: &str = "gw.eap.example";

struct Users;

impl UserStore for Users {
    fn credential(&self, identity: &[u8]) -> Option<Credential> {
        match identity {
            b"alice" => Some(Credential::Password(Zeroizing::new("alice-secret-1".into()))),
            _ => None,
        }
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn connection(backend: EapBackend, eap_id: EapIdentity, eap_only: bool) -> ConnectionConfig {
    let mut c = ConnectionConfig::new("rw-eap", parse_identity(GATEWAY_ID), IdentityMatch::Any, GATEWAY_PSK);
    c.remote_auth = AuthConfig::Eap(Arc::new(EapAuth {
        backend,
        eap_id,
        eap_only,
    }));
    c.ike_proposals = parse_ike_proposals("aes256gcm16-prfsha256-x25519").unwrap();
    c.children.push(ChildConfig {
        name: "rw-child".into(),
        esp_proposals: parse_esp_proposals("aes256gcm16").unwrap(),
        local_ts: vec![parse_selector("10.2.0.0/16").unwrap()],
        remote_ts: vec![parse_selector("0.0.0.0/0").unwrap()],
        mode: IpsecMode::Tunnel,
        lifetime: Lifetime::rekey_after(Duration::from_secs(3600)),
    });
    c
}

/// The gateway and a scripted road warrior.
struct Gateway {
    now: Instant,
    crypto: Arc<dyn CryptoProvider>,
    endpoint: Endpoint,
    events: Vec<Event>,
}

impl Gateway {
    fn new(conn: ConnectionConfig) -> Self {
        let now = Instant::now();
        let crypto = AwsLcProvider::seeded(0xea9).shared();
        let mut ctx = Context::new(vec![Arc::new(conn)], crypto.clone());
        ctx.eap_users = Some(Arc::new(Users));
        let endpoint = Endpoint::new(now, ctx, AdmissionConfig::default(), 0, 0);
        Gateway {
            now,
            crypto,
            endpoint,
            events: Vec::new(),
        }
    }

    fn stats(&self) -> &control::ike_sa::eap::EapStats {
        &self.endpoint.context().eap_stats
    }

    /// Delivers a datagram; returns what the gateway sent back.
    fn deliver(&mut self, from: SocketAddr, to: SocketAddr, datagram: &[u8]) -> Vec<Transmit> {
        self.endpoint.handle(self.now, to, from, datagram);
        self.collect()
    }

    fn collect(&mut self) -> Vec<Transmit> {
        while let Some((_, e)) = self.endpoint.poll_event() {
            self.events.push(e);
        }
        std::iter::from_fn(|| self.endpoint.poll_transmit()).collect()
    }

    fn relays(&mut self) -> Vec<EapRelay> {
        let (relays, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.events)
            .into_iter()
            .partition(|e| matches!(e, Event::EapRelay(_)));
        self.events = rest;
        relays
            .into_iter()
            .filter_map(|e| match e {
                Event::EapRelay(r) => Some(*r),
                _ => None,
            })
            .collect()
    }

    fn up(&self) -> bool {
        self.events.iter().any(|e| matches!(e, Event::IkeSaUp { .. }))
    }

    fn child_installed(&self) -> bool {
        self.events.iter().any(|e| matches!(e, Event::ChildSaInstalled(_)))
    }

    fn down(&self) -> bool {
        self.events.iter().any(|e| matches!(e, Event::IkeSaDown { .. }))
    }
}

/// The road warrior's side of the IKE SA.
struct Client {
    local: SocketAddr,
    remote: SocketAddr,
    k: InitiatorKeys,
    next_mid: u32,
    idi: Identification,
}

fn n(ty: NotifyType) -> Payload {
    Payload::Notify(Notify {
        protocol: ProtocolId::NONE,
        spi: Vec::new(),
        ty,
        data: Vec::new(),
    })
}

impl Client {
    fn connect(gw: &mut Gateway, identity: Identification) -> Client {
        let local = addr("192.0.2.10:500");
        let remote = addr("198.51.100.1:500");
        let init = InitiatorInit::new(&gw.crypto, local, remote, "aes256gcm16-prfsha256-x25519", None);
        let out = gw.deliver(local, remote, &init.request);
        let response = &out.first().expect("IKE_SA_INIT answered").data;
        let k = init
            .finish(&gw.crypto, response)
            .expect("IKE_SA_INIT response accepted");
        Client {
            local,
            remote,
            k,
            next_mid: 1,
            idi: identity,
        }
    }

    fn seal(&self, mid: u32, inner: &[Payload]) -> Vec<u8> {
        self.seal_exchange(ExchangeType::IKE_AUTH, mid, inner)
    }

    fn seal_exchange(&self, exchange: ExchangeType, mid: u32, inner: &[Payload]) -> Vec<u8> {
        let header = Header {
            spi_i: self.k.spi_i,
            spi_r: self.k.spi_r,
            next_payload: PayloadType::NONE,
            major_version: 2,
            minor_version: 0,
            exchange,
            flags: FLAG_INITIATOR,
            message_id: mid,
            length: 0,
        };
        sk::seal_message(&header, inner, &self.k.outbound).unwrap()
    }

    /// Sends one IKE_AUTH request; the decrypted response, if any.
    fn send(&mut self, gw: &mut Gateway, inner: &[Payload]) -> Option<Vec<Payload>> {
        let datagram = self.seal(self.next_mid, inner);
        let out = gw.deliver(self.local, self.remote, &datagram);
        let reply = out.into_iter().find(|t| t.remote == self.local)?;
        self.next_mid += 1;
        Some(sk::open_message(&reply.data, &self.k.inbound).expect("response decrypts"))
    }

    /// Reads the gateway's response to an earlier request (relayed case).
    fn receive(&mut self, out: Vec<Transmit>) -> Option<Vec<Payload>> {
        let reply = out.into_iter().find(|t| t.remote == self.local)?;
        self.next_mid += 1;
        Some(sk::open_message(&reply.data, &self.k.inbound).expect("response decrypts"))
    }

    fn first_request(&self, eap_only: bool) -> Vec<Payload> {
        let esp = parse_esp_proposals("aes256gcm16").unwrap();
        let mut v = vec![Payload::IdI(self.idi.clone())];
        if eap_only {
            v.push(n(NotifyType::EAP_ONLY_AUTHENTICATION));
        }
        v.extend([
            Payload::Sa(vec![esp[0].to_wire(1, 0x0c00_0001)]),
            Payload::TsI(vec![parse_selector("0.0.0.0/0").unwrap()]),
            Payload::TsR(vec![parse_selector("10.2.0.0/16").unwrap()]),
        ]);
        v
    }

    fn id_body(id: &Identification) -> Vec<u8> {
        let mut v = vec![id.id_type.0, 0, 0, 0];
        v.extend_from_slice(&id.data);
        v
    }

    /// The gateway's AUTH with `key` (the PSK, or the MSK) verifies.
    fn gateway_auth_ok(&self, key: &[u8], data: &[u8]) -> bool {
        let idr = parse_identity(GATEWAY_ID);
        let octets = SignedOctets::new(
            &self.k.response,
            &self.k.ni,
            self.k.suite.prf,
            &self.k.keys.sk_pr,
            idr.id_type.0,
            &Self::id_body(&idr)[4..],
        );
        PresharedKey::new(key).verify(self.k.suite.prf, &octets, data)
    }

    /// Our AUTH over the MSK.
    fn auth_with(&self, key: &[u8]) -> Payload {
        let octets = SignedOctets::new(
            &self.k.request,
            &self.k.nr,
            self.k.suite.prf,
            &self.k.keys.sk_pi,
            self.idi.id_type.0,
            &self.idi.data,
        );
        Payload::Auth {
            method: AuthMethod::SHARED_KEY_MIC,
            data: PresharedKey::new(key).auth(self.k.suite.prf, &octets),
        }
    }
}

fn eap_of(payloads: &[Payload]) -> Option<Vec<u8>> {
    payloads.iter().find_map(|p| match p {
        Payload::Eap(e) => Some(e.clone()),
        _ => None,
    })
}

fn auth_of(payloads: &[Payload]) -> Option<Vec<u8>> {
    payloads.iter().find_map(|p| match p {
        Payload::Auth { data, .. } => Some(data.clone()),
        _ => None,
    })
}

fn has_notify(payloads: &[Payload], ty: NotifyType) -> bool {
    payloads.iter().any(|p| matches!(p, Payload::Notify(n) if n.ty == ty))
}

fn peer(identity: &str, password: &str) -> Peer {
    Peer::new(PeerConfig {
        identity: identity.as_bytes().to_vec(),
        password: Zeroizing::new(password.into()),
        methods: vec![Method::MsChapV2],
    })
}

fn local(eap_id: EapIdentity, eap_only: bool) -> ConnectionConfig {
    connection(EapBackend::Local(vec![Method::MsChapV2]), eap_id, eap_only)
}

/// Runs EAP from the gateway's first Request to its Success or Failure;
/// returns the client's outcome and the gateway's last response.
fn run_eap(gw: &mut Gateway, c: &mut Client, mut p: Peer, first: Vec<u8>) -> (PeerStep, Vec<Payload>) {
    let mut request = first;
    let mut rng = SystemRng;
    for _ in 0..8 {
        let step = p.handle(&request, &mut rng).expect("client EAP accepts the Request");
        let response = match step {
            PeerStep::Send(r) => r,
            done => return (done, Vec::new()),
        };
        let reply = c.send(gw, &[Payload::Eap(response)]).expect("gateway answers");
        let eap = eap_of(&reply).expect("EAP in the response");
        if eap[0] == eap::Code::Success as u8 || eap[0] == eap::Code::Failure as u8 {
            return (p.handle(&eap, &mut rng).expect("client EAP accepts the outcome"), reply);
        }
        request = eap;
    }
    panic!("EAP did not finish");
}

fn msk_of(step: &PeerStep) -> Zeroizing<[u8; 64]> {
    match step {
        PeerStep::Success { msk: Some(m) } => m.clone(),
        other => panic!("expected EAP success with an MSK, got {other:?}"),
    }
}

#[test]
fn eap_mschapv2_with_local_users_establishes_the_ike_sa_and_child() {
    let mut gw = Gateway::new(local(EapIdentity::Ask, false));
    let mut c = Client::connect(&mut gw, parse_identity("alice@road.example"));
    let first = c
        .send(&mut gw, &c.first_request(false))
        .expect("first IKE_AUTH answered");
    let auth = auth_of(&first).expect("gateway AUTH in the first response");
    assert!(c.gateway_auth_ok(GATEWAY_PSK, &auth), "gateway PSK AUTH verifies");
    let request = eap_of(&first).expect("EAP-Identity Request");
    let (outcome, _) = run_eap(&mut gw, &mut c, peer("alice", "alice-secret-1"), request);
    let msk = msk_of(&outcome);
    let last = c.send(&mut gw, &[c.auth_with(&msk[..])]).expect("final AUTH answered");
    let auth = auth_of(&last).expect("gateway AUTH over the MSK");
    assert!(c.gateway_auth_ok(&msk[..], &auth), "gateway MSK AUTH verifies");
    assert!(
        last.iter().any(|p| matches!(p, Payload::Sa(_))),
        "child SA answered: {last:?}"
    );
    assert!(gw.up() && gw.child_installed(), "{:?}", gw.events);
    assert_eq!(gw.stats().successes[0].load(Ordering::Relaxed), 1);
    assert!(
        gw.events
            .iter()
            .any(|e| matches!(e, Event::EapAuthenticated(a) if a.identity == b"alice" && a.method == "eap-mschapv2"))
    );
}

#[test]
fn wrong_password_is_refused_with_authentication_failed() {
    let mut gw = Gateway::new(local(EapIdentity::Ask, false));
    let mut c = Client::connect(&mut gw, parse_identity("alice@road.example"));
    let first = c.send(&mut gw, &c.first_request(false)).unwrap();
    let (outcome, last) = run_eap(
        &mut gw,
        &mut c,
        peer("alice", "not-her-password"),
        eap_of(&first).unwrap(),
    );
    assert!(matches!(outcome, PeerStep::Failure { .. }), "{outcome:?}");
    // The MSCHAPv2 Failure acknowledged, the gateway answers EAP-Failure and AUTHENTICATION_FAILED.
    assert!(has_notify(&last, NotifyType::AUTHENTICATION_FAILED), "{last:?}");
    assert_eq!(eap_of(&last).unwrap()[0], eap::Code::Failure as u8);
    assert!(gw.down() && !gw.up());
    assert_eq!(gw.stats().failures[0].load(Ordering::Relaxed), 1);
    assert_eq!(gw.endpoint.len(), 0, "the refused SA is gone");
}

#[test]
fn the_ike_identity_is_the_eap_identity_unless_eap_id_asks() {
    let mut gw = Gateway::new(local(EapIdentity::Ike, false));
    let alice = Identification {
        id_type: control::wire::ikev2::IdType::RFC822_ADDR,
        data: b"alice".to_vec(),
    };
    let mut c = Client::connect(&mut gw, alice);
    let first = c.send(&mut gw, &c.first_request(false)).unwrap();
    let request = eap_of(&first).unwrap();
    // No EAP-Identity round: the MSCHAPv2 Challenge comes first.
    assert_eq!(request[4], eap::EapType::MSCHAPV2, "{request:?}");
    let (outcome, _) = run_eap(&mut gw, &mut c, peer("alice", "alice-secret-1"), request);
    let msk = msk_of(&outcome);
    c.send(&mut gw, &[c.auth_with(&msk[..])]).unwrap();
    assert!(gw.up());
}

#[test]
fn eap_only_skips_the_gateway_auth_when_both_sides_allow_it() {
    for allowed in [true, false] {
        let mut gw = Gateway::new(local(EapIdentity::Ask, allowed));
        let mut c = Client::connect(&mut gw, parse_identity("alice@road.example"));
        let first = c.send(&mut gw, &c.first_request(true)).unwrap();
        assert_eq!(auth_of(&first).is_none(), allowed, "eap_only = {allowed}: {first:?}");
        let (outcome, _) = run_eap(
            &mut gw,
            &mut c,
            peer("alice", "alice-secret-1"),
            eap_of(&first).unwrap(),
        );
        let msk = msk_of(&outcome);
        let last = c.send(&mut gw, &[c.auth_with(&msk[..])]).unwrap();
        assert!(c.gateway_auth_ok(&msk[..], &auth_of(&last).unwrap()));
        assert!(gw.up(), "eap_only = {allowed}");
    }
}

#[test]
fn a_wrong_final_auth_is_refused() {
    let mut gw = Gateway::new(local(EapIdentity::Ask, false));
    let mut c = Client::connect(&mut gw, parse_identity("alice@road.example"));
    let first = c.send(&mut gw, &c.first_request(false)).unwrap();
    let (outcome, _) = run_eap(
        &mut gw,
        &mut c,
        peer("alice", "alice-secret-1"),
        eap_of(&first).unwrap(),
    );
    assert!(matches!(outcome, PeerStep::Success { .. }));
    let last = c.send(&mut gw, &[c.auth_with(&[7u8; 64])]).unwrap();
    assert!(has_notify(&last, NotifyType::AUTHENTICATION_FAILED));
    assert!(!gw.up() && gw.down());
}

#[test]
fn malformed_and_out_of_state_eap_is_dropped_and_counted_without_disturbing_the_session() {
    let mut gw = Gateway::new(local(EapIdentity::Ask, false));
    let mut c = Client::connect(&mut gw, parse_identity("alice@road.example"));
    let first = c.send(&mut gw, &c.first_request(false)).unwrap();
    let identity_request = eap_of(&first).unwrap();
    let id = identity_request[1];
    let hostile: Vec<Vec<u8>> = vec![
        vec![],
        vec![2, id],
        vec![2, id, 0, 200, 1, b'x'],
        vec![9, id, 0, 4],
        // A Success from the client, and a Request.
        vec![3, id, 0, 4],
        vec![1, id, 0, 5, 1],
        // An MSCHAPv2 Response while the Identity is awaited.
        {
            let mut v = vec![2, id, 0, 0, 26, 2, 0, 0, 0, 49];
            v.extend_from_slice(&[0u8; 49]);
            v.extend_from_slice(b"alice");
            let len = (v.len() as u16).to_be_bytes();
            v[2..4].copy_from_slice(&len);
            v
        },
        // The right Response with the wrong identifier.
        {
            let mut v = vec![2, id.wrapping_add(9), 0, 10, 1];
            v.extend_from_slice(b"alice");
            v
        },
        // A 64 KiB identity (nearly as long as one IKE message can carry).
        {
            let len: u16 = 65_400;
            let mut v = vec![2, id, (len >> 8) as u8, len as u8, 1];
            v.resize(usize::from(len), b'a');
            v
        },
    ];
    for (i, bad) in hostile.iter().enumerate() {
        let datagram = c.seal(c.next_mid, &[Payload::Eap(bad.clone())]);
        let out = gw.deliver(c.local, c.remote, &datagram);
        assert!(out.is_empty(), "hostile EAP {i} was answered");
        assert_eq!(
            gw.stats().dropped.load(Ordering::Relaxed),
            i as u64 + 1,
            "hostile EAP {i} counted"
        );
    }
    // An IKE_AUTH request without EAP payload is dropped too.
    let datagram = c.seal(c.next_mid, &[n(NotifyType::INITIAL_CONTACT)]);
    assert!(gw.deliver(c.local, c.remote, &datagram).is_empty());
    assert!(!gw.down(), "{:?}", gw.events);
    // The conversation goes on as if nothing happened.
    let (outcome, _) = run_eap(&mut gw, &mut c, peer("alice", "alice-secret-1"), identity_request);
    let msk = msk_of(&outcome);
    c.send(&mut gw, &[c.auth_with(&msk[..])]).unwrap();
    assert!(gw.up());
}

#[test]
fn a_64_kib_ike_identity_used_as_eap_identity_is_refused() {
    let mut gw = Gateway::new(local(EapIdentity::Ike, false));
    let huge = Identification {
        id_type: control::wire::ikev2::IdType::RFC822_ADDR,
        data: vec![b'a'; 65_000],
    };
    let mut c = Client::connect(&mut gw, huge);
    let first = c.send(&mut gw, &c.first_request(false)).unwrap();
    assert!(has_notify(&first, NotifyType::AUTHENTICATION_FAILED), "{first:?}");
    assert!(gw.down());
    assert_eq!(gw.stats().failures[0].load(Ordering::Relaxed), 1);
}

#[test]
fn an_ike_auth_with_auth_does_not_select_an_eap_connection() {
    let mut gw = Gateway::new(local(EapIdentity::Ask, false));
    let mut c = Client::connect(&mut gw, parse_identity("alice@road.example"));
    let mut request = c.first_request(false);
    request.insert(1, c.auth_with(GATEWAY_PSK));
    let reply = c.send(&mut gw, &request).unwrap();
    assert!(has_notify(&reply, NotifyType::AUTHENTICATION_FAILED));
    assert!(!gw.up());
}

/// The test's back end: the gateway-side authenticator, answering relays
/// the way the daemon's RADIUS thread does.
struct Backend {
    authenticator: Option<Authenticator>,
}

impl Backend {
    fn answer(&mut self, relay: &EapRelay) -> EapBackendReply {
        let mut rng = SystemRng;
        let step = match self.authenticator.as_mut() {
            None => {
                let config = AuthenticatorConfig::default();
                let (a, first) = Authenticator::start(config, Some(&relay.identity), &Users, &mut rng).unwrap();
                self.authenticator = Some(a);
                AuthenticatorStep::Send(first)
            }
            Some(a) => a.handle(&relay.eap, &Users, &mut rng).expect("backend accepts"),
        };
        match step {
            AuthenticatorStep::Send(eap) => EapBackendReply::Challenge {
                eap,
                state: b"radius-state".to_vec(),
            },
            AuthenticatorStep::Success { packet, msk, .. } => EapBackendReply::Accept {
                eap: Some(packet),
                msk,
                session_timeout: Some(Duration::from_secs(600)),
                class: vec![b"class-1".to_vec()],
                framed_ip: None,
                framed_pool: None,
                interim_interval: None,
            },
            AuthenticatorStep::Failure { packet, reason, .. } => EapBackendReply::Reject {
                eap: Some(packet),
                reason: reason.to_string(),
            },
            _ => unreachable!(),
        }
    }
}

fn relayed(password: &str) -> (Gateway, Client, PeerStep, Vec<Payload>) {
    let mut gw = Gateway::new(connection(EapBackend::Relay, EapIdentity::Ask, false));
    let mut c = Client::connect(&mut gw, parse_identity("alice@road.example"));
    let first = c.send(&mut gw, &c.first_request(false)).unwrap();
    assert!(auth_of(&first).is_some());
    let mut request = eap_of(&first).expect("local EAP-Identity Request");
    let mut p = peer("alice", password);
    let mut backend = Backend { authenticator: None };
    let mut rng = SystemRng;
    let mut state = Vec::new();
    for _ in 0..8 {
        let response = match p.handle(&request, &mut rng).unwrap() {
            PeerStep::Send(r) => r,
            other => panic!("{other:?}"),
        };
        let datagram = c.seal(c.next_mid, &[Payload::Eap(response)]);
        assert!(
            gw.deliver(c.local, c.remote, &datagram).is_empty(),
            "answered before the back end"
        );
        // A retransmission while the back end works is dropped.
        assert!(gw.deliver(c.local, c.remote, &datagram).is_empty());
        let relays = gw.relays();
        assert_eq!(relays.len(), 1, "one relay per request");
        assert_eq!(relays[0].identity, b"alice");
        assert_eq!(relays[0].state, state, "the back end's State comes back");
        state = b"radius-state".to_vec();
        let reply = backend.answer(&relays[0]);
        let spi = c.k.spi_r;
        let out = {
            let sa_known = gw.endpoint.eap_backend_reply(gw.now, spi, reply);
            assert!(sa_known);
            gw.collect()
        };
        let reply = c.receive(out).expect("answer after the back end");
        let eap = eap_of(&reply).unwrap();
        if eap[0] == eap::Code::Success as u8 || eap[0] == eap::Code::Failure as u8 {
            let outcome = p.handle(&eap, &mut rng).unwrap();
            return (gw, c, outcome, reply);
        }
        request = eap;
    }
    panic!("relayed EAP did not finish");
}

#[test]
fn relayed_eap_waits_for_the_back_end_and_uses_its_msk() {
    let (mut gw, mut c, outcome, _) = relayed("alice-secret-1");
    let msk = msk_of(&outcome);
    let last = c.send(&mut gw, &[c.auth_with(&msk[..])]).unwrap();
    assert!(c.gateway_auth_ok(&msk[..], &auth_of(&last).unwrap()));
    assert!(gw.up() && gw.child_installed());
    assert_eq!(gw.stats().successes[2].load(Ordering::Relaxed), 1);
    assert!(gw.events.iter().any(|e| matches!(e,
        Event::EapAuthenticated(a) if a.class == vec![b"class-1".to_vec()] && a.session_timeout == Some(Duration::from_secs(600)))));
    // Session-Timeout bounds the IKE SA.
    let sa = gw.endpoint.sa(c.k.spi_r).unwrap();
    assert!(sa.poll_timeout().unwrap() <= gw.now + Duration::from_secs(600));
}

#[test]
fn relayed_reject_gives_authentication_failed() {
    let (gw, _c, outcome, last) = relayed("wrong");
    assert!(matches!(outcome, PeerStep::Failure { .. }));
    assert!(has_notify(&last, NotifyType::AUTHENTICATION_FAILED));
    assert!(gw.down());
    assert_eq!(gw.stats().failures[2].load(Ordering::Relaxed), 1);
}

#[test]
fn a_late_back_end_answer_for_a_gone_sa_is_ignored() {
    let mut gw = Gateway::new(connection(EapBackend::Relay, EapIdentity::Ask, false));
    let reply = EapBackendReply::Reject {
        eap: None,
        reason: "late".into(),
    };
    assert!(!gw.endpoint.eap_backend_reply(gw.now, 0x55, reply));
}

#[test]
fn nt_hash_credentials_work_too() {
    struct Hashed;
    impl UserStore for Hashed {
        fn credential(&self, identity: &[u8]) -> Option<Credential> {
            (identity == b"bob").then(|| Credential::NtHash(mschapv2::nt_password_hash("bob-secret")))
        }
    }
    let mut gw = Gateway::new(local(EapIdentity::Ask, false));
    let mut ctx = gw.endpoint.context().clone();
    ctx.eap_users = Some(Arc::new(Hashed));
    gw.endpoint = Endpoint::new(gw.now, ctx, AdmissionConfig::default(), 0, 0);
    let mut c = Client::connect(&mut gw, parse_identity("bob@road.example"));
    let first = c.send(&mut gw, &c.first_request(false)).unwrap();
    let (outcome, _) = run_eap(&mut gw, &mut c, peer("bob", "bob-secret"), eap_of(&first).unwrap());
    let msk = msk_of(&outcome);
    c.send(&mut gw, &[c.auth_with(&msk[..])]).unwrap();
    assert!(gw.up());
}

#[test]
fn a_client_that_aborts_on_the_mschapv2_failure_is_logged_and_closed() {
    // strongSwan does not acknowledge an MSCHAPv2 Failure Request: it sends
    // AUTHENTICATION_FAILED in an INFORMATIONAL request instead.
    let mut gw = Gateway::new(local(EapIdentity::Ask, false));
    let mut c = Client::connect(&mut gw, parse_identity("alice@road.example"));
    let first = c.send(&mut gw, &c.first_request(false)).unwrap();
    let mut p = peer("alice", "wrong");
    let mut rng = SystemRng;
    let mut request = eap_of(&first).unwrap();
    // Identity, then the MSCHAPv2 Response; the answer is the Failure Request.
    for _ in 0..2 {
        let PeerStep::Send(response) = p.handle(&request, &mut rng).unwrap() else {
            panic!("client EAP stopped early")
        };
        request = eap_of(&c.send(&mut gw, &[Payload::Eap(response)]).unwrap()).unwrap();
    }
    assert_eq!(&request[4..6], &[eap::EapType::MSCHAPV2, 4], "MSCHAPv2 Failure Request");
    let datagram = c.seal_exchange(
        ExchangeType::INFORMATIONAL,
        c.next_mid,
        &[n(NotifyType::AUTHENTICATION_FAILED)],
    );
    let out = gw.deliver(c.local, c.remote, &datagram);
    assert_eq!(out.len(), 1, "the INFORMATIONAL is answered");
    assert!(gw.down() && !gw.up());
    assert_eq!(gw.stats().failures[0].load(Ordering::Relaxed), 1);
    assert_eq!(gw.endpoint.len(), 0);
}

/// A gateway that wants the client's PSK first, then EAP (RFC 4739).
fn two_rounds() -> ConnectionConfig {
    let mut c = local(EapIdentity::Ask, false);
    c.remote_auth = AuthConfig::Psk(Arc::new(PresharedKey::new(GATEWAY_PSK)));
    c.remote_auth2 = Some(Arc::new(EapAuth {
        backend: EapBackend::Local(vec![Method::MsChapV2]),
        eap_id: EapIdentity::Ask,
        eap_only: false,
    }));
    c
}

#[test]
fn psk_then_eap_in_two_authentication_rounds() {
    let mut gw = Gateway::new(two_rounds());
    let host = parse_identity("host@road.example");
    let mut c = Client::connect(&mut gw, host.clone());
    let mut first = c.first_request(false);
    first.insert(1, c.auth_with(GATEWAY_PSK));
    first.insert(2, n(NotifyType::ANOTHER_AUTH_FOLLOWS));
    let reply = c.send(&mut gw, &first).unwrap();
    assert!(c.gateway_auth_ok(GATEWAY_PSK, &auth_of(&reply).unwrap()), "{reply:?}");
    assert!(
        eap_of(&reply).is_none() && !gw.up(),
        "round one alone does not establish"
    );
    // Round two: IDi without AUTH starts EAP.
    let alice = parse_identity("alice@eap.example");
    c.idi = alice.clone();
    let reply = c.send(&mut gw, &[Payload::IdI(alice)]).unwrap();
    assert!(auth_of(&reply).is_none(), "our AUTH went with round one");
    let (outcome, _) = run_eap(
        &mut gw,
        &mut c,
        peer("alice", "alice-secret-1"),
        eap_of(&reply).unwrap(),
    );
    let msk = msk_of(&outcome);
    let last = c.send(&mut gw, &[c.auth_with(&msk[..])]).unwrap();
    assert!(c.gateway_auth_ok(&msk[..], &auth_of(&last).unwrap()));
    assert!(
        last.iter().any(|p| matches!(p, Payload::Sa(_))),
        "the child of round one: {last:?}"
    );
    assert!(gw.up() && gw.child_installed());
    assert_eq!(
        gw.endpoint.sa(c.k.spi_r).unwrap().peer_id(),
        Some(&host),
        "the first round's identity"
    );
}

#[test]
fn a_connection_with_two_rounds_refuses_a_client_with_one() {
    let mut gw = Gateway::new(two_rounds());
    let mut c = Client::connect(&mut gw, parse_identity("host@road.example"));
    let mut first = c.first_request(false);
    first.insert(1, c.auth_with(GATEWAY_PSK));
    let reply = c.send(&mut gw, &first).unwrap();
    assert!(has_notify(&reply, NotifyType::AUTHENTICATION_FAILED), "{reply:?}");
    assert!(gw.down() && !gw.up());
}

#[test]
fn eap_md5_has_no_msk_so_both_auths_use_sk_pi_and_sk_pr() {
    let mut gw = Gateway::new(connection(
        EapBackend::Local(vec![Method::Md5]),
        EapIdentity::Ask,
        false,
    ));
    let mut c = Client::connect(&mut gw, parse_identity("alice@road.example"));
    let first = c.send(&mut gw, &c.first_request(false)).unwrap();
    let p = Peer::new(PeerConfig {
        identity: b"alice".to_vec(),
        password: Zeroizing::new("alice-secret-1".into()),
        methods: vec![Method::Md5],
    });
    let (outcome, _) = run_eap(&mut gw, &mut c, p, eap_of(&first).unwrap());
    assert!(matches!(outcome, PeerStep::Success { msk: None }), "{outcome:?}");
    let sk_pi = c.k.keys.sk_pi.to_vec();
    let last = c.send(&mut gw, &[c.auth_with(&sk_pi)]).unwrap();
    assert!(c.gateway_auth_ok(&c.k.keys.sk_pr, &auth_of(&last).unwrap()));
    assert!(gw.up());
    assert_eq!(gw.stats().successes[1].load(Ordering::Relaxed), 1, "counted as eap-md5");
}

/// The configuration payload of an EAP road warrior: asked for in the first
/// IKE_AUTH request, answered with the child in the last; an address from
/// the back end (RADIUS Framed-IP-Address) wins over the pool.
#[test]
fn virtual_ip_of_an_eap_client_comes_with_the_last_response() {
    use control::ike_sa::config_payload::attr;
    use control::pool::{AddrRange, Pool, Pools, SharedPools};
    use control::wire::ikev2::{CfgType, ConfigAttribute};
    let cp_request = Payload::Cp {
        cfg_type: CfgType::REQUEST,
        attributes: vec![ConfigAttribute {
            ty: attr::INTERNAL_IP4_ADDRESS,
            value: Vec::new(),
        }],
    };
    let assigned = |reply: &[Payload]| {
        reply.iter().find_map(|p| match p {
            Payload::Cp { cfg_type, attributes } if *cfg_type == CfgType::REPLY => attributes
                .iter()
                .find(|a| a.ty == attr::INTERNAL_IP4_ADDRESS)
                .map(|a| std::net::Ipv4Addr::new(a.value[0], a.value[1], a.value[2], a.value[3])),
            _ => None,
        })
    };
    for (backend, expected) in [
        (EapBackend::Local(vec![Method::MsChapV2]), "10.3.0.1"),
        (EapBackend::Relay, "10.9.0.7"),
    ] {
        let mut conn = connection(backend.clone(), EapIdentity::Ask, false);
        conn.virtual_ips.pools = vec!["rw".into()];
        let mut gw = Gateway::new(conn.clone());
        let pool = Pool::new("rw", &[AddrRange::parse("10.3.0.1-10.3.0.9").unwrap()]).unwrap();
        let mut ctx = gw.endpoint.context().clone();
        ctx.connections = Arc::new(vec![Arc::new(conn)]);
        ctx.addresses = Arc::new(SharedPools::new(Pools::new(vec![pool]).unwrap()));
        gw.endpoint = Endpoint::new(gw.now, ctx, AdmissionConfig::default(), 0, 0);
        let mut c = Client::connect(&mut gw, parse_identity("alice@road.example"));
        let mut first = c.first_request(false);
        first.push(cp_request.clone());
        let reply = c.send(&mut gw, &first).unwrap();
        assert_eq!(assigned(&reply), None, "no address before EAP");
        let msk = match backend {
            EapBackend::Local(_) => {
                let (outcome, _) = run_eap(
                    &mut gw,
                    &mut c,
                    peer("alice", "alice-secret-1"),
                    eap_of(&reply).unwrap(),
                );
                msk_of(&outcome)
            }
            _ => {
                // The back end accepts at once with MPPE keys and a Framed-IP-Address.
                let response = {
                    let mut p = peer("alice", "alice-secret-1");
                    match p.handle(&eap_of(&reply).unwrap(), &mut SystemRng).unwrap() {
                        PeerStep::Send(r) => r,
                        other => panic!("{other:?}"),
                    }
                };
                let datagram = c.seal(c.next_mid, &[Payload::Eap(response)]);
                assert!(gw.deliver(c.local, c.remote, &datagram).is_empty());
                assert_eq!(gw.relays().len(), 1);
                let msk = Zeroizing::new([9u8; 64]);
                let accept = EapBackendReply::Accept {
                    eap: None,
                    msk: Some(msk.clone()),
                    session_timeout: None,
                    class: Vec::new(),
                    framed_ip: Some("10.9.0.7".parse().unwrap()),
                    framed_pool: None,
                    interim_interval: None,
                };
                assert!(gw.endpoint.eap_backend_reply(gw.now, c.k.spi_r, accept));
                let out = gw.collect();
                let success = c.receive(out).unwrap();
                assert_eq!(eap_of(&success).unwrap()[0], eap::Code::Success as u8);
                msk
            }
        };
        let last = c.send(&mut gw, &[c.auth_with(&msk[..])]).unwrap();
        assert_eq!(
            assigned(&last).map(|a| a.to_string()).as_deref(),
            Some(expected),
            "{last:?}"
        );
        assert!(gw.up() && gw.child_installed());
    }
}

#[path = "harness/tls_pki.rs"]
mod tls_pki;

/// A gateway that runs EAP-TLS with `tls_pki`'s server certificate and CA.
fn eap_tls_gateway(pki: &tls_pki::Pki) -> Gateway {
    use control::eap::tls::{TlsServerSetup, TlsVersion};
    let setup = TlsServerSetup::new(
        &tls_pki::credentials(&pki.server),
        &[pki.ca.to_vec()],
        &[TlsVersion::V1_3, TlsVersion::V1_2],
    )
    .unwrap();
    Gateway::new(connection(EapBackend::Tls(Arc::new(setup)), EapIdentity::Ask, false))
}

/// Runs EAP-TLS with `client`'s certificate after the EAP-Identity Request
/// `first`; before each TLS Response, `stray` frames go to the gateway,
/// which must drop them unanswered. The gateway's last EAP packet and
/// response, and the peer's MSK if it saw EAP-Success.
fn run_eap_tls(
    gw: &mut Gateway,
    c: &mut Client,
    client: &(
        rustls::pki_types::CertificateDer<'static>,
        rustls::pki_types::PrivateKeyDer<'static>,
    ),
    ca: &[u8],
    first: Vec<u8>,
    stray: impl Fn(u8) -> Vec<Vec<u8>>,
) -> (Vec<u8>, Vec<Payload>, Option<Zeroizing<[u8; 64]>>) {
    use control::eap::tls::{EapTlsPeer, PeerStep as TlsStep, ServerName, TlsVersion, peer_config};
    let config = peer_config(&tls_pki::credentials(client), &[ca.to_vec()], &[TlsVersion::V1_3]).unwrap();
    let name = ServerName::try_from("radius.example.org").unwrap();
    let mut tls = EapTlsPeer::new(config, name, 1000).unwrap();
    let mut identity = vec![2, first[1], 0, 10, 1];
    identity.extend_from_slice(b"carol");
    let mut reply = c.send(gw, &[Payload::Eap(identity)]).expect("TLS Start");
    for _ in 0..32 {
        let request = eap_of(&reply).expect("EAP in every response");
        if request[0] != eap::Code::Request as u8 {
            let msk = match tls.handle(&request) {
                Ok(TlsStep::Success(msk)) => Some(msk),
                _ => None,
            };
            return (request, reply, msk);
        }
        let TlsStep::Response(response) = tls.handle(&request).expect("peer takes the Request") else {
            panic!("success before EAP-Success");
        };
        for bad in stray(request[1]) {
            let datagram = c.seal(c.next_mid, &[Payload::Eap(bad)]);
            assert!(
                gw.deliver(c.local, c.remote, &datagram).is_empty(),
                "a stray frame was answered"
            );
        }
        reply = c.send(gw, &[Payload::Eap(response)]).expect("gateway answers");
    }
    panic!("EAP-TLS did not finish");
}

#[test]
fn eap_tls_establishes_and_stray_frames_are_dropped_and_counted() {
    let pki = tls_pki::pki();
    let mut gw = eap_tls_gateway(&pki);
    let mut c = Client::connect(&mut gw, parse_identity("carol.example.org"));
    let first = c.send(&mut gw, &c.first_request(false)).unwrap();
    let identity_request = eap_of(&first).expect("EAP-Identity Request");
    // Per round: an answer to another Request, a frame without flags, one
    // byte of a message announced as nine.
    let stray = |id: u8| {
        vec![
            vec![2, id.wrapping_add(3), 0, 6, 13, 0],
            vec![2, id, 0, 5, 13],
            vec![2, id, 0, 11, 13, 0x80, 0, 0, 0, 9, 0x16],
        ]
    };
    let (success, _, msk) = run_eap_tls(&mut gw, &mut c, &pki.client, &pki.ca, identity_request, stray);
    assert_eq!(success[0], eap::Code::Success as u8);
    let msk = msk.expect("the peer accepted EAP-Success");
    let dropped = gw.stats().dropped.load(Ordering::Relaxed);
    assert!(dropped >= 6 && dropped % 3 == 0, "every stray frame counted: {dropped}");
    let last = c.send(&mut gw, &[c.auth_with(&msk[..])]).unwrap();
    assert!(
        c.gateway_auth_ok(&msk[..], &auth_of(&last).unwrap()),
        "gateway AUTH over the TLS MSK"
    );
    assert!(gw.up() && gw.child_installed(), "{:?}", gw.events);
    assert_eq!(gw.stats().successes[3].load(Ordering::Relaxed), 1, "counted as eap-tls");
}

#[test]
fn eap_tls_with_a_certificate_of_another_ca_is_refused() {
    let pki = tls_pki::pki();
    let mut gw = eap_tls_gateway(&pki);
    let mut c = Client::connect(&mut gw, parse_identity("mallory.example.org"));
    let first = c.send(&mut gw, &c.first_request(false)).unwrap();
    let identity_request = eap_of(&first).unwrap();
    let (failure, last, msk) = run_eap_tls(&mut gw, &mut c, &pki.stranger, &pki.ca, identity_request, |_| {
        Vec::new()
    });
    assert_eq!(failure[0], eap::Code::Failure as u8);
    assert!(msk.is_none());
    assert!(has_notify(&last, NotifyType::AUTHENTICATION_FAILED));
    assert!(gw.down() && !gw.up());
    assert_eq!(gw.stats().failures[3].load(Ordering::Relaxed), 1);
}

#[test]
fn eap_tls_certificate_must_name_the_ike_identity() {
    let pki = tls_pki::pki();
    let mut gw = eap_tls_gateway(&pki);
    // carol's certificate, but the IKE identity of someone else.
    let mut c = Client::connect(&mut gw, parse_identity("dave.example.org"));
    let first = c.send(&mut gw, &c.first_request(false)).unwrap();
    let identity_request = eap_of(&first).unwrap();
    let (failure, last, _) = run_eap_tls(&mut gw, &mut c, &pki.client, &pki.ca, identity_request, |_| Vec::new());
    assert_eq!(failure[0], eap::Code::Failure as u8);
    assert!(has_notify(&last, NotifyType::AUTHENTICATION_FAILED));
    assert!(gw.down() && !gw.up());
}

#[test]
fn eap_tls_message_beyond_the_bound_is_refused() {
    let pki = tls_pki::pki();
    let mut gw = eap_tls_gateway(&pki);
    let mut c = Client::connect(&mut gw, parse_identity("carol.example.org"));
    let first = c.send(&mut gw, &c.first_request(false)).unwrap();
    let id = eap_of(&first).unwrap()[1];
    let mut identity = vec![2, id, 0, 10, 1];
    identity.extend_from_slice(b"carol");
    let start = eap_of(&c.send(&mut gw, &[Payload::Eap(identity)]).unwrap()).unwrap();
    // L|M announcing 1 MiB: the gateway will not buffer it, and refuses.
    let flood = vec![2, start[1], 0, 11, 13, 0xc0, 0, 0x10, 0, 0, 0x16];
    let last = c.send(&mut gw, &[Payload::Eap(flood)]).expect("refusal");
    assert_eq!(eap_of(&last).unwrap()[0], eap::Code::Failure as u8);
    assert!(has_notify(&last, NotifyType::AUTHENTICATION_FAILED));
    assert!(gw.down());
    assert_eq!(gw.stats().failures[3].load(Ordering::Relaxed), 1);
}
