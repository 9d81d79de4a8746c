//! Throw-away network namespaces for tests (names `ironsa-<pid>-<seq>-<side>`).
//!
//! Tests only send traffic inside their own namespaces; dropping a namespace
//! removes its interfaces (and the veth peer) with it.

use std::ffi::OsStr;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use super::util::{HarnessError, Result, next_seq, run, run_bounded};

/// Outer (veth) address of side A.
pub const OUTER_A: &str = "10.99.0.1";
/// Outer (veth) address of side B.
pub const OUTER_B: &str = "10.99.0.2";
/// Inner (protected) address of side A, on `lo`.
pub const INNER_A: &str = "10.1.0.1";
/// Inner (protected) address of side B, on `lo`.
pub const INNER_B: &str = "10.2.0.1";
/// Protected subnet of side A.
pub const SUBNET_A: &str = "10.1.0.0/24";
/// Protected subnet of side B.
pub const SUBNET_B: &str = "10.2.0.0/24";

/// One network namespace, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates namespace `name` with `lo` up.
    pub fn create(name: &str) -> Result<Self> {
        run("ip", &["netns", "add", name])?;
        let ns = Self { name: name.to_string() };
        ns.exec(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace name (for `ip netns exec`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs a command inside the namespace (10 s bound); fails on non-zero exit.
    pub fn exec<S: AsRef<OsStr>>(&self, argv: &[S]) -> Result<Output> {
        self.exec_bounded(argv, Duration::from_secs(10))
    }

    /// Runs a command inside the namespace, bounded by `limit`.
    pub fn exec_bounded<S: AsRef<OsStr>>(&self, argv: &[S], limit: Duration) -> Result<Output> {
        let mut args: Vec<&OsStr> = vec![OsStr::new("netns"), OsStr::new("exec"), OsStr::new(&self.name)];
        args.extend(argv.iter().map(|a| a.as_ref()));
        run_bounded("ip", &args, &[], limit)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Kill leftover processes (e.g. a ping) so the namespace can go away.
        if let Ok(out) = run("ip", &["netns", "pids", &self.name]) {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = run("kill", &["-KILL", pid]);
            }
        }
        if let Err(e) = run("ip", &["netns", "delete", &self.name]) {
            eprintln!("harness: cannot delete netns {}: {e}", self.name);
        }
    }
}

/// Two namespaces `a` and `b` joined by a veth pair: A has [`OUTER_A`]/24 on its
/// veth and [`INNER_A`]/32 on `lo`; B has [`OUTER_B`] and [`INNER_B`].
#[derive(Debug)]
pub struct NetnsPair {
    /// Side A.
    pub a: Netns,
    /// Side B.
    pub b: Netns,
    /// veth interface name inside A.
    pub veth_a: String,
    /// veth interface name inside B.
    pub veth_b: String,
}

impl NetnsPair {
    /// Creates the pair with unique names; removes stale `ironsa-*` namespaces left
    /// by dead test processes first.
    pub fn new() -> Result<Self> {
        remove_stale_namespaces();
        let pid = std::process::id();
        let seq = next_seq();
        let a = Netns::create(&format!("ironsa-{pid}-{seq}-a"))?;
        let b = Netns::create(&format!("ironsa-{pid}-{seq}-b"))?;
        // Interface names are limited to 15 bytes; create them inside A directly so
        // they never exist in the host namespace under a possibly clashing name.
        let veth_a = format!("va{pid}x{seq}");
        let veth_b = format!("vb{pid}x{seq}");
        if veth_a.len() > 15 {
            return Err(HarnessError::Usage(format!("veth name too long: {veth_a}")));
        }
        a.exec(&[
            "ip",
            "link",
            "add",
            &veth_a,
            "type",
            "veth",
            "peer",
            "name",
            &veth_b,
            "netns",
            b.name(),
        ])?;
        a.exec(&["ip", "addr", "add", &format!("{OUTER_A}/24"), "dev", &veth_a])?;
        a.exec(&["ip", "link", "set", &veth_a, "up"])?;
        a.exec(&["ip", "addr", "add", &format!("{INNER_A}/32"), "dev", "lo"])?;
        b.exec(&["ip", "addr", "add", &format!("{OUTER_B}/24"), "dev", &veth_b])?;
        b.exec(&["ip", "link", "set", &veth_b, "up"])?;
        b.exec(&["ip", "addr", "add", &format!("{INNER_B}/32"), "dev", "lo"])?;
        Ok(Self { a, b, veth_a, veth_b })
    }
}

/// Address of side A behind the NAT of [`NattedPair`].
pub const PRIVATE_A: &str = "192.168.77.2";
/// The NAT router's address on A's side (A's default gateway).
pub const PRIVATE_ROUTER: &str = "192.168.77.1";

/// Side A behind a masquerading NAT router `r` (nftables, in its own
/// namespace), side B outside: A has [`PRIVATE_A`]/24 and [`INNER_A`] on
/// `lo`; the router is [`OUTER_A`] towards B, so B sees A's traffic from
/// [`OUTER_A`] with ports the NAT chooses; B has [`OUTER_B`] and [`INNER_B`].
#[derive(Debug)]
pub struct NattedPair {
    /// Side A (behind the NAT).
    pub a: Netns,
    /// The NAT router.
    pub r: Netns,
    /// Side B.
    pub b: Netns,
}

impl NattedPair {
    /// Creates the three namespaces and the NAT.
    pub fn new() -> Result<Self> {
        remove_stale_namespaces();
        let pid = std::process::id();
        let seq = next_seq();
        let a = Netns::create(&format!("ironsa-{pid}-{seq}-a"))?;
        let r = Netns::create(&format!("ironsa-{pid}-{seq}-r"))?;
        let b = Netns::create(&format!("ironsa-{pid}-{seq}-b"))?;
        let (va, vra) = (format!("na{pid}x{seq}"), format!("nr{pid}x{seq}"));
        let (vb, vrb) = (format!("nb{pid}x{seq}"), format!("no{pid}x{seq}"));
        if vra.len() > 15 {
            return Err(HarnessError::Usage(format!("veth name too long: {vra}")));
        }
        a.exec(&[
            "ip",
            "link",
            "add",
            &va,
            "type",
            "veth",
            "peer",
            "name",
            &vra,
            "netns",
            r.name(),
        ])?;
        b.exec(&[
            "ip",
            "link",
            "add",
            &vb,
            "type",
            "veth",
            "peer",
            "name",
            &vrb,
            "netns",
            r.name(),
        ])?;
        a.exec(&["ip", "addr", "add", &format!("{PRIVATE_A}/24"), "dev", &va])?;
        a.exec(&["ip", "link", "set", &va, "up"])?;
        a.exec(&["ip", "route", "add", "default", "via", PRIVATE_ROUTER])?;
        a.exec(&["ip", "addr", "add", &format!("{INNER_A}/32"), "dev", "lo"])?;
        r.exec(&["ip", "addr", "add", &format!("{PRIVATE_ROUTER}/24"), "dev", &vra])?;
        r.exec(&["ip", "addr", "add", &format!("{OUTER_A}/24"), "dev", &vrb])?;
        r.exec(&["ip", "link", "set", &vra, "up"])?;
        r.exec(&["ip", "link", "set", &vrb, "up"])?;
        r.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        r.exec(&["nft", "add", "table", "ip", "nat"])?;
        r.exec(&[
            "nft",
            "add chain ip nat post { type nat hook postrouting priority 100; }",
        ])?;
        r.exec(&["nft", "add", "rule", "ip", "nat", "post", "oifname", &vrb, "masquerade"])?;
        b.exec(&["ip", "addr", "add", &format!("{OUTER_B}/24"), "dev", &vb])?;
        b.exec(&["ip", "link", "set", &vb, "up"])?;
        b.exec(&["ip", "addr", "add", &format!("{INNER_B}/32"), "dev", "lo"])?;
        Ok(Self { a, r, b })
    }

    /// Makes the router forget idle UDP mappings after `secs` and pick a
    /// random external port for each new mapping (so a flushed mapping
    /// comes back on another port).
    pub fn short_random_udp_mappings(&self, secs: u32) -> Result<()> {
        for key in ["nf_conntrack_udp_timeout", "nf_conntrack_udp_timeout_stream"] {
            self.r
                .exec(&["sysctl", "-q", "-w", &format!("net.netfilter.{key}={secs}")])?;
        }
        self.r.exec(&["nft", "flush", "chain", "ip", "nat", "post"])?;
        self.r.exec(&[
            "nft",
            "add",
            "rule",
            "ip",
            "nat",
            "post",
            "ip",
            "saddr",
            PRIVATE_A,
            "masquerade",
            "random",
        ])?;
        Ok(())
    }

    /// The UDP mappings the router's conntrack holds (`conntrack -L` lines).
    pub fn udp_mappings(&self) -> Result<Vec<String>> {
        let o = self.r.exec(&["conntrack", "-L", "-p", "udp"])?;
        Ok(String::from_utf8_lossy(&o.stdout).lines().map(str::to_string).collect())
    }

    /// Forgets every mapping: A's next packet gets a new external port.
    pub fn flush_mappings(&self) -> Result<()> {
        self.r.exec(&["conntrack", "-F"]).map(|_| ())
    }
}

/// Deletes namespaces named `ironsa-<pid>-<seq>-<a|b|r>` whose process is gone.
fn remove_stale_namespaces() {
    let Ok(out) = run("ip", &["netns", "list"]) else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let parts: Vec<&str> = name.split('-').collect();
        if parts.len() != 4 || parts[0] != "ironsa" || !matches!(parts[3], "a" | "b" | "r") {
            continue;
        }
        let (Ok(pid), Ok(_)) = (parts[1].parse::<u32>(), parts[2].parse::<u32>()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = run("ip", &["netns", "delete", name]);
        }
    }
}

