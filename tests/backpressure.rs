//! Backpressure across processes: a producer faster than its consumer
//! loses nothing (every record arrives intact, in order), `try_send`
//! reports `Full` exactly when the ring is a whole ring ahead of the group,
//! a live but idle member keeps holding the topic, and a group whose only
//! member was killed stops holding it after `dead_group_timeout`.

mod common;
mod group_support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{check_payload, payload, tell_parent, ShmGuard};
use group_support::Kid;
use shmq::{Error, GroupConsumer, GroupOptions, Overflow, Producer, TopicConfig, TopicManager};

const SLOT: usize = 128;
const SLOTS: u64 = 16;

#[test]
fn child_process() {
    let Some((role, args)) = common::child_role() else {
        return;
    };
    let mgr = TopicManager::with_namespace(&args[0]).expect("child manager");
    let topic = mgr.open(&args[1]).expect("child open");
    let mut c = GroupConsumer::join(&topic, "g", GroupOptions::default()).expect("join");
    tell_parent("joined", "");
    match role.as_str() {
        // Wait for "go", then consume `n` records slowly, checking each.
        "slow" => {
            let n: u64 = args[2].parse().unwrap();
            assert_eq!(common::line_from_parent().as_deref(), Some("go"));
            let mut next = vec![0u64; topic.partitions() as usize];
            let mut seqs = BTreeSet::new();
            let deadline = Instant::now() + common::CHILD_DEADLINE;
            while (seqs.len() as u64) < n {
                assert!(Instant::now() < deadline, "only {} of {n}", seqs.len());
                let batch = c.poll_timeout(8, Duration::from_millis(50)).expect("poll");
                assert!(batch.lagged.is_empty(), "lost records: {:?}", batch.lagged);
                for r in &batch.records {
                    let p = r.partition as usize;
                    assert_eq!(r.offset, next[p], "gap on partition {p}");
                    next[p] += 1;
                    assert!(seqs.insert(check_payload(&r.value, SLOT)), "duplicate");
                }
                // Slower than the producer: ~0.2 ms a record.
                std::thread::sleep(Duration::from_micros(200) * batch.records.len() as u32);
                c.commit().expect("commit");
            }
            assert_eq!(seqs, (0..n).collect::<BTreeSet<_>>());
            tell_parent("done", format!("{} {}", seqs.len(), c.missed()));
        }
        // Sit idle (alive, not polling) until "poll", then poll without ever
        // committing until killed.
        "idle" => {
            assert_eq!(common::line_from_parent().as_deref(), Some("poll"));
            tell_parent("polling", "");
            loop {
                c.poll_timeout(1, Duration::from_millis(20)).expect("poll");
            }
        }
        r => panic!("unknown role {r}"),
    }
}

#[test]
fn a_fast_producer_loses_nothing_and_try_send_reports_full() {
    if common::child_role().is_some() {
        return;
    }
    const N: u64 = 3000;
    let guard = ShmGuard::new("bpfast");
    let ns = guard.ns().to_string();
    let mgr = guard.manager();
    let topic = mgr
        .create(
            "bp",
            TopicConfig::default()
                .partitions(2)
                .slots(SLOTS)
                .slot_size(SLOT as u64)
                .overflow(Overflow::Backpressure),
        )
        .unwrap();
    let mut kid = Kid::spawn("slow", &[&ns, "bp", &N.to_string()]);
    kid.wait_for("joined", |_, _| {});
    // The group has committed nothing: exactly one ring per partition fits.
    let mut producer = Producer::new(&topic)
        .unwrap()
        .with_send_timeout(Some(Duration::from_secs(20)));
    let mut seq = 0u64;
    let full = loop {
        match producer.try_send(&payload(seq, SLOT)) {
            Ok(_) => seq += 1,
            Err(e) => break e,
        }
    };
    assert!(matches!(full, Error::Full { .. }), "{full:?}");
    assert_eq!(seq, 2 * SLOTS, "try_send stopped after {seq} records");
    let stats = topic.stats().unwrap();
    assert_eq!(
        stats.partitions.iter().map(|p| p.full_events).sum::<u64>(),
        1
    );
    // Now the consumer runs, slower than the producer; send waits for it.
    kid.say("go");
    let start = Instant::now();
    while seq < N {
        producer.send(&payload(seq, SLOT)).unwrap();
        seq += 1;
    }
    let sent_in = start.elapsed();
    let done = kid.wait_for("done", |_, _| {});
    kid.wait_success();
    let f: Vec<u64> = done.split(' ').map(|x| x.parse().unwrap()).collect();
    assert_eq!((f[0], f[1]), (N, 0), "received / missed");
    println!(
        "backpressure: {N} records through 2 x {SLOTS} slots to a slow consumer in {:.0} ms, none lost",
        sent_in.as_secs_f64() * 1e3
    );
    let stats = topic.stats().unwrap();
    let g = &stats.groups[0];
    for (gp, p) in g.partitions.iter().zip(&stats.partitions) {
        assert_eq!(gp.committed, Some(p.write_offset));
    }
    drop((producer, topic, mgr));
    guard.finish();
}

