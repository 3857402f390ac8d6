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
//! The child installs a seccomp filter (`shmq::protocol::os::forbid_syscalls`) after
//! setting everything up: from then on any system call other than `write`,
//! `exit` and `rt_sigreturn` kills the process with `SIGSYS`. It then runs
//! `send`, `send_batch` and `loan`/`commit` many times and reports with a raw
//! `write(2)`. Seeing that report proves the loop made no other system call
//! (a `FUTEX_WAKE` included); seeing the child then die of `SIGSYS` (the
//! harness's next syscall after the test returns) proves the filter really
//! was on. No timing and no sampling: one forbidden call anywhere in the loop
//! would kill the child before its report. (The vDSO clock each send reads
//! is not a system call, and stays allowed.)

use std::os::unix::process::ExitStatusExt;
use std::process::Child;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

mod common;

use common::{
    child_role, line_from_parent, send_line, spawn_child, tell_parent, wait_exit, ChildLines,
    ShmGuard, CHILD_DEADLINE, TAG,
};
use shmq::protocol::layout::KIND_PARTITION;
use shmq::protocol::name;
use shmq::protocol::region::Region;
use shmq::{
    Consumer, Error, Producer, RecordBuf, SeekPolicy, TopicConfig, TopicManager, WaitStrategy,
};

/// Sends the strict child makes of each kind.
const STRICT_SENDS: u64 = 100_000;

fn config() -> TopicConfig {
    TopicConfig::default().partitions(1).slots(64).slot_size(64)
}

/// Start `role` in a child process working in namespace `ns`.
fn spawn(role: &str, ns: &str) -> (Child, ChildLines) {
    let mut child = spawn_child(role, &[ns]);
    let lines = ChildLines::new(&mut child);
    (child, lines)
}

