//! Graceful shutdown: a parent asks its children to stop, they see it with
//! [`shutdown_requested`], and whatever is still running after a grace period is killed.
//!
//! The request travels as a [`Control`] message on each child's bootstrap socket. The child
//! reads it when [`shutdown_requested`] is called, or, once it has children of its own to
//! pass it on to (or runs without the kernel's parent-death signal), on a small thread. With
//! [`shutdown_on_signals`], SIGINT (Ctrl-C) or SIGTERM to the parent runs the whole sequence.

use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::ipc::{self, WireError};
use crate::proto::{Control, EXIT_ORPHANED};
use crate::sys::{self, Wait};

static REQUESTED: AtomicBool = AtomicBool::new(false);

/// `true` once this process was asked to shut down: its parent called
/// [`JoinHandle::request_shutdown`](crate::JoinHandle::request_shutdown) or
/// [`JoinHandle::shutdown`](crate::JoinHandle::shutdown), or received SIGINT or SIGTERM under
/// [`shutdown_on_signals`]. A long-running child checks it to stop cleanly before its grace
/// period runs out. Always `false` in a process nobody asked.
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
///
/// #[multiproc::process]
/// fn worker() -> u32 {
///     let mut rounds = 0;
///     while !multiproc::shutdown_requested() {
///         std::thread::sleep(Duration::from_millis(10)); // one unit of work
///         rounds += 1;
///     }
///     rounds // returned normally: the parent gets it
/// }
///
/// #[multiproc::main]
/// fn main() -> multiproc::Result<()> {
///     let handle = multiproc::spawn(worker, ())?;
///     let rounds = handle.shutdown(Duration::from_secs(5))?;
///     println!("stopped after {rounds} rounds");
///     Ok(())
/// }
/// ```
pub fn shutdown_requested() -> bool {
    if !REQUESTED.load(Ordering::Acquire) && LAZY_SOCK.load(Ordering::Acquire) >= 0 {
        poll_lazily();
    }
    REQUESTED.load(Ordering::Acquire)
}

/// This child's bootstrap socket while no thread watches it (see [`watch_lazily`]), else -1.
static LAZY_SOCK: AtomicI32 = AtomicI32::new(-1);
/// Held while the lazily watched socket is read, or handed to a thread.
static LAZY: Mutex<()> = Mutex::new(());

/// Watches the bootstrap socket `fd` only when asked: [`shutdown_requested`] reads it, and
/// the first child this process registers hands it to a watcher thread.
pub(crate) fn watch_lazily(fd: RawFd) {
    LAZY_SOCK.store(fd, Ordering::Release);
}

/// Reads what the parent sent on the lazily watched socket, without waiting.
fn poll_lazily() {
    let _reading = LAZY.lock().unwrap_or_else(|e| e.into_inner());
    let fd = LAZY_SOCK.load(Ordering::Acquire);
    if fd < 0 {
        return;
    }
    // SAFETY: the bootstrap socket stays open until the process exits.
    let sock = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    loop {
        match ipc::recv(sock, Wait::Now) {
            Ok(frame) => match ipc::decode::<Control>(frame) {
                Ok(Control::Shutdown) => requested(),
                // Not from our parent's multiproc: as the watcher thread, take it for a
                // broken parent.
                Err(_) => sys::exit_now(EXIT_ORPHANED),
            },
            Err(WireError::WouldBlock) => return,
            Err(_) => sys::exit_now(EXIT_ORPHANED),
        }
    }
}

/// Hands the lazily watched socket to a watcher thread, which passes requests on to this
/// process's children at once.
fn watch_eagerly() {
    if LAZY_SOCK.load(Ordering::Acquire) < 0 {
        return;
    }
    let _reading = LAZY.lock().unwrap_or_else(|e| e.into_inner());
    let fd = LAZY_SOCK.swap(-1, Ordering::AcqRel);
    // No thread to be had (a thread limit): stay lazy rather than fail the entry.
    if fd >= 0 && !watch_parent(fd) {
        LAZY_SOCK.store(fd, Ordering::Release);
    }
}

/// Watches the bootstrap socket `fd` on a small thread: shutdown requests, and a hang-up,
/// which means the parent died. The socket lives until the process exits. `false` if the
/// thread could not be started.
pub(crate) fn watch_parent(fd: RawFd) -> bool {
    let spawned = std::thread::Builder::new()
        .name("multiproc-parent".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            // SAFETY: the socket lives in the ChildContext until the process exits, which
            // outlives this thread.
            let sock = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
            // Control messages until the parent hangs up.
            while let Ok(frame) = ipc::recv(sock, Wait::Forever) {
                match ipc::decode::<Control>(frame) {
                    Ok(Control::Shutdown) => requested(),
                    Err(_) => break,
                }
            }
            sys::exit_now(EXIT_ORPHANED)
        });
    spawned.is_ok()
}

/// This process was asked to stop: remember it and pass it on to its children.
fn requested() {
    REQUESTED.store(true, Ordering::Release);
    request_all();
}

