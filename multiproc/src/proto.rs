//! The parent⇄child contract, in one place: what a parent puts in a child's environment, the
//! messages on a child's bootstrap socket, the exit codes a child ends with, and what a zygote
//! is asked.
//!
//! The bootstrap, over one socket pair per child (see `ipc::frame`):
//! 1. the parent creates the pair and re-executes itself (or asks a zygote to fork, see
//!    [`ZygoteRequest`]); the child inherits one end (the only descriptor of the parent it
//!    inherits), and finds its number, the entry key, the parent's pid and the build
//!    fingerprint in the environment ([`ENV_SOCKET`] and the others);
//! 2. the child sends [`Hello::Ready`] (or [`Hello::Refused`] when it cannot run that entry);
//! 3. the parent sends the state `T` (after the child's tracing channel, when forwarded);
//! 4. the child runs the entry and sends an [`Outcome`]: the return value or the panic;
//! 5. meanwhile the parent may send [`Control`] messages.
//!
//! The parent keeps its end open until it has reaped the child: the child takes end-of-file
//! on its end for its parent's death.

use std::os::fd::OwnedFd;

use serde::{Deserialize, Serialize};

use crate::error::{Error, RemotePanic, Repr, Who};
use crate::sys;

/// The number of the child's end of its bootstrap socket.
pub(crate) const ENV_SOCKET: &str = "__MULTIPROC_SOCKET";
/// The entry point to run: a registry key.
pub(crate) const ENV_ENTRY: &str = "__MULTIPROC_ENTRY";
/// The parent's pid: a child whose parent is another process was not started by multiproc.
pub(crate) const ENV_PARENT: &str = "__MULTIPROC_PARENT";
/// The child's name, for [`crate::current`].
pub(crate) const ENV_NAME: &str = "__MULTIPROC_NAME";
/// The parent's build fingerprint (see `hook::fingerprint`).
pub(crate) const ENV_BUILD: &str = "__MULTIPROC_BUILD";
/// Where a test child's real stdout is parked until its hook (see `sys::unpark_stdout`).
pub(crate) const ENV_STDOUT: &str = "__MULTIPROC_STDOUT";
/// The child's resource limits (see [`Limits::to_env`]), applied at its hook.
pub(crate) const ENV_LIMITS: &str = "__MULTIPROC_LIMITS";
/// Set (to the parent's most verbose tracing level) when a tracing channel precedes the state.
pub(crate) const ENV_TRACE: &str = "__MULTIPROC_TRACE";

/// Exit code of a child whose bootstrap failed before it could report to its parent.
pub(crate) const EXIT_BOOTSTRAP: i32 = 109;
/// Exit code of a child that noticed its parent is gone.
pub(crate) const EXIT_ORPHANED: i32 = 110;
/// Exit code of a child whose entry panicked (the panic itself was sent to the parent).
pub(crate) const EXIT_PANICKED: i32 = 101;

/// The entry key that makes a child a zygote.
pub(crate) const ZYGOTE_KEY: &str = "multiproc::__zygote";

/// The child's end of its bootstrap: what a child needs to run its entry, built by the hook
/// from the environment (or by a zygote from a request).
#[doc(hidden)]
pub struct ChildContext {
    pub(crate) sock: OwnedFd,
    pub(crate) entry: String,
    pub(crate) build: String,
}

/// The child's first message.
#[derive(Serialize, Deserialize)]
pub(crate) enum Hello {
    Ready {
        pid: u32,
        state_type: String,
        output_type: String,
    },
    Refused(Refusal),
}

/// Why a child could not run the entry it was asked for.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Refusal {
    EntryNotFound {
        key: String,
        known: Vec<String>,
    },
    DuplicateEntry {
        key: String,
        count: usize,
    },
    BuildMismatch {
        detail: String,
    },
    /// A zygote that found other threads in its process: forking it could deadlock.
    Unforkable {
        threads: usize,
    },
}

/// How the entry ended (also each task of a pool worker).
#[derive(Serialize, Deserialize)]
pub(crate) enum Outcome<R> {
    Returned(R),
    Panicked(RemotePanic),
    OutputNotSerializable { type_name: String, message: String },
    StateNotDeserializable { type_name: String, message: String },
}

/// The encoded outcome that says a result carried descriptors.
#[cfg(feature = "cluster")]
pub(crate) fn not_portable() -> Vec<u8> {
    let failure = Outcome::<()>::OutputNotSerializable {
        type_name: String::new(),
        message: "the result carries file descriptors (channel ends, local queues, Bytes or \
                  SharedMemory), which cannot cross machines"
            .to_string(),
    };
    crate::ipc::with_encoded(&failure, |bytes, _| bytes.to_vec()).unwrap_or_default()
}

/// Parent → child messages on the bootstrap socket, after the state.
#[derive(Serialize, Deserialize)]
pub(crate) enum Control {
    /// Finish up and return: see `shutdown_requested`.
    Shutdown,
}

/// What a parent asks of its zygote. `Stop` is variant 0 so that the shutdown request every
/// child may receive ([`Control::Shutdown`], also variant 0) reads as "stop".
#[derive(Serialize, Deserialize)]
pub(crate) enum ZygoteRequest {
    Stop,
    Fork(ForkRequest),
}

