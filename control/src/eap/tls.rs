//! EAP-TLS (RFC 5216, and RFC 9190 for TLS 1.3) in both roles, over rustls.
//!
//! Both state machines are sans-IO: they take one EAP packet and return the
//! next one. TLS records travel in EAP-TLS frames (Flags: L = length
//! included, M = more fragments, S = start) of at most `max_fragment`
//! bytes; the receiver of a fragment with M set answers with an empty frame
//! and the sender continues. The MSK is the first 64 bytes of the TLS
//! keying-material exporter: label "client EAP encryption" without context
//! for TLS 1.2 (RFC 5216 §2.3), "EXPORTER_EAP_TLS_Key_Material" with the
//! type code as context for TLS 1.3 (RFC 9190 §2.3).

use std::io::{Read, Write};
use std::sync::Arc;

pub use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, ProtocolVersion, ServerConfig, ServerConnection};
use zeroize::Zeroizing;

use super::Msk;
use super::codec::{Code, Packet, Payload, decode, encode};

/// The EAP Type of EAP-TLS.
pub const EAP_TLS: u8 = 13;

const FLAG_LENGTH: u8 = 0x80;
const FLAG_MORE: u8 = 0x40;
const FLAG_START: u8 = 0x20;

/// Largest TLS message accepted in fragments: a certificate chain fits,
/// a peer cannot make us buffer without bound.
pub const MAX_TLS_MESSAGE: usize = 64 * 1024;
/// TLS bytes per EAP-TLS frame by default: with the EAP and IKE headers an
/// IKE_AUTH message stays well under 1280 bytes.
pub const DEFAULT_MAX_FRAGMENT: usize = 1000;

/// Why an EAP-TLS exchange failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EapTlsError {
    #[error("malformed EAP packet: {0}")]
    Malformed(String),
    #[error("unexpected EAP packet: {0}")]
    Unexpected(String),
    #[error("TLS message of {0} bytes is larger than {MAX_TLS_MESSAGE}")]
    TooLarge(usize),
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("TLS I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("the peer ended EAP with {0:?} before TLS completed")]
    Incomplete(Code),
    #[error("EAP-TLS credentials: {0}")]
    Credentials(String),
}

/// A TLS protocol version EAP-TLS may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    V1_2,
    V1_3,
}

/// A certificate chain (end entity first, DER) and its private key
/// (PKCS#8, SEC1 or PKCS#1, DER).
pub struct TlsCredentials {
    pub chain: Vec<Vec<u8>>,
    pub key: Zeroizing<Vec<u8>>,
}

impl TlsCredentials {
    /// Our chain as loaded for IKE and the contents of our key file (PEM
    /// with one private-key block, or DER), as a connection's `cert` and
    /// `key` give them.
    pub fn from_files(chain: &[crate::pki::Certificate], key_file: &[u8]) -> Result<Self, EapTlsError> {
        use crate::pki::der;
        let key = if der::looks_like_pem(key_file) {
            der::parse_pem(key_file)
                .map_err(|e| EapTlsError::Credentials(format!("private key: {e}")))?
                .into_iter()
                .find(|b| matches!(b.label.as_str(), "PRIVATE KEY" | "EC PRIVATE KEY" | "RSA PRIVATE KEY"))
                .map(|b| b.der)
                .ok_or_else(|| EapTlsError::Credentials("private key: no private key block".into()))?
        } else {
            Zeroizing::new(key_file.to_vec())
        };
        Ok(TlsCredentials {
            chain: chain.iter().map(|c| c.der().to_vec()).collect(),
            key,
        })
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn versions(v: &[TlsVersion]) -> Vec<&'static rustls::SupportedProtocolVersion> {
    v.iter()
        .map(|v| match v {
            TlsVersion::V1_2 => &rustls::version::TLS12,
            TlsVersion::V1_3 => &rustls::version::TLS13,
        })
        .collect()
}

fn roots(cas: &[Vec<u8>]) -> Result<Arc<rustls::RootCertStore>, EapTlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in cas {
        roots
            .add(rustls::pki_types::CertificateDer::from(ca.clone()))
            .map_err(|e| EapTlsError::Credentials(format!("CA certificate: {e}")))?;
    }
    Ok(Arc::new(roots))
}

