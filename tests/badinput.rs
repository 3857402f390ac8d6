//! Bad input gets a typed error, never a panic: invalid names and
//! configurations, oversize messages, missing topics, and regions in
//! `/dev/shm` that were scribbled on, truncated or never were shmq's.
//!
//! The scribbling is done the way a buggy peer would: through the file in
//! `/dev/shm`, after the topic was created. Every test uses its own namespace
//! and asserts that nothing of it is left in `/dev/shm`.

mod common;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;

use common::{check_payload, payload, shm_files, shm_path, ShmGuard};
use shmq::protocol::layout::{
    self, HAS_KEY, KIND_META, KIND_PARTITION, LAYOUT_VERSION, META_HEADER, PARTITION_HEADER,
};
use shmq::{Consumer, Error, Producer, RegionProblem, TopicConfig, TopicManager};

fn small() -> TopicConfig {
    TopicConfig::default().partitions(2).slots(16).slot_size(64)
}

/// Overwrite `bytes` at `offset` of region `region` in `/dev/shm`.
fn scribble(region: &str, offset: u64, bytes: &[u8]) {
    let f = OpenOptions::new()
        .write(true)
        .open(shm_path(region))
        .unwrap_or_else(|e| panic!("open {region}: {e}"));
    f.write_all_at(bytes, offset).unwrap();
}

fn set_len(region: &str, len: u64) {
    let f = OpenOptions::new()
        .write(true)
        .open(shm_path(region))
        .unwrap();
    f.set_len(len).unwrap();
}

fn file_len(region: &str) -> u64 {
    std::fs::metadata(shm_path(region)).unwrap().len()
}

fn meta(ns: &str, topic: &str) -> String {
    shmq::protocol::name::meta_region(ns, topic)
}

fn part(ns: &str, topic: &str, p: u32) -> String {
    shmq::protocol::name::partition_region(ns, topic, p)
}

/// `open` must fail with `BadRegion` on `region` with `problem`.
#[track_caller]
fn assert_bad_region(mgr: &TopicManager, topic: &str, region: &str, problem: RegionProblem) {
    match mgr.open(topic) {
        Err(e @ Error::BadRegion { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains(region),
                "message does not name {region}: {msg}"
            );
            let Error::BadRegion {
                region: r,
                problem: p,
            } = e
            else {
                unreachable!()
            };
            assert_eq!((r.as_str(), p), (region, problem));
        }
        other => panic!("open {topic}: expected BadRegion on {region}, got {other:?}"),
    }
}

#[test]
fn invalid_names_are_refused() {
    for ns in ["", "a.b", "a/b", "_x", "ü", "a b", &"n".repeat(33)] {
        match TopicManager::with_namespace(ns) {
            Err(Error::InvalidName { what, name, .. }) => {
                assert_eq!((what, name.as_str()), ("namespace", ns));
            }
            other => panic!("namespace {ns:?}: {other:?}"),
        }
    }
    let guard = ShmGuard::new("names");
    {
        let mgr = guard.manager();
        let bad_topics = ["", "a.b", "../etc", "_meta", "t\0", "a b", &"t".repeat(65)];
        for t in bad_topics {
            let errs = [
                mgr.create(t, small()).map(drop),
                mgr.open(t).map(drop),
                mgr.open_or_create(t, small()).map(drop),
                mgr.delete(t).map(drop),
            ];
            for e in errs {
                assert!(
                    matches!(&e, Err(Error::InvalidName { what: "topic", name, .. }) if name == t),
                    "topic {t:?}: {e:?}"
                );
            }
        }
        // The longest valid names work.
        let long = "t".repeat(64);
        let topic = mgr.create(&long, small()).unwrap();
        for g in ["", "g.1", "_g", "g/h", "g h", &"g".repeat(41)] {
            match Consumer::new(&topic, g) {
                Err(Error::InvalidName { what, name, reason }) => {
                    assert_eq!((what, name.as_str()), ("group", g));
                    assert!(!reason.is_empty());
                }
                other => panic!("group {g:?}: {other:?}"),
            }
        }
        Consumer::new(&topic, &"g".repeat(40)).unwrap();
        drop(topic);
        assert!(mgr.delete(&long).unwrap());
        // Nothing but our own token was ever created.
        assert_eq!(
            shm_files(guard.ns()).len(),
            1,
            "{:?}",
            shm_files(guard.ns())
        );
    }
    guard.finish();
}

