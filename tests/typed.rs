//! Typed messages (feature `serde`): a round trip per codec, compressed and
//! uncompressed records mixed on one topic, decode errors that carry
//! partition and offset and keep the record.
//!
//! `cargo test --workspace` runs these: shm-tools enables shmq's `codecs`
//! feature, and features unify across the workspace; alone:
//! `cargo test --features codecs --test typed`.
#![cfg(all(feature = "json", feature = "postcard", feature = "msgpack"))]

mod common;

use std::time::Duration;

use common::ShmGuard;
use serde::{Deserialize, Serialize};
use shmq::typed::{Codec, Compression, TypedConsumer, TypedProducer, COMPRESSION_HEADER};
use shmq::{Consumer, Error, Headers, Partitions, Producer, SeekPolicy, TopicConfig};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Order {
    id: u64,
    item: String,
    qty: Option<u32>,
    tags: Vec<String>,
    price: f64,
}

fn order(id: u64, text: usize) -> Order {
    Order {
        id,
        item: "tea ".repeat(text),
        qty: (id % 2 == 0).then_some(id as u32),
        tags: vec!["a".into(), format!("n{id}")],
        price: id as f64 * 1.5,
    }
}

const WAIT: Duration = Duration::from_secs(5);

fn config() -> TopicConfig {
    TopicConfig::default()
        .partitions(1)
        .slots(64)
        .slot_size(4096)
}

/// Send a few orders (small and large, keyed and with headers) with codec
/// `C` and `compression`, read them back typed.
fn round_trip<C: Codec>(tag: &str, compression: Compression) {
    let guard = ShmGuard::new(tag);
    let mgr = guard.manager();
    let topic = mgr.create("t", config()).unwrap();
    let mut tx = Producer::new(&topic)
        .unwrap()
        .typed::<Order, C>()
        .with_compression(compression, 64);
    let mut rx = Consumer::new(&topic, "g").unwrap().typed::<Order, C>();
    let sent: Vec<Order> = (0..6).map(|i| order(i, [0, 50][i as usize % 2])).collect();
    tx.send(&sent[0]).unwrap();
    tx.send_keyed(b"key-1", &sent[1]).unwrap();
    let h = Headers::new().with("trace", "t-2");
    tx.send_with(None, &h, &sent[2]).unwrap();
    for o in &sent[3..] {
        tx.send(o).unwrap();
    }
    for (i, want) in sent.iter().enumerate() {
        let m = rx.recv_timeout(WAIT).unwrap();
        assert_eq!(&m.value, want, "{tag} #{i}");
        assert_eq!(m.offset, i as u64);
        if i == 1 {
            assert_eq!(m.key, Some(&b"key-1"[..]));
        }
        if i == 2 {
            assert_eq!(m.headers.get_str("trace"), Some("t-2"));
        }
        // Large values are compressed when asked; small ones never.
        let marked = m.headers.get(COMPRESSION_HEADER).is_some();
        assert_eq!(
            marked,
            compression != Compression::None && i % 2 == 1,
            "{tag} #{i} compression mark"
        );
    }
    assert!(rx.poll().unwrap().is_none());
    rx.commit().unwrap();
    drop((tx, rx, topic, mgr));
    guard.finish();
}

#[cfg(feature = "json")]
#[test]
fn json_round_trip() {
    round_trip::<shmq::typed::Json>("tyjson", Compression::None);
}

#[cfg(feature = "postcard")]
#[test]
fn postcard_round_trip() {
    round_trip::<shmq::typed::Postcard>("typost", Compression::None);
}

#[cfg(feature = "msgpack")]
#[test]
fn msgpack_round_trip() {
    round_trip::<shmq::typed::MsgPack>("tymsgp", Compression::None);
}

#[cfg(all(feature = "postcard", feature = "lz4"))]
#[test]
fn postcard_lz4_round_trip() {
    round_trip::<shmq::typed::Postcard>("typlz4", Compression::Lz4);
}

#[cfg(all(feature = "msgpack", feature = "zstd"))]
#[test]
fn msgpack_zstd_round_trip() {
    round_trip::<shmq::typed::MsgPack>("tymzstd", Compression::Zstd(3));
}

