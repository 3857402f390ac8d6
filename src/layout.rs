//! Every byte shmq puts in shared memory is defined here, and nowhere else.
//!
//! Two kinds of region exist per topic, both named POSIX shared-memory objects
//! (`/dev/shm/<name>`, see [`crate::name`]):
//!
//! * one **meta** region, `shmq.<ns>.<topic>.meta`: the topic's configuration
//!   (so any process can open a topic by name alone), its lease, and the
//!   consumer-group table (committed offsets, members, claims);
//! * one **partition** region per partition, `shmq.<ns>.<topic>.p<N>`: a header
//!   and a ring of fixed-size slots.
//!
//! Nothing in shared memory is a pointer: only offsets and plain integers, all
//! little-endian host order, all `#[repr(C)]`. Every line that one side writes
//! and the other side polls sits on its own 64-byte cache line.
//!
//! # Partition region
//!
//! ```text
//!  byte  0               8               16              24              32      ...     64
//!  0x000 +---------------+-------+-------+---------------+---------------+---------------+
//!        | magic (atomic)|version| kind  | slots         | slot_size     | stride, len,  |  IDENTITY
//!        |               |  u32  |  u32  | u64 (2^k)     | u64 payload   | partition,    |  written once
//!        |               |       |       |               | bytes         | overflow, ctime| by the creator
//!  0x040 +---------------+---------------+---------------+---------------+---------------+
//!        | expiry (atomic| ttl_ns        | writer (atomic| created_ns    | (pad)         |  CONTROL
//!        | Unix ns, MAX= | u64           | epoch<<32 |   |               |               |  read by every
//!        | reclaimed)    |               | owner token)  |               |               |  op, rarely written
//!  0x080 +---------------+---------------+-------------------------------+---------------+
//!        | cursor (atomic): next offset the writer will publish          |  (pad)        |  WRITE (writer only)
//!  0x0C0 +-------+-------+---------------------------------------------------------------+
//!        |waiters| (pad)                                                                 |  WAKE (readers parked
//!        |u32 atm|                                                                       |  on meta `notify`)
//!  0x100 +---------------+---------------+-----------------------------------------------+
//!        | full_events   | takeovers     | (pad)                                         |  COUNTERS
//!  0x140 +---------------+---------------+-----------------------------------------------+
//!        | claim (atomic)| (pad)                                                         |  CLAIM (writers
//!        | epoch<<32|end |                                                               |  only, v3)
//!  0x180 +---------------+---------------------------------------------------------------+
//!        | (reserved to 0x200)                                                           |
//!  0x200 +===============================================================================+
//!        | slot 0  (stride bytes, a multiple of 64)                                      |
//!        | slot 1                                                                        |
//!        | ...   slots = 2^k                                                             |
//!        +===============================================================================+
//!
//!  slot   0               8       12      16              24
//!        +---------------+-------+-------+---------------+---------------------------+
//!        | seq (atomic)  |val_len|key_len| timestamp_ns  | key bytes | value bytes   |
//!        | 0 = empty     |  u32  |  u32  | u64 (Unix)    | (key_len + val_len        |
//!        | 2o+1 writing o|       |bit31= |               |   <= slot_size)           |
//!        | 2o+2 holds o  |       |has key|               |                           |
//!        |               |       |bit30= |               |                           |
//!        |               |       |has    |               |                           |
//!        |               |       |headers|               |                           |
//!        +---------------+-------+-------+---------------+---------------------------+
//!
//!  body when bit 30 (HAS_HEADERS) of the key word is set: a headers block,
//!  then key, then value (key_len and val_len keep their meaning)
//!  body+  0       4       6       8
//!        +-------+-------+-------+-----------+-----------+-----+-----------+-------+
//!        |blk_len| count | 0     | entry 0   | entry 1   | ... | key bytes | value |
//!        |u32    | u16   | u16   |           |           |     |           | bytes |
//!        +-------+-------+-------+-----------+-----------+-----+-----------+-------+
//!        <------------------- blk_len bytes ------------------->
//!  entry  0       2               6
//!        +-------+---------------+--------------+---------------+
//!        |nm_len | val_len       | name (UTF-8) | value bytes   |
//!        | u16   | u32           | nm_len bytes | val_len bytes |
//!        +-------+---------------+--------------+---------------+
//!  A record is intact only if blk_len >= 8, blk_len + key_len + val_len <=
//!  slot_size, count >= 1, exactly `count` entries fill the block to
//!  blk_len, and every name is UTF-8 (`crate::headers::validate`); anything
//!  else is a corrupt record. All integers little-endian, unaligned. Without bit 30 the body
//!  is key then value, byte for byte as in layout version 2.
//! ```
//!
//! `stride = round_up(SLOT_HEADER + slot_size, 64)`; the region's length is
//! `PARTITION_HEADER + slots * stride`, checked against `fstat` on attach.
//!
//! # Meta region
//!
//! ```text
//!  0x000 +-------------------------------------------------------------------------------+
//!        | magic (atomic) | version | kind | partitions | overflow | slots | slot_size |  IDENTITY
//!        | retention_ns | mode | group_cap | member_cap | dead_group_ms                  |
//!  0x040 +-------------------------------------------------------------------------------+
//!        | expiry (atomic) | ttl_ns | created_ns | region_len | notify (u32 futex) |      |  CONTROL
//!        | group_retention_ms (u32, 0 = never) | timestamp (u32: 0 realtime, 1 coarse,     |
//!        | 2 none) | pad                                                                 |
//!  0x080 +-------+-------+---------------+-----------------------------------------------+
//!        |count  |max_   | grow (atomic) | (pad)                                         |  GROWTH
//!        |u32 atm|parts  | target<<32 |  |                                               |  read per poll,
//!        |publ'd |u32    | token; 0=none |                                               |  written on growth
//!  0x0C0 +===============================================================================+
//!        | group 0: GroupHeader (64 B)                                                   |
//!        |          members[member_cap]        (64 B each: MemberEntry)                  |
//!        |          partitions[max_partitions] (64 B each: GroupPartition)               |
//!        | group 1 ...                    up to group_cap groups                         |
//!        +===============================================================================+
//!
//!  GroupHeader
//!        0               8       12      16                                      56      64
//!        +---------------+-------+-------+---------------------------------------+-------+
//!        | state (atomic)|name_  |stale_ | name [40 bytes]                       |last_  |
//!        | token<<32 |   |len u32|ms atm |                                       |active |
//!        | gen<<8 | st   |       |(0=unset)                                      |ns atm |
//!        +---------------+-------+-------+---------------------------------------+-------+
//!        state word: bits 0..8 state (0 free, 1 init, 2 ready, 3 freeing),
//!        bits 8..32 generation (bumped by every FREE -> INIT), bits 32..64
//!        the liveness token of the process creating (INIT) or freeing
//!        (FREEING) the entry, 0 otherwise (see `group_protocol`).
//!  MemberEntry
//!        0               8               16      20      24              32              40            64
//!        +---------------+---------------+-------+-------+---------------+---------------+-------------+
//!        | id (atomic)   | heartbeat_ns  | pid   | role  | work_lo       | work_hi       | (pad 24)    |
//!        | J<<63|gen<<32 | (atomic, Unix)| u32atm| u32atm| (atomic)      | (atomic)      |             |
//!        | |token; tok 0 |               |       | 0, or | first+1, 0 =  | end, excl.    |             |
//!        | = free        |               |       | p+1   | idle          |               |             |
//!        +---------------+---------------+-------+-------+---------------+---------------+-------------+
//!  GroupPartition
//!        0               8               16              24              32              40              48        64
//!        +---------------+---------------+---------------+---------------+---------------+---------------+---------+
//!        | committed     | owner (atomic)| next (atomic) | nacks         | dead_lettered | start (atomic)| (pad 16)|
//!        | next+1, 0=none| gen<<32|idx+1 | next+1, 0=    | (atomic)      | (atomic)      | seek pos + 1, |         |
//!        | (atomic)      | 0 free, low   | unset         |               |               | 0 = none      |         |
//!        |               | 0xFFFFFFFF=   | (competing    |               |               | (backpressure |         |
//!        |               | shared        |  consumers)   |               |               |  floor before |         |
//!        |               |               |               |               |               |  a commit)    |         |
//!        +---------------+---------------+---------------+---------------+---------------+---------------+---------+
//! ```
//!
//! `partitions` in the identity line is the count the topic was created
//! with; the topic *grows* (one partition at a time, up to `max_partitions`)
//! when a producer finds no free partition. `count` is the number of
//! partitions published so far: regions `p0 .. p<count-1>` exist and are
//! fully initialised. It only grows, by a CAS after the new region's magic
//! is stored, under the `grow` claim (see `crate::growth`). Every group has a
//! line for each of the `max_partitions` possible partitions, zero until its
//! partition is published, so growth never moves the group table.
//!
//! Compile-time asserts at the bottom of this file keep the diagrams honest.

