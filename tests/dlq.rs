//! Dead-letter routing: a poison record is nacked `max_retries` times by a
//! consumer process, lands in `<topic>-dlq` with its origin in the envelope,
//! and the main flow continues past it; the group's nack and dead-letter
//! counters show it.

mod common;
mod group_support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{check_payload, payload, tell_parent, ShmGuard};
use group_support::{csv, Kid};
use shmq::{
    CompetingConsumer, Consumer, DeadLetter, DlqRouter, Error, GroupConsumer, GroupOptions, Nacked,
    Producer, Record, Topic, TopicConfig, TopicManager, ENVELOPE_OVERHEAD,
};

const SLOT: usize = 64;
const POISON: &[u8] = b"poison";

fn config() -> TopicConfig {
    TopicConfig::default()
        .partitions(2)
        .slots(256)
        .slot_size(SLOT as u64 + POISON.len() as u64)
}

#[test]
fn child_process() {
    let Some((role, args)) = common::child_role() else {
        return;
    };
    assert_eq!(role, "worker");
    let mgr = TopicManager::with_namespace(&args[0]).expect("child manager");
    let topic = mgr.open(&args[1]).expect("child open");
    worker(
        &mgr,
        &topic,
        &args[2],
        args[3].parse().unwrap(),
        args[4].parse().unwrap(),
    );
}

/// Processes every record of `topic` in `group`; a record keyed `poison`
/// always fails and is nacked. Stops once `n` distinct records were handled
/// and the group committed everything; reports the delivery count per seq.
fn worker(mgr: &TopicManager, topic: &Topic, group: &str, max_retries: u32, n: usize) {
    let mut c = GroupConsumer::join(topic, group, GroupOptions::default()).expect("join");
    let mut dlq = DlqRouter::new(mgr, topic, group, max_retries).expect("router");
    let mut deliveries: BTreeMap<u64, u32> = BTreeMap::new();
    let deadline = Instant::now() + common::CHILD_DEADLINE;
    loop {
        assert!(
            Instant::now() < deadline,
            "stuck: {} handled",
            deliveries.len()
        );
        let batch = c.poll_timeout(16, Duration::from_millis(20)).expect("poll");
        let mut rewound = Vec::new();
        for r in &batch.records {
            if rewound.contains(&r.partition) {
                continue; // delivered again after the nacked record
            }
            let seq = check_payload(&r.value, SLOT);
            *deliveries.entry(seq).or_insert(0) += 1;
            if r.key.as_deref() == Some(POISON) {
                match dlq.nack(&mut c, r).expect("nack") {
                    Nacked::Redeliver { attempt } => {
                        assert_eq!(attempt, deliveries[&seq]);
                        rewound.push(r.partition);
                    }
                    Nacked::DeadLettered { retries, sent } => tell_parent(
                        "dead",
                        format!("{} {} {} {}", r.partition, r.offset, retries, sent.offset),
                    ),
                }
            } else {
                dlq.ack(r);
            }
        }
        c.commit().expect("commit");
        let caught_up = (0..topic.partitions())
            .all(|p| c.group().committed(p) == Some(topic.write_offset(p).unwrap()));
        if deliveries.len() >= n && caught_up {
            break;
        }
    }
    tell_parent(
        "deliveries",
        csv(deliveries.iter().map(|(s, k)| format!("{s}:{k}"))),
    );
}

