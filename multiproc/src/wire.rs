//! The transport under every mailbox and every child's bootstrap: connected Unix
//! `SOCK_SEQPACKET` socket pairs, one frame per datagram, with file descriptors (channel
//! ends, memory regions) attached as `SCM_RIGHTS`.
//!
//! One datagram is one whole message, so several processes can read one socket (a
//! [`Queue`](crate::Queue)) and the kernel hands each message to exactly one of them. A
//! message larger than [`INLINE_MAX`] travels in a memfd attached to a small datagram, so no
//! message is ever split into fragments.
//!
//! Values are encoded with postcard. A channel end inside a value is encoded as the index of
//! a descriptor attached to the frame: see [`attach_fd`] and [`take_fd`]. Every socket and
//! every received descriptor is close-on-exec.

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Serialize, de, ser};

/// The largest message sent inline; larger ones go through a memfd.
pub(crate) const INLINE_MAX: usize = 64 * 1024;
/// Descriptors one message may carry (the kernel's `SCM_MAX_FD` is 253; one is kept for the
/// memfd of a large message).
pub(crate) const MAX_FDS: usize = 252;

const TAG_INLINE: u8 = 0;
const TAG_MEMFD: u8 = 1;
/// Several small messages without descriptors in one datagram, each prefixed by its length
/// (u32, little endian): see [`Batch`].
const TAG_BATCH: u8 = 2;

/// One received message: its encoded bytes and the descriptors attached to it.
pub(crate) struct Frame {
    pub(crate) bytes: Body,
    pub(crate) fds: Vec<OwnedFd>,
    /// `bytes` holds a [`Batch`] of messages: see [`split_batch`].
    pub(crate) batch: bool,
}

/// The bytes of a received message: on the heap, or for a large one, the sealed memfd it
/// came in, mapped read-only (no copy).
pub(crate) enum Body {
    Heap(Vec<u8>),
    Mapped(Mapping),
    /// One message of a batch: a range of the batch's buffer.
    Shared(std::sync::Arc<Vec<u8>>, std::ops::Range<usize>),
}

impl std::ops::Deref for Body {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Body::Heap(v) => v,
            Body::Mapped(m) => m.as_slice(),
            Body::Shared(buf, range) => &buf[range.clone()],
        }
    }
}

