//! The ring's hostile-peer repairs under loom (issue 11, defect 6).
//!
//! Readers here follow a partition exactly as the consumers do
//! (`shmq::protocol::ring::CursorCache`: the validated cursor cache, wild-cursor
//! counting, and the stuck-slot bound), with a model clock that advances
//! [`STUCK_NS`] per `NotYet`, so only the *count* bound and the protocol
//! itself stand between a reader and a wrong skip.
//!
//! * `stuck_never_skips_on_honest_ring`: with no scribbler, in every
//!   interleaving, a reader never gives an offset up as stuck (a real writer
//!   publishes a slot before the cursor passes it), and conservation holds.
//! * `stuck_slot_is_skipped`: a scribbler zeroes the sequence word of a
//!   published, unread slot while the writer wraps the ring: the reader never
//!   stalls (it reaches the final cursor), never returns a wrong record, and
//!   accounts for every offset (read + missed + skipped).
//! * `wild_cursor_is_repaired`: a scribbler stores 2^40 into the cursor while
//!   the writer commits: readers never move past the real end, the checked
//!   end is always the real one, and the writer's next commit after the
//!   scribble repairs the cursor.
//! * `takeover_ignores_wild_cursor`: the dead writer's cursor was scribbled
//!   to 2^63 (or 0): the new writer resumes from the slots, at the real end,
//!   while a reader copies.
#![cfg(loom)]

use loom::sync::atomic::Ordering;
use loom::sync::Arc;
use loom::thread;
use loom_tests::{check, decode, record, Ring, VIOLATION};
use shmq::protocol::ring::{
    self, CursorCache, ReadOutcome, RecordBuf, SlotMemory, Writer, STUCK_NS,
};

fn value(offset: u64) -> u64 {
    300 + offset
}

fn publish(r: &Ring, w: &mut Writer, o: u64) {
    let v = value(o);
    let got = w.write_slot(&r.hdr, &r.mem, v, None, &record(v));
    assert_eq!(got, Ok(o), "{VIOLATION}: the only writer was refused");
    w.commit(&r.hdr);
}

#[derive(Debug, Default)]
struct Followed {
    read: Vec<u64>,
    missed: u64,
    skipped: u64,
    wild: u64,
}

/// Follow the partition from `start` until offset `end`, as a consumer does;
/// with `poll`, stop at the first "nothing new" instead of spinning (like a
/// non-blocking poll). Returns what it saw and where it stopped.
fn follow(r: &Ring, start: u64, end: u64, poll: bool) -> (Followed, u64) {
    let mut cache = CursorCache::default();
    let mut buf = RecordBuf::default();
    let mut clock = 0u64;
    let mut out = Followed::default();
    let mut next = start;
    // Consecutive passes without progress: every wait yields to the other
    // threads, so a long run of them means nobody can make progress (the
    // reader would wait forever on a real machine).
    let mut idle = 0u32;
    let mut last = next;
    while next < end {
        if next != last {
            (idle, last) = (0, next);
        }
        idle += 1;
        assert!(
            idle < 1000,
            "{VIOLATION}: the reader stalled at {next} (cursor {}, seq {:?}, {cache:?})",
            r.hdr.cursor.load(Ordering::SeqCst),
            (0..2)
                .map(|i| r.mem.seq(i).load(Ordering::SeqCst))
                .collect::<Vec<_>>()
        );
        if !cache.may_read(&r.hdr, &r.mem, next) {
            if poll {
                break;
            }
            thread::yield_now();
            continue;
        }
        match ring::read(&r.hdr, &r.mem, next, &mut buf) {
            ReadOutcome::Record => {
                assert_eq!(
                    decode(&buf),
                    value(next),
                    "{VIOLATION}: offset {next} returned another record"
                );
                out.read.push(next);
                next += 1;
            }
            ReadOutcome::NotYet => {
                clock += STUCK_NS;
                if cache.skip_stuck(next, clock) {
                    out.skipped += 1;
                    next += 1;
                } else if poll {
                    break;
                } else {
                    thread::yield_now();
                }
            }
            ReadOutcome::Lapped { missed, resume } => {
                assert!(
                    resume > next && missed == resume - next && resume <= end,
                    "{VIOLATION}: bad lap at {next}: missed {missed}, resume {resume} (end {end})"
                );
                out.missed += missed;
                next = resume;
            }
            ReadOutcome::Corrupt => panic!("{VIOLATION}: corrupt at {next}"),
        }
        out.wild += cache.take_damage();
    }
    assert!(
        next <= end,
        "{VIOLATION}: the reader went past the end: {next}"
    );
    assert_eq!(
        out.read.len() as u64 + out.missed + out.skipped,
        next - start,
        "{VIOLATION}: from {start} to {next}: {out:?}"
    );
    (out, next)
}

/// Offset 0 published first; offsets 1 and 2 (wrapping slot 0) race a
/// following reader. No scribbler: nothing may be skipped.
fn honest_model() {
    let r = Arc::new(Ring::new(2));
    let mut w = loom_tests::owned_writer(&r, 1);
    publish(&r, &mut w, 0);
    let reader = {
        let r = r.clone();
        thread::spawn(move || follow(&r, 0, 3, false).0)
    };
    publish(&r, &mut w, 1);
    publish(&r, &mut w, 2);
    let seen = reader.join().unwrap();
    assert_eq!(
        (seen.skipped, seen.wild),
        (0, 0),
        "{VIOLATION}: an honest ring was taken for damaged: {seen:?}"
    );
}

