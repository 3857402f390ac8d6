//! What `shmq top` shows, computed from two successive snapshots: rates
//! are the growth of write offsets (in) and of committed offsets (out)
//! between them, divided by the time between them.

use std::collections::{HashMap, VecDeque};

use serde_json::{json, Value};

use crate::cmd::info::left_ms;
use crate::cmd::observe::Snapshot;

/// Rate samples kept per topic for the sparkline.
pub const HISTORY: usize = 120;

/// One consumer group of a topic.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GroupRow {
    /// Group name.
    pub name: String,
    /// Members registered.
    pub members: u32,
    /// Members alive.
    pub live_members: u32,
    /// Total lag over the partitions.
    pub lag: u64,
    /// Lag per partition.
    pub partition_lag: Vec<u64>,
    /// Sum of committed offsets (for the out rate).
    pub committed: u64,
    /// Records committed per second.
    pub out_rate: f64,
}

/// One partition of a topic.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PartRow {
    /// Partition index.
    pub partition: u32,
    /// Next offset to write.
    pub write_offset: u64,
    /// Records published per second.
    pub in_rate: f64,
    /// Records retained.
    pub depth: u64,
    /// Writer's pid, if a writer holds it.
    pub writer_pid: Option<u32>,
    /// Whether the writer is alive (`None`: no writer).
    pub writer_alive: Option<bool>,
    /// Writer epoch.
    pub writer_epoch: u32,
    /// Lease time left, ms (`None` once reclaimed).
    pub lease_left_ms: Option<u64>,
}

/// One topic.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TopicRow {
    /// Namespace.
    pub namespace: String,
    /// Topic.
    pub topic: String,
    /// `ok`, `reclaimed` or `error`.
    pub state: &'static str,
    /// The error, if `state` is `error`.
    pub error: Option<String>,
    /// Records ever published (sum of write offsets).
    pub messages: u64,
    /// Records published per second.
    pub in_rate: f64,
    /// Records committed per second, summed over groups.
    pub out_rate: f64,
    /// Largest lag of any group.
    pub max_lag: u64,
    /// Partitions with a live writer.
    pub writers_live: u32,
    /// Partitions whose writer is dead.
    pub writers_dead: u32,
    /// Partitions without a writer.
    pub writers_none: u32,
    /// Topic lease time left, ms.
    pub lease_left_ms: Option<u64>,
    /// Partitions.
    pub parts: Vec<PartRow>,
    /// Groups.
    pub groups: Vec<GroupRow>,
    /// In-rate history, oldest first (records/s, rounded).
    pub history: Vec<u64>,
}

