//! Proposal parsing, rendering and selection tests.

use control::crypto::{EncrAlg, IntegAlg, KeGroup, PrfAlg};
use control::proposal::*;
use control::wire::ikev2::{Proposal, ProtocolId, Transform, TransformAttribute, TransformType};

const GCM256: EncrAlg = EncrAlg::AesGcm16 { key_bits: 256 };
const GCM128: EncrAlg = EncrAlg::AesGcm16 { key_bits: 128 };
const CBC128: EncrAlg = EncrAlg::AesCbc { key_bits: 128 };
const CBC256: EncrAlg = EncrAlg::AesCbc { key_bits: 256 };

#[test]
fn parses_ike_proposals() {
    let p = parse_ike_proposals("aes256gcm16-prfsha256-x25519, aes128-sha256-modp2048").unwrap();
    assert_eq!(
        p,
        vec![
            IkeProposal {
                encr: vec![GCM256],
                integ: vec![],
                prf: vec![PrfAlg::HmacSha256],
                ke: vec![KeGroup::Curve25519],
                additional_ke: Default::default(),
            },
            IkeProposal {
                encr: vec![CBC128],
                integ: vec![IntegAlg::HmacSha256_128],
                prf: vec![PrfAlg::HmacSha256],
                ke: vec![KeGroup::Modp2048],
                additional_ke: Default::default(),
            },
        ]
    );
    let p = parse_ike_proposals(
        "aes128gcm128-aes256gcm16-chacha20poly1305-prfsha384-prfsha512-ecp256-ecp384-curve25519-mlkem768",
    )
    .unwrap();
    assert_eq!(p[0].encr, vec![GCM128, GCM256, EncrAlg::ChaCha20Poly1305]);
    assert_eq!(p[0].prf, vec![PrfAlg::HmacSha384, PrfAlg::HmacSha512]);
    assert_eq!(
        p[0].ke,
        vec![KeGroup::Ecp256, KeGroup::Ecp384, KeGroup::Curve25519, KeGroup::MlKem768]
    );
    // PRF derived from integrity, in integrity order.
    let p = parse_ike_proposals("aes256-aes192-sha512-sha2_384-modp4096-modp3072").unwrap();
    assert_eq!(p[0].prf, vec![PrfAlg::HmacSha512, PrfAlg::HmacSha384]);
    assert_eq!(p[0].integ, vec![IntegAlg::HmacSha512_256, IntegAlg::HmacSha384_192]);
    // AEAD with an integrity token: used for the PRF only.
    let p = parse_ike_proposals("aes256gcm16-sha384-x25519").unwrap();
    assert_eq!(p[0].integ, vec![]);
    assert_eq!(p[0].prf, vec![PrfAlg::HmacSha384]);
}

#[test]
fn parses_esp_proposals() {
    let p = parse_esp_proposals("aes256gcm16, aes128-sha256, aes256gcm16-x25519-esn").unwrap();
    assert_eq!(
        p[0],
        EspProposal {
            encr: vec![GCM256],
            integ: vec![],
            ke: vec![],
            additional_ke: Default::default(),
            esn: vec![false]
        }
    );
    assert_eq!(
        p[1],
        EspProposal {
            encr: vec![CBC128],
            integ: vec![IntegAlg::HmacSha256_128],
            ke: vec![],
            additional_ke: Default::default(),
            esn: vec![false]
        }
    );
    assert_eq!(
        p[2],
        EspProposal {
            encr: vec![GCM256],
            integ: vec![],
            ke: vec![KeGroup::Curve25519],
            additional_ke: Default::default(),
            esn: vec![true]
        }
    );
    assert_eq!(
        parse_esp_proposals("aes128gcm16-noesn-esn").unwrap()[0].esn,
        vec![false, true]
    );
    assert_eq!(
        parse_esp_proposals("aes128gcm16-esn-noesn").unwrap()[0].esn,
        vec![true, false]
    );
}

