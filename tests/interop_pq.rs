//! Post-quantum policy against strongSwan 6 (the build with the `ml` plugin,
//! see `support::strongswan6`): a peer that offers no RFC 9370 additional
//! key exchange is refused when our proposal requires one
//! (`x25519-ke1_mlkem768`) and accepted, with a log line that says so, when
//! it allows classical peers (`x25519-ke1_mlkem768-ke1_none`). Both roles.
//!
//! Needs root and strongSwan 6; without strongSwan 6 each test prints one
//! line and skips.

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::json;
use support::util::free_udp_port_pair;
use support::{AuthRound, Charon, Connection, Ironsa, Secret, Target};

const PSK: &str = "a-long-random-test-secret-for-ironsa";
const T: Duration = Duration::from_secs(10);
const CLASSICAL: &str = "aes256gcm16-prfsha384-x25519";
const PQ_REQUIRED: &str = "aes256gcm16-prfsha384-x25519-ke1_mlkem768";
const PQ_OPTIONAL: &str = "aes256gcm16-prfsha384-x25519-ke1_mlkem768-ke1_none";
const FALLBACK_LOG: &str = "IKE SA without additional key exchanges: the peer offered none";

fn strongswan6() -> Option<PathBuf> {
    match support::strongswan6() {
        Ok(prefix) => Some(prefix),
        Err(why) => {
            eprintln!("{why}");
            None
        }
    }
}

struct Pair {
    ironsa: Ironsa,
    charon: Charon,
}

/// strongSwan 6 offering only `CLASSICAL`, ironsa with `ours`.
fn start(prefix: &std::path::Path, name: &str, ours: &str) -> Pair {
    let (cp, cn) = free_udp_port_pair().unwrap();
    let (ip, inat) = free_udp_port_pair().unwrap();
    let charon = Charon::builder(name)
        .strongswan6(prefix)
        .ports(cp, cn)
        .connection(
            Connection::new("ironsa", "127.0.0.1", "127.0.0.1")
                .local_port(cp)
                .remote_port(ip)
                .proposals(&[CLASSICAL])
                .local(AuthRound::psk("b@test"))
                .remote(AuthRound::psk("a@test")),
        )
        .secret(Secret::psk("ab", &["a@test", "b@test"], PSK))
        .start()
        .unwrap();
    let config = format!(
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
ike_proposals = "{ours}"
local_id = "a@test"
remote_id = "b@test"
auth = "psk"
psk = "{PSK}"
"#
    );
    let ironsa = Ironsa::start_logging(&config, None, Some("info"));
    Pair { ironsa, charon }
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
    let Some(prefix) = strongswan6() else { return };
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
    let Some(prefix) = strongswan6() else { return };
    let p = start(&prefix, "pq-optional-r", PQ_OPTIONAL);
    p.charon.swanctl().initiate(Target::Ike("ironsa"), T).unwrap();
    established(&p.ironsa, &p.charon, "aes256gcm16-prfsha384-x25519");
    let log = wait_log(&p.ironsa, FALLBACK_LOG);
    assert!(log.contains(FALLBACK_LOG), "{log}");
}

#[test]
fn classical_responder_refused_when_policy_requires_ml_kem() {
    let Some(prefix) = strongswan6() else { return };
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
    let Some(prefix) = strongswan6() else { return };
    let p = start(&prefix, "pq-optional-i", PQ_OPTIONAL);
    p.ironsa.call(json!({"cmd": "initiate", "connection": "swan"}));
    established(&p.ironsa, &p.charon, "aes256gcm16-prfsha384-x25519");
    let log = wait_log(&p.ironsa, FALLBACK_LOG);
    assert!(log.contains(FALLBACK_LOG), "{log}");
}
