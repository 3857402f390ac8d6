//! The partition ring: a single-writer, multi-reader seqlock over fixed slots.
//!
//! This module is pure protocol. It works on a [`PartitionHeader`] reference
//! and a [`SlotMemory`], so the same code runs on a mapped region in
//! production (`crate::slots::MappedSlots`) and on a heap ring of 2–4 slots
//! under loom (`loom-tests`).
//!
//! # Protocol
//!
//! Offset `o` lives in slot `o & (slots - 1)`. A slot's `seq` word is `0`
//! (never written), `2o + 1` (offset `o` being written) or `2o + 2` (holds
//! offset `o`).
//!
//! Writer, for offset `o` (see [`Writer::write_slot`], or [`Writer::claim`]
//! and [`Writer::publish_claimed`] for in-place writes):
//! 1. **claim**: CAS `seq` from the previous occupant's value to `2o + 1`
//!    (`AcqRel`). Losing the CAS to a writer with a newer lease (the header's
//!    writer word is no longer ours) means we were taken over: the write is
//!    rejected with [`WriteError::Fenced`], nothing copied. Losing it while
//!    the lease is still ours means a predecessor we fenced is finishing one
//!    last write of this offset: we keep its record (waiting while it is
//!    mid-copy) and take the next offset. Anything else is a scribbled word,
//!    taken back. `loom-tests/tests/takeover.rs` checks both races.
//! 2. `fence(Release)` — SYNC POINT "writing mark": a reader that sees any
//!    byte of the new body also sees the odd mark when it re-checks.
//! 3. copy lengths, timestamp, key and value into the slot body.
//! 4. **publish**: store `2o + 2` with `Release` — SYNC POINT "slot published".
//! 5. after one record or a batch: `cursor.fetch_max(o + 1, SeqCst)` —
//!    SYNC POINT "cursor": a reader that sees the cursor sees the slot. The
//!    same SeqCst operation orders the publish before the `waiters` check
//!    (a Dekker pair with a parking reader), so a waiter is never missed and
//!    nobody parked means no syscall.
//!
//! Reader, for offset `o` (see [`read`]; consumers first ask their cached copy
//! of the cursor whether `o` can be published yet, so a caught-up reader
//! polls the cursor line rather than the slot being claimed): load `seq`
//! with `Acquire` (pairs
//! with step 4). `2o + 2`: copy the body out, `fence(Acquire)` (pairs with
//! step 2), re-load `seq`; unchanged → the record; changed → lapped. Smaller
//! than `2o + 2` → not written yet. Larger → lapped: the reader is told how
//! many offsets it lost and resumes at the oldest one that can still be
//! intact. A torn record is never returned.

use crate::layout::{Geometry, PartitionHeader, RECLAIMED};
use crate::sync::{fence, spin_hint, AtomicU64, Ordering, PUBLISH};

/// Where a ring's slots live.
///
/// Implemented over mapped shared memory in production and over a heap array
/// of atomics in the loom models.
pub trait SlotMemory {
    /// The ring's validated geometry.
    fn geometry(&self) -> Geometry;
    /// The sequence word of slot `index` (`index < slots`).
    fn seq(&self, index: u64) -> &AtomicU64;
    /// Write a record body into slot `index`. The caller holds the slot
    /// (its `seq` is odd and was set by the caller's claim) and has checked
    /// `key.len() + value.len() <= slot_size`.
    fn write_body(&self, index: u64, timestamp_ns: u64, key: Option<&[u8]>, value: &[u8]);
    /// Copy slot `index`'s body into `out`. Returns `false` if the lengths
    /// stored in the slot are out of bounds (a torn or scribbled slot); the
    /// implementation must never read outside the slot either way.
    fn read_body(&self, index: u64, out: &mut RecordBuf) -> bool;
    /// Hint that slot `index` will be written soon (a write prefetch), so
    /// its lines are already owned when the claim CAS reaches them. Purely a
    /// performance hint; the default does nothing.
    #[inline]
    fn prefetch_for_write(&self, index: u64) {
        let _ = index;
    }
}

