//! The daemon's TOML configuration: parsing into the control core's model,
//! with errors that name the file, the line and the key.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use control::config::{
    AuthConfig, ChildConfig, ConnectionConfig, IdentityMatch, IkeVersions, IpsecMode, Lifetime, LocalCert,
    parse_identity,
};
use control::endpoint::AdmissionConfig;
use control::pki::{Certificate, PrivateKey, TrustStore};
use serde::Deserialize;
use toml::Spanned;

/// A configuration error, located in the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read: {source}")]
    Io {
        /// The file.
        file: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A syntax or type error, or an invalid value.
    #[error("{file}:{line}: {key}: {message}")]
    Invalid {
        /// The file.
        file: PathBuf,
        /// 1-based line.
        line: usize,
        /// The key (dotted path) at fault.
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// A warning about a configuration that works but is risky.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning {
    /// 1-based line.
    pub line: usize,
    /// The key.
    pub key: String,
    /// The warning.
    pub message: String,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    daemon: RawDaemon,
    #[serde(default)]
    dos: RawDos,
    #[serde(default)]
    fastpath: RawFastpath,
    cluster: Option<Spanned<RawCluster>>,
    #[serde(default)]
    connection: Vec<Spanned<RawConnection>>,
    #[serde(default)]
    pool: Vec<Spanned<RawPool>>,
    #[serde(default)]
    eap: RawEap,
    radius: Option<Spanned<RawRadius>>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct RawEap {
    users_file: Option<Spanned<String>>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawPool {
    name: Spanned<String>,
    addrs: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    dns: Vec<Spanned<String>>,
    #[serde(default)]
    nbns: Vec<Spanned<String>>,
    #[serde(default)]
    subnets: Vec<Spanned<String>>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawRadius {
    #[serde(default)]
    server: Vec<Spanned<RawRadiusServer>>,
    timeout: Option<Spanned<toml::Value>>,
    tries: Option<Spanned<u32>>,
    max_outstanding: Option<Spanned<usize>>,
    nas_identifier: Option<Spanned<String>>,
    #[serde(default)]
    accounting_server: Vec<Spanned<RawRadiusServer>>,
    interim_interval: Option<Spanned<toml::Value>>,
    dae_listen: Option<Spanned<String>>,
    #[serde(default)]
    dae_client: Vec<Spanned<RawRadiusServer>>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawRadiusServer {
    address: Spanned<String>,
    secret_file: Spanned<String>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    node: Spanned<i64>,
    store: Spanned<Vec<Spanned<String>>>,
    name: Option<Spanned<String>>,
    link: Spanned<String>,
    link_key: Spanned<String>,
    cluster_key: Spanned<String>,
    lease: Option<Spanned<toml::Value>>,
    checkpoint_interval: Option<Spanned<toml::Value>>,
    address: Option<Spanned<String>>,
    redirect_margin: Option<Spanned<i64>>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct RawDaemon {
    listen: Option<Vec<Spanned<String>>>,
    ike_port: Option<u16>,
    nat_port: Option<u16>,
    shards: Option<Spanned<usize>>,
    control_socket: Option<String>,
    control_socket_group: Option<Spanned<String>>,
    metrics: Option<Spanned<String>>,
    log_level: Option<Spanned<String>>,
    keylog: Option<Spanned<String>>,
    expected_tunnels: Option<Spanned<usize>>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct RawDos {
    cookie_threshold: Option<usize>,
    cookie_calm_down: Option<Spanned<toml::Value>>,
    per_source_half_open: Option<usize>,
    max_half_open: Option<usize>,
    cookie_rotation: Option<Spanned<toml::Value>>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct RawFastpath {
    backend: Option<Spanned<String>>,
    hw_profile: Option<Spanned<String>>,
    tun_name: Option<String>,
    workers: Option<Spanned<usize>>,
    install_routes: Option<bool>,
    socket_buffer: Option<Spanned<toml::Value>>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawConnection {
    name: Spanned<String>,
    #[serde(default)]
    remote_addrs: Vec<Spanned<String>>,
    #[serde(default)]
    local_addrs: Vec<Spanned<String>>,
    remote_port: Option<u16>,
    remote_nat_port: Option<u16>,
    local_id: Spanned<String>,
    remote_id: Spanned<String>,
    auth: Option<Spanned<String>>,
    remote_auth: Option<Spanned<String>>,
    remote_auth2: Option<Spanned<String>>,
    eap_id: Option<Spanned<String>>,
    eap_only: Option<bool>,
    psk: Option<Spanned<String>>,
    ppk_id: Option<Spanned<String>>,
    ppk_file: Option<Spanned<String>>,
    ppk_required: Option<Spanned<bool>>,
    cert: Option<Spanned<String>>,
    key: Option<Spanned<String>>,
    #[serde(default)]
    cacerts: Vec<Spanned<String>>,
    ike_proposals: Spanned<String>,
    ike_rekey: Option<Spanned<toml::Value>>,
    dpd_delay: Option<Spanned<toml::Value>>,
    nat_keepalive: Option<Spanned<toml::Value>>,
    fragmentation: Option<bool>,
    fragment_size: Option<usize>,
    force_udp_encap: Option<bool>,
    aggressive: Option<Spanned<bool>>,
    mode_config: Option<Spanned<String>>,
    xauth_user: Option<Spanned<String>>,
    xauth_password: Option<Spanned<String>>,
    mobike: Option<bool>,
    version: Option<Spanned<toml::Value>>,
    start_action: Option<Spanned<String>>,
    #[serde(default)]
    pools: Vec<Spanned<String>>,
    #[serde(default)]
    vips: Vec<Spanned<String>>,
    #[serde(default)]
    child: Vec<Spanned<RawChild>>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawChild {
    name: Spanned<String>,
    local_ts: Spanned<RawSelectors>,
    remote_ts: Spanned<RawSelectors>,
    esp_proposals: Spanned<String>,
    mode: Option<Spanned<String>>,
    rekey: Option<Spanned<toml::Value>>,
    rekey_bytes: Option<u64>,
    rekey_packets: Option<u64>,
    replay_window: Option<Spanned<i64>>,
}

/// `local_ts` / `remote_ts`: a list of selectors, or `"dynamic"` (alone or
/// as the only entry of the list).
#[derive(Debug)]
enum RawSelectors {
    Dynamic,
    List(Vec<Spanned<String>>),
}

impl<'de> Deserialize<'de> for RawSelectors {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Selectors;
        impl<'de> serde::de::Visitor<'de> for Selectors {
            type Value = RawSelectors;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a list of traffic selectors or \"dynamic\"")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<RawSelectors, E> {
                if s == DYNAMIC {
                    Ok(RawSelectors::Dynamic)
                } else {
                    Err(E::custom(format!("'{s}': write a list of selectors, or \"dynamic\"")))
                }
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<RawSelectors, A::Error> {
                let mut list: Vec<Spanned<String>> = Vec::new();
                while let Some(s) = seq.next_element()? {
                    list.push(s);
                }
                Ok(match &list[..] {
                    [only] if only.get_ref() == DYNAMIC => RawSelectors::Dynamic,
                    _ => RawSelectors::List(list),
                })
            }
        }
        d.deserialize_any(Selectors)
    }
}

/// The selector that stands for the peer's virtual IPs, else its address.
const DYNAMIC: &str = "dynamic";

/// One `[[pool]]`: virtual IPs for road warriors and what comes with them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolSection {
    /// The name connections refer to in `pools`.
    pub name: String,
    /// Its ranges.
    pub ranges: Vec<control::pool::AddrRange>,
    /// DNS servers sent with its addresses.
    pub dns: Vec<IpAddr>,
    /// NBNS (WINS) servers sent with its addresses.
    pub nbns: Vec<std::net::Ipv4Addr>,
    /// Networks behind the gateway announced with its addresses.
    pub subnets: Vec<(IpAddr, u8)>,
}

impl PoolSection {
    /// An empty pool of these ranges.
    pub fn pool(&self) -> Result<control::pool::Pool, control::pool::PoolError> {
        control::pool::Pool::new(&self.name, &self.ranges)
    }
}

/// The daemon's pools, built from the sections (names and ranges checked).
pub fn build_pools(sections: &[PoolSection]) -> Result<control::pool::Pools, control::pool::PoolError> {
    control::pool::Pools::new(sections.iter().map(PoolSection::pool).collect::<Result<_, _>>()?)
}

/// What the data plane applies to a child template's SAs that IKE does not
/// negotiate (`[[connection.child]]`: `rekey_bytes`, `rekey_packets`,
/// `replay_window`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChildDataSettings {
    /// Soft byte lifetime (0 = none); the hard one is 10 % later.
    pub rekey_bytes: u64,
    /// Soft packet lifetime (0 = none); the hard one is 10 % later.
    pub rekey_packets: u64,
    /// Anti-replay window of the inbound SA, in packets.
    pub replay_window: u32,
}

impl Default for ChildDataSettings {
    fn default() -> Self {
        Self {
            rekey_bytes: 0,
            rekey_packets: 0,
            replay_window: fastpath::esp::replay::DEFAULT_WINDOW,
        }
    }
}

/// [`ChildDataSettings`] of the child templates that differ from the
/// defaults, keyed by (connection, child).
pub type ChildSettings = std::collections::HashMap<(String, String), ChildDataSettings>;

/// What to do with a connection at start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartAction {
    /// Wait for the peer.
    None,
    /// Initiate at start.
    Start,
}

/// One connection with its daemon-level settings.
#[derive(Clone, Debug)]
pub struct Connection {
    /// The control core's model.
    pub config: Arc<ConnectionConfig>,
    /// Peer IKE port (500 by default).
    pub remote_port: u16,
    /// Initiate at start?
    pub start_action: StartAction,
}

/// A group allowed on the control socket, resolved when the file is read so
/// that a misspelt name is a configuration error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlGroup {
    /// The name as configured.
    pub name: String,
    /// Its numeric id.
    pub gid: u32,
}

impl ControlGroup {
    fn lookup(name: &str) -> Result<Self, String> {
        match nix::unistd::Group::from_name(name) {
            Ok(Some(g)) => Ok(Self {
                name: name.to_string(),
                gid: g.gid.as_raw(),
            }),
            Ok(None) => Err(format!("no group '{name}' on this system")),
            Err(e) => Err(format!("cannot look up group '{name}': {e}")),
        }
    }
}

/// Fastpath backend selection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FastpathBackend {
    /// No data plane: IKE only (CHILD_SAs are negotiated but not installed anywhere).
    None,
    /// The software fastpath (TUN + UDP/raw sockets).
    Software,
    /// The DPDK backend on the ports of this hardware profile (IKE included);
    /// only in builds with `--features dpdk`.
    Dpdk(Box<fastpath::dpdk::profile::HwProfile>),
}

/// The whole daemon configuration.
#[derive(Clone, Debug)]
pub struct DaemonConfig {
    /// The file it came from.
    pub file: PathBuf,
    /// Addresses to listen on (wildcards `0.0.0.0`/`::` allowed: replies leave from the address a request came to).
    pub listen: Vec<IpAddr>,
    /// IKE port.
    pub ike_port: u16,
    /// NAT-T port.
    pub nat_port: u16,
    /// Number of control-plane shards.
    pub shards: usize,
    /// Control socket path.
    pub control_socket: PathBuf,
    /// The group whose members may use the control socket's verbs that
    /// change state (root only when None).
    pub control_group: Option<ControlGroup>,
    /// Prometheus endpoint.
    pub metrics: Option<std::net::SocketAddr>,
    /// Initial log level / filter.
    pub log_level: String,
    /// Where to write Wireshark decryption keys (off when None).
    pub keylog: Option<PathBuf>,
    /// Tunnels to size memory and tables for at start (0 = grow on demand).
    pub expected_tunnels: usize,
    /// Anti-DoS thresholds.
    pub admission: AdmissionConfig,
    /// Data-plane backend.
    pub fastpath: FastpathBackend,
    /// Hardware profile file, if any.
    pub hw_profile: Option<PathBuf>,
    /// TUN device name for the software fastpath.
    pub tun_name: String,
    /// Fastpath worker threads.
    pub fastpath_workers: usize,
    /// Route remote selectors into the TUN device.
    pub install_routes: bool,
    /// Receive and send buffer of each data-plane socket, in bytes.
    pub socket_buffer: usize,
    /// Byte/packet lifetimes and replay windows per (connection, child), for
    /// the data plane (children with the defaults are left out).
    pub child_settings: ChildSettings,
    /// Clustering (`[cluster]`); `None`: this node runs alone, with no store.
    pub cluster: Option<crate::cluster::ClusterConfig>,
    /// Connections.
    pub connections: Vec<Connection>,
    /// Address pools (`[[pool]]`).
    pub pools: Vec<PoolSection>,
    /// The local EAP users (`[eap] users_file`).
    pub eap_users: Option<Arc<crate::aaa::users::LocalUsers>>,
    /// The RADIUS client for `remote_auth = "eap-radius"` (`[radius]`).
    pub radius: Option<RadiusSettings>,
    /// Risky but valid settings.
    pub warnings: Vec<ConfigWarning>,
}

/// The `[radius]` table: the client's servers, retransmission and failover.
#[derive(Clone, Debug)]
pub struct RadiusSettings {
    /// Servers, secrets, timeout, tries per server, requests in flight.
    pub client: crate::aaa::client::ClientConfig,
    /// The NAS-Identifier sent in every Access-Request.
    pub nas_identifier: String,
    /// The accounting servers (`[[radius.accounting_server]]`), with the
    /// same timeout, tries and bound as `client`; `None`: no accounting.
    pub accounting: Option<crate::aaa::client::ClientConfig>,
    /// Interim-Updates of sessions whose Access-Accept names no interval.
    pub interim_interval: Option<Duration>,
    /// The dynamic-authorization listener (`dae_listen`, `[[radius.dae_client]]`).
    pub dae: Option<crate::aaa::dae::DaeConfig>,
}

/// Upper bound of `daemon.expected_tunnels` (≈ 80 GiB of pre-faulted memory).
pub const MAX_EXPECTED_TUNNELS: usize = 10_000_000;

/// The key assigned on the line holding byte `offset` of `text`
/// (`key = value`), if that line is an assignment.
fn key_on_line(text: &str, offset: usize) -> Option<String> {
    let start = text.get(..offset)?.rfind('\n').map_or(0, |i| i + 1);
    let line = text[start..].lines().next()?;
    let (key, _) = line.split_once('=')?;
    let key = key.trim();
    (!key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '"')))
    .then(|| key.trim_matches('"').to_string())
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].bytes().filter(|b| *b == b'\n').count() + 1
}

/// Parses a duration: an integer number of seconds or a string such as `30s`, `10m`, `4h`, `1d`.
pub fn parse_duration(v: &toml::Value) -> Result<Duration, String> {
    match v {
        toml::Value::Integer(i) if *i >= 0 => Ok(Duration::from_secs(*i as u64)),
        toml::Value::String(s) => {
            let s = s.trim();
            let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
            let (num, unit) = s.split_at(split);
            let n: u64 = num
                .parse()
                .map_err(|_| format!("'{s}' is not a duration (e.g. 30s, 10m, 4h)"))?;
            let mult = match unit.trim() {
                "" | "s" => 1,
                "m" => 60,
                "h" => 3600,
                "d" => 86400,
                u => return Err(format!("unknown duration unit '{u}' (use s, m, h or d)")),
            };
            Ok(Duration::from_secs(n.saturating_mul(mult)))
        }
        other => Err(format!("expected a duration, found {}", other.type_str())),
    }
}

/// Default of `[fastpath] socket_buffer`: room for bursts of tens of
/// thousands of packets while a receive thread is busy.
pub const DEFAULT_SOCKET_BUFFER: usize = 32 << 20;
/// Bounds of `[fastpath] socket_buffer`.
const SOCKET_BUFFER_RANGE: std::ops::RangeInclusive<u64> = (64 << 10)..=(1 << 30);

/// Parses `[fastpath] socket_buffer`: bytes as an integer or a string with
/// a `K`, `M` or `G` suffix (powers of 1024), within [`SOCKET_BUFFER_RANGE`].
fn parse_socket_buffer(v: &toml::Value) -> Result<usize, String> {
    let bytes = match v {
        toml::Value::Integer(i) => u64::try_from(*i).map_err(|_| format!("{i} is negative"))?,
        toml::Value::String(s) => {
            let t = s.trim();
            let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
            let (num, unit) = t.split_at(split);
            let n: u64 = num.parse().map_err(|_| format!("'{s}' is not a size (e.g. 32M)"))?;
            let mult: u64 = match unit.trim() {
                "" => 1,
                "K" | "k" => 1 << 10,
                "M" | "m" => 1 << 20,
                "G" | "g" => 1 << 30,
                u => return Err(format!("unknown size unit '{u}' (use K, M or G)")),
            };
            n.saturating_mul(mult)
        }
        other => return Err(format!("expected a size in bytes, found {}", other.type_str())),
    };
    if !SOCKET_BUFFER_RANGE.contains(&bytes) {
        return Err(format!(
            "{bytes} bytes is outside {}..={} (64K..1G)",
            SOCKET_BUFFER_RANGE.start(),
            SOCKET_BUFFER_RANGE.end()
        ));
    }
    usize::try_from(bytes).map_err(|_| format!("{bytes} bytes does not fit this machine"))
}

/// Rough entropy estimate of a PSK in bits (character classes × length).
fn psk_entropy_bits(psk: &str) -> f64 {
    let mut classes = 0.0;
    if psk.chars().any(|c| c.is_ascii_lowercase()) {
        classes += 26.0;
    }
    if psk.chars().any(|c| c.is_ascii_uppercase()) {
        classes += 26.0;
    }
    if psk.chars().any(|c| c.is_ascii_digit()) {
        classes += 10.0;
    }
    if psk.chars().any(|c| !c.is_ascii_alphanumeric()) {
        classes += 32.0;
    }
    let distinct = {
        let mut v: Vec<char> = psk.chars().collect();
        v.sort_unstable();
        v.dedup();
        v.len() as f64
    };
    let per_char = f64::log2(f64::max(classes, 2.0)).min(f64::log2(distinct.max(2.0)) + 1.0);
    per_char * psk.chars().count() as f64
}

/// The IKE addresses of a DPDK gateway: those of the profile's outside-facing
/// ports; `daemon.listen`, when given, must name some of them. An error
/// carries the offset of the offending listen entry, if any.
fn dpdk_listen(
    profile: &fastpath::dpdk::profile::HwProfile,
    configured: Option<&[Spanned<String>]>,
    parsed: Vec<IpAddr>,
) -> Result<Vec<IpAddr>, (Option<usize>, String)> {
    use fastpath::dpdk::profile::PortRole;
    let ports: Vec<IpAddr> = profile
        .ports
        .iter()
        .filter(|p| p.role != PortRole::Inside)
        .flat_map(|p| p.addresses.iter().copied())
        .collect();
    if ports.is_empty() {
        return Err((
            None,
            format!(
                "profile '{}' gives its outside ports no addresses: IKE needs one ([[ports]] addresses)",
                profile.name
            ),
        ));
    }
    let Some(list) = configured else {
        return Ok(ports);
    };
    for (s, ip) in list.iter().zip(&parsed) {
        if !ports.contains(ip) {
            return Err((
                Some(s.span().start),
                format!(
                    "{ip} is not an address of an outside port of profile '{}' ({})",
                    profile.name,
                    ports.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", ")
                ),
            ));
        }
    }
    Ok(parsed)
}

