//! Producers: claim writer leases on partitions and publish records.

use std::time::Duration;

use crate::backpressure;
use crate::error::{Error, Result};
use crate::os;
use crate::ring;
use crate::sync::Ordering;
use crate::token;
use crate::topic::Topic;
use crate::wait;
use crate::writer_lease::{self, Held};

/// Which partitions a producer writes.
///
/// Whatever the choice, each partition has one writer: a partition whose
/// writer process died (its kernel-held liveness token is released) counts
/// as free and is taken over with a new epoch, fencing the old writer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Partitions {
    /// The default ([`Producer::new`]): every partition without a live
    /// writer; if there is none, a new one (the topic grows by one
    /// partition, up to [`crate::TopicConfig::max_partitions`]). A lone
    /// producer on a fresh topic thus writes every partition, and each
    /// further producer process gets a partition of its own.
    #[default]
    Auto,
    /// Every partition of the topic as it is now; fails with
    /// [`Error::PartitionHeld`] if a live producer holds one.
    All,
    /// Exactly these partitions.
    Only(Vec<u32>),
    /// Any `n` partitions without a live writer (lowest indices first),
    /// growing the topic by as many partitions as are missing, so several
    /// producer processes can feed one topic on disjoint partitions.
    AnyFree(u32),
}

/// Where a record went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sent {
    /// Partition index.
    pub partition: u32,
    /// Offset of the record in the partition.
    pub offset: u64,
}

/// Where a batch went: `count` records at consecutive offsets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SentBatch {
    /// Partition index.
    pub partition: u32,
    /// Offset of the first record.
    pub first_offset: u64,
    /// Number of records.
    pub count: usize,
}

pub(crate) struct Owned {
    pub(crate) partition: u32,
    pub(crate) writer: ring::Writer,
    /// Backpressure topics: offsets below this are known to have room
    /// (cached so the group table is read only when the ring looks full).
    pub(crate) limit: u64,
}

impl Owned {
    /// Reserve this partition's next offset (the lease check, see
    /// `ring::Writer::reserve`) and, on a backpressure topic, wait up to
    /// `timeout` for room at it. On an error nothing stays reserved. The one
    /// preamble of every single-record write: `send`, `send_with`, `loan`.
    #[inline]
    pub(crate) fn reserve_one(
        &mut self,
        inner: &crate::topic::TopicInner,
        hdr: &crate::layout::PartitionHeader,
        backpressure: bool,
        timeout: Option<Duration>,
    ) -> Result<()> {
        self.writer
            .reserve(hdr, 1)
            .map_err(|e| inner.write_error(self.partition, e))?;
        if backpressure && self.writer.next_offset() >= self.limit {
            match backpressure::wait_for_room(
                inner,
                self.partition,
                self.writer.next_offset(),
                timeout,
            ) {
                Ok(limit) => self.limit = limit,
                Err(e) => {
                    self.writer.unreserve(hdr);
                    return Err(e);
                }
            }
        }
        Ok(())
    }
}

/// The stable hash behind [`Producer::send_keyed`]: 64-bit FNV-1a of the
/// key bytes, modulo `partitions`. It will not change between versions.
///
/// A producer applies it to *its own* partitions: the key goes to the
/// `key_partition(key, n)`-th of the `n` partitions it writes, in ascending
/// order. For a producer that writes every partition of the topic (a lone
/// producer, or [`Partitions::All`]) that is partition
/// `key_partition(key, topic.partitions())`.
pub fn key_partition(key: &[u8], partitions: u32) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % u64::from(partitions.max(1))) as u32
}

/// Publishes records to the partitions whose writer lease it holds.
///
/// Any number of producer processes can write one topic: each partition has
/// one writer, and a producer that finds no partition free adds one (see
/// [`Partitions::Auto`]). Dropping the producer releases its leases, and
/// the next producer that needs a partition reuses them.
///
/// **Keys.** [`Producer::send_keyed`] sends a key always to the same
/// partition among the partitions *this producer* writes (the
/// [`key_partition`] hash modulo their count, in ascending order), so the
/// records of one key from one producer keep their order. Records of one
/// key sent by *different* producers go to different partitions and are
/// ordered per producer only. The set of partitions a producer writes is
/// fixed for its life.
///
/// # Examples
/// ```no_run
/// # let mgr = shmq::TopicManager::new()?;
/// let topic = mgr.open_or_create("events", shmq::TopicConfig::default())?;
/// let mut producer = shmq::Producer::new(&topic)?;
/// let sent = producer.send(b"hello")?;
/// println!("partition {} offset {}", sent.partition, sent.offset);
/// # Ok::<(), shmq::Error>(())
/// ```
pub struct Producer {
    pub(crate) topic: Topic,
    pub(crate) owned: Vec<Owned>,
    /// `by_partition[p]` = index into `owned`, or `usize::MAX`.
    pub(crate) by_partition: Vec<usize>,
    /// Indices into `owned`, by ascending partition (for `send_keyed`).
    pub(crate) keyed: Vec<usize>,
    pub(crate) rr: usize,
    pub(crate) slot_size: usize,
    pub(crate) backpressure: bool,
    pub(crate) send_timeout: Option<Duration>,
    /// The topic's record clock (`TopicConfig::timestamp`).
    pub(crate) clock: crate::config::Timestamp,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("topic", &self.topic.name())
            .field("partitions", &self.partitions())
            .finish()
    }
}

