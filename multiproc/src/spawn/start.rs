//! Starting a child, in steps: a bootstrap socket pair, the process (re-executed, or forked
//! by a zygote), its prefixed streams, the hello, then its state.

use std::any::type_name;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::exit::{died_starting, reap, refusal_error};
use super::output::{self, Tail, Target};
use super::{Builder, JoinHandle, Proc, Stdio, spawner};
use crate::error::{Error, Repr, Result, Who};
use crate::hook::{self, Hook};
use crate::ipc::{self, SendError, WireError};
use crate::proto::{
    ENV_BUILD, ENV_ENTRY, ENV_LIMITS, ENV_NAME, ENV_PARENT, ENV_SOCKET, ENV_STDOUT, Hello,
};
use crate::registry;
use crate::sys::{self, Wait};

/// The thread that relays a child's forwarded tracing events, if any.
type Relay = Option<std::thread::JoinHandle<()>>;

impl Builder {
    /// Spawns the entry `key` with `state`: the steps below, each cleaning up the child if it
    /// fails.
    pub(crate) fn spawn_entry<T, R>(&self, key: &'static str, state: T) -> Result<JoinHandle<R>>
    where
        T: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        let expect = Expect {
            state: type_name::<T>(),
            output: Some(type_name::<R>()),
        };
        self.start(key, State::Value(&state), expect)
    }

    /// Spawns the entry `key` with its state already encoded (a cluster node starting a
    /// caller's process: the caller checked the types, by build). The handle's
    /// [`join_encoded_timeout`](JoinHandle::join_encoded_timeout) gives the outcome undecoded.
    #[cfg(feature = "cluster")]
    pub(crate) fn spawn_encoded(&self, key: &'static str, state: &[u8]) -> Result<JoinHandle<()>> {
        let expect = Expect {
            state: registry::find(key).map_or("(an unregistered entry)", |e| (e.state_type)()),
            output: None,
        };
        self.start::<(), ()>(key, State::Encoded(state), expect)
    }

    fn start<T: Serialize, R: Serialize + DeserializeOwned>(
        &self,
        key: &'static str,
        state: State<'_, T>,
        expect: Expect,
    ) -> Result<JoinHandle<R>> {
        let hook = hook::hook().ok_or_else(|| Error::new(Repr::NotInitialized))?;
        let name = self
            .name
            .clone()
            .unwrap_or_else(|| numbered(registry::last_segment(key)));
        let (mine, mut child) = self.start_process(&hook, key, &name)?;
        let mut who = Who {
            name,
            pid: Some(child.id()),
        };
        let tail = self.copy_prefixed(&mut child, &who);
        let timeout = self.start_timeout.unwrap_or(super::DEFAULT_START_TIMEOUT);

        // A zygote's child is this very build (the zygote passed the build check), so its
        // state can go before its hello: one exchange fewer.
        let early = self.zygote.is_some();
        let mut relay = None;
        if early {
            let pid = child.id();
            relay = self.start_or_reap(&mine, &state, &who, pid, &mut child, timeout)?;
        }
        let pid = hello(&mine, &mut child, &who, key, timeout, &expect)?;
        who.pid = Some(pid);
        if !early {
            relay = self.start_or_reap(&mine, &state, &who, pid, &mut child, timeout)?;
        }
        crate::trace::spawned(&who.name, pid, self.zygote.is_some());
        let mut handle = JoinHandle::new(child, who, mine, self.limits);
        handle.stderr_tail = tail;
        handle.relay = relay;
        Ok(handle)
    }

    /// Starts the child's process with the child's end of a new bootstrap socket pair;
    /// returns the parent's end and the process.
    fn start_process(&self, hook: &Hook, key: &str, name: &str) -> Result<(OwnedFd, Proc)> {
        let mut lost_zygote = false;
        loop {
            let (mine, theirs) = sys::socketpair()
                .and_then(|(mine, theirs)| Ok((mine, sys::above_stdio(theirs)?)))
                .map_err(|e| Error::io("cannot create the bootstrap socket", e))?;
            let Some(zygote) = &self.zygote else {
                let (spawn, parked) = self.command(hook, key, name, theirs.as_raw_fd())?;
                let child = spawner::spawn(spawn)
                    .map_err(|e| Error::io(format!("cannot start child `{name}`"), e))?;
                drop(parked);
                // Only the child holds its end now: its death is end-of-file on ours.
                drop(theirs);
                return Ok((mine, child));
            };
            match zygote.fork(self, key, name, theirs, mine.as_fd())? {
                Some(child) => return Ok((mine, child)),
                // The zygote died before it forked: once more, from a new one.
                None if !lost_zygote => lost_zygote = true,
                None => {
                    return Err(Error::other(
                        "the zygote died twice in a row before forking the child",
                    ));
                }
            }
        }
    }

