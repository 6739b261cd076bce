//! Receiving sockets that drain into memory: the reason an unbounded [`channel`](crate::channel())
//! never blocks its senders on a slow reader.
//!
//! The kernel buffers only about 200 KiB per socket (a few hundred small messages). Every
//! [`Inbox`] of a process is watched by one background thread, the pump, that moves arriving
//! messages into the inbox's in-memory queue whenever no thread of the program is reading it.
//! A thread that receives reads the socket itself (one wake-up per message, no hand-off), and
//! the pump stays out of the way while it does: the inbox is registered with `EPOLLONESHOT`,
//! and the pump re-arms it only when no reader waits on it.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};

use crate::wire::{self, Frame, Wait, WireError};

/// The receiving side of one socket: the socket and what the pump already read from it.
pub(crate) struct Inbox {
    fd: OwnedFd,
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
    /// Registered with the pump and armed (one-shot) for the next arrival.
    armed: bool,
    registered: bool,
    /// The inbox is being moved to another process: nobody here reads it any more.
    detached: bool,
}

/// What a receive found.
pub(crate) enum Received {
    Frame(Frame),
    /// Every sender is gone and nothing is left.
    Closed,
    /// Nothing arrived within the wait.
    Nothing,
}

impl Inbox {
    /// Wraps a receiving socket, with messages already read from it elsewhere, and hands it to
    /// this process's pump.
    pub(crate) fn new(fd: OwnedFd, frames: VecDeque<Frame>) -> Arc<Inbox> {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let inbox = Arc::new(Inbox {
            fd,
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
            let mut st = inbox.lock();
            if inbox.arm(pump, &mut st, libc::EPOLL_CTL_ADD) {
                st.registered = true;
            }
        }
        inbox
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Receives one message, waiting as `wait` says.
    pub(crate) fn recv(&self, wait: Wait) -> io::Result<Received> {
        let mut st = self.lock();
        let result = loop {
            if let Some(frame) = st.frames.pop_front() {
                break Ok(Received::Frame(frame));
            }
            if st.closed {
                break Ok(Received::Closed);
            }
            if let Some(e) = &st.failed {
                break Err(io::Error::other(e.clone()));
            }
            // Read the socket ourselves: at once, or (claiming it from the pump) blocking.
            let got = if matches!(wait, Wait::Now) {
                wire::recv(self.fd(), Wait::Now)
            } else {
                self.claim(&mut st);
                drop(st);
                let got = wire::recv(self.fd(), wait);
                st = self.lock();
                st.readers -= 1;
                got
            };
            match got {
                Ok(frame) if frame.batch => {
                    if let Err(e) = queue_batch(&mut st.frames, frame) {
                        break Err(e);
                    }
                }
                Ok(frame) => break Ok(Received::Frame(frame)),
                Err(WireError::Closed) => st.closed = true,
                Err(WireError::Io(e)) => break Err(e),
                Err(WireError::WouldBlock) => break Ok(Received::Nothing),
            }
        };
        self.rearm_if_idle(&mut st);
        result
    }

    /// Whether a receive would return at once; if not, registers the caller as a reader (the
    /// pump leaves the socket alone) until [`Inbox::end_wait`].
    pub(crate) fn begin_wait(&self) -> bool {
        let mut st = self.lock();
        if !st.frames.is_empty() || st.closed || st.failed.is_some() {
            return true;
        }
        self.claim(&mut st);
        false
    }

    /// Registers a reader that is about to wait on the socket itself, and disarms the pump
    /// meanwhile: one system call, where a pump woken by the same message would cost a
    /// thread switch.
    fn claim(&self, st: &mut State) {
        st.readers += 1;
        if st.armed {
            if let Some(pump) = pump() {
                self.arm_with(pump, st, libc::EPOLL_CTL_MOD, 0);
            }
            st.armed = false;
        }
    }

    pub(crate) fn end_wait(&self) {
        let mut st = self.lock();
        st.readers -= 1;
        self.rearm_if_idle(&mut st);
    }

    fn rearm_if_idle(&self, st: &mut State) {
        if st.registered && !st.armed && st.readers == 0 && !st.closed && !st.detached {
            if let Some(pump) = pump() {
                self.arm(pump, st, libc::EPOLL_CTL_MOD);
            }
        }
    }

    /// Arms the one-shot registration; `false` if epoll refused it.
    fn arm(&self, pump: &Pump, st: &mut State, op: libc::c_int) -> bool {
        self.arm_with(pump, st, op, libc::EPOLLIN)
    }

    fn arm_with(&self, pump: &Pump, st: &mut State, op: libc::c_int, events: libc::c_int) -> bool {
        let mut event = libc::epoll_event {
            events: (events | libc::EPOLLONESHOT) as u32,
            u64: self.token,
        };
        // SAFETY: both descriptors are open; event is a valid epoll_event.
        let rc =
            unsafe { libc::epoll_ctl(pump.epoll.as_raw_fd(), op, self.fd.as_raw_fd(), &mut event) };
        st.armed = rc == 0 && events != 0;
        rc == 0
    }

    /// Called by the pump when the socket became readable.
    fn on_ready(&self) {
        let mut st = self.lock();
        st.armed = false;
        if st.detached || st.closed || st.readers > 0 {
            // A reader re-arms when it leaves.
            return;
        }
        loop {
            match wire::recv(self.fd(), Wait::Now) {
                Ok(frame) if frame.batch => {
                    if let Err(e) = queue_batch(&mut st.frames, frame) {
                        st.failed = Some(format!("cannot read a channel: {e}"));
                        return;
                    }
                }
                Ok(frame) => st.frames.push_back(frame),
                Err(WireError::WouldBlock) => break,
                Err(WireError::Closed) => {
                    st.closed = true;
                    break;
                }
                Err(WireError::Io(e)) => {
                    st.failed = Some(format!("cannot read a channel: {e}"));
                    return;
                }
            }
        }
        self.rearm_if_idle(&mut st);
    }

    /// Stops the pump reading this socket and hands over what it had read, for moving the
    /// inbox to another process.
    pub(crate) fn detach(&self) -> Vec<(Vec<u8>, Vec<OwnedFd>)> {
        let mut st = self.lock();
        self.unregister(&mut st);
        st.detached = true;
        st.frames
            .iter()
            .map(|f| {
                let fds = f.fds.iter().filter_map(|fd| fd.try_clone().ok()).collect();
                (f.bytes.clone(), fds)
            })
            .collect()
    }

    fn unregister(&self, st: &mut State) {
        if !st.registered {
            return;
        }
        st.registered = false;
        st.armed = false;
        if let Some(pump) = pump() {
            // SAFETY: both descriptors are open; DEL ignores the event argument.
            unsafe {
                libc::epoll_ctl(
                    pump.epoll.as_raw_fd(),
                    libc::EPOLL_CTL_DEL,
                    self.fd.as_raw_fd(),
                    std::ptr::null_mut(),
                );
            }
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
    frames.extend(wire::split_batch(&frame.bytes)?);
    Ok(())
}

struct Pump {
    epoll: OwnedFd,
    inboxes: Mutex<HashMap<u64, Weak<Inbox>>>,
}

/// This process's pump, started on first use; `None` if it could not start (then inboxes are
/// read only by their receivers, and a slow reader can block its senders).
fn pump() -> Option<&'static Pump> {
    static PUMP: OnceLock<Option<&'static Pump>> = OnceLock::new();
    *PUMP.get_or_init(|| {
        let pump = start().ok()?;
        Some(pump)
    })
}

fn start() -> io::Result<&'static Pump> {
    // SAFETY: epoll_create1 returns a new descriptor or -1.
    let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is new and owned by nobody else.
    let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
    let pump: &'static Pump = Box::leak(Box::new(Pump {
        epoll,
        inboxes: Mutex::new(HashMap::new()),
    }));
    std::thread::Builder::new()
        .name("multiproc-pump".into())
        .stack_size(128 * 1024)
        .spawn(move || run(pump))?;
    Ok(pump)
}

fn run(pump: &'static Pump) {
    const BATCH: usize = 64;
    let mut events = [libc::epoll_event { events: 0, u64: 0 }; BATCH];
    loop {
        // SAFETY: events is a writable array of BATCH entries.
        let n = unsafe {
            libc::epoll_wait(
                pump.epoll.as_raw_fd(),
                events.as_mut_ptr(),
                BATCH as libc::c_int,
                -1,
            )
        };
        if n < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        for event in &events[..n as usize] {
            let token = event.u64;
            let inbox = pump
                .inboxes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&token)
                .and_then(Weak::upgrade);
            if let Some(inbox) = inbox {
                inbox.on_ready();
            }
        }
    }
}