#[test]
fn parse_errors_name_the_problem() {
    let e = parse_ike_proposals("aes256-sha256-modp1024").unwrap_err();
    assert_eq!(
        e,
        ProposalError::UnknownToken {
            token: "modp1024".into(),
            proposal: "aes256-sha256-modp1024".into()
        }
    );
    assert!(e.to_string().contains("modp1024"));
    assert_eq!(
        parse_ike_proposals("aes256gcm16-x25519").unwrap_err(),
        ProposalError::AeadNeedsPrf("aes256gcm16-x25519".into())
    );
    assert!(
        parse_ike_proposals("aes256gcm16-x25519")
            .unwrap_err()
            .to_string()
            .contains("AEAD IKE proposal needs a PRF")
    );
    assert_eq!(
        parse_ike_proposals("aes256-prfsha256-x25519").unwrap_err(),
        ProposalError::MissingInteg("aes256-prfsha256-x25519".into())
    );
    assert_eq!(
        parse_ike_proposals("aes256-sha256").unwrap_err(),
        ProposalError::MissingKe("aes256-sha256".into())
    );
    assert_eq!(
        parse_ike_proposals("sha256-x25519").unwrap_err(),
        ProposalError::MissingEncr("sha256-x25519".into())
    );
    assert_eq!(
        parse_ike_proposals("aes256-aes256gcm16-sha256-x25519").unwrap_err(),
        ProposalError::MixedAead("aes256-aes256gcm16-sha256-x25519".into())
    );
    assert!(
        matches!(parse_ike_proposals("aes256gcm16-prfsha256-x25519-esn"), Err(ProposalError::NotAllowed { token, .. }) if token == "esn")
    );
    assert!(
        matches!(parse_esp_proposals("aes256gcm16-prfsha256"), Err(ProposalError::NotAllowed { token, .. }) if token == "prfsha256")
    );
    assert!(
        matches!(parse_esp_proposals("aes256gcm16-sha256"), Err(ProposalError::IntegWithAead { token, .. }) if token == "sha256")
    );
    assert_eq!(
        parse_esp_proposals("aes256").unwrap_err(),
        ProposalError::MissingInteg("aes256".into())
    );
    for bad in [
        "",
        " ",
        "aes256gcm16,",
        "aes256gcm16--esn",
        "-aes256gcm16",
        "aes256gcm16,,aes128gcm16",
    ] {
        assert!(
            matches!(parse_esp_proposals(bad), Err(ProposalError::Empty(_))),
            "{bad:?}"
        );
    }
    assert!(
        matches!(parse_esp_proposals("3des-md5"), Err(ProposalError::UnknownToken { token, .. }) if token == "3des")
    );
}

#[test]
fn display_round_trips() {
    for s in [
        "aes256gcm16-prfsha256-x25519",
        "aes128-aes256-sha256-sha384-prfsha256-prfsha384-modp2048-ecp256",
        "chacha20poly1305-aes128gcm16-prfsha512-mlkem768-x25519",
    ] {
        let p = parse_ike_proposals(s).unwrap();
        assert_eq!(p[0].to_string(), s);
        assert_eq!(parse_ike_proposals(&p[0].to_string()).unwrap(), p);
    }
    assert_eq!(
        parse_ike_proposals("aes128-sha256-modp2048").unwrap()[0].to_string(),
        "aes128-sha256-prfsha256-modp2048"
    );
    for s in [
        "aes256gcm16",
        "aes128-sha256",
        "aes256gcm16-x25519-esn",
        "aes128gcm16-esn-noesn",
        "aes128gcm16-noesn-esn",
    ] {
        let p = parse_esp_proposals(s).unwrap();
        assert_eq!(p[0].to_string(), s);
    }
    assert_eq!(
        parse_esp_proposals("aes128gcm16-noesn").unwrap()[0].to_string(),
        "aes128gcm16"
    );
}

fn ike_offer(s: &str, number: u8) -> Proposal {
    parse_ike_proposals(s).unwrap()[0].to_wire(number, &[])
}

fn esp_offer(s: &str, number: u8) -> Proposal {
    parse_esp_proposals(s).unwrap()[0].to_wire(number, 0xc0ffee01)
}

#[test]
fn to_wire_layout() {
    let p = parse_esp_proposals("aes128-sha256").unwrap()[0].to_wire(2, 0x01020304);
    assert_eq!(p.number, 2);
    assert_eq!(p.protocol, ProtocolId::ESP);
    assert_eq!(p.spi, vec![1, 2, 3, 4]);
    assert_eq!(
        p.transforms,
        vec![
            Transform {
                ty: TransformType::ENCR,
                id: 12,
                attributes: vec![TransformAttribute::KeyLength(128)]
            },
            Transform {
                ty: TransformType::INTEG,
                id: 12,
                attributes: vec![]
            },
            Transform {
                ty: TransformType::ESN,
                id: 0,
                attributes: vec![]
            },
        ]
    );
    let p = ike_offer("chacha20poly1305-prfsha256-x25519", 1);
    assert_eq!(p.protocol, ProtocolId::IKE);
    assert!(p.spi.is_empty());
    assert_eq!(
        p.transforms,
        vec![
            Transform {
                ty: TransformType::ENCR,
                id: 28,
                attributes: vec![]
            },
            Transform {
                ty: TransformType::PRF,
                id: 5,
                attributes: vec![]
            },
            Transform {
                ty: TransformType::KE,
                id: 31,
                attributes: vec![]
            },
        ]
    );
}

