//! Batch reads: [`Consumer::poll_into_batch`] drains up to `max` records
//! into one reusable [`RecordBatch`] with one liveness check per call and one
//! cursor load per run of available records (per partition).
//!
//! Per record it pays only the seqlock itself (the sequence word, the copy,
//! the re-check): no allocation once the batch has grown, no clock read, no
//! look at the topic's meta region. That is what lets one consumer keep up
//! with one producer's `send` on an `Overwrite` topic (`shmq bench
//! throughput` prints the records it lost).

use std::time::Duration;

use crate::consumer::{Consumer, Lagged};
use crate::deadline::Deadline;
use crate::error::{Error, Result};
use crate::headers::HeaderView;
use crate::ring::{self, ReadOutcome, ReadWith};
use crate::wait::Waiter;
use crate::zero_copy::RecordView;

/// How many records ahead a batch read prefetches (within a run).
const READ_AHEAD: u64 = 8;

/// Where one record of a [`RecordBatch`] lies in its buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    partition: u32,
    offset: u64,
    timestamp_ns: u64,
    key_len: Option<u32>,
    /// Bytes of headers block at `start` (validated when copied).
    headers_len: u32,
    start: usize,
    len: usize,
}

/// Records copied out by [`Consumer::poll_into_batch`]: every record's bytes
/// in one buffer, reused from poll to poll (no allocation once it has grown
/// to the largest batch).
///
/// Only whole records are in it: a record the writer began overwriting
/// during the copy (an `Overwrite` topic) is dropped and counted as lost in
/// [`RecordBatch::lagged`], never returned torn.
///
/// # Examples
/// ```no_run
/// # let mgr = shmq::TopicManager::new()?;
/// # let topic = mgr.open_or_create("events", shmq::TopicConfig::default())?;
/// let mut consumer = shmq::Consumer::new(&topic, "sum")?;
/// let mut batch = shmq::RecordBatch::default();
/// loop {
///     consumer.poll_into_batch(&mut batch, 256)?;
///     for lag in batch.lagged() {
///         eprintln!("partition {} lost {} records", lag.partition, lag.missed);
///     }
///     for r in batch.iter() {
///         println!("{}@{}: {} bytes", r.partition, r.offset, r.value.len());
///     }
///     consumer.commit()?; // everything in the batch counts as processed
/// #   break;
/// }
/// # Ok::<(), shmq::Error>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecordBatch {
    data: Vec<u8>,
    entries: Vec<Entry>,
    lagged: Vec<Lagged>,
    corrupt: u64,
}

impl RecordBatch {
    /// An empty batch.
    pub fn new() -> RecordBatch {
        RecordBatch::default()
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it holds no records (it may still report loss or damage).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Record `i`, in the order read (offset order within each partition).
    pub fn get(&self, i: usize) -> Option<RecordView<'_>> {
        self.entries.get(i).map(|e| self.view(e))
    }

    /// The records, in the order read.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = RecordView<'_>> + '_ {
        self.entries.iter().map(|e| self.view(e))
    }

    /// Loss events of the poll that filled it (overwrite topics): offsets
    /// overwritten before this reader got to them, or while it copied them.
    pub fn lagged(&self) -> &[Lagged] {
        &self.lagged
    }

    /// Offsets lost in the poll that filled it (the sum of
    /// [`RecordBatch::lagged`]).
    pub fn missed(&self) -> u64 {
        self.lagged
            .iter()
            .fold(0u64, |a, l| a.saturating_add(l.missed))
    }

    /// Malformed records (or wild cursors) skipped by the poll that filled it.
    pub fn corrupt(&self) -> u64 {
        self.corrupt
    }

    /// Empty it, keeping its capacity.
    pub fn clear(&mut self) {
        self.data.clear();
        self.entries.clear();
        self.lagged.clear();
        self.corrupt = 0;
    }

    fn view(&self, e: &Entry) -> RecordView<'_> {
        let bytes = self.data.get(e.start..e.start + e.len).unwrap_or(&[]);
        let (block, rest) = bytes.split_at((e.headers_len as usize).min(bytes.len()));
        let k = e.key_len.map_or(0, |k| (k as usize).min(rest.len()));
        let (key, value) = rest.split_at(k);
        RecordView {
            partition: e.partition,
            offset: e.offset,
            timestamp_ns: e.timestamp_ns,
            key: e.key_len.map(|_| key),
            value,
            // Validated when copied (`MappedSlots::append_body`).
            headers: HeaderView::parse(block).unwrap_or_default(),
        }
    }

    fn lag(&mut self, partition: u32, missed: u64, resumed_at: u64) {
        self.lagged.push(Lagged {
            partition,
            missed,
            resumed_at,
        });
    }
}

