//! Dead-letter routing: nack a record to have it delivered again; after
//! `max_retries` nacks it goes to a dead-letter topic instead, wrapped in an
//! envelope that says where it came from, and the consumer moves on.
//!
//! # Envelope format
//!
//! A dead letter is an ordinary record of the DLQ topic. Its **value** is the
//! original value, unchanged. Its **key** carries the origin, all integers
//! little-endian:
//!
//! ```text
//!  byte 0        8          12         16               24               32        34       36        40
//!       +--------+----------+----------+----------------+----------------+---------+--------+---------+
//!       |"SHMQDLQ1"|partition| retries | offset (u64)   | timestamp_ns   |topic_len| flags  | reserved|
//!       | magic  | u32      | u32      | in the source  | of the original| u16     | u16    | u32 = 0 |
//!       +--------+----------+----------+----------------+----------------+---------+--------+---------+
//!  40   | source topic name (topic_len bytes) | original key (rest; present iff flags bit 0) |
//! ```
//!
//! [`DeadLetter::from_record`] decodes it (checking every length), and
//! [`DeadLetter::encode_key`] builds it. The DLQ topic (by default
//! `<topic>-dlq`, see [`DlqRouter::new`]) is created with the source's
//! partition count, slot count and retention (so it has the same
//! lease-scoped lifetime), slots [`ENVELOPE_OVERHEAD`] bytes larger, and the
//! `Overwrite` policy: like any ring it keeps the newest dead letters.
//!
//! Nack counts are kept per (partition, offset) in the router, i.e. in this
//! process (a restarted consumer starts counting again); every nack also
//! bumps the group's shared `nacks` counter and every dead letter its
//! `dead_lettered` counter, which [`crate::Topic::stats`] reports.

use std::collections::HashMap;
use std::time::Duration;

use crate::competing::CompetingConsumer;
use crate::config::{Overflow, TopicConfig};
use crate::consumer::{Consumer, Record, SeekPolicy};
use crate::deadline::Deadline;
use crate::error::{Error, Result};
use crate::group::GroupConsumer;
use crate::group_table;
use crate::name;
use crate::producer::{Partitions, Producer, Sent};
use crate::sync::Ordering;
use crate::topic::{Topic, TopicManager};

/// Suffix of the default DLQ topic name.
pub const DLQ_SUFFIX: &str = "-dlq";
/// First 8 bytes of every envelope key.
pub const ENVELOPE_MAGIC: [u8; 8] = *b"SHMQDLQ1";
/// Bytes of the fixed part of an envelope key.
pub const ENVELOPE_HEADER: usize = 40;
/// Extra slot bytes a DLQ topic needs over its source: the fixed header plus
/// the longest topic name.
pub const ENVELOPE_OVERHEAD: u64 = (ENVELOPE_HEADER + name::TOPIC_MAX) as u64;
/// How long routing waits for a free partition of the DLQ topic (another
/// router may be writing it) by default.
pub const DEFAULT_ROUTE_TIMEOUT: Duration = Duration::from_secs(2);

const FLAG_HAS_KEY: u16 = 1;

/// A record of a DLQ topic that is not a valid envelope.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a shmq dead-letter envelope: {0}")]
pub struct EnvelopeError(pub String);

/// A dead letter: a record that failed `retries` times, with its origin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    /// Source topic.
    pub topic: String,
    /// Source partition.
    pub partition: u32,
    /// Offset in the source partition.
    pub offset: u64,
    /// Nacks it received before it was routed.
    pub retries: u32,
    /// When the producer originally sent it (Unix ns).
    pub timestamp_ns: u64,
    /// Original key, if it had one.
    pub key: Option<Vec<u8>>,
    /// Original value.
    pub value: Vec<u8>,
}

impl DeadLetter {
    /// The dead letter of `record` from `topic` after `retries` nacks.
    pub fn new(topic: &str, record: &Record, retries: u32) -> DeadLetter {
        DeadLetter {
            topic: topic.to_string(),
            partition: record.partition,
            offset: record.offset,
            retries,
            timestamp_ns: record.timestamp_ns,
            key: record.key.clone(),
            value: record.value.clone(),
        }
    }