/// One child for a zygote to fork. Descriptors come with the message, in this order: the
/// child's end of its bootstrap socket, then its stdin, stdout and stderr where `stdio` says
/// so.
#[derive(Serialize, Deserialize)]
pub(crate) struct ForkRequest {
    pub(crate) entry: String,
    pub(crate) envs: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    pub(crate) current_dir: Option<Vec<u8>>,
    pub(crate) limits: Limits,
    pub(crate) stdio: [bool; 3],
}

/// A zygote's answer to a [`ForkRequest`].
#[derive(Serialize, Deserialize)]
pub(crate) enum ZygoteAnswer {
    Forked(u32),
    Failed(String),
}

/// Resource limits applied to a child before it runs (`setrlimit(2)`), and remembered to
/// name the failure when it hits one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Limits {
    /// `RLIMIT_AS`, in bytes.
    pub(crate) memory: Option<u64>,
    /// `RLIMIT_CPU`, in seconds (rounded up).
    pub(crate) cpu_seconds: Option<u64>,
    /// `RLIMIT_NOFILE`.
    pub(crate) open_files: Option<u64>,
}

impl Limits {
    /// The limits as the child reads them from [`ENV_LIMITS`]: `memory:cpu:files`, each
    /// empty when unset; `None` when there are none.
    pub(crate) fn to_env(self) -> Option<String> {
        if self == Limits::default() {
            return None;
        }
        let field = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_default();
        Some(format!(
            "{}:{}:{}",
            field(self.memory),
            field(self.cpu_seconds),
            field(self.open_files)
        ))
    }

    /// The inverse of [`to_env`](Limits::to_env); `None` for a malformed value.
    pub(crate) fn from_env(value: &str) -> Option<Limits> {
        let mut parts = value.split(':');
        let mut field = || -> Option<Option<u64>> {
            match parts.next()? {
                "" => Some(None),
                v => v.parse().ok().map(Some),
            }
        };
        let limits = Limits {
            memory: field()?,
            cpu_seconds: field()?,
            open_files: field()?,
        };
        parts.next().is_none().then_some(limits)
    }

    /// Sets them on this process (async-signal-safe, no allocation).
    pub(crate) fn apply(self) -> std::io::Result<()> {
        sys::set_rlimits(self.memory, self.cpu_seconds, self.open_files)
    }

    /// The error for a child that ended with `signal`, when a limit explains it.
    pub(crate) fn explain(&self, who: &Who, signal: i32) -> Option<Error> {
        if signal == sys::SIGXCPU
            && let Some(seconds) = self.cpu_seconds
        {
            return Some(Error::new(Repr::CpuLimit {
                who: who.clone(),
                seconds,
            }));
        }
        // Rust aborts when an allocation fails; under an address-space limit that is by far
        // the likeliest cause.
        if signal == sys::SIGABRT
            && let Some(bytes) = self.memory
        {
            return Some(Error::new(Repr::MemoryLimit {
                who: who.clone(),
                bytes,
            }));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_round_trip_through_the_environment() {
        assert_eq!(Limits::default().to_env(), None);
        let cases = [
            Limits {
                memory: Some(1 << 30),
                cpu_seconds: None,
                open_files: Some(64),
            },
            Limits {
                memory: None,
                cpu_seconds: Some(3),
                open_files: None,
            },
            Limits {
                memory: Some(0),
                cpu_seconds: Some(u64::MAX),
                open_files: Some(1),
            },
        ];
        for limits in cases {
            let env = limits.to_env().expect("some limit is set");
            assert_eq!(Limits::from_env(&env), Some(limits), "{env}");
        }
        assert_eq!(Limits::from_env("1:2:3").unwrap().open_files, Some(3));
        assert_eq!(Limits::from_env("::"), Some(Limits::default()));
        for bad in ["", "1:2", "1:2:3:4", "x::", "-1::", "1:2:3:"] {
            assert_eq!(Limits::from_env(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_limit_explains_only_its_own_signal() {
        let who = Who {
            name: "w".into(),
            pid: Some(1),
        };
        let limits = Limits {
            memory: Some(1 << 20),
            cpu_seconds: Some(1),
            open_files: None,
        };
        let kind = |signal| limits.explain(&who, signal).map(|e| e.kind());
        assert_eq!(kind(sys::SIGXCPU), Some(crate::ErrorKind::CpuLimit));
        assert_eq!(kind(sys::SIGABRT), Some(crate::ErrorKind::MemoryLimit));
        assert_eq!(kind(sys::SIGKILL), None);
        assert!(Limits::default().explain(&who, sys::SIGXCPU).is_none());
    }

    #[test]
    fn zygote_stop_and_child_shutdown_share_variant_zero() {
        let control = postcard::to_allocvec(&Control::Shutdown).unwrap();
        let stop = postcard::to_allocvec(&ZygoteRequest::Stop).unwrap();
        assert_eq!(control, stop);
        assert!(matches!(
            postcard::from_bytes::<ZygoteRequest>(&control),
            Ok(ZygoteRequest::Stop)
        ));
    }
}
