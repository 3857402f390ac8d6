//! Consumer groups across processes: members split a topic's partitions and
//! take over those of a member killed with `kill -9`; several groups fan out
//! over one topic; competing consumers drain one partition together; the
//! member table's capacity; eviction of a stuck (alive) member.
//!
//! Children are this test binary re-executed (`common::spawn_child`); the
//! `child_process` test dispatches on their role.

mod common;
mod group_support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::{check_payload, payload, tell_parent, ShmGuard};
use group_support::{csv, parse_csv, stop_flag, stopped, wait_until, Kid};
use shmq::{
    CompetingConsumer, Consumer, ConsumerGroup, Error, GroupConsumer, GroupOptions, Overflow,
    Producer, Topic, TopicConfig, TopicManager,
};

const SLOT: usize = 64;

fn config(partitions: u32) -> TopicConfig {
    TopicConfig::default()
        .partitions(partitions)
        .slots(1024)
        .slot_size(SLOT as u64)
}

/// Whether group `group` committed everything written, on every partition.
fn caught_up(topic: &Topic, group: &str) -> bool {
    let s = topic.stats().expect("stats");
    let Some(g) = s.groups.iter().find(|g| g.name == group) else {
        return false;
    };
    g.partitions
        .iter()
        .zip(&s.partitions)
        .all(|(gp, p)| gp.committed == Some(p.write_offset) && gp.lag == 0)
}

#[test]
fn child_process() {
    let Some((role, args)) = common::child_role() else {
        return;
    };
    let mgr = TopicManager::with_namespace(&args[0]).expect("child manager");
    let topic = mgr.open(&args[1]).expect("child open");
    match role.as_str() {
        "member" => member(&topic, &args[2], args[3].parse().unwrap()),
        "fanout" => fanout(&topic, &args[2], args[3].parse().unwrap()),
        "competitor" => competitor(
            &topic,
            &args[2],
            args[3].parse().unwrap(),
            args[4].parse().unwrap(),
        ),
        r => panic!("unknown role {r}"),
    }
}

/// A group member: reports its assignment whenever it changes and every
/// record it processed (`got p:o:seq,...`, before committing), until told to
/// stop.
fn member(topic: &Topic, group: &str, stale_ms: u64) {
    let stop = stop_flag();
    let opts = GroupOptions::default().stale_after(Duration::from_millis(stale_ms));
    let mut c = GroupConsumer::join(topic, group, opts).expect("join");
    tell_parent("joined", c.group().member_index());
    let mut last: Option<Vec<u32>> = None;
    loop {
        let batch = c.poll_timeout(64, Duration::from_millis(20)).expect("poll");
        let mut now = c.assignment();
        now.sort_unstable();
        if last.as_ref() != Some(&now) {
            tell_parent("assign", csv(&now));
            last = Some(now);
        }
        assert!(batch.lagged.is_empty(), "lost records: {:?}", batch.lagged);
        assert_eq!(batch.corrupt, 0, "corrupt records");
        if !batch.records.is_empty() {
            let got = batch.records.iter().map(|r| {
                let seq = check_payload(&r.value, SLOT);
                format!("{}:{}:{}", r.partition, r.offset, seq)
            });
            tell_parent("got", csv(got));
            c.commit().expect("commit");
        }
        if stopped(&stop) {
            break;
        }
    }
    c.commit().expect("commit");
    c.leave();
    tell_parent("bye", "");
}

/// (partition, offset) -> (seq, times processed).
type Seen = BTreeMap<(u32, u64), (u64, u32)>;

/// Count a member's `got p:o:seq,...` report.
fn record_got(seen: &mut Seen, v: &str) {
    for item in v.split(',') {
        let f: Vec<u64> = item.split(':').map(|x| x.parse().unwrap()).collect();
        let e = seen.entry((f[0] as u32, f[1])).or_insert((f[2], 0));
        assert_eq!(e.0, f[2], "same offset, different record");
        e.1 += 1;
    }
}

