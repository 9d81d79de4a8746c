//! The configuration model of the IKE core: connections, identities,
//! authentication and selectors. Parsing files into it lives in the daemon,
//! which owns file/line error reporting.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::crypto::auth::PresharedKey;
use crate::eap::Method;

use crate::pki::{Certificate, Identity, PrivateKey, TrustStore};
use crate::proposal::{EspProposal, IkeProposal};
use crate::wire::ikev2::{IdType, Identification, TrafficSelector};

/// Our certificate, its chain and private key.
pub struct LocalCert {
    /// The private key matching `chain[0]`.
    pub key: PrivateKey,
    /// Our end-entity certificate first, then intermediates to send.
    pub chain: Vec<Certificate>,
}

/// What an IKEv1 client answers a gateway's XAUTH request with.
pub struct XauthCredentials {
    /// The user name.
    pub user: String,
    /// The password, zeroized on drop.
    pub password: zeroize::Zeroizing<String>,
}

impl std::fmt::Debug for XauthCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XauthCredentials")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// How this side proves its identity (`local_auth`), and how it checks the
/// peer's (`remote_auth`).
#[derive(Clone)]
pub enum AuthConfig {
    /// Pre-shared key (the same secret on both sides).
    Psk(Arc<PresharedKey>),
    /// Local side: sign with this certificate's key.
    Cert(Arc<LocalCert>),
    /// Remote side: the peer signs with a certificate chaining to one of these CAs.
    PubKey(Arc<TrustStore>),
    /// Remote side: the peer authenticates with EAP inside IKE_AUTH (RFC 7296 §2.16).
    Eap(Arc<EapAuth>),
    /// Local side: we authenticate with EAP as the client of the peer's
    /// EAP server (RFC 7296 §2.16); the peer proves itself first.
    EapClient(Arc<EapClientAuth>),
}

/// How we authenticate to a gateway with EAP.
pub struct EapClientAuth {
    /// Our EAP identity (`eap_id`), sent in EAP-Identity and as the
    /// MSCHAPv2 Name.
    pub identity: Vec<u8>,
    /// Our password.
    pub password: zeroize::Zeroizing<String>,
    /// Methods we agree to, in order of preference (a Nak names them).
    pub methods: Vec<Method>,
    /// EAP-TLS with our certificate instead of a password method.
    pub tls: Option<Arc<crate::eap::tls::TlsClientSetup>>,
}

impl EapClientAuth {
    /// The method name for logs (`eap-mschapv2`, `eap-md5`, `eap-tls`).
    pub fn name(&self) -> &'static str {
        if self.tls.is_some() {
            return "eap-tls";
        }
        match self.methods.first() {
            Some(Method::Md5) => "eap-md5",
            _ => "eap-mschapv2",
        }
    }
}

impl PartialEq for EapClientAuth {
    fn eq(&self, other: &Self) -> bool {
        self.identity == other.identity
            && self.methods == other.methods
            && self.tls == other.tls
            && crate::eap::ct_eq(self.password.as_bytes(), other.password.as_bytes())
    }
}

impl std::fmt::Debug for EapClientAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EapClientAuth")
            .field("identity", &String::from_utf8_lossy(&self.identity))
            .field("methods", &self.methods)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

/// Where a connection's EAP server side runs.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EapBackend {
    /// In the IKE SA, against the context's local user store, offering
    /// these methods in order of preference.
    Local(Vec<Method>),
    /// Relayed to the driver ([`crate::ike_sa::Event::EapRelay`]), which
    /// answers later (a RADIUS server): the IKE SA never waits on it.
    Relay,
    /// EAP-TLS in the IKE SA (RFC 5216, RFC 9190): the peer proves a
    /// certificate that chains to the setup's CAs.
    Tls(Arc<crate::eap::tls::TlsServerSetup>),
}

/// Which identity EAP authenticates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EapIdentity {
    /// The IKE identity (IDi) is the EAP identity: no EAP-Identity round.
    Ike,
    /// Ask the client with EAP-Identity (`eap_id = "%any"`).
    Ask,
}

