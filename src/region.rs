//! A mapped region: creation, validated attachment, typed header access.
//!
//! The type that maps a region is the one that unmaps it (on drop). Unlinking
//! is a separate, explicit decision (`TopicManager::delete`, the supervisor),
//! because region lifetime belongs to the lease protocol, not to any process.
//!
//! Attach waits a bounded time ([`ATTACH_WAIT`]) for a region that is still
//! being created (size not yet set, or `magic` not yet stored: the creator
//! stores `magic` last, with `Release`), then validates magic, version, kind
//! and geometry against the object's real size from `fstat`.

use std::time::{Duration, Instant};

use nix::errno::Errno;

use crate::error::{Error, RegionProblem, Result};
use crate::layout::{
    self, Geometry, GroupHeader, GroupPartition, MemberEntry, MetaHeader, PartitionHeader,
    KIND_PARTITION, LAYOUT_VERSION, MAGIC, MAX_PARTITIONS,
};
use crate::os::{self, Mapping};
use crate::storage::Storage;
use crate::sync::Ordering;

/// How long attach waits for a region still being initialised.
pub const ATTACH_WAIT: Duration = Duration::from_secs(2);

/// A mapped shmq region (meta or partition), validated.
pub struct Region {
    name: String,
    map: Mapping,
    /// Whether the region is a file (a durable topic's), which
    /// [`Region::sync_range`] forces to the disk.
    file: bool,
}

impl std::fmt::Debug for Region {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Region")
            .field("name", &self.name)
            .field("len", &self.map.len())
            .finish()
    }
}

fn bad(name: &str, problem: RegionProblem) -> Error {
    Error::BadRegion {
        region: name.to_string(),
        problem,
    }
}

/// Why `Geometry::new(slots, slot_size)` refused a header's geometry: each
/// field checked on its own, so the message names the one that is wrong.
pub(crate) fn geometry_problem(slots: u64, slot_size: u64) -> RegionProblem {
    let max = u64::from(u32::MAX >> 1);
    RegionProblem::BadGeometry(if !slots.is_power_of_two() {
        format!("slots {slots} is not a power of two")
    } else if slot_size == 0 {
        "slot_size is 0".to_string()
    } else if slot_size > max {
        format!("slot_size {slot_size} is larger than the largest possible, {max}")
    } else {
        format!("{slots} slots of {slot_size} bytes do not fit in memory")
    })
}

impl Region {
    /// Region name (without the leading `/`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Never true.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Create a partition region with a fresh header and an all-zero ring,
    /// then publish its magic. `writer` is the initial writer-lease word
    /// (`0` = no writer; a grown partition is born owned by its creator).
    #[allow(clippy::too_many_arguments)]
    pub fn create_partition(
        name: &str,
        geo: Geometry,
        partition: u32,
        overflow: u32,
        mode: u32,
        now_ns: u64,
        ttl_ns: u64,
        writer: u64,
    ) -> Result<Region> {
        Self::create_partition_in(
            &Storage::Shm,
            name,
            geo,
            partition,
            overflow,
            mode,
            now_ns,
            ttl_ns,
            writer,
        )
    }

    /// [`Region::create_partition`] in `storage`.
    #[allow(clippy::too_many_arguments)]
    pub fn create_partition_in(
        storage: &Storage,
        name: &str,
        geo: Geometry,
        partition: u32,
        overflow: u32,
        mode: u32,
        now_ns: u64,
        ttl_ns: u64,
        writer: u64,
    ) -> Result<Region> {
        let header = PartitionHeader::new(geo, partition, overflow, now_ns, ttl_ns);
        header.writer.store(writer, Ordering::Relaxed);
        Self::create_with(storage, name, geo.region_len, mode, header)
    }

    /// Create a meta region from a filled-in header (group table zeroed).
    /// Its magic is *not* published: the topic creator calls
    /// [`Region::publish_meta`] once every partition exists, so that opening
    /// a topic by its meta region never finds half a topic.
    pub fn create_meta(name: &str, header: MetaHeader, mode: u32) -> Result<Region> {
        Self::create_meta_in(&Storage::Shm, name, header, mode)
    }

    /// [`Region::create_meta`] in `storage`.
    pub fn create_meta_in(
        storage: &Storage,
        name: &str,
        header: MetaHeader,
        mode: u32,
    ) -> Result<Region> {
        let len = header.region_len as usize;
        Self::create_unpublished(storage, name, len, mode, header)
    }

    /// Publish a meta region created by [`Region::create_meta`].
    pub fn publish_meta(&self) {
        // SYNC POINT "initialised": see `create_with`.
        self.meta_header().magic.store(MAGIC, Ordering::Release);
    }

