//! Memfds that large messages reuse.
//!
//! A message over [`INLINE_MAX`](super::frame::INLINE_MAX) travels in a memfd. Written to a
//! fresh memfd, most of its cost is the kernel allocating (and later freeing) a page of the
//! file per 4 KiB; a copy into pages that are already there is a fraction of that. So a
//! sending process keeps a few *spares*: memfds it has mapped, whose pages stay allocated
//! from one message to the next.
//!
//! A spare's first byte says whether a message in it is on its way: the sender sets it
//! right before the send ([`Spare::sending`]), and the receiver, which maps the spare (its
//! size is sealed, so that it cannot shrink under the mapping) and decodes the message in
//! place, clears it once the message is decoded ([`Received`]'s drop). The sender reuses
//! only a cleared spare, and writes nothing else of a spare while it is on its way. One
//! that never comes back (its receiver was killed, or the message was never read) stays
//! set; it is dropped from the cache once [`LOST_AFTER`] later messages went out without
//! it, and the memory goes with the last descriptor of it.
//!
//! At most [`KEEP`] spares of at most [`SPARE_MAX`] bytes are kept per process; a message
//! larger than that, or one sent while every spare is still on its way, takes a fresh sealed
//! memfd. A forked child drops its parent's spares before it uses any: both would write the
//! same memory.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, PoisonError};

use crate::sys;

/// The bytes before a spare's message: its state byte, and a cache line's room.
pub(super) const HEADER: usize = 64;
/// The largest message that goes in a spare.
pub(crate) const SPARE_MAX: usize = 4 << 20;
/// Spares kept per process.
const KEEP: usize = 4;
/// Large messages sent after a spare that did not come back, past which it counts as lost.
const LOST_AFTER: u64 = 4096;

/// The state byte of a spare whose message is on its way.
const SENDING: u8 = 1;

/// A memfd of `HEADER + SPARE_MAX` bytes, its size sealed, mapped writable in this process;
/// only the pages that messages have touched take memory.
pub(crate) struct Spare {
    fd: OwnedFd,
    map: sys::Mapping,
}

impl Spare {
    fn new() -> io::Result<Spare> {
        let file = std::fs::File::from(sys::memfd("multiproc-message", true)?);
        file.set_len((HEADER + SPARE_MAX) as u64)?;
        let fd = OwnedFd::from(file);
        sys::seal_size(fd.as_fd())?;
        let map = sys::Mapping::new(fd.as_fd(), HEADER + SPARE_MAX, true, false)?;
        Ok(Spare { fd, map })
    }

    fn state(&self) -> &AtomicU8 {
        // SAFETY: the mapping's first byte, live as long as &self; it is only ever accessed
        // atomically, here and by receivers (`Received`).
        unsafe { AtomicU8::from_ptr(self.map.as_ptr()) }
    }

    pub(super) fn is_free(&self) -> bool {
        self.state().load(Ordering::Acquire) == 0
    }

    /// Copies `bytes` into the message area at `at`.
    ///
    /// # Panics
    /// If they do not fit in [`SPARE_MAX`] (callers check).
    pub(crate) fn write(&mut self, at: usize, bytes: &[u8]) {
        assert!(
            at.checked_add(bytes.len())
                .is_some_and(|end| end <= SPARE_MAX),
            "a spare holds {SPARE_MAX} bytes"
        );
        // SAFETY: in bounds (checked above) of a mapping that lives as long as &mut self. The
        // spare is free, so no receiver reads these bytes now; a raw copy, no reference into
        // memory that another process could write.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.map.as_ptr().add(HEADER + at),
                bytes.len(),
            );
        }
    }

    /// The first `len` bytes of the message area, for a message that outgrew the spare to be
    /// copied elsewhere.
    pub(crate) fn written(&self, len: usize) -> &[u8] {
        assert!(len <= SPARE_MAX, "a spare holds {SPARE_MAX} bytes");
        // SAFETY: in bounds of a mapping that lives as long as &self. The spare is free: only
        // this process writes its message area, and not while this borrow lives (`write`
        // takes &mut self).
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(HEADER), len) }
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Marks the spare as on its way, right before its datagram is sent.
    pub(crate) fn sending(&self) {
        self.state().store(SENDING, Ordering::Release);
    }

    /// Marks it free again: the send failed, nobody will release it.
    pub(crate) fn not_sent(&self) {
        self.state().store(0, Ordering::Release);
    }
}

