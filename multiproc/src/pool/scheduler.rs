//! The pool's scheduler: one thread that owns the workers, hands them chunks of tasks, routes
//! the outcomes back, and replaces a worker that dies or runs past a task's timeout.
//!
//! Every task is in exactly one place: waiting in `pending` (in runs of one call's tasks, so
//! that a task does not hold its call itself), or held by one worker in its `inflight`
//! chunks (kept until its outcome arrives, so that it can be handed to another worker if
//! this one dies before starting it). A dead worker fails only the task its progress word
//! names; the others it held go back to the front of `pending`, in order.
//!
//! The direct path: while nothing is pending, the scheduler *parks* its idle workers in the
//! shared state, where a caller of `Pool::apply` leases one ([`Shared::run_direct`]), sends
//! it the task and reads the outcome itself: one round trip, no scheduler in between. A
//! lease that goes wrong (the worker dies, the task outlives the pool's timeout, an answer
//! cannot be read) hands the worker back with the task in its `inflight`, so that the
//! scheduler's usual accounting settles it, as for any task; so does a worker whose lease
//! ends while the scheduler has work or is stopping.

use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use super::worker::{
    FromWorker, InitCall, Progress, ToWorker, WORKER_KEY, WorkerBoot, monotonic_ns,
};
use crate::channel::{Receiver, Sender};
use crate::error::{Error, Repr, Result, Who};
use crate::ipc::packed::{self, Packed};
use crate::select::Select;
use crate::spawn::{Builder, JoinHandle};
use crate::sys::Wait;

/// Chunks a worker holds at most at once: one running, one waiting, so it never idles while
/// the next arrives.
const DEPTH: usize = 2;

/// What finished tasks hand to whoever waits for them.
pub(crate) enum Done {
    /// The encoded outcomes of tasks of one call that ran in one chunk: entry `i` is the
    /// outcome of the call's task `indices[i]`.
    Outcomes {
        indices: Indices,
        outcomes: Packed,
        who: Arc<Who>,
    },
    /// Task `index` failed outside its code: its worker died, it timed out, the pool stopped.
    Failed { index: usize, error: Error },
}

/// The tasks of a call that a delivery's outcomes belong to, in order.
pub(crate) enum Indices {
    /// One task (a direct `apply`'s): no list to allocate per call.
    One(usize),
    Many(Vec<usize>),
}

impl Indices {
    pub(crate) fn as_slice(&self) -> &[usize] {
        match self {
            Indices::One(index) => std::slice::from_ref(index),
            Indices::Many(indices) => indices,
        }
    }
}

/// Where the outcomes of one call's tasks go; wakes the caller's future, if it awaits them.
pub(crate) struct Sink {
    tx: Option<mpsc::Sender<Done>>,
    waker: Arc<Mutex<Option<std::task::Waker>>>,
}

impl Sink {
    pub(crate) fn send(&self, done: Done) -> std::result::Result<(), mpsc::SendError<Done>> {
        let sent = match &self.tx {
            Some(tx) => tx.send(done),
            None => Err(mpsc::SendError(done)),
        };
        self.wake();
        sent
    }