use crate::sync::{AtomicU32, AtomicU64};

/// `b"SHMQRING"` read as a little-endian `u64`; marks a fully initialised region.
pub const MAGIC: u64 = u64::from_le_bytes(*b"SHMQRING");
/// Version of this layout. Bump it on any change to a struct in this file.
pub const LAYOUT_VERSION: u32 = 3;

/// Region kind stored in the identity line.
pub const KIND_PARTITION: u32 = 1;
/// Region kind stored in the identity line.
pub const KIND_META: u32 = 2;

/// Bytes before slot 0 in a partition region.
pub const PARTITION_HEADER: usize = 0x200;
/// Bytes before group 0 in a meta region.
pub const META_HEADER: usize = 0xC0;
/// Bytes of per-slot header (seq, lengths, timestamp) before the payload.
pub const SLOT_HEADER: usize = 24;
/// Cache line size the layout pads to.
pub const LINE: usize = 64;

/// `expiry` value meaning "the supervisor reclaimed this region".
pub const RECLAIMED: u64 = u64::MAX;

/// `MetaHeader::timestamp`: records stamped with `CLOCK_REALTIME`.
pub const TIMESTAMP_REALTIME: u32 = 0;
/// `MetaHeader::timestamp`: records stamped with `CLOCK_REALTIME_COARSE`.
pub const TIMESTAMP_COARSE: u32 = 1;
/// `MetaHeader::timestamp`: records stamped 0 (no clock read).
pub const TIMESTAMP_NONE: u32 = 2;

