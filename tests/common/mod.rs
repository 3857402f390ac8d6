//! Helpers shared by the cross-process integration tests.
//!
//! * [`ShmGuard`]: a unique namespace per test, cleaned up afterwards, with an
//!   assertion that nothing of it is left in `/dev/shm`.
//! * [`spawn_child`]: re-executes the current test binary to run one child
//!   role in a separate OS process. The test binary must contain a test fn
//!   named [`CHILD_TEST`] that calls [`child_role`] and dispatches on it (it
//!   returns at once when the binary was not started as a child).
//! * [`ChildLines`]: reads `@@`-tagged lines the child prints on stdout, with
//!   a timeout, so the parent can wait for "ready" points without sleeping.
//! * [`payload`] / [`check_payload`]: self-checking message bodies (sequence
//!   number, checksum, length derived from the sequence).

#![allow(dead_code)] // each test binary uses a different subset

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use shmq::protocol::name::{self, RegionName};
use shmq::protocol::token::{self, Liveness};
use shmq::TopicManager;

/// Name of the test fn in every test binary that runs child roles.
pub const CHILD_TEST: &str = "child_process";
/// Environment variable naming the role a child process plays.
pub const ROLE_ENV: &str = "SHMQ_TEST_CHILD_ROLE";
/// Environment variable carrying the child's arguments, separated by
/// [`ARG_SEP`].
pub const ARGS_ENV: &str = "SHMQ_TEST_CHILD_ARGS";
/// Separator of the child's arguments.
pub const ARG_SEP: char = '\u{1f}';
/// Prefix of the stdout lines a child sends to its parent.
pub const TAG: &str = "@@shmq ";

/// Generous bound on anything a child should do in a healthy run.
pub const CHILD_DEADLINE: Duration = Duration::from_secs(20);

/// A namespace unique to this test (and this test process), never longer
/// than the 32 bytes namespaces allow.
pub fn unique_ns(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let tag: String = tag
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(12)
        .collect();
    let ns = format!("t{}{}x{}", std::process::id(), tag, n);
    assert!(ns.len() <= name::NAMESPACE_MAX, "{ns}");
    ns
}

/// Names of everything in `/dev/shm` that belongs to namespace `ns`.
pub fn shm_files(ns: &str) -> Vec<String> {
    let prefix = name::namespace_prefix(ns);
    let mut v: Vec<String> = std::fs::read_dir("/dev/shm")
        .expect("list /dev/shm")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(&prefix))
        .collect();
    v.sort();
    v
}

/// Path of a region in `/dev/shm`.
pub fn shm_path(region: &str) -> std::path::PathBuf {
    std::path::Path::new("/dev/shm").join(region)
}

/// Owns a test's namespace. [`ShmGuard::finish`] deletes every topic of it
/// through the library and asserts that nothing is left in `/dev/shm`; if the
/// test panics before that, `Drop` removes the files without asserting.
pub struct ShmGuard {
    ns: String,
    finished: bool,
}

impl ShmGuard {
    /// A fresh namespace derived from `tag`.
    pub fn new(tag: &str) -> Self {
        let ns = unique_ns(tag);
        let left = shm_files(&ns);
        assert!(left.is_empty(), "namespace {ns} not fresh: {left:?}");
        ShmGuard {
            ns,
            finished: false,
        }
    }

    /// The namespace.
    pub fn ns(&self) -> &str {
        &self.ns
    }

    /// A manager for the namespace (drop it before [`ShmGuard::finish`]: it
    /// holds a liveness-token file).
    pub fn manager(&self) -> TopicManager {
        TopicManager::with_namespace(&self.ns).expect("manager")
    }

    /// Remove the token files of dead processes (what the supervisor does for
    /// a process that was killed); returns how many were removed. A token of
    /// a live process is never touched.
    pub fn reap_dead_tokens(&self) -> usize {
        let mut n = 0;
        for f in shm_files(&self.ns) {
            if let Some(RegionName::Token { id }) = name::parse(&self.ns, &f) {
                if let Liveness::Dead { .. } = token::probe(&self.ns, id) {
                    std::fs::remove_file(shm_path(&f)).expect("remove dead token");
                    n += 1;
                }
            }
        }
        n
    }