#[test]
fn ike_selection_prefers_our_order() {
    let ours = parse_ike_proposals("aes256gcm16-aes128gcm16-prfsha384-prfsha256-x25519-ecp256, aes256-sha256-modp2048")
        .unwrap();
    // Peer lists weak first, in one proposal and across proposals.
    let offered = vec![
        ike_offer("aes128-sha256-modp2048", 1),
        ike_offer("aes128gcm16-aes256gcm16-prfsha256-prfsha384-ecp256-x25519", 2),
    ];
    let s = select_ike(&ours, &offered).unwrap();
    assert_eq!(s.suite.encr, GCM256);
    assert_eq!(s.suite.integ, None);
    assert_eq!(s.suite.prf, PrfAlg::HmacSha384);
    assert_eq!(s.suite.ke, KeGroup::Curve25519);
    assert_eq!(s.proposal.number, 2);
    assert_eq!(
        s.proposal.transforms.iter().map(|t| (t.ty, t.id)).collect::<Vec<_>>(),
        vec![
            (TransformType::ENCR, 20),
            (TransformType::PRF, 6),
            (TransformType::KE, 31)
        ]
    );
    // Only our second proposal matches.
    let offered = vec![ike_offer("aes128-aes256-sha384-sha256-modp2048", 1)];
    let s = select_ike(&ours, &offered).unwrap();
    assert_eq!(s.suite.encr, CBC256);
    assert_eq!(s.suite.integ, Some(IntegAlg::HmacSha256_128));
    assert_eq!(s.suite.prf, PrfAlg::HmacSha256);
    // Echo carries the peer's SPI (rekey).
    let mut rekey = offered[0].clone();
    rekey.spi = vec![9; 8];
    assert_eq!(select_ike(&ours, &[rekey]).unwrap().proposal.spi, vec![9; 8]);
}

#[test]
fn ike_selection_ignores_unknown_transforms_and_attributes() {
    let ours = parse_ike_proposals("aes256gcm16-prfsha256-x25519").unwrap();
    let mut p = ike_offer("aes256gcm16-prfsha256-x25519", 1);
    p.transforms.insert(
        0,
        Transform {
            ty: TransformType::ENCR,
            id: 99,
            attributes: vec![],
        },
    );
    p.transforms.insert(
        0,
        Transform {
            ty: TransformType::KE,
            id: 2,
            attributes: vec![],
        },
    );
    assert!(select_ike(&ours, std::slice::from_ref(&p)).is_ok());
    // The only ENCR carries an unknown attribute: no match.
    let mut p = ike_offer("aes256gcm16-prfsha256-x25519", 1);
    p.transforms[0].attributes.push(TransformAttribute::Other {
        ty: 99,
        tv: true,
        value: vec![0, 1],
    });
    assert!(select_ike(&ours, &[p]).is_err());
    // An unknown transform type makes the proposal unacceptable.
    let mut p = ike_offer("aes256gcm16-prfsha256-x25519", 1);
    p.transforms.push(Transform {
        ty: TransformType(42),
        id: 1,
        attributes: vec![],
    });
    let m = select_ike(&ours, &[p]).unwrap_err();
    assert!(m.reason.contains("unknown transform type 42"), "{}", m.reason);
    // Additional key exchange offered with NONE is fine, without NONE it is not.
    let mut p = ike_offer("aes256gcm16-prfsha256-x25519", 1);
    p.transforms.push(Transform {
        ty: TransformType::ADDKE1,
        id: 35,
        attributes: vec![],
    });
    assert!(select_ike(&ours, std::slice::from_ref(&p)).is_err());
    p.transforms.push(Transform {
        ty: TransformType::ADDKE1,
        id: 0,
        attributes: vec![],
    });
    assert!(select_ike(&ours, &[p]).is_ok());
    // Wrong protocol or SPI size.
    let mut p = ike_offer("aes256gcm16-prfsha256-x25519", 1);
    p.spi = vec![1, 2, 3, 4];
    assert!(select_ike(&ours, &[p]).is_err());
    let mut p = ike_offer("aes256gcm16-prfsha256-x25519", 1);
    p.protocol = ProtocolId::ESP;
    assert!(select_ike(&ours, &[p]).is_err());
}

#[test]
fn ike_mismatch_message() {
    let ours = parse_ike_proposals("aes256gcm16-aes128gcm16-prfsha256-ecp256-x25519").unwrap();
    let mut p = ike_offer("aes128-sha256-modp2048", 1);
    p.transforms.retain(|t| t.ty != TransformType::KE);
    p.transforms.push(Transform {
        ty: TransformType::KE,
        id: 2,
        attributes: vec![],
    });
    let m = select_ike(&ours, &[p]).unwrap_err();
    assert_eq!(m.offered, vec!["aes128-prfsha256-sha256-modp1024".to_string()]);
    assert_eq!(
        m.accepted,
        vec!["aes256gcm16-aes128gcm16-prfsha256-ecp256-x25519".to_string()]
    );
    assert_eq!(
        m.reason,
        "no common ENCR: peer aes128, we aes256gcm16, aes128gcm16; no common KE: peer modp1024, we ecp256, x25519"
    );
    let text = m.to_string();
    assert!(text.contains("no common KE"), "{text}");
    // All types overlap, but no single proposal combines them.
    let offered = vec![
        ike_offer("aes256gcm16-prfsha384-x25519", 1),
        ike_offer("aes128-sha256-modp2048", 2),
    ];
    let m = select_ike(&parse_ike_proposals("aes256gcm16-prfsha256-x25519").unwrap(), &offered).unwrap_err();
    assert_eq!(
        m.reason,
        "peer proposal 1 has no common PRF; peer proposal 2 has no common ENCR, KE"
    );
    let offered = vec![
        ike_offer("aes256gcm16-prfsha256-modp2048", 1),
        ike_offer("aes256gcm16-prfsha256-x25519", 2),
    ];
    let ours = parse_ike_proposals("aes256gcm16-prfsha256-modp2048-x25519").unwrap();
    assert!(select_ike(&ours, &offered).is_ok());
    let m = select_ike(&ours, &[]).unwrap_err();
    assert!(m.reason.contains("no IKE proposal"));
}

