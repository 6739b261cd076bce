//! [`Queue`] and [`JoinableQueue`]: many producers and many consumers, in any processes.
//!
//! A queue's items wait in memory that every handle shares (`ipc::ring`): a ring of records
//! in a sparse memfd, changed under a lock that a process's death cannot leave held, each
//! change committed whole or not at all. So every item reaches exactly one consumer, a `put`
//! that returned `Ok` has its item in the queue whatever its producer does next, and no kill
//! of any process at any point costs the queue a place. Items put by one handle are taken in
//! the order they were put.

use std::any::type_name;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::channel::Attempt;
use crate::error::{Error, Repr, Result, TrySendError};
use crate::ipc::codec as wire;
use crate::ipc::reactor;
use crate::ipc::ring::Ring;
use crate::select::{Selectable, Source};
use crate::sys::Wait;

/// A multi-producer, multi-consumer queue shared by any number of processes: Python's
/// `multiprocessing.Queue`, typed.
///
/// Clone it, pass it to children as an argument or a field, or send it inside a message: every
/// copy is the same queue. Every item is received by exactly one consumer.
/// [`close`](Queue::close) ends it for everyone: consumers receive what is left, then an
/// [`ErrorKind::Closed`](crate::ErrorKind::Closed) error, so no sentinel values are needed.
///
/// Without a `maxsize`, `put` never waits and never fails for lack of room: memory is the
/// only bound. A waiting item costs its encoded size plus 16 bytes (rounded up to 8) of shared
/// memory, which consumers give back to the system as they take items. The exception is an
/// item that carries descriptors (a [`Sender`](crate::Sender), a `Queue`, [`Bytes`](crate::Bytes),
/// [`SharedMemory`](crate::SharedMemory)): those travel in the kernel's socket buffer, so a
/// few hundred of them can wait at once, and `put` waits for room beyond that.
///
/// A consumer killed while it takes an item loses at most that item; a producer killed while
/// it puts one leaves either the whole item in the queue or nothing. A killed process never
/// costs a bounded queue a place, and never leaves the others blocked.
///
/// # Examples
///
/// ```
/// let queue = multiproc::Queue::<u32>::new()?;
/// let producer = queue.clone();
/// for i in 0..3 {
///     producer.put(i)?;
/// }
/// producer.close()?;
/// let mut got = Vec::new();
/// loop {
///     match queue.get() {
///         Ok(item) => got.push(item),
///         Err(e) if e.kind() == multiproc::ErrorKind::Closed => break,
///         Err(e) => return Err(e),
///     }
/// }
/// assert_eq!(got, [0, 1, 2]);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct Queue<T> {
    core: Arc<Core>,
    _type: PhantomData<fn(T) -> T>,
}

/// What every handle of one queue shares.
struct Core {
    ring: Ring,
}

impl<T: Serialize + DeserializeOwned> Queue<T> {
    /// A queue limited only by memory: `put` never waits (see [`Queue`] for items that
    /// carry descriptors).
    ///
    /// # Examples
    ///
    /// ```
    /// let queue = multiproc::Queue::<String>::new()?;
    /// assert_eq!(queue.maxsize(), None);
    /// queue.put("first".to_string())?;
    /// assert_eq!(queue.get()?, "first");
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Io`](crate::ErrorKind::Io) when the system refuses the queue's shared
    /// memory or its socket pair.
    pub fn new() -> Result<Self> {
        Self::make(None, false)
    }

    /// A queue that holds at most `maxsize` items, for any `maxsize`: `put` waits while it is
    /// full.
    ///
    /// # Examples
    ///
    /// ```
    /// let queue = multiproc::Queue::<u8>::with_maxsize(1)?;
    /// queue.put(1)?;
    /// assert!(queue.try_put(2).unwrap_err().is_full());
    /// assert_eq!(queue.get()?, 1);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`new`](Queue::new); [`ErrorKind::Other`](crate::ErrorKind::Other) for a `maxsize`
    /// of 0.
    pub fn with_maxsize(maxsize: usize) -> Result<Self> {
        if maxsize == 0 {
            return Err(Error::other(
                "a queue's maxsize must be at least 1 (use `Queue::new()` for no maxsize)",
            ));
        }
        Self::make(Some(maxsize), false)
    }

