//! Virtual IPs through the configuration payload, both roles in memory: a
//! client asking for an address, a gateway leasing it from its pools.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use control::config::{
    AuthConfig, ChildConfig, ConnectionConfig, EapAuth, EapBackend, EapIdentity, IdentityMatch, IpsecMode, Lifetime,
    parse_identity,
};
use control::eap::{Credential, Method, UserStore};
use control::endpoint::{AdmissionConfig, Endpoint};
use control::ike_sa::{ChildSaInstall, Context, DownReason, Event};
use control::pool::{AddrRange, Pool, Pools, SharedPools};
use control::proposal::{parse_esp_proposals, parse_ike_proposals};
use control::ts::{parse_selector, subnet};
use control::wire::ikev2::{NotifyType, TrafficSelector};
use ironsa_crypto::AwsLcProvider;
use zeroize::Zeroizing;

const GATEWAY: &str = "192.0.2.1:500";
const PSK: &[u8] = b"a-long-random-test-secret";

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

fn conn(
    name: &str,
    local: &str,
    remote: &str,
    local_ts: Vec<TrafficSelector>,
    remote_ts: Vec<TrafficSelector>,
) -> ConnectionConfig {
    let mut c = ConnectionConfig::new(name, parse_identity(local), IdentityMatch::parse(remote), PSK);
    c.ike_proposals = parse_ike_proposals("aes256gcm16-prfsha256-x25519").expect("ike");
    c.retransmit_timeout = Duration::from_secs(1);
    c.retransmit_tries = 2;
    c.children.push(ChildConfig {
        name: format!("{name}-net"),
        esp_proposals: parse_esp_proposals("aes256gcm16").expect("esp"),
        local_ts,
        remote_ts,
        mode: IpsecMode::Tunnel,
        lifetime: Lifetime::rekey_after(Duration::from_secs(3600)),
    });
    c
}

/// The gateway: pool `rw` of `range`, DNS and a subnet, `remote_ts = dynamic`.
fn gateway(range: &str) -> (Endpoint, Arc<SharedPools>) {
    gateway_with(range, |_| {})
}

/// Users `user0`, `user1`, ... with the password [`EAP_PASSWORD`].
struct NumberedUsers;

const EAP_PASSWORD: &str = "numbered-users-password";

impl UserStore for NumberedUsers {
    fn credential(&self, identity: &[u8]) -> Option<Credential> {
        let n = identity.strip_prefix(b"user")?;
        (!n.is_empty() && n.iter().all(u8::is_ascii_digit))
            .then(|| Credential::Password(Zeroizing::new(EAP_PASSWORD.into())))
    }
}

/// [`gateway`] whose road warriors log in with EAP-MSCHAPv2 (asked for
/// their EAP identity) against [`NumberedUsers`].
fn eap_gateway(range: &str) -> (Endpoint, Arc<SharedPools>) {
    gateway_with(range, |c| {
        c.remote_auth = AuthConfig::Eap(Arc::new(EapAuth {
            backend: EapBackend::Local(vec![Method::MsChapV2]),
            eap_id: EapIdentity::Ask,
            eap_only: false,
        }))
    })
}

fn gateway_with(range: &str, edit: impl FnOnce(&mut ConnectionConfig)) -> (Endpoint, Arc<SharedPools>) {
    let mut c = conn(
        "rw",
        "gw@test",
        "*@test",
        vec![parse_selector("10.1.0.0/16").expect("ts")],
        vec![],
    );
    c.virtual_ips.pools = vec!["rw".into()];
    c.virtual_ips.dns = vec![ip("10.1.0.53"), ip("2001:db8::53")];
    c.virtual_ips.subnets = vec![(ip("10.1.0.0"), 16)];
    edit(&mut c);
    let pool = Pool::new("rw", &[AddrRange::parse(range).expect("range")]).expect("pool");
    let pools = Arc::new(SharedPools::new(Pools::new(vec![pool]).expect("pools")));
    let mut ctx = Context::new(vec![Arc::new(c)], AwsLcProvider::seeded(7).shared());
    ctx.addresses = pools.clone();
    ctx.eap_users = Some(Arc::new(NumberedUsers));
    (
        Endpoint::new(Instant::now(), ctx, AdmissionConfig::default(), 0, 0),
        pools,
    )
}

