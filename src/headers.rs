//! Record headers: a small list of `(name, bytes)` pairs carried in the slot
//! next to key and value (Kafka-style), e.g. a correlation id, a reply-to
//! address, a content type.
//!
//! The wire encoding (the "headers block", drawn in `crate::layout`) is
//! built once by [`Headers`] and copied into the slot as it is; readers walk
//! it in place ([`HeaderView`]) or keep it as bytes in the owned
//! [`crate::Record`]. Every length in it is bounds-checked: a block whose
//! count or lengths do not add up exactly is a corrupt record
//! ([`crate::Polled::corrupt`]), never a panic.
//!
//! ```no_run
//! use shmq::{Headers, Producer, Consumer, TopicConfig, TopicManager};
//! let mgr = TopicManager::new()?;
//! let topic = mgr.open_or_create("orders", TopicConfig::default())?;
//! let mut producer = Producer::new(&topic)?;
//! let headers = Headers::new().with("trace-id", "4bf92f35").with("attempt", [1u8]);
//! producer.send_with(Some(b"order-17"), &headers, b"{\"qty\":3}")?;
//!
//! let mut consumer = Consumer::new(&topic, "audit")?;
//! for record in consumer.poll(10)? {
//!     assert_eq!(record.headers().get("trace-id"), Some(&b"4bf92f35"[..]));
//!     for (name, value) in record.headers().iter() {
//!         println!("{name} = {value:?}");
//!     }
//! }
//! # Ok::<(), shmq::Error>(())
//! ```

use crate::error::{Error, Result};
use crate::layout::{HEADERS_PREFIX, HEADER_ENTRY_PREFIX, KEY_LEN_MASK};
use crate::producer::{Producer, Sent};
use crate::wait;

/// Most headers one record may carry (the block's `count` is a `u16`).
pub const MAX_HEADERS: usize = u16::MAX as usize;
/// Longest header name in bytes (its length is a `u16`).
pub const MAX_HEADER_NAME: usize = u16::MAX as usize;

#[inline]
fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at.checked_add(2)?)?;
    Some(u16::from_le_bytes([s[0], s[1]]))
}

#[inline]
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// The length a headers block starting at `bytes` claims for itself (its
/// first word), if at least the fixed prefix is there and the length covers
/// it. Not a validation of the entries: see [`validate`].
#[inline]
pub(crate) fn claimed_len(bytes: &[u8]) -> Option<usize> {
    let len = u32_at(bytes, 0)? as usize;
    (len >= HEADERS_PREFIX).then_some(len)
}

/// Check a headers block at the start of `bytes` completely: its length
/// fits in `bytes`, its reserved word is zero, `count` is at least 1 and
/// exactly `count` entries fill
/// it, each entry's lengths stay inside it and each name is UTF-8. Returns
/// the block's length. Every arithmetic step is checked, so any input (a
/// scribbled slot, a fuzzer's bytes) gives `None` rather than a panic.
pub fn validate(bytes: &[u8]) -> Option<usize> {
    let len = claimed_len(bytes)?;
    let block = bytes.get(..len)?;
    let count = u16_at(block, 4)?;
    // A record without headers has no block: a block of none is not an
    // encoding shmq writes (it keeps the encoding canonical).
    if count == 0 || u16_at(block, 6)? != 0 {
        return None;
    }
    let mut at = HEADERS_PREFIX;
    for _ in 0..count {
        let (_, _, next) = entry_at(block, at)?;
        at = next;
    }
    (at == len).then_some(len)
}

/// The entry at `at` of `block`: `(name, value, offset after it)`.
#[inline]
fn entry_at(block: &[u8], at: usize) -> Option<(&str, &[u8], usize)> {
    let name_len = u16_at(block, at)? as usize;
    let value_len = u32_at(block, at.checked_add(2)?)? as usize;
    let name_at = at.checked_add(HEADER_ENTRY_PREFIX)?;
    let value_at = name_at.checked_add(name_len)?;
    let end = value_at.checked_add(value_len)?;
    let name = std::str::from_utf8(block.get(name_at..value_at)?).ok()?;
    let value = block.get(value_at..end)?;
    Some((name, value, end))
}

/// The headers of one record, borrowed: from an owned [`Headers`], a
/// [`crate::Record`], or (in place, zero-copy) from the slot itself in
/// [`crate::RecordView::headers`].
///
/// Iteration re-checks every bound as it goes, so a view whose bytes change
/// underneath (an in-place view lapped by the writer) ends early instead of
/// reading out of bounds.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct HeaderView<'a> {
    /// The encoded block (empty: no headers).
    block: &'a [u8],
}

