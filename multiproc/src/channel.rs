//! Typed mailboxes between processes: [`channel()`], [`bounded()`], [`Sender`], [`Receiver`].
//!
//! Both ends are `Serialize + Deserialize`: they travel as fields of a `#[process]` struct,
//! as arguments of a `#[process]` fn, and inside other messages. Sending an end moves it: the
//! sending process's copy is closed once the message is sent.
//!
//! # Where messages wait
//!
//! A channel is a Unix `SOCK_SEQPACKET` socket pair: one datagram per message, in the order
//! each sender sent them. The kernel holds about 200 KiB per socket; beyond that, the
//! receiving process's pump thread moves arrived messages into the receiver's memory, so a
//! sender never waits for a slow reader (a slow reader's backlog costs its own heap: the
//! encoded size of each message plus about 50 bytes). [`bounded()`] puts an exact limit on
//! the messages in flight instead, counted by a semaphore all senders share.
//!
//! A receiving process that is stopped (SIGSTOP, a debugger) drains nothing: its senders then
//! wait once the kernel's buffer is full, about 278 messages of up to a few hundred bytes (94 of
//! 1 KiB; a message over 64 KiB costs one small datagram), until it runs again; [`Sender::try_send`]
//! returns `Full` and [`Sender::send_timeout`] a `Timeout` meanwhile, and nothing is lost.

use std::any::type_name;
use std::collections::VecDeque;
use std::fmt;
use std::marker::PhantomData;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Repr, Result, TrySendError};
use crate::ipc::codec as wire;
use crate::ipc::frame::{self, Frame, WireError};
use crate::ipc::pump::{self, Inbox, Received};
use crate::ipc::shm::Slots;
use crate::select::{self, Selectable, Source};
use crate::sys::{self, Wait};

/// Creates a typed channel between processes, std's `mpsc::channel` across process bounds.
///
/// Messages sent by one sender arrive in the order they were sent. `send` never blocks on a
/// slow reader, only on a receiving process that is stopped altogether: see
/// [the module docs](mod@crate::channel#where-messages-wait) for where the messages wait. The [`Receiver`] reports
/// [`ErrorKind::Disconnected`](crate::ErrorKind::Disconnected) once every [`Sender`] in every
/// process has been dropped and the messages already sent have been received.
///
/// # Examples
///
/// ```
/// let (tx, rx) = multiproc::channel::<String>()?;
/// tx.send("hello".to_string())?;
/// drop(tx);
/// assert_eq!(rx.recv()?, "hello");
/// assert!(rx.recv().unwrap_err().is_disconnected());
/// # Ok::<(), multiproc::Error>(())
/// ```
///
/// # Errors
///
/// [`ErrorKind::Io`](crate::ErrorKind::Io) when the operating system refuses a socket pair
/// (for example when the process is out of file descriptors).
pub fn channel<T>() -> Result<(Sender<T>, Receiver<T>)>
where
    T: Serialize + DeserializeOwned,
{
    make(None)
}

/// Creates a channel that holds at most `capacity` messages in flight (sent, not yet
/// received), std's `mpsc::sync_channel` across process bounds.
///
/// [`Sender::send`] blocks while the channel is full, [`Sender::try_send`] returns an
/// [`ErrorKind::Full`](crate::ErrorKind::Full) error with the message instead, and
/// [`Sender::send_timeout`] waits at most a given time. The limit holds across every clone of
/// the sender, in every process.
///
/// # Examples
///
/// ```
/// let (tx, rx) = multiproc::bounded::<u32>(2)?;
/// tx.send(1)?;
/// tx.send(2)?;
/// assert!(tx.try_send(3).unwrap_err().is_full());
/// assert_eq!(rx.recv()?, 1);
/// tx.try_send(3)?;
/// # Ok::<(), multiproc::Error>(())
/// ```
///
/// # Errors
///
/// [`ErrorKind::Other`](crate::ErrorKind::Other) for a capacity of 0;
/// [`ErrorKind::Io`](crate::ErrorKind::Io) as for [`channel()`].
pub fn bounded<T>(capacity: usize) -> Result<(Sender<T>, Receiver<T>)>
where
    T: Serialize + DeserializeOwned,
{
    if capacity == 0 {
        return Err(Error::other(
            "a bounded channel needs a capacity of at least 1 (use `channel()` for no limit)",
        ));
    }
    make(Some(capacity))
}

