//! Reader-side filters: a predicate on a record's key and headers (and,
//! if it wants, its value), evaluated **in place** in the slot before
//! anything is copied. Records it rejects are never copied out.
//!
//! **Skipped records count as consumed.** A filter moves the consumer past
//! the records it rejects exactly as past those it returns, so
//! [`Consumer::commit`] covers them: a group that filters never sees them
//! again, and on a backpressure topic they do not hold the writer back.
//! [`Polled::filtered`] says how many were passed over. Two groups with
//! different filters on one topic each commit their own positions.
//!
//! The predicate sees bytes another process may be rewriting (an
//! overwrite topic lapping a slow reader): the read is validated
//! afterwards by the slot's sequence word and a lapped record is reported
//! as lost ([`Polled::lagged`]), whatever the predicate said. Keep it short
//! and treat the bytes as untrusted.
//!
//! ```no_run
//! # let mgr = shmq::TopicManager::new()?;
//! # let topic = mgr.open_or_create("events", shmq::TopicConfig::default())?;
//! let mut consumer = shmq::Consumer::new(&topic, "audit")?;
//! let polled = consumer.poll_filtered(100, |r| {
//!     r.headers.get("type") == Some(b"payment") && r.key.is_some_and(|k| k.starts_with(b"eu-"))
//! })?;
//! println!("{} payments, {} other records skipped", polled.records.len(), polled.filtered);
//! consumer.commit()?; // the skipped ones are committed too
//! # Ok::<(), shmq::Error>(())
//! ```

use std::time::Duration;

use crate::consumer::{Consumer, Delivered, Lagged, Polled, Record};
use crate::deadline::Deadline;
use crate::error::Result;
use crate::group::GroupConsumer;
use crate::ring::{self, ReadWith, RecordBuf};
use crate::wait::Waiter;
use crate::zero_copy::RecordView;

