//! Scaffolding for the loom models of shmq's lock-free protocols.
//!
//! The models themselves live in `tests/*.rs`; this crate only provides what
//! they share:
//!
//! * [`HeapSlots`], a [`SlotMemory`] on the heap whose slot bodies are loom
//!   atomics written and read with `Relaxed`, so loom tracks every word of a
//!   record and a torn or stale copy is *observable*: the models write the
//!   same value into the timestamp and every body word, and [`decode`]
//!   rejects a record whose words disagree;
//! * [`Ring`], a partition header plus a heap ring, shared by the model's
//!   threads;
//! * [`check`], which runs one model with the preemption bound from
//!   `LOOM_MAX_PREEMPTIONS` (default [`DEFAULT_PREEMPTIONS`]), counts the
//!   interleavings it explored and prints one summary line that
//!   `.ci/loom.sh` collects.
//!
//! Everything is compiled only under `RUSTFLAGS="--cfg loom"`; without it the
//! crate is empty. See `loom-tests/README.md`.
#![cfg(loom)]

use std::sync::atomic::{AtomicUsize, Ordering as StdOrdering};
use std::time::Instant;

use loom::sync::atomic::{AtomicU64, Ordering};
use shmq::protocol::layout::{Geometry, PartitionHeader, OVERFLOW_OVERWRITE};
use shmq::protocol::ring::{RecordBuf, SlotMemory};

/// Body words per slot. With the timestamp a record is two independent
/// `Relaxed` atomics: enough to see a torn copy (the writers put the same
/// value in both), few enough to keep the models fast (every extra word
/// multiplies the values loom lets a racing copy observe).
pub const WORDS: usize = 1;

/// Payload bytes one model slot holds.
pub const SLOT_SIZE: u64 = (WORDS * 8) as u64;

/// Preemption bound used when `LOOM_MAX_PREEMPTIONS` is not set.
pub const DEFAULT_PREEMPTIONS: usize = 2;

/// The lease `now` the models' headers are created at.
pub const T0: u64 = 1_000;

/// The lease TTL of the models' headers.
pub const TTL: u64 = 1_000;

/// Marker that starts every model-violation panic message, so a mutant run
/// can tell "the model caught the bug" apart from any other failure.
pub const VIOLATION: &str = "MODEL VIOLATION";

/// One model slot: the sequence word and a body of loom atomics.
struct HeapSlot {
    seq: AtomicU64,
    timestamp: AtomicU64,
    words: [AtomicU64; WORDS],
}

/// A heap [`SlotMemory`] of 2–4 slots for the models.
///
/// Body words are stored and loaded with `Relaxed`: only the ring protocol's
/// own orderings (the seqlock `seq` word and its fences) may make a copy
/// consistent, which is exactly what the models check.
///
/// To keep the state space small a slot holds exactly one model record: a
/// value of [`SLOT_SIZE`] bytes and no key (see [`record`]); `write_body`
/// asserts that, so the record length needs no word of its own.
pub struct HeapSlots {
    geo: Geometry,
    slots: Vec<HeapSlot>,
}

impl HeapSlots {
    /// A ring of `slots` empty slots (`slots` a power of two, 2–4 for loom).
    pub fn new(slots: u64) -> HeapSlots {
        let geo = Geometry::new(slots, SLOT_SIZE).expect("model geometry");
        let slots = (0..slots)
            .map(|_| HeapSlot {
                seq: AtomicU64::new(0),
                timestamp: AtomicU64::new(0),
                words: std::array::from_fn(|_| AtomicU64::new(0)),
            })
            .collect();
        HeapSlots { geo, slots }
    }

    /// Store only the timestamp word of slot `index`: the first store of a
    /// copy, which is what a writer that dies mid-copy leaves behind.
    pub fn write_timestamp_only(&self, index: u64, timestamp_ns: u64) {
        self.slot(index)
            .timestamp
            .store(timestamp_ns, Ordering::Relaxed);
    }

    fn slot(&self, index: u64) -> &HeapSlot {
        &self.slots[usize::try_from(index).expect("slot index")]
    }
}

impl SlotMemory for HeapSlots {
    fn geometry(&self) -> Geometry {
        self.geo
    }

    fn seq(&self, index: u64) -> &AtomicU64 {
        &self.slot(index).seq
    }

    fn write_body(&self, index: u64, timestamp_ns: u64, key: Option<&[u8]>, value: &[u8]) {
        assert!(
            key.is_none() && value.len() as u64 == SLOT_SIZE,
            "the models write only `record(v)` values"
        );
        let slot = self.slot(index);
        slot.timestamp.store(timestamp_ns, Ordering::Relaxed);
        for (word, chunk) in slot.words.iter().zip(value.chunks_exact(8)) {
            let v = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
            word.store(v, Ordering::Relaxed);
        }
    }

    fn read_body(&self, index: u64, out: &mut RecordBuf) -> bool {
        let slot = self.slot(index);
        out.timestamp_ns = slot.timestamp.load(Ordering::Relaxed);
        out.key_len = None;
        out.data.clear();
        for word in &slot.words {
            out.data
                .extend_from_slice(&word.load(Ordering::Relaxed).to_le_bytes());
        }
        true
    }
}