#[test]
#[cfg(not(any(
    loom_mutant,
    loom_mutant_fence,
    loom_mutant_membarrier,
    loom_mutant_claim
)))]
fn stuck_never_skips_on_honest_ring() {
    check("stuck_never_skips_on_honest_ring", honest_model);
}

/// Offsets 0 and 1 published; a scribbler zeroes slot 1's sequence word
/// (offset 1, unread) while the writer publishes offset 2 (wrapping slot 0)
/// and a reader follows from 0 to 3.
fn stuck_model() {
    let r = Arc::new(Ring::new(2));
    let mut w = loom_tests::owned_writer(&r, 1);
    publish(&r, &mut w, 0);
    publish(&r, &mut w, 1);
    let reader = {
        let r = r.clone();
        thread::spawn(move || follow(&r, 0, 3, false).0)
    };
    let scribbler = {
        let r = r.clone();
        thread::spawn(move || r.mem.seq(1).store(0, Ordering::Relaxed))
    };
    publish(&r, &mut w, 2);
    scribbler.join().unwrap();
    let seen = reader.join().unwrap();
    assert!(
        seen.skipped <= 1 && !seen.read.is_empty(),
        "{VIOLATION}: {seen:?}"
    );
}

#[test]
#[cfg(not(any(
    loom_mutant,
    loom_mutant_fence,
    loom_mutant_membarrier,
    loom_mutant_claim
)))]
fn stuck_slot_is_skipped() {
    check("stuck_slot_is_skipped", stuck_model);
}

const WILD: u64 = 1 << 40;

/// Offsets 0 and 1 published; a scribbler stores 2^40 into the cursor
/// while the writer publishes offset 2 (wrapping slot 0) and a reader polls
/// from 0.
fn wild_cursor_model() {
    let r = Arc::new(Ring::new(2));
    let mut w = loom_tests::owned_writer(&r, 1);
    publish(&r, &mut w, 0);
    publish(&r, &mut w, 1);
    let reader = {
        let r = r.clone();
        // Polls (stops at "nothing new"): a spinning reader plus the
        // scribbler is too large a state space for loom.
        thread::spawn(move || follow(&r, 0, 3, true).1)
    };
    let scribbler = {
        let r = r.clone();
        // An RMW rather than a plain store: with a plain store from another
        // thread loom 0.7 let a later SeqCst load return an older value than
        // an earlier load of the same thread (a coherence violation C11
        // forbids; see loom-tests/README.md). To the protocol a scribble is
        // a scribble.
        thread::spawn(move || {
            r.hdr.cursor.swap(WILD, Ordering::SeqCst);
        })
    };
    publish(&r, &mut w, 2);
    scribbler.join().unwrap();
    let stopped = reader.join().unwrap();
    let c = r.hdr.cursor.load(Ordering::SeqCst);
    assert!(c == 3 || c == WILD, "{VIOLATION}: cursor {c}");
    assert_eq!(
        ring::checked_latest(&r.hdr, &r.mem),
        3,
        "{VIOLATION}: the checked end believed a wild cursor"
    );
    // The rest, now that the writer is done (whatever the cursor says).
    follow(&r, stopped, 3, false);
    // One more commit always repairs it.
    publish(&r, &mut w, 3);
    assert_eq!(
        r.hdr.cursor.load(Ordering::SeqCst),
        4,
        "{VIOLATION}: not repaired"
    );
}

#[test]
#[cfg(not(any(
    loom_mutant,
    loom_mutant_fence,
    loom_mutant_membarrier,
    loom_mutant_claim
)))]
fn wild_cursor_is_repaired() {
    check("wild_cursor_is_repaired", wild_cursor_model);
}

/// The old writer published offsets 0–2 and died; its cursor was then
/// scribbled to `wild`. The new writer resumes while a reader follows.
fn takeover_model(wild: u64) -> impl Fn() + Sync + Send + 'static {
    move || {
        let r = Arc::new(Ring::new(2));
        let mut old = loom_tests::owned_writer(&r, 1);
        for o in 0..3 {
            publish(&r, &mut old, o);
        }
        r.hdr.cursor.store(wild, Ordering::SeqCst);
        let reader = {
            let r = r.clone();
            thread::spawn(move || follow(&r, 1, 4, false))
        };
        let mut w = loom_tests::owned_writer(&r, 2);
        assert_eq!(
            w.next_offset(),
            3,
            "{VIOLATION}: resumed at {} after a cursor of {wild}",
            w.next_offset()
        );
        publish(&r, &mut w, 3);
        reader.join().unwrap();
        assert_eq!(r.hdr.cursor.load(Ordering::SeqCst), 4, "{VIOLATION}");
    }
}

#[test]
#[cfg(not(any(
    loom_mutant,
    loom_mutant_fence,
    loom_mutant_membarrier,
    loom_mutant_claim
)))]
fn takeover_ignores_wild_cursor() {
    check("takeover_ignores_wild_cursor_high", takeover_model(1 << 63));
    check("takeover_ignores_wild_cursor_zero", takeover_model(0));
}