    /// The envelope key (see the module docs).
    pub fn encode_key(&self) -> Vec<u8> {
        let topic = self.topic.as_bytes();
        let key = self.key.as_deref().unwrap_or(&[]);
        let mut k = Vec::with_capacity(ENVELOPE_HEADER + topic.len() + key.len());
        k.extend_from_slice(&ENVELOPE_MAGIC);
        k.extend_from_slice(&self.partition.to_le_bytes());
        k.extend_from_slice(&self.retries.to_le_bytes());
        k.extend_from_slice(&self.offset.to_le_bytes());
        k.extend_from_slice(&self.timestamp_ns.to_le_bytes());
        k.extend_from_slice(&(topic.len().min(usize::from(u16::MAX)) as u16).to_le_bytes());
        let flags = if self.key.is_some() { FLAG_HAS_KEY } else { 0 };
        k.extend_from_slice(&flags.to_le_bytes());
        k.extend_from_slice(&0u32.to_le_bytes());
        k.extend_from_slice(topic);
        k.extend_from_slice(key);
        k
    }

    /// Decode a record read from a DLQ topic.
    ///
    /// # Errors
    /// [`EnvelopeError`] if the key is missing, too short, has the wrong
    /// magic, or its lengths do not add up.
    pub fn from_record(record: &Record) -> std::result::Result<DeadLetter, EnvelopeError> {
        Self::decode(record.key.as_deref(), &record.value)
    }

    /// Decode an envelope from its key and value.
    ///
    /// # Errors
    /// As [`DeadLetter::from_record`].
    pub fn decode(
        key: Option<&[u8]>,
        value: &[u8],
    ) -> std::result::Result<DeadLetter, EnvelopeError> {
        let bad = |m: &str| EnvelopeError(m.to_string());
        let k = key.ok_or_else(|| bad("the record has no key"))?;
        if k.len() < ENVELOPE_HEADER {
            return Err(bad("key shorter than the envelope header"));
        }
        if k[..8] != ENVELOPE_MAGIC {
            return Err(bad("wrong magic"));
        }
        let u32_at = |i: usize| u32::from_le_bytes([k[i], k[i + 1], k[i + 2], k[i + 3]]);
        let u64_at = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&k[i..i + 8]);
            u64::from_le_bytes(b)
        };
        let topic_len = usize::from(u16::from_le_bytes([k[32], k[33]]));
        let flags = u16::from_le_bytes([k[34], k[35]]);
        let rest = &k[ENVELOPE_HEADER..];
        if topic_len > rest.len() || topic_len > name::TOPIC_MAX {
            return Err(bad("topic length beyond the key"));
        }
        let topic = std::str::from_utf8(&rest[..topic_len])
            .map_err(|_| bad("topic name is not UTF-8"))?
            .to_string();
        let orig_key = &rest[topic_len..];
        let key = if flags & FLAG_HAS_KEY != 0 {
            Some(orig_key.to_vec())
        } else if orig_key.is_empty() {
            None
        } else {
            return Err(bad("key bytes present but the has-key flag is clear"));
        };
        Ok(DeadLetter {
            topic,
            partition: u32_at(8),
            retries: u32_at(12),
            offset: u64_at(16),
            timestamp_ns: u64_at(24),
            key,
            value: value.to_vec(),
        })
    }
}

/// A consumer that can be asked to deliver a record again (what a nack does
/// until the retries are used up).
pub trait Redeliver {
    /// Arrange for the record at (`partition`, `offset`) to be delivered
    /// again by a coming poll.
    ///
    /// # Errors
    /// Consumer-specific.
    fn redeliver(&mut self, partition: u32, offset: u64) -> Result<()>;
}

impl Redeliver for Consumer {
    /// Seeks the partition back to `offset`: the records after it on that
    /// partition are delivered again too (skip the rest of the batch for that
    /// partition).
    fn redeliver(&mut self, partition: u32, offset: u64) -> Result<()> {
        self.seek_partition(partition, SeekPolicy::Offset(offset))
    }
}

impl Redeliver for GroupConsumer {
    /// As for [`Consumer`]; a partition no longer assigned is the new owner's
    /// to redeliver (it starts at the committed offset), so that is not an
    /// error.
    fn redeliver(&mut self, partition: u32, offset: u64) -> Result<()> {
        match self.seek_partition(partition, SeekPolicy::Offset(offset)) {
            Err(Error::NoSuchPartition { .. }) if self.position(partition).is_none() => Ok(()),
            r => r,
        }
    }
}

impl Redeliver for CompetingConsumer {
    /// Queues just that offset for this consumer's next poll.
    fn redeliver(&mut self, partition: u32, offset: u64) -> Result<()> {
        if partition != self.partition() {
            return Err(Error::NoSuchPartition {
                topic: self.topic().name().to_string(),
                partition,
                partitions: self.topic().partitions(),
            });
        }
        self.retry(offset);
        Ok(())
    }
}

