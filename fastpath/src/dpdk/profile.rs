//! Hardware profiles: which backend, EAL arguments, ports, queues, offloads
//! and crypto mode a deployment uses, parsed from TOML (`hw-profiles/*.toml`).
//!
//! Parsing needs no DPDK, so the daemon can read a profile (and pick the
//! software backend) in builds without the `dpdk` feature.

use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::path::Path;
use thiserror::Error;

/// Which data plane runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// Kernel sockets / TUN (no DPDK).
    Software,
    /// DPDK poll-mode ports.
    Dpdk,
}

/// Where ESP encryption happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CryptoMode {
    /// aws-lc-rs on the worker cores, on the mbuf data (the default).
    #[default]
    Cpu,
    /// A DPDK crypto device (`crypto_aesni_gcm`, QAT...) with enqueue/dequeue bursts.
    Lookaside,
    /// intel-ipsec-mb's direct AES-GCM API on the poll loop's core (no crypto
    /// device, no enqueue/dequeue); other algorithms on aws-lc-rs.
    #[serde(rename = "cpu-ipsec-mb")]
    CpuIpsecMb,
    /// The NIC encrypts inline (rte_security inline crypto), software fallback.
    Inline,
}

/// What a port faces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PortRole {
    /// The unprotected side: IKE and ESP to and from peers.
    Outside,
    /// The protected side: cleartext to and from local networks.
    Inside,
    /// Both (one-armed setups and tests).
    #[default]
    Both,
}

/// One Ethernet port of a profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortSpec {
    /// DPDK device name: a vdev (`net_ring0`, `net_af_packet0`) or a PCI address.
    pub name: String,
    /// Which side it faces.
    #[serde(default)]
    pub role: PortRole,
    /// Our IP addresses on this port (answers ARP for the IPv4 ones; IKE and
    /// ESP to them are ours).
    #[serde(default)]
    pub addresses: Vec<IpAddr>,
    /// Next-hop MAC for destinations not learned from received packets
    /// (`aa:bb:cc:dd:ee:ff`; default: broadcast).
    #[serde(default)]
    pub gateway_mac: Option<String>,
}

/// Port offloads requested (each masked by what the device offers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Offloads {
    /// Spread receive over the queues by RSS (IP/UDP hash), so one peer's SAs
    /// stay on one core; without RSS one queue is polled and ESP is steered to
    /// workers by SPI in software.
    pub rss: bool,
    /// Receive IPv4/UDP/TCP checksum verification.
    pub rx_checksum: bool,
    /// Transmit mbufs return to their pool without refcount checks.
    pub tx_fast_free: bool,
    /// The device spreads received frames over its rx queues without RSS
    /// (`net_af_packet` with `qpairs` > 1 hashes flows over its packet
    /// sockets): every loop polls its own rx queue; ESP is still steered to
    /// its loop by SPI.
    pub rx_fanout: bool,
}

impl Default for Offloads {
    fn default() -> Self {
        Self {
            rss: true,
            rx_checksum: false,
            tx_fast_free: false,
            rx_fanout: false,
        }
    }
}

/// Crypto settings.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CryptoSpec {
    /// CPU, lookaside or inline.
    pub mode: CryptoMode,
    /// Crypto device name for lookaside (`crypto_aesni_gcm0`, a QAT VF...).
    pub device: Option<String>,
    /// Crypto device queue descriptors (default 2048).
    pub descriptors: Option<u32>,
}

/// Sizes of pools, rings and bursts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Sizing {
    /// mbufs in the packet pool.
    pub mbufs: u32,
    /// Per-lcore mbuf cache.
    pub mbuf_cache: u32,
    /// rx/tx descriptors per queue.
    pub descriptors: u16,
    /// Packets per rx burst (at most 64).
    pub burst: u16,
    /// Capacity of each worker's steering ring.
    pub ring: u32,
}

impl Default for Sizing {
    fn default() -> Self {
        Self {
            mbufs: 16383,
            mbuf_cache: 256,
            descriptors: 1024,
            burst: 32,
            ring: 4096,
        }
    }
}

/// Which CPUs the data plane's threads run on (Linux CPU numbers, as in
/// `/sys/devices/system/cpu`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CpuSpec {
    /// The CPU of each poll loop, in loop (queue) order, one per queue; each
    /// loop's thread is pinned to its CPU. Empty: the loops are not pinned.
    /// Normally the CPUs of EAL's worker lcores (`-l`).
    pub poll: Vec<usize>,
    /// The CPUs of everything else (IKE shards, the IKE forwarder, the
    /// control socket and metrics endpoint): keeps the control plane off the
    /// poll loops' CPUs. Empty: not restricted.
    pub control: Vec<usize>,
}

