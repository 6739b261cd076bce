//! [`Pool`]: the local pool's map family over every node that serves this build, and the
//! messages between callers and nodes.
//!
//! A call's tasks go, in chunks, into one JetStream work-queue stream (`MP_TASKS`, subject
//! `multiproc.task.<build>`), which the nodes of that build share through one pull consumer.
//! A node runs each chunk in its local pool and publishes each outcome to the call's reply
//! subject in a second stream (`MP_RESULTS`, so that results, too, survive a restart of the
//! server), then acknowledges the chunk; while a chunk runs it tells the server it is still
//! at work, so a node that dies has its chunks given to another within [`ACK_WAIT`]. The
//! caller keeps the first outcome of each task and drops repeats: at least once to the
//! nodes, exactly once to the caller. A chunk delivered [`MAX_DELIVER`] times without an
//! acknowledgement (it killed every node that took it) fails its tasks: the server reports
//! it (a JetStream advisory the caller listens to) when the next live node asks for work.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, PullConsumer, pull};
use async_nats::jetstream::stream::{self, RetentionPolicy, StorageType};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{Cluster, describe};
use crate::bytes::Bytes;
use crate::error::{Error, ErrorKind, Repr, Result, Who};
use crate::ipc::codec as wire;
use crate::ipc::packed::Packed;
use crate::pool::results::{AsyncResult, Imap, ImapUnordered, collect_in_order};
use crate::pool::scheduler::{self, Done, Indices, Results, Sink};
use crate::registry;
use crate::spawn::ProcessFn;

/// The stream every call's tasks go through.
pub(super) const TASKS: &str = "MP_TASKS";
/// The stream every call's results go through, each call on a subject of its own.
pub(super) const RESULTS: &str = "MP_RESULTS";
/// How long results nobody collected stay in the server (their caller died).
const RESULTS_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// How long a node may hold a chunk without a word before the server gives it to another.
pub(super) const ACK_WAIT: Duration = Duration::from_secs(3);
/// How often a node says it still works on a chunk.
pub(super) const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// Deliveries of one chunk before its tasks fail (each one killed the node that took it).
pub(super) const MAX_DELIVER: i64 = 3;
/// The subject nodes answer discovery requests on.
pub(super) const DISCOVERY: &str = "multiproc.nodes";

/// One chunk of a call's tasks: caller → node.
#[derive(Serialize, Deserialize)]
pub(super) struct TaskChunk {
    /// Where the outcomes go.
    pub(super) reply: String,
    /// The caller's build (see `registry::build_id`).
    pub(super) build: String,
    pub(super) key: String,
    /// The call's index of the chunk's first task.
    pub(super) first: u64,
    /// The tasks' encoded arguments, one after the other, and where each ends.
    pub(super) args: Bytes,
    pub(super) ends: Vec<u32>,
}

/// Outcomes of some of a chunk's tasks: node → caller.
#[derive(Serialize, Deserialize)]
pub(super) enum Delivery {
    Outcomes {
        /// Call indices.
        indices: Vec<u64>,
        /// Each an encoded `Outcome<R>`.
        outcomes: Vec<Bytes>,
        worker: String,
        pid: Option<u32>,
        node: String,
    },
    Failed {
        index: u64,
        error: RemoteError,
    },
}

/// An error as it crosses machines.
#[derive(Serialize, Deserialize)]
pub(super) struct RemoteError {
    pub(super) kind: String,
    pub(super) text: String,
    pub(super) node: String,
    pub(super) signal: Option<i32>,
    pub(super) code: Option<i32>,
}

impl RemoteError {
    pub(super) fn new(e: &Error, node: &str) -> RemoteError {
        RemoteError {
            kind: format!("{:?}", e.kind()),
            text: e.to_string(),
            node: node.to_string(),
            signal: e.signal(),
            code: e.exit_code(),
        }
    }

    pub(super) fn into_error(self) -> Error {
        Error::remote(
            ErrorKind::from_name(&self.kind),
            self.text,
            self.node,
            self.signal,
            self.code,
        )
    }
}

/// What a node says of itself when asked.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub(super) struct NodeInfo {
    pub(super) node: String,
    pub(super) build: String,
    pub(super) workers: u32,
}