    fn make(maxsize: Option<usize>, joinable: bool) -> Result<Self> {
        let ring = Ring::new(maxsize.map_or(0, |n| n as u64), joinable)
            .map_err(|e| Error::io("cannot create a queue", e))?;
        Ok(Queue {
            core: Arc::new(Core { ring }),
            _type: PhantomData,
        })
    }

    /// Puts an item, waiting while the queue is full.
    ///
    /// # Examples
    ///
    /// ```
    /// let queue = multiproc::Queue::<u32>::new()?;
    /// for i in 0..1000 {
    ///     queue.put(i)?; // without a maxsize, never waits
    /// }
    /// assert_eq!(queue.len(), 1000);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Closed`](crate::ErrorKind::Closed) after [`close`](Queue::close);
    /// [`ErrorKind::Serialize`](crate::ErrorKind::Serialize) when the item cannot be encoded.
    pub fn put(&self, item: T) -> Result<()> {
        self.put_wait(&item, Wait::Forever, Duration::MAX)
    }

    /// Puts an item if there is room at once; otherwise hands it back in an
    /// [`ErrorKind::Full`](crate::ErrorKind::Full) error.
    ///
    /// # Examples
    ///
    /// ```
    /// let queue = multiproc::Queue::<u8>::with_maxsize(1)?;
    /// queue.try_put(1)?;
    /// let err = queue.try_put(2).unwrap_err();
    /// assert!(err.is_full());
    /// assert_eq!(err.into_inner(), 2); // the item comes back
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`put`](Queue::put), plus `Full`; every error carries the item.
    pub fn try_put(&self, item: T) -> std::result::Result<(), TrySendError<T>> {
        self.put_wait(&item, Wait::Now, Duration::ZERO)
            .map_err(|e| TrySendError::new(e, item))
    }

    /// Puts an item, waiting at most `timeout` for room.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let queue = multiproc::Queue::<u8>::with_maxsize(1)?;
    /// queue.put_timeout(1, Duration::from_millis(10))?;
    /// let e = queue.put_timeout(2, Duration::from_millis(10)).unwrap_err();
    /// assert!(e.error().is_timeout());
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
        self.put_wait(&item, Wait::timeout(timeout), timeout)
            .map_err(|e| TrySendError::new(e, item))
    }

    fn put_wait(&self, item: &T, wait: Wait, timeout: Duration) -> Result<()> {
        let ring = &self.core.ring;
        let sent = wire::with_encoded(item, |bytes, fds| {
            let sent = ring.put(bytes, fds, wait);
            if sent.is_err() {
                wire::not_sent();
            }
            sent
        })
        .map_err(|message| Error::serialize::<T>(message))?;
        let attempt = Attempt {
            verb: "put",
            doing: "putting",
            type_name: type_name::<T>(),
            wait,
            timeout,
        };
        sent.map_err(|e| {
            attempt.error(
                e,
                || {
                    Error::new(Repr::Closed {
                        what: format!("cannot put a {}: the queue is closed", type_name::<T>()),
                    })
                },
                || {
                    Error::new(Repr::Full {
                        what: match ring.maxsize() {
                            Some(n) => format!(
                                "cannot put a {}: the queue is full ({n} items)",
                                type_name::<T>()
                            ),
                            None => format!(
                                "cannot put a {}: the items that carry descriptors fill the \
                                 kernel's socket buffer",
                                type_name::<T>()
                            ),
                        },
                    })
                },
            )
        })
    }

    /// Takes the next item, waiting for one.
    ///
    /// # Examples
    ///
    /// ```
    /// let queue = multiproc::Queue::<u32>::new()?;
    /// let producer = queue.clone();
    /// let thread = std::thread::spawn(move || producer.put(7));
    /// assert_eq!(queue.get()?, 7); // waits for the item
    /// thread.join().unwrap()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Closed`](crate::ErrorKind::Closed) once the queue is closed and empty;
    /// [`ErrorKind::Deserialize`](crate::ErrorKind::Deserialize) for an item that cannot be
    /// decoded as `T` (the queue stays usable).
    pub fn get(&self) -> Result<T> {
        self.get_wait(Wait::Forever, Duration::MAX)
    }

    /// Takes an item if one is waiting, else returns an
    /// [`ErrorKind::Empty`](crate::ErrorKind::Empty) error at once.
    ///
    /// # Examples
    ///
    /// ```
    /// let queue = multiproc::Queue::<u8>::new()?;
    /// assert_eq!(queue.try_get().unwrap_err().kind(), multiproc::ErrorKind::Empty);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`get`](Queue::get), plus `Empty`.
    pub fn try_get(&self) -> Result<T> {
        self.get_wait(Wait::Now, Duration::ZERO)
    }

    /// Takes the next item without blocking the thread: for async code, under any executor.
    /// Several consumers may await one queue; each item still goes to exactly one.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// #[tokio::main]
    /// async fn main() -> multiproc::Result<()> {
    ///     let queue = multiproc::Queue::<String>::new()?;
    ///     let consumer = queue.clone();
    ///     let got = tokio::spawn(async move { consumer.get_async().await });
    ///     queue.put("job".to_string())?;
    ///     assert_eq!(got.await.unwrap()?, "job");
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`get`](Queue::get).
    pub async fn get_async(&self) -> Result<T> {
        loop {
            match self.try_get() {
                Err(e) if e.kind() == crate::ErrorKind::Empty => {}
                other => return other,
            }
            if !self.core.ring.arm() {
                reactor::readable(self.core.ring.bell()).await?;
            }
        }
    }

    /// Takes the next item, waiting at most `timeout`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let queue = multiproc::Queue::<u8>::new()?;
    /// assert!(queue.get_timeout(Duration::from_millis(10)).unwrap_err().is_timeout());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`get`](Queue::get), plus [`ErrorKind::Timeout`](crate::ErrorKind::Timeout).
    pub fn get_timeout(&self, timeout: Duration) -> Result<T> {
        self.get_wait(Wait::timeout(timeout), timeout)
    }

    fn get_wait(&self, wait: Wait, timeout: Duration) -> Result<T> {
        let what = type_name::<T>();
        let failed = match self.core.ring.get(wait) {
            Ok(frame) => return crate::channel::decode(frame),
            Err(e) => e,
        };
        let attempt = Attempt {
            verb: "get",
            doing: "getting",
            type_name: what,
            wait,
            timeout,
        };
        Err(attempt.error(
            failed,
            || {
                Error::new(Repr::Closed {
                    what: format!("no more {what} to get: the queue is closed and empty"),
                })
            },
            || Error::new(Repr::Empty),
        ))
    }

    /// Closes the queue for every handle in every process: later puts fail with
    /// [`ErrorKind::Closed`](crate::ErrorKind::Closed), consumers receive the items already
    /// put and then `Closed`. Closing twice is harmless.
    ///
    /// # Examples
    ///
    /// ```
    /// let queue = multiproc::Queue::<u8>::new()?;
    /// queue.put(1)?;
    /// queue.close()?;
    /// assert_eq!(queue.put(2).unwrap_err().kind(), multiproc::ErrorKind::Closed);
    /// assert_eq!(queue.get()?, 1);
    /// assert_eq!(queue.get().unwrap_err().kind(), multiproc::ErrorKind::Closed);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// None in practice; the `Result` is kept for queues of other transports.
    pub fn close(&self) -> Result<()> {
        self.core.ring.close();
        Ok(())
    }
}

