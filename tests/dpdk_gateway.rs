//! A gateway on DPDK ports: the `ironsa` daemon built with
//! `--features dpdk` runs hw-profiles/af-packet.toml in namespace A, its
//! outside `net_af_packet` port on the veth towards namespace B and its
//! inside port on a second veth whose other end is a host of the protected
//! network (10.1.0.1). The kernel interfaces of the ports carry no address:
//! ARP, IKE and ESP are the DPDK backend's. Namespace B runs a second
//! ironsa with the software data plane. The DPDK side initiates; IKE
//! negotiates through the DPDK port, ping and TCP flow through the tunnel,
//! `ironsa sas`/`stats` and `/metrics` show the DPDK counters moving, and on
//! shutdown the gateway's DELETE leaves through the DPDK port.
//!
//! The profile pins each poll loop to a CPU (`[cpus] poll`) and, with one
//! loop, keeps the control plane on the other CPUs (`[cpus] control`): the
//! threads' affinity is read back from /proc. One case has the peer force
//! UDP encapsulation (RFC 3948): IKE floats to 4500 and ESP-in-UDP flows
//! through the DPDK ports.
//!
//! Needs root, iproute2, ethtool, iputils-ping and iperf3.

mod support;

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use support::Need;
use support::netns::{INNER_A, INNER_B, OUTER_A, OUTER_B, SUBNET_A, SUBNET_B};
use support::util::next_seq;
use support::{Ironsa, NetnsPair};

const PSK: &str = "a-long-random-test-secret-for-the-dpdk-gateway";
const T: Duration = Duration::from_secs(15);
/// The gateway's address on its inside (DPDK) port.
const GATEWAY_INSIDE: &str = "10.1.0.254";
/// Metrics endpoint of the gateway (inside namespace A).
const METRICS_PORT: u16 = 9464;

fn connection(peer: &str, mine: &str, theirs: &str, lid: &str, rid: &str) -> String {
    support::ironsa::peer_connection(peer, mine, theirs, lid, rid, PSK)
}

/// The CPUs this process may use (`Cpus_allowed_list` of /proc/self/status).
fn allowed_cpus() -> Vec<usize> {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .expect("Cpus_allowed_list")
        .trim();
    list.split(',')
        .flat_map(|r| {
            let (a, b) = r.split_once('-').unwrap_or((r, r));
            let (a, b): (usize, usize) = (a.parse().expect("cpu"), b.parse().expect("cpu"));
            a..=b
        })
        .collect()
}

/// Where the test puts the poll loops and the control plane: with one loop,
/// the loop on the last CPU and the control plane on the others; with more,
/// one CPU per loop and the control plane unrestricted. `None` when the
/// machine has too few CPUs.
fn cpu_plan(queues: u16) -> Option<(Vec<usize>, Vec<usize>)> {
    let cpus = allowed_cpus();
    let q = usize::from(queues);
    if cpus.len() < 2 || cpus.len() < q {
        return None;
    }
    if q == 1 {
        let (last, rest) = cpus.split_last()?;
        return Some((vec![*last], rest.to_vec()));
    }
    // Spread over the CPUs: the first and the last are always used.
    let poll = (0..q).map(|i| cpus[i * (cpus.len() - 1) / (q - 1)]).collect();
    Some((poll, Vec::new()))
}

/// (thread name, Cpus_allowed_list) of every thread of process `pid`.
fn thread_affinity(pid: u32) -> Vec<(String, String)> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("/proc/PID/task");
    tasks
        .filter_map(|t| {
            let status = std::fs::read_to_string(t.ok()?.path().join("status")).ok()?;
            let field = |k: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(k))
                    .map(|v| v.trim().to_string())
            };
            Some((field("Name:")?, field("Cpus_allowed_list:")?))
        })
        .collect()
}

