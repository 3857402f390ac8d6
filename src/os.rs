//! Every operating-system call shmq makes, and nothing else.
//!
//! Named POSIX shared memory (`shm_open`, `ftruncate`, `posix_fallocate`,
//! `fstat`, `mmap`, `munmap`, `shm_unlink`), the liveness lock (OFD `fcntl`
//! locks, see [`create_locked`] and [`probe_lock`]), the
//! cross-process futex, and the listing of `/dev/shm`. The rest of the crate
//! only sees [`Mapping`], [`ShmFd`] and typed [`OsError`]s, so porting shmq to
//! another Unix means rewriting this one file.
//!
//! # Why not the `shared_memory` crate
//!
//! The design card names `shared_memory`; it does not meet our needs:
//! it cannot create with `O_EXCL` *and* a chosen mode (it always uses its own
//! permissions), it never pre-allocates the backing pages (so a full
//! `/dev/shm` surfaces later as `SIGBUS` instead of an error at create time),
//! it hides the file descriptor we need for `fstat` validation, and it
//! unlinks on drop by owner rather than leaving lifetime to our lease
//! protocol. `nix` covers every call we need with typed errors, so we use it
//! (and `libc` for the futex, which `nix` does not wrap).

use std::ffi::CString;
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::ptr::NonNull;
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::mman::{mmap, munmap, shm_open, shm_unlink, MapFlags, ProtFlags};
use nix::sys::stat::{fstat, Mode};

use crate::sync::AtomicU32;

/// Where named shared-memory objects appear in the file system on Linux.
pub const SHM_DIR: &str = "/dev/shm";

/// A failed OS call: which call, on which object, and the errno.
#[derive(Debug, thiserror::Error)]
#[error("{call}({object}) failed: {errno}")]
pub struct OsError {
    /// The system call that failed.
    pub call: &'static str,
    /// The object it was applied to (region name, usually).
    pub object: String,
    /// The error number.
    pub errno: Errno,
}

impl OsError {
    fn new(call: &'static str, object: &str, errno: Errno) -> Self {
        OsError {
            call,
            object: object.to_string(),
            errno,
        }
    }
}

/// An open shared-memory object.
pub struct ShmFd {
    fd: OwnedFd,
    name: String,
}

fn shm_path(name: &str) -> Result<CString, OsError> {
    CString::new(format!("/{name}")).map_err(|_| OsError::new("shm_open", name, Errno::EINVAL))
}

/// Create `name` exclusively with `mode`, size it to `len` and pre-allocate its
/// pages so that a full `/dev/shm` fails here (`ENOSPC`) rather than as a
/// `SIGBUS` on first touch. On failure nothing is left behind.
pub fn shm_create(name: &str, len: usize, mode: u32) -> Result<ShmFd, OsError> {
    let path = shm_path(name)?;
    let fd = shm_open(
        path.as_c_str(),
        OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_RDWR | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(mode),
    )
    .map_err(|e| OsError::new("shm_open", name, e))?;
    // shm_open applies the umask; put back exactly the mode asked for.
    let _ = nix::sys::stat::fchmod(fd.as_raw_fd(), Mode::from_bits_truncate(mode));
    let cleanup = |call: &'static str, e: Errno| {
        let _ = shm_unlink(path.as_c_str());
        OsError::new(call, name, e)
    };
    let size = libc::off_t::try_from(len).map_err(|_| cleanup("ftruncate", Errno::EFBIG))?;
    nix::unistd::ftruncate(fd.as_fd(), size).map_err(|e| cleanup("ftruncate", e))?;
    nix::fcntl::posix_fallocate(fd.as_raw_fd(), 0, size)
        .map_err(|e| cleanup("posix_fallocate", e))?;
    Ok(ShmFd {
        fd,
        name: name.to_string(),
    })
}

/// Open an existing object read-write.
pub fn shm_open_existing(name: &str) -> Result<ShmFd, OsError> {
    let path = shm_path(name)?;
    let fd = shm_open(
        path.as_c_str(),
        OFlag::O_RDWR | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| OsError::new("shm_open", name, e))?;
    Ok(ShmFd {
        fd,
        name: name.to_string(),
    })
}

/// Remove the name (mappings stay valid until unmapped).
pub fn shm_remove(name: &str) -> Result<(), OsError> {
    let path = shm_path(name)?;
    shm_unlink(path.as_c_str()).map_err(|e| OsError::new("shm_unlink", name, e))
}

/// Facts `fstat` tells about an object.
#[derive(Clone, Copy, Debug)]
pub struct Stat {
    /// Size in bytes.
    pub size: u64,
    /// Owner uid.
    pub uid: u32,
    /// Permission bits.
    pub mode: u32,
    /// Last status change (creation, resize, chmod), Unix-epoch ns.
    pub ctime_ns: u64,
}

