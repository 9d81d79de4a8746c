//! The `radius_decode` and `radius_dae` fuzz targets in the normal test
//! suite: their seeds (fuzz/seeds/radius_decode, replies signed with the
//! secret "secret" over a zero request authenticator; fuzz/seeds/radius_dae,
//! requests signed with "secret") must verify, and every truncation and a
//! deterministic set of mutations must be handled without a panic.

use control::eap::fuzzing::deterministic_mutations;
use ironsa::aaa::radius;

#[test]
fn radius_decode_seeds_verify_and_mutations_never_panic() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/seeds/radius_decode");
    let mut seeds = 0;
    for entry in std::fs::read_dir(dir).expect("seed directory") {
        let path = entry.expect("entry").path();
        let seed = std::fs::read(&path).expect("seed");
        let p = radius::decode(&seed).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let verdict = radius::verify_response(&seed, &[0; 16], b"secret");
        if p.attr(radius::Attr::MESSAGE_AUTHENTICATOR).is_some() {
            verdict.unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
        if let Some(v) = p.vendor_attr(radius::VENDOR_MICROSOFT, radius::MS_MPPE_RECV_KEY) {
            assert_eq!(
                radius::decrypt_mppe_key(v, b"secret", &[0; 16])
                    .expect("decrypts")
                    .len(),
                16
            );
        }
        for m in deterministic_mutations(&seed, 1000) {
            radius::fuzz_decode(&m);
        }
        seeds += 1;
    }
    assert!(seeds >= 5, "only {seeds} seeds in {dir}");
}

#[test]
fn radius_dae_seeds_verify_and_mutations_never_panic() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/seeds/radius_dae");
    let mut seeds = 0;
    for entry in std::fs::read_dir(dir).expect("seed directory") {
        let path = entry.expect("entry").path();
        let seed = std::fs::read(&path).expect("seed");
        radius::verify_request(&seed, b"secret").unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let code = radius::decode(&seed).expect("decodes").code;
        assert!(
            matches!(code, radius::Code::DisconnectRequest | radius::Code::CoaRequest),
            "{}: {code:?}",
            path.display()
        );
        ironsa::aaa::dae::fuzz_request(&seed);
        for cut in 0..seed.len() {
            ironsa::aaa::dae::fuzz_request(&seed[..cut]);
        }
        for m in deterministic_mutations(&seed, 1000) {
            ironsa::aaa::dae::fuzz_request(&m);
            radius::fuzz_decode(&m);
        }
        seeds += 1;
    }
    assert!(seeds >= 5, "only {seeds} seeds in {dir}");
}
