//! [`Node`]: a host that runs cluster pool tasks in a local, crash-isolated worker pool.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::AckKind;
use async_nats::jetstream::Message;
use futures_util::StreamExt;

use super::pool::{
    ACK_WAIT, DISCOVERY, Delivery, NodeInfo, PROGRESS_EVERY, RemoteError, TaskChunk,
};
use super::spawn::Callers;
use super::{Cluster, describe};
use crate::bytes::Bytes;
use crate::error::{Error, Result};
use crate::ipc::codec as wire;
use crate::pool::scheduler::Done;
use crate::registry;

/// How to serve: from [`Cluster::node`].
///
/// # Examples
///
/// ```no_run
/// let cluster = multiproc::cluster::Cluster::connect("nats://127.0.0.1:4222")?;
/// cluster.node().workers(4).serve()?;
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Node {
    cluster: Cluster,
    workers: usize,
    name: Option<String>,
}

impl Cluster {
    /// A node of this cluster: [`serve`](Node::serve) runs the tasks that callers of this
    /// build submit through [`Cluster::pool`], each in a local worker process.
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
    ///     if std::env::args().any(|a| a == "--node") {
    ///         return cluster.node().serve(); // run the tasks of this build's callers
    ///     }
    ///     let squares = cluster.pool()?.map(square, 0..4_u64)?;
    ///     assert_eq!(squares, [0, 1, 4, 9]);
    ///     Ok(())
    /// }
    /// ```
    pub fn node(&self) -> Node {
        Node {
            cluster: self.clone(),
            workers: std::thread::available_parallelism().map_or(2, usize::from),
            name: None,
        }
    }
}

impl Node {
    /// How many worker processes run tasks at once (default: the machine's cores).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let cluster = multiproc::cluster::Cluster::connect("nats://127.0.0.1:4222")?;
    /// cluster.node().workers(2).serve()?; // two tasks at a time, whatever the cores
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn workers(mut self, workers: usize) -> Node {
        self.workers = workers.max(1);
        self
    }

    /// The node's name in results and errors (default: host name and pid).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let cluster = multiproc::cluster::Cluster::connect("nats://127.0.0.1:4222")?;
    /// cluster.node().name("gpu-box-1").serve()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn name(mut self, name: &str) -> Node {
        self.name = Some(name.to_string());
        self
    }

    /// Runs tasks until the process is asked to stop. A node that is a multiproc child stops
    /// at its parent's [`shutdown`](crate::JoinHandle::shutdown): it takes no more tasks,
    /// finishes those it holds, and returns. A top-level node that installed
    /// [`shutdown_on_signals`](crate::shutdown_on_signals) ends at SIGTERM or SIGINT once its
    /// workers have stopped; the chunks it had not finished go to other nodes (as a killed
    /// node's do, within 3 s).
    ///
    /// A malformed task message (from any client that can publish on the task subject) is
    /// reported on stderr and dropped; the node keeps serving.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// #[multiproc::main]
    /// fn main() -> multiproc::Result<()> {
    ///     multiproc::shutdown_on_signals(std::time::Duration::from_secs(30))?;
    ///     let cluster = multiproc::cluster::Cluster::connect("nats://127.0.0.1:4222")?;
    ///     cluster.node().serve() // until SIGTERM or SIGINT, then finishes what it holds
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// When the local pool cannot start, or the server cannot be reached for longer than
    /// the client's reconnection allows.
    pub fn serve(self) -> Result<()> {
        let node = self.name.clone().unwrap_or_else(super::this_process);
        let build = registry::build_id();
        let cluster = self.cluster;
        let consumer = cluster.ensure_tasks_stream(&build)?;
        let pool = Arc::new(
            crate::Pool::builder()
                .workers(self.workers)
                .name(format!("node {node}"))
                .build()?,
        );
        cluster.answer_discovery(NodeInfo {
            node: node.clone(),
            build: build.clone(),
            workers: self.workers as u32,
        })?;
        let callers = Arc::new(Callers::default());
        let spawned = cluster.serve_spawns(&node, &build, &callers)?;
        let held = Arc::new(Held::default());
        let room = self.workers * 2;
        let mut failing_since: Option<Instant> = None;
        while !crate::shutdown_requested() {
            // At most `room` chunks at once: two per worker, so none idles between chunks.
            let free = room.saturating_sub(held.wait_below(room, Duration::from_millis(200)));
            if free == 0 {
                continue;
            }
            let fetch = {
                let consumer = consumer.clone();
                async move {
                    // Bounded: a pull whose connection drops may never hear its end.
                    let fetch = async {
                        // What is there now, up to the room; else wait (a while) for one.
                        let mut messages = Vec::new();
                        let mut now = consumer
                            .fetch()
                            .max_messages(free)
                            .messages()
                            .await
                            .map_err(|e| describe(&e))?;
                        while let Some(message) = now.next().await {
                            messages.push(message.map_err(|e| describe(&*e))?);
                        }
                        if messages.is_empty() {
                            let mut one = consumer
                                .batch()
                                .max_messages(1)
                                .expires(Duration::from_millis(500))
                                .messages()
                                .await
                                .map_err(|e| describe(&e))?;
                            while let Some(message) = one.next().await {
                                messages.push(message.map_err(|e| describe(&*e))?);
                            }
                        }
                        Ok::<_, String>(messages)
                    };
                    tokio::time::timeout(Duration::from_secs(3), fetch)
                        .await
                        .unwrap_or_else(|_| Err("a pull for tasks got no answer".to_string()))
                }
            };
            let messages = match cluster.block_on(fetch)? {
                Ok(messages) => {
                    failing_since = None;
                    messages
                }
                Err(e) => {
                    let since = *failing_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > Duration::from_secs(60) {
                        return Err(
                            cluster.unreachable(format!("the node cannot fetch tasks: {e}"))
                        );
                    }
                    std::thread::sleep(Duration::from_millis(200));
                    continue;
                }
            };
            for message in messages {
                held.add();
                let (cluster, pool, held, callers, node, build) = (
                    cluster.clone(),
                    Arc::clone(&pool),
                    Arc::clone(&held),
                    Arc::clone(&callers),
                    node.clone(),
                    build.clone(),
                );
                std::thread::spawn(move || {
                    run_chunk(&cluster, &pool, &callers, &node, &build, message);
                    held.done();
                });
            }
        }
        // Finish what is held; the server gives the rest to other nodes.
        while held.wait_below(1, Duration::from_secs(1)) > 0 {}
        spawned.stop(SPAWNED_GRACE);
        Ok(())
    }
}

