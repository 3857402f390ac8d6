//! Liveness tokens (issue 11, defects 1, 2 and the token half of 9).
//!
//! * A token is visible only once it is locked and holds its owner's pid, so
//!   a reaper racing token creation never removes (or reports dead) a live
//!   process's token.
//! * Probing a token never takes its lock, so concurrent probes of a dead
//!   token all say `Dead` (and a takeover probing at the same time is never
//!   told the dead owner holds the partition).
//! * A process that exits normally while a thread still holds a `Topic`
//!   clone leaves no token file behind.
//!
//! `SHMQ_TOKEN_RACE_SECS` sets how long the race loops run (default 2 s).

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use shmq::protocol::name;
use shmq::protocol::reclaim::{self, ReapAction, ReapOptions};
use shmq::protocol::token::{self, Liveness};
use shmq::{Partitions, Producer, TopicConfig, TopicManager};

/// Kills the child if the test panics before it does.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The first few items of a list of failures (the count is printed apart).
fn few(v: &[String]) -> &[String] {
    &v[..v.len().min(5)]
}

fn race_duration() -> Duration {
    let secs = std::env::var("SHMQ_TOKEN_RACE_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(2.0);
    Duration::from_secs_f64(secs)
}

#[test]
fn child_process() {
    let Some((role, args)) = child_role() else {
        return;
    };
    match role.as_str() {
        // Hold a token (and, with a topic name, partition 0's writer lease)
        // until killed.
        "hold" => {
            let mgr = TopicManager::with_namespace(&args[0]).unwrap();
            let _producer = args.get(1).map(|topic| {
                let t = mgr.open(topic).unwrap();
                Producer::new(&t).unwrap()
            });
            tell_parent("token", mgr.token_id());
            let _ = line_from_parent();
            std::thread::sleep(Duration::from_secs(3600));
        }
        // Exit normally while a background thread still holds a Topic clone.
        "exit_with_thread" => {
            let mgr = TopicManager::with_namespace(&args[0]).unwrap();
            let topic = mgr
                .create("held", TopicConfig::default().partitions(1).slots(8))
                .unwrap();
            tell_parent("token", mgr.token_id());
            drop(mgr);
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let _held = topic;
                tx.send(()).unwrap();
                std::thread::sleep(Duration::from_secs(3600));
            });
            rx.recv().unwrap();
            // Returning ends the process normally (libtest's exit) with the
            // thread still holding the topic and, through it, the token.
        }
        other => panic!("unknown child role {other}"),
    }
}

/// Defect 1: a manager-creating thread against a reaping thread. No live
/// token may be removed or reported dead (nobody in the namespace dies, so
/// any `RemovedDeadToken` is a live token taken for dead).
#[test]
fn reap_racing_token_creation_never_removes_a_live_token() {
    let guard = ShmGuard::new("tokrace");
    let ns = guard.ns().to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let reaper = {
        let (ns, stop) = (ns.clone(), stop.clone());
        std::thread::spawn(move || {
            let (mut passes, mut wrongly_removed) = (0u64, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                let report = reclaim::reap(&ns, ReapOptions::default()).unwrap();
                for a in report.actions {
                    match a {
                        ReapAction::RemovedDeadToken { file, pid } => {
                            wrongly_removed.push(format!("{file} (pid {pid})"))
                        }
                        other => panic!("unexpected reap action {other}"),
                    }
                }
                passes += 1;
            }
            (passes, wrongly_removed)
        })
    };
    let prober = {
        let (ns, stop) = (ns.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut said_dead = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                for f in shm_files(&ns) {
                    if let Some(name::RegionName::Token { id }) = name::parse(&ns, &f) {
                        if let Liveness::Dead { pid } = token::probe(&ns, id) {
                            said_dead.push(format!("{f} (pid {pid})"));
                        }
                    }
                }
            }
            said_dead
        })
    };
    // At least MIN_MANAGERS rounds (the race needs many tries to show on a
    // busy machine), for at least the race duration, and at most 10 s.
    const MIN_MANAGERS: u64 = 3000;
    let start = Instant::now();
    let (mut made, mut vanished) = (0u64, Vec::new());
    while (made < MIN_MANAGERS || start.elapsed() < race_duration())
        && start.elapsed() < Duration::from_secs(10).max(race_duration())
    {
        let mgr = TopicManager::with_namespace(&ns).unwrap();
        let file = name::token_file(&ns, mgr.token_id());
        if !shm_path(&file).exists() {
            vanished.push(file);
        }
        made += 1;
        drop(mgr);
    }
    stop.store(true, Ordering::Relaxed);
    let (passes, removed) = reaper.join().unwrap();
    let said_dead = prober.join().unwrap();
    eprintln!(
        "{made} managers, {passes} reap passes: {} live tokens vanished, {} removed as dead, {} probed dead",
        vanished.len(),
        removed.len(),
        said_dead.len()
    );
    assert!(passes > 0 && made > 0);
    assert!(
        vanished.is_empty() && removed.is_empty() && said_dead.is_empty(),
        "live tokens vanished: {:?}; reaped as dead: {:?}; probed dead: {:?}",
        few(&vanished),
        few(&removed),
        few(&said_dead)
    );
    guard.finish();
}

