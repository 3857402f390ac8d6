//! Topic growth under loom (`shmq::protocol::growth`, the protocol behind a producer
//! that finds no free partition and adds one).
//!
//! The meta region's `partition_count` and `grow` words are the real
//! protocol atomics; a partition "region" is modelled by its identity
//! (`geometry`, a plain field written with `Relaxed` so only the protocol's
//! orderings can make it visible), its writer lease (born owned by the
//! creator, `writer_lease::pack(1, creator)`) and `magic`, stored last with
//! Release like `region::create_with`. Production creates the region with
//! `O_EXCL` and replaces a leftover; here "create" re-initialises the slot.
//!
//! * `growth_vs_poll_and_claim`: a grower adds partition 1 while a reader
//!   polls twice (loads the count, checks every published partition and
//!   tries to claim its writer lease). A reader sees the old count, or the
//!   new count with the partition fully initialised and owned by its
//!   creator; its claims never succeed (every writer is alive); the count
//!   never goes back.
//! * `two_growers_race`: two new producers find every partition held and
//!   both grow. Exactly one owner per partition, distinct partitions, and
//!   the count grew by exactly the two publications. `two_growers_and_a_reader`
//!   adds a reader polling (and trying to claim) while they race.
//! * `grower_dies[…]`: a grower dies after taking the claim with its region
//!   half-made, or after publishing but before releasing the claim; a second
//!   grower (whose liveness probe then says "dead") must take the claim over,
//!   replace the half-made region (or move past the published one), and
//!   publish exactly one partition.
//! * Two in-model mutants prove the reader's checks bite: a grower that
//!   publishes the count before initialising the region, and a reader that
//!   loads the count `Relaxed` instead of Acquire (it may then see the new
//!   count but not the region's fields).
#![cfg(loom)]

use loom::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use loom::sync::Arc;
use loom::thread;
use loom_tests::{check, expect_violation, VIOLATION};
use shmq::protocol::growth::{self, Begin};
use shmq::protocol::writer_lease::{self, pack, unpack};

const MAGIC: u64 = 0x5348_4d51;
const GEO: u64 = 64;
const MAX: u32 = 3;
/// Token of the producer that holds partition 0 (alive throughout).
const HOLDER: u32 = 9;
const A: u32 = 1;
const B: u32 = 2;
const READER: u32 = 7;

/// One partition region.
struct Part {
    magic: AtomicU64,
    /// Stands for every plain header field (geometry, ...): written
    /// `Relaxed` before `magic`, so a reader sees it only through the
    /// protocol's happens-before edges.
    geometry: AtomicU64,
    writer: AtomicU64,
}

impl Part {
    fn new() -> Part {
        Part {
            magic: AtomicU64::new(0),
            geometry: AtomicU64::new(0),
            writer: AtomicU64::new(0),
        }
    }
}

struct Topic {
    count: AtomicU32,
    grow: AtomicU64,
    parts: [Part; MAX as usize],
    /// Liveness of A and B as the kernel would report it: a Release store
    /// at death, read with Acquire by the probe.
    dead: [AtomicBool; 3],
}

impl Topic {
    /// Partition 0 exists and is held by a live producer.
    fn new() -> Arc<Topic> {
        let t = Topic {
            count: AtomicU32::new(1),
            grow: AtomicU64::new(0),
            parts: [Part::new(), Part::new(), Part::new()],
            dead: [
                AtomicBool::new(false),
                AtomicBool::new(false),
                AtomicBool::new(false),
            ],
        };
        init(&t.parts[0], HOLDER);
        Arc::new(t)
    }

    fn is_dead(&self, token: u32) -> bool {
        self.dead
            .get(token as usize)
            .is_some_and(|d| d.load(Ordering::Acquire))
    }

    fn die(&self, token: u32) {
        self.dead[token as usize].store(true, Ordering::Release);
    }
}

/// Create (or replace) a partition region owned by `creator`: fields, then
/// the writer word, then `magic` with Release (SYNC POINT "initialised").
fn init(p: &Part, creator: u32) {
    p.geometry.store(GEO, Ordering::Relaxed);
    p.writer.store(pack(1, creator), Ordering::Relaxed);
    p.magic.store(MAGIC, Ordering::Release);
}

/// Where a grower stops (the rest of the steps never run: it died).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    Never,
    /// Claim taken, region half-made (fields written, no magic).
    HalfMade,
    /// Published, claim not released.
    AfterPublish,
}

