//! Processes and signals: the parent-death signal, pids and pidfds, resource limits, the
//! zygote's fork, reaping, and signal handlers that only write to a pipe.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicI32, Ordering};

use super::cvt;

pub(crate) use libc::{SIGABRT, SIGINT, SIGKILL, SIGTERM, SIGXCPU};

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

/// The calling thread's id, unique among the threads of every process while it runs.
pub(crate) fn thread_id() -> u32 {
    // SAFETY: gettid has no preconditions and cannot fail.
    let tid = unsafe { libc::gettid() };
    tid as u32
}

/// `true` on the process's main thread, whose exit ends the whole process.
pub(crate) fn is_main_thread() -> bool {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        thread_id() == std::process::id()
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
    cvt(unsafe { libc::kill(pid, signal) }).map(drop)
}

/// `true` if a process with this pid exists (it may belong to another user).
pub(crate) fn process_exists(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    match cvt(unsafe { libc::kill(pid, 0) }) {
        Ok(_) => true,
        Err(e) => e.raw_os_error() == Some(libc::EPERM),
    }
}

/// This process as a nonzero word that no other live process shares: its pid in the high
/// half, the low half of its start time (clock ticks since boot, from `/proc`) in the low half,
/// so that a pid reused by a later process does not pass for the first. Zero start time where
/// `/proc` is not readable.
pub(crate) fn process_identity() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    // A forked child inherits the cache, so it is keyed by the pid it was computed for.
    static CACHE: AtomicU64 = AtomicU64::new(0);
    let pid = std::process::id();
    let cached = CACHE.load(Ordering::Relaxed);
    if cached >> 32 == u64::from(pid) && cached != 0 {
        return cached;
    }
    let start = start_time(pid).map_or(0, |(_, start)| start);
    let identity = (u64::from(pid) << 32) | (start & 0xffff_ffff);
    CACHE.store(identity, Ordering::Relaxed);
    identity
}

/// Whether the process that [`process_identity`] named is still running: `false` once it has
/// exited (a zombie counts as exited) or its pid belongs to a later process. When it cannot
/// tell (`/proc` unreadable for want of descriptors, say), it answers `true`: a live lock
/// holder must never be taken for dead.
pub(crate) fn identity_alive(identity: u64) -> bool {
    let pid = (identity >> 32) as u32;
    match std::fs::read(format!("/proc/{pid}/stat")) {
        Ok(stat) => match parse_stat(&stat) {
            Some((state, start)) => {
                !matches!(state, b'Z' | b'X' | b'x')
                    && (identity as u32 == 0 || start & 0xffff_ffff == identity & 0xffff_ffff)
            }
            None => true,
        },
        // No entry: gone, unless the process is only hidden from this one (`/proc` mounted
        // with hidepid, another pid namespace, no `/proc` at all): the kernel says which.
        Err(e) if e.kind() == io::ErrorKind::NotFound => process_exists(pid),
        Err(_) => true,
    }
}

/// A process's state letter and start time, from `/proc/<pid>/stat`.
fn start_time(pid: u32) -> Option<(u8, u64)> {
    parse_stat(&std::fs::read(format!("/proc/{pid}/stat")).ok()?)
}

/// The state letter (field 3) and start time (field 22) of a `/proc/<pid>/stat` text.
fn parse_stat(stat: &[u8]) -> Option<(u8, u64)> {
    // The command name (field 2) may hold spaces and parentheses: fields resume after the
    // last ')'.
    let after = stat.iter().rposition(|&b| b == b')')? + 1;
    let rest = std::str::from_utf8(&stat[after..]).ok()?;
    let mut fields = rest.split_ascii_whitespace();
    let state = *fields.next()?.as_bytes().first()?;
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

/// A pidfd for `pid` (Linux 5.3+).
pub(crate) fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = cvt(unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) })?;
    // SAFETY: fd is new and ours; pidfds are close-on-exec.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// SIGKILL to the process of a pidfd; a process already reaped is left alone.
pub(crate) fn pidfd_kill(pidfd: &OwnedFd) -> io::Result<()> {
    // SAFETY: pidfd_send_signal takes a pidfd, a signal and no siginfo.
    cvt(unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    })
    .map(drop)
}

/// `waitpid(pid, 0)`, or with `nohang` `waitpid(pid, WNOHANG)`: `None` when it finds the
/// child still running.
pub(crate) fn waitpid(pid: u32, nohang: bool) -> io::Result<Option<ExitStatus>> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::from_raw_os_error(libc::ESRCH))?;
    let flags = if nohang { libc::WNOHANG } else { 0 };
    let mut raw = 0;
    // SAFETY: waitpid writes the status into `raw`; it touches nothing else.
    let rc = super::cvt_r(|| unsafe { libc::waitpid(pid, &mut raw, flags) })?;
    Ok((rc == pid).then(|| ExitStatus::from_raw(raw)))
}

