//! Consumers: read partitions by offset, like a log.

use std::time::Duration;

use crate::deadline::Deadline;
use crate::error::{Error, Result};
use crate::group_protocol as proto;
use crate::group_table::Table;
use crate::headers::Headers;
use crate::offset::{NoGroupStore, OffsetStore, ShmOffsetStore};
use crate::os;
use crate::ring::{self, ReadOutcome, RecordBuf};
use crate::sync::Ordering;
use crate::topic::Topic;
use crate::wait::{Pacer, WaitCounters, WaitStrategy, Waiter};

/// Where to position a consumer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeekPolicy {
    /// The oldest record still in the ring.
    Earliest,
    /// The next record to be published (skip what is there).
    Latest,
    /// The group's committed offset, or `Earliest` if it never committed.
    Committed,
    /// An explicit offset (clamped to what is retained when read: a too-old
    /// offset reports the records it lost as lag).
    Offset(u64),
}

/// One record read from a partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Partition index.
    pub partition: u32,
    /// Offset in the partition.
    pub offset: u64,
    /// Unix-epoch nanoseconds when the producer sent it.
    pub timestamp_ns: u64,
    /// Key, if sent with one.
    pub key: Option<Vec<u8>>,
    /// Value.
    pub value: Vec<u8>,
    /// Headers (empty if sent without; see [`Record::headers`]).
    pub headers: Headers,
}

impl Record {
    /// The record's headers (empty if it was sent without).
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// The key, if sent with one.
    pub fn key(&self) -> Option<&[u8]> {
        self.key.as_deref()
    }

    /// The value.
    pub fn value(&self) -> &[u8] {
        &self.value
    }

    /// An owned record from what a read left in `buf`.
    pub(crate) fn from_buf(partition: u32, offset: u64, buf: &RecordBuf) -> Record {
        Record {
            partition,
            offset,
            timestamp_ns: buf.timestamp_ns,
            key: buf.key().map(<[u8]>::to_vec),
            value: buf.value().to_vec(),
            headers: buf.headers().to_headers(),
        }
    }
}

/// A reader fell a whole ring behind on a partition and lost records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lagged {
    /// Partition index.
    pub partition: u32,
    /// Exactly how many offsets were overwritten before this reader got to them.
    pub missed: u64,
    /// The offset it continued at.
    pub resumed_at: u64,
}

/// What one poll returned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Polled {
    /// Records, in offset order within each partition.
    pub records: Vec<Record>,
    /// Loss events (overwrite topics only).
    pub lagged: Vec<Lagged>,
    /// Records skipped because their slot was malformed (a buggy peer).
    pub corrupt: u64,
    /// Records a filter passed over ([`Consumer::poll_filtered`]): read in
    /// place, not copied, and consumed (a commit covers them).
    pub filtered: u64,
}

impl Polled {
    /// Whether nothing at all happened.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty() && self.lagged.is_empty() && self.corrupt == 0
    }
}

impl IntoIterator for Polled {
    type Item = Record;
    type IntoIter = std::vec::IntoIter<Record>;
    fn into_iter(self) -> Self::IntoIter {
        self.records.into_iter()
    }
}

/// Where a record read by [`Consumer::poll_into`] came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivered {
    /// Partition index.
    pub partition: u32,
    /// Offset in the partition.
    pub offset: u64,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Cursor {
    pub(crate) partition: u32,
    pub(crate) next: u64,
    /// The partition's write cursor as last read and validated (offsets
    /// below it are published), cached so the shared cursor line is read
    /// only when this reader has caught up with it (and then a caught-up
    /// reader spins on the cursor line, not on the slot the writer is about
    /// to claim); plus the damage bookkeeping of `ring::CursorCache`.
    pub(crate) cache: ring::CursorCache,
}

impl Cursor {
    /// A reader positioned at `next` that has not read the write cursor yet.
    pub(crate) fn at(partition: u32, next: u64) -> Cursor {
        Cursor {
            partition,
            next,
            cache: ring::CursorCache::default(),
        }
    }

