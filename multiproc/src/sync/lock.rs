//! [`Lock`] and [`RLock`], and [`OwnerDied`]: what taking over a dead holder's lock returns.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use super::{HEADER, OWNER, travels_as_a_page};
use crate::error::{Error, Result};
use crate::ipc::shm::Region;
use crate::sys::{self, Wait};

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

/// Holds a [`Lock`] until dropped. [`Lock`]'s example shows it in use.
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

/// The guard `make` gives, now that the lock is held: clean, or inside an [`OwnerDied`] when
/// it was taken over from the holder `pid` (what [`super::lock`] says). Made only now, since
/// dropping a guard releases the lock.
pub(super) fn held<G>(taken: Result<(), u32>, make: impl FnOnce() -> G) -> LockResult<G> {
    let guard = make();
    match taken {
        Ok(()) => Ok(guard),
        Err(pid) => Err(OwnerDied { guard, pid }),
    }
}

/// The same result with its guard, clean or not, made into another.
pub(super) fn map_guard<G, H>(taken: LockResult<G>, f: impl FnOnce(G) -> H) -> LockResult<H> {
    match taken {
        Ok(guard) => Ok(f(guard)),
        Err(died) => Err(died.map(f)),
    }
}

impl<G> OwnerDied<G> {
    /// The same death, with the guard made into another.
    pub(super) fn map<H>(self, f: impl FnOnce(G) -> H) -> OwnerDied<H> {
        OwnerDied {
            guard: f(self.guard),
            pid: self.pid,
        }
    }

    /// The guard: the lock is held.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use multiproc::sync::{Lock, OwnerDied};
    ///
    /// let lock = Lock::new()?;
    /// // Held either way: cleanly, or taken over from a holder that died.
    /// let _guard = lock.lock().unwrap_or_else(OwnerDied::into_guard);
    /// assert!(lock.is_locked());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
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
    /// ```no_run
    /// let lock = multiproc::sync::Lock::new()?;
    /// let copy = lock.clone(); // the same lock, as a copy in another process would be
    /// let _held = lock.lock();
    /// assert!(copy.is_locked());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Io`](crate::ErrorKind::Io) if the shared page cannot be made.
    pub fn new() -> Result<Lock> {
        Region::new("multiproc-lock", HEADER)
            .map(|r| Lock(Arc::new(r)))
            .map_err(|e| Error::io("cannot create a lock's shared memory", e))
    }

    /// Takes the lock, waiting as long as it takes; [`OwnerDied`] (with the guard) if its
    /// holder died holding it.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let lock = multiproc::sync::Lock::new()?;
    /// {
    ///     let _held = lock.lock().unwrap_or_else(|died| died.into_guard());
    ///     assert!(lock.is_locked());
    /// } // released when the guard is dropped
    /// assert!(!lock.is_locked());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`OwnerDied`], which holds the guard.
    pub fn lock(&self) -> LockResult<LockGuard<'_>> {
        super::forever(|wait| self.acquire(wait))
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
        let taken = super::lock(&self.0, wait)?;
        Some(held(taken, || LockGuard { lock: self }))
    }
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        super::unlock(&self.lock.0);
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

travels_as_a_page!(Lock, "Lock", HEADER);

/// The thread that holds an [`RLock`], as its pid and thread id (u64 word: a value left by a
/// dead holder never matches a thread of the process that took over, whose tid may be the
/// same number), and how many times (u32 word).
const THREAD: usize = 3;
const DEPTH: usize = 4;

/// A reentrant lock that processes share: Python's `multiprocessing.RLock`. The thread that
/// holds it may take it again (each guard gives back one level); other threads, in this
/// process or another, wait until the last guard is dropped.
///
/// A holder process that dies does not keep it: the next [`lock`](RLock::lock) takes it
/// over and returns [`OwnerDied`], as [`Lock`]'s does. Its guards stay on the thread that
/// took them (they are not `Send`).
///
/// # Examples
///
/// ```no_run
/// use multiproc::sync::RLock;
///
/// fn add_one(lock: &RLock, total: &mut u32) {
///     let _held = lock.lock().unwrap_or_else(|died| died.into_guard());
///     *total += 1;
/// }
///
/// let lock = RLock::new()?;
/// let mut total = 0;
/// let _outer = lock.lock().unwrap_or_else(|died| died.into_guard());
/// add_one(&lock, &mut total); // takes it again: no deadlock
/// assert_eq!(total, 1);
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Clone)]
pub struct RLock(Arc<Region>);

/// Holds one level of an [`RLock`] until dropped. [`RLock`]'s example shows it in use.
#[must_use = "the lock is released when the guard is dropped"]
pub struct RLockGuard<'a> {
    lock: &'a RLock,
    /// Counted per thread: the guard is given back on the thread that took it.
    _not_send: PhantomData<*const ()>,
}