#[test]
fn esp_selection_and_pfs() {
    let ours = parse_esp_proposals("aes256gcm16-aes128gcm16, aes256-sha384-sha256").unwrap();
    let offered = vec![esp_offer("aes128-sha256", 1), esp_offer("aes128gcm16-aes256gcm16", 2)];
    let s = select_esp(&ours, &offered).unwrap();
    assert_eq!((s.encr, s.integ, s.ke, s.esn), (GCM256, None, None, false));
    assert_eq!(s.peer_spi, 0xc0ffee01);
    assert_eq!(s.proposal.number, 2);
    assert_eq!(s.proposal.spi, vec![0xc0, 0xff, 0xee, 0x01]);
    assert_eq!(
        s.proposal.transforms.iter().map(|t| (t.ty, t.id)).collect::<Vec<_>>(),
        vec![(TransformType::ENCR, 20), (TransformType::ESN, 0)]
    );
    // Peer requires PFS, we have none: no match unless NONE is offered too.
    let pfs = esp_offer("aes256gcm16-x25519", 1);
    let m = select_esp(&ours, std::slice::from_ref(&pfs)).unwrap_err();
    assert!(m.reason.contains("no common KE: peer x25519, we none"), "{}", m.reason);
    let mut pfs_opt = pfs.clone();
    pfs_opt.transforms.push(Transform {
        ty: TransformType::KE,
        id: 0,
        attributes: vec![],
    });
    let s = select_esp(&ours, &[pfs_opt]).unwrap();
    assert_eq!(s.ke, None);
    assert!(s.proposal.transforms.iter().all(|t| t.ty != TransformType::KE));
    // We require PFS.
    let ours_pfs = parse_esp_proposals("aes256gcm16-ecp256-x25519").unwrap();
    let s = select_esp(&ours_pfs, &[esp_offer("aes256gcm16-x25519-ecp256", 1)]).unwrap();
    assert_eq!(s.ke, Some(KeGroup::Ecp256));
    assert!(select_esp(&ours_pfs, &[esp_offer("aes256gcm16", 1)]).is_err());
    assert!(select_esp(&[ours_pfs[0].without_pfs()], &[esp_offer("aes256gcm16", 1)]).is_ok());
    // Bad SPI sizes are not usable.
    let mut p = esp_offer("aes256gcm16", 1);
    p.spi = vec![];
    assert!(select_esp(&ours, &[p]).unwrap_err().reason.contains("4-byte SPI"));
}

#[test]
fn esn_negotiation() {
    let esn_pref = parse_esp_proposals("aes256gcm16-esn-noesn").unwrap();
    let noesn_only = parse_esp_proposals("aes256gcm16").unwrap();
    let both = esp_offer("aes256gcm16-noesn-esn", 1);
    assert!(
        select_esp(&esn_pref, std::slice::from_ref(&both)).unwrap().esn,
        "our preference wins"
    );
    assert!(!select_esp(&noesn_only, std::slice::from_ref(&both)).unwrap().esn);
    let esn_only = esp_offer("aes256gcm16-esn", 1);
    let m = select_esp(&noesn_only, std::slice::from_ref(&esn_only)).unwrap_err();
    assert!(m.reason.contains("no common ESN: peer esn, we noesn"), "{}", m.reason);
    // A proposal without any ESN transform does not match.
    let mut no_esn = esp_offer("aes256gcm16", 1);
    no_esn.transforms.retain(|t| t.ty != TransformType::ESN);
    assert!(select_esp(&noesn_only, &[no_esn]).is_err());
}

#[test]
fn downgrade_attempts_fail_or_pick_strong() {
    // A peer offering only weak algorithms in front cannot make us choose them.
    let ours = parse_ike_proposals("aes256gcm16-prfsha512-prfsha256-x25519-modp2048").unwrap();
    let offered = vec![
        ike_offer("aes256gcm16-prfsha256-modp2048", 1),
        ike_offer("aes256gcm16-prfsha256-prfsha512-modp2048-x25519", 2),
    ];
    let s = select_ike(&ours, &offered).unwrap();
    assert_eq!(
        (s.suite.prf, s.suite.ke, s.proposal.number),
        (PrfAlg::HmacSha512, KeGroup::Curve25519, 2)
    );
    // AES without key length (invalid) is ignored, not treated as AES-128.
    let mut p = ike_offer("aes128-sha256-modp2048", 1);
    p.transforms[0].attributes.clear();
    assert!(select_ike(&parse_ike_proposals("aes128-sha256-modp2048").unwrap(), &[p]).is_err());
}

