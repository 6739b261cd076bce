//! A queue's items in memory that every process of the queue shares, where no kill of any of
//! them at any point loses a place, blocks the others for good, or loses an item that was put.
//!
//! One memfd holds it all. Its first page is the header (mapped: the lock, the counters, the
//! words that waiters sleep on); the rest is a ring of records, `[length u32][descriptors u32]
//! [tag u64][bytes, padded to 8]`, read and written with `pread`/`pwrite` and never mapped, so
//! the ring can be 1 TiB of address-free, sparse file: a page costs memory once written, and
//! consumers give the pages they have passed back to the system. Memory is the only bound.
//!
//! Every change happens under one lock whose word names its holder (pid and start time), so a
//! waiter that finds the holder dead takes the lock over. Each change is one commit of a few
//! words through a redo journal (written, then marked, then applied), and the one who takes a
//! dead holder's lock over replays a marked journal: a holder killed at any instruction leaves
//! either nothing or all of its change. A record is written past the tail before the commit
//! moves the tail over it, so a producer killed mid-write leaves nothing visible.
//!
//! Descriptors cannot live in memory: an item that carries some sends them in a datagram on
//! the queue's socket pair, tagged with a number its record holds, before it commits. The
//! consumer that takes the record takes that datagram, dropping older ones (left by a producer
//! killed before its commit, or a consumer killed after its own).
//!
//! Waits are futexes on sequence words of the header, in slices of [`RECHECK`]: a process
//! killed between a change and its wake-up delays the others by at most a slice. The
//! doorbell (an eventfd) is for `Select` and async waits: readable while items may be waiting.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::SeqCst};
use std::time::Duration;

use super::frame::{Frame, WireError};
use super::shm::Region;
use crate::sys::{self, Wait};

/// The header: one page at the start of the file.
const HEADER: usize = 4096;
/// The ring's size in bytes, after the header: the most a queue holds at once.
const SIZE: u64 = 1 << 40;
const RECORD: usize = 16;
/// Consumers give pages back once this much of the ring lies behind the head.
const PUNCH_EVERY: u64 = 256 << 10;
/// The longest a wait sleeps before it looks again at what no wake-up reports (a lock holder
/// that died, a producer killed before its wake-up).
pub(crate) const RECHECK: Duration = Duration::from_millis(100);
/// The first word of every queue's header: the layout's version.
const MAGIC: u32 = 0x6d70_7131;

// 32-bit words of the header, by index in 4-byte units.
const LOCK_SEQ: usize = 2;
const LOCK_WAITERS: usize = 3;
const PUT_SEQ: usize = 4;
const GET_WAITERS: usize = 5;
const GET_SEQ: usize = 6;
const PUT_WAITERS: usize = 7;
const CLOSED: usize = 8;
const BELL: usize = 9;
const DONE_SEQ: usize = 10;
const JOIN_WAITERS: usize = 11;
const MAGIC_WORD: usize = 12;
const JOINABLE: usize = 13;

// 64-bit words of the header, by index in 8-byte units (after the 32-bit ones).
const OWNER: usize = 0;
const RING_SIZE: usize = 7;
const HEAD: usize = 8;
const TAIL: usize = 9;
const PUTS: usize = 10;
const GETS: usize = 11;
const DONE: usize = 12;
const FD_SEQ: usize = 13;
const PUNCHED: usize = 14;
const MAXSIZE: usize = 15;
const JOURNAL_LEN: usize = 16;
/// `(word, value)` pairs from here on.
const JOURNAL: usize = 17;
const JOURNAL_MAX: usize = 2;
/// The words a journal may write.
const JOURNALED: [usize; 4] = [HEAD, TAIL, PUTS, GETS];

/// One queue's shared store, as one process holds it.
pub(crate) struct Ring {
    /// The memfd; its first page mapped.
    header: Region,
    bell: OwnedFd,
    /// The socket pair that descriptors travel on.
    tx: OwnedFd,
    rx: OwnedFd,
    /// The ring's size, as the header said when this handle was made.
    size: u64,
}

/// The lock, held: unlocks on drop.
struct Locked<'a>(&'a Ring);

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        let ring = self.0;
        ring.word64(OWNER).store(0, SeqCst);
        ring.bump(LOCK_SEQ, LOCK_WAITERS);
    }
}

impl Ring {
    /// A new, empty store; `maxsize` 0 for no bound.
    pub(crate) fn new(maxsize: u64, joinable: bool) -> io::Result<Ring> {
        Ring::with_size(maxsize, joinable, SIZE)
    }

