//! A real strongSwan `charon` process with its own configuration directory.
//!
//! Each instance gets a temp dir holding `strongswan.conf`, `charon.log`,
//! `charon.vici` and `swanctl/` (swanctl.conf and credential folders). charon
//! hard-codes `/run/charon.pid`, so it runs in a private mount namespace with a
//! tmpfs on /run: `unshare -m` on the host ([`KernelBackend::Netlink`], IKE only:
//! the CI kernel has no ESP) or `ip netns exec` for [`KernelBackend::Libipsec`]
//! (user-space ESP over a TUN device inside a test-owned namespace).
//!
//! Framing on custom ports (verified on 5.9.8, see the test
//! `charon_uses_non_esp_marker_on_every_port_but_500`): charon's socket-default
//! prepends the 4-byte non-ESP marker to IKE messages sent to any port other than
//! 500 and expects it on messages from any source port other than 500; unmarked
//! IKE from a non-500 port is taken for ESP and silently dropped. A peer talking
//! to a custom-port charon from a custom port must therefore frame IKE as on 4500.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::config::{Connection, Secret, SwanctlConf, quote};
use super::pki::CertFiles;
use super::swanctl::Swanctl;
use super::util::{HarnessError, Result, free_udp_port_pair, io_err, run, tail_file};

/// Path of the charon daemon in Debian's strongswan-charon package.
pub const CHARON_BIN: &str = "/usr/lib/ipsec/charon";

/// Where `scripts/install-deps.sh` installs strongSwan 6 (ML-KEM, RFC 9370,
/// IKE_INTERMEDIATE); `IRONSA_STRONGSWAN6` overrides it.
pub const STRONGSWAN6_PREFIX: &str = "/opt/strongswan6";

/// The strongSwan 6 installation prefix, or why there is none (tests that
/// need it skip with [`super::require::Need::StrongSwan6`]).
pub fn strongswan6() -> std::result::Result<PathBuf, String> {
    let prefix = PathBuf::from(std::env::var("IRONSA_STRONGSWAN6").unwrap_or_else(|_| STRONGSWAN6_PREFIX.into()));
    let charon = prefix.join("libexec/ipsec/charon");
    if charon.is_file() && prefix.join("sbin/swanctl").is_file() {
        Ok(prefix)
    } else {
        Err(format!(
            "strongSwan 6 (none at {}; scripts/install-deps.sh builds it where its source is available)",
            prefix.display()
        ))
    }
}

/// swanctl credential folders created (empty) in every instance.
const SWANCTL_DIRS: &[&str] = &[
    "x509", "x509ca", "x509ocsp", "x509aa", "x509ac", "x509crl", "pubkey", "private", "rsa", "ecdsa", "bliss", "pkcs8",
    "pkcs12",
];

/// Plugins every instance loads (before the kernel backend).
const BASE_PLUGINS: &str =
    "random nonce openssl pem pkcs1 pkcs8 x509 revocation constraints pubkey curve25519 aes sha1 sha2 hmac gcm kdf";

/// How charon installs SAs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelBackend {
    /// `kernel-netlink` on the host: IKE works, CHILD_SAs cannot be installed on a
    /// kernel without ESP (charon answers NO_PROPOSAL_CHOSEN). Runs in a private
    /// mount namespace on the host network.
    Netlink,
    /// `kernel-libipsec` (user-space ESP-in-UDP, TUN `ipsec0`) inside the given
    /// network namespace, with routes installed in table 220.
    Libipsec {
        /// Network namespace name (see [`super::netns::Netns::name`]).
        netns: String,
    },
}

#[derive(Debug, Clone)]
enum ConfNode {
    Value(String),
    Section(BTreeMap<String, ConfNode>),
}