fn make<T>(capacity: Option<usize>) -> Result<(Sender<T>, Receiver<T>)> {
    let (tx, rx) = sys::socketpair().map_err(|e| Error::io("cannot create a channel", e))?;
    let doorbell = pump::doorbell().map_err(|e| Error::io("cannot create a channel", e))?;
    let slots = match capacity {
        Some(n) => {
            Some(Arc::new(Slots::new(n).map_err(|e| {
                Error::io("cannot create a channel's semaphore", e)
            })?))
        }
        None => None,
    };
    let sender = Sender {
        sock: Arc::new(tx),
        doorbell: Arc::new(
            doorbell
                .try_clone()
                .map_err(|e| Error::io("cannot create a channel", e))?,
        ),
        slots: slots.clone(),
        capacity,
        _type: PhantomData,
    };
    let receiver = Receiver {
        inbox: Inbox::new(rx, doorbell, VecDeque::new()),
        slots,
        _type: PhantomData,
        _not_sync: PhantomData,
    };
    Ok((sender, receiver))
}

/// The sending half of a [`channel()`]. Clone it to send from several places or processes.
///
/// # Examples
///
/// ```
/// let (tx, rx) = multiproc::channel::<u32>()?;
/// let tx2 = tx.clone();
/// tx.send(1)?;
/// tx2.send(2)?;
/// assert_eq!(rx.recv()? + rx.recv()?, 3);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct Sender<T> {
    sock: Arc<OwnedFd>,
    /// Rung when the socket is full, so that the receiving process drains it.
    doorbell: Arc<OwnedFd>,
    slots: Option<Arc<Slots>>,
    capacity: Option<usize>,
    _type: PhantomData<fn(T)>,
}

/// The receiving half of a [`channel()`]; iterate over it to receive until every sender is gone.
///
/// # Examples
///
/// ```
/// let (tx, rx) = multiproc::channel::<u32>()?;
/// for i in 0..3 {
///     tx.send(i)?;
/// }
/// drop(tx);
/// assert_eq!(rx.into_iter().sum::<u32>(), 3);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct Receiver<T> {
    inbox: Arc<Inbox>,
    slots: Option<Arc<Slots>>,
    /// `Send`, not `Sync` (like std's): one thread receives at a time; for several consumers
    /// use a [`Queue`](crate::Queue).
    _type: PhantomData<fn() -> T>,
    _not_sync: PhantomData<std::cell::Cell<()>>,
}

impl<T: Serialize> Sender<T> {
    /// Sends a message; on a [`bounded()`] channel, waits while it is full.
    ///
    /// # Examples
    ///
    /// ```
    /// let (tx, rx) = multiproc::channel::<String>()?;
    /// # let _ = &rx;
    /// tx.send("hi".to_string())?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Disconnected`](crate::ErrorKind::Disconnected) when the receiver is gone,
    /// [`ErrorKind::Serialize`](crate::ErrorKind::Serialize) when the value cannot be encoded
    /// (nothing is sent then).
    pub fn send(&self, value: T) -> Result<()> {
        self.send_wait(&value, Wait::Forever, Duration::MAX)
    }

    /// Sends a message if there is room at once; otherwise hands it back in an
    /// [`ErrorKind::Full`](crate::ErrorKind::Full) error.
    ///
    /// # Examples
    ///
    /// ```
    /// let (tx, rx) = multiproc::bounded::<u8>(1)?;
    /// tx.try_send(1)?;
    /// let e = tx.try_send(2).unwrap_err();
    /// assert!(e.is_full());
    /// assert_eq!(e.into_inner(), 2);
    /// # drop(rx);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`send`](Sender::send), plus `Full`; every error carries the message.
    pub fn try_send(&self, value: T) -> std::result::Result<(), TrySendError<T>> {
        self.send_wait(&value, Wait::Now, Duration::ZERO)
            .map_err(|e| TrySendError::new(e, value))
    }