    /// Whether offset `next` can have been published ("anything new?"); see
    /// `ring::CursorCache::may_read`. A hint: the slot's sequence word decides.
    #[inline]
    pub(crate) fn may_read<S: ring::SlotMemory + ?Sized>(
        &mut self,
        hdr: &crate::layout::PartitionHeader,
        mem: &S,
    ) -> bool {
        if self.cache.may_read(hdr, mem, self.next) {
            return true;
        }
        // The writer proven more than a ring below us (a takeover restarted
        // the ring): go back to it rather than wait (counted as damage).
        if let Some(to) = self.cache.take_rewind() {
            self.next = to;
        }
        false
    }

    /// After `NotYet` at `next`: whether `next` is stuck below the believed
    /// cursor long enough to be skipped as damaged (`ring::Stuck`).
    #[inline]
    pub(crate) fn skip_stuck(&mut self) -> bool {
        self.cache.skip_stuck(self.next, os::coarse_now_ns())
    }

    /// Take the damage counted by `may_read` (wild cursors seen).
    #[inline]
    pub(crate) fn take_damage(&mut self) -> u64 {
        self.cache.take_damage()
    }
}

/// Reads assigned partitions of a topic on behalf of a consumer group.
///
/// Positions are private to this consumer until [`Consumer::commit`] stores
/// them in its [`OffsetStore`] (by default the topic's shared-memory group
/// table, so another process of the group resumes from there).
///
/// # Examples
/// ```no_run
/// # let mgr = shmq::TopicManager::new()?;
/// let topic = mgr.open_or_create("events", shmq::TopicConfig::default())?;
/// let mut consumer = shmq::Consumer::new(&topic, "billing")?; // all partitions, from committed
/// for record in consumer.poll(100)? {
///     println!("{}@{}: {:?}", record.partition, record.offset, record.value);
/// }
/// consumer.commit()?;
/// # Ok::<(), shmq::Error>(())
/// ```
pub struct Consumer {
    pub(crate) topic: Topic,
    pub(crate) group: String,
    pub(crate) store: Box<dyn OffsetStore>,
    pub(crate) cursors: Vec<Cursor>,
    pub(crate) rr: usize,
    pub(crate) buf: RecordBuf,
    pub(crate) strategy: WaitStrategy,
    pub(crate) missed: u64,
    pub(crate) corrupt: u64,
    pub(crate) group_index: Option<u32>,
    /// The group entry's READY word when it was registered.
    pub(crate) group_word: u64,
    /// Register the group again if it was freed while this consumer was
    /// idle (`false` for a [`crate::GroupConsumer`]'s consumer: its
    /// membership decides, and gets [`Error::GroupDeleted`]).
    pub(crate) reregister: bool,
    pub(crate) last_touch_ns: u64,
    /// What a poll does when the topic grows.
    pub(crate) growth: Growth,
    /// The partition count the assignment reflects.
    pub(crate) seen: u32,
    /// The adaptive wait's memory (gap between records, spin credit).
    pub(crate) pacer: Pacer,
}

/// How a [`Consumer`] reacts to partitions added to its topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Growth {
    /// Explicit assignment: ignore them.
    Off,
    /// Assigned every partition: add each new one, from offset 0 (or the
    /// group's committed offset), at the next poll.
    Follow,
    /// Driven by a group membership: a blocking poll returns early so the
    /// group can rebalance.
    Notify,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("topic", &self.topic.name())
            .field("group", &self.group)
            .field("assigned", &self.assignment())
            .finish()
    }
}

