//! Many producer processes on one topic: the topic grows a partition for
//! each producer that finds none free; consumers and group members pick new
//! partitions up at their next poll; the keyed-order contract holds per
//! producer.
//!
//! Children are this test binary re-executed (`common::spawn_child`); the
//! `child_process` test dispatches on their role.

mod common;
mod group_support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::{fnv64, line_from_parent, tell_parent, ShmGuard};
use group_support::Kid;
use shmq::{
    Consumer, GroupConsumer, GroupOptions, Overflow, Partitions, Producer, Record, Topic,
    TopicConfig, TopicManager, WaitStrategy,
};

const SLOT: usize = 64;

/// A checksummed record: producer id, sequence, a key index, FNV-1a of the
/// three, and filler of a length that depends on the sequence.
fn encode(producer: u32, seq: u64, key: u32) -> Vec<u8> {
    let mut v = Vec::with_capacity(40);
    v.extend_from_slice(&producer.to_le_bytes());
    v.extend_from_slice(&seq.to_le_bytes());
    v.extend_from_slice(&key.to_le_bytes());
    let sum = fnv64(&v);
    v.extend_from_slice(&sum.to_le_bytes());
    v.resize(v.len() + (seq % 17) as usize, b'x');
    v
}

/// `(producer, seq, key)` of a record made by [`encode`]; panics if its
/// checksum or length is wrong.
fn decode(v: &[u8]) -> (u32, u64, u32) {
    assert!(v.len() >= 24, "record of {} bytes", v.len());
    let producer = u32::from_le_bytes(v[0..4].try_into().unwrap());
    let seq = u64::from_le_bytes(v[4..12].try_into().unwrap());
    let key = u32::from_le_bytes(v[12..16].try_into().unwrap());
    let sum = u64::from_le_bytes(v[16..24].try_into().unwrap());
    assert_eq!(sum, fnv64(&v[..16]), "corrupt record {v:?}");
    assert_eq!(v.len(), 24 + (seq % 17) as usize, "record length");
    (producer, seq, key)
}

#[test]
fn child_process() {
    let Some((role, args)) = common::child_role() else {
        return;
    };
    let mgr = TopicManager::with_namespace(&args[0]).expect("child manager");
    let topic = mgr.open(&args[1]).expect("child open");
    match role.as_str() {
        "producer" => producer(&topic, args[2].parse().unwrap(), args[3].parse().unwrap()),
        "keyed" => keyed(&topic, args[2].parse().unwrap(), args[3].parse().unwrap()),
        "grower" => grower(&topic, args[2].parse().unwrap()),
        r => panic!("unknown role {r}"),
    }
}

/// Default producer: report its partitions, wait for "go" (so all the test's
/// producers hold theirs at once), then send `count` records round-robin
/// over them.
fn producer(topic: &Topic, id: u32, count: u64) {
    let mut p = Producer::new(topic).expect("producer");
    tell_parent("partitions", format!("{:?}", p.partitions()));
    assert_eq!(line_from_parent().as_deref(), Some("go"));
    for seq in 0..count {
        p.send(&encode(id, seq, 0)).expect("send");
    }
    tell_parent("done", count);
}

/// Keyed producer: wait for "go", then send `per_key` records for each of
/// 10 keys, interleaved, reporting where each key goes.
fn keyed(topic: &Topic, id: u32, per_key: u64) {
    let mut p = Producer::new(topic).expect("producer");
    let keys: Vec<String> = (0..10).map(|k| format!("key-{k}")).collect();
    let places: Vec<String> = keys
        .iter()
        .map(|k| p.partition_for_key(k.as_bytes()).to_string())
        .collect();
    tell_parent("ready", places.join(","));
    assert_eq!(line_from_parent().as_deref(), Some("go"));
    for seq in 0..per_key {
        for (k, key) in keys.iter().enumerate() {
            let sent = p
                .send_keyed(key.as_bytes(), &encode(id, seq, k as u32))
                .expect("keyed send succeeds with any number of producers");
            assert_eq!(sent.partition.to_string(), places[k]);
        }
    }
    tell_parent("done", per_key * keys.len() as u64);
    assert_eq!(line_from_parent().as_deref(), Some("exit"));
}

