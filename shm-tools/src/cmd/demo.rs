//! `shmq demo`: a producer process and a consumer process exchange messages
//! through a private topic; every message is verified and timed.
//!
//! The parent creates a backpressure topic `demo` in a private namespace
//! (`demo<pid>`, or the one chosen with `--namespace` / `SHMQ_NAMESPACE`),
//! starts the consumer (a re-execution of this binary as the
//! hidden `demo-consumer` verb), waits until it has registered its consumer
//! group (it prints `ready`), then starts the producer (`demo-producer`).
//! Backpressure makes the writer wait for the group's committed offsets, so
//! no message may be overwritten: anything missing is a real loss.
//!
//! Each message (`--size` bytes, at least [`MIN_SIZE`]) is laid out as:
//!
//! ```text
//! 0        8                 16                       size-8     size
//! +--------+-----------------+------------ ... -------+----------+
//! |  seq   | send time (ns,  | filler derived from seq | xxh3_64 |
//! |  (LE)  | CLOCK_MONOTONIC)|                         | of 0..-8 |
//! +--------+-----------------+------------ ... -------+----------+
//! ```
//!
//! The consumer checks the checksum (corrupt otherwise), that offsets are
//! consecutive and sequence numbers increase within each partition (out of
//! order otherwise), that no sequence number comes twice (duplicate) and
//! that every one of `0..messages` arrives (lost otherwise). Latency is the
//! consumer's `CLOCK_MONOTONIC` at delivery minus the send time in the
//! message: one clock, one host, two processes. Throughput is messages over
//! the time from the first send to the last delivery.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};
use shmq::protocol::name::RegionName;
use shmq::{
    Consumer, Error, Overflow, Producer, RecordBuf, Topic, TopicConfig, TopicManager, WaitStrategy,
};
use xxhash_rust::xxh3::xxh3_64;

use crate::error::{CliError, CliResult};
use crate::util::{fmt_ns, mono_ns, plural, thousands};

/// Smallest message: sequence number, send time and checksum.
pub const MIN_SIZE: usize = 24;
/// Topic name of the demo (in its private namespace, or the chosen one).
const TOPIC: &str = "demo";
/// Consumer group of the demo consumer.
const GROUP: &str = "demo";
/// The probe producer spins (rather than sleeps) this close to a send time.
const SPIN_NS: u64 = 100_000;

/// How the demo consumer waits for messages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum WaitArg {
    /// Spin on the CPU (lowest latency, burns a core).
    Spin,
    /// Yield the time slice between checks.
    Yield,
    /// Spin, then yield, then sleep on a futex.
    #[default]
    Backoff,
    /// Sleep on a futex at once.
    Park,
}

impl From<WaitArg> for WaitStrategy {
    fn from(w: WaitArg) -> WaitStrategy {
        match w {
            WaitArg::Spin => WaitStrategy::BusySpin,
            WaitArg::Yield => WaitStrategy::Yield,
            WaitArg::Backoff => WaitStrategy::Backoff,
            WaitArg::Park => WaitStrategy::Park,
        }
    }
}

/// A fault the producer injects on purpose (tests prove the consumer sees it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Fault {
    /// Do not send the middle message (the consumer must report it lost).
    Skip,
    /// Flip a byte of the middle message after its checksum was computed
    /// (the consumer must report it corrupt, and lost).
    Corrupt,
}

fn parse_size(s: &str) -> Result<usize, String> {
    crate::util::parse_size_in(
        s,
        MIN_SIZE,
        1 << 20,
        "a message carries a sequence number, a timestamp and a checksum",
    )
}

/// Arguments of `shmq demo`.
#[derive(Debug, Args)]
#[command(after_help = "\
Two phases through one topic: --messages sent flat out (throughput, and the
latency of a saturated queue), then --probe more at a steady --probe-rate
(latency of an unsaturated queue). Runs in a private namespace (demo<pid>),
or as topic \"demo\" in the namespace chosen with --namespace or SHMQ_NAMESPACE,
and removes everything it created, also on failure or Ctrl-C. Exits 1 if any
message was lost, corrupt, duplicated or out of order.

