//! Synchronisation across processes: [`Lock`], [`Semaphore`] and [`Event`], Python's
//! `multiprocessing.Lock`, `Semaphore` / `BoundedSemaphore` and `Event`, in a page of shared
//! memory with futexes. They travel as fields and arguments
//! like channels (a descriptor of the page goes with the message), and every copy in every
//! process is the same lock or event.
//!
//! **Robust where Python is not**: a process that dies holding a [`Lock`] (or a
//! [`Semaphore`]'s permit) does not keep it.
//! The next `lock` takes it over (within 0.1 s of the death) and says so: it returns
//! [`OwnerDied`], which holds the guard, so the caller decides whether what the lock protects
//! is usable (as a robust pthread mutex's `EOWNERDEAD` does; std's `PoisonError` is the same
//! shape).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};
use crate::ipc::codec;
use crate::ipc::ring::RECHECK;
use crate::ipc::shm::Region;
use crate::sys::{self, Wait};

/// Its holder's identity (pid and start time: `sys::process_identity`), 0 when free.
const OWNER: usize = 0;
/// Moves on at each release; waiters sleep on it (u32 words from here).
const SEQ: usize = 2;
const WAITERS: usize = 3;
/// An event's flag.
const FLAG: usize = 4;
/// The region's size.
const SIZE: usize = 64;

/// A lock that processes share: one holder at a time, across every process that has a copy.
/// Python's `multiprocessing.Lock`, with a guard.
///
/// A holder that dies (killed, crashed, exited) does not keep it: the next [`lock`](Lock::lock)
/// takes it over and returns [`OwnerDied`] with the guard. Not reentrant: a thread that
/// locks it twice waits for itself, as with Python's `Lock`.
///
/// # Examples
///
/// ```no_run
/// use multiproc::sync::Lock;
///
/// #[multiproc::process]
/// fn print_alone(lock: Lock, n: u32) {
///     let _held = lock.lock().unwrap_or_else(|died| died.into_guard());
///     println!("hello from {n}");
/// }
///
/// #[multiproc::main]
/// fn main() -> multiproc::Result<()> {
///     let lock = Lock::new()?;
///     let children = (0..3)
///         .map(|n| multiproc::spawn(print_alone, (lock.clone(), n)))
///         .collect::<multiproc::Result<Vec<_>>>()?;
///     for child in children {
///         child.join()?;
///     }
///     Ok(())
/// }
/// ```
#[derive(Clone)]
pub struct Lock(Arc<Region>);

/// Holds a [`Lock`] until dropped.
///
/// # Examples
///
/// See [`Lock`].
#[must_use = "the lock is released when the guard is dropped"]
pub struct LockGuard<'a> {
    lock: &'a Lock,
}

/// The lock was taken over from a holder that died holding it: what it protects may be
/// half-changed. Holds the guard: the lock is yours either way.
///
/// # Examples
///
/// ```no_run
/// let lock = multiproc::sync::Lock::new()?;
/// match lock.lock() {
///     Ok(_guard) => println!("as the last holder left it"),
///     Err(died) => {
///         eprintln!("{died}");
///         let _guard = died.into_guard(); // repair what it protects, then go on
///     }
/// }
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct OwnerDied<G> {
    guard: G,
    pid: u32,
}

/// What [`Lock::lock`] returns: the guard, or the guard inside an [`OwnerDied`].
pub type LockResult<G> = std::result::Result<G, OwnerDied<G>>;

impl<G> OwnerDied<G> {
    /// The guard: the lock is held.
    ///
    /// # Examples
    ///
    /// See [`OwnerDied`].
    pub fn into_guard(self) -> G {
        self.guard
    }

    /// The pid of the holder that died.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let lock = multiproc::sync::Lock::new()?;
    /// if let Err(died) = lock.lock() {
    ///     println!("pid {} died holding the lock", died.pid());
    /// }
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn pid(&self) -> u32 {
        self.pid
    }
}