impl ShmFd {
    /// `fstat` the object.
    pub fn stat(&self) -> Result<Stat, OsError> {
        let st = fstat(self.fd.as_raw_fd()).map_err(|e| OsError::new("fstat", &self.name, e))?;
        Ok(Stat {
            size: st.st_size.max(0) as u64,
            uid: st.st_uid,
            mode: st.st_mode & 0o7777,
            ctime_ns: (st.st_ctime.max(0) as u64).saturating_mul(1_000_000_000)
                + st.st_ctime_nsec.max(0) as u64,
        })
    }

    /// Map `len` bytes shared and read-write.
    pub fn map(&self, len: usize) -> Result<Mapping, OsError> {
        let nz = NonZeroUsize::new(len)
            .ok_or_else(|| OsError::new("mmap", &self.name, Errno::EINVAL))?;
        // SAFETY: a fresh shared mapping of an fd we own, at an address the
        // kernel chooses; no existing Rust object aliases it.
        let ptr = unsafe {
            mmap(
                None,
                nz,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                self.fd.as_fd(),
                0,
            )
        }
        .map_err(|e| OsError::new("mmap", &self.name, e))?;
        Ok(Mapping {
            ptr: ptr.cast(),
            len,
        })
    }

    /// Write `bytes` at the start of the object (small metadata only).
    pub fn write_all_at0(&self, bytes: &[u8]) -> Result<(), OsError> {
        nix::sys::uio::pwrite(self.fd.as_fd(), bytes, 0)
            .map(|_| ())
            .map_err(|e| OsError::new("pwrite", &self.name, e))
    }

    /// Read up to `buf.len()` bytes from the start of the object.
    pub fn read_at0(&self, buf: &mut [u8]) -> Result<usize, OsError> {
        nix::sys::uio::pread(self.fd.as_fd(), buf, 0)
            .map_err(|e| OsError::new("pread", &self.name, e))
    }
}

/// A shared, read-write memory mapping; unmapped on drop.
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: a Mapping is a plain address range; all access to its contents goes
// through atomics or the seqlock protocol, which are designed for concurrent
// use by many threads and processes.
unsafe impl Send for Mapping {}
// SAFETY: as above; `&Mapping` only hands out raw pointers.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Start of the mapping.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }
    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Whether the mapping is empty (never true for a live mapping).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` came from one successful mmap and are unmapped
        // exactly once; every reference into the mapping borrows `self`.
        let _ = unsafe { munmap(self.ptr.cast(), self.len) };
    }
}

/// Names of the entries in [`SHM_DIR`] that start with `prefix`.
pub fn list_shm(prefix: &str) -> Result<Vec<String>, OsError> {
    let dir = std::fs::read_dir(SHM_DIR).map_err(|e| {
        OsError::new(
            "opendir",
            SHM_DIR,
            Errno::from_raw(e.raw_os_error().unwrap_or(0)),
        )
    })?;
    let mut out: Vec<String> = dir
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(prefix))
        .collect();
    out.sort();
    Ok(out)
}

/// This process's id.
pub fn pid() -> u32 {
    std::process::id()
}

/// Whether a process with this pid exists (informational only: pids are reused).
pub fn pid_exists(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), None) {
        Ok(()) => true,
        Err(e) => e == Errno::EPERM,
    }
}

/// Current Unix time in nanoseconds (vDSO `clock_gettime`, no syscall).
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Sleep on a futex word in shared memory while it still holds `expected`,
/// for at most `timeout`. Spurious returns are allowed.
pub fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
    let ts = timeout.map(|d| libc::timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    });
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: FUTEX_WAIT (shared, not PRIVATE, because the word lives in a
    // MAP_SHARED region) reads the aligned u32 at `word`, which outlives the
    // call; `ts_ptr` is null or points to a live timespec.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            ts_ptr,
        );
    }
}

/// Wake up to `n` waiters parked on `word`.
pub fn futex_wake(word: &AtomicU32, n: i32) {
    // SAFETY: FUTEX_WAKE only uses the address as a key; `word` is live.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, n);
    }
}

// ---------------------------------------------------------------------------
// Added for wait strategies, benchmarks and syscall-free proofs (issue 7).
// ---------------------------------------------------------------------------

/// Wake up to `n` waiters parked on `word`; returns how many the kernel woke
/// (0 if nobody was sleeping on it, or if the call failed).
pub fn futex_wake_count(word: &AtomicU32, n: i32) -> u32 {
    // SAFETY: FUTEX_WAKE only uses the address as a key; `word` is live.
    let r = unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, n) };
    u32::try_from(r).unwrap_or(0)
}

/// The CPUs this process may run on (`sched_getaffinity`), in ascending
/// order. Empty if the call fails.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: `cpu_set_t` is a plain bit array; all-zero is a valid value.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: pid 0 = the calling thread; `set` is a live, writable
    // cpu_set_t of the size passed.
    let r = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if r != 0 {
        return Vec::new();
    }
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `cpu < CPU_SETSIZE`, the bit array's size; reads only.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect()
}

/// Pin the calling thread to CPU `cpu` (`sched_setaffinity`), so a benchmark's
/// two processes run on separate cores.
pub fn pin_to_cpu(cpu: usize) -> Result<(), OsError> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(OsError::new(
            "sched_setaffinity",
            &format!("cpu {cpu}"),
            Errno::EINVAL,
        ));
    }
    // SAFETY: `cpu_set_t` is a plain bit array; all-zero is a valid value.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu < CPU_SETSIZE` (checked above); writes one bit of `set`.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: pid 0 = the calling thread; `set` is a live cpu_set_t of the
    // size passed.
    let r = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if r != 0 {
        return Err(OsError::new(
            "sched_setaffinity",
            &format!("cpu {cpu}"),
            Errno::last(),
        ));
    }
    Ok(())
}