/// The local pool's map family over the nodes of a cluster that serve this build; from
/// [`Cluster::pool`].
///
/// Each task runs in a crash-isolated worker process of some node, as in a local
/// [`Pool`](crate::Pool): its panic, or the death of its worker, is that task's typed
/// error. A node killed mid-call loses nothing: the chunks it held go to other nodes within
/// 3 s. Results come back exactly once each.
///
/// # Examples
///
/// ```no_run
/// #[multiproc::process]
/// fn square(n: u64) -> u64 {
///     n * n
/// }
///
/// #[multiproc::main]
/// fn main() -> multiproc::Result<()> {
///     let cluster = multiproc::cluster::Cluster::connect("nats://127.0.0.1:4222")?;
///     let pool = cluster.pool()?;
///     let squares: Vec<u64> = pool.map(square, 0..10_000u64)?;
///     assert_eq!(squares[3], 9);
///     Ok(())
/// }
/// ```
#[derive(Clone)]
pub struct Pool {
    cluster: Cluster,
    build: String,
    /// Worker processes of the nodes found when the pool was made (for chunk sizes).
    workers: usize,
    chunksize: Option<usize>,
}

impl Cluster {
    /// A pool over every node of this cluster that serves this build.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// #[multiproc::main]
    /// fn main() -> multiproc::Result<()> {
    ///     let cluster = multiproc::cluster::Cluster::connect("nats://127.0.0.1:4222")?;
    ///     match cluster.pool() {
    ///         Ok(pool) => println!("{pool:?}"), // no node yet is fine: tasks wait for one
    ///         Err(e) if e.kind() == multiproc::ErrorKind::BuildMismatch => eprintln!("{e}"),
    ///         Err(e) => return Err(e),
    ///     }
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// [`ErrorKind::BuildMismatch`] when nodes answer but
    /// none serves this build (the message names both builds); `Unreachable` when the server
    /// does not answer. No node at all is not an error: tasks wait in the server for one.
    pub fn pool(&self) -> Result<Pool> {
        let build = registry::build_id();
        self.ensure_tasks_stream(&build)?;
        let nodes = self.discover(Duration::from_millis(300))?;
        let ours: Vec<&NodeInfo> = nodes.iter().filter(|n| n.build == build).collect();
        if ours.is_empty()
            && let Some(other) = nodes.first()
        {
            return Err(other_build(other, &build));
        }
        Ok(Pool {
            cluster: self.clone(),
            build,
            workers: ours
                .iter()
                .map(|n| n.workers as usize)
                .sum::<usize>()
                .max(1),
            chunksize: None,
        })
    }

    /// The stream of tasks and the consumer that the nodes of `build` share.
    pub(super) fn ensure_tasks_stream(&self, build: &str) -> Result<PullConsumer> {
        let jetstream = self.inner.jetstream.clone();
        let build = build.to_string();
        let opened = self.block_on(async move {
            let stream = jetstream
                .get_or_create_stream(stream::Config {
                    name: TASKS.to_string(),
                    subjects: vec!["multiproc.task.*".to_string()],
                    retention: RetentionPolicy::WorkQueue,
                    storage: StorageType::File,
                    ..Default::default()
                })
                .await
                .map_err(|e| describe(&e))?;
            jetstream
                .get_or_create_stream(results_stream())
                .await
                .map_err(|e| describe(&e))?;
            stream
                .get_or_create_consumer(
                    &consumer_name(&build),
                    pull::Config {
                        durable_name: Some(consumer_name(&build)),
                        filter_subject: task_subject(&build),
                        ack_policy: AckPolicy::Explicit,
                        ack_wait: ACK_WAIT,
                        max_deliver: MAX_DELIVER,
                        ..Default::default()
                    },
                )
                .await
                .map_err(|e| describe(&e))
        })?;
        opened.map_err(|e| self.unreachable(format!("cannot open the task stream: {e}")))
    }

