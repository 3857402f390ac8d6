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
//!
//! The default strategy ([`WaitStrategy::Backoff`]) decides when to park:
//! it spins while the next record is expected within its budget (judged
//! from the gaps between the records the consumer received, kept in a
//! [`Pacer`]), yields a few times, then parks (see [`Adaptive`]).

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
    /// The default: the adaptive backoff of [`WaitStrategy::Adaptive`] with
    /// the default budget ([`Adaptive::default`]): spin while the next record
    /// is expected soon (judged from the gaps between the records this
    /// consumer received), then yield a few times, then park on the futex.
    #[default]
    Backoff,
    /// Park on the futex right away: lowest CPU use.
    Park,
    /// The adaptive backoff with a chosen CPU budget (see [`Adaptive`]).
    Adaptive(Adaptive),
}

/// The budget of the adaptive backoff ([`WaitStrategy::Backoff`], the
/// default, or [`WaitStrategy::Adaptive`]).
///
/// A consumer keeps a running average of the gap between the records it
/// receives. A blocking receive that finds nothing then:
/// 1. **spins** until twice that gap has passed since the last record, if
///    the gap is at most `max_spin` (a steady stream: the next record is due
///    within the spin, and waking a parked thread would cost more than the
///    gap, about 20 µs on a VM); for an unknown gap it spins `max_spin`; for
///    a slower stream it spins only `min_spin` (bursts, the rest of a batch);
/// 2. **yields** `yields` times;
/// 3. **parks** on the futex until the writer wakes it.
///
/// **CPU cost** (documented budget): while records arrive at most
/// `max_spin` apart, the waiting consumer spins through the gaps, up to one
/// full CPU (a 100k msg/s stream keeps one core busy); when they arrive
/// further apart, each wait costs at most `min_spin` plus `yields` yields
/// before it parks (at 1,000 msg/s, well under 1 % of a core with the
/// defaults). `cpu_percent` caps the spinning on average: spin time is
/// drawn from a credit that refills at `cpu_percent` % of wall time (at
/// most `max_spin` banked); a wait finding the credit used up spins only
/// `min_spin` (which is never charged). `max_spin: Duration::ZERO` and `min_spin: Duration::ZERO`
/// park at once, like [`WaitStrategy::Park`] after `yields` yields.
///
/// Idea from Aeron's `BackoffIdleStrategy` (spin, then yield, then park),
/// with the spin phase bounded by time and by the observed gap rather than
/// by a fixed count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Adaptive {
    /// Longest one wait spins (default 100 µs). Streams whose records come
    /// at most this far apart are waited for spinning.
    pub max_spin: Duration,
    /// How long a wait always spins first (default 2 µs).
    pub min_spin: Duration,
    /// `sched_yield` calls between spinning and parking (default 4).
    pub yields: u32,
    /// Average share of one CPU, in percent, that spinning may use (default
    /// 100: bounded by `max_spin` and the stream's rate only). Values above
    /// 100 count as 100.
    pub cpu_percent: u32,
}

impl Default for Adaptive {
    fn default() -> Self {
        Adaptive {
            max_spin: Duration::from_micros(100),
            min_spin: Duration::from_micros(2),
            yields: 4,
            cpu_percent: 100,
        }
    }
}

impl Adaptive {
    fn max_spin_ns(&self) -> u64 {
        self.max_spin.as_nanos().min(u128::from(u64::MAX / 8)) as u64
    }
    fn min_spin_ns(&self) -> u64 {
        self.min_spin.as_nanos().min(u128::from(u64::MAX / 8)) as u64
    }
}

/// What the adaptive backoff did, counted per consumer (for tests and
/// benches: its behaviour is checked by these counts, never by timing).
#[doc(hidden)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WaitCounters {
    /// Waits that found nothing and entered the backoff.
    pub waits: u64,
    /// Spin rounds (one poll and one `pause` each).
    pub spins: u64,
    /// `sched_yield` calls.
    pub yields: u64,
    /// Futex parks (each may return at once if a record is already there).
    pub parks: u64,
}

/// A consumer's memory for the adaptive backoff: the average gap between the
/// records it received, and its spin credit. Pure arithmetic on times passed
/// in (monotonic nanoseconds), so it is tested without clocks.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pacer {
    /// Average gap between deliveries (ns); 0 = not known yet.
    gap_ns: u64,
    /// Time of the last delivery; 0 = none yet.
    last_ns: u64,
    /// Spin time this consumer may still spend beyond `min_spin` (ns).
    credit_ns: u64,
    /// When `credit_ns` was last refilled; 0 = never (starts full).
    credit_at_ns: u64,
    /// Deliveries since `last_ns` that did not read the clock (records that
    /// were already there: no wait, so no clock read on that path).
    unclocked: u32,
    /// What the waits did.
    pub counters: WaitCounters,
}

