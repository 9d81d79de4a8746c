//! Generator settings: the command line / TOML file form ([`Settings`], every
//! field optional so a file and the command line can be merged) and the
//! checked, resolved form the engine runs on ([`GenConfig`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::path::Path;
use std::time::Duration;

use clap::{Args, ValueEnum};
use control::proposal::{EspProposal, IkeProposal, parse_esp_proposals, parse_ike_proposals};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use zeroize::Zeroizing;

use super::template::{Template, TemplateError};

/// Most source addresses one `--source` range may expand to.
pub const MAX_SOURCES: usize = 65_536;

/// What the generator does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Establish N tunnels, optionally hold and tear them down.
    Establish,
    /// Send IKE_SA_INIT requests that are never completed.
    Flood,
    /// A flood and legitimate clients at the same time.
    Mixed,
}

/// When the 4-byte non-ESP marker is put in front of IKE datagrams.
///
/// strongSwan 5.9.8 decides by the *client's* port (the port of its peer):
/// it strips a marker from IKE that comes from any port other than 500 and
/// puts one on IKE it sends to any port other than 500, whatever its own port
/// is. Observed on loopback: from source port 500 to charon on port 5700 a
/// marked IKE_SA_INIT is read as "IKE version 0.0"; from an ephemeral source
/// port an unmarked one is silently dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum MarkerPolicy {
    /// When neither the client's nor the server's port is 500 (what charon
    /// 5.9.8 reads: its port-500 socket takes no marker, and IKE from source
    /// port 500 carries none; between other ports, e.g. after the move to
    /// 4500, it does).
    Auto,
    /// On every datagram.
    Always,
    /// Never.
    Never,
}

impl MarkerPolicy {
    /// True if IKE datagrams (in both directions) between a client on
    /// `client_port` and a server on `server_port` carry the marker.
    pub fn applies(self, client_port: u16, server_port: u16) -> bool {
        match self {
            MarkerPolicy::Auto => client_port != 500 && server_port != 500,
            MarkerPolicy::Always => true,
            MarkerPolicy::Never => false,
        }
    }
}

/// A setting that is wrong, with the reason.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The TOML file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// File name.
        path: String,
        /// I/O error.
        source: std::io::Error,
    },
    /// The TOML file is malformed.
    #[error("config file {path}: {source}")]
    Toml {
        /// File name.
        path: String,
        /// Parse error.
        source: toml::de::Error,
    },
    /// A template is malformed.
    #[error(transparent)]
    Template(#[from] TemplateError),
    /// Any other invalid value.
    #[error("{0}")]
    Invalid(String),
}

fn invalid(msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(msg.into())
}