/// How long a stopping node gives the processes it started for callers to stop when asked.
const SPAWNED_GRACE: Duration = Duration::from_secs(10);

/// How many chunks a node holds, and a way to wait until it holds fewer.
#[derive(Default)]
struct Held {
    count: std::sync::Mutex<usize>,
    changed: std::sync::Condvar,
}

impl Held {
    fn add(&self) {
        *self.count.lock().unwrap_or_else(|e| e.into_inner()) += 1;
    }

    fn done(&self) {
        let mut count = self.count.lock().unwrap_or_else(|e| e.into_inner());
        *count = count.saturating_sub(1);
        self.changed.notify_all();
    }

    /// Waits at most `wait` until fewer than `limit` are held; returns how many are.
    fn wait_below(&self, limit: usize, wait: Duration) -> usize {
        let count = self.count.lock().unwrap_or_else(|e| e.into_inner());
        let (count, _) = self
            .changed
            .wait_timeout_while(count, wait, |c| *c >= limit)
            .unwrap_or_else(|e| e.into_inner());
        *count
    }
}

impl Cluster {
    /// Answers discovery requests with `info` until this cluster is dropped.
    fn answer_discovery(&self, info: NodeInfo) -> Result<()> {
        let client = self.inner.client.clone();
        let payload = wire::with_encoded(&info, |bytes, _| bytes.to_vec())
            .map_err(Error::serialize::<NodeInfo>)?;
        let subscribed = self.block_on({
            let client = client.clone();
            async move { client.subscribe(DISCOVERY).await.map_err(|e| describe(&e)) }
        })?;
        let mut requests =
            subscribed.map_err(|e| self.unreachable(format!("cannot subscribe: {e}")))?;
        self.inner.runtime.handle.spawn(async move {
            while let Some(request) = requests.next().await {
                if let Some(reply) = request.reply {
                    let _ = client.publish(reply, payload.clone().into()).await;
                }
            }
        });
        Ok(())
    }
}

