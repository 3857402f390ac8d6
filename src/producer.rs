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
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Partitions {
    /// Every partition of the topic (the default).
    #[default]
    All,
    /// Exactly these partitions.
    Only(Vec<u32>),
    /// Any `n` partitions without a live writer (lowest indices first), so
    /// several producer processes can feed one topic on disjoint partitions.
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

/// The stable hash that maps a key to a partition: 64-bit FNV-1a of the key
/// bytes, modulo the topic's partition count. It will not change between
/// versions, so every producer (in any language) agrees on key placement and
/// per-key order holds.
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
/// Dropping the producer releases its leases.
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
    pub(crate) rr: usize,
    pub(crate) slot_size: usize,
    pub(crate) backpressure: bool,
    pub(crate) send_timeout: Option<Duration>,
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
    /// A producer writing every partition of `topic`.
    ///
    /// # Errors
    /// [`Error::PartitionHeld`] if a live producer holds one of them.
    pub fn new(topic: &Topic) -> Result<Producer> {
        Self::with_partitions(topic, Partitions::All)
    }

    /// A producer writing the chosen partitions. A partition whose previous
    /// writer died (its liveness token is gone) is taken over with a new epoch;
    /// the old writer, if somehow still running, is fenced.
    ///
    /// # Errors
    /// [`Error::PartitionHeld`] naming the live holder,
    /// [`Error::NoSuchPartition`], [`Error::NoFreePartitions`].
    pub fn with_partitions(topic: &Topic, which: Partitions) -> Result<Producer> {
        let inner = &topic.inner;
        if inner.reclaimed() {
            return Err(inner.expired());
        }
        let n = inner.config.partitions;
        let (wanted, any): (Vec<u32>, Option<u32>) = match which {
            Partitions::All => ((0..n).collect(), None),
            Partitions::Only(list) => (list, None),
            Partitions::AnyFree(k) => ((0..n).collect(), Some(k)),
        };
        let me = inner.token.id();
        let ns = inner.ns.clone();
        let mut owned: Vec<Owned> = Vec::new();
        let release_all = |owned: &Vec<Owned>| {
            for o in owned {
                writer_lease::release(
                    &inner.parts[o.partition as usize].header().writer,
                    o.writer.lease_word(),
                );
            }
        };
        for p in wanted {
            if any.is_some_and(|k| owned.len() as u32 >= k) {
                break;
            }
            let part = match inner.partition(p) {
                Ok(part) => part,
                Err(e) => {
                    release_all(&owned);
                    return Err(e);
                }
            };
            if owned.iter().any(|o| o.partition == p) {
                continue;
            }
            let hdr = part.header();
            match writer_lease::claim(&hdr.writer, me, |owner| token::probe(&ns, owner).is_dead()) {
                Ok(claimed) => {
                    if claimed.took_over_from.is_some() {
                        hdr.takeovers.fetch_add(1, Ordering::Relaxed);
                    }
                    let writer = ring::Writer::resume(hdr, &part.slots(), claimed.word, || {
                        std::thread::sleep(std::time::Duration::from_millis(1))
                    });
                    owned.push(Owned {
                        partition: p,
                        writer,
                        limit: 0,
                    });
                }
                Err(Held { owner, epoch }) => {
                    if any.is_some() {
                        continue;
                    }
                    release_all(&owned);
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
        if let Some(k) = any {
            if (owned.len() as u32) < k {
                release_all(&owned);
                return Err(Error::NoFreePartitions {
                    topic: inner.name.clone(),
                    wanted: k,
                    free: owned.len() as u32,
                });
            }
        }
        if owned.is_empty() {
            return Err(Error::InvalidConfig(
                "a producer needs at least one partition".into(),
            ));
        }
        let mut by_partition = vec![usize::MAX; n as usize];
        for (i, o) in owned.iter().enumerate() {
            by_partition[o.partition as usize] = i;
        }
        Ok(Producer {
            topic: topic.clone(),
            owned,
            by_partition,
            rr: 0,
            slot_size: inner.config.slot_size as usize,
            backpressure: inner.config.overflow == crate::config::Overflow::Backpressure,
            send_timeout: None,
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

    /// Send a keyed record to partition [`key_partition`]`(key, partitions)`,
    /// so all records of one key keep their order.
    ///
    /// # Errors
    /// As [`Producer::send`], and [`Error::NotOwned`] if this producer does
    /// not write the key's partition.
    pub fn send_keyed(&mut self, key: &[u8], value: &[u8]) -> Result<Sent> {
        let p = key_partition(key, self.topic.partitions());
        let i = self.index_of(p)?;
        self.send_at(i, Some(key), value)
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

    fn next_rr(&mut self) -> usize {
        let i = self.rr;
        self.rr = if i + 1 >= self.owned.len() { 0 } else { i + 1 };
        i
    }

    fn index_of(&self, partition: u32) -> Result<usize> {
        match self.by_partition.get(partition as usize) {
            Some(&i) if i != usize::MAX => Ok(i),
            Some(_) => Err(Error::NotOwned {
                topic: self.topic.name().to_string(),
                partition,
                held: self.partitions(),
            }),
            None => Err(self.topic.inner.partition(partition).unwrap_err()),
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
        let part = &inner.parts[o.partition as usize];
        let hdr = part.header();
        let slots = part.slots();
        o.writer
            .check(hdr, &slots)
            .map_err(|e| inner.write_error(o.partition, e))?;
        if self.backpressure && o.writer.next_offset() >= o.limit {
            o.limit = backpressure::wait_for_room(
                inner,
                o.partition,
                o.writer.next_offset(),
                self.send_timeout,
            )?;
        }
        let offset = o
            .writer
            .write_slot(hdr, &slots, os::realtime_ns(), key, value)
            .map_err(|e| inner.write_error(o.partition, e))?;
        if o.writer.commit(hdr) {
            wait::wake_all(inner.meta.meta_header());
        }
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
        let part = &inner.parts[o.partition as usize];
        let hdr = part.header();
        let slots = part.slots();
        o.writer
            .check(hdr, &slots)
            .map_err(|e| inner.write_error(o.partition, e))?;
        let first_offset = o.writer.next_offset();
        let now = os::realtime_ns();
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
        result.map(|()| SentBatch {
            partition: o.partition,
            first_offset,
            count: values.len(),
        })
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        for o in &self.owned {
            writer_lease::release(
                &self.topic.inner.parts[o.partition as usize].header().writer,
                o.writer.lease_word(),
            );
        }
    }
}
