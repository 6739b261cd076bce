//! [`Packed`]: many encoded values, each with its descriptors, in one buffer: how a chunk of
//! tasks and its results travel between a pool and its workers.

use std::ops::Range;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use serde::de::Deserializer;
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};

use super::codec::{self as wire, ByteBlock, ByteBuf};

/// Entries laid out as `[u32 length][u16 descriptor count][bytes]`, the descriptors of all
/// entries in order beside them.
#[derive(Default)]
pub(crate) struct Packed {
    data: Vec<u8>,
    /// Instead of `data` (then empty): a span of a buffer that already holds the entries laid
    /// out (a pool call's arguments, encoded with [`HEADER`] bytes before each, see
    /// [`write_header`]), sent from there without a copy.
    shared: Option<(SharedBytes, Range<usize>)>,
    fds: Vec<OwnedFd>,
    len: usize,
}

/// A buffer that a [`Packed`] can send a span of.
pub(crate) type SharedBytes = Arc<dyn AsRef<[u8]> + Send + Sync>;

/// The bytes before each entry's own: its length and its descriptor count.
pub(crate) const HEADER: usize = 6;

/// The most bytes one entry holds: its length is a `u32`.
pub(crate) const ENTRY_MAX: usize = u32::MAX as usize;

/// Whether a value of `len` encoded bytes fits one entry; else the error, for a value that
/// is `what` (a task's arguments, its outcome).
pub(crate) fn check_entry(len: usize, what: &str) -> Result<(), String> {
    if len <= ENTRY_MAX {
        return Ok(());
    }
    Err(format!(
        "{what} encoded to {len} bytes, more than the {ENTRY_MAX} (4 GiB - 1) a pool task's \
         arguments or result may take: pass the data in a SharedMemory (it travels as a \
         descriptor, not as bytes) or split the task"
    ))
}

/// Writes the header of an entry of `len` bytes and `fds` descriptors into the first
/// [`HEADER`] bytes of `at`. `len` is at most [`ENTRY_MAX`] (see [`check_entry`]).
pub(crate) fn write_header(at: &mut [u8], len: usize, fds: usize) {
    debug_assert!(len <= ENTRY_MAX, "an entry of {len} bytes");
    at[..4].copy_from_slice(&(len as u32).to_le_bytes());
    at[4..HEADER].copy_from_slice(&(fds as u16).to_le_bytes());
}

impl Packed {
    /// The `len` entries, without descriptors, that lie laid out in `buffer` at `span`.
    pub(crate) fn shared(buffer: SharedBytes, span: Range<usize>, len: usize) -> Packed {
        Packed {
            shared: Some((buffer, span)),
            len,
            ..Packed::default()
        }
    }

    fn bytes(&self) -> &[u8] {
        match &self.shared {
            Some((buffer, span)) => &(**buffer).as_ref()[span.clone()],
            None => &self.data,
        }
    }

    /// The bytes, made its own first if they were shared.
    fn own(&mut self) -> &mut Vec<u8> {
        if let Some((buffer, span)) = self.shared.take() {
            self.data = (*buffer).as_ref()[span].to_vec();
        }
        &mut self.data
    }

    pub(crate) fn new() -> Packed {
        Packed::default()
    }

    /// An empty buffer with room for `entries` entries of `bytes` encoded bytes in all.
    pub(crate) fn with_capacity(entries: usize, bytes: usize) -> Packed {
        Packed {
            data: Vec::with_capacity(entries * HEADER + bytes),
            ..Packed::default()
        }
    }

