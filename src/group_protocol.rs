//! Consumer-group protocols, as pure functions over a group's member table
//! (`&[MemberEntry]`) and partition lines (`&[GroupPartition]`): joining,
//! heartbeats and eviction of members, partition claims with a fair share,
//! the shared cursor of competing consumers, and the backpressure limit.
//!
//! Nothing here maps memory or makes a syscall: time and process liveness
//! are passed in (`now_ns`, `token_alive`), so the same code runs on the meta
//! region in production (`crate::group`, `crate::competing`,
//! `crate::backpressure`) and on heap tables under loom (`loom-tests`).
//!
//! # Member entry (`MemberEntry::id`)
//!
//! ```text
//!  bit 63      62 .. 32       31 .. 0
//!  +---------+--------------+-----------+
//!  | joining | generation   | token     |   token 0 = free slot
//!  +---------+--------------+-----------+
//! ```
//!
//! * **join**: CAS a free word `(0, g, 0)` to `(1, g + 1, me)`; the entry's
//!   other fields are now the joiner's alone (nobody else writes a `joining`
//!   entry whose token is alive); it fills heartbeat, pid, role and work, then
//!   CASes to `(0, g + 1, me)` with Release — SYNC POINT "member ready": a
//!   claimer that loads the id with Acquire sees those fields.
//! * **heartbeat**: the owner stores `heartbeat_ns` (after checking its id).
//! * **stale**: the token is dead (kernel-held, see `crate::token`), or the
//!   entry is not `joining` and its heartbeat is older than the group's stale
//!   threshold.
//! * **evict**: any member CASes a stale entry's word to `(0, g, 0)` — free,
//!   generation kept, so the next occupant gets `g + 1` and every claim that
//!   names generation `g` is void.
//! * **leave**: the owner releases its partitions, then frees its word the
//!   same way.
//!
//! # Partition claim (`GroupPartition::owner`)
//!
//! `generation << 32 | (member index + 1)`; low half `0` = unclaimed;
//! low half [`SHARED`] = the partition is drained by the group's competing
//! consumers. A claim is valid while the entry at `index` holds that
//! generation and is not stale. A word no step writes (bit 63 set,
//! generation 0, a shared low half with a high half) is void: claimable
//! like a free one, so a scribbled owner word never strands a partition. Every change of owner is one CAS from the
//! word the claimer judged (free, void or stale) to its own word, so at any
//! time exactly one word — exactly one owner — exists per partition; a
//! deposed but still running member learns of it at its next check
//! ([`owns`]) and stops. SYNC POINT "handover": the owner commits (Release)
//! before it releases (AcqRel CAS); the next owner's CAS (AcqRel) therefore
//! sees that commit when it positions itself.
//!
//! Fair share: with `n` claimable partitions and `l` live claiming members,
//! the member of rank `r` (its position among the live members by index)
//! gets `n / l + (r < n % l)`. Each [`claim_pass`] releases what is above
//! that quota (highest partitions first) and takes free or void partitions up
//! to it, so the table converges within two passes of every member.
//!
//! # Competing consumers (`GroupPartition::next`, `MemberEntry::work_*`)
//!
//! `next` holds the next offset to hand out plus one (`0` = not positioned).
//! A member takes offsets `[lo, hi)` by CAS `lo + 1 -> hi + 1`, bounded by the
//! writer's cursor, so each offset goes to exactly one member. *Before* the
//! CAS it publishes the batch as its intent (`work_lo = lo + 1`, `work_hi`),
//! and it clears `work_lo` once the batch is processed. SYNC POINT "shared
//! cursor": the intent store precedes the Release half of the CAS, so whoever
//! loads `next` with Acquire and sees the claim also sees the intent. The
//! group's committed offset is then the *low-water mark* `min(next, every
//! member's work_lo)` ([`low_water`]), advanced with `fetch_max`; an
//! unfinished batch of a crashed member keeps it down until a peer
//! [`adopt`]s the batch (CAS of the dead entry to `joining` with the
//! adopter's token), redelivers it and [`release_adopted`] frees the entry.
//!
//! # Backpressure
//!
//! [`write_limit`]: the writer may write offset `o` only while
//! `o < min(floor of every holding group) + slots`. A group's floor
//! ([`committed_floor`]) is its committed offset; before its first commit,
//! where its readers started (`GroupPartition::start`, published by every
//! seek), or the competing consumers' shared cursor; on a line with none
//! of these, a group of competing consumers only (which read just the
//! partitions they joined) does not hold the writer, any other group holds
//! from `0` ([`blank_line_floor`]). It loads each word with Acquire — SYNC POINT "commit",
//! paired with the Release of a commit — so a slot is overwritten only after
//! every holding group's reader finished copying it out.
//!
//! # Group entry (`GroupHeader::state`)
//!
//! ```text
//!  bits 63 .. 32     31 .. 8        7 .. 0
//!  +---------------+--------------+---------+
//!  | token         | generation   | state   |   FREE 0, INIT 1, READY 2, FREEING 3
//!  +---------------+--------------+---------+
//! ```
//!
//! * **create**: CAS a FREE word `(0, g, FREE)` to `(me, g + 1, INIT)`
//!   ([`claim_entry`]); the entry's other fields are the creator's alone; it
//!   fills them and CASes to `(0, g + 1, READY)` with Release
//!   ([`publish_entry`]) — SYNC POINT "group ready".
//! * **recover**: an INIT or FREEING word whose token is dead belongs to a
//!   process that died half-way. The next finder (or the supervisor) CASes
//!   that exact word: an abandoned INIT is taken over by a creator at once
//!   ([`claim_entry`] accepts it), or freed ([`recover_entry`]); an
//!   abandoned FREEING is freed. One CAS from the word judged, so of several
//!   recoverers exactly one wins, and a creator that is alive after all
//!   (its token was judged dead wrongly: impossible with kernel-held
//!   tokens) fails its publishing CAS instead of sharing the entry.
//! * **free** (delete, retention): CAS `(0, g, READY)` to
//!   `(me, g, FREEING)` ([`begin_free`]); a SeqCst fence; then look at the
//!   members and the last sign of life. A joiner does the mirror image:
//!   CAS its member entry, SeqCst fence, re-load the group word
//!   ([`still_ready`]). SYNC POINT "free vs join": of the two, at least one
//!   sees the other (no store buffering across the fences), so either the
//!   freer sees the new member and puts READY back ([`abort_free`]), or the
//!   joiner sees FREEING and backs out. Then `(0, g, FREE)` ([`finish_free`]).

use crate::layout::{group_state, GroupPartition, MemberEntry};
use crate::sync::{fence, AtomicU64, Ordering};

