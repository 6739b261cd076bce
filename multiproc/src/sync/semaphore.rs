//! [`Semaphore`]: permits held by guards, each recording its holder.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::SEQ;
use crate::error::{Error, Result};
use crate::ipc::codec;
use crate::ipc::shm::Region;
use crate::sys::{self, Wait};

/// A semaphore's most permits (its holders' identities fill a page).
const MAX_PERMITS: usize = 510;
/// Where a semaphore's words are: its permit count (u64 0), its SEQ and WAITERS (u32 2 and
/// 3), then one u64 slot per permit, 0 or its holder's identity.
const PERMITS: usize = 0;
const SLOTS: usize = 2;

/// A number of permits that processes share: at most that many holders at once, across every
/// process that has a copy. Python's `multiprocessing.BoundedSemaphore`, and its
/// `Semaphore` as a limit on holders.
///
/// A permit is held by a guard and comes back when the guard is dropped, so there is no
/// releasing more than was taken (every semaphore is bounded). Nor is there Python's other
/// use, a semaphore that starts at 0 and that one process releases for another to acquire:
/// send a message, or set an [`Event`](super::Event), for that. **A holder that dies does not
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

/// Holds one permit of a [`Semaphore`] until dropped. [`Semaphore`]'s example shows it in use.
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
    /// ```no_run
    /// use multiproc::sync::Semaphore;
    ///
    /// let slots = Semaphore::new(2)?;
    /// assert_eq!(slots.available(), 2);
    /// assert!(Semaphore::new(0).is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
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
    /// ```no_run
    /// let slots = multiproc::sync::Semaphore::new(2)?;
    /// {
    ///     let _permit = slots.acquire();
    ///     assert_eq!(slots.available(), 1);
    /// } // the permit comes back when the guard is dropped
    /// assert_eq!(slots.available(), 2);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn acquire(&self) -> SemaphoreGuard<'_> {
        super::forever(|wait| self.take(wait))
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
            super::sleep(&self.0, seen, wait);
        }
    }
}

impl Drop for SemaphoreGuard<'_> {
    fn drop(&mut self) {
        self.semaphore.slot(self.slot).store(0, SeqCst);
        super::released(&self.semaphore.0);
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
        super::send_page(&self.0, "Semaphore", s)
    }
}

impl<'de> Deserialize<'de> for Semaphore {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let region = super::receive_page(d, "Semaphore", SLOTS * 8)?;
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
