//! Zero-copy paths: `Consumer::poll_with` (in-place read, lap detection) and
//! `Producer::loan` / `Loan::commit` (in-place write, abandon on drop).
//! Cross-process use of both is exercised by `shmq bench` and the criterion
//! benches; these tests pin down the protocol edge cases deterministically.

mod common;

use common::ShmGuard;
use shmq::{Consumer, Error, Overflow, Producer, RecordBuf, SeekPolicy, TopicConfig, TopicManager};

const SLOTS: u64 = 8;

struct Fx {
    // Field order matters: the manager (and its token file) drops before
    // the guard cleans the namespace.
    mgr: Option<TopicManager>,
    guard: ShmGuard,
}

impl Fx {
    fn new(tag: &str) -> Fx {
        let guard = ShmGuard::new(&format!("z{tag}"));
        Fx {
            mgr: Some(guard.manager()),
            guard,
        }
    }
    fn topic(&self, partitions: u32, overflow: Overflow) -> shmq::Topic {
        let config = TopicConfig::default()
            .partitions(partitions)
            .slots(SLOTS)
            .slot_size(128)
            .overflow(overflow);
        self.mgr.as_ref().unwrap().create("t", config).unwrap()
    }
    fn finish(mut self) {
        let mgr = self.mgr.take().unwrap();
        assert!(mgr.delete("t").unwrap());
        drop(mgr);
        self.guard.finish();
    }
}

#[test]
fn poll_with_sees_the_record_in_place_with_its_key() {
    let fx = Fx::new("view");
    let topic = fx.topic(1, Overflow::Overwrite);
    let mut p = Producer::new(&topic).unwrap();
    let mut c = Consumer::new(&topic, "g").unwrap();
    assert!(c.poll_with(|_| ()).unwrap().is_none());
    p.send_keyed(b"k1", b"value-1").unwrap();
    p.send(b"value-2").unwrap();
    let v = c
        .poll_with(|r| {
            (
                r.offset,
                r.key.map(<[u8]>::to_vec),
                r.value.to_vec(),
                r.timestamp_ns,
            )
        })
        .unwrap()
        .unwrap();
    assert!(!v.lapped);
    assert_eq!(v.delivered.offset, 0);
    assert_eq!(v.output.0, 0);
    assert_eq!(v.output.1.as_deref(), Some(&b"k1"[..]));
    assert_eq!(v.output.2, b"value-1");
    assert!(v.output.3 > 0);
    let v = c
        .poll_with(|r| (r.key.is_none(), r.value.to_vec()))
        .unwrap()
        .unwrap();
    assert_eq!(v.output, (true, b"value-2".to_vec()));
    assert_eq!(v.delivered.offset, 1);
    assert!(c.poll_with(|_| ()).unwrap().is_none());
    assert_eq!(c.missed(), 0);
    drop((p, c, topic));
    fx.finish();
}

#[test]
fn poll_with_reports_a_lap_during_the_borrow() {
    let fx = Fx::new("lap");
    let topic = fx.topic(1, Overflow::Overwrite);
    let mut p = Producer::new(&topic).unwrap();
    let mut c = Consumer::new(&topic, "g").unwrap();
    p.send(b"first").unwrap();
    // While the closure looks at offset 0, the writer laps the whole ring.
    let v = c
        .poll_with(|r| {
            let before = r.value.to_vec();
            for i in 0..SLOTS {
                p.send(format!("over{i}").as_bytes()).unwrap();
            }
            (before, r.value.to_vec())
        })
        .unwrap()
        .unwrap();
    assert!(v.lapped, "an overwrite during the borrow went unnoticed");
    assert_eq!(v.delivered.offset, 0);
    assert_eq!(v.output.0, b"first");
    assert_ne!(v.output.1, b"first", "the slot really was overwritten");
    assert_eq!(c.missed(), 1);
    // The reader continues with what is still intact: offsets 1..=8 (slot of
    // offset 0 now holds offset 8).
    let mut seen = Vec::new();
    while let Some(v) = c.poll_with(|r| r.value.to_vec()).unwrap() {
        assert!(!v.lapped);
        seen.push((v.delivered.offset, v.output));
    }
    let want: Vec<(u64, Vec<u8>)> = (0..SLOTS)
        .map(|i| (i + 1, format!("over{i}").into_bytes()))
        .collect();
    assert_eq!(seen, want);
    drop((p, c, topic));
    fx.finish();
}

