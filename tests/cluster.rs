//! Clustering against a real three-member etcd cluster started by the tests
//! (loopback, its own ports and data directories): node liveness by leases,
//! adoption of a dead node's SPI range by exactly one survivor, sealed SA
//! records, and what member and quorum loss do to a node.

mod support;

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use ironsa::cluster::store::{SaRecords, StoreEvent, StoreHandle};
use ironsa::cluster::{ClusterConfig, NodeId, SHARD_BITS};
use support::etcd::Etcd;
use support::{Need, skip_unless};
use zeroize::Zeroizing;

fn needs() -> bool {
    skip_unless(&[Need::Tool("etcd"), Need::Tool("etcdctl")])
}

fn config(node: NodeId, etcd: &Etcd, name: &str, cluster_key: u8) -> ClusterConfig {
    ClusterConfig {
        node,
        store: etcd.endpoints(),
        name: name.to_string(),
        link: format!("127.0.0.1:{}", 45_000 + u16::from(node)).parse().unwrap(),
        link_key: Zeroizing::new(vec![0x11; 32]),
        cluster_key: Zeroizing::new(vec![cluster_key; 32]),
        lease: Duration::from_secs(2),
        checkpoint_interval: Duration::from_millis(200),
        key_files: Default::default(),
        address: None,
        redirect_margin: None,
    }
}

struct Node {
    store: StoreHandle,
    events: Receiver<StoreEvent>,
}

fn node(id: NodeId, etcd: &Etcd, name: &str) -> Node {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("ironsa=debug")
        .try_init();
    let (tx, events) = channel();
    let tx = std::sync::Mutex::new(tx);
    let store = StoreHandle::start(
        &config(id, etcd, name, 0x22),
        ironsa_crypto::AwsLcProvider::new().shared(),
        Arc::new(AtomicUsize::new(0)),
        Box::new(move |e| {
            let _ = tx.lock().unwrap().send(e);
        }),
    )
    .expect("store thread starts");
    Node { store, events }
}

/// An IKE SPI of shard 0 carrying node id `range`.
fn spi(range: NodeId, n: u64) -> u64 {
    (u64::from(range) << (64 - SHARD_BITS - ironsa::cluster::NODE_BITS)) | n
}

fn next_event(n: &Node, within: Duration) -> Option<StoreEvent> {
    n.events.recv_timeout(within).ok()
}

