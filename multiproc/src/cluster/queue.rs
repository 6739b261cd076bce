//! [`Queue`]: a named, durable, many-producer many-consumer queue in a NATS server
//! (a JetStream work-queue stream with one shared pull consumer).

use std::any::type_name;
use std::collections::VecDeque;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{AckPolicy, PullConsumer, pull};
use async_nats::jetstream::stream::{self, DiscardPolicy, RetentionPolicy, StorageType};
use async_nats::jetstream::{AckKind, Message};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Cluster, describe};
use crate::error::{Error, Repr, Result, TrySendError};
use crate::ipc::codec as wire;

/// How long a taken item may stay unacknowledged before the server gives it to another
/// consumer: the window in which a consumer killed between taking and acknowledging loses
/// nothing but time.
const ACK_WAIT: Duration = Duration::from_secs(5);
/// The most items one pull brings (those beyond the first wait, unacknowledged, for this
/// handle's next gets).
const PREFETCH: usize = 16;
/// A consumer that pulls again within this of its last pull is draining the queue quickly:
/// its pulls may bring more than one item.
const QUICK: Duration = Duration::from_millis(5);
/// How long a fetched item may wait here to be taken: well inside [`ACK_WAIT`], after which
/// the server would give it to another consumer.
const FRESH_FOR: Duration = Duration::from_millis(2_500);
/// The longest one wait for an item asks the server for; a longer `get` asks again.
const PULL_SLICE: Duration = Duration::from_secs(5);
/// How long an operation retries while the server cannot be reached (it restarts, the
/// client reconnects) before it fails with `Unreachable`.
const RETRY_FOR: Duration = Duration::from_secs(15);

/// A named queue in the NATS server: Python's `BaseManager` task queue, durable.
///
/// Every handle with the same name, in any process on any host connected to the same server,
/// is the same queue, and each item goes to exactly one consumer. Items live in the server
/// (file storage), so they survive every process that uses the queue and a restart of the
/// server. [`get`](Queue::get) acknowledges an item before it returns it: a consumer killed
/// before that point loses nothing (the server gives the item to another consumer 5 s
/// later); one killed after it loses that item, as locally. A consumer that takes items one
/// after the other, without work between them, has its pulls bring up to 16 waiting items
/// (its next gets take them without a round trip of their own), while one that works on
/// each item takes one at a time, so slow tasks spread over every consumer; items a killed
/// consumer had fetched come back 5 s later, those of a dropped handle at once. A `put` whose acknowledgement
/// is lost (the server restarts) is sent again with the same message id, which the server
/// deduplicates: each `put` that returns `Ok` is in the queue once.
///
/// Items are encoded as locally (serde, postcard); an item that carries a descriptor (a
/// channel end, a local queue, `Bytes`, `SharedMemory`) cannot cross machines and is refused
/// with a `Serialize` error. An item larger than the server's `max_payload` (1 MiB by
/// default) goes through JetStream's object store: any size works, at the cost of a few
/// more round trips.
///
/// # Examples
///
/// ```no_run
/// let cluster = multiproc::cluster::Cluster::connect("nats://127.0.0.1:4222")?;
/// let results = cluster.queue::<String>("results")?;
/// results.put("done".to_string())?;
/// for line in &results {
///     println!("{line}");
/// }
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct Queue<T> {
    shared: Arc<Shared>,
    _type: PhantomData<fn(T) -> T>,
}

struct Shared {
    cluster: Cluster,
    name: String,
    subject: String,
    stream: stream::Stream,
    consumer: PullConsumer,
    maxsize: Option<usize>,
    /// Items a pull brought beyond the one it was for (not acknowledged yet), with when
    /// they came: the next gets take them without a pull of their own.
    prefetched: std::sync::Mutex<VecDeque<(Instant, Message)>>,
    /// When the last pull was, and how many items it could bring (see `Shared::batch`).
    pace: std::sync::Mutex<(Option<Instant>, usize)>,
}

