//! Certificate hierarchies made with strongSwan's `pki` tool, in a temp dir.
//!
//! Every key and certificate is written both as DER and as PEM so that ironsa can
//! load the very files charon uses.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::util::{HarnessError, Result, io_err, run_bounded};

/// Key algorithm of a generated key pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    /// ECDSA on NIST P-256.
    EcdsaP256,
    /// ECDSA on NIST P-384.
    EcdsaP384,
    /// RSA with the given modulus size in bits.
    Rsa(u32),
    /// Ed25519.
    Ed25519,
}

impl KeyType {
    fn gen_args(self) -> Vec<String> {
        match self {
            Self::EcdsaP256 => vec!["--type".into(), "ecdsa".into(), "--size".into(), "256".into()],
            Self::EcdsaP384 => vec!["--type".into(), "ecdsa".into(), "--size".into(), "384".into()],
            Self::Rsa(bits) => vec!["--type".into(), "rsa".into(), "--size".into(), bits.to_string()],
            Self::Ed25519 => vec!["--type".into(), "ed25519".into()],
        }
    }

    /// PEM label of the key encoding `pki --gen` produces.
    pub fn pem_label(self) -> &'static str {
        match self {
            Self::EcdsaP256 | Self::EcdsaP384 => "EC PRIVATE KEY",
            Self::Rsa(_) => "RSA PRIVATE KEY",
            Self::Ed25519 => "PRIVATE KEY",
        }
    }

    /// swanctl sub-directory that loads this key type.
    pub fn swanctl_dir(self) -> &'static str {
        match self {
            Self::EcdsaP256 | Self::EcdsaP384 => "ecdsa",
            Self::Rsa(_) => "rsa",
            Self::Ed25519 => "pkcs8",
        }
    }
}

/// A subjectAltName.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum San {
    /// rfc822Name.
    Email(String),
    /// dNSName.
    Dns(String),
    /// iPAddress.
    Ip(IpAddr),
}

impl San {
    fn arg(&self) -> String {
        match self {
            Self::Email(e) => format!("email:{e}"),
            Self::Dns(d) => format!("dns:{d}"),
            Self::Ip(ip) => ip.to_string(),
        }
    }

    /// The identity string strongSwan matches against this SAN.
    pub fn id(&self) -> String {
        match self {
            Self::Email(e) => e.clone(),
            Self::Dns(d) => d.clone(),
            Self::Ip(ip) => ip.to_string(),
        }
    }
}

/// A key pair and its certificate, as files.
#[derive(Debug, Clone)]
pub struct CertFiles {
    /// Short name (file stem).
    pub name: String,
    /// Key algorithm.
    pub key_type: KeyType,
    /// Subject DN, strongSwan syntax (`C=CH, O=..., CN=...`).
    pub dn: String,
    /// SANs in the certificate.
    pub sans: Vec<San>,
    /// Private key, DER.
    pub key_der: PathBuf,
    /// Private key, PEM.
    pub key_pem: PathBuf,
    /// Certificate, DER.
    pub cert_der: PathBuf,
    /// Certificate, PEM.
    pub cert_pem: PathBuf,
    /// Whether this is a CA certificate.
    pub is_ca: bool,
}