/// Bit 63 of a member id: the entry is being initialised (or is an adopted
/// competing batch, see [`adopt`]).
pub const JOINING: u64 = 1 << 63;
/// Low half of `GroupPartition::owner` meaning "shared by the group's
/// competing consumers".
pub const SHARED: u32 = u32::MAX;
/// The whole owner word of a shared partition.
pub const SHARED_WORD: u64 = SHARED as u64;
const GEN_MASK: u64 = 0x7FFF_FFFF;

/// A member id from its generation (31 bits) and liveness token.
pub fn member_id(generation: u32, token: u32) -> u64 {
    ((u64::from(generation) & GEN_MASK) << 32) | u64::from(token)
}

/// The liveness token of a member id (`0` = free slot).
pub fn token_of(id: u64) -> u32 {
    id as u32
}

/// The generation of a member id.
pub fn generation_of(id: u64) -> u32 {
    ((id >> 32) & GEN_MASK) as u32
}

/// Whether the entry is still being initialised by its occupant.
pub fn is_joining(id: u64) -> bool {
    id & JOINING != 0
}

/// The free word that keeps `id`'s generation.
pub fn free_id(id: u64) -> u64 {
    u64::from(generation_of(id)) << 32
}

fn next_generation(id: u64) -> u32 {
    match (u64::from(generation_of(id)) + 1) & GEN_MASK {
        0 => 1,
        g => g as u32,
    }
}

/// The owner word of the member at `index` with generation `generation`.
pub fn owner_word(generation: u32, index: usize) -> u64 {
    ((u64::from(generation) & GEN_MASK) << 32) | (index as u64 + 1)
}

/// A decoded `GroupPartition::owner` word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// Nobody claims the partition.
    Free,
    /// Competing consumers share it.
    Shared,
    /// A word no protocol step writes (a hostile or buggy peer's): bit 63
    /// set, generation 0, or the shared low half with a non-zero high half.
    /// Claimable like a free partition, so a scribble never strands one.
    Void,
    /// A member claims it (its index is not checked against the table).
    Member {
        /// Member index.
        index: usize,
        /// Generation the member had when it claimed.
        generation: u32,
    },
}

/// Decode an owner word.
pub fn decode_owner(word: u64) -> Owner {
    // Generations are 31 bits and never 0 (`next_generation`), so bit 63 or
    // a zero generation on a member word was not written by a claim.
    let generation = ((word >> 32) & GEN_MASK) as u32;
    match word as u32 {
        0 if word == 0 => Owner::Free,
        SHARED if word == SHARED_WORD => Owner::Shared,
        0 | SHARED => Owner::Void,
        _ if word >> 63 != 0 || generation == 0 => Owner::Void,
        low => Owner::Member {
            index: low as usize - 1,
            generation,
        },
    }
}

/// How a member entry looks to its peers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// No member.
    Free,
    /// Being initialised (or an adopted batch) by a live process.
    Joining,
    /// Alive and heartbeating.
    Live,
    /// Dead token, or heartbeat older than the stale threshold.
    Stale,
}

/// Judge a member from its id and heartbeat. `token_alive` must answer from
/// kernel-held liveness (`crate::token::probe`), never from a guess.
pub fn health(
    id: u64,
    heartbeat_ns: u64,
    now_ns: u64,
    stale_ns: u64,
    token_alive: &mut impl FnMut(u32) -> bool,
) -> Health {
    let token = token_of(id);
    if token == 0 {
        Health::Free
    } else if !token_alive(token) {
        Health::Stale
    } else if is_joining(id) {
        Health::Joining
    } else if now_ns.saturating_sub(heartbeat_ns) > stale_ns {
        Health::Stale
    } else {
        Health::Live
    }
}

/// Judge member entry `m` (loads its id with Acquire, then its heartbeat).
/// Returns the id seen and the verdict.
pub fn judge(
    m: &MemberEntry,
    now_ns: u64,
    stale_ns: u64,
    token_alive: &mut impl FnMut(u32) -> bool,
) -> (u64, Health) {
    // SYNC POINT "member ready".
    let id = m.id.load(Ordering::Acquire);
    let hb = m.heartbeat_ns.load(Ordering::Relaxed);
    (id, health(id, hb, now_ns, stale_ns, token_alive))
}

/// Take a free entry for `token` (non-zero) with `role` (`0` = claims whole
/// partitions, `p + 1` = competing consumer of partition `p`). Returns the
/// entry's index and the member id, or `None` if every entry is occupied.
pub fn join(
    members: &[MemberEntry],
    token: u32,
    pid: u32,
    role: u32,
    now_ns: u64,
) -> Option<(usize, u64)> {
    debug_assert!(token != 0);
    for (i, m) in members.iter().enumerate() {
        let mut seen = m.id.load(Ordering::Acquire);
        while token_of(seen) == 0 {
            let generation = next_generation(seen);
            let joining = JOINING | member_id(generation, token);
            match m
                .id
                .compare_exchange(seen, joining, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    // The entry is ours while `joining`: fill it.
                    m.heartbeat_ns.store(now_ns, Ordering::Relaxed);
                    m.pid.store(pid, Ordering::Relaxed);
                    m.role.store(role, Ordering::Relaxed);
                    m.work_hi.store(0, Ordering::Relaxed);
                    m.work_lo.store(0, Ordering::Relaxed);
                    let id = member_id(generation, token);
                    // SYNC POINT "member ready": Release publishes the fields.
                    if m.id
                        .compare_exchange(joining, id, Ordering::AcqRel, Ordering::Relaxed)
                        .is_ok()
                    {
                        return Some((i, id));
                    }
                    // Evicted while joining (a peer judged our token dead):
                    // the entry is not ours any more; try the next one.
                    break;
                }
                Err(actual) => seen = actual,
            }
        }
    }
    None
}

/// Record a heartbeat. Returns `false` if `id` no longer owns the entry
/// (it was evicted as stale): the caller must join again.
pub fn heartbeat(m: &MemberEntry, id: u64, now_ns: u64) -> bool {
    if m.id.load(Ordering::Acquire) != id {
        return false;
    }
    m.heartbeat_ns.store(now_ns, Ordering::Relaxed);
    m.id.load(Ordering::Acquire) == id
}

/// Free the entry of a stale member whose id was `seen`. Returns whether this
/// call evicted it (one of several concurrent evictors wins).
pub fn evict(m: &MemberEntry, seen: u64) -> bool {
    m.id.compare_exchange(seen, free_id(seen), Ordering::AcqRel, Ordering::Relaxed)
        .is_ok()
}

/// Leave: release every partition member `index` (id `id`) claims, then free
/// its entry. A competing consumer with a batch in progress is instead marked
/// stale at once (heartbeat 0) so a peer adopts and redelivers the batch.
pub fn leave(members: &[MemberEntry], parts: &[GroupPartition], index: usize, id: u64) {
    let Some(m) = members.get(index) else { return };
    let word = owner_word(generation_of(id), index);
    for gp in parts {
        release(gp, word);
    }
    if m.work_lo.load(Ordering::Acquire) != 0 {
        if m.id.load(Ordering::Acquire) == id {
            m.heartbeat_ns.store(0, Ordering::Release);
        }
        return;
    }
    let _ =
        m.id.compare_exchange(id, free_id(id), Ordering::AcqRel, Ordering::Relaxed);
}

