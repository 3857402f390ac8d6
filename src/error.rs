//! The one error type of the public API, with messages a user can act on.

use crate::os::OsError;

/// Why a region could not be attached.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegionProblem {
    /// The first 8 bytes are not shmq's magic: not a shmq region, or scribbled.
    #[error("wrong magic {found:#018x} (not a shmq region, or its header was overwritten)")]
    BadMagic {
        /// What was found.
        found: u64,
    },
    /// Written by an incompatible shmq version.
    #[error("layout version {found}, this build reads version {expected}; upgrade the older side or delete the topic")]
    BadVersion {
        /// Version in the region.
        found: u32,
        /// Version this build writes.
        expected: u32,
    },
    /// A meta region where a partition was expected, or the reverse.
    #[error("region kind {found}, expected {expected}")]
    WrongKind {
        /// Kind in the region.
        found: u32,
        /// Kind expected.
        expected: u32,
    },
    /// The object is smaller than its header says.
    #[error("region is {size} bytes but its header requires {expected}")]
    Truncated {
        /// Real size from `fstat`.
        size: u64,
        /// Size the header implies.
        expected: u64,
    },
    /// Header geometry fields are inconsistent.
    #[error("inconsistent geometry: {0}")]
    BadGeometry(String),
    /// The creator did not finish initialising it in time (or died doing so).
    #[error("not initialised after waiting {waited_ms} ms (its creator may have died; delete the topic)")]
    NotInitialised {
        /// How long we waited.
        waited_ms: u64,
    },
}

/// Errors returned by shmq operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A namespace, topic or group name is not acceptable.
    #[error("invalid {what} name {name:?}: {reason}")]
    InvalidName {
        /// "namespace", "topic" or "group".
        what: &'static str,
        /// The name given.
        name: String,
        /// Why it was refused.
        reason: String,
    },
    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// `create` on a topic that exists.
    #[error(
        "topic {topic:?} already exists in namespace {namespace:?} (open it, or delete it first)"
    )]
    TopicExists {
        /// Namespace.
        namespace: String,
        /// Topic.
        topic: String,
    },
    /// The topic does not exist.
    #[error("topic {topic:?} does not exist in namespace {namespace:?} (create it first, or check SHMQ_NAMESPACE)")]
    TopicNotFound {
        /// Namespace.
        namespace: String,
        /// Topic.
        topic: String,
    },
    /// A region exists but cannot be used.
    #[error("region {region}: {problem}")]
    BadRegion {
        /// Region name.
        region: String,
        /// What is wrong with it.
        problem: RegionProblem,
    },
    /// The message does not fit in a slot.
    #[error("message of {size} bytes (key + value) does not fit in a slot of {max} bytes; use a topic with a larger slot_size")]
    MessageTooLarge {
        /// Key + value bytes.
        size: usize,
        /// Slot payload capacity.
        max: usize,
    },
    /// Another live producer holds the writer lease.
    #[error("partition {partition} of topic {topic:?} is held by another live producer (pid {pid}, token {owner:08x}, epoch {epoch}); stop it, or use other partitions")]
    PartitionHeld {
        /// Topic.
        topic: String,
        /// Partition.
        partition: u32,
        /// Holder's pid, or 0 if unknown.
        pid: u32,
        /// Holder's token id.
        owner: u32,
        /// Holder's epoch.
        epoch: u32,
    },
    /// Not enough free partitions for an "any N" producer.
    #[error(
        "topic {topic:?} has only {free} partitions without a live writer; {wanted} were asked for"
    )]
    NoFreePartitions {
        /// Topic.
        topic: String,
        /// Requested.
        wanted: u32,
        /// Available.
        free: u32,
    },
    /// A partition index beyond the topic.
    #[error("partition {partition} does not exist: topic {topic:?} has {partitions} partitions")]
    NoSuchPartition {
        /// Topic.
        topic: String,
        /// Requested partition.
        partition: u32,
        /// Partition count.
        partitions: u32,
    },
    /// The producer does not hold the writer lease of this partition.
    #[error(
        "this producer does not write partition {partition} of topic {topic:?} (it holds {held:?})"
    )]
    NotOwned {
        /// Topic.
        topic: String,
        /// Partition wanted.
        partition: u32,
        /// Partitions held.
        held: Vec<u32>,
    },
    /// A newer writer took the partition over.
    #[error("partition {partition} of topic {topic:?} was taken over by another producer (epoch {epoch}); this producer is fenced")]
    Fenced {
        /// Topic.
        topic: String,
        /// Partition.
        partition: u32,
        /// New epoch.
        epoch: u32,
    },
    /// The region's lease expired and it was reclaimed.
    #[error("topic {topic:?}: lease expired and the region was reclaimed; recreate the topic")]
    LeaseExpired {
        /// Topic.
        topic: String,
    },
    /// `try_send` on a full backpressure topic.
    #[error("partition {partition} is full: the slowest consumer group is a whole ring behind")]
    Full {
        /// Partition.
        partition: u32,
    },
    /// A blocking call timed out.
    #[error("timed out")]
    Timeout,
    /// The group table of the topic is full.
    #[error("topic {topic:?} already has {capacity} consumer groups (the table's fixed capacity)")]
    GroupTableFull {
        /// Topic.
        topic: String,
        /// Capacity.
        capacity: u32,
    },
    /// The member table of a group is full.
    #[error("group {group:?} already has {capacity} members (the table's fixed capacity)")]
    MemberTableFull {
        /// Group.
        group: String,
        /// Capacity.
        capacity: u32,
    },
    /// `/dev/shm` or the host's memory has no room: an allocation failed,
    /// or a topic was refused before anything was allocated because it
    /// would not fit (see [`crate::TopicManager::force_size`]).
    #[error("no space in /dev/shm for {region} ({bytes} bytes); {detail}")]
    NoSpace {
        /// Region (for a refused topic, its meta region).
        region: String,
        /// Bytes needed.
        bytes: usize,
        /// The figures that were compared, and what to do.
        detail: String,
    },
    /// The caller may not open or create the region.
    #[error(
        "permission denied on {region}; run as the topic's owner or create it with a wider --mode"
    )]
    PermissionDenied {
        /// Region.
        region: String,
    },
    /// Any other OS failure.
    #[error(transparent)]
    Os(#[from] OsError),
}

impl Error {
    /// Map an OS error on `region` to the most helpful variant.
    pub(crate) fn from_os(e: OsError, bytes: usize) -> Error {
        use nix::errno::Errno;
        match e.errno {
            Errno::ENOSPC | Errno::ENOMEM | Errno::EFBIG => Error::NoSpace {
                region: e.object,
                bytes,
                detail: "free space or enlarge /dev/shm (docker: --shm-size)".into(),
            },
            Errno::EACCES | Errno::EPERM => Error::PermissionDenied { region: e.object },
            _ => Error::Os(e),
        }
    }
}

/// Shorthand for `Result<T, shmq::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;