/// Forbid the calling thread every system call except `write`, `exit` and
/// `rt_sigreturn`, with a seccomp filter whose violation kills the whole
/// process with `SIGSYS`. Irreversible; the thread's other threads are not
/// affected. Tests use it to prove that a hot path (a `send` with no parked
/// reader) makes no system call at all: run it in a child process after
/// this call, report with [`write_fd`], and check the child got that far.
///
/// (`SECCOMP_MODE_STRICT` would be simpler but also disables `rdtsc` on
/// x86, which breaks the vDSO clock that every `send` reads.)
#[doc(hidden)]
pub fn forbid_syscalls() -> Result<(), OsError> {
    #[cfg(target_arch = "x86_64")]
    const AUDIT_ARCH: u32 = 0xC000_003E;
    #[cfg(target_arch = "aarch64")]
    const AUDIT_ARCH: u32 = 0xC000_00B7;
    const ALLOW: u32 = 0x7fff_0000; // SECCOMP_RET_ALLOW
    const KILL: u32 = 0x8000_0000; // SECCOMP_RET_KILL_PROCESS
    let ld = |off: u32| libc::sock_filter {
        code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16,
        jt: 0,
        jf: 0,
        k: off,
    };
    // Jump to `allow` (jt) when equal, else fall through.
    let jeq = |k: u32, jt: u8, jf: u8| libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    };
    let ret = |k: u32| libc::sock_filter {
        code: (libc::BPF_RET | libc::BPF_K) as u16,
        jt: 0,
        jf: 0,
        k,
    };
    // struct seccomp_data { int nr; __u32 arch; ... }
    let mut prog = [
        ld(4),                                    // 0: A = arch
        jeq(AUDIT_ARCH, 1, 0),                    // 1: native arch -> 3
        ret(KILL),                                // 2
        ld(0),                                    // 3: A = syscall number
        jeq(libc::SYS_write as u32, 3, 0),        // 4: -> 8
        jeq(libc::SYS_exit as u32, 2, 0),         // 5: -> 8
        jeq(libc::SYS_rt_sigreturn as u32, 1, 0), // 6: -> 8
        ret(KILL),                                // 7
        ret(ALLOW),                               // 8
    ];
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_mut_ptr(),
    };
    // SAFETY: PR_SET_NO_NEW_PRIVS takes integers only; it is required to
    // install a filter without CAP_SYS_ADMIN.
    let r = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1 as libc::c_ulong, 0, 0, 0) };
    if r != 0 {
        return Err(OsError::new("prctl", "PR_SET_NO_NEW_PRIVS", Errno::last()));
    }
    // SAFETY: `fprog` points to `prog`, a live array of `len` instructions;
    // the kernel copies the program during the call.
    let r = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER as libc::c_ulong,
            &fprog as *const libc::sock_fprog,
        )
    };
    if r != 0 {
        return Err(OsError::new("prctl", "PR_SET_SECCOMP", Errno::last()));
    }
    Ok(())
}

/// Write all of `bytes` to file descriptor `fd` with raw `write(2)` calls,
/// the one output a thread in strict seccomp mode may still use.
#[doc(hidden)]
pub fn write_fd(fd: i32, bytes: &[u8]) -> Result<(), OsError> {
    let mut rest = bytes;
    while !rest.is_empty() {
        // SAFETY: `rest` is a live slice of `rest.len()` readable bytes.
        let r = unsafe { libc::write(fd, rest.as_ptr().cast(), rest.len()) };
        if r < 0 {
            let e = Errno::last();
            if e == Errno::EINTR {
                continue;
            }
            return Err(OsError::new("write", &format!("fd {fd}"), e));
        }
        rest = &rest[r as usize..];
    }
    Ok(())
}

impl Mapping {
    /// The mapping as 64-bit atomic words (`len / 8` of them). For small
    /// shared structures built without the shmq layout, such as the
    /// baselines of `shmq bench`; every access then goes through atomics.
    pub fn as_atomic_u64s(&self) -> &[crate::sync::AtomicU64] {
        // SAFETY: the mapping is page-aligned (so 8-aligned) and `len` bytes
        // long, so `len / 8` consecutive `AtomicU64`s fit; an `AtomicU64` has
        // the size and bit validity of a `u64`, valid for any bytes; the
        // mapping lives as long as `&self`, and shared mutation through
        // atomics is sound by construction.
        unsafe {
            std::slice::from_raw_parts(
                self.ptr.as_ptr().cast::<crate::sync::AtomicU64>(),
                self.len / 8,
            )
        }
    }
}