#[test]
fn initiator_accepts_only_what_it_offered() {
    let ours = parse_ike_proposals("aes256gcm16-prfsha256-x25519, aes128-sha256-modp2048").unwrap();
    let good = ike_offer("aes128-sha256-modp2048", 2);
    let s = accept_ike_response(&ours, &good).unwrap();
    assert_eq!(s.suite.encr, CBC128);
    assert_eq!(s.suite.integ, Some(IntegAlg::HmacSha256_128));
    // Cross-proposal combination: AEAD with modp2048 was never offered.
    assert!(accept_ike_response(&ours, &ike_offer("aes256gcm16-prfsha256-modp2048", 1)).is_err());
    // More than one transform of a type.
    assert!(accept_ike_response(&ours, &ike_offer("aes256gcm16-prfsha256-x25519-modp2048", 1)).is_err());
    // Unknown transform.
    let mut p = ike_offer("aes256gcm16-prfsha256-x25519", 1);
    p.transforms.push(Transform {
        ty: TransformType::ADDKE1,
        id: 35,
        attributes: vec![],
    });
    assert!(accept_ike_response(&ours, &p).is_err());
    // INTEG NONE with AEAD is tolerated.
    let mut p = ike_offer("aes256gcm16-prfsha256-x25519", 1);
    p.transforms.push(Transform {
        ty: TransformType::INTEG,
        id: 0,
        attributes: vec![],
    });
    assert!(accept_ike_response(&ours, &p).is_ok());

    let esp = parse_esp_proposals("aes256gcm16-esn, aes128-sha256-ecp256").unwrap();
    let s = accept_esp_response(&esp, &esp_offer("aes256gcm16-esn", 1)).unwrap();
    assert!(s.esn);
    assert_eq!(s.peer_spi, 0xc0ffee01);
    assert!(
        accept_esp_response(&esp, &esp_offer("aes256gcm16", 1)).is_err(),
        "noesn not offered"
    );
    assert!(
        accept_esp_response(&esp, &esp_offer("aes128-sha256", 1)).is_err(),
        "PFS dropped"
    );
    assert!(accept_esp_response(&esp, &esp_offer("aes128-sha256-ecp256", 2)).is_ok());
    let mut p = esp_offer("aes256gcm16-esn", 1);
    p.spi = vec![1, 2, 3, 4, 5, 6, 7, 8];
    assert!(accept_esp_response(&esp, &p).is_err());
}

#[test]
fn initiator_accepts_a_later_proposal_by_its_number() {
    let ours = parse_ike_proposals("aes128gcm16-prfsha256-x25519, aes256gcm16-prfsha256-x25519").unwrap();
    let s = accept_ike_response(&ours, &ike_offer("aes256gcm16-prfsha256-x25519", 2)).unwrap();
    assert_eq!(s.suite.encr, EncrAlg::AesGcm16 { key_bits: 256 });
    assert_eq!(s.proposal.number, 2, "the chosen proposal keeps its number");
    // The number names the proposal: its algorithms must be in that one.
    let m = accept_ike_response(&ours, &ike_offer("aes256gcm16-prfsha256-x25519", 1)).unwrap_err();
    assert!(
        m.reason
            .contains("our proposal 1 (aes128gcm16-prfsha256-x25519) does not contain"),
        "{m}"
    );
    for n in [0, 3] {
        let m = accept_ike_response(&ours, &ike_offer("aes128gcm16-prfsha256-x25519", n)).unwrap_err();
        assert!(m.reason.contains("we offered proposals 1 to 2"), "{m}");
    }

    let esp = parse_esp_proposals("aes128gcm16, aes256-sha256").unwrap();
    let s = accept_esp_response(&esp, &esp_offer("aes256-sha256", 2)).unwrap();
    assert_eq!(s.integ, Some(IntegAlg::HmacSha256_128));
    assert!(accept_esp_response(&esp, &esp_offer("aes256-sha256", 1)).is_err());
    assert!(accept_esp_response(&esp, &esp_offer("aes128gcm16", 3)).is_err());
}

#[test]
fn additional_key_exchanges_are_named_by_their_group() {
    let ours = parse_ike_proposals("aes256gcm16-prfsha256-x25519").unwrap();
    let mut p = ike_offer("aes256gcm16-prfsha256-x25519", 1);
    p.transforms.push(Transform {
        ty: TransformType::ADDKE1,
        id: 36,
        attributes: vec![],
    });
    let m = select_ike(&ours, &[p]).unwrap_err();
    assert_eq!(m.offered, vec!["aes256gcm16-prfsha256-x25519-ke1_mlkem768".to_string()]);
}

