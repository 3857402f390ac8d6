//! `shmq bridge` against a real `nats-server` (started here with `-js` on a
//! free loopback port and a temporary store directory): namespace A → NATS
//! JetStream → namespace B, with bridges killed, a server restarted, and
//! configuration errors.
//!
//! Without a `nats-server` binary (Debian package `nats-server`; `.ci/run`
//! installs it) the server tests print a loud SKIPPED line and pass; the
//! configuration-error test needs no server and always runs.
//!
//! Figures (throughput and A-send → B-receive latency), not run by default:
//! `SHMQ_NATS_FIGURES=1 cargo test --release -p shm-tools --test bridge -- --nocapture figures`

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Ns, BIN};
use shmq::{GroupConsumer, GroupOptions, Overflow, Producer, TopicConfig, TopicManager};

const TOPIC: &str = "t";
const CKPT: &str = "t-nats-ckpt";

// ---------------------------------------------------------------- server

/// `SHMQ_NATS_SERVER` names the binary (another build; a path that does not
/// exist makes the server tests skip); else `nats-server` on the PATH or in
/// /usr/sbin (Debian's place).
fn nats_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SHMQ_NATS_SERVER") {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/bin")])
        .map(|d| d.join("nats-server"))
        .find(|p| p.is_file())
}

