//! In-process smoke test of the basic round trip (cross-process tests live in
//! the other files of this directory).

use shmq::{Consumer, Producer, SeekPolicy, TopicConfig, TopicManager};

#[test]
fn produce_consume_delete_round_trip() {
    let ns = format!("smoke{}", std::process::id());
    let mgr = TopicManager::with_namespace(&ns).unwrap();
    let topic = mgr
        .create(
            "t",
            TopicConfig::default().partitions(2).slots(8).slot_size(64),
        )
        .unwrap();
    let mut p = Producer::new(&topic).unwrap();
    for i in 0..20u32 {
        p.send(&i.to_le_bytes()).unwrap();
    }
    let mut c = Consumer::new(&topic, "g").unwrap();
    c.seek(SeekPolicy::Offset(0)).unwrap();
    let got = c.poll(100).unwrap();
    // 10 per partition, ring of 8: 2 lost per partition, reported exactly.
    assert_eq!(got.records.len(), 16, "{got:?}");
    assert_eq!(got.lagged.iter().map(|l| l.missed).sum::<u64>(), 4);
    c.commit().unwrap();
    let stats = topic.stats().unwrap();
    assert_eq!(stats.groups.len(), 1);
    assert_eq!(stats.groups[0].partitions[0].committed, Some(10));
    drop((p, c, topic));
    assert!(mgr.delete("t").unwrap());
    drop(mgr);
    let left: Vec<_> = std::fs::read_dir("/dev/shm")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(&format!("shmq.{ns}.")))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn renewal_manager_renews_only_when_due_and_reports_reclaim() {
    use shmq::{RenewalManager, RenewalPolicy};
    use std::time::Duration;
    let ns = format!("smokerm{}", std::process::id());
    let mgr = TopicManager::with_namespace(&ns)
        .unwrap()
        .with_renewal(RenewalPolicy::Manual);
    let topic = mgr
        .create(
            "t",
            TopicConfig::default()
                .partitions(1)
                .retention(Duration::from_millis(400)),
        )
        .unwrap();
    let mut rm = RenewalManager::new();
    rm.register(&topic);
    assert_eq!(rm.tick().unwrap(), 0, "not due yet");
    let before = topic.lease_expiry_ns();
    std::thread::sleep(Duration::from_millis(120));
    assert_eq!(rm.tick().unwrap(), 1);
    assert!(topic.lease_expiry_ns() > before, "the lease moved forward");
    assert!(mgr.delete("t").unwrap());
    std::thread::sleep(Duration::from_millis(120));
    assert!(matches!(rm.tick(), Err(shmq::Error::LeaseExpired { .. })));
    assert_eq!(
        rm.tick().unwrap(),
        0,
        "a reclaimed topic is dropped from the manager"
    );
}

#[test]
fn opening_under_manual_renewal_does_not_extend_the_lease() {
    use shmq::RenewalPolicy;
    use std::time::Duration;
    let ns = format!("smokeob{}", std::process::id());
    let mgr = TopicManager::with_namespace(&ns)
        .unwrap()
        .with_renewal(RenewalPolicy::Manual);
    let topic = mgr
        .create(
            "t",
            TopicConfig::default()
                .partitions(1)
                .retention(Duration::from_secs(60)),
        )
        .unwrap();
    let expiry = topic.lease_expiry_ns();
    std::thread::sleep(Duration::from_millis(20));
    // An observer (what `shmq list` / `info` do) opens it: the lease stays.
    let observer = TopicManager::with_namespace(&ns)
        .unwrap()
        .with_renewal(RenewalPolicy::Manual);
    let seen = observer.open("t").unwrap();
    assert_eq!(seen.lease_expiry_ns(), expiry);
    assert_eq!(seen.stats().unwrap().lease_expiry_ns, expiry);
    // A renewing opener moves it forward.
    let user = TopicManager::with_namespace(&ns).unwrap();
    let used = user.open("t").unwrap();
    assert!(used.lease_expiry_ns() > expiry);
    drop((seen, observer, used, user, topic));
    assert!(mgr.delete("t").unwrap());
}
