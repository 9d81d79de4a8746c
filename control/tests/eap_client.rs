//! ironsa as the EAP client of a gateway (RFC 7296 §2.16), in memory
//! against ironsa's own gateway: EAP-MSCHAPv2 and EAP-MD5 against local
//! users, a wrong password, and, with the gateway relaying EAP to a back end
//! the test plays, EAP Requests that do not fit the conversation (an
//! MSCHAPv2 Challenge of the wrong length, a Success Request or an
//! EAP-Success before the Challenge): each is counted and the attempt is
//! refused with AUTHENTICATION_FAILED, while another IKE SA of the client
//! stays up.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use control::config::{
    AuthConfig, ChildConfig, ConnectionConfig, EapAuth, EapBackend, EapClientAuth, EapIdentity, IdentityMatch,
    IpsecMode, Lifetime, parse_identity,
};
use control::eap::{Authenticator, AuthenticatorConfig, AuthenticatorStep, Credential, Method, SystemRng, UserStore};
use control::endpoint::{AdmissionConfig, Endpoint};
use control::ike_sa::eap::{EapBackendReply, EapRelay};
use control::ike_sa::{Context, DownReason, Event, Task, Transmit};
use control::proposal::{parse_esp_proposals, parse_ike_proposals};
use control::ts::parse_selector;
use ironsa_crypto::AwsLcProvider;
use zeroize::Zeroizing;

const CLIENT: &str = "192.0.2.10:500";
const GATEWAY: &str = "198.51.100.1:500";
const PSK: &[u8] = b"gateway pre-shared key for the eap client tests";

struct Users;

impl UserStore for Users {
    fn credential(&self, identity: &[u8]) -> Option<Credential> {
        (identity == b"alice").then(|| Credential::Password(Zeroizing::new("alice-secret-1".into())))
    }
}

fn child(name: &str, local: &str, remote: &str) -> ChildConfig {
    ChildConfig {
        name: name.into(),
        esp_proposals: parse_esp_proposals("aes256gcm16").unwrap(),
        local_ts: vec![parse_selector(local).unwrap()],
        remote_ts: vec![parse_selector(remote).unwrap()],
        mode: IpsecMode::Tunnel,
        lifetime: Lifetime::rekey_after(Duration::from_secs(3600)),
    }
}

fn connection(name: &str, local: &str, remote: IdentityMatch) -> ConnectionConfig {
    let mut c = ConnectionConfig::new(name, parse_identity(local), remote, PSK);
    c.ike_proposals = parse_ike_proposals("aes256gcm16-prfsha256-x25519").unwrap();
    c.retransmit_timeout = Duration::from_secs(1);
    c
}

/// The client's EAP connection (the gateway proves itself with the PSK).
fn eap_client(password: &str, method: Method) -> ConnectionConfig {
    let mut c = connection("home", "alice@road.example", IdentityMatch::Any);
    c.local_auth = AuthConfig::EapClient(Arc::new(EapClientAuth {
        identity: b"alice".to_vec(),
        password: Zeroizing::new(password.into()),
        methods: vec![method],
        tls: None,
    }));
    c.children.push(child("net", "10.1.0.0/16", "10.2.0.0/16"));
    c
}

/// The gateway's road-warrior connection with `backend`.
fn eap_gateway(backend: EapBackend) -> ConnectionConfig {
    let mut c = connection("rw", "gw.example", IdentityMatch::Any);
    c.remote_auth = AuthConfig::Eap(Arc::new(EapAuth {
        backend,
        eap_id: EapIdentity::Ask,
        eap_only: false,
    }));
    c.children.push(child("net", "10.2.0.0/16", "10.1.0.0/16"));
    c
}

/// A PSK connection between the same two, both ways.
fn psk_site(local: &str, remote: &str, ts: (&str, &str)) -> ConnectionConfig {
    let mut c = connection("site", local, IdentityMatch::Exact(parse_identity(remote)));
    c.children.push(child("site", ts.0, ts.1));
    c
}

