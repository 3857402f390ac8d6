//! Consumer groups that come and go, across processes: a group that never
//! committed holds a backpressure writer only from where it started reading
//! (issue 11, defect 4); a group entry left half-made by a crashed creator is
//! recovered at once (defect 5); groups are freed after their retention,
//! readers without a group take no entry, and deleting a group with live
//! members is refused unless forced (issue 12).

mod common;
mod group_support;

use std::time::{Duration, Instant};

use common::{tell_parent, ShmGuard};
use group_support::Kid;
use shmq::protocol::group_protocol as proto;
use shmq::protocol::layout::{group_state, KIND_META};
use shmq::protocol::region::Region;
use shmq::{
    Consumer, Error, GroupConsumer, GroupOptions, Overflow, Producer, SeekPolicy, TopicConfig,
    TopicManager,
};

#[test]
fn child_process() {
    let Some((role, args)) = common::child_role() else {
        return;
    };
    let mgr = TopicManager::with_namespace(&args[0]).expect("child manager");
    match role.as_str() {
        // `shmq consume t --group tail --from latest --follow --commit`.
        "tail" => {
            let topic = mgr.open(&args[1]).expect("open");
            let mut c = Consumer::new(&topic, "tail").expect("consumer");
            c.seek(SeekPolicy::Latest).expect("seek");
            tell_parent("ready", c.position(0).unwrap());
            loop {
                let got = c.poll_timeout(64, Duration::from_millis(20)).expect("poll");
                if !got.records.is_empty() {
                    c.commit().expect("commit");
                    tell_parent("read", c.position(0).unwrap());
                }
            }
        }
        // A process whose liveness token the parent records in a group
        // entry; it is then killed.
        "token" => {
            tell_parent("token", mgr.token_id());
            let _ = common::line_from_parent();
        }
        // One request/reply client run: its own group, read, maybe commit, exit.
        "client" => {
            let topic = mgr.open(&args[1]).expect("open");
            let group = &args[2];
            let mut c = Consumer::new(&topic, group).expect("no capacity error");
            c.poll(10).expect("poll");
            if args[3] == "commit" {
                c.commit().expect("commit");
            }
        }
        // A reader without a group.
        "reader" => {
            let topic = mgr.open(&args[1]).expect("open");
            let mut c = Consumer::reader(&topic).expect("reader");
            let got = c.poll(100).expect("poll");
            assert!(matches!(c.commit(), Err(Error::NoGroup)));
            tell_parent("read", got.records.len());
        }
        // A live member of group "busy" until told to check its group.
        "member" => {
            let topic = mgr.open(&args[1]).expect("open");
            let mut c = GroupConsumer::join(&topic, "busy", GroupOptions::default()).expect("join");
            tell_parent("joined", std::process::id());
            assert_eq!(common::line_from_parent().as_deref(), Some("check"));
            let verdict = match c.poll(1).and_then(|_| c.commit()) {
                Err(Error::GroupDeleted { .. }) => "deleted".to_string(),
                other => format!("{other:?}"),
            };
            tell_parent("verdict", verdict);
            let _ = common::line_from_parent();
        }
        r => panic!("unknown role {r}"),
    }
}

fn meta(ns: &str, topic: &str) -> Region {
    Region::attach(&shmq::protocol::name::meta_region(ns, topic), KIND_META)
        .expect("attach meta")
        .expect("meta exists")
}

/// State word and name of group entry `g`.
fn entry(r: &Region, g: u32) -> (u64, String) {
    let geo = r.meta_geometry().unwrap();
    let h = r.group(geo, g).header;
    let len = (h.name_len as usize).min(h.name.len());
    (
        h.state.load(std::sync::atomic::Ordering::Acquire),
        String::from_utf8_lossy(&h.name[..len]).into_owned(),
    )
}

/// The token id of a process that was killed (`kill -9`) after reporting it.
fn dead_token(ns: &str) -> u32 {
    let mut kid = Kid::spawn("token", &[ns]);
    let token: u32 = kid.wait_for("token", |_, _| {}).parse().unwrap();
    kid.kill9();
    token
}

