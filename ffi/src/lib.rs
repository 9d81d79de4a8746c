//! Bindings to the system DPDK 22.11. Everything here is behind the `dpdk` feature.

pub mod modp;