#[test]
fn invalid_configs_are_refused() {
    let guard = ShmGuard::new("config");
    {
        let mgr = guard.manager();
        let bad = [
            small().partitions(0),
            small().partitions(257),
            small().slots(3),
            small().slots(1),
            small().slot_size(0),
            small().retention(std::time::Duration::ZERO),
            small().mode(0o400),
        ];
        for cfg in bad {
            match mgr.create("t", cfg.clone()) {
                Err(Error::InvalidConfig(msg)) => assert!(!msg.is_empty()),
                other => panic!("{cfg:?}: {other:?}"),
            }
        }
        assert!(mgr.list().unwrap().is_empty());
    }
    guard.finish();
}

#[test]
fn oversize_message_is_refused_with_both_sizes() {
    let guard = ShmGuard::new("oversize");
    {
        let mgr = guard.manager();
        let topic = mgr.create("t", small()).unwrap();
        let mut producer = Producer::new(&topic).unwrap();
        let too_big = |r: shmq::Result<shmq::Sent>, size: usize| match r {
            Err(e @ Error::MessageTooLarge { .. }) => {
                let msg = e.to_string();
                assert!(
                    msg.contains(&size.to_string()) && msg.contains("64"),
                    "{msg}"
                );
                assert!(matches!(e, Error::MessageTooLarge { size: s, max: 64 } if s == size));
            }
            other => panic!("expected MessageTooLarge({size}), got {other:?}"),
        };
        too_big(producer.send(&[7; 65]), 65);
        too_big(producer.send(&[7; 100_000]), 100_000);
        too_big(producer.send_keyed(&[1; 10], &[7; 60]), 70);
        too_big(producer.send_to(1, Some(&[1; 4]), &[7; 61]), 65);
        match producer.send_batch(&[vec![1u8; 8], vec![2u8; 65]]) {
            Err(Error::MessageTooLarge { size: 65, max: 64 }) => {}
            other => panic!("batch: {other:?}"),
        }
        // Nothing of the refused sends (or of the refused batch) was published.
        assert_eq!(
            (
                topic.write_offset(0).unwrap(),
                topic.write_offset(1).unwrap()
            ),
            (0, 0)
        );
        // Exactly a slot's worth fits, key included.
        let sent = producer.send_to(0, Some(&[1; 4]), &[9; 60]).unwrap();
        assert_eq!((sent.partition, sent.offset), (0, 0));
        let mut consumer = Consumer::new(&topic, "g").unwrap();
        let got = consumer.poll(10).unwrap();
        assert_eq!(got.records.len(), 1);
        assert_eq!(got.records[0].key.as_deref(), Some(&[1u8; 4][..]));
        assert_eq!(got.records[0].value, vec![9u8; 60]);
    }
    guard.finish();
}

#[test]
fn missing_topic_is_not_found() {
    let guard = ShmGuard::new("missing");
    {
        let mgr = guard.manager();
        match mgr.open("nope") {
            Err(e @ Error::TopicNotFound { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains("nope") && msg.contains(guard.ns()), "{msg}");
                assert!(matches!(
                    e,
                    Error::TopicNotFound { namespace, topic } if namespace == guard.ns() && topic == "nope"
                ));
            }
            other => panic!("{other:?}"),
        }
        assert!(!mgr.delete("nope").unwrap());
        // A topic deleted by someone else is gone for a later opener too.
        drop(mgr.create("gone", small()).unwrap());
        assert!(mgr.delete("gone").unwrap());
        assert!(matches!(mgr.open("gone"), Err(Error::TopicNotFound { .. })));
    }
    guard.finish();
}