    /// A new store whose ring holds `size` bytes (a multiple of the page size).
    pub(crate) fn with_size(maxsize: u64, joinable: bool, size: u64) -> io::Result<Ring> {
        let header = Region::with_file_len("multiproc-queue", HEADER, HEADER as u64 + size)?;
        let (tx, rx) = sys::socketpair()?;
        let ring = Ring {
            header,
            bell: sys::eventfd(false)?,
            tx,
            rx,
            size,
        };
        ring.word64(RING_SIZE).store(size, SeqCst);
        ring.word64(MAXSIZE).store(maxsize, SeqCst);
        ring.word(JOINABLE).store(u32::from(joinable), SeqCst);
        ring.word(MAGIC_WORD).store(MAGIC, SeqCst);
        Ok(ring)
    }

    /// The store behind descriptors received from another process: checked, never trusted
    /// with this process's memory safety.
    pub(crate) fn from_fds(
        data: OwnedFd,
        bell: OwnedFd,
        tx: OwnedFd,
        rx: OwnedFd,
    ) -> io::Result<Ring> {
        let header = Region::from_fd_prefix(data, HEADER, 2 * HEADER as u64)?;
        let size = header.word64(RING_SIZE).load(SeqCst);
        let file_len = header.file_len()?;
        if header.word(MAGIC_WORD).load(SeqCst) != MAGIC
            || size < HEADER as u64
            || file_len < HEADER as u64 + size
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a received queue's shared memory is not a queue of this multiproc version",
            ));
        }
        Ok(Ring {
            header,
            bell,
            tx,
            rx,
            size,
        })
    }

    /// The descriptors that make this store travel, in [`from_fds`](Ring::from_fds)'s order.
    pub(crate) fn fds(&self) -> [BorrowedFd<'_>; 4] {
        [
            self.header.fd(),
            self.bell.as_fd(),
            self.tx.as_fd(),
            self.rx.as_fd(),
        ]
    }

    pub(crate) fn maxsize(&self) -> Option<u64> {
        Some(self.word64(MAXSIZE).load(SeqCst)).filter(|&n| n != 0)
    }

    pub(crate) fn is_joinable(&self) -> bool {
        self.word(JOINABLE).load(SeqCst) != 0
    }

    fn word(&self, index: usize) -> &AtomicU32 {
        self.header.word(index)
    }

    fn word64(&self, index: usize) -> &AtomicU64 {
        self.header.word64(index)
    }

    fn load(&self, index: usize) -> u64 {
        self.word64(index).load(SeqCst)
    }

    /// Items put and not yet taken, in every process.
    pub(crate) fn len(&self) -> u64 {
        self.load(PUTS).saturating_sub(self.load(GETS))
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.word(CLOSED).load(SeqCst) != 0
    }

    /// Puts one encoded item and its descriptors, waiting as `wait` says while the queue is
    /// full. [`WireError::WouldBlock`] when full and the wait is over; `Closed` after
    /// [`close`](Ring::close).
    pub(crate) fn put(&self, bytes: &[u8], fds: &[OwnedFd], wait: Wait) -> Result<(), WireError> {
        let len = u32::try_from(bytes.len()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "an item of {} bytes is more than a queue item can hold (4 GiB)",
                    bytes.len()
                ),
            )
        })?;
        let need = (RECORD + pad8(bytes.len())) as u64;
        if need > self.size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "an item of {} bytes is more than the queue can ever hold ({} bytes)",
                    bytes.len(),
                    self.size
                ),
            )
            .into());
        }
        loop {
            let seen = self.word(GET_SEQ).load(SeqCst);
            let mut socket_full = false;
            {
                let locked = self.lock();
                if self.is_closed() {
                    return Err(WireError::Closed);
                }
                let (head, tail) = (self.load(HEAD), self.load(TAIL));
                let (puts, gets) = (self.load(PUTS), self.load(GETS));
                let room = self
                    .maxsize()
                    .is_none_or(|max| puts.saturating_sub(gets) < max)
                    && tail.saturating_sub(head) + need <= self.size;
                if room {
                    let tag = if fds.is_empty() {
                        0
                    } else {
                        // Counted first: a tag is never used twice, even by a producer killed
                        // right after sending.
                        self.word64(FD_SEQ).fetch_add(1, SeqCst) + 1
                    };
                    self.write_record(tail, len, fds.len() as u32, tag, bytes)?;
                    if !fds.is_empty() {
                        let raw: Vec<RawFd> = fds.iter().map(|fd| fd.as_raw_fd()).collect();
                        match sys::sendmsg(self.tx.as_fd(), &tag.to_le_bytes(), &[], &raw) {
                            Ok(()) => {}
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => socket_full = true,
                            Err(e) => return Err(WireError::Io(e)),
                        }
                    }
                    if !socket_full {
                        self.commit(&locked, &[(TAIL, tail + need), (PUTS, puts + 1)]);
                        drop(locked);
                        self.ring_bell();
                        self.bump(PUT_SEQ, GET_WAITERS);
                        return Ok(());
                    }
                }
            }
            if wait.is_over() {
                return Err(WireError::WouldBlock);
            }
            if socket_full {
                // Items that carry descriptors wait for room in the kernel's socket buffer.
                sys::poll_one(self.tx.as_fd(), sys::POLLOUT, wait.at_most(RECHECK))?;
            } else {
                self.sleep(GET_SEQ, PUT_WAITERS, seen, wait);
            }
        }
    }

    /// Takes the oldest item, waiting as `wait` says while the queue is empty.
    /// [`WireError::WouldBlock`] when empty and the wait is over; `Closed` once closed and
    /// empty.
    pub(crate) fn get(&self, wait: Wait) -> Result<Frame, WireError> {
        loop {
            let seen = self.word(PUT_SEQ).load(SeqCst);
            {
                let locked = self.lock();
                let (head, tail) = (self.load(HEAD), self.load(TAIL));
                if head != tail {
                    let taken = self.take_record(&locked, head, tail);
                    drop(locked);
                    self.bump(GET_SEQ, PUT_WAITERS);
                    return taken;
                }
                if self.is_closed() {
                    return Err(WireError::Closed);
                }
            }
            if wait.is_over() {
                return Err(WireError::WouldBlock);
            }
            self.sleep(PUT_SEQ, GET_WAITERS, seen, wait);
        }
    }

    /// Reads the record at `head` and commits its removal; then its descriptors. Past the
    /// commit the item is this process's: killed after it, only this item is lost.
    fn take_record(&self, locked: &Locked<'_>, head: u64, tail: u64) -> Result<Frame, WireError> {
        let avail = tail - head;
        let mut buf = vec![0u8; avail.min(HEADER as u64) as usize];
        self.read_ring(head, &mut buf)?;
        let corrupt = || {
            WireError::Io(io::Error::new(
                io::ErrorKind::InvalidData,
                "a queue's shared memory holds a malformed record (was it written to by \
                 something other than multiproc?)",
            ))
        };
        if buf.len() < RECORD {
            return Err(corrupt());
        }
        let len = u32::from_le_bytes(buf[0..4].try_into().expect("4 bytes")) as usize;
        let nfds = u32::from_le_bytes(buf[4..8].try_into().expect("4 bytes"));
        let tag = u64::from_le_bytes(buf[8..16].try_into().expect("8 bytes"));
        let size = (RECORD + pad8(len)) as u64;
        if size > avail {
            return Err(corrupt());
        }
        let bytes = if RECORD + len <= buf.len() {
            buf.truncate(RECORD + len);
            buf.drain(..RECORD);
            buf
        } else {
            let mut bytes = vec![0u8; len];
            let have = buf.len() - RECORD;
            bytes[..have].copy_from_slice(&buf[RECORD..]);
            self.read_ring(head + buf.len() as u64, &mut bytes[have..])?;
            bytes
        };
        let new_head = head + size;
        let gets = self.load(GETS);
        self.commit(locked, &[(HEAD, new_head), (GETS, gets + 1)]);
        let fds = if nfds == 0 {
            Vec::new()
        } else {
            self.take_fds(tag)?
        };
        self.give_back(new_head, tail);
        Ok(Frame::new(bytes, fds))
    }

    /// The descriptors of the record tagged `tag`: the oldest datagram with that tag, after
    /// dropping older ones that no record will claim.
    fn take_fds(&self, tag: u64) -> Result<Vec<OwnedFd>, WireError> {
        let mut buf = [0u8; 8];
        loop {
            let (n, fds) = match sys::recvmsg(self.rx.as_fd(), &mut buf, true) {
                Ok(got) => got,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Err(WireError::Io(io::Error::other(
                        "a queue item's descriptors are missing from the queue's socket",
                    )));
                }
                Err(e) => return Err(WireError::Io(e)),
            };
            let got = u64::from_le_bytes(buf);
            if n != 8 || got < tag {
                continue;
            }
            if got == tag {
                return Ok(fds);
            }
            return Err(WireError::Io(io::Error::other(
                "a queue item's descriptors are missing from the queue's socket",
            )));
        }
    }

    /// Gives the pages behind `head` back to the system, a block at a time. Where this
    /// stopped before is in the header, so a consumer killed here leaves the next to finish.
    /// Nothing at or after `tail - size` is touched: that is where the ring wraps onto the
    /// items still waiting.
    fn give_back(&self, head: u64, tail: u64) {
        let punched = self.load(PUNCHED);
        let upto = head & !(HEADER as u64 - 1);
        if upto < punched + PUNCH_EVERY {
            return;
        }
        let mut at = punched.max(tail.saturating_sub(self.size));
        while at < upto {
            let offset = at % self.size;
            let len = (upto - at).min(self.size - offset);
            // Only memory is at stake: a failure leaves the pages in place.
            let _ = sys::punch_hole(self.header.fd(), HEADER as u64 + offset, len);
            at += len;
        }
        self.word64(PUNCHED).store(upto, SeqCst);
    }

    fn write_record(&self, at: u64, len: u32, nfds: u32, tag: u64, bytes: &[u8]) -> io::Result<()> {
        let mut head = [0u8; RECORD];
        head[0..4].copy_from_slice(&len.to_le_bytes());
        head[4..8].copy_from_slice(&nfds.to_le_bytes());
        head[8..16].copy_from_slice(&tag.to_le_bytes());
        if bytes.len() <= 4096 {
            // One system call for a small item.
            let mut record = [0u8; RECORD + 4096];
            record[..RECORD].copy_from_slice(&head);
            record[RECORD..RECORD + bytes.len()].copy_from_slice(bytes);
            return self.write_ring(at, &record[..RECORD + bytes.len()]);
        }
        self.write_ring(at, &head)?;
        self.write_ring(at + RECORD as u64, bytes)
    }

    /// Writes at logical offset `at` of the ring, wrapping at its end.
    fn write_ring(&self, at: u64, mut bytes: &[u8]) -> io::Result<()> {
        let mut at = at;
        while !bytes.is_empty() {
            let offset = at % self.size;
            let n = (bytes.len() as u64).min(self.size - offset) as usize;
            sys::write_at(self.header.fd(), &bytes[..n], HEADER as u64 + offset)?;
            bytes = &bytes[n..];
            at += n as u64;
        }
        Ok(())
    }

    /// Reads at logical offset `at` of the ring, wrapping at its end.
    fn read_ring(&self, at: u64, buf: &mut [u8]) -> io::Result<()> {
        let mut at = at;
        let mut done = 0;
        while done < buf.len() {
            let offset = at % self.size;
            let n = ((buf.len() - done) as u64).min(self.size - offset) as usize;
            let got = sys::read_at(
                self.header.fd(),
                &mut buf[done..done + n],
                HEADER as u64 + offset,
            )?;
            if got < n {
                return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
            }
            done += n;
            at += n as u64;
        }
        Ok(())
    }

    /// Closes the queue for every process: puts fail, gets drain what is left.
    pub(crate) fn close(&self) {
        self.word(CLOSED).store(1, SeqCst);
        for seq in [PUT_SEQ, GET_SEQ] {
            self.word(seq).fetch_add(1, SeqCst);
            sys::futex_wake_all(self.word(seq));
        }
        self.ring_bell();
    }

    /// Counts one task of a joinable queue done; `false` when none is unfinished.
    pub(crate) fn task_done(&self) -> bool {
        let done = self.word64(DONE);
        loop {
            let current = done.load(SeqCst);
            if current >= self.load(PUTS) {
                return false;
            }
            if done
                .compare_exchange(current, current + 1, SeqCst, SeqCst)
                .is_ok()
            {
                self.bump(DONE_SEQ, JOIN_WAITERS);
                return true;
            }
        }
    }

    /// Items put and not yet counted done.
    pub(crate) fn unfinished(&self) -> u64 {
        self.load(PUTS).saturating_sub(self.load(DONE))
    }

    /// Waits until every item put has been counted done; `false` when the wait ended first.
    pub(crate) fn join(&self, wait: Wait) -> bool {
        loop {
            let seen = self.word(DONE_SEQ).load(SeqCst);
            if self.unfinished() == 0 {
                return true;
            }
            if wait.is_over() {
                return false;
            }
            self.sleep(DONE_SEQ, JOIN_WAITERS, seen, wait);
        }
    }

    /// The descriptor that `Select` and async waits watch: readable while items may wait.
    pub(crate) fn bell(&self) -> BorrowedFd<'_> {
        self.bell.as_fd()
    }

    /// Whether a get would not wait now: an item is there, or the queue is closed.
    pub(crate) fn ready_now(&self) -> bool {
        self.load(HEAD) != self.load(TAIL) || self.is_closed()
    }

    /// Before a wait on [`bell`](Ring::bell): silences it, then rings it again if items are
    /// there. Returns whether they are (then there is no need to wait).
    pub(crate) fn arm(&self) -> bool {
        self.word(BELL).store(0, SeqCst);
        let _ = sys::eventfd_take(self.bell.as_fd());
        if self.ready_now() {
            self.ring_bell();
            return true;
        }
        false
    }

    fn ring_bell(&self) {
        if self.word(BELL).swap(1, SeqCst) == 0 {
            // Only a wake-up is at stake; the waits re-check.
            let _ = sys::eventfd_add(self.bell.as_fd(), 1);
        }
    }

    /// Takes the lock, taking it over from a holder that died.
    fn lock(&self) -> Locked<'_> {
        let me = sys::process_identity();
        let owner = self.word64(OWNER);
        let mut spins = 0;
        loop {
            let current = match owner.compare_exchange(0, me, SeqCst, SeqCst) {
                Ok(_) => return Locked(self),
                Err(current) => current,
            };
            if spins < 64 {
                spins += 1;
                std::hint::spin_loop();
                continue;
            }
            let seq = self.word(LOCK_SEQ);
            let waiters = self.word(LOCK_WAITERS);
            waiters.fetch_add(1, SeqCst);
            let seen = seq.load(SeqCst);
            let woken =
                owner.load(SeqCst) != current || sys::futex_wait(seq, seen, Wait::timeout(RECHECK));
            waiters.fetch_sub(1, SeqCst);
            if !woken
                && current != me
                && !sys::identity_alive(current)
                && owner.compare_exchange(current, me, SeqCst, SeqCst).is_ok()
            {
                let locked = Locked(self);
                self.replay();
                return locked;
            }
        }
    }

    /// Applies the words of one change: journaled first, so that a holder killed half-way
    /// leaves the change for the next holder to finish.
    fn commit(&self, _locked: &Locked<'_>, writes: &[(usize, u64)]) {
        debug_assert!(writes.len() <= JOURNAL_MAX);
        for (i, &(index, value)) in writes.iter().enumerate() {
            self.word64(JOURNAL + 2 * i).store(index as u64, SeqCst);
            self.word64(JOURNAL + 2 * i + 1).store(value, SeqCst);
        }
        self.word64(JOURNAL_LEN).store(writes.len() as u64, SeqCst);
        for &(index, value) in writes {
            self.word64(index).store(value, SeqCst);
        }
        self.word64(JOURNAL_LEN).store(0, SeqCst);
    }

    /// Finishes the change of a holder that died with its journal marked.
    fn replay(&self) {
        let len = self.load(JOURNAL_LEN) as usize;
        if len <= JOURNAL_MAX {
            for i in 0..len {
                let index = self.load(JOURNAL + 2 * i) as usize;
                let value = self.load(JOURNAL + 2 * i + 1);
                if JOURNALED.contains(&index) {
                    self.word64(index).store(value, SeqCst);
                }
            }
        }
        self.word64(JOURNAL_LEN).store(0, SeqCst);
    }

    /// Sleeps on `seq` while it still reads `seen`, at most a [`RECHECK`] slice of `wait`.
    fn sleep(&self, seq: usize, waiters: usize, seen: u32, wait: Wait) {
        let waiters = self.word(waiters);
        waiters.fetch_add(1, SeqCst);
        sys::futex_wait(self.word(seq), seen, wait.at_most(RECHECK));
        waiters.fetch_sub(1, SeqCst);
    }

    /// Moves `seq` on and wakes whoever sleeps on it.
    fn bump(&self, seq: usize, waiters: usize) {
        let seq = self.word(seq);
        seq.fetch_add(1, SeqCst);
        if self.word(waiters).load(SeqCst) != 0 {
            sys::futex_wake_all(seq);
        }
    }
}