impl Shared {
    /// The oldest item fetched before that is still fresh: one held longer than
    /// [`FRESH_FOR`] may be given to another consumer by now, so it goes back instead.
    fn take_prefetched(&self) -> Option<Message> {
        let mut prefetched = self.prefetched.lock().unwrap_or_else(|e| e.into_inner());
        while let Some((came, message)) = prefetched.pop_front() {
            if came.elapsed() < FRESH_FOR {
                return Some(message);
            }
            self.cluster.inner.runtime.handle.spawn(async move {
                let _ = message.ack_with(AckKind::Nak(None)).await;
            });
        }
        None
    }

    /// How many items the next pull may bring: one for a consumer that takes its time (so
    /// that slow tasks spread over every consumer, as with Python's queues), twice as many as
    /// the last pull (up to [`PREFETCH`]) for one that came back for more within
    /// [`QUICK`].
    fn batch(&self) -> usize {
        let mut pace = self.pace.lock().unwrap_or_else(|e| e.into_inner());
        let (last, size) = *pace;
        let size = match last {
            Some(last) if last.elapsed() < QUICK => (size * 2).min(PREFETCH),
            _ => 1,
        };
        *pace = (Some(Instant::now()), size);
        size
    }

    /// One pull: what is there now (up to [`batch`](Self::batch)), else one item within
    /// `wait`. The first is returned, the rest kept for the next gets.
    async fn fetch(&self, wait: Duration) -> std::result::Result<Message, GetFailed> {
        let batch = self.batch();
        use futures_util::StreamExt;
        let cluster = &self.cluster;
        let fail = |e: &dyn std::error::Error| GetFailed::Other(cluster.unreachable(describe(e)));
        // Bounded: a pull whose connection drops may never hear its end.
        let bound = wait.min(PULL_SLICE) + Duration::from_secs(2);
        let pulled = tokio::time::timeout(bound, async {
            let mut got = Vec::new();
            let mut now = self
                .consumer
                .fetch()
                .max_messages(batch)
                .messages()
                .await
                .map_err(|e| fail(&e))?;
            while let Some(message) = now.next().await {
                got.push(message.map_err(|e| fail(&*e))?);
            }
            if got.is_empty() && wait >= Duration::from_millis(10) {
                let mut one = self
                    .consumer
                    .batch()
                    .max_messages(1)
                    .expires(wait)
                    .messages()
                    .await
                    .map_err(|e| fail(&e))?;
                if let Some(message) = one.next().await {
                    got.push(message.map_err(|e| fail(&*e))?);
                }
            }
            Ok::<_, GetFailed>(got)
        })
        .await;
        let mut got = match pulled {
            Err(_) => {
                return Err(GetFailed::Other(
                    cluster.unreachable("a pull for an item got no answer"),
                ));
            }
            Ok(got) => got?.into_iter(),
        };
        let first = got.next().ok_or(GetFailed::Empty)?;
        let came = Instant::now();
        self.prefetched
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(got.map(|m| (came, m)));
        Ok(first)
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // What this process fetched but never took goes back to the other consumers now,
        // not after the acknowledgement wait.
        let left: Vec<Message> = self
            .prefetched
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .map(|(_, m)| m)
            .collect();
        if !left.is_empty() {
            self.cluster.inner.runtime.handle.spawn(async move {
                for message in left {
                    let _ = message.ack_with(AckKind::Nak(None)).await;
                }
            });
        }
    }
}

impl Cluster {
    /// The queue named `name` (letters, digits, `-` and `_`), made in the server if it does
    /// not exist yet, without a bound.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let cluster = multiproc::cluster::Cluster::connect("nats://127.0.0.1:4222")?;
    /// let tasks = cluster.queue::<u64>("tasks")?; // the same queue in every process that opens it
    /// assert_eq!(tasks.maxsize(), None);
    /// assert!(cluster.queue::<u64>("no spaces").is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Other`](crate::ErrorKind::Other) for a name outside those characters or
    /// a server without JetStream (start it with `-js`);
    /// [`ErrorKind::Unreachable`](crate::ErrorKind::Unreachable) when the server does not
    /// answer.
    pub fn queue<T: Serialize + DeserializeOwned>(&self, name: &str) -> Result<Queue<T>> {
        self.open_queue(name, None)
    }

