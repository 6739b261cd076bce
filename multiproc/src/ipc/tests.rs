//! The transport's unit tests: framing, large messages, the encode context.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;

use super::codec::{SCRATCH, decode, with_encoded, with_payload};
use super::frame::{
    Body, Frame, INLINE_MAX, Payload, TAG_BATCH, TAG_INLINE, TAG_MEMFD, WireError, memfd_with,
    recv, send, send_payload, send_spare, split_batch,
};
use super::spare::{self, SPARE_MAX};
use crate::sys::{self, Wait, socketpair};

/// Sends raw bytes (and descriptors) as one datagram, bypassing the framing.
fn raw(sock: &OwnedFd, bytes: &[u8], fds: &[RawFd]) {
    sys::sendmsg(sock.as_fd(), bytes, &[], fds).expect("sendmsg");
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
    assert!(
        matches!(frame.bytes, Body::Mapped(_) | Body::Spare(_)),
        "sealed, so mapped"
    );
    assert_eq!(&*frame.bytes, &big[..]);
    // An unsealed memfd from elsewhere is read, not mapped.
    let plain = std::fs::File::from(sys::memfd("plain", false).unwrap());
    plain.write_all_at(&big, 0).unwrap();
    let mut header = vec![TAG_MEMFD];
    header.extend_from_slice(&(big.len() as u64).to_le_bytes());
    sys::sendmsg(a.as_fd(), &header, &[], &[plain.as_raw_fd()]).unwrap();
    let frame = recv(b.as_fd(), Wait::Now).ok().unwrap();
    assert!(matches!(frame.bytes, Body::Heap(_)));
    assert_eq!(&*frame.bytes, &big[..]);
}

#[test]
fn a_large_value_is_encoded_straight_into_a_memfd() {
    let (a, b) = socketpair().unwrap();
    // A string well past one datagram, among small fields, and one just inline.
    let big = (7_u32, "x".repeat(INLINE_MAX * 5 + 17), "tail".to_string());
    let small = vec![1_u8; 100];
    for _ in 0..2 {
        let spilled = with_payload(&big, |payload, fds| {
            assert!(matches!(
                payload,
                Payload::Memfd(_, len) | Payload::Spare(_, len) if len > INLINE_MAX as u64
            ));
            send_payload(a.as_fd(), None, payload, fds, Wait::Now)
        });
        assert!(matches!(spilled, Ok(Ok(()))));
        let inline = with_payload(&small, |payload, fds| {
            assert!(matches!(payload, Payload::Inline(_)));
            send_payload(a.as_fd(), None, payload, fds, Wait::Now)
        });
        assert!(matches!(inline, Ok(Ok(()))));
        let frame = recv(b.as_fd(), Wait::Now).ok().unwrap();
        assert!(
            matches!(frame.bytes, Body::Mapped(_) | Body::Spare(_)),
            "sealed, so mapped"
        );
        let got: (u32, String, String) = decode(frame).unwrap();
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

/// A value decoded without descriptors takes the short way (no decoding context); one that
/// claims a descriptor anyway, or is not what it should be, still gets the context's error.
#[test]
fn a_value_without_descriptors_decodes_and_its_errors_keep_their_text() {
    use super::codec::decode_slice;
    use super::packed::Packed;
    assert_eq!(
        decode_slice::<(u64, String)>(&[7, 2, b'h', b'i'], Vec::new()),
        Ok((7, "hi".to_string()))
    );
    // A packed chunk (bytes, descriptor indices, count) that names descriptor 0, sent with none.
    let claims_one = postcard::to_allocvec(&(Vec::<u8>::new(), vec![0_u32], 0_u64)).unwrap();
    let error = decode_slice::<Packed>(&claims_one, Vec::new())
        .err()
        .expect("an error");
    assert!(error.contains("lacks the descriptor"), "{error}");
    let error = decode_slice::<String>(&[9, b'x'], Vec::new()).expect_err("too short");
    assert!(!error.is_empty());
}

/// A large message's bytes: `len` bytes that say which message they are at every offset, so
/// that one written over another (a spare reused too early) shows.
fn large(index: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| index ^ (i % 251) as u8).collect()
}

#[test]
fn large_messages_in_and_beyond_spares_arrive_intact_however_many_are_on_their_way() {
    let (a, b) = socketpair().unwrap();
    let sizes = [
        INLINE_MAX + 1,
        1 << 20,
        3 << 20,
        SPARE_MAX,
        SPARE_MAX + 1,
        9 << 20,
    ];
    let messages: Vec<Vec<u8>> = (0..12)
        .map(|i| large(i as u8, sizes[i % sizes.len()]))
        .collect();
    // All on their way at once (more than the spares a process keeps), then one at a time;
    // through `send` (encoded bytes) and through `with_payload` (encoded into the memory).
    for one_at_a_time in [false, true] {
        let mut got = Vec::new();
        for (i, message) in messages.iter().enumerate() {
            if i % 2 == 0 {
                send(a.as_fd(), None, message, &[], Wait::Now).ok().unwrap();
            } else {
                let sent = with_payload(message, |payload, fds| {
                    send_payload(a.as_fd(), None, payload, fds, Wait::Now)
                });
                assert!(matches!(sent, Ok(Ok(()))));
            }
            if one_at_a_time {
                got.push(recv(b.as_fd(), Wait::Now).ok().unwrap());
            }
        }
        while got.len() < messages.len() {
            got.push(recv(b.as_fd(), Wait::Now).ok().unwrap());
        }
        for (i, (frame, message)) in got.into_iter().zip(&messages).enumerate() {
            if message.len() > SPARE_MAX {
                assert!(matches!(frame.bytes, Body::Mapped(_)), "a fresh memfd");
            }
            if i % 2 == 0 {
                assert!(&*frame.bytes == message.as_slice(), "message {i}");
            } else {
                let bytes: Vec<u8> = decode(frame).unwrap();
                assert!(bytes == *message, "message {i}");
            }
        }
    }
}

#[test]
fn a_spare_whose_datagram_the_socket_refused_is_free_again() {
    let (a, _b) = socketpair().unwrap();
    // Fill the socket.
    while send(a.as_fd(), None, &[0; 1000], &[], Wait::Now).is_ok() {}
    let mut spare = spare::take().expect("a spare");
    spare.write(0, &large(1, INLINE_MAX + 1));
    let refused = send_spare(
        a.as_fd(),
        None,
        &spare,
        INLINE_MAX as u64 + 1,
        &[],
        Wait::Now,
    );
    assert!(matches!(refused, Err(WireError::WouldBlock)));
    assert!(spare.is_free());
    spare::give_back(spare);
}
