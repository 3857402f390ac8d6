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
