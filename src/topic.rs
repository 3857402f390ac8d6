//! Topics: create, open, delete and list, scoped to a namespace.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::config::{Overflow, TopicConfig};
use crate::deadline::Deadline;
use crate::error::{Error, RegionProblem, Result};
use crate::growth::{self, Begin};
use crate::layout::{Geometry, MetaHeader, PartitionHeader, KIND_META, KIND_PARTITION};
use crate::lease::{self, LeaseExpired};
use crate::name::{self, RegionName};
use crate::os;
use crate::region::{GroupView, MetaGeometry, Region, ATTACH_WAIT};
use crate::renewal::{self, RenewalPolicy};
use crate::slots::MappedSlots;
use crate::storage::{self, Lookup, Storage, SyncPolicy};
use crate::sync::{AtomicU32, AtomicU64, Ordering};
use crate::token::{self, Token};

/// How long a producer that needs a new partition waits for another live
/// process that is creating one (growth is one partition at a time) before
/// giving up with [`Error::GrowthStalled`].
pub const GROW_WAIT: Duration = Duration::from_secs(10);

/// Environment variable that selects the default namespace.
pub const NAMESPACE_ENV: &str = "SHMQ_NAMESPACE";

/// How long `open` waits, on finding a partition missing or foreign, for the
/// topic's meta region to show the delete or reclaim in progress (a deleter
/// removes partitions first and the meta region moments later). A topic
/// still damaged after it is reported as such.
const GONE_WAIT: Duration = Duration::from_millis(500);

/// Entry point: manages the topics of one namespace.
///
/// Holds this process's liveness token for the namespace (shared by every
/// producer and consumer created from it), so keep it alive as long as you
/// use its topics.
///
/// # Examples
/// ```no_run
/// use shmq::{TopicManager, TopicConfig};
/// let mgr = TopicManager::new()?; // namespace from SHMQ_NAMESPACE or "default"
/// let topic = mgr.open_or_create("orders", TopicConfig::default())?;
/// # Ok::<(), shmq::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct TopicManager {
    ns: String,
    token: Arc<Token>,
    renewal: RenewalPolicy,
    force_size: bool,
    /// Where durable topics are looked for when `/dev/shm` has no registry
    /// stub for them (after a reboot).
    data_dir: Option<std::path::PathBuf>,
}

impl TopicManager {
    /// A manager for the namespace in `SHMQ_NAMESPACE`, or `default`.
    ///
    /// # Errors
    /// An invalid namespace name, or `/dev/shm` unusable for the token.
    pub fn new() -> Result<Self> {
        let ns = std::env::var(NAMESPACE_ENV).unwrap_or_else(|_| "default".to_string());
        Self::with_namespace(&ns)
    }

    /// A manager for namespace `ns`. Durable topics that `/dev/shm` no
    /// longer knows (after a reboot) are looked for in the data directory
    /// named by `SHMQ_DATA_DIR`, if set (see
    /// [`TopicManager::with_data_dir`]).
    ///
    /// # Errors
    /// An invalid namespace name, or `/dev/shm` unusable for the token.
    pub fn with_namespace(ns: &str) -> Result<Self> {
        name::validate_namespace(ns)?;
        let token = Arc::new(Token::acquire(ns)?);
        Ok(TopicManager {
            ns: ns.to_string(),
            token,
            renewal: RenewalPolicy::Background,
            force_size: false,
            data_dir: storage::data_dir_from_env(),
        })
    }

    /// Look for durable topics in `dir` (`None`: only through `/dev/shm`'s
    /// registry stubs) when opening, listing and deleting them. Overrides
    /// `SHMQ_DATA_DIR`. Creating a durable topic takes its directory from
    /// [`TopicConfig::storage`], not from here.
    pub fn with_data_dir(mut self, dir: Option<std::path::PathBuf>) -> Self {
        self.data_dir = dir;
        self
    }

    /// The data directory durable topics are looked for in.
    pub fn data_dir(&self) -> Option<&std::path::Path> {
        self.data_dir.as_deref()
    }

    /// Choose how topics opened from now on renew their leases.
    pub fn with_renewal(mut self, policy: RenewalPolicy) -> Self {
        self.renewal = policy;
        self
    }

    /// Let [`TopicManager::create`] make topics of any size. By default it
    /// refuses, with [`Error::NoSpace`] and before allocating anything, a
    /// topic whose regions together exceed the free space of `/dev/shm` or
    /// [`crate::MEMORY_SHARE_PERCENT`] % of the memory available
    /// (`MemAvailable`, or the room under the cgroup's memory limit if
    /// smaller): a tmpfs can be larger than the memory behind it, and
    /// filling it can take the host down. Force only when you know the
    /// memory is there.
    pub fn force_size(mut self, force: bool) -> Self {
        self.force_size = force;
        self
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.ns
    }

    /// This process's liveness token id in the namespace.
    pub fn token_id(&self) -> u32 {
        self.token.id()
    }