#[derive(Default)]
struct Seen {
    up: usize,
    down: Vec<DownReason>,
    installed: usize,
    relays: Vec<EapRelay>,
}

struct Pair {
    now: Instant,
    client: Endpoint,
    gateway: Endpoint,
    client_seen: Seen,
    gateway_seen: Seen,
    /// Datagrams the client sent, in order.
    from_client: usize,
}

impl Pair {
    fn new(client: Vec<ConnectionConfig>, gateway: Vec<ConnectionConfig>) -> Self {
        let now = Instant::now();
        let ctx = |conns: Vec<ConnectionConfig>, seed| {
            let mut ctx = Context::new(
                conns.into_iter().map(Arc::new).collect(),
                AwsLcProvider::seeded(seed).shared(),
            );
            ctx.eap_users = Some(Arc::new(Users));
            ctx
        };
        Pair {
            now,
            client: Endpoint::new(now, ctx(client, 0xc11e), AdmissionConfig::default(), 0, 0),
            gateway: Endpoint::new(now, ctx(gateway, 0x6a7e), AdmissionConfig::default(), 0, 0),
            client_seen: Seen::default(),
            gateway_seen: Seen::default(),
            from_client: 0,
        }
    }

    fn initiate(&mut self, name: &str) {
        let conn = self
            .client
            .context()
            .connections
            .iter()
            .find(|c| c.name == name)
            .cloned()
            .unwrap();
        self.client
            .initiate(self.now, conn, CLIENT.parse().unwrap(), GATEWAY.parse().unwrap())
            .unwrap();
    }

    fn collect(ep: &mut Endpoint, seen: &mut Seen) {
        while let Some((_, e)) = ep.poll_event() {
            match e {
                Event::IkeSaUp { .. } => seen.up += 1,
                Event::IkeSaDown { reason, .. } => seen.down.push(reason),
                Event::ChildSaInstalled(_) => seen.installed += 1,
                Event::EapRelay(r) => seen.relays.push(*r),
                _ => {}
            }
        }
    }

    /// Moves datagrams (and time, for retransmissions) until both are quiet
    /// or the gateway waits on its back end.
    fn run(&mut self) {
        let end = self.now + Duration::from_secs(30);
        let mut in_flight: VecDeque<(bool, Transmit)> = VecDeque::new();
        loop {
            while let Some(t) = self.client.poll_transmit() {
                self.from_client += 1;
                in_flight.push_back((true, t));
            }
            while let Some(t) = self.gateway.poll_transmit() {
                in_flight.push_back((false, t));
            }
            Self::collect(&mut self.client, &mut self.client_seen);
            Self::collect(&mut self.gateway, &mut self.gateway_seen);
            if !self.gateway_seen.relays.is_empty() {
                return;
            }
            if let Some((from_client, t)) = in_flight.pop_front() {
                if t.is_nat_keepalive() {
                    continue;
                }
                let to = if from_client {
                    &mut self.gateway
                } else {
                    &mut self.client
                };
                to.handle(self.now, t.remote, t.local, &t.data);
                continue;
            }
            match [self.client.poll_timeout(), self.gateway.poll_timeout()]
                .into_iter()
                .flatten()
                .min()
            {
                Some(t) if t <= end && t <= self.now + Duration::from_secs(20) => {
                    self.now = self.now.max(t);
                    self.client.handle_timeout(self.now);
                    self.gateway.handle_timeout(self.now);
                }
                _ => return,
            }
        }
    }

    /// Answers the gateway's pending relay with `reply` and runs on.
    fn answer(&mut self, reply: EapBackendReply) {
        let relay = self.gateway_seen.relays.remove(0);
        assert!(self.gateway.eap_backend_reply(self.now, relay.spis.1, reply));
        self.run();
    }

    fn client_dropped(&self) -> u64 {
        self.client.context().eap_stats.dropped.load(Ordering::Relaxed)
    }
}

