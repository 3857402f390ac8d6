//! Backpressure: a writer on a `Backpressure` topic never passes the slowest
//! live consumer group's committed offset by a full ring.
//!
//! A group counts as live while it showed a sign of life (join, poll,
//! commit, heartbeat) within the topic's `dead_group_timeout`; after that it
//! stops holding the writer back, so a dead group cannot stall a topic
//! forever. With no live group the writer runs free.
//!
//! The producer caches the limit this returns and calls again only when its
//! next offset reaches it, so the group table is read when the ring looks
//! full, not per message.

use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::layout::group_state;
use crate::os;
use crate::sync::{spin_hint, yield_now, Ordering};
use crate::topic::TopicInner;

/// The first offset partition `p` may not write yet: the slowest live group's
/// committed offset plus the ring size (`u64::MAX` when no group is live).
pub(crate) fn limit(inner: &TopicInner, p: u32, now_ns: u64) -> u64 {
    let dead_after = inner.config.dead_group_timeout.as_nanos() as u64;
    let slots = inner.config.slots;
    let mut floor: Option<u64> = None;
    for g in 0..inner.meta_geo.group_cap {
        let view = inner.group(g);
        if view.header.state.load(Ordering::Acquire) != group_state::READY {
            continue;
        }
        let active = view.header.last_active_ns.load(Ordering::Relaxed);
        if now_ns.saturating_sub(active) > dead_after {
            continue;
        }
        // SYNC POINT "commit": pairs with the Release store of a commit.
        let committed = view.partitions[p as usize]
            .committed
            .load(Ordering::Acquire)
            .saturating_sub(1);
        floor = Some(floor.map_or(committed, |f| f.min(committed)));
    }
    floor.map_or(u64::MAX, |f| f.saturating_add(slots))
}

/// Wait until offset `next` of partition `p` may be written; returns the new
/// limit. `timeout` `Some(ZERO)` never waits; `None` waits indefinitely.
///
/// # Errors
/// [`Error::Full`] when the timeout passes, [`Error::LeaseExpired`].
pub(crate) fn wait_for_room(
    inner: &TopicInner,
    p: u32,
    next: u64,
    timeout: Option<Duration>,
) -> Result<u64> {
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut round = 0u32;
    loop {
        let lim = limit(inner, p, os::now_ns());
        if next < lim {
            return Ok(lim);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            inner.parts[p as usize]
                .header()
                .full_events
                .fetch_add(1, Ordering::Relaxed);
            return Err(Error::Full { partition: p });
        }
        if inner.reclaimed() {
            return Err(inner.expired());
        }
        round = round.saturating_add(1);
        if round < 100 {
            spin_hint();
        } else if round < 200 {
            yield_now();
        } else {
            std::thread::sleep(Duration::from_micros(50));
        }
    }
}
