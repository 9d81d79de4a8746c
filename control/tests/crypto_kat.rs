//! Known-answer tests for the IKEv2 crypto suite: published vectors where
//! they exist, otherwise values computed independently with python3
//! (`hmac`, `cryptography`) and committed here.

use control::crypto::auth::{psk_auth, signed_octets, verify_psk_auth};
use control::crypto::keys::{
    derive_child_sa_keys, derive_ike_sa_keys, derive_rekeyed_ike_sa_keys, derive_rekeyed_ike_sa_keys_multi,
};
use std::sync::Arc;

use control::crypto::{
    CryptoError, CryptoProvider, EncrAlg, IkeSuite, IntegAlg, KeGroup, KeyExchange, PrfAlg, SkCipher,
};
use control::wire::WireError;
use control::wire::ikev2::SkProtect;
use ironsa_crypto::AwsLcProvider;

fn provider() -> Arc<dyn CryptoProvider> {
    AwsLcProvider::new().shared()
}

fn h(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

const PRFS: [PrfAlg; 3] = [PrfAlg::HmacSha256, PrfAlg::HmacSha384, PrfAlg::HmacSha512];

// ---------------------------------------------------------------- HMAC / PRF

/// RFC 4231 §4 test cases 1-7 (also RFC 4868 §2.7.1, the PRF test vectors):
/// (key, data, [SHA-256, SHA-384, SHA-512]). Case 5 is published truncated to 128 bits.
fn rfc4231_cases() -> Vec<(Vec<u8>, Vec<u8>, [&'static str; 3])> {
    let large_key = vec![0xaa; 131];
    vec![
        (
            vec![0x0b; 20],
            b"Hi There".to_vec(),
            [
                "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
                "afd03944d84895626b0825f4ab46907f15f9dadbe4101ec682aa034c7cebc59cfaea9ea9076ede7f4af152e8b2fa9cb6",
                "87aa7cdea5ef619d4ff0b4241a1d6cb02379f4e2ce4ec2787ad0b30545e17cdedaa833b7d6b8a702038b274eaea3f4e4be9d914eeb61f1702e696c203a126854",
            ],
        ),
        (
            b"Jefe".to_vec(),
            b"what do ya want for nothing?".to_vec(),
            [
                "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
                "af45d2e376484031617f78d2b58a6b1b9c7ef464f5a01b47e42ec3736322445e8e2240ca5e69e2c78b3239ecfab21649",
                "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea2505549758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737",
            ],
        ),
        (
            vec![0xaa; 20],
            vec![0xdd; 50],
            [
                "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe",
                "88062608d3e6ad8a0aa2ace014c8a86f0aa635d947ac9febe83ef4e55966144b2a5ab39dc13814b94e3ab6e101a34f27",
                "fa73b0089d56a284efb0f0756c890be9b1b5dbdd8ee81a3655f83e33b2279d39bf3e848279a722c806b485a47e67c807b946a337bee8942674278859e13292fb",
            ],
        ),
        (
            (1..=25).collect(),
            vec![0xcd; 50],
            [
                "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b",
                "3e8a69b7783c25851933ab6290af6ca77a9981480850009cc5577c6e1f573b4e6801dd23c4a7d679ccf8a386c674cffb",
                "b0ba465637458c6990e5a8c5f61d4af7e576d97ff94b872de76f8050361ee3dba91ca5c11aa25eb4d679275cc5788063a5f19741120c4f2de2adebeb10a298dd",
            ],
        ),
        (
            vec![0x0c; 20],
            b"Test With Truncation".to_vec(),
            ["a3b6167473100ee06e0c796c2955552b", "3abf34c3503b2a23a46efc619baef897", "415fad6271580a531d4179bc891d87a6"],
        ),
        (
            large_key.clone(),
            b"Test Using Larger Than Block-Size Key - Hash Key First".to_vec(),
            [
                "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
                "4ece084485813e9088d2c63a041bc5b44f9ef1012a2b588f3cd11f05033ac4c60c2ef6ab4030fe8296248df163f44952",
                "80b24263c7c1a3ebb71493c1dd7be8b49b46d1f41b4aeec1121b013783f8f3526b56d037e05f2598bd0fd2215d6a1e5295e64f73f63f0aec8b915a985d786598",
            ],
        ),
        (
            large_key,
            b"This is a test using a larger than block-size key and a larger than block-size data. The key needs to be hashed before being used by the HMAC algorithm.".to_vec(),
            [
                "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
                "6617178e941f020d351e2f254e8fd32c602420feb0b8fb9adccebb82461e99c5a678cc31e799176d3860e6110c46523e",
                "e37b6a775dc87dbaa4dfa9f96e5e3ffddebd71f8867289865df5a32d20cdc944b6022cac3c4982b10d5eeb55c3e4de15134676fb6de0446065c97440fa8c6a58",
            ],
        ),
    ]
}

#[test]
fn prf_rfc4231_rfc4868_vectors() {
    for (n, (key, data, expected)) in rfc4231_cases().iter().enumerate() {
        for (prf, want) in PRFS.iter().zip(expected) {
            let want = h(want);
            let got = prf.prf(key, &[data]);
            assert_eq!(got.len(), prf.output_len());
            assert_eq!(&got[..want.len()], &want[..], "case {} {prf:?}", n + 1);
            // The same data split over several slices gives the same output.
            let (a, b) = data.split_at(data.len() / 2);
            assert_eq!(prf.prf(key, &[a, b, &[]]), got);
        }
    }
}

/// RFC 4868 §2.7.2: HMAC with full-length keys, and the truncated ICVs.
#[test]
fn rfc4868_auth_vectors() {
    let key4_256: Vec<u8> = (1..=32).collect();
    let mut key4_384 = key4_256.clone();
    key4_384.extend(10..=25);
    let cases: [(PrfAlg, Vec<u8>, &[u8], &str); 5] = [
        (
            PrfAlg::HmacSha256,
            vec![0x0b; 32],
            b"Hi There",
            "198a607eb44bfbc69903a0f1cf2bbdc5ba0aa3f3d9ae3c1c7a3b1696a0b68cf7",
        ),
        (
            PrfAlg::HmacSha256,
            key4_256,
            &[0xcd; 50],
            "372efcf9b40b35c2115b1346903d2ef42fced46f0846e7257bb156d3d7b30d3f",
        ),
        (
            PrfAlg::HmacSha384,
            vec![0x0b; 48],
            b"Hi There",
            "b6a8d5636f5c6a7224f9977dcf7ee6c7fb6d0c48cbdee9737a959796489bddbc4c5df61d5b3297b4fb68dab9f1b582c2",
        ),
        (
            PrfAlg::HmacSha384,
            key4_384,
            &[0xcd; 50],
            "5b540085c6e6358096532b2493609ed1cb298f774f87bb5c2ebf182c83cc7428707fb92eab2536a5812258228bc96687",
        ),
        (
            PrfAlg::HmacSha512,
            vec![0x0b; 64],
            b"Hi There",
            "637edc6e01dce7e6742a99451aae82df23da3e92439e590e43e761b33e910fb8ac2878ebd5803f6f0b61dbce5e251ff8789a4722c1be65aea45fd464e89f8f5b",
        ),
    ];
    for (prf, key, data, want) in cases {
        assert_eq!(&prf.prf(&key, &[data])[..], &h(want)[..], "{prf:?}");
    }
}

/// prf+ against an independent python3 `hmac` expansion.
#[test]
fn prf_plus_vectors() {
    let key: Vec<u8> = (0..32).collect();
    assert_eq!(
        &PrfAlg::HmacSha256.prf_plus(&key, &[b"ironsa ", b"prf+ vector"], 100)[..],
        &h(
            "a5cf534f3bc9397e07f9c0fd9ef13e080f562c093a4984b8310f2b2fac267e6b8f574a8328433681f5a8d3e481a656f7fdef3cee618879c5497451371480b7c2b764a63690cd1421aadc9ce159f690bd0eca912bd8553d769c6321b3509235ea97843c34"
        )[..]
    );
    let key: Vec<u8> = (0..64).collect();
    assert_eq!(
        &PrfAlg::HmacSha512.prf_plus(&key, &[b"ironsa prf+ vector"], 200)[..],
        &h(
            "2176db3af9988b007b3d7fe3fca5b4706287f22bf1faeb832c09e3a4d826c43e870e440fdb0580e3a4acac48c6c5074a65e72491a3a9833396bf6b8ca4fb17d0ca4536556b5a25897cfd01ac762f8fb3023c63dc6725ad0916972addf4d37da6ee589779507315a4f97b5d1ad291d022819f3672b7b775555c7a7d8eb7d13b44ab845bb276ec59fb64cf1a1b7bf8ea3fc950193934f103bd915e09aa3e34467a7391cbbdcdcbce0fab9ca319fe3abaada4737294c327bb8b0eb6e8c5e091ac7aa6dcc3516c0b691c"
        )[..]
    );
}

// ---------------------------------------------------------------- key derivation

const SHARED: [u8; 32] = [0x42; 32];
const NI: [u8; 32] = [0x11; 32];
const NR: [u8; 32] = [0x22; 32];
const SPI_I: u64 = 0x0102_0304_0506_0708;
const SPI_R: u64 = 0x1112_1314_1516_1718;

fn split<'a>(mut keymat: &'a [u8], lens: &[usize]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    for &n in lens {
        let (a, b) = keymat.split_at(n);
        out.push(a);
        keymat = b;
    }
    assert!(keymat.is_empty());
    out
}

/// SKEYSEED and the seven keys against a python3 `hmac` computation of RFC 7296 §2.14.
#[test]
fn ike_sa_keys_aead_suite() {
    let suite = IkeSuite {
        encr: EncrAlg::AesGcm16 { key_bits: 256 },
        integ: None,
        prf: PrfAlg::HmacSha256,
        ke: KeGroup::Curve25519,
    };
    let mut nonces = NI.to_vec();
    nonces.extend_from_slice(&NR);
    assert_eq!(
        &PrfAlg::HmacSha256.prf(&nonces, &[&SHARED])[..],
        &h("db2cc9d8d7183e4bb866d3d78592eda69f9974dbb75378c04c31a16d8d6f0a39")[..]
    );
    let keys = derive_ike_sa_keys(&suite, &SHARED, &NI, &NR, SPI_I, SPI_R);
    let keymat = h(
        "3959114434b2f54ec4dc6e4eb9d27d706a23619dd2f781c75998365ac50e11fc0fe6da53254418bc1bc510e32e8882c1af7e6f62a9d54d84bf3b451f020dad46417c684a600aef1c3682e91b727ed2b565634cbca9baad10ea03445df4dce32d3798c874e53036286a1fa6f1a48d2df26ce62f26d0a91e686353d9d3ba6172f6bf0a94cd291fe9ca590a59dcba9fc34b59a89163997390f2584b135bb11a3bb7bb791fb84a17d070",
    );
    let parts = split(&keymat, &[32, 0, 0, 36, 36, 32, 32]);
    let got: [&[u8]; 7] = [
        &keys.sk_d,
        &keys.sk_ai,
        &keys.sk_ar,
        &keys.sk_ei,
        &keys.sk_er,
        &keys.sk_pi,
        &keys.sk_pr,
    ];
    for (g, w) in got.iter().zip(&parts) {
        assert_eq!(g, w);
    }
}

#[test]
fn ike_sa_keys_cbc_suite() {
    let suite = IkeSuite {
        encr: EncrAlg::AesCbc { key_bits: 128 },
        integ: Some(IntegAlg::HmacSha256_128),
        prf: PrfAlg::HmacSha384,
        ke: KeGroup::Modp2048,
    };
    let keys = derive_ike_sa_keys(&suite, &SHARED, &NI, &NR, SPI_I, SPI_R);
    let keymat = h(
        "54e18d654c2783d1f109961b3bde7b157734cad70974d450c37d50e399fa5189542e1e6d6543c1213cf84d71ab2ef543d7c1e58b406a488365f286ec25e2eca33870f5288df6acd03f7037eddea4fab3ae727c60dcaad2a150db9389d210a243533988b776a58ed6949a13c66c6914cd7e231684078fb8693f6a3b07ef5b38f390f8f4c595240ec2fb8c7dbb2d740ddd770de68732b676ddd60d5917a9c6cba79726931394d248814429fc6455e67a1eba0ee3dbaede236a2e1eb3daf8bf7e64c46e8753348e4864878dc6e99a724ee7d68f9a561fe768420bb4e6f3605e15b3eee99fbd4bf3250e52a6637f1cc049a8",
    );
    let parts = split(&keymat, &[48, 32, 32, 16, 16, 48, 48]);
    let got: [&[u8]; 7] = [
        &keys.sk_d,
        &keys.sk_ai,
        &keys.sk_ar,
        &keys.sk_ei,
        &keys.sk_er,
        &keys.sk_pi,
        &keys.sk_pr,
    ];
    for (g, w) in got.iter().zip(&parts) {
        assert_eq!(g, w);
    }
}

#[test]
fn rekeyed_ike_sa_keys() {
    let suite = IkeSuite {
        encr: EncrAlg::AesGcm16 { key_bits: 256 },
        integ: None,
        prf: PrfAlg::HmacSha256,
        ke: KeGroup::Curve25519,
    };
    let keys = derive_rekeyed_ike_sa_keys(&suite, PrfAlg::HmacSha256, &[0x33; 32], &SHARED, &NI, &NR, SPI_I, SPI_R);
    let keymat = h(
        "d7ed9316164fda3b392f344edd544b2cb3aea33efd86459ce17cc60dfc2c3b2524b31a05c5267a38187d2da4b839d2304d5995515150b7a4b9f202037d0b0ab9bb37f4ce839572ee4be4a38f440925a5559efee77c6b8c3eac88f2f449db69e0514f9ff818f619e57f058bd2463a4b034f71452b4a80d84032b620d1a14d3fc19ead0da77c47ce3cfdb09a0398f054255efc6ca66579dc90aa3de2912ed5a4c647cbc6dcf685098f",
    );
    let parts = split(&keymat, &[32, 0, 0, 36, 36, 32, 32]);
    assert_eq!(&keys.sk_d[..], parts[0]);
    assert_eq!(&keys.sk_ei[..], parts[3]);
    assert_eq!(&keys.sk_er[..], parts[4]);
    assert_eq!(&keys.sk_pr[..], parts[6]);
}

#[test]
fn rekeyed_ike_sa_keys_with_an_additional_key_exchange() {
    // RFC 9370 §2.2.4: SKEYSEED = prf(SK_d, SK(0) | Ni | Nr | SK(1)); the
    // expected values come from an independent HMAC-SHA-256 computation.
    let suite = IkeSuite {
        encr: EncrAlg::AesGcm16 { key_bits: 256 },
        integ: None,
        prf: PrfAlg::HmacSha256,
        ke: KeGroup::Curve25519,
    };
    let sk1 = [0x55; 32];
    let keys = derive_rekeyed_ike_sa_keys_multi(
        &suite,
        PrfAlg::HmacSha256,
        &[0x33; 32],
        &[&SHARED, &sk1],
        &NI,
        &NR,
        SPI_I,
        SPI_R,
    );
    assert_eq!(
        &keys.sk_d[..],
        h("b50dbec73fc1deebed9ea7a2d729063b8b59ff5d3fc6cc85020264641e8258d5")
    );
    assert_eq!(
        &keys.sk_ei[..],
        h("13340801a8b5c0b12b79072512fa6d87302e07dc29ed9d4e85714b6e455652e52c2af6ff")
    );
    let single = derive_rekeyed_ike_sa_keys_multi(
        &suite,
        PrfAlg::HmacSha256,
        &[0x33; 32],
        &[&SHARED],
        &NI,
        &NR,
        SPI_I,
        SPI_R,
    );
    let classical =
        derive_rekeyed_ike_sa_keys(&suite, PrfAlg::HmacSha256, &[0x33; 32], &SHARED, &NI, &NR, SPI_I, SPI_R);
    assert_eq!(single.sk_d, classical.sk_d);
    assert_ne!(keys.sk_d, classical.sk_d);
}

#[test]
fn child_sa_keys() {
    let sk_d = [0x44; 32];
    let with_pfs = derive_child_sa_keys(
        PrfAlg::HmacSha256,
        &sk_d,
        Some(&SHARED),
        &NI,
        &NR,
        EncrAlg::AesCbc { key_bits: 128 },
        Some(IntegAlg::HmacSha256_128),
    );
    let keymat = h(
        "8899c2a8cb29008b485fde0b05df4af1570017dc0d4a00a904c475e7e9f5a36f4a5e55e5d0da52b0ebef580e4f1cb0e41a54456495579cd7c872b73745483db46e4ec4a38bdc2506f4cdd6d0bdf8df97770ead827cfbfdb3fd06b6b605a9dd1b",
    );
    let parts = split(&keymat, &[16, 32, 16, 32]);
    assert_eq!(&with_pfs.encr_i[..], parts[0]);
    assert_eq!(&with_pfs.integ_i[..], parts[1]);
    assert_eq!(&with_pfs.encr_r[..], parts[2]);
    assert_eq!(&with_pfs.integ_r[..], parts[3]);

    let no_pfs = derive_child_sa_keys(
        PrfAlg::HmacSha256,
        &sk_d,
        None,
        &NI,
        &NR,
        EncrAlg::AesGcm16 { key_bits: 256 },
        None,
    );
    let keymat = h(
        "c44249eeaa192b8df1fe55d49298de094d5326eb3d5cd1692e3837f931842f55d2e9870d9cf55b64f3b00dee50128605267d411f47db69dc292ed9831e9ed14b8e045caf833d9de2",
    );
    assert_eq!(&no_pfs.encr_i[..], &keymat[..36]);
    assert_eq!(&no_pfs.encr_r[..], &keymat[36..]);
    assert!(no_pfs.integ_i.is_empty() && no_pfs.integ_r.is_empty());
}

// ---------------------------------------------------------------- AUTH

#[test]
fn psk_auth_vector() {
    let id_body = h("01000000c0a80001");
    let octets = signed_octets(b"real message", &[0x55; 32], PrfAlg::HmacSha256, &[0x66; 32], &id_body);
    assert_eq!(
        octets,
        h(
            "7265616c206d6573736167655555555555555555555555555555555555555555555555555555555555555555e0955c9cce6bd1fc3c898f7442c6957b43ef8dab1457837508b5800e172f97b8"
        )
    );
    let auth = psk_auth(PrfAlg::HmacSha256, b"test psk", &octets);
    assert_eq!(
        auth,
        h("8c9599a6f0d4a16a4f61c0b8f166c4da21349666aee9abfca6a22ec9ec0420f9")
    );
    assert!(verify_psk_auth(PrfAlg::HmacSha256, b"test psk", &octets, &auth));
    assert!(!verify_psk_auth(PrfAlg::HmacSha256, b"test psK", &octets, &auth));
    assert!(!verify_psk_auth(PrfAlg::HmacSha256, b"test psk", &octets[1..], &auth));
    assert!(!verify_psk_auth(PrfAlg::HmacSha256, b"test psk", &octets, &[]));
}

// ---------------------------------------------------------------- key exchange

fn invalid<T: std::fmt::Debug>(r: Result<T, CryptoError>) -> bool {
    matches!(r, Err(CryptoError::InvalidPublicValue(_)))
}

/// RFC 7748 §6.1 (Alice and Bob) and §5.2 (first scalar multiplication vector).
#[test]
fn x25519_rfc7748() {
    let alice = AwsLcProvider::key_exchange_from_private(
        KeGroup::Curve25519,
        &h("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"),
    )
    .unwrap();
    let bob = AwsLcProvider::key_exchange_from_private(
        KeGroup::Curve25519,
        &h("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb"),
    )
    .unwrap();
    assert_eq!(
        alice.public_value(),
        &h("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")[..]
    );
    assert_eq!(
        bob.public_value(),
        &h("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")[..]
    );
    let bob_public = bob.public_value().to_vec();
    let k1 = alice.finish(&bob_public).unwrap();
    let k2 = bob
        .finish(&h("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"))
        .unwrap();
    let want = h("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");
    assert_eq!(&k1[..], &want[..]);
    assert_eq!(&k2[..], &want[..]);

    let scalar = AwsLcProvider::key_exchange_from_private(
        KeGroup::Curve25519,
        &h("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4"),
    )
    .unwrap();
    let out = scalar
        .finish(&h("e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c"))
        .unwrap();
    assert_eq!(
        &out[..],
        &h("c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552")[..]
    );
}

#[test]
fn x25519_rejects_small_order_and_bad_lengths() {
    // u = 0 and u = 1 have small order: the shared secret is all zero.
    for u in [[0u8; 32], {
        let mut one = [0u8; 32];
        one[0] = 1;
        one
    }] {
        assert!(invalid(
            KeyExchange::generate(&AwsLcProvider::new(), KeGroup::Curve25519)
                .unwrap()
                .finish(&u)
        ));
        assert!(invalid(KeyExchange::respond(
            &AwsLcProvider::new(),
            KeGroup::Curve25519,
            &u
        )));
    }
    assert!(invalid(
        KeyExchange::generate(&AwsLcProvider::new(), KeGroup::Curve25519)
            .unwrap()
            .finish(&[9; 31])
    ));
    assert!(invalid(KeyExchange::respond(
        &AwsLcProvider::new(),
        KeGroup::Curve25519,
        &[9; 33]
    )));
}

/// RFC 5903 §8.1 (ECP-256) and §8.2 (ECP-384): x || y public values, x-only shared secret.
#[test]
fn ecp_rfc5903() {
    let cases = [
        (
            KeGroup::Ecp256,
            "c88f01f510d9ac3f70a292daa2316de544e9aab8afe84049c62a9c57862d1433",
            "dad0b65394221cf9b051e1feca5787d098dfe637fc90b9ef945d0c37725811805271a0461cdb8252d61f1c456fa3e59ab1f45b33accf5f58389e0577b8990bb3",
            "c6ef9c5d78ae012a011164acb397ce2088685d8f06bf9be0b283ab46476bee53",
            "d12dfb5289c8d4f81208b70270398c342296970a0bccb74c736fc7554494bf6356fbf3ca366cc23e8157854c13c58d6aac23f046ada30f8353e74f33039872ab",
            "d6840f6b42f6edafd13116e0e12565202fef8e9ece7dce03812464d04b9442de",
        ),
        (
            KeGroup::Ecp384,
            "099f3c7034d4a2c699884d73a375a67f7624ef7c6b3c0f160647b67414dce655e35b538041e649ee3faef896783ab194",
            "667842d7d180ac2cde6f74f37551f55755c7645c20ef73e31634fe72b4c55ee6de3ac808acb4bdb4c88732aee95f41aa9482ed1fc0eeb9cafc4984625ccfc23f65032149e0e144ada024181535a0f38eeb9fcff3c2c947dae69b4c634573a81c",
            "41cb0779b4bdb85d47846725fbec3c9430fab46cc8dc5060855cc9bda0aa2942e0308312916b8ed2960e4bd55a7448fc",
            "e558dbef53eecde3d3fccfc1aea08a89a987475d12fd950d83cfa41732bc509d0d1ac43a0336def96fda41d0774a3571dcfbec7aacf3196472169e838430367f66eebe3c6e70c416dd5f0c68759dd1fff83fa40142209dff5eaad96db9e6386c",
            "11187331c279962d93d604243fd592cb9d0a926f422e47187521287e7156c5c4d603135569b9e9d09cf5d4a270f59746",
        ),
    ];
    for (group, i, gi, r, gr, gir) in cases {
        let initiator = AwsLcProvider::key_exchange_from_private(group, &h(i)).unwrap();
        let responder = AwsLcProvider::key_exchange_from_private(group, &h(r)).unwrap();
        assert_eq!(initiator.public_value(), &h(gi)[..], "{group:?} g^i");
        assert_eq!(responder.public_value(), &h(gr)[..], "{group:?} g^r");
        assert_eq!(&initiator.finish(&h(gr)).unwrap()[..], &h(gir)[..]);
        assert_eq!(&responder.finish(&h(gi)).unwrap()[..], &h(gir)[..]);
    }
}

#[test]
fn ecp_rejects_points_off_the_curve_and_bad_lengths() {
    for group in [KeGroup::Ecp256, KeGroup::Ecp384] {
        let peer = KeyExchange::generate(&AwsLcProvider::new(), group).unwrap();
        let mut off_curve = peer.public_value().to_vec();
        let last = off_curve.len() - 1;
        off_curve[last] ^= 1;
        let len = group.public_len();
        for bad in [off_curve, vec![0u8; len], vec![0xff; len]] {
            assert!(
                invalid(
                    KeyExchange::generate(&AwsLcProvider::new(), group)
                        .unwrap()
                        .finish(&bad)
                ),
                "{group:?}"
            );
            assert!(
                invalid(KeyExchange::respond(&AwsLcProvider::new(), group, &bad)),
                "{group:?}"
            );
        }
        // The SEC1 form with its 0x04 prefix is not IKE's encoding.
        let mut prefixed = vec![0x04];
        prefixed.extend_from_slice(peer.public_value());
        assert!(invalid(KeyExchange::respond(&AwsLcProvider::new(), group, &prefixed)));
        assert!(invalid(KeyExchange::respond(
            &AwsLcProvider::new(),
            group,
            &peer.public_value()[1..]
        )));
    }
}

#[test]
fn every_group_agrees_and_has_the_documented_lengths() {
    for group in [
        KeGroup::Curve25519,
        KeGroup::Ecp256,
        KeGroup::Ecp384,
        KeGroup::Modp2048,
        KeGroup::MlKem512,
        KeGroup::MlKem768,
        KeGroup::MlKem1024,
    ] {
        let initiator = KeyExchange::generate(&AwsLcProvider::new(), group).unwrap();
        assert_eq!(initiator.group(), group);
        assert_eq!(initiator.public_value().len(), group.public_len(), "{group:?}");
        let (response, responder_secret) =
            KeyExchange::respond(&AwsLcProvider::new(), group, initiator.public_value()).unwrap();
        assert_eq!(response.len(), KeyExchange::response_len(group), "{group:?}");
        let initiator_secret = initiator.finish(&response).unwrap();
        assert_eq!(&initiator_secret[..], &responder_secret[..], "{group:?}");
        // Fresh keys each time.
        let other = KeyExchange::generate(&AwsLcProvider::new(), group).unwrap();
        let again = KeyExchange::generate(&AwsLcProvider::new(), group).unwrap();
        assert_ne!(other.public_value(), again.public_value());
    }
}

#[test]
fn ml_kem_768_rejects_bad_lengths_and_keys() {
    let initiator = KeyExchange::generate(&AwsLcProvider::new(), KeGroup::MlKem768).unwrap();
    let ek = initiator.public_value().to_vec();
    assert_eq!(ek.len(), 1184);
    assert!(invalid(KeyExchange::respond(
        &AwsLcProvider::new(),
        KeGroup::MlKem768,
        &ek[..1183]
    )));
    let mut long = ek.clone();
    long.push(0);
    assert!(invalid(KeyExchange::respond(
        &AwsLcProvider::new(),
        KeGroup::MlKem768,
        &long
    )));
    // FIPS 203 modulus check: coefficients 0xfff >= q.
    assert!(invalid(KeyExchange::respond(
        &AwsLcProvider::new(),
        KeGroup::MlKem768,
        &[0xff; 1184]
    )));

    let (ct, ss) = KeyExchange::respond(&AwsLcProvider::new(), KeGroup::MlKem768, &ek).unwrap();
    assert_eq!((ct.len(), ss.len()), (1088, 32));
    assert!(invalid(
        KeyExchange::generate(&AwsLcProvider::new(), KeGroup::MlKem768)
            .unwrap()
            .finish(&ct[..1087])
    ));
    assert!(invalid(
        KeyExchange::generate(&AwsLcProvider::new(), KeGroup::MlKem768)
            .unwrap()
            .finish(&[ct.clone(), vec![0]].concat())
    ));
    // A tampered ciphertext decapsulates to an unrelated secret (implicit rejection).
    let mut tampered = ct.clone();
    tampered[0] ^= 1;
    assert_ne!(&initiator.finish(&tampered).unwrap()[..], &ss[..]);
}

// ---------------------------------------------------------------- SK payload

/// McGrew-Viega GCM spec test cases 4 (AES-128), 10 (AES-192) and 16 (AES-256):
/// IV cafebabefacedbaddecaf888 split as salt cafebabe (end of SK_e) and IV facedbaddecaf888.
#[test]
fn aes_gcm_mcgrew_viega() {
    let k = "feffe9928665731c6d6a8f9467308308";
    let p = "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39";
    let aad = h("feedfacedeadbeeffeedfacedeadbeefabaddad2");
    let cases = [
        (
            128,
            k.to_string(),
            "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091",
            "5bc94fbc3221a5db94fae95ae7121a47",
        ),
        (
            192,
            format!("{k}feffe9928665731c"),
            "3980ca0b3c00e841eb06fac4872a2757859e1ceaa6efd984628593b40ca1e19c7d773d00c144c525ac619d18c84a3f4718e2448b2fe324d9ccda2710",
            "2519498e80f1478f37ba55bd6d27618c",
        ),
        (
            256,
            format!("{k}{k}"),
            "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
            "76fc6ece0f4e1768cddf8853bb2d551b",
        ),
    ];
    for (bits, key, c, t) in cases {
        let encr = EncrAlg::AesGcm16 { key_bits: bits };
        let keymat = h(&format!("{key}cafebabe"));
        let sealer = SkCipher::with_iv_start_for_test(encr, &keymat, 0xface_dbad_deca_f888, &provider()).unwrap();
        let (mut iv, mut data, mut icv) = ([0u8; 8], h(p), [0u8; 16]);
        sealer.seal(&aad, &mut iv, &mut data, &mut icv).unwrap();
        assert_eq!(iv.to_vec(), h("facedbaddecaf888"));
        assert_eq!(data, h(c), "AES-{bits}-GCM ciphertext");
        assert_eq!(icv.to_vec(), h(t), "AES-{bits}-GCM tag");
        let opener = SkCipher::new(encr, None, &keymat, &[], &provider()).unwrap();
        opener.open(&aad, &iv, &mut data, &icv).unwrap();
        assert_eq!(data, h(p));
    }
}

/// RFC 8439 §2.8.2 AEAD vector; its nonce 07000000 || 4041424344454647 is
/// RFC 7634's salt || IV.
#[test]
fn chacha20_poly1305_rfc8439() {
    let mut keymat: Vec<u8> = (0x80..0xa0).collect();
    keymat.extend_from_slice(&h("07000000"));
    let aad = h("50515253c0c1c2c3c4c5c6c7");
    let plain = b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.";
    let sealer =
        SkCipher::with_iv_start_for_test(EncrAlg::ChaCha20Poly1305, &keymat, 0x4041_4243_4445_4647, &provider())
            .unwrap();
    let (mut iv, mut data, mut icv) = ([0u8; 8], plain.to_vec(), [0u8; 16]);
    sealer.seal(&aad, &mut iv, &mut data, &mut icv).unwrap();
    assert_eq!(
        data,
        h(
            "d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d63dbea45e8ca9671282fafb69da92728b1a71de0a9e060b2905d6a5b67ecd3b3692ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc3ff4def08e4b7a9de576d26586cec64b6116"
        )
    );
    assert_eq!(icv.to_vec(), h("1ae10b594f09e26a7e902ecbd0600691"));
    let opener = SkCipher::new(EncrAlg::ChaCha20Poly1305, None, &keymat, &[], &provider()).unwrap();
    opener.open(&aad, &iv, &mut data, &icv).unwrap();
    assert_eq!(&data[..], &plain[..]);
}

/// RFC 3602 §4 cases 1 and 2, decrypted through SkCipher::open (the ICV is
/// computed here with aws-lc-rs HMAC over aad || iv || ciphertext).
#[test]
fn aes_cbc_rfc3602() {
    let cases = [
        (
            "06a9214036b8a15b512e03d534120006",
            "3dafba429d9eb430b422da802c9fac41",
            b"Single block msg".to_vec(),
            "e353779c1079aeb82708942dbe77181a",
        ),
        (
            "c286696d887c9aa0611bbb3e2025a45a",
            "562e17996d093d28ddb3ba695a2e6f58",
            (0u8..32).collect(),
            "d296cd94c2cccf8a3a863028b5e1dc0a7586602d253cfff91b8266bea6d61ab1",
        ),
    ];
    let integ_key = [0x5c; 32];
    let aad = b"ike header and sk payload header";
    for (key, iv, plain, cipher) in cases {
        let sk = SkCipher::new(
            EncrAlg::AesCbc { key_bits: 128 },
            Some(IntegAlg::HmacSha256_128),
            &h(key),
            &integ_key,
            &provider(),
        )
        .unwrap();
        let mut data = h(cipher);
        let mac_key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &integ_key);
        let tag = aws_lc_rs::hmac::sign(&mac_key, &[&aad[..], &h(iv), &data].concat());
        sk.open(aad, &h(iv), &mut data, &tag.as_ref()[..16]).unwrap();
        assert_eq!(data, plain);
    }
}

