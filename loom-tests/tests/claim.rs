//! The claim word under loom: plain-store slot claims stay exclusive across
//! a takeover.
//!
//! A writer no longer claims a slot with a CAS on its `seq` word: it stores
//! `2o + 1` plainly. That is only sound if no two live writers ever store
//! into one slot, since two writers of one offset write the *same* sequence
//! values and a reader's seqlock could not tell a body mixed from both. The
//! exclusion is the partition's claim word (`Writer::reserve`): a writer
//! stores its reservation (`epoch | end`), passes the hot side of the
//! asymmetric barrier and loads the writer word; a successor CASes the
//! writer word (`writer_lease::claim`), passes the heavy side and loads the
//! claim word (`Writer::resume`). Either the old writer sees the new word
//! (refused, nothing written) or the new writer sees the reservation and
//! leaves those offsets to the old writer until they are published.
//!
//! Both models race a live old writer (the liveness probe wrongly says
//! "dead", as after a scribbled writer word: `tests/hostile.rs`) against a
//! takeover and a reader:
//!
//! * `claim_fenced_mid_copy`: the old writer claims offset 1 and copies its
//!   record in two explicit halves (timestamp, then the whole body) with the
//!   takeover free to happen anywhere in between, then publishes and
//!   commits;
//! * `claim_fenced_batch`: the old writer reserves two offsets at once (a
//!   batch) and writes offsets 1 and 2 (offset 2 wraps onto offset 0's slot)
//!   while the new writer takes over and writes one record.
//!
//! Asserted in every interleaving: the old writer's records are refused or
//! whole and readable at their offsets; the new writer's record is never
//! refused, lands on an offset no old record took, and is whole; the reader
//! never returns a torn record or a value no writer wrote at that offset.
//!
//! The barrier pair is modelled as a SeqCst fence on both sides (see
//! `parking.rs` for why that is membarrier's guarantee). Two mutants prove
//! the models depend on it: `loom_mutant_claim` drops the writer's (hot)
//! side, `loom_mutant_membarrier` the successor's (heavy) side; each must be
//! caught by `claim_fenced_mid_copy`.
#![cfg(loom)]

use loom::sync::Arc;
use loom::thread;
use loom_tests::{check, decode, record, Ring, VIOLATION};
use shmq::protocol::ring::{self, ReadOutcome, RecordBuf, SlotMemory, WriteError, Writer};
use shmq::protocol::writer_lease::{self, Claimed};

const OLD: u32 = 1;
const NEW: u32 = 2;

fn value(who: u32, offset: u64) -> u64 {
    u64::from(who) * 1000 + offset
}

/// The old writer owns the lease and has published offset 0.
fn old_writer(r: &Ring) -> Writer {
    let old = writer_lease::claim(&r.hdr.writer, OLD, |_| false).expect("free partition");
    let mut w = Writer::resume(&r.hdr, &r.mem, old.word, thread::yield_now);
    let v0 = value(OLD, 0);
    assert_eq!(w.write_slot(&r.hdr, &r.mem, v0, None, &record(v0)), Ok(0));
    w.commit(&r.hdr);
    w
}

/// The takeover: the probe says the old owner is dead although it runs.
/// Resume, write one record, commit. Returns the claim, the offset the
/// record was made for, and where it landed.
fn new_writer(r: &Ring) -> (Claimed, u64, Result<u64, WriteError>) {
    let claimed = writer_lease::claim(&r.hdr.writer, NEW, |o| o == OLD)
        .unwrap_or_else(|h| panic!("{VIOLATION}: takeover refused: {h:?}"));
    let mut w = Writer::resume(&r.hdr, &r.mem, claimed.word, thread::yield_now);
    let first = w.next_offset();
    let v = value(NEW, first);
    let got = w.write_slot(&r.hdr, &r.mem, v, None, &record(v));
    w.commit(&r.hdr);
    (claimed, first, got)
}

/// Read offsets 1..=2 once each: anything returned is one writer's whole
/// record made for that offset (the new writer's may sit one or two offsets
/// past the one it was made for, behind the old writer's late records).
fn concurrent_reads(r: &Ring) {
    let mut buf = RecordBuf::default();
    for o in 1..3 {
        if ring::read(&r.hdr, &r.mem, o, &mut buf) == ReadOutcome::Record {
            let v = decode(&buf);
            assert!(
                v == value(OLD, o) || (v >= value(NEW, 0) && v <= value(NEW, o)),
                "{VIOLATION}: offset {o} returned {v}, which no writer wrote there"
            );
        }
    }
}

/// Read `offset` once everything joined: it must hold `want`, whole.
fn settled(r: &Ring, offset: u64, want: u64) {
    let mut buf = RecordBuf::default();
    let got = ring::read(&r.hdr, &r.mem, offset, &mut buf);
    assert_eq!(
        got,
        ReadOutcome::Record,
        "{VIOLATION}: offset {offset} is not readable"
    );
    assert_eq!(decode(&buf), want, "{VIOLATION}: offset {offset}");
}

