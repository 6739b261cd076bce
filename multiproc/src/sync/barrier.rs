//! [`Barrier`]: parties that wait for each other, and that a dead party breaks.

use std::collections::HashMap;
use std::fmt;
use std::ops::Deref;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::HEADER;
use crate::error::{Error, Result};
use crate::ipc::codec;
use crate::ipc::ring::RECHECK;
use crate::ipc::shm::Region;
use crate::sys::{self, Wait};

// The page: its lock (guarding every word below but GEN's reads), then u32 words.
/// The generation: moves on when the parties are all there (or at a reset); waiters sleep on
/// it.
const GEN: usize = 4;
/// How many have arrived in this generation.
const COUNT: usize = 5;
const PARTIES: usize = 6;
/// 0, or why it is broken (a `Why` as a number), and the pid that broke it by dying.
const BROKEN: usize = 7;
const BROKEN_PID: usize = 8;
/// The generation that the last reset started (so that its waiters know they were reset).
const RESET_AT: usize = 9;
const SLEEPERS: usize = 10;
/// Moves on at every change waiters must see (a round ends, a break, a reset, a member
/// leaves); they sleep on it.
const EPOCH: usize = 11;
/// The page's size, and its members from HEADER: each an identity and the generation it last
/// arrived in plus one (two u64 words).
const SIZE: usize = 4096;
const MAX_MEMBERS: usize = (SIZE - HEADER) / 16;

/// Why a barrier broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Why {
    /// A member process ended without arriving.
    Died(u32),
    /// A party's wait timed out.
    TimedOut,
    /// [`Barrier::abort`].
    Aborted,
    /// [`Barrier::reset`] while this party waited.
    Reset,
}

/// A point where a number of parties wait for each other, across processes: Python's
/// `multiprocessing.Barrier`. Each [`wait`](Barrier::wait) returns once `parties` waits have
/// been made, with a different index for each (0 to `parties - 1`, in order of arrival), and
/// the barrier is ready for the next round.
///
/// **A dead party breaks it** instead of leaving the others waiting: every process that
/// received a copy of the barrier (as a field, an argument, a message) or waited on it is one
/// of its members until it drops its last copy, and when a member ends (is killed, crashes,
/// or exits without dropping its copies, as `std::process::exit` does) without arriving, the
/// others' waits fail with [`BrokenBarrier`] naming it, within 0.1 s. A member that drops its
/// copies has left: nobody waits for it. The waits after a wait timed out (as in Python) or
/// [`abort`](Barrier::abort) fail too; a broken barrier stays broken until
/// [`reset`](Barrier::reset). The first 252 members are tracked; a process that only creates
/// the barrier is not a member until it waits.
///
/// # Examples
///
/// ```no_run
/// use multiproc::sync::Barrier;
///
/// #[multiproc::process]
/// fn step(start: Barrier, n: u32) -> u32 {
///     start.wait().expect("no party died"); // every worker starts together
///     n * 2
/// }
///
/// #[multiproc::main]
/// fn main() -> multiproc::Result<()> {
///     let start = Barrier::new(3)?;
///     let children = (0..3)
///         .map(|n| multiproc::spawn(step, (start.clone(), n)))
///         .collect::<multiproc::Result<Vec<_>>>()?;
///     for child in children {
///         child.join()?;
///     }
///     Ok(())
/// }
/// ```
#[derive(Clone)]
pub struct Barrier(Arc<Page>);

/// One mapping of a barrier's page in this process. When the last one of a page goes, this
/// process stops being one of its members (it left; it did not die).
struct Page {
    region: Region,
    /// The page's file (device and inode): the key of [`MAPPINGS`].
    key: (u64, u64),
}

/// How many mappings of each barrier page this process holds.
static MAPPINGS: Mutex<Option<HashMap<(u64, u64), usize>>> = Mutex::new(None);