    /// The queue named `name`, holding at most `maxsize` items: `put` waits while it is full.
    /// The bound is the stream's: the last handle opened with a different one sets it.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let cluster = multiproc::cluster::Cluster::connect("nats://127.0.0.1:4222")?;
    /// let tasks = cluster.queue_with_maxsize::<u64>("tasks", 1000)?;
    /// assert_eq!(tasks.maxsize(), Some(1000));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`queue`](Cluster::queue); a `maxsize` of 0 is an `Other` error.
    pub fn queue_with_maxsize<T: Serialize + DeserializeOwned>(
        &self,
        name: &str,
        maxsize: usize,
    ) -> Result<Queue<T>> {
        if maxsize == 0 {
            return Err(Error::other(
                "a queue's maxsize must be at least 1 (use `cluster.queue(name)` for no maxsize)",
            ));
        }
        self.open_queue(name, Some(maxsize))
    }

    fn open_queue<T>(&self, name: &str, maxsize: Option<usize>) -> Result<Queue<T>> {
        super::check_name(name, "queue")?;
        let subject = format!("multiproc.queue.{name}");
        let config = stream::Config {
            name: format!("MPQ_{name}"),
            subjects: vec![subject.clone()],
            retention: RetentionPolicy::WorkQueue,
            storage: StorageType::File,
            discard: DiscardPolicy::New,
            max_messages: maxsize.map_or(-1, |n| n as i64),
            ..Default::default()
        };
        let jetstream = self.inner.jetstream.clone();
        let server = self.server().to_string();
        let opened = self.block_on(async move {
            let stream = match jetstream.get_stream(&config.name).await {
                Ok(mut stream) => {
                    let info = stream
                        .info()
                        .await
                        .map_err(|e| describe(&e))?
                        .config
                        .clone();
                    if info.max_messages != config.max_messages && info.subjects == config.subjects
                    {
                        jetstream
                            .update_stream(stream::Config {
                                max_messages: config.max_messages,
                                ..info
                            })
                            .await
                            .map_err(|e| describe(&e))?;
                    }
                    stream
                }
                Err(_) => jetstream
                    .get_or_create_stream(config)
                    .await
                    .map_err(|e| describe(&e))?,
            };
            let consumer: PullConsumer = stream
                .get_or_create_consumer(
                    "multiproc",
                    pull::Config {
                        durable_name: Some("multiproc".to_string()),
                        ack_policy: AckPolicy::Explicit,
                        ack_wait: ACK_WAIT,
                        ..Default::default()
                    },
                )
                .await
                .map_err(|e| describe(&e))?;
            Ok::<_, String>((stream, consumer))
        })?;
        let (stream, consumer) = opened.map_err(|cause| {
            if cause.contains("jetstream not enabled") || cause.contains("JetStream not enabled") {
                Error::other(format!(
                    "the NATS server at {server} has no JetStream, which cluster queues live in: \
                     start it with `nats-server -js`"
                ))
            } else {
                self.unreachable(format!("cannot open the queue `{name}`: {cause}"))
            }
        })?;
        Ok(Queue {
            shared: Arc::new(Shared {
                cluster: self.clone(),
                name: name.to_string(),
                subject,
                stream,
                consumer,
                maxsize,
                prefetched: std::sync::Mutex::new(VecDeque::new()),
                pace: std::sync::Mutex::new((None, 1)),
            }),
            _type: PhantomData,
        })
    }
}

/// Why one publish did not put the item.
enum PutFailed {
    Full,
    Closed,
    Other(Error),
}

/// Why one pull did not take an item.
enum GetFailed {
    Empty,
    Other(Error),
}