/// Every generator option; all optional so that a TOML file (`--config`) and
/// the command line can be layered. Field names are the long option names
/// (`rekey-ike-rate` in TOML is `--rekey-ike-rate` on the command line).
#[derive(Clone, Debug, Default, Args, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Settings {
    /// Scenario: establish, flood or mixed.
    #[arg(long, value_enum)]
    pub mode: Option<Mode>,
    /// Responder address, e.g. 127.0.0.1:500.
    #[arg(long)]
    pub remote: Option<SocketAddr>,
    /// The responder's NAT-T port (used only if a NAT is detected).
    #[arg(long)]
    pub remote_nat_port: Option<u16>,
    /// Source addresses: comma-separated IPs, CIDR ranges (127.0.1.0/24) or
    /// ranges (10.0.0.1-10.0.0.9). Default: 127.0.1.0/24 for a loopback
    /// responder, else the address the route to the responder uses.
    #[arg(long, value_delimiter = ',')]
    pub source: Option<Vec<String>>,
    /// First source port (0 = ephemeral). With `ports-per-source` > 1 the next ports follow.
    #[arg(long)]
    pub source_port: Option<u16>,
    /// UDP sockets per source address.
    #[arg(long)]
    pub ports_per_source: Option<usize>,
    /// Source addresses of flood packets in mixed/flood mode (default: `source`).
    #[arg(long, value_delimiter = ',')]
    pub flood_source: Option<Vec<String>>,
    /// Worker threads, each with its own sockets and endpoint.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Tunnels to establish (establish and mixed modes).
    #[arg(long, short = 'n')]
    pub tunnels: Option<u64>,
    /// Target rate of new negotiations per second (default: as fast as `concurrency` allows).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Most negotiations in flight at once.
    #[arg(long, short = 'c')]
    pub concurrency: Option<usize>,
    /// Seconds to hold the tunnels after establishing them.
    #[arg(long)]
    pub hold: Option<f64>,
    /// Dead-peer-detection delay in seconds while holding (0 = off).
    #[arg(long)]
    pub dpd: Option<f64>,
    /// IKE SA rekeys per second while holding.
    #[arg(long)]
    pub rekey_ike_rate: Option<f64>,
    /// CHILD_SA rekeys per second while holding.
    #[arg(long)]
    pub rekey_child_rate: Option<f64>,
    /// Delete every tunnel at the end (counted).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub teardown: Option<bool>,
    /// While holding, send ESP through every tunnel: inner UDP packets of this many bytes (0 = off).
    #[arg(long)]
    pub esp_size: Option<usize>,
    /// ESP packets per second over all tunnels (default: as fast as the generator can).
    #[arg(long)]
    pub esp_rate: Option<f64>,
    /// Flood: IKE_SA_INIT requests per second.
    #[arg(long)]
    pub flood_rate: Option<f64>,
    /// Flood and mixed modes: seconds to run.
    #[arg(long)]
    pub duration: Option<f64>,
    /// IKE proposals, e.g. aes256gcm16-prfsha256-x25519.
    #[arg(long)]
    pub ike: Option<String>,
    /// ESP proposals of the CHILD_SA, e.g. aes256gcm16.
    #[arg(long)]
    pub esp: Option<String>,
    /// Childless IKE SAs (RFC 6023): no CHILD_SA in IKE_AUTH.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub childless: Option<bool>,
    /// Our identity; a `{ n }` placeholder is the tunnel index (`user{ n }@test`).
    #[arg(long)]
    pub local_id: Option<String>,
    /// The responder's identity (default: accept any).
    #[arg(long)]
    pub remote_id: Option<String>,
    /// Send INITIAL_CONTACT (default: only with a per-tunnel local-id, since a
    /// responder deletes older IKE SAs of an identity that sends it).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub initial_contact: Option<bool>,
    /// Pre-shared key (with EAP: the one the responder proves itself with).
    #[arg(long)]
    pub psk: Option<String>,
    /// Log in with EAP-MSCHAPv2 as this user; a `{ n }` placeholder is the
    /// tunnel index (`user{ n }`). Needs `eap-password`.
    #[arg(long)]
    pub eap_user: Option<String>,
    /// The EAP users' password.
    #[arg(long)]
    pub eap_password: Option<String>,
    /// Ask the responder for a virtual IP (CFG_REQUEST for an address of the
    /// remote's family); our traffic selector then defaults to that address.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub vip: Option<bool>,
    /// Our traffic selectors, comma-separated; `{ n }` placeholders allowed (`10.128.{ n/256 }.{ n%256 }/32`).
    #[arg(long, value_delimiter = ',')]
    pub local_ts: Option<Vec<String>>,
    /// The responder's traffic selectors, comma-separated; `{ n }` placeholders allowed.
    #[arg(long, value_delimiter = ',')]
    pub remote_ts: Option<Vec<String>>,
    /// Initial retransmission timeout in seconds.
    #[arg(long)]
    pub retransmit_timeout: Option<f64>,
    /// Retransmissions before a negotiation counts as timed out.
    #[arg(long)]
    pub retransmit_tries: Option<u32>,
    /// Longest the establish phase (and the teardown) may take, in seconds.
    #[arg(long)]
    pub timeout: Option<f64>,
    /// Non-ESP marker policy.
    #[arg(long, value_enum)]
    pub marker: Option<MarkerPolicy>,
    /// Socket send/receive buffer size in bytes.
    #[arg(long)]
    pub socket_buffer: Option<usize>,
    /// The gateway's Prometheus metrics address (HOST:PORT, ironsa's
    /// `[daemon] metrics`): read before and after the run, so the report
    /// gives the ESP packets the gateway decrypted and lost beside those sent.
    #[arg(long, value_name = "HOST:PORT")]
    pub gateway_metrics: Option<String>,
}