impl Page {
    fn new(region: Region) -> std::io::Result<Page> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::File::from(region.fd().try_clone_to_owned()?).metadata()?;
        let key = (meta.dev(), meta.ino());
        let mut mappings = MAPPINGS.lock().unwrap_or_else(|e| e.into_inner());
        *mappings
            .get_or_insert_with(HashMap::new)
            .entry(key)
            .or_insert(0) += 1;
        Ok(Page { region, key })
    }
}

impl Deref for Page {
    type Target = Region;

    fn deref(&self) -> &Region {
        &self.region
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        let last = {
            let mut mappings = MAPPINGS.lock().unwrap_or_else(|e| e.into_inner());
            let map = mappings.get_or_insert_with(HashMap::new);
            let n = map.entry(self.key).or_insert(1);
            *n -= 1;
            let last = *n == 0;
            if last {
                map.remove(&self.key);
            }
            last
        };
        if last {
            leave(&self.region);
        }
    }
}

/// This process no longer holds the barrier on `region`: its member slot is freed, so that
/// the others do not wait for it, nor take its absence for a death.
fn leave(region: &Region) {
    let me = sys::process_identity();
    if let Err(pid) = super::lock_forever(region) {
        mark_broken(region, Why::Died(pid));
    }
    for i in 0..MAX_MEMBERS {
        if member(region, i).load(SeqCst) == me {
            member(region, i).store(0, SeqCst);
        }
    }
    unlock_and_wake(region);
}

/// Member `i`'s identity (0: none).
fn member(region: &Region, i: usize) -> &std::sync::atomic::AtomicU64 {
    region.word64(HEADER / 8 + 2 * i)
}

/// The round member `i` last arrived in, plus one (0: none yet).
fn arrived(region: &Region, i: usize) -> &std::sync::atomic::AtomicU64 {
    region.word64(HEADER / 8 + 2 * i + 1)
}

/// Releases the page's lock, and wakes the waiters to look again.
fn unlock_and_wake(region: &Region) {
    super::unlock(region);
    region.word(EPOCH).fetch_add(1, SeqCst);
    if region.word(SLEEPERS).load(SeqCst) != 0 {
        sys::futex_wake_all(region.word(EPOCH));
    }
}

/// Marks it broken (under the lock), unless it already is.
fn mark_broken(region: &Region, why: Why) {
    if region.word(BROKEN).load(SeqCst) != 0 {
        return;
    }
    let (code, pid) = match why {
        Why::Died(pid) => (1, pid),
        Why::TimedOut => (2, 0),
        Why::Aborted | Why::Reset => (3, 0),
    };
    region.word(BROKEN_PID).store(pid, SeqCst);
    region.word(BROKEN).store(code, SeqCst);
}

/// A [`Barrier`]'s wait failed: a party died or timed out, the barrier was aborted, or reset
/// while this party waited (Python's `BrokenBarrierError`).
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
///
/// let two = multiproc::sync::Barrier::new(2)?;
/// let broken = two.wait_timeout(Duration::from_millis(10)).unwrap_err();
/// assert!(broken.timed_out());
/// assert!(two.is_broken());
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokenBarrier {
    why: Why,
}

impl BrokenBarrier {
    /// The pid of the member that ended without arriving, if that is what broke it.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let start = multiproc::sync::Barrier::new(2)?;
    /// if let Err(broken) = start.wait() {
    ///     if let Some(pid) = broken.dead_party() {
    ///         eprintln!("process {pid} will not come");
    ///     }
    /// }
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn dead_party(&self) -> Option<u32> {
        match self.why {
            Why::Died(pid) => Some(pid),
            _ => None,
        }
    }

    /// Whether a wait timing out broke it.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    ///
    /// let two = multiproc::sync::Barrier::new(2)?;
    /// match two.wait_timeout(Duration::from_millis(10)) {
    ///     Ok(index) => println!("arrived as number {index}"),
    ///     Err(broken) if broken.timed_out() => eprintln!("the other party did not come in time"),
    ///     Err(broken) => eprintln!("{broken}"),
    /// }
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn timed_out(&self) -> bool {
        self.why == Why::TimedOut
    }
}