fn wait(what: &str, within: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !ok() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn adopted(e: Option<StoreEvent>) -> (NodeId, Option<NodeId>, SaRecords) {
    match e {
        Some(StoreEvent::Adopted { range, from, records }) => (range, from, records),
        other => panic!("expected an adoption, got {other:?}"),
    }
}

#[test]
fn a_dead_nodes_range_goes_to_exactly_one_survivor_and_comes_back() {
    if needs() {
        return;
    }
    let etcd = Etcd::start(3);
    let name = "adopt";
    let nodes: Vec<Node> = (1..=3).map(|id| node(id, &etcd, name)).collect();
    for (n, id) in nodes.iter().zip(1..) {
        assert_eq!(adopted(next_event(n, Duration::from_secs(10))), (id, None, vec![]));
    }
    // Node 1 checkpoints five SAs and forgets one.
    for i in 0..5 {
        nodes[0].store.checkpoint(spi(1, i), format!("state-{i}").into_bytes());
    }
    nodes[0].store.forget(spi(1, 4));
    wait("records written", Duration::from_secs(5), || {
        let s = nodes[0].store.status();
        s.pending == 0 && s.records_written >= 5
    });
    let keys = etcd.keys(&format!("/{name}/sa/01/"));
    assert_eq!(keys.len(), 4, "{keys:?}");
    let sealed = etcd.value(&keys[0]);
    assert!(!sealed.windows(5).any(|w| w == b"state"), "records are sealed at rest");
    assert_eq!(nodes[1].store.status().nodes.len(), 3, "{:?}", nodes[1].store.status());

    // Node 1 leaves: exactly one survivor adopts range 1, with its records.
    let mut nodes = nodes.into_iter();
    let first = nodes.next().unwrap();
    first.store.shutdown();
    let survivors: Vec<Node> = nodes.collect();
    let started = Instant::now();
    let mut winner = None;
    while winner.is_none() && started.elapsed() < Duration::from_secs(8) {
        for (i, n) in survivors.iter().enumerate() {
            if let Ok(e) = n.events.try_recv() {
                let (range, from, mut records) = adopted(Some(e));
                assert_eq!((range, from), (1, Some(1)));
                records.sort();
                let want: Vec<(u64, Vec<u8>)> =
                    (0..4).map(|i| (spi(1, i), format!("state-{i}").into_bytes())).collect();
                assert_eq!(records, want);
                winner = Some(i);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let winner = winner.expect("a survivor adopted range 1 within 8 s");
    let loser = 1 - winner;
    assert!(
        next_event(&survivors[loser], Duration::from_secs(2)).is_none(),
        "only one node adopts"
    );
    let adopter_id = winner as NodeId + 2;
    wait("the other survivor sees the new owner", Duration::from_secs(3), || {
        survivors[loser].store.view().forward_to(1).map(|(n, _)| n) == Some(adopter_id)
    });

    // Node 1 comes back: it takes its range (and the SAs) back, and the adopter lets go.
    let back = node(1, &etcd, name);
    let (range, from, records) = adopted(next_event(&back, Duration::from_secs(10)));
    assert_eq!((range, from, records.len()), (1, Some(adopter_id), 4));
    match next_event(&survivors[winner], Duration::from_secs(5)) {
        Some(StoreEvent::Lost { range: 1, to: 1 }) => {}
        other => panic!("the adopter must give range 1 up, got {other:?}"),
    }
    back.store.shutdown();
    for n in &survivors {
        n.store.shutdown();
    }
}

#[test]
fn member_loss_changes_nothing_and_quorum_loss_holds_updates_until_it_returns() {
    if needs() {
        return;
    }
    let mut etcd = Etcd::start(3);
    let n = node(5, &etcd, "quorum");
    adopted(next_event(&n, Duration::from_secs(10)));
    etcd.kill(0);
    n.store.checkpoint(spi(5, 1), b"one".to_vec());
    wait("written with a member down", Duration::from_secs(8), || {
        let s = n.store.status();
        assert!(s.connected, "one member lost must not cut the node off: {s:?}");
        s.records_written >= 1 && s.pending == 0
    });
    // Quorum lost: the node says so (new tunnels are refused) and keeps the update.
    etcd.kill(1);
    wait("the store is seen unreachable", Duration::from_secs(8), || {
        !n.store.view().connected()
    });
    n.store.checkpoint(spi(5, 2), b"two".to_vec());
    wait("the update waits", Duration::from_secs(3), || {
        n.store.status().pending == 1
    });
    assert!(next_event(&n, Duration::from_millis(100)).is_none());
    etcd.restart(0);
    etcd.restart(1);
    etcd.wait_healthy(Duration::from_secs(20));
    wait("reconnected and written", Duration::from_secs(20), || {
        let s = n.store.status();
        s.connected && s.pending == 0 && s.records_written >= 2
    });
    assert_eq!(etcd.keys("/quorum/sa/05/").len(), 2);
    n.store.shutdown();
}

/// Writes a 0600 key file of 32 bytes `byte` as hex.
fn key_file(dir: &std::path::Path, name: &str, byte: u8) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(&p, format!("{byte:02x}").repeat(32)).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

const PSK: &str = "Zq8#kP2!vR9@wX4$yT7&uN1*cluster";

/// A gateway node: IKE only, on the shared `port` (SO_REUSEPORT spreads
/// clients over the nodes as ECMP would), clustered as node `node`.
fn gateway_config(node: NodeId, port: u16, etcd: &Etcd, keys: &std::path::Path, link: u16) -> String {
    let store: Vec<String> = etcd.endpoints().iter().map(|e| format!("\"{e}\"")).collect();
    format!(
        r#"
[daemon]
listen = ["127.0.0.1", "127.0.1.{node}"]
ike_port = {port}
nat_port = {nat}
shards = 1
control_socket = "SOCKET"

[cluster]
node = {node}
store = [{store}]
name = "failover"
link = "127.0.0.1:{link}"
link_key = "{link_key}"
cluster_key = "{cluster_key}"
lease = "2s"
checkpoint_interval = "1s"

[[connection]]
name = "rw"
remote_addrs = ["%any"]
local_id = "gw@cluster.test"
remote_id = "client@cluster.test"
psk = "{PSK}"
ike_proposals = "aes256gcm16-prfsha256-x25519"

[[connection.child]]
name = "net"
local_ts = ["10.1.0.0/16"]
remote_ts = ["10.9.0.0/24"]
esp_proposals = "aes256gcm16"
"#,
        nat = port + 1,
        store = store.join(", "),
        link_key = keys.join("link.key").display(),
        cluster_key = keys.join("cluster.key").display(),
    )
}

fn client_config(port: u16, gateway_port: u16) -> String {
    format!(
        r#"
[daemon]
listen = ["127.0.0.1"]
ike_port = {port}
nat_port = {nat}
shards = 1
control_socket = "SOCKET"

[[connection]]
name = "gw"
remote_addrs = ["127.0.0.1"]
remote_port = {gateway_port}
remote_nat_port = {gateway_nat}
local_id = "client@cluster.test"
remote_id = "gw@cluster.test"
psk = "{PSK}"
ike_proposals = "aes256gcm16-prfsha256-x25519"
dpd_delay = "1s"

[[connection.child]]
name = "net"
local_ts = ["10.9.0.0/24"]
remote_ts = ["10.1.0.0/16"]
esp_proposals = "aes256gcm16"
"#,
        nat = port + 1,
        gateway_nat = gateway_port + 1,
    )
}

/// Counter `key` of an ironsa's shards, summed.
fn shard_counter(node: &support::Ironsa, key: &str) -> u64 {
    node.call(serde_json::json!({"cmd": "stats"}))["shards"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| s[key].as_u64().unwrap_or(0))
        .sum()
}

#[test]
fn a_killed_nodes_ike_sa_continues_on_the_survivor_without_a_new_ike_sa_init() {
    if needs() {
        return;
    }
    let etcd = Etcd::start(3);
    let keys = tempfile::tempdir().unwrap();
    key_file(keys.path(), "link.key", 0x31);
    key_file(keys.path(), "cluster.key", 0x32);
    let (port, _) = support::util::free_udp_port_pair().unwrap();
    let (client_port, _) = support::util::free_udp_port_pair().unwrap();
    let (link1, _) = support::util::free_udp_port_pair().unwrap();
    let mut gateways: Vec<Option<support::Ironsa>> = [(1, link1), (2, link1 + 1)]
        .into_iter()
        .map(|(n, link)| {
            Some(support::Ironsa::start(
                &gateway_config(n, port, &etcd, keys.path(), link),
                None,
            ))
        })
        .collect();
    let client = support::Ironsa::start(&client_config(client_port, port), None);
    client.call(serde_json::json!({"cmd": "initiate", "connection": "gw", "timeout": 10}));
    let spi_i = client.sas()[0]["spi_i"].clone();
    let owner = (0..2)
        .find(|i| gateways[*i].as_ref().unwrap().sas().iter().any(|s| s["spi_i"] == spi_i))
        .expect("one gateway holds the client's IKE SA");
    let survivor = 1 - owner;
    // The owner checkpoints the SA; both see each other in the store.
    let owner_node = gateways[owner].as_ref().unwrap();
    wait("the SA is in the store", Duration::from_secs(10), || {
        let c = owner_node.call(serde_json::json!({"cmd": "cluster"}));
        c["records_written"].as_u64().unwrap_or(0) >= 1 && c["nodes"].as_array().map_or(0, |n| n.len()) == 2
    });
    std::thread::sleep(Duration::from_secs(2));

    // An IKE datagram of the SA that reaches the other node (its own
    // address here; ECMP in a deployment) goes to the owner over the link.
    let spi_r = u64::from_str_radix(client.sas()[0]["spi_r"].as_str().unwrap(), 16).unwrap();
    let spi_i_num = u64::from_str_radix(spi_i.as_str().unwrap(), 16).unwrap();
    // The non-ESP marker first: ironsa marks IKE on every port but 500.
    let mut datagram = vec![0u8; 4];
    datagram.extend_from_slice(&spi_i_num.to_be_bytes());
    datagram.extend_from_slice(&spi_r.to_be_bytes());
    datagram.extend_from_slice(&[46, 0x20, 37, 0x08, 0, 0, 0, 99, 0, 0, 0, 60]);
    datagram.resize(64, 0xab);
    let owner_rx = shard_counter(owner_node, "rx_datagrams");
    let other = gateways[survivor].as_ref().unwrap();
    let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    probe
        .send_to(&datagram, (format!("127.0.1.{}", survivor + 1).as_str(), port))
        .unwrap();
    wait(
        "the other node forwards the datagram to the owner",
        Duration::from_secs(5),
        || shard_counter(other, "forwarded_to_nodes") == 1 && shard_counter(owner_node, "rx_datagrams") > owner_rx,
    );

    let killed_at = Instant::now();
    gateways[owner].as_mut().unwrap().kill9();
    let survivor_node = gateways[survivor].as_ref().unwrap();
    survivor_node.wait_sas(Duration::from_secs(10), |sas| sas.iter().any(|s| s["spi_i"] == spi_i));
    let took = killed_at.elapsed();
    // The client's DPDs are answered by the survivor, on the same IKE SA.
    let answered = shard_counter(survivor_node, "tx_datagrams");
    wait(
        "the survivor answers the client's DPDs",
        Duration::from_secs(10),
        || shard_counter(survivor_node, "tx_datagrams") >= answered + 2,
    );
    std::thread::sleep(Duration::from_secs(3));
    let sas = client.sas();
    assert_eq!(sas.len(), 1, "{sas:#?}");
    assert_eq!(sas[0]["spi_i"], spi_i, "the client kept its IKE SA");
    let log = client.log();
    assert_eq!(
        log.matches("initiating IKE SA").count(),
        1,
        "no new IKE_SA_INIT:\n{log}"
    );
    let status = survivor_node.call(serde_json::json!({"cmd": "cluster"}));
    let owner_id = owner as u64 + 1;
    let adopted = status["nodes"].as_array().unwrap().iter().any(|n| {
        n["id"].as_u64() == Some(survivor as u64 + 1) && n["ranges"].as_array().unwrap().contains(&owner_id.into())
    });
    assert!(adopted, "the survivor serves the dead node's range: {status:#}");
    let table = std::process::Command::new(env!("CARGO_BIN_EXE_ironsa"))
        .arg("--socket")
        .arg(survivor_node.socket())
        .arg("cluster")
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    let line = table.lines().find(|l| l.contains("(this node)")).unwrap_or_default();
    assert!(
        line.contains("1,2"),
        "ironsa cluster shows both ranges on the survivor:\n{table}"
    );
    assert!(survivor_node.log().contains("IKE SA resumed from another node's state"));
    assert!(took < Duration::from_secs(6), "takeover took {took:?}");
    eprintln!("takeover in {took:?}");
}

#[test]
fn without_store_quorum_established_tunnels_work_and_new_ones_get_temporary_failure() {
    if needs() {
        return;
    }
    let mut etcd = Etcd::start(3);
    let keys = tempfile::tempdir().unwrap();
    key_file(keys.path(), "link.key", 0x41);
    key_file(keys.path(), "cluster.key", 0x42);
    let (port, _) = support::util::free_udp_port_pair().unwrap();
    let (link, _) = support::util::free_udp_port_pair().unwrap();
    let gateway = support::Ironsa::start(&gateway_config(1, port, &etcd, keys.path(), link), None);
    wait("the gateway joined", Duration::from_secs(10), || {
        gateway.call(serde_json::json!({"cmd": "cluster"}))["connected"] == true
    });
    let (a_port, _) = support::util::free_udp_port_pair().unwrap();
    let a = support::Ironsa::start(&client_config(a_port, port), None);
    a.call(serde_json::json!({"cmd": "initiate", "connection": "gw", "timeout": 10}));
    let spi_i = a.sas()[0]["spi_i"].clone();

    etcd.kill(0);
    etcd.kill(1);
    wait(
        "the gateway sees the store unreachable",
        Duration::from_secs(15),
        || gateway.call(serde_json::json!({"cmd": "cluster"}))["connected"] == false,
    );
    // The established tunnel keeps answering DPD.
    let tx = shard_counter(&gateway, "tx_datagrams");
    wait("DPD answered without the store", Duration::from_secs(10), || {
        shard_counter(&gateway, "tx_datagrams") >= tx + 2
    });
    assert_eq!(a.sas()[0]["spi_i"], spi_i);
    // A new one is refused.
    let (b_port, _) = support::util::free_udp_port_pair().unwrap();
    let b = support::Ironsa::start(&client_config(b_port, port), None);
    let refused = b.answer(&serde_json::json!({"cmd": "initiate", "connection": "gw", "timeout": 10}));
    assert_eq!(refused["ok"], false, "{refused}");
    assert!(refused.to_string().contains("TEMPORARY_FAILURE"), "{refused}");
    assert!(shard_counter(&gateway, "refused_store_down") >= 1);

    // Quorum back: new tunnels are taken again.
    etcd.restart(0);
    etcd.restart(1);
    etcd.wait_healthy(Duration::from_secs(20));
    wait("the gateway reconnects", Duration::from_secs(15), || {
        gateway.call(serde_json::json!({"cmd": "cluster"}))["connected"] == true
    });
    b.call(serde_json::json!({"cmd": "initiate", "connection": "gw", "timeout": 10}));
    let b_spi = b.sas()[0]["spi_i"].clone();
    assert!(gateway.sas().iter().any(|s| s["spi_i"] == b_spi));
}

/// A gateway of a [`support::netns::GatewayFarm`]: the shared VIP, the
/// software data plane, clustered as node `node` (its link on its own
/// address), with a tunnel child between 10.1.0.0/16 and the client's
/// 10.9.0.0/24.
fn farm_gateway_config(node: NodeId, etcd: &Etcd, keys: &std::path::Path) -> String {
    farm_gateway_config_with(node, etcd, keys, "")
}

/// [`farm_gateway_config`] with `cluster_extra` in `[cluster]`; the node
/// also listens on its own address.
fn farm_gateway_config_with(node: NodeId, etcd: &Etcd, keys: &std::path::Path, cluster_extra: &str) -> String {
    use support::netns::{FARM_VIP, GatewayFarm};
    let store: Vec<String> = etcd.endpoints().iter().map(|e| format!("\"{e}\"")).collect();
    format!(
        r#"
[daemon]
listen = ["{FARM_VIP}", "{link}"]
shards = 1
control_socket = "SOCKET"

[fastpath]
backend = "software"
tun_name = "ironsa0"

[cluster]
node = {node}
store = [{store}]
name = "esp"
link = "{link}:4510"
link_key = "{link_key}"
cluster_key = "{cluster_key}"
lease = "2s"
checkpoint_interval = "1s"
{cluster_extra}

[[connection]]
name = "rw"
remote_addrs = ["%any"]
local_id = "gw@cluster.test"
remote_id = "client@cluster.test"
psk = "{PSK}"
ike_proposals = "aes256gcm16-prfsha256-x25519"

[[connection.child]]
name = "net"
local_ts = ["10.1.0.0/16"]
remote_ts = ["10.9.0.0/24"]
esp_proposals = "aes256gcm16"
"#,
        store = store.join(", "),
        link = GatewayFarm::gateway_addr(usize::from(node) - 1),
        link_key = keys.join("link.key").display(),
        cluster_key = keys.join("cluster.key").display(),
    )
}

/// The farm's client: ESP in UDP (as behind a carrier's NAT) to the VIP;
/// its dead-peer detection changes the IKE SA every idle second, which
/// makes the owner checkpoint it (with its children's sequence numbers).
fn farm_client_config() -> String {
    use support::netns::{FARM_CLIENT, FARM_VIP};
    format!(
        r#"
[daemon]
listen = ["{FARM_CLIENT}"]
shards = 1
control_socket = "SOCKET"

[fastpath]
backend = "software"
tun_name = "ironsa0"

[[connection]]
name = "gw"
remote_addrs = ["{FARM_VIP}"]
local_id = "client@cluster.test"
remote_id = "gw@cluster.test"
psk = "{PSK}"
ike_proposals = "aes256gcm16-prfsha256-x25519"
force_udp_encap = true
dpd_delay = "1s"

[[connection.child]]
name = "net"
local_ts = ["10.9.0.0/24"]
remote_ts = ["10.1.0.0/16"]
esp_proposals = "aes256gcm16"
"#
    )
}

/// (packets in, packets out, drops) of the first CHILD_SA of `node`.
fn child_counters(node: &support::Ironsa) -> (u64, u64, u64) {
    let c = &node.sas().first().cloned().unwrap_or_default()["children"][0]["counters"];
    let n = |k: &str| c[k].as_u64().unwrap_or(0);
    (n("packets_in"), n("packets_out"), n("drops"))
}

#[test]
fn esp_reaching_another_node_is_forwarded_and_flows_on_the_survivor_after_a_kill() {
    use support::netns::{FARM_ROUTER, GatewayFarm};
    if skip_unless(&[
        Need::Root,
        Need::Tool("ping"),
        Need::Tool("etcd"),
        Need::Tool("etcdctl"),
    ]) {
        return;
    }
    let farm = GatewayFarm::new(2).unwrap();
    farm.client
        .exec(&["ip", "addr", "add", "10.9.0.1/32", "dev", "lo"])
        .unwrap();
    for g in &farm.gateways {
        g.exec(&["ip", "addr", "add", "10.1.0.1/32", "dev", "lo"]).unwrap();
    }
    let etcd = Etcd::start_at(3, FARM_ROUTER, Some(farm.router.name()));
    let keys = tempfile::tempdir().unwrap();
    key_file(keys.path(), "link.key", 0x51);
    key_file(keys.path(), "cluster.key", 0x52);
    let mut gateways: Vec<support::Ironsa> = farm
        .gateways
        .iter()
        .zip(1..)
        .map(|(ns, node)| support::Ironsa::start(&farm_gateway_config(node, &etcd, keys.path()), Some(ns.name())))
        .collect();
    for g in &gateways {
        wait("both nodes are in the store", Duration::from_secs(15), || {
            g.call(serde_json::json!({"cmd": "cluster"}))["nodes"]
                .as_array()
                .is_some_and(|n| n.len() == 2)
        });
    }
    let client = support::Ironsa::start(&farm_client_config(), Some(farm.client.name()));
    // The router sends the VIP to node 1: it negotiates the SA and owns it.
    client.call(serde_json::json!({"cmd": "initiate", "connection": "gw", "timeout": 10}));
    let spi_i = client.sas()[0]["spi_i"].clone();
    gateways[0].wait_sas(Duration::from_secs(10), |s| s.iter().any(|s| s["spi_i"] == spi_i));
    let ping = |count: u32| support::traffic::ping(&farm.client, "10.9.0.1", "10.1.0.1", count, "0.2");
    assert_eq!(ping(5), (5, 5), "ping through node 1");

    // ECMP moves the flow to node 2, which has no SA: it forwards the ESP
    // (and IKE) to node 1 over the link; node 1 answers from the VIP.
    farm.steer(1).unwrap();
    let (in_before, ..) = child_counters(&gateways[0]);
    // One of the client's ESP packets, captured on the router, to replay later.
    let mut capture = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            farm.router.name(),
            "tshark",
            "-i",
            "any",
            "-c",
            "1",
            "-a",
            "duration:30",
        ])
        .args([
            "-f",
            "udp dst port 4500 and dst host 10.96.0.10 and udp[8:4] != 0 and greater 100",
        ])
        .args(["-T", "fields", "-e", "udp.payload"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("tshark starts");
    let deadline = Instant::now() + Duration::from_secs(30);
    while capture.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "tshark captured no ESP of the client");
        ping(1);
    }
    let captured = std::io::read_to_string(capture.stdout.take().unwrap()).unwrap();
    let captured = hex::decode(captured.trim().replace(':', "")).expect("tshark prints the UDP payload in hex");
    assert!(captured.len() > 16, "an ESP packet: {captured:?}");
    assert_eq!(ping(5), (5, 5), "ping with the ESP reaching node 2");
    let (in_after, ..) = child_counters(&gateways[0]);
    assert!(
        in_after >= in_before + 5,
        "node 1 decrypted the forwarded ESP: {in_before} -> {in_after}"
    );
    assert!(gateways[1].sas().is_empty(), "node 2 holds no SA of its own");
    // Node 1 checkpoints the SA again (the client's DPD changes it), with
    // the children's sequence numbers: the captured packet's among those seen.
    let written = |g: &support::Ironsa| {
        g.call(serde_json::json!({"cmd": "cluster"}))["records_written"]
            .as_u64()
            .unwrap_or(0)
    };
    let before = written(&gateways[0]);
    let deadline = Instant::now() + Duration::from_secs(15);
    while written(&gateways[0]) < before + 2 {
        assert!(
            Instant::now() < deadline,
            "node 1 did not checkpoint the SA twice more within 15 s ({before} -> {}):\n{}\n--- client\n{}",
            written(&gateways[0]),
            gateways[0].log(),
            client.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, client_out_before, _) = child_counters(&client);

    // Node 1 dies: node 2 adopts its range and carries the ESP itself.
    let killed_at = Instant::now();
    gateways[0].kill9();
    gateways[1].wait_sas(Duration::from_secs(15), |s| s.iter().any(|s| s["spi_i"] == spi_i));
    let deadline = Instant::now() + Duration::from_secs(15);
    while ping(1) != (1, 1) {
        assert!(
            Instant::now() < deadline,
            "no ping through node 2 within 15 s of the kill:\n{}",
            gateways[1].log()
        );
    }
    let took = killed_at.elapsed();
    assert_eq!(ping(10), (10, 10), "ping through node 2 after the takeover");
    let sas = client.sas();
    assert_eq!(sas.len(), 1, "{sas:#?}");
    assert_eq!(sas[0]["spi_i"], spi_i, "the client kept its IKE SA");
    assert_eq!(
        client.log().matches("initiating IKE SA").count(),
        1,
        "no new IKE_SA_INIT:\n{}",
        client.log()
    );
    let (client_in, client_out, client_drops) = child_counters(&client);
    assert!(client_out > client_out_before, "the client kept its CHILD_SA");
    assert_eq!(
        client_drops, 0,
        "the client dropped none of node 2's ESP (replay or otherwise); {client_in} in"
    );
    let (g2_in, g2_out, g2_drops) = child_counters(&gateways[1]);
    assert!(
        g2_in >= 10 && g2_out >= 10,
        "node 2 carried the ESP: {g2_in} in, {g2_out} out"
    );
    assert_eq!(g2_drops, 0, "node 2's restarted replay window took the client's ESP");

    // The captured packet, replayed to node 2, is refused: its replay
    // window starts where node 1's checkpoint left it, not at zero.
    let escaped: String = captured.iter().map(|b| format!("\\x{b:02x}")).collect();
    farm.router
        .exec(&["bash", "-c", &format!("printf '{escaped}' > /dev/udp/10.96.0.10/4500")])
        .unwrap();
    wait("node 2 refuses the replayed packet", Duration::from_secs(5), || {
        child_counters(&gateways[1]).2 == 1
    });
    let (in_replayed, ..) = child_counters(&gateways[1]);
    assert_eq!(in_replayed, g2_in, "the replayed packet was not taken");
    eprintln!("ESP through the survivor {took:?} after the kill");
}

#[test]
fn a_loaded_node_redirects_a_new_strongswan_client_to_the_least_loaded_one() {
    use support::netns::{FARM_CLIENT, FARM_ROUTER, FARM_VIP, GatewayFarm};
    use support::{AuthRound, Charon, Child, Connection, KernelBackend, Secret};
    if skip_unless(&[Need::Root, Need::Charon, Need::Tool("etcd"), Need::Tool("etcdctl")]) {
        return;
    }
    let farm = GatewayFarm::new(2).unwrap();
    // charon routes its tunnel from an address inside its selectors.
    farm.client
        .exec(&["ip", "addr", "add", "10.9.0.1/32", "dev", "lo"])
        .unwrap();
    let etcd = Etcd::start_at(3, FARM_ROUTER, Some(farm.router.name()));
    let keys = tempfile::tempdir().unwrap();
    key_file(keys.path(), "link.key", 0x61);
    key_file(keys.path(), "cluster.key", 0x62);
    let gateways: Vec<support::Ironsa> = farm
        .gateways
        .iter()
        .zip(1..)
        .map(|(ns, node)| {
            let extra = format!(
                "address = \"{}\"\nredirect_margin = 0",
                GatewayFarm::gateway_addr(usize::from(node) - 1)
            );
            support::Ironsa::start(
                &farm_gateway_config_with(node, &etcd, keys.path(), &extra),
                Some(ns.name()),
            )
        })
        .collect();
    let loads = |g: &support::Ironsa| -> Vec<(u64, u64)> {
        g.call(serde_json::json!({"cmd": "cluster"}))["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|n| {
                (
                    n["id"].as_u64().unwrap_or(0),
                    n["info"]["load"].as_u64().unwrap_or(u64::MAX),
                )
            })
            .collect()
    };
    for g in &gateways {
        wait("both nodes are in the store", Duration::from_secs(15), || {
            loads(g).len() == 2
        });
    }
    // An ironsa client loads node 1 with one IKE SA.
    let ironsa_client = support::Ironsa::start(&farm_client_config(), Some(farm.client.name()));
    let up = ironsa_client.answer(&serde_json::json!({"cmd": "initiate", "connection": "gw", "timeout": 10}));
    assert_eq!(up["ok"], true, "{up}\n--- client\n{}", ironsa_client.log());
    assert_eq!(gateways[0].sas().len(), 1, "node 1 took the first client");
    wait("node 1 sees itself loaded", Duration::from_secs(15), || {
        loads(&gateways[0]) == vec![(1, 1), (2, 0)]
    });

    // charon (which follows redirects) asks node 1 and is sent to node 2.
    let (ike, nat) = support::util::free_udp_port_pair().unwrap();
    let charon = Charon::builder("redirect")
        .ports(ike, nat)
        .kernel(KernelBackend::Libipsec {
            netns: farm.client.name().into(),
        })
        .connection(
            Connection::new("gw", FARM_CLIENT, FARM_VIP)
                .proposals(&["aes256gcm16-prfsha256-x25519"])
                .local(AuthRound::psk("client@cluster.test"))
                .remote(AuthRound::psk("gw@cluster.test"))
                .child(Child::new("net", "10.9.0.0/24", "10.1.7.0/24").esp_proposals(&["aes256gcm16"])),
        )
        .secret(Secret::psk("gw", &["client@cluster.test", "gw@cluster.test"], PSK))
        .start()
        .unwrap();
    charon
        .swanctl()
        .initiate(support::Target::Child("net"), Duration::from_secs(20))
        .unwrap();
    let sas = charon
        .swanctl()
        .wait_for_sas(Duration::from_secs(20), |s| s.len() == 1 && s[0].state == "ESTABLISHED")
        .unwrap();
    let node2: std::net::IpAddr = GatewayFarm::gateway_addr(1).parse().unwrap();
    assert_eq!(
        sas[0].remote_host,
        node2,
        "charon's IKE SA is with node 2:\n{}",
        charon.log_tail(40)
    );
    assert!(
        charon.log_contains("redirect"),
        "charon logged the redirect:\n{}",
        charon.log_tail(40)
    );
    gateways[1].wait_sas(Duration::from_secs(10), |s| s.len() == 1);
    assert_eq!(gateways[0].sas().len(), 1, "node 1 kept only the first client");
    let redirected: u64 = gateways[0].call(serde_json::json!({"cmd": "stats"}))["shards"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| s["redirected"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(redirected, 1, "node 1 redirected charon once");
}
