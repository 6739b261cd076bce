//! Receiving sockets that drain into memory on demand: the reason an unbounded
//! [`channel`](crate::channel()) never blocks its senders on a slow reader.
//!
//! The kernel buffers only about 200 KiB per socket (a few hundred small messages). A sender
//! that finds the buffer full rings the channel's doorbell (an eventfd that travels with both
//! ends) and waits for room. The receiving process's pump, one background thread watching the
//! doorbells of every [`Inbox`] it holds, then moves the waiting messages into the inbox's
//! memory, unless a thread of the program is reading the socket right then: the last such
//! reader to leave moves them instead, without waking the pump again. In the common
//! case, where the reader keeps up, the pump never runs: a thread that receives reads the
//! socket itself, one system call per message.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};

use super::frame::{self as wire, Frame, WireError};
use crate::sys::{self, Wait};

/// The receiving side of one socket: the socket, its doorbell, and what the pump already
/// read from it.
pub(crate) struct Inbox {
    fd: OwnedFd,
    doorbell: OwnedFd,
    token: u64,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    frames: VecDeque<Frame>,
    /// End of file seen: every sender is gone.
    closed: bool,
    /// The pump could not read the socket.
    failed: Option<String>,
    /// Threads reading or polling the socket themselves right now.
    readers: usize,
    /// The doorbell rang while a reader was busy (or the inbox was being moved): the last
    /// reader to leave drains the socket (a failed move rings again).
    missed: bool,
    registered: bool,
    /// Serialized to move to another process: the pump keeps off until it is dropped (the
    /// move succeeded) or [`Inbox::stay`]s (it did not).
    moving: bool,
}

/// What a receive found.
pub(crate) enum Received {
    Frame(Frame),
    /// Every sender is gone and nothing is left.
    Closed,
    /// Nothing arrived within the wait.
    Nothing,
}

/// A new doorbell for a channel: a non-blocking eventfd.
pub(crate) fn doorbell() -> io::Result<OwnedFd> {
    sys::eventfd(false)
}

/// Rings a doorbell: asks the receiving process to drain the socket.
pub(crate) fn ring(doorbell: BorrowedFd<'_>) {
    // A full counter fails with EAGAIN, which still leaves it readable.
    let _ = sys::eventfd_add(doorbell, 1);
}