/// How a peer authenticates with EAP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EapAuth {
    /// Where the EAP server runs.
    pub backend: EapBackend,
    /// Which identity EAP authenticates.
    pub eap_id: EapIdentity,
    /// Whether a client that offers EAP_ONLY_AUTHENTICATION (RFC 5998) may
    /// skip our certificate or PSK AUTH: only methods that produce an MSK
    /// then authenticate the gateway.
    pub eap_only: bool,
}

impl EapAuth {
    /// The method name for logs and metrics (`eap-mschapv2`, `eap-md5`,
    /// `eap-radius`, `eap-tls`).
    pub fn name(&self) -> &'static str {
        match &self.backend {
            EapBackend::Relay => "eap-radius",
            EapBackend::Tls(_) => "eap-tls",
            EapBackend::Local(m) => match m.first() {
                Some(Method::Md5) => "eap-md5",
                _ => "eap-mschapv2",
            },
        }
    }
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthConfig::Psk(k) => {
                // A fingerprint, so that a changed key makes a changed config (reload) without showing it.
                let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, k.secret());
                write!(
                    f,
                    "Psk(sha256:{:02x}{:02x}{:02x}{:02x}..)",
                    d.as_ref()[0],
                    d.as_ref()[1],
                    d.as_ref()[2],
                    d.as_ref()[3]
                )
            }
            AuthConfig::Cert(c) => write!(
                f,
                "Cert({})",
                c.chain.first().map(|c| c.subject().to_string()).unwrap_or_default()
            ),
            AuthConfig::PubKey(t) => write!(f, "PubKey({} CAs)", t.certificates().len()),
            AuthConfig::Eap(e) => write!(f, "Eap({e:?})"),
            AuthConfig::EapClient(e) => write!(f, "EapClient({e:?})"),
        }
    }
}

/// An identity as configured: a concrete ID, a pattern, or any ID (`%any`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdentityMatch {
    /// Accept any identity the peer presents.
    Any,
    /// Accept exactly this identity.
    Exact(Identification),
    /// Accept identities matching this pattern (wildcards, DNs compared semantically).
    Pattern(Identity),
}

impl std::fmt::Display for IdentityMatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IdentityMatch::Any => f.write_str("%any"),
            IdentityMatch::Exact(id) => f.write_str(&display_identity(id)),
            IdentityMatch::Pattern(p) => write!(f, "{p}"),
        }
    }
}

impl IdentityMatch {
    /// Parses `%any`, a concrete identity, or a pattern such as `*@example.com` or `C=CH, O=x, CN=*`.
    pub fn parse(s: &str) -> Self {
        let s = s.trim();
        if s == "%any" || s.is_empty() {
            return IdentityMatch::Any;
        }
        match Identity::parse(s) {
            Ok(Identity::Any) => IdentityMatch::Any,
            Ok(id) if id.is_wildcard() || matches!(id, Identity::Dn(_)) => IdentityMatch::Pattern(id),
            Ok(id) => id
                .to_wire()
                .map(IdentityMatch::Exact)
                .unwrap_or(IdentityMatch::Pattern(id)),
            Err(_) => IdentityMatch::Exact(parse_identity(s)),
        }
    }

    /// True if `presented` is acceptable.
    pub fn matches(&self, presented: &Identification) -> bool {
        match self {
            IdentityMatch::Any => true,
            IdentityMatch::Exact(id) => id == presented,
            IdentityMatch::Pattern(p) => p.matches(presented),
        }
    }
}

