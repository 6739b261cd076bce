//! Values to bytes and back: postcard, in a per-thread context that collects the
//! descriptors a value carries (channel ends, memory regions: see [`attach_fd`] and
//! [`take_fd`]), the receivers it moves out of this process, and the text of errors raised by
//! multiproc's own serializers (postcard keeps only the fact that there was one).

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use serde::de::DeserializeOwned;
use serde::{Serialize, de, ser};

use super::frame::{self, Frame, INLINE_MAX, MAX_FDS, Payload};
use super::pump::Inbox;
use super::{bulk, capture, spare};

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
    pub(super) static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// Receivers the message being encoded moves, `None` outside of [`with_encoded`].
    static MOVES: RefCell<Option<Vec<std::sync::Arc<Inbox>>>> =
        const { RefCell::new(None) };
    /// Set while [`replay_decode`] runs: [`take_fd`] hands out stand-ins.
    static REPLAY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// Set by [`not_sent`].
    static NOT_SENT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// Inside [`in_batch`]: one encoding context for many values.
    static BATCH: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
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
            *buf = postcard::to_extend(&bulk::Value(value), std::mem::take(buf))
                .map_err(|e| describe_with(e, || capture::serialize_error(value)))?;
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

/// Encodes each of `items` at the end of `out`, `gap` zero bytes before each (room for a
/// header), in one encoding context (no per-item buffer or thread-local setup): `each` gets
/// the byte range and the descriptors of every item. The values are handed over for good (as
/// to a message that was sent).
pub(crate) fn encode_each<T: Serialize>(
    items: impl IntoIterator<Item = T>,
    out: &mut Vec<u8>,
    gap: usize,
    mut each: impl FnMut(std::ops::Range<usize>, Vec<OwnedFd>),
) -> Result<(), String> {
    let saved = OUTGOING.with(|o| o.replace(Some(Vec::new())));
    let saved_moves = MOVES.with(|m| m.replace(Some(Vec::new())));
    let mut result = Ok(());
    for item in items {
        out.resize(out.len() + gap, 0);
        let start = out.len();
        match postcard::to_extend(&bulk::Value(&item), std::mem::take(out)) {
            Ok(buf) => *out = buf,
            Err(e) => {
                result = Err(describe_with(e, || capture::serialize_error(&item)));
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

/// Runs `f` in one encoding context, which [`encode_appending`] calls inside it share instead
/// of setting up their own (a pool worker encodes a chunk's outcomes so). The values encoded
/// there are handed over for good, as by [`encode_each`].
pub(crate) fn in_batch<R>(f: impl FnOnce() -> R) -> R {
    let saved = OUTGOING.with(|o| o.replace(Some(Vec::new())));
    let saved_moves = MOVES.with(|m| m.replace(Some(Vec::new())));
    let was = BATCH.with(|b| b.replace(true));
    let result = f();
    BATCH.with(|b| b.set(was));
    OUTGOING.with(|o| o.replace(saved));
    MOVES.with(|m| m.replace(saved_moves));
    result
}

/// Appends `value`'s encoding to `out` and returns the descriptors it carries: inside
/// [`in_batch`] straight into `out`, without a context or a copy of its own; elsewhere through
/// [`with_encoded`]. On an error `out` is as it was.
pub(crate) fn encode_appending<T: Serialize + ?Sized>(
    value: &T,
    out: &mut Vec<u8>,
) -> Result<Vec<OwnedFd>, String> {
    if !BATCH.with(std::cell::Cell::get) {
        let copied = with_encoded(value, |bytes, fds| {
            out.extend_from_slice(bytes);
            fds.iter()
                .map(OwnedFd::try_clone)
                .collect::<io::Result<Vec<_>>>()
        })?;
        return copied.map_err(|e| format!("cannot copy a descriptor of the value: {e}"));
    }
    let start = out.len();
    let moved = MOVES.with(|m| m.borrow().as_ref().map_or(0, Vec::len));
    match postcard::serialize_with_flavor(&bulk::Value(value), Append(out)) {
        Ok(()) => Ok(OUTGOING
            .with(|o| o.borrow_mut().as_mut().map(std::mem::take))
            .unwrap_or_default()),
        Err(e) => {
            out.truncate(start);
            // What this value recorded stays here: its descriptors close, its receivers
            // resume; those of the values before it go on.
            drop(OUTGOING.with(|o| o.borrow_mut().as_mut().map(std::mem::take)));
            let stay = MOVES.with(|m| m.borrow_mut().as_mut().map(|v| v.split_off(moved)));
            for inbox in stay.into_iter().flatten() {
                inbox.stay();
            }
            Err(describe_with(e, || capture::serialize_error(value)))
        }
    }
}

/// A postcard flavor that appends to a borrowed buffer.
struct Append<'a>(&'a mut Vec<u8>);

impl postcard::ser_flavors::Flavor for Append<'_> {
    type Output = ();

    #[inline]
    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        self.0.push(byte);
        Ok(())
    }

    #[inline]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// How much of a spilled message is collected before it is written to its memfd.
const SPILL_CHUNK: usize = 64 << 10;

/// A postcard flavor that keeps a message in `buf` while it fits a datagram, and past that
/// writes it to memory that travels with the datagram as it goes: a large message is copied
/// once, straight from the value into a reused memfd (see `spare`), or a fresh one for a
/// message larger than a spare; the per-thread buffer never grows past a chunk.
struct Spill<'a> {
    buf: &'a mut Vec<u8>,
    sink: Sink,
    written: u64,
    /// The system call that failed, if one did (postcard's errors carry no cause).
    failed: &'a mut Option<io::Error>,
}

/// Where a spilled message goes.
enum Sink {
    /// Still in `buf`.
    Inline,
    Spare(spare::Spare),
    File(std::fs::File),
}

/// A spilled message, ready to go.
enum Spilled {
    Spare(spare::Spare, u64),
    File(std::fs::File, u64),
}

impl Spill<'_> {
    fn io<T>(&mut self, r: io::Result<T>) -> postcard::Result<T> {
        r.map_err(|e| {
            *self.failed = Some(e);
            postcard::Error::SerializeBufferFull
        })
    }

    /// Writes what `buf` holds to the sink, choosing one first.
    fn flush(&mut self) -> postcard::Result<()> {
        let buf = std::mem::take(self.buf);
        let written = self.write(&buf);
        *self.buf = buf;
        self.buf.clear();
        written
    }

    /// Writes `data` after what the sink holds: in a spare while it fits there, else in a
    /// fresh memfd (that takes over what the spare held).
    fn write(&mut self, data: &[u8]) -> postcard::Result<()> {
        use std::io::Write;
        let end = self.written as usize + data.len();
        if matches!(self.sink, Sink::Inline) {
            let spare = (end <= spare::SPARE_MAX).then(spare::take).flatten();
            self.sink = match spare {
                Some(spare) => Sink::Spare(spare),
                None => {
                    let file = frame::message_memfd().map(std::fs::File::from);
                    Sink::File(self.io(file)?)
                }
            };
        }
        if let Sink::Spare(spare) = &mut self.sink
            && end <= spare::SPARE_MAX
        {
            spare.write(self.written as usize, data);
            self.written = end as u64;
            return Ok(());
        }
        if matches!(self.sink, Sink::Spare(_))
            && let Sink::Spare(spare) = std::mem::replace(&mut self.sink, Sink::Inline)
        {
            // The message outgrew its spare: a fresh memfd takes over what the spare held.
            let moved = frame::message_memfd()
                .map(std::fs::File::from)
                .and_then(|mut file| {
                    file.write_all(spare.written(self.written as usize))
                        .map(|()| file)
                });
            spare::give_back(spare);
            self.sink = Sink::File(self.io(moved)?);
        }
        let Sink::File(file) = &mut self.sink else {
            unreachable!("chosen above")
        };
        let written = file.write_all(data);
        self.io(written)?;
        self.written = end as u64;
        Ok(())
    }
}

