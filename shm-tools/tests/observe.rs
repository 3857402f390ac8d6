//! Observing a live bus: `shmq metrics` scraped over real HTTP, `shmq top`
//! in a real terminal (tmux), `shmq top --once --format json`, and the
//! structured logs. Producers and group members run as separate processes
//! (this test binary re-executed in a child role).
//!
//! `SHMQ_SCRAPE_COST=1 cargo test --release -p shm-tools --test observe
//! scrape_cost -- --nocapture` measures a scrape of 100 topics × 8
//! partitions × 4 groups.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Ns, BIN};
use serde_json::Value;
use shmq::{GroupConsumer, GroupOptions, Producer, RenewalPolicy, TopicConfig, TopicManager};

const ROLE: &str = "SHMQ_OBS_CHILD_ROLE";
const CHILD_TEST: &str = "child_process";
/// No child outlives this, even if the parent dies without killing it.
const CHILD_LIMIT: Duration = Duration::from_secs(60);

/// The child side: runs only when re-executed with [`ROLE`] set.
#[test]
fn child_process() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let ns = std::env::var("SHMQ_OBS_NS").unwrap();
    let topic_name = std::env::var("SHMQ_OBS_TOPIC").unwrap();
    let mgr = TopicManager::with_namespace(&ns).unwrap();
    let topic = mgr.open(&topic_name).unwrap();
    let end = Instant::now() + CHILD_LIMIT;
    match role.as_str() {
        "produce" => {
            let mut p = Producer::new(&topic).unwrap();
            let mut n = 0u64;
            while Instant::now() < end {
                p.send(format!("m{n}").as_bytes()).unwrap();
                n += 1;
                std::thread::sleep(Duration::from_micros(500));
            }
        }
        "group" => {
            let group = std::env::var("SHMQ_OBS_GROUP").unwrap();
            let mut c = GroupConsumer::join(&topic, &group, GroupOptions::default()).unwrap();
            while Instant::now() < end {
                c.poll_timeout(256, Duration::from_millis(20)).unwrap();
                c.commit().unwrap();
            }
        }
        other => panic!("unknown role {other}"),
    }
}

/// A child process in `role`; killed (SIGKILL) on drop.
struct ChildProc(Child);