/// A reusable buffer a record is copied into (no allocation once it has grown).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecordBuf {
    /// Unix-epoch nanoseconds at which the producer wrote the record.
    pub timestamp_ns: u64,
    /// Key length in bytes, or `None` for a record without key.
    pub key_len: Option<u32>,
    /// Key bytes followed by value bytes.
    pub data: Vec<u8>,
}

impl RecordBuf {
    /// The key, if the record has one.
    pub fn key(&self) -> Option<&[u8]> {
        self.key_len
            .map(|k| &self.data[..(k as usize).min(self.data.len())])
    }
    /// The value.
    pub fn value(&self) -> &[u8] {
        let k = self.key_len.unwrap_or(0) as usize;
        &self.data[k.min(self.data.len())..]
    }
}

/// What a read of one offset found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadOutcome {
    /// The record at the requested offset was copied into the buffer.
    Record,
    /// That offset has not been published yet.
    NotYet,
    /// The writer overwrote the requested offset: `missed` offsets are lost
    /// to this reader and it should continue at `resume`.
    Lapped {
        /// Number of offsets skipped (`resume - requested`).
        missed: u64,
        /// The oldest offset that can still be intact.
        resume: u64,
    },
    /// The slot holds the requested offset but its lengths are impossible
    /// (scribbled by a buggy peer). The record is skipped; continue at the
    /// next offset.
    Corrupt,
}

/// Offsets at or beyond this are never valid (2^62: 146 years at one record
/// per nanosecond). Bounding them keeps `2o + 2` from wrapping, whatever a
/// caller seeks to or a scribbled cursor says.
pub const MAX_OFFSET: u64 = 1 << 62;

/// How many slots ahead of its claim a writer prefetches.
const PREFETCH_AHEAD: u64 = 8;

/// How many spins a writer waits for a fenced predecessor that is still
/// copying its last record into the slot the writer wants (see
/// [`Writer::claim`]) before it declares the slot abandoned.
const LATE_WRITE_WAIT: u32 = 1 << 16;

#[inline]
fn writing(offset: u64) -> u64 {
    offset.wrapping_mul(2).wrapping_add(1)
}

#[inline]
fn holds(offset: u64) -> u64 {
    offset.wrapping_mul(2).wrapping_add(2)
}

/// Read offset `offset` of the ring into `out`: the seqlock read of
/// [`read_with`] with the body copied out.
#[inline]
pub fn read<S: SlotMemory + ?Sized>(
    hdr: &PartitionHeader,
    mem: &S,
    offset: u64,
    out: &mut RecordBuf,
) -> ReadOutcome {
    match read_with(hdr, mem, offset, |index| {
        mem.read_body(index, out).then_some(())
    }) {
        ReadWith::Record { intact: true, .. } => ReadOutcome::Record,
        // Overwritten during the copy: the copy is discarded.
        ReadWith::Record { intact: false, .. } => lapped(hdr, mem.geometry(), offset),
        ReadWith::NotYet => ReadOutcome::NotYet,
        ReadWith::Lapped { missed, resume } => ReadOutcome::Lapped { missed, resume },
        ReadWith::Corrupt => ReadOutcome::Corrupt,
    }
}

fn lapped(hdr: &PartitionHeader, geo: Geometry, offset: u64) -> ReadOutcome {
    // SYNC POINT "cursor": offsets below `cursor` are published, so the
    // oldest that can still be in the ring is `cursor - slots`. If the writer
    // is already overwriting that one too, the next read laps again and
    // counts it, so the total missed stays exact without skipping a record
    // that is still intact.
    let cursor = hdr.cursor.load(Ordering::Acquire);
    if cursor <= offset {
        // No sign the writer got past `offset`: either a batch larger than
        // the ring whose cursor update is still to come, or a scribbled
        // sequence word. Either way, wait: the writer's next pass over this
        // slot (or its cursor update) settles it; skipping ahead here would
        // move the reader past the write cursor.
        return ReadOutcome::NotYet;
    }
    let resume = cursor
        .saturating_sub(geo.slots)
        .max(offset.saturating_add(1));
    ReadOutcome::Lapped {
        missed: resume - offset,
        resume,
    }
}

