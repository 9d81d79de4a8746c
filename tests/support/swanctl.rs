//! Thin wrapper over the `swanctl` CLI for one running charon.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::time::Duration;

use super::sas::{IkeSaInfo, parse_list_sas};
use super::util::{Result, run_bounded};

/// What an initiate/terminate/rekey call acts on.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// An IKE connection / IKE SA by configured name.
    Ike(&'a str),
    /// A CHILD_SA by configured child name.
    Child(&'a str),
    /// An IKE SA by charon's unique id.
    IkeId(u32),
    /// A CHILD_SA by charon's unique id.
    ChildId(u32),
}

impl Target<'_> {
    fn args(&self) -> Vec<String> {
        match self {
            Self::Ike(n) => vec!["--ike".into(), n.to_string()],
            Self::Child(n) => vec!["--child".into(), n.to_string()],
            Self::IkeId(id) => vec!["--ike-id".into(), id.to_string()],
            Self::ChildId(id) => vec!["--child-id".into(), id.to_string()],
        }
    }
}

/// `swanctl` bound to one charon (its strongswan.conf and swanctl directory).
#[derive(Debug, Clone)]
pub struct Swanctl {
    /// strongswan.conf holding `swanctl.socket`.
    pub strongswan_conf: PathBuf,
    /// Directory holding swanctl.conf and the credential folders.
    pub swanctl_dir: PathBuf,
    /// Bound for calls that take no explicit timeout.
    pub default_timeout: Duration,
    /// The swanctl binary (Debian's on PATH, or strongSwan 6's).
    pub program: String,
}

impl Swanctl {
    /// A wrapper for the given configuration paths.
    pub fn new(strongswan_conf: PathBuf, swanctl_dir: PathBuf) -> Self {
        Self {
            strongswan_conf,
            swanctl_dir,
            default_timeout: Duration::from_secs(5),
            program: "swanctl".into(),
        }
    }

    /// The same wrapper running `program` instead of the swanctl on PATH.
    pub fn with_program(mut self, program: &str) -> Self {
        self.program = program.into();
        self
    }

    /// Runs `swanctl ARGS` bounded by `limit`; returns stdout on success.
    pub fn run<S: AsRef<OsStr>>(&self, args: &[S], limit: Duration) -> Result<String> {
        let envs = [
            ("STRONGSWAN_CONF", self.strongswan_conf.as_os_str()),
            ("SWANCTL_DIR", self.swanctl_dir.as_os_str()),
        ];
        let out = run_bounded(&self.program, args, &envs, limit)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `swanctl --stats` (succeeds once the VICI socket answers).
    pub fn stats(&self) -> Result<String> {
        self.run(&["--stats"], Duration::from_secs(1))
    }

    /// `swanctl --load-all`.
    pub fn load_all(&self) -> Result<String> {
        self.run(&["--load-all"], self.default_timeout)
    }

    /// `swanctl --initiate --ike|--child NAME --timeout SECS`; the call returns when
    /// the SA is up (or failed), bounded by `limit`.
    pub fn initiate(&self, target: Target<'_>, limit: Duration) -> Result<String> {
        let secs = limit.as_secs().max(1);
        let mut args = vec!["--initiate".to_string()];
        args.extend(target.args());
        args.extend(["--timeout".to_string(), secs.to_string()]);
        self.run(&args, limit + Duration::from_secs(1))
    }

    /// `swanctl --terminate ...` (waits for completion, bounded by the default timeout).
    pub fn terminate(&self, target: Target<'_>) -> Result<String> {
        let secs = self.default_timeout.as_secs().max(1);
        let mut args = vec!["--terminate".to_string()];
        args.extend(target.args());
        args.extend(["--timeout".to_string(), secs.to_string()]);
        self.run(&args, self.default_timeout + Duration::from_secs(1))
    }

    /// `swanctl --rekey ...` (IKE or CHILD_SA by name or id).
    pub fn rekey(&self, target: Target<'_>) -> Result<String> {
        let mut args = vec!["--rekey".to_string()];
        args.extend(target.args());
        self.run(&args, self.default_timeout)
    }

    /// `swanctl --list-sas --pretty`, parsed.
    pub fn list_sas(&self) -> Result<Vec<IkeSaInfo>> {
        let text = self.list_sas_text()?;
        parse_list_sas(&text)
    }

    /// `swanctl --list-sas --pretty`, raw text (e.g. for new fixtures).
    pub fn list_sas_text(&self) -> Result<String> {
        self.run(&["--list-sas", "--pretty"], self.default_timeout)
    }

    /// Polls [`Swanctl::list_sas`] until `pred` holds, or fails after `limit`.
    pub fn wait_for_sas(&self, limit: Duration, mut pred: impl FnMut(&[IkeSaInfo]) -> bool) -> Result<Vec<IkeSaInfo>> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let sas = self.list_sas()?;
            if pred(&sas) {
                return Ok(sas);
            }
            if std::time::Instant::now() >= deadline {
                return Err(super::util::HarnessError::Timeout(format!(
                    "SA condition not met within {limit:?}; last list: {sas:#?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