/// What a nack did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nacked {
    /// The record will be delivered again; this was nack number `attempt`.
    Redeliver {
        /// Nacks so far (`1 ..= max_retries - 1`).
        attempt: u32,
    },
    /// Retries used up: the record was written to the DLQ topic. Its source
    /// offset may now be committed.
    DeadLettered {
        /// Nacks it received.
        retries: u32,
        /// Where the dead letter went in the DLQ topic.
        sent: Sent,
    },
}

/// Counts nacks per (partition, offset) and routes a record to the DLQ
/// topic when its nacks reach `max_retries`.
///
/// # Examples
/// ```no_run
/// # let mgr = shmq::TopicManager::new()?;
/// # fn process(_: &[u8]) -> Result<(), ()> { Ok(()) }
/// use shmq::{DlqRouter, GroupConsumer, GroupOptions, Nacked};
/// use std::time::Duration;
/// let topic = mgr.open_or_create("orders", shmq::TopicConfig::default())?;
/// let mut consumer = GroupConsumer::join(&topic, "billing", GroupOptions::default())?;
/// let mut dlq = DlqRouter::new(&mgr, &topic, "billing", 3)?; // "orders-dlq"
/// let batch = consumer.poll_timeout(1, Duration::from_millis(100))?;
/// for record in &batch.records {
///     match process(&record.value) {
///         Ok(()) => dlq.ack(record),
///         Err(()) => match dlq.nack(&mut consumer, record)? {
///             Nacked::Redeliver { attempt } => eprintln!("retry #{attempt}"),
///             Nacked::DeadLettered { sent, .. } => eprintln!("dead letter at {sent:?}"),
///         },
///     }
/// }
/// consumer.commit()?;
/// # Ok::<(), shmq::Error>(())
/// ```
pub struct DlqRouter {
    source: Topic,
    group: String,
    g: u32,
    dlq: Topic,
    max_retries: u32,
    counts: HashMap<(u32, u64), u32>,
    route_timeout: Duration,
}

impl std::fmt::Debug for DlqRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DlqRouter")
            .field("source", &self.source.name())
            .field("group", &self.group)
            .field("dlq", &self.dlq.name())
            .field("max_retries", &self.max_retries)
            .field("tracked", &self.counts.len())
            .finish()
    }
}

/// Above this many tracked records, counts of already committed offsets are
/// dropped.
const PRUNE_AT: usize = 1 << 16;

impl DlqRouter {
    /// A router for `group` on `source` into the topic `<source>-dlq`, opened
    /// or created with [`DlqRouter::dlq_config`]. A record is dead-lettered
    /// by its `max_retries`-th nack (so it is delivered at most
    /// `max_retries` times).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] if `max_retries` is 0, [`Error::InvalidName`]
    /// if the source name is too long for the suffix, the errors of
    /// [`TopicManager::open_or_create`], [`Error::GroupTableFull`].
    pub fn new(
        mgr: &TopicManager,
        source: &Topic,
        group: &str,
        max_retries: u32,
    ) -> Result<DlqRouter> {
        let name = format!("{}{DLQ_SUFFIX}", source.name());
        let dlq = mgr.open_or_create(&name, Self::dlq_config(source.config()))?;
        Self::with_dlq_topic(source, group, &dlq, max_retries)
    }

    /// A router into a DLQ topic of your choice (its slots must hold
    /// [`ENVELOPE_OVERHEAD`] bytes more than the source's records).
    ///
    /// # Errors
    /// As [`DlqRouter::new`].
    pub fn with_dlq_topic(
        source: &Topic,
        group: &str,
        dlq: &Topic,
        max_retries: u32,
    ) -> Result<DlqRouter> {
        if max_retries == 0 {
            return Err(Error::InvalidConfig(
                "max_retries must be at least 1 (the nack that reaches it dead-letters)".into(),
            ));
        }
        let g = group_table::find_or_create(&source.inner, group)?;
        Ok(DlqRouter {
            source: source.clone(),
            group: group.to_string(),
            g,
            dlq: dlq.clone(),
            max_retries,
            counts: HashMap::new(),
            route_timeout: DEFAULT_ROUTE_TIMEOUT,
        })
    }

    /// Bound how long routing waits for a free DLQ partition (default 2 s;
    /// `Duration::MAX`: as long as it takes).
    pub fn with_route_timeout(mut self, timeout: Duration) -> Self {
        self.route_timeout = timeout;
        self
    }