/// Grow the topic `rounds` times: each round holds on to a new default
/// producer (every partition is then held, so the next one grows), reports
/// the wall clock just before and just after `Producer::new`, and sends one
/// record to the new partition.
fn grower(topic: &Topic, rounds: u32) {
    let mut held = vec![Producer::new(topic).expect("first producer")];
    tell_parent("holding", format!("{:?}", held[0].partitions()));
    for round in 0..rounds {
        assert_eq!(line_from_parent().as_deref(), Some("grow"));
        let before = shmq::protocol::os::now_ns();
        let mut p = Producer::new(topic).expect("grow");
        let after = shmq::protocol::os::now_ns();
        let parts = p.partitions();
        assert_eq!(parts.len(), 1, "a grown producer writes its new partition");
        p.send(&encode(1000 + round, 0, 0)).expect("send");
        tell_parent("grew", format!("{} {before} {after}", parts[0]));
        held.push(p);
    }
    assert_eq!(line_from_parent().as_deref(), Some("exit"));
}

fn parse_list(s: &str) -> Vec<u32> {
    s.trim_matches(['[', ']'])
        .split(',')
        .filter(|x| !x.trim().is_empty())
        .map(|x| x.trim().parse().unwrap())
        .collect()
}

#[test]
fn eight_producers_grow_a_two_partition_topic_and_one_group_reads_all() {
    const PRODUCERS: u32 = 8;
    const EACH: u64 = 10_000;
    let guard = ShmGuard::new("mp8");
    let ns = guard.ns().to_string();
    {
        let mgr = guard.manager();
        let topic = mgr
            .create(
                "fanin",
                TopicConfig::default()
                    .partitions(2)
                    .slots(1024)
                    .slot_size(SLOT as u64)
                    .overflow(Overflow::Backpressure),
            )
            .unwrap();
        // The group exists (and holds the writers back) before anyone sends.
        let mut group = GroupConsumer::join(&topic, "all", GroupOptions::default()).unwrap();
        let start = Instant::now();
        let mut kids: Vec<Kid> = (0..PRODUCERS)
            .map(|id| {
                Kid::spawn(
                    "producer",
                    &[&ns, "fanin", &id.to_string(), &EACH.to_string()],
                )
            })
            .collect();
        // Every producer holds its partitions before any sends: one that
        // finished early and dropped its producer would free its partitions
        // for a late starter (seen in CI as producers 0 and 7 both owning
        // [0, 1], one after the other), which is reuse, not two writers.
        let mut owners: Vec<Vec<u32>> = Vec::new();
        for kid in &mut kids {
            owners.push(parse_list(&kid.wait_for("partitions", |_, _| {})));
        }
        for kid in &mut kids {
            kid.say("go");
        }
        // (producer, partition) -> last seq; producer -> seqs seen.
        let mut last: BTreeMap<(u32, u32), u64> = BTreeMap::new();
        let mut seen: BTreeMap<u32, BTreeSet<u64>> = BTreeMap::new();
        let mut total = 0u64;
        let deadline = Instant::now() + Duration::from_secs(120);
        while total < u64::from(PRODUCERS) * EACH {
            assert!(Instant::now() < deadline, "only {total} records arrived");
            let got = group
                .poll_timeout(512, Duration::from_millis(50))
                .expect("poll");
            assert!(got.lagged.is_empty() && got.corrupt == 0, "{got:?}");
            for r in &got.records {
                let (id, seq, _) = decode(&r.value);
                if let Some(prev) = last.insert((id, r.partition), seq) {
                    assert!(
                        seq > prev,
                        "producer {id} partition {}: {seq} after {prev}",
                        r.partition
                    );
                }
                assert!(
                    seen.entry(id).or_default().insert(seq),
                    "producer {id} seq {seq} delivered twice"
                );
                total += 1;
            }
            group.commit().unwrap();
        }
        let elapsed = start.elapsed();
        for kid in &mut kids {
            kid.wait_for("done", |_, _| {});
            kid.wait_success();
        }
        // Every producer had partitions of its own, all at the same time.
        let all: Vec<u32> = owners.iter().flatten().copied().collect();
        let distinct: BTreeSet<u32> = all.iter().copied().collect();
        assert_eq!(
            all.len(),
            distinct.len(),
            "a partition had two writers: {owners:?}"
        );
        for id in 0..PRODUCERS {
            let s = &seen[&id];
            assert_eq!(s.len() as u64, EACH, "producer {id}");
            assert_eq!(s.last().copied(), Some(EACH - 1));
        }
        assert_eq!(total, u64::from(PRODUCERS) * EACH, "exactly once");
        assert!(group.poll(10).unwrap().records.is_empty(), "nothing extra");
        let n = topic.partitions();
        assert!(n >= PRODUCERS, "topic has {n} partitions");
        let stats = topic.stats().unwrap();
        assert_eq!(stats.partitions.len() as u32, n);
        assert_eq!(
            stats.partitions.iter().map(|p| p.write_offset).sum::<u64>(),
            u64::from(PRODUCERS) * EACH
        );
        eprintln!(
            "8 producers x {EACH} records: topic grew 2 -> {n} partitions, owners {owners:?}, \
             one group read {total} exactly once in {elapsed:?}"
        );
        drop(group);
    }
    guard.finish();
}

