//! Test harness that runs real strongSwan (`charon` 5.9.x) peers for ironsa's
//! integration tests.
//!
//! Use it from any root integration test with `mod support;`. The pieces:
//! - [`charon`]: start/stop a charon with its own strongswan.conf and swanctl dir,
//! - [`config`]: render swanctl.conf connections and secrets,
//! - [`swanctl`]: drive a running charon and parse `--list-sas` into structs,
//! - [`netns`]: throw-away network namespaces joined by a veth pair,
//! - [`pki`]: certificate hierarchies made with strongSwan's `pki` tool,
//! - [`util`]: errors, command execution with timeouts, unique names and ports.
//!
//! Declare a [`netns::NetnsPair`] *before* the charons that run in it, so that the
//! charons are dropped (stopped) before the namespaces are deleted.
#![allow(dead_code, unused_imports)]

pub mod charon;
pub mod config;
pub mod netns;
pub mod pki;
pub mod sas;
pub mod swanctl;
pub mod util;

pub use charon::{Charon, CharonBuilder, KernelBackend};
pub use config::{AuthRound, Child, Connection, IkeVersion, Secret, SwanctlConf};
pub use netns::{Netns, NetnsPair};
pub use pki::{CertFiles, KeyType, Pki, San};
pub use sas::{ChildSaInfo, IkeSaInfo, parse_list_sas};
pub use swanctl::{Swanctl, Target};
pub use util::{HarnessError, Result};