impl fmt::Display for BrokenBarrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.why {
            Why::Died(pid) => write!(
                f,
                "the barrier is broken: process {pid}, one of its parties, ended without \
                 reaching it; reset() makes it usable again"
            ),
            Why::TimedOut => f.write_str(
                "the barrier is broken: a party's wait timed out; reset() makes it usable again",
            ),
            Why::Aborted => f.write_str(
                "the barrier is broken: abort() was called; reset() makes it usable again",
            ),
            Why::Reset => f.write_str("the barrier was reset while this party waited"),
        }
    }
}

impl std::error::Error for BrokenBarrier {}

impl Barrier {
    /// A barrier for `parties` waits at a time (at least 1).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use multiproc::sync::Barrier;
    ///
    /// let pair = Barrier::new(2)?;
    /// assert_eq!(pair.parties(), 2);
    /// assert!(Barrier::new(0).is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Other`](crate::ErrorKind::Other) for 0 parties;
    /// [`ErrorKind::Io`](crate::ErrorKind::Io) if the shared page cannot be made.
    pub fn new(parties: usize) -> Result<Barrier> {
        let Some(parties) = u32::try_from(parties).ok().filter(|&p| p > 0) else {
            return Err(Error::other(format!(
                "a barrier has 1 to {} parties, not {parties}",
                u32::MAX
            )));
        };
        let region = Region::new("multiproc-barrier", SIZE)
            .map_err(|e| Error::io("cannot create a barrier's shared memory", e))?;
        region.word(PARTIES).store(parties, SeqCst);
        let page = Page::new(region)
            .map_err(|e| Error::io("cannot identify a barrier's shared memory", e))?;
        Ok(Barrier(Arc::new(page)))
    }

