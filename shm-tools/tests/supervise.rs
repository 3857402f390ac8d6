//! `shmq supervise` and `shmq reap` as an operator runs them: the real binary,
//! a real expired topic, a garbage file, and SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use shmq::{RenewalPolicy, TopicConfig, TopicManager};

fn files(ns: &str) -> Vec<String> {
    let prefix = format!("shmq.{ns}.");
    std::fs::read_dir("/dev/shm")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(&prefix))
        .collect()
}

fn expired_topic(ns: &str, name: &str) {
    let mgr = TopicManager::with_namespace(ns)
        .unwrap()
        .with_renewal(RenewalPolicy::Manual);
    mgr.create(
        name,
        TopicConfig::default()
            .partitions(2)
            .retention(Duration::from_millis(30)),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(60));
}

#[test]
fn supervise_reclaims_keeps_garbage_and_stops_on_sigterm() {
    let ns = format!("cs{}", std::process::id());
    let garbage = format!("/dev/shm/shmq.{ns}.junk.p0");
    std::fs::write(&garbage, vec![0x77u8; 4096]).unwrap();
    expired_topic(&ns, "old");

    let mut child = Command::new(env!("CARGO_BIN_EXE_shmq"))
        .args([
            "supervise",
            "--namespace",
            &ns,
            "--interval",
            "100ms",
            "--grace",
            "0s",
            "--format",
            "json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut kinds = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !kinds.iter().any(|k| k == "reclaimed_topic") || !kinds.iter().any(|k| k == "malformed") {
        assert!(
            Instant::now() < deadline,
            "supervisor did not act: {kinds:?}"
        );
        let mut line = String::new();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "supervisor exited early"
        );
        let v: serde_json::Value = serde_json::from_str(&line).expect("JSON lines");
        assert_eq!(v["namespace"], ns.as_str());
        kinds.push(v["kind"].as_str().unwrap().to_string());
    }
    // SIGTERM must stop it cleanly, with status 0.
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "supervisor exit: {status}");

    assert_eq!(
        files(&ns),
        vec![format!("shmq.{ns}.junk.p0")],
        "topic reclaimed, garbage kept"
    );
    std::fs::remove_file(&garbage).unwrap();
}

#[test]
fn reap_dry_run_then_real_pass_in_json() {
    let ns = format!("cr{}", std::process::id());
    expired_topic(&ns, "gone");
    let run = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_shmq"))
            .args([
                "reap",
                "--namespace",
                &ns,
                "--grace",
                "0s",
                "--format",
                "json",
            ])
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let dry = run(&["--dry-run"]);
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["actions"][0]["kind"], "reclaimed_topic");
    assert_eq!(dry["actions"][0]["topic"], "gone");
    assert_eq!(files(&ns).len(), 3, "dry run changed nothing");
    let real = run(&[]);
    assert_eq!(real["actions"][0]["kind"], "reclaimed_topic");
    assert_eq!(real["actions"][0]["regions"].as_array().unwrap().len(), 3);
    assert!(files(&ns).is_empty(), "{:?}", files(&ns));
}
