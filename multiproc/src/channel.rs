//! Typed mailboxes between processes: [`channel()`], [`Sender`], [`Receiver`].
//!
//! Both ends are `Serialize + Deserialize`: they travel as fields of a `#[process]` struct,
//! as arguments of a `#[process]` fn, and inside other messages. Sending an end moves it: the
//! sending process's copy is closed once the message is sent.

use std::any::type_name;
use std::fmt;
use std::time::Duration;

use ipc_channel::ipc::{self, IpcReceiver, IpcSender};
use ipc_channel::{IpcError, SerDeError, TryRecvError};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Repr, Result};

/// Creates a typed channel between processes, std's `mpsc::channel` across process bounds.
///
/// Messages sent by one sender arrive in the order they were sent. The [`Receiver`] reports
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
    let (tx, rx) = ipc::channel::<T>().map_err(|e| Error::io("cannot create a channel", e))?;
    Ok((Sender { inner: tx }, Receiver { inner: rx }))
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
    inner: IpcSender<T>,
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
    inner: IpcReceiver<T>,
}

impl<T: Serialize> Sender<T> {
    /// Sends a message.
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
        self.inner
            .send(value)
            .map_err(|e| send_error(e, type_name::<T>()))
    }
}

impl<T: Serialize> Clone for Sender<T> {
    fn clone(&self) -> Self {
        Sender {
            inner: self.inner.clone(),
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

impl<T: Serialize + DeserializeOwned> Receiver<T> {
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
        retry_interrupted(|| self.inner.recv()).map_err(|e| recv_error(e, type_name::<T>()))
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
        self.inner.try_recv().map_err(|e| match e {
            TryRecvError::Empty => Error::new(Repr::Empty),
            TryRecvError::IpcError(e) => recv_error(e, type_name::<T>()),
        })
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
        recv_deadline(&self.inner, timeout).map_err(|e| match e {
            TryRecvError::Empty => Error::new(Repr::Timeout {
                what: format!("receiving a {}", type_name::<T>()),
                after: timeout,
            }),
            TryRecvError::IpcError(e) => recv_error(e, type_name::<T>()),
        })
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

impl<T: Serialize + DeserializeOwned> Iterator for Iter<'_, T> {
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

impl<T: Serialize + DeserializeOwned> Iterator for IntoIter<T> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        self.rx.next_for_iter()
    }
}

impl<T: Serialize + DeserializeOwned> IntoIterator for Receiver<T> {
    type Item = T;
    type IntoIter = IntoIter<T>;
    fn into_iter(self) -> IntoIter<T> {
        IntoIter { rx: self }
    }
}

impl<'a, T: Serialize + DeserializeOwned> IntoIterator for &'a Receiver<T> {
    type Item = T;
    type IntoIter = Iter<'a, T>;
    fn into_iter(self) -> Iter<'a, T> {
        self.iter()
    }
}

impl<T> Serialize for Sender<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.inner.serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for Sender<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(Sender {
            inner: IpcSender::deserialize(d)?,
        })
    }
}

impl<T> Serialize for Receiver<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.inner.serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for Receiver<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(Receiver {
            inner: IpcReceiver::deserialize(d)?,
        })
    }
}

/// Runs a blocking receive again when a signal interrupted it (ipc-channel reports `EINTR` as
/// an I/O error instead of retrying).
pub(crate) fn retry_interrupted<T>(
    mut recv: impl FnMut() -> std::result::Result<T, IpcError>,
) -> std::result::Result<T, IpcError> {
    loop {
        match recv() {
            Err(e) if is_interrupted(&e) => continue,
            other => return other,
        }
    }
}

fn is_interrupted(e: &IpcError) -> bool {
    matches!(e, IpcError::Io(io) if io.kind() == std::io::ErrorKind::Interrupted)
}

/// A receive with a timeout, retried after `EINTR` for the time that is left.
pub(crate) fn recv_deadline<T>(
    rx: &IpcReceiver<T>,
    timeout: Duration,
) -> std::result::Result<T, TryRecvError>
where
    T: Serialize + DeserializeOwned,
{
    let deadline = std::time::Instant::now().checked_add(timeout);
    let mut left = timeout;
    loop {
        match rx.try_recv_timeout(left) {
            Err(TryRecvError::IpcError(e)) if is_interrupted(&e) => {
                left = match deadline {
                    Some(d) => d.saturating_duration_since(std::time::Instant::now()),
                    None => timeout,
                };
            }
            other => return other,
        }
    }
}

/// The text of a (de)serialization error: ipc-channel's own `Display` only says
/// "Serialization/Deserialization error", the codec's message is its source.
pub(crate) fn serde_message(e: &SerDeError) -> String {
    match std::error::Error::source(e) {
        Some(inner) => inner.to_string(),
        None => e.to_string(),
    }
}

fn is_peer_gone(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::BrokenPipe
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::NotConnected
    )
}

pub(crate) fn send_error(e: IpcError, type_name: &'static str) -> Error {
    match e {
        IpcError::SerializationError(e) => Error::new(Repr::Serialize {
            type_name,
            message: serde_message(&e),
        }),
        IpcError::Disconnected => disconnected_send(type_name),
        IpcError::Io(e) if is_peer_gone(&e) => disconnected_send(type_name),
        IpcError::Io(e) => Error::io(format!("cannot send a {type_name}"), e),
    }
}

fn disconnected_send(type_name: &str) -> Error {
    Error::new(Repr::Disconnected {
        what: format!("cannot send a {type_name}: the receiver is gone"),
    })
}

pub(crate) fn recv_error(e: IpcError, type_name: &'static str) -> Error {
    match e {
        IpcError::SerializationError(e) => Error::new(Repr::Deserialize {
            type_name,
            message: serde_message(&e),
        }),
        IpcError::Disconnected => disconnected_recv(type_name),
        IpcError::Io(e) if is_peer_gone(&e) => disconnected_recv(type_name),
        IpcError::Io(e) => Error::io(format!("cannot receive a {type_name}"), e),
    }
}

fn disconnected_recv(type_name: &str) -> Error {
    Error::new(Repr::Disconnected {
        what: format!("no more {type_name} to receive: every sender is gone"),
    })
}