impl<'a> HeaderView<'a> {
    /// A view of an encoded block (as stored in a slot), or `None` if it is
    /// not a valid block. An empty slice is a valid view of no headers.
    pub fn parse(block: &'a [u8]) -> Option<HeaderView<'a>> {
        if block.is_empty() {
            return Some(HeaderView { block });
        }
        (validate(block)? == block.len()).then_some(HeaderView { block })
    }

    /// A view of `block` that the caller has validated (or that is read in
    /// place and re-validated by iteration).
    pub(crate) fn trusted(block: &'a [u8]) -> HeaderView<'a> {
        HeaderView { block }
    }

    /// The `(name, value)` pairs in the order they were added.
    pub fn iter(&self) -> HeaderIter<'a> {
        HeaderIter {
            block: self.block,
            at: HEADERS_PREFIX,
            left: u16_at(self.block, 4).unwrap_or(0),
        }
    }

    /// The value of the first header named `name`.
    pub fn get(&self, name: &str) -> Option<&'a [u8]> {
        self.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// The value of the first header named `name`, if it is UTF-8.
    pub fn get_str(&self, name: &str) -> Option<&'a str> {
        self.get(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Number of headers.
    pub fn len(&self) -> usize {
        u16_at(self.block, 4).map_or(0, usize::from)
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The encoded block, as stored in the slot (empty: no headers).
    pub fn as_bytes(&self) -> &'a [u8] {
        self.block
    }

    /// An owned copy.
    pub fn to_headers(&self) -> Headers {
        Headers {
            block: self.block.to_vec(),
        }
    }
}

impl std::fmt::Debug for HeaderView<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.iter().map(|(n, v)| (n, String::from_utf8_lossy(v))))
            .finish()
    }
}

impl<'a> IntoIterator for HeaderView<'a> {
    type Item = (&'a str, &'a [u8]);
    type IntoIter = HeaderIter<'a>;
    fn into_iter(self) -> HeaderIter<'a> {
        self.iter()
    }
}

/// Iterator over `(name, value)` pairs of a [`HeaderView`].
#[derive(Clone, Debug)]
pub struct HeaderIter<'a> {
    block: &'a [u8],
    at: usize,
    left: u16,
}

impl<'a> Iterator for HeaderIter<'a> {
    type Item = (&'a str, &'a [u8]);
    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        match entry_at(self.block, self.at) {
            Some((name, value, next)) => {
                self.left -= 1;
                self.at = next;
                Some((name, value))
            }
            None => {
                self.left = 0;
                None
            }
        }
    }
}

/// An owned list of record headers, kept in its wire encoding so sending it
/// is one copy into the slot. Build it with [`Headers::with`] or
/// [`Headers::push`]; read it with [`Headers::get`] / [`Headers::iter`].
///
/// Names are UTF-8 (at most [`MAX_HEADER_NAME`] bytes), values any bytes;
/// the same name may appear more than once (`get` returns the first).
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Headers {
    /// The encoded block; empty when there are no headers (then a record is
    /// stored exactly as one sent without headers).
    block: Vec<u8>,
}

impl Headers {
    /// No headers (allocates nothing).
    pub const fn new() -> Headers {
        Headers { block: Vec::new() }
    }

    /// Add a header, builder style.
    ///
    /// # Panics
    /// If the name is longer than [`MAX_HEADER_NAME`], the value longer than
    /// `u32::MAX`, or there are already [`MAX_HEADERS`]; use
    /// [`Headers::push`] to get an error instead.
    #[must_use]
    pub fn with(mut self, name: &str, value: impl AsRef<[u8]>) -> Headers {
        if let Err(e) = self.push(name, value) {
            panic!("{e}");
        }
        self
    }