    /// Create a topic.
    ///
    /// # Errors
    /// [`Error::TopicExists`], [`Error::InvalidName`], [`Error::InvalidConfig`],
    /// [`Error::NoSpace`] when `/dev/shm` is full or the topic is too large
    /// for the host (see [`TopicManager::force_size`]); nothing is left
    /// behind then. [`Error::PermissionDenied`]. For a durable topic
    /// ([`TopicConfig::storage`]): [`Error::DataDir`] for a missing or
    /// unwritable directory, [`Error::NoSpace`] when its file system cannot
    /// hold the topic, [`Error::TopicExists`] also when the directory holds
    /// the topic's files already (open it instead).
    pub fn create(&self, topic: &str, config: TopicConfig) -> Result<Topic> {
        name::validate_topic(topic)?;
        let geo = config.validate()?;
        let storage = config.storage.prepare(&self.ns, config.mode)?;
        let config = TopicConfig {
            storage: storage.clone(),
            ..config
        };
        if let Storage::File { dir } = &storage {
            let exists = || Error::TopicExists {
                namespace: self.ns.clone(),
                topic: topic.to_string(),
            };
            // The stub holds the meta name in /dev/shm: no shm topic of this
            // name can be made while it exists, and the reverse.
            storage::register(&self.ns, topic, dir, config.mode).map_err(|e| {
                if e.errno == nix::errno::Errno::EEXIST {
                    exists()
                } else {
                    Error::from_os(e, 0)
                }
            })?;
            if storage::has_topic(dir, &self.ns, topic) {
                // Made before a reboot, say: open it instead.
                storage::unregister(&self.ns, topic);
                return Err(exists());
            }
            let made = self.create_in(topic, config, geo, &storage);
            if made.is_err() {
                storage::unregister(&self.ns, topic);
            }
            return made;
        }
        self.create_in(topic, config, geo, &storage)
    }

    fn create_in(
        &self,
        topic: &str,
        config: TopicConfig,
        geo: Geometry,
        storage: &Storage,
    ) -> Result<Topic> {
        let now = os::now_ns();
        let ttl = config.retention.as_nanos().min(u128::from(u64::MAX / 4)) as u64;
        let meta_name = name::meta_region(&self.ns, topic);
        let header = MetaHeader::new(
            config.partitions,
            config.effective_max_partitions(),
            config.overflow.code(),
            config.slots,
            config.slot_size,
            ttl,
            config.mode,
            config.dead_group_timeout.as_millis() as u32,
            now,
        )
        .with_groups(
            config.max_groups,
            config.max_members,
            config.group_retention.as_millis() as u32,
        )
        .with_timestamp(config.timestamp.code());
        let mut header = header;
        if storage.is_file() {
            header.storage_flags = storage::FLAG_FILE
                | if config.expire_files {
                    storage::FLAG_EXPIRE_FILES
                } else {
                    0
                };
            (header.sync_mode, header.sync_interval_ns) = config.sync.code();
        }
        let need = (geo.region_len as u64)
            .saturating_mul(u64::from(config.partitions))
            .saturating_add(header.region_len);
        if !self.force_size {
            match storage {
                Storage::Shm => crate::capacity::check(&meta_name, need)?,
                // A disk cannot take the host down the way a full tmpfs
                // can; only refuse, before allocating anything, what
                // cannot fit (the preallocation would fail half-way).
                Storage::File { .. } => storage::check_free(storage, &meta_name, need)?,
            }
        }
        let meta = Region::create_meta_in(storage, &meta_name, header, config.mode).map_err(
            |e| match e {
                Error::Os(os) if os.errno == nix::errno::Errno::EEXIST => Error::TopicExists {
                    namespace: self.ns.clone(),
                    topic: topic.to_string(),
                },
                e => e,
            },
        )?;
        let mut parts = Vec::with_capacity(config.partitions as usize);
        for p in 0..config.partitions {
            let pname = name::partition_region(&self.ns, topic, p);
            let created = create_partition_region(storage, &pname, geo, p, &config, ttl, 0);
            match created {
                Ok(r) => parts.push(Partition { region: r, geo }),
                Err(e) => {
                    for q in 0..p {
                        let _ = storage.remove(&name::partition_region(&self.ns, topic, q));
                    }
                    let _ = storage.remove(&meta_name);
                    return Err(e);
                }
            }
        }
        meta.publish_meta();
        let meta_geo = match meta.meta_geometry() {
            Ok(g) => g,
            Err(e) => {
                for p in 0..config.partitions {
                    let _ = storage.remove(&name::partition_region(&self.ns, topic, p));
                }
                let _ = storage.remove(&meta_name);
                return Err(e);
            }
        };
        if storage.is_file() {
            // The new topic itself is durable before create returns: its
            // headers and its files' names are on the disk.
            let _ = meta.sync_range(0, meta.len());
            for part in &parts {
                let _ = part.region.sync_range(0, crate::layout::PARTITION_HEADER);
            }
            storage.sync_names(&self.ns);
        }
        let config = TopicConfig {
            max_partitions: meta_geo.max_partitions,
            ..config
        };
        Ok(self.finish(topic, config, meta, meta_geo, geo, parts))
    }

    /// Open an existing topic by name.
    ///
    /// # Errors
    /// [`Error::TopicNotFound`], or [`Error::BadRegion`] if a region of the
    /// topic is malformed, [`Error::LeaseExpired`] if it was reclaimed (also
    /// when a delete or the supervisor removes it while it is being opened).
    pub fn open(&self, topic: &str) -> Result<Topic> {
        self.open_in(topic, None)
    }

