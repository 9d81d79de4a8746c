//! The IKEv2 responder fuzz harness, shared by the `ikev2_responder`
//! cargo-fuzz target (fuzz/fuzz_targets/ikev2_responder.rs) and by
//! control/tests/fuzz_regressions.rs, which runs it over a deterministic
//! corpus so CI exercises it without cargo-fuzz.
//!
//! A responder [`Endpoint`] holds an "anchor" IKE SA with a real initiator
//! [`Endpoint`]. Each input is delivered to the responder in one of eight
//! ways (byte 0, low three bits, see [`Mode`]): raw datagrams, datagrams aimed
//! at the anchor's SPIs, or, to get past the integrity check, messages of a
//! scripted initiator that ran a real IKE_SA_INIT with the responder and now
//! seals the fuzz bytes with the real SK keys (as the IKE_AUTH request, as SKF
//! fragments, or as requests on an SA it established). After every input the
//! harness deletes every SA but the anchor, lets timers run, and checks:
//! nothing but the anchor is left (no leaked or stuck SA), the anchor is still
//! established with the same SPIs and child, no event touched it, and a DPD
//! exchange in each direction still works on it. Any violation panics.
//!
//! Input layout: `[mode | flags << 3, param, body...]`; flags are
//! [`F_FIX`], [`F_CBC`], [`F_ALT_SRC`], [`F_V6`], [`F_NAT`].

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use control::config::{ChildConfig, ConnectionConfig, IdentityMatch, IpsecMode, Lifetime, parse_identity};
use control::crypto::auth::{psk_auth, signed_octets};
use control::crypto::keys::derive_ike_sa_keys;
use control::crypto::{CryptoProvider, IkeSuite, KeGroup, KeyExchange, SkCipher};
use control::endpoint::{AdmissionConfig, Endpoint};
use control::ike_sa::{Context, Event, Task, Transmit};
use control::nat::nat_detection_hash;
use control::proposal::{accept_ike_response, parse_esp_proposals, parse_ike_proposals};
use control::ts::parse_selector;
use control::wire::ikev2::{
    AuthMethod, ExchangeType, FLAG_INITIATOR, Header, Identification, Notify, NotifyType, Payload, PayloadType,
    ProtocolId, SkProtect, decode_message, decode_payloads, encode_message, encode_payloads,
};
use ironsa_crypto::AwsLcProvider;

/// Flag: structured modes recompute a correct AUTH; raw modes fix the length field.
pub const F_FIX: u8 = 0x08;
/// Flag: the scripted initiator negotiates AES-CBC + HMAC instead of AES-GCM.
pub const F_CBC: u8 = 0x10;
/// Flag: send from the alternative source (the anchor's address in raw
/// modes, the "site" connection's address for the scripted initiator).
pub const F_ALT_SRC: u8 = 0x20;
/// Flag: the scripted initiator uses IPv6.
pub const F_V6: u8 = 0x40;
/// Flag: the scripted initiator claims a NAT (wrong NAT-D hash) and moves to port 4500.
pub const F_NAT: u8 = 0x80;

/// How an input is delivered (byte 0, low three bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// 0: the body as a datagram from a new peer.
    Raw = 0,
    /// 1: the body with the anchor SA's SPIs patched in, from the anchor's address.
    RawAnchor = 1,
    /// 2: after a real IKE_SA_INIT, the body sealed as IKE_AUTH inner bytes
    /// (first type = param); with [`F_FIX`], sealed as an IKE_INTERMEDIATE
    /// request instead, followed by a valid IKE_AUTH chain (whose AUTH then
    /// lacks the IntAuth binding).
    AuthRaw = 2,
    /// 3: like 2, but the body is decoded as a payload chain and, with
    /// [`F_FIX`], its AUTH is replaced by the correct one.
    AuthStructured = 3,
    /// 4: on an SA the scripted initiator established, one request: exchange
    /// chosen by param, body = first inner type + inner bytes.
    EstablishedRaw = 4,
    /// 5: on an established SA, a sequence of requests: chunks of
    /// `[exchange selector, first type, len, bytes...]`.
    EstablishedSequence = 5,
    /// 6: after IKE_SA_INIT, IKE_AUTH as SKF fragments: chunks of
    /// `[number, total, len, bytes...]` (first type = param).
    AuthFragments = 6,
    /// 7: like 3, then the same datagram again (retransmission) and from
    /// another port (address change).
    AuthReplay = 7,
}

impl Mode {
    fn from_byte(b: u8) -> Mode {
        match b & 7 {
            0 => Mode::Raw,
            1 => Mode::RawAnchor,
            2 => Mode::AuthRaw,
            3 => Mode::AuthStructured,
            4 => Mode::EstablishedRaw,
            5 => Mode::EstablishedSequence,
            6 => Mode::AuthFragments,
            _ => Mode::AuthReplay,
        }
    }
}

/// PSK of the road-warrior connection (any identity).
pub const RW_PSK: &[u8] = b"fuzz road-warrior pre-shared key";
/// PSK of the site connection (one identity, one address).
pub const SITE_PSK: &[u8] = b"fuzz site-to-site pre-shared key";
/// The site connection's peer identity.
pub const SITE_ID: &str = "site@fuzz.example";
/// The identity the scripted initiator uses by default.
pub const PEER_ID: &str = "peer@fuzz.example";
/// The responder's identity.
pub const GATEWAY_ID: &str = "gw.fuzz.example";

const IKE_GCM: &str = "aes256gcm16-prfsha256-x25519";
const IKE_CBC: &str = "aes128-sha256-x25519";
const ESP: &str = "aes256gcm16, aes128-sha256, aes256gcm16-x25519, aes256gcm16-x25519-ke1_mlkem768";

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("harness address")
}

const GATEWAY_V4: &str = "192.0.2.1:500";
const GATEWAY_V6: &str = "[2001:db8::1]:500";
const ANCHOR: &str = "192.0.2.200:500";
const PEER_V4: &str = "198.51.100.7:500";
const SITE_V4: &str = "198.51.100.9:500";
const PEER_V6: &str = "[2001:db8:1::7]:500";
const SITE_V6: &str = "[2001:db8:1::9]:500";

