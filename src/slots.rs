//! Raw access to the slots of a mapped partition: the only code that reads or
//! writes slot bytes in shared memory.
//!
//! Slot bodies are copied with plain `ptr::copy_nonoverlapping` while other
//! processes may be writing them: the seqlock in `crate::ring` discards any
//! copy that overlapped a write (the sequence word changed), so a torn copy is
//! never returned. This is the same technique Aeron, iceoryx2 and crossbeam's
//! `AtomicCell` fallback use; the copies go to and from process-private
//! buffers only, and every length read from a slot is bounds-checked against
//! the validated geometry before it is used.

use crate::headers;
use crate::layout::{Geometry, HAS_HEADERS, HAS_KEY, KEY_LEN_MASK, PARTITION_HEADER, SLOT_HEADER};
use crate::region::Region;
use crate::ring::{RecordBuf, SlotMemory};
use crate::sync::AtomicU64;

/// The slots of one mapped partition region.
pub struct MappedSlots<'a> {
    region: &'a Region,
    geo: Geometry,
}

impl<'a> MappedSlots<'a> {
    /// Slots of `region`, whose geometry `geo` was validated against its real
    /// size by [`Region::partition_geometry`].
    pub fn new(region: &'a Region, geo: Geometry) -> Self {
        assert!(
            region.len() >= geo.region_len,
            "geometry not validated against the region"
        );
        MappedSlots { region, geo }
    }

    #[inline]
    fn slot(&self, index: u64) -> *mut u8 {
        debug_assert!(index < self.geo.slots);
        let index = index & (self.geo.slots - 1);
        // SAFETY: index < slots, so the slot lies within
        // PARTITION_HEADER + slots * stride = region_len <= mapping length.
        unsafe {
            self.region
                .base()
                .add(PARTITION_HEADER + (index * self.geo.stride) as usize)
        }
    }

    /// Locate slot `index`'s body: timestamp, key and headers lengths, and
    /// the body's bytes (headers block, key, value). `None` if the stored
    /// lengths are out of bounds. The bytes may change under the caller
    /// (another process writes them): the caller must re-validate the
    /// slot's sequence word after using them, and validate the headers
    /// block (only its length is checked here).
    pub(crate) fn body(&self, index: u64) -> Option<Body> {
        let p = self.slot(index);
        // SAFETY: the slot header (24 bytes) is within the slot; unaligned
        // volatile reads of plain integers are valid for any bit pattern.
        let (val_len, key_word, ts) = unsafe {
            (
                p.add(8).cast::<u32>().read_volatile(),
                p.add(12).cast::<u32>().read_volatile(),
                p.add(16).cast::<u64>().read_volatile(),
            )
        };
        let key_len = key_word & KEY_LEN_MASK;
        let mut headers_len = 0u64;
        if key_word & HAS_HEADERS != 0 {
            if self.geo.slot_size < crate::layout::HEADERS_PREFIX as u64 {
                return None;
            }
            // SAFETY: the block's first 4 bytes lie inside the body
            // (slot_size >= HEADERS_PREFIX, checked above); any bit pattern
            // is a valid u32.
            headers_len = u64::from(unsafe { p.add(SLOT_HEADER).cast::<u32>().read_unaligned() });
            if headers_len < crate::layout::HEADERS_PREFIX as u64 {
                return None;
            }
        }
        let total = u64::from(val_len) + u64::from(key_len) + headers_len;
        if total > self.geo.slot_size {
            return None;
        }
        let key = (key_word & HAS_KEY != 0).then_some(key_len);
        Some(Body {
            timestamp_ns: ts,
            key_len: key,
            headers_len: headers_len as u32,
            // SAFETY: SLOT_HEADER + total <= SLOT_HEADER + slot_size <= stride.
            src: unsafe { p.add(SLOT_HEADER) },
            len: total as usize,
        })
    }

