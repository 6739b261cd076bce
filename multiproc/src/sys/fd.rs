//! Descriptor numbers: keeping clear of the standard streams, pipes, and the one descriptor a
//! child inherits.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::cvt;

/// Makes sure `fd` is not one of the standard streams' numbers, which a child's stdio set-up
/// would overwrite: a parent started with a closed stdin gets fd 0 for its first socket.
pub(crate) fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    // SAFETY: F_DUPFD_CLOEXEC duplicates a valid descriptor; the result is new.
    let copy = cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) })?;
    // SAFETY: copy is new and owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(copy) })
}

/// Reserves a descriptor number (>= 3) in this process, so that a child can receive a
/// descriptor there (see `spawn::start`): the number stays taken while the result lives.
pub(crate) fn reserve_fd() -> io::Result<OwnedFd> {
    above_stdio(OwnedFd::from(std::fs::File::open("/dev/null")?))
}

/// A close-on-exec pipe: `(read, write)`. With `nonblocking_write`, a write to a full pipe
/// fails instead of blocking (a signal handler's pipe).
pub(crate) fn pipe(nonblocking_write: bool) -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two new descriptors into `fds`.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: both are new descriptors that nothing else owns.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    if nonblocking_write {
        // SAFETY: fcntl sets a flag on a descriptor we own.
        cvt(unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) })?;
    }
    Ok((read, write))
}

/// Takes ownership of the descriptor `fd` that this process inherited across exec, and sets
/// close-on-exec on it again, so that programs it starts do not inherit it. `None` for a
/// standard stream's number or a number that is not open.
pub(crate) fn claim_inherited(fd: RawFd) -> Option<OwnedFd> {
    // SAFETY: fcntl on a plain number; a number that is not open fails with EBADF.
    if fd < 3 || cvt(unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) }).is_err() {
        return None;
    }
    // SAFETY: the parent handed this descriptor to this process alone (the caller's
    // contract); nothing else here owns it.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Whether the descriptor number `fd` is open in this process and is a socket.
pub(crate) fn is_socket(fd: RawFd) -> bool {
    // SAFETY: an all-zero stat is a valid buffer for fstat to fill.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat on a plain number writes into `st`; a number that is not open fails with
    // EBADF and writes nothing.
    let rc = unsafe { libc::fstat(fd, &mut st) };
    rc == 0 && st.st_mode & libc::S_IFMT == libc::S_IFSOCK
}

/// Opens /dev/null on each of the standard streams' numbers that is closed, so that no
/// descriptor received later lands there.
pub(crate) fn hold_stdio_numbers() {
    for fd in 0..3 {
        // SAFETY: F_GETFD only reads the flags; open returns a new descriptor or -1, which
        // takes the lowest free number: the closed one.
        unsafe {
            if libc::fcntl(fd, libc::F_GETFD) < 0 {
                libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
            }
        }
    }
}

/// `dup2(fd, target)`: `target` becomes a copy of `fd` (without close-on-exec).
pub(crate) fn dup_onto(fd: RawFd, target: RawFd) -> io::Result<()> {
    // SAFETY: dup2 on plain numbers; a bad one fails with EBADF and changes nothing.
    cvt(unsafe { libc::dup2(fd, target) }).map(drop)
}

/// Closes a descriptor number this process holds but no [`OwnedFd`] owns.
pub(crate) fn close_raw(fd: RawFd) {
    // SAFETY: the caller owns the number and never uses it again.
    unsafe { libc::close(fd) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_numbers_are_above_the_standard_streams() {
        let fd = reserve_fd().unwrap();
        assert!(fd.as_raw_fd() > 2);
        let (r, w) = pipe(true).unwrap();
        assert!(r.as_raw_fd() > 2 && w.as_raw_fd() > 2);
        assert!(claim_inherited(1).is_none());
        let (a, _b) = super::super::socketpair().unwrap();
        assert!(is_socket(a.as_raw_fd()));
        assert!(!is_socket(r.as_raw_fd()));
        assert!(!is_socket(-1));
    }
}