/// CPU numbers must be below this (glibc's `CPU_SETSIZE`).
pub const MAX_CPU: usize = 1024;

/// `0-3,6` for `[0, 1, 2, 3, 6]` (the kernel's cpu list format); `cpus` ascending.
pub fn format_cpu_list(cpus: &[usize]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let start = cpus[i];
        let mut end = start;
        while i + 1 < cpus.len() && cpus[i + 1] == end + 1 {
            i += 1;
            end = cpus[i];
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    out.join(",")
}

/// What hardware a profile is meant for (used by `hw-probe` to pick one).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MatchSpec {
    /// Port drivers this profile fits (`net_mlx5`, `net_ice`...); empty = any.
    pub port_drivers: Vec<String>,
    /// Crypto drivers it needs (one of them); empty = none needed.
    pub crypto_drivers: Vec<String>,
    /// It needs a port with rte_security inline IPsec.
    pub inline_ipsec: bool,
}

/// A hardware profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HwProfile {
    /// Short name (`dpdk-aesni`).
    pub name: String,
    /// One line for humans.
    #[serde(default)]
    pub description: String,
    /// Software or DPDK.
    pub backend: BackendKind,
    /// EAL arguments (without the program name).
    #[serde(default)]
    pub eal_args: Vec<String>,
    /// Ports, by DPDK device name.
    #[serde(default)]
    pub ports: Vec<PortSpec>,
    /// Queues per port = poll loops (one per lcore).
    #[serde(default = "one")]
    pub queues: u16,
    /// Offloads.
    #[serde(default)]
    pub offloads: Offloads,
    /// Crypto mode and device.
    #[serde(default)]
    pub crypto: CryptoSpec,
    /// Pool and burst sizes.
    #[serde(default)]
    pub sizing: Sizing,
    /// CPUs of the poll loops and the control plane.
    #[serde(default)]
    pub cpus: CpuSpec,
    /// Hardware this profile is for.
    #[serde(default, rename = "match")]
    pub matches: MatchSpec,
}

fn one() -> u16 {
    1
}

/// A profile could not be read or is inconsistent.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ProfileError {
    /// Reading the file failed.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The TOML does not describe a profile.
    #[error("parsing profile: {0}")]
    Parse(String),
    /// A profile file failed to parse or validate.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: String,
        /// What is wrong in it.
        source: Box<ProfileError>,
    },
    /// The profile is inconsistent.
    #[error("invalid profile {name}: {reason}")]
    Invalid {
        /// Profile name.
        name: String,
        /// What is wrong.
        reason: String,
    },
}

/// Most ports a profile may list (RTE_MAX_ETHPORTS of the system DPDK build).
pub const MAX_PORTS: usize = 32;

/// Largest number of queues (poll loops) per port.
pub const MAX_QUEUES: u16 = 64;

impl HwProfile {
    /// Parses and validates a profile from TOML text.
    pub fn from_toml(text: &str) -> Result<Self, ProfileError> {
        let p: HwProfile = toml::from_str(text).map_err(|e| ProfileError::Parse(e.to_string()))?;
        p.validate()?;
        Ok(p)
    }

