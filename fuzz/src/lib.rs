//! Fuzz harnesses for everything shmq reads from shared memory or decodes:
//!
//! * [`region`]: raw bytes as a partition or meta region file: attach
//!   (magic, version, kind, size), geometry validation, the group table.
//! * [`topic`]: a real topic's regions (a snapshot taken once per process,
//!   with records, a lapped ring, a keyed record, a record with headers, a
//!   consumer group with a
//!   member and commits), damaged by the input's word writes and
//!   truncations, then opened and used the way every process uses a topic:
//!   `open`, `stats`, polls (copying, zero-copy, filtered) from every position, a
//!   group member joining and committing, a competing consumer, a producer
//!   taking the partitions over and sending. This covers the slot reads, the
//!   writer's resume over a damaged ring and the group protocol's reads.
//! * [`dlq_envelope`]: the dead-letter envelope decoder, with a round trip.
//! * [`headers`]: the record-headers block decoder, with a round trip.
//!
//! Each returns normally on any input; a panic (including an arithmetic
//! overflow: the fuzz binaries are built with debug assertions), an
//! out-of-bounds access or a hang is a finding. The same functions replay the
//! seed corpus in `tests/corpus.rs` as an ordinary test.
//!
//! Regions live in `/dev/shm` under the namespace `fz<pid>` (and `fzs<pid>`
//! while the snapshot is made); [`cleanup`] removes them.

use std::sync::OnceLock;
use std::time::Duration;

use shmq::protocol::layout::{self, KIND_META, KIND_PARTITION, LAYOUT_VERSION, MAGIC};
use shmq::protocol::region::Region;
use shmq::{
    CompetingConsumer, Consumer, DeadLetter, GroupConsumer, GroupOptions, MemOffsetStore, Overflow,
    Producer, RecordBuf, RenewalPolicy, SeekPolicy, Topic, TopicConfig, TopicManager,
};

/// Topic name used by the harnesses.
const TOPIC: &str = "t";
/// Most word writes applied from one input.
const MAX_PATCHES: usize = 64;

/// The harnesses share this process's region names: one at a time (tests
/// run in threads).
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn ns() -> String {
    format!("fz{}", std::process::id())
}

fn shm_path(name: &str) -> String {
    format!("/dev/shm/{name}")
}

/// Remove every region and token file of this process's fuzz namespaces.
pub fn cleanup() {
    let _one = serial();
    for prefix in [
        shmq::protocol::name::namespace_prefix(&ns()),
        shmq::protocol::name::namespace_prefix(&format!("fzs{}", std::process::id())),
    ] {
        for f in shmq::protocol::os::list_shm(&prefix).unwrap_or_default() {
            let _ = std::fs::remove_file(shm_path(&f));
        }
    }
}

fn word(bytes: &[u8], at: usize) -> u64 {
    bytes
        .get(at..at + 8)
        .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
}

fn set_word(bytes: &mut [u8], at: usize, v: u64) {
    if let Some(b) = bytes.get_mut(at..at + 8) {
        b.copy_from_slice(&v.to_le_bytes());
    }
}

/// `attach` waits (up to two seconds) for a *young* region that is still
/// shorter than a header or has no magic yet: its creator may be writing it.
/// That is a wait for a creator, not a parse; the harnesses keep inputs out
/// of it so a fuzz run is not spent sleeping.
fn not_half_made(bytes: &mut Vec<u8>, min: usize) {
    if bytes.len() < min {
        bytes.resize(min, 0);
    }
    if word(bytes, 0) == 0 {
        set_word(bytes, 0, MAGIC);
    }
}

// ------------------------------------------------------------------ region

