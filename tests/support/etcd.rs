//! A real etcd cluster for the cluster tests: one process per member, each
//! with its own data directory and ports, on loopback or on an address of a
//! network namespace the test made; killed when dropped.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Free TCP ports on 127.0.0.1, held until all are chosen so none repeats.
fn free_tcp_ports(n: usize) -> Vec<u16> {
    let held: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("a free TCP port"))
        .collect();
    held.iter().map(|l| l.local_addr().expect("bound").port()).collect()
}

/// One etcd member.
struct Member {
    name: String,
    peer: u16,
    client: u16,
    child: Option<Child>,
}

/// A three-member (or n-member) etcd cluster.
pub struct Etcd {
    dir: tempfile::TempDir,
    members: Vec<Member>,
    token: String,
    /// The members' address.
    host: String,
    /// The network namespace they run in (`None`: this one).
    netns: Option<String>,
}

impl Etcd {
    /// Starts `n` members and waits until the cluster answers (20 s at most).
    pub fn start(n: usize) -> Etcd {
        Self::start_at(n, "127.0.0.1", None)
    }

    /// Starts `n` members on address `host` (with loopback ports free in
    /// this namespace: a fresh namespace has them all), inside network
    /// namespace `netns` if given.
    pub fn start_at(n: usize, host: &str, netns: Option<&str>) -> Etcd {
        let dir = tempfile::tempdir().expect("temporary directory");
        let ports = free_tcp_ports(2 * n);
        let members: Vec<Member> = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                peer: ports[2 * i],
                client: ports[2 * i + 1],
                child: None,
            })
            .collect();
        let token = format!("ironsa-test-{}", super::util::unique_id());
        let mut etcd = Etcd {
            dir,
            members,
            token,
            host: host.to_string(),
            netns: netns.map(str::to_string),
        };
        for i in 0..n {
            etcd.spawn(i);
        }
        etcd.wait_healthy(Duration::from_secs(20));
        etcd
    }

    fn spawn(&mut self, i: usize) {
        let initial: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("{}=http://{}:{}", m.name, self.host, m.peer))
            .collect();
        let m = &self.members[i];
        let h = &self.host;
        let data: PathBuf = self.dir.path().join(&m.name);
        let log = std::fs::File::create(self.dir.path().join(format!("{}.log", m.name))).expect("etcd log file");
        let child = self
            .command("etcd")
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen-peer-urls", &format!("http://{h}:{}", m.peer)])
            .args(["--initial-advertise-peer-urls", &format!("http://{h}:{}", m.peer)])
            .args(["--listen-client-urls", &format!("http://{h}:{}", m.client)])
            .args(["--advertise-client-urls", &format!("http://{h}:{}", m.client)])
            .args(["--initial-cluster", &initial.join(",")])
            .args(["--initial-cluster-state", "new", "--initial-cluster-token", &self.token])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("etcd starts (scripts/install-deps.sh installs etcd-server)");
        self.members[i].child = Some(child);
    }

    /// `program`, in the members' namespace.
    fn command(&self, program: &str) -> Command {
        match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, program]);
                c
            }
            None => Command::new(program),
        }
    }

    /// The client endpoints (`host:port`) of every member.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("{}:{}", self.host, m.client))
            .collect()
    }

    /// Kills member `i` (SIGKILL).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts member `i` again on its data directory.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i);
    }

    /// `etcdctl endpoint health` of the running members, until they all answer.
    pub fn wait_healthy(&self, limit: Duration) {
        let running: Vec<String> = self
            .members
            .iter()
            .filter(|m| m.child.is_some())
            .map(|m| format!("{}:{}", self.host, m.client))
            .collect();
        let deadline = Instant::now() + limit;
        loop {
            let out = self
                .command("etcdctl")
                .env("ETCDCTL_API", "3")
                .args([
                    "--dial-timeout",
                    "1s",
                    "--command-timeout",
                    "2s",
                    "--endpoints",
                    &running.join(","),
                ])
                .args(["endpoint", "health"])
                .output();
            if out.as_ref().is_ok_and(|o| o.status.success()) {
                return;
            }
            if Instant::now() > deadline {
                panic!("etcd not healthy within {limit:?}: {out:?}\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `etcdctl ARGS` against every member; its standard output.
    fn etcdctl(&self, args: &[&str]) -> Vec<u8> {
        let out = self
            .command("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &self.endpoints().join(",")])
            .args(args)
            .output()
            .expect("etcdctl runs");
        out.stdout
    }

    /// `etcdctl get --prefix --keys-only PREFIX`: the keys under a prefix.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        String::from_utf8_lossy(&self.etcdctl(&["get", "--prefix", "--keys-only", prefix]))
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// `etcdctl get --print-value-only KEY`.
    pub fn value(&self, key: &str) -> Vec<u8> {
        self.etcdctl(&["get", "--print-value-only", key])
    }

    /// The members' logs, for failure messages.
    pub fn logs(&self) -> String {
        self.members
            .iter()
            .map(|m| {
                let p = self.dir.path().join(format!("{}.log", m.name));
                format!("--- {}\n{}", m.name, super::util::tail_file(&p, 15))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}
