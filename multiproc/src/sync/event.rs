//! [`Event`]: a flag to wait for.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use super::{HEADER, travels_as_a_page};
use crate::error::{Error, Result};
use crate::ipc::ring::RECHECK;
use crate::ipc::shm::Region;
use crate::sys::{self, Wait};

/// An event's flag (u32 word; the page's lock words are unused).
const FLAG: usize = 4;
/// Moves on at each `set` that raised the flag; waiters sleep on it, so that a `set` followed
/// at once by a `clear` still ends their wait (as Python's does).
const SETS: usize = 5;

/// A flag that processes share and can wait for: Python's `multiprocessing.Event`.
///
/// # Examples
///
/// ```no_run
/// use multiproc::sync::Event;
///
/// #[multiproc::process]
/// fn wait_for_go(go: Event) -> bool {
///     go.wait_timeout(std::time::Duration::from_secs(10))
/// }
///
/// #[multiproc::main]
/// fn main() -> multiproc::Result<()> {
///     let go = Event::new()?;
///     let child = multiproc::spawn(wait_for_go, (go.clone(),))?;
///     go.set();
///     assert!(child.join()?);
///     Ok(())
/// }
/// ```
#[derive(Clone)]
pub struct Event(Arc<Region>);

impl Event {
    /// A new event, not set.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let go = multiproc::sync::Event::new()?;
    /// assert!(!go.is_set());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Io`](crate::ErrorKind::Io) if the shared page cannot be made.
    pub fn new() -> Result<Event> {
        Region::new("multiproc-event", HEADER)
            .map(|r| Event(Arc::new(r)))
            .map_err(|e| Error::io("cannot create an event's shared memory", e))
    }

    /// Sets the flag and wakes every waiter.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let go = multiproc::sync::Event::new()?;
    /// let copy = go.clone(); // the same flag, as a copy in another process would be
    /// go.set();
    /// assert!(copy.is_set());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn set(&self) {
        if self.0.word(FLAG).swap(1, SeqCst) == 0 {
            let sets = self.0.word(SETS);
            sets.fetch_add(1, SeqCst);
            sys::futex_wake_all(sets);
        }
    }

    /// Clears the flag.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let event = multiproc::sync::Event::new()?;
    /// event.set();
    /// event.clear();
    /// assert!(!event.is_set());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn clear(&self) {
        self.0.word(FLAG).store(0, SeqCst);
    }

    /// Whether the flag is set.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let done = multiproc::sync::Event::new()?;
    /// assert!(!done.is_set());
    /// done.set();
    /// assert!(done.is_set());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn is_set(&self) -> bool {
        self.0.word(FLAG).load(SeqCst) != 0
    }

    /// Waits until the flag is set.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let event = multiproc::sync::Event::new()?;
    /// event.set();
    /// event.wait();
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn wait(&self) {
        while !self.wait_timeout(Duration::from_secs(3600)) {}
    }

    /// Waits at most `timeout` until the flag is set; whether it is (Python's `wait(timeout)`).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    ///
    /// let go = multiproc::sync::Event::new()?;
    /// assert!(!go.wait_timeout(Duration::from_millis(10))); // not set: times out
    /// go.set();
    /// assert!(go.wait_timeout(Duration::from_millis(10)));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let wait = Wait::timeout(timeout);
        let sets = self.0.word(SETS);
        let seen = sets.load(SeqCst);
        loop {
            if self.0.word(FLAG).load(SeqCst) != 0 || sets.load(SeqCst) != seen {
                return true;
            }
            if wait.is_over() {
                return false;
            }
            sys::futex_wait(sets, seen, wait.at_most(RECHECK));
        }
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("set", &self.is_set())
            .finish()
    }
}

travels_as_a_page!(Event, "Event", HEADER);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_wakes_its_waiters() {
        let event = Event::new().unwrap();
        assert!(!event.wait_timeout(Duration::from_millis(10)));
        let other = event.clone();
        let waiter = std::thread::spawn(move || other.wait_timeout(Duration::from_secs(10)));
        event.set();
        assert!(waiter.join().unwrap());
        assert!(event.is_set());
        event.clear();
        assert!(!event.is_set());
    }

    #[test]
    fn a_set_cleared_at_once_still_ends_a_wait() {
        let event = Event::new().unwrap();
        let other = event.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn(move || {
            tx.send(sys::thread_id()).unwrap();
            other.wait_timeout(Duration::from_secs(30))
        });
        let tid = rx.recv().unwrap();
        // Until the waiter sleeps (in the futex: nothing else in it sleeps).
        let sleeping = || {
            std::fs::read_to_string(format!("/proc/self/task/{tid}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(')')
                        .map(|(_, rest)| rest.trim_start().starts_with('S'))
                })
                .unwrap_or(false)
        };
        while !sleeping() {
            std::thread::yield_now();
        }
        event.set();
        event.clear();
        assert!(waiter.join().unwrap(), "the set was missed");
    }
}
