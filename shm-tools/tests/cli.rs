//! End-to-end tests of the `shmq` binary, run as a user would run it: each
//! test works in its own namespace and checks that nothing of it is left in
//! `/dev/shm` afterwards.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::{shm_files, Ns, BIN};

fn json_lines(s: &str) -> Vec<Value> {
    s.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

fn values(records: &[Value]) -> Vec<String> {
    records
        .iter()
        .map(|r| r["value"].as_str().expect("value string").to_string())
        .collect()
}

#[test]
fn create_produce_consume_round_trip() {
    let ns = Ns::new("rt");
    let out = ns.ok(&["create", "orders", "--partitions", "2", "--slots", "16"]);
    assert!(out.contains("created topic \"orders\""), "{out}");
    let out = ns.ok_with(&["produce", "orders"], b"alpha\nbeta\r\n\xff\xfe\ngamma");
    assert_eq!(out.trim(), "sent 4 messages to topic \"orders\"");

    let out = ns.ok(&[
        "consume", "orders", "--group", "rt", "--from", "earliest", "--format", "json",
    ]);
    let records = json_lines(&out);
    assert_eq!(records.len(), 4, "{out}");
    // Round-robin over 2 partitions, each in offset order.
    let mut by_partition: Vec<Vec<(u64, String)>> = vec![Vec::new(), Vec::new()];
    for r in &records {
        let p = r["partition"].as_u64().unwrap() as usize;
        by_partition[p].push((
            r["offset"].as_u64().unwrap(),
            r["value"].as_str().unwrap().to_string(),
        ));
        assert!(r["timestamp_ns"].as_u64().unwrap() > 0);
        assert!(r["timestamp"].as_str().unwrap().ends_with('Z'));
        assert!(r["key"].is_null() && r["key_encoding"].is_null());
    }
    assert_eq!(
        by_partition[0],
        vec![(0, "alpha".to_string()), (1, "//4=".to_string())]
    );
    assert_eq!(
        by_partition[1],
        vec![(0, "beta".to_string()), (1, "gamma".to_string())]
    );
    let encodings: Vec<&str> = records
        .iter()
        .map(|r| r["value_encoding"].as_str().unwrap())
        .collect();
    assert_eq!(encodings.iter().filter(|&&e| e == "base64").count(), 1);
    assert_eq!(encodings.iter().filter(|&&e| e == "utf8").count(), 3);

    // Raw format prints the values themselves.
    let raw = ns.run(&["consume", "orders", "--group", "raw", "--partition", "1"]);
    assert!(raw.status.success());
    assert_eq!(raw.stdout, b"beta\ngamma\n");

    // Keyed messages all go to the key's partition, key shown in JSON.
    ns.ok_with(&["produce", "orders", "--key", "user-7"], b"k1\nk2\nk3\n");
    let out = ns.ok(&[
        "consume", "orders", "--group", "keys", "--from", "earliest", "--format", "json",
    ]);
    let keyed: Vec<Value> = json_lines(&out)
        .into_iter()
        .filter(|r| r["key"] == "user-7")
        .collect();
    assert_eq!(values(&keyed), ["k1", "k2", "k3"]);
    let p = keyed[0]["partition"].clone();
    assert!(keyed.iter().all(|r| r["partition"] == p));

    let out = ns.ok(&["delete", "orders"]);
    assert!(out.contains("deleted topic \"orders\""));
    assert!(ns.ok(&["list"]).contains("no topics"));
    assert_eq!(ns.files(), Vec::<String>::new(), "delete left files");
}

#[test]
fn committed_consumer_resumes_where_the_last_one_stopped() {
    let ns = Ns::new("cm");
    ns.ok(&["create", "jobs", "--partitions", "1"]);
    ns.ok_with(&["produce", "jobs"], b"0\n1\n2\n3\n4\n");
    let first = ns.ok(&[
        "consume", "jobs", "--group", "g", "--commit", "--max", "2", "--format", "json",
    ]);
    assert_eq!(values(&json_lines(&first)), ["0", "1"]);
    let second = ns.ok(&[
        "consume", "jobs", "--group", "g", "--commit", "--format", "json",
    ]);
    assert_eq!(values(&json_lines(&second)), ["2", "3", "4"]);
    assert_eq!(ns.ok(&["consume", "jobs", "--group", "g", "--commit"]), "");
    // Without --commit a group does not move.
    ns.ok(&["consume", "jobs", "--group", "peek", "--max", "3"]);
    assert_eq!(
        ns.ok(&["consume", "jobs", "--group", "peek", "--max", "1"]),
        "0\n"
    );
    // An explicit start offset.
    assert_eq!(
        ns.ok(&["consume", "jobs", "--group", "x", "--from", "3"]),
        "3\n4\n"
    );
    assert_eq!(
        ns.ok(&["consume", "jobs", "--group", "x", "--from", "latest"]),
        ""
    );
    ns.ok(&["delete", "jobs"]);
}

#[test]
fn info_and_list_json_show_offsets_and_lag() {
    let ns = Ns::new("in");
    ns.ok(&[
        "create",
        "metrics",
        "--partitions",
        "1",
        "--slots",
        "8",
        "--slot-size",
        "64",
        "--retention",
        "10m",
        "--overflow",
        "backpressure",
        "--mode",
        "0640",
    ]);
    // --mode reaches the files themselves.
    for region in ["metrics.meta", "metrics.p0"] {
        use std::os::unix::fs::PermissionsExt;
        let path = format!("/dev/shm/shmq.{}.{region}", ns.0);
        let mode = std::fs::metadata(&path).expect(&path).permissions().mode();
        assert_eq!(mode & 0o777, 0o640, "{path}");
    }
    ns.ok_with(&["produce", "metrics"], b"a\nb\nc\nd\ne\n");
    ns.ok(&[
        "consume", "metrics", "--group", "slow", "--commit", "--max", "2",
    ]);

    let info: Value =
        serde_json::from_str(&ns.ok(&["info", "metrics", "--format", "json"])).expect("JSON");
    assert_eq!(info["topic"], "metrics");
    assert_eq!(info["namespace"], ns.0.as_str());
    assert_eq!(info["config"]["partitions"], 1);
    assert_eq!(info["config"]["slots"], 8);
    assert_eq!(info["config"]["slot_size"], 64);
    assert_eq!(info["config"]["overflow"], "backpressure");
    assert_eq!(info["config"]["retention_ms"], 600_000);
    assert_eq!(info["config"]["mode"], "0640");
    assert_eq!(info["messages"], 5);
    let left = info["lease_left_ms"].as_u64().expect("lease_left_ms");
    assert!(left > 0 && left <= 600_000, "{left}");
    let p0 = &info["partitions"][0];
    assert_eq!(p0["write_offset"], 5);
    assert_eq!(p0["depth"], 5);
    assert!(p0["writer"].is_null(), "no producer is running: {p0}");
    let groups = info["groups"].as_array().expect("groups");
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0]["name"], "slow");
    assert_eq!(groups[0]["lag"], 3);
    assert_eq!(groups[0]["partitions"][0]["committed"], 2);
    assert_eq!(groups[0]["partitions"][0]["lag"], 3);

    let table = ns.ok(&["info", "metrics"]);
    assert!(
        table.contains("WRITE_OFFSET") && table.contains("slow"),
        "{table}"
    );

    let list: Value = serde_json::from_str(&ns.ok(&["list", "--format", "json"])).expect("JSON");
    let topics = list["topics"].as_array().expect("topics");
    assert_eq!(topics.len(), 1);
    let t = &topics[0];
    assert_eq!(t["topic"], "metrics");
    assert_eq!(t["state"], "ok");
    assert_eq!(t["messages"], 5);
    assert_eq!(t["groups"], 1);
    assert_eq!(t["writers"]["none"], 1);
    assert!(ns.ok(&["list"]).contains("metrics"));

    ns.ok(&["delete", "metrics"]);
    let list: Value = serde_json::from_str(&ns.ok(&["list", "--format", "json"])).expect("JSON");
    assert_eq!(list["topics"].as_array().map(Vec::len), Some(0));
}

