//! Every bench binary behaves like a command: `--help` and `--version` answer
//! at once without running anything, bad arguments are refused with a
//! message, and `--json` prints one valid JSON object with the fields the
//! scripts and the README read.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The binaries built by this package (dpdk-bench only with `--features dpdk`).
fn binaries() -> Vec<(&'static str, &'static str)> {
    let v = vec![
        ("ikegen", env!("CARGO_BIN_EXE_ikegen")),
        ("ike-responder", env!("CARGO_BIN_EXE_ike-responder")),
        ("ike-bench", env!("CARGO_BIN_EXE_ike-bench")),
        ("esp-bench", env!("CARGO_BIN_EXE_esp-bench")),
    ];
    #[cfg(feature = "dpdk")]
    let v = [v, vec![("dpdk-bench", env!("CARGO_BIN_EXE_dpdk-bench"))]].concat();
    v
}

/// Runs `bin args`, killed after `limit`; returns its output and how long it ran.
fn run(bin: &str, args: &[&str], limit: Duration) -> (Output, Duration) {
    let started = Instant::now();
    let out = Command::new("timeout")
        .arg("--kill-after=1")
        .arg(format!("{:.1}", limit.as_secs_f64()))
        .arg(bin)
        .args(args)
        .output()
        .expect("run the binary");
    (out, started.elapsed())
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn help_describes_the_command_and_runs_nothing() {
    for (name, bin) in binaries() {
        for flag in ["--help", "-h"] {
            let (out, took) = run(bin, &[flag], Duration::from_secs(10));
            let stdout = text(&out.stdout);
            assert!(
                out.status.success(),
                "{name} {flag}: {:?}\n{}",
                out.status,
                text(&out.stderr)
            );
            assert!(stdout.contains(&format!("Usage: {name}")), "{name} {flag}: {stdout}");
            assert!(stdout.contains("--version"), "{name} {flag} lists --version: {stdout}");
            assert!(
                took < Duration::from_secs(3),
                "{name} {flag} took {took:?}: it ran something"
            );
        }
    }
}

#[test]
fn version_prints_the_package_version() {
    for (name, bin) in binaries() {
        for flag in ["--version", "-V"] {
            let (out, _) = run(bin, &[flag], Duration::from_secs(10));
            assert!(out.status.success(), "{name} {flag}: {:?}", out.status);
            assert_eq!(
                text(&out.stdout).trim(),
                format!("{name} {}", env!("CARGO_PKG_VERSION")),
                "{name} {flag}"
            );
        }
    }
}

#[test]
fn unknown_and_bad_arguments_are_refused() {
    for (name, bin) in binaries() {
        let (out, _) = run(bin, &["--no-such-option"], Duration::from_secs(10));
        assert_eq!(out.status.code(), Some(2), "{name} refuses an unknown option");
        assert!(
            text(&out.stderr).contains("--no-such-option"),
            "{name} names the bad option: {}",
            text(&out.stderr)
        );
    }
    let bad: &[(&str, &[&str], &str)] = &[
        (env!("CARGO_BIN_EXE_esp-bench"), &["--sizes", "99"], "--sizes"),
        (env!("CARGO_BIN_EXE_esp-bench"), &["--traffic", "sideways"], "--traffic"),
        (env!("CARGO_BIN_EXE_esp-bench"), &["--secs", "0"], "--secs"),
        (env!("CARGO_BIN_EXE_esp-bench"), &["--reps"], "--reps"),
        (env!("CARGO_BIN_EXE_ike-bench"), &["--batch", "901"], "--batch"),
        (env!("CARGO_BIN_EXE_ike-bench"), &["--seconds", "0"], "--seconds"),
        (
            env!("CARGO_BIN_EXE_ike-bench"),
            &["--suite", "x448-mlkem768"],
            "--suite",
        ),
        (
            env!("CARGO_BIN_EXE_ike-bench"),
            &["--suite", "mlkem768-only", "--ikev1"],
            "--suite",
        ),
        (
            env!("CARGO_BIN_EXE_ike-bench"),
            &["--suite", "eap-mschapv2", "--ikev1"],
            "--suite",
        ),
        (env!("CARGO_BIN_EXE_ike-bench"), &["--live-sas", "200001"], "--live-sas"),
    ];
    for (bin, args, named) in bad {
        let (out, took) = run(bin, args, Duration::from_secs(10));
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bin} {args:?}: {stderr}");
        assert!(stderr.contains(named), "{bin} {args:?} names {named}: {stderr}");
        assert!(took < Duration::from_secs(3), "{bin} {args:?} ran before refusing");
    }
}