/// A process's spares.
pub(super) struct Cache {
    /// The process the spares belong to (a forked child must not share them).
    pid: u32,
    /// Large messages sent so far (in spares or not).
    large: u64,
    /// Each spare with the count of large messages when it was put back, oldest first.
    spares: Vec<(Spare, u64)>,
}

static CACHE: Mutex<Cache> = Mutex::new(Cache::new());

impl Cache {
    pub(super) const fn new() -> Cache {
        Cache {
            pid: 0,
            large: 0,
            spares: Vec::new(),
        }
    }

    /// A free spare for a large message: a cached one whose last message was received, or a
    /// new one while fewer than [`KEEP`] exist. `None` when every spare is on its way (or
    /// none could be made): the message takes a fresh memfd.
    pub(super) fn take(&mut self) -> Option<Spare> {
        let pid = std::process::id();
        if self.pid != pid {
            // A new process (or a forked child): the parent's spares are not ours to write.
            // Their mappings are this process's copies; dropping them unmaps and closes those.
            self.spares.clear();
            self.pid = pid;
        }
        self.large += 1;
        let now = self.large;
        self.spares
            .retain(|(s, at)| s.is_free() || now - at < LOST_AFTER);
        if let Some(at) = self.spares.iter().position(|(s, _)| s.is_free()) {
            return Some(self.spares.remove(at).0);
        }
        if self.spares.len() >= KEEP {
            return None;
        }
        Spare::new().ok()
    }

    /// Puts a spare back for later messages (a free one, or one on its way).
    pub(super) fn give_back(&mut self, spare: Spare) {
        if self.spares.len() < KEEP && self.pid == std::process::id() {
            self.spares.push((spare, self.large));
        }
    }
}

fn lock() -> std::sync::MutexGuard<'static, Cache> {
    CACHE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// [`Cache::take`] from this process's spares.
pub(crate) fn take() -> Option<Spare> {
    lock().take()
}

/// [`Cache::give_back`] to this process's spares.
pub(crate) fn give_back(spare: Spare) {
    lock().give_back(spare);
}

/// A message received in a spare: its sender's memfd, mapped here, until the message is
/// decoded; then the spare is free again for its sender.
pub(crate) struct Received {
    map: sys::Mapping,
    len: usize,
}

impl Received {
    /// Maps a received spare holding a message of `len` bytes. The memfd must be sealed
    /// against shrinking (every spare is), or its sender could fault this process (SIGBUS).
    pub(crate) fn map(file: &std::fs::File, len: usize) -> io::Result<Received> {
        let malformed = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
        if !sys::is_size_sealed(file.as_fd()) {
            return Err(malformed(
                "a received message's memory is not sealed against shrinking (not from \
                 multiproc?): reading it could crash this process",
            ));
        }
        if len > SPARE_MAX || file.metadata()?.len() < (HEADER + len) as u64 {
            return Err(malformed(
                "a received message is longer than the memory it came in",
            ));
        }
        let map = sys::Mapping::new(file.as_fd(), HEADER + len, true, true)?;
        Ok(Received { map, len })
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        // SAFETY: `HEADER + len` bytes are mapped (checked against the file's size, which its
        // seals fix) until `self` drops. The sender writes the message area only once the
        // state byte is cleared, which happens in `drop`, after every borrow of `self`.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(HEADER), self.len) }
    }
}

