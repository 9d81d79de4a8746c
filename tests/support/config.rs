//! swanctl.conf model (connections, children, secrets) and its text rendering.

use std::fmt::Write as _;

/// IKE protocol version of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IkeVersion {
    /// IKEv1 (main mode, or aggressive with [`Connection::aggressive`]).
    V1,
    /// IKEv2.
    V2,
}

/// One authentication round (`local` or `remote` section).
#[derive(Debug, Clone, Default)]
pub struct AuthRound {
    /// `auth = psk | pubkey | ...`.
    pub auth: String,
    /// `id = ...` (identity used / expected).
    pub id: Option<String>,
    /// `certs = ...` file names in `swanctl/x509/` (local rounds).
    pub certs: Vec<String>,
    /// `cacerts = ...` file names in `swanctl/x509ca/` (remote rounds).
    pub cacerts: Vec<String>,
    /// Further `key = value` settings.
    pub extra: Vec<(String, String)>,
}

impl AuthRound {
    /// Pre-shared-key authentication with the given identity.
    pub fn psk(id: &str) -> Self {
        Self {
            auth: "psk".into(),
            id: Some(id.into()),
            ..Self::default()
        }
    }

    /// Public-key authentication with the given identity (e.g. a SAN or DN).
    pub fn pubkey(id: &str) -> Self {
        Self {
            auth: "pubkey".into(),
            id: Some(id.into()),
            ..Self::default()
        }
    }

    /// Adds a certificate file name (relative to `swanctl/x509/`).
    pub fn cert(mut self, file: &str) -> Self {
        self.certs.push(file.into());
        self
    }

    /// Adds a trusted CA file name (relative to `swanctl/x509ca/`).
    pub fn cacert(mut self, file: &str) -> Self {
        self.cacerts.push(file.into());
        self
    }

    /// Adds an arbitrary `key = value` setting to the round.
    pub fn set(mut self, key: &str, value: &str) -> Self {
        self.extra.push((key.into(), value.into()));
        self
    }
}

/// A CHILD_SA configuration (`children.<name>`).
#[derive(Debug, Clone)]
pub struct Child {
    /// Section name.
    pub name: String,
    /// `local_ts` traffic selectors.
    pub local_ts: Vec<String>,
    /// `remote_ts` traffic selectors.
    pub remote_ts: Vec<String>,
    /// `mode = tunnel | transport | ...` (None: strongSwan default, tunnel).
    pub mode: Option<String>,
    /// `esp_proposals`.
    pub esp_proposals: Vec<String>,
    /// `start_action = none | trap | start`.
    pub start_action: Option<String>,
    /// `rekey_time` (strongSwan duration syntax, e.g. `30s`).
    pub rekey_time: Option<String>,
    /// `life_time`.
    pub life_time: Option<String>,
    /// Further `key = value` settings.
    pub extra: Vec<(String, String)>,
}

impl Child {
    /// A child with the given name and traffic selectors.
    pub fn new(name: &str, local_ts: &str, remote_ts: &str) -> Self {
        Self {
            name: name.into(),
            local_ts: vec![local_ts.into()],
            remote_ts: vec![remote_ts.into()],
            mode: None,
            esp_proposals: Vec::new(),
            start_action: None,
            rekey_time: None,
            life_time: None,
            extra: Vec::new(),
        }
    }

    /// Sets `mode`.
    pub fn mode(mut self, mode: &str) -> Self {
        self.mode = Some(mode.into());
        self
    }

    /// Sets `esp_proposals` (comma separated list items).
    pub fn esp_proposals(mut self, proposals: &[&str]) -> Self {
        self.esp_proposals = proposals.iter().map(|p| p.to_string()).collect();
        self
    }

    /// Sets `start_action`.
    pub fn start_action(mut self, action: &str) -> Self {
        self.start_action = Some(action.into());
        self
    }

    /// Sets `rekey_time`.
    pub fn rekey_time(mut self, t: &str) -> Self {
        self.rekey_time = Some(t.into());
        self
    }

    /// Sets `life_time`.
    pub fn life_time(mut self, t: &str) -> Self {
        self.life_time = Some(t.into());
        self
    }

    /// Adds an arbitrary `key = value` setting.
    pub fn set(mut self, key: &str, value: &str) -> Self {
        self.extra.push((key.into(), value.into()));
        self
    }