impl<G> fmt::Display for OwnerDied<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the lock's holder (pid {}) died holding it; it is yours now, but what it protects \
             may be half-changed",
            self.pid
        )
    }
}

impl<G> fmt::Debug for OwnerDied<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnerDied")
            .field("pid", &self.pid)
            .finish_non_exhaustive()
    }
}

impl<G> std::error::Error for OwnerDied<G> {}

impl Lock {
    /// A new lock, free.
    ///
    /// # Examples
    ///
    /// See [`Lock`].
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Io`](crate::ErrorKind::Io) if the shared page cannot be made.
    pub fn new() -> Result<Lock> {
        Region::new("multiproc-lock", SIZE)
            .map(|r| Lock(Arc::new(r)))
            .map_err(|e| Error::io("cannot create a lock's shared memory", e))
    }

    /// Takes the lock, waiting as long as it takes; [`OwnerDied`] (with the guard) if its
    /// holder died holding it.
    ///
    /// # Examples
    ///
    /// See [`Lock`].
    ///
    /// # Errors
    ///
    /// [`OwnerDied`], which holds the guard.
    pub fn lock(&self) -> LockResult<LockGuard<'_>> {
        loop {
            if let Some(taken) = self.acquire(Wait::Forever) {
                return taken;
            }
        }
    }

    /// Takes the lock if it is free (or its holder is dead); `None` if another holds it.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let lock = multiproc::sync::Lock::new()?;
    /// let held = lock.try_lock();
    /// assert!(held.is_some());
    /// assert!(lock.try_lock().is_none());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn try_lock(&self) -> Option<LockResult<LockGuard<'_>>> {
        self.acquire(Wait::Now)
    }

    /// Takes the lock, waiting at most `timeout`; `None` if it stayed held that long
    /// (Python's `acquire(timeout=...)` returning `False`).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    ///
    /// let lock = multiproc::sync::Lock::new()?;
    /// let _held = lock.lock();
    /// assert!(lock.lock_timeout(Duration::from_millis(10)).is_none());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn lock_timeout(&self, timeout: Duration) -> Option<LockResult<LockGuard<'_>>> {
        self.acquire(Wait::timeout(timeout))
    }

    /// Whether some process holds the lock now (a snapshot: it may change at once).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let lock = multiproc::sync::Lock::new()?;
    /// let held = lock.lock();
    /// assert!(lock.is_locked());
    /// drop(held);
    /// assert!(!lock.is_locked());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn is_locked(&self) -> bool {
        self.0.word64(OWNER).load(SeqCst) != 0
    }

    /// One attempt within `wait`: the guard (clean, or taken over from a dead holder), or
    /// `None` when the wait ended first.
    fn acquire(&self, wait: Wait) -> Option<LockResult<LockGuard<'_>>> {
        let me = sys::process_identity();
        let owner = self.0.word64(OWNER);
        let mut spins = 0;
        loop {
            let current = match owner.compare_exchange(0, me, SeqCst, SeqCst) {
                Ok(_) => return Some(Ok(LockGuard { lock: self })),
                Err(current) => current,
            };
            if spins < 64 {
                spins += 1;
                std::hint::spin_loop();
                continue;
            }
            // A dead holder's lock is taken over, whatever the wait.
            if current != me
                && !sys::identity_alive(current)
                && owner.compare_exchange(current, me, SeqCst, SeqCst).is_ok()
            {
                return Some(Err(OwnerDied {
                    guard: LockGuard { lock: self },
                    pid: (current >> 32) as u32,
                }));
            }
            if wait.is_over() {
                return None;
            }
            let seen = self.0.word(SEQ).load(SeqCst);
            if owner.load(SeqCst) == current {
                sleep(&self.0, seen, wait);
            }
        }
    }

    fn release(&self) {
        self.0.word64(OWNER).store(0, SeqCst);
        released(&self.0);
    }
}

/// After a release: moves SEQ on and wakes whoever sleeps on it.
fn released(region: &Region) {
    region.word(SEQ).fetch_add(1, SeqCst);
    if region.word(WAITERS).load(SeqCst) != 0 {
        sys::futex_wake_all(region.word(SEQ));
    }
}

/// Sleeps while SEQ still reads `seen`, at most a [`RECHECK`] slice of `wait` (a holder that
/// dies wakes nobody).
fn sleep(region: &Region, seen: u32, wait: Wait) {
    let waiters = region.word(WAITERS);
    waiters.fetch_add(1, SeqCst);
    sys::futex_wait(region.word(SEQ), seen, wait.at_most(RECHECK));
    waiters.fetch_sub(1, SeqCst);
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        self.lock.release();
    }
}

impl fmt::Debug for Lock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lock")
            .field("locked", &self.is_locked())
            .finish()
    }
}

impl fmt::Debug for LockGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LockGuard")
    }
}

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
    /// See [`Event`].
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Io`](crate::ErrorKind::Io) if the shared page cannot be made.
    pub fn new() -> Result<Event> {
        Region::new("multiproc-event", SIZE)
            .map(|r| Event(Arc::new(r)))
            .map_err(|e| Error::io("cannot create an event's shared memory", e))
    }

    /// Sets the flag and wakes every waiter.
    ///
    /// # Examples
    ///
    /// See [`Event`].
    pub fn set(&self) {
        let flag = self.0.word(FLAG);
        if flag.swap(1, SeqCst) == 0 {
            sys::futex_wake_all(flag);
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
    /// See [`Event::clear`].
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
    /// See [`Event`].
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let wait = Wait::timeout(timeout);
        let flag = self.0.word(FLAG);
        loop {
            if flag.load(SeqCst) != 0 {
                return true;
            }
            if wait.is_over() {
                return false;
            }
            sys::futex_wait(flag, 0, wait.at_most(RECHECK));
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

/// A semaphore's most permits (its holders' identities fill a page).
const MAX_PERMITS: usize = 510;
/// Where a semaphore's words are: its permit count (u64 0), its SEQ and WAITERS (u32 2 and
/// 3), then one u64 slot per permit, 0 or its holder's identity.
const PERMITS: usize = 0;
const SLOTS: usize = 2;

/// A number of permits that processes share: at most that many holders at once, across every
/// process that has a copy. Python's `multiprocessing.Semaphore` and `BoundedSemaphore`.
///
/// A permit is held by a guard and comes back when the guard is dropped, so there is no
/// releasing more than was taken (every semaphore is bounded). **A holder that dies does not
/// keep its permit**: each permit records its holder, and a process that waits for one takes
/// over a dead holder's (Python's semaphores lose it for good).
///
/// # Examples
///
/// ```no_run
/// use multiproc::sync::Semaphore;
///
/// #[multiproc::process]
/// fn download(slots: Semaphore, n: u32) -> u32 {
///     let _permit = slots.acquire(); // at most two downloads at a time
///     n
/// }
///
/// #[multiproc::main]
/// fn main() -> multiproc::Result<()> {
///     let slots = Semaphore::new(2)?;
///     let children = (0..5)
///         .map(|n| multiproc::spawn(download, (slots.clone(), n)))
///         .collect::<multiproc::Result<Vec<_>>>()?;
///     for child in children {
///         child.join()?;
///     }
///     Ok(())
/// }
/// ```
#[derive(Clone)]
pub struct Semaphore(Arc<Region>);

/// Holds one permit of a [`Semaphore`] until dropped.
///
/// # Examples
///
/// See [`Semaphore`].
#[must_use = "the permit comes back when the guard is dropped"]
pub struct SemaphoreGuard<'a> {
    semaphore: &'a Semaphore,
    slot: usize,
}

impl Semaphore {
    /// A semaphore of `permits` permits (1 to 510), all free.
    ///
    /// # Examples
    ///
    /// See [`Semaphore`].
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Other`](crate::ErrorKind::Other) for 0 or more than 510 permits;
    /// [`ErrorKind::Io`](crate::ErrorKind::Io) if the shared page cannot be made.
    pub fn new(permits: usize) -> Result<Semaphore> {
        if !(1..=MAX_PERMITS).contains(&permits) {
            return Err(Error::other(format!(
                "a semaphore has 1 to {MAX_PERMITS} permits, not {permits}"
            )));
        }
        let region = Region::new("multiproc-semaphore", (SLOTS + permits) * 8)
            .map_err(|e| Error::io("cannot create a semaphore's shared memory", e))?;
        region.word64(PERMITS).store(permits as u64, SeqCst);
        Ok(Semaphore(Arc::new(region)))
    }

    /// Takes a permit, waiting as long as it takes.
    ///
    /// # Examples
    ///
    /// See [`Semaphore`].
    pub fn acquire(&self) -> SemaphoreGuard<'_> {
        loop {
            if let Some(guard) = self.take(Wait::Forever) {
                return guard;
            }
        }
    }

    /// Takes a permit if one is free (or held by a dead process); `None` otherwise.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let one = multiproc::sync::Semaphore::new(1)?;
    /// let held = one.try_acquire();
    /// assert!(held.is_some());
    /// assert!(one.try_acquire().is_none());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn try_acquire(&self) -> Option<SemaphoreGuard<'_>> {
        self.take(Wait::Now)
    }

    /// Takes a permit, waiting at most `timeout`; `None` if none came (Python's
    /// `acquire(timeout=...)` returning `False`).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    ///
    /// let one = multiproc::sync::Semaphore::new(1)?;
    /// let _held = one.acquire();
    /// assert!(one.acquire_timeout(Duration::from_millis(10)).is_none());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn acquire_timeout(&self, timeout: Duration) -> Option<SemaphoreGuard<'_>> {
        self.take(Wait::timeout(timeout))
    }

    /// How many permits it has.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let slots = multiproc::sync::Semaphore::new(3)?;
    /// assert_eq!(slots.permits(), 3);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn permits(&self) -> usize {
        self.0.word64(PERMITS).load(SeqCst) as usize
    }

    /// How many permits are free now (a snapshot; a dead holder's permit counts as held
    /// until a waiter takes it over).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let slots = multiproc::sync::Semaphore::new(3)?;
    /// let _one = slots.acquire();
    /// assert_eq!(slots.available(), 2);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn available(&self) -> usize {
        (0..self.permits())
            .filter(|&i| self.slot(i).load(SeqCst) == 0)
            .count()
    }

    fn slot(&self, i: usize) -> &std::sync::atomic::AtomicU64 {
        self.0.word64(SLOTS + i)
    }

    /// One attempt within `wait`: a free permit, else a dead holder's; `None` when the wait
    /// ended first.
    fn take(&self, wait: Wait) -> Option<SemaphoreGuard<'_>> {
        let me = sys::process_identity();
        loop {
            // Read before looking: a release after this wakes the sleep below at once.
            let seen = self.0.word(SEQ).load(SeqCst);
            let n = self.permits();
            for slot in 0..n {
                if self
                    .slot(slot)
                    .compare_exchange(0, me, SeqCst, SeqCst)
                    .is_ok()
                {
                    return Some(SemaphoreGuard {
                        semaphore: self,
                        slot,
                    });
                }
            }
            for slot in 0..n {
                let holder = self.slot(slot).load(SeqCst);
                if holder != 0
                    && holder != me
                    && !sys::identity_alive(holder)
                    && self
                        .slot(slot)
                        .compare_exchange(holder, me, SeqCst, SeqCst)
                        .is_ok()
                {
                    return Some(SemaphoreGuard {
                        semaphore: self,
                        slot,
                    });
                }
            }
            if wait.is_over() {
                return None;
            }
            sleep(&self.0, seen, wait);
        }
    }
}

impl Drop for SemaphoreGuard<'_> {
    fn drop(&mut self) {
        self.semaphore.slot(self.slot).store(0, SeqCst);
        released(&self.semaphore.0);
    }
}

impl fmt::Debug for Semaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Semaphore")
            .field("permits", &self.permits())
            .field("available", &self.available())
            .finish()
    }
}

impl fmt::Debug for SemaphoreGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SemaphoreGuard")
    }
}

impl Serialize for Semaphore {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        codec::attach_fd(self.0.fd(), "Semaphore")?.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Semaphore {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let index = u32::deserialize(d)?;
        let fd = codec::take_fd(index, "Semaphore")?;
        let region = Region::from_fd(fd, SLOTS * 8)
            .map_err(|e| codec::de_error(format!("cannot map a shared Semaphore: {e}")))?;
        // Its count must fit the region received (a region from elsewhere is checked).
        let permits = region.word64(PERMITS).load(SeqCst) as usize;
        if !(1..=MAX_PERMITS).contains(&permits) || region.len() < (SLOTS + permits) * 8 {
            return Err(codec::de_error(format!(
                "a shared Semaphore's region does not hold its {permits} permits"
            )));
        }
        Ok(Semaphore(Arc::new(region)))
    }
}

macro_rules! travels_as_a_page {
    ($t:ident, $what:literal) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                codec::attach_fd(self.0.fd(), $what)?.serialize(s)
            }
        }

        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                let index = u32::deserialize(d)?;
                let fd = codec::take_fd(index, $what)?;
                let region = Region::from_fd(fd, SIZE)
                    .map_err(|e| codec::de_error(format!("cannot map a shared {}: {e}", $what)))?;
                Ok($t(Arc::new(region)))
            }
        }
    };
}

travels_as_a_page!(Lock, "Lock");
travels_as_a_page!(Event, "Event");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_is_held_once_and_released_by_its_guard() {
        let lock = Lock::new().unwrap();
        let held = lock.try_lock().unwrap().unwrap();
        assert!(lock.is_locked());
        assert!(lock.try_lock().is_none());
        assert!(lock.lock_timeout(Duration::from_millis(20)).is_none());
        drop(held);
        assert!(!lock.is_locked());
        assert!(lock.lock().is_ok());
    }

    #[test]
    fn a_dead_holders_lock_is_taken_over_and_says_so() {
        let lock = Lock::new().unwrap();
        // A holder that no longer exists: pid 0x7fff_fff0 is above any pid_max.
        lock.0.word64(OWNER).store(0x7fff_fff0_u64 << 32, SeqCst);
        let died = lock.lock().unwrap_err();
        assert_eq!(died.pid(), 0x7fff_fff0);
        assert!(died.to_string().contains("died holding it"), "{died}");
        drop(died.into_guard());
        assert!(lock.lock().is_ok(), "clean after the takeover");
    }

    #[test]
    fn a_semaphore_gives_its_permits_and_takes_back_a_dead_holders() {
        assert!(Semaphore::new(0).is_err());
        assert!(Semaphore::new(MAX_PERMITS + 1).is_err());
        let two = Semaphore::new(2).unwrap();
        let a = two.try_acquire().unwrap();
        let b = two.try_acquire().unwrap();
        assert_eq!(two.available(), 0);
        assert!(two.acquire_timeout(Duration::from_millis(20)).is_none());
        drop(a);
        assert_eq!(two.available(), 1);
        drop(b);
        // A holder that no longer exists: its permit is taken over by the next waiter.
        let one = Semaphore::new(1).unwrap();
        one.slot(0).store(0x7fff_fff0_u64 << 32, SeqCst);
        assert_eq!(one.available(), 0);
        let taken = one.try_acquire().expect("a dead holder's permit");
        drop(taken);
        assert_eq!(one.available(), 1);
    }

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
}
