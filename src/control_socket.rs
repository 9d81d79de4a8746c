//! The local control socket: one JSON request per line, one JSON answer per line.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

use crate::config_file::ControlGroup;
use crate::daemon::Daemon;

/// A request on the control socket.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case")]
pub enum Request {
    /// List IKE and CHILD SAs.
    Sas,
    /// Counters.
    Stats,
    /// Cluster nodes, their SPI ranges, load, and the lag to the store.
    Cluster,
    /// Address pools: size, use and leases.
    Pools,
    /// Initiate a connection.
    Initiate {
        /// Connection name.
        connection: String,
        /// Seconds to wait for the outcome (established, or why not); absent
        /// or 0: answer once the first request is sent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout: Option<f64>,
        /// Only this child of it (on its IKE SA if one is up).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        child: Option<String>,
    },
    /// Delete IKE SAs, or CHILD_SAs with `child`.
    Terminate {
        /// Connection name.
        connection: Option<String>,
        /// Either IKE SPI (hex).
        spi: Option<String>,
        /// CHILD_SA to delete, by SPI (hex, inbound or outbound) or name; the IKE SA stays.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        child: Option<String>,
    },
    /// Rekey an IKE SA or a CHILD_SA.
    Rekey {
        /// A connection name, or either SPI (hex) of an IKE SA or of a CHILD_SA.
        #[serde(alias = "spi")]
        target: String,
        /// CHILD_SA of the IKE SA(s) named by `target`, by SPI (hex) or name;
        /// the IKE SA itself when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        child: Option<String>,
    },
    /// Re-read the configuration.
    Reload,
    /// Change the log filter.
    LogLevel {
        /// tracing filter, e.g. `debug` or `control=trace`.
        filter: String,
    },
}

/// An answer on the control socket.
#[derive(Debug, Serialize, Deserialize)]
pub struct Response {
    /// Success?
    pub ok: bool,
    /// The result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Request {
    /// True for the verbs that only read (listings, counters); every other
    /// verb, including any added later, changes state and needs a privileged
    /// client.
    fn read_only(&self) -> bool {
        matches!(self, Request::Sas | Request::Stats | Request::Cluster | Request::Pools)
    }
}

/// Who may change state through the socket: root, the user the daemon runs
/// as, and members of the configured group. The socket's mode already keeps
/// others out; this holds even if the mode is widened by hand.
#[derive(Clone, Debug)]
struct Access {
    daemon_uid: u32,
    group: Option<ControlGroup>,
}

/// The uid and gid of the process at the other end of `stream` (SO_PEERCRED).
fn peer_credentials(stream: &UnixStream) -> std::io::Result<(u32, u32)> {
    let c = nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::PeerCredentials)?;
    Ok((c.uid(), c.gid()))
}

impl Access {
    fn may_change_state(&self, uid: u32, gid: u32) -> bool {
        if uid == 0 || uid == self.daemon_uid {
            return true;
        }
        let Some(group) = &self.group else { return false };
        if gid == group.gid {
            return true;
        }
        // A supplementary member: the group's member list names the user.
        let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten();
        let members = nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(group.gid))
            .ok()
            .flatten()
            .map(|g| g.mem)
            .unwrap_or_default();
        user.is_some_and(|u| members.contains(&u.name))
    }
}

fn ok(v: impl Serialize) -> Response {
    Response {
        ok: true,
        data: serde_json::to_value(v).ok(),
        error: None,
    }
}

fn fail(e: impl ToString) -> Response {
    Response {
        ok: false,
        data: None,
        error: Some(e.to_string()),
    }
}

fn parse_hex(s: &str) -> Result<u64, String> {
    u64::from_str_radix(s.trim_start_matches("0x"), 16).map_err(|_| format!("'{s}' is not a hex SPI"))
}

/// Executes one request.
pub fn execute(daemon: &Daemon, req: Request) -> Response {
    match req {
        Request::Sas => ok(daemon.list_sas()),
        Request::Cluster => match daemon.cluster_status() {
            Some(status) => ok(status),
            None => fail("this node is not clustered (its configuration has no [cluster] section)"),
        },
        Request::Pools => ok(daemon.pools()),
        Request::Stats => {
            let stats = daemon.stats();
            let not_answering: Vec<usize> = (0..stats.len()).filter(|&i| stats[i].is_none()).collect();
            let mut v = serde_json::json!({
                "shards": stats.into_iter().flatten().collect::<Vec<_>>(),
                "shards_not_answering": not_answering,
                "peers": daemon.peers(),
            });
            if let (Some(dp), Some(m)) = (daemon.dataplane().stats(), v.as_object_mut()) {
                m.insert("dataplane".into(), dp);
            }
            if let (Some(r), Some(m)) = (daemon.radius_stats(), v.as_object_mut()) {
                m.insert("radius".into(), r);
            }
            ok(v)
        }
        Request::Initiate {
            connection,
            timeout,
            child,
        } => {
            let wait = match timeout
                .filter(|t| *t != 0.0)
                .map(Duration::try_from_secs_f64)
                .transpose()
            {
                Ok(w) => w,
                Err(_) => return fail("timeout must be a number of seconds, 0 or more"),
            };
            daemon
                .initiate(&connection, child.as_deref(), wait)
                .map_or_else(fail, ok)
        }
        Request::Terminate {
            connection,
            spi,
            child: Some(child),
        } => daemon
            .terminate_child(connection.as_deref().or(spi.as_deref()), child)
            .map_or_else(fail, ok),
        Request::Terminate { connection, spi, .. } => {
            let spi = match spi.as_deref().map(parse_hex).transpose() {
                Ok(s) => s,
                Err(e) => return fail(e),
            };
            if connection.is_none() && spi.is_none() {
                return fail("terminate needs a connection or an SPI");
            }
            ok(serde_json::json!({ "deleted": daemon.terminate(connection, spi) }))
        }
        Request::Rekey { target, child } => daemon.rekey(&target, child).map_or_else(fail, ok),
        Request::Reload => daemon.reload().map_or_else(fail, ok),
        Request::LogLevel { filter } => daemon.set_log_level(&filter).map_or_else(fail, ok),
    }
}

