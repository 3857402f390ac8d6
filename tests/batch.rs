//! Batch reads (`Consumer::poll_into_batch`, `recv_into_batch`) and the
//! caught-up reader that watches the next slot instead of the write cursor.
//!
//! Speed is measured by `shmq bench`, never here; these tests pin down what
//! a batch returns: order, `max`, keys, loss (`lagged` with exact counts),
//! commits after a batch, torn records never delivered, and a scribbled
//! sequence word on the watched slot neither delivering nor counting a lap.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{check_payload, payload, ShmGuard};
use shmq::protocol::layout::{self, KIND_PARTITION};
use shmq::protocol::name;
use shmq::protocol::region::Region;
use shmq::{
    Consumer, Error, Overflow, Producer, RecordBatch, SeekPolicy, Topic, TopicConfig, TopicManager,
};

const SLOTS: u64 = 8;
const SLOT_SIZE: usize = 128;

struct Fx {
    // The manager (and its token file) drops before the guard cleans up.
    mgr: Option<TopicManager>,
    guard: ShmGuard,
}

impl Fx {
    fn new(tag: &str) -> Fx {
        let guard = ShmGuard::new(&format!("b{tag}"));
        Fx {
            mgr: Some(guard.manager()),
            guard,
        }
    }
    fn topic(&self, partitions: u32, overflow: Overflow) -> Topic {
        let config = TopicConfig::default()
            .partitions(partitions)
            .slots(SLOTS)
            .slot_size(SLOT_SIZE as u64)
            .overflow(overflow);
        self.mgr.as_ref().unwrap().create("t", config).unwrap()
    }
    fn partition(&self, p: u32) -> Region {
        Region::attach(
            &name::partition_region(self.guard.ns(), "t", p),
            KIND_PARTITION,
        )
        .unwrap()
        .unwrap()
    }
    fn finish(mut self) {
        let mgr = self.mgr.take().unwrap();
        assert!(mgr.delete("t").unwrap());
        drop(mgr);
        self.guard.finish();
    }
}

/// The sequence word of slot `index` of a partition region of this file's
/// geometry.
fn slot_seq(region: &Region, index: u64) -> &std::sync::atomic::AtomicU64 {
    let off = layout::PARTITION_HEADER + (index * layout::stride(SLOT_SIZE as u64)) as usize;
    assert!(index < SLOTS && off + 8 <= region.len());
    let base = std::ptr::from_ref(region.partition_header()).cast::<u8>();
    // SAFETY: the header is at the start of the mapping, `off + 8` is inside
    // it (asserted), slots start on 64-byte boundaries, and the mapping lives
    // as long as `region`; an AtomicU64 may alias memory other processes
    // access atomically.
    unsafe { &*base.add(off).cast::<std::sync::atomic::AtomicU64>() }
}

fn values(b: &RecordBatch) -> Vec<(u32, u64, Vec<u8>)> {
    b.iter()
        .map(|r| (r.partition, r.offset, r.value.to_vec()))
        .collect()
}

#[test]
fn a_batch_holds_up_to_max_records_in_order_with_keys() {
    let fx = Fx::new("order");
    let topic = fx.topic(1, Overflow::Backpressure);
    let mut p = Producer::new(&topic).unwrap();
    let mut c = Consumer::new(&topic, "g").unwrap();
    let mut batch = RecordBatch::new();
    assert_eq!(c.poll_into_batch(&mut batch, 10).unwrap(), 0);
    assert!(batch.is_empty());
    p.send_keyed(b"k", b"v0").unwrap();
    for i in 1..6u8 {
        p.send(&[b'v', b'0' + i]).unwrap();
    }
    assert_eq!(c.poll_into_batch(&mut batch, 4).unwrap(), 4);
    assert_eq!(batch.len(), 4);
    let first = batch.get(0).unwrap();
    assert_eq!(first.key, Some(&b"k"[..]));
    assert_eq!(first.value, b"v0");
    assert!(first.timestamp_ns > 0);
    assert_eq!(batch.get(1).unwrap().key, None);
    assert_eq!(
        batch.iter().map(|r| r.offset).collect::<Vec<_>>(),
        vec![0, 1, 2, 3]
    );
    assert_eq!(batch.get(3).unwrap().value, b"v3");
    assert!(batch.get(4).is_none());
    // The next call continues after the batch, and clears it first.
    assert_eq!(c.poll_into_batch(&mut batch, 100).unwrap(), 2);
    assert_eq!(
        values(&batch),
        vec![(0, 4, b"v4".to_vec()), (0, 5, b"v5".to_vec())]
    );
    assert_eq!(c.poll_into_batch(&mut batch, 100).unwrap(), 0);
    assert!(batch.is_empty() && batch.lagged().is_empty() && batch.corrupt() == 0);
    assert_eq!((c.missed(), c.corrupt()), (0, 0));
    drop((p, c, topic));
    fx.finish();
}

