//! ML-KEM (FIPS 203) known answers through the crypto provider, for all
//! three parameter sets: the C2SP CCTV vectors in `data/mlkem/` (key
//! generation from d || z, encapsulation from m, decapsulation, implicit
//! rejection, and encapsulation keys that fail the FIPS 203 modulus check).

use std::collections::HashMap;
use std::sync::Mutex;

use control::crypto::{CryptoError, KeGroup, KeyExchange};
use ironsa_crypto::{AwsLcProvider, RandomSource};

/// A random source that hands out fixed bytes, so the seeds FIPS 203 draws
/// (d || z for key generation, m for encapsulation) are the vectors' own.
struct FixedBytes(Mutex<Vec<u8>>);

impl RandomSource for FixedBytes {
    fn fill(&self, buf: &mut [u8]) -> Result<(), CryptoError> {
        let mut left = self.0.lock().map_err(|_| CryptoError::Rng)?;
        if left.len() < buf.len() {
            return Err(CryptoError::Rng);
        }
        buf.copy_from_slice(&left[..buf.len()]);
        left.drain(..buf.len());
        Ok(())
    }
}

fn provider_with(bytes: Vec<u8>) -> AwsLcProvider {
    AwsLcProvider::with_random(FixedBytes(Mutex::new(bytes)))
}

/// The `key = hex` lines of each `[section]` of a vector file.
fn sections(file: &str) -> HashMap<String, Vec<(String, Vec<u8>)>> {
    let path = format!("{}/tests/data/mlkem/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut out: HashMap<String, Vec<(String, Vec<u8>)>> = HashMap::new();
    let mut current = String::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = name.to_string();
            continue;
        }
        let (key, value) = line
            .split_once(" = ")
            .unwrap_or_else(|| panic!("{path}: bad line {line}"));
        out.entry(current.clone())
            .or_default()
            .push((key.to_string(), hex::decode(value).unwrap()));
    }
    out
}

fn get<'a>(section: &'a [(String, Vec<u8>)], key: &str) -> &'a [u8] {
    &section
        .iter()
        .find(|(k, _)| k == key)
        .unwrap_or_else(|| panic!("no {key}"))
        .1
}

const SETS: [(KeGroup, &str); 3] = [
    (KeGroup::MlKem512, "ML-KEM-512.txt"),
    (KeGroup::MlKem768, "ML-KEM-768.txt"),
    (KeGroup::MlKem1024, "ML-KEM-1024.txt"),
];

#[test]
fn key_generation_known_answers() {
    for (group, file) in SETS {
        let s = sections(file);
        let v = &s["keygen"];
        let (ek, dk) = (get(v, "ek"), get(v, "dk"));
        assert_eq!(ek.len(), group.public_len(), "{group:?}");
        // The initiator's encapsulation key comes from d || z.
        let seed = [get(v, "d"), get(v, "z")].concat();
        let initiator = KeyExchange::generate(&provider_with(seed), group).unwrap();
        assert_eq!(initiator.public_value(), ek, "{group:?} ek from d || z");
        let from_dk = AwsLcProvider::key_exchange_from_private(group, dk).unwrap();
        assert_eq!(from_dk.public_value(), ek, "{group:?} ek inside dk");
    }
}

#[test]
fn encapsulation_known_answers() {
    for (group, file) in SETS {
        let s = sections(file);
        let v = &s["encapsulation"];
        let (ek, c, k) = (get(v, "ek"), get(v, "c"), get(v, "k"));
        assert_eq!(c.len(), group.response_len(), "{group:?}");
        // The responder's ciphertext and its secret come from m.
        let (ct, secret) = KeyExchange::respond(&provider_with(get(v, "m").to_vec()), group, ek).unwrap();
        assert_eq!(ct, c, "{group:?} c from m");
        assert_eq!(&secret[..], k, "{group:?} k");
    }
}

#[test]
fn decapsulation_known_answers() {
    for (group, file) in SETS {
        let s = sections(file);
        let v = &s["decapsulation"];
        let dk = get(v, "dk");
        let cases: Vec<_> = v
            .iter()
            .filter(|(n, _)| n == "c")
            .zip(v.iter().filter(|(n, _)| n == "k"))
            .collect();
        assert_eq!(cases.len(), 2, "{group:?}: a valid and a modified ciphertext");
        for ((_, c), (_, k)) in cases {
            let initiator = AwsLcProvider::key_exchange_from_private(group, dk).unwrap();
            assert_eq!(&initiator.finish(c).unwrap()[..], &k[..], "{group:?}");
        }
    }
}

#[test]
fn decapsulation_rejects_implicitly_past_a_zero_byte() {
    for (group, file) in SETS {
        let s = sections(file);
        let v = &s["strcmp"];
        let kx = AwsLcProvider::key_exchange_from_private(group, get(v, "dk")).unwrap();
        assert_eq!(&kx.finish(get(v, "c")).unwrap()[..], get(v, "K"), "{group:?}");
    }
}

#[test]
fn encapsulation_keys_failing_the_modulus_check_are_refused() {
    for (group, file) in SETS {
        let s = sections(file);
        let bad = &s["modulus"];
        assert!(!bad.is_empty());
        for (_, ek) in bad {
            assert_eq!(ek.len(), group.public_len());
            let r = KeyExchange::respond(&provider_with(vec![0; 32]), group, ek);
            assert!(
                matches!(r, Err(CryptoError::InvalidPublicValue(ref m)) if m.contains("modulus check")),
                "{group:?}: {r:?}"
            );
        }
    }
}

#[test]
fn lengths_are_checked_in_both_roles() {
    for (group, _) in SETS {
        let initiator = KeyExchange::generate(&AwsLcProvider::seeded(1), group).unwrap();
        let ek = initiator.public_value().to_vec();
        for bad_len in [ek.len() - 1, ek.len() + 1] {
            let mut v = ek.clone();
            v.resize(bad_len, 0);
            let r = KeyExchange::respond(&AwsLcProvider::seeded(2), group, &v);
            assert!(matches!(r, Err(CryptoError::InvalidPublicValue(_))), "{group:?}: {r:?}");
        }
        let (ct, _) = KeyExchange::respond(&AwsLcProvider::seeded(2), group, &ek).unwrap();
        // The responder's ciphertext is not an encapsulation key, nor the reverse.
        let r = KeyExchange::generate(&AwsLcProvider::seeded(1), group)
            .unwrap()
            .finish(&ek);
        assert!(
            ek.len() == ct.len() || matches!(r, Err(CryptoError::InvalidPublicValue(_))),
            "{group:?}"
        );
        let r = initiator.finish(&ct[1..]);
        assert!(matches!(r, Err(CryptoError::InvalidPublicValue(_))), "{group:?}: {r:?}");
    }
}
