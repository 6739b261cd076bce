//! The local transport under every mailbox and every child's bootstrap.
//!
//! Bottom up:
//! - [`frame`]: one message per datagram on a `SOCK_SEQPACKET` socket pair, descriptors
//!   attached as `SCM_RIGHTS`, a message over 64 KiB in a memfd (reused: `spare`), small
//!   messages batched.
//! - [`codec`]: values to bytes and back (postcard), in a per-thread context that collects the
//!   descriptors a value carries and the receivers it moves.
//! - `capture`: the text of a custom serde error that postcard dropped, found by walking the
//!   value again (failures only).
//! - [`packed`]: many encoded values in one buffer (a pool's chunk of tasks or results).
//! - [`pump`]: a receiving socket that drains into memory when its senders find it full.
//! - [`reactor`]: async readiness for any executor.
//! - [`shm`]: shared memory regions, and the eventfd semaphores of bounded mailboxes.
//! - [`spare`]: the memfds a process reuses for its large messages.
//! - [`ring`]: a queue's items in shared memory, safe from a kill of any process at any point.
//!
//! # The seam for another transport
//!
//! What is local here is [`frame`], [`pump`], [`reactor`], [`shm`] and [`ring`]: sockets,
//! descriptors and memory that only processes of one machine can share. [`codec`] is not: it turns a value
//! into bytes (plus descriptors, which a network transport refuses) and back, and is what a
//! second transport (the `cluster` feature's NATS, say) reuses. The mailboxes talk to this
//! layer through a few verbs: [`send_value`] / [`frame::send`] (put one encoded message),
//! [`frame::recv`] or [`pump::Inbox::recv`] (take one), [`codec::decode`], and
//! [`shm::Slots`] for a shared bound. A remote `Queue` or pool dispatch implements the same
//! verbs over its own connection in a module beside this one, and leaves this one untouched.

mod bulk;
mod capture;
pub(crate) mod codec;
pub(crate) mod frame;
pub(crate) mod packed;
pub(crate) mod pump;
pub(crate) mod reactor;
pub(crate) mod ring;
pub(crate) mod shm;
pub(crate) mod spare;
#[cfg(test)]
mod tests;

use std::os::fd::BorrowedFd;

use serde::Serialize;

pub(crate) use self::codec::{decode, with_encoded};
pub(crate) use self::frame::{Frame, WireError, recv, send};

use crate::sys::Wait;

/// Why [`send_value`] did not send.
#[derive(Debug)]
pub(crate) enum SendError {
    /// The value could not be encoded: the text says why.
    Encode(String),
    /// The socket did not take it.
    Wire(WireError),
}

/// Encodes `value` and sends it on `sock`, with the descriptors it carries: one message on a
/// socket that no pump drains (a child's bootstrap socket, a zygote's).
pub(crate) fn send_value<T: Serialize + ?Sized>(
    sock: BorrowedFd<'_>,
    value: &T,
    wait: Wait,
) -> Result<(), SendError> {
    match with_encoded(value, |bytes, fds| send(sock, None, bytes, fds, wait)) {
        Ok(sent) => sent.map_err(SendError::Wire),
        Err(message) => Err(SendError::Encode(message)),
    }
}