    /// Starts copying the child's [`Stdio::Prefixed`] streams; the tail of its stderr.
    fn copy_prefixed(&self, child: &mut Proc, who: &Who) -> Option<Tail> {
        let prefix = format!("[{} {}] ", who.name, child.id());
        if self.stdout == Stdio::Prefixed
            && let Some(out) = child.stdout.take()
        {
            let _ = output::copy_prefixed(out, prefix.clone(), Target::Stdout);
        }
        match (self.stderr, child.stderr.take()) {
            (Stdio::Prefixed, Some(err)) => {
                Some(output::copy_prefixed(err, prefix, Target::Stderr))
            }
            (_, err) => {
                child.stderr = err;
                None
            }
        }
    }

    /// Sends a started child what it needs before its entry runs: the tracing channel (if
    /// forwarded) and its state. Returns the thread relaying its tracing events.
    #[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
    fn send_start<T: Serialize>(
        &self,
        mine: &OwnedFd,
        state: &State<'_, T>,
        who: &Who,
        pid: u32,
        wait: Wait,
    ) -> std::result::Result<Relay, StartError> {
        #[allow(unused_mut)]
        let mut relay = None;
        #[cfg(feature = "tracing")]
        if self.forward_tracing {
            let (tx, rx) = crate::channel::channel().map_err(StartError::Other)?;
            ipc::send_value(mine.as_fd(), &tx, wait).map_err(|e| match e {
                SendError::Wire(e) => StartError::Wire(e),
                SendError::Encode(_) => StartError::Other(Error::other(format!(
                    "cannot send {who} its tracing channel"
                ))),
            })?;
            relay = crate::trace::relay(who.name.clone(), pid, rx);
        }
        match state {
            State::Value(state) => {
                ipc::send_value(mine.as_fd(), *state, wait).map_err(|e| match e {
                    SendError::Wire(e) => StartError::Wire(e),
                    SendError::Encode(message) => StartError::Other(Error::serialize::<T>(message)),
                })?
            }
            #[cfg(feature = "cluster")]
            State::Encoded(bytes) => {
                ipc::send(mine.as_fd(), None, bytes, &[], wait).map_err(StartError::Wire)?
            }
        }
        Ok(relay)
    }

    /// [`send_start`](Self::send_start), killing and reaping the child if it fails.
    fn start_or_reap<T: Serialize>(
        &self,
        mine: &OwnedFd,
        state: &State<'_, T>,
        who: &Who,
        pid: u32,
        child: &mut Proc,
        timeout: Duration,
    ) -> Result<Relay> {
        self.send_start(mine, state, who, pid, Wait::timeout(timeout))
            .map_err(|e| {
                let e = e.into_error(child, who, timeout);
                reap(child);
                e
            })
    }

    /// How to re-run this executable as the child, and the fd numbers reserved for its parked
    /// stdout and its socket (kept open until the child is started).
    fn command(
        &self,
        hook: &Hook,
        key: &str,
        name: &str,
        sock: RawFd,
    ) -> Result<(sys::Spawn, [Option<OwnedFd>; 2])> {
        let exe = hook::current_exe()?;
        let mut argv: Vec<OsString> = vec![
            std::env::args_os()
                .next()
                .unwrap_or_else(|| exe.as_os_str().to_owned()),
        ];
        let mut env: Vec<(OsString, Option<OsString>)> = Vec::new();
        // Where the child gets its socket and parked stdout: with its other descriptors closed
        // (glibc 2.34+), fixed numbers at the bottom; else numbers reserved here, so that
        // they are free there. `held` keeps the reservations until the child started.
        let closing = sys::can_close_from();
        let mut held: [Option<OwnedFd>; 2] = [None, None];
        let mut slot = |i: usize| -> Result<RawFd> {
            if closing {
                return Ok(sys::CHILD_SOCKET + i as RawFd);
            }
            let fd = sys::reserve_fd()
                .map_err(|e| Error::io("cannot reserve a descriptor for the child", e))?;
            Ok(held[i].insert(fd).as_raw_fd())
        };
        let sock_slot = slot(0)?;
        let mut parked = None;
        if let Hook::Test(test) = hook {
            // Re-run this test binary filtered to the one test whose hook dispatches to the
            // entry point (procspawn's trick, without a dummy test). libtest prints a banner
            // before the hook runs: park the real stdout until then.
            argv.extend(
                [
                    test.as_str(),
                    "--exact",
                    // An `#[ignore]`d test run with `--ignored` must reach its hook in the
                    // child too.
                    "--include-ignored",
                    "--nocapture",
                    "--test-threads=1",
                    "-q",
                ]
                .map(OsString::from),
            );
            let fd = slot(1)?;
            env.push((ENV_STDOUT.into(), Some(fd.to_string().into())));
            parked = Some(fd);
        } else {
            // A stale value inherited from a test-mode ancestor would redirect stdout.
            env.push((ENV_STDOUT.into(), None));
        }
        env.extend(self.envs.iter().cloned());
        env.push(self.trace_env());
        env.push((ENV_LIMITS.into(), self.limits.to_env().map(OsString::from)));
        for (k, v) in [
            (ENV_SOCKET, sock_slot.to_string()),
            (ENV_ENTRY, key.to_string()),
            (ENV_NAME, name.to_string()),
            (ENV_PARENT, std::process::id().to_string()),
            (ENV_BUILD, hook::fingerprint().to_string()),
        ] {
            env.push((k.into(), Some(v.into())));
        }
        let spawn = sys::Spawn {
            exe: exe.to_path_buf(),
            argv,
            env,
            cwd: self.current_dir.clone(),
            streams: Stdio::streams(self.stdin, self.stdout, self.stderr),
            inherit: (sock, sock_slot),
            park_stdout: parked,
            close_from: closing.then_some(sys::CHILD_SOCKET + 2),
        };
        Ok((spawn, held))
    }
}

