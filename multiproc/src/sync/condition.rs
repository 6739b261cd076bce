//! [`Condition`]: plain data under a lock, and a way to wait for it to change.

use std::fmt;
use std::mem::ManuallyDrop;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use bytemuck::Pod;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::LockResult;
use super::lock::map_guard;
use super::plain::{Shared, SharedGuard};
use crate::error::Result;
use crate::sys::{self, Wait};

/// Moves on at each notification; waiters sleep on it (u32 words, after the lock's).
const NOTIFY: usize = 4;
/// How many processes sleep on NOTIFY.
const SLEEPERS: usize = 5;

/// A condition variable that processes share, with the data it is about: Python's
/// `multiprocessing.Condition`, shaped as std's `Mutex` and `Condvar` in one. The lock
/// protects a `T` (any [`bytemuck::Pod`] type; `()` for none); a guard waits for a
/// notification with [`wait`](ConditionGuard::wait), giving the lock up meanwhile, and
/// [`wait_while`](ConditionGuard::wait_while) waits until the data says so.
///
/// A holder that dies does not keep the lock: the next `lock` (or a waiter taking it back)
/// returns [`OwnerDied`](super::OwnerDied) with the guard. As with every condition variable, a wait may end
/// without a notification: check the data (or use `wait_while`).
///
/// # Examples
///
/// ```no_run
/// use multiproc::sync::Condition;
///
/// #[multiproc::process]
/// fn produce(ready: Condition<u32>) {
///     *ready.lock().unwrap_or_else(|died| died.into_guard()) = 42;
///     ready.notify_all();
/// }
///
/// #[multiproc::main]
/// fn main() -> multiproc::Result<()> {
///     let ready = Condition::with_value(0_u32)?;
///     let child = multiproc::spawn(produce, (ready.clone(),))?;
///     let held = ready.lock().unwrap_or_else(|died| died.into_guard());
///     let held = held.wait_while(|v| *v == 0).unwrap_or_else(|died| died.into_guard());
///     assert_eq!(*held, 42);
///     drop(held);
///     child.join()?;
///     Ok(())
/// }
/// ```
pub struct Condition<T = ()>(Shared<T>);

/// The lock of a [`Condition`] held, giving its data; released when dropped, or while it
/// [`wait`](ConditionGuard::wait)s. [`Condition`]'s example shows it in use.
#[must_use = "the lock is released when the guard is dropped"]
pub struct ConditionGuard<'a, T>(SharedGuard<'a, T>);