/// The gateway refused us with AUTHENTICATION_FAILED.
fn refused_by_gateway(seen: &Seen) -> bool {
    seen.down
        .iter()
        .any(|d| matches!(d, DownReason::PeerError(n) if *n == control::wire::ikev2::NotifyType::AUTHENTICATION_FAILED))
}

fn failed_with(seen: &Seen, needle: &str) -> bool {
    seen.down
        .iter()
        .any(|d| matches!(d, DownReason::Failed(why) if why.contains(needle)))
}

#[test]
fn ironsa_client_passes_eap_mschapv2_of_an_ironsa_gateway() {
    let mut p = Pair::new(
        vec![eap_client("alice-secret-1", Method::MsChapV2)],
        vec![eap_gateway(EapBackend::Local(vec![Method::MsChapV2]))],
    );
    p.initiate("home");
    p.run();
    assert_eq!(p.client_seen.up, 1, "client up: {:?}", p.client_seen.down);
    assert_eq!(p.gateway_seen.up, 1, "gateway up: {:?}", p.gateway_seen.down);
    assert_eq!((p.client_seen.installed, p.gateway_seen.installed), (1, 1));
    let sa = p.client.sas().next().unwrap();
    assert!(sa.is_established());
    assert_eq!(
        p.gateway.context().eap_stats.successes[0].load(Ordering::Relaxed),
        1,
        "the gateway counted alice's EAP-MSCHAPv2"
    );
    assert_eq!(p.client_dropped(), 0);
}

#[test]
fn ironsa_client_passes_eap_md5_without_an_msk() {
    let mut p = Pair::new(
        vec![eap_client("alice-secret-1", Method::Md5)],
        vec![eap_gateway(EapBackend::Local(vec![Method::Md5]))],
    );
    p.initiate("home");
    p.run();
    assert_eq!(
        (p.client_seen.up, p.gateway_seen.up),
        (1, 1),
        "{:?}",
        p.client_seen.down
    );
}

#[test]
fn a_wrong_password_leaves_both_sides_down_with_the_reason() {
    let mut p = Pair::new(
        vec![eap_client("not-alices", Method::MsChapV2)],
        vec![eap_gateway(EapBackend::Local(vec![Method::MsChapV2]))],
    );
    p.initiate("home");
    p.run();
    assert_eq!((p.client_seen.up, p.gateway_seen.up), (0, 0));
    assert!(refused_by_gateway(&p.client_seen), "{:?}", p.client_seen.down);
    assert!(p.client.sas().next().is_none() && p.gateway.sas().next().is_none());
}

/// An EAP-Request of `eap_type` with `data`, numbered `id`.
fn request(id: u8, eap_type: u8, data: &[u8]) -> Vec<u8> {
    let mut p = vec![1, id, 0, 0, eap_type];
    p.extend_from_slice(data);
    let len = (p.len() as u16).to_be_bytes();
    p[2..4].copy_from_slice(&len);
    p
}

/// A client with an EAP connection and an established PSK site-to-site SA
/// to the same gateway, which relays EAP to the test; runs to the first
/// relay (the client's EAP-Identity Response).
fn relayed_pair() -> Pair {
    let mut p = Pair::new(
        vec![
            eap_client("alice-secret-1", Method::MsChapV2),
            psk_site("client.example", "gw.example", ("10.5.0.0/16", "10.6.0.0/16")),
        ],
        vec![
            eap_gateway(EapBackend::Relay),
            psk_site("gw.example", "client.example", ("10.6.0.0/16", "10.5.0.0/16")),
        ],
    );
    p.initiate("site");
    p.run();
    assert_eq!(p.client_seen.up, 1, "the site SA is up");
    p.initiate("home");
    p.run();
    assert_eq!(p.gateway_seen.relays.len(), 1, "the EAP-Identity Response is relayed");
    assert_eq!(p.gateway_seen.relays[0].identity, b"alice");
    p
}

