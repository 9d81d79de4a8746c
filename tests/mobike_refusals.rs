//! MOBIKE requests the daemon must refuse, end to end: an
//! UPDATE_SA_ADDRESSES that fails authentication, sent from a third
//! address, and a client that moved but answers the gateway's return
//! routability check with another COOKIE2. Both leave the IKE SA where it
//! was and show in `ironsa stats` and the metrics, by reason. The client is
//! the control crate's own initiator over UDP on loopback; its IKE keys
//! come from its key log, so the test can forge the wrong COOKIE2 answer.
//! Needs no root.

mod support;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use control::config::{ConnectionConfig, IdentityMatch, parse_identity};
use control::crypto::{IkeSaKeys, IkeSuite, SkCipher};
use control::endpoint::{AdmissionConfig, Endpoint};
use control::ike_sa::{Context, IkeKeyLog};
use control::proposal::parse_ike_proposals;
use control::wire::ikev2::{self, ExchangeType, Header, NotifyType, Payload, PayloadType};

use serde_json::{Value, json};
use support::Ironsa;
use support::util::free_udp_port_pair;

const PSK: &str = "Zq8#kP2!vR9@wX4$yT7&uN1*eB5^-mobike";
const T: Duration = Duration::from_secs(10);
const CLIENT: &str = "127.0.0.1";
const MOVED: &str = "127.0.0.2";
const ATTACKER: &str = "127.0.0.3";

fn gateway(ports: (u16, u16), metrics: u16) -> String {
    format!(
        r#"
[daemon]
listen = ["127.0.0.1"]
ike_port = {}
nat_port = {}
shards = 1
control_socket = "SOCKET"
metrics = "127.0.0.1:{metrics}"

[[connection]]
name = "rw"
remote_addrs = ["%any"]
local_id = "gw@test"
remote_id = "*@test"
psk = "{PSK}"
ike_proposals = "aes256gcm16-prfsha256-x25519"
"#,
        ports.0, ports.1
    )
}

/// The suite and the keys of both directions (SK_ei, SK_er) of an IKE SA.
type SkKeys = (IkeSuite, Vec<u8>, Vec<u8>);

/// The client's IKE keys, as its key log hands them over.
#[derive(Default)]
struct Keys(Mutex<Option<SkKeys>>);

impl IkeKeyLog for Keys {
    fn ike_sa_keys(&self, _spis: (u64, u64), suite: &IkeSuite, keys: &IkeSaKeys) {
        *self.0.lock().unwrap() = Some((*suite, keys.sk_ei.to_vec(), keys.sk_er.to_vec()));
    }
}

/// The control crate's initiator with one UDP socket per loopback address
/// it uses, all on the same port.
struct Client {
    ep: Endpoint,
    sockets: HashMap<IpAddr, UdpSocket>,
    port: u16,
    keys: Arc<Keys>,
}

impl Client {
    fn new(gw: SocketAddr, gw_nat_port: u16) -> Self {
        let first = UdpSocket::bind((CLIENT, 0)).unwrap();
        let port = first.local_addr().unwrap().port();
        let mut sockets = HashMap::new();
        sockets.insert(MOVED.parse().unwrap(), UdpSocket::bind((MOVED, port)).unwrap());
        sockets.insert(CLIENT.parse().unwrap(), first);
        for s in sockets.values() {
            s.set_nonblocking(true).unwrap();
        }
        let keys = Arc::new(Keys::default());
        let mut ctx = Context::new(vec![], ironsa_crypto::AwsLcProvider::new().shared());
        ctx.local_nat_port = port;
        ctx.remote_nat_port = gw_nat_port;
        ctx.key_log = Some(keys.clone());
        let mut c = ConnectionConfig::new(
            "mobile",
            parse_identity("mobile@test"),
            IdentityMatch::Exact(parse_identity("gw@test")),
            PSK.as_bytes(),
        );
        c.ike_proposals = parse_ike_proposals("aes256gcm16-prfsha256-x25519").unwrap();
        let now = Instant::now();
        let mut ep = Endpoint::new(now, ctx, AdmissionConfig::default(), 0, 0);
        ep.initiate(now, Arc::new(c), SocketAddr::new(CLIENT.parse().unwrap(), port), gw)
            .unwrap();
        Self {
            ep,
            sockets,
            port,
            keys,
        }
    }

