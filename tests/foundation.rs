//! Cross-process tests of the foundation: attach orders, late readers,
//! per-key order, lapping, commit/resume and writer leases.
//!
//! Every test runs the other side in a separate OS process: this test binary
//! re-executed with `--exact child_process` and a role in the environment
//! (see `common::spawn_child`). Every test uses its own namespace and asserts
//! at the end that nothing of it is left in `/dev/shm`.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use common::{
    check_payload, child_role, line_from_parent, payload, send_line, spawn_child, tell_parent,
    wait_success, ChildLines, ShmGuard, CHILD_DEADLINE,
};
use shmq::{
    key_partition, Consumer, Error, Lagged, MemOffsetStore, Partitions, Producer, Record,
    SeekPolicy, TopicConfig, TopicManager,
};

/// Payload capacity of the topics in these tests.
const SLOT: usize = 200;

fn config(partitions: u32, slots: u64) -> TopicConfig {
    TopicConfig::default()
        .partitions(partitions)
        .slots(slots)
        .slot_size(SLOT as u64)
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize) -> T
where
    T::Err: std::fmt::Debug,
{
    args[i]
        .parse()
        .unwrap_or_else(|e| panic!("child argument {i} {:?}: {e:?}", args[i]))
}

// ---------------------------------------------------------------------------
// Child side
// ---------------------------------------------------------------------------

/// Entry point of every child process; a no-op in a normal test run.
#[test]
fn child_process() {
    let Some((role, args)) = child_role() else {
        return;
    };
    match role.as_str() {
        "attach_producer" => child_attach_producer(&args),
        "keyed_producer" => child_keyed_producer(&args),
        "fast_producer" => child_fast_producer(&args),
        "commit" => child_commit(&args),
        "hold" => child_hold(&args),
        other => panic!("unknown child role {other:?}"),
    }
}

/// `ns topic partitions slots count expect_slots wait|nowait`: open or create
/// the topic, check its geometry is `expect_slots` (whoever created it),
/// send `count` payloads round-robin (pausing for the parent's "go" halfway
/// when told to wait), checking where each one lands.
fn child_attach_producer(args: &[String]) {
    let mgr = TopicManager::with_namespace(&args[0]).unwrap();
    let partitions: u32 = arg(args, 2);
    let topic = mgr
        .open_or_create(&args[1], config(partitions, arg(args, 3)))
        .unwrap();
    let count: u64 = arg(args, 4);
    let expect_slots: u64 = arg(args, 5);
    assert_eq!(
        topic.config().slots,
        expect_slots,
        "attached to another topic"
    );
    let mut producer = Producer::new(&topic).unwrap();
    let p = u64::from(partitions);
    for seq in 0..count {
        if seq == count / 2 {
            tell_parent("ready", seq);
            if args[6] == "wait" {
                assert_eq!(line_from_parent().as_deref(), Some("go"));
            }
        }
        let sent = producer.send(&payload(seq, SLOT)).unwrap();
        assert_eq!((u64::from(sent.partition), sent.offset), (seq % p, seq / p));
    }
    tell_parent("sent", count);
}

/// `ns topic keys rounds`: for each round, send one record per key with
/// `send_keyed`; the value is the round number.
fn child_keyed_producer(args: &[String]) {
    let mgr = TopicManager::with_namespace(&args[0]).unwrap();
    let topic = mgr.open(&args[1]).unwrap();
    let keys: u32 = arg(args, 2);
    let rounds: u64 = arg(args, 3);
    let mut producer = Producer::new(&topic).unwrap();
    for round in 0..rounds {
        for k in 0..keys {
            let key = format!("user-{k}");
            let sent = producer
                .send_keyed(key.as_bytes(), &round.to_le_bytes())
                .unwrap();
            assert_eq!(
                sent.partition,
                key_partition(key.as_bytes(), topic.partitions())
            );
        }
    }
    tell_parent("sent", u64::from(keys) * rounds);
}