    fn wake(&self) {
        let waker = self.waker.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl Clone for Sink {
    fn clone(&self) -> Self {
        Sink {
            tx: self.tx.clone(),
            waker: Arc::clone(&self.waker),
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        // Disconnected first, so that the woken caller sees it.
        drop(self.tx.take());
        self.wake();
    }
}

/// The caller's end of a [`Sink`].
pub(crate) struct Results {
    rx: mpsc::Receiver<Done>,
    waker: Arc<Mutex<Option<std::task::Waker>>>,
}

impl Results {
    pub(crate) fn recv(&self) -> std::result::Result<Done, mpsc::RecvError> {
        self.rx.recv()
    }

    pub(crate) fn recv_timeout(
        &self,
        timeout: Duration,
    ) -> std::result::Result<Done, mpsc::RecvTimeoutError> {
        self.rx.recv_timeout(timeout)
    }

    /// Wakes `waker` at the next outcome (or when the sink is gone).
    pub(crate) fn wake_on_next(&self, waker: &std::task::Waker) {
        *self.waker.lock().unwrap_or_else(|e| e.into_inner()) = Some(waker.clone());
    }
}

/// A sink and its results.
pub(crate) fn sink() -> (Sink, Results) {
    let (tx, rx) = mpsc::channel();
    let waker = Arc::new(Mutex::new(None));
    (
        Sink {
            tx: Some(tx),
            waker: Arc::clone(&waker),
        },
        Results { rx, waker },
    )
}

/// Tells `task`'s caller that it failed.
fn fail(call: &Call, task: Task, error: Error) {
    let _ = call.sink.send(Done::Failed {
        index: task.index,
        error,
    });
}

/// What became of a task offered to [`Shared::run_direct`].
pub(crate) enum Direct {
    /// Its outcome.
    Done(Done),
    /// The lease went wrong: the scheduler settles the task, and its outcome arrives here.
    Settling(Results),
    /// No worker was parked (or it could not take the task): its arguments, to submit.
    NotRun(Vec<u8>, Vec<OwnedFd>),
}

/// One call of the pool's API (a `map`, an `apply_async`...): what its tasks share.
pub(crate) struct Call {
    key: &'static str,
    /// The encoded arguments of all its tasks, one after the other.
    args: Vec<u8>,
    sink: Sink,
    /// The most of its tasks that may share a chunk.
    chunk: usize,
    /// Each task's arguments in `args` follow the room for its entry header in a chunk,
    /// written there ([`Call::with_headers`]).
    headed: bool,
}

impl AsRef<[u8]> for Call {
    fn as_ref(&self) -> &[u8] {
        self.args()
    }
}

impl Call {
    /// A call of `key` whose tasks' encoded arguments lie in `args`, up to `chunk` of them
    /// to a chunk, their outcomes to `sink`.
    pub(crate) fn new(key: &'static str, sink: Sink, args: Vec<u8>, chunk: usize) -> Call {
        Call {
            key,
            args,
            sink,
            chunk,
            headed: false,
        }
    }

    /// As [`Call::new`], for arguments each preceded by its entry header in a chunk
    /// ([`packed::write_header`]).
    pub(crate) fn with_headers(key: &'static str, sink: Sink, args: Vec<u8>, chunk: usize) -> Call {
        Call {
            headed: true,
            ..Call::new(key, sink, args, chunk)
        }
    }

    fn args(&self) -> &[u8] {
        &self.args
    }
}

/// One task of a call (its [`Run`]'s or its [`Chunk`]'s): its index in the call, where its
/// arguments lie in the call's buffer, and what few tasks have ([`Rare`]).
pub(crate) struct Task {
    pub(crate) index: usize,
    pub(crate) args: std::ops::Range<usize>,
    pub(crate) rare: Rare,
}

/// Encodes `items` as tasks numbered from `first` into `args`, each after its entry header
/// in a chunk (for [`Call::with_headers`]), so that a chunk of tasks in a row goes to its
/// worker as a span of `args` (`expected`: room for tasks made up front). The text of an
/// encoding that failed, or of arguments longer than an entry holds.
pub(crate) fn encode_tasks<A: serde::Serialize>(
    items: impl IntoIterator<Item = A>,
    args: &mut Vec<u8>,
    first: usize,
    expected: usize,
) -> std::result::Result<Vec<Task>, String> {
    let mut tasks = Vec::with_capacity(expected);
    crate::ipc::codec::encode_each(items, args, packed::HEADER, |range, fds| {
        tasks.push(Task {
            index: first + tasks.len(),
            args: range,
            rare: Rare::with_fds(fds),
        });
    })?;
    for task in &tasks {
        packed::check_entry(task.args.len(), "a task's arguments")?;
        let at = &mut args[task.args.start - packed::HEADER..];
        packed::write_header(at, task.args.len(), task.rare.fds().len());
    }
    Ok(tasks)
}

/// Tasks of one call, in order: how tasks are submitted and wait.
pub(crate) struct Run {
    pub(crate) call: Arc<Call>,
    pub(crate) tasks: VecDeque<Task>,
}

impl Run {
    /// The one task of a call of `key` with the encoded arguments `args`, and the results
    /// its outcome arrives on.
    pub(crate) fn alone(key: &'static str, args: Vec<u8>, fds: Vec<OwnedFd>) -> (Run, Results) {
        let (sink, results) = sink();
        let len = args.len();
        let call = Arc::new(Call::new(key, sink, args, 1));
        let task = Task {
            index: 0,
            args: 0..len,
            rare: Rare::with_fds(fds),
        };
        let tasks = VecDeque::from([task]);
        (Run { call, tasks }, results)
    }
}

/// The tasks waiting for a worker, in order, as runs of one call's tasks (none empty).
#[derive(Default)]
struct Pending {
    runs: VecDeque<Run>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// Adds `runs` at the back.
    fn append(&mut self, runs: &mut VecDeque<Run>) {
        if self.runs.is_empty() {
            std::mem::swap(&mut self.runs, runs);
        } else {
            self.runs.append(runs);
        }
        self.runs.retain(|run| !run.tasks.is_empty());
    }

    /// Puts `call`'s `tasks` back at the front, in their order.
    fn requeue(&mut self, call: &Arc<Call>, tasks: impl DoubleEndedIterator<Item = Task>) {
        for task in tasks.rev() {
            self.push_front(call, task);
        }
    }

    /// Puts one task of `call` back at the front.
    fn push_front(&mut self, call: &Arc<Call>, task: Task) {
        match self.runs.front_mut() {
            Some(run) if Arc::ptr_eq(&run.call, call) => run.tasks.push_front(task),
            _ => self.runs.push_front(Run {
                call: Arc::clone(call),
                tasks: VecDeque::from([task]),
            }),
        }
    }

    /// Every task, with its call, in order; the queue is left empty.
    fn drain(&mut self) -> impl Iterator<Item = (Arc<Call>, Task)> {
        std::mem::take(&mut self.runs).into_iter().flat_map(|run| {
            let call = run.call;
            run.tasks.into_iter().map(move |t| (Arc::clone(&call), t))
        })
    }
}

/// What few tasks have, in one word for the many that have none of it (a 200k map holds 200k
/// tasks): the descriptors their arguments carry, and the workers that died holding them.
#[derive(Default)]
pub(crate) struct Rare(Option<Box<RareParts>>);

#[derive(Default)]
struct RareParts {
    fds: Vec<OwnedFd>,
    /// Workers that died holding the task (not running it): past [`MAX_ATTEMPTS`] it fails.
    attempts: u32,
}

impl Rare {
    /// A new task's: its arguments' descriptors.
    pub(crate) fn with_fds(fds: Vec<OwnedFd>) -> Rare {
        Rare((!fds.is_empty()).then(|| Box::new(RareParts { fds, attempts: 0 })))
    }

    pub(crate) fn fds(&self) -> &[OwnedFd] {
        self.0.as_deref().map_or(&[], |parts| &parts.fds)
    }

    fn attempts(&self) -> u32 {
        self.0.as_deref().map_or(0, |parts| parts.attempts)
    }

    /// A worker died holding the task.
    fn add_attempt(&mut self) {
        self.0.get_or_insert_default().attempts += 1;
    }
}

/// How many workers may die holding one task before it fails instead of going to another.
const MAX_ATTEMPTS: u32 = 3;

/// One call's entry key and encoded arguments.
pub(crate) struct Encoded {
    pub(crate) key: String,
    pub(crate) args: Vec<u8>,
    pub(crate) fds: Vec<OwnedFd>,
}

/// The pool's settings, fixed at build time.
pub(crate) struct Config {
    pub(crate) name: String,
    pub(crate) workers: usize,
    pub(crate) initializer: Option<Encoded>,
    pub(crate) max_tasks: Option<u64>,
    pub(crate) timeout: Option<Duration>,
    /// How each worker starts: streams, limits, and the zygote it is forked from (see
    /// [`PoolBuilder::zygote`](crate::PoolBuilder::zygote)), if any.
    pub(crate) process: Builder,
}

/// What the pool's handles and its scheduler share.
pub(crate) struct Shared {
    state: Mutex<State>,
    /// Signalled when the scheduler has stopped.
    stopped: Condvar,
    wake: Sender<()>,
    /// The pool's task timeout, for a leased worker's caller.
    timeout: Option<Duration>,
    /// Sequence numbers of direct tasks: their own range, apart from the scheduler's.
    direct_seq: AtomicU64,
}

/// The first sequence number of direct tasks (the scheduler's count from 0).
const DIRECT_SEQ: u64 = 1 << 62;

#[derive(Default)]
struct State {
    submitted: VecDeque<Run>,
    /// No more submissions: the scheduler stops once the work is done.
    closed: bool,
    /// Stop now: kill the workers, fail what is left.
    terminate: bool,
    /// Why the pool cannot run tasks any more (its initializer failed, no worker starts).
    broken: Option<String>,
    stopped: bool,
    /// Idle, ready workers the scheduler set aside for callers to lease (it does not read
    /// them meanwhile), while `parking`.
    parked: Vec<Worker>,
    /// The scheduler has nothing to do: a lease that ends parks its worker again.
    parking: bool,
    /// The pids of the workers leased now (unreaped: only the scheduler reaps), which a
    /// terminate kills.
    leased: Vec<u32>,
    /// Workers whose lease ended while the scheduler wanted them, for it to take back.
    returned: Vec<Worker>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues tasks for the scheduler.
    pub(crate) fn submit(&self, run: Run) -> Result<()> {
        {
            let mut st = self.lock();
            if let Some(why) = &st.broken {
                return Err(Error::other(format!("the pool is broken: {why}")));
            }
            if st.closed || st.terminate {
                return Err(Error::other(
                    "the pool was closed or terminated: it takes no more tasks",
                ));
            }
            st.submitted.push_back(run);
        }
        self.wake
            .send(())
            .map_err(|_| Error::other("the pool's scheduler is gone"))
    }

    pub(crate) fn close(&self) {
        self.lock().closed = true;
        let _ = self.wake.send(());
    }

    pub(crate) fn terminate(&self) {
        {
            let mut st = self.lock();
            st.closed = true;
            st.terminate = true;
        }
        let _ = self.wake.send(());
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Runs a task of the entry point `key` with the encoded arguments `args` (and `fds`) on
    /// a parked worker, if there is one: sends it and reads its outcome here, then parks the
    /// worker again. Nothing of the scheduler's bookkeeping (a call, its sink) is made unless
    /// the lease goes wrong.
    pub(crate) fn run_direct(&self, key: &'static str, args: Vec<u8>, fds: Vec<OwnedFd>) -> Direct {
        let mut worker = {
            let mut st = self.lock();
            if st.closed || st.terminate || st.broken.is_some() {
                return Direct::NotRun(args, fds);
            }
            let Some(worker) = st.parked.pop() else {
                return Direct::NotRun(args, fds);
            };
            st.leased.push(worker.handle.pid());
            worker
        };
        let mut items = Packed::with_capacity(1, args.len());
        if items.push(&args, &fds).is_err() {
            self.hand_back(worker);
            return Direct::NotRun(args, fds);
        }
        let k = worker.sent;
        let first_seq = self.direct_seq.fetch_add(1, Ordering::Relaxed);
        worker.progress.queue(k);
        let message = ToWorker::Chunk {
            k,
            first_seq,
            key: key.into(),
            items,
        };
        if worker.tasks.send(message).is_err() {
            // Gone, most likely: the scheduler finds out, and the task goes the usual way.
            worker.progress.unqueue(k);
            self.hand_back(worker);
            return Direct::NotRun(args, fds);
        }
        crate::trace::dispatched(worker.handle.name(), worker.handle.pid(), 1);
        worker.sent += 1;
        let answer = match self.timeout {
            // Past the timeout, the scheduler (which kills a late worker) takes over.
            Some(timeout) => worker.results.recv_timeout(timeout),
            None => worker.results.recv(),
        };
        let done = match answer {
            Ok(FromWorker::Done {
                first_seq: seq,
                outcomes,
            }) if seq == first_seq && outcomes.len() > 0 => Done::Outcomes {
                indices: Indices::One(0),
                outcomes,
                who: Arc::clone(&worker.who),
            },
            // An answer that cannot be read: the task's outcome is lost with it, as on the
            // scheduler's path.
            Err(e)
                if !e.is_disconnected()
                    && !matches!(e.kind(), crate::ErrorKind::Timeout | crate::ErrorKind::Io) =>
            {
                Done::Failed {
                    index: 0,
                    error: Error::other(format!("the task's outcome was lost: {e}")),
                }
            }
            // Its death, a timeout, an answer of another kind (a worker that retired before
            // the task): the worker goes back to the scheduler holding the task, which it
            // settles as one of its own.
            _ => {
                let (Run { call, tasks }, results) = Run::alone(key, args, fds);
                worker.inflight.push_back(Chunk {
                    first_seq,
                    k,
                    call,
                    tasks,
                    revoked: false,
                });
                self.hand_back(worker);
                return Direct::Settling(results);
            }
        };
        self.hand_back(worker);
        Direct::Done(done)
    }

    /// Ends a lease: the worker is parked again, or, when it holds a task still or the
    /// scheduler is busy or stopping, goes back to the scheduler.
    fn hand_back(&self, worker: Worker) {
        let mut st = self.lock();
        let pid = worker.handle.pid();
        if let Some(at) = st.leased.iter().position(|p| *p == pid) {
            st.leased.swap_remove(at);
        }
        if st.parking && worker.inflight.is_empty() && !st.closed && !st.terminate {
            st.parked.push(worker);
            return;
        }
        st.returned.push(worker);
        drop(st);
        let _ = self.wake.send(());
    }

    /// Waits until the scheduler has stopped (its workers reaped).
    pub(crate) fn wait_stopped(&self) {
        let mut st = self.lock();
        while !st.stopped {
            st = self.stopped.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// One worker process and what it holds.
struct Worker {
    handle: JoinHandle<()>,
    /// The handle's name and pid, shared with every delivery (for its panics' errors).
    who: Arc<Who>,
    tasks: Sender<ToWorker>,
    results: Receiver<FromWorker>,
    progress: Progress,
    /// Chunks sent and not yet answered, oldest first.
    inflight: VecDeque<Chunk>,
    /// Chunks sent to this worker so far.
    sent: u64,
    /// It said [`FromWorker::Ready`]: its initializer ran.
    ready: bool,
}

struct Chunk {
    first_seq: u64,
    /// This worker's chunk number, for [`Progress::revoke`].
    k: u64,
    call: Arc<Call>,
    tasks: VecDeque<Task>,
    /// Taken back (its tasks are elsewhere): waits only for the worker's `Skipped`.
    revoked: bool,
}

impl Chunk {
    /// The span of its call's buffer that holds its tasks laid out as the entries of a
    /// [`Packed`], if one does: a call encoded with headers, tasks in a row (as a chunk of a
    /// map is unless some of its tasks went elsewhere), none with descriptors.
    fn laid_out(&self) -> Option<std::ops::Range<usize>> {
        if !self.call.headed {
            return None;
        }
        let start = self.tasks.front()?.args.start.checked_sub(packed::HEADER)?;
        let mut end = start;
        for task in &self.tasks {
            if !task.rare.fds().is_empty() || task.args.start != end + packed::HEADER {
                return None;
            }
            end = task.args.end;
        }
        Some(start..end)
    }

    /// The next chunk: the first pending task and those after it of the same call, up to the
    /// call's chunk size and to the descriptors one message carries; numbered from
    /// `next_seq`, which moves past it.
    fn take(pending: &mut Pending, next_seq: &mut u64) -> Chunk {
        let run = pending.runs.front_mut().expect("a pending task");
        let mut fds = 0;
        // The longest run at the front that fits (the first task always goes).
        let len = run
            .tasks
            .iter()
            .take(run.call.chunk.max(1))
            .take_while(|t| {
                fds += t.rare.fds().len();
                fds <= crate::ipc::frame::MAX_FDS
            })
            .count()
            .max(1);
        // The common case of a map: the run at the front is one chunk, taken whole (its
        // queue becomes the chunk's); else the chunk's tasks move out in one go.
        let (call, tasks) = if len >= run.tasks.len() {
            let run = pending.runs.pop_front().expect("a pending task");
            (run.call, run.tasks)
        } else {
            (Arc::clone(&run.call), run.tasks.drain(..len).collect())
        };
        let first_seq = *next_seq;
        *next_seq += tasks.len() as u64;
        Chunk {
            first_seq,
            k: 0,
            call,
            tasks,
            revoked: false,
        }
    }
}

/// Takes a worker's last queued chunk back to the front of `pending`, if it holds one behind
/// another (behind its initializer, while not `ready`) and the worker has not started it:
/// [`Progress::revoke`] decides that race. `true` if it did.
fn take_back(
    inflight: &mut VecDeque<Chunk>,
    ready: bool,
    progress: &Progress,
    pending: &mut Pending,
) -> bool {
    let held = if ready { 2 } else { 1 };
    if inflight.len() < held {
        return false;
    }
    let Some(last) = inflight.back_mut() else {
        return false;
    };
    if last.revoked || !progress.revoke(last.k) {
        return false;
    }
    last.revoked = true;
    pending.requeue(&last.call, std::mem::take(&mut last.tasks).into_iter());
    true
}

/// Starts the workers and the scheduler thread.
pub(crate) fn start(config: Config) -> Result<Arc<Shared>> {
    let (wake, wake_rx) = crate::channel::<()>()?;
    let shared = Arc::new(Shared {
        state: Mutex::new(State::default()),
        stopped: Condvar::new(),
        wake,
        timeout: config.timeout,
        direct_seq: AtomicU64::new(DIRECT_SEQ),
    });
    let mut scheduler = Scheduler {
        config,
        shared: Arc::clone(&shared),
        wake: wake_rx,
        workers: Vec::new(),
        pending: Pending::default(),
        next_seq: 0,
        spawned: 0,
        failed_starts: 0,
    };
    for _ in 0..scheduler.config.workers {
        let worker = scheduler.spawn_worker()?;
        scheduler.workers.push(worker);
    }
    std::thread::Builder::new()
        .name(format!("multiproc-pool-{}", scheduler.config.name))
        .spawn(move || scheduler.run())
        .map_err(|e| Error::io("cannot start the pool's scheduler thread", e))?;
    Ok(shared)
}

struct Scheduler {
    config: Config,
    shared: Arc<Shared>,
    wake: Receiver<()>,
    workers: Vec<Worker>,
    pending: Pending,
    next_seq: u64,
    spawned: usize,
    /// Workers in a row that died before they were ready.
    failed_starts: u32,
}

/// Workers in a row that may die before they are ready before the pool gives up: an
/// initializer that crashes would otherwise have the pool start workers forever.
const MAX_FAILED_STARTS: u32 = 3;

impl Scheduler {
    fn run(mut self) {
        // Set `stopped` however this ends, a panic included, so that `join` and `Drop` return.
        struct Stopped(Arc<Shared>, Option<crate::Zygote>);
        impl Drop for Stopped {
            fn drop(&mut self) {
                // The workers are gone: so goes their zygote, before `join` returns.
                if let Some(zygote) = &self.1 {
                    zygote.stop();
                }
                let mut st = self.0.lock();
                st.stopped = true;
                if !st.closed {
                    // Only a panic ends the scheduler of an open pool.
                    st.broken
                        .get_or_insert_with(|| "the pool's scheduler stopped".to_string());
                }
                drop(st);
                self.0.stopped.notify_all();
            }
        }
        let _stopped = Stopped(
            Arc::clone(&self.shared),
            self.config.process.zygote_ref().cloned(),
        );
        loop {
            let (closed, terminate) = self.absorb();
            if terminate {
                self.end_leases();
                self.stop(true);
                break;
            }
            let broken = self.shared.lock().broken.clone();
            if let Some(why) = broken {
                self.fail_all(|| Error::other(format!("the pool is broken: {why}")));
            }
            self.dispatch();
            let idle =
                self.pending.is_empty() && self.workers.iter().all(|w| w.inflight.is_empty());
            if closed && idle && self.shared.lock().leased.is_empty() {
                self.stop(false);
                break;
            }
            if !closed && idle {
                self.park();
            }
            self.wait();
        }
    }

    /// Moves submitted tasks into `pending`, and takes back the workers whose lease ended;
    /// when there is work (or the pool stops), the parked workers too. Returns (closed,
    /// terminate).
    fn absorb(&mut self) -> (bool, bool) {
        let mut st = self.shared.lock();
        self.pending.append(&mut st.submitted);
        self.workers.append(&mut st.returned);
        if !self.pending.is_empty() || st.closed || st.terminate || st.broken.is_some() {
            st.parking = false;
            self.workers.append(&mut st.parked);
        }
        (st.closed, st.terminate)
    }

    /// Nothing to do: sets the idle, ready workers aside for callers to lease (see
    /// [`Shared::run_direct`]).
    fn park(&mut self) {
        let mut st = self.shared.lock();
        if !st.submitted.is_empty() || st.closed || st.terminate || st.broken.is_some() {
            return;
        }
        st.parking = true;
        let mut w = 0;
        while w < self.workers.len() {
            if self.workers[w].ready && self.workers[w].inflight.is_empty() {
                st.parked.push(self.workers.swap_remove(w));
            } else {
                w += 1;
            }
        }
    }

    /// The pool is terminated: kills the leased workers (their callers see them end and hand
    /// them back) and waits until all are back.
    fn end_leases(&mut self) {
        let mut killed = false;
        loop {
            {
                let mut st = self.shared.lock();
                self.workers.append(&mut st.returned);
                self.workers.append(&mut st.parked);
                if st.leased.is_empty() {
                    return;
                }
                if !killed {
                    // Unreaped (only this thread reaps, and not a leased worker): their
                    // pids are theirs still.
                    for pid in &st.leased {
                        let _ = crate::sys::send_signal(*pid, crate::sys::SIGKILL);
                    }
                    killed = true;
                }
            }
            // Each hand-back wakes us.
            let _ = self.wake.recv_timeout(Duration::from_secs(1));
        }
    }

    /// Hands chunks of pending tasks to every worker with room; then, while a worker is idle
    /// with nothing pending, takes back a chunk queued behind another worker's running one.
    fn dispatch(&mut self) {
        self.dispatch_pending();
        while self.pending.is_empty() && self.steal() {
            self.dispatch_pending();
        }
    }

    /// Takes back the last queued chunk of a busy worker, if an idle worker could run it.
    fn steal(&mut self) -> bool {
        if !self.workers.iter().any(|w| w.inflight.is_empty()) {
            return false;
        }
        self.workers.iter_mut().any(|worker| {
            take_back(
                &mut worker.inflight,
                worker.ready,
                &worker.progress,
                &mut self.pending,
            )
        })
    }

    /// Breadth first: one chunk to every ready worker that has none, then a second to each.
    fn dispatch_pending(&mut self) {
        for depth in 1..=DEPTH {
            for w in 0..self.workers.len() {
                if self.pending.is_empty() {
                    return;
                }
                if !self.workers[w].ready || self.workers[w].inflight.len() >= depth {
                    continue;
                }
                let chunk = self.take_chunk();
                // A worker that is gone is replaced once `wait` reads its end.
                self.send_chunk(w, chunk);
            }
        }
    }

    /// The next chunk of the pending tasks (see [`Chunk::take`]).
    fn take_chunk(&mut self) -> Chunk {
        Chunk::take(&mut self.pending, &mut self.next_seq)
    }

    /// Sends a chunk to worker `w`; `false` if the worker is gone (the tasks are pending
    /// again).
    fn send_chunk(&mut self, w: usize, mut chunk: Chunk) -> bool {
        let items = match chunk.laid_out() {
            // Sent from the call's buffer as it lies.
            Some(span) => {
                let buffer: packed::SharedBytes = Arc::clone(&chunk.call) as _;
                Packed::shared(buffer, span, chunk.tasks.len())
            }
            None => {
                let bytes = chunk.tasks.iter().map(|t| t.args.len()).sum();
                let mut items = Packed::with_capacity(chunk.tasks.len(), bytes);
                for task in &chunk.tasks {
                    let args = &chunk.call.args()[task.args.clone()];
                    if let Err(e) = items.push(args, task.rare.fds()) {
                        // Out of descriptors: the whole chunk fails rather than runs
                        // half-armed.
                        for task in chunk.tasks {
                            let e = clone_io(&e);
                            let e = Error::io("cannot pass a task's descriptors to a worker", e);
                            fail(&chunk.call, task, e);
                        }
                        return true;
                    }
                }
                items
            }
        };
        let key = chunk.call.key.into();
        let worker = &mut self.workers[w];
        chunk.k = worker.sent;
        worker.progress.queue(chunk.k);
        let message = ToWorker::Chunk {
            k: chunk.k,
            first_seq: chunk.first_seq,
            key,
            items,
        };
        match worker.tasks.send(message) {
            Ok(()) => {
                crate::trace::dispatched(
                    worker.handle.name(),
                    worker.handle.pid(),
                    chunk.tasks.len(),
                );
                worker.sent += 1;
                worker.inflight.push_back(chunk);
                true
            }
            // Not sent: the slot goes back to what it was, and chunk `k` is sent next.
            Err(e) => {
                worker.progress.unqueue(chunk.k);
                if e.is_disconnected() {
                    // The worker is gone: its results channel reports it; the tasks wait
                    // for another worker.
                    self.pending.requeue(&chunk.call, chunk.tasks.into_iter());
                    return false;
                }
                for task in chunk.tasks {
                    fail(
                        &chunk.call,
                        task,
                        Error::other(format!("cannot hand a task to a worker: {e}")),
                    );
                }
                true
            }
        }
    }

    /// Waits for a submission, an outcome, a worker's death or a task's deadline, and handles
    /// what happened.
    fn wait(&mut self) {
        let deadline = self.next_deadline();
        let ready = {
            let mut select = Select::new();
            select.add(&self.wake);
            for w in &self.workers {
                select.add(&w.results);
            }
            let wait = match deadline {
                Some(after) => Wait::timeout(after),
                None => Wait::Forever,
            };
            // On an error, read everything: whatever failed shows there.
            select
                .ready_set(wait)
                .unwrap_or_else(|_| vec![true; self.workers.len() + 1])
        };
        if ready[0] {
            while self.wake.try_recv().is_ok() {}
        }
        // Read the workers that have something: outcomes, or their end. A death reorders
        // the workers (see `replace`): from there on, read them all, as before the poll.
        let mut shuffled = false;
        let mut w = 0;
        while w < self.workers.len() {
            if !shuffled && !ready.get(w + 1).copied().unwrap_or(true) {
                w += 1;
                continue;
            }
            if self.drain(w) {
                w += 1;
            } else {
                shuffled = true;
            }
        }
        self.check_timeouts();
    }

    /// Reads what worker `w` sent; `false` if it died (and was replaced at the same index or
    /// removed).
    fn drain(&mut self, w: usize) -> bool {
        loop {
            match self.workers[w].results.try_recv() {
                Ok(FromWorker::Done {
                    first_seq,
                    outcomes,
                }) => self.deliver(w, first_seq, outcomes),
                Ok(FromWorker::Ready) => {
                    self.workers[w].ready = true;
                    self.failed_starts = 0;
                }
                Ok(FromWorker::Skipped { first_seq }) => {
                    self.workers[w]
                        .inflight
                        .retain(|c| c.first_seq != first_seq);
                }
                Ok(FromWorker::InitFailed { message }) => {
                    self.shared.lock().broken = Some(message);
                }
                Err(e) if e.kind() == crate::ErrorKind::Empty => return true,
                Err(e) if e.is_disconnected() => {
                    self.replace(w, None);
                    return false;
                }
                // The worker's channel itself failed (the error stays): the worker is as good
                // as dead; replace it, and its tasks are handled as for a death.
                Err(e) if e.kind() == crate::ErrorKind::Io => {
                    let _ = self.workers[w].handle.kill();
                    self.replace(w, None);
                    return false;
                }
                // A message of the worker that cannot be read: the outcomes of its oldest
                // chunk are lost with it.
                Err(e) => {
                    if let Some(chunk) = self.workers[w].inflight.pop_front() {
                        for task in chunk.tasks {
                            let error = Error::other(format!("the task's outcome was lost: {e}"));
                            fail(&chunk.call, task, error);
                        }
                    }
                }
            }
        }
    }

    /// Routes the outcomes of a chunk's first tasks to their caller, in one message.
    fn deliver(&mut self, w: usize, first_seq: u64, outcomes: Packed) {
        let who = Arc::clone(&self.workers[w].who);
        let worker = &mut self.workers[w];
        let Some(pos) = worker
            .inflight
            .iter()
            .position(|c| c.first_seq == first_seq)
        else {
            return;
        };
        let mut chunk = worker.inflight.remove(pos).expect("position is valid");
        let done = outcomes.len().min(chunk.tasks.len());
        if done > 0 {
            let indices = chunk.tasks.drain(..done).map(|t| t.index).collect();
            let _ = chunk.call.sink.send(Done::Outcomes {
                indices: Indices::Many(indices),
                outcomes,
                who,
            });
        }
        // A worker that retired mid-chunk left the rest: another worker runs them.
        self.pending.requeue(&chunk.call, chunk.tasks.into_iter());
    }

    /// How long until the earliest running task passes its timeout.
    fn next_deadline(&self) -> Option<Duration> {
        let timeout = self.config.timeout?;
        let now = monotonic_ns();
        let mut soonest: Option<u64> = None;
        for w in &self.workers {
            if w.inflight.is_empty() {
                continue;
            }
            // A worker that holds tasks but has not started one yet is checked again within
            // a timeout.
            let limit = nanos(timeout);
            let left = match w.progress.current() {
                Some((_, started)) => started.saturating_add(limit).saturating_sub(now),
                None => limit,
            };
            soonest = Some(soonest.map_or(left, |s| s.min(left)));
        }
        soonest.map(|ns| Duration::from_nanos(ns.max(1_000_000)))
    }

    /// Kills the workers whose running task passed its timeout.
    fn check_timeouts(&mut self) {
        let Some(timeout) = self.config.timeout else {
            return;
        };
        let now = monotonic_ns();
        let mut w = 0;
        while w < self.workers.len() {
            let late = match self.workers[w].progress.current() {
                Some((seq, started)) if now >= started.saturating_add(nanos(timeout)) => Some(seq),
                _ => None,
            };
            match late {
                Some(seq) => {
                    let _ = self.workers[w].handle.kill();
                    self.replace(w, Some((seq, timeout)));
                }
                None => w += 1,
            }
        }
    }

    /// Worker `w` is gone (or killed for `timed_out`): reaps it, fails the task it was running,
    /// puts back the others it held, and starts a replacement.
    fn replace(&mut self, w: usize, timed_out: Option<(u64, Duration)>) {
        // The task it ran when it was found late, not whatever it reached since.
        let running = match timed_out {
            Some((seq, _)) => Some(seq),
            None => self.workers[w].progress.current().map(|(seq, _)| seq),
        };
        let who = self.workers[w].handle.who().clone();
        let exit = self.reap(w, &who);
        // Outcomes it sent before it ended still count.
        while let Ok(message) = self.workers[w].results.try_recv() {
            if let FromWorker::Done {
                first_seq,
                outcomes,
            } = message
            {
                self.deliver(w, first_seq, outcomes);
            }
        }
        let worker = self.workers.swap_remove(w);
        if !worker.ready && exit.is_some() {
            self.count_failed_start(exit.as_ref());
        }
        self.requeue(worker, &who, running, exit, timed_out);
        self.start_replacement(w);
    }

    /// Waits for worker `w` to end (killing it if it does not); the error its end is, if it
    /// did not exit cleanly.
    fn reap(&mut self, w: usize, who: &Who) -> Option<Error> {
        let handle = &mut self.workers[w].handle;
        match handle.join_timeout(Duration::from_secs(5)) {
            Ok(Some(())) => None,
            Ok(None) => {
                let _ = handle.kill();
                let _ = handle.join_timeout(Duration::from_secs(5));
                Some(Error::other(format!("{who} stopped answering")))
            }
            Err(e) => Some(e),
        }
    }

    /// A worker died before it was ready: after [`MAX_FAILED_STARTS`] in a row the pool is
    /// broken (its initializer fails, say) rather than replacing workers forever.
    fn count_failed_start(&mut self, exit: Option<&Error>) {
        self.failed_starts += 1;
        if self.failed_starts >= MAX_FAILED_STARTS {
            let why = exit.map_or_else(String::new, ToString::to_string);
            self.shared.lock().broken = Some(format!(
                "{MAX_FAILED_STARTS} workers in a row died before they were ready \
                 (the last: {why})"
            ));
        }
    }

    /// The tasks a gone worker held: the one it was `running` fails with its `exit` (or its
    /// timeout) if it ended abnormally, one that has now lost [`MAX_ATTEMPTS`] workers fails,
    /// the others go back to the front of the queue.
    fn requeue(
        &mut self,
        mut worker: Worker,
        who: &Who,
        running: Option<u64>,
        mut exit: Option<Error>,
        timed_out: Option<(u64, Duration)>,
    ) {
        let abnormal = exit.is_some() || timed_out.is_some();
        for chunk in worker.inflight.drain(..).rev() {
            let mut seq = chunk.first_seq + chunk.tasks.len() as u64;
            for task in chunk.tasks.into_iter().rev() {
                seq -= 1;
                if Some(seq) == running && abnormal {
                    let e = match timed_out {
                        Some((_, after)) => Error::new(Repr::Timeout {
                            what: format!("task {} on {who}", task.index),
                            after,
                        }),
                        None => exit
                            .take()
                            .unwrap_or_else(|| Error::other(format!("{who} exited"))),
                    };
                    fail(&chunk.call, task, e);
                } else if abnormal && task.rare.attempts() + 1 >= MAX_ATTEMPTS {
                    let e = Error::other(format!(
                        "{MAX_ATTEMPTS} workers died holding task {} (the last: {who})",
                        task.index
                    ));
                    fail(&chunk.call, task, e);
                } else {
                    let mut task = task;
                    if abnormal {
                        task.rare.add_attempt();
                    }
                    self.pending.push_front(&chunk.call, task);
                }
            }
        }
    }

    /// Starts a worker in the place `w` of one that is gone, unless the pool is stopping or
    /// broken (a broken pool's workers would only fail again).
    fn start_replacement(&mut self, w: usize) {
        {
            let st = self.shared.lock();
            if st.terminate || st.broken.is_some() {
                return;
            }
        }
        match self.spawn_worker() {
            Ok(worker) => {
                self.workers.push(worker);
                let last = self.workers.len() - 1;
                self.workers.swap(w.min(last), last);
            }
            Err(e) => {
                if self.workers.is_empty() {
                    self.shared.lock().broken = Some(format!("cannot start a worker: {e}"));
                }
            }
        }
    }

    fn spawn_worker(&mut self) -> Result<Worker> {
        let (tasks, tasks_rx) = crate::channel::<ToWorker>()?;
        let (results_tx, results) = crate::channel::<FromWorker>()?;
        let progress =
            Progress::new().map_err(|e| Error::io("cannot create a worker's progress word", e))?;
        let initializer = match &self.config.initializer {
            Some(Encoded { key, args, fds }) => {
                let mut packed = Packed::new();
                packed
                    .push(args, fds)
                    .map_err(|e| Error::io("cannot pass the initializer's descriptors", e))?;
                Some(InitCall {
                    key: key.clone(),
                    args: packed,
                })
            }
            None => None,
        };
        let boot = WorkerBoot {
            tasks: tasks_rx,
            results: results_tx,
            progress: progress.clone(),
            initializer,
            max_tasks: self.config.max_tasks,
            timed: self.config.timeout.is_some(),
        };
        let name = format!("{}-{}", self.config.name, self.spawned);
        self.spawned += 1;
        let handle = self
            .config
            .process
            .clone()
            .name(name)
            .spawn_entry(WORKER_KEY, boot)?;
        Ok(Worker {
            who: Arc::new(handle.who().clone()),
            handle,
            tasks,
            results,
            progress,
            inflight: VecDeque::new(),
            sent: 0,
            ready: false,
        })
    }

    /// Ends every worker: gracefully (they finish, see their task channel close and exit) or
    /// at once; fails whatever is left.
    fn stop(&mut self, now: bool) {
        let why = if now {
            "the pool was terminated before this task finished"
        } else {
            "the pool stopped before this task ran"
        };
        for mut worker in self.workers.drain(..) {
            // Ending its workers is the pool's doing: no failure to report.
            if now {
                let _ = worker.handle.kill_on_purpose();
            }
            drop(worker.tasks);
            if worker
                .handle
                .join_timeout(Duration::from_secs(10))
                .ok()
                .flatten()
                .is_none()
            {
                let _ = worker.handle.kill_on_purpose();
                let _ = worker.handle.join_timeout(Duration::from_secs(5));
            }
            for chunk in worker.inflight {
                for task in chunk.tasks {
                    fail(&chunk.call, task, Error::other(why));
                }
            }
        }
        self.fail_all(|| Error::other(why));
    }

    /// Fails every pending task (also those submitted meanwhile).
    fn fail_all(&mut self, error: impl Fn() -> Error) {
        self.absorb();
        for (call, task) in self.pending.drain() {
            fail(&call, task, error());
        }
    }
}

/// A duration in ns, saturated.
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn clone_io(e: &std::io::Error) -> std::io::Error {
    match e.raw_os_error() {
        Some(code) => std::io::Error::from_raw_os_error(code),
        None => std::io::Error::new(e.kind(), e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(chunk: usize) -> Arc<Call> {
        Arc::new(Call::new("k", sink().0, Vec::new(), chunk))
    }

    /// A run of `call`'s tasks at `indices`.
    fn run(call: &Arc<Call>, indices: std::ops::Range<usize>) -> Run {
        let tasks = indices
            .map(|index| Task {
                index,
                args: 0..0,
                rare: Rare::default(),
            })
            .collect();
        Run {
            call: Arc::clone(call),
            tasks,
        }
    }

    /// A queue of the runs.
    fn pending(runs: impl IntoIterator<Item = Run>) -> Pending {
        let mut pending = Pending::default();
        pending.append(&mut runs.into_iter().collect());
        pending
    }

    /// The indices of the tasks pending, in order.
    fn waiting(pending: &Pending) -> Vec<usize> {
        let runs = pending.runs.iter();
        runs.flat_map(|r| r.tasks.iter().map(|t| t.index)).collect()
    }

    fn indices(chunk: &Chunk) -> Vec<usize> {
        chunk.tasks.iter().map(|t| t.index).collect()
    }

    /// A call of `values` encoded as `Pool::map` encodes them (a header's room before each,
    /// the header written), and a run of its tasks.
    fn headed(values: &[u64], chunk: usize) -> Run {
        let mut args = Vec::new();
        let tasks = encode_tasks(values, &mut args, 0, 0).unwrap();
        let call = Arc::new(Call::with_headers("k", sink().0, args, chunk));
        let tasks = tasks.into();
        Run { call, tasks }
    }

    #[test]
    fn a_chunk_of_tasks_in_a_row_is_sent_as_its_span_of_the_calls_buffer() {
        let values = [1, 300, 70_000, 0, u64::MAX];
        let mut pending = pending([headed(&values, 3)]);
        let mut seq = 0;
        for want in [&values[..3], &values[3..]] {
            let chunk = Chunk::take(&mut pending, &mut seq);
            let span = chunk.laid_out().expect("tasks in a row");
            let buffer: packed::SharedBytes = Arc::clone(&chunk.call) as _;
            let mut entries = Packed::shared(buffer, span, chunk.tasks.len()).into_entries();
            for &value in want {
                let (bytes, fds) = entries.next_entry().expect("an entry per task");
                let got: u64 = crate::ipc::codec::decode_slice(bytes, fds).unwrap();
                assert_eq!(got, value);
            }
            assert!(entries.next_entry().is_none());
        }
    }

    #[test]
    fn a_chunk_with_a_gap_or_descriptors_or_no_headers_is_packed_task_by_task() {
        let mut three = headed(&[1, 2, 3], 3);
        let gap = Chunk::take(&mut pending([run_without(&mut three, 1)]), &mut 0);
        assert!(gap.laid_out().is_none(), "task 1 went elsewhere");
        let mut armed = headed(&[1, 2], 2);
        armed.tasks[1].rare = Rare::with_fds(vec![sys_fd()]);
        let armed = Chunk::take(&mut pending([armed]), &mut 0);
        assert!(
            armed.laid_out().is_none(),
            "its descriptors go beside the bytes"
        );
        let plain = Chunk::take(&mut pending([run(&call(2), 0..2)]), &mut 0);
        assert!(
            plain.laid_out().is_none(),
            "no headers in its call's buffer"
        );
        let whole = Chunk::take(&mut pending([headed(&[1, 2], 2)]), &mut 0);
        assert!(whole.laid_out().is_some());
    }

    /// `run` without its task at `index`.
    fn run_without(run: &mut Run, index: usize) -> Run {
        let tasks = std::mem::take(&mut run.tasks);
        let tasks = tasks.into_iter().filter(|t| t.index != index).collect();
        Run {
            call: Arc::clone(&run.call),
            tasks,
        }
    }

    #[test]
    fn a_queued_task_takes_four_words() {
        assert_eq!(size_of::<Task>(), 4 * size_of::<usize>());
    }

    #[test]
    fn a_tasks_rare_parts_keep_its_descriptors_and_count_its_attempts() {
        let mut plain = Rare::with_fds(Vec::new());
        assert!(plain.0.is_none(), "nothing allocated for a plain task");
        plain.add_attempt();
        plain.add_attempt();
        assert_eq!((plain.attempts(), plain.fds().len()), (2, 0));
        let mut armed = Rare::with_fds(vec![sys_fd(), sys_fd()]);
        assert_eq!((armed.attempts(), armed.fds().len()), (0, 2));
        armed.add_attempt();
        assert_eq!((armed.attempts(), armed.fds().len()), (1, 2));
    }

    #[test]
    fn a_chunk_takes_one_calls_tasks_up_to_its_size() {
        let (a, b) = (call(3), call(10));
        let mut pending = pending([run(&a, 0..5), run(&b, 0..2)]);
        let mut seq = 100;
        let first = Chunk::take(&mut pending, &mut seq);
        assert_eq!(
            (indices(&first), first.first_seq, seq),
            (vec![0, 1, 2], 100, 103)
        );
        // The rest of `a`, not `b`'s tasks behind it.
        let second = Chunk::take(&mut pending, &mut seq);
        assert_eq!((indices(&second), second.first_seq), (vec![3, 4], 103));
        let third = Chunk::take(&mut pending, &mut seq);
        assert!(Arc::ptr_eq(&third.call, &b));
        assert_eq!((indices(&third), seq), (vec![0, 1], 107));
        assert!(pending.is_empty());
    }

    #[test]
    fn a_chunk_never_holds_more_descriptors_than_a_message_carries() {
        let c = call(1000);
        let mut tasks = run(&c, 0..3);
        for task in &mut tasks.tasks {
            task.rare = Rare::with_fds(
                (0..crate::ipc::frame::MAX_FDS / 2)
                    .map(|_| sys_fd())
                    .collect(),
            );
        }
        let mut pending = pending([tasks]);
        let mut seq = 0;
        assert_eq!(indices(&Chunk::take(&mut pending, &mut seq)), [0, 1]);
        assert_eq!(indices(&Chunk::take(&mut pending, &mut seq)), [2]);
    }

    fn sys_fd() -> OwnedFd {
        std::fs::File::open("/dev/null").unwrap().into()
    }

    fn queued(pending: &mut Pending, progress: &Progress, k: u64) -> Chunk {
        let mut chunk = Chunk::take(pending, &mut 0);
        chunk.k = k;
        progress.queue(k);
        chunk
    }

    #[test]
    fn only_a_chunk_queued_behind_another_and_not_started_is_taken_back() {
        let c = call(2);
        let progress = Progress::new().unwrap();
        let mut pending = pending([run(&c, 0..6)]);
        let mut inflight = VecDeque::new();
        inflight.push_back(queued(&mut pending, &progress, 0));
        // One chunk of a ready worker is the one it runs: it stays.
        assert!(!take_back(&mut inflight, true, &progress, &mut pending));
        inflight.push_back(queued(&mut pending, &progress, 1));
        assert_eq!(waiting(&pending), [4, 5]);
        assert!(take_back(&mut inflight, true, &progress, &mut pending));
        // Its tasks are first in line again, in order; the chunk waits for its `Skipped`.
        assert_eq!(waiting(&pending), [2, 3, 4, 5]);
        assert_eq!(pending.runs.len(), 1, "back in the run they came from");
        assert!(inflight[1].revoked && inflight[1].tasks.is_empty());
        assert!(
            !take_back(&mut inflight, true, &progress, &mut pending),
            "once"
        );
    }

    #[test]
    fn a_chunk_the_worker_started_is_not_taken_back() {
        let c = call(1);
        let progress = Progress::new().unwrap();
        let mut pending = pending([run(&c, 0..3)]);
        let mut inflight = VecDeque::new();
        inflight.push_back(queued(&mut pending, &progress, 0));
        // A worker still in its initializer holds even its first chunk idle.
        let mut early = VecDeque::new();
        early.push_back(queued(&mut pending, &progress, 1));
        assert!(take_back(&mut early, false, &progress, &mut pending));
        inflight.push_back(queued(&mut pending, &progress, 2));
        // The worker took chunk 2 before the pool could.
        assert!(progress.take(2));
        assert!(!take_back(&mut inflight, true, &progress, &mut pending));
        assert_eq!(inflight[1].tasks.len(), 1);
    }
}