/// Bit set in a slot's `key_len` word when the record carries a key.
pub const HAS_KEY: u32 = 1 << 31;

/// Bit set in a slot's `key_len` word when the body starts with a headers
/// block (see the diagram above and `crate::headers`).
pub const HAS_HEADERS: u32 = 1 << 30;
/// The key length bits of a slot's `key_len` word.
pub const KEY_LEN_MASK: u32 = HAS_HEADERS - 1;
/// Bytes of a headers block before its first entry (`blk_len`, `count`,
/// reserved).
pub const HEADERS_PREFIX: usize = 8;
/// Bytes of a header entry before its name (`nm_len`, `val_len`).
pub const HEADER_ENTRY_PREFIX: usize = 6;

/// Largest partition count a topic may have (or grow to).
pub const MAX_PARTITIONS: u32 = 256;
/// Default `TopicConfig::max_partitions`: how far a topic may grow.
pub const DEFAULT_MAX_PARTITIONS: u32 = 64;
/// Default capacity of a topic's group table (`TopicConfig::max_groups`).
pub const GROUP_CAPACITY: u32 = 16;
/// Default capacity of a group's member table (`TopicConfig::max_members`).
pub const MEMBER_CAPACITY: u32 = 32;
/// Largest group table a topic may be created with.
pub const MAX_GROUP_CAPACITY: u32 = 1024;
/// Largest member table a topic may be created with.
pub const MAX_MEMBER_CAPACITY: u32 = 1024;
/// Longest group name in bytes.
pub const GROUP_NAME_MAX: usize = 40;

/// The lease line every region carries: `expiry` (Unix ns, or [`RECLAIMED`])
/// and the `ttl` renewals extend it by.
#[repr(C)]
pub struct Lease {
    /// Unix-epoch nanoseconds after which the supervisor may reclaim the
    /// region; [`RECLAIMED`] once it has. Renewed by CAS (see `crate::lease`).
    pub expiry: AtomicU64,
    /// Renewal period granted by one renewal, in nanoseconds. Written once.
    pub ttl_ns: u64,
}

