//! pool-bench runs small, reports consistent JSON, and has --help/--version.

use std::process::Command;

#[test]
fn small_run_reports_consistent_json() {
    let out = Command::new(env!("CARGO_BIN_EXE_pool-bench"))
        .args(["--addresses", "5000", "--ops", "20000", "--json"])
        .output()
        .expect("pool-bench runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    let f = |k: &str| v[k].as_f64().unwrap_or_else(|| panic!("{k} missing in {v}"));
    assert_eq!(v["addresses"], 5000);
    assert!(f("ns_per_op") > 0.0 && f("reference_hashmap_ns_per_op") > 0.0);
    // Identity + table slot + per-address state: more than the identity's
    // 20-odd bytes, far less than a kilobyte.
    assert!((20.0..1024.0).contains(&f("bytes_per_lease")), "{v}");
    assert!((f("ns_ratio_to_target") - f("ns_per_op") / 1000.0).abs() < 1e-9);
    assert!((f("bytes_ratio_to_target") - f("bytes_per_lease") / 64.0).abs() < 1e-9);
    assert!(
        v["reconnects_reused"].as_u64().expect("count") > 0,
        "no reconnect got its address back: {v}"
    );
}

#[test]
fn help_and_version() {
    for flag in ["--help", "--version"] {
        let out = Command::new(env!("CARGO_BIN_EXE_pool-bench"))
            .arg(flag)
            .output()
            .expect("runs");
        assert!(out.status.success());
        assert!(!out.stdout.is_empty());
    }
    let bad = Command::new(env!("CARGO_BIN_EXE_pool-bench"))
        .args(["--addresses", "0"])
        .output()
        .expect("runs");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--addresses"));
}
