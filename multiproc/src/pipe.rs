//! [`pipe`]: a duplex pair, each end sending one type and receiving the other.

use std::fmt;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::channel::{Receiver, Sender, channel};
use crate::error::Result;
use crate::select::{Selectable, Source};

/// One end of a [`pipe`]: sends `S` to the other end and receives `R` from it.
///
/// Like both halves of a channel in one value; `Serialize + Deserialize`, so an end can be
/// given to a child. [`split`](PipeEnd::split) takes it apart.
///
/// # Examples
///
/// ```no_run
/// use multiproc::PipeEnd;
///
/// #[multiproc::process]
/// fn doubler(end: PipeEnd<u32, u32>) {
///     while let Ok(n) = end.recv() {
///         let _ = end.send(n * 2);
///     }
/// }
///
/// #[multiproc::main]
/// fn main() -> multiproc::Result<()> {
///     let (mine, theirs) = multiproc::pipe::<u32, u32>()?;
///     let child = multiproc::spawn(doubler, (theirs,))?;
///     mine.send(21)?;
///     assert_eq!(mine.recv()?, 42);
///     drop(mine); // the child's loop ends
///     child.join()
/// }
/// ```
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct PipeEnd<S, R> {
    tx: Sender<S>,
    rx: Receiver<R>,
}

/// Creates a duplex pipe: Python's `Pipe(duplex=True)`, typed in both directions.
///
/// The first end sends `A` and receives `B`; the second sends `B` and receives `A`.
///
/// # Examples
///
/// ```
/// let (left, right) = multiproc::pipe::<String, usize>()?;
/// left.send("hello".to_string())?;
/// let word = right.recv()?;
/// right.send(word.len())?;
/// assert_eq!(left.recv()?, 5);
/// # Ok::<(), multiproc::Error>(())
/// ```
///
/// # Errors
///
/// As [`channel`].
pub fn pipe<A, B>() -> Result<(PipeEnd<A, B>, PipeEnd<B, A>)>
where
    A: Serialize + DeserializeOwned,
    B: Serialize + DeserializeOwned,
{
    let (a_tx, a_rx) = channel::<A>()?;
    let (b_tx, b_rx) = channel::<B>()?;
    Ok((
        PipeEnd { tx: a_tx, rx: b_rx },
        PipeEnd { tx: b_tx, rx: a_rx },
    ))
}

impl<S, R> PipeEnd<S, R>
where
    S: Serialize + DeserializeOwned,
    R: Serialize + DeserializeOwned,
{
    /// Sends a message to the other end; see [`Sender::send`].
    ///
    /// # Examples
    ///
    /// ```
    /// let (left, right) = multiproc::pipe::<u8, u8>()?;
    /// left.send(1)?;
    /// left.send(2)?;
    /// assert_eq!(right.recv()?, 1); // in the order sent
    /// assert_eq!(right.recv()?, 2);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Sender::send`].
    pub fn send(&self, value: S) -> Result<()> {
        self.tx.send(value)
    }

    /// Waits for a message from the other end; see [`Receiver::recv`].
    ///
    /// # Examples
    ///
    /// ```
    /// let (left, right) = multiproc::pipe::<u8, u8>()?;
    /// right.send(1)?;
    /// drop(right);
    /// assert_eq!(left.recv()?, 1); // sent before the other end was dropped
    /// assert!(left.recv().unwrap_err().is_disconnected());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Receiver::recv`].
    pub fn recv(&self) -> Result<R> {
        self.rx.recv()
    }

    /// A waiting message, if any; see [`Receiver::try_recv`].
    ///
    /// # Examples
    ///
    /// ```
    /// let (left, _right) = multiproc::pipe::<u8, u8>()?;
    /// assert!(left.try_recv().is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Receiver::try_recv`].
    pub fn try_recv(&self) -> Result<R> {
        self.rx.try_recv()
    }

    /// Waits at most `timeout`; see [`Receiver::recv_timeout`].
    ///
    /// # Examples
    ///
    /// ```
    /// let (left, _right) = multiproc::pipe::<u8, u8>()?;
    /// let err = left.recv_timeout(std::time::Duration::from_millis(1)).unwrap_err();
    /// assert!(err.is_timeout());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Receiver::recv_timeout`].
    pub fn recv_timeout(&self, timeout: Duration) -> Result<R> {
        self.rx.recv_timeout(timeout)
    }

    /// The two halves, to move them to different threads.
    ///
    /// # Examples
    ///
    /// ```
    /// let (left, right) = multiproc::pipe::<u8, u8>()?;
    /// let (tx, rx) = left.split();
    /// tx.send(1)?;
    /// right.send(right.recv()? + 1)?;
    /// assert_eq!(rx.recv()?, 2);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn split(self) -> (Sender<S>, Receiver<R>) {
        (self.tx, self.rx)
    }
}

impl<S, R> Selectable for PipeEnd<S, R> {
    fn __source(&self) -> Source<'_> {
        self.rx.__source()
    }
}

impl<S, R> fmt::Debug for PipeEnd<S, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PipeEnd<send {}, receive {}>",
            std::any::type_name::<S>(),
            std::any::type_name::<R>()
        )
    }
}