impl Inbox {
    /// Wraps a receiving socket and its doorbell, with messages already read from the socket
    /// elsewhere, and hands the doorbell to this process's pump.
    pub(crate) fn new(fd: OwnedFd, doorbell: OwnedFd, frames: VecDeque<Frame>) -> Arc<Inbox> {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let inbox = Arc::new(Inbox {
            fd,
            doorbell,
            token: NEXT.fetch_add(1, Ordering::Relaxed),
            state: Mutex::new(State {
                frames,
                ..State::default()
            }),
        });
        if let Some(pump) = pump() {
            pump.inboxes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(inbox.token, Arc::downgrade(&inbox));
            // Registered before epoll knows it: a doorbell that already rang (the receiver
            // moved while its senders waited) wakes the pump at once, and must find it so.
            let mut st = inbox.lock();
            st.registered = true;
            st.registered = pump
                .epoll
                .add(inbox.doorbell.as_fd(), inbox.token, false)
                .is_ok();
        }
        inbox
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    pub(crate) fn doorbell(&self) -> BorrowedFd<'_> {
        self.doorbell.as_fd()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Receives one message, waiting as `wait` says.
    pub(crate) fn recv(&self, wait: Wait) -> io::Result<Received> {
        let mut st = self.lock();
        loop {
            if let Some(frame) = st.frames.pop_front() {
                return Ok(Received::Frame(frame));
            }
            if st.closed {
                return Ok(Received::Closed);
            }
            if let Some(e) = &st.failed {
                return Err(io::Error::other(e.clone()));
            }
            // Read the socket ourselves: at once, or blocking while the pump keeps off it.
            let got = if matches!(wait, Wait::Now) {
                wire::recv(self.fd(), Wait::Now)
            } else {
                st.readers += 1;
                drop(st);
                let got = wire::recv(self.fd(), wait);
                st = self.lock();
                st.readers -= 1;
                got
            };
            // What this read took goes before whatever a drain finds after it.
            let got = match got {
                Ok(frame) if frame.batch => queue_batch(&mut st.frames, frame).map(|()| None),
                Ok(frame) => Ok(Some(frame)),
                Err(WireError::Closed) => {
                    st.closed = true;
                    Ok(None)
                }
                Err(WireError::Io(e)) => Err(e),
                Err(WireError::WouldBlock) => {
                    self.left(&mut st);
                    return Ok(Received::Nothing);
                }
            };
            self.left(&mut st);
            if let Some(frame) = got? {
                return Ok(Received::Frame(frame));
            }
        }
    }

    /// Whether a receive would return at once; if not, registers the caller as a reader (the
    /// pump keeps off the socket) until [`Inbox::end_wait`].
    pub(crate) fn begin_wait(&self) -> bool {
        let mut st = self.lock();
        if !st.frames.is_empty() || st.closed || st.failed.is_some() {
            return true;
        }
        st.readers += 1;
        false
    }

    pub(crate) fn end_wait(&self) {
        let mut st = self.lock();
        st.readers -= 1;
        self.left(&mut st);
    }

    /// After a reader left: if the doorbell rang while readers were busy and none is left,
    /// drains the socket into memory here, as the pump would have. (Ringing the pump again
    /// instead made a reader that keeps reading ring it after every message, each ring a
    /// wake-up of the pump that found the reader busy again.)
    fn left(&self, st: &mut State) {
        // An inbox on its way out keeps what is in its socket there (`stay` rings for it).
        if st.readers == 0 && st.missed && !st.moving {
            st.missed = false;
            self.drain(st);
        }
    }

    /// Called by the pump when the doorbell rang: a sender found the socket full.
    fn on_ring(&self) {
        // Resets the doorbell; an empty one (another ring already taken) is fine.
        let _ = sys::eventfd_take(self.doorbell());
        let mut st = self.lock();
        if !st.registered || st.closed || st.failed.is_some() {
            return;
        }
        if st.readers > 0 || st.moving {
            // A reader is taking messages off the socket, or the inbox is on its way out;
            // whoever frees it drains it (or rings again).
            st.missed = true;
            return;
        }
        self.drain(&mut st);
    }

    /// Moves every message waiting in the socket into memory.
    fn drain(&self, st: &mut State) {
        loop {
            match wire::recv(self.fd(), Wait::Now) {
                Ok(frame) if frame.batch => {
                    if let Err(e) = queue_batch(&mut st.frames, frame) {
                        st.failed = Some(format!("cannot read a channel: {e}"));
                        return;
                    }
                }
                Ok(frame) => st.frames.push_back(frame),
                Err(WireError::WouldBlock) => return,
                Err(WireError::Closed) => {
                    st.closed = true;
                    return;
                }
                Err(WireError::Io(e)) => {
                    st.failed = Some(format!("cannot read a channel: {e}"));
                    return;
                }
            }
        }
    }

    /// The message that was to move this inbox was not sent: the pump may drain it again.
    pub(crate) fn stay(&self) {
        let mut st = self.lock();
        st.moving = false;
        if st.readers == 0 && std::mem::take(&mut st.missed) {
            ring(self.doorbell());
        }
    }

    /// Stops the pump reading this socket and copies what it had read, for moving the inbox
    /// to another process.
    pub(crate) fn detach(&self) -> io::Result<Vec<(Vec<u8>, Vec<OwnedFd>)>> {
        let mut st = self.lock();
        st.moving = true;
        let mut copies = Vec::with_capacity(st.frames.len());
        for f in &st.frames {
            let fds = f
                .fds
                .iter()
                .map(|fd| fd.try_clone())
                .collect::<io::Result<Vec<_>>>()?;
            copies.push((f.bytes.to_vec(), fds));
        }
        Ok(copies)
    }

    fn unregister(&self, st: &mut State) {
        if !st.registered {
            return;
        }
        st.registered = false;
        if let Some(pump) = pump() {
            pump.epoll.delete(self.doorbell.as_fd());
            pump.inboxes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&self.token);
        }
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        // The registration must go before the descriptor: epoll watches the open file, which
        // a copy in flight to another process keeps alive.
        let mut st = self.lock();
        self.unregister(&mut st);
    }
}

/// Queues the messages of a batch frame, in order, after those already read.
fn queue_batch(frames: &mut VecDeque<Frame>, frame: Frame) -> io::Result<()> {
    frames.extend(wire::split_batch(frame.bytes)?);
    Ok(())
}

struct Pump {
    epoll: sys::Epoll,
    inboxes: Mutex<HashMap<u64, Weak<Inbox>>>,
}

/// This process's pump, started on first use; `None` if it could not start (then inboxes are
/// read only by their receivers, and a slow reader can block its senders).
fn pump() -> Option<&'static Pump> {
    static PUMP: OnceLock<Option<&'static Pump>> = OnceLock::new();
    *PUMP.get_or_init(|| start().ok())
}

