//! Identity parsing, wire conversion, display and matching.

use std::net::{Ipv4Addr, Ipv6Addr};

use control::pki::{DistinguishedName, Identity};
use control::wire::ikev2::types::{IdType, Identification};
use proptest::prelude::*;

fn wire(s: &str) -> Identification {
    Identity::parse(s).unwrap().to_wire().unwrap()
}

#[test]
fn parses_like_strongswan() {
    let cases: &[(&str, IdType, &[u8])] = &[
        ("a@test", IdType::RFC822_ADDR, b"a@test"),
        ("@moon.strongswan.org", IdType::FQDN, b"moon.strongswan.org"),
        ("moon.strongswan.org", IdType::FQDN, b"moon.strongswan.org"),
        ("@@carol", IdType::RFC822_ADDR, b"carol"),
        ("10.0.0.1", IdType::IPV4_ADDR, &[10, 0, 0, 1]),
        (
            "::1",
            IdType::IPV6_ADDR,
            &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        ),
        ("@#0102ff", IdType::KEY_ID, &[1, 2, 0xff]),
        ("@1.2.3.4", IdType::FQDN, b"1.2.3.4"),
    ];
    for (s, t, d) in cases {
        let w = wire(s);
        assert_eq!((w.id_type, w.data.as_slice()), (*t, *d), "{s}");
    }
    assert_eq!(Identity::parse("%any").unwrap(), Identity::Any);
    assert_eq!(Identity::parse("").unwrap(), Identity::Any);
    assert!(Identity::parse("%any").unwrap().to_wire().is_err());
    assert!(Identity::parse("@").is_err());
    assert!(Identity::parse("@#abc").is_err());
    assert!(Identity::parse("@#zz").is_err());
    assert!(Identity::parse("C=CH, XY=1").is_err());
}

#[test]
fn dn_identity_encodes_der() {
    let w = wire("C=CH, O=strongSwan, CN=moon");
    assert_eq!(w.id_type, IdType::DER_ASN1_DN);
    assert_eq!(
        hex::encode(&w.data),
        // SEQUENCE { SET { SEQ { 2.5.4.6, PrintableString "CH" } }, SET { SEQ { 2.5.4.10, "strongSwan" } },
        //            SET { SEQ { 2.5.4.3, "moon" } } }
        "3031310b300906035504061302434831133011060355040a130a7374726f6e675377616e310d300b060355040313046d6f6f6e"
    );
    let dn = DistinguishedName::from_der(&w.data).unwrap();
    assert_eq!(dn.to_string(), "C=CH, O=strongSwan, CN=moon");
    let all = wire("C=CH, ST=ZH, L=Zurich, O=strongSwan, OU=Test, CN=moon, E=moon@example.com, DC=org, serialNumber=7");
    let back = Identity::from_wire(&all).unwrap();
    assert_eq!(
        back.to_string(),
        "C=CH, ST=ZH, L=Zurich, O=strongSwan, OU=Test, CN=moon, E=moon@example.com, DC=org, serialNumber=7"
    );
    assert_eq!(Identity::parse("emailAddress=x@y").unwrap().to_string(), "E=x@y");
}

#[test]
fn display_round_trips() {
    for s in [
        "a@test",
        "moon.strongswan.org",
        "10.0.0.1",
        "2001:db8::1",
        "C=CH, O=strongSwan, CN=moon",
        "%any",
        "@#0102",
    ] {
        let id = Identity::parse(s).unwrap();
        assert_eq!(id.to_string(), s);
        assert_eq!(Identity::parse(&id.to_string()).unwrap(), id);
        if id != Identity::Any {
            assert_eq!(Identity::from_wire(&id.to_wire().unwrap()).unwrap(), id);
        }
    }
    assert_eq!(Identity::parse("@moon").unwrap().to_string(), "moon");
}

#[test]
fn from_wire_validates() {
    let bad = [
        Identification {
            id_type: IdType::IPV4_ADDR,
            data: vec![1, 2, 3],
        },
        Identification {
            id_type: IdType::IPV6_ADDR,
            data: vec![0; 4],
        },
        Identification {
            id_type: IdType::FQDN,
            data: vec![0xff, 0xfe],
        },
        Identification {
            id_type: IdType::DER_ASN1_DN,
            data: vec![0x30, 0x05, 0x31],
        },
        Identification {
            id_type: IdType::DER_ASN1_DN,
            data: vec![],
        },
    ];
    for id in &bad {
        assert!(Identity::from_wire(id).is_err(), "{id:?}");
    }
    let other = Identification {
        id_type: IdType::DER_ASN1_GN,
        data: vec![1, 2],
    };
    assert!(matches!(Identity::from_wire(&other).unwrap(), Identity::Other { .. }));
    assert_eq!(
        Identity::from_wire(&Identification {
            id_type: IdType::IPV4_ADDR,
            data: vec![192, 0, 2, 1]
        })
        .unwrap(),
        Identity::Ipv4(Ipv4Addr::new(192, 0, 2, 1))
    );
    assert_eq!(Identity::parse("::1").unwrap(), Identity::Ipv6(Ipv6Addr::LOCALHOST));
}

