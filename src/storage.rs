//! Where a topic's regions live: named shared memory in `/dev/shm`, or
//! files in a data directory (durable topics). This module is the one place
//! that decides; the regions, the ring, the leases and the groups above it
//! see a mapped [`os::ShmFd`] either way, with the same layout.
//!
//! | region | [`Storage::Shm`] | [`Storage::File`] `{ dir }` |
//! |---|---|---|
//! | topic meta | `/dev/shm/shmq.<ns>.<topic>.meta` | `<dir>/<ns>/<topic>.meta` |
//! | partition `N` | `/dev/shm/shmq.<ns>.<topic>.p<N>` | `<dir>/<ns>/<topic>.p<N>` |
//! | registry stub | (none) | `/dev/shm/shmq.<ns>.<topic>.meta` |
//!
//! Regions keep their shm-style names (`shmq.<ns>.<topic>.p0`) everywhere in
//! the crate; [`Storage::path`] turns one into a file path.
//!
//! # The registry stub
//!
//! A durable topic leaves a small file in `/dev/shm` under its meta region's
//! name: [`STUB_MAGIC`] followed by the data directory (absolute, UTF-8).
//! It makes the topic findable by any process of the namespace without
//! configuration, and because it holds the meta name with `O_EXCL`, a shm
//! topic and a durable topic of one name cannot both be created. A reboot
//! wipes the stub with the rest of `/dev/shm`: the topic is then found
//! through the data directory ([`DATA_DIR_ENV`], `--storage DIR`,
//! `TopicManager::with_data_dir`), and opening it writes the stub again.
//!
//! Per-process liveness tokens stay in `/dev/shm` (they are meant to vanish
//! with their processes and with a reboot); the futex word readers park on
//! lives in the meta file, which works because futexes on a `MAP_SHARED`
//! file mapping are keyed by inode and offset, as they are on tmpfs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;

use crate::error::{Error, RegionProblem, Result};
use crate::name;
use crate::os::{self, OsError, ShmFd};

/// Environment variable naming the data directory in which durable topics
/// are looked up (and, for `shmq create`, made) when `/dev/shm` no longer
/// knows them.
pub const DATA_DIR_ENV: &str = "SHMQ_DATA_DIR";

/// First bytes of a registry stub (see the module docs).
pub const STUB_MAGIC: &[u8; 8] = b"SHMQFILE";

/// Longest data-directory path a stub records.
const STUB_MAX: usize = 4096;

/// Where a topic's regions live.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum Storage {
    /// Named shared memory in `/dev/shm`: as fast as it gets, gone at reboot.
    #[default]
    Shm,
    /// Files `<dir>/<namespace>/<topic>.{meta,p<N>}`, mapped `MAP_SHARED`:
    /// they survive a reboot. `dir` must exist and be writable; the
    /// namespace's subdirectory is made on create.
    File {
        /// The data directory.
        dir: PathBuf,
    },
}

/// When a durable topic's writes are forced to the disk. Every policy
/// survives the crash of any process (the page cache holds the data); they
/// differ in what survives the crash of the host (a power loss, a kernel
/// panic). See the README's "Durability" section.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SyncPolicy {
    /// Never forced: the kernel writes back on its own (about 30 s).
    #[default]
    None,
    /// Forced at the first send or commit after at least this long since the
    /// last one, and when a producer is dropped.
    Interval(Duration),
    /// Forced before `send`, `send_batch` and `commit` return: a record or a
    /// commit that returned is on the disk.
    EveryBatch,
}

const SYNC_NONE: u32 = 0;
const SYNC_INTERVAL: u32 = 1;
const SYNC_EVERY_BATCH: u32 = 2;

impl SyncPolicy {
    /// `(code, interval ns)` as stored in the meta header.
    pub(crate) fn code(self) -> (u32, u64) {
        match self {
            SyncPolicy::None => (SYNC_NONE, 0),
            SyncPolicy::Interval(d) => {
                (SYNC_INTERVAL, d.as_nanos().min(u128::from(u64::MAX)) as u64)
            }
            SyncPolicy::EveryBatch => (SYNC_EVERY_BATCH, 0),
        }
    }

    /// The policy stored in a meta header; `None` for an unknown code.
    pub(crate) fn from_code(code: u32, interval_ns: u64) -> Option<SyncPolicy> {
        match code {
            SYNC_NONE => Some(SyncPolicy::None),
            SYNC_INTERVAL => Some(SyncPolicy::Interval(Duration::from_nanos(interval_ns))),
            SYNC_EVERY_BATCH => Some(SyncPolicy::EveryBatch),
            _ => None,
        }
    }
}

