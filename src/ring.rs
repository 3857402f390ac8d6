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
//! and [`Writer::publish_claimed`] for in-place writes). No step is a locked
//! instruction:
//! 1. **reserve** (once per record, or once per batch, [`Writer::reserve`]):
//!    store the partition's claim word (`epoch | end`), pass the hot side of
//!    the asymmetric barrier, load the writer word — SYNC POINT "claim". A
//!    word that is no longer ours means we were taken over: the write is
//!    rejected with [`WriteError::Fenced`], no slot touched. A successor
//!    passes the heavy side (`membarrier`) after its lease CAS and before it
//!    loads the claim word ([`Writer::resume`]), so it either fences us here
//!    or sees our reservation and waits for those offsets to be published:
//!    two live writers never store into one slot. `loom-tests/tests/claim.rs`
//!    and `takeover.rs` check both races, with a writer fenced mid-copy.
//! 2. **claim**: store `2o + 1` into `seq` (plain), then `fence(Release)` —
//!    SYNC POINT "writing mark": a reader that sees any byte of the new body
//!    also sees the odd mark when it re-checks.
//! 3. copy lengths, timestamp, key and value into the slot body.
//! 4. **publish**: store `2o + 2` with `Release` — SYNC POINT "slot published".
//! 5. after one record or a batch: store the cursor `o + 1` with `Release` —
//!    SYNC POINT "cursor": a reader that sees the cursor sees the slot. Then
//!    the hot side of the asymmetric barrier and a load of `waiters` — SYNC
//!    POINT "park": a Dekker pair with a parking reader, whose side is
//!    [`park_barrier`], so a waiter is never missed and nobody parked means
//!    no syscall.
//!
//! The asymmetric barrier is `membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)` on
//! the rare side (parking, takeover) and a compiler fence on the hot side,
//! in processes registered for it (`os::barrier_mode`); elsewhere a SeqCst
//! fence on both sides, today's cost.
//!
//! Reader, for offset `o` (see [`read`]; consumers first ask their
//! [`CursorCache`] whether `o` can be published yet: below the cached cursor
//! it can, so a reader that is behind loads the cursor once per run of
//! records; a caught-up reader watches the sequence word of the slot it will
//! read next, which shares a line with the record's header and first 40 body
//! bytes, and loads the cursor only now and then): load `seq`
//! with `Acquire` (pairs
//! with step 4). `2o + 2`: copy the body out, `fence(Acquire)` (pairs with
//! step 2), re-load `seq`; unchanged → the record; changed → lapped. Smaller
//! than `2o + 2` → not written yet. Larger → lapped: the reader is told how
//! many offsets it lost and resumes at the oldest one that can still be
//! intact. A torn record is never returned.

use crate::layout::{Geometry, PartitionHeader, RECLAIMED};
use crate::sync::{fence, heavy_barrier, light_barrier, AtomicU64, Ordering, PUBLISH};

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
    /// Headers block (validated) then key bytes then value bytes.
    pub data: Vec<u8>,
    /// Bytes of headers block at the start of `data` (0: no headers).
    pub headers_len: u32,
}

impl RecordBuf {
    /// The key, if the record has one.
    pub fn key(&self) -> Option<&[u8]> {
        let h = (self.headers_len as usize).min(self.data.len());
        self.key_len
            .map(|k| &self.data[h..h.saturating_add(k as usize).min(self.data.len())])
    }
    /// The value.
    pub fn value(&self) -> &[u8] {
        let k = self.key_len.unwrap_or(0) as usize;
        let start = (self.headers_len as usize).saturating_add(k);
        &self.data[start.min(self.data.len())..]
    }
    /// The record's headers (empty if it has none).
    #[cfg(not(loom))]
    pub fn headers(&self) -> crate::headers::HeaderView<'_> {
        let h = (self.headers_len as usize).min(self.data.len());
        crate::headers::HeaderView::trusted(&self.data[..h])
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

/// How many times [`Writer::resume`] calls its `wait` for a predecessor's
/// reserved offsets to be published before it declares the predecessor dead.
const RESUME_TRIES: u32 = 64;

/// The claim word for writer lease word `me` reserving up to `end`
/// (exclusive): the lease's epoch in the high half, the low 32 bits of `end`
/// in the low half.
#[inline]
fn pack_claim(me: u64, end: u64) -> u64 {
    (me & !0xFFFF_FFFF) | (end & 0xFFFF_FFFF)
}

/// The end offset a claim word reserves beyond `base`: a writer reserves at
/// most a ring ahead of an offset it has not published yet, so the low 32
/// bits are widened to the offset in `(base, base + slots]` they denote.
/// `None` if the word reserves nothing beyond `base` (or was scribbled).
pub fn claimed_end(word: u64, base: u64, slots: u64) -> Option<u64> {
    let ahead = u64::from((word as u32).wrapping_sub(base as u32));
    let end = base.checked_add(ahead)?;
    (ahead != 0 && ahead <= slots && end < MAX_OFFSET).then_some(end)
}

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
        ReadWith::Record { intact: false, .. } => lapped(hdr, mem, offset),
        ReadWith::NotYet => ReadOutcome::NotYet,
        ReadWith::Lapped { missed, resume } => ReadOutcome::Lapped { missed, resume },
        ReadWith::Corrupt => ReadOutcome::Corrupt,
    }
}

