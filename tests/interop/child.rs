//! CHILD_SA interop with a real strongSwan: charon with the kernel-libipsec
//! plugin (user-space ESP, so CHILD_SAs can be installed on this kernel) in
//! one network namespace, the `ironsa` daemon in another, joined by a veth
//! pair. kernel-libipsec fakes a NAT, so NAT detection and the move to the
//! NAT-T port are exercised. Checks the first CHILD_SA in both roles,
//! CHILD_SA rekey with PFS started by either side, and that both sides
//! agree on SPIs, algorithms and selectors through `swanctl --list-sas` and
//! `ironsa sas`, and a second child template that ironsa creates with
//! CREATE_CHILD_SA, deletes alone and initiates alone.
//!
//! Needs root, iproute2 and the strongSwan packages (scripts/install-deps.sh).

#[path = "../support/mod.rs"]
mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::Need;
use support::netns::{OUTER_A, OUTER_B, SUBNET_A, SUBNET_B};
use support::{
    AuthRound, Charon, Child, ChildSaInfo, Connection, IkeSaInfo, Ironsa, KernelBackend, NetnsPair, Secret, Target,
};

const PSK: &str = "a-long-random-test-secret-for-ironsa";
const T: Duration = Duration::from_secs(10);

fn ironsa_config(esp: &str) -> String {
    format!(
        r#"
[daemon]
listen = ["{OUTER_A}"]
shards = 2
control_socket = "SOCKET"

[[connection]]
name = "swan"
remote_addrs = ["{OUTER_B}"]
local_id = "a@test"
remote_id = "b@test"
psk = "{PSK}"
ike_proposals = "aes256gcm16-prfsha256-x25519"

[[connection.child]]
name = "net"
local_ts = ["{SUBNET_A}"]
remote_ts = ["{SUBNET_B}"]
esp_proposals = "{esp}"
"#
    )
}

fn charon(ns: &NetnsPair, esp: &str) -> Charon {
    charon_with(ns, esp, None)
}

/// Second child on both sides: 10.1.1.0/24 === 10.2.1.0/24.
const MORE_A: &str = "10.1.1.0/24";
const MORE_B: &str = "10.2.1.0/24";

/// charon with an optional second child template named `more`.
fn charon_with(ns: &NetnsPair, esp: &str, more: Option<&str>) -> Charon {
    let mut conn = Connection::new("ironsa", OUTER_B, OUTER_A)
        .proposals(&["aes256gcm16-prfsha256-x25519"])
        .local(AuthRound::psk("b@test"))
        .remote(AuthRound::psk("a@test"))
        .child(
            Child::new("net", SUBNET_B, SUBNET_A)
                .mode("tunnel")
                .esp_proposals(&[esp]),
        );
    if let Some(name) = more {
        conn = conn.child(Child::new(name, MORE_B, MORE_A).mode("tunnel").esp_proposals(&[esp]));
    }
    Charon::builder("libipsec")
        .kernel(KernelBackend::Libipsec {
            netns: ns.b.name().into(),
        })
        .log_level("chd", 2)
        .connection(conn)
        .secret(Secret::psk("ab", &["a@test", "b@test"], PSK))
        .start()
        .unwrap()
}

fn hex32(v: &Value) -> u32 {
    u32::from_str_radix(v.as_str().unwrap(), 16).unwrap()
}

/// The single installed child on each side, checked to mirror each other.
fn agree(ironsa: &Ironsa, charon: &Charon, pred: impl Fn(&ChildSaInfo) -> bool) -> (Value, ChildSaInfo, IkeSaInfo) {
    let sas = charon
        .swanctl()
        .wait_for_sas(T, |s| {
            s.len() == 1 && s[0].installed_children().len() == 1 && pred(s[0].installed_children()[0])
        })
        .unwrap();
    let ike = sas[0].clone();
    let theirs = ike.installed_children()[0].clone();
    let ours_list = ironsa.wait_sas(T, |s| {
        s.len() == 1
            && s[0]["children"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["state"] == "INSTALLED" && hex32(&c["spi_in"]) == theirs.spi_out)
            })
    });
    let sa = &ours_list[0];
    assert_eq!(sa["spi_i"].as_str().unwrap(), format!("{:016x}", ike.initiator_spi));
    assert_eq!(sa["spi_r"].as_str().unwrap(), format!("{:016x}", ike.responder_spi));
    assert!(
        sa["nat_t"].as_bool().unwrap(),
        "kernel-libipsec's faked NAT was detected"
    );
    assert_eq!(ike.local_port, 4500, "IKE moved to the NAT-T port");
    let ours = sa["children"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["state"] == "INSTALLED" && hex32(&c["spi_in"]) == theirs.spi_out)
        .unwrap()
        .clone();
    assert_eq!(
        hex32(&ours["spi_out"]),
        theirs.spi_in,
        "our outbound SPI is charon's inbound"
    );
    assert_eq!(ours["local_ts"], json!([SUBNET_A]));
    assert_eq!(ours["remote_ts"], json!([SUBNET_B]));
    assert_eq!(theirs.local_ts, vec![SUBNET_B.to_string()]);
    assert_eq!(theirs.remote_ts, vec![SUBNET_A.to_string()]);
    assert!(theirs.encap, "ESP in UDP");
    (ours, theirs, ike)
}