    fn render(&self, out: &mut String, indent: usize) {
        let p = " ".repeat(indent);
        let _ = writeln!(out, "{p}{} {{", self.name);
        kv(out, indent + 2, "local_ts", &self.local_ts.join(","));
        kv(out, indent + 2, "remote_ts", &self.remote_ts.join(","));
        opt(out, indent + 2, "mode", &self.mode);
        if !self.esp_proposals.is_empty() {
            kv(out, indent + 2, "esp_proposals", &self.esp_proposals.join(","));
        }
        opt(out, indent + 2, "start_action", &self.start_action);
        opt(out, indent + 2, "rekey_time", &self.rekey_time);
        opt(out, indent + 2, "life_time", &self.life_time);
        for (k, v) in &self.extra {
            kv(out, indent + 2, k, v);
        }
        let _ = writeln!(out, "{p}}}");
    }
}

/// An IKE connection (`connections.<name>`).
#[derive(Debug, Clone)]
pub struct Connection {
    /// Section name (what `swanctl --initiate --ike` takes).
    pub name: String,
    /// IKE version.
    pub version: IkeVersion,
    /// `local_addrs`.
    pub local_addrs: Vec<String>,
    /// `remote_addrs`.
    pub remote_addrs: Vec<String>,
    /// `local_port` (None: charon's `port`).
    pub local_port: Option<u16>,
    /// `remote_port` (None: 500).
    pub remote_port: Option<u16>,
    /// IKE `proposals`.
    pub proposals: Vec<String>,
    /// `aggressive = yes` (IKEv1 only).
    pub aggressive: bool,
    /// `mobike` (default here: no, keeps ports and captures stable).
    pub mobike: bool,
    /// `fragmentation` (default here: yes).
    pub fragmentation: String,
    /// `rekey_time` of the IKE SA.
    pub rekey_time: Option<String>,
    /// `reauth_time` of the IKE SA.
    pub reauth_time: Option<String>,
    /// `dpd_delay`.
    pub dpd_delay: Option<String>,
    /// `encap = yes` forces UDP encapsulation of ESP.
    pub encap: Option<bool>,
    /// Local authentication round.
    pub local: AuthRound,
    /// A second local round (`local-2`, RFC 4739), if any.
    pub local2: Option<AuthRound>,
    /// Remote authentication round.
    pub remote: AuthRound,
    /// A second remote round (`remote-2`: EAP, or IKEv1 XAUTH), if any.
    pub remote2: Option<AuthRound>,
    /// CHILD_SA configurations.
    pub children: Vec<Child>,
    /// Further connection-level `key = value` settings.
    pub extra: Vec<(String, String)>,
}

impl Connection {
    /// An IKEv2 connection between two addresses with PSK placeholders; set the
    /// auth rounds with [`Connection::local`] and [`Connection::remote`].
    pub fn new(name: &str, local_addr: &str, remote_addr: &str) -> Self {
        Self {
            name: name.into(),
            version: IkeVersion::V2,
            local_addrs: vec![local_addr.into()],
            remote_addrs: vec![remote_addr.into()],
            local_port: None,
            remote_port: None,
            proposals: Vec::new(),
            aggressive: false,
            mobike: false,
            fragmentation: "yes".into(),
            rekey_time: None,
            reauth_time: None,
            dpd_delay: None,
            encap: None,
            local: AuthRound::default(),
            local2: None,
            remote2: None,
            remote: AuthRound::default(),
            children: Vec::new(),
            extra: Vec::new(),
        }
    }

    /// Sets the IKE version.
    pub fn version(mut self, v: IkeVersion) -> Self {
        self.version = v;
        self
    }

    /// Sets `local_port`.
    pub fn local_port(mut self, p: u16) -> Self {
        self.local_port = Some(p);
        self
    }

    /// Sets `remote_port`.
    pub fn remote_port(mut self, p: u16) -> Self {
        self.remote_port = Some(p);
        self
    }

    /// Sets IKE `proposals`.
    pub fn proposals(mut self, proposals: &[&str]) -> Self {
        self.proposals = proposals.iter().map(|p| p.to_string()).collect();
        self
    }

    /// Sets `aggressive`.
    pub fn aggressive(mut self, yes: bool) -> Self {
        self.aggressive = yes;
        self
    }