impl<T> Queue<T> {
    /// The number of items in the queue, in every process: approximate, as Python's
    /// `qsize()`, since other processes put and get while it is read.
    ///
    /// # Examples
    ///
    /// ```
    /// let queue = multiproc::Queue::<u8>::new()?;
    /// queue.put(1)?;
    /// queue.put(2)?;
    /// assert_eq!(queue.len(), 2);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn len(&self) -> usize {
        usize::try_from(self.core.ring.len()).unwrap_or(usize::MAX)
    }

    /// Whether the queue holds no items: approximate, as [`len`](Queue::len).
    ///
    /// # Examples
    ///
    /// ```
    /// let queue = multiproc::Queue::<u8>::new()?;
    /// assert!(queue.is_empty());
    /// queue.put(1)?;
    /// assert!(!queue.is_empty());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether a queue with a `maxsize` holds that many items (never, without one):
    /// approximate, as [`len`](Queue::len).
    ///
    /// # Examples
    ///
    /// ```
    /// let queue = multiproc::Queue::<u8>::with_maxsize(1)?;
    /// assert!(!queue.is_full());
    /// queue.put(1)?;
    /// assert!(queue.is_full());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn is_full(&self) -> bool {
        self.core
            .ring
            .maxsize()
            .is_some_and(|n| self.core.ring.len() >= n)
    }

    /// The `maxsize` the queue was made with, if any.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(multiproc::Queue::<u8>::with_maxsize(3)?.maxsize(), Some(3));
    /// assert_eq!(multiproc::Queue::<u8>::new()?.maxsize(), None);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn maxsize(&self) -> Option<usize> {
        self.core.ring.maxsize().map(|n| n as usize)
    }
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Queue {
            core: Arc::clone(&self.core),
            _type: PhantomData,
        }
    }
}