/// What `Producer::new` does once it found every partition held: grow.
/// Returns the new partition, or `None` if it stopped (died) on the way.
fn grow(t: &Topic, me: u32, stop: Stop, publish_first: bool) -> Option<u32> {
    loop {
        match growth::begin(&t.grow, &t.count, MAX, me, |o| t.is_dead(o)) {
            Begin::Full => panic!(
                "{VIOLATION}: topic full at count {}",
                t.count.load(Ordering::Relaxed)
            ),
            Begin::Busy { owner, target } => {
                assert_ne!(owner, me, "{VIOLATION}: busy on our own claim");
                assert!(target < MAX, "{VIOLATION}: claim target {target}");
                thread::yield_now();
            }
            Begin::Mine { target, word, .. } => {
                assert_eq!(unpack_target(word), target);
                let part = &t.parts[target as usize];
                if stop == Stop::HalfMade {
                    part.geometry.store(GEO, Ordering::Relaxed);
                    part.writer.store(pack(1, me), Ordering::Relaxed);
                    return None;
                }
                if publish_first {
                    // The mutant: count before region.
                    assert!(growth::publish(&t.count, target));
                    init(part, me);
                } else {
                    init(part, me);
                    assert!(
                        growth::publish(&t.count, target),
                        "{VIOLATION}: lost the count while holding the claim for {target}"
                    );
                }
                if stop == Stop::AfterPublish {
                    return None;
                }
                growth::end(&t.grow, word);
                return Some(target);
            }
        }
    }
}

fn unpack_target(word: u64) -> u32 {
    growth::unpack(word).0
}

/// One poll: every published partition is complete and owned by a live
/// writer. Returns the count it saw. `relaxed` is the mutant reader that
/// loads the count without Acquire.
fn poll(t: &Topic, last: u32, relaxed: bool) -> u32 {
    let n = if relaxed {
        t.count.load(Ordering::Relaxed).min(MAX)
    } else {
        growth::published(&t.count, MAX)
    };
    assert!(n >= last, "{VIOLATION}: count went back from {last} to {n}");
    for p in 0..n {
        let part = &t.parts[p as usize];
        // Relaxed on purpose: only the count's Acquire may make these visible.
        let magic = part.magic.load(Ordering::Relaxed);
        assert_eq!(
            magic, MAGIC,
            "{VIOLATION}: partition {p} published (count {n}) but its magic is {magic:#x}"
        );
        let geo = part.geometry.load(Ordering::Relaxed);
        assert_eq!(
            geo, GEO,
            "{VIOLATION}: partition {p} published but its geometry reads {geo}"
        );
        let claimed = writer_lease::claim(&part.writer, READER, |_| false);
        assert!(
            claimed.is_err(),
            "{VIOLATION}: claimed partition {p} whose creator is alive"
        );
    }
    n
}

fn growth_vs_poll(publish_first: bool, relaxed: bool) {
    let t = Topic::new();
    let g = {
        let t = t.clone();
        thread::spawn(move || grow(&t, A, Stop::Never, publish_first))
    };
    let r = {
        let t = t.clone();
        thread::spawn(move || {
            let n = poll(&t, 1, relaxed);
            poll(&t, n, relaxed);
        })
    };
    let got = g.join().unwrap();
    r.join().unwrap();
    assert_eq!(got, Some(1), "{VIOLATION}: grower got {got:?}");
    assert_eq!(t.count.load(Ordering::Acquire), 2, "{VIOLATION}: count");
    assert_eq!(unpack(t.parts[1].writer.load(Ordering::Acquire)), (1, A));
    assert_eq!(t.grow.load(Ordering::Acquire), 0, "{VIOLATION}: claim left");
}

#[test]
#[cfg(not(any(
    loom_mutant,
    loom_mutant_fence,
    loom_mutant_membarrier,
    loom_mutant_claim
)))]
fn growth_vs_poll_and_claim() {
    check("growth_vs_poll_and_claim", || growth_vs_poll(false, false));
}

