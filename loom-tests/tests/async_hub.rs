//! The async hub's handshake under loom (`src/asynk/wake.rs`): no lost
//! wake-up between an async consumer arming its slot, the hub thread's scan
//! and futex sleep, and a writer's publish.
//!
//! That module is not compiled under loom (it is behind the `tokio` feature
//! and uses threads), so its steps are repeated here with the same orderings
//! around the real `ring::Writer::commit`:
//!
//! * consumer (`HubSlot::arm`): under the hub lock, mark the slot armed,
//!   `waiters += 1` (SeqCst), re-check the cursor (SeqCst); if ready, disarm
//!   and poll at once; else wake an idle hub (condvar) and return `Pending`;
//! * hub (`HubShared::run`): load `notify` (Acquire) **before** the scan;
//!   under the lock fire an armed slot whose cursor moved (SeqCst), taking
//!   its announcement back; sleep on the condvar while nothing is armed, else
//!   on the futex while `notify` still holds the value loaded first;
//! * writer: `commit` (cursor SeqCst RMW, `waiters` SeqCst load) and, if it
//!   saw a waiter, `wait::wake_all` (`notify += 1`, FUTEX_WAKE).
//!
//! The futex is emulated as in `parking.rs` (a loom `Mutex` + `Condvar`
//! that sleeps only if the word still holds the expected value). Once the
//! writer and the consumer are done, the model ends every sleep, as the
//! hub's 100 ms nap would: a hub that then finds its consumer still armed
//! and `notify` still at the value it slept on would have slept through the
//! publish (a lost wake-up, rescued only by the nap): a model violation.
//! The model with the hub loading `notify` *after* its scan must fail that
//! way, which proves the model can fail.
#![cfg(loom)]

use loom::sync::atomic::{AtomicU32, Ordering};
use loom::sync::{Arc, Condvar, Mutex};
use loom::thread;
use loom_tests::{check, record, Ring, VIOLATION};

/// A futex word's kernel side, with a stop that ends any sleep (the real
/// hub's nap, or its `Drop`, which wakes it until it exits).
#[derive(Default)]
struct Futex {
    lock: Mutex<bool>,
    cv: Condvar,
}

impl Futex {
    fn wait(&self, word: &AtomicU32, expected: u32) {
        let stop = self.lock.lock().unwrap();
        if !*stop && word.load(Ordering::SeqCst) == expected {
            drop(self.cv.wait(stop).unwrap());
        }
    }

    fn wake(&self) {
        let _g = self.lock.lock().unwrap();
        self.cv.notify_all();
    }

    fn stop(&self) {
        *self.lock.lock().unwrap() = true;
        self.cv.notify_all();
    }

    fn stopped(&self) -> bool {
        *self.lock.lock().unwrap()
    }
}

#[derive(Default)]
struct HubState {
    armed: bool,
    fired: bool,
    shutdown: bool,
}

struct Shared {
    ring: Ring,
    notify: AtomicU32,
    futex: Futex,
    hub: Mutex<HubState>,
    idle: Condvar,
}

fn hub_model(seen_after_scan: bool) -> impl Fn() + Sync + Send + 'static {
    move || {
        let s = Arc::new(Shared {
            ring: Ring::new(2),
            notify: AtomicU32::new(0),
            futex: Futex::default(),
            hub: Mutex::new(HubState::default()),
            idle: Condvar::new(),
        });
        // See parking.rs: make the initial values SeqCst stores for loom.
        s.ring.hdr.cursor.store(0, Ordering::SeqCst);
        s.ring.hdr.waiters.store(0, Ordering::SeqCst);

        // The hub thread: one firing is its whole job here.
        let hub = {
            let s = s.clone();
            thread::spawn(move || loop {
                let early = (!seen_after_scan).then(|| s.notify.load(Ordering::Acquire));
                let mut st = s.hub.lock().unwrap();
                if st.shutdown {
                    return false;
                }
                if st.armed && s.ring.hdr.cursor.load(Ordering::SeqCst) > 0 {
                    st.armed = false;
                    s.ring.hdr.waiters.fetch_sub(1, Ordering::SeqCst);
                    st.fired = true;
                    return true;
                }
                let idle = !st.armed;
                drop(st);
                let seen = early.unwrap_or_else(|| s.notify.load(Ordering::Acquire));
                if idle {
                    let mut st = s.hub.lock().unwrap();
                    while !st.armed && !st.shutdown {
                        st = s.idle.wait(st).unwrap();
                    }
                    continue;
                }
                s.futex.wait(&s.notify, seen);
                if s.futex.stopped()
                    && s.notify.load(Ordering::SeqCst) == seen
                    && s.hub.lock().unwrap().armed
                {
                    panic!(
                        "{VIOLATION}: the hub slept through the publish (notify {seen}) \
                         with its consumer armed: a lost wake-up"
                    );
                }
            })
        };

        // The consumer task: nothing at offset 0 yet? Arm.
        let consumer = {
            let s = s.clone();
            thread::spawn(move || {
                if s.ring.hdr.cursor.load(Ordering::Acquire) > 0 {
                    return true;
                }
                let mut st = s.hub.lock().unwrap();
                st.armed = true;
                s.ring.hdr.waiters.fetch_add(1, Ordering::SeqCst);
                // The heavy side of the asymmetric barrier, as `arm` does.
                shmq::protocol::ring::park_barrier();
                let ready = s.ring.hdr.cursor.load(Ordering::SeqCst) > 0;
                if ready {
                    st.armed = false;
                    s.ring.hdr.waiters.fetch_sub(1, Ordering::SeqCst);
                }
                drop(st);
                if !ready {
                    s.idle.notify_all();
                }
                ready
            })
        };

        // The writer publishes offset 0.
        let mut w = loom_tests::owned_writer(&s.ring, 1);
        assert_eq!(
            w.write_slot(&s.ring.hdr, &s.ring.mem, 7, None, &record(7)),
            Ok(0)
        );
        if w.commit(&s.ring.hdr) {
            s.notify.fetch_add(1, Ordering::Release);
            s.futex.wake();
        }

        let ready_itself = consumer.join().unwrap();
        if ready_itself {
            // Not pending: nothing to fire; stop the hub as `Drop` does.
            s.hub.lock().unwrap().shutdown = true;
            s.idle.notify_all();
        }
        // The nap: end any futex sleep (the hub checks why it woke).
        s.futex.stop();
        let fired = hub.join().unwrap();
        assert!(
            ready_itself || fired,
            "{VIOLATION}: the consumer is pending and the hub never fired it"
        );
        assert_eq!(
            s.ring.hdr.waiters.load(Ordering::Relaxed),
            0,
            "{VIOLATION}: an announcement was never taken back"
        );
    }
}

#[test]
#[cfg(not(any(loom_mutant, loom_mutant_fence)))]
fn async_hub_no_lost_wakeup() {
    check("async_hub_no_lost_wakeup", hub_model(false));
}

/// The hub loading `notify` after its scan instead of before: a publish
/// between the scan and that load wakes nobody, and the hub sleeps with the
/// consumer pending. The model must catch it.
#[test]
#[cfg(not(any(loom_mutant, loom_mutant_fence)))]
fn async_hub_notify_loaded_after_scan_is_caught() {
    let msg = loom_tests::expect_violation("async_hub_notify_after_scan", hub_model(true));
    assert!(msg.contains(VIOLATION), "failed for another reason: {msg}");
}
