//! Process liveness tokens: kernel-held proof that a process is alive.
//!
//! Each [`crate::TopicManager`] holds a token: a small file
//! `/dev/shm/shmq.<ns>._tok.<id>` containing the owner's pid, on which the
//! owner holds an exclusive OFD lock (`fcntl(F_OFD_SETLK)`). The kernel drops
//! the lock when the process dies, however it dies, so "is the lock held?"
//! tells a dead owner from a slow one, and is immune to pid reuse (the id is
//! random and the name is taken exclusively). The id is what writer leases
//! and group members record.
//!
//! * **Visible only when complete.** The file is created anonymous
//!   (`O_TMPFILE`), filled with the pid, locked, and only then linked under
//!   its name ([`os::create_locked`]). A probe or a reaper can never see a
//!   token that exists but is not yet locked (issue 11, defect 1: a reaper
//!   used to find the 16 zero bytes of a token being created, take its free
//!   lock, call it dead and unlink it). A creator that dies half-way leaves
//!   nothing behind.
//! * **Probing never locks.** [`probe`] asks the kernel whether a lock is
//!   held (`F_OFD_GETLK`) instead of trying to take it, so concurrent probes
//!   never make a dead token look alive to each other (defect 2).
//! * **Removed at exit.** A token dropped normally unlinks its file. A
//!   process that exits normally while some thread still holds a token (a
//!   `Topic` clone kept by a background thread: destructors do not run at
//!   exit) removes it from an `atexit` hook. The file of a crashed process
//!   stays, unlocked, until the supervisor removes it.

use std::sync::{Mutex, Once};

use nix::errno::Errno;

use crate::error::{Error, Result};
use crate::name;
use crate::os;

/// Token files this process holds, with the pid that made them (a forked
/// child inherits this list but not the right to remove its parent's
/// tokens), removed by [`unlink_at_exit`] when the process exits normally.
static HELD: Mutex<Vec<(u32, String)>> = Mutex::new(Vec::new());
static AT_EXIT: Once = Once::new();

extern "C" fn unlink_at_exit() {
    // Never block exit: a thread that holds the list right now (creating or
    // dropping a token) keeps it; such a token is removed by the supervisor.
    let held = match HELD.try_lock() {
        Ok(held) => held,
        Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
        Err(std::sync::TryLockError::WouldBlock) => return,
    };
    let me = os::pid();
    for (pid, file) in held.iter() {
        if *pid == me {
            let _ = os::shm_remove(file);
        }
    }
}

fn remember(file: &str) {
    AT_EXIT.call_once(|| os::at_exit(unlink_at_exit));
    HELD.lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((os::pid(), file.to_string()));
}

fn forget(file: &str) {
    HELD.lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|(_, f)| f != file);
}

/// This process's liveness token in one namespace.
pub struct Token {
    id: u32,
    lock: os::LockedFile,
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
            let pid = u64::from(os::pid()).to_le_bytes();
            match os::create_locked(&file, &pid, 0o644) {
                Ok(lock) => {
                    remember(&file);
                    return Ok(Token { id, lock });
                }
                Err(e) if e.errno == Errno::EEXIST => continue,
                Err(e) => return Err(Error::from_os(e, 16)),
            }
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
        // Unlink while still holding the lock (the lock goes when the fd
        // closes, right after): a probe that finds the lock free and the
        // file still linked knows the owner died.
        let _ = os::shm_remove(self.lock.name());
        forget(self.lock.name());
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

/// Probe token `id` in namespace `ns`, without taking its lock (any
/// number of probes may run at once, and none disturbs the owner or another
/// prober). A token file with no lock held is dead whatever it contains
/// (empty or garbage files read as pid 0).
pub fn probe(ns: &str, id: u32) -> Liveness {
    let file = name::token_file(ns, id);
    let mut buf = [0u8; 8];
    match os::probe_lock(&file, &mut buf) {
        Ok((os::LockState::Missing, _)) => Liveness::Missing,
        Ok((state, n)) => {
            let pid = if n == buf.len() {
                u32::try_from(u64::from_le_bytes(buf)).unwrap_or(0)
            } else {
                0
            };
            if state == os::LockState::Held {
                Liveness::Alive { pid }
            } else {
                Liveness::Dead { pid }
            }
        }
        // Cannot open or query it (not ours to read?): nothing to prove
        // death with, so call it alive.
        Err(_) => Liveness::Alive { pid: 0 },
    }
}