/// A read-only mapping of a sealed memfd (nobody can change or shrink it while it is mapped).
pub(crate) struct Mapping {
    ptr: std::ptr::NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is read-only memory owned by this value.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` maps `len` readable bytes until drop; the seals keep the file from
        // shrinking under the mapping (which would fault) or changing.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping this value owns.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// The seals a sender sets on a message's memfd: its size and contents are final.
const MESSAGE_SEALS: libc::c_int =
    libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE | libc::F_SEAL_SEAL;

/// Maps `len` bytes of a received message's memfd when its seals make that safe, else reads
/// them (a memfd from elsewhere could shrink under a mapping).
fn map_message(file: &std::fs::File, len: usize) -> io::Result<Body> {
    // SAFETY: fcntl on a descriptor we own.
    let seals = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GET_SEALS) };
    if seals >= 0 && seals & MESSAGE_SEALS == MESSAGE_SEALS {
        // SAFETY: a fresh read-only mapping of an open file; the kernel picks the address.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr != libc::MAP_FAILED
            && let Some(ptr) = std::ptr::NonNull::new(ptr.cast::<u8>())
        {
            return Ok(Body::Mapped(Mapping { ptr, len }));
        }
    }
    let mut body = vec![0u8; len];
    file.read_exact_at(&mut body, 0)?;
    Ok(Body::Heap(body))
}

impl Frame {
    pub(crate) fn new(bytes: Vec<u8>, fds: Vec<OwnedFd>) -> Frame {
        Frame {
            bytes: Body::Heap(bytes),
            fds,
            batch: false,
        }
    }
}

/// Small encoded messages collected to go out in one datagram.
pub(crate) struct Batch {
    buf: Vec<u8>,
    count: usize,
}

impl Batch {
    pub(crate) fn new() -> Batch {
        Batch {
            buf: vec![TAG_BATCH],
            count: 0,
        }
    }

    /// Adds one encoded message; `false` (and nothing added) when it does not fit.
    pub(crate) fn push(&mut self, bytes: &[u8]) -> bool {
        if self.buf.len() + 4 + bytes.len() > INLINE_MAX + 1 {
            return false;
        }
        self.buf
            .extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(bytes);
        self.count += 1;
        true
    }

    /// Sends the collected messages as one datagram and empties the batch.
    pub(crate) fn flush(
        &mut self,
        sock: BorrowedFd<'_>,
        doorbell: Option<BorrowedFd<'_>>,
        wait: Wait,
    ) -> Result<(), WireError> {
        if self.count == 0 {
            return Ok(());
        }
        send_datagram(sock, doorbell, &self.buf, &[], &[], wait)?;
        self.buf.truncate(1);
        self.count = 0;
        Ok(())
    }
}

/// The messages of a batch frame, in order.
/// The frames share the batch's buffer (no copy each).
pub(crate) fn split_batch(bytes: Body) -> io::Result<Vec<Frame>> {
    let buf = match bytes {
        Body::Heap(v) => std::sync::Arc::new(v),
        other => std::sync::Arc::new(other.to_vec()),
    };
    let mut frames = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        let malformed = || io::Error::new(io::ErrorKind::InvalidData, "a malformed batch");
        let len: [u8; 4] = buf
            .get(at..at + 4)
            .ok_or_else(malformed)?
            .try_into()
            .expect("4");
        let len = u32::from_le_bytes(len) as usize;
        let start = at + 4;
        let end = start
            .checked_add(len)
            .filter(|end| *end <= buf.len())
            .ok_or_else(malformed)?;
        frames.push(Frame {
            bytes: Body::Shared(std::sync::Arc::clone(&buf), start..end),
            fds: Vec::new(),
            batch: false,
        });
        at = end;
    }
    Ok(frames)
}

/// How long an operation may wait.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Wait {
    /// Not at all.
    Now,
    /// Until this instant.
    Until(Instant),
    /// As long as it takes.
    Forever,
}

impl Wait {
    pub(crate) fn timeout(timeout: Duration) -> Wait {
        match Instant::now().checked_add(timeout) {
            Some(deadline) => Wait::Until(deadline),
            None => Wait::Forever,
        }
    }

    /// The `poll(2)` timeout in milliseconds (rounded up), or `None` once the wait is over.
    fn poll_ms(self) -> Option<libc::c_int> {
        match self {
            Wait::Now => Some(0),
            Wait::Forever => Some(-1),
            Wait::Until(deadline) => {
                let left = deadline.checked_duration_since(Instant::now())?;
                if left.is_zero() {
                    return None;
                }
                let ms = left.as_micros().div_ceil(1000).min(i32::MAX as u128);
                Some(ms as libc::c_int)
            }
        }
    }
}

/// Why a send or receive did not complete.
#[derive(Debug)]
pub(crate) enum WireError {
    /// The wait ended first (or there was nothing to wait for with [`Wait::Now`]).
    WouldBlock,
    /// The peer is gone: end of file on receive, `EPIPE` on send.
    Closed,
    Io(io::Error),
}

impl From<io::Error> for WireError {
    fn from(e: io::Error) -> Self {
        WireError::Io(e)
    }
}

/// A connected pair of close-on-exec `SOCK_SEQPACKET` sockets.
pub(crate) fn socketpair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: socketpair writes two descriptors into the array on success.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors are new and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Waits until one of `fds` is ready. Returns `false` when the wait ended first.
pub(crate) fn poll(fds: &mut [libc::pollfd], wait: Wait) -> io::Result<bool> {
    loop {
        let Some(ms) = wait.poll_ms() else {
            return Ok(false);
        };
        // SAFETY: `fds` is a valid, exclusively borrowed array of pollfd.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if rc > 0 {
            return Ok(true);
        }
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        } else if matches!(wait, Wait::Now) {
            return Ok(false);
        }
    }
}

/// Waits until `fd` reports `events` (or hang-up or an error); `false` when the wait ended.
pub(crate) fn poll_one(fd: BorrowedFd<'_>, events: libc::c_short, wait: Wait) -> io::Result<bool> {
    let mut p = [libc::pollfd {
        fd: fd.as_raw_fd(),
        events,
        revents: 0,
    }];
    poll(&mut p, wait)
}

/// Sends one message: `bytes` and the descriptors `fds` (which stay open here). When the
/// socket is full, rings `doorbell` (see `pump`) before waiting for room.
pub(crate) fn send(
    sock: BorrowedFd<'_>,
    doorbell: Option<BorrowedFd<'_>>,
    bytes: &[u8],
    fds: &[OwnedFd],
    wait: Wait,
) -> Result<(), WireError> {
    let mut raw: Vec<RawFd> = Vec::with_capacity(fds.len() + 1);
    let memfd;
    let mut header = [0u8; 9];
    let (header, body): (&[u8], &[u8]) = if bytes.len() <= INLINE_MAX {
        header[0] = TAG_INLINE;
        (&header[..1], bytes)
    } else {
        memfd = memfd_with(bytes)?;
        raw.push(memfd.as_raw_fd());
        header[0] = TAG_MEMFD;
        header[1..].copy_from_slice(&(bytes.len() as u64).to_le_bytes());
        (&header[..], &[])
    };
    raw.extend(fds.iter().map(|fd| fd.as_raw_fd()));
    if raw.len() > MAX_FDS + 1 {
        return Err(WireError::Io(io::Error::other(format!(
            "a message can carry at most {MAX_FDS} channel ends and memory regions, this one has {}",
            fds.len()
        ))));
    }
    send_datagram(sock, doorbell, header, body, &raw, wait)
}

/// Sends one datagram made of `header` and `body`, with the descriptors `raw` attached.
fn send_datagram(
    sock: BorrowedFd<'_>,
    doorbell: Option<BorrowedFd<'_>>,
    header: &[u8],
    body: &[u8],
    raw: &[RawFd],
    wait: Wait,
) -> Result<(), WireError> {
    loop {
        match sendmsg(sock.as_raw_fd(), header, body, raw) {
            Ok(()) => return Ok(()),
            Err(e) => match e.raw_os_error() {
                Some(libc::EAGAIN) => {
                    if let Some(doorbell) = doorbell {
                        crate::pump::ring(doorbell);
                    }
                    if !poll_one(sock, libc::POLLOUT, wait)? {
                        return Err(WireError::WouldBlock);
                    }
                }
                Some(libc::EINTR) => {}
                Some(libc::EPIPE | libc::ECONNRESET | libc::ENOTCONN) => {
                    return Err(WireError::Closed);
                }
                _ => return Err(WireError::Io(e)),
            },
        }
    }
}

fn sendmsg(sock: RawFd, header: &[u8], body: &[u8], fds: &[RawFd]) -> io::Result<()> {
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
        // enough for MAX_FDS + 1 descriptors (checked by the caller).
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
    // SAFETY: msg points to live buffers for the duration of the call.
    let rc = unsafe { libc::sendmsg(sock, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Room for MAX_FDS + 1 descriptors in a control message (CMSG_SPACE(253 * 4) = 1032 bytes).
const CONTROL_WORDS: usize = 136;

thread_local! {
    /// Each thread's receive buffer, big enough for any inline message.
    static RECV_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Receives one message. [`WireError::Closed`] means end of file: every peer is gone.
///
/// [`Wait::Forever`] blocks in `recvmsg` itself (one system call per message); the other waits
/// poll first.
pub(crate) fn recv(sock: BorrowedFd<'_>, wait: Wait) -> Result<Frame, WireError> {
    let flags = match wait {
        Wait::Forever => 0,
        _ => libc::MSG_DONTWAIT,
    };
    let mut reset = false;
    loop {
        let received = RECV_BUF.with(|buf| {
            let mut buf = buf.borrow_mut();
            if buf.len() < INLINE_MAX + 16 {
                buf.resize(INLINE_MAX + 16, 0);
            }
            recvmsg(sock.as_raw_fd(), &mut buf, flags).map(|(n, fds)| parse(&buf[..n], fds))
        });
        match received {
            Ok(frame) => return frame,
            Err(e) => match e.raw_os_error() {
                Some(libc::EAGAIN) => {
                    if !poll_one(sock, libc::POLLIN, wait)? {
                        return Err(WireError::WouldBlock);
                    }
                }
                Some(libc::EINTR) => {}
                // The peer closed with unread data on its own side. The kernel reports that
                // once, before any message still queued here: read on, and those messages
                // come, then the end of file. A second report means nothing is left.
                Some(libc::ECONNRESET) if !reset => reset = true,
                Some(libc::ECONNRESET) => return Err(WireError::Closed),
                _ => return Err(WireError::Io(e)),
            },
        }
    }
}

fn parse(datagram: &[u8], mut fds: Vec<OwnedFd>) -> Result<Frame, WireError> {
    let Some((&tag, rest)) = datagram.split_first() else {
        // A zero-length read is end of file: every frame has a tag byte.
        return Err(WireError::Closed);
    };
    match tag {
        TAG_INLINE => Ok(Frame::new(rest.to_vec(), fds)),
        TAG_BATCH => Ok(Frame {
            bytes: Body::Heap(rest.to_vec()),
            fds,
            batch: true,
        }),
        TAG_MEMFD if rest.len() == 8 && !fds.is_empty() => {
            let len = u64::from_le_bytes(rest.try_into().expect("8 bytes"));
            let len = usize::try_from(len).map_err(io::Error::other)?;
            let file = std::fs::File::from(fds.remove(0));
            if file.metadata()?.len() < len as u64 {
                return Err(WireError::Io(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "a received message is shorter than its header says",
                )));
            }
            Ok(Frame {
                bytes: map_message(&file, len)?,
                fds,
                batch: false,
            })
        }
        _ => Err(WireError::Io(io::Error::new(
            io::ErrorKind::InvalidData,
            "received a malformed frame (not from multiproc?)",
        ))),
    }
}

fn recvmsg(sock: RawFd, buf: &mut [u8], flags: libc::c_int) -> io::Result<(usize, Vec<OwnedFd>)> {
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
    // SAFETY: msg points to live, writable buffers for the duration of the call.
    let n = unsafe { libc::recvmsg(sock, &mut msg, flags | libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
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

/// A close-on-exec memfd holding `bytes`, sealed (see [`map_message`]).
fn memfd_with(bytes: &[u8]) -> io::Result<OwnedFd> {
    let file = std::fs::File::from(new_message_memfd()?);
    file.write_all_at(bytes, 0)?;
    seal(&file);
    Ok(file.into())
}

/// A new close-on-exec memfd for a message, that can be sealed.
fn new_message_memfd() -> io::Result<OwnedFd> {
    let name = c"multiproc-message";
    // SAFETY: name is a valid C string; the result is a new descriptor or -1.
    let fd =
        unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is new and owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Seals a message's memfd: its size and contents are final.
fn seal(file: &std::fs::File) {
    // SAFETY: fcntl on a descriptor we own. Unsealed, the message is still valid: the
    // receiver then reads it instead of mapping it.
    unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, MESSAGE_SEALS) };
}

/// A new, empty, close-on-exec memfd.
pub(crate) fn memfd(name: &str) -> io::Result<OwnedFd> {
    let name = std::ffi::CString::new(name).map_err(io::Error::other)?;
    // SAFETY: name is a valid C string; the result is a new descriptor or -1.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is new and owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

thread_local! {
    /// Descriptors collected while encoding a message, `None` outside of [`encode`].
    static OUTGOING: RefCell<Option<Vec<OwnedFd>>> = const { RefCell::new(None) };
    /// Descriptors of the message being decoded, `None` outside of [`decode`].
    static INCOMING: RefCell<Option<Vec<Option<OwnedFd>>>> = const { RefCell::new(None) };
    /// The text of the last custom error raised by multiproc's own (de)serializers: postcard
    /// keeps only the fact that there was one. Set right before the error is returned and
    /// taken by `describe`, so it never outlives its error.
    static CUSTOM: RefCell<Option<String>> = const { RefCell::new(None) };
    /// Each thread's encoding buffer.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// Receivers the message being encoded moves, `None` outside of [`with_encoded`].
    static MOVES: RefCell<Option<Vec<std::sync::Arc<crate::pump::Inbox>>>> =
        const { RefCell::new(None) };
    /// Set by [`not_sent`].
    static NOT_SENT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Encodes `value` and hands its bytes and descriptors to `use_frame` (the bytes live in a
/// per-thread buffer, reused from one message to the next).
///
/// A receiver inside `value` stops being drained here while it is on its way out (see
/// `pump::Inbox::detach`); if the message does not go after all and the value stays with the
/// caller, `use_frame` calls [`not_sent`] and the receiver resumes.
pub(crate) fn with_encoded<T: Serialize + ?Sized, R>(
    value: &T,
    use_frame: impl FnOnce(&[u8], &[OwnedFd]) -> R,
) -> Result<R, String> {
    encoding(
        |buf| {
            *buf = postcard::to_extend(value, std::mem::take(buf)).map_err(describe)?;
            Ok(())
        },
        |(), bytes, fds| use_frame(bytes, fds),
    )
}

/// The context every encoding runs in: the per-thread buffer, and the descriptors and moved
/// receivers the value's serialization records. `encode` fills the buffer (and may produce
/// something besides, such as a memfd); `use_frame` gets that, the bytes and the descriptors.
/// Receivers resume if encoding fails or `use_frame` calls [`not_sent`].
fn encoding<X, R>(
    encode: impl FnOnce(&mut Vec<u8>) -> Result<X, String>,
    use_frame: impl FnOnce(X, &[u8], &[OwnedFd]) -> R,
) -> Result<R, String> {
    let mut buf = SCRATCH.with(|s| std::mem::take(&mut *s.borrow_mut()));
    buf.clear();
    let saved = OUTGOING.with(|o| o.replace(Some(Vec::new())));
    let saved_moves = MOVES.with(|m| m.replace(Some(Vec::new())));
    let encoded = encode(&mut buf);
    let fds = OUTGOING.with(|o| o.replace(saved)).unwrap_or_default();
    let result = match encoded {
        Ok(extra) => {
            let sent = NOT_SENT.with(|n| n.replace(false));
            let result = use_frame(extra, &buf, &fds);
            if NOT_SENT.with(|n| n.replace(sent)) {
                resume_moves();
            }
            Ok(result)
        }
        Err(e) => {
            resume_moves();
            Err(e)
        }
    };
    SCRATCH.with(|s| *s.borrow_mut() = buf);
    MOVES.with(|m| m.replace(saved_moves));
    result
}

/// Encodes each of `items` at the end of `out`, in one encoding context (no per-item buffer
/// or thread-local setup): `each` gets the byte range and the descriptors of every item. The
/// values are handed over for good (as to a message that was sent).
pub(crate) fn encode_each<T: Serialize>(
    items: impl IntoIterator<Item = T>,
    out: &mut Vec<u8>,
    mut each: impl FnMut(std::ops::Range<usize>, Vec<OwnedFd>),
) -> Result<(), String> {
    let saved = OUTGOING.with(|o| o.replace(Some(Vec::new())));
    let saved_moves = MOVES.with(|m| m.replace(Some(Vec::new())));
    let mut result = Ok(());
    for item in items {
        let start = out.len();
        match postcard::to_extend(&item, std::mem::take(out)) {
            Ok(buf) => *out = buf,
            Err(e) => {
                result = Err(describe(e));
                break;
            }
        }
        let fds = OUTGOING
            .with(|o| o.borrow_mut().as_mut().map(std::mem::take))
            .unwrap_or_default();
        each(start..out.len(), fds);
    }
    if result.is_err() {
        resume_moves();
    }
    OUTGOING.with(|o| o.replace(saved));
    MOVES.with(|m| m.replace(saved_moves));
    result
}

/// An encoded message on its way out: its bytes, or for a large one the sealed memfd they
/// were written to as they were encoded, and their length.
#[derive(Clone, Copy)]
pub(crate) enum Payload<'a> {
    Inline(&'a [u8]),
    Memfd(&'a OwnedFd, u64),
}

/// How much of a spilled message is collected before it is written to its memfd.
const SPILL_CHUNK: usize = 64 << 10;

/// A postcard flavor that keeps a message in `buf` while it fits a datagram, and past that
/// writes it to a memfd as it goes: a large message is copied once, straight from the value
/// into the memfd, and the per-thread buffer never grows past a chunk.
struct Spill<'a> {
    buf: &'a mut Vec<u8>,
    file: Option<std::fs::File>,
    written: u64,
    /// The system call that failed, if one did (postcard's errors carry no cause).
    failed: &'a mut Option<io::Error>,
}

impl Spill<'_> {
    fn io<T>(&mut self, r: io::Result<T>) -> postcard::Result<T> {
        r.map_err(|e| {
            *self.failed = Some(e);
            postcard::Error::SerializeBufferFull
        })
    }

    /// Writes what `buf` holds to the memfd, creating it first.
    fn flush(&mut self) -> postcard::Result<()> {
        use std::io::Write;
        if self.file.is_none() {
            let file = new_message_memfd().map(std::fs::File::from);
            self.file = Some(self.io(file)?);
        }
        let file = self.file.as_mut().expect("created above");
        let written = file.write_all(self.buf);
        self.io(written)?;
        self.written += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }
}

impl postcard::ser_flavors::Flavor for Spill<'_> {
    type Output = Option<(std::fs::File, u64)>;

    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        self.buf.push(byte);
        let limit = if self.file.is_some() {
            SPILL_CHUNK
        } else {
            INLINE_MAX
        };
        if self.buf.len() > limit {
            self.flush()?;
        }
        Ok(())
    }

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        use std::io::Write;
        if self.file.is_none() && self.buf.len() + data.len() <= INLINE_MAX {
            self.buf.extend_from_slice(data);
            return Ok(());
        }
        if data.len() < SPILL_CHUNK {
            self.buf.extend_from_slice(data);
            if self.buf.len() >= SPILL_CHUNK || self.file.is_none() {
                self.flush()?;
            }
            return Ok(());
        }
        // A large slice (a `Bytes`, a string) goes straight from the value to the memfd.
        self.flush()?;
        let file = self.file.as_mut().expect("created by flush");
        let written = file.write_all(data);
        self.io(written)?;
        self.written += data.len() as u64;
        Ok(())
    }

    fn finalize(mut self) -> postcard::Result<Self::Output> {
        if self.file.is_none() {
            return Ok(None);
        }
        self.flush()?;
        let file = self.file.take().expect("checked above");
        seal(&file);
        Ok(Some((file, self.written)))
    }
}

/// Like [`with_encoded`], but a message too large for one datagram is written to a sealed
/// memfd while it is encoded (see [`Spill`]); send the payload with [`send_payload`].
pub(crate) fn with_payload<T: Serialize + ?Sized, R>(
    value: &T,
    use_frame: impl FnOnce(Payload<'_>, &[OwnedFd]) -> R,
) -> Result<R, String> {
    // A spill leaves at most a chunk in the buffer; a message that stayed inline, its size.
    encoding(
        |buf| {
            let mut failed = None;
            let spill = Spill {
                buf,
                file: None,
                written: 0,
                failed: &mut failed,
            };
            match (postcard::serialize_with_flavor(value, spill), failed) {
                (Ok(spilled), None) => Ok(spilled),
                (_, Some(e)) => Err(format!("cannot write a large message to memory: {e}")),
                (Err(e), None) => Err(describe(e)),
            }
        },
        |spilled, bytes, fds| match spilled {
            None => use_frame(Payload::Inline(bytes), fds),
            Some((file, len)) => use_frame(Payload::Memfd(&OwnedFd::from(file), len), fds),
        },
    )
}

/// Sends what [`with_payload`] encoded.
pub(crate) fn send_payload(
    sock: BorrowedFd<'_>,
    doorbell: Option<BorrowedFd<'_>>,
    payload: Payload<'_>,
    fds: &[OwnedFd],
    wait: Wait,
) -> Result<(), WireError> {
    let (memfd, len) = match payload {
        Payload::Inline(bytes) => return send(sock, doorbell, bytes, fds, wait),
        Payload::Memfd(memfd, len) => (memfd, len),
    };
    if fds.len() > MAX_FDS {
        return Err(WireError::Io(io::Error::other(format!(
            "a message can carry at most {MAX_FDS} channel ends and memory regions, this one has {}",
            fds.len()
        ))));
    }
    let mut raw: Vec<RawFd> = Vec::with_capacity(fds.len() + 1);
    raw.push(memfd.as_raw_fd());
    raw.extend(fds.iter().map(|fd| fd.as_raw_fd()));
    let mut header = [0u8; 9];
    header[0] = TAG_MEMFD;
    header[1..].copy_from_slice(&len.to_le_bytes());
    send_datagram(sock, doorbell, &header, &[], &raw, wait)
}

/// Called inside [`with_encoded`]'s closure: the message was not sent, and the value goes
/// back to the caller.
pub(crate) fn not_sent() {
    NOT_SENT.with(|n| n.set(true));
}

/// Records a receiver that the message being encoded moves out of this process.
pub(crate) fn note_move(inbox: std::sync::Arc<crate::pump::Inbox>) {
    MOVES.with(|m| {
        if let Some(moves) = m.borrow_mut().as_mut() {
            moves.push(inbox);
        }
    });
}

fn resume_moves() {
    let moves = MOVES.with(|m| m.borrow_mut().as_mut().map(std::mem::take));
    for inbox in moves.into_iter().flatten() {
        inbox.stay();
    }
}

/// Decodes a received frame; descriptors the value did not claim are closed.
pub(crate) fn decode<T: DeserializeOwned>(frame: Frame) -> Result<T, String> {
    if frame.batch {
        return Err("received a batch of messages where one was expected".to_string());
    }
    let Frame { bytes, fds, .. } = frame;
    decode_slice(&bytes, fds)
}

/// Decodes `bytes` with the descriptors `fds`; those the value did not claim are closed.
pub(crate) fn decode_slice<T: DeserializeOwned>(
    bytes: &[u8],
    fds: Vec<OwnedFd>,
) -> Result<T, String> {
    CUSTOM.with(|c| c.borrow_mut().take());
    let saved = INCOMING.with(|i| i.replace(Some(fds.into_iter().map(Some).collect())));
    let decoded = postcard::from_bytes::<T>(bytes);
    INCOMING.with(|i| i.replace(saved));
    decoded.map_err(describe)
}

fn describe(e: postcard::Error) -> String {
    match e {
        postcard::Error::SerdeSerCustom | postcard::Error::SerdeDeCustom => CUSTOM
            .with(|c| c.borrow_mut().take())
            .unwrap_or_else(|| e.to_string()),
        postcard::Error::DeserializeUnexpectedEnd => {
            "the message ended early (was it sent as another type?)".to_string()
        }
        _ => e.to_string(),
    }
}

/// A decoding error whose text survives postcard.
pub(crate) fn de_error<E: de::Error>(message: String) -> E {
    E::custom(record(message))
}

/// Remembers the text of a custom error for [`describe`]; returns it.
fn record(message: String) -> String {
    CUSTOM.with(|c| *c.borrow_mut() = Some(message.clone()));
    message
}

/// Attaches a copy of `fd` to the message being encoded; returns its index in the frame.
pub(crate) fn attach_fd<E: ser::Error>(fd: BorrowedFd<'_>, what: &str) -> Result<u32, E> {
    OUTGOING.with(|o| {
        let mut o = o.borrow_mut();
        let Some(fds) = o.as_mut() else {
            return Err(E::custom(record(format!(
                "a {what} can only be serialized by multiproc, as part of a message, \
                     a process's state or its result"
            ))));
        };
        if fds.len() >= MAX_FDS {
            return Err(E::custom(record(format!(
                "a message can carry at most {MAX_FDS} channel ends and memory regions"
            ))));
        }
        let copy = fd
            .try_clone_to_owned()
            .map_err(|e| E::custom(record(format!("cannot duplicate a {what}: {e}"))))?;
        fds.push(copy);
        Ok((fds.len() - 1) as u32)
    })
}

/// Takes the descriptor at `index` of the message being decoded.
pub(crate) fn take_fd<E: de::Error>(index: u32, what: &str) -> Result<OwnedFd, E> {
    INCOMING.with(|i| {
        let mut i = i.borrow_mut();
        let Some(fds) = i.as_mut() else {
            return Err(E::custom(record(format!(
                "a {what} can only be deserialized by multiproc"
            ))));
        };
        fds.get_mut(index as usize)
            .and_then(Option::take)
            .ok_or_else(|| {
                E::custom(record(format!(
                    "the message lacks the descriptor of a {what}"
                )))
            })
    })
}

/// Makes sure `fd` is not one of the standard streams' numbers, which a child's stdio set-up
/// would overwrite: a parent started with a closed stdin gets fd 0 for its first socket.
pub(crate) fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    // SAFETY: F_DUPFD_CLOEXEC duplicates a valid descriptor; the result is new.
    let copy = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
    if copy < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: copy is new and owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(copy) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    /// Sends raw bytes (and descriptors) as one datagram, bypassing the framing.
    fn raw(sock: &OwnedFd, bytes: &[u8], fds: &[RawFd]) {
        sendmsg(sock.as_raw_fd(), bytes, &[], fds).expect("sendmsg");
    }

    fn is_malformed(got: Result<Frame, WireError>) -> bool {
        matches!(got, Err(WireError::Io(e)) if e.kind() == io::ErrorKind::InvalidData)
    }

    #[test]
    fn garbage_and_truncated_frames_are_errors_and_the_socket_stays_usable() {
        let (a, b) = socketpair().unwrap();
        // An unknown tag.
        raw(&a, &[9, 1, 2, 3], &[]);
        assert!(is_malformed(recv(b.as_fd(), Wait::Now)));
        // A large-message header without its memfd.
        raw(&a, &[TAG_MEMFD, 5, 0, 0, 0, 0, 0, 0, 0], &[]);
        assert!(is_malformed(recv(b.as_fd(), Wait::Now)));
        // A truncated header.
        raw(&a, &[TAG_MEMFD, 5], &[]);
        assert!(is_malformed(recv(b.as_fd(), Wait::Now)));
        // A memfd shorter than its header says.
        let short = memfd_with(b"abc").unwrap();
        let mut header = vec![TAG_MEMFD];
        header.extend_from_slice(&1_000_000_u64.to_le_bytes());
        raw(&a, &header, &[short.as_raw_fd()]);
        assert!(is_malformed(recv(b.as_fd(), Wait::Now)));
        // A batch whose entry runs past its end.
        raw(&a, &[TAG_BATCH, 200, 0, 0, 0, 1, 2], &[]);
        let batch = recv(b.as_fd(), Wait::Now).ok().unwrap();
        assert!(batch.batch);
        assert!(split_batch(batch.bytes).is_err());
        // Bytes that are not a `String` followed by a `u64`.
        raw(&a, &[TAG_INLINE, 0xff, 0xff, 0xff, 0xff, 0xff], &[]);
        let frame = recv(b.as_fd(), Wait::Now).ok().unwrap();
        assert!(decode::<(String, u64)>(frame).is_err());
        // After all that, a good message still gets through.
        with_encoded(&42_u32, |bytes, fds| {
            send(a.as_fd(), None, bytes, fds, Wait::Now)
        })
        .unwrap()
        .ok()
        .unwrap();
        let frame = recv(b.as_fd(), Wait::Now).ok().unwrap();
        assert_eq!(decode::<u32>(frame).unwrap(), 42);
    }

    #[test]
    fn a_large_message_goes_through_a_memfd_and_back() {
        let (a, b) = socketpair().unwrap();
        let big = vec![7_u8; INLINE_MAX * 3];
        send(a.as_fd(), None, &big, &[], Wait::Now).ok().unwrap();
        let frame = recv(b.as_fd(), Wait::Now).ok().unwrap();
        assert!(matches!(frame.bytes, Body::Mapped(_)), "sealed, so mapped");
        assert_eq!(&*frame.bytes, &big[..]);
        // An unsealed memfd from elsewhere is read, not mapped.
        let plain = std::fs::File::from(memfd("plain").unwrap());
        plain.write_all_at(&big, 0).unwrap();
        let mut header = vec![TAG_MEMFD];
        header.extend_from_slice(&(big.len() as u64).to_le_bytes());
        sendmsg(a.as_raw_fd(), &header, &[], &[plain.as_raw_fd()]).unwrap();
        let frame = recv(b.as_fd(), Wait::Now).ok().unwrap();
        assert!(matches!(frame.bytes, Body::Heap(_)));
        assert_eq!(&*frame.bytes, &big[..]);
    }

    #[test]
    fn a_large_value_is_encoded_straight_into_a_memfd() {
        let (a, b) = socketpair().unwrap();
        // A byte string well past one datagram, among small fields, and one just inline.
        let big = (
            7_u32,
            crate::Bytes::from(vec![3_u8; INLINE_MAX * 5 + 17]),
            "tail".to_string(),
        );
        let small = vec![1_u8; 100];
        for _ in 0..2 {
            let spilled = with_payload(&big, |payload, fds| {
                assert!(matches!(payload, Payload::Memfd(_, len) if len > INLINE_MAX as u64));
                send_payload(a.as_fd(), None, payload, fds, Wait::Now)
            });
            assert!(matches!(spilled, Ok(Ok(()))));
            let inline = with_payload(&small, |payload, fds| {
                assert!(matches!(payload, Payload::Inline(_)));
                send_payload(a.as_fd(), None, payload, fds, Wait::Now)
            });
            assert!(matches!(inline, Ok(Ok(()))));
            let frame = recv(b.as_fd(), Wait::Now).ok().unwrap();
            assert!(matches!(frame.bytes, Body::Mapped(_)), "sealed, so mapped");
            let got: (u32, crate::Bytes, String) = decode(frame).unwrap();
            assert_eq!(got, big);
            let frame = recv(b.as_fd(), Wait::Now).ok().unwrap();
            assert_eq!(decode::<Vec<u8>>(frame).unwrap(), small);
        }
        // The encoding buffer did not grow to the message's size.
        assert!(SCRATCH.with(|s| s.borrow().capacity()) < INLINE_MAX * 3);
    }

    #[test]
    fn a_message_sent_before_a_reset_is_still_received() {
        let (a, b) = socketpair().unwrap();
        // `b` leaves a message unread on its own side, sends one to `a`, and closes: the
        // kernel then reports ECONNRESET to `a` once, ahead of the message.
        with_encoded(&1_u8, |bytes, fds| {
            send(a.as_fd(), None, bytes, fds, Wait::Now)
        })
        .unwrap()
        .ok()
        .unwrap();
        with_encoded(&2_u8, |bytes, fds| {
            send(b.as_fd(), None, bytes, fds, Wait::Now)
        })
        .unwrap()
        .ok()
        .unwrap();
        drop(b);
        // The message, not the reset.
        let frame = recv(a.as_fd(), Wait::Now).ok().unwrap();
        assert_eq!(decode::<u8>(frame).unwrap(), 2);
        assert!(matches!(recv(a.as_fd(), Wait::Now), Err(WireError::Closed)));
    }
}