/// Receives the child's hello and checks that it runs `key` from `T` to `R`; returns its pid.
/// Kills and reaps the child on any failure.
fn hello(
    mine: &OwnedFd,
    child: &mut Proc,
    who: &Who,
    key: &str,
    timeout: Duration,
    expect: &Expect,
) -> Result<u32> {
    let first = match ipc::recv(mine.as_fd(), Wait::timeout(timeout)) {
        Ok(frame) => ipc::decode::<Hello>(frame).map_err(|message| {
            Error::other(format!(
                "{who} sent an unreadable start-up message: {message}"
            ))
        }),
        Err(WireError::Closed) => Err(died_starting(child, who)),
        Err(WireError::WouldBlock) => Err(Error::new(Repr::Timeout {
            what: format!("starting {who}"),
            after: timeout,
        })),
        Err(WireError::Io(e)) => Err(Error::io(format!("cannot hear from {who}"), e)),
    };
    let checked = first.and_then(|hello| match hello {
        Hello::Ready {
            pid,
            state_type,
            output_type,
        } => {
            if state_type == expect.state && expect.output.is_none_or(|o| o == output_type) {
                return Ok(pid);
            }
            Err(Error::new(Repr::BuildMismatch {
                detail: format!(
                    "entry `{key}` takes `{state_type}` and returns `{output_type}` in the \
                     child, `{}` and `{}` in the parent",
                    expect.state,
                    expect.output.unwrap_or(&output_type)
                ),
                who: who.clone(),
            }))
        }
        Hello::Refused(refusal) => Err(refusal_error(refusal, who.clone())),
    });
    checked.inspect_err(|_| reap(child))
}

/// `base-N` for the N-th child this process starts under `base` without a name of its own
/// (`ClockProcess-1`, `ClockProcess-2`; Python numbers its `Process-N` so).
fn numbered(base: &str) -> String {
    static STARTED: std::sync::Mutex<BTreeMap<String, u64>> =
        std::sync::Mutex::new(BTreeMap::new());
    let mut started = STARTED.lock().unwrap_or_else(|e| e.into_inner());
    let n = started.entry(base.to_string()).or_insert(0);
    *n += 1;
    format!("{base}-{n}")
}

/// A child's state as the parent has it.
enum State<'a, T> {
    Value(&'a T),
    /// Encoded elsewhere (see `Builder::spawn_encoded`).
    #[cfg(feature = "cluster")]
    Encoded(&'a [u8]),
}

/// The types the child's hello must name; `output: None` takes the child's word for it.
struct Expect {
    state: &'static str,
    output: Option<&'static str>,
}

/// Why a start message could not be sent.
enum StartError {
    Wire(WireError),
    Other(Error),
}

impl StartError {
    /// The error the caller sees.
    fn into_error(self, child: &mut Proc, who: &Who, timeout: Duration) -> Error {
        match self {
            StartError::Other(e) => e,
            StartError::Wire(WireError::Closed) => died_starting(child, who),
            StartError::Wire(WireError::WouldBlock) => Error::new(Repr::Timeout {
                what: format!("sending {who} its state"),
                after: timeout,
            }),
            StartError::Wire(WireError::Io(e)) => {
                Error::io(format!("cannot send {who} its state"), e)
            }
        }
    }
}
