//! Consumer-group protocols under loom (`shmq::protocol::group_protocol`): two
//! claimers reclaiming a dead member's partitions, the handover of a leaving
//! member's partition (its commit must be visible to the next owner), and
//! competing consumers sharing one partition's cursor (each offset to
//! exactly one member; the low-water mark never passes an unprocessed
//! offset), the recovery of a group entry left in INIT by a dead creator
//! (exactly one owner), and freeing a group against a joining member (the
//! SeqCst fences of "free vs join": removing the one in `still_ready` makes
//! `group_free_vs_join` fail).
#![cfg(loom)]

use loom::sync::atomic::{AtomicBool, Ordering};
use loom::sync::Arc;
use loom::thread;
use loom_tests::{check, VIOLATION};
use shmq::protocol::group_protocol::{self as proto, Me};
use shmq::protocol::layout::{GroupPartition, MemberEntry};

/// "Now" in the models, and the stale threshold.
const NOW: u64 = 1_000;
const STALE: u64 = 100;

/// A group's tables on the heap.
struct Group {
    members: Vec<MemberEntry>,
    parts: Vec<GroupPartition>,
}

impl Group {
    fn new(members: usize, parts: usize) -> Group {
        Group {
            members: (0..members).map(|_| MemberEntry::new()).collect(),
            parts: (0..parts).map(|_| GroupPartition::new()).collect(),
        }
    }

    /// Put a fully joined member with `token` and `heartbeat` into entry `i`
    /// (set up before the threads start, so plain stores).
    fn seat(&self, i: usize, token: u32, heartbeat: u64, role: u32) -> Me {
        let id = proto::member_id(1, token);
        let m = &self.members[i];
        m.heartbeat_ns.store(heartbeat, Ordering::Relaxed);
        m.role.store(role, Ordering::Relaxed);
        m.id.store(id, Ordering::Release);
        Me { index: i, id }
    }
}

const DEAD: u32 = 1;

/// Member 0 (token `DEAD`) claimed both partitions and died. Members 1 and 2
/// run a claim pass at the same time. Exactly one of them evicts the dead
/// member; each takes one partition; no partition is claimed by both; at the
/// end every partition's owner word is the member that reported it.
fn reclaim_model() {
    let g = Arc::new(Group::new(3, 2));
    let dead = g.seat(0, DEAD, NOW, 0);
    for gp in &g.parts {
        gp.owner.store(dead.word(), Ordering::Relaxed);
    }
    let b = g.seat(1, 2, NOW, 0);
    let c = g.seat(2, 3, NOW, 0);
    let spawn = |me: Me| {
        let g = g.clone();
        thread::spawn(move || {
            let out = proto::claim_pass(&g.members, &g.parts, me, NOW, STALE, |t| t != DEAD)
                .expect("a live member is never evicted");
            for &p in &out.owned {
                assert!(
                    proto::owns(&g.parts[p as usize], me.word()),
                    "{VIOLATION}: member {} reported partition {p} it does not own",
                    me.index
                );
            }
            out
        })
    };
    let tb = spawn(b);
    let tc = spawn(c);
    let ob = tb.join().unwrap();
    let oc = tc.join().unwrap();
    assert!(
        ob.owned.iter().all(|p| !oc.owned.contains(p)),
        "{VIOLATION}: both claim a partition: {:?} / {:?}",
        ob.owned,
        oc.owned
    );
    assert_eq!(
        ob.evicted + oc.evicted,
        1,
        "{VIOLATION}: the dead member was evicted {} times",
        ob.evicted + oc.evicted
    );
    assert_eq!(
        proto::token_of(g.members[0].id.load(Ordering::Relaxed)),
        0,
        "{VIOLATION}: dead member still seated"
    );
    assert_eq!(
        (ob.owned.len(), oc.owned.len()),
        (1, 1),
        "{VIOLATION}: not a fair split: {:?} / {:?}",
        ob.owned,
        oc.owned
    );
    for (p, gp) in g.parts.iter().enumerate() {
        let w = gp.owner.load(Ordering::Relaxed);
        let holder = if ob.owned.contains(&(p as u32)) { b } else { c };
        assert_eq!(
            w,
            holder.word(),
            "{VIOLATION}: partition {p} owner word {w:#x} is not its reported holder"
        );
    }
}

#[test]
fn group_two_claimers_reclaim_a_dead_member() {
    check("group_two_claimers_reclaim_a_dead_member", reclaim_model);
}