/// Why a write was refused. Nothing was written in either case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteError {
    /// Another writer took the partition over (its epoch is newer).
    Fenced {
        /// The writer word now in the header.
        current: u64,
    },
    /// The region's lease was reclaimed by the supervisor.
    LeaseExpired,
}

/// The writing end of one ring. Holds the writer's private cursor; exactly one
/// live `Writer` per partition is guaranteed by the writer lease
/// (`crate::writer_lease`).
#[derive(Debug)]
pub struct Writer {
    next: u64,
    me: u64,
}

impl Writer {
    /// A writer that owns the lease word `me` and resumes at the header's
    /// cursor, repairing what a dead predecessor left behind: a slot published
    /// but not yet counted in the cursor is skipped over; a slot left
    /// half-written (odd `seq`) after `wait` spins is reset to "empty" so its
    /// torn bytes can never be read.
    pub fn resume<S: SlotMemory + ?Sized>(
        hdr: &PartitionHeader,
        mem: &S,
        me: u64,
        wait: impl Fn(),
    ) -> Writer {
        let geo = mem.geometry();
        // A scribbled cursor is clamped; the loop below advances at most
        // `slots` times (a run of published slots cannot be longer).
        let mut next = hdr
            .cursor
            .load(Ordering::Acquire)
            .min(MAX_OFFSET - geo.slots - 1);
        let mut tries = 0u32;
        loop {
            let seq = mem.seq(next & geo.mask());
            let s = seq.load(Ordering::Acquire);
            if s == holds(next) {
                next += 1;
                continue;
            }
            if s == writing(next) {
                if tries < 64 {
                    tries += 1;
                    wait();
                    continue;
                }
                // The previous writer died mid-copy: mark the slot as holding
                // nothing newer than `next - 1`, which readers treat as "not
                // yet written" for `next`.
                let _ = seq.compare_exchange(
                    s,
                    holds(next.wrapping_sub(1)),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                );
                continue;
            }
            break;
        }
        if next != hdr.cursor.load(Ordering::Relaxed) {
            hdr.cursor.fetch_max(next, Ordering::SeqCst);
        }
        Writer { next, me }
    }

    /// The offset the next publish will get.
    pub fn next_offset(&self) -> u64 {
        self.next
    }

    /// The writer lease word this writer owns.
    pub fn lease_word(&self) -> u64 {
        self.me
    }

    /// Check that this writer may still write: its lease word is still the
    /// header's and the region was not reclaimed. One load of the read-mostly
    /// control line.
    #[inline]
    pub fn check<S: SlotMemory + ?Sized>(
        &self,
        hdr: &PartitionHeader,
        _mem: &S,
    ) -> Result<(), WriteError> {
        let current = hdr.writer.load(Ordering::Acquire);
        if current != self.me {
            return Err(WriteError::Fenced { current });
        }
        if hdr.lease.expiry.load(Ordering::Relaxed) == RECLAIMED {
            return Err(WriteError::LeaseExpired);
        }
        Ok(())
    }

    /// Write one record into the next slot without advancing the shared
    /// cursor; [`Writer::commit`] makes a batch of these visible to cursor
    /// readers and wakes parked readers. Returns the record's offset.
    ///
    /// The caller has checked the record fits (`key + value <= slot_size`).
    #[inline]
    pub fn write_slot<S: SlotMemory + ?Sized>(
        &mut self,
        hdr: &PartitionHeader,
        mem: &S,
        timestamp_ns: u64,
        key: Option<&[u8]>,
        value: &[u8],
    ) -> Result<u64, WriteError> {
        let claim = self.claim(hdr, mem)?;
        mem.write_body(
            claim.offset & mem.geometry().mask(),
            timestamp_ns,
            key,
            value,
        );
        Ok(self.publish_claimed(mem, claim))
    }

    /// Publish the cursor after one or more [`Writer::write_slot`]s. Returns
    /// whether any reader is parked (the caller then wakes it).
    #[inline]
    pub fn commit(&self, hdr: &PartitionHeader) -> bool {
        // SYNC POINT "cursor": pairs with Acquire loads of the cursor; SeqCst
        // so it is totally ordered with a parking reader's `waiters` bump.
        hdr.cursor.fetch_max(self.next, Ordering::SeqCst);
        hdr.waiters.load(Ordering::SeqCst) != 0
    }
}