/// The old writer's late records (offsets that were accepted) and the new
/// writer's outcome: check exclusivity and wholeness.
fn verdict(r: &Ring, late: &[u64], new: (Claimed, u64, Result<u64, WriteError>)) {
    let (claimed, first, got) = new;
    let landed = got.unwrap_or_else(|e| {
        panic!("{VIOLATION}: the new lease holder's write at {first} was refused ({e:?}); late: {late:?}")
    });
    for &o in late {
        assert!(
            o < landed,
            "{VIOLATION}: the fenced writer's record at {o} and the new writer's at {landed} collide"
        );
        // 2-slot ring: only the newest ring of offsets is still there.
        if o + 2 > landed {
            settled(r, o, value(OLD, o));
        }
    }
    settled(r, landed, value(NEW, first));
    assert_eq!(
        r.hdr.writer.load(loom::sync::atomic::Ordering::Relaxed),
        claimed.word,
        "{VIOLATION}: the lease moved"
    );
}

fn mid_copy_model() {
    let r = Arc::new(Ring::new(2));
    let mut w_old = old_writer(&r);
    let late = {
        let r = r.clone();
        thread::spawn(move || -> Result<u64, WriteError> {
            let c = w_old.claim(&r.hdr, &r.mem)?;
            let o = c.offset();
            let index = o & r.mem.geometry().mask();
            let v = value(OLD, o);
            // First half of the copy; the takeover may come right here.
            r.mem.write_timestamp_only(index, v);
            thread::yield_now();
            r.mem.write_body(index, v, None, &record(v));
            let o = w_old.publish_claimed(&r.mem, c);
            w_old.commit(&r.hdr);
            Ok(o)
        })
    };
    let new = {
        let r = r.clone();
        thread::spawn(move || new_writer(&r))
    };
    concurrent_reads(&r);
    let late = late.join().unwrap();
    let new = new.join().unwrap();
    let late: Vec<u64> = match late {
        Ok(o) => vec![o],
        Err(WriteError::Fenced { current }) => {
            assert_eq!(
                current, new.0.word,
                "{VIOLATION}: fenced by an unknown writer"
            );
            vec![]
        }
        Err(e) => panic!("{VIOLATION}: unexpected late-write error {e:?}"),
    };
    verdict(&r, &late, new);
}

#[test]
#[cfg(not(any(
    loom_mutant,
    loom_mutant_fence,
    loom_mutant_membarrier,
    loom_mutant_claim
)))]
fn claim_fenced_mid_copy() {
    check("claim_fenced_mid_copy", mid_copy_model);
}

fn batch_model() {
    let r = Arc::new(Ring::new(2));
    let mut w_old = old_writer(&r);
    let late = {
        let r = r.clone();
        thread::spawn(move || -> Vec<u64> {
            let mut landed = Vec::new();
            if w_old.reserve(&r.hdr, 2).is_err() {
                return landed;
            }
            for _ in 0..2 {
                let v = value(OLD, w_old.next_offset());
                match w_old.write_slot(&r.hdr, &r.mem, v, None, &record(v)) {
                    Ok(o) => landed.push(o),
                    Err(e) => panic!("{VIOLATION}: a reserved write was refused: {e:?}"),
                }
            }
            w_old.commit(&r.hdr);
            landed
        })
    };
    let new = {
        let r = r.clone();
        thread::spawn(move || new_writer(&r))
    };
    let late = late.join().unwrap();
    let new = new.join().unwrap();
    verdict(&r, &late, new);
}

#[test]
#[cfg(not(any(
    loom_mutant,
    loom_mutant_fence,
    loom_mutant_membarrier,
    loom_mutant_claim
)))]
fn claim_fenced_batch() {
    check("claim_fenced_batch", batch_model);
}

/// Under `--cfg loom_mutant_claim` the writer's side of the barrier in
/// `Writer::reserve` is gone: the old writer can miss the new writer word
/// while the new writer misses the reservation, and both write offset 1.
#[test]
#[cfg(loom_mutant_claim)]
fn mutant_missing_claim_barrier_is_caught() {
    let msg = loom_tests::expect_violation("missing_claim_barrier", mid_copy_model);
    assert!(msg.contains(VIOLATION), "failed for another reason: {msg}");
}

/// Under `--cfg loom_mutant_membarrier` the successor's side of the barrier
/// in `Writer::resume` (membarrier in production) is gone: same collision.
#[test]
#[cfg(loom_mutant_membarrier)]
fn mutant_missing_takeover_barrier_is_caught() {
    let msg = loom_tests::expect_violation("missing_takeover_barrier", mid_copy_model);
    assert!(msg.contains(VIOLATION), "failed for another reason: {msg}");
}