    /// Sends a message, waiting at most `timeout` for room.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let (tx, rx) = multiproc::bounded::<u8>(1)?;
    /// tx.send_timeout(1, Duration::from_millis(10))?;
    /// let e = tx.send_timeout(2, Duration::from_millis(10)).unwrap_err();
    /// assert!(e.error().is_timeout());
    /// # drop(rx);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`send`](Sender::send), plus [`ErrorKind::Timeout`](crate::ErrorKind::Timeout);
    /// every error carries the message.
    pub fn send_timeout(
        &self,
        value: T,
        timeout: Duration,
    ) -> std::result::Result<(), TrySendError<T>> {
        self.send_wait(&value, Wait::timeout(timeout), timeout)
            .map_err(|e| TrySendError::new(e, value))
    }

    /// Sends every item of `items`, packing small ones into as few datagrams as fit (up to
    /// 64 KiB each): one system call for hundreds of small messages instead of one each. The
    /// receiver sees them one by one, in order. On a [`bounded()`] channel, or for items that
    /// carry channel ends or are large, it sends them one at a time.
    ///
    /// # Examples
    ///
    /// ```
    /// let (tx, rx) = multiproc::channel::<u32>()?;
    /// tx.send_many(0..1000)?;
    /// drop(tx);
    /// assert_eq!(rx.iter().count(), 1000);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`send`](Sender::send). It stops at the first error: the items before it were sent,
    /// the failing one and those after it were not.
    pub fn send_many(&self, items: impl IntoIterator<Item = T>) -> Result<()> {
        if self.slots.is_some() {
            return items.into_iter().try_for_each(|item| self.send(item));
        }
        let sock = self.sock.as_fd();
        let doorbell = Some(self.doorbell.as_fd());
        let mut batch = frame::Batch::new();
        let flush = |batch: &mut frame::Batch| {
            batch
                .flush(sock, doorbell, Wait::Forever)
                .map_err(|e| self.wire_error(e, Wait::Forever, Duration::MAX))
        };
        for item in items {
            let queued = wire::with_encoded(&item, |bytes, fds| {
                if fds.is_empty() && batch.push(bytes) {
                    return Ok(true);
                }
                flush(&mut batch)?;
                if fds.is_empty() && batch.push(bytes) {
                    return Ok(true);
                }
                // Too big for a batch, or it carries descriptors: on its own.
                frame::send(sock, doorbell, bytes, fds, Wait::Forever)
                    .map(|()| false)
                    .map_err(|e| self.wire_error(e, Wait::Forever, Duration::MAX))
            });
            match queued {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e),
                Err(message) => {
                    flush(&mut batch)?;
                    return Err(Error::serialize::<T>(message));
                }
            }
        }
        flush(&mut batch)
    }

    fn send_wait(&self, value: &T, wait: Wait, timeout: Duration) -> Result<()> {
        let sent = wire::with_payload(value, |payload, fds| {
            let doorbell = Some(self.doorbell.as_fd());
            let sent = match &self.slots {
                None => frame::send_payload(self.sock.as_fd(), doorbell, payload, fds, wait),
                // Hang-up on our socket means the receiver is gone: stop waiting for room.
                Some(slots) => slots
                    .acquire(Some((self.sock.as_fd(), 0)), wait)
                    .and_then(|()| {
                        let sent =
                            frame::send_payload(self.sock.as_fd(), doorbell, payload, fds, wait);
                        if sent.is_err() {
                            slots.release();
                        }
                        sent
                    }),
            };
            if sent.is_err() {
                wire::not_sent();
            }
            sent
        })
        .map_err(|message| Error::serialize::<T>(message))?;
        sent.map_err(|e| self.wire_error(e, wait, timeout))
    }

    fn wire_error(&self, e: WireError, wait: Wait, timeout: Duration) -> Error {
        let attempt = Attempt {
            verb: "send",
            doing: "sending",
            type_name: type_name::<T>(),
            wait,
            timeout,
        };
        attempt.error(
            e,
            || disconnected_send(type_name::<T>()),
            || {
                Error::new(Repr::Full {
                    what: match self.capacity {
                        Some(n) => format!(
                            "cannot send a {}: the channel is full ({n} messages in flight)",
                            type_name::<T>()
                        ),
                        None => format!(
                            "cannot send a {}: the receiver's socket buffer is full",
                            type_name::<T>()
                        ),
                    },
                })
            },
        )
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        Sender {
            sock: Arc::clone(&self.sock),
            doorbell: Arc::clone(&self.doorbell),
            slots: self.slots.clone(),
            capacity: self.capacity,
            _type: PhantomData,
        }
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sender<{}>", type_name::<T>())
    }
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Receiver<{}>", type_name::<T>())
    }
}