/// `ns topic count`: send `count` payloads of varying length (up to the
/// topic's slot size) round-robin as fast as possible. The payloads are made
/// beforehand so that the writer spends its time rewriting slots, which is
/// when a racing reader could tear a record.
fn child_fast_producer(args: &[String]) {
    let mgr = TopicManager::with_namespace(&args[0]).unwrap();
    let topic = mgr.open(&args[1]).unwrap();
    let count: u64 = arg(args, 2);
    let p = u64::from(topic.partitions());
    let max = topic.config().slot_size as usize;
    let payloads: Vec<Vec<u8>> = (0..count).map(|seq| payload(seq, max)).collect();
    let mut producer = Producer::new(&topic).unwrap();
    tell_parent("ready", std::process::id());
    for (seq, value) in (0..count).zip(&payloads) {
        let sent = producer.send(value).unwrap();
        assert_eq!((u64::from(sent.partition), sent.offset), (seq % p, seq / p));
    }
    tell_parent("sent", count);
}

/// `ns topic group k0 k1`: as a member of `group`, read `k0` records of
/// partition 0 and `k1` of partition 1, committing after each, then exit.
fn child_commit(args: &[String]) {
    let mgr = TopicManager::with_namespace(&args[0]).unwrap();
    let topic = mgr.open(&args[1]).unwrap();
    let mut consumer = Consumer::new(&topic, &args[2]).unwrap();
    assert_eq!(
        (consumer.position(0), consumer.position(1)),
        (Some(0), Some(0)),
        "nothing committed yet"
    );
    for (p, k) in [(0u32, arg::<usize>(args, 3)), (1, arg(args, 4))] {
        consumer.assign(&[p]).unwrap();
        let got = consumer.poll(k).unwrap();
        assert_eq!(got.records.len(), k);
        for (i, r) in got.records.iter().enumerate() {
            assert_eq!((r.partition, r.offset), (p, i as u64));
            assert_eq!(check_payload(&r.value, SLOT), r.offset * 2 + u64::from(p));
        }
        consumer.commit().unwrap();
        assert_eq!(consumer.position(p), Some(k as u64));
    }
    tell_parent("committed", "");
}

/// `ns topic partition count`: hold the writer lease of one partition, send
/// `count` payloads to it, report the pid, then wait (to be killed).
fn child_hold(args: &[String]) {
    let mgr = TopicManager::with_namespace(&args[0]).unwrap();
    let topic = mgr.open(&args[1]).unwrap();
    let partition: u32 = arg(args, 2);
    let count: u64 = arg(args, 3);
    let mut producer =
        Producer::with_partitions(&topic, Partitions::Only(vec![partition])).unwrap();
    for seq in 0..count {
        let sent = producer.send(&payload(seq, SLOT)).unwrap();
        assert_eq!((sent.partition, sent.offset), (partition, seq));
    }
    tell_parent("ready", std::process::id());
    // Blocks until the parent kills us; EOF means the parent itself died.
    let line = line_from_parent();
    panic!("holder was not killed (parent said {line:?})");
}

// ---------------------------------------------------------------------------
// Parent-side helpers
// ---------------------------------------------------------------------------

/// Everything a consumer returned over several polls.
#[derive(Default)]
struct Collected {
    records: Vec<Record>,
    lagged: Vec<Lagged>,
    corrupt: u64,
}

/// Poll until `want` records arrived (bounded by [`CHILD_DEADLINE`]).
fn collect(consumer: &mut Consumer, want: usize) -> Collected {
    let deadline = Instant::now() + CHILD_DEADLINE;
    let mut out = Collected::default();
    while out.records.len() < want {
        assert!(
            Instant::now() < deadline,
            "only {} of {want} records arrived",
            out.records.len()
        );
        let got = consumer
            .poll_timeout(256, Duration::from_millis(50))
            .unwrap();
        out.records.extend(got.records);
        out.lagged.extend(got.lagged);
        out.corrupt += got.corrupt;
    }
    out
}

/// Check records produced by `child_attach_producer` / `child_fast_producer`
/// into `partitions` partitions: content intact, at the offset round-robin
/// gives it, in offset order per partition. Returns the sequence numbers.
fn check_round_robin(records: &[Record], partitions: u32, max: usize) -> Vec<u64> {
    let p = u64::from(partitions);
    let mut last: HashMap<u32, u64> = HashMap::new();
    records
        .iter()
        .map(|r| {
            let seq = check_payload(&r.value, max);
            assert_eq!((u64::from(r.partition), r.offset), (seq % p, seq / p));
            if let Some(prev) = last.insert(r.partition, r.offset) {
                assert!(prev < r.offset, "partition {} out of order", r.partition);
            }
            assert!(r.key.is_none());
            seq
        })
        .collect()
}