/// Identity and control lines of a partition region.
#[repr(C)]
pub struct PartitionHeader {
    // ---- IDENTITY (0x000) ----
    /// [`MAGIC`], stored last (Release) by the creator.
    pub magic: AtomicU64,
    /// [`LAYOUT_VERSION`].
    pub version: u32,
    /// [`KIND_PARTITION`].
    pub kind: u32,
    /// Slot count, a power of two.
    pub slots: u64,
    /// Payload bytes (key + value) one slot holds.
    pub slot_size: u64,
    /// Bytes from one slot to the next.
    pub stride: u64,
    /// Total region length in bytes.
    pub region_len: u64,
    /// Index of this partition in its topic.
    pub partition: u32,
    /// Overflow policy (`0` overwrite, `1` backpressure).
    pub overflow: u32,
    /// Unix ns when the region was created.
    pub created_ns: u64,
    // ---- CONTROL (0x040) ----
    /// The region lease.
    pub lease: Lease,
    /// Writer lease: `epoch << 32 | owner_token`; owner 0 = no writer.
    pub writer: AtomicU64,
    _pad1: [u64; 5],
    // ---- WRITE (0x080) ----
    /// Next offset the writer will publish (published after the slot).
    pub cursor: AtomicU64,
    _pad2: [u64; 7],
    // ---- WAKE (0x0C0) ----
    /// Number of readers parked (or about to park) waiting for this
    /// partition; they sleep on the topic's futex word (`MetaHeader::notify`).
    pub waiters: AtomicU32,
    _pad3a: u32,
    _pad3: [u64; 7],
    // ---- COUNTERS (0x100) ----
    /// Times a `try_send` found the ring full (backpressure topics).
    pub full_events: AtomicU64,
    /// Times the writer lease was taken over from a dead writer.
    pub takeovers: AtomicU64,
    _pad4: [u64; 6],
    // ---- CLAIM (0x140, writers only) ----
    /// The writer's reservation: `epoch << 32 | end`, the low 32 bits of the
    /// offset (exclusive) up to which the writer of that lease epoch may
    /// write slots without another check. Stored (plainly) by the writer
    /// before it checks its lease for a record or a batch; loaded by a new
    /// writer after it took the lease over, which leaves the reserved
    /// offsets to its predecessor until they are published. See
    /// `ring::Writer::reserve`.
    pub claim: AtomicU64,
    _pad5: [u64; 7],
}

/// Identity and control lines of a topic's meta region.
#[repr(C)]
pub struct MetaHeader {
    // ---- IDENTITY (0x000) ----
    /// [`MAGIC`], stored last (Release) by the creator.
    pub magic: AtomicU64,
    /// [`LAYOUT_VERSION`].
    pub version: u32,
    /// [`KIND_META`].
    pub kind: u32,
    /// Number of partitions the topic was created with (the published count,
    /// which grows, is `partition_count`).
    pub partitions: u32,
    /// Overflow policy (`0` overwrite, `1` backpressure).
    pub overflow: u32,
    /// Slots per partition.
    pub slots: u64,
    /// Payload bytes per slot.
    pub slot_size: u64,
    /// Retention (lease TTL) in nanoseconds.
    pub retention_ns: u64,
    /// File mode the regions were created with.
    pub mode: u32,
    /// Capacity of the group table.
    pub group_cap: u32,
    /// Capacity of each group's member table.
    pub member_cap: u32,
    /// How long a group whose members are all gone keeps holding back a
    /// backpressure topic, in milliseconds.
    pub dead_group_ms: u32,
    // ---- CONTROL (0x040) ----
    /// The region lease.
    pub lease: Lease,
    /// Unix ns when the topic was created.
    pub created_ns: u64,
    /// Total region length in bytes.
    pub region_len: u64,
    /// Futex word readers of any partition park on; a writer bumps it and
    /// wakes them when its partition's `waiters` is non-zero.
    pub notify: AtomicU32,
    /// How long a consumer group with no live member and no sign of life is
    /// kept before it is freed, in milliseconds; `0` = never.
    pub group_retention_ms: u32,
    /// Which clock stamps records: [`TIMESTAMP_REALTIME`] (0),
    /// [`TIMESTAMP_COARSE`] (the default) or [`TIMESTAMP_NONE`].
    /// Written once by the creator.
    pub timestamp: u32,
    _pad1a: u32,
    _pad1: [u64; 2],
    // ---- GROWTH (0x080) ----
    /// Partitions published: `p0 .. p<count-1>` exist and are initialised.
    /// Only grows, by CAS `n -> n + 1` (Release) once region `p<n>` is
    /// complete; readers load it (Acquire) once per poll.
    pub partition_count: AtomicU32,
    /// Largest partition count the topic may grow to; every group has a
    /// line for each. Written once by the creator.
    pub max_partitions: u32,
    /// Growth claim: `target << 32 | token` of the process creating
    /// partition `target`; token 0 = nobody. See `crate::growth`.
    pub grow: AtomicU64,
    _pad2: [u64; 4],
    /// Durable topics (issue 16; 0 for shared memory): bit 0 = the regions
    /// are files, bit 1 = the supervisor removes them when the lease
    /// expires. See `crate::storage`.
    pub storage_flags: u32,
    /// Sync policy of a durable topic: 0 none, 1 interval, 2 every batch.
    pub sync_mode: u32,
    /// The interval of sync policy 1, in nanoseconds.
    pub sync_interval_ns: u64,
}

