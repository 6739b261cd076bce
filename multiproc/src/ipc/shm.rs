//! Shared state between processes: memory regions backed by a memfd, counters in them that a
//! process can wait on (futex), and counting semaphores (eventfd).

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU32, AtomicU64};

use super::frame::WireError;
use crate::sys::{self, Wait};

/// A shared, writable memory mapping of a memfd. Every process that maps the same memfd sees
/// the same bytes.
pub(crate) struct Region {
    fd: OwnedFd,
    /// `None` for an empty region (nothing to map).
    map: Option<sys::Mapping>,
}

/// Regions up to this size are mapped with their pages in place (`MAP_POPULATE`).
const POPULATE_MAX: usize = 64 << 20;

impl Region {
    /// A new zero-filled region of `len` bytes.
    pub(crate) fn new(name: &str, len: usize) -> io::Result<Region> {
        let file = std::fs::File::from(sys::memfd(name, true)?);
        file.set_len(len as u64)?;
        Region::sealed(file.into(), len)
    }

    /// A new region holding a copy of `bytes`: written with `pwrite` (the kernel allocates
    /// the pages in bulk, where copying into a fresh mapping would fault on each one), then
    /// mapped with its pages in place.
    pub(crate) fn with_bytes(name: &str, bytes: &[u8]) -> io::Result<Region> {
        use std::os::unix::fs::FileExt;
        let file = std::fs::File::from(sys::memfd(name, true)?);
        file.write_all_at(bytes, 0)?;
        Region::sealed(file.into(), bytes.len())
    }

    /// Seals a new region's size, so that no process it is sent to can shrink it under the
    /// mappings of the others (a read past the end of a memfd is SIGBUS), then maps it.
    fn sealed(fd: OwnedFd, len: usize) -> io::Result<Region> {
        sys::seal_size(fd.as_fd())?;
        Region::map(fd, len)
    }

    /// Maps a region received from another process, which must be at least `min_len` bytes
    /// and sealed against shrinking (as every region this crate makes is): a region that its
    /// sender could still shrink could fault this process on any read.
    pub(crate) fn from_fd(fd: OwnedFd, min_len: usize) -> io::Result<Region> {
        let len = Region::checked_len(&fd, min_len as u64)?;
        let len = usize::try_from(len).map_err(io::Error::other)?;
        Region::map(fd, len)
    }

    /// A new zero-filled file of `file_len` bytes of which only the first `len` are mapped:
    /// the header of a store whose other bytes are read and written with `pread`/`pwrite`
    /// (pages that were never written cost nothing).
    pub(crate) fn with_file_len(name: &str, len: usize, file_len: u64) -> io::Result<Region> {
        let file = std::fs::File::from(sys::memfd(name, true)?);
        file.set_len(file_len)?;
        let fd = OwnedFd::from(file);
        sys::seal_size(fd.as_fd())?;
        Region::map(fd, len)
    }

    /// Maps the first `len` bytes of a region made by [`with_file_len`](Region::with_file_len)
    /// in another process, checking it as [`from_fd`](Region::from_fd) does.
    pub(crate) fn from_fd_prefix(fd: OwnedFd, len: usize, file_len: u64) -> io::Result<Region> {
        Region::checked_len(&fd, file_len.max(len as u64))?;
        Region::map(fd, len)
    }