/// Runs one chunk in the local pool, publishes each outcome, says it is still at work while
/// it runs, and acknowledges it at the end. Never panics on what the message holds.
fn run_chunk(
    cluster: &Cluster,
    pool: &crate::Pool,
    callers: &Callers,
    node: &str,
    build: &str,
    message: Message,
) {
    let jetstream = cluster.inner.jetstream.clone();
    let Ok(payload) = super::blob::unwrap_blocking(cluster, &message) else {
        // Not acknowledged: the chunk comes again (to this node or another).
        return;
    };
    let chunk = match wire::decode_slice::<TaskChunk>(&payload, Vec::new()) {
        Ok(chunk) => chunk,
        Err(e) => {
            eprintln!(
                "multiproc node {node}: rejected a malformed task message on {}: {e}",
                message.subject
            );
            let _ = cluster.block_on(async move { message.ack_with(AckKind::Term).await });
            return;
        }
    };
    // A caller that is gone (killed mid-call) does not keep the nodes busy.
    let caller = chunk.reply.split('.').nth(2).unwrap_or_default();
    if callers.gone(cluster, &super::pool::alive_subject(caller)) {
        let _ = cluster.block_on(async move { message.ack_with(AckKind::Term).await });
        return;
    }
    // Each outcome goes into the results stream, acknowledged by the server (retried, with
    // the same message id, while the server is away); the chunk is acknowledged only once
    // all are in, so a node that cannot deliver leaves the chunk to be run again.
    let delivered = std::cell::Cell::new(true);
    let publish = |delivery: &Delivery| {
        // Named by what it holds: a repeat of the same outcomes (a retry, a re-run of the
        // chunk) is dropped by the server, other outcomes of the same chunk are not.
        let id = match delivery {
            Delivery::Outcomes { indices, .. } => format!(
                "{}-{}-{}",
                chunk.reply,
                indices.first().copied().unwrap_or_default(),
                indices.len()
            ),
            Delivery::Failed { index, .. } => format!("{}-failed-{index}", chunk.reply),
        };
        if !store(cluster, &chunk.reply, &id, delivery) {
            delivered.set(false);
        }
    };
    let fail_all = |error: Error| {
        for i in 0..chunk.ends.len() as u64 {
            publish(&Delivery::Failed {
                index: chunk.first + i,
                error: RemoteError::new(&error, node),
            });
        }
    };
    if chunk.build != build {
        fail_all(super::pool::other_build_error(node, build, &chunk.build));
    } else if let Some(spans) = spans(&chunk) {
        match pool.submit_encoded(&chunk.key, chunk.args.to_vec(), spans) {
            Err(e) => fail_all(e),
            Ok(results) => {
                let mut left = chunk.ends.len();
                let mut last_word = Instant::now();
                while left > 0 {
                    match results.recv_timeout(PROGRESS_EVERY) {
                        Ok(done) => {
                            left = left.saturating_sub(settled(&done));
                            publish(&delivery(done, chunk.first, node));
                        }
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                    }
                    if last_word.elapsed() >= PROGRESS_EVERY.min(ACK_WAIT / 2) {
                        let message = message.clone();
                        let _ = cluster
                            .block_on(async move { message.ack_with(AckKind::Progress).await });
                        last_word = Instant::now();
                    }
                }
            }
        }
    } else {
        eprintln!(
            "multiproc node {node}: rejected a task chunk whose argument ends are out of order"
        );
        fail_all(Error::other(
            "a malformed task chunk (its argument ends are out of order)",
        ));
    }
    if delivered.get() {
        let _ = cluster.block_on(async move {
            if message.double_ack().await.is_ok() {
                super::blob::discard(&jetstream, message.headers.as_ref()).await;
            }
        });
    } else {
        eprintln!(
            "multiproc node {node}: could not deliver the results of a task chunk; it will \
             run again"
        );
        let _ = cluster.block_on(async move { message.ack_with(AckKind::Nak(None)).await });
    }
}

/// Stores `delivery` in the results stream on `subject` under the message id `id`,
/// acknowledged by the server; retries (with the same id, so the server keeps one) for up
/// to 30 s while the server is away. `false` if it could not.
pub(super) fn store(cluster: &Cluster, subject: &str, id: &str, delivery: &Delivery) -> bool {
    let Ok(payload) = wire::with_encoded(delivery, |bytes, _| bytes.to_vec()) else {
        return false;
    };
    let jetstream = cluster.inner.jetstream.clone();
    let (subject, id) = (subject.to_string(), id.to_string());
    let max_payload = cluster.inner.client.server_info().max_payload;
    let published = cluster.block_on(async move {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", id.as_str());
            let wrapped =
                super::blob::wrap(&jetstream, &mut headers, payload.clone(), max_payload, &id)
                    .await;
            if let Ok(body) = wrapped {
                let attempt = jetstream
                    .publish_with_headers(subject.clone(), headers, body.into())
                    .await;
                if let Ok(ack) = attempt
                    && ack.await.is_ok()
                {
                    return true;
                }
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    matches!(published, Ok(true))
}

/// Where each task's arguments lie, if the chunk's ends make sense.
fn spans(chunk: &TaskChunk) -> Option<Vec<std::ops::Range<usize>>> {
    let mut start = 0;
    let mut spans = Vec::with_capacity(chunk.ends.len());
    for &end in &chunk.ends {
        let end = end as usize;
        if end < start || end > chunk.args.len() {
            return None;
        }
        spans.push(start..end);
        start = end;
    }
    Some(spans)
}

fn settled(done: &Done) -> usize {
    match done {
        Done::Outcomes { indices, .. } => indices.as_slice().len(),
        Done::Failed { .. } => 1,
    }
}

/// A local delivery as it goes to the caller: indices in the call, outcomes without
/// descriptors (a result that carries one cannot cross machines).
fn delivery(done: Done, first: u64, node: &str) -> Delivery {
    match done {
        Done::Failed { index, error } => Delivery::Failed {
            index: first + index as u64,
            error: RemoteError::new(&error, node),
        },
        Done::Outcomes {
            indices,
            outcomes,
            who,
        } => {
            let mut entries = outcomes.into_entries();
            let indices = indices.as_slice();
            let mut out = Vec::with_capacity(indices.len());
            for _ in indices {
                let bytes = match entries.next_entry() {
                    Some((bytes, fds)) if fds.is_empty() => bytes.to_vec(),
                    _ => crate::proto::not_portable(),
                };
                out.push(Bytes::from(bytes));
            }
            Delivery::Outcomes {
                indices: indices.iter().map(|&i| first + i as u64).collect(),
                outcomes: out,
                worker: who.name.clone(),
                pid: who.pid,
                node: node.to_string(),
            }
        }
    }
}