impl postcard::ser_flavors::Flavor for Spill<'_> {
    type Output = Option<Spilled>;

    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        self.buf.push(byte);
        let limit = if matches!(self.sink, Sink::Inline) {
            INLINE_MAX
        } else {
            SPILL_CHUNK
        };
        if self.buf.len() > limit {
            self.flush()?;
        }
        Ok(())
    }

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        let inline = matches!(self.sink, Sink::Inline);
        if inline && self.buf.len() + data.len() <= INLINE_MAX {
            self.buf.extend_from_slice(data);
            return Ok(());
        }
        if data.len() < SPILL_CHUNK {
            self.buf.extend_from_slice(data);
            if self.buf.len() >= SPILL_CHUNK || inline {
                self.flush()?;
            }
            return Ok(());
        }
        // A large slice (a `Bytes`, a string) goes straight from the value to the sink.
        self.flush()?;
        self.write(data)
    }

    fn finalize(mut self) -> postcard::Result<Self::Output> {
        if matches!(self.sink, Sink::Inline) {
            return Ok(None);
        }
        self.flush()?;
        Ok(Some(
            match std::mem::replace(&mut self.sink, Sink::Inline) {
                Sink::Spare(spare) => Spilled::Spare(spare, self.written),
                Sink::File(file) => {
                    crate::sys::seal_final(file.as_fd());
                    Spilled::File(file, self.written)
                }
                Sink::Inline => unreachable!("checked above"),
            },
        ))
    }
}