fn no_rekey() -> Lifetime {
    Lifetime {
        rekey: Duration::ZERO,
        jitter: Duration::ZERO,
        over: Duration::ZERO,
    }
}

fn child(name: &str, local: &[&str], remote: &[&str], esp: &str) -> ChildConfig {
    ChildConfig {
        name: name.into(),
        esp_proposals: parse_esp_proposals(esp).expect("harness ESP proposals"),
        local_ts: local
            .iter()
            .map(|s| parse_selector(s).expect("harness selector"))
            .collect(),
        remote_ts: remote
            .iter()
            .map(|s| parse_selector(s).expect("harness selector"))
            .collect(),
        mode: IpsecMode::Tunnel,
        lifetime: no_rekey(),
    }
}

fn tune(c: &mut ConnectionConfig) {
    c.ike_lifetime = no_rekey();
    c.retransmit_timeout = Duration::from_secs(1);
    c.retransmit_tries = 2;
}

/// The responder's connections: "site" (one peer address and identity) first, then "rw" (anyone).
fn responder_connections() -> Vec<Arc<ConnectionConfig>> {
    let mut site = ConnectionConfig::new(
        "site",
        parse_identity(GATEWAY_ID),
        IdentityMatch::Exact(parse_identity(SITE_ID)),
        SITE_PSK,
    );
    site.remote_addrs = Some(vec![addr(SITE_V4).ip(), addr(SITE_V6).ip()]);
    site.ike_proposals = parse_ike_proposals(&format!("{IKE_GCM}, {IKE_CBC}")).expect("harness IKE proposals");
    site.children
        .push(child("site-net", &["10.2.0.0/16"], &["10.9.0.0/16"], ESP));
    tune(&mut site);
    let mut rw = ConnectionConfig::new("rw", parse_identity(GATEWAY_ID), IdentityMatch::Any, RW_PSK);
    rw.ike_proposals = parse_ike_proposals(&format!("{IKE_GCM}, {IKE_CBC}")).expect("harness IKE proposals");
    rw.children.push(child(
        "rw-net",
        &["10.2.0.0/16", "2001:db8:2::/48"],
        &["0.0.0.0/0", "::/0"],
        ESP,
    ));
    tune(&mut rw);
    vec![Arc::new(site), Arc::new(rw)]
}

/// The anchor's initiator connection.
fn anchor_connection() -> Arc<ConnectionConfig> {
    let mut a = ConnectionConfig::new(
        "anchor",
        parse_identity("anchor@fuzz.example"),
        IdentityMatch::Exact(parse_identity(GATEWAY_ID)),
        RW_PSK,
    );
    a.ike_proposals = parse_ike_proposals(IKE_GCM).expect("harness IKE proposals");
    a.children
        .push(child("anchor-net", &["10.1.0.0/24"], &["10.2.0.0/24"], "aes256gcm16"));
    tune(&mut a);
    Arc::new(a)
}

/// The ID payload body AUTH covers: type, three reserved bytes, data.
fn id_body(id: &Identification) -> Vec<u8> {
    let mut v = vec![id.id_type.0, 0, 0, 0];
    v.extend_from_slice(&id.data);
    v
}

fn random_bytes(crypto: &dyn CryptoProvider, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    crypto.fill_random(&mut v).expect("RNG");
    v
}

fn nonzero_spi(crypto: &dyn CryptoProvider) -> u64 {
    loop {
        let v = control::crypto::random_u64(crypto).expect("RNG");
        if v != 0 {
            return v;
        }
    }
}

/// The 28-byte IKE header.
fn header_bytes(
    spi_i: u64,
    spi_r: u64,
    next: PayloadType,
    exchange: ExchangeType,
    flags: u8,
    mid: u32,
    len: usize,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&spi_i.to_be_bytes());
    out.extend_from_slice(&spi_r.to_be_bytes());
    out.extend_from_slice(&[next.0, 0x20, exchange.0, flags]);
    out.extend_from_slice(&mid.to_be_bytes());
    out.extend_from_slice(&(len as u32).to_be_bytes());
    out
}

/// A scripted initiator's IKE_SA_INIT (x25519, NAT detection,
/// fragmentation): the request to deliver, then [`InitiatorInit::finish`]
/// with the responder's answer for the keys. Shared with the tests that
/// drive a responder by hand (control/tests/eap_ike.rs).
pub struct InitiatorInit {
    /// The IKE_SA_INIT request.
    pub request: Vec<u8>,
    proposal: Vec<control::proposal::IkeProposal>,
    ke: KeyExchange,
    ni: Vec<u8>,
    spi_i: u64,
}

/// What IKE_SA_INIT gave the initiator.
pub struct InitiatorKeys {
    pub spi_i: u64,
    pub spi_r: u64,
    pub suite: IkeSuite,
    pub keys: control::crypto::keys::IkeSaKeys,
    /// SK_ei/SK_ai and SK_er/SK_ar as ciphers.
    pub outbound: SkCipher,
    pub inbound: SkCipher,
    pub request: Vec<u8>,
    pub response: Vec<u8>,
    pub ni: Vec<u8>,
    pub nr: Vec<u8>,
}

