//! Competing consumers: several processes of one group drain *one* partition
//! together, each record going to exactly one of them (work sharing, like a
//! job queue), instead of one member owning the whole partition.
//!
//! The members share the group's cursor of the partition
//! (`GroupPartition::next`): a poll takes the next batch of offsets by CAS,
//! bounded by the writer's cursor. The group's committed offset is the
//! low-water mark below every batch still in progress, so lag and
//! backpressure see exactly what is unprocessed. Each member announces its
//! batch before taking it; if a member dies (or stalls past the stale
//! threshold) with a batch in progress, a peer adopts that batch and delivers
//! it again, so nothing is lost (a crash may cause duplicates: at-least-once;
//! while nobody crashes each record is delivered exactly once). The protocol
//! is in `crate::group_protocol`.
//!
//! A partition is either claimed whole by [`crate::ConsumerGroup`] members
//! or shared by competing consumers, per group: joining as a competing
//! consumer marks it shared, and fails if a live member claims it whole.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::consumer::{Lagged, Polled, Record};
use crate::deadline::Deadline;
use crate::error::{Error, Result};
use crate::group::{token_judge, GroupOptions, Membership};
use crate::group_protocol::{self as proto, Adopted};
use crate::os;
use crate::ring::{self, ReadOutcome, RecordBuf};
use crate::sync::Ordering;
use crate::topic::Topic;
use crate::wait::{Pacer, WaitStrategy, Waiter};

/// Largest batch an adopted range is trusted to span (a scribbled `work_hi`
/// cannot make a peer replay the whole ring forever).
const MAX_ADOPT: u64 = 1 << 20;

/// One competing consumer of one partition.
///
/// Each [`CompetingConsumer::poll`] first marks the batch returned by the
/// previous poll as done (as does [`CompetingConsumer::commit`]), then hands
/// out: records this consumer was told to redeliver (see
/// [`crate::DlqRouter`]), a batch adopted from a dead peer, and the next
/// batch from the shared cursor. Dropping it without `commit` hands its last
/// batch to its peers for redelivery.
///
/// # Examples
/// ```no_run
/// # let mgr = shmq::TopicManager::new()?;
/// use shmq::{CompetingConsumer, GroupOptions};
/// use std::time::Duration;
/// let topic = mgr.open_or_create("jobs", shmq::TopicConfig::default().partitions(1))?;
/// // Start this in as many processes as you like: each job is done once.
/// let mut worker = CompetingConsumer::join(&topic, "workers", 0, GroupOptions::default())?;
/// let batch = worker.poll_timeout(16, Duration::from_millis(100))?;
/// for job in &batch.records {
///     println!("job at offset {}", job.offset);
/// }
/// worker.commit()?;
/// # Ok::<(), shmq::Error>(())
/// ```
pub struct CompetingConsumer {
    m: Membership,
    partition: u32,
    /// A batch returned by the last poll and not yet marked done.
    in_progress: bool,
    /// Offsets to deliver again (nacked), ascending.
    retry: BTreeSet<u64>,
    /// Retried offsets delivered by the last poll (still in progress).
    retried: Option<u64>,
    /// A dead peer's batch being redelivered: the adoption and the next
    /// offset of it to deliver.
    adopted: Option<(Adopted, u64)>,
    last_scan_ns: u64,
    buf: RecordBuf,
    strategy: WaitStrategy,
    /// The adaptive wait's memory (gap between records, spin credit).
    pacer: Pacer,
    missed: u64,
    corrupt: u64,
    adopted_records: u64,
    /// An offset the shared cursor is known to have reached (where this
    /// consumer positioned it at join, the end of its last batch): a `next`
    /// below it was scribbled (see `group_protocol::claim_checked`).
    known: u64,
}

impl std::fmt::Debug for CompetingConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompetingConsumer")
            .field("topic", &self.m.topic.name())
            .field("group", &self.m.name)
            .field("partition", &self.partition)
            .field("member", &self.m.index)
            .finish()
    }
}

