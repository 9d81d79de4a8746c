//! Shared helpers of ironsa's benchmarks and handshake generator.

pub mod cli;
pub mod ikegen;
