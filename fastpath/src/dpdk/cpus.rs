//! CPU affinity of the DPDK data plane's threads: each poll loop on the CPU
//! its profile names (`[cpus] poll`), the control plane on `[cpus] control`.

use std::io;

use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
use nix::unistd::Pid;

use crate::dpdk::profile::{CpuSpec, MAX_CPU, format_cpu_list};

/// Why the profile's CPUs cannot be used on this machine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CpuError {
    /// The profile names a CPU this process may not run on (absent, offline
    /// or outside its cpuset).
    #[error(
        "profile {profile}: {role} CPU {cpu} does not exist or is not available to this process (available: {available})"
    )]
    Unavailable {
        /// Profile name.
        profile: String,
        /// `poll` or `control`.
        role: &'static str,
        /// The CPU.
        cpu: usize,
        /// The CPUs this process may use, as a list (`0-3,6`).
        available: String,
    },
    /// A system call failed.
    #[error("CPU affinity: {0}")]
    Io(#[from] io::Error),
}

/// The CPUs the calling thread may run on, ascending.
pub fn current_thread_cpus() -> io::Result<Vec<usize>> {
    // Pid 0: the calling thread.
    let set = sched_getaffinity(Pid::from_raw(0)).map_err(io::Error::from)?;
    Ok((0..MAX_CPU.min(CpuSet::count()))
        .filter(|&c| set.is_set(c).unwrap_or(false))
        .collect())
}

/// Restricts the calling thread to `cpus` (threads it starts afterwards inherit this).
pub fn pin_current_thread(cpus: &[usize]) -> io::Result<()> {
    if cpus.is_empty() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty CPU set"));
    }
    let mut set = CpuSet::new();
    for &c in cpus {
        if c >= MAX_CPU || set.set(c).is_err() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("CPU {c} out of range"),
            ));
        }
    }
    sched_setaffinity(Pid::from_raw(0), &set).map_err(io::Error::from)
}

/// Checks that every CPU of `spec` is in `available` (the CPUs this process
/// may use), with a message naming the first one that is not.
pub fn check_available(profile: &str, spec: &CpuSpec, available: &[usize]) -> Result<(), CpuError> {
    let named = spec
        .poll
        .iter()
        .map(|&c| ("poll", c))
        .chain(spec.control.iter().map(|&c| ("control", c)));
    for (role, cpu) in named {
        if !available.contains(&cpu) {
            return Err(CpuError::Unavailable {
                profile: profile.to_string(),
                role,
                cpu,
                available: format_cpu_list(available),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_missing_cpu() {
        let spec = CpuSpec {
            poll: vec![0, 5],
            control: vec![],
        };
        assert!(check_available("p", &spec, &[0, 1, 2, 3, 4, 5]).is_ok());
        let e = check_available("p", &spec, &[0, 1, 2, 3]).unwrap_err().to_string();
        assert!(e.contains("poll CPU 5 does not exist"), "{e}");
        assert!(e.contains("available: 0-3"), "{e}");
        let spec = CpuSpec {
            poll: vec![],
            control: vec![9],
        };
        let e = check_available("p", &spec, &[0, 2, 3]).unwrap_err().to_string();
        assert!(e.contains("control CPU 9") && e.contains("available: 0,2-3"), "{e}");
    }

    #[test]
    fn pins_a_thread_and_reads_it_back() {
        let mine = current_thread_cpus().unwrap();
        assert!(!mine.is_empty());
        let last = *mine.last().unwrap();
        std::thread::spawn(move || {
            pin_current_thread(&[last]).unwrap();
            assert_eq!(current_thread_cpus().unwrap(), vec![last]);
            // Linux /proc view agrees.
            let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
            let line = status.lines().find(|l| l.starts_with("Cpus_allowed_list:")).unwrap();
            assert_eq!(line.split_whitespace().nth(1), Some(last.to_string().as_str()));
        })
        .join()
        .unwrap();
        assert_eq!(current_thread_cpus().unwrap(), mine, "the spawning thread is untouched");
        assert!(pin_current_thread(&[]).is_err());
        assert!(pin_current_thread(&[MAX_CPU]).is_err());
    }
}