/// The shipped af_packet profile on this test's interfaces and addresses,
/// with `queues` queues (= poll loops) per port and `cpus` poll/control CPUs.
fn profile(outside_iface: &str, inside_iface: &str, queues: u16, cpus: Option<&(Vec<usize>, Vec<usize>)>) -> String {
    let shipped = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/hw-profiles/af-packet.toml"))
        .expect("hw-profiles/af-packet.toml");
    for needle in [
        "iface=eth1",
        "iface=eth2",
        "\"192.0.2.1\"",
        GATEWAY_INSIDE,
        "queues = 1",
    ] {
        assert!(shipped.contains(needle), "af-packet.toml no longer has {needle}");
    }
    shipped
        .replace("iface=eth1", &format!("iface={outside_iface},qpairs={queues}"))
        .replace("iface=eth2", &format!("iface={inside_iface},qpairs={queues}"))
        .replace("\"192.0.2.1\"", &format!("\"{OUTER_A}\""))
        .replace("queues = 1", &format!("queues = {queues}"))
        + &cpus.map_or(String::new(), |(poll, control)| {
            format!("\n[cpus]\npoll = {poll:?}\ncontrol = {control:?}\n")
        })
}

/// Namespace A as the gateway's machine: the outside veth loses its address
/// to the DPDK port; a second veth pair joins the inside port to a host
/// interface carrying 10.1.0.1/24, which routes B's subnet via the gateway.
/// Returns the inside port's interface name.
fn gateway_side(ns: &NetnsPair) -> String {
    let a = &ns.a;
    let seq = next_seq();
    let (port, host) = (
        format!("gi{}x{seq}", std::process::id()),
        format!("gh{}x{seq}", std::process::id()),
    );
    let run = |argv: &[&str]| {
        a.exec(argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    };
    run(&["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]);
    run(&["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"]);
    run(&["ip", "addr", "flush", "dev", &ns.veth_a]);
    run(&["ip", "addr", "del", &format!("{INNER_A}/32"), "dev", "lo"]);
    run(&["ip", "link", "add", &port, "type", "veth", "peer", "name", &host]);
    run(&["ip", "link", "set", &port, "up"]);
    run(&["ip", "addr", "add", &format!("{INNER_A}/24"), "dev", &host]);
    // ESP adds ~60 bytes; the ports' links are 1500.
    run(&["ip", "link", "set", &host, "mtu", "1400", "up"]);
    run(&["ip", "route", "add", SUBNET_B, "via", GATEWAY_INSIDE, "dev", &host]);
    // A packet socket reads frames as the sender left them: no checksum or
    // segmentation offloads on the interfaces whose frames DPDK reads.
    run(&["ethtool", "-K", &host, "tx", "off", "tso", "off", "gso", "off"]);
    ns.b.exec(&["ethtool", "-K", &ns.veth_b, "tx", "off", "tso", "off", "gso", "off"])
        .expect("ethtool in B");
    port
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// `ironsa stats --json` through the CLI.
fn cli_stats(d: &Ironsa) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_ironsa"))
        .arg("--socket")
        .arg(d.dir().join("ironsa.sock"))
        .args(["stats", "--json"])
        .output()
        .expect("ironsa stats");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("stats JSON")
}

/// GET /metrics from inside namespace A (bash's /dev/tcp; a few attempts).
fn metrics(ns: &NetnsPair) -> String {
    let script = format!(
        "exec 3<>/dev/tcp/127.0.0.1/{METRICS_PORT} && printf 'GET /metrics HTTP/1.0\\r\\n\\r\\n' >&3 && cat <&3"
    );
    let mut last = String::new();
    for _ in 0..5 {
        let out = Command::new("ip")
            .args(["netns", "exec", ns.a.name(), "bash", "-c", &script])
            .output()
            .expect("ip netns exec bash");
        last = String::from_utf8_lossy(&out.stdout).into_owned();
        if last.contains("\r\n\r\n") && last.contains("ironsa_dpdk_port_rx_packets_total") {
            return last;
        }
        last.push_str(&String::from_utf8_lossy(&out.stderr));
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("no metrics from the gateway: {last}");
}

fn metric(text: &str, line_start: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no metric {line_start} in\n{text}"))
}

#[test]
fn dpdk_gateway_negotiates_through_its_ports_and_carries_traffic() {
    gateway_with_a_software_peer(1, false);
}

/// Two poll loops without RSS: loop 0 receives and steers ESP by SPI, each
/// outbound SA is pinned to one loop's worker.
#[test]
fn dpdk_gateway_with_two_poll_loops() {
    gateway_with_a_software_peer(2, false);
}

/// The peer forces UDP encapsulation: IKE moves to 4500 (non-ESP marker)
/// and ESP travels in UDP through the DPDK ports both ways.
#[test]
fn dpdk_gateway_with_udp_encapsulated_esp() {
    gateway_with_a_software_peer(1, true);
}

/// Each poll loop thread runs on its profile CPU; with control CPUs, the
/// shards and the IKE forwarder run there. The stats report the loops' CPUs.
fn check_affinity(gw: &Ironsa, queues: u16, plan: &(Vec<usize>, Vec<usize>), dp: &Value) {
    let threads = thread_affinity(gw.pid());
    let (poll, control) = plan;
    for (i, cpu) in poll.iter().enumerate() {
        let name = format!("ironsa-dp{i}");
        let allowed: Vec<_> = threads.iter().filter(|(n, _)| *n == name).collect();
        assert_eq!(allowed.len(), 1, "thread {name} in {threads:?}");
        assert_eq!(allowed[0].1, cpu.to_string(), "{name} not pinned: {threads:?}");
        assert_eq!(dp["loops"][i]["cpu"], json!(cpu), "{dp:#}");
    }
    assert_eq!(poll.len(), usize::from(queues));
    if !control.is_empty() {
        let want = control.iter().map(usize::to_string).collect::<Vec<_>>().join(",");
        let want_ranges = if control.windows(2).all(|w| w[1] == w[0] + 1) && control.len() > 1 {
            format!("{}-{}", control[0], control[control.len() - 1])
        } else {
            want.clone()
        };
        let controlled: Vec<_> = threads
            .iter()
            .filter(|(n, _)| n.starts_with("ironsa-shard") || n == "ironsa-dpdk-ike")
            .collect();
        assert!(controlled.len() >= 2, "no shard / IKE forwarder threads: {threads:?}");
        for (n, cpus) in controlled {
            assert!(
                *cpus == want || *cpus == want_ranges,
                "{n} runs on {cpus}, not the control CPUs {want}: {threads:?}"
            );
        }
    }
}

fn gateway_with_a_software_peer(queues: u16, udp_encap: bool) {
    if support::skip_unless(&[
        Need::Root,
        Need::Tool("ping"),
        Need::Tool("iperf3"),
        Need::Tool("ethtool"),
    ]) {
        return;
    }
    let ns = NetnsPair::new().unwrap();
    let inside_port = gateway_side(&ns);
    let profile_dir = tempfile::tempdir().unwrap();
    let profile_path = profile_dir.path().join("af-packet.toml");
    let plan = cpu_plan(queues);
    if plan.is_none() {
        eprintln!("fewer than 2 CPUs: poll loops not pinned in this run");
    }
    std::fs::write(&profile_path, profile(&ns.veth_a, &inside_port, queues, plan.as_ref())).unwrap();

    let peer_connection = connection(OUTER_A, SUBNET_B, SUBNET_A, "b@test", "a@test");
    let peer_connection = if udp_encap {
        peer_connection.replace("ike_proposals =", "force_udp_encap = true\nike_proposals =")
    } else {
        peer_connection
    };
    let peer = Ironsa::start(
        &format!(
            "[daemon]\nlisten = [\"{OUTER_B}\"]\nshards = 1\ncontrol_socket = \"SOCKET\"\n\n[fastpath]\nbackend = \"software\"\ntun_name = \"ironsa0\"\n{peer_connection}"
        ),
        Some(ns.b.name()),
    );
    let mut gw = Ironsa::start(
        &format!(
            "[daemon]\nshards = 2\ncontrol_socket = \"SOCKET\"\nmetrics = \"127.0.0.1:{METRICS_PORT}\"\n\n[fastpath]\nhw_profile = \"{}\"\n{}",
            profile_path.display(),
            connection(OUTER_B, SUBNET_A, SUBNET_B, "a@test", "b@test")
        ),
        Some(ns.a.name()),
    );
    assert!(gw.log().contains("DPDK fastpath ready"), "{}", gw.log());

    // IKE through the DPDK port: the gateway initiates.
    gw.call(json!({"cmd": "initiate", "connection": "peer"}));
    let one_child = |s: &[Value]| {
        s.len() == 1 && s[0]["state"] == "ESTABLISHED" && s[0]["children"].as_array().is_some_and(|c| c.len() == 1)
    };
    let sas = gw.wait_sas(T, one_child);
    let peer_sas = peer.wait_sas(T, one_child);
    assert_eq!(sas[0]["nat_t"], json!(udp_encap), "gateway SA: {sas:#?}");
    assert_eq!(peer_sas[0]["nat_t"], json!(udp_encap), "peer SA: {peer_sas:#?}");
    let stats = cli_stats(&gw);
    let dp = &stats["dataplane"];
    assert_eq!(dp["backend"], "dpdk", "{stats:#}");
    let total = |k: &str| {
        dp["loops"]
            .as_array()
            .map_or(0, |l| l.iter().map(|x| u(&x[k])).sum::<u64>())
    };
    assert!(
        total("ike_rx") >= 2 && total("ike_tx") >= 2,
        "IKE not through DPDK: {dp:#}"
    );
    assert!(total("arp_replies") >= 1, "no ARP answered by the DPDK port: {dp:#}");
    let shards: u64 = stats["shards"]
        .as_array()
        .map_or(0, |s| s.iter().map(|x| u(&x["rx_datagrams"])).sum());
    assert!(shards >= 2, "shards received no IKE from the data plane: {stats:#}");

    // Traffic: ping both ways, then TCP both ways.
    support::traffic::ping_both_ways(&ns, 5, "0.2");
    let up = support::traffic::iperf(&ns, false, 2, 1);
    let down = support::traffic::iperf(&ns, true, 2, 1);
    eprintln!(
        "DPDK gateway (net_af_packet, {queues} loop(s), debug build), AES-256-GCM: TCP out {up:.0} Mbit/s, in {down:.0} Mbit/s"
    );
    assert!(
        up > 1.0 && down > 1.0,
        "bulk TCP through the DPDK gateway: {up} / {down} Mbit/s"
    );

    // Counters: per CHILD_SA, per port/queue and per loop on the gateway; the peer agrees.
    let (gin, gout) = gw.child_packets();
    let (pin, pout) = peer.child_packets();
    assert!(
        gin >= 10 && gout >= 10,
        "gateway CHILD_SA counters: in {gin}, out {gout}"
    );
    assert!(pin >= 10 && pout >= 10, "peer CHILD_SA counters: in {pin}, out {pout}");
    let dp = cli_stats(&gw)["dataplane"].clone();
    let ports = dp["ports"].as_array().cloned().unwrap_or_default();
    assert_eq!(ports.len(), 2, "{dp:#}");
    for p in &ports {
        assert!(
            u(&p["rx_packets"]) >= 10 && u(&p["tx_packets"]) >= 10,
            "port counters: {p:#}"
        );
        assert!(u(&p["queues"][0]["rx_packets"]) >= 10, "queue counters: {p:#}");
    }
    assert_eq!(
        dp["loops"].as_array().map(Vec::len),
        Some(usize::from(queues)),
        "{dp:#}"
    );
    let esp = |dir: &str| {
        dp["loops"]
            .as_array()
            .map_or(0, |l| l.iter().map(|x| u(&x[dir]["packets"])).sum::<u64>())
    };
    assert!(esp("esp_in") >= 10 && esp("esp_out") >= 10, "{dp:#}");
    // One SA each way: its ESP is handled by one loop only (inbound steered
    // by SPI, outbound pinned to a worker), whichever queue the frames came in on.
    for dir in ["esp_in", "esp_out"] {
        let busy = dp["loops"]
            .as_array()
            .map_or(0, |l| l.iter().filter(|x| u(&x[dir]["packets"]) > 0).count());
        assert_eq!(busy, 1, "{dir} on {busy} loops: {dp:#}");
    }
    assert_eq!(u(&dp["inline_cpu_fallback"]), 0, "{dp:#}");
    let loop_total = |k: &str| {
        dp["loops"]
            .as_array()
            .map_or(0, |l| l.iter().map(|x| u(&x[k])).sum::<u64>())
    };
    let (udp_rx, udp_tx) = (loop_total("esp_udp_rx"), loop_total("esp_udp_tx"));
    if udp_encap {
        assert!(
            udp_rx >= 10 && udp_tx >= 10,
            "ESP-in-UDP not through the DPDK port: {dp:#}"
        );
    } else {
        assert_eq!((udp_rx, udp_tx), (0, 0), "{dp:#}");
    }
    match &plan {
        Some(plan) => check_affinity(&gw, queues, plan, &dp),
        None => assert!(dp["loops"][0]["cpu"].is_null(), "{dp:#}"),
    }
    let text = metrics(&ns);
    assert!(
        metric(&text, "ironsa_dpdk_port_rx_packets_total{port=\"net_af_packet0\"}") >= 10,
        "{text}"
    );
    assert!(
        metric(&text, "ironsa_dpdk_port_tx_packets_total{port=\"net_af_packet1\"}") >= 10,
        "{text}"
    );
    assert_eq!(metric(&text, "ironsa_esp_sas{direction=\"in\"}"), 1, "{text}");

    // Shutdown: the DELETE leaves through the DPDK port before the loops stop.
    gw.stop();
    peer.wait_sas(T, |s| s.is_empty());
    let log = gw.log();
    assert!(log.contains("DPDK fastpath stopped"), "{log}");
    // Each loop thread registered with EAL (an lcore id: mbuf caches).
    assert_eq!(log.matches("poll loop running").count(), usize::from(queues), "{log}");
    assert!(!log.contains("without an lcore id"), "{log}");
}

/// The peer's second address, when it moves (MOBIKE).
const MOVED_B: &str = "10.99.0.3";

/// Pings `to` from `from` inside `ns`, `count` times every 50 ms; returns
/// the sequence numbers of the replies in the order they came.
fn reply_order(ns: &support::Netns, from: &str, to: &str, count: u32) -> Vec<u32> {
    let out = ns
        .exec_bounded(
            &[
                "ping",
                "-n",
                "-c",
                &count.to_string(),
                "-i",
                "0.05",
                "-W",
                "2",
                "-I",
                from,
                to,
            ],
            Duration::from_secs(60),
        )
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_else(|e| format!("{e}"));
    out.lines()
        .filter_map(|l| l.split("icmp_seq=").nth(1)?.split(' ').next()?.parse().ok())
        .collect()
}

/// The DPDK gateway moves a CHILD_SA in place: the peer (ironsa, software
/// data plane, MOBIKE client) changes its address while it pings through
/// the tunnel; the gateway's return routability check passes, its DPDK
/// SAs move to the new outer addresses (move_children), and ESP reaches
/// the peer at its new address only, in order, on the same SPIs.
#[test]
fn dpdk_gateway_moves_the_esp_of_a_mobike_client() {
    if support::skip_unless(&[Need::Root, Need::Tool("ping"), Need::Tool("ethtool")]) {
        return;
    }
    let ns = NetnsPair::new().unwrap();
    let inside_port = gateway_side(&ns);
    ns.b.exec(&[
        "sysctl",
        "-qw",
        &format!("net.ipv4.conf.{}.promote_secondaries=1", ns.veth_b),
    ])
    .unwrap();
    let profile_dir = tempfile::tempdir().unwrap();
    let profile_path = profile_dir.path().join("af-packet.toml");
    std::fs::write(&profile_path, profile(&ns.veth_a, &inside_port, 1, None)).unwrap();
    // The peer initiates (MOBIKE's initiator is the one that moves) from the wildcard address.
    let peer = Ironsa::start(
        &format!(
            "[daemon]\nlisten = [\"0.0.0.0\"]\nshards = 1\ncontrol_socket = \"SOCKET\"\n\n[fastpath]\nbackend = \"software\"\ntun_name = \"ironsa0\"\n{}",
            connection(OUTER_A, SUBNET_B, SUBNET_A, "b@test", "a@test")
        ),
        Some(ns.b.name()),
    );
    let gw = Ironsa::start(
        &format!(
            "[daemon]\nshards = 1\ncontrol_socket = \"SOCKET\"\n\n[fastpath]\nhw_profile = \"{}\"\n{}",
            profile_path.display(),
            connection(OUTER_B, SUBNET_A, SUBNET_B, "a@test", "b@test")
                .replace(&format!("remote_addrs = [\"{OUTER_B}\"]\n"), "")
        ),
        Some(ns.a.name()),
    );
    assert!(gw.log().contains("DPDK fastpath ready"), "{}", gw.log());
    peer.call(json!({"cmd": "initiate", "connection": "peer", "timeout": 10}));
    let one_child = |s: &[Value]| {
        s.len() == 1 && s[0]["state"] == "ESTABLISHED" && s[0]["children"].as_array().is_some_and(|c| c.len() == 1)
    };
    let before = gw.wait_sas(T, one_child);
    let peer_before = peer.wait_sas(T, one_child);
    assert_eq!(before[0]["mobike"], json!(true), "{before:#?}");

    const PINGS: u32 = 120;
    let order = std::thread::scope(|scope| {
        let pinger = scope.spawn(|| reply_order(&ns.b, INNER_B, INNER_A, PINGS));
        std::thread::sleep(Duration::from_millis(1500));
        ns.b.exec(&["ip", "addr", "add", &format!("{MOVED_B}/24"), "dev", &ns.veth_b])
            .unwrap();
        ns.b.exec(&["ip", "addr", "del", &format!("{OUTER_B}/24"), "dev", &ns.veth_b])
            .unwrap();
        pinger.join().unwrap()
    });
    let after = gw.wait_sas(T, |s| {
        one_child(s)
            && s[0]["remote"]
                .as_str()
                .is_some_and(|r| r.starts_with(&format!("{MOVED_B}:")))
    });
    let peer_after = peer.wait_sas(T, one_child);
    // Same IKE SA and the same CHILD_SA on both sides: moved, not rekeyed.
    for (b, a) in [(&before[0], &after[0]), (&peer_before[0], &peer_after[0])] {
        for key in ["spi_i", "spi_r"] {
            assert_eq!(a[key], b[key], "same IKE SA");
        }
        for key in ["spi_in", "spi_out"] {
            assert_eq!(a["children"][0][key], b["children"][0][key], "same CHILD_SA");
        }
    }
    let log = gw.log();
    assert!(log.contains("return routability verified"), "{log}");
    assert!(log.contains("CHILD_SA moved to new outer addresses"), "{log}");
    // In order: no reply overtook an earlier one across the move.
    assert!(order.windows(2).all(|w| w[0] < w[1]), "replies out of order: {order:?}");
    let lost = PINGS as usize - order.len();
    eprintln!("DPDK gateway, MOBIKE move of the peer: {lost} of {PINGS} pings lost");
    assert!(
        lost * 50 < 1000,
        "{lost} of {PINGS} pings lost across the move: {order:?}"
    );
    // After the move ESP reaches the peer at its new address only (the old
    // one is gone): the tunnel still carries traffic both ways.
    let (in_before, out_before) = peer.child_packets();
    let (sent, got) = support::traffic::ping(&ns.b, INNER_B, INNER_A, 5, "0.1");
    assert_eq!((sent, got), (5, 5), "ping through the moved tunnel");
    let (in_after, out_after) = peer.child_packets();
    assert!(
        in_after >= in_before + 5 && out_after >= out_before + 5,
        "the moved CHILD_SA carries the traffic: in {in_before}->{in_after}, out {out_before}->{out_after}"
    );
    let dp = cli_stats(&gw)["dataplane"].clone();
    let esp_out: u64 = dp["loops"]
        .as_array()
        .map_or(0, |l| l.iter().map(|x| u(&x["esp_out"]["packets"])).sum());
    assert!(esp_out >= PINGS as u64 / 2, "ESP out of the DPDK port: {dp:#}");
}

/// A profile naming a CPU this machine does not have stops the daemon at
/// start with a message naming the CPU (before EAL or any port starts).
#[test]
fn dpdk_gateway_refuses_a_cpu_that_does_not_exist() {
    let dir = tempfile::tempdir().unwrap();
    let missing = allowed_cpus().last().copied().unwrap_or(0) + 1000;
    let plan = (vec![missing], Vec::new());
    let profile_path = dir.path().join("af-packet.toml");
    std::fs::write(&profile_path, profile("nonexistent0", "nonexistent1", 1, Some(&plan))).unwrap();
    let config = dir.path().join("ironsa.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\nshards = 1\ncontrol_socket = \"{}\"\n\n[fastpath]\nhw_profile = \"{}\"\n",
            dir.path().join("ironsa.sock").display(),
            profile_path.display()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ironsa"))
        .args(["run", "--config"])
        .arg(&config)
        .env("IRONSA_LOG", "info")
        .output()
        .expect("run ironsa");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "started with poll CPU {missing}: {text}");
    assert!(
        text.contains(&format!("poll CPU {missing} does not exist")),
        "no clear error: {text}"
    );
    assert!(!text.contains("DPDK fastpath ready"), "{text}");
}