    /// Where `topic` lives: a registry stub in `/dev/shm` names its data
    /// directory, or else its meta file is found in `hint` or the
    /// manager's data directory (the stub is then written again for the
    /// other processes); `None` if it is nowhere.
    fn locate(&self, topic: &str, hint: Option<&std::path::Path>) -> Result<Option<Storage>> {
        match storage::lookup(&self.ns, topic)? {
            Lookup::Shm => Ok(Some(Storage::Shm)),
            Lookup::File(dir) => Ok(Some(Storage::File { dir })),
            Lookup::Missing => {
                for dir in hint.into_iter().chain(self.data_dir.as_deref()) {
                    if storage::has_topic(dir, &self.ns, topic) {
                        let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
                        let file = Storage::File { dir: dir.clone() };
                        let mode = file
                            .path(&name::meta_region(&self.ns, topic))
                            .and_then(|p| std::fs::metadata(p).ok())
                            .map_or(0o600, |m| {
                                use std::os::unix::fs::PermissionsExt;
                                m.permissions().mode() & 0o666
                            });
                        // Lost the race to another opener (or a shm topic
                        // of the name was made meanwhile): look again.
                        if storage::register(&self.ns, topic, &dir, mode).is_err() {
                            return match storage::lookup(&self.ns, topic)? {
                                Lookup::Shm => Ok(Some(Storage::Shm)),
                                Lookup::File(dir) => Ok(Some(Storage::File { dir })),
                                Lookup::Missing => Ok(Some(file)),
                            };
                        }
                        return Ok(Some(file));
                    }
                }
                Ok(None)
            }
        }
    }

    fn open_in(&self, topic: &str, hint: Option<&std::path::Path>) -> Result<Topic> {
        name::validate_topic(topic)?;
        let meta_name = name::meta_region(&self.ns, topic);
        let not_found = || Error::TopicNotFound {
            namespace: self.ns.clone(),
            topic: topic.to_string(),
        };
        let storage = self.locate(topic, hint)?.ok_or_else(not_found)?;
        let meta = Region::attach_in(&storage, &meta_name, KIND_META)?.ok_or_else(not_found)?;
        let meta_geo = meta.meta_geometry()?;
        let h = meta.meta_header();
        if lease::is_reclaimed(&h.lease) {
            return Err(Error::LeaseExpired {
                topic: topic.to_string(),
            });
        }
        let bad = |problem: RegionProblem| Error::BadRegion {
            region: meta_name.clone(),
            problem,
        };
        let overflow = Overflow::from_code(h.overflow).ok_or_else(|| {
            bad(RegionProblem::BadGeometry(format!(
                "overflow policy {}",
                h.overflow
            )))
        })?;
        let sync = if storage.is_file() {
            SyncPolicy::from_code(h.sync_mode, h.sync_interval_ns).ok_or_else(|| {
                bad(RegionProblem::BadGeometry(format!(
                    "sync policy {}",
                    h.sync_mode
                )))
            })?
        } else {
            SyncPolicy::None
        };
        let timestamp = crate::config::Timestamp::from_code(h.timestamp).ok_or_else(|| {
            bad(RegionProblem::BadGeometry(format!(
                "timestamp clock {}",
                h.timestamp
            )))
        })?;
        let config = TopicConfig {
            partitions: meta_geo.partitions,
            slots: h.slots,
            slot_size: h.slot_size,
            retention: Duration::from_nanos(h.retention_ns),
            overflow,
            mode: h.mode,
            dead_group_timeout: Duration::from_millis(u64::from(h.dead_group_ms)),
            group_retention: Duration::from_millis(u64::from(h.group_retention_ms)),
            max_groups: meta_geo.group_cap,
            max_members: meta_geo.member_cap,
            max_partitions: meta_geo.max_partitions,
            expire_files: storage.is_file() && h.storage_flags & storage::FLAG_EXPIRE_FILES != 0,
            storage: storage.clone(),
            sync,
            timestamp,
        };
        let geo = Geometry::new(config.slots, config.slot_size)
            .ok_or_else(|| bad(crate::region::geometry_problem(h.slots, h.slot_size)))?;
        let count =
            growth::published(&h.partition_count, meta_geo.max_partitions).max(meta_geo.partitions);
        let mut parts = Vec::with_capacity(count as usize);
        for p in 0..count {
            let pname = name::partition_region(&self.ns, topic, p);
            match attach_partition(&storage, &pname, p, geo) {
                Ok(region) if !lease::is_reclaimed(&region.partition_header().lease) => {
                    parts.push(Partition { region, geo });
                }
                Ok(_) => return Err(self.lost(topic)),
                // A partition missing or not matching the meta region is what
                // an opener sees while a delete or the supervisor removes the
                // topic (partitions go first), or after a new topic of the
                // same name replaced them: the meta region we hold is then
                // marked reclaimed or unlinked within moments, so wait for
                // that. A scribbled partition is no race: look once.
                Err((e, racy)) => {
                    let wait = if racy { GONE_WAIT } else { Duration::ZERO };
                    return Err(self.gone_or(topic, &storage, &meta, e, wait));
                }
            }
        }
        // Deleted while we attached: some partitions may be a new topic's.
        if lease::is_reclaimed(&meta.meta_header().lease) {
            return Err(self.lost(topic));
        }
        Ok(self.finish(topic, config, meta, meta_geo, geo, parts))
    }

    fn lost(&self, topic: &str) -> Error {
        Error::LeaseExpired {
            topic: topic.to_string(),
        }
    }

    /// `e` (a problem with a partition of `topic`), unless the topic's meta
    /// region `meta` turns out to be going away: then [`Error::LeaseExpired`]
    /// or [`Error::TopicNotFound`]. Waits up to `wait` for the deleter to
    /// get there; a topic that stays damaged gets `e`.
    fn gone_or(
        &self,
        topic: &str,
        storage: &Storage,
        meta: &Region,
        e: Error,
        wait: Duration,
    ) -> Error {
        let deadline = Deadline::after(wait);
        loop {
            if lease::is_reclaimed(&meta.meta_header().lease) {
                return self.lost(topic);
            }
            match storage.open(meta.name()) {
                Err(os) if os.errno == nix::errno::Errno::ENOENT => {
                    return Error::TopicNotFound {
                        namespace: self.ns.clone(),
                        topic: topic.to_string(),
                    }
                }
                _ if deadline.passed() => return e,
                _ => std::thread::sleep(Duration::from_millis(1)),
            }
        }
    }