fn all_ciphers() -> Vec<(&'static str, SkCipher, SkCipher)> {
    let mut out = Vec::new();
    for (name, encr, integ) in [
        ("aes128gcm16", EncrAlg::AesGcm16 { key_bits: 128 }, None),
        ("aes192gcm16", EncrAlg::AesGcm16 { key_bits: 192 }, None),
        ("aes256gcm16", EncrAlg::AesGcm16 { key_bits: 256 }, None),
        ("chacha20poly1305", EncrAlg::ChaCha20Poly1305, None),
        (
            "aes128-sha256",
            EncrAlg::AesCbc { key_bits: 128 },
            Some(IntegAlg::HmacSha256_128),
        ),
        (
            "aes192-sha384",
            EncrAlg::AesCbc { key_bits: 192 },
            Some(IntegAlg::HmacSha384_192),
        ),
        (
            "aes256-sha512",
            EncrAlg::AesCbc { key_bits: 256 },
            Some(IntegAlg::HmacSha512_256),
        ),
    ] {
        let ek: Vec<u8> = (0..encr.keymat_len() as u8).collect();
        let ak: Vec<u8> = (0..integ.map_or(0, IntegAlg::key_len) as u8)
            .map(|b| b ^ 0xa5)
            .collect();
        let a = SkCipher::new(encr, integ, &ek, &ak, &provider()).unwrap();
        let b = SkCipher::new(encr, integ, &ek, &ak, &provider()).unwrap();
        out.push((name, a, b));
    }
    out
}

