//! Certificates for the EAP-TLS tests, generated in memory: a CA with a
//! server and a client certificate, and a client certificate of another CA.

use control::eap::tls::TlsCredentials;
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use zeroize::Zeroizing;

pub struct Pki {
    pub ca: CertificateDer<'static>,
    pub server: (CertificateDer<'static>, PrivateKeyDer<'static>),
    pub client: (CertificateDer<'static>, PrivateKeyDer<'static>),
    pub stranger: (CertificateDer<'static>, PrivateKeyDer<'static>),
}

fn ca(name: &str) -> (CertificateDer<'static>, Issuer<'static, KeyPair>) {
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
    p.distinguished_name.push(DnType::CommonName, name);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let key = KeyPair::generate().expect("key");
    let cert = p.self_signed(&key).expect("CA");
    (cert.der().clone(), Issuer::new(p, key))
}

fn leaf(
    issuer: &Issuer<'_, KeyPair>,
    name: &str,
    usage: ExtendedKeyUsagePurpose,
) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
    let mut p = CertificateParams::new(vec![name.to_string()]).expect("params");
    p.distinguished_name.push(DnType::CommonName, name);
    p.extended_key_usages = vec![usage];
    let key = KeyPair::generate().expect("key");
    let cert = p.signed_by(&key, issuer).expect("leaf");
    (
        cert.der().clone(),
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    )
}

pub fn pki() -> Pki {
    let (ca_der, issuer) = ca("EAP test CA");
    let (_, other) = ca("another CA");
    Pki {
        ca: ca_der,
        server: leaf(&issuer, "radius.example.org", ExtendedKeyUsagePurpose::ServerAuth),
        client: leaf(&issuer, "carol.example.org", ExtendedKeyUsagePurpose::ClientAuth),
        stranger: leaf(&other, "mallory.example.org", ExtendedKeyUsagePurpose::ClientAuth),
    }
}

pub fn credentials(c: &(CertificateDer<'static>, PrivateKeyDer<'static>)) -> TlsCredentials {
    TlsCredentials {
        chain: vec![c.0.to_vec()],
        key: Zeroizing::new(c.1.secret_der().to_vec()),
    }
}
