//! [`Pool`]: reusable worker processes that run `#[process]` functions as tasks, and survive
//! the crash of any one of them.

mod packed;
mod scheduler;
mod worker;

use std::any::type_name;
use std::collections::HashMap;
use std::fmt;
use std::os::fd::OwnedFd;
use std::sync::{Arc, mpsc};
use std::task::{Context, Poll};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use self::worker::TaskInput;
pub(crate) use self::worker::run_task;

use self::scheduler::{Call, Config, Done, Encoded, Results, Shared, Task};
use crate::bootstrap::Outcome;
use crate::error::{Error, Repr, Result};
use crate::registry;
use crate::spawn::{Process, ProcessFn};
use crate::wire;

/// A pool of worker processes: Python's `multiprocessing.Pool`, typed, and robust to crashes.
///
/// Tasks are calls of `#[multiproc::process]` functions (or [`Process`] values, with
/// [`submit`](Pool::submit)). Workers are started once and reused. A task that panics is that
/// task's error and its worker lives on; a worker that dies (killed, aborted, out of memory)
/// or runs past the pool's [`timeout`](PoolBuilder::timeout) fails only the task it was
/// running, with an error that says how; a new worker replaces it, and the other tasks it held
/// run elsewhere. No task is lost, none reports twice, and the pool stays usable. (In a chunk,
/// the tasks a dying worker had finished but not yet reported run again elsewhere: see
/// [`PoolBuilder::chunksize`].)
///
/// Dropping the pool [terminates](Pool::terminate) it: call [`close`](Pool::close) and
/// [`join`](Pool::join) first to let submitted work finish.
///
/// # Examples
///
/// ```no_run
/// #[multiproc::process]
/// fn square(x: u64) -> u64 {
///     x * x
/// }
///
/// #[multiproc::main]
/// fn main() -> multiproc::Result<()> {
///     let pool = multiproc::Pool::new(4)?;
///     assert_eq!(pool.map(square, 1..=4)?, [1, 4, 9, 16]);
///     Ok(())
/// }
/// ```
pub struct Pool {
    shared: Arc<Shared>,
    workers: usize,
    name: String,
    chunksize: Option<usize>,
}

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
    memory_limit: Option<u64>,
    cpu_time_limit: Option<Duration>,
    open_files_limit: Option<u64>,
    stdout: crate::Stdio,
    stderr: crate::Stdio,
    zygote: bool,
}

impl PoolBuilder {
    /// Where the workers' standard output goes (default: inherited); with
    /// [`Stdio::Prefixed`](crate::Stdio::Prefixed) each line shows the worker's name and pid.
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
    pub fn stdout(mut self, stdio: crate::Stdio) -> Self {
        self.stdout = stdio;
        self
    }

    /// Where the workers' standard error goes (default: inherited); with
    /// [`Stdio::Prefixed`](crate::Stdio::Prefixed), the error of a task whose worker crashed
    /// also carries the last lines the worker wrote there.
    ///
    /// # Examples
    ///
    /// See [`PoolBuilder::stdout`].
    pub fn stderr(mut self, stdio: crate::Stdio) -> Self {
        self.stderr = stdio;
        self
    }

    /// Starts the workers, and the replacements of workers that die, from a
    /// [`Zygote`](crate::Zygote) owned by the pool: a fork instead of an exec each (default:
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
        self.memory_limit = Some(bytes);
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
        self.cpu_time_limit = Some(limit);
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
        self.open_files_limit = Some(files);
        self
    }

    /// The number of worker processes; 0 (the default) means the machine's available
    /// parallelism.
    ///
    /// # Examples
    ///
    /// See [`PoolBuilder`].
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }

    /// The workers' name: they are called `name-0`, `name-1`, ... in errors (default `pool`).
    ///
    /// # Examples
    ///
    /// See [`PoolBuilder`].
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
    /// See [`PoolBuilder`].
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
    /// See [`PoolBuilder`].
    pub fn max_tasks_per_child(mut self, tasks: u64) -> Self {
        self.max_tasks = Some(tasks.max(1));
        self
    }

    /// The longest a task may run: past it, the task's worker is killed and replaced, and
    /// the task fails with [`ErrorKind::Timeout`](crate::ErrorKind::Timeout).
    ///
    /// # Examples
    ///
    /// See [`PoolBuilder`].
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
    /// See [`PoolBuilder`].
    pub fn chunksize(mut self, chunksize: usize) -> Self {
        self.chunksize = Some(chunksize.max(1));
        self
    }

    /// Starts the workers.
    ///
    /// # Examples
    ///
    /// See [`PoolBuilder`].
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
        let shared = scheduler::start(Config {
            name: name.clone(),
            workers,
            initializer,
            max_tasks: self.max_tasks,
            timeout: self.timeout,
            memory_limit: self.memory_limit,
            cpu_time_limit: self.cpu_time_limit,
            open_files_limit: self.open_files_limit,
            stdout: self.stdout,
            stderr: self.stderr,
            zygote: if self.zygote {
                Some(crate::Zygote::start()?)
            } else {
                None
            },
        })?;
        Ok(Pool {
            shared,
            workers,
            name,
            chunksize: self.chunksize,
        })
    }
}

