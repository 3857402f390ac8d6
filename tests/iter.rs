//! Blocking iterators (`Consumer::iter`, `GroupConsumer::iter`,
//! `CompetingConsumer::iter`): each step waits for the next record, here
//! published by another process with pauses, so the iterators really block;
//! every record arrives, in order, once.

use std::time::Duration;

mod common;

use common::{
    check_payload, child_role, payload, spawn_child, tell_parent, wait_success, ChildLines,
    ShmGuard,
};
use shmq::{CompetingConsumer, Consumer, GroupConsumer, GroupOptions, Producer, TopicConfig};

const N: u64 = 600;
const SLOT: usize = 64;

/// Child roles; returns at once in a normal test run.
#[test]
fn child_process() {
    let Some((role, args)) = child_role() else {
        return;
    };
    let mgr = shmq::TopicManager::with_namespace(&args[0]).unwrap();
    let topic = mgr.open("t").unwrap();
    match role.as_str() {
        // Send N records, pausing 2 ms every 100 (the readers wait).
        "send" => {
            let mut p = Producer::new(&topic).unwrap();
            tell_parent("ready", "");
            for seq in 0..N {
                if seq % 100 == 0 {
                    std::thread::sleep(Duration::from_millis(2));
                }
                p.send(&payload(seq, SLOT)).unwrap();
            }
        }
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn iterators_wait_for_each_record_of_another_process() {
    let guard = ShmGuard::new("iter");
    let mgr = guard.manager();
    let config = TopicConfig::default()
        .partitions(1)
        .slots(1024)
        .slot_size(SLOT as u64);
    let topic = mgr.create("t", config).unwrap();
    let mut plain = Consumer::new(&topic, "plain").unwrap();
    let mut member = GroupConsumer::join(&topic, "member", GroupOptions::default()).unwrap();
    let mut worker =
        CompetingConsumer::join(&topic, "workers", 0, GroupOptions::default()).unwrap();
    let mut kid = spawn_child("send", &[guard.ns()]);
    let lines = ChildLines::new(&mut kid);
    lines.expect("ready");

    let check = |what: &str, records: Vec<shmq::Result<shmq::Record>>| {
        assert_eq!(records.len() as u64, N, "{what}");
        for (i, r) in records.into_iter().enumerate() {
            let r = r.unwrap();
            assert_eq!(r.offset, i as u64, "{what}");
            assert_eq!(check_payload(&r.value, SLOT), i as u64, "{what}");
        }
    };
    check("Consumer::iter", plain.iter().take(N as usize).collect());
    check(
        "GroupConsumer::iter",
        member.iter().take(N as usize).collect(),
    );
    check(
        "CompetingConsumer::iter",
        worker.iter().take(N as usize).collect(),
    );
    wait_success(&mut kid);
    // Nothing more: the next step would wait (a poll finds nothing).
    assert!(plain.poll(1).unwrap().records.is_empty());
    drop((plain, member, worker, topic, mgr));
    guard.reap_dead_tokens();
    guard.finish();
}
