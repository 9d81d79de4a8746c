//! Print what DPDK sees: ports, crypto devices, AES-GCM and rte_security
//! capabilities. Extra arguments are passed to EAL, e.g.
//! `cargo run -p ironsa-ffi --features dpdk --example probe -- --vdev=net_ring0 --vdev=crypto_aesni_gcm0`.

fn main() {
    let mut args: Vec<String> = ["-l", "0", "--no-huge", "-m", "256", "--no-shconf", "--no-pci"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(std::env::args().skip(1));
    let eal = match ffi::Eal::init(&args) {
        Ok(eal) => eal,
        Err(err) => {
            eprintln!("EAL init failed: {err}");
            std::process::exit(1);
        }
    };
    match ffi::probe(&eal) {
        Ok(report) => print!("{report}"),
        Err(err) => {
            eprintln!("probe failed: {err}");
            std::process::exit(1);
        }
    }
}
