//! Metrics any process can read from a topic's shared memory.

use crate::error::Result;
use crate::group_table;
use crate::os;
use crate::ring;
use crate::sync::Ordering;
use crate::token::{self, Liveness};
use crate::topic::Topic;
use crate::writer_lease;

/// The writer of a partition, as recorded in its writer lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriterInfo {
    /// Liveness token id of the writing process.
    pub token: u32,
    /// Epoch (grows on every change of writer).
    pub epoch: u32,
    /// Its pid, if its token file says.
    pub pid: Option<u32>,
    /// Whether its token lock is held (the process is alive).
    pub alive: bool,
}

/// Per-partition figures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionStats {
    /// Partition index.
    pub partition: u32,
    /// Next offset to be written (= records ever published).
    pub write_offset: u64,
    /// Records currently retained (`min(write_offset, slots)`).
    pub depth: u64,
    /// Lease expiry, Unix ns (`u64::MAX` once reclaimed).
    pub lease_expiry_ns: u64,
    /// Current writer, if any.
    pub writer: Option<WriterInfo>,
    /// Epoch of the writer lease (also when no writer holds it now).
    pub writer_epoch: u32,
    /// Writer takeovers so far.
    pub takeovers: u64,
    /// `try_send`s that found the ring full.
    pub full_events: u64,
    /// `true` if the header's write cursor failed validation against the
    /// slots (a buggy or hostile peer scribbled it): `write_offset` is then
    /// the end the slots show, not the wild value.
    pub cursor_suspect: bool,
}

/// Per-group, per-partition figures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupPartitionStats {
    /// Partition index.
    pub partition: u32,
    /// Committed offset (next to process), if the group committed.
    pub committed: Option<u64>,
    /// `write_offset - committed` (all of `write_offset` if never committed).
    pub lag: u64,
    /// Nacks recorded.
    pub nacks: u64,
    /// Records routed to the dead-letter topic.
    pub dead_lettered: u64,
    /// `true` if the stored committed offset lies beyond `write_offset`
    /// (impossible for a real commit: a scribbled group table); `committed`
    /// is then clamped to `write_offset`.
    pub committed_suspect: bool,
}

/// Per-group figures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupStats {
    /// Group name.
    pub name: String,
    /// Members registered in the member table.
    pub members: u32,
    /// Members whose liveness token is held.
    pub live_members: u32,
    /// Unix ns of the group's last sign of life.
    pub last_active_ns: u64,
    /// Per partition.
    pub partitions: Vec<GroupPartitionStats>,
    /// The registered members.
    pub member_list: Vec<MemberStats>,
}

/// One registered member of a group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberStats {
    /// Index in the member table.
    pub index: u32,
    /// Process id (informational).
    pub pid: u32,
    /// Whether its liveness token is held (the process is alive).
    pub alive: bool,
    /// Unix ns of its last heartbeat.
    pub heartbeat_ns: u64,
    /// `None` = claims whole partitions; `Some(p)` = competing consumer of `p`.
    pub competing: Option<u32>,
}

/// A snapshot of a topic's shared state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicStats {
    /// Topic name.
    pub topic: String,
    /// Lease expiry of the meta region, Unix ns.
    pub lease_expiry_ns: u64,
    /// Unix ns at which the snapshot was taken.
    pub now_ns: u64,
    /// Per partition.
    pub partitions: Vec<PartitionStats>,
    /// Per consumer group.
    pub groups: Vec<GroupStats>,
}

impl Topic {
    /// Read the topic's metrics from shared memory (cheap; no locks; probes
    /// the writers' and members' liveness tokens).
    ///
    /// # Errors
    /// None today; reserved for OS failures while probing.
    pub fn stats(&self) -> Result<TopicStats> {
        let inner = &self.inner;
        // Include partitions added since the last look.
        let n = inner.refresh().unwrap_or_else(|_| inner.attached()) as usize;
        let mut partitions = Vec::with_capacity(n);
        let mut writes = Vec::with_capacity(n);
        for (p, part) in inner.parts().enumerate().take(n) {
            let h = part.header();
            // Checked against the slots: a scribbled cursor must not show as
            // ~9.2e18 messages (flagged instead).
            let raw = h.cursor.load(Ordering::Acquire);
            let write_offset = ring::checked_latest(h, &part.slots());
            let cursor_suspect = raw != write_offset && !ring::believable(&part.slots(), raw);
            writes.push(write_offset);
            let (epoch, owner) = writer_lease::unpack(h.writer.load(Ordering::Acquire));
            let writer = (owner != 0).then(|| {
                let l = token::probe(&inner.ns, owner);
                WriterInfo {
                    token: owner,
                    epoch,
                    pid: l.pid(),
                    alive: !l.is_dead(),
                }
            });
            partitions.push(PartitionStats {
                partition: p as u32,
                write_offset,
                depth: write_offset.min(part.geo.slots),
                lease_expiry_ns: h.lease.expiry.load(Ordering::Acquire),
                writer,
                writer_epoch: epoch,
                takeovers: h.takeovers.load(Ordering::Relaxed),
                full_events: h.full_events.load(Ordering::Relaxed),
                cursor_suspect,
            });
        }
        let mut groups = Vec::new();
        for (g, name) in group_table::list(inner) {
            let view = inner.group(g);
            let mut members = 0;
            let mut live_members = 0;
            let mut member_list = Vec::new();
            for (i, m) in view.members.iter().enumerate() {
                let tok = m.id.load(Ordering::Acquire) as u32;
                if tok != 0 {
                    members += 1;
                    let alive = matches!(token::probe(&inner.ns, tok), Liveness::Alive { .. });
                    if alive {
                        live_members += 1;
                    }
                    member_list.push(MemberStats {
                        index: i as u32,
                        pid: m.pid.load(Ordering::Relaxed),
                        alive,
                        heartbeat_ns: m.heartbeat_ns.load(Ordering::Relaxed),
                        competing: m.role.load(Ordering::Relaxed).checked_sub(1),
                    });
                }
            }
            let parts = view
                .partitions
                .iter()
                .take(writes.len())
                .enumerate()
                .map(|(p, gp)| {
                    let write = writes.get(p).copied().unwrap_or(0);
                    let raw = gp.committed.load(Ordering::Acquire).checked_sub(1);
                    let committed_suspect = raw.is_some_and(|c| c > write);
                    let committed = raw.map(|c| c.min(write));
                    GroupPartitionStats {
                        partition: p as u32,
                        committed,
                        lag: write.saturating_sub(committed.unwrap_or(0)),
                        nacks: gp.nacks.load(Ordering::Relaxed),
                        dead_lettered: gp.dead_lettered.load(Ordering::Relaxed),
                        committed_suspect,
                    }
                })
                .collect();
            groups.push(GroupStats {
                name,
                members,
                live_members,
                last_active_ns: view.header.last_active_ns.load(Ordering::Relaxed),
                partitions: parts,
                member_list,
            });
        }
        Ok(TopicStats {
            topic: inner.name.clone(),
            lease_expiry_ns: inner
                .meta
                .meta_header()
                .lease
                .expiry
                .load(Ordering::Acquire),
            now_ns: os::now_ns(),
            partitions,
            groups,
        })
    }
}

/// Whether a lease expiry value means "reclaimed".
pub fn is_reclaimed_expiry(expiry_ns: u64) -> bool {
    expiry_ns == crate::layout::RECLAIMED
}
