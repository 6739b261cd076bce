//! Helpers shared by the integration tests: deadlines without sleeps (pidfd + poll), and
//! process, fd and zombie counts read from /proc.
#![allow(dead_code)] // each test binary uses a different subset

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use multiproc::JoinHandle;
use serde::Serialize;
use serde::de::DeserializeOwned;

// ANCHOR: deadline
/// How long any one child may take in these tests before it is killed and the test fails.
pub(crate) const DEADLINE: Duration = Duration::from_secs(30);
// ANCHOR_END: deadline

/// Runs `f` on a thread and fails the test if it does not finish within [`DEADLINE`]: for
/// the cases whose regression is a hang.
pub(crate) fn within<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(DEADLINE)
        .expect("the operation did not finish in time: a deadlock")
}

/// `true` while a process with this pid exists.
pub(crate) fn exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// `true` while `pid` has exited but was not reaped yet.
pub(crate) fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// A pidfd: readable once the process has exited (Linux 5.3+). Works for any process of ours,
/// not only our children.
pub(crate) struct PidFd(OwnedFd);

impl PidFd {
    pub(crate) fn open(pid: u32) -> std::io::Result<PidFd> {
        // SAFETY: pidfd_open takes a pid and flags; it returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: the fd was just returned by the kernel and is owned by nobody else.
        Ok(PidFd(unsafe { OwnedFd::from_raw_fd(fd as i32) }))
    }

    /// Waits at most `timeout` for the process to exit; `true` if it did.
    pub(crate) fn wait_exit(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut pfd = libc::pollfd {
                fd: self.0.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = left.as_millis().min(i32::MAX as u128) as i32;
            // SAFETY: one valid pollfd, count 1.
            let n = unsafe { libc::poll(&mut pfd, 1, ms) };
            if n > 0 {
                return true;
            }
            if n == 0 || left.is_zero() {
                return false;
            }
            // EINTR: poll again for the time left.
        }
    }

    pub(crate) fn is_alive(&self) -> bool {
        !self.wait_exit(Duration::ZERO)
    }
}

/// Waits for `child` to exit within `timeout`; kills it and panics otherwise.
pub(crate) fn wait_within(child: &mut Child, timeout: Duration) -> ExitStatus {
    let pidfd = PidFd::open(child.id()).expect("pidfd_open");
    if !pidfd.wait_exit(timeout) {
        let _ = child.kill();
        let _ = child.wait();
        panic!("process {} still ran after {timeout:?}: killed", child.id());
    }
    child.wait().expect("wait")
}

/// Kills and reaps the process when dropped: a failing test leaves nothing behind.
pub(crate) struct KillOnDrop(pub(crate) Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The output of a finished helper or example binary.
pub(crate) struct Output {
    pub(crate) status: ExitStatus,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

/// Runs a binary of this package (`CARGO_BIN_EXE_*`) to completion under [`DEADLINE`].
pub(crate) fn run_bin(path: &str, configure: impl FnOnce(&mut Command)) -> Output {
    let mut cmd = Command::new(path);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("RUST_BACKTRACE", "0");
    configure(&mut cmd);
    let mut child = KillOnDrop(cmd.spawn().expect("start the binary"));
    let mut out = child.0.stdout.take().expect("piped");
    let mut err = child.0.stderr.take().expect("piped");
    let out_reader = read_all(move |s| out.read_to_string(s));
    let err_reader = read_all(move |s| err.read_to_string(s));
    let status = wait_within(&mut child.0, DEADLINE);
    // A process that kept the pipes open after the binary exited would be an orphan:
    // don't wait for it forever.
    let collect = |rx: std::sync::mpsc::Receiver<String>| {
        rx.recv_timeout(Duration::from_secs(5))
            .expect("a process outlived the binary and holds its output open")
    };
    Output {
        status,
        stdout: collect(out_reader),
        stderr: collect(err_reader),
    }
}

fn read_all(
    read: impl FnOnce(&mut String) -> std::io::Result<usize> + Send + 'static,
) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = read(&mut s);
        let _ = tx.send(s);
    });
    rx
}

// ANCHOR: join
/// Joins `handle` within [`DEADLINE`]; kills the child and panics if it is still running.
pub(crate) fn join<R: Serialize + DeserializeOwned>(
    mut handle: JoinHandle<R>,
) -> multiproc::Result<R> {
    match handle.join_timeout(DEADLINE) {
        Ok(Some(value)) => Ok(value),
        Ok(None) => {
            let _ = handle.kill();
            panic!("child {} did not finish within {DEADLINE:?}", handle.pid());
        }
        Err(e) => Err(e),
    }
}
// ANCHOR_END: join

/// The number of open file descriptors of this process.
pub(crate) fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

/// Children of this process, as (pid, state letter), from /proc.
pub(crate) fn children() -> Vec<(u32, char)> {
    let me = std::process::id();
    let mut found = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) S ppid ...": comm may hold spaces, so split after the last ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next().and_then(|s| s.chars().next()).unwrap_or('?');
        let ppid = fields.next().and_then(|s| s.parse::<u32>().ok());
        if ppid == Some(me) {
            found.push((pid, state));
        }
    }
    found
}

/// The number of zombie children of this process.
pub(crate) fn zombies() -> usize {
    children().iter().filter(|(_, s)| *s == 'Z').count()
}

/// Decodes only odd numbers: a message that cannot be decoded on arrival.
#[derive(Debug, PartialEq)]
pub(crate) struct Odd(pub(crate) u8);

impl Serialize for Odd {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Odd {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = <u8 as serde::Deserialize>::deserialize(d)?;
        if n % 2 == 1 {
            Ok(Odd(n))
        } else {
            Err(serde::de::Error::custom("even"))
        }
    }
}

/// The open fds above stderr that lack close-on-exec: what this process would leak into every
/// program it starts.
pub(crate) fn inheritable_fds() -> Vec<i32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let Ok(fd) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        // SAFETY: F_GETFD only reads the flags; a closed fd (the read_dir's own) gives -1.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        if fd > 2 && flags >= 0 && flags & libc::FD_CLOEXEC == 0 {
            found.push(fd);
        }
    }
    found
}

/// A small, seedless pseudo-random sequence (xorshift, seeded by the pid), so that runs
/// differ in where fault injection strikes but need no dependency.
pub(crate) fn random() -> impl FnMut() -> u64 {
    let mut state = u64::from(std::process::id()) | 1;
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
}
