//! Zero-copy paths: read a record where it lies ([`Consumer::poll_with`]) and
//! write one in place ([`Producer::loan`] → [`Loan::commit`]).
//!
//! Both are the ring's seqlock split open (`ring::read_with`,
//! `ring::Writer::claim` / `publish_claimed` / `abandon_claimed`): the copy
//! of [`Consumer::poll_into`] and [`Producer::send`] is replaced by the
//! caller's own code running on the slot's bytes.
//!
//! # When a borrowed record can change under the reader
//!
//! * **Backpressure topics**: the writer never passes this consumer's
//!   group's committed offset by a full ring, and the record being read is at
//!   or after that offset, so its slot is not overwritten during the borrow
//!   (unless the group is declared dead after `dead_group_timeout`, or another
//!   member of the group commits past it).
//! * **Overwrite topics**: the writer never waits, so a slow borrow can be
//!   lapped. The slot's sequence word is re-checked after the closure
//!   returns, and [`Viewed::lapped`] says whether the writer began
//!   overwriting it meanwhile; the closure's output must then be discarded
//!   (it may have seen a mix of two records) and the offset is counted in
//!   [`Consumer::missed`].
//!
//! Either way the closure sees bytes another process writes: treat them as
//! untrusted input (bounds-check what you parse), as for any record.

use std::ops::{Deref, DerefMut};

use crate::consumer::{Consumer, Delivered};
use crate::error::{Error, Result};
use crate::headers::HeaderView;
use crate::producer::{Producer, Sent};
use crate::ring::{self, Claimed, ReadWith};
use crate::wait;

/// A record borrowed in place by [`Consumer::poll_with`].
#[derive(Clone, Copy, Debug)]
pub struct RecordView<'a> {
    /// Partition index.
    pub partition: u32,
    /// Offset in the partition.
    pub offset: u64,
    /// Unix-epoch nanoseconds when the producer sent it.
    pub timestamp_ns: u64,
    /// The key, if the record has one.
    pub key: Option<&'a [u8]>,
    /// The value, in the partition's shared memory.
    pub value: &'a [u8],
    /// The headers, in the partition's shared memory (validated before the
    /// closure runs; iteration stays bounds-checked).
    pub headers: HeaderView<'a>,
}

impl<'a> RecordView<'a> {
    /// The record's headers, in place.
    pub fn headers(&self) -> HeaderView<'a> {
        self.headers
    }
}

impl<'a> RecordView<'a> {
    /// Split a slot body found by `MappedSlots::view` into its parts.
    pub(crate) fn split(
        partition: u32,
        offset: u64,
        body: crate::slots::Body,
        bytes: &'a [u8],
    ) -> RecordView<'a> {
        let h = (body.headers_len as usize).min(bytes.len());
        let (headers, rest) = bytes.split_at(h);
        let k = body.key_len.map_or(0, |k| k as usize);
        let (key, value) = rest.split_at(k.min(rest.len()));
        RecordView {
            partition,
            offset,
            timestamp_ns: body.timestamp_ns,
            key: body.key_len.map(|_| key),
            value,
            headers: HeaderView::trusted(headers),
        }
    }
}

/// What [`Consumer::poll_with`] did with one record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Viewed<T> {
    /// Where the record was.
    pub delivered: Delivered,
    /// The closure's result.
    pub output: T,
    /// `true` if the writer started overwriting the record's slot while the
    /// closure ran (overwrite topics): the closure may have seen torn bytes,
    /// `output` must be discarded, and the record counts as missed.
    pub lapped: bool,
}

impl Viewed<()> {
    /// Whether the borrow stayed valid to the end (`!lapped`).
    pub fn is_intact(&self) -> bool {
        !self.lapped
    }
}