/// Upper bound of `daemon.shards`: the shard index lives in the top bits of
/// every local IKE SPI.
pub const MAX_SHARDS: usize = 64;

/// Where the daemon listens for `ironsa` commands when `[daemon]
/// control_socket` is not set: in the runtime folder the systemd unit has
/// created (`RuntimeDirectory=ironsa`), which goes away with the service.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/ironsa/ironsa.sock";

/// Where the Debian package installs the hardware profiles.
pub const INSTALLED_HW_PROFILES: &str = "/usr/share/ironsa/hw-profiles";

/// What a parse step needs to report: the file, its text (for line numbers)
/// and the warnings gathered so far.
struct Ctx<'a> {
    file: &'a Path,
    text: &'a str,
    warnings: Vec<ConfigWarning>,
}

impl Ctx<'_> {
    fn err(&self, offset: usize, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.to_path_buf(),
            line: line_of(self.text, offset),
            key: key.to_string(),
            message: message.into(),
        }
    }

    fn warn(&mut self, offset: usize, key: &str, message: impl Into<String>) {
        self.warnings.push(ConfigWarning {
            line: line_of(self.text, offset),
            key: key.to_string(),
            message: message.into(),
        });
    }

    fn duration(&self, v: &Spanned<toml::Value>, key: &str) -> Result<Duration, ConfigError> {
        parse_duration(v.get_ref()).map_err(|m| self.err(v.span().start, key, m))
    }

    /// A file named relative to the configuration file's folder.
    fn relative(&self, name: &str) -> PathBuf {
        self.file.parent().unwrap_or_else(|| Path::new(".")).join(name)
    }

    fn read(&self, s: &Spanned<String>, key: &str) -> Result<Vec<u8>, ConfigError> {
        let p = self.relative(s.get_ref());
        std::fs::read(&p).map_err(|e| self.err(s.span().start, key, format!("cannot read {}: {e}", p.display())))
    }

    /// The TOML document, with syntax and type errors located.
    fn toml(&self) -> Result<RawFile, ConfigError> {
        let table: toml::Table = self.text.parse().map_err(|e| self.toml_err(e))?;
        if table.is_empty() {
            return Err(self.err(
                0,
                "(file)",
                "the file is empty: it needs at least one [[connection]] (see docs/configuration.md)",
            ));
        }
        toml::from_str(self.text).map_err(|e| self.toml_err(e))
    }

    fn toml_err(&self, e: toml::de::Error) -> ConfigError {
        let offset = e.span().map(|s| s.start).unwrap_or(0);
        let msg = e.message().to_string();
        // Serde names the key in unknown/missing field errors; otherwise (a
        // value of the wrong type or out of range) it is the key assigned on
        // the line of the error.
        let named = (msg.starts_with("unknown field") || msg.starts_with("missing field"))
            .then(|| msg.split('`').nth(1).map(str::to_string))
            .flatten();
        let key = match named.or_else(|| key_on_line(self.text, offset)) {
            Some(k) => match table_at(self.text, offset) {
                Some(t) => format!("{t}.{k}"),
                None => k,
            },
            None => "(syntax)".to_string(),
        };
        self.err(offset, &key, msg)
    }
}

/// The settings of `[daemon]`.
struct DaemonSection {
    listen: Vec<IpAddr>,
    ike_port: u16,
    nat_port: u16,
    shards: usize,
    control_socket: PathBuf,
    control_group: Option<ControlGroup>,
    metrics: Option<std::net::SocketAddr>,
    log_level: String,
    keylog: Option<PathBuf>,
    expected_tunnels: usize,
}

/// The settings of `[fastpath]`.
struct FastpathSection {
    backend: FastpathBackend,
    hw_profile: Option<PathBuf>,
    /// `daemon.listen`, resolved against a DPDK profile's ports.
    listen: Vec<IpAddr>,
    tun_name: String,
    workers: usize,
    install_routes: bool,
    socket_buffer: usize,
}

impl DaemonConfig {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            file: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses configuration text; `path` is used in error messages and to
    /// find the files the configuration names.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let mut ctx = Ctx {
            file: path,
            text,
            warnings: Vec::new(),
        };
        let raw = ctx.toml()?;
        let daemon = daemon_section(&mut ctx, &raw.daemon)?;
        let admission = dos_section(&ctx, &raw.dos)?;
        let pools = pool_sections(&ctx, &raw.pool)?;
        let eap_users = eap_section(&ctx, &raw.eap)?;
        let radius = raw.radius.as_ref().map(|r| radius_section(&ctx, r)).transpose()?;
        let aaa = AaaAvailable {
            users: eap_users.as_deref(),
            radius: radius.is_some(),
        };
        let mut connections = Vec::new();
        let mut child_settings = ChildSettings::new();
        let mut names = std::collections::HashSet::new();
        for c in &raw.connection {
            let name = c.get_ref().name.get_ref();
            if !names.insert(name.clone()) {
                return Err(ctx.err(
                    c.get_ref().name.span().start,
                    "connection.name",
                    format!("duplicate connection name '{name}'"),
                ));
            }
            let (conn, settings) = connection_section(&mut ctx, c, &pools, aaa)?;
            child_settings.extend(settings);
            connections.push(conn);
        }
        if connections.is_empty() {
            ctx.warn(
                0,
                "connection",
                "no [[connection]]: the daemon will neither answer nor initiate any IKE SA",
            );
        }
        let fastpath = fastpath_section(&ctx, &raw.fastpath, &raw.daemon, daemon.listen)?;
        let cluster = raw.cluster.as_ref().map(|c| cluster_section(&ctx, c)).transpose()?;
        if let Some(k) = &raw.daemon.keylog {
            ctx.warn(
                k.span().start,
                "daemon.keylog",
                format!(
                    "writing IKE and ESP keys to {}: anyone who can read that file can decrypt all traffic; use only for debugging",
                    k.get_ref()
                ),
            );
        }
        Ok(DaemonConfig {
            file: path.to_path_buf(),
            listen: fastpath.listen,
            ike_port: daemon.ike_port,
            nat_port: daemon.nat_port,
            shards: daemon.shards,
            control_socket: daemon.control_socket,
            control_group: daemon.control_group,
            metrics: daemon.metrics,
            log_level: daemon.log_level,
            keylog: daemon.keylog,
            expected_tunnels: daemon.expected_tunnels,
            admission,
            fastpath: fastpath.backend,
            hw_profile: fastpath.hw_profile,
            tun_name: fastpath.tun_name,
            fastpath_workers: fastpath.workers,
            install_routes: fastpath.install_routes,
            socket_buffer: fastpath.socket_buffer,
            child_settings,
            cluster,
            connections,
            pools,
            eap_users,
            radius,
            warnings: ctx.warnings,
        })
    }
}

/// Bounds of `cluster.lease`: shorter leases expire on a busy store's
/// hiccup, longer ones leave a dead node's tunnels down for longer.
const LEASE_RANGE: std::ops::RangeInclusive<Duration> = Duration::from_secs(1)..=Duration::from_secs(60);

/// A 32-byte key in a file of its own (64 hex digits), readable by its owner only.
fn key_file(
    ctx: &Ctx<'_>,
    s: &Spanned<String>,
    key: &str,
) -> Result<(PathBuf, zeroize::Zeroizing<Vec<u8>>), ConfigError> {
    use std::os::unix::fs::PermissionsExt;
    let path = ctx.relative(s.get_ref());
    let at = s.span().start;
    let meta =
        std::fs::metadata(&path).map_err(|e| ctx.err(at, key, format!("cannot read {}: {e}", path.display())))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(ctx.err(
            at,
            key,
            format!(
                "{} is readable by others (mode {mode:o}): a key file must be 0600",
                path.display()
            ),
        ));
    }
    let text = zeroize::Zeroizing::new(ctx.read(s, key)?);
    let digits: zeroize::Zeroizing<Vec<u8>> =
        zeroize::Zeroizing::new(text.iter().copied().filter(|b| !b.is_ascii_whitespace()).collect());
    let nibble = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    if digits.len() != 64 || digits.iter().any(|b| nibble(*b).is_none()) {
        return Err(ctx.err(
            at,
            key,
            format!(
                "{} must hold 32 bytes as 64 hex digits (e.g. `openssl rand -hex 32`)",
                path.display()
            ),
        ));
    }
    let bytes = digits
        .chunks(2)
        .map(|p| (nibble(p[0]).unwrap_or(0) << 4) | nibble(p[1]).unwrap_or(0))
        .collect();
    Ok((path, zeroize::Zeroizing::new(bytes)))
}

/// `[cluster]`: node id, store endpoints, link and keys.
fn cluster_section(ctx: &Ctx<'_>, raw: &Spanned<RawCluster>) -> Result<crate::cluster::ClusterConfig, ConfigError> {
    use crate::cluster::MAX_NODES;
    let c = raw.get_ref();
    let node = u8::try_from(*c.node.get_ref())
        .ok()
        .filter(|n| *n < MAX_NODES)
        .ok_or_else(|| {
            ctx.err(
                c.node.span().start,
                "cluster.node",
                format!("a node id is 0..={}", MAX_NODES - 1),
            )
        })?;
    if c.store.get_ref().is_empty() {
        return Err(ctx.err(
            c.store.span().start,
            "cluster.store",
            "name at least one store endpoint (host:port); leave [cluster] out to run alone",
        ));
    }
    let mut store = Vec::new();
    for e in c.store.get_ref() {
        let text = e.get_ref().trim();
        let bare = text.strip_prefix("http://").unwrap_or(text);
        let valid = bare
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
        if !valid || text.starts_with("https://") {
            return Err(ctx.err(
                e.span().start,
                "cluster.store",
                format!("'{text}' is not a store endpoint (host:port or http://host:port)"),
            ));
        }
        store.push(text.to_string());
    }
    let name = match &c.name {
        None => "ironsa".to_string(),
        Some(n) => {
            let v = n.get_ref();
            if v.is_empty()
                || !v
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.'))
            {
                return Err(ctx.err(n.span().start, "cluster.name", "letters, digits, '-', '_' and '.' only"));
            }
            v.clone()
        }
    };
    let link = c.link.get_ref().parse::<std::net::SocketAddr>().map_err(|_| {
        ctx.err(
            c.link.span().start,
            "cluster.link",
            format!("'{}' is not an address:port", c.link.get_ref()),
        )
    })?;
    if link.ip().is_unspecified() || link.port() == 0 {
        return Err(ctx.err(
            c.link.span().start,
            "cluster.link",
            "the other nodes send to this address: give a concrete address and port",
        ));
    }
    let (link_file, link_key) = key_file(ctx, &c.link_key, "cluster.link_key")?;
    let (cluster_file, cluster_key) = key_file(ctx, &c.cluster_key, "cluster.cluster_key")?;
    if link_key == cluster_key {
        return Err(ctx.err(
            c.cluster_key.span().start,
            "cluster.cluster_key",
            "use a key of its own, not the link key",
        ));
    }
    let duration = |v: &Option<Spanned<toml::Value>>, key: &str, default: Duration| match v {
        None => Ok(default),
        Some(v) => ctx.duration(v, key),
    };
    let lease = duration(&c.lease, "cluster.lease", Duration::from_secs(2))?;
    if !LEASE_RANGE.contains(&lease) {
        let at = c.lease.as_ref().map_or(0, |v| v.span().start);
        return Err(ctx.err(at, "cluster.lease", "a lease lasts 1s..=60s"));
    }
    let checkpoint_interval = duration(
        &c.checkpoint_interval,
        "cluster.checkpoint_interval",
        Duration::from_secs(1),
    )?;
    if checkpoint_interval.is_zero() || checkpoint_interval >= lease * 4 {
        let at = c.checkpoint_interval.as_ref().map_or(0, |v| v.span().start);
        return Err(ctx.err(
            at,
            "cluster.checkpoint_interval",
            format!("between 1s and four leases ({}s)", (lease * 4).as_secs()),
        ));
    }
    let address = match &c.address {
        None => None,
        Some(a) => Some(a.get_ref().parse::<IpAddr>().map_err(|_| {
            ctx.err(
                a.span().start,
                "cluster.address",
                "an IP address: where clients reach this node",
            )
        })?),
    };
    let redirect_margin = match &c.redirect_margin {
        None => None,
        Some(m) => {
            let at = m.span().start;
            let margin = usize::try_from(*m.get_ref())
                .map_err(|_| ctx.err(at, "cluster.redirect_margin", "a number of IKE SAs, 0 or more"))?;
            if address.is_none() {
                return Err(ctx.err(
                    at,
                    "cluster.redirect_margin",
                    "set cluster.address too: the other nodes redirect clients to it",
                ));
            }
            Some(margin)
        }
    };
    Ok(crate::cluster::ClusterConfig {
        node,
        store,
        name,
        link,
        link_key,
        cluster_key,
        lease,
        checkpoint_interval,
        key_files: (link_file, cluster_file),
        address,
        redirect_margin,
    })
}

/// The table header (`daemon`, `connection.child`) in force at byte `offset`.
fn table_at(text: &str, offset: usize) -> Option<String> {
    let end = text
        .get(offset..)
        .and_then(|rest| rest.find('\n'))
        .map_or(text.len(), |i| offset + i);
    text.get(..end)?.lines().rev().find_map(|line| {
        let line = line.trim();
        let inner = line.strip_prefix("[[").and_then(|l| l.strip_suffix("]]"));
        let inner = inner.or_else(|| line.strip_prefix('[').and_then(|l| l.strip_suffix(']')))?;
        let inner = inner.trim();
        (!inner.is_empty()
            && inner
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
        .then(|| inner.to_string())
    })
}

/// Checks a log filter as `daemon.log_level` and `ironsa log-level` take it:
/// tracing's syntax, where a bare word is a target, not a level, so that a
/// misspelt level (`verbose`) would silently select a module that logs nothing.
pub fn check_log_filter(filter: &str) -> Result<(), String> {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    for directive in filter.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        if !directive.contains('=') && !LEVELS.iter().any(|l| l.eq_ignore_ascii_case(directive)) {
            return Err(format!(
                "'{directive}' is not a log level ({}); to filter by module write MODULE=LEVEL",
                LEVELS.join(", ")
            ));
        }
    }
    tracing_subscriber::EnvFilter::builder()
        .parse(filter)
        .map(drop)
        .map_err(|e| format!("'{filter}' is not a log filter: {e}"))
}

fn daemon_section(ctx: &mut Ctx<'_>, raw: &RawDaemon) -> Result<DaemonSection, ConfigError> {
    let listen: Vec<IpAddr> = match &raw.listen {
        None => vec![
            IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
        ],
        Some(list) => list
            .iter()
            .map(|s| {
                s.get_ref().parse::<IpAddr>().map_err(|_| {
                    ctx.err(
                        s.span().start,
                        "daemon.listen",
                        format!("'{}' is not an IP address", s.get_ref()),
                    )
                })
            })
            .collect::<Result<_, _>>()?,
    };
    let metrics = match &raw.metrics {
        None => None,
        Some(m) => Some(m.get_ref().parse().map_err(|_| {
            ctx.err(
                m.span().start,
                "daemon.metrics",
                format!("'{}' is not ADDRESS:PORT", m.get_ref()),
            )
        })?),
    };
    let shards = match &raw.shards {
        None => 0,
        Some(n) if *n.get_ref() > MAX_SHARDS => {
            return Err(ctx.err(
                n.span().start,
                "daemon.shards",
                format!(
                    "{} shards: at most {MAX_SHARDS} (0 or no value: one per CPU)",
                    n.get_ref()
                ),
            ));
        }
        Some(n) => *n.get_ref(),
    };
    let shards = if shards == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(MAX_SHARDS)
    } else {
        shards
    };
    let expected_tunnels = match &raw.expected_tunnels {
        None => 0,
        Some(n) if *n.get_ref() > MAX_EXPECTED_TUNNELS => {
            return Err(ctx.err(
                n.span().start,
                "daemon.expected_tunnels",
                format!("at most {MAX_EXPECTED_TUNNELS}, found {}", n.get_ref()),
            ));
        }
        Some(n) => *n.get_ref(),
    };
    let log_level = match &raw.log_level {
        None => "info".to_string(),
        Some(l) => {
            check_log_filter(l.get_ref()).map_err(|m| ctx.err(l.span().start, "daemon.log_level", m))?;
            l.get_ref().clone()
        }
    };
    let control_group = match &raw.control_socket_group {
        None => None,
        Some(g) => Some(
            ControlGroup::lookup(g.get_ref()).map_err(|m| ctx.err(g.span().start, "daemon.control_socket_group", m))?,
        ),
    };
    Ok(DaemonSection {
        listen,
        ike_port: raw.ike_port.unwrap_or(500),
        nat_port: raw.nat_port.unwrap_or(4500),
        shards,
        control_socket: PathBuf::from(raw.control_socket.as_deref().unwrap_or(DEFAULT_CONTROL_SOCKET)),
        control_group,
        metrics,
        log_level,
        keylog: raw.keylog.as_ref().map(|k| PathBuf::from(k.get_ref())),
        expected_tunnels,
    })
}

fn dos_section(ctx: &Ctx<'_>, raw: &RawDos) -> Result<AdmissionConfig, ConfigError> {
    let d = AdmissionConfig::default();
    let dur = |v: &Option<Spanned<toml::Value>>, key: &str, default: Duration| match v {
        None => Ok(default),
        Some(s) => ctx.duration(s, key),
    };
    Ok(AdmissionConfig {
        cookie_threshold: raw.cookie_threshold.unwrap_or(d.cookie_threshold),
        cookie_calm_down: dur(&raw.cookie_calm_down, "dos.cookie_calm_down", d.cookie_calm_down)?,
        per_source_half_open: raw.per_source_half_open.unwrap_or(d.per_source_half_open),
        max_half_open: raw.max_half_open.unwrap_or(d.max_half_open),
        cookie_rotation: dur(&raw.cookie_rotation, "dos.cookie_rotation", d.cookie_rotation)?,
    })
}