    /// Delete every topic of the namespace with [`TopicManager::delete`]
    /// and assert that nothing at all is left in `/dev/shm` for it.
    pub fn finish(mut self) {
        self.finished = true;
        let mut topics: Vec<String> = shm_files(&self.ns)
            .iter()
            .filter_map(|f| match name::parse(&self.ns, f)? {
                RegionName::Meta { topic } | RegionName::Partition { topic, .. } => Some(topic),
                RegionName::Token { .. } => None,
            })
            .collect();
        topics.sort();
        topics.dedup();
        {
            let mgr = self.manager();
            for t in &topics {
                assert!(mgr.delete(t).expect("delete"), "delete {t} removed nothing");
            }
        }
        let left = shm_files(&self.ns);
        assert!(
            left.is_empty(),
            "namespace {} left files in /dev/shm: {left:?}",
            self.ns
        );
    }
}

impl Drop for ShmGuard {
    fn drop(&mut self) {
        if !self.finished {
            for f in shm_files(&self.ns) {
                let _ = std::fs::remove_file(shm_path(&f));
            }
        }
    }
}

/// Start this test binary again as a child running `role` with `args`
/// (passed through the environment). stdin and stdout are piped (see
/// [`ChildLines`] and [`send_line`]); stderr is inherited so a child's panic
/// shows in the test output.
pub fn spawn_child(role: &str, args: &[&str]) -> Child {
    let exe = std::env::current_exe().expect("current_exe");
    Command::new(exe)
        .args(["--exact", CHILD_TEST, "--nocapture", "--test-threads=1"])
        .env(ROLE_ENV, role)
        .env(ARGS_ENV, args.join(&ARG_SEP.to_string()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child test process")
}

/// In a child: `Some((role, args))` if this process was started by
/// [`spawn_child`], `None` in a normal test run.
pub fn child_role() -> Option<(String, Vec<String>)> {
    let role = std::env::var(ROLE_ENV).ok()?;
    let args = std::env::var(ARGS_ENV).unwrap_or_default();
    let args = if args.is_empty() {
        Vec::new()
    } else {
        args.split(ARG_SEP).map(str::to_string).collect()
    };
    Some((role, args))
}

/// In a child: tell the parent `key value`.
pub fn tell_parent(key: &str, value: impl std::fmt::Display) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{TAG}{key} {value}").expect("write to parent");
    out.flush().expect("flush to parent");
}

/// In a child: wait for one line from the parent on stdin (`None` on EOF,
/// i.e. the parent went away).
pub fn line_from_parent() -> Option<String> {
    let mut line = String::new();
    match std::io::stdin().lock().read_line(&mut line) {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(line.trim_end().to_string()),
    }
}

/// In the parent: send one line to the child's stdin.
pub fn send_line(stdin: &mut ChildStdin, line: &str) {
    writeln!(stdin, "{line}").expect("write to child");
    stdin.flush().expect("flush to child");
}

/// The `@@`-tagged lines a child prints, read on a helper thread so the
/// parent can wait for them with a timeout. Untagged lines (libtest's own
/// output) are dropped; the pipe is drained until the child exits.
pub struct ChildLines {
    rx: Receiver<(String, String)>,
}

impl ChildLines {
    /// Take the child's stdout.
    pub fn new(child: &mut Child) -> Self {
        let stdout = child.stdout.take().expect("child stdout is piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // libtest may print "test child_process ... " on the same line.
                if let Some(i) = line.find(TAG) {
                    let rest = &line[i + TAG.len()..];
                    let (k, v) = rest.split_once(' ').unwrap_or((rest, ""));
                    let _ = tx.send((k.to_string(), v.to_string()));
                }
            }
        });
        ChildLines { rx }
    }

    /// The next tagged line, waiting up to `timeout`; `None` on timeout or
    /// once the child closed its stdout.
    pub fn next(&self, timeout: std::time::Duration) -> Option<(String, String)> {
        self.rx.recv_timeout(timeout).ok()
    }

    /// Every tagged line available right now.
    pub fn drain(&self) -> Vec<(String, String)> {
        self.rx.try_iter().collect()
    }

    /// Wait for the next tagged line; it must have key `key`. Returns its value.
    pub fn expect(&self, key: &str) -> String {
        match self.rx.recv_timeout(CHILD_DEADLINE) {
            Ok((k, v)) => {
                assert_eq!(k, key, "child said {k} {v}, expected {key}");
                v
            }
            Err(e) => panic!("child never said {key}: {e}"),
        }
    }

    /// [`ChildLines::expect`], parsed.
    pub fn expect_parsed<T: std::str::FromStr>(&self, key: &str) -> T
    where
        T::Err: std::fmt::Debug,
    {
        let v = self.expect(key);
        v.parse()
            .unwrap_or_else(|e| panic!("child's {key} {v:?} does not parse: {e:?}"))
    }
}