#[test]
fn child_sa_with_pfs_rekey_ironsa_initiates() {
    if support::skip_unless(&[Need::Root, Need::Charon]) {
        return;
    }
    let ns = NetnsPair::new().unwrap();
    let charon = charon(&ns, "aes256gcm16-x25519");
    let ironsa = Ironsa::start(&ironsa_config("aes256gcm16-x25519"), Some(ns.a.name()));
    ironsa.call(json!({"cmd": "initiate", "connection": "swan"}));
    let (ours, theirs, ike) = agree(&ironsa, &charon, |_| true);
    assert_eq!(ours["encr"], "aes256gcm16");
    assert_eq!(theirs.encr_alg.as_deref(), Some("AES_GCM_16"));
    assert_eq!(theirs.encr_keysize, Some(256));
    assert_eq!(
        ours["pfs"],
        Value::Null,
        "the first child is keyed from IKE_AUTH without PFS"
    );

    // charon rekeys the child with PFS.
    charon.swanctl().rekey(Target::Child("net")).unwrap();
    let (ours2, theirs2, _) = agree(&ironsa, &charon, |c| c.spi_in != theirs.spi_in);
    assert_ne!(ours2["spi_in"], ours["spi_in"]);
    assert_eq!(theirs2.dh_group.as_deref(), Some("CURVE_25519"), "rekey used PFS");
    assert_eq!(ours2["pfs"], "x25519");

    // ironsa rekeys it.
    let our_spi = if ike.initiator {
        format!("{:016x}", ike.responder_spi)
    } else {
        format!("{:016x}", ike.initiator_spi)
    };
    ironsa.call(json!({"cmd": "rekey", "spi": our_spi, "child": ours2["spi_in"]}));
    let (ours3, theirs3, _) = agree(&ironsa, &charon, |c| c.spi_in != theirs2.spi_in);
    assert_ne!(ours3["spi_in"], ours2["spi_in"]);
    assert_eq!(theirs3.dh_group.as_deref(), Some("CURVE_25519"));
}

#[test]
fn child_sa_charon_initiates_cbc_sha256() {
    if support::skip_unless(&[Need::Root, Need::Charon]) {
        return;
    }
    let ns = NetnsPair::new().unwrap();
    let charon = charon(&ns, "aes128-sha256");
    let ironsa = Ironsa::start(&ironsa_config("aes128-sha256"), Some(ns.a.name()));
    charon.swanctl().initiate(Target::Child("net"), T).unwrap();
    let (ours, theirs, ike) = agree(&ironsa, &charon, |_| true);
    assert!(ike.initiator);
    assert_eq!(ours["encr"], "aes128");
    assert_eq!(ours["integ"], "sha256");
    assert_eq!(theirs.integ_alg.as_deref(), Some("HMAC_SHA2_256_128"));
    // Deleting the child from charon removes it on our side.
    charon.swanctl().terminate(Target::Child("net")).unwrap();
    ironsa.wait_sas(T, |s| {
        s.len() == 1 && s[0]["children"].as_array().is_some_and(|c| c.is_empty())
    });
}