impl<T> fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Queue<{}>", type_name::<T>())?;
        if let Some(n) = self.core.ring.maxsize() {
            write!(f, "(maxsize {n})")?;
        }
        Ok(())
    }
}

/// How a queue travels: its shared memory, its doorbell and its descriptors' socket pair.
#[derive(Serialize, Deserialize)]
struct QueueWire {
    data: u32,
    bell: u32,
    tx: u32,
    rx: u32,
}

impl<T> Serialize for Queue<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let [data, bell, tx, rx] = self.core.ring.fds();
        QueueWire {
            data: wire::attach_fd(data, "Queue")?,
            bell: wire::attach_fd(bell, "Queue")?,
            tx: wire::attach_fd(tx, "Queue")?,
            rx: wire::attach_fd(rx, "Queue")?,
        }
        .serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for Queue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let w = QueueWire::deserialize(d)?;
        let ring = Ring::from_fds(
            wire::take_fd(w.data, "Queue")?,
            wire::take_fd(w.bell, "Queue")?,
            wire::take_fd(w.tx, "Queue")?,
            wire::take_fd(w.rx, "Queue")?,
        )
        .map_err(|e| wire::de_error(format!("cannot map a received queue: {e}")))?;
        Ok(Queue {
            core: Arc::new(Core { ring }),
            _type: PhantomData,
        })
    }
}

/// A [`Queue`] that also counts unfinished work: Python's `multiprocessing.JoinableQueue`.
///
/// Every [`put`](JoinableQueue::put) adds a task; a consumer calls
/// [`task_done`](JoinableQueue::task_done) once it has finished with an item it got;
/// [`join`](JoinableQueue::join) waits until every task put so far is done. The count is
/// shared by every handle in every process.
///
/// # Examples
///
/// ```
/// let queue = multiproc::JoinableQueue::<u32>::new()?;
/// let worker = queue.clone();
/// let consumer = std::thread::spawn(move || -> multiproc::Result<u32> {
///     let mut sum = 0;
///     for _ in 0..3 {
///         sum += worker.get()?;
///         worker.task_done()?;
///     }
///     Ok(sum)
/// });
/// for i in 1..=3 {
///     queue.put(i)?;
/// }
/// queue.join()?;
/// assert_eq!(consumer.join().unwrap()?, 6);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct JoinableQueue<T> {
    queue: Queue<T>,
}

impl<T: Serialize + DeserializeOwned> JoinableQueue<T> {
    /// A joinable queue limited only by memory; see [`Queue::new`].
    ///
    /// # Examples
    ///
    /// ```
    /// let queue = multiproc::JoinableQueue::<u8>::new()?;
    /// assert_eq!(queue.unfinished_tasks(), 0);
    /// queue.join()?; // nothing to wait for yet
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Queue::new`].
    pub fn new() -> Result<Self> {
        Ok(JoinableQueue {
            queue: Queue::make(None, true)?,
        })
    }

    /// A joinable queue that holds at most `maxsize` items; see [`Queue::with_maxsize`].
    ///
    /// # Examples
    ///
    /// ```
    /// let queue = multiproc::JoinableQueue::<u8>::with_maxsize(4)?;
    /// queue.put(1)?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Queue::with_maxsize`].
    pub fn with_maxsize(maxsize: usize) -> Result<Self> {
        if maxsize == 0 {
            return Err(Error::other(
                "a queue's maxsize must be at least 1 (use `JoinableQueue::new()` for no maxsize)",
            ));
        }
        Ok(JoinableQueue {
            queue: Queue::make(Some(maxsize), true)?,
        })
    }

