//! Datagrams an endpoint drops or refuses before they reach an IKE SA: counted
//! by reason, and logged as one rate-limited WARN line per source and reason,
//! so that junk is visible at the default level yet a flood of it writes a
//! bounded number of lines.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use tracing::warn;

/// Why a datagram was dropped or an IKE_SA_INIT request refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum DropReason {
    /// Not a well-formed IKEv2 message.
    Undecodable,
    /// IKEv1, or an IKE major version above 2.
    UnsupportedVersion,
    /// No IKE SA of ours has the SPI it is addressed to.
    UnknownSa,
    /// An IKE_SA_INIT request none of whose proposals we accept.
    NoProposalChosen,
    /// An IKE_SA_INIT request refused for another reason (missing
    /// payloads, a bad key exchange value, an unsupported critical payload).
    InitRefused,
    /// An IKE_SA_INIT request from a source that has too many half-open SAs.
    PerSourceLimit,
    /// An IKE_SA_INIT request while the endpoint holds its maximum of half-open SAs.
    HalfOpenCap,
    /// A message to an established IKE SA that failed its integrity check.
    Unauthenticated,
    /// A MOBIKE (RFC 4555) address update refused: MOBIKE not negotiated,
    /// a NAT where the peer allowed none, too many addresses, or a failed
    /// return routability check (COOKIE2).
    MobikeRefused,
}

impl DropReason {
    /// Every reason, in the order of [`DropCounts`].
    pub const ALL: [DropReason; 9] = [
        DropReason::Undecodable,
        DropReason::UnsupportedVersion,
        DropReason::UnknownSa,
        DropReason::NoProposalChosen,
        DropReason::InitRefused,
        DropReason::PerSourceLimit,
        DropReason::HalfOpenCap,
        DropReason::Unauthenticated,
        DropReason::MobikeRefused,
    ];

    /// Name for metrics labels and JSON keys.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Undecodable => "undecodable",
            DropReason::UnsupportedVersion => "unsupported_version",
            DropReason::UnknownSa => "unknown_sa",
            DropReason::NoProposalChosen => "no_proposal_chosen",
            DropReason::InitRefused => "init_refused",
            DropReason::PerSourceLimit => "per_source_limit",
            DropReason::HalfOpenCap => "half_open_cap",
            DropReason::Unauthenticated => "unauthenticated",
            DropReason::MobikeRefused => "mobike_refused",
        }
    }

    /// What happened, as a log line says it.
    fn describe(self) -> &'static str {
        match self {
            DropReason::Undecodable => "dropped undecodable IKE datagram",
            DropReason::UnsupportedVersion => "dropped IKE message of an unsupported version",
            DropReason::UnknownSa => "dropped IKE message for an unknown IKE SA",
            DropReason::NoProposalChosen => "refused IKE_SA_INIT",
            DropReason::InitRefused => "refused IKE_SA_INIT",
            DropReason::PerSourceLimit => "dropped IKE_SA_INIT: per-source half-open limit reached",
            DropReason::HalfOpenCap => "dropped IKE_SA_INIT: half-open SA cap reached",
            DropReason::Unauthenticated => "dropped IKE message that failed its integrity check",
            DropReason::MobikeRefused => "refused MOBIKE address update",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Monotonic count of drops per reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropCounts([u64; DropReason::ALL.len()]);

impl DropCounts {
    /// Drops for `reason`.
    pub fn get(&self, reason: DropReason) -> u64 {
        self.0[reason.index()]
    }

    /// Every reason with its count.
    pub fn iter(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL.iter().map(|r| (*r, self.get(*r)))
    }

    /// Sum over all reasons.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// Counts one drop.
    pub fn add(&mut self, reason: DropReason) {
        self.0[reason.index()] += 1;
    }
}

impl std::ops::AddAssign<&DropCounts> for DropCounts {
    fn add_assign(&mut self, other: &DropCounts) {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a += b;
        }
    }
}

/// How long after a WARN line further drops of its source and reason are
/// only counted, to be reported together when the window ends.
pub const DROP_LOG_WINDOW: Duration = Duration::from_secs(10);

/// Sources tracked one by one; drops from further sources are reported
/// together ("many sources"), so a spoofed flood needs no more memory.
const TRACKED_SOURCES: usize = 256;

/// (source, reason); `None` stands for every source beyond [`TRACKED_SOURCES`].
type Key = (Option<IpAddr>, DropReason);

struct Window {
    /// Drops since the window's WARN line.
    suppressed: u64,
    /// What the first drop after the WARN line said (formatted once per
    /// window, not per drop: floods are cheap to send).
    example: Option<String>,
}

