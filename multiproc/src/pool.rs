//! [`Pool`]: reusable worker processes that run `#[process]` functions as tasks, and survive
//! the crash of any one of them. The pool's handle is here; [`builder`] configures it,
//! [`scheduler`] (a thread in the caller's process) hands chunks of tasks to workers and
//! accounts for crashes and timeouts, [`worker`] is the loop each worker process runs, and
//! [`results`] turns deliveries into what a call returns.

mod builder;
pub(crate) mod results;
pub(crate) mod scheduler;
mod worker;

use std::fmt;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use self::builder::PoolBuilder;
pub use self::results::{AsyncResult, Imap, ImapUnordered};
pub(crate) use self::worker::run_task;

use self::results::{collect_in_order, settle_one};
use self::scheduler::{Call, Direct, Results, Run, Shared};
use crate::error::{Error, Result};
use crate::ipc::codec as wire;
use crate::ipc::packed;
use crate::registry;
use crate::spawn::{Process, ProcessFn};

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

impl Pool {
    /// A pool of `workers` processes (0: the machine's available parallelism).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # #[multiproc::main]
    /// # fn main() -> multiproc::Result<()> {
    /// let pool = multiproc::Pool::new(0)?;
    /// assert_eq!(pool.workers(), std::thread::available_parallelism()?.get());
    /// # Ok(())
    /// # }
    /// ```
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
    /// ```no_run
    /// # #[multiproc::main]
    /// # fn main() -> multiproc::Result<()> {
    /// let pool = multiproc::Pool::builder().workers(2).name("crunch").build()?;
    /// assert_eq!(pool.workers(), 2);
    /// # Ok(())
    /// # }
    /// ```
    pub fn builder() -> PoolBuilder {
        PoolBuilder::new()
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
    /// ```no_run
    /// #[multiproc::process]
    /// fn inverse(x: i32) -> i32 {
    ///     100 / x
    /// }
    ///
    /// #[multiproc::main]
    /// fn main() -> multiproc::Result<()> {
    ///     let pool = multiproc::Pool::new(2)?;
    ///     assert_eq!(pool.map(inverse, [1, 2, 4])?, [100, 50, 25]);
    ///     assert!(pool.map(inverse, [1, 0, 4]).is_err()); // the task of 0 panicked
    ///     Ok(())
    /// }
    /// ```
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
        Ok(Imap::new(rx, n))
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
        Ok(ImapUnordered::new(rx, n))
    }

    /// Runs one call in a worker and waits for its result. On an idle worker of a pool with
    /// nothing else to do, the call goes straight to the worker and its result straight back,
    /// one round trip (the scheduler still settles a worker that dies or runs past the
    /// timeout); else it queues as any task.
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
        let _ = f;
        let key = registry::resolve_fn::<F, A>()?;
        let mut bytes = Vec::new();
        let mut fds = Vec::new();
        wire::encode_each([args], &mut bytes, 0, |_, carried| fds = carried)
            .map_err(|message| Error::serialize::<A>(message))?;
        // On an idle worker, one round trip from here; else through the scheduler.
        let rx = match self.shared.run_direct(key, bytes, fds) {
            Direct::Done(done) => return settle_one(done),
            Direct::Settling(rx) => rx,
            Direct::NotRun(bytes, fds) => {
                let (run, rx) = Run::alone(key, bytes, fds);
                self.shared.submit(run)?;
                rx
            }
        };
        AsyncResult::new(rx).get()
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
    /// ```no_run
    /// #[multiproc::process]
    /// fn work(x: u32) -> u32 {
    ///     x
    /// }
    ///
    /// #[multiproc::main]
    /// fn main() -> multiproc::Result<()> {
    ///     let pool = multiproc::Pool::new(1)?;
    ///     let submitted = pool.apply_async(work, (1,))?;
    ///     pool.close();
    ///     assert!(pool.apply_async(work, (2,)).is_err()); // no new tasks
    ///     assert_eq!(submitted.get()?, 1); // but those submitted still run
    ///     pool.join()?;
    ///     Ok(())
    /// }
    /// ```
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
        // Encoded bytes per item so far (8 until the first batch says): each batch's buffers
        // are sized up front, not grown (and copied) by doubling.
        let mut per_item = 8;
        loop {
            let expected = match items.size_hint() {
                (low, Some(high)) if low == high => low.min(batch_size),
                (low, _) => low.clamp(1, SUBMIT_BATCH),
            };
            let mut args = Vec::with_capacity(expected * per_item);
            // The tasks are made as their arguments are encoded; their call, once the buffer
            // is whole.
            let batch = items.by_ref().take(batch_size);
            let tasks = scheduler::encode_tasks(batch, &mut args, n, expected)
                .map_err(|message| Error::serialize::<A>(message))?;
            if !tasks.is_empty() {
                per_item = args.len().div_ceil(tasks.len()).max(1);
                let chunk = per_call.unwrap_or_else(|| chunk.take().map_or(1, |c| c(tasks.len())));
                let call = Arc::new(Call::with_headers(key, sink.clone(), args, chunk));
                n += tasks.len();
                let tasks = tasks.into();
                self.shared.submit(Run { call, tasks })?;
            }
            if items.peek().is_none() {
                break;
            }
        }
        Ok((rx, n))
    }
}

/// For a cluster node: tasks that arrived encoded (by another host's caller).
#[cfg(feature = "cluster")]
impl Pool {
    /// Runs tasks of the entry point `key` whose arguments lie, encoded, in `args` at
    /// `spans`; their outcomes (numbered from 0, in `spans`' order) arrive on the results.
    pub(crate) fn submit_encoded(
        &self,
        key: &str,
        args: Vec<u8>,
        spans: Vec<std::ops::Range<usize>>,
    ) -> Result<Results> {
        let key = registry::resolve_key_str(key)?;
        let (sink, rx) = scheduler::sink();
        let chunk = spans.len().div_ceil(self.workers.max(1)).max(1);
        let call = Arc::new(Call::new(key, sink, args, chunk));
        let tasks = spans
            .into_iter()
            .enumerate()
            .map(|(index, args)| scheduler::Task {
                index,
                args,
                rare: scheduler::Rare::default(),
            })
            .collect();
        self.shared.submit(Run { call, tasks })?;
        Ok(rx)
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

/// A value encoded for a task: its bytes and (copies of) its descriptors.
fn encode<A: Serialize>(value: &A) -> Result<(Vec<u8>, Vec<OwnedFd>)> {
    let mut bytes = Vec::new();
    let fds = encode_into(value, &mut bytes)?;
    Ok((bytes, fds))
}

/// Encodes `value` at the end of `out`; returns (copies of) the descriptors it carries.
fn encode_into<A: Serialize>(value: &A, out: &mut Vec<u8>) -> Result<Vec<OwnedFd>> {
    wire::with_encoded(value, |bytes, fds| {
        packed::check_entry(bytes.len(), "a task's arguments").map_err(Error::serialize::<A>)?;
        out.extend_from_slice(bytes);
        fds.iter()
            .map(|fd| fd.try_clone())
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(|e| Error::io("cannot copy a task's descriptors", e))
    })
    .map_err(|message| Error::serialize::<A>(message))?
}