/// `[fastpath]`: the backend, chosen by `backend` or by a hardware profile;
/// one with a DPDK backend selects the DPDK data plane (which carries IKE
/// too) in builds with `--features dpdk`.
fn fastpath_section(
    ctx: &Ctx<'_>,
    raw: &RawFastpath,
    daemon: &RawDaemon,
    listen: Vec<IpAddr>,
) -> Result<FastpathSection, ConfigError> {
    let backend_key = raw.backend.as_ref().map(|b| (b.span().start, b.get_ref().as_str()));
    let mut backend = match backend_key {
        None | Some((_, "none")) => FastpathBackend::None,
        Some((_, "software")) => FastpathBackend::Software,
        // Resolved with the hardware profile below.
        Some((_, "dpdk")) => FastpathBackend::None,
        Some((at, other)) => {
            return Err(ctx.err(
                at,
                "fastpath.backend",
                format!("unknown backend '{other}' (none, software, dpdk)"),
            ));
        }
    };
    let mut listen = listen;
    let hw_profile = match &raw.hw_profile {
        None => {
            if let Some((at, "dpdk")) = backend_key {
                return Err(ctx.err(
                    at,
                    "fastpath.backend",
                    "the dpdk backend needs [fastpath] hw_profile (a profile with backend = \"dpdk\")",
                ));
            }
            None
        }
        Some(p) => {
            let at = p.span().start;
            let full = ctx.relative(p.get_ref());
            let profile = fastpath::dpdk::profile::HwProfile::load(&full)
                .map_err(|e| ctx.err(at, "fastpath.hw_profile", e.to_string()))?;
            let dpdk = profile.backend == fastpath::dpdk::profile::BackendKind::Dpdk;
            match (dpdk, backend_key) {
                (false, Some((b, "dpdk"))) => {
                    return Err(ctx.err(
                        b,
                        "fastpath.backend",
                        format!(
                            "backend = \"dpdk\" but profile '{}' is a software profile",
                            profile.name
                        ),
                    ));
                }
                (true, Some((b, other))) if other != "dpdk" => {
                    return Err(ctx.err(
                        b,
                        "fastpath.backend",
                        format!(
                            "backend = \"{other}\" but hw_profile '{}' selects the DPDK backend (remove backend or set it to \"dpdk\")",
                            profile.name
                        ),
                    ));
                }
                _ => {}
            }
            if dpdk {
                if !cfg!(feature = "dpdk") {
                    return Err(ctx.err(
                        at,
                        "fastpath.hw_profile",
                        format!(
                            "profile '{}' selects the DPDK backend, but this ironsa was built without DPDK (rebuild with `cargo build --release --features dpdk`, or use hw-profiles/software.toml)",
                            profile.name
                        ),
                    ));
                }
                listen = dpdk_listen(&profile, daemon.listen.as_deref(), listen)
                    .map_err(|(line_at, m)| ctx.err(line_at.unwrap_or(at), "daemon.listen", m))?;
                for (port, default, key) in [
                    (daemon.ike_port, 500, "daemon.ike_port"),
                    (daemon.nat_port, 4500, "daemon.nat_port"),
                ] {
                    if port.is_some_and(|p| p != default) {
                        return Err(ctx.err(
                            at,
                            key,
                            format!("the DPDK backend carries IKE on the standard ports only: {key} must be {default}"),
                        ));
                    }
                }
                backend = FastpathBackend::Dpdk(Box::new(profile));
            }
            Some(full)
        }
    };
    let workers = match &raw.workers {
        None => 1,
        Some(w) if *w.get_ref() == 0 => {
            return Err(ctx.err(
                w.span().start,
                "fastpath.workers",
                "0 workers: the data plane needs at least 1",
            ));
        }
        Some(w) => *w.get_ref(),
    };
    let socket_buffer = match &raw.socket_buffer {
        None => DEFAULT_SOCKET_BUFFER,
        Some(v) => {
            parse_socket_buffer(v.get_ref()).map_err(|m| ctx.err(v.span().start, "fastpath.socket_buffer", m))?
        }
    };
    Ok(FastpathSection {
        socket_buffer,
        backend,
        hw_profile,
        listen,
        tun_name: raw.tun_name.clone().unwrap_or_else(|| "ironsa0".into()),
        workers,
        install_routes: raw.install_routes.unwrap_or(true),
    })
}