#[test]
fn matching_table() {
    let cases: &[(&str, &str, bool)] = &[
        // exact
        ("a@test", "a@test", true),
        ("a@test", "A@TEST", true),
        ("a@test", "b@test", false),
        ("moon.example.com", "@MOON.example.com", true),
        ("moon.example.com", "sun.example.com", false),
        ("10.0.0.1", "10.0.0.1", true),
        ("10.0.0.1", "10.0.0.2", false),
        ("::1", "::1", true),
        ("@#0102", "@#0102", true),
        ("@#0102", "@#0103", false),
        // type must agree
        ("moon.example.com", "moon.example.com@x", false),
        ("a@test", "@a@test", false),
        ("10.0.0.1", "@10.0.0.1", false),
        // wildcards
        ("%any", "a@test", true),
        ("%any", "C=CH, CN=x", true),
        ("%any", "::1", true),
        ("*@example.com", "carol@example.com", true),
        ("*@example.com", "carol@EXAMPLE.com", true),
        ("*@example.com", "carol@example.org", false),
        ("*@example.com", "example.com", false),
        ("*.example.com", "moon.example.com", true),
        ("*.example.com", "a.b.example.com", true),
        ("*.example.com", "example.com", false),
        ("*.example.com", "moonexample.com", false),
        ("*.example.com", "x@moon.example.com", false),
        ("*", "anything.at.all", true),
        // DNs: semantic comparison
        ("C=CH, O=strongSwan, CN=moon", "C=CH, O=strongSwan, CN=moon", true),
        ("C=CH, O=strongSwan, CN=moon", "c=ch,o=STRONGSWAN,cn=Moon", true),
        ("C=CH, O=strongSwan, CN=moon", "C=CH,  O=strongSwan,   CN=moon", true),
        ("C=CH, O=strongSwan, CN=moon", "C=CH, O=strongSwan, CN=sun", false),
        ("C=CH, O=strongSwan, CN=moon", "O=strongSwan, C=CH, CN=moon", false),
        (
            "C=CH, O=strongSwan, CN=moon",
            "C=CH, O=strongSwan, OU=x, CN=moon",
            false,
        ),
        ("C=CH, O=strongSwan, CN=moon", "C=CH, O=strongSwan", false),
        ("C=CH, O=strongSwan, CN=moon", "moon", false),
        ("C=CH, O=strongSwan, CN=*", "C=CH, O=strongSwan, CN=carol", true),
        ("C=CH, O=*, CN=*", "C=CH, O=Other, CN=carol", true),
        ("C=CH, O=strongSwan, CN=*", "C=DE, O=strongSwan, CN=carol", false),
        ("C=CH, O=strongSwan, CN=*", "C=CH, O=strongSwan, OU=a, CN=carol", false),
    ];
    for (pattern, presented, expected) in cases {
        let p = Identity::parse(pattern).unwrap();
        assert_eq!(p.matches(&wire(presented)), *expected, "{pattern} vs {presented}");
    }
    assert!(Identity::parse("*.example.com").unwrap().is_wildcard());
    assert!(Identity::parse("C=CH, CN=*").unwrap().is_wildcard());
    assert!(!Identity::parse("C=CH, CN=moon").unwrap().is_wildcard());
}

#[test]
fn dn_string_types_compare_semantically() {
    // Same DN with UTF8String, PrintableString and IA5String values.
    let utf8 = "3019310b300906035504060c024348310a300806035504030c0178";
    let printable = "3019310b3009060355040613024348310a30080603550403130158";
    let ia5 = "3019310b3009060355040616024348310a30080603550403160178";
    let pattern = Identity::parse("C=CH, CN=x").unwrap();
    for h in [utf8, printable, ia5] {
        let id = Identification {
            id_type: IdType::DER_ASN1_DN,
            data: hex::decode(h).unwrap(),
        };
        assert!(pattern.matches(&id), "{h}");
    }
    // A BMPString value.
    let odd = "301b310b3009060355040613024348310c300a06035504031e03007800";
    let id = Identification {
        id_type: IdType::DER_ASN1_DN,
        data: hex::decode(odd).unwrap(),
    };
    assert!(!pattern.matches(&id), "odd-length BMPString must not match");
    let bmp = "301a310b3009060355040613024348310b300906035504031e020078";
    let id = Identification {
        id_type: IdType::DER_ASN1_DN,
        data: hex::decode(bmp).unwrap(),
    };
    assert!(pattern.matches(&id));
}

proptest! {
    #[test]
    fn arbitrary_strings_never_panic(s in "\\PC{0,60}") {
        if let Ok(id) = Identity::parse(&s) {
            let _ = id.to_string();
            if let Ok(w) = id.to_wire() {
                prop_assert!(id.matches(&w) || id.is_wildcard() || matches!(id, Identity::Dn(_)));
            }
        }
    }

    #[test]
    fn arbitrary_id_payloads_never_panic(t in 0u8..12, data in proptest::collection::vec(any::<u8>(), 0..64)) {
        let w = Identification { id_type: IdType(t), data };
        if let Ok(id) = Identity::from_wire(&w) {
            let _ = id.to_string();
            prop_assert!(id.matches(&w));
        }
        let _ = Identity::parse("C=CH, CN=*").unwrap().matches(&w);
        let _ = Identity::parse("*.example.com").unwrap().matches(&w);
    }

    #[test]
    fn dn_strings_round_trip(cn in "[a-zA-Z0-9 .-]{1,20}", o in "[a-zA-Z0-9]{1,10}") {
        let s = format!("C=CH, O={o}, CN={}", cn.trim());
        prop_assume!(!cn.trim().is_empty());
        let dn = DistinguishedName::parse(&s).unwrap();
        let back = DistinguishedName::from_der(dn.as_der()).unwrap();
        prop_assert!(back.semantic_eq(&dn));
        prop_assert_eq!(back.to_string(), s);
    }
}