fn serve(daemon: &Daemon, access: &Access, stream: UnixStream) -> std::io::Result<()> {
    let (uid, gid) = peer_credentials(&stream)?;
    let privileged = access.may_change_state(uid, gid);
    let mut writer = stream.try_clone()?;
    for line in BufReader::new(stream).lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let resp = match serde_json::from_str::<Request>(&line) {
            Ok(r) if !privileged && !r.read_only() => {
                warn!(uid, gid, request = ?r, "control socket: refused a request that changes state from an unprivileged client");
                fail(match &access.group {
                    Some(g) => format!(
                        "permission denied: only root and members of group '{}' may do this",
                        g.name
                    ),
                    None => "permission denied: only root may do this".to_string(),
                })
            }
            Ok(r) => execute(daemon, r),
            Err(e) => fail(format!("bad request: {e}")),
        };
        let mut out = serde_json::to_vec(&resp).unwrap_or_else(|_| b"{\"ok\":false}".to_vec());
        out.push(b'\n');
        writer.write_all(&out)?;
    }
    Ok(())
}

/// Listens on `path` (replacing a stale socket) and serves requests on a
/// thread per client. The socket is mode 0600, or 0660 owned by `group`.
pub fn spawn(daemon: Arc<Daemon>, path: &Path, group: Option<&ControlGroup>) -> std::io::Result<()> {
    // Run outside systemd, the runtime folder may not exist yet; 0755 lets a
    // control_socket_group reach the socket.
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        std::fs::DirBuilder::new().recursive(true).mode(0o755).create(dir)?;
    }
    if path.exists() {
        std::fs::remove_file(path)?;
    }
    // Created owner-only, so that it is never open to others before its mode is set.
    let umask = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let bound = UnixListener::bind(path);
    nix::sys::stat::umask(umask);
    let listener = bound?;
    let mode = match group {
        None => 0o600,
        Some(g) => {
            nix::unistd::chown(path, None, Some(nix::unistd::Gid::from_raw(g.gid)))?;
            0o660
        }
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    let access = Access {
        daemon_uid: nix::unistd::geteuid().as_raw(),
        group: group.cloned(),
    };
    std::thread::Builder::new()
        .name("ironsa-control".into())
        .spawn(move || {
            for stream in listener.incoming() {
                match stream {
                    Ok(s) => {
                        let d = daemon.clone();
                        let access = access.clone();
                        let _ = std::thread::Builder::new().name("ironsa-client".into()).spawn(move || {
                            if let Err(e) = serve(&d, &access, s) {
                                debug!("control client: {e}");
                            }
                        });
                    }
                    Err(e) => warn!("control socket: {e}"),
                }
            }
        })?;
    Ok(())
}

/// How long a client waits for an answer beyond what the request itself waits.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// Client side: sends one request and returns the answer.
pub fn call(path: &Path, req: &Request) -> Result<Response, String> {
    let mut s = UnixStream::connect(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::PermissionDenied => format!(
            "cannot connect to {}: {e} (the socket is for root and the members of daemon.control_socket_group)",
            path.display()
        ),
        _ => format!("cannot connect to {}: {e} (is ironsa running?)", path.display()),
    })?;
    let waits = match req {
        Request::Initiate { timeout: Some(t), .. } => Duration::try_from_secs_f64(*t).unwrap_or_default(),
        _ => Duration::ZERO,
    };
    s.set_read_timeout(Some(ANSWER_TIMEOUT + waits))
        .map_err(|e| e.to_string())?;
    let mut line = serde_json::to_vec(req).map_err(|e| e.to_string())?;
    line.push(b'\n');
    s.write_all(&line).map_err(|e| e.to_string())?;
    let mut answer = String::new();
    BufReader::new(s).read_line(&mut answer).map_err(|e| e.to_string())?;
    serde_json::from_str(&answer).map_err(|e| format!("bad answer: {e}"))
}