    /// Open the topic, creating it with `config` if it does not exist.
    /// Either side of a producer/consumer pair may start first this way.
    ///
    /// An existing topic is returned only if it was created with the same
    /// configuration: every field of [`TopicConfig`] is compared (see
    /// [`Error::ConfigMismatch`]). To take a topic as it is, whatever its
    /// configuration, use [`TopicManager::open`].
    ///
    /// A topic being deleted or reclaimed while this runs is waited for (up
    /// to [`ATTACH_WAIT`], the time a delete takes to finish) and created
    /// anew.
    ///
    /// # Errors
    /// [`Error::ConfigMismatch`], and as [`TopicManager::create`] and
    /// [`TopicManager::open`]: [`Error::LeaseExpired`] if a reclaimed topic
    /// of that name is still not removed after the wait.
    pub fn open_or_create(&self, topic: &str, config: TopicConfig) -> Result<Topic> {
        let deadline = Deadline::after(ATTACH_WAIT);
        // A durable topic is compared by its absolute directory, and found
        // there even when /dev/shm forgot it.
        let config = match &config.storage {
            Storage::File { dir } => TopicConfig {
                storage: Storage::File {
                    dir: std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone()),
                },
                ..config
            },
            Storage::Shm => config,
        };
        let hint = config.storage.dir().map(std::path::Path::to_path_buf);
        loop {
            let gone = match self.open_in(topic, hint.as_deref()) {
                Ok(t) => {
                    let differences = crate::config::differences(&config, t.config());
                    if differences.is_empty() {
                        return Ok(t);
                    }
                    return Err(Error::ConfigMismatch {
                        topic: topic.to_string(),
                        differences,
                    });
                }
                Err(e @ (Error::TopicNotFound { .. } | Error::LeaseExpired { .. })) => e,
                Err(e) => return Err(e),
            };
            match self.create(topic, config.clone()) {
                // Created by someone else since, or the old one is still
                // being removed: look again.
                Err(Error::TopicExists { .. }) if !deadline.passed() => {
                    std::thread::sleep(Duration::from_micros(200));
                }
                Err(Error::TopicExists { .. }) => return Err(gone),
                r => return r,
            }
        }
    }

    fn finish(
        &self,
        topic: &str,
        config: TopicConfig,
        meta: Region,
        meta_geo: MetaGeometry,
        geo: Geometry,
        parts: Vec<Partition>,
    ) -> Topic {
        let attached = parts.len() as u32;
        let mut slots: Vec<OnceLock<Partition>> = (0..meta_geo.max_partitions.max(attached))
            .map(|_| OnceLock::new())
            .collect();
        for (slot, part) in slots.iter_mut().zip(parts) {
            let _ = slot.set(part);
        }
        let inner = Arc::new(TopicInner {
            ns: self.ns.clone(),
            name: topic.to_string(),
            config,
            meta,
            meta_geo,
            geo,
            parts: slots.into_boxed_slice(),
            attached: AtomicU32::new(attached),
            attach_lock: Mutex::new(()),
            token: self.token.clone(),
            sync_clock: (0..=meta_geo.max_partitions)
                .map(|_| AtomicU64::new(os::now_ns()))
                .collect(),
        });
        // Only a manager that renews in the background renews on open: under
        // `Manual` (what observers such as `shmq list`/`info` use) opening a
        // topic must not extend its life.
        if self.renewal == RenewalPolicy::Background {
            let _ = inner.renew();
            renewal::register(&inner);
        }
        Topic { inner }
    }

    /// Delete a topic: unlink every region and mark it reclaimed (attached
    /// processes get [`Error::LeaseExpired`] on their next operation). A
    /// durable topic's files are removed, then its registry stub.
    /// Returns whether anything was removed (`false`: no such topic).
    ///
    /// Stops at the first region it may not remove, leaving that region and
    /// the rest untouched (nothing is marked reclaimed that stays).
    ///
    /// # Errors
    /// [`Error::InvalidName`], [`Error::PermissionDenied`] if this process
    /// may not remove a region (another user's topic), [`Error::BadRegion`]
    /// if a name of the topic is not a shared-memory object (e.g. a
    /// directory), another OS error while unlinking.
    pub fn delete(&self, topic: &str) -> Result<bool> {
        name::validate_topic(topic)?;
        let prefix = name::topic_prefix(&self.ns, topic);
        let mut removed = false;
        // A durable topic's files first (partitions, then meta), then what
        // /dev/shm holds of it: the registry stub, last.
        if let Some(file @ Storage::File { .. }) = self.locate(topic, None)? {
            let mut names = file.list(&prefix)?;
            names.sort_by_key(|n| n.ends_with(".meta"));
            for region in names {
                if let Some(RegionName::Meta { .. } | RegionName::Partition { .. }) =
                    name::parse(&self.ns, &region)
                {
                    removed |= retire_in(&file, &region)?;
                }
            }
            file.sync_names(&self.ns);
        }
        let mut names = os::list_shm(&prefix)?;
        // Partitions first, meta last: a concurrent creator cannot make a new
        // topic of this name (its meta would collide) until we are done.
        names.sort_by_key(|n| n.ends_with(".meta"));
        for region in names {
            if let Some(RegionName::Meta { .. } | RegionName::Partition { .. }) =
                name::parse(&self.ns, &region)
            {
                removed |= retire(&region)?;
            }
        }
        Ok(removed)
    }

    /// Names of the topics in this namespace.
    ///
    /// # Errors
    /// `/dev/shm` cannot be listed.
    pub fn list(&self) -> Result<Vec<String>> {
        let prefix = name::namespace_prefix(&self.ns);
        let mut topics: Vec<String> = os::list_shm(&prefix)?
            .into_iter()
            .filter_map(|f| match name::parse(&self.ns, &f) {
                Some(RegionName::Meta { topic }) => Some(topic),
                _ => None,
            })
            .collect();
        // Durable topics /dev/shm forgot (after a reboot).
        if let Some(dir) = &self.data_dir {
            let known = topics.clone();
            topics.extend(
                storage::topics_in(dir, &self.ns)
                    .into_iter()
                    .filter(|t| !known.contains(t)),
            );
            topics.sort();
        }
        Ok(topics)
    }
}