impl Drop for Spill<'_> {
    /// A spare of a message that failed to encode goes back to the cache.
    fn drop(&mut self) {
        if let Sink::Spare(spare) = std::mem::replace(&mut self.sink, Sink::Inline) {
            spare::give_back(spare);
        }
    }
}

/// Like [`with_encoded`], but a message too large for one datagram is written to a reused or
/// a sealed memfd while it is encoded (see [`Spill`]); send the payload with
/// [`send_payload`](frame::send_payload).
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
                sink: Sink::Inline,
                written: 0,
                failed: &mut failed,
            };
            match (
                postcard::serialize_with_flavor(&bulk::Value(value), spill),
                failed,
            ) {
                (Ok(spilled), None) => Ok(spilled),
                (_, Some(e)) => Err(format!("cannot write a large message to memory: {e}")),
                (Err(e), None) => Err(describe_with(e, || capture::serialize_error(value))),
            }
        },
        |spilled, bytes, fds| match spilled {
            None => use_frame(Payload::Inline(bytes), fds),
            Some(Spilled::File(file, len)) => {
                use_frame(Payload::Memfd(&OwnedFd::from(file), len), fds)
            }
            Some(Spilled::Spare(spare, len)) => {
                let sent = use_frame(Payload::Spare(&spare, len), fds);
                spare::give_back(spare);
                sent
            }
        },
    )
}

/// Called inside [`with_encoded`]'s closure: the message was not sent, and the value goes
/// back to the caller.
pub(crate) fn not_sent() {
    NOT_SENT.with(|n| n.set(true));
}

/// Records a receiver that the message being encoded moves out of this process.
pub(crate) fn note_move(inbox: std::sync::Arc<Inbox>) {
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

/// Whether values without descriptors decode here without a context (see [`decode_slice`]):
/// outside another decoding.
pub(crate) fn plain_decoding() -> bool {
    INCOMING.with(|i| i.borrow().is_none())
}

/// Decodes `bytes`, which carry no descriptor, without a context, where [`plain_decoding`]
/// holds: `None` on a failure, which [`decode_slice`] explains.
pub(crate) fn decode_plain<T: DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    bulk::from_bytes::<T>(bytes).ok()
}

/// Decodes `bytes` with the descriptors `fds`; those the value did not claim are closed.
pub(crate) fn decode_slice<T: DeserializeOwned>(
    bytes: &[u8],
    fds: Vec<OwnedFd>,
) -> Result<T, String> {
    // Most values carry no descriptor (a pool task's argument and outcome, a number): those
    // decode without a context, outside another decoding (where a descriptor the bytes
    // claim by mistake could be one of the outer message's). A failure decodes again in a
    // context, for the error's text.
    if fds.is_empty()
        && plain_decoding()
        && let Some(value) = decode_plain(bytes)
    {
        return Ok(value);
    }
    CUSTOM.with(|c| c.borrow_mut().take());
    let saved = INCOMING.with(|i| i.replace(Some(fds.into_iter().map(Some).collect())));
    let decoded = bulk::from_bytes::<T>(bytes);
    INCOMING.with(|i| i.replace(saved));
    decoded.map_err(|e| describe_with(e, || replay_decode::<T>(bytes)))
}

