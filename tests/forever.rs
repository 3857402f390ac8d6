//! A huge timeout means "wait forever", never a panic.
//!
//! `Instant::now() + Duration::MAX` overflows; every blocking call of the
//! API once did that sum and panicked with "overflow when adding duration to
//! instant". Each test here passes `Duration::MAX` (or `u64::MAX` where an
//! offset is taken) to one API, while another thread makes the awaited thing
//! happen after a short delay, and checks that the call returns it. Run in
//! debug builds (`cargo test`), where integer overflow panics too.

use std::thread;
use std::time::{Duration, Instant};

mod common;

use common::ShmGuard;
use shmq::{
    CompetingConsumer, Consumer, DlqRouter, GroupConsumer, GroupOptions, Overflow, Partitions,
    Producer, RecordBuf, Topic, TopicConfig,
};

/// How long the helper thread waits before it acts.
const DELAY: Duration = Duration::from_millis(150);

fn config() -> TopicConfig {
    TopicConfig::default().partitions(1).slots(8).slot_size(64)
}

/// Send `value` to `topic` from another thread after [`DELAY`].
fn send_later(topic: &Topic, value: &'static [u8]) -> thread::JoinHandle<()> {
    let topic = topic.clone();
    thread::spawn(move || {
        thread::sleep(DELAY);
        Producer::new(&topic)
            .expect("producer")
            .send(value)
            .expect("send");
    })
}

/// Assert that a blocking call really waited for the helper thread.
fn waited(start: Instant) {
    assert!(
        start.elapsed() >= DELAY - Duration::from_millis(20),
        "returned after {:?}, before anything was sent",
        start.elapsed()
    );
}

#[test]
fn consumer_calls_accept_duration_max() {
    let guard = ShmGuard::new("maxcons");
    let mgr = guard.manager();
    let topic = mgr.create("t", config()).unwrap();
    let mut c = Consumer::new(&topic, "g").unwrap();

    let start = Instant::now();
    let h = send_later(&topic, b"one");
    let polled = c.poll_timeout(10, Duration::MAX).unwrap();
    h.join().unwrap();
    waited(start);
    assert_eq!(polled.records[0].value, b"one");

    let start = Instant::now();
    let h = send_later(&topic, b"two");
    assert_eq!(c.recv_timeout(Duration::MAX).unwrap().value, b"two");
    h.join().unwrap();
    waited(start);

    let mut buf = RecordBuf::default();
    let start = Instant::now();
    let h = send_later(&topic, b"three");
    let d = c.recv_into(&mut buf, Some(Duration::MAX)).unwrap();
    h.join().unwrap();
    waited(start);
    assert_eq!((d.offset, buf.value()), (2, &b"three"[..]));

    let start = Instant::now();
    let h = send_later(&topic, b"four");
    assert_eq!(c.recv().unwrap().value, b"four");
    h.join().unwrap();
    waited(start);

    // A timeout that fits an instant but is still absurdly long.
    let h = send_later(&topic, b"five");
    let long = Duration::from_secs(u64::MAX / 4);
    assert_eq!(c.recv_timeout(long).unwrap().value, b"five");
    h.join().unwrap();

    drop((c, topic, mgr));
    guard.finish();
}

#[test]
fn group_consumer_calls_accept_duration_max() {
    let guard = ShmGuard::new("maxgroup");
    let mgr = guard.manager();
    let topic = mgr.create("t", config()).unwrap();
    let opts = GroupOptions::default().rebalance_every(Duration::from_millis(20));
    let mut c = GroupConsumer::join(&topic, "g", opts).unwrap();

    let start = Instant::now();
    let h = send_later(&topic, b"one");
    let polled = c.poll_timeout(10, Duration::MAX).unwrap();
    h.join().unwrap();
    waited(start);
    assert_eq!(polled.records[0].value, b"one");

    let start = Instant::now();
    let h = send_later(&topic, b"two");
    assert_eq!(c.recv_timeout(Duration::MAX).unwrap().value, b"two");
    h.join().unwrap();
    waited(start);

    let start = Instant::now();
    let h = send_later(&topic, b"three");
    assert_eq!(c.recv().unwrap().value, b"three");
    h.join().unwrap();
    waited(start);

    drop((c, topic, mgr));
    guard.finish();
}