/// Parses a strongSwan-style identity string into a wire identification:
/// `a@b` is an RFC 822 address, `@host` or a name an FQDN, an address an IP ID,
/// `C=.., O=.., CN=..` a distinguished name.
pub fn parse_identity(s: &str) -> Identification {
    let s = s.trim();
    if s.contains('=') {
        if let Ok(id) = Identity::parse(s).and_then(|i| i.to_wire()) {
            return id;
        }
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return match ip {
            IpAddr::V4(v4) => Identification {
                id_type: IdType::IPV4_ADDR,
                data: v4.octets().to_vec(),
            },
            IpAddr::V6(v6) => Identification {
                id_type: IdType::IPV6_ADDR,
                data: v6.octets().to_vec(),
            },
        };
    }
    if let Some(fqdn) = s.strip_prefix('@') {
        return Identification {
            id_type: IdType::FQDN,
            data: fqdn.as_bytes().to_vec(),
        };
    }
    if s.contains('@') {
        return Identification {
            id_type: IdType::RFC822_ADDR,
            data: s.as_bytes().to_vec(),
        };
    }
    Identification {
        id_type: IdType::FQDN,
        data: s.as_bytes().to_vec(),
    }
}

/// Renders an identification for logs and listings.
pub fn display_identity(id: &Identification) -> String {
    match id.id_type {
        IdType::IPV4_ADDR if id.data.len() == 4 => {
            IpAddr::from(<[u8; 4]>::try_from(id.data.as_slice()).unwrap_or_default()).to_string()
        }
        IdType::IPV6_ADDR if id.data.len() == 16 => {
            IpAddr::from(<[u8; 16]>::try_from(id.data.as_slice()).unwrap_or_default()).to_string()
        }
        IdType::FQDN | IdType::RFC822_ADDR => String::from_utf8_lossy(&id.data).into_owned(),
        IdType::DER_ASN1_DN => Identity::from_wire(id)
            .map(|i| i.to_string())
            .unwrap_or_else(|_| "<bad DN>".into()),
        _ => format!(
            "{:?}:{}",
            id.id_type,
            id.data.iter().map(|b| format!("{b:02x}")).collect::<String>()
        ),
    }
}

/// Tunnel or transport mode of a CHILD_SA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpsecMode {
    /// Tunnel mode (the default).
    Tunnel,
    /// Transport mode (USE_TRANSPORT_MODE).
    Transport,
}

/// Lifetimes of an SA: rekey after `rekey` minus up to `jitter`; hard expiry
/// (delete) at `rekey + over`. `rekey` zero disables rekeying.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lifetime {
    /// Time until the soft lifetime (rekey).
    pub rekey: Duration,
    /// Maximum random reduction of `rekey`, so peers do not rekey together.
    pub jitter: Duration,
    /// Time after `rekey` until the hard lifetime.
    pub over: Duration,
}

impl Lifetime {
    /// A lifetime with strongSwan's default shape: jitter 10%, over 10%.
    pub fn rekey_after(rekey: Duration) -> Self {
        Self {
            rekey,
            jitter: rekey / 10,
            over: rekey / 10,
        }
    }
}

/// A CHILD_SA template of a connection.
#[derive(Clone, Debug)]
pub struct ChildConfig {
    /// Name of the child (for operators and swanctl-like listings).
    pub name: String,
    /// Acceptable ESP proposals in preference order.
    pub esp_proposals: Vec<EspProposal>,
    /// Our side's traffic selectors.
    ///
    /// Empty means `dynamic`: our virtual IPs when we have any, else our
    /// address (the same for `remote_ts` and the peer).
    pub local_ts: Vec<TrafficSelector>,
    /// The peer's side's traffic selectors.
    pub remote_ts: Vec<TrafficSelector>,
    /// Tunnel or transport mode.
    pub mode: IpsecMode,
    /// Rekey schedule.
    pub lifetime: Lifetime,
}

/// The IKE versions a connection speaks (`version = 1`, `2` or `"any"`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IkeVersions {
    /// IKEv1 only (legacy peers).
    V1,
    /// IKEv2 only (the default).
    #[default]
    V2,
    /// Either: a responder answers both on one listener; an initiator uses IKEv2.
    Any,
}

impl IkeVersions {
    /// True when IKEv1 peers may use the connection.
    pub fn allows_v1(self) -> bool {
        matches!(self, IkeVersions::V1 | IkeVersions::Any)
    }
}