/// Drop the manager, remove the token files of dead children (what the
/// supervisor does) and let the guard delete the topic and assert that
/// nothing of the namespace is left.
fn cleanup(guard: ShmGuard, mgr: TopicManager) {
    drop(mgr);
    guard.reap_dead_tokens();
    guard.finish();
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
    let Some((role, args)) = child_role() else {
        return;
    };
    let ns = args[0].clone();
    let mgr = TopicManager::with_namespace(&ns).unwrap();
    let topic = mgr.open("t").unwrap();
    match role.as_str() {
        // Park on the topic until told to stop; report every record.
        "parked" => {
            let mut c = Consumer::new(&topic, "parked")
                .unwrap()
                .with_wait_strategy(WaitStrategy::Park);
            c.seek(SeekPolicy::Latest).unwrap();
            tell_parent("ready", "");
            let mut buf = RecordBuf::default();
            loop {
                c.recv_into(&mut buf, Some(CHILD_DEADLINE)).unwrap();
                let v = String::from_utf8(buf.value().to_vec()).unwrap();
                tell_parent("got", &v);
                if v == "stop" {
                    break;
                }
            }
        }
        // Send one record ~20 ms after each "go <text>" line.
        "producer" => {
            let mut p = Producer::new(&topic).unwrap();
            tell_parent("ready", "");
            loop {
                let line = line_from_parent().unwrap_or_default();
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
            shmq::protocol::os::forbid_syscalls().unwrap();
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
            shmq::protocol::os::write_fd(1, msg.as_bytes()).unwrap();
            // Whatever the harness does next is a syscall: SIGSYS.
            std::mem::forget((p, topic, mgr));
        }
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn a_parked_consumer_is_woken_by_the_next_publish_of_another_process() {
    let guard = ShmGuard::new("wpark");
    let ns = guard.ns().to_string();
    let mgr = TopicManager::with_namespace(&ns).unwrap();
    let topic = mgr.create("t", config()).unwrap();
    let mut p = Producer::new(&topic).unwrap();
    let part = Region::attach(&name::partition_region(&ns, "t", 0), KIND_PARTITION)
        .unwrap()
        .unwrap();
    let meta = Region::attach(
        &name::meta_region(&ns, "t"),
        shmq::protocol::layout::KIND_META,
    )
    .unwrap()
    .unwrap();
    let (mut kid, lines) = spawn("parked", &ns);
    lines.expect("ready");

    // The child's futex word: the topic's `notify`, at the same offset in its
    // mapping as in ours; what we compare is its address in the child, which
    // /proc shows. Both mappings are of the same object, so find the child's
    // by its offset from the mapping base listed in /proc/<pid>/maps.
    let notify_off = std::mem::offset_of!(shmq::protocol::layout::MetaHeader, notify);
    let meta_base = |pid: u32| -> Option<usize> {
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
        let path = format!("/dev/shm/{}", name::meta_region(&ns, "t"));
        maps.lines()
            .find(|l| l.ends_with(&path))
            .and_then(|l| usize::from_str_radix(l.split('-').next()?, 16).ok())
    };
    let pid = kid.id();
    let mut woke = 0u64;
    let mut sent = Vec::new();
    for attempt in 0..5 {
        // Wait until the child announced itself in `waiters` and its thread
        // sleeps in FUTEX_WAIT on the notify word.
        let deadline = Instant::now() + CHILD_DEADLINE;
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
        assert_eq!(lines.expect("got"), text);
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
    assert_eq!(lines.expect("got"), "stop");
    assert!(wait_exit(&mut kid).success());
    drop((p, topic, part, meta));
    cleanup(guard, mgr);
}

#[test]
fn a_send_with_no_parked_reader_makes_no_system_call() {
    let guard = ShmGuard::new("wstrict");
    let ns = guard.ns().to_string();
    let mgr = TopicManager::with_namespace(&ns).unwrap();
    let topic = mgr.create("t", config()).unwrap();
    // A reader that polls without parking: it must not cause wake-ups.
    let mut c = Consumer::new(&topic, "poller").unwrap();
    let (mut kid, lines) = spawn("strict", &ns);
    let report = lines.expect("strict-sent");
    assert_eq!(report, format!("{STRICT_SENDS} wake-calls 0"));
    let status = wait_exit(&mut kid);
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
    cleanup(guard, mgr);
}

#[test]
fn every_strategy_receives_from_another_process() {
    let guard = ShmGuard::new("wstrat");
    let ns = guard.ns().to_string();
    let mgr = TopicManager::with_namespace(&ns).unwrap();
    let topic = mgr.create("t", config()).unwrap();
    let (mut kid, lines) = spawn("producer", &ns);
    lines.expect("ready");
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
        send_line(kid.stdin.as_mut().unwrap(), &format!("go {text}"));
        let r = c.recv_timeout(CHILD_DEADLINE).unwrap();
        assert_eq!(r.value, text.as_bytes(), "{strategy:?}");
        // The blocking `poll_timeout` path too: nothing more is coming.
        let t0 = Instant::now();
        let got = c.poll_timeout(10, Duration::from_millis(30)).unwrap();
        assert!(got.is_empty(), "{strategy:?}: {got:?}");
        assert!(t0.elapsed() >= Duration::from_millis(30), "{strategy:?}");
    }
    send_line(kid.stdin.as_mut().unwrap(), "stop");
    assert!(wait_exit(&mut kid).success());
    drop(topic);
    cleanup(guard, mgr);
}

#[test]
fn recv_timeout_honours_its_deadline_with_every_strategy() {
    let guard = ShmGuard::new("wdl");
    let ns = guard.ns().to_string();
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
    cleanup(guard, mgr);
}

/// With the async API (feature `tokio`): an async consumer that waited and
/// was woken by another process's publish, then had a `recv` cut short by a
/// timeout, has taken its announcements back, so the strict child's sends
/// still make no system call while the consumer (and its hub thread) live.
#[cfg(feature = "tokio")]
#[test]
fn a_send_makes_no_system_call_once_async_consumers_stopped_waiting() {
    let guard = ShmGuard::new("wasync");
    let ns = guard.ns().to_string();
    let mgr = TopicManager::with_namespace(&ns).unwrap();
    let topic = mgr.create("t", config()).unwrap();
    let part = Region::attach(&name::partition_region(&ns, "t", 0), KIND_PARTITION)
        .unwrap()
        .unwrap();
    let waiters = || part.partition_header().waiters.load(Ordering::SeqCst);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let mut c = Consumer::new(&topic, "async").unwrap();
    c.seek(SeekPolicy::Latest).unwrap();
    let mut c = shmq::AsyncConsumer::new(c).unwrap();

    // Woken across processes: the child sends ~20 ms after "go".
    let (mut kid, lines) = spawn("producer", &ns);
    lines.expect("ready");
    let mut stdin = kid.stdin.take().unwrap();
    send_line(&mut stdin, "go async");
    let r = rt
        .block_on(async { tokio::time::timeout(CHILD_DEADLINE, c.recv()).await })
        .expect("the async consumer was never woken")
        .unwrap();
    assert_eq!(r.value, b"async");
    assert_eq!(waiters(), 0, "a woken async consumer left its announcement");
    // A recv armed, then dropped by its timeout.
    let cut =
        rt.block_on(async { tokio::time::timeout(Duration::from_millis(20), c.recv()).await });
    assert!(cut.is_err(), "nothing was sent, yet recv returned {cut:?}");
    assert_eq!(waiters(), 0, "a cancelled recv left its announcement");
    drop(stdin);
    assert!(wait_exit(&mut kid).success());

    let (mut kid, lines) = spawn("strict", &ns);
    let report = lines.expect("strict-sent");
    assert_eq!(report, format!("{STRICT_SENDS} wake-calls 0"));
    let status = wait_exit(&mut kid);
    assert_eq!(
        status.signal(),
        Some(libc_sigsys()),
        "the child was not under its seccomp filter (status {status})"
    );
    drop((c, part, topic));
    cleanup(guard, mgr);
}

/// Under `SHMQ_NO_MEMBARRIER=1` a process takes the fallback barrier (a
/// SeqCst fence on both sides of every Dekker pair).
#[test]
fn barrier_mode_is_what_the_environment_asks() {
    use shmq::protocol::os::{barrier_mode, BarrierMode};
    if std::env::var_os("SHMQ_NO_MEMBARRIER").is_some_and(|v| v != "0") {
        assert_eq!(barrier_mode(), BarrierMode::SeqCstFence);
    }
}

/// The fallback path keeps both guarantees: re-run the wake-up, the
/// no-syscall and the mode tests in a child test process (whose own
/// children inherit the variable) with membarrier turned off.
#[test]
fn the_seqcst_fallback_keeps_wakeups_and_zero_syscalls() {
    if std::env::var_os("SHMQ_NO_MEMBARRIER").is_some() {
        return; // we are that child run
    }
    for test in [
        "barrier_mode_is_what_the_environment_asks",
        "a_parked_consumer_is_woken_by_the_next_publish_of_another_process",
        "a_send_with_no_parked_reader_makes_no_system_call",
    ] {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", test, "--test-threads=1"])
            .env("SHMQ_NO_MEMBARRIER", "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "{test} under SHMQ_NO_MEMBARRIER=1: {}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
