//! Topic configuration.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::layout::{self, Geometry, DEFAULT_MAX_PARTITIONS, MAX_PARTITIONS};

/// What the writer does when the ring is full.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Overflow {
    /// Overwrite the oldest record; lagging readers are told how many they
    /// missed. The writer never waits. The default, for latency-critical use.
    #[default]
    Overwrite,
    /// Never pass the slowest live consumer group's committed offset by a full
    /// ring: `try_send` reports `Full`, `send` waits.
    Backpressure,
}

impl Overflow {
    pub(crate) fn code(self) -> u32 {
        match self {
            Overflow::Overwrite => layout::OVERFLOW_OVERWRITE,
            Overflow::Backpressure => layout::OVERFLOW_BACKPRESSURE,
        }
    }
    pub(crate) fn from_code(code: u32) -> Option<Overflow> {
        match code {
            layout::OVERFLOW_OVERWRITE => Some(Overflow::Overwrite),
            layout::OVERFLOW_BACKPRESSURE => Some(Overflow::Backpressure),
            _ => None,
        }
    }
}

/// Configuration of a topic, fixed at creation and stored in its meta region
/// so that any process can open the topic by name alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicConfig {
    /// Number of partitions the topic is created with (1 ..= 256). Default 4.
    /// The topic grows beyond it when a producer finds no free partition
    /// (see [`TopicConfig::max_partitions`]).
    pub partitions: u32,
    /// Slots per partition ring, a power of two (2 ..= 2^24). Default 1024.
    pub slots: u64,
    /// Largest key + value in bytes one slot holds (1 ..= 1 GiB). Default 1000
    /// (a slot then takes 1024 bytes with its 24-byte header).
    pub slot_size: u64,
    /// Retention = lease TTL: how long the topic survives without any attached
    /// process renewing it. Default 1 hour.
    pub retention: Duration,
    /// Overflow policy. Default [`Overflow::Overwrite`].
    pub overflow: Overflow,
    /// File mode of the regions. Default `0o600` (owner only).
    pub mode: u32,
    /// For [`Overflow::Backpressure`]: how long a group whose members are all
    /// gone keeps holding the writer back. Default 30 s.
    pub dead_group_timeout: Duration,
    /// How many partitions the topic may grow to (up to 256): a producer
    /// that finds every partition held by a live producer adds one, up to
    /// this. A value below `partitions` is raised to it. The meta region
    /// reserves a 64-byte line per possible partition in every consumer
    /// group. Default 64.
    pub max_partitions: u32,
}

impl Default for TopicConfig {
    fn default() -> Self {
        TopicConfig {
            partitions: 4,
            slots: 1024,
            slot_size: 1000,
            retention: Duration::from_secs(3600),
            overflow: Overflow::Overwrite,
            mode: 0o600,
            dead_group_timeout: Duration::from_secs(30),
            max_partitions: DEFAULT_MAX_PARTITIONS,
        }
    }
}

/// Largest slot payload accepted.
pub const MAX_SLOT_SIZE: u64 = 1 << 30;
/// Largest slot count accepted.
pub const MAX_SLOTS: u64 = 1 << 24;
/// Largest partition region accepted (bytes).
pub const MAX_PARTITION_BYTES: u64 = 64 << 30;

impl TopicConfig {
    /// Set the partition count.
    pub fn partitions(mut self, n: u32) -> Self {
        self.partitions = n;
        self
    }
    /// Set the slot count.
    pub fn slots(mut self, n: u64) -> Self {
        self.slots = n;
        self
    }
    /// Set the slot payload size.
    pub fn slot_size(mut self, bytes: u64) -> Self {
        self.slot_size = bytes;
        self
    }
    /// Set the retention (lease TTL).
    pub fn retention(mut self, d: Duration) -> Self {
        self.retention = d;
        self
    }
    /// Set the overflow policy.
    pub fn overflow(mut self, o: Overflow) -> Self {
        self.overflow = o;
        self
    }
    /// Set the region file mode.
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }
    /// Set how many partitions the topic may grow to.
    pub fn max_partitions(mut self, n: u32) -> Self {
        self.max_partitions = n;
        self
    }

    /// The partition count the topic may grow to: `max_partitions`, but at
    /// least `partitions`.
    pub fn effective_max_partitions(&self) -> u32 {
        self.max_partitions.max(self.partitions)
    }

    /// Check every field; returns the partition ring geometry.
    pub fn validate(&self) -> Result<Geometry> {
        let bad = |m: String| Err(Error::InvalidConfig(m));
        if self.partitions == 0 || self.partitions > MAX_PARTITIONS {
            return bad(format!(
                "partitions = {}; must be 1 ..= {MAX_PARTITIONS}",
                self.partitions
            ));
        }
        if self.max_partitions > MAX_PARTITIONS {
            return bad(format!(
                "max_partitions = {}; must be at most {MAX_PARTITIONS}",
                self.max_partitions
            ));
        }
        if self.slots < 2 || self.slots > MAX_SLOTS || !self.slots.is_power_of_two() {
            return bad(format!(
                "slots = {}; must be a power of two in 2 ..= {MAX_SLOTS}",
                self.slots
            ));
        }
        if self.slot_size == 0 || self.slot_size > MAX_SLOT_SIZE {
            return bad(format!(
                "slot_size = {}; must be 1 ..= {MAX_SLOT_SIZE}",
                self.slot_size
            ));
        }
        if self.retention < Duration::from_millis(10)
            || self.retention > Duration::from_secs(10 * 365 * 86400)
        {
            return bad(format!(
                "retention = {:?}; must be between 10 ms and 10 years",
                self.retention
            ));
        }
        if self.mode & !0o666 != 0 || self.mode & 0o600 != 0o600 {
            return bad(format!(
                "mode = {:o}; must include owner read/write (0o600) and no execute or special bits",
                self.mode
            ));
        }
        if self.dead_group_timeout.as_millis() > u128::from(u32::MAX) {
            return bad("dead_group_timeout too large".into());
        }
        let geo = Geometry::new(self.slots, self.slot_size)
            .filter(|g| g.region_len as u64 <= MAX_PARTITION_BYTES)
            .ok_or_else(|| {
                Error::InvalidConfig(format!(
                    "{} slots of {} bytes exceed the {} GiB partition limit",
                    self.slots,
                    self.slot_size,
                    MAX_PARTITION_BYTES >> 30
                ))
            });
        geo
    }
}
