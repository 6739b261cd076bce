//! [`Cluster::spawn`]: a `#[process]` started on some node of this build, and its
//! [`JoinHandle`].
//!
//! The caller asks the nodes of its build (a NATS request to the queue group on
//! `multiproc.spawn.<build>`: one node takes it); the node starts the process as a local
//! child and answers with its name, pid and a control subject. When the process ends, the
//! node stores its outcome in the results stream (`MP_RESULTS`), where the caller's
//! dispatcher finds it as it finds a pool task's. A caller that waits asks the node every
//! second whether the process still runs: a node that does not answer for [`NODE_LOST`]
//! fails the handle. The node asks the caller in turn: a caller that is gone for
//! [`CALLER_LOST`] has its processes killed (children do not outlive their parent, across
//! machines either).

use std::any::type_name;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use async_nats::RequestErrorKind;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::node::store;
use super::pool::{Delivery, Dispatcher, RemoteError, call_id};
use super::{Cluster, describe};
use crate::bytes::Bytes;
use crate::error::{Error, Repr, Result, Who};
use crate::ipc::codec as wire;
use crate::pool::results::AsyncResult;
use crate::pool::scheduler;
use crate::registry;
use crate::spawn::{Process, ProcessFn};

/// How long a node may leave a waiting caller's "still running?" unanswered before the
/// handle fails.
const NODE_LOST: Duration = Duration::from_secs(5);
/// How long a node keeps a process whose caller stopped answering before it kills it.
const CALLER_LOST: Duration = Duration::from_secs(10);
/// How long after its node says a process ended its outcome may take to arrive (the node
/// retries storing it for 30 s).
const OUTCOME_LOST: Duration = Duration::from_secs(40);
/// How often each side asks after the other.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// How often a spawn asks again while no node of its build is there.
const RETRY: Duration = Duration::from_millis(50);
/// How long a node's watcher waits on its process between looks at its control messages.
const SLICE: Duration = Duration::from_millis(100);

/// Caller → node: start this.
#[derive(Serialize, Deserialize)]
struct SpawnRequest {
    build: String,
    key: String,
    state: Bytes,
    /// Where the outcome goes (a results subject of the caller's dispatcher).
    reply: String,
    /// Where the node asks whether the caller is still there.
    caller: String,
}

/// Node → caller: started, or why not.
#[derive(Serialize, Deserialize)]
enum SpawnReply {
    Started {
        node: String,
        name: String,
        pid: u32,
        /// Where the caller asks after the process or has it killed.
        control: String,
    },
    Refused(RemoteError),
}

const ASK_ALIVE: &[u8] = b"alive";
const ASK_KILL: &[u8] = b"kill";
const RUNNING: &[u8] = b"running";
const ENDED: &[u8] = b"ended";

fn spawn_subject(build: &str) -> String {
    format!("multiproc.spawn.{build}")
}

