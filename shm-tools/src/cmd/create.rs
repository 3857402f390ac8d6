//! `shmq create`: create a topic.

use std::io::Write;
use std::time::Duration;

use clap::{Args, ValueEnum};
use shmq::{Overflow, Storage, SyncPolicy, TopicConfig, TopicManager};

use crate::error::CliResult;
use crate::util::{fmt_duration, human_bytes, parse_duration, parse_mode, plural};

/// Overflow policy, as typed on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OverflowArg {
    /// The writer never waits; lagging readers are told how many they missed.
    Overwrite,
    /// The writer waits for the slowest live consumer group (never loses).
    Backpressure,
}

impl From<OverflowArg> for Overflow {
    fn from(o: OverflowArg) -> Overflow {
        match o {
            OverflowArg::Overwrite => Overflow::Overwrite,
            OverflowArg::Backpressure => Overflow::Backpressure,
        }
    }
}

/// Record clock, as typed on the command line (`TopicConfig::timestamp`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TimestampArg {
    /// CLOCK_REALTIME: exact nanoseconds (20-68 ns per send measured).
    Realtime,
    /// CLOCK_REALTIME_COARSE: kernel-tick resolution, a few ms (5-11 ns per
    /// send measured). The default.
    Coarse,
    /// No clock read: timestamps are 0.
    None,
}

impl From<TimestampArg> for shmq::Timestamp {
    fn from(t: TimestampArg) -> shmq::Timestamp {
        match t {
            TimestampArg::Realtime => shmq::Timestamp::Realtime,
            TimestampArg::Coarse => shmq::Timestamp::Coarse,
            TimestampArg::None => shmq::Timestamp::None,
        }
    }
}

/// Name of an overflow policy as shown by `list`/`info` (and in their JSON).
pub fn overflow_name(o: Overflow) -> &'static str {
    match o {
        Overflow::Overwrite => "overwrite",
        Overflow::Backpressure => "backpressure",
    }
}

/// Arguments of `shmq create`.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  shmq create orders
  shmq create orders --partitions 8 --slots 4096 --slot-size 1000 --retention 1h
  shmq create jobs --overflow backpressure --mode 0660 --namespace prod
  shmq create events --partitions 2 --max-partitions 16   # grows as producers come
  shmq create ledger --storage /var/lib/shmq --sync every-batch   # durable (files)