impl Pacer {
    /// Deliveries (without waiting) this pacer may count without reading
    /// the clock before the next one reads it.
    const UNCLOCKED_MAX: u32 = 64;

    /// A record was there without any wait: counted, and averaged into the
    /// gap at the next delivery that reads the clock. Returns `false` when
    /// this one must read the clock instead ([`Pacer::delivered`]).
    pub fn delivered_unclocked(&mut self) -> bool {
        if self.last_ns == 0 || self.unclocked >= Self::UNCLOCKED_MAX {
            return false;
        }
        self.unclocked += 1;
        true
    }

    /// A record (or loss event) was delivered at `now`.
    pub fn delivered(&mut self, cfg: &Adaptive, now: u64) {
        let n = u64::from(self.unclocked) + 1;
        self.unclocked = 0;
        if self.last_ns != 0 && now >= self.last_ns {
            // The average gap over the deliveries since the last clocked
            // one. A long pause (an idle stream) is clamped, so that one
            // pause does not make a fast stream look slow for long.
            let sample = ((now - self.last_ns) / n).min(cfg.max_spin_ns().saturating_mul(4));
            self.gap_ns = if self.gap_ns == 0 {
                sample.max(1)
            } else {
                (self.gap_ns - self.gap_ns / 8 + sample / 8).max(1)
            };
        }
        self.last_ns = now;
    }

    /// The average gap between deliveries in nanoseconds, if known.
    pub fn gap_ns(&self) -> Option<u64> {
        (self.gap_ns != 0).then_some(self.gap_ns)
    }

    /// A wait that found nothing starts at `now`: until when it spins.
    pub fn plan(&mut self, cfg: &Adaptive, now: u64) -> u64 {
        self.refill(cfg, now);
        let max = cfg.max_spin_ns();
        let want = if self.gap_ns == 0 || self.last_ns == 0 {
            max
        } else if self.gap_ns > max {
            0
        } else {
            // Until twice the usual gap has passed since the last record.
            self.last_ns
                .saturating_add(self.gap_ns.saturating_mul(2))
                .saturating_sub(now)
                .min(max)
        };
        let spin = want.min(self.credit_ns).max(cfg.min_spin_ns());
        now.saturating_add(spin)
    }

    /// A wait that started at `start` spun (and yielded) until `end`.
    pub fn charge(&mut self, cfg: &Adaptive, start: u64, end: u64) {
        let beyond_min = end.saturating_sub(start).saturating_sub(cfg.min_spin_ns());
        self.credit_ns = self.credit_ns.saturating_sub(beyond_min);
    }

    fn refill(&mut self, cfg: &Adaptive, now: u64) {
        let cap = cfg.max_spin_ns();
        if self.credit_at_ns == 0 {
            self.credit_ns = cap;
        } else {
            let pct = u64::from(cfg.cpu_percent.min(100));
            let earned = now.saturating_sub(self.credit_at_ns).saturating_mul(pct) / 100;
            self.credit_ns = self.credit_ns.saturating_add(earned).min(cap);
        }
        self.credit_at_ns = now.max(1);
    }
}

/// Longest single sleep of a reader whose process could not register for
/// membarrier (see `park`).
const FALLBACK_PARK: Duration = Duration::from_millis(10);

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

/// Where the adaptive backoff of one wait stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Spinning until the time in `Waiter::spin_until`.
    Spin,
    /// Yielding; this many yields left.
    Yield(u32),
    /// Parking (since `Waiter::spun_until`).
    Park,
}

/// Wait state of one blocking call: moves from spinning to yielding to
/// parking. Carries the consumer's [`Pacer`] (handed back by
/// [`Waiter::delivered`] or [`Waiter::gave_up`]).
pub(crate) struct Waiter {
    strategy: WaitStrategy,
    round: u32,
    partitions_seen: Option<u32>,
    pacer: Pacer,
    phase: Phase,
    start_ns: u64,
    spin_until: u64,
    spun_until: u64,
}

/// The adaptive backoff reads the clock once every this many spin rounds.
const CLOCK_EVERY: u32 = 8;