Examples:
  shmq demo
  shmq demo --messages 100000 --partitions 1 --size 1000
  shmq demo --probe 1000000 --probe-rate 500000 --wait spin")]
pub struct DemoArgs {
    /// Messages sent flat out.
    #[arg(long, default_value_t = 1_000_000)]
    pub messages: u64,
    /// Messages sent afterwards at --probe-rate to measure latency (0: skip).
    #[arg(long, default_value_t = 100_000)]
    pub probe: u64,
    /// Messages per second of the latency probe.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub probe_rate: u64,
    /// Partitions of the demo topic.
    #[arg(long, default_value_t = 4)]
    pub partitions: u32,
    /// Bytes per message (at least 24).
    #[arg(long, default_value = "100", value_parser = parse_size)]
    pub size: usize,
    /// Slots per partition ring (a power of two).
    #[arg(long, default_value_t = 4096)]
    pub slots: u64,
    /// How the consumer waits for messages.
    #[arg(long, value_enum, default_value_t = WaitArg::Backoff)]
    pub wait: WaitArg,
    /// Testing: make the producer damage one message on purpose.
    #[arg(long, value_enum, hide = true)]
    pub inject_fault: Option<Fault>,
}

/// Arguments of the hidden `demo-producer` verb.
#[derive(Debug, Args)]
pub struct ProducerArgs {
    /// Topic.
    #[arg(long)]
    pub topic: String,
    /// Messages sent flat out.
    #[arg(long)]
    pub messages: u64,
    /// Messages sent at `probe_rate` after the consumer caught up.
    #[arg(long, default_value_t = 0)]
    pub probe: u64,
    /// Messages per second of the probe.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub probe_rate: u64,
    /// Bytes per message.
    #[arg(long, value_parser = parse_size)]
    pub size: usize,
    /// Damage the middle message of the flat-out phase on purpose.
    #[arg(long, value_enum)]
    pub inject_fault: Option<Fault>,
}

/// Arguments of the hidden `demo-consumer` verb.
#[derive(Debug, Args)]
pub struct ConsumerArgs {
    /// Topic.
    #[arg(long)]
    pub topic: String,
    /// Messages of the flat-out phase.
    #[arg(long)]
    pub messages: u64,
    /// Messages of the probe phase.
    #[arg(long, default_value_t = 0)]
    pub probe: u64,
    /// Bytes per message.
    #[arg(long, value_parser = parse_size)]
    pub size: usize,
    /// Wait strategy.
    #[arg(long, value_enum, default_value_t = WaitArg::Backoff)]
    pub wait: WaitArg,
}

/// What the producer process reports (one JSON line on stdout).
#[derive(Debug, Default, Serialize, Deserialize)]
struct ProducerReport {
    /// Messages sent in both phases.
    sent: u64,
    /// First and last send of the flat-out phase.
    first_send_ns: u64,
    last_send_ns: u64,
    /// Time spent waiting for the consumer to catch up between the phases.
    drain_ns: u64,
}

/// Latency percentiles in nanoseconds.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Latency {
    samples: u64,
    p50: u64,
    p90: u64,
    p99: u64,
    p999: u64,
    max: u64,
}

impl Latency {
    fn of(l: &mut [u64]) -> Latency {
        l.sort_unstable();
        let pct = |q: f64| -> u64 {
            if l.is_empty() {
                return 0;
            }
            // Nearest rank.
            let rank = ((q * l.len() as f64).ceil() as usize).clamp(1, l.len());
            l[rank - 1]
        };
        Latency {
            samples: l.len() as u64,
            p50: pct(0.50),
            p90: pct(0.90),
            p99: pct(0.99),
            p999: pct(0.999),
            max: l.last().copied().unwrap_or(0),
        }
    }
}

/// What the consumer process reports (one JSON line on stdout after `ready`).
#[derive(Debug, Default, Serialize, Deserialize)]
struct ConsumerReport {
    received: u64,
    valid: u64,
    lost: u64,
    corrupt: u64,
    duplicates: u64,
    out_of_order: u64,
    lapped: u64,
    /// Earliest send time and latest receive time of the flat-out phase.
    first_send_ns: u64,
    last_recv_ns: u64,
    /// Valid messages of the flat-out phase.
    bulk_valid: u64,
    bulk: Latency,
    probe: Latency,
}