fn pad8(n: usize) -> usize {
    n.div_ceil(8) * 8
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(i: usize) -> Vec<u8> {
        let len = (i * 7919) % 3000 + 1;
        (0..len).map(|b| (b + i) as u8).collect()
    }

    #[test]
    fn items_keep_their_bytes_across_the_wrap_and_the_pages_given_back() {
        let ring = Ring::with_size(0, false, 4 * HEADER as u64).unwrap();
        let mut next_get = 0;
        for i in 0..3000 {
            ring.put(&item(i), &[], Wait::Now).unwrap();
            // Up to three items wait at once, so the ring wraps with items in it.
            if i - next_get >= 3 {
                let got = ring.get(Wait::Now).unwrap();
                assert_eq!(&got.bytes[..], &item(next_get)[..], "item {next_get}");
                next_get += 1;
            }
        }
        while let Ok(got) = ring.get(Wait::Now) {
            assert_eq!(&got.bytes[..], &item(next_get)[..], "item {next_get}");
            next_get += 1;
        }
        assert_eq!(next_get, 3000);
        assert!(ring.load(PUNCHED) > 0, "no page was given back");
        assert_eq!(ring.len(), 0);
    }

    #[test]
    fn an_item_larger_than_the_ring_is_an_error_at_once() {
        let ring = Ring::with_size(0, false, HEADER as u64).unwrap();
        let e = ring.put(&[0; HEADER], &[], Wait::Forever).unwrap_err();
        let WireError::Io(e) = e else { panic!("{e:?}") };
        assert!(
            e.to_string().contains("more than the queue can ever hold"),
            "{e}"
        );
    }

    #[test]
    fn a_bound_holds_exactly_its_items_however_many() {
        let ring = Ring::with_size(20_000, false, SIZE).unwrap();
        for i in 0..20_000u32 {
            ring.put(&i.to_le_bytes(), &[], Wait::Now).unwrap();
        }
        assert!(matches!(
            ring.put(b"x", &[], Wait::Now),
            Err(WireError::WouldBlock)
        ));
        ring.get(Wait::Now).unwrap();
        ring.put(b"y", &[], Wait::Now).unwrap();
        assert_eq!(ring.len(), 20_000);
    }

    /// The identity of a process that has exited and been reaped.
    fn dead_identity() -> u64 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        child.wait().unwrap();
        (u64::from(child.id()) << 32) | 1
    }

    #[test]
    fn a_lock_whose_holder_died_is_taken_over_and_its_change_finished() {
        let ring = Ring::with_size(0, false, SIZE).unwrap();
        ring.put(b"first", &[], Wait::Now).unwrap();
        // A producer that died after its journal was marked, before it moved the tail.
        let tail = ring.load(TAIL);
        ring.write_record(tail, 6, 0, 0, b"second").unwrap();
        let need = (RECORD + pad8(6)) as u64;
        ring.word64(JOURNAL).store(TAIL as u64, SeqCst);
        ring.word64(JOURNAL + 1).store(tail + need, SeqCst);
        ring.word64(JOURNAL + 2).store(PUTS as u64, SeqCst);
        ring.word64(JOURNAL + 3).store(2, SeqCst);
        ring.word64(JOURNAL_LEN).store(2, SeqCst);
        ring.word64(OWNER).store(dead_identity(), SeqCst);

        let deadline = Wait::timeout(Duration::from_secs(10));
        assert_eq!(&ring.get(deadline).unwrap().bytes[..], b"first");
        assert_eq!(&ring.get(deadline).unwrap().bytes[..], b"second");
        assert_eq!(ring.len(), 0);
        assert_eq!(ring.load(OWNER), 0);
    }

    #[test]
    fn descriptors_follow_their_item_past_stale_ones() {
        let ring = Ring::with_size(0, false, SIZE).unwrap();
        // A datagram that a producer killed before its commit left behind.
        let (stale, _) = sys::pipe(false).unwrap();
        sys::sendmsg(
            ring.tx.as_fd(),
            &0u64.to_le_bytes(),
            &[],
            &[stale.as_raw_fd()],
        )
        .unwrap();
        ring.word64(FD_SEQ).store(1, SeqCst);
        let (read, write) = sys::pipe(false).unwrap();
        ring.put(b"with a pipe", &[read], Wait::Now).unwrap();
        let got = ring.get(Wait::Now).unwrap();
        assert_eq!(&got.bytes[..], b"with a pipe");
        assert_eq!(got.fds.len(), 1);
        let mut file = std::fs::File::from(write);
        std::io::Write::write_all(&mut file, b"z").unwrap();
        let mut byte = [0u8; 1];
        let mut reader = std::fs::File::from(got.fds.into_iter().next().unwrap());
        std::io::Read::read_exact(&mut reader, &mut byte).unwrap();
        assert_eq!(&byte, b"z");
    }
}