fn assert_exactly(mut seqs: Vec<u64>, expected: impl Iterator<Item = u64>) {
    seqs.sort_unstable();
    let expected: Vec<u64> = expected.collect();
    assert_eq!(seqs.len(), expected.len(), "record count");
    assert!(seqs == expected, "missing or duplicated sequence numbers");
}

// ---------------------------------------------------------------------------
// Attach orders and late readers
// ---------------------------------------------------------------------------

#[test]
fn producer_first_then_consumer_attaches() {
    let guard = ShmGuard::new("pfirst");
    let ns = guard.ns().to_string();
    // The child producer creates the topic (256 slots) and publishes half.
    let mut child = spawn_child(
        "attach_producer",
        &[&ns, "events", "2", "256", "400", "256", "wait"],
    );
    let lines = ChildLines::new(&mut child);
    assert_eq!(lines.expect("ready"), "200");
    {
        let mgr = guard.manager();
        // Other geometry is refused, not silently replaced or ignored.
        match mgr.open_or_create("events", config(2, 1024)) {
            Err(shmq::Error::ConfigMismatch { differences, .. }) => {
                assert_eq!(differences.len(), 1);
                assert_eq!(differences[0].field, "slots");
            }
            other => panic!("expected ConfigMismatch, got {other:?}"),
        }
        // The same configuration attaches (the write offset proves it).
        let topic = mgr.open_or_create("events", config(2, 256)).unwrap();
        assert_eq!(topic.config().slots, 256);
        assert_eq!(topic.write_offset(0).unwrap(), 100);
        let mut consumer = Consumer::new(&topic, "g").unwrap();
        send_line(child.stdin.as_mut().unwrap(), "go");
        let got = collect(&mut consumer, 400);
        assert_eq!(lines.expect("sent"), "400");
        wait_success(&mut child);
        assert!(got.lagged.is_empty() && got.corrupt == 0);
        assert_exactly(check_round_robin(&got.records, 2, SLOT), 0..400);
        assert!(consumer.poll(10).unwrap().is_empty(), "nothing extra");
    }
    guard.finish();
}

#[test]
fn consumer_first_then_producer_attaches() {
    let guard = ShmGuard::new("cfirst");
    let ns = guard.ns().to_string();
    {
        let mgr = guard.manager();
        assert!(mgr.list().unwrap().is_empty());
        let topic = mgr.open_or_create("events", config(2, 256)).unwrap();
        assert_eq!(mgr.list().unwrap(), vec!["events".to_string()]);
        let mut consumer = Consumer::new(&topic, "g").unwrap();
        assert!(consumer.poll(10).unwrap().is_empty());
        // The child asks for the same configuration and attaches to ours.
        let mut child = spawn_child(
            "attach_producer",
            &[&ns, "events", "2", "256", "400", "256", "nowait"],
        );
        let lines = ChildLines::new(&mut child);
        let got = collect(&mut consumer, 400);
        assert_eq!(lines.expect("ready"), "200");
        assert_eq!(lines.expect("sent"), "400");
        wait_success(&mut child);
        assert!(got.lagged.is_empty() && got.corrupt == 0);
        assert_exactly(check_round_robin(&got.records, 2, SLOT), 0..400);
    }
    guard.finish();
}

#[test]
fn late_consumer_with_earliest_reads_everything_retained() {
    let guard = ShmGuard::new("late");
    let ns = guard.ns().to_string();
    // 400 records into 2 partitions of 64 slots: 200 per partition were
    // published, the last 64 of each are retained.
    let mut child = spawn_child(
        "attach_producer",
        &[&ns, "events", "2", "64", "400", "64", "nowait"],
    );
    let lines = ChildLines::new(&mut child);
    assert_eq!(lines.expect("ready"), "200");
    assert_eq!(lines.expect("sent"), "400");
    wait_success(&mut child);
    {
        let mgr = guard.manager();
        let topic = mgr.open("events").unwrap();
        let mut consumer = Consumer::new(&topic, "late").unwrap();
        consumer.seek(SeekPolicy::Earliest).unwrap();
        assert_eq!(consumer.position(0), Some(136));
        assert_eq!(consumer.position(1), Some(136));
        let got = consumer.poll(1000).unwrap();
        assert!(got.lagged.is_empty() && got.corrupt == 0);
        // Exactly the retained window: seq 272..400.
        assert_exactly(check_round_robin(&got.records, 2, SLOT), 272..400);

        // From offset 0 the same consumer is told exactly what it lost.
        consumer.seek(SeekPolicy::Offset(0)).unwrap();
        let got = consumer.poll(1000).unwrap();
        assert_eq!(got.records.len(), 128);
        let mut lagged = got.lagged.clone();
        lagged.sort_by_key(|l| l.partition);
        let lost: Vec<(u32, u64, u64)> = lagged
            .iter()
            .map(|l| (l.partition, l.missed, l.resumed_at))
            .collect();
        assert_eq!(lost, vec![(0, 136, 136), (1, 136, 136)]);

        // Latest: nothing to read.
        consumer.seek(SeekPolicy::Latest).unwrap();
        assert!(consumer.poll(1000).unwrap().is_empty());
    }
    guard.finish();
}