fn chain_and_key(
    c: &TlsCredentials,
) -> Result<
    (
        Vec<rustls::pki_types::CertificateDer<'static>>,
        rustls::pki_types::PrivateKeyDer<'static>,
    ),
    EapTlsError,
> {
    let key = rustls::pki_types::PrivateKeyDer::try_from(c.key.to_vec())
        .map_err(|e| EapTlsError::Credentials(format!("private key: {e}")))?;
    let chain = c
        .chain
        .iter()
        .map(|d| rustls::pki_types::CertificateDer::from(d.clone()))
        .collect();
    Ok((chain, key))
}

/// The peer's TLS configuration: our certificate, the CAs the
/// authenticator's certificate must chain to, the versions allowed.
pub fn peer_config(
    ours: &TlsCredentials,
    cas: &[Vec<u8>],
    allowed: &[TlsVersion],
) -> Result<Arc<ClientConfig>, EapTlsError> {
    let (chain, key) = chain_and_key(ours)?;
    let config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&versions(allowed))?
        .with_root_certificates(roots(cas)?)
        .with_client_auth_cert(chain, key)?;
    Ok(Arc::new(config))
}

/// The authenticator's TLS configuration: our certificate, the CAs peers'
/// certificates must chain to (a certificate is required), the versions
/// allowed. No session tickets: every EAP-TLS run authenticates afresh.
pub fn server_config(
    ours: &TlsCredentials,
    cas: &[Vec<u8>],
    allowed: &[TlsVersion],
) -> Result<Arc<ServerConfig>, EapTlsError> {
    let (chain, key) = chain_and_key(ours)?;
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots(cas)?, provider())
        .build()
        .map_err(|e| EapTlsError::Credentials(format!("client verifier: {e}")))?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&versions(allowed))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// A gateway's EAP-TLS setup, built once when the configuration is loaded:
/// the rustls configuration and a digest of the certificates it was built
/// from, by which a reload tells whether it changed.
pub struct TlsServerSetup {
    config: Arc<ServerConfig>,
    fingerprint: [u8; 32],
    max_fragment: usize,
}

impl TlsServerSetup {
    /// The setup with our chain and key, the CAs client certificates must
    /// chain to, and the TLS versions allowed.
    pub fn new(ours: &TlsCredentials, cas: &[Vec<u8>], allowed: &[TlsVersion]) -> Result<Self, EapTlsError> {
        if cas.is_empty() {
            return Err(EapTlsError::Credentials(
                "no CA to verify client certificates with".into(),
            ));
        }
        let config = server_config(ours, cas, allowed)?;
        let mut digest = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        for der in ours.chain.iter().chain(cas) {
            digest.update(&(der.len() as u64).to_be_bytes());
            digest.update(der);
        }
        for v in allowed {
            digest.update(&[*v as u8]);
        }
        let mut fingerprint = [0u8; 32];
        fingerprint.copy_from_slice(digest.finish().as_ref());
        Ok(TlsServerSetup {
            config,
            fingerprint,
            max_fragment: DEFAULT_MAX_FRAGMENT,
        })
    }

    /// A new authenticator session.
    pub fn session(&self) -> Result<EapTlsServer, EapTlsError> {
        EapTlsServer::new(self.config.clone(), self.max_fragment)
    }
}

impl PartialEq for TlsServerSetup {
    fn eq(&self, other: &Self) -> bool {
        self.fingerprint == other.fingerprint
    }
}

impl Eq for TlsServerSetup {}