impl InitiatorInit {
    /// The request from `local` to `remote` offering `ike`; `src_hash`
    /// replaces the NAT_DETECTION_SOURCE_IP hash (to fake a NAT).
    pub fn new(
        crypto: &Arc<dyn CryptoProvider>,
        local: SocketAddr,
        remote: SocketAddr,
        ike: &str,
        src_hash: Option<Vec<u8>>,
    ) -> Self {
        let proposal = parse_ike_proposals(ike).expect("harness IKE proposal");
        let ke = KeyExchange::generate(&**crypto, KeGroup::Curve25519).expect("x25519 keygen");
        let ni = random_bytes(&**crypto, 32);
        let spi_i = nonzero_spi(&**crypto);
        let src_hash = src_hash.unwrap_or_else(|| nat_detection_hash(spi_i, 0, local).to_vec());
        let payloads = vec![
            Payload::Sa(vec![proposal[0].to_wire(1, &[])]),
            Payload::Ke {
                group: KeGroup::Curve25519.number(),
                data: ke.public_value().to_vec(),
            },
            Payload::Nonce(ni.clone()),
            Payload::Notify(Notify {
                protocol: ProtocolId::NONE,
                spi: Vec::new(),
                ty: NotifyType::NAT_DETECTION_SOURCE_IP,
                data: src_hash,
            }),
            Payload::Notify(Notify {
                protocol: ProtocolId::NONE,
                spi: Vec::new(),
                ty: NotifyType::NAT_DETECTION_DESTINATION_IP,
                data: nat_detection_hash(spi_i, 0, remote).to_vec(),
            }),
            Payload::Notify(Notify {
                protocol: ProtocolId::NONE,
                spi: Vec::new(),
                ty: NotifyType::IKEV2_FRAGMENTATION_SUPPORTED,
                data: Vec::new(),
            }),
            Payload::Notify(Notify {
                protocol: ProtocolId::NONE,
                spi: Vec::new(),
                ty: NotifyType::INTERMEDIATE_EXCHANGE_SUPPORTED,
                data: Vec::new(),
            }),
        ];
        let header = Header {
            spi_i,
            spi_r: 0,
            next_payload: PayloadType::NONE,
            major_version: 2,
            minor_version: 0,
            exchange: ExchangeType::IKE_SA_INIT,
            flags: FLAG_INITIATOR,
            message_id: 0,
            length: 0,
        };
        let request = encode_message(&header, &payloads);
        InitiatorInit {
            request,
            proposal,
            ke,
            ni,
            spi_i,
        }
    }

    /// The keys, from the responder's IKE_SA_INIT response (None when it
    /// is not an acceptable one).
    pub fn finish(self, crypto: &Arc<dyn CryptoProvider>, response: &[u8]) -> Option<InitiatorKeys> {
        let msg = decode_message(response).ok()?;
        let (mut ker, mut nr, mut chosen) = (None, None, None);
        for p in &msg.payloads {
            match p {
                Payload::Ke { data, .. } => ker = Some(data.clone()),
                Payload::Nonce(n) => nr = Some(n.clone()),
                Payload::Sa(props) => chosen = props.first().cloned(),
                _ => {}
            }
        }
        let (ker, nr, chosen) = (ker?, nr?, chosen?);
        let suite = accept_ike_response(&self.proposal, &chosen).ok()?.suite;
        let spi_r = msg.header.spi_r;
        let shared = self.ke.finish(&ker).ok()?;
        let keys = derive_ike_sa_keys(&suite, &shared, &self.ni, &nr, self.spi_i, spi_r);
        let outbound = SkCipher::new(suite.encr, suite.integ, &keys.sk_ei, &keys.sk_ai, crypto).ok()?;
        let inbound = SkCipher::new(suite.encr, suite.integ, &keys.sk_er, &keys.sk_ar, crypto).ok()?;
        Some(InitiatorKeys {
            spi_i: self.spi_i,
            spi_r,
            suite,
            keys,
            outbound,
            inbound,
            request: self.request,
            response: response.to_vec(),
            ni: self.ni,
            nr,
        })
    }
}

/// A scripted initiator that completed IKE_SA_INIT with the responder and
/// holds the real keys, so it can seal anything.
struct ScriptedPeer {
    local: SocketAddr,
    remote: SocketAddr,
    spi_i: u64,
    spi_r: u64,
    suite: IkeSuite,
    outbound: SkCipher,
    inbound: SkCipher,
    sk_pi: Vec<u8>,
    init_request: Vec<u8>,
    nr: Vec<u8>,
    next_mid: u32,
}

impl ScriptedPeer {
    /// Seals `plain` (an encoded inner chain, or any bytes) in one SK
    /// payload whose next-payload field is `first`.
    fn seal(&self, exchange: ExchangeType, mid: u32, first: PayloadType, plain: &[u8]) -> Vec<u8> {
        self.seal_with(exchange, mid, first, None, plain)
    }

    fn seal_with(
        &self,
        exchange: ExchangeType,
        mid: u32,
        first: PayloadType,
        fragment: Option<(u16, u16)>,
        plain: &[u8],
    ) -> Vec<u8> {
        let sk: &dyn SkProtect = &self.outbound;
        let block = sk.block_len().max(1);
        let padding = (block - (plain.len() + 1) % block) % block;
        let fields = if fragment.is_some() { 4 } else { 0 };
        let payload_len = 4 + fields + sk.iv_len() + plain.len() + padding + 1 + sk.icv_len();
        let total = 28 + payload_len;
        let outer = if fragment.is_some() {
            PayloadType::SKF
        } else {
            PayloadType::SK
        };
        let mut out = header_bytes(self.spi_i, self.spi_r, outer, exchange, FLAG_INITIATOR, mid, total);
        out.extend_from_slice(&[first.0, 0]);
        out.extend_from_slice(&(payload_len.min(0xffff) as u16).to_be_bytes());
        if let Some((number, count)) = fragment {
            out.extend_from_slice(&number.to_be_bytes());
            out.extend_from_slice(&count.to_be_bytes());
        }
        let aad_len = out.len();
        out.resize(aad_len + sk.iv_len(), 0);
        out.extend_from_slice(plain);
        out.resize(out.len() + padding, 0);
        out.push(padding as u8);
        out.resize(out.len() + sk.icv_len(), 0);
        let (aad, rest) = out.split_at_mut(aad_len);
        let (iv, rest) = rest.split_at_mut(sk.iv_len());
        let data_len = rest.len() - sk.icv_len();
        let (data, icv) = rest.split_at_mut(data_len);
        sk.seal(aad, iv, data, icv).expect("harness seal");
        out
    }

    /// The correct shared-key AUTH for `idi` with `psk`.
    fn auth_for(&self, idi: &Identification, psk: &[u8]) -> Vec<u8> {
        let octets = signed_octets(&self.init_request, &self.nr, self.suite.prf, &self.sk_pi, &id_body(idi));
        psk_auth(self.suite.prf, psk, &octets)
    }

