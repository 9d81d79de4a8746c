//! FreeRADIUS 3.2 for tests, started in the foreground from a configuration
//! generated into a temporary directory (the packaged one, copied and
//! edited): EAP with MD5 and MSCHAPv2 (no TLS, so no certificates), users
//! `alice` (`alice-secret-1`, Framed-IP-Address 10.9.0.7, Class
//! [`ALICE_CLASS`], Acct-Interim-Interval 1 s) and `bob` (`bob-secret`), NAS client 127.0.0.1 with
//! [`SECRET`], accounting to the detail file under [`FreeRadius::dir`].

use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The shared secret of the NAS client 127.0.0.1.
pub const SECRET: &str = "radius-test-secret";
/// The Class attribute of alice's Access-Accept.
pub const ALICE_CLASS: &str = "ironsa-class-alice";

/// FreeRADIUS in the foreground; killed when dropped.
pub struct FreeRadius {
    child: Child,
    /// Authentication port on 127.0.0.1.
    pub port: u16,
    /// Accounting port on 127.0.0.1.
    pub acct_port: u16,
    /// The temporary directory (raddb/, log/, radacct detail files).
    pub dir: std::path::PathBuf,
    _tmp: tempfile::TempDir,
}

impl Drop for FreeRadius {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A UDP port free on loopback now.
pub fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn edit(path: &Path, f: impl FnOnce(String) -> String) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    std::fs::write(path, f(text)).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// The EAP module of the MSCHAPv2 tests: no TLS methods, so no certificates.
const EAP_MSCHAPV2: &str = "eap {\n default_eap_type = mschapv2\n timer_expire = 60\n ignore_unknown_eap_types = no\n max_sessions = 1024\n md5 {\n }\n mschapv2 {\n }\n}\n";

/// Generates the configuration, checks it (`freeradius -C`) and starts
/// the server; returns once it is ready to process requests.
pub fn start_freeradius() -> FreeRadius {
    start_freeradius_with(EAP_MSCHAPV2)
}

/// [`start_freeradius`] with `eap_module` as its `mods-enabled/eap`.
pub fn start_freeradius_with(eap_module: &str) -> FreeRadius {
    start(eap_module, None)
}

/// [`start_freeradius`] inside the network namespace `netns` (on its
/// loopback).
pub fn start_freeradius_in(netns: &str) -> FreeRadius {
    start(EAP_MSCHAPV2, Some(netns))
}

impl FreeRadius {
    /// Everything in the accounting detail files of NAS `nas`.
    pub fn detail(&self, nas: &str) -> String {
        let dir = self.dir.join("log/radacct").join(nas);
        std::fs::read_dir(&dir)
            .map(|entries| {
                entries
                    .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn start(eap_module: &str, netns: Option<&str>) -> FreeRadius {
    let dir = tempfile::tempdir().expect("temporary directory");
    let raddb = dir.path().join("raddb");
    let status = Command::new("cp")
        .arg("-a")
        .arg("/etc/freeradius/3.0")
        .arg(&raddb)
        .status()
        .expect("cp");
    assert!(status.success(), "copying /etc/freeradius/3.0 failed");
    let base = dir.path().display().to_string();
    for sub in ["log", "run"] {
        std::fs::create_dir_all(dir.path().join(sub)).expect("mkdir");
    }
    edit(&raddb.join("radiusd.conf"), |t| {
        t.lines()
            .map(|l| {
                let k = l.trim_start();
                if k.starts_with("raddbdir =") {
                    format!("raddbdir = {base}/raddb")
                } else if k.starts_with("logdir =") {
                    format!("logdir = {base}/log")
                } else if k.starts_with("run_dir =") {
                    format!("run_dir = {base}/run")
                } else if k.starts_with("reject_delay =") {
                    // Rejects answered at once, within the client's timeout.
                    "reject_delay = 0".to_string()
                } else if k.starts_with("user =") || k.starts_with("group =") {
                    String::new()
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    });
    std::fs::write(
        raddb.join("clients.conf"),
        format!("client local {{\n ipaddr = 127.0.0.1\n secret = {SECRET}\n}}\n"),
    )
    .expect("clients.conf");
    let eap = raddb.join("mods-enabled/eap");
    let _ = std::fs::remove_file(&eap);
    std::fs::write(&eap, eap_module).expect("eap module");
    for site in ["default", "inner-tunnel"] {
        let _ = std::fs::remove_file(raddb.join("sites-enabled").join(site));
    }
    let port = free_port();
    let acct_port = free_port();
    std::fs::write(
        raddb.join("sites-enabled/test"),
        format!(
            "server test {{\n listen {{\n  type = auth\n  ipaddr = 127.0.0.1\n  port = {port}\n }}\n listen {{\n  type = acct\n  ipaddr = 127.0.0.1\n  port = {acct_port}\n }}\n accounting {{\n  detail\n }}\n authorize {{\n  files\n  eap {{\n   ok = return\n  }}\n }}\n authenticate {{\n  Auth-Type MS-CHAP {{\n   mschap\n  }}\n  eap\n }}\n post-auth {{\n }}\n}}\n"
        ),
    )
    .expect("site");
    edit(&raddb.join("mods-config/files/authorize"), |t| {
        format!(
            "alice Cleartext-Password := \"alice-secret-1\"\n\tFramed-IP-Address = 10.9.0.7,\n\tClass = \"{ALICE_CLASS}\",\n\tAcct-Interim-Interval = 1\nbob Cleartext-Password := \"bob-secret\"\n{t}"
        )
    });
    let check = Command::new("freeradius")
        .arg("-C")
        .arg("-d")
        .arg(&raddb)
        .output()
        .expect("freeradius -C");
    assert!(
        check.status.success(),
        "freeradius -C failed:\n{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let mut command = match netns {
        None => Command::new("freeradius"),
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "freeradius"]);
            c
        }
    };
    let mut child = command
        .args(["-f", "-l", "stdout", "-d"])
        .arg(&raddb)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("freeradius starts");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("Ready to process requests") {
                let _ = tx.send(());
            }
            eprintln!("freeradius: {line}");
        }
    });
    let server = FreeRadius {
        child,
        port,
        acct_port,
        dir: dir.path().to_path_buf(),
        _tmp: dir,
    };
    rx.recv_timeout(Duration::from_secs(20))
        .expect("FreeRADIUS ready within 20 s");
    server
}