impl std::fmt::Debug for TlsServerSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "TlsServerSetup(sha256:{:02x}{:02x}{:02x}{:02x}..)",
            self.fingerprint[0], self.fingerprint[1], self.fingerprint[2], self.fingerprint[3]
        )
    }
}

/// A client's EAP-TLS setup, built once when the configuration is loaded:
/// our certificate, the CAs and name the gateway's TLS certificate must
/// chain to and carry, and a digest of them for reloads.
pub struct TlsClientSetup {
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
    fingerprint: [u8; 32],
}

impl TlsClientSetup {
    /// The setup with our chain and key, the CAs and the DNS name of the
    /// gateway's certificate, and the TLS versions allowed.
    pub fn new(
        ours: &TlsCredentials,
        cas: &[Vec<u8>],
        server_name: &str,
        allowed: &[TlsVersion],
    ) -> Result<Self, EapTlsError> {
        let name = ServerName::try_from(server_name.to_string())
            .map_err(|e| EapTlsError::Credentials(format!("server name '{server_name}': {e}")))?;
        let config = peer_config(ours, cas, allowed)?;
        let mut digest = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        for der in ours.chain.iter().chain(cas) {
            digest.update(&(der.len() as u64).to_be_bytes());
            digest.update(der);
        }
        digest.update(server_name.as_bytes());
        let mut fingerprint = [0u8; 32];
        fingerprint.copy_from_slice(digest.finish().as_ref());
        Ok(TlsClientSetup {
            config,
            server_name: name,
            fingerprint,
        })
    }

    /// A new peer session.
    pub fn session(&self) -> Result<EapTlsPeer, EapTlsError> {
        EapTlsPeer::new(self.config.clone(), self.server_name.clone(), DEFAULT_MAX_FRAGMENT)
    }
}

impl PartialEq for TlsClientSetup {
    fn eq(&self, other: &Self) -> bool {
        self.fingerprint == other.fingerprint
    }
}

impl std::fmt::Debug for TlsClientSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "TlsClientSetup({:?}, sha256:{:02x}{:02x}{:02x}{:02x}..)",
            self.server_name, self.fingerprint[0], self.fingerprint[1], self.fingerprint[2], self.fingerprint[3]
        )
    }
}

/// One EAP-TLS frame, decoded.
struct Frame<'a> {
    flags: u8,
    /// The TLS Message Length, when the L flag is set.
    total: Option<usize>,
    data: &'a [u8],
}

fn parse_frame(data: &[u8]) -> Result<Frame<'_>, EapTlsError> {
    let Some((&flags, rest)) = data.split_first() else {
        return Err(EapTlsError::Malformed("EAP-TLS without flags".into()));
    };
    if flags & FLAG_LENGTH == 0 {
        return Ok(Frame {
            flags,
            total: None,
            data: rest,
        });
    }
    if rest.len() < 4 {
        return Err(EapTlsError::Malformed("EAP-TLS length flag without length".into()));
    }
    let total = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
    if total > MAX_TLS_MESSAGE {
        return Err(EapTlsError::TooLarge(total));
    }
    Ok(Frame {
        flags,
        total: Some(total),
        data: &rest[4..],
    })
}

/// The TLS bytes of one direction: what is being reassembled from the
/// peer, and what is left to send in fragments.
#[derive(Default)]
struct Framing {
    incoming: Vec<u8>,
    /// The length the peer announced for the message being reassembled.
    announced: Option<usize>,
    outgoing: Vec<u8>,
    sent: usize,
    max_fragment: usize,
}

impl Framing {
    fn new(max_fragment: usize) -> Self {
        Framing {
            max_fragment: max_fragment.max(64),
            ..Framing::default()
        }
    }