/// Issue 11 defect 4: `consume --group tail --from latest --follow --commit`
/// on a full backpressure topic whose other group caught up must not block
/// the producer: a group that never committed holds from its seek position.
#[test]
fn a_group_that_never_committed_holds_from_where_it_started() {
    if common::child_role().is_some() {
        return;
    }
    let guard = ShmGuard::new("neverc");
    let ns = guard.ns().to_string();
    let mgr = guard.manager();
    let topic = mgr
        .create(
            "t",
            TopicConfig::default()
                .partitions(1)
                .slots(64)
                .slot_size(32)
                .overflow(Overflow::Backpressure),
        )
        .unwrap();
    let mut producer = Producer::new(&topic)
        .unwrap()
        .with_send_timeout(Some(Duration::from_secs(3)));
    // Group "a" reads everything and commits: it holds nothing back.
    let mut a = Consumer::new(&topic, "a").unwrap();
    for i in 0..64u32 {
        producer.try_send(&i.to_le_bytes()).unwrap();
    }
    assert_eq!(a.poll(100).unwrap().records.len(), 64);
    a.commit().unwrap();
    // The follower starts at the latest offset (64) and waits for more.
    let mut kid = Kid::spawn("tail", &[&ns, "t"]);
    assert_eq!(kid.wait_for("ready", |_, _| {}), "64");
    // The topic is full from offset 0's point of view, but nobody needs
    // offsets 0..64 any more: the producer goes on at once.
    let start = Instant::now();
    for i in 64..128u32 {
        producer
            .send(&i.to_le_bytes())
            .unwrap_or_else(|e| panic!("send {i} after {:?}: {e}", start.elapsed()));
    }
    // The follower reads them and commits; the writer can go on after it.
    let mut pos = 0u64;
    while pos < 128 {
        pos = kid.wait_for("read", |_, _| {}).parse().unwrap();
    }
    assert_eq!(a.poll(100).unwrap().records.len(), 64);
    a.commit().unwrap();
    for i in 128..160u32 {
        producer.send(&i.to_le_bytes()).unwrap();
    }
    kid.kill9();
    drop((producer, a, topic, mgr));
    guard.reap_dead_tokens();
    guard.finish();
}

