//! [`PoolBuilder`]: a pool's size, name, initializer, task limits and chunking, and a
//! [`spawn::Builder`](crate::Builder) for how each worker process starts.

use std::fmt;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::scheduler::{self, Config, Encoded};
use super::{Pool, encode};
use crate::error::Result;
use crate::registry;
use crate::spawn::{Builder, ProcessFn, Stdio, Zygote};

/// Configures a [`Pool`]; see [`Pool::builder`].
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
///
/// #[multiproc::process]
/// fn warm_up() {}
///
/// #[multiproc::main]
/// fn main() -> multiproc::Result<()> {
///     let pool = multiproc::Pool::builder()
///         .workers(2)
///         .name("crunch")
///         .initializer(warm_up, ())
///         .max_tasks_per_child(1_000)
///         .timeout(Duration::from_secs(30))
///         .chunksize(16)
///         .build()?;
///     # drop(pool);
///     Ok(())
/// }
/// ```
#[must_use = "a builder does nothing until `build` is called"]
pub struct PoolBuilder {
    workers: usize,
    name: Option<String>,
    initializer: Option<Result<Encoded>>,
    max_tasks: Option<u64>,
    timeout: Option<Duration>,
    chunksize: Option<usize>,
    /// How each worker process starts: streams and limits (its name is the pool's, numbered).
    process: Builder,
    zygote: bool,
}

impl PoolBuilder {
    /// Where the workers' standard output goes (default: inherited); with
    /// [`Stdio::Prefixed`] each line shows the worker's name and pid.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # #[multiproc::main]
    /// # fn main() -> multiproc::Result<()> {
    /// let pool = multiproc::Pool::builder()
    ///     .stdout(multiproc::Stdio::Prefixed)
    ///     .stderr(multiproc::Stdio::Prefixed)
    ///     .build()?;
    /// # drop(pool);
    /// # Ok(())
    /// # }
    /// ```
    pub fn stdout(mut self, stdio: Stdio) -> Self {
        self.process = self.process.stdout(stdio);
        self
    }

    /// Where the workers' standard error goes (default: inherited); with
    /// [`Stdio::Prefixed`], the error of a task whose worker crashed
    /// also carries the last lines the worker wrote there.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// #[multiproc::process]
    /// fn give_up() {
    ///     eprintln!("out of coffee");
    ///     std::process::exit(1);
    /// }
    ///
    /// #[multiproc::main]
    /// fn main() -> multiproc::Result<()> {
    ///     let pool = multiproc::Pool::builder()
    ///         .workers(1)
    ///         .stderr(multiproc::Stdio::Prefixed)
    ///         .build()?;
    ///     let err = pool.apply(give_up, ()).unwrap_err();
    ///     assert_eq!(err.stderr_tail().unwrap().last().unwrap(), "out of coffee");
    ///     Ok(())
    /// }
    /// ```
    pub fn stderr(mut self, stdio: Stdio) -> Self {
        self.process = self.process.stderr(stdio);
        self
    }

    /// Starts the workers, and the replacements of workers that die, from a
    /// [`Zygote`] owned by the pool: a fork instead of an exec each (default:
    /// off). Worth it where workers are replaced often (`max_tasks_per_child`, crashing
    /// tasks) or pools are short-lived.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// #[multiproc::process]
    /// fn parse(line: String) -> usize {
    ///     line.len()
    /// }
    ///
    /// #[multiproc::main]
    /// fn main() -> multiproc::Result<()> {
    ///     let pool = multiproc::Pool::builder()
    ///         .zygote(true)
    ///         .max_tasks_per_child(1)
    ///         .build()?;
    ///     let lines = vec!["a".to_string(), "bc".to_string()];
    ///     assert_eq!(pool.map(parse, lines)?, [1, 2]);
    ///     Ok(())
    /// }
    /// ```
    pub fn zygote(mut self, on: bool) -> Self {
        self.zygote = on;
        self
    }

    /// Forwards the workers' `tracing` events, and so those of the tasks they run, to this
    /// process's subscriber, each inside a span naming its worker, as
    /// [`Builder::forward_tracing`](crate::Builder::forward_tracing) does for one child (feature
    /// `tracing`). A worker's last events are out once the pool has ended it.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// #[multiproc::process]
    /// fn work(n: u32) -> u32 {
    ///     tracing::info!(n, "working");
    ///     n
    /// }
    ///
    /// #[multiproc::main]
    /// fn main() -> multiproc::Result<()> {
    ///     // with a subscriber installed here, each "working" shows up in it
    ///     let pool = multiproc::Pool::builder().forward_tracing(true).build()?;
    ///     assert_eq!(pool.map(work, [1, 2])?, [1, 2]);
    ///     Ok(())
    /// }
    /// ```
    #[cfg(feature = "tracing")]
    pub fn forward_tracing(mut self, on: bool) -> Self {
        self.process = self.process.forward_tracing(on);
        self
    }