/// Create partition region `p` (`pname`) owned by `writer` (`0` = no
/// writer yet). A region already under that name is an orphan, since the
/// caller holds the topic's meta name (create) or the growth claim
/// exclusively, so nobody can have attached it as a live partition: fence
/// whoever still maps it, then replace it.
fn create_partition_region(
    storage: &Storage,
    pname: &str,
    geo: Geometry,
    p: u32,
    config: &TopicConfig,
    ttl: u64,
    writer: u64,
) -> Result<Region> {
    let create = || {
        Region::create_partition_in(
            storage,
            pname,
            geo,
            p,
            config.overflow.code(),
            config.mode,
            os::now_ns(),
            ttl,
            writer,
        )
    };
    match create() {
        Err(Error::Os(e)) if e.errno == nix::errno::Errno::EEXIST => {
            retire_in(storage, pname)?;
            create()
        }
        r => r,
    }
}

/// Unlink a region and, if it is a valid shmq region, mark it reclaimed so
/// that processes still mapping it stop using it. Returns `false` if it was
/// already gone.
///
/// The mark comes after a successful unlink: a caller who may not remove
/// the region (another user's topic in the sticky `/dev/shm`) gets the error
/// and changes nothing. The region is mapped before the unlink, so the mark
/// still reaches it once its name is gone.
fn retire(region: &str) -> Result<bool> {
    retire_in(&Storage::Shm, region)
}

/// [`retire`] in `storage`.
fn retire_in(storage: &Storage, region: &str) -> Result<bool> {
    let mapped = [KIND_PARTITION, KIND_META]
        .into_iter()
        .find_map(|kind| Some((kind, Region::attach_in(storage, region, kind).ok()??)));
    match storage.remove(region) {
        Ok(()) => {}
        Err(e) if e.errno == nix::errno::Errno::ENOENT => return Ok(false),
        Err(e) => return Err(Error::from_os(e, 0)),
    }
    if let Some((kind, r)) = mapped {
        match kind {
            KIND_PARTITION => lease::mark_reclaimed(&r.partition_header().lease),
            _ => lease::mark_reclaimed(&r.meta_header().lease),
        };
    }
    Ok(true)
}

/// Attach partition `p` and check it against the topic's geometry. The
/// error says whether a delete in progress can explain it (a missing or
/// foreign partition) or not (a malformed one).
fn attach_partition(
    storage: &Storage,
    pname: &str,
    p: u32,
    geo: Geometry,
) -> Result<Region, (Error, bool)> {
    let region = match Region::attach_in(storage, pname, KIND_PARTITION) {
        Ok(Some(region)) => region,
        Ok(None) => {
            let missing = Error::BadRegion {
                region: storage.display(pname),
                problem: RegionProblem::BadGeometry(
                    "partition region missing while its topic's meta region exists (removed \
                     by hand, or a delete died half-way); delete the topic"
                        .into(),
                ),
            };
            return Err((missing, true));
        }
        Err(e) => return Err((e, false)),
    };
    let pgeo = region.partition_geometry().map_err(|e| (e, false))?;
    let ph = region.partition_header();
    let mut wrong = Vec::new();
    if ph.partition != p {
        wrong.push(format!("it says it is partition {}", ph.partition));
    }
    if pgeo.slots != geo.slots {
        wrong.push(format!(
            "it has {} slots, the topic {}",
            pgeo.slots, geo.slots
        ));
    }
    if pgeo.slot_size != geo.slot_size {
        wrong.push(format!(
            "its slots hold {} bytes, the topic's {}",
            pgeo.slot_size, geo.slot_size
        ));
    }
    if wrong.is_empty() && pgeo != geo {
        wrong.push(format!(
            "its layout {pgeo:?} differs from the topic's {geo:?}"
        ));
    }
    if !wrong.is_empty() {
        let foreign = Error::BadRegion {
            region: pname.to_string(),
            problem: RegionProblem::BadGeometry(format!(
                "does not belong to its topic as partition {p}: {}",
                wrong.join(", ")
            )),
        };
        return Err((foreign, true));
    }
    Ok(region)
}

/// An open topic: its configuration and mapped regions. Cheap to clone; the
/// regions stay mapped (and leased) while any clone, producer or consumer of
/// it is alive.
#[derive(Clone, Debug)]
pub struct Topic {
    pub(crate) inner: Arc<TopicInner>,
}

