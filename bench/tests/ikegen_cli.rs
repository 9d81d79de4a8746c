//! The `ikegen` binary end to end: TOML config plus command-line overrides,
//! an in-process self-test responder, `--json` and `--plot`.

use std::process::Command;

use ironsa_bench::ikegen::report::Report;

#[test]
fn binary_runs_self_test_with_toml_json_and_plot() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("gen.toml");
    std::fs::write(
        &conf,
        "tunnels = 500\nconcurrency = 50\nsource = [\"127.0.3.0/29\"]\nlocal-id = \"cli{n}@test\"\n\
         ike = \"aes128gcm16-prfsha256-x25519\"\nesp = \"aes128gcm16\"\n",
    )
    .unwrap();
    let svg = dir.path().join("run.svg");
    let out = Command::new(env!("CARGO_BIN_EXE_ikegen"))
        .arg("--config")
        .arg(&conf)
        .args(["--tunnels", "120", "--self-test-responder", "--json", "--plot"])
        .arg(&svg)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Report = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report.attempted, 120, "the command line overrides the file");
    assert_eq!(report.established, 120);
    assert_eq!(report.children_installed, 120);
    assert_eq!(report.ike, "aes128gcm16-prfsha256-x25519");
    assert_eq!(report.sockets, 8);
    assert!(report.is_consistent());
    assert!(report.responder_cpu.is_some());
    let svg = std::fs::read_to_string(&svg).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("</svg>"));
}

#[test]
fn bad_options_fail_with_a_message() {
    let out = Command::new(env!("CARGO_BIN_EXE_ikegen"))
        .args(["--ike", "aes999-nope", "--self-test-responder"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--ike"), "{err}");
}