    /// Write a record with a headers block (`block`, a valid encoding from
    /// `crate::headers::Headers`, possibly empty) into claimed slot `index`.
    /// The caller has checked `block + key + value <= slot_size` and
    /// `key <= KEY_LEN_MASK` (asserted). An empty block writes exactly what
    /// `write_body` writes.
    pub(crate) fn write_record(
        &self,
        index: u64,
        timestamp_ns: u64,
        key: Option<&[u8]>,
        block: &[u8],
        value: &[u8],
    ) {
        let k = key.map_or(0, <[u8]>::len);
        let h = block.len();
        assert!(
            (h + k + value.len()) as u64 <= self.geo.slot_size && k <= KEY_LEN_MASK as usize,
            "caller checks the record fits"
        );
        let mut key_word = match key {
            Some(k) => k.len() as u32 | HAS_KEY,
            None => 0,
        };
        if h > 0 {
            key_word |= HAS_HEADERS;
        }
        let p = self.slot(index);
        // SAFETY: header words and body (h + k + value.len() <= slot_size
        // bytes, asserted) lie inside this slot; the caller holds the slot's
        // claim. Sources are process-private slices that cannot overlap the
        // mapping for writing (a caller passing bytes borrowed from the same
        // slot would be copying a record onto itself, which `copy` tolerates).
        unsafe {
            p.add(8).cast::<u32>().write_volatile(value.len() as u32);
            p.add(12).cast::<u32>().write_volatile(key_word);
            p.add(16).cast::<u64>().write_volatile(timestamp_ns);
            let body = p.add(SLOT_HEADER);
            if h > 0 {
                std::ptr::copy(block.as_ptr(), body, h);
            }
            if let Some(key) = key {
                std::ptr::copy(key.as_ptr(), body.add(h), k);
            }
            std::ptr::copy(value.as_ptr(), body.add(h + k), value.len());
        }
    }
}

/// Where a slot's body lies and how it is split (see [`MappedSlots::body`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Body {
    pub(crate) timestamp_ns: u64,
    pub(crate) key_len: Option<u32>,
    /// Bytes of headers block at the start of the body (0: none).
    pub(crate) headers_len: u32,
    src: *const u8,
    len: usize,
}

impl<'a> MappedSlots<'a> {
    /// Borrow slot `index`'s body where it lies, for an in-place read:
    /// `(body, headers block + key + value bytes)`, or `None` if the stored
    /// lengths are out of bounds or the headers block is malformed.
    ///
    /// The bytes are plain `u8`s inside the mapping, which outlives `'a`; but
    /// on an overwrite topic the writer may start rewriting them while they
    /// are borrowed (the seqlock race `read_body` tolerates for its copy).
    /// The caller (`crate::ring::read_with`) re-validates the slot's sequence
    /// word afterwards and reports the borrow as lapped if it changed; the
    /// borrower must treat the bytes as untrusted input either way.
    pub(crate) fn view(&self, index: u64) -> Option<(Body, &'a [u8])> {
        let body = self.body(index)?;
        // SAFETY: `src..src + len` lies inside slot `index` (bounds checked
        // by `body` against the validated geometry), inside the mapping that
        // `self.region: &'a Region` keeps alive for `'a`; every bit pattern is
        // a valid `u8`. Concurrent writes by another process are the seqlock
        // race described above and in the module docs.
        let bytes = unsafe { std::slice::from_raw_parts(body.src, body.len) };
        let h = body.headers_len as usize;
        if h > 0 && headers::validate(bytes) != Some(h) {
            return None;
        }
        Some((body, bytes))
    }

