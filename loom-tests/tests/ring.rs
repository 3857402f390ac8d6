//! The partition ring under loom: one writer wrapping a 2-slot ring while
//! readers copy records out, and the proof that weakened orderings are caught.
//!
//! Every read a reader makes is checked on the spot (untorn, and the value the
//! writer published at that offset); at the end each reader's record list is
//! checked for order and conservation (`read + missed = published past its
//! start`).
#![cfg(loom)]

use loom::sync::Arc;
use loom::thread;
use loom_tests::{check, decode, record, Ring, VIOLATION};
use shmq::protocol::ring::{self, ReadOutcome, RecordBuf, Writer};

/// The value the writer publishes at `offset`: distinct per offset and never
/// 0, so neither an unwritten slot nor another offset's record passes for it.
fn value(offset: u64) -> u64 {
    100 + offset
}

/// How a reader waits when the next offset is not written yet.
#[derive(Clone, Copy)]
enum Until {
    /// Spin (yielding) until the final cursor is caught.
    Final,
    /// Stop at the first `NotYet`, like a non-blocking poll.
    NotYet,
}

/// What one reader saw.
struct Seen {
    start: u64,
    /// Where it stopped (the final cursor, or the offset that was `NotYet`).
    end: u64,
    read: Vec<u64>,
    missed: u64,
}

/// Read from `start` until `total` (or the first `NotYet`), asserting that
/// each record is untorn and is the writer's value for its offset.
fn reader(r: &Ring, start: u64, total: u64, until: Until) -> Seen {
    let mut buf = RecordBuf::default();
    let mut seen = Seen {
        start,
        end: total,
        read: Vec::new(),
        missed: 0,
    };
    let mut offset = start;
    while offset < total {
        match ring::read(&r.hdr, &r.mem, offset, &mut buf) {
            ReadOutcome::Record => {
                let v = decode(&buf);
                assert_eq!(
                    v,
                    value(offset),
                    "{VIOLATION}: offset {offset} returned a value the writer did not publish there"
                );
                seen.read.push(v);
                offset += 1;
            }
            ReadOutcome::NotYet => match until {
                Until::Final => thread::yield_now(),
                Until::NotYet => {
                    seen.end = offset;
                    break;
                }
            },
            ReadOutcome::Lapped { missed, resume } => {
                assert!(
                    resume > offset && missed == resume - offset && resume <= total,
                    "{VIOLATION}: bad lap at {offset}: missed {missed}, resume {resume}"
                );
                seen.missed += missed;
                offset = resume;
            }
            ReadOutcome::Corrupt => panic!("{VIOLATION}: corrupt record at {offset}"),
        }
    }
    seen
}

/// One writer publishes offsets `0..total` into a 2-slot ring, committing
/// after each record like `Producer::send`; offsets `0..prefix` are published
/// before the readers start (this keeps the state space small while the
/// concurrent part still overwrites slots). Reader A reads from 0 until the
/// final cursor; with `second`, reader B starts at `ring::earliest` and polls
/// until the first `NotYet`.
fn ring_model(total: u64, prefix: u64, second: bool) -> impl Fn() + Sync + Send + 'static {
    move || {
        let r = Arc::new(Ring::new(2));
        let mut w = loom_tests::owned_writer(&r, 1);
        let publish = |w: &mut Writer, o: u64| {
            let v = value(o);
            let got = w.write_slot(&r.hdr, &r.mem, v, None, &record(v));
            assert_eq!(got, Ok(o), "{VIOLATION}: the only writer was refused");
            w.commit(&r.hdr);
        };
        for o in 0..prefix {
            publish(&mut w, o);
        }
        let a = {
            let r = r.clone();
            thread::spawn(move || reader(&r, 0, total, Until::Final))
        };
        let b = second.then(|| {
            let r = r.clone();
            thread::spawn(move || {
                let start = ring::earliest(&r.hdr, r.mem_geometry());
                reader(&r, start, total, Until::NotYet)
            })
        });
        for o in prefix..total {
            publish(&mut w, o);
        }
        let mut all = vec![a.join().unwrap()];
        all.extend(b.map(|b| b.join().unwrap()));
        for seen in all {
            // In order and without duplicates (each value was checked against
            // its offset when read, so only published values appear).
            assert!(
                seen.read.windows(2).all(|p| p[0] < p[1]),
                "{VIOLATION}: out of order or duplicated: {:?}",
                seen.read
            );
            // Conservation: read + missed = published past the start.
            assert_eq!(
                seen.read.len() as u64 + seen.missed,
                seen.end - seen.start,
                "{VIOLATION}: from {} to {} read {:?} and missed {}",
                seen.start,
                seen.end,
                seen.read,
                seen.missed
            );
        }
        assert_eq!(ring::latest(&r.hdr), total);
    }
}

/// Offsets 0 and 1 fill the ring first; offset 2 then overwrites slot 0 while
/// reader A (from 0, to the final cursor) and reader B (from `earliest`,
/// polling) copy.
#[test]
#[cfg(not(any(
    loom_mutant,
    loom_mutant_fence,
    loom_mutant_membarrier,
    loom_mutant_claim
)))]
fn ring_wrap_two_readers() {
    check("ring_wrap_two_readers", ring_model(3, 2, true));
}

/// Offset 0 is published first; offsets 1–3 are written concurrently with
/// one reader, so both slots are overwritten under its feet.
#[test]
#[cfg(not(any(
    loom_mutant,
    loom_mutant_fence,
    loom_mutant_membarrier,
    loom_mutant_claim
)))]
fn ring_double_wrap_one_reader() {
    check("ring_double_wrap_one_reader", ring_model(4, 1, false));
}

/// An empty ring: every claim, publish and the first wrap race the reader.
#[test]
#[cfg(not(any(
    loom_mutant,
    loom_mutant_fence,
    loom_mutant_membarrier,
    loom_mutant_claim
)))]
fn ring_from_empty_one_reader() {
    check("ring_from_empty_one_reader", ring_model(3, 0, false));
}

/// Under `--cfg loom_mutant` the writer publishes a slot with `Relaxed`: a
/// reader that sees the new `seq` may copy the old body. The model must fail
/// with a model violation (not any other panic).
#[test]
#[cfg(loom_mutant)]
fn mutant_relaxed_publish_is_caught() {
    let msg = loom_tests::expect_violation("relaxed_publish", ring_model(3, 2, true));
    assert!(msg.contains(VIOLATION), "failed for another reason: {msg}");
}

/// Under `--cfg loom_mutant_fence` the reader's `fence(Acquire)` between its
/// copy and its re-check of `seq` is gone: a reader can copy a newer body and
/// still re-read the old `seq`. The model must fail with a model violation.
#[test]
#[cfg(loom_mutant_fence)]
fn mutant_missing_read_fence_is_caught() {
    let msg = loom_tests::expect_violation("missing_read_fence", ring_model(3, 2, true));
    assert!(msg.contains(VIOLATION), "failed for another reason: {msg}");
}
