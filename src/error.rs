//! The one error type of the public API, with messages a user can act on.

use crate::config::ConfigDifference;
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
    /// The name in `/dev/shm` is not a shared-memory object at all (e.g. a
    /// directory): shmq never makes one, so it was put there by hand.
    #[error("is a {what}, not a shared-memory object (shmq never makes one); remove it from /dev/shm by hand")]
    NotAnObject {
        /// What it is ("directory").
        what: &'static str,
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
    #[error("message of {} (key + value) does not fit in a slot of {}; use a topic with a larger slot_size", plural(*size as u64, "byte"), plural(*max as u64, "byte"))]
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
        "topic {topic:?} has only {} without a live writer; {wanted} {} asked for", plural(u64::from(*free), "partition"), if *wanted == 1 { "was" } else { "were" }
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
    #[error("partition {partition} does not exist: topic {topic:?} has {}", plural(u64::from(*partitions), "partition"))]
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
    /// `try_send` on a full backpressure topic (or `send` past its timeout).
    #[error("{}", full_message(*partition, group.as_deref(), *lag, *live_member, *releases_in))]
    Full {
        /// Partition.
        partition: u32,
        /// The slowest group holding the writer back (`None` if unknown:
        /// it let go while the error was being made).
        group: Option<String>,
        /// How many records that group is behind the writer on `partition`.
        lag: u64,
        /// Whether a member of that group is a live process (it then holds
        /// the writer for as long as it lives).
        live_member: bool,
        /// With no live member: how long the group can still hold the
        /// writer without a sign of life (its `dead_group_timeout` left).
        releases_in: Option<std::time::Duration>,
    },
    /// A blocking call timed out.
    #[error("timed out")]
    Timeout,
    /// The group table of the topic is full (after freeing every group that
    /// could be freed).
    #[error("{}", group_table_full_message(topic, *capacity, *live, *idle, *retention))]
    GroupTableFull {
        /// Topic.
        topic: String,
        /// Capacity (the topic's `max_groups`).
        capacity: u32,
        /// Groups with a member that is a live process.
        live: u32,
        /// Groups without a live member, kept until idle for `retention`.
        idle: u32,
        /// The topic's group retention (zero = idle groups are never freed).
        retention: std::time::Duration,
    },
    /// The member table of a group is full.
    #[error("group {group:?} already has {capacity} members, all of them live processes or joining; stop a member, or create the topic with a larger --max-members (TopicConfig::max_members)")]
    MemberTableFull {
        /// Group.
        group: String,
        /// Capacity (the topic's `max_members`).
        capacity: u32,
    },
    /// `/dev/shm` or the host's memory has no room: an allocation failed,
    /// or a topic was refused before anything was allocated because it
    /// would not fit (see [`crate::TopicManager::force_size`]).
    #[error("no space for {region} ({bytes} bytes); {detail}")]
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
    /// No consumer group of that name on the topic.
    #[error(
        "topic {topic:?} has no consumer group {group:?} (`shmq group list {topic}` shows them)"
    )]
    GroupNotFound {
        /// Topic.
        topic: String,
        /// Group.
        group: String,
    },
    /// Deleting a group that still has live members.
    #[error("group {group:?} of topic {topic:?} has live members (pids {pids:?}); stop them first, or delete with --force (they get an error at their next heartbeat or commit)")]
    GroupBusy {
        /// Topic.
        topic: String,
        /// Group.
        group: String,
        /// Pids of the live members.
        pids: Vec<u32>,
    },
    /// The group this member or consumer belonged to was deleted.
    #[error(
        "consumer group {group:?} of topic {topic:?} was deleted; join it again to re-create it"
    )]
    GroupDeleted {
        /// Topic.
        topic: String,
        /// Group.
        group: String,
    },
    /// A commit on a reader that belongs to no group.
    #[error("this consumer reads without a group (Consumer::reader) and has nothing to commit to; use Consumer::new(topic, group)")]
    NoGroup,
    /// [`crate::TopicManager::open_or_create`] found the topic already
    /// created with another configuration (every field differing is listed).
    #[error("topic {topic:?} already exists with a different configuration ({}); open it with `open` to take it as it is, or delete it first", ConfigDifference::list(differences))]
    ConfigMismatch {
        /// Topic.
        topic: String,
        /// What differs, in [`crate::TopicConfig`] field order.
        differences: Vec<ConfigDifference>,
    },
    /// A producer needed a new partition, but another live process has been
    /// creating one for too long (`topic::GROW_WAIT`).
    #[error("topic {topic:?}: process {pid} has been creating partition {partition} for {waited_ms} ms; if it is stopped (SIGSTOP, debugger), resume or kill it, then retry")]
    GrowthStalled {
        /// Topic.
        topic: String,
        /// The partition being created.
        partition: u32,
        /// The creator's pid, or 0 if unknown.
        pid: u32,
        /// How long we waited.
        waited_ms: u64,
    },
    /// Every partition has a live producer and the topic cannot grow.
    #[error("topic {topic:?} has reached its max_partitions ({max_partitions}) and every partition has a live producer; stop a producer, or recreate the topic with a larger max_partitions (shmq create --max-partitions)")]
    PartitionLimit {
        /// Topic.
        topic: String,
        /// The topic's `max_partitions`.
        max_partitions: u32,
    },
    /// The data directory of a durable topic is missing, not a directory,
    /// or not writable.
    #[error("data directory {}: {problem}", dir.display())]
    DataDir {
        /// The directory given.
        dir: std::path::PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// A record header could not be added (name, value or count too large).
    #[error("invalid record header: {0}")]
    InvalidHeader(String),
    /// A typed record did not decode (see `shmq::typed`). The consumer moved
    /// past it; the raw record is kept (`TypedConsumer::take_failed`).
    #[error("topic {topic:?} partition {partition} offset {offset}: cannot decode the record with {codec}: {reason}; it was produced with another codec or type, or is not a typed record (take it with TypedConsumer::take_failed to dead-letter it, or re-read it by seeking to the offset)")]
    Decode {
        /// Topic.
        topic: String,
        /// Partition of the record.
        partition: u32,
        /// Offset of the record.
        offset: u64,
        /// The codec (or compression) that failed.
        codec: &'static str,
        /// The codec's message.
        reason: String,
    },
    /// A value could not be encoded by a typed producer's codec.
    #[error("cannot encode the value with {codec}: {reason}")]
    Encode {
        /// The codec (or compression) that failed.
        codec: &'static str,
        /// The codec's message.
        reason: String,
    },
}