    /// Takes a frame's data; `true` when the message is complete. A frame
    /// that does not fit (beyond the bound, beyond or short of the
    /// announced length, another length than announced) changes nothing.
    fn absorb(&mut self, frame: &Frame<'_>) -> Result<bool, EapTlsError> {
        let len = self.incoming.len() + frame.data.len();
        if len > MAX_TLS_MESSAGE {
            return Err(EapTlsError::TooLarge(len));
        }
        let announced = match (self.announced, frame.total) {
            (Some(a), Some(t)) if a != t => {
                return Err(EapTlsError::Malformed(format!(
                    "TLS Message Length {t} after {a} for the same message"
                )));
            }
            (a, t) => a.or(t),
        };
        let last = frame.flags & FLAG_MORE == 0;
        if let Some(a) = announced
            && (len > a || (last && len != a))
        {
            return Err(EapTlsError::Malformed(format!(
                "{len} bytes of a TLS message announced as {a}"
            )));
        }
        self.incoming.extend_from_slice(frame.data);
        self.announced = if last { None } else { announced };
        Ok(last)
    }

    fn pending(&self) -> bool {
        self.sent < self.outgoing.len()
    }

    /// The next frame body (flags, [length], data) of what is left to send.
    fn next_frame(&mut self) -> Vec<u8> {
        let first = self.sent == 0;
        let end = (self.sent + self.max_fragment).min(self.outgoing.len());
        let more = end < self.outgoing.len();
        let mut flags = 0;
        if more {
            flags |= FLAG_MORE;
        }
        if first && more {
            flags |= FLAG_LENGTH;
        }
        let mut body = vec![flags];
        if flags & FLAG_LENGTH != 0 {
            body.extend_from_slice(&(self.outgoing.len() as u32).to_be_bytes());
        }
        body.extend_from_slice(&self.outgoing[self.sent..end]);
        self.sent = end;
        if !self.pending() {
            self.outgoing.clear();
            self.sent = 0;
        }
        body
    }
}

fn eap(code: Code, identifier: u8, body: &[u8]) -> Result<Vec<u8>, EapTlsError> {
    encode(&Packet {
        code,
        identifier,
        payload: Some(Payload::Other {
            eap_type: EAP_TLS,
            data: body,
        }),
    })
    .map_err(|e| EapTlsError::Malformed(e.to_string()))
}

fn tls_data(packet: &[u8], expect: Code) -> Result<(u8, Vec<u8>), EapTlsError> {
    let p = decode(packet).map_err(|e| EapTlsError::Malformed(e.to_string()))?;
    match (p.code, p.payload) {
        (c, Some(Payload::Other { eap_type, data })) if c == expect && eap_type == EAP_TLS => {
            Ok((p.identifier, data.to_vec()))
        }
        (c @ (Code::Success | Code::Failure), _) => Err(EapTlsError::Incomplete(c)),
        (c, other) => Err(EapTlsError::Unexpected(format!("{c:?} with {other:?}"))),
    }
}

/// The MSK of a completed handshake.
fn msk(
    version: Option<ProtocolVersion>,
    export: impl FnOnce(&mut [u8], &[u8], Option<&[u8]>) -> Result<(), rustls::Error>,
) -> Result<Msk, EapTlsError> {
    let mut material = Zeroizing::new([0u8; 128]);
    match version {
        Some(ProtocolVersion::TLSv1_3) => {
            export(&mut material[..], b"EXPORTER_EAP_TLS_Key_Material", Some(&[EAP_TLS]))?
        }
        _ => export(&mut material[..], b"client EAP encryption", None)?,
    }
    let mut msk = Zeroizing::new([0u8; 64]);
    msk.copy_from_slice(&material[..64]);
    Ok(msk)
}

/// What the authenticator does next.
#[derive(Debug)]
pub enum ServerStep {
    /// Send this EAP-Request.
    Request(Vec<u8>),
    /// Authenticated: send this EAP-Success; the peer's certificate chain
    /// (end entity first, verified by the configuration's client verifier).
    Success {
        packet: Vec<u8>,
        msk: Msk,
        peer_certificates: Vec<Vec<u8>>,
    },
}