    /// Sends what the endpoint has to send (behind the non-ESP marker).
    fn send(&mut self) {
        while let Some(t) = self.ep.poll_transmit() {
            let mut d = vec![0u8; 4];
            d.extend_from_slice(&t.data);
            self.sockets[&t.local.ip()].send_to(&d, t.remote).unwrap();
        }
    }

    /// The next IKE message to any of our addresses within `limit`, marker
    /// stripped, with the address it came to.
    fn recv(&self, limit: Duration) -> Option<(SocketAddr, SocketAddr, Vec<u8>)> {
        let deadline = Instant::now() + limit;
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            for (ip, s) in &self.sockets {
                if let Ok((n, from)) = s.recv_from(&mut buf) {
                    if n > 4 && buf[..4] == [0; 4] {
                        return Some((SocketAddr::new(*ip, self.port), from, buf[4..n].to_vec()));
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    }

    /// Runs the endpoint against the gateway until `done` holds.
    fn run_until(&mut self, what: &str, done: impl Fn(&Endpoint) -> bool) {
        let deadline = Instant::now() + T;
        loop {
            self.send();
            if done(&self.ep) {
                return;
            }
            assert!(Instant::now() < deadline, "client: no {what} within {T:?}");
            if let Some((local, from, data)) = self.recv(Duration::from_millis(50)) {
                self.ep.handle(Instant::now(), local, from, &data);
            }
            self.ep.handle_timeout(Instant::now());
        }
    }

    fn spi(&self) -> u64 {
        self.ep.sas().next().map(|sa| sa.local_spi()).expect("an IKE SA")
    }
}

/// `ironsa stats` drops of `reason`, summed over shards.
fn drops(gw: &Ironsa, reason: &str) -> u64 {
    let stats = gw.call(json!({"cmd": "stats"}));
    stats["shards"]
        .as_array()
        .map(|s| s.iter().map(|s| s["drops"][reason].as_u64().unwrap_or(0)).sum())
        .unwrap_or(0)
}

fn wait_drops(gw: &Ironsa, reason: &str, at_least: u64) -> u64 {
    let deadline = Instant::now() + T;
    loop {
        let n = drops(gw, reason);
        if n >= at_least || Instant::now() > deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn remote_of_only_sa(gw: &Ironsa) -> Value {
    let sas = gw.sas();
    assert_eq!(sas.len(), 1, "one IKE SA: {sas:#?}");
    sas[0]["remote"].clone()
}

#[test]
fn forged_updates_and_wrong_cookie2_answers_are_refused_and_counted() {
    let ports = free_udp_port_pair().unwrap();
    let metrics = free_udp_port_pair().unwrap().0;
    let gw = Ironsa::start(&gateway(ports, metrics), None);
    let target: SocketAddr = format!("127.0.0.1:{}", ports.0).parse().unwrap();
    let mut client = Client::new(target, ports.1);
    client.run_until("IKE SA", |ep| ep.sas().any(|sa| sa.is_established()));
    gw.wait_sas(T, |s| s.len() == 1 && s[0]["state"] == "ESTABLISHED");
    let home = remote_of_only_sa(&gw);
    assert!(
        home.as_str().is_some_and(|r| r.starts_with(&format!("{CLIENT}:"))),
        "{home}"
    );
    let spi = client.spi();
    let sa_mobike = client.ep.sas().next().is_some_and(|sa| sa.mobike());
    assert!(sa_mobike, "MOBIKE negotiated");

    // 1. An UPDATE_SA_ADDRESSES whose ICV does not verify, from a third address.
    let moved = SocketAddr::new(MOVED.parse().unwrap(), client.port);
    assert!(client.ep.update_local_address(Instant::now(), moved, spi));
    let update = client.ep.poll_transmit().expect("UPDATE_SA_ADDRESSES");
    let mut forged = vec![0u8; 4];
    forged.extend_from_slice(&update.data);
    let last = forged.len() - 1;
    forged[last] ^= 0x55;
    let attacker = UdpSocket::bind((ATTACKER, 0)).unwrap();
    attacker.send_to(&forged, update.remote).unwrap();
    assert_eq!(wait_drops(&gw, "unauthenticated", 1), 1, "the forged update is counted");
    assert_eq!(remote_of_only_sa(&gw), home, "a forged update moves nothing");

    // 2. The real update from the new address; the gateway checks that we
    //    are there (COOKIE2) and we answer with another cookie.
    let mut d = vec![0u8; 4];
    d.extend_from_slice(&update.data);
    client.sockets[&moved.ip()].send_to(&d, update.remote).unwrap();
    let (suite, sk_ei, sk_er) = client.keys.0.lock().unwrap().clone().expect("client IKE keys logged");
    let provider = ironsa_crypto::AwsLcProvider::new().shared();
    let from_gw = SkCipher::new(suite.encr, suite.integ, &sk_er, &[], &provider).unwrap();
    let to_gw = SkCipher::new(suite.encr, suite.integ, &sk_ei, &[], &provider).unwrap();
    let deadline = Instant::now() + T;
    let (check, cookie) = loop {
        assert!(Instant::now() < deadline, "no COOKIE2 check from the gateway");
        let Some((local, from, data)) = client.recv(Duration::from_millis(100)) else {
            continue;
        };
        let msg = ikev2::decode_message(&data).unwrap();
        if msg.header.is_response() {
            // The answer to our update: the endpoint takes it.
            client.ep.handle(Instant::now(), local, from, &data);
            continue;
        }
        let inner = ikev2::sk::open_message(&data, &from_gw).unwrap();
        let cookie = inner.iter().find_map(|p| match p {
            Payload::Notify(n) if n.ty == NotifyType::COOKIE2 => Some(n.data.clone()),
            _ => None,
        });
        assert_eq!(local.ip(), moved.ip(), "the check goes to the new address");
        break (msg.header, cookie.expect("the gateway's INFORMATIONAL carries COOKIE2"));
    };
    let mut wrong = cookie.clone();
    wrong[0] ^= 1;
    let answer = Header {
        spi_i: check.spi_i,
        spi_r: check.spi_r,
        next_payload: PayloadType::NONE,
        major_version: 2,
        minor_version: 0,
        exchange: ExchangeType::INFORMATIONAL,
        flags: ikev2::FLAG_INITIATOR | ikev2::FLAG_RESPONSE,
        message_id: check.message_id,
        length: 0,
    };
    let sealed = ikev2::sk::seal_message(
        &answer,
        &[control::ike_sa::notify_payload(NotifyType::COOKIE2, wrong)],
        &to_gw,
    )
    .unwrap();
    let mut d = vec![0u8; 4];
    d.extend_from_slice(&sealed);
    client.sockets[&moved.ip()].send_to(&d, target).unwrap();
    assert_eq!(wait_drops(&gw, "mobike_refused", 1), 1, "the wrong COOKIE2 is counted");
    assert!(
        gw.log().contains("does not echo our COOKIE2"),
        "the refusal is logged with its reason"
    );
    assert!(
        !gw.log().contains("return routability verified"),
        "CHILD_SAs stay where they were"
    );
    let metrics_text = support::util::http_get(metrics, "/metrics");
    for reason in ["unauthenticated", "mobike_refused"] {
        assert!(
            metrics_text
                .lines()
                .any(|l| l.starts_with("ironsa_ike_dropped_total") && l.contains(reason) && l.ends_with(" 1")),
            "metrics count {reason}: {metrics_text}"
        );
    }
}
