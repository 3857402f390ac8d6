//! Backpressure: a writer on a `Backpressure` topic never passes the slowest
//! *holding* consumer group's committed offset by a full ring.
//!
//! A group holds the writer back while either
//!
//! * one of its member entries belongs to a live process (the member's
//!   kernel-held liveness token, see `crate::token`) — a live but slow or
//!   stuck member keeps holding, which is the point of backpressure; or
//! * it showed a sign of life (join, poll, commit, heartbeat, leave) within
//!   the topic's `dead_group_timeout` (`TopicConfig::dead_group_timeout`,
//!   default 30 s) — this covers plain [`crate::Consumer`]s, which are not
//!   members and touch the group a few times per timeout while they poll.
//!
//! So a group whose members all died (or that nobody polls any more) stops
//! holding the topic back `dead_group_timeout` after its last sign of life,
//! and a dead group can never stall a topic forever. With no holding group
//! the writer runs free.
//!
//! The producer caches the limit this returns and calls again only when its
//! next offset reaches it, so the group table is read when the ring looks
//! full, not per message. The limit is capped at one ring beyond the
//! writer, so a group that starts (or comes back) to hold the topic is
//! noticed within one ring of records. Tokens are probed only for groups
//! idle longer than the timeout. The pure check is
//! `group_protocol::write_limit` (model-checked under loom).
//!
//! Waiting: spin, then yield, then sleep in growing steps up to 100 µs; the set
//! of holding groups is re-evaluated every few milliseconds while waiting.

use std::time::{Duration, Instant};

use crate::deadline::Deadline;
use crate::error::{Error, Result};
use crate::group_protocol as proto;
use crate::layout::group_state;
use crate::os;
use crate::sync::{spin_hint, yield_now, Ordering};
use crate::token;
use crate::topic::TopicInner;

/// How far in the future a group's last sign of life may lie and still
/// count (clocks of processes on one host agree closely).
const FUTURE_SLACK_NS: u64 = 60_000_000_000;

/// How often a waiting writer re-evaluates which groups hold it back.
const RECHECK: Duration = Duration::from_millis(5);

/// The groups that hold the writer back at `now_ns` (lazily: no allocation,
/// so refreshing the cached limit keeps `send` allocation-free).
fn holding_groups(inner: &TopicInner, now_ns: u64) -> impl Iterator<Item = u32> + '_ {
    let dead_after = inner.config.dead_group_timeout.as_nanos() as u64;
    let me = inner.token.id();
    (0..inner.meta_geo.group_cap).filter(move |&g| {
        let view = inner.group(g);
        let w = view.header.state.load(Ordering::Acquire);
        // A word no protocol step writes (a scribble over a free entry, or
        // over a group whose members will put theirs back) holds nothing.
        if proto::entry_state(w) != group_state::READY || proto::impossible_entry(w) {
            return false;
        }
        let active = view.header.last_active_ns.load(Ordering::Relaxed);
        // A sign of life far in the future was scribbled: not "recent"
        // (members put it back; see `Membership::touch`).
        let recent = now_ns.saturating_sub(active) <= dead_after
            && active <= now_ns.saturating_add(FUTURE_SLACK_NS);
        recent
            || view.members.iter().any(|m| {
                let t = proto::token_of(m.id.load(Ordering::Acquire));
                t != 0 && (t == me || !token::probe(&inner.ns, t).is_dead())
            })
    })
}

/// Group `g`'s floor on partition `p`, if it reads the partition.
fn floor_of(inner: &TopicInner, g: u32, p: u32) -> Option<u64> {
    let view = inner.group(g);
    proto::committed_floor(&view.partitions[p as usize])
        .or_else(|| proto::blank_line_floor(view.members))
}

/// The first offset partition `p` may not write yet, given the holding
/// groups, capped at one ring beyond `next`.
fn limit_for(inner: &TopicInner, p: u32, groups: impl Iterator<Item = u32>, next: u64) -> u64 {
    let floors = groups.filter_map(|g| floor_of(inner, g, p));
    proto::write_limit(floors, inner.config.slots).min(next.saturating_add(inner.config.slots))
}