    /// Replaces the data of the first AUTH payload with the value that
    /// verifies for the chain's first IDi (PSK chosen by identity).
    fn fix_auth(&self, payloads: &mut [Payload]) {
        let Some(idi) = payloads.iter().find_map(|p| match p {
            Payload::IdI(id) => Some(id.clone()),
            _ => None,
        }) else {
            return;
        };
        let psk = if idi == parse_identity(SITE_ID) {
            SITE_PSK
        } else {
            RW_PSK
        };
        let good = self.auth_for(&idi, psk);
        if let Some(Payload::Auth { data, .. }) = payloads.iter_mut().find(|p| matches!(p, Payload::Auth { .. })) {
            *data = good;
        }
    }
}

/// A valid IKE_AUTH request chain for the scripted initiator (AUTH left empty; fix it with [`F_FIX`]).
pub fn ike_auth_chain(identity: &str) -> Vec<Payload> {
    let esp = parse_esp_proposals("aes256gcm16, aes128-sha256").expect("harness ESP proposals");
    vec![
        Payload::IdI(parse_identity(identity)),
        Payload::Notify(Notify {
            protocol: ProtocolId::NONE,
            spi: Vec::new(),
            ty: NotifyType::INITIAL_CONTACT,
            data: Vec::new(),
        }),
        Payload::IdR(parse_identity(GATEWAY_ID)),
        Payload::Auth {
            method: AuthMethod::SHARED_KEY_MIC,
            data: vec![0; 32],
        },
        Payload::Sa(
            esp.iter()
                .enumerate()
                .map(|(i, p)| p.to_wire((i + 1) as u8, 0x1000_0001 + i as u32))
                .collect(),
        ),
        Payload::TsI(vec![parse_selector("10.9.1.0/24").expect("selector")]),
        Payload::TsR(vec![parse_selector("10.2.0.0/16").expect("selector")]),
    ]
}

/// Encodes a chain as `[first type, bytes...]`, the body layout of the structured modes.
pub fn encode_chain(payloads: &[Payload]) -> Vec<u8> {
    let mut body = Vec::new();
    let first = encode_payloads(payloads, &mut body);
    let mut out = vec![first.0];
    out.extend_from_slice(&body);
    out
}

/// What one input did (lets tests check that seeds reach deep states).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunReport {
    /// The scripted initiator completed IKE_SA_INIT.
    pub init_done: bool,
    /// IKE SAs other than the anchor that the responder reported up.
    pub victims_up: usize,
    /// CHILD_SAs the responder installed for other SAs.
    pub children_installed: usize,
    /// Datagrams the responder sent to peers other than the anchor.
    pub responses: usize,
}

/// The harness: a responder, the anchor pair, and virtual time.
pub struct ResponderHarness {
    now: Instant,
    /// The crypto of both endpoints and of the scripted initiator.
    crypto: Arc<dyn CryptoProvider>,
    responder: Endpoint,
    initiator: Endpoint,
    anchor_i: u64,
    anchor_r: u64,
    anchor_spis: (u64, u64),
    anchor_child: (u32, u32),
    report: RunReport,
    /// Datagrams the responder sent towards the scripted initiator.
    to_peer: Vec<Transmit>,
}

impl Default for ResponderHarness {
    fn default() -> Self {
        Self::new()
    }
}

impl ResponderHarness {
    /// A responder with the anchor SA established.
    pub fn new() -> Self {
        let now = Instant::now();
        // Seeded: an input replays the same datagrams every time.
        let crypto = AwsLcProvider::seeded(0x6b65_7973).shared();
        let responder = Endpoint::new(
            now,
            Context::new(responder_connections(), crypto.clone()),
            AdmissionConfig::default(),
            0,
            0,
        );
        let initiator = Endpoint::new(
            now,
            Context::new(vec![anchor_connection()], crypto.clone()),
            AdmissionConfig::default(),
            0,
            0,
        );
        let mut h = ResponderHarness {
            now,
            crypto,
            responder,
            initiator,
            anchor_i: 0,
            anchor_r: 0,
            anchor_spis: (0, 0),
            anchor_child: (0, 0),
            report: RunReport::default(),
            to_peer: Vec::new(),
        };
        h.anchor_i = h
            .initiator
            .initiate(now, anchor_connection(), addr(ANCHOR), addr(GATEWAY_V4))
            .expect("anchor initiate");
        h.pump();
        let sa = h.initiator.sa(h.anchor_i).expect("anchor initiator SA");
        assert!(sa.is_established(), "anchor SA did not establish");
        h.anchor_spis = sa.spis();
        h.anchor_r = h.anchor_spis.1;
        let rsa = h.responder.sa(h.anchor_r).expect("anchor responder SA");
        assert!(rsa.is_established());
        let c = rsa.children().first().expect("anchor child");
        h.anchor_child = (c.spi_in, c.spi_out);
        while h.responder.poll_event().is_some() {}
        while h.initiator.poll_event().is_some() {}
        h
    }

    /// Checks the responder's events: nothing may touch the anchor.
    fn check_events(&mut self) {
        while let Some((spi, e)) = self.responder.poll_event() {
            match e {
                Event::IkeSaUp { .. } if spi != self.anchor_r => self.report.victims_up += 1,
                Event::ChildSaInstalled(_) if spi != self.anchor_r => self.report.children_installed += 1,
                _ => {}
            }
            if spi == self.anchor_r {
                panic!("fuzz input produced an event on the anchor IKE SA: {e:?}");
            }
            if let Event::ChildSaDeleted { spi_in, .. } = e {
                assert_ne!(spi_in, self.anchor_child.0, "fuzz input deleted the anchor's CHILD_SA");
            }
            if let Event::IkeSaDown { spis, .. } = e {
                assert_ne!(spis, self.anchor_spis, "fuzz input took the anchor IKE SA down");
            }
        }
        while self.initiator.poll_event().is_some() {}
    }

    /// Moves datagrams between the responder and the anchor's initiator until
    /// both are quiet; datagrams for other peers go to `to_peer`.
    fn pump(&mut self) {
        for _ in 0..64 {
            let mut moved = false;
            while let Some(t) = self.responder.poll_transmit() {
                moved = true;
                if t.remote == addr(ANCHOR) {
                    self.initiator.handle(self.now, t.remote, t.local, &t.data);
                } else {
                    self.report.responses += 1;
                    self.to_peer.push(t);
                }
            }
            while let Some(t) = self.initiator.poll_transmit() {
                moved = true;
                self.responder.handle(self.now, t.remote, t.local, &t.data);
            }
            if !moved {
                return;
            }
        }
        panic!("responder and anchor initiator keep exchanging datagrams");
    }

