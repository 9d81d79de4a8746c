//! Post-quantum policy against strongSwan 6 (the build with the `ml` plugin,
//! see `support::strongswan6`): a peer that offers no RFC 9370 additional
//! key exchange is refused when our proposal requires one
//! (`x25519-ke1_mlkem768`) and accepted, with a log line that says so, when
//! it allows classical peers (`x25519-ke1_mlkem768-ke1_none`). Both roles.
//! Hybrid handshakes in IKE_INTERMEDIATE, and IKE SA rekeys of a hybrid
//! IKE SA with IKE_FOLLOWUP_KE in both directions. ESP through a hybrid
//! tunnel (charon with kernel-libipsec in a network namespace), with the
//! CHILD_SA rekeyed with PFS and an additional ML-KEM key exchange by
//! either side.
//!
//! Needs root and strongSwan 6; without them each test prints one line and
//! skips.

#[path = "../support/mod.rs"]
mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::json;
use support::Need;
use support::netns::{INNER_A, INNER_B, OUTER_A, OUTER_B, SUBNET_A, SUBNET_B};
use support::util::free_udp_port_pair;
use support::{AuthRound, Charon, Child, Connection, Ironsa, KernelBackend, NetnsPair, Secret, Target};

const PSK: &str = "a-long-random-test-secret-for-ironsa";
const T: Duration = Duration::from_secs(10);
const CLASSICAL: &str = "aes256gcm16-prfsha384-x25519";
const PQ_REQUIRED: &str = "aes256gcm16-prfsha384-x25519-ke1_mlkem768";
const PQ_OPTIONAL: &str = "aes256gcm16-prfsha384-x25519-ke1_mlkem768-ke1_none";
const FALLBACK_LOG: &str = "IKE SA without additional key exchanges: the peer offered none";

/// The strongSwan 6 prefix (checked by `skip_unless` first).
fn strongswan6() -> PathBuf {
    support::strongswan6().expect("skip_unless(Need::StrongSwan6) checked it")
}

struct Pair {
    ironsa: Ironsa,
    charon: Charon,
}

/// strongSwan 6 offering only `CLASSICAL`, ironsa with `ours`.
fn start(prefix: &std::path::Path, name: &str, ours: &str) -> Pair {
    start_with(prefix, name, ours, CLASSICAL, None)
}

/// strongSwan 6 offering `theirs`, ironsa with `ours`; `fragment_size`
/// limits IKE datagrams on both sides.
fn start_with(prefix: &std::path::Path, name: &str, ours: &str, theirs: &str, fragment_size: Option<usize>) -> Pair {
    let (cp, cn) = free_udp_port_pair().unwrap();
    let (ip, inat) = free_udp_port_pair().unwrap();
    let mut builder = Charon::builder(name);
    if let Some(size) = fragment_size {
        builder = builder.setting("fragment_size", &size.to_string());
    }
    let charon = builder
        .strongswan6(prefix)
        .ports(cp, cn)
        .connection(
            Connection::new("ironsa", "127.0.0.1", "127.0.0.1")
                .local_port(cp)
                .remote_port(ip)
                .proposals(&[theirs])
                .local(AuthRound::psk("b@test"))
                .remote(AuthRound::psk("a@test")),
        )
        .secret(Secret::psk("ab", &["a@test", "b@test"], PSK))
        .start()
        .unwrap();
    let fragment = fragment_size.map_or(String::new(), |s| format!("fragment_size = {s}"));
    let config = ironsa_config((ip, inat), (cp, cn), ours, &fragment);
    let ironsa = Ironsa::start_logging(&config, None, Some("info"));
    Pair { ironsa, charon }
}

/// ironsa on loopback ports `ours` (IKE, NAT-T) with one PSK connection to
/// charon on `theirs`, IKE proposal `ike`, and `extra` connection keys.
fn ironsa_config(ours: (u16, u16), theirs: (u16, u16), ike: &str, extra: &str) -> String {
    let ((ip, inat), (cp, cn)) = (ours, theirs);
    format!(
        r#"
[daemon]
listen = ["127.0.0.1"]
ike_port = {ip}
nat_port = {inat}
control_socket = "SOCKET"

[[connection]]
name = "swan"
remote_addrs = ["127.0.0.1"]
remote_port = {cp}
remote_nat_port = {cn}
ike_proposals = "{ike}"
local_id = "a@test"
remote_id = "b@test"
auth = "psk"
psk = "{PSK}"
{extra}
"#
    )
}

