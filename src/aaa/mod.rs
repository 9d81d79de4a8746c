//! AAA back ends: a RADIUS client (RFC 2865, RFC 3579 EAP relay, RFC 2548
//! MPPE keys, RFC 2866 accounting) that runs on its own thread, so that
//! shards never block on a RADIUS server, and a dynamic-authorization
//! listener (RFC 5176).
//!
//! No maintained RADIUS crate fits: `radius` and `radius-rust` are async
//! (tokio / async-std) and pull runtimes, dictionaries and `rand` for what is
//! a small fixed set of attributes here. [`radius`] is the codec,
//! [`client`] the retransmitting, failing-over client, [`accounting`] the
//! Accounting-Requests of EAP-RADIUS sessions, [`dae`] Disconnect and CoA.

pub mod accounting;
pub mod client;
pub mod dae;
pub mod radius;
pub mod relay;
pub mod users;