/// Joins namespaces `a` and `b` with a veth pair: `a_addr` (with its prefix
/// length, e.g. `10.0.0.1/24`) on A's end, `b_addr` on B's; both up.
pub fn join(a: &Netns, b: &Netns, a_addr: &str, b_addr: &str) -> Result<()> {
    let seq = next_seq();
    let (end_a, end_b) = (
        format!("vj{}x{seq}a", std::process::id()),
        format!("vj{}x{seq}b", std::process::id()),
    );
    if end_a.len() > 15 {
        return Err(HarnessError::Usage(format!("veth name too long: {end_a}")));
    }
    a.exec(&[
        "ip",
        "link",
        "add",
        &end_a,
        "type",
        "veth",
        "peer",
        "name",
        &end_b,
        "netns",
        b.name(),
    ])?;
    a.exec(&["ip", "addr", "add", a_addr, "dev", &end_a])?;
    a.exec(&["ip", "link", "set", &end_a, "up"])?;
    b.exec(&["ip", "addr", "add", b_addr, "dev", &end_b])?;
    b.exec(&["ip", "link", "set", &end_b, "up"])?;
    Ok(())
}

/// The client's address in a [`GatewayFarm`].
pub const FARM_CLIENT: &str = "10.97.0.2";
/// The address every gateway of a [`GatewayFarm`] shares (anycast).
pub const FARM_VIP: &str = "10.96.0.10";
/// The router's own address in a [`GatewayFarm`] (for services the
/// gateways share, such as a store).
pub const FARM_ROUTER: &str = "10.95.0.1";