/// The offset of the oldest record a reader can still hope to read, given the
/// writer's cursor.
pub fn earliest(hdr: &PartitionHeader, geo: Geometry) -> u64 {
    hdr.cursor.load(Ordering::Acquire).saturating_sub(geo.slots)
}

/// The offset the next record will get (the "latest" position).
pub fn latest(hdr: &PartitionHeader) -> u64 {
    hdr.cursor.load(Ordering::Acquire)
}

// ---------------------------------------------------------------------------
// In-place protocol entry points (zero-copy reads and loaned writes).
//
// They follow exactly the steps of `read` and `Writer::write_slot` above, split
// so that the body can be used in place between them; `crate::zero_copy`
// builds `Consumer::poll_with` and `Producer::loan` on them.
// ---------------------------------------------------------------------------

/// What an in-place read of one offset found (see [`read_with`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadWith<T> {
    /// The closure ran on the slot holding the requested offset.
    Record {
        /// What the closure returned.
        output: T,
        /// `false` if the writer began overwriting the slot while the closure
        /// ran: the bytes it saw may be torn, so `output` must be discarded
        /// and the offset counts as lost.
        intact: bool,
    },
    /// That offset has not been published yet (the closure did not run).
    NotYet,
    /// The offset was overwritten before the read began (the closure did not
    /// run): as [`ReadOutcome::Lapped`].
    Lapped {
        /// Number of offsets skipped (`resume - requested`).
        missed: u64,
        /// The oldest offset that can still be intact.
        resume: u64,
    },
    /// The slot's lengths are impossible (the closure did not run): as
    /// [`ReadOutcome::Corrupt`].
    Corrupt,
}

/// Read offset `offset` in place: if its slot holds it, call `view` with the
/// slot index (the closure borrows the body where it lies and returns `None`
/// if the stored lengths are out of bounds), then re-validate the sequence
/// word. The same seqlock as [`read`], with the copy replaced by `view`.
#[inline]
pub fn read_with<S: SlotMemory + ?Sized, T>(
    hdr: &PartitionHeader,
    mem: &S,
    offset: u64,
    view: impl FnOnce(u64) -> Option<T>,
) -> ReadWith<T> {
    if offset >= MAX_OFFSET {
        return ReadWith::NotYet;
    }
    let geo = mem.geometry();
    let index = offset & geo.mask();
    let seq = mem.seq(index);
    let want = holds(offset);
    // SYNC POINT "slot published": pairs with the writer's PUBLISH store.
    let s1 = seq.load(Ordering::Acquire);
    if s1 < want {
        return ReadWith::NotYet;
    }
    if s1 == want {
        let output = view(index);
        // SYNC POINT "writing mark": pairs with the writer's fence(Release)
        // after its claim; if `view` saw any byte of a newer body, the re-load
        // below sees that body's odd mark (or later).
        fence(Ordering::Acquire);
        let intact = seq.load(Ordering::Relaxed) == want;
        match output {
            Some(output) => return ReadWith::Record { output, intact },
            None if intact => return ReadWith::Corrupt,
            None => {}
        }
    }
    match lapped(hdr, geo, offset) {
        ReadOutcome::Lapped { missed, resume } => ReadWith::Lapped { missed, resume },
        _ => ReadWith::NotYet,
    }
}

/// A slot claimed by [`Writer::claim`]: its `seq` says "writing `offset`"
/// until [`Writer::publish_claimed`] or [`Writer::abandon_claimed`] consumes
/// this token.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a claimed slot stays unreadable until it is published or abandoned"]
pub struct Claimed {
    offset: u64,
}

impl Claimed {
    /// The offset the claimed slot will hold.
    pub fn offset(&self) -> u64 {
        self.offset
    }
}