/// Issue 11 defect 5: a creator killed between INIT and READY left its entry
/// in INIT; afterwards every commit took 500 ms, `Consumer::new` 1.5 s, and
/// the group was re-created elsewhere. Now the entry is recovered at once.
#[test]
fn a_group_entry_left_half_made_by_a_dead_creator_is_recovered_at_once() {
    if common::child_role().is_some() {
        return;
    }
    let guard = ShmGuard::new("halfmade");
    let ns = guard.ns().to_string();
    let mgr = guard.manager();
    let topic = mgr
        .create("t", TopicConfig::default().partitions(2))
        .unwrap();
    let mut p = Producer::new(&topic).unwrap();
    for i in 0..10u32 {
        p.send(&i.to_le_bytes()).unwrap();
    }
    // "x" takes entry 0, "g" entry 1 (with a commit); then "x" is deleted.
    drop(Consumer::new(&topic, "x").unwrap());
    let mut g = Consumer::new(&topic, "g").unwrap();
    g.seek(SeekPolicy::Offset(3)).unwrap();
    g.commit().unwrap();
    drop(g);
    topic.delete_group("x", false).unwrap();
    let r = meta(&ns, "t");
    assert_eq!(entry(&r, 1).1, "g");
    // A process creating a group in entry 0 is killed half-way: INIT with
    // its (now dead) token, a half-written name.
    let dead = dead_token(&ns);
    let geo = r.meta_geometry().unwrap();
    let h = r.group(geo, 0).header;
    let free = h.state.load(std::sync::atomic::Ordering::Acquire);
    assert_eq!(proto::entry_state(free), group_state::FREE);
    h.state.store(
        proto::entry_word(group_state::INIT, proto::entry_generation(free) + 1, dead),
        std::sync::atomic::Ordering::Release,
    );

    // The existing group is found at once, at its own index, offsets kept.
    let t0 = Instant::now();
    let mut g = Consumer::new(&topic, "g").unwrap();
    let new_took = t0.elapsed();
    assert_eq!(g.position(0), Some(3), "committed offset lost");
    assert_eq!(g.position(1), Some(3), "committed offset lost");
    let t0 = Instant::now();
    g.commit().unwrap();
    let commit_took = t0.elapsed();
    assert_eq!(entry(&r, 1).1, "g");
    // The abandoned entry was freed by that finder, and a new group reuses it.
    let t0 = Instant::now();
    drop(Consumer::new(&topic, "h").unwrap());
    let create_took = t0.elapsed();
    let (w, name) = entry(&r, 0);
    assert_eq!(
        (proto::entry_state(w), name.as_str()),
        (group_state::READY, "h")
    );
    println!(
        "after a half-made entry: Consumer::new {new_took:?}, commit {commit_took:?}, new group {create_took:?}"
    );
    for (what, took) in [
        ("Consumer::new", new_took),
        ("commit", commit_took),
        ("new group", create_took),
    ] {
        assert!(took < Duration::from_millis(150), "{what} took {took:?}");
    }

    // The supervisor's pass frees one too (entry 2, nobody looking).
    let h2 = r.group(geo, 2).header;
    let free = h2.state.load(std::sync::atomic::Ordering::Acquire);
    h2.state.store(
        proto::entry_word(group_state::INIT, proto::entry_generation(free) + 1, dead),
        std::sync::atomic::Ordering::Release,
    );
    let report =
        shmq::protocol::reclaim::reap(&ns, shmq::protocol::reclaim::ReapOptions::default())
            .unwrap();
    assert!(
        report.actions.iter().any(|a| matches!(
            a,
            shmq::protocol::reclaim::ReapAction::FreedGroup {
                index: 2,
                idle_for: None,
                ..
            }
        )),
        "{:?}",
        report.actions
    );
    assert_eq!(proto::entry_state(entry(&r, 2).0), group_state::FREE);
    drop((g, p, r, topic, mgr));
    guard.reap_dead_tokens();
    guard.finish();
}