/// Notice latencies (ns) of one reader, from just after the grower's
/// `Producer::new` returned (lower bound: the partition was published a
/// little before) and from just before it was called (upper bound).
fn report(what: &str, mut after: Vec<i64>, mut before: Vec<i64>) {
    after.sort_unstable();
    before.sort_unstable();
    let us = |v: &[i64], q: f64| v[((v.len() - 1) as f64 * q) as usize] as f64 / 1000.0;
    eprintln!(
        "{what}: new partition noticed after {:.0} us median, {:.0} us max \
         (from just before Producer::new: {:.0} us median, {:.0} us max), {} growths",
        us(&after, 0.5),
        us(&after, 1.0),
        us(&before, 0.5),
        us(&before, 1.0),
        after.len()
    );
}

#[test]
fn a_polling_group_member_and_consumer_pick_up_new_partitions_without_restart() {
    const ROUNDS: u32 = 30;
    let guard = ShmGuard::new("mpgrow");
    let ns = guard.ns().to_string();
    {
        let mgr = guard.manager();
        let topic = mgr
            .create(
                "grow",
                TopicConfig::default()
                    .partitions(2)
                    .slots(64)
                    .slot_size(SLOT as u64),
            )
            .unwrap();
        // Slow periodic rebalances, so only the growth check can explain a
        // prompt pickup.
        let opts = GroupOptions::default()
            .stale_after(Duration::from_secs(60))
            .rebalance_every(Duration::from_secs(30));
        let mut member = GroupConsumer::join(&topic, "members", opts).unwrap();
        assert_eq!(member.assignment(), vec![0, 1]);
        let mut plain = Consumer::new(&topic, "plain").unwrap();
        let mut kid = Kid::spawn("grower", &[&ns, "grow", &ROUNDS.to_string()]);
        assert_eq!(parse_list(&kid.wait_for("holding", |_, _| {})), vec![0, 1]);

        // Three readers, timed in turn: a plain consumer in a `poll` loop
        // that never waits, the group member in `poll_timeout` (Backoff:
        // spins, yields, then parks on the futex), and a plain consumer in
        // `poll_timeout` with `WaitStrategy::Park` (asleep in the kernel
        // when the partition is added). A reader is timed to the moment its
        // poll returns the new partition's first record.
        let mut parked = Consumer::new(&topic, "parked")
            .unwrap()
            .with_wait_strategy(WaitStrategy::Park);
        let names = [
            "plain consumer, poll loop",
            "group member, poll_timeout (Backoff)",
            "plain consumer, poll_timeout (Park)",
        ];
        let mut after: [Vec<i64>; 3] = Default::default();
        let mut before: [Vec<i64>; 3] = Default::default();
        for round in 0..ROUNDS {
            let p = 2 + round;
            let timed = (round % 3) as usize;
            kid.say("grow");
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut recs: [Option<Record>; 3] = [None, None, None];
            let mut at = None;
            for who in [timed, (timed + 1) % 3, (timed + 2) % 3] {
                while recs[who].is_none() {
                    assert!(
                        Instant::now() < deadline,
                        "round {round}: {} did not pick partition {p} up",
                        names[who]
                    );
                    let got = match who {
                        0 => plain.poll(16).unwrap(),
                        1 => member.poll_timeout(16, Duration::from_millis(200)).unwrap(),
                        _ => parked.poll_timeout(16, Duration::from_millis(200)).unwrap(),
                    };
                    if let Some(r) = got.records.into_iter().find(|r| r.partition == p) {
                        recs[who] = Some(r);
                        at.get_or_insert(shmq::protocol::os::now_ns());
                    }
                }
            }
            // Every reader read the new partition from offset 0, without a
            // restart.
            for r in recs.into_iter().flatten() {
                assert_eq!(r.offset, 0);
                assert_eq!(decode(&r.value), (1000 + round, 0, 0));
            }
            assert!(member.assignment().contains(&p));
            assert!(plain.assignment().contains(&p));
            let grew = kid.wait_for("grew", |_, _| {});
            let f: Vec<i64> = grew.split(' ').map(|x| x.parse().unwrap()).collect();
            assert_eq!(f[0], i64::from(p));
            let at = at.unwrap() as i64;
            after[timed].push(at - f[2]);
            before[timed].push(at - f[1]);
        }
        assert_eq!(member.assignment().len() as u32, 2 + ROUNDS);
        assert_eq!(topic.partitions(), 2 + ROUNDS);
        assert_eq!(member.group().rejoins(), 0, "no restart, no re-join");
        kid.say("exit");
        kid.wait_success();
        for (i, name) in names.iter().enumerate() {
            report(name, after[i].clone(), before[i].clone());
        }
        drop(member);
    }
    guard.finish();
}

