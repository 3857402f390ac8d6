//! Topic configuration.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::layout::{
    self, Geometry, DEFAULT_MAX_PARTITIONS, GROUP_CAPACITY, MAX_GROUP_CAPACITY,
    MAX_MEMBER_CAPACITY, MAX_PARTITIONS, MEMBER_CAPACITY,
};
use crate::storage::{Storage, SyncPolicy};

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

/// Which clock stamps each record's `timestamp` (see
/// [`TopicConfig::timestamp`]).
///
/// The default is [`Timestamp::Coarse`]: measured on the 2-vCPU bench
/// machine, reading `CLOCK_REALTIME` costs 20–68 ns per send (vDSO + TSC),
/// more than all the rest of an in-process `send` (about 30 ns), while
/// `CLOCK_REALTIME_COARSE` costs 5–11 ns. A send on a 64-byte record took
/// 77–89 ns with `Realtime`, 32–34 ns with `Coarse`, 23–30 ns with `None`.
/// Coarse stamps are Unix time at the kernel tick (4 ms here), enough to say
/// when a record was produced; choose `Realtime` to measure latency from
/// record timestamps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Timestamp {
    /// `CLOCK_REALTIME` (vDSO, no syscall): nanosecond Unix time, 20–68 ns
    /// per send on the bench machine.
    Realtime,
    /// `CLOCK_REALTIME_COARSE` (vDSO, no TSC read): Unix time at the
    /// resolution of the kernel tick (1–10 ms; 4 ms on the bench machine),
    /// 5–11 ns per send. The default.
    #[default]
    Coarse,
    /// No clock read: every record's timestamp is 0.
    None,
}

impl Timestamp {
    pub(crate) fn code(self) -> u32 {
        match self {
            Timestamp::Realtime => layout::TIMESTAMP_REALTIME,
            Timestamp::Coarse => layout::TIMESTAMP_COARSE,
            Timestamp::None => layout::TIMESTAMP_NONE,
        }
    }
    pub(crate) fn from_code(code: u32) -> Option<Timestamp> {
        match code {
            layout::TIMESTAMP_REALTIME => Some(Timestamp::Realtime),
            layout::TIMESTAMP_COARSE => Some(Timestamp::Coarse),
            layout::TIMESTAMP_NONE => Some(Timestamp::None),
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
    /// A consumer group with no live member and no sign of life (join, poll,
    /// commit, heartbeat) for this long is freed, committed offsets and all
    /// (by the supervisor's pass, or when a new group finds the table full).
    /// `Duration::ZERO` = never. Default 1 hour; at most 49 days.
    pub group_retention: Duration,
    /// Capacity of the group table (1 ..= 1024). Default 16.
    pub max_groups: u32,
    /// Members per group (1 ..= 1024). Default 32.
    pub max_members: u32,
    /// How many partitions the topic may grow to (up to 256): a producer
    /// that finds every partition held by a live producer adds one, up to
    /// this. A value below `partitions` is raised to it. The meta region
    /// reserves a 64-byte line per possible partition in every consumer
    /// group. Default 64.
    pub max_partitions: u32,
    /// Where the regions live: shared memory (the default) or files in a
    /// data directory, which survive a reboot (durable topics; see the
    /// README's "Durability" section).
    pub storage: Storage,
    /// For durable topics: when writes and commits are forced to the disk.
    /// Default [`SyncPolicy::None`]. Ignored for shared memory.
    pub sync: SyncPolicy,
    /// For durable topics: whether the supervisor removes the files once
    /// the lease (`retention`) expires. Default `false`: a durable topic's
    /// files stay until it is deleted. Set by [`TopicConfig::retention`]
    /// (a topic "created with a retention"); shared-memory topics always
    /// expire.
    pub expire_files: bool,
    /// Which clock stamps each record. Default [`Timestamp::Coarse`].
    pub timestamp: Timestamp,
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
            group_retention: Duration::from_secs(3600),
            max_groups: GROUP_CAPACITY,
            max_members: MEMBER_CAPACITY,
            max_partitions: DEFAULT_MAX_PARTITIONS,
            storage: Storage::Shm,
            sync: SyncPolicy::None,
            expire_files: false,
            timestamp: Timestamp::Coarse,
        }
    }
}

