//! Shared state between processes: memory regions backed by a memfd, counters in them that a
//! process can wait on (futex), and counting semaphores (eventfd).

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::AtomicU32;

use crate::wire::{self, Wait, WireError};

/// A shared, writable memory mapping of a memfd. Every process that maps the same memfd sees
/// the same bytes.
pub(crate) struct Region {
    fd: OwnedFd,
    ptr: Option<NonNull<u8>>,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by the Region; access to its contents goes
// through atomics or through shared slices of memory nobody writes after creation.
unsafe impl Send for Region {}
// SAFETY: as above.
unsafe impl Sync for Region {}

/// Regions up to this size are mapped with their pages in place (`MAP_POPULATE`).
const POPULATE_MAX: usize = 64 << 20;

impl Region {
    /// A new zero-filled region of `len` bytes.
    pub(crate) fn new(name: &str, len: usize) -> io::Result<Region> {
        let fd = wire::memfd(name)?;
        let size = libc::off_t::try_from(len).map_err(io::Error::other)?;
        // SAFETY: ftruncate on a descriptor we own.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), size) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Region::map(fd, len)
    }

    /// A new region holding a copy of `bytes`: written with `pwrite` (the kernel allocates
    /// the pages in bulk, where copying into a fresh mapping would fault on each one), then
    /// mapped with its pages in place.
    pub(crate) fn with_bytes(name: &str, bytes: &[u8]) -> io::Result<Region> {
        use std::os::unix::fs::FileExt;
        let file = std::fs::File::from(wire::memfd(name)?);
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
            return Ok(Region { fd, ptr: None, len });
        }
        // Pages mapped up front (one call instead of a fault per page on first touch), up to
        // a size where mapping what may never be read would cost more than it saves.
        let populate = if len <= POPULATE_MAX {
            libc::MAP_POPULATE
        } else {
            0
        };
        // SAFETY: a fresh shared mapping of a descriptor we own, of its whole length.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | populate,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Region {
            fd,
            ptr: NonNull::new(ptr.cast()),
            len,
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The start of the mapping (dangling for an empty region).
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr
            .map_or(NonNull::dangling().as_ptr(), NonNull::as_ptr)
    }

    /// The 64-bit word at `index` (in 8-byte words), shared with every process that maps the
    /// region.
    pub(crate) fn word64(&self, index: usize) -> &std::sync::atomic::AtomicU64 {
        assert!(
            (index + 1) * 8 <= self.len,
            "word {index} is outside the region"
        );
        // SAFETY: the mapping is page-aligned, so every 8-byte offset is aligned for a u64;
        // it lives as long as &self, and it is only ever accessed atomically.
        unsafe { std::sync::atomic::AtomicU64::from_ptr(self.as_ptr().add(index * 8).cast()) }
    }

    /// The 32-bit word at `index` (in words), shared with every process that maps the region.
    pub(crate) fn word(&self, index: usize) -> &AtomicU32 {
        assert!(
            (index + 1) * 4 <= self.len,
            "word {index} is outside the region"
        );
        // SAFETY: the mapping is page-aligned, so every 4-byte offset is aligned for a u32;
        // it lives as long as &self, and it is only ever accessed atomically.
        unsafe { AtomicU32::from_ptr(self.as_ptr().add(index * 4).cast()) }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        if let Some(ptr) = self.ptr {
            // SAFETY: ptr and len describe the mapping made in `map`, unmapped only here.
            unsafe {
                libc::munmap(ptr.as_ptr().cast(), self.len);
            }
        }
    }
}

/// Waits while `word` holds `expected`, at most as long as `wait` says. Returns `false` when
/// the wait ended first. Spurious returns happen: callers re-check the word.
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, wait: Wait) -> bool {
    let timeout = match wait {
        Wait::Now => return false,
        Wait::Forever => None,
        Wait::Until(deadline) => {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            Some(libc::timespec {
                tv_sec: left.as_secs().min(i64::MAX as u64) as libc::time_t,
                tv_nsec: left.subsec_nanos() as _,
            })
        }
    };
    let ts = timeout
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: word points to a live, aligned u32 in a shared mapping (so no private flag);
    // ts is null or a valid timespec.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            ts,
            std::ptr::null::<u32>(),
            0u32,
        )
    };
    !(rc < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ETIMEDOUT))
}

/// Wakes every process waiting on `word`.
pub(crate) fn futex_wake_all(word: &AtomicU32) {
    // SAFETY: word points to a live, aligned u32; FUTEX_WAKE touches no other memory.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            i32::MAX,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// A counting semaphore shared between processes: an eventfd in semaphore mode. It counts the
/// free places of a bounded channel or queue.
pub(crate) struct Slots(OwnedFd);

impl Slots {
    pub(crate) fn new(count: usize) -> io::Result<Slots> {
        let slots = Slots(crate::sys::eventfd(libc::EFD_SEMAPHORE)?);
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
        watch: Option<(BorrowedFd<'_>, libc::c_short)>,
        wait: Wait,
    ) -> Result<(), WireError> {
        loop {
            let e = match crate::sys::eventfd_take(self.fd()) {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            match e.raw_os_error() {
                Some(libc::EAGAIN) => {}
                Some(libc::EINTR) => continue,
                _ => return Err(WireError::Io(e)),
            }
            let mut fds = [
                libc::pollfd {
                    fd: self.0.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: watch.map_or(-1, |(fd, _)| fd.as_raw_fd()),
                    events: watch.map_or(0, |(_, events)| events),
                    revents: 0,
                },
            ];
            if !wire::poll(&mut fds, wait)? {
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
        crate::sys::eventfd_add(self.fd(), count)
    }
}