impl Pool {
    /// A pool of `workers` processes (0: the machine's available parallelism).
    ///
    /// # Examples
    ///
    /// See [`Pool`].
    ///
    /// # Errors
    ///
    /// As [`PoolBuilder::build`].
    pub fn new(workers: usize) -> Result<Pool> {
        Pool::builder().workers(workers).build()
    }

    /// Configures a pool: workers, initializer, tasks per child, timeout, chunk size, name.
    ///
    /// # Examples
    ///
    /// See [`PoolBuilder`].
    pub fn builder() -> PoolBuilder {
        PoolBuilder {
            workers: 0,
            name: None,
            initializer: None,
            max_tasks: None,
            timeout: None,
            chunksize: None,
            memory_limit: None,
            cpu_time_limit: None,
            stdout: crate::Stdio::Inherit,
            stderr: crate::Stdio::Inherit,
            open_files_limit: None,
            zygote: false,
        }
    }

    /// The number of worker processes.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # #[multiproc::main]
    /// # fn main() -> multiproc::Result<()> {
    /// assert_eq!(multiproc::Pool::new(3)?.workers(), 3);
    /// # Ok(())
    /// # }
    /// ```
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Runs `f` on every item, in parallel, and returns the results in input order.
    ///
    /// # Examples
    ///
    /// See [`Pool`].
    ///
    /// # Errors
    ///
    /// The error of the first task (in input order) that failed: its panic, its worker's
    /// death, its timeout. Use [`imap`](Pool::imap) for every task's own result.
    /// [`ErrorKind::Serialize`](crate::ErrorKind::Serialize) for an item that cannot be
    /// encoded: items go to the workers while later ones are still being encoded, so tasks
    /// before it may have run.
    pub fn map<F, A, I>(&self, f: F, items: I) -> Result<Vec<F::Output>>
    where
        F: ProcessFn<(A,)>,
        A: Serialize + DeserializeOwned,
        F::Output: Serialize + DeserializeOwned,
        I: IntoIterator<Item = A>,
    {
        let _ = f;
        let items = items.into_iter().map(|a| (a,));
        let (rx, n) = self.submit_fn::<F, _>(items, |n| self.auto_chunksize(n))?;
        collect_in_order::<F::Output>(rx, n)
    }