/// A process started on a cluster node by [`Cluster::spawn`]: the local
/// [`JoinHandle`](crate::JoinHandle)'s shape, across machines.
///
/// Its panic, its signal or its exit code comes back typed as locally. A node that dies (or
/// stops answering for 5 s) while someone waits fails the handle with
/// [`ErrorKind::Disconnected`](crate::ErrorKind::Disconnected); the process dies with its
/// node. A caller that dies has its processes killed by their nodes within 10 s. Dropping
/// the handle detaches the process, as locally: it runs on while this `Cluster`'s connection
/// lasts.
///
/// # Examples
///
/// ```no_run
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct Count {
///     to: u64,
/// }
///
/// #[multiproc::process]
/// impl Count {
///     fn run(self) -> u64 {
///         (1..=self.to).sum()
///     }
/// }
///
/// #[multiproc::main]
/// fn main() -> multiproc::Result<()> {
///     let cluster = multiproc::cluster::Cluster::connect("nats://127.0.0.1:4222")?;
///     let handle = cluster.spawn(Count { to: 10 })?;
///     println!("{} runs on node {} as pid {}", handle.name(), handle.node(), handle.pid());
///     assert_eq!(handle.join()?, 55);
///     Ok(())
/// }
/// ```
pub struct JoinHandle<R> {
    cluster: Cluster,
    result: AsyncResult<R>,
    dispatcher: Arc<Dispatcher>,
    call: String,
    node: String,
    name: String,
    pid: u32,
    control: String,
    joined: bool,
    /// Since when the node has not answered (while someone waits).
    silent_since: Option<Instant>,
    /// Since when the node has said the process ended, without its outcome here.
    ended_since: Option<Instant>,
}

impl Cluster {
    /// Starts `process` on some node of this cluster that serves this build (see
    /// [`Cluster::node`]), in a process of its own there, as [`spawn`](crate::Process::spawn)
    /// does here.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// #[derive(serde::Serialize, serde::Deserialize)]
    /// struct Double {
    ///     n: u64,
    /// }
    ///
    /// #[multiproc::process]
    /// impl Double {
    ///     fn run(self) -> u64 {
    ///         self.n * 2
    ///     }
    /// }
    ///
    /// #[multiproc::main]
    /// fn main() -> multiproc::Result<()> {
    ///     let cluster = multiproc::cluster::Cluster::connect("nats://127.0.0.1:4222")?;
    ///     assert_eq!(cluster.spawn(Double { n: 21 })?.join()?, 42);
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// `Disconnected` when no node serves this build within the request timeout (5 s unless
    /// [`Builder::request_timeout`](super::Builder::request_timeout) says otherwise),
    /// [`ErrorKind::BuildMismatch`](crate::ErrorKind::BuildMismatch) when only nodes of
    /// other builds answer (both builds named), `Serialize` for a state that cannot be
    /// encoded or carries descriptors, `Timeout` when no node answers within the request
    /// timeout, and the node's error when it cannot start the process.
    pub fn spawn<P>(&self, process: P) -> Result<JoinHandle<P::Output>>
    where
        P: Process + Serialize + DeserializeOwned,
        P::Output: Serialize + DeserializeOwned,
    {
        let key = registry::resolve_key(P::__KEY)?;
        self.spawn_entry(key, &process)
    }

    /// Starts a `#[multiproc::process]` function with its arguments on some node, as
    /// [`spawn`](crate::spawn) does here.
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
    ///     let cluster = multiproc::cluster::Cluster::connect("nats://127.0.0.1:4222")?;
    ///     assert_eq!(cluster.spawn_fn(add, (2, 3))?.join()?, 5);
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Cluster::spawn`].
    pub fn spawn_fn<F, A>(&self, f: F, args: A) -> Result<JoinHandle<F::Output>>
    where
        F: ProcessFn<A>,
        A: Serialize + DeserializeOwned,
        F::Output: Serialize + DeserializeOwned,
    {
        let _ = f;
        let key = registry::resolve_fn::<F, A>()?;
        self.spawn_entry(key, &args)
    }

    fn spawn_entry<T: Serialize, R: DeserializeOwned>(
        &self,
        key: &str,
        state: &T,
    ) -> Result<JoinHandle<R>> {
        let state = super::encode_portable(state)?;
        let build = registry::build_id();
        let dispatcher = self.dispatcher()?;
        let call = call_id();
        let (sink, rx) = scheduler::sink();
        dispatcher.open(&call, sink, 1);
        let request = SpawnRequest {
            build: build.clone(),
            key: key.to_string(),
            state: Bytes::from(state),
            reply: dispatcher.reply_subject(&call),
            caller: dispatcher.alive_subject(),
        };
        let started = self.ask_to_start(&request, &call);
        let reply = match started {
            Ok(reply) => reply,
            Err(e) => {
                dispatcher.close(&call);
                return Err(e);
            }
        };
        match reply {
            SpawnReply::Started {
                node,
                name,
                pid,
                control,
            } => Ok(JoinHandle {
                cluster: self.clone(),
                result: AsyncResult::new(rx),
                dispatcher,
                call,
                node,
                name,
                pid,
                control,
                joined: false,
                silent_since: None,
                ended_since: None,
            }),
            SpawnReply::Refused(error) => {
                dispatcher.close(&call);
                Err(error.into_error())
            }
        }
    }

    /// Sends `request` to one node of its build; its answer.
    fn ask_to_start(&self, request: &SpawnRequest, call: &str) -> Result<SpawnReply> {
        let payload = wire::with_encoded(request, |bytes, _| bytes.to_vec())
            .map_err(Error::serialize::<SpawnRequest>)?;
        let timeout = self.inner.request_timeout;
        let (client, jetstream) = (self.inner.client.clone(), self.inner.jetstream.clone());
        let max_payload = client.server_info().max_payload;
        let (subject, id) = (spawn_subject(&request.build), call.to_string());
        let asked = self.block_on(async move {
            let mut headers = async_nats::HeaderMap::new();
            let body = super::blob::wrap(&jetstream, &mut headers, payload, max_payload, &id)
                .await
                .map_err(|e| (None, e))?;
            // No node yet: one may be starting (as pool tasks wait in the server for one, a
            // spawn waits for the request timeout).
            let deadline = tokio::time::Instant::now() + timeout;
            loop {
                let asked = client.request_with_headers(
                    subject.clone(),
                    headers.clone(),
                    body.clone().into(),
                );
                match tokio::time::timeout_at(deadline, asked).await {
                    Err(_) => return Err((Some(RequestErrorKind::TimedOut), String::new())),
                    Ok(Err(e))
                        if e.kind() == RequestErrorKind::NoResponders
                            && tokio::time::Instant::now() + RETRY < deadline =>
                    {
                        tokio::time::sleep(RETRY).await;
                    }
                    Ok(Err(e)) => return Err((Some(e.kind()), describe(&e))),
                    Ok(Ok(message)) => return Ok(message.payload.to_vec()),
                }
            }
        })?;
        let answer = match asked {
            Ok(answer) => answer,
            Err((Some(RequestErrorKind::NoResponders), _)) => return Err(self.no_node()),
            Err((Some(RequestErrorKind::TimedOut), _)) => {
                return Err(Error::new(Repr::Timeout {
                    what: format!("asking the cluster's nodes to start `{}`", request.key),
                    after: timeout,
                }));
            }
            Err((_, cause)) => {
                return Err(self.unreachable(format!("cannot ask for a process: {cause}")));
            }
        };
        wire::decode_slice::<SpawnReply>(&answer, Vec::new()).map_err(|message| {
            Error::new(Repr::Deserialize {
                type_name: type_name::<SpawnReply>(),
                message: format!("a node's answer to a spawn: {message}"),
            })
        })
    }

    /// The error for a spawn no node of this build took: a build mismatch if other builds'
    /// nodes are there.
    fn no_node(&self) -> Error {
        let build = registry::build_id();
        if let Ok(nodes) = self.discover(Duration::from_millis(300))
            && let Some(other) = nodes.iter().find(|n| n.build != build)
        {
            return super::pool::other_build(other, &build);
        }
        Error::new(Repr::Disconnected {
            what: format!(
                "no cluster node serves build {build} (start one with `cluster.node().serve()` \
                 in this program)"
            ),
        })
    }
}

impl<R: DeserializeOwned> JoinHandle<R> {
    /// The name of the node the process runs on.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// #[multiproc::process]
    /// fn work() {}
    ///
    /// #[multiproc::main]
    /// fn main() -> multiproc::Result<()> {
    ///     let cluster = multiproc::cluster::Cluster::connect("nats://127.0.0.1:4222")?;
    ///     let handle = cluster.spawn_fn(work, ())?;
    ///     println!("runs on node {}", handle.node());
    ///     handle.join()
    /// }
    /// ```
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The process's name (its entry point's, as locally).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// #[multiproc::process]
    /// fn work() {}
    ///
    /// #[multiproc::main]
    /// fn main() -> multiproc::Result<()> {
    ///     let cluster = multiproc::cluster::Cluster::connect("nats://127.0.0.1:4222")?;
    ///     let handle = cluster.spawn_fn(work, ())?;
    ///     assert!(handle.name().starts_with("work")); // numbered by its node: `work-1`, ...
    ///     handle.join()
    /// }
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process's id on its node.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// #[multiproc::process]
    /// fn work() {}
    ///
    /// #[multiproc::main]
    /// fn main() -> multiproc::Result<()> {
    ///     let cluster = multiproc::cluster::Cluster::connect("nats://127.0.0.1:4222")?;
    ///     let handle = cluster.spawn_fn(work, ())?;
    ///     println!("pid {} on node {}", handle.pid(), handle.node());
    ///     handle.join()
    /// }
    /// ```
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Waits for the process to finish and returns what its entry point returned.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// #[multiproc::process]
    /// fn fail() {
    ///     panic!("no luck");
    /// }
    ///
    /// #[multiproc::main]
    /// fn main() -> multiproc::Result<()> {
    ///     let cluster = multiproc::cluster::Cluster::connect("nats://127.0.0.1:4222")?;
    ///     let err = cluster.spawn_fn(fail, ())?.join().unwrap_err();
    ///     assert_eq!(err.kind(), multiproc::ErrorKind::Panicked); // typed, as locally
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// As the local [`JoinHandle::join`](crate::JoinHandle::join) (`Panicked`, `Signaled`,
    /// `Exited`, ... with the node named), and `Disconnected` when the node stops answering
    /// for 5 s.
    pub fn join(mut self) -> Result<R> {
        loop {
            if let Some(result) = self.join_timeout(Duration::from_secs(3600))? {
                return Ok(result);
            }
        }
    }

    /// Waits at most `timeout` for the process: `Ok(None)` if it still runs.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    ///
    /// #[multiproc::process]
    /// fn forever() {
    ///     loop {
    ///         std::thread::park();
    ///     }
    /// }
    ///
    /// #[multiproc::main]
    /// fn main() -> multiproc::Result<()> {
    ///     let cluster = multiproc::cluster::Cluster::connect("nats://127.0.0.1:4222")?;
    ///     let mut handle = cluster.spawn_fn(forever, ())?;
    ///     assert!(handle.join_timeout(Duration::from_millis(100))?.is_none());
    ///     handle.kill()?;
    ///     assert_eq!(handle.join().unwrap_err().signal(), Some(libc::SIGKILL));
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`join`](Self::join), and `AlreadyJoined` once a result was returned.
    pub fn join_timeout(&mut self, timeout: Duration) -> Result<Option<R>> {
        if self.joined {
            return Err(Error::new(Repr::AlreadyJoined { who: self.who() }));
        }
        let deadline = Instant::now().checked_add(timeout);
        loop {
            let left =
                deadline.map_or(CHECK_EVERY, |d| d.saturating_duration_since(Instant::now()));
            if self.result.wait_timeout(left.min(CHECK_EVERY)) {
                self.joined = true;
                return self.result.get_timeout(Duration::ZERO).map(Some);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(None);
            }
            self.check_node()?;
        }
    }

    /// Kills the process with SIGKILL; [`join`](Self::join) then reports
    /// [`ErrorKind::Signaled`](crate::ErrorKind::Signaled). Does nothing if it already ended
    /// (or its node is gone, and the process with it).
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
    ///     let cluster = multiproc::cluster::Cluster::connect("nats://127.0.0.1:4222")?;
    ///     let mut handle = cluster.spawn_fn(forever, ())?;
    ///     handle.kill()?;
    ///     assert_eq!(handle.join().unwrap_err().kind(), multiproc::ErrorKind::Signaled);
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// `Timeout` when the node does not answer within the request timeout; `Unreachable`
    /// when the server cannot be reached.
    pub fn kill(&mut self) -> Result<()> {
        match self.ask(ASK_KILL) {
            Ok(_) | Err((Some(RequestErrorKind::NoResponders), _)) => Ok(()),
            Err((Some(RequestErrorKind::TimedOut), _)) => Err(Error::new(Repr::Timeout {
                what: format!("asking node {} to kill {}", self.node, self.who()),
                after: self.cluster.inner.request_timeout,
            })),
            Err((_, cause)) => Err(self
                .cluster
                .unreachable(format!("cannot reach node {}: {cause}", self.node))),
        }
    }

    fn who(&self) -> Who {
        Who {
            name: format!("{} on node {}", self.name, self.node),
            pid: Some(self.pid),
        }
    }

    /// Asks the node whether the process runs; an error once the node has not answered for
    /// [`NODE_LOST`] (a question that fails because this side is not connected counts
    /// for nothing).
    fn check_node(&mut self) -> Result<()> {
        let silent = match self.ask(ASK_ALIVE) {
            Ok(answer) if answer == ENDED => {
                // Its outcome is stored before the node says so: it is on its way, unless
                // the node could not store it.
                let since = *self.ended_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= OUTCOME_LOST && !self.result.ready() {
                    self.joined = true;
                    self.dispatcher.close(&self.call);
                    return Err(Error::other(format!(
                        "{} ended, but its outcome did not reach this caller within {} s \
                         (its node could not store it in the server)",
                        self.who(),
                        OUTCOME_LOST.as_secs()
                    )));
                }
                false
            }
            Ok(_) => false,
            Err((Some(RequestErrorKind::NoResponders | RequestErrorKind::TimedOut), _)) => {
                self.cluster.inner.client.connection_state()
                    == async_nats::connection::State::Connected
            }
            Err(_) => false,
        };
        if !silent {
            self.silent_since = None;
            return Ok(());
        }
        let since = *self.silent_since.get_or_insert_with(Instant::now);
        // Its outcome may have come in just before the node left.
        if since.elapsed() < NODE_LOST || self.result.ready() {
            return Ok(());
        }
        self.joined = true;
        self.dispatcher.close(&self.call);
        Err(Error::new(Repr::Disconnected {
            what: format!(
                "node {} stopped answering for {} s while it ran {}: the node died or lost \
                 its connection, and the process with it",
                self.node,
                NODE_LOST.as_secs(),
                self.who()
            ),
        }))
    }

    /// Sends `what` to the process's node; the answer.
    fn ask(&self, what: &'static [u8]) -> std::result::Result<Vec<u8>, AskError> {
        let client = self.cluster.inner.client.clone();
        let subject = self.control.clone();
        let timeout = self
            .cluster
            .inner
            .request_timeout
            .min(Duration::from_secs(2));
        ask(&self.cluster, client, subject, what, timeout)
    }
}