/// Current Unix time in nanoseconds, read with one vDSO
/// `clock_gettime(CLOCK_REALTIME)` (no syscall): the same value as
/// [`now_ns`] for about 2/3 of its cost (measured 24 ns vs. 34 ns per call
/// on the 2-vCPU bench machine), because it skips `SystemTime`'s
/// `duration_since` arithmetic. For per-message timestamps.
#[inline]
pub fn realtime_ns() -> u64 {
    clock_ns(libc::CLOCK_REALTIME)
}

/// Unix time in nanoseconds at the resolution of the kernel tick (a few
/// milliseconds), from the vDSO without reading the TSC: about 4 ns per call
/// (vs. 24 ns for [`realtime_ns`]). For checks that need "roughly now" on a
/// hot path, such as a consumer's periodic heartbeat.
#[inline]
pub fn coarse_now_ns() -> u64 {
    clock_ns(libc::CLOCK_REALTIME_COARSE)
}

/// `CLOCK_MONOTONIC` in nanoseconds. Unlike `std::time::Instant`, its
/// values are comparable between processes on one host (same clock, same
/// origin), so one process can timestamp and another measure.
#[inline]
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

#[inline]
fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a live, writable timespec; clock_gettime only writes it.
    let r = unsafe { libc::clock_gettime(clock, &mut ts) };
    if r != 0 || ts.tv_sec < 0 {
        return 0;
    }
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

// ---------------------------------------------------------------------------
// Liveness-token files (issue 11: defects 1 and 2) and the size guard of
// topic creation (defect 8).
// ---------------------------------------------------------------------------

/// A file in [`SHM_DIR`] that this process holds an exclusive OFD lock on
/// (`fcntl(F_OFD_SETLK)`). The lock belongs to the open file description, so
/// the kernel drops it when the last descriptor closes, however the process
/// ends. See [`create_locked`] and [`probe_lock`].
#[derive(Debug)]
pub struct LockedFile {
    // Held for its lock: the kernel releases it when this closes.
    _file: std::fs::File,
    name: String,
}

impl LockedFile {
    /// The file's name in [`SHM_DIR`].
    pub fn name(&self) -> &str {
        &self.name
    }
}

