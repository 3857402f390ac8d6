//! Record headers: sent with `Producer::send_with`, read back by every
//! reader (`poll`, `poll_into`, `poll_with`, competing consumers), across
//! processes; records without headers keep the version-2 slot bytes; a
//! scribbled headers block is a corrupt record, never a panic.

mod common;

use std::os::unix::fs::FileExt;

use common::{child_role, spawn_child, tell_parent, wait_success, ChildLines, ShmGuard};
use shmq::protocol::layout::{stride, HAS_HEADERS, HAS_KEY, PARTITION_HEADER, SLOT_HEADER};
use shmq::{
    Consumer, Error, HeaderView, Headers, Overflow, Producer, RecordBuf, TopicConfig, TopicManager,
};

const SLOT: u64 = 128;

fn config(overflow: Overflow) -> TopicConfig {
    TopicConfig::default()
        .partitions(1)
        .slots(8)
        .slot_size(SLOT)
        .overflow(overflow)
}

#[test]
fn child_process() {
    let Some((role, args)) = child_role() else {
        return;
    };
    assert_eq!(role, "send_headers");
    let mgr = TopicManager::with_namespace(&args[0]).unwrap();
    let topic = mgr.open(&args[1]).unwrap();
    let mut p = Producer::new(&topic).unwrap();
    for i in 0..5u32 {
        let h = Headers::new()
            .with("i", i.to_le_bytes())
            .with("from", std::process::id().to_string());
        p.send_with(Some(b"k"), &h, format!("v{i}").as_bytes())
            .unwrap();
    }
    tell_parent("sent", 5);
}

#[test]
fn headers_round_trip_through_every_reader() {
    let guard = ShmGuard::new("hdrrt");
    let mgr = guard.manager();
    let topic = mgr.create("t", config(Overflow::Backpressure)).unwrap();
    let mut p = Producer::new(&topic).unwrap();
    let h = Headers::new()
        .with("correlation-id", "c-1")
        .with("bin", [0u8, 255, 7])
        .with("empty", b"");
    p.send_with(Some(b"key"), &h, b"value").unwrap();
    p.send_with(None, &h, b"no key").unwrap();
    p.send(b"plain").unwrap();
    p.send_with(None, &Headers::new(), b"empty headers")
        .unwrap();

    // Owned records.
    let mut c = Consumer::new(&topic, "g").unwrap();
    let got = c.poll(10).unwrap();
    assert_eq!(got.corrupt, 0);
    let r = &got.records;
    assert_eq!(r.len(), 4);
    assert_eq!(r[0].key(), Some(&b"key"[..]));
    assert_eq!(r[0].value(), b"value");
    assert_eq!(r[0].headers(), &h);
    assert_eq!(r[0].headers().get_str("correlation-id"), Some("c-1"));
    assert_eq!(r[0].headers().get("bin"), Some(&[0u8, 255, 7][..]));
    let names: Vec<&str> = r[0].headers().iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["correlation-id", "bin", "empty"]);
    assert_eq!((r[1].key(), r[1].value()), (None, &b"no key"[..]));
    assert_eq!(r[1].headers(), &h);
    assert!(r[2].headers().is_empty());
    assert_eq!(r[2].value(), b"plain");
    assert!(r[3].headers().is_empty());
    assert_eq!(r[3].value(), b"empty headers");

    // Copy into a reused buffer.
    let mut c2 = Consumer::reader(&topic).unwrap();
    let mut buf = RecordBuf::default();
    c2.poll_into(&mut buf).unwrap().unwrap();
    assert_eq!(buf.headers().to_headers(), h);
    assert_eq!((buf.key(), buf.value()), (Some(&b"key"[..]), &b"value"[..]));
    c2.poll_into(&mut buf).unwrap().unwrap();
    c2.poll_into(&mut buf).unwrap().unwrap();
    assert!(buf.headers().is_empty());
    assert_eq!((buf.key(), buf.value()), (None, &b"plain"[..]));

    // In place.
    let mut c3 = Consumer::reader(&topic).unwrap();
    let v = c3
        .poll_with(|r| {
            (
                r.headers().get_str("correlation-id").map(str::to_string),
                r.headers().len(),
                r.key.map(<[u8]>::to_vec),
                r.value.to_vec(),
            )
        })
        .unwrap()
        .unwrap();
    assert!(!v.lapped);
    assert_eq!(
        v.output,
        (
            Some("c-1".to_string()),
            3,
            Some(b"key".to_vec()),
            b"value".to_vec()
        )
    );

    // Headers count against the slot size.
    let big = Headers::new().with("x", vec![0u8; SLOT as usize]);
    assert!(matches!(
        p.send_with(None, &big, b""),
        Err(Error::MessageTooLarge { .. })
    ));
    let exact = Headers::new().with("x", vec![1u8; SLOT as usize - 8 - 6 - 1 - 3]);
    assert_eq!(exact.encoded_len(), SLOT as usize - 3);
    p.send_with(None, &exact, b"abc").unwrap();
    let r = c.poll(1).unwrap().records;
    assert_eq!(r[0].headers(), &exact);
    assert_eq!(r[0].value(), b"abc");
    c.commit().unwrap();

    drop((p, c, c2, c3, topic, mgr));
    guard.finish();
}