/// A `pki` workspace in a temporary directory.
pub struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    /// A new empty workspace.
    pub fn new() -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("ironsa-pki-")
            .tempdir()
            .map_err(io_err("pki tempdir"))?;
        Ok(Self { dir })
    }

    /// The directory holding all files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn pki(&self, args: &[String]) -> Result<Vec<u8>> {
        Ok(run_bounded("pki", args, &[], Duration::from_secs(60))?.stdout)
    }

    fn write(&self, file: &str, bytes: &[u8]) -> Result<PathBuf> {
        let path = self.dir.path().join(file);
        std::fs::write(&path, bytes).map_err(io_err(format!("write {}", path.display())))?;
        Ok(path)
    }

    fn gen_key(&self, name: &str, key_type: KeyType) -> Result<(PathBuf, PathBuf)> {
        let mut args = vec!["--gen".to_string()];
        args.extend(key_type.gen_args());
        args.extend(["--outform".into(), "der".into()]);
        let der = self.pki(&args)?;
        if der.is_empty() {
            return Err(HarnessError::Parse(format!("pki --gen produced no key for {name}")));
        }
        let der_path = self.write(&format!("{name}.key.der"), &der)?;
        let pem_path = self.write(&format!("{name}.key.pem"), pem(key_type.pem_label(), &der).as_bytes())?;
        Ok((der_path, pem_path))
    }

    fn write_cert(&self, name: &str, der: &[u8]) -> Result<(PathBuf, PathBuf)> {
        if der.is_empty() {
            return Err(HarnessError::Parse(format!("pki produced no certificate for {name}")));
        }
        let der_path = self.write(&format!("{name}.crt.der"), der)?;
        let pem_path = self.write(&format!("{name}.crt.pem"), pem("CERTIFICATE", der).as_bytes())?;
        Ok((der_path, pem_path))
    }

    /// A self-signed root CA with DN `C=CH, O=ironsa test, CN=<name>`.
    pub fn root_ca(&self, name: &str, key_type: KeyType) -> Result<CertFiles> {
        let (key_der, key_pem) = self.gen_key(name, key_type)?;
        let dn = format!("C=CH, O=ironsa test, CN={name}");
        let args = vec![
            "--self".into(),
            "--ca".into(),
            "--in".into(),
            key_der.to_string_lossy().into_owned(),
            "--type".into(),
            "priv".into(),
            "--dn".into(),
            dn.clone(),
            "--lifetime".into(),
            "30".into(),
            "--outform".into(),
            "der".into(),
        ];
        let der = self.pki(&args)?;
        let (cert_der, cert_pem) = self.write_cert(name, &der)?;
        Ok(CertFiles {
            name: name.into(),
            key_type,
            dn,
            sans: Vec::new(),
            key_der,
            key_pem,
            cert_der,
            cert_pem,
            is_ca: true,
        })
    }

    /// A certificate for a fresh key, issued by `issuer`; a CA if `is_ca`.
    pub fn issue(
        &self,
        issuer: &CertFiles,
        name: &str,
        key_type: KeyType,
        sans: &[San],
        is_ca: bool,
    ) -> Result<CertFiles> {
        let (key_der, key_pem) = self.gen_key(name, key_type)?;
        let dn = format!("C=CH, O=ironsa test, CN={name}");
        let mut args = vec![
            "--issue".into(),
            "--cacert".into(),
            issuer.cert_der.to_string_lossy().into_owned(),
            "--cakey".into(),
            issuer.key_der.to_string_lossy().into_owned(),
            "--in".into(),
            key_der.to_string_lossy().into_owned(),
            "--type".into(),
            "priv".into(),
            "--dn".into(),
            dn.clone(),
            "--lifetime".into(),
            "30".into(),
            "--outform".into(),
            "der".into(),
        ];
        if is_ca {
            args.push("--ca".into());
        }
        for san in sans {
            args.extend(["--san".into(), san.arg()]);
        }
        let der = self.pki(&args)?;
        let (cert_der, cert_pem) = self.write_cert(name, &der)?;
        Ok(CertFiles {
            name: name.into(),
            key_type,
            dn,
            sans: sans.to_vec(),
            key_der,
            key_pem,
            cert_der,
            cert_pem,
            is_ca,
        })
    }

    /// An end-entity certificate issued by `issuer`.
    pub fn end_entity(&self, issuer: &CertFiles, name: &str, key_type: KeyType, sans: &[San]) -> Result<CertFiles> {
        self.issue(issuer, name, key_type, sans, false)
    }

    /// `depth` intermediate CAs below `root`, each issued by the previous one
    /// (`<prefix>-1` ... `<prefix>-depth`); the last one issues end entities.
    pub fn intermediate_chain(
        &self,
        root: &CertFiles,
        prefix: &str,
        depth: usize,
        key_type: KeyType,
    ) -> Result<Vec<CertFiles>> {
        let mut chain: Vec<CertFiles> = Vec::with_capacity(depth);
        for n in 1..=depth {
            let issuer = chain.last().unwrap_or(root);
            let ca = self.issue(issuer, &format!("{prefix}-{n}"), key_type, &[], true)?;
            chain.push(ca);
        }
        Ok(chain)
    }

    /// A hierarchy whose certificates alone exceed ~1500 bytes in IKE_AUTH (so
    /// IKE fragmentation kicks in when the intermediates are sent): RSA-3072 root,
    /// `depth` RSA-3072 intermediates and an RSA-3072 end entity with the given
    /// SANs. Returns (root, intermediates, end entity). RSA-3072 rather than 4096
    /// keeps key generation at ~1 s per key on this machine.
    pub fn big_chain(
        &self,
        prefix: &str,
        depth: usize,
        sans: &[San],
    ) -> Result<(CertFiles, Vec<CertFiles>, CertFiles)> {
        self.big_chain_with(prefix, depth, KeyType::Rsa(3072), sans)
    }

    /// [`Pki::big_chain`] with a chosen key type for every certificate.
    pub fn big_chain_with(
        &self,
        prefix: &str,
        depth: usize,
        key_type: KeyType,
        sans: &[San],
    ) -> Result<(CertFiles, Vec<CertFiles>, CertFiles)> {
        let root = self.root_ca(&format!("{prefix}-root"), key_type)?;
        let chain = self.intermediate_chain(&root, &format!("{prefix}-int"), depth, key_type)?;
        let issuer = chain.last().unwrap_or(&root);
        let ee = self.end_entity(issuer, &format!("{prefix}-ee"), key_type, sans)?;
        Ok((root, chain, ee))
    }
}

/// PEM encoding (RFC 7468) of DER bytes.
pub fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Standard base64 with padding.
pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].iter().enumerate() {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> shift) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
