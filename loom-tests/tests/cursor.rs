//! The write cursor vs. slot publication under loom: a reader that sees
//! `cursor > o` (Acquire) and then reads offset `o` gets the record (or is
//! told it was lapped), never `NotYet`.
#![cfg(loom)]

use loom::sync::Arc;
use loom::thread;
use loom_tests::{check, decode, record, Ring, VIOLATION};
use shmq::protocol::ring::{self, ReadOutcome, RecordBuf, Writer};

fn value(offset: u64) -> u64 {
    200 + offset
}

/// Read every offset below one cursor sample and check each is there.
fn sample(r: &Ring, buf: &mut RecordBuf, floor: u64) -> u64 {
    let cursor = ring::latest(&r.hdr);
    assert!(
        cursor >= floor,
        "{VIOLATION}: the cursor went back from {floor} to {cursor}"
    );
    for o in 0..cursor {
        match ring::read(&r.hdr, &r.mem, o, buf) {
            ReadOutcome::Record => assert_eq!(
                decode(buf),
                value(o),
                "{VIOLATION}: offset {o} below the cursor returned another record"
            ),
            ReadOutcome::Lapped { missed, resume } => assert!(
                resume > o && missed == resume - o,
                "{VIOLATION}: bad lap at {o}: missed {missed}, resume {resume}"
            ),
            other => panic!("{VIOLATION}: saw cursor {cursor} but offset {o} read {other:?}"),
        }
    }
    cursor
}

/// A 2-slot ring. The writer sends offset 0 on its own, then offsets 1 and 2
/// as a batch (two `write_slot`s, one `commit`, like `Producer::send_batch`),
/// wrapping slot 0. The reader samples the cursor twice and reads every
/// offset below each sample.
fn cursor_model() {
    let r = Arc::new(Ring::new(2));
    let reader = {
        let r = r.clone();
        thread::spawn(move || {
            let mut buf = RecordBuf::default();
            let first = sample(&r, &mut buf, 0);
            sample(&r, &mut buf, first);
        })
    };
    let mut w = loom_tests::owned_writer(&r, 1);
    let send = |w: &mut Writer, o: u64| {
        let v = value(o);
        assert_eq!(w.write_slot(&r.hdr, &r.mem, v, None, &record(v)), Ok(o));
    };
    send(&mut w, 0);
    w.commit(&r.hdr);
    send(&mut w, 1);
    send(&mut w, 2);
    w.commit(&r.hdr);
    reader.join().unwrap();
    assert_eq!(ring::latest(&r.hdr), 3);
}

#[test]
#[cfg(not(any(
    loom_mutant,
    loom_mutant_fence,
    loom_mutant_membarrier,
    loom_mutant_claim
)))]
fn cursor_implies_slot() {
    check("cursor_implies_slot", cursor_model);
}