impl<T: Serialize + DeserializeOwned> Queue<T> {
    /// Puts an item, waiting while the queue is full.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let cluster = multiproc::cluster::Cluster::connect("nats://127.0.0.1:4222")?;
    /// let lines = cluster.queue::<String>("lines")?;
    /// lines.put("resize photo.jpg".to_string())?; // in the server once this returns
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Closed`](crate::ErrorKind::Closed) after [`close`](Queue::close);
    /// [`ErrorKind::Serialize`](crate::ErrorKind::Serialize) for an item that cannot be
    /// encoded or carries a descriptor;
    /// [`ErrorKind::Unreachable`](crate::ErrorKind::Unreachable) when the server does not
    /// acknowledge it in time.
    pub fn put(&self, item: T) -> Result<()> {
        self.put_until(&item, None, Duration::MAX)
    }

    /// Puts an item if there is room at once; otherwise hands it back in an
    /// [`ErrorKind::Full`](crate::ErrorKind::Full) error.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let cluster = multiproc::cluster::Cluster::connect("nats://127.0.0.1:4222")?;
    /// let q = cluster.queue_with_maxsize::<u8>("tiny", 1)?;
    /// q.try_put(1)?;
    /// assert!(q.try_put(2).unwrap_err().is_full());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`put`](Queue::put), plus `Full`; every error carries the item.
    pub fn try_put(&self, item: T) -> std::result::Result<(), TrySendError<T>> {
        self.put_until(&item, Some(Instant::now()), Duration::ZERO)
            .map_err(|e| TrySendError::new(e, item))
    }

    /// Puts an item, waiting at most `timeout` for room.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let cluster = multiproc::cluster::Cluster::connect("nats://127.0.0.1:4222")?;
    /// let q = cluster.queue::<u8>("jobs")?;
    /// q.put_timeout(1, std::time::Duration::from_secs(1))?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`put`](Queue::put), plus [`ErrorKind::Timeout`](crate::ErrorKind::Timeout); every
    /// error carries the item.
    pub fn put_timeout(
        &self,
        item: T,
        timeout: Duration,
    ) -> std::result::Result<(), TrySendError<T>> {
        self.put_until(&item, Some(Instant::now() + timeout), timeout)
            .map_err(|e| TrySendError::new(e, item))
    }

    /// Puts an item without blocking the thread, under any executor.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// #[tokio::main]
    /// async fn main() -> multiproc::Result<()> {
    ///     let cluster = multiproc::cluster::Cluster::connect("nats://127.0.0.1:4222")?;
    ///     cluster.queue::<u8>("jobs")?.put_async(1).await
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`put`](Queue::put).
    pub async fn put_async(&self, item: T) -> Result<()> {
        let payload = self.encode(&item)?;
        let id = message_id();
        let mut pause = Duration::from_millis(5);
        let mut retry = Retry::default();
        loop {
            let publish = self.publish(payload.clone(), id.clone());
            match self.shared.cluster.run(publish).await? {
                Ok(()) => return Ok(()),
                Err(PutFailed::Full) => {}
                Err(PutFailed::Closed) => return Err(self.closed_for_put()),
                Err(PutFailed::Other(e)) => retry.again(e)?,
            }
            let sleep = tokio::time::sleep(pause);
            self.shared.cluster.run(sleep).await?;
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    fn put_until(&self, item: &T, deadline: Option<Instant>, timeout: Duration) -> Result<()> {
        let payload = self.encode(item)?;
        let id = message_id();
        let mut pause = Duration::from_millis(5);
        let mut retry = Retry::default();
        loop {
            match self
                .shared
                .cluster
                .block_on(self.publish(payload.clone(), id.clone()))?
            {
                Ok(()) => return Ok(()),
                Err(PutFailed::Full) => retry = Retry::default(),
                Err(PutFailed::Closed) => return Err(self.closed_for_put()),
                Err(PutFailed::Other(e)) => retry.again(e)?,
            }
            // Full (or unreachable for now): the server has no "wait for room", so look
            // again, less and less often.
            let now = Instant::now();
            match deadline {
                Some(d) if now >= d => {
                    if let Some(e) = retry.last {
                        return Err(e);
                    }
                    return Err(if timeout.is_zero() {
                        Error::new(Repr::Full {
                            what: format!(
                                "cannot put a {}: the cluster queue `{}` is full ({} items)",
                                type_name::<T>(),
                                self.shared.name,
                                self.shared.maxsize.unwrap_or(0)
                            ),
                        })
                    } else {
                        Error::new(Repr::Timeout {
                            what: format!(
                                "putting a {} into the cluster queue `{}`",
                                type_name::<T>(),
                                self.shared.name
                            ),
                            after: timeout,
                        })
                    });
                }
                Some(d) => std::thread::sleep(pause.min(d - now)),
                None => std::thread::sleep(pause),
            }
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    /// The item's bytes, refused when it carries descriptors or exceeds the server's limit.
    fn encode(&self, item: &T) -> Result<Vec<u8>> {
        super::encode_portable(item)
    }

    /// One publish, acknowledged by the stream; `id` makes a repeat of it a no-op.
    fn publish(
        &self,
        payload: Vec<u8>,
        id: String,
    ) -> impl std::future::Future<Output = std::result::Result<(), PutFailed>> + Send + 'static
    {
        let jetstream = self.shared.cluster.inner.jetstream.clone();
        let subject = self.shared.subject.clone();
        let cluster = self.shared.cluster.clone();
        let limit = self.shared.cluster.inner.client.server_info().max_payload;
        async move {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", id.as_str());
            // Beyond the server's max_payload, the bytes go into the object store.
            let payload = super::blob::wrap(&jetstream, &mut headers, payload, limit, &id)
                .await
                .map_err(|e| PutFailed::Other(cluster.unreachable(e)))?;
            let ack = jetstream
                .publish_with_headers(subject, headers, payload.into())
                .await
                .map_err(|e| PutFailed::Other(cluster.unreachable(describe(&e))))?;
            match ack.await {
                Ok(_) => Ok(()),
                Err(e) => {
                    let text = describe(&e);
                    if text.contains("maximum messages") {
                        Err(PutFailed::Full)
                    } else if matches!(
                        e.kind(),
                        async_nats::jetstream::context::PublishErrorKind::StreamNotFound
                    ) {
                        Err(PutFailed::Closed)
                    } else {
                        Err(PutFailed::Other(cluster.unreachable(text)))
                    }
                }
            }
        }
    }

    fn closed_for_put(&self) -> Error {
        Error::new(Repr::Closed {
            what: format!(
                "cannot put a {}: the cluster queue `{}` is closed (or was deleted)",
                type_name::<T>(),
                self.shared.name
            ),
        })
    }

    /// Takes the next item, waiting for one.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let cluster = multiproc::cluster::Cluster::connect("nats://127.0.0.1:4222")?;
    /// let tasks = cluster.queue::<u64>("tasks")?;
    /// let task = tasks.get()?; // waits for an item; no other consumer gets this one
    /// println!("working on {task}");
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Closed`](crate::ErrorKind::Closed) once the queue is closed and empty;
    /// [`ErrorKind::Deserialize`](crate::ErrorKind::Deserialize) for an item that is not a `T`
    /// (it is removed, and the queue stays usable);
    /// [`ErrorKind::Unreachable`](crate::ErrorKind::Unreachable) when the server is gone.
    pub fn get(&self) -> Result<T> {
        self.get_until(None, Duration::MAX)
    }

    /// Takes an item if one is waiting, else returns an
    /// [`ErrorKind::Empty`](crate::ErrorKind::Empty) error at once.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let cluster = multiproc::cluster::Cluster::connect("nats://127.0.0.1:4222")?;
    /// let q = cluster.queue::<u8>("maybe-empty")?;
    /// match q.try_get() {
    ///     Ok(item) => println!("{item}"),
    ///     Err(e) if e.kind() == multiproc::ErrorKind::Empty => println!("nothing yet"),
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`get`](Queue::get), plus `Empty`.
    pub fn try_get(&self) -> Result<T> {
        self.get_until(Some(Instant::now()), Duration::ZERO)
    }

    /// Takes the next item, waiting at most `timeout`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    ///
    /// let cluster = multiproc::cluster::Cluster::connect("nats://127.0.0.1:4222")?;
    /// let tasks = cluster.queue::<u64>("tasks")?;
    /// match tasks.get_timeout(Duration::from_secs(1)) {
    ///     Ok(task) => println!("working on {task}"),
    ///     Err(e) if e.kind() == multiproc::ErrorKind::Timeout => println!("nothing within 1 s"),
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`get`](Queue::get), plus [`ErrorKind::Timeout`](crate::ErrorKind::Timeout).
    pub fn get_timeout(&self, timeout: Duration) -> Result<T> {
        self.get_until(Some(Instant::now() + timeout), timeout)
    }

    /// Takes the next item without blocking the thread, under any executor.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// #[tokio::main]
    /// async fn main() -> multiproc::Result<()> {
    ///     let cluster = multiproc::cluster::Cluster::connect("nats://127.0.0.1:4222")?;
    ///     let n: u8 = cluster.queue::<u8>("jobs")?.get_async().await?;
    ///     println!("{n}");
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`get`](Queue::get).
    pub async fn get_async(&self) -> Result<T> {
        let mut retry = Retry::default();
        loop {
            match self.shared.cluster.run(self.pull(PULL_SLICE)).await? {
                Ok(payload) => return decode::<T>(&payload),
                Err(GetFailed::Empty) => match self.is_closed_async().await {
                    Ok(true) => return Err(self.closed_for_get()),
                    Ok(false) => {}
                    Err(e) => retry.again(e)?,
                },
                Err(GetFailed::Other(e)) => retry.again(e)?,
            }
            if retry.failing() {
                let pause = tokio::time::sleep(Duration::from_millis(100));
                self.shared.cluster.run(pause).await?;
            }
        }
    }

    fn get_until(&self, deadline: Option<Instant>, timeout: Duration) -> Result<T> {
        let mut retry = Retry::default();
        loop {
            let slice = match deadline {
                None => PULL_SLICE,
                Some(d) => d.saturating_duration_since(Instant::now()).min(PULL_SLICE),
            };
            match self.shared.cluster.block_on(self.pull(slice))? {
                Ok(payload) => return decode::<T>(&payload),
                Err(GetFailed::Empty) => match self.is_closed() {
                    Ok(true) => return Err(self.closed_for_get()),
                    Ok(false) => retry = Retry::default(),
                    Err(e) => retry.again(e)?,
                },
                Err(GetFailed::Other(e)) => retry.again(e)?,
            }
            if retry.failing() && deadline.is_none_or(|d| Instant::now() < d) {
                std::thread::sleep(Duration::from_millis(100));
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                if let Some(e) = retry.last {
                    return Err(e);
                }
                return Err(if timeout.is_zero() {
                    Error::new(Repr::Empty)
                } else {
                    Error::new(Repr::Timeout {
                        what: format!(
                            "getting a {} from the cluster queue `{}`",
                            type_name::<T>(),
                            self.shared.name
                        ),
                        after: timeout,
                    })
                });
            }
        }
    }

    /// The next item: one fetched before if one is fresh, else one pull (which brings up to
    /// [`PREFETCH`] items that are there now, or waits at most `wait` for one), and its
    /// acknowledgement, confirmed by the server before the item is handed over.
    fn pull(
        &self,
        wait: Duration,
    ) -> impl std::future::Future<Output = std::result::Result<Vec<u8>, GetFailed>> + Send + 'static
    {
        let shared = Arc::clone(&self.shared);
        async move {
            let cluster = shared.cluster.clone();
            let fail =
                |e: &dyn std::error::Error| GetFailed::Other(cluster.unreachable(describe(e)));
            let message = match shared.take_prefetched() {
                Some(message) => message,
                None => shared.fetch(wait).await?,
            };
            // A large item's bytes are read before the ack (a consumer killed here leaves
            // them for the next) and deleted after it.
            let jetstream = &cluster.inner.jetstream;
            let payload =
                super::blob::unwrap(jetstream, message.headers.as_ref(), &message.payload)
                    .await
                    .map_err(|e| GetFailed::Other(cluster.unreachable(e)))?;
            message.double_ack().await.map_err(|e| fail(&*e))?;
            super::blob::discard(jetstream, message.headers.as_ref()).await;
            Ok(payload)
        }
    }

    fn closed_for_get(&self) -> Error {
        Error::new(Repr::Closed {
            what: format!(
                "no more {} to get: the cluster queue `{}` is closed and empty",
                type_name::<T>(),
                self.shared.name
            ),
        })
    }
}