impl Condition<()> {
    /// A new condition variable that protects no data (Python's `Condition()`).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let changed = multiproc::sync::Condition::new()?;
    /// changed.notify_all(); // nobody waits: nothing happens
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Io`](crate::ErrorKind::Io) if the shared page cannot be made.
    pub fn new() -> Result<Condition<()>> {
        Condition::with_value(())
    }
}

impl<T: Pod> Condition<T> {
    /// A new condition variable protecting `value`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let jobs = multiproc::sync::Condition::with_value(3_u32)?;
    /// assert_eq!(*jobs.lock().unwrap_or_else(|died| died.into_guard()), 3);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Io`](crate::ErrorKind::Io) if the shared page cannot be made;
    /// [`ErrorKind::Other`](crate::ErrorKind::Other) for a `T` aligned to more than 4096.
    pub fn with_value(value: T) -> Result<Condition<T>> {
        Shared::new("Condition", &[value]).map(Condition)
    }

    /// Takes the lock, waiting as long as it takes; [`OwnerDied`](super::OwnerDied) (with the guard) if its
    /// holder died holding it.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let jobs = multiproc::sync::Condition::with_value(0_u32)?;
    /// let mut held = jobs.lock().unwrap_or_else(|died| died.into_guard());
    /// *held += 1; // the data is only reached through the guard
    /// assert_eq!(*held, 1);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`OwnerDied`](super::OwnerDied), which holds the guard.
    pub fn lock(&self) -> LockResult<ConditionGuard<'_, T>> {
        map_guard(self.0.lock_forever(), ConditionGuard)
    }

    /// Takes the lock, waiting at most `timeout`; `None` if it stayed held that long.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    ///
    /// let changed = multiproc::sync::Condition::new()?;
    /// assert!(changed.lock_timeout(Duration::from_millis(10)).is_some());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn lock_timeout(&self, timeout: Duration) -> Option<LockResult<ConditionGuard<'_, T>>> {
        self.0
            .lock(Wait::timeout(timeout))
            .map(|taken| map_guard(taken, ConditionGuard))
    }

    /// Wakes one waiter, if any (Python's `notify()`); with or without the lock held.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let changed = multiproc::sync::Condition::new()?;
    /// changed.notify_one();
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn notify_one(&self) {
        self.notify(1);
    }

    /// Wakes every waiter (Python's `notify_all()`); with or without the lock held.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let jobs = multiproc::sync::Condition::with_value(0_u32)?;
    /// *jobs.lock().unwrap_or_else(|died| died.into_guard()) = 5;
    /// jobs.notify_all(); // every waiter wakes, takes the lock in turn and sees 5
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn notify_all(&self) {
        self.notify(i32::MAX);
    }

    fn notify(&self, n: i32) {
        let region = self.0.region();
        region.word(NOTIFY).fetch_add(1, SeqCst);
        if region.word(SLEEPERS).load(SeqCst) != 0 {
            sys::futex_wake(region.word(NOTIFY), n);
        }
    }
}

