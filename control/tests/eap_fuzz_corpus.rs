//! The `eap_decode`, `eap_mschapv2` and `eap_tls` fuzz targets in the normal test suite:
//! their seeds (fuzz/seeds/) must be valid packets, and every truncation and
//! a deterministic set of mutations of them must be handled without a panic.

use control::eap;

fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = format!("{}/../fuzz/seeds/{target}", env!("CARGO_MANIFEST_DIR"));
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .map(|e| {
            let path = e.expect("directory entry").path();
            let bytes = std::fs::read(&path).expect("seed readable");
            (path.display().to_string(), bytes)
        })
        .collect();
    out.sort();
    assert!(out.len() >= 6, "{dir} has too few seeds");
    out
}

#[test]
fn eap_decode_seeds_are_valid_and_mutations_never_panic() {
    for (name, seed) in seeds("eap_decode") {
        eap::decode(&seed).unwrap_or_else(|e| panic!("seed {name} does not decode: {e}"));
        eap::fuzzing::eap_decode(&seed);
        for m in eap::fuzzing::deterministic_mutations(&seed, 500) {
            eap::fuzzing::eap_decode(&m);
        }
    }
}

#[test]
fn eap_mschapv2_seeds_and_mutations_never_panic_or_authenticate() {
    for (_, seed) in seeds("eap_mschapv2") {
        eap::fuzzing::mschapv2_sessions(&seed);
        for m in eap::fuzzing::deterministic_mutations(&seed, 300) {
            eap::fuzzing::mschapv2_sessions(&m);
        }
    }
}

#[test]
fn eap_tls_seeds_and_mutations_never_panic_or_complete() {
    for (_, seed) in seeds("eap_tls") {
        eap::fuzzing::eap_tls_frames(&seed);
        for m in eap::fuzzing::deterministic_mutations(&seed, 100) {
            eap::fuzzing::eap_tls_frames(&m);
        }
    }
}