/// One consumer group's header (64 bytes), followed in memory by its member
/// table and its per-partition lines.
#[repr(C)]
pub struct GroupHeader {
    /// `token << 32 | generation << 8 | state`: state [`group_state`] `FREE`,
    /// `INIT` (being created by the process holding `token`), `READY`, or
    /// `FREEING` (being freed by the process holding `token`); the
    /// generation grows at every `FREE -> INIT`, so a process that cached
    /// the word notices when its group was deleted and the entry reused.
    pub state: AtomicU64,
    /// Length of `name` in bytes (at most [`GROUP_NAME_MAX`]).
    pub name_len: u32,
    /// Milliseconds after its last heartbeat a member counts as stale; `0`
    /// until the first `ConsumerGroup` sets it (first setter wins, by CAS).
    pub stale_ms: AtomicU32,
    /// Group name bytes (valid up to `name_len`).
    pub name: [u8; GROUP_NAME_MAX],
    /// Unix ns of the group's last sign of life (commit, heartbeat, join).
    pub last_active_ns: AtomicU64,
}

/// Group state values (the low byte of `GroupHeader::state`).
pub mod group_state {
    /// Slot free.
    pub const FREE: u64 = 0;
    /// Claimed, name being written.
    pub const INIT: u64 = 1;
    /// Name valid; usable.
    pub const READY: u64 = 2;
    /// Being freed (deleted, or retention expired): no new member may join.
    pub const FREEING: u64 = 3;
}

/// One member of a consumer group (64 bytes). See `crate::group_protocol`
/// for the state machine of `id`.
#[repr(C)]
pub struct MemberEntry {
    /// `joining << 63 | generation << 32 | token`; token 0 = free slot (the
    /// generation of its last occupant stays, so a re-used slot gets a new
    /// one). Bit 63 set = the occupant is still initialising the entry.
    pub id: AtomicU64,
    /// Unix ns of the member's last heartbeat.
    pub heartbeat_ns: AtomicU64,
    /// Process id, informational only (liveness comes from the token).
    pub pid: AtomicU32,
    /// `0` = the member claims whole partitions; `p + 1` = it is a competing
    /// consumer sharing partition `p`'s cursor with the other members.
    pub role: AtomicU32,
    /// Competing consumers: first offset + 1 of the batch in progress
    /// (`0` = none); published *before* the batch is taken from
    /// `GroupPartition::next`, cleared when it is done.
    pub work_lo: AtomicU64,
    /// Competing consumers: end (exclusive) of the batch in progress.
    pub work_hi: AtomicU64,
    _pad1: [u64; 3],
}