/// Give partition line `gp` back if `word` still claims it.
pub fn release(gp: &GroupPartition, word: u64) -> bool {
    // SYNC POINT "handover": AcqRel publishes the commits made before.
    gp.owner
        .compare_exchange(word, 0, Ordering::AcqRel, Ordering::Relaxed)
        .is_ok()
}

/// Whether `word` still claims `gp`.
pub fn owns(gp: &GroupPartition, word: u64) -> bool {
    gp.owner.load(Ordering::Acquire) == word
}

/// Who is asking: the claimer's entry index and member id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Me {
    /// Index of its member entry.
    pub index: usize,
    /// Its member id.
    pub id: u64,
}

impl Me {
    /// The owner word of this member.
    pub fn word(&self) -> u64 {
        owner_word(generation_of(self.id), self.index)
    }
}

/// What one [`claim_pass`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClaimOutcome {
    /// Partitions the member claims after the pass, ascending.
    pub owned: Vec<u32>,
    /// Partitions it took in this pass.
    pub taken: Vec<u32>,
    /// Partitions it gave back in this pass (it was above its fair share).
    pub released: Vec<u32>,
    /// Stale members this pass evicted.
    pub evicted: u32,
    /// Live claiming members (including the caller).
    pub live: u32,
    /// The caller's fair share.
    pub quota: u32,
}

/// The caller's entry no longer holds its id: it was evicted as stale and
/// must join again (its claims are void).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Evicted;

/// One claim pass for member `me`: evict stale members (except competing
/// members with a batch in progress, which their peers adopt), count the live
/// claiming members, release partitions above the fair share, take free,
/// void or stale-owned partitions up to it. Partitions marked [`SHARED`] are
/// left alone.
///
/// # Errors
/// [`Evicted`] if `me.id` is no longer in its entry.
pub fn claim_pass(
    members: &[MemberEntry],
    parts: &[GroupPartition],
    me: Me,
    now_ns: u64,
    stale_ns: u64,
    mut token_alive: impl FnMut(u32) -> bool,
) -> Result<ClaimOutcome, Evicted> {
    let mut out = ClaimOutcome::default();
    let Some(mine_entry) = members.get(me.index) else {
        return Err(Evicted);
    };
    if mine_entry.id.load(Ordering::Acquire) != me.id {
        return Err(Evicted);
    }
    // Live members by index (id as seen), and the claiming ones in order.
    let mut live: Vec<Option<u64>> = vec![None; members.len()];
    let mut claiming: Vec<usize> = Vec::new();
    for (i, m) in members.iter().enumerate() {
        if i == me.index {
            live[i] = Some(me.id);
            claiming.push(i);
            continue;
        }
        let (id, h) = judge(m, now_ns, stale_ns, &mut token_alive);
        match h {
            Health::Free | Health::Joining => {}
            Health::Live => {
                live[i] = Some(id);
                if m.role.load(Ordering::Relaxed) == 0 {
                    claiming.push(i);
                }
            }
            Health::Stale => {
                // A competing member's unfinished batch waits for its peers.
                if m.role.load(Ordering::Relaxed) != 0 && m.work_lo.load(Ordering::Acquire) != 0 {
                    continue;
                }
                if evict(m, id) {
                    out.evicted += 1;
                }
            }
        }
    }
    let word = me.word();
    let mut mine: Vec<usize> = Vec::new();
    let mut takeable: Vec<(usize, u64)> = Vec::new();
    let mut claimable = 0usize;
    for (p, gp) in parts.iter().enumerate() {
        let w = gp.owner.load(Ordering::Acquire);
        if w == word {
            mine.push(p);
            claimable += 1;
            continue;
        }
        match decode_owner(w) {
            Owner::Shared => continue,
            Owner::Member { index, generation }
                if live
                    .get(index)
                    .copied()
                    .flatten()
                    .is_some_and(|id| generation_of(id) == generation && !is_joining(id)) => {}
            _ => takeable.push((p, w)),
        }
        claimable += 1;
    }
    let l = claiming.len();
    let rank = claiming.iter().position(|&i| i == me.index).unwrap_or(0);
    let quota = claimable / l + usize::from(rank < claimable % l);
    out.live = l as u32;
    out.quota = quota as u32;
    while mine.len() > quota {
        let Some(p) = mine.pop() else { break };
        if release(&parts[p], word) {
            out.released.push(p as u32);
        }
    }
    for (p, w) in takeable {
        if mine.len() >= quota {
            break;
        }
        // SYNC POINT "handover".
        if parts[p]
            .owner
            .compare_exchange(w, word, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            mine.push(p);
            out.taken.push(p as u32);
        }
    }
    mine.sort_unstable();
    out.owned = mine.into_iter().map(|p| p as u32).collect();
    Ok(out)
}

/// Mark partition line `gp` as shared by competing consumers. Succeeds if it
/// is free, already shared, or claimed by a member that is not live; fails
/// with the claiming member's index if a live member holds it whole.
///
/// # Errors
/// `Err(index)` of the live member that claims the partition.
pub fn share(
    gp: &GroupPartition,
    members: &[MemberEntry],
    now_ns: u64,
    stale_ns: u64,
    mut token_alive: impl FnMut(u32) -> bool,
) -> Result<(), usize> {
    let mut w = gp.owner.load(Ordering::Acquire);
    loop {
        match decode_owner(w) {
            Owner::Shared => return Ok(()),
            Owner::Member { index, generation } => {
                if let Some(m) = members.get(index) {
                    let (id, h) = judge(m, now_ns, stale_ns, &mut token_alive);
                    if h == Health::Live && generation_of(id) == generation {
                        return Err(index);
                    }
                }
            }
            Owner::Free | Owner::Void => {}
        }
        match gp
            .owner
            .compare_exchange(w, SHARED_WORD, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => return Ok(()),
            Err(actual) => w = actual,
        }
    }
}

/// Position the shared cursor at `start` unless a member already did;
/// returns the cursor's offset.
pub fn position_shared(gp: &GroupPartition, start: u64) -> u64 {
    match gp.next.compare_exchange(
        0,
        start.saturating_add(1),
        Ordering::AcqRel,
        Ordering::Acquire,
    ) {
        Ok(_) => start,
        Err(current) => current - 1,
    }
}

/// Offsets `[lo, hi)` a competing consumer took.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Batch {
    /// First offset.
    pub lo: u64,
    /// End (exclusive).
    pub hi: u64,
    /// Offsets skipped before `lo` because the ring no longer held them
    /// (overwrite topics only); lost to the group.
    pub skipped: u64,
}