impl Consumer {
    /// Like [`Consumer::poll`], returning only the records `keep` accepts.
    /// `keep` runs on each record in place ([`RecordView`]: key, headers,
    /// value where they lie); a rejected record is not copied, and counts
    /// as consumed (see the module docs), in [`Polled::filtered`].
    ///
    /// # Errors
    /// [`crate::Error::LeaseExpired`].
    pub fn poll_filtered(
        &mut self,
        max: usize,
        mut keep: impl FnMut(&RecordView<'_>) -> bool,
    ) -> Result<Polled> {
        let mut out = Polled::default();
        let mut buf = std::mem::take(&mut self.buf);
        let r = self.scan_filtered(max, &mut buf, &mut keep, &mut out, &mut |d, b| {
            Some(Record::from_buf(d.partition, d.offset, b))
        });
        self.buf = buf;
        r.map(|records| {
            out.records = records;
            out
        })
    }

    /// Like [`Consumer::poll_filtered`], waiting up to `timeout` for at
    /// least one accepted record (or a loss event). Returns what it saw on
    /// timeout ([`Polled::filtered`] counts every record skipped meanwhile).
    ///
    /// # Errors
    /// [`crate::Error::LeaseExpired`].
    pub fn poll_filtered_timeout(
        &mut self,
        max: usize,
        timeout: Duration,
        mut keep: impl FnMut(&RecordView<'_>) -> bool,
    ) -> Result<Polled> {
        let deadline = Deadline::after(timeout);
        let mut waiter = Waiter::new(self.strategy, self.pacer);
        let mut skipped = 0u64;
        loop {
            let mut got = self.poll_filtered(max, &mut keep)?;
            skipped = skipped.saturating_add(got.filtered);
            if !got.records.is_empty()
                || !got.lagged.is_empty()
                || got.corrupt > 0
                || deadline.passed()
            {
                got.filtered = skipped;
                self.pacer = if got.records.is_empty() {
                    waiter.gave_up()
                } else {
                    waiter.delivered()
                };
                return Ok(got);
            }
            if got.filtered == 0 {
                self.wait_once(&mut waiter, deadline);
            }
        }
    }

    /// Like [`Consumer::poll_into`], for the next record `keep` accepts
    /// (rejected ones are consumed without a copy). No allocation once
    /// `buf` has grown.
    ///
    /// # Errors
    /// [`crate::Error::LeaseExpired`].
    pub fn poll_into_filtered(
        &mut self,
        buf: &mut RecordBuf,
        mut keep: impl FnMut(&RecordView<'_>) -> bool,
    ) -> Result<Option<Delivered>> {
        let mut out = Polled::default();
        let mut first = None;
        self.scan_filtered(1, buf, &mut keep, &mut out, &mut |d, _| {
            first = Some(d);
            None::<()>
        })?;
        Ok(first)
    }

    /// The read loop of [`Consumer::poll`] with the filter applied in
    /// place: up to `max` accepted records, each copied into `buf` and
    /// handed to `take` (whose `Some` results are collected).
    fn scan_filtered<T>(
        &mut self,
        max: usize,
        buf: &mut RecordBuf,
        keep: &mut dyn FnMut(&RecordView<'_>) -> bool,
        out: &mut Polled,
        take: &mut dyn FnMut(Delivered, &RecordBuf) -> Option<T>,
    ) -> Result<Vec<T>> {
        self.check_alive()?;
        let mut taken = Vec::new();
        let mut accepted = 0usize;
        let n = self.cursors.len();
        if n == 0 || max == 0 {
            return Ok(taken);
        }
        let start = self.rr;
        let inner = &self.topic.inner;
        for k in 0..n {
            if accepted >= max {
                break;
            }
            let i = (start + k) % n;
            let c = &mut self.cursors[i];
            let part = inner.part(c.partition);
            let slots = part.slots();
            while accepted < max && c.may_read(part.header(), &slots) {
                let (partition, offset) = (c.partition, c.next);
                let got = ring::read_with(part.header(), &slots, offset, |index| {
                    let (body, bytes) = slots.view(index)?;
                    let view = RecordView::split(partition, offset, body, bytes);
                    if !keep(&view) {
                        return Some(false);
                    }
                    buf.timestamp_ns = body.timestamp_ns;
                    buf.key_len = body.key_len;
                    buf.headers_len = body.headers_len;
                    buf.data.clear();
                    buf.data.extend_from_slice(bytes);
                    Some(true)
                });
                match got {
                    ReadWith::Record {
                        output,
                        intact: true,
                    } => {
                        c.next = c.next.saturating_add(1);
                        if output {
                            accepted += 1;
                            if let Some(t) = take(Delivered { partition, offset }, buf) {
                                taken.push(t);
                            }
                        } else {
                            out.filtered = out.filtered.saturating_add(1);
                        }
                    }
                    // Overwritten while the filter looked: lost, whatever
                    // it decided (as `poll_with` reports it).
                    ReadWith::Record { intact: false, .. } => {
                        self.missed = self.missed.saturating_add(1);
                        c.next = c.next.saturating_add(1);
                        out.lagged.push(Lagged {
                            partition,
                            missed: 1,
                            resumed_at: c.next,
                        });
                    }
                    ReadWith::NotYet if c.skip_stuck() => {
                        self.corrupt = self.corrupt.saturating_add(1);
                        out.corrupt = out.corrupt.saturating_add(1);
                        c.next = c.next.saturating_add(1);
                    }
                    ReadWith::NotYet => break,
                    ReadWith::Lapped { missed, resume } => {
                        self.missed = self.missed.saturating_add(missed);
                        out.lagged.push(Lagged {
                            partition,
                            missed,
                            resumed_at: resume,
                        });
                        c.next = resume;
                    }
                    ReadWith::Corrupt => {
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
        Ok(taken)
    }
}

impl GroupConsumer {
    /// [`Consumer::poll_filtered`] for a group member: heartbeat /
    /// rebalance if due, then read up to `max` accepted records from the
    /// claimed partitions. Rejected records count as consumed, as there.
    ///
    /// # Errors
    /// As [`GroupConsumer::poll`].
    pub fn poll_filtered(
        &mut self,
        max: usize,
        keep: impl FnMut(&RecordView<'_>) -> bool,
    ) -> Result<Polled> {
        self.maintain()?;
        self.consumer.poll_filtered(max, keep)
    }
}
