//! `ironsa`: the IPsec concentrator daemon and its command-line interface.
#![forbid(unsafe_code)]

fn main() {
    println!("ironsa {}", env!("CARGO_PKG_VERSION"));
}