    /// Like [`map`](Pool::map) for functions of several arguments: each item is the tuple of
    /// arguments (Python's `starmap`).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// #[multiproc::process]
    /// fn add(a: i32, b: i32) -> i32 {
    ///     a + b
    /// }
    ///
    /// #[multiproc::main]
    /// fn main() -> multiproc::Result<()> {
    ///     let pool = multiproc::Pool::new(2)?;
    ///     assert_eq!(pool.starmap(add, [(1, 2), (3, 4)])?, [3, 7]);
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`map`](Pool::map).
    pub fn starmap<F, A, I>(&self, f: F, items: I) -> Result<Vec<F::Output>>
    where
        F: ProcessFn<A>,
        A: Serialize + DeserializeOwned,
        F::Output: Serialize + DeserializeOwned,
        I: IntoIterator<Item = A>,
    {
        let _ = f;
        let (rx, n) = self.submit_fn::<F, _>(items, |n| self.auto_chunksize(n))?;
        collect_in_order::<F::Output>(rx, n)
    }

    /// Runs `f` on every item and yields each task's own result, in input order, as soon as
    /// it (and those before it) are done. The input is read at once; the iterator knows its
    /// length.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// #[multiproc::process]
    /// fn risky(x: u32) -> u32 {
    ///     assert!(x != 2, "two is right out");
    ///     x
    /// }
    ///
    /// #[multiproc::main]
    /// fn main() -> multiproc::Result<()> {
    ///     let pool = multiproc::Pool::new(2)?;
    ///     let results: Vec<_> = pool.imap(risky, 1..=3)?.collect();
    ///     assert!(results[0].is_ok() && results[1].is_err() && results[2].is_ok());
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// Before any task runs: the function is not a `#[process]`, the pool is closed. An item
    /// that cannot be encoded: items go to the workers while later ones are still being
    /// encoded, so tasks before it may have run.
    pub fn imap<F, A, I>(&self, f: F, items: I) -> Result<Imap<F::Output>>
    where
        F: ProcessFn<(A,)>,
        A: Serialize + DeserializeOwned,
        F::Output: Serialize + DeserializeOwned,
        I: IntoIterator<Item = A>,
    {
        let _ = f;
        let items = items.into_iter().map(|a| (a,));
        let (rx, n) = self.submit_fn::<F, _>(items, |_| self.chunksize.unwrap_or(1))?;
        Ok(Imap {
            rx,
            len: n,
            next: 0,
            early: HashMap::new(),
        })
    }

    /// Like [`imap`](Pool::imap), yielding each result as soon as its task is done, whatever
    /// its place in the input. Each result comes with its task's index.
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
    ///     let pool = multiproc::Pool::new(2)?;
    ///     let mut results: Vec<(usize, u32)> = pool
    ///         .imap_unordered(double, [1, 2, 3])?
    ///         .map(|(i, r)| r.map(|v| (i, v)))
    ///         .collect::<multiproc::Result<_>>()?;
    ///     results.sort();
    ///     assert_eq!(results, [(0, 2), (1, 4), (2, 6)]);
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`imap`](Pool::imap).
    pub fn imap_unordered<F, A, I>(&self, f: F, items: I) -> Result<ImapUnordered<F::Output>>
    where
        F: ProcessFn<(A,)>,
        A: Serialize + DeserializeOwned,
        F::Output: Serialize + DeserializeOwned,
        I: IntoIterator<Item = A>,
    {
        let _ = f;
        let items = items.into_iter().map(|a| (a,));
        let (rx, n) = self.submit_fn::<F, _>(items, |_| self.chunksize.unwrap_or(1))?;
        Ok(ImapUnordered {
            rx,
            left: n,
            ready: std::collections::VecDeque::new(),
        })
    }

    /// Runs one call in a worker and waits for its result.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// #[multiproc::process]
    /// fn add(a: i32, b: i32) -> i32 {
    ///     a + b
    /// }
    ///
    /// #[multiproc::main]
    /// fn main() -> multiproc::Result<()> {
    ///     let pool = multiproc::Pool::new(1)?;
    ///     assert_eq!(pool.apply(add, (2, 3))?, 5);
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`map`](Pool::map), for the one task.
    pub fn apply<F, A>(&self, f: F, args: A) -> Result<F::Output>
    where
        F: ProcessFn<A>,
        A: Serialize + DeserializeOwned,
        F::Output: Serialize + DeserializeOwned,
    {
        self.apply_async(f, args)?.get()
    }

    /// Starts one call in a worker; the [`AsyncResult`] gets its result.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// #[multiproc::process]
    /// fn add(a: i32, b: i32) -> i32 {
    ///     a + b
    /// }
    ///
    /// #[multiproc::main]
    /// fn main() -> multiproc::Result<()> {
    ///     let pool = multiproc::Pool::new(2)?;
    ///     let pending: Vec<_> = (0..4)
    ///         .map(|i| pool.apply_async(add, (i, i)))
    ///         .collect::<multiproc::Result<_>>()?;
    ///     let sums: Vec<i32> = pending
    ///         .into_iter()
    ///         .map(|r| r.get())
    ///         .collect::<multiproc::Result<_>>()?;
    ///     assert_eq!(sums, [0, 2, 4, 6]);
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// Before the task runs: as [`imap`](Pool::imap).
    pub fn apply_async<F, A>(&self, f: F, args: A) -> Result<AsyncResult<F::Output>>
    where
        F: ProcessFn<A>,
        A: Serialize + DeserializeOwned,
        F::Output: Serialize + DeserializeOwned,
    {
        let _ = f;
        let (rx, _) = self.submit_fn::<F, _>([args], |_| 1)?;
        Ok(AsyncResult::new(rx))
    }

    /// Runs a `#[multiproc::process]` value's `run` in a worker.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use serde::{Deserialize, Serialize};
    ///
    /// #[derive(Serialize, Deserialize)]
    /// struct Count {
    ///     upto: u64,
    /// }
    ///
    /// #[multiproc::process]
    /// impl Count {
    ///     fn run(self) -> u64 {
    ///         (1..=self.upto).sum()
    ///     }
    /// }
    ///
    /// #[multiproc::main]
    /// fn main() -> multiproc::Result<()> {
    ///     let pool = multiproc::Pool::new(1)?;
    ///     assert_eq!(pool.submit(Count { upto: 4 })?.get()?, 10);
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`apply_async`](Pool::apply_async).
    pub fn submit<P>(&self, process: P) -> Result<AsyncResult<P::Output>>
    where
        P: Process + Serialize + DeserializeOwned,
        P::Output: Serialize + DeserializeOwned,
    {
        let key = registry::resolve_key(P::__KEY)?;
        let (rx, _) = self.submit_all(key, [process], |_| 1)?;
        Ok(AsyncResult::new(rx))
    }

    /// Takes no more tasks; those submitted still run. Then [`join`](Pool::join) waits for
    /// them.
    ///
    /// # Examples
    ///
    /// See [`join`](Pool::join).
    pub fn close(&self) {
        self.shared.close();
    }

    /// Waits until every submitted task has finished and the workers have exited. Call
    /// [`close`](Pool::close) (or [`terminate`](Pool::terminate)) first.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// #[multiproc::process]
    /// fn work(x: u32) -> u32 {
    ///     x
    /// }
    ///
    /// #[multiproc::main]
    /// fn main() -> multiproc::Result<()> {
    ///     let pool = multiproc::Pool::new(2)?;
    ///     let later = pool.apply_async(work, (1,))?;
    ///     pool.close();
    ///     pool.join()?;
    ///     assert_eq!(later.get()?, 1);
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Other`](crate::ErrorKind::Other) if the pool was not closed: it would
    /// wait forever (Python raises `ValueError`).
    pub fn join(&self) -> Result<()> {
        if !self.shared.is_closed() {
            return Err(Error::other(
                "join() on an open pool would wait forever: call close() or terminate() first",
            ));
        }
        self.shared.wait_stopped();
        Ok(())
    }

    /// Kills the workers now; tasks not finished fail with an error. Also what dropping the
    /// pool does.
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
    ///     let pool = multiproc::Pool::new(1)?;
    ///     let stuck = pool.apply_async(forever, ())?;
    ///     pool.terminate();
    ///     assert!(stuck.get().is_err());
    ///     Ok(())
    /// }
    /// ```
    pub fn terminate(&self) {
        self.shared.terminate();
        self.shared.wait_stopped();
    }

    fn auto_chunksize(&self, n: usize) -> usize {
        self.chunksize
            .unwrap_or_else(|| n.div_ceil(self.workers * 4).max(1))
    }

    /// Submits a call of the `#[process]` fn `F` for each argument tuple.
    fn submit_fn<F, A: Serialize>(
        &self,
        items: impl IntoIterator<Item = A>,
        chunk: impl FnOnce(usize) -> usize,
    ) -> Result<(Results, usize)> {
        self.submit_all(registry::resolve_fn::<F, A>()?, items, chunk)
    }

    /// Encodes every item as a task of one call and submits them; returns the receiver of
    /// their outcomes and their number.
    fn submit_all<A: Serialize>(
        &self,
        key: &'static str,
        items: impl IntoIterator<Item = A>,
        chunk: impl FnOnce(usize) -> usize,
    ) -> Result<(Results, usize)> {
        let (sink, rx) = scheduler::sink();
        let mut items = items.into_iter().peekable();
        // With a known count, the chunk size is known now: the tasks go out a chunk at a time
        // while the rest are still being encoded, so that the workers start at once. Else
        // they all go when all are encoded.
        let mut chunk = Some(chunk);
        let (low, high) = items.size_hint();
        let per_call = match (high == Some(low), chunk.take()) {
            (true, Some(chunk)) => Some(chunk(low).max(1)),
            (_, unused) => {
                chunk = unused;
                None
            }
        };
        // Small chunks go out several at a time: each submission wakes the scheduler.
        let batch_size = per_call.map_or(usize::MAX, |c| c.max(SUBMIT_BATCH));
        let mut n = 0;
        loop {
            let mut args = Vec::new();
            let mut spans = Vec::new();
            let batch = items.by_ref().take(batch_size);
            wire::encode_each(batch, &mut args, |range, fds| spans.push((range, fds)))
                .map_err(|message| Error::serialize::<A>(message))?;
            if !spans.is_empty() {
                let chunk = per_call.unwrap_or_else(|| chunk.take().map_or(1, |c| c(spans.len())));
                let call = Arc::new(Call {
                    key: key.to_string(),
                    args,
                    sink: sink.clone(),
                    chunk,
                });
                let first = n;
                n += spans.len();
                let tasks = spans
                    .into_iter()
                    .enumerate()
                    .map(|(i, (args, fds))| Task {
                        call: Arc::clone(&call),
                        index: first + i,
                        args,
                        fds,
                        attempts: 0,
                    })
                    .collect();
                self.shared.submit(tasks)?;
            }
            if items.peek().is_none() {
                break;
            }
        }
        Ok((rx, n))
    }
}

