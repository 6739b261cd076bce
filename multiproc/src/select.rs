//! [`Select`]: wait for the first of several receivers, queues and child exits, the role of
//! Python's `multiprocessing.connection.wait`.

use std::fmt;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::Duration;

use crate::error::{Error, Repr, Result};
use crate::ipc::pump::Inbox;
use crate::ipc::reactor;
use crate::ipc::ring::{self, Ring};
use crate::sys::{self, Wait};

/// Waits until one of several mailboxes has something to receive or a child has ended, without
/// polling in a loop: one `poll(2)` over all of their sockets.
///
/// Add [`Receiver`](crate::Receiver)s, [`Queue`](crate::Queue)s,
/// [`JoinableQueue`](crate::JoinableQueue)s, [`PipeEnd`](crate::PipeEnd)s,
/// [`Server`](crate::Server)s and [`JoinHandle`](crate::JoinHandle)s; each `add` returns the
/// index that [`ready`](Select::ready) reports. Ready means that the next receive, get or join
/// on it returns at once: with a message, or with the error that ends it (every sender gone,
/// the queue closed, the child's result or exit). A queue shared with other consumers may be
/// emptied by one of them in between: use `try_get` and wait again on
/// [`ErrorKind::Empty`](crate::ErrorKind::Empty).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
///
/// let (tx_a, rx_a) = multiproc::channel::<u32>()?;
/// let (tx_b, rx_b) = multiproc::channel::<String>()?;
/// tx_b.send("b first".to_string())?;
///
/// let mut select = multiproc::Select::new();
/// let a = select.add(&rx_a);
/// let b = select.add(&rx_b);
/// let ready = select.ready_timeout(Duration::from_secs(5))?;
/// assert_eq!(ready, b);
/// assert_eq!(rx_b.try_recv()?, "b first");
/// # let _ = (a, tx_a);
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Default)]
pub struct Select<'a> {
    sources: Vec<Source<'a>>,
}

/// Something a [`Select`] can wait on; implemented by multiproc's receiving types.
///
/// # Examples
///
/// ```
/// fn wait_for(what: &impl multiproc::Selectable) -> multiproc::Result<()> {
///     let mut select = multiproc::Select::new();
///     select.add(what);
///     select.ready().map(|_| ())
/// }
/// let queue = multiproc::Queue::<u8>::new()?;
/// queue.put(1)?;
/// wait_for(&queue)?;
/// # Ok::<(), multiproc::Error>(())
/// ```
pub trait Selectable {
    #[doc(hidden)]
    fn __source(&self) -> Source<'_>;
}

/// What a [`Select`] watches for one [`Selectable`]: not a public API.
#[doc(hidden)]
pub struct Source<'a>(Kind<'a>);

