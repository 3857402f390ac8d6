//! Wait strategies across processes: a parked consumer is woken by the next
//! publish of another process, every strategy receives, deadlines hold, and a
//! `send` with no parked reader makes no system call at all.
//!
//! Children are this test binary re-executed (`--exact child_process`) with
//! the role in an environment variable; they talk to the parent through
//! `@@`-tagged stdout lines and read commands from stdin.
//!
//! # How "no syscall" is proven
//!
//! The child installs a seccomp filter (`shmq::os::forbid_syscalls`) after
//! setting everything up: from then on any system call other than `write`,
//! `exit` and `rt_sigreturn` kills the process with `SIGSYS`. It then runs
//! `send`, `send_batch` and `loan`/`commit` many times and reports with a raw
//! `write(2)`. Seeing that report proves the loop made no other system call
//! (a `FUTEX_WAKE` included); seeing the child then die of `SIGSYS` (the
//! harness's next syscall after the test returns) proves the filter really
//! was on. No timing and no sampling: one forbidden call anywhere in the loop
//! would kill the child before its report. (The vDSO clock each send reads
//! is not a system call, and stays allowed.)

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use shmq::layout::KIND_PARTITION;
use shmq::name::{self, RegionName};
use shmq::region::Region;
use shmq::token::{self, Liveness};
use shmq::{
    Consumer, Error, Producer, RecordBuf, SeekPolicy, TopicConfig, TopicManager, WaitStrategy,
};

const ROLE_ENV: &str = "SHMQ_WAIT_TEST_ROLE";
const NS_ENV: &str = "SHMQ_WAIT_TEST_NS";
const TAG: &str = "@@wait ";
/// Generous bound for anything a healthy child does.
const DEADLINE: Duration = Duration::from_secs(20);
/// Sends the strict child makes of each kind.
const STRICT_SENDS: u64 = 100_000;

fn unique_ns(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "w{}{tag}{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn shm_files(ns: &str) -> Vec<String> {
    let prefix = name::namespace_prefix(ns);
    std::fs::read_dir("/dev/shm")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(&prefix))
        .collect()
}

/// Delete the test's topic, remove token files of dead children (what the
/// supervisor does), and assert nothing of the namespace is left.
fn cleanup(ns: &str, mgr: TopicManager) {
    assert!(mgr.delete("t").unwrap());
    drop(mgr);
    for f in shm_files(ns) {
        if let Some(RegionName::Token { id }) = name::parse(ns, &f) {
            if let Liveness::Dead { .. } = token::probe(ns, id) {
                std::fs::remove_file(format!("/dev/shm/{f}")).unwrap();
            }
        }
    }
    let left = shm_files(ns);
    assert!(left.is_empty(), "left in /dev/shm: {left:?}");
}

/// Removes whatever a test's namespace still holds when the test ends, so a
/// failing test leaves nothing in `/dev/shm` (a passing one has already
/// asserted, in `cleanup`, that nothing is left).
struct NsGuard(String);

impl Drop for NsGuard {
    fn drop(&mut self) {
        for f in shm_files(&self.0) {
            let _ = std::fs::remove_file(format!("/dev/shm/{f}"));
        }
    }
}

fn config() -> TopicConfig {
    TopicConfig::default().partitions(1).slots(64).slot_size(64)
}

struct Kid {
    child: Child,
    lines: Receiver<String>,
}

impl Kid {
    fn spawn(role: &str, ns: &str) -> Kid {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "child_process",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ROLE_ENV, role)
            .env(NS_ENV, ns)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if let Some(i) = line.find(TAG) {
                    let _ = tx.send(line[i + TAG.len()..].to_string());
                }
            }
        });
        Kid { child, lines }
    }

    fn expect(&self, prefix: &str) -> String {
        let line = self
            .lines
            .recv_timeout(DEADLINE)
            .unwrap_or_else(|e| panic!("child never said {prefix:?}: {e}"));
        assert!(
            line.starts_with(prefix),
            "child said {line:?}, expected {prefix:?}"
        );
        line[prefix.len()..].trim().to_string()
    }

    fn say(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    fn wait(mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("child did not exit");
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

fn tell(line: impl std::fmt::Display) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{TAG}{line}").unwrap();
    out.flush().unwrap();
}

fn from_parent() -> String {
    let mut s = String::new();
    std::io::stdin().lock().read_line(&mut s).unwrap();
    s.trim().to_string()
}

/// Whether a thread of process `pid` is blocked in a shared (non-private)
/// `FUTEX_WAIT` on address `addr`, from `/proc/<pid>/task/*/syscall`.
fn blocked_on_futex(pid: u32, addr: usize) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    let want = format!("{} {:#x} 0x0 ", libc_sys_futex(), addr);
    tasks.filter_map(|t| t.ok()).any(|t| {
        std::fs::read_to_string(t.path().join("syscall")).is_ok_and(|s| s.starts_with(&want))
    })
}

/// `SIGSYS` (Linux, x86-64 and aarch64).
fn libc_sigsys() -> i32 {
    31
}