    /// Add a header.
    ///
    /// # Errors
    /// [`Error::InvalidHeader`] if the name is longer than
    /// [`MAX_HEADER_NAME`], the value longer than `u32::MAX` bytes, or the
    /// record already has [`MAX_HEADERS`] headers.
    pub fn push(&mut self, name: &str, value: impl AsRef<[u8]>) -> Result<()> {
        let value = value.as_ref();
        if name.len() > MAX_HEADER_NAME {
            return Err(Error::InvalidHeader(format!(
                "header name of {} bytes; at most {MAX_HEADER_NAME}",
                name.len()
            )));
        }
        let Ok(value_len) = u32::try_from(value.len()) else {
            return Err(Error::InvalidHeader(format!(
                "header {name:?} has a value of {} bytes; at most {}",
                value.len(),
                u32::MAX
            )));
        };
        if self.len() >= MAX_HEADERS {
            return Err(Error::InvalidHeader(format!(
                "more than {MAX_HEADERS} headers on one record"
            )));
        }
        let grown = self
            .block
            .len()
            .max(HEADERS_PREFIX)
            .checked_add(HEADER_ENTRY_PREFIX + name.len() + value.len())
            .and_then(|n| u32::try_from(n).ok());
        let Some(new_len) = grown else {
            return Err(Error::InvalidHeader(
                "headers block larger than 4 GiB".into(),
            ));
        };
        if self.block.is_empty() {
            self.block.extend_from_slice(&[0; HEADERS_PREFIX]);
        }
        self.block
            .extend_from_slice(&(name.len() as u16).to_le_bytes());
        self.block.extend_from_slice(&value_len.to_le_bytes());
        self.block.extend_from_slice(name.as_bytes());
        self.block.extend_from_slice(value);
        let count = self.len() as u16 + 1;
        self.block[0..4].copy_from_slice(&new_len.to_le_bytes());
        self.block[4..6].copy_from_slice(&count.to_le_bytes());
        Ok(())
    }

    /// Remove every header, keeping the allocation.
    pub fn clear(&mut self) {
        self.block.clear();
    }

    /// A borrowed view.
    pub fn view(&self) -> HeaderView<'_> {
        HeaderView { block: &self.block }
    }

    /// The `(name, value)` pairs in the order they were added.
    pub fn iter(&self) -> HeaderIter<'_> {
        self.view().iter()
    }

    /// The value of the first header named `name`.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.view().get(name)
    }

    /// The value of the first header named `name`, if it is UTF-8.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.view().get_str(name)
    }

    /// Number of headers.
    pub fn len(&self) -> usize {
        self.view().len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.block.is_empty()
    }

    /// Bytes the headers take in a slot (0 without headers); they count
    /// against the topic's slot size with key and value.
    pub fn encoded_len(&self) -> usize {
        self.block.len()
    }

    /// The encoded block as stored in a slot.
    pub fn as_bytes(&self) -> &[u8] {
        &self.block
    }

    /// Headers from an encoded block, checked completely.
    ///
    /// # Errors
    /// [`Error::InvalidHeader`] if `block` is not a valid headers block.
    pub fn from_bytes(block: &[u8]) -> Result<Headers> {
        HeaderView::parse(block)
            .map(|v| v.to_headers())
            .ok_or_else(|| Error::InvalidHeader("not a valid headers block".into()))
    }
}

impl std::fmt::Debug for Headers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.view().fmt(f)
    }
}

impl<N: AsRef<str>, V: AsRef<[u8]>> FromIterator<(N, V)> for Headers {
    /// # Panics
    /// As [`Headers::with`].
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Headers {
        let mut h = Headers::new();
        for (n, v) in iter {
            h = h.with(n.as_ref(), v);
        }
        h
    }
}

impl<'a> IntoIterator for &'a Headers {
    type Item = (&'a str, &'a [u8]);
    type IntoIter = HeaderIter<'a>;
    fn into_iter(self) -> HeaderIter<'a> {
        self.iter()
    }
}

impl Producer {
    /// Send a record with headers (and an optional key): to the key's
    /// partition as [`Producer::send_keyed`] if there is a key, else to the
    /// next partition in round-robin order. The headers count against the
    /// slot size with key and value ([`Headers::encoded_len`]).
    ///
    /// # Errors
    /// As [`Producer::send`]; [`Error::MessageTooLarge`] if headers, key
    /// and value together exceed the slot size.
    ///
    /// # Examples
    /// ```no_run
    /// # let mgr = shmq::TopicManager::new()?;
    /// # let topic = mgr.open_or_create("events", shmq::TopicConfig::default())?;
    /// let mut producer = shmq::Producer::new(&topic)?;
    /// let headers = shmq::Headers::new().with("content-type", "text/plain");
    /// producer.send_with(None, &headers, b"hello")?;
    /// # Ok::<(), shmq::Error>(())
    /// ```
    pub fn send_with(
        &mut self,
        key: Option<&[u8]>,
        headers: &Headers,
        value: &[u8],
    ) -> Result<Sent> {
        let i = match key {
            Some(k) => self.key_index(k),
            None => self.next_rr(),
        };
        self.send_headers_at(i, key, headers.as_bytes(), value)
    }

