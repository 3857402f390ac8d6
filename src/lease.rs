//! Region lease protocol: renewal by CAS, reclamation by CAS to [`RECLAIMED`].
//!
//! Every region header carries a [`Lease`]: `expiry` (Unix-epoch ns) and
//! `ttl_ns`. Attached processes renew it (`crate::renewal` drives this, never
//! per message); the supervisor reclaims a region whose expiry (plus a grace
//! period) has passed. Both sides race with one CAS on `expiry`, so exactly
//! one wins:
//!
//! * renewal: `e -> now + ttl` unless `e == RECLAIMED` (then `LeaseExpired`);
//! * reclaim: `e -> RECLAIMED` only if `e` is the expired value the
//!   supervisor read. A renewal that lands first makes the CAS fail, and the
//!   region stays.
//!
//! The clock is the Unix wall clock (`CLOCK_REALTIME`) because expiry must mean
//! the same thing in every process. A wall-clock jump forward can make leases
//! look expired early (bounded by the supervisor's grace period); a jump
//! backward keeps regions longer. Renewals repair both at their next tick.

use crate::layout::{Lease, RECLAIMED};
use crate::sync::Ordering;

/// The lease was reclaimed: the region is gone (or going) and must not be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the region's lease expired and the supervisor reclaimed it")]
pub struct LeaseExpired;

/// Extend the lease to `now_ns + ttl`. Returns the new expiry (or the current
/// one if it is already later). Fails once the region is marked reclaimed.
pub fn renew(lease: &Lease, now_ns: u64) -> Result<u64, LeaseExpired> {
    let target = now_ns.saturating_add(lease.ttl_ns).min(RECLAIMED - 1);
    let mut current = lease.expiry.load(Ordering::Acquire);
    loop {
        if current == RECLAIMED {
            return Err(LeaseExpired);
        }
        if current >= target {
            return Ok(current);
        }
        // SYNC POINT "lease": a renewal and a reclaim both CAS `expiry`; the
        // modification order of this one word decides who won.
        match lease
            .expiry
            .compare_exchange(current, target, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => return Ok(target),
            Err(actual) => current = actual,
        }
    }
}

/// Whether the lease was reclaimed.
pub fn is_reclaimed(lease: &Lease) -> bool {
    lease.expiry.load(Ordering::Acquire) == RECLAIMED
}

/// What [`try_reclaim`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reclaim {
    /// This call marked the region reclaimed: the caller now unlinks it.
    Reclaimed,
    /// The lease is live (or was renewed during the attempt) until this expiry.
    Alive(u64),
    /// Somebody else had already reclaimed it.
    AlreadyReclaimed,
}

/// Reclaim the lease if it expired more than `grace_ns` before `now_ns`.
pub fn try_reclaim(lease: &Lease, now_ns: u64, grace_ns: u64) -> Reclaim {
    let seen = lease.expiry.load(Ordering::Acquire);
    if seen == RECLAIMED {
        return Reclaim::AlreadyReclaimed;
    }
    if now_ns < seen.saturating_add(grace_ns) {
        return Reclaim::Alive(seen);
    }
    // SYNC POINT "lease": see `renew`.
    match lease
        .expiry
        .compare_exchange(seen, RECLAIMED, Ordering::AcqRel, Ordering::Acquire)
    {
        Ok(_) => Reclaim::Reclaimed,
        Err(RECLAIMED) => Reclaim::AlreadyReclaimed,
        Err(now) => Reclaim::Alive(now),
    }
}

/// Mark the lease reclaimed unconditionally (topic deletion). Returns `false`
/// if it already was.
pub fn mark_reclaimed(lease: &Lease) -> bool {
    lease.expiry.swap(RECLAIMED, Ordering::AcqRel) != RECLAIMED
}