struct Sealed {
    iv: Vec<u8>,
    data: Vec<u8>,
    icv: Vec<u8>,
}

fn seal(sk: &SkCipher, aad: &[u8], plain: &[u8]) -> Sealed {
    let mut s = Sealed {
        iv: vec![0; sk.iv_len()],
        data: plain.to_vec(),
        icv: vec![0; sk.icv_len()],
    };
    sk.seal(aad, &mut s.iv, &mut s.data, &mut s.icv).unwrap();
    s
}

#[test]
fn every_cipher_round_trips_and_rejects_tampering() {
    let aad = b"0123456789abcdef0123456789abcdef";
    for (name, sealer, opener) in all_ciphers() {
        assert_eq!(
            sealer.block_len(),
            if name.contains("gcm") || name.contains("chacha") {
                1
            } else {
                16
            }
        );
        let plain: Vec<u8> = (0..64).collect();
        let s = seal(&sealer, aad, &plain);
        assert_ne!(s.data, plain, "{name}");
        let mut data = s.data.clone();
        opener.open(aad, &s.iv, &mut data, &s.icv).unwrap();
        assert_eq!(data, plain, "{name}");

        let fail = |aad: &[u8], iv: &[u8], data: &[u8], icv: &[u8]| {
            let mut d = data.to_vec();
            opener.open(aad, iv, &mut d, icv) == Err(WireError::IntegrityCheckFailed)
        };
        let flip = |v: &[u8], i: usize| {
            let mut v = v.to_vec();
            v[i] ^= 0x80;
            v
        };
        assert!(fail(aad, &s.iv, &s.data, &flip(&s.icv, 0)), "{name}: tampered ICV");
        assert!(
            fail(aad, &s.iv, &flip(&s.data, 5), &s.icv),
            "{name}: tampered ciphertext"
        );
        assert!(fail(&flip(aad, 3), &s.iv, &s.data, &s.icv), "{name}: tampered AAD");
        assert!(fail(aad, &flip(&s.iv, 1), &s.data, &s.icv), "{name}: tampered IV");

        // Wrong lengths are errors, not panics.
        let mut d = s.data.clone();
        assert!(opener.open(aad, &s.iv, &mut d, &s.icv[1..]).is_err());
        assert!(opener.open(aad, &s.iv[1..], &mut d, &s.icv).is_err());
    }
}

