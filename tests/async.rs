//! The async API (feature `tokio`) across processes, with tokio in both:
//! `Stream`s carry every record of a backpressure topic while an
//! `AsyncProducer` waits for room, a dropped `recv` future loses nothing
//! and takes its futex announcement back, and competing consumers share a
//! partition exactly once.
//!
//! Children are this test binary re-executed (`--exact child_process`); see
//! `tests/common`. Run alone: `cargo test --features tokio --test async`
//! (`cargo test --workspace` turns the feature on through shm-tools).

#![cfg(feature = "tokio")]

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::StreamExt;

mod common;

use common::{
    check_payload, child_role, line_from_parent, payload, send_line, spawn_child, tell_parent,
    wait_success, ChildLines, ShmGuard, CHILD_DEADLINE,
};
use shmq::protocol::layout::KIND_PARTITION;
use shmq::protocol::name;
use shmq::protocol::region::Region;
use shmq::{
    AsyncCompetingConsumer, AsyncConsumer, AsyncGroupConsumer, AsyncProducer, CompetingConsumer,
    Consumer, GroupConsumer, GroupOptions, Overflow, Producer, SeekPolicy, TopicConfig,
    TopicManager,
};

/// Records of the stream test (`SHMQ_ASYNC_RECORDS` overrides).
fn records() -> u64 {
    std::env::var("SHMQ_ASYNC_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

/// Slot payload bytes of the stream topic.
const SLOT: usize = 64;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

/// Checks a stream of records: payload intact, per-partition offsets
/// contiguous from 0, every sequence number exactly once.
struct Tally {
    next_offset: BTreeMap<u32, u64>,
    seen: Vec<bool>,
    count: u64,
}

impl Tally {
    fn new(n: u64) -> Tally {
        Tally {
            next_offset: BTreeMap::new(),
            seen: vec![false; n as usize],
            count: 0,
        }
    }

    fn add(&mut self, r: &shmq::Record) {
        let seq = check_payload(&r.value, SLOT);
        let want = self.next_offset.entry(r.partition).or_insert(0);
        assert_eq!(
            r.offset, *want,
            "partition {} skipped or repeated",
            r.partition
        );
        *want += 1;
        let slot = self
            .seen
            .get_mut(seq as usize)
            .unwrap_or_else(|| panic!("seq {seq} out of range"));
        assert!(!*slot, "seq {seq} delivered twice");
        *slot = true;
        self.count += 1;
    }

    fn lost(&self) -> usize {
        self.seen.iter().filter(|s| !**s).count()
    }
}

/// Read `n` records from `stream` in a `select!` loop whose short timer
/// keeps cancelling the pending `next()`, calling `commit` every 32 records.
/// Returns the tally and how often the timer won.
async fn drain<S>(stream: &mut S, n: u64, mut commit: impl FnMut(&mut S)) -> (Tally, u64)
where
    S: futures_util::Stream<Item = shmq::Result<shmq::Record>> + Unpin,
{
    let mut tally = Tally::new(n);
    let mut timeouts = 0u64;
    let mut last = Instant::now();
    while tally.count < n {
        tokio::select! {
            r = stream.next() => {
                let r = r.expect("a shmq stream never ends").unwrap();
                tally.add(&r);
                last = Instant::now();
                if tally.count % 32 == 0 {
                    commit(stream);
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(2)) => {
                timeouts += 1;
                assert!(
                    last.elapsed() < CHILD_DEADLINE,
                    "stalled after {} records",
                    tally.count
                );
            }
        }
    }
    commit(stream);
    (tally, timeouts)
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
    let rt = runtime();
    match role.as_str() {
        // `n` records through a plain consumer's Stream.
        "plain" => rt.block_on(async {
            let n: u64 = args[1].parse().unwrap();
            let mut c = AsyncConsumer::new(Consumer::new(&topic, "plain").unwrap()).unwrap();
            tell_parent("ready", "");
            let (tally, timeouts) = drain(&mut c, n, |c| c.get_mut().commit().unwrap()).await;
            tell_parent(
                "done",
                format!("{} lost {} timeouts {timeouts}", tally.count, tally.lost()),
            );
        }),
        // `n` records through a group member's Stream, in a task spawned on
        // a multi-thread runtime (the hub wakes it from another thread).
        "member" => {
            drop(rt);
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_time()
                .build()
                .unwrap();
            let n: u64 = args[1].parse().unwrap();
            let opts = GroupOptions::default().rebalance_every(Duration::from_millis(50));
            let gc = GroupConsumer::join(&topic, "member", opts).unwrap();
            let mut c = AsyncGroupConsumer::new(gc).unwrap();
            tell_parent("ready", "");
            let task = rt.spawn(async move {
                let (tally, timeouts) = drain(&mut c, n, |c| c.get_mut().commit().unwrap()).await;
                format!("{} lost {} timeouts {timeouts}", tally.count, tally.lost())
            });
            let report = rt.block_on(task).unwrap();
            tell_parent("done", report);
        }
        // Competing consumer of partition 0 until the group committed `n`;
        // reports the sequence numbers it got.
        "compete" => rt.block_on(async {
            let n: u64 = args[1].parse().unwrap();
            let opts = GroupOptions::default().rebalance_every(Duration::from_millis(20));
            let w = CompetingConsumer::join(&topic, "workers", 0, opts).unwrap();
            let mut w = AsyncCompetingConsumer::new(w).unwrap();
            tell_parent("ready", "");
            let mut got = Vec::new();
            let start = Instant::now();
            loop {
                tokio::select! {
                    r = w.recv() => {
                        got.push(check_payload(&r.unwrap().value, SLOT));
                        w.get_mut().commit().unwrap();
                    }
                    _ = tokio::time::sleep(Duration::from_millis(5)) => {
                        if topic.committed("workers", 0).unwrap().unwrap_or(0) >= n {
                            break;
                        }
                        assert!(start.elapsed() < CHILD_DEADLINE, "competing consumer stalled");
                    }
                }
            }
            let list: Vec<String> = got.iter().map(u64::to_string).collect();
            tell_parent("got", list.join(","));
        }),
        // The cancellation script (see `a_dropped_recv_future_loses_nothing`).
        "cancel" => rt.block_on(async {
            let mut c = AsyncConsumer::new(Consumer::new(&topic, "g").unwrap()).unwrap();
            c.get_mut().seek(SeekPolicy::Latest).unwrap();
            let waker = futures_util::task::noop_waker();
            let mut cx = std::task::Context::from_waker(&waker);
            // 1. A recv armed, then dropped: nothing sent yet.
            {
                let mut f = Box::pin(c.recv());
                assert!(f.as_mut().poll(&mut cx).is_pending());
                tell_parent("armed", "");
                assert_eq!(line_from_parent().unwrap(), "checked");
            }
            tell_parent("dropped", "");
            // 2. The parent sent r0 meanwhile: the next recv returns it.
            assert_eq!(line_from_parent().unwrap(), "sent r0");
            assert_eq!(c.recv().await.unwrap().value, b"r0");
            // 3. A recv armed; the record arrives (the hub fires it); the
            //    future is dropped without being polled again.
            {
                let mut f = Box::pin(c.recv());
                assert!(f.as_mut().poll(&mut cx).is_pending());
                tell_parent("armed", "");
                assert_eq!(line_from_parent().unwrap(), "sent r1");
            }
            assert_eq!(c.recv().await.unwrap().value, b"r1");
            // 4. Timeouts racing recv, many times, while records trickle in.
            tell_parent("looping", "");
            let mut expect = 2u32;
            let mut timeouts = 0u32;
            while expect < 102 {
                match tokio::time::timeout(Duration::from_micros(300), c.recv()).await {
                    Ok(r) => {
                        assert_eq!(r.unwrap().value, format!("r{expect}").as_bytes());
                        expect += 1;
                    }
                    Err(_) => timeouts += 1,
                }
            }
            tell_parent("all", format!("{expect} timeouts {timeouts}"));
        }),
        other => panic!("unknown role {other}"),
    }
}

/// The partition header of `t` in namespace `ns`, mapped by the test itself.
fn partition(ns: &str, p: u32) -> Region {
    Region::attach(&name::partition_region(ns, "t", p), KIND_PARTITION)
        .unwrap()
        .unwrap()
}

fn cleanup(guard: ShmGuard, mgr: TopicManager) {
    drop(mgr);
    guard.reap_dead_tokens();
    guard.finish();
}

#[test]
fn streams_carry_every_record_of_a_backpressure_topic_between_processes() {
    let n = records();
    let guard = ShmGuard::new("astream");
    let ns = guard.ns().to_string();
    let mgr = TopicManager::with_namespace(&ns).unwrap();
    // A small ring: the producer waits for room over and over.
    let config = TopicConfig::default()
        .partitions(2)
        .slots(64)
        .slot_size(SLOT as u64)
        .overflow(Overflow::Backpressure);
    let topic = mgr.create("t", config).unwrap();
    let count = n.to_string();
    let mut kids = Vec::new();
    for role in ["plain", "member"] {
        let mut kid = spawn_child(role, &[&ns, &count]);
        let lines = ChildLines::new(&mut kid);
        lines.expect("ready");
        kids.push((kid, lines));
    }
    let rt = runtime();
    let start = Instant::now();
    rt.block_on(async {
        let mut p = AsyncProducer::new(Producer::new(&topic).unwrap()).unwrap();
        for seq in 0..n {
            p.send(&payload(seq, SLOT)).await.unwrap();
        }
    });
    let took = start.elapsed();
    for (mut kid, lines) in kids {
        let report = lines.expect("done");
        assert!(report.starts_with(&format!("{n} lost 0 ")), "{report}");
        eprintln!("{n} records in {took:?}; consumer: {report}");
        wait_success(&mut kid);
    }
    let stats = topic.stats().unwrap();
    assert!(
        stats.partitions.iter().all(|p| p.full_events == 0),
        "a send timed out"
    );
    drop(topic);
    cleanup(guard, mgr);
}

#[test]
fn a_dropped_recv_future_loses_nothing() {
    let guard = ShmGuard::new("acancel");
    let ns = guard.ns().to_string();
    let mgr = TopicManager::with_namespace(&ns).unwrap();
    let topic = mgr
        .create(
            "t",
            TopicConfig::default()
                .partitions(1)
                .slots(256)
                .slot_size(64),
        )
        .unwrap();
    let part = partition(&ns, 0);
    let waiters = || part.partition_header().waiters.load(Ordering::SeqCst);
    let mut p = Producer::new(&topic).unwrap();
    let mut kid = spawn_child("cancel", &[&ns]);
    let lines = ChildLines::new(&mut kid);
    let mut stdin = kid.stdin.take().unwrap();

    // 1. Armed: the child announced itself; dropped: it took it back, so a
    //    send now wakes nobody and the record waits for the next recv.
    lines.expect("armed");
    assert_eq!(waiters(), 1, "an armed recv announces itself");
    send_line(&mut stdin, "checked");
    lines.expect("dropped");
    assert_eq!(waiters(), 0, "a dropped recv future left its announcement");
    let before = shmq::wake_stats();
    p.send(b"r0").unwrap();
    assert_eq!(
        shmq::wake_stats().calls,
        before.calls,
        "a send woke a dropped future"
    );
    send_line(&mut stdin, "sent r0");

    // 2. Armed, woken by the publish, dropped before it ran: r1 comes with
    //    the next recv.
    lines.expect("armed");
    assert_eq!(waiters(), 1);
    p.send(b"r1").unwrap();
    // The child's hub thread, woken through the futex, fired the slot: it
    // took the announcement back (the timer never touches `waiters`).
    let deadline = Instant::now() + CHILD_DEADLINE;
    while waiters() != 0 {
        assert!(
            Instant::now() < deadline,
            "the hub never fired the armed recv"
        );
        std::thread::sleep(Duration::from_micros(100));
    }
    send_line(&mut stdin, "sent r1");

    // 3. 100 records, each a little after the last, into a loop of short
    //    timeouts: each recv cut short must not lose one.
    lines.expect("looping");
    for i in 2..102 {
        p.send(format!("r{i}").as_bytes()).unwrap();
        std::thread::sleep(Duration::from_millis(3));
    }
    let report = lines.expect("all");
    assert!(report.starts_with("102 timeouts "), "{report}");
    wait_success(&mut kid);
    assert_eq!(waiters(), 0);
    drop((p, topic, part));
    cleanup(guard, mgr);
}

#[test]
fn competing_streams_share_a_partition_exactly_once() {
    const N: u64 = 4_000;
    let guard = ShmGuard::new("acomp");
    let ns = guard.ns().to_string();
    let mgr = TopicManager::with_namespace(&ns).unwrap();
    let config = TopicConfig::default()
        .partitions(1)
        .slots(256)
        .slot_size(SLOT as u64)
        .overflow(Overflow::Backpressure);
    let topic = mgr.create("t", config).unwrap();
    let count = N.to_string();
    let mut kids = Vec::new();
    for _ in 0..2 {
        let mut kid = spawn_child("compete", &[&ns, &count]);
        let lines = ChildLines::new(&mut kid);
        lines.expect("ready");
        kids.push((kid, lines));
    }
    runtime().block_on(async {
        let mut p = AsyncProducer::new(Producer::new(&topic).unwrap()).unwrap();
        for seq in 0..N {
            p.send(&payload(seq, SLOT)).await.unwrap();
            if seq % 500 == 0 {
                // Let the workers catch up and wait (the async wake-up path).
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    });
    let mut all = Vec::new();
    let mut per_kid = Vec::new();
    for (mut kid, lines) in kids {
        let got: Vec<u64> = lines
            .expect("got")
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().unwrap())
            .collect();
        per_kid.push(got.len());
        all.extend(got);
        wait_success(&mut kid);
    }
    all.sort_unstable();
    let n_all = all.len();
    all.dedup();
    assert_eq!(all.len(), n_all, "a record went to two workers");
    assert_eq!(all, (0..N).collect::<Vec<_>>(), "records lost");
    eprintln!("records per worker: {per_kid:?}");
    drop(topic);
    cleanup(guard, mgr);
}

#[test]
fn a_full_backpressure_topic_makes_send_wait_without_blocking_the_runtime() {
    let guard = ShmGuard::new("afull");
    let ns = guard.ns().to_string();
    let mgr = TopicManager::with_namespace(&ns).unwrap();
    let config = TopicConfig::default()
        .partitions(1)
        .slots(16)
        .slot_size(SLOT as u64)
        .overflow(Overflow::Backpressure);
    let topic = mgr.create("t", config).unwrap();
    // A live group that reads nothing and commits nothing holds the writer.
    let mut stuck = Consumer::new(&topic, "stuck").unwrap();
    let producer = Producer::new(&topic)
        .unwrap()
        .with_send_timeout(Some(Duration::from_millis(100)));
    let mut p = AsyncProducer::new(producer).unwrap();
    let rt = runtime();
    rt.block_on(async {
        for i in 0..16u64 {
            p.send(&i.to_le_bytes()).await.unwrap();
        }
        // Full: a send cut short by a timeout sent nothing.
        let cut = tokio::time::timeout(Duration::from_millis(5), p.send(b"cut")).await;
        assert!(cut.is_err(), "the ring is full, yet send returned {cut:?}");
        assert_eq!(topic.write_offset(0).unwrap(), 16);
        // A send waits until its timeout, and the runtime's one thread keeps
        // running other tasks meanwhile.
        let done = std::cell::Cell::new(false);
        let mut ticks = 0u32;
        let send = async {
            let r = p.send(b"late").await;
            done.set(true);
            r
        };
        let ticker = async {
            while !done.get() {
                tokio::time::sleep(Duration::from_millis(1)).await;
                ticks += 1;
            }
        };
        let (r, ()) = tokio::join!(send, ticker);
        assert!(matches!(r, Err(shmq::Error::Full { .. })), "{r:?}");
        assert!(ticks > 0, "the send blocked the runtime thread");
        // Room again (the group read and committed): the next send goes.
        assert_eq!(stuck.poll(16).unwrap().records.len(), 16);
        stuck.commit().unwrap();
        let sent = p.send(b"after").await.unwrap();
        assert_eq!(sent.offset, 16);
    });
    let stats = topic.stats().unwrap();
    assert_eq!(
        stats.partitions[0].full_events, 1,
        "the timed-out send is counted once"
    );
    drop((p, stuck, topic));
    cleanup(guard, mgr);
}

#[test]
fn an_async_consumer_follows_a_growing_topic() {
    let guard = ShmGuard::new("agrow");
    let ns = guard.ns().to_string();
    let mgr = TopicManager::with_namespace(&ns).unwrap();
    let config = TopicConfig::default()
        .partitions(1)
        .slots(64)
        .slot_size(SLOT as u64);
    let topic = mgr.create("t", config).unwrap();
    let first = Producer::new(&topic).unwrap(); // holds partition 0
    let mut c = AsyncConsumer::new(Consumer::reader(&topic).unwrap()).unwrap();
    let rt = runtime();
    let t2 = topic.clone();
    let grower = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        // Every partition has a live writer: this producer adds one.
        let mut p = Producer::new(&t2).unwrap();
        assert_eq!(p.partitions(), vec![1]);
        p.send(b"grown").unwrap();
        p
    });
    let r = rt
        .block_on(async { tokio::time::timeout(CHILD_DEADLINE, c.recv()).await })
        .expect("the waiting consumer never saw the new partition's record")
        .unwrap();
    assert_eq!(
        (r.partition, r.offset, r.value.as_slice()),
        (1, 0, &b"grown"[..])
    );
    let p = grower.join().unwrap();
    drop((p, first, c, topic));
    cleanup(guard, mgr);
}