impl Drop for Received {
    fn drop(&mut self) {
        // SAFETY: the mapping's first byte, live until the end of this call; accessed only
        // atomically, as the sender's `Spare::state` does.
        let state = unsafe { AtomicU8::from_ptr(self.map.as_ptr()) };
        state.store(0, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// The memfd a spare is (descriptor numbers are reused, inodes are not while open).
    fn inode(spare: &Spare) -> u64 {
        let file = std::fs::File::from(spare.fd().try_clone_to_owned().unwrap());
        file.metadata().unwrap().ino()
    }

    /// What a receiver of `spare`'s message of `len` bytes holds until it has decoded it.
    fn receive(spare: &Spare, len: usize) -> Received {
        let file = std::fs::File::from(spare.fd().try_clone_to_owned().unwrap());
        Received::map(&file, len).unwrap()
    }

    #[test]
    fn a_spare_comes_back_once_its_message_is_decoded() {
        let mut cache = Cache::new();
        let mut first = cache.take().unwrap();
        let first_inode = inode(&first);
        first.write(0, b"hello");
        first.sending();
        let received = receive(&first, 5);
        cache.give_back(first);
        // On its way: the next message takes another spare.
        let mut second = cache.take().unwrap();
        assert_ne!(inode(&second), first_inode);
        second.write(0, b"other");
        assert_eq!(
            received.bytes(),
            b"hello",
            "a spare on its way is not written"
        );
        drop(received);
        cache.give_back(second);
        let again = cache.take().unwrap();
        assert_eq!(inode(&again), first_inode, "the oldest free spare first");
    }

    #[test]
    fn at_most_keep_spares_then_fresh_memfds_and_lost_spares_are_dropped() {
        let mut cache = Cache::new();
        for _ in 0..KEEP {
            let spare = cache.take().unwrap();
            spare.sending();
            cache.give_back(spare);
        }
        // Every spare is on its way (its receivers killed, say): none to take, none made.
        assert!(cache.take().is_none());
        assert_eq!(cache.spares.len(), KEEP);
        for _ in 0..LOST_AFTER - KEEP as u64 - 1 {
            assert!(cache.take().is_none());
        }
        // LOST_AFTER large messages went out since the oldest was put back: it counts as
        // lost, and a new spare takes its place.
        assert!(cache.take().is_some());
        assert_eq!(cache.spares.len(), KEEP - 1);
    }

    #[test]
    fn a_spare_whose_send_failed_is_free_again() {
        let mut cache = Cache::new();
        let spare = cache.take().unwrap();
        let taken = inode(&spare);
        spare.sending();
        spare.not_sent();
        cache.give_back(spare);
        assert_eq!(inode(&cache.take().unwrap()), taken);
    }

    #[test]
    fn a_forked_child_does_not_reuse_its_parents_spares() {
        let mut cache = Cache::new();
        let spare = cache.take().unwrap();
        let parents = inode(&spare);
        cache.give_back(spare);
        cache.pid = cache.pid.wrapping_add(1); // as in a child forked from this process
        let spare = cache.take().unwrap();
        assert_ne!(inode(&spare), parents);
        assert_eq!(cache.spares.len(), 0, "the parent's spares were dropped");
    }

    #[test]
    fn a_receiver_refuses_memory_that_could_shrink_or_is_too_short() {
        let plain = std::fs::File::from(sys::memfd("t", false).unwrap());
        plain.set_len(1 << 20).unwrap();
        let e = Received::map(&plain, 1000).err().unwrap();
        assert!(
            e.to_string().contains("not sealed against shrinking"),
            "{e}"
        );
        let spare = Spare::new().unwrap();
        let file = std::fs::File::from(spare.fd().try_clone_to_owned().unwrap());
        let e = Received::map(&file, SPARE_MAX + 1).err().unwrap();
        assert!(e.to_string().contains("longer than the memory"), "{e}");
    }
}
