//! [`Builder`]: what a child is started with (name, environment, directory, streams,
//! limits, zygote), and the calls that spawn it.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{JoinHandle, Process, ProcessFn, Stdio, Zygote};
use crate::error::Result;
use crate::proto::Limits;
use crate::registry;

/// Configures a child process before spawning it, like `std::thread::Builder`.
///
/// # Examples
///
/// ```no_run
/// #[multiproc::process]
/// fn greet() -> String {
///     std::env::var("GREETING").unwrap_or_default()
/// }
///
/// #[multiproc::main]
/// fn main() -> multiproc::Result<()> {
///     let child = multiproc::Builder::new()
///         .name("greeter")
///         .env("GREETING", "hello")
///         .spawn_fn(greet, ())?;
///     assert_eq!(child.name(), "greeter");
///     assert_eq!(child.join()?, "hello");
///     Ok(())
/// }
/// ```
#[derive(Debug, Clone, Default)]
pub struct Builder {
    pub(super) name: Option<String>,
    pub(super) envs: Vec<(OsString, Option<OsString>)>,
    pub(super) current_dir: Option<PathBuf>,
    pub(super) stdin: Stdio,
    pub(super) stdout: Stdio,
    pub(super) stderr: Stdio,
    pub(super) start_timeout: Option<Duration>,
    pub(super) limits: Limits,
    pub(super) zygote: Option<Zygote>,
    #[cfg(feature = "tracing")]
    pub(super) forward_tracing: bool,
}

impl Builder {
    /// A builder with the defaults: named after the entry point, inherited environment,
    /// working directory and standard streams. [`Builder`]'s example shows it in use.
    pub fn new() -> Self {
        Builder::default()
    }

    /// Forks the child from `zygote` instead of re-executing this program: a spawn then
    /// costs a fork of a small process (see [`Zygote`]). The child starts from the
    /// environment and working directory the zygote started with, plus this builder's
    /// [`env`](Builder::env) and [`current_dir`](Builder::current_dir).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// #[multiproc::process]
    /// fn mode() -> String {
    ///     std::env::var("MODE").unwrap_or_default()
    /// }
    ///
    /// fn main() -> multiproc::Result<()> {
    ///     multiproc::init();
    ///     let zygote = multiproc::Zygote::start()?;
    ///     let child = multiproc::Builder::new()
    ///         .zygote(&zygote)
    ///         .env("MODE", "fast") // on top of the environment the zygote started with
    ///         .spawn_fn(mode, ())?;
    ///     assert_eq!(child.join()?, "fast");
    ///     Ok(())
    /// }
    /// ```
    pub fn zygote(mut self, zygote: &Zygote) -> Self {
        self.zygote = Some(zygote.clone());
        self
    }

    /// The zygote children are forked from, if any.
    pub(crate) fn zygote_ref(&self) -> Option<&Zygote> {
        self.zygote.as_ref()
    }

    /// Forwards the child's own `tracing` events to this process's subscriber (feature
    /// `tracing`; default off): the child gets a subscriber that sends each event, at this
    /// process's most verbose level or less, over a channel, and a thread here re-emits them
    /// with target `multiproc::child`, inside a span `child` with the child's name and pid.
    /// A subscriber the child installed before the hook wins.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// #[multiproc::process]
    /// fn work() {
    ///     tracing::info!(step = 1, "working");
    /// }
    ///
    /// fn main() -> multiproc::Result<()> {
    ///     multiproc::init();
    ///     // with a subscriber installed here, "working" shows up in it
    ///     multiproc::Builder::new()
    ///         .forward_tracing(true)
    ///         .spawn_fn(work, ())?
    ///         .join()
    /// }
    /// ```
    #[cfg(feature = "tracing")]
    pub fn forward_tracing(mut self, on: bool) -> Self {
        self.forward_tracing = on;
        self
    }

    /// The environment entry that tells a child whether a tracing channel precedes its state.
    pub(super) fn trace_env(&self) -> (OsString, Option<OsString>) {
        #[cfg(feature = "tracing")]
        if self.forward_tracing {
            let level = crate::trace::parent_max_level().to_string();
            return (crate::proto::ENV_TRACE.into(), Some(level.into()));
        }
        (crate::proto::ENV_TRACE.into(), None)
    }

