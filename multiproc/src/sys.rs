//! The few operating-system calls std does not offer.

use std::io;

/// Asks the kernel to SIGKILL this process when the thread that spawned it exits.
///
/// The parent spawns every child from its main thread or from one long-lived spawner thread
/// (see `spawn::spawner`), so in practice this fires when the parent process dies. See
/// prctl(2), `PR_SET_PDEATHSIG`.
pub(crate) fn set_parent_death_signal() {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number and touches no memory.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
    }
}

/// The parent's pid, as the kernel sees it now.
pub(crate) fn parent_pid() -> u32 {
    // SAFETY: getppid has no preconditions and cannot fail.
    let ppid = unsafe { libc::getppid() };
    ppid as u32
}

/// `true` on the process's main thread, whose exit ends the whole process.
pub(crate) fn is_main_thread() -> bool {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        // SAFETY: gettid and getpid have no preconditions and cannot fail.
        unsafe { libc::gettid() == libc::getpid() }
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        // No PR_SET_PDEATHSIG elsewhere, so the spawning thread does not matter.
        true
    }
}

/// Identifies the running executable file: device, inode, size and modification time.
///
/// A parent passes its own to each child, which compares it with its own; a rebuilt
/// executable differs in inode or mtime.
pub(crate) fn exe_fingerprint() -> String {
    use std::os::unix::fs::MetadataExt;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let meta = std::fs::metadata("/proc/self/exe");
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let meta = std::env::current_exe().and_then(std::fs::metadata);
    match meta {
        Ok(m) => format!(
            "{:x}-{:x}-{:x}-{:x}.{:x}",
            m.dev(),
            m.ino(),
            m.size(),
            m.mtime(),
            m.mtime_nsec()
        ),
        Err(_) => "unknown".to_string(),
    }
}

/// Sends `signal` to `pid`.
pub(crate) fn send_signal(pid: u32, signal: i32) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(io::Error::other)?;
    // SAFETY: kill takes plain integers; the caller guarantees `pid` is its unreaped child, so
    // the pid cannot have been reused by another process.
    if unsafe { libc::kill(pid, signal) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