macro_rules! overlay {
    ($base:ident, $over:ident, $($f:ident),* $(,)?) => {
        $( if $over.$f.is_some() { $base.$f = $over.$f; } )*
    };
}

impl Settings {
    /// Reads a TOML file of settings.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: p.clone(),
            source,
        })?;
        Self::from_toml(&text).map_err(|source| ConfigError::Toml { path: p, source })
    }

    /// Parses TOML text.
    pub fn from_toml(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    /// `self` with every option that `over` sets replaced by `over`'s value.
    pub fn overlay(mut self, over: Settings) -> Settings {
        overlay!(
            self,
            over,
            mode,
            remote,
            remote_nat_port,
            source,
            source_port,
            ports_per_source,
            flood_source,
            threads,
            tunnels,
            rate,
            concurrency,
            hold,
            dpd,
            rekey_ike_rate,
            rekey_child_rate,
            teardown,
            esp_size,
            esp_rate,
            flood_rate,
            duration,
            ike,
            esp,
            childless,
            local_id,
            remote_id,
            initial_contact,
            psk,
            eap_user,
            eap_password,
            vip,
            local_ts,
            remote_ts,
            retransmit_timeout,
            retransmit_tries,
            timeout,
            marker,
            socket_buffer,
            gateway_metrics,
        );
        self
    }

    /// Checks every value and fills in defaults.
    pub fn resolve(self) -> Result<GenConfig, ConfigError> {
        let mode = self.mode.unwrap_or(Mode::Establish);
        let remote = self
            .remote
            .unwrap_or_else(|| SocketAddr::from((Ipv4Addr::LOCALHOST, 500)));
        let sources = match &self.source {
            Some(list) => parse_sources(list)?,
            None => default_sources(remote)?,
        };
        let flood_sources = match &self.flood_source {
            Some(list) => parse_sources(list)?,
            None => sources.clone(),
        };
        for s in sources.iter().chain(&flood_sources) {
            if s.is_ipv4() != remote.is_ipv4() {
                return Err(invalid(format!(
                    "source {s} and remote {remote} are of different address families"
                )));
            }
        }
        let ports_per_source = self.ports_per_source.unwrap_or(1);
        if ports_per_source == 0 || ports_per_source > 1024 {
            return Err(invalid("ports-per-source must be 1..=1024"));
        }
        let source_port = self.source_port.unwrap_or(0);
        if source_port != 0 && usize::from(source_port) + ports_per_source - 1 > usize::from(u16::MAX) {
            return Err(invalid("source-port + ports-per-source exceeds 65535"));
        }
        let threads = self.threads.unwrap_or(1);
        if threads == 0 || threads > 256 {
            return Err(invalid("threads must be 1..=256"));
        }
        let socket_count = sources.len() * ports_per_source;
        if socket_count < threads {
            return Err(invalid(format!(
                "{threads} threads need at least {threads} sockets (sources x ports-per-source)"
            )));
        }
        if mode != Mode::Establish && flood_sources.len() * ports_per_source < threads {
            return Err(invalid(format!(
                "{threads} threads need at least {threads} flood sockets (flood-source x ports-per-source)"
            )));
        }
        let positive = |name: &str, v: Option<f64>| -> Result<Option<f64>, ConfigError> {
            match v {
                Some(x) if !(x.is_finite() && x >= 0.0) => {
                    Err(invalid(format!("{name} must be a non-negative number")))
                }
                other => Ok(other),
            }
        };
        let secs = |name: &str, v: Option<f64>, default: f64| -> Result<Duration, ConfigError> {
            let x = positive(name, v)?.unwrap_or(default);
            Duration::try_from_secs_f64(x).map_err(|e| invalid(format!("{name}: {e}")))
        };
        let rate = positive("rate", self.rate)?.filter(|r| *r > 0.0);
        let tunnels = self.tunnels.unwrap_or(if mode == Mode::Flood { 0 } else { 1000 });
        let concurrency = self.concurrency.unwrap_or(if rate.is_some() { 100_000 } else { 1024 });
        if concurrency == 0 {
            return Err(invalid("concurrency must be at least 1"));
        }
        let flood_rate = positive("flood-rate", self.flood_rate)?.unwrap_or(1000.0);
        if mode != Mode::Establish && flood_rate <= 0.0 {
            return Err(invalid("flood-rate must be positive in flood and mixed modes"));
        }
        let ike_text = self.ike.unwrap_or_else(|| "aes256gcm16-prfsha256-x25519".to_string());
        let ike = parse_ike_proposals(&ike_text).map_err(|e| invalid(format!("--ike: {e}")))?;
        if ike.first().and_then(|p| p.ke.first()).is_none() {
            return Err(invalid("--ike: the first proposal needs a key exchange group"));
        }
        let childless = self.childless.unwrap_or(false);
        let esp_text = self.esp.unwrap_or_else(|| "aes256gcm16".to_string());
        let esp = if childless {
            None
        } else {
            Some(parse_esp_proposals(&esp_text).map_err(|e| invalid(format!("--esp: {e}")))?)
        };
        let vip = self.vip.unwrap_or(false);
        let local_ts = match self.local_ts {
            Some(list) => templates(list)?,
            // `dynamic`: the virtual IP the responder assigns.
            None if vip => Vec::new(),
            None => templates(vec!["10.128.{n/256%256}.{n%256}/32".into()])?,
        };
        let remote_ts = templates(self.remote_ts.unwrap_or_else(|| vec!["0.0.0.0/0".into()]))?;
        // Check that selectors parse for the first tunnel (catches typos before the run).
        for t in local_ts.iter().chain(&remote_ts) {
            control::ts::parse_selector(&t.render(0))
                .map_err(|e| invalid(format!("traffic selector '{}': {e}", t.source())))?;
        }
        let psk = self.psk.unwrap_or_else(|| "ikegen-load-test-secret".to_string());
        if psk.is_empty() {
            return Err(invalid("psk must not be empty"));
        }
        let eap = match (self.eap_user, self.eap_password) {
            (None, None) => None,
            (Some(_), None) => return Err(invalid("--eap-user needs --eap-password")),
            (None, Some(_)) => return Err(invalid("--eap-password needs --eap-user")),
            (Some(user), Some(password)) => {
                let user = Template::parse(&user)?;
                if user.render(0).is_empty() || user.render(0).len() > control::eap::MAX_IDENTITY_LEN {
                    return Err(invalid(format!(
                        "--eap-user '{}' must give 1..={} bytes",
                        user.source(),
                        control::eap::MAX_IDENTITY_LEN
                    )));
                }
                if password.is_empty() {
                    return Err(invalid("--eap-password must not be empty"));
                }
                Some(EapClient {
                    user,
                    password: Zeroizing::new(password),
                })
            }
        };
        let retransmit_tries = self.retransmit_tries.unwrap_or(4);
        let local_id = Template::parse(&self.local_id.unwrap_or_else(|| "ikegen{n}@test".to_string()))?;
        Ok(GenConfig {
            mode,
            remote,
            remote_nat_port: self.remote_nat_port.unwrap_or(4500),
            sources,
            flood_sources,
            source_port,
            ports_per_source,
            threads,
            tunnels,
            rate,
            concurrency,
            hold: secs("hold", self.hold, 0.0)?,
            dpd: Some(secs("dpd", self.dpd, 0.0)?).filter(|d| !d.is_zero()),
            rekey_ike_rate: positive("rekey-ike-rate", self.rekey_ike_rate)?.unwrap_or(0.0),
            rekey_child_rate: positive("rekey-child-rate", self.rekey_child_rate)?.unwrap_or(0.0),
            teardown: self.teardown.unwrap_or(false),
            esp_size: self.esp_size.unwrap_or(0),
            esp_rate: positive("esp-rate", self.esp_rate)?.filter(|r| *r > 0.0),
            flood_rate,
            duration: secs("duration", self.duration, 10.0)?,
            ike,
            ike_text,
            esp,
            initial_contact: self.initial_contact.unwrap_or(local_id.is_per_tunnel()),
            local_id,
            remote_id: self.remote_id.as_deref().map(Template::parse).transpose()?,
            psk: Zeroizing::new(psk.into_bytes()),
            eap,
            vip,
            local_ts,
            remote_ts,
            retransmit_timeout: secs("retransmit-timeout", self.retransmit_timeout, 2.0)?
                .max(Duration::from_millis(10)),
            retransmit_tries,
            timeout: secs("timeout", self.timeout, 60.0)?,
            marker: self.marker.unwrap_or(MarkerPolicy::Auto),
            socket_buffer: self.socket_buffer.unwrap_or(4 << 20),
            gateway_metrics: self.gateway_metrics.as_deref().map(resolve_metrics).transpose()?,
        })
    }
}