fn errno_of(e: &std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

fn whole_file_lock(kind: libc::c_short) -> libc::flock {
    // SAFETY: `flock` is a plain C struct; all-zero is a valid value (and
    // l_pid must be 0 for OFD locks).
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = 0;
    fl.l_len = 0; // to the end of the file, however large
    fl
}

/// Create `name` in [`SHM_DIR`] with `contents` and mode `mode`, locked with
/// an exclusive OFD lock, such that the name appears only once the file is
/// complete and locked: the file is made anonymous (`O_TMPFILE`), filled,
/// locked, and only then linked under its name (`linkat`). A probe can
/// therefore never see it half-made, and a creator that dies at any point
/// leaves either nothing or a complete file whose lock the kernel released.
///
/// # Errors
/// `EEXIST` if `name` exists (nothing is left behind); any other failure
/// of `open`, `pwrite`, `fcntl` or `linkat`.
pub fn create_locked(name: &str, contents: &[u8], mode: u32) -> Result<LockedFile, OsError> {
    use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_TMPFILE | libc::O_CLOEXEC)
        .mode(mode)
        .open(SHM_DIR)
        .map_err(|e| OsError::new("open(O_TMPFILE)", SHM_DIR, errno_of(&e)))?;
    // open applies the umask; put back exactly the mode asked for.
    let _ = file.set_permissions(std::fs::Permissions::from_mode(mode));
    file.write_all_at(contents, 0)
        .map_err(|e| OsError::new("pwrite", name, errno_of(&e)))?;
    let fl = whole_file_lock(libc::F_WRLCK as libc::c_short);
    nix::fcntl::fcntl(file.as_raw_fd(), nix::fcntl::FcntlArg::F_OFD_SETLK(&fl))
        .map_err(|e| OsError::new("fcntl(F_OFD_SETLK)", name, e))?;
    let target = CString::new(format!("{SHM_DIR}/{name}"))
        .map_err(|_| OsError::new("linkat", name, Errno::EINVAL))?;
    // Link the anonymous file by descriptor (AT_EMPTY_PATH, which needs
    // CAP_DAC_READ_SEARCH on older kernels) or else through /proc.
    // SAFETY: both paths are live NUL-terminated strings; the descriptor is
    // open for the duration of the call.
    let r = unsafe {
        libc::linkat(
            file.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    let mut err = if r == 0 { None } else { Some(Errno::last()) };
    if matches!(err, Some(Errno::ENOENT | Errno::EPERM | Errno::EACCES)) {
        let proc_path = CString::new(format!("/proc/self/fd/{}", file.as_raw_fd()))
            .map_err(|_| OsError::new("linkat", name, Errno::EINVAL))?;
        // SAFETY: as above.
        let r = unsafe {
            libc::linkat(
                libc::AT_FDCWD,
                proc_path.as_ptr(),
                libc::AT_FDCWD,
                target.as_ptr(),
                libc::AT_SYMLINK_FOLLOW,
            )
        };
        err = if r == 0 { None } else { Some(Errno::last()) };
    }
    match err {
        None => Ok(LockedFile {
            _file: file,
            name: name.to_string(),
        }),
        Some(e) => Err(OsError::new("linkat", name, e)),
    }
}

/// What [`probe_lock`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockState {
    /// Another open file description holds a lock on the file.
    Held,
    /// Nobody holds a lock, and the file is still linked under its name.
    Free,
    /// No file of that name, or it was unlinked while we looked (its owner
    /// removed it before releasing its lock: a clean exit).
    Missing,
}

/// Whether someone holds an OFD lock on `name` in [`SHM_DIR`], without
/// taking the lock (`fcntl(F_OFD_GETLK)`), so any number of concurrent
/// probes never disturb each other's verdict. Also reads up to `buf.len()`
/// bytes from the start of the file into `buf`; returns how many were read.
/// The file is opened read-only, so a token of another user is probed too.
///
/// # Errors
/// The file exists but cannot be opened or queried.
pub fn probe_lock(name: &str, buf: &mut [u8]) -> Result<(LockState, usize), OsError> {
    use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
    let path = format!("{SHM_DIR}/{name}");
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((LockState::Missing, 0)),
        Err(e) => return Err(OsError::new("open", name, errno_of(&e))),
    };
    let n = file.read_at(buf, 0).unwrap_or(0);
    let mut fl = whole_file_lock(libc::F_WRLCK as libc::c_short);
    nix::fcntl::fcntl(file.as_raw_fd(), nix::fcntl::FcntlArg::F_OFD_GETLK(&mut fl))
        .map_err(|e| OsError::new("fcntl(F_OFD_GETLK)", name, e))?;
    if fl.l_type != libc::F_UNLCK as libc::c_short {
        return Ok((LockState::Held, n));
    }
    // Unlocked. An owner that exits cleanly unlinks first and then releases
    // the lock, so a file already unlinked now was removed, not abandoned.
    let linked = file
        .metadata()
        .map_err(|e| OsError::new("fstat", name, errno_of(&e)))?
        .nlink();
    Ok((
        if linked == 0 {
            LockState::Missing
        } else {
            LockState::Free
        },
        n,
    ))
}

/// Run `f` when the process exits normally (`exit(3)`, including a return
/// from `main`), after the handlers registered later. Not run on a signal
/// death, `_exit` or `abort`.
pub fn at_exit(f: extern "C" fn()) {
    // SAFETY: atexit stores a plain function pointer, valid for the whole
    // life of the program.
    let _ = unsafe { libc::atexit(f) };
}

/// Room for new shared memory on this host, as far as the kernel tells
/// (each figure `None` where it cannot be read or no limit is set).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryFigures {
    /// Free bytes in [`SHM_DIR`] for an unprivileged user
    /// (`statvfs`: `f_bavail * f_frsize`).
    pub shm_free: Option<u64>,
    /// Size of the file system behind [`SHM_DIR`] (`f_blocks * f_frsize`).
    pub shm_size: Option<u64>,
    /// `MemAvailable` of `/proc/meminfo`: memory the kernel can give without
    /// swapping. A tmpfs may be larger than this; its pages are RAM.
    pub mem_available: Option<u64>,
    /// Room left under this process's cgroup memory limit (the tightest of
    /// `memory.max - memory.current` up its cgroup v2 path, or v1's
    /// `memory.limit_in_bytes - memory.usage_in_bytes`); `None` if unlimited.
    pub cgroup_free: Option<u64>,
}

/// Read the [`MemoryFigures`] now.
// statvfs field types differ between targets (u32 on some 32-bit ones).
#[allow(clippy::unnecessary_cast)]
pub fn memory_figures() -> MemoryFigures {
    let vfs = nix::sys::statvfs::statvfs(SHM_DIR).ok();
    let frsize = vfs.as_ref().map(|v| v.fragment_size() as u64);
    MemoryFigures {
        shm_free: vfs
            .as_ref()
            .zip(frsize)
            .map(|(v, f)| (v.blocks_available() as u64).saturating_mul(f)),
        shm_size: vfs
            .as_ref()
            .zip(frsize)
            .map(|(v, f)| (v.blocks() as u64).saturating_mul(f)),
        mem_available: std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|s| parse_meminfo_available(&s)),
        cgroup_free: cgroup_free(),
    }
}

