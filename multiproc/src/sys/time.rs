//! Deadlines: how long a call may wait, and the monotonic clock that processes share.

use std::time::{Duration, Instant};

/// How long an operation may wait.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Wait {
    /// Not at all.
    Now,
    /// Until this instant.
    Until(Instant),
    /// As long as it takes.
    Forever,
}

impl Wait {
    pub(crate) fn timeout(timeout: Duration) -> Wait {
        match Instant::now().checked_add(timeout) {
            Some(deadline) => Wait::Until(deadline),
            None => Wait::Forever,
        }
    }

    /// This wait, but ending after `at_most` if it would go on longer: for a wait that
    /// re-checks something no wake-up reports (a process that died).
    pub(crate) fn at_most(self, at_most: Duration) -> Wait {
        let cap = Instant::now() + at_most;
        match self {
            Wait::Until(deadline) if deadline <= cap => self,
            Wait::Now => Wait::Now,
            _ => Wait::Until(cap),
        }
    }

    /// Whether the time this wait allows is over (at once for [`Wait::Now`]).
    pub(crate) fn is_over(self) -> bool {
        match self {
            Wait::Now => true,
            Wait::Forever => false,
            Wait::Until(deadline) => Instant::now() >= deadline,
        }
    }

    /// The `poll(2)` timeout in milliseconds (rounded up), or `None` once the wait is over.
    pub(super) fn poll_ms(self) -> Option<libc::c_int> {
        match self {
            Wait::Now => Some(0),
            Wait::Forever => Some(-1),
            Wait::Until(deadline) => {
                let left = deadline.checked_duration_since(Instant::now())?;
                if left.is_zero() {
                    return None;
                }
                let ms = left.as_micros().div_ceil(1000).min(i32::MAX as u128);
                Some(ms as libc::c_int)
            }
        }
    }

    /// The time left as a `timespec` (`None`: forever), or `Err` once the wait is over (or
    /// for [`Wait::Now`]).
    pub(super) fn timespec(self) -> Result<Option<libc::timespec>, ()> {
        match self {
            Wait::Now => Err(()),
            Wait::Forever => Ok(None),
            Wait::Until(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(());
                }
                Ok(Some(libc::timespec {
                    tv_sec: left.as_secs().min(i64::MAX as u64) as libc::time_t,
                    tv_nsec: left.subsec_nanos() as _,
                }))
            }
        }
    }
}

/// Now on the monotonic clock (shared by every process of the machine), in ns.
pub(crate) fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_timeouts_round_up_and_end() {
        assert_eq!(Wait::Now.poll_ms(), Some(0));
        assert_eq!(Wait::Forever.poll_ms(), Some(-1));
        let soon = Wait::timeout(Duration::from_micros(1500));
        assert!(matches!(soon.poll_ms(), Some(1 | 2)));
        let past = Wait::Until(Instant::now() - Duration::from_millis(1));
        assert_eq!(past.poll_ms(), None);
        assert!(past.timespec().is_err());
        assert!(Wait::Forever.timespec().unwrap().is_none());
    }
}
