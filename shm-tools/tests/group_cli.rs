//! `shmq group` and the group lifecycle from the command line: the exact
//! command of issue 11 defect 4 (a following, committing consumer that
//! started at `latest` must not block a backpressure producer), readers
//! without `--commit` take no group entry, `group list` / `group delete`.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use shmq::{Error, GroupConsumer, GroupOptions, TopicManager};

mod common;
use common::Ns;

/// The topic's groups, from `shmq group list --format json`.
fn groups(ns: &Ns, topic: &str) -> Vec<Value> {
    let v: Value = serde_json::from_str(&ns.ok(&["group", "list", topic, "--format", "json"]))
        .expect("group list JSON");
    v["groups"].as_array().expect("groups").clone()
}

fn interrupt(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().expect("wait").is_none() {
        assert!(Instant::now() < deadline, "consumer ignored SIGINT");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn lines(n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| format!("m{i}\n"))
        .collect::<String>()
        .into_bytes()
}

/// Issue 11 defect 4, as reported: a full 64-slot backpressure topic, the
/// other group caught up and committed, then
/// `consume t --group tail --from latest --follow --commit`: `produce` must
/// go through (it timed out with exit 9).
#[test]
fn a_latest_follower_that_never_committed_does_not_block_produce() {
    let ns = Ns::new("tail").deleting_on_drop("t");
    ns.ok(&[
        "create",
        "t",
        "--partitions",
        "1",
        "--slots",
        "64",
        "--slot-size",
        "32",
        "--overflow",
        "backpressure",
    ]);
    ns.ok_with(&["produce", "t"], &lines(64));
    let read = ns.ok(&["consume", "t", "--group", "other", "--commit"]);
    assert_eq!(read.lines().count(), 64);
    let mut tail = ns
        .cmd(&[
            "consume", "t", "--group", "tail", "--from", "latest", "--follow", "--commit",
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn follower");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !groups(&ns, "t").iter().any(|g| g["name"] == "tail") {
        assert!(Instant::now() < deadline, "the follower never registered");
        std::thread::sleep(Duration::from_millis(10));
    }
    let (code, _, err) = ns.code(&["produce", "t", "--timeout", "2s"], &lines(10));
    interrupt(&mut tail);
    assert_eq!(
        code,
        Some(0),
        "produce blocked by a group that never committed: {err}"
    );
}

/// Readers without `--commit` take no entry; `group list` shows members,
/// lag and activity; `group delete` refuses a group with a live member
/// (exit 10) unless `--force`, and the member then gets `GroupDeleted`.
#[test]
fn group_list_and_delete() {
    let ns = Ns::new("del").deleting_on_drop("t");
    ns.ok(&["create", "t", "--partitions", "2", "--max-groups", "4"]);
    ns.ok_with(&["produce", "t"], &lines(6));
    // Readers: nothing registered, whatever --from.
    assert_eq!(
        ns.ok(&["consume", "t", "--from", "earliest"])
            .lines()
            .count(),
        6
    );
    assert_eq!(
        ns.ok(&["consume", "t", "--group", "audit"]).lines().count(),
        6
    );
    assert!(groups(&ns, "t").is_empty(), "a reader took a group entry");
    // --commit registers; a later reader of the group starts at its offsets.
    ns.ok(&["consume", "t", "--group", "audit", "--commit", "--max", "2"]);
    assert_eq!(
        ns.ok(&["consume", "t", "--group", "audit"]).lines().count(),
        4
    );
    let g = groups(&ns, "t");
    assert_eq!(g.len(), 1);
    assert_eq!(
        (g[0]["name"].as_str(), g[0]["lag"].as_u64()),
        (Some("audit"), Some(4))
    );
    assert!(g[0]["idle_ms"].as_u64().is_some());

    // A live member (this test process) in group "busy".
    let mgr = TopicManager::with_namespace(&ns.0).unwrap();
    let topic = mgr.open("t").unwrap();
    let mut member = GroupConsumer::join(&topic, "busy", GroupOptions::default()).unwrap();
    let busy = groups(&ns, "t")
        .into_iter()
        .find(|g| g["name"] == "busy")
        .expect("busy listed");
    assert_eq!(busy["live_members"], 1);
    assert_eq!(busy["member_list"][0]["pid"], std::process::id());
    let table = ns.ok(&["group", "list", "t"]);
    assert!(
        table.contains("busy") && table.contains("LAST_ACTIVE"),
        "{table}"
    );

    let (code, _, err) = ns.code(&["group", "delete", "t", "busy"], b"");
    assert_eq!(code, Some(10), "{err}");
    assert!(
        err.contains("live members") && err.contains("--force"),
        "{err}"
    );
    assert!(groups(&ns, "t").iter().any(|g| g["name"] == "busy"));
    ns.ok(&["group", "delete", "t", "busy", "--force"]);
    assert!(!groups(&ns, "t").iter().any(|g| g["name"] == "busy"));
    assert!(matches!(member.poll(1), Err(Error::GroupDeleted { .. })));
    drop(member);

    // No live member: deleted without --force; then it is gone (exit 3).
    ns.ok(&["group", "delete", "t", "audit"]);
    assert!(groups(&ns, "t").is_empty());
    let (code, _, err) = ns.code(&["group", "delete", "t", "audit"], b"");
    assert_eq!(code, Some(3), "{err}");
    drop((topic, mgr));
    // Capacities are validated.
    let (code, _, err) = ns.code(&["create", "u", "--max-groups", "0"], b"");
    assert_eq!(code, Some(2), "{err}");
}