    fn deliver(&mut self, from: SocketAddr, to: SocketAddr, datagram: &[u8]) {
        self.responder.handle(self.now, to, from, datagram);
        self.pump();
    }

    /// Runs a real IKE_SA_INIT as a scripted initiator.
    fn scripted_init(&mut self, flags: u8) -> Option<ScriptedPeer> {
        let v6 = flags & F_V6 != 0;
        let site = flags & F_ALT_SRC != 0;
        let local = addr(match (v6, site) {
            (false, false) => PEER_V4,
            (false, true) => SITE_V4,
            (true, false) => PEER_V6,
            (true, true) => SITE_V6,
        });
        let remote = addr(if v6 { GATEWAY_V6 } else { GATEWAY_V4 });
        let ike = if flags & F_CBC != 0 { IKE_CBC } else { IKE_GCM };
        let src_hash = (flags & F_NAT != 0).then(|| vec![0x55; 20]);
        let init = InitiatorInit::new(&self.crypto, local, remote, ike, src_hash);
        self.to_peer.clear();
        self.deliver(local, remote, &init.request);
        let response = self.to_peer.iter().find(|t| t.remote == local)?.data.clone();
        let done = init.finish(&self.crypto, &response)?;
        let (spi_i, spi_r, suite, nr, request) = (done.spi_i, done.spi_r, done.suite, done.nr, done.request);
        let (outbound, inbound) = (done.outbound, done.inbound);
        let keys = done.keys;
        let (mut local, mut remote) = (local, remote);
        if flags & F_NAT != 0 {
            local.set_port(4500);
            remote.set_port(4500);
        }
        self.report.init_done = true;
        Some(ScriptedPeer {
            local,
            remote,
            spi_i,
            spi_r,
            suite,
            outbound,
            inbound,
            sk_pi: keys.sk_pi.to_vec(),
            init_request: request,
            nr,
            next_mid: 1,
        })
    }

    /// A scripted initiator with a fully established IKE SA (valid IKE_AUTH).
    fn scripted_established(&mut self, flags: u8) -> Option<ScriptedPeer> {
        let mut peer = self.scripted_init(flags)?;
        let identity = if flags & F_ALT_SRC != 0 { SITE_ID } else { PEER_ID };
        let mut chain = ike_auth_chain(identity);
        peer.fix_auth(&mut chain);
        let body = encode_chain(&chain);
        let datagram = peer.seal(ExchangeType::IKE_AUTH, 1, PayloadType(body[0]), &body[1..]);
        let before = self.report.victims_up;
        self.deliver(peer.local, peer.remote, &datagram);
        self.check_events();
        peer.next_mid = 2;
        (self.report.victims_up > before).then_some(peer)
    }

    /// Seals a structured body (`[first, chain...]`): decoded and AUTH-fixed
    /// when it decodes and `fix` is set, else sealed as it is.
    fn structured(&self, peer: &ScriptedPeer, exchange: ExchangeType, mid: u32, body: &[u8], fix: bool) -> Vec<u8> {
        let Some((&first, rest)) = body.split_first() else {
            return peer.seal(exchange, mid, PayloadType::NONE, &[]);
        };
        if fix {
            if let Ok(mut payloads) = decode_payloads(PayloadType(first), rest) {
                peer.fix_auth(&mut payloads);
                let mut plain = Vec::new();
                let first = encode_payloads(&payloads, &mut plain);
                return peer.seal(exchange, mid, first, &plain);
            }
        }
        peer.seal(exchange, mid, PayloadType(first), rest)
    }

    /// Runs one fuzz input, then cleans up and checks every invariant
    /// (panics on a violation).
    pub fn run(&mut self, input: &[u8]) -> RunReport {
        self.report = RunReport::default();
        self.to_peer.clear();
        if let Some((&b0, rest)) = input.split_first() {
            let (param, body) = match rest.split_first() {
                Some((&p, b)) => (p, b),
                None => (0, &[][..]),
            };
            self.dispatch(Mode::from_byte(b0), b0 & 0xf8, param, body);
        }
        self.check_events();
        self.cleanup();
        self.check_anchor();
        self.report.clone()
    }

