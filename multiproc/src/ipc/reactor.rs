//! Async waits, for any executor: one small thread per process (started on the first wait
//! that has to wait) runs an epoll set, and a future waiting for a descriptor to turn
//! readable registers it there with its waker. No runtime thread ever blocks.
//!
//! Each registration watches its own duplicate of the descriptor (epoll refuses the same
//! descriptor twice, and two futures may wait on one socket), one-shot: the reactor wakes the
//! future and forgets the registration.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};

use crate::error::{Error, Result};
use crate::sys;

struct Reactor {
    epoll: sys::Epoll,
    waiting: Mutex<HashMap<u64, Registration>>,
    next: AtomicU64,
}

struct Registration {
    fd: OwnedFd,
    shared: Arc<Shared>,
}

/// What a waiting future and the reactor share.
struct Shared {
    fired: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Shared {
    fn fire(&self) {
        self.fired.store(true, Ordering::Release);
        let waker = self.waker.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

fn reactor() -> io::Result<&'static Reactor> {
    static REACTOR: OnceLock<std::result::Result<Reactor, String>> = OnceLock::new();
    let reactor = REACTOR.get_or_init(|| start().map_err(|e| e.to_string()));
    match reactor {
        Ok(r) => Ok(r),
        Err(e) => Err(io::Error::other(format!(
            "cannot start multiproc's async reactor: {e}"
        ))),
    }
}

fn start() -> io::Result<Reactor> {
    let epoll = sys::Epoll::new()?;
    std::thread::Builder::new()
        .name("multiproc-async".into())
        .stack_size(64 * 1024)
        .spawn(run)?;
    Ok(Reactor {
        epoll,
        waiting: Mutex::new(HashMap::new()),
        next: AtomicU64::new(1),
    })
}

/// The reactor's thread: waits (once the reactor is in its static) and fires whatever is
/// ready.
fn run() {
    let Ok(reactor) = reactor() else { return };
    let fire = |token| {
        if let Some(registration) = reactor.take(token) {
            registration.shared.fire();
        }
    };
    while reactor.epoll.wait(fire).is_ok() {}
}

impl Reactor {
    fn register(&self, fd: BorrowedFd<'_>, shared: Arc<Shared>) -> io::Result<u64> {
        let fd = fd.try_clone_to_owned()?;
        let token = self.next.fetch_add(1, Ordering::Relaxed);
        // In the map before epoll can report it: the reactor's `take` waits for the lock.
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        let added = self.epoll.add(fd.as_fd(), token, true);
        match added {
            Ok(()) => {
                waiting.insert(token, Registration { fd, shared });
                Ok(token)
            }
            Err(e) => Err(e),
        }
    }

    /// Ends registration `token`, if it is still on: out of the map and the epoll set.
    fn take(&self, token: u64) -> Option<Registration> {
        let taken = self
            .waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&token);
        if let Some(registration) = &taken {
            self.forget(&registration.fd);
        }
        taken
    }

    /// Takes a duplicate out of the epoll set before it is closed (epoll watches the open
    /// file, which the original keeps alive).
    fn forget(&self, fd: &OwnedFd) {
        self.epoll.delete(fd.as_fd());
    }
}

/// Resolves once `fd` is readable (or hung up).
struct Readable<'a> {
    fd: BorrowedFd<'a>,
    state: Option<(u64, Arc<Shared>)>,
}

impl Future for Readable<'_> {
    type Output = Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        if let Some((_, shared)) = &self.state {
            if shared.fired.load(Ordering::Acquire) {
                self.state = None;
                return Poll::Ready(Ok(()));
            }
            *shared.waker.lock().unwrap_or_else(|e| e.into_inner()) = Some(cx.waker().clone());
            // It may have fired before the new waker was in place.
            if shared.fired.load(Ordering::Acquire) {
                self.state = None;
                return Poll::Ready(Ok(()));
            }
            return Poll::Pending;
        }
        let reactor = reactor().map_err(|e| Error::io("cannot wait asynchronously", e))?;
        let shared = Arc::new(Shared {
            fired: AtomicBool::new(false),
            waker: Mutex::new(Some(cx.waker().clone())),
        });
        let token = reactor
            .register(self.fd, Arc::clone(&shared))
            .map_err(|e| Error::io("cannot wait asynchronously", e))?;
        self.state = Some((token, shared));
        Poll::Pending
    }
}

impl Drop for Readable<'_> {
    fn drop(&mut self) {
        if let Some((token, _)) = self.state.take()
            && let Ok(reactor) = reactor()
        {
            let _ = reactor.take(token);
        }
    }
}

/// Resolves once `fd` is readable or hung up.
pub(crate) async fn readable(fd: BorrowedFd<'_>) -> Result<()> {
    Readable { fd, state: None }.await
}