/// Why a question went unanswered: the request's error kind (if it got that far) and the
/// cause.
type AskError = (Option<RequestErrorKind>, String);

/// A request of `what` on `subject`, waiting at most `timeout`.
fn ask(
    cluster: &Cluster,
    client: async_nats::Client,
    subject: String,
    what: &'static [u8],
    timeout: Duration,
) -> std::result::Result<Vec<u8>, AskError> {
    let asked = cluster.block_on(async move {
        match tokio::time::timeout(timeout, client.request(subject, what.into())).await {
            Err(_) => Err((Some(RequestErrorKind::TimedOut), "no answer".to_string())),
            Ok(Err(e)) => Err((Some(e.kind()), describe(&e))),
            Ok(Ok(message)) => Ok(message.payload.to_vec()),
        }
    });
    asked.unwrap_or_else(|e| Err((None, e.to_string())))
}

impl<R> Drop for JoinHandle<R> {
    fn drop(&mut self) {
        if !self.joined {
            self.dispatcher.close(&self.call);
        }
    }
}

impl<R> std::fmt::Debug for JoinHandle<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("cluster::JoinHandle")
            .field("name", &self.name)
            .field("node", &self.node)
            .field("pid", &self.pid)
            .finish_non_exhaustive()
    }
}

/// The callers a node has work from, and whether each still answers (asked at most once a
/// second each): a caller silent for [`CALLER_LOST`] is gone, and its work with it.
#[derive(Default)]
pub(super) struct Callers {
    seen: Mutex<HashMap<String, Heard>>,
}