#[test]
fn poll_with_counts_records_lapped_before_the_read() {
    let fx = Fx::new("lag");
    let topic = fx.topic(1, Overflow::Overwrite);
    let mut p = Producer::new(&topic).unwrap();
    let mut c = Consumer::new(&topic, "g").unwrap();
    c.seek(SeekPolicy::Offset(0)).unwrap();
    for i in 0..SLOTS + 3 {
        p.send(&i.to_le_bytes()).unwrap();
    }
    let v = c.poll_with(|r| r.offset).unwrap().unwrap();
    assert_eq!(v.output, 3, "resumes at the oldest intact offset");
    assert_eq!(c.missed(), 3);
    drop((p, c, topic));
    fx.finish();
}

#[test]
fn a_committed_loan_is_read_like_a_sent_record() {
    let fx = Fx::new("loan");
    let topic = fx.topic(2, Overflow::Overwrite);
    let mut p = Producer::new(&topic).unwrap();
    let mut c = Consumer::new(&topic, "g").unwrap();
    let mut loan = p.loan_to(1, 100).unwrap();
    assert_eq!((loan.partition(), loan.offset(), loan.len()), (1, 0, 100));
    loan.copy_from_slice(&[0xAB; 100]);
    loan[..5].copy_from_slice(b"hello");
    loan.truncate(5);
    assert_eq!(&loan[..], b"hello");
    // Nothing is visible before the commit.
    let mut buf = RecordBuf::default();
    assert!(c.poll_into(&mut buf).unwrap().is_none());
    let sent = loan.commit().unwrap();
    assert_eq!((sent.partition, sent.offset), (1, 0));
    let d = c.poll_into(&mut buf).unwrap().unwrap();
    assert_eq!((d.partition, d.offset), (1, 0));
    assert_eq!(buf.value(), b"hello");
    assert_eq!(buf.key(), None);
    // Round-robin loans spread like sends.
    let a = p.loan(1).unwrap().commit().unwrap();
    let b = p.loan(1).unwrap().commit().unwrap();
    assert_ne!(a.partition, b.partition);
    drop((p, c, topic));
    fx.finish();
}

#[test]
fn a_dropped_loan_publishes_nothing_and_destroys_no_intact_record() {
    let fx = Fx::new("drop");
    let topic = fx.topic(1, Overflow::Overwrite);
    let mut p = Producer::new(&topic).unwrap();
    let mut c = Consumer::new(&topic, "g").unwrap();
    c.seek(SeekPolicy::Offset(0)).unwrap();
    for i in 0..SLOTS {
        p.send(&[i as u8; 16]).unwrap();
    }
    // Loan offset SLOTS (the slot of offset 0), scribble, drop.
    {
        let mut loan = p.loan(16).unwrap();
        assert_eq!(loan.offset(), SLOTS);
        loan.fill(0xEE);
    }
    // Offset 0's bytes were scribbled: the reader is told it lost it rather
    // than being handed the torn body. Offsets 1.. are intact.
    let mut buf = RecordBuf::default();
    let mut got = Vec::new();
    while let Some(d) = c.poll_into(&mut buf).unwrap() {
        assert_ne!(buf.value(), &[0xEE; 16], "abandoned bytes were delivered");
        got.push(d.offset);
    }
    assert_eq!(got, (1..SLOTS).collect::<Vec<_>>());
    assert_eq!(c.missed(), 1);
    assert_eq!(
        topic.write_offset(0).unwrap(),
        SLOTS,
        "nothing was published"
    );
    // The offset is reused by the next send.
    let s = p.send(b"after").unwrap();
    assert_eq!(s.offset, SLOTS);
    let d = c.poll_into(&mut buf).unwrap().unwrap();
    assert_eq!((d.offset, buf.value()), (SLOTS, &b"after"[..]));
    drop((p, c, topic));
    fx.finish();
}

#[test]
fn loans_refuse_what_sends_refuse() {
    let fx = Fx::new("bad");
    let topic = fx.topic(2, Overflow::Backpressure);
    let mut p = shmq::Producer::with_partitions(&topic, shmq::Partitions::Only(vec![0])).unwrap();
    assert!(matches!(
        p.loan(129),
        Err(Error::MessageTooLarge {
            size: 129,
            max: 128
        })
    ));
    assert!(matches!(
        p.loan_to(1, 1),
        Err(Error::NotOwned { partition: 1, .. })
    ));
    assert!(matches!(
        p.loan_to(7, 1),
        Err(Error::NoSuchPartition { .. })
    ));
    // Backpressure: a live group that commits nothing lets a full ring in,
    // then the loan reports Full (send timeout zero) and publishes nothing.
    let _c = Consumer::new(&topic, "slow").unwrap();
    let mut p = p.with_send_timeout(Some(std::time::Duration::ZERO));
    for _ in 0..SLOTS {
        p.loan(1).unwrap().commit().unwrap();
    }
    assert!(matches!(p.loan(1), Err(Error::Full { partition: 0, .. })));
    assert_eq!(topic.write_offset(0).unwrap(), SLOTS);
    drop((p, _c, topic));
    fx.finish();
}