fn conf_insert(tree: &mut BTreeMap<String, ConfNode>, dotted: &str, value: &str) {
    match dotted.split_once('.') {
        None => {
            tree.insert(dotted.to_string(), ConfNode::Value(value.to_string()));
        }
        Some((head, rest)) => {
            let node = tree
                .entry(head.to_string())
                .or_insert_with(|| ConfNode::Section(BTreeMap::new()));
            if let ConfNode::Value(_) = node {
                *node = ConfNode::Section(BTreeMap::new());
            }
            if let ConfNode::Section(sub) = node {
                conf_insert(sub, rest, value);
            }
        }
    }
}

fn conf_render(tree: &BTreeMap<String, ConfNode>, indent: usize, out: &mut String) {
    let p = " ".repeat(indent);
    for (k, v) in tree {
        match v {
            ConfNode::Value(v) => out.push_str(&format!("{p}{k} = {v}\n")),
            ConfNode::Section(sub) => {
                out.push_str(&format!("{p}{k} {{\n"));
                conf_render(sub, indent + 2, out);
                out.push_str(&format!("{p}}}\n"));
            }
        }
    }
}

/// Builder for a [`Charon`].
#[derive(Debug, Clone)]
pub struct CharonBuilder {
    name: String,
    ports: Option<(u16, u16)>,
    backend: KernelBackend,
    settings: Vec<(String, String)>,
    log_levels: Vec<(String, i32)>,
    conf: SwanctlConf,
    files: Vec<(String, String, PathBuf)>,
    extra_plugins: Vec<String>,
    start_timeout: Duration,
    load: bool,
    charon_bin: PathBuf,
    swanctl_bin: String,
}

impl CharonBuilder {
    /// Runs the strongSwan 6 installed under `prefix` (see [`strongswan6`])
    /// with its `ml` plugin (ML-KEM) loaded, instead of Debian's charon.
    pub fn strongswan6(mut self, prefix: &Path) -> Self {
        self.charon_bin = prefix.join("libexec/ipsec/charon");
        self.swanctl_bin = prefix.join("sbin/swanctl").to_string_lossy().into_owned();
        self.extra_plugins.push("ml".into());
        self
    }

    /// Sets the IKE `port` and `port_nat_t`. Default: a free pair on the host for
    /// [`KernelBackend::Netlink`], 500/4500 for [`KernelBackend::Libipsec`].
    pub fn ports(mut self, port: u16, port_nat_t: u16) -> Self {
        self.ports = Some((port, port_nat_t));
        self
    }

    /// Chooses the kernel backend.
    pub fn kernel(mut self, backend: KernelBackend) -> Self {
        self.backend = backend;
        self
    }

    /// Sets `charon.<dotted_key> = value` in strongswan.conf (e.g.
    /// `("dos_protection", "yes")`, `("cookie_threshold", "1")`,
    /// `("plugins.kernel-libipsec.allow_peer_ts", "yes")`). Overrides defaults.
    pub fn setting(mut self, dotted_key: &str, value: &str) -> Self {
        self.settings.push((dotted_key.into(), value.into()));
        self
    }

    /// Sets the file-log level of a subsystem (`ike`, `knl`, `chd`, `enc`, `net`,
    /// `cfg`, `esp`, `lib`, `default`, ...). Defaults: default 1, ike 2, knl 2, esp 1.
    pub fn log_level(mut self, subsystem: &str, level: i32) -> Self {
        self.log_levels.push((subsystem.into(), level));
        self
    }

    /// Adds a connection to swanctl.conf.
    pub fn connection(mut self, conn: Connection) -> Self {
        self.conf.connections.push(conn);
        self
    }

    /// A virtual-IP pool (`pools { NAME { addrs = .., dns = .. } }`).
    pub fn pool(mut self, name: &str, settings: &[(&str, &str)]) -> Self {
        let settings = settings.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        self.conf.pools.push((name.to_string(), settings));
        self
    }

    /// Adds a secret to swanctl.conf.
    pub fn secret(mut self, secret: Secret) -> Self {
        self.conf.secrets.push(secret);
        self
    }