// ------------------------------------------------- RFC 9370 additional KEs

const HYBRID: &str = "aes256gcm16-prfsha384-x25519-ke1_mlkem768-ke2_mlkem1024";

fn addke(p: &Proposal) -> Vec<(u8, u16)> {
    p.transforms
        .iter()
        .filter(|t| (6..=12).contains(&t.ty.0))
        .map(|t| (t.ty.0, t.id))
        .collect()
}

#[test]
fn strongswan6_hybrid_syntax_parses_renders_and_encodes() {
    let p = &parse_ike_proposals(HYBRID).unwrap()[0];
    assert_eq!(p.ke, vec![KeGroup::Curve25519]);
    assert_eq!(p.additional_ke[0], vec![Some(KeGroup::MlKem768)]);
    assert_eq!(p.additional_ke[1], vec![Some(KeGroup::MlKem1024)]);
    assert!(p.additional_ke[2..].iter().all(Vec::is_empty));
    assert_eq!(p.to_string(), HYBRID);
    // ADDKE1 is transform type 6, ADDKE2 type 7; NONE is ID 0.
    assert_eq!(addke(&p.to_wire(1, &[])), vec![(6, 36), (7, 37)]);
    let optional = &parse_ike_proposals("aes256gcm16-prfsha384-x25519-ke1_mlkem768-ke1_none-ke7_mlkem512").unwrap()[0];
    assert_eq!(optional.additional_ke[0], vec![Some(KeGroup::MlKem768), None]);
    assert_eq!(addke(&optional.to_wire(1, &[])), vec![(6, 36), (6, 0), (12, 35)]);
    assert_eq!(
        optional.to_string(),
        "aes256gcm16-prfsha384-x25519-ke1_mlkem768-ke1_none-ke7_mlkem512"
    );
    for bad in ["ke0_mlkem768", "ke8_mlkem768", "ke1_aes256", "ke1_", "ke1_mlkem999"] {
        let e = parse_ike_proposals(&format!("aes256gcm16-prfsha384-x25519-{bad}")).unwrap_err();
        assert!(
            matches!(e, ProposalError::UnknownToken { ref token, .. } if token == bad),
            "{bad}: {e}"
        );
    }
    // ESP: additional key exchanges follow a PFS one (IKE_FOLLOWUP_KE).
    let esp = &parse_esp_proposals("aes256gcm16-x25519-ke1_mlkem768-ke1_none").unwrap()[0];
    assert_eq!(esp.additional_ke[0], vec![Some(KeGroup::MlKem768), None]);
    assert_eq!(addke(&esp.to_wire(1, 1)), vec![(6, 36), (6, 0)]);
    assert_eq!(esp.to_string(), "aes256gcm16-x25519-ke1_mlkem768-ke1_none");
    assert!(esp.without_pfs().additional_ke.iter().all(Vec::is_empty));
    assert!(matches!(
        parse_esp_proposals("aes256gcm16-ke1_mlkem768"),
        Err(ProposalError::AdditionalKeWithoutPfs { .. })
    ));
}

#[test]
fn responder_selects_additional_key_exchanges_in_our_order() {
    let ours = parse_ike_proposals("aes256gcm16-prfsha384-x25519-ke1_mlkem1024-ke1_mlkem768").unwrap();
    // The peer prefers ML-KEM-768; we prefer ML-KEM-1024 and get it.
    let peer = ike_offer("aes256gcm16-prfsha384-x25519-ke1_mlkem768-ke1_mlkem1024", 1);
    let s = select_ike(&ours, &[peer]).unwrap();
    assert_eq!(s.additional_ke, vec![(1, KeGroup::MlKem1024)]);
    assert_eq!(addke(&s.proposal), vec![(6, 37)]);
    // Three exchanges.
    let ours = parse_ike_proposals(HYBRID).unwrap();
    let s = select_ike(&ours, &[ike_offer(HYBRID, 1)]).unwrap();
    assert_eq!(s.additional_ke, vec![(1, KeGroup::MlKem768), (2, KeGroup::MlKem1024)]);
    assert_eq!(addke(&s.proposal), vec![(6, 36), (7, 37)]);
}

