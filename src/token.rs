//! Process liveness tokens: kernel-held proof that a process is alive.
//!
//! Each [`crate::TopicManager`] holds a token: a small file
//! `/dev/shm/shmq.<ns>._tok.<id>` containing the owner's pid, locked with
//! `flock(LOCK_EX)`. The kernel drops the lock when the process dies, however
//! it dies, so "can I take the lock?" tells a dead owner from a slow one, and
//! is immune to pid reuse (the id is random and the file is created with
//! `O_EXCL`). The id is what writer leases and group members record.
//!
//! A token dropped normally unlinks its file; the file of a crashed process
//! stays (unlocked) until the supervisor removes it.

use std::os::fd::OwnedFd;

use nix::errno::Errno;
use nix::fcntl::Flock;

use crate::error::{Error, Result};
use crate::name;
use crate::os;

/// This process's liveness token in one namespace.
pub struct Token {
    id: u32,
    file: String,
    _lock: Flock<OwnedFd>,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("id", &format_args!("{:08x}", self.id))
            .finish()
    }
}

fn random_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(os::now_ns());
    h.write_u32(os::pid());
    h.finish() as u32
}

impl Token {
    /// Create and lock a fresh token in namespace `ns`.
    pub fn acquire(ns: &str) -> Result<Token> {
        for _ in 0..64 {
            let id = random_u32();
            if id == 0 {
                continue;
            }
            let file = name::token_file(ns, id);
            let fd = match os::shm_create(&file, 16, 0o644) {
                Ok(fd) => fd,
                Err(e) if e.errno == Errno::EEXIST => continue,
                Err(e) => return Err(Error::from_os(e, 16)),
            };
            let Some(lock) = fd.try_lock().map_err(|e| Error::from_os(e, 0))? else {
                continue;
            };
            os::write_locked(&lock, &u64::from(os::pid()).to_le_bytes())
                .map_err(|e| Error::from_os(e, 0))?;
            return Ok(Token {
                id,
                file,
                _lock: lock,
            });
        }
        Err(Error::InvalidConfig(
            "could not allocate a unique liveness token id".into(),
        ))
    }

    /// The token id recorded in writer leases and member tables.
    pub fn id(&self) -> u32 {
        self.id
    }
}

impl Drop for Token {
    fn drop(&mut self) {
        // Unlink while still holding the lock; the lock goes when the fd closes.
        let _ = os::shm_remove(&self.file);
    }
}

/// What a token probe found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Liveness {
    /// Its lock is held: the owner process is alive.
    Alive {
        /// Owner pid as written in the token file.
        pid: u32,
    },
    /// The file exists but nobody holds the lock: the owner died.
    Dead {
        /// Owner pid as written in the token file (may have been reused).
        pid: u32,
    },
    /// No such token file: the owner exited cleanly (or was cleaned up).
    Missing,
}

impl Liveness {
    /// Whether the owner is gone.
    pub fn is_dead(self) -> bool {
        !matches!(self, Liveness::Alive { .. })
    }
    /// The recorded pid, if known.
    pub fn pid(self) -> Option<u32> {
        match self {
            Liveness::Alive { pid } | Liveness::Dead { pid } => Some(pid),
            Liveness::Missing => None,
        }
    }
}

/// Probe token `id` in namespace `ns`.
pub fn probe(ns: &str, id: u32) -> Liveness {
    let file = name::token_file(ns, id);
    let fd = match os::shm_open_existing(&file) {
        Ok(fd) => fd,
        Err(_) => return Liveness::Missing,
    };
    let mut buf = [0u8; 8];
    let pid = match fd.read_at0(&mut buf) {
        Ok(8) => u64::from_le_bytes(buf) as u32,
        // The owner writes its pid only after taking the lock: a young empty
        // file is a token being created, not a dead one. One that stayed
        // empty for seconds belongs to a process that died creating it.
        _ => {
            let young = fd
                .stat()
                .map(|st| os::now_ns().saturating_sub(st.ctime_ns) < 5_000_000_000)
                .unwrap_or(true);
            return if young {
                Liveness::Alive { pid: 0 }
            } else {
                Liveness::Dead { pid: 0 }
            };
        }
    };
    match fd.try_lock() {
        Ok(Some(_lock)) => Liveness::Dead { pid },
        Ok(None) => Liveness::Alive { pid },
        // Cannot tell: be conservative and call it alive.
        Err(_) => Liveness::Alive { pid },
    }
}