#[test]
fn a_commit_after_a_batch_commits_every_record_in_it() {
    let fx = Fx::new("commit");
    let topic = fx.topic(2, Overflow::Backpressure);
    let mut p = Producer::new(&topic).unwrap();
    for i in 0..6u8 {
        p.send_to(u32::from(i % 2), None, &[i]).unwrap();
    }
    let mut c = Consumer::new(&topic, "g").unwrap();
    let mut batch = RecordBatch::new();
    // Both partitions, each drained in turn: 3 + 2 records.
    assert_eq!(c.poll_into_batch(&mut batch, 5).unwrap(), 5);
    let got: Vec<(u32, u64)> = batch.iter().map(|r| (r.partition, r.offset)).collect();
    assert_eq!(got, vec![(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]);
    c.commit().unwrap();
    drop(c);
    // Another consumer of the group resumes after the batch.
    let mut c = Consumer::new(&topic, "g").unwrap();
    assert_eq!((c.position(0), c.position(1)), (Some(3), Some(2)));
    assert_eq!(c.poll_into_batch(&mut batch, 100).unwrap(), 1);
    assert_eq!(values(&batch), vec![(1, 2, vec![5])]);
    drop((p, c, topic));
    fx.finish();
}

#[test]
fn a_lapped_batch_reports_exactly_what_it_lost() {
    let fx = Fx::new("lap");
    let topic = fx.topic(1, Overflow::Overwrite);
    let mut p = Producer::new(&topic).unwrap();
    let mut c = Consumer::reader(&topic).unwrap();
    c.seek(SeekPolicy::Offset(0)).unwrap();
    for i in 0..20u8 {
        p.send(&[i]).unwrap();
    }
    let mut batch = RecordBatch::new();
    assert_eq!(c.poll_into_batch(&mut batch, 100).unwrap(), 8);
    assert_eq!(batch.lagged().len(), 1);
    let lag = batch.lagged()[0];
    assert_eq!((lag.partition, lag.missed, lag.resumed_at), (0, 12, 12));
    assert_eq!(batch.missed(), 12);
    assert_eq!(c.missed(), 12);
    assert_eq!(
        batch.iter().map(|r| r.offset).collect::<Vec<_>>(),
        (12..20).collect::<Vec<_>>()
    );
    assert!(batch.iter().all(|r| r.value == [r.offset as u8]));
    // A blocking batch read reports a lap with the records after it.
    for i in 20..40u8 {
        p.send(&[i]).unwrap();
    }
    let n = c
        .recv_into_batch(&mut batch, 3, Some(Duration::from_secs(5)))
        .unwrap();
    assert_eq!(n, 3);
    assert_eq!(batch.missed(), 12);
    assert_eq!(batch.lagged()[0].resumed_at, 32);
    assert_eq!(batch.get(0).unwrap().offset, 32);
    assert_eq!(c.missed(), 24);
    drop((p, c, topic));
    fx.finish();
}

#[test]
fn recv_into_batch_waits_for_a_record_and_honours_its_deadline() {
    let fx = Fx::new("recv");
    let topic = fx.topic(1, Overflow::Overwrite);
    let mut c = Consumer::new(&topic, "g").unwrap();
    let mut batch = RecordBatch::new();
    let r = c.recv_into_batch(&mut batch, 8, Some(Duration::from_millis(30)));
    assert!(matches!(r, Err(Error::Timeout)), "{r:?}");
    let sender = {
        let topic = topic.clone();
        std::thread::spawn(move || {
            let mut p = Producer::new(&topic).unwrap();
            std::thread::sleep(Duration::from_millis(20));
            p.send(b"late").unwrap();
        })
    };
    let n = c
        .recv_into_batch(&mut batch, 8, Some(Duration::from_secs(10)))
        .unwrap();
    sender.join().unwrap();
    assert_eq!(n, 1);
    assert_eq!(batch.get(0).unwrap().value, b"late");
    drop((c, topic));
    fx.finish();
}

/// A writer thread laps a tiny ring of large slots as fast as it can while
/// a reader drains it in batches, so copies are often overwritten while
/// they are made: every delivered record is whole (checksummed payloads of
/// varying length), offsets only grow, and records + missed account for
/// every offset the reader passed.
#[test]
fn a_torn_record_is_never_delivered_in_a_batch() {
    const BIG: usize = 16 << 10;
    let fx = Fx::new("torn");
    let config = TopicConfig::default()
        .partitions(1)
        .slots(4)
        .slot_size(BIG as u64)
        .overflow(Overflow::Overwrite);
    let topic = fx.mgr.as_ref().unwrap().create("t", config).unwrap();
    // The writer runs for a fixed time (not a count), so the reader races
    // it for long enough on any machine.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (topic, done, stop) = (topic.clone(), done.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut p = Producer::new(&topic).unwrap();
            let msgs: Vec<Vec<u8>> = (0..64).map(|s| payload(s, BIG)).collect();
            let mut seq = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // Precomputed payloads (seq mod 64), so the writer is fast.
                p.send(&msgs[(seq % 64) as usize]).unwrap();
                seq += 1;
            }
            done.store(true, Ordering::Release);
            seq
        })
    };
    let stopper = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(1000));
            stop.store(true, Ordering::Relaxed);
        })
    };
    let mut c = Consumer::reader(&topic).unwrap();
    c.seek(SeekPolicy::Offset(0)).unwrap();
    let mut batch = RecordBatch::new();
    let (mut read, mut missed, mut next) = (0u64, 0u64, 0u64);
    loop {
        let finished = done.load(Ordering::Acquire);
        c.poll_into_batch(&mut batch, 3).unwrap();
        missed += batch.missed();
        for r in batch.iter() {
            // Offsets only grow (laps in between skip ahead).
            assert!(r.offset >= next, "offset went back: {} < {next}", r.offset);
            assert_eq!(check_payload(r.value, BIG), r.offset % 64);
            next = r.offset + 1;
            read += 1;
        }
        assert_eq!(batch.corrupt(), 0);
        if finished && batch.is_empty() && batch.lagged().is_empty() {
            break;
        }
    }
    let total = writer.join().unwrap();
    stopper.join().unwrap();
    assert_eq!(c.position(0), Some(total));
    assert_eq!(read + missed, total, "read {read}, missed {missed}");
    assert_eq!(c.missed(), missed);
    drop((c, topic));
    fx.finish();
}