    /// Limits each worker's address space (see [`Builder::memory_limit`](crate::Builder::memory_limit)): a task that
    /// allocates past it fails with [`ErrorKind::MemoryLimit`](crate::ErrorKind::MemoryLimit)
    /// and its worker is replaced.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # #[multiproc::main]
    /// # fn main() -> multiproc::Result<()> {
    /// let pool = multiproc::Pool::builder().memory_limit(1 << 30).build()?;
    /// # drop(pool);
    /// # Ok(())
    /// # }
    /// ```
    pub fn memory_limit(mut self, bytes: u64) -> Self {
        self.process = self.process.memory_limit(bytes);
        self
    }

    /// Limits the CPU time of each worker over its whole life (see
    /// [`Builder::cpu_time_limit`](crate::Builder::cpu_time_limit)); combine with
    /// [`max_tasks_per_child`](PoolBuilder::max_tasks_per_child). For a limit per task, see
    /// [`timeout`](PoolBuilder::timeout).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # #[multiproc::main]
    /// # fn main() -> multiproc::Result<()> {
    /// let pool = multiproc::Pool::builder()
    ///     .cpu_time_limit(std::time::Duration::from_secs(60))
    ///     .build()?;
    /// # drop(pool);
    /// # Ok(())
    /// # }
    /// ```
    pub fn cpu_time_limit(mut self, limit: Duration) -> Self {
        self.process = self.process.cpu_time_limit(limit);
        self
    }

    /// Limits the open files of each worker (see
    /// [`Builder::open_files_limit`](crate::Builder::open_files_limit)).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// #[multiproc::process]
    /// fn open_many(n: usize) -> usize {
    ///     (0..n).filter_map(|_| std::fs::File::open("/dev/null").ok()).count()
    /// }
    ///
    /// #[multiproc::main]
    /// fn main() -> multiproc::Result<()> {
    ///     let pool = multiproc::Pool::builder().open_files_limit(64).build()?;
    ///     assert!(pool.apply(open_many, (100,))? < 64);
    ///     Ok(())
    /// }
    /// ```
    pub fn open_files_limit(mut self, files: u64) -> Self {
        self.process = self.process.open_files_limit(files);
        self
    }