/// Defect 2: many concurrent probes of a dead token (a child holding it was
/// `kill -9`ed) all say `Dead`, and probes of live tokens (this process's and
/// a live child's) all say `Alive`, whatever else is probing at the time.
#[test]
fn concurrent_probes_never_make_a_dead_token_look_alive() {
    let guard = ShmGuard::new("tokprobe");
    let ns = guard.ns().to_string();
    let mut dead_child = KillOnDrop(spawn_child("hold", &[&ns]));
    let dead_lines = ChildLines::new(&mut dead_child.0);
    let dead_id: u32 = dead_lines.expect_parsed("token");
    let mut live_child = KillOnDrop(spawn_child("hold", &[&ns]));
    let live_lines = ChildLines::new(&mut live_child.0);
    let live_id: u32 = live_lines.expect_parsed("token");
    assert_eq!(
        token::probe(&ns, dead_id),
        Liveness::Alive {
            pid: dead_child.0.id()
        }
    );
    dead_child.0.kill().unwrap();
    dead_child.0.wait().unwrap();

    let mgr = TopicManager::with_namespace(&ns).unwrap();
    let own_id = mgr.token_id();
    let stop = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + race_duration() / 2;
    let wrong = Arc::new(AtomicU64::new(0));
    let probes = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let (ns, stop, wrong, probes) =
                (ns.clone(), stop.clone(), wrong.clone(), probes.clone());
            let dead_pid = dead_child.0.id();
            let live_pid = live_child.0.id();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let ok = token::probe(&ns, dead_id) == Liveness::Dead { pid: dead_pid }
                        && (i % 2 == 1
                            || token::probe(&ns, live_id) == Liveness::Alive { pid: live_pid }
                                && token::probe(&ns, own_id)
                                    == Liveness::Alive {
                                        pid: std::process::id(),
                                    });
                    if !ok {
                        wrong.fetch_add(1, Ordering::Relaxed);
                    }
                    probes.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let (wrong, probes) = (
        wrong.load(Ordering::Relaxed),
        probes.load(Ordering::Relaxed),
    );
    eprintln!("{probes} probe rounds, {wrong} wrong verdicts");
    assert!(probes > 0);
    assert_eq!(
        wrong, 0,
        "{wrong} of {probes} probe rounds got a wrong verdict"
    );

    drop(live_child);
    drop(mgr);
    assert_eq!(guard.reap_dead_tokens(), 2);
    guard.finish();
}