/// A child that has not been reaped yet, its bootstrap socket, and a pidfd to kill it by
/// (a pidfd never reaches another process that reused the pid).
struct Live {
    id: u64,
    sock: Weak<OwnedFd>,
    pidfd: Option<OwnedFd>,
}

static LIVE: Mutex<Vec<Live>> = Mutex::new(Vec::new());

fn live() -> std::sync::MutexGuard<'static, Vec<Live>> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Registers a child; returns the id to [`unregister`] it by once reaped. A child that
/// starts while this process is already shutting down is asked to stop at once.
pub(crate) fn register(pid: u32, sock: &Arc<OwnedFd>) -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    watch_eagerly();
    let pidfd = sys::pidfd_open(pid).ok();
    live().push(Live {
        id,
        sock: Arc::downgrade(sock),
        pidfd,
    });
    // `requested` sets the flag before it reads the registry: either it saw this entry, or
    // this sees the flag.
    if REQUESTED.load(Ordering::Acquire) {
        let _ = request(sock);
    }
    id
}

pub(crate) fn unregister(id: u64) {
    live().retain(|l| l.id != id);
}

/// Sends the shutdown request on a child's bootstrap socket.
pub(crate) fn request(sock: &OwnedFd) -> std::result::Result<(), ipc::SendError> {
    ipc::send_value(sock.as_fd(), &Control::Shutdown, Wait::Now)
}

/// Asks every live child to stop.
fn request_all() {
    let children: Vec<Arc<OwnedFd>> = live().iter().filter_map(|l| l.sock.upgrade()).collect();
    for sock in &children {
        let _ = request(sock);
    }
}

/// Makes SIGINT (Ctrl-C) and SIGTERM to this process shut its children down in order: each is
/// asked to stop ([`shutdown_requested`] turns `true` in it and in its own children), those
/// still running after `grace` are killed, and then this process ends as the signal would have
/// ended it. Call it once, after the hook, in the top-level parent.
///
/// # Examples
///
/// ```no_run
/// #[multiproc::main]
/// fn main() -> multiproc::Result<()> {
///     multiproc::shutdown_on_signals(std::time::Duration::from_secs(10))?;
///     // ... spawn children; Ctrl-C now stops them cleanly.
///     Ok(())
/// }
/// ```
///
/// # Errors
///
/// [`ErrorKind::Io`](crate::ErrorKind::Io) if the handlers or their thread cannot be set up.
pub fn shutdown_on_signals(grace: Duration) -> Result<()> {
    static INSTALLED: AtomicBool = AtomicBool::new(false);
    if INSTALLED.swap(true, Ordering::AcqRel) {
        return Err(Error::other(
            "shutdown_on_signals was already called in this process",
        ));
    }
    // The handlers only write the signal number to a pipe: all the work happens on a thread.
    let read = sys::signals_to_pipe(&[sys::SIGINT, sys::SIGTERM])
        .map_err(|e| Error::io("cannot install the signal handlers", e))?;
    std::thread::Builder::new()
        .name("multiproc-shutdown".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            let mut byte = [0u8; 1];
            let file = std::fs::File::from(read);
            loop {
                match std::io::Read::read(&mut &file, &mut byte) {
                    Ok(1) => break,
                    Ok(_) => return,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => return,
                }
            }
            shut_down(grace, &file);
            // End as the signal would have: default action, raised again.
            let signal = i32::from(byte[0]);
            sys::raise_default(signal);
            sys::exit_now(128 + signal);
        })
        .map_err(|e| Error::io("cannot start the shutdown thread", e))?;
    Ok(())
}

/// Asks every child to stop, waits up to `grace` for them to exit (or for a second signal on
/// `signals`), then kills the rest.
fn shut_down(grace: Duration, signals: &std::fs::File) {
    REQUESTED.store(true, Ordering::Release);
    request_all();
    // A pidfd turns readable when its process exits (reaped or not).
    let mut pidfds: Vec<OwnedFd> = live()
        .iter()
        .filter_map(|l| l.pidfd.as_ref()?.try_clone().ok())
        .collect();
    let deadline = Instant::now().checked_add(grace);
    let wait = deadline.map_or(Wait::Forever, Wait::Until);
    while !pidfds.is_empty() {
        // The signal pipe last: a second Ctrl-C skips the rest of the grace.
        let mut polls: Vec<sys::PollFd> = pidfds
            .iter()
            .map(std::os::fd::AsRawFd::as_raw_fd)
            .chain([std::os::fd::AsRawFd::as_raw_fd(signals)])
            .map(|fd| sys::pollfd(fd, sys::POLLIN))
            .collect();
        match sys::poll(&mut polls, wait) {
            Ok(true) if polls.last().is_some_and(|p| p.revents != 0) => break,
            Ok(true) => {
                let mut ready = polls.iter().map(|p| p.revents != 0);
                pidfds.retain(|_| !ready.next().unwrap_or(false));
            }
            _ => break,
        }
    }
    for pidfd in &pidfds {
        let _ = sys::pidfd_kill(pidfd);
    }
}
