//! The operating system: the only module that calls `libc`.
//!
//! Every system call the runtime makes goes through a safe wrapper here, and every `-1 →
//! errno` check goes through [`cvt`] (std's `sys::cvt`, mio's `syscall!`). The layers above
//! see descriptors ([`OwnedFd`](std::os::fd::OwnedFd)), [`io::Result`]s and a few plain
//! constants, never a raw `libc` call, so that a reader auditing the `unsafe` of the crate
//! reads this folder and the shared-memory accessors in `ipc::shm`.
//!
//! Why `libc` and not `rustix`: rustix would make a handful of these wrappers safe code
//! (memfd, eventfd, pidfd, futex, `SCM_RIGHTS`, prctl), but not `posix_spawn`, the raw
//! `clone(CLONE_PARENT)` of the zygote or `pidfd_send_signal`'s older kernels, so `libc`
//! would stay beside it; and it costs a build that `libc` (already needed by std) does not.
//! ARCHITECTURE.md gives the figures.

use std::io;

mod eventfd;
mod fd;
mod futex;
mod memfd;
mod poll;
mod process;
mod socket;
mod spawn;
mod time;

pub(crate) use self::eventfd::{eventfd, eventfd_add, eventfd_take};
pub(crate) use self::fd::{
    above_stdio, claim_inherited, close_raw, dup_onto, hold_stdio_numbers, is_socket, pipe,
    reserve_fd,
};
pub(crate) use self::futex::{futex_wait, futex_wake, futex_wake_all};
pub(crate) use self::memfd::{
    Mapping, is_sealed_final, is_size_sealed, memfd, punch_hole, read_at, seal_final, seal_size,
    write_at,
};
pub(crate) use self::poll::{Epoll, POLLIN, POLLOUT, PollFd, poll, poll_one, pollfd};
pub(crate) use self::process::{
    SIGABRT, SIGINT, SIGKILL, SIGTERM, SIGXCPU, clone_parent, exe_fingerprint, exit_now,
    identity_alive, is_main_thread, parent_pid, pidfd_kill, pidfd_open, process_exists,
    process_identity, raise_default, send_signal, set_parent_death_signal, set_rlimits,
    signal_name, signals_to_pipe, thread_id, unpark_stdout, waitpid,
};
pub(crate) use self::socket::{recvmsg, sendmsg, socketpair};
pub(crate) use self::spawn::{CHILD_SOCKET, Spawn, Stream, can_close_from, posix_spawn};
pub(crate) use self::time::{Wait, monotonic_ns};

/// Turns the C convention (`-1` and `errno`) into an [`io::Result`].
pub(crate) fn cvt<T: IsMinusOne>(t: T) -> io::Result<T> {
    if t.is_minus_one() {
        Err(io::Error::last_os_error())
    } else {
        Ok(t)
    }
}

/// [`cvt`], retried while the call is interrupted by a signal.
pub(crate) fn cvt_r<T: IsMinusOne>(mut f: impl FnMut() -> T) -> io::Result<T> {
    loop {
        match cvt(f()) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

/// The integer types system calls return.
pub(crate) trait IsMinusOne {
    fn is_minus_one(&self) -> bool;
}

macro_rules! impl_is_minus_one {
    ($($t:ident)*) => ($(impl IsMinusOne for $t {
        fn is_minus_one(&self) -> bool {
            *self == -1
        }
    })*)
}

impl_is_minus_one! { i32 i64 isize }

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cvt_maps_minus_one_to_errno() {
        assert_eq!(cvt(3_i32).unwrap(), 3);
        // SAFETY: close of a number that is not open fails with EBADF and touches nothing.
        let e = cvt(unsafe { libc::close(-5) }).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EBADF));
    }
}