    /// Puts an item and counts one more unfinished task; see [`Queue::put`].
    ///
    /// # Examples
    ///
    /// ```
    /// let queue = multiproc::JoinableQueue::<u8>::new()?;
    /// queue.put(1)?;
    /// queue.put(2)?;
    /// assert_eq!(queue.unfinished_tasks(), 2);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Queue::put`].
    pub fn put(&self, item: T) -> Result<()> {
        self.queue.put(item)
    }

    /// See [`Queue::try_put`].
    ///
    /// # Examples
    ///
    /// ```
    /// let queue = multiproc::JoinableQueue::<u8>::with_maxsize(1)?;
    /// queue.try_put(1)?;
    /// assert!(queue.try_put(2).unwrap_err().is_full());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Queue::try_put`].
    pub fn try_put(&self, item: T) -> std::result::Result<(), TrySendError<T>> {
        self.queue.try_put(item)
    }

    /// See [`Queue::put_timeout`].
    ///
    /// # Examples
    ///
    /// ```
    /// let queue = multiproc::JoinableQueue::<u8>::new()?;
    /// queue.put_timeout(1, std::time::Duration::from_secs(1))?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Queue::put_timeout`].
    pub fn put_timeout(
        &self,
        item: T,
        timeout: Duration,
    ) -> std::result::Result<(), TrySendError<T>> {
        self.queue.put_timeout(item, timeout)
    }

    /// See [`Queue::get`]; call [`task_done`](JoinableQueue::task_done) when finished with
    /// the item.
    ///
    /// # Examples
    ///
    /// ```
    /// let queue = multiproc::JoinableQueue::<u8>::new()?;
    /// queue.put(1)?;
    /// assert_eq!(queue.get()?, 1);
    /// assert_eq!(queue.unfinished_tasks(), 1); // got, but not done yet
    /// queue.task_done()?;
    /// assert_eq!(queue.unfinished_tasks(), 0);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Queue::get`].
    pub fn get(&self) -> Result<T> {
        self.queue.get()
    }

    /// See [`Queue::get_async`]; call [`task_done`](JoinableQueue::task_done) when finished
    /// with the item.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// #[tokio::main]
    /// async fn main() -> multiproc::Result<()> {
    ///     let queue = multiproc::JoinableQueue::<u8>::new()?;
    ///     queue.put(1)?;
    ///     assert_eq!(queue.get_async().await?, 1);
    ///     queue.task_done()?;
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Queue::get`].
    pub async fn get_async(&self) -> Result<T> {
        self.queue.get_async().await
    }

    /// See [`Queue::try_get`].
    ///
    /// # Examples
    ///
    /// ```
    /// let queue = multiproc::JoinableQueue::<u8>::new()?;
    /// assert!(queue.try_get().is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Queue::try_get`].
    pub fn try_get(&self) -> Result<T> {
        self.queue.try_get()
    }

    /// See [`Queue::get_timeout`].
    ///
    /// # Examples
    ///
    /// ```
    /// let queue = multiproc::JoinableQueue::<u8>::new()?;
    /// assert!(queue.get_timeout(std::time::Duration::from_millis(1)).is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Queue::get_timeout`].
    pub fn get_timeout(&self, timeout: Duration) -> Result<T> {
        self.queue.get_timeout(timeout)
    }

    /// See [`Queue::close`]. Closing does not finish tasks: `join` still waits for them.
    ///
    /// # Examples
    ///
    /// ```
    /// let queue = multiproc::JoinableQueue::<u8>::new()?;
    /// queue.close()?;
    /// assert!(queue.put(1).is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Queue::close`].
    pub fn close(&self) -> Result<()> {
        self.queue.close()
    }
}

impl<T> JoinableQueue<T> {
    fn ring(&self) -> &Ring {
        &self.queue.core.ring
    }

