//! The transport under every mailbox and every child's bootstrap: connected Unix
//! `SOCK_SEQPACKET` socket pairs, one frame per datagram, with file descriptors (channel
//! ends, memory regions) attached as `SCM_RIGHTS`.
//!
//! One datagram is one whole message, so several processes can read one socket (a
//! [`Queue`](crate::Queue)) and the kernel hands each message to exactly one of them. A
//! message larger than [`INLINE_MAX`] travels in a memfd attached to a small datagram (one
//! of the sender's reused `spare`s, or a fresh sealed one), so no message is ever split into
//! fragments.
//!
//! Values are encoded by `codec`; this file only moves their bytes and descriptors. Every
//! socket and every received descriptor is close-on-exec.

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;

use super::spare::{self, SPARE_MAX, Spare};
use crate::sys::{self, Wait};

/// The largest message sent inline; larger ones go through a memfd.
pub(crate) const INLINE_MAX: usize = 64 * 1024;
/// Descriptors one message may carry (the kernel's `SCM_MAX_FD` is 253; one is kept for the
/// memfd of a large message).
pub(crate) const MAX_FDS: usize = 252;

pub(super) const TAG_INLINE: u8 = 0;
pub(super) const TAG_MEMFD: u8 = 1;
/// Several small messages without descriptors in one datagram, each prefixed by its length
/// (u32, little endian): see [`Batch`].
pub(super) const TAG_BATCH: u8 = 2;
/// A large message in a sender's reusable memfd (see `spare`), freed once decoded.
pub(super) const TAG_SPARE: u8 = 3;

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
    Mapped(sys::Mapping),
    /// One message of a batch: a range of the batch's buffer.
    Shared(std::sync::Arc<Vec<u8>>, std::ops::Range<usize>),
    /// A large message in its sender's reusable memfd, mapped (see `spare`).
    Spare(spare::Received),
}

impl std::ops::Deref for Body {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Body::Heap(v) => v,
            // SAFETY: the mapping holds `len` readable bytes until it drops; the seals that
            // `map_message` checked keep the file from shrinking under it (which would
            // fault) or changing.
            Body::Mapped(m) => unsafe { std::slice::from_raw_parts(m.as_ptr(), m.len()) },
            Body::Shared(buf, range) => &buf[range.clone()],
            Body::Spare(received) => received.bytes(),
        }
    }
}