impl Producer {
    /// A producer for `topic` with the default choice of partitions,
    /// [`Partitions::Auto`]: every partition without a live writer, or, if
    /// there is none, a new partition added to the topic.
    ///
    /// # Errors
    /// [`Error::PartitionLimit`] if every partition has a live writer and
    /// the topic has `max_partitions` already, [`Error::GrowthStalled`],
    /// [`Error::LeaseExpired`], OS errors creating a new partition.
    pub fn new(topic: &Topic) -> Result<Producer> {
        Self::with_partitions(topic, Partitions::Auto)
    }

    /// A producer writing the chosen partitions. A partition whose previous
    /// writer died (its liveness token is gone) is taken over with a new epoch;
    /// the old writer, if somehow still running, is fenced.
    ///
    /// # Errors
    /// [`Error::PartitionHeld`] naming the live holder,
    /// [`Error::NoSuchPartition`], [`Error::NoFreePartitions`] (`AnyFree`
    /// when the topic cannot grow enough), as [`Producer::new`].
    pub fn with_partitions(topic: &Topic, which: Partitions) -> Result<Producer> {
        let inner = &topic.inner;
        if inner.reclaimed() {
            return Err(inner.expired());
        }
        let n = inner.refresh()?;
        // Register for membarrier (or settle on the fence fallback) before
        // the first write relies on the cheap side of the barrier.
        os::barrier_mode();
        let me = inner.token.id();
        let ns = inner.ns.clone();
        let mut owned: Vec<Owned> = Vec::new();
        let release_all = |owned: &Vec<Owned>| {
            for o in owned {
                if let Some(part) = inner.mapped(o.partition) {
                    writer_lease::release(&part.header().writer, o.writer.lease_word());
                }
            }
        };
        let resume = |p: u32, word: u64| -> Result<Owned> {
            let part = inner.partition(p)?;
            let writer = ring::Writer::resume(part.header(), &part.slots(), word, || {
                std::thread::sleep(std::time::Duration::from_millis(1))
            });
            Ok(Owned {
                partition: p,
                writer,
                limit: 0,
            })
        };
        // Claim partition `p` (free, or its writer is dead: take it over).
        let claim = |p: u32| -> Result<std::result::Result<Owned, Held>> {
            let hdr = inner.partition(p)?.header();
            match writer_lease::claim(&hdr.writer, me, |owner| token::probe(&ns, owner).is_dead()) {
                Ok(claimed) => {
                    if claimed.took_over_from.is_some() {
                        hdr.takeovers.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(topic = %inner.name, partition = p, from_token = claimed.took_over_from, epoch = writer_lease::unpack(claimed.word).0, "shmq: took over the partition of a dead writer");
                    }
                    Ok(Ok(resume(p, claimed.word)?))
                }
                Err(held) => Ok(Err(held)),
            }
        };
        let result = (|| -> Result<()> {
            match which {
                Partitions::All | Partitions::Only(_) => {
                    let wanted: Vec<u32> = match which {
                        Partitions::Only(list) => list,
                        _ => (0..n).collect(),
                    };
                    for p in wanted {
                        if owned.iter().any(|o| o.partition == p) {
                            continue;
                        }
                        match claim(p)? {
                            Ok(o) => owned.push(o),
                            Err(Held { owner, epoch }) => {
                                let pid = token::probe(&ns, owner).pid().unwrap_or(0);
                                return Err(Error::PartitionHeld {
                                    topic: inner.name.clone(),
                                    partition: p,
                                    pid,
                                    owner,
                                    epoch,
                                });
                            }
                        }
                    }
                }
                Partitions::Auto | Partitions::AnyFree(_) => {
                    let want = match which {
                        Partitions::AnyFree(k) => k,
                        _ => u32::MAX,
                    };
                    for p in 0..n {
                        if owned.len() as u32 >= want {
                            break;
                        }
                        if let Ok(o) = claim(p)? {
                            owned.push(o);
                        }
                    }
                    let short = match which {
                        Partitions::AnyFree(k) => k.saturating_sub(owned.len() as u32),
                        _ => u32::from(owned.is_empty()),
                    };
                    for _ in 0..short {
                        match inner.grow()? {
                            Some((p, word)) => owned.push(resume(p, word)?),
                            None if matches!(which, Partitions::AnyFree(_)) => {
                                return Err(Error::NoFreePartitions {
                                    topic: inner.name.clone(),
                                    wanted: want,
                                    free: owned.len() as u32,
                                })
                            }
                            None => {
                                return Err(Error::PartitionLimit {
                                    topic: inner.name.clone(),
                                    max_partitions: inner.max_partitions(),
                                })
                            }
                        }
                    }
                }
            }
            Ok(())
        })();
        if let Err(e) = result {
            release_all(&owned);
            return Err(e);
        }
        if owned.is_empty() {
            return Err(Error::InvalidConfig(
                "a producer needs at least one partition".into(),
            ));
        }
        let mut by_partition = vec![usize::MAX; inner.max_partitions() as usize];
        for (i, o) in owned.iter().enumerate() {
            if let Some(slot) = by_partition.get_mut(o.partition as usize) {
                *slot = i;
            }
        }
        let mut keyed: Vec<usize> = (0..owned.len()).collect();
        keyed.sort_by_key(|&i| owned[i].partition);
        Ok(Producer {
            topic: topic.clone(),
            owned,
            by_partition,
            keyed,
            rr: 0,
            slot_size: inner.config.slot_size as usize,
            backpressure: inner.config.overflow == crate::config::Overflow::Backpressure,
            send_timeout: None,
            clock: inner.config.timestamp,
        })
    }