/// The fewest tasks a call submits at a time while it encodes the rest (see `submit_all`).
const SUBMIT_BATCH: usize = 4096;

impl Drop for Pool {
    fn drop(&mut self) {
        self.terminate();
    }
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("name", &self.name)
            .field("workers", &self.workers)
            .finish()
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

/// A value encoded for a task: its bytes and (copies of) its descriptors.
fn encode<A: Serialize>(value: &A) -> Result<(Vec<u8>, Vec<OwnedFd>)> {
    let mut bytes = Vec::new();
    let fds = encode_into(value, &mut bytes)?;
    Ok((bytes, fds))
}

/// Encodes `value` at the end of `out`; returns (copies of) the descriptors it carries.
fn encode_into<A: Serialize>(value: &A, out: &mut Vec<u8>) -> Result<Vec<OwnedFd>> {
    wire::with_encoded(value, |bytes, fds| {
        out.extend_from_slice(bytes);
        if fds.is_empty() {
            return Ok(Vec::new());
        }
        fds.iter()
            .map(|fd| fd.try_clone())
            .collect::<std::io::Result<Vec<_>>>()
    })
    .map_err(|message| Error::serialize::<A>(message))?
    .map_err(|e| Error::io("cannot copy a task's descriptors", e))
}

/// Decodes a delivery: hands `each` every task's index and result.
fn settle<R: DeserializeOwned>(done: Done, mut each: impl FnMut(usize, Result<R>)) {
    match done {
        Done::Failed { index, error } => each(index, Err(error)),
        Done::Outcomes {
            indices,
            outcomes,
            who,
        } => {
            let mut entries = outcomes.into_entries();
            for index in indices {
                let result = match entries.next_entry() {
                    Some((bytes, fds)) => outcome(bytes, fds, &who),
                    None => Err(lost()),
                };
                each(index, result);
            }
        }
    }
}

/// One task's encoded outcome, decoded.
fn outcome<R: DeserializeOwned>(
    bytes: &[u8],
    fds: Vec<OwnedFd>,
    who: &crate::error::Who,
) -> Result<R> {
    let decoded = wire::decode_slice::<Outcome<R>>(bytes, fds).map_err(|message| {
        Error::new(Repr::Deserialize {
            type_name: type_name::<R>(),
            message,
        })
    })?;
    match decoded {
        Outcome::Returned(value) => Ok(value),
        Outcome::Panicked(panic) => Err(Error::new(Repr::Panicked {
            who: who.clone(),
            panic,
        })),
        Outcome::OutputNotSerializable { message, .. } => Err(Error::serialize::<R>(message)),
        Outcome::StateNotDeserializable { type_name, message } => Err(Error::other(format!(
            "{who} could not decode a task's arguments `{type_name}`: {message}"
        ))),
    }
}

/// The error for a task whose outcome can no longer arrive.
fn lost() -> Error {
    Error::other("the pool's scheduler stopped before delivering this task's result")
}

/// Receives `n` outcomes and decodes them in input order.
/// Every result of a call, in input order, or the first error in that order.
fn collect_in_order<R: DeserializeOwned>(rx: Results, n: usize) -> Result<Vec<R>> {
    let mut slots: Vec<Option<Result<R>>> = (0..n).map(|_| None).collect();
    let mut got = 0;
    while got < n {
        let Ok(done) = rx.recv() else {
            break;
        };
        settle(done, |index, result| {
            if let Some(slot) = slots.get_mut(index) {
                got += usize::from(slot.is_none());
                *slot = Some(result);
            }
        });
    }
    let mut values = Vec::with_capacity(n);
    for slot in slots {
        values.push(slot.unwrap_or_else(|| Err(lost()))?);
    }
    Ok(values)
}

/// The results of [`Pool::imap`], in input order.
///
/// # Examples
///
/// See [`Pool::imap`].
pub struct Imap<R> {
    rx: Results,
    len: usize,
    next: usize,
    early: HashMap<usize, Result<R>>,
}

impl<R: DeserializeOwned> Iterator for Imap<R> {
    type Item = Result<R>;