    /// See [`Queue::len`].
    ///
    /// # Examples
    ///
    /// ```
    /// let queue = multiproc::JoinableQueue::<u8>::new()?;
    /// queue.put(1)?;
    /// assert_eq!(queue.len(), 1);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// See [`Queue::is_empty`].
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(multiproc::JoinableQueue::<u8>::new()?.is_empty());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// See [`Queue::is_full`].
    ///
    /// # Examples
    ///
    /// ```
    /// let queue = multiproc::JoinableQueue::<u8>::with_maxsize(1)?;
    /// queue.put(1)?;
    /// assert!(queue.is_full());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn is_full(&self) -> bool {
        self.queue.is_full()
    }

    /// Marks one item got from the queue as finished.
    ///
    /// # Examples
    ///
    /// ```
    /// let queue = multiproc::JoinableQueue::<u8>::new()?;
    /// queue.put(1)?;
    /// queue.get()?;
    /// queue.task_done()?;
    /// assert!(queue.task_done().is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Other`](crate::ErrorKind::Other) when called more often than items were
    /// put (Python raises `ValueError`); the count stays at zero.
    pub fn task_done(&self) -> Result<()> {
        if self.ring().task_done() {
            Ok(())
        } else {
            Err(Error::other(
                "task_done() was called more times than items were put in the queue",
            ))
        }
    }

    /// The number of items put and not yet marked done, in every process.
    ///
    /// # Examples
    ///
    /// ```
    /// let queue = multiproc::JoinableQueue::<u8>::new()?;
    /// queue.put(1)?;
    /// assert_eq!(queue.unfinished_tasks(), 1);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn unfinished_tasks(&self) -> usize {
        usize::try_from(self.ring().unfinished()).unwrap_or(usize::MAX)
    }

    /// Waits until every item put so far has been marked done.
    ///
    /// # Examples
    ///
    /// ```
    /// let queue = multiproc::JoinableQueue::<u8>::new()?;
    /// queue.put(1)?;
    /// let worker = queue.clone();
    /// let thread = std::thread::spawn(move || -> multiproc::Result<()> {
    ///     worker.get()?;
    ///     worker.task_done()
    /// });
    /// queue.join()?; // returns once the worker called `task_done`
    /// assert_eq!(queue.unfinished_tasks(), 0);
    /// thread.join().unwrap()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// None in practice; the `Result` matches [`join_timeout`](JoinableQueue::join_timeout).
    pub fn join(&self) -> Result<()> {
        self.join_wait(Wait::Forever, Duration::MAX)
    }

    /// Waits at most `timeout` until every item put so far has been marked done.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let queue = multiproc::JoinableQueue::<u8>::new()?;
    /// queue.put(1)?;
    /// assert!(queue.join_timeout(Duration::from_millis(10)).unwrap_err().is_timeout());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Timeout`](crate::ErrorKind::Timeout) with tasks still unfinished.
    pub fn join_timeout(&self, timeout: Duration) -> Result<()> {
        self.join_wait(Wait::timeout(timeout), timeout)
    }

    fn join_wait(&self, wait: Wait, timeout: Duration) -> Result<()> {
        if self.ring().join(wait) {
            return Ok(());
        }
        Err(Error::new(Repr::Timeout {
            what: format!(
                "waiting for {} unfinished tasks of a JoinableQueue<{}>",
                self.ring().unfinished(),
                type_name::<T>()
            ),
            after: timeout,
        }))
    }
}

impl<T> Clone for JoinableQueue<T> {
    fn clone(&self) -> Self {
        JoinableQueue {
            queue: self.queue.clone(),
        }
    }
}

impl<T> fmt::Debug for JoinableQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Joinable{:?}", self.queue)
    }
}

impl<T> Serialize for JoinableQueue<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.queue.serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for JoinableQueue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let queue = Queue::deserialize(d)?;
        if !queue.core.ring.is_joinable() {
            return Err(wire::de_error(
                "received a plain Queue where a JoinableQueue was expected".to_string(),
            ));
        }
        Ok(JoinableQueue { queue })
    }
}

impl<T> Selectable for Queue<T> {
    fn __source(&self) -> Source<'_> {
        Source::ring(&self.core.ring)
    }
}

impl<T> Selectable for JoinableQueue<T> {
    fn __source(&self) -> Source<'_> {
        Source::ring(self.ring())
    }
}