    fn dispatch(&mut self, mode: Mode, flags: u8, param: u8, body: &[u8]) {
        match mode {
            Mode::Raw => {
                let from = if flags & F_ALT_SRC != 0 {
                    addr(ANCHOR)
                } else {
                    addr(PEER_V4)
                };
                let mut d = vec![param];
                d.extend_from_slice(body);
                self.deliver(from, addr(GATEWAY_V4), &d);
            }
            Mode::RawAnchor => {
                let mut d = vec![param];
                d.extend_from_slice(body);
                if d.len() >= 16 {
                    d[..8].copy_from_slice(&self.anchor_spis.0.to_be_bytes());
                    d[8..16].copy_from_slice(&self.anchor_spis.1.to_be_bytes());
                }
                if flags & F_FIX != 0 && d.len() >= 28 {
                    let len = d.len() as u32;
                    d[24..28].copy_from_slice(&len.to_be_bytes());
                }
                let from = if flags & F_ALT_SRC != 0 {
                    addr(PEER_V4)
                } else {
                    addr(ANCHOR)
                };
                self.deliver(from, addr(GATEWAY_V4), &d);
            }
            Mode::AuthRaw if flags & F_FIX != 0 => {
                if let Some(peer) = self.scripted_init(flags) {
                    let d = peer.seal(ExchangeType::IKE_INTERMEDIATE, 1, PayloadType(param), body);
                    self.deliver(peer.local, peer.remote, &d);
                    let identity = if flags & F_ALT_SRC != 0 { SITE_ID } else { PEER_ID };
                    let mut chain = ike_auth_chain(identity);
                    peer.fix_auth(&mut chain);
                    let body = encode_chain(&chain);
                    let d = peer.seal(ExchangeType::IKE_AUTH, 2, PayloadType(body[0]), &body[1..]);
                    self.deliver(peer.local, peer.remote, &d);
                }
            }
            Mode::AuthRaw => {
                if let Some(peer) = self.scripted_init(flags) {
                    let d = peer.seal(ExchangeType::IKE_AUTH, 1, PayloadType(param), body);
                    self.deliver(peer.local, peer.remote, &d);
                }
            }
            Mode::AuthStructured | Mode::AuthReplay => {
                if let Some(peer) = self.scripted_init(flags) {
                    let mid = if param & 0x80 != 0 { u32::from(param & 0x7f) } else { 1 };
                    let d = self.structured(&peer, ExchangeType::IKE_AUTH, mid, body, flags & F_FIX != 0);
                    self.deliver(peer.local, peer.remote, &d);
                    if mode == Mode::AuthReplay {
                        self.deliver(peer.local, peer.remote, &d);
                        let mut moved = peer.local;
                        moved.set_port(moved.port().wrapping_add(1000));
                        self.deliver(moved, peer.remote, &d);
                        if param & 1 != 0 {
                            // A second, different request in the same window.
                            let again = self.structured(&peer, ExchangeType::IKE_AUTH, mid, body, false);
                            self.deliver(peer.local, peer.remote, &again);
                        }
                    }
                }
            }
            Mode::EstablishedRaw => {
                if let Some(peer) = self.scripted_established(flags) {
                    let exchange = exchange_for(param);
                    let (first, inner) = body.split_first().map_or((0, &[][..]), |(f, r)| (*f, r));
                    let d = peer.seal(exchange, peer.next_mid, PayloadType(first), inner);
                    self.deliver(peer.local, peer.remote, &d);
                }
            }
            Mode::EstablishedSequence => {
                if let Some(mut peer) = self.scripted_established(flags) {
                    let mut rest = body;
                    let mut sent = 0;
                    while rest.len() >= 3 && sent < 8 {
                        let (sel, first, len) = (rest[0], rest[1], usize::from(rest[2]));
                        let take = len.min(rest.len() - 3);
                        let chunk = &rest[3..3 + take];
                        rest = &rest[3 + take..];
                        let exchange = exchange_for(sel);
                        // Selector bit 7 reuses the previous message ID (retransmission / window checks).
                        let mid = if sel & 0x80 != 0 {
                            peer.next_mid.saturating_sub(1)
                        } else {
                            peer.next_mid
                        };
                        let mut b = vec![first];
                        b.extend_from_slice(chunk);
                        let d = self.structured(&peer, exchange, mid, &b, false);
                        self.deliver(peer.local, peer.remote, &d);
                        peer.next_mid = mid.wrapping_add(1);
                        sent += 1;
                    }
                }
            }
            Mode::AuthFragments => {
                if let Some(peer) = self.scripted_init(flags) {
                    let mut rest = body;
                    let mut sent = 0;
                    while rest.len() >= 3 && sent < 16 {
                        let (number, total, len) = (u16::from(rest[0]), u16::from(rest[1]), usize::from(rest[2]));
                        let take = len.min(rest.len() - 3);
                        let chunk = &rest[3..3 + take];
                        rest = &rest[3 + take..];
                        let first = if number == 1 {
                            PayloadType(param)
                        } else {
                            PayloadType::NONE
                        };
                        let d = peer.seal_with(ExchangeType::IKE_AUTH, 1, first, Some((number, total)), chunk);
                        self.deliver(peer.local, peer.remote, &d);
                        sent += 1;
                    }
                }
            }
        }
    }

    /// Deletes every SA but the anchor and runs timers until they are gone.
    fn cleanup(&mut self) {
        for _ in 0..8 {
            let others: Vec<u64> = self
                .responder
                .sas()
                .map(|s| s.local_spi())
                .filter(|&s| s != self.anchor_r)
                .collect();
            if others.is_empty() && self.responder.half_open() == 0 {
                break;
            }
            for spi in others {
                self.responder.delete(self.now, spi);
            }
            self.pump();
            self.now += Duration::from_secs(130);
            self.responder.handle_timeout(self.now);
            self.initiator.handle_timeout(self.now);
            self.pump();
            self.check_events();
        }
        self.to_peer.clear();
        let left: Vec<String> = self
            .responder
            .sas()
            .filter(|s| s.local_spi() != self.anchor_r)
            .map(|s| {
                format!(
                    "{:016x}/{:016x} established={} closed={}",
                    s.spis().0,
                    s.spis().1,
                    s.is_established(),
                    s.is_closed()
                )
            })
            .collect();
        assert!(left.is_empty(), "SAs survive deletion and timeouts: {left:?}");
        assert_eq!(self.responder.half_open(), 0, "half-open count did not return to zero");
    }

    /// The anchor must be untouched and still work in both directions.
    fn check_anchor(&mut self) {
        let r = self
            .responder
            .sa(self.anchor_r)
            .expect("anchor SA vanished from the responder");
        assert!(r.is_established(), "anchor SA no longer established on the responder");
        assert_eq!(r.spis(), self.anchor_spis);
        assert_eq!(r.children().len(), 1, "anchor child count changed");
        assert_eq!((r.children()[0].spi_in, r.children()[0].spi_out), self.anchor_child);
        let i = self
            .initiator
            .sa(self.anchor_i)
            .expect("anchor SA vanished from the initiator");
        assert!(i.is_established(), "anchor SA no longer established on the initiator");
        for responder_side in [false, true] {
            if responder_side {
                self.responder.queue(self.now, self.anchor_r, Task::Dpd);
            } else {
                self.initiator.queue(self.now, self.anchor_i, Task::Dpd);
            }
            self.pump();
            let (ep, spi) = if responder_side {
                (&self.responder, self.anchor_r)
            } else {
                (&self.initiator, self.anchor_i)
            };
            let sa = ep.sa(spi).expect("anchor SA gone after DPD");
            assert!(sa.is_established(), "anchor SA down after DPD");
            // No retransmission pending: the only deadline left, if any, is the
            // expiry of the cached last response, minutes away.
            let next = sa.poll_timeout();
            assert!(
                next.is_none_or(|t| t >= self.now + control::ike_sa::RESPONSE_CACHE_TTL - Duration::from_secs(60)),
                "DPD on the anchor got no answer (responder side: {responder_side}): next deadline {next:?}"
            );
        }
        self.check_events();
    }

