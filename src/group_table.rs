//! The consumer-group table in a topic's meta region: finding, creating,
//! freeing and deleting group entries by name.
//!
//! The entry word (`GroupHeader::state`) and its transitions are in
//! `crate::group_protocol` (model-checked under loom): `FREE -> INIT` by
//! CAS with the creator's liveness token in the word (the entry is now the
//! creator's), name and lines reset, `INIT -> READY` with Release (SYNC
//! POINT "group ready": a finder that loads READY with Acquire sees the
//! name). An INIT entry whose creator's token is dead (it crashed half-way)
//! is taken over in place by the next creator or freed by the next finder
//! and by the supervisor's pass ([`sweep`]), at once: nobody waits for a
//! dead process.
//!
//! Two processes creating the same name at once can both succeed; each then
//! scans the entries *below* its own and, if it finds the same name READY,
//! frees its entry and uses the lower one, so all agree on the lowest index.
//!
//! A group is freed ([`sweep`]) when no member entry belongs to a live
//! process and it showed no sign of life (join, poll, commit, heartbeat)
//! for the topic's group retention; and by [`delete`]. Both go through
//! FREEING (see `group_protocol`), so a member joining at that moment either
//! is seen (the free is called off) or sees the free and backs out.

use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::group_protocol::{self as proto, EntryHealth};
use crate::layout::{group_state, GROUP_NAME_MAX};
use crate::name;
use crate::os;
use crate::region::{GroupView, MetaGeometry, Region};
use crate::sync::Ordering;
use crate::token;
use crate::topic::TopicInner;

/// How long after its last sign of life a group whose entry word was
/// scribbled is left to its members to repair (see `Table::members_repair`).
const REPAIR_GRACE: Duration = Duration::from_secs(10);

/// How long to wait for an entry a live process is creating or freeing.
const SETTLE_WAIT: Duration = Duration::from_millis(500);

/// The group table of one topic, as one process sees it.
#[derive(Clone, Copy)]
pub(crate) struct Table<'a> {
    pub(crate) meta: &'a Region,
    pub(crate) geo: MetaGeometry,
    pub(crate) ns: &'a str,
    pub(crate) topic: &'a str,
    /// This process's liveness token (`0` for the supervisor, which has none).
    pub(crate) me: u32,
    /// Group retention in ns (`0` = never free an idle group).
    pub(crate) retention_ns: u64,
}

/// A group entry found: its index and the READY word it had.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Found {
    pub(crate) index: u32,
    pub(crate) word: u64,
}

/// Why [`sweep`] freed an entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FreedReason {
    /// Its creator (or a process freeing it) died half-way.
    Abandoned,
    /// No live member and no sign of life for the group retention.
    Retention {
        /// How long it had been idle.
        idle: Duration,
    },
}

/// One entry [`sweep`] freed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FreedGroup {
    /// Entry index.
    pub index: u32,
    /// Group name (empty for an entry abandoned while being created).
    pub name: String,
    /// Why.
    pub reason: FreedReason,
}

impl<'a> Table<'a> {
    pub(crate) fn of(inner: &'a TopicInner) -> Table<'a> {
        Table {
            meta: &inner.meta,
            geo: inner.meta_geo,
            ns: &inner.ns,
            topic: &inner.name,
            me: inner.token.id(),
            retention_ns: inner
                .config
                .group_retention
                .as_nanos()
                .min(u128::from(u64::MAX)) as u64,
        }
    }

    pub(crate) fn group(&self, g: u32) -> GroupView<'a> {
        self.meta.group(self.geo, g)
    }