/// Writes the rate-limited WARN lines about drops.
pub struct DropLog {
    windows: HashMap<Key, Window>,
    /// Window ends in order (every window is equally long).
    ends: VecDeque<(Instant, Key)>,
    window: Duration,
}

impl Default for DropLog {
    fn default() -> Self {
        Self::new(DROP_LOG_WINDOW)
    }
}

impl DropLog {
    /// A log whose windows last `window`.
    pub fn new(window: Duration) -> Self {
        Self {
            windows: HashMap::new(),
            ends: VecDeque::new(),
            window,
        }
    }

    /// Records one drop from `source`; `detail` says what was wrong with it
    /// (formatted only when it is logged).
    pub fn record(&mut self, now: Instant, source: IpAddr, reason: DropReason, detail: &dyn fmt::Display) {
        self.flush(now);
        let key = if self.windows.contains_key(&(Some(source), reason)) || self.windows.len() < TRACKED_SOURCES {
            (Some(source), reason)
        } else {
            (None, reason)
        };
        match self.windows.get_mut(&key) {
            Some(w) => {
                w.suppressed += 1;
                if w.example.is_none() {
                    w.example = Some(detail.to_string());
                }
            }
            None => {
                match key.0 {
                    Some(ip) => warn!(peer = %ip, reason = reason.name(), "{}: {detail}", reason.describe()),
                    None => warn!(
                        peer = "many sources",
                        reason = reason.name(),
                        "{}: {detail}",
                        reason.describe()
                    ),
                }
                self.windows.insert(
                    key,
                    Window {
                        suppressed: 0,
                        example: None,
                    },
                );
                self.ends.push_back((now + self.window, key));
            }
        }
    }

    /// Ends the windows that are over, with one line for each that counted drops.
    pub fn flush(&mut self, now: Instant) {
        while let Some(&(end, key)) = self.ends.front() {
            if end > now {
                break;
            }
            self.ends.pop_front();
            let Some(w) = self.windows.remove(&key) else { continue };
            if w.suppressed == 0 {
                continue;
            }
            let (reason, example) = (key.1, w.example.unwrap_or_default());
            let secs = self.window.as_secs();
            match key.0 {
                Some(ip) => warn!(
                    peer = %ip,
                    reason = reason.name(),
                    count = w.suppressed,
                    "{}: {} more in the last {secs} s, such as: {example}",
                    reason.describe(),
                    w.suppressed
                ),
                None => warn!(
                    peer = "many sources",
                    reason = reason.name(),
                    count = w.suppressed,
                    "{}: {} more in the last {secs} s, such as: {example}",
                    reason.describe(),
                    w.suppressed
                ),
            }
        }
    }

    /// When [`DropLog::flush`] has a window to end.
    pub fn next_flush(&self) -> Option<Instant> {
        self.ends.front().map(|(t, _)| *t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_one_window_per_source_and_reason() {
        let t0 = Instant::now();
        let mut log = DropLog::new(Duration::from_secs(10));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for i in 0..100 {
            log.record(t0 + Duration::from_millis(i), a, DropReason::Undecodable, &"junk");
        }
        log.record(t0, b, DropReason::Undecodable, &"junk");
        log.record(t0, a, DropReason::UnknownSa, &"spi");
        assert_eq!(log.windows.len(), 3);
        assert_eq!(log.windows[&(Some(a), DropReason::Undecodable)].suppressed, 99);
        assert_eq!(log.next_flush(), Some(t0 + Duration::from_secs(10)));
        log.flush(t0 + Duration::from_secs(10));
        assert!(log.windows.is_empty() && log.next_flush().is_none());
    }

    #[test]
    fn counts_add_up_by_reason() {
        let mut c = DropCounts::default();
        c.add(DropReason::Undecodable);
        c.add(DropReason::Undecodable);
        c.add(DropReason::HalfOpenCap);
        let mut sum = DropCounts::default();
        sum += &c;
        sum += &c;
        assert_eq!(sum.get(DropReason::Undecodable), 4);
        assert_eq!(sum.get(DropReason::HalfOpenCap), 2);
        assert_eq!(sum.total(), 6);
        assert_eq!(sum.iter().filter(|(_, n)| *n > 0).count(), 2);
    }

    #[test]
    fn sources_beyond_the_tracked_ones_share_a_window() {
        let t0 = Instant::now();
        let mut log = DropLog::default();
        for i in 0..10_000u32 {
            log.record(t0, IpAddr::from(i.to_be_bytes()), DropReason::NoProposalChosen, &"x");
        }
        assert_eq!(log.windows.len(), TRACKED_SOURCES + 1);
        assert_eq!(
            log.windows[&(None, DropReason::NoProposalChosen)].suppressed,
            10_000 - TRACKED_SOURCES as u64 - 1
        );
    }
}
