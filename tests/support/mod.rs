//! Test harness that runs real strongSwan (`charon` 5.9.x) peers for ironsa's
//! integration tests.
//!
//! Use it from an integration test in `tests/` with `mod support;`, from one
//! in `tests/interop/` with `#[path = "../support/mod.rs"] mod support;`
//! (see `tests/README.md`). The pieces:
//! - [`charon`]: start/stop a charon with its own strongswan.conf and swanctl dir,
//! - [`config`]: render swanctl.conf connections and secrets,
//! - [`swanctl`]: drive a running charon and parse `--list-sas` into structs,
//! - [`netns`]: throw-away network namespaces joined by a veth pair,
//! - [`pki`]: certificate hierarchies made with strongSwan's `pki` tool,
//! - [`util`]: errors, command execution with timeouts, unique names and ports,
//! - [`require`]: what a test needs (root, charon, tools); skipping without it.
//!
//! ```ignore
//! let (port, nat) = support::util::free_udp_port_pair()?;
//! let peer = Charon::builder("peer")
//!     .ports(port, nat)
//!     .connection(
//!         Connection::new("c", "127.0.0.1", "127.0.0.1")
//!             .remote_port(ironsa_port)
//!             .proposals(&["aes256gcm16-prfsha256-x25519"])
//!             .local(AuthRound::psk("peer@test"))
//!             .remote(AuthRound::psk("ironsa@test")),
//!     )
//!     .secret(Secret::psk("s", &["peer@test", "ironsa@test"], "secret"))
//!     .start()?;
//! peer.swanctl().initiate(Target::Ike("c"), Duration::from_secs(10))?;
//! let sas = peer.swanctl().list_sas()?;
//! ```
//!
//! Failure path: call [`Charon::dump_log`] (or just panic: a charon dropped while
//! its thread panics prints its log tail and keeps its directory;
//! `IRONSA_KEEP_CHARON=1` keeps directories always).
//!
//! Declare a [`netns::NetnsPair`] *before* the charons that run in it, so that the
//! charons are dropped (stopped) before the namespaces are deleted.
#![allow(dead_code, unused_imports)]

pub mod charon;
pub mod config;
pub mod etcd;
pub mod freeradius;
pub mod ironsa;
pub mod netns;
pub mod pki;
pub mod require;
pub mod sas;
pub mod swanctl;
pub mod traffic;
pub mod util;

pub use charon::{Charon, CharonBuilder, KernelBackend, strongswan6};
pub use config::{AuthRound, Child, Connection, IkeVersion, Secret, SwanctlConf};
pub use ironsa::Ironsa;
pub use netns::{NattedPair, Netns, NetnsPair};
pub use pki::{CertFiles, KeyType, Pki, San};
pub use require::{Need, skip_unless};
pub use sas::{ChildSaInfo, IkeSaInfo, parse_list_sas};
pub use swanctl::{Swanctl, Target};
pub use util::{HarnessError, Result};