#[derive(Debug)]
pub(crate) struct TopicInner {
    pub(crate) ns: String,
    pub(crate) name: String,
    pub(crate) config: TopicConfig,
    pub(crate) meta: Region,
    pub(crate) meta_geo: MetaGeometry,
    /// Geometry of every partition ring.
    pub(crate) geo: Geometry,
    /// One entry per partition the topic may grow to; `0 .. attached` are
    /// set (a grower may also set its new partition's entry just before).
    parts: Box<[OnceLock<Partition>]>,
    /// Partitions this process has mapped: `parts[.. attached]` are set.
    attached: AtomicU32,
    /// Serialises attaching newly published partitions in this process.
    attach_lock: Mutex<()>,
    pub(crate) token: Arc<Token>,
    /// For [`SyncPolicy::Interval`]: when this process last forced each
    /// partition (index `p`) and the meta region (last index) to the disk,
    /// Unix ns.
    sync_clock: Box<[AtomicU64]>,
}

#[derive(Debug)]
pub(crate) struct Partition {
    pub(crate) region: Region,
    pub(crate) geo: Geometry,
}

impl Partition {
    #[inline]
    pub(crate) fn header(&self) -> &PartitionHeader {
        self.region.partition_header()
    }
    #[inline]
    pub(crate) fn slots(&self) -> MappedSlots<'_> {
        MappedSlots::new(&self.region, self.geo)
    }
}

impl TopicInner {
    /// Renew every lease of the topic (mapping newly published partitions
    /// first, so every attached process renews them too).
    pub(crate) fn renew(&self) -> Result<(), LeaseExpired> {
        let now = os::now_ns();
        lease::renew(&self.meta.meta_header().lease, now)?;
        let _ = self.refresh();
        for p in self.parts.iter().filter_map(OnceLock::get) {
            lease::renew(&p.header().lease, now)?;
        }
        Ok(())
    }

    /// Partitions the topic may grow to.
    pub(crate) fn max_partitions(&self) -> u32 {
        self.meta_geo.max_partitions
    }

    /// The published partition count: one Acquire load (the cheap "did the
    /// topic grow?" check of every poll).
    #[inline]
    pub(crate) fn published(&self) -> u32 {
        growth::published(
            &self.meta.meta_header().partition_count,
            self.max_partitions(),
        )
        .max(self.meta_geo.partitions)
    }

    /// Partitions mapped by this process (`0 .. attached`).
    #[inline]
    pub(crate) fn attached(&self) -> u32 {
        self.attached.load(Ordering::Acquire)
    }

    /// Map every partition published since the last call; returns how many
    /// partitions this process now has mapped.
    ///
    /// # Errors
    /// [`Error::LeaseExpired`], or a new partition's region is malformed.
    pub(crate) fn refresh(&self) -> Result<u32> {
        let have = self.attached();
        if self.published() <= have {
            return Ok(have);
        }
        if self.reclaimed() {
            return Err(self.expired());
        }
        let _guard = self.attach_lock.lock().unwrap_or_else(|e| e.into_inner());
        let n = self.published().min(self.parts.len() as u32);
        let mut have = self.attached();
        while have < n {
            let slot = &self.parts[have as usize];
            if slot.get().is_none() {
                let pname = name::partition_region(&self.ns, &self.name, have);
                let region = attach_partition(&self.config.storage, &pname, have, self.geo)
                    .map_err(|(e, _)| e)?;
                if lease::is_reclaimed(&region.partition_header().lease) {
                    return Err(self.expired());
                }
                let _ = slot.set(Partition {
                    region,
                    geo: self.geo,
                });
            }
            have += 1;
            self.attached.store(have, Ordering::Release);
        }
        Ok(have)
    }

    /// Mapped partitions, in index order.
    pub(crate) fn parts(&self) -> impl Iterator<Item = &Partition> {
        self.parts.iter().map_while(OnceLock::get)
    }

    /// Partition `p`, which the caller knows is mapped: its index comes from
    /// this process's own state (a producer's claimed partitions, a
    /// consumer's cursors), never from shared memory, and a mapped partition
    /// stays mapped while the topic is open.
    #[inline]
    pub(crate) fn part(&self, p: u32) -> &Partition {
        self.mapped(p)
            .expect("shmq bug: a claimed or assigned partition is not mapped")
    }

    /// Partition `p` if this process has it mapped (no refresh).
    #[inline]
    pub(crate) fn mapped(&self, p: u32) -> Option<&Partition> {
        self.parts.get(p as usize).and_then(OnceLock::get)
    }