impl std::fmt::Display for SyncPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SyncPolicy::None => f.write_str("none"),
            SyncPolicy::Interval(d) => write!(f, "interval {d:?}"),
            SyncPolicy::EveryBatch => f.write_str("every-batch"),
        }
    }
}

impl std::fmt::Display for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Storage::Shm => f.write_str("shm"),
            Storage::File { dir } => write!(f, "file:{}", dir.display()),
        }
    }
}

/// `shmq.<ns>.<rest>` → `(ns, rest)`.
fn split_region(region: &str) -> Option<(&str, &str)> {
    region
        .strip_prefix(name::PREFIX)?
        .strip_prefix('.')?
        .split_once('.')
}

impl Storage {
    /// Whether the regions are files.
    pub fn is_file(&self) -> bool {
        matches!(self, Storage::File { .. })
    }

    /// The data directory of a durable topic.
    pub fn dir(&self) -> Option<&Path> {
        match self {
            Storage::Shm => None,
            Storage::File { dir } => Some(dir),
        }
    }

    /// The file that holds `region` (`shmq.<ns>.<rest>` →
    /// `<dir>/<ns>/<rest>`); `None` for shared memory or a name that is not
    /// a region name.
    pub fn path(&self, region: &str) -> Option<PathBuf> {
        let dir = self.dir()?;
        let (ns, rest) = split_region(region)?;
        Some(dir.join(ns).join(rest))
    }

    fn path_or_einval(&self, call: &'static str, region: &str) -> Result<PathBuf, OsError> {
        self.path(region).ok_or(OsError {
            call,
            object: region.to_string(),
            errno: Errno::EINVAL,
        })
    }

    /// Where `region` is, for messages: its path, or its name in `/dev/shm`.
    pub fn display(&self, region: &str) -> String {
        match self.path(region) {
            Some(p) => p.display().to_string(),
            None => region.to_string(),
        }
    }

    /// Create `region` exclusively, sized and pre-allocated (see
    /// [`os::shm_create`], [`os::file_create`]).
    pub(crate) fn create(&self, region: &str, len: usize, mode: u32) -> Result<ShmFd, OsError> {
        match self {
            Storage::Shm => os::shm_create(region, len, mode),
            Storage::File { .. } => {
                os::file_create(&self.path_or_einval("open", region)?, len, mode)
            }
        }
    }

    /// Open the existing `region` read-write.
    pub(crate) fn open(&self, region: &str) -> Result<ShmFd, OsError> {
        match self {
            Storage::Shm => os::shm_open_existing(region),
            Storage::File { .. } => os::file_open_existing(&self.path_or_einval("open", region)?),
        }
    }

    /// Remove `region`'s name.
    pub(crate) fn remove(&self, region: &str) -> Result<(), OsError> {
        match self {
            Storage::Shm => os::shm_remove(region),
            Storage::File { .. } => os::file_remove(&self.path_or_einval("unlink", region)?),
        }
    }

    /// Region names (`shmq.<ns>.…`) starting with `prefix`, which must name
    /// the namespace (`shmq.<ns>.` or longer).
    pub(crate) fn list(&self, prefix: &str) -> Result<Vec<String>, OsError> {
        match self {
            Storage::Shm => os::list_shm(prefix),
            Storage::File { dir } => {
                let Some((ns, rest)) = split_region(prefix) else {
                    return Ok(Vec::new());
                };
                let head = name::namespace_prefix(ns);
                Ok(os::list_dir(&dir.join(ns), rest)?
                    .into_iter()
                    .map(|f| format!("{head}{f}"))
                    .collect())
            }
        }
    }

    /// What is at `region`'s place if it is not a regular file (a
    /// directory, a symbolic link...): the error that says so.
    pub(crate) fn not_an_object(&self, region: &str) -> Option<Error> {
        let path = match self.path(region) {
            Some(p) => p,
            None => Path::new(os::SHM_DIR).join(region),
        };
        let meta = std::fs::symlink_metadata(&path).ok()?;
        let what = if meta.is_dir() {
            "directory"
        } else if meta.is_symlink() {
            "symbolic link"
        } else if meta.is_file() {
            return None;
        } else {
            "special file"
        };
        Some(Error::BadRegion {
            region: self.display(region),
            problem: RegionProblem::NotAnObject { what },
        })
    }