impl Writer {
    /// Claim the next slot for writing in place (steps 1–2 of the protocol:
    /// the claim CAS and the "writing mark" fence). The caller writes the
    /// body through the slot memory, then publishes or abandons the claim.
    /// Until then this writer must not write another slot.
    #[inline]
    pub fn claim<S: SlotMemory + ?Sized>(
        &mut self,
        hdr: &PartitionHeader,
        mem: &S,
    ) -> Result<Claimed, WriteError> {
        let geo = mem.geometry();
        let mut offset = self.next;
        let mut seq = mem.seq(offset & geo.mask());
        let mut expected = if offset >= geo.slots {
            holds(offset - geo.slots)
        } else {
            0
        };
        let mut waited = 0u32;
        loop {
            match seq.compare_exchange(
                expected,
                writing(offset),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                // An older value than we assumed (a repaired, abandoned or
                // never-used slot after a takeover): still ours to claim.
                Err(actual) if actual < writing(offset) && actual % 2 == 0 => expected = actual,
                Err(actual) => {
                    // Someone claimed or published this offset or a later one.
                    // A successor changes the writer word *before* claiming
                    // slots and our failed CAS read its claim with Acquire, so
                    // a word that is no longer ours means we were taken over.
                    let current = hdr.writer.load(Ordering::Acquire);
                    if current != self.me {
                        return Err(WriteError::Fenced { current });
                    }
                    if actual == holds(offset) {
                        // A predecessor we fenced finished one last write of
                        // this very offset (it passed its check before our
                        // takeover): that record is whole and stays; ours
                        // takes the next offset.
                        offset += 1;
                        self.next = offset;
                        seq = mem.seq(offset & geo.mask());
                        expected = if offset >= geo.slots {
                            holds(offset - geo.slots)
                        } else {
                            0
                        };
                        continue;
                    }
                    if actual == writing(offset) && waited < LATE_WRITE_WAIT {
                        // That predecessor is still copying it: let it finish.
                        waited += 1;
                        spin_hint();
                        continue;
                    }
                    // Anything else cannot come from a fenced writer of this
                    // offset: a buggy peer scribbled the word, or a writer
                    // died mid-copy long ago. Take the slot back instead of
                    // jamming the partition forever.
                    expected = actual;
                }
            }
        }
        // SYNC POINT "writing mark": orders the odd mark before the body.
        fence(Ordering::Release);
        // Ask for a slot a few records ahead now, so its claim finds the
        // line already owned instead of stalling on the reader's copy.
        mem.prefetch_for_write(offset.wrapping_add(PREFETCH_AHEAD) & geo.mask());
        Ok(Claimed { offset })
    }

    /// Publish a slot filled in place (step 4): readers may now read it.
    /// Like [`Writer::write_slot`], this does not advance the shared cursor;
    /// call [`Writer::commit`] afterwards.
    #[inline]
    pub fn publish_claimed<S: SlotMemory + ?Sized>(&mut self, mem: &S, claim: Claimed) -> u64 {
        let offset = claim.offset;
        debug_assert_eq!(offset, self.next, "one claim at a time");
        let seq = mem.seq(offset & mem.geometry().mask());
        // SYNC POINT "slot published": pairs with the reader's Acquire load.
        seq.store(holds(offset), PUBLISH);
        self.next = offset + 1;
        offset
    }

    /// Give a claimed slot up without publishing it. Its body may already be
    /// half overwritten, so it is marked as holding offset `offset - 1` (the
    /// repair `Writer::resume` applies to a dead writer's slot): a reader of
    /// `offset` sees "not yet", a reader of the slot's previous occupant sees
    /// "lapped", and the next claim of this offset succeeds.
    pub fn abandon_claimed<S: SlotMemory + ?Sized>(&mut self, mem: &S, claim: Claimed) {
        let offset = claim.offset;
        debug_assert_eq!(offset, self.next, "one claim at a time");
        let seq = mem.seq(offset & mem.geometry().mask());
        // SYNC POINT "slot published" (of nothing): Release so the stale
        // bytes written so far are ordered before the even mark, exactly as
        // for a publish; readers then see a value that matches no offset of
        // this slot they may still be waiting for.
        seq.store(holds(offset.wrapping_sub(1)), Ordering::Release);
    }
}