    /// The configuration [`DlqRouter::new`] creates the DLQ topic with:
    /// the source's partitions, slots, retention, mode and dead-group
    /// timeout, slots larger by [`ENVELOPE_OVERHEAD`], `Overwrite`.
    pub fn dlq_config(source: &TopicConfig) -> TopicConfig {
        TopicConfig {
            slot_size: source.slot_size.saturating_add(ENVELOPE_OVERHEAD),
            overflow: Overflow::Overwrite,
            ..source.clone()
        }
    }

    /// The DLQ topic.
    pub fn dlq_topic(&self) -> &Topic {
        &self.dlq
    }

    /// The nack count that dead-letters a record.
    pub fn max_retries(&self) -> u32 {
        self.max_retries
    }

    /// Nacks recorded so far for (`partition`, `offset`) by this router.
    pub fn nacks(&self, partition: u32, offset: u64) -> u32 {
        self.counts.get(&(partition, offset)).copied().unwrap_or(0)
    }

    /// The record was processed: forget its nack count.
    pub fn ack(&mut self, record: &Record) {
        self.counts.remove(&(record.partition, record.offset));
    }

    /// Record a failed attempt at `record`. Below `max_retries` nacks the
    /// consumer is told to deliver it again ([`Redeliver`]); the nack that
    /// reaches `max_retries` writes it to the DLQ topic instead and the
    /// consumer continues after it. Bumps the group's shared `nacks` (and
    /// `dead_lettered`) counters.
    ///
    /// With a [`Consumer`] or [`GroupConsumer`], a redelivery seeks the
    /// partition back: skip the rest of the current batch for that partition.
    ///
    /// # Errors
    /// [`Error::NoSuchPartition`], the consumer's redelivery errors, and
    /// those of [`DlqRouter::route`].
    pub fn nack<C: Redeliver + ?Sized>(
        &mut self,
        consumer: &mut C,
        record: &Record,
    ) -> Result<Nacked> {
        self.source.inner.partition(record.partition)?;
        let gp = &self.source.inner.group(self.g).partitions[record.partition as usize];
        gp.nacks.fetch_add(1, Ordering::Relaxed);
        let n = {
            let c = self
                .counts
                .entry((record.partition, record.offset))
                .or_insert(0);
            *c = c.saturating_add(1);
            *c
        };
        if n >= self.max_retries {
            let sent = self.route(record, n)?;
            self.counts.remove(&(record.partition, record.offset));
            return Ok(Nacked::DeadLettered { retries: n, sent });
        }
        consumer.redeliver(record.partition, record.offset)?;
        self.prune();
        Ok(Nacked::Redeliver { attempt: n })
    }

    fn prune(&mut self) {
        if self.counts.len() < PRUNE_AT {
            return;
        }
        let view = self.source.inner.group(self.g);
        self.counts.retain(|&(p, o), _| {
            let committed = view.partitions.get(p as usize).map_or(0, |gp| {
                gp.committed.load(Ordering::Acquire).saturating_sub(1)
            });
            o >= committed
        });
    }

    /// Write `record` to the DLQ topic now, as a dead letter with `retries`
    /// nacks, and count it in the group's `dead_lettered`. Takes any DLQ
    /// partition without a live writer for the one write (waiting up to the
    /// route timeout if other routers hold them all).
    ///
    /// # Errors
    /// [`Error::MessageTooLarge`] if the envelope does not fit the DLQ
    /// topic's slots, [`Error::NoFreePartitions`] after the route timeout,
    /// [`Error::LeaseExpired`], [`Error::NoSuchPartition`].
    pub fn route(&mut self, record: &Record, retries: u32) -> Result<Sent> {
        self.source.inner.partition(record.partition)?;
        let letter = DeadLetter::new(self.source.name(), record, retries);
        let key = letter.encode_key();
        let deadline = Deadline::after(self.route_timeout);
        let mut producer = loop {
            match Producer::with_partitions(&self.dlq, Partitions::AnyFree(1)) {
                Ok(p) => break p,
                Err(Error::NoFreePartitions { .. }) if !deadline.passed() => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => return Err(e),
            }
        }
        .with_send_timeout(Some(self.route_timeout));
        let p = producer.partitions()[0];
        // The record's headers go with it (a typed record's compression
        // mark among them, so the dead letter still decodes).
        let sent = producer.send_with_to(p, Some(&key), &record.headers, &record.value)?;
        drop(producer);
        self.source.inner.group(self.g).partitions[record.partition as usize]
            .dead_lettered
            .fetch_add(1, Ordering::Relaxed);
        Ok(sent)
    }
}