    fn alive(&self) -> impl FnMut(u32) -> bool + 'a {
        let ns = self.ns;
        let me = self.me;
        let mut seen: Vec<(u32, bool)> = Vec::new();
        move |t| {
            if t == me && me != 0 {
                return true;
            }
            if let Some(&(_, a)) = seen.iter().find(|(x, _)| *x == t) {
                return a;
            }
            let a = !token::probe(ns, t).is_dead();
            seen.push((t, a));
            a
        }
    }

    /// The name of entry `g` if it still holds the READY word `word` after
    /// the name was read (a seqlock: a concurrent free and re-create changes
    /// the word).
    fn name_if(&self, g: u32, word: u64) -> Option<String> {
        let h = self.group(g).header;
        let len = (h.name_len as usize).min(GROUP_NAME_MAX);
        let name = String::from_utf8_lossy(&h.name[..len]).into_owned();
        (h.state.load(Ordering::Acquire) == word).then_some(name)
    }

    /// Whether entry `g`, holding `word`, is named `wanted` (no allocation:
    /// commits look their group up by name).
    fn matches(&self, g: u32, word: u64, wanted: &str) -> bool {
        let h = self.group(g).header;
        let len = (h.name_len as usize).min(GROUP_NAME_MAX);
        h.name[..len] == *wanted.as_bytes() && h.state.load(Ordering::Acquire) == word
    }

    /// The word of entry `g` once it is not being created or freed by a live
    /// process (bounded wait); abandoned entries are recovered on the way.
    fn settled(&self, g: u32, alive: &mut impl FnMut(u32) -> bool) -> u64 {
        let state = &self.group(g).header.state;
        let start = Instant::now();
        loop {
            // SYNC POINT "group ready".
            let w = state.load(Ordering::Acquire);
            if start.elapsed() >= SETTLE_WAIT {
                return w; // bounded, even against a scribbling peer
            }
            match proto::entry_health(w, alive) {
                EntryHealth::Settling => std::thread::sleep(Duration::from_micros(100)),
                EntryHealth::Abandoned if !self.members_repair(g, w, alive) => {
                    proto::recover_entry(state, w);
                }
                _ => return w,
            }
        }
    }

    /// Whether entry `g`'s word `w` is one no protocol step writes (a
    /// hostile peer's) while a live member holds the entry: its members put
    /// their READY word back at their next poll, so a finder must neither
    /// free the entry (the group would lose its offsets and members) nor use
    /// the word.
    ///
    /// "Held" also covers a group active within [`REPAIR_GRACE`]: a member
    /// whose own id was scribbled at the same moment no longer looks live,
    /// but it joins again and repairs the word at its next poll.
    fn members_repair(&self, g: u32, w: u64, alive: &mut impl FnMut(u32) -> bool) -> bool {
        if !proto::impossible_entry(w) {
            return false;
        }
        let view = self.group(g);
        let active = view.header.last_active_ns.load(Ordering::Relaxed);
        os::now_ns().saturating_sub(active) <= REPAIR_GRACE.as_nanos() as u64
            || proto::any_live_member(view.members, alive)
    }

    /// Entry of group `group`, if it exists.
    pub(crate) fn find(&self, group: &str) -> Option<Found> {
        let mut alive = self.alive();
        (0..self.geo.group_cap).find_map(|g| {
            let w = self.settled(g, &mut alive);
            (proto::entry_state(w) == group_state::READY
                && !proto::impossible_entry(w)
                && self.matches(g, w, group))
            .then_some(Found { index: g, word: w })
        })
    }

    /// Entry of group `group`, creating it if needed. A full table is swept
    /// first (abandoned entries, groups idle past the retention).
    pub(crate) fn find_or_create(&self, group: &str) -> Result<Found> {
        name::validate_group(group)?;
        if let Some(f) = self.find(group) {
            return Ok(f);
        }
        if let Some(f) = self.create(group) {
            return Ok(f);
        }
        sweep(self, os::now_ns());
        if let Some(f) = self.create(group) {
            return Ok(f);
        }
        Err(self.full_error(os::now_ns()))
    }

    fn create(&self, group: &str) -> Option<Found> {
        let mut alive = self.alive();
        for g in 0..self.geo.group_cap {
            let view = self.group(g);
            let h = view.header;
            let seen = h.state.load(Ordering::Acquire);
            match proto::entry_health(seen, &mut alive) {
                // A scribbled word (a FREE of generation 0 looks like a
                // never-used entry) over a live group: its members repair it.
                EntryHealth::Free | EntryHealth::Abandoned
                    if self.members_repair(g, seen, &mut alive) =>
                {
                    continue
                }
                EntryHealth::Free => {}
                // A crashed creator's entry: take it over in place.
                EntryHealth::Abandoned if proto::entry_state(seen) == group_state::INIT => {}
                EntryHealth::Abandoned => {
                    proto::recover_entry(&h.state, seen);
                    continue;
                }
                _ => continue,
            }
            let Some(init) = proto::claim_entry(&h.state, seen, self.me) else {
                continue;
            };
            // The entry is ours until READY: fill it. Fields are plain (written
            // only in INIT by the one owner), except the atomics reset below.
            self.meta.write_group_name(self.geo, g, group.as_bytes());
            for p in view.partitions {
                p.committed.store(0, Ordering::Relaxed);
                p.owner.store(0, Ordering::Relaxed);
                p.next.store(0, Ordering::Relaxed);
                p.nacks.store(0, Ordering::Relaxed);
                p.dead_lettered.store(0, Ordering::Relaxed);
                p.start.store(0, Ordering::Relaxed);
            }
            for m in view.members {
                m.id.store(0, Ordering::Relaxed);
                m.heartbeat_ns.store(0, Ordering::Relaxed);
                m.pid.store(0, Ordering::Relaxed);
                m.role.store(0, Ordering::Relaxed);
                m.work_lo.store(0, Ordering::Relaxed);
                m.work_hi.store(0, Ordering::Relaxed);
            }
            // 0 = "not set": the first `ConsumerGroup` to join sets it.
            h.stale_ms.store(0, Ordering::Relaxed);
            h.last_active_ns.store(os::now_ns(), Ordering::Relaxed);
            // SYNC POINT "group ready".
            let Some(ready) = proto::publish_entry(&h.state, init) else {
                continue; // recovered under us (judged dead): try another
            };
            // Resolve a concurrent creation of the same name: lowest index wins.
            let lower = (0..g).find_map(|l| {
                let w = self.settled(l, &mut alive);
                (proto::entry_state(w) == group_state::READY && self.matches(l, w, group))
                    .then_some(Found { index: l, word: w })
            });
            if let Some(lower) = lower {
                if let Some(f) = proto::begin_free(&h.state, ready, self.me) {
                    proto::finish_free(&h.state, f);
                }
                return Some(lower);
            }
            return Some(Found {
                index: g,
                word: ready,
            });
        }
        None
    }

    /// Groups in use, with live members, idle past the retention.
    pub(crate) fn census(&self, now: u64) -> Census {
        let mut alive = self.alive();
        let mut c = Census::default();
        for g in 0..self.geo.group_cap {
            let view = self.group(g);
            let w = view.header.state.load(Ordering::Acquire);
            if proto::entry_state(w) == group_state::FREE {
                continue;
            }
            c.used += 1;
            if proto::any_live_member(view.members, &mut alive) {
                c.live += 1;
            } else if self.retention_ns != 0
                && now.saturating_sub(view.header.last_active_ns.load(Ordering::Relaxed))
                    > self.retention_ns
            {
                c.idle += 1;
            }
        }
        c
    }

    fn full_error(&self, now: u64) -> Error {
        let c = self.census(now);
        Error::GroupTableFull {
            topic: self.topic.to_string(),
            capacity: self.geo.group_cap,
            live: c.live,
            idle: c.used.saturating_sub(c.live),
            retention: Duration::from_nanos(self.retention_ns),
        }
    }

    /// Names of the READY groups, with their indices.
    pub(crate) fn list(&self) -> Vec<(u32, String)> {
        (0..self.geo.group_cap)
            .filter_map(|g| {
                let w = self.group(g).header.state.load(Ordering::Acquire);
                if proto::entry_state(w) != group_state::READY {
                    return None;
                }
                self.name_if(g, w).map(|n| (g, n))
            })
            .collect()
    }
}

