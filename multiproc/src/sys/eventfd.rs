//! eventfd(2): the doorbells of channels and the counting semaphores of bounded mailboxes.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::cvt;

/// A new non-blocking, close-on-exec eventfd; in semaphore mode (`EFD_SEMAPHORE`) a read
/// takes one from the counter instead of all of it.
pub(crate) fn eventfd(semaphore: bool) -> io::Result<OwnedFd> {
    let mode = if semaphore { libc::EFD_SEMAPHORE } else { 0 };
    // SAFETY: eventfd returns a new descriptor or -1.
    let fd = cvt(unsafe { libc::eventfd(0, mode | libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) })?;
    // SAFETY: fd is new and owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds `count` to an eventfd's counter.
pub(crate) fn eventfd_add(fd: BorrowedFd<'_>, count: u64) -> io::Result<()> {
    // SAFETY: writes 8 bytes from a u64 to an eventfd.
    let n = cvt(unsafe { libc::write(fd.as_raw_fd(), (&raw const count).cast(), 8) })?;
    if n == 8 {
        Ok(())
    } else {
        Err(io::Error::other("a short write to an eventfd"))
    }
}

/// Takes from an eventfd's counter (all of it, or one in semaphore mode); an error of kind
/// [`WouldBlock`](io::ErrorKind::WouldBlock) when it is zero.
pub(crate) fn eventfd_take(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let mut value = 0u64;
    // SAFETY: reads 8 bytes into a u64 from an eventfd.
    let n = cvt(unsafe { libc::read(fd.as_raw_fd(), (&raw mut value).cast(), 8) })?;
    if n == 8 {
        Ok(value)
    } else {
        Err(io::Error::other("a short read from an eventfd"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn a_semaphore_hands_out_one_at_a_time() {
        let sem = eventfd(true).unwrap();
        assert_eq!(
            eventfd_take(sem.as_fd()).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        eventfd_add(sem.as_fd(), 2).unwrap();
        assert_eq!(eventfd_take(sem.as_fd()).unwrap(), 1);
        assert_eq!(eventfd_take(sem.as_fd()).unwrap(), 1);
        assert!(eventfd_take(sem.as_fd()).is_err());
        let bell = eventfd(false).unwrap();
        eventfd_add(bell.as_fd(), 3).unwrap();
        assert_eq!(eventfd_take(bell.as_fd()).unwrap(), 3);
    }
}
