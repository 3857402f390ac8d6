//! Leases and the supervisor, with real processes: each test re-executes this
//! test binary as a child (see `tests/common`) so producers, consumers and
//! the supervisor live in separate OS processes.

mod common;

use std::process::Child;
use std::time::{Duration, Instant};

use common::{
    check_payload, child_role, line_from_parent, payload, send_line, shm_files, spawn_child,
    tell_parent, wait_success, ChildLines, ShmGuard,
};
use shmq::protocol::reclaim::{self, ReapAction, ReapOptions};
use shmq::{
    Consumer, Error, Partitions, Producer, RenewalPolicy, SeekPolicy, TopicConfig, TopicManager,
};

const SLOT: usize = 64;

/// Start `role` in a child process working in namespace `ns`.
fn spawn(role: &str, ns: &str, extra: &[&str]) -> (Child, ChildLines) {
    let mut args = vec![ns];
    args.extend_from_slice(extra);
    let mut child = spawn_child(role, &args);
    let lines = ChildLines::new(&mut child);
    (child, lines)
}

fn tell_child(child: &mut Child, line: &str) {
    send_line(child.stdin.as_mut().expect("piped stdin"), line);
}

/// Let the child's stdin reach EOF and wait for it to succeed.
fn finish_child(mut child: Child) {
    drop(child.stdin.take());
    wait_success(&mut child);
}

/// Child roles (see `tests/common`); `args[0]` is the namespace.
#[test]
fn child_process() {
    let Some((role, args)) = child_role() else {
        return;
    };
    let ns = args[0].clone();
    match role.as_str() {
        // Create a topic, write to it, exit: nobody renews afterwards.
        "create_and_exit" => {
            let mgr = TopicManager::with_namespace(&ns).unwrap();
            let t = mgr
                .create(
                    "abandoned",
                    TopicConfig::default().retention(Duration::from_millis(500)),
                )
                .unwrap();
            let mut p = Producer::new(&t).unwrap();
            for i in 0..100u32 {
                p.send(&i.to_le_bytes()).unwrap();
            }
            tell_parent("done", "");
        }
        // Keep a consumer attached (background renewal) until told to stop.
        "hold" => {
            let mgr = TopicManager::with_namespace(&ns).unwrap();
            let t = mgr
                .open_or_create(
                    "kept",
                    TopicConfig::default().retention(Duration::from_millis(500)),
                )
                .unwrap();
            let mut c = Consumer::new(&t, "g").unwrap();
            tell_parent("ready", "");
            let _ = line_from_parent();
            c.poll(10).unwrap();
        }
        // Attach with manual renewal and never renew; after the parent reaps,
        // every operation must report LeaseExpired.
        "attached" => {
            let mgr = TopicManager::with_namespace(&ns)
                .unwrap()
                .with_renewal(RenewalPolicy::Manual);
            let t = mgr
                .create(
                    "doomed",
                    TopicConfig::default().retention(Duration::from_millis(100)),
                )
                .unwrap();
            let mut p = Producer::new(&t).unwrap();
            let mut c = Consumer::new(&t, "g").unwrap();
            p.send(b"before").unwrap();
            tell_parent("ready", "");
            assert_eq!(line_from_parent().as_deref(), Some("go"));
            assert!(
                matches!(p.send(b"after"), Err(Error::LeaseExpired { .. })),
                "send into a reclaimed region"
            );
            assert!(
                matches!(c.poll(10), Err(Error::LeaseExpired { .. })),
                "poll of a reclaimed region"
            );
            assert!(
                matches!(t.renew(), Err(Error::LeaseExpired { .. })),
                "renewal of a reclaimed region"
            );
            tell_parent("expired", "");
        }
        // Renew a short lease irregularly while the parent reaps; report every
        // granted expiry and the end.
        "renewer" => {
            let mgr = TopicManager::with_namespace(&ns)
                .unwrap()
                .with_renewal(RenewalPolicy::Manual);
            let rounds: u32 = args[1].parse().unwrap();
            for r in 0..rounds {
                let t = mgr
                    .create(
                        &format!("race{r}"),
                        TopicConfig::default()
                            .partitions(1)
                            .slots(2)
                            .slot_size(8)
                            .retention(Duration::from_millis(15)),
                    )
                    .unwrap();
                tell_parent("created", r);
                let mut last = t.lease_expiry_ns();
                let mut k: u64 = u64::from(r) * 7919;
                loop {
                    k = k
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    std::thread::sleep(Duration::from_micros((k >> 33) % 25_000));
                    match t.renew() {
                        Ok(()) => last = t.lease_expiry_ns().max(last),
                        Err(Error::LeaseExpired { .. }) => break,
                        Err(e) => panic!("{e}"),
                    }
                }
                tell_parent("lost", format!("{r} {last}"));
            }
        }
        // Produce and stay alive until killed.
        "producer" => {
            let mgr = TopicManager::with_namespace(&ns).unwrap();
            let t = mgr.open("events").unwrap();
            let mut p = Producer::new(&t).unwrap();
            for i in 0..1000u64 {
                p.send(&payload(i, SLOT)).unwrap();
            }
            tell_parent("token", format!("{:08x}", mgr.token_id()));
            loop {
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        other => panic!("unknown role {other}"),
    }
}

fn reap_now(ns: &str) -> Vec<ReapAction> {
    reclaim::reap(
        ns,
        ReapOptions {
            grace: Duration::ZERO,
            ..Default::default()
        },
    )
    .unwrap()
    .actions
}

#[test]
fn abandoned_topic_is_reclaimed_and_a_held_one_is_not() {
    if child_role().is_some() {
        return;
    }
    let guard = ShmGuard::new("svab");
    let ns = guard.ns().to_string();
    let (creator, lines) = spawn("create_and_exit", &ns, &[]);
    lines.expect("done");
    finish_child(creator);
    let (mut holder, lines) = spawn("hold", &ns, &[]);
    lines.expect("ready");

    // Passes while the abandoned topic's lease runs out (500 ms) and well past
    // the held topic's TTL: the held one must survive every pass.
    let start = Instant::now();
    let mut reclaimed = Vec::new();
    while start.elapsed() < Duration::from_millis(2000) {
        for a in reap_now(&ns) {
            if let ReapAction::ReclaimedTopic { topic, .. } = a {
                reclaimed.push(topic);
            }
        }
        assert!(
            shm_files(&ns).iter().any(|f| f.contains(".kept.")),
            "held topic was reclaimed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(reclaimed, vec!["abandoned".to_string()]);
    assert!(
        !shm_files(&ns).iter().any(|f| f.contains(".abandoned.")),
        "{:?}",
        shm_files(&ns)
    );

    // The holder leaves: its topic expires and goes too, tokens included.
    tell_child(&mut holder, "bye");
    finish_child(holder);
    std::thread::sleep(Duration::from_millis(700));
    let actions = reap_now(&ns);
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, ReapAction::ReclaimedTopic { topic, .. } if topic == "kept")),
        "{actions:?}"
    );
    assert!(shm_files(&ns).is_empty(), "{:?}", shm_files(&ns));
}

#[test]
fn a_process_mapped_to_a_reclaimed_region_gets_lease_expired() {
    if child_role().is_some() {
        return;
    }
    let guard = ShmGuard::new("svle");
    let ns = guard.ns().to_string();
    let (mut child, lines) = spawn("attached", &ns, &[]);
    lines.expect("ready");
    std::thread::sleep(Duration::from_millis(250));
    let actions = reap_now(&ns);
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, ReapAction::ReclaimedTopic { topic, .. } if topic == "doomed")),
        "{actions:?}"
    );
    tell_child(&mut child, "go");
    lines.expect("expired");
    finish_child(child);
}