impl Consumer {
    /// Read up to `max` records of the assigned partitions into `batch`
    /// (cleared first), without waiting; returns how many. One liveness
    /// check for the whole call, and per partition one load of the shared
    /// write cursor per run of published records (a caught-up reader
    /// watches the next slot instead). Loss and damage are reported in the
    /// batch ([`RecordBatch::lagged`], [`RecordBatch::corrupt`]) and counted
    /// in [`Consumer::missed`] and [`Consumer::corrupt`]. The position
    /// moves past the batch: a [`Consumer::commit`] after it commits every
    /// record in it.
    ///
    /// Partitions are visited in turn starting one further each call, and
    /// each is drained (up to `max`) before the next, as [`Consumer::poll`].
    ///
    /// # Errors
    /// [`Error::LeaseExpired`].
    pub fn poll_into_batch(&mut self, batch: &mut RecordBatch, max: usize) -> Result<usize> {
        self.check_alive()?;
        batch.clear();
        let n = self.cursors.len();
        if n == 0 || max == 0 {
            return Ok(0);
        }
        let start = self.rr;
        let inner = &self.topic.inner;
        for k in 0..n {
            if batch.entries.len() >= max {
                break;
            }
            let i = (start + k) % n;
            let c = &mut self.cursors[i];
            let part = inner.part(c.partition);
            let hdr = part.header();
            let slots = part.slots();
            // Prefetch only below a cursor loaded once for this run: slots
            // the writer has published and will not touch for a ring.
            let mut run_end = None;
            while batch.entries.len() < max && c.may_read(hdr, &slots) {
                let offset = c.next;
                let end = match run_end {
                    Some(e) => e,
                    None if max - batch.entries.len() > READ_AHEAD as usize => {
                        *run_end.insert(c.cache.refresh(hdr, &slots))
                    }
                    None => *run_end.insert(0),
                };
                if offset.saturating_add(READ_AHEAD) < end {
                    slots.prefetch_read(offset + READ_AHEAD);
                }
                let mark = batch.data.len();
                let data = &mut batch.data;
                let got =
                    ring::read_with(hdr, &slots, offset, |index| slots.append_body(index, data));
                match got {
                    ReadWith::Record {
                        output: (body, len),
                        intact: true,
                    } => {
                        batch.entries.push(Entry {
                            partition: c.partition,
                            offset,
                            timestamp_ns: body.timestamp_ns,
                            key_len: body.key_len,
                            headers_len: body.headers_len,
                            start: mark,
                            len,
                        });
                        c.next = offset.saturating_add(1);
                    }
                    ReadWith::Record { intact: false, .. } => {
                        // Overwritten during the copy: drop the bytes.
                        batch.data.truncate(mark);
                        match ring::lapped(hdr, &slots, offset) {
                            ReadOutcome::Lapped { missed, resume } => {
                                let (missed, resume) =
                                    c.cache.after_lap(hdr, &slots, offset, missed, resume);
                                self.missed = self.missed.saturating_add(missed);
                                batch.lag(c.partition, missed, resume);
                                c.next = resume;
                            }
                            _ => break,
                        }
                    }
                    ReadWith::NotYet if c.skip_stuck() => {
                        self.corrupt = self.corrupt.saturating_add(1);
                        batch.corrupt = batch.corrupt.saturating_add(1);
                        c.next = offset.saturating_add(1);
                    }
                    ReadWith::NotYet => break,
                    ReadWith::Lapped { missed, resume } => {
                        let (missed, resume) =
                            c.cache.after_lap(hdr, &slots, offset, missed, resume);
                        self.missed = self.missed.saturating_add(missed);
                        batch.lag(c.partition, missed, resume);
                        c.next = resume;
                    }
                    ReadWith::Corrupt => {
                        self.corrupt = self.corrupt.saturating_add(1);
                        batch.corrupt = batch.corrupt.saturating_add(1);
                        c.next = offset.saturating_add(1);
                    }
                }
            }
            let damage = c.take_damage();
            self.corrupt = self.corrupt.saturating_add(damage);
            batch.corrupt = batch.corrupt.saturating_add(damage);
        }
        self.rr = (start + 1) % n;
        Ok(batch.entries.len())
    }

    /// Like [`Consumer::poll_into_batch`], waiting (with the consumer's
    /// [`crate::WaitStrategy`]) up to `timeout` for at least one record or
    /// loss event (`None`, or a timeout too large to represent: forever).
    /// Returns how many records the batch holds.
    ///
    /// # Errors
    /// [`Error::Timeout`], [`Error::LeaseExpired`].
    pub fn recv_into_batch(
        &mut self,
        batch: &mut RecordBatch,
        max: usize,
        timeout: Option<Duration>,
    ) -> Result<usize> {
        let deadline = Deadline::from_timeout(timeout);
        let mut waiter = Waiter::new(self.strategy, self.pacer);
        loop {
            let got = self.poll_into_batch(batch, max)?;
            if got > 0 || !batch.lagged.is_empty() || batch.corrupt > 0 {
                self.pacer = waiter.delivered();
                return Ok(got);
            }
            if deadline.passed() {
                self.pacer = waiter.gave_up();
                return Err(Error::Timeout);
            }
            self.wait_once(&mut waiter, deadline);
        }
    }
}
