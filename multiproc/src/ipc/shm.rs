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
        let file = std::fs::File::from(sys::memfd(name, false)?);
        file.set_len(len as u64)?;
        Region::map(file.into(), len)
    }

    /// A new region holding a copy of `bytes`: written with `pwrite` (the kernel allocates
    /// the pages in bulk, where copying into a fresh mapping would fault on each one), then
    /// mapped with its pages in place.
    pub(crate) fn with_bytes(name: &str, bytes: &[u8]) -> io::Result<Region> {
        use std::os::unix::fs::FileExt;
        let file = std::fs::File::from(sys::memfd(name, false)?);
        file.write_all_at(bytes, 0)?;
        Region::map(file.into(), bytes.len())
    }

    /// Maps a region received from another process.
    pub(crate) fn from_fd(fd: OwnedFd) -> io::Result<Region> {
        let len = std::fs::File::from(fd.try_clone()?).metadata()?.len();
        Region::map(fd, usize::try_from(len).map_err(io::Error::other)?)
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