#[test]
fn keyed_order_holds_per_producer_with_three_producers() {
    const PER_KEY: u64 = 200;
    let guard = ShmGuard::new("mpkey");
    let ns = guard.ns().to_string();
    {
        let mgr = guard.manager();
        let topic = mgr
            .create(
                "keys",
                TopicConfig::default()
                    .partitions(2)
                    .slots(8192)
                    .slot_size(SLOT as u64),
            )
            .unwrap();
        let mut consumer = Consumer::new(&topic, "check").unwrap();
        let mut kids: Vec<Kid> = (0..3)
            .map(|id| {
                Kid::spawn(
                    "keyed",
                    &[&ns, "keys", &id.to_string(), &PER_KEY.to_string()],
                )
            })
            .collect();
        // All three hold their partitions at once before sending.
        let places: Vec<Vec<u32>> = kids
            .iter()
            .map(|k| parse_list(&k.wait_for("ready", |_, _| {})))
            .collect();
        for kid in &mut kids {
            kid.say("go");
        }
        let total = 3 * 10 * PER_KEY;
        let mut got: Vec<Record> = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while (got.len() as u64) < total {
            assert!(Instant::now() < deadline, "only {} records", got.len());
            let polled = consumer
                .poll_timeout(1024, Duration::from_millis(50))
                .unwrap();
            assert!(polled.lagged.is_empty() && polled.corrupt == 0);
            got.extend(polled.records);
        }
        for kid in &mut kids {
            kid.wait_for("done", |_, _| {});
            kid.say("exit");
            kid.wait_success();
        }
        // Per (producer, key): one partition (the one the producer named),
        // and the sequence in order, complete.
        let mut next: BTreeMap<(u32, u32), u64> = BTreeMap::new();
        let mut part_of: BTreeMap<(u32, u32), u32> = BTreeMap::new();
        for r in &got {
            let (id, seq, k) = decode(&r.value);
            let key = format!("key-{k}");
            assert_eq!(r.key.as_deref(), Some(key.as_bytes()));
            assert_eq!(
                r.partition, places[id as usize][k as usize],
                "producer {id} {key}"
            );
            let p = *part_of.entry((id, k)).or_insert(r.partition);
            assert_eq!(p, r.partition, "producer {id} {key} in two partitions");
            let want = next.entry((id, k)).or_insert(0);
            assert_eq!(seq, *want, "producer {id} {key}: order");
            *want += 1;
        }
        assert!(next.values().all(|&n| n == PER_KEY), "{next:?}");
        // The producers wrote disjoint partitions (the topic grew for them).
        let mut sets: Vec<BTreeSet<u32>> =
            places.iter().map(|v| v.iter().copied().collect()).collect();
        let all: BTreeSet<u32> = sets.iter().flatten().copied().collect();
        assert_eq!(
            all.len(),
            sets.iter_mut().map(|s| s.len()).sum::<usize>(),
            "{places:?}"
        );
        assert!(topic.partitions() >= 3);
    }
    guard.finish();
}

