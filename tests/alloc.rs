//! No allocation per message: a counting global allocator proves that the hot
//! paths — `send`, `send_batch`, `poll_into`, `poll_with` and `loan`/`commit`
//! — allocate nothing once warmed up (buffers grown, topic open).
//!
//! The counter is per thread (a `const`-initialised thread-local, which
//! itself never allocates), so the lease-renewal thread or the test harness
//! allocating in the background cannot disturb the count. A control test
//! checks that the counter does see allocations (`poll`, which returns owned
//! records), so a broken counter cannot make the other tests pass.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

mod common;

use common::ShmGuard;
use shmq::{Consumer, Overflow, Producer, RecordBuf, SeekPolicy, TopicConfig, TopicManager};

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded unchanged to the system allocator; the
// thread-local counter is a `const`-initialised `Cell` without destructor, so
// touching it never allocates or re-enters the allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: forwarded with the caller's own guarantees.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: forwarded with the caller's own guarantees.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: forwarded with the caller's own guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's own guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made by this thread while running `f`.
fn allocations(f: impl FnOnce()) -> u64 {
    let before = ALLOCS.with(Cell::get);
    f();
    ALLOCS.with(Cell::get) - before
}

/// Messages per measured loop: enough to lap the ring many times over.
const N: u64 = 10_000;

struct Fixture {
    // Field order matters: the manager (and its token file) drops before
    // the guard cleans the namespace.
    mgr: Option<TopicManager>,
    guard: ShmGuard,
}

impl Fixture {
    fn new(tag: &str) -> Fixture {
        let guard = ShmGuard::new(&format!("a{tag}"));
        Fixture {
            mgr: Some(guard.manager()),
            guard,
        }
    }

    fn topic(&self, overflow: Overflow) -> shmq::Topic {
        let config = TopicConfig::default()
            .partitions(2)
            .slots(64)
            .slot_size(256)
            .overflow(overflow);
        self.mgr.as_ref().unwrap().create("hot", config).unwrap()
    }

    fn finish(mut self) {
        let mgr = self.mgr.take().unwrap();
        assert!(mgr.delete("hot").unwrap());
        drop(mgr);
        self.guard.finish();
    }
}

#[test]
fn the_counter_sees_allocations() {
    let fx = Fixture::new("ctl");
    let topic = fx.topic(Overflow::Overwrite);
    let mut p = Producer::new(&topic).unwrap();
    let mut c = Consumer::new(&topic, "g").unwrap();
    c.seek(SeekPolicy::Latest).unwrap();
    for i in 0..10u64 {
        p.send(&i.to_le_bytes()).unwrap();
    }
    // `poll` returns owned records: at least one Vec per record.
    let n = allocations(|| {
        let got = c.poll(100).unwrap();
        assert_eq!(got.records.len(), 10);
    });
    assert!(n >= 10, "counting allocator saw only {n} allocations");
    drop((p, c, topic));
    fx.finish();
}

#[test]
fn send_and_poll_into_do_not_allocate() {
    let fx = Fixture::new("spi");
    let topic = fx.topic(Overflow::Overwrite);
    let mut p = Producer::new(&topic).unwrap();
    let mut c = Consumer::new(&topic, "g").unwrap();
    c.seek(SeekPolicy::Latest).unwrap();
    let mut buf = RecordBuf::default();
    let msg = [7u8; 200];
    // Warm up: grow the buffer to the largest record.
    p.send(&msg).unwrap();
    while c.poll_into(&mut buf).unwrap().is_some() {}

    let mut received = 0u64;
    let n = allocations(|| {
        for i in 0..N {
            let len = 1 + (i as usize % msg.len());
            p.send(&msg[..len]).unwrap();
            let d = c.poll_into(&mut buf).unwrap().expect("record just sent");
            assert_eq!(buf.value().len(), len, "offset {}", d.offset);
            received += 1;
        }
    });
    assert_eq!(received, N);
    assert_eq!(n, 0, "{n} allocations in {N} send + poll_into");
    drop((p, c, topic));
    fx.finish();
}

#[test]
fn send_batch_does_not_allocate() {
    let fx = Fixture::new("sb");
    let topic = fx.topic(Overflow::Overwrite);
    let mut p = Producer::new(&topic).unwrap();
    let mut c = Consumer::new(&topic, "g").unwrap();
    c.seek(SeekPolicy::Latest).unwrap();
    let mut buf = RecordBuf::default();
    let a = [1u8; 64];
    let batch: [&[u8]; 16] = [&a; 16];
    p.send_batch(&batch).unwrap();
    while c.poll_into(&mut buf).unwrap().is_some() {}

    let mut received = 0u64;
    let n = allocations(|| {
        for _ in 0..N / 16 {
            let sent = p.send_batch(&batch).unwrap();
            assert_eq!(sent.count, 16);
            while c.poll_into(&mut buf).unwrap().is_some() {
                received += 1;
            }
        }
    });
    assert_eq!(received, N / 16 * 16);
    assert_eq!(n, 0, "{n} allocations in {} send_batch", N / 16);
    drop((p, c, topic));
    fx.finish();
}