fn fmt_dur(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    match ms {
        _ if ms >= 3_600_000 && ms % 3_600_000 == 0 => format!("{} h", ms / 3_600_000),
        _ if ms >= 60_000 && ms % 60_000 == 0 => format!("{} min", ms / 60_000),
        _ if ms >= 1_000 => format!("{:.1} s", d.as_secs_f64()),
        _ => format!("{ms} ms"),
    }
}

fn full_message(
    partition: u32,
    group: Option<&str>,
    lag: u64,
    live_member: bool,
    releases_in: Option<std::time::Duration>,
) -> String {
    let Some(group) = group else {
        return format!(
            "partition {partition} is full: the slowest consumer group is a whole ring behind"
        );
    };
    let hold = if live_member {
        "a member of it is a live process, so it holds the writer until it commits, leaves or dies"
            .to_string()
    } else {
        match releases_in {
            Some(d) => format!(
                "it has no live member and stops holding the writer in {} unless it shows a sign of life (dead_group_timeout)",
                fmt_dur(d)
            ),
            None => "it has no live member and stops holding the writer shortly".to_string(),
        }
    };
    format!(
        "partition {partition} is full: consumer group {group:?} is {lag} records behind the writer; {hold}; `shmq group list` shows the groups, `shmq group delete` removes one"
    )
}

fn group_table_full_message(
    topic: &str,
    capacity: u32,
    live: u32,
    idle: u32,
    retention: std::time::Duration,
) -> String {
    let kept = if retention.is_zero() {
        "never freed (group retention 0)".to_string()
    } else {
        format!("freed once idle for {}", fmt_dur(retention))
    };
    format!(
        "topic {topic:?} has {capacity} consumer groups, its capacity: {live} with live members, {idle} without ({kept}); delete one with `shmq group delete {topic} GROUP`, or create the topic with a larger --max-groups (TopicConfig::max_groups)"
    )
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
            Errno::EISDIR => Error::BadRegion {
                region: e.object,
                problem: RegionProblem::NotAnObject { what: "directory" },
            },
            _ => Error::Os(e),
        }
    }
}

/// Shorthand for `Result<T, shmq::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `1 partition`, `2 partitions`: a count with its noun, pluralised.
pub(crate) fn plural(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}