/// Sets this process's resource limits (`setrlimit`, async-signal-safe, no allocation):
/// `RLIMIT_AS` to `memory` bytes, `RLIMIT_CPU` to `cpu_seconds` (SIGXCPU there, SIGKILL a
/// second later if it is ignored), `RLIMIT_NOFILE` to `open_files`.
pub(crate) fn set_rlimits(
    memory: Option<u64>,
    cpu_seconds: Option<u64>,
    open_files: Option<u64>,
) -> io::Result<()> {
    let set = |resource, soft: u64, hard: u64| {
        let limit = libc::rlimit {
            rlim_cur: soft as libc::rlim_t,
            rlim_max: hard as libc::rlim_t,
        };
        // SAFETY: setrlimit reads the struct it is given.
        cvt(unsafe { libc::setrlimit(resource, &limit) }).map(drop)
    };
    if let Some(bytes) = memory {
        set(libc::RLIMIT_AS, bytes, bytes)?;
    }
    if let Some(seconds) = cpu_seconds {
        set(libc::RLIMIT_CPU, seconds, seconds.saturating_add(1))?;
    }
    if let Some(files) = open_files {
        set(libc::RLIMIT_NOFILE, files, files)?;
    }
    Ok(())
}

/// Puts back the stdout parked at spawn (see `sys::Spawn::park_stdout`).
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

/// Flushes the standard streams and ends the process at once: no atexit handlers, which
/// could block on locks held by threads of the entry point.
pub(crate) fn exit_now(code: i32) -> ! {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: `_exit` has no preconditions; it never returns.
    unsafe { libc::_exit(code) }
}

/// Forks this process with `CLONE_PARENT`: the child is a child of this process's parent,
/// which reaps it. `Ok(None)` in the child, `Ok(Some(pid))` here.
///
/// # Safety
///
/// This process must have one thread: the child gets a copy of it alone, so a lock held by
/// any other thread (malloc's, stdout's) would stay held there forever.
pub(crate) unsafe fn clone_parent() -> io::Result<Option<u32>> {
    // SAFETY: a raw clone without CLONE_VM behaves as fork (the child gets a copy of this
    // address space and returns 0 on the same stack); the caller guarantees one thread. Its
    // exit signal is SIGCHLD, as for a fork.
    let pid = cvt(unsafe {
        libc::syscall(
            libc::SYS_clone,
            (libc::CLONE_PARENT | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    })?;
    Ok((pid != 0).then_some(pid as u32))
}

/// The write end of the pipe that [`signals_to_pipe`] handlers write to, or -1.
static SIGNAL_PIPE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(signal: libc::c_int) {
    let fd = SIGNAL_PIPE.load(Ordering::Acquire);
    let byte = signal as u8;
    // SAFETY: write(2) is async-signal-safe and the pipe is non-blocking, so a full pipe only
    // fails the write; errno is saved and restored around it for the interrupted code.
    unsafe {
        let errno = *libc::__errno_location();
        libc::write(fd, (&raw const byte).cast(), 1);
        *libc::__errno_location() = errno;
    }
}

/// Installs a handler for each of `signals` that writes the signal's number (one byte) to a
/// pipe, and returns the pipe's read end: all the work happens on whichever thread reads it.
/// For one caller per process (the pipe's write end lives in a static).
pub(crate) fn signals_to_pipe(signals: &[i32]) -> io::Result<OwnedFd> {
    let (read, write) = super::pipe(true)?;
    SIGNAL_PIPE.store(write.into_raw_fd(), Ordering::Release);
    for &signal in signals {
        // SAFETY: installs an async-signal-safe handler (one write(2)); the struct is zeroed
        // and then filled as sigaction(2) expects.
        cvt(unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as *const () as usize;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut())
        })?;
    }
    Ok(read)
}

/// Ends this process as `signal` would have: its default action, raised at ourselves.
pub(crate) fn raise_default(signal: i32) {
    // SAFETY: restores the default disposition and raises the signal at ourselves.
    unsafe {
        libc::signal(signal, libc::SIG_DFL);
        libc::raise(signal);
    }
}

/// The name of a signal number, e.g. `SIGKILL` for 9.
pub(crate) fn signal_name(signal: i32) -> Option<&'static str> {
    Some(match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGSYS => "SIGSYS",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_identity_dies_with_its_process_even_as_a_zombie() {
        let me = process_identity();
        assert!(identity_alive(me));
        // The same pid with another start time is a later process, not this one.
        assert!(!identity_alive(me ^ 1));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let identity = (u64::from(pid) << 32) | (start_time(pid).unwrap().1 & 0xffff_ffff);
        // Waits for the exit without reaping: the child stays a zombie.
        // SAFETY: waitid writes one siginfo_t.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: as above; pid is our child.
        let rc =
            unsafe { libc::waitid(libc::P_PID, pid, &mut info, libc::WEXITED | libc::WNOWAIT) };
        assert_eq!(rc, 0);
        assert!(process_exists(pid), "a zombie still answers kill(0)");
        assert!(!identity_alive(identity));
        child.wait().unwrap();
        assert!(!identity_alive(identity));
    }

    #[test]
    fn this_process_exists_and_has_a_parent() {
        assert!(process_exists(std::process::id()));
        assert!(parent_pid() > 0);
        assert_eq!(signal_name(SIGKILL), Some("SIGKILL"));
        assert_eq!(signal_name(77), None);
    }
}