// ---------------------------------------------------------------------------
// Per-key order
// ---------------------------------------------------------------------------

#[test]
fn keyed_sends_keep_per_key_order_across_four_partitions() {
    const KEYS: u32 = 16;
    const ROUNDS: u64 = 150;
    let guard = ShmGuard::new("keyed");
    let ns = guard.ns().to_string();
    let used: BTreeSet<u32> = (0..KEYS)
        .map(|k| key_partition(format!("user-{k}").as_bytes(), 4))
        .collect();
    assert!(
        used.len() >= 3,
        "keys should spread over partitions: {used:?}"
    );
    {
        let mgr = guard.manager();
        // Big enough that nothing is overwritten even if every key hashed to
        // one partition.
        let topic = mgr.create("keyed", config(4, 4096)).unwrap();
        let mut consumer = Consumer::new(&topic, "g").unwrap();
        let mut child = spawn_child(
            "keyed_producer",
            &[&ns, "keyed", &KEYS.to_string(), &ROUNDS.to_string()],
        );
        let lines = ChildLines::new(&mut child);
        let total = (u64::from(KEYS) * ROUNDS) as usize;
        let got = collect(&mut consumer, total);
        assert_eq!(lines.expect("sent"), total.to_string());
        wait_success(&mut child);
        assert!(got.lagged.is_empty() && got.corrupt == 0);
        assert_eq!(got.records.len(), total);

        let mut next_round: HashMap<Vec<u8>, u64> = HashMap::new();
        let mut next_offset = [0u64; 4];
        for r in &got.records {
            let key = r.key.clone().expect("keyed record has its key");
            assert_eq!(r.partition, key_partition(&key, 4), "key moved partition");
            assert_eq!(r.offset, next_offset[r.partition as usize]);
            next_offset[r.partition as usize] += 1;
            let round = u64::from_le_bytes(r.value.as_slice().try_into().expect("8-byte value"));
            let expected = next_round.entry(key.clone()).or_insert(0);
            assert_eq!(
                round,
                *expected,
                "key {} out of order",
                String::from_utf8_lossy(&key)
            );
            *expected += 1;
        }
        assert_eq!(next_round.len(), KEYS as usize);
        assert!(next_round.values().all(|&n| n == ROUNDS));
        for p in 0..4 {
            assert_eq!(topic.write_offset(p).unwrap(), next_offset[p as usize]);
        }
    }
    guard.finish();
}

// ---------------------------------------------------------------------------
// Lapping
// ---------------------------------------------------------------------------