#[test]
fn a_dead_producers_partition_is_reused_before_the_topic_grows() {
    let guard = ShmGuard::new("mpdead");
    let ns = guard.ns().to_string();
    {
        let mgr = guard.manager();
        let topic = mgr
            .create(
                "reuse",
                TopicConfig::default().partitions(1).slot_size(SLOT as u64),
            )
            .unwrap();
        let first = Producer::new(&topic).unwrap();
        // A second producer process grows the topic, then is killed.
        let mut kid = Kid::spawn("grower", &[&ns, "reuse", "0"]);
        assert_eq!(parse_list(&kid.wait_for("holding", |_, _| {})), vec![1]);
        kid.kill9();
        assert_eq!(topic.partitions(), 2);
        // The next producer takes the dead one's partition over (fencing it),
        // instead of growing the topic.
        let epoch = topic.stats().unwrap().partitions[1].writer_epoch;
        let second = Producer::new(&topic).unwrap();
        assert_eq!(second.partitions(), vec![1]);
        assert_eq!(topic.partitions(), 2, "reused, not grown");
        let p1 = &topic.stats().unwrap().partitions[1];
        assert_eq!((p1.writer_epoch, p1.takeovers), (epoch + 1, 1));
        // And a third, with both held, grows it.
        let third = Producer::with_partitions(&topic, Partitions::Auto).unwrap();
        assert_eq!(third.partitions(), vec![2]);
        drop((first, second, third));
        guard.reap_dead_tokens();
    }
    guard.finish();
}

/// Write `bytes` at `offset` of a `/dev/shm` region, as a crashed or buggy
/// process could have left them.
fn scribble(region: &str, offset: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(common::shm_path(region))
        .unwrap();
    f.write_all_at(bytes, offset).unwrap();
}

