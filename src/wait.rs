//! Waiting for new records: wait strategies and the cross-process futex.
//!
//! A reader that wants to block announces itself in the `waiters` count of
//! every partition it waits on, re-checks their cursors, and only then sleeps
//! on the topic's `notify` futex word (in the meta header, so one sleep covers
//! any number of partitions). The writer's cursor update is a plain Release
//! store followed by a load of `waiters` (`ring::Writer::commit`), ordered by
//! the hot side of an asymmetric barrier (a compiler fence in a process
//! registered for `membarrier`, else a SeqCst fence); the parking reader
//! issues the heavy side (`membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)`,
//! `ring::park_barrier`) between its `waiters` bump and its cursor re-check.
//! So either the reader sees the new cursor or the writer sees the waiter
//! and wakes it: no lost wake-up, and no syscall on `send` while nobody is
//! parked (`loom-tests/tests/parking.rs`).

use std::time::{Duration, Instant};

use crate::layout::{MetaHeader, PartitionHeader};
use crate::os;
use crate::sync::{spin_hint, yield_now, AtomicU64, Ordering};

/// How a blocking receive waits for the next record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WaitStrategy {
    /// Spin on the CPU: lowest latency, burns a core.
    BusySpin,
    /// Give up the time slice between checks.
    Yield,
    /// Spin briefly, then yield, then park on the futex (the default).
    #[default]
    Backoff,
    /// Park on the futex right away: lowest CPU use.
    Park,
}

/// Longest single sleep of a reader whose process could not register for
/// membarrier (see `park`).
const FALLBACK_PARK: Duration = Duration::from_millis(10);

/// Spins of `Backoff` before it starts yielding.
const SPINS: u32 = 1000;
/// Yields of `Backoff` before it parks.
const YIELDS: u32 = 50;

/// `FUTEX_WAKE` calls this process made (see [`wake_stats`]).
static WAKE_CALLS: AtomicU64 = AtomicU64::new(0);
/// Sleepers the kernel reported woken by them.
static WOKEN: AtomicU64 = AtomicU64::new(0);

/// Futex wake-ups issued by this process's producers since it started.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WakeStats {
    /// `FUTEX_WAKE` system calls made: one per publish that found a reader
    /// parked (announced in a partition's `waiters`); zero while nobody is.
    pub calls: u64,
    /// Parked threads (in any process) the kernel reported woken by them.
    pub woken: u64,
}

/// Futex wake-ups issued by this process so far: a cheap way for tests and
/// `shmq bench` to check that sends make no wake-up syscall while no reader
/// is parked, and that a parked reader was really woken by the kernel.
#[doc(hidden)]
pub fn wake_stats() -> WakeStats {
    WakeStats {
        calls: WAKE_CALLS.load(Ordering::Relaxed),
        woken: WOKEN.load(Ordering::Relaxed),
    }
}

/// Wake every reader parked on the topic.
pub(crate) fn wake_all(meta: &MetaHeader) {
    // SYNC POINT "notify": a reader that loaded the old value before parking
    // finds the word changed and does not sleep (or is woken below).
    meta.notify.fetch_add(1, Ordering::Release);
    let woken = os::futex_wake_count(&meta.notify, i32::MAX);
    WAKE_CALLS.fetch_add(1, Ordering::Relaxed);
    WOKEN.fetch_add(u64::from(woken), Ordering::Relaxed);
}

/// Park until one of `parts` (header, offset waited for) publishes past its
/// offset, `deadline` passes, or a spurious wake-up.
///
/// `partitions_seen`: the topic's partition count the caller's last poll
/// saw, if it reads partitions added later; a larger published count also
/// ends the wait (the grower bumps `notify` after publishing, so a count
/// published before `notify` was loaded is seen here).
pub(crate) fn park<'a>(
    meta: &MetaHeader,
    parts: impl Iterator<Item = (&'a PartitionHeader, u64)> + Clone,
    deadline: Option<Instant>,
    partitions_seen: Option<u32>,
) {
    let seen = meta.notify.load(Ordering::Acquire);
    // SYNC POINT "partition published" (see `crate::growth`).
    if partitions_seen.is_some_and(|n| meta.partition_count.load(Ordering::Acquire) > n) {
        return;
    }
    for (hdr, _) in parts.clone() {
        hdr.waiters.fetch_add(1, Ordering::SeqCst);
    }
    // SYNC POINT "park": the heavy side of the asymmetric barrier, paired
    // with the writer's cursor store, light barrier and `waiters` load in
    // `ring::Writer::commit` (see `ring::park_barrier`).
    crate::ring::park_barrier();
    let ready = parts
        .clone()
        .any(|(hdr, offset)| hdr.cursor.load(Ordering::Acquire) > offset);
    if !ready {
        let mut timeout = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if os::barrier_mode() != os::BarrierMode::Membarrier {
            // Without membarrier our barrier is a plain fence, which does
            // not order a writer in a process that *could* register (it
            // publishes behind a compiler fence only). Never possible on one
            // kernel unless a sandbox refuses membarrier to this process
            // alone; bound the sleep so such a wake-up is late, not lost.
            timeout = Some(timeout.map_or(FALLBACK_PARK, |t| t.min(FALLBACK_PARK)));
        }
        if timeout != Some(Duration::ZERO) {
            os::futex_wait(&meta.notify, seen, timeout);
        }
    }
    for (hdr, _) in parts {
        hdr.waiters.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Wait state of one blocking call: counts rounds to move from spinning to
/// yielding to parking.
pub(crate) struct Waiter {
    strategy: WaitStrategy,
    round: u32,
    partitions_seen: Option<u32>,
}

impl Waiter {
    pub(crate) fn new(strategy: WaitStrategy) -> Self {
        Waiter {
            strategy,
            round: 0,
            partitions_seen: None,
        }
    }

    /// Also stop parking once the topic has more than `seen` partitions
    /// (for readers that pick up new partitions).
    pub(crate) fn watch_growth(&mut self, seen: Option<u32>) {
        self.partitions_seen = seen;
    }

    /// Wait once. `parts` are the partitions waited on with the offset each
    /// reader wants next.
    pub(crate) fn wait<'a>(
        &mut self,
        meta: &MetaHeader,
        parts: impl Iterator<Item = (&'a PartitionHeader, u64)> + Clone,
        deadline: Option<Instant>,
    ) {
        self.round = self.round.saturating_add(1);
        match self.strategy {
            WaitStrategy::BusySpin => spin_hint(),
            WaitStrategy::Yield => yield_now(),
            WaitStrategy::Park => park(meta, parts, deadline, self.partitions_seen),
            WaitStrategy::Backoff => {
                if self.round < SPINS {
                    spin_hint();
                } else if self.round < SPINS + YIELDS {
                    yield_now();
                } else {
                    park(meta, parts, deadline, self.partitions_seen);
                }
            }
        }
    }
}
