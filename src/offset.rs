//! Where consumer groups keep their committed offsets.
//!
//! A committed offset is the *next* offset the group will process on a
//! partition. [`ShmOffsetStore`] (the default) keeps it in the topic's meta
//! region, so another process of the same group resumes where the first
//! committed; [`MemOffsetStore`] keeps it in this process only.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::error::Result;
use crate::group_protocol as proto;
use crate::group_table::{self, Table};
use crate::sync::Ordering;
use crate::topic::Topic;

/// Storage for committed offsets, keyed by (topic, group, partition).
pub trait OffsetStore: Send {
    /// The committed (next-to-process) offset, or `None` if never committed.
    ///
    /// # Errors
    /// Store-specific (e.g. a full group table).
    fn load(&self, topic: &Topic, group: &str, partition: u32) -> Result<Option<u64>>;
    /// Record `next_offset` as the group's committed offset.
    ///
    /// # Errors
    /// Store-specific (e.g. a full group table, or
    /// [`crate::Error::LeaseExpired`] for a topic that was reclaimed).
    fn commit(&self, topic: &Topic, group: &str, partition: u32, next_offset: u64) -> Result<()>;
}

/// Committed offsets in this process's memory (lost when it exits). Clones
/// share the same map.
#[derive(Clone, Debug, Default)]
pub struct MemOffsetStore {
    map: Arc<Mutex<HashMap<OffsetKey, u64>>>,
}

/// (topic, group, partition)
type OffsetKey = (String, String, u32);

impl MemOffsetStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl OffsetStore for MemOffsetStore {
    fn load(&self, topic: &Topic, group: &str, partition: u32) -> Result<Option<u64>> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        Ok(map
            .get(&(topic.name().to_string(), group.to_string(), partition))
            .copied())
    }
    fn commit(&self, topic: &Topic, group: &str, partition: u32, next_offset: u64) -> Result<()> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(
            (topic.name().to_string(), group.to_string(), partition),
            next_offset,
        );
        Ok(())
    }
}

/// Committed offsets in the topic's meta region, shared by every process
/// (the group's entry in the group table is created on first use).
#[derive(Clone, Copy, Debug, Default)]
pub struct ShmOffsetStore;

impl OffsetStore for ShmOffsetStore {
    fn load(&self, topic: &Topic, group: &str, partition: u32) -> Result<Option<u64>> {
        let inner = &topic.inner;
        inner.partition(partition)?;
        let Some(g) = group_table::find(inner, group) else {
            return Ok(None);
        };
        let raw = inner.group(g).partitions[partition as usize]
            .committed
            .load(Ordering::Acquire);
        Ok(raw.checked_sub(1))
    }
    fn commit(&self, topic: &Topic, group: &str, partition: u32, next_offset: u64) -> Result<()> {
        let inner = &topic.inner;
        inner.partition(partition)?;
        // A reclaimed meta region is on its way out: a commit stored there
        // would be lost, so say so.
        if inner.reclaimed() {
            return Err(inner.expired());
        }
        let table = Table::of(inner);
        for _ in 0..4 {
            let found = table.find_or_create(group)?;
            let view = inner.group(found.index);
            // SYNC POINT "commit": Release pairs with the Acquire loads of
            // `load` and of the backpressure check.
            view.partitions[partition as usize]
                .committed
                .store(next_offset.saturating_add(1), Ordering::Release);
            view.header
                .last_active_ns
                .fetch_max(crate::os::now_ns(), Ordering::Relaxed);
            // SYNC POINT "free vs join": a group freed at this moment
            // (retention) did not keep the commit; store it in the new one.
            if proto::still_ready(&view.header.state, found.word) {
                return inner.after_commit();
            }
        }
        inner.after_commit()
    }
}

/// The store of a reader without a group ([`crate::Consumer::reader`]):
/// nothing committed, and committing is an error.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct NoGroupStore;

impl OffsetStore for NoGroupStore {
    fn load(&self, _: &Topic, _: &str, _: u32) -> Result<Option<u64>> {
        Ok(None)
    }
    fn commit(&self, _: &Topic, _: &str, _: u32, _: u64) -> Result<()> {
        Err(crate::error::Error::NoGroup)
    }
}