/// Member A (live) owns partition 0, commits offset 5 and leaves, while
/// member B runs claim passes. If B ends up with the partition, it sees A's
/// commit (SYNC POINT "handover"); A's word owns nothing at the end.
fn handover_model() {
    let g = Arc::new(Group::new(2, 1));
    let a = g.seat(0, 1, NOW, 0);
    let b = g.seat(1, 2, NOW, 0);
    g.parts[0].owner.store(a.word(), Ordering::Relaxed);
    let ta = {
        let g = g.clone();
        thread::spawn(move || {
            proto::advance_committed(&g.parts[0], 5);
            proto::leave(&g.members, &g.parts, a.index, a.id);
        })
    };
    let mut got = false;
    for _ in 0..2 {
        let out = proto::claim_pass(&g.members, &g.parts, b, NOW, STALE, |_| true)
            .expect("B is never evicted");
        if out.owned.contains(&0) {
            got = true;
            assert_eq!(
                proto::committed_floor(&g.parts[0]),
                Some(5),
                "{VIOLATION}: new owner does not see the previous owner's commit"
            );
            break;
        }
    }
    ta.join().unwrap();
    assert!(
        !proto::owns(&g.parts[0], a.word()),
        "{VIOLATION}: a member that left still owns the partition"
    );
    if got {
        assert!(proto::owns(&g.parts[0], b.word()), "{VIOLATION}: lost it");
    }
}

#[test]
fn group_handover_carries_the_commit() {
    check("group_handover_carries_the_commit", handover_model);
}

/// Offsets the writer has published in the competing model.
const PUBLISHED: u64 = 3;

/// Two competing consumers drain offsets `0..3` from the shared cursor in
/// batches of at most 2 while a third thread computes the low-water mark.
/// Each offset is processed by exactly one member, all are processed, and
/// the low-water mark never covers an offset not yet processed.
fn competing_model() {
    let g = Arc::new(Group::new(2, 1));
    let role = 1; // partition 0
    g.seat(0, 1, NOW, role);
    g.seat(1, 2, NOW, role);
    proto::position_shared(&g.parts[0], 0);
    let done: Arc<Vec<AtomicBool>> =
        Arc::new((0..PUBLISHED).map(|_| AtomicBool::new(false)).collect());
    let worker = |i: usize| {
        let g = g.clone();
        let done = done.clone();
        thread::spawn(move || {
            let me = &g.members[i];
            let mut mine = Vec::new();
            while let Some(b) = proto::claim_batch(&g.parts[0], me, None, 0, PUBLISHED, 2) {
                for o in b.lo..b.hi {
                    let was = done[o as usize].swap(true, Ordering::Release);
                    assert!(!was, "{VIOLATION}: offset {o} delivered twice");
                    mine.push(o);
                }
                proto::finish_batch(me, None);
                if let Some(lw) = proto::low_water(&g.parts[0], &g.members, role) {
                    proto::advance_committed(&g.parts[0], lw);
                }
            }
            // Nothing left: the next poll's commit (what `CompetingConsumer`
            // does at the start of every poll).
            proto::finish_batch(me, None);
            if let Some(lw) = proto::low_water(&g.parts[0], &g.members, role) {
                proto::advance_committed(&g.parts[0], lw);
            }
            mine
        })
    };
    let w0 = worker(0);
    let w1 = worker(1);
    // Observer: whatever the low-water mark says is processed, is.
    let lw = proto::low_water(&g.parts[0], &g.members, role).expect("positioned");
    for o in 0..lw {
        assert!(
            done[o as usize].load(Ordering::Acquire),
            "{VIOLATION}: low-water {lw} passes unprocessed offset {o}"
        );
    }
    let mut all = w0.join().unwrap();
    all.extend(w1.join().unwrap());
    all.sort_unstable();
    assert_eq!(
        all,
        (0..PUBLISHED).collect::<Vec<_>>(),
        "{VIOLATION}: not every offset exactly once"
    );
    assert_eq!(
        proto::low_water(&g.parts[0], &g.members, role),
        Some(PUBLISHED),
        "{VIOLATION}: low-water stuck"
    );
    assert_eq!(
        proto::committed_floor(&g.parts[0]),
        Some(PUBLISHED),
        "{VIOLATION}: committed not advanced to the end (next {}, work_lo {} {})",
        g.parts[0].next.load(Ordering::Relaxed),
        g.members[0].work_lo.load(Ordering::Relaxed),
        g.members[1].work_lo.load(Ordering::Relaxed)
    );
}