/// One group's state for one partition (64 bytes).
#[repr(C)]
pub struct GroupPartition {
    /// Committed position plus one: `next offset to process + 1`; `0` means
    /// nothing committed yet.
    pub committed: AtomicU64,
    /// Claim: `generation << 32 | (member index + 1)`; low half 0 = unclaimed,
    /// low half `0xFFFF_FFFF` = shared by the group's competing consumers.
    pub owner: AtomicU64,
    /// Shared read cursor for competing consumers: next offset to hand out
    /// plus one; `0` = not positioned yet.
    pub next: AtomicU64,
    /// Nacks recorded on this partition.
    pub nacks: AtomicU64,
    /// Messages routed to the dead-letter topic from this partition.
    pub dead_lettered: AtomicU64,
    /// Where the group's readers started (seek position plus one; `0` =
    /// none): the backpressure floor of a group that has not committed yet.
    pub start: AtomicU64,
    _pad: [u64; 2],
}

impl MemberEntry {
    /// A free entry (all zero), as in a fresh region. For heap-built tables
    /// (the loom models); in production entries live in the mapping.
    pub fn new() -> Self {
        MemberEntry {
            id: AtomicU64::new(0),
            heartbeat_ns: AtomicU64::new(0),
            pid: AtomicU32::new(0),
            role: AtomicU32::new(0),
            work_lo: AtomicU64::new(0),
            work_hi: AtomicU64::new(0),
            _pad1: [0; 3],
        }
    }
}

impl Default for MemberEntry {
    fn default() -> Self {
        Self::new()
    }
}

impl GroupPartition {
    /// An unclaimed, never-committed line (all zero), as in a fresh region.
    /// For heap-built tables (the loom models).
    pub fn new() -> Self {
        GroupPartition {
            committed: AtomicU64::new(0),
            owner: AtomicU64::new(0),
            next: AtomicU64::new(0),
            nacks: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            start: AtomicU64::new(0),
            _pad: [0; 2],
        }
    }
}

impl Default for GroupPartition {
    fn default() -> Self {
        Self::new()
    }
}

/// Bytes one group occupies in the meta region (`partitions` = the topic's
/// `max_partitions`: a group has a line for every partition it may grow to).
pub const fn group_size(partitions: u32, member_cap: u32) -> usize {
    LINE + member_cap as usize * LINE + partitions as usize * LINE
}

/// Bytes a meta region needs (`partitions` = the topic's `max_partitions`).
pub const fn meta_region_len(partitions: u32, group_cap: u32, member_cap: u32) -> usize {
    META_HEADER + group_cap as usize * group_size(partitions, member_cap)
}

/// Bytes from one slot to the next for a payload capacity of `slot_size`.
pub const fn stride(slot_size: u64) -> u64 {
    let raw = SLOT_HEADER as u64 + slot_size;
    raw.div_ceil(LINE as u64) * LINE as u64
}

/// Bytes a partition region needs, or `None` if it overflows `usize`.
pub fn partition_region_len(slots: u64, slot_size: u64) -> Option<usize> {
    let body = slots.checked_mul(stride(slot_size))?;
    let total = body.checked_add(PARTITION_HEADER as u64)?;
    usize::try_from(total).ok()
}

/// Overflow policy code for "overwrite the oldest".
pub const OVERFLOW_OVERWRITE: u32 = 0;
/// Overflow policy code for "wait for the slowest group".
pub const OVERFLOW_BACKPRESSURE: u32 = 1;

#[cfg(not(loom))]
mod asserts {
    use super::*;
    use core::mem::{align_of, offset_of, size_of};

    const _: () = assert!(size_of::<PartitionHeader>() == 0x180);
    const _: () = assert!(offset_of!(PartitionHeader, claim) == 0x140);
    const _: () = assert!(size_of::<PartitionHeader>() <= PARTITION_HEADER);
    const _: () = assert!(offset_of!(PartitionHeader, magic) == 0x00);
    const _: () = assert!(offset_of!(PartitionHeader, version) == 0x08);
    const _: () = assert!(offset_of!(PartitionHeader, kind) == 0x0C);
    const _: () = assert!(offset_of!(PartitionHeader, slots) == 0x10);
    const _: () = assert!(offset_of!(PartitionHeader, slot_size) == 0x18);
    const _: () = assert!(offset_of!(PartitionHeader, created_ns) == 0x38);
    const _: () = assert!(offset_of!(PartitionHeader, lease) == 0x40);
    const _: () = assert!(offset_of!(PartitionHeader, writer) == 0x50);
    const _: () = assert!(offset_of!(PartitionHeader, cursor) == 0x80);
    const _: () = assert!(offset_of!(PartitionHeader, waiters) == 0xC0);
    const _: () = assert!(offset_of!(MetaHeader, notify) == 0x60);
    const _: () = assert!(offset_of!(PartitionHeader, full_events) == 0x100);
    const _: () = assert!(align_of::<PartitionHeader>() <= LINE);

