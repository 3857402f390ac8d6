//! Several `shmq produce` processes on one topic at once: each gets
//! partitions of its own (the topic grows for those that find none free),
//! all succeed, and every line arrives.

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_shmq");

fn shmq(ns: &str, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.env("SHMQ_NAMESPACE", ns).args(args);
    c
}

fn ok(ns: &str, args: &[&str], stdin: &[u8]) -> String {
    let mut child = shmq(ns, args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn shmq");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "shmq {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn info(ns: &str) -> Value {
    serde_json::from_str(&ok(ns, &["info", "t", "--format", "json"], b"")).unwrap()
}

/// Partitions whose writer is a live process.
fn live_writers(ns: &str) -> usize {
    info(ns)["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["writer"]["alive"] == true)
        .count()
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A `shmq produce` that keeps running (its stdin stays open) after sending
/// `lines`.
fn start_producer(ns: &str, args: &[&str], lines: &str) -> Child {
    let mut child = shmq(ns, args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn shmq produce");
    child
        .stdin
        .as_mut()
        .unwrap()
        .write_all(lines.as_bytes())
        .unwrap();
    child
}

fn finish(mut child: Child) -> String {
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "shmq produce failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn two_and_more_shmq_produce_on_one_topic_all_succeed() {
    let ns = format!("climany{}", std::process::id());
    ok(&ns, &["create", "t", "--partitions", "2"], b"");

    // The first takes both partitions and keeps them while it runs.
    let a = start_producer(&ns, &["produce", "t"], "a0\na1\n");
    wait_for("the first producer's partitions", || live_writers(&ns) == 2);
    // The second finds none free: the topic grows by one for it.
    let b = start_producer(&ns, &["produce", "t", "--format", "json"], "b0\nb1\nb2\n");
    wait_for("the second producer's partition", || live_writers(&ns) == 3);
    // A third, keyed, gets one more; its messages keep their order.
    let c = ok(&ns, &["produce", "t", "--key", "k"], b"c0\nc1\nc2\nc3\n");
    assert!(c.contains("sent 4 messages"), "{c}");

    let b: Value = serde_json::from_str(&finish(b)).unwrap();
    assert_eq!(b["sent"], 3);
    assert_eq!(b["partitions"][0]["partition"], 2, "{b}");
    assert!(finish(a).contains("sent 2 messages"));

    let doc = info(&ns);
    assert_eq!(doc["config"]["partitions"], 4, "{doc}");
    assert_eq!(doc["config"]["max_partitions"], 64);
    let out = ok(
        &ns,
        &[
            "consume", "t", "--group", "all", "--from", "earliest", "--format", "json",
        ],
        b"",
    );
    let records: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut values: Vec<String> = records
        .iter()
        .map(|r| r["value"].as_str().unwrap().to_string())
        .collect();
    let keyed: Vec<&str> = records
        .iter()
        .filter(|r| r["key"] == "k")
        .map(|r| r["value"].as_str().unwrap())
        .collect();
    assert_eq!(keyed, ["c0", "c1", "c2", "c3"], "keyed order");
    assert!(records
        .iter()
        .filter(|r| r["key"] == "k")
        .all(|r| r["partition"] == 3));
    values.sort();
    assert_eq!(
        values,
        ["a0", "a1", "b0", "b1", "b2", "c0", "c1", "c2", "c3"],
        "every line of every producer arrived"
    );

    ok(&ns, &["delete", "t"], b"");
    // Token files of the `shmq` processes: dead ones may be left for the
    // supervisor (see tests/cli.rs); nothing else may be.
    let left: Vec<String> = std::fs::read_dir("/dev/shm")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(&format!("shmq.{ns}.")))
        .collect();
    for f in &left {
        assert!(f.contains("._tok."), "left in /dev/shm: {f}");
        let _ = std::fs::remove_file(format!("/dev/shm/{f}"));
    }
}