/// A road warrior `user@test` asking for an IPv4 address (`vips` = `request`).
fn client(user: &str, request: &[&str], seed: u64) -> (Endpoint, Arc<ConnectionConfig>) {
    client_with(user, request, seed, |_| {})
}

fn client_with(
    user: &str,
    request: &[&str],
    seed: u64,
    edit: impl FnOnce(&mut ConnectionConfig),
) -> (Endpoint, Arc<ConnectionConfig>) {
    let mut c = conn(
        "home",
        user,
        "gw@test",
        vec![],
        vec![parse_selector("10.1.0.0/16").expect("ts")],
    );
    c.virtual_ips.request = request.iter().map(|s| ip(s)).collect();
    edit(&mut c);
    let c = Arc::new(c);
    let ctx = Context::new(vec![c.clone()], AwsLcProvider::seeded(seed).shared());
    (Endpoint::new(Instant::now(), ctx, AdmissionConfig::default(), 0, 0), c)
}

#[derive(Default)]
struct Seen {
    up: usize,
    down: Vec<DownReason>,
    installed: Vec<ChildSaInstall>,
    failed: Vec<String>,
}

fn collect(ep: &mut Endpoint, seen: &mut Seen) {
    while let Some((_, e)) = ep.poll_event() {
        match e {
            Event::IkeSaUp { .. } => seen.up += 1,
            Event::IkeSaDown { reason, .. } => seen.down.push(reason),
            Event::ChildSaInstalled(c) => seen.installed.push(*c),
            Event::ChildSaFailed { reason, .. } => seen.failed.push(reason),
            _ => {}
        }
    }
}

/// Runs a client against the gateway until both are quiet; returns what each saw.
fn run(now: &mut Instant, c: &mut Endpoint, gw: &mut Endpoint) -> (Seen, Seen) {
    let (mut cs, mut gs) = (Seen::default(), Seen::default());
    let end = *now + Duration::from_secs(60);
    let mut in_flight = VecDeque::new();
    loop {
        while let Some(t) = c.poll_transmit() {
            in_flight.push_back((true, t));
        }
        while let Some(t) = gw.poll_transmit() {
            in_flight.push_back((false, t));
        }
        collect(c, &mut cs);
        collect(gw, &mut gs);
        if let Some((from_c, t)) = in_flight.pop_front() {
            let to = if from_c { &mut *gw } else { &mut *c };
            to.handle(*now, t.remote, t.local, &t.data);
            continue;
        }
        match [c.poll_timeout(), gw.poll_timeout()].into_iter().flatten().min() {
            Some(t) if t <= end && t <= *now + Duration::from_secs(30) => {
                *now = (*now).max(t);
                c.handle_timeout(*now);
                gw.handle_timeout(*now);
            }
            _ => return (cs, gs),
        }
    }
}

fn connect(now: &mut Instant, gw: &mut Endpoint, user: &str, request: &[&str], port: u16) -> (Endpoint, Seen, Seen) {
    connect_with(now, gw, client(user, request, u64::from(port)), port)
}

/// An EAP-MSCHAPv2 road warrior: IKE identity `ike_id`, EAP identity `user`.
fn eap_client(ike_id: &str, user: &str, password: &str, seed: u64) -> (Endpoint, Arc<ConnectionConfig>) {
    client_with(ike_id, &["0.0.0.0"], seed, |c| {
        c.local_auth = AuthConfig::EapClient(Arc::new(control::config::EapClientAuth {
            identity: user.as_bytes().to_vec(),
            password: Zeroizing::new(password.into()),
            methods: vec![Method::MsChapV2],
            tls: None,
        }))
    })
}

fn connect_with(
    now: &mut Instant,
    gw: &mut Endpoint,
    (mut c, cfg): (Endpoint, Arc<ConnectionConfig>),
    port: u16,
) -> (Endpoint, Seen, Seen) {
    let from: SocketAddr = format!("198.51.100.7:{port}").parse().expect("addr");
    c.initiate(*now, cfg, from, GATEWAY.parse().expect("addr"))
        .expect("initiate");
    let (cs, gs) = run(now, &mut c, gw);
    (c, cs, gs)
}