/// A postquantum preshared key (RFC 8784) of a connection: mixed into SK_d,
/// SK_pi and SK_pr after IKE_SA_INIT, so that recorded traffic stays safe
/// even from an attacker who later breaks every key exchange.
#[derive(Clone)]
pub struct PpkConfig {
    /// PPK_ID, as both peers name the key.
    pub id: Vec<u8>,
    /// The key.
    pub key: Arc<zeroize::Zeroizing<Vec<u8>>>,
    /// Refuse peers that do not use it; otherwise a peer without it is
    /// authenticated without it (NO_PPK_AUTH).
    pub required: bool,
}

impl std::fmt::Debug for PpkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PpkConfig")
            .field("id", &String::from_utf8_lossy(&self.id))
            .field("required", &self.required)
            .finish_non_exhaustive()
    }
}

/// One connection: what we negotiate with a peer (or a class of peers).
#[derive(Clone, Debug)]
pub struct ConnectionConfig {
    /// Name of the connection.
    pub name: String,
    /// Peer addresses accepted or contacted (`None` = any peer, road warriors).
    pub remote_addrs: Option<Vec<IpAddr>>,
    /// Our addresses for this connection, as strongSwan's `local_addrs`: an
    /// initiator sends from the first one of the peer's family, and a
    /// responder matches the connection only to requests sent to one of
    /// them (`None` = any of ours; initiators take the routed source).
    pub local_addrs: Option<Vec<IpAddr>>,
    /// Our identity.
    pub local_id: Identification,
    /// The identity the peer must present.
    pub remote_id: IdentityMatch,
    /// Our authentication.
    pub local_auth: AuthConfig,
    /// How the peer must authenticate.
    pub remote_auth: AuthConfig,
    /// A second authentication round of the peer after `remote_auth`
    /// (RFC 4739): EAP after a certificate or PSK.
    pub remote_auth2: Option<Arc<EapAuth>>,
    /// Acceptable IKE proposals in preference order.
    pub ike_proposals: Vec<IkeProposal>,
    /// CHILD_SA templates; the first is negotiated with IKE_AUTH.
    pub children: Vec<ChildConfig>,
    /// IKE SA rekey schedule.
    pub ike_lifetime: Lifetime,
    /// Dead-peer-detection interval (liveness check after this much silence).
    pub dpd_delay: Option<Duration>,
    /// Whether we offer and accept IKE fragmentation (RFC 7383).
    pub fragmentation: bool,
    /// Largest IKE datagram we send before fragmenting (IP payload size).
    pub fragment_size: usize,
    /// Send INITIAL_CONTACT in IKE_AUTH when initiating.
    pub initial_contact: bool,
    /// The peer's NAT-T port when it is not the endpoint default (4500).
    pub remote_nat_port: Option<u16>,
    /// Always use UDP encapsulation (RFC 3948) even without a NAT, like
    /// strongSwan's `encap = yes`: our NAT_DETECTION_SOURCE_IP hash is made
    /// not to match, so both sides see a NAT and move IKE and ESP to UDP 4500.
    pub force_udp_encap: bool,
    /// IKEv1: initiate Aggressive Mode and answer it for this connection
    /// (off by default: with a PSK its unencrypted HASH lets an observer
    /// crack the key offline).
    pub aggressive: bool,
    /// Interval of NAT keepalives (RFC 3948 §2.3) while a NAT is in front of
    /// us, so the NAT keeps our mapping through idle periods; `None`: none.
    pub nat_keepalive: Option<Duration>,
    /// Offer and accept MOBIKE (RFC 4555): the peer may move the IKE SA and
    /// its CHILD_SAs to new addresses without a new handshake.
    pub mobike: bool,
    /// Retransmission: initial timeout.
    pub retransmit_timeout: Duration,
    /// Retransmission: number of retransmits before giving up.
    pub retransmit_tries: u32,
    /// Retransmission: backoff base (timeout = base^n * initial).
    pub retransmit_base: f64,
    /// IKE versions this connection speaks.
    pub ike_versions: IkeVersions,
    /// IKEv1: after Main Mode the peer must pass XAUTH (username and
    /// password checked against the context's local users) before Mode
    /// Config and Quick Mode; we are the XAUTH server.
    pub xauth: bool,
    /// IKEv1 client: the username and password we give a gateway's XAUTH
    /// (our proposals then name the XAUTH methods).
    pub xauth_client: Option<Arc<XauthCredentials>>,
    /// IKEv1 gateway: send the virtual IP and DNS in a Mode Config SET
    /// (after XAUTH) instead of waiting for the client's request.
    pub mode_config_push: bool,
    /// Postquantum preshared key (RFC 8784), if the connection uses one.
    pub ppk: Option<PpkConfig>,
    /// Virtual IPs and the attributes that come with them (RFC 7296 §3.15).
    pub virtual_ips: VirtualIpConfig,
}