/// `SYS_futex` on x86-64 / aarch64.
fn libc_sys_futex() -> u32 {
    if cfg!(target_arch = "aarch64") {
        98
    } else {
        202
    }
}

/// Child roles; returns at once in a normal test run.
#[test]
fn child_process() {
    let Ok(role) = std::env::var(ROLE_ENV) else {
        return;
    };
    let ns = std::env::var(NS_ENV).unwrap();
    let mgr = TopicManager::with_namespace(&ns).unwrap();
    let topic = mgr.open("t").unwrap();
    match role.as_str() {
        // Park on the topic until told to stop; report every record.
        "parked" => {
            let mut c = Consumer::new(&topic, "parked")
                .unwrap()
                .with_wait_strategy(WaitStrategy::Park);
            c.seek(SeekPolicy::Latest).unwrap();
            tell("ready");
            let mut buf = RecordBuf::default();
            loop {
                c.recv_into(&mut buf, Some(DEADLINE)).unwrap();
                let v = String::from_utf8(buf.value().to_vec()).unwrap();
                tell(format!("got {v}"));
                if v == "stop" {
                    break;
                }
            }
        }
        // Send one record ~20 ms after each "go <text>" line.
        "producer" => {
            let mut p = Producer::new(&topic).unwrap();
            tell("ready");
            loop {
                let line = from_parent();
                let Some(text) = line.strip_prefix("go ") else {
                    break;
                };
                std::thread::sleep(Duration::from_millis(20));
                p.send(text.as_bytes()).unwrap();
            }
        }
        // Send under a seccomp filter: any syscall but `write` kills the process.
        "strict" => {
            let mut p = Producer::new(&topic).unwrap();
            let batch: [&[u8]; 8] = [&[3u8; 64]; 8];
            // Warm up every path once (first-use initialisation).
            p.send(&[1; 64]).unwrap();
            p.send_batch(&batch).unwrap();
            let mut loan = p.loan(64).unwrap();
            loan.fill(2);
            loan.commit().unwrap();
            let before = shmq::wake_stats();
            // Allocated now: a `malloc` under the filter could need `brk`.
            let mut msg = String::with_capacity(256);
            shmq::os::forbid_syscalls().unwrap();
            let mut sent = 0u64;
            for i in 0..STRICT_SENDS {
                p.send(&i.to_le_bytes()).unwrap();
                p.send_batch(&batch).unwrap();
                let mut loan = p.loan(8).unwrap();
                loan.copy_from_slice(&i.to_le_bytes());
                loan.commit().unwrap();
                sent += 1;
            }
            let calls = shmq::wake_stats().calls - before.calls;
            use std::fmt::Write as _;
            writeln!(msg, "{TAG}strict-sent {sent} wake-calls {calls}").unwrap();
            // `write` is one of the three calls the filter allows.
            shmq::os::write_fd(1, msg.as_bytes()).unwrap();
            // Whatever the harness does next is a syscall: SIGSYS.
            std::mem::forget((p, topic, mgr));
        }
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn a_parked_consumer_is_woken_by_the_next_publish_of_another_process() {
    let ns = unique_ns("park");
    let _guard = NsGuard(ns.clone());
    let mgr = TopicManager::with_namespace(&ns).unwrap();
    let topic = mgr.create("t", config()).unwrap();
    let mut p = Producer::new(&topic).unwrap();
    let part = Region::attach(&name::partition_region(&ns, "t", 0), KIND_PARTITION)
        .unwrap()
        .unwrap();
    let meta = Region::attach(&name::meta_region(&ns, "t"), shmq::layout::KIND_META)
        .unwrap()
        .unwrap();
    let kid = Kid::spawn("parked", &ns);
    kid.expect("ready");

    // The child's futex word: the topic's `notify`, at the same offset in its
    // mapping as in ours; what we compare is its address in the child, which
    // /proc shows. Both mappings are of the same object, so find the child's
    // by its offset from the mapping base listed in /proc/<pid>/maps.
    let notify_off = std::mem::offset_of!(shmq::layout::MetaHeader, notify);
    let meta_base = |pid: u32| -> Option<usize> {
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
        let path = format!("/dev/shm/{}", name::meta_region(&ns, "t"));
        maps.lines()
            .find(|l| l.ends_with(&path))
            .and_then(|l| usize::from_str_radix(l.split('-').next()?, 16).ok())
    };
    let pid = kid.child.id();
    let mut woke = 0u64;
    let mut sent = Vec::new();
    for attempt in 0..5 {
        // Wait until the child announced itself in `waiters` and its thread
        // sleeps in FUTEX_WAIT on the notify word.
        let deadline = Instant::now() + DEADLINE;
        loop {
            let parked = part.partition_header().waiters.load(Ordering::SeqCst) > 0
                && meta_base(pid).is_some_and(|b| blocked_on_futex(pid, b + notify_off));
            if parked {
                break;
            }
            assert!(Instant::now() < deadline, "child never parked");
            std::thread::sleep(Duration::from_millis(1));
        }
        let notify_before = meta.meta_header().notify.load(Ordering::SeqCst);
        let before = shmq::wake_stats();
        let text = format!("wake{attempt}");
        p.send(text.as_bytes()).unwrap();
        let after = shmq::wake_stats();
        // The send saw the waiter: exactly one wake-up call, notify bumped.
        assert_eq!(
            after.calls,
            before.calls + 1,
            "send did not wake the parked reader"
        );
        assert!(meta.meta_header().notify.load(Ordering::SeqCst) > notify_before);
        assert_eq!(kid.expect("got"), text);
        sent.push(text);
        woke += after.woken - before.woken;
        // The kernel reports whom the FUTEX_WAKE woke. The child re-parks
        // every 100 ms, so in rare cases it was between two parks; retry.
        if woke > 0 {
            break;
        }
    }
    assert!(
        woke >= 1,
        "the kernel never reported the parked child woken"
    );
    p.send(b"stop").unwrap();
    assert_eq!(kid.expect("got"), "stop");
    assert!(kid.wait().success());
    drop((p, topic, part, meta));
    cleanup(&ns, mgr);
}

#[test]
fn a_send_with_no_parked_reader_makes_no_system_call() {
    let ns = unique_ns("strict");
    let _guard = NsGuard(ns.clone());
    let mgr = TopicManager::with_namespace(&ns).unwrap();
    let topic = mgr.create("t", config()).unwrap();
    // A reader that polls without parking: it must not cause wake-ups.
    let mut c = Consumer::new(&topic, "poller").unwrap();
    let kid = Kid::spawn("strict", &ns);
    let report = kid.expect("strict-sent");
    assert_eq!(report, format!("{STRICT_SENDS} wake-calls 0"));
    let status = kid.wait();
    assert_eq!(
        status.signal(),
        Some(libc_sigsys()),
        "the child was not under its seccomp filter (status {status})"
    );
    // The records are really there: 1 + 8 + 1 per round, plus the warm-up.
    let write_offset = topic.write_offset(0).unwrap();
    assert_eq!(write_offset, 10 + STRICT_SENDS * 10);
    let mut buf = RecordBuf::default();
    c.seek(SeekPolicy::Latest).unwrap();
    assert!(c.poll_into(&mut buf).unwrap().is_none());
    drop((c, topic));
    cleanup(&ns, mgr);
}

#[test]
fn every_strategy_receives_from_another_process() {
    let ns = unique_ns("strat");
    let _guard = NsGuard(ns.clone());
    let mgr = TopicManager::with_namespace(&ns).unwrap();
    let topic = mgr.create("t", config()).unwrap();
    let mut kid = Kid::spawn("producer", &ns);
    kid.expect("ready");
    for strategy in [
        WaitStrategy::BusySpin,
        WaitStrategy::Yield,
        WaitStrategy::Backoff,
        WaitStrategy::Park,
    ] {
        let mut c = Consumer::new(&topic, "g")
            .unwrap()
            .with_wait_strategy(strategy);
        c.seek(SeekPolicy::Latest).unwrap();
        let text = format!("{strategy:?}");
        kid.say(&format!("go {text}"));
        let r = c.recv_timeout(DEADLINE).unwrap();
        assert_eq!(r.value, text.as_bytes(), "{strategy:?}");
        // The blocking `poll_timeout` path too: nothing more is coming.
        let t0 = Instant::now();
        let got = c.poll_timeout(10, Duration::from_millis(30)).unwrap();
        assert!(got.is_empty(), "{strategy:?}: {got:?}");
        assert!(t0.elapsed() >= Duration::from_millis(30), "{strategy:?}");
    }
    kid.say("stop");
    assert!(kid.wait().success());
    drop(topic);
    cleanup(&ns, mgr);
}

#[test]
fn recv_timeout_honours_its_deadline_with_every_strategy() {
    let ns = unique_ns("dl");
    let _guard = NsGuard(ns.clone());
    let mgr = TopicManager::with_namespace(&ns).unwrap();
    let topic = mgr.create("t", config()).unwrap();
    let timeout = Duration::from_millis(150);
    for strategy in [
        WaitStrategy::BusySpin,
        WaitStrategy::Yield,
        WaitStrategy::Backoff,
        WaitStrategy::Park,
    ] {
        let mut c = Consumer::new(&topic, "g")
            .unwrap()
            .with_wait_strategy(strategy);
        let t0 = Instant::now();
        let r = c.recv_timeout(timeout);
        let took = t0.elapsed();
        assert!(matches!(r, Err(Error::Timeout)), "{strategy:?}: {r:?}");
        assert!(took >= timeout, "{strategy:?} returned early: {took:?}");
        assert!(
            took < timeout + Duration::from_secs(2),
            "{strategy:?} overslept: {took:?}"
        );

        let mut buf = RecordBuf::default();
        let t0 = Instant::now();
        let r = c.recv_into(&mut buf, Some(timeout));
        assert!(matches!(r, Err(Error::Timeout)), "{strategy:?}: {r:?}");
        assert!(t0.elapsed() >= timeout, "{strategy:?}");
    }
    drop(topic);
    cleanup(&ns, mgr);
}
