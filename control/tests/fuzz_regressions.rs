//! The `ikev2_responder` fuzz harness in the normal test suite: its seeds
//! must reach the states they aim at, a deterministic corpus of mutated real
//! messages must never panic or disturb the anchor SA, and every input a
//! fuzzing run found a bug with stays here as a regression.
//!
//! `IRONSA_WRITE_FUZZ_SEEDS=<dir> cargo test -p ironsa-control --test fuzz_regressions`
//! also writes the seeds to `<dir>` (fuzz/seeds/ikev2_responder holds them).

#[path = "harness/responder.rs"]
mod harness;

use harness::{F_ALT_SRC, F_CBC, F_FIX, F_NAT, F_V6, Mode, Mutator, ResponderHarness, encode_chain, ike_auth_chain};

#[test]
fn seeds_reach_the_states_they_aim_at() {
    let mut h = ResponderHarness::new();
    let seeds = h.seed_inputs();
    let mut established = 0;
    for (i, seed) in seeds.iter().enumerate() {
        let r = h.run(seed);
        let mode = seed[0] & 7;
        if mode >= Mode::AuthRaw as u8 {
            assert!(
                r.init_done,
                "seed {i}: IKE_SA_INIT of the scripted initiator failed: {r:?}"
            );
        }
        if mode == Mode::AuthStructured as u8 || mode == Mode::AuthReplay as u8 {
            assert_eq!(
                r.victims_up,
                1,
                "seed {i} (flags {:#04x}) should establish: {r:?}",
                seed[0] & 0xf8
            );
            assert_eq!(r.children_installed, 1, "seed {i}: {r:?}");
        }
        if mode == Mode::AuthRaw as u8 || mode == Mode::AuthFragments as u8 {
            assert_eq!(r.victims_up, 0, "seed {i}: a wrong AUTH must not establish: {r:?}");
            assert!(
                r.responses >= 2,
                "seed {i}: the responder answers IKE_AUTH (AUTHENTICATION_FAILED): {r:?}"
            );
        }
        if mode == Mode::EstablishedRaw as u8 || mode == Mode::EstablishedSequence as u8 {
            assert_eq!(r.victims_up, 1, "seed {i}: {r:?}");
        }
        established += r.victims_up;
    }
    assert!(established >= 9, "only {established} seeds established an SA");
    // The CREATE_CHILD_SA seeds install a second child.
    let create_child = &seeds[8];
    assert_eq!(create_child[0] & 7, Mode::EstablishedRaw as u8);
    assert_eq!(
        h.run(create_child).children_installed,
        2,
        "CREATE_CHILD_SA with PFS installs a child"
    );
    if let Ok(dir) = std::env::var("IRONSA_WRITE_FUZZ_SEEDS") {
        std::fs::create_dir_all(&dir).expect("seed directory");
        for (i, seed) in seeds.iter().enumerate() {
            std::fs::write(format!("{dir}/seed-{i:02}-mode{}", seed[0] & 7), seed).expect("write seed");
        }
    }
}

#[test]
fn mutated_real_messages_never_disturb_the_anchor() {
    let mut h = ResponderHarness::new();
    let seeds = h.seed_inputs();
    let mut m = Mutator::new(0x1f2e_3d4c_5b6a_7988);
    let mut reached_auth = 0;
    for n in 0..2000 {
        let base = &seeds[n % seeds.len()];
        let input = m.mutate(base);
        let r = h.run(&input);
        reached_auth += usize::from(r.init_done);
    }
    assert!(
        reached_auth > 1000,
        "only {reached_auth} of 2000 inputs got past IKE_SA_INIT"
    );
}

#[test]
fn every_flag_combination_of_a_valid_ike_auth_establishes() {
    let mut h = ResponderHarness::new();
    for flags in [0, F_CBC, F_V6, F_NAT, F_CBC | F_V6 | F_NAT, F_ALT_SRC, F_ALT_SRC | F_V6] {
        let id = if flags & F_ALT_SRC != 0 {
            harness::SITE_ID
        } else {
            harness::PEER_ID
        };
        let input = [
            &[Mode::AuthStructured as u8 | F_FIX | flags, 0][..],
            &encode_chain(&ike_auth_chain(id)),
        ]
        .concat();
        let r = h.run(&input);
        assert_eq!(r.victims_up, 1, "flags {flags:#04x}: {r:?}");
    }
    // Any identity that proves the road-warrior PSK is accepted.
    let input = [
        &[Mode::AuthStructured as u8 | F_FIX, 0][..],
        &encode_chain(&ike_auth_chain("nobody@elsewhere")),
    ]
    .concat();
    assert_eq!(
        h.run(&input).victims_up,
        1,
        "road warriors accept any identity with the rw PSK"
    );
}

#[test]
fn short_and_empty_inputs() {
    let mut h = ResponderHarness::new();
    for input in [
        &[][..],
        &[0],
        &[1],
        &[2],
        &[3],
        &[4],
        &[5],
        &[6],
        &[7],
        &[0xff, 0xff],
        &[0x0b, 0, 0, 0],
    ] {
        h.run(input);
    }
}

#[test]
#[should_panic(expected = "anchor")]
fn the_harness_notices_a_disturbed_anchor() {
    let mut h = ResponderHarness::new();
    h.delete_anchor_for_test();
    h.run(&[0, 0]);
}

#[test]
fn ike_intermediate_without_additional_key_exchange_is_answered_empty() {
    use control::wire::ikev2::{Notify, NotifyType, Payload, ProtocolId};
    let mut h = ResponderHarness::new();
    // RFC 9242: an initiator that announced support may run IKE_INTERMEDIATE
    // with no key exchange negotiated; the responder answers it empty.
    let empty = h
        .intermediate_answer(&[])
        .expect("an answer to an empty IKE_INTERMEDIATE");
    assert!(empty.is_empty(), "{empty:?}");
    let status = Payload::Notify(Notify {
        protocol: ProtocolId::NONE,
        spi: Vec::new(),
        ty: NotifyType(40_001),
        data: vec![1, 2, 3],
    });
    let answer = h.intermediate_answer(&[status]).expect("an answer");
    assert!(answer.is_empty(), "{answer:?}");
    // A key share nobody negotiated is refused.
    let ke = Payload::Ke {
        group: 31,
        data: vec![9; 32],
    };
    let refused = h.intermediate_answer(&[ke]).expect("an answer");
    assert!(
        matches!(refused.as_slice(), [Payload::Notify(n)] if n.ty == NotifyType::INVALID_SYNTAX),
        "{refused:?}"
    );
}