/// Wait (bounded by [`CHILD_DEADLINE`]) for the child to exit; kill it and
/// panic if it does not.
pub fn wait_exit(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + CHILD_DEADLINE;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "child {} did not exit within {CHILD_DEADLINE:?}",
                child.id()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Wait for the child to exit and assert that it succeeded (its own
/// assertions passed).
pub fn wait_success(child: &mut Child) {
    let status = wait_exit(child);
    assert!(status.success(), "child {} failed: {status}", child.id());
}

/// 64-bit FNV-1a, the checksum embedded in test payloads.
pub fn fnv64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Bytes of a payload's fixed part: sequence number and checksum.
pub const PAYLOAD_MIN: usize = 16;

/// Length of the payload of `seq` for slots of `max` bytes: varies from
/// [`PAYLOAD_MIN`] to `max` inclusive.
pub fn payload_len(seq: u64, max: usize) -> usize {
    assert!(max >= PAYLOAD_MIN);
    let span = (max - PAYLOAD_MIN + 1) as u64;
    PAYLOAD_MIN + (seq.wrapping_mul(7919) % span) as usize
}

/// A self-checking message: `seq` (u64 LE), a checksum (u64 LE) of `seq`'s
/// bytes and the filler, then filler bytes derived from `seq`; total length
/// [`payload_len`]`(seq, max)`.
pub fn payload(seq: u64, max: usize) -> Vec<u8> {
    let len = payload_len(seq, max);
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(&seq.to_le_bytes());
    v.extend_from_slice(&[0; 8]);
    v.extend((0..len - PAYLOAD_MIN).map(|i| (seq as u8).wrapping_mul(31).wrapping_add(i as u8)));
    let sum = checksum(&v);
    v[8..16].copy_from_slice(&sum.to_le_bytes());
    v
}

fn checksum(v: &[u8]) -> u64 {
    let mut h = fnv64(&v[..8]);
    h ^= fnv64(&v[PAYLOAD_MIN..]).rotate_left(17);
    h
}

/// Verify a message made by [`payload`] for slots of `max` bytes and return
/// its sequence number; panics with a description if it is torn or wrong.
pub fn check_payload(v: &[u8], max: usize) -> u64 {
    assert!(
        v.len() >= PAYLOAD_MIN,
        "record of {} bytes is shorter than a payload header",
        v.len()
    );
    let seq = u64::from_le_bytes(v[..8].try_into().unwrap());
    let sum = u64::from_le_bytes(v[8..16].try_into().unwrap());
    assert_eq!(
        v.len(),
        payload_len(seq, max),
        "record seq {seq}: wrong length (torn or stale)"
    );
    assert_eq!(
        sum,
        checksum(v),
        "record seq {seq}: checksum mismatch (torn)"
    );
    for (i, &b) in v[PAYLOAD_MIN..].iter().enumerate() {
        assert_eq!(
            b,
            (seq as u8).wrapping_mul(31).wrapping_add(i as u8),
            "record seq {seq}: filler byte {i} wrong (torn)"
        );
    }
    seq
}