    /// The number of entries.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Encodes `value` as the next entry, straight into the buffer (see
    /// [`wire::encode_appending`]). On an error (a value that does not encode, or one longer
    /// than [`ENTRY_MAX`]) nothing is appended.
    pub(crate) fn push_encoded<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), String> {
        let data = self.own();
        let header = data.len();
        data.extend_from_slice(&[0; HEADER]);
        let encoded = wire::encode_appending(value, data).and_then(|fds| {
            let len = data.len() - header - HEADER;
            check_entry(len, "a task's result").map(|()| (fds, len))
        });
        match encoded {
            Ok((fds, len)) => {
                let mut at = [0; HEADER];
                write_header(&mut at, len, fds.len());
                data[header..header + HEADER].copy_from_slice(&at);
                self.fds.extend(fds);
                self.len += 1;
                Ok(())
            }
            Err(e) => {
                data.truncate(header);
                Err(e)
            }
        }
    }

    /// Appends one encoded value and (copies of) its descriptors.
    pub(crate) fn push(&mut self, bytes: &[u8], fds: &[OwnedFd]) -> std::io::Result<()> {
        let mut copies = Vec::with_capacity(fds.len());
        for fd in fds {
            copies.push(fd.try_clone()?);
        }
        self.push_owned(bytes, copies);
        Ok(())
    }

    pub(crate) fn push_owned(&mut self, bytes: &[u8], fds: Vec<OwnedFd>) {
        let mut header = [0; HEADER];
        write_header(&mut header, bytes.len(), fds.len());
        let data = self.own();
        data.extend_from_slice(&header);
        data.extend_from_slice(bytes);
        self.fds.extend(fds);
        self.len += 1;
    }

    /// Whether any entry carries descriptors.
    pub(crate) fn carries_fds(&self) -> bool {
        !self.fds.is_empty()
    }

    /// The bytes the entries take, their headers included.
    pub(crate) fn encoded_len(&self) -> usize {
        self.bytes().len()
    }

    /// The entries, in order, each with its descriptors.
    pub(crate) fn into_entries(mut self) -> Entries {
        self.own();
        Entries {
            data: self.data,
            at: 0,
            fds: self.fds.into_iter(),
        }
    }
}

/// The entries of a [`Packed`], taken one at a time.
pub(crate) struct Entries {
    data: Vec<u8>,
    at: usize,
    fds: std::vec::IntoIter<OwnedFd>,
}

impl Entries {
    /// The next entry's bytes and descriptors; `None` at the end or on malformed data.
    pub(crate) fn next_entry(&mut self) -> Option<(&[u8], Vec<OwnedFd>)> {
        let header = self.data.get(self.at..self.at + HEADER)?;
        let len = u32::from_le_bytes(header[..4].try_into().ok()?) as usize;
        let nfds = u16::from_le_bytes(header[4..6].try_into().ok()?) as usize;
        let start = self.at + HEADER;
        let bytes = self.data.get(start..start + len)?;
        self.at = start + len;
        let fds = self.fds.by_ref().take(nfds).collect();
        Some((bytes, fds))
    }
}