impl RLock {
    /// A new reentrant lock, free.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let lock = multiproc::sync::RLock::new()?;
    /// let copy = lock.clone(); // the same lock
    /// let _held = lock.lock();
    /// assert!(copy.is_locked());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Io`](crate::ErrorKind::Io) if the shared page cannot be made.
    pub fn new() -> Result<RLock> {
        Region::new("multiproc-rlock", HEADER)
            .map(|r| RLock(Arc::new(r)))
            .map_err(|e| Error::io("cannot create a reentrant lock's shared memory", e))
    }

    /// Takes the lock (again, on the thread that holds it), waiting as long as it takes;
    /// [`OwnerDied`] (with the guard) if its holder died holding it.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let lock = multiproc::sync::RLock::new()?;
    /// let outer = lock.lock().unwrap_or_else(|died| died.into_guard());
    /// let inner = lock.lock().unwrap_or_else(|died| died.into_guard()); // same thread: no wait
    /// drop(inner);
    /// assert!(lock.is_locked()); // one level left
    /// drop(outer);
    /// assert!(!lock.is_locked());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`OwnerDied`], which holds the guard.
    pub fn lock(&self) -> LockResult<RLockGuard<'_>> {
        super::forever(|wait| self.acquire(wait))
    }

    /// Takes the lock if it is free, held by this thread, or held by a dead process; `None`
    /// if another thread holds it.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let lock = multiproc::sync::RLock::new()?;
    /// let _once = lock.try_lock().expect("free");
    /// let _twice = lock.try_lock().expect("held by this thread");
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn try_lock(&self) -> Option<LockResult<RLockGuard<'_>>> {
        self.acquire(Wait::Now)
    }

    /// Takes the lock, waiting at most `timeout`; `None` if another thread held it that long.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    ///
    /// let lock = multiproc::sync::RLock::new()?;
    /// assert!(lock.lock_timeout(Duration::from_millis(10)).is_some());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn lock_timeout(&self, timeout: Duration) -> Option<LockResult<RLockGuard<'_>>> {
        self.acquire(Wait::timeout(timeout))
    }

    /// Whether some thread of some process holds the lock now (a snapshot).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let lock = multiproc::sync::RLock::new()?;
    /// assert!(!lock.is_locked());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn is_locked(&self) -> bool {
        self.0.word64(OWNER).load(SeqCst) != 0
    }

    fn acquire(&self, wait: Wait) -> Option<LockResult<RLockGuard<'_>>> {
        // The guard is made once a level is held: dropping it gives the level back.
        let guard = || RLockGuard {
            lock: self,
            _not_send: PhantomData,
        };
        let thread = (u64::from(std::process::id()) << 32) | u64::from(sys::thread_id());
        // Only the holding thread writes THREAD and DEPTH, so a match is this thread's own.
        if self.0.word64(OWNER).load(SeqCst) == sys::process_identity()
            && self.0.word64(THREAD).load(SeqCst) == thread
        {
            self.0.word(DEPTH).fetch_add(1, SeqCst);
            return Some(Ok(guard()));
        }
        let taken = super::lock(&self.0, wait)?;
        self.0.word64(THREAD).store(thread, SeqCst);
        self.0.word(DEPTH).store(1, SeqCst);
        Some(held(taken, guard))
    }
}

impl Drop for RLockGuard<'_> {
    fn drop(&mut self) {
        let region = &self.lock.0;
        if region.word(DEPTH).fetch_sub(1, SeqCst) == 1 {
            region.word64(THREAD).store(0, SeqCst);
            super::unlock(region);
        }
    }
}

impl fmt::Debug for RLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RLock")
            .field("locked", &self.is_locked())
            .finish()
    }
}

impl fmt::Debug for RLockGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RLockGuard")
    }
}

travels_as_a_page!(RLock, "RLock", HEADER);

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
    fn a_reentrant_lock_is_taken_again_by_its_thread_only() {
        let lock = RLock::new().unwrap();
        let outer = lock.lock().unwrap();
        let inner = lock.try_lock().unwrap().unwrap();
        let other = lock.clone();
        let waited =
            std::thread::spawn(move || other.lock_timeout(Duration::from_millis(20)).is_none());
        assert!(waited.join().unwrap(), "another thread waits");
        drop(inner);
        assert!(lock.is_locked(), "one level left");
        drop(outer);
        assert!(!lock.is_locked());
        let other = lock.clone();
        assert!(
            std::thread::spawn(move || other.try_lock().is_some())
                .join()
                .unwrap()
        );
        // A dead holder's is taken over as a Lock's is.
        lock.0.word64(OWNER).store(0x7fff_fff0_u64 << 32, SeqCst);
        lock.0.word64(THREAD).store(1, SeqCst);
        let died = lock.lock().unwrap_err();
        assert_eq!(died.pid(), 0x7fff_fff0);
        let again = lock.try_lock().unwrap().unwrap();
        drop(again);
        drop(died);
        assert!(!lock.is_locked());
    }
}
