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
//! ## Where to start
//!
//! 1. [`TopicManager`]: the entry point, one per process and namespace
//!    ([`TopicManager::new`] reads `SHMQ_NAMESPACE`). It creates, opens,
//!    lists and deletes topics, each configured by a [`TopicConfig`]
//!    (partitions, slots, slot size, [`Overflow`] policy, retention).
//! 2. [`Topic`]: an open topic; cheap to clone, kept alive (and its lease
//!    renewed, see [`RenewalPolicy`]) while anything uses it.
//!    [`Topic::stats`] shows offsets, writers and groups ([`TopicStats`]).
//! 3. Writing: a [`Producer`] holds the writer lease of the partitions it
//!    writes ([`Partitions`]): [`Producer::send`], [`Producer::send_keyed`]
//!    (same key, same partition), [`Producer::send_batch`], or
//!    [`Producer::loan`] to write a record in place.
//! 4. Reading, three ways:
//!    * [`Consumer`]: reads the partitions you assign, by offset, and
//!      commits them for its group ([`OffsetStore`]); [`Consumer::poll`],
//!      [`Consumer::recv`], [`Consumer::poll_with`] (zero-copy).
//!    * [`ConsumerGroup`] / [`GroupConsumer`]: the members of a group share
//!      the partitions between them and rebalance when one comes or goes.
//!    * [`CompetingConsumer`]: several consumers take records of one
//!      partition from a shared cursor (a work queue).
//! 5. Failures: [`DlqRouter`] counts nacks and moves a record that keeps
//!    failing to a dead-letter topic.
//! 6. Async (cargo feature `tokio`): `AsyncConsumer`, `AsyncGroupConsumer`
//!    and `AsyncCompetingConsumer` are `Stream`s with `recv().await`, and
//!    `AsyncProducer::send(..).await` waits for room without blocking a
//!    runtime thread. Blocking code can iterate: [`Consumer::iter`].
//! 7. Beyond bytes: [`Headers`] on every record ([`Producer::send_with`],
//!    [`Record::headers`]); in-place filters ([`Consumer::poll_filtered`]);
//!    [`Requester`] / [`Responder`] for request/reply; typed values over
//!    serde codecs in `typed` (feature `serde`).
//!
//! Every fallible call returns [`Error`], whose messages say what to do.
//! Loss is reported, not raised: [`Polled::lagged`] on overwrite topics,
//! [`Polled::corrupt`] for records a faulty peer garbled.
//!
//! The shared-memory layout and the lock-free protocols (used by the
//! `shmq` tool, the tests and the loom models) live in a hidden `protocol`
//! module; they are not part of the API.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

mod sync;

mod group_protocol;
mod growth;
mod layout;
mod lease;
mod ring;
mod writer_lease;

/// Internals: the shared-memory layout, the lock-free protocols, every
/// system call, region names and the supervisor's pass. Public for the
/// `shmq` tool, the tests and the loom models only; not part of the API and
/// not stable.
#[doc(hidden)]
pub mod protocol {
    /// See the crate's `group_protocol` module.
    pub mod group_protocol {
        pub use crate::group_protocol::*;
    }
    /// See the crate's `growth` module.
    pub mod growth {
        pub use crate::growth::*;
    }
    /// See the crate's `layout` module.
    pub mod layout {
        pub use crate::layout::*;
    }
    /// See the crate's `lease` module.
    pub mod lease {
        pub use crate::lease::*;
    }
    /// See the crate's `ring` module.
    pub mod ring {
        pub use crate::ring::*;
    }
    /// See the crate's `writer_lease` module.
    pub mod writer_lease {
        pub use crate::writer_lease::*;
    }
    /// See the crate's `name` module.
    #[cfg(not(loom))]
    pub mod name {
        pub use crate::name::*;
    }
    /// See the crate's `os` module.
    #[cfg(not(loom))]
    pub mod os {
        pub use crate::os::*;
    }
    /// See the crate's `reclaim` module.
    #[cfg(not(loom))]
    pub mod reclaim {
        pub use crate::reclaim::*;
    }
    /// See the crate's `region` module.
    #[cfg(not(loom))]
    pub mod region {
        pub use crate::region::*;
    }
    /// See the crate's `stats` module.
    #[cfg(not(loom))]
    pub mod stats {
        pub use crate::stats::*;
    }
    /// See the crate's `token` module.
    #[cfg(not(loom))]
    pub mod token {
        pub use crate::token::*;
    }
    /// See the crate's `storage` module.
    #[cfg(not(loom))]
    pub mod storage {
        pub use crate::storage::*;
    }
}

#[cfg(all(not(loom), feature = "tokio"))]
mod asynk;
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
mod filter;
#[cfg(not(loom))]
mod group;
#[cfg(not(loom))]
mod group_table;
#[cfg(not(loom))]
mod headers;
#[cfg(not(loom))]
mod iter;
#[cfg(not(loom))]
mod name;
#[cfg(not(loom))]
mod offset;
#[cfg(not(loom))]
mod os;
#[cfg(not(loom))]
mod producer;
#[cfg(not(loom))]
mod reclaim;
#[cfg(not(loom))]
mod region;
#[cfg(not(loom))]
mod renewal;
#[cfg(not(loom))]
mod request;
#[cfg(not(loom))]
mod slots;
#[cfg(not(loom))]
mod stats;
#[cfg(not(loom))]
mod storage;
#[cfg(not(loom))]
mod token;
#[cfg(not(loom))]
mod topic;
#[cfg(all(not(loom), feature = "serde"))]
pub mod typed;
#[cfg(not(loom))]
mod wait;
#[cfg(not(loom))]
mod zero_copy;

#[cfg(all(not(loom), feature = "tokio"))]
pub use asynk::{AsyncCompetingConsumer, AsyncConsumer, AsyncGroupConsumer, AsyncProducer};
#[cfg(not(loom))]
pub use capacity::MEMORY_SHARE_PERCENT;
#[cfg(not(loom))]
pub use competing::CompetingConsumer;
#[cfg(not(loom))]
pub use config::Timestamp;
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
pub use headers::{HeaderIter, HeaderView, Headers, MAX_HEADERS, MAX_HEADER_NAME};
#[cfg(not(loom))]
pub use iter::Iter;
/// The shape of a partition ring ([`TopicConfig::validate`] returns it).
#[cfg(not(loom))]
pub use layout::Geometry;
#[cfg(not(loom))]
pub use offset::{MemOffsetStore, OffsetStore, ShmOffsetStore};
#[cfg(not(loom))]
pub use producer::{key_partition, Partitions, Producer, Sent, SentBatch};
#[cfg(not(loom))]
pub use renewal::{RenewalManager, RenewalPolicy};
#[cfg(not(loom))]
pub use request::{
    correlation, service_config, Request, Requester, Responder, CORRELATION_HEADER, REPLY_TO_HEADER,
};
#[cfg(not(loom))]
pub use ring::RecordBuf;
#[cfg(not(loom))]
pub use stats::{
    GroupPartitionStats, GroupStats, MemberStats, PartitionStats, TopicStats, WriterInfo,
};
#[cfg(not(loom))]
pub use storage::{Storage, SyncPolicy, DATA_DIR_ENV};
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

#[cfg(not(loom))]
mod batch;
#[cfg(not(loom))]
pub use batch::RecordBatch;
#[cfg(not(loom))]
pub use wait::Adaptive;
#[cfg(not(loom))]
#[doc(hidden)]
pub use wait::{Pacer, WaitCounters};
