//! The two threads that turn shmq's wake-ups into `Waker` calls.
//!
//! * A **hub** per open topic (per [`Topic`] mapping) in this process: a
//!   thread that sleeps on the topic's `notify` futex word (in the meta
//!   region) while at least one async consumer of the topic is waiting, and
//!   wakes the tasks whose partitions moved. It is started with the first
//!   async consumer of the topic and stopped (and joined) when the last one
//!   is dropped, so it never keeps a deleted topic mapped.
//! * One process-wide **timer** thread: fires deadlines (a group member's
//!   next heartbeat, the periodic "was the topic reclaimed?" check, and the
//!   backoff steps of a producer waiting for room on a backpressure topic).
//!   It sleeps with `thread::park_timeout`, so arming an earlier deadline
//!   wakes only this thread, never another process.
//!
//! # The waiting protocol (the same as a parked blocking reader's)
//!
//! A consumer that found nothing *arms* its slot: under the hub's lock it
//! stores its waker and the `(partition, next offset)` pairs it waits for,
//! adds itself to each partition's `waiters` count (SeqCst), issues the
//! heavy side of the asymmetric barrier (`ring::park_barrier`: membarrier,
//! or a SeqCst fence in the fallback), then re-checks each cursor. Either
//! that re-check sees the new record, or the writer's cursor store, light
//! barrier and load of `waiters` see the announcement, and the writer bumps
//! `notify` and calls `FUTEX_WAKE` (see `crate::wait`). The hub loads `notify` *before*
//! it scans the armed slots and sleeps only while `notify` still holds that
//! value, so a publish after the scan ends the sleep at once and one before
//! it is seen by the scan. Nothing is lost, and a publish while no consumer
//! is armed makes no system call at all.
//!
//! A slot polled again while still armed for the same positions (a
//! `join!` or `select!` sibling woke the task) keeps its announcement: it
//! has stood since its re-check, so nothing can slip past it.
//!
//! Firing a slot disarms it (takes the announcements back) before the task
//! is woken, so a task that stops polling does not make the writer call
//! `FUTEX_WAKE` for ever.
//!
//! Arming, disarming and firing reuse the slot's storage: no allocation once
//! a slot's partition list has grown to its size.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, Weak};
use std::task::Waker;
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

use crate::os;
use crate::sync::{AtomicU32, Ordering};
use crate::topic::{Topic, TopicInner};

/// Longest single futex sleep of a hub (a safety net: every wake-up it
/// waits for is a `FUTEX_WAKE` or a change of `notify`).
const HUB_NAP: Duration = Duration::from_millis(100);

/// A failed thread start as shmq's error (`Error::Os`, `pthread_create`).
fn spawn_error(what: &str, e: &std::io::Error) -> crate::Error {
    crate::Error::Os(os::OsError {
        call: "pthread_create",
        object: what.to_string(),
        errno: nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EAGAIN)),
    })
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind: keep going.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Replace `slot` with a clone of `waker` unless it already wakes the same
/// task (a clone is a reference-count increment for tokio's wakers).
fn store_waker(slot: &mut Option<Waker>, waker: &Waker) {
    match slot {
        Some(w) if w.will_wake(waker) => {}
        _ => *slot = Some(waker.clone()),
    }
}

// ---------------------------------------------------------------------------
// The hub: one per topic mapping.
// ---------------------------------------------------------------------------

#[derive(Default)]
struct Slot {
    in_use: bool,
    armed: bool,
    waker: Option<Waker>,
    /// `(partition, next offset wanted)`: ready once a cursor passes it.
    parts: Vec<(u32, u64)>,
    /// Also ready once the topic has more partitions than this.
    grown_past: Option<u32>,
}

#[derive(Default)]
struct HubState {
    slots: Vec<Slot>,
    armed: usize,
    shutdown: bool,
}

struct HubShared {
    topic: Topic,
    state: Mutex<HubState>,
    /// Signalled when the first slot is armed (the hub sleeps on it while
    /// nothing is armed) and at shutdown.
    idle: Condvar,
    /// 1 while the hub thread is (about to be) in its futex sleep.
    in_futex: AtomicU32,
}