#[test]
fn two_members_split_partitions_and_one_takes_over_after_kill9() {
    if common::child_role().is_some() {
        return;
    }
    const STALE_MS: &str = "300";
    let guard = ShmGuard::new("grpkill");
    let ns = guard.ns().to_string();
    let mgr = guard.manager();
    let topic = mgr.create("orders", config(4)).unwrap();
    let mut kids = [
        Kid::spawn("member", &[&ns, "orders", "g", STALE_MS]),
        Kid::spawn("member", &[&ns, "orders", "g", STALE_MS]),
    ];
    let mut assign: [Vec<u32>; 2] = [Vec::new(), Vec::new()];
    // (partition, offset) -> seq, per kid, with how often each was seen.
    let mut got: [Seen; 2] = [BTreeMap::new(), BTreeMap::new()];
    let pump = |kids: &[Kid; 2], assign: &mut [Vec<u32>; 2], got: &mut [Seen; 2]| {
        for (i, k) in kids.iter().enumerate() {
            for (key, v) in k.drain() {
                match key.as_str() {
                    "assign" => assign[i] = parse_csv(&v),
                    "got" => record_got(&mut got[i], &v),
                    _ => {}
                }
            }
        }
    };
    // 1. They split the 4 partitions 2 + 2.
    wait_until("a 2+2 split", || {
        pump(&kids, &mut assign, &mut got);
        assign[0].len() == 2 && assign[1].len() == 2
    });
    let mut all: Vec<u32> = assign.concat();
    all.sort_unstable();
    assert_eq!(all, vec![0, 1, 2, 3], "overlapping split {assign:?}");
    let stats = topic.stats().unwrap();
    assert_eq!(stats.groups[0].members, 2);
    assert_eq!(stats.groups[0].live_members, 2);

    // 2. Publish, let A work, kill it mid-stream.
    let mut producer = Producer::new(&topic).unwrap();
    let mut published: BTreeMap<(u32, u64), u64> = BTreeMap::new();
    let mut seq = 0u64;
    let mut publish = |n: u64, producer: &mut Producer| {
        for _ in 0..n {
            let s = producer.send(&payload(seq, SLOT)).unwrap();
            published.insert((s.partition, s.offset), seq);
            seq += 1;
        }
    };
    publish(400, &mut producer);
    wait_until("A processing", || {
        pump(&kids, &mut assign, &mut got);
        !got[0].is_empty()
    });
    kids[0].kill9();
    let killed = Instant::now();

    // 3. B owns all 4 partitions soon after (dead token: its next claim pass).
    wait_until("B owning all partitions", || {
        pump(&kids, &mut assign, &mut got);
        assign[1] == [0, 1, 2, 3]
    });
    let takeover = killed.elapsed();
    println!(
        "takeover after kill -9: {:.1} ms (stale threshold {STALE_MS} ms)",
        takeover.as_secs_f64() * 1e3
    );
    assert!(takeover < Duration::from_secs(5), "{takeover:?}");

    // 4. More records; B processes everything and commits.
    publish(400, &mut producer);
    wait_until("group caught up", || {
        pump(&kids, &mut assign, &mut got);
        caught_up(&topic, "g")
    });
    let stats = topic.stats().unwrap();
    let g = &stats.groups[0];
    assert_eq!(
        (g.members, g.live_members),
        (1, 1),
        "dead member not evicted"
    );
    for (gp, p) in g.partitions.iter().zip(&stats.partitions) {
        assert_eq!(gp.committed, Some(p.write_offset));
        assert_eq!(p.write_offset, 200);
    }
    kids[1].say("stop");
    // Reports still in flight when the group looked caught up arrive before
    // "bye": count them too (dropping them made this test flaky).
    let mut late = Vec::new();
    kids[1].wait_for("bye", |key, v| {
        if key == "got" {
            late.push(v.to_string());
        }
    });
    for v in late {
        record_got(&mut got[1], &v);
    }
    kids[1].wait_success();
    pump(&kids, &mut assign, &mut got);

    // 5. Every published record processed at least once, none lost, and the
    //    records of A's partitions before the kill were not all redone.
    let mut dups = 0;
    for (key, s) in &published {
        let seen: u32 = got.iter().filter_map(|m| m.get(key)).map(|e| e.1).sum();
        assert!(seen >= 1, "record {key:?} (seq {s}) never processed");
        for m in &got {
            if let Some(e) = m.get(key) {
                assert_eq!(e.0, *s, "record {key:?} has the wrong payload");
            }
        }
        dups += seen - 1;
    }
    let total: usize = got.iter().map(BTreeMap::len).sum();
    assert!(
        total >= published.len(),
        "processed {total} of {}",
        published.len()
    );
    println!(
        "published {}, processed by A {}, by B {}, redelivered {dups}",
        published.len(),
        got[0].len(),
        got[1].len()
    );
    drop((producer, topic));
    drop(mgr);
    assert_eq!(guard.reap_dead_tokens(), 1, "A's token");
    guard.finish();
}

