//! futex(2) on words of shared memory: waits that work across processes.

use std::sync::atomic::AtomicU32;

use super::Wait;

/// Waits while `word` holds `expected`, at most as long as `wait` says. Returns `false` when
/// the wait ended first. Spurious returns happen: callers re-check the word.
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, wait: Wait) -> bool {
    let Ok(timeout) = wait.timespec() else {
        return false;
    };
    let ts = timeout
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: word points to a live, aligned u32 in a shared mapping (so no private flag);
    // ts is null or a valid timespec.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            ts,
            std::ptr::null::<u32>(),
            0u32,
        )
    };
    !(rc < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ETIMEDOUT))
}

/// Wakes every process waiting on `word`.
pub(crate) fn futex_wake_all(word: &AtomicU32) {
    futex_wake(word, i32::MAX);
}

/// Wakes at most `n` of the processes waiting on `word`.
pub(crate) fn futex_wake(word: &AtomicU32, n: i32) {
    // SAFETY: word points to a live, aligned u32; FUTEX_WAKE touches no other memory.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            n,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}