fn host(a: &str) -> TrafficSelector {
    let a = ip(a);
    subnet(a, if a.is_ipv4() { 32 } else { 128 })
}

#[test]
fn client_gets_a_pool_address_dns_and_selectors_narrowed_to_it() {
    let mut now = Instant::now();
    let (mut gw, pools) = gateway("10.9.0.10-10.9.0.20");
    let (c, cs, gs) = connect(&mut now, &mut gw, "alice@test", &["0.0.0.0"], 4000);
    assert_eq!((cs.up, gs.up), (1, 1), "both up: {:?} {:?}", cs.down, gs.down);
    let sa = c.sas().next().expect("client SA");
    let vips = sa.virtual_ips().expect("client virtual IPs");
    assert_eq!(vips.local, vec![ip("10.9.0.10")]);
    assert_eq!(
        vips.dns,
        vec![ip("10.1.0.53")],
        "the IPv6 DNS server is not sent to an IPv4-only client"
    );
    let gw_sa = gw.sas().next().expect("gateway SA");
    assert_eq!(
        gw_sa.virtual_ips().expect("gateway leases").remote,
        vec![ip("10.9.0.10")]
    );
    // The gateway's child: remote_ts dynamic = the leased address; the client's mirrors it.
    assert_eq!(gs.installed.len(), 1);
    assert_eq!(gs.installed[0].remote_ts, vec![host("10.9.0.10")]);
    assert_eq!(cs.installed[0].local_ts, vec![host("10.9.0.10")]);
    pools.with(|p| {
        let rw = p.get("rw").expect("pool");
        assert_eq!(rw.stats().leased, 1);
        assert_eq!(rw.holder(ip("10.9.0.10")), Some("alice@test"));
    });
}

#[test]
fn reconnect_gets_the_same_address_and_delete_releases_it() {
    let mut now = Instant::now();
    let (mut gw, pools) = gateway("10.9.0.10-10.9.0.20");
    let (mut alice, ..) = connect(&mut now, &mut gw, "alice@test", &["0.0.0.0"], 4000);
    let (_bob, ..) = connect(&mut now, &mut gw, "bob@test", &["0.0.0.0"], 4001);
    let spi = alice.sas().next().expect("SA").local_spi();
    assert!(alice.delete(now, spi));
    run(&mut now, &mut alice, &mut gw);
    pools.with(|p| assert_eq!(p.get("rw").expect("pool").stats().leased, 1, "alice's lease released"));
    let (again, _, gs) = connect(&mut now, &mut gw, "alice@test", &["0.0.0.0"], 4002);
    assert_eq!(gs.up, 1);
    let vips = again.sas().next().and_then(|s| s.virtual_ips()).expect("virtual IP");
    assert_eq!(
        vips.local,
        vec![ip("10.9.0.10")],
        "alice gets her address back, not bob's nor a new one"
    );
}

#[test]
fn exhausted_pool_refuses_with_internal_address_failure() {
    let mut now = Instant::now();
    let (mut gw, pools) = gateway("10.9.0.10/32");
    let (_alice, cs, _) = connect(&mut now, &mut gw, "alice@test", &["0.0.0.0"], 4000);
    assert_eq!(cs.up, 1);
    let (bob, cs, gs) = connect(&mut now, &mut gw, "bob@test", &["0.0.0.0"], 4001);
    // Authenticated, but no address: bob's IKE SA never comes up on his
    // side, fails with the gateway's notify, and the gateway's is deleted.
    assert_eq!((cs.up, gs.up), (0, 1));
    assert!(
        cs.installed.is_empty() && gs.installed.is_empty(),
        "no CHILD_SA for bob"
    );
    assert_eq!(
        cs.down,
        vec![DownReason::PeerError(NotifyType::INTERNAL_ADDRESS_FAILURE)]
    );
    assert_eq!(gs.down.len(), 1, "bob's IKE SA deleted at the gateway too");
    assert_eq!(bob.sas().count(), 0);
    assert_eq!(gw.sas().count(), 1, "alice stays");
    pools.with(|p| assert_eq!(p.get("rw").expect("pool").stats().leased, 1));
}