#[test]
fn poll_with_and_loan_do_not_allocate() {
    for overflow in [Overflow::Overwrite, Overflow::Backpressure] {
        let fx = Fixture::new(if overflow == Overflow::Overwrite {
            "zo"
        } else {
            "zb"
        });
        let topic = fx.topic(overflow);
        let mut p = Producer::new(&topic).unwrap();
        let mut c = Consumer::new(&topic, "g").unwrap();
        c.seek(SeekPolicy::Latest).unwrap();

        let mut sum = 0u64;
        let n = allocations(|| {
            for i in 0..N {
                let len = 8 + (i as usize % 200);
                let mut loan = p.loan(len).unwrap();
                loan[..8].copy_from_slice(&i.to_le_bytes());
                loan[8..].fill(i as u8);
                loan.commit().unwrap();
                let v = c
                    .poll_with(|r| {
                        assert_eq!(r.value.len(), len);
                        u64::from_le_bytes(r.value[..8].try_into().unwrap())
                    })
                    .unwrap()
                    .expect("record just committed");
                assert!(!v.lapped);
                assert_eq!(v.output, i);
                sum += v.output;
                if overflow == Overflow::Backpressure && i % 32 == 31 {
                    c.commit().unwrap();
                }
            }
        });
        assert_eq!(sum, N * (N - 1) / 2);
        assert_eq!(
            n, 0,
            "{overflow:?}: {n} allocations in {N} loan + poll_with"
        );
        drop((p, c, topic));
        fx.finish();
    }
}

/// The async path (feature `tokio`): `AsyncProducer::send` and
/// `AsyncConsumer::recv_into`, with the consumer waiting (armed in its
/// topic's hub, woken through the futex) before every record, allocate
/// nothing once warm. Producer and consumer are two futures of one
/// `join!` on a current-thread runtime, so every allocation of the
/// runtime's thread is counted; the hub and timer threads are the library's
/// own and allocate nothing per message either (they reuse their slots).
#[cfg(feature = "tokio")]
#[test]
fn async_send_and_recv_into_do_not_allocate() {
    use shmq::{AsyncConsumer, AsyncProducer};
    use std::cell::Cell;

    let fx = Fixture::new("as");
    let topic = fx.topic(Overflow::Backpressure);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut p = AsyncProducer::new(Producer::new(&topic).unwrap()).unwrap();
    let mut c = Consumer::new(&topic, "g").unwrap();
    c.seek(SeekPolicy::Latest).unwrap();
    let mut c = AsyncConsumer::new(c).unwrap();
    let mut buf = RecordBuf::default();
    let msg = [9u8; 200];

    // One round trip per record: the producer sends only once the consumer
    // has the previous record, so the consumer is always waiting (armed)
    // when a record is published.
    let mut round_trips = |n: u64, buf: &mut RecordBuf| {
        let received = Cell::new(0u64);
        rt.block_on(async {
            let consume = async {
                for i in 0..n {
                    let d = c.recv_into(buf).await.unwrap();
                    assert_eq!(
                        buf.value().len(),
                        1 + (i as usize % msg.len()),
                        "offset {}",
                        d.offset
                    );
                    received.set(i + 1);
                    if i % 16 == 15 {
                        c.get_mut().commit().unwrap();
                    }
                }
            };
            let produce = async {
                for i in 0..n {
                    p.send(&msg[..1 + (i as usize % msg.len())]).await.unwrap();
                    while received.get() <= i {
                        tokio::task::yield_now().await;
                    }
                }
            };
            tokio::join!(consume, produce);
        });
        received.get()
    };
    // Warm up: threads started, slots and buffers grown.
    assert_eq!(round_trips(200, &mut buf), 200);

    // What one `block_on` with a single round trip costs (the runtime's own
    // bookkeeping per call, not per message).
    let base = allocations(|| assert_eq!(round_trips(1, &mut buf), 1));
    assert!(base <= 2, "one round trip made {base} allocations");
    let before = shmq::wake_stats();
    let mut got = 0;
    let n = allocations(|| got = round_trips(N, &mut buf)) - base;
    let wakes = shmq::wake_stats().calls - before.calls;
    assert_eq!(got, N);
    // The consumer really waited: most sends found it announced (some
    // records may be seen by its re-check before it sleeps).
    assert!(
        wakes >= N / 2,
        "only {wakes} of {N} sends woke the async consumer"
    );
    assert_eq!(
        n, 0,
        "{n} allocations in {N} async send + recv_into round trips (beyond the {base} of one block_on with one)"
    );
    drop((p, c, topic));
    fx.finish();
}