fn json_of(bin: &str, args: &[&str], limit: Duration) -> Value {
    let (out, _) = run(bin, args, limit);
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "{bin} {args:?}: {:?}\n{stdout}\n{}",
        out.status,
        text(&out.stderr)
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{bin} {args:?} printed invalid JSON ({e}): {stdout}"))
}

#[test]
fn esp_bench_json_is_valid_with_every_section() {
    let v = json_of(
        env!("CARGO_BIN_EXE_esp-bench"),
        &[
            "--json",
            "--secs",
            "0.01",
            "--reps",
            "1",
            "--scale-sas",
            "64",
            "--sizes",
            "imix,64",
            "--traffic",
            "random,one-active",
        ],
        Duration::from_secs(60),
    );
    assert_eq!(v["cipher"], "aes128gcm16");
    assert_eq!(v["reps"], 1);
    assert_eq!(v["scale_sas"], 64);
    for key in [
        "results",
        "decap_results",
        "bare_seal",
        "bare_open",
        "scale_encap",
        "scale_decap",
    ] {
        let rows = v[key].as_array().unwrap_or_else(|| panic!("{key} is a list: {v}"));
        // The report's order, whatever the command line's.
        let labels: Vec<&str> = rows.iter().filter_map(|r| r["label"].as_str()).collect();
        assert_eq!(labels, ["64", "imix"], "{key}");
        for r in rows {
            assert!(r["size"].as_u64().is_some_and(|s| s > 0), "{key}: {r}");
            assert!(r["mpps"].as_f64().is_some_and(|x| x > 0.0), "{key}: {r}");
            assert!(r["gbps"].is_f64() && r["ratio"].is_f64(), "{key}: {r}");
        }
    }
    let models: Vec<&str> = v["scale_traffic"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["traffic"].as_str())
        .collect();
    assert_eq!(models, ["one-active", "random"]);
    assert_eq!(v["core_scaling"]["cores"], 2);
    assert_eq!(v["core_scaling"]["results"].as_array().map(Vec::len), Some(2));
    assert!(v["core_scaling"]["results"][0]["encap_scaling"].is_f64());
    assert!(v["notes"].is_string());
}

#[test]
fn ike_bench_json_is_valid() {
    let v = json_of(
        env!("CARGO_BIN_EXE_ike-bench"),
        &["--json", "--seconds", "0.1", "--batch", "64", "--live-sas", "1024"],
        Duration::from_secs(120),
    );
    assert_eq!(v["batch"], 64);
    assert_eq!(v["live_sas"], 1024);
    assert_eq!(v["suite"], "x25519");
    assert_eq!(v["ike_proposal"], "aes256gcm16-prfsha256-x25519");
    for key in [
        "handshakes_per_sec",
        "ceiling_per_sec",
        "ratio",
        "responder_us_per_handshake",
    ] {
        assert!(v[key].as_f64().is_some_and(|x| x > 0.0), "{key}: {v}");
    }
    assert!(v["crypto_breakdown_us"]["x25519_keygen_agree"].is_f64());
    assert!(v["crypto_breakdown_us"]["mlkem768_encapsulate"].is_null(), "{v}");
    assert_eq!(v["responder_intermediate_us"], 0.0, "no IKE_INTERMEDIATE: {v}");
}