fn start() -> io::Result<&'static Pump> {
    let pump: &'static Pump = Box::leak(Box::new(Pump {
        epoll: sys::Epoll::new()?,
        inboxes: Mutex::new(HashMap::new()),
    }));
    std::thread::Builder::new()
        .name("multiproc-pump".into())
        .stack_size(128 * 1024)
        .spawn(move || run(pump))?;
    Ok(pump)
}

fn run(pump: &'static Pump) {
    let ring = |token| {
        let inbox = pump
            .inboxes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&token)
            .and_then(Weak::upgrade);
        if let Some(inbox) = inbox {
            inbox.on_ring();
        }
    };
    while pump.epoll.wait(ring).is_ok() {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipc::codec;

    /// An inbox that the pump does not watch: the test rings and drains it by hand.
    fn unwatched() -> (OwnedFd, Arc<Inbox>) {
        let (tx, rx) = sys::socketpair().unwrap();
        let inbox = Arc::new(Inbox {
            fd: rx,
            doorbell: doorbell().unwrap(),
            token: u64::MAX,
            state: Mutex::new(State {
                registered: true,
                ..State::default()
            }),
        });
        (tx, inbox)
    }

    fn send(tx: &OwnedFd, value: u32) {
        codec::with_encoded(&value, |bytes, fds| {
            wire::send(tx.as_fd(), None, bytes, fds, Wait::Now)
        })
        .unwrap()
        .unwrap();
    }

    fn rung(inbox: &Inbox) -> bool {
        sys::poll_one(inbox.doorbell(), sys::POLLIN, Wait::Now).unwrap()
    }

    fn received(inbox: &Inbox) -> Vec<u32> {
        let mut got = Vec::new();
        while let Ok(Received::Frame(frame)) = inbox.recv(Wait::Now) {
            got.push(codec::decode(frame).unwrap());
        }
        got
    }

    #[test]
    fn a_ring_drains_the_socket_into_memory() {
        let (tx, inbox) = unwatched();
        send(&tx, 1);
        send(&tx, 2);
        ring(inbox.doorbell());
        inbox.on_ring();
        assert!(!rung(&inbox), "the ring was taken");
        assert_eq!(inbox.lock().frames.len(), 2);
        drop(tx);
        assert_eq!(received(&inbox), [1, 2]);
        assert!(matches!(inbox.recv(Wait::Now), Ok(Received::Closed)));
    }

    #[test]
    fn a_moving_inbox_is_left_alone_until_it_stays() {
        let (tx, inbox) = unwatched();
        send(&tx, 1);
        inbox.on_ring();
        // On its way out: what was read is copied, and the pump keeps off the socket.
        let copies = inbox.detach().unwrap();
        assert_eq!(copies.len(), 1);
        send(&tx, 2);
        ring(inbox.doorbell());
        inbox.on_ring();
        assert_eq!(inbox.lock().frames.len(), 1, "not drained while moving");
        assert!(inbox.lock().missed);
        // The move failed: the missed ring comes again, and the socket is drained.
        inbox.stay();
        assert!(rung(&inbox));
        assert!(!inbox.lock().moving && !inbox.lock().missed);
        inbox.on_ring();
        assert_eq!(received(&inbox), [1, 2]);
    }

    #[test]
    fn a_ring_during_a_read_is_answered_by_the_reader_draining() {
        let (tx, inbox) = unwatched();
        assert!(!inbox.begin_wait(), "nothing to take: a reader waits");
        send(&tx, 7);
        send(&tx, 8);
        ring(inbox.doorbell());
        inbox.on_ring();
        assert!(inbox.lock().frames.is_empty(), "the reader owns the socket");
        assert!(inbox.lock().missed);
        inbox.end_wait();
        // The last reader out drained the socket itself: no second ring for the pump.
        assert!(!rung(&inbox), "no ring passed on");
        assert!(!inbox.lock().missed);
        assert_eq!(inbox.lock().frames.len(), 2, "drained into memory");
        assert_eq!(received(&inbox), [7, 8]);
        // A reader that blocked for its message, with a ring missed meanwhile, takes the
        // first and leaves the rest drained, in order.
        send(&tx, 9);
        send(&tx, 10);
        inbox.lock().missed = true;
        match inbox.recv(Wait::Forever).unwrap() {
            Received::Frame(frame) => assert_eq!(codec::decode::<u32>(frame).unwrap(), 9),
            _ => panic!("a frame"),
        }
        assert_eq!(inbox.lock().frames.len(), 1, "the rest drained");
        assert!(!rung(&inbox));
        assert_eq!(received(&inbox), [10]);
    }
}