/// The `work_lo` word for "idle", or for "still redelivering `pending`".
fn idle_word(pending: Option<u64>) -> u64 {
    pending.map_or(0, |p| p.saturating_add(1))
}

/// Take up to `max` offsets from the shared cursor for member entry `me`,
/// bounded by the writer's `cursor` and starting no earlier than `earliest`
/// (what the ring still holds). `pending` is the lowest offset the member
/// still has to redeliver itself (a nacked record), kept in its intent so the
/// low-water mark stays below it. The caller's previous batch must be
/// finished ([`finish_batch`]). `None` when nothing is available (or the
/// cursor was never positioned).
pub fn claim_batch(
    gp: &GroupPartition,
    me: &MemberEntry,
    pending: Option<u64>,
    earliest: u64,
    cursor: u64,
    max: u64,
) -> Option<Batch> {
    claim_checked(
        gp,
        me,
        pending,
        Bounds {
            earliest,
            cursor,
            known: None,
        },
        || cursor,
        max,
    )
    .batch
}

/// What a claimer knows about the shared cursor, to disbelieve a scribbled
/// one ([`claim_checked`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    /// The oldest offset the ring still holds.
    pub earliest: u64,
    /// The writer's (checked) cursor: nothing at or beyond it is published.
    pub cursor: u64,
    /// An offset the shared cursor is known to have reached (the caller's
    /// position at join, the end of its last batch, the group's committed
    /// offset), or `None` if the caller is not positioned yet. `next` only
    /// rises, so a `next` below it (or `0`) was scribbled.
    pub known: Option<u64>,
}

/// The outcome of [`claim_checked`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Claim {
    /// The batch taken, if any.
    pub batch: Option<Batch>,
    /// Whether the shared cursor was found scribbled (beyond the writer,
    /// below a known position, or reset to 0) and put back: damage, to be
    /// counted as corrupt, never as missed.
    pub repaired: bool,
}

/// [`claim_batch`] with the caller's knowledge: a `next` beyond the writer's
/// cursor, below `bounds.known` or `0` (once positioned) was scribbled; it is
/// put back to the best known position (`max(known, earliest)`, capped at the
/// cursor) by one CAS from the word judged, and `skipped` then counts only
/// offsets the ring really lost since that known position.
///
/// `fresh_cursor` reads the writer's (checked) cursor again. A peer that
/// read a newer cursor than `bounds.cursor` may have claimed beyond it
/// honestly: a `next` beyond the snapshot is judged against a fresh read,
/// made after `next` was loaded (Acquire; the peer read the cursor before
/// its claim), so it is at least what the peer saw.
pub fn claim_checked(
    gp: &GroupPartition,
    me: &MemberEntry,
    pending: Option<u64>,
    bounds: Bounds,
    mut fresh_cursor: impl FnMut() -> u64,
    max: u64,
) -> Claim {
    let Bounds {
        earliest,
        mut cursor,
        known,
    } = bounds;
    let mut current = gp.next.load(Ordering::Acquire);
    let mut wrote_intent = false;
    let mut repaired = false;
    let result = loop {
        if current == 0 && known.is_none() {
            break None;
        }
        let n = current.wrapping_sub(1);
        if current != 0 && n > cursor {
            cursor = cursor.max(fresh_cursor());
        }
        let below_known = known.is_some_and(|k| current == 0 || n < k.min(cursor));
        if current == 0 || n > cursor || below_known {
            // Hostile-peer repair (issue 11 defect 6): a real claim never
            // takes the shared cursor past the writer's (`hi <= cursor`) nor
            // lowers it, so such a `next` was scribbled. Waiting for the
            // writer to get there would stall the group's competing
            // consumers for good, and counting from a wild low value would
            // report the whole partition as missed: put it back to the best
            // known position (what was handed out after it is unknown;
            // at-least-once, so redeliver rather than lose).
            let back = known
                .map_or(earliest, |k| k.max(earliest))
                .min(cursor)
                .saturating_add(1);
            match gp
                .next
                .compare_exchange(current, back, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    repaired = true;
                    current = back;
                }
                Err(actual) => current = actual,
            }
            continue;
        }
        let lo = n.max(earliest);
        let hi = cursor.min(lo.saturating_add(max));
        if hi <= lo {
            break None;
        }
        // Intent first (see the module docs).
        me.work_hi.store(hi, Ordering::Relaxed);
        me.work_lo
            .store(pending.map_or(lo, |p| p.min(lo)) + 1, Ordering::Release);
        wrote_intent = true;
        // SYNC POINT "shared cursor".
        match gp
            .next
            .compare_exchange(current, hi + 1, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => {
                break Some(Batch {
                    lo,
                    hi,
                    skipped: lo - n,
                })
            }
            Err(actual) => current = actual,
        }
    };
    if result.is_none() && wrote_intent {
        // A lost race left a stale intent: withdraw it (the caller's next
        // low-water computation no longer counts it).
        finish_batch(me, pending);
    }
    Claim {
        batch: result,
        repaired,
    }
}

/// Mark the member's batch done (`pending` as in [`claim_batch`]).
pub fn finish_batch(me: &MemberEntry, pending: Option<u64>) {
    // SYNC POINT "batch done": pairs with the fence and loads of `low_water`.
    me.work_lo.store(idle_word(pending), Ordering::Release);
}

/// The competing consumers' low-water mark on `gp`: the lowest offset not
/// yet processed by the members with `role`, or `None` if the shared cursor
/// was never positioned.
pub fn low_water(gp: &GroupPartition, members: &[MemberEntry], role: u32) -> Option<u64> {
    // SYNC POINT "batch done": a SeqCst fence between the caller's own
    // `finish_batch` (or claim) and these loads. Of two members finishing at
    // once, the one whose fence comes second sees the other's batch done and
    // its claims on the cursor (no store buffering), so the last finisher
    // raises `committed` to the end.
    fence(Ordering::SeqCst);
    // SYNC POINT "shared cursor": load `next` first; every claim it reflects
    // has its intent visible below.
    let current = gp.next.load(Ordering::Acquire);
    let mut lw = current.checked_sub(1)?;
    for m in members {
        let id = m.id.load(Ordering::Acquire);
        if token_of(id) == 0 || m.role.load(Ordering::Relaxed) != role {
            continue;
        }
        let w = m.work_lo.load(Ordering::Acquire);
        if w != 0 {
            lw = lw.min(w - 1);
        }
    }
    Some(lw)
}

/// Raise the group's committed offset to `offset` (never lowers it).
/// Returns the committed offset before the call, if any.
pub fn advance_committed(gp: &GroupPartition, offset: u64) -> Option<u64> {
    // SYNC POINT "commit".
    gp.committed
        .fetch_max(offset.saturating_add(1), Ordering::AcqRel)
        .checked_sub(1)
}