#[test]
fn required_additional_key_exchange_refuses_a_peer_that_drops_it() {
    let ours = parse_ike_proposals("aes256gcm16-prfsha384-x25519-ke1_mlkem768").unwrap();
    // A classical-only peer: no ADDKE1 at all.
    let m = select_ike(&ours, &[ike_offer("aes256gcm16-prfsha384-x25519", 1)]).unwrap_err();
    assert!(m.reason.contains("ADDKE1"), "{}", m.reason);
    assert!(m.reason.contains("ke1_mlkem768"), "{}", m.reason);
    // A peer that offers only NONE for it.
    let m = select_ike(&ours, &[ike_offer("aes256gcm16-prfsha384-x25519-ke1_none", 1)]).unwrap_err();
    assert!(m.reason.contains("ADDKE1"), "{}", m.reason);
    // A peer offering a method we do not list.
    assert!(select_ike(&ours, &[ike_offer("aes256gcm16-prfsha384-x25519-ke1_mlkem512", 1)]).is_err());
    // A peer offering it or NONE: we pick ours, never the downgrade.
    let s = select_ike(
        &ours,
        &[ike_offer("aes256gcm16-prfsha384-x25519-ke1_none-ke1_mlkem768", 1)],
    )
    .unwrap();
    assert_eq!(s.additional_ke, vec![(1, KeGroup::MlKem768)]);
}

#[test]
fn optional_additional_key_exchange_accepts_a_classical_peer() {
    let ours = parse_ike_proposals("aes256gcm16-prfsha384-x25519-ke1_mlkem768-ke1_none").unwrap();
    let s = select_ike(&ours, &[ike_offer("aes256gcm16-prfsha384-x25519", 1)]).unwrap();
    assert!(s.additional_ke.is_empty());
    assert!(addke(&s.proposal).is_empty());
    // A PQ peer still gets ML-KEM: NONE is our last choice.
    let s = select_ike(
        &ours,
        &[ike_offer("aes256gcm16-prfsha384-x25519-ke1_none-ke1_mlkem768", 1)],
    )
    .unwrap();
    assert_eq!(s.additional_ke, vec![(1, KeGroup::MlKem768)]);
    // We do no ADDKE: a peer that requires one is refused, one with NONE is not.
    let classical = parse_ike_proposals("aes256gcm16-prfsha384-x25519").unwrap();
    assert!(select_ike(&classical, &[ike_offer("aes256gcm16-prfsha384-x25519-ke1_mlkem768", 1)]).is_err());
    let s = select_ike(
        &classical,
        &[ike_offer("aes256gcm16-prfsha384-x25519-ke1_mlkem768-ke1_none", 1)],
    )
    .unwrap();
    assert!(s.additional_ke.is_empty());
}

#[test]
fn initiator_checks_the_responders_additional_key_exchanges() {
    let ours = parse_ike_proposals("aes256gcm16-prfsha384-x25519-ke1_mlkem768-ke2_mlkem1024").unwrap();
    let s = accept_ike_response(&ours, &ike_offer(HYBRID, 1)).unwrap();
    assert_eq!(s.additional_ke, vec![(1, KeGroup::MlKem768), (2, KeGroup::MlKem1024)]);
    // Responder dropped ADDKE2, which we require.
    let m = accept_ike_response(&ours, &ike_offer("aes256gcm16-prfsha384-x25519-ke1_mlkem768", 1)).unwrap_err();
    assert!(m.reason.contains("dropped additional key exchange 2"), "{}", m.reason);
    // Responder chose NONE for it.
    let m = accept_ike_response(
        &ours,
        &ike_offer("aes256gcm16-prfsha384-x25519-ke1_mlkem768-ke2_none", 1),
    )
    .unwrap_err();
    assert!(m.reason.contains("dropped additional key exchange 2"), "{}", m.reason);
    // Responder chose a method we did not offer.
    assert!(
        accept_ike_response(
            &ours,
            &ike_offer("aes256gcm16-prfsha384-x25519-ke1_mlkem512-ke2_mlkem1024", 1)
        )
        .is_err()
    );
    // Responder chose two for one type.
    assert!(
        accept_ike_response(
            &ours,
            &ike_offer(
                "aes256gcm16-prfsha384-x25519-ke1_mlkem768-ke2_mlkem1024-ke2_mlkem768",
                1
            )
        )
        .is_err()
    );
    // Optional: NONE or absence accepted.
    let optional = parse_ike_proposals("aes256gcm16-prfsha384-x25519-ke1_mlkem768-ke1_none").unwrap();
    let s = accept_ike_response(&optional, &ike_offer("aes256gcm16-prfsha384-x25519", 1)).unwrap();
    assert!(s.additional_ke.is_empty());
    // We offered no ADDKE: a responder that picks one is wrong.
    let classical = parse_ike_proposals("aes256gcm16-prfsha384-x25519").unwrap();
    assert!(accept_ike_response(&classical, &ike_offer("aes256gcm16-prfsha384-x25519-ke1_mlkem768", 1)).is_err());
}

