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
    let responder = report.responder.as_ref().unwrap();
    assert_eq!(responder.established, 120, "the responder agrees");
    assert_eq!(responder.children, 120);
    assert!(responder.cpu.user_secs + responder.cpu.sys_secs > 0.0);
    let svg = std::fs::read_to_string(&svg).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("</svg>"));
}

#[test]
fn unreadable_gateway_metrics_fail_the_run_with_a_message() {
    // A port nobody listens on: the run must not report ESP without the gateway's view.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = Command::new(env!("CARGO_BIN_EXE_ikegen"))
        .args(["-n", "5", "--self-test-responder", "--quiet", "--gateway-metrics"])
        .arg(format!("127.0.0.1:{port}"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("gateway's metrics at http://127.0.0.1:{port}/metrics")),
        "{err}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_ikegen"))
        .args(["--gateway-metrics", "no-port-here", "--self-test-responder"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--gateway-metrics 'no-port-here'"), "{err}");
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

#[test]
fn generator_against_the_standalone_responder_process() {
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let responder = Command::new(env!("CARGO_BIN_EXE_ike-responder"))
        .args(["--listen", &listen, "--esp", "none"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let out = Command::new(env!("CARGO_BIN_EXE_ikegen"))
        .args([
            "--remote",
            &listen,
            "-n",
            "80",
            "--childless",
            "--json",
            "--source",
            "127.0.6.0/29",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Report = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    // SIGINT makes the responder print its counters and exit.
    let killed = Command::new("kill")
        .args(["-INT", &responder.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let r = responder.wait_with_output().unwrap();
    let rout = String::from_utf8_lossy(&r.stdout);
    assert!(r.status.success(), "{rout} {}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(report.established, 80, "{stdout}");
    assert!(rout.contains("established 80 "), "{rout}");
}