fn skip(test: &str) {
    // Straight to the process's stderr: the test harness captures
    // `eprintln!` of passing tests, and this must be seen.
    let _ = writeln!(
        std::io::stderr(),
        "\n!!!!!!!! SKIPPED {test}: no nats-server binary (apt-get install -y nats-server; \
         .ci/run installs it). The NATS bridge was NOT tested. !!!!!!!!\n"
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// A `nats-server -js` of this test: own port, own store, gone on drop.
struct NatsServer {
    bin: PathBuf,
    port: u16,
    http: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl NatsServer {
    fn start(bin: PathBuf, tag: &str) -> NatsServer {
        let dir = std::env::temp_dir().join(format!("shmq-nats-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("store dir");
        let mut s = NatsServer {
            bin,
            port: free_port(),
            http: free_port(),
            dir,
            child: None,
        };
        s.up();
        s
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn up(&mut self) {
        let log = std::fs::File::create(self.dir.join("server.log")).expect("log");
        let child = Command::new(&self.bin)
            .args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-m", &self.http.to_string(), "-sd"])
            .arg(self.dir.join("store"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
        let t0 = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.http)).is_err()
            || TcpStream::connect(("127.0.0.1", self.port)).is_err()
        {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "nats-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stop (SIGTERM, as an operator would) and wait for it.
    fn down(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg(c.id().to_string()).status();
            let _ = c.wait();
        }
    }

    /// The stream's message count, from the server's monitoring endpoint.
    fn stream_messages(&self, stream: &str) -> u64 {
        let mut s = TcpStream::connect(("127.0.0.1", self.http)).expect("monitoring port");
        s.write_all(b"GET /jsz?streams=true HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
        let v: serde_json::Value = serde_json::from_str(body).expect("jsz json");
        for acc in v["account_details"].as_array().into_iter().flatten() {
            for st in acc["stream_detail"].as_array().into_iter().flatten() {
                if st["name"] == stream {
                    return st["state"]["messages"].as_u64().unwrap_or(0);
                }
            }
        }
        panic!("stream {stream} not in /jsz: {body}");
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------- bridges

/// A `shmq bridge` process whose JSON progress lines are collected.
struct BridgeProc {
    child: Child,
    lines: Arc<Mutex<Vec<serde_json::Value>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl BridgeProc {
    fn spawn(ns: &str, args: &[String]) -> BridgeProc {
        let mut child = Command::new(BIN)
            .env("SHMQ_NAMESPACE", ns)
            .arg("bridge")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn shmq bridge");
        let out = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l2 = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let v: serde_json::Value =
                    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
                l2.lock().unwrap().push(v);
            }
        });
        BridgeProc {
            child,
            lines,
            reader: Some(reader),
        }
    }

    fn wait_first_line(&self) {
        let t0 = Instant::now();
        while self.lines.lock().unwrap().is_empty() {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "bridge printed nothing"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn kill9(mut self) -> Vec<serde_json::Value> {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
        self.reader.take().unwrap().join().unwrap();
        std::mem::take(&mut *self.lines.lock().unwrap())
    }

    /// SIGTERM; the bridge must exit 0 with a last "stopped" line.
    fn stop(mut self) -> Vec<serde_json::Value> {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let st = self.child.wait().unwrap();
        self.reader.take().unwrap().join().unwrap();
        let lines = std::mem::take(&mut *self.lines.lock().unwrap());
        assert!(st.success(), "bridge exited {st}");
        assert_eq!(
            lines.last().map(|v| v["state"].clone()),
            Some("stopped".into())
        );
        lines
    }
}

impl Drop for BridgeProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn export_args(url: &str, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = [
        "export",
        TOPIC,
        "--server",
        url,
        "--progress-interval",
        "100ms",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

fn import_args(url: &str, stream: &str) -> Vec<String> {
    [
        "import",
        TOPIC,
        "--stream",
        stream,
        "--server",
        url,
        "--progress-interval",
        "100ms",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

// ---------------------------------------------------------------- records

/// Value: id, send time (ns), id scrambled (an integrity check).
fn value(id: u64) -> [u8; 24] {
    let mut v = [0u8; 24];
    v[..8].copy_from_slice(&id.to_le_bytes());
    v[8..16].copy_from_slice(&shmq::protocol::os::now_ns().to_le_bytes());
    v[16..].copy_from_slice(&(id ^ 0x9e37_79b9_7f4a_7c15).to_le_bytes());
    v
}

fn key(id: u64) -> Vec<u8> {
    format!("k{}", id % 17).into_bytes()
}

/// Producer in namespace A: `n` records at `rate` per second (0: flat out).
fn produce(ns: String, n: u64, rate: u64, sent: Arc<AtomicU64>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mgr = TopicManager::with_namespace(&ns).unwrap();
        let topic = mgr.open(TOPIC).unwrap();
        let mut p = Producer::new(&topic).unwrap();
        let parts = p.partitions();
        let t0 = Instant::now();
        for id in 0..n {
            if rate > 0 {
                let due = t0 + Duration::from_secs_f64(id as f64 / rate as f64);
                while Instant::now() < due {
                    std::hint::spin_loop();
                }
            }
            let part = parts[(id % parts.len() as u64) as usize];
            match record_headers(id) {
                Some(h) => p.send_with_to(part, Some(&key(id)), &h, &value(id)),
                None => p.send_to(part, Some(&key(id)), &value(id)),
            }
            .unwrap();
            sent.store(id + 1, Ordering::Relaxed);
        }
    })
}

/// Record headers of every 7th record (two, one with non-text bytes and a
/// name NATS could not carry as a header name), which must arrive at B.
fn record_headers(id: u64) -> Option<shmq::Headers> {
    id.is_multiple_of(7).then(|| {
        shmq::Headers::new()
            .with("id", id.to_string())
            .with("bin ary:", [0, 255, id as u8])
    })
}

/// What namespace B received, checked as it arrives.
#[derive(Default)]
struct Received {
    seen: Vec<u32>,            // copies per id
    last_id: Vec<Option<u64>>, // per partition: ids must grow (A partition order)
    count: u64,
    dup: u64,
    disorder: u64,
    bad: u64,
    latencies_ns: Vec<u64>,
}

impl Received {
    fn new(n: u64, partitions: usize) -> Received {
        Received {
            seen: vec![0; n as usize],
            last_id: vec![None; partitions],
            ..Received::default()
        }
    }

    fn take(&mut self, r: &shmq::Record) {
        let now = shmq::protocol::os::now_ns();
        let v = &r.value;
        if v.len() != 24 {
            self.bad += 1;
            return;
        }
        let id = u64::from_le_bytes(v[..8].try_into().unwrap());
        let sent = u64::from_le_bytes(v[8..16].try_into().unwrap());
        let chk = u64::from_le_bytes(v[16..].try_into().unwrap());
        if chk != id ^ 0x9e37_79b9_7f4a_7c15
            || id as usize >= self.seen.len()
            || r.key.as_deref() != Some(&key(id)[..])
            || *r.headers() != record_headers(id).unwrap_or_default()
        {
            self.bad += 1;
            return;
        }
        self.latencies_ns.push(now.saturating_sub(sent));
        self.count += 1;
        self.seen[id as usize] += 1;
        if self.seen[id as usize] > 1 {
            self.dup += 1;
        }
        let last = &mut self.last_id[r.partition as usize];
        if last.is_some_and(|l| id <= l) {
            self.disorder += 1;
        }
        *last = Some(id);
    }

    fn lost(&self) -> u64 {
        self.seen.iter().filter(|&&c| c == 0).count() as u64
    }
}

struct Pipeline {
    a: Ns,
    b: Ns,
}

const PARTITIONS: u32 = 4;

impl Pipeline {
    fn new(tag: &str) -> Pipeline {
        let a = Ns::new(&format!("{tag}a")).deleting_on_drop(TOPIC);
        let b = Ns::new(&format!("{tag}b"))
            .deleting_on_drop(TOPIC)
            .deleting_on_drop(CKPT);
        let cfg = TopicConfig::default()
            .partitions(PARTITIONS)
            .max_partitions(PARTITIONS)
            .slots(4096)
            .slot_size(96)
            .overflow(Overflow::Backpressure);
        TopicManager::with_namespace(&a.0)
            .unwrap()
            .create(TOPIC, cfg.clone())
            .unwrap();
        TopicManager::with_namespace(&b.0)
            .unwrap()
            .create(TOPIC, cfg.slots(1024))
            .unwrap();
        Pipeline { a, b }
    }

    fn stream(&self) -> String {
        format!("SHMQ_{}_{TOPIC}", self.a.0)
    }
}

/// Read B until `n` records arrived (or `limit` passed), calling `tick`
/// with the count between polls; then read on for `settle` to catch
/// duplicates arriving late.
fn receive(
    b: &str,
    n: u64,
    limit: Duration,
    settle: Duration,
    mut tick: impl FnMut(u64),
) -> Received {
    let mgr = TopicManager::with_namespace(b).unwrap();
    let topic = mgr.open(TOPIC).unwrap();
    // A group: it holds the import back (backpressure) instead of losing.
    let mut c = GroupConsumer::join(&topic, "verify", GroupOptions::default()).unwrap();
    let mut got = Received::new(n, PARTITIONS as usize);
    let t0 = Instant::now();
    let mut done_at: Option<Instant> = None;
    loop {
        let polled = c.poll_timeout(512, Duration::from_millis(5)).unwrap();
        assert!(
            polled.lagged.is_empty(),
            "B lost records: {:?}",
            polled.lagged
        );
        for r in &polled.records {
            got.take(r);
        }
        c.commit().unwrap();
        tick(got.count);
        if got.count >= n && done_at.is_none() {
            done_at = Some(Instant::now());
        }
        if done_at.is_some_and(|d| d.elapsed() >= settle) || t0.elapsed() > limit {
            return got;
        }
    }
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

// ---------------------------------------------------------------- tests

/// 100,000 records A → NATS → B; the export bridge is killed (-9) twice and
/// the import bridge once while they run. B gets every record exactly once,
/// in partition order, and the stream holds exactly 100,000 messages although
/// the restarted exports re-sent records (reported by JetStream as
/// duplicates of their Nats-Msg-Id).
#[test]
fn bridge_end_to_end_survives_kill_9() {
    let Some(bin) = nats_binary() else {
        return skip("bridge_end_to_end_survives_kill_9");
    };
    const N: u64 = 100_000;
    let server = NatsServer::start(bin, "e2e");
    let p = Pipeline::new("e");
    let url = server.url();
    // Commit every 300 ms: a kill leaves acknowledged, uncommitted records
    // for the next export to re-send (and the stream to drop).
    let exp = || BridgeProc::spawn(&p.a.0, &export_args(&url, &["--commit-interval", "300ms"]));
    let mut export = Some(exp());
    export.as_ref().unwrap().wait_first_line(); // its group holds A's producer from now on
    let mut import = Some(BridgeProc::spawn(&p.b.0, &import_args(&url, &p.stream())));
    let sent = Arc::new(AtomicU64::new(0));
    let producer = produce(p.a.0.clone(), N, 0, sent.clone());

    let mut export_lines = Vec::new();
    let mut import_lines = Vec::new();
    let mut kills = 0;
    let got = receive(
        &p.b.0,
        N,
        Duration::from_secs(120),
        Duration::from_secs(1),
        |count| {
            let stage = [20_000, 45_000, 70_000];
            if kills < 3 && count >= stage[kills] {
                if kills == 1 {
                    import_lines.extend(import.take().unwrap().kill9());
                    import = Some(BridgeProc::spawn(&p.b.0, &import_args(&url, &p.stream())));
                } else {
                    export_lines.extend(export.take().unwrap().kill9());
                    std::thread::sleep(Duration::from_millis(100));
                    export = Some(exp());
                }
                kills += 1;
            }
        },
    );
    producer.join().unwrap();
    let final_export = export.take().unwrap();
    let final_import = import.take().unwrap();
    export_lines.extend(final_export.stop());
    import_lines.extend(final_import.stop());
    let stream_messages = server.stream_messages(&p.stream());
    // Sum the last duplicates figure of each export run (counters restart at 0).
    let mut dup_total = 0;
    let mut prev = 0;
    for v in &export_lines {
        let d = v["duplicates"].as_u64().unwrap_or(0);
        if d < prev {
            dup_total += prev;
        }
        prev = d;
    }
    dup_total += prev;
    eprintln!(
        "e2e: sent {} received {} lost {} dup {} disorder {} bad {}; stream holds {stream_messages}; \
         export runs re-sent {dup_total} records the stream dropped as duplicates",
        sent.load(Ordering::Relaxed),
        got.count,
        got.lost(),
        got.dup,
        got.disorder,
        got.bad
    );
    assert_eq!(kills, 3, "the kill schedule did not run");
    assert_eq!(got.bad, 0);
    assert_eq!(got.lost(), 0, "records lost on the way to B");
    assert_eq!(got.dup, 0, "records duplicated at B");
    assert_eq!(got.count, N);
    assert_eq!(got.disorder, 0, "a partition's order changed on the way");
    assert_eq!(stream_messages, N, "the stream must hold each Msg-Id once");
    assert!(
        dup_total > 0,
        "no re-send was de-duplicated: the Msg-Id dedupe was not exercised"
    );
}

/// The NATS server is stopped and started again (same port and store) while
/// both bridges run: they reconnect with backoff and nothing is lost or
/// duplicated.
#[test]
fn bridge_reconnects_after_nats_server_restart() {
    let Some(bin) = nats_binary() else {
        return skip("bridge_reconnects_after_nats_server_restart");
    };
    const N: u64 = 20_000;
    let mut server = NatsServer::start(bin, "restart");
    let p = Pipeline::new("r");
    let url = server.url();
    let export = BridgeProc::spawn(&p.a.0, &export_args(&url, &["--timeout", "1s"]));
    export.wait_first_line();
    let import = BridgeProc::spawn(&p.b.0, &import_args(&url, &p.stream()));
    let sent = Arc::new(AtomicU64::new(0));
    let producer = produce(p.a.0.clone(), N, 5_000, sent.clone());
    let restarted = AtomicBool::new(false);
    let paused = AtomicBool::new(false);
    let got = receive(
        &p.b.0,
        N,
        Duration::from_secs(90),
        Duration::from_secs(1),
        |count| {
            if count >= 4_000 && !restarted.swap(true, Ordering::Relaxed) {
                server.down();
                std::thread::sleep(Duration::from_millis(1500));
                server.up();
            }
            // B's reader stops for a while: its backpressure topic fills up
            // (4 x 1024 slots) and the import must wait, not drop.
            if count >= 12_000 && !paused.swap(true, Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(1500));
            }
        },
    );
    producer.join().unwrap();
    let e = export.stop();
    let i = import.stop();
    let disconnects = |lines: &[serde_json::Value]| {
        lines
            .iter()
            .filter_map(|v| v["disconnects"].as_u64())
            .max()
            .unwrap_or(0)
    };
    eprintln!(
        "restart: received {} lost {} dup {} disorder {}; export disconnects {} retries {}, \
         import disconnects {} retries {}",
        got.count,
        got.lost(),
        got.dup,
        got.disorder,
        disconnects(&e),
        e.last().map_or(0, |v| v["retries"].as_u64().unwrap_or(0)),
        disconnects(&i),
        i.last().map_or(0, |v| v["retries"].as_u64().unwrap_or(0)),
    );
    let full_waits = i
        .last()
        .map_or(0, |v| v["full_waits"].as_u64().unwrap_or(0));
    eprintln!("restart: the import waited {full_waits} times on a full topic");
    assert!(restarted.load(Ordering::Relaxed) && paused.load(Ordering::Relaxed));
    assert!(
        full_waits > 0,
        "B never filled up: the backpressure path was not exercised"
    );
    assert!(
        disconnects(&e) >= 1 && disconnects(&i) >= 1,
        "the bridges never saw the server go"
    );
    assert_eq!(got.bad, 0);
    assert_eq!(got.lost(), 0, "records lost across the server restart");
    assert_eq!(got.dup, 0, "records duplicated across the server restart");
    assert_eq!(server.stream_messages(&p.stream()), N);
}

/// Configuration errors exit non-zero (2, or 3 for a missing topic) with a
/// message naming what to fix, before touching NATS.
#[test]
fn bridge_config_errors_exit_non_zero() {
    let ns = Ns::new("cfg")
        .deleting_on_drop(TOPIC)
        .deleting_on_drop(CKPT);
    ns.ok(&["create", TOPIC, "--partitions", "1"]);
    let dir = std::env::temp_dir().join(format!("shmq-bridge-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad_toml = dir.join("bad.toml");
    std::fs::write(&bad_toml, "url = \"nats://127.0.0.1:1\"\nsubjekt = 3\n").unwrap();
    let bad_toml = bad_toml.to_str().unwrap();
    let cases: &[(&[&str], i32, &str)] = &[
        (
            &["bridge", "export", TOPIC, "--config", bad_toml],
            2,
            "unknown field `subjekt`",
        ),
        (
            &["bridge", "export", TOPIC, "--config", "/nonexistent/b.toml"],
            2,
            "config file",
        ),
        (
            &["bridge", "export", TOPIC, "--subject", "shmq.{nope}"],
            2,
            "unknown placeholder",
        ),
        (
            &["bridge", "export", TOPIC, "--subject", "a..b"],
            2,
            "empty token",
        ),
        (
            &["bridge", "export", TOPIC, "--stream", "a.b"],
            2,
            "stream name",
        ),
        (
            &["bridge", "export", TOPIC, "--server", "http://x:1"],
            2,
            "scheme",
        ),
        (
            &["bridge", "export", TOPIC, "--creds", "/nonexistent/x.creds"],
            2,
            "credentials file",
        ),
        (&["bridge", "export"], 2, "no topic to export"),
        (&["bridge", "export", "missing"], 3, "missing"),
        (&["bridge", "import", TOPIC], 2, "--stream"),
        (
            &["bridge", "import", "missing", "--stream", "S"],
            3,
            "missing",
        ),
    ];
    for (args, code, needle) in cases {
        let err = ns.fails(args, b"", *code);
        assert!(err.contains(needle), "{args:?}: {err:?} lacks {needle:?}");
    }
    let help = ns.ok(&["bridge", "--help"]);
    assert!(
        help.contains("Examples") && help.contains("bridge import"),
        "{help}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
    // Importing a stream the server does not have is fatal, not retried.
    if let Some(bin) = nats_binary() {
        let server = NatsServer::start(bin, "cfg");
        let err = ns.fails(
            &[
                "bridge",
                "import",
                TOPIC,
                "--stream",
                "NOPE",
                "--server",
                &server.url(),
            ],
            b"",
            2,
        );
        assert!(err.contains("does not exist"), "{err}");
        // Refused credentials are fatal too (not retried forever).
        let port = free_port();
        let mut auth = Command::new(server.bin.clone())
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "--user",
                "u",
                "--pass",
                "right",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        let t0 = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "nats-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let url = format!("nats://127.0.0.1:{port}");
        let args = [
            "bridge",
            "export",
            TOPIC,
            "--server",
            &url,
            "--user",
            "u",
            "--password",
            "wrong",
        ];
        let err = ns.fails(&args, b"", 2);
        let _ = auth.kill();
        let _ = auth.wait();
        assert!(err.contains("check the url and credentials"), "{err}");
    }
}

/// Throughput and latency A send → B receive. Run with
/// `SHMQ_NATS_FIGURES=1 cargo test --release -p shm-tools --test bridge -- --nocapture figures`.
#[test]
fn figures() {
    if std::env::var_os("SHMQ_NATS_FIGURES").is_none() {
        return;
    }
    let Some(bin) = nats_binary() else {
        return skip("figures");
    };
    for (label, n, rate) in [
        ("flat out", 100_000u64, 0u64),
        ("at 5,000/s", 20_000, 5_000),
    ] {
        let server = NatsServer::start(bin.clone(), &format!("fig{rate}"));
        let p = Pipeline::new("f");
        let url = server.url();
        let export = BridgeProc::spawn(&p.a.0, &export_args(&url, &[]));
        export.wait_first_line();
        let import = BridgeProc::spawn(&p.b.0, &import_args(&url, &p.stream()));
        import.wait_first_line();
        let sent = Arc::new(AtomicU64::new(0));
        let t0 = Instant::now();
        let producer = produce(p.a.0.clone(), n, rate, sent);
        let mut got = receive(&p.b.0, n, Duration::from_secs(300), Duration::ZERO, |_| {});
        let secs = t0.elapsed().as_secs_f64();
        producer.join().unwrap();
        export.stop();
        import.stop();
        assert_eq!((got.count, got.lost(), got.dup), (n, 0, 0));
        got.latencies_ns.sort_unstable();
        println!(
            "bridge {label}: {n} records A → NATS → B in {secs:.2} s = {:.0} records/s; \
             latency A send → B receive p50 {:.2} ms, p99 {:.2} ms",
            n as f64 / secs,
            percentile(&got.latencies_ns, 0.50) as f64 / 1e6,
            percentile(&got.latencies_ns, 0.99) as f64 / 1e6,
        );
    }
}
