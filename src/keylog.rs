//! The debugging key log: the keys of every IKE and ESP SA written for
//! Wireshark, in files only their owner can read.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use control::crypto::{EncrAlg, IkeSaKeys, IkeSuite, IntegAlg};
use control::ike_sa::IkeKeyLog;
use control::pki::der::hex;
use tracing::{debug, warn};

/// Opens `path` for appending, creating it with mode 0600, and makes an
/// existing file 0600 too: anyone who can read it can decrypt the traffic.
pub fn open_private(path: &Path) -> io::Result<File> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    Ok(f)
}

/// Where the IKEv2 keys go for key log `keylog` (whose own file holds the ESP keys).
pub fn ike_path(keylog: &Path) -> PathBuf {
    let mut p = keylog.as_os_str().to_owned();
    p.push(".ikev2");
    PathBuf::from(p)
}

/// Wireshark's names of an IKE SA's algorithms in its `ikev2_decryption_table`,
/// if it can decrypt them.
fn wireshark_ike_names(suite: &IkeSuite) -> Option<(&'static str, &'static str)> {
    let encr = match suite.encr {
        EncrAlg::AesCbc { key_bits: 128 } => "AES-CBC-128 [RFC3602]",
        EncrAlg::AesCbc { key_bits: 192 } => "AES-CBC-192 [RFC3602]",
        EncrAlg::AesCbc { key_bits: 256 } => "AES-CBC-256 [RFC3602]",
        EncrAlg::AesGcm16 { key_bits: 128 } => "AES-GCM-128 with 16 octet ICV [RFC5282]",
        EncrAlg::AesGcm16 { key_bits: 192 } => "AES-GCM-192 with 16 octet ICV [RFC5282]",
        EncrAlg::AesGcm16 { key_bits: 256 } => "AES-GCM-256 with 16 octet ICV [RFC5282]",
        _ => return None,
    };
    let integ = match suite.integ {
        None => "NONE [RFC4306]",
        Some(IntegAlg::HmacSha256_128) => "HMAC_SHA2_256_128 [RFC4868]",
        Some(IntegAlg::HmacSha384_192) => "HMAC_SHA2_384_192 [RFC4868]",
        Some(IntegAlg::HmacSha512_256) => "HMAC_SHA2_512_256 [RFC4868]",
    };
    Some((encr, integ))
}

/// One line of Wireshark's `ikev2_decryption_table`: SPIs and keys as bare
/// hex, algorithms by Wireshark's name (its own UAT file syntax).
pub fn ikev2_table_line(spis: (u64, u64), suite: &IkeSuite, keys: &IkeSaKeys) -> Option<String> {
    let (encr, integ) = wireshark_ike_names(suite)?;
    let bytes = |k: &[u8]| if k.is_empty() { "\"\"".to_string() } else { hex(k) };
    Some(format!(
        "{:016x},{:016x},{},{},\"{encr}\",{},{},\"{integ}\"\n",
        spis.0,
        spis.1,
        bytes(&keys.sk_ei),
        bytes(&keys.sk_er),
        bytes(&keys.sk_ai),
        bytes(&keys.sk_ar),
    ))
}

/// The IKEv2 half of the key log, handed to the control core.
pub struct IkeKeyLogFile {
    file: Mutex<File>,
    path: PathBuf,
}

impl IkeKeyLogFile {
    /// Opens (creates, 0600) the IKEv2 key file of key log `keylog`.
    pub fn open(keylog: &Path) -> io::Result<Self> {
        let path = ike_path(keylog);
        warn!(file = %path.display(), "WRITING IKE KEYS TO A FILE: anyone who can read it can decrypt the IKE exchanges; for debugging only");
        Ok(Self {
            file: Mutex::new(open_private(&path)?),
            path,
        })
    }
}

impl IkeKeyLog for IkeKeyLogFile {
    fn ike_sa_keys(&self, spis: (u64, u64), suite: &IkeSuite, keys: &IkeSaKeys) {
        let Some(line) = ikev2_table_line(spis, suite, keys) else {
            debug!(
                spi_i = format_args!("{:016x}", spis.0),
                "key log: Wireshark cannot decrypt IKE with {}; keys not written",
                suite.encr.name()
            );
            return;
        };
        if let Ok(mut f) = self.file.lock() {
            if let Err(e) = f.write_all(line.as_bytes()).and_then(|()| f.flush()) {
                warn!(file = %self.path.display(), "key log: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use control::crypto::{KeGroup, PrfAlg};
    use zeroize::Zeroizing;

    #[test]
    fn ikev2_lines_have_wiresharks_eight_fields() {
        let keys = IkeSaKeys {
            sk_d: Zeroizing::new(vec![0; 32]),
            sk_ai: Zeroizing::new(Vec::new()),
            sk_ar: Zeroizing::new(Vec::new()),
            sk_ei: Zeroizing::new(vec![0xab; 36]),
            sk_er: Zeroizing::new(vec![0xcd; 36]),
            sk_pi: Zeroizing::new(vec![0; 32]),
            sk_pr: Zeroizing::new(vec![0; 32]),
        };
        let suite = IkeSuite {
            encr: EncrAlg::AesGcm16 { key_bits: 256 },
            integ: None,
            prf: PrfAlg::HmacSha256,
            ke: KeGroup::Curve25519,
        };
        let line = ikev2_table_line((0x0102030405060708, 0xa), &suite, &keys).unwrap();
        assert_eq!(
            line,
            format!(
                "0102030405060708,000000000000000a,{},{},\"AES-GCM-256 with 16 octet ICV [RFC5282]\",\"\",\"\",\"NONE [RFC4306]\"\n",
                "ab".repeat(36),
                "cd".repeat(36)
            )
        );
        let chacha = IkeSuite {
            encr: EncrAlg::ChaCha20Poly1305,
            ..suite
        };
        assert!(ikev2_table_line((1, 2), &chacha, &keys).is_none());
    }

    #[test]
    fn key_files_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        // An existing file readable by others is made private too.
        std::fs::write(&path, "").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        open_private(&path).unwrap();
        let _ike = IkeKeyLogFile::open(&path).unwrap();
        for p in [path.clone(), ike_path(&path)] {
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", p.display());
        }
    }
}