/// `MemAvailable` in bytes from the text of `/proc/meminfo`.
pub fn parse_meminfo_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let mut words = line.split_whitespace().skip(1);
    let n: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") | None => Some(n.saturating_mul(1024)),
        Some(_) => None,
    }
}

/// A cgroup memory limit file's value; `None` for "max" (v2) or a v1
/// "unlimited" (a page-rounded `i64::MAX`).
pub fn parse_cgroup_limit(text: &str) -> Option<u64> {
    let n: u64 = text.trim().parse().ok()?;
    (n < 1 << 60).then_some(n)
}

fn read_u64_file(path: &std::path::Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

fn cgroup_free() -> Option<u64> {
    use std::path::{Path, PathBuf};
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let room = |dir: &Path, limit: &str, usage: &str| -> Option<u64> {
        let max = parse_cgroup_limit(&read_u64_file(&dir.join(limit))?)?;
        let cur: u64 = read_u64_file(&dir.join(usage))?.trim().parse().ok()?;
        Some(max.saturating_sub(cur))
    };
    let mut best: Option<u64> = None;
    let mut take = |r: Option<u64>| {
        if let Some(r) = r {
            best = Some(best.map_or(r, |b| b.min(r)));
        }
    };
    for line in own.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(ctrl), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let rel = path.trim_start_matches('/');
        let (root, limit, usage) = if id == "0" && ctrl.is_empty() {
            ("/sys/fs/cgroup", "memory.max", "memory.current")
        } else if ctrl.split(',').any(|c| c == "memory") {
            (
                "/sys/fs/cgroup/memory",
                "memory.limit_in_bytes",
                "memory.usage_in_bytes",
            )
        } else {
            continue;
        };
        // Every level up the path limits us. Inside a container the path
        // may name the host's view while the container's own cgroup is
        // mounted at the root: the root is read too.
        let mut dir = PathBuf::from(root).join(rel);
        loop {
            take(room(&dir, limit, usage));
            if dir.as_path() == Path::new(root) || !dir.pop() {
                break;
            }
        }
    }
    best
}

// ---------------------------------------------------------------------------
// Durable storage (issue 16): regions as files in a data directory. The
// choice between these and the `shm_*` calls above is made in one place,
// `crate::storage`.
// ---------------------------------------------------------------------------

fn path_str(path: &std::path::Path) -> String {
    path.display().to_string()
}

fn c_path(call: &'static str, path: &std::path::Path) -> Result<CString, OsError> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| OsError::new(call, &path_str(path), Errno::EINVAL))
}

/// Create the file `path` exclusively with `mode`, size it to `len` and
/// pre-allocate its blocks (`posix_fallocate`), so that a full disk fails
/// here with `ENOSPC` rather than as a `SIGBUS` when a page of the mapping
/// is first written back. On failure nothing is left behind. The returned
/// [`ShmFd`] maps the file like a shared-memory object.
pub fn file_create(path: &std::path::Path, len: usize, mode: u32) -> Result<ShmFd, OsError> {
    let object = path_str(path);
    let c = c_path("open", path)?;
    let fd = nix::fcntl::open(
        c.as_c_str(),
        OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_RDWR | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
        Mode::from_bits_truncate(mode),
    )
    .map_err(|e| OsError::new("open", &object, e))?;
    let fd = {
        use std::os::fd::FromRawFd;
        // SAFETY: `open` just returned this descriptor; nothing else owns it.
        unsafe { OwnedFd::from_raw_fd(fd) }
    };
    // open applies the umask; put back exactly the mode asked for.
    let _ = nix::sys::stat::fchmod(fd.as_raw_fd(), Mode::from_bits_truncate(mode));
    let cleanup = |call: &'static str, e: Errno| {
        let _ = nix::unistd::unlink(c.as_c_str());
        OsError::new(call, &object, e)
    };
    let size = libc::off_t::try_from(len).map_err(|_| cleanup("ftruncate", Errno::EFBIG))?;
    nix::unistd::ftruncate(fd.as_fd(), size).map_err(|e| cleanup("ftruncate", e))?;
    nix::fcntl::posix_fallocate(fd.as_raw_fd(), 0, size)
        .map_err(|e| cleanup("posix_fallocate", e))?;
    Ok(ShmFd { fd, name: object })
}

/// Open the existing file `path` read-write (never through a symbolic link).
pub fn file_open_existing(path: &std::path::Path) -> Result<ShmFd, OsError> {
    let object = path_str(path);
    let c = c_path("open", path)?;
    let fd = nix::fcntl::open(
        c.as_c_str(),
        OFlag::O_RDWR | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
        Mode::empty(),
    )
    .map_err(|e| OsError::new("open", &object, e))?;
    use std::os::fd::FromRawFd;
    Ok(ShmFd {
        // SAFETY: `open` just returned this descriptor; nothing else owns it.
        fd: unsafe { OwnedFd::from_raw_fd(fd) },
        name: object,
    })
}