#[test]
fn poison_message_is_retried_then_dead_lettered_and_the_flow_continues() {
    if common::child_role().is_some() {
        return;
    }
    const N: u64 = 200;
    const BAD: u64 = 77;
    const MAX_RETRIES: u32 = 3;
    let guard = ShmGuard::new("dlq");
    let ns = guard.ns().to_string();
    let mgr = guard.manager();
    let topic = mgr.create("orders", config()).unwrap();
    let mut producer = Producer::new(&topic).unwrap();
    let mut poison = None;
    for s in 0..N {
        let p = (s % 2) as u32;
        let key = (s == BAD).then_some(POISON);
        let sent = producer.send_to(p, key, &payload(s, SLOT)).unwrap();
        if s == BAD {
            poison = Some(sent);
        }
    }
    let poison = poison.unwrap();
    let mut kid = Kid::spawn(
        "worker",
        &[
            &ns,
            "orders",
            "billing",
            &MAX_RETRIES.to_string(),
            &N.to_string(),
        ],
    );
    let mut dead = None;
    let deliveries = kid.wait_for("deliveries", |k, v| {
        if k == "dead" {
            dead = Some(v.to_string());
        }
    });
    kid.wait_success();

    // The poison record was delivered MAX_RETRIES times, everything else once.
    let deliveries: BTreeMap<u64, u32> = deliveries
        .split(',')
        .map(|kv| {
            let (s, k) = kv.split_once(':').unwrap();
            (s.parse().unwrap(), k.parse().unwrap())
        })
        .collect();
    assert_eq!(deliveries.len() as u64, N);
    for (s, k) in &deliveries {
        let want = if *s == BAD { MAX_RETRIES } else { 1 };
        assert_eq!(*k, want, "seq {s} delivered {k} times");
    }
    let dead = dead.expect("the worker reported the dead letter");
    let f: Vec<u64> = dead.split(' ').map(|x| x.parse().unwrap()).collect();
    assert_eq!(
        (f[0] as u32, f[1], f[2] as u32),
        (poison.partition, poison.offset, MAX_RETRIES)
    );

    // It is in the DLQ topic, with its origin.
    let dlq = mgr.open("orders-dlq").unwrap();
    assert_eq!(dlq.config().retention, topic.config().retention);
    assert_eq!(
        dlq.config().slot_size,
        topic.config().slot_size + ENVELOPE_OVERHEAD
    );
    let mut inspect = Consumer::new(&dlq, "inspect").unwrap();
    let letters: Vec<Record> = inspect.poll(100).unwrap().records;
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = DeadLetter::from_record(&letters[0]).unwrap();
    assert_eq!(letter.topic, "orders");
    assert_eq!(letter.partition, poison.partition);
    assert_eq!(letter.offset, poison.offset);
    assert_eq!(letter.retries, MAX_RETRIES);
    assert_eq!(letter.key.as_deref(), Some(POISON));
    assert_eq!(letter.value, payload(BAD, SLOT));
    assert_eq!(f[3], letters[0].offset);

    // The main flow went on past it, and the counters say what happened.
    let stats = topic.stats().unwrap();
    let g = stats.groups.iter().find(|g| g.name == "billing").unwrap();
    for (gp, p) in g.partitions.iter().zip(&stats.partitions) {
        assert_eq!(gp.committed, Some(p.write_offset));
        assert_eq!(gp.lag, 0);
        let bad_here = gp.partition == poison.partition;
        assert_eq!(gp.nacks, if bad_here { MAX_RETRIES.into() } else { 0 });
        assert_eq!(gp.dead_lettered, u64::from(bad_here));
    }
    drop((producer, inspect, dlq, topic, mgr));
    guard.finish();
}

#[test]
fn envelopes_round_trip_and_garbage_is_rejected() {
    if common::child_role().is_some() {
        return;
    }
    let record = Record {
        partition: 3,
        offset: 1 << 40,
        timestamp_ns: 123,
        key: Some(b"k".to_vec()),
        value: b"v".to_vec(),
        headers: Default::default(),
    };
    let letter = DeadLetter::new("orders", &record, 5);
    let key = letter.encode_key();
    assert_eq!(&key[..8], b"SHMQDLQ1");
    assert_eq!(DeadLetter::decode(Some(&key), b"v").unwrap(), letter);
    let keyless = DeadLetter {
        key: None,
        ..letter.clone()
    };
    assert_eq!(
        DeadLetter::decode(Some(&keyless.encode_key()), b"v").unwrap(),
        keyless
    );
    assert!(DeadLetter::decode(None, b"v").is_err());
    assert!(DeadLetter::decode(Some(&key[..20]), b"v").is_err());
    let mut bad_magic = key.clone();
    bad_magic[0] = b'X';
    assert!(DeadLetter::decode(Some(&bad_magic), b"v").is_err());
    let mut bad_len = key.clone();
    bad_len[32] = 0xff; // topic length beyond the key
    assert!(DeadLetter::decode(Some(&bad_len), b"v").is_err());
}

#[test]
fn zero_retries_is_refused_and_a_competing_consumer_redelivers() {
    if common::child_role().is_some() {
        return;
    }
    let guard = ShmGuard::new("dlqcomp");
    let mgr = guard.manager();
    let topic = mgr.create("jobs", config().partitions(1)).unwrap();
    assert!(matches!(
        DlqRouter::new(&mgr, &topic, "w", 0),
        Err(Error::InvalidConfig(_))
    ));
    let mut producer = Producer::new(&topic).unwrap();
    for s in 0..4 {
        let key = (s == 1).then_some(POISON);
        producer.send_to(0, key, &payload(s, SLOT)).unwrap();
    }
    let mut c = CompetingConsumer::join(&topic, "w", 0, GroupOptions::default()).unwrap();
    let mut dlq = DlqRouter::new(&mgr, &topic, "w", 2).unwrap();
    let mut seen = Vec::new();
    let mut dead = 0;
    for _ in 0..10 {
        for r in c.poll(8).unwrap().records {
            seen.push(r.offset);
            if r.key.as_deref() == Some(POISON) {
                if let Nacked::DeadLettered { .. } = dlq.nack(&mut c, &r).unwrap() {
                    dead += 1;
                }
            }
        }
    }
    c.commit().unwrap();
    assert_eq!(seen, [0, 1, 2, 3, 1], "offset 1 delivered again, once");
    assert_eq!(dead, 1);
    assert_eq!(c.committed(), Some(4));
    drop((c, dlq, producer, topic, mgr));
    guard.finish();
}