    /// Reads, parses and validates a profile file.
    pub fn load(path: &Path) -> Result<Self, ProfileError> {
        let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text).map_err(|e| ProfileError::File {
            path: path.display().to_string(),
            source: Box::new(e),
        })
    }

    /// Every `*.toml` profile in `dir`, sorted by file name.
    pub fn load_dir(dir: &Path) -> Result<Vec<Self>, ProfileError> {
        let io = |source| ProfileError::Io {
            path: dir.display().to_string(),
            source,
        };
        let mut paths: Vec<_> = std::fs::read_dir(dir)
            .map_err(io)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        paths.sort();
        paths.iter().map(|p| Self::load(p)).collect()
    }

    fn invalid(&self, reason: impl Into<String>) -> ProfileError {
        ProfileError::Invalid {
            name: self.name.clone(),
            reason: reason.into(),
        }
    }

    /// Checks the profile's consistency.
    pub fn validate(&self) -> Result<(), ProfileError> {
        if self.name.is_empty() {
            return Err(self.invalid("empty name"));
        }
        self.validate_cpus()?;
        if self.backend == BackendKind::Software {
            if self.crypto.mode != CryptoMode::Cpu {
                return Err(self.invalid("the software backend only has CPU crypto"));
            }
            return Ok(());
        }
        if self.eal_args.is_empty() {
            return Err(self.invalid("a DPDK profile needs eal_args"));
        }
        if self.ports.is_empty() {
            return Err(self.invalid("a DPDK profile needs at least one port"));
        }
        if self.ports.len() > MAX_PORTS {
            return Err(self.invalid(format!(
                "{} ports listed; DPDK is built for at most {MAX_PORTS}",
                self.ports.len()
            )));
        }
        if !(1..=MAX_QUEUES).contains(&self.queues) {
            return Err(self.invalid(format!("queues must be 1..={MAX_QUEUES}")));
        }
        let outside = self.ports.iter().any(|p| p.role != PortRole::Inside);
        let inside = self.ports.iter().any(|p| p.role != PortRole::Outside);
        if !outside || !inside {
            return Err(self.invalid("needs an outside and an inside port (or one `both` port)"));
        }
        for (i, p) in self.ports.iter().enumerate() {
            if p.name.is_empty() {
                return Err(self.invalid(format!("port {i} has no name")));
            }
            if self.ports[..i].iter().any(|q| q.name == p.name) {
                return Err(self.invalid(format!("port {} listed twice", p.name)));
            }
            if let Some(mac) = &p.gateway_mac {
                parse_mac(mac).ok_or_else(|| self.invalid(format!("port {}: bad gateway_mac {mac:?}", p.name)))?;
            }
        }
        if self.crypto.mode == CryptoMode::Lookaside && self.crypto.device.is_none() {
            return Err(self.invalid("lookaside crypto needs crypto.device"));
        }
        if self.crypto.mode == CryptoMode::CpuIpsecMb && self.crypto.device.is_some() {
            return Err(self.invalid(
                "cpu-ipsec-mb crypto calls intel-ipsec-mb directly and takes no crypto.device (remove it, and its vdev)",
            ));
        }
        let s = &self.sizing;
        if !(1..=64).contains(&s.burst) {
            return Err(self.invalid("sizing.burst must be 1..=64"));
        }
        if s.mbufs < 1024 || s.descriptors < 32 || s.ring < 64 {
            return Err(self.invalid("sizing too small (mbufs >= 1024, descriptors >= 32, ring >= 64)"));
        }
        Ok(())
    }
}

impl HwProfile {
    /// `[cpus]`: one poll CPU per queue, no CPU twice, control off the poll CPUs.
    /// (Whether the CPUs exist is checked on the machine that runs the profile.)
    fn validate_cpus(&self) -> Result<(), ProfileError> {
        let c = &self.cpus;
        if !c.poll.is_empty() && c.poll.len() != usize::from(self.queues) {
            return Err(self.invalid(format!(
                "cpus.poll names {} CPUs for {} queues (one per poll loop)",
                c.poll.len(),
                self.queues
            )));
        }
        for (role, list) in [("poll", &c.poll), ("control", &c.control)] {
            for (i, cpu) in list.iter().enumerate() {
                if *cpu >= MAX_CPU {
                    return Err(self.invalid(format!("cpus.{role}: CPU {cpu} is not below {MAX_CPU}")));
                }
                if list[..i].contains(cpu) {
                    return Err(self.invalid(format!("cpus.{role}: CPU {cpu} listed twice")));
                }
            }
        }
        if let Some(cpu) = c.control.iter().find(|cpu| c.poll.contains(cpu)) {
            return Err(self.invalid(format!(
                "CPU {cpu} is in both cpus.poll and cpus.control (the control plane stays off the poll CPUs)"
            )));
        }
        if self.backend == BackendKind::Software && (!c.poll.is_empty() || !c.control.is_empty()) {
            return Err(self.invalid("[cpus] is for DPDK profiles"));
        }
        Ok(())
    }
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut out {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_profiles_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../hw-profiles");
        let all = HwProfile::load_dir(&dir).unwrap();
        let names: Vec<_> = all.iter().map(|p| p.name.as_str()).collect();
        for want in [
            "software",
            "dpdk-cpu",
            "dpdk-ipsec-mb",
            "dpdk-aesni",
            "qat-lookaside",
            "mlx5-inline",
            "intel-inline",
            "ci-vdev",
        ] {
            assert!(names.contains(&want), "missing profile {want}: {names:?}");
        }
    }

