//! memfd_create(2), file seals and shared mappings: the memory that large messages, `Bytes`
//! regions and shared words live in.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;

use super::cvt;

/// The seals that make a memfd's size and contents final.
const FINAL_SEALS: libc::c_int =
    libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE | libc::F_SEAL_SEAL;

/// A new, empty, close-on-exec memfd; with `sealing`, one that [`seal_final`] can seal.
pub(crate) fn memfd(name: &str, sealing: bool) -> io::Result<OwnedFd> {
    let name = std::ffi::CString::new(name).map_err(io::Error::other)?;
    let flags = if sealing {
        libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING
    } else {
        libc::MFD_CLOEXEC
    };
    // SAFETY: name is a valid C string; the result is a new descriptor or -1.
    let fd = cvt(unsafe { libc::memfd_create(name.as_ptr(), flags) })?;
    // SAFETY: fd is new and owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Seals a memfd so that nobody can change, grow or shrink it again. A memfd created without
/// `sealing` stays unsealed (and [`is_sealed_final`] says so).
pub(crate) fn seal_final(fd: BorrowedFd<'_>) {
    // SAFETY: fcntl on a descriptor we hold.
    unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, FINAL_SEALS) };
}

/// Whether a memfd carries every seal of [`seal_final`]: then a mapping of it can neither
/// shrink under its reader (which would fault) nor change.
pub(crate) fn is_sealed_final(fd: BorrowedFd<'_>) -> bool {
    // SAFETY: fcntl on a descriptor we hold.
    let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
    seals >= 0 && seals & FINAL_SEALS == FINAL_SEALS
}

/// The seals that fix a memfd's size but leave its contents writable: a shared region.
const SIZE_SEALS: libc::c_int = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;

/// Seals a memfd created with `sealing` at its current size: nobody can shrink it (which would
/// fault every process that maps it on its next read: SIGBUS) or grow it; writes stay allowed.
pub(crate) fn seal_size(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we hold.
    cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, SIZE_SEALS) }).map(drop)
}

/// Whether nobody can shrink this memfd any more: only then is a mapping of it safe to read.
pub(crate) fn is_size_sealed(fd: BorrowedFd<'_>) -> bool {
    // SAFETY: fcntl on a descriptor we hold.
    let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
    seals >= 0 && seals & libc::F_SEAL_SHRINK != 0
}

/// Reads up to `buf.len()` bytes at `offset` (`pread`); fewer only at the end of the file.
pub(crate) fn read_at(fd: BorrowedFd<'_>, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        let at = libc::off_t::try_from(offset + done as u64).map_err(io::Error::other)?;
        // SAFETY: reads into the unfilled part of `buf`, which stays borrowed for the call.
        let n = super::cvt_r(|| unsafe {
            libc::pread(
                fd.as_raw_fd(),
                buf[done..].as_mut_ptr().cast(),
                buf.len() - done,
                at,
            )
        })?;
        if n == 0 {
            break;
        }
        done += n as usize;
    }
    Ok(done)
}

/// Writes all of `bytes` at `offset` (`pwrite`).
pub(crate) fn write_at(fd: BorrowedFd<'_>, bytes: &[u8], offset: u64) -> io::Result<()> {
    let mut done = 0;
    while done < bytes.len() {
        let at = libc::off_t::try_from(offset + done as u64).map_err(io::Error::other)?;
        // SAFETY: writes from the unwritten part of `bytes`, borrowed for the call.
        let n = super::cvt_r(|| unsafe {
            libc::pwrite(
                fd.as_raw_fd(),
                bytes[done..].as_ptr().cast(),
                bytes.len() - done,
                at,
            )
        })?;
        if n == 0 {
            return Err(io::Error::from(io::ErrorKind::WriteZero));
        }
        done += n as usize;
    }
    Ok(())
}

/// Gives the pages of `len` bytes at `offset` back to the system; they read as zeros after
/// (`fallocate(PUNCH_HOLE)`; the file keeps its size).
pub(crate) fn punch_hole(fd: BorrowedFd<'_>, offset: u64, len: u64) -> io::Result<()> {
    let at = libc::off_t::try_from(offset).map_err(io::Error::other)?;
    let len = libc::off_t::try_from(len).map_err(io::Error::other)?;
    // SAFETY: fallocate on a descriptor we hold; it touches no memory of ours.
    cvt(unsafe {
        libc::fallocate(
            fd.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            at,
            len,
        )
    })
    .map(drop)
}

/// A shared mapping of the first `len` bytes of a file, unmapped on drop.
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value; what may be done with its
// contents across threads is the owner's to say (see `ipc::shm`).
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `len` (> 0) bytes of `fd` shared, read-only or also writable; with `populate`,
    /// its pages are mapped up front (one call instead of a fault per page on first touch).
    pub(crate) fn new(
        fd: BorrowedFd<'_>,
        len: usize,
        writable: bool,
        populate: bool,
    ) -> io::Result<Mapping> {
        let prot = if writable {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        let flags = libc::MAP_SHARED | if populate { libc::MAP_POPULATE } else { 0 };
        // SAFETY: a fresh shared mapping of an open descriptor; the kernel picks the address.
        let ptr = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, fd.as_raw_fd(), 0) };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap at 0"))?;
        Ok(Mapping { ptr, len })
    }

    /// The start of the mapping: page-aligned, `len` bytes, valid until drop.
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping this value owns.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::fs::FileExt;

    #[test]
    fn only_a_sealing_memfd_seals() {
        let sealed = std::fs::File::from(memfd("t", true).unwrap());
        sealed.write_all_at(b"abc", 0).unwrap();
        seal_final(sealed.as_fd());
        assert!(is_sealed_final(sealed.as_fd()));
        assert!(sealed.write_all_at(b"x", 0).is_err());
        let plain = memfd("t", false).unwrap();
        seal_final(plain.as_fd());
        assert!(!is_sealed_final(plain.as_fd()));
        let map = Mapping::new(sealed.as_fd(), 3, false, true).unwrap();
        assert_eq!(map.len(), 3);
        // SAFETY: three readable bytes of a sealed file, mapped until `map` drops.
        let bytes = unsafe { std::slice::from_raw_parts(map.as_ptr(), 3) };
        assert_eq!(bytes, b"abc");
    }

    #[test]
    fn a_size_sealed_memfd_stays_writable_and_cannot_shrink() {
        let file = std::fs::File::from(memfd("t", true).unwrap());
        file.set_len(8).unwrap();
        assert!(!is_size_sealed(file.as_fd()));
        seal_size(file.as_fd()).unwrap();
        assert!(is_size_sealed(file.as_fd()));
        file.write_all_at(b"xy", 0).unwrap();
        assert!(file.set_len(0).is_err(), "shrinking is refused");
        assert!(file.set_len(16).is_err(), "growing is refused");
        assert_eq!(file.metadata().unwrap().len(), 8);
    }
}