#[test]
fn every_cipher_rejects_a_wrong_key() {
    let aad = b"header";
    for (encr, integ) in [
        (EncrAlg::AesGcm16 { key_bits: 128 }, None),
        (EncrAlg::AesGcm16 { key_bits: 256 }, None),
        (EncrAlg::ChaCha20Poly1305, None),
        (EncrAlg::AesCbc { key_bits: 128 }, Some(IntegAlg::HmacSha256_128)),
        (EncrAlg::AesCbc { key_bits: 256 }, Some(IntegAlg::HmacSha512_256)),
    ] {
        let ek = vec![1u8; encr.keymat_len()];
        let ak = vec![2u8; integ.map_or(0, IntegAlg::key_len)];
        let sealer = SkCipher::new(encr, integ, &ek, &ak, &provider()).unwrap();
        let s = seal(&sealer, aad, &[7u8; 32]);
        let mut wrong_e = ek.clone();
        wrong_e[0] ^= 1;
        let wrong = SkCipher::new(encr, integ, &wrong_e, &ak, &provider()).unwrap();
        let mut d = s.data.clone();
        if encr.is_aead() {
            assert_eq!(
                wrong.open(aad, &s.iv, &mut d, &s.icv),
                Err(WireError::IntegrityCheckFailed),
                "{encr:?}"
            );
        } else {
            // CBC + HMAC: the MAC key is right, so the ICV verifies, but the
            // plaintext is garbage (the wire layer then rejects the padding).
            wrong.open(aad, &s.iv, &mut d, &s.icv).unwrap();
            assert_ne!(d, [7u8; 32]);
        }
        if encr.is_aead() {
            // The salt is part of the key material too.
            let mut wrong_salt = ek.clone();
            *wrong_salt.last_mut().unwrap() ^= 1;
            let wrong = SkCipher::new(encr, integ, &wrong_salt, &ak, &provider()).unwrap();
            let mut d = s.data.clone();
            assert_eq!(
                wrong.open(aad, &s.iv, &mut d, &s.icv),
                Err(WireError::IntegrityCheckFailed)
            );
        } else {
            let mut wrong_a = ak.clone();
            wrong_a[0] ^= 1;
            let wrong = SkCipher::new(encr, integ, &ek, &wrong_a, &provider()).unwrap();
            let mut d = s.data.clone();
            assert_eq!(
                wrong.open(aad, &s.iv, &mut d, &s.icv),
                Err(WireError::IntegrityCheckFailed)
            );
        }
    }
}