fn wait_log(ironsa: &Ironsa, needle: &str) -> String {
    let deadline = Instant::now() + T;
    loop {
        let log = ironsa.log();
        if log.contains(needle) || Instant::now() > deadline {
            return log;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn established(ironsa: &Ironsa, charon: &Charon, algorithms: &str) {
    let ours = ironsa.wait_sas(T, |s| s.iter().any(|sa| sa["state"] == "ESTABLISHED"));
    assert_eq!(ours[0]["algorithms"], algorithms, "{ours:#?}");
    let theirs = charon
        .swanctl()
        .wait_for_sas(T, |s| s.iter().any(|sa| sa.state == "ESTABLISHED"))
        .unwrap();
    assert_eq!(theirs[0].dh_group.as_deref(), Some("CURVE_25519"));
}

#[test]
fn classical_initiator_refused_when_policy_requires_ml_kem() {
    if support::skip_unless(&[Need::Root, Need::StrongSwan6]) {
        return;
    }
    let prefix = strongswan6();
    let p = start(&prefix, "pq-required-r", PQ_REQUIRED);
    assert!(p.charon.swanctl().initiate(Target::Ike("ironsa"), T).is_err());
    let log = wait_log(&p.ironsa, "ADDKE1");
    assert!(
        log.contains("no common additional key exchange 1 (ADDKE1): peer nothing, we ke1_mlkem768"),
        "{log}"
    );
    p.charon.wait_for_log("NO_PROPOSAL_CHOSEN", T).unwrap();
    assert!(p.ironsa.sas().is_empty());
}

#[test]
fn classical_initiator_accepted_when_policy_allows_it() {
    if support::skip_unless(&[Need::Root, Need::StrongSwan6]) {
        return;
    }
    let prefix = strongswan6();
    let p = start(&prefix, "pq-optional-r", PQ_OPTIONAL);
    p.charon.swanctl().initiate(Target::Ike("ironsa"), T).unwrap();
    established(&p.ironsa, &p.charon, "aes256gcm16-prfsha384-x25519");
    let log = wait_log(&p.ironsa, FALLBACK_LOG);
    assert!(log.contains(FALLBACK_LOG), "{log}");
}

#[test]
fn classical_responder_refused_when_policy_requires_ml_kem() {
    if support::skip_unless(&[Need::Root, Need::StrongSwan6]) {
        return;
    }
    let prefix = strongswan6();
    let p = start(&prefix, "pq-required-i", PQ_REQUIRED);
    p.ironsa.call(json!({"cmd": "initiate", "connection": "swan"}));
    // strongSwan 6 with a classical proposal cannot accept our required ADDKE1.
    p.charon.wait_for_log("received proposals unacceptable", T).unwrap();
    let log = wait_log(&p.ironsa, "NO_PROPOSAL_CHOSEN");
    assert!(log.contains("NO_PROPOSAL_CHOSEN") && log.contains(PQ_REQUIRED), "{log}");
    assert!(
        p.ironsa.sas().iter().all(|sa| sa["state"] != "ESTABLISHED"),
        "{:#?}",
        p.ironsa.sas()
    );
}

#[test]
fn classical_responder_accepted_when_policy_allows_it() {
    if support::skip_unless(&[Need::Root, Need::StrongSwan6]) {
        return;
    }
    let prefix = strongswan6();
    let p = start(&prefix, "pq-optional-i", PQ_OPTIONAL);
    p.ironsa.call(json!({"cmd": "initiate", "connection": "swan"}));
    established(&p.ironsa, &p.charon, "aes256gcm16-prfsha384-x25519");
    let log = wait_log(&p.ironsa, FALLBACK_LOG);
    assert!(log.contains(FALLBACK_LOG), "{log}");
}

/// strongSwan 6 and ironsa both configured with `proposal`: the handshake
/// runs the additional key exchanges in IKE_INTERMEDIATE and comes up on
/// both sides with the same algorithms.
fn hybrid(name: &str, proposal: &str, ironsa_initiates: bool, fragment_size: Option<usize>, dh: &str) {
    if support::skip_unless(&[Need::Root, Need::StrongSwan6]) {
        return;
    }
    let prefix = strongswan6();
    let p = start_with(&prefix, name, proposal, proposal, fragment_size);
    if ironsa_initiates {
        p.ironsa.call(json!({"cmd": "initiate", "connection": "swan"}));
    } else {
        p.charon.swanctl().initiate(Target::Ike("ironsa"), T).unwrap();
    }
    let ours = p
        .ironsa
        .wait_sas(T, |s| s.iter().any(|sa| sa["state"] == "ESTABLISHED"));
    assert_eq!(
        ours.first().map(|sa| sa["algorithms"].clone()),
        Some(json!(proposal.to_string())),
        "{ours:#?}\n{}",
        p.charon.log_tail(60)
    );
    let theirs = p
        .charon
        .swanctl()
        .wait_for_sas(T, |s| s.iter().any(|sa| sa.state == "ESTABLISHED"))
        .unwrap();
    assert_eq!(theirs[0].dh_group.as_deref(), Some(dh));
    p.charon.wait_for_log("IKE_INTERMEDIATE", T).unwrap();
    if fragment_size.is_some() {
        // Both directions of the ML-KEM-1024 exchange went as fragments.
        p.charon.wait_for_log("received fragment #", T).unwrap();
        p.charon.wait_for_log("splitting IKE message", T).unwrap();
    }
}

#[test]
fn hybrid_x25519_mlkem768_ironsa_initiator() {
    hybrid("pq-768-i", PQ_REQUIRED, true, None, "CURVE_25519");
}

#[test]
fn hybrid_x25519_mlkem768_ironsa_responder() {
    hybrid("pq-768-r", PQ_REQUIRED, false, None, "CURVE_25519");
}

#[test]
fn hybrid_ecp384_mlkem1024_both_roles() {
    let proposal = "aes256gcm16-prfsha384-ecp384-ke1_mlkem1024";
    hybrid("pq-1024-i", proposal, true, None, "ECP_384");
    hybrid("pq-1024-r", proposal, false, None, "ECP_384");
}

#[test]
fn three_key_exchanges_fragmented_both_roles() {
    let proposal = "aes256gcm16-prfsha384-x25519-ke1_mlkem768-ke2_mlkem1024";
    hybrid("pq-3ke-i", proposal, true, Some(1000), "CURVE_25519");
    hybrid("pq-3ke-r", proposal, false, Some(1000), "CURVE_25519");
}

/// Waits until both sides have exactly one established IKE SA whose
/// initiator SPI is not `old`, with `proposal` on our side; returns ours.
fn rekeyed(p: &Pair, old: &serde_json::Value, proposal: &str) -> serde_json::Value {
    let ours = p.ironsa.wait_sas(T, |s| {
        s.len() == 1 && s[0]["state"] == "ESTABLISHED" && s[0]["spi_i"] != *old
    });
    assert!(
        ours.len() == 1 && ours[0]["spi_i"] != *old,
        "{ours:#?}\n{}",
        p.charon.log_tail(60)
    );
    assert_eq!(ours[0]["algorithms"], proposal, "{ours:#?}");
    let want = ours[0]["spi_i"].as_str().unwrap_or_default().to_string();
    let theirs = p
        .charon
        .swanctl()
        .wait_for_sas(T, |s| {
            s.len() == 1 && s[0].state == "ESTABLISHED" && format!("{:016x}", s[0].initiator_spi) == want
        })
        .unwrap();
    assert_eq!(theirs[0].dh_group.as_deref(), Some("CURVE_25519"));
    ours.into_iter().next().unwrap_or_default()
}

#[test]
fn hybrid_ike_sa_rekeys_with_ike_followup_ke_in_both_directions() {
    rekeys_in_both_directions("pq-rekey", PQ_REQUIRED);
    rekeys_in_both_directions(
        "pq-rekey-3ke",
        "aes256gcm16-prfsha384-x25519-ke1_mlkem768-ke2_mlkem1024",
    );
}

/// strongSwan 6 and ironsa both with `proposal`: charon rekeys the IKE SA,
/// then ironsa does; each rekey runs the additional key exchanges.
fn rekeys_in_both_directions(name: &str, proposal: &str) {
    if support::skip_unless(&[Need::Root, Need::StrongSwan6]) {
        return;
    }
    let prefix = strongswan6();
    let p = start_with(&prefix, name, proposal, proposal, None);
    p.ironsa.call(json!({"cmd": "initiate", "connection": "swan"}));
    let ours = p
        .ironsa
        .wait_sas(T, |s| s.iter().any(|sa| sa["state"] == "ESTABLISHED"));
    let first = ours[0]["spi_i"].clone();
    p.charon
        .swanctl()
        .wait_for_sas(T, |s| s.iter().any(|sa| sa.state == "ESTABLISHED"))
        .unwrap();

    // charon rekeys: we answer its IKE_FOLLOWUP_KE.
    p.charon.swanctl().rekey(Target::Ike("ironsa")).unwrap();
    let second = rekeyed(&p, &first, proposal);
    p.charon.wait_for_log("IKE_FOLLOWUP_KE", T).unwrap();

    // We rekey (charon initiated the current SA: our SPI is the responder's).
    p.ironsa.call(json!({"cmd": "rekey", "spi": second["spi_r"]}));
    rekeyed(&p, &second["spi_i"], proposal);
    let log = p.ironsa.log();
    assert!(!log.contains("IKE SA rekey failed"), "{log}");
}

/// The hybrid ESP proposal of the CHILD_SA tests: PFS with X25519 plus
/// ML-KEM-768 in IKE_FOLLOWUP_KE.
const PQ_ESP: &str = "aes256gcm16-x25519-ke1_mlkem768";

/// Waits until both sides have one installed child other than the one
/// whose inbound SPI (ours) is `old`; returns our new inbound SPI.
fn child_replaced(ironsa: &Ironsa, charon: &Charon, old: &serde_json::Value) -> serde_json::Value {
    let ours = ironsa.wait_sas(T, |s| {
        s.len() == 1
            && s[0]["children"]
                .as_array()
                .is_some_and(|c| c.len() == 1 && c[0]["state"] == "INSTALLED" && c[0]["spi_in"] != *old)
    });
    let new = ours[0]["children"][0]["spi_in"].clone();
    assert_ne!(new, *old, "{ours:#?}\n{}", charon.log_tail(80));
    assert_eq!(ours[0]["children"][0]["pfs"], "x25519");
    assert_eq!(
        ours[0]["children"][0]["key_exchanges"],
        json!(["x25519", "ke1_mlkem768"]),
        "{ours:#?}"
    );
    let spi_out = u32::from_str_radix(new.as_str().unwrap_or_default(), 16).unwrap_or_default();
    let theirs = charon
        .swanctl()
        .wait_for_sas(T, |s| {
            s.len() == 1 && s[0].installed_children().len() == 1 && s[0].installed_children()[0].spi_out == spi_out
        })
        .unwrap();
    assert_eq!(
        theirs[0].installed_children()[0].dh_group.as_deref(),
        Some("CURVE_25519")
    );
    new
}

#[test]
fn esp_through_a_hybrid_tunnel_and_hybrid_child_rekeys_in_both_directions() {
    if support::skip_unless(&[Need::Root, Need::StrongSwan6, Need::Tool("ping")]) {
        return;
    }
    let prefix = strongswan6();
    let ns = NetnsPair::new().unwrap();
    let charon = Charon::builder("pq-esp")
        .strongswan6(&prefix)
        .kernel(KernelBackend::Libipsec {
            netns: ns.b.name().into(),
        })
        .log_level("chd", 2)
        .connection(
            Connection::new("ironsa", OUTER_B, OUTER_A)
                .proposals(&[PQ_REQUIRED])
                .local(AuthRound::psk("b@test"))
                .remote(AuthRound::psk("a@test"))
                .child(
                    Child::new("net", SUBNET_B, SUBNET_A)
                        .mode("tunnel")
                        .esp_proposals(&[PQ_ESP]),
                ),
        )
        .secret(Secret::psk("ab", &["a@test", "b@test"], PSK))
        .start()
        .unwrap();
    let config = format!(
        r#"
[daemon]
listen = ["{OUTER_A}"]
shards = 1
control_socket = "SOCKET"

[fastpath]
backend = "software"
tun_name = "ironsa0"

[[connection]]
name = "swan"
remote_addrs = ["{OUTER_B}"]
local_id = "a@test"
remote_id = "b@test"
psk = "{PSK}"
ike_proposals = "{PQ_REQUIRED}"

[[connection.child]]
name = "net"
local_ts = ["{SUBNET_A}"]
remote_ts = ["{SUBNET_B}"]
esp_proposals = "{PQ_ESP}"
"#
    );
    let ironsa = Ironsa::start_logging(&config, Some(ns.a.name()), Some("info"));
    ironsa.call(json!({"cmd": "initiate", "connection": "swan"}));
    charon
        .swanctl()
        .wait_for_sas(T, |s| s.len() == 1 && s[0].installed_children().len() == 1)
        .unwrap();
    let sas = ironsa.wait_sas(T, |s| {
        s.len() == 1 && s[0]["children"].as_array().is_some_and(|c| c.len() == 1)
    });
    assert_eq!(sas[0]["algorithms"], PQ_REQUIRED, "{sas:#?}");
    let (sent, got) = support::traffic::ping(&ns.a, INNER_A, INNER_B, 5, "0.1");
    assert_eq!((sent, got), (5, 5), "ping through the hybrid tunnel");

    // charon rekeys the child: we answer its IKE_FOLLOWUP_KE.
    let first = sas[0]["children"][0]["spi_in"].clone();
    charon.swanctl().rekey(Target::Child("net")).unwrap();
    let second = child_replaced(&ironsa, &charon, &first);
    charon.wait_for_log("IKE_FOLLOWUP_KE", T).unwrap();
    let (sent, got) = support::traffic::ping(&ns.a, INNER_A, INNER_B, 5, "0.1");
    assert_eq!((sent, got), (5, 5), "ping after charon's hybrid child rekey");

    // We rekey it.
    let local_spi = if sas[0]["role"] == "initiator" {
        sas[0]["spi_i"].clone()
    } else {
        sas[0]["spi_r"].clone()
    };
    ironsa.call(json!({"cmd": "rekey", "spi": local_spi, "child": second}));
    child_replaced(&ironsa, &charon, &second);
    let (sent, got) = support::traffic::ping(&ns.a, INNER_A, INNER_B, 5, "0.1");
    assert_eq!((sent, got), (5, 5), "ping after our hybrid child rekey");
    let log = ironsa.log();
    assert_eq!(
        log.matches("x25519,ke1_mlkem768").count(),
        2,
        "both rekeyed children ran ML-KEM-768: {log}"
    );
    assert!(!log.contains("CHILD_SA not established"), "{log}");
}

/// The PPK both sides know as `ppk1` (strongSwan reads it from swanctl.conf,
/// ironsa from a 0600 file).
const PPK_SECRET: &str = "a-postquantum-preshared-key-of-32-bytes-or-more";

/// strongSwan 6 and ironsa with a hybrid proposal and PPKs: charon's
/// `ppk_id`/`ppk_required` (and the key `ppk1` unless `charon_lacks_key`)
/// and ironsa's `(PPK_ID, required)`.
fn start_ppk(
    name: &str,
    charon_ppk: (&str, bool),
    ironsa_ppk: (&str, bool),
    keys: &std::path::Path,
    charon_lacks_key: bool,
) -> Pair {
    let prefix = strongswan6();
    let (cp, cn) = free_udp_port_pair().unwrap();
    let (ip, inat) = free_udp_port_pair().unwrap();
    let ppk_secret = Secret::Ike {
        name: "ppk-ppk1".into(),
        ids: vec!["ppk1".into()],
        secret: PPK_SECRET.into(),
    };
    let builder = Charon::builder(name);
    let builder = if charon_lacks_key {
        builder
    } else {
        builder.secret(ppk_secret)
    };
    let charon = builder
        .strongswan6(&prefix)
        .ports(cp, cn)
        .connection(
            Connection::new("ironsa", "127.0.0.1", "127.0.0.1")
                .local_port(cp)
                .remote_port(ip)
                .proposals(&[PQ_REQUIRED])
                .set("ppk_id", charon_ppk.0)
                .set("ppk_required", if charon_ppk.1 { "yes" } else { "no" })
                .local(AuthRound::psk("b@test"))
                .remote(AuthRound::psk("a@test")),
        )
        .secret(Secret::psk("ab", &["a@test", "b@test"], PSK))
        .start()
        .unwrap();
    let file = keys.join(format!("{name}.ppk"));
    std::fs::write(&file, PPK_SECRET).unwrap();
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let ppk = format!(
        "ppk_id = \"{}\"\nppk_file = \"{}\"\nppk_required = {}",
        ironsa_ppk.0,
        file.display(),
        ironsa_ppk.1
    );
    let config = ironsa_config((ip, inat), (cp, cn), PQ_REQUIRED, &ppk);
    let ironsa = Ironsa::start_logging(&config, None, Some("info"));
    Pair { ironsa, charon }
}

/// Brings the IKE SA up from ironsa (or charon) and waits until both see it.
fn ppk_up(p: &Pair, ironsa_initiates: bool) {
    if ironsa_initiates {
        p.ironsa.call(json!({"cmd": "initiate", "connection": "swan"}));
    } else {
        p.charon.swanctl().initiate(Target::Ike("ironsa"), T).unwrap();
    }
    let ours = p
        .ironsa
        .wait_sas(T, |s| s.iter().any(|sa| sa["state"] == "ESTABLISHED"));
    assert!(!ours.is_empty(), "{}\n{}", p.ironsa.log(), p.charon.log_tail(60));
    p.charon
        .swanctl()
        .wait_for_sas(T, |s| s.iter().any(|sa| sa.state == "ESTABLISHED"))
        .unwrap();
}

#[test]
fn mandatory_ppk_in_both_roles() {
    if support::skip_unless(&[Need::Root, Need::StrongSwan6]) {
        return;
    }
    let keys = tempfile::tempdir().unwrap();
    for ironsa_initiates in [true, false] {
        let name = if ironsa_initiates { "ppk-req-i" } else { "ppk-req-r" };
        let p = start_ppk(name, ("ppk1", true), ("ppk1", true), keys.path(), false);
        ppk_up(&p, ironsa_initiates);
        let log = wait_log(&p.ironsa, "IKE SA keyed with the PPK");
        assert!(log.contains("IKE SA keyed with the PPK"), "{log}");
        // A rekey derives from SK_d, which holds the PPK: both still agree.
        let sa = p.ironsa.sas()[0].clone();
        let local_spi = if sa["role"] == "initiator" {
            sa["spi_i"].clone()
        } else {
            sa["spi_r"].clone()
        };
        p.ironsa.call(json!({"cmd": "rekey", "spi": local_spi}));
        rekeyed(&p, &sa["spi_i"], PQ_REQUIRED);
    }
}

#[test]
fn optional_ppk_falls_back_to_no_ppk_auth_in_both_roles() {
    if support::skip_unless(&[Need::Root, Need::StrongSwan6]) {
        return;
    }
    let keys = tempfile::tempdir().unwrap();
    // ironsa initiates with an optional PPK; charon lacks the key and so
    // announces no USE_PPK: the IKE SA comes up without a PPK. charon
    // initiates with an optional PPK whose PPK_ID ironsa does not have:
    // ironsa checks NO_PPK_AUTH and keys the IKE SA without it.
    for ironsa_initiates in [true, false] {
        let (name, ours) = if ironsa_initiates {
            ("ppk-opt-i", "ppk1")
        } else {
            ("ppk-opt-r", "other")
        };
        let p = start_ppk(name, ("ppk1", false), (ours, false), keys.path(), ironsa_initiates);
        ppk_up(&p, ironsa_initiates);
        let log = p.ironsa.log();
        assert!(!log.contains("IKE SA keyed with the PPK"), "{log}");
        if !ironsa_initiates {
            let log = wait_log(&p.ironsa, "authenticating it with NO_PPK_AUTH");
            assert!(log.contains("authenticating it with NO_PPK_AUTH"), "{log}");
        }
    }
    // Our PPK is required and the peer cannot use it: refused.
    let p = start_ppk("ppk-opt-refused", ("ppk1", false), ("ppk1", true), keys.path(), true);
    p.ironsa.call(json!({"cmd": "initiate", "connection": "swan"}));
    let needle = "is required but the peer did not send USE_PPK";
    let log = wait_log(&p.ironsa, needle);
    assert!(log.contains(needle), "{log}");
}
