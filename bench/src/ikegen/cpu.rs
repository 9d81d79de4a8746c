//! CPU time of the process and of single threads (getrusage), so the report
//! can show when the generator itself was the bottleneck.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// User and system CPU time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuTime {
    /// User-mode seconds.
    pub user_secs: f64,
    /// Kernel-mode seconds.
    pub sys_secs: f64,
}

impl CpuTime {
    /// CPU time used by the whole process so far.
    pub fn process() -> Self {
        rusage(libc::RUSAGE_SELF)
    }

    /// CPU time used by the calling thread so far.
    pub fn thread() -> Self {
        rusage(libc::RUSAGE_THREAD)
    }

    /// user + sys.
    pub fn total_secs(&self) -> f64 {
        self.user_secs + self.sys_secs
    }

    /// The time used between `earlier` and `self`.
    pub fn since(&self, earlier: &CpuTime) -> CpuTime {
        CpuTime {
            user_secs: (self.user_secs - earlier.user_secs).max(0.0),
            sys_secs: (self.sys_secs - earlier.sys_secs).max(0.0),
        }
    }

    /// Adds two measurements.
    pub fn plus(&self, other: &CpuTime) -> CpuTime {
        CpuTime {
            user_secs: self.user_secs + other.user_secs,
            sys_secs: self.sys_secs + other.sys_secs,
        }
    }

    /// CPU time as a percentage of `wall` (100% = one core busy).
    pub fn percent_of(&self, wall: Duration) -> f64 {
        let w = wall.as_secs_f64();
        if w > 0.0 { 100.0 * self.total_secs() / w } else { 0.0 }
    }
}

fn rusage(who: libc::c_int) -> CpuTime {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `ru` is a valid, writable rusage; getrusage only writes into it.
    let rc = unsafe { libc::getrusage(who, ru.as_mut_ptr()) };
    if rc != 0 {
        return CpuTime::default();
    }
    // SAFETY: getrusage succeeded, so the struct is initialised (it was zeroed anyway).
    let ru = unsafe { ru.assume_init() };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    CpuTime {
        user_secs: tv(ru.ru_utime),
        sys_secs: tv(ru.ru_stime),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_thread_uses_cpu() {
        // The machine may be busy: spin until 20 ms of CPU are seen (or 10 s pass).
        let before = CpuTime::thread();
        let mut x = 0u64;
        let start = std::time::Instant::now();
        let mut used = CpuTime::default();
        while start.elapsed() < Duration::from_secs(10) {
            for _ in 0..100_000 {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(std::hint::black_box(1));
            }
            used = CpuTime::thread().since(&before);
            if used.total_secs() >= 0.02 {
                break;
            }
        }
        std::hint::black_box(x);
        assert!(used.total_secs() >= 0.02, "{used:?}");
        assert!(used.percent_of(start.elapsed()) > 0.0);
        assert!(CpuTime::process().total_secs() >= used.total_secs());
    }
}