/// A stale competing member's unfinished batch, found by [`find_orphan`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Orphan {
    /// Entry index.
    pub index: usize,
    /// Its id as seen.
    pub id: u64,
}

/// The first stale member with `role` that left a batch in progress.
pub fn find_orphan(
    members: &[MemberEntry],
    role: u32,
    now_ns: u64,
    stale_ns: u64,
    mut token_alive: impl FnMut(u32) -> bool,
) -> Option<Orphan> {
    members.iter().enumerate().find_map(|(index, m)| {
        if m.role.load(Ordering::Relaxed) != role || m.work_lo.load(Ordering::Acquire) == 0 {
            return None;
        }
        let (id, h) = judge(m, now_ns, stale_ns, &mut token_alive);
        (h == Health::Stale).then_some(Orphan { index, id })
    })
}

/// An adopted batch: redeliver `[lo, hi)`, then [`release_adopted`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Adopted {
    /// Entry index.
    pub index: usize,
    /// The id the adopter put in the entry.
    pub id: u64,
    /// First offset to redeliver.
    pub lo: u64,
    /// End (exclusive), as the dead member recorded it.
    pub hi: u64,
}

/// Adopt `orphan`'s batch for the member with `token`: CAS its entry to
/// `joining` under our token (so peers neither evict nor adopt it while we
/// live), keeping its work words so the low-water mark stays below the batch
/// until [`release_adopted`]. `None` if a peer adopted it first or it has no
/// batch any more.
pub fn adopt(m: &MemberEntry, orphan: Orphan, token: u32, now_ns: u64) -> Option<Adopted> {
    let id = JOINING | member_id(generation_of(orphan.id), token);
    m.id.compare_exchange(orphan.id, id, Ordering::AcqRel, Ordering::Relaxed)
        .ok()?;
    m.heartbeat_ns.store(now_ns, Ordering::Relaxed);
    let lo = m.work_lo.load(Ordering::Acquire);
    let hi = m.work_hi.load(Ordering::Acquire);
    if lo == 0 {
        release_adopted(
            m,
            Adopted {
                index: orphan.index,
                id,
                lo: 0,
                hi: 0,
            },
        );
        return None;
    }
    Some(Adopted {
        index: orphan.index,
        id,
        lo: lo - 1,
        hi: hi.max(lo - 1),
    })
}

/// The adopted batch was redelivered: clear it and free the entry.
pub fn release_adopted(m: &MemberEntry, adopted: Adopted) {
    m.work_lo.store(0, Ordering::Release);
    let _ = m.id.compare_exchange(
        adopted.id,
        free_id(adopted.id),
        Ordering::AcqRel,
        Ordering::Relaxed,
    );
}

/// Give up an adopted batch without finishing it: the entry becomes a stale
/// member again (heartbeat 0, not `joining`), so a peer adopts it anew.
pub fn abandon_adopted(m: &MemberEntry, adopted: Adopted) {
    m.heartbeat_ns.store(0, Ordering::Relaxed);
    let _ = m.id.compare_exchange(
        adopted.id,
        adopted.id & !JOINING,
        Ordering::AcqRel,
        Ordering::Relaxed,
    );
}

/// The offset below which one group lets the writer overwrite partition
/// line `gp`: its committed offset; if it never committed, where its readers
/// started (their seek position) or the competing consumers' shared cursor.
/// `None` if none of these exists: then [`blank_line_floor`] decides
/// (competing consumers of another partition only do not hold the writer;
/// an unread line at floor `0` would stall it for good).
pub fn committed_floor(gp: &GroupPartition) -> Option<u64> {
    // SYNC POINT "commit": pairs with the Release of a commit.
    let committed = gp.committed.load(Ordering::Acquire);
    if committed != 0 {
        return Some(committed - 1);
    }
    let start = gp.start.load(Ordering::Acquire);
    if start != 0 {
        return Some(start - 1);
    }
    gp.next.load(Ordering::Acquire).checked_sub(1)
}

/// The floor of a group on a line with no commit, no start and no shared
/// cursor ([`committed_floor`] `None`): a group of competing consumers only
/// (every member entry in use has a non-zero role) reads just the
/// partitions its members joined, so such a line is not read and does not
/// hold the writer (`None`). Any other group (claiming members, or plain
/// consumers, which are not members) reads every partition, including one
/// just grown that nobody positioned yet: it holds from offset `0`, the
/// start of a new partition.
pub fn blank_line_floor(members: &[MemberEntry]) -> Option<u64> {
    let mut any = false;
    for m in members {
        if token_of(m.id.load(Ordering::Acquire)) == 0 {
            continue;
        }
        if m.role.load(Ordering::Relaxed) == 0 {
            return Some(0);
        }
        any = true;
    }
    if any {
        None
    } else {
        Some(0)
    }
}

/// Hostile-peer repair of a committed offset that can only rise
/// ([`advance_committed`]): one beyond the writer's `cursor` was never
/// committed by a member (offsets past the write end cannot have been
/// processed), so put it back to `truth` (the caller's own low-water mark,
/// capped at `cursor`) by one CAS from the word judged. Returns whether it
/// repaired (count it as damage). Call it *before* [`advance_committed`]
/// with the same mark: a concurrent repair with an older mark that wins is
/// then raised again (modelled under loom).
///
/// `cursor` is read *after* the committed offset was loaded (Acquire): a
/// peer that committed `c` had seen the writer at `c` or beyond, so a fresh
/// read is at least that, and an honest commit is never taken for a
/// scribble.
pub fn repair_committed(gp: &GroupPartition, cursor: impl FnOnce() -> u64, truth: u64) -> bool {
    let c = gp.committed.load(Ordering::Acquire);
    if c == 0 {
        return false;
    }
    let cursor = cursor();
    if c - 1 <= cursor {
        return false;
    }
    gp.committed
        .compare_exchange(
            c,
            truth.min(cursor).saturating_add(1),
            Ordering::AcqRel,
            Ordering::Relaxed,
        )
        .is_ok()
}

/// Publish where a reader of the group starts on `gp` (`offset` is its next
/// offset): the group's backpressure floor until its first commit.
pub fn publish_start(gp: &GroupPartition, offset: u64) {
    gp.start.store(offset.saturating_add(1), Ordering::Release);
}

// ---- group entries (`GroupHeader::state`) ----

const ENTRY_GEN_MASK: u64 = 0xFF_FFFF;

/// A group entry word.
pub fn entry_word(state: u64, generation: u32, token: u32) -> u64 {
    (u64::from(token) << 32) | ((u64::from(generation) & ENTRY_GEN_MASK) << 8) | (state & 0xFF)
}

/// The state of an entry word ([`group_state`]).
pub fn entry_state(word: u64) -> u64 {
    word & 0xFF
}

/// The generation of an entry word.
pub fn entry_generation(word: u64) -> u32 {
    ((word >> 8) & ENTRY_GEN_MASK) as u32
}

