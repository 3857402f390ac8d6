//! # shmq — a lock-free shared-memory message queue for processes on one host
//!
//! Topics are made of partitions; each partition is a named POSIX
//! shared-memory region (`/dev/shm`) holding a single-producer /
//! multi-consumer ring of fixed-size slots. Consumers read by offset, like a
//! log: each consumer group has its own committed offsets, a lagging reader is
//! told exactly how many records it lost, and a torn record is never
//! delivered. Every region carries a lease; attached processes renew it and
//! the supervisor (`shmq supervise`) reclaims regions whose lease expired, so
//! an abandoned topic disappears without cleanup code.
//!
//! ```no_run
//! use shmq::{Consumer, Producer, TopicConfig, TopicManager};
//!
//! let mgr = TopicManager::new()?;
//! let topic = mgr.open_or_create("events", TopicConfig::default())?;
//! let mut producer = Producer::new(&topic)?;
//! producer.send(b"hello")?;
//!
//! let mut consumer = Consumer::new(&topic, "printer")?;
//! for record in consumer.poll(100)? {
//!     println!("{}@{} {:?}", record.partition, record.offset, record.value);
//! }
//! consumer.commit()?;
//! # Ok::<(), shmq::Error>(())
//! ```
//!
//! Module map: `layout` (every shared byte, drawn), `sync` (std/loom shim),
//! `ring`, `lease`, `writer_lease`, `growth` (the lock-free protocols), `os` (every
//! syscall), `region` and `slots` (the only other `unsafe`), then the API:
//! [`TopicManager`], [`Producer`], [`Consumer`], [`OffsetStore`].

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

mod sync;

pub mod group_protocol;
pub mod growth;
pub mod layout;
pub mod lease;
pub mod ring;
pub mod writer_lease;

#[cfg(not(loom))]
mod backpressure;
#[cfg(not(loom))]
mod capacity;
#[cfg(not(loom))]
mod competing;
#[cfg(not(loom))]
mod config;
#[cfg(not(loom))]
mod consumer;
#[cfg(not(loom))]
mod deadline;
#[cfg(not(loom))]
mod dlq;
#[cfg(not(loom))]
mod error;
#[cfg(not(loom))]
mod group;
#[cfg(not(loom))]
mod group_table;
#[cfg(not(loom))]
pub mod name;
#[cfg(not(loom))]
mod offset;
#[cfg(not(loom))]
pub mod os;
#[cfg(not(loom))]
mod producer;
#[cfg(not(loom))]
pub mod reclaim;
#[cfg(not(loom))]
pub mod region;
#[cfg(not(loom))]
mod renewal;
#[cfg(not(loom))]
mod slots;
#[cfg(not(loom))]
pub mod stats;
#[cfg(not(loom))]
pub mod token;
#[cfg(not(loom))]
mod topic;
#[cfg(not(loom))]
mod wait;
#[cfg(not(loom))]
mod zero_copy;

#[cfg(not(loom))]
pub use capacity::MEMORY_SHARE_PERCENT;
#[cfg(not(loom))]
pub use competing::CompetingConsumer;
#[cfg(not(loom))]
pub use config::{ConfigDifference, Overflow, TopicConfig};
#[cfg(not(loom))]
pub use consumer::{Consumer, Delivered, Lagged, Polled, Record, SeekPolicy};
#[cfg(not(loom))]
pub use dlq::{
    DeadLetter, DlqRouter, EnvelopeError, Nacked, Redeliver, DLQ_SUFFIX, ENVELOPE_HEADER,
    ENVELOPE_MAGIC, ENVELOPE_OVERHEAD,
};
#[cfg(not(loom))]
pub use error::{Error, RegionProblem, Result};
#[cfg(not(loom))]
pub use group::{ConsumerGroup, GroupConsumer, GroupOptions, DEFAULT_STALE_AFTER, MIN_STALE_AFTER};
#[cfg(not(loom))]
pub use offset::{MemOffsetStore, OffsetStore, ShmOffsetStore};
#[cfg(not(loom))]
pub use producer::{key_partition, Partitions, Producer, Sent, SentBatch};
#[cfg(not(loom))]
pub use renewal::{RenewalManager, RenewalPolicy};
#[cfg(not(loom))]
pub use ring::RecordBuf;
#[cfg(not(loom))]
pub use stats::{
    GroupPartitionStats, GroupStats, MemberStats, PartitionStats, TopicStats, WriterInfo,
};
#[cfg(not(loom))]
pub use topic::{Topic, TopicManager, NAMESPACE_ENV};
#[cfg(not(loom))]
pub use wait::WaitStrategy;
#[cfg(not(loom))]
#[doc(hidden)]
pub use wait::{wake_stats, WakeStats};
#[cfg(not(loom))]
pub use zero_copy::{Loan, RecordView, Viewed};

/// The README's Rust examples, compiled as doctests so they stay correct.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
