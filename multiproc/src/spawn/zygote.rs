//! [`Zygote`]: a pre-started helper that forks children, so that a spawn costs a fork instead
//! of an exec (Python's `forkserver`, Android's zygote).
//!
//! The zygote is this executable re-run as a child that reached the multiproc hook and then
//! only waits for requests, on one thread: it never runs user code of its own and starts no
//! thread, so forking it is safe where forking the (multi-threaded) parent is not. Each child
//! is forked with `CLONE_PARENT`: the kernel makes it a child of the *parent*, not of the
//! zygote, so the parent reaps it, signals it through its pidfd and sees its exit status
//! exactly as for an exec'd child; the zygote keeps nothing of it. The forked child then runs
//! the same bootstrap as any other (hello, state, outcome over its own socket pair, whose
//! child end travels in the request), with the same parent-death watch.

use std::ffi::OsString;
use std::fmt;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Builder, JoinHandle, Proc, Stdio};
use crate::error::{Error, Repr, Result};
use crate::ipc::{self, WireError};
use crate::proto::{ENV_NAME, ForkRequest, Hello, ZYGOTE_KEY, ZygoteAnswer, ZygoteRequest};
use crate::sys::{self, Stream, Wait};

/// How long a request may wait for the zygote's answer: a fork takes well under a millisecond,
/// so this only bounds a zygote that hangs.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// A pre-started, single-threaded helper process that forks children on request: with
/// [`Builder::zygote`], spawning costs a `fork` of a small process instead of an `exec` of the
/// whole executable (a fraction of a millisecond instead of about one).
///
/// The children are the caller's own (the zygote forks them with `CLONE_PARENT`): they are
/// reaped, killed on drop of a [`Pool`](crate::Pool), told about shutdowns and die with their
/// parent exactly like exec'd children, and report their return value or panic the same way.
/// What differs: a child starts from the zygote's memory, so it sees the environment and
/// working directory as they were when the zygote started (plus what the builder sets), and
/// statics initialised by code before the hook, but nothing the parent did afterwards.
///
/// A zygote that dies (say, killed by hand) is replaced by a new one on the next spawn. It
/// exits when the last clone of its handle is dropped, or with its parent.
///
/// Forking is only safe in a process with one thread, so the zygote checks: a program that
/// starts threads before the hook (a runtime built by `#[tokio::main]` before
/// `multiproc::init()` runs, say) cannot have a zygote, and [`Zygote::start`] says so. Call
/// `multiproc::init()` first in a plain `fn main`, then build the runtime. (Under
/// `#[multiproc::test]`, libtest's main thread, which only waits for the test, is allowed.)
///
/// # Examples
///
/// ```no_run
/// #[multiproc::process]
/// fn square(x: u64) -> u64 {
///     x * x
/// }
///
/// fn main() -> multiproc::Result<()> {
///     multiproc::init();
///     let zygote = multiproc::Zygote::start()?;
///     let builder = multiproc::Builder::new().zygote(&zygote);
///     for x in 0..10 {
///         assert_eq!(builder.spawn_fn(square, (x,))?.join()?, x * x);
///     }
///     Ok(())
/// }
/// ```
#[derive(Clone)]
pub struct Zygote {
    inner: Arc<Inner>,
}

/// The zygote's process, shared by every clone of the handle; the last one to go stops it.
struct Inner {
    slot: Mutex<Option<JoinHandle<()>>>,
}

impl Inner {
    fn slot(&self) -> std::sync::MutexGuard<'_, Option<JoinHandle<()>>> {
        self.slot.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Kills and reaps the zygote now, if it runs.
    fn stop(&self) {
        let taken = self.slot().take();
        if let Some(mut handle) = taken {
            // It holds nothing worth a grace period.
            let _ = handle.kill();
            let _ = handle.join_timeout(Duration::from_secs(5));
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop();
    }
}

impl fmt::Debug for Zygote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Zygote").field("pid", &self.pid()).finish()
    }
}