    const _: () = assert!(size_of::<MetaHeader>() == 0xC0);
    const _: () = assert!(size_of::<MetaHeader>() <= META_HEADER);
    const _: () = assert!(offset_of!(MetaHeader, lease) == 0x40);
    const _: () = assert!(offset_of!(MetaHeader, region_len) == 0x58);
    const _: () = assert!(offset_of!(MetaHeader, partition_count) == 0x80);
    const _: () = assert!(offset_of!(MetaHeader, max_partitions) == 0x84);
    const _: () = assert!(offset_of!(MetaHeader, grow) == 0x88);
    const _: () = assert!(META_HEADER % LINE == 0);

    const _: () = assert!(size_of::<GroupHeader>() == LINE);
    const _: () = assert!(offset_of!(GroupHeader, stale_ms) == 0x0C);
    const _: () = assert!(offset_of!(GroupHeader, last_active_ns) == 0x38);
    const _: () = assert!(offset_of!(MemberEntry, heartbeat_ns) == 0x08);
    const _: () = assert!(offset_of!(MemberEntry, pid) == 0x10);
    const _: () = assert!(offset_of!(MemberEntry, role) == 0x14);
    const _: () = assert!(offset_of!(MemberEntry, work_lo) == 0x18);
    const _: () = assert!(offset_of!(MemberEntry, work_hi) == 0x20);
    const _: () = assert!(offset_of!(GroupPartition, owner) == 0x08);
    const _: () = assert!(offset_of!(GroupPartition, next) == 0x10);
    const _: () = assert!(offset_of!(GroupPartition, dead_lettered) == 0x20);
    const _: () = assert!(offset_of!(GroupPartition, start) == 0x28);
    const _: () = assert!(offset_of!(MetaHeader, group_retention_ms) == 0x64);
    const _: () = assert!(offset_of!(MetaHeader, timestamp) == 0x68);
    const _: () = assert!(offset_of!(GroupHeader, name) == 0x10);
    const _: () = assert!(size_of::<MemberEntry>() == LINE);
    const _: () = assert!(size_of::<GroupPartition>() == LINE);
    const _: () = assert!(SLOT_HEADER == 24);
    const _: () = assert!(stride(40) == 64 && stride(41) == 128);
    const _: () =
        assert!(HAS_HEADERS & HAS_KEY == 0 && KEY_LEN_MASK & (HAS_KEY | HAS_HEADERS) == 0);
    const _: () = assert!(HEADERS_PREFIX == 8 && HEADER_ENTRY_PREFIX == 6);

    #[test]
    fn with_groups_keeps_the_partition_lines() {
        let h = MetaHeader::new(2, 3, 0, 8, 8, 1, 0o600, 1, 0).with_groups(5, 7, 9);
        assert_eq!(h.region_len as usize, meta_region_len(3, 5, 7));
        assert_eq!((h.group_cap, h.member_cap, h.group_retention_ms), (5, 7, 9));
    }
}

impl PartitionHeader {
    /// A header with the given geometry, lease and an empty ring, with `magic`
    /// still 0 (the creator stores it last). Used by the creator to initialise
    /// a fresh mapping and by the loom models to build a heap ring.
    pub fn new(
        geometry: Geometry,
        partition: u32,
        overflow: u32,
        now_ns: u64,
        ttl_ns: u64,
    ) -> Self {
        PartitionHeader {
            magic: AtomicU64::new(0),
            version: LAYOUT_VERSION,
            kind: KIND_PARTITION,
            slots: geometry.slots,
            slot_size: geometry.slot_size,
            stride: geometry.stride,
            region_len: geometry.region_len as u64,
            partition,
            overflow,
            created_ns: now_ns,
            lease: Lease::new(now_ns, ttl_ns),
            writer: AtomicU64::new(0),
            _pad1: [0; 5],
            cursor: AtomicU64::new(0),
            _pad2: [0; 7],
            waiters: AtomicU32::new(0),
            _pad3a: 0,
            _pad3: [0; 7],
            full_events: AtomicU64::new(0),
            takeovers: AtomicU64::new(0),
            _pad4: [0; 6],
            claim: AtomicU64::new(0),
            _pad5: [0; 7],
        }
    }
}