impl<T> Receiver<T> {
    pub(crate) fn inbox(&self) -> &Inbox {
        &self.inbox
    }
}

impl<T: DeserializeOwned> Receiver<T> {
    /// Blocks until a message arrives.
    ///
    /// # Examples
    ///
    /// ```
    /// let (tx, rx) = multiproc::channel::<u8>()?;
    /// tx.send(7)?;
    /// assert_eq!(rx.recv()?, 7);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Disconnected`](crate::ErrorKind::Disconnected) once every sender is gone and
    /// nothing is left to receive; [`ErrorKind::Deserialize`](crate::ErrorKind::Deserialize) for
    /// a message that cannot be decoded as `T` (the channel stays usable).
    pub fn recv(&self) -> Result<T> {
        self.recv_wait(Wait::Forever, Duration::MAX)
    }

    /// Returns a waiting message, or an [`ErrorKind::Empty`](crate::ErrorKind::Empty) error at
    /// once when there is none.
    ///
    /// # Examples
    ///
    /// ```
    /// let (tx, rx) = multiproc::channel::<u8>()?;
    /// assert_eq!(rx.try_recv().unwrap_err().kind(), multiproc::ErrorKind::Empty);
    /// tx.send(1)?;
    /// assert_eq!(rx.try_recv()?, 1);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`recv`](Receiver::recv), plus `Empty`.
    pub fn try_recv(&self) -> Result<T> {
        self.recv_wait(Wait::Now, Duration::ZERO)
    }

    /// Waits for a message without blocking the thread: for async code, under any executor
    /// (a small reactor thread watches the channel and wakes the task). Takes `&mut self` so
    /// that the future is `Send`, and so can be spawned on a multi-threaded runtime.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// #[tokio::main]
    /// async fn main() -> multiproc::Result<()> {
    ///     let (tx, mut rx) = multiproc::channel::<u32>()?;
    ///     let waiting = tokio::spawn(async move { rx.recv_async().await });
    ///     tx.send(7)?;
    ///     assert_eq!(waiting.await.unwrap()?, 7);
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`recv`](Receiver::recv).
    pub async fn recv_async(&mut self) -> Result<T> {
        loop {
            match self.try_recv() {
                Err(e) if e.kind() == crate::ErrorKind::Empty => {}
                other => return other,
            }
            select::ready(self.__source()).await?;
        }
    }

    /// Waits at most `timeout` for a message.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let (tx, rx) = multiproc::channel::<u8>()?;
    /// assert!(rx.recv_timeout(Duration::from_millis(10)).unwrap_err().is_timeout());
    /// tx.send(1)?;
    /// assert_eq!(rx.recv_timeout(Duration::from_millis(10))?, 1);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`recv`](Receiver::recv), plus [`ErrorKind::Timeout`](crate::ErrorKind::Timeout).
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T> {
        self.recv_wait(Wait::timeout(timeout), timeout)
    }

    fn recv_wait(&self, wait: Wait, timeout: Duration) -> Result<T> {
        let what = type_name::<T>();
        let failed = match self.inbox.recv(wait) {
            Ok(Received::Frame(frame)) => {
                if let Some(slots) = &self.slots {
                    slots.release();
                }
                return decode(frame);
            }
            Ok(Received::Closed) => WireError::Closed,
            Ok(Received::Nothing) => WireError::WouldBlock,
            Err(e) => WireError::Io(e),
        };
        let attempt = Attempt {
            verb: "receive",
            doing: "receiving",
            type_name: what,
            wait,
            timeout,
        };
        Err(attempt.error(
            failed,
            || disconnected_recv(what),
            || Error::new(Repr::Empty),
        ))
    }

    /// A blocking iterator over the messages, ending once every sender is gone.
    ///
    /// # Examples
    ///
    /// ```
    /// let (tx, rx) = multiproc::channel::<u8>()?;
    /// tx.send(1)?;
    /// drop(tx);
    /// assert_eq!(rx.iter().collect::<Vec<_>>(), [1]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn iter(&self) -> Iter<'_, T> {
        Iter { rx: self }
    }

    /// The next message for the iterators: a message that cannot be decoded is reported on
    /// stderr and skipped, never dropped silently; use [`recv`](Receiver::recv) to handle it.
    fn next_for_iter(&self) -> Option<T> {
        loop {
            match self.recv() {
                Ok(value) => return Some(value),
                Err(e) if e.kind() == crate::ErrorKind::Deserialize => {
                    eprintln!("multiproc: skipped a message: {e}");
                }
                Err(e) if e.is_disconnected() => return None,
                Err(e) => {
                    eprintln!("multiproc: receiver iteration stopped: {e}");
                    return None;
                }
            }
        }
    }
}