/// The post-quantum suites run their real exchanges (ML-KEM-768 in
/// IKE_INTERMEDIATE after X25519, or alone in IKE_SA_INIT) and price the
/// ceiling with exactly the suite's key exchanges.
#[test]
fn ike_bench_pq_suites_json_is_valid() {
    let suites: [(&str, &str, &[&str], &[&str]); 2] = [
        (
            "x25519-mlkem768",
            "aes256gcm16-prfsha256-x25519-ke1_mlkem768",
            &["x25519_keygen_agree", "mlkem768_encapsulate", "int_auth"],
            &[],
        ),
        (
            "mlkem768-only",
            "aes256gcm16-prfsha256-mlkem768",
            &["mlkem768_encapsulate"],
            &["x25519_keygen_agree", "int_auth"],
        ),
    ];
    for (suite, proposal, present, absent) in suites {
        let v = json_of(
            env!("CARGO_BIN_EXE_ike-bench"),
            &[
                "--json",
                "--suite",
                suite,
                "--seconds",
                "0.05",
                "--batch",
                "16",
                "--live-sas",
                "48",
            ],
            Duration::from_secs(120),
        );
        assert_eq!(v["suite"], suite, "{v}");
        assert_eq!(v["ike_proposal"], proposal, "{v}");
        assert_eq!(v["live_sas"], 48, "{v}");
        for key in [
            "handshakes_per_sec",
            "ceiling_per_sec",
            "ratio",
            "crypto_us_per_handshake",
        ] {
            assert!(v[key].as_f64().is_some_and(|x| x > 0.0), "{suite} {key}: {v}");
        }
        let breakdown = &v["crypto_breakdown_us"];
        for key in present
            .iter()
            .chain(["skeyseed_prf_plus", "auth_verify", "auth_compute", "child_keymat"].iter())
        {
            assert!(
                breakdown[key].as_f64().is_some_and(|x| x > 0.0),
                "{suite} prices {key}: {v}"
            );
        }
        for key in absent {
            assert!(breakdown[key].is_null(), "{suite} has no {key}: {v}");
        }
        let sizes = &v["message_sizes"];
        let init_request = sizes["ike_sa_init"][0].as_u64().unwrap_or(0);
        let intermediate_request = sizes["ike_intermediate"][0].as_u64().unwrap_or(0);
        // An ML-KEM-768 encapsulation key is 1,184 bytes: it travels in
        // IKE_INTERMEDIATE for the hybrid, in IKE_SA_INIT when alone.
        if suite == "x25519-mlkem768" {
            assert!(init_request < 1184 && intermediate_request > 1184, "{suite}: {sizes}");
            assert!(v["responder_intermediate_us"].as_f64().is_some_and(|x| x > 0.0), "{v}");
        } else {
            assert!(init_request > 1184 && intermediate_request == 0, "{suite}: {sizes}");
            assert_eq!(v["responder_intermediate_us"], 0.0, "{v}");
        }
    }
}

/// The EAP-MSCHAPv2 suite: five IKE_AUTH exchanges per handshake, and a
/// ceiling that includes the gateway's MSCHAPv2 work and the AUTH over the MSK.
#[test]
fn ike_bench_eap_mschapv2_suite_json() {
    let v = json_of(
        env!("CARGO_BIN_EXE_ike-bench"),
        &[
            "--json",
            "--suite",
            "eap-mschapv2",
            "--seconds",
            "0.1",
            "--batch",
            "64",
            "--live-sas",
            "256",
        ],
        Duration::from_secs(240),
    );
    assert_eq!(v["suite"], "eap-mschapv2", "{v}");
    assert_eq!(v["auth"], "eap-mschapv2", "{v}");
    assert_eq!(v["ike_proposal"], "aes256gcm16-prfsha256-x25519", "{v}");
    assert_eq!(v["ike_auth_exchanges"], 5, "{v}");
    assert_eq!(v["target_ratio"], 0.5);
    for key in ["handshakes_per_sec", "ceiling_per_sec", "ratio"] {
        assert!(v[key].as_f64().is_some_and(|x| x > 0.0), "{key}: {v}");
    }
    for key in ["eap_mschapv2_server", "auth_over_msk"] {
        assert!(
            v["crypto_breakdown_us"][key].as_f64().is_some_and(|x| x > 0.0),
            "{key} is in the ceiling: {v}"
        );
    }
    let plain = json_of(
        env!("CARGO_BIN_EXE_ike-bench"),
        &["--json", "--seconds", "0.1", "--batch", "64", "--live-sas", "256"],
        Duration::from_secs(120),
    );
    assert_eq!(plain["ike_auth_exchanges"], 1);
    assert!(plain["crypto_breakdown_us"]["eap_mschapv2_server"].is_null(), "{plain}");
    assert_eq!(plain["auth"], "psk", "{plain}");
}

/// Needs root (DPDK's EAL) and a build with `--features dpdk`.
#[cfg(feature = "dpdk")]
#[test]
fn dpdk_bench_json_is_valid() {
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false);
    if !root {
        eprintln!("skipping dpdk_bench_json_is_valid: needs root (DPDK EAL)");
        return;
    }
    let v = json_of(
        env!("CARGO_BIN_EXE_dpdk-bench"),
        &[
            "--json",
            "--no-reference",
            "--reps",
            "1",
            "--secs",
            "0.05",
            "--modes",
            "cpu",
            "--sizes",
            "64",
        ],
        Duration::from_secs(60),
    );
    assert_eq!(v["bench"], "dpdk-bench");
    assert_eq!(v["reps"], 1);
    let r = &v["results"][0];
    assert_eq!(r["size"], 64);
    assert_eq!(r["mode"], "cpu");
    assert!(r["backend_mpps"].as_f64().is_some_and(|x| x > 0.0), "{v}");
    assert!(r["ratio"].is_null(), "no reference, no ratio: {v}");
    assert!(r["modes"]["cpu"]["mpps"].is_f64());
}