/// Raw bytes as one region file. `data[0]`: bit 0 = meta (else partition),
/// bit 1 = write a valid identity (magic, version, kind) over the bytes so
/// the geometry checks are reached at once; the rest is the file.
pub fn region(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let _one = serial();
    let meta = flags & 1 != 0;
    let (kind, min) = if meta {
        (KIND_META, layout::META_HEADER)
    } else {
        (KIND_PARTITION, layout::PARTITION_HEADER)
    };
    let mut bytes = rest.to_vec();
    not_half_made(&mut bytes, min);
    if flags & 2 != 0 {
        set_word(&mut bytes, 0, MAGIC);
        bytes[8..12].copy_from_slice(&LAYOUT_VERSION.to_le_bytes());
        bytes[12..16].copy_from_slice(&kind.to_le_bytes());
    }
    let name = if meta {
        shmq::protocol::name::meta_region(&ns(), "r")
    } else {
        shmq::protocol::name::partition_region(&ns(), "r", 0)
    };
    if std::fs::write(shm_path(&name), &bytes).is_err() {
        return;
    }
    if let Ok(Some(r)) = Region::attach(&name, kind) {
        if meta {
            if let Ok(geo) = r.meta_geometry() {
                let h = r.meta_header();
                let _ = (h.slots, h.slot_size, h.overflow, h.dead_group_ms);
                for g in 0..geo.group_cap {
                    let v = r.group(geo, g);
                    let _ = v.header.state.load(std::sync::atomic::Ordering::Relaxed);
                    for m in v.members {
                        let id = m.id.load(std::sync::atomic::Ordering::Relaxed);
                        let _ = (
                            shmq::protocol::group_protocol::token_of(id),
                            shmq::protocol::group_protocol::generation_of(id),
                        );
                    }
                    for p in v.partitions {
                        let w = p.owner.load(std::sync::atomic::Ordering::Relaxed);
                        let _ = shmq::protocol::group_protocol::decode_owner(w);
                        let _ = shmq::protocol::group_protocol::committed_floor(p);
                    }
                }
            }
        } else if let Ok(geo) = r.partition_geometry() {
            let _ = shmq::protocol::ring::latest(r.partition_header());
            let _ = shmq::protocol::ring::earliest(r.partition_header(), geo);
        }
    }
    let _ = std::fs::remove_file(shm_path(&name));
}

// ------------------------------------------------------------------- topic

/// A topic's region files: meta first, then the partitions.
struct Image {
    files: Vec<Vec<u8>>,
}

/// Build a real topic in a scratch namespace, use it, and copy its files.
fn snapshot(overflow: Overflow) -> Option<Image> {
    let sns = format!("fzs{}", std::process::id());
    let mgr = TopicManager::with_namespace(&sns)
        .ok()?
        .with_renewal(RenewalPolicy::Manual);
    let _ = mgr.delete(TOPIC);
    let config = TopicConfig {
        partitions: 2,
        slots: 8,
        slot_size: 48,
        overflow,
        ..TopicConfig::default()
    };
    let topic = mgr.create(TOPIC, config).ok()?;
    let files = (|| {
        let mut group = GroupConsumer::join(&topic, "g", GroupOptions::default()).ok()?;
        let mut producer = Producer::new(&topic).ok()?;
        // Partition 0 laps its ring of 8 (overwrite); partition 1 holds a
        // keyed record. Backpressure topics stop where the group holds them.
        for i in 0..13u32 {
            if producer
                .send_to(0, None, format!("value {i}").as_bytes())
                .is_err()
            {
                break;
            }
            if i % 4 == 0 {
                let _ = group.poll(3);
                let _ = group.commit();
            }
        }
        let _ = producer.send_to(1, Some(b"key"), b"keyed value");
        // A record with a headers block, for patches to damage.
        let headers = shmq::Headers::new().with("h", "v").with("n", [0u8, 1]);
        let _ = producer.send_with_to(1, Some(b"k2"), &headers, b"with headers");
        let _ = group.poll(2);
        let _ = group.commit();
        let mut files =
            vec![std::fs::read(shm_path(&shmq::protocol::name::meta_region(&sns, TOPIC))).ok()?];
        for p in 0..2 {
            files.push(
                std::fs::read(shm_path(&shmq::protocol::name::partition_region(
                    &sns, TOPIC, p,
                )))
                .ok()?,
            );
        }
        drop(producer);
        drop(group);
        Some(files)
    })();
    drop(topic);
    let _ = mgr.delete(TOPIC);
    drop(mgr);
    Some(Image { files: files? })
}