#[test]
fn reclaim_racing_renewal_never_removes_a_renewed_region() {
    if child_role().is_some() {
        return;
    }
    let guard = ShmGuard::new("svrc");
    let ns = guard.ns().to_string();
    let rounds = 40u32;
    let (child, lines) = spawn("renewer", &ns, &[&rounds.to_string()]);
    let mut reclaimed_at = std::collections::HashMap::new();
    let mut lost = std::collections::HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while lost.len() < rounds as usize {
        assert!(Instant::now() < deadline, "race test did not finish");
        let before = shmq::protocol::os::now_ns();
        let actions = reap_now(&ns);
        let after = shmq::protocol::os::now_ns();
        for a in actions {
            if let ReapAction::ReclaimedTopic { topic, .. } = a {
                reclaimed_at.insert(topic, (before, after));
            }
        }
        for (key, value) in lines.drain() {
            if key == "lost" {
                let mut it = value.split(' ');
                let r: u32 = it.next().unwrap().parse().unwrap();
                let last: u64 = it.next().unwrap().parse().unwrap();
                lost.insert(r, last);
            }
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    for (r, last_granted) in &lost {
        let (_, after) = reclaimed_at
            .get(&format!("race{r}"))
            .copied()
            .expect("every lost lease was reclaimed by us");
        // The reclaim CAS only succeeds on an expiry in the past, so no
        // renewal granted an expiry beyond the moment of reclamation.
        assert!(
            *last_granted <= after,
            "round {r}: a renewal to {last_granted} was reclaimed at <= {after}"
        );
    }
    finish_child(child);
    // Tokens go with the child; anything else was reclaimed.
    reap_now(&ns);
    assert!(shm_files(&ns).is_empty(), "{:?}", shm_files(&ns));
}

#[test]
fn killed_producer_releases_its_token_and_is_taken_over() {
    if child_role().is_some() {
        return;
    }
    let guard = ShmGuard::new("svkp");
    let ns = guard.ns().to_string();
    let mgr = TopicManager::with_namespace(&ns).unwrap();
    let topic = mgr
        .create(
            "events",
            TopicConfig::default()
                .partitions(1)
                .slots(2048)
                .slot_size(64),
        )
        .unwrap();
    let (mut child, lines) = spawn("producer", &ns, &[]);
    let token = lines.expect("token");
    // While it lives, its partition is held.
    assert!(matches!(
        Producer::with_partitions(&topic, Partitions::All),
        Err(Error::PartitionHeld { .. })
    ));
    child.kill().unwrap();
    child.wait().unwrap();

    // The kernel released its token: the supervisor removes the file.
    let actions = reap_now(&ns);
    assert!(
        actions.iter().any(
            |a| matches!(a, ReapAction::RemovedDeadToken { file, .. } if file.ends_with(&token))
        ),
        "{actions:?}"
    );
    let epoch_before = topic.stats().unwrap().partitions[0].writer_epoch;
    let mut p = Producer::new(&topic).unwrap();
    let stats = topic.stats().unwrap();
    assert_eq!(stats.partitions[0].writer_epoch, epoch_before + 1);
    let sent = p.send(&payload(1000, SLOT)).unwrap();
    assert_eq!(
        sent.offset, 1000,
        "the new writer continues after the last published offset"
    );

    let mut c = Consumer::new(&topic, "g").unwrap();
    c.seek(SeekPolicy::Earliest).unwrap();
    let got = c.poll(5000).unwrap();
    assert_eq!(got.records.len(), 1001);
    assert_eq!(got.corrupt, 0);
    for (i, r) in got.records.iter().enumerate() {
        assert_eq!(r.offset, i as u64);
        assert_eq!(check_payload(&r.value, SLOT), i as u64);
    }
    drop((p, c, topic, mgr));
    guard.finish();
}

#[test]
fn malformed_files_are_reported_and_kept_unless_forced() {
    if child_role().is_some() {
        return;
    }
    let guard = ShmGuard::new("svmf");
    let ns = guard.ns().to_string();
    let junk_meta = format!("/dev/shm/shmq.{ns}.junk.meta");
    let junk_part = format!("/dev/shm/shmq.{ns}.junk2.p0");
    let odd_name = format!("/dev/shm/shmq.{ns}.what.ever.x");
    std::fs::write(&junk_meta, vec![0xAB; 4096]).unwrap();
    std::fs::write(&junk_part, vec![0x5A; 8192]).unwrap();
    std::fs::write(&odd_name, b"hello").unwrap();
    let report = reclaim::reap(
        &ns,
        ReapOptions {
            grace: Duration::ZERO,
            ..Default::default()
        },
    )
    .unwrap();
    let malformed: Vec<_> = report
        .actions
        .iter()
        .filter(|a| matches!(a, ReapAction::Malformed { removed: false, .. }))
        .collect();
    assert_eq!(malformed.len(), 3, "{:?}", report.actions);
    assert!(
        malformed
            .iter()
            .any(|a| a.to_string().contains("wrong magic")),
        "{malformed:?}"
    );
    assert_eq!(shm_files(&ns).len(), 3, "nothing removed without --force");
    let forced = reclaim::reap(
        &ns,
        ReapOptions {
            grace: Duration::ZERO,
            force: true,
            dry_run: false,
        },
    )
    .unwrap();
    assert_eq!(
        forced
            .actions
            .iter()
            .filter(|a| matches!(a, ReapAction::Malformed { removed: true, .. }))
            .count(),
        3
    );
    assert!(shm_files(&ns).is_empty());
}

#[test]
fn dry_run_changes_nothing() {
    if child_role().is_some() {
        return;
    }
    let guard = ShmGuard::new("svdr");
    let ns = guard.ns().to_string();
    {
        let mgr = TopicManager::with_namespace(&ns)
            .unwrap()
            .with_renewal(RenewalPolicy::Manual);
        mgr.create(
            "t",
            TopicConfig::default()
                .partitions(2)
                .retention(Duration::from_millis(50)),
        )
        .unwrap();
    }
    std::thread::sleep(Duration::from_millis(120));
    let dry = reclaim::reap(
        &ns,
        ReapOptions {
            grace: Duration::ZERO,
            dry_run: true,
            force: false,
        },
    )
    .unwrap();
    assert!(
        dry.actions
            .iter()
            .any(|a| matches!(a, ReapAction::ReclaimedTopic { regions, .. } if regions.len() == 3)),
        "{:?}",
        dry.actions
    );
    assert_eq!(shm_files(&ns).len(), 3);
    let real = reap_now(&ns);
    assert!(real
        .iter()
        .any(|a| matches!(a, ReapAction::ReclaimedTopic { .. })));
    assert!(shm_files(&ns).is_empty());
}