#[test]
fn headers_cross_processes() {
    if child_role().is_some() {
        return;
    }
    let guard = ShmGuard::new("hdrx");
    let mgr = guard.manager();
    let topic = mgr.create("t", config(Overflow::Backpressure)).unwrap();
    let mut c = Consumer::new(&topic, "g").unwrap();
    let mut child = spawn_child("send_headers", &[guard.ns(), "t"]);
    let lines = ChildLines::new(&mut child);
    assert_eq!(lines.expect("sent"), "5");
    wait_success(&mut child);
    let got = c.poll(10).unwrap().records;
    assert_eq!(got.len(), 5);
    for (i, r) in got.iter().enumerate() {
        assert_eq!(r.headers().get("i"), Some(&(i as u32).to_le_bytes()[..]));
        assert_eq!(
            r.headers().get_str("from"),
            Some(child.id().to_string().as_str())
        );
        assert_eq!(r.value(), format!("v{i}").as_bytes());
        assert_eq!(r.key(), Some(&b"k"[..]));
    }
    drop((c, topic, mgr));
    guard.finish();
}

/// The slot bytes of partition 0, offset `o`, of topic `t` in `ns`.
struct Slot {
    file: std::fs::File,
    at: u64,
}

impl Slot {
    fn open(ns: &str, o: u64) -> Slot {
        let path = common::shm_path(&format!("shmq.{ns}.t.p0"));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        Slot {
            file,
            at: PARTITION_HEADER as u64 + (o % 8) * stride(SLOT),
        }
    }
    fn read(&self, off: u64, len: usize) -> Vec<u8> {
        let mut b = vec![0; len];
        self.file.read_exact_at(&mut b, self.at + off).unwrap();
        b
    }
    fn write(&self, off: u64, b: &[u8]) {
        self.file.write_all_at(b, self.at + off).unwrap();
    }
}

#[test]
fn records_without_headers_keep_the_old_slot_bytes() {
    let guard = ShmGuard::new("hdrv2");
    let mgr = guard.manager();
    let topic = mgr.create("t", config(Overflow::Overwrite)).unwrap();
    let mut p = Producer::new(&topic).unwrap();
    p.send_keyed(b"kk", b"vvv").unwrap();
    p.send_with(Some(b"kk"), &Headers::new().with("n", "v"), b"vvv")
        .unwrap();
    let s0 = Slot::open(guard.ns(), 0);
    let w0 = s0.read(8, 8);
    assert_eq!(u32::from_le_bytes(w0[0..4].try_into().unwrap()), 3);
    assert_eq!(
        u32::from_le_bytes(w0[4..8].try_into().unwrap()),
        HAS_KEY | 2
    );
    assert_eq!(s0.read(SLOT_HEADER as u64, 5), b"kkvvv");
    let s1 = Slot::open(guard.ns(), 1);
    let w1 = s1.read(8, 8);
    assert_eq!(
        u32::from_le_bytes(w1[4..8].try_into().unwrap()),
        HAS_KEY | HAS_HEADERS | 2
    );
    let block = Headers::new().with("n", "v");
    let body = s1.read(SLOT_HEADER as u64, block.encoded_len() + 5);
    assert_eq!(&body[..block.encoded_len()], block.as_bytes());
    assert_eq!(&body[block.encoded_len()..], b"kkvvv");
    drop((p, topic, mgr));
    guard.finish();
}