/// Three producers on three partitions of one topic: lz4, zstd, none. One
/// consumer, configured with nothing but the codec, reads them all; the
/// raw records show both kinds, and the compressed ones are smaller.
#[cfg(all(feature = "json", feature = "lz4", feature = "zstd"))]
#[test]
fn compressed_and_uncompressed_records_mix_on_one_topic() {
    use shmq::typed::Json;
    let guard = ShmGuard::new("tymix");
    let mgr = guard.manager();
    let topic = mgr.create("t", config().partitions(3)).unwrap();
    let only = |p| Producer::with_partitions(&topic, Partitions::Only(vec![p])).unwrap();
    let mut lz = TypedProducer::<Order, Json>::new(only(0)).with_compression(Compression::Lz4, 100);
    let mut zs =
        TypedProducer::<Order, Json>::new(only(1)).with_compression(Compression::Zstd(5), 100);
    let mut plain = TypedProducer::<Order, Json>::new(only(2));
    let mut want = std::collections::BTreeMap::new();
    for i in 0..30u64 {
        let o = order(i, (i % 3) as usize * 40); // 0, 40, 80 repeats
        let sent = match i % 3 {
            0 => lz.send(&o),
            1 => zs.send(&o),
            _ => plain.send(&o),
        }
        .unwrap();
        want.insert((sent.partition, sent.offset), o);
    }
    let mut rx = TypedConsumer::<Order, Json>::new(Consumer::new(&topic, "g").unwrap());
    let mut got = std::collections::BTreeMap::new();
    while let Some(m) = rx.poll().unwrap() {
        got.insert((m.partition, m.offset), m.value);
    }
    assert_eq!(got, want);

    // What is in the slots: per partition, which records are marked.
    let mut raw = Consumer::reader(&topic).unwrap();
    let mut marks = std::collections::BTreeMap::<(u32, Option<String>), usize>::new();
    for r in raw.poll(100).unwrap() {
        let mark = r.headers().get_str(COMPRESSION_HEADER).map(str::to_string);
        let json_len = serde_json::to_vec(&want[&(r.partition, r.offset)])
            .unwrap()
            .len();
        if mark.is_some() {
            assert!(r.value().len() < json_len, "compressed records are smaller");
        } else {
            assert_eq!(r.value().len(), json_len, "uncompressed = the JSON itself");
        }
        *marks.entry((r.partition, mark)).or_default() += 1;
    }
    // Partition 0 (lz4) got only small values: below the threshold, plain.
    // Partition 1 (zstd) got large ones: all compressed. Partition 2: none.
    assert_eq!(marks.get(&(0, None)), Some(&10), "{marks:?}");
    assert_eq!(marks.get(&(1, Some("zstd".into()))), Some(&10), "{marks:?}");
    assert_eq!(marks.get(&(2, None)), Some(&10), "{marks:?}");
    // Now lz4 on large values too.
    let big = order(99, 80);
    let s = lz.send(&big).unwrap();
    let m = rx.recv_timeout(WAIT).unwrap();
    assert_eq!((m.partition, m.offset), (s.partition, s.offset));
    assert_eq!(m.headers.get_str(COMPRESSION_HEADER), Some("lz4"));
    assert_eq!(m.value, big);
    drop((lz, zs, plain, rx, raw, topic, mgr));
    guard.finish();
}

/// A record that does not decode: a typed error naming partition and
/// offset; the consumer is not stuck on it; the raw record is kept.
#[cfg(all(feature = "json", feature = "postcard"))]
#[test]
fn decode_errors_carry_partition_and_offset_and_keep_the_record() {
    use shmq::typed::{decode_record, Json, Postcard};
    let guard = ShmGuard::new("tybad");
    let mgr = guard.manager();
    let topic = mgr.create("t", config()).unwrap();
    let mut p = Producer::new(&topic).unwrap();
    p.send(b"not json").unwrap();
    p.send_with(
        Some(b"k"),
        &Headers::new().with(COMPRESSION_HEADER, "brotli"),
        b"\x03\x00\x00\x00abc",
    )
    .unwrap();
    p.send_with(
        None,
        &Headers::new().with(COMPRESSION_HEADER, "lz4"),
        b"\xff\xff\xff\x7f",
    )
    .unwrap();
    let good = order(7, 1);
    p.send(&serde_json::to_vec(&good).unwrap()).unwrap();

    let mut rx = TypedConsumer::<Order, Json>::new(Consumer::new(&topic, "g").unwrap());
    for (offset, codec) in [(0u64, "json"), (1, "compression"), (2, "compression")] {
        match rx.recv_timeout(WAIT) {
            Err(Error::Decode {
                partition,
                offset: o,
                codec: c,
                ref reason,
                ..
            }) => {
                assert_eq!((partition, o, c), (0, offset, codec), "{reason}");
            }
            other => panic!("offset {offset}: expected a decode error, got {other:?}"),
        }
        let failed = rx.take_failed().expect("the raw record is kept");
        assert_eq!(failed.offset, offset);
        if offset == 1 {
            assert_eq!(failed.key(), Some(&b"k"[..]));
            assert_eq!(failed.headers().get_str(COMPRESSION_HEADER), Some("brotli"));
        }
    }
    let m = rx.recv_timeout(WAIT).unwrap();
    assert_eq!((m.offset, &m.value), (3, &good));
    let e = rx
        .recv_timeout(Duration::from_millis(10))
        .expect_err("nothing more");
    assert!(matches!(e, Error::Timeout));
    // The message says what to do.
    rx.consumer()
        .seek_partition(0, SeekPolicy::Offset(0))
        .unwrap();
    let msg = rx.recv_timeout(WAIT).unwrap_err().to_string();
    assert!(
        msg.contains("partition 0 offset 0") && msg.contains("take_failed"),
        "{msg}"
    );

    // Owned records decode too, with the same error.
    let mut raw = Consumer::reader(&topic).unwrap();
    let records = raw.poll(10).unwrap().records;
    assert!(decode_record::<Order, Json>("t", &records[0]).is_err());
    assert_eq!(
        decode_record::<Order, Json>("t", &records[3]).unwrap(),
        good
    );
    assert!(matches!(
        decode_record::<Order, Postcard>("t", &records[3]),
        Err(Error::Decode { offset: 3, .. })
    ));
    drop((p, rx, raw, topic, mgr));
    guard.finish();
}
