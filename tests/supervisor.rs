//! Leases and the supervisor, with real processes: each test re-executes this
//! test binary as a child (`SHMQ_TEST_ROLE` selects the role) so producers,
//! consumers and the supervisor live in separate OS processes.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use shmq::reclaim::{self, ReapAction, ReapOptions};
use shmq::{Consumer, Error, Producer, RenewalPolicy, SeekPolicy, TopicConfig, TopicManager};

const ROLE: &str = "SHMQ_TEST_ROLE";
const NS: &str = "SHMQ_TEST_NS";

fn unique_ns(tag: &str) -> String {
    format!("sv{}{}", tag, std::process::id())
}

fn files(ns: &str) -> Vec<String> {
    let prefix = format!("shmq.{ns}.");
    let mut v: Vec<String> = std::fs::read_dir("/dev/shm")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(&prefix))
        .collect();
    v.sort();
    v
}

/// Deletes every file of the namespace when dropped, and (unless panicking)
/// asserts that the test itself left nothing behind.
struct Cleanup(String);
impl Drop for Cleanup {
    fn drop(&mut self) {
        let left = files(&self.0);
        for f in &left {
            let _ = std::fs::remove_file(format!("/dev/shm/{f}"));
        }
        if !std::thread::panicking() {
            assert!(left.is_empty(), "test left regions behind: {left:?}");
        }
    }
}

struct ChildProc {
    child: Child,
    stdin: Option<ChildStdin>,
    out: Option<BufReader<ChildStdout>>,
}

impl ChildProc {
    fn spawn(test: &str, role: &str, ns: &str, extra: &[(&str, String)]) -> ChildProc {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args(["--exact", test, "--nocapture", "--test-threads=1", "-q"])
            .env(ROLE, role)
            .env(NS, ns)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stdin = child.stdin.take();
        let out = Some(BufReader::new(child.stdout.take().unwrap()));
        ChildProc { child, stdin, out }
    }

    /// Next line the child printed with the `@` marker (test-harness noise is skipped).
    fn line(&mut self) -> String {
        loop {
            let mut l = String::new();
            assert!(
                self.out.as_mut().unwrap().read_line(&mut l).unwrap() > 0,
                "child exited early"
            );
            if let Some(rest) = l.trim_end().strip_prefix('@') {
                return rest.to_string();
            }
        }
    }

    fn say(&mut self, s: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{s}").unwrap();
        stdin.flush().unwrap();
    }

    /// Hand the child's marked lines to a channel read by a background thread.
    fn lines_to_channel(
        &mut self,
    ) -> (
        std::sync::mpsc::Receiver<String>,
        std::thread::JoinHandle<()>,
    ) {
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let mut out = self.out.take().expect("lines already handed off");
        let reader = std::thread::spawn(move || loop {
            let mut l = String::new();
            if out.read_line(&mut l).unwrap_or(0) == 0 {
                break;
            }
            if let Some(rest) = l.trim_end().strip_prefix('@') {
                let _ = tx.send(rest.to_string());
            }
        });
        (rx, reader)
    }

    fn wait_ok(mut self) {
        drop(self.stdin.take());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "child failed: {status}");
    }
}

/// Child roles run inside the `child_entry` test when `SHMQ_TEST_ROLE` is set.
#[test]
fn child_entry() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let ns = std::env::var(NS).unwrap();
    let say = |s: &str| {
        println!("@{s}");
        std::io::stdout().flush().unwrap();
    };
    let wait_line = || {
        let mut l = String::new();
        std::io::stdin().read_line(&mut l).unwrap();
        l.trim().to_string()
    };
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
            say("done");
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
            say("ready");
            let _ = wait_line();
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
            say("ready");
            assert_eq!(wait_line(), "go");
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
            say("expired");
        }
        // Renew a short lease irregularly while the parent reaps; report every
        // granted expiry and the end.
        "renewer" => {
            let mgr = TopicManager::with_namespace(&ns)
                .unwrap()
                .with_renewal(RenewalPolicy::Manual);
            let rounds: u32 = std::env::var("ROUNDS").unwrap().parse().unwrap();
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
                say(&format!("created {r}"));
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
                say(&format!("lost {r} {last}"));
            }
        }
        // Produce and stay alive until killed.
        "producer" => {
            let mgr = TopicManager::with_namespace(&ns).unwrap();
            let t = mgr.open("events").unwrap();
            let mut p = Producer::new(&t).unwrap();
            for i in 0..1000u64 {
                p.send(&payload(i)).unwrap();
            }
            say(&format!("token {:08x}", mgr.token_id()));
            loop {
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        other => panic!("unknown role {other}"),
    }
}

fn payload(i: u64) -> Vec<u8> {
    let mut v = i.to_le_bytes().to_vec();
    let len = 8 + (i % 40) as usize;
    while v.len() < len {
        v.push((i as u8).wrapping_mul(31).wrapping_add(v.len() as u8));
    }
    let sum: u32 = v.iter().map(|&b| u32::from(b)).sum();
    v.extend_from_slice(&sum.to_le_bytes());
    v
}