/// Typed messages (feature `serde`): once warm, a typed send + receive
/// makes exactly the allocations the codec itself makes for the value
/// (here one `String` per decode), none of its own, with and without
/// compression and with headers.
#[cfg(all(feature = "json", feature = "postcard", feature = "msgpack"))]
mod typed {
    use super::*;
    use shmq::typed::{Codec, Compression, Json, MsgPack, Postcard, TypedConsumer, TypedProducer};

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Tick {
        seq: u64,
        symbol: String,
        prices: [u16; 8],
    }

    fn tick(seq: u64) -> Tick {
        Tick {
            seq,
            symbol: "ACME".repeat(1 + seq as usize % 4),
            prices: [seq as u16; 8],
        }
    }

    /// Allocations per message of (codec alone, typed path) for codec `C`.
    fn per_message<C: Codec>(tag: &str, compression: Compression) {
        let fx = Fixture::new(tag);
        let topic = fx.topic(Overflow::Overwrite);
        let mut tx = TypedProducer::<Tick, C>::new(Producer::new(&topic).unwrap())
            .with_compression(compression, 0);
        let mut rx = TypedConsumer::<Tick, C>::new(Consumer::reader(&topic).unwrap());
        rx.consumer().seek(SeekPolicy::Latest).unwrap();
        let headers = shmq::Headers::new().with("source", "alloc-test");
        // Warm up: every buffer grows to the largest message (more digits
        // than any measured one).
        for i in 0..64 {
            let t = tick(1_000_000_000 + i);
            tx.send_with(None, &headers, &t).unwrap();
            assert_eq!(rx.poll().unwrap().unwrap().value, t);
        }
        // The codec's own allocations for the same values.
        let mut out = Vec::with_capacity(4096);
        let codec_only = allocations(|| {
            for i in 0..N {
                out.clear();
                C::encode(&tick(i), &mut out).unwrap();
                let back: Tick = C::decode(&out).unwrap();
                assert_eq!(back.seq, i);
            }
        });
        let typed = allocations(|| {
            for i in 0..N {
                tx.send_with(None, &headers, &tick(i)).unwrap();
                let m = rx.poll().unwrap().expect("just sent");
                assert_eq!(m.value.seq, i);
                assert_eq!(m.headers.get_str("source"), Some("alloc-test"));
            }
        });
        assert!(
            codec_only >= N,
            "the codec allocates the String: {codec_only}"
        );
        // lz4_flex allocates its hash table once per compressed block: the
        // compressor's own allocation, one per message, none of ours.
        let compressor = if compression == Compression::None {
            0
        } else {
            N
        };
        assert_eq!(
            typed,
            codec_only + compressor,
            "{tag}: typed path {typed} allocations, the codec alone {codec_only} for {N} messages"
        );
        drop((tx, rx, topic));
        fx.finish();
    }

    #[test]
    fn typed_path_allocations_are_the_codecs_own() {
        per_message::<Json>("tj", Compression::None);
        per_message::<Postcard>("tp", Compression::None);
        per_message::<MsgPack>("tm", Compression::None);
        #[cfg(feature = "lz4")]
        per_message::<Postcard>("tl", Compression::Lz4);
    }
}

#[test]
fn poll_into_batch_does_not_allocate() {
    let fx = Fixture::new("pb");
    let topic = fx.topic(Overflow::Overwrite);
    let mut p = Producer::new(&topic).unwrap();
    let mut c = Consumer::new(&topic, "g").unwrap();
    c.seek(SeekPolicy::Latest).unwrap();
    let mut batch = shmq::RecordBatch::new();
    let a = [1u8; 64];
    let msgs: [&[u8]; 16] = [&a; 16];
    // Warm up: the batch's buffers grow to a full batch once.
    p.send_batch(&msgs).unwrap();
    assert_eq!(c.poll_into_batch(&mut batch, 16).unwrap(), 16);

    let mut received = 0u64;
    let n = allocations(|| {
        for _ in 0..N / 16 {
            p.send_batch(&msgs).unwrap();
            received += c.poll_into_batch(&mut batch, 16).unwrap() as u64;
            assert!(batch.iter().all(|r| r.value.len() == 64));
        }
    });
    assert_eq!(received, N / 16 * 16);
    assert_eq!(n, 0, "{n} allocations in {} poll_into_batch", N / 16);
    drop((p, c, topic));
    fx.finish();
}