    /// The number of worker processes; 0 (the default) means the machine's available
    /// parallelism.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # #[multiproc::main]
    /// # fn main() -> multiproc::Result<()> {
    /// let pool = multiproc::Pool::builder().workers(3).build()?;
    /// assert_eq!(pool.workers(), 3);
    /// # Ok(())
    /// # }
    /// ```
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }

    /// The workers' name: they are called `name-0`, `name-1`, ... in errors (default `pool`).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// #[multiproc::process]
    /// fn fail() {
    ///     panic!("no");
    /// }
    ///
    /// #[multiproc::main]
    /// fn main() -> multiproc::Result<()> {
    ///     let pool = multiproc::Pool::builder().workers(1).name("crunch").build()?;
    ///     let err = pool.apply(fail, ()).unwrap_err();
    ///     assert!(err.to_string().contains("`crunch-0`")); // child `crunch-0` (pid ..) panicked
    ///     Ok(())
    /// }
    /// ```
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// A `#[multiproc::process]` function each worker runs once, before its first task
    /// (Python's `initializer` and `initargs`). If it panics, the pool is broken: its tasks
    /// fail with the panic's message.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// static GREETING: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ///
    /// #[multiproc::process]
    /// fn set_greeting(greeting: String) {
    ///     GREETING.set(greeting).unwrap();
    /// }
    ///
    /// #[multiproc::process]
    /// fn greet(name: String) -> String {
    ///     format!("{}, {name}", GREETING.get().unwrap())
    /// }
    ///
    /// #[multiproc::main]
    /// fn main() -> multiproc::Result<()> {
    ///     let pool = multiproc::Pool::builder()
    ///         .initializer(set_greeting, ("hello".to_string(),))
    ///         .build()?;
    ///     assert_eq!(pool.apply(greet, ("Ada".to_string(),))?, "hello, Ada");
    ///     Ok(())
    /// }
    /// ```
    pub fn initializer<F, A>(mut self, f: F, args: A) -> Self
    where
        F: ProcessFn<A, Output = ()>,
        A: Serialize + DeserializeOwned,
    {
        let _ = f;
        let encoded = registry::resolve_fn::<F, A>().and_then(|key| {
            encode(&args).map(|(args, fds)| Encoded {
                key: key.to_string(),
                args,
                fds,
            })
        });
        self.initializer = Some(encoded);
        self
    }

    /// Replaces each worker after it has run this many tasks (Python's
    /// `maxtasksperchild`): a remedy for leaks in the code it runs.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// #[multiproc::process]
    /// fn pid() -> u32 {
    ///     std::process::id()
    /// }
    ///
    /// #[multiproc::main]
    /// fn main() -> multiproc::Result<()> {
    ///     let pool = multiproc::Pool::builder().workers(1).max_tasks_per_child(1).build()?;
    ///     let first = pool.apply(pid, ())?;
    ///     assert_ne!(pool.apply(pid, ())?, first); // a new worker for each task
    ///     Ok(())
    /// }
    /// ```
    pub fn max_tasks_per_child(mut self, tasks: u64) -> Self {
        self.max_tasks = Some(tasks.max(1));
        self
    }

    /// The longest a task may run: past it, the task's worker is killed and replaced, and
    /// the task fails with [`ErrorKind::Timeout`](crate::ErrorKind::Timeout).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    ///
    /// #[multiproc::process]
    /// fn nap(ms: u64) -> u64 {
    ///     std::thread::sleep(Duration::from_millis(ms));
    ///     ms
    /// }
    ///
    /// #[multiproc::main]
    /// fn main() -> multiproc::Result<()> {
    ///     let pool = multiproc::Pool::builder()
    ///         .workers(1)
    ///         .timeout(Duration::from_millis(500))
    ///         .build()?;
    ///     assert!(pool.apply(nap, (60_000,)).unwrap_err().is_timeout());
    ///     assert_eq!(pool.apply(nap, (1,))?, 1); // on the worker that replaced it
    ///     Ok(())
    /// }
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// How many tasks of one `map`, `imap` or `starmap` call a worker gets at once. By default
    /// `map` and `starmap` split their input in about four chunks per worker, and `imap` sends
    /// one task at a time. A worker that dies still fails only the task it was running; the
    /// tasks of its chunk it had finished run again elsewhere, because a chunk's outcomes are
    /// sent together (use 1 for tasks whose side effects must not repeat).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// #[multiproc::process]
    /// fn double(x: u32) -> u32 {
    ///     x * 2
    /// }
    ///
    /// #[multiproc::main]
    /// fn main() -> multiproc::Result<()> {
    ///     // many tiny tasks: a hundred per message to a worker
    ///     let pool = multiproc::Pool::builder().chunksize(100).build()?;
    ///     let doubled = pool.map(double, 0..10_000)?;
    ///     assert_eq!(doubled[9_999], 19_998);
    ///     Ok(())
    /// }
    /// ```
    pub fn chunksize(mut self, chunksize: usize) -> Self {
        self.chunksize = Some(chunksize.max(1));
        self
    }

    /// Starts the workers.
    ///
    /// # Examples
    ///
    /// ```
    /// fn not_a_process() {}
    ///
    /// // Fails before any worker starts: the initializer is not a `#[multiproc::process]`.
    /// let err = multiproc::Pool::builder()
    ///     .initializer(not_a_process, ())
    ///     .build()
    ///     .unwrap_err();
    /// assert_eq!(err.kind(), multiproc::ErrorKind::EntryNotFound);
    /// ```
    ///
    /// # Errors
    ///
    /// As [`spawn`](crate::spawn) for the workers; the initializer's errors
    /// ([`ErrorKind::EntryNotFound`](crate::ErrorKind::EntryNotFound),
    /// [`ErrorKind::Serialize`](crate::ErrorKind::Serialize)).
    pub fn build(self) -> Result<Pool> {
        let workers = match self.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let name = self.name.unwrap_or_else(|| "pool".to_string());
        let initializer = self.initializer.transpose()?;
        let mut process = self.process;
        if self.zygote {
            process = process.zygote(&Zygote::start()?);
        }
        let shared = scheduler::start(Config {
            name: name.clone(),
            workers,
            initializer,
            max_tasks: self.max_tasks,
            timeout: self.timeout,
            process,
        })?;
        Ok(Pool {
            shared,
            workers,
            name,
            chunksize: self.chunksize,
        })
    }
}

impl PoolBuilder {
    pub(super) fn new() -> PoolBuilder {
        PoolBuilder {
            workers: 0,
            name: None,
            initializer: None,
            max_tasks: None,
            timeout: None,
            chunksize: None,
            process: Builder::new(),
            zygote: false,
        }
    }
}

impl fmt::Debug for PoolBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolBuilder")
            .field("workers", &self.workers)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}