    /// Sets `mobike`.
    pub fn mobike(mut self, yes: bool) -> Self {
        self.mobike = yes;
        self
    }

    /// Sets `fragmentation` (`yes`, `accept`, `force`, `no`).
    pub fn fragmentation(mut self, value: &str) -> Self {
        self.fragmentation = value.into();
        self
    }

    /// Sets IKE `rekey_time`.
    pub fn rekey_time(mut self, t: &str) -> Self {
        self.rekey_time = Some(t.into());
        self
    }

    /// Sets `reauth_time`.
    pub fn reauth_time(mut self, t: &str) -> Self {
        self.reauth_time = Some(t.into());
        self
    }

    /// Sets `dpd_delay`.
    pub fn dpd_delay(mut self, t: &str) -> Self {
        self.dpd_delay = Some(t.into());
        self
    }

    /// Sets `encap`.
    pub fn encap(mut self, yes: bool) -> Self {
        self.encap = Some(yes);
        self
    }

    /// Sets the local authentication round.
    pub fn local(mut self, round: AuthRound) -> Self {
        self.local = round;
        self
    }

    /// Adds a second local authentication round (`local-2`, RFC 4739).
    pub fn local2(mut self, round: AuthRound) -> Self {
        self.local2 = Some(round);
        self
    }

    /// Adds a second remote authentication round (`remote-2`).
    pub fn remote2(mut self, round: AuthRound) -> Self {
        self.remote2 = Some(round);
        self
    }

    /// Sets the remote authentication round.
    pub fn remote(mut self, round: AuthRound) -> Self {
        self.remote = round;
        self
    }

    /// Adds a child.
    pub fn child(mut self, child: Child) -> Self {
        self.children.push(child);
        self
    }

    /// Adds an arbitrary connection-level `key = value` setting.
    pub fn set(mut self, key: &str, value: &str) -> Self {
        self.extra.push((key.into(), value.into()));
        self
    }

    /// Renders `<name> { ... }` at the given indentation.
    pub fn render(&self, out: &mut String, indent: usize) {
        let p = " ".repeat(indent);
        let i = indent + 2;
        let _ = writeln!(out, "{p}{} {{", self.name);
        kv(
            out,
            i,
            "version",
            if self.version == IkeVersion::V1 { "1" } else { "2" },
        );
        kv(out, i, "local_addrs", &self.local_addrs.join(","));
        kv(out, i, "remote_addrs", &self.remote_addrs.join(","));
        opt(out, i, "local_port", &self.local_port.map(|p| p.to_string()));
        opt(out, i, "remote_port", &self.remote_port.map(|p| p.to_string()));
        if !self.proposals.is_empty() {
            kv(out, i, "proposals", &self.proposals.join(","));
        }
        if self.aggressive {
            kv(out, i, "aggressive", "yes");
        }
        kv(out, i, "mobike", yes_no(self.mobike));
        kv(out, i, "fragmentation", &self.fragmentation);
        opt(out, i, "rekey_time", &self.rekey_time);
        opt(out, i, "reauth_time", &self.reauth_time);
        opt(out, i, "dpd_delay", &self.dpd_delay);
        opt(out, i, "encap", &self.encap.map(|e| yes_no(e).to_string()));
        for (k, v) in &self.extra {
            kv(out, i, k, v);
        }
        render_round(out, i, "local", &self.local);
        if let Some(r) = &self.local2 {
            render_round(out, i, "local-2", r);
        }
        render_round(out, i, "remote", &self.remote);
        if let Some(r) = &self.remote2 {
            render_round(out, i, "remote-2", r);
        }
        if !self.children.is_empty() {
            let _ = writeln!(out, "{}children {{", " ".repeat(i));
            for c in &self.children {
                c.render(out, i + 2);
            }
            let _ = writeln!(out, "{}}}", " ".repeat(i));
        }
        let _ = writeln!(out, "{p}}}");
    }
}

/// A `secrets` entry.
#[derive(Debug, Clone)]
pub enum Secret {
    /// `ike<suffix> { id-N = ..., secret = "..." }`: a PSK shared by the given ids.
    Ike {
        name: String,
        ids: Vec<String>,
        secret: String,
    },
    /// `eap<suffix> { id = ..., secret = "..." }`: an EAP user's password
    /// (or `xauth<suffix>`, an XAUTH user's).
    Eap { name: String, id: String, secret: String },
    /// `private<suffix> { file = ..., secret = ... }`: an (encrypted) private key.
    Private {
        name: String,
        file: String,
        secret: Option<String>,
    },
}