    /// The error for a failed create of `len` bytes: for files, a full disk
    /// or a refused directory are named as such.
    pub(crate) fn create_error(&self, e: OsError, len: usize) -> Error {
        match (self, e.errno) {
            (Storage::File { dir }, Errno::ENOSPC | Errno::EFBIG | Errno::EDQUOT) => {
                Error::NoSpace {
                    region: e.object,
                    bytes: len,
                    detail: format!(
                        "free space on the file system of {} ({} bytes free)",
                        dir.display(),
                        os::free_bytes(dir).unwrap_or(0)
                    ),
                }
            }
            (Storage::File { dir }, Errno::EACCES | Errno::EPERM | Errno::EROFS) => {
                Error::DataDir {
                    dir: dir.clone(),
                    problem: format!("cannot create {}: {}", e.object, e.errno.desc()),
                }
            }
            _ => Error::from_os(e, len),
        }
    }

    /// Before creating a topic in it: check the data directory exists and
    /// is writable, make it absolute, and make the namespace's
    /// subdirectory (mode `0700`, plus group/other search where `mode`
    /// grants read). Returns the storage with the absolute directory.
    ///
    /// # Errors
    /// [`Error::DataDir`] for a missing, non-directory or unwritable
    /// directory.
    pub(crate) fn prepare(&self, ns: &str, mode: u32) -> Result<Storage> {
        let Storage::File { dir } = self else {
            return Ok(Storage::Shm);
        };
        let abs = check_dir(dir)?;
        let sub = abs.join(ns);
        let dmode = 0o700 | ((mode & 0o044) | ((mode & 0o044) >> 2));
        os::make_dir(&sub, dmode).map_err(|e| Error::DataDir {
            dir: abs.clone(),
            problem: format!(
                "cannot make the namespace directory {}: {}",
                sub.display(),
                e.errno.desc()
            ),
        })?;
        if !os::dir_writable(&sub) {
            return Err(Error::DataDir {
                dir: abs,
                problem: format!("{} is not writable by this user", sub.display()),
            });
        }
        Ok(Storage::File { dir: abs })
    }

    /// Make a durable topic's new files' names durable (`fsync` of the
    /// namespace directory). Nothing for shared memory.
    pub(crate) fn sync_names(&self, ns: &str) {
        if let Storage::File { dir } = self {
            let _ = os::sync_dir(&dir.join(ns));
        }
    }
}

/// Refuse with [`Error::NoSpace`], before anything is allocated, `need`
/// bytes that the file system of a durable topic's directory has not got
/// free (`statvfs`). Nothing for shared memory (see `crate::capacity`).
///
/// # Errors
/// [`Error::NoSpace`].
pub(crate) fn check_free(storage: &Storage, region: &str, need: u64) -> Result<()> {
    let Some(dir) = storage.dir() else {
        return Ok(());
    };
    match os::free_bytes(dir) {
        Some(free) if free < need => Err(Error::NoSpace {
            region: storage.display(region),
            bytes: usize::try_from(need).unwrap_or(usize::MAX),
            detail: format!(
                "the file system of {} has {free} bytes free; free space there, or use a smaller topic",
                dir.display()
            ),
        }),
        _ => Ok(()),
    }
}

/// Check that `dir` is an existing, writable directory; returns it made
/// absolute (symbolic links resolved).
///
/// # Errors
/// [`Error::DataDir`].
pub fn check_dir(dir: &Path) -> Result<PathBuf> {
    let bad = |problem: String| Error::DataDir {
        dir: dir.to_path_buf(),
        problem,
    };
    let abs = std::fs::canonicalize(dir).map_err(|e| {
        bad(if e.kind() == std::io::ErrorKind::NotFound {
            "does not exist; create it first (shmq makes only the namespace directory inside it)"
                .to_string()
        } else {
            format!("cannot be resolved: {e}")
        })
    })?;
    if !abs.is_dir() {
        return Err(bad("is not a directory".into()));
    }
    if !os::dir_writable(&abs) {
        return Err(bad("is not writable by this user".into()));
    }
    if abs.to_str().map_or(true, |s| s.len() > STUB_MAX) {
        return Err(bad(format!(
            "the path must be UTF-8 and at most {STUB_MAX} bytes long"
        )));
    }
    Ok(abs)
}

/// What `/dev/shm` knows of a topic's meta name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Nothing under the name.
    Missing,
    /// A shared-memory topic (or one being created).
    Shm,
    /// A registry stub: a durable topic in this data directory.
    File(PathBuf),
}