    #[test]
    fn truncated_oversized_and_hostile_profiles_are_errors_naming_the_file() {
        let good = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../hw-profiles/af-packet.toml"))
            .expect("shipped profile");
        assert!(HwProfile::from_toml(&good).is_ok());
        // Every truncation is an error or a valid profile, never a panic.
        for cut in (0..good.len()).filter(|&i| good.is_char_boundary(i)) {
            let _ = HwProfile::from_toml(&good[..cut]);
        }
        let hostile = [
            format!("{good}
queues = 70000
"),
            "name = \"x\"\nbackend = \"dpdk\"\neal_args = [\"-l\", \"0\"]\n[[ports]]\nname = \"net_ring0\"\n[sizing]\nmbufs = 18446744073709551616\n".to_string(),
            format!("name = \"{}\"\nbackend = \"dpdk\"\n", "x".repeat(1 << 20)),
            "[".repeat(10_000),
            "name = \"x\"\nbackend = \"dpdk\"\neal_args = [\"-l\", \"0\"]\n".to_string() + &"[[ports]]\nname = \"net_null0\"\n".repeat(2000),
        ];
        for h in &hostile {
            assert!(
                HwProfile::from_toml(h).is_err(),
                "accepted a hostile profile ({} bytes)",
                h.len()
            );
        }
        let path = std::env::temp_dir().join(format!("ironsa-profile-{}-broken.toml", std::process::id()));
        std::fs::write(&path, "name = \"x\"\nbackend = \"dpdk\"\nqueues = \"many\"\n").expect("write");
        let msg = HwProfile::load(&path).expect_err("type error").to_string();
        let _ = std::fs::remove_file(&path);
        assert!(
            msg.contains("broken.toml") && msg.contains("queues") && msg.contains("line 3"),
            "{msg}"
        );
    }

    #[test]
    fn rejects_inconsistent_profiles() {
        let base = r#"
            name = "x"
            backend = "dpdk"
            eal_args = ["-l", "0"]
            [[ports]]
            name = "net_ring0"
        "#;
        assert!(HwProfile::from_toml(base).is_ok());
        let fanout = HwProfile::from_toml(&format!("{base}\n[offloads]\nrss = false\nrx_fanout = true\n")).unwrap();
        assert!(fanout.offloads.rx_fanout && !fanout.offloads.rss);
        assert!(!HwProfile::from_toml(base).unwrap().offloads.rx_fanout);
        let bad = [
            base.replace("backend = \"dpdk\"", "backend = \"dpdk\"\nqueues = 0"),
            base.replace("name = \"net_ring0\"", "name = \"net_ring0\"\nrole = \"inside\""),
            base.replace("eal_args = [\"-l\", \"0\"]", ""),
            format!("{base}\n[crypto]\nmode = \"lookaside\"\n"),
            format!("{base}\n[crypto]\nmode = \"cpu-ipsec-mb\"\ndevice = \"crypto_aesni_gcm0\"\n"),
            format!("{base}\ngateway_mac = \"zz:00:00:00:00:00\"\n"),
            base.replace("backend", "bakend"),
            format!("{base}\n[sizing]\nburst = 65\n"),
            format!("{base}\n[cpus]\npoll = [1, 2]\n"),
            format!("{base}\n[cpus]\npoll = [1]\ncontrol = [0, 1]\n"),
            format!("{base}\n[cpus]\ncontrol = [0, 0]\n"),
            format!("{base}\n[cpus]\npoll = [1024]\n"),
            format!("{base}\n[cpus]\npool = [1]\n"),
        ];
        for b in bad {
            assert!(HwProfile::from_toml(&b).is_err(), "accepted:\n{b}");
        }
        let imb = HwProfile::from_toml(&format!("{base}\n[crypto]\nmode = \"cpu-ipsec-mb\"\n")).unwrap();
        assert_eq!(imb.crypto.mode, CryptoMode::CpuIpsecMb);
        let pinned = HwProfile::from_toml(&format!("{base}\n[cpus]\npoll = [3]\ncontrol = [0, 1]\n")).unwrap();
        assert_eq!(pinned.cpus.poll, vec![3]);
        assert_eq!(pinned.cpus.control, vec![0, 1]);
        assert_eq!(HwProfile::from_toml(base).unwrap().cpus, CpuSpec::default());
        assert_eq!(format_cpu_list(&[0, 1, 2, 3, 6, 8, 9]), "0-3,6,8-9");
        assert_eq!(format_cpu_list(&[]), "");
        assert_eq!(parse_mac("02:00:00:00:00:0a"), Some([2, 0, 0, 0, 0, 10]));
        assert_eq!(parse_mac("02:00:00:00:00"), None);
        assert_eq!(parse_mac("02:00:00:00:00:00:00"), None);
    }
}