#[test]
fn scribbled_partition_headers_are_refused() {
    let guard = ShmGuard::new("scribble");
    let ns = guard.ns().to_string();
    {
        let mgr = guard.manager();
        for t in ["magic", "version", "kind", "trunc", "geometry", "gone"] {
            drop(mgr.create(t, small()).unwrap());
        }
        let len = file_len(&part(&ns, "magic", 0));

        scribble(&part(&ns, "magic", 0), 0, b"NOTSHMQ!");
        let found = u64::from_le_bytes(*b"NOTSHMQ!");
        assert_bad_region(
            &mgr,
            "magic",
            &part(&ns, "magic", 0),
            RegionProblem::BadMagic { found },
        );

        scribble(&part(&ns, "version", 1), 8, &99u32.to_le_bytes());
        assert_bad_region(
            &mgr,
            "version",
            &part(&ns, "version", 1),
            RegionProblem::BadVersion {
                found: 99,
                expected: LAYOUT_VERSION,
            },
        );

        scribble(&part(&ns, "kind", 0), 12, &KIND_META.to_le_bytes());
        assert_bad_region(
            &mgr,
            "kind",
            &part(&ns, "kind", 0),
            RegionProblem::WrongKind {
                found: KIND_META,
                expected: KIND_PARTITION,
            },
        );

        set_len(&part(&ns, "trunc", 0), len / 2);
        assert_bad_region(
            &mgr,
            "trunc",
            &part(&ns, "trunc", 0),
            RegionProblem::Truncated {
                size: len / 2,
                expected: len,
            },
        );

        // Slot count 3: not a power of two.
        scribble(&part(&ns, "geometry", 0), 0x10, &3u64.to_le_bytes());
        match mgr.open("geometry") {
            Err(Error::BadRegion {
                region,
                problem: RegionProblem::BadGeometry(why),
            }) => {
                assert_eq!(region, part(&ns, "geometry", 0));
                assert!(why.contains('3'), "{why}");
            }
            other => panic!("{other:?}"),
        }

        std::fs::remove_file(shm_path(&part(&ns, "gone", 1))).unwrap();
        match mgr.open("gone") {
            Err(Error::BadRegion {
                region,
                problem: RegionProblem::BadGeometry(_),
            }) => assert_eq!(region, part(&ns, "gone", 1)),
            other => panic!("{other:?}"),
        }
    }
    // `finish` deletes the damaged topics through the library too.
    guard.finish();
}

#[test]
fn scribbled_meta_regions_are_refused() {
    let guard = ShmGuard::new("scribmeta");
    let ns = guard.ns().to_string();
    {
        let mgr = guard.manager();
        for t in ["magic", "version", "trunc", "geometry"] {
            drop(mgr.create(t, small()).unwrap());
        }
        scribble(&meta(&ns, "magic"), 0, &[0xA5; 8]);
        assert_bad_region(
            &mgr,
            "magic",
            &meta(&ns, "magic"),
            RegionProblem::BadMagic {
                found: u64::from_le_bytes([0xA5; 8]),
            },
        );
        // open_or_create neither loops nor replaces a damaged topic.
        assert!(matches!(
            mgr.open_or_create("magic", small()),
            Err(Error::BadRegion { .. })
        ));
        assert!(matches!(
            mgr.create("magic", small()),
            Err(Error::TopicExists { .. })
        ));

        scribble(
            &meta(&ns, "version"),
            8,
            &(LAYOUT_VERSION + 1).to_le_bytes(),
        );
        assert_bad_region(
            &mgr,
            "version",
            &meta(&ns, "version"),
            RegionProblem::BadVersion {
                found: LAYOUT_VERSION + 1,
                expected: LAYOUT_VERSION,
            },
        );

        let full = file_len(&meta(&ns, "trunc"));
        set_len(&meta(&ns, "trunc"), 4096);
        assert_bad_region(
            &mgr,
            "trunc",
            &meta(&ns, "trunc"),
            RegionProblem::Truncated {
                size: 4096,
                expected: full,
            },
        );

        // Partition count 0 (bytes 0x10..0x14 of the meta header).
        scribble(&meta(&ns, "geometry"), 0x10, &0u32.to_le_bytes());
        assert!(matches!(
            mgr.open("geometry"),
            Err(Error::BadRegion {
                problem: RegionProblem::BadGeometry(_),
                ..
            })
        ));
    }
    guard.finish();
}

#[test]
fn garbage_file_named_like_a_meta_region_is_refused() {
    let guard = ShmGuard::new("garbage");
    let ns = guard.ns().to_string();
    {
        let mgr = guard.manager();
        // 4 KiB of noise, in a file shmq would take for topic "junk".
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        std::fs::write(shm_path(&meta(&ns, "junk")), &noise).unwrap();
        let found = u64::from_le_bytes(noise[..8].try_into().unwrap());
        assert_bad_region(
            &mgr,
            "junk",
            &meta(&ns, "junk"),
            RegionProblem::BadMagic { found },
        );
        assert_eq!(mgr.list().unwrap(), vec!["junk".to_string()]);
        assert!(matches!(
            mgr.create("junk", small()),
            Err(Error::TopicExists { .. })
        ));

        // A file shorter than any header: refused after the bounded wait for
        // a creator still initialising it.
        std::fs::write(shm_path(&meta(&ns, "tiny")), [1u8; 10]).unwrap();
        assert_bad_region(
            &mgr,
            "tiny",
            &meta(&ns, "tiny"),
            RegionProblem::Truncated {
                size: 10,
                expected: META_HEADER as u64,
            },
        );
        // Removed by hand: `delete` would wait the attach timeout again.
        std::fs::remove_file(shm_path(&meta(&ns, "tiny"))).unwrap();
    }
    guard.finish();
}