/// The socket address of `--gateway-metrics` (a host name is looked up).
fn resolve_metrics(text: &str) -> Result<SocketAddr, ConfigError> {
    text.to_socket_addrs()
        .map_err(|e| invalid(format!("--gateway-metrics '{text}': {e} (expected HOST:PORT)")))?
        .next()
        .ok_or_else(|| invalid(format!("--gateway-metrics '{text}': no address")))
}

fn templates(list: Vec<String>) -> Result<Vec<Template>, ConfigError> {
    let list: Vec<Template> = list
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .map(Template::parse)
        .collect::<Result<_, _>>()?;
    if list.is_empty() {
        return Err(invalid("traffic selector list is empty"));
    }
    Ok(list)
}

/// The checked settings of one run.
#[derive(Clone, Debug)]
pub struct GenConfig {
    /// Scenario.
    pub mode: Mode,
    /// Responder address.
    pub remote: SocketAddr,
    /// Responder NAT-T port.
    pub remote_nat_port: u16,
    /// Source addresses of legitimate clients.
    pub sources: Vec<IpAddr>,
    /// Source addresses of flood packets.
    pub flood_sources: Vec<IpAddr>,
    /// First source port (0 = ephemeral).
    pub source_port: u16,
    /// Sockets per source address.
    pub ports_per_source: usize,
    /// Worker threads.
    pub threads: usize,
    /// Tunnels to establish.
    pub tunnels: u64,
    /// Target rate of new negotiations per second (None = as fast as concurrency allows).
    pub rate: Option<f64>,
    /// Most negotiations in flight.
    pub concurrency: usize,
    /// Hold time after establishing.
    pub hold: Duration,
    /// DPD delay while holding.
    pub dpd: Option<Duration>,
    /// IKE rekeys per second while holding.
    pub rekey_ike_rate: f64,
    /// CHILD_SA rekeys per second while holding.
    pub rekey_child_rate: f64,
    /// Delete all tunnels at the end.
    pub teardown: bool,
    /// ESP inner packet size while holding (0 = no ESP traffic).
    pub esp_size: usize,
    /// ESP packets per second over all tunnels (None = as fast as possible).
    pub esp_rate: Option<f64>,
    /// Flood packets per second.
    pub flood_rate: f64,
    /// Flood / mixed run time.
    pub duration: Duration,
    /// IKE proposals.
    pub ike: Vec<IkeProposal>,
    /// IKE proposals as written (for the report).
    pub ike_text: String,
    /// ESP proposals; None = childless.
    pub esp: Option<Vec<EspProposal>>,
    /// Our identity template.
    pub local_id: Template,
    /// The responder's identity template (None = any).
    pub remote_id: Option<Template>,
    /// Send INITIAL_CONTACT in IKE_AUTH.
    pub initial_contact: bool,
    /// Pre-shared key.
    pub psk: Zeroizing<Vec<u8>>,
    /// EAP road warriors: we authenticate with EAP-MSCHAPv2, not the PSK.
    pub eap: Option<EapClient>,
    /// Ask for a virtual IP.
    pub vip: bool,
    /// Our traffic selector templates.
    pub local_ts: Vec<Template>,
    /// The responder's traffic selector templates.
    pub remote_ts: Vec<Template>,
    /// Initial retransmission timeout.
    pub retransmit_timeout: Duration,
    /// Retransmissions before giving up.
    pub retransmit_tries: u32,
    /// Cap on the establish phase and on the teardown.
    pub timeout: Duration,
    /// Non-ESP marker policy.
    pub marker: MarkerPolicy,
    /// Socket buffer size.
    pub socket_buffer: usize,
    /// The gateway's metrics endpoint, read before and after the run.
    pub gateway_metrics: Option<SocketAddr>,
}