#[test]
fn charon_chooses_our_second_ike_and_esp_proposals() {
    if support::skip_unless(&[Need::Root, Need::Charon]) {
        return;
    }
    let ns = NetnsPair::new().unwrap();
    // charon accepts only AES-256-GCM; we prefer AES-128-GCM and offer both.
    let charon = charon(&ns, "aes256gcm16");
    let config = ironsa_config("aes128gcm16, aes256gcm16").replace(
        "ike_proposals = \"aes256gcm16-prfsha256-x25519\"",
        "ike_proposals = \"aes128gcm16-prfsha256-x25519, aes256gcm16-prfsha256-x25519\"",
    );
    let ironsa = Ironsa::start(&config, Some(ns.a.name()));
    ironsa.call(json!({"cmd": "initiate", "connection": "swan"}));
    // IKE_SA_INIT and IKE_AUTH: charon answers with proposal number 2.
    let (ours, theirs, ike) = agree(&ironsa, &charon, |_| true);
    assert_eq!(ike.encr_keysize, Some(256));
    assert_eq!(ironsa.sas()[0]["algorithms"], "aes256gcm16-prfsha256-x25519");
    assert_eq!(ours["encr"], "aes256gcm16");
    assert_eq!(theirs.encr_keysize, Some(256));

    // CREATE_CHILD_SA: our rekey offers both again; charon again picks the second.
    let our_spi = if ike.initiator {
        format!("{:016x}", ike.responder_spi)
    } else {
        format!("{:016x}", ike.initiator_spi)
    };
    ironsa.call(json!({"cmd": "rekey", "spi": our_spi, "child": ours["spi_in"]}));
    let (ours2, theirs2, _) = agree(&ironsa, &charon, |c| c.spi_in != theirs.spi_in);
    assert_ne!(ours2["spi_in"], ours["spi_in"]);
    assert_eq!(ours2["encr"], "aes256gcm16");
    assert_eq!(theirs2.encr_keysize, Some(256));
    // And the IKE SA rekey (CREATE_CHILD_SA with IKE proposals).
    ironsa.call(json!({"cmd": "rekey", "spi": our_spi}));
    let sas = charon
        .swanctl()
        .wait_for_sas(T, |s| {
            s.len() == 1 && s[0].state == "ESTABLISHED" && s[0].initiator_spi != ike.initiator_spi
        })
        .unwrap();
    assert_eq!(sas[0].encr_keysize, Some(256));
}

/// The children charon has installed, by name, sorted.
fn charon_children(charon: &Charon) -> Vec<String> {
    let sas = charon.swanctl().list_sas().unwrap();
    let mut names: Vec<String> = sas
        .iter()
        .flat_map(|s| s.installed_children().into_iter().map(|c| c.name.clone()))
        .collect();
    names.sort();
    names
}

fn wait_charon_children(charon: &Charon, want: &[&str]) {
    charon
        .swanctl()
        .wait_for_sas(T, |s| {
            let mut names: Vec<&str> = s
                .iter()
                .flat_map(|s| s.installed_children().into_iter().map(|c| c.name.as_str()))
                .collect();
            names.sort();
            s.len() == 1 && names == want
        })
        .unwrap_or_else(|e| panic!("charon children {:?}, want {want:?}: {e}", charon_children(charon)));
}

/// ironsa brings up its second child template with CREATE_CHILD_SA after
/// IKE_AUTH, deletes it alone by SPI and brings it back alone.
#[test]
fn second_child_created_deleted_and_initiated_alone() {
    if !support::util::root_or_skip("second_child_created_deleted_and_initiated_alone") {
        return;
    }
    let ns = NetnsPair::new().unwrap();
    // kernel-libipsec routes a child's traffic only with a local address inside it.
    ns.b.exec(&["ip", "addr", "add", "10.2.1.1/32", "dev", "lo"]).unwrap();
    let charon = charon_with(&ns, "aes256gcm16", Some("more"));
    let config = format!(
        "{}\n[[connection.child]]\nname = \"more\"\nlocal_ts = [\"{MORE_A}\"]\nremote_ts = [\"{MORE_B}\"]\nesp_proposals = \"aes256gcm16\"\n",
        ironsa_config("aes256gcm16")
    );
    let ironsa = Ironsa::start(&config, Some(ns.a.name()));
    ironsa.call(json!({"cmd": "initiate", "connection": "swan"}));
    wait_charon_children(&charon, &["more", "net"]);
    let sas = ironsa.wait_sas(T, |s| {
        s.len() == 1 && s[0]["children"].as_array().is_some_and(|c| c.len() == 2)
    });
    let more = sas[0]["children"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "more")
        .unwrap()
        .clone();
    assert_eq!(more["local_ts"], json!([MORE_A]));

    // Deleted by the SPI charon sends with (our inbound): charon keeps the IKE SA and `net`.
    ironsa.call(json!({"cmd": "terminate", "child": more["spi_in"]}));
    wait_charon_children(&charon, &["net"]);
    ironsa.wait_sas(T, |s| {
        s.len() == 1 && s[0]["children"].as_array().is_some_and(|c| c.len() == 1)
    });

    // Brought back alone on the same IKE SA.
    ironsa.call(json!({"cmd": "initiate", "connection": "swan", "child": "more"}));
    wait_charon_children(&charon, &["more", "net"]);
    let after = ironsa.wait_sas(T, |s| {
        s.len() == 1 && s[0]["children"].as_array().is_some_and(|c| c.len() == 2)
    });
    assert_eq!(after[0]["spi_i"], sas[0]["spi_i"], "the same IKE SA");
}