#[test]
fn scribbled_slot_lengths_are_skipped_as_corrupt() {
    const SLOT: usize = 64;
    let guard = ShmGuard::new("slots");
    let ns = guard.ns().to_string();
    {
        let mgr = guard.manager();
        let topic = mgr
            .create(
                "t",
                TopicConfig::default().partitions(1).slots(16).slot_size(64),
            )
            .unwrap();
        let mut producer = Producer::new(&topic).unwrap();
        for seq in 0..6 {
            producer.send(&payload(seq, SLOT)).unwrap();
        }
        let region = part(&ns, "t", 0);
        let stride = layout::stride(SLOT as u64);
        let slot = |i: u64| PARTITION_HEADER as u64 + i * stride;
        // Slot 0: a huge val_len. Slot 2: a huge key_len with the key bit.
        // Slot 4: one byte more than the slot holds.
        scribble(&region, slot(0) + 8, &0xFFFF_FFF0u32.to_le_bytes());
        scribble(
            &region,
            slot(2) + 12,
            &(HAS_KEY | 0x7FFF_FFFF).to_le_bytes(),
        );
        scribble(&region, slot(4) + 8, &(SLOT as u32 + 1).to_le_bytes());
        scribble(&region, slot(4) + 12, &0u32.to_le_bytes());

        let mut consumer = Consumer::new(&topic, "g").unwrap();
        let got = consumer.poll(100).unwrap();
        assert_eq!(got.corrupt, 3);
        assert!(got.lagged.is_empty());
        let seqs: Vec<(u64, u64)> = got
            .records
            .iter()
            .map(|r| (r.offset, check_payload(&r.value, SLOT)))
            .collect();
        assert_eq!(seqs, vec![(1, 1), (3, 3), (5, 5)]);
        assert_eq!(consumer.corrupt(), 3);

        // The writer rewrites the scribbled slots when it wraps around, and
        // the reader carries on.
        for seq in 6..22 {
            producer.send(&payload(seq, SLOT)).unwrap();
        }
        let got = consumer.poll(100).unwrap();
        assert_eq!((got.corrupt, got.lagged.len()), (0, 0));
        let seqs: Vec<u64> = got
            .records
            .iter()
            .map(|r| check_payload(&r.value, SLOT))
            .collect();
        assert_eq!(seqs, (6..22).collect::<Vec<_>>());

        // A fresh process-equivalent reader from offset 0 is told about the
        // overwritten records and never sees the bad bytes again.
        let mut late = Consumer::new(&topic, "late").unwrap();
        late.seek(shmq::SeekPolicy::Offset(0)).unwrap();
        let got = late.poll(100).unwrap();
        assert_eq!(got.corrupt, 0);
        assert_eq!(got.lagged.iter().map(|l| l.missed).sum::<u64>(), 6);
        assert_eq!(got.records.len(), 16);
    }
    guard.finish();
}