    /// After a real IKE_SA_INIT that announced IKE_INTERMEDIATE support,
    /// sends `inner` as the first IKE_INTERMEDIATE request and returns the
    /// responder's decrypted answer (None if there is none).
    pub fn intermediate_answer(&mut self, inner: &[Payload]) -> Option<Vec<Payload>> {
        let peer = self.scripted_init(0)?;
        let mut plain = Vec::new();
        let first = encode_payloads(inner, &mut plain);
        let d = peer.seal(ExchangeType::IKE_INTERMEDIATE, 1, first, &plain);
        self.to_peer.clear();
        self.deliver(peer.local, peer.remote, &d);
        let answer = self.to_peer.iter().find(|t| t.remote == peer.local)?.data.clone();
        let payloads = control::wire::ikev2::open_message(&answer, &peer.inbound).ok();
        self.cleanup();
        payloads
    }

    /// Deletes the anchor SA through its real initiator: the next [`ResponderHarness::run`]
    /// must panic (proves the checks can fail).
    pub fn delete_anchor_for_test(&mut self) {
        self.initiator.delete(self.now, self.anchor_i);
        self.pump();
    }

    /// Real inputs for every mode: the fuzz corpus seeds and the bases of the
    /// regression corpus. Each is the intended "happy" input of its mode.
    pub fn seed_inputs(&self) -> Vec<Vec<u8>> {
        let mut seeds = Vec::new();
        // Mode 0: a real IKE_SA_INIT request.
        let ke = KeyExchange::generate(&*self.crypto, KeGroup::Curve25519).expect("x25519");
        let spi_i = 0x1122_3344_5566_7788;
        let proposal = parse_ike_proposals(IKE_GCM).expect("proposal");
        let init = encode_message(
            &Header {
                spi_i,
                spi_r: 0,
                next_payload: PayloadType::NONE,
                major_version: 2,
                minor_version: 0,
                exchange: ExchangeType::IKE_SA_INIT,
                flags: FLAG_INITIATOR,
                message_id: 0,
                length: 0,
            },
            &[
                Payload::Sa(vec![proposal[0].to_wire(1, &[])]),
                Payload::Ke {
                    group: 31,
                    data: ke.public_value().to_vec(),
                },
                Payload::Nonce(vec![0x42; 32]),
                Payload::Notify(Notify {
                    protocol: ProtocolId::NONE,
                    spi: Vec::new(),
                    ty: NotifyType::NAT_DETECTION_SOURCE_IP,
                    data: nat_detection_hash(spi_i, 0, addr(PEER_V4)).to_vec(),
                }),
                Payload::Notify(Notify {
                    protocol: ProtocolId::NONE,
                    spi: Vec::new(),
                    ty: NotifyType::NAT_DETECTION_DESTINATION_IP,
                    data: nat_detection_hash(spi_i, 0, addr(GATEWAY_V4)).to_vec(),
                }),
            ],
        );
        seeds.push([&[Mode::Raw as u8][..], &init].concat());
        // Mode 1: an INFORMATIONAL-looking message on the anchor's SPIs (the SK body cannot verify).
        let mut info = header_bytes(
            0,
            0,
            PayloadType::SK,
            ExchangeType::INFORMATIONAL,
            FLAG_INITIATOR,
            7,
            28 + 4 + 8 + 16 + 1,
        );
        info.extend_from_slice(&[0, 0, 0, 29]);
        info.extend_from_slice(&[0; 25]);
        seeds.push([&[Mode::RawAnchor as u8 | F_FIX][..], &info].concat());
        let auth = encode_chain(&ike_auth_chain(PEER_ID));
        let site_auth = encode_chain(&ike_auth_chain(SITE_ID));
        // Mode 2: the IKE_AUTH plaintext as raw inner bytes (AUTH wrong).
        seeds.push([&[Mode::AuthRaw as u8][..], &auth].concat());
        // Mode 3: the IKE_AUTH chain with AUTH fixed: establishes, GCM and CBC, v4 and v6, NAT.
        for flags in [F_FIX, F_FIX | F_CBC, F_FIX | F_V6, F_FIX | F_NAT] {
            seeds.push([&[Mode::AuthStructured as u8 | flags, 0][..], &auth].concat());
        }
        seeds.push([&[Mode::AuthStructured as u8 | F_FIX | F_ALT_SRC, 0][..], &site_auth].concat());
        // Mode 4: on an established SA, a CREATE_CHILD_SA with PFS and a DELETE of the IKE SA.
        let esp = parse_esp_proposals("aes256gcm16-x25519").expect("proposal");
        let pfs = KeyExchange::generate(&*self.crypto, KeGroup::Curve25519).expect("x25519");
        let create_child = encode_chain(&[
            Payload::Sa(vec![esp[0].to_wire(1, 0x2000_0001)]),
            Payload::Nonce(vec![0x17; 32]),
            Payload::Ke {
                group: 31,
                data: pfs.public_value().to_vec(),
            },
            Payload::TsI(vec![parse_selector("10.9.2.0/24").expect("selector")]),
            Payload::TsR(vec![parse_selector("10.2.3.0/24").expect("selector")]),
        ]);
        seeds.push([&[Mode::EstablishedRaw as u8, 0][..], &create_child].concat());
        let ike_rekey = encode_chain(&[
            Payload::Sa(vec![proposal[0].to_wire(1, &0x0102_0304_0506_0708u64.to_be_bytes())]),
            Payload::Nonce(vec![0x18; 32]),
            Payload::Ke {
                group: 31,
                data: pfs.public_value().to_vec(),
            },
        ]);
        seeds.push([&[Mode::EstablishedRaw as u8, 0][..], &ike_rekey].concat());
        let delete_ike = encode_chain(&[Payload::Delete(control::wire::ikev2::Delete {
            protocol: ProtocolId::IKE,
            spi_size: 0,
            spis: Vec::new(),
        })]);
        seeds.push([&[Mode::EstablishedRaw as u8, 1][..], &delete_ike].concat());
        // Mode 5: a sequence: CREATE_CHILD_SA, an empty INFORMATIONAL, then a retransmission.
        let mut seq = vec![Mode::EstablishedSequence as u8, 0];
        for (sel, chunk) in [(0u8, &create_child), (1, &vec![0u8]), (0x81, &vec![0u8])] {
            seq.push(sel);
            seq.push(chunk[0]);
            seq.push((chunk.len() - 1).min(255) as u8);
            seq.extend_from_slice(&chunk[1..chunk.len().min(256)]);
        }
        seeds.push(seq);
        // Mode 6: the IKE_AUTH plaintext in three fragments (AUTH wrong: fragments cannot be fixed).
        let mut frags = vec![Mode::AuthFragments as u8, auth[0]];
        let inner = &auth[1..];
        let third = inner.len().div_ceil(3);
        for (i, part) in inner.chunks(third).enumerate() {
            frags.extend_from_slice(&[(i + 1) as u8, 3, part.len() as u8]);
            frags.extend_from_slice(part);
        }
        seeds.push(frags);
        // Mode 7: a valid IKE_AUTH, replayed and moved.
        seeds.push([&[Mode::AuthReplay as u8 | F_FIX, 1][..], &auth].concat());
        // Mode 2 with F_FIX: IKE_INTERMEDIATE before IKE_AUTH, empty, with a
        // notify, and with a KE payload nobody negotiated (RFC 9242, 9370).
        seeds.push(vec![Mode::AuthRaw as u8 | F_FIX, 0]);
        let intermediate_notify = encode_chain(&[Payload::Notify(Notify {
            protocol: ProtocolId::NONE,
            spi: Vec::new(),
            ty: NotifyType::ADDITIONAL_KEY_EXCHANGE,
            data: vec![0x33; 16],
        })]);
        seeds.push([&[Mode::AuthRaw as u8 | F_FIX][..], &intermediate_notify].concat());
        let mlkem = KeyExchange::generate(&*self.crypto, KeGroup::MlKem768).expect("ML-KEM-768");
        let mlkem_share = Payload::Ke {
            group: KeGroup::MlKem768.number(),
            data: mlkem.public_value().to_vec(),
        };
        let intermediate_ke = encode_chain(std::slice::from_ref(&mlkem_share));
        seeds.push([&[Mode::AuthRaw as u8 | F_FIX][..], &intermediate_ke].concat());
        // Mode 5: a CREATE_CHILD_SA with ADDKE1 (ML-KEM-768), then
        // IKE_FOLLOWUP_KE with a wrong link, then one with no link at all.
        let pq_esp = parse_esp_proposals("aes256gcm16-x25519-ke1_mlkem768").expect("proposal");
        let pq_child = encode_chain(&[
            Payload::Sa(vec![pq_esp[0].to_wire(1, 0x2000_0002)]),
            Payload::Nonce(vec![0x19; 32]),
            Payload::Ke {
                group: 31,
                data: pfs.public_value().to_vec(),
            },
            Payload::TsI(vec![parse_selector("10.9.2.0/24").expect("selector")]),
            Payload::TsR(vec![parse_selector("10.2.3.0/24").expect("selector")]),
        ]);
        seeds.push([&[Mode::EstablishedRaw as u8, 0][..], &pq_child].concat());
        let followup = encode_chain(&[
            Payload::Notify(Notify {
                protocol: ProtocolId::NONE,
                spi: Vec::new(),
                ty: NotifyType::ADDITIONAL_KEY_EXCHANGE,
                data: vec![0x44; 32],
            }),
            mlkem_share.clone(),
        ]);
        let mut seq = vec![Mode::EstablishedSequence as u8, 0];
        for (sel, chunk) in [(0u8, &pq_child), (44, &followup), (44, &intermediate_ke)] {
            // Chunks longer than 255 bytes are cut: the fuzzer mutates these.
            seq.push(sel);
            seq.push(chunk[0]);
            seq.push((chunk.len() - 1).min(255) as u8);
            seq.extend_from_slice(&chunk[1..chunk.len().min(256)]);
        }
        seeds.push(seq);
        let d = [&[Mode::EstablishedRaw as u8, 44][..], &followup].concat();
        seeds.push(d);
        seeds
    }
}