    /// Like [`Producer::send_with`], into a chosen partition.
    ///
    /// # Errors
    /// As [`Producer::send_with`], and [`Error::NotOwned`].
    pub fn send_with_to(
        &mut self,
        partition: u32,
        key: Option<&[u8]>,
        headers: &Headers,
        value: &[u8],
    ) -> Result<Sent> {
        let i = self.index_of(partition)?;
        self.send_headers_at(i, key, headers.as_bytes(), value)
    }

    /// The send path with a headers block: the claim / write / publish
    /// steps of `ring::Writer::write_slot`, with the body written by
    /// `MappedSlots::write_record` (the only writer of the headers flag).
    pub(crate) fn send_headers_at(
        &mut self,
        i: usize,
        key: Option<&[u8]>,
        block: &[u8],
        value: &[u8],
    ) -> Result<Sent> {
        let key_len = key.map_or(0, <[u8]>::len);
        let size = block.len() + key_len + value.len();
        if size > self.slot_size || key_len > KEY_LEN_MASK as usize {
            return Err(Error::MessageTooLarge {
                size,
                max: self.slot_size,
            });
        }
        let inner = &self.topic.inner;
        let o = &mut self.owned[i];
        let partition = o.partition;
        let part = inner.partition(partition)?;
        let hdr = part.header();
        let slots = part.slots();
        // As `Producer::send_at`: reserve the offset and wait for room, then
        // write, publish, and the durable topic's sync.
        o.reserve_one(inner, hdr, self.backpressure, self.send_timeout)?;
        let claim = o
            .writer
            .claim(hdr, &slots)
            .map_err(|e| inner.write_error(partition, e))?;
        slots.write_record(
            claim.offset() & part.geo.mask(),
            crate::producer::stamp(self.clock),
            key,
            block,
            value,
        );
        let offset = o.writer.publish_claimed(&slots, claim);
        if o.writer.commit(hdr) {
            wait::wake_all(inner.meta.meta_header());
        }
        inner.after_publish(partition, offset, offset.wrapping_add(1))?;
        Ok(Sent { partition, offset })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_exact_encoding() {
        let h = Headers::new()
            .with("a", b"xy")
            .with("bc", b"")
            .with("a", b"z");
        let b = h.as_bytes();
        // prefix: len, count, reserved; then entries of 6 + name + value.
        assert_eq!(b.len(), 8 + (6 + 1 + 2) + (6 + 2) + (6 + 1 + 1));
        assert_eq!(
            u32::from_le_bytes(b[0..4].try_into().unwrap()) as usize,
            b.len()
        );
        assert_eq!(&b[4..8], &[3, 0, 0, 0]);
        assert_eq!(validate(b), Some(b.len()));
        let pairs: Vec<_> = h.iter().collect();
        assert_eq!(
            pairs,
            vec![("a", &b"xy"[..]), ("bc", &b""[..]), ("a", &b"z"[..])]
        );
        assert_eq!(h.get("a"), Some(&b"xy"[..]));
        assert_eq!(h.get("nope"), None);
        assert_eq!(Headers::from_bytes(b).unwrap(), h);
        assert!(Headers::new().is_empty() && Headers::new().encoded_len() == 0);
    }

    #[test]
    fn every_scribbled_length_is_rejected_without_panic() {
        let h = Headers::new().with("name", b"value").with("k", b"v");
        let good = h.as_bytes().to_vec();
        // Every single-byte change of a length or count byte, to every value,
        // is either still exactly valid or rejected; never a panic, and
        // iteration stays in bounds.
        for at in [0usize, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13] {
            for v in 0..=255u8 {
                let mut b = good.clone();
                b[at] = v;
                let ok = validate(&b);
                if let Some(n) = ok {
                    assert!(n <= b.len());
                }
                let _ = HeaderView::trusted(&b).iter().count();
                if b != good && at < 8 {
                    assert_eq!(ok, None, "byte {at} = {v} accepted");
                }
            }
        }
        // Truncations are all rejected.
        for n in 0..good.len() {
            assert_eq!(validate(&good[..n]), None);
        }
        // Invalid UTF-8 names are rejected.
        let mut b = good.clone();
        b[14] = 0xFF;
        assert_eq!(validate(&b), None);
    }

    #[test]
    fn limits_are_errors() {
        let mut h = Headers::new();
        let long = "x".repeat(MAX_HEADER_NAME + 1);
        assert!(matches!(h.push(&long, b""), Err(Error::InvalidHeader(_))));
        assert!(h.is_empty());
    }
}
