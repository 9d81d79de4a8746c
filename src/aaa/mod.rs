//! AAA back ends: a RADIUS client (RFC 2865, RFC 3579 EAP relay, RFC 2548
//! MPPE keys) that runs on its own thread, so that shards never block on a
//! RADIUS server.
//!
//! No maintained RADIUS crate fits: `radius` and `radius-rust` are async
//! (tokio / async-std) and pull runtimes, dictionaries and `rand` for what is
//! a small fixed set of attributes here. [`radius`] is the codec,
//! [`client`] the retransmitting, failing-over client.

pub mod client;
pub mod radius;
pub mod relay;
pub mod users;
