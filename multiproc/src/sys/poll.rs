//! Readiness: poll(2) for one wait over a few descriptors, epoll(7) for the runtime's
//! long-lived watcher threads (the pump and the async reactor).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use super::{Wait, cvt};

/// One entry of a [`poll`] set.
pub(crate) type PollFd = libc::pollfd;

/// Readable (or end of file).
pub(crate) const POLLIN: libc::c_short = libc::POLLIN;
/// Writable.
pub(crate) const POLLOUT: libc::c_short = libc::POLLOUT;

/// A [`poll`] entry for `fd` (a negative number is skipped) and `events`.
pub(crate) fn pollfd(fd: RawFd, events: libc::c_short) -> PollFd {
    PollFd {
        fd,
        events,
        revents: 0,
    }
}

/// Waits until one of `fds` is ready (its `revents` say how). Returns `false` when the wait
/// ended first.
pub(crate) fn poll(fds: &mut [PollFd], wait: Wait) -> io::Result<bool> {
    loop {
        let Some(ms) = wait.poll_ms() else {
            return Ok(false);
        };
        // SAFETY: `fds` is a valid, exclusively borrowed array of pollfd.
        match cvt(unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) }) {
            Ok(0) if matches!(wait, Wait::Now) => return Ok(false),
            Ok(0) => {}
            Ok(_) => return Ok(true),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Waits until `fd` reports `events` (or hang-up or an error); `false` when the wait ended.
pub(crate) fn poll_one(fd: BorrowedFd<'_>, events: libc::c_short, wait: Wait) -> io::Result<bool> {
    poll(&mut [pollfd(fd.as_raw_fd(), events)], wait)
}

/// An epoll set whose entries are level-triggered "readable" watches, each known by a token.
pub(crate) struct Epoll(OwnedFd);

impl Epoll {
    pub(crate) fn new() -> io::Result<Epoll> {
        // SAFETY: epoll_create1 returns a new descriptor or -1.
        let fd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: fd is new and owned by nobody else.
        Ok(Epoll(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Watches `fd` for readability (and, with `oneshot`, for a hang-up too, once: the
    /// entry is then disabled until deleted).
    pub(crate) fn add(&self, fd: BorrowedFd<'_>, token: u64, oneshot: bool) -> io::Result<()> {
        let events = if oneshot {
            libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLONESHOT
        } else {
            libc::EPOLLIN
        };
        let mut event = libc::epoll_event {
            events: events as u32,
            u64: token,
        };
        // SAFETY: both descriptors are open; `event` is read during the call.
        cvt(unsafe {
            libc::epoll_ctl(
                self.0.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                fd.as_raw_fd(),
                &mut event,
            )
        })
        .map(drop)
    }

    /// Stops watching `fd`. Must come before `fd` is closed: epoll watches the open file,
    /// which a copy elsewhere (in flight to another process, say) keeps alive.
    pub(crate) fn delete(&self, fd: BorrowedFd<'_>) {
        // SAFETY: both descriptors are open; DEL ignores the event argument.
        unsafe {
            libc::epoll_ctl(
                self.0.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                fd.as_raw_fd(),
                std::ptr::null_mut(),
            );
        }
    }

    /// Waits, as long as it takes, for entries to turn ready, and calls `each` with the
    /// token of every one. An error other than an interruption ends the set's use.
    pub(crate) fn wait(&self, mut each: impl FnMut(u64)) -> io::Result<()> {
        const BATCH: usize = 64;
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; BATCH];
        let n = super::cvt_r(|| {
            // SAFETY: `events` is a writable array of BATCH entries.
            unsafe {
                libc::epoll_wait(
                    self.0.as_raw_fd(),
                    events.as_mut_ptr(),
                    BATCH as libc::c_int,
                    -1,
                )
            }
        })?;
        for event in &events[..n as usize] {
            each(event.u64);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn epoll_reports_the_token_of_a_readable_descriptor() {
        let epoll = Epoll::new().unwrap();
        let bell = super::super::eventfd(false).unwrap();
        epoll.add(bell.as_fd(), 7, false).unwrap();
        super::super::eventfd_add(bell.as_fd(), 1).unwrap();
        let mut seen = Vec::new();
        epoll.wait(|token| seen.push(token)).unwrap();
        assert_eq!(seen, [7]);
        epoll.delete(bell.as_fd());
        assert!(
            poll_one(bell.as_fd(), POLLIN, Wait::Now).unwrap(),
            "still readable"
        );
    }
}