/// A client, a router and `n` gateways that share one address,
/// [`FARM_VIP`], as ECMP or anycast gateways do: the router sends what is
/// for the VIP to the gateway [`GatewayFarm::steer`] names. The client is
/// [`FARM_CLIENT`]; gateway `i` (from 0) is also `10.98.<i+1>.2`, which the
/// others reach through the router; [`FARM_ROUTER`] is on the router.
#[derive(Debug)]
pub struct GatewayFarm {
    /// The client.
    pub client: Netns,
    /// The router.
    pub router: Netns,
    /// The gateways.
    pub gateways: Vec<Netns>,
}

impl GatewayFarm {
    /// Creates the namespaces and links; the VIP goes to gateway 0.
    pub fn new(n: usize) -> Result<Self> {
        remove_stale_namespaces();
        let pid = std::process::id();
        let client = Netns::create(&format!("ironsa-{pid}-{}-a", next_seq()))?;
        let router = Netns::create(&format!("ironsa-{pid}-{}-r", next_seq()))?;
        let gateways = (0..n)
            .map(|_| Netns::create(&format!("ironsa-{pid}-{}-b", next_seq())))
            .collect::<Result<Vec<_>>>()?;
        router.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        // Replies of every gateway come from the VIP, whichever way the
        // router sends the VIP: no reverse-path filter.
        router.exec(&[
            "sysctl",
            "-qw",
            "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.default.rp_filter=0",
        ])?;
        router.exec(&["ip", "addr", "add", &format!("{FARM_ROUTER}/32"), "dev", "lo"])?;
        join(&router, &client, "10.97.0.1/24", &format!("{FARM_CLIENT}/24"))?;
        client.exec(&["ip", "route", "add", "default", "via", "10.97.0.1"])?;
        for (i, g) in gateways.iter().enumerate() {
            let net = i + 1;
            join(&router, g, &format!("10.98.{net}.1/24"), &format!("10.98.{net}.2/24"))?;
            g.exec(&["ip", "route", "add", "default", "via", &format!("10.98.{net}.1")])?;
            g.exec(&["ip", "addr", "add", &format!("{FARM_VIP}/32"), "dev", "lo"])?;
        }
        router.exec(&[
            "sh",
            "-c",
            "for f in /proc/sys/net/ipv4/conf/*/rp_filter; do echo 0 > $f; done",
        ])?;
        let farm = Self {
            client,
            router,
            gateways,
        };
        farm.steer(0)?;
        Ok(farm)
    }

    /// Gateway `i`'s own address.
    pub fn gateway_addr(i: usize) -> String {
        format!("10.98.{}.2", i + 1)
    }

    /// Sends everything for the VIP to gateway `i` from now on.
    pub fn steer(&self, i: usize) -> Result<()> {
        self.router.exec(&[
            "ip",
            "route",
            "replace",
            &format!("{FARM_VIP}/32"),
            "via",
            &Self::gateway_addr(i),
        ])?;
        Ok(())
    }
}