#[test]
fn a_grower_that_died_mid_growth_is_replaced() {
    let guard = ShmGuard::new("mphalf");
    let ns = guard.ns().to_string();
    {
        let mgr = guard.manager();
        let topic = mgr
            .create(
                "half",
                TopicConfig::default().partitions(1).slot_size(SLOT as u64),
            )
            .unwrap();
        let first = Producer::new(&topic).unwrap();
        // A process (token 0x0bad_cafe, long dead: no token file) claimed
        // the growth of partition 1 and died after creating its region's
        // file, before initialising it.
        let dead: u32 = 0x0bad_cafe;
        assert!(shmq::protocol::token::probe(&ns, dead).is_dead());
        let claim = shmq::protocol::growth::pack(1, dead);
        let meta = shmq::protocol::name::meta_region(&ns, "half");
        let grow_at = std::mem::offset_of!(shmq::protocol::layout::MetaHeader, grow) as u64;
        scribble(&meta, grow_at, &claim.to_le_bytes());
        let half = shmq::protocol::name::partition_region(&ns, "half", 1);
        std::fs::write(common::shm_path(&half), [0xA5u8; 100]).unwrap();
        assert_eq!(topic.partitions(), 1, "not published");

        // The next producer that needs a partition takes the dead claim
        // over, replaces the half-made region and publishes it.
        let mut second = Producer::new(&topic).unwrap();
        assert_eq!(second.partitions(), vec![1]);
        assert_eq!(topic.partitions(), 2);
        let sent = second.send(b"after the crash").unwrap();
        assert_eq!((sent.partition, sent.offset), (1, 0));
        let mut c = Consumer::new(&topic, "g").unwrap();
        let got = c.poll(10).unwrap();
        assert_eq!(got.records.len(), 1);
        assert_eq!(got.records[0].value, b"after the crash");
        // And a fresh process sees a complete topic.
        let other = TopicManager::with_namespace(&ns).unwrap();
        assert_eq!(other.open("half").unwrap().partitions(), 2);
        drop((first, second, c));
    }
    guard.finish();
}

#[test]
fn growth_stops_at_max_partitions_with_an_actionable_error() {
    let guard = ShmGuard::new("mpmax");
    {
        let mgr = guard.manager();
        let topic = mgr
            .create(
                "cap",
                TopicConfig::default()
                    .partitions(1)
                    .max_partitions(2)
                    .slot_size(SLOT as u64),
            )
            .unwrap();
        assert_eq!(topic.max_partitions(), 2);
        let a = Producer::new(&topic).unwrap();
        let b = Producer::new(&topic).unwrap();
        assert_eq!((a.partitions(), b.partitions()), (vec![0], vec![1]));
        let err = Producer::new(&topic).unwrap_err();
        assert!(
            matches!(
                err,
                shmq::Error::PartitionLimit {
                    max_partitions: 2,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("--max-partitions"), "{err}");
        assert!(matches!(
            Producer::with_partitions(&topic, Partitions::AnyFree(1)),
            Err(shmq::Error::NoFreePartitions {
                wanted: 1,
                free: 0,
                ..
            })
        ));
        // Out of range configurations are refused.
        assert!(matches!(
            mgr.create("big", TopicConfig::default().max_partitions(257)),
            Err(shmq::Error::InvalidConfig(_))
        ));
        // A freed partition is taken before the limit matters.
        drop(a);
        assert_eq!(Producer::new(&topic).unwrap().partitions(), vec![0]);
        drop(b);
    }
    guard.finish();
}

#[test]
fn a_scribbled_partition_count_never_replaces_a_live_partition() {
    let guard = ShmGuard::new("mpscrib");
    let ns = guard.ns().to_string();
    {
        let mgr = guard.manager();
        let topic = mgr
            .create(
                "s",
                TopicConfig::default().partitions(2).slot_size(SLOT as u64),
            )
            .unwrap();
        let mut first = Producer::new(&topic).unwrap();
        first.send_to(1, None, b"kept").unwrap();
        // A buggy peer writes 0 into the published count.
        let meta = shmq::protocol::name::meta_region(&ns, "s");
        let at = std::mem::offset_of!(shmq::protocol::layout::MetaHeader, partition_count) as u64;
        scribble(&meta, at, &0u32.to_le_bytes());
        // Readers still see both partitions, and a producer that needs one
        // is refused instead of re-creating partition 0 or 1 over live data.
        let other = TopicManager::with_namespace(&ns).unwrap();
        let t2 = other.open("s").unwrap();
        assert_eq!(t2.partitions(), 2);
        let err = Producer::new(&t2).unwrap_err();
        assert!(matches!(err, shmq::Error::BadRegion { .. }), "{err:?}");
        let mut c = Consumer::new(&t2, "g").unwrap();
        assert_eq!(c.poll(10).unwrap().records[0].value, b"kept");
        drop((first, c));
    }
    guard.finish();
}