#[test]
fn errors_exit_with_distinct_codes_and_say_what_to_do() {
    let ns = Ns::new("er");
    // Missing topic: 3.
    let err = ns.fails(&["info", "ghost"], b"", 3);
    assert!(
        err.contains("does not exist") && err.contains("create it first"),
        "{err}"
    );
    ns.fails(&["produce", "ghost"], b"x\n", 3);
    ns.fails(&["consume", "ghost", "--group", "g"], b"", 3);
    ns.fails(&["delete", "ghost"], b"", 3);
    // Bad names, bad durations, bad modes, bad config: 2.
    let err = ns.fails(&["create", "bad.name"], b"", 2);
    assert!(
        err.contains("invalid topic name") && err.contains("'.'"),
        "{err}"
    );
    let err = ns.fails(&["create", "t", "--retention", "10x"], b"", 2);
    assert!(
        err.contains("invalid duration") && err.contains("10x"),
        "{err}"
    );
    let err = ns.fails(&["create", "t", "--mode", "0755"], b"", 2);
    assert!(err.contains("invalid mode"), "{err}");
    let err = ns.fails(&["create", "t", "--slots", "1000"], b"", 2);
    assert!(err.contains("power of two"), "{err}");
    let err = ns.fails(&["--namespace", "no/slash", "list"], b"", 2);
    assert!(err.contains("invalid namespace name"), "{err}");
    // Exists: 4.
    ns.ok(&["create", "t", "--partitions", "1", "--slot-size", "8"]);
    let err = ns.fails(&["create", "t"], b"", 4);
    assert!(err.contains("already exists"), "{err}");
    // Too large: 5, naming the line and both sizes; earlier lines were sent.
    let err = ns.fails(&["produce", "t"], b"fits\n123456789\n", 5);
    assert!(
        err.contains("line 2") && err.contains("9 bytes") && err.contains("slot of 8 bytes"),
        "{err}"
    );
    assert!(err.contains("1 message was sent"), "{err}");
    let err = ns.fails(&["consume", "t", "--group", "bad group"], b"", 2);
    assert!(err.contains("invalid group name"), "{err}");
    let err = ns.fails(&["produce", "t", "--partition", "3"], b"x\n", 2);
    assert!(err.contains("partition 3 does not exist"), "{err}");
    let err = ns.fails(&["consume", "t", "--group", "g", "--from", "soon"], b"", 2);
    assert!(err.contains("earliest, latest, committed"), "{err}");
    assert_eq!(
        ns.ok(&["consume", "t", "--group", "g"]),
        "fits\n",
        "the line before the oversize one was sent"
    );
    ns.ok(&["delete", "t"]);
}