/// Every way of scribbling a headers block (count, block length, entry
/// lengths, name bytes, the flag on a record without block) is a corrupt
/// record for every reader, the next record is read normally, and nothing
/// panics.
#[test]
fn scribbled_headers_are_corrupt_records_never_a_panic() {
    let guard = ShmGuard::new("hdrbad");
    let mgr = guard.manager();
    let topic = mgr.create("t", config(Overflow::Overwrite)).unwrap();
    let mut p = Producer::new(&topic).unwrap();
    let h = Headers::new().with("name", b"value").with("k2", b"v2");
    // (offset in body, bytes) for each scribble.
    let scribbles: Vec<(u64, Vec<u8>)> = vec![
        (4, vec![3, 0]),                    // count + 1
        (4, vec![1, 0]),                    // count - 1
        (4, vec![0xFF, 0xFF]),              // count huge
        (0, vec![0xFF, 0xFF, 0xFF, 0x7F]),  // block length huge
        (0, vec![7, 0, 0, 0]),              // block length below the prefix
        (0, vec![30, 0, 0, 0]),             // block length short of the entries
        (8, vec![0xFF, 0xFF]),              // first name length huge
        (10, vec![0xFF, 0xFF, 0xFF, 0xFF]), // first value length huge
        (10, vec![0, 0, 0, 0]),             // first value length too small
        (14, vec![0xC3, 0x28]),             // name not UTF-8
        (6, vec![1, 0]),                    // reserved word not zero
    ];
    for (round, (off, bytes)) in scribbles.iter().enumerate() {
        // Three records: the scribbled one between two good ones.
        let before = p.send_with(None, &h, b"before").unwrap().offset;
        let bad = p.send_with(None, &h, b"bad").unwrap().offset;
        p.send_with(None, &h, b"after").unwrap();
        Slot::open(guard.ns(), bad).write(SLOT_HEADER as u64 + off, bytes);

        let mut c = Consumer::reader(&topic).unwrap();
        c.seek(shmq::SeekPolicy::Offset(before)).unwrap();
        let got = c.poll(10).unwrap();
        let values: Vec<&[u8]> = got.records.iter().map(|r| r.value()).collect();
        assert_eq!(values, [&b"before"[..], b"after"], "round {round}");
        assert_eq!(got.corrupt, 1, "round {round}: counted as corrupt");

        let mut c = Consumer::reader(&topic).unwrap();
        c.seek(shmq::SeekPolicy::Offset(before)).unwrap();
        let mut buf = RecordBuf::default();
        let mut seen = Vec::new();
        while let Some(d) = c.poll_into(&mut buf).unwrap() {
            seen.push((d.offset, buf.value().to_vec()));
        }
        assert_eq!(seen.len(), 2, "round {round}: poll_into {seen:?}");
        assert_eq!(c.corrupt(), 1, "round {round}");

        let mut c = Consumer::reader(&topic).unwrap();
        c.seek(shmq::SeekPolicy::Offset(before)).unwrap();
        let mut n = 0;
        while let Some(v) = c
            .poll_with(|r| r.headers().iter().count() + r.value.len())
            .unwrap()
        {
            assert!(!v.lapped);
            n += 1;
        }
        assert_eq!(n, 2, "round {round}: poll_with");
        assert_eq!(c.corrupt(), 1, "round {round}");
    }

    // The flag set on a record that has no block: its key and value bytes
    // are read as a block length, checked, and refused.
    let plain = p.send(b"\x05\x00\x00\x00zzzz").unwrap().offset;
    let s = Slot::open(guard.ns(), plain);
    let kw = s.read(12, 4);
    let kw = u32::from_le_bytes(kw.try_into().unwrap()) | HAS_HEADERS;
    s.write(12, &kw.to_le_bytes());
    let mut c = Consumer::reader(&topic).unwrap();
    c.seek(shmq::SeekPolicy::Offset(plain)).unwrap();
    let got = c.poll(10).unwrap();
    assert!(got.records.is_empty());
    assert_eq!(got.corrupt, 1);

    // A view of arbitrary bytes never panics and never yields out of range.
    for seed in 0..2000u32 {
        let mut b: Vec<u8> = (0..40u32)
            .map(|i| (seed.wrapping_mul(2654435761).wrapping_add(i * 97) >> 7) as u8)
            .collect();
        b[0] = (seed % 48) as u8;
        let _ = HeaderView::parse(&b).map(|v| v.iter().count());
    }
    drop((p, c, topic, mgr));
    guard.finish();
}