/// Item 3: a caught-up reader finds a published record from the slot it
/// watches, without the write cursor. The cursor is held back by hand (as
/// it is between a batch's slot publishes and its one cursor update): the
/// record is still delivered, and it was found with no cursor load at all.
#[test]
fn a_caught_up_reader_finds_the_next_record_from_its_slot_not_the_cursor() {
    let fx = Fx::new("seq");
    let topic = fx.topic(1, Overflow::Overwrite);
    let region = fx.partition(0);
    let hdr = region.partition_header();
    let mut p = Producer::new(&topic).unwrap();
    let mut c = Consumer::reader(&topic).unwrap();
    let mut batch = RecordBatch::new();
    for _ in 0..10 {
        assert_eq!(c.poll_into_batch(&mut batch, 8).unwrap(), 0);
    }
    assert_eq!(
        c.read_loads(),
        (0, 0),
        "an idle caught-up reader loaded the cursor"
    );
    p.send(b"r0").unwrap();
    hdr.cursor.store(0, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(c.poll_into_batch(&mut batch, 8).unwrap(), 1);
    assert_eq!(batch.get(0).unwrap().value, b"r0");
    let (hits, loads) = c.read_loads();
    assert!(hits >= 1, "{hits} {loads}");
    assert_eq!(loads, 0, "the record was found through the cursor");
    // poll_into, the one-record path, watches the slot too.
    p.send(b"r1").unwrap();
    hdr.cursor.store(0, std::sync::atomic::Ordering::SeqCst);
    let mut buf = shmq::RecordBuf::default();
    let d = c
        .poll_into(&mut buf)
        .unwrap()
        .expect("r1 not found from its slot");
    assert_eq!((d.offset, buf.value()), (1, &b"r1"[..]));
    // A reader that keeps finding nothing still looks at the cursor now and
    // then (how a slot stuck below it is found).
    for _ in 0..200 {
        assert!(c.poll_into(&mut buf).unwrap().is_none());
    }
    assert!(c.read_loads().1 >= 2, "{:?}", c.read_loads());
    assert_eq!((c.missed(), c.corrupt()), (0, 0));
    drop((p, c, topic, region));
    fx.finish();
}

/// A peer scribbles the sequence word of the slot a caught-up reader
/// watches (to a "later lap" and to garbage): the reader delivers nothing,
/// counts no lap (the validated cursor does not confirm one), and receives
/// the real record once the writer publishes it.
#[test]
fn a_scribbled_watched_slot_neither_delivers_nor_counts_a_lap() {
    let fx = Fx::new("scrib");
    let topic = fx.topic(1, Overflow::Overwrite);
    let region = fx.partition(0);
    let mut p = Producer::new(&topic).unwrap();
    let mut c = Consumer::reader(&topic).unwrap();
    let mut batch = RecordBatch::new();
    for i in 0..3u8 {
        p.send(&[i]).unwrap();
    }
    assert_eq!(c.poll_into_batch(&mut batch, 8).unwrap(), 3);
    // Slot 3's sequence word: offset 3 lives there; 2o + 2 = 8 means "holds 3".
    let seq = slot_seq(&region, 3);
    for wild in [2 * (3 + SLOTS * 1000) + 2, u64::MAX, 2 * (3 + SLOTS) + 1] {
        seq.store(wild, std::sync::atomic::Ordering::SeqCst);
        for _ in 0..100 {
            assert_eq!(c.poll_into_batch(&mut batch, 8).unwrap(), 0, "wild {wild}");
            assert!(
                batch.lagged().is_empty(),
                "wild {wild}: {:?}",
                batch.lagged()
            );
        }
    }
    assert_eq!(c.missed(), 0);
    // The writer takes the slot back.
    p.send(b"real").unwrap();
    assert_eq!(c.poll_into_batch(&mut batch, 8).unwrap(), 1);
    assert_eq!(values(&batch), vec![(0, 3, b"real".to_vec())]);
    assert_eq!(c.missed(), 0);
    drop((p, c, topic, region));
    fx.finish();
}

#[test]
fn a_group_member_reads_its_partitions_in_batches() {
    let fx = Fx::new("grp");
    let topic = fx.topic(2, Overflow::Backpressure);
    let mut p = Producer::new(&topic).unwrap();
    for i in 0..4u8 {
        p.send_to(u32::from(i % 2), None, &[i]).unwrap();
    }
    let mut m = shmq::GroupConsumer::join(&topic, "g", shmq::GroupOptions::default()).unwrap();
    let mut batch = RecordBatch::new();
    let mut got = Vec::new();
    for _ in 0..100 {
        m.poll_into_batch(&mut batch, 16).unwrap();
        got.extend(batch.iter().map(|r| (r.partition, r.offset, r.value[0])));
        if got.len() == 4 {
            break;
        }
    }
    got.sort_unstable();
    assert_eq!(got, vec![(0, 0, 0), (0, 1, 2), (1, 0, 1), (1, 1, 3)]);
    m.commit().unwrap();
    drop((p, m, topic));
    fx.finish();
}

/// A reader lapped again at the very offset its last lap resumed at is
/// chasing the writer's overwrite front: it resumes a quarter ring further
/// (here 2 of 8 slots), counting what it skips, instead of racing the
/// writer for the slot it overwrites next. A single lap still resumes at the
/// oldest retained record.
#[test]
fn a_reader_lapped_twice_at_one_place_escapes_the_writers_front() {
    let fx = Fx::new("chase");
    let topic = fx.topic(1, Overflow::Overwrite);
    let mut p = Producer::new(&topic).unwrap();
    let mut c = Consumer::reader(&topic).unwrap();
    c.seek(SeekPolicy::Offset(0)).unwrap();
    for i in 0..20u8 {
        p.send(&[i]).unwrap();
    }
    // Lapped at 0: resume at the oldest retained record, 12.
    let mut buf = shmq::RecordBuf::default();
    let d = c.poll_into(&mut buf).unwrap().unwrap();
    assert_eq!((d.offset, c.missed()), (12, 12));
    c.seek(SeekPolicy::Offset(12)).unwrap();
    // The writer overwrites 12 before the reader gets there: lapped again
    // at 12, where the last lap resumed. Oldest is now 13; it escapes to 15.
    p.send(&[20]).unwrap();
    let mut batch = RecordBatch::new();
    assert_eq!(c.poll_into_batch(&mut batch, 100).unwrap(), 6);
    assert_eq!(batch.lagged().len(), 1);
    let lag = batch.lagged()[0];
    assert_eq!((lag.missed, lag.resumed_at), (3, 15));
    assert_eq!(
        batch.iter().map(|r| r.offset).collect::<Vec<_>>(),
        (15..21).collect::<Vec<_>>()
    );
    assert!(batch.iter().all(|r| r.value == [r.offset as u8]));
    // Exact accounting: 12 + 3 missed, and a fresh lap elsewhere is a
    // plain one again.
    assert_eq!(c.missed(), 15);
    for i in 21..40u8 {
        p.send(&[i]).unwrap();
    }
    assert_eq!(c.poll_into_batch(&mut batch, 100).unwrap(), 8);
    assert_eq!(batch.lagged()[0].resumed_at, 32);
    drop((p, c, topic));
    fx.finish();
}