/// The token of the process creating (INIT) or freeing (FREEING) the entry.
pub fn entry_token(word: u64) -> u32 {
    (word >> 32) as u32
}

/// How an entry word looks to a finder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryHealth {
    /// Free: may be claimed.
    Free,
    /// A usable group.
    Ready,
    /// Being created or freed by a live process: wait a little.
    Settling,
    /// INIT or FREEING by a dead process (or an unknown state): recover it.
    Abandoned,
}

/// Judge an entry word; `token_alive` answers from kernel-held liveness.
pub fn entry_health(word: u64, token_alive: &mut impl FnMut(u32) -> bool) -> EntryHealth {
    match entry_state(word) {
        group_state::FREE => EntryHealth::Free,
        group_state::READY => EntryHealth::Ready,
        group_state::INIT | group_state::FREEING => {
            let t = entry_token(word);
            if t != 0 && token_alive(t) {
                EntryHealth::Settling
            } else {
                EntryHealth::Abandoned
            }
        }
        _ => EntryHealth::Abandoned,
    }
}

/// Whether an entry word is one no protocol step writes (a hostile or
/// buggy peer's): generation `0` (generations start at 1 and skip 0), an
/// unknown state, INIT without a creator's token, READY or FREE with a
/// token. Finders leave such a word to the group's live members, who put
/// their READY word back ([`restorable`]), instead of freeing the group
/// under them.
pub fn impossible_entry(word: u64) -> bool {
    let token = entry_token(word);
    entry_generation(word) == 0
        || match entry_state(word) {
            group_state::INIT => token == 0,
            group_state::READY | group_state::FREE => token != 0,
            group_state::FREEING => false,
            _ => true,
        }
}

/// Whether a member that joined the group under the READY word `ours` and
/// now finds `word` may put `ours` back: only if no protocol step writes
/// `word` ([`impossible_entry`]). A FREE or FREEING word of the same
/// generation (a delete) and any well-formed word of another generation
/// (freed and reused, or being re-created by a live process) are real: the
/// group is gone.
pub fn restorable(word: u64, ours: u64) -> bool {
    word != ours && impossible_entry(word)
}

fn next_entry_generation(word: u64) -> u32 {
    match (u64::from(entry_generation(word)) + 1) & ENTRY_GEN_MASK {
        0 => 1,
        g => g as u32,
    }
}

/// Claim the entry for creation by `token`, from the word `seen`, which the
/// caller judged [`EntryHealth::Free`] or [`EntryHealth::Abandoned`] INIT
/// (a crashed creator's entry is taken over in place). Returns the INIT
/// word now held, or `None` if another process changed the entry first.
pub fn claim_entry(state: &AtomicU64, seen: u64, token: u32) -> Option<u64> {
    let init = entry_word(group_state::INIT, next_entry_generation(seen), token);
    state
        .compare_exchange(seen, init, Ordering::AcqRel, Ordering::Relaxed)
        .ok()
        .map(|_| init)
}

/// Publish a filled entry: INIT -> READY. SYNC POINT "group ready": Release
/// makes the name and reset fields visible to a finder that loads READY
/// with Acquire. Returns the READY word, or `None` if the entry was
/// recovered under us (we were judged dead).
pub fn publish_entry(state: &AtomicU64, init: u64) -> Option<u64> {
    let ready = entry_word(group_state::READY, entry_generation(init), 0);
    state
        .compare_exchange(init, ready, Ordering::AcqRel, Ordering::Relaxed)
        .ok()
        .map(|_| ready)
}

/// Free an abandoned INIT or FREEING entry whose word was `seen`. Returns
/// whether this call freed it (of several recoverers, one wins).
pub fn recover_entry(state: &AtomicU64, seen: u64) -> bool {
    let free = entry_word(group_state::FREE, entry_generation(seen), 0);
    state
        .compare_exchange(seen, free, Ordering::AcqRel, Ordering::Relaxed)
        .is_ok()
}

/// Start freeing a READY group whose word was `ready`: READY -> FREEING by
/// `token`, then a SeqCst fence (SYNC POINT "free vs join"). Returns the
/// FREEING word, or `None` if the entry changed. The caller then checks the
/// members and activity and ends with [`finish_free`] or [`abort_free`].
pub fn begin_free(state: &AtomicU64, ready: u64, token: u32) -> Option<u64> {
    let freeing = entry_word(group_state::FREEING, entry_generation(ready), token);
    state
        .compare_exchange(ready, freeing, Ordering::AcqRel, Ordering::Relaxed)
        .ok()?;
    fence(Ordering::SeqCst);
    Some(freeing)
}

/// Complete a free begun with [`begin_free`]: FREEING -> FREE (generation
/// kept; the next creator bumps it).
pub fn finish_free(state: &AtomicU64, freeing: u64) -> bool {
    recover_entry(state, freeing)
}

/// Give up a free begun with [`begin_free`] (a member joined, or the group
/// showed a sign of life): FREEING -> READY.
pub fn abort_free(state: &AtomicU64, freeing: u64) -> bool {
    let ready = entry_word(group_state::READY, entry_generation(freeing), 0);
    state
        .compare_exchange(freeing, ready, Ordering::AcqRel, Ordering::Relaxed)
        .is_ok()
}

/// After joining (or committing): whether the group entry still holds the
/// READY word `ready`. A SeqCst fence first (SYNC POINT "free vs join"): a
/// `false` means a freer may not have seen our entry, so back out.
pub fn still_ready(state: &AtomicU64, ready: u64) -> bool {
    fence(Ordering::SeqCst);
    state.load(Ordering::Acquire) == ready
}

/// Whether any member entry is held by a live process (`token_alive`), as
/// a freer judges it after [`begin_free`].
pub fn any_live_member(members: &[MemberEntry], token_alive: &mut impl FnMut(u32) -> bool) -> bool {
    members.iter().any(|m| {
        let t = token_of(m.id.load(Ordering::Acquire));
        t != 0 && token_alive(t)
    })
}

