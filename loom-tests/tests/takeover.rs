//! Writer takeover under loom.
//!
//! The old writer holds the writer lease (`writer_lease::claim`) and has
//! published offset 0 of a 2-slot ring. A new writer takes the lease over
//! (its liveness probe says the old owner is dead), `Writer::resume`s the ring
//! and writes one record, while a reader copies offsets 1 and 2.
//!
//! * `takeover_after_death` is the protocol's contract: the old writer dies
//!   somewhere in its last write (before claiming a slot, mid-copy, after
//!   publishing but before its cursor update, or after it), and only then
//!   does the probe say "dead" (a kernel-held token is released at death: a
//!   happens-before edge, modelled by a Release store the probe reads with
//!   Acquire). The new writer must repair what is left and continue; no
//!   reader ever sees a torn record.
//! * `takeover_vs_live_late_write` is the race the issue describes: the probe
//!   says "dead" while the old writer is in fact still running and writes
//!   one more record (it passed `check` before the takeover, or reads a stale
//!   writer word). The late write must be refused, or whole and on an offset
//!   before the new writer's. (This model found two bugs in `Writer::claim`,
//!   fixed in 4a52db0; see `loom-tests/README.md`.)
#![cfg(loom)]

use loom::sync::atomic::{AtomicBool, Ordering};
use loom::sync::Arc;
use loom::thread;
use loom_tests::{check, decode, record, Ring, VIOLATION};
use shmq::protocol::ring::{self, ReadOutcome, RecordBuf, SlotMemory, WriteError, Writer};
use shmq::protocol::writer_lease::{self, unpack, Claimed};

const OLD: u32 = 1;
const NEW: u32 = 2;

/// The value writer `who` writes at `offset`.
fn value(who: u32, offset: u64) -> u64 {
    u64::from(who) * 1000 + offset
}

/// Claim the partition for the old writer and publish offset 0.
fn old_writer(r: &Ring) -> Writer {
    let old = writer_lease::claim(&r.hdr.writer, OLD, |_| false).expect("free partition");
    let mut w = Writer::resume(&r.hdr, &r.mem, old.word, thread::yield_now);
    let v0 = value(OLD, 0);
    assert_eq!(w.write_slot(&r.hdr, &r.mem, v0, None, &record(v0)), Ok(0));
    w.commit(&r.hdr);
    w
}

/// The new writer's side once its probe says the old owner is dead: resume
/// and write one record. Returns (claim, first offset, write result).
fn new_writer(r: &Ring, claimed: Claimed) -> (Claimed, u64, Result<u64, WriteError>) {
    assert_eq!(
        claimed.took_over_from,
        Some(OLD),
        "{VIOLATION}: not a takeover"
    );
    assert_eq!(
        unpack(claimed.word),
        (2, NEW),
        "{VIOLATION}: epoch not bumped"
    );
    let mut w = Writer::resume(&r.hdr, &r.mem, claimed.word, thread::yield_now);
    let first = w.next_offset();
    let v = value(NEW, first);
    let got = w
        .check(&r.hdr, &r.mem)
        .and_then(|()| w.write_slot(&r.hdr, &r.mem, v, None, &record(v)));
    w.commit(&r.hdr);
    (claimed, first, got)
}

/// Read offsets 1 and 2 once each while the writers run: whatever comes back
/// must be one writer's whole record for that offset.
fn concurrent_reads(r: &Ring) {
    let mut buf = RecordBuf::default();
    for o in 1..3 {
        if ring::read(&r.hdr, &r.mem, o, &mut buf) == ReadOutcome::Record {
            let v = decode(&buf);
            // The new writer's record may land one offset past the one it
            // was made for, if a fenced writer's late write took that one.
            assert!(
                v == value(OLD, o) || v == value(NEW, o) || v == value(NEW, o - 1),
                "{VIOLATION}: offset {o} returned {v}, which no writer wrote there"
            );
        }
    }
}

/// Read `offset` after all threads joined and return its value.
fn settled(r: &Ring, offset: u64) -> u64 {
    let mut buf = RecordBuf::default();
    let got = ring::read(&r.hdr, &r.mem, offset, &mut buf);
    assert_eq!(
        got,
        ReadOutcome::Record,
        "{VIOLATION}: offset {offset} is not readable"
    );
    decode(&buf)
}

/// How far the old writer's last write got before it died.
#[derive(Clone, Copy, Debug)]
enum Death {
    /// Died before claiming a slot for offset 1.
    BeforeClaim,
    /// Claimed offset 1's slot and stored part of the body (odd `seq` left).
    MidCopy,
    /// Published offset 1, died before its cursor update.
    AfterPublish,
    /// Published and committed offset 1.
    AfterCommit,
}