impl Consumer {
    /// A consumer of `group` assigned every partition, positioned at the
    /// group's committed offsets (or the earliest retained records), with
    /// offsets kept in shared memory.
    ///
    /// # Errors
    /// [`Error::InvalidName`] for a bad group name, [`Error::GroupTableFull`].
    pub fn new(topic: &Topic, group: &str) -> Result<Consumer> {
        // Register the group so that backpressure and `info` see it at once.
        let found = Table::of(&topic.inner).find_or_create(group)?;
        let mut c = Self::with_store(topic, group, Box::new(ShmOffsetStore))?;
        c.group_index = Some(found.index);
        c.group_word = found.word;
        c.publish_starts();
        Ok(c)
    }

    /// A reader without a consumer group: it takes no entry in the topic's
    /// group table, holds nothing back (a backpressure writer never waits
    /// for it) and has nothing to commit ([`Consumer::commit`] returns
    /// [`Error::NoGroup`]). Assigned every partition, positioned at the
    /// earliest retained records; use [`Consumer::seek`] for others (e.g.
    /// [`SeekPolicy::Latest`] to tail the topic).
    ///
    /// # Errors
    /// [`Error::LeaseExpired`].
    ///
    /// # Examples
    /// ```no_run
    /// # let mgr = shmq::TopicManager::new()?;
    /// let topic = mgr.open("events")?;
    /// let mut tail = shmq::Consumer::reader(&topic)?;
    /// tail.seek(shmq::SeekPolicy::Latest)?;
    /// # Ok::<(), shmq::Error>(())
    /// ```
    pub fn reader(topic: &Topic) -> Result<Consumer> {
        Self::build(topic, String::new(), Box::new(NoGroupStore))
    }

    /// Whether this is a reader without a group ([`Consumer::reader`]).
    pub fn is_reader(&self) -> bool {
        self.group.is_empty()
    }

    /// Publish every cursor's position as where this group's readers start
    /// (its backpressure floor until it commits).
    fn publish_starts(&self) {
        let Some(g) = self.group_index else { return };
        let view = self.topic.inner.group(g);
        for c in &self.cursors {
            if let Some(gp) = view.partitions.get(c.partition as usize) {
                proto::publish_start(gp, c.next);
            }
        }
    }

    /// Like [`Consumer::new`] with a chosen offset store. Such a consumer is
    /// *not* registered in the topic's shared group table: its commits are
    /// invisible to other processes, so a backpressure writer does not wait
    /// for it and `shmq info` does not list it. (With [`ShmOffsetStore`] it
    /// still reads and writes the group's shared committed offsets; use
    /// [`Consumer::new`] to also register as a live group.)
    ///
    /// # Errors
    /// As [`Consumer::new`].
    pub fn with_store(topic: &Topic, group: &str, store: Box<dyn OffsetStore>) -> Result<Consumer> {
        crate::name::validate_group(group)?;
        Self::build(topic, group.to_string(), store)
    }

    fn build(topic: &Topic, group: String, store: Box<dyn OffsetStore>) -> Result<Consumer> {
        if topic.inner.reclaimed() {
            return Err(topic.inner.expired());
        }
        let group_index = None;
        let mut c = Consumer {
            topic: topic.clone(),
            group,
            store,
            cursors: Vec::new(),
            rr: 0,
            buf: RecordBuf::default(),
            strategy: WaitStrategy::default(),
            missed: 0,
            corrupt: 0,
            group_index,
            group_word: 0,
            reregister: true,
            last_touch_ns: 0,
            growth: Growth::Off,
            seen: 0,
            pacer: Pacer::default(),
        };
        let n = topic.inner.refresh()?;
        let all: Vec<u32> = (0..n).collect();
        c.assign(&all)?;
        c.growth = Growth::Follow;
        c.seen = n;
        Ok(c)
    }