    fn create_with<H: HasMagic>(
        storage: &Storage,
        name: &str,
        len: usize,
        mode: u32,
        header: H,
    ) -> Result<Region> {
        let region = Self::create_unpublished(storage, name, len, mode, header)?;
        // SYNC POINT "initialised": everything written above becomes visible
        // to an attacher that loads MAGIC with Acquire.
        region.header::<H>().magic().store(MAGIC, Ordering::Release);
        Ok(region)
    }

    fn create_unpublished<H: HasMagic>(
        storage: &Storage,
        name: &str,
        len: usize,
        mode: u32,
        header: H,
    ) -> Result<Region> {
        assert!(len >= std::mem::size_of::<H>());
        let fd = storage.create(name, len, mode).map_err(|e| match e.errno {
            Errno::EEXIST => Error::Os(e),
            _ => storage.create_error(e, len),
        })?;
        let map = fd.map(len).map_err(|e| {
            let _ = storage.remove(name);
            Error::from_os(e, len)
        })?;
        let ptr = map.as_ptr().cast::<H>();
        // SAFETY: the mapping is fresh, page-aligned (so aligned for H), at
        // least size_of::<H>() long (asserted above), and no other process can
        // use it before `magic` is published below (attach waits for magic).
        unsafe { ptr.write(header) };
        Ok(Region {
            name: name.to_string(),
            map,
            file: storage.is_file(),
        })
    }

    /// Open and map an existing region, waiting up to [`ATTACH_WAIT`] for its
    /// creator to finish, and check magic, version and `kind`. Returns
    /// `Ok(None)` if no such object exists.
    pub fn attach(name: &str, kind: u32) -> Result<Option<Region>> {
        Self::attach_in(&Storage::Shm, name, kind)
    }