/// Add (`+1`) or take back (`-1`) a waiting announcement on each partition.
fn announce(inner: &TopicInner, parts: &[(u32, u64)], add: bool) {
    for &(p, _) in parts {
        if let Some(part) = inner.mapped(p) {
            // SYNC POINT "park" (see `crate::wait::park`); the caller then
            // issues `ring::park_barrier` before its re-check.
            if add {
                part.header().waiters.fetch_add(1, Ordering::SeqCst);
            } else {
                part.header().waiters.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }
}

/// Whether a slot waiting for `parts` / `grown_past` can make progress.
fn ready(inner: &TopicInner, parts: &[(u32, u64)], grown_past: Option<u32>) -> bool {
    // SYNC POINT "partition published" (see `crate::growth`).
    grown_past.is_some_and(|n| inner.published() > n)
        || inner.reclaimed()
        || parts.iter().any(|&(p, offset)| {
            // SYNC POINT "park": SeqCst, as the blocking reader's re-check.
            inner
                .mapped(p)
                .is_some_and(|part| part.header().cursor.load(Ordering::SeqCst) > offset)
        })
}

impl HubShared {
    fn disarm_slot(&self, st: &mut HubState, i: usize) -> Option<Waker> {
        let slot = &mut st.slots[i];
        if !slot.armed {
            return None;
        }
        slot.armed = false;
        announce(&self.topic.inner, &slot.parts, false);
        let w = slot.waker.take();
        st.armed -= 1;
        w
    }

    fn run(&self) {
        let meta = self.topic.inner.meta.meta_header();
        let mut wake: Vec<Waker> = Vec::new();
        loop {
            // SYNC POINT "notify": loaded before the scan; a publish after
            // the scan changes it, and the futex sleep below returns at once.
            let seen = meta.notify.load(Ordering::Acquire);
            let mut st = lock(&self.state);
            if st.shutdown {
                return;
            }
            for i in 0..st.slots.len() {
                let s = &st.slots[i];
                if s.armed && ready(&self.topic.inner, &s.parts, s.grown_past) {
                    if let Some(w) = self.disarm_slot(&mut st, i) {
                        wake.push(w);
                    }
                }
            }
            let idle = st.armed == 0;
            self.in_futex.store(u32::from(!idle), Ordering::SeqCst);
            drop(st);
            for w in wake.drain(..) {
                w.wake();
            }
            if idle {
                let st = lock(&self.state);
                drop(
                    self.idle
                        .wait_while(st, |s| s.armed == 0 && !s.shutdown)
                        .unwrap_or_else(|e| e.into_inner()),
                );
                continue;
            }
            os::futex_wait(&meta.notify, seen, Some(HUB_NAP));
            self.in_futex.store(0, Ordering::SeqCst);
        }
    }
}

/// A topic's hub: shared by every async consumer of that [`Topic`] mapping
/// in this process; stops its thread when the last one goes.
pub(crate) struct Hub {
    shared: Arc<HubShared>,
    thread: Option<JoinHandle<()>>,
}

/// Live hubs, by the address of their topic's shared state.
static HUBS: Mutex<Vec<(usize, Weak<Hub>)>> = Mutex::new(Vec::new());

impl Hub {
    /// The hub of `topic`, started if it has none.
    fn of(topic: &Topic) -> std::io::Result<Arc<Hub>> {
        let key = Arc::as_ptr(&topic.inner) as usize;
        let mut hubs = lock(&HUBS);
        hubs.retain(|(_, w)| w.strong_count() > 0);
        if let Some(h) = hubs
            .iter()
            .find(|(k, _)| *k == key)
            .and_then(|(_, w)| w.upgrade())
        {
            return Ok(h);
        }
        let shared = Arc::new(HubShared {
            topic: topic.clone(),
            state: Mutex::new(HubState::default()),
            idle: Condvar::new(),
            in_futex: AtomicU32::new(0),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("shmq-hub-{}", topic.name()))
            .spawn(move || s.run())?;
        let hub = Arc::new(Hub {
            shared,
            thread: Some(thread),
        });
        hubs.push((key, Arc::downgrade(&hub)));
        Ok(hub)
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        lock(&self.shared.state).shutdown = true;
        self.shared.idle.notify_all();
        let Some(thread) = self.thread.take() else {
            return;
        };
        if thread.thread().id() == std::thread::current().id() {
            // Dropped by a task the hub itself just woke (an executor that
            // polls inside `wake`): it sees `shutdown` and exits on its own.
            return;
        }
        // Nothing is armed any more (every slot's owner disarmed it before
        // letting go of the hub), but the thread may still be in a futex
        // sleep of up to `HUB_NAP`. Wake it without bumping `notify`: other
        // sleepers on the word (parked readers of any process) see a
        // spurious wake-up, re-check and sleep again. This happens once, when
        // the last async consumer of a topic in this process goes away.
        let notify = &self.shared.topic.inner.meta.meta_header().notify;
        while !thread.is_finished() {
            if self.shared.in_futex.load(Ordering::SeqCst) != 0 {
                os::futex_wake(notify, i32::MAX);
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        let _ = thread.join();
    }
}

/// One async consumer's place in its topic's hub.
pub(crate) struct HubSlot {
    hub: Arc<Hub>,
    index: usize,
    /// Whether this side armed the slot and has not disarmed it since (the
    /// hub may have fired it meanwhile: disarming then finds it disarmed).
    armed: bool,
}

impl HubSlot {
    /// A slot in `topic`'s hub.
    pub(crate) fn new(topic: &Topic) -> crate::Result<HubSlot> {
        let hub = Hub::of(topic).map_err(|e| {
            spawn_error(
                &format!("async wake-up thread of topic {:?}", topic.name()),
                &e,
            )
        })?;
        let index = {
            let mut st = lock(&hub.shared.state);
            let i = match st.slots.iter().position(|s| !s.in_use) {
                Some(i) => i,
                None => {
                    st.slots.push(Slot::default());
                    st.slots.len() - 1
                }
            };
            st.slots[i].in_use = true;
            i
        };
        Ok(HubSlot {
            hub,
            index,
            armed: false,
        })
    }

    /// Wait for `parts` (and growth past `grown_past`): store `waker`,
    /// announce, then re-check. Returns `true` if the re-check found
    /// progress (the slot is then disarmed again: poll at once).
    pub(crate) fn arm(
        &mut self,
        waker: &Waker,
        parts: impl Iterator<Item = (u32, u64)> + Clone,
        grown_past: Option<u32>,
    ) -> bool {
        let shared = &self.hub.shared;
        let inner = &shared.topic.inner;
        let mut st = lock(&shared.state);
        // Still armed for the same positions (polled again before anything
        // came, e.g. by a `join!` or `select!` sibling): the announcement
        // has stood all along, so keep it; only the waker may change.
        let slot = &mut st.slots[self.index];
        if self.armed
            && slot.armed
            && slot.grown_past == grown_past
            && parts.clone().eq(slot.parts.iter().copied())
        {
            store_waker(&mut slot.waker, waker);
            return false;
        }
        let old = shared.disarm_slot(&mut st, self.index);
        self.armed = false;
        let slot = &mut st.slots[self.index];
        store_waker(&mut slot.waker, waker);
        slot.parts.clear();
        slot.parts.extend(parts);
        slot.grown_past = grown_past;
        slot.armed = true;
        announce(inner, &slot.parts, true);
        // SYNC POINT "park": the heavy side of the asymmetric barrier
        // (membarrier, or a SeqCst fence in the fallback), paired with the
        // writer's cursor store, light barrier and `waiters` load in
        // `ring::Writer::commit`, exactly as a parking blocking reader does
        // (`crate::wait::park`). One system call per arm, never per send.
        crate::ring::park_barrier();
        st.armed += 1;
        // The re-check after the announcement (the reader's half of SYNC
        // POINT "park").
        let slot = &st.slots[self.index];
        if ready(inner, &slot.parts, slot.grown_past) {
            let w = shared.disarm_slot(&mut st, self.index);
            drop(st);
            drop((old, w));
            return true;
        }
        let first = st.armed == 1;
        drop(st);
        drop(old);
        if first {
            shared.idle.notify_all();
        }
        self.armed = true;
        false
    }

    /// Take the announcements back (no-op if the hub fired the slot).
    pub(crate) fn disarm(&mut self) {
        if !self.armed {
            return;
        }
        self.armed = false;
        let shared = &self.hub.shared;
        let mut st = lock(&shared.state);
        let w = shared.disarm_slot(&mut st, self.index);
        drop(st);
        drop(w);
    }
}

impl Drop for HubSlot {
    fn drop(&mut self) {
        self.disarm();
        let mut st = lock(&self.hub.shared.state);
        let slot = &mut st.slots[self.index];
        slot.in_use = false;
        slot.waker = None;
    }
}

// ---------------------------------------------------------------------------
// The timer: one per process.
// ---------------------------------------------------------------------------

#[derive(Default)]
struct TimerEntry {
    in_use: bool,
    at: Option<Instant>,
    waker: Option<Waker>,
}

#[derive(Default)]
struct TimerState {
    entries: Vec<TimerEntry>,
    /// When the timer thread means to wake next (`None`: when unparked).
    planned: Option<Instant>,
}

struct Timer {
    state: Mutex<TimerState>,
    thread: Thread,
}

static TIMER: OnceLock<std::io::Result<Timer>> = OnceLock::new();

fn timer() -> Result<&'static Timer, &'static std::io::Error> {
    TIMER
        .get_or_init(|| {
            let thread = std::thread::Builder::new()
                .name("shmq-timer".into())
                .spawn(run_timer)?
                .thread()
                .clone();
            Ok(Timer {
                state: Mutex::new(TimerState::default()),
                thread,
            })
        })
        .as_ref()
}

fn run_timer() {
    // The thread may start before `TIMER` is set: wait for it.
    let t = loop {
        match TIMER.get() {
            Some(Ok(t)) => break t,
            Some(Err(_)) => return,
            None => std::thread::park_timeout(Duration::from_millis(1)),
        }
    };
    let mut wake: Vec<Waker> = Vec::new();
    loop {
        let now = Instant::now();
        let mut st = lock(&t.state);
        let mut next: Option<Instant> = None;
        for e in st.entries.iter_mut() {
            match e.at {
                Some(at) if at <= now => {
                    e.at = None;
                    if let Some(w) = e.waker.take() {
                        wake.push(w);
                    }
                }
                Some(at) => next = Some(next.map_or(at, |n| n.min(at))),
                None => {}
            }
        }
        st.planned = next;
        drop(st);
        for w in wake.drain(..) {
            w.wake();
        }
        match next {
            Some(at) => std::thread::park_timeout(at.saturating_duration_since(Instant::now())),
            None => std::thread::park(),
        }
    }
}

/// One async handle's entry in the process's timer.
pub(crate) struct TimerSlot {
    index: usize,
    armed: bool,
}

impl TimerSlot {
    pub(crate) fn new() -> crate::Result<TimerSlot> {
        let t = timer().map_err(|e| spawn_error("async timer thread", e))?;
        let mut st = lock(&t.state);
        let index = match st.entries.iter().position(|e| !e.in_use) {
            Some(i) => i,
            None => {
                st.entries.push(TimerEntry::default());
                st.entries.len() - 1
            }
        };
        st.entries[index].in_use = true;
        Ok(TimerSlot {
            index,
            armed: false,
        })
    }

    /// Wake `waker` `after` from now (replacing an earlier arming).
    pub(crate) fn arm(&mut self, waker: &Waker, after: Duration) {
        let Ok(t) = timer() else { return };
        let now = Instant::now();
        let at = now.checked_add(after).unwrap_or(now);
        let mut st = lock(&t.state);
        let e = &mut st.entries[self.index];
        store_waker(&mut e.waker, waker);
        e.at = Some(at);
        self.armed = true;
        if st.planned.map_or(true, |p| at < p) {
            st.planned = Some(at);
            drop(st);
            t.thread.unpark();
        }
    }

    /// Cancel the deadline (no-op if it fired).
    pub(crate) fn disarm(&mut self) {
        if !self.armed {
            return;
        }
        self.armed = false;
        let Ok(t) = timer() else { return };
        lock(&t.state).entries[self.index].at = None;
    }
}

impl Drop for TimerSlot {
    fn drop(&mut self) {
        let Ok(t) = timer() else { return };
        let mut st = lock(&t.state);
        let e = &mut st.entries[self.index];
        e.in_use = false;
        e.at = None;
        e.waker = None;
    }
}