/// A partition header and its heap ring, shared by a model's threads.
pub struct Ring {
    /// The partition header (cursor, waiters, writer lease, region lease).
    pub hdr: PartitionHeader,
    /// The slots.
    pub mem: HeapSlots,
}

impl Ring {
    /// An empty ring of `slots` slots whose lease expires at `T0 + TTL`.
    pub fn new(slots: u64) -> Ring {
        let mem = HeapSlots::new(slots);
        let hdr = PartitionHeader::new(mem.geometry(), 0, OVERFLOW_OVERWRITE, T0, TTL);
        Ring { hdr, mem }
    }

    /// The ring's geometry.
    pub fn mem_geometry(&self) -> Geometry {
        self.mem.geometry()
    }
}

/// The model record carrying `v`: `v` in every body word (and, by the
/// writers' convention, as the timestamp), so a torn copy shows.
pub fn record(v: u64) -> [u8; WORDS * 8] {
    let mut out = [0u8; WORDS * 8];
    for chunk in out.chunks_exact_mut(8) {
        chunk.copy_from_slice(&v.to_le_bytes());
    }
    out
}

/// The value of a record written by [`record`] with timestamp `v`.
///
/// # Panics
///
/// With a [`VIOLATION`] message if the copy is torn: its words or its
/// timestamp disagree.
pub fn decode(buf: &RecordBuf) -> u64 {
    assert!(
        buf.key_len.is_none() && buf.data.len() == WORDS * 8,
        "{VIOLATION}: torn record (length/key word): {buf:?}"
    );
    let first = u64::from_le_bytes(buf.data[..8].try_into().expect("8 bytes"));
    for chunk in buf.data.chunks_exact(8) {
        let w = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        assert_eq!(w, first, "{VIOLATION}: torn record (body words): {buf:?}");
    }
    assert_eq!(
        buf.timestamp_ns, first,
        "{VIOLATION}: torn record (timestamp vs body): {buf:?}"
    );
    first
}

/// The preemption bound: `LOOM_MAX_PREEMPTIONS`, else [`DEFAULT_PREEMPTIONS`].
pub fn preemption_bound() -> usize {
    std::env::var("LOOM_MAX_PREEMPTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_PREEMPTIONS)
}

/// Explore every interleaving of `model` (up to the preemption bound), then
/// print `loom-model <name>: preemptions=<b> interleavings=<n> secs=<t>`.
///
/// The count is taken by this wrapper (one per execution of the closure),
/// not from loom's logging.
pub fn check<F>(name: &str, model: F) -> usize
where
    F: Fn() + Sync + Send + 'static,
{
    let count = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    let bound = preemption_bound();
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(bound);
    builder.max_branches = builder.max_branches.max(100_000);
    let start = Instant::now();
    builder.check(move || {
        counter.fetch_add(1, StdOrdering::Relaxed);
        model();
    });
    let n = count.load(StdOrdering::Relaxed);
    let secs = start.elapsed().as_secs_f64();
    println!("loom-model {name}: preemptions={bound} interleavings={n} secs={secs:.2}");
    summary(&format!("model\t{name}\t{bound}\t{n}\t{secs:.2}"));
    n
}

/// Append one tab-separated line to the file named by `LOOM_SUMMARY`, if set
/// (`.ci/loom.sh` sums these up).
fn summary(line: &str) {
    use std::io::Write;
    let Some(path) = std::env::var_os("LOOM_SUMMARY") else {
        return;
    };
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("LOOM_SUMMARY {path:?}: {e}"));
    writeln!(file, "{line}").unwrap_or_else(|e| panic!("LOOM_SUMMARY {path:?}: {e}"));
}

/// Run `model` under [`check`] and return the panic message it is expected
/// to end with, for the mutant tests: panics (failing the test) if the model
/// passed. Prints `loom-mutant <name>: caught after <n> interleavings`.
pub fn expect_violation<F>(name: &str, model: F) -> String
where
    F: Fn() + Sync + Send + 'static,
{
    let count = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    let bound = preemption_bound();
    let start = Instant::now();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut builder = loom::model::Builder::new();
        builder.preemption_bound = Some(bound);
        builder.check(move || {
            counter.fetch_add(1, StdOrdering::Relaxed);
            model();
        });
    }));
    let n = count.load(StdOrdering::Relaxed);
    let payload = match result {
        Ok(()) => panic!(
            "mutant {name} survived: the model passed all {n} interleavings \
             (preemptions={bound})"
        ),
        Err(p) => p,
    };
    let msg = payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default();
    let secs = start.elapsed().as_secs_f64();
    let first = msg.lines().next().unwrap_or("");
    println!(
        "loom-mutant {name}: caught after {n} interleavings (preemptions={bound}) \
         secs={secs:.2}: {first}"
    );
    summary(&format!("mutant\t{name}\t{bound}\t{n}\t{secs:.2}\t{first}"));
    msg
}

/// Give the partition's writer lease to `word` (the model's only writer owns
/// it: a plain store, as a free lease's claim would leave it) and resume a
/// writer with it. A writer checks its lease word whenever it reserves
/// offsets (`Writer::reserve`), so a model writer must really own the lease.
pub fn owned_writer(r: &Ring, word: u64) -> shmq::protocol::ring::Writer {
    r.hdr.writer.store(word, Ordering::Release);
    shmq::protocol::ring::Writer::resume(&r.hdr, &r.mem, word, loom::thread::yield_now)
}