#[test]
fn slow_reader_lapped_by_fast_producer_gets_exact_missed_counts() {
    const PARTITIONS: u32 = 2;
    const COUNT: u64 = 60_000;
    const LAP_SLOT: usize = 1000;
    let guard = ShmGuard::new("lapped");
    let ns = guard.ns().to_string();
    {
        let mgr = guard.manager();
        let topic = mgr
            .create("fast", config(PARTITIONS, 16).slot_size(LAP_SLOT as u64))
            .unwrap();
        let mut consumer = Consumer::new(&topic, "slow").unwrap();
        let mut child = spawn_child("fast_producer", &[&ns, "fast", &COUNT.to_string()]);
        let lines = ChildLines::new(&mut child);
        lines.expect("ready");

        // Per partition: the next offset we expect, records read, offsets
        // missed. Within one poll, records and lag events of a partition are
        // each in order, and a lag event starts exactly where reading stopped.
        let mut expected = [0u64; PARTITIONS as usize];
        let mut read = [0u64; PARTITIONS as usize];
        let mut missed = [0u64; PARTITIONS as usize];
        let mut polls = 0u64;
        let deadline = Instant::now() + CHILD_DEADLINE;
        let mut producer_done = false;
        loop {
            assert!(Instant::now() < deadline, "producer never finished");
            let done_before_poll = producer_done;
            let got = consumer.poll(5).unwrap();
            polls += 1;
            assert_eq!(got.corrupt, 0, "corrupt record");
            let seqs = check_round_robin(&got.records, PARTITIONS, LAP_SLOT);
            assert_eq!(seqs.len(), got.records.len());
            for p in 0..PARTITIONS {
                let e = &mut expected[p as usize];
                let mut recs = got.records.iter().filter(|r| r.partition == p).peekable();
                let mut lags = got.lagged.iter().filter(|l| l.partition == p).peekable();
                loop {
                    if let Some(l) = lags.next_if(|l| l.resumed_at - l.missed == *e) {
                        assert!(l.missed > 0);
                        missed[p as usize] += l.missed;
                        *e = l.resumed_at;
                    } else if let Some(r) = recs.next() {
                        assert_eq!(r.offset, *e, "partition {p}: unreported gap");
                        read[p as usize] += 1;
                        *e += 1;
                    } else {
                        assert!(
                            lags.peek().is_none(),
                            "partition {p}: lag event out of place"
                        );
                        break;
                    }
                }
            }
            if done_before_poll && got.is_empty() {
                break;
            }
            // Be slow: a short pause every few polls, so the writer laps us
            // while we also race it inside slots it is rewriting.
            if polls % 8 == 0 {
                std::thread::sleep(Duration::from_micros(200));
            }
            if !producer_done && child.try_wait().unwrap().is_some() {
                producer_done = true;
            }
        }
        assert_eq!(lines.expect("sent"), COUNT.to_string());
        wait_success(&mut child);

        let mut total_read = 0;
        let mut total_missed = 0;
        for p in 0..PARTITIONS {
            let published = topic.write_offset(p).unwrap();
            assert_eq!(published, COUNT / u64::from(PARTITIONS));
            assert_eq!(expected[p as usize], published);
            assert_eq!(
                read[p as usize] + missed[p as usize],
                published,
                "partition {p}: read + missed != published"
            );
            total_read += read[p as usize];
            total_missed += missed[p as usize];
        }
        assert_eq!(consumer.missed(), total_missed);
        assert_eq!(consumer.corrupt(), 0);
        // The test means something only if the reader was lapped; the final
        // drain alone reads the 16 retained records of each partition.
        assert!(total_missed > 0, "reader was never lapped");
        assert!(total_read >= 32, "reader read only {total_read} records");
        eprintln!("lapped test: {polls} polls, read {total_read}, missed {total_missed}");
    }
    guard.finish();
}

// ---------------------------------------------------------------------------
// Commit and resume
// ---------------------------------------------------------------------------

#[test]
fn commit_in_one_process_resumes_in_another() {
    let guard = ShmGuard::new("commit");
    let ns = guard.ns().to_string();
    {
        let mgr = guard.manager();
        let topic = mgr.create("orders", config(2, 64)).unwrap();
        let mut producer = Producer::new(&topic).unwrap();
        for seq in 0..80 {
            producer.send(&payload(seq, SLOT)).unwrap();
        }
        let mut child = spawn_child("commit", &[&ns, "orders", "billing", "17", "23"]);
        let lines = ChildLines::new(&mut child);
        lines.expect("committed");
        wait_success(&mut child);

        let mut consumer = Consumer::new(&topic, "billing").unwrap();
        assert_eq!(consumer.position(0), Some(17));
        assert_eq!(consumer.position(1), Some(23));
        let got = consumer.poll(1000).unwrap();
        assert!(got.lagged.is_empty() && got.corrupt == 0);
        check_round_robin(&got.records, 2, SLOT);
        let first = |p: u32| {
            got.records
                .iter()
                .find(|r| r.partition == p)
                .map(|r| r.offset)
        };
        assert_eq!((first(0), first(1)), (Some(17), Some(23)));
        assert_eq!(got.records.len(), (40 - 17) + (40 - 23));

        let stats = topic.stats().unwrap();
        let billing = stats.groups.iter().find(|g| g.name == "billing").unwrap();
        let committed: Vec<Option<u64>> = billing.partitions.iter().map(|p| p.committed).collect();
        assert_eq!(committed, vec![Some(17), Some(23)]);

        // Commits belong to the group, and to the shared store only.
        let other = Consumer::new(&topic, "audit").unwrap();
        assert_eq!((other.position(0), other.position(1)), (Some(0), Some(0)));
        let private =
            Consumer::with_store(&topic, "billing", Box::new(MemOffsetStore::new())).unwrap();
        assert_eq!(
            (private.position(0), private.position(1)),
            (Some(0), Some(0))
        );
    }
    guard.finish();
}