/// A blocking iterator over a borrowed [`Receiver`]; see [`Receiver::iter`].
///
/// # Examples
///
/// ```
/// let (tx, rx) = multiproc::channel::<u8>()?;
/// drop(tx);
/// let mut it: multiproc::channel::Iter<'_, u8> = rx.iter();
/// assert_eq!(it.next(), None);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct Iter<'a, T> {
    rx: &'a Receiver<T>,
}

impl<T: DeserializeOwned> Iterator for Iter<'_, T> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        self.rx.next_for_iter()
    }
}

/// A blocking iterator that owns its [`Receiver`]; see [`Receiver`]'s `IntoIterator`.
///
/// # Examples
///
/// ```
/// let (tx, rx) = multiproc::channel::<u8>()?;
/// drop(tx);
/// let mut it: multiproc::channel::IntoIter<u8> = rx.into_iter();
/// assert_eq!(it.next(), None);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct IntoIter<T> {
    rx: Receiver<T>,
}

impl<T: DeserializeOwned> Iterator for IntoIter<T> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        self.rx.next_for_iter()
    }
}

impl<T: DeserializeOwned> IntoIterator for Receiver<T> {
    type Item = T;
    type IntoIter = IntoIter<T>;
    fn into_iter(self) -> IntoIter<T> {
        IntoIter { rx: self }
    }
}

impl<'a, T: DeserializeOwned> IntoIterator for &'a Receiver<T> {
    type Item = T;
    type IntoIter = Iter<'a, T>;
    fn into_iter(self) -> Iter<'a, T> {
        self.iter()
    }
}

/// Decodes a received message as `T`.
pub(crate) fn decode<T: DeserializeOwned>(frame: Frame) -> Result<T> {
    wire::decode(frame).map_err(|message| {
        Error::new(Repr::Deserialize {
            type_name: type_name::<T>(),
            message,
        })
    })
}

/// How a [`Sender`] travels: its socket, and the semaphore of a bounded channel.
#[derive(Serialize, Deserialize)]
struct SenderWire {
    sock: u32,
    doorbell: u32,
    slots: Option<(u32, usize)>,
}

impl<T> Serialize for Sender<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let sock = wire::attach_fd(self.sock.as_fd(), "Sender")?;
        let doorbell = wire::attach_fd(self.doorbell.as_fd(), "Sender")?;
        let slots = match (&self.slots, self.capacity) {
            (Some(slots), Some(n)) => Some((wire::attach_fd(slots.fd(), "Sender")?, n)),
            _ => None,
        };
        SenderWire {
            sock,
            doorbell,
            slots,
        }
        .serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for Sender<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let w = SenderWire::deserialize(d)?;
        let sock = wire::take_fd(w.sock, "Sender")?;
        let (slots, capacity) = match w.slots {
            Some((fd, n)) => (
                Some(Arc::new(Slots::from_fd(wire::take_fd(fd, "Sender")?))),
                Some(n),
            ),
            None => (None, None),
        };
        Ok(Sender {
            sock: Arc::new(sock),
            doorbell: Arc::new(wire::take_fd(w.doorbell, "Sender")?),
            slots,
            capacity,
            _type: PhantomData,
        })
    }
}