impl Consumer {
    /// Read the next record of any assigned partition in place: `f` runs on
    /// a [`RecordView`] of the slot's bytes, with no copy and no allocation.
    /// Returns `Ok(None)` if nothing new is published.
    ///
    /// Keep `f` short: on an overwrite topic a slow `f` can be lapped by the
    /// writer (see [`Viewed::lapped`] and the module docs); on a backpressure
    /// topic it holds the writer back.
    ///
    /// # Errors
    /// [`Error::LeaseExpired`].
    ///
    /// # Examples
    /// ```no_run
    /// # let mgr = shmq::TopicManager::new()?;
    /// # let topic = mgr.open_or_create("events", shmq::TopicConfig::default())?;
    /// let mut consumer = shmq::Consumer::new(&topic, "sum")?;
    /// if let Some(v) = consumer.poll_with(|r| r.value.iter().map(|&b| u64::from(b)).sum::<u64>())? {
    ///     if !v.lapped {
    ///         println!("{}@{}: byte sum {}", v.delivered.partition, v.delivered.offset, v.output);
    ///     }
    /// }
    /// # Ok::<(), shmq::Error>(())
    /// ```
    pub fn poll_with<T>(
        &mut self,
        f: impl FnOnce(RecordView<'_>) -> T,
    ) -> Result<Option<Viewed<T>>> {
        self.check_alive()?;
        let mut f = Some(f);
        let n = self.cursors.len();
        let inner = &self.topic.inner;
        for k in 0..n {
            let i = (self.rr + k) % n;
            let c = &mut self.cursors[i];
            let part = &inner.part(c.partition);
            let slots = part.slots();
            while c.may_read(part.header(), &slots) {
                let (partition, offset) = (c.partition, c.next);
                let got = ring::read_with(part.header(), &slots, offset, |index| {
                    let (body, bytes) = slots.view(index)?;
                    let view = RecordView::split(partition, offset, body, bytes);
                    // `f` is taken at most once: `read_with` runs this
                    // closure at most once, and a `Record` returns below.
                    f.take().map(|f| f(view))
                });
                match got {
                    ReadWith::Record { output, intact } => {
                        c.next = c.next.saturating_add(1);
                        if !intact {
                            self.missed = self.missed.saturating_add(1);
                        }
                        self.corrupt = self.corrupt.saturating_add(c.take_damage());
                        self.rr = (i + 1) % n;
                        return Ok(Some(Viewed {
                            delivered: Delivered { partition, offset },
                            output,
                            lapped: !intact,
                        }));
                    }
                    ReadWith::NotYet if c.skip_stuck() => {
                        self.corrupt = self.corrupt.saturating_add(1);
                        c.next = c.next.saturating_add(1);
                    }
                    ReadWith::NotYet => break,
                    ReadWith::Lapped { missed, resume } => {
                        let (missed, resume) =
                            c.cache
                                .after_lap(part.header(), &slots, offset, missed, resume);
                        self.missed = self.missed.saturating_add(missed);
                        c.next = resume;
                    }
                    ReadWith::Corrupt => {
                        self.corrupt = self.corrupt.saturating_add(1);
                        c.next = c.next.saturating_add(1);
                    }
                }
            }
            self.corrupt = self.corrupt.saturating_add(c.take_damage());
        }
        Ok(None)
    }
}

/// A slot loaned for writing in place by [`Producer::loan`]: fill it through
/// `Deref<Target = [u8]>` / `DerefMut`, then [`Loan::commit`] it.
///
/// Readers see nothing of the record until it is committed. Dropping a loan
/// without committing publishes nothing; the offset is then reused by the
/// next send.
///
/// The bytes initially hold whatever an earlier record left in the slot.
#[must_use = "a loan publishes nothing until it is committed"]
pub struct Loan<'p> {
    producer: &'p mut Producer,
    /// Index into `producer.owned`.
    i: usize,
    claim: Option<Claimed>,
    len: usize,
    timestamp_ns: u64,
}

impl std::fmt::Debug for Loan<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loan")
            .field("partition", &self.partition())
            .field("offset", &self.offset())
            .field("len", &self.len)
            .finish()
    }
}