#[test]
fn competing_consumer_accepts_duration_max_and_retry_of_u64_max() {
    let guard = ShmGuard::new("maxcomp");
    let mgr = guard.manager();
    let topic = mgr.create("t", config()).unwrap();
    let opts = GroupOptions::default().rebalance_every(Duration::from_millis(20));
    let mut c = CompetingConsumer::join(&topic, "g", 0, opts).unwrap();

    let start = Instant::now();
    let h = send_later(&topic, b"one");
    let polled = c.poll_timeout(10, Duration::MAX).unwrap();
    h.join().unwrap();
    waited(start);
    assert_eq!(polled.records[0].value, b"one");

    // An offset that was never handed out (nor published) is harmless: no
    // overflow, nothing redelivered, and the group's commit still advances.
    c.retry(u64::MAX);
    c.retry(u64::MAX - 1);
    let start = Instant::now();
    let h = send_later(&topic, b"two");
    let r = c.recv().unwrap();
    h.join().unwrap();
    waited(start);
    assert_eq!((r.offset, &r.value[..]), (1, &b"two"[..]));
    c.commit().unwrap();
    assert_eq!(c.committed(), Some(2));

    // A real retry still works next to it.
    c.retry(1);
    c.retry(u64::MAX);
    let again = c.poll(10).unwrap();
    assert_eq!(again.records.len(), 1, "{again:?}");
    assert_eq!(again.records[0].offset, 1);
    c.commit().unwrap();

    drop((c, topic, mgr));
    guard.finish();
}

#[test]
fn send_timeout_of_duration_max_waits_for_room() {
    let guard = ShmGuard::new("maxsend");
    let mgr = guard.manager();
    let topic = mgr
        .create("t", config().overflow(Overflow::Backpressure))
        .unwrap();
    let mut reader = Consumer::new(&topic, "g").unwrap();
    reader.commit().unwrap();
    let mut p = Producer::new(&topic)
        .unwrap()
        .with_send_timeout(Some(Duration::MAX));
    for i in 0..8u8 {
        p.send(&[i]).unwrap();
    }
    // The ring is full: the next send waits until the group commits.
    let h = thread::spawn(move || {
        thread::sleep(DELAY);
        let got = reader.poll(100).unwrap();
        assert_eq!(got.records.len(), 8);
        reader.commit().unwrap();
        reader
    });
    let start = Instant::now();
    let sent = p.send(b"ninth").unwrap();
    let reader = h.join().unwrap();
    waited(start);
    assert_eq!(sent.offset, 8);

    // A zero-copy loan waits the same way.
    for i in 0..7u8 {
        p.send(&[i]).unwrap();
    }
    let h = thread::spawn(move || {
        let mut reader = reader;
        thread::sleep(DELAY);
        assert_eq!(reader.poll(100).unwrap().records.len(), 8);
        reader.commit().unwrap();
    });
    let start = Instant::now();
    let mut loan = p.loan(4).unwrap();
    loan.copy_from_slice(b"loan");
    assert_eq!(loan.commit().unwrap().offset, 16);
    h.join().unwrap();
    waited(start);

    drop((p, topic, mgr));
    guard.finish();
}

#[test]
fn route_timeout_of_duration_max_waits_for_a_free_dlq_partition() {
    let guard = ShmGuard::new("maxdlq");
    let mgr = guard.manager();
    let topic = mgr.create("t", config()).unwrap();
    let mut router = DlqRouter::new(&mgr, &topic, "g", 1)
        .unwrap()
        .with_route_timeout(Duration::MAX);
    let mut p = Producer::new(&topic).unwrap();
    p.send(b"poison").unwrap();
    drop(p);
    let mut c = Consumer::new(&topic, "g").unwrap();
    let record = c.recv_timeout(Duration::from_secs(5)).unwrap();

    // Another writer holds the DLQ's only partition for a while.
    let dlq = router.dlq_topic().clone();
    let holder = Producer::with_partitions(&dlq, Partitions::AnyFree(1)).unwrap();
    let h = thread::spawn(move || {
        thread::sleep(DELAY);
        drop(holder);
    });
    let start = Instant::now();
    let sent = router.route(&record, 1).unwrap();
    h.join().unwrap();
    waited(start);
    assert_eq!(sent.offset, 0);

    drop((c, router, dlq, topic, mgr));
    guard.finish();
}