impl Secret {
    /// A PSK for the given identities; `name` gets prefixed with `ike-`.
    pub fn psk(name: &str, ids: &[&str], secret: &str) -> Self {
        Self::Ike {
            name: format!("ike-{name}"),
            ids: ids.iter().map(|s| s.to_string()).collect(),
            secret: secret.into(),
        }
    }

    /// An EAP password of `id`; `name` gets prefixed with `eap-`.
    pub fn eap(name: &str, id: &str, secret: &str) -> Self {
        Self::Eap {
            name: format!("eap-{name}"),
            id: id.into(),
            secret: secret.into(),
        }
    }

    /// An XAUTH password of `id` (IKEv1); `name` gets prefixed with `xauth-`.
    pub fn xauth(name: &str, id: &str, secret: &str) -> Self {
        Self::Eap {
            name: format!("xauth-{name}"),
            id: id.into(),
            secret: secret.into(),
        }
    }

    fn render(&self, out: &mut String) {
        match self {
            Self::Eap { name, id, secret } => {
                let _ = writeln!(out, "  {name} {{");
                kv(out, 4, "id", id);
                kv(out, 4, "secret", &quote(secret));
                let _ = writeln!(out, "  }}");
            }
            Self::Ike { name, ids, secret } => {
                let _ = writeln!(out, "  {name} {{");
                for (n, id) in ids.iter().enumerate() {
                    kv(out, 4, &format!("id-{n}"), id);
                }
                kv(out, 4, "secret", &quote(secret));
                let _ = writeln!(out, "  }}");
            }
            Self::Private { name, file, secret } => {
                let _ = writeln!(out, "  private-{name} {{");
                kv(out, 4, "file", file);
                if let Some(s) = secret {
                    kv(out, 4, "secret", &quote(s));
                }
                let _ = writeln!(out, "  }}");
            }
        }
    }
}

/// A whole swanctl.conf: connections and secrets.
#[derive(Debug, Clone, Default)]
pub struct SwanctlConf {
    /// Connections.
    pub connections: Vec<Connection>,
    /// Secrets.
    pub secrets: Vec<Secret>,
    /// Virtual-IP pools: name and `key = value` settings (`addrs`, `dns`).
    pub pools: Vec<(String, Vec<(String, String)>)>,
}

impl SwanctlConf {
    /// Renders the file text.
    pub fn render(&self) -> String {
        let mut out = String::from("connections {\n");
        for c in &self.connections {
            c.render(&mut out, 2);
        }
        out.push_str("}\nsecrets {\n");
        for s in &self.secrets {
            s.render(&mut out);
        }
        out.push_str("}\n");
        if !self.pools.is_empty() {
            out.push_str("pools {\n");
            for (name, settings) in &self.pools {
                let _ = writeln!(out, "  {name} {{");
                for (k, v) in settings {
                    kv(&mut out, 4, k, v);
                }
                out.push_str("  }\n");
            }
            out.push_str("}\n");
        }
        out
    }
}

fn render_round(out: &mut String, indent: usize, name: &str, r: &AuthRound) {
    let p = " ".repeat(indent);
    let _ = writeln!(out, "{p}{name} {{");
    if !r.auth.is_empty() {
        kv(out, indent + 2, "auth", &r.auth);
    }
    if let Some(id) = &r.id {
        kv(out, indent + 2, "id", &quote(id));
    }
    if !r.certs.is_empty() {
        kv(out, indent + 2, "certs", &r.certs.join(","));
    }
    if !r.cacerts.is_empty() {
        kv(out, indent + 2, "cacerts", &r.cacerts.join(","));
    }
    for (k, v) in &r.extra {
        kv(out, indent + 2, k, v);
    }
    let _ = writeln!(out, "{p}}}");
}

/// Quotes a value for strongswan.conf/swanctl.conf syntax.
pub fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

fn kv(out: &mut String, indent: usize, key: &str, value: &str) {
    let _ = writeln!(out, "{}{key} = {value}", " ".repeat(indent));
}

fn opt(out: &mut String, indent: usize, key: &str, value: &Option<String>) {
    if let Some(v) = value {
        kv(out, indent, key, v);
    }
}
