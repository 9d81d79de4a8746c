//! ironsa's ESP data plane: packet buffers, ESP (RFC 4303) with replay
//! protection, the SA and policy databases, burst workers and I/O backends.
//!
//! Packet code works in place on caller-owned buffers through
//! [`buf::PacketBuffer`], in bursts, without per-packet allocation, so the same
//! code runs on DPDK mbufs.

pub mod buf;
pub mod esp;
pub mod fuzzing;
pub mod io;
pub mod ip;
pub mod sad;
pub mod spd;
pub mod stats;
pub mod worker;