/// Maps `len` bytes of a received message's memfd when its seals make that safe, else reads
/// them (a memfd from elsewhere could shrink under a mapping).
fn map_message(file: &std::fs::File, len: usize) -> io::Result<Body> {
    if len > 0
        && sys::is_sealed_final(file.as_fd())
        && let Ok(mapping) = sys::Mapping::new(file.as_fd(), len, false, true)
    {
        return Ok(Body::Mapped(mapping));
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

/// Sends one message: `bytes` and the descriptors `fds` (which stay open here). When the
/// socket is full, rings `doorbell` (see `pump`) before waiting for room.
pub(crate) fn send(
    sock: BorrowedFd<'_>,
    doorbell: Option<BorrowedFd<'_>>,
    bytes: &[u8],
    fds: &[OwnedFd],
    wait: Wait,
) -> Result<(), WireError> {
    if bytes.len() > INLINE_MAX
        && bytes.len() <= SPARE_MAX
        && let Some(mut spare) = spare::take()
    {
        spare.write(0, bytes);
        let sent = send_spare(sock, doorbell, &spare, bytes.len() as u64, fds, wait);
        spare::give_back(spare);
        return sent;
    }
    if bytes.len() <= INLINE_MAX && fds.is_empty() {
        // The common message: no descriptor list to build.
        return send_datagram(sock, doorbell, &[TAG_INLINE], bytes, &[], wait);
    }
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
        return Err(too_many_fds(fds.len()));
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
    use io::ErrorKind::*;
    loop {
        match sys::sendmsg(sock, header, body, raw) {
            Ok(()) => return Ok(()),
            Err(e) => match e.kind() {
                WouldBlock => {
                    if let Some(doorbell) = doorbell {
                        super::pump::ring(doorbell);
                    }
                    if !sys::poll_one(sock, sys::POLLOUT, wait)? {
                        return Err(WireError::WouldBlock);
                    }
                }
                Interrupted => {}
                BrokenPipe | ConnectionReset | NotConnected => return Err(WireError::Closed),
                _ => return Err(WireError::Io(e)),
            },
        }
    }
}

/// What each kind of value costs in descriptors, for the errors of a message that needs more
/// than [`MAX_FDS`].
pub(crate) const FD_COSTS: &str = "an unbounded Sender or Receiver takes 2, a bounded one 3 \
    (a Receiver also those of the messages waiting in it), a Queue 4, a SharedMemory \
    1: send fewer ends per message, or a Queue instead of \
    many channels";

/// The error for a message with more descriptors than a datagram carries.
fn too_many_fds(count: usize) -> WireError {
    WireError::Io(io::Error::other(format!(
        "a message can carry at most {MAX_FDS} descriptors, this one needs {count}; {FD_COSTS}"
    )))
}

thread_local! {
    /// Each thread's receive buffer, big enough for any inline message.
    static RECV_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Receives one message. [`WireError::Closed`] means end of file: every peer is gone.
///
/// [`Wait::Forever`] blocks in `recvmsg` itself (one system call per message); the other waits
/// poll first.
pub(crate) fn recv(sock: BorrowedFd<'_>, wait: Wait) -> Result<Frame, WireError> {
    let nonblocking = !matches!(wait, Wait::Forever);
    let mut reset = false;
    loop {
        let received = RECV_BUF.with(|buf| {
            let mut buf = buf.borrow_mut();
            if buf.len() < INLINE_MAX + 16 {
                buf.resize(INLINE_MAX + 16, 0);
            }
            sys::recvmsg(sock, &mut buf, nonblocking).map(|(n, fds)| parse(&buf[..n], fds))
        });
        match received {
            Ok(frame) => return frame,
            Err(e) => match e.kind() {
                io::ErrorKind::WouldBlock => {
                    if !sys::poll_one(sock, sys::POLLIN, wait)? {
                        return Err(WireError::WouldBlock);
                    }
                }
                io::ErrorKind::Interrupted => {}
                // The peer closed with unread data on its own side. The kernel reports that
                // once, before any message still queued here: read on, and those messages
                // come, then the end of file. A second report means nothing is left.
                io::ErrorKind::ConnectionReset if !reset => reset = true,
                io::ErrorKind::ConnectionReset => return Err(WireError::Closed),
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
        // A message in memory: its length, then the memfd it lies in, first of the
        // descriptors.
        TAG_SPARE | TAG_MEMFD if rest.len() == 8 && !fds.is_empty() => {
            let len = u64::from_le_bytes(rest.try_into().expect("8 bytes"));
            let len = usize::try_from(len).map_err(io::Error::other)?;
            let file = std::fs::File::from(fds.remove(0));
            let bytes = if tag == TAG_SPARE {
                Body::Spare(spare::Received::map(&file, len)?)
            } else {
                if file.metadata()?.len() < len as u64 {
                    return Err(WireError::Io(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "a received message is shorter than its header says",
                    )));
                }
                map_message(&file, len)?
            };
            Ok(Frame {
                bytes,
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

/// A close-on-exec memfd holding `bytes`, sealed (see [`map_message`]).
pub(super) fn memfd_with(bytes: &[u8]) -> io::Result<OwnedFd> {
    let file = std::fs::File::from(message_memfd()?);
    file.write_all_at(bytes, 0)?;
    sys::seal_final(file.as_fd());
    Ok(file.into())
}

/// A new close-on-exec memfd for a message, that can be sealed.
pub(super) fn message_memfd() -> io::Result<OwnedFd> {
    sys::memfd("multiproc-message", true)
}

/// An encoded message on its way out: its bytes, or for a large one the memory they were
/// written to as they were encoded (a sealed memfd or a spare), and their length.
pub(crate) enum Payload<'a> {
    Inline(&'a [u8]),
    Memfd(&'a OwnedFd, u64),
    Spare(&'a Spare, u64),
}

/// Sends what [`with_payload`](super::codec::with_payload) encoded.
pub(crate) fn send_payload(
    sock: BorrowedFd<'_>,
    doorbell: Option<BorrowedFd<'_>>,
    payload: Payload<'_>,
    fds: &[OwnedFd],
    wait: Wait,
) -> Result<(), WireError> {
    match payload {
        Payload::Inline(bytes) => send(sock, doorbell, bytes, fds, wait),
        Payload::Memfd(memfd, len) => {
            send_in_memory(sock, doorbell, TAG_MEMFD, memfd.as_fd(), len, fds, wait)
        }
        Payload::Spare(spare, len) => send_spare(sock, doorbell, spare, len, fds, wait),
    }
}

/// Sends the header of a message of `len` bytes that lies in `memory` (a memfd, tagged
/// `tag`), with the descriptors `fds`.
fn send_in_memory(
    sock: BorrowedFd<'_>,
    doorbell: Option<BorrowedFd<'_>>,
    tag: u8,
    memory: BorrowedFd<'_>,
    len: u64,
    fds: &[OwnedFd],
    wait: Wait,
) -> Result<(), WireError> {
    if fds.len() > MAX_FDS {
        return Err(too_many_fds(fds.len()));
    }
    let mut raw: Vec<RawFd> = Vec::with_capacity(fds.len() + 1);
    raw.push(memory.as_raw_fd());
    raw.extend(fds.iter().map(|fd| fd.as_raw_fd()));
    let mut header = [0u8; 9];
    header[0] = tag;
    header[1..].copy_from_slice(&len.to_le_bytes());
    send_datagram(sock, doorbell, &header, &[], &raw, wait)
}

/// Sends a message of `len` bytes written to `spare`, marking it on its way first (and free
/// again if the send fails: nobody will release it then).
pub(super) fn send_spare(
    sock: BorrowedFd<'_>,
    doorbell: Option<BorrowedFd<'_>>,
    spare: &Spare,
    len: u64,
    fds: &[OwnedFd],
    wait: Wait,
) -> Result<(), WireError> {
    spare.sending();
    let sent = send_in_memory(sock, doorbell, TAG_SPARE, spare.fd(), len, fds, wait);
    if sent.is_err() {
        spare.not_sent();
    }
    sent
}