    /// Append slot `index`'s body (headers block + key + value bytes) to
    /// `out`, for a batch read: `(body, bytes appended)`, or `None` (nothing
    /// appended) if the stored lengths are out of bounds or the headers block
    /// of the copy is malformed. The copy races the writer exactly as
    /// [`SlotMemory::read_body`]'s does: the caller
    /// (`crate::ring::read_with`) re-validates the sequence word afterwards
    /// and drops the appended bytes if it changed (a torn headers block is
    /// then a lap, not a corrupt record).
    pub(crate) fn append_body(&self, index: u64, out: &mut Vec<u8>) -> Option<(Body, usize)> {
        let body = self.body(index)?;
        let len = body.len;
        out.reserve(len);
        let at = out.len();
        // SAFETY: `src..src+len` is inside the slot (checked by `body`); the
        // destination has spare capacity for `len` bytes (reserved) past its
        // initialised `at` bytes, and is process-private, so the ranges
        // cannot overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(body.src, out.as_mut_ptr().add(at), len);
            out.set_len(at + len);
        }
        let h = body.headers_len as usize;
        if h > 0 && out.get(at..).and_then(headers::validate) != Some(h) {
            out.truncate(at);
            return None;
        }
        Some((body, len))
    }

    /// Hint that slot `index` (a published one) will be read soon: a read
    /// prefetch of its first two lines (sequence word, header and body
    /// start). Purely a performance hint.
    #[inline]
    pub(crate) fn prefetch_read(&self, index: u64) {
        #[cfg(target_arch = "x86_64")]
        {
            let p = self.slot(index & (self.geo.slots - 1));
            let lines = (self.geo.stride as usize / crate::layout::LINE).min(2);
            for l in 0..lines {
                // SAFETY: `prefetcht0` is only a cache hint and never faults;
                // the address is inside the slot (l * 64 < stride), which is
                // inside the mapping.
                unsafe {
                    std::arch::asm!(
                        "prefetcht0 [{0}]",
                        in(reg) p.add(l * crate::layout::LINE),
                        options(nostack, preserves_flags, readonly)
                    );
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = index;
    }

    /// Start an in-place write into slot `index`, which the caller has
    /// claimed (`crate::ring::Writer::claim`): store the header for a value
    /// of `len` bytes without key (`len <= slot_size`, asserted).
    pub(crate) fn begin_loan(&self, index: u64, timestamp_ns: u64, len: usize) {
        assert!(
            len as u64 <= self.geo.slot_size,
            "caller checks the loan fits"
        );
        let p = self.slot(index);
        // SAFETY: the three header words lie inside this slot; the caller
        // holds the slot's claim, so no other writer stores to them.
        unsafe {
            p.add(8).cast::<u32>().write_volatile(len as u32);
            p.add(12).cast::<u32>().write_volatile(0);
            p.add(16).cast::<u64>().write_volatile(timestamp_ns);
        }
    }

    /// The first `len` body bytes of claimed slot `index`, for writing in
    /// place (`len <= slot_size`, asserted). They hold whatever an earlier
    /// record left there.
    ///
    /// The caller must hold the slot's claim for as long as the slice lives
    /// and must not call this again for the same slot while it does (the
    /// loan in `crate::zero_copy` derives the slice from `&mut self` each
    /// time, which guarantees both). Readers may copy these bytes meanwhile;
    /// they discard what they copied because the sequence word is odd.
    #[allow(clippy::mut_from_ref)]
    pub(crate) fn loan_body(&self, index: u64, len: usize) -> &'a mut [u8] {
        assert!(
            len as u64 <= self.geo.slot_size,
            "caller checks the loan fits"
        );
        let p = self.slot(index);
        // SAFETY: `SLOT_HEADER + len <= SLOT_HEADER + slot_size <= stride`,
        // so the range lies inside slot `index` within the mapping that
        // `self.region: &'a Region` keeps alive for `'a`. The caller holds
        // the slot's claim (single writer by the writer lease and the claim
        // CAS) and keeps at most one such slice alive, so nothing else in
        // any process writes these bytes while the `&mut` lives.
        unsafe { std::slice::from_raw_parts_mut(p.add(SLOT_HEADER), len) }
    }
}

impl SlotMemory for MappedSlots<'_> {
    #[inline]
    fn geometry(&self) -> Geometry {
        self.geo
    }

    #[inline]
    fn prefetch_for_write(&self, index: u64) {
        #[cfg(target_arch = "x86_64")]
        {
            let p = self.slot(index & (self.geo.slots - 1));
            // The sequence word with the record header, and the body's start.
            let lines = (self.geo.stride as usize / crate::layout::LINE).min(2);
            for l in 0..lines {
                // SAFETY: `prefetchw` is only a cache hint and never faults;
                // the address is inside the slot (l * 64 < stride), which is
                // inside the mapping. CPUs without PRFCHW execute it as a NOP.
                unsafe {
                    std::arch::asm!(
                        "prefetchw [{0}]",
                        in(reg) p.add(l * crate::layout::LINE),
                        options(nostack, preserves_flags, readonly)
                    );
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = index;
    }

    #[inline]
    fn seq(&self, index: u64) -> &AtomicU64 {
        // SAFETY: the slot starts on a 64-byte boundary (PARTITION_HEADER and
        // stride are multiples of 64), so its first 8 bytes are an aligned
        // AtomicU64 inside the mapping, which outlives `&self`.
        unsafe { &*self.slot(index).cast::<AtomicU64>() }
    }

    #[inline]
    fn write_body(&self, index: u64, timestamp_ns: u64, key: Option<&[u8]>, value: &[u8]) {
        self.write_record(index, timestamp_ns, key, &[], value);
    }

    #[inline]
    fn read_body(&self, index: u64, out: &mut RecordBuf) -> bool {
        let Some(body) = self.body(index) else {
            return false;
        };
        let len = body.len;
        out.timestamp_ns = body.timestamp_ns;
        out.key_len = body.key_len;
        out.headers_len = body.headers_len;
        out.data.clear();
        out.data.reserve(len);
        // SAFETY: `src..src+len` is inside the slot (checked by `body`); the
        // destination has capacity for `len` bytes (reserved) and is private.
        unsafe {
            std::ptr::copy_nonoverlapping(body.src, out.data.as_mut_ptr(), len);
            out.data.set_len(len);
        }
        // The headers block is checked on the private copy: a copy torn by
        // the writer fails here too, and `ring::read` then sees the changed
        // sequence word and reports a lap, not a corrupt record.
        let h = body.headers_len as usize;
        h == 0 || headers::validate(&out.data) == Some(h)
    }
}