impl ChildProc {
    fn spawn(role: &str, ns: &str, topic: &str, group: Option<&str>) -> ChildProc {
        let mut c = Command::new(std::env::current_exe().unwrap());
        c.args(["--exact", CHILD_TEST, "--nocapture", "--test-threads=1"])
            .env(ROLE, role)
            .env("SHMQ_OBS_NS", ns)
            .env("SHMQ_OBS_TOPIC", topic)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        if let Some(g) = group {
            c.env("SHMQ_OBS_GROUP", g);
        }
        ChildProc(c.spawn().expect("spawn child"))
    }

    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for ChildProc {
    fn drop(&mut self) {
        self.kill();
    }
}

fn manual(ns: &str) -> TopicManager {
    TopicManager::with_namespace(ns)
        .unwrap()
        .with_renewal(RenewalPolicy::Manual)
}

fn small() -> TopicConfig {
    TopicConfig::default()
        .partitions(2)
        .slots(1024)
        .slot_size(64)
}

/// `shmq metrics` on a free port; stopped with SIGTERM on drop.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(ns: &Ns, extra: &[&str]) -> Server {
        let mut args = vec!["metrics", "--listen", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        let mut child = ns
            .cmd(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn shmq metrics");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .strip_prefix("shmq metrics: serving ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        Server { child, url }
    }

    fn scrape(&self) -> String {
        let resp = ureq::get(&self.url).call().expect("scrape");
        assert_eq!(resp.status(), 200);
        assert!(
            resp.content_type().contains("openmetrics-text")
                || resp.content_type().contains("text/plain"),
            "content type {}",
            resp.content_type()
        );
        resp.into_string().unwrap()
    }

    /// SIGTERM, then require a clean exit.
    fn stop(mut self) {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().unwrap();
        assert!(status.success(), "shmq metrics exited with {status}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Parsed scrape: `(metric, sorted labels)` -> value.
type Samples = HashMap<(String, Vec<(String, String)>), f64>;

/// Parse with `prometheus-parse`, and require that every line is a
/// `# HELP`/`# TYPE`/`# EOF` comment or a sample the parser understood.
fn parse(text: &str) -> Samples {
    let scrape =
        prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("parse");
    let sample_lines = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .count();
    assert_eq!(
        scrape.samples.len(),
        sample_lines,
        "every sample line must parse:\n{text}"
    );
    for l in text.lines().filter(|l| l.starts_with('#')) {
        assert!(
            l.starts_with("# HELP shmq_") || l.starts_with("# TYPE shmq_") || l == "# EOF",
            "unexpected comment line {l:?}"
        );
    }
    assert_eq!(text.lines().last(), Some("# EOF"));
    let mut out = Samples::new();
    for s in scrape.samples {
        let v = match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            other => panic!("unexpected value {other:?}"),
        };
        let mut labels: Vec<(String, String)> = s
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        labels.sort();
        out.insert((s.metric, labels), v);
    }
    out
}

/// Sum of `metric` over the series whose labels include all of `want`.
fn sum(s: &Samples, metric: &str, want: &[(&str, &str)]) -> f64 {
    s.iter()
        .filter(|((m, labels), _)| {
            m == metric
                && want
                    .iter()
                    .all(|(k, v)| labels.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|(_, v)| *v)
        .sum()
}

fn count(s: &Samples, metric: &str) -> usize {
    s.keys().filter(|(m, _)| m == metric).count()
}

/// Lease expiries of every region of the topic, and its offsets, read
/// without renewing anything.
fn state_of(ns: &str, topic: &str) -> (u64, Vec<u64>, Vec<u64>, Vec<Option<u64>>) {
    let t = manual(ns).open(topic).unwrap();
    let s = t.stats().unwrap();
    (
        s.lease_expiry_ns,
        s.partitions.iter().map(|p| p.lease_expiry_ns).collect(),
        s.partitions.iter().map(|p| p.write_offset).collect(),
        s.groups
            .iter()
            .flat_map(|g| g.partitions.iter().map(|p| p.committed))
            .collect(),
    )
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn metrics_follow_a_live_bus_and_change_nothing() {
    let ns = Ns::new("me").deleting_on_drop("orders");
    let n = ns.0.clone();
    // A short lease (retention) so that any renewal would show.
    manual(&n)
        .create("orders", small().retention(Duration::from_secs(4)))
        .unwrap();
    let server = Server::start(&ns, &[]);
    let mut producer = ChildProc::spawn("produce", &n, "orders", None);
    let mut g1 = ChildProc::spawn("group", &n, "orders", Some("g1"));
    let mut g2 = ChildProc::spawn("group", &n, "orders", Some("g2"));
    let t = [("topic", "orders")];
    let g1l = [("topic", "orders"), ("group", "g1")];
    let g2l = [("topic", "orders"), ("group", "g2")];

    // Everyone at work: both groups committed something, live writers.
    let mut s = Samples::new();
    wait_for("producer and both groups", Duration::from_secs(15), || {
        s = parse(&server.scrape());
        sum(&s, "shmq_group_committed_offset", &g1l) > 0.0
            && sum(&s, "shmq_group_committed_offset", &g2l) > 0.0
            && sum(&s, "shmq_group_live_members", &g1l) == 1.0
            && sum(&s, "shmq_group_live_members", &g2l) == 1.0
    });
    assert_eq!(sum(&s, "shmq_namespace_topics", &[]), 1.0);
    assert_eq!(sum(&s, "shmq_namespace_regions", &[]), 3.0);
    assert!(sum(&s, "shmq_namespace_shm_bytes", &[]) >= 2.0 * 1024.0 * 64.0);
    assert!(sum(&s, "shmq_namespace_live_tokens", &[]) >= 3.0); // 3 children (+ the observer after its first look)
    assert_eq!(sum(&s, "shmq_topic_up", &t), 1.0);
    assert_eq!(sum(&s, "shmq_topic_partitions", &t), 2.0);
    assert_eq!(count(&s, "shmq_partition_write_offset_total"), 2);
    assert_eq!(sum(&s, "shmq_partition_writer_alive", &t), 2.0);
    assert!(sum(&s, "shmq_partition_lease_seconds_left", &t) > 0.0);
    assert!(sum(&s, "shmq_topic_lease_seconds_left", &t) > 0.0);
    for m in [
        "shmq_partition_depth",
        "shmq_partition_writer_epoch",
        "shmq_partition_takeovers_total",
        "shmq_partition_full_events_total",
        "shmq_group_lag",
        "shmq_group_nacks_total",
        "shmq_group_dead_lettered_total",
    ] {
        assert!(count(&s, m) >= 2, "{m} missing:\n{s:?}");
    }
    assert_eq!(count(&s, "shmq_group_members"), 2);

    // The counters rise.
    let w0 = sum(&s, "shmq_partition_write_offset_total", &t);
    let c0 = sum(&s, "shmq_group_committed_offset", &g1l);
    std::thread::sleep(Duration::from_millis(400));
    let s1 = parse(&server.scrape());
    assert!(sum(&s1, "shmq_partition_write_offset_total", &t) > w0);
    assert!(sum(&s1, "shmq_group_committed_offset", &g1l) > c0);
    assert!(count(&s1, "shmq_scrape_duration_seconds") == 1);

    // A stopped group's lag grows; its committed offsets stand still.
    g2.kill();
    std::thread::sleep(Duration::from_millis(100));
    let a = parse(&server.scrape());
    std::thread::sleep(Duration::from_millis(500));
    let b = parse(&server.scrape());
    assert!(
        sum(&b, "shmq_group_lag", &g2l) > sum(&a, "shmq_group_lag", &g2l),
        "stopped group's lag must grow"
    );
    assert_eq!(
        sum(&b, "shmq_group_committed_offset", &g2l),
        sum(&a, "shmq_group_committed_offset", &g2l)
    );
    assert_eq!(sum(&b, "shmq_group_live_members", &g2l), 0.0);
    assert!(
        sum(&b, "shmq_group_committed_offset", &g1l) > sum(&a, "shmq_group_committed_offset", &g1l)
    );

    // Quiet bus: a scrape leaves every lease expiry (and offset) as it was.
    producer.kill();
    g1.kill();
    let before = state_of(&n, "orders");
    // A fresh observer too: opening a topic is where a renewing user
    // would renew; the 4 s lease gives a renewer a tick each second.
    let fresh = Server::start(&ns, &[]);
    for _ in 0..6 {
        for srv in [&server, &fresh] {
            let s = parse(&srv.scrape());
            assert_eq!(sum(&s, "shmq_partition_writer_alive", &t), 0.0);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let after = state_of(&n, "orders");
    fresh.stop();
    assert_eq!(before, after, "a scrape changed the topic's state");

    // Other paths answer too.
    let root = ureq::get(&server.url.replace("/metrics", "/"))
        .call()
        .unwrap();
    assert_eq!(root.status(), 200);
    match ureq::get(&server.url.replace("/metrics", "/nope")).call() {
        Err(ureq::Error::Status(404, _)) => {}
        other => panic!("expected 404, got {other:?}"),
    }
    server.stop();
}

#[test]
fn metrics_all_namespaces_and_once() {
    let a = Ns::new("ma").deleting_on_drop("alpha");
    let b = Ns::new("mb").deleting_on_drop("beta");
    manual(&a.0).create("alpha", small()).unwrap();
    manual(&b.0).create("beta", small()).unwrap();
    // One namespace by default ...
    let one = parse(&a.ok(&["metrics", "--once"]));
    assert_eq!(sum(&one, "shmq_topic_up", &[("topic", "alpha")]), 1.0);
    assert_eq!(sum(&one, "shmq_topic_up", &[("topic", "beta")]), 0.0);
    assert_eq!(count(&one, "shmq_namespace_topics"), 1);
    // ... every namespace with --all-namespaces.
    let all = parse(&a.ok(&["metrics", "--once", "--all-namespaces"]));
    assert_eq!(
        sum(
            &all,
            "shmq_topic_up",
            &[("namespace", &a.0), ("topic", "alpha")]
        ),
        1.0
    );
    assert_eq!(
        sum(
            &all,
            "shmq_topic_up",
            &[("namespace", &b.0), ("topic", "beta")]
        ),
        1.0
    );
    // A serving observer lets go of a deleted topic and of its namespace.
    let server = Server::start(&a, &["--all-namespaces"]);
    let s = parse(&server.scrape());
    assert_eq!(sum(&s, "shmq_topic_up", &[("namespace", &b.0)]), 1.0);
    assert!(manual(&b.0).delete("beta").unwrap());
    // The first look after the delete lets go; the next shows it gone.
    parse(&server.scrape());
    assert_eq!(
        b.files(),
        Vec::<String>::new(),
        "the observer kept something"
    );
    let s = parse(&server.scrape());
    assert!(
        !s.keys()
            .any(|(_, l)| l.iter().any(|(k, v)| k == "namespace" && v == &b.0)),
        "deleted namespace still reported"
    );
    assert_eq!(
        b.files(),
        Vec::<String>::new(),
        "the observer kept something"
    );
    assert_eq!(
        sum(
            &s,
            "shmq_topic_up",
            &[("namespace", &a.0), ("topic", "alpha")]
        ),
        1.0
    );
    server.stop();
}

/// A private tmux server, killed on drop.
struct Tmux(String);

impl Tmux {
    fn new() -> Option<Tmux> {
        let ok = Command::new("tmux")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success());
        ok.then(|| Tmux(format!("shmqobs{}", std::process::id())))
    }

    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.0, "-f", "/dev/null"])
            .args(args)
            .output()
            .expect("run tmux");
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn screen(&self, target: &str) -> String {
        self.run(&["capture-pane", "-p", "-J", "-t", target])
    }

    fn keys(&self, target: &str, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", target];
        args.extend_from_slice(keys);
        self.run(&args);
    }

    fn wait_screen(&self, target: &str, what: &str, f: impl Fn(&str) -> bool) -> String {
        let end = Instant::now() + Duration::from_secs(15);
        loop {
            let s = self.screen(target);
            if f(&s) {
                return s;
            }
            assert!(
                Instant::now() < end,
                "timed out waiting for {what}; screen:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.0, "kill-server"])
            .output();
    }
}

/// The IN/s column of the list row of `key` (`ns/topic`), if shown.
fn in_rate_of(screen: &str, key: &str) -> Option<String> {
    screen
        .lines()
        .find(|l| l.trim_start().starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
}

#[test]
fn top_in_a_terminal() {
    let Some(tmux) = Tmux::new() else {
        panic!("tmux is needed for this test (apt-get install -y tmux; .ci/run installs it)");
    };
    let ns = Ns::new("tt").deleting_on_drop("orders");
    let n = ns.0.clone();
    manual(&n).create("orders", small()).unwrap();
    let _producer = ChildProc::spawn("produce", &n, "orders", None);
    let _group = ChildProc::spawn("group", &n, "orders", Some("audit"));
    let key = format!("{n}/orders");
    // After top exits the shell prints its status and the tty's modes.
    for (session, quit) in [("viaq", vec!["q"]), ("viactrlc", vec!["C-c"])] {
        let cmd = format!("SHMQ_NAMESPACE={n} {BIN} top; echo top-exit=$?; stty -a; sleep 60");
        tmux.run(&[
            "new-session",
            "-d",
            "-s",
            session,
            "-x",
            "80",
            "-y",
            "24",
            &cmd,
        ]);
        let screen = tmux.wait_screen(session, "a non-zero rate", |s| {
            in_rate_of(s, &key)
                .is_some_and(|r| r != "0" && r.parse::<f64>().map_or(true, |x| x > 0.0))
        });
        assert!(
            screen.contains("TOPIC") && screen.contains("IN/s"),
            "{screen}"
        );
        assert!(screen.contains(&format!("in/s of {key}")), "{screen}");
        // A few seconds of history for the sparkline.
        let screen = tmux.wait_screen(session, "3 s of rate history", |s| {
            s.contains("(last 3 s)") && in_rate_of(s, &key).is_some_and(|r| r != "0")
        });
        assert_eq!(
            tmux.run(&["display-message", "-p", "-t", session, "#{alternate_on}"])
                .trim(),
            "1",
            "top draws on the alternate screen"
        );
        if session == "viaq" {
            eprintln!("---- shmq top, 80x24, one screen ----\n{screen}---- end of screen ----");
            // Drill into the topic: partitions and groups.
            tmux.keys(session, &["Enter"]);
            let detail = tmux.wait_screen(session, "the detail view", |s| {
                s.contains("partitions") && s.contains("audit") && s.contains("LAG BY PARTITION")
            });
            eprintln!("---- shmq top, drilled into {key} ----\n{detail}---- end of screen ----");
            tmux.keys(session, &["Escape"]);
            tmux.wait_screen(session, "the list again", |s| s.contains("MAX LAG"));
            // Sort and filter.
            tmux.keys(session, &["s"]);
            tmux.wait_screen(session, "sort by lag", |s| s.contains("sort lag"));
            tmux.keys(session, &["/", "z", "z", "z", "Enter"]);
            tmux.wait_screen(session, "an empty filter", |s| {
                s.contains("0 of 1 topics") && s.contains("filter: zzz")
            });
            tmux.keys(session, &["Escape"]);
            tmux.wait_screen(session, "filter cleared", |s| s.contains("1 of 1 topics"));
        }
        tmux.keys(session, &quit);
        let after = tmux.wait_screen(session, "top to exit", |s| {
            s.contains("top-exit=") && s.contains("icanon")
        });
        assert!(after.contains("top-exit=0"), "{after}");
        // Restored: main screen, canonical mode with echo, cursor shown.
        assert_eq!(
            tmux.run(&["display-message", "-p", "-t", session, "#{alternate_on}"])
                .trim(),
            "0"
        );
        let words: Vec<&str> = after.split_whitespace().collect();
        assert!(
            words.contains(&"icanon") && !words.contains(&"-icanon"),
            "{after}"
        );
        assert!(
            words.contains(&"echo") && !words.contains(&"-echo"),
            "{after}"
        );
        assert_eq!(
            tmux.run(&["display-message", "-p", "-t", session, "#{cursor_flag}"])
                .trim(),
            "1"
        );
        assert!(
            !after.contains("MAX LAG"),
            "the view was left on screen:\n{after}"
        );
    }
}

#[test]
fn top_once_json_exact_fields() {
    let ns = Ns::new("tj").deleting_on_drop("known");
    manual(&ns.0)
        .create("known", small().partitions(3))
        .unwrap();
    ns.ok_with(
        &["produce", "known", "--partition", "0"],
        b"a\nb\nc\nd\ne\nf\ng\n",
    );
    ns.ok_with(&["produce", "known", "--partition", "1"], b"x\ny\nz\n");
    ns.ok(&[
        "consume", "known", "--group", "audit", "--commit", "--max", "4",
    ]);
    let out = ns.ok(&["top", "--once", "--format", "json", "--interval", "100ms"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    let keys = |v: &Value| -> Vec<String> { v.as_object().unwrap().keys().cloned().collect() };
    assert_eq!(keys(&v), ["namespaces", "interval_ms", "topics"]);
    assert_eq!(v["namespaces"], serde_json::json!([ns.0]));
    assert_eq!(v["interval_ms"], 100);
    let topics = v["topics"].as_array().unwrap();
    assert_eq!(topics.len(), 1);
    let t = &topics[0];
    assert_eq!(
        keys(t),
        [
            "namespace",
            "topic",
            "state",
            "error",
            "partitions",
            "messages",
            "in_per_sec",
            "out_per_sec",
            "max_lag",
            "writers",
            "lease_left_ms",
            "partition_list",
            "groups"
        ]
    );
    assert_eq!(t["namespace"], ns.0.as_str());
    assert_eq!(t["topic"], "known");
    assert_eq!(t["state"], "ok");
    assert_eq!(t["error"], Value::Null);
    assert_eq!(t["partitions"], 3);
    assert_eq!(t["messages"], 10);
    assert_eq!(t["in_per_sec"], 0.0);
    assert_eq!(t["out_per_sec"], 0.0);
    assert_eq!(t["max_lag"], 6);
    assert_eq!(
        t["writers"],
        serde_json::json!({"live": 0, "dead": 0, "none": 3})
    );
    let left = t["lease_left_ms"].as_u64().unwrap();
    assert!(left > 0 && left <= 3_600_000, "{left}");
    let parts = t["partition_list"].as_array().unwrap();
    assert_eq!(parts.len(), 3);
    assert_eq!(
        keys(&parts[0]),
        [
            "partition",
            "write_offset",
            "in_per_sec",
            "depth",
            "writer_pid",
            "writer_alive",
            "writer_epoch",
            "lease_left_ms"
        ]
    );
    let offsets: Vec<u64> = parts
        .iter()
        .map(|p| p["write_offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, [7, 3, 0]);
    let depths: Vec<u64> = parts.iter().map(|p| p["depth"].as_u64().unwrap()).collect();
    assert_eq!(depths, [7, 3, 0]);
    for (i, p) in parts.iter().enumerate() {
        assert_eq!(p["partition"], i);
        assert_eq!(p["writer_pid"], Value::Null);
        assert_eq!(p["writer_alive"], Value::Null);
        assert_eq!(p["in_per_sec"], 0.0);
    }
    let groups = t["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 1);
    let g = &groups[0];
    assert_eq!(
        keys(g),
        [
            "name",
            "members",
            "live_members",
            "lag",
            "partition_lag",
            "out_per_sec"
        ]
    );
    assert_eq!(g["name"], "audit");
    assert_eq!(g["members"], 0);
    assert_eq!(g["live_members"], 0);
    assert_eq!(g["lag"], 6);
    let lag: Vec<u64> = g["partition_lag"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_u64().unwrap())
        .collect();
    assert_eq!(lag.len(), 3);
    assert_eq!(lag.iter().sum::<u64>(), 6);
    assert_eq!(lag[2], 0);
    assert_eq!(g["out_per_sec"], 0.0);

    // The text form is the 80x24 screen.
    let screen = ns.ok(&["top", "--once", "--interval", "50ms"]);
    assert_eq!(screen.lines().count(), 24);
    assert!(screen.lines().all(|l| l.chars().count() <= 80));
    assert!(screen.contains(&format!("{}/known", ns.0)), "{screen}");
    // JSON needs --once.
    ns.fails(&["top", "--format", "json"], b"", 2);
}

/// JSON log lines of `stderr`.
fn json_lines(stderr: &str) -> Vec<Value> {
    stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect()
}

fn message(v: &Value) -> &str {
    v["fields"]["message"].as_str().unwrap_or("")
}

#[test]
fn logs_quiet_by_default_json_on_request() {
    let ns = Ns::new("lg").deleting_on_drop("t");
    // An expired topic for the supervisor to reclaim, twice.
    let expired = || {
        manual(&ns.0)
            .create(
                "t",
                TopicConfig::default()
                    .partitions(1)
                    .slots(64)
                    .slot_size(64)
                    .retention(Duration::from_millis(20)),
            )
            .unwrap();
        std::thread::sleep(Duration::from_millis(40));
    };
    let supervise = ["supervise", "--passes", "1", "--grace", "0s"];
    // Quiet by default: exactly the lines the supervisor printed before.
    expired();
    let out = ns.cmd(&supervise).env_remove("RUST_LOG").output().unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(json_lines(&err).is_empty(), "{err}");
    assert!(!err.contains("INFO") && !err.contains("reclaim"), "{err}");
    assert!(ns.files().iter().all(|f| !f.contains(".t.")));

    // RUST_LOG=info --log-format json: the supervisor's and the library's events.
    expired();
    let mut args = supervise.to_vec();
    args.extend(["--log-format", "json"]);
    let out = ns.cmd(&args).env("RUST_LOG", "info").output().unwrap();
    assert!(out.status.success());
    let lines = json_lines(&String::from_utf8_lossy(&out.stderr));
    let started = lines.iter().find(|v| message(v) == "supervisor started");
    assert!(started.is_some_and(|v| v["level"] == "INFO"), "{lines:?}");
    let reclaim = lines
        .iter()
        .find(|v| message(v) == "shmq: reclaim" && v["fields"]["kind"] == "reclaimed_topic")
        .unwrap_or_else(|| panic!("no reclaim event in {lines:?}"));
    assert_eq!(reclaim["target"], "shmq::reclaim");
    assert_eq!(reclaim["fields"]["namespace"], ns.0.as_str());
    assert!(lines.iter().any(|v| message(v) == "supervisor stopped"));

    // A writer takeover, logged by the library in the new writer's process.
    manual(&ns.0)
        .create(
            "t",
            TopicConfig::default().partitions(1).slots(64).slot_size(64),
        )
        .unwrap();
    let mut first = ns
        .cmd(&["produce", "t"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    first.stdin.as_mut().unwrap().write_all(b"one\n").unwrap();
    wait_for("the first writer", Duration::from_secs(10), || {
        manual(&ns.0).open("t").unwrap().write_offset(0).unwrap() == 1
    });
    first.kill().unwrap(); // dies holding the partition
    first.wait().unwrap();
    let out = ns
        .cmd(&["produce", "t", "--log-format", "json"])
        .env("RUST_LOG", "shmq=warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(b"two\n")?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(out.status.success());
    let lines = json_lines(&String::from_utf8_lossy(&out.stderr));
    let takeover = lines
        .iter()
        .find(|v| message(v).contains("took over"))
        .unwrap_or_else(|| panic!("no takeover event in {lines:?}"));
    assert_eq!(takeover["level"], "WARN");
    assert_eq!(takeover["target"], "shmq::producer");
    assert_eq!(takeover["fields"]["topic"], "t");
    assert_eq!(takeover["fields"]["partition"], 0);
}

/// The cost of one scrape of 100 topics × 8 partitions × 4 groups (run
/// with `SHMQ_SCRAPE_COST=1`, in release, with `--nocapture`).
#[test]
fn scrape_cost() {
    if std::env::var_os("SHMQ_SCRAPE_COST").is_none() {
        return;
    }
    const TOPICS: usize = 100;
    let ns = Ns::new("sc");
    let mgr = TopicManager::with_namespace(&ns.0).unwrap();
    let names: Vec<String> = (0..TOPICS).map(|i| format!("t{i:03}")).collect();
    for name in &names {
        let t = mgr
            .create(
                name,
                TopicConfig::default()
                    .partitions(8)
                    .slots(64)
                    .slot_size(64)
                    .max_groups(8),
            )
            .unwrap();
        let mut p = Producer::new(&t).unwrap();
        for i in 0..16u32 {
            p.send(&i.to_le_bytes()).unwrap();
        }
        for g in 0..4 {
            let mut c = GroupConsumer::join(&t, &format!("g{g}"), GroupOptions::default()).unwrap();
            c.poll(1000).unwrap();
            c.commit().unwrap();
        }
    }
    let server = Server::start(&ns, &[]);
    let t0 = Instant::now();
    let first = server.scrape();
    let cold = t0.elapsed();
    let mut times = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let s = server.scrape();
        times.push(t.elapsed());
        // The same series each time, plus the previous scrape's cost.
        assert_eq!(s.lines().count(), first.lines().count() + 3);
    }
    times.sort();
    let parsed = parse(&server.scrape());
    let internal = sum(&parsed, "shmq_scrape_duration_seconds", &[]);
    assert_eq!(
        count(&parsed, "shmq_partition_write_offset_total"),
        TOPICS * 8
    );
    assert_eq!(count(&parsed, "shmq_group_lag"), TOPICS * 8 * 4);
    println!(
        "scrape cost, {TOPICS} topics x 8 partitions x 4 groups: {} series, {} bytes; \
         first scrape (opens every topic) {:.1} ms; steady state over HTTP median {:.1} ms, \
         max {:.1} ms; read+encode inside the server {:.1} ms",
        parsed.len(),
        first.len(),
        cold.as_secs_f64() * 1e3,
        times[times.len() / 2].as_secs_f64() * 1e3,
        times[times.len() - 1].as_secs_f64() * 1e3,
        internal * 1e3
    );
    server.stop();
    drop(mgr);
    for name in &names {
        manual(&ns.0).delete(name).unwrap();
    }
}

/// The operator examples (Grafana dashboard, Prometheus alerts) name only
/// metrics that `shmq metrics` serves.
#[test]
fn ops_examples_name_real_metrics() {
    let ns = Ns::new("ox").deleting_on_drop("t");
    let t = manual(&ns.0).create("t", small()).unwrap();
    let mut p = Producer::new(&t).unwrap();
    p.send(b"x").unwrap();
    drop(p);
    let mut c = GroupConsumer::join(&t, "g", GroupOptions::default()).unwrap();
    c.poll(10).unwrap();
    c.commit().unwrap();
    drop(c);
    let served = parse(&ns.ok(&["metrics", "--once"]));
    let mut names: Vec<String> = served.keys().map(|(m, _)| m.clone()).collect();
    // `--once` has no previous scrape to report the cost of.
    names.push("shmq_scrape_duration_seconds".into());
    let ops = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/ops");
    let dashboard = std::fs::read_to_string(format!("{ops}/grafana-dashboard.json")).unwrap();
    let dash: Value = serde_json::from_str(&dashboard).unwrap();
    assert!(dash["panels"].as_array().unwrap().len() >= 8);
    let alerts = std::fs::read_to_string(format!("{ops}/shmq-alerts.yml")).unwrap();
    let scrape = std::fs::read_to_string(format!("{ops}/prometheus.yml")).unwrap();
    assert!(scrape.contains("metrics_path: /metrics") && scrape.contains("shmq-alerts.yml"));
    let mut used = 0;
    for text in [&dashboard, &alerts] {
        let mut rest = text.as_str();
        while let Some(i) = rest.find("shmq_") {
            let name: String = rest[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            assert!(names.contains(&name), "{name} is not served: {names:?}");
            used += 1;
            rest = &rest[i + name.len()..];
        }
    }
    assert!(used >= 15, "only {used} metric references");
}

/// Write `bytes` at `offset` of region file `region` (a hostile peer).
fn scribble(region: &str, offset: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/dev/shm/{region}"))
        .unwrap();
    f.write_all_at(bytes, offset).unwrap();
}

/// The library's fencing and corrupt-record events, as the `shmq` binary
/// logs them.
#[test]
fn logs_fencing_and_corrupt_records() {
    use shmq::protocol::layout::{stride, PartitionHeader, PARTITION_HEADER};
    let ns = Ns::new("lf").deleting_on_drop("t");
    let cfg = TopicConfig::default().partitions(1).slots(8).slot_size(64);
    manual(&ns.0).create("t", cfg).unwrap();
    let region = shmq::protocol::name::partition_region(&ns.0, "t", 0);
    ns.ok_with(&["produce", "t"], b"a\nb\nc\nd\ne\n");
    // Offset 3's value length scribbled far past its slot.
    scribble(
        &region,
        PARTITION_HEADER as u64 + 3 * stride(64) + 8,
        &u32::MAX.to_le_bytes(),
    );
    let out = ns
        .cmd(&["consume", "t", "--from", "earliest", "--log-format", "json"])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "a\nb\nc\ne\n");
    let lines = json_lines(&String::from_utf8_lossy(&out.stderr));
    let corrupt = lines
        .iter()
        .find(|v| message(v) == "shmq: skipped malformed records")
        .unwrap_or_else(|| panic!("no corrupt-record event in {lines:?}"));
    assert_eq!(corrupt["target"], "shmq::consumer");
    assert_eq!(corrupt["fields"]["corrupt"], 1);

    // A live writer whose lease word is taken (epoch bumped under it) is
    // fenced: its next send is refused, and logged.
    let mut w = ns
        .cmd(&["produce", "t", "--log-format", "json"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = w.stdin.take().unwrap();
    stdin.write_all(b"f\n").unwrap();
    stdin.flush().unwrap();
    wait_for("the writer's first record", Duration::from_secs(10), || {
        manual(&ns.0).open("t").unwrap().write_offset(0).unwrap() == 6
    });
    // The partition header is at the start of the region.
    let at = std::mem::offset_of!(PartitionHeader, writer) as u64;
    let word = shmq::protocol::writer_lease::pack(999, 0x7777_7777);
    scribble(&region, at, &word.to_le_bytes());
    let _ = stdin.write_all(b"g\n");
    drop(stdin);
    let out = w.wait_with_output().unwrap();
    assert!(!out.status.success(), "a fenced writer must fail");
    let lines = json_lines(&String::from_utf8_lossy(&out.stderr));
    let fenced = lines
        .iter()
        .find(|v| message(v).starts_with("shmq: write refused"))
        .unwrap_or_else(|| panic!("no fencing event in {lines:?}"));
    assert_eq!(fenced["target"], "shmq::topic");
    assert_eq!(fenced["fields"]["partition"], 0);
    assert!(
        fenced["fields"]["refusal"]
            .as_str()
            .is_some_and(|r| r.contains("Fenced")),
        "{fenced}"
    );
}
