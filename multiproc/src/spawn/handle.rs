//! [`JoinHandle`]: the parent's handle on one child process.

use std::any::type_name;
use std::fmt;
use std::process::{ChildStderr, ChildStdin, ChildStdout, ExitStatus};

use super::proc::Proc;
use std::time::Duration;

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Repr, Result, Who};
use crate::ipc::reactor;
use crate::ipc::{self, WireError};
use crate::proto::{Limits, Outcome};
use crate::select::{Selectable, Source};
use crate::sys::{self, Wait};

/// An owned handle on a child process: wait for its return value with [`join`](Self::join),
/// or stop it with [`terminate`](Self::terminate) / [`kill`](Self::kill).
///
/// Dropping the handle detaches the child: it runs on, is reaped when it exits, and is killed
/// if the parent exits first (children never outlive their parent).
///
/// # Examples
///
/// ```no_run
/// #[multiproc::process]
/// fn answer() -> u32 {
///     42
/// }
///
/// #[multiproc::main]
/// fn main() -> multiproc::Result<()> {
///     let child = multiproc::spawn(answer, ())?;
///     println!("started {} as pid {}", child.name(), child.pid());
///     assert_eq!(child.join()?, 42);
///     Ok(())
/// }
/// ```
#[must_use = "dropping a JoinHandle detaches the child; call `join` to get its result"]
pub struct JoinHandle<R> {
    who: Who,
    pid: u32,
    child: Option<Proc>,
    /// The bootstrap socket: the outcome arrives on it, and the child takes its hang-up for
    /// the parent's death, so it stays open until the child is reaped.
    sock: Option<std::sync::Arc<OwnedFd>>,
    /// Its entry in the registry of live children (for graceful shutdown).
    registered: u64,
    limits: Limits,
    /// The last lines of a [`Stdio::Prefixed`](crate::Stdio::Prefixed) stderr.
    pub(super) stderr_tail: Option<super::output::Tail>,
    /// The thread re-emitting the child's tracing events: joined with the child, so that
    /// its last events are out when `join` returns.
    pub(super) relay: Option<std::thread::JoinHandle<()>>,
    joined: bool,
    /// Killed by its owner on purpose (see `kill_on_purpose`): not a failure.
    stopped_on_purpose: bool,
    _output: std::marker::PhantomData<fn() -> R>,
}

impl<R> fmt::Debug for JoinHandle<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle")
            .field("name", &self.who.name)
            .field("pid", &self.pid)
            .field("joined", &self.joined)
            .finish()
    }
}