/// A group of its own: consume until `n` records arrived, each exactly once
/// and intact, then commit and report.
fn fanout(topic: &Topic, group: &str, n: u64) {
    let mut c = GroupConsumer::join(topic, group, GroupOptions::default()).expect("join");
    tell_parent("joined", "");
    let mut seen = BTreeSet::new();
    let deadline = Instant::now() + common::CHILD_DEADLINE;
    while (seen.len() as u64) < n {
        assert!(Instant::now() < deadline, "only {} of {n}", seen.len());
        let batch = c.poll_timeout(64, Duration::from_millis(50)).expect("poll");
        assert!(batch.lagged.is_empty());
        for r in &batch.records {
            let s = check_payload(&r.value, SLOT);
            assert!(seen.insert(s), "seq {s} twice");
        }
        c.commit().expect("commit");
    }
    assert_eq!(seen, (0..n).collect::<BTreeSet<_>>());
    tell_parent("done", seen.len());
}

#[test]
fn three_groups_each_receive_every_message() {
    if common::child_role().is_some() {
        return;
    }
    const N: u64 = 900;
    let guard = ShmGuard::new("fanout");
    let ns = guard.ns().to_string();
    let mgr = guard.manager();
    let topic = mgr.create("events", config(3)).unwrap();
    let n = N.to_string();
    let mut kids: Vec<Kid> = ["audit", "billing", "search"]
        .iter()
        .map(|g| Kid::spawn("fanout", &[&ns, "events", g, &n]))
        .collect();
    for k in &kids {
        k.wait_for("joined", |_, _| {});
    }
    let mut producer = Producer::new(&topic).unwrap();
    for s in 0..N {
        producer.send(&payload(s, SLOT)).unwrap();
    }
    for k in &mut kids {
        let done: u64 = k.wait_for("done", |_, _| {}).parse().unwrap();
        assert_eq!(done, N);
        k.wait_success();
    }
    let stats = topic.stats().unwrap();
    let mut names: Vec<&str> = stats.groups.iter().map(|g| g.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["audit", "billing", "search"]);
    for g in &stats.groups {
        assert_eq!(g.members, 0, "{} left its member entry", g.name);
        for (gp, p) in g.partitions.iter().zip(&stats.partitions) {
            assert_eq!(gp.committed, Some(p.write_offset), "{}", g.name);
            assert_eq!(gp.lag, 0);
        }
    }
    assert_eq!(
        stats.partitions.iter().map(|p| p.write_offset).sum::<u64>(),
        N
    );
    drop((producer, topic, mgr));
    guard.finish();
}

/// `micros` value that makes a competitor hold its first batch until killed.
const HOLD: u64 = u64::MAX;

/// A competing consumer of partition 0 taking `micros` µs per record:
/// reports every batch it processed (`got seq,...`, before the next poll
/// marks it done) until the group committed `n`.
fn competitor(topic: &Topic, group: &str, n: u64, micros: u64) {
    let opts = GroupOptions::default()
        .stale_after(Duration::from_secs(5))
        .rebalance_every(Duration::from_millis(20));
    let mut c = CompetingConsumer::join(topic, group, 0, opts).expect("join");
    tell_parent("joined", "");
    let deadline = Instant::now() + common::CHILD_DEADLINE;
    loop {
        assert!(
            Instant::now() < deadline,
            "group stuck at {:?}",
            c.committed()
        );
        let batch = c.poll_timeout(8, Duration::from_millis(20)).expect("poll");
        assert!(batch.lagged.is_empty(), "{:?}", batch.lagged);
        if !batch.records.is_empty() {
            if micros == HOLD {
                // The victim: hold this batch until killed.
                tell_parent("holding", batch.records.len());
                std::thread::sleep(common::CHILD_DEADLINE);
                panic!("the victim was not killed");
            }
            std::thread::sleep(Duration::from_micros(micros * batch.records.len() as u64));
            tell_parent(
                "got",
                csv(batch.records.iter().map(|r| check_payload(&r.value, SLOT))),
            );
        }
        if batch.is_empty() && c.committed() >= Some(n) {
            break;
        }
    }
    c.commit().expect("commit");
    tell_parent("bye", c.adopted_records());
}