// ---------------------------------------------------------------- message

/// Fill `buf` with message `seq` sent at `send_ns`.
fn encode(buf: &mut [u8], seq: u64, send_ns: u64) {
    let n = buf.len();
    buf[0..8].copy_from_slice(&seq.to_le_bytes());
    buf[8..16].copy_from_slice(&send_ns.to_le_bytes());
    let mut x = seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for chunk in buf[16..n - 8].chunks_mut(8) {
        // xorshift: cheap, different for every message.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    let sum = xxh3_64(&buf[..n - 8]);
    buf[n - 8..].copy_from_slice(&sum.to_le_bytes());
}

/// `(seq, send_ns)` of a message whose checksum holds.
fn decode(value: &[u8], size: usize) -> Option<(u64, u64)> {
    if value.len() != size {
        return None;
    }
    let word = |at: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&value[at..at + 8]);
        u64::from_le_bytes(w)
    };
    (xxh3_64(&value[..size - 8]) == word(size - 8)).then(|| (word(0), word(8)))
}

// --------------------------------------------------------------- producer

/// Wait until the demo group has committed everything written.
fn wait_drained(topic: &Topic, limit: Duration) -> CliResult {
    let deadline = Instant::now() + limit;
    loop {
        let stats = topic.stats()?;
        let group = stats.groups.iter().find(|g| g.name == GROUP);
        if group.is_some_and(|g| g.partitions.iter().all(|p| p.lag == 0)) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(CliError::failed(format!(
                "the consumer did not catch up within {} s",
                limit.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Run the hidden `demo-producer` verb.
pub fn run_producer(ns: &str, args: ProducerArgs) -> CliResult {
    let mgr = TopicManager::with_namespace(ns)?;
    let topic = mgr.open(&args.topic)?;
    let mut producer = Producer::new(&topic)?;
    let mut buf = vec![0u8; args.size];
    let mut report = ProducerReport {
        first_send_ns: mono_ns(),
        ..ProducerReport::default()
    };
    let faulty = args.inject_fault.map(|f| (f, args.messages / 2));
    for seq in 0..args.messages {
        encode(&mut buf, seq, mono_ns());
        match faulty {
            Some((Fault::Skip, at)) if at == seq => continue,
            Some((Fault::Corrupt, at)) if at == seq => buf[args.size / 2] ^= 0x40,
            _ => {}
        }
        producer.send(&buf)?;
    }
    report.last_send_ns = mono_ns();
    report.sent = args.messages;
    if args.probe > 0 {
        // Start the probe on an empty queue, so it measures delivery, not the
        // backlog of the first phase.
        wait_drained(&topic, Duration::from_secs(30))?;
        let start = mono_ns();
        report.drain_ns = start - report.last_send_ns;
        let interval = 1e9 / args.probe_rate as f64;
        for i in 0..args.probe {
            let due = start + (i as f64 * interval) as u64;
            let mut now = mono_ns();
            // Sleep through long gaps (leaving the CPU to the consumer on a
            // small machine), spin through the last stretch for precision.
            if due > now + SPIN_NS {
                std::thread::sleep(Duration::from_nanos(due - now - SPIN_NS));
                now = mono_ns();
            }
            while now < due {
                std::hint::spin_loop();
                now = mono_ns();
            }
            encode(&mut buf, args.messages + i, now);
            producer.send(&buf)?;
            report.sent += 1;
        }
    }
    drop(producer);
    let line = serde_json::to_string(&report).map_err(|e| CliError::failed(e.to_string()))?;
    writeln!(std::io::stdout().lock(), "{line}")?;
    Ok(())
}

// --------------------------------------------------------------- consumer

/// Per-message verification state of the consumer.
struct Verifier {
    size: usize,
    /// Messages of the flat-out phase; sequence numbers from here on are probes.
    bulk: u64,
    total: u64,
    seen: Vec<u64>,
    next_offset: Vec<Option<u64>>,
    last_seq: Vec<Option<u64>>,
    bulk_latency: Vec<u64>,
    probe_latency: Vec<u64>,
    report: ConsumerReport,
}

impl Verifier {
    fn new(bulk: u64, probe: u64, size: usize, partitions: u32) -> Self {
        let total = bulk + probe;
        Verifier {
            size,
            bulk,
            total,
            seen: vec![0; total.div_ceil(64) as usize],
            next_offset: vec![None; partitions as usize],
            last_seq: vec![None; partitions as usize],
            bulk_latency: Vec::with_capacity(bulk.min(1 << 26) as usize),
            probe_latency: Vec::with_capacity(probe.min(1 << 26) as usize),
            report: ConsumerReport {
                first_send_ns: u64::MAX,
                ..ConsumerReport::default()
            },
        }
    }

    fn check(&mut self, partition: u32, offset: u64, value: &[u8], recv_ns: u64) {
        let r = &mut self.report;
        r.received += 1;
        let p = partition as usize;
        if self.next_offset[p].is_some_and(|want| offset != want) {
            r.out_of_order += 1;
        }
        self.next_offset[p] = Some(offset + 1);
        let Some((seq, send_ns)) = decode(value, self.size).filter(|&(s, _)| s < self.total) else {
            r.corrupt += 1;
            return;
        };
        if self.last_seq[p].is_some_and(|last| seq <= last) {
            r.out_of_order += 1;
        }
        self.last_seq[p] = Some(seq);
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        if self.seen[word] & (1 << bit) != 0 {
            r.duplicates += 1;
            return;
        }
        self.seen[word] |= 1 << bit;
        r.valid += 1;
        let latency = recv_ns.saturating_sub(send_ns);
        if seq < self.bulk {
            r.bulk_valid += 1;
            r.first_send_ns = r.first_send_ns.min(send_ns);
            r.last_recv_ns = r.last_recv_ns.max(recv_ns);
            self.bulk_latency.push(latency);
        } else {
            self.probe_latency.push(latency);
        }
    }

    fn finish(mut self, lapped: u64, skipped: u64) -> ConsumerReport {
        let mut r = self.report;
        r.lapped = lapped;
        r.corrupt += skipped;
        r.lost = self.total - r.valid;
        if r.first_send_ns == u64::MAX {
            r.first_send_ns = 0;
        }
        r.bulk = Latency::of(&mut self.bulk_latency);
        r.probe = Latency::of(&mut self.probe_latency);
        r
    }
}

/// Run the hidden `demo-consumer` verb.
pub fn run_consumer(ns: &str, args: ConsumerArgs) -> CliResult {
    let mgr = TopicManager::with_namespace(ns)?;
    let topic = mgr.open(&args.topic)?;
    let mut consumer = Consumer::new(&topic, GROUP)?.with_wait_strategy(args.wait.into());
    // Register the group's positions before the producer starts, so that
    // backpressure holds the writer to them from the first message.
    consumer.commit()?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "ready")?;
        out.flush()?;
    }
    // The parent writes "done" to our stdin once the producer exited: every
    // message is published by then, so a short silence means loss.
    let producer_done = Arc::new(AtomicBool::new(false));
    {
        let done = producer_done.clone();
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                match line {
                    Ok(l) if l.starts_with("done") => done.store(true, Ordering::Release),
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            // stdin closed: the parent is gone or finished; stop soon.
            done.store(true, Ordering::Release);
        });
    }

    let slots = topic.config().slots;
    let commit_every = (slots * u64::from(topic.partitions()) / 4).max(1);
    let mut v = Verifier::new(args.messages, args.probe, args.size, topic.partitions());
    let total = args.messages + args.probe;
    let mut buf = RecordBuf::default();
    let mut since_commit = 0u64;
    let mut last_progress = Instant::now();
    while v.report.valid < total {
        if let Some(d) = consumer.poll_into(&mut buf)? {
            v.check(d.partition, d.offset, buf.value(), mono_ns());
            since_commit += 1;
            if since_commit >= commit_every {
                consumer.commit()?;
                since_commit = 0;
            }
            last_progress = Instant::now();
            continue;
        }
        // Caught up: commit, so a producer held back by backpressure can go on.
        if since_commit > 0 {
            consumer.commit()?;
            since_commit = 0;
        }
        match consumer.recv_into(&mut buf, Some(Duration::from_millis(50))) {
            Ok(d) => {
                v.check(d.partition, d.offset, buf.value(), mono_ns());
                since_commit += 1;
                last_progress = Instant::now();
            }
            Err(Error::Timeout) => {
                let limit = if producer_done.load(Ordering::Acquire) {
                    Duration::from_millis(500)
                } else {
                    Duration::from_secs(30)
                };
                if last_progress.elapsed() > limit {
                    break;
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    consumer.commit()?;
    let report = v.finish(consumer.missed(), consumer.corrupt());
    let line = serde_json::to_string(&report).map_err(|e| CliError::failed(e.to_string()))?;
    writeln!(std::io::stdout().lock(), "{line}")?;
    Ok(())
}

// ----------------------------------------------------------------- parent

/// Owns everything the demo created and removes it, also on failure.
struct Cleanup {
    ns: String,
    /// The namespace is the demo's own (`demo<pid>`), not a chosen one.
    private: bool,
    children: Vec<Child>,
    topic: Option<Topic>,
    mgr: Option<TopicManager>,
}

impl Cleanup {
    /// Stop the children, delete the topic, drop our token, remove tokens of
    /// dead children. Returns the files of the namespace still in /dev/shm.
    fn run(&mut self) -> Vec<String> {
        for c in &mut self.children {
            if let Ok(None) = c.try_wait() {
                let _ = c.kill();
            }
            let _ = c.wait();
        }
        self.children.clear();
        if let Some(mgr) = &self.mgr {
            let _ = mgr.delete(TOPIC);
        }
        self.topic = None;
        self.mgr = None;
        if !self.private {
            // Someone else's namespace: only the demo topic is ours (dead
            // tokens there are the supervisor's business).
            let prefix = shmq::protocol::name::topic_prefix(&self.ns, TOPIC);
            return shmq::protocol::os::list_shm(&prefix).unwrap_or_default();
        }
        let prefix = shmq::protocol::name::namespace_prefix(&self.ns);
        let files = shmq::protocol::os::list_shm(&prefix).unwrap_or_default();
        for f in &files {
            // A child killed before it could drop its manager leaves its
            // liveness token file behind (unlocked); remove those.
            if let Some(RegionName::Token { id }) = shmq::protocol::name::parse(&self.ns, f) {
                if shmq::protocol::token::probe(&self.ns, id).is_dead() {
                    let _ = shmq::protocol::os::shm_remove(f);
                }
            }
        }
        shmq::protocol::os::list_shm(&prefix).unwrap_or_default()
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if self.mgr.is_some() || !self.children.is_empty() {
            let _ = self.run();
        }
    }
}

fn spawn(ns: &str, verb: &str, args: &[String]) -> CliResult<Child> {
    let exe = std::env::current_exe()
        .map_err(|e| CliError::failed(format!("cannot find the shmq binary to re-run: {e}")))?;
    Command::new(exe)
        .arg("--namespace")
        .arg(ns)
        .arg(verb)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| CliError::failed(format!("cannot start the {verb} process: {e}")))
}

fn read_report<T: for<'de> Deserialize<'de>>(
    out: &mut BufReader<ChildStdout>,
    who: &str,
) -> CliResult<T> {
    let mut text = String::new();
    let _ = out.read_to_string(&mut text);
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .ok_or_else(|| CliError::failed(format!("the {who} process ended without a report")))?;
    serde_json::from_str(line)
        .map_err(|e| CliError::failed(format!("unreadable report from the {who}: {e}")))
}

fn tell_done(stdin: &mut Option<ChildStdin>, sent: u64) {
    if let Some(s) = stdin.as_mut() {
        let _ = writeln!(s, "done {sent}");
        let _ = s.flush();
    }
}

/// Run `shmq demo`.
pub fn run(chosen: Option<&str>, args: DemoArgs) -> CliResult {
    if args.messages == 0 {
        return Err(CliError::usage("--messages must be at least 1"));
    }
    let private = chosen.is_none();
    let ns = chosen.map_or_else(|| format!("demo{}", std::process::id()), str::to_string);
    let interrupted = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, interrupted.clone())
            .map_err(|e| CliError::failed(format!("cannot handle signals: {e}")))?;
    }
    let mgr = TopicManager::with_namespace(&ns)?;
    let config = TopicConfig {
        partitions: args.partitions,
        slots: args.slots,
        slot_size: args.size as u64,
        retention: Duration::from_secs(60),
        overflow: Overflow::Backpressure,
        dead_group_timeout: Duration::from_secs(10),
        ..TopicConfig::default()
    };
    let topic = mgr.create(TOPIC, config)?;
    let mut cleanup = Cleanup {
        ns: ns.clone(),
        private,
        children: Vec::new(),
        topic: Some(topic),
        mgr: Some(mgr),
    };
    let result = drive(&ns, &args, &mut cleanup, &interrupted);
    let left = cleanup.run();
    let report = result?;
    print_report(&ns, private, &args, &report, &left)?;
    let r = &report.consumer;
    if !left.is_empty() {
        return Err(CliError::failed(format!(
            "regions left in /dev/shm: {}",
            left.join(", ")
        )));
    }
    if r.lost + r.corrupt + r.duplicates + r.out_of_order > 0 {
        return Err(CliError::failed(format!(
            "verification failed: lost {}, corrupt {}, duplicates {}, out of order {}",
            r.lost, r.corrupt, r.duplicates, r.out_of_order
        )));
    }
    Ok(())
}

struct Outcome {
    producer_pid: u32,
    consumer_pid: u32,
    /// `None` if the producer process failed.
    producer: Option<ProducerReport>,
    consumer: ConsumerReport,
}

fn drive(
    ns: &str,
    args: &DemoArgs,
    cleanup: &mut Cleanup,
    interrupted: &AtomicBool,
) -> CliResult<Outcome> {
    let common = |extra: &[(&str, String)]| -> Vec<String> {
        let mut v = vec![
            "--topic".to_string(),
            TOPIC.to_string(),
            "--messages".into(),
            args.messages.to_string(),
            "--probe".into(),
            args.probe.to_string(),
            "--size".into(),
            args.size.to_string(),
        ];
        for (k, val) in extra {
            v.push((*k).to_string());
            v.push(val.clone());
        }
        v
    };
    // Saturating: a huge --messages or --probe means "no time limit", never
    // an overflow panic.
    let budget = Duration::from_secs(60)
        .saturating_add(Duration::from_micros(args.messages.saturating_mul(20)))
        .saturating_add(
            Duration::try_from_secs_f64(2.0 * args.probe as f64 / args.probe_rate as f64)
                .unwrap_or(Duration::MAX),
        );
    let deadline = Instant::now().checked_add(budget);
    let wait_name = args
        .wait
        .to_possible_value()
        .map(|v| v.get_name().to_string())
        .unwrap_or_default();

    // Consumer first; it says "ready" once its group holds the writer back.
    let mut consumer = spawn(ns, "demo-consumer", &common(&[("--wait", wait_name)]))?;
    let consumer_pid = consumer.id();
    let mut consumer_out = BufReader::new(
        consumer
            .stdout
            .take()
            .ok_or_else(|| CliError::failed("consumer process has no stdout".to_string()))?,
    );
    let mut consumer_in = consumer.stdin.take();
    cleanup.children.push(consumer);
    let mut line = String::new();
    consumer_out.read_line(&mut line)?;
    if line.trim() != "ready" {
        return Err(CliError::failed(
            "the consumer process failed to start (see its error above)",
        ));
    }

    let mut producer_args = common(&[("--probe-rate", args.probe_rate.to_string())]);
    if let Some(fault) = args.inject_fault.and_then(|f| f.to_possible_value()) {
        producer_args.extend(["--inject-fault".to_string(), fault.get_name().to_string()]);
    }
    let mut producer = spawn(ns, "demo-producer", &producer_args)?;
    let producer_pid = producer.id();
    let mut producer_out = BufReader::new(
        producer
            .stdout
            .take()
            .ok_or_else(|| CliError::failed("producer process has no stdout".to_string()))?,
    );
    drop(producer.stdin.take());
    cleanup.children.push(producer);

    // Wait for both; the consumer is told when the producer is done.
    let (mut producer_status, mut consumer_status) = (None, None);
    while producer_status.is_none() || consumer_status.is_none() {
        if interrupted.load(Ordering::Relaxed) {
            return Err(CliError::failed("interrupted; removed the demo's regions"));
        }
        if deadline.is_some_and(|d| Instant::now() > d) {
            return Err(CliError::failed(format!(
                "the demo did not finish within {} s; stopped it",
                budget.as_secs()
            )));
        }
        if producer_status.is_none() {
            if let Some(st) = cleanup.children[1].try_wait()? {
                producer_status = Some(st);
                tell_done(&mut consumer_in, args.messages);
            }
        }
        if consumer_status.is_none() {
            consumer_status = cleanup.children[0].try_wait()?;
            if consumer_status.is_some() && producer_status.is_none() {
                // The consumer gave up: nobody will free room for the
                // producer any more.
                let _ = cleanup.children[1].kill();
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    drop(consumer_in);
    let (ps, cs) = (
        producer_status.unwrap_or_default(),
        consumer_status.unwrap_or_default(),
    );
    if !cs.success() {
        return Err(CliError::failed(format!(
            "the consumer process failed ({cs}); see its error above"
        )));
    }
    let consumer_report: ConsumerReport = read_report(&mut consumer_out, "consumer")?;
    let producer_report = if ps.success() {
        Some(read_report(&mut producer_out, "producer")?)
    } else {
        eprintln!("shmq: the producer process failed ({ps})");
        None
    };
    Ok(Outcome {
        producer_pid,
        consumer_pid,
        producer: producer_report,
        consumer: consumer_report,
    })
}

fn print_latency(out: &mut impl Write, what: &str, l: &Latency) -> std::io::Result<()> {
    writeln!(out, "  {what}:")?;
    if l.samples == 0 {
        return writeln!(out, "    no samples");
    }
    writeln!(
        out,
        "    p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  ({} samples)",
        fmt_ns(l.p50),
        fmt_ns(l.p90),
        fmt_ns(l.p99),
        fmt_ns(l.p999),
        fmt_ns(l.max),
        thousands(l.samples)
    )
}

fn print_report(
    ns: &str,
    private: bool,
    args: &DemoArgs,
    o: &Outcome,
    left: &[String],
) -> CliResult {
    let c = &o.consumer;
    let p = o.producer.as_ref();
    let mut out = std::io::stdout().lock();
    let rate = |n: u64, ns: u64| n as f64 / (ns.max(1) as f64 / 1e9);
    writeln!(
        out,
        "shmq demo: a producer process sends {} messages of {} bytes flat out, then {} at {} msgs/s, to a consumer process",
        thousands(args.messages),
        args.size,
        thousands(args.probe),
        thousands(args.probe_rate),
    )?;
    writeln!(
        out,
        "  topic {TOPIC:?} in {}namespace {ns:?}: {} x {}, backpressure (the writer may not overwrite unread messages)",
        if private { "private " } else { "" },
        plural(u64::from(args.partitions), "partition"),
        plural(args.slots, "slot")
    )?;
    match p {
        Some(p) => writeln!(
            out,
            "  producer pid {}: sent {} ({} flat out in {:.3} s), consumer pid {}: received {}",
            o.producer_pid,
            thousands(p.sent),
            thousands(args.messages.min(p.sent)),
            p.last_send_ns.saturating_sub(p.first_send_ns) as f64 / 1e9,
            o.consumer_pid,
            thousands(c.received),
        )?,
        None => writeln!(
            out,
            "  producer pid {}: FAILED, consumer pid {}: received {}",
            o.producer_pid,
            o.consumer_pid,
            thousands(c.received),
        )?,
    }
    writeln!(
        out,
        "  verified: every sequence number once, consecutive offsets and rising sequence numbers per partition, xxh3 checksum of every message"
    )?;
    let span = c.last_recv_ns.saturating_sub(c.first_send_ns);
    let per_s = rate(c.bulk_valid, span);
    writeln!(
        out,
        "  throughput: {:.2} M msgs/s, {:.0} MB/s of payload ({} messages, first send to last receive {:.3} s)",
        per_s / 1e6,
        per_s * args.size as f64 / 1e6,
        thousands(c.bulk_valid),
        span as f64 / 1e9
    )?;
    writeln!(
        out,
        "  latency, one way (send -> receive, CLOCK_MONOTONIC in both processes):"
    )?;
    print_latency(
        &mut out,
        "  flat out (includes time queued whenever the consumer falls behind)",
        &c.bulk,
    )?;
    if args.probe > 0 {
        print_latency(
            &mut out,
            &format!(
                "  at a steady {} msgs/s (queue empty at the start)",
                thousands(args.probe_rate)
            ),
            &c.probe,
        )?;
    }
    writeln!(
        out,
        "  lost {}, corrupt {} (duplicates {}, out of order {}, lapped {})",
        thousands(c.lost),
        thousands(c.corrupt),
        thousands(c.duplicates),
        thousands(c.out_of_order),
        thousands(c.lapped)
    )?;
    if left.is_empty() {
        writeln!(
            out,
            "  cleaned up: nothing of {} left in /dev/shm",
            if private {
                format!("namespace {ns:?}")
            } else {
                format!("topic {TOPIC:?} of namespace {ns:?}")
            }
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_tears_are_caught() {
        for size in [MIN_SIZE, 25, 100, 1000] {
            let mut buf = vec![0u8; size];
            encode(&mut buf, 7, 123);
            assert_eq!(decode(&buf, size), Some((7, 123)));
            let mut other = vec![0u8; size];
            encode(&mut other, 8, 123);
            // Any byte from another message breaks the checksum.
            for i in 0..size {
                let mut torn = buf.clone();
                torn[i] = other[i];
                if torn != buf {
                    assert_eq!(decode(&torn, size), None, "size {size} byte {i}");
                }
            }
            assert_eq!(decode(&buf[..size - 1], size), None);
        }
    }

    #[test]
    fn verifier_counts_loss_duplicates_and_order() {
        let size = 32;
        let mut v = Verifier::new(3, 1, size, 2);
        let msg = |seq| {
            let mut b = vec![0u8; size];
            encode(&mut b, seq, 100);
            b
        };
        v.check(0, 0, &msg(0), 150);
        v.check(1, 0, &msg(1), 160);
        v.check(1, 1, &msg(1), 170); // duplicate seq, and out of order within p1
        v.check(0, 5, &msg(2), 180); // offset gap on p0
        v.check(0, 6, b"garbage", 190);
        v.check(1, 2, &msg(3), 400); // the probe phase
        v.check(1, 3, &msg(9), 400); // beyond the messages sent: corrupt
        let r = v.finish(0, 0);
        assert_eq!(r.received, 7);
        assert_eq!(r.valid, 4);
        assert_eq!(r.bulk_valid, 3);
        assert_eq!(r.lost, 0);
        assert_eq!(r.corrupt, 2);
        assert_eq!(r.duplicates, 1);
        assert_eq!(r.out_of_order, 2);
        assert_eq!((r.first_send_ns, r.last_recv_ns), (100, 180));
        assert_eq!(r.bulk.max, 80);
        assert_eq!(r.bulk.p50, 60);
        assert_eq!(r.bulk.samples, 3);
        assert_eq!((r.probe.samples, r.probe.p50), (1, 300));
        let mut lossy = Verifier::new(3, 0, size, 1);
        lossy.check(0, 0, &msg(0), 100);
        assert_eq!(lossy.finish(0, 2).lost, 2);
    }
}