impl CompetingConsumer {
    /// Join `group` as a competing consumer of `partition`. The first member
    /// positions the shared cursor at the group's committed offset (or the
    /// earliest retained record).
    ///
    /// # Errors
    /// [`Error::NoSuchPartition`], [`Error::InvalidConfig`] if a live member
    /// of the group claims the partition whole (or bad options),
    /// [`Error::InvalidName`], [`Error::GroupTableFull`],
    /// [`Error::MemberTableFull`], [`Error::LeaseExpired`].
    pub fn join(
        topic: &Topic,
        group: &str,
        partition: u32,
        opts: GroupOptions,
    ) -> Result<CompetingConsumer> {
        let part = topic.inner.partition(partition)?;
        let mut m = Membership::join(topic, group, &opts, partition + 1)?;
        let inner = &topic.inner;
        let view = m.view();
        let gp = &view.partitions[partition as usize];
        let shared = proto::share(
            gp,
            view.members,
            os::now_ns(),
            m.stale_ns,
            token_judge(&inner.ns, inner.token.id()),
        );
        if let Err(index) = shared {
            m.leave();
            return Err(Error::InvalidConfig(format!(
                "partition {partition} of topic {:?} is claimed whole by live member {index} of group {group:?}; \
                 a group's partition is either claimed by one member or shared by competing consumers",
                topic.name()
            )));
        }
        let start = gp
            .committed
            .load(Ordering::Acquire)
            .checked_sub(1)
            .unwrap_or_else(|| ring::checked_earliest(part.header(), &part.slots()));
        let known = proto::position_shared(gp, start);
        Ok(CompetingConsumer {
            m,
            partition,
            in_progress: false,
            retry: BTreeSet::new(),
            retried: None,
            adopted: None,
            last_scan_ns: 0,
            buf: RecordBuf::default(),
            strategy: WaitStrategy::default(),
            pacer: Pacer::default(),
            missed: 0,
            corrupt: 0,
            adopted_records: 0,
            known,
        })
    }