/// Retries while the server cannot be reached, for at most [`RETRY_FOR`] from the first
/// failure; any other error at once.
#[derive(Default)]
struct Retry {
    since: Option<Instant>,
    /// The failure being retried: what a wait that ends meanwhile reports.
    last: Option<Error>,
}

impl Retry {
    fn again(&mut self, e: Error) -> Result<()> {
        if e.kind() != crate::ErrorKind::Unreachable {
            return Err(e);
        }
        let since = *self.since.get_or_insert_with(Instant::now);
        if since.elapsed() >= RETRY_FOR {
            return Err(e);
        }
        self.last = Some(e);
        Ok(())
    }

    fn failing(&self) -> bool {
        self.since.is_some()
    }
}

/// A message id no other put uses: host, pid, time and a counter.
fn message_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}-{}",
        super::this_process(),
        crate::sys::monotonic_ns(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Decodes one item: the bytes alone (a network message carries no descriptors).
fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T> {
    wire::decode_slice(payload, Vec::new()).map_err(|message| {
        Error::new(Repr::Deserialize {
            type_name: type_name::<T>(),
            message,
        })
    })
}

impl<T> Queue<T> {
    /// The queue's name, as given to [`Cluster::queue`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let cluster = multiproc::cluster::Cluster::connect("nats://127.0.0.1:4222")?;
    /// assert_eq!(cluster.queue::<u8>("jobs")?.name(), "jobs");
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The `maxsize` this handle was opened with.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let cluster = multiproc::cluster::Cluster::connect("nats://127.0.0.1:4222")?;
    /// assert_eq!(cluster.queue::<u64>("unbounded")?.maxsize(), None);
    /// assert_eq!(cluster.queue_with_maxsize::<u64>("bounded", 10)?.maxsize(), Some(10));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn maxsize(&self) -> Option<usize> {
        self.shared.maxsize
    }

    /// The number of items in the queue (put, and not yet taken): asked of the server, so
    /// approximate while others put and get, as Python's `qsize()`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let cluster = multiproc::cluster::Cluster::connect("nats://127.0.0.1:4222")?;
    /// println!("{} tasks waiting", cluster.queue::<u8>("jobs")?.len()?);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Unreachable`](crate::ErrorKind::Unreachable) when the server does not
    /// answer.
    #[allow(clippy::len_without_is_empty)] // `len` asks the server: one call, not two
    pub fn len(&self) -> Result<usize> {
        let stream = self.shared.stream.clone();
        let info = self
            .shared
            .cluster
            .block_on(async move { stream.get_info().await })?;
        info.map(|info| info.state.messages as usize)
            .map_err(|e| self.shared.cluster.unreachable(describe(&e)))
    }

    /// Closes the queue for every handle on every host: later puts fail with
    /// [`ErrorKind::Closed`](crate::ErrorKind::Closed), consumers take what is left and then
    /// get `Closed`, and iteration ends. It stays closed for handles opened later; a new
    /// queue needs a new name (or [`delete`](Queue::delete) first).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let cluster = multiproc::cluster::Cluster::connect("nats://127.0.0.1:4222")?;
    /// let q = cluster.queue::<u8>("once")?;
    /// q.put(1)?;
    /// q.close()?;
    /// assert!(q.put(2).is_err());
    /// assert_eq!(q.get()?, 1);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Unreachable`](crate::ErrorKind::Unreachable) when the server does not
    /// answer.
    pub fn close(&self) -> Result<()> {
        // The stream stops listening on the queue's subject: publishes find no stream.
        let jetstream = self.shared.cluster.inner.jetstream.clone();
        let mut stream = self.shared.stream.clone();
        let closed_subject = format!("multiproc.closed.{}", self.shared.name);
        let done = self.shared.cluster.block_on(async move {
            let config = stream
                .info()
                .await
                .map_err(|e| describe(&e))?
                .config
                .clone();
            jetstream
                .update_stream(stream::Config {
                    subjects: vec![closed_subject],
                    ..config
                })
                .await
                .map(drop)
                .map_err(|e| describe(&e))
        })?;
        done.map_err(|e| {
            self.shared
                .cluster
                .unreachable(format!("cannot close the queue: {e}"))
        })
    }

    /// Removes the queue and every item in it from the server.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let cluster = multiproc::cluster::Cluster::connect("nats://127.0.0.1:4222")?;
    /// cluster.queue::<u8>("scratch")?.delete()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Unreachable`](crate::ErrorKind::Unreachable) when the server does not
    /// answer.
    pub fn delete(&self) -> Result<()> {
        let jetstream = self.shared.cluster.inner.jetstream.clone();
        let name = format!("MPQ_{}", self.shared.name);
        let done = self
            .shared
            .cluster
            .block_on(async move { jetstream.delete_stream(name).await.map(drop) })?;
        done.map_err(|e| self.shared.cluster.unreachable(describe(&e)))
    }

    fn is_closed(&self) -> Result<bool> {
        let check = self.closed_check();
        self.shared.cluster.block_on(check)?
    }

    async fn is_closed_async(&self) -> Result<bool> {
        let check = self.closed_check();
        self.shared.cluster.run(check).await?
    }

    /// Whether the stream stopped listening on the queue's subject (see [`close`](Queue::close)).
    fn closed_check(&self) -> impl std::future::Future<Output = Result<bool>> + Send + 'static {
        let stream = self.shared.stream.clone();
        let subject = self.shared.subject.clone();
        let cluster = self.shared.cluster.clone();
        async move {
            match stream.get_info().await {
                Ok(info) => Ok(!info.config.subjects.contains(&subject)),
                Err(e) => {
                    let text = describe(&e);
                    if text.contains("not found") {
                        Ok(true)
                    } else {
                        Err(cluster.unreachable(text))
                    }
                }
            }
        }
    }
}