impl Zygote {
    /// Starts a zygote now (so that a failure to start shows here, not at the first spawn).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// fn main() -> multiproc::Result<()> {
    ///     multiproc::init();
    ///     let zygote = multiproc::Zygote::start()?; // a failure to start shows here
    ///     let shared = zygote.clone(); // the same zygote process
    ///     assert!(zygote.pid().is_some());
    ///     assert_eq!(shared.pid(), zygote.pid());
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Builder::spawn`]: [`ErrorKind::NotInitialized`](crate::ErrorKind::NotInitialized)
    /// before the hook, [`ErrorKind::Io`](crate::ErrorKind::Io) when the process cannot start;
    /// [`ErrorKind::Other`](crate::ErrorKind::Other) when threads run before the hook (see
    /// above).
    pub fn start() -> Result<Zygote> {
        let handle = start_one()?;
        Ok(Zygote {
            inner: Arc::new(Inner {
                slot: Mutex::new(Some(handle)),
            }),
        })
    }

    /// The zygote's process id, or `None` if it died and has not been replaced yet.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// fn main() -> multiproc::Result<()> {
    ///     multiproc::init();
    ///     let zygote = multiproc::Zygote::start()?;
    ///     println!("zygote runs as pid {:?}", zygote.pid());
    ///     Ok(())
    /// }
    /// ```
    pub fn pid(&self) -> Option<u32> {
        self.inner.slot().as_ref().map(JoinHandle::pid)
    }

    /// Forks a child for `builder` that will run entry `key` on the bootstrap socket whose
    /// ends are `theirs` (handed over) and `mine`. `None`: the zygote died before forking
    /// anything, and `theirs` is gone with it; the caller tries again with a new pair.
    pub(super) fn fork(
        &self,
        builder: &Builder,
        key: &str,
        name: &str,
        theirs: OwnedFd,
        mine: BorrowedFd<'_>,
    ) -> Result<Option<Proc>> {
        check_envs(&builder.envs)?;
        let mut fds = vec![theirs];
        let (stdio, ours) = child_streams(builder, &mut fds)?;
        let request = ZygoteRequest::Fork(ForkRequest {
            entry: key.to_string(),
            envs: builder
                .envs
                .iter()
                .chain([&builder.trace_env(), &(ENV_NAME.into(), Some(name.into()))])
                .map(|(k, v)| {
                    (
                        k.as_bytes().to_vec(),
                        v.as_ref().map(|v| v.as_bytes().to_vec()),
                    )
                })
                .collect(),
            current_dir: builder
                .current_dir
                .as_ref()
                .map(|d| d.as_os_str().as_bytes().to_vec()),
            limits: builder.limits,
            stdio,
        });
        // A zygote that does not answer within the builder's start timeout fails the spawn.
        let timeout = builder
            .start_timeout
            .unwrap_or(super::DEFAULT_START_TIMEOUT)
            .min(ANSWER_TIMEOUT);
        let Some(pid) = self.ask(&request, fds, mine, timeout)? else {
            return Ok(None);
        };
        Ok(Some(Proc::with_pipes(pid, ours)))
    }