/// How the generator's clients log in with EAP.
#[derive(Clone)]
pub struct EapClient {
    /// The user name template.
    pub user: Template,
    /// The password of every user.
    pub password: Zeroizing<String>,
}

impl std::fmt::Debug for EapClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EapClient")
            .field("user", &self.user.source())
            .finish_non_exhaustive()
    }
}

impl GenConfig {
    /// Defaults for a loopback responder at `remote` (what `Settings::default()` resolves to).
    pub fn for_remote(remote: SocketAddr) -> Result<Self, ConfigError> {
        Settings {
            remote: Some(remote),
            ..Settings::default()
        }
        .resolve()
    }
}

/// Expands source address specs: `IP`, `IP/prefix`, `IP-IP`.
pub fn parse_sources(list: &[String]) -> Result<Vec<IpAddr>, ConfigError> {
    let mut out = Vec::new();
    for item in list.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        let (start, end) = if let Some((a, p)) = item.split_once('/') {
            let ip: IpAddr = a.parse().map_err(|_| invalid(format!("bad source address '{item}'")))?;
            let prefix: u32 = p.parse().map_err(|_| invalid(format!("bad prefix in '{item}'")))?;
            let bits = if ip.is_ipv4() { 32 } else { 128 };
            if prefix > bits {
                return Err(invalid(format!("prefix too long in '{item}'")));
            }
            let host_bits = bits - prefix;
            let mask: u128 = if host_bits >= 128 {
                u128::MAX
            } else {
                (1u128 << host_bits) - 1
            };
            let v = ip_to_u128(ip);
            (v & !mask, (v & !mask) | mask)
        } else if let Some((a, b)) = item.split_once('-') {
            let a: IpAddr = a
                .trim()
                .parse()
                .map_err(|_| invalid(format!("bad source range '{item}'")))?;
            let b: IpAddr = b
                .trim()
                .parse()
                .map_err(|_| invalid(format!("bad source range '{item}'")))?;
            if a.is_ipv4() != b.is_ipv4() || ip_to_u128(a) > ip_to_u128(b) {
                return Err(invalid(format!("bad source range '{item}'")));
            }
            (ip_to_u128(a), ip_to_u128(b))
        } else {
            let ip: IpAddr = item
                .parse()
                .map_err(|_| invalid(format!("bad source address '{item}'")))?;
            (ip_to_u128(ip), ip_to_u128(ip))
        };
        let v4 = !item.contains(':');
        if end - start >= (MAX_SOURCES - out.len().min(MAX_SOURCES)) as u128 {
            return Err(invalid(format!("more than {MAX_SOURCES} source addresses")));
        }
        for v in start..=end {
            out.push(u128_to_ip(v, v4));
        }
    }
    if out.is_empty() {
        return Err(invalid("no source address given"));
    }
    Ok(out)
}