impl<R> JoinHandle<R>
where
    R: Serialize + DeserializeOwned,
{
    pub(super) fn new(child: Proc, who: Who, sock: OwnedFd, limits: Limits) -> Self {
        let sock = std::sync::Arc::new(sock);
        let registered = crate::shutdown::register(child.id(), &sock);
        JoinHandle {
            pid: child.id(),
            who,
            child: Some(child),
            sock: Some(sock),
            registered,
            limits,
            stderr_tail: None,
            relay: None,
            joined: false,
            stopped_on_purpose: false,
            _output: std::marker::PhantomData,
        }
    }

    /// The child's process id.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// #[multiproc::process]
    /// fn own_pid() -> u32 {
    ///     std::process::id()
    /// }
    ///
    /// #[multiproc::main]
    /// fn main() -> multiproc::Result<()> {
    ///     let child = multiproc::spawn(own_pid, ())?;
    ///     let pid = child.pid();
    ///     assert_ne!(pid, std::process::id());
    ///     assert_eq!(child.join()?, pid);
    ///     Ok(())
    /// }
    /// ```
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The child's name: the one given to [`Builder::name`](crate::Builder::name), else the
    /// entry point's, numbered by this process (`clock-1`, `clock-2`, `ClockProcess-1`). The
    /// child reads it with [`current`](crate::current).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// #[multiproc::process]
    /// fn own_name() -> String {
    ///     multiproc::current().name().to_string()
    /// }
    ///
    /// #[multiproc::main]
    /// fn main() -> multiproc::Result<()> {
    ///     let child = multiproc::spawn(own_name, ())?;
    ///     assert_eq!(child.name(), "own_name-1"); // the first `own_name` this process started
    ///     assert_eq!(child.join()?, "own_name-1");
    ///     Ok(())
    /// }
    /// ```
    pub fn name(&self) -> &str {
        &self.who.name
    }

    /// Waits for the child to finish and returns what its entry point returned.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// #[multiproc::process]
    /// fn check(n: i32) -> i32 {
    ///     assert!(n >= 0, "negative input");
    ///     n
    /// }
    ///
    /// #[multiproc::main]
    /// fn main() -> multiproc::Result<()> {
    ///     assert_eq!(multiproc::spawn(check, (1,))?.join()?, 1);
    ///     let err = multiproc::spawn(check, (-1,))?.join().unwrap_err();
    ///     assert_eq!(err.kind(), multiproc::ErrorKind::Panicked);
    ///     assert_eq!(err.remote_panic().unwrap().message(), "negative input");
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Panicked`](crate::ErrorKind::Panicked) with the child's panic,
    /// [`ErrorKind::Exited`](crate::ErrorKind::Exited) or
    /// [`ErrorKind::Signaled`](crate::ErrorKind::Signaled) when it ended without replying,
    /// [`ErrorKind::Serialize`](crate::ErrorKind::Serialize) /
    /// [`ErrorKind::Deserialize`](crate::ErrorKind::Deserialize) when the return value could
    /// not cross, [`ErrorKind::AlreadyJoined`](crate::ErrorKind::AlreadyJoined) after a
    /// successful [`join_timeout`](Self::join_timeout).
    pub fn join(mut self) -> Result<R> {
        self.check_not_joined()?;
        let received = self.receive(Wait::Forever);
        self.settle(received)
    }

    /// Waits for the child to finish without blocking the thread: [`join`](Self::join) for
    /// async code, under any executor.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// #[multiproc::process]
    /// fn answer() -> u32 {
    ///     42
    /// }
    ///
    /// #[tokio::main]
    /// async fn main() -> multiproc::Result<()> {
    ///     multiproc::init();
    ///     let child = multiproc::spawn(answer, ())?;
    ///     assert_eq!(child.join_async().await?, 42);
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`join`](Self::join).
    pub async fn join_async(self) -> Result<R> {
        // The outcome, or the hang-up of a child that died.
        if let Some(fd) = self.ready_fd() {
            reactor::readable(fd).await?;
        }
        // Then its exit, so that reaping it does not block either.
        if let Ok(pidfd) = sys::pidfd_open(self.pid) {
            reactor::readable(pidfd.as_fd()).await?;
        }
        self.join()
    }

    /// Waits at most `timeout` for the child to finish: `Ok(None)` if it is still running (the
    /// handle stays usable), else as [`join`](Self::join).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    ///
    /// #[multiproc::process]
    /// fn slow() -> u8 {
    ///     std::thread::sleep(Duration::from_millis(300));
    ///     1
    /// }
    ///
    /// #[multiproc::main]
    /// fn main() -> multiproc::Result<()> {
    ///     let mut child = multiproc::spawn(slow, ())?;
    ///     assert_eq!(child.join_timeout(Duration::from_millis(1))?, None);
    ///     assert_eq!(child.join_timeout(Duration::from_secs(10))?, Some(1));
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`join`](Self::join).
    pub fn join_timeout(&mut self, timeout: Duration) -> Result<Option<R>> {
        self.check_not_joined()?;
        let received = match self.receive(Wait::timeout(timeout)) {
            Err(WireError::WouldBlock) => return Ok(None),
            other => other,
        };
        self.settle(received).map(Some)
    }

    /// [`join_timeout`](Self::join_timeout) without decoding: the child's encoded
    /// `Outcome` (a cluster node forwards it to the caller, which knows its type), or the
    /// error of a child that ended without one. A returned value that carries descriptors
    /// is an `OutputNotSerializable` outcome: it cannot leave this machine.
    #[cfg(feature = "cluster")]
    pub(crate) fn join_encoded_timeout(&mut self, timeout: Duration) -> Result<Option<Vec<u8>>> {
        self.check_not_joined()?;
        match self.receive(Wait::timeout(timeout)) {
            Err(WireError::WouldBlock) => Ok(None),
            Ok(frame) if !frame.batch => {
                self.joined = true;
                let bytes = if frame.fds.is_empty() {
                    frame.bytes.to_vec()
                } else {
                    crate::proto::not_portable()
                };
                self.wait_child()?;
                if let Some(relay) = self.relay.take() {
                    let _ = relay.join();
                }
                crate::trace::exited(&self.who.name, self.pid, None);
                Ok(Some(bytes))
            }
            // Closed (or nonsense): the exit status says what happened.
            _ => match self.settle(Err(WireError::Closed)) {
                Err(e) => Err(e),
                Ok(_) => Err(Error::other(format!(
                    "{} ended without an outcome",
                    self.who
                ))),
            },
        }
    }

    /// `true` once the child has finished: it sent what its entry point returned (or
    /// panicked with), or it ended; [`join`](Self::join) then returns at once. As
    /// [`std::thread::JoinHandle::is_finished`], it takes `&self` and never waits.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// #[multiproc::process]
    /// fn quick() -> u8 {
    ///     7
    /// }
    ///
    /// #[multiproc::main]
    /// fn main() -> multiproc::Result<()> {
    ///     let child = multiproc::spawn(quick, ())?;
    ///     while !child.is_finished() {
    ///         std::thread::yield_now();
    ///     }
    ///     assert_eq!(child.join()?, 7);
    ///     Ok(())
    /// }
    /// ```
    pub fn is_finished(&self) -> bool {
        match &self.sock {
            Some(sock) => sys::poll_one(sock.as_fd(), sys::POLLIN, Wait::Now).unwrap_or(true),
            None => true,
        }
    }

    /// `true` while the child process runs (it may have finished its entry point and be
    /// about to exit).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// #[multiproc::process]
    /// fn sleeper() {
    ///     std::thread::sleep(std::time::Duration::from_secs(60));
    /// }
    ///
    /// #[multiproc::main]
    /// fn main() -> multiproc::Result<()> {
    ///     let mut child = multiproc::spawn(sleeper, ())?;
    ///     assert!(child.is_alive());
    ///     child.kill()?;
    ///     assert!(child.join().is_err());
    ///     Ok(())
    /// }
    /// ```
    pub fn is_alive(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Asks the child to stop with SIGTERM; [`join`](Self::join) then reports
    /// [`ErrorKind::Signaled`](crate::ErrorKind::Signaled) unless the child handled it.
    /// Does nothing if the child already exited.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// #[multiproc::process]
    /// fn sleeper() {
    ///     std::thread::sleep(std::time::Duration::from_secs(60));
    /// }
    ///
    /// #[multiproc::main]
    /// fn main() -> multiproc::Result<()> {
    ///     let mut child = multiproc::spawn(sleeper, ())?;
    ///     child.terminate()?;
    ///     assert_eq!(child.join().unwrap_err().signal(), Some(libc::SIGTERM));
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Io`](crate::ErrorKind::Io) if the signal cannot be sent.
    pub fn terminate(&mut self) -> Result<()> {
        self.signal(sys::SIGTERM)
    }

    /// Kills the child with SIGKILL. Does nothing if the child already exited.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// #[multiproc::process]
    /// fn forever() {
    ///     loop {
    ///         std::thread::park();
    ///     }
    /// }
    ///
    /// #[multiproc::main]
    /// fn main() -> multiproc::Result<()> {
    ///     let mut child = multiproc::spawn(forever, ())?;
    ///     child.kill()?;
    ///     assert_eq!(child.join().unwrap_err().signal(), Some(libc::SIGKILL));
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Io`](crate::ErrorKind::Io) if the signal cannot be sent.
    pub fn kill(&mut self) -> Result<()> {
        self.signal(sys::SIGKILL)
    }

    /// Asks the child to stop: [`shutdown_requested`](crate::shutdown_requested) turns `true`
    /// in it (and in its own children). Returns at once; [`join`](JoinHandle::join) to wait.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// #[multiproc::process]
    /// fn poll_until_told() -> bool {
    ///     while !multiproc::shutdown_requested() {
    ///         std::thread::sleep(std::time::Duration::from_millis(5));
    ///     }
    ///     true
    /// }
    ///
    /// #[multiproc::main]
    /// fn main() -> multiproc::Result<()> {
    ///     let handle = multiproc::spawn(poll_until_told, ())?;
    ///     handle.request_shutdown()?;
    ///     assert!(handle.join()?);
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Io`](crate::ErrorKind::Io) when the request cannot be written; a child
    /// that already ended is not an error.
    pub fn request_shutdown(&self) -> Result<()> {
        let Some(sock) = &self.sock else {
            return Ok(());
        };
        match crate::shutdown::request(sock) {
            Ok(()) | Err(ipc::SendError::Wire(WireError::Closed)) => Ok(()),
            // An earlier request is still unread.
            Err(ipc::SendError::Wire(WireError::WouldBlock)) => Ok(()),
            Err(ipc::SendError::Wire(WireError::Io(e))) => Err(Error::io(
                format!("cannot ask {} to shut down", self.who),
                e,
            )),
            Err(ipc::SendError::Encode(message)) => Err(Error::other(message)),
        }
    }

    /// Asks the child to stop, waits up to `grace` for its result, then kills it: the
    /// graceful `join`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    ///
    /// #[multiproc::process]
    /// fn stubborn() {
    ///     loop {
    ///         std::thread::park(); // never asks `shutdown_requested`
    ///     }
    /// }
    ///
    /// #[multiproc::main]
    /// fn main() -> multiproc::Result<()> {
    ///     let child = multiproc::spawn(stubborn, ())?;
    ///     let err = child.shutdown(Duration::from_millis(100)).unwrap_err();
    ///     assert_eq!(err.signal(), Some(libc::SIGKILL)); // killed once the grace period ran out
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`join`](JoinHandle::join); a child killed after `grace` gives
    /// [`ErrorKind::Signaled`](crate::ErrorKind::Signaled) (SIGKILL).
    pub fn shutdown(mut self, grace: Duration) -> Result<R> {
        // Whatever fails on the way, the child ends up killed and reaped, not detached.
        let asked = self.request_shutdown();
        if asked.is_ok()
            && let Some(value) = self.join_timeout(grace)?
        {
            return Ok(value);
        }
        let _ = self.kill();
        let joined = self.join();
        asked.and(joined)
    }

    /// The write end of the child's stdin, when the builder set it to
    /// [`Stdio::Piped`](crate::Stdio::Piped); `None` after the first call.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::io::Write;
    ///
    /// #[multiproc::process]
    /// fn count_lines() -> usize {
    ///     std::io::stdin().lines().count()
    /// }
    ///
    /// #[multiproc::main]
    /// fn main() -> multiproc::Result<()> {
    ///     let mut child = multiproc::Builder::new()
    ///         .stdin(multiproc::Stdio::Piped)
    ///         .spawn_fn(count_lines, ())?;
    ///     let mut stdin = child.take_stdin().unwrap();
    ///     stdin.write_all(b"one\ntwo\n")?;
    ///     drop(stdin); // the child reads end-of-file
    ///     assert_eq!(child.join()?, 2);
    ///     Ok(())
    /// }
    /// ```
    pub fn take_stdin(&mut self) -> Option<ChildStdin> {
        self.child.as_mut()?.stdin.take()
    }

    /// The read end of the child's stdout, when the builder set it to
    /// [`Stdio::Piped`](crate::Stdio::Piped); `None` after the first call.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::io::BufRead;
    ///
    /// #[multiproc::process]
    /// fn count_to(n: u32) {
    ///     for i in 1..=n {
    ///         println!("{i}");
    ///     }
    /// }
    ///
    /// #[multiproc::main]
    /// fn main() -> multiproc::Result<()> {
    ///     let mut child = multiproc::Builder::new()
    ///         .stdout(multiproc::Stdio::Piped)
    ///         .spawn_fn(count_to, (3,))?;
    ///     let stdout = child.take_stdout().unwrap();
    ///     assert!(child.take_stdout().is_none()); // taken once
    ///     let lines = std::io::BufReader::new(stdout).lines();
    ///     let lines: Vec<String> = lines.collect::<std::io::Result<_>>()?;
    ///     child.join()?;
    ///     assert_eq!(lines, ["1", "2", "3"]);
    ///     Ok(())
    /// }
    /// ```
    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.child.as_mut()?.stdout.take()
    }

    /// The read end of the child's stderr, when the builder set it to
    /// [`Stdio::Piped`](crate::Stdio::Piped); `None` after the first call.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::io::Read;
    ///
    /// #[multiproc::process]
    /// fn complain() {
    ///     eprintln!("warning: low on coffee");
    /// }
    ///
    /// #[multiproc::main]
    /// fn main() -> multiproc::Result<()> {
    ///     let mut child = multiproc::Builder::new()
    ///         .stderr(multiproc::Stdio::Piped)
    ///         .spawn_fn(complain, ())?;
    ///     let mut text = String::new();
    ///     child.take_stderr().unwrap().read_to_string(&mut text)?;
    ///     child.join()?;
    ///     assert_eq!(text, "warning: low on coffee\n");
    ///     Ok(())
    /// }
    /// ```
    pub fn take_stderr(&mut self) -> Option<ChildStderr> {
        self.child.as_mut()?.stderr.take()
    }

    /// Kills the child as its owner's way of ending it (a pool ending its workers): its end
    /// is traced as "child stopped", not as a failure.
    pub(crate) fn kill_on_purpose(&mut self) -> Result<()> {
        self.stopped_on_purpose = true;
        self.signal(sys::SIGKILL)
    }

    fn signal(&mut self, signal: i32) -> Result<()> {
        let Some(child) = &mut self.child else {
            return Ok(());
        };
        // Only signal an unreaped child: its pid cannot have been reused.
        match child.try_wait() {
            Ok(Some(_)) => Ok(()),
            Ok(None) => sys::send_signal(self.pid, signal)
                .map_err(|e| Error::io(format!("cannot signal {}", self.who), e)),
            Err(e) => Err(Error::io(format!("cannot wait for {}", self.who), e)),
        }
    }

    fn check_not_joined(&self) -> Result<()> {
        if self.joined {
            Err(Error::new(Repr::AlreadyJoined {
                who: self.who.clone(),
            }))
        } else {
            Ok(())
        }
    }

    /// Turns what the child sent (or the end of its channel) into the join result, and reaps
    /// the child.
    fn receive(&self, wait: Wait) -> std::result::Result<ipc::Frame, WireError> {
        match &self.sock {
            Some(sock) => ipc::recv(sock.as_fd(), wait),
            None => Err(WireError::Closed),
        }
    }

    fn settle(&mut self, received: std::result::Result<ipc::Frame, WireError>) -> Result<R> {
        let result = self.settle_outcome(received);
        if let Some(relay) = self.relay.take() {
            let _ = relay.join();
        }
        if self.stopped_on_purpose {
            crate::trace::stopped(&self.who.name, self.pid);
        } else {
            crate::trace::exited(&self.who.name, self.pid, result.as_ref().err());
        }
        result
    }

    fn settle_outcome(
        &mut self,
        received: std::result::Result<ipc::Frame, WireError>,
    ) -> Result<R> {
        self.joined = true;
        let outcome = match received {
            Ok(frame) => match ipc::decode::<Outcome<R>>(frame) {
                Ok(outcome) => Some(outcome),
                Err(message) => {
                    self.wait_child()?;
                    return Err(Error::new(Repr::Deserialize {
                        type_name: type_name::<R>(),
                        message,
                    }));
                }
            },
            // Closed: the child exited (or closed its end) without an outcome.
            Err(_) => None,
        };
        let status = self.wait_child()?;
        let who = self.who.clone();
        match outcome {
            Some(Outcome::Returned(value)) => Ok(value),
            Some(Outcome::Panicked(panic)) => {
                Err(self.with_tail(Error::new(Repr::Panicked { who, panic })))
            }
            Some(Outcome::OutputNotSerializable { message, .. }) => {
                Err(Error::serialize::<R>(message))
            }
            Some(Outcome::StateNotDeserializable { type_name, message }) => Err(Error::other(
                format!("{who} could not decode its state `{type_name}`: {message}"),
            )),
            None => {
                use std::os::unix::process::ExitStatusExt;
                let explained = status
                    .signal()
                    .and_then(|sig| self.limits.explain(&who, sig));
                let error = explained.unwrap_or_else(|| super::exit_error(status, who, true));
                Err(self.with_tail(error))
            }
        }
    }

    /// `error` with the last lines of the child's [`Stdio::Prefixed`](crate::Stdio::Prefixed)
    /// stderr, if it had one: what a crash or a panic printed last.
    fn with_tail(&self, error: Error) -> Error {
        match &self.stderr_tail {
            Some(tail) => error.with_stderr_tail(tail.lines()),
            None => error,
        }
    }

    /// Reaps the child (it has sent its outcome or closed its end, so it is exiting), then
    /// closes the bootstrap socket.
    fn wait_child(&mut self) -> Result<ExitStatus> {
        let child = self
            .child
            .as_mut()
            .expect("the child is only taken by Drop");
        let status = child
            .wait()
            .map_err(|e| Error::io(format!("cannot wait for {}", self.who), e));
        crate::shutdown::unregister(self.registered);
        self.sock = None;
        status
    }
}