#[test]
fn a_dead_group_stops_blocking_after_the_timeout() {
    if common::child_role().is_some() {
        return;
    }
    let timeout = Duration::from_millis(1000);
    let guard = ShmGuard::new("bpdead");
    let ns = guard.ns().to_string();
    let mgr = guard.manager();
    let topic = mgr
        .create(
            "bp",
            TopicConfig {
                dead_group_timeout: timeout,
                ..TopicConfig::default()
                    .partitions(1)
                    .slots(8)
                    .slot_size(SLOT as u64)
                    .overflow(Overflow::Backpressure)
            },
        )
        .unwrap();
    let mut kid = Kid::spawn("idle", &[&ns, "bp"]);
    kid.wait_for("joined", |_, _| {});
    let mut producer = Producer::new(&topic).unwrap();
    for s in 0..8 {
        producer.try_send(&payload(s, SLOT)).unwrap();
    }
    // The error names the slow group, its lag, and that a live member holds.
    match producer.try_send(&payload(8, SLOT)) {
        Err(
            e @ Error::Full {
                partition: 0,
                lag: 8,
                live_member: true,
                releases_in: None,
                ..
            },
        ) => {
            assert!(matches!(&e, Error::Full { group: Some(g), .. } if g == "g"));
            let msg = e.to_string();
            assert!(msg.contains("\"g\" is 8 records behind"), "{msg}");
        }
        other => panic!("expected Full naming group g, got {other:?}"),
    }
    // The member is alive but idle for longer than the timeout: its group
    // still holds the topic (its liveness token says it is alive).
    std::thread::sleep(timeout + timeout / 2);
    assert!(matches!(
        producer.try_send(&payload(8, SLOT)),
        Err(Error::Full { .. })
    ));
    // It polls (signs of life) but never commits; then it is killed.
    kid.say("poll");
    kid.wait_for("polling", |_, _| {});
    std::thread::sleep(Duration::from_millis(100));
    kid.kill9();
    let killed = Instant::now();
    // Just dead: its last sign of life is recent, so it still holds, and the
    // error says for how long at most.
    match producer.try_send(&payload(8, SLOT)) {
        Err(
            e @ Error::Full {
                live_member: false,
                releases_in: Some(left),
                ..
            },
        ) => {
            assert!(left <= timeout, "{left:?}");
            let msg = e.to_string();
            assert!(msg.contains("no live member"), "{msg}");
            assert!(msg.contains("stops holding the writer in"), "{msg}");
        }
        other => panic!("expected Full with a dead group, got {other:?}"),
    }
    // A waiting send goes through once the timeout has passed.
    let mut producer = producer.with_send_timeout(Some(Duration::from_secs(10)));
    producer.send(&payload(8, SLOT)).unwrap();
    let released = killed.elapsed();
    println!(
        "dead group released the topic {:.0} ms after the kill (dead_group_timeout {} ms)",
        released.as_secs_f64() * 1e3,
        timeout.as_millis()
    );
    assert!(released < Duration::from_secs(10));
    // And the writer runs free from then on.
    for s in 9..40 {
        producer.try_send(&payload(s, SLOT)).unwrap();
    }
    drop((producer, topic, mgr));
    assert_eq!(guard.reap_dead_tokens(), 1);
    guard.finish();
}
