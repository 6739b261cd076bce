//! Synchronisation and shared state across processes, Python's `multiprocessing` set:
//! [`Lock`], [`RLock`], [`Semaphore`] (also Python's `BoundedSemaphore`), [`Event`],
//! [`Condition`], [`Barrier`], and [`Value`] / [`Array`] for plain data. Each lives in a page
//! of shared memory, with futexes to wait on. They travel as fields and arguments like
//! channels (a descriptor of the page goes with the message), and every copy in every
//! process is the same lock, event or value.
//!
//! **Robust where Python is not**: a process that dies holding a [`Lock`] (an [`RLock`], a
//! [`Condition`]'s or a [`Value`]'s lock) does not keep it. The next `lock` takes it over
//! (within 0.1 s of the death) and says so: it returns [`OwnerDied`], which holds the guard,
//! so the caller decides whether what the lock protects is usable (as a robust pthread
//! mutex's `EOWNERDEAD` does; std's `PoisonError` is the same shape). A dead holder's
//! [`Semaphore`] permit is taken over by the next waiter, silently (a permit guards no
//! data). A
//! [`Barrier`] whose party dies breaks for the others ([`BrokenBarrier`] names the dead
//! process) instead of leaving them waiting.
//!
//! [`Value`], [`Array`] and [`Condition`] hold [`bytemuck::Pod`] data: plain numbers, arrays
//! and `#[repr(C)]` structs of them, for which every bit pattern is a value, so that whatever
//! a holder that died mid-write left behind is still a valid `T` (never undefined behaviour).
//! Derive it with `bytemuck = { version = "1", features = ["derive"] }` in your Cargo.toml.

mod barrier;
mod condition;
mod event;
mod lock;
mod plain;
mod semaphore;

pub use self::barrier::{Barrier, BrokenBarrier};
pub use self::condition::{Condition, ConditionGuard};
pub use self::event::Event;
pub use self::lock::{Lock, LockGuard, LockResult, OwnerDied, RLock, RLockGuard};
pub use self::plain::{Array, ArrayGuard, Value, ValueGuard};
pub use self::semaphore::{Semaphore, SemaphoreGuard};

use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering::SeqCst;

use serde::{Deserializer, Serializer};

use crate::ipc::codec;
use crate::ipc::ring::RECHECK;
use crate::ipc::shm::Region;
use crate::sys::{self, Wait};

// Every page starts with a lock: its holder, then a counter that moves at each release and
// the number of processes sleeping on it. What else a page holds starts at HEADER.
/// Its holder's identity (pid and start time: `sys::process_identity`), 0 when free (u64).
const OWNER: usize = 0;
/// Moves on at each release; waiters sleep on it (u32 words from here).
const SEQ: usize = 2;
const WAITERS: usize = 3;
/// The bytes of a page's header (the lock, and a type's own words up to here).
const HEADER: usize = 64;

/// Takes the lock at the start of `region` within `wait`: `Ok` clean, `Err(pid)` taken over
/// from the holder `pid` that died holding it, `None` when the wait ended first. Not
/// reentrant: another thread of this process holding it is waited for.
fn lock(region: &Region, wait: Wait) -> Option<Result<(), u32>> {
    let me = sys::process_identity();
    let owner = region.word64(OWNER);
    let mut spins = 0;
    loop {
        let current = match owner.compare_exchange(0, me, SeqCst, SeqCst) {
            Ok(_) => return Some(Ok(())),
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
            return Some(Err((current >> 32) as u32));
        }
        if wait.is_over() {
            return None;
        }
        let seen = region.word(SEQ).load(SeqCst);
        if owner.load(SeqCst) == current {
            sleep(region, seen, wait);
        }
    }
}

/// Takes the lock at the start of `region`, waiting as long as it takes.
fn lock_forever(region: &Region) -> Result<(), u32> {
    forever(|wait| lock(region, wait))
}

/// Makes attempts with no end to their wait until one gives something: the blocking form of
/// each `try`/`timeout` pair here (an attempt ends in slices, to look for dead holders).
fn forever<T>(mut attempt: impl FnMut(Wait) -> Option<T>) -> T {
    loop {
        if let Some(got) = attempt(Wait::Forever) {
            return got;
        }
    }
}

/// Releases the lock at the start of `region`.
fn unlock(region: &Region) {
    region.word64(OWNER).store(0, SeqCst);
    released(region);
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

/// Sends a page's descriptor with the message being encoded.
fn send_page<S: Serializer>(
    region: &Region,
    what: &'static str,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    serde::Serialize::serialize(&codec::attach_fd(region.fd(), what)?, s)
}

/// Maps a page received with the message being decoded, of at least `min_len` bytes.
fn receive_page<'de, D: Deserializer<'de>>(
    d: D,
    what: &'static str,
    min_len: usize,
) -> std::result::Result<Region, D::Error> {
    let index: u32 = serde::Deserialize::deserialize(d)?;
    let fd: OwnedFd = codec::take_fd(index, what)?;
    Region::from_fd(fd, min_len)
        .map_err(|e| codec::de_error(format!("cannot map a shared {what}: {e}")))
}

/// `Serialize` and `Deserialize` for a type that is an `Arc<Region>` of at least `$len`
/// bytes.
macro_rules! travels_as_a_page {
    ($t:ident, $what:literal, $len:expr) => {
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(
                &self,
                s: S,
            ) -> std::result::Result<S::Ok, S::Error> {
                super::send_page(&self.0, $what, s)
            }
        }

        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(
                d: D,
            ) -> std::result::Result<Self, D::Error> {
                super::receive_page(d, $what, $len).map(|r| $t(std::sync::Arc::new(r)))
            }
        }
    };
}
use travels_as_a_page;