impl Lease {
    /// A lease expiring `ttl_ns` after `now_ns`.
    pub fn new(now_ns: u64, ttl_ns: u64) -> Self {
        Lease {
            expiry: AtomicU64::new(now_ns.saturating_add(ttl_ns)),
            ttl_ns,
        }
    }
}

/// Validated geometry of a partition ring, computed once and then trusted
/// (it is never re-read from shared memory after attach).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Slot count, a power of two.
    pub slots: u64,
    /// Payload bytes per slot.
    pub slot_size: u64,
    /// Bytes from one slot to the next.
    pub stride: u64,
    /// Region length in bytes.
    pub region_len: usize,
}

impl Geometry {
    /// Geometry for `slots` slots of `slot_size` payload bytes, or `None` if
    /// the slot count is not a power of two or the size overflows.
    pub fn new(slots: u64, slot_size: u64) -> Option<Geometry> {
        if !slots.is_power_of_two() || slot_size == 0 || slot_size > u64::from(u32::MAX >> 1) {
            return None;
        }
        Some(Geometry {
            slots,
            slot_size,
            stride: stride(slot_size),
            region_len: partition_region_len(slots, slot_size)?,
        })
    }

    /// `slots - 1`, the mask from offset to slot index.
    pub fn mask(&self) -> u64 {
        self.slots - 1
    }
}

impl MetaHeader {
    /// A meta header with `magic` still 0 (the creator stores it last).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        partitions: u32,
        max_partitions: u32,
        overflow: u32,
        slots: u64,
        slot_size: u64,
        retention_ns: u64,
        mode: u32,
        dead_group_ms: u32,
        now_ns: u64,
    ) -> Self {
        MetaHeader {
            magic: AtomicU64::new(0),
            version: LAYOUT_VERSION,
            kind: KIND_META,
            partitions,
            overflow,
            slots,
            slot_size,
            retention_ns,
            mode,
            group_cap: GROUP_CAPACITY,
            member_cap: MEMBER_CAPACITY,
            dead_group_ms,
            region_len: meta_region_len(max_partitions, GROUP_CAPACITY, MEMBER_CAPACITY) as u64,
            lease: Lease::new(now_ns, retention_ns),
            created_ns: now_ns,
            notify: AtomicU32::new(0),
            group_retention_ms: 0,
            timestamp: TIMESTAMP_REALTIME,
            _pad1a: 0,
            _pad1: [0; 2],
            partition_count: AtomicU32::new(partitions),
            max_partitions,
            grow: AtomicU64::new(0),
            _pad2: [0; 4],
            storage_flags: 0,
            sync_mode: 0,
            sync_interval_ns: 0,
        }
    }

    /// Set the group table's shape (capacities) and the group retention
    /// (`0` = never), recomputing `region_len`. Each group keeps the number
    /// of partition lines [`MetaHeader::new`] sized it for.
    pub fn with_groups(mut self, group_cap: u32, member_cap: u32, retention_ms: u32) -> Self {
        let per_group = (self.region_len as usize).saturating_sub(META_HEADER)
            / (self.group_cap.max(1) as usize);
        let part_lines = (per_group / LINE).saturating_sub(1 + self.member_cap as usize);
        self.group_cap = group_cap;
        self.member_cap = member_cap;
        self.group_retention_ms = retention_ms;
        self.region_len =
            (META_HEADER + group_cap as usize * group_size(part_lines as u32, member_cap)) as u64;
        self
    }

    /// Set the clock records are stamped with (`TIMESTAMP_*`).
    pub fn with_timestamp(mut self, code: u32) -> Self {
        self.timestamp = code;
        self
    }
}