/// Backpressure topic `jobs` (1 partition, 64 slots) with group `workers`
/// registered, and `kids` competitors started and joined.
fn competing_setup(guard: &ShmGuard, n: u64, micros: &[&str]) -> (TopicManager, Topic, Vec<Kid>) {
    let mgr = guard.manager();
    let topic = mgr
        .create(
            "jobs",
            TopicConfig::default()
                .partitions(1)
                .slots(64)
                .slot_size(SLOT as u64)
                .overflow(Overflow::Backpressure),
        )
        .unwrap();
    // Register the group first so it holds the writer back from the start.
    drop(Consumer::new(&topic, "workers").unwrap());
    let n = n.to_string();
    let ns = guard.ns().to_string();
    let kids: Vec<Kid> = micros
        .iter()
        .map(|us| Kid::spawn("competitor", &[&ns, "jobs", "workers", &n, us]))
        .collect();
    for k in &kids {
        k.wait_for("joined", |_, _| {});
    }
    (mgr, topic, kids)
}

#[test]
fn competing_consumers_drain_one_partition_exactly_once() {
    if common::child_role().is_some() {
        return;
    }
    const N: u64 = 3000;
    let guard = ShmGuard::new("compete");
    let (mgr, topic, mut kids) = competing_setup(&guard, N, &["50", "50", "50"]);
    let start = Instant::now();
    let mut producer = Producer::new(&topic)
        .unwrap()
        .with_send_timeout(Some(Duration::from_secs(20)));
    for s in 0..N {
        producer.send(&payload(s, SLOT)).unwrap();
    }
    let mut per_kid = Vec::new();
    let mut union = Vec::new();
    for k in &mut kids {
        let mut mine = Vec::new();
        k.wait_for("bye", |key, v| {
            if key == "got" {
                mine.extend(parse_csv::<u64>(v));
            }
        });
        k.wait_success();
        per_kid.push(mine.len());
        union.extend(mine);
    }
    let elapsed = start.elapsed();
    let distinct: BTreeSet<u64> = union.iter().copied().collect();
    assert_eq!(
        union.len(),
        distinct.len(),
        "{} duplicates",
        union.len() - distinct.len()
    );
    assert_eq!(distinct, (0..N).collect::<BTreeSet<_>>(), "missing records");
    println!(
        "competing: {N} records through a 64-slot ring by 3 processes {per_kid:?} in {:.0} ms",
        elapsed.as_secs_f64() * 1e3
    );
    let stats = topic.stats().unwrap();
    let g = stats.groups.iter().find(|g| g.name == "workers").unwrap();
    assert_eq!(g.partitions[0].committed, Some(N));
    assert_eq!(g.partitions[0].lag, 0);
    drop((producer, topic, mgr));
    guard.finish();
}

#[test]
fn a_killed_competing_consumer_loses_nothing() {
    if common::child_role().is_some() {
        return;
    }
    const N: u64 = 2000;
    let guard = ShmGuard::new("competekill");
    // The victim holds its first batch until it is killed.
    let hold = HOLD.to_string();
    let (mgr, topic, mut kids) = competing_setup(&guard, N, &[&hold, "50", "50"]);
    let producer = {
        let topic = topic.clone();
        std::thread::spawn(move || {
            let mut producer = Producer::new(&topic)
                .unwrap()
                .with_send_timeout(Some(Duration::from_secs(20)));
            for s in 0..N {
                producer.send(&payload(s, SLOT)).unwrap();
            }
        })
    };
    let held: u64 = kids[0].wait_for("holding", |_, _| {}).parse().unwrap();
    kids[0].kill9();
    let mut got = Vec::new();
    let mut adopted = 0u64;
    for k in &mut kids[1..] {
        let bye = k.wait_for("bye", |key, v| {
            if key == "got" {
                got.extend(parse_csv::<u64>(v));
            }
        });
        adopted += bye.parse::<u64>().unwrap();
        k.wait_success();
    }
    producer.join().unwrap();
    let distinct: BTreeSet<u64> = got.iter().copied().collect();
    assert_eq!(distinct, (0..N).collect::<BTreeSet<_>>(), "records lost");
    println!(
        "competing with a kill -9: {N} records, {adopted} re-delivered from the victim's \
         unfinished batch, {} processed twice",
        got.len() - distinct.len()
    );
    assert_eq!(adopted, held, "the victim's batch was not adopted whole");
    let stats = topic.stats().unwrap();
    let g = stats.groups.iter().find(|g| g.name == "workers").unwrap();
    assert_eq!(g.partitions[0].committed, Some(N));
    drop((topic, mgr));
    assert_eq!(guard.reap_dead_tokens(), 1);
    guard.finish();
}

