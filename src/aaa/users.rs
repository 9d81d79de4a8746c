//! The local EAP users file (`[eap] users_file`): TOML, one `[[user]]` per
//! user with a cleartext `password` (any method) or an `nt_hash` (32 hex
//! digits, EAP-MSCHAPv2 only). It holds secrets, so it is refused when its
//! group or others may read it.

use std::collections::HashMap;
use std::path::Path;

use control::eap::{Credential, UserStore, mschapv2};
use serde::Deserialize;
use zeroize::Zeroizing;

/// Why the users file was refused (the caller adds the configuration key).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UsersError {
    #[error("cannot read {file}: {source}")]
    Io { file: String, source: std::io::Error },
    #[error(
        "{file} is readable by its group or others (mode {mode:04o}): it holds passwords; make it 0600 (chmod 600 {file})"
    )]
    Permissions { file: String, mode: u32 },
    #[error("{file}:{line}: {message}")]
    Invalid { file: String, line: usize, message: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUsers {
    #[serde(default)]
    user: Vec<toml::Spanned<RawUser>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUser {
    name: String,
    password: Option<String>,
    nt_hash: Option<String>,
}

enum Stored {
    Password(Zeroizing<String>),
    NtHash(mschapv2::NtHash),
}

/// The users, by EAP identity.
pub struct LocalUsers {
    users: HashMap<Vec<u8>, Stored>,
}

impl std::fmt::Debug for LocalUsers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LocalUsers({} users)", self.users.len())
    }
}

/// Refuses a secrets file that its group or others may read.
pub fn check_private(path: &Path) -> Result<(), UsersError> {
    use std::os::unix::fs::PermissionsExt;
    let file = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|source| UsersError::Io {
        file: file.clone(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(UsersError::Permissions { file, mode });
    }
    Ok(())
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].bytes().filter(|b| *b == b'\n').count() + 1
}

impl LocalUsers {
    /// Reads and checks the users file.
    pub fn load(path: &Path) -> Result<Self, UsersError> {
        check_private(path)?;
        let file = path.display().to_string();
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|source| UsersError::Io {
            file: file.clone(),
            source,
        })?);
        Self::parse(&file, &text)
    }

    /// Parses the users file's text (`file` names it in errors).
    pub fn parse(file: &str, text: &str) -> Result<Self, UsersError> {
        let invalid = |offset: usize, message: String| UsersError::Invalid {
            file: file.to_string(),
            line: line_of(text, offset),
            message,
        };
        let raw: RawUsers = toml::from_str(text).map_err(|e| {
            // The message of a TOML error may quote the faulty value: keep passwords out of it.
            let offset = e.span().map_or(0, |s| s.start);
            invalid(offset, e.message().lines().next().unwrap_or("invalid TOML").to_string())
        })?;
        let mut users = HashMap::new();
        for u in raw.user {
            let at = u.span().start;
            let u = u.into_inner();
            if u.name.is_empty() || u.name.len() > control::eap::MAX_IDENTITY_LEN {
                return Err(invalid(
                    at,
                    format!("user.name must be 1 to {} bytes", control::eap::MAX_IDENTITY_LEN),
                ));
            }
            let stored = match (u.password, u.nt_hash) {
                (Some(p), None) if !p.is_empty() => Stored::Password(Zeroizing::new(p)),
                (None, Some(h)) => {
                    let bytes = hex::decode(h.trim())
                        .ok()
                        .and_then(|b| <[u8; 16]>::try_from(b).ok())
                        .ok_or_else(|| invalid(at, format!("user '{}': nt_hash must be 32 hex digits", u.name)))?;
                    Stored::NtHash(Zeroizing::new(bytes))
                }
                _ => {
                    return Err(invalid(
                        at,
                        format!("user '{}' needs exactly one of password (non-empty) or nt_hash", u.name),
                    ));
                }
            };
            if users.insert(u.name.clone().into_bytes(), stored).is_some() {
                return Err(invalid(at, format!("user '{}' is listed twice", u.name)));
            }
        }
        Ok(LocalUsers { users })
    }

    /// How many users there are.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// True when the file lists no user.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

impl UserStore for LocalUsers {
    fn credential(&self, identity: &[u8]) -> Option<Credential> {
        Some(match self.users.get(identity)? {
            Stored::Password(p) => Credential::Password(p.clone()),
            Stored::NtHash(h) => Credential::NtHash(h.clone()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn users_with_passwords_and_nt_hashes() {
        let u = LocalUsers::parse(
            "users.toml",
            "[[user]]\nname = \"alice\"\npassword = \"a-secret\"\n[[user]]\nname = \"bob\"\nnt_hash = \"8846F7EAEE8FB117AD06BDD830B7586C\"\n",
        )
        .unwrap();
        assert_eq!(u.len(), 2);
        assert!(matches!(u.credential(b"alice"), Some(Credential::Password(p)) if p.as_str() == "a-secret"));
        assert!(
            matches!(u.credential(b"bob"), Some(Credential::NtHash(h)) if *h == *mschapv2::nt_password_hash("password"))
        );
        assert!(u.credential(b"carol").is_none());
    }

    #[test]
    fn bad_entries_name_the_line_and_do_not_show_secrets() {
        for (text, line, needle) in [
            ("[[user]]\nname = \"a\"\n", 1, "exactly one"),
            (
                "\n[[user]]\nname = \"a\"\npassword = \"x\"\nnt_hash = \"00\"\n",
                2,
                "exactly one",
            ),
            ("[[user]]\nname = \"a\"\nnt_hash = \"zz\"\n", 1, "32 hex digits"),
            (
                "[[user]]\nname = \"a\"\npassword = \"p\"\n[[user]]\nname = \"a\"\npassword = \"q\"\n",
                4,
                "twice",
            ),
            ("[[user]]\nname = \"a\"\npasword = \"hunter2\"\n", 3, "unknown field"),
        ] {
            let e = LocalUsers::parse("u.toml", text).unwrap_err().to_string();
            assert!(e.starts_with(&format!("u.toml:{line}: ")), "{e}");
            assert!(e.contains(needle), "{e}");
            assert!(!e.contains("hunter2"), "{e}");
        }
    }

    #[test]
    fn a_users_file_others_can_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        std::fs::write(&path, "[[user]]\nname = \"a\"\npassword = \"p\"\n").unwrap();
        for (mode, ok) in [(0o600, true), (0o400, true), (0o640, false), (0o604, false)] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let r = LocalUsers::load(&path);
            assert_eq!(r.is_ok(), ok, "mode {mode:o}: {r:?}");
        }
    }
}