    fn next(&mut self) -> Option<Result<R>> {
        if self.next == self.len {
            return None;
        }
        let index = self.next;
        self.next += 1;
        loop {
            if let Some(result) = self.early.remove(&index) {
                return Some(result);
            }
            match self.rx.recv() {
                Ok(done) => settle(done, |i, result| {
                    self.early.insert(i, result);
                }),
                Err(_) => return Some(Err(lost())),
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.len - self.next;
        (left, Some(left))
    }
}

impl<R: DeserializeOwned> ExactSizeIterator for Imap<R> {}

impl<R> fmt::Debug for Imap<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Imap({} of {} left)", self.len - self.next, self.len)
    }
}

/// The results of [`Pool::imap_unordered`], each with its task's index, as they finish.
///
/// # Examples
///
/// See [`Pool::imap_unordered`].
pub struct ImapUnordered<R> {
    rx: Results,
    left: usize,
    ready: std::collections::VecDeque<(usize, Result<R>)>,
}

impl<R: DeserializeOwned> Iterator for ImapUnordered<R> {
    type Item = (usize, Result<R>);

    fn next(&mut self) -> Option<(usize, Result<R>)> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        loop {
            if let Some(next) = self.ready.pop_front() {
                return Some(next);
            }
            match self.rx.recv() {
                Ok(done) => settle(done, |index, result| self.ready.push_back((index, result))),
                Err(_) => {
                    self.left = 0;
                    return Some((usize::MAX, Err(lost())));
                }
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl<R: DeserializeOwned> ExactSizeIterator for ImapUnordered<R> {}

impl<R> fmt::Debug for ImapUnordered<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ImapUnordered({} left)", self.left)
    }
}

/// The result of [`Pool::apply_async`] or [`Pool::submit`], once its task is done.
///
/// # Examples
///
/// See [`Pool::apply_async`].
pub struct AsyncResult<R> {
    rx: Results,
    done: Option<Result<R>>,
    taken: bool,
}

impl<R: DeserializeOwned> AsyncResult<R> {
    fn new(rx: Results) -> Self {
        AsyncResult {
            rx,
            done: None,
            taken: false,
        }
    }