/// Defect 2, end to end: producers taking over, one by one, the 256
/// partitions of a `kill -9`ed writer while other threads probe the dead
/// writer's token all succeed (a takeover was refused with `PartitionHeld`
/// naming the dead pid when a probe held the token's lock at that instant).
#[test]
fn takeover_of_a_dead_writer_succeeds_while_others_probe_it() {
    const PARTITIONS: u32 = 256;
    let guard = ShmGuard::new("toktake");
    let ns = guard.ns().to_string();
    let mgr = TopicManager::with_namespace(&ns).unwrap();
    let topic = mgr
        .create(
            "t",
            TopicConfig::default()
                .partitions(PARTITIONS)
                .slots(8)
                .slot_size(64),
        )
        .unwrap();
    let mut child = spawn_child("hold", &[&ns, "t"]);
    let lines = ChildLines::new(&mut child);
    let dead_id: u32 = lines.expect_parsed("token");
    child.kill().unwrap();
    child.wait().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let probes = Arc::new(AtomicU64::new(0));
    let probers: Vec<_> = (0..3)
        .map(|_| {
            let (ns, stop, probes) = (ns.clone(), stop.clone(), probes.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let _ = token::probe(&ns, dead_id);
                    probes.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    // Start the takeovers once the probers are busy.
    while probes.load(Ordering::Relaxed) < 1000 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut producers = Vec::new();
    let mut refused = Vec::new();
    for p in 0..PARTITIONS {
        match Producer::with_partitions(&topic, Partitions::Only(vec![p])) {
            Ok(producer) => producers.push(producer),
            Err(e) => refused.push(format!("partition {p}: {e}")),
        }
    }
    stop.store(true, Ordering::Relaxed);
    for p in probers {
        p.join().unwrap();
    }
    assert!(
        refused.is_empty(),
        "{} of {PARTITIONS} takeovers of a dead writer refused: {refused:?}",
        refused.len()
    );
    drop(producers);
    drop(topic);
    drop(mgr);
    assert_eq!(guard.reap_dead_tokens(), 1);
    guard.finish();
}

/// The token half of defect 9: a process that exits normally while a
/// background thread still holds a `Topic` clone (and so the token) leaves no
/// token file behind.
#[test]
fn normal_exit_with_a_thread_holding_a_topic_removes_the_token() {
    let guard = ShmGuard::new("tokexit");
    let ns = guard.ns().to_string();
    let mut child = spawn_child("exit_with_thread", &[&ns]);
    let lines = ChildLines::new(&mut child);
    let id: u32 = lines.expect_parsed("token");
    wait_success(&mut child);
    let file = name::token_file(&ns, id);
    assert!(
        !shm_path(&file).exists(),
        "{file} left behind by a process that exited normally"
    );
    guard.finish();
}

/// With the young-empty-file heuristic gone, a token file nobody holds a
/// lock on is dead whatever it contains (empty, short, garbage), and the
/// reaper removes it; a live token is never touched.
#[test]
fn unlocked_empty_or_garbage_token_files_are_dead_and_reaped() {
    let guard = ShmGuard::new("tokjunk");
    let ns = guard.ns().to_string();
    let mgr = guard.manager();
    let junk: [(u32, &[u8]); 3] = [
        (0x0000_0001, b""),
        (0x0000_0002, b"\x01\x02\x03"),
        (0x0000_0003, &[0xff; 16]),
    ];
    for (id, bytes) in junk {
        std::fs::write(shm_path(&name::token_file(&ns, id)), bytes).unwrap();
        assert!(
            token::probe(&ns, id).is_dead(),
            "{id}: {:?}",
            token::probe(&ns, id)
        );
    }
    let report = reclaim::reap(&ns, ReapOptions::default()).unwrap();
    let removed = report
        .actions
        .iter()
        .filter(|a| matches!(a, ReapAction::RemovedDeadToken { .. }))
        .count();
    assert_eq!(removed, 3, "{:?}", report.actions);
    assert_eq!(report.live_tokens, 1);
    assert_eq!(
        token::probe(&ns, mgr.token_id()),
        Liveness::Alive {
            pid: std::process::id()
        }
    );
    drop(mgr);
    guard.finish();
}