#[test]
fn group_competing_consumers_share_a_cursor() {
    check("group_competing_consumers_share_a_cursor", competing_model);
}

/// A competing member died with batch `[0, 2)` in progress. Two peers try
/// to adopt it at once: exactly one gets it, and until it releases the batch
/// the low-water mark stays at its start, so the group never commits past
/// offsets nobody redelivered.
fn adopt_model() {
    let g = Arc::new(Group::new(3, 1));
    let role = 1;
    let dead = g.seat(0, DEAD, NOW, role);
    g.seat(1, 2, NOW, role);
    g.seat(2, 3, NOW, role);
    proto::position_shared(&g.parts[0], 0);
    let b = proto::claim_batch(&g.parts[0], &g.members[dead.index], None, 0, 2, 2);
    assert_eq!(b.map(|b| (b.lo, b.hi)), Some((0, 2)));
    let adopter = |token: u32| {
        let g = g.clone();
        thread::spawn(move || {
            let orphan = proto::find_orphan(&g.members, role, NOW, STALE, |t| t != DEAD)?;
            let a = proto::adopt(&g.members[orphan.index], orphan, token, NOW)?;
            assert_eq!((a.lo, a.hi), (0, 2), "{VIOLATION}: adopted the wrong range");
            assert_eq!(
                proto::low_water(&g.parts[0], &g.members, role),
                Some(0),
                "{VIOLATION}: low-water passed an adopted batch"
            );
            proto::release_adopted(&g.members[a.index], a);
            Some(token)
        })
    };
    let t2 = adopter(2);
    let t3 = adopter(3);
    let got: Vec<u32> = [t2.join().unwrap(), t3.join().unwrap()]
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(got.len(), 1, "{VIOLATION}: adopted by {got:?}");
    assert_eq!(proto::low_water(&g.parts[0], &g.members, role), Some(2));
    assert_eq!(proto::token_of(g.members[0].id.load(Ordering::Relaxed)), 0);
}

#[test]
fn group_dead_competing_batch_is_adopted_once() {
    check("group_dead_competing_batch_is_adopted_once", adopt_model);
}

/// A group entry left in INIT by a creator that died (token `DEAD`). Two
/// finders recover it at once while the "dead" creator's late publish also
/// runs (impossible with kernel-held tokens, but the CAS must hold even
/// then): exactly one of the three ends up owning the entry, the entry is
/// READY with that one's generation, and its name is the winner's.
fn recover_init_model() {
    use shmq::protocol::layout::group_state;
    let state = Arc::new(loom::sync::atomic::AtomicU64::new(0));
    let name = Arc::new(loom::sync::atomic::AtomicU64::new(0));
    let dead_init = proto::entry_word(group_state::INIT, 1, DEAD);
    state.store(dead_init, Ordering::Release);
    let finder = |me: u32| {
        let state = state.clone();
        let name = name.clone();
        thread::spawn(move || {
            let seen = state.load(Ordering::Acquire);
            if proto::entry_health(seen, &mut |t| t != DEAD) != proto::EntryHealth::Abandoned {
                return None;
            }
            let init = proto::claim_entry(&state, seen, me)?;
            name.store(u64::from(me), Ordering::Relaxed);
            proto::publish_entry(&state, init).map(|ready| (me, ready))
        })
    };
    let a = finder(2);
    let b = finder(3);
    let late = {
        let state = state.clone();
        thread::spawn(move || proto::publish_entry(&state, dead_init).map(|r| (DEAD, r)))
    };
    let won: Vec<(u32, u64)> = [a.join().unwrap(), b.join().unwrap(), late.join().unwrap()]
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(won.len(), 1, "{VIOLATION}: entry owned by {won:?}");
    let (who, ready) = won[0];
    let w = state.load(Ordering::Acquire);
    assert_eq!(
        w, ready,
        "{VIOLATION}: entry word {w:#x} is not the winner's"
    );
    assert_eq!(proto::entry_state(w), group_state::READY);
    if who != DEAD {
        assert_eq!(
            name.load(Ordering::Relaxed),
            u64::from(who),
            "{VIOLATION}: name not the winner's"
        );
        assert_ne!(
            proto::entry_generation(w),
            1,
            "{VIOLATION}: generation kept"
        );
    }
}

#[test]
fn group_dead_creator_entry_is_recovered_once() {
    check(
        "group_dead_creator_entry_is_recovered_once",
        recover_init_model,
    );
}