/// The first offset a writer of a ring of `slots` may not write yet, given
/// the committed floors of the groups that hold it back (`u64::MAX` when
/// none does).
pub fn write_limit(floors: impl IntoIterator<Item = u64>, slots: u64) -> u64 {
    floors
        .into_iter()
        .min()
        .map_or(u64::MAX, |f| f.saturating_add(slots))
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn table(n: usize) -> Vec<MemberEntry> {
        (0..n).map(|_| MemberEntry::new()).collect()
    }

    #[test]
    fn ids_round_trip() {
        let id = member_id(7, 0xdead_beef);
        assert_eq!(token_of(id), 0xdead_beef);
        assert_eq!(generation_of(id), 7);
        assert!(!is_joining(id));
        assert!(is_joining(id | JOINING));
        assert_eq!(generation_of(id | JOINING), 7);
        assert_eq!(free_id(id | JOINING), 7 << 32);
        assert_eq!(
            decode_owner(owner_word(3, 4)),
            Owner::Member {
                index: 4,
                generation: 3
            }
        );
        assert_eq!(decode_owner(0), Owner::Free);
        assert_eq!(decode_owner(SHARED_WORD), Owner::Shared);
    }

    #[test]
    fn a_reused_slot_gets_a_new_generation_and_voids_old_claims() {
        let members = table(2);
        let parts = [GroupPartition::new()];
        let (i, a) = join(&members, 11, 1, 0, 100).unwrap();
        let out = claim_pass(&members, &parts, Me { index: i, id: a }, 100, 50, |_| true).unwrap();
        assert_eq!(out.owned, vec![0]);
        // Member 11 dies; 12 joins, evicts it, and takes the partition.
        let (j, b) = join(&members, 12, 2, 0, 100).unwrap();
        assert_ne!(i, j);
        let out = claim_pass(&members, &parts, Me { index: j, id: b }, 100, 50, |t| {
            t != 11
        })
        .unwrap();
        assert_eq!(out.evicted, 1);
        assert_eq!(out.owned, vec![0]);
        // 13 reuses the freed slot: new generation, the old word is dead.
        let (k, c) = join(&members, 13, 3, 0, 100).unwrap();
        assert_eq!(k, i);
        assert_eq!(generation_of(c), generation_of(a) + 1);
        assert!(!owns(&parts[0], owner_word(generation_of(a), i)));
        assert_eq!(
            claim_pass(&members, &parts, Me { index: i, id: a }, 100, 50, |_| true),
            Err(Evicted)
        );
    }

    #[test]
    fn fair_share_converges() {
        let members = table(4);
        let parts: Vec<GroupPartition> = (0..5).map(|_| GroupPartition::new()).collect();
        let (i, a) = join(&members, 1, 1, 0, 0).unwrap();
        let a = Me { index: i, id: a };
        assert_eq!(
            claim_pass(&members, &parts, a, 0, 10, |_| true)
                .unwrap()
                .owned
                .len(),
            5
        );
        let (j, b) = join(&members, 2, 2, 0, 0).unwrap();
        let b = Me { index: j, id: b };
        // b finds nothing free; a releases down to its share (3, rank 0).
        assert!(claim_pass(&members, &parts, b, 0, 10, |_| true)
            .unwrap()
            .owned
            .is_empty());
        let out = claim_pass(&members, &parts, a, 0, 10, |_| true).unwrap();
        assert_eq!((out.owned.len(), out.released.len()), (3, 2));
        let out = claim_pass(&members, &parts, b, 0, 10, |_| true).unwrap();
        assert_eq!(out.owned.len(), 2);
        // Stable afterwards.
        assert!(claim_pass(&members, &parts, a, 0, 10, |_| true)
            .unwrap()
            .taken
            .is_empty());
        // b leaves: a takes everything at its next pass.
        leave(&members, &parts, b.index, b.id);
        assert_eq!(
            claim_pass(&members, &parts, a, 0, 10, |_| true)
                .unwrap()
                .owned
                .len(),
            5
        );
    }

    #[test]
    fn stale_heartbeat_is_evicted_but_joining_is_not() {
        let members = table(3);
        let parts = [GroupPartition::new()];
        let (i, a) = join(&members, 1, 1, 0, 0).unwrap();
        let (_, _b) = join(&members, 2, 2, 0, 0).unwrap();
        // Entry 2 is mid-join with an ancient heartbeat: left alone.
        members[2]
            .id
            .store(JOINING | member_id(1, 3), Ordering::Relaxed);
        let out = claim_pass(&members, &parts, Me { index: i, id: a }, 1_000, 10, |_| {
            true
        })
        .unwrap();
        assert_eq!(out.evicted, 1, "only the stale, fully joined member");
        assert_eq!(token_of(members[1].id.load(Ordering::Relaxed)), 0);
        assert_eq!(token_of(members[2].id.load(Ordering::Relaxed)), 3);
    }

    #[test]
    fn competing_batches_are_disjoint_and_low_water_follows() {
        let members = table(2);
        let gp = GroupPartition::new();
        let (i, _) = join(&members, 1, 1, 1, 0).unwrap();
        let (j, _) = join(&members, 2, 2, 1, 0).unwrap();
        assert_eq!(claim_batch(&gp, &members[i], None, 0, 10, 4), None);
        assert_eq!(position_shared(&gp, 2), 2);
        assert_eq!(position_shared(&gp, 5), 2);
        let a = claim_batch(&gp, &members[i], None, 0, 10, 4).unwrap();
        let b = claim_batch(&gp, &members[j], None, 0, 10, 4).unwrap();
        assert_eq!((a.lo, a.hi, b.lo, b.hi), (2, 6, 6, 10));
        assert_eq!(claim_batch(&gp, &members[j], None, 0, 10, 4), None);
        assert_eq!(low_water(&gp, &members, 1), Some(2));
        finish_batch(&members[i], None);
        assert_eq!(low_water(&gp, &members, 1), Some(6));
        finish_batch(&members[j], Some(7));
        assert_eq!(low_water(&gp, &members, 1), Some(7));
        finish_batch(&members[j], None);
        assert_eq!(low_water(&gp, &members, 1), Some(10));
        assert_eq!(advance_committed(&gp, 10), None);
        assert_eq!(advance_committed(&gp, 4), Some(10));
        assert_eq!(committed_floor(&gp), Some(10));
        // Lapped: the cursor skips what the ring lost.
        let c = claim_batch(&gp, &members[i], None, 14, 20, 100).unwrap();
        assert_eq!((c.lo, c.hi, c.skipped), (14, 20, 4));
    }

    #[test]
    fn a_dead_members_batch_is_adopted_once() {
        let members = table(3);
        let gp = GroupPartition::new();
        let (i, _) = join(&members, 1, 1, 1, 0).unwrap();
        let (j, _) = join(&members, 2, 2, 1, 0).unwrap();
        let (k, _) = join(&members, 3, 3, 1, 0).unwrap();
        position_shared(&gp, 0);
        claim_batch(&gp, &members[i], None, 0, 8, 3).unwrap();
        let alive = |t: u32| t != 1;
        let o = find_orphan(&members, 1, 0, 10, alive).unwrap();
        assert_eq!(o.index, i);
        let got = adopt(&members[i], o, 2, 0).unwrap();
        assert_eq!((got.lo, got.hi), (0, 3));
        assert!(adopt(&members[i], o, 3, 0).is_none(), "adopted twice");
        assert!(find_orphan(&members, 1, 0, 10, alive).is_none());
        assert_eq!(low_water(&gp, &members, 1), Some(0));
        release_adopted(&members[i], got);
        assert_eq!(low_water(&gp, &members, 1), Some(3));
        let _ = (j, k);
    }

    #[test]
    fn share_refuses_a_live_owner() {
        let members = table(2);
        let gp = GroupPartition::new();
        let (i, a) = join(&members, 1, 1, 0, 0).unwrap();
        claim_pass(
            &members,
            std::slice::from_ref(&gp),
            Me { index: i, id: a },
            0,
            10,
            |_| true,
        )
        .unwrap();
        assert_eq!(share(&gp, &members, 0, 10, |_| true), Err(i));
        assert_eq!(share(&gp, &members, 0, 10, |_| false), Ok(()));
        assert_eq!(
            decode_owner(gp.owner.load(Ordering::Relaxed)),
            Owner::Shared
        );
        // A claimer leaves a shared partition alone.
        let out = claim_pass(
            &members,
            std::slice::from_ref(&gp),
            Me { index: i, id: a },
            0,
            10,
            |_| true,
        )
        .unwrap();
        assert!(out.owned.is_empty());
    }

    #[test]
    fn floor_falls_back_to_the_start_then_the_shared_cursor() {
        let gp = GroupPartition::new();
        assert_eq!(committed_floor(&gp), None, "an unread line holds nothing");
        gp.next.store(8, Ordering::Relaxed);
        assert_eq!(committed_floor(&gp), Some(7));
        publish_start(&gp, 40);
        assert_eq!(committed_floor(&gp), Some(40));
        advance_committed(&gp, 12);
        assert_eq!(
            committed_floor(&gp),
            Some(12),
            "a commit wins over the start"
        );
    }

    #[test]
    fn entry_words_round_trip_and_recover() {
        let w = entry_word(group_state::INIT, 5, 0xdead_beef);
        assert_eq!(entry_state(w), group_state::INIT);
        assert_eq!(entry_generation(w), 5);
        assert_eq!(entry_token(w), 0xdead_beef);
        let state = AtomicU64::new(0);
        let init = claim_entry(&state, 0, 7).unwrap();
        assert_eq!(entry_health(init, &mut |_| true), EntryHealth::Settling);
        assert_eq!(entry_health(init, &mut |_| false), EntryHealth::Abandoned);
        // A crashed creator's entry is taken over in place, once.
        let mine = claim_entry(&state, init, 8).unwrap();
        assert!(claim_entry(&state, init, 9).is_none());
        assert!(
            publish_entry(&state, init).is_none(),
            "the dead creator lost it"
        );
        let ready = publish_entry(&state, mine).unwrap();
        assert_eq!(entry_health(ready, &mut |_| false), EntryHealth::Ready);
        // Free: refused while a member lives, done otherwise.
        let f = begin_free(&state, ready, 8).unwrap();
        assert!(!still_ready(&state, ready));
        assert!(abort_free(&state, f));
        assert!(still_ready(&state, ready));
        let f = begin_free(&state, ready, 8).unwrap();
        assert!(finish_free(&state, f));
        let free = state.load(Ordering::Relaxed);
        assert_eq!(entry_health(free, &mut |_| true), EntryHealth::Free);
        let again = claim_entry(&state, free, 9).unwrap();
        assert_ne!(entry_generation(again), entry_generation(ready));
    }

    #[test]
    fn words_no_step_writes_are_void_or_impossible() {
        for w in [
            u64::MAX,
            1 << 63,
            0xFFFF_FFFF_0000_0000,
            5,
            SHARED_WORD | 1 << 32,
        ] {
            assert_eq!(decode_owner(w), Owner::Void, "{w:#x}");
        }
        let ready = entry_word(group_state::READY, 3, 0);
        assert!(!impossible_entry(ready));
        for w in [
            0,
            1,
            2,
            3,
            4,
            entry_word(group_state::INIT, 3, 0),
            ready | 1 << 32,
        ] {
            assert!(restorable(w, ready), "{w:#x}");
        }
        // A delete (same generation) or a reuse (another one) is real.
        for w in [
            entry_word(group_state::FREE, 3, 0),
            entry_word(group_state::FREEING, 3, 9),
            entry_word(group_state::INIT, 4, 9),
            entry_word(group_state::READY, 4, 0),
        ] {
            assert!(!restorable(w, ready), "{w:#x}");
        }
    }

    #[test]
    fn a_scribbled_shared_cursor_is_put_back_and_not_counted_missed() {
        let members = table(1);
        let (i, _) = join(&members, 1, 1, 1, 0).unwrap();
        let gp = GroupPartition::new();
        position_shared(&gp, 100);
        let b = |known| Bounds {
            earliest: 92,
            cursor: 100,
            known,
        };
        for wild in [0, 1, 50, 1 << 40] {
            gp.next.store(wild, Ordering::Relaxed);
            let c = claim_checked(&gp, &members[i], None, b(Some(95)), || 100, 8);
            assert!(c.repaired, "{wild}");
            let got = c.batch.unwrap();
            assert_eq!((got.lo, got.hi, got.skipped), (95, 100, 0), "{wild}");
            finish_batch(&members[i], None);
        }
        // Real loss since the known position is still counted: next 90,
        // the ring holds 92 onwards.
        gp.next.store(91, Ordering::Relaxed);
        let c = claim_checked(&gp, &members[i], None, b(Some(90)), || 100, 8);
        assert_eq!(c.batch.map(|b| b.skipped), Some(2));
        assert!(!c.repaired);
        finish_batch(&members[i], None);
        // A peer that saw a newer writer cursor claimed past our snapshot:
        // honest, not repaired.
        gp.next.store(106, Ordering::Relaxed);
        let c = claim_checked(&gp, &members[i], None, b(Some(90)), || 110, 8);
        assert!(!c.repaired);
        assert_eq!(c.batch.map(|b| (b.lo, b.hi)), Some((105, 110)));
    }

    #[test]
    fn a_committed_offset_beyond_the_writer_comes_down() {
        let gp = GroupPartition::new();
        assert!(!repair_committed(&gp, || 10, 4), "nothing committed");
        advance_committed(&gp, 1 << 40);
        assert!(repair_committed(&gp, || 10, 4));
        assert_eq!(committed_floor(&gp), Some(4));
        assert!(!repair_committed(&gp, || 10, 2), "a plausible value stays");
    }

    #[test]
    fn only_competing_groups_skip_blank_lines() {
        let members = table(3);
        assert_eq!(blank_line_floor(&members), Some(0), "plain consumers");
        join(&members, 1, 1, 1, 0).unwrap();
        assert_eq!(blank_line_floor(&members), None, "competing only");
        join(&members, 2, 2, 0, 0).unwrap();
        assert_eq!(blank_line_floor(&members), Some(0), "a claiming member");
    }

    #[test]
    fn write_limit_is_the_slowest_floor_plus_a_ring() {
        assert_eq!(write_limit([], 8), u64::MAX);
        assert_eq!(write_limit([5, 3, 9], 8), 11);
    }
}