fn two_growers(with_reader: bool) {
    let t = Topic::new();
    let spawn = |me: u32| {
        let t = t.clone();
        thread::spawn(move || grow(&t, me, Stop::Never, false))
    };
    let (a, b) = (spawn(A), spawn(B));
    // The reader runs on its own thread: loom did not interleave the
    // growers with loads made by the model's main thread before its joins.
    let reader = with_reader.then(|| {
        let t = t.clone();
        thread::spawn(move || {
            let n = poll(&t, 1, false);
            poll(&t, n, false);
        })
    });
    if let Some(r) = reader {
        r.join().unwrap();
    }
    {
        let (a, b) = (a.join().unwrap(), b.join().unwrap());
        let (Some(a), Some(b)) = (a, b) else {
            panic!("{VIOLATION}: a grower got nothing: {a:?} {b:?}")
        };
        assert_ne!(a, b, "{VIOLATION}: both growers got partition {a}");
        assert_eq!(t.count.load(Ordering::Acquire), 3, "{VIOLATION}: count");
        for (who, p) in [(A, a), (B, b)] {
            let (epoch, owner) = unpack(t.parts[p as usize].writer.load(Ordering::Acquire));
            assert_eq!(
                (epoch, owner),
                (1, who),
                "{VIOLATION}: partition {p} owned by {owner}, created for {who}"
            );
        }
        assert_eq!(t.grow.load(Ordering::Acquire), 0, "{VIOLATION}: claim left");
    }
}

#[test]
#[cfg(not(any(
    loom_mutant,
    loom_mutant_fence,
    loom_mutant_membarrier,
    loom_mutant_claim
)))]
fn two_growers_race() {
    check("two_growers_race", || two_growers(false));
}

#[test]
#[cfg(not(any(
    loom_mutant,
    loom_mutant_fence,
    loom_mutant_membarrier,
    loom_mutant_claim
)))]
fn two_growers_and_a_reader() {
    check("two_growers_and_a_reader", || two_growers(true));
}

fn grower_dies(stop: Stop) {
    let t = Topic::new();
    let a = {
        let t = t.clone();
        thread::spawn(move || {
            let got = grow(&t, A, stop, false);
            assert_eq!(got, None);
            t.die(A);
        })
    };
    let b = {
        let t = t.clone();
        thread::spawn(move || grow(&t, B, Stop::Never, false))
    };
    a.join().unwrap();
    let got = b.join().unwrap();
    let count = t.count.load(Ordering::Acquire);
    match stop {
        // A published partition 1 before dying: B got 2, or B grew first
        // (1) and A then made 2; either way both were published once.
        Stop::AfterPublish => {
            assert_eq!(count, 3, "{VIOLATION}: count {count}");
            let b_part = got.expect("B grew");
            let a_part = 3 - b_part;
            assert_eq!(
                unpack(t.parts[a_part as usize].writer.load(Ordering::Acquire)),
                (1, A)
            );
        }
        // A's half-made region was never published: B replaced it (or B
        // published 1 first, and A's half-made 2 stays unpublished).
        _ => assert_eq!(count, 2, "{VIOLATION}: count {count}"),
    }
    let b_part = got.expect("B grew");
    let part = &t.parts[b_part as usize];
    assert_eq!(part.magic.load(Ordering::Acquire), MAGIC);
    assert_eq!(
        unpack(part.writer.load(Ordering::Acquire)),
        (1, B),
        "{VIOLATION}: owner"
    );
    // The claim is free, or only a dead process's finished or abandoned one.
    let (_, owner) = growth::unpack(t.grow.load(Ordering::Acquire));
    assert!(
        owner == 0 || owner == A,
        "{VIOLATION}: claim left by {owner}"
    );
}

#[test]
#[cfg(not(any(
    loom_mutant,
    loom_mutant_fence,
    loom_mutant_membarrier,
    loom_mutant_claim
)))]
fn grower_dies_half_made() {
    check("grower_dies[half_made]", || grower_dies(Stop::HalfMade));
}

#[test]
#[cfg(not(any(
    loom_mutant,
    loom_mutant_fence,
    loom_mutant_membarrier,
    loom_mutant_claim
)))]
fn grower_dies_after_publish() {
    check("grower_dies[after_publish]", || {
        grower_dies(Stop::AfterPublish)
    });
}

#[test]
#[cfg(not(any(
    loom_mutant,
    loom_mutant_fence,
    loom_mutant_membarrier,
    loom_mutant_claim
)))]
fn growth_mutant_publish_before_init_is_caught() {
    let msg = expect_violation("growth_publish_before_init", || growth_vs_poll(true, false));
    assert!(msg.contains("published"), "{msg}");
}

#[test]
#[cfg(not(any(
    loom_mutant,
    loom_mutant_fence,
    loom_mutant_membarrier,
    loom_mutant_claim
)))]
fn growth_mutant_relaxed_count_is_caught() {
    let msg = expect_violation("growth_relaxed_count", || growth_vs_poll(false, true));
    assert!(msg.contains("published"), "{msg}");
}