/// Read what `/dev/shm` holds under `topic`'s meta name.
///
/// # Errors
/// The name exists but cannot be read, or holds a stub whose directory is
/// not valid UTF-8.
pub fn lookup(ns: &str, topic: &str) -> Result<Lookup> {
    let meta = name::meta_region(ns, topic);
    let mut buf = vec![0u8; STUB_MAGIC.len() + STUB_MAX];
    let n = match os::read_shm_prefix(&meta, &mut buf) {
        Ok(None) => return Ok(Lookup::Missing),
        Ok(Some(n)) => n.min(buf.len()),
        // Not readable as a file (a directory...): let the region attach
        // report it.
        Err(_) => return Ok(Lookup::Shm),
    };
    match buf[..n].strip_prefix(STUB_MAGIC.as_slice()) {
        Some(rest) => {
            let dir = std::str::from_utf8(rest).map_err(|_| Error::BadRegion {
                region: meta.clone(),
                problem: RegionProblem::BadGeometry(
                    "registry stub of a durable topic holds a directory that is not UTF-8; \
                     delete the stub (shmq delete) and open the topic with --storage DIR"
                        .into(),
                ),
            })?;
            Ok(Lookup::File(PathBuf::from(dir)))
        }
        None => Ok(Lookup::Shm),
    }
}

/// Write the registry stub of durable topic `topic` (in `dir`): complete or
/// not at all (see [`os::create_locked`]).
///
/// # Errors
/// `EEXIST` when the meta name is taken (by a shm topic, or a stub).
pub(crate) fn register(ns: &str, topic: &str, dir: &Path, mode: u32) -> Result<(), OsError> {
    let meta = name::meta_region(ns, topic);
    let mut contents = STUB_MAGIC.to_vec();
    contents.extend_from_slice(dir.to_string_lossy().as_bytes());
    // The lock is released when the handle drops; the file stays.
    os::create_locked(&meta, &contents, mode).map(drop)
}

/// Remove `topic`'s registry stub, if the meta name holds one (a shm
/// topic's meta region is left alone). Returns whether it removed one.
pub(crate) fn unregister(ns: &str, topic: &str) -> bool {
    matches!(lookup(ns, topic), Ok(Lookup::File(_)))
        && os::shm_remove(&name::meta_region(ns, topic)).is_ok()
}

/// Whether `dir` holds durable topic `topic` of namespace `ns` (its meta
/// file exists).
pub(crate) fn has_topic(dir: &Path, ns: &str, topic: &str) -> bool {
    Storage::File {
        dir: dir.to_path_buf(),
    }
    .path(&name::meta_region(ns, topic))
    .is_some_and(|p| std::fs::symlink_metadata(p).is_ok())
}

/// Topics with a meta file in `dir` for namespace `ns`.
pub(crate) fn topics_in(dir: &Path, ns: &str) -> Vec<String> {
    os::list_dir(&dir.join(ns), "")
        .unwrap_or_default()
        .into_iter()
        .filter_map(|f| {
            let t = f.strip_suffix(".meta")?;
            name::validate_topic(t).ok()?;
            Some(t.to_string())
        })
        .collect()
}

/// The data directory from [`DATA_DIR_ENV`], if set and not empty.
pub fn data_dir_from_env() -> Option<PathBuf> {
    std::env::var_os(DATA_DIR_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

static SYNCS: crate::sync::AtomicU64 = crate::sync::AtomicU64::new(0);

/// How many times this process forced a durable region to the disk (one
/// `msync` call each). For tests that prove a sync policy is applied.
#[doc(hidden)]
pub fn sync_count() -> u64 {
    SYNCS.load(crate::sync::Ordering::Relaxed)
}

pub(crate) fn count_sync() {
    SYNCS.fetch_add(1, crate::sync::Ordering::Relaxed);
}

/// Meta-header flag: the topic's regions are files.
pub(crate) const FLAG_FILE: u32 = 1;
/// Meta-header flag: the supervisor removes the files when the lease
/// expires (the topic was created with [`crate::TopicConfig::expire_files`]).
pub(crate) const FLAG_EXPIRE_FILES: u32 = 2;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_paths_follow_the_region_names() {
        let s = Storage::File {
            dir: PathBuf::from("/data"),
        };
        assert_eq!(
            s.path(&name::partition_region("ns", "orders", 3)),
            Some(PathBuf::from("/data/ns/orders.p3"))
        );
        assert_eq!(
            s.path(&name::meta_region("ns", "orders")),
            Some(PathBuf::from("/data/ns/orders.meta"))
        );
        assert_eq!(Storage::Shm.path("shmq.ns.orders.p0"), None);
        assert_eq!(s.path("nonsense"), None);
    }

    #[test]
    fn sync_policy_codes_round_trip() {
        for p in [
            SyncPolicy::None,
            SyncPolicy::EveryBatch,
            SyncPolicy::Interval(Duration::from_millis(250)),
        ] {
            let (c, i) = p.code();
            assert_eq!(SyncPolicy::from_code(c, i), Some(p));
        }
        assert_eq!(SyncPolicy::from_code(9, 0), None);
    }
}
