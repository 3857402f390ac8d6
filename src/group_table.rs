//! The consumer-group table in a topic's meta region: finding and creating a
//! group entry by name.
//!
//! Entry states (`GroupHeader::state`): `FREE -> INIT` by CAS (the creator now
//! owns the entry), name written, `INIT -> READY` with Release (SYNC POINT
//! "group ready": readers that load READY with Acquire see the name). Two
//! processes creating the same name at once can both succeed; each then scans
//! the entries *below* its own and, if it finds the same name READY, frees its
//! entry and uses the lower one, so all agree on the lowest index.

use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::layout::{group_state, GROUP_NAME_MAX};
use crate::name;
use crate::os;
use crate::sync::Ordering;
use crate::topic::TopicInner;

/// How long to wait for an entry some other process is initialising.
const INIT_WAIT: Duration = Duration::from_millis(500);

fn name_matches(inner: &TopicInner, g: u32, wanted: &str) -> bool {
    let h = inner.group(g).header;
    let len = (h.name_len as usize).min(GROUP_NAME_MAX);
    &h.name[..len] == wanted.as_bytes()
}

/// Wait (bounded) while entry `g` is being initialised; returns its state.
fn settled_state(inner: &TopicInner, g: u32) -> u64 {
    let start = Instant::now();
    loop {
        // SYNC POINT "group ready".
        let s = inner.group(g).header.state.load(Ordering::Acquire);
        if s != group_state::INIT || start.elapsed() > INIT_WAIT {
            return s;
        }
        std::thread::sleep(Duration::from_micros(100));
    }
}

/// Index of group `group` if it exists.
pub(crate) fn find(inner: &TopicInner, group: &str) -> Option<u32> {
    (0..inner.meta_geo.group_cap)
        .find(|&g| settled_state(inner, g) == group_state::READY && name_matches(inner, g, group))
}

/// Index of group `group`, creating its entry if needed.
pub(crate) fn find_or_create(inner: &TopicInner, group: &str) -> Result<u32> {
    name::validate_group(group)?;
    if let Some(g) = find(inner, group) {
        return Ok(g);
    }
    for g in 0..inner.meta_geo.group_cap {
        let view = inner.group(g);
        let h = view.header;
        if h.state
            .compare_exchange(
                group_state::FREE,
                group_state::INIT,
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_err()
        {
            continue;
        }
        // The entry is ours until READY: fill it. Fields are plain (written
        // only in INIT by the one owner), except the atomics reset below.
        inner
            .meta
            .write_group_name(inner.meta_geo, g, group.as_bytes());
        for p in view.partitions {
            p.committed.store(0, Ordering::Relaxed);
            p.owner.store(0, Ordering::Relaxed);
            p.next.store(0, Ordering::Relaxed);
            p.nacks.store(0, Ordering::Relaxed);
            p.dead_lettered.store(0, Ordering::Relaxed);
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
        h.state.store(group_state::READY, Ordering::Release);
        // Resolve a concurrent creation of the same name: lowest index wins.
        if let Some(lower) = (0..g).find(|&l| {
            settled_state(inner, l) == group_state::READY && name_matches(inner, l, group)
        }) {
            h.state.store(group_state::FREE, Ordering::Release);
            return Ok(lower);
        }
        return Ok(g);
    }
    Err(Error::GroupTableFull {
        topic: inner.name.clone(),
        capacity: inner.meta_geo.group_cap,
    })
}

/// Names of the READY groups, with their indices.
pub(crate) fn list(inner: &TopicInner) -> Vec<(u32, String)> {
    (0..inner.meta_geo.group_cap)
        .filter(|&g| inner.group(g).header.state.load(Ordering::Acquire) == group_state::READY)
        .map(|g| {
            let h = inner.group(g).header;
            let len = (h.name_len as usize).min(GROUP_NAME_MAX);
            (g, String::from_utf8_lossy(&h.name[..len]).into_owned())
        })
        .collect()
}