enum Kind<'a> {
    /// A channel's receiver: messages the pump holds count, then its socket.
    Inbox(&'a Inbox),
    /// A socket that is ready when readable (a child's bootstrap socket).
    Socket(BorrowedFd<'a>),
    /// A queue: ready while it holds items or is closed; its doorbell turns readable.
    Ring(&'a Ring),
    /// Ready now (a child already joined).
    Now,
}

impl<'a> Source<'a> {
    pub(crate) fn inbox(inbox: &'a Inbox) -> Self {
        Source(Kind::Inbox(inbox))
    }

    pub(crate) fn socket(fd: BorrowedFd<'a>) -> Self {
        Source(Kind::Socket(fd))
    }

    pub(crate) fn ring(ring: &'a Ring) -> Self {
        Source(Kind::Ring(ring))
    }

    pub(crate) fn now() -> Self {
        Source(Kind::Now)
    }

    /// What to wait on: `None` when ready now, else the inbox (if a channel's) and the
    /// descriptor that turns readable.
    pub(crate) fn inbox_or_fd(&self) -> Option<(Option<&'a Inbox>, BorrowedFd<'a>)> {
        match self.0 {
            Kind::Inbox(inbox) => Some((Some(inbox), inbox.fd())),
            Kind::Socket(fd) => Some((None, fd)),
            Kind::Ring(ring) => Some((None, ring.bell())),
            Kind::Now => None,
        }
    }
}

impl<'a> Select<'a> {
    /// An empty selection.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut select = multiproc::Select::new();
    /// // Nothing to wait for yet: an error rather than a wait that never ends.
    /// assert_eq!(select.try_ready().unwrap_err().kind(), multiproc::ErrorKind::Other);
    /// ```
    pub fn new() -> Self {
        Select {
            sources: Vec::new(),
        }
    }

    /// Adds something to wait on; returns its index.
    ///
    /// # Examples
    ///
    /// ```
    /// let queue = multiproc::Queue::<u8>::new()?;
    /// let (_tx, rx) = multiproc::channel::<String>()?;
    /// let mut select = multiproc::Select::new();
    /// assert_eq!(select.add(&queue), 0);
    /// assert_eq!(select.add(&rx), 1); // any mix of mailboxes
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn add<S: Selectable + ?Sized>(&mut self, what: &'a S) -> usize {
        self.sources.push(what.__source());
        self.sources.len() - 1
    }

    /// Waits until one is ready and returns its index (the lowest, when several are).
    ///
    /// # Examples
    ///
    /// ```
    /// let queue = multiproc::Queue::<u8>::new()?;
    /// let producer = queue.clone();
    /// let mut select = multiproc::Select::new();
    /// let q = select.add(&queue);
    /// let thread = std::thread::spawn(move || producer.put(1));
    /// assert_eq!(select.ready()?, q); // waits for the put
    /// assert_eq!(queue.try_get()?, 1);
    /// thread.join().unwrap()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Other`](crate::ErrorKind::Other) when nothing was added (the wait could
    /// never end); [`ErrorKind::Io`](crate::ErrorKind::Io) if `poll(2)` fails.
    pub fn ready(&mut self) -> Result<usize> {
        self.wait(Wait::Forever)?
            .ok_or_else(|| Error::other("the select's wait ended with nothing ready"))
    }

    /// Waits at most `timeout` until one is ready.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let (_tx, rx) = multiproc::channel::<u8>()?;
    /// let mut select = multiproc::Select::new();
    /// select.add(&rx);
    /// assert!(select.ready_timeout(Duration::from_millis(10)).unwrap_err().is_timeout());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`ready`](Select::ready), plus [`ErrorKind::Timeout`](crate::ErrorKind::Timeout).
    pub fn ready_timeout(&mut self, timeout: Duration) -> Result<usize> {
        self.wait(Wait::timeout(timeout))?.ok_or_else(|| {
            Error::new(Repr::Timeout {
                what: format!("waiting on {} mailboxes", self.sources.len()),
                after: timeout,
            })
        })
    }

    /// Returns the index of one that is ready now, or an
    /// [`ErrorKind::Empty`](crate::ErrorKind::Empty) error.
    ///
    /// # Examples
    ///
    /// ```
    /// let (tx, rx) = multiproc::channel::<u8>()?;
    /// let mut select = multiproc::Select::new();
    /// let i = select.add(&rx);
    /// assert!(select.try_ready().is_err());
    /// tx.send(1)?;
    /// assert_eq!(select.try_ready()?, i);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`ready`](Select::ready), plus `Empty`.
    pub fn try_ready(&mut self) -> Result<usize> {
        self.wait(Wait::Now)?.ok_or_else(|| Error::new(Repr::Empty))
    }

    fn wait(&mut self, wait: Wait) -> Result<Option<usize>> {
        if self.sources.is_empty() {
            return Err(Error::other(
                "nothing to wait for: add a receiver, queue or handle to the Select first",
            ));
        }
        // Messages a pump already holds are ready without a system call; the inboxes that
        // have none are claimed, so that their pump leaves the sockets to this poll.
        let mut claimed: Vec<&Inbox> = Vec::new();
        let mut found = None;
        for (i, source) in self.sources.iter().enumerate() {
            match source.0 {
                Kind::Inbox(inbox) => {
                    if inbox.begin_wait() {
                        found = Some(i);
                        break;
                    }
                    claimed.push(inbox);
                }
                Kind::Now => {
                    found = Some(i);
                    break;
                }
                Kind::Ring(ring) => {
                    if ring.arm() {
                        found = Some(i);
                        break;
                    }
                }
                Kind::Socket(_) => {}
            }
        }
        let result = match found {
            Some(i) => Ok(Some(i)),
            None => self.poll(wait),
        };
        for inbox in claimed {
            inbox.end_wait();
        }
        result
    }

    /// Which sources are ready, after waiting as `wait` says for one to be: those whose
    /// pump holds messages if any does (no system call), else all that `poll(2)` reports.
    pub(crate) fn ready_set(&mut self, wait: Wait) -> Result<Vec<bool>> {
        let mut ready = vec![false; self.sources.len()];
        let mut claimed: Vec<&Inbox> = Vec::new();
        let mut any = false;
        for (i, source) in self.sources.iter().enumerate() {
            match source.0 {
                Kind::Inbox(inbox) => {
                    if inbox.begin_wait() {
                        ready[i] = true;
                        any = true;
                    } else {
                        claimed.push(inbox);
                    }
                }
                Kind::Now => {
                    ready[i] = true;
                    any = true;
                }
                Kind::Ring(ring) => {
                    if ring.arm() {
                        ready[i] = true;
                        any = true;
                    }
                }
                Kind::Socket(_) => {}
            }
        }
        let polled = if any {
            Ok(())
        } else {
            self.poll_all(wait).map(|revents| {
                for (r, p) in ready.iter_mut().zip(revents) {
                    *r = p;
                }
            })
        };
        for inbox in claimed {
            inbox.end_wait();
        }
        polled.map(|()| ready)
    }

    fn poll_all(&self, wait: Wait) -> Result<Vec<bool>> {
        Ok(self
            .poll_sliced(wait)?
            .unwrap_or_else(|| vec![false; self.sources.len()]))
    }

    /// `poll(2)` on every source, as `wait` says; `None` when the wait ended first. A queue's
    /// doorbell can miss a ring from a process killed at the wrong moment, so with queues
    /// among the sources the wait looks at them again every [`ring::RECHECK`].
    fn poll_sliced(&self, wait: Wait) -> Result<Option<Vec<bool>>> {
        let rings = self.sources.iter().any(|s| matches!(s.0, Kind::Ring(_)));
        loop {
            let mut fds = self.pollfds();
            let slice = if rings {
                wait.at_most(ring::RECHECK)
            } else {
                wait
            };
            if sys::poll(&mut fds, slice)
                .map_err(|e| Error::io("cannot wait on the mailboxes", e))?
            {
                return Ok(Some(fds.iter().map(|p| p.revents != 0).collect()));
            }
            if rings {
                let ready: Vec<bool> = self
                    .sources
                    .iter()
                    .map(|s| matches!(s.0, Kind::Ring(r) if r.ready_now()))
                    .collect();
                if ready.contains(&true) {
                    return Ok(Some(ready));
                }
            }
            if wait.is_over() {
                return Ok(None);
            }
        }
    }

    fn pollfds(&self) -> Vec<sys::PollFd> {
        self.sources
            .iter()
            .map(|source| {
                let fd = match source.0 {
                    Kind::Inbox(inbox) => inbox.fd().as_raw_fd(),
                    Kind::Socket(fd) => fd.as_raw_fd(),
                    Kind::Ring(ring) => ring.bell().as_raw_fd(),
                    Kind::Now => -1,
                };
                sys::pollfd(fd, sys::POLLIN)
            })
            .collect()
    }

    fn poll(&self, wait: Wait) -> Result<Option<usize>> {
        Ok(self
            .poll_sliced(wait)?
            .and_then(|ready| ready.iter().position(|&r| r)))
    }
}

impl fmt::Debug for Select<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Select({} sources)", self.sources.len())
    }
}

/// Resolves once `source` has something to take (or is closed), like one [`Select`] wait,
/// without blocking a thread: for the `*_async` methods.
pub(crate) async fn ready(source: Source<'_>) -> Result<()> {
    match source.inbox_or_fd() {
        None => Ok(()),
        Some((None, fd)) => {
            if let Kind::Ring(ring) = source.0
                && ring.arm()
            {
                return Ok(());
            }
            reactor::readable(fd).await
        }
        Some((Some(inbox), fd)) => {
            // Claim the socket so that the pump does not drain it behind our back.
            if inbox.begin_wait() {
                return Ok(());
            }
            struct Claim<'a>(&'a Inbox);
            impl Drop for Claim<'_> {
                fn drop(&mut self) {
                    self.0.end_wait();
                }
            }
            let _claim = Claim(inbox);
            reactor::readable(fd).await
        }
    }
}
