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

/// Reserves a file descriptor number (>= 3) in the parent, so that a child can receive a copy
/// of its stdout there (see `spawn::posix::Spawn::park_stdout`).
pub(crate) fn reserve_fd() -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let null = OwnedFd::from(std::fs::File::open("/dev/null")?);
    if null.as_raw_fd() >= 3 {
        return Ok(null);
    }
    // SAFETY: F_DUPFD_CLOEXEC duplicates a valid fd; the result is a new fd we own.
    let fd = unsafe { libc::fcntl(null.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by fcntl and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sets this process's resource limits (`setrlimit`, async-signal-safe, no allocation).
pub(crate) fn apply_limits(limits: crate::spawn::Limits) -> io::Result<()> {
    let set = |resource, soft: u64, hard: u64| {
        let limit = libc::rlimit {
            rlim_cur: soft as libc::rlim_t,
            rlim_max: hard as libc::rlim_t,
        };
        // SAFETY: setrlimit reads the struct it is given.
        if unsafe { libc::setrlimit(resource, &limit) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    };
    if let Some(bytes) = limits.memory {
        set(libc::RLIMIT_AS, bytes, bytes)?;
    }
    if let Some(seconds) = limits.cpu_seconds {
        // SIGXCPU at the soft limit; SIGKILL a second later if it is ignored.
        set(libc::RLIMIT_CPU, seconds, seconds.saturating_add(1))?;
    }
    if let Some(files) = limits.open_files {
        set(libc::RLIMIT_NOFILE, files, files)?;
    }
    Ok(())
}

/// Puts back the stdout parked at spawn (see `spawn::posix::Spawn::park_stdout`).
pub(crate) fn unpark_stdout(parked: i32) {
    use std::io::Write;
    // What was written so far (the libtest banner) belongs to /dev/null.
    let _ = std::io::stdout().flush();
    // SAFETY: plain fd operations on descriptors this process owns; a bad number fails with
    // EBADF and changes nothing.
    unsafe {
        if libc::dup2(parked, 1) >= 0 {
            libc::close(parked);
        }
    }
}

/// `true` if a process with this pid exists (it may belong to another user).
pub(crate) fn process_exists(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// A pidfd for `pid` (Linux 5.3+).
pub(crate) fn pidfd_open(pid: u32) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is new and ours; pidfds are close-on-exec.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) })
}

/// SIGKILL to the process of a pidfd; a process already reaped is left alone.
pub(crate) fn pidfd_kill(pidfd: &std::os::fd::OwnedFd) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: pidfd_send_signal takes a pidfd, a signal and no siginfo.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// A new non-blocking, close-on-exec eventfd, with `flags` added (`EFD_SEMAPHORE`).
pub(crate) fn eventfd(flags: libc::c_int) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: eventfd returns a new descriptor or -1.
    let fd = unsafe { libc::eventfd(0, flags | libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is new and owned by nobody else.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// Adds `count` to an eventfd's counter.
pub(crate) fn eventfd_add(fd: std::os::fd::BorrowedFd<'_>, count: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: writes 8 bytes from a u64 to an eventfd.
    let n = unsafe { libc::write(fd.as_raw_fd(), (&raw const count).cast(), 8) };
    if n == 8 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Takes from an eventfd's counter (all of it, or one in semaphore mode); `EAGAIN` when it is
/// zero.
pub(crate) fn eventfd_take(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<u64> {
    use std::os::fd::AsRawFd;
    let mut value = 0u64;
    // SAFETY: reads 8 bytes into a u64 from an eventfd.
    let n = unsafe { libc::read(fd.as_raw_fd(), (&raw mut value).cast(), 8) };
    if n == 8 {
        Ok(value)
    } else {
        Err(io::Error::last_os_error())
    }
}