/// A freer (retention or delete) and a joiner race on a READY group with
/// no member. Freer: READY -> FREEING, fence, look for live members, then
/// FREE or back to READY. Joiner: take a member entry, fence, re-check the
/// group word, back out if it changed. Never may the group end FREE while
/// the joiner believes it is a member ("free vs join").
fn free_vs_join_model() {
    use shmq::protocol::layout::group_state;
    let g = Arc::new(Group::new(1, 1));
    let state = Arc::new(loom::sync::atomic::AtomicU64::new(0));
    let ready = proto::entry_word(group_state::READY, 1, 0);
    state.store(ready, Ordering::Release);
    let freer = {
        let g = g.clone();
        let state = state.clone();
        thread::spawn(move || {
            let Some(f) = proto::begin_free(&state, ready, 9) else {
                return false;
            };
            if proto::any_live_member(&g.members, &mut |_| true) {
                proto::abort_free(&state, f);
                false
            } else {
                proto::finish_free(&state, f)
            }
        })
    };
    let joiner = {
        let g = g.clone();
        let state = state.clone();
        thread::spawn(move || {
            let (i, id) = proto::join(&g.members, 2, 2, 0, NOW)?;
            if proto::still_ready(&state, ready) {
                Some(i)
            } else {
                proto::leave(&g.members, &g.parts, i, id);
                None
            }
        })
    };
    let freed = freer.join().unwrap();
    let member = joiner.join().unwrap();
    let w = state.load(Ordering::Acquire);
    assert!(
        !(member.is_some() && proto::entry_state(w) != group_state::READY),
        "{VIOLATION}: a member stayed in a group that was freed (freed {freed}, word {w:#x})"
    );
    assert_eq!(freed, proto::entry_state(w) == group_state::FREE);
}

#[test]
fn group_free_vs_join() {
    check("group_free_vs_join", free_vs_join_model);
}

/// Hostile-peer repairs of the competing consumers' words: the shared
/// cursor was scribbled to `0` and the committed offset to far beyond the
/// writer before two members start. Each repairs what it finds
/// (`claim_checked` with its known position, `repair_committed` before
/// `advance_committed`): every offset still goes to exactly one member, and
/// the committed offset ends at the writer's end, neither stuck high nor
/// left low by a repair with an older low-water mark.
fn competing_repair_model() {
    let g = Arc::new(Group::new(2, 1));
    let role = 1;
    g.seat(0, 1, NOW, role);
    g.seat(1, 2, NOW, role);
    proto::position_shared(&g.parts[0], 0);
    // The scribbles.
    g.parts[0].next.store(0, Ordering::Relaxed);
    g.parts[0].committed.store(1 << 40, Ordering::Relaxed);
    let done: Arc<Vec<AtomicBool>> =
        Arc::new((0..PUBLISHED).map(|_| AtomicBool::new(false)).collect());
    let worker = |i: usize| {
        let g = g.clone();
        let done = done.clone();
        thread::spawn(move || {
            let me = &g.members[i];
            let gp = &g.parts[0];
            let mut known = 0;
            let commit = || {
                if let Some(lw) = proto::low_water(gp, &g.members, role) {
                    let lw = lw.min(PUBLISHED);
                    proto::repair_committed(gp, || PUBLISHED, lw);
                    proto::advance_committed(gp, lw);
                }
            };
            loop {
                let bounds = proto::Bounds {
                    earliest: 0,
                    cursor: PUBLISHED,
                    known: Some(known),
                };
                let Some(b) = proto::claim_checked(gp, me, None, bounds, || PUBLISHED, 2).batch
                else {
                    break;
                };
                known = known.max(b.hi);
                for o in b.lo..b.hi {
                    let was = done[o as usize].swap(true, Ordering::Release);
                    assert!(!was, "{VIOLATION}: offset {o} delivered twice");
                }
                proto::finish_batch(me, None);
                commit();
            }
            proto::finish_batch(me, None);
            commit();
        })
    };
    let w0 = worker(0);
    let w1 = worker(1);
    w0.join().unwrap();
    w1.join().unwrap();
    for (o, d) in done.iter().enumerate() {
        assert!(
            d.load(Ordering::Acquire),
            "{VIOLATION}: offset {o} never delivered"
        );
    }
    assert_eq!(
        proto::committed_floor(&g.parts[0]),
        Some(PUBLISHED),
        "{VIOLATION}: committed not repaired to the end"
    );
}

#[test]
fn group_competing_repairs_scribbled_words() {
    check(
        "group_competing_repairs_scribbled_words",
        competing_repair_model,
    );
}