#[test]
fn dead_letters_keep_their_headers() {
    let guard = ShmGuard::new("hdrdlq");
    let mgr = guard.manager();
    let topic = mgr.create("t", config(Overflow::Backpressure)).unwrap();
    let mut p = Producer::new(&topic).unwrap();
    let h = Headers::new()
        .with("shmq-compression", "lz4")
        .with("trace", "z");
    p.send_with(Some(b"k"), &h, b"payload").unwrap();
    let mut c = Consumer::new(&topic, "billing").unwrap();
    let record = c.poll(1).unwrap().records.remove(0);
    let mut dlq = shmq::DlqRouter::new(&mgr, &topic, "billing", 1).unwrap();
    dlq.route(&record, 1).unwrap();
    let dead = mgr.open(&format!("t{}", shmq::DLQ_SUFFIX)).unwrap();
    let mut r = Consumer::reader(&dead).unwrap();
    let letters = r.poll(10).unwrap().records;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].headers(), &h);
    assert_eq!(letters[0].value(), b"payload");
    let env = shmq::DeadLetter::from_record(&letters[0]).unwrap();
    assert_eq!((env.offset, env.key.as_deref()), (0, Some(&b"k"[..])));
    drop((p, c, dlq, r, dead, topic));
    assert!(mgr.delete(&format!("t{}", shmq::DLQ_SUFFIX)).unwrap());
    drop(mgr);
    guard.finish();
}

#[test]
fn batch_reads_carry_headers() {
    let guard = ShmGuard::new("hdrbatch");
    let mgr = guard.manager();
    let topic = mgr.create("t", config(Overflow::Backpressure)).unwrap();
    let mut p = Producer::new(&topic).unwrap();
    let h = Headers::new().with("id", "7").with("bin", [0u8, 255]);
    p.send_with(Some(b"k"), &h, b"with").unwrap();
    p.send(b"plain").unwrap();
    p.send_with(None, &h, b"no key").unwrap();
    let mut c = Consumer::new(&topic, "g").unwrap();
    let mut batch = shmq::RecordBatch::new();
    assert_eq!(c.poll_into_batch(&mut batch, 10).unwrap(), 3);
    let got: Vec<_> = batch
        .iter()
        .map(|r| {
            let hs: Vec<(String, Vec<u8>)> = r
                .headers()
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_vec()))
                .collect();
            (r.key.map(<[u8]>::to_vec), r.value.to_vec(), hs)
        })
        .collect();
    let hs = vec![
        ("id".to_string(), b"7".to_vec()),
        ("bin".to_string(), vec![0u8, 255]),
    ];
    assert_eq!(
        got,
        vec![
            (Some(b"k".to_vec()), b"with".to_vec(), hs.clone()),
            (None, b"plain".to_vec(), vec![]),
            (None, b"no key".to_vec(), hs),
        ]
    );
    drop((c, p, topic));
    drop(mgr);
    guard.finish();
}