/// The authenticator (gateway) role of EAP-TLS.
pub struct EapTlsServer {
    conn: ServerConnection,
    framing: Framing,
    identifier: u8,
    started: bool,
    /// The TLS 1.3 commitment byte was written.
    committed: bool,
}

impl EapTlsServer {
    /// A session with `config` (whose client verifier requires a
    /// certificate: EAP-TLS authenticates the peer by it).
    pub fn new(config: Arc<ServerConfig>, max_fragment: usize) -> Result<Self, EapTlsError> {
        Ok(EapTlsServer {
            conn: ServerConnection::new(config)?,
            framing: Framing::new(max_fragment),
            identifier: 0,
            started: false,
            committed: false,
        })
    }

    /// Bytes of a TLS message reassembled so far (bounded by [`MAX_TLS_MESSAGE`]).
    pub fn buffered(&self) -> usize {
        self.framing.incoming.len()
    }

    /// The identifier of the Request the peer must answer next.
    pub(crate) fn identifier(&self) -> u8 {
        self.identifier
    }

    /// The EAP-TLS Start request (after EAP-Identity, with the next identifier).
    pub fn start(&mut self, identifier: u8) -> Result<Vec<u8>, EapTlsError> {
        self.identifier = identifier;
        self.started = true;
        eap(Code::Request, identifier, &[FLAG_START])
    }

    fn request(&mut self, body: &[u8]) -> Result<ServerStep, EapTlsError> {
        self.identifier = self.identifier.wrapping_add(1);
        eap(Code::Request, self.identifier, body).map(ServerStep::Request)
    }

    /// Handles the peer's EAP-Response.
    pub fn handle(&mut self, packet: &[u8]) -> Result<ServerStep, EapTlsError> {
        let (id, data) = tls_data(packet, Code::Response)?;
        if !self.started || id != self.identifier {
            return Err(EapTlsError::Unexpected(format!(
                "response {id} to request {}",
                self.identifier
            )));
        }
        let frame = parse_frame(&data)?;
        if self.framing.pending() {
            if !frame.data.is_empty() {
                return Err(EapTlsError::Unexpected("data while we send fragments".into()));
            }
            let body = self.framing.next_frame();
            return self.request(&body);
        }
        if !frame.data.is_empty() || frame.flags & FLAG_MORE != 0 {
            if !self.framing.absorb(&frame)? {
                return self.request(&[0]);
            }
            let message = std::mem::take(&mut self.framing.incoming);
            let mut rest = &message[..];
            while !rest.is_empty() {
                self.conn.read_tls(&mut rest)?;
                self.conn.process_new_packets()?;
            }
        }
        if !self.conn.is_handshaking() && self.conn.protocol_version() == Some(ProtocolVersion::TLSv1_3) {
            // RFC 9190 §2.5: one byte of application data commits that no
            // further handshake messages follow.
            if !self.committed {
                self.committed = true;
                self.conn.writer().write_all(&[0])?;
            }
        }
        while self.conn.wants_write() {
            self.conn.write_tls(&mut self.framing.outgoing)?;
        }
        if self.framing.pending() {
            let body = self.framing.next_frame();
            return self.request(&body);
        }
        if self.conn.is_handshaking() {
            return Err(EapTlsError::Unexpected("an empty response during the handshake".into()));
        }
        let version = self.conn.protocol_version();
        let conn = &self.conn;
        let msk = msk(version, |out, label, ctx| {
            conn.export_keying_material(out, label, ctx).map(drop)
        })?;
        let peer_certificates = self
            .conn
            .peer_certificates()
            .map(|c| c.iter().map(|c| c.as_ref().to_vec()).collect())
            .unwrap_or_default();
        self.identifier = self.identifier.wrapping_add(1);
        let packet = encode(&Packet {
            code: Code::Success,
            identifier: self.identifier,
            payload: None,
        })
        .map_err(|e| EapTlsError::Malformed(e.to_string()))?;
        Ok(ServerStep::Success {
            packet,
            msk,
            peer_certificates,
        })
    }
}