#[test]
fn a_pool_connection_requires_a_configuration_request() {
    let mut now = Instant::now();
    let (mut gw, _) = gateway("10.9.0.10-10.9.0.20");
    let (_c, cs, gs) = connect(&mut now, &mut gw, "alice@test", &[], 4000);
    assert!(cs.installed.is_empty() && gs.installed.is_empty());
    assert!(
        cs.failed
            .iter()
            .any(|f| f.contains(&NotifyType::FAILED_CP_REQUIRED.to_string())),
        "{:?}",
        cs.failed
    );
}

#[test]
fn ipv6_request_from_an_ipv4_only_gateway_is_refused() {
    let mut now = Instant::now();
    let (mut gw, _) = gateway("10.9.0.10-10.9.0.20");
    let (c, cs, gs) = connect(&mut now, &mut gw, "alice@test", &["::"], 4000);
    assert!(cs.installed.is_empty() && gs.installed.is_empty());
    assert_eq!(c.sas().count(), 0, "no address, no IKE SA");
    assert_eq!(gw.sas().count(), 0);
}

/// The initiator as an EAP client (what ikegen's EAP road warriors run):
/// the gateway's PSK AUTH, EAP-Identity and EAP-MSCHAPv2 against its local
/// users, both AUTHs over the MSK, then a pool address and the child.
#[test]
fn eap_mschapv2_client_authenticates_and_gets_a_pool_address() {
    let mut now = Instant::now();
    let (mut gw, pools) = eap_gateway("10.9.0.10-10.9.0.20");
    let (c, cs, gs) = connect_with(
        &mut now,
        &mut gw,
        eap_client("road7@test", "user7", EAP_PASSWORD, 11),
        4000,
    );
    assert_eq!((cs.up, gs.up), (1, 1), "both up: {:?} {:?}", cs.down, gs.down);
    let vips = c
        .sas()
        .next()
        .and_then(|s| s.virtual_ips())
        .expect("client virtual IPs");
    assert_eq!(vips.local, vec![ip("10.9.0.10")]);
    assert_eq!(
        (cs.installed.len(), gs.installed.len()),
        (1, 1),
        "the first CHILD_SA on both sides"
    );
    assert_eq!(cs.installed[0].local_ts, vec![host("10.9.0.10")]);
    assert_eq!(
        gw.context().eap_stats.successes[0].load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    pools.with(|p| assert_eq!(p.get("rw").expect("pool").stats().leased, 1));
}

#[test]
fn eap_client_with_a_wrong_password_is_refused_and_gets_no_address() {
    let mut now = Instant::now();
    let (mut gw, pools) = eap_gateway("10.9.0.10-10.9.0.20");
    let (_, cs, gs) = connect_with(
        &mut now,
        &mut gw,
        eap_client("road8@test", "user8", "not-the-password", 12),
        4000,
    );
    assert_eq!((cs.up, gs.up), (0, 0));
    assert!(
        matches!(cs.down.as_slice(), [DownReason::PeerError(n)] if *n == NotifyType::AUTHENTICATION_FAILED),
        "the client sees AUTHENTICATION_FAILED: {:?}",
        cs.down
    );
    assert_eq!(
        gw.context().eap_stats.failures[0].load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    pools.with(|p| assert_eq!(p.get("rw").expect("pool").stats().leased, 0));
}

/// A gateway whose final AUTH is not over the MSK (it does not know the
/// password's keys) is refused by the client.
#[test]
fn eap_client_refuses_a_gateway_with_the_wrong_psk() {
    let mut now = Instant::now();
    let (mut gw, _) = eap_gateway("10.9.0.10-10.9.0.20");
    let (_, cs, _) = connect_with(
        &mut now,
        &mut gw,
        {
            let (ep, c) = eap_client("road9@test", "user9", EAP_PASSWORD, 13);
            let mut c = (*c).clone();
            c.remote_auth = AuthConfig::Psk(Arc::new(control::crypto::auth::PresharedKey::new(
                b"a-different-gateway-secret",
            )));
            (ep, Arc::new(c))
        },
        4000,
    );
    assert_eq!(cs.up, 0);
    assert!(
        matches!(cs.down.as_slice(), [DownReason::Failed(why)] if why.contains("responder authentication failed")),
        "{:?}",
        cs.down
    );
}
