//! Shared helpers of ironsa's benchmarks and handshake generator.

pub mod ikegen;