    /// Sends `request` with `fds` (which it closes here) and returns the forked pid, or
    /// `None` when the zygote died without forking (it is replaced at the next request). A
    /// zygote that does not answer within `timeout` is killed, and the spawn fails with
    /// [`ErrorKind::Timeout`](crate::ErrorKind::Timeout).
    fn ask(
        &self,
        request: &ZygoteRequest,
        fds: Vec<OwnedFd>,
        mine: BorrowedFd<'_>,
        timeout: Duration,
    ) -> Result<Option<u32>> {
        let mut slot = self.inner.slot();
        if slot.is_none() {
            *slot = Some(start_one()?);
        }
        let handle = slot.as_ref().expect("set above");
        let Some(sock) = handle.ready_fd() else {
            return Err(Error::other("the zygote's connection is closed"));
        };
        // The request carries no descriptor of its own: `fds` go with it.
        let sent = ipc::with_encoded(request, |bytes, _| {
            ipc::send(sock, None, bytes, &fds, Wait::timeout(timeout))
        })
        .map_err(Error::other)?;
        // Ours go now: from here on only the zygote, or a child it forked, holds the child's
        // end of the bootstrap socket.
        drop(fds);
        let answer = match sent {
            Err(e) => Err(lost(e, timeout)),
            Ok(()) => ipc::recv(sock, Wait::timeout(timeout))
                .map_err(|e| lost(e, timeout))
                .and_then(|frame| {
                    ipc::decode(frame)
                        .map_err(|e| Error::other(format!("the zygote's answer: {e}")))
                }),
        };
        match answer {
            Ok(ZygoteAnswer::Forked(pid)) => Ok(Some(pid)),
            Ok(ZygoteAnswer::Failed(why)) => {
                Err(Error::other(format!("the zygote could not fork: {why}")))
            }
            Err(e) => {
                let hung = e.is_timeout();
                if let Some(mut dead) = slot.take() {
                    let _ = dead.kill();
                    let _ = dead.join_timeout(Duration::from_secs(5));
                }
                // Whether it forked before it died: a child says hello on `mine`; with no
                // child, the last copy of the other end went with the zygote.
                match ipc::recv(mine, Wait::timeout(Duration::from_secs(5))) {
                    // It died before it forked: the caller tries once more, with a new one.
                    // One that hung is an error: retrying would wait out the timeout again.
                    Err(WireError::Closed) if !hung => Ok(None),
                    Ok(frame) => {
                        if let Ok(Hello::Ready { pid, .. }) = ipc::decode(frame) {
                            let mut child = Proc::forked(pid, None, None, None);
                            let _ = child.kill();
                            let _ = child.wait();
                        }
                        Err(e)
                    }
                    Err(_) => Err(e),
                }
            }
        }
    }
}

fn lost(e: WireError, timeout: Duration) -> Error {
    match e {
        WireError::Closed => Error::other("the zygote exited"),
        WireError::WouldBlock => Error::new(Repr::Timeout {
            what: "waiting for the zygote to fork the child".to_string(),
            after: timeout,
        }),
        WireError::Io(e) => Error::io("cannot talk to the zygote", e),
    }
}

impl Zygote {
    /// Kills and reaps the zygote now, whoever else holds it (the next spawn starts another).
    pub(crate) fn stop(&self) {
        self.inner.stop();
    }
}

fn start_one() -> Result<JoinHandle<()>> {
    Builder::new()
        .name("multiproc-zygote")
        .spawn_entry::<(), ()>(ZYGOTE_KEY, ())
}

/// Refuses what `set_var` in the child would panic on (`Command` refuses them too): an empty
/// name, `=` or NUL in a name, NUL in a value.
fn check_envs(envs: &[(OsString, Option<OsString>)]) -> Result<()> {
    for (k, v) in envs {
        let bad_key = k.is_empty() || k.as_bytes().iter().any(|b| *b == b'=' || *b == 0);
        let bad_value = v.as_ref().is_some_and(|v| v.as_bytes().contains(&0));
        if bad_key || bad_value {
            return Err(Error::other(format!(
                "cannot set the environment variable {k:?}={v:?} in a child: names must be \
                 non-empty without `=` or NUL, values without NUL"
            )));
        }
    }
    Ok(())
}

/// The child's ends of its standard streams, appended to `fds` (in the order
/// [`ForkRequest`] says), which of the three it gets, and this process's ends of its pipes.
fn child_streams(
    builder: &Builder,
    fds: &mut Vec<OwnedFd>,
) -> Result<([bool; 3], [Option<OwnedFd>; 3])> {
    let mut stdio = [false; 3];
    let mut ours: [Option<OwnedFd>; 3] = [None, None, None];
    let streams = Stdio::streams(builder.stdin, builder.stdout, builder.stderr);
    for (i, stream) in streams.into_iter().enumerate() {
        let theirs = match stream {
            Stream::Inherit => continue,
            Stream::Null => dev_null()?,
            Stream::Piped => {
                let (read, write) = sys::pipe(false)
                    .map_err(|e| Error::io("cannot create a pipe for the child", e))?;
                // Stdin is the child's read end; output streams its write end.
                let (mine, theirs) = if i == 0 { (write, read) } else { (read, write) };
                ours[i] = Some(mine);
                theirs
            }
        };
        stdio[i] = true;
        fds.push(theirs);
    }
    Ok((stdio, ours))
}

fn dev_null() -> Result<OwnedFd> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map(OwnedFd::from)
        .map_err(|e| Error::io("cannot open /dev/null", e))
}