impl Waiter {
    pub(crate) fn new(strategy: WaitStrategy, pacer: Pacer) -> Self {
        Waiter {
            strategy,
            round: 0,
            partitions_seen: None,
            pacer,
            phase: Phase::Spin,
            start_ns: 0,
            spin_until: 0,
            spun_until: 0,
        }
    }

    fn adaptive(&self) -> Option<Adaptive> {
        match self.strategy {
            WaitStrategy::Backoff => Some(Adaptive::default()),
            WaitStrategy::Adaptive(a) => Some(a),
            _ => None,
        }
    }

    /// Also stop parking once the topic has more than `seen` partitions
    /// (for readers that pick up new partitions).
    pub(crate) fn watch_growth(&mut self, seen: Option<u32>) {
        self.partitions_seen = seen;
    }

    /// The wait ends with something delivered: the pacer, updated with the
    /// delivery time and the spin time spent.
    pub(crate) fn delivered(mut self) -> Pacer {
        let Some(cfg) = self.adaptive() else {
            return self.pacer;
        };
        if self.round == 0 && self.pacer.delivered_unclocked() {
            // Nothing waited: no clock read on this path.
            return self.pacer;
        }
        let now = os::monotonic_ns();
        let mut pacer = self.finish(&cfg, now);
        pacer.delivered(&cfg, now);
        pacer
    }

    /// The wait ends without a delivery (timeout): the pacer, charged with
    /// the spin time spent.
    pub(crate) fn gave_up(self) -> Pacer {
        let Some(cfg) = self.adaptive() else {
            return self.pacer;
        };
        if self.start_ns == 0 {
            return self.pacer;
        }
        self.finish(&cfg, os::monotonic_ns())
    }