    /// Waits for the task and returns its result.
    ///
    /// # Examples
    ///
    /// See [`Pool::apply_async`].
    ///
    /// # Errors
    ///
    /// The task's failure: its panic, its worker's death, its timeout, the pool's end.
    pub fn get(mut self) -> Result<R> {
        self.wait();
        self.take()
    }

    /// Waits at most `timeout` for the task; after a timeout the result can still be had.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    ///
    /// #[multiproc::process]
    /// fn slow() -> u8 {
    ///     std::thread::sleep(Duration::from_millis(200));
    ///     1
    /// }
    ///
    /// #[multiproc::main]
    /// fn main() -> multiproc::Result<()> {
    ///     let pool = multiproc::Pool::new(1)?;
    ///     let mut r = pool.apply_async(slow, ())?;
    ///     assert!(r.get_timeout(Duration::from_millis(1)).unwrap_err().is_timeout());
    ///     assert_eq!(r.get_timeout(Duration::from_secs(30))?, 1);
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`get`](AsyncResult::get), plus [`ErrorKind::Timeout`](crate::ErrorKind::Timeout);
    /// [`ErrorKind::Other`](crate::ErrorKind::Other) once the result was taken.
    pub fn get_timeout(&mut self, timeout: Duration) -> Result<R> {
        if !self.wait_timeout(timeout) {
            return Err(Error::new(Repr::Timeout {
                what: format!("waiting for a task returning {}", type_name::<R>()),
                after: timeout,
            }));
        }
        self.take()
    }