    /// The nodes that answer within `wait`.
    pub(super) fn discover(&self, wait: Duration) -> Result<Vec<NodeInfo>> {
        let client = self.inner.client.clone();
        let found = self.block_on(async move {
            let inbox = client.new_inbox();
            let mut replies = client.subscribe(inbox.clone()).await.map_err(|e| describe(&e))?;
            client
                .publish_with_reply(DISCOVERY, inbox, Vec::new().into())
                .await
                .map_err(|e| describe(&e))?;
            let mut nodes = Vec::new();
            let deadline = tokio::time::sleep(wait);
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    _ = &mut deadline => break,
                    message = replies.next() => match message {
                        Some(m) => {
                            if let Ok(info) = wire::decode_slice::<NodeInfo>(&m.payload, Vec::new()) {
                                nodes.push(info);
                            }
                        }
                        None => break,
                    },
                }
            }
            Ok::<_, String>(nodes)
        })?;
        found.map_err(|e| self.unreachable(format!("cannot ask for the cluster's nodes: {e}")))
    }
}

/// The error for a caller of `build` that finds only `other`'s build.
pub(super) fn other_build(other: &NodeInfo, build: &str) -> Error {
    Error::new(Repr::BuildMismatch {
        who: Who {
            name: format!("cluster node {}", other.node),
            pid: None,
        },
        detail: format!(
            "it serves build {}, this program is build {build} (the two register different \
             entry points or argument types: deploy the same build to every host)",
            other.build
        ),
    })
}

/// A node's refusal of work from a caller of another build.
pub(super) fn other_build_error(node: &str, build: &str, theirs: &str) -> Error {
    Error::other(format!(
        "node {node} serves build {build}, the caller is build {theirs} (they register \
         different entry points or argument types: deploy the same build to every host)"
    ))
}

/// The stream of every call's results.
fn results_stream() -> stream::Config {
    stream::Config {
        name: RESULTS.to_string(),
        subjects: vec!["multiproc.result.>".to_string()],
        retention: RetentionPolicy::WorkQueue,
        storage: StorageType::File,
        max_age: RESULTS_MAX_AGE,
        ..Default::default()
    }
}

pub(super) fn consumer_name(build: &str) -> String {
    format!("nodes-{build}")
}

pub(super) fn task_subject(build: &str) -> String {
    format!("multiproc.task.{build}")
}

impl Pool {
    /// The same pool, cutting calls into chunks of `chunksize` tasks (one message each)
    /// instead of a size chosen from the task count and the nodes' workers.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// #[multiproc::main]
    /// fn main() -> multiproc::Result<()> {
    ///     let cluster = multiproc::cluster::Cluster::connect("nats://127.0.0.1:4222")?;
    ///     let pool = cluster.pool()?.with_chunksize(100);
    ///     println!("{pool:?}");
    ///     Ok(())
    /// }
    /// ```
    pub fn with_chunksize(mut self, chunksize: usize) -> Pool {
        self.chunksize = Some(chunksize.max(1));
        self
    }

    /// `f` over every item, on the nodes; results in input order.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// #[multiproc::process]
    /// fn square(n: u64) -> u64 {
    ///     n * n
    /// }
    ///
    /// #[multiproc::main]
    /// fn main() -> multiproc::Result<()> {
    ///     let cluster = multiproc::cluster::Cluster::connect("nats://127.0.0.1:4222")?;
    ///     let squares = cluster.pool()?.map(square, 1..=3_u64)?;
    ///     assert_eq!(squares, [1, 4, 9]); // in input order, whichever node ran each
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// The first failed task's error in input order (its panic, its worker's death, as
    /// locally; `Remote` details name the node); `Serialize` for arguments that cannot be
    /// encoded or carry descriptors; `Unreachable` when the server does not take the tasks.
    pub fn map<F, A, I>(&self, f: F, items: I) -> Result<Vec<F::Output>>
    where
        F: ProcessFn<(A,)>,
        A: Serialize + DeserializeOwned,
        F::Output: Serialize + DeserializeOwned,
        I: IntoIterator<Item = A>,
    {
        let _ = f;
        let (rx, n) = self.submit::<F, (A,)>(items.into_iter().map(|a| (a,)))?;
        collect_in_order(rx, n)
    }

