//! Writer lease protocol: who may write a partition.
//!
//! The header's `writer` word packs `epoch << 32 | owner`, where `owner` is the
//! liveness token id (`crate::token`) of the writing process and `0` means "no
//! writer". The epoch grows by one on every change of owner, so a writer that
//! was taken over is *fenced*: its word no longer matches and its next send
//! fails (`ring::Writer::check`), and its next slot claim loses the CAS.
//!
//! * claim a free partition: CAS `(e, 0) -> (e + 1, me)`;
//! * take over from a dead owner: CAS `(e, dead) -> (e + 1, me)`; the caller
//!   has established, through the kernel-held token, that `dead` is dead;
//! * release on drop: CAS `(e, me) -> (e, 0)`.

use crate::sync::{AtomicU64, Ordering};

/// Pack an epoch and owner token into a writer word.
pub fn pack(epoch: u32, owner: u32) -> u64 {
    (u64::from(epoch) << 32) | u64::from(owner)
}

/// Split a writer word into `(epoch, owner)`.
pub fn unpack(word: u64) -> (u32, u32) {
    ((word >> 32) as u32, word as u32)
}

/// Result of a successful claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Claimed {
    /// The word now in the header (ours).
    pub word: u64,
    /// The owner we took over from, if the partition was held by a dead one.
    pub took_over_from: Option<u32>,
}

/// The partition is held by a live writer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Held {
    /// Holder's token id.
    pub owner: u32,
    /// Holder's epoch.
    pub epoch: u32,
}

/// Try to become the writer. `is_dead(owner)` is asked only about a current
/// owner and must answer from kernel-held liveness, never from a guess.
pub fn claim(writer: &AtomicU64, me: u32, is_dead: impl Fn(u32) -> bool) -> Result<Claimed, Held> {
    let mut current = writer.load(Ordering::Acquire);
    loop {
        let (epoch, owner) = unpack(current);
        let took_over_from = match owner {
            0 => None,
            o if o == me => return Err(Held { owner, epoch }),
            o if is_dead(o) => Some(o),
            _ => return Err(Held { owner, epoch }),
        };
        let next = pack(epoch.wrapping_add(1), me);
        // SYNC POINT "writer lease": AcqRel so the new writer sees everything
        // the previous one published before losing the lease.
        match writer.compare_exchange(current, next, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => {
                return Ok(Claimed {
                    word: next,
                    took_over_from,
                })
            }
            Err(actual) => current = actual,
        }
    }
}

/// Give the lease back if we still hold it (keeps the epoch).
pub fn release(writer: &AtomicU64, word: u64) -> bool {
    let (epoch, _) = unpack(word);
    writer
        .compare_exchange(word, pack(epoch, 0), Ordering::AcqRel, Ordering::Relaxed)
        .is_ok()
}