/// Counts of a group table, for capacity errors.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Census {
    pub(crate) used: u32,
    pub(crate) live: u32,
    pub(crate) idle: u32,
}

/// Free what can be freed: entries abandoned half-way (creator or freer
/// dead), and groups with no live member and no sign of life for the
/// retention (if any). Returns what was freed.
pub(crate) fn sweep(t: &Table<'_>, now: u64) -> Vec<FreedGroup> {
    let mut alive = t.alive();
    let mut freed = Vec::new();
    for g in 0..t.geo.group_cap {
        let view = t.group(g);
        let state = &view.header.state;
        let w = state.load(Ordering::Acquire);
        match proto::entry_health(w, &mut alive) {
            EntryHealth::Abandoned
                if !t.members_repair(g, w, &mut alive) && proto::recover_entry(state, w) =>
            {
                freed.push(FreedGroup {
                    index: g,
                    name: String::new(),
                    reason: FreedReason::Abandoned,
                });
            }
            EntryHealth::Ready if t.retention_ns != 0 => {
                let idle_for = |view: &GroupView<'_>| {
                    now.saturating_sub(view.header.last_active_ns.load(Ordering::Acquire))
                };
                if idle_for(&view) <= t.retention_ns
                    || proto::any_live_member(view.members, &mut alive)
                {
                    continue;
                }
                let Some(name) = t.name_if(g, w) else {
                    continue;
                };
                let Some(f) = proto::begin_free(state, w, t.me) else {
                    continue;
                };
                // SYNC POINT "free vs join": look again after the fence.
                let idle = idle_for(&view);
                if idle <= t.retention_ns || proto::any_live_member(view.members, &mut alive) {
                    proto::abort_free(state, f);
                    continue;
                }
                if proto::finish_free(state, f) {
                    freed.push(FreedGroup {
                        index: g,
                        name,
                        reason: FreedReason::Retention {
                            idle: Duration::from_nanos(idle),
                        },
                    });
                }
            }
            _ => {}
        }
    }
    freed
}