    /// Copies `src` into `swanctl/<subdir>/<file_name>` before start.
    pub fn file(mut self, subdir: &str, file_name: &str, src: &Path) -> Self {
        self.files.push((subdir.into(), file_name.into(), src.to_path_buf()));
        self
    }

    /// Installs a certificate and its private key as this peer's identity:
    /// `x509/<name>.crt` and `<ecdsa|rsa|pkcs8>/<name>.key` (DER). Reference the
    /// certificate in [`super::config::AuthRound::cert`] as `<name>.crt`.
    pub fn identity(self, cert: &CertFiles) -> Self {
        let crt = format!("{}.crt", cert.name);
        let key = format!("{}.key", cert.name);
        let dir = cert.key_type.swanctl_dir();
        self.file("x509", &crt, &cert.cert_der).file(dir, &key, &cert.key_der)
    }

    /// Installs a trusted CA (or intermediate) certificate as `x509ca/<name>.crt`.
    pub fn ca(self, cert: &CertFiles) -> Self {
        let crt = format!("{}.crt", cert.name);
        self.file("x509ca", &crt, &cert.cert_der)
    }

    /// Installs an untrusted certificate (e.g. an intermediate to send) as `x509/<name>.crt`.
    pub fn cert(self, cert: &CertFiles) -> Self {
        let crt = format!("{}.crt", cert.name);
        self.file("x509", &crt, &cert.cert_der)
    }

    /// Loads an additional plugin (appended after the base list).
    pub fn plugin(mut self, name: &str) -> Self {
        self.extra_plugins.push(name.into());
        self
    }

    /// Bound for charon to answer on VICI (default 10 s).
    pub fn start_timeout(mut self, t: Duration) -> Self {
        self.start_timeout = t;
        self
    }

    /// Whether `start` runs `swanctl --load-all` (default true).
    pub fn load_all(mut self, yes: bool) -> Self {
        self.load = yes;
        self
    }

    /// The strongswan.conf text this builder writes for instance directory `dir`
    /// and (`port`, `port_nat_t`) if given.
    pub fn strongswan_conf(&self, dir: &Path, ports: Option<(u16, u16)>) -> String {
        let mut tree = BTreeMap::new();
        let libipsec = matches!(self.backend, KernelBackend::Libipsec { .. });
        let mut plugins = BASE_PLUGINS.to_string();
        if libipsec {
            plugins.push_str(" kernel-libipsec");
        }
        plugins.push_str(" kernel-netlink socket-default vici");
        for p in &self.extra_plugins {
            plugins.push(' ');
            plugins.push_str(p);
        }
        let vici = format!("unix://{}", dir.join("charon.vici").display());
        let mut defaults: Vec<(String, String)> = vec![
            ("load_modular".into(), "no".into()),
            ("load".into(), plugins),
            ("install_routes".into(), if libipsec { "yes" } else { "no" }.into()),
            ("install_virtual_ip".into(), "no".into()),
            ("retransmit_tries".into(), "2".into()),
            ("retransmit_timeout".into(), "2".into()),
            ("plugins.vici.socket".into(), vici.clone()),
            ("filelog.main.path".into(), dir.join("charon.log").display().to_string()),
            ("filelog.main.append".into(), "yes".into()),
            ("filelog.main.flush_line".into(), "yes".into()),
            ("filelog.main.time_format".into(), quote("%H:%M:%S")),
            ("filelog.main.default".into(), "1".into()),
            ("filelog.main.ike".into(), "2".into()),
            ("filelog.main.knl".into(), "2".into()),
            ("filelog.main.esp".into(), "1".into()),
        ];
        if let Some((port, nat)) = ports {
            defaults.push(("port".into(), port.to_string()));
            defaults.push(("port_nat_t".into(), nat.to_string()));
        }
        for (k, v) in defaults.iter().chain(self.settings.iter()) {
            conf_insert(&mut tree, k, v);
        }
        for (subsys, level) in &self.log_levels {
            conf_insert(&mut tree, &format!("filelog.main.{subsys}"), &level.to_string());
        }
        let mut out = String::from("charon {\n");
        conf_render(&tree, 2, &mut out);
        out.push_str(&format!("}}\nswanctl {{\n  socket = {vici}\n}}\n"));
        out
    }

