//! The parking handshake under loom: no lost wake-up.
//!
//! Writer side: `Writer::commit` (the cursor's SeqCst `fetch_max`, then a
//! SeqCst load of `waiters`) and, if it saw a waiter, `wait::wake_all`
//! (`notify += 1`, then FUTEX_WAKE). Reader side, as `wait::park` does it
//! (that module is not compiled under loom, so its steps are repeated here
//! with the same orderings): load `notify` (Acquire), `waiters += 1`
//! (SeqCst), re-check the cursor (SeqCst), sleep on `notify` only if nothing
//! is new, `waiters -= 1`.
//!
//! The futex is emulated with a loom `Mutex` + `Condvar`: `wait` sleeps only
//! if the word still equals the value the reader saw (checked under the lock,
//! as the kernel checks it under its hash-bucket lock); `wake` takes the lock
//! and notifies. A lost wake-up leaves the reader asleep forever, which loom
//! reports as a deadlock; the model also asserts the Dekker property itself.
#![cfg(loom)]

use loom::sync::atomic::{AtomicU32, Ordering};
use loom::sync::{Arc, Condvar, Mutex};
use loom::thread;
use loom_tests::{check, decode, record, Ring, VIOLATION};
use shmq::protocol::ring::{self, ReadOutcome, RecordBuf, Writer};

fn value(offset: u64) -> u64 {
    300 + offset
}

/// A futex word's kernel side.
#[derive(Default)]
struct Futex {
    lock: Mutex<()>,
    cv: Condvar,
}

impl Futex {
    /// FUTEX_WAIT: sleep until woken, unless `word != expected` already.
    fn wait(&self, word: &AtomicU32, expected: u32) {
        let guard = self.lock.lock().unwrap();
        if word.load(Ordering::SeqCst) == expected {
            drop(self.cv.wait(guard).unwrap());
        }
    }

    /// FUTEX_WAKE of every sleeper.
    fn wake(&self) {
        let _guard = self.lock.lock().unwrap();
        self.cv.notify_all();
    }
}

/// The topic's `notify` word and its futex.
struct Wake {
    notify: AtomicU32,
    futex: Futex,
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
                    let ready = r.hdr.cursor.load(Ordering::SeqCst) > o;
                    if !ready {
                        slept = true;
                        wake.futex.wait(&wake.notify, seen);
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

    let mut w = Writer::resume(&r.hdr, &r.mem, 1, thread::yield_now);
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
#[cfg(not(any(loom_mutant, loom_mutant_fence)))]
fn parking_no_lost_wakeup() {
    check("parking_no_lost_wakeup", parking_model);
}