    /// Waits until `parties` waits have been made (this one included); this wait's index,
    /// 0 to `parties - 1` in order of arrival.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let pair = multiproc::sync::Barrier::new(2)?;
    /// let other = pair.clone();
    /// let thread = std::thread::spawn(move || other.wait());
    /// let mine = pair.wait().expect("no party died");
    /// let theirs = thread.join().unwrap().expect("no party died");
    /// assert_eq!(mine + theirs, 1); // one arrived first (0), the other second (1)
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`BrokenBarrier`] if it is broken, or breaks while this party waits.
    pub fn wait(&self) -> std::result::Result<usize, BrokenBarrier> {
        self.wait_within(Wait::Forever)
    }

    /// As [`wait`](Barrier::wait), at most `timeout`; a wait that times out breaks the
    /// barrier, for every party (as Python's does).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    ///
    /// let two = multiproc::sync::Barrier::new(2)?;
    /// assert!(two.wait_timeout(Duration::from_millis(10)).is_err()); // alone: times out
    /// assert!(two.is_broken()); // for every party, until a reset
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`BrokenBarrier`], [`timed_out`](BrokenBarrier::timed_out) if this wait did.
    pub fn wait_timeout(&self, timeout: Duration) -> std::result::Result<usize, BrokenBarrier> {
        self.wait_within(Wait::timeout(timeout))
    }

    /// How many parties it waits for.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// assert_eq!(multiproc::sync::Barrier::new(4)?.parties(), 4);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn parties(&self) -> usize {
        self.0.word(PARTIES).load(SeqCst) as usize
    }

    /// How many parties wait in this round now (a snapshot).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// assert_eq!(multiproc::sync::Barrier::new(4)?.n_waiting(), 0);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn n_waiting(&self) -> usize {
        self.0.word(COUNT).load(SeqCst) as usize
    }

    /// Whether it is broken.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let start = multiproc::sync::Barrier::new(2)?;
    /// assert!(!start.is_broken());
    /// start.abort();
    /// assert!(start.is_broken());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn is_broken(&self) -> bool {
        self.0.word(BROKEN).load(SeqCst) != 0
    }

    /// Breaks it: the parties waiting now and every wait after this fail, until a
    /// [`reset`](Barrier::reset).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let start = multiproc::sync::Barrier::new(2)?;
    /// start.abort();
    /// assert!(start.wait().is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn abort(&self) {
        let _ = self.locked();
        mark_broken(&self.0, Why::Aborted);
        unlock_and_wake(&self.0);
    }

    /// Makes it as new: not broken, no party waiting (those waiting now get a
    /// [`BrokenBarrier`]), and forgets the members that have ended, so that a replacement
    /// process can take a dead one's place.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let start = multiproc::sync::Barrier::new(2)?;
    /// start.abort();
    /// start.reset();
    /// assert!(!start.is_broken());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn reset(&self) {
        let _ = self.locked();
        let region = &self.0;
        let next = region.word(GEN).load(SeqCst).wrapping_add(1);
        region.word(RESET_AT).store(next, SeqCst);
        region.word(COUNT).store(0, SeqCst);
        region.word(BROKEN).store(0, SeqCst);
        region.word(BROKEN_PID).store(0, SeqCst);
        for i in 0..MAX_MEMBERS {
            let who = member(&self.0, i);
            let identity = who.load(SeqCst);
            if identity != 0 && !sys::identity_alive(identity) {
                who.store(0, SeqCst);
            }
        }
        region.word(GEN).store(next, SeqCst);
        unlock_and_wake(&self.0);
    }

    /// Takes the page's lock; a holder that died mid-change leaves the state untrustworthy,
    /// so that breaks the barrier.
    fn locked(&self) -> std::result::Result<(), u32> {
        let taken = super::lock_forever(&self.0);
        if let Err(pid) = taken {
            mark_broken(&self.0, Why::Died(pid));
        }
        taken
    }

    /// Why it is broken, if it is.
    fn broken(&self) -> Option<BrokenBarrier> {
        let why = match self.0.word(BROKEN).load(SeqCst) {
            0 => return None,
            1 => Why::Died(self.0.word(BROKEN_PID).load(SeqCst)),
            2 => Why::TimedOut,
            _ => Why::Aborted,
        };
        Some(BrokenBarrier { why })
    }

    /// This process's member slot, taking a free one if it has none (under the lock);
    /// `None` when every slot is taken.
    fn register(&self) -> Option<usize> {
        let me = sys::process_identity();
        let mut free = None;
        for i in 0..MAX_MEMBERS {
            match member(&self.0, i).load(SeqCst) {
                who if who == me => return Some(i),
                0 if free.is_none() => free = Some(i),
                _ => {}
            }
        }
        let i = free?;
        arrived(&self.0, i).store(0, SeqCst);
        member(&self.0, i).store(me, SeqCst);
        Some(i)
    }

    /// A member other than this process that has ended without arriving in generation `round`.
    fn dead_member(&self, round: u32) -> Option<u32> {
        let me = sys::process_identity();
        (0..MAX_MEMBERS).find_map(|i| {
            let who = member(&self.0, i).load(SeqCst);
            (who != 0
                && who != me
                && arrived(&self.0, i).load(SeqCst) != u64::from(round) + 1
                && !sys::identity_alive(who))
            .then_some((who >> 32) as u32)
        })
    }

    fn wait_within(&self, wait: Wait) -> std::result::Result<usize, BrokenBarrier> {
        let region = &self.0;
        let _ = self.locked();
        if let Some(broken) = self.broken() {
            unlock_and_wake(&self.0);
            return Err(broken);
        }
        let round = region.word(GEN).load(SeqCst);
        if let Some(i) = self.register() {
            arrived(&self.0, i).store(u64::from(round) + 1, SeqCst);
        }
        let index = region.word(COUNT).fetch_add(1, SeqCst);
        if index + 1 >= region.word(PARTIES).load(SeqCst) {
            region.word(COUNT).store(0, SeqCst);
            region.word(GEN).store(round.wrapping_add(1), SeqCst);
            unlock_and_wake(&self.0);
            return Ok(index as usize);
        }
        super::unlock(region);
        loop {
            // Read before looking: a change after this ends the sleep below at once.
            let seen = region.word(EPOCH).load(SeqCst);
            if region.word(GEN).load(SeqCst) != round {
                return self.ended(round, index);
            }
            if let Some(broken) = self.broken() {
                return Err(broken);
            }
            let why = match self.dead_member(round) {
                Some(pid) => Some(Why::Died(pid)),
                None if wait.is_over() => Some(Why::TimedOut),
                None => None,
            };
            if let Some(why) = why {
                let _ = self.locked();
                // Unless the round ended meanwhile.
                if region.word(GEN).load(SeqCst) == round {
                    mark_broken(&self.0, why);
                }
                unlock_and_wake(&self.0);
                continue;
            }
            region.word(SLEEPERS).fetch_add(1, SeqCst);
            sys::futex_wait(region.word(EPOCH), seen, wait.at_most(RECHECK));
            region.word(SLEEPERS).fetch_sub(1, SeqCst);
        }
    }

    /// Generation `round` has ended: passed, or reset.
    fn ended(&self, round: u32, index: u32) -> std::result::Result<usize, BrokenBarrier> {
        if self.0.word(RESET_AT).load(SeqCst) == round.wrapping_add(1) {
            Err(BrokenBarrier { why: Why::Reset })
        } else {
            Ok(index as usize)
        }
    }
}

