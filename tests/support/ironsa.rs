//! Runs the `ironsa` daemon binary for integration tests and talks to it
//! through its control socket.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A `[[connection]]` named `peer` to `remote` with one tunnel child `net`
/// (`local_ts` === `remote_ts`), PSK authentication and AES-256-GCM, for
/// configurations of two ironsa daemons facing each other.
pub fn peer_connection(
    remote: &str,
    local_ts: &str,
    remote_ts: &str,
    local_id: &str,
    remote_id: &str,
    psk: &str,
) -> String {
    format!(
        r#"
[[connection]]
name = "peer"
remote_addrs = ["{remote}"]
local_id = "{local_id}"
remote_id = "{remote_id}"
psk = "{psk}"
ike_proposals = "aes256gcm16-prfsha256-x25519"

[[connection.child]]
name = "net"
local_ts = ["{local_ts}"]
remote_ts = ["{remote_ts}"]
esp_proposals = "aes256gcm16"
"#
    )
}

/// A one-shard daemon listening on `me` with the software data plane
/// (TUN `ironsa0`, `workers` workers) and the connections in `connections`.
pub fn software_daemon(me: &str, workers: usize, connections: &str) -> String {
    format!(
        r#"
[daemon]
listen = ["{me}"]
shards = 1
control_socket = "SOCKET"

[fastpath]
backend = "software"
tun_name = "ironsa0"
workers = {workers}
{connections}"#
    )
}

/// A running `ironsa run` process; stopped (SIGTERM, then SIGKILL) on Drop.
pub struct Ironsa {
    child: Option<Child>,
    dir: tempfile::TempDir,
    socket: PathBuf,
    netns: Option<String>,
}

impl Ironsa {
    /// Writes `config` (which must set `control_socket = "SOCKET"`; the
    /// placeholder is replaced) and starts the daemon, optionally inside a
    /// network namespace. Waits until the control socket answers. Logs at
    /// `IRONSA_LOG`, else at debug.
    pub fn start(config: &str, netns: Option<&str>) -> Ironsa {
        let filter = std::env::var("IRONSA_LOG").unwrap_or_else(|_| "debug".into());
        Self::start_logging(config, netns, Some(&filter))
    }

    /// Like [`Ironsa::start`], with the log filter `filter`, or with none
    /// (`IRONSA_LOG` unset: the level the configuration sets, by default info).
    pub fn start_logging(config: &str, netns: Option<&str>, filter: Option<&str>) -> Ironsa {
        let dir = tempfile::Builder::new()
            .prefix("ironsa-test-")
            .tempdir()
            .expect("tempdir");
        let socket = dir.path().join("ironsa.sock");
        let config = config
            .replace("SOCKET", &socket.display().to_string())
            .replace("DIR", &dir.path().display().to_string());
        let cfg_path = dir.path().join("ironsa.toml");
        std::fs::write(&cfg_path, &config).expect("write config");
        let log = std::fs::File::create(dir.path().join("ironsa.log")).expect("log");
        let bin = env!("CARGO_BIN_EXE_ironsa");
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, bin]);
                c
            }
            None => Command::new(bin),
        };
        cmd.args(["run", "--config"]).arg(&cfg_path);
        match filter {
            Some(f) => cmd.env("IRONSA_LOG", f),
            None => cmd.env_remove("IRONSA_LOG"),
        };
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        let child = cmd.spawn().expect("spawn ironsa");
        let me = Ironsa {
            child: Some(child),
            dir,
            socket,
            netns: netns.map(str::to_string),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if me.try_call(r#"{"cmd":"stats"}"#).is_some() {
                return me;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        me.dump_log();
        panic!("ironsa did not start");
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// The temporary directory (config, log, socket).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn try_call(&self, req: &str) -> Option<Value> {
        use std::io::{BufRead, BufReader, Write};
        let mut s = std::os::unix::net::UnixStream::connect(&self.socket).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        s.write_all(format!("{req}\n").as_bytes()).ok()?;
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).ok()?;
        serde_json::from_str(&line).ok()
    }

    /// Sends a control request and returns the whole answer, refusals included.
    pub fn answer(&self, req: &Value) -> Value {
        self.try_call(&req.to_string()).unwrap_or_else(|| {
            self.dump_log();
            panic!("no answer from ironsa")
        })
    }

    /// Sends a control request; panics if the daemon reports an error.
    pub fn call(&self, req: Value) -> Value {
        let v = self.try_call(&req.to_string()).unwrap_or_else(|| {
            self.dump_log();
            panic!("no answer from ironsa")
        });
        if v["ok"] != Value::Bool(true) {
            self.dump_log();
            panic!("ironsa refused {req}: {v}");
        }
        v["data"].clone()
    }

    /// `ironsa sas` as JSON.
    pub fn sas(&self) -> Vec<Value> {
        self.call(serde_json::json!({"cmd": "sas"}))
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// (packets in, packets out) of the first CHILD_SA of the first IKE SA (0 when absent).
    pub fn child_packets(&self) -> (u64, u64) {
        let c = &self.sas().first().cloned().unwrap_or_default()["children"][0]["counters"];
        (
            c["packets_in"].as_u64().unwrap_or(0),
            c["packets_out"].as_u64().unwrap_or(0),
        )
    }

    /// Path of the control socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends a control request and returns the whole answer (`ok`, `data`, `error`).
    pub fn request(&self, req: Value) -> Value {
        self.try_call(&req.to_string()).unwrap_or_else(|| {
            self.dump_log();
            panic!("no answer from ironsa")
        })
    }

    /// Waits until `pred` holds for the SA list.
    pub fn wait_sas(&self, limit: Duration, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + limit;
        loop {
            let s = self.sas();
            if pred(&s) {
                return s;
            }
            if Instant::now() > deadline {
                self.dump_log();
                panic!("condition on ironsa SAs not met within {limit:?}: {s:#?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The daemon's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("ironsa.log")).unwrap_or_default()
    }

    /// Prints the log tail to stderr.
    pub fn dump_log(&self) {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let start = lines.len().saturating_sub(80);
        eprintln!(
            "---- ironsa log (last {} lines) ----\n{}",
            lines.len() - start,
            lines[start..].join("\n")
        );
    }

    /// Kills the daemon with SIGKILL (no DELETE, no cleanup) and waits.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the daemon gracefully (DELETE to peers) and waits.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Ironsa {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_log();
        }
        // Inside a namespace `ip netns exec` execs the daemon, so the PID is the daemon's.
        let _ = &self.netns;
        self.stop();
    }
}

/// The Prometheus page a daemon serves on `127.0.0.1:port`.
pub fn metrics(port: u16) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(std::net::SocketAddr::from(([127, 0, 0, 1], port))).unwrap();
    // The daemon answers from its shards, which a loaded machine may starve for seconds.
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body
}

/// The sum of metric `name` over its label sets (the shards) in a metrics page.
pub fn metric(body: &str, name: &str) -> u64 {
    body.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}