    /// Add one partition to the topic, owned from birth by this process's
    /// token (writer lease epoch 1). Returns its index and writer-lease word,
    /// or `None` if the topic has `max_partitions` already. See
    /// `crate::growth` for the protocol.
    ///
    /// # Errors
    /// [`Error::GrowthStalled`] if another live process has been creating a
    /// partition for [`GROW_WAIT`], [`Error::LeaseExpired`], OS errors
    /// creating the region ([`Error::NoSpace`], ...).
    pub(crate) fn grow(&self) -> Result<Option<(u32, u64)>> {
        let h = self.meta.meta_header();
        let me = self.token.id();
        let max = self.max_partitions();
        let start = Instant::now();
        loop {
            if self.reclaimed() {
                return Err(self.expired());
            }
            let began = growth::begin(&h.grow, &h.partition_count, max, me, |t| {
                token::probe(&self.ns, t).is_dead()
            });
            let (target, word) = match began {
                Begin::Full => return Ok(None),
                Begin::Busy { owner, target } => {
                    if start.elapsed() >= GROW_WAIT {
                        return Err(Error::GrowthStalled {
                            topic: self.name.clone(),
                            partition: target,
                            pid: token::probe(&self.ns, owner).pid().unwrap_or(0),
                            waited_ms: start.elapsed().as_millis() as u64,
                        });
                    }
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                Begin::Mine { target, word, .. } => (target, word),
            };
            // A count below partitions known to exist was scribbled: never
            // "replace" a live partition's region.
            let floor = self.attached().max(self.meta_geo.partitions);
            if target < floor {
                growth::end(&h.grow, word);
                return Err(Error::BadRegion {
                    region: self.meta.name().to_string(),
                    problem: RegionProblem::BadGeometry(format!(
                        "published partition count {target} is below the {floor} partitions that exist"
                    )),
                });
            }
            let writer = crate::writer_lease::pack(1, me);
            let region = match self.create_grown(target, writer) {
                Ok(r) => r,
                Err(e) => {
                    growth::end(&h.grow, word);
                    return Err(e);
                }
            };
            if self.reclaimed() {
                // Deleted while we grew it: leave nothing behind.
                lease::mark_reclaimed(&region.partition_header().lease);
                let _ = self.config.storage.remove(region.name());
                growth::end(&h.grow, word);
                return Err(self.expired());
            }
            if !growth::publish(&h.partition_count, target) {
                // Only if we were wrongly judged dead and our claim taken:
                // the partition is someone else's now; try again.
                growth::end(&h.grow, word);
                continue;
            }
            growth::end(&h.grow, word);
            // Parked readers re-poll now and pick the new partition up.
            crate::wait::wake_all(h);
            if let Some(slot) = self.parts.get(target as usize) {
                let _ = slot.set(Partition {
                    region,
                    geo: self.geo,
                });
            }
            self.refresh()?;
            return Ok(Some((target, writer)));
        }
    }

    /// Create partition region `p` (we hold the growth claim for it). A
    /// region already there was left by a grower that died before
    /// publishing it (nobody can have attached it): replace it.
    fn create_grown(&self, p: u32, writer: u64) -> Result<Region> {
        let pname = name::partition_region(&self.ns, &self.name, p);
        // Growth is automatic, so it gets the same guard as `create`: a new
        // partition that would not fit (or would eat into the memory behind
        // tmpfs) is refused with `NoSpace` before anything is allocated.
        match &self.config.storage {
            Storage::Shm => crate::capacity::check(&pname, self.geo.region_len as u64)?,
            file => storage::check_free(file, &pname, self.geo.region_len as u64)?,
        }
        let ttl = self
            .config
            .retention
            .as_nanos()
            .min(u128::from(u64::MAX / 4)) as u64;
        let region = create_partition_region(
            &self.config.storage,
            &pname,
            self.geo,
            p,
            &self.config,
            ttl,
            writer,
        )?;
        if self.config.storage.is_file() {
            let _ = region.sync_range(0, crate::layout::PARTITION_HEADER);
            self.config.storage.sync_names(&self.ns);
        }
        Ok(region)
    }

    pub(crate) fn reclaimed(&self) -> bool {
        lease::is_reclaimed(&self.meta.meta_header().lease)
    }

    pub(crate) fn group(&self, g: u32) -> GroupView<'_> {
        self.meta.group(self.meta_geo, g)
    }

    /// The API error for a refused ring write on `partition`.
    pub(crate) fn write_error(&self, partition: u32, e: crate::ring::WriteError) -> Error {
        tracing::warn!(topic = %self.name, partition, refusal = ?e, "shmq: write refused (fenced by a new writer, or the lease expired)");
        match e {
            crate::ring::WriteError::Fenced { current } => Error::Fenced {
                topic: self.name.clone(),
                partition,
                epoch: crate::writer_lease::unpack(current).0,
            },
            crate::ring::WriteError::LeaseExpired => self.expired(),
        }
    }

    pub(crate) fn expired(&self) -> Error {
        Error::LeaseExpired {
            topic: self.name.clone(),
        }
    }

    /// Partition `p`, mapping it first if it was published since the last
    /// refresh.
    ///
    /// # Errors
    /// [`Error::NoSuchPartition`] if the topic has not (yet) grown to it.
    #[inline]
    pub(crate) fn partition(&self, p: u32) -> Result<&Partition> {
        if let Some(part) = self.mapped(p) {
            return Ok(part);
        }
        let have = self.refresh()?;
        self.mapped(p).ok_or_else(|| Error::NoSuchPartition {
            topic: self.name.clone(),
            partition: p,
            partitions: have,
        })
    }
}