impl Serialize for Packed {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut indices = Vec::with_capacity(self.fds.len());
        for fd in &self.fds {
            indices.push(wire::attach_fd(fd.as_fd(), "pool task")?);
        }
        (ByteBlock(self.bytes()), indices, self.len as u64).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Packed {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (ByteBuf(data), indices, len) = <(ByteBuf, Vec<u32>, u64)>::deserialize(d)?;
        let mut fds = Vec::with_capacity(indices.len());
        for i in indices {
            fds.push(wire::take_fd(i, "pool task")?);
        }
        Ok(Packed {
            data,
            shared: None,
            fds,
            len: len as usize,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipc::frame;
    use crate::sys::{self, Wait};
    use std::os::fd::AsRawFd;

    fn entries(packed: Packed) -> Vec<(Vec<u8>, usize)> {
        let mut entries = packed.into_entries();
        let mut out = Vec::new();
        while let Some((bytes, fds)) = entries.next_entry() {
            out.push((bytes.to_vec(), fds.len()));
        }
        out
    }

    #[test]
    fn entries_come_back_in_order_with_their_descriptors() {
        let (r, w) = sys::pipe(false).unwrap();
        let mut packed = Packed::new();
        packed.push(b"one", &[]).unwrap();
        packed.push(b"two", &[r, w]).unwrap();
        packed.push_owned(b"", Vec::new());
        assert_eq!(packed.len(), 3);
        let want = vec![(b"one".to_vec(), 0), (b"two".to_vec(), 2), (Vec::new(), 0)];
        assert_eq!(entries(packed), want);
    }

    #[test]
    fn an_entry_longer_than_its_u32_length_is_refused_with_the_cause_and_the_fix() {
        assert_eq!(check_entry(ENTRY_MAX, "a task's arguments"), Ok(()));
        let e = check_entry(ENTRY_MAX + 1, "a task's arguments").unwrap_err();
        assert!(
            e.starts_with("a task's arguments encoded to 4294967296 bytes"),
            "{e}"
        );
        assert!(e.contains("4294967295 (4 GiB - 1)"), "{e}");
        assert!(e.contains("SharedMemory"), "{e}");
    }

    /// A value whose serialization fails halfway, after writing some bytes.
    struct FailsLate;

    impl Serialize for FailsLate {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use serde::ser::{Error, SerializeTuple};
            let mut t = s.serialize_tuple(2)?;
            t.serialize_element(&vec![7_u8; 100])?;
            let _ = t;
            Err(S::Error::custom("refused halfway"))
        }
    }

    #[test]
    fn values_encoded_in_a_batch_are_the_entries_a_failed_one_leaves_nothing() {
        let encoded = |value: &dyn Fn(&mut Packed)| {
            let mut packed = Packed::new();
            value(&mut packed);
            entries(packed)
        };
        let pushes = |packed: &mut Packed| {
            packed.push_encoded(&(3_u32, "three")).unwrap();
            let e = packed.push_encoded(&FailsLate).unwrap_err();
            assert!(e.contains("refused halfway"), "{e}");
            packed.push_encoded(&vec![4_u8; 300]).unwrap();
        };
        // In a batch and alone: the same entries, nothing of the failed value among them.
        let batched = wire::in_batch(|| encoded(&pushes));
        let alone = encoded(&pushes);
        assert_eq!(batched, alone);
        assert_eq!(batched.len(), 2);
        let first: (u32, String) = wire::decode_slice(&batched[0].0, Vec::new()).unwrap();
        assert_eq!(first, (3, "three".to_string()));
        let second: Vec<u8> = wire::decode_slice(&batched[1].0, Vec::new()).unwrap();
        assert_eq!(second, vec![4; 300]);
    }

    #[test]
    fn malformed_data_ends_the_entries() {
        let packed = Packed {
            data: vec![9, 0, 0, 0, 0, 0, 1, 2],
            shared: None,
            fds: Vec::new(),
            len: 1,
        };
        assert!(entries(packed).is_empty());
    }

    #[test]
    fn a_packed_value_crosses_a_socket_with_its_descriptors() {
        let (a, b) = sys::socketpair().unwrap();
        let (r, _w) = sys::pipe(false).unwrap();
        let mut packed = Packed::new();
        packed.push(b"x", &[r.try_clone().unwrap()]).unwrap();
        packed.push(b"yz", &[]).unwrap();
        wire::with_encoded(&packed, |bytes, fds| {
            frame::send(a.as_fd(), None, bytes, fds, Wait::Now)
        })
        .unwrap()
        .unwrap();
        let got: Packed = wire::decode(frame::recv(b.as_fd(), Wait::Now).unwrap()).unwrap();
        let mut got = got.into_entries();
        let (bytes, fds) = got.next_entry().unwrap();
        assert_eq!((bytes, fds.len()), (&b"x"[..], 1));
        assert_ne!(fds[0].as_raw_fd(), r.as_raw_fd(), "a copy, received");
        assert_eq!(
            got.next_entry().map(|(b, f)| (b.to_vec(), f.len())),
            Some((b"yz".to_vec(), 0))
        );
        assert!(got.next_entry().is_none());
    }
}