/// What a reader of `offset` that found its slot overwritten (a newer
/// sequence word, or a copy torn by a new write) has lost: `Lapped` with the
/// exact count and where to resume, judged by the validated cursor, or
/// `NotYet` when the cursor gives no sign the writer got past `offset`.
pub fn lapped<S: SlotMemory + ?Sized>(hdr: &PartitionHeader, mem: &S, offset: u64) -> ReadOutcome {
    // SYNC POINT "cursor": offsets below `cursor` are published, so the
    // oldest that can still be in the ring is `cursor - slots`. If the writer
    // is already overwriting that one too, the next read laps again and
    // counts it, so the total missed stays exact without skipping a record
    // that is still intact. A cursor that fails validation (a scribbled
    // header) is replaced by the end the slots show (`checked_latest`), so a
    // wild cursor can neither send the reader beyond the writer nor make
    // `missed` absurd.
    let cursor = checked_latest(hdr, mem);
    if cursor <= offset {
        // No sign the writer got past `offset`: either a batch larger than
        // the ring whose cursor update is still to come, or a scribbled
        // sequence word. Either way, wait: the writer's next pass over this
        // slot (or its cursor update) settles it; skipping ahead here would
        // move the reader past the write cursor.
        return ReadOutcome::NotYet;
    }
    let resume = cursor
        .saturating_sub(mem.geometry().slots)
        .max(offset.saturating_add(1));
    ReadOutcome::Lapped {
        missed: resume.saturating_sub(offset),
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
    /// The ring's slot count (the largest reservation).
    slots: u64,
    /// End (exclusive) of this writer's current reservation: offsets below
    /// it may be written without another check (see [`Writer::reserve`]).
    reserved: u64,
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
        // The cursor is believed only if the slots agree with it (see
        // `believable`); a wild one (scribbled by a buggy or hostile peer) is
        // replaced by the end the slots show, so a takeover never resumes
        // near 2^62. Either way the walk below is bounded: a run of published
        // slots cannot be longer than the ring.
        let raw = hdr.cursor.load(Ordering::Acquire);
        // A cursor whose own slot already holds a later lap is a ring or
        // more behind (scribbled low, e.g. to 0): resuming there would
        // rewrite offsets readers have consumed, so it is not believed
        // either.
        let believed = raw < resume_cap(geo)
            && believable(mem, raw)
            && mem.seq(raw & geo.mask()).load(Ordering::Acquire) < holds(raw + geo.slots);
        let mut next = if believed { raw } else { scan_end(mem) };
        // A believed cursor whose last slot does not hold exactly `raw - 1`
        // (a cursor of 0, or a later lap there) passed only because its own
        // slot was scribbled low too (e.g. cursor and slot 0 both set to 0):
        // resuming there would restart the ring far below offsets readers
        // already consumed, and they would wait for the writer to come back
        // up (the README's known gap). Never resume below the end the slots
        // prove (cold: only on such a cursor, e.g. a fresh ring).
        if believed
            && (raw == 0
                || mem.seq((raw - 1) & geo.mask()).load(Ordering::Acquire) != holds(raw - 1))
        {
            next = next.max(scan_end(mem));
        }
        // SYNC POINT "claim" (heavy side): our lease CAS on the writer word
        // came first; after this barrier, either a predecessor still running
        // sees our word at its next reservation (and touches no slot), or we
        // see its reservation below and leave those offsets to it.
        heavy_barrier();
        let claim = hdr.claim.load(Ordering::Relaxed);
        let mut tries = 0u32;
        let mut steps = 0u64;
        while steps <= geo.slots && next < resume_cap(geo) {
            steps += 1;
            let seq = mem.seq(next & geo.mask());
            let s = seq.load(Ordering::Acquire);
            if s == holds(next) {
                next += 1;
                continue;
            }
            let predecessors = s == writing(next) || claimed_end(claim, next, geo.slots).is_some();
            if predecessors && tries < RESUME_TRIES {
                // A predecessor is copying this offset, or reserved it and
                // may be about to: let it finish (a fenced writer's late
                // write is kept whole, on its own offset).
                tries += 1;
                steps -= 1;
                wait();
                continue;
            }
            if s == writing(next) {
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
        // Never rewrite an offset a slot proves published. The walk stops at
        // the first slot that does not hold `next`, but one scribbled word
        // (or a cursor scribbled a little low) can make that stop fall below
        // offsets already written further on. Rewriting them would store the
        // very sequence values a reader may have read just before: a reader
        // copying such a slot across the rewrite sees the same "holds `x`"
        // before and after and takes a body mixed from two records (seqlock
        // ABA). Skipping ahead only leaves the skipped offsets unwritten,
        // which readers already handle (a stuck slot below a believed cursor
        // is skipped and counted as corrupt). An honest ring has no slot
        // beyond its end that holds an offset at or past that end, so this
        // changes nothing there.
        next = next.max(proven_end(mem, next));
        if next != raw {
            repair_cursor(hdr, raw, next, if believed { geo.slots } else { 0 });
        }
        Writer {
            next,
            me,
            slots: geo.slots,
            reserved: next,
        }
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

    /// Reserve the next `n` offsets (at least 1, at most one ring) for this
    /// writer and check that it still owns the partition: SYNC POINT
    /// "claim". [`Writer::claim`] reserves on demand, one offset at a time;
    /// a batch reserves once for all its records.
    ///
    /// Store the claim word (`epoch << 32 | end`, low 32 bits of the end
    /// offset), pass the hot side of the asymmetric barrier, then load the
    /// writer word. A successor stores the writer word (its lease CAS), passes
    /// the heavy side (`membarrier`) in [`Writer::resume`], then loads the
    /// claim word. So either this check sees the successor's word (refused
    /// with [`WriteError::Fenced`], no slot touched), or the successor sees
    /// this reservation and leaves these offsets to us until they are
    /// published (or a bounded wait says we died). Either way no two live
    /// writers ever store into one slot, which is what makes plain stores on
    /// the slots safe: two writers of one offset would write the same
    /// sequence values, and no reader could tell a body mixed from both.
    /// `loom-tests/tests/claim.rs` checks it with a writer fenced mid-copy.
    ///
    /// A writer already fenced is refused before it stores anything, so its
    /// stale reservation does not make the next writer wait for offsets
    /// nobody will write.
    #[inline]
    pub fn reserve(&mut self, hdr: &PartitionHeader, n: u64) -> Result<(), WriteError> {
        self.check_lease(hdr)?;
        let end = self
            .next
            .saturating_add(n.clamp(1, self.slots))
            .min(MAX_OFFSET);
        hdr.claim.store(pack_claim(self.me, end), Ordering::Relaxed);
        if !cfg!(loom_mutant_claim) {
            // SYNC POINT "claim" (hot side), paired with `resume`'s heavy
            // barrier.
            light_barrier();
        }
        self.check_lease(hdr)?;
        self.reserved = end;
        Ok(())
    }

    #[inline]
    fn check_lease(&self, hdr: &PartitionHeader) -> Result<(), WriteError> {
        let current = hdr.writer.load(Ordering::Relaxed);
        if current != self.me {
            return Err(WriteError::Fenced { current });
        }
        if hdr.lease.expiry.load(Ordering::Relaxed) == RECLAIMED {
            return Err(WriteError::LeaseExpired);
        }
        Ok(())
    }

    /// Give back the offsets reserved beyond `next` (a send that reserved
    /// and then wrote nothing; [`Writer::commit`] does it for a batch cut
    /// short), so a successor does not wait for them. A plain store:
    /// shrinking is always safe, since any later write reserves (and checks)
    /// again.
    #[cold]
    pub fn unreserve(&mut self, hdr: &PartitionHeader) {
        if self.reserved <= self.next {
            return;
        }
        hdr.claim
            .store(pack_claim(self.me, self.next), Ordering::Relaxed);
        self.reserved = self.next;
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
    ///
    /// No locked instruction: the cursor is a plain `Release` store, and the
    /// Dekker pair with a parking reader (cursor store, then `waiters` load
    /// here; `waiters` bump, then cursor load in [`park_barrier`]'s caller)
    /// is ordered by the asymmetric barrier: a compiler fence here
    /// (`sync::light_barrier`), `membarrier` on the rare parking side. So a
    /// waiter is never missed and nobody parked means no syscall.
    ///
    /// A plain store also repairs a cursor a peer scribbled (it is simply
    /// overwritten). The one cost: a fenced predecessor whose late write
    /// landed whole (see [`Writer::resume`]) may store its older cursor
    /// after ours, so the cursor can step back until our next commit. A
    /// lower cursor is still sound (every offset below it is published);
    /// readers cache the highest cursor they saw and never go back.
    ///
    /// A reservation not used up (a batch cut short) is given back first, so
    /// a successor does not wait for offsets this writer will not write.
    #[inline]
    pub fn commit(&mut self, hdr: &PartitionHeader) -> bool {
        if self.reserved > self.next {
            self.unreserve(hdr);
        }
        // SYNC POINT "cursor": pairs with Acquire loads of the cursor.
        hdr.cursor.store(self.next, Ordering::Release);
        // SYNC POINT "park" (hot side): see `park_barrier`.
        light_barrier();
        hdr.waiters.load(Ordering::Relaxed) != 0
    }
}

/// The parking side of the no-lost-wake-up handshake: call after announcing
/// this reader in the `waiters` word of every partition it waits on (a SeqCst
/// RMW) and before re-checking their cursors. It is the heavy side of the
/// asymmetric barrier (`membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)`, or a
/// SeqCst fence where that is unavailable): after it, either the re-check
/// sees a writer's cursor store, or that writer's `waiters` load in
/// [`Writer::commit`] sees this reader's announcement and it wakes the
/// futex. `loom-tests/tests/parking.rs` models it.
#[inline]
pub fn park_barrier() {
    heavy_barrier();
}

/// The highest offset `Writer::resume` starts from (keeps `2o + 2` and
/// `o + slots` far from wrapping).
fn resume_cap(geo: Geometry) -> u64 {
    MAX_OFFSET - geo.slots - 1
}

/// One past the highest offset in `(from, from + slots)` whose slot holds
/// exactly that offset, or `from` if none does: the end the slots prove
/// beyond a resume's walk. One load per slot; only on a resume.
fn proven_end<S: SlotMemory + ?Sized>(mem: &S, from: u64) -> u64 {
    let geo = mem.geometry();
    let mut end = from;
    for x in from.saturating_add(1)..from.saturating_add(geo.slots).min(resume_cap(geo)) {
        if mem.seq(x & geo.mask()).load(Ordering::Acquire) == holds(x) {
            end = x + 1;
        }
    }
    end
}

/// Publish the writer's `next` as the cursor after a resume: raise it, or
/// lower one that stands more than `slack` beyond `next` (a wild cursor).
fn repair_cursor(hdr: &PartitionHeader, seen: u64, next: u64, slack: u64) {
    if seen < next {
        hdr.cursor.fetch_max(next, Ordering::SeqCst);
    } else if seen > next.saturating_add(slack) {
        cold_repair(hdr, seen, next);
    }
}

#[cold]
fn cold_repair(hdr: &PartitionHeader, wild: u64, next: u64) {
    // SYNC POINT "cursor": SeqCst like every other cursor update. Every slot
    // below `next` was published by this writer (or repaired by `resume`),
    // so the lowered cursor still implies its slots.
    let _ = hdr
        .cursor
        .compare_exchange(wild, next, Ordering::SeqCst, Ordering::Relaxed);
}

/// Whether `cursor` can be the write cursor of the ring in `mem`: below
/// [`MAX_OFFSET`], and the slot of `cursor - 1` holds that offset or a later
/// one. A real cursor always passes (the writer publishes a slot before it
/// raises the cursor past it, and the Acquire load of the cursor makes that
/// publish visible); a cursor scribbled beyond the writer fails, because that
/// slot holds an older offset, unless the peer forged the slot word too.
pub fn believable<S: SlotMemory + ?Sized>(mem: &S, cursor: u64) -> bool {
    if cursor == 0 {
        return true;
    }
    if cursor >= MAX_OFFSET {
        return false;
    }
    let last = cursor - 1;
    let mask = mem.geometry().mask();
    // SYNC POINT "slot published" (via "cursor"): the caller loaded `cursor`
    // with Acquire before this load.
    at_or_after(mem.seq(last & mask).load(Ordering::Acquire), last, mask)
}

/// Whether `s`, the sequence word of the slot of offset `o`, is a mark a
/// real writer can have left there once `o` was published: "holds" or
/// "writing" an offset `x >= o` of the same slot (`x ≡ o mod slots`), below
/// [`MAX_OFFSET`]. Garbage such as `u64::MAX` fails.
fn at_or_after(s: u64, o: u64, mask: u64) -> bool {
    if s < holds(o) {
        return false;
    }
    // `2x + 1` and `2x + 2` both give `x`.
    let x = (s - 1) / 2;
    x < MAX_OFFSET && x & mask == o & mask
}

/// The end of the ring as its slots show it, for when the cursor cannot be
/// believed: one past the highest offset that at least half of the
/// informative slots agree with (those holding offsets within one ring
/// below it; slots never written count for a ring in its first lap), else
/// the best-supported such offset. A real ring's written slots all hold
/// offsets within one ring below its end, so a few scribbled (even forged,
/// self-consistent) sequence words cannot outvote them and make the end
/// wild. Reads every
/// sequence word once and sorts them: `O(slots log slots)`, only on a
/// damaged ring (a cursor that failed [`believable`]).
#[cold]
pub fn scan_end<S: SlotMemory + ?Sized>(mem: &S) -> u64 {
    let geo = mem.geometry();
    let cap = resume_cap(geo);
    let mut held: Vec<u64> = Vec::new();
    // Slots never written (sequence word 0) vote too: a ring that wrapped
    // has none, so they say the end lies in the first lap, beyond them. On
    // a young ring a single forged word (say "holds 128" on slot 0 of a
    // ring that has written offsets 0..5) must not outvote them, or a
    // resume would start past a slot whose body was never written and a
    // reader would get that empty body as a record.
    let mut empty: Vec<u64> = Vec::new();
    for i in 0..geo.slots {
        let s = mem.seq(i).load(Ordering::Acquire);
        if s == 0 {
            empty.push(i);
            continue;
        }
        if s < 2 || s % 2 != 0 {
            continue;
        }
        let x = s / 2 - 1;
        if x & geo.mask() == i && x < cap {
            held.push(x);
        }
    }
    held.sort_unstable();
    let need = (held.len() + empty.len()).div_ceil(2);
    // The best-supported end, for when no end has a majority: a ring nobody
    // rewrote for a while (a backpressure writer held back) collects
    // scribbles in many of its slots, zeros among them, and falling back to
    // 0 there restarted the ring below what readers had consumed. Ties go
    // to the higher end.
    let mut best = (0usize, 0u64);
    for j in (0..held.len()).rev() {
        let x = held[j];
        // Slots whose offsets lie in (x - slots, x]: the ring ending at x,
        // plus, while that ring is in its first lap, the empty slots
        // beyond x (`empty` is in slot order).
        let lowest = x.saturating_sub(geo.slots - 1);
        let first = held.partition_point(|&v| v < lowest);
        let unwritten = if x < geo.slots {
            empty.len() - empty.partition_point(|&i| i <= x)
        } else {
            0
        };
        let votes = j + 1 - first + unwritten;
        if votes >= need {
            return x + 1;
        }
        if votes > best.0 {
            best = (votes, x + 1);
        }
    }
    // No majority. One slot is no evidence (a single forged word on an
    // empty ring); nor are a few against many never-written slots (a young
    // ring's forged later laps): then the ring is empty.
    if best.0 >= 2 && best.0 * 2 > empty.len() {
        best.1
    } else {
        0
    }
}

/// Whether cursor `raw` is more than a ring below `position` and the slot
/// before it holds exactly `raw - 1`: the writer really stands there, a
/// ring or more below a position a reader reached (a takeover restarted
/// the ring after a peer scribbled it). A real writer never leaves a
/// reader that far ahead, so the reader goes back to it.
pub fn writer_proven_below<S: SlotMemory + ?Sized>(mem: &S, raw: u64, position: u64) -> bool {
    let geo = mem.geometry();
    raw > 0
        && raw.saturating_add(geo.slots) < position
        && mem.seq((raw - 1) & geo.mask()).load(Ordering::Acquire) == holds(raw - 1)
}

/// The write end of the ring, checked: the cursor if it is
/// [`believable`], else the end the slots show ([`scan_end`]). Use it for
/// positions (seeking to "latest", counting messages); [`latest`] is the
/// cheap unchecked hint.
pub fn checked_latest<S: SlotMemory + ?Sized>(hdr: &PartitionHeader, mem: &S) -> u64 {
    let raw = hdr.cursor.load(Ordering::Acquire);
    if believable(mem, raw) {
        raw
    } else {
        scan_end(mem)
    }
}

/// The oldest offset still retained, from [`checked_latest`].
pub fn checked_earliest<S: SlotMemory + ?Sized>(hdr: &PartitionHeader, mem: &S) -> u64 {
    checked_latest(hdr, mem).saturating_sub(mem.geometry().slots)
}

/// How many times, at least [`STUCK_NS`] apart in total, a reader must find
/// an offset unpublished although a believed cursor says it was published
/// before it skips that offset as damaged ([`Stuck`]).
pub const STUCK_CHECKS: u32 = 3;
/// Minimum time, in nanoseconds, an offset must stay stuck before a reader
/// skips it ([`Stuck`]).
pub const STUCK_NS: u64 = 1_000_000;

/// A reader's memory of an offset that reads [`ReadOutcome::NotYet`] although
/// a believed write cursor is beyond it.
///
/// A real writer never leaves that state: it publishes a slot before it
/// raises the cursor past it, and a reader that loaded the cursor with
/// Acquire sees the publish (`loom-tests/tests/cursor.rs`). So a slot whose
/// sequence word stays below "holds `o`" under such a cursor was scribbled
/// (set to 0, or to an odd or older value): waiting for it would stall the
/// reader, and on a backpressure topic the writer behind it, forever. After
/// [`STUCK_CHECKS`] sightings spanning [`STUCK_NS`] the reader skips it and
/// counts it as corrupt.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stuck {
    offset: u64,
    first_ns: u64,
    seen: u32,
}

impl Stuck {
    /// Note that `offset` read `NotYet` at `now_ns` although a believed
    /// cursor is beyond it. Returns `true` when the reader should give up on
    /// it (skip it and count it as corrupt).
    pub fn give_up(&mut self, offset: u64, now_ns: u64) -> bool {
        if self.seen == 0 || self.offset != offset {
            *self = Stuck {
                offset,
                first_ns: now_ns,
                seen: 1,
            };
            return false;
        }
        self.seen = self.seen.saturating_add(1);
        if self.seen >= STUCK_CHECKS && now_ns.saturating_sub(self.first_ns) >= STUCK_NS {
            self.seen = 0;
            return true;
        }
        false
    }
}

/// A reader's cached view of one partition's write cursor, with the damage
/// checks every reader applies (shared by the consumers and the loom models).
///
/// * Only a cursor that is [`believable`] is cached. A wild one is counted
///   once (per value) as damage and not believed: the reader then goes by
///   the slots' sequence words alone until the writer repairs the cursor.
/// * An offset stuck below the believed cursor is given up after a bound
///   ([`Stuck`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CursorCache {
    /// Believed write cursor: offsets below it are published.
    end: u64,
    /// The last wild cursor value seen (each counted once), 0 if none.
    wild: u64,
    /// Wild cursors seen and not yet taken by [`CursorCache::take_damage`].
    damage: u64,
    stuck: Stuck,
    /// Consecutive `may_read` calls the watched slot said "not yet".
    idle: u32,
    /// `may_read` answers that came from the watched slot's sequence word
    /// (a record found without loading the cursor). Statistics for tests.
    seq_hits: u64,
    /// Loads of the shared cursor by `may_read`. Statistics for tests.
    cursor_loads: u64,
    /// Where the last lap sent this reader (see [`CursorCache::after_lap`]).
    lap_resume: Option<u64>,
    /// Sightings of a proven cursor more than a ring below the reader (see
    /// [`CursorCache::take_rewind`]).
    behind: u32,
    /// Where such a cursor sends the reader back to, once proven.
    rewind: Option<u64>,
}

/// A caught-up reader that finds the slot it watches unpublished loads the
/// write cursor on every this-many-th look in a row (see
/// [`CursorCache::may_read`]): often enough that a slot stuck below the
/// cursor is noticed within microseconds of polling, rarely enough that a
/// polling reader leaves the cursor line to the writer.
#[cfg(not(loom))]
pub const CURSOR_EVERY: u32 = 64;
/// Under loom, every other look (a short model).
#[cfg(loom)]
pub const CURSOR_EVERY: u32 = 2;

impl CursorCache {
    /// Whether offset `next` can have been published ("anything new?"):
    /// answered from the cached cursor, reloading the shared one only when
    /// the cache is exhausted; a reloaded cursor is validated against the
    /// slots ([`believable`]: one extra load, of the line the reader is
    /// about to read when it is caught up). A hint: the slot's sequence word
    /// decides.
    ///
    /// A reader that has caught up with the cached cursor watches the slot
    /// it will read next instead of the cursor line: that slot's sequence
    /// word, its record header and the first bytes of its body share one
    /// 64-byte line, so the writer's publish brings the record along, and
    /// the reader does not pull the cursor line away from the writer on
    /// every poll. The cursor is still loaded when the slot says nothing
    /// (every [`CURSOR_EVERY`]-th time in a row), which is what finds a
    /// slot stuck below the cursor ([`CursorCache::skip_stuck`]); lap
    /// detection, `earliest`/`latest` and parking go by the cursor as
    /// before. The sequence word is only a hint here, as the cursor is:
    /// [`read`] re-checks it and bounds every length, so a scribbled word
    /// can make the reader look (and find `NotYet`, a lap the validated
    /// cursor confirms, or a corrupt slot), never deliver a torn record or
    /// count a wild lap.
    #[inline]
    pub fn may_read<S: SlotMemory + ?Sized>(
        &mut self,
        hdr: &PartitionHeader,
        mem: &S,
        next: u64,
    ) -> bool {
        if next < self.end {
            return true;
        }
        if next < MAX_OFFSET {
            // SYNC POINT "slot published": Acquire, pairs with the writer's
            // PUBLISH store (`read` loads it again, on the same line).
            let s = mem
                .seq(next & mem.geometry().mask())
                .load(Ordering::Acquire);
            if s >= holds(next) {
                // Published (or overwritten since: `read` reports the lap,
                // confirmed by the validated cursor).
                self.idle = 0;
                self.seq_hits = self.seq_hits.wrapping_add(1);
                return true;
            }
            self.idle = self.idle.wrapping_add(1);
            if self.idle % CURSOR_EVERY != 0 {
                return false;
            }
        }
        self.cursor_loads = self.cursor_loads.wrapping_add(1);
        // SYNC POINT "cursor": Acquire, pairs with `Writer::commit`.
        let raw = latest(hdr);
        if raw <= next {
            self.writer_behind(mem, raw, next);
            return false;
        }
        self.behind = 0;
        if believable(mem, raw) {
            self.end = raw;
            return true;
        }
        self.wild_cursor(raw)
    }

    /// A cursor more than a ring below the reader whose last slot holds
    /// exactly `raw - 1` is no scribble of the cursor alone: the writer
    /// really stands there (a takeover restarted the ring below what this
    /// reader consumed, after a peer scribbled the cursor and slots). No
    /// real writer leaves a reader that far ahead (a cursor lags the slots
    /// by at most one reservation, a ring), so after [`STUCK_CHECKS`]
    /// sightings the reader goes back to the writer's position
    /// ([`CursorCache::take_rewind`]) and counts it as damage, instead of
    /// waiting for the writer to come back up.
    #[cold]
    fn writer_behind<S: SlotMemory + ?Sized>(&mut self, mem: &S, raw: u64, next: u64) {
        let proven = writer_proven_below(mem, raw, next);
        if !proven {
            self.behind = 0;
            return;
        }
        self.behind = self.behind.saturating_add(1);
        if self.behind >= STUCK_CHECKS {
            self.behind = 0;
            self.end = raw;
            self.stuck = Stuck::default();
            self.rewind = Some(raw);
            self.damage = self.damage.saturating_add(1);
        }
    }

    /// Where the reader must go back to, if [`CursorCache::may_read`] found
    /// the writer proven more than a ring below it (see `writer_behind`).
    pub fn take_rewind(&mut self) -> Option<u64> {
        self.rewind.take()
    }

    #[cold]
    fn wild_cursor(&mut self, raw: u64) -> bool {
        if raw != self.wild {
            self.wild = raw;
            self.damage = self.damage.saturating_add(1);
        }
        true
    }

    /// After [`ReadOutcome::NotYet`] at `next` (at time `now_ns`): whether
    /// `next` has been stuck below the believed cursor long enough to be
    /// skipped and counted as corrupt.
    #[inline]
    pub fn skip_stuck(&mut self, next: u64, now_ns: u64) -> bool {
        next < self.end && self.stuck.give_up(next, now_ns)
    }

    /// Take the count of wild cursors seen since the last call.
    #[inline]
    pub fn take_damage(&mut self) -> u64 {
        std::mem::take(&mut self.damage)
    }

    /// Load the shared cursor once (at the start of a run of records) and
    /// cache it if it is believable and beyond what is cached, so the reader
    /// knows how far the run goes (e.g. to prefetch within it). Returns the
    /// cached end.
    #[inline]
    pub fn refresh<S: SlotMemory + ?Sized>(&mut self, hdr: &PartitionHeader, mem: &S) -> u64 {
        self.cursor_loads = self.cursor_loads.wrapping_add(1);
        // SYNC POINT "cursor": Acquire, pairs with `Writer::commit`.
        let raw = latest(hdr);
        if raw > self.end && believable(mem, raw) {
            self.end = raw;
        }
        self.end
    }

    /// After a lap at `offset` that [`read`] (or [`lapped`]) reported as
    /// `missed` offsets lost, resuming at `resume`: the `(missed, resume)` to
    /// apply.
    ///
    /// A lap resumes at the oldest offset that can still be intact, which is
    /// the slot the writer overwrites next. A reader that is lapped again
    /// right there is chasing the writer's overwrite front: every retry
    /// costs a cursor load while the writer moves on, and against a writer
    /// faster than one retry it would lose every record for as long as the
    /// writer runs. So the second lap in a row at the same place resumes a
    /// quarter ring further ([`escape`]), counting the skipped offsets as
    /// missed (the count stays exact), which gives the reader a quarter ring
    /// of records to read before the writer can reach it again.
    #[inline]
    pub fn after_lap<S: SlotMemory + ?Sized>(
        &mut self,
        hdr: &PartitionHeader,
        mem: &S,
        offset: u64,
        missed: u64,
        resume: u64,
    ) -> (u64, u64) {
        let (mut missed, mut resume) = (missed, resume);
        if self.lap_resume == Some(offset) {
            let further = escape(hdr, mem, resume);
            missed = missed.saturating_add(further - resume);
            resume = further;
        }
        self.lap_resume = Some(resume);
        (missed, resume)
    }

    /// The offsets below which this cache knows records are published (the
    /// last believed write cursor).
    #[inline]
    pub fn end(&self) -> u64 {
        self.end
    }

    /// `(seq_hits, cursor_loads)`: how many `may_read` answers came from
    /// the watched slot's sequence word, and how many times it loaded the
    /// shared cursor. For tests and benches.
    pub fn loads(&self) -> (u64, u64) {
        (self.seq_hits, self.cursor_loads)
    }
}

/// Where a reader that keeps being lapped at `resume` (the oldest retained
/// offset) continues instead: a quarter ring further, never beyond the
/// validated write end ([`checked_latest`]), never below `resume`.
pub fn escape<S: SlotMemory + ?Sized>(hdr: &PartitionHeader, mem: &S, resume: u64) -> u64 {
    let end = checked_latest(hdr, mem);
    resume
        .saturating_add((mem.geometry().slots / 4).max(1))
        .min(end)
        .max(resume)
}

/// The offset of the oldest record a reader can still hope to read, given the
/// writer's cursor.
pub fn earliest(hdr: &PartitionHeader, geo: Geometry) -> u64 {
    latest(hdr).saturating_sub(geo.slots)
}

/// The offset the next record will get (the "latest" position), as the
/// header's cursor says, clamped to [`MAX_OFFSET`]. Unchecked: a cheap
/// "anything new?" hint. For positions use [`checked_latest`], which does not
/// believe a cursor the slots contradict.
pub fn latest(hdr: &PartitionHeader) -> u64 {
    hdr.cursor.load(Ordering::Acquire).min(MAX_OFFSET)
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
    match lapped(hdr, mem, offset) {
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
    /// the reservation if the current one is used up, the odd mark and the
    /// "writing mark" fence). The caller writes the body through the slot
    /// memory, then publishes or abandons the claim. Until then this writer
    /// must not write another slot.
    #[inline]
    pub fn claim<S: SlotMemory + ?Sized>(
        &mut self,
        hdr: &PartitionHeader,
        mem: &S,
    ) -> Result<Claimed, WriteError> {
        let geo = mem.geometry();
        let mut skipped = 0u64;
        let offset = loop {
            if self.next >= self.reserved {
                self.reserve(hdr, 1)?;
            }
            let offset = self.next;
            // An offset already published (a predecessor's last record, or
            // a resume that started low because a peer scribbled the
            // cursor or a sequence word) keeps its record; ours takes the
            // next offset, so a record readers may have consumed is never
            // rewritten. Bounded: at most a ring of them.
            if skipped < geo.slots
                && mem.seq(offset & geo.mask()).load(Ordering::Relaxed) == holds(offset)
            {
                skipped += 1;
                self.next = offset + 1;
                continue;
            }
            break offset;
        };
        // A plain store: no other live writer can be writing this slot
        // (the reservation above is the exclusion, see `reserve`), so there
        // is nothing to compare against. It also takes back a slot a peer
        // scribbled.
        mem.seq(offset & geo.mask())
            .store(writing(offset), Ordering::Relaxed);
        // SYNC POINT "writing mark": orders the odd mark before the body.
        fence(Ordering::Release);
        // Ask for a slot a few records ahead now, so its first store finds
        // the line already owned instead of stalling on the reader's copy.
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

#[cfg(all(test, not(loom)))]
mod claim_word_tests {
    use super::{claimed_end, pack_claim, MAX_OFFSET};

    #[test]
    fn claim_word_widens_its_low_half_against_the_resume_point() {
        let me = 7u64 << 32 | 42;
        // Plain case: a reservation three offsets past the resume point.
        assert_eq!(claimed_end(pack_claim(me, 103), 100, 8), Some(103));
        // Nothing reserved beyond the resume point (fully published, or a
        // reservation given back): no wait.
        assert_eq!(claimed_end(pack_claim(me, 100), 100, 8), None);
        assert_eq!(claimed_end(pack_claim(me, 90), 100, 8), None);
        // Across a 2^32 boundary of the offsets.
        let base = (5u64 << 32) - 2;
        assert_eq!(
            claimed_end(pack_claim(me, base + 4), base, 8),
            Some(base + 4)
        );
        // More than a ring ahead cannot be a writer's: scribbled, ignored.
        assert_eq!(claimed_end(pack_claim(me, 100 + 9), 100, 8), None);
        assert_eq!(claimed_end(u64::MAX, 100, 8), None);
        // Never beyond MAX_OFFSET.
        assert_eq!(
            claimed_end(pack_claim(me, MAX_OFFSET + 1), MAX_OFFSET - 1, 8),
            None
        );
        // The epoch half is the lease's.
        assert_eq!(pack_claim(me, 103) >> 32, 7);
    }
}