/// Exchange type chosen by a selector byte: mostly the valid ones.
fn exchange_for(sel: u8) -> ExchangeType {
    match sel & 0x7f {
        0 => ExchangeType::CREATE_CHILD_SA,
        1 => ExchangeType::INFORMATIONAL,
        2 => ExchangeType::IKE_AUTH,
        3 => ExchangeType::IKE_SA_INIT,
        4 => ExchangeType::IKE_INTERMEDIATE,
        n if n < 16 => ExchangeType::CREATE_CHILD_SA,
        n => ExchangeType(n),
    }
}

/// Deterministic mutations of real inputs, for the regression corpus.
pub struct Mutator(u64);

impl Mutator {
    /// A mutator with a fixed seed.
    pub fn new(seed: u64) -> Self {
        Mutator(seed | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// One to four mutations of `base`: bit flips, interesting bytes,
    /// truncation, deletion, duplication, random insertion, flag changes.
    pub fn mutate(&mut self, base: &[u8]) -> Vec<u8> {
        let mut v = base.to_vec();
        let rounds = 1 + self.below(4);
        for _ in 0..rounds {
            if v.len() < 3 {
                v.push(self.next() as u8);
                continue;
            }
            // Mostly leave the mode byte and parameter alone.
            let pos = 2 + self.below(v.len() - 2);
            match self.below(9) {
                0 | 1 => v[pos] ^= 1 << self.below(8),
                2 => v[pos] = [0x00, 0x01, 0x7f, 0x80, 0xff, 0x20, 0x21][self.below(7)],
                3 => v.truncate(pos),
                4 => {
                    let end = (pos + 1 + self.below(16)).min(v.len());
                    v.drain(pos..end);
                }
                5 => {
                    let end = (pos + 1 + self.below(16)).min(v.len());
                    let dup: Vec<u8> = v[pos..end].to_vec();
                    v.splice(pos..pos, dup);
                }
                6 => {
                    let n = 1 + self.below(8);
                    let ins: Vec<u8> = (0..n).map(|_| self.next() as u8).collect();
                    v.splice(pos..pos, ins);
                }
                7 => v[0] ^= 0xf8 & (self.next() as u8),
                _ => v[1] = self.next() as u8,
            }
        }
        v
    }
}