    /// `true` once the task is done (its result waits here).
    ///
    /// # Examples
    ///
    /// See [`AsyncResult::wait`].
    pub fn ready(&mut self) -> bool {
        self.wait_timeout(Duration::ZERO)
    }

    /// Waits until the task is done.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// #[multiproc::process]
    /// fn one() -> u8 {
    ///     1
    /// }
    ///
    /// #[multiproc::main]
    /// fn main() -> multiproc::Result<()> {
    ///     let pool = multiproc::Pool::new(1)?;
    ///     let mut r = pool.apply_async(one, ())?;
    ///     r.wait();
    ///     assert!(r.ready());
    ///     assert_eq!(r.get()?, 1);
    ///     Ok(())
    /// }
    /// ```
    pub fn wait(&mut self) {
        while !self.wait_timeout(Duration::from_secs(3600)) {}
    }

    /// Waits at most `timeout` until the task is done; `true` if it is.
    ///
    /// # Examples
    ///
    /// See [`AsyncResult::get_timeout`].
    pub fn wait_timeout(&mut self, timeout: Duration) -> bool {
        if self.done.is_some() || self.taken {
            return true;
        }
        match self.rx.recv_timeout(timeout) {
            Ok(done) => {
                settle(done, |_, result| self.done = Some(result));
                true
            }
            Err(mpsc::RecvTimeoutError::Timeout) => false,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                self.done = Some(Err(lost()));
                true
            }
        }
    }

    fn take(&mut self) -> Result<R> {
        match self.done.take() {
            Some(result) => {
                self.taken = true;
                result
            }
            None => Err(Error::other("this task's result was already taken")),
        }
    }
}

/// Awaiting an `AsyncResult` gives what [`get`](AsyncResult::get) would, without blocking the
/// executor's thread (any executor: the pool's scheduler wakes the task).
///
/// # Examples
///
/// ```no_run
/// #[multiproc::process]
/// fn square(x: u64) -> u64 {
///     x * x
/// }
///
/// #[tokio::main]
/// async fn main() -> multiproc::Result<()> {
///     multiproc::init();
///     let pool = multiproc::Pool::new(2)?;
///     let (a, b) = (pool.apply_async(square, (3,))?, pool.apply_async(square, (4,))?);
///     assert_eq!(a.await? + b.await?, 25);
///     Ok(())
/// }
/// ```
// Never pinned structurally: the result is only moved out whole.
impl<R> Unpin for AsyncResult<R> {}

impl<R: DeserializeOwned> std::future::Future for AsyncResult<R> {
    type Output = Result<R>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<R>> {
        let this = self.get_mut();
        if this.ready() {
            return Poll::Ready(this.take());
        }
        this.rx.wake_on_next(cx.waker());
        // The outcome may have come before the waker was in place.
        if this.ready() {
            return Poll::Ready(this.take());
        }
        Poll::Pending
    }
}

impl<R> fmt::Debug for AsyncResult<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncResult")
            .field("done", &self.done.is_some())
            .field("taken", &self.taken)
            .finish()
    }
}