impl<'a, T: Pod> ConditionGuard<'a, T> {
    /// Gives the lock up until a notification (or a spurious wake-up), then takes it back
    /// (Python's `wait()`).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let done = multiproc::sync::Condition::with_value(0_u8)?;
    /// let mut held = done.lock().unwrap_or_else(|died| died.into_guard());
    /// while *held == 0 {
    ///     held = held.wait().unwrap_or_else(|died| died.into_guard());
    /// }
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`OwnerDied`](super::OwnerDied), with the guard, if a holder died while this one waited.
    pub fn wait(self) -> LockResult<ConditionGuard<'a, T>> {
        self.wait_for(Wait::Forever).0
    }

    /// As [`wait`](ConditionGuard::wait), at most `timeout`; the `bool` says whether the
    /// wait timed out (Python's `wait(timeout)` returning `False`).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    ///
    /// let changed = multiproc::sync::Condition::new()?;
    /// let held = changed.lock().unwrap_or_else(|died| died.into_guard());
    /// let (_held, timed_out) = held
    ///     .wait_timeout(Duration::from_millis(10))
    ///     .unwrap_or_else(|died| died.into_guard());
    /// assert!(timed_out);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`OwnerDied`](super::OwnerDied), with the guard and the flag, if a holder died while this one waited.
    pub fn wait_timeout(self, timeout: Duration) -> LockResult<(ConditionGuard<'a, T>, bool)> {
        let (taken, timed_out) = self.wait_for(Wait::timeout(timeout));
        map_guard(taken, |guard| (guard, timed_out))
    }

    /// Waits while `condition` says so of the data, checked under the lock before each wait
    /// (Python's `wait_for(predicate)`, negated as std's `Condvar::wait_while`).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let jobs = multiproc::sync::Condition::with_value(0_u32)?;
    /// let producer = jobs.clone();
    /// std::thread::spawn(move || {
    ///     *producer.lock().unwrap_or_else(|died| died.into_guard()) = 5;
    ///     producer.notify_all();
    /// });
    /// let held = jobs.lock().unwrap_or_else(|died| died.into_guard());
    /// let held = held.wait_while(|n| *n == 0).unwrap_or_else(|died| died.into_guard());
    /// assert_eq!(*held, 5);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`OwnerDied`](super::OwnerDied), with the guard, if a holder died while this one waited (the condition
    /// is not checked again).
    pub fn wait_while(
        mut self,
        mut condition: impl FnMut(&mut T) -> bool,
    ) -> LockResult<ConditionGuard<'a, T>> {
        while condition(&mut self) {
            self = self.wait()?;
        }
        Ok(self)
    }

    /// As [`wait_while`](ConditionGuard::wait_while), at most `timeout` in all; the `bool`
    /// says whether it timed out with the condition still true.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    ///
    /// let jobs = multiproc::sync::Condition::with_value(0_u32)?;
    /// let held = jobs.lock().unwrap_or_else(|died| died.into_guard());
    /// let (held, timed_out) = held
    ///     .wait_timeout_while(Duration::from_millis(10), |n| *n == 0)
    ///     .unwrap_or_else(|died| died.into_guard());
    /// assert!(timed_out && *held == 0);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`wait_while`](ConditionGuard::wait_while).
    pub fn wait_timeout_while(
        mut self,
        timeout: Duration,
        mut condition: impl FnMut(&mut T) -> bool,
    ) -> LockResult<(ConditionGuard<'a, T>, bool)> {
        let wait = Wait::timeout(timeout);
        loop {
            if !condition(&mut self) {
                return Ok((self, false));
            }
            if wait.is_over() {
                return Ok((self, true));
            }
            let (taken, _) = self.wait_for(wait);
            self = taken.map_err(|died| died.map(|guard| (guard, false)))?;
        }
    }

    /// Gives the lock up, sleeps on NOTIFY within `wait`, takes the lock back; whether the
    /// wait ran out with no notification.
    fn wait_for(self, wait: Wait) -> (LockResult<ConditionGuard<'a, T>>, bool) {
        // Not dropped: the lock is released here, and taken back below.
        let this = ManuallyDrop::new(self);
        let shared = this.0.shared();
        let region = shared.region();
        let notify = region.word(NOTIFY);
        // Read before giving the lock up: a notification after this ends the sleep at once.
        let seen = notify.load(SeqCst);
        super::unlock(region);
        region.word(SLEEPERS).fetch_add(1, SeqCst);
        sys::futex_wait(notify, seen, wait);
        region.word(SLEEPERS).fetch_sub(1, SeqCst);
        let timed_out = notify.load(SeqCst) == seen && wait.is_over();
        (map_guard(shared.lock_forever(), ConditionGuard), timed_out)
    }
}

impl<T> Clone for Condition<T> {
    fn clone(&self) -> Self {
        Condition(self.0.clone())
    }
}

impl<T> Deref for ConditionGuard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0[0]
    }
}

impl<T> DerefMut for ConditionGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0[0]
    }
}

impl<T> fmt::Debug for Condition<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Condition").finish_non_exhaustive()
    }
}

impl<T: fmt::Debug> fmt::Debug for ConditionGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ConditionGuard").field(&**self).finish()
    }
}

impl<T: Pod> Serialize for Condition<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.0.serialize("Condition", s)
    }
}

impl<'de, T: Pod> Deserialize<'de> for Condition<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Shared::deserialize(d, "Condition", true).map(Condition)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notification_wakes_a_waiter_that_gave_the_lock_up() {
        let jobs = Condition::with_value(0_u32).unwrap();
        let other = jobs.clone();
        let waiter = std::thread::spawn(move || {
            let held = other.lock().unwrap();
            let (held, timed_out) = held
                .wait_timeout_while(Duration::from_secs(10), |n| *n == 0)
                .unwrap();
            (*held, timed_out)
        });
        // The waiter gives the lock up while it waits, so this takes it.
        *jobs.lock().unwrap() = 3;
        jobs.notify_one();
        assert_eq!(waiter.join().unwrap(), (3, false));
        let held = jobs.lock().unwrap();
        let (held, timed_out) = held.wait_timeout(Duration::from_millis(10)).unwrap();
        assert!(timed_out);
        assert_eq!(*held, 3);
    }
}