/// Largest slot payload accepted.
pub const MAX_SLOT_SIZE: u64 = 1 << 30;
/// Largest slot count accepted.
pub const MAX_SLOTS: u64 = 1 << 24;
/// Largest partition region accepted (bytes).
pub const MAX_PARTITION_BYTES: u64 = 64 << 30;
/// Largest meta region (group tables) accepted (bytes).
pub const MAX_META_BYTES: u64 = 256 << 20;

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
    /// Set the retention (lease TTL). On a durable topic this also sets
    /// [`TopicConfig::expire_files`]: the supervisor removes its files once
    /// the lease expires.
    pub fn retention(mut self, d: Duration) -> Self {
        self.retention = d;
        self.expire_files = true;
        self
    }
    /// Keep the regions in `storage` (e.g. `Storage::File { dir }` for a
    /// durable topic).
    pub fn storage(mut self, storage: Storage) -> Self {
        self.storage = storage;
        self
    }
    /// Set the sync policy of a durable topic.
    pub fn sync(mut self, policy: SyncPolicy) -> Self {
        self.sync = policy;
        self
    }
    /// Set whether the supervisor removes a durable topic's files once its
    /// lease expires.
    pub fn expire_files(mut self, expire: bool) -> Self {
        self.expire_files = expire;
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
    /// Set the group retention (`Duration::ZERO` = never free idle groups).
    pub fn group_retention(mut self, d: Duration) -> Self {
        self.group_retention = d;
        self
    }
    /// Set the capacity of the group table.
    pub fn max_groups(mut self, n: u32) -> Self {
        self.max_groups = n;
        self
    }
    /// Set the capacity of each group's member table.
    pub fn max_members(mut self, n: u32) -> Self {
        self.max_members = n;
        self
    }
    /// Set how many partitions the topic may grow to.
    pub fn max_partitions(mut self, n: u32) -> Self {
        self.max_partitions = n;
        self
    }

    /// Choose the clock that stamps each record ([`Timestamp`]).
    pub fn timestamp(mut self, t: Timestamp) -> Self {
        self.timestamp = t;
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
        if self.group_retention.as_millis() > u128::from(u32::MAX)
            || (!self.group_retention.is_zero() && self.group_retention < Duration::from_millis(1))
        {
            return bad(format!(
                "group_retention = {:?}; must be 0 (never) or between 1 ms and {} ms (49 days)",
                self.group_retention,
                u32::MAX
            ));
        }
        if let SyncPolicy::Interval(d) = self.sync {
            if d.is_zero() || d.as_nanos() > u128::from(u64::MAX) {
                return bad(format!(
                    "sync interval = {d:?}; must be more than 0 (use SyncPolicy::EveryBatch to sync every batch)"
                ));
            }
        }
        if self.max_groups == 0 || self.max_groups > MAX_GROUP_CAPACITY {
            return bad(format!(
                "max_groups = {}; must be 1 ..= {MAX_GROUP_CAPACITY}",
                self.max_groups
            ));
        }
        if self.max_members == 0 || self.max_members > MAX_MEMBER_CAPACITY {
            return bad(format!(
                "max_members = {}; must be 1 ..= {MAX_MEMBER_CAPACITY}",
                self.max_members
            ));
        }
        let meta = layout::meta_region_len(self.partitions, self.max_groups, self.max_members);
        if meta as u64 > MAX_META_BYTES {
            return bad(format!(
                "{} groups x {} members need a {} MiB group table; the limit is {} MiB: lower --max-groups or --max-members",
                self.max_groups,
                self.max_members,
                meta >> 20,
                MAX_META_BYTES >> 20
            ));
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

/// One field in which an existing topic's configuration differs from the one
/// asked for (see [`crate::Error::ConfigMismatch`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigDifference {
    /// The [`TopicConfig`] field.
    pub field: &'static str,
    /// The value asked for.
    pub asked: String,
    /// The value the existing topic has.
    pub existing: String,
}

impl ConfigDifference {
    /// "field: asked A, existing B; ..." for error messages.
    pub(crate) fn list(differences: &[ConfigDifference]) -> String {
        differences
            .iter()
            .map(|d| format!("{}: asked {}, existing {}", d.field, d.asked, d.existing))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// How `open_or_create` compares the configuration it was asked for with
/// the one an existing topic was created with: every field, because every
/// field is stored in the topic and each changes what a caller gets —
/// partitions (key → partition mapping, parallelism), slots (how far a
/// reader may lag), slot_size (largest message), overflow (loss or
/// blocking), retention (how long the topic survives unattended), mode (who
/// may open it) and dead_group_timeout (how long a dead group holds a
/// backpressure writer back). Durations are compared as stored: retention in
/// nanoseconds, dead_group_timeout in whole milliseconds. Partitions are
/// compared with the count the topic was created with.
///
/// Returns the differences, empty if the configurations match.
pub(crate) fn differences(asked: &TopicConfig, existing: &TopicConfig) -> Vec<ConfigDifference> {
    fn ms(d: Duration) -> u128 {
        d.as_millis()
    }
    let mut out = Vec::new();
    let mut diff = |field: &'static str, asked: String, existing: String| {
        if asked != existing {
            out.push(ConfigDifference {
                field,
                asked,
                existing,
            });
        }
    };
    diff(
        "partitions",
        asked.partitions.to_string(),
        existing.partitions.to_string(),
    );
    diff("slots", asked.slots.to_string(), existing.slots.to_string());
    diff(
        "slot_size",
        asked.slot_size.to_string(),
        existing.slot_size.to_string(),
    );
    diff(
        "retention",
        format!("{:?}", asked.retention),
        format!("{:?}", existing.retention),
    );
    diff(
        "overflow",
        format!("{:?}", asked.overflow),
        format!("{:?}", existing.overflow),
    );
    diff(
        "mode",
        format!("{:#o}", asked.mode),
        format!("{:#o}", existing.mode),
    );
    diff(
        "dead_group_timeout",
        format!("{} ms", ms(asked.dead_group_timeout)),
        format!("{} ms", ms(existing.dead_group_timeout)),
    );
    diff(
        "storage",
        asked.storage.to_string(),
        existing.storage.to_string(),
    );
    diff(
        "timestamp",
        format!("{:?}", asked.timestamp),
        format!("{:?}", existing.timestamp),
    );
    if existing.storage.is_file() {
        diff("sync", asked.sync.to_string(), existing.sync.to_string());
        diff(
            "expire_files",
            asked.expire_files.to_string(),
            existing.expire_files.to_string(),
        );
    }
    out
}
