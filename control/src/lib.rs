//! ironsa's IKE protocol core.
//!
//! Sans-IO: every state machine takes `(now, datagram)` and returns datagrams to
//! send, timer deadlines and events. No sockets, no clocks, no threads live here.
#![forbid(unsafe_code)]

pub mod config;
pub mod cookie;
pub mod crypto;
pub mod drops;
pub mod eap;
pub mod endpoint;
pub mod error;
pub mod ike_sa;
pub mod ikev1;
pub mod nat;
pub mod pki;
pub mod pool;
pub mod proposal;
pub mod ts;
pub mod wire;

pub use error::Error;