/// Decodes `bytes` once more to capture a custom error's text (see [`capture`]), with
/// stand-in descriptors: the real ones went to the failed attempt.
fn replay_decode<T: DeserializeOwned>(bytes: &[u8]) -> Option<String> {
    let was = REPLAY.with(|r| r.replace(true));
    let text = capture::deserialize_error::<T>(bytes);
    REPLAY.with(|r| r.set(was));
    text
}

/// The text of a failed encoding or decoding: a custom error's, recorded by multiproc's own
/// serializers or else captured by `replay`; otherwise postcard's, explained.
fn describe_with(e: postcard::Error, replay: impl FnOnce() -> Option<String>) -> String {
    if matches!(
        e,
        postcard::Error::SerdeSerCustom | postcard::Error::SerdeDeCustom
    ) {
        if let Some(text) = CUSTOM.with(|c| c.borrow_mut().take()) {
            return text;
        }
        if let Some(text) = replay() {
            return text;
        }
    }
    describe(e)
}

fn describe(e: postcard::Error) -> String {
    use postcard::Error::*;
    match e {
        SerializeSeqLengthUnknown => format!("{e}: {NOT_SELF_DESCRIBING}"),
        WontImplement => format!("the type needs `deserialize_any`: {NOT_SELF_DESCRIBING}"),
        DeserializeUnexpectedEnd => {
            format!("the message ended early (was it sent as another type?); {NOT_SELF_DESCRIBING}")
        }
        DeserializeBadVarint
        | DeserializeBadBool
        | DeserializeBadChar
        | DeserializeBadUtf8
        | DeserializeBadOption
        | DeserializeBadEnum
        | DeserializeBadEncoding => {
            format!("{e} (was the message sent as another type?); {NOT_SELF_DESCRIBING}")
        }
        _ => e.to_string(),
    }
}

/// The likely cause of a value that encodes but cannot be decoded, or cannot be encoded at
/// all, and the fix (the book's "Runtime semantics" lists the limit).
const NOT_SELF_DESCRIBING: &str = "if the type uses `#[serde(flatten)]`, \
    `#[serde(skip_serializing_if = ..)]`, `#[serde(untagged)]` or an internally tagged enum \
    (anything that needs `deserialize_any`), it cannot cross: multiproc encodes with postcard, \
    which is not self-describing. Remove the attribute, or send the value as a string (JSON, \
    say) or `Bytes` inside the message";

/// A decoding error whose text survives postcard.
pub(crate) fn de_error<E: de::Error>(message: String) -> E {
    E::custom(record(message))
}

/// Remembers the text of a custom error for [`describe_with`]; returns it.
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
                "a message can carry at most {MAX_FDS} descriptors, and this one needs more; \
                 {}",
                frame::FD_COSTS
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
    if REPLAY.with(std::cell::Cell::get) {
        return std::fs::File::open("/dev/null")
            .map(OwnedFd::from)
            .map_err(|e| E::custom(record(format!("cannot open a stand-in descriptor: {e}"))));
    }
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

/// Serializes a byte slice as one block (serde's `serialize_bytes`), not element by element.
pub(crate) struct ByteBlock<'a>(pub(crate) &'a [u8]);

impl Serialize for ByteBlock<'_> {
    fn serialize<S: ser::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

/// Deserializes a [`ByteBlock`] (or, from a format without byte strings, a sequence of bytes)
/// into a `Vec<u8>`.
pub(crate) struct ByteBuf(pub(crate) Vec<u8>);

impl<'de> de::Deserialize<'de> for ByteBuf {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> de::Visitor<'de> for Visitor {
            type Value = ByteBuf;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<ByteBuf, E> {
                Ok(ByteBuf(v.to_vec()))
            }
            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<ByteBuf, E> {
                Ok(ByteBuf(v))
            }
            // Formats without byte strings send a sequence.
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<ByteBuf, A::Error> {
                let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
                while let Some(b) = seq.next_element()? {
                    v.push(b);
                }
                Ok(ByteBuf(v))
            }
        }
        d.deserialize_byte_buf(Visitor)
    }
}