#[test]
fn ivs_are_never_reused() {
    for (name, sealer, _) in all_ciphers() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..100 {
            let s = seal(&sealer, b"aad", &[0u8; 16]);
            assert!(seen.insert(s.iv), "{name}: IV reused");
        }
    }
    // AEAD IVs count up from a random start.
    let sk =
        SkCipher::with_iv_start_for_test(EncrAlg::AesGcm16 { key_bits: 128 }, &[0; 20], u64::MAX, &provider()).unwrap();
    assert_eq!(seal(&sk, b"", b"x").iv, u64::MAX.to_be_bytes());
    assert_eq!(seal(&sk, b"", b"x").iv, 0u64.to_be_bytes());
}

#[test]
fn sk_cipher_rejects_bad_keys_and_unaligned_cbc_data() {
    let gcm = EncrAlg::AesGcm16 { key_bits: 128 };
    assert!(
        SkCipher::new(gcm, None, &[0; 16], &[], &provider()).is_err(),
        "missing salt"
    );
    assert!(SkCipher::new(gcm, Some(IntegAlg::HmacSha256_128), &[0; 20], &[0; 32], &provider()).is_err());
    let cbc = EncrAlg::AesCbc { key_bits: 128 };
    assert!(
        SkCipher::new(cbc, None, &[0; 16], &[], &provider()).is_err(),
        "CBC needs integrity"
    );
    assert!(SkCipher::new(cbc, Some(IntegAlg::HmacSha256_128), &[0; 16], &[0; 16], &provider()).is_err());
    let sk = SkCipher::new(cbc, Some(IntegAlg::HmacSha256_128), &[0; 16], &[0; 32], &provider()).unwrap();
    let (mut iv, mut data, mut icv) = ([0u8; 16], [0u8; 15], [0u8; 16]);
    assert!(sk.seal(b"", &mut iv, &mut data, &mut icv).is_err());
    assert!(sk.open(b"", &iv, &mut data, &icv).is_err());
}