impl<T: Serialize + DeserializeOwned> Queue<T> {
    /// A blocking iterator over the items, ending once the queue is closed and empty. An item
    /// that is not a `T` is reported on stderr and skipped; any other error ends the
    /// iteration after it is reported.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let cluster = multiproc::cluster::Cluster::connect("nats://127.0.0.1:4222")?;
    /// let numbers = cluster.queue::<u64>("numbers")?;
    /// for n in [1, 2, 3] {
    ///     numbers.put(n)?;
    /// }
    /// numbers.close()?;
    /// assert_eq!(numbers.iter().sum::<u64>(), 6); // ends once the queue is closed and empty
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn iter(&self) -> Iter<'_, T> {
        Iter { queue: self }
    }
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Queue {
            shared: Arc::clone(&self.shared),
            _type: PhantomData,
        }
    }
}

impl<T> fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cluster::Queue<{}>({:?} at {})",
            type_name::<T>(),
            self.shared.name,
            self.shared.cluster.server()
        )
    }
}

/// A blocking iterator over a cluster [`Queue`]; see [`Queue::iter`].
/// [`Queue`]'s example iterates over one.
pub struct Iter<'a, T> {
    queue: &'a Queue<T>,
}

impl<T: Serialize + DeserializeOwned> Iterator for Iter<'_, T> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        loop {
            match self.queue.get() {
                Ok(item) => return Some(item),
                Err(e) if e.kind() == crate::ErrorKind::Deserialize => {
                    eprintln!("multiproc: skipped a cluster queue item: {e}");
                }
                Err(e) if e.kind() == crate::ErrorKind::Closed => return None,
                Err(e) => {
                    eprintln!("multiproc: cluster queue iteration stopped: {e}");
                    return None;
                }
            }
        }
    }
}