/// Remove the file `path` (mappings stay valid until unmapped).
pub fn file_remove(path: &std::path::Path) -> Result<(), OsError> {
    let c = c_path("unlink", path)?;
    nix::unistd::unlink(c.as_c_str()).map_err(|e| OsError::new("unlink", &path_str(path), e))
}

/// Create directory `dir` with `mode` if it does not exist (its parent
/// must). Succeeds if it exists already as a directory.
pub fn make_dir(dir: &std::path::Path, mode: u32) -> Result<(), OsError> {
    let c = c_path("mkdir", dir)?;
    match nix::unistd::mkdir(c.as_c_str(), Mode::from_bits_truncate(mode)) {
        Ok(()) => Ok(()),
        Err(Errno::EEXIST) if dir.is_dir() => Ok(()),
        Err(e) => Err(OsError::new("mkdir", &path_str(dir), e)),
    }
}

/// `fsync` the directory `dir`, so that names created or removed in it
/// survive a power loss.
pub fn sync_dir(dir: &std::path::Path) -> Result<(), OsError> {
    let f =
        std::fs::File::open(dir).map_err(|e| OsError::new("open", &path_str(dir), errno_of(&e)))?;
    f.sync_all()
        .map_err(|e| OsError::new("fsync", &path_str(dir), errno_of(&e)))
}

/// Whether this process may create files in `dir` (`access(W_OK | X_OK)`).
pub fn dir_writable(dir: &std::path::Path) -> bool {
    nix::unistd::access(
        dir,
        nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK,
    )
    .is_ok()
}

/// Names of the entries of directory `dir` that start with `prefix`
/// (sorted; empty if the directory does not exist).
pub fn list_dir(dir: &std::path::Path, prefix: &str) -> Result<Vec<String>, OsError> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(OsError::new("opendir", &path_str(dir), errno_of(&e))),
    };
    let mut out: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(prefix))
        .collect();
    out.sort();
    Ok(out)
}

/// Read up to `buf.len()` bytes from the start of `name` in [`SHM_DIR`]
/// (never through a symbolic link); `Ok(None)` if there is no such file.
pub fn read_shm_prefix(name: &str, buf: &mut [u8]) -> Result<Option<usize>, OsError> {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    let path = format!("{SHM_DIR}/{name}");
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(OsError::new("open", name, errno_of(&e))),
    };
    file.read_at(buf, 0)
        .map(Some)
        .map_err(|e| OsError::new("pread", name, errno_of(&e)))
}

/// Free bytes for an unprivileged user on the file system holding `dir`
/// (`statvfs`: `f_bavail * f_frsize`), `None` if it cannot be read.
#[allow(clippy::unnecessary_cast)]
pub fn free_bytes(dir: &std::path::Path) -> Option<u64> {
    let v = nix::sys::statvfs::statvfs(dir).ok()?;
    Some((v.blocks_available() as u64).saturating_mul(v.fragment_size() as u64))
}

fn page_size() -> usize {
    static PAGE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *PAGE.get_or_init(|| {
        // SAFETY: sysconf takes an integer and returns one.
        let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        usize::try_from(p)
            .ok()
            .filter(|p| p.is_power_of_two())
            .unwrap_or(4096)
    })
}

impl Mapping {
    /// Write the dirty pages of bytes `offset .. offset + len` of a file
    /// mapping to the file and wait for the device (`msync(MS_SYNC)`, which
    /// on Linux also flushes the file's data the way `fdatasync` does). The
    /// range is widened to whole pages and clamped to the mapping.
    pub fn sync_range(&self, offset: usize, len: usize) -> Result<(), OsError> {
        let page = page_size();
        let start = (offset.min(self.len)) & !(page - 1);
        let end = offset.saturating_add(len).min(self.len);
        if end <= start {
            return Ok(());
        }
        // SAFETY: `start` is page-aligned and `start .. end` lies inside the
        // mapping (clamped above), which stays mapped while `self` lives.
        let ptr = unsafe { self.ptr.as_ptr().add(start) };
        let nn = NonNull::new(ptr.cast::<libc::c_void>())
            .ok_or_else(|| OsError::new("msync", "mapping", Errno::EINVAL))?;
        // SAFETY: msync only reads the page tables of a range we own.
        unsafe { nix::sys::mman::msync(nn, end - start, nix::sys::mman::MsFlags::MS_SYNC) }
            .map_err(|e| OsError::new("msync", "mapping", e))
    }
}

/// CPU time this process has used so far (user + system, from
/// `getrusage(RUSAGE_SELF)`), in nanoseconds; 0 if it cannot be read. For
/// `shmq bench`'s CPU figures.
pub fn cpu_time_ns() -> u64 {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a `struct rusage` into the pointer, which
    // points to enough (zeroed) memory for one.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, ru.as_mut_ptr()) };
    if rc != 0 {
        return 0;
    }
    // SAFETY: zero-initialised, then filled by a successful getrusage; every
    // bit pattern of its integer fields is valid.
    let ru = unsafe { ru.assume_init() };
    let ns = |t: libc::timeval| {
        (t.tv_sec.max(0) as u64)
            .saturating_mul(1_000_000_000)
            .saturating_add((t.tv_usec.max(0) as u64).saturating_mul(1_000))
    };
    ns(ru.ru_utime).saturating_add(ns(ru.ru_stime))
}