    /// Set how blocking polls wait (default [`WaitStrategy::Backoff`]).
    pub fn with_wait_strategy(mut self, strategy: WaitStrategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// The partition drained.
    pub fn partition(&self) -> u32 {
        self.partition
    }

    /// The group name.
    pub fn group(&self) -> &str {
        &self.m.name
    }

    /// The topic.
    pub fn topic(&self) -> &Topic {
        &self.m.topic
    }

    /// This member's id: `generation << 32 | liveness token`.
    pub fn member_id(&self) -> u64 {
        self.m.id
    }

    /// Offsets the group lost to lapping (overwrite topics) that this
    /// consumer noticed.
    pub fn missed(&self) -> u64 {
        self.missed
    }

    /// Malformed records skipped.
    pub fn corrupt(&self) -> u64 {
        self.corrupt
    }

    /// Records this consumer delivered again on behalf of dead (or stalled)
    /// peers, from the batches they left in progress.
    pub fn adopted_records(&self) -> u64 {
        self.adopted_records
    }

    /// The group's committed offset on the partition: every offset below it
    /// was processed by some member.
    pub fn committed(&self) -> Option<u64> {
        self.m.view().partitions[self.partition as usize]
            .committed
            .load(Ordering::Acquire)
            .checked_sub(1)
    }

    /// Ask for the record at `offset` (handed out by an earlier poll, not
    /// yet committed) to be delivered again by this consumer's next poll.
    /// The group's committed offset stays below it until then. An offset
    /// the partition has not published yet cannot have been handed out and
    /// is ignored (so `u64::MAX` is harmless).
    pub fn retry(&mut self, offset: u64) {
        let part = self.m.topic.inner.part(self.partition);
        if offset < ring::latest(part.header()) {
            self.retry.insert(offset);
        }
    }

    fn pending(&self) -> Option<u64> {
        let r = self.retry.first().copied();
        match (r, self.retried) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Mark what the previous poll returned as processed and raise the
    /// group's committed offset to the new low-water mark.
    ///
    /// # Errors
    /// [`Error::LeaseExpired`].
    pub fn commit(&mut self) -> Result<()> {
        let inner = &self.m.topic.inner;
        if inner.reclaimed() {
            return Err(inner.expired());
        }
        self.retried = None;
        let view = self.m.view();
        if let Some((a, next)) = self.adopted {
            if next >= a.hi {
                proto::release_adopted(&view.members[a.index], a);
                self.adopted = None;
            }
        }
        if self.m.active {
            proto::finish_batch(&view.members[self.m.index], self.pending());
        }
        self.in_progress = false;
        let gp = &view.partitions[self.partition as usize];
        let part = inner.part(self.partition);
        // Checked: nothing at or beyond the writer's cursor was processed, so
        // a low-water mark above it (a scribbled `next` or `work_lo`) is
        // capped, and a committed offset above it (scribbled directly) is
        // put back to ours: `advance_committed` alone never lowers it, and
        // the group would stop holding a backpressure writer for good. The
        // cursor is read after `next` and `committed` were loaded, so a
        // peer's honest claim or commit is never beyond it.
        let cursor = || ring::checked_latest(part.header(), &part.slots());
        if let Some(lw) = proto::low_water(gp, view.members, self.m.role) {
            let lw = lw.min(cursor());
            // Repair first, then raise: a peer's repair with an older (lower)
            // mark that wins the CAS is raised again by our fetch_max.
            if proto::repair_committed(gp, cursor, lw) {
                self.corrupt = self.corrupt.saturating_add(1);
            }
            proto::advance_committed(gp, lw);
        }
        Ok(())
    }

    fn read_range(&mut self, lo: u64, hi: u64, max: usize, out: &mut Polled) -> u64 {
        let part = &self.m.topic.inner.part(self.partition);
        let slots = part.slots();
        let mut o = lo;
        while o < hi && out.records.len() < max {
            match ring::read(part.header(), &slots, o, &mut self.buf) {
                ReadOutcome::Record => {
                    out.records.push(self.record(o));
                    o += 1;
                }
                // Claimed offsets are below the writer's cursor; "not yet"
                // can only be a repaired slot of a dead writer: nothing there.
                ReadOutcome::NotYet => o += 1,
                ReadOutcome::Lapped { missed, resume } => {
                    let resume = resume.min(hi);
                    let lost = resume - o;
                    self.missed = self.missed.saturating_add(lost);
                    out.lagged.push(Lagged {
                        partition: self.partition,
                        missed: lost.min(missed),
                        resumed_at: resume,
                    });
                    o = resume;
                }
                ReadOutcome::Corrupt => {
                    self.corrupt = self.corrupt.saturating_add(1);
                    out.corrupt = out.corrupt.saturating_add(1);
                    o += 1;
                }
            }
        }
        o
    }

    fn record(&self, offset: u64) -> Record {
        Record::from_buf(self.partition, offset, &self.buf)
    }

    /// Mark the previous batch done, then take up to `max` records: first
    /// those to redeliver, then a dead peer's batch, then fresh offsets from
    /// the shared cursor. Never waits.
    ///
    /// # Errors
    /// [`Error::LeaseExpired`], [`Error::MemberTableFull`] on a re-join after
    /// this member had been evicted as stale.
    pub fn poll(&mut self, max: usize) -> Result<Polled> {
        self.commit()?;
        if self.m.heartbeat()? {
            tracing::warn!(topic = %self.m.topic.inner.name, partition = self.partition, "shmq: this competing consumer was evicted as stale; joining again");
            // We had stalled and were evicted: a peer adopted our batch
            // (including anything we meant to redeliver).
            self.retry.clear();
            self.retried = None;
            self.adopted = None;
        }
        let mut out = Polled::default();
        if max == 0 {
            return Ok(out);
        }
        let inner = self.m.topic.inner.clone();
        // 1. Redeliveries.
        while out.records.len() < max {
            let Some(o) = self.retry.pop_first() else {
                break;
            };
            self.retried = Some(self.retried.map_or(o, |r| r.min(o)));
            self.read_range(o, o.saturating_add(1), max, &mut out);
        }
        // 2. A dead peer's batch.
        let now = os::now_ns();
        if self.adopted.is_none() && now.saturating_sub(self.last_scan_ns) >= self.m.every_ns {
            self.last_scan_ns = now;
            self.adopt_orphan(now);
        }
        if let Some((a, next)) = self.adopted {
            let before = out.records.len();
            let end = self.read_range(next, a.hi, max, &mut out);
            self.adopted_records += (out.records.len() - before) as u64;
            self.adopted = Some((a, end));
        }
        // 3. Fresh offsets.
        if out.records.len() < max {
            let part = &inner.part(self.partition);
            let view = inner.group(self.m.g);
            let gp = &view.partitions[self.partition as usize];
            let me = &view.members[self.m.index];
            // Checked: a wild cursor must not hand out offsets the writer
            // never reached (the shared `next` would jump there for good).
            let cursor = ring::checked_latest(part.header(), &part.slots());
            // The writer proven a ring or more below what this member saw
            // (a takeover restarted the ring): forget the old high mark, or
            // every claim would be "below known" and pushed to the cursor,
            // handing out nothing for good. Counted as damage.
            if ring::writer_proven_below(&part.slots(), cursor, self.known) {
                self.known = cursor;
                self.corrupt = self.corrupt.saturating_add(1);
                out.corrupt = out.corrupt.saturating_add(1);
            }
            let earliest = cursor.saturating_sub(part.geo.slots);
            let want = (max - out.records.len()) as u64;
            let bounds = proto::Bounds {
                earliest,
                cursor,
                known: Some(self.known),
            };
            let fresh = || ring::checked_latest(part.header(), &part.slots());
            let claim = proto::claim_checked(gp, me, self.pending(), bounds, fresh, want);
            if claim.repaired {
                // A scribbled shared cursor: damage, not records missed.
                self.corrupt = self.corrupt.saturating_add(1);
                out.corrupt = out.corrupt.saturating_add(1);
            }
            if let Some(b) = claim.batch {
                self.known = self.known.max(b.hi);
                if b.skipped > 0 {
                    self.missed = self.missed.saturating_add(b.skipped);
                    out.lagged.push(Lagged {
                        partition: self.partition,
                        missed: b.skipped,
                        resumed_at: b.lo,
                    });
                }
                self.read_range(b.lo, b.hi, max, &mut out);
            }
        }
        self.in_progress = !out.is_empty();
        if out.corrupt > 0 {
            tracing::warn!(topic = %self.m.topic.inner.name, partition = self.partition, corrupt = out.corrupt, "shmq: skipped malformed records");
        }
        Ok(out)
    }

    fn adopt_orphan(&mut self, now: u64) {
        let inner = &self.m.topic.inner;
        let view = inner.group(self.m.g);
        let token = inner.token.id();
        let orphan = proto::find_orphan(
            view.members,
            self.m.role,
            now,
            self.m.stale_ns,
            token_judge(&inner.ns, token),
        );
        let Some(orphan) = orphan else { return };
        let Some(mut a) = proto::adopt(&view.members[orphan.index], orphan, token, now) else {
            return;
        };
        let part = inner.part(self.partition);
        let cursor = ring::checked_latest(part.header(), &part.slots());
        // Never trust the range a dead peer left: clamp it.
        a.hi = a.hi.min(cursor).min(a.lo.saturating_add(MAX_ADOPT));
        let lo = a.lo.min(a.hi);
        self.adopted = Some((a, lo));
    }

    /// Like [`CompetingConsumer::poll`], waiting up to `timeout` for a record
    /// (heartbeating while it waits). A timeout too large to represent as an
    /// instant (e.g. `Duration::MAX`) waits until something arrives.
    ///
    /// # Errors
    /// As [`CompetingConsumer::poll`].
    pub fn poll_timeout(&mut self, max: usize, timeout: Duration) -> Result<Polled> {
        let deadline = Deadline::after(timeout);
        let mut waiter = Waiter::new(self.strategy, self.pacer);
        loop {
            let got = self.poll(max)?;
            if !got.is_empty() {
                self.pacer = waiter.delivered();
                return Ok(got);
            }
            if deadline.passed() {
                self.pacer = waiter.gave_up();
                return Ok(got);
            }
            let inner = self.m.topic.inner.clone();
            let hdr = inner.part(self.partition).header();
            let next = inner.group(self.m.g).partitions[self.partition as usize]
                .next
                .load(Ordering::Acquire)
                .saturating_sub(1);
            let end = deadline.capped(Duration::from_nanos(self.m.every_ns.min(100_000_000)));
            waiter.wait(
                inner.meta.meta_header(),
                std::iter::once((hdr, next)),
                Some(end),
            );
        }
    }

    /// Wait for the next record, however long it takes: a batch of one,
    /// marked processed by the next poll, `recv` or commit.
    ///
    /// # Errors
    /// As [`CompetingConsumer::poll`].
    pub fn recv(&mut self) -> Result<Record> {
        loop {
            if let Some(r) = self.poll_timeout(1, Duration::MAX)?.records.pop() {
                return Ok(r);
            }
        }
    }

    /// Leave the group (also on drop). A batch not yet marked done (no
    /// [`CompetingConsumer::commit`] after the last poll) is left for the
    /// peers to deliver again.
    pub fn leave(mut self) {
        self.leave_now();
    }

    fn leave_now(&mut self) {
        if let Some((a, next)) = self.adopted.take() {
            let entry = &self.m.view().members[a.index];
            if next >= a.hi && !self.in_progress {
                proto::release_adopted(entry, a);
            } else {
                // Not (known to be) processed: a peer adopts it again.
                proto::abandon_adopted(entry, a);
            }
        }
        self.m.leave();
    }
}

impl Drop for CompetingConsumer {
    fn drop(&mut self) {
        self.leave_now();
    }
}

impl CompetingConsumer {
    /// Where a waiting receive waits: the partition, the offset whose
    /// publication ends the wait (as in `poll_timeout`), and the heartbeat
    /// interval.
    #[cfg(feature = "tokio")]
    pub(crate) fn wait_point(&self) -> (u32, u64, Duration) {
        let inner = &self.m.topic.inner;
        let next = inner.group(self.m.g).partitions[self.partition as usize]
            .next
            .load(Ordering::Acquire)
            .saturating_sub(1);
        (self.partition, next, Duration::from_nanos(self.m.every_ns))
    }
}