    /// [`Region::attach`] in `storage`; errors name the file of a durable
    /// region.
    pub fn attach_in(storage: &Storage, name: &str, kind: u32) -> Result<Option<Region>> {
        let fd = match storage.open(name) {
            Ok(fd) => fd,
            Err(e) if e.errno == Errno::ENOENT => return Ok(None),
            Err(e) => {
                return Err(storage
                    .not_an_object(name)
                    .unwrap_or_else(|| Error::from_os(e, 0)))
            }
        };
        let region_name = name;
        // Errors name the file of a durable region.
        let shown = storage.display(name);
        let name = shown.as_str();
        let min = match kind {
            KIND_PARTITION => layout::PARTITION_HEADER,
            _ => layout::META_HEADER,
        };
        let start = Instant::now();
        let waited = |start: Instant| start.elapsed().as_millis() as u64;
        // Only a young object can still be in its creator's hands; an old one
        // that is too short or has no magic is broken, and waiting for it
        // would only slow down the supervisor and `delete`.
        let young = |st: &os::Stat| {
            os::now_ns().saturating_sub(st.ctime_ns) < ATTACH_WAIT.as_nanos() as u64
        };
        let mut last_stat: os::Stat;
        let map = loop {
            let st = fd.stat().map_err(|e| Error::from_os(e, 0))?;
            last_stat = st;
            if st.size as usize >= min {
                let size = usize::try_from(st.size).map_err(|_| {
                    bad(
                        name,
                        RegionProblem::BadGeometry(format!(
                            "size {} does not fit in memory",
                            st.size
                        )),
                    )
                })?;
                break fd.map(size).map_err(|e| Error::from_os(e, size))?;
            }
            if start.elapsed() > ATTACH_WAIT || !young(&st) {
                return Err(bad(
                    name,
                    if st.size == 0 {
                        RegionProblem::NotInitialised {
                            waited_ms: waited(start),
                        }
                    } else {
                        RegionProblem::Truncated {
                            size: st.size,
                            expected: min as u64,
                        }
                    },
                ));
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        let region = Region {
            name: region_name.to_string(),
            map,
            file: storage.is_file(),
        };
        loop {
            // SYNC POINT "initialised": pairs with the creator's Release store.
            let magic = region.ident().magic.load(Ordering::Acquire);
            if magic == MAGIC {
                break;
            }
            if magic != 0 {
                return Err(bad(name, RegionProblem::BadMagic { found: magic }));
            }
            if start.elapsed() > ATTACH_WAIT || !young(&last_stat) {
                return Err(bad(
                    name,
                    RegionProblem::NotInitialised {
                        waited_ms: waited(start),
                    },
                ));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let ident = region.ident();
        if ident.version != LAYOUT_VERSION {
            return Err(bad(
                name,
                RegionProblem::BadVersion {
                    found: ident.version,
                    expected: LAYOUT_VERSION,
                },
            ));
        }
        if ident.kind != kind {
            return Err(bad(
                name,
                RegionProblem::WrongKind {
                    found: ident.kind,
                    expected: kind,
                },
            ));
        }
        Ok(Some(region))
    }

    fn ident(&self) -> &Ident {
        self.header::<Ident>()
    }

    fn header<H>(&self) -> &H {
        assert!(self.map.len() >= std::mem::size_of::<H>());
        // SAFETY: the mapping is page-aligned and at least size_of::<H>() long
        // (asserted); H is a #[repr(C)] struct of integers and atomics, valid
        // for every bit pattern, and shared access goes through its atomics.
        unsafe { &*self.map.as_ptr().cast::<H>() }
    }

    /// The partition header; validates its geometry against the real size and
    /// returns it. Call once after attach, then trust the returned geometry.
    pub fn partition_geometry(&self) -> Result<Geometry> {
        let h = self.partition_header();
        let geo = Geometry::new(h.slots, h.slot_size)
            .ok_or_else(|| bad(&self.name, geometry_problem(h.slots, h.slot_size)))?;
        if h.stride != geo.stride {
            return Err(bad(
                &self.name,
                RegionProblem::BadGeometry(format!(
                    "stride {} but slot_size {} needs {}",
                    h.stride, h.slot_size, geo.stride
                )),
            ));
        }
        if h.region_len != geo.region_len as u64 {
            return Err(bad(
                &self.name,
                RegionProblem::BadGeometry(format!(
                    "its header says it is {} bytes long, but {} slots of {} bytes take {}",
                    h.region_len, geo.slots, geo.slot_size, geo.region_len
                )),
            ));
        }
        if self.map.len() < geo.region_len {
            return Err(bad(
                &self.name,
                RegionProblem::Truncated {
                    size: self.map.len() as u64,
                    expected: geo.region_len as u64,
                },
            ));
        }
        Ok(geo)
    }

    /// The partition header (any bit pattern is memory-safe to read; use
    /// [`Region::partition_geometry`] before trusting its geometry).
    pub fn partition_header(&self) -> &PartitionHeader {
        self.header::<PartitionHeader>()
    }

    /// The meta header.
    pub fn meta_header(&self) -> &MetaHeader {
        self.header::<MetaHeader>()
    }

    /// Validate the meta header's geometry against the real size; returns the
    /// trusted `(partitions, max_partitions, group_cap, member_cap)`.
    pub fn meta_geometry(&self) -> Result<MetaGeometry> {
        let h = self.meta_header();
        let geo = MetaGeometry {
            partitions: h.partitions,
            max_partitions: h.max_partitions,
            group_cap: h.group_cap,
            member_cap: h.member_cap,
        };
        if geo.partitions == 0
            || geo.max_partitions < geo.partitions
            || geo.max_partitions > MAX_PARTITIONS
            || geo.group_cap == 0
            || geo.group_cap > 4096
            || geo.member_cap == 0
            || geo.member_cap > 4096
        {
            return Err(bad(
                &self.name,
                RegionProblem::BadGeometry(format!(
                    "partitions {}, max_partitions {}, group_cap {}, member_cap {}",
                    geo.partitions, geo.max_partitions, geo.group_cap, geo.member_cap
                )),
            ));
        }
        let need = layout::meta_region_len(geo.max_partitions, geo.group_cap, geo.member_cap);
        if h.region_len != need as u64 {
            return Err(bad(
                &self.name,
                RegionProblem::BadGeometry(format!(
                    "its header says it is {} bytes long, but {} partition lines with {} groups of {} members take {need}",
                    h.region_len, geo.max_partitions, geo.group_cap, geo.member_cap
                )),
            ));
        }
        if self.map.len() < need {
            return Err(bad(
                &self.name,
                RegionProblem::Truncated {
                    size: self.map.len() as u64,
                    expected: need as u64,
                },
            ));
        }
        Ok(geo)
    }

    /// Group `g`'s header, member table and partition lines (one for each
    /// of the `max_partitions` partitions the topic may grow to). `geo` must
    /// come from [`Region::meta_geometry`] of this region and `g < group_cap`.
    pub fn group(&self, geo: MetaGeometry, g: u32) -> GroupView<'_> {
        assert!(g < geo.group_cap);
        let gsize = layout::group_size(geo.max_partitions, geo.member_cap);
        let base = layout::META_HEADER + g as usize * gsize;
        assert!(base + gsize <= self.map.len());
        // SAFETY: `base + gsize` is within the mapping (asserted; the mapping
        // length was checked against `meta_region_len` for this geometry);
        // `base` is a multiple of 64 so every entry is aligned; the entries
        // are #[repr(C)] integers/atomics valid for any bit pattern, and the
        // returned slices borrow `self`, which keeps the mapping alive.
        unsafe {
            let p = self.map.as_ptr().add(base);
            let header = &*p.cast::<GroupHeader>();
            let members = std::slice::from_raw_parts(
                p.add(layout::LINE).cast::<MemberEntry>(),
                geo.member_cap as usize,
            );
            let parts = std::slice::from_raw_parts(
                p.add(layout::LINE + geo.member_cap as usize * layout::LINE)
                    .cast::<GroupPartition>(),
                geo.max_partitions as usize,
            );
            GroupView {
                header,
                members,
                partitions: parts,
            }
        }
    }

    /// Whether the region is a file (a durable topic's).
    pub fn is_file(&self) -> bool {
        self.file
    }

    /// Force bytes `offset .. offset + len` of a file region to the disk
    /// (see [`Mapping::sync_range`]); nothing for shared memory.
    ///
    /// # Errors
    /// `msync` failed (an I/O error of the device).
    pub fn sync_range(&self, offset: usize, len: usize) -> Result<()> {
        if !self.file {
            return Ok(());
        }
        crate::storage::count_sync();
        self.map
            .sync_range(offset, len)
            .map_err(|e| Error::from_os(e, len))
    }

    /// Base address of the mapping (for the raw slot accessor).
    pub(crate) fn base(&self) -> *mut u8 {
        self.map.as_ptr()
    }
}

/// Trusted shape of a meta region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetaGeometry {
    /// Partitions the topic was created with.
    pub partitions: u32,
    /// Partitions the topic may grow to (group lines are sized for them).
    pub max_partitions: u32,
    /// Group table capacity.
    pub group_cap: u32,
    /// Member table capacity.
    pub member_cap: u32,
}

/// One group's lines in a meta region.
#[derive(Clone, Copy)]
pub struct GroupView<'a> {
    /// Header with name and state.
    pub header: &'a GroupHeader,
    /// Member table.
    pub members: &'a [MemberEntry],
    /// Per-partition committed offsets and claims: `max_partitions` lines;
    /// those at or above the published partition count are unused (zero).
    pub partitions: &'a [GroupPartition],
}

/// The identity prefix common to both header kinds.
#[repr(C)]
struct Ident {
    magic: crate::sync::AtomicU64,
    version: u32,
    kind: u32,
}

trait HasMagic {
    fn magic(&self) -> &crate::sync::AtomicU64;
}
impl HasMagic for PartitionHeader {
    fn magic(&self) -> &crate::sync::AtomicU64 {
        &self.magic
    }
}
impl HasMagic for MetaHeader {
    fn magic(&self) -> &crate::sync::AtomicU64 {
        &self.magic
    }
}

const _: () =
    assert!(std::mem::offset_of!(PartitionHeader, kind) == std::mem::offset_of!(Ident, kind));
const _: () = assert!(std::mem::offset_of!(MetaHeader, kind) == std::mem::offset_of!(Ident, kind));
const _: () =
    assert!(std::mem::offset_of!(MetaHeader, version) == std::mem::offset_of!(Ident, version));

impl Region {
    /// Write group `g`'s name into its header. The caller owns the entry
    /// (moved it `FREE -> INIT` by CAS); `geo` comes from
    /// [`Region::meta_geometry`].
    pub(crate) fn write_group_name(&self, geo: MetaGeometry, g: u32, name: &[u8]) {
        assert!(name.len() <= layout::GROUP_NAME_MAX && g < geo.group_cap);
        let base = layout::META_HEADER
            + g as usize * layout::group_size(geo.max_partitions, geo.member_cap);
        assert!(base + layout::LINE <= self.map.len());
        // SAFETY: the header lies inside the mapping (asserted), aligned to 64;
        // the pointer is derived from the mapping's raw base, not from a shared
        // reference. The entry is in INIT state and owned by this process;
        // readers read the name only after loading READY with Acquire, and a
        // buggy peer reading early sees only bytes (valid for u8/u32). (Also
        // called by a member of the READY group to put back a scribbled name,
        // the same bytes: a finder reading meanwhile sees a mix of bytes, as
        // it would see the scribble; lengths are clamped by every reader.)
        unsafe {
            let ptr = self.map.as_ptr().add(base).cast::<GroupHeader>();
            std::ptr::addr_of_mut!((*ptr).name_len).write_volatile(name.len() as u32);
            let dst = std::ptr::addr_of_mut!((*ptr).name).cast::<u8>();
            std::ptr::copy_nonoverlapping(name.as_ptr(), dst, name.len());
        }
    }
}