impl<T: Serialize + DeserializeOwned> Queue<T> {
    /// A blocking iterator over the items, ending once the queue is closed and empty: the
    /// consumer's loop without a sentinel value. Each item goes to exactly one consumer, so
    /// consumers iterating one queue in several processes share its items.
    ///
    /// An item that cannot be decoded is reported on stderr and skipped, never dropped
    /// silently; use [`get`](Queue::get) to handle it.
    ///
    /// # Examples
    ///
    /// ```
    /// let queue = multiproc::Queue::<u32>::new()?;
    /// for i in 0..3 {
    ///     queue.put(i)?;
    /// }
    /// queue.close()?;
    /// assert_eq!(queue.iter().sum::<u32>(), 3);
    /// for item in &queue {
    ///     unreachable!("the queue is closed and empty: {item}");
    /// }
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn iter(&self) -> Iter<'_, T> {
        Iter { queue: self }
    }

    fn next_for_iter(&self) -> Option<T> {
        loop {
            match self.get() {
                Ok(item) => return Some(item),
                Err(e) if e.kind() == crate::ErrorKind::Deserialize => {
                    eprintln!("multiproc: skipped a queue item: {e}");
                }
                Err(e) if e.kind() == crate::ErrorKind::Closed => return None,
                Err(e) => {
                    eprintln!("multiproc: queue iteration stopped: {e}");
                    return None;
                }
            }
        }
    }
}

impl<T: Serialize + DeserializeOwned> JoinableQueue<T> {
    /// A blocking iterator over the items, as [`Queue::iter`]; call
    /// [`task_done`](JoinableQueue::task_done) for each as it is finished.
    ///
    /// # Examples
    ///
    /// ```
    /// let queue = multiproc::JoinableQueue::<u32>::new()?;
    /// queue.put(5)?;
    /// queue.close()?;
    /// for item in &queue {
    ///     assert_eq!(item, 5);
    ///     queue.task_done()?;
    /// }
    /// queue.join()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn iter(&self) -> Iter<'_, T> {
        self.queue.iter()
    }
}

/// A blocking iterator over a borrowed [`Queue`] or [`JoinableQueue`]; see [`Queue::iter`].
///
/// # Examples
///
/// ```
/// let queue = multiproc::Queue::<u8>::new()?;
/// queue.close()?;
/// let mut it: multiproc::queue::Iter<'_, u8> = queue.iter();
/// assert_eq!(it.next(), None);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct Iter<'a, T> {
    queue: &'a Queue<T>,
}

impl<T: Serialize + DeserializeOwned> Iterator for Iter<'_, T> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        self.queue.next_for_iter()
    }
}

impl<T> fmt::Debug for Iter<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "queue::Iter<{}>", type_name::<T>())
    }
}

/// A blocking iterator that owns its queue handle; see [`Queue`]'s `IntoIterator`.
///
/// # Examples
///
/// ```
/// let queue = multiproc::Queue::<u8>::new()?;
/// queue.put(1)?;
/// queue.close()?;
/// let items: Vec<u8> = queue.into_iter().collect();
/// assert_eq!(items, [1]);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct IntoIter<T> {
    queue: Queue<T>,
}

impl<T: Serialize + DeserializeOwned> Iterator for IntoIter<T> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        self.queue.next_for_iter()
    }
}

impl<T> fmt::Debug for IntoIter<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "queue::IntoIter<{}>", type_name::<T>())
    }
}

impl<'a, T: Serialize + DeserializeOwned> IntoIterator for &'a Queue<T> {
    type Item = T;
    type IntoIter = Iter<'a, T>;
    fn into_iter(self) -> Iter<'a, T> {
        self.iter()
    }
}

impl<T: Serialize + DeserializeOwned> IntoIterator for Queue<T> {
    type Item = T;
    type IntoIter = IntoIter<T>;
    fn into_iter(self) -> IntoIter<T> {
        IntoIter { queue: self }
    }
}

impl<'a, T: Serialize + DeserializeOwned> IntoIterator for &'a JoinableQueue<T> {
    type Item = T;
    type IntoIter = Iter<'a, T>;
    fn into_iter(self) -> Iter<'a, T> {
        self.iter()
    }
}
