//! The parking handshake under loom: no lost wake-up.
//!
//! Writer side: `Writer::commit` (a plain Release store of the cursor, the hot
//! side of the asymmetric barrier, a load of `waiters`) and, if it saw a
//! waiter, `wait::wake_all` (`notify += 1`, then FUTEX_WAKE). Reader side, as
//! `wait::park` does it (that module is not compiled under loom, so its steps
//! are repeated here with the same orderings and the same barrier call): load
//! `notify` (Acquire), `waiters += 1` (SeqCst), `ring::park_barrier()` (the
//! heavy side), re-check the cursor (Acquire), sleep on `notify` only if
//! nothing is new, `waiters -= 1`.
//!
//! # Modelling membarrier
//!
//! In production the hot side is a compiler fence (the process registered
//! for `MEMBARRIER_CMD_GLOBAL_EXPEDITED`) and the heavy side is the
//! `membarrier` syscall, which makes every CPU running a registered thread
//! execute a full barrier before it returns. Its guarantee: take the point P
//! at which the writer's CPU executed that barrier; everything the writer
//! stored before P is visible to the parker after the syscall, and every load
//! the writer makes after P sees what the parker stored before the syscall.
//! Since the writer's store and its load are adjacent in program order, P
//! falls either after the store (the parker's re-check sees the cursor) or
//! before the load (the writer sees the waiter): the same two outcomes as a
//! SeqCst fence on *both* sides. loom has no asymmetric fence, so under
//! `cfg(loom)` both sides are `fence(SeqCst)` (`sync::light_barrier` and
//! `sync::heavy_barrier`); loom orders SeqCst fences in one total order and
//! the later one acquires everything before the earlier one, which is the
//! membarrier guarantee above. That the model depends on the parking side's
//! barrier is proved by the mutant `loom_mutant_membarrier`, which removes
//! it (`heavy_barrier` does nothing): `mutant_missing_park_barrier_is_caught`
//! must fail the model, and `.ci/loom.sh` checks that it does.
//!
//! The futex is emulated with a loom `Mutex` + `Condvar`: `wait` sleeps only
//! if the word still equals the value the reader saw (checked under the lock,
//! as the kernel checks it under its hash-bucket lock); `wake` takes the lock
//! and notifies every sleeper (a woken reader re-checks and may park again,
//! as in production: a wake-up can be stale, meant for an earlier record).
//! When the writer is done it counts the readers still asleep (and wakes
//! them so the model ends): a reader asleep then, or about to sleep on an
//! unchanged word after that, has lost its wake-up, and the model fails with
//! a violation (rather than a loom deadlock, so a mutant run can tell the
//! two apart). (A first version asserted that every wake-up changed
//! `notify`; loom at bound 3 showed that a reader can be woken by the
//! FUTEX_WAKE of an earlier record and legitimately see the old word.)
#![cfg(loom)]

use loom::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use loom::sync::{Arc, Condvar, Mutex};
use loom::thread;
use loom_tests::{check, decode, record, Ring, VIOLATION};
use shmq::protocol::ring::{self, ReadOutcome, RecordBuf};

fn value(offset: u64) -> u64 {
    300 + offset
}

/// A futex word's kernel side. The mutex guards the number of threads
/// asleep (set back to 0 by every wake, which wakes them all).
#[derive(Default)]
struct Futex {
    lock: Mutex<usize>,
    cv: Condvar,
}

impl Futex {
    /// FUTEX_WAIT: sleep until woken, unless `word != expected` already.
    /// Returns `false` if the writer is already `done` and the word still
    /// equals `expected`: the caller was about to sleep with nobody left to
    /// wake it (a lost wake-up).
    fn wait(&self, word: &AtomicU32, expected: u32, done: &AtomicBool) -> bool {
        let mut asleep = self.lock.lock().unwrap();
        if word.load(Ordering::SeqCst) == expected {
            if done.load(Ordering::SeqCst) {
                return false;
            }
            *asleep += 1;
            drop(self.cv.wait(asleep).unwrap());
        }
        true
    }

    /// FUTEX_WAKE of every sleeper. Returns how many were asleep.
    fn wake(&self) -> usize {
        let mut asleep = self.lock.lock().unwrap();
        self.cv.notify_all();
        std::mem::take(&mut *asleep)
    }
}

/// The topic's `notify` word and its futex.
struct Wake {
    notify: AtomicU32,
    futex: Futex,
    /// The writer has finished (set before its last, `notify`-less wake).
    done: AtomicBool,
}