/// The [`Error::Full`] of partition `p` (writer at `next`): names the
/// slowest holding group, its lag, and how long it can still hold the
/// writer. Made only on the error path (allocates, probes tokens).
fn full_error(inner: &TopicInner, p: u32, next: u64) -> Error {
    let now = os::now_ns();
    let slowest = holding_groups(inner, now)
        .filter_map(|g| floor_of(inner, g, p).map(|floor| (g, floor)))
        .min_by_key(|&(_, floor)| floor);
    let Some((g, floor)) = slowest else {
        return Error::Full {
            partition: p,
            group: None,
            lag: 0,
            live_member: false,
            releases_in: None,
        };
    };
    let view = inner.group(g);
    let name = crate::group_table::Table::of(inner)
        .list()
        .into_iter()
        .find_map(|(i, n)| (i == g).then_some(n));
    let me = inner.token.id();
    let live_member = view.members.iter().any(|m| {
        let t = proto::token_of(m.id.load(Ordering::Acquire));
        t != 0 && (t == me || !token::probe(&inner.ns, t).is_dead())
    });
    let dead_after = inner.config.dead_group_timeout.as_nanos() as u64;
    let idle = now.saturating_sub(view.header.last_active_ns.load(Ordering::Relaxed));
    Error::Full {
        partition: p,
        group: name,
        lag: next.saturating_sub(floor),
        live_member,
        releases_in: (!live_member).then(|| Duration::from_nanos(dead_after.saturating_sub(idle))),
    }
}

/// Wait until offset `next` of partition `p` may be written; returns the new
/// limit (cache it: call again only when `next` reaches it). `timeout`
/// `Some(ZERO)` never waits; `None` waits indefinitely.
///
/// # Errors
/// [`Error::Full`] when the timeout passes (counted in the partition's
/// `full_events`), [`Error::LeaseExpired`].
pub(crate) fn wait_for_room(
    inner: &TopicInner,
    p: u32,
    next: u64,
    timeout: Option<Duration>,
) -> Result<u64> {
    // The common case, a refresh of the cached limit with room ahead,
    // allocates nothing; only a writer that must wait keeps a list.
    let lim = limit_for(inner, p, holding_groups(inner, os::now_ns()), next);
    if next < lim {
        return Ok(lim);
    }
    let start = Instant::now();
    let deadline = Deadline::from_timeout(timeout);
    let mut holders: Vec<u32> = holding_groups(inner, os::now_ns()).collect();
    let mut holders_at = start;
    let mut round = 0u32;
    loop {
        let lim = limit_for(inner, p, holders.iter().copied(), next);
        if next < lim {
            return Ok(lim);
        }
        let now = Instant::now();
        if deadline.passed() {
            inner
                .part(p)
                .header()
                .full_events
                .fetch_add(1, Ordering::Relaxed);
            return Err(full_error(inner, p, next));
        }
        if inner.reclaimed() {
            return Err(inner.expired());
        }
        if now.duration_since(holders_at) >= RECHECK {
            holders.clear();
            holders.extend(holding_groups(inner, os::now_ns()));
            holders_at = now;
        }
        round = round.saturating_add(1);
        if round < 100 {
            spin_hint();
        } else if round < 200 {
            yield_now();
        } else {
            // 20 µs growing to 100 µs: a waiting writer notices room within
            // a tenth of a millisecond at the cost of a few thousand
            // wake-ups a second while it is blocked.
            let step = Duration::from_micros(u64::from((round - 199).min(5)) * 20);
            let step = deadline.remaining_at_most(step);
            std::thread::sleep(step);
        }
    }
}

/// What a waiting async producer remembers between its looks: the holding
/// groups, re-evaluated every [`RECHECK`] as `wait_for_room` does (they
/// probe liveness tokens), in a list whose capacity is kept.
#[cfg(feature = "tokio")]
#[derive(Debug, Default)]
pub(crate) struct RoomCache {
    holders: Vec<u32>,
    at: Option<Instant>,
}

#[cfg(feature = "tokio")]
impl RoomCache {
    /// Forget the holders: the next look evaluates them afresh (at the
    /// start of each wait).
    pub(crate) fn reset(&mut self) {
        self.at = None;
    }
}

/// The new limit if offset `next` of partition `p` may be written now, else
/// `None`: one look, no waiting, nothing counted, no allocation once the
/// cache's list has grown (the async producer looks from its backoff steps;
/// `wait_for_room` with a zero timeout makes the counted [`Error::Full`]
/// once its deadline passes).
#[cfg(feature = "tokio")]
pub(crate) fn room(inner: &TopicInner, p: u32, next: u64, cache: &mut RoomCache) -> Option<u64> {
    let now = Instant::now();
    if cache.at.map_or(true, |t| now.duration_since(t) >= RECHECK) {
        cache.holders.clear();
        cache.holders.extend(holding_groups(inner, os::now_ns()));
        cache.at = Some(now);
    }
    let lim = limit_for(inner, p, cache.holders.iter().copied(), next);
    (next < lim).then_some(lim)
}