// ---------------------------------------------------------------- NIST CAVS SP 800-135 IKEv2 KDF

/// A NIST CAVS SP 800-135 IKEv2 (SHA-256) sample, as redistributed in NSS's
/// `ike-sha256-vectors.h`: SKEYSEED, the first 132 bytes of DKM, and the
/// rekeyed SKEYSEED.
#[test]
fn cavs_sp800_135_ikev2_sha256() {
    let ni = h("3f302be1abcb28e1");
    let nr = h("8c332ee006064c9b");
    let gir = h("0f4d257d7a58fc4545c7d7a88119eee5d5c9690c5b4c989171d3abbfd99d1d29");
    let gir_new = h("25f3b12d6f282739256e39bf54eda53b60ffcf379bb7bcc90c27b4c4c578616c");
    let (spi_i, spi_r) = (0x40da_c39e_1e1a_8640u64, 0x8619_a1cf_9a6e_4c07u64);
    let skeyseed = h("5f00d1bd2c58ec224b1e6b71fa0f19a1faa7a193952c444411b47c1a9d8ba6fe");
    let dkm = h(concat!(
        "0b137d669b0947d7d026d593f0305ad401ff0c471357d695778a9c7f4b4869ece98aca531",
        "188d16041b3bb936d2dbb3b4993a6e768a809160de45d0283f273a6cdf6854379e31be72b",
        "8d3d1fa990cf9c5b015ca9f918a7df6253c958114a09d4e1c19bdcd4db14b29d98db1a74a",
        "d405c588662c14a04d0d36aa4ab55e90f8986d12d4aad"
    ));
    let skeyseed_rekey = h("2d63f6debc92048b4fef3889c4c99ca67d6496e0fac14a2bca9a2d6566ff2398");

    let mut nonces = ni.clone();
    nonces.extend_from_slice(&nr);
    assert_eq!(&PrfAlg::HmacSha256.prf(&nonces, &[&gir])[..], &skeyseed[..]);
    let seed = [&ni[..], &nr[..], &spi_i.to_be_bytes(), &spi_r.to_be_bytes()];
    assert_eq!(&PrfAlg::HmacSha256.prf_plus(&skeyseed, &seed, 132)[..], &dkm[..]);

    // The same through derive_ike_sa_keys: the keys concatenated in order are DKM.
    let suite = IkeSuite {
        encr: EncrAlg::AesCbc { key_bits: 128 },
        integ: Some(IntegAlg::HmacSha256_128),
        prf: PrfAlg::HmacSha256,
        ke: KeGroup::Ecp256,
    };
    let keys = derive_ike_sa_keys(&suite, &gir, &ni, &nr, spi_i, spi_r);
    let all = [
        &keys.sk_d,
        &keys.sk_ai,
        &keys.sk_ar,
        &keys.sk_ei,
        &keys.sk_er,
        &keys.sk_pi,
        &keys.sk_pr,
    ]
    .iter()
    .flat_map(|k| k.iter().copied())
    .collect::<Vec<u8>>();
    assert_eq!(&all[..132], &dkm[..]);

    // Rekey: SKEYSEED' = prf(SK_d, g^ir(new) | Ni | Nr); SK_d' = first block of prf+(SKEYSEED', ...).
    assert_eq!(
        &PrfAlg::HmacSha256.prf(&dkm[..32], &[&gir_new, &ni, &nr])[..],
        &skeyseed_rekey[..]
    );
    let rekeyed = derive_rekeyed_ike_sa_keys(&suite, PrfAlg::HmacSha256, &dkm[..32], &gir_new, &ni, &nr, spi_i, spi_r);
    let first_block = PrfAlg::HmacSha256.prf(
        &skeyseed_rekey,
        &[&ni, &nr, &spi_i.to_be_bytes(), &spi_r.to_be_bytes(), &[1]],
    );
    assert_eq!(&rekeyed.sk_d[..], &first_block[..]);
}

#[test]
fn crypto_state_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<SkCipher>();
    assert_send_sync::<KeyExchange>();
    assert_send_sync::<control::crypto::IkeSaKeys>();
    assert_send_sync::<control::crypto::ChildSaKeys>();
}