impl Producer {
    /// Loan the next slot of the next partition in round-robin order for a
    /// value of `len` bytes written in place (no key). On a backpressure topic
    /// this first waits for room, as [`Producer::send`] does.
    ///
    /// # Errors
    /// [`Error::MessageTooLarge`], [`Error::Fenced`], [`Error::LeaseExpired`],
    /// [`Error::Full`] (backpressure, after the send timeout).
    ///
    /// # Examples
    /// ```no_run
    /// # let mgr = shmq::TopicManager::new()?;
    /// # let topic = mgr.open_or_create("frames", shmq::TopicConfig::default())?;
    /// let mut producer = shmq::Producer::new(&topic)?;
    /// let mut loan = producer.loan(4)?;
    /// loan.copy_from_slice(b"ping"); // or render into it directly
    /// let sent = loan.commit()?;
    /// # Ok::<(), shmq::Error>(())
    /// ```
    pub fn loan(&mut self, len: usize) -> Result<Loan<'_>> {
        let i = self.rr;
        self.rr = if i + 1 >= self.owned.len() { 0 } else { i + 1 };
        self.loan_at(i, len)
    }

    /// Like [`Producer::loan`], into a chosen partition.
    ///
    /// # Errors
    /// As [`Producer::loan`], and [`Error::NotOwned`], [`Error::NoSuchPartition`].
    pub fn loan_to(&mut self, partition: u32, len: usize) -> Result<Loan<'_>> {
        self.topic.inner.partition(partition)?;
        match self.by_partition.get(partition as usize) {
            Some(&i) if i != usize::MAX => self.loan_at(i, len),
            _ => Err(Error::NotOwned {
                topic: self.topic.name().to_string(),
                partition,
                held: self.partitions(),
            }),
        }
    }

    fn loan_at(&mut self, i: usize, len: usize) -> Result<Loan<'_>> {
        if len > self.slot_size {
            return Err(Error::MessageTooLarge {
                size: len,
                max: self.slot_size,
            });
        }
        let inner = &self.topic.inner;
        let o = &mut self.owned[i];
        let part = &inner.part(o.partition);
        let hdr = part.header();
        let slots = part.slots();
        let partition = o.partition;
        // The lease check and the reservation of the loaned offset.
        o.reserve_one(inner, hdr, self.backpressure, self.send_timeout)?;
        let claim = o
            .writer
            .claim(hdr, &slots)
            .map_err(|e| inner.write_error(partition, e))?;
        let timestamp_ns = crate::producer::stamp(self.clock);
        slots.begin_loan(claim.offset() & part.geo.mask(), timestamp_ns, len);
        Ok(Loan {
            producer: self,
            i,
            claim: Some(claim),
            len,
            timestamp_ns,
        })
    }
}

impl Loan<'_> {
    /// The partition the record will be published in.
    pub fn partition(&self) -> u32 {
        self.producer.owned[self.i].partition
    }

    /// The offset the record will get.
    pub fn offset(&self) -> u64 {
        self.claim.as_ref().map_or(0, Claimed::offset)
    }

    /// The record's length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the record is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Shorten the record to `len` bytes (no effect if `len` is not
    /// smaller), e.g. after serialising into a loan sized for the worst case.
    pub fn truncate(&mut self, len: usize) {
        if len < self.len {
            self.len = len;
            let (part, index) = self.slot();
            part.slots().begin_loan(index, self.timestamp_ns, len);
        }
    }

    /// Publish the record: readers see it from now on, parked readers are
    /// woken. Returns where it went.
    ///
    /// # Errors
    /// None today: the slot was claimed when the loan was made, so the
    /// publish itself cannot be refused. The `Result` leaves room for
    /// checks a future layout may add.
    pub fn commit(mut self) -> Result<Sent> {
        let claim = self.claim.take();
        let producer = &mut *self.producer;
        let inner = &producer.topic.inner;
        let o = &mut producer.owned[self.i];
        let part = &inner.part(o.partition);
        let hdr = part.header();
        let slots = part.slots();
        let offset = match claim {
            Some(claim) => o.writer.publish_claimed(&slots, claim),
            None => o.writer.next_offset(),
        };
        if o.writer.commit(hdr) {
            wait::wake_all(inner.meta.meta_header());
        }
        inner.after_publish(o.partition, offset, offset.wrapping_add(1))?;
        Ok(Sent {
            partition: o.partition,
            offset,
        })
    }

    fn slot(&self) -> (&crate::topic::Partition, u64) {
        let o = &self.producer.owned[self.i];
        let part = &self.producer.topic.inner.part(o.partition);
        let index = self.offset() & part.geo.mask();
        (part, index)
    }
}

impl Deref for Loan<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        let (part, index) = self.slot();
        // The header we wrote says `len` bytes and only this loan writes it,
        // so the in-place view is exactly the loaned bytes.
        part.slots().view(index).map_or(&[], |(_, bytes)| bytes)
    }
}

impl DerefMut for Loan<'_> {
    fn deref_mut(&mut self) -> &mut [u8] {
        let len = self.len;
        let (part, index) = self.slot();
        part.slots().loan_body(index, len)
    }
}

impl Drop for Loan<'_> {
    fn drop(&mut self) {
        if let Some(claim) = self.claim.take() {
            let o = &mut self.producer.owned[self.i];
            let part = &self.producer.topic.inner.part(o.partition);
            o.writer.abandon_claimed(&part.slots(), claim);
        }
    }
}