/// Delete group `group`: refused with [`Error::GroupBusy`] while a member
/// entry belongs to a live process, unless `force`. Returns the freed
/// entry's index.
///
/// A member of a force-deleted group gets [`Error::GroupDeleted`] at its next
/// heartbeat or commit.
pub(crate) fn delete(t: &Table<'_>, group: &str, force: bool) -> Result<u32> {
    name::validate_group(group)?;
    let not_found = || Error::GroupNotFound {
        topic: t.topic.to_string(),
        group: group.to_string(),
    };
    for _ in 0..100 {
        let f = t.find(group).ok_or_else(not_found)?;
        let view = t.group(f.index);
        let Some(freeing) = proto::begin_free(&view.header.state, f.word, t.me) else {
            continue; // changed under us: look again
        };
        // SYNC POINT "free vs join".
        let mut alive = t.alive();
        let live: Vec<u32> = view
            .members
            .iter()
            .filter_map(|m| {
                let tok = proto::token_of(m.id.load(Ordering::Acquire));
                (tok != 0 && alive(tok)).then(|| m.pid.load(Ordering::Relaxed))
            })
            .collect();
        if !live.is_empty() && !force {
            proto::abort_free(&view.header.state, freeing);
            return Err(Error::GroupBusy {
                topic: t.topic.to_string(),
                group: group.to_string(),
                pids: live,
            });
        }
        if proto::finish_free(&view.header.state, freeing) {
            return Ok(f.index);
        }
    }
    Err(not_found())
}

/// Entry of group `group` if it exists.
pub(crate) fn find(inner: &TopicInner, group: &str) -> Option<u32> {
    Table::of(inner).find(group).map(|f| f.index)
}

/// Entry of group `group`, creating it if needed.
pub(crate) fn find_or_create(inner: &TopicInner, group: &str) -> Result<u32> {
    Table::of(inner).find_or_create(group).map(|f| f.index)
}

/// Names of the READY groups, with their indices.
pub(crate) fn list(inner: &TopicInner) -> Vec<(u32, String)> {
    Table::of(inner).list()
}
