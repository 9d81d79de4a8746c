//! What an integration test needs from the machine, and skipping when it is
//! missing. A test that needs root or a tool starts with
//!
//! ```ignore
//! if support::skip_unless(&[Need::Root, Need::Charon]) {
//!     return;
//! }
//! ```
//!
//! and, run as a normal user or on a machine without the tool, prints one
//! line naming what is missing and passes, so `cargo test` on a laptop is
//! green. `scripts/test.sh` (root, after `scripts/install-deps.sh`) sets
//! `IRONSA_TESTS_REQUIRE_ALL=1`, which turns every skip into a failure: there
//! nothing may be left out silently.

use std::io::Write;
use std::path::Path;

use super::charon::CHARON_BIN;

/// One precondition of a test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Root: network namespaces, TUN devices, raw sockets, routes.
    Root,
    /// strongSwan's `charon` daemon and `swanctl`.
    Charon,
    /// strongSwan 6 (ML-KEM, RFC 9370) under [`super::charon::strongswan6`]'s prefix.
    StrongSwan6,
    /// A program on `PATH` (`iperf3`, `tshark`, `ping`, `pki`, ...).
    Tool(&'static str),
    /// A plugin of the Debian charon (`eap-mschapv2`, in its own package).
    CharonPlugin(&'static str),
}

/// Set to `1` to fail instead of skipping (see the module doc).
pub const REQUIRE_ALL_ENV: &str = "IRONSA_TESTS_REQUIRE_ALL";

/// `true` when something in `needs` is missing, after printing
/// `skipped: <test>: needs <what> (<why>)`; the test then returns. Panics
/// instead when [`REQUIRE_ALL_ENV`] is `1`.
pub fn skip_unless(needs: &[Need]) -> bool {
    let Some(missing) = needs.iter().find_map(|n| missing(*n)) else {
        return false;
    };
    let test = std::thread::current().name().unwrap_or("test").to_string();
    if std::env::var(REQUIRE_ALL_ENV).as_deref() == Ok("1") {
        panic!("{test}: needs {missing}, and {REQUIRE_ALL_ENV}=1 forbids skipping");
    }
    // Straight to stderr (the test harness captures `eprintln!` of passing
    // tests), in one write so that parallel tests do not cut the line.
    let _ = std::io::stderr().write_all(format!("skipped: {test}: needs {missing}\n").as_bytes());
    true
}

/// Why `need` is not met here, or `None` when it is.
pub fn missing(need: Need) -> Option<String> {
    match need {
        Need::Root => {
            let euid = nix::unistd::geteuid();
            (!euid.is_root()).then(|| format!("root (running as uid {euid})"))
        }
        Need::Charon => {
            if !is_executable(Path::new(CHARON_BIN)) {
                Some(format!(
                    "strongSwan's charon ({CHARON_BIN} not found; scripts/install-deps.sh)"
                ))
            } else {
                missing(Need::Tool("swanctl"))
            }
        }
        Need::StrongSwan6 => super::charon::strongswan6().err(),
        Need::Tool(name) => (!on_path(name)).then(|| format!("{name} (not on PATH; scripts/install-deps.sh)")),
        Need::CharonPlugin(name) => {
            let file = Path::new(CHARON_PLUGIN_DIR).join(format!("libstrongswan-{name}.so"));
            (!file.is_file()).then(|| {
                format!(
                    "charon's {name} plugin ({} not found; scripts/install-deps.sh)",
                    file.display()
                )
            })
        }
    }
}

/// Where the Debian charon loads its plugins from.
const CHARON_PLUGIN_DIR: &str = "/usr/lib/ipsec/plugins";

/// Whether an executable `name` is in a directory of `PATH` (where the
/// test will look for it).
fn on_path(name: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).any(|dir| is_executable(&dir.join(name)))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