impl TopicRow {
    /// `namespace/topic`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.topic)
    }

    /// The row as JSON (for `--once --format json`).
    pub fn json(&self) -> Value {
        json!({
            "namespace": self.namespace,
            "topic": self.topic,
            "state": self.state,
            "error": self.error,
            "partitions": self.parts.len(),
            "messages": self.messages,
            "in_per_sec": round2(self.in_rate),
            "out_per_sec": round2(self.out_rate),
            "max_lag": self.max_lag,
            "writers": { "live": self.writers_live, "dead": self.writers_dead, "none": self.writers_none },
            "lease_left_ms": self.lease_left_ms,
            "partition_list": self.parts.iter().map(|p| json!({
                "partition": p.partition,
                "write_offset": p.write_offset,
                "in_per_sec": round2(p.in_rate),
                "depth": p.depth,
                "writer_pid": p.writer_pid,
                "writer_alive": p.writer_alive,
                "writer_epoch": p.writer_epoch,
                "lease_left_ms": p.lease_left_ms,
            })).collect::<Vec<_>>(),
            "groups": self.groups.iter().map(|g| json!({
                "name": g.name,
                "members": g.members,
                "live_members": g.live_members,
                "lag": g.lag,
                "partition_lag": g.partition_lag,
                "out_per_sec": round2(g.out_rate),
            })).collect::<Vec<_>>(),
        })
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Rows built from the snapshots seen so far.
#[derive(Default)]
pub struct Model {
    prev: Option<Snapshot>,
    history: HashMap<String, VecDeque<u64>>,
    /// The topics, in snapshot order (by namespace, then name).
    pub rows: Vec<TopicRow>,
    /// Namespaces observed.
    pub namespaces: Vec<String>,
}

impl Model {
    /// Take in a new snapshot.
    pub fn update(&mut self, snap: Snapshot) {
        let dt = self
            .prev
            .as_ref()
            .map(|p| snap.at.saturating_duration_since(p.at).as_secs_f64())
            .filter(|&d| d > 0.0);
        // Previous figures by topic key.
        let mut prev_parts: HashMap<String, Vec<u64>> = HashMap::new();
        let mut prev_groups: HashMap<(String, String), u64> = HashMap::new();
        if let Some(p) = &self.prev {
            for t in p.topics() {
                let key = format!("{}/{}", t.namespace, t.topic);
                if let Some(s) = t.stats() {
                    prev_parts.insert(
                        key.clone(),
                        s.partitions.iter().map(|p| p.write_offset).collect(),
                    );
                    for g in &s.groups {
                        prev_groups.insert((key.clone(), g.name.clone()), committed_sum(g));
                    }
                }
            }
        }
        let rate = |now: u64, before: Option<u64>| -> f64 {
            match (dt, before) {
                (Some(dt), Some(b)) => now.saturating_sub(b) as f64 / dt,
                _ => 0.0,
            }
        };
        let mut rows = Vec::new();
        for t in snap.topics() {
            let mut row = TopicRow {
                namespace: t.namespace.clone(),
                topic: t.topic.clone(),
                state: t.state_name(),
                ..Default::default()
            };
            if let crate::cmd::observe::TopicState::Error(e) = &t.state {
                row.error = Some(e.clone());
            }
            let key = row.key();
            if let Some(s) = t.stats() {
                let before = prev_parts.get(&key);
                row.lease_left_ms = left_ms(Some(s.lease_expiry_ns), snap.now_ns);
                for p in &s.partitions {
                    let b = before.and_then(|v| v.get(p.partition as usize).copied());
                    let in_rate = rate(p.write_offset, b);
                    match p.writer {
                        Some(w) if w.alive => row.writers_live += 1,
                        Some(_) => row.writers_dead += 1,
                        None => row.writers_none += 1,
                    }
                    row.messages = row.messages.saturating_add(p.write_offset);
                    row.in_rate += in_rate;
                    row.parts.push(PartRow {
                        partition: p.partition,
                        write_offset: p.write_offset,
                        in_rate,
                        depth: p.depth,
                        writer_pid: p.writer.and_then(|w| w.pid),
                        writer_alive: p.writer.map(|w| w.alive),
                        writer_epoch: p.writer_epoch,
                        lease_left_ms: left_ms(Some(p.lease_expiry_ns), snap.now_ns),
                    });
                }
                for g in &s.groups {
                    let committed = committed_sum(g);
                    let out_rate = rate(
                        committed,
                        prev_groups.get(&(key.clone(), g.name.clone())).copied(),
                    );
                    let lag: u64 = g.partitions.iter().map(|p| p.lag).sum();
                    row.out_rate += out_rate;
                    row.max_lag = row.max_lag.max(lag);
                    row.groups.push(GroupRow {
                        name: g.name.clone(),
                        members: g.members,
                        live_members: g.live_members,
                        lag,
                        partition_lag: g.partitions.iter().map(|p| p.lag).collect(),
                        committed,
                        out_rate,
                    });
                }
            }
            if dt.is_some() {
                let h = self.history.entry(key.clone()).or_default();
                h.push_back(row.in_rate.round() as u64);
                while h.len() > HISTORY {
                    h.pop_front();
                }
            }
            row.history = self
                .history
                .get(&key)
                .map(|h| h.iter().copied().collect())
                .unwrap_or_default();
            rows.push(row);
        }
        let keys: Vec<String> = rows.iter().map(TopicRow::key).collect();
        self.history.retain(|k, _| keys.contains(k));
        self.namespaces = snap
            .namespaces
            .iter()
            .map(|n| n.namespace.clone())
            .collect();
        self.rows = rows;
        self.prev = Some(snap);
    }
}

fn committed_sum(g: &shmq::GroupStats) -> u64 {
    g.partitions
        .iter()
        .map(|p| p.committed.unwrap_or(0))
        .fold(0u64, u64::saturating_add)
}