    fn finish(mut self, cfg: &Adaptive, now: u64) -> Pacer {
        if self.start_ns != 0 {
            let end = if self.phase == Phase::Park {
                self.spun_until
            } else {
                now
            };
            self.pacer.charge(cfg, self.start_ns, end);
        }
        self.pacer
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
            WaitStrategy::Backoff | WaitStrategy::Adaptive(_) => {
                let cfg = self.adaptive().unwrap_or_default();
                self.backoff(&cfg, meta, parts, deadline);
            }
        }
    }

    fn backoff<'a>(
        &mut self,
        cfg: &Adaptive,
        meta: &MetaHeader,
        parts: impl Iterator<Item = (&'a PartitionHeader, u64)> + Clone,
        deadline: Option<Instant>,
    ) {
        let c = &mut self.pacer.counters;
        if self.round == 1 {
            let now = os::monotonic_ns().max(1);
            c.waits = c.waits.saturating_add(1);
            self.start_ns = now;
            self.spin_until = self.pacer.plan(cfg, now);
            if now >= self.spin_until {
                self.phase = Phase::Yield(cfg.yields);
                self.spun_until = now;
            }
        } else if self.phase == Phase::Spin && self.round % CLOCK_EVERY == 0 {
            let now = os::monotonic_ns();
            if now >= self.spin_until {
                self.phase = Phase::Yield(cfg.yields);
                self.spun_until = now;
            }
        }
        let c = &mut self.pacer.counters;
        match self.phase {
            Phase::Spin => {
                c.spins = c.spins.saturating_add(1);
                spin_hint();
            }
            Phase::Yield(left) if left > 0 => {
                c.yields = c.yields.saturating_add(1);
                self.phase = Phase::Yield(left - 1);
                yield_now();
            }
            Phase::Yield(_) | Phase::Park => {
                if self.phase != Phase::Park {
                    self.phase = Phase::Park;
                    self.spun_until = os::monotonic_ns();
                }
                c.parks = c.parks.saturating_add(1);
                park(meta, parts, deadline, self.partitions_seen);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: u64 = 1_000;

    fn cfg() -> Adaptive {
        Adaptive::default()
    }

    /// A pacer that saw `n` records `gap` apart, the last at the returned time.
    fn steady(p: &mut Pacer, cfg: &Adaptive, gap: u64, n: u64) -> u64 {
        let mut t = 1_000_000;
        for _ in 0..n {
            t += gap;
            p.delivered(cfg, t);
        }
        t
    }

    #[test]
    fn an_unknown_stream_spins_the_full_budget() {
        let mut p = Pacer::default();
        let now = 5_000_000;
        assert_eq!(p.plan(&cfg(), now), now + 100 * US);
    }

    #[test]
    fn a_steady_stream_is_waited_for_spinning_through_its_gap() {
        let c = cfg();
        let mut p = Pacer::default();
        let last = steady(&mut p, &c, 10 * US, 20);
        assert_eq!(p.gap_ns(), Some(10 * US));
        // 1 µs after the last record: spin until twice the gap has passed.
        let now = last + US;
        assert_eq!(p.plan(&c, now), last + 20 * US);
    }

    #[test]
    fn a_slow_stream_spins_only_the_minimum_then_parks() {
        let c = cfg();
        let mut p = Pacer::default();
        let last = steady(&mut p, &c, 1_000 * US, 20);
        assert!(p.gap_ns().unwrap() > 100 * US);
        let now = last + US;
        assert_eq!(p.plan(&c, now), now + 2 * US);
    }

    #[test]
    fn records_taken_without_waiting_are_averaged_into_the_gap() {
        let c = cfg();
        let mut p = Pacer::default();
        let mut t = steady(&mut p, &c, 10 * US, 20);
        // Nine records found without a wait, then one that read the clock
        // 10 * 8 µs later: an 8 µs gap on average, not 80 µs.
        for _ in 0..9 {
            assert!(p.delivered_unclocked());
        }
        t += 80 * US;
        p.delivered(&c, t);
        assert!(p.gap_ns().unwrap() < 10 * US, "{:?}", p.gap_ns());
        // The count is bounded: then a delivery must read the clock.
        for _ in 0..Pacer::UNCLOCKED_MAX {
            assert!(p.delivered_unclocked());
        }
        assert!(!p.delivered_unclocked());
    }

    #[test]
    fn a_late_record_ends_the_spin_at_the_minimum() {
        let c = cfg();
        let mut p = Pacer::default();
        let last = steady(&mut p, &c, 10 * US, 20);
        // Already 30 µs since the last record: past twice the gap.
        let now = last + 30 * US;
        assert_eq!(p.plan(&c, now), now + 2 * US);
    }

    #[test]
    fn one_long_pause_does_not_stop_the_spinning_for_long() {
        let c = cfg();
        let mut p = Pacer::default();
        let mut t = steady(&mut p, &c, 10 * US, 20);
        t += 1_000_000_000; // one second of silence
        p.delivered(&c, t);
        let mut spun = None;
        for k in 1..=16 {
            t += 10 * US;
            p.delivered(&c, t);
            if p.gap_ns().unwrap() <= 100 * US {
                spun = Some(k);
                break;
            }
        }
        let k = spun.expect("the pacer never recovered from the pause");
        assert!(k <= 8, "took {k} records to recover");
        let now = t + US;
        assert!(p.plan(&c, now) > now + 2 * US);
    }

    #[test]
    fn the_cpu_budget_caps_spinning() {
        let c = Adaptive {
            cpu_percent: 10,
            ..Adaptive::default()
        };
        let mut p = Pacer::default();
        let mut t = steady(&mut p, &c, 50 * US, 20);
        // Each wait would spin through a 50 µs gap: five times what the
        // 10 % share refills. The banked credit runs out and the spin drops
        // to what the share earns per gap (5 µs) beyond the uncharged
        // minimum (2 µs).
        let mut plans = Vec::new();
        for _ in 0..20 {
            let start = t + US;
            let until = p.plan(&c, start);
            plans.push(until - start);
            t += 50 * US;
            p.charge(&c, start, t.min(until));
            p.delivered(&c, t);
        }
        assert!(plans[0] > 40 * US, "{plans:?}");
        assert_eq!(*plans.last().unwrap(), 7 * US, "{plans:?}");
        // With the full share the same stream keeps spinning.
        let c = Adaptive::default();
        let mut p = Pacer::default();
        let mut t = steady(&mut p, &c, 50 * US, 20);
        for _ in 0..20 {
            let start = t + US;
            let until = p.plan(&c, start);
            assert_eq!(until - start, 99 * US);
            t += 50 * US;
            p.charge(&c, start, t.min(until));
            p.delivered(&c, t);
        }
    }

    #[test]
    fn a_zero_budget_never_spins() {
        let c = Adaptive {
            max_spin: Duration::ZERO,
            min_spin: Duration::ZERO,
            yields: 0,
            cpu_percent: 0,
        };
        let mut p = Pacer::default();
        assert_eq!(p.plan(&c, 7), 7);
        let t = steady(&mut p, &c, 10 * US, 5);
        assert_eq!(p.plan(&c, t + 1), t + 1);
    }
}
