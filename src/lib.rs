//! The `ironsa` package as a library: the parts of the daemon that other
//! crates (fuzz targets, benchmarks) use. The daemon itself is `src/main.rs`.
#![forbid(unsafe_code)]

pub mod aaa;
pub mod cluster;
pub mod config_file;
