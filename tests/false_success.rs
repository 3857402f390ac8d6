//! No false success: an operation that did not do what was asked says so.
//!
//! * A plain consumer's commit on a reclaimed topic is `LeaseExpired` (the
//!   commit would be lost with the topic), as a group commit is.
//! * `open` / `open_or_create` racing a delete report `TopicNotFound` or
//!   `LeaseExpired`, never a "missing partition" `BadRegion`.
//! * `open_or_create` with another configuration than the existing topic's
//!   is `ConfigMismatch`, naming each difference.
//! * `delete` of a name that is a directory reports it and removes nothing
//!   of it. (Delete as another user: `shm-tools/tests/cli.rs`.)

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

mod common;

use common::{shm_path, ShmGuard};
use shmq::protocol::reclaim::{self, ReapOptions};
use shmq::{
    Consumer, Error, Overflow, Producer, RegionProblem, RenewalPolicy, TopicConfig, TopicManager,
};

fn config() -> TopicConfig {
    TopicConfig::default().partitions(2).slots(8).slot_size(64)
}

#[test]
fn plain_commit_on_a_reclaimed_topic_is_lease_expired() {
    let guard = ShmGuard::new("fscommit");
    // Manual renewal, short retention: the supervisor may reclaim it.
    let mgr = guard.manager().with_renewal(RenewalPolicy::Manual);
    let topic = mgr
        .create("t", config().retention(Duration::from_millis(20)))
        .unwrap();
    Producer::new(&topic).unwrap().send(b"x").unwrap();
    let mut c = Consumer::new(&topic, "g").unwrap();
    assert_eq!(c.poll(10).unwrap().records.len(), 1);
    c.commit().unwrap();
    thread::sleep(Duration::from_millis(40));
    let report = reclaim::reap(
        guard.ns(),
        ReapOptions {
            grace: Duration::ZERO,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(!report.actions.is_empty(), "nothing reclaimed");
    assert!(topic.is_reclaimed());
    match c.commit() {
        Err(Error::LeaseExpired { topic }) => assert_eq!(topic, "t"),
        other => panic!("commit after reclaim: {other:?}"),
    }
    match c.commit_offset(0, 1) {
        Err(Error::LeaseExpired { .. }) => {}
        other => panic!("commit_offset after reclaim: {other:?}"),
    }
    drop((c, topic, mgr));
    guard.finish();
}

#[test]
fn plain_commit_on_a_deleted_topic_is_lease_expired() {
    let guard = ShmGuard::new("fsdel");
    let mgr = guard.manager();
    let topic = mgr.create("t", config()).unwrap();
    let mut c = Consumer::new(&topic, "g").unwrap();
    assert!(mgr.delete("t").unwrap());
    assert!(matches!(c.commit(), Err(Error::LeaseExpired { .. })));
    drop((c, topic, mgr));
    guard.finish();
}

/// How each call fared in the race below.
#[derive(Default, Debug)]
struct Tally {
    ok: u64,
    not_found: u64,
    expired: u64,
}

#[test]
fn open_racing_delete_reports_not_found_or_lease_expired() {
    let guard = ShmGuard::new("fsrace");
    let ns = guard.ns().to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let churn = {
        let (ns, stop) = (ns.clone(), stop.clone());
        thread::spawn(move || {
            let mgr = TopicManager::with_namespace(&ns).unwrap();
            let mut cycles = 0u64;
            while !stop.load(Ordering::Relaxed) {
                match mgr.create("t", config()) {
                    Ok(_) | Err(Error::TopicExists { .. }) => {}
                    Err(e) => panic!("create: {e}"),
                }
                mgr.delete("t").unwrap();
                cycles += 1;
            }
            cycles
        })
    };
    let mgr = TopicManager::with_namespace(&ns).unwrap();
    let (mut opened, mut created) = (Tally::default(), Tally::default());
    let start = Instant::now();
    // The first unexpected error; the loop stops there, and the churning
    // thread is stopped before asserting, so a failure leaves nothing behind.
    let mut wrong = None;
    while wrong.is_none() && start.elapsed() < Duration::from_millis(1500) {
        match mgr.open("t") {
            Ok(_) => opened.ok += 1,
            Err(Error::TopicNotFound { .. }) => opened.not_found += 1,
            Err(Error::LeaseExpired { .. }) => opened.expired += 1,
            Err(e) => wrong = Some(format!("open racing delete: {e} ({e:?})")),
        }
        match mgr.open_or_create("t", config()) {
            Ok(_) => created.ok += 1,
            Err(Error::LeaseExpired { .. }) => created.expired += 1,
            Err(e) => wrong = Some(format!("open_or_create racing delete: {e} ({e:?})")),
        }
    }
    stop.store(true, Ordering::Relaxed);
    let cycles = churn.join().unwrap();
    assert_eq!(wrong, None);
    eprintln!("{cycles} create/delete cycles; open {opened:?}; open_or_create {created:?}");
    assert!(cycles > 10, "the race barely ran: {cycles} cycles");
    assert!(created.ok > 0, "{created:?}");
    drop(mgr);
    guard.finish();
}

#[test]
fn open_or_create_with_another_configuration_is_a_config_mismatch() {
    let guard = ShmGuard::new("fsmismatch");
    let mgr = guard.manager();
    let created = config().partitions(4);
    let topic = mgr.create("t", created.clone()).unwrap();
    // The same configuration opens it.
    let again = mgr.open_or_create("t", created.clone()).unwrap();
    assert_eq!(again.config(), topic.config());
    drop(again);

    // 8 partitions asked, 4 exist (and more): each difference is named.
    let asked = created
        .clone()
        .partitions(8)
        .slot_size(128)
        .overflow(Overflow::Backpressure)
        .mode(0o660)
        .retention(Duration::from_secs(60));
    match mgr.open_or_create("t", asked) {
        Err(Error::ConfigMismatch { topic, differences }) => {
            assert_eq!(topic, "t");
            let fields: Vec<&str> = differences.iter().map(|d| d.field).collect();
            assert_eq!(
                fields,
                ["partitions", "slot_size", "retention", "overflow", "mode"]
            );
            assert_eq!(
                (
                    differences[0].asked.as_str(),
                    differences[0].existing.as_str()
                ),
                ("8", "4")
            );
        }
        other => panic!("expected ConfigMismatch, got {other:?}"),
    }
    let err = mgr
        .open_or_create("t", created.clone().slots(16))
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("slots: asked 16, existing 8") && msg.contains("open"),
        "{msg}"
    );
    // `open` takes the topic as it is.
    assert_eq!(mgr.open("t").unwrap().config().partitions, 4);

    drop((topic, mgr));
    guard.finish();
}

#[test]
fn delete_of_a_directory_in_place_of_the_meta_region_is_an_error() {
    let guard = ShmGuard::new("fsdir");
    let mgr = guard.manager();
    let meta = format!("shmq.{}.t.meta", guard.ns());
    std::fs::create_dir(shm_path(&meta)).unwrap();
    let result = mgr.delete("t");
    let open = mgr.open("t");
    std::fs::remove_dir(shm_path(&meta)).unwrap();
    match result {
        Err(Error::BadRegion {
            region,
            problem: RegionProblem::NotAnObject { what },
        }) => {
            assert_eq!((region.as_str(), what), (meta.as_str(), "directory"));
        }
        other => panic!("delete of a directory: {other:?}"),
    }
    match open {
        Err(e @ Error::BadRegion { .. }) => {
            assert!(e.to_string().contains("is a directory"), "{e}")
        }
        other => panic!("open of a directory: {other:?}"),
    }
    drop(mgr);
    guard.finish();
}