fn after_death(death: Death) -> impl Fn() + Sync + Send + 'static {
    move || {
        let r = Arc::new(Ring::new(2));
        let mut w_old = old_writer(&r);
        // The kernel-held token: released only when the old process is gone.
        let dead = Arc::new(AtomicBool::new(false));

        let old = {
            let (r, dead) = (r.clone(), dead.clone());
            thread::spawn(move || {
                let v = value(OLD, 1);
                match death {
                    Death::BeforeClaim => {}
                    Death::MidCopy => {
                        let c = w_old.claim(&r.hdr, &r.mem).expect("old writer's claim");
                        let index = c.offset() & r.mem.geometry().mask();
                        r.mem.write_timestamp_only(index, v);
                    }
                    Death::AfterPublish | Death::AfterCommit => {
                        w_old.check(&r.hdr, &r.mem).expect("old writer still owns");
                        let o = w_old.write_slot(&r.hdr, &r.mem, v, None, &record(v));
                        assert_eq!(o, Ok(1));
                        if matches!(death, Death::AfterCommit) {
                            w_old.commit(&r.hdr);
                        }
                    }
                }
                // Process exit: the kernel releases the token lock.
                dead.store(true, Ordering::Release);
            })
        };
        let new = {
            let (r, dead) = (r.clone(), dead.clone());
            thread::spawn(move || loop {
                let probe = |owner: u32| owner == OLD && dead.load(Ordering::Acquire);
                match writer_lease::claim(&r.hdr.writer, NEW, probe) {
                    Ok(claimed) => break new_writer(&r, claimed),
                    // Still alive: a producer would report `PartitionHeld`;
                    // the model waits for the death instead.
                    Err(_) => thread::yield_now(),
                }
            })
        };
        concurrent_reads(&r);
        old.join().unwrap();
        let (claimed, first, got) = new.join().unwrap();

        let published = matches!(death, Death::AfterPublish | Death::AfterCommit);
        let expect_first = if published { 2 } else { 1 };
        assert_eq!(
            first, expect_first,
            "{VIOLATION}: {death:?}: the new writer resumed at {first}"
        );
        assert_eq!(
            got,
            Ok(first),
            "{VIOLATION}: {death:?}: the new lease holder's write was refused"
        );
        assert_eq!(
            r.hdr.writer.load(Ordering::Relaxed),
            claimed.word,
            "{VIOLATION}: the lease moved"
        );
        let at1 = if published {
            value(OLD, 1)
        } else {
            value(NEW, 1)
        };
        assert_eq!(settled(&r, 1), at1, "{VIOLATION}: {death:?}: offset 1");
        if published {
            assert_eq!(settled(&r, 2), value(NEW, 2), "{VIOLATION}: offset 2");
        }
        assert_eq!(ring::latest(&r.hdr), first + 1, "{VIOLATION}: cursor");
    }
}

#[test]
#[cfg(not(any(
    loom_mutant,
    loom_mutant_fence,
    loom_mutant_membarrier,
    loom_mutant_claim
)))]
fn takeover_after_death() {
    for death in [
        Death::BeforeClaim,
        Death::MidCopy,
        Death::AfterPublish,
        Death::AfterCommit,
    ] {
        let name = format!("takeover_after_death[{death:?}]");
        check(&name, after_death(death));
    }
}

/// The old writer is still alive when the new writer takes over, and makes
/// one more `check` + `write_slot` + `commit`.
fn live_late_write() {
    let r = Arc::new(Ring::new(2));
    let mut w_old = old_writer(&r);
    let late = {
        let r = r.clone();
        thread::spawn(move || -> Result<u64, WriteError> {
            w_old.check(&r.hdr, &r.mem)?;
            let v = value(OLD, w_old.next_offset());
            let got = w_old.write_slot(&r.hdr, &r.mem, v, None, &record(v))?;
            w_old.commit(&r.hdr);
            Ok(got)
        })
    };
    let new = {
        let r = r.clone();
        thread::spawn(move || {
            // The probe wrongly says "dead" (a removed token file reads as
            // `Liveness::Missing`, which counts as dead).
            let claimed = writer_lease::claim(&r.hdr.writer, NEW, |o| o == OLD)
                .unwrap_or_else(|h| panic!("{VIOLATION}: takeover refused: {h:?}"));
            new_writer(&r, claimed)
        })
    };
    concurrent_reads(&r);
    let late = late.join().unwrap();
    let (claimed, first, got) = new.join().unwrap();

    let new_offset = got.unwrap_or_else(|e| {
        panic!("{VIOLATION}: the new lease holder's write at {first} was refused ({e:?}); late write: {late:?}")
    });
    match late {
        Err(WriteError::Fenced { current }) => {
            assert_eq!(
                current, claimed.word,
                "{VIOLATION}: fenced by an unknown writer"
            )
        }
        Err(e) => panic!("{VIOLATION}: unexpected late-write error {e:?}"),
        Ok(o) => {
            // The late write landed: whole, on an offset of its own before
            // every offset of the new writer, and still readable.
            assert!(
                o < new_offset,
                "{VIOLATION}: both writers succeeded on offset {o} (the new writer resumed at {first})"
            );
            assert_eq!(
                settled(&r, o),
                value(OLD, o),
                "{VIOLATION}: late write lost"
            );
        }
    }
    // The new writer's record (made for the offset it resumed at) is whole
    // and readable where it landed: there, or one further on if the late
    // write took that offset first.
    assert_eq!(
        settled(&r, new_offset),
        value(NEW, first),
        "{VIOLATION}: new write lost"
    );
}

#[test]
#[cfg(not(any(
    loom_mutant,
    loom_mutant_fence,
    loom_mutant_membarrier,
    loom_mutant_claim
)))]
fn takeover_vs_live_late_write() {
    check("takeover_vs_live_late_write", live_late_write);
}