fn ip_to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

fn u128_to_ip(v: u128, v4: bool) -> IpAddr {
    if v4 {
        IpAddr::V4(Ipv4Addr::from(v as u32))
    } else {
        IpAddr::V6(Ipv6Addr::from(v))
    }
}

fn default_sources(remote: SocketAddr) -> Result<Vec<IpAddr>, ConfigError> {
    if remote.ip().is_loopback() && remote.is_ipv4() {
        return parse_sources(&["127.0.1.0/24".to_string()]);
    }
    // The address the kernel would use to reach the responder.
    let any: SocketAddr = if remote.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let s = UdpSocket::bind(any).map_err(|e| invalid(format!("cannot find a source address: {e}")))?;
    s.connect(remote)
        .map_err(|e| invalid(format!("no route to {remote}: {e}")))?;
    let local = s
        .local_addr()
        .map_err(|e| invalid(format!("cannot find a source address: {e}")))?;
    Ok(vec![local.ip()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_expand() {
        let s = parse_sources(&["127.0.1.0/30".into(), "10.0.0.9-10.0.0.10".into(), "192.0.2.1".into()]).unwrap();
        assert_eq!(s.len(), 7);
        assert_eq!(s[0], "127.0.1.0".parse::<IpAddr>().unwrap());
        assert_eq!(s[3], "127.0.1.3".parse::<IpAddr>().unwrap());
        assert_eq!(s[5], "10.0.0.10".parse::<IpAddr>().unwrap());
        assert!(parse_sources(&["10.0.0.0/8".into()]).is_err(), "too many");
        assert!(parse_sources(&["10.0.0.5-10.0.0.1".into()]).is_err());
        assert!(parse_sources(&["nonsense".into()]).is_err());
    }

    #[test]
    fn toml_and_cli_layer() {
        let file =
            Settings::from_toml("mode = \"flood\"\ntunnels = 5\nflood-rate = 100.0\nlocal-ts = [\"10.{n}.0.0/16\"]\n")
                .unwrap();
        let cli = Settings {
            tunnels: Some(9),
            ..Settings::default()
        };
        let s = file.overlay(cli);
        assert_eq!(s.mode, Some(Mode::Flood));
        assert_eq!(s.tunnels, Some(9));
        let cfg = s.resolve().unwrap();
        assert_eq!(cfg.local_ts[0].render(3), "10.3.0.0/16");
        assert!(Settings::from_toml("bogus = 1").is_err());
    }

    #[test]
    fn bad_values_are_rejected() {
        let bad = |s: Settings| s.resolve().is_err();
        assert!(bad(Settings {
            ike: Some("aes999".into()),
            ..Default::default()
        }));
        assert!(bad(Settings {
            rate: Some(-1.0),
            ..Default::default()
        }));
        assert!(bad(Settings {
            threads: Some(0),
            ..Default::default()
        }));
        assert!(bad(Settings {
            local_ts: Some(vec!["10.{n}.0.0/99".into()]),
            ..Default::default()
        }));
        assert!(bad(Settings {
            source: Some(vec!["::1".into()]),
            ..Default::default()
        }));
    }

    #[test]
    fn eap_needs_user_and_password_and_vip_makes_local_ts_dynamic() {
        let eap = |user: Option<&str>, password: Option<&str>| Settings {
            eap_user: user.map(Into::into),
            eap_password: password.map(Into::into),
            ..Default::default()
        };
        assert!(eap(Some("user{n}"), None).resolve().is_err());
        assert!(eap(None, Some("pw")).resolve().is_err());
        assert!(eap(Some(""), Some("pw")).resolve().is_err());
        assert!(eap(Some("user{n}"), Some("")).resolve().is_err());
        let cfg = eap(Some("user{n}"), Some("pw")).resolve().unwrap();
        assert_eq!(cfg.eap.as_ref().map(|e| e.user.render(4)), Some("user4".into()));
        assert!(
            !format!("{:?}", cfg.eap).contains("pw"),
            "the password is not in Debug output"
        );
        assert_eq!(cfg.local_ts.len(), 1, "a fixed selector without --vip");
        let vip = Settings {
            vip: Some(true),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert!(vip.vip && vip.local_ts.is_empty(), "dynamic: the assigned address");
    }

    #[test]
    fn marker_rule() {
        assert!(!MarkerPolicy::Auto.applies(500, 5700));
        assert!(MarkerPolicy::Auto.applies(40000, 5700));
        assert!(MarkerPolicy::Auto.applies(40000, 4500));
        assert!(!MarkerPolicy::Auto.applies(40000, 500));
        assert!(MarkerPolicy::Always.applies(500, 500));
        assert!(!MarkerPolicy::Never.applies(40000, 4500));
    }
}