struct Heard {
    asked: Instant,
    silent_since: Option<Instant>,
}

impl Callers {
    /// `true` once the caller that answers on `alive` has not answered for [`CALLER_LOST`]
    /// (a question this side could not send counts for nothing).
    pub(super) fn gone(&self, cluster: &Cluster, alive: &str) -> bool {
        let lost = |heard: &Heard| {
            heard
                .silent_since
                .is_some_and(|s| s.elapsed() >= CALLER_LOST)
        };
        {
            let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(heard) = seen.get(alive)
                && heard.asked.elapsed() < CHECK_EVERY
            {
                return lost(heard);
            }
        }
        let client = cluster.inner.client.clone();
        let answer = ask(cluster, client, alive.to_string(), ASK_ALIVE, CHECK_EVERY);
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let heard = seen.entry(alive.to_string()).or_insert(Heard {
            asked: Instant::now(),
            silent_since: None,
        });
        heard.asked = Instant::now();
        match answer {
            Ok(_) => heard.silent_since = None,
            Err((Some(RequestErrorKind::NoResponders), _)) => {
                heard.silent_since.get_or_insert_with(Instant::now);
            }
            Err(_) => {}
        }
        lost(heard)
    }
}

/// What a node's watcher is told.
enum Order {
    Kill,
    Shutdown,
}