/// What the peer does next.
#[derive(Debug)]
pub enum PeerStep {
    /// Send this EAP-Response.
    Response(Vec<u8>),
    /// The authenticator sent EAP-Success after a completed handshake.
    Success(Msk),
}

/// The peer (client) role of EAP-TLS.
pub struct EapTlsPeer {
    conn: ClientConnection,
    framing: Framing,
    /// TLS 1.3: the server's commitment byte arrived.
    committed: bool,
}

impl EapTlsPeer {
    /// A session with `config` (our certificate and the CAs the
    /// authenticator's certificate must chain to) towards `server_name`.
    pub fn new(
        config: Arc<ClientConfig>,
        server_name: ServerName<'static>,
        max_fragment: usize,
    ) -> Result<Self, EapTlsError> {
        Ok(EapTlsPeer {
            conn: ClientConnection::new(config, server_name)?,
            framing: Framing::new(max_fragment),
            committed: false,
        })
    }

    /// Bytes of a TLS message reassembled so far (bounded by [`MAX_TLS_MESSAGE`]).
    pub fn buffered(&self) -> usize {
        self.framing.incoming.len()
    }

    fn response(&self, identifier: u8, body: &[u8]) -> Result<PeerStep, EapTlsError> {
        eap(Code::Response, identifier, body).map(PeerStep::Response)
    }

    /// Handles the authenticator's EAP-Request, or its EAP-Success.
    pub fn handle(&mut self, packet: &[u8]) -> Result<PeerStep, EapTlsError> {
        let (id, data) = match tls_data(packet, Code::Request) {
            Ok(x) => x,
            Err(EapTlsError::Incomplete(Code::Success)) => return self.finish(),
            Err(e) => return Err(e),
        };
        let frame = parse_frame(&data)?;
        if frame.flags & FLAG_START != 0 {
            if self.conn.is_handshaking() && !self.framing.pending() && self.framing.incoming.is_empty() {
                while self.conn.wants_write() {
                    self.conn.write_tls(&mut self.framing.outgoing)?;
                }
                let body = self.framing.next_frame();
                return self.response(id, &body);
            }
            return Err(EapTlsError::Unexpected("a second EAP-TLS start".into()));
        }
        if self.framing.pending() {
            if !frame.data.is_empty() {
                return Err(EapTlsError::Unexpected("data while we send fragments".into()));
            }
            let body = self.framing.next_frame();
            return self.response(id, &body);
        }
        if !self.framing.absorb(&frame)? {
            return self.response(id, &[0]);
        }
        let message = std::mem::take(&mut self.framing.incoming);
        let mut rest = &message[..];
        while !rest.is_empty() {
            self.conn.read_tls(&mut rest)?;
            self.conn.process_new_packets()?;
        }
        let mut app = Vec::new();
        match self.conn.reader().read_to_end(&mut app) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e.into()),
        }
        if !app.is_empty() {
            if app != [0] {
                return Err(EapTlsError::Unexpected(
                    "application data other than the commitment".into(),
                ));
            }
            self.committed = true;
        }
        while self.conn.wants_write() {
            self.conn.write_tls(&mut self.framing.outgoing)?;
        }
        let body = if self.framing.pending() {
            self.framing.next_frame()
        } else {
            vec![0]
        };
        self.response(id, &body)
    }

    fn finish(&mut self) -> Result<PeerStep, EapTlsError> {
        let version = self.conn.protocol_version();
        let tls13 = version == Some(ProtocolVersion::TLSv1_3);
        if self.conn.is_handshaking() || (tls13 && !self.committed) {
            return Err(EapTlsError::Incomplete(Code::Success));
        }
        let conn = &self.conn;
        msk(version, |out, label, ctx| {
            conn.export_keying_material(out, label, ctx).map(drop)
        })
        .map(PeerStep::Success)
    }
}