fn check_payload(v: &[u8]) -> u64 {
    let (body, sum) = v.split_at(v.len() - 4);
    let want: u32 = body.iter().map(|&b| u32::from(b)).sum();
    assert_eq!(sum, want.to_le_bytes(), "corrupt payload");
    u64::from_le_bytes(body[..8].try_into().unwrap())
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
    if std::env::var(ROLE).is_ok() {
        return;
    }
    let ns = unique_ns("ab");
    let _clean = Cleanup(ns.clone());
    let mut creator = ChildProc::spawn("child_entry", "create_and_exit", &ns, &[]);
    assert_eq!(creator.line(), "done");
    creator.wait_ok();
    let mut holder = ChildProc::spawn("child_entry", "hold", &ns, &[]);
    assert_eq!(holder.line(), "ready");

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
            files(&ns).iter().any(|f| f.contains(".kept.")),
            "held topic was reclaimed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(reclaimed, vec!["abandoned".to_string()]);
    assert!(
        !files(&ns).iter().any(|f| f.contains(".abandoned.")),
        "{:?}",
        files(&ns)
    );

    // The holder leaves: its topic expires and goes too, tokens included.
    holder.say("bye");
    holder.wait_ok();
    std::thread::sleep(Duration::from_millis(700));
    let actions = reap_now(&ns);
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, ReapAction::ReclaimedTopic { topic, .. } if topic == "kept")),
        "{actions:?}"
    );
    assert!(files(&ns).is_empty(), "{:?}", files(&ns));
}

#[test]
fn a_process_mapped_to_a_reclaimed_region_gets_lease_expired() {
    if std::env::var(ROLE).is_ok() {
        return;
    }
    let ns = unique_ns("le");
    let _clean = Cleanup(ns.clone());
    let mut child = ChildProc::spawn("child_entry", "attached", &ns, &[]);
    assert_eq!(child.line(), "ready");
    std::thread::sleep(Duration::from_millis(250));
    let actions = reap_now(&ns);
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, ReapAction::ReclaimedTopic { topic, .. } if topic == "doomed")),
        "{actions:?}"
    );
    child.say("go");
    assert_eq!(child.line(), "expired");
    child.wait_ok();
}

#[test]
fn reclaim_racing_renewal_never_removes_a_renewed_region() {
    if std::env::var(ROLE).is_ok() {
        return;
    }
    let ns = unique_ns("rc");
    let _clean = Cleanup(ns.clone());
    let rounds = 40u32;
    let mut child = ChildProc::spawn(
        "child_entry",
        "renewer",
        &ns,
        &[("ROUNDS", rounds.to_string())],
    );
    let mut reclaimed_at = std::collections::HashMap::new();
    let (rx, reader) = child.lines_to_channel();
    let mut lost = std::collections::HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while lost.len() < rounds as usize {
        assert!(Instant::now() < deadline, "race test did not finish");
        let before = shmq::os::now_ns();
        let actions = reap_now(&ns);
        let after = shmq::os::now_ns();
        for a in actions {
            if let ReapAction::ReclaimedTopic { topic, .. } = a {
                reclaimed_at.insert(topic, (before, after));
            }
        }
        while let Ok(msg) = rx.try_recv() {
            if let Some(rest) = msg.strip_prefix("lost ") {
                let mut it = rest.split(' ');
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
    child.wait_ok();
    reader.join().unwrap();
    // Tokens go with the child; anything else was reclaimed.
    reap_now(&ns);
    assert!(files(&ns).is_empty(), "{:?}", files(&ns));
}

#[test]
fn killed_producer_releases_its_token_and_is_taken_over() {
    if std::env::var(ROLE).is_ok() {
        return;
    }
    let ns = unique_ns("kp");
    let _clean = Cleanup(ns.clone());
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
    let mut child = ChildProc::spawn("child_entry", "producer", &ns, &[]);
    let token = child.line();
    assert!(token.starts_with("token "));
    // While it lives, its partition is held.
    assert!(matches!(
        Producer::new(&topic),
        Err(Error::PartitionHeld { .. })
    ));
    child.child.kill().unwrap();
    child.child.wait().unwrap();

    // The kernel released its token: the supervisor removes the file.
    let actions = reap_now(&ns);
    assert!(
        actions.iter().any(|a| matches!(a, ReapAction::RemovedDeadToken { file, .. } if file.ends_with(&token[6..]))),
        "{actions:?}"
    );
    let epoch_before = topic.stats().unwrap().partitions[0].writer_epoch;
    let mut p = Producer::new(&topic).unwrap();
    let stats = topic.stats().unwrap();
    assert_eq!(stats.partitions[0].writer_epoch, epoch_before + 1);
    let sent = p.send(&payload(1000)).unwrap();
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
        assert_eq!(check_payload(&r.value), i as u64);
    }
    drop((p, c, topic));
    mgr.delete("events").unwrap();
}

#[test]
fn malformed_files_are_reported_and_kept_unless_forced() {
    if std::env::var(ROLE).is_ok() {
        return;
    }
    let ns = unique_ns("mf");
    let _clean = Cleanup(ns.clone());
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
    assert_eq!(files(&ns).len(), 3, "nothing removed without --force");
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
    assert!(files(&ns).is_empty());
}

#[test]
fn dry_run_changes_nothing() {
    if std::env::var(ROLE).is_ok() {
        return;
    }
    let ns = unique_ns("dr");
    let _clean = Cleanup(ns.clone());
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
    assert_eq!(files(&ns).len(), 3);
    let real = reap_now(&ns);
    assert!(real
        .iter()
        .any(|a| matches!(a, ReapAction::ReclaimedTopic { .. })));
    assert!(files(&ns).is_empty());
}