#[test]
fn scribbled_sequence_words_neither_jam_the_writer_nor_move_readers_ahead() {
    const SLOT: usize = 64;
    let guard = ShmGuard::new("seqw");
    let ns = guard.ns().to_string();
    {
        let mgr = guard.manager();
        let topic = mgr
            .create(
                "t",
                TopicConfig::default().partitions(1).slots(4).slot_size(64),
            )
            .unwrap();
        let mut producer = Producer::new(&topic).unwrap();
        for seq in 0..2 {
            producer.send(&payload(seq, SLOT)).unwrap();
        }
        let region = part(&ns, "t", 0);
        let stride = layout::stride(SLOT as u64);
        let slot = |i: u64| PARTITION_HEADER as u64 + i * stride;
        // A peer writes "holds a far future offset" into the next two slots'
        // sequence words (one even, one odd = "being written").
        scribble(&region, slot(2), &u64::MAX.to_le_bytes());
        scribble(&region, slot(3), &(u64::MAX - 2).to_le_bytes());

        // A reader waiting at offset 2 is not moved past the write cursor.
        let mut consumer = Consumer::new(&topic, "g").unwrap();
        let got = consumer.poll(100).unwrap();
        assert_eq!(got.records.len(), 2);
        assert!(got.lagged.is_empty(), "{:?}", got.lagged);
        assert_eq!(consumer.position(0), Some(2));

        // The writer still holds its lease, so it takes the slots back
        // instead of reporting itself fenced.
        for seq in 2..6 {
            let sent = producer.send(&payload(seq, SLOT)).unwrap();
            assert_eq!(sent.offset, seq);
        }
        let got = consumer.poll(100).unwrap();
        let seqs: Vec<u64> = got
            .records
            .iter()
            .map(|r| check_payload(&r.value, SLOT))
            .collect();
        assert_eq!(seqs, vec![2, 3, 4, 5]);
        assert_eq!((got.corrupt, got.lagged.len()), (0, 0));
    }
    guard.finish();
}

/// `open`'s error message for a topic whose region was scribbled.
#[track_caller]
fn open_error(mgr: &TopicManager, topic: &str) -> String {
    match mgr.open(topic) {
        Err(e @ Error::BadRegion { .. }) => e.to_string(),
        other => panic!("expected BadRegion, got {other:?}"),
    }
}

#[test]
fn region_messages_name_what_is_actually_wrong() {
    use shmq::protocol::layout::{MetaHeader, PartitionHeader};
    use std::mem::offset_of;
    let guard = ShmGuard::new("messages");
    let ns = guard.ns().to_string();
    {
        let mgr = guard.manager();
        for t in ["len", "metalen", "size", "index"] {
            mgr.create(t, small()).unwrap();
        }
        let len = file_len(&part(&ns, "len", 0));

        // The header's length field disagrees with its geometry while the
        // object is the right size: not "is N bytes but requires N".
        let off = offset_of!(PartitionHeader, region_len) as u64;
        scribble(&part(&ns, "len", 0), off, &(len + 4096).to_le_bytes());
        let msg = open_error(&mgr, "len");
        assert!(
            msg.contains(&format!("header says it is {} bytes long", len + 4096))
                && msg.contains(&format!("take {len}")),
            "{msg}"
        );
        let meta_len = file_len(&meta(&ns, "metalen"));
        let off = offset_of!(MetaHeader, region_len) as u64;
        scribble(&meta(&ns, "metalen"), off, &(meta_len - 64).to_le_bytes());
        let msg = open_error(&mgr, "metalen");
        assert!(
            msg.contains(&format!("header says it is {} bytes long", meta_len - 64))
                && msg.contains(&format!("take {meta_len}")),
            "{msg}"
        );

        // slot_size 2^31 with a power-of-two slot count: the message names
        // slot_size, not the slot count.
        let off = offset_of!(PartitionHeader, slot_size) as u64;
        scribble(&part(&ns, "size", 1), off, &(1u64 << 31).to_le_bytes());
        let msg = open_error(&mgr, "size");
        assert!(
            msg.contains("slot_size 2147483648 is larger than the largest possible")
                && !msg.contains("power of two"),
            "{msg}"
        );

        // Partition 0's header says it is partition 1: the message says
        // that, not "8 slots of 64 bytes does not match 8 slots of 64 bytes".
        let off = offset_of!(PartitionHeader, partition) as u64;
        scribble(&part(&ns, "index", 0), off, &1u32.to_le_bytes());
        let msg = open_error(&mgr, "index");
        assert!(
            msg.contains("as partition 0: it says it is partition 1") && !msg.contains("slots"),
            "{msg}"
        );
    }
    guard.finish();
}

#[test]
fn counts_in_messages_are_pluralised() {
    let guard = ShmGuard::new("plural");
    {
        let mgr = guard.manager();
        let topic = mgr
            .create("one", small().partitions(1).slot_size(1))
            .unwrap();
        let mut p = Producer::new(&topic).unwrap();
        let err = p.send_to(5, None, b"x").unwrap_err().to_string();
        assert!(
            err.contains("has 1 partition") && !err.contains("1 partitions"),
            "{err}"
        );
        let err = p.send(b"xy").unwrap_err().to_string();
        assert!(
            err.contains("message of 2 bytes") && err.contains("slot of 1 byte;"),
            "{err}"
        );
    }
    guard.finish();
}
