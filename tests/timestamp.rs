//! The per-topic record clock (`TopicConfig::timestamp`): `Realtime` stamps
//! exact Unix nanoseconds, `Coarse` the kernel-tick clock, `None` zero; the
//! choice is stored in the topic, so a producer of a topic opened by name
//! uses it, and `open_or_create` with another choice is a mismatch.

mod common;

use common::ShmGuard;
use shmq::{Consumer, Error, Producer, SeekPolicy, Timestamp, TopicConfig};

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// Send one record of each kind (send, send_batch, loan) on a topic created
/// with `clock` and opened again by name; return their timestamps and the
/// wall-clock window they were sent in.
fn stamps(g: &ShmGuard, name: &str, clock: Timestamp) -> (Vec<u64>, u64, u64) {
    let mgr = g.manager();
    let config = TopicConfig::default().partitions(1).slots(16).slot_size(64);
    drop(mgr.create(name, config.timestamp(clock)).unwrap());
    // A fresh handle: the clock must come from the stored topic.
    let topic = mgr.open(name).unwrap();
    assert_eq!(topic.config().timestamp, clock);
    let mut p = Producer::new(&topic).unwrap();
    let before = now_ns();
    p.send(b"one").unwrap();
    p.send_batch(&[b"two"]).unwrap();
    let mut loan = p.loan(5).unwrap();
    loan.copy_from_slice(b"three");
    loan.commit().unwrap();
    let after = now_ns();
    let mut c = Consumer::new(&topic, "g").unwrap();
    c.seek(SeekPolicy::Offset(0)).unwrap();
    let got = c.poll(10).unwrap();
    assert_eq!(got.records.len(), 3, "{got:?}");
    (
        got.records.iter().map(|r| r.timestamp_ns).collect(),
        before,
        after,
    )
}

#[test]
fn each_clock_stamps_records_as_configured() {
    // The default, chosen from measurements (see `shmq::Timestamp`).
    assert_eq!(TopicConfig::default().timestamp, Timestamp::Coarse);
    let g = ShmGuard::new("tsclock");
    let (real, before, after) = stamps(&g, "real", Timestamp::Realtime);
    for t in &real {
        assert!(
            (before..=after).contains(t),
            "realtime stamp {t} outside [{before}, {after}]"
        );
    }
    // The coarse clock lags the fine one by up to a tick (at most 10 ms
    // with HZ=100) and is never ahead of it.
    let (coarse, before, after) = stamps(&g, "coarse", Timestamp::Coarse);
    for t in &coarse {
        assert!(
            *t != 0 && *t <= after && *t + 10_000_000 >= before,
            "coarse stamp {t} not within a tick of [{before}, {after}]"
        );
    }
    let (none, _, _) = stamps(&g, "none", Timestamp::None);
    assert_eq!(none, vec![0, 0, 0]);
    g.finish();
}

#[test]
fn open_or_create_with_another_clock_is_a_mismatch() {
    let g = ShmGuard::new("tsmismatch");
    let mgr = g.manager();
    let config = TopicConfig::default().partitions(1).slots(16).slot_size(64);
    drop(
        mgr.create("t", config.clone().timestamp(Timestamp::None))
            .unwrap(),
    );
    match mgr.open_or_create("t", config.clone().timestamp(Timestamp::Coarse)) {
        Err(Error::ConfigMismatch { differences, .. }) => {
            assert_eq!(differences.len(), 1, "{differences:?}");
            assert_eq!(differences[0].field, "timestamp");
        }
        other => panic!("expected a mismatch, got {other:?}"),
    }
    let same = mgr
        .open_or_create("t", config.timestamp(Timestamp::None))
        .unwrap();
    assert_eq!(same.config().timestamp, Timestamp::None);
    drop((same, mgr));
    g.finish();
}