    /// The length of a received region's file, which must be sealed and at least `min_len`.
    fn checked_len(fd: &OwnedFd, min_len: u64) -> io::Result<u64> {
        if !sys::is_size_sealed(fd.as_fd()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a received shared region is not sealed against shrinking (not from \
                 multiproc?): mapping it could crash this process",
            ));
        }
        let len = std::fs::File::from(fd.try_clone()?).metadata()?.len();
        if len < min_len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "a received shared region holds {len} bytes, where {min_len} were expected"
                ),
            ));
        }
        Ok(len)
    }

    fn map(fd: OwnedFd, len: usize) -> io::Result<Region> {
        if len == 0 {
            return Ok(Region { fd, map: None });
        }
        // Pages mapped up front, up to a size where mapping what may never be read would cost
        // more than it saves.
        let map = sys::Mapping::new(fd.as_fd(), len, true, len <= POPULATE_MAX)?;
        Ok(Region { fd, map: Some(map) })
    }

    pub(crate) fn len(&self) -> usize {
        self.map.as_ref().map_or(0, sys::Mapping::len)
    }

    /// The size of the region's file (at least its mapped [`len`](Region::len)).
    pub(crate) fn file_len(&self) -> io::Result<u64> {
        Ok(std::fs::File::from(self.fd.try_clone()?).metadata()?.len())
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The start of the mapping (dangling for an empty region).
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.map
            .as_ref()
            .map_or(std::ptr::NonNull::dangling().as_ptr(), sys::Mapping::as_ptr)
    }

    /// The 64-bit word at `index` (in 8-byte words), shared with every process that maps the
    /// region.
    pub(crate) fn word64(&self, index: usize) -> &AtomicU64 {
        assert!(
            (index + 1) * 8 <= self.len(),
            "word {index} is outside the region"
        );
        // SAFETY: the mapping is page-aligned, so every 8-byte offset is aligned for a u64;
        // it lives as long as &self, and it is only ever accessed atomically.
        unsafe { AtomicU64::from_ptr(self.as_ptr().add(index * 8).cast()) }
    }

    /// The 32-bit word at `index` (in words), shared with every process that maps the region.
    pub(crate) fn word(&self, index: usize) -> &AtomicU32 {
        assert!(
            (index + 1) * 4 <= self.len(),
            "word {index} is outside the region"
        );
        // SAFETY: the mapping is page-aligned, so every 4-byte offset is aligned for a u32;
        // it lives as long as &self, and it is only ever accessed atomically.
        unsafe { AtomicU32::from_ptr(self.as_ptr().add(index * 4).cast()) }
    }
}

/// A counting semaphore shared between processes: an eventfd in semaphore mode. It counts the
/// free places of a bounded channel or queue.
pub(crate) struct Slots(OwnedFd);

impl Slots {
    pub(crate) fn new(count: usize) -> io::Result<Slots> {
        let slots = Slots(sys::eventfd(true)?);
        slots.add(count as u64)?;
        Ok(slots)
    }

    pub(crate) fn from_fd(fd: OwnedFd) -> Slots {
        Slots(fd)
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }

    /// Takes one place, waiting for one as `wait` says. While it waits, `watch` (a descriptor
    /// and the poll events that mean "give up") ends the wait with [`WireError::Closed`].
    pub(crate) fn acquire(
        &self,
        watch: Option<(BorrowedFd<'_>, i16)>,
        wait: Wait,
    ) -> Result<(), WireError> {
        loop {
            match sys::eventfd_take(self.fd()) {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(WireError::Io(e)),
            }
            let mut fds = [
                sys::pollfd(self.0.as_raw_fd(), sys::POLLIN),
                sys::pollfd(
                    watch.map_or(-1, |(fd, _)| fd.as_raw_fd()),
                    watch.map_or(0, |(_, events)| events),
                ),
            ];
            if !sys::poll(&mut fds, wait)? {
                return Err(WireError::WouldBlock);
            }
            if fds[1].revents != 0 {
                return Err(WireError::Closed);
            }
        }
    }

    /// Gives one place back.
    pub(crate) fn release(&self) {
        let _ = self.add(1);
    }

    fn add(&self, count: u64) -> io::Result<()> {
        if count == 0 {
            return Ok(());
        }
        sys::eventfd_add(self.fd(), count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_received_region_must_be_sealed_and_large_enough() {
        let region = Region::new("t", 64).unwrap();
        let copy = || region.fd().try_clone_to_owned().unwrap();
        assert_eq!(Region::from_fd(copy(), 64).unwrap().len(), 64);
        let short = Region::from_fd(copy(), 65).err().expect("too short");
        assert!(
            short.to_string().contains("holds 64 bytes, where 65"),
            "{short}"
        );
        let unsealed = std::fs::File::from(sys::memfd("t", false).unwrap());
        unsealed.set_len(64).unwrap();
        let refused = Region::from_fd(unsealed.into(), 0).err().expect("unsealed");
        assert!(refused.to_string().contains("not sealed"), "{refused}");
        // Writes stay allowed, through any mapping.
        region
            .word(0)
            .store(7, std::sync::atomic::Ordering::Release);
        let other = Region::from_fd(copy(), 4).unwrap();
        assert_eq!(other.word(0).load(std::sync::atomic::Ordering::Acquire), 7);
    }
}