    /// Set how blocking receives wait (default [`WaitStrategy::Backoff`],
    /// the adaptive backoff).
    pub fn with_wait_strategy(mut self, strategy: WaitStrategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// `(seq_hits, cursor_loads)` summed over the assigned partitions: how
    /// often "anything new?" was answered by the sequence word of the slot
    /// a caught-up reader watches, and how often the shared write cursor was
    /// loaded for it (`ring::CursorCache::loads`). For tests and benches.
    #[doc(hidden)]
    pub fn read_loads(&self) -> (u64, u64) {
        self.cursors.iter().fold((0, 0), |(a, b), c| {
            let (x, y) = c.cache.loads();
            (a.saturating_add(x), b.saturating_add(y))
        })
    }

    /// What this consumer's blocking receives did while waiting (spins,
    /// yields, parks of the adaptive backoff). For tests and benches.
    #[doc(hidden)]
    pub fn wait_counters(&self) -> WaitCounters {
        self.pacer.counters
    }

    /// The group name.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The topic.
    pub fn topic(&self) -> &Topic {
        &self.topic
    }

    /// Replace the assignment with `partitions`, each positioned at the
    /// group's committed offset (or the earliest retained record).
    ///
    /// A consumer made by [`Consumer::new`] reads every partition, including
    /// those added to the topic later (each from offset 0, or the group's
    /// committed offset, picked up at the next poll); after `assign` it
    /// reads exactly `partitions`.
    ///
    /// # Errors
    /// [`Error::NoSuchPartition`].
    pub fn assign(&mut self, partitions: &[u32]) -> Result<()> {
        self.growth = Growth::Off;
        let mut cursors = Vec::with_capacity(partitions.len());
        for &p in partitions {
            self.topic.inner.partition(p)?;
            if cursors.iter().any(|c: &Cursor| c.partition == p) {
                continue;
            }
            let next = self.resolve(p, SeekPolicy::Committed)?;
            cursors.push(Cursor::at(p, next));
        }
        self.cursors = cursors;
        self.rr = 0;
        self.publish_starts();
        Ok(())
    }

    /// The assigned partitions.
    pub fn assignment(&self) -> Vec<u32> {
        self.cursors.iter().map(|c| c.partition).collect()
    }

    fn resolve(&self, p: u32, policy: SeekPolicy) -> Result<u64> {
        let part = self.topic.inner.partition(p)?;
        let slots = part.slots();
        Ok(match policy {
            SeekPolicy::Earliest => ring::checked_earliest(part.header(), &slots),
            SeekPolicy::Latest => ring::checked_latest(part.header(), &slots),
            SeekPolicy::Offset(o) => o,
            SeekPolicy::Committed => match self.store.load(&self.topic, &self.group, p)? {
                // A committed offset beyond the write end cannot come from a
                // reader (it commits what it read): a scribbled group table.
                // Resume at the end rather than wait there forever.
                Some(o) => o.min(ring::checked_latest(part.header(), &slots)),
                None => ring::checked_earliest(part.header(), &slots),
            },
        })
    }

    /// Position every assigned partition.
    ///
    /// # Errors
    /// Offset-store errors.
    pub fn seek(&mut self, policy: SeekPolicy) -> Result<()> {
        for i in 0..self.cursors.len() {
            self.cursors[i].next = self.resolve(self.cursors[i].partition, policy)?;
        }
        self.publish_starts();
        Ok(())
    }

    /// Position one assigned partition.
    ///
    /// # Errors
    /// [`Error::NoSuchPartition`] if it is not assigned; offset-store errors.
    pub fn seek_partition(&mut self, partition: u32, policy: SeekPolicy) -> Result<()> {
        let next = self.resolve(partition, policy)?;
        let c = self.cursor_mut(partition)?;
        c.next = next;
        if let Some(g) = self.group_index {
            if let Some(gp) = self.topic.inner.group(g).partitions.get(partition as usize) {
                proto::publish_start(gp, next);
            }
        }
        Ok(())
    }

    fn cursor_mut(&mut self, partition: u32) -> Result<&mut Cursor> {
        let partitions = self.topic.partitions();
        let topic = self.topic.name().to_string();
        self.cursors
            .iter_mut()
            .find(|c| c.partition == partition)
            .ok_or(Error::NoSuchPartition {
                topic,
                partition,
                partitions,
            })
    }

    /// The next offset this consumer will read on `partition`, if assigned.
    pub fn position(&self, partition: u32) -> Option<u64> {
        self.cursors
            .iter()
            .find(|c| c.partition == partition)
            .map(|c| c.next)
    }

    /// Records published but not yet read on `partition` (0 if not assigned).
    pub fn lag(&self, partition: u32) -> u64 {
        match (
            self.position(partition),
            self.topic.inner.partition(partition),
        ) {
            (Some(next), Ok(part)) => {
                ring::checked_latest(part.header(), &part.slots()).saturating_sub(next)
            }
            _ => 0,
        }
    }

    /// Total offsets this consumer lost to lapping since it was created.
    pub fn missed(&self) -> u64 {
        self.missed
    }

    /// Total malformed records skipped since it was created.
    pub fn corrupt(&self) -> u64 {
        self.corrupt
    }

    /// Whether the topic grew since the assignment was made (one atomic
    /// load).
    #[inline]
    pub(crate) fn grew(&self) -> bool {
        self.topic.inner.published() > self.seen
    }

    /// Add a cursor for every partition published since the last look.
    fn follow_growth(&mut self) -> Result<()> {
        let have = self.topic.inner.refresh()?;
        for p in self.seen..have {
            if self.cursors.iter().any(|c| c.partition == p) {
                continue;
            }
            // A new partition is read from its start: offset 0, unless the
            // group already committed some of it.
            let next = self.store.load(&self.topic, &self.group, p)?.unwrap_or(0);
            self.cursors.push(Cursor::at(p, next));
        }
        self.seen = have;
        Ok(())
    }

    pub(crate) fn check_alive(&mut self) -> Result<()> {
        if self.topic.inner.reclaimed() {
            return Err(self.topic.inner.expired());
        }
        if self.growth == Growth::Follow && self.grew() {
            self.follow_growth()?;
        }
        // Tell backpressure writers this group is alive, a few times per
        // dead-group timeout (never per message). The coarse clock (kernel
        // tick, a few ms) is plenty for that and costs ~4 ns instead of
        // ~34 ns per poll (see `os::coarse_now_ns`).
        let now = os::coarse_now_ns();
        let cfg = &self.topic.inner.config;
        let mut span = cfg.dead_group_timeout;
        if !cfg.group_retention.is_zero() {
            span = span.min(cfg.group_retention);
        }
        let every = (span.as_nanos().min(u128::from(u64::MAX)) as u64 / 4).max(1_000_000);
        if now.saturating_sub(self.last_touch_ns) >= every {
            self.last_touch_ns = now;
            if let Some(g) = self.group_index {
                let h = self.topic.inner.group(g).header;
                h.last_active_ns.fetch_max(now, Ordering::Relaxed);
                // SYNC POINT "free vs join": a group freed while this
                // consumer was idle (past the group retention) is
                // registered again.
                if !proto::still_ready(&h.state, self.group_word) {
                    if !self.reregister {
                        return Err(Error::GroupDeleted {
                            topic: self.topic.name().to_string(),
                            group: self.group.clone(),
                        });
                    }
                    let found = Table::of(&self.topic.inner).find_or_create(&self.group)?;
                    self.group_index = Some(found.index);
                    self.group_word = found.word;
                    self.publish_starts();
                }
            }
        }
        Ok(())
    }

    /// Read the next record of any assigned partition into `buf` without
    /// allocating (once `buf` has grown). Lag and corrupt records are counted
    /// in [`Consumer::missed`] and [`Consumer::corrupt`].
    ///
    /// # Errors
    /// [`Error::LeaseExpired`].
    pub fn poll_into(&mut self, buf: &mut RecordBuf) -> Result<Option<Delivered>> {
        self.check_alive()?;
        let n = self.cursors.len();
        for k in 0..n {
            let i = (self.rr + k) % n;
            let c = &mut self.cursors[i];
            let part = self.topic.inner.part(c.partition);
            let slots = part.slots();
            while c.may_read(part.header(), &slots) {
                match ring::read(part.header(), &slots, c.next, buf) {
                    ReadOutcome::Record => {
                        let d = Delivered {
                            partition: c.partition,
                            offset: c.next,
                        };
                        c.next = c.next.saturating_add(1);
                        self.rr = (i + 1) % n;
                        self.corrupt = self.corrupt.saturating_add(c.take_damage());
                        return Ok(Some(d));
                    }
                    ReadOutcome::NotYet if c.skip_stuck() => {
                        self.corrupt = self.corrupt.saturating_add(1);
                        c.next = c.next.saturating_add(1);
                    }
                    ReadOutcome::NotYet => break,
                    ReadOutcome::Lapped { missed, resume } => {
                        let (missed, resume) =
                            c.cache
                                .after_lap(part.header(), &slots, c.next, missed, resume);
                        self.missed = self.missed.saturating_add(missed);
                        c.next = resume;
                    }
                    ReadOutcome::Corrupt => {
                        self.corrupt = self.corrupt.saturating_add(1);
                        c.next = c.next.saturating_add(1);
                    }
                }
            }
            self.corrupt = self.corrupt.saturating_add(c.take_damage());
        }
        Ok(None)
    }

    /// Read up to `max` records from the assigned partitions, without waiting.
    ///
    /// # Errors
    /// [`Error::LeaseExpired`].
    pub fn poll(&mut self, max: usize) -> Result<Polled> {
        self.check_alive()?;
        let mut out = Polled::default();
        let n = self.cursors.len();
        if n == 0 {
            return Ok(out);
        }
        let start = self.rr;
        for k in 0..n {
            if out.records.len() >= max {
                break;
            }
            let i = (start + k) % n;
            let c = &mut self.cursors[i];
            let part = &self.topic.inner.part(c.partition);
            let slots = part.slots();
            while out.records.len() < max && c.may_read(part.header(), &slots) {
                match ring::read(part.header(), &slots, c.next, &mut self.buf) {
                    ReadOutcome::Record => {
                        out.records
                            .push(Record::from_buf(c.partition, c.next, &self.buf));
                        c.next = c.next.saturating_add(1);
                    }
                    ReadOutcome::NotYet if c.skip_stuck() => {
                        self.corrupt = self.corrupt.saturating_add(1);
                        out.corrupt = out.corrupt.saturating_add(1);
                        c.next = c.next.saturating_add(1);
                    }
                    ReadOutcome::NotYet => break,
                    ReadOutcome::Lapped { missed, resume } => {
                        let (missed, resume) =
                            c.cache
                                .after_lap(part.header(), &slots, c.next, missed, resume);
                        self.missed = self.missed.saturating_add(missed);
                        out.lagged.push(Lagged {
                            partition: c.partition,
                            missed,
                            resumed_at: resume,
                        });
                        c.next = resume;
                    }
                    ReadOutcome::Corrupt => {
                        self.corrupt = self.corrupt.saturating_add(1);
                        out.corrupt = out.corrupt.saturating_add(1);
                        c.next = c.next.saturating_add(1);
                    }
                }
            }
            let damage = c.take_damage();
            self.corrupt = self.corrupt.saturating_add(damage);
            out.corrupt = out.corrupt.saturating_add(damage);
        }
        self.rr = (start + 1) % n;
        if out.corrupt > 0 {
            tracing::warn!(topic = %self.topic.inner.name, corrupt = out.corrupt, "shmq: skipped malformed records");
        }
        Ok(out)
    }

    /// Like [`Consumer::poll`], but wait up to `timeout` for at least one
    /// record (or loss event). Returns an empty [`Polled`] on timeout. A
    /// timeout too large to represent as an instant (e.g. `Duration::MAX`)
    /// waits until something arrives.
    ///
    /// # Errors
    /// [`Error::LeaseExpired`].
    pub fn poll_timeout(&mut self, max: usize, timeout: Duration) -> Result<Polled> {
        let deadline = Deadline::after(timeout);
        let mut waiter = Waiter::new(self.strategy, self.pacer);
        loop {
            let got = self.poll(max)?;
            if !got.is_empty() {
                self.pacer = waiter.delivered();
                return Ok(got);
            }
            if deadline.passed() || (self.growth == Growth::Notify && self.grew()) {
                self.pacer = waiter.gave_up();
                return Ok(got);
            }
            self.wait_once(&mut waiter, deadline);
        }
    }

    /// Wait for the next record, however long it takes.
    ///
    /// # Errors
    /// [`Error::LeaseExpired`].
    pub fn recv(&mut self) -> Result<Record> {
        self.recv_until(Deadline::never())
    }

    /// Wait up to `timeout` for the next record (`Duration::MAX`: forever).
    ///
    /// # Errors
    /// [`Error::Timeout`], [`Error::LeaseExpired`].
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Record> {
        self.recv_until(Deadline::after(timeout))
    }

    fn recv_until(&mut self, deadline: Deadline) -> Result<Record> {
        let mut waiter = Waiter::new(self.strategy, self.pacer);
        loop {
            let mut got = self.poll(1)?;
            if let Some(r) = got.records.pop() {
                self.pacer = waiter.delivered();
                return Ok(r);
            }
            if deadline.passed() {
                self.pacer = waiter.gave_up();
                return Err(Error::Timeout);
            }
            self.wait_once(&mut waiter, deadline);
        }
    }

    /// Like [`Consumer::poll_into`], waiting up to `timeout` for a record
    /// (`None`, or a timeout too large to represent: forever).
    ///
    /// # Errors
    /// [`Error::Timeout`], [`Error::LeaseExpired`].
    pub fn recv_into(
        &mut self,
        buf: &mut RecordBuf,
        timeout: Option<Duration>,
    ) -> Result<Delivered> {
        let deadline = Deadline::from_timeout(timeout);
        let mut waiter = Waiter::new(self.strategy, self.pacer);
        loop {
            if let Some(d) = self.poll_into(buf)? {
                self.pacer = waiter.delivered();
                return Ok(d);
            }
            if deadline.passed() {
                self.pacer = waiter.gave_up();
                return Err(Error::Timeout);
            }
            self.wait_once(&mut waiter, deadline);
        }
    }

    pub(crate) fn wait_once(&self, waiter: &mut Waiter, deadline: Deadline) {
        let inner = &self.topic.inner;
        let parts = self
            .cursors
            .iter()
            .map(|c| (inner.part(c.partition).header(), c.next));
        // Park at most 100 ms at a time so a reclaimed topic is noticed.
        let end = deadline.capped(Duration::from_millis(100));
        waiter.watch_growth((self.growth != Growth::Off).then_some(self.seen));
        waiter.wait(inner.meta.meta_header(), parts, Some(end));
    }

    /// Commit the current position of every assigned partition.
    ///
    /// # Errors
    /// [`Error::LeaseExpired`] if the topic was deleted or reclaimed (the
    /// commit would be lost with it), offset-store errors.
    pub fn commit(&mut self) -> Result<()> {
        if self.topic.inner.reclaimed() {
            return Err(self.topic.inner.expired());
        }
        for c in &self.cursors {
            self.store
                .commit(&self.topic, &self.group, c.partition, c.next)?;
        }
        Ok(())
    }

    /// Commit `next_offset` (the next offset to process) for one partition.
    ///
    /// # Errors
    /// Offset-store errors, [`Error::NoSuchPartition`],
    /// [`Error::LeaseExpired`] as for [`Consumer::commit`].
    pub fn commit_offset(&mut self, partition: u32, next_offset: u64) -> Result<()> {
        self.topic.inner.partition(partition)?;
        if self.topic.inner.reclaimed() {
            return Err(self.topic.inner.expired());
        }
        self.store
            .commit(&self.topic, &self.group, partition, next_offset)
    }
}