#[test]
fn every_verb_has_help_with_an_example() {
    let ns = Ns::new("hp");
    for verb in [
        "demo", "create", "list", "info", "produce", "consume", "delete",
    ] {
        let out = ns.ok(&[verb, "--help"]);
        assert!(
            out.contains("Examples:") && out.contains(&format!("shmq {verb}")),
            "{verb} --help lacks an example:\n{out}"
        );
    }
    let top = ns.ok(&["--help"]);
    assert!(!top.contains("demo-producer"), "internal verbs are hidden");
}

#[test]
fn follow_waits_for_new_messages_and_commits_on_interrupt() {
    let ns = Ns::new("fo");
    ns.ok(&["create", "live", "--partitions", "1"]);
    let mut child = ns
        .cmd(&[
            "consume", "live", "--group", "tail", "--follow", "--commit", "--format", "json",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn consume --follow");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // Messages produced after the consumer started reach it.
    for (i, msg) in ["one", "two", "three"].iter().enumerate() {
        ns.ok_with(&["produce", "live"], format!("{msg}\n").as_bytes());
        let line = lines.next().expect("a line").expect("read");
        let v: Value = serde_json::from_str(&line).expect("JSON");
        assert_eq!(v["value"], *msg);
        assert_eq!(v["offset"], i as u64);
    }
    // Still running: it waits like tail -f.
    std::thread::sleep(Duration::from_millis(300));
    assert!(child.try_wait().unwrap().is_none(), "--follow exited early");
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill -INT");
    assert!(status.success());
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "did not stop on SIGINT"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "SIGINT is a normal stop: {status}");
    let info: Value =
        serde_json::from_str(&ns.ok(&["info", "live", "--format", "json"])).expect("JSON");
    assert_eq!(info["groups"][0]["name"], "tail");
    assert_eq!(info["groups"][0]["lag"], 0, "committed on the way out");
    ns.ok(&["delete", "live"]);
}

#[test]
fn demo_sends_and_verifies_across_processes() {
    let ns = Ns::new("dm");
    // No namespace chosen: the demo makes its own.
    let out = Command::new(BIN)
        .env_remove("SHMQ_NAMESPACE")
        .args(["demo", "--messages", "20000", "--probe", "2000"])
        .output()
        .expect("run shmq demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed: {stdout}\n{stderr}");
    assert!(stdout.contains("lost 0, corrupt 0"), "{stdout}");
    assert!(stdout.contains("received 22,000"), "{stdout}");
    assert!(
        stdout.contains("throughput:") && stdout.contains("p99.9"),
        "{stdout}"
    );
    // It worked in its own namespace and removed it.
    let private = stdout
        .split("private namespace \"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("namespace in the report");
    assert!(private.starts_with("demo"), "{private}");
    assert_eq!(shm_files(&format!("shmq.{private}.")), Vec::<String>::new());
    assert_eq!(ns.files(), Vec::<String>::new());
}

#[test]
fn demo_fails_when_a_message_is_lost_or_corrupt() {
    let ns = Ns::new("df");
    for (fault, want) in [
        ("skip", "lost 1, corrupt 0"),
        ("corrupt", "lost 1, corrupt 1"),
    ] {
        // The namespace chosen with --namespace is used (not ignored), and
        // only the demo's own topic is removed from it.
        let out = Command::new(BIN)
            .env_remove("SHMQ_NAMESPACE")
            .args([
                "--namespace",
                &ns.0,
                "demo",
                "--messages",
                "2000",
                "--probe",
                "0",
                "--inject-fault",
                fault,
            ])
            .output()
            .expect("run shmq demo");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{fault}: {stdout}\n{stderr}");
        assert!(stdout.contains(want), "{fault}: {stdout}");
        assert!(stderr.contains("verification failed"), "{fault}: {stderr}");
        assert!(
            stdout.contains(&format!("topic \"demo\" in namespace \"{}\"", ns.0)),
            "{fault}: {stdout}"
        );
        assert_eq!(
            ns.files().iter().filter(|f| f.contains(".demo.")).count(),
            0
        );
    }
    // An existing "demo" topic is refused rather than replaced or deleted.
    ns.ok(&["create", "demo", "--partitions", "1"]);
    let err = ns.fails(&["demo", "--messages", "10"], b"", 4);
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(
        ns.files().iter().filter(|f| f.contains(".demo.")).count(),
        2
    );
    ns.ok(&["delete", "demo"]);
}

/// Whether this test runs as root (needed to run `shmq` as another user).
fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

#[test]
fn delete_by_a_user_who_may_not_remove_the_topic_fails_and_changes_nothing() {
    use std::os::unix::process::CommandExt;
    if !is_root() {
        eprintln!("SKIPPED: needs root to run shmq as user nobody (65534)");
        return;
    }
    let ns = Ns::new("du");
    for mode in ["0600", "0666"] {
        ns.ok(&[
            "create",
            "t",
            "--partitions",
            "2",
            "--slots",
            "8",
            "--slot-size",
            "8",
            "--mode",
            mode,
        ]);
        let regions = |ns: &Ns| {
            let mut v: Vec<String> = ns
                .files()
                .into_iter()
                .filter(|f| f.contains(".t."))
                .collect();
            v.sort();
            v
        };
        let before = regions(&ns);
        assert_eq!(before.len(), 3, "{before:?}");
        // /dev/shm is sticky: nobody may not unlink root's files (and with
        // 0600 not even open them).
        let out = ns
            .cmd(&["delete", "t"])
            .uid(65534)
            .gid(65534)
            .output()
            .expect("run shmq as nobody");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(6),
            "mode {mode}: {stdout}\n{stderr}"
        );
        assert!(!stdout.contains("deleted"), "mode {mode}: {stdout}");
        assert!(
            stderr.contains("permission denied"),
            "mode {mode}: {stderr}"
        );
        assert_eq!(regions(&ns), before, "mode {mode}");
        // Not marked reclaimed either: the topic still works.
        let sent = ns.ok_with(&["produce", "t"], b"here\n");
        assert!(sent.starts_with("sent 1 message"), "mode {mode}: {sent}");
        ns.ok(&["delete", "t"]);
    }
}

#[test]
fn delete_of_a_directory_named_like_a_topic_fails() {
    let ns = Ns::new("dd");
    let dir = format!("/dev/shm/shmq.{}.d.meta", ns.0);
    std::fs::create_dir(&dir).unwrap();
    let out = ns.run(&["delete", "d"]);
    std::fs::remove_dir(&dir).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(!stdout.contains("deleted"), "{stdout}");
    assert!(
        stderr.contains("is a directory") && stderr.contains("by hand"),
        "{stderr}"
    );
}

#[test]
fn counts_and_sizes_read_well() {
    let ns = Ns::new("pl");
    let out = ns.ok(&[
        "create",
        "t",
        "--partitions",
        "1",
        "--slots",
        "8",
        "--slot-size",
        "8",
    ]);
    assert!(
        out.contains("1 partition x 8 slots of 8 bytes") && !out.contains("partitions"),
        "{out}"
    );
    // 8 slots of 32 bytes plus the header: 1 KiB, not "0.0 MiB".
    assert!(
        out.contains("(1.0 KiB in /dev/shm)") && !out.contains("MiB"),
        "{out}"
    );
    let info = ns.ok(&["info", "t"]);
    assert!(info.contains("1 partition x 8 slots"), "{info}");
    let big = ns.ok(&[
        "create",
        "big",
        "--partitions",
        "2",
        "--slots",
        "1024",
        "--slot-size",
        "1000",
    ]);
    assert!(
        big.contains("2 partitions x 1024 slots of 1000 bytes"),
        "{big}"
    );
    assert!(big.contains("2.0 MiB in /dev/shm"), "{big}");
    ns.ok(&["delete", "t"]);
    ns.ok(&["delete", "big"]);
}

/// Issue 11, defect 8: `create` refuses a topic larger than the host can
/// hold, before allocating anything, naming the figures and `--force`;
/// `--force` is accepted (on a topic that fits).
#[test]
fn create_refuses_a_topic_larger_than_the_host_unless_forced() {
    let ns = Ns::new("cf");
    // 32 partitions x 32 GiB = 1 TiB.
    let err = ns.fails(
        &[
            "create",
            "huge",
            "--partitions",
            "32",
            "--slots",
            "32768",
            "--slot-size",
            "1048552",
        ],
        b"",
        1,
    );
    for want in ["no space", "1024.0 GiB", "MemAvailable", "--force"] {
        assert!(err.contains(want), "{want:?} missing from: {err}");
    }
    assert_eq!(
        shm_files(&format!("shmq.{}.huge.", ns.0)),
        Vec::<String>::new()
    );
    ns.ok(&[
        "create",
        "small",
        "--partitions",
        "1",
        "--slots",
        "8",
        "--force",
    ]);
    ns.ok(&["delete", "small"]);
}