    /// Writes the configuration, starts charon, waits for VICI and (by default)
    /// loads swanctl.conf and credentials.
    pub fn start(self) -> Result<Charon> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("ironsa-charon-{}-", self.name))
            .tempdir()
            .map_err(io_err("charon tempdir"))?;
        let root = dir.path().to_path_buf();
        let swanctl_dir = root.join("swanctl");
        for sub in SWANCTL_DIRS {
            std::fs::create_dir_all(swanctl_dir.join(sub)).map_err(io_err("create swanctl dirs"))?;
        }
        for (sub, name, src) in &self.files {
            let dst = swanctl_dir.join(sub).join(name);
            std::fs::copy(src, &dst).map_err(io_err(format!("copy {} -> {}", src.display(), dst.display())))?;
        }
        let ports = match (&self.backend, self.ports) {
            (_, Some(p)) => Some(p),
            (KernelBackend::Netlink, None) => Some(free_udp_port_pair()?),
            (KernelBackend::Libipsec { .. }, None) => None,
        };
        let conf_path = root.join("strongswan.conf");
        std::fs::write(&conf_path, self.strongswan_conf(&root, ports)).map_err(io_err("write strongswan.conf"))?;
        std::fs::write(swanctl_dir.join("swanctl.conf"), self.conf.render()).map_err(io_err("write swanctl.conf"))?;

        let stdout = std::fs::File::create(root.join("stdout.log")).map_err(io_err("create stdout.log"))?;
        let stderr = stdout.try_clone().map_err(io_err("clone stdout.log"))?;
        let script = format!("mount -t tmpfs tmpfs /run && exec {}", self.charon_bin.display());
        let mut cmd = match &self.backend {
            KernelBackend::Netlink => {
                let mut c = Command::new("unshare");
                c.args(["-m", "--propagation", "private", "sh", "-c", &script]);
                c
            }
            KernelBackend::Libipsec { netns } => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", netns, "sh", "-c", &script]);
                c
            }
        };
        cmd.env("STRONGSWAN_CONF", &conf_path)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        let child = cmd.spawn().map_err(|source| HarnessError::Spawn {
            command: self.charon_bin.display().to_string(),
            source,
        })?;

        let swanctl = Swanctl::new(conf_path, swanctl_dir).with_program(&self.swanctl_bin);
        let mut charon = Charon {
            name: self.name.clone(),
            dir: Some(dir),
            root,
            child: Some(child),
            swanctl,
            ports,
            backend: self.backend.clone(),
            conf: self.conf.clone(),
        };
        charon.wait_for_vici(self.start_timeout)?;
        if self.load {
            charon.load_all()?;
        }
        Ok(charon)
    }
}

/// A running charon; stopped (SIGTERM, then SIGKILL after 2 s) on drop. When the
/// dropping thread is panicking, the log tail is printed and the directory kept.
pub struct Charon {
    name: String,
    dir: Option<tempfile::TempDir>,
    root: PathBuf,
    child: Option<Child>,
    swanctl: Swanctl,
    ports: Option<(u16, u16)>,
    backend: KernelBackend,
    conf: SwanctlConf,
}

impl Charon {
    /// A builder; `name` only labels directories and log output.
    pub fn builder(name: &str) -> CharonBuilder {
        CharonBuilder {
            name: name.into(),
            ports: None,
            backend: KernelBackend::Netlink,
            settings: Vec::new(),
            log_levels: Vec::new(),
            conf: SwanctlConf::default(),
            files: Vec::new(),
            extra_plugins: Vec::new(),
            start_timeout: Duration::from_secs(10),
            load: true,
            charon_bin: PathBuf::from(CHARON_BIN),
            swanctl_bin: "swanctl".into(),
        }
    }