fn images() -> &'static [Option<Image>; 2] {
    static IMAGES: OnceLock<[Option<Image>; 2]> = OnceLock::new();
    IMAGES.get_or_init(|| {
        [
            snapshot(Overflow::Overwrite),
            snapshot(Overflow::Backpressure),
        ]
    })
}

/// The region files (meta, then partitions) of the snapshot topic the
/// [`topic`] harness damages: overwrite or backpressure. For the seed
/// corpus.
pub fn snapshot_files(backpressure: bool) -> Option<Vec<Vec<u8>>> {
    images()[usize::from(backpressure)]
        .as_ref()
        .map(|i| i.files.clone())
}

fn manager() -> Option<&'static TopicManager> {
    static MGR: OnceLock<Option<TopicManager>> = OnceLock::new();
    MGR.get_or_init(|| {
        TopicManager::with_namespace(&ns())
            .ok()
            .map(|m| m.with_renewal(RenewalPolicy::Manual))
    })
    .as_ref()
}

/// A real topic damaged by the input, then used.
///
/// `data[0]`: bit 0 = backpressure snapshot (else overwrite), bit 1 = skip
/// the group member, bit 2 = skip the producer. Then up to 64 patches of 11
/// bytes `[r, w_lo, w_hi, v0..v7]`: region `r & 3` (0 meta, 1 and 2 the
/// partitions, 3 ignored), word `w` (byte `8 w`, wrapped to the file), value
/// `v` written (`r & 0x40`: added as a small signed delta instead, to reach
/// neighbouring sequence numbers and offsets; `r & 0x80`: the file is
/// resized to `8 w` bytes instead).
pub fn topic(data: &[u8]) {
    let Some((&flags, patches)) = data.split_first() else {
        return;
    };
    let Some(image) = &images()[usize::from(flags & 1)] else {
        return;
    };
    let Some(mgr) = manager() else { return };
    let _one = serial();
    let mut files = image.files.clone();
    for p in patches.chunks_exact(11).take(MAX_PATCHES) {
        let r = usize::from(p[0] & 3);
        let Some(file) = files.get_mut(r) else {
            continue;
        };
        let w = usize::from(u16::from_le_bytes([p[1], p[2]])) * 8;
        let v = u64::from_le_bytes(p[3..11].try_into().unwrap_or([0; 8]));
        if p[0] & 0x80 != 0 {
            file.resize(w, 0);
            continue;
        }
        if file.len() < 8 {
            continue;
        }
        let at = w % (file.len() - 7) / 8 * 8;
        let new = if p[0] & 0x40 != 0 {
            word(file, at).wrapping_add(v as i8 as u64)
        } else {
            v
        };
        set_word(file, at, new);
    }
    let ns = ns();
    let mut names = vec![shmq::protocol::name::meta_region(&ns, TOPIC)];
    names.extend((0..2).map(|p| shmq::protocol::name::partition_region(&ns, TOPIC, p)));
    for (i, (name, bytes)) in names.iter().zip(files.iter_mut()).enumerate() {
        not_half_made(
            bytes,
            if i == 0 {
                layout::META_HEADER
            } else {
                layout::PARTITION_HEADER
            },
        );
        if std::fs::write(shm_path(name), &bytes).is_err() {
            return;
        }
    }
    if let Ok(topic) = mgr.open(TOPIC) {
        use_topic(&topic, flags);
    }
    for name in &names {
        let _ = std::fs::remove_file(shm_path(name));
    }
}