/// The attempt was refused, counted once, the gateway heard why, and the
/// site SA still answers DPD.
fn refused_without_disturbance(mut p: Pair, needle: &str) {
    assert_eq!(p.client_dropped(), 1, "one EAP packet dropped and counted");
    assert!(
        failed_with(&p.client_seen, needle),
        "{needle}: {:?}",
        p.client_seen.down
    );
    assert!(
        p.gateway_seen
            .down
            .iter()
            .any(|d| matches!(d, DownReason::Failed(why) if why.contains("AUTHENTICATION_FAILED"))),
        "the gateway heard AUTHENTICATION_FAILED: {:?}",
        p.gateway_seen.down
    );
    assert_eq!(p.client_seen.up, 1, "only the site SA ever came up");
    let sas: Vec<_> = p.client.sas().collect();
    assert_eq!(sas.len(), 1, "the EAP attempt is gone, the site SA stays");
    assert!(sas[0].is_established());
    let spi = sas[0].local_spi();
    let before = p.from_client;
    assert!(p.client.queue(p.now, spi, Task::Dpd));
    p.run();
    assert!(p.from_client > before, "the site SA sent its DPD");
    assert!(p.client.sa(spi).is_some_and(|s| s.is_established()), "and is still up");
}

/// An MS-CHAPv2 Challenge (OpCode 1, MS-CHAPv2-ID 7) with `value_size`,
/// `value` bytes of challenge and the Name "gw"; MS-Length is the body's
/// length plus `ms_length_error`.
fn challenge(value_size: u8, value: usize, ms_length_error: i32) -> Vec<u8> {
    let mut body = vec![1, 7, 0, 0, value_size];
    body.extend(std::iter::repeat_n(0x42, value));
    body.extend_from_slice(b"gw");
    let ms_len = ((body.len() as i32 + ms_length_error) as u16).to_be_bytes();
    body[2..4].copy_from_slice(&ms_len);
    body
}

#[test]
fn mschapv2_challenges_of_the_wrong_length_are_counted_and_refused() {
    for (value_size, value, ms_length_error) in [
        (8, 8, 0),    // a short challenge, consistently framed
        (0, 0, 0),    // no challenge at all
        (17, 17, 0),  // one byte too long
        (16, 10, 0),  // Value-Size beyond the bytes present
        (16, 16, 5),  // MS-Length beyond the packet
        (16, 16, -3), // MS-Length short of it
        (255, 16, 0), // Value-Size 255
    ] {
        let mut p = relayed_pair();
        p.answer(EapBackendReply::Challenge {
            eap: request(2, 26, &challenge(value_size, value, ms_length_error)),
            state: Vec::new(),
        });
        refused_without_disturbance(p, "dropped the gateway's EAP packet");
    }
    // The well-formed Challenge on the same path is answered.
    let mut p = relayed_pair();
    p.answer(EapBackendReply::Challenge {
        eap: request(2, 26, &challenge(16, 16, 0)),
        state: Vec::new(),
    });
    assert_eq!(p.client_dropped(), 0);
    assert_eq!(p.gateway_seen.relays.len(), 1, "the client answered the Challenge");
}

#[test]
fn an_mschapv2_success_request_before_the_challenge_is_counted_and_refused() {
    let mut p = relayed_pair();
    // MS-CHAPv2 Success (3) with an authenticator response nobody computed.
    let mut body = vec![3, 7, 0, 0];
    body.extend_from_slice(b"S=0123456789ABCDEF0123456789ABCDEF01234567 M=hi");
    let ms_len = (body.len() as u16).to_be_bytes();
    body[2..4].copy_from_slice(&ms_len);
    p.answer(EapBackendReply::Challenge {
        eap: request(2, 26, &body),
        state: Vec::new(),
    });
    refused_without_disturbance(p, "not expected");
}

#[test]
fn an_eap_success_before_the_gateway_proved_the_password_is_refused() {
    let mut p = relayed_pair();
    // A back end that accepts without running MSCHAPv2: the client never
    // saw the gateway prove the password, so it must not authenticate.
    p.answer(EapBackendReply::Accept {
        eap: None,
        msk: Some(Zeroizing::new([7; 64])),
        session_timeout: None,
        class: Vec::new(),
        framed_ip: None,
        framed_pool: None,
        interim_interval: None,
    });
    refused_without_disturbance(p, "mutual authentication missing");
}