// ---------------------------------------------------------------------------
// Writer leases
// ---------------------------------------------------------------------------

#[test]
fn second_producer_on_held_partition_is_refused_until_holder_dies() {
    let guard = ShmGuard::new("held");
    let ns = guard.ns().to_string();
    {
        let mgr = guard.manager();
        let topic = mgr.create("jobs", config(2, 64)).unwrap();
        let mut child = spawn_child("hold", &[&ns, "jobs", "0", "10"]);
        let lines = ChildLines::new(&mut child);
        let pid: u32 = lines.expect_parsed("ready");
        assert_eq!(pid, child.id());

        let held_epoch = match Producer::with_partitions(&topic, Partitions::Only(vec![0])) {
            Err(e @ Error::PartitionHeld { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains(&format!("pid {pid}")), "{msg}");
                let Error::PartitionHeld {
                    topic: t,
                    partition,
                    pid: holder,
                    owner,
                    epoch,
                } = e
                else {
                    unreachable!()
                };
                assert_eq!((t.as_str(), partition, holder), ("jobs", 0, pid));
                assert_ne!(owner, mgr.token_id());
                epoch
            }
            other => panic!("expected PartitionHeld, got {other:?}"),
        };
        assert!(matches!(
            Producer::with_partitions(&topic, Partitions::All),
            Err(Error::PartitionHeld { partition: 0, pid: p, .. }) if p == pid
        ));
        // The default takes every free partition...
        let free = Producer::new(&topic).unwrap();
        assert_eq!(free.partitions(), vec![1]);
        drop(free);
        let free = Producer::with_partitions(&topic, Partitions::AnyFree(1)).unwrap();
        assert_eq!(free.partitions(), vec![1]);
        drop(free);
        // ...and "any 2" grows the topic by the one partition missing.
        let two = Producer::with_partitions(&topic, Partitions::AnyFree(2)).unwrap();
        assert_eq!(two.partitions(), vec![1, 2]);
        assert_eq!(topic.partitions(), 3);
        drop(two);
        let w = topic.stats().unwrap().partitions[0].writer.unwrap();
        assert!(w.alive);
        assert_eq!((w.pid, w.epoch), (Some(pid), held_epoch));

        // kill -9 the holder: the kernel drops its token lock.
        child.kill().unwrap();
        let status = child.wait().unwrap();
        assert!(!status.success());
        let w = topic.stats().unwrap().partitions[0].writer.unwrap();
        assert!(!w.alive, "killed holder still looks alive");

        let mut producer = Producer::with_partitions(&topic, Partitions::Only(vec![0])).unwrap();
        let stats = topic.stats().unwrap();
        let p0 = &stats.partitions[0];
        let w = p0.writer.unwrap();
        assert!(w.epoch > held_epoch, "epoch must grow on takeover");
        assert_eq!((w.token, w.alive), (mgr.token_id(), true));
        assert_eq!(p0.takeovers, 1);
        let sent = producer.send_to(0, None, &payload(10, SLOT)).unwrap();
        assert_eq!((sent.partition, sent.offset), (0, 10));

        let mut consumer = Consumer::new(&topic, "g").unwrap();
        consumer.assign(&[0]).unwrap();
        let got = consumer.poll(100).unwrap();
        assert!(got.lagged.is_empty() && got.corrupt == 0);
        let seqs: Vec<(u64, u64)> = got
            .records
            .iter()
            .map(|r| (r.offset, check_payload(&r.value, SLOT)))
            .collect();
        assert_eq!(seqs, (0..=10).map(|o| (o, o)).collect::<Vec<_>>());
    }
    // The killed child could not remove its token file; the supervisor would.
    assert_eq!(guard.reap_dead_tokens(), 1);
    guard.finish();
}