/// Issue 12: 200 client processes in sequence, each with its own group,
/// some committing, on a topic with 16 group entries: none gets a capacity
/// error (groups that exited are freed after their retention); readers
/// without a group take no entry; the supervisor frees what is left.
#[test]
fn two_hundred_short_lived_groups_fit_in_sixteen_entries() {
    if common::child_role().is_some() {
        return;
    }
    let runs: usize = std::env::var("SHMQ_TEST_GROUP_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let retention = Duration::from_millis(60);
    let guard = ShmGuard::new("churn");
    let ns = guard.ns().to_string();
    let mgr = guard.manager();
    let topic = mgr
        .create(
            "resp",
            TopicConfig::default()
                .partitions(1)
                .max_groups(16)
                .group_retention(retention),
        )
        .unwrap();
    let mut p = Producer::new(&topic).unwrap();
    p.send(b"hello").unwrap();
    let start = Instant::now();
    for i in 0..runs {
        let group = format!("client-{i}");
        let mode = if i % 2 == 0 { "commit" } else { "none" };
        let mut kid = Kid::spawn("client", &[&ns, "resp", &group, mode]);
        kid.wait_success();
        if i % 50 == 25 {
            let before = topic.stats().unwrap().groups.len();
            let mut r = Kid::spawn("reader", &[&ns, "resp"]);
            assert_eq!(r.wait_for("read", |_, _| {}), "1");
            r.wait_success();
            assert_eq!(
                topic.stats().unwrap().groups.len(),
                before,
                "a reader took a group entry"
            );
        }
    }
    let took = start.elapsed();
    let groups = topic.stats().unwrap().groups.len();
    assert!(groups <= 16);
    println!("{runs} client processes with their own groups in {took:?}; {groups} groups left");
    // After the retention the supervisor frees the rest.
    std::thread::sleep(retention * 2);
    let report =
        shmq::protocol::reclaim::reap(&ns, shmq::protocol::reclaim::ReapOptions::default())
            .unwrap();
    let freed = report
        .actions
        .iter()
        .filter(|a| matches!(a, shmq::protocol::reclaim::ReapAction::FreedGroup { .. }))
        .count();
    assert_eq!(freed, groups, "{:?}", report.actions);
    assert!(topic.stats().unwrap().groups.is_empty());
    drop((p, topic, mgr));
    guard.finish();
}

/// With a retention of 0 the table does fill up, and the error says what to
/// do next.
#[test]
fn a_full_group_table_says_what_to_do() {
    if common::child_role().is_some() {
        return;
    }
    let guard = ShmGuard::new("fulltab");
    let mgr = guard.manager();
    let topic = mgr
        .create(
            "t",
            TopicConfig::default()
                .partitions(1)
                .max_groups(2)
                .group_retention(Duration::ZERO),
        )
        .unwrap();
    let _a = GroupConsumer::join(&topic, "a", GroupOptions::default()).unwrap();
    drop(Consumer::new(&topic, "b").unwrap());
    match Consumer::new(&topic, "c") {
        Err(e @ Error::GroupTableFull { .. }) => {
            let msg = e.to_string();
            assert!(
                matches!(
                    e,
                    Error::GroupTableFull {
                        capacity: 2,
                        live: 1,
                        idle: 1,
                        ..
                    }
                ),
                "{e:?}"
            );
            for needle in [
                "1 with live members",
                "1 without",
                "never freed",
                "shmq group delete t",
                "--max-groups",
            ] {
                assert!(msg.contains(needle), "{needle:?} missing in: {msg}");
            }
        }
        other => panic!("expected GroupTableFull, got {other:?}"),
    }
    topic.delete_group("b", false).unwrap();
    drop(Consumer::new(&topic, "c").unwrap());
    // Capacities are validated at create time.
    for bad in [
        TopicConfig::default().max_groups(0),
        TopicConfig::default().max_groups(5000),
        TopicConfig::default().max_members(0),
        TopicConfig::default().max_members(100_000),
    ] {
        assert!(matches!(
            mgr.create("bad", bad),
            Err(Error::InvalidConfig(_))
        ));
    }
    drop((_a, topic, mgr));
    guard.finish();
}

/// Issue 12: deleting a group with a live member is refused, unless forced;
/// the member then learns it at its next poll/commit. A group without live
/// members is deleted.
#[test]
fn deleting_a_group_with_a_live_member_needs_force() {
    if common::child_role().is_some() {
        return;
    }
    let guard = ShmGuard::new("delgrp");
    let ns = guard.ns().to_string();
    let mgr = guard.manager();
    let topic = mgr
        .create("t", TopicConfig::default().partitions(2))
        .unwrap();
    let mut kid = Kid::spawn("member", &[&ns, "t"]);
    let pid: u32 = kid.wait_for("joined", |_, _| {}).parse().unwrap();
    match topic.delete_group("busy", false) {
        Err(Error::GroupBusy { pids, .. }) => assert_eq!(pids, vec![pid]),
        other => panic!("expected GroupBusy, got {other:?}"),
    }
    assert_eq!(
        topic.stats().unwrap().groups.len(),
        1,
        "refused delete changed nothing"
    );
    topic.delete_group("busy", true).unwrap();
    assert!(topic.stats().unwrap().groups.is_empty());
    kid.say("check");
    assert_eq!(kid.wait_for("verdict", |_, _| {}), "deleted");
    kid.say("exit");
    kid.wait_success();
    // No live member: deleted without force; then it is gone.
    drop(Consumer::new(&topic, "idle").unwrap());
    topic.delete_group("idle", false).unwrap();
    assert!(matches!(
        topic.delete_group("idle", false),
        Err(Error::GroupNotFound { .. })
    ));
    // A member deletes its own group (it leaves first).
    let solo = shmq::ConsumerGroup::join(&topic, "solo", GroupOptions::default()).unwrap();
    solo.delete().unwrap();
    assert!(topic.stats().unwrap().groups.is_empty());
    drop((topic, mgr));
    guard.finish();
}