    /// `f` over every tuple of arguments, unpacked (Python's `starmap`).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// #[multiproc::process]
    /// fn add(a: u64, b: u64) -> u64 {
    ///     a + b
    /// }
    ///
    /// #[multiproc::main]
    /// fn main() -> multiproc::Result<()> {
    ///     let cluster = multiproc::cluster::Cluster::connect("nats://127.0.0.1:4222")?;
    ///     let pool = cluster.pool()?;
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
        let (rx, n) = self.submit::<F, A>(items)?;
        collect_in_order(rx, n)
    }

    /// As [`map`](Pool::map), yielding each result in input order as soon as it and those
    /// before it are in.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// #[multiproc::process]
    /// fn square(n: u64) -> u64 {
    ///     n * n
    /// }
    ///
    /// #[multiproc::main]
    /// fn main() -> multiproc::Result<()> {
    ///     let cluster = multiproc::cluster::Cluster::connect("nats://127.0.0.1:4222")?;
    ///     let pool = cluster.pool()?;
    ///     for r in pool.imap(square, 0..10u64)? {
    ///         println!("{}", r?);
    ///     }
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// Before any task runs: as [`map`](Pool::map); each item carries its task's error.
    pub fn imap<F, A, I>(&self, f: F, items: I) -> Result<Imap<F::Output>>
    where
        F: ProcessFn<(A,)>,
        A: Serialize + DeserializeOwned,
        F::Output: Serialize + DeserializeOwned,
        I: IntoIterator<Item = A>,
    {
        let _ = f;
        let (rx, n) = self.submit::<F, (A,)>(items.into_iter().map(|a| (a,)))?;
        Ok(Imap::new(rx, n))
    }

    /// As [`imap`](Pool::imap), in the order the results arrive, each with its input index.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// #[multiproc::process]
    /// fn square(n: u64) -> u64 {
    ///     n * n
    /// }
    ///
    /// #[multiproc::main]
    /// fn main() -> multiproc::Result<()> {
    ///     let cluster = multiproc::cluster::Cluster::connect("nats://127.0.0.1:4222")?;
    ///     let pool = cluster.pool()?;
    ///     for (i, r) in pool.imap_unordered(square, 0..10u64)? {
    ///         println!("{i}: {}", r?);
    ///     }
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
        let (rx, n) = self.submit::<F, (A,)>(items.into_iter().map(|a| (a,)))?;
        Ok(ImapUnordered::new(rx, n))
    }

    /// One call of `f` on some node.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// #[multiproc::process]
    /// fn square(n: u64) -> u64 {
    ///     n * n
    /// }
    ///
    /// #[multiproc::main]
    /// fn main() -> multiproc::Result<()> {
    ///     let cluster = multiproc::cluster::Cluster::connect("nats://127.0.0.1:4222")?;
    ///     let pool = cluster.pool()?;
    ///     assert_eq!(pool.apply(square, (3,))?, 9);
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

    /// Starts one call of `f` on some node; the [`AsyncResult`] gets its result (and is a
    /// future).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// #[multiproc::process]
    /// fn square(n: u64) -> u64 {
    ///     n * n
    /// }
    ///
    /// #[multiproc::main]
    /// fn main() -> multiproc::Result<()> {
    ///     let cluster = multiproc::cluster::Cluster::connect("nats://127.0.0.1:4222")?;
    ///     let pool = cluster.pool()?;
    ///     let pending = pool.apply_async(square, (4,))?;
    ///     assert_eq!(pending.get()?, 16);
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// Before the task runs: as [`map`](Pool::map).
    pub fn apply_async<F, A>(&self, f: F, args: A) -> Result<AsyncResult<F::Output>>
    where
        F: ProcessFn<A>,
        A: Serialize + DeserializeOwned,
        F::Output: Serialize + DeserializeOwned,
    {
        let _ = f;
        let (rx, _) = self.submit::<F, A>([args])?;
        Ok(AsyncResult::new(rx))
    }

    /// Encodes the tasks, starts collecting their outcomes, then publishes them in chunks.
    fn submit<F, A: Serialize>(
        &self,
        items: impl IntoIterator<Item = A>,
    ) -> Result<(Results, usize)>
    where
        F: ProcessFn<A>,
    {
        let key = registry::resolve_fn::<F, A>()?;
        let mut args = Vec::new();
        let mut ends = Vec::new();
        let mut carried = 0;
        wire::encode_each(items, &mut args, 0, |range, fds| {
            carried += fds.len();
            ends.push(range.end);
        })
        .map_err(Error::serialize::<A>)?;
        if carried > 0 {
            return Err(Error::serialize::<A>(format!(
                "the arguments carry {carried} file descriptors (channel ends, local queues, \
                 Bytes or SharedMemory), which cannot cross machines"
            )));
        }
        let n = ends.len();
        let limit = self.cluster.inner.client.server_info().max_payload / 2;
        let chunk = self
            .chunksize
            .unwrap_or_else(|| (n / (self.workers * 4)).clamp(1, 1024));
        let mut chunks = Vec::new();
        let mut start = 0;
        let mut first = 0;
        while first < n {
            let mut last = (first + chunk).min(n);
            // Within the server's max_payload: fewer tasks per message when they are large.
            while last > first + 1 && ends[last - 1] - start > limit {
                last = first + (last - first) / 2;
            }
            // A single task larger than that goes through the object store (`blob`).
            let end = ends[last - 1];
            chunks.push((
                first as u64,
                args[start..end].to_vec(),
                ends[first..last]
                    .iter()
                    .map(|e| (e - start) as u32)
                    .collect::<Vec<_>>(),
            ));
            start = end;
            first = last;
        }
        let (sink, rx) = scheduler::sink();
        let dispatcher = self.cluster.dispatcher()?;
        let call = call_id();
        let reply = dispatcher.reply_subject(&call);
        dispatcher.open(&call, sink, n);
        let jetstream = self.cluster.inner.jetstream.clone();
        let subject = task_subject(&self.build);
        let build = self.build.clone();
        let max_payload = self.cluster.inner.client.server_info().max_payload;
        let sent = {
            let (dispatcher, call) = (Arc::clone(&dispatcher), call.clone());
            self.cluster.block_on(async move {
                for (first, args, ends) in chunks {
                    let len = ends.len() as u64;
                    let chunk = TaskChunk {
                        reply: reply.clone(),
                        build: build.clone(),
                        key: key.to_string(),
                        first,
                        args: Bytes::from(args),
                        ends,
                    };
                    let payload = wire::with_encoded(&chunk, |bytes, _| bytes.to_vec())
                        .map_err(|e| format!("cannot encode a task chunk: {e}"))?;
                    let mut headers = async_nats::HeaderMap::new();
                    let id = format!("{call}-{first}");
                    headers.insert("Nats-Msg-Id", id.as_str());
                    let payload =
                        super::blob::wrap(&jetstream, &mut headers, payload, max_payload, &id)
                            .await?;
                    let ack = jetstream
                        .publish_with_headers(subject.clone(), headers, payload.into())
                        .await
                        .map_err(|e| describe(&e))?
                        .await
                        .map_err(|e| describe(&e))?;
                    dispatcher.chunk_sent(&call, ack.sequence, first..first + len);
                }
                Ok::<_, String>(())
            })?
        };
        if let Err(e) = sent {
            dispatcher.close(&call);
            return Err(self
                .cluster
                .unreachable(format!("cannot submit the tasks: {e}")));
        }
        Ok((rx, n))
    }
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cluster::Pool(build {}, {} workers)",
            self.build, self.workers
        )
    }
}