fn parking_model() {
    let r = Arc::new(Ring::new(2));
    // loom treats SeqCst accesses as AcqRel except that a SeqCst load never
    // returns an older *SeqCst* store; an atomic's initial value does not
    // count as one, so without these two stores loom would let both SeqCst
    // loads below read the initial 0 — a known false alarm (loom README,
    // "Unsupported features"). In C11 the initial value happens before the
    // writer's SeqCst RMW and cannot be read once that RMW precedes the load
    // in the total order, which is what these stores restore.
    r.hdr.cursor.store(0, Ordering::SeqCst);
    r.hdr.waiters.store(0, Ordering::SeqCst);
    let wake = Arc::new(Wake {
        notify: AtomicU32::new(0),
        futex: Futex::default(),
        done: AtomicBool::new(false),
    });

    // Reader `o` waits for offset `o` (reader 1 may be woken by the first
    // record, find nothing for it and park again).
    let readers: Vec<_> = (0..2u64)
        .map(|o| {
            let (r, wake) = (r.clone(), wake.clone());
            thread::spawn(move || {
                let mut slept = false;
                loop {
                    // Fast path: anything new?
                    if ring::latest(&r.hdr) > o {
                        break;
                    }
                    // `wait::park`.
                    let seen = wake.notify.load(Ordering::Acquire);
                    r.hdr.waiters.fetch_add(1, Ordering::SeqCst);
                    ring::park_barrier();
                    let ready = r.hdr.cursor.load(Ordering::Acquire) > o;
                    if !ready {
                        slept = true;
                        // A wake-up may be stale (FUTEX_WAKE for an
                        // earlier record): the loop re-checks, as
                        // `wait::park`'s callers do.
                        assert!(
                            wake.futex.wait(&wake.notify, seen, &wake.done),
                            "{VIOLATION}: lost wake-up: reader {o} is going to sleep with \
                             nothing new after the writer finished"
                        );
                    }
                    r.hdr.waiters.fetch_sub(1, Ordering::SeqCst);
                }
                // Woken or not, the record is there and whole.
                let mut buf = RecordBuf::default();
                assert_eq!(
                    ring::read(&r.hdr, &r.mem, o, &mut buf),
                    ReadOutcome::Record,
                    "{VIOLATION}: the cursor passed {o} but offset {o} is not readable"
                );
                assert_eq!(decode(&buf), value(o), "{VIOLATION}: wrong record");
                slept
            })
        })
        .collect();

    let mut w = loom_tests::owned_writer(&r, 1);
    let mut saw_waiter = false;
    for o in 0..2 {
        let v = value(o);
        assert_eq!(w.write_slot(&r.hdr, &r.mem, v, None, &record(v)), Ok(o));
        if w.commit(&r.hdr) {
            saw_waiter = true;
            // `wait::wake_all`.
            wake.notify.fetch_add(1, Ordering::Release);
            wake.futex.wake();
        }
    }
    // The end: a reader still asleep now has lost its wake-up (the writer
    // will never wake it again). Wake it anyway so the model ends.
    wake.done.store(true, Ordering::SeqCst);
    let asleep = wake.futex.wake();
    assert_eq!(
        asleep, 0,
        "{VIOLATION}: lost wake-up: a reader is asleep with nothing new after the writer finished"
    );
    let slept: Vec<bool> = readers.into_iter().map(|h| h.join().unwrap()).collect();
    let slept = slept.contains(&true);
    // The Dekker pair: if a reader decided to sleep, a commit saw a waiter.
    // (A lost wake-up shows first as a loom deadlock: the reader never
    // returns.)
    assert!(
        !slept || saw_waiter,
        "{VIOLATION}: a reader went to sleep but the writer never saw a waiter"
    );
    // Every announcement was withdrawn.
    assert_eq!(
        r.hdr.waiters.load(Ordering::Relaxed),
        0,
        "{VIOLATION}: a waiter was never withdrawn"
    );
}

#[test]
#[cfg(not(any(
    loom_mutant,
    loom_mutant_fence,
    loom_mutant_membarrier,
    loom_mutant_claim
)))]
fn parking_no_lost_wakeup() {
    check("parking_no_lost_wakeup", parking_model);
}

/// Under `--cfg loom_mutant_membarrier` the parking side's barrier
/// (`ring::park_barrier`, membarrier in production) does nothing: the
/// reader's cursor re-check and the writer's `waiters` load can both miss
/// the other's store, and a reader sleeps through the record it waits for.
/// The model must fail with a model violation.
#[test]
#[cfg(loom_mutant_membarrier)]
fn mutant_missing_park_barrier_is_caught() {
    let msg = loom_tests::expect_violation("missing_park_barrier", parking_model);
    assert!(msg.contains(VIOLATION), "failed for another reason: {msg}");
}