#[test]
fn member_table_full_is_a_typed_error_and_entries_are_reused() {
    if common::child_role().is_some() {
        return;
    }
    let guard = ShmGuard::new("memfull");
    let mgr = guard.manager();
    let topic = mgr.create("t", config(2)).unwrap();
    let mut members: Vec<ConsumerGroup> = (0..shmq::protocol::layout::MEMBER_CAPACITY)
        .map(|_| ConsumerGroup::join(&topic, "g", GroupOptions::default()).unwrap())
        .collect();
    match ConsumerGroup::join(&topic, "g", GroupOptions::default()) {
        Err(Error::MemberTableFull { group, capacity }) => {
            assert_eq!(group, "g");
            assert_eq!(capacity, shmq::protocol::layout::MEMBER_CAPACITY);
        }
        other => panic!("expected MemberTableFull, got {other:?}"),
    }
    let freed = members.remove(7).member_index();
    let again = ConsumerGroup::join(&topic, "g", GroupOptions::default()).unwrap();
    assert_eq!(again.member_index(), freed, "the freed entry is reused");
    assert!(matches!(
        ConsumerGroup::join(
            &topic,
            "g",
            GroupOptions::default().stale_after(Duration::ZERO)
        ),
        Err(Error::InvalidConfig(_))
    ));
    drop((members, again, topic, mgr));
    guard.finish();
}

#[test]
fn a_stuck_member_is_evicted_and_rejoins_with_a_fair_share() {
    if common::child_role().is_some() {
        return;
    }
    // Both memberships live in this process (their liveness token is held):
    // only the heartbeat tells the stuck one apart.
    let stale = Duration::from_millis(100);
    let guard = ShmGuard::new("stuck");
    let mgr = guard.manager();
    let topic = mgr.create("t", config(4)).unwrap();
    let opts = GroupOptions::default().stale_after(stale);
    let mut a = ConsumerGroup::join(&topic, "g", opts.clone()).unwrap();
    assert_eq!(a.claim().unwrap(), [0, 1, 2, 3]);
    let mut b = ConsumerGroup::join(&topic, "g", opts).unwrap();
    assert_eq!(b.stale_after(), stale);
    // A is live: b finds nothing free; A gives up its extras at its next pass.
    assert!(b.claim().unwrap().is_empty());
    assert_eq!(a.claim().unwrap(), [0, 1]);
    assert_eq!(b.claim().unwrap(), [2, 3]);
    // A commits on its partition 0, then stalls past the threshold.
    assert!(a.commit(0, 42).unwrap());
    std::thread::sleep(stale * 3);
    assert_eq!(b.claim().unwrap(), [0, 1, 2, 3], "B takes over the stuck A");
    assert!(!a.owns(0));
    assert!(!a.commit(0, 7).unwrap(), "a deposed member cannot commit");
    assert_eq!(b.committed(0), Some(42));
    // A wakes up: it finds itself evicted, joins again, and gets its share
    // once B releases its extras.
    assert!(a.claim().unwrap().is_empty());
    assert_eq!(a.rejoins(), 1);
    assert_eq!(b.claim().unwrap().len(), 2);
    assert_eq!(a.claim().unwrap().len(), 2);
    // Leaving hands partitions back at once.
    a.leave();
    assert_eq!(b.claim().unwrap(), [0, 1, 2, 3]);
    let stats = topic.stats().unwrap();
    assert_eq!(stats.groups[0].members, 1);
    drop((a, b, topic, mgr));
    guard.finish();
}