Memory used in /dev/shm is about partitions x slots x (slot-size + 24) bytes,
allocated up front (a full /dev/shm fails here, not later). A topic larger than
the free space of /dev/shm or than 50% of the memory available (MemAvailable,
or the cgroup's memory limit) is refused before anything is allocated, unless
--force is given.

With --storage DIR (or SHMQ_DATA_DIR) the topic is durable: its regions are
files DIR/<namespace>/<topic>.{meta,p<N>}, pre-allocated on that disk, and
survive a reboot. --sync says when writes are forced to the disk: none (the
page cache: survives any process crash), every-batch (survives a power loss),
or a duration such as 100ms (loses at most that much). Without --retention a
durable topic's files stay until `shmq delete`; with it, the supervisor
removes them once the topic is unattended that long.")]
pub struct CreateArgs {
    /// Topic name: letters, digits, '_' and '-', at most 64 bytes.
    pub topic: String,
    /// Number of partitions (1..=256).
    #[arg(long, default_value_t = 4)]
    pub partitions: u32,
    /// Slots per partition ring, a power of two.
    #[arg(long, default_value_t = 1024)]
    pub slots: u64,
    /// Largest key + value one message may have, in bytes.
    #[arg(long, default_value_t = 1000)]
    pub slot_size: u64,
    /// How long the topic survives with no process attached (e.g. 30s, 1h,
    /// 7d); default 1h. A durable topic expires only if this is given.
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub retention: Option<Duration>,
    /// What a writer does when the ring is full.
    #[arg(long, value_enum, default_value_t = OverflowArg::Overwrite)]
    pub overflow: OverflowArg,
    /// Permission bits of the regions, in octal (must include 600).
    #[arg(long, value_name = "OCTAL", default_value = "600", value_parser = parse_mode)]
    pub mode: u32,
    /// For backpressure topics: how long a consumer group with no sign of
    /// life keeps holding writers back.
    #[arg(long, value_name = "DUR", default_value = "30s", value_parser = parse_duration)]
    pub dead_group_timeout: Duration,
    /// Free a consumer group with no live member and no activity for this
    /// long (0 = never).
    #[arg(long, value_name = "DUR", default_value = "1h", value_parser = parse_duration)]
    pub group_retention: Duration,
    /// Capacity of the consumer-group table (1..=1024).
    #[arg(long, value_name = "N", default_value_t = shmq::protocol::layout::GROUP_CAPACITY)]
    pub max_groups: u32,
    /// Members per consumer group (1..=1024).
    #[arg(long, value_name = "N", default_value_t = shmq::protocol::layout::MEMBER_CAPACITY)]
    pub max_members: u32,
    /// How many partitions the topic may grow to when producers find none
    /// free (up to 256; at least --partitions).
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub max_partitions: u32,
    /// Create the topic even if it is larger than the free space of
    /// /dev/shm or half the memory available (a tmpfs can be larger than
    /// the memory behind it: filling it can take the host down).
    #[arg(long)]
    pub force: bool,
    /// Durable topics: when writes and commits are forced to the disk:
    /// none, every-batch, or an interval (e.g. 100ms).
    #[arg(long, value_name = "POLICY", default_value = "none", value_parser = parse_sync)]
    pub sync: SyncPolicy,
    /// Which clock stamps each record.
    #[arg(long, value_enum, default_value_t = TimestampArg::Coarse)]
    pub timestamp: TimestampArg,
}

/// `none`, `every-batch` or a duration.
fn parse_sync(s: &str) -> Result<SyncPolicy, String> {
    match s {
        "none" => Ok(SyncPolicy::None),
        "every-batch" | "batch" => Ok(SyncPolicy::EveryBatch),
        d => parse_duration(d)
            .map(SyncPolicy::Interval)
            .map_err(|e| format!("{e}; or use none or every-batch")),
    }
}

/// Run `shmq create`.
pub fn run(ns: &str, args: CreateArgs) -> CliResult {
    let mgr = TopicManager::with_namespace(ns)?.force_size(args.force);
    let storage = match shmq::protocol::storage::data_dir_from_env() {
        Some(dir) => Storage::File { dir },
        None => Storage::Shm,
    };
    let config = TopicConfig {
        partitions: args.partitions,
        slots: args.slots,
        slot_size: args.slot_size,
        retention: args.retention.unwrap_or(Duration::from_secs(3600)),
        overflow: args.overflow.into(),
        mode: args.mode,
        dead_group_timeout: args.dead_group_timeout,
        group_retention: args.group_retention,
        max_groups: args.max_groups,
        max_members: args.max_members,
        max_partitions: args.max_partitions,
        expire_files: args.retention.is_some(),
        storage,
        sync: args.sync,
        timestamp: args.timestamp.into(),
    };
    let topic = mgr.create(&args.topic, config.clone())?;
    let bytes_per_partition =
        shmq::protocol::layout::partition_region_len(config.slots, config.slot_size).unwrap_or(0)
            as u64;
    let total = bytes_per_partition.saturating_mul(u64::from(config.partitions));
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "created topic {:?} in namespace {:?}: {} x {} of {}, {}, retention {}, mode {:04o} ({} in {})",
        topic.name(),
        ns,
        plural(u64::from(config.partitions), "partition"),
        plural(config.slots, "slot"),
        plural(config.slot_size, "byte"),
        overflow_name(config.overflow),
        fmt_duration(config.retention),
        config.mode,
        human_bytes(total),
        match topic.storage() {
            Storage::Shm => "/dev/shm".to_string(),
            Storage::File { dir } => format!("{}, sync {}", dir.display(), config.sync),
        },
    )?;
    Ok(())
}