// The asymmetric barrier (issue 13): membarrier(2).
// ---------------------------------------------------------------------------

/// `MEMBARRIER_CMD_QUERY` (linux/membarrier.h).
const MEMBARRIER_CMD_QUERY: libc::c_int = 0;
/// `MEMBARRIER_CMD_GLOBAL_EXPEDITED`: a full barrier on every CPU running a
/// thread of a process registered with
/// [`MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED`].
const MEMBARRIER_CMD_GLOBAL_EXPEDITED: libc::c_int = 1 << 1;
/// `MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED`.
const MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED: libc::c_int = 1 << 2;

/// Which wake-up / claim barrier this process uses (see [`barrier_mode`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarrierMode {
    /// `membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)` on the rare side, a
    /// compiler fence on the hot side (this process is registered).
    Membarrier,
    /// A SeqCst fence on both sides (membarrier unavailable or refused).
    SeqCstFence,
}

impl BarrierMode {
    /// A short name for reports (`shmq bench`'s header).
    pub fn name(self) -> &'static str {
        match self {
            BarrierMode::Membarrier => "membarrier(GLOBAL_EXPEDITED)",
            BarrierMode::SeqCstFence => "SeqCst fence (membarrier unavailable)",
        }
    }
}

/// 0 = not decided yet, 1 = membarrier registered, 2 = fence.
static BARRIER: AtomicU32 = AtomicU32::new(0);

/// Whether this process is registered for `MEMBARRIER_CMD_GLOBAL_EXPEDITED`,
/// so its writers may use a compiler fence as the hot side of the barrier
/// (`crate::sync::light_barrier`). One relaxed load; `false` until
/// [`barrier_mode`] has run.
#[inline]
pub fn membarrier_registered() -> bool {
    BARRIER.load(crate::sync::Ordering::Relaxed) == 1
}

fn membarrier(cmd: libc::c_int) -> libc::c_long {
    // SAFETY: membarrier(2) takes integers only (cmd, flags = 0, cpu_id = 0)
    // and touches no memory of ours.
    unsafe {
        libc::syscall(
            libc::SYS_membarrier,
            cmd,
            0 as libc::c_uint,
            0 as libc::c_int,
        )
    }
}

/// Decide this process's barrier mode, once: if the kernel supports
/// `MEMBARRIER_CMD_GLOBAL_EXPEDITED` and accepts this process's
/// registration, [`BarrierMode::Membarrier`]; otherwise
/// [`BarrierMode::SeqCstFence`]. Every producer calls it before it writes
/// (so a process is registered before its writers rely on the cheap side);
/// later calls are one load.
///
/// `MEMBARRIER_CMD_PRIVATE_EXPEDITED` would only order threads of the
/// calling process, and `MEMBARRIER_CMD_GLOBAL` (no registration needed)
/// waits for an RCU grace period (about 14 ms measured on the bench
/// machine), so neither fits a reader parking on another process's writer.
pub fn barrier_mode() -> BarrierMode {
    use crate::sync::Ordering as O;
    match BARRIER.load(O::Acquire) {
        1 => return BarrierMode::Membarrier,
        2 => return BarrierMode::SeqCstFence,
        _ => {}
    }
    let forced_off = std::env::var_os("SHMQ_NO_MEMBARRIER").is_some_and(|v| v != "0");
    let query = membarrier(MEMBARRIER_CMD_QUERY);
    let supported = !forced_off
        && query > 0
        && query & libc::c_long::from(MEMBARRIER_CMD_GLOBAL_EXPEDITED) != 0
        && query & libc::c_long::from(MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED) != 0;
    let mode = if supported && membarrier(MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED) == 0 {
        1
    } else {
        2
    };
    // Several threads may race here; they all compute the same answer.
    BARRIER.store(mode, O::Release);
    if mode == 1 {
        BarrierMode::Membarrier
    } else {
        BarrierMode::SeqCstFence
    }
}

/// The rare side of the asymmetric barrier (see `crate::sync::heavy_barrier`):
/// `membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)`, which also acts as a full
/// barrier for the caller; a SeqCst fence where that is unavailable (then
/// writers of this host also fall back to a fence, except a writer in another
/// process that could register when this one could not: see
/// `crate::wait::park`, which bounds its sleep in that mode).
pub fn heavy_barrier() {
    if barrier_mode() == BarrierMode::Membarrier && membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED) == 0
    {
        return;
    }
    crate::sync::fence(crate::sync::Ordering::SeqCst);
}