/// How a [`Receiver`] travels: its socket, the semaphore of a bounded channel, and the
/// messages this process had already read from the socket but nobody had received.
#[derive(Serialize, Deserialize)]
struct ReceiverWire {
    sock: u32,
    doorbell: u32,
    slots: Option<u32>,
    waiting: Vec<(crate::Bytes, Vec<u32>)>,
}

impl<T> Serialize for Receiver<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let sock = wire::attach_fd(self.inbox.fd(), "Receiver")?;
        let doorbell = wire::attach_fd(self.inbox.doorbell(), "Receiver")?;
        let slots = match &self.slots {
            Some(slots) => Some(wire::attach_fd(slots.fd(), "Receiver")?),
            None => None,
        };
        // From here on this process no longer reads the socket: the receiver is moving.
        let mut waiting = Vec::new();
        wire::note_move(Arc::clone(&self.inbox));
        let waiting_frames = self.inbox.detach().map_err(|e| {
            serde::ser::Error::custom(format!("cannot copy a waiting message's descriptors: {e}"))
        })?;
        for (bytes, fds) in waiting_frames {
            let mut indices = Vec::with_capacity(fds.len());
            for fd in &fds {
                indices.push(wire::attach_fd(fd.as_fd(), "Receiver")?);
            }
            waiting.push((crate::Bytes::from(bytes), indices));
        }
        ReceiverWire {
            sock,
            doorbell,
            slots,
            waiting,
        }
        .serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for Receiver<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let w = ReceiverWire::deserialize(d)?;
        let sock = wire::take_fd(w.sock, "Receiver")?;
        let doorbell = wire::take_fd(w.doorbell, "Receiver")?;
        let slots = match w.slots {
            Some(fd) => Some(Arc::new(Slots::from_fd(wire::take_fd(fd, "Receiver")?))),
            None => None,
        };
        let mut frames = VecDeque::with_capacity(w.waiting.len());
        for (bytes, indices) in w.waiting {
            let mut fds: Vec<OwnedFd> = Vec::with_capacity(indices.len());
            for i in indices {
                fds.push(wire::take_fd(i, "Receiver")?);
            }
            frames.push_back(Frame::new(bytes.into_vec(), fds));
        }
        Ok(Receiver {
            inbox: Inbox::new(sock, doorbell, frames),
            slots,
            _type: PhantomData,
            _not_sync: PhantomData,
        })
    }
}

impl<T> Selectable for Receiver<T> {
    fn __source(&self) -> Source<'_> {
        Source::inbox(self.inbox())
    }
}

/// A mailbox operation that did not complete: how its [`WireError`] reads to the user.
pub(crate) struct Attempt {
    /// What it tried: "send", "put", "receive", "get".
    pub(crate) verb: &'static str,
    /// The same as a gerund: "sending", ...
    pub(crate) doing: &'static str,
    pub(crate) type_name: &'static str,
    pub(crate) wait: Wait,
    pub(crate) timeout: Duration,
}

impl Attempt {
    /// The error for `e`: `closed()` when the other side is gone, `now()` when a try found
    /// nothing to do at once (full, or empty), else a timeout or an I/O error.
    pub(crate) fn error(
        &self,
        e: WireError,
        closed: impl FnOnce() -> Error,
        now: impl FnOnce() -> Error,
    ) -> Error {
        match e {
            WireError::Closed => closed(),
            WireError::WouldBlock if matches!(self.wait, Wait::Now) => now(),
            WireError::WouldBlock => Error::new(Repr::Timeout {
                what: format!("{} a {}", self.doing, self.type_name),
                after: self.timeout,
            }),
            WireError::Io(e) => Error::io(format!("cannot {} a {}", self.verb, self.type_name), e),
        }
    }
}

fn disconnected_send(type_name: &str) -> Error {
    Error::new(Repr::Disconnected {
        what: format!("cannot send a {type_name}: the receiver is gone"),
    })
}

fn disconnected_recv(type_name: &str) -> Error {
    Error::new(Repr::Disconnected {
        what: format!("no more {type_name} to receive: every sender is gone"),
    })
}