impl<R> JoinHandle<R> {
    pub(crate) fn who(&self) -> &Who {
        &self.who
    }

    /// The bootstrap socket, for [`Select`](crate::Select); `None` once joined.
    pub(crate) fn ready_fd(&self) -> Option<BorrowedFd<'_>> {
        if self.joined {
            return None;
        }
        self.sock.as_deref().map(AsFd::as_fd)
    }
}

impl<R> Drop for JoinHandle<R> {
    fn drop(&mut self) {
        if self.joined {
            return;
        }
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(Some(_)) = child.try_wait() {
            crate::shutdown::unregister(self.registered);
            return;
        }
        // Pipes nobody will read or write again: close them, so that the child sees EOF or
        // EPIPE instead of blocking forever on a full pipe.
        drop(child.stdin.take());
        drop(child.stdout.take());
        drop(child.stderr.take());
        // Detach: reap the child when it exits, keeping the bootstrap socket open until then
        // (the child takes its hang-up for the parent's death).
        let sock = self.sock.take();
        let registered = self.registered;
        let slot = std::sync::Arc::new(std::sync::Mutex::new(Some((child, sock))));
        let theirs = std::sync::Arc::clone(&slot);
        let reaper = std::thread::Builder::new()
            .name("multiproc-reaper".into())
            .stack_size(32 * 1024)
            .spawn(move || {
                let taken = theirs.lock().ok().and_then(|mut s| s.take());
                if let Some((mut child, sock)) = taken {
                    let _ = child.wait();
                    crate::shutdown::unregister(registered);
                    drop(sock);
                }
            });
        if reaper.is_err() {
            // No thread to wait with: kill and reap now rather than leave a zombie.
            let taken = slot.lock().ok().and_then(|mut s| s.take());
            if let Some((mut child, _sock)) = taken {
                let _ = child.kill();
                let _ = child.wait();
                crate::shutdown::unregister(registered);
            }
        }
    }
}

impl<R> Selectable for JoinHandle<R> {
    fn __source(&self) -> Source<'_> {
        match self.ready_fd() {
            Some(fd) => Source::socket(fd),
            None => Source::now(),
        }
    }
}
