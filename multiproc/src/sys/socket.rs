//! `SOCK_SEQPACKET` socket pairs and `sendmsg`/`recvmsg` with descriptors (`SCM_RIGHTS`).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use super::cvt;

/// The most descriptors one datagram may carry: the kernel's `SCM_MAX_FD`.
pub(crate) const MAX_DATAGRAM_FDS: usize = 253;

/// Room for [`MAX_DATAGRAM_FDS`] descriptors in a control message (CMSG_SPACE(253 * 4) = 1032
/// bytes).
const CONTROL_WORDS: usize = 136;

/// Datagrams up to this size without descriptors are sent from one flat copy.
const SMALL: usize = 256;

/// A connected pair of close-on-exec `SOCK_SEQPACKET` sockets.
pub(crate) fn socketpair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: socketpair writes two descriptors into the array on success.
    cvt(unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    })?;
    // SAFETY: both descriptors are new and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Sends one datagram made of `header` then `body`, with the descriptors `fds` attached,
/// without blocking and without SIGPIPE. At most [`MAX_DATAGRAM_FDS`] descriptors.
pub(crate) fn sendmsg(
    sock: BorrowedFd<'_>,
    header: &[u8],
    body: &[u8],
    fds: &[RawFd],
) -> io::Result<()> {
    if fds.len() > MAX_DATAGRAM_FDS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("a datagram can carry at most {MAX_DATAGRAM_FDS} descriptors"),
        ));
    }
    let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
    if fds.is_empty() && header.len() + body.len() <= SMALL {
        // A small datagram without descriptors: one flat buffer through sendto, which the
        // kernel takes without copying a msghdr and an iovec array in.
        let mut flat = [0_u8; SMALL];
        flat[..header.len()].copy_from_slice(header);
        flat[header.len()..header.len() + body.len()].copy_from_slice(body);
        // SAFETY: `flat` holds the given length of initialised bytes; no address is passed.
        // The raw system call skips libc's cancellation bookkeeping (nothing here cancels
        // threads).
        return cvt(unsafe {
            libc::syscall(
                libc::SYS_sendto,
                sock.as_raw_fd(),
                flat.as_ptr(),
                header.len() + body.len(),
                flags,
                std::ptr::null::<libc::sockaddr>(),
                0,
            )
        })
        .map(drop);
    }
    let mut iov = [
        libc::iovec {
            iov_base: header.as_ptr() as *mut libc::c_void,
            iov_len: header.len(),
        },
        libc::iovec {
            iov_base: body.as_ptr() as *mut libc::c_void,
            iov_len: body.len(),
        },
    ];
    let mut control = [0u64; CONTROL_WORDS];
    // SAFETY: an all-zero msghdr is a valid empty message.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = if body.is_empty() { 1 } else { 2 };
    if !fds.is_empty() {
        let len = std::mem::size_of_val(fds) as u32;
        msg.msg_control = control.as_mut_ptr().cast();
        // SAFETY: CMSG_SPACE is arithmetic; `control` holds CONTROL_WORDS * 8 bytes, which is
        // enough for MAX_DATAGRAM_FDS descriptors (checked above).
        msg.msg_controllen = unsafe { libc::CMSG_SPACE(len) } as _;
        // SAFETY: msg_control points to an aligned buffer of msg_controllen bytes, so the first
        // header and its data area lie inside it.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(len) as _;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr(),
                libc::CMSG_DATA(cmsg).cast::<RawFd>(),
                fds.len(),
            );
        }
    }
    // SAFETY: msg points to live buffers for the duration of the call (a raw system call, as
    // above).
    cvt(unsafe { libc::syscall(libc::SYS_sendmsg, sock.as_raw_fd(), &msg, flags) }).map(drop)
}

/// Receives one datagram into `buf` (blocking unless `nonblocking`); returns its length and
/// the descriptors that came with it, close-on-exec. A datagram larger than `buf`, or one
/// whose descriptors did not fit this process, is an error.
pub(crate) fn recvmsg(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    nonblocking: bool,
) -> io::Result<(usize, Vec<OwnedFd>)> {
    let flags = if nonblocking { libc::MSG_DONTWAIT } else { 0 };
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut control = [0u64; CONTROL_WORDS];
    // SAFETY: an all-zero msghdr is a valid empty message.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: msg points to live, writable buffers for the duration of the call. A raw
    // system call: libc's wrapper adds cancellation bookkeeping that nothing here uses.
    let n = cvt(unsafe {
        libc::syscall(
            libc::SYS_recvmsg,
            sock.as_raw_fd(),
            &mut msg,
            flags | libc::MSG_CMSG_CLOEXEC,
        )
    })?;
    let mut fds = Vec::new();
    // SAFETY: the kernel filled msg_control with well-formed headers; CMSG_FIRSTHDR and
    // CMSG_NXTHDR stay inside msg_controllen, and SCM_RIGHTS data is an array of descriptors
    // that now belong to this process.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg);
                let len = (*cmsg).cmsg_len as usize - (data as usize - cmsg as usize);
                let count = len / std::mem::size_of::<RawFd>();
                for i in 0..count {
                    let fd = std::ptr::read_unaligned(data.cast::<RawFd>().add(i));
                    fds.push(OwnedFd::from_raw_fd(fd));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::other(
            "a received message lost the descriptors it carried: this process is probably \
             out of file descriptors (see `ulimit -n`)",
        ));
    }
    if msg.msg_flags & libc::MSG_TRUNC != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "a received message was truncated (not from multiproc?)",
        ));
    }
    Ok((n as usize, fds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn descriptors_travel_with_a_datagram() {
        let (a, b) = socketpair().unwrap();
        let (r, _w) = super::super::pipe(false).unwrap();
        sendmsg(a.as_fd(), b"hi", b"!", &[r.as_raw_fd()]).unwrap();
        let mut buf = [0u8; 16];
        let (n, fds) = recvmsg(b.as_fd(), &mut buf, true).unwrap();
        assert_eq!(&buf[..n], b"hi!");
        assert_eq!(fds.len(), 1);
        assert_ne!(fds[0].as_raw_fd(), r.as_raw_fd());
        let e = recvmsg(b.as_fd(), &mut buf, true).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
    }
}
