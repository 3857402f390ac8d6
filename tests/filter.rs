//! Reader-side filters: evaluated in place before any copy, rejected
//! records count as consumed (committed, and no longer holding a
//! backpressure writer back).

mod common;

use std::time::Duration;

use common::ShmGuard;
use shmq::{Consumer, Error, Headers, Overflow, Producer, RecordBuf, SeekPolicy, TopicConfig};

fn kind(i: u32) -> &'static str {
    if i % 3 == 0 {
        "payment"
    } else {
        "click"
    }
}

#[test]
fn skipped_records_are_committed() {
    let guard = ShmGuard::new("filt");
    let mgr = guard.manager();
    let config = TopicConfig::default()
        .partitions(2)
        .slots(64)
        .slot_size(128)
        .overflow(Overflow::Backpressure);
    let topic = mgr.create("t", config).unwrap();
    let mut p = Producer::new(&topic).unwrap();
    let mut c = Consumer::new(&topic, "payments").unwrap();
    for i in 0..60u32 {
        let h = Headers::new().with("type", kind(i));
        let key = format!("user-{}", i % 4);
        p.send_with(Some(key.as_bytes()), &h, &i.to_le_bytes())
            .unwrap();
    }
    let mut seen = 0;
    let got = c
        .poll_filtered(1000, |r| {
            seen += 1;
            r.headers.get("type") == Some(b"payment") && r.key != Some(b"user-0")
        })
        .unwrap();
    assert_eq!(seen, 60, "the filter saw every record");
    let want: Vec<u32> = (0..60)
        .filter(|i| kind(*i) == "payment" && i % 4 != 0)
        .collect();
    let mut values: Vec<u32> = got
        .records
        .iter()
        .map(|r| u32::from_le_bytes(r.value().try_into().unwrap()))
        .collect();
    values.sort_unstable();
    assert_eq!(values, want);
    assert_eq!(got.filtered, 60 - want.len() as u64);
    assert!(got
        .records
        .iter()
        .all(|r| r.headers().get_str("type") == Some("payment")));
    c.commit().unwrap();
    // Committed up to the end of both partitions: skipped ones included.
    for part in 0..2 {
        assert_eq!(
            topic.committed("payments", part).unwrap(),
            Some(topic.write_offset(part).unwrap()),
            "partition {part}"
        );
    }
    let mut again = Consumer::new(&topic, "payments").unwrap();
    assert!(
        again.poll(100).unwrap().is_empty(),
        "nothing left for the group"
    );

    // Backpressure: records this group skipped do not hold the writer back.
    // Fill both rings (64 slots each) with clicks; the filtering consumer
    // commits them; the writer has room again.
    let click = Headers::new().with("type", "click");
    for _ in 0..128 {
        p.send_with(None, &click, b"x").unwrap();
    }
    drop(again);
    let e = p.try_send(b"one too many").unwrap_err();
    assert!(matches!(e, Error::Full { .. }), "{e}");
    let got = c
        .poll_filtered_timeout(10, Duration::from_millis(50), |r| {
            r.headers.get("type") == Some(b"payment")
        })
        .unwrap();
    assert!(got.records.is_empty());
    assert_eq!(got.filtered, 128);
    c.commit().unwrap();
    p.try_send(b"room again").unwrap();
    p.send_with(None, &Headers::new().with("type", "payment"), b"late")
        .unwrap();
    for _ in 0..20 {
        p.send_with(None, &click, b"y").unwrap();
    }

    // poll_into_filtered copies only accepted records: a buffer left from
    // the last accepted one is untouched by rejected ones.
    let mut reader = Consumer::reader(&topic).unwrap();
    reader.seek(SeekPolicy::Earliest).unwrap();
    let mut buf = RecordBuf::default();
    let d = reader
        .poll_into_filtered(&mut buf, |r| r.headers.get("type") == Some(b"payment"))
        .unwrap()
        .expect("a payment");
    assert_eq!(buf.headers().get_str("type"), Some("payment"));
    let before = buf.clone();
    let mut rejected = 0;
    while reader
        .poll_into_filtered(&mut buf, |r| {
            rejected += 1;
            r.offset == u64::MAX
        })
        .unwrap()
        .is_some()
    {}
    assert!(rejected >= 20, "{rejected}");
    assert_eq!(buf, before, "rejected records were not copied");
    assert_eq!(buf.value(), b"late");
    assert_eq!(
        reader.position(d.partition),
        topic.write_offset(d.partition).ok()
    );
    drop((p, c, reader, topic, mgr));
    guard.finish();
}

#[test]
fn a_group_member_filters_and_commits_what_it_skipped() {
    let guard = ShmGuard::new("filtg");
    let mgr = guard.manager();
    let topic = mgr
        .create("t", TopicConfig::default().partitions(2).slots(16))
        .unwrap();
    let mut p = Producer::new(&topic).unwrap();
    for i in 0..20u32 {
        p.send_with(None, &Headers::new().with("type", kind(i)), b"v")
            .unwrap();
    }
    let mut m = shmq::GroupConsumer::join(&topic, "g", shmq::GroupOptions::default()).unwrap();
    let got = m
        .poll_filtered(100, |r| r.headers.get("type") == Some(b"click"))
        .unwrap();
    let clicks = (0..20).filter(|i| kind(*i) == "click").count();
    assert_eq!(got.records.len(), clicks);
    assert_eq!(got.filtered as usize, 20 - clicks);
    m.commit().unwrap();
    for part in 0..2 {
        assert_eq!(
            topic.committed("g", part).unwrap(),
            Some(topic.write_offset(part).unwrap())
        );
    }
    drop((p, m, topic, mgr));
    guard.finish();
}