impl<T> fmt::Debug for Iter<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cluster::queue::Iter<{}>", type_name::<T>())
    }
}

impl<'a, T: Serialize + DeserializeOwned> IntoIterator for &'a Queue<T> {
    type Item = T;
    type IntoIter = Iter<'a, T>;
    fn into_iter(self) -> Iter<'a, T> {
        self.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::testing::NatsServer;

    /// A put sent twice (its acknowledgement lost, say, to a server restart) is in the queue
    /// once: the repeat carries the same message id, which the server deduplicates.
    #[test]
    fn a_repeated_put_is_in_the_queue_once() {
        let Some(server) = NatsServer::for_test() else {
            return;
        };
        let cluster = Cluster::connect(&server.url()).unwrap();
        let queue = cluster.queue::<u64>("repeat").unwrap();
        let payload = queue.encode(&7).unwrap();
        let id = message_id();
        for _ in 0..2 {
            let publish = queue.publish(payload.clone(), id.clone());
            assert!(cluster.block_on(publish).unwrap().is_ok());
        }
        assert_eq!(queue.len().unwrap(), 1);
        let other = queue.publish(payload, message_id());
        assert!(cluster.block_on(other).unwrap().is_ok());
        assert_eq!(queue.len().unwrap(), 2);
    }
}