#[test]
fn a_relayed_mschapv2_conversation_passes() {
    // The same relay path with a real authenticator behind it, so that the
    // refusals above are about the packets, not the path.
    let mut p = relayed_pair();
    let mut rng = SystemRng;
    let config = AuthenticatorConfig::default();
    let (mut authenticator, mut challenge) = Authenticator::start(config, Some(b"alice"), &Users, &mut rng).unwrap();
    loop {
        p.answer(EapBackendReply::Challenge {
            eap: challenge.clone(),
            state: Vec::new(),
        });
        let relay = p.gateway_seen.relays.first().expect("the client answered");
        match authenticator.handle(&relay.eap, &Users, &mut rng).unwrap() {
            AuthenticatorStep::Send(next) => challenge = next,
            AuthenticatorStep::Success { packet, msk, .. } => {
                p.answer(EapBackendReply::Accept {
                    eap: Some(packet),
                    msk,
                    session_timeout: None,
                    class: Vec::new(),
                    framed_ip: None,
                    framed_pool: None,
                    interim_interval: None,
                });
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(p.client_seen.up, 2, "{:?}", p.client_seen.down);
    assert_eq!(p.client_dropped(), 0);
}

#[path = "harness/tls_pki.rs"]
mod tls_pki;

/// The client as `identity` with `cert` over EAP-TLS, and an ironsa gateway
/// running EAP-TLS with the test PKI's server certificate.
fn eap_tls_pair(
    identity: &str,
    cert: &(
        rustls::pki_types::CertificateDer<'static>,
        rustls::pki_types::PrivateKeyDer<'static>,
    ),
    pki: &tls_pki::Pki,
) -> Pair {
    use control::eap::tls::{TlsClientSetup, TlsServerSetup, TlsVersion};
    let versions = [TlsVersion::V1_3, TlsVersion::V1_2];
    let cas = [pki.ca.to_vec()];
    let client_tls = TlsClientSetup::new(&tls_pki::credentials(cert), &cas, "radius.example.org", &versions).unwrap();
    let mut client = connection("home", identity, IdentityMatch::Any);
    client.local_auth = AuthConfig::EapClient(Arc::new(EapClientAuth {
        identity: identity.as_bytes().to_vec(),
        password: Zeroizing::new(String::new()),
        methods: Vec::new(),
        tls: Some(Arc::new(client_tls)),
    }));
    client.children.push(child("net", "10.1.0.0/16", "10.2.0.0/16"));
    let server_tls = TlsServerSetup::new(&tls_pki::credentials(&pki.server), &cas, &versions).unwrap();
    Pair::new(vec![client], vec![eap_gateway(EapBackend::Tls(Arc::new(server_tls)))])
}

#[test]
fn ironsa_client_passes_eap_tls_of_an_ironsa_gateway() {
    let pki = tls_pki::pki();
    let mut p = eap_tls_pair("carol.example.org", &pki.client, &pki);
    p.initiate("home");
    p.run();
    assert_eq!(
        (p.client_seen.up, p.gateway_seen.up),
        (1, 1),
        "{:?}",
        p.client_seen.down
    );
    assert_eq!((p.client_seen.installed, p.gateway_seen.installed), (1, 1));
    assert_eq!(p.gateway.context().eap_stats.successes[3].load(Ordering::Relaxed), 1);
}

#[test]
fn an_eap_tls_client_certificate_of_another_ca_is_refused_on_both_sides() {
    let pki = tls_pki::pki();
    let mut p = eap_tls_pair("mallory.example.org", &pki.stranger, &pki);
    p.initiate("home");
    p.run();
    assert_eq!((p.client_seen.up, p.gateway_seen.up), (0, 0));
    assert!(refused_by_gateway(&p.client_seen), "{:?}", p.client_seen.down);
    assert_eq!(p.gateway.context().eap_stats.failures[3].load(Ordering::Relaxed), 1);
}