    /// Names the child (shown in errors, by [`JoinHandle::name`] and to the child by
    /// [`current`](crate::current)); the default is the entry point's name numbered by this
    /// process, such as `clock-1` or `ClockProcess-2`.
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
    ///     let child = multiproc::Builder::new().name("db-writer").spawn_fn(own_name, ())?;
    ///     assert_eq!(child.name(), "db-writer");
    ///     assert_eq!(child.join()?, "db-writer"); // the child knows it too
    ///     Ok(())
    /// }
    /// ```
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Sets an environment variable in the child.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// #[multiproc::process]
    /// fn log_level() -> Option<String> {
    ///     std::env::var("LOG_LEVEL").ok()
    /// }
    ///
    /// #[multiproc::main]
    /// fn main() -> multiproc::Result<()> {
    ///     let child = multiproc::Builder::new()
    ///         .env("LOG_LEVEL", "debug")
    ///         .spawn_fn(log_level, ())?;
    ///     assert_eq!(child.join()?.as_deref(), Some("debug"));
    ///     Ok(())
    /// }
    /// ```
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.envs
            .push((key.as_ref().to_owned(), Some(value.as_ref().to_owned())));
        self
    }

    /// Removes an environment variable from the child's environment.
    ///
    /// # Examples
    ///
    /// ```
    /// multiproc::Builder::new().env_remove("SECRET_TOKEN");
    /// ```
    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Self {
        self.envs.push((key.as_ref().to_owned(), None));
        self
    }

    /// Sets the child's working directory.
    ///
    /// # Examples
    ///
    /// ```
    /// multiproc::Builder::new().current_dir("/tmp");
    /// ```
    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.current_dir = Some(dir.as_ref().to_owned());
        self
    }

    /// Where the child's standard input comes from (default: inherited).
    ///
    /// # Examples
    ///
    /// ```
    /// multiproc::Builder::new().stdin(multiproc::Stdio::Null);
    /// ```
    pub fn stdin(mut self, stdio: Stdio) -> Self {
        self.stdin = stdio;
        self
    }

    /// Where the child's standard output goes (default: inherited).
    ///
    /// # Examples
    ///
    /// ```
    /// multiproc::Builder::new().stdout(multiproc::Stdio::Prefixed); // "[name pid] line"
    /// ```
    pub fn stdout(mut self, stdio: Stdio) -> Self {
        self.stdout = stdio;
        self
    }

    /// Where the child's standard error goes (default: inherited).
    ///
    /// # Examples
    ///
    /// ```
    /// multiproc::Builder::new().stderr(multiproc::Stdio::Null);
    /// ```
    pub fn stderr(mut self, stdio: Stdio) -> Self {
        self.stderr = stdio;
        self
    }

    /// Limits the child's address space to `bytes` (`RLIMIT_AS`): an allocation beyond it
    /// fails, the child aborts, and joining it reports
    /// [`ErrorKind::MemoryLimit`](crate::ErrorKind::MemoryLimit). The address space counts
    /// reservations, not only memory in use (the binary, thread stacks, allocator arenas): a
    /// Rust program needs some tens of MiB of it before doing anything.
    ///
    /// # Examples
    ///
    /// ```
    /// multiproc::Builder::new().memory_limit(512 << 20);
    /// ```
    pub fn memory_limit(mut self, bytes: u64) -> Self {
        self.limits.memory = Some(bytes);
        self
    }

    /// Limits the CPU time the child may use (`RLIMIT_CPU`, rounded up to whole seconds):
    /// past it the kernel stops the child, and joining it reports
    /// [`ErrorKind::CpuLimit`](crate::ErrorKind::CpuLimit).
    ///
    /// # Examples
    ///
    /// ```
    /// multiproc::Builder::new().cpu_time_limit(std::time::Duration::from_secs(10));
    /// ```
    pub fn cpu_time_limit(mut self, limit: Duration) -> Self {
        let seconds = limit
            .as_secs()
            .saturating_add(u64::from(limit.subsec_nanos() > 0));
        self.limits.cpu_seconds = Some(seconds.max(1));
        self
    }

    /// Limits how many files the child may have open at once (`RLIMIT_NOFILE`): past it,
    /// opening one fails with `EMFILE` in the child.
    ///
    /// # Examples
    ///
    /// ```
    /// multiproc::Builder::new().open_files_limit(64);
    /// ```
    pub fn open_files_limit(mut self, files: u64) -> Self {
        self.limits.open_files = Some(files);
        self
    }

    /// How long the child may take from its start to its entry point before it is killed and
    /// spawning fails with [`ErrorKind::Timeout`](crate::ErrorKind::Timeout) (default 30 s).
    /// With a [`zygote`](Builder::zygote), it also bounds the wait for the zygote to fork the
    /// child (never more than 10 s): a zygote that does not answer in time is killed, the spawn
    /// fails, and the next one starts a new zygote.
    ///
    /// # Examples
    ///
    /// ```
    /// multiproc::Builder::new().start_timeout(std::time::Duration::from_secs(5));
    /// ```
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = Some(timeout);
        self
    }

    /// Spawns a `#[multiproc::process]` value in a new process.
    ///
    /// Returns once the child runs and `process` has been sent to it.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use serde::{Deserialize, Serialize};
    ///
    /// #[derive(Serialize, Deserialize)]
    /// struct Square(u64);
    ///
    /// #[multiproc::process]
    /// impl Square {
    ///     fn run(self) -> u64 {
    ///         self.0 * self.0
    ///     }
    /// }
    ///
    /// #[multiproc::main]
    /// fn main() -> multiproc::Result<()> {
    ///     let child = multiproc::Builder::new().name("squarer").spawn(Square(12))?;
    ///     assert_eq!(child.name(), "squarer");
    ///     assert_eq!(child.join()?, 144);
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// - [`ErrorKind::NotInitialized`](crate::ErrorKind::NotInitialized): this process's `main`
    ///   lacks the multiproc hook (no process is started);
    /// - [`ErrorKind::NoEntryHook`](crate::ErrorKind::NoEntryHook): the child exited before
    ///   reaching its entry point;
    /// - [`ErrorKind::BuildMismatch`](crate::ErrorKind::BuildMismatch),
    ///   [`ErrorKind::EntryNotFound`](crate::ErrorKind::EntryNotFound);
    /// - [`ErrorKind::Serialize`](crate::ErrorKind::Serialize): `process` could not be encoded;
    /// - [`ErrorKind::Timeout`](crate::ErrorKind::Timeout): see
    ///   [`start_timeout`](Builder::start_timeout);
    /// - [`ErrorKind::Io`](crate::ErrorKind::Io): the executable could not be started.
    pub fn spawn<P>(&self, process: P) -> Result<JoinHandle<P::Output>>
    where
        P: Process + Serialize + DeserializeOwned,
        P::Output: Serialize + DeserializeOwned,
    {
        let key = registry::resolve_key(P::__KEY)?;
        self.spawn_entry(key, process)
    }

    /// Spawns a `#[multiproc::process]` function with its arguments in a new process.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// #[multiproc::process]
    /// fn add(a: u32, b: u32) -> u32 {
    ///     a + b
    /// }
    ///
    /// #[multiproc::main]
    /// fn main() -> multiproc::Result<()> {
    ///     // One builder, any number of children.
    ///     let quiet = multiproc::Builder::new().stdout(multiproc::Stdio::Null);
    ///     let one = quiet.spawn_fn(add, (1, 2))?;
    ///     let two = quiet.spawn_fn(add, (3, 4))?;
    ///     assert_eq!(one.join()? + two.join()?, 10);
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Builder::spawn`].
    pub fn spawn_fn<F, A>(&self, f: F, args: A) -> Result<JoinHandle<F::Output>>
    where
        F: ProcessFn<A>,
        A: Serialize + DeserializeOwned,
        F::Output: Serialize + DeserializeOwned,
    {
        let _ = f;
        let key = registry::resolve_fn::<F, A>()?;
        self.spawn_entry(key, args)
    }
}