/// The configuration payload side of a connection: as responder, the pools
/// a peer's virtual IP comes from and what is sent with it; as initiator,
/// the virtual IPs to request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VirtualIpConfig {
    /// Responder: pool names, tried in order for each address family the
    /// peer asks for. Not empty makes a CFG_REQUEST mandatory.
    pub pools: Vec<String>,
    /// Responder: INTERNAL_IP4_DNS / INTERNAL_IP6_DNS servers.
    pub dns: Vec<IpAddr>,
    /// Responder: INTERNAL_IP4_NBNS servers.
    pub nbns: Vec<std::net::Ipv4Addr>,
    /// Responder: INTERNAL_IP4_SUBNET / INTERNAL_IP6_SUBNET networks
    /// reachable through the tunnel, as (network, prefix length).
    pub subnets: Vec<(IpAddr, u8)>,
    /// Initiator: addresses to request; an unspecified one (`0.0.0.0`,
    /// `::`) asks for any address of its family.
    pub request: Vec<IpAddr>,
}

/// Default interval of NAT keepalives: well under the shortest common NAT
/// UDP timeout (30 s).
pub const DEFAULT_NAT_KEEPALIVE: Duration = Duration::from_secs(20);

impl ConnectionConfig {
    /// True if a message from `remote` to our `local` address may belong to
    /// this connection (an unspecified `local`, from a socket that does not
    /// tell the destination, matches any `local_addrs`).
    pub fn matches_addresses(&self, local: IpAddr, remote: IpAddr) -> bool {
        self.remote_addrs.as_ref().is_none_or(|a| a.contains(&remote))
            && (local.is_unspecified() || self.local_addrs.as_ref().is_none_or(|a| a.contains(&local)))
    }

    /// A connection with defaults for everything but names, identities and auth.
    pub fn new(name: &str, local_id: Identification, remote_id: IdentityMatch, psk: &[u8]) -> Self {
        let psk = AuthConfig::Psk(Arc::new(PresharedKey::new(psk)));
        Self {
            name: name.to_string(),
            remote_addrs: None,
            local_addrs: None,
            local_id,
            remote_id,
            local_auth: psk.clone(),
            remote_auth: psk,
            remote_auth2: None,
            ike_proposals: Vec::new(),
            children: Vec::new(),
            ike_lifetime: Lifetime::rekey_after(Duration::from_secs(4 * 3600)),
            dpd_delay: None,
            fragmentation: true,
            fragment_size: 1280,
            initial_contact: true,
            remote_nat_port: None,
            force_udp_encap: false,
            aggressive: false,
            nat_keepalive: Some(DEFAULT_NAT_KEEPALIVE),
            mobike: true,
            retransmit_timeout: Duration::from_secs(4),
            retransmit_tries: 5,
            retransmit_base: 1.8,
            ike_versions: IkeVersions::V2,
            xauth: false,
            xauth_client: None,
            mode_config_push: false,
            ppk: None,
            virtual_ips: VirtualIpConfig::default(),
        }
    }
}