    /// Label given to the builder.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// IKE port (`charon.port`): 500 if left at the default.
    pub fn ike_port(&self) -> u16 {
        self.ports.map_or(500, |p| p.0)
    }

    /// NAT-T port (`charon.port_nat_t`): 4500 if left at the default.
    pub fn nat_port(&self) -> u16 {
        self.ports.map_or(4500, |p| p.1)
    }

    /// Kernel backend in use.
    pub fn backend(&self) -> &KernelBackend {
        &self.backend
    }

    /// The instance directory (strongswan.conf, charon.log, swanctl/).
    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// Path of charon's file log.
    pub fn log_path(&self) -> PathBuf {
        self.root.join("charon.log")
    }

    /// The whole log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Whether the log contains `needle`.
    pub fn log_contains(&self, needle: &str) -> bool {
        self.log().contains(needle)
    }

    /// Polls the log until it contains `needle`, or fails after `limit`.
    pub fn wait_for_log(&self, needle: &str, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        while !self.log_contains(needle) {
            if Instant::now() >= deadline {
                return Err(HarnessError::Timeout(format!(
                    "{}: log line {needle:?} not seen in {limit:?}",
                    self.name
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// The last `lines` lines of the log, with a header naming this instance.
    pub fn log_tail(&self, lines: usize) -> String {
        format!(
            "==== charon {} ({}) last {lines} log lines ====\n{}",
            self.name,
            self.log_path().display(),
            tail_file(&self.log_path(), lines)
        )
    }

    /// Prints [`Charon::log_tail`] (100 lines) to stderr; call it on a failure path.
    pub fn dump_log(&self) {
        eprintln!("{}", self.log_tail(100));
    }

    /// The swanctl wrapper bound to this instance.
    pub fn swanctl(&self) -> &Swanctl {
        &self.swanctl
    }

    /// `swanctl --load-all`.
    pub fn load_all(&self) -> Result<String> {
        self.swanctl.load_all().inspect_err(|_| self.dump_log())
    }

    /// The swanctl.conf model this instance was started with.
    pub fn conf(&self) -> &SwanctlConf {
        &self.conf
    }

    /// Replaces swanctl.conf with `conf` and reloads everything.
    pub fn reload(&mut self, conf: SwanctlConf) -> Result<String> {
        std::fs::write(self.swanctl.swanctl_dir.join("swanctl.conf"), conf.render())
            .map_err(io_err("write swanctl.conf"))?;
        self.conf = conf;
        self.load_all()
    }

    /// Process id of charon (while running).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn wait_for_vici(&mut self, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Err(HarnessError::Failed {
                        command: format!("charon {}", self.name),
                        status: status.code(),
                        stdout: tail_file(&self.root.join("stdout.log"), 40),
                        stderr: tail_file(&self.log_path(), 40),
                    });
                }
            }
            if self.swanctl.stats().is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.dump_log();
                return Err(HarnessError::Timeout(format!(
                    "charon {}: VICI not answering after {limit:?}",
                    self.name
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops charon: SIGTERM, SIGKILL after 2 s. Idempotent.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(None) = child.try_wait() {
            let _ = run("kill", &["-TERM", &child.id().to_string()]);
            let deadline = Instant::now() + Duration::from_secs(2);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
        }
        let _ = child.wait();
    }
}

impl Drop for Charon {
    fn drop(&mut self) {
        self.stop();
        let keep = std::thread::panicking() || std::env::var_os("IRONSA_KEEP_CHARON").is_some();
        if std::thread::panicking() {
            self.dump_log();
        }
        if keep {
            if let Some(dir) = self.dir.take() {
                let path = dir.keep();
                eprintln!("harness: kept charon {} directory {}", self.name, path.display());
            }
        }
    }
}