/// One `[[connection]]` with the data-plane settings of its children.
fn connection_section(
    ctx: &mut Ctx<'_>,
    raw: &Spanned<RawConnection>,
    pools: &[PoolSection],
    aaa: AaaAvailable<'_>,
) -> Result<(Connection, ChildSettings), ConfigError> {
    let at = raw.span().start;
    let c = raw.get_ref();
    let name = c.name.get_ref().clone();
    let key = |k: &str| format!("connection.{name}.{k}");
    let mut remote_addrs = Vec::new();
    let mut any = false;
    for a in &c.remote_addrs {
        if a.get_ref() == "%any" {
            any = true;
        } else {
            remote_addrs.push(a.get_ref().parse::<IpAddr>().map_err(|_| {
                ctx.err(
                    a.span().start,
                    &key("remote_addrs"),
                    format!("'{}' is not an IP address or %any", a.get_ref()),
                )
            })?);
        }
    }
    let local_addrs = c
        .local_addrs
        .iter()
        .map(|a| {
            a.get_ref().parse::<IpAddr>().map_err(|_| {
                ctx.err(
                    a.span().start,
                    &key("local_addrs"),
                    format!("'{}' is not an IP address", a.get_ref()),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let (local_auth, remote_auth, remote_auth2) = connection_auth(ctx, at, &name, c, aaa)?;
    let mut cfg = ConnectionConfig::new(
        &name,
        parse_identity(c.local_id.get_ref()),
        IdentityMatch::parse(c.remote_id.get_ref()),
        b"",
    );
    cfg.local_auth = local_auth;
    cfg.remote_auth = remote_auth;
    cfg.ppk = connection_ppk(ctx, &name, c)?;
    cfg.remote_auth2 = remote_auth2;
    cfg.xauth = c.remote_auth2.as_ref().is_some_and(|k| k.get_ref() == "xauth");
    cfg.remote_addrs = if any || remote_addrs.is_empty() {
        None
    } else {
        Some(remote_addrs)
    };
    cfg.local_addrs = (!local_addrs.is_empty()).then_some(local_addrs);
    let ike_at = c.ike_proposals.span().start;
    cfg.ike_proposals = control::proposal::parse_ike_proposals(c.ike_proposals.get_ref())
        .map_err(|e| ctx.err(ike_at, &key("ike_proposals"), e.to_string()))?;
    for (p, risk) in cfg
        .ike_proposals
        .iter()
        .flat_map(|p| p.downgrade_risks().into_iter().map(move |r| (p, r)))
    {
        ctx.warn(
            ike_at,
            &key("ike_proposals"),
            format!("proposal '{p}' can be downgraded: {risk}"),
        );
    }
    for t in control::proposal::ike_aead_integrity_tokens(c.ike_proposals.get_ref()) {
        let message = if t.selects_prf {
            format!(
                "proposal {}: '{}' after AEAD cipher {} only selects the PRF (an AEAD cipher authenticates by itself): write prf{} to say so",
                t.proposal,
                t.token,
                t.cipher.name(),
                t.token
            )
        } else {
            format!(
                "proposal {}: '{}' is ignored: AEAD cipher {} authenticates by itself and the PRF is given",
                t.proposal,
                t.token,
                t.cipher.name()
            )
        };
        ctx.warn(ike_at, &key("ike_proposals"), message);
    }
    if let Some(r) = &c.ike_rekey {
        cfg.ike_lifetime = Lifetime::rekey_after(ctx.duration(r, &key("ike_rekey"))?);
    }
    if let Some(d) = &c.dpd_delay {
        let v = ctx.duration(d, &key("dpd_delay"))?;
        cfg.dpd_delay = (!v.is_zero()).then_some(v);
    }
    if let Some(d) = &c.nat_keepalive {
        let v = ctx.duration(d, &key("nat_keepalive"))?;
        cfg.nat_keepalive = (!v.is_zero()).then_some(v);
    }
    cfg.remote_nat_port = c.remote_nat_port;
    if let Some(f) = c.fragmentation {
        cfg.fragmentation = f;
    }
    if let Some(f) = c.force_udp_encap {
        cfg.force_udp_encap = f;
    }
    if let Some(m) = c.mobike {
        cfg.mobike = m;
    }
    if let Some(v) = &c.version {
        cfg.ike_versions = match v.get_ref() {
            toml::Value::Integer(1) => IkeVersions::V1,
            toml::Value::Integer(2) => IkeVersions::V2,
            toml::Value::String(s) if s == "any" => IkeVersions::Any,
            other => {
                return Err(ctx.err(
                    v.span().start,
                    &key("version"),
                    format!("{other} is not 1, 2 or \"any\""),
                ));
            }
        };
    }
    if let Some(a) = &c.aggressive {
        cfg.aggressive = *a.get_ref();
        if cfg.aggressive && !cfg.ike_versions.allows_v1() {
            return Err(ctx.err(
                a.span().start,
                &key("aggressive"),
                "Aggressive Mode is IKEv1: set version = 1 or \"any\"",
            ));
        }
        if cfg.aggressive && !matches!(cfg.local_auth, AuthConfig::Psk(_)) {
            return Err(ctx.err(
                a.span().start,
                &key("aggressive"),
                "Aggressive Mode is only supported with auth = \"psk\"",
            ));
        }
        if cfg.aggressive {
            ctx.warn(
                a.span().start,
                &key("aggressive"),
                "Aggressive Mode with a pre-shared key sends the responder's HASH unencrypted: anyone who sees \
                 one handshake can crack the PSK offline; use Main Mode (remove this key) or IKEv2",
            );
        }
    }
    if let Some(k) = c.remote_auth2.as_ref().filter(|_| cfg.xauth) {
        if cfg.ike_versions != IkeVersions::V1 {
            return Err(ctx.err(
                k.span().start,
                &key("remote_auth2"),
                "xauth is IKEv1's second round: set version = 1 (IKEv2 peers use EAP)",
            ));
        }
        if aaa.users.is_none() {
            return Err(ctx.err(
                k.span().start,
                &key("remote_auth2"),
                "xauth checks usernames and passwords against the local users: set [eap] users_file",
            ));
        }
    }
    if let Some(v) = c.version.as_ref().filter(|_| cfg.ike_versions.allows_v1()) {
        let when = if cfg.ike_versions == IkeVersions::V1 {
            "once the peer speaks IKEv2 (\"any\" while it migrates)"
        } else {
            "once every peer of it speaks IKEv2"
        };
        ctx.warn(
            v.span().start,
            &key("version"),
            format!(
                "connection speaks IKEv1, which has no integrity check of its own on encrypted messages and \
                 exposes weak PSKs; its IKEv2 replacement, {when}, keeps the identities, authentication and \
                 children: {}",
                ikev2_replacement(&cfg)
            ),
        );
    }
    if let Some(s) = c.fragment_size {
        if !(576..=65535).contains(&s) {
            return Err(ctx.err(at, &key("fragment_size"), format!("{s} is outside 576..65535")));
        }
        cfg.fragment_size = s;
    }
    cfg.virtual_ips = virtual_ips(ctx, &name, c, pools)?;
    match (&c.xauth_user, &c.xauth_password) {
        (None, None) => {}
        (Some(user), Some(password)) => {
            if cfg.ike_versions != IkeVersions::V1 {
                return Err(ctx.err(user.span().start, &key("xauth_user"), "XAUTH is IKEv1: set version = 1"));
            }
            cfg.xauth_client = Some(Arc::new(control::config::XauthCredentials {
                user: user.get_ref().clone(),
                password: zeroize::Zeroizing::new(password.get_ref().clone()),
            }));
        }
        (Some(k), None) | (None, Some(k)) => {
            return Err(ctx.err(
                k.span().start,
                &key(if c.xauth_user.is_some() {
                    "xauth_password"
                } else {
                    "xauth_user"
                }),
                "an XAUTH client needs both xauth_user and xauth_password",
            ));
        }
    }
    if let Some(m) = &c.mode_config {
        cfg.mode_config_push = match m.get_ref().as_str() {
            "pull" => false,
            "push" => true,
            other => {
                return Err(ctx.err(
                    m.span().start,
                    &key("mode_config"),
                    format!("'{other}' is not \"pull\" or \"push\""),
                ));
            }
        };
        if cfg.mode_config_push && (cfg.ike_versions != IkeVersions::V1 || cfg.virtual_ips.pools.is_empty()) {
            return Err(ctx.err(
                m.span().start,
                &key("mode_config"),
                "mode_config = \"push\" is how an IKEv1 gateway hands out pool addresses: set version = 1 and pools",
            ));
        }
    }
    let mut settings = ChildSettings::new();
    for ch in &c.child {
        let (child, data) = child_section(ctx, &name, ch.get_ref())?;
        if data != ChildDataSettings::default() {
            settings.insert((name.clone(), child.name.clone()), data);
        }
        cfg.children.push(child);
    }
    let start_action = match c.start_action.as_ref().map(|s| (s.span().start, s.get_ref().as_str())) {
        None | Some((_, "none")) => StartAction::None,
        Some((_, "start")) => StartAction::Start,
        Some((o, other)) => {
            return Err(ctx.err(
                o,
                &key("start_action"),
                format!("unknown start_action '{other}' (none, start)"),
            ));
        }
    };
    if start_action == StartAction::Start && cfg.remote_addrs.is_none() {
        return Err(ctx.err(at, &key("start_action"), "start needs a concrete remote_addrs entry"));
    }
    Ok((
        Connection {
            config: Arc::new(cfg),
            remote_port: c.remote_port.unwrap_or(500),
            start_action,
        },
        settings,
    ))
}

/// The keys that move an IKEv1 connection to IKEv2: `version = 2` and its
/// proposals with an AEAD, X25519 proposal first (IKEv2 offers both to
/// peers that can, and the IKEv1 ones stay acceptable meanwhile).
fn ikev2_replacement(cfg: &ConnectionConfig) -> String {
    const MODERN: &str = "aes256gcm16-prfsha256-x25519";
    let current: Vec<String> = cfg.ike_proposals.iter().map(ToString::to_string).collect();
    let proposals = std::iter::once(MODERN.to_string())
        .chain(current.into_iter().filter(|p| p != MODERN))
        .collect::<Vec<_>>()
        .join(", ");
    let aggressive = if cfg.aggressive { " and no aggressive" } else { "" };
    // XAUTH's users serve EAP-MSCHAPv2 in IKEv2; pools answer its CFG_REQUEST.
    let xauth = if cfg.xauth {
        ", remote_auth2 = \"eap-mschapv2\" (the same users)"
    } else {
        ""
    };
    format!("version = 2, ike_proposals = \"{proposals}\"{xauth}{aggressive}")
}

/// The `[[pool]]` sections, checked: names unique, ranges valid and
/// disjoint across pools, servers and subnets parsed.
fn pool_sections(ctx: &Ctx<'_>, raw: &[Spanned<RawPool>]) -> Result<Vec<PoolSection>, ConfigError> {
    let mut out: Vec<PoolSection> = Vec::new();
    for p in raw {
        let p = p.get_ref();
        let name = p.name.get_ref().clone();
        let key = |k: &str| format!("pool.{name}.{k}");
        if name.is_empty() {
            return Err(ctx.err(p.name.span().start, "pool.name", "a pool needs a name"));
        }
        if out.iter().any(|o| o.name == name) {
            return Err(ctx.err(
                p.name.span().start,
                "pool.name",
                format!("duplicate pool name '{name}'"),
            ));
        }
        if p.addrs.get_ref().is_empty() {
            return Err(ctx.err(
                p.addrs.span().start,
                &key("addrs"),
                "no addresses: give a prefix or a range",
            ));
        }
        let ranges = p
            .addrs
            .get_ref()
            .iter()
            .map(|a| {
                control::pool::AddrRange::parse(a.get_ref()).map_err(|m| ctx.err(a.span().start, &key("addrs"), m))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let addr = |a: &Spanned<String>, k: &str| {
            a.get_ref().trim().parse::<IpAddr>().map_err(|_| {
                ctx.err(
                    a.span().start,
                    &key(k),
                    format!("'{}' is not an IP address", a.get_ref()),
                )
            })
        };
        let dns = p.dns.iter().map(|a| addr(a, "dns")).collect::<Result<Vec<_>, _>>()?;
        let nbns = p
            .nbns
            .iter()
            .map(|a| match addr(a, "nbns")? {
                IpAddr::V4(v4) => Ok(v4),
                IpAddr::V6(_) => Err(ctx.err(a.span().start, &key("nbns"), "NBNS servers are IPv4 only")),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let subnets = p
            .subnets
            .iter()
            .map(|s| {
                let ts = parse_network(s.get_ref()).map_err(|m| ctx.err(s.span().start, &key("subnets"), m))?;
                control::ts::prefix(&ts).ok_or_else(|| {
                    ctx.err(
                        s.span().start,
                        &key("subnets"),
                        format!("'{}' is not a prefix", s.get_ref()),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let section = PoolSection {
            name,
            ranges,
            dns,
            nbns,
            subnets,
        };
        out.push(section);
        if let Err(e) = build_pools(&out) {
            return Err(ctx.err(
                p.addrs.span().start,
                &format!("pool.{}.addrs", p.name.get_ref()),
                e.to_string(),
            ));
        }
    }
    Ok(out)
}

/// `pools` and `vips` of a connection: the pools must exist, and the DNS,
/// NBNS and subnets of all of them go with the addresses.
fn virtual_ips(
    ctx: &Ctx<'_>,
    name: &str,
    c: &RawConnection,
    pools: &[PoolSection],
) -> Result<control::config::VirtualIpConfig, ConfigError> {
    let key = |k: &str| format!("connection.{name}.{k}");
    let mut v = control::config::VirtualIpConfig::default();
    for p in &c.pools {
        let Some(pool) = pools.iter().find(|s| &s.name == p.get_ref()) else {
            let known = pools.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ");
            return Err(ctx.err(
                p.span().start,
                &key("pools"),
                format!("no [[pool]] named '{}' (defined: {known})", p.get_ref()),
            ));
        };
        v.pools.push(pool.name.clone());
        for d in &pool.dns {
            if !v.dns.contains(d) {
                v.dns.push(*d);
            }
        }
        for n in &pool.nbns {
            if !v.nbns.contains(n) {
                v.nbns.push(*n);
            }
        }
        for s in &pool.subnets {
            if !v.subnets.contains(s) {
                v.subnets.push(*s);
            }
        }
    }
    for a in &c.vips {
        v.request.push(a.get_ref().trim().parse::<IpAddr>().map_err(|_| {
            ctx.err(
                a.span().start,
                &key("vips"),
                format!("'{}' is not an IP address (0.0.0.0 or :: asks for any)", a.get_ref()),
            )
        })?);
    }
    Ok(v)
}

/// `ppk_id`, `ppk_file` and `ppk_required`: the connection's postquantum
/// preshared key (RFC 8784), read from its own file so that the key stays
/// out of the configuration.
fn connection_ppk(
    ctx: &mut Ctx<'_>,
    name: &str,
    c: &RawConnection,
) -> Result<Option<control::config::PpkConfig>, ConfigError> {
    use std::os::unix::fs::PermissionsExt;
    let key = |k: &str| format!("connection.{name}.{k}");
    let (id, file) = match (&c.ppk_id, &c.ppk_file) {
        (Some(id), Some(file)) => (id, file),
        (None, None) => {
            return match &c.ppk_required {
                Some(r) if *r.get_ref() => Err(ctx.err(
                    r.span().start,
                    &key("ppk_required"),
                    "ppk_required needs ppk_id and ppk_file",
                )),
                _ => Ok(None),
            };
        }
        (Some(id), None) => {
            return Err(ctx.err(
                id.span().start,
                &key("ppk_file"),
                "ppk_id needs ppk_file (the file that holds the key)",
            ));
        }
        (None, Some(file)) => {
            return Err(ctx.err(
                file.span().start,
                &key("ppk_id"),
                "ppk_file needs ppk_id (the name both peers give the key)",
            ));
        }
    };
    if id.get_ref().is_empty() {
        return Err(ctx.err(id.span().start, &key("ppk_id"), "ppk_id is empty"));
    }
    let path = ctx.relative(file.get_ref());
    let mode = std::fs::metadata(&path)
        .map_err(|e| {
            ctx.err(
                file.span().start,
                &key("ppk_file"),
                format!("cannot read {}: {e}", path.display()),
            )
        })?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(ctx.err(
            file.span().start,
            &key("ppk_file"),
            format!(
                "{} is open to other users (mode {:o}): a PPK file must be 0600",
                path.display(),
                mode & 0o777
            ),
        ));
    }
    let mut secret = zeroize::Zeroizing::new(ctx.read(file, &key("ppk_file"))?);
    for end in [b'\n', b'\r'] {
        if secret.last() == Some(&end) {
            secret.pop();
        }
    }
    if secret.is_empty() {
        return Err(ctx.err(
            file.span().start,
            &key("ppk_file"),
            format!("{} is empty", path.display()),
        ));
    }
    if secret.len() < 32 {
        ctx.warn(
            file.span().start,
            &key("ppk_file"),
            format!(
                "the PPK in {} has {} bytes: RFC 8784 asks for at least 256 bits of entropy",
                path.display(),
                secret.len()
            ),
        );
    }
    Ok(Some(control::config::PpkConfig {
        id: id.get_ref().as_bytes().to_vec(),
        key: Arc::new(secret),
        required: c.ppk_required.as_ref().is_some_and(|r| *r.get_ref()),
    }))
}

/// `auth`, `remote_auth`, `remote_auth2` and the material they need: (ours,
/// the peer's, the peer's second round).
fn connection_auth(
    ctx: &mut Ctx<'_>,
    at: usize,
    name: &str,
    c: &RawConnection,
    aaa: AaaAvailable<'_>,
) -> Result<(AuthConfig, AuthConfig, Option<Arc<control::config::EapAuth>>), ConfigError> {
    let key = |k: &str| format!("connection.{name}.{k}");
    let auth_of = |a: &Option<Spanned<String>>, k: &str, default: &str, remote: bool| -> Result<String, ConfigError> {
        let v = a.as_ref().map_or(default, |a| a.get_ref().as_str());
        match v {
            "psk" | "pubkey" | "eap-mschapv2" | "eap-md5" | "eap-tls" => Ok(v.to_string()),
            "eap-radius" if remote => Ok(v.to_string()),
            other => Err(ctx.err(
                a.as_ref().map_or(at, |a| a.span().start),
                &key(k),
                if remote {
                    format!("unknown auth '{other}' (psk, pubkey, eap-mschapv2, eap-md5, eap-radius, eap-tls)")
                } else {
                    format!("unknown auth '{other}' (psk, pubkey, eap-mschapv2, eap-md5, eap-tls)")
                },
            )),
        }
    };
    let local_kind = auth_of(&c.auth, "auth", "psk", false)?;
    let local_eap = local_kind.starts_with("eap-");
    if local_eap && c.remote_auth.is_none() {
        return Err(ctx.err(
            c.auth.as_ref().map_or(at, |a| a.span().start),
            &key("remote_auth"),
            format!("auth = {local_kind} needs remote_auth (psk or pubkey: how the gateway proves itself)"),
        ));
    }
    let remote_kind = auth_of(&c.remote_auth, "remote_auth", &local_kind, true)?;
    if local_eap && remote_kind.starts_with("eap-") {
        return Err(ctx.err(
            c.remote_auth.as_ref().map_or(at, |a| a.span().start),
            &key("remote_auth"),
            format!("with auth = {local_kind} the gateway proves itself by psk or pubkey"),
        ));
    }
    let second = c.remote_auth2.as_ref().map(|k| k.get_ref().as_str());
    let second_at = c.remote_auth2.as_ref().map_or(at, |k| k.span().start);
    let (eap_kind, eap_key) = match (remote_kind.starts_with("eap-"), second) {
        (true, Some(_)) => {
            return Err(ctx.err(
                second_at,
                &key("remote_auth2"),
                "a second round needs a first one by psk or pubkey (remote_auth)",
            ));
        }
        (true, None) => (remote_kind.as_str(), "remote_auth"),
        (false, Some(k)) if k.starts_with("eap-") => (k, "remote_auth2"),
        // IKEv1's second round, checked with the version.
        (false, Some("xauth")) => ("", "remote_auth"),
        (false, Some(k)) => {
            return Err(ctx.err(
                second_at,
                &key("remote_auth2"),
                format!(
                    "'{k}': the second round is EAP (eap-mschapv2, eap-md5, eap-radius, eap-tls) or, with IKEv1, xauth"
                ),
            ));
        }
        (false, None) => ("", "remote_auth"),
    };
    let eap = remote_eap(ctx, at, name, c, eap_kind, eap_key, aaa)?;
    let (eap_auth, remote_auth2) = match eap_key {
        "remote_auth2" => (None, eap.map(Arc::new)),
        _ => (eap, None),
    };
    let mut psk_auth = None;
    if local_kind == "psk" || remote_kind == "psk" {
        let psk = c
            .psk
            .as_ref()
            .ok_or_else(|| ctx.err(at, &key("psk"), "auth = psk needs a psk"))?;
        let psk_text = psk.get_ref();
        if psk_text.len() < 20 || psk_entropy_bits(psk_text) < 100.0 {
            ctx.warn(
                psk.span().start,
                &key("psk"),
                format!(
                    "pre-shared key is weak (~{:.0} bits): anyone who captures one IKE_AUTH exchange can guess it offline; use at least 20 random characters",
                    psk_entropy_bits(psk_text)
                ),
            );
        }
        psk_auth = Some(AuthConfig::Psk(Arc::new(control::crypto::auth::PresharedKey::new(
            psk_text.as_bytes(),
        ))));
    }
    let psk = || psk_auth.clone().ok_or_else(|| ctx.err(at, &key("psk"), "missing psk"));
    let local_auth = if local_eap {
        eap_client_auth(ctx, at, name, c, &local_kind, aaa)?
    } else if local_kind == "pubkey" {
        let cert = c.cert.as_ref().ok_or_else(|| {
            ctx.err(
                at,
                &key("cert"),
                "auth = pubkey needs cert (PEM/DER file, chain allowed)",
            )
        })?;
        let keyf = c
            .key
            .as_ref()
            .ok_or_else(|| ctx.err(at, &key("key"), "auth = pubkey needs key (private key file)"))?;
        let chain = Certificate::load(&ctx.read(cert, &key("cert"))?)
            .map_err(|e| ctx.err(cert.span().start, &key("cert"), e.to_string()))?;
        let pk = PrivateKey::load(&ctx.read(keyf, &key("key"))?)
            .map_err(|e| ctx.err(keyf.span().start, &key("key"), e.to_string()))?;
        if chain.is_empty() || !pk.matches_certificate(&chain[0]) {
            return Err(ctx.err(
                keyf.span().start,
                &key("key"),
                "private key does not match the first certificate",
            ));
        }
        AuthConfig::Cert(Arc::new(LocalCert { key: pk, chain }))
    } else {
        psk()?
    };
    let remote_auth = if remote_kind == "pubkey" {
        if c.cacerts.is_empty() {
            return Err(ctx.err(
                at,
                &key("cacerts"),
                "remote_auth = pubkey needs cacerts (trusted CA files)",
            ));
        }
        let mut store = TrustStore::new();
        for ca in &c.cacerts {
            store
                .add_pem_or_der(&ctx.read(ca, &key("cacerts"))?)
                .map_err(|e| ctx.err(ca.span().start, &key("cacerts"), e.to_string()))?;
        }
        AuthConfig::PubKey(Arc::new(store))
    } else if let Some(eap) = eap_auth {
        AuthConfig::Eap(Arc::new(eap))
    } else {
        psk()?
    };
    Ok((local_auth, remote_auth, remote_auth2))
}

/// Which AAA back ends the file configures.
#[derive(Clone, Copy, Debug)]
struct AaaAvailable<'a> {
    users: Option<&'a crate::aaa::users::LocalUsers>,
    radius: bool,
}

/// `remote_auth = "eap-…"` (or `remote_auth2`, named by `kind_key`) with
/// `eap_id` and `eap_only`; None for other kinds.
fn remote_eap(
    ctx: &Ctx<'_>,
    at: usize,
    name: &str,
    c: &RawConnection,
    kind: &str,
    kind_key: &str,
    aaa: AaaAvailable<'_>,
) -> Result<Option<control::config::EapAuth>, ConfigError> {
    use control::config::{EapAuth, EapBackend, EapIdentity};
    use control::eap::Method;
    let key = |k: &str| format!("connection.{name}.{k}");
    let kind_at = if kind_key == "remote_auth2" {
        &c.remote_auth2
    } else {
        &c.remote_auth
    };
    let remote_at = kind_at.as_ref().map_or(at, |a| a.span().start);
    let backend = match kind {
        "eap-mschapv2" => EapBackend::Local(vec![Method::MsChapV2]),
        "eap-md5" => EapBackend::Local(vec![Method::Md5]),
        "eap-radius" => EapBackend::Relay,
        "eap-tls" => EapBackend::Tls(eap_tls_setup(ctx, at, name, c, kind_key)?),
        _ => {
            // With an EAP `auth`, eap_id is our own identity.
            let local_eap = c.auth.as_ref().is_some_and(|a| a.get_ref().starts_with("eap-"));
            if let Some(id) = c.eap_id.as_ref().filter(|_| !local_eap) {
                return Err(ctx.err(
                    id.span().start,
                    &key("eap_id"),
                    "eap_id needs auth = eap-… (our EAP identity) or remote_auth = eap-…",
                ));
            }
            if c.eap_only == Some(true) {
                return Err(ctx.err(at, &key("eap_only"), "eap_only needs remote_auth = eap-…"));
            }
            return Ok(None);
        }
    };
    match &backend {
        EapBackend::Relay if !aaa.radius => {
            return Err(ctx.err(
                remote_at,
                &key(kind_key),
                format!("{kind_key} = eap-radius needs a [radius] table with at least one [[radius.server]]"),
            ));
        }
        EapBackend::Local(_) if aaa.users.is_none() => {
            return Err(ctx.err(
                remote_at,
                &key(kind_key),
                format!("{kind_key} = {kind} needs the local users: [eap] users_file"),
            ));
        }
        _ => {}
    }
    let eap_id = match &c.eap_id {
        None => EapIdentity::Ike,
        Some(v) if v.get_ref() == "%any" => EapIdentity::Ask,
        Some(v) => {
            return Err(ctx.err(
                v.span().start,
                &key("eap_id"),
                format!(
                    "'{}': only %any (ask the client with EAP-Identity) is supported; leave eap_id out to use the IKE identity",
                    v.get_ref()
                ),
            ));
        }
    };
    if c.eap_only == Some(true) && kind == "eap-md5" {
        return Err(ctx.err(
            at,
            &key("eap_only"),
            "EAP-only authentication needs a method that authenticates the gateway (an MSK); eap-md5 has none",
        ));
    }
    Ok(Some(EapAuth {
        backend,
        eap_id,
        eap_only: c.eap_only.unwrap_or(false),
    }))
}

/// `auth = "eap-mschapv2"` or `"eap-md5"`: we are the EAP client of the
/// gateway, as `eap_id` (default: the text of `local_id`), with the password
/// of that user in the `[eap] users_file` secrets.
fn eap_client_auth(
    ctx: &Ctx<'_>,
    at: usize,
    name: &str,
    c: &RawConnection,
    kind: &str,
    aaa: AaaAvailable<'_>,
) -> Result<AuthConfig, ConfigError> {
    use control::config::EapClientAuth;
    use control::eap::{Credential, Method, UserStore};
    let key = |k: &str| format!("connection.{name}.{k}");
    let auth_at = c.auth.as_ref().map_or(at, |a| a.span().start);
    if let Some(p) = &c.ppk_id {
        return Err(ctx.err(
            p.span().start,
            &key("ppk_id"),
            format!("a PPK with auth = {kind} is not supported"),
        ));
    }
    let (identity, id_at) = match &c.eap_id {
        Some(id) => (id.get_ref().as_str(), id.span().start),
        None => (c.local_id.get_ref().as_str(), c.local_id.span().start),
    };
    let identity = identity.trim();
    if identity.is_empty() || identity == "%any" || identity.len() > control::eap::MAX_IDENTITY_LEN {
        return Err(ctx.err(
            id_at,
            &key("eap_id"),
            format!(
                "'{identity}' cannot be our EAP identity (1 to {} bytes)",
                control::eap::MAX_IDENTITY_LEN
            ),
        ));
    }
    if kind == "eap-tls" {
        use control::eap::tls::{TlsClientSetup, TlsVersion};
        let (ours, cas, key_at) = eap_tls_material(ctx, at, name, c, "auth")?;
        // The gateway's TLS certificate must carry its DNS name, as its IKE identity does.
        let server = c.remote_id.get_ref().trim();
        let server = server.strip_prefix('@').unwrap_or(server);
        if control::eap::tls::ServerName::try_from(server.to_string()).is_err() || server.contains('@') {
            return Err(ctx.err(
                c.remote_id.span().start,
                &key("remote_id"),
                format!("auth = eap-tls needs the gateway's DNS name here (its TLS certificate's), not '{server}'"),
            ));
        }
        let setup = TlsClientSetup::new(&ours, &cas, server, &[TlsVersion::V1_3, TlsVersion::V1_2])
            .map_err(|e| ctx.err(key_at, &key("key"), e.to_string()))?;
        return Ok(AuthConfig::EapClient(Arc::new(EapClientAuth {
            identity: identity.as_bytes().to_vec(),
            password: zeroize::Zeroizing::new(String::new()),
            methods: Vec::new(),
            tls: Some(Arc::new(setup)),
        })));
    }
    let Some(users) = aaa.users else {
        return Err(ctx.err(
            auth_at,
            &key("auth"),
            format!("auth = {kind} needs our password: [eap] users_file with a [[user]] named '{identity}'"),
        ));
    };
    let password = match users.credential(identity.as_bytes()) {
        Some(Credential::Password(p)) => p,
        Some(_) => {
            return Err(ctx.err(
                auth_at,
                "eap.users_file",
                format!("user '{identity}' needs a password (not nt_hash) for auth = {kind}"),
            ));
        }
        None => {
            return Err(ctx.err(
                auth_at,
                "eap.users_file",
                format!("no [[user]] named '{identity}' for auth = {kind}"),
            ));
        }
    };
    let methods = match kind {
        "eap-md5" => vec![Method::Md5],
        _ => vec![Method::MsChapV2],
    };
    Ok(AuthConfig::EapClient(Arc::new(EapClientAuth {
        identity: identity.as_bytes().to_vec(),
        password,
        methods,
        tls: None,
    })))
}

/// The gateway's EAP-TLS side: the server certificate and key are the
/// connection's `cert` and `key`, the CAs that sign client certificates its
/// `cacerts`; TLS 1.2 and 1.3 are offered.
fn eap_tls_setup(
    ctx: &Ctx<'_>,
    at: usize,
    name: &str,
    c: &RawConnection,
    kind_key: &str,
) -> Result<Arc<control::eap::tls::TlsServerSetup>, ConfigError> {
    use control::eap::tls::{TlsServerSetup, TlsVersion};
    let (ours, cas, key_at) = eap_tls_material(ctx, at, name, c, kind_key)?;
    let setup = TlsServerSetup::new(&ours, &cas, &[TlsVersion::V1_3, TlsVersion::V1_2])
        .map_err(|e| ctx.err(key_at, &format!("connection.{name}.key"), e.to_string()))?;
    Ok(Arc::new(setup))
}

/// EAP-TLS material of a connection: our chain and key (`cert`, `key`),
/// the DER of the CAs in `cacerts`, and where `key` is (for errors).
fn eap_tls_material(
    ctx: &Ctx<'_>,
    at: usize,
    name: &str,
    c: &RawConnection,
    kind_key: &str,
) -> Result<(control::eap::tls::TlsCredentials, Vec<Vec<u8>>, usize), ConfigError> {
    use control::eap::tls::TlsCredentials;
    let key = |k: &str| format!("connection.{name}.{k}");
    let need = |k: &str, what: &str| ctx.err(at, &key(k), format!("{kind_key} = eap-tls needs {k} ({what})"));
    let cert = c
        .cert
        .as_ref()
        .ok_or_else(|| need("cert", "our TLS certificate, PEM/DER, chain allowed"))?;
    let keyf = c.key.as_ref().ok_or_else(|| need("key", "the private key of cert"))?;
    if c.cacerts.is_empty() {
        return Err(need("cacerts", "the CAs that sign the peer's TLS certificate"));
    }
    let chain = Certificate::load(&ctx.read(cert, &key("cert"))?)
        .map_err(|e| ctx.err(cert.span().start, &key("cert"), e.to_string()))?;
    let key_file = zeroize::Zeroizing::new(ctx.read(keyf, &key("key"))?);
    let ours = TlsCredentials::from_files(&chain, &key_file)
        .map_err(|e| ctx.err(keyf.span().start, &key("key"), e.to_string()))?;
    let mut cas = Vec::new();
    for ca in &c.cacerts {
        let certs = Certificate::load(&ctx.read(ca, &key("cacerts"))?)
            .map_err(|e| ctx.err(ca.span().start, &key("cacerts"), e.to_string()))?;
        cas.extend(certs.iter().map(|c| c.der().to_vec()));
    }
    Ok((ours, cas, keyf.span().start))
}

/// The `[eap]` table: the local users file, refused when others may read it.
fn eap_section(ctx: &Ctx<'_>, raw: &RawEap) -> Result<Option<Arc<crate::aaa::users::LocalUsers>>, ConfigError> {
    let Some(f) = &raw.users_file else { return Ok(None) };
    let path = ctx.relative(f.get_ref());
    let users = crate::aaa::users::LocalUsers::load(&path)
        .map_err(|e| ctx.err(f.span().start, "eap.users_file", e.to_string()))?;
    Ok(Some(Arc::new(users)))
}

/// Default RADIUS wait before a retransmission.
const RADIUS_TIMEOUT: Duration = Duration::from_secs(2);

/// The `[radius]` table with its `[[radius.server]]`s; each secret comes
/// from a file that only the daemon may read.
fn radius_section(ctx: &Ctx<'_>, raw: &Spanned<RawRadius>) -> Result<RadiusSettings, ConfigError> {
    let r = raw.get_ref();
    if r.server.is_empty() {
        return Err(ctx.err(
            raw.span().start,
            "radius.server",
            "[radius] needs at least one [[radius.server]] with address and secret_file",
        ));
    }
    let servers = radius_servers(ctx, &r.server, "radius.server", 1812)?;
    let timeout = match &r.timeout {
        None => RADIUS_TIMEOUT,
        Some(v) => ctx.duration(v, "radius.timeout")?,
    };
    if timeout.is_zero() {
        let at = r.timeout.as_ref().map_or(raw.span().start, |v| v.span().start);
        return Err(ctx.err(at, "radius.timeout", "must be more than 0"));
    }
    let tries = match &r.tries {
        None => 3,
        Some(t) if (1..=10).contains(t.get_ref()) => *t.get_ref(),
        Some(t) => return Err(ctx.err(t.span().start, "radius.tries", "must be 1 to 10")),
    };
    let max_outstanding = match &r.max_outstanding {
        None => 256,
        Some(m) if (1..=256).contains(m.get_ref()) => *m.get_ref(),
        Some(m) => {
            return Err(ctx.err(
                m.span().start,
                "radius.max_outstanding",
                "must be 1 to 256 (one RADIUS identifier each)",
            ));
        }
    };
    let bind = if servers[0].addr.is_ipv4() {
        std::net::SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        std::net::SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0))
    };
    if servers.iter().any(|s| s.addr.is_ipv4() != bind.is_ipv4()) {
        return Err(ctx.err(
            raw.span().start,
            "radius.server.address",
            "all RADIUS servers must be of one address family",
        ));
    }
    let accounting = if r.accounting_server.is_empty() {
        None
    } else {
        let servers = radius_servers(ctx, &r.accounting_server, "radius.accounting_server", 1813)?;
        let bind = if servers[0].addr.is_ipv4() {
            std::net::SocketAddr::from(([0, 0, 0, 0], 0))
        } else {
            std::net::SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0))
        };
        if servers.iter().any(|s| s.addr.is_ipv4() != bind.is_ipv4()) {
            return Err(ctx.err(
                r.accounting_server[0].span().start,
                "radius.accounting_server.address",
                "all RADIUS accounting servers must be of one address family",
            ));
        }
        Some(crate::aaa::client::ClientConfig {
            servers,
            timeout,
            tries_per_server: tries,
            max_outstanding,
            bind,
            purpose: crate::aaa::client::Purpose::Accounting,
        })
    };
    let interim_interval = match &r.interim_interval {
        None => None,
        Some(v) => {
            let d = ctx.duration(v, "radius.interim_interval")?;
            if !d.is_zero() && d < Duration::from_secs(60) {
                return Err(ctx.err(
                    v.span().start,
                    "radius.interim_interval",
                    "must be 0 (off) or at least 60s (RFC 2869 §5.16)",
                ));
            }
            (!d.is_zero()).then_some(d)
        }
    };
    if interim_interval.is_some() && accounting.is_none() {
        let at = r.interim_interval.as_ref().map_or(raw.span().start, |v| v.span().start);
        return Err(ctx.err(
            at,
            "radius.interim_interval",
            "needs at least one [[radius.accounting_server]]",
        ));
    }
    let nas_identifier = r
        .nas_identifier
        .as_ref()
        .map_or_else(|| "ironsa".to_string(), |n| n.get_ref().clone());
    let dae = match &r.dae_listen {
        None if !r.dae_client.is_empty() => {
            return Err(ctx.err(
                r.dae_client[0].span().start,
                "radius.dae_client",
                "[[radius.dae_client]] needs dae_listen in [radius]",
            ));
        }
        None => None,
        Some(l) => {
            let listen = l.get_ref().parse::<std::net::SocketAddr>().map_err(|_| {
                ctx.err(
                    l.span().start,
                    "radius.dae_listen",
                    format!("'{}' is not ADDRESS:PORT (3799 is the usual port)", l.get_ref()),
                )
            })?;
            if r.dae_client.is_empty() {
                return Err(ctx.err(
                    l.span().start,
                    "radius.dae_listen",
                    "needs at least one [[radius.dae_client]] (address and secret_file): the clients allowed to disconnect users",
                ));
            }
            let clients = radius_servers(ctx, &r.dae_client, "radius.dae_client", 0)?
                .into_iter()
                .map(|c| crate::aaa::dae::DaeClient {
                    address: c.addr.ip(),
                    secret: c.secret,
                })
                .collect();
            Some(crate::aaa::dae::DaeConfig {
                listen,
                clients,
                nas_identifier: nas_identifier.clone(),
            })
        }
    };
    Ok(RadiusSettings {
        client: crate::aaa::client::ClientConfig {
            servers,
            timeout,
            tries_per_server: tries,
            max_outstanding,
            bind,
            purpose: crate::aaa::client::Purpose::Authentication,
        },
        nas_identifier,
        accounting,
        interim_interval,
        dae,
    })
}

/// RADIUS peers of one kind (`table` is `radius.server`,
/// `radius.accounting_server` or `radius.dae_client`): an address (with
/// `default_port` when none is given) and a secret from a file that only
/// the daemon may read.
fn radius_servers(
    ctx: &Ctx<'_>,
    raw: &[Spanned<RawRadiusServer>],
    table: &str,
    default_port: u16,
) -> Result<Vec<crate::aaa::client::RadiusServer>, ConfigError> {
    let mut servers = Vec::new();
    for s in raw {
        let s = s.get_ref();
        let a = &s.address;
        let addr = a
            .get_ref()
            .parse::<std::net::SocketAddr>()
            .or_else(|_| {
                a.get_ref()
                    .parse::<IpAddr>()
                    .map(|ip| std::net::SocketAddr::new(ip, default_port))
            })
            .map_err(|_| {
                ctx.err(
                    a.span().start,
                    &format!("{table}.address"),
                    format!("'{}' is not ADDRESS or ADDRESS:PORT", a.get_ref()),
                )
            })?;
        let f = &s.secret_file;
        let key = format!("{table}.secret_file");
        let path = ctx.relative(f.get_ref());
        crate::aaa::users::check_private(&path).map_err(|e| ctx.err(f.span().start, &key, e.to_string()))?;
        let text = zeroize::Zeroizing::new(ctx.read(f, &key)?);
        let secret: Vec<u8> = text.trim_ascii().to_vec();
        if secret.is_empty() {
            return Err(ctx.err(f.span().start, &key, format!("{} is empty", path.display())));
        }
        servers.push(crate::aaa::client::RadiusServer {
            addr,
            secret: zeroize::Zeroizing::new(secret),
        });
    }
    Ok(servers)
}

/// One `[[connection.child]]`: the template IKE negotiates and what the data
/// plane applies to its SAs.
fn child_section(ctx: &Ctx<'_>, conn: &str, ch: &RawChild) -> Result<(ChildConfig, ChildDataSettings), ConfigError> {
    let cname = ch.name.get_ref().clone();
    let ckey = |k: &str| format!("connection.{conn}.child.{cname}.{k}");
    // An empty list is how the model says `dynamic`.
    let ts = |sel: &Spanned<RawSelectors>, k: &str| -> Result<Vec<_>, ConfigError> {
        let list = match sel.get_ref() {
            RawSelectors::Dynamic => return Ok(Vec::new()),
            RawSelectors::List(l) => l,
        };
        if list.is_empty() {
            return Err(ctx.err(
                sel.span().start,
                &ckey(k),
                "no selector: a CHILD_SA needs at least one (0.0.0.0/0 for all IPv4 traffic, or \"dynamic\")",
            ));
        }
        list.iter()
            .map(|s| parse_network(s.get_ref()).map_err(|m| ctx.err(s.span().start, &ckey(k), m)))
            .collect()
    };
    let mode = match ch.mode.as_ref().map(|m| (m.span().start, m.get_ref().as_str())) {
        None | Some((_, "tunnel")) => IpsecMode::Tunnel,
        Some((_, "transport")) => IpsecMode::Transport,
        Some((o, other)) => {
            return Err(ctx.err(o, &ckey("mode"), format!("unknown mode '{other}' (tunnel, transport)")));
        }
    };
    let lifetime = match &ch.rekey {
        None => Lifetime::rekey_after(Duration::from_secs(3600)),
        Some(r) => Lifetime::rekey_after(ctx.duration(r, &ckey("rekey"))?),
    };
    let mut data = ChildDataSettings {
        rekey_bytes: ch.rekey_bytes.unwrap_or(0),
        rekey_packets: ch.rekey_packets.unwrap_or(0),
        ..Default::default()
    };
    if let Some(w) = &ch.replay_window {
        let range = 64..=i64::from(fastpath::esp::replay::MAX_WINDOW);
        if !range.contains(w.get_ref()) {
            return Err(ctx.err(
                w.span().start,
                &ckey("replay_window"),
                format!(
                    "{} packets: the anti-replay window takes 64 to {} packets (it cannot be turned off)",
                    w.get_ref(),
                    range.end()
                ),
            ));
        }
        // In range, so it fits; the data plane rounds it up to a power of two.
        data.replay_window = u32::try_from(*w.get_ref()).unwrap_or(fastpath::esp::replay::DEFAULT_WINDOW);
    }
    let esp_at = ch.esp_proposals.span().start;
    let esp_proposals = control::proposal::parse_esp_proposals(ch.esp_proposals.get_ref())
        .map_err(|e| ctx.err(esp_at, &ckey("esp_proposals"), e.to_string()))?;
    if let Some(why) = esp_unsupported(&esp_proposals) {
        return Err(ctx.err(esp_at, &ckey("esp_proposals"), why));
    }
    Ok((
        ChildConfig {
            name: cname.clone(),
            esp_proposals,
            local_ts: ts(&ch.local_ts, "local_ts")?,
            remote_ts: ts(&ch.remote_ts, "remote_ts")?,
            mode,
            lifetime,
        },
        data,
    ))
}

/// A traffic selector whose network has no host bits set: `10.1.0.1/16`
/// is most likely a typo for a host or for `10.1.0.0/16`, so it is refused
/// rather than silently widened.
fn parse_network(s: &str) -> Result<control::wire::ikev2::TrafficSelector, String> {
    let ts = control::ts::parse_selector(s)?;
    let net = s.split('[').next().unwrap_or(s).trim();
    if let Some((addr, prefix)) = net.split_once('/') {
        if addr.trim().parse::<IpAddr>().is_ok_and(|a| a != ts.start_addr) {
            return Err(format!(
                "'{s}' has host bits set: write {}/{} for the network, or the address alone for one host",
                ts.start_addr,
                prefix.trim()
            ));
        }
    }
    Ok(ts)
}

/// What a reload does to the SAs of a connection whose settings changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReloadEffect {
    /// Nothing that matters to its SAs changed.
    Unchanged,
    /// Only settings the SAs can follow as they are (timers, DPD, lifetimes
    /// of future rekeys, fragmentation, ports): they take the new settings.
    InPlace,
    /// What the SAs were authenticated or negotiated with changed (the key
    /// named): they must be deleted and negotiated anew.
    NewSa(&'static str),
}

/// True if two authentication settings use the same material: the PSK
/// bytes (compared in constant time), the certificate chain's DER (the
/// private key was checked to match its first certificate), the trusted
/// CAs' DER. Names and subjects are not enough: a re-issued certificate or
/// a swapped CA may keep them.
fn same_auth(a: &AuthConfig, b: &AuthConfig) -> bool {
    fn ders(certs: &[Certificate]) -> Vec<&[u8]> {
        let mut v: Vec<&[u8]> = certs.iter().map(Certificate::der).collect();
        v.sort_unstable();
        v
    }
    match (a, b) {
        (AuthConfig::Psk(x), AuthConfig::Psk(y)) => {
            aws_lc_rs::constant_time::verify_slices_are_equal(x.secret(), y.secret()).is_ok()
        }
        (AuthConfig::Cert(x), AuthConfig::Cert(y)) => {
            x.chain.len() == y.chain.len() && x.chain.iter().zip(&y.chain).all(|(p, q)| p.der() == q.der())
        }
        (AuthConfig::PubKey(x), AuthConfig::PubKey(y)) => ders(x.certificates()) == ders(y.certificates()),
        (AuthConfig::Eap(x), AuthConfig::Eap(y)) => x == y,
        (AuthConfig::EapClient(x), AuthConfig::EapClient(y)) => x == y,
        _ => false,
    }
}

/// True if two PPK settings are the same (the keys compared in constant time).
fn same_ppk(a: Option<&control::config::PpkConfig>, b: Option<&control::config::PpkConfig>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(x), Some(y)) => {
            x.id == y.id
                && x.required == y.required
                && aws_lc_rs::constant_time::verify_slices_are_equal(&x.key, &y.key).is_ok()
        }
        _ => false,
    }
}

/// What a reload that turns connection `old` into `new` (same name) does to
/// the SAs made with `old`.
pub fn reload_effect(old: &ConnectionConfig, new: &ConnectionConfig) -> ReloadEffect {
    let same_child = |a: &ChildConfig, b: &ChildConfig| {
        a.name == b.name
            && a.esp_proposals == b.esp_proposals
            && a.local_ts == b.local_ts
            && a.remote_ts == b.remote_ts
            && a.mode == b.mode
    };
    let renegotiate = [
        ("remote_addrs", old.remote_addrs == new.remote_addrs),
        ("local_addrs", old.local_addrs == new.local_addrs),
        ("version", old.ike_versions == new.ike_versions),
        ("local_id", old.local_id == new.local_id),
        ("remote_id", old.remote_id == new.remote_id),
        ("auth", same_auth(&old.local_auth, &new.local_auth)),
        ("remote_auth", same_auth(&old.remote_auth, &new.remote_auth)),
        (
            "remote_auth2",
            old.remote_auth2 == new.remote_auth2 && old.xauth == new.xauth,
        ),
        (
            "xauth_user",
            match (&old.xauth_client, &new.xauth_client) {
                (None, None) => true,
                (Some(a), Some(b)) => {
                    a.user == b.user
                        && aws_lc_rs::constant_time::verify_slices_are_equal(
                            a.password.as_bytes(),
                            b.password.as_bytes(),
                        )
                        .is_ok()
                }
                _ => false,
            },
        ),
        ("mode_config", old.mode_config_push == new.mode_config_push),
        ("ike_proposals", old.ike_proposals == new.ike_proposals),
        ("force_udp_encap", old.force_udp_encap == new.force_udp_encap),
        ("aggressive", old.aggressive == new.aggressive),
        ("vips", old.virtual_ips.request == new.virtual_ips.request),
        ("ppk_id", same_ppk(old.ppk.as_ref(), new.ppk.as_ref())),
        (
            "child",
            old.children.len() == new.children.len()
                && old.children.iter().zip(&new.children).all(|(a, b)| same_child(a, b)),
        ),
    ];
    if let Some((key, _)) = renegotiate.iter().find(|(_, same)| !same) {
        return ReloadEffect::NewSa(key);
    }
    let all_same = old.ike_lifetime == new.ike_lifetime
        && old.dpd_delay == new.dpd_delay
        && old.nat_keepalive == new.nat_keepalive
        && old.mobike == new.mobike
        && old.fragmentation == new.fragmentation
        && old.fragment_size == new.fragment_size
        && old.initial_contact == new.initial_contact
        && old.remote_nat_port == new.remote_nat_port
        && old.retransmit_timeout == new.retransmit_timeout
        && old.retransmit_tries == new.retransmit_tries
        && old.retransmit_base == new.retransmit_base
        && old.virtual_ips == new.virtual_ips
        && old
            .children
            .iter()
            .zip(&new.children)
            .all(|(a, b)| a.lifetime == b.lifetime);
    if all_same {
        ReloadEffect::Unchanged
    } else {
        ReloadEffect::InPlace
    }
}

/// Why an ESP proposal names an algorithm the data plane cannot install
/// (negotiating it would bring up a CHILD_SA that carries nothing), if one does.
fn esp_unsupported(proposals: &[control::proposal::EspProposal]) -> Option<String> {
    use fastpath::esp::aead::{EncAlg, IntegAlg};
    for p in proposals {
        if let Some(e) = p
            .encr
            .iter()
            .find(|e| EncAlg::from_ikev2(e.transform_id(), e.key_length_attribute()).is_none())
        {
            return Some(format!(
                "ESP encryption {} is not supported by the data plane (AES-GCM-16 128/256, ChaCha20-Poly1305, AES-CBC 128/256)",
                e.name()
            ));
        }
        if let Some(i) = p
            .integ
            .iter()
            .find(|i| IntegAlg::from_ikev2(Some(i.transform_id())).is_none())
        {
            return Some(format!("ESP integrity {i:?} is not supported by the data plane"));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[daemon]
listen = ["127.0.0.1"]
ike_port = 5600
nat_port = 5601
shards = 2
control_socket = "/tmp/x.sock"

[dos]
cookie_threshold = 10
cookie_calm_down = "5s"

[[connection]]
name = "rw"
remote_addrs = ["%any"]
local_id = "gw@example.org"
remote_id = "%any"
psk = "Zq8#kP2!vR9@wX4$yT7&uN1*"
ike_proposals = "aes256gcm16-prfsha256-x25519"
dpd_delay = "30s"

[[connection.child]]
name = "net"
local_ts = ["10.1.0.0/16"]
remote_ts = ["0.0.0.0/0"]
esp_proposals = "aes256gcm16"
"#;

    fn bad(text: &str) -> (usize, String, String) {
        bad_at(Path::new("t.toml"), text)
    }

    fn bad_at(path: &Path, text: &str) -> (usize, String, String) {
        match DaemonConfig::parse(path, text) {
            Err(ConfigError::Invalid { line, key, message, .. }) => (line, key, message),
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn child_data_plane_settings_and_their_bounds() {
        // Defaults: nothing recorded for the child.
        let c = DaemonConfig::parse(Path::new("t.toml"), GOOD).unwrap();
        assert!(c.child_settings.is_empty());
        let with = |extra: &str| {
            GOOD.replace(
                "esp_proposals = \"aes256gcm16\"\n",
                &format!("esp_proposals = \"aes256gcm16\"\n{extra}\n"),
            )
        };
        let c = DaemonConfig::parse(Path::new("t.toml"), &with("replay_window = 8192\nrekey_packets = 1000")).unwrap();
        assert_eq!(
            c.child_settings.get(&("rw".to_string(), "net".to_string())),
            Some(&ChildDataSettings {
                rekey_bytes: 0,
                rekey_packets: 1000,
                replay_window: 8192,
            })
        );
        for (value, shown) in [
            ("0", "0 packets"),
            ("63", "63 packets"),
            ("65537", "65537 packets"),
            ("-5", "-5 packets"),
        ] {
            let (line, key, message) = bad(&with(&format!("replay_window = {value}")));
            assert_eq!(
                (line, key.as_str()),
                (27, "connection.rw.child.net.replay_window"),
                "{value}"
            );
            assert!(message.contains(shown) && message.contains("64 to 65536"), "{message}");
        }
        // A value of the wrong type: the line and the key it assigns.
        let (line, key, message) = bad(&with("replay_window = \"big\""));
        assert_eq!(
            (line, key.as_str()),
            (27, "connection.child.replay_window"),
            "{message}"
        );
    }

    #[test]
    fn good_config_parses() {
        let c = DaemonConfig::parse(Path::new("t.toml"), GOOD).unwrap();
        assert_eq!(c.ike_port, 5600);
        assert_eq!(c.shards, 2);
        assert_eq!(c.expected_tunnels, 0);
        assert_eq!(c.admission.cookie_threshold, 10);
        assert_eq!(c.admission.cookie_calm_down, Duration::from_secs(5));
        assert_eq!(c.connections.len(), 1);
        let conn = &c.connections[0].config;
        assert!(conn.remote_addrs.is_none());
        assert_eq!(conn.remote_id, IdentityMatch::Any);
        assert_eq!(conn.dpd_delay, Some(Duration::from_secs(30)));
        assert_eq!(conn.children[0].name, "net");
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }

    #[test]
    fn nat_keepalive_defaults_to_20s_and_0_disables() {
        let conn =
            |text: &str| DaemonConfig::parse(Path::new("t.toml"), text).map(|c| c.connections[0].config.nat_keepalive);
        assert_eq!(conn(GOOD).unwrap(), Some(Duration::from_secs(20)));
        let with = |v: &str| {
            GOOD.replace(
                "dpd_delay = \"30s\"",
                &format!("dpd_delay = \"30s\"\nnat_keepalive = {v}"),
            )
        };
        assert_eq!(conn(&with("\"5s\"")).unwrap(), Some(Duration::from_secs(5)));
        assert_eq!(conn(&with("0")).unwrap(), None);
        let e = conn(&with("\"soon\"")).unwrap_err().to_string();
        assert!(e.contains("t.toml") && e.contains("nat_keepalive"), "{e}");
    }

    #[test]
    fn version_key_selects_ike_versions() {
        let with = |v: &str| GOOD.replace("dpd_delay = \"30s\"", &format!("dpd_delay = \"30s\"\nversion = {v}"));
        let versions = |text: &str| {
            DaemonConfig::parse(Path::new("t.toml"), text).unwrap().connections[0]
                .config
                .ike_versions
        };
        assert_eq!(versions(GOOD), IkeVersions::V2);
        assert_eq!(versions(&with("1")), IkeVersions::V1);
        assert_eq!(versions(&with("2")), IkeVersions::V2);
        assert_eq!(versions(&with("\"any\"")), IkeVersions::Any);
        let warned = DaemonConfig::parse(Path::new("t.toml"), &with("1")).unwrap().warnings;
        assert!(
            warned
                .iter()
                .any(|w| w.key == "connection.rw.version" && w.line == 21 && w.message.contains("version = 2")),
            "{warned:?}"
        );
        assert!(
            DaemonConfig::parse(Path::new("t.toml"), &with("2"))
                .unwrap()
                .warnings
                .is_empty()
        );
        let (line, key, msg) = bad(&with("3"));
        assert_eq!((line, key.as_str()), (21, "connection.rw.version"));
        assert!(msg.contains("not 1, 2 or \"any\""), "{msg}");
    }

    #[test]
    fn ikev1_connections_are_flagged_with_their_ikev2_replacement() {
        let v1 = GOOD
            .replace("dpd_delay = \"30s\"", "dpd_delay = \"30s\"\nversion = 1")
            .replace("aes256gcm16-prfsha256-x25519", "aes256-sha256-modp2048");
        let warned = DaemonConfig::parse(Path::new("t.toml"), &v1).unwrap().warnings;
        let w = warned
            .iter()
            .find(|w| w.key == "connection.rw.version")
            .expect("flagged");
        assert!(
            w.message.contains(
                "version = 2, ike_proposals = \"aes256gcm16-prfsha256-x25519, aes256-sha256-prfsha256-modp2048\""
            ),
            "{}",
            w.message
        );
    }

    #[test]
    fn aggressive_mode_is_enabled_per_connection_with_a_warning() {
        let with = |extra: &str| GOOD.replace("dpd_delay = \"30s\"", &format!("dpd_delay = \"30s\"\n{extra}"));
        let parsed = |text: &str| DaemonConfig::parse(Path::new("t.toml"), text).unwrap();
        assert!(
            !parsed(&with("version = 1")).connections[0].config.aggressive,
            "off by default"
        );
        let on = parsed(&with("version = 1\naggressive = true"));
        assert!(on.connections[0].config.aggressive);
        let w = on
            .warnings
            .iter()
            .find(|w| w.key == "connection.rw.aggressive")
            .expect("warned");
        assert_eq!(w.line, 22);
        assert!(w.message.contains("crack the PSK offline"), "{}", w.message);
        let replacement = on.warnings.iter().find(|w| w.key == "connection.rw.version").unwrap();
        assert!(
            replacement.message.ends_with("and no aggressive"),
            "{}",
            replacement.message
        );
        let (line, key, msg) = bad(&with("aggressive = true"));
        assert_eq!((line, key.as_str()), (21, "connection.rw.aggressive"));
        assert!(msg.contains("IKEv1"), "{msg}");
    }

    #[test]
    fn errors_name_line_and_key() {
        let (line, key, msg) = bad(&GOOD.replace("aes256gcm16-prfsha256-x25519", "aes256gcm16-prfsha256-x99999"));
        assert_eq!(line, 19);
        assert_eq!(key, "connection.rw.ike_proposals");
        assert!(msg.contains("x99999"), "{msg}");
        let (line, key, _) = bad(&GOOD.replace("\"10.1.0.0/16\"", "\"10.1.0.0/99\""));
        assert_eq!((line, key.as_str()), (24, "connection.rw.child.net.local_ts"));
        let (line, key, _) = bad(&GOOD.replace("dpd_delay = \"30s\"", "dpd_delay = \"30 parsecs\""));
        assert_eq!((line, key.as_str()), (20, "connection.rw.dpd_delay"));
        let (line, key, _) = bad(&GOOD.replace("shards = 2", "shardz = 2"));
        assert_eq!((line, key.as_str()), (6, "daemon.shardz"));
        let (line, _, _) = bad(&GOOD.replace("ike_port = 5600", "ike_port = \"x\""));
        assert_eq!(line, 4);
        let (_, key, _) = bad(&GOOD.replace("[\"127.0.0.1\"]", "[\"127.0.0.300\"]"));
        assert_eq!(key, "daemon.listen");
        let (line, key, _) = bad(&GOOD.replace("shards = 2", "shards = 2\nexpected_tunnels = 99999999999"));
        assert_eq!((line, key.as_str()), (7, "daemon.expected_tunnels"));
    }

    #[test]
    fn esp_algorithms_the_data_plane_lacks_are_refused() {
        for (esp, named) in [("aes192-sha256", "192"), ("aes128-sha256, aes192gcm16", "192")] {
            let (line, key, msg) =
                bad(&GOOD.replace("esp_proposals = \"aes256gcm16\"", &format!("esp_proposals = \"{esp}\"")));
            assert_eq!(
                (line, key.as_str()),
                (26, "connection.rw.child.net.esp_proposals"),
                "{esp}"
            );
            assert!(msg.contains(named) && msg.contains("data plane"), "{msg}");
        }
        // Everything the data plane does is accepted.
        for esp in [
            "aes128gcm16",
            "aes256gcm16-esn",
            "chacha20poly1305",
            "aes128-sha256",
            "aes256-sha384",
            "aes256-sha512-modp2048",
        ] {
            let text = GOOD.replace("esp_proposals = \"aes256gcm16\"", &format!("esp_proposals = \"{esp}\""));
            assert!(DaemonConfig::parse(Path::new("t.toml"), &text).is_ok(), "{esp}");
        }
    }

    #[test]
    fn settings_that_would_silently_misbehave_are_refused() {
        // A bare word is a tracing target, so "verbose" would log nothing at all.
        let (line, key, msg) = bad(&GOOD.replace("shards = 2", "shards = 2\nlog_level = \"verbose\""));
        assert_eq!((line, key.as_str()), (7, "daemon.log_level"), "{msg}");
        assert!(msg.contains("'verbose' is not a log level"), "{msg}");
        for filter in ["debug", "WARN", "info,control=trace", "ironsa=debug,warn"] {
            let text = GOOD.replace("shards = 2", &format!("shards = 2\nlog_level = \"{filter}\""));
            assert_eq!(
                DaemonConfig::parse(Path::new("t.toml"), &text).unwrap().log_level,
                filter
            );
        }
        assert!(check_log_filter("control=loud").is_err());

        for empty in ["", "\n# nothing but a comment\n\n"] {
            let (line, key, msg) = bad(empty);
            assert_eq!((line, key.as_str()), (1, "(file)"), "{msg}");
            assert!(msg.contains("empty"), "{msg}");
        }
        let only_daemon = GOOD.split("[[connection]]").next().unwrap();
        let c = DaemonConfig::parse(Path::new("t.toml"), only_daemon).unwrap();
        assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
        assert_eq!(c.warnings[0].key, "connection");

        for k in ["local_ts", "remote_ts"] {
            let text = GOOD
                .replace("local_ts = [\"10.1.0.0/16\"]", "local_ts = LOCAL")
                .replace("remote_ts = [\"0.0.0.0/0\"]", "remote_ts = REMOTE");
            let text = if k == "local_ts" {
                text.replace("LOCAL", "[]").replace("REMOTE", "[\"0.0.0.0/0\"]")
            } else {
                text.replace("LOCAL", "[\"10.1.0.0/16\"]").replace("REMOTE", "[]")
            };
            let (line, key, msg) = bad(&text);
            let want = format!("connection.rw.child.net.{k}");
            assert_eq!(
                (line, key.as_str()),
                (if k == "local_ts" { 24 } else { 25 }, want.as_str())
            );
            assert!(msg.contains("at least one"), "{msg}");
        }

        let (line, key, msg) = bad(&GOOD.replace("shards = 2", "shards = 100000"));
        assert_eq!((line, key.as_str()), (6, "daemon.shards"));
        assert!(msg.contains("100000") && msg.contains("64"), "{msg}");
        let auto = DaemonConfig::parse(Path::new("t.toml"), &GOOD.replace("shards = 2", "shards = 0")).unwrap();
        assert!((1..=MAX_SHARDS).contains(&auto.shards));
        let (line, key, msg) = bad(&GOOD.replace("[dos]", "[fastpath]\nworkers = 0\n\n[dos]"));
        assert_eq!((line, key.as_str()), (10, "fastpath.workers"), "{msg}");

        let (line, key, msg) = bad(&GOOD.replace("ike_port = 5600", "ike_port = 70000"));
        assert_eq!((line, key.as_str()), (4, "daemon.ike_port"), "{msg}");
        assert!(msg.contains("70000"), "{msg}");
    }

    #[test]
    fn integrity_after_an_aead_cipher_is_flagged() {
        // IKE: strongSwan syntax, where the token picks the PRF; say so.
        let c = DaemonConfig::parse(
            Path::new("t.toml"),
            &GOOD.replace(
                "\"aes256gcm16-prfsha256-x25519\"",
                "\"aes128-sha256-x25519, aes256gcm16-sha384-x25519, chacha20poly1305-sha256-prfsha512-x25519\"",
            ),
        )
        .unwrap();
        let w: Vec<_> = c
            .warnings
            .iter()
            .filter(|w| w.key == "connection.rw.ike_proposals")
            .collect();
        assert_eq!(w.len(), 2, "{w:?}");
        assert_eq!(w[0].line, 19);
        assert!(
            w[0].message.contains("proposal 2") && w[0].message.contains("prfsha384"),
            "{w:?}"
        );
        assert!(
            w[1].message.contains("proposal 3") && w[1].message.contains("ignored"),
            "{w:?}"
        );
        // ESP: an integrity algorithm with AEAD has no meaning and is refused.
        let (line, key, msg) = bad(&GOOD.replace(
            "esp_proposals = \"aes256gcm16\"",
            "esp_proposals = \"aes256gcm16-sha256\"",
        ));
        assert_eq!(
            (line, key.as_str()),
            (26, "connection.rw.child.net.esp_proposals"),
            "{msg}"
        );
        assert!(msg.contains("sha256"), "{msg}");
    }

    #[test]
    fn selectors_with_host_bits_are_refused() {
        let (line, key, msg) = bad(&GOOD.replace("\"10.1.0.0/16\"", "\"10.1.0.1/16\""));
        assert_eq!((line, key.as_str()), (24, "connection.rw.child.net.local_ts"));
        assert!(msg.contains("host bits") && msg.contains("10.1.0.0/16"), "{msg}");
        let (_, _, msg) = bad(&GOOD.replace("\"10.1.0.0/16\"", "\"fd00::1/64[tcp/443]\""));
        assert!(msg.contains("fd00::/64"), "{msg}");
        for ok in [
            "10.1.0.1",
            "10.1.0.1/32",
            "10.1.0.0/16[udp/53]",
            "fd00::/64",
            "0.0.0.0/0",
        ] {
            let text = GOOD.replace("\"10.1.0.0/16\"", &format!("\"{ok}\""));
            assert!(DaemonConfig::parse(Path::new("t.toml"), &text).is_ok(), "{ok}");
        }
    }

    /// The keys the parser accepts in a table, read from its own error for
    /// an unknown key there (serde lists the expected fields).
    fn accepted_keys(table_header: &str) -> Vec<String> {
        let text = format!("{table_header}\nzz_not_a_key = 1\n");
        let (_, key, message) = bad(&text);
        assert!(key.ends_with("zz_not_a_key"), "{key}: {message}");
        let expected = message.split_once("expected").map_or("", |(_, e)| e);
        expected.split('`').skip(1).step_by(2).map(str::to_string).collect()
    }

    /// The keys docs/configuration.md lists per table: rows "| `key` |" under
    /// headings naming the table ("## `[daemon]`", "## Top level").
    fn documented_keys() -> std::collections::BTreeMap<String, Vec<String>> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md");
        let text = std::fs::read_to_string(&path).unwrap();
        let mut tables = std::collections::BTreeMap::<String, Vec<String>>::new();
        let mut current = None;
        for line in text.lines() {
            if let Some(h) = line.strip_prefix("## ") {
                current = Some(if h == "Top level" {
                    String::new()
                } else {
                    h.trim_matches(|c| matches!(c, '`' | '[' | ']')).to_string()
                });
            } else if let (Some(t), Some(row)) = (&current, line.strip_prefix("| `")) {
                let key = row.split('`').next().unwrap().to_string();
                tables.entry(t.clone()).or_default().push(key);
            }
        }
        tables
    }

    #[test]
    fn configuration_reference_matches_the_parser() {
        let documented = documented_keys();
        let tables = [
            ("", ""),
            ("daemon", "[daemon]"),
            ("dos", "[dos]"),
            ("fastpath", "[fastpath]"),
            ("cluster", "[cluster]"),
            ("connection", "[[connection]]"),
            ("connection.child", "[[connection]]\nname = \"c\"\n[[connection.child]]"),
            ("pool", "[[pool]]"),
            ("eap", "[eap]"),
            ("radius", "[radius]"),
            ("radius.server", "[[radius.server]]"),
            ("radius.accounting_server", "[[radius.accounting_server]]"),
            ("radius.dae_client", "[[radius.dae_client]]"),
        ];
        assert_eq!(
            documented.keys().collect::<Vec<_>>(),
            {
                let mut names: Vec<_> = tables.iter().map(|(t, _)| t.to_string()).collect();
                names.sort();
                names
            }
            .iter()
            .collect::<Vec<_>>(),
            "docs/configuration.md documents exactly these tables"
        );
        for (table, header) in tables {
            let mut accepted = accepted_keys(header);
            accepted.sort();
            let mut listed = documented[table].clone();
            listed.sort();
            assert_eq!(
                listed, accepted,
                "docs/configuration.md, table '{table}': documented keys (left) differ from the keys the parser accepts (right)"
            );
        }
    }

    #[test]
    fn documented_defaults_are_the_parsers() {
        // Every table present, no optional key set.
        const BARE: &str = r#"
[daemon]
[dos]
[fastpath]
[[connection]]
name = "rw"
local_id = "gw@example.org"
remote_id = "%any"
psk = "Zq8#kP2!vR9@wX4$yT7&uN1*"
ike_proposals = "aes256gcm16-prfsha256-x25519"
[[connection.child]]
name = "net"
local_ts = ["10.1.0.0/16"]
remote_ts = ["0.0.0.0/0"]
esp_proposals = "aes256gcm16"
"#;
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md");
        let text = std::fs::read_to_string(&path).unwrap();
        let bare = format!("{:?}", DaemonConfig::parse(Path::new("t.toml"), BARE).unwrap());
        let mut table = String::new();
        let mut checked = 0;
        for line in text.lines() {
            if let Some(h) = line.strip_prefix("## ") {
                table = h.trim_matches(|c| matches!(c, '`' | '[' | ']')).to_string();
                continue;
            }
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            // | `key` | type | default | reload | meaning |: only literal defaults.
            let (Some(key), Some(default)) = (cells.get(1), cells.get(3)) else {
                continue;
            };
            let (Some(key), Some(value)) = (key.strip_prefix('`'), default.strip_prefix('`')) else {
                continue;
            };
            let (key, value) = (key.trim_end_matches('`'), value.split('`').next().unwrap());
            let value = if value.parse::<toml::Value>().is_ok() || value.starts_with('[') {
                value.to_string()
            } else {
                format!("\"{value}\"")
            };
            let anchor = match table.as_str() {
                "connection" => "name = \"rw\"\n".to_string(),
                "connection.child" => "name = \"net\"\n".to_string(),
                t => format!("[{t}]\n"),
            };
            let with = BARE.replacen(&anchor, &format!("{anchor}{key} = {value}\n"), 1);
            let parsed = DaemonConfig::parse(Path::new("t.toml"), &with)
                .unwrap_or_else(|e| panic!("{table}.{key} = {value} (its documented default): {e}"));
            assert_eq!(
                format!("{parsed:?}"),
                bare,
                "{table}.{key} = {value}, its documented default, changes the configuration"
            );
            checked += 1;
        }
        assert!(checked >= 25, "{checked} defaults checked");
    }

    #[test]
    fn damaged_files_are_errors_never_panics() {
        // Every prefix, and every character replaced by a multi-byte one or a
        // quote: error locations must never slice inside a character.
        for (i, _) in GOOD.char_indices() {
            let _ = DaemonConfig::parse(Path::new("t.toml"), &GOOD[..i]);
            for with in ["é", "\"", "[", "="] {
                let mut damaged = GOOD.to_string();
                let len = damaged[i..].chars().next().map_or(0, char::len_utf8);
                damaged.replace_range(i..i + len, with);
                let _ = DaemonConfig::parse(Path::new("t.toml"), &damaged);
            }
        }
    }

    /// The connection of `text`.
    fn connection_of(text: &str) -> Arc<ConnectionConfig> {
        DaemonConfig::parse(Path::new("t.toml"), text).unwrap().connections[0]
            .config
            .clone()
    }

    const ROAD_WARRIORS: &str = r#"[[pool]]
name = "rw"
addrs = ["10.3.0.0/24", "10.4.0.10-10.4.0.20"]
dns = ["10.1.0.53", "2001:db8::53"]
nbns = ["10.1.0.54"]
subnets = ["10.1.0.0/16"]

[[pool]]
name = "rw6"
addrs = ["fd00:3::/112"]

[[connection]]
name = "rw"
local_id = "gw@example.org"
remote_id = "*@example.org"
psk = "Zq8#kP2!vR9@wX4$yT7&uN1*"
ike_proposals = "aes256gcm16-prfsha256-x25519"
pools = ["rw", "rw6"]

[[connection.child]]
name = "net"
local_ts = ["10.1.0.0/16"]
remote_ts = "dynamic"
esp_proposals = "aes256gcm16"

[[connection]]
name = "home"
remote_addrs = ["192.0.2.1"]
local_id = "me@example.org"
remote_id = "gw@example.org"
psk = "Zq8#kP2!vR9@wX4$yT7&uN1*"
ike_proposals = "aes256gcm16-prfsha256-x25519"
vips = ["0.0.0.0", "::"]

[[connection.child]]
name = "net"
local_ts = ["dynamic"]
remote_ts = ["10.1.0.0/16"]
esp_proposals = "aes256gcm16"
"#;

    #[test]
    fn pools_and_virtual_ips() {
        let c = DaemonConfig::parse(Path::new("t.toml"), ROAD_WARRIORS).unwrap();
        assert_eq!(c.pools.len(), 2);
        let pools = build_pools(&c.pools).unwrap();
        assert_eq!(pools.get("rw").unwrap().stats().size, 254 + 11);
        let rw = &c.connections[0].config;
        assert_eq!(rw.virtual_ips.pools, ["rw", "rw6"]);
        assert_eq!(rw.virtual_ips.dns.len(), 2);
        assert_eq!(rw.virtual_ips.subnets, [("10.1.0.0".parse().unwrap(), 16)]);
        assert!(rw.children[0].remote_ts.is_empty(), "dynamic");
        let home = &c.connections[1].config;
        assert_eq!(home.virtual_ips.request.len(), 2);
        assert!(home.children[0].local_ts.is_empty(), "dynamic");

        let cases = [
            (
                "pools = [\"rw\", \"rw6\"]",
                "pools = [\"rw\", \"nope\"]",
                18,
                "connection.rw.pools",
                "no [[pool]] named 'nope'",
            ),
            (
                "addrs = [\"fd00:3::/112\"]",
                "addrs = [\"10.3.0.7/32\"]",
                10,
                "pool.rw6.addrs",
                "overlaps",
            ),
            (
                "addrs = [\"fd00:3::/112\"]",
                "addrs = [\"10.9.0.9-10.9.0.1\"]",
                10,
                "pool.rw6.addrs",
                "ends before",
            ),
            (
                "addrs = [\"fd00:3::/112\"]",
                "addrs = []",
                10,
                "pool.rw6.addrs",
                "no addresses",
            ),
            (
                "nbns = [\"10.1.0.54\"]",
                "nbns = [\"fd00::54\"]",
                5,
                "pool.rw.nbns",
                "IPv4 only",
            ),
            ("name = \"rw6\"", "name = \"rw\"", 9, "pool.name", "duplicate pool name"),
            (
                "vips = [\"0.0.0.0\", \"::\"]",
                "vips = [\"any\"]",
                33,
                "connection.home.vips",
                "not an IP address",
            ),
            (
                "remote_ts = \"dynamic\"",
                "remote_ts = \"static\"",
                23,
                "connection.child.remote_ts",
                "dynamic",
            ),
        ];
        for (from, to, line, key, msg) in cases {
            let (l, k, m) = bad(&ROAD_WARRIORS.replacen(from, to, 1));
            assert_eq!((l, k.as_str()), (line, key), "{to}: {m}");
            assert!(m.contains(msg), "{to}: {m}");
        }
    }

    #[test]
    fn reload_renegotiates_for_changed_xauth_credentials() {
        let client = |password: &str| {
            connection_of(
                &GOOD
                    .replace(
                        "dpd_delay = \"30s\"",
                        &format!(
                            "dpd_delay = \"30s\"\nversion = 1\nxauth_user = \"alice\"\nxauth_password = \"{password}\""
                        ),
                    )
                    .replace("aes256gcm16-prfsha256-x25519", "aes256-sha256-modp2048"),
            )
        };
        let old = client("first-password");
        assert_eq!(reload_effect(&old, &client("first-password")), ReloadEffect::Unchanged);
        assert_eq!(
            reload_effect(&old, &client("other-password")),
            ReloadEffect::NewSa("xauth_user")
        );
    }

    #[test]
    fn reload_keeps_sas_for_timers_and_renegotiates_for_what_they_were_made_with() {
        let old = connection_of(GOOD);
        let effect = |from: &str, to: &str| reload_effect(&old, &connection_of(&GOOD.replacen(from, to, 1)));
        assert_eq!(reload_effect(&old, &connection_of(GOOD)), ReloadEffect::Unchanged);
        for (from, to) in [
            ("dpd_delay = \"30s\"", "dpd_delay = \"10s\""),
            ("dpd_delay = \"30s\"", "dpd_delay = \"30s\"\nike_rekey = \"1h\""),
            ("dpd_delay = \"30s\"", "dpd_delay = \"30s\"\nfragment_size = 1400"),
            ("dpd_delay = \"30s\"", "dpd_delay = \"30s\"\nremote_nat_port = 4501"),
            (
                "esp_proposals = \"aes256gcm16\"",
                "esp_proposals = \"aes256gcm16\"\nrekey = \"20m\"",
            ),
        ] {
            assert_eq!(effect(from, to), ReloadEffect::InPlace, "{to}");
        }
        // A changed PSK of the same length and classes: its bytes differ.
        assert_eq!(
            effect("Zq8#kP2!vR9@wX4$yT7&uN1*", "Zq8#kP2!vR9@wX4$yT7&uN1+"),
            ReloadEffect::NewSa("auth")
        );
        for (from, to, key) in [
            (
                "aes256gcm16-prfsha256-x25519",
                "aes128gcm16-prfsha256-x25519",
                "ike_proposals",
            ),
            ("\"10.1.0.0/16\"", "\"10.2.0.0/16\"", "child"),
            (
                "esp_proposals = \"aes256gcm16\"",
                "esp_proposals = \"aes128gcm16\"",
                "child",
            ),
            ("name = \"net\"", "name = \"lan\"", "child"),
            (
                "local_id = \"gw@example.org\"",
                "local_id = \"gw2@example.org\"",
                "local_id",
            ),
            ("remote_id = \"%any\"", "remote_id = \"*@example.org\"", "remote_id"),
            (
                "remote_addrs = [\"%any\"]",
                "remote_addrs = [\"192.0.2.9\"]",
                "remote_addrs",
            ),
            (
                "remote_addrs = [\"%any\"]",
                "remote_addrs = [\"%any\"]\nlocal_addrs = [\"192.0.2.1\"]",
                "local_addrs",
            ),
        ] {
            assert_eq!(effect(from, to), ReloadEffect::NewSa(key), "{to}");
        }
    }

    #[test]
    fn eap_tls_takes_the_connection_cert_key_and_cacerts() {
        let pki = Path::new(env!("CARGO_MANIFEST_DIR")).join("control/tests/data/pki");
        let conf = |ca: &str| {
            let text = GOOD.replace(
                "dpd_delay = \"30s\"\n",
                &format!(
                    "dpd_delay = \"30s\"\nremote_auth = \"eap-tls\"\ncert = \"{}\"\nkey = \"{}\"\ncacerts = [\"{}\"]\n",
                    pki.join("ee-p256.pem").display(),
                    pki.join("ee-p256.key").display(),
                    pki.join(ca).display()
                ),
            );
            connection_of(&text)
        };
        let old = conf("ca-rsa.pem");
        match &old.remote_auth {
            AuthConfig::Eap(e) => assert_eq!(e.name(), "eap-tls"),
            other => panic!("{other:?}"),
        }
        assert_eq!(reload_effect(&old, &conf("ca-rsa.pem")), ReloadEffect::Unchanged);
        assert_eq!(
            reload_effect(&old, &conf("impostor-ca.pem")),
            ReloadEffect::NewSa("remote_auth")
        );
        // As client: our certificate for TLS, the gateway's DNS name from remote_id.
        let client = |remote_id: &str| {
            GOOD.replace(
                "dpd_delay = \"30s\"\n",
                &format!(
                    "dpd_delay = \"30s\"\nauth = \"eap-tls\"\nremote_auth = \"pubkey\"\ncert = \"{}\"\nkey = \"{}\"\ncacerts = [\"{}\"]\n",
                    pki.join("ee-p256.pem").display(),
                    pki.join("ee-p256.key").display(),
                    pki.join("ca-ecdsa.pem").display()
                ),
            )
            .replace("remote_id = \"%any\"", &format!("remote_id = \"{remote_id}\""))
        };
        match &connection_of(&client("gw.example.org")).local_auth {
            AuthConfig::EapClient(e) => assert_eq!(e.name(), "eap-tls"),
            other => panic!("{other:?}"),
        }
        let dir = tempfile::tempdir().unwrap();
        let (_, k, message) = bad_at(&dir.path().join("t.toml"), &client("%any"));
        assert_eq!(k, "connection.rw.remote_id", "{message}");
        assert!(message.contains("DNS name"), "{message}");
    }

    #[test]
    fn reload_compares_certificates_and_cas_by_content() {
        let pki = Path::new(env!("CARGO_MANIFEST_DIR")).join("control/tests/data/pki");
        let conf = |cert: &str, ca: &str| {
            let text = GOOD.replace(
                "psk = \"Zq8#kP2!vR9@wX4$yT7&uN1*\"",
                &format!(
                    "auth = \"pubkey\"\ncert = \"{}\"\nkey = \"{}\"\ncacerts = [\"{}\"]",
                    pki.join(cert).display(),
                    pki.join("ee-p256.key").display(),
                    pki.join(ca).display()
                ),
            );
            connection_of(&text)
        };
        let old = conf("ee-p256.pem", "ca-rsa.pem");
        assert_eq!(
            reload_effect(&old, &conf("ee-p256.pem", "ca-rsa.pem")),
            ReloadEffect::Unchanged
        );
        // Re-issued with the same subject and key, and another CA under the
        // same subject: the configurations print alike, the material differs.
        for (new, key) in [
            (conf("ee-p256-reissued.pem", "ca-rsa.pem"), "auth"),
            (conf("ee-p256.pem", "impostor-ca.pem"), "remote_auth"),
        ] {
            assert_eq!(format!("{old:?}"), format!("{new:?}"));
            assert_eq!(reload_effect(&old, &new), ReloadEffect::NewSa(key));
        }
    }

    #[test]
    fn expected_tunnels_is_read() {
        let c = DaemonConfig::parse(
            Path::new("t.toml"),
            &GOOD.replace("shards = 2", "shards = 2\nexpected_tunnels = 20000"),
        )
        .unwrap();
        assert_eq!(c.expected_tunnels, 20_000);
    }

    #[test]
    fn socket_buffer_is_a_size_with_a_unit() {
        let with = |v: &str| GOOD.replace("[dos]", &format!("[fastpath]\nsocket_buffer = {v}\n\n[dos]"));
        let parse = |v: &str| DaemonConfig::parse(Path::new("t.toml"), &with(v)).map(|c| c.socket_buffer);
        assert_eq!(
            DaemonConfig::parse(Path::new("t.toml"), GOOD).unwrap().socket_buffer,
            DEFAULT_SOCKET_BUFFER
        );
        assert_eq!(parse("\"64M\"").unwrap(), 64 << 20);
        assert_eq!(parse("262144").unwrap(), 262144);
        for wrong in ["\"12 parsecs\"", "\"2G\"", "100", "-1", "true"] {
            let (_, key, message) = bad(&with(wrong));
            assert_eq!(key, "fastpath.socket_buffer", "{wrong}: {message}");
        }
    }

    #[test]
    fn ppk_is_read_from_a_private_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("gw.toml");
        let key = dir.path().join("ppk1.key");
        std::fs::write(&key, "a postquantum preshared key of 32+ bytes\n").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let with = |extra: &str| GOOD.replace("dpd_delay = \"30s\"", &format!("dpd_delay = \"30s\"\n{extra}"));
        let c = DaemonConfig::parse(
            &cfg,
            &with("ppk_id = \"ppk1\"\nppk_file = \"ppk1.key\"\nppk_required = true"),
        )
        .unwrap();
        let ppk = c.connections[0].config.ppk.clone().expect("PPK configured");
        assert_eq!(ppk.id, b"ppk1");
        assert_eq!(
            &ppk.key[..],
            b"a postquantum preshared key of 32+ bytes",
            "trailing newline dropped"
        );
        assert!(ppk.required);
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        // Mode 0644 is refused, naming the key and line.
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let (line, k, message) = bad_at(&cfg, &with("ppk_id = \"ppk1\"\nppk_file = \"ppk1.key\""));
        assert_eq!((line, k.as_str()), (22, "connection.rw.ppk_file"), "{message}");
        assert!(message.contains("0600"), "{message}");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        // Half a PPK setting is an error; a short key a warning.
        let (_, k, _) = bad_at(&cfg, &with("ppk_id = \"ppk1\""));
        assert_eq!(k, "connection.rw.ppk_file");
        let (_, k, _) = bad_at(&cfg, &with("ppk_required = true"));
        assert_eq!(k, "connection.rw.ppk_required");
        std::fs::write(&key, "short").unwrap();
        let c = DaemonConfig::parse(&cfg, &with("ppk_id = \"ppk1\"\nppk_file = \"ppk1.key\"")).unwrap();
        assert_eq!(c.warnings[0].key, "connection.rw.ppk_file");
        assert!(!c.connections[0].config.ppk.as_ref().unwrap().required);
    }

    #[test]
    fn weak_psk_warns() {
        let c = DaemonConfig::parse(Path::new("t.toml"), &GOOD.replace("Zq8#kP2!vR9@wX4$yT7&uN1*", "secret")).unwrap();
        assert_eq!(c.warnings.len(), 1);
        assert_eq!(c.warnings[0].key, "connection.rw.psk");
        assert_eq!(c.warnings[0].line, 18);
    }

    #[test]
    fn hardware_profiles_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("hw-profiles");
        let cfg = dir.path().join("gw.toml");
        let with = |profile: &str| GOOD.replace("[dos]", &format!("[fastpath]\nhw_profile = \"{profile}\"\n\n[dos]"));
        let ok = DaemonConfig::parse(&cfg, &with(root.join("software.toml").to_str().unwrap())).unwrap();
        assert!(ok.hw_profile.is_some());
        let vdev = root.join("ci-vdev.toml");
        let vdev = vdev.to_str().unwrap();
        if cfg!(feature = "dpdk") {
            // The listen address must be one of the profile's outside addresses.
            let (line, key, message) = bad_at(&cfg, &with(vdev));
            assert_eq!((line, key.as_str()), (3, "daemon.listen"));
            assert!(message.contains("192.0.2.1"), "{message}");
            let defaults = with(vdev)
                .replace("listen = [\"127.0.0.1\"]\n", "")
                .replace("ike_port = 5600\nnat_port = 5601\n", "");
            let ok = DaemonConfig::parse(&cfg, &defaults).unwrap();
            match &ok.fastpath {
                FastpathBackend::Dpdk(p) => assert_eq!(p.name, "ci-vdev"),
                other => panic!("{other:?}"),
            }
            assert_eq!(ok.listen, vec!["192.0.2.1".parse::<IpAddr>().unwrap()]);
            let explicit = with(vdev)
                .replace("127.0.0.1", "192.0.2.1")
                .replace("[fastpath]", "[fastpath]\nbackend = \"dpdk\"");
            let (_, key, message) = bad_at(&cfg, &explicit);
            assert_eq!(key, "daemon.ike_port", "{message}");
            let explicit = explicit.replace("ike_port = 5600\nnat_port = 5601\n", "");
            assert!(matches!(
                DaemonConfig::parse(&cfg, &explicit).unwrap().fastpath,
                FastpathBackend::Dpdk(_)
            ));
        } else {
            let (line, key, message) = bad_at(&cfg, &with(vdev));
            assert_eq!((line, key.as_str()), (10, "fastpath.hw_profile"));
            assert!(message.contains("built without DPDK"), "{message}");
        }
        let (_, key, _) = bad_at(
            &cfg,
            &with(vdev).replace("[fastpath]", "[fastpath]\nbackend = \"software\""),
        );
        assert_eq!(key, "fastpath.backend");
        let (_, key, _) = bad_at(&cfg, &GOOD.replace("[dos]", "[fastpath]\nbackend = \"dpdk\"\n\n[dos]"));
        assert_eq!(key, "fastpath.backend");
        assert!(DaemonConfig::parse(&cfg, &with("/nonexistent.toml")).is_err());
    }

    #[test]
    fn dpdk_gateway_example_parses() {
        // The example names the installed profile, so that the copy under
        // /usr/share/doc works; here it is read from the source tree.
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(root.join("examples/dpdk-gateway.toml")).unwrap();
        let installed = format!("hw_profile = \"{INSTALLED_HW_PROFILES}/af-packet.toml\"");
        assert!(
            text.contains(&installed),
            "examples/dpdk-gateway.toml must name {installed}"
        );
        let here = text.replace(INSTALLED_HW_PROFILES, root.join("hw-profiles").to_str().unwrap());
        match DaemonConfig::parse(&root.join("examples/dpdk-gateway.toml"), &here) {
            Ok(c) if cfg!(feature = "dpdk") => {
                match c.fastpath {
                    FastpathBackend::Dpdk(p) => assert_eq!(p.name, "af-packet"),
                    other => panic!("{other:?}"),
                }
                assert_eq!(c.listen, vec!["192.0.2.1".parse::<IpAddr>().unwrap()]);
            }
            Err(ConfigError::Invalid { key, message, .. }) if !cfg!(feature = "dpdk") => {
                assert_eq!(key, "fastpath.hw_profile");
                assert!(message.contains("built without DPDK"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration(&toml::Value::String("4h".into())),
            Ok(Duration::from_secs(14400))
        );
        assert_eq!(parse_duration(&toml::Value::Integer(7)), Ok(Duration::from_secs(7)));
        assert!(parse_duration(&toml::Value::String("4y".into())).is_err());
        assert!(parse_duration(&toml::Value::Boolean(true)).is_err());
    }

    #[test]
    fn local_addrs_are_parsed_and_checked() {
        let c = DaemonConfig::parse(Path::new("t.toml"), GOOD).unwrap();
        assert!(c.connections[0].config.local_addrs.is_none());
        let with = GOOD.replace(
            "remote_addrs = [\"%any\"]",
            "remote_addrs = [\"%any\"]\nlocal_addrs = [\"10.73.2.1\", \"fd00::1\"]",
        );
        let c = DaemonConfig::parse(Path::new("t.toml"), &with).unwrap();
        let want: Vec<IpAddr> = vec!["10.73.2.1".parse().unwrap(), "fd00::1".parse().unwrap()];
        assert_eq!(c.connections[0].config.local_addrs, Some(want));
        let (line, key, message) = bad(&with.replace("fd00::1", "gateway"));
        assert_eq!((line, key.as_str()), (16, "connection.rw.local_addrs"), "{message}");
        assert!(message.contains("'gateway' is not an IP address"), "{message}");
    }

    /// Writes a key file with `mode` in `dir`.
    fn key(dir: &Path, name: &str, byte: u8, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join(name);
        std::fs::write(&p, format!("{}\n", format!("{byte:02x}").repeat(32))).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn cluster_section_turns_clustering_on_and_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("gw.toml");
        key(dir.path(), "link.key", 0x11, 0o600);
        key(dir.path(), "cluster.key", 0x22, 0o600);
        key(dir.path(), "open.key", 0x33, 0o644);
        let section = "[cluster]\nnode = 7\nstore = [\"127.0.0.1:23791\", \"http://127.0.0.1:23792\"]\n\
                       link = \"127.0.0.1:4510\"\nlink_key = \"link.key\"\ncluster_key = \"cluster.key\"\nlease = \"3s\"\n\n";
        let with = |s: &str| GOOD.replace("[dos]", &format!("{s}[dos]"));
        assert!(DaemonConfig::parse(&cfg, GOOD).unwrap().cluster.is_none());
        let c = DaemonConfig::parse(&cfg, &with(section)).unwrap().cluster.unwrap();
        assert_eq!((c.node, c.store.len(), c.name.as_str()), (7, 2, "ironsa"));
        assert_eq!(
            (c.lease, c.checkpoint_interval),
            (Duration::from_secs(3), Duration::from_secs(1))
        );
        assert_eq!((c.link_key[0], c.cluster_key[31]), (0x11, 0x22));
        assert_eq!((c.address, c.redirect_margin), (None, None));
        let redirecting = section.replace(
            "lease = \"3s\"",
            "lease = \"3s\"\naddress = \"192.0.2.1\"\nredirect_margin = 20",
        );
        let r = DaemonConfig::parse(&cfg, &with(&redirecting)).unwrap().cluster.unwrap();
        assert_eq!(
            (r.address, r.redirect_margin),
            (Some("192.0.2.1".parse().unwrap()), Some(20))
        );
        let debug = format!("{c:?}");
        assert!(
            !debug.contains("17, 17") && !debug.contains("34, 34"),
            "keys stay out of Debug: {debug}"
        );
        let cases = [
            ("node = 7", "node = 64", 10, "cluster.node", "0..=63"),
            (
                "\"127.0.0.1:23791\", ",
                "\"127.0.0.1\", ",
                11,
                "cluster.store",
                "not a store endpoint",
            ),
            (
                "\"127.0.0.1:4510\"",
                "\"0.0.0.0:4510\"",
                12,
                "cluster.link",
                "concrete address",
            ),
            ("\"link.key\"", "\"open.key\"", 13, "cluster.link_key", "must be 0600"),
            (
                "\"cluster.key\"",
                "\"missing.key\"",
                14,
                "cluster.cluster_key",
                "cannot read",
            ),
            (
                "\"cluster.key\"",
                "\"link.key\"",
                14,
                "cluster.cluster_key",
                "key of its own",
            ),
            ("\"3s\"", "\"90s\"", 15, "cluster.lease", "1s..=60s"),
            (
                "lease = \"3s\"",
                "lease = \"3s\"\naddress = \"gw1\"",
                16,
                "cluster.address",
                "an IP address",
            ),
            (
                "lease = \"3s\"",
                "lease = \"3s\"\nredirect_margin = 5",
                16,
                "cluster.redirect_margin",
                "set cluster.address too",
            ),
            (
                "lease = \"3s\"",
                "lease = \"3s\"\naddress = \"192.0.2.1\"\nredirect_margin = -1",
                17,
                "cluster.redirect_margin",
                "0 or more",
            ),
        ];
        for (from, to, line, key, message) in cases {
            let (l, k, m) = bad_at(&cfg, &with(&section.replace(from, to)));
            assert_eq!((l, k.as_str()), (line, key), "{to}: {m}");
            assert!(m.contains(message), "{m}");
        }
        key(dir.path(), "short.key", 0, 0o600);
        std::fs::write(dir.path().join("short.key"), "abcd").unwrap();
        let (_, k, m) = bad_at(&cfg, &with(&section.replace("\"link.key\"", "\"short.key\"")));
        assert_eq!(k, "cluster.link_key");
        assert!(m.contains("64 hex digits"), "{m}");
    }

    /// GOOD with `remote_auth` (and more connection keys) and top-level tables.
    fn eap_conf(conn_keys: &str, tables: &str) -> String {
        GOOD.replace("dpd_delay = \"30s\"\n", &format!("dpd_delay = \"30s\"\n{conn_keys}\n"))
            .replace("[dos]\n", &format!("{tables}\n[dos]\n"))
    }

    #[test]
    fn xauth_is_an_ikev1_second_round_against_the_local_users() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let users = dir.path().join("users.toml");
        std::fs::write(&users, "[[user]]\nname = \"alice\"\npassword = \"alice-secret-1\"\n").unwrap();
        std::fs::set_permissions(&users, std::fs::Permissions::from_mode(0o600)).unwrap();
        let path = dir.path().join("t.toml");
        let eap_table = "[eap]\nusers_file = \"users.toml\"\n";
        let v1 = |keys: &str| format!("version = 1\n{keys}");
        let ikev1 = |text: String| text.replace("aes256gcm16-prfsha256-x25519", "aes256-sha256-modp2048");
        let c = DaemonConfig::parse(&path, &ikev1(eap_conf(&v1("remote_auth2 = \"xauth\""), eap_table))).unwrap();
        let conn = &c.connections[0].config;
        assert!(conn.xauth);
        let replacement = c.warnings.iter().find(|w| w.key == "connection.rw.version").unwrap();
        assert!(
            replacement
                .message
                .contains("remote_auth2 = \"eap-mschapv2\" (the same users)"),
            "{}",
            replacement.message
        );
        assert!(conn.remote_auth2.is_none(), "no EAP round");
        assert!(matches!(conn.remote_auth, AuthConfig::Psk(_)));
        assert!(
            !DaemonConfig::parse(&path, &ikev1(eap_conf(&v1(""), eap_table)))
                .unwrap()
                .connections[0]
                .config
                .xauth
        );
        // The client side: both keys, IKEv1 only.
        let c = DaemonConfig::parse(
            &path,
            &ikev1(eap_conf(&v1("xauth_user = \"alice\"\nxauth_password = \"pw\""), "")),
        )
        .unwrap();
        let creds = c.connections[0]
            .config
            .xauth_client
            .as_ref()
            .expect("client credentials");
        assert_eq!((creds.user.as_str(), creds.password.as_str()), ("alice", "pw"));
        assert!(
            !format!("{creds:?}").contains("pw"),
            "the password is not in Debug output"
        );
        for (keys, key, needle) in [
            (v1("xauth_user = \"alice\""), "connection.rw.xauth_password", "both"),
            (v1("xauth_password = \"pw\""), "connection.rw.xauth_user", "both"),
            (
                "xauth_user = \"alice\"\nxauth_password = \"pw\"".to_string(),
                "connection.rw.xauth_user",
                "version = 1",
            ),
        ] {
            match DaemonConfig::parse(&path, &ikev1(eap_conf(&keys, ""))) {
                Err(ConfigError::Invalid { key: k, message, .. }) => {
                    assert_eq!(k, key, "{message}");
                    assert!(message.contains(needle), "{message}");
                }
                other => panic!("{keys}: expected an error, got {other:?}"),
            }
        }
        // Mode Config push needs IKEv1 and pools.
        let pool = "[[pool]]\nname = \"rw\"\naddrs = [\"10.9.0.0/24\"]\n";
        let push = |keys: &str| ikev1(eap_conf(keys, &format!("{eap_table}{pool}")));
        let c = DaemonConfig::parse(&path, &push(&v1("pools = [\"rw\"]\nmode_config = \"push\""))).unwrap();
        assert!(c.connections[0].config.mode_config_push);
        for (keys, needle) in [
            (v1("mode_config = \"push\""), "set version = 1 and pools"),
            (
                "pools = [\"rw\"]\nmode_config = \"push\"".to_string(),
                "set version = 1 and pools",
            ),
            (
                v1("pools = [\"rw\"]\nmode_config = \"shove\""),
                "not \"pull\" or \"push\"",
            ),
        ] {
            match DaemonConfig::parse(&path, &push(&keys)) {
                Err(ConfigError::Invalid { key, message, .. }) => {
                    assert_eq!(key, "connection.rw.mode_config", "{message}");
                    assert!(message.contains(needle), "{message}");
                }
                other => panic!("{keys}: expected an error, got {other:?}"),
            }
        }
        for (keys, tables, needle) in [
            (v1("remote_auth2 = \"xauth\""), "", "users_file"),
            ("remote_auth2 = \"xauth\"".to_string(), eap_table, "version = 1"),
            (v1("remote_auth2 = \"xauth2\""), eap_table, "with IKEv1, xauth"),
        ] {
            match DaemonConfig::parse(&path, &ikev1(eap_conf(&keys, tables))) {
                Err(ConfigError::Invalid { key, message, .. }) => {
                    assert_eq!(key, "connection.rw.remote_auth2", "{message}");
                    assert!(message.contains(needle), "{message}");
                }
                other => panic!("{keys}: expected an error, got {other:?}"),
            }
        }
    }

    #[test]
    fn eap_remote_auth_with_local_users_and_radius() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let users = dir.path().join("users.toml");
        std::fs::write(&users, "[[user]]\nname = \"alice\"\npassword = \"alice-secret-1\"\n").unwrap();
        std::fs::set_permissions(&users, std::fs::Permissions::from_mode(0o600)).unwrap();
        let secret = dir.path().join("radius.secret");
        std::fs::write(&secret, "radius-test-secret\n").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        let path = dir.path().join("t.toml");
        let eap_table = "[eap]\nusers_file = \"users.toml\"\n";
        let radius_table = "[radius]\ntimeout = \"1s\"\ntries = 2\n[[radius.server]]\naddress = \"127.0.0.1\"\nsecret_file = \"radius.secret\"\n[[radius.server]]\naddress = \"127.0.0.2:1645\"\nsecret_file = \"radius.secret\"\n";

        let text = eap_conf(
            "remote_auth = \"eap-mschapv2\"\neap_id = \"%any\"\neap_only = true",
            eap_table,
        );
        let c = DaemonConfig::parse(&path, &text).unwrap();
        match &c.connections[0].config.remote_auth {
            AuthConfig::Eap(e) => {
                assert_eq!(e.name(), "eap-mschapv2");
                assert_eq!(e.eap_id, control::config::EapIdentity::Ask);
                assert!(e.eap_only);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(c.eap_users.as_ref().map(|u| u.len()), Some(1));
        let text = eap_conf("remote_auth2 = \"eap-mschapv2\"\neap_id = \"%any\"", eap_table);
        let c = DaemonConfig::parse(&path, &text).unwrap();
        let conn = &c.connections[0].config;
        assert!(matches!(conn.remote_auth, AuthConfig::Psk(_)), "the first round");
        assert_eq!(conn.remote_auth2.as_ref().map(|e| e.name()), Some("eap-mschapv2"));

        // As the client of a gateway: our EAP identity and password.
        let text = eap_conf(
            "auth = \"eap-mschapv2\"\nremote_auth = \"psk\"\neap_id = \"alice\"",
            eap_table,
        );
        let c = DaemonConfig::parse(&path, &text).unwrap();
        match &c.connections[0].config.local_auth {
            AuthConfig::EapClient(e) => {
                assert_eq!(e.identity, b"alice");
                assert_eq!(e.password.as_str(), "alice-secret-1");
                assert_eq!(e.name(), "eap-mschapv2");
            }
            other => panic!("{other:?}"),
        }

        let text = eap_conf("remote_auth = \"eap-radius\"", radius_table);
        let c = DaemonConfig::parse(&path, &text).unwrap();
        let r = c.radius.as_ref().unwrap();
        assert_eq!(r.client.servers.len(), 2);
        assert_eq!(r.client.servers[0].addr, "127.0.0.1:1812".parse().unwrap());
        assert_eq!(&r.client.servers[1].secret[..], b"radius-test-secret");
        assert_eq!(
            (r.client.timeout, r.client.tries_per_server),
            (Duration::from_secs(1), 2)
        );

        // Missing back ends, unknown values, misplaced keys.
        for (conn_keys, tables, key, needle) in [
            (
                "remote_auth = \"eap-radius\"",
                "",
                "connection.rw.remote_auth",
                "[radius]",
            ),
            (
                "remote_auth = \"eap-mschapv2\"",
                "",
                "connection.rw.remote_auth",
                "users_file",
            ),
            (
                "remote_auth = \"eap-tls\"",
                "",
                "connection.rw.cert",
                "eap-tls needs cert",
            ),
            (
                "remote_auth = \"eap-ttls\"",
                eap_table,
                "connection.rw.remote_auth",
                "unknown auth",
            ),
            (
                "auth = \"eap-mschapv2\"",
                eap_table,
                "connection.rw.remote_auth",
                "needs remote_auth",
            ),
            (
                "auth = \"eap-radius\"\nremote_auth = \"psk\"",
                eap_table,
                "connection.rw.auth",
                "unknown auth",
            ),
            (
                "auth = \"eap-mschapv2\"\nremote_auth = \"psk\"\neap_id = \"bob\"",
                eap_table,
                "eap.users_file",
                "no [[user]] named 'bob'",
            ),
            (
                "auth = \"eap-mschapv2\"\nremote_auth = \"psk\"\neap_id = \"alice\"",
                "",
                "connection.rw.auth",
                "users_file",
            ),
            (
                "auth = \"eap-mschapv2\"\nremote_auth = \"eap-mschapv2\"",
                eap_table,
                "connection.rw.remote_auth",
                "psk or pubkey",
            ),
            ("eap_id = \"%any\"", "", "connection.rw.eap_id", "or remote_auth = eap-"),
            (
                "remote_auth = \"eap-mschapv2\"\neap_id = \"bob\"",
                eap_table,
                "connection.rw.eap_id",
                "only %any",
            ),
            (
                "remote_auth = \"eap-md5\"\neap_only = true",
                eap_table,
                "connection.rw.eap_only",
                "MSK",
            ),
            (
                "remote_auth = \"eap-radius\"",
                "[radius]\n",
                "radius.server",
                "at least one",
            ),
            (
                "remote_auth = \"eap-md5\"\nremote_auth2 = \"eap-md5\"",
                eap_table,
                "connection.rw.remote_auth2",
                "first one",
            ),
            (
                "remote_auth2 = \"pubkey\"",
                eap_table,
                "connection.rw.remote_auth2",
                "second round is EAP",
            ),
            (
                "remote_auth2 = \"eap-radius\"",
                "",
                "connection.rw.remote_auth2",
                "[radius]",
            ),
        ] {
            let (_, k, message) = bad_at(&path, &eap_conf(conn_keys, tables));
            assert_eq!(k, key, "{conn_keys} {tables}: {message}");
            assert!(message.contains(needle), "{message}");
        }

        // Secrets others may read are refused, naming the key and the file.
        std::fs::set_permissions(&users, std::fs::Permissions::from_mode(0o644)).unwrap();
        let (line, k, message) = bad_at(&path, &eap_conf("remote_auth = \"eap-mschapv2\"", eap_table));
        assert_eq!((k.as_str(), line), ("eap.users_file", 10), "{message}");
        assert!(message.contains("users.toml") && message.contains("0644"), "{message}");
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o640)).unwrap();
        let (_, k, message) = bad_at(&path, &eap_conf("remote_auth = \"eap-radius\"", radius_table));
        assert_eq!(k, "radius.server.secret_file", "{message}");
    }

    #[test]
    fn radius_accounting_and_dynamic_authorization() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        for name in ["radius.secret", "dae.secret"] {
            let secret = dir.path().join(name);
            std::fs::write(&secret, format!("{name}-value\n")).unwrap();
            std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let path = dir.path().join("t.toml");
        let server = "[[radius.server]]\naddress = \"127.0.0.1\"\nsecret_file = \"radius.secret\"\n";
        let acct = "[[radius.accounting_server]]\naddress = \"127.0.0.1\"\nsecret_file = \"radius.secret\"\n[[radius.accounting_server]]\naddress = \"127.0.0.2:1646\"\nsecret_file = \"radius.secret\"\n";
        let dae = "[[radius.dae_client]]\naddress = \"127.0.0.1\"\nsecret_file = \"dae.secret\"\n";
        let conf = |radius_keys: &str, tables: &str| {
            eap_conf(
                "remote_auth = \"eap-radius\"",
                &format!("[radius]\n{radius_keys}\n{server}{tables}"),
            )
        };
        let text = conf(
            "interim_interval = \"10m\"\ndae_listen = \"127.0.0.1:3799\"\nnas_identifier = \"moon\"",
            &format!("{acct}{dae}"),
        );
        let c = DaemonConfig::parse(&path, &text).unwrap();
        let r = c.radius.as_ref().unwrap();
        let a = r.accounting.as_ref().expect("accounting servers");
        assert_eq!(
            a.servers[0].addr,
            "127.0.0.1:1813".parse().unwrap(),
            "port 1813 by default"
        );
        assert_eq!(a.servers[1].addr, "127.0.0.2:1646".parse().unwrap());
        assert_eq!(a.purpose, crate::aaa::client::Purpose::Accounting);
        assert_eq!(r.interim_interval, Some(Duration::from_secs(600)));
        let d = r.dae.as_ref().expect("dynamic authorization");
        assert_eq!(d.listen, "127.0.0.1:3799".parse().unwrap());
        assert_eq!(d.clients[0].address, "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(&d.clients[0].secret[..], b"dae.secret-value");
        assert_eq!(d.nas_identifier, "moon");
        // Off unless asked for.
        let c = DaemonConfig::parse(&path, &conf("interim_interval = 0", acct)).unwrap();
        let r = c.radius.as_ref().unwrap();
        assert_eq!((r.interim_interval, r.dae.is_none()), (None, true));

        for (keys, tables, key, needle) in [
            ("interim_interval = \"10s\"", acct, "radius.interim_interval", "60s"),
            (
                "interim_interval = \"10m\"",
                "",
                "radius.interim_interval",
                "accounting_server",
            ),
            ("dae_listen = \"127.0.0.1:3799\"", "", "radius.dae_listen", "dae_client"),
            ("dae_listen = \"localhost\"", dae, "radius.dae_listen", "ADDRESS:PORT"),
            ("", dae, "radius.dae_client", "dae_listen"),
            (
                "",
                "[[radius.accounting_server]]\naddress = \"nowhere\"\nsecret_file = \"radius.secret\"\n",
                "radius.accounting_server.address",
                "ADDRESS",
            ),
            (
                "dae_listen = \"127.0.0.1:3799\"",
                "[[radius.dae_client]]\naddress = \"127.0.0.1\"\nsecret_file = \"missing.secret\"\n",
                "radius.dae_client.secret_file",
                "missing.secret",
            ),
        ] {
            let (_, k, message) = bad_at(&path, &conf(keys, tables));
            assert_eq!(k, key, "{keys} {tables}: {message}");
            assert!(message.contains(needle), "{message}");
        }
    }
}