    /// On a backpressure topic, bound how long a send waits for room
    /// (`None`, the default, or a timeout too large to represent as an
    /// instant such as `Duration::MAX`, waits as long as it takes). A send
    /// that times out returns [`Error::Full`] and publishes nothing.
    pub fn with_send_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.send_timeout = timeout;
        self
    }

    /// Like [`Producer::send`], but on a full backpressure topic return
    /// [`Error::Full`] at once instead of waiting.
    ///
    /// # Errors
    /// As [`Producer::send`], and [`Error::Full`].
    pub fn try_send(&mut self, value: &[u8]) -> Result<Sent> {
        let saved = self.send_timeout.replace(Duration::ZERO);
        let r = self.send(value);
        self.send_timeout = saved;
        r
    }

    /// The partitions this producer writes, in ascending order.
    pub fn partitions(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.owned.iter().map(|o| o.partition).collect();
        v.sort_unstable();
        v
    }

    /// The topic.
    pub fn topic(&self) -> &Topic {
        &self.topic
    }

    /// Send `value` to the next partition in round-robin order.
    ///
    /// # Errors
    /// [`Error::MessageTooLarge`], [`Error::Fenced`], [`Error::LeaseExpired`].
    #[inline]
    pub fn send(&mut self, value: &[u8]) -> Result<Sent> {
        let i = self.next_rr();
        self.send_at(i, None, value)
    }

    /// Send a keyed record. The key always goes to the same partition among
    /// the partitions this producer writes: the
    /// [`key_partition`]`(key, n)`-th of its `n` partitions in ascending
    /// order. So the records of one key sent by this producer keep their
    /// order; with several producers, order per key holds per producer (see
    /// [`Producer`]).
    ///
    /// # Errors
    /// As [`Producer::send`].
    pub fn send_keyed(&mut self, key: &[u8], value: &[u8]) -> Result<Sent> {
        let i = self.key_index(key);
        self.send_at(i, Some(key), value)
    }

    /// The partition [`Producer::send_keyed`] sends `key` to.
    pub fn partition_for_key(&self, key: &[u8]) -> u32 {
        self.owned[self.key_index(key)].partition
    }

    pub(crate) fn key_index(&self, key: &[u8]) -> usize {
        let k = key_partition(key, self.keyed.len() as u32) as usize;
        self.keyed.get(k).copied().unwrap_or(0)
    }

    /// Send to a chosen partition, with an optional key.
    ///
    /// # Errors
    /// As [`Producer::send`], and [`Error::NotOwned`].
    pub fn send_to(&mut self, partition: u32, key: Option<&[u8]>, value: &[u8]) -> Result<Sent> {
        let i = self.index_of(partition)?;
        self.send_at(i, key, value)
    }

    /// Publish a batch of values into one partition (the next in round-robin
    /// order) with a single cursor update and at most one wake-up.
    ///
    /// # Errors
    /// As [`Producer::send`]; on an error nothing of the batch was published
    /// past the records already written (reported in the error-free prefix).
    pub fn send_batch<V: AsRef<[u8]>>(&mut self, values: &[V]) -> Result<SentBatch> {
        let i = self.next_rr();
        self.send_batch_at(i, values)
    }

    /// Publish a batch into a chosen partition.
    ///
    /// # Errors
    /// As [`Producer::send_batch`], and [`Error::NotOwned`].
    pub fn send_batch_to<V: AsRef<[u8]>>(
        &mut self,
        partition: u32,
        values: &[V],
    ) -> Result<SentBatch> {
        let i = self.index_of(partition)?;
        self.send_batch_at(i, values)
    }

    pub(crate) fn next_rr(&mut self) -> usize {
        let i = self.rr;
        self.rr = if i + 1 >= self.owned.len() { 0 } else { i + 1 };
        i
    }

    pub(crate) fn index_of(&self, partition: u32) -> Result<usize> {
        match self.by_partition.get(partition as usize) {
            Some(&i) if i != usize::MAX => Ok(i),
            _ if partition < self.topic.partitions() => Err(Error::NotOwned {
                topic: self.topic.name().to_string(),
                partition,
                held: self.partitions(),
            }),
            _ => Err(Error::NoSuchPartition {
                topic: self.topic.name().to_string(),
                partition,
                partitions: self.topic.partitions(),
            }),
        }
    }

    fn check_size(&self, key: Option<&[u8]>, value: &[u8]) -> Result<()> {
        let size = key.map_or(0, <[u8]>::len) + value.len();
        if size > self.slot_size {
            return Err(Error::MessageTooLarge {
                size,
                max: self.slot_size,
            });
        }
        Ok(())
    }

    #[inline]
    fn send_at(&mut self, i: usize, key: Option<&[u8]>, value: &[u8]) -> Result<Sent> {
        self.check_size(key, value)?;
        let inner = &self.topic.inner;
        let o = &mut self.owned[i];
        let part = inner.partition(o.partition)?;
        let hdr = part.header();
        let slots = part.slots();
        // Reserve the one offset this send writes (the claim `write_slot`
        // then finds already made) and wait for room.
        o.reserve_one(inner, hdr, self.backpressure, self.send_timeout)?;
        let offset = o
            .writer
            .write_slot(hdr, &slots, stamp(self.clock), key, value)
            .map_err(|e| inner.write_error(o.partition, e))?;
        if o.writer.commit(hdr) {
            wait::wake_all(inner.meta.meta_header());
        }
        inner.after_publish(o.partition, offset, offset.wrapping_add(1))?;
        Ok(Sent {
            partition: o.partition,
            offset,
        })
    }

    fn send_batch_at<V: AsRef<[u8]>>(&mut self, i: usize, values: &[V]) -> Result<SentBatch> {
        for v in values {
            self.check_size(None, v.as_ref())?;
        }
        let inner = &self.topic.inner;
        let o = &mut self.owned[i];
        let part = inner.partition(o.partition)?;
        let hdr = part.header();
        let slots = part.slots();
        // One reservation (and lease check) for the whole batch, up to a
        // ring; `Writer::claim` reserves again if the batch is longer.
        o.writer
            .reserve(hdr, values.len() as u64)
            .map_err(|e| inner.write_error(o.partition, e))?;
        let first_offset = o.writer.next_offset();
        let now = stamp(self.clock);
        let mut result = Ok(());
        for v in values {
            if self.backpressure && o.writer.next_offset() >= o.limit {
                match backpressure::wait_for_room(
                    inner,
                    o.partition,
                    o.writer.next_offset(),
                    self.send_timeout,
                ) {
                    Ok(limit) => o.limit = limit,
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
            }
            if let Err(e) = o.writer.write_slot(hdr, &slots, now, None, v.as_ref()) {
                result = Err(inner.write_error(o.partition, e));
                break;
            }
        }
        if o.writer.commit(hdr) {
            wait::wake_all(inner.meta.meta_header());
        }
        let synced = inner.after_publish(o.partition, first_offset, o.writer.next_offset());
        result.and(synced).map(|()| SentBatch {
            partition: o.partition,
            first_offset,
            count: values.len(),
        })
    }
}

/// A record's timestamp under the topic's clock choice.
#[inline]
pub(crate) fn stamp(clock: crate::config::Timestamp) -> u64 {
    match clock {
        crate::config::Timestamp::Realtime => os::realtime_ns(),
        crate::config::Timestamp::Coarse => os::coarse_now_ns(),
        crate::config::Timestamp::None => 0,
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        for o in &mut self.owned {
            if let Some(part) = self.topic.inner.mapped(o.partition) {
                o.writer.unreserve(part.header());
                self.topic.inner.sync_on_close(o.partition);
                writer_lease::release(&part.header().writer, o.writer.lease_word());
            }
        }
    }
}