impl Topic {
    /// Topic name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }
    /// Namespace.
    pub fn namespace(&self) -> &str {
        &self.inner.ns
    }
    /// The configuration the topic was created with (`partitions` is the
    /// count at creation; see [`Topic::partitions`] for the current one).
    pub fn config(&self) -> &TopicConfig {
        &self.inner.config
    }
    /// Number of partitions now: the topic grows (up to
    /// [`Topic::max_partitions`]) when a producer finds none free. Maps any
    /// partition published since the last call; one atomic load otherwise.
    pub fn partitions(&self) -> u32 {
        self.inner
            .refresh()
            .unwrap_or_else(|_| self.inner.attached())
    }
    /// How many partitions the topic may grow to.
    pub fn max_partitions(&self) -> u32 {
        self.inner.max_partitions()
    }
    /// Renew the topic's leases now (what the background renewal does; call
    /// it yourself, at a fraction of the retention, under
    /// [`RenewalPolicy::Manual`]).
    ///
    /// # Errors
    /// [`Error::LeaseExpired`] if the supervisor already reclaimed the topic.
    pub fn renew(&self) -> Result<()> {
        self.inner.renew().map_err(|_| self.inner.expired())
    }
    /// The topic lease's expiry (Unix-epoch ns; `u64::MAX` once reclaimed).
    /// Renewals move it forward; the supervisor reclaims the topic once it is
    /// in the past.
    pub fn lease_expiry_ns(&self) -> u64 {
        self.inner
            .meta
            .meta_header()
            .lease
            .expiry
            .load(crate::sync::Ordering::Acquire)
    }
    /// Whether the topic was deleted or reclaimed under us.
    pub fn is_reclaimed(&self) -> bool {
        self.inner.reclaimed()
    }
    /// Delete consumer group `group`: its entry, committed offsets and
    /// counters are freed at once. Refused while a member of it is a live
    /// process, unless `force` (such members then get
    /// [`Error::GroupDeleted`] at their next heartbeat or commit).
    ///
    /// # Errors
    /// [`Error::GroupNotFound`], [`Error::GroupBusy`], [`Error::InvalidName`].
    pub fn delete_group(&self, group: &str, force: bool) -> Result<()> {
        let t = crate::group_table::Table::of(&self.inner);
        crate::group_table::delete(&t, group, force).map(|_| ())
    }
    /// The committed offset (next to process) of `group` on `partition`,
    /// read without joining or creating the group; `None` if the group does
    /// not exist or never committed there.
    ///
    /// # Errors
    /// [`Error::NoSuchPartition`], [`Error::InvalidName`].
    pub fn committed(&self, group: &str, partition: u32) -> Result<Option<u64>> {
        name::validate_group(group)?;
        self.inner.partition(partition)?;
        Ok(crate::group_table::find(&self.inner, group).and_then(|g| {
            self.inner.group(g).partitions[partition as usize]
                .committed
                .load(crate::sync::Ordering::Acquire)
                .checked_sub(1)
        }))
    }
    /// Next offset the writer of `partition` will publish.
    ///
    /// # Errors
    /// [`Error::NoSuchPartition`].
    pub fn write_offset(&self, partition: u32) -> Result<u64> {
        let part = self.inner.partition(partition)?;
        Ok(crate::ring::checked_latest(part.header(), &part.slots()))
    }
}

// ---------------------------------------------------------------------------
// Durable topics (issue 16): the sync policy, applied after each publish and
// commit. Nothing for shared-memory topics (one branch).
// ---------------------------------------------------------------------------

impl TopicInner {
    /// The sync policy in force: the topic's, for a durable topic.
    #[inline]
    pub(crate) fn sync_policy(&self) -> SyncPolicy {
        if self.config.storage.is_file() {
            self.config.sync
        } else {
            SyncPolicy::None
        }
    }

    /// Whether an [`SyncPolicy::Interval`] clock (`clock`) is due now, and
    /// if so restart it.
    fn interval_due(&self, clock: usize, every: Duration) -> bool {
        let Some(c) = self.sync_clock.get(clock) else {
            return false;
        };
        let now = os::now_ns();
        let last = c.load(Ordering::Relaxed);
        let every = every.as_nanos().min(u128::from(u64::MAX)) as u64;
        now.saturating_sub(last) >= every
            && c.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// After a producer published offsets `first .. next` of partition `p`
    /// (and its write cursor): force them to the disk as the policy says.
    ///
    /// # Errors
    /// The records are published, but `msync` failed: they may not be on
    /// the disk.
    #[inline]
    pub(crate) fn after_publish(&self, p: u32, first: u64, next: u64) -> Result<()> {
        match self.sync_policy() {
            SyncPolicy::None => Ok(()),
            SyncPolicy::EveryBatch => self.sync_records(p, first, next),
            SyncPolicy::Interval(every) => {
                if self.interval_due(p as usize, every) {
                    self.sync_partition(p)
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Force the header and the slots of offsets `first .. next` of
    /// partition `p` to the disk.
    fn sync_records(&self, p: u32, first: u64, next: u64) -> Result<()> {
        let Some(part) = self.mapped(p) else {
            return Ok(());
        };
        let geo = part.geo;
        let header = crate::layout::PARTITION_HEADER;
        // The ring (`slots * stride` bytes) fits in the mapping, so in usize.
        let stride = geo.stride as usize;
        let count = next.saturating_sub(first).min(geo.slots);
        if count > 0 {
            let start = (first & geo.mask()) as usize;
            let first_run = (count as usize).min(geo.slots as usize - start);
            part.region
                .sync_range(header + start * stride, first_run * stride)?;
            let wrapped = count as usize - first_run;
            if wrapped > 0 {
                part.region.sync_range(header, wrapped * stride)?;
            }
        }
        part.region.sync_range(0, header)
    }

    /// Force all of partition `p` to the disk (only its dirty pages are
    /// written).
    pub(crate) fn sync_partition(&self, p: u32) -> Result<()> {
        match self.mapped(p) {
            Some(part) => part.region.sync_range(0, part.region.len()),
            None => Ok(()),
        }
    }

    /// A producer of partition `p` is going away: force what it wrote,
    /// under any policy but `None`.
    pub(crate) fn sync_on_close(&self, p: u32) {
        if self.sync_policy() != SyncPolicy::None {
            let _ = self.sync_partition(p);
        }
    }

    /// After a commit of consumer-group offsets: force the meta region to
    /// the disk as the policy says.
    ///
    /// # Errors
    /// The commit is stored, but `msync` failed: it may not be on the disk.
    pub(crate) fn after_commit(&self) -> Result<()> {
        let due = match self.sync_policy() {
            SyncPolicy::None => false,
            SyncPolicy::EveryBatch => true,
            SyncPolicy::Interval(every) => self.interval_due(self.sync_clock.len() - 1, every),
        };
        if due {
            self.meta.sync_range(0, self.meta.len())
        } else {
            Ok(())
        }
    }
}

impl Topic {
    /// Where the topic's regions live (shared memory, or the files of a
    /// durable topic).
    pub fn storage(&self) -> &Storage {
        &self.inner.config.storage
    }
}