fn use_topic(topic: &Topic, flags: u8) {
    let _ = topic.stats();
    let _ = topic.lease_expiry_ns();
    let _ = topic.is_reclaimed();
    for p in 0..topic.partitions() {
        let _ = topic.write_offset(p);
    }
    if let Ok(mut c) = Consumer::with_store(topic, "c", Box::new(MemOffsetStore::new())) {
        for policy in [
            SeekPolicy::Earliest,
            SeekPolicy::Latest,
            SeekPolicy::Committed,
            SeekPolicy::Offset(3),
            SeekPolicy::Offset(u64::MAX),
        ] {
            if c.seek(policy).is_ok() {
                for _ in 0..3 {
                    let _ = c.poll(8);
                }
            }
        }
        let _ = c.seek(SeekPolicy::Earliest);
        let mut buf = RecordBuf::default();
        for _ in 0..12 {
            let _ = c.poll_into(&mut buf);
        }
        let _ = c.seek(SeekPolicy::Earliest);
        for _ in 0..12 {
            let _ = c.poll_with(|r| {
                r.value.len() + r.key.map_or(0, <[u8]>::len) + r.headers.iter().count()
            });
        }
        let _ = c.seek(SeekPolicy::Earliest);
        let _ = c.poll_filtered(8, |r| r.headers.get("h").is_some());
        let _ = (c.missed(), c.corrupt(), c.lag(0), c.lag(1));
    }
    let opts = GroupOptions::default();
    if flags & 2 == 0 {
        if let Ok(mut g) = GroupConsumer::join(topic, "g", opts.clone()) {
            let _ = g.poll(8);
            let _ = g.commit();
            let _ = g.rebalance();
        }
        if let Ok(mut c) = CompetingConsumer::join(topic, "w", 0, opts) {
            let _ = c.poll(4);
        }
    }
    if flags & 4 == 0 {
        if let Ok(p) = Producer::new(topic) {
            let mut p = p.with_send_timeout(Some(Duration::ZERO));
            for i in 0..3u8 {
                let _ = p.try_send(&[i; 5]);
            }
            let _ = p.send_batch(&[b"a".as_slice(), b"b"]);
        }
    }
}

// ------------------------------------------------------------ dlq envelope

/// The DLQ envelope decoder. `data[0]`: bit 0 = the record has a key; then
/// `data[1]` = key length, then key bytes, then value bytes. A decoded
/// envelope must encode back to a key that decodes to the same envelope.
pub fn dlq_envelope(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let (klen, rest) = match rest.split_first() {
        Some((&k, r)) => (usize::from(k), r),
        None => (0, rest),
    };
    let klen = klen.min(rest.len());
    let (key, value) = rest.split_at(klen);
    let key = (flags & 1 != 0).then_some(key);
    if let Ok(dl) = DeadLetter::decode(key, value) {
        let again = DeadLetter::decode(Some(&dl.encode_key()), &dl.value)
            .expect("a decoded envelope re-encodes to a valid one");
        assert_eq!(again, dl, "envelope round trip");
    }
}

// ------------------------------------------------------------ record headers

/// The record-headers decoder (`shmq::HeaderView::parse`, the check every
/// reader applies to a slot's headers block). A block it accepts must
/// iterate to exactly its count and re-encode (through `shmq::Headers`) to
/// the same bytes; anything else must be refused without a panic.
pub fn headers(data: &[u8]) {
    let Some(view) = shmq::HeaderView::parse(data) else {
        return;
    };
    let mut again = shmq::Headers::new();
    let mut n = 0;
    for (name, value) in view.iter() {
        again
            .push(name, value)
            .expect("a decoded header re-encodes");
        n += 1;
    }
    assert_eq!(n, view.len(), "iteration yields every counted header");
    assert_eq!(again.as_bytes(), data, "headers block round trip");
}