#[test]
fn downgrade_risks_are_explained() {
    let risks = |s: &str| parse_ike_proposals(s).unwrap()[0].downgrade_risks();
    assert!(risks(HYBRID).is_empty());
    assert!(risks("aes256gcm16-prfsha384-mlkem768").is_empty());
    assert!(
        risks("aes256gcm16-prfsha384-x25519").is_empty(),
        "not post-quantum at all: nothing to downgrade"
    );
    let r = risks("aes256gcm16-prfsha384-x25519-mlkem768");
    assert!(r.len() == 1 && r[0].contains("x25519 alone"), "{r:?}");
    let r = risks("aes256gcm16-prfsha384-x25519-ke1_mlkem768-ke1_none");
    assert!(
        r.len() == 1 && r[0].contains("additional key exchange 1 is optional"),
        "{r:?}"
    );
    let r = risks("aes256gcm16-prfsha384-x25519-ke1_mlkem768-ke1_ecp384");
    assert!(r.len() == 1 && r[0].contains("may choose ecp384"), "{r:?}");
    assert!(parse_ike_proposals(HYBRID).unwrap()[0].requires_post_quantum());
    assert!(
        !parse_ike_proposals("aes256gcm16-prfsha384-x25519-ke1_mlkem768-ke1_none").unwrap()[0].requires_post_quantum()
    );
}

mod additional_ke_properties {
    use super::*;
    use proptest::prelude::*;

    /// Our policies: required, optional, three exchanges, none.
    const OURS: [&str; 4] = [
        "aes256gcm16-prfsha384-x25519-ke1_mlkem768",
        "aes256gcm16-prfsha384-x25519-ke1_mlkem1024-ke1_mlkem768-ke1_none",
        "aes256gcm16-prfsha384-x25519-ke1_mlkem768-ke2_mlkem1024",
        "aes256gcm16-prfsha384-x25519",
    ];

    fn peer_transform() -> impl Strategy<Value = Transform> {
        // Types 1..=14 (ADDKE1..7 are 6..=12), IDs around the ones we know.
        (
            1u8..=14,
            prop::sample::select(vec![0u16, 1, 5, 6, 20, 28, 31, 35, 36, 37, 99, 0xffff]),
        )
            .prop_map(|(ty, id)| Transform {
                ty: TransformType(ty),
                id,
                attributes: if ty == 1 {
                    vec![TransformAttribute::KeyLength(256)]
                } else {
                    vec![]
                },
            })
    }

    fn peer_proposal() -> impl Strategy<Value = Proposal> {
        (1u8..=4, prop::collection::vec(peer_transform(), 0..24)).prop_map(|(number, extra)| {
            // A valid classical base so that selection reaches the ADDKE rules.
            let mut p = ike_offer("aes256gcm16-prfsha384-x25519", number);
            p.transforms.extend(extra);
            p
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Whatever the peer offers, selection never panics and never gives
        /// less than a required additional key exchange; what it echoes holds
        /// exactly what it chose, which our initiator side accepts.
        #[test]
        fn selection_never_drops_a_required_exchange(which in 0usize..4, offered in prop::collection::vec(peer_proposal(), 1..4)) {
            let ours = parse_ike_proposals(OURS[which]).unwrap();
            if let Ok(s) = select_ike(&ours, &offered) {
                for (i, methods) in ours[0].additional_ke.iter().enumerate() {
                    let n = u8::try_from(i + 1).unwrap();
                    let chosen = s.additional_ke.iter().find(|(t, _)| *t == n).map(|(_, g)| Some(*g));
                    if methods.is_empty() {
                        prop_assert!(chosen.is_none());
                    } else if !methods.contains(&None) {
                        prop_assert!(chosen.is_some_and(|g| methods.contains(&g)), "ADDKE{n} dropped: {:?}", s.additional_ke);
                    }
                }
                let mut echoed = s.proposal.clone();
                echoed.number = 1;
                let back = accept_ike_response(&ours, &echoed).unwrap();
                prop_assert_eq!(back.additional_ke, s.additional_ke);
            }
        }
    }
}

#[test]
fn esp_offer_requiring_an_additional_key_exchange_is_not_selected() {
    // A proposal of ours without ADDKE1: a peer's whose ADDKE1 leaves no
    // NONE must not be chosen with the additional exchange silently dropped.
    let ours = parse_esp_proposals("aes256gcm16-x25519").unwrap();
    let with_addke = |ids: &[u16]| {
        let mut p = esp_offer("aes256gcm16-x25519", 1);
        p.transforms.extend(ids.iter().map(|&id| Transform {
            ty: TransformType(6),
            id,
            attributes: Vec::new(),
        }));
        p
    };
    let m = select_esp(&ours, &[with_addke(&[36])]).unwrap_err();
    assert!(
        m.reason
            .contains("no common additional key exchange 1 (ADDKE1): peer ke1_mlkem768, we ke1_none"),
        "{}",
        m.reason
    );
    let s = select_esp(&ours, &[with_addke(&[36]), esp_offer("aes256gcm16-x25519", 2)]).unwrap();
    assert_eq!(s.proposal.number, 2);
    // NONE offered: the classical choice is the peer's own.
    let s = select_esp(&ours, &[with_addke(&[36, 0])]).unwrap();
    assert!(addke(&s.proposal).is_empty());
    assert_eq!(s.ke, Some(KeGroup::Curve25519));
}
