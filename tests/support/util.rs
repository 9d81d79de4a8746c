//! Errors, bounded command execution, unique names and free UDP ports.

use std::ffi::OsStr;
use std::fmt;
use std::net::UdpSocket;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// Any failure of the harness: a command that failed, timed out, or printed
/// something the harness could not understand.
#[derive(Debug)]
#[non_exhaustive]
pub enum HarnessError {
    /// A command could not be spawned.
    Spawn { command: String, source: std::io::Error },
    /// A command exited unsuccessfully (124 = killed by `timeout`).
    Failed {
        command: String,
        status: Option<i32>,
        stdout: String,
        stderr: String,
    },
    /// Filesystem error while preparing configuration.
    Io { context: String, source: std::io::Error },
    /// Output that could not be parsed.
    Parse(String),
    /// Something did not happen within its deadline.
    Timeout(String),
    /// Invalid use of the harness.
    Usage(String),
}

impl fmt::Display for HarnessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Spawn { command, source } => write!(f, "cannot spawn `{command}`: {source}"),
            Self::Failed {
                command,
                status,
                stdout,
                stderr,
            } => write!(
                f,
                "`{command}` failed (status {status:?}{})\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
                if *status == Some(124) { ", timed out" } else { "" }
            ),
            Self::Io { context, source } => write!(f, "{context}: {source}"),
            Self::Parse(msg) => write!(f, "parse error: {msg}"),
            Self::Timeout(msg) => write!(f, "timeout: {msg}"),
            Self::Usage(msg) => write!(f, "harness misuse: {msg}"),
        }
    }
}

impl std::error::Error for HarnessError {}

/// Result type of the harness.
pub type Result<T> = std::result::Result<T, HarnessError>;

/// Wraps an `std::io::Error` with a context string.
pub fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> HarnessError {
    let context = context.into();
    move |source| HarnessError::Io { context, source }
}

fn describe(program: &str, args: &[&OsStr]) -> String {
    let mut s = program.to_string();
    for a in args {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `program args...` under coreutils `timeout` (SIGTERM at `limit`, SIGKILL
/// one second later), with extra environment variables; returns the output when
/// the exit status is 0, an error carrying stdout/stderr otherwise.
pub fn run_bounded<S: AsRef<OsStr>>(
    program: &str,
    args: &[S],
    envs: &[(&str, &OsStr)],
    limit: Duration,
) -> Result<Output> {
    let args: Vec<&OsStr> = args.iter().map(|a| a.as_ref()).collect();
    let command = describe(program, &args);
    let secs = format!("{:.3}", limit.as_secs_f64().max(0.1));
    let mut cmd = Command::new("timeout");
    cmd.arg("--kill-after=1").arg(&secs).arg(program).args(&args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().map_err(|source| HarnessError::Spawn {
        command: command.clone(),
        source,
    })?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(HarnessError::Failed {
            command,
            status: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}

/// Runs a command with a 10 s bound and no extra environment.
pub fn run<S: AsRef<OsStr>>(program: &str, args: &[S]) -> Result<Output> {
    run_bounded(program, args, &[], Duration::from_secs(10))
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A number unique within this process (0, 1, 2, ...).
pub fn next_seq() -> u32 {
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// A name unique among concurrently running test processes: `<pid>-<seq>`.
pub fn unique_id() -> String {
    format!("{}-{}", std::process::id(), next_seq())
}

fn udp_port_free(port: u16) -> bool {
    // charon binds the wildcard address, so probe the wildcard too.
    UdpSocket::bind(("0.0.0.0", port)).is_ok() && UdpSocket::bind(("127.0.0.1", port)).is_ok()
}

static PORT_CURSOR: AtomicU32 = AtomicU32::new(0);

/// Two consecutive free UDP ports `(p, p + 1)` for charon's `port` and
/// `port_nat_t`. Candidates start at a pid-dependent offset in 20000..50000 so that
/// parallel test binaries rarely probe the same ports.
pub fn free_udp_port_pair() -> Result<(u16, u16)> {
    const BASE: u32 = 20000;
    const SPAN: u32 = 30000;
    let start = (std::process::id() * 97) % SPAN;
    for _ in 0..2000 {
        let step = PORT_CURSOR.fetch_add(2, Ordering::Relaxed);
        let offset = (start + step) % SPAN;
        let p = (BASE + offset - offset % 2) as u16;
        if udp_port_free(p) && udp_port_free(p + 1) {
            return Ok((p, p + 1));
        }
    }
    Err(HarnessError::Usage("no free UDP port pair found".into()))
}

/// The last `lines` lines of a text file (empty string if it cannot be read).
pub fn tail_file(path: &std::path::Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    let from = all.len().saturating_sub(lines);
    all[from..].join("\n")
}

/// True when the process runs as root; otherwise `test` is skipped with a
/// one-line reason ([`super::require::skip_unless`], which also checks tools).
pub fn root_or_skip(_test: &str) -> bool {
    !super::require::skip_unless(&[super::require::Need::Root])
}

/// The body of an HTTP GET of `path` on 127.0.0.1:`port` (the daemon's
/// metrics endpoint), with the response head.
pub fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).expect("metrics endpoint");
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // One write: the endpoint reads the request line from its first segment.
    c.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .unwrap();
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}