/// The processes a node started for callers: how to reach each one's watcher.
#[derive(Default)]
pub(super) struct Spawned {
    watchers: Mutex<HashMap<u64, mpsc::Sender<Order>>>,
    changed: std::sync::Condvar,
}

impl Spawned {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, mpsc::Sender<Order>>> {
        self.watchers.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn tell(&self, id: u64, order: Order) -> bool {
        self.lock().get(&id).is_some_and(|w| w.send(order).is_ok())
    }

    fn remove(&self, id: u64) {
        self.lock().remove(&id);
        self.changed.notify_all();
    }

    /// At the node's end: asks each process to stop, and kills those that have not after
    /// `grace`; returns when every outcome is stored.
    pub(super) fn stop(&self, grace: Duration) {
        for watcher in self.lock().values() {
            let _ = watcher.send(Order::Shutdown);
        }
        let left = |deadline: Instant| {
            let watchers = self.lock();
            let wait = deadline.saturating_duration_since(Instant::now());
            let (watchers, _) = self
                .changed
                .wait_timeout_while(watchers, wait, |w| !w.is_empty())
                .unwrap_or_else(|e| e.into_inner());
            watchers.len()
        };
        if left(Instant::now() + grace) > 0 {
            for watcher in self.lock().values() {
                let _ = watcher.send(Order::Kill);
            }
            while left(Instant::now() + Duration::from_secs(1)) > 0 {}
        }
    }
}

impl Cluster {
    /// Takes spawn requests of `build` as node `node` until this cluster is dropped: each
    /// starts a local process, watched by a thread of its own.
    pub(super) fn serve_spawns(
        &self,
        node: &str,
        build: &str,
        callers: &Arc<Callers>,
    ) -> Result<Arc<Spawned>> {
        let client = self.inner.client.clone();
        let token = call_id();
        let control = format!("multiproc.process.{token}");
        let subscribed = self.block_on({
            let (client, subject, control) =
                (client.clone(), spawn_subject(build), format!("{control}.*"));
            async move {
                let requests = client
                    .queue_subscribe(subject, "nodes".to_string())
                    .await
                    .map_err(|e| describe(&e))?;
                let orders = client.subscribe(control).await.map_err(|e| describe(&e))?;
                Ok::<_, String>((requests, orders))
            }
        })?;
        let (mut requests, mut orders) = subscribed
            .map_err(|e| self.unreachable(format!("cannot subscribe for spawns: {e}")))?;
        let spawned = Arc::new(Spawned::default());
        // Orders for running processes: "still running?" and "kill".
        let (theirs, answering) = (Arc::clone(&spawned), client.clone());
        self.inner.runtime.handle.spawn(async move {
            while let Some(order) = orders.next().await {
                let id = order
                    .subject
                    .rsplit('.')
                    .next()
                    .and_then(|s| s.parse().ok());
                let running = id.is_some_and(|id| {
                    if &order.payload[..] == ASK_KILL {
                        theirs.tell(id, Order::Kill)
                    } else {
                        theirs.lock().contains_key(&id)
                    }
                });
                if let Some(reply) = order.reply {
                    let answer = if running { RUNNING } else { ENDED };
                    let _ = answering.publish(reply, answer.into()).await;
                }
            }
        });
        let host = Arc::new(Host {
            cluster: self.clone(),
            spawned: Arc::clone(&spawned),
            callers: Arc::clone(callers),
            node: node.to_string(),
            build: build.to_string(),
        });
        self.inner.runtime.handle.spawn(async move {
            let mut next = 0u64;
            while let Some(request) = requests.next().await {
                next += 1;
                let (host, id, control) = (Arc::clone(&host), next, format!("{control}.{next}"));
                // Starting a process blocks: off the runtime.
                std::thread::spawn(move || host.start_and_watch(id, control, request));
            }
        });
        Ok(spawned)
    }
}

/// What a node's spawn thread needs.
struct Host {
    cluster: Cluster,
    spawned: Arc<Spawned>,
    callers: Arc<Callers>,
    node: String,
    build: String,
}

impl Host {
    /// Starts the process a request asks for, answers the request, then watches the process
    /// until it ends and stores its outcome. Never panics on what the request holds.
    fn start_and_watch(&self, id: u64, control: String, message: async_nats::Message) {
        let Host {
            cluster,
            spawned,
            callers,
            node,
            build,
        } = self;
        let Some(answer_to) = message.reply.clone() else {
            eprintln!(
                "multiproc node {node}: dropped a spawn request without a reply subject on {}",
                message.subject
            );
            return;
        };
        let answer = |reply: &SpawnReply| {
            if let Ok(bytes) = wire::with_encoded(reply, |bytes, _| bytes.to_vec()) {
                let (client, to) = (cluster.inner.client.clone(), answer_to.clone());
                let _ = cluster.block_on(async move { client.publish(to, bytes.into()).await });
            }
        };
        let refuse = |error: Error| answer(&SpawnReply::Refused(RemoteError::new(&error, node)));
        let payload = match super::blob::unwrap_blocking(cluster, &message) {
            Ok(payload) => payload,
            Err(e) => return refuse(Error::other(e)),
        };
        let request = match wire::decode_slice::<SpawnRequest>(&payload, Vec::new()) {
            Ok(request) => request,
            Err(e) => {
                eprintln!(
                    "multiproc node {node}: rejected a malformed spawn request on {}: {e}",
                    message.subject
                );
                return refuse(Error::new(Repr::Deserialize {
                    type_name: type_name::<SpawnRequest>(),
                    message: e,
                }));
            }
        };
        super::blob::discard_blocking(cluster, &message);
        if request.build != *build {
            return refuse(super::pool::other_build_error(node, build, &request.build));
        }
        let started = registry::resolve_key_str(&request.key)
            .and_then(|key| crate::Builder::new().spawn_encoded(key, &request.state));
        let mut handle = match started {
            Ok(handle) => handle,
            Err(e) => return refuse(e),
        };
        let (tx, orders) = mpsc::channel();
        spawned.lock().insert(id, tx);
        answer(&SpawnReply::Started {
            node: node.to_string(),
            name: handle.name().to_string(),
            pid: handle.pid(),
            control,
        });
        let mut killed = false;
        let ended = loop {
            match handle.join_encoded_timeout(SLICE) {
                Ok(Some(outcome)) => {
                    break Delivery::Outcomes {
                        indices: vec![0],
                        outcomes: vec![Bytes::from(outcome)],
                        worker: handle.name().to_string(),
                        pid: Some(handle.pid()),
                        node: node.to_string(),
                    };
                }
                Err(e) => {
                    break Delivery::Failed {
                        index: 0,
                        error: RemoteError::new(&e, node),
                    };
                }
                Ok(None) => {}
            }
            while let Ok(order) = orders.try_recv() {
                let _ = match order {
                    Order::Kill => handle.kill(),
                    Order::Shutdown => handle.request_shutdown(),
                };
            }
            if !killed && callers.gone(cluster, &request.caller) {
                eprintln!(
                    "multiproc node {node}: the caller of {} (pid {}) is gone; killing it",
                    handle.name(),
                    handle.pid()
                );
                let _ = handle.kill();
                killed = true;
            }
        };
        // Stored before the watcher goes: a node that says "ended" has the outcome in the server.
        store(
            cluster,
            &request.reply,
            &format!("{}-0-1", request.reply),
            &ended,
        );
        spawned.remove(id);
    }
}