/// A call id no other call uses.
pub(super) fn call_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}x{}x{}",
        std::process::id(),
        crate::sys::monotonic_ns(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Every call of one [`Cluster`]: one results consumer (filter `multiproc.result.<token>.*`)
/// and one advisory subscription, made at its first call, whose deliveries go to the call
/// their subject names. Nothing per call touches the server's API.
pub(super) struct Dispatcher {
    /// The cluster's part of the result subjects.
    token: String,
    jetstream: async_nats::jetstream::Context,
    calls: std::sync::Mutex<Calls>,
}

#[derive(Default)]
struct Calls {
    by_id: HashMap<String, CallState>,
    /// Which call's tasks each task chunk (by stream sequence) holds.
    chunks: HashMap<u64, (String, std::ops::Range<u64>)>,
}

struct CallState {
    sink: Sink,
    settled: HashSet<u64>,
    n: usize,
    sequences: Vec<u64>,
}

impl Cluster {
    /// The cluster's dispatcher, started at its first call.
    pub(super) fn dispatcher(&self) -> Result<Arc<Dispatcher>> {
        let mut slot = self
            .inner
            .dispatcher
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(d) = slot.as_ref() {
            return Ok(Arc::clone(d));
        }
        let token = call_id();
        let client = self.inner.client.clone();
        let jetstream = self.inner.jetstream.clone();
        let name = format!("caller-{token}");
        let filter = format!("multiproc.result.{token}.*");
        let alive = token.clone();
        let advisory = format!("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{TASKS}.*");
        let subscribed = self.block_on(async move {
            let stream = jetstream
                .get_or_create_stream(results_stream())
                .await
                .map_err(|e| describe(&e))?;
            let results: PullConsumer = stream
                .get_or_create_consumer(
                    &name,
                    pull::Config {
                        durable_name: Some(name.clone()),
                        filter_subject: filter,
                        ack_policy: AckPolicy::Explicit,
                        // Results handed to a pull that a restart of the server cut off
                        // come again this soon (repeats are dropped).
                        ack_wait: Duration::from_secs(2),
                        // Gone on its own once this caller is.
                        inactive_threshold: Duration::from_secs(600),
                        ..Default::default()
                    },
                )
                .await
                .map_err(|e| describe(&e))?;
            let advisories = client.subscribe(advisory).await.map_err(|e| describe(&e))?;
            let asked = client
                .subscribe(alive_subject(&alive))
                .await
                .map_err(|e| describe(&e))?;
            Ok::<_, String>((results, advisories, asked))
        })?;
        let (results, advisories, mut asked) = subscribed
            .map_err(|e| self.unreachable(format!("cannot subscribe for results: {e}")))?;
        // "Still there": answered for as long as this cluster's runtime runs.
        let client = self.inner.client.clone();
        self.inner.runtime.handle.spawn(async move {
            while let Some(request) = asked.next().await {
                if let Some(reply) = request.reply {
                    let _ = client.publish(reply, Vec::new().into()).await;
                }
            }
        });
        let dispatcher = Arc::new(Dispatcher {
            token,
            jetstream: self.inner.jetstream.clone(),
            calls: std::sync::Mutex::new(Calls::default()),
        });
        self.inner
            .runtime
            .handle
            .spawn(Arc::clone(&dispatcher).run(results, advisories));
        *slot = Some(Arc::clone(&dispatcher));
        Ok(dispatcher)
    }
}

impl Dispatcher {
    fn lock(&self) -> std::sync::MutexGuard<'_, Calls> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Where the outcomes of `call` go.
    pub(super) fn reply_subject(&self, call: &str) -> String {
        format!("multiproc.result.{}.{call}", self.token)
    }

    /// Where nodes ask whether this caller is still there (see `spawn`).
    pub(super) fn alive_subject(&self) -> String {
        alive_subject(&self.token)
    }

    /// Registers a call of `n` tasks (before any of them is published).
    pub(super) fn open(&self, call: &str, sink: Sink, n: usize) {
        self.lock().by_id.insert(
            call.to_string(),
            CallState {
                sink,
                settled: HashSet::new(),
                n,
                sequences: Vec::new(),
            },
        );
    }

    fn chunk_sent(&self, call: &str, sequence: u64, tasks: std::ops::Range<u64>) {
        let mut calls = self.lock();
        if let Some(state) = calls.by_id.get_mut(call) {
            state.sequences.push(sequence);
            calls.chunks.insert(sequence, (call.to_string(), tasks));
        }
    }

    /// Forgets a call (done, or its caller stopped waiting).
    pub(super) fn close(&self, call: &str) {
        let mut calls = self.lock();
        if let Some(state) = calls.by_id.remove(call) {
            for seq in state.sequences {
                calls.chunks.remove(&seq);
            }
        }
    }

    async fn run(self: Arc<Self>, results: PullConsumer, mut advisories: async_nats::Subscriber) {
        loop {
            // Bounded: a pull whose connection drops may never hear its end.
            let pull = async {
                let pulled = tokio::time::timeout(Duration::from_secs(3), async {
                    // What is there now; else wait (a while) for one.
                    let mut messages = Vec::new();
                    let mut now = results
                        .fetch()
                        .max_messages(256)
                        .messages()
                        .await
                        .map_err(drop)?;
                    while let Some(message) = now.next().await {
                        messages.push(message.map_err(drop)?);
                    }
                    if messages.is_empty() {
                        let mut one = results
                            .batch()
                            .max_messages(1)
                            .expires(Duration::from_secs(1))
                            .messages()
                            .await
                            .map_err(drop)?;
                        while let Some(message) = one.next().await {
                            messages.push(message.map_err(drop)?);
                        }
                    }
                    Ok::<_, ()>(messages)
                })
                .await;
                pulled.unwrap_or(Err(()))
            };
            tokio::select! {
                batch = pull => {
                    let Ok(batch) = batch else {
                        // The server is away: the client reconnects, the pull is retried.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    };
                    for message in batch {
                        let payload = match super::blob::unwrap(&self.jetstream, message.headers.as_ref(), &message.payload).await {
                            Ok(payload) => payload,
                            // Not acknowledged: it comes again.
                            Err(_) => continue,
                        };
                        let _ = message.ack().await;
                        super::blob::discard(&self.jetstream, message.headers.as_ref()).await;
                        let call = message.subject.rsplit('.').next().unwrap_or_default().to_string();
                        match wire::decode_slice::<Delivery>(&payload, Vec::new()) {
                            Ok(delivery) => self.deliver(&call, delivery),
                            Err(_) => eprintln!(
                                "multiproc: dropped a malformed result message on {}",
                                message.subject
                            ),
                        }
                    }
                }
                message = advisories.next() => {
                    let Some(message) = message else { return };
                    if let Some(seq) = stream_seq(&message.payload) {
                        self.give_up(seq);
                    }
                }
            }
        }
    }

    fn deliver(&self, call: &str, delivery: Delivery) {
        let mut calls = self.lock();
        let Some(state) = calls.by_id.get_mut(call) else {
            return; // a repeat for a call that is complete, or whose caller stopped
        };
        let alive = deliver(&state.sink, &mut state.settled, delivery).is_ok();
        let done = state.settled.len() >= state.n;
        drop(calls);
        if done || !alive {
            self.close(call);
        }
    }

    /// Fails the unsettled tasks of the chunk at stream sequence `seq`.
    fn give_up(&self, seq: u64) {
        let mut calls = self.lock();
        let Some((call, range)) = calls.chunks.get(&seq).cloned() else {
            return;
        };
        let Some(state) = calls.by_id.get_mut(&call) else {
            return;
        };
        for index in range {
            if state.settled.insert(index) {
                let _ = state.sink.send(Done::Failed {
                    index: index as usize,
                    error: Error::other(format!(
                        "task {index} was given to {MAX_DELIVER} cluster nodes and none \
                         finished it (each died or lost its connection while running it): \
                         it is not tried again"
                    )),
                });
            }
        }
        let done = state.settled.len() >= state.n;
        drop(calls);
        if done {
            self.close(&call);
        }
    }
}

/// Hands the new outcomes of a delivery to the sink (repeats are dropped).
fn deliver(
    sink: &Sink,
    settled: &mut HashSet<u64>,
    delivery: Delivery,
) -> std::result::Result<(), ()> {
    match delivery {
        Delivery::Failed { index, error } => {
            if settled.insert(index) {
                sink.send(Done::Failed {
                    index: index as usize,
                    error: error.into_error(),
                })
                .map_err(drop)?;
            }
        }
        Delivery::Outcomes {
            indices,
            outcomes,
            worker,
            pid,
            node,
        } => {
            let mut fresh = Vec::new();
            let mut packed = Packed::new();
            for (index, outcome) in indices.into_iter().zip(outcomes) {
                if settled.insert(index) {
                    fresh.push(index as usize);
                    packed.push_owned(&outcome, Vec::new());
                }
            }
            if !fresh.is_empty() {
                sink.send(Done::Outcomes {
                    indices: Indices::Many(fresh),
                    outcomes: packed,
                    who: Arc::new(Who {
                        name: format!("{worker} on node {node}"),
                        pid,
                    }),
                })
                .map_err(drop)?;
            }
        }
    }
    Ok(())
}

pub(super) fn alive_subject(token: &str) -> String {
    format!("multiproc.caller.{token}")
}

/// The `stream_seq` of a JetStream advisory (JSON).
fn stream_seq(payload: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(payload).ok()?;
    let at = text.find("\"stream_seq\"")? + "\"stream_seq\"".len();
    let rest = text[at..].trim_start().strip_prefix(':')?.trim_start();
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}