impl fmt::Debug for Barrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Barrier")
            .field("parties", &self.parties())
            .field("n_waiting", &self.n_waiting())
            .field("broken", &self.is_broken())
            .finish()
    }
}

impl Serialize for Barrier {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        super::send_page(&self.0, "Barrier", s)
    }
}

impl<'de> Deserialize<'de> for Barrier {
    /// Received, this process becomes one of the barrier's members.
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let region = super::receive_page(d, "Barrier", SIZE)?;
        if region.word(PARTIES).load(SeqCst) == 0 {
            return Err(codec::de_error(
                "a shared Barrier's region has no parties (not a barrier?)".to_string(),
            ));
        }
        let page = Page::new(region).map_err(|e| {
            codec::de_error(format!("cannot identify a shared Barrier's memory: {e}"))
        })?;
        let barrier = Barrier(Arc::new(page));
        let _ = barrier.locked();
        barrier.register();
        unlock_and_wake(&barrier.0);
        Ok(barrier)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parties_pass_together_and_a_timeout_breaks_it_until_reset() {
        assert!(Barrier::new(0).is_err());
        let one = Barrier::new(1).unwrap();
        assert_eq!(one.wait(), Ok(0));
        assert_eq!(one.wait(), Ok(0), "ready for the next round");
        let three = Barrier::new(3).unwrap();
        let others: Vec<_> = (0..2)
            .map(|_| {
                let b = three.clone();
                std::thread::spawn(move || b.wait_timeout(Duration::from_secs(10)))
            })
            .collect();
        let mine = three.wait_timeout(Duration::from_secs(10)).unwrap();
        let mut indexes: Vec<usize> = others
            .into_iter()
            .map(|t| t.join().unwrap().unwrap())
            .collect();
        indexes.push(mine);
        indexes.sort_unstable();
        assert_eq!(indexes, [0, 1, 2]);
        let broken = three.wait_timeout(Duration::from_millis(20)).unwrap_err();
        assert!(broken.timed_out(), "{broken}");
        assert!(three.is_broken());
        assert!(three.wait().unwrap_err().timed_out(), "stays broken");
        three.reset();
        assert!(!three.is_broken());
        assert_eq!(three.n_waiting(), 0);
    }

    #[test]
    fn a_member_that_ended_without_arriving_breaks_it() {
        let two = Barrier::new(2).unwrap();
        // A member that no longer exists (pid above any pid_max), never arrived.
        member(&two.0, 0).store(0x7fff_fff0_u64 << 32, SeqCst);
        let broken = two.wait_timeout(Duration::from_secs(10)).unwrap_err();
        assert_eq!(broken.dead_party(), Some(0x7fff_fff0));
        assert!(
            broken.to_string().contains("ended without reaching it"),
            "{broken}"
        );
        two.reset();
        assert_eq!(
            member(&two.0, 0).load(SeqCst),
            0,
            "the dead member is forgotten"
        );
    }
}
