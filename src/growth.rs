//! Topic growth protocol: how a topic gains a partition while other
//! processes read and write it.
//!
//! A topic's meta region holds (see `crate::layout`, GROWTH line):
//!
//! * `partition_count`: the partitions *published*. Regions
//!   `p0 .. p<count-1>` exist and are fully initialised. It only grows, by
//!   one CAS `n -> n + 1` per new partition.
//! * `grow`: the growth claim, `target << 32 | token`: the process whose
//!   liveness token is `token` is creating partition `target`; token `0`
//!   means nobody is.
//!
//! Growing by one partition:
//!
//! 1. [`begin`]: CAS `grow` from "free" (token 0), "finished" (`target` below
//!    the published count: its holder published and had not cleared it yet)
//!    or "dead" (its holder's kernel-held token is released) to
//!    `(count, me)`. A claim held by a live process for the current count
//!    means someone else is growing: [`Begin::Busy`]; wait and retry
//!    (bounded by the holder's liveness and a timeout).
//! 2. Create region `p<target>`: header, ring, the new writer lease
//!    `(epoch 1, me)` so the partition is born owned by its creator, and
//!    `magic` last (Release, SYNC POINT "initialised", `crate::region`). A
//!    region of that name left by a grower that died before publishing
//!    (half-made, or complete but unpublished) is retired and replaced:
//!    no one can have attached it, since readers attach only partitions
//!    below the published count.
//! 3. [`publish`]: CAS `partition_count` `target -> target + 1` (Release,
//!    SYNC POINT "partition published"): a reader that loads the new count
//!    with Acquire ([`published`]) finds the region complete.
//! 4. [`end`]: CAS `grow` from our claim back to `0`. A grower that dies
//!    here leaves a "finished" claim that the next grower simply takes.
//!
//! Only the claim holder publishes, and it publishes exactly its target, so
//! the count grows by exactly one per completed growth and partition
//! `target` has one creator. The model checks are in
//! `loom-tests/tests/growth.rs`.

use crate::sync::{AtomicU32, AtomicU64, Ordering};

/// Pack a growth claim: partition `target` being created by `token`.
pub fn pack(target: u32, token: u32) -> u64 {
    (u64::from(target) << 32) | u64::from(token)
}

/// Split a growth claim into `(target, token)`.
pub fn unpack(word: u64) -> (u32, u32) {
    ((word >> 32) as u32, word as u32)
}

/// The published partition count, clamped to `max` (a scribbled count can
/// never make a reader look past the group lines the region has room for).
#[inline]
pub fn published(count: &AtomicU32, max: u32) -> u32 {
    // SYNC POINT "partition published": pairs with `publish`'s Release CAS;
    // every partition below the loaded count is fully initialised.
    count.load(Ordering::Acquire).min(max)
}

/// Outcome of [`begin`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Begin {
    /// The claim is ours: create partition `target`, then [`publish`] it and
    /// [`end`] with `word`.
    Mine {
        /// The partition to create (= the published count).
        target: u32,
        /// Our claim word, for [`end`].
        word: u64,
        /// The dead process whose unfinished claim on the same target we
        /// replaced, if any (its region, if it made one, must be replaced).
        replaced: Option<u32>,
    },
    /// A live process is creating partition `target`; wait and retry.
    Busy {
        /// Its token.
        owner: u32,
        /// The partition it is creating.
        target: u32,
    },
    /// The topic has `max` partitions already.
    Full,
}

/// Try to take the growth claim for the next partition. `is_dead(token)` is
/// asked only about a current claim holder and must answer from kernel-held
/// liveness; `me`'s own claims (another thread of this process growing the
/// same topic) count as live.
pub fn begin(
    grow: &AtomicU64,
    count: &AtomicU32,
    max: u32,
    me: u32,
    mut is_dead: impl FnMut(u32) -> bool,
) -> Begin {
    let mut cur = grow.load(Ordering::Acquire);
    loop {
        let n = published(count, max);
        if n >= max {
            return Begin::Full;
        }
        let (target, owner) = unpack(cur);
        let unfinished = owner != 0 && target >= n;
        if unfinished && (owner == me || !is_dead(owner)) {
            return Begin::Busy { owner, target };
        }
        let next = pack(n, me);
        // SYNC POINT "growth claim": AcqRel so the claim we replace (and the
        // count its holder published before releasing it) is visible to us.
        match grow.compare_exchange(cur, next, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => {
                // Holding the claim, only we publish: the count is stable.
                // A snapshot taken before the previous holder published is
                // not: retake the claim for the fresh count.
                if published(count, max) == n {
                    return Begin::Mine {
                        target: n,
                        word: next,
                        replaced: (unfinished && target == n).then_some(owner),
                    };
                }
                cur = next;
            }
            Err(actual) => cur = actual,
        }
    }
}

/// Publish partition `target` (its region is complete). Returns whether the
/// count moved from `target` to `target + 1`; `false` means the claim was
/// lost (only possible if this process was wrongly judged dead).
pub fn publish(count: &AtomicU32, target: u32) -> bool {
    // SYNC POINT "partition published": Release so a reader that loads the
    // new count (Acquire, `published`) sees the whole region.
    count
        .compare_exchange(
            target,
            target.wrapping_add(1),
            Ordering::AcqRel,
            Ordering::Acquire,
        )
        .is_ok()
}

/// Release our growth claim (`word` from [`Begin::Mine`]). Returns whether
/// it was still ours.
pub fn end(grow: &AtomicU64, word: u64) -> bool {
    // SYNC POINT "growth claim": Release so the next claimer sees our publish.
    grow.compare_exchange(word, 0, Ordering::AcqRel, Ordering::Relaxed)
        .is_ok()
}
