//! `shmq soak`: producers and consumer-group members in separate processes,
//! killed with `SIGKILL` at random points and restarted, for a set duration;
//! every delivered record is verified and every offset accounted for.
//!
//! The parent creates, in a fresh namespace (`<namespace>-soak<pid>`), one topic per
//! overflow policy (`bp`: backpressure, `ow`: overwrite), each with one
//! partition per producer. It re-runs this binary in hidden roles:
//!
//! * `--role producer --topic T --partition P --instance I`: the only writer
//!   of partition `P`. It continues the partition's sequence: it reads the
//!   newest record in the partition (left there by the instance it replaces)
//!   and goes on from its sequence number + 1. Each record is laid out as
//!
//!   ```text
//!   0          4           8               16          ...    size-8      size
//!   +----------+-----------+---------------+--------------------+-----------+
//!   | partition| producer  | seq (LE u64)  | filler from seq    | xxh3_64   |
//!   | (LE u32) | instance  |               |                    | of 0..-8  |
//!   +----------+-----------+---------------+--------------------+-----------+
//!   ```
//!
//!   so a record is intact when its checksum holds, and in its place when it
//!   names its own partition and `seq == offset` (the sequence starts at 0
//!   and a restarted producer continues it, so any record lost or repeated by
//!   a writer takeover shows up as a mismatch).
//! * `--role member --topic T --group G --instance I`: one member process of
//!   group `G` ([`shmq::GroupConsumer`]). It verifies every record and
//!   reports, on stdout, runs of consecutive offsets it delivered, each
//!   `Lagged` loss, and every record that failed a check. It writes its
//!   report *before* each commit, so whatever its group committed has been
//!   reported, even if it is killed the next instant (the pipe keeps what was
//!   written).
//!
//! At the end the producers are stopped, the groups drain to the final write
//! offsets, the members are stopped, and per group and partition the parent
//! checks, over the offsets `0..write_offset`:
//!
//! * **corrupt**: delivered with a bad checksum, or out of place: must be 0;
//! * **lost**: offsets never delivered. Backpressure: must be 0. Overwrite:
//!   must equal the offsets the members were told they lost (`Lagged`);
//! * **duplicated**: offsets delivered more than once. A *redelivery* (the
//!   partition changed owner, e.g. after a member was killed, and the new
//!   owner resumed from the last commit) is expected at-least-once behaviour
//!   and reported apart; a *wrong duplicate* (the same member delivering an
//!   offset twice while it kept the partition) or a *conflict* (two different
//!   records at one offset) fails the run.
//!
//! `--scribble` adds a thread writing garbage into the shared fields
//! (slot sequence and length words, cursor, writer lease, committed offsets,
//! group owners, member entries). Records may then be lost or garbled, so
//! the verdict asks only that no process crash or panic and that the topics
//! keep making progress.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use serde::Serialize;
use shmq::protocol::name::RegionName;
use shmq::{
    Error, GroupConsumer, GroupOptions, MemOffsetStore, Overflow, Partitions, Producer, SeekPolicy,
    Topic, TopicConfig, TopicManager,
};
use xxhash_rust::xxh3::xxh3_64;

use crate::cli::Format;
use crate::error::{CliError, CliResult};
use crate::util::{fmt_duration_approx, parse_duration, thousands};

/// Smallest record: partition, instance, sequence number and checksum.
pub const MIN_SIZE: usize = 24;
/// Commit (and report) after this many records at most.
const COMMIT_EVERY: u64 = 512;
/// ... or after this long with something read.
const COMMIT_AFTER: Duration = Duration::from_millis(20);

/// Which overflow policies the soak exercises.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OverflowArg {
    /// One backpressure topic and one overwrite topic, side by side.
    Both,
    /// Backpressure only: nothing may be lost.
    Backpressure,
    /// Overwrite only: loss must equal the lag reported to the readers.
    Overwrite,
}

/// The hidden child roles.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// A producer process.
    Producer,
    /// A consumer-group member process.
    Member,
}

fn parse_size(s: &str) -> Result<usize, String> {
    crate::util::parse_size_in(
        s,
        MIN_SIZE,
        65536,
        "a record carries its partition, producer instance, sequence number and checksum",
    )
}

/// Arguments of `shmq soak`.
#[derive(Debug, Args)]
#[command(after_help = "\
Runs in a fresh namespace <namespace>-soak<pid> (default-soak<pid> unless
--namespace or SHMQ_NAMESPACE says otherwise) and removes everything in it.
Exits 1 if any record was delivered corrupt, lost without being reported as
lag, duplicated other than by an at-least-once redelivery, if a process
crashed, or if a topic stopped making progress.

Examples:
  shmq soak --duration 60s
  shmq soak --duration 1h --producers 4 --groups 3 --members 3
  shmq soak --duration 5m --scribble --format json")]
pub struct SoakArgs {
    /// How long to run (then drain and verify).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Producer processes per topic (= partitions of each topic).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub producers: u32,
    /// Consumer groups per topic.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=8))]
    pub groups: u32,
    /// Member processes per group.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=16))]
    pub members: u32,
    /// Topics to run.
    #[arg(long, value_enum, default_value_t = OverflowArg::Both)]
    pub overflow: OverflowArg,
    /// Slots per partition (a power of two).
    #[arg(long, default_value_t = 1024)]
    pub slots: u64,
    /// Bytes per record (at least 24).
    #[arg(long, default_value = "64", value_parser = parse_size)]
    pub size: usize,
    /// Mean time between two kills (`SIGKILL` of a random producer or
    /// member, restarted at once); 0 = no kills.
    #[arg(long, default_value = "250ms", value_parser = parse_duration)]
    pub kill_every: Duration,
    /// Records per second per producer (0 = as fast as possible).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Also write garbage into shared fields while running.
    #[arg(long)]
    pub scribble: bool,
    /// Time between two scribbles.
    #[arg(long, default_value = "20ms", value_parser = parse_duration)]
    pub scribble_every: Duration,
    /// Fail if the topics make no progress for this long.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub stall_timeout: Duration,
    /// Seed of the random kill and scribble schedule (default: from the clock).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Output format of the verdict.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,

    /// Internal: run as a child process of a soak.
    #[arg(long, value_enum, hide = true)]
    pub role: Option<Role>,
    /// Internal: the child's topic.
    #[arg(long, hide = true, default_value = "")]
    pub topic: String,
    /// Internal: the producer child's partition.
    #[arg(long, hide = true, default_value_t = 0)]
    pub partition: u32,
    /// Internal: the member child's group.
    #[arg(long, hide = true, default_value = "")]
    pub group: String,
    /// Internal: the child's instance number.
    #[arg(long, hide = true, default_value_t = 0)]
    pub instance: u32,
    /// Testing: make the first producer instance of every partition damage
    /// its 1000th record on purpose (the verdict must fail).
    #[arg(long, value_enum, hide = true)]
    pub inject_fault: Option<Fault>,
}

/// A fault a producer injects on purpose (tests prove the soak catches it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Fault {
    /// Skip a sequence number (the record lands out of place).
    Skip,
    /// Flip a byte after the checksum was computed.
    Corrupt,
}

/// Sequence number a faulty producer damages.
const FAULT_AT: u64 = 1000;

// ---------------------------------------------------------------- records

/// Fill `buf` with record `seq` of `partition` written by producer `instance`.
fn encode(buf: &mut [u8], partition: u32, instance: u32, seq: u64) {
    let n = buf.len();
    buf[0..4].copy_from_slice(&partition.to_le_bytes());
    buf[4..8].copy_from_slice(&instance.to_le_bytes());
    buf[8..16].copy_from_slice(&seq.to_le_bytes());
    let mut x = seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ u64::from(instance) | 1;
    for chunk in buf[16..n - 8].chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    let sum = xxh3_64(&buf[..n - 8]);
    buf[n - 8..].copy_from_slice(&sum.to_le_bytes());
}

/// `(partition, instance, seq)` of a record whose checksum holds.
fn decode(value: &[u8]) -> Option<(u32, u32, u64)> {
    let n = value.len();
    if n < MIN_SIZE {
        return None;
    }
    let sum = u64::from_le_bytes(value[n - 8..].try_into().ok()?);
    if xxh3_64(&value[..n - 8]) != sum {
        return None;
    }
    Some((
        u32::from_le_bytes(value[0..4].try_into().ok()?),
        u32::from_le_bytes(value[4..8].try_into().ok()?),
        u64::from_le_bytes(value[8..16].try_into().ok()?),
    ))
}

// ------------------------------------------------------------------ child

/// Set once the parent writes `stop` to our stdin (or closes it).
fn stop_flag() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    std::thread::spawn(move || {
        let mut line = String::new();
        // Any line, or EOF (the parent is gone), means stop.
        let _ = std::io::stdin().lock().read_line(&mut line);
        s.store(true, Ordering::Release);
    });
    stop
}

/// Run a hidden child role.
fn run_child(ns: &str, role: Role, args: &SoakArgs) -> CliResult {
    let mgr = TopicManager::with_namespace(ns)?;
    let topic = mgr.open(&args.topic)?;
    let stop = stop_flag();
    match role {
        Role::Producer => run_producer(&topic, args, &stop),
        Role::Member => run_member(&topic, args, &stop),
    }
}

/// The sequence number the records of `partition` go on with: one past the
/// newest record's, 0 on an empty partition.
fn next_seq(topic: &Topic, partition: u32) -> CliResult<u64> {
    let w = topic.write_offset(partition)?;
    if w == 0 {
        return Ok(0);
    }
    let mut c = shmq::Consumer::with_store(topic, "soak-resume", Box::new(MemOffsetStore::new()))?;
    c.assign(&[partition])?;
    c.seek_partition(partition, SeekPolicy::Offset(w - 1))?;
    let got = c.poll(1)?;
    match got.records.first().and_then(|r| decode(&r.value)) {
        Some((_, _, seq)) => Ok(seq.saturating_add(1)),
        // Garbled by a scribbler: the offset is the best guess.
        None => Ok(w),
    }
}

fn run_producer(topic: &Topic, args: &SoakArgs, stop: &AtomicBool) -> CliResult {
    let p = args.partition;
    // The replaced instance is dead (the parent reaped it), but a concurrent
    // liveness probe can make its token look held for a moment: retry.
    let start = Instant::now();
    let mut producer = loop {
        match Producer::with_partitions(topic, Partitions::Only(vec![p])) {
            Ok(prod) => break prod,
            Err(Error::PartitionHeld { .. }) if start.elapsed() < Duration::from_secs(10) => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(e.into()),
        }
    }
    .with_send_timeout(Some(Duration::from_millis(200)));
    let mut seq = next_seq(topic, p)?;
    let mut buf = vec![0u8; topic.config().slot_size as usize];
    let begin = Instant::now();
    let mut sent = 0u64;
    while !stop.load(Ordering::Acquire) {
        encode(&mut buf, p, args.instance, seq);
        match args.inject_fault {
            Some(Fault::Skip) if seq == FAULT_AT => encode(&mut buf, p, args.instance, seq + 1),
            Some(Fault::Corrupt) if seq == FAULT_AT => buf[20] ^= 0x40,
            _ => {}
        }
        match producer.send_to(p, None, &buf) {
            Ok(_) => {}
            // Backpressure: every group is behind; look at the stop flag and
            // try again.
            Err(Error::Timeout) | Err(Error::Full { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
        // Wrapping: a scribbled cursor can make the resumed sequence anything.
        seq = seq.wrapping_add(1);
        sent += 1;
        if args.rate > 0 {
            let due = Duration::from_secs_f64(sent as f64 / args.rate as f64);
            let now = begin.elapsed();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
    }
    drop(producer);
    let mut out = std::io::stdout().lock();
    writeln!(out, "E {seq}")?;
    out.flush()?;
    Ok(())
}

/// A run of consecutive offsets of one partition, delivered by one member
/// during one ownership span, all written by one producer instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Run {
    start: u64,
    end: u64,
    span: u32,
    writer: u32,
}

struct MemberState {
    /// Open run per partition.
    open: HashMap<u32, Run>,
    /// Ownership span per partition: grows each time the partition is
    /// (re)assigned to this member.
    span: HashMap<u32, u32>,
    assigned: Vec<u32>,
    rejoins: u64,
    lines: Vec<u8>,
}

impl MemberState {
    fn close(&mut self, p: u32) {
        if let Some(r) = self.open.remove(&p) {
            if r.end > r.start {
                let _ = writeln!(
                    self.lines,
                    "R {p} {} {} {} {}",
                    r.start, r.end, r.span, r.writer
                );
            }
        }
    }
    fn close_all(&mut self) {
        let ps: Vec<u32> = self.open.keys().copied().collect();
        for p in ps {
            self.close(p);
        }
    }
    /// Note a new assignment: partitions that arrived (or every partition,
    /// after a re-join) start a new span.
    fn reassigned(&mut self, now: Vec<u32>, rejoins: u64) {
        let all = rejoins != self.rejoins;
        for &p in &now {
            if all || !self.assigned.contains(&p) {
                self.close(p);
                *self.span.entry(p).or_insert(0) += 1;
            }
        }
        for p in std::mem::take(&mut self.assigned) {
            if !now.contains(&p) {
                self.close(p);
            }
        }
        self.assigned = now;
        self.rejoins = rejoins;
    }
    fn deliver(&mut self, p: u32, offset: u64, value: &[u8]) {
        let Some((part, writer, seq)) = decode(value) else {
            self.close(p);
            let _ = writeln!(self.lines, "X {p} {offset}");
            return;
        };
        if part != p || seq != offset {
            self.close(p);
            let _ = writeln!(self.lines, "M {p} {offset} {part} {seq}");
            return;
        }
        let span = self.span.get(&p).copied().unwrap_or(0);
        if let Some(r) = self.open.get_mut(&p) {
            if r.end == offset && r.span == span && r.writer == writer {
                r.end += 1;
                return;
            }
        }
        self.close(p);
        self.open.insert(
            p,
            Run {
                start: offset,
                end: offset + 1,
                span,
                writer,
            },
        );
    }
}

fn run_member(topic: &Topic, args: &SoakArgs, stop: &AtomicBool) -> CliResult {
    let opts = GroupOptions::default().stale_after(Duration::from_secs(2));
    let mut gc = GroupConsumer::join(topic, &args.group, opts)?;
    let mut st = MemberState {
        open: HashMap::new(),
        span: HashMap::new(),
        assigned: Vec::new(),
        rejoins: 0,
        lines: Vec::with_capacity(1 << 16),
    };
    let mut out = std::io::stdout().lock();
    let mut pending = 0u64;
    let mut last_commit = Instant::now();
    let mut flush_commit = |st: &mut MemberState, gc: &mut GroupConsumer| -> CliResult {
        st.close_all();
        // Report first, then commit: whatever the group committed is known
        // to the parent even if we die right after.
        out.write_all(&st.lines)?;
        out.flush()?;
        st.lines.clear();
        gc.commit()?;
        Ok(())
    };
    st.reassigned(gc.assignment(), gc.group().rejoins());
    while !stop.load(Ordering::Acquire) {
        let polled = gc.poll(256)?;
        st.reassigned(gc.assignment(), gc.group().rejoins());
        for l in &polled.lagged {
            st.close(l.partition);
            let _ = writeln!(
                st.lines,
                "L {} {} {}",
                l.partition,
                l.resumed_at.saturating_sub(l.missed),
                l.resumed_at
            );
        }
        if polled.corrupt > 0 {
            let _ = writeln!(st.lines, "K {}", polled.corrupt);
        }
        let n = polled.records.len() as u64;
        for r in &polled.records {
            st.deliver(r.partition, r.offset, &r.value);
        }
        pending += n;
        if pending >= COMMIT_EVERY || (pending > 0 && last_commit.elapsed() >= COMMIT_AFTER) {
            flush_commit(&mut st, &mut gc)?;
            pending = 0;
            last_commit = Instant::now();
        }
        if n == 0 {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    flush_commit(&mut st, &mut gc)?;
    gc.leave();
    Ok(())
}

// --------------------------------------------------------------- analysis

/// Per group and partition: what the members reported.
///
/// Offsets below `cut` are already added up in `done` (see
/// [`Reports::compact`]), so a long run keeps only the recent runs in memory.
#[derive(Debug, Default, Clone)]
struct Reports {
    /// `(run, member instance)`.
    runs: Vec<(Run, u32)>,
    /// Offsets reported lost to lapping, `[start, end)`.
    lagged: Vec<(u64, u64)>,
    /// Offsets below this are summed up in `done`.
    cut: u64,
    done: Tally,
}

/// What one group and partition add up to.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
struct Tally {
    delivered: u64,
    lost: u64,
    lagged: u64,
    lost_unreported: u64,
    redelivered: u64,
    wrong_duplicates: u64,
    conflicts: u64,
    beyond_end: u64,
    /// Deliveries reported after their offsets were added up (below a
    /// commit the group made seconds earlier): counted, not classified.
    late: u64,
}

impl Tally {
    /// Saturating: under `--scribble` offsets can be anything.
    fn add(&mut self, o: &Tally) {
        self.delivered = self.delivered.saturating_add(o.delivered);
        self.lost = self.lost.saturating_add(o.lost);
        self.lagged = self.lagged.saturating_add(o.lagged);
        self.lost_unreported = self.lost_unreported.saturating_add(o.lost_unreported);
        self.redelivered = self.redelivered.saturating_add(o.redelivered);
        self.wrong_duplicates = self.wrong_duplicates.saturating_add(o.wrong_duplicates);
        self.conflicts = self.conflicts.saturating_add(o.conflicts);
        self.beyond_end = self.beyond_end.saturating_add(o.beyond_end);
        self.late = self.late.saturating_add(o.late);
    }
}

/// Merge `[start, end)` intervals (sorted or not) into disjoint ones.
fn merge(mut v: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    v.retain(|&(s, e)| e > s);
    v.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(v.len());
    for (s, e) in v {
        match out.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

/// Length of a set of disjoint intervals clipped to `[lo, hi)`.
fn measure(v: &[(u64, u64)], lo: u64, hi: u64) -> u64 {
    v.iter()
        .map(|&(s, e)| e.min(hi).saturating_sub(s.max(lo)))
        .sum()
}

/// Account for the offsets `lo..hi` of one group and partition, from runs
/// and lag reports that all lie at or above `lo`.
fn tally(runs: &[(Run, u32)], lagged: &[(u64, u64)], lo: u64, hi: u64) -> Tally {
    let mut t = Tally::default();
    let mut runs = runs.to_vec();
    runs.sort_unstable_by_key(|(r, m)| (r.start, r.end, *m, r.span));
    // Overlaps between runs: a redelivery unless the same member delivered
    // the offset twice in one ownership span; a conflict if two producer
    // instances wrote the same offset.
    let mut active: Vec<(Run, u32)> = Vec::new();
    let mut total_len = 0u64;
    for &(r, m) in &runs {
        total_len += r.end - r.start;
        active.retain(|(a, _)| a.end > r.start);
        for (a, am) in &active {
            let overlap = a.end.min(r.end) - r.start;
            if *am == m && a.span == r.span {
                t.wrong_duplicates += overlap;
            }
            if a.writer != r.writer {
                t.conflicts += overlap;
            }
        }
        active.push((r, m));
    }
    let delivered = merge(runs.iter().map(|(r, _)| (r.start, r.end)).collect());
    let union = measure(&delivered, 0, u64::MAX);
    t.delivered = measure(&delivered, lo, hi);
    t.beyond_end = union - t.delivered;
    t.redelivered = (total_len - union).saturating_sub(t.wrong_duplicates);
    t.lost = (hi - lo) - t.delivered;
    let lagged = merge(lagged.to_vec());
    t.lagged = measure(&lagged, lo, hi);
    let mut both = delivered;
    both.extend(lagged);
    t.lost_unreported = (hi - lo) - measure(&merge(both), lo, hi);
    t
}

impl Reports {
    /// Clip what was reported below `self.cut` (counted as late).
    fn clip_late(&mut self) {
        let lo = self.cut;
        let mut late = 0;
        self.runs.retain_mut(|(r, _)| {
            if r.start < lo {
                late += r.end.min(lo) - r.start;
                r.start = lo;
            }
            r.end > r.start
        });
        self.lagged.retain_mut(|l| {
            l.0 = l.0.max(lo);
            l.1 > l.0
        });
        self.done.late += late;
    }

    /// Add up the offsets below `cut` and forget their runs. `cut` must be
    /// an offset the group committed long enough ago (seconds) that every
    /// delivery below it has been reported: members report before they
    /// commit, and within milliseconds of reading.
    fn compact(&mut self, cut: u64) {
        if cut <= self.cut {
            return;
        }
        self.clip_late();
        let (mut below, mut keep) = (Vec::new(), Vec::new());
        for &(r, m) in &self.runs {
            if r.end <= cut {
                below.push((r, m));
            } else if r.start < cut {
                below.push((Run { end: cut, ..r }, m));
                keep.push((Run { start: cut, ..r }, m));
            } else {
                keep.push((r, m));
            }
        }
        let (mut lag_below, mut lag_keep) = (Vec::new(), Vec::new());
        for &(s, e) in &self.lagged {
            if s < cut {
                lag_below.push((s, e.min(cut)));
            }
            if e > cut {
                lag_keep.push((s.max(cut), e));
            }
        }
        let t = tally(&below, &lag_below, self.cut, cut);
        self.done.add(&t);
        self.runs = keep;
        self.lagged = lag_keep;
        self.cut = cut;
    }

    /// The whole account over `0..total`.
    fn finish(&self, total: u64) -> Tally {
        let mut rest = self.clone();
        rest.clip_late();
        let mut t = rest.done;
        let hi = total.max(rest.cut);
        t.add(&tally(&rest.runs, &rest.lagged, rest.cut, hi));
        t
    }
}

// ----------------------------------------------------------------- parent

/// One group's figures in the verdict.
#[derive(Debug, Serialize)]
struct GroupReport {
    topic: String,
    overflow: &'static str,
    group: String,
    messages: u64,
    #[serde(flatten)]
    tally: Tally,
    corrupt: u64,
    misplaced: u64,
    skipped_corrupt: u64,
}

/// The verdict (`--format json` prints it as one document).
#[derive(Debug, Serialize)]
struct SoakReport {
    pass: bool,
    failures: Vec<String>,
    seed: u64,
    duration_s: f64,
    namespace: String,
    producers: u32,
    groups: u32,
    members: u32,
    scribble: bool,
    messages: u64,
    delivered: u64,
    msgs_per_s: f64,
    kills: Kills,
    lost_backpressure: u64,
    lost_overwrite: u64,
    lagged: u64,
    lost_unreported: u64,
    redelivered: u64,
    late: u64,
    wrong_duplicates: u64,
    conflicts: u64,
    corrupt: u64,
    misplaced: u64,
    skipped_corrupt: u64,
    scribbles: u64,
    child_errors: u64,
    peak_rss_kib: PeakRss,
    per_group: Vec<GroupReport>,
}

#[derive(Debug, Default, Serialize, Clone, Copy)]
struct Kills {
    producers: u64,
    members: u64,
}

#[derive(Debug, Default, Serialize, Clone, Copy)]
struct PeakRss {
    soak: u64,
    producer: u64,
    member: u64,
}

/// What the reader threads collect from the members.
#[derive(Default)]
struct Collected {
    /// `(topic index, group index, partition)` -> reports.
    reports: HashMap<(usize, u32, u32), Reports>,
    /// `(topic index, group index)` -> (corrupt, misplaced, skipped).
    bad: HashMap<(usize, u32), (u64, u64, u64)>,
    /// `(topic index, partition)` -> sequence a stopped producer would go on with.
    producer_end: HashMap<(usize, u32), u64>,
    unparsed: u64,
}

#[derive(Clone, Debug)]
enum Who {
    Producer { t: usize, partition: u32 },
    Member { t: usize, group: u32 },
}

struct Proc {
    who: Who,
    instance: u32,
    child: Child,
    stdin: Option<ChildStdin>,
    reader: Option<std::thread::JoinHandle<()>>,
    /// Reads the child's stderr; returns its last words (a panic message,
    /// or the last line).
    errors: Option<std::thread::JoinHandle<String>>,
}

impl Proc {
    /// What the child said last on stderr (waits for it to close).
    fn last_words(&mut self) -> String {
        self.errors
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default()
    }
}

/// Forward a child's stderr (unless `quiet`) and keep its last words: the
/// panic message if it panicked, else its last line.
fn read_stderr(err: std::process::ChildStderr, quiet: bool) -> String {
    let mut last = String::new();
    let mut panic = String::new();
    let mut in_panic = 0;
    for line in BufReader::new(err).lines() {
        let Ok(line) = line else { break };
        if !quiet {
            eprintln!("{line}");
        }
        if line.contains("panicked at") {
            panic = line.clone();
            in_panic = 1;
        } else if in_panic == 1 {
            panic.push(' ');
            panic.push_str(&line);
            in_panic = 2;
        }
        last = line;
    }
    if panic.is_empty() {
        last
    } else {
        panic
    }
}

/// Tiny xorshift generator: the schedule only has to be varied and
/// reproducible from `--seed`.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

struct TopicSpec {
    name: &'static str,
    overflow: Overflow,
    topic: Topic,
}

struct Soak {
    ns: String,
    exe: std::path::PathBuf,
    args_size: usize,
    rate: u64,
    fault: Option<Fault>,
    /// Partitions whose first producer was started (with the fault, if any).
    faulted: Vec<(usize, u32)>,
    topics: Vec<TopicSpec>,
    procs: Vec<Proc>,
    next_instance: u32,
    collected: Arc<Mutex<Collected>>,
    kills: Kills,
    child_errors: u64,
    failures: Vec<String>,
    rss: PeakRss,
    scribble: bool,
    mgr: Option<TopicManager>,
}

fn group_name(g: u32) -> String {
    format!("g{g}")
}

/// Peak resident set of a process, KiB (0 if unknown).
fn peak_rss_kib(pid: u32) -> u64 {
    let path = format!("/proc/{pid}/status");
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn parse_line(line: &str, t: usize, group: u32, member: u32, c: &mut Collected) {
    let mut it = line.split_ascii_whitespace();
    let kind = it.next().unwrap_or("");
    let nums: Vec<u64> = it.filter_map(|x| x.parse().ok()).collect();
    let bad = c.bad.entry((t, group)).or_default();
    match (kind, nums.as_slice()) {
        ("R", &[p, s, e, span, writer]) => {
            let run = Run {
                start: s,
                end: e,
                span: span as u32,
                writer: writer as u32,
            };
            c.reports
                .entry((t, group, p as u32))
                .or_default()
                .runs
                .push((run, member));
        }
        ("L", &[p, s, e]) => c
            .reports
            .entry((t, group, p as u32))
            .or_default()
            .lagged
            .push((s, e)),
        ("X", &[_, _]) => bad.0 += 1,
        ("M", &[_, _, _, _]) => bad.1 += 1,
        ("K", &[n]) => bad.2 += n,
        _ => c.unparsed += 1,
    }
}

impl Soak {
    fn spawn(&mut self, who: Who) -> CliResult {
        let instance = self.next_instance;
        self.next_instance += 1;
        let mut cmd = Command::new(&self.exe);
        cmd.arg("--namespace").arg(&self.ns).arg("soak");
        match &who {
            Who::Producer { t, partition } => {
                cmd.args(["--role", "producer", "--topic", self.topics[*t].name])
                    .arg("--partition")
                    .arg(partition.to_string())
                    .arg("--size")
                    .arg(self.args_size.to_string())
                    .arg("--rate")
                    .arg(self.rate.to_string());
                // Only the first instance of each partition misbehaves.
                let first = !self.faulted.contains(&(*t, *partition));
                if first {
                    self.faulted.push((*t, *partition));
                }
                if let Some(f) = self.fault.filter(|_| first) {
                    if let Some(v) = f.to_possible_value() {
                        cmd.arg("--inject-fault").arg(v.get_name());
                    }
                }
            }
            Who::Member { t, group } => {
                cmd.args(["--role", "member", "--topic", self.topics[*t].name])
                    .arg("--group")
                    .arg(group_name(*group));
            }
        }
        cmd.arg("--instance").arg(instance.to_string());
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| CliError::failed(format!("cannot start a soak process: {e}")))?;
        // Under the scribbler children fail with typed errors all the time
        // (fenced, lease expired...): keep their last words, print nothing.
        let quiet = self.scribble;
        let errors = child
            .stderr
            .take()
            .map(|err| std::thread::spawn(move || read_stderr(err, quiet)));
        let stdout = child.stdout.take();
        let collected = self.collected.clone();
        let w = who.clone();
        let reader = std::thread::spawn(move || {
            let Some(out) = stdout else { return };
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let mut c = collected.lock().unwrap_or_else(|e| e.into_inner());
                match &w {
                    Who::Member { t, group } => parse_line(&line, *t, *group, instance, &mut c),
                    Who::Producer { t, partition } => {
                        if let Some(seq) = line.strip_prefix("E ").and_then(|s| s.parse().ok()) {
                            c.producer_end.insert((*t, *partition), seq);
                        }
                    }
                }
            }
        });
        let stdin = child.stdin.take();
        self.procs.push(Proc {
            who,
            instance,
            child,
            stdin,
            reader: Some(reader),
            errors,
        });
        Ok(())
    }

    fn note_rss(&mut self, i: usize) {
        let kib = peak_rss_kib(self.procs[i].child.id());
        match self.procs[i].who {
            Who::Producer { .. } => self.rss.producer = self.rss.producer.max(kib),
            Who::Member { .. } => self.rss.member = self.rss.member.max(kib),
        }
    }

    /// Reap process `i` (already dead) and start its replacement.
    fn replace(&mut self, i: usize) -> CliResult {
        let mut p = self.procs.swap_remove(i);
        let _ = p.child.wait();
        drop(p.stdin.take());
        if let Some(r) = p.reader.take() {
            let _ = r.join();
        }
        self.spawn(p.who)
    }

    fn kill_random(&mut self, rng: &mut Rng) -> CliResult {
        if self.procs.is_empty() {
            return Ok(());
        }
        let i = rng.below(self.procs.len() as u64) as usize;
        self.note_rss(i);
        let _ = self.procs[i].child.kill();
        match self.procs[i].who {
            Who::Producer { .. } => self.kills.producers += 1,
            Who::Member { .. } => self.kills.members += 1,
        }
        self.replace(i)
    }

    /// Children that ended on their own: a crash (signal, panic) fails the
    /// run; an error exit fails it too unless shared memory is being
    /// scribbled on (then typed errors are expected). Either way the child
    /// is restarted.
    fn check_children(&mut self) -> CliResult {
        let mut i = 0;
        while i < self.procs.len() {
            match self.procs[i].child.try_wait()? {
                Some(st) => {
                    self.child_errors += 1;
                    let what = describe(&mut self.procs[i], st);
                    if !self.scribble || crashed(st) {
                        self.failures.push(what);
                    }
                    self.replace(i)?;
                }
                None => i += 1,
            }
        }
        Ok(())
    }

    /// Add up, and forget, the runs below the offsets each group had
    /// committed at the previous call (seconds ago), so memory stays flat
    /// however long the soak runs. Takes this call's commits for the next.
    fn compact(&mut self, prev: &mut HashMap<(usize, u32, u32), u64>) {
        let mut now = HashMap::new();
        for (t, spec) in self.topics.iter().enumerate() {
            let Ok(st) = spec.topic.stats() else { continue };
            for g in &st.groups {
                let Some(gi) = g.name.strip_prefix('g').and_then(|n| n.parse().ok()) else {
                    continue;
                };
                for p in &g.partitions {
                    now.insert((t, gi, p.partition), p.committed.unwrap_or(0));
                }
            }
        }
        let mut c = self.collected.lock().unwrap_or_else(|e| e.into_inner());
        for (key, &cut) in prev.iter() {
            if let Some(r) = c.reports.get_mut(key) {
                r.compact(cut);
            }
        }
        *prev = now;
    }

    /// Sum of write offsets and committed offsets: grows while anything moves.
    fn progress(&self) -> u64 {
        let mut sum = 0u64;
        for t in &self.topics {
            if let Ok(st) = t.topic.stats() {
                for p in &st.partitions {
                    sum = sum.wrapping_add(p.write_offset);
                }
                for g in &st.groups {
                    for p in &g.partitions {
                        sum = sum.wrapping_add(p.committed.unwrap_or(0));
                    }
                }
            }
        }
        sum
    }

    /// Stop the children matching `pick` and wait for them (killing those
    /// that do not stop within `limit`).
    fn stop(&mut self, pick: impl Fn(&Who) -> bool, limit: Duration) {
        let idx: Vec<usize> = (0..self.procs.len())
            .filter(|&i| pick(&self.procs[i].who))
            .collect();
        for &i in &idx {
            self.note_rss(i);
            if let Some(mut s) = self.procs[i].stdin.take() {
                let _ = writeln!(s, "stop");
            }
        }
        let deadline = Instant::now() + limit;
        for &i in &idx {
            let p = &mut self.procs[i];
            loop {
                match p.child.try_wait() {
                    Ok(Some(st)) => {
                        if !st.success() && (!self.scribble || crashed(st)) {
                            self.failures.push(describe(p, st));
                        }
                        break;
                    }
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    _ => {
                        self.failures.push(format!(
                            "{} did not stop within {} s after being asked to",
                            name_of(&p.who, p.instance),
                            limit.as_secs()
                        ));
                        let _ = p.child.kill();
                        let _ = p.child.wait();
                        break;
                    }
                }
            }
            if let Some(r) = p.reader.take() {
                let _ = r.join();
            }
        }
        let mut i = 0;
        while i < self.procs.len() {
            if pick(&self.procs[i].who) {
                self.procs.swap_remove(i);
            } else {
                i += 1;
            }
        }
    }

    /// Wait until every group committed `ends` on every partition.
    fn drain(&mut self, ends: &[Vec<u64>], limit: Duration) -> CliResult {
        let deadline = Instant::now() + limit;
        loop {
            let mut behind = Vec::new();
            for (t, spec) in self.topics.iter().enumerate() {
                let st = spec.topic.stats()?;
                for g in &st.groups {
                    for p in &g.partitions {
                        let want = ends[t][p.partition as usize];
                        if p.committed.unwrap_or(0) < want {
                            behind.push(format!(
                                "{}/{} p{} at {} of {}",
                                spec.name,
                                g.name,
                                p.partition,
                                p.committed.unwrap_or(0),
                                want
                            ));
                        }
                    }
                }
            }
            if behind.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.failures.push(format!(
                    "groups did not drain within {} s: {}",
                    limit.as_secs(),
                    behind.join(", ")
                ));
                return Ok(());
            }
            self.check_children()?;
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kill every child, delete the topics, remove tokens of dead children.
    /// Returns what of the namespace is left in /dev/shm.
    fn cleanup(&mut self) -> Vec<String> {
        for p in &mut self.procs {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
        for mut p in self.procs.drain(..) {
            if let Some(r) = p.reader.take() {
                let _ = r.join();
            }
        }
        if let Some(mgr) = &self.mgr {
            for t in &self.topics {
                let _ = mgr.delete(t.name);
            }
        }
        self.topics.clear();
        self.mgr = None;
        let prefix = shmq::protocol::name::namespace_prefix(&self.ns);
        for f in shmq::protocol::os::list_shm(&prefix).unwrap_or_default() {
            if let Some(RegionName::Token { id }) = shmq::protocol::name::parse(&self.ns, &f) {
                if shmq::protocol::token::probe(&self.ns, id).is_dead() {
                    let _ = shmq::protocol::os::shm_remove(&f);
                }
            }
        }
        shmq::protocol::os::list_shm(&prefix).unwrap_or_default()
    }
}

impl Drop for Soak {
    fn drop(&mut self) {
        if self.mgr.is_some() || !self.procs.is_empty() {
            let _ = self.cleanup();
        }
    }
}

fn name_of(who: &Who, instance: u32) -> String {
    match who {
        Who::Producer { t, partition } => {
            format!("producer #{instance} (topic {t}, partition {partition})")
        }
        Who::Member { t, group } => format!("member #{instance} (topic {t}, group g{group})"),
    }
}

/// Ended by a signal we did not send, or by a panic.
fn crashed(st: ExitStatus) -> bool {
    use std::os::unix::process::ExitStatusExt;
    st.signal().is_some() || st.code() == Some(101)
}

fn describe(p: &mut Proc, st: ExitStatus) -> String {
    let words = p.last_words();
    format!(
        "{} ended on its own ({st}){}{}{}",
        name_of(&p.who, p.instance),
        if crashed(st) { ": CRASH" } else { "" },
        if words.is_empty() { "" } else { ": " },
        words
    )
}

/// Run `shmq soak`.
pub fn run(ns: &str, args: SoakArgs) -> CliResult {
    if let Some(role) = args.role {
        return run_child(ns, role, &args);
    }
    if !args.slots.is_power_of_two() {
        return Err(CliError::usage(format!(
            "--slots {}: must be a power of two",
            args.slots
        )));
    }
    // A fresh namespace of its own, under the one asked for, so that
    // cleaning up afterwards touches nothing else.
    let ns = format!("{ns}-soak{}", std::process::id());
    shmq::protocol::name::validate_namespace(&ns).map_err(|e| {
        CliError::usage(format!(
            "{e} (the soak runs in namespace <namespace>-soak<pid>; use a shorter --namespace)"
        ))
    })?;
    let seed = args.seed.unwrap_or_else(|| crate::util::unix_ns() | 1);
    let interrupted = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, interrupted.clone())
            .map_err(|e| CliError::failed(format!("cannot handle signals: {e}")))?;
    }
    let exe = std::env::current_exe()
        .map_err(|e| CliError::failed(format!("cannot find the shmq binary to re-run: {e}")))?;
    let mgr = TopicManager::with_namespace(&ns)?;
    let mut soak = Soak {
        ns: ns.clone(),
        exe,
        args_size: args.size,
        rate: args.rate,
        fault: args.inject_fault,
        faulted: Vec::new(),
        topics: Vec::new(),
        procs: Vec::new(),
        next_instance: 1,
        collected: Arc::new(Mutex::new(Collected::default())),
        kills: Kills::default(),
        child_errors: 0,
        failures: Vec::new(),
        rss: PeakRss::default(),
        scribble: args.scribble,
        mgr: None,
    };
    let kinds: &[(&'static str, Overflow)] = match args.overflow {
        OverflowArg::Both => &[("bp", Overflow::Backpressure), ("ow", Overflow::Overwrite)],
        OverflowArg::Backpressure => &[("bp", Overflow::Backpressure)],
        OverflowArg::Overwrite => &[("ow", Overflow::Overwrite)],
    };
    for &(name, overflow) in kinds {
        let config = TopicConfig {
            partitions: args.producers,
            slots: args.slots,
            slot_size: args.size as u64,
            retention: Duration::from_secs(120),
            overflow,
            // Long enough that a group whose members are all being restarted
            // keeps holding the writers back.
            dead_group_timeout: Duration::from_secs(60),
            ..TopicConfig::default()
        };
        let topic = mgr.create(name, config)?;
        soak.topics.push(TopicSpec {
            name,
            overflow,
            topic,
        });
    }
    soak.mgr = Some(mgr);
    let result = drive(&mut soak, &args, seed, &interrupted);
    let left = soak.cleanup();
    let mut report = result?;
    if !left.is_empty() {
        report
            .failures
            .push(format!("regions left in /dev/shm: {}", left.join(", ")));
    }
    report.pass = report.failures.is_empty();
    print_report(&report, args.format)?;
    if report.pass {
        Ok(())
    } else {
        Err(CliError::failed(format!(
            "soak failed: {}",
            report.failures.join("; ")
        )))
    }
}

fn drive(
    soak: &mut Soak,
    args: &SoakArgs,
    seed: u64,
    interrupted: &AtomicBool,
) -> CliResult<SoakReport> {
    // Register every group at offset 0 before any producer starts, so that
    // backpressure holds the writers to them from the first record.
    for spec in &soak.topics {
        for g in 0..args.groups {
            let mut c = shmq::Consumer::new(&spec.topic, &group_name(g))?;
            c.commit()?;
        }
    }
    for t in 0..soak.topics.len() {
        for group in 0..args.groups {
            for _ in 0..args.members {
                soak.spawn(Who::Member { t, group })?;
            }
        }
    }
    for t in 0..soak.topics.len() {
        for partition in 0..args.producers {
            soak.spawn(Who::Producer { t, partition })?;
        }
    }

    let scribbles = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let stop_scribbler = Arc::new(AtomicBool::new(false));
    let scribbler = args.scribble.then(|| {
        let names: Vec<String> = soak.topics.iter().map(|t| t.name.to_string()).collect();
        let (ns, every, count, stop) = (
            soak.ns.clone(),
            args.scribble_every,
            scribbles.clone(),
            stop_scribbler.clone(),
        );
        std::thread::spawn(move || scribble::run(&ns, &names, every, seed, &count, &stop))
    });

    let mut rng = Rng(seed);
    let started = Instant::now();
    let end = started + args.duration;
    let mean_ms = args.kill_every.as_millis() as u64;
    let next_kill = |rng: &mut Rng, now: Instant| {
        (mean_ms > 0).then(|| now + Duration::from_millis(rng.below(2 * mean_ms) + 1))
    };
    let mut kill_at = next_kill(&mut rng, Instant::now());
    let mut last_progress = (soak.progress(), Instant::now());
    let mut last_check = Instant::now();
    let mut last_compact = (Instant::now(), HashMap::new());
    while Instant::now() < end {
        if interrupted.load(Ordering::Relaxed) {
            soak.failures.push("interrupted".into());
            break;
        }
        soak.check_children()?;
        if let Some(at) = kill_at {
            if Instant::now() >= at {
                soak.kill_random(&mut rng)?;
                kill_at = next_kill(&mut rng, Instant::now());
            }
        }
        if last_compact.0.elapsed() >= Duration::from_secs(5) {
            last_compact.0 = Instant::now();
            soak.compact(&mut last_compact.1);
        }
        if last_check.elapsed() >= Duration::from_secs(1) {
            last_check = Instant::now();
            let now = soak.progress();
            if now != last_progress.0 {
                last_progress = (now, Instant::now());
            } else if last_progress.1.elapsed() > args.stall_timeout {
                soak.failures.push(format!(
                    "no progress (no record written or committed) for {} s",
                    args.stall_timeout.as_secs()
                ));
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    stop_scribbler.store(true, Ordering::Release);
    if let Some(h) = scribbler {
        let _ = h.join();
    }
    let ran = started.elapsed();

    // Stop the producers, then let the groups catch up with what was written.
    soak.stop(
        |w| matches!(w, Who::Producer { .. }),
        Duration::from_secs(10),
    );
    let mut ends: Vec<Vec<u64>> = Vec::new();
    for spec in &soak.topics {
        let mut v = Vec::new();
        for p in 0..args.producers {
            v.push(spec.topic.write_offset(p)?);
        }
        ends.push(v);
    }
    if soak.failures.is_empty() || args.scribble {
        soak.drain(&ends, Duration::from_secs(30))?;
    }
    soak.stop(|w| matches!(w, Who::Member { .. }), Duration::from_secs(10));
    soak.rss.soak = peak_rss_kib(std::process::id());

    let collected = std::mem::take(&mut *soak.collected.lock().unwrap_or_else(|e| e.into_inner()));
    let mut report = SoakReport {
        pass: false,
        failures: std::mem::take(&mut soak.failures),
        seed,
        duration_s: ran.as_secs_f64(),
        namespace: soak.ns.clone(),
        producers: args.producers,
        groups: args.groups,
        members: args.members,
        scribble: args.scribble,
        messages: 0,
        delivered: 0,
        msgs_per_s: 0.0,
        kills: soak.kills,
        lost_backpressure: 0,
        lost_overwrite: 0,
        lagged: 0,
        lost_unreported: 0,
        redelivered: 0,
        late: 0,
        wrong_duplicates: 0,
        conflicts: 0,
        corrupt: 0,
        misplaced: 0,
        skipped_corrupt: 0,
        scribbles: scribbles.load(Ordering::Relaxed),
        child_errors: soak.child_errors,
        peak_rss_kib: soak.rss,
        per_group: Vec::new(),
    };
    if collected.unparsed > 0 {
        report.failures.push(format!(
            "{} unreadable report lines from the members",
            collected.unparsed
        ));
    }
    for (t, spec) in soak.topics.iter().enumerate() {
        // Saturating: a scribbled cursor can say anything.
        let written = ends[t].iter().fold(0u64, |a, &w| a.saturating_add(w));
        report.messages = report.messages.saturating_add(written);
        for p in 0..args.producers {
            if let Some(&seq) = collected.producer_end.get(&(t, p)) {
                if seq != ends[t][p as usize] && !args.scribble {
                    report.failures.push(format!(
                        "{} p{p}: the producer's sequence ends at {seq} but the write offset is {}",
                        spec.name, ends[t][p as usize]
                    ));
                }
            }
        }
        for g in 0..args.groups {
            let mut sum = Tally::default();
            for p in 0..args.producers {
                let empty = Reports::default();
                let rep = collected.reports.get(&(t, g, p)).unwrap_or(&empty);
                sum.add(&rep.finish(ends[t][p as usize]));
            }
            let (corrupt, misplaced, skipped) =
                collected.bad.get(&(t, g)).copied().unwrap_or_default();
            let gr = GroupReport {
                topic: spec.name.to_string(),
                overflow: match spec.overflow {
                    Overflow::Backpressure => "backpressure",
                    _ => "overwrite",
                },
                group: group_name(g),
                messages: written,
                tally: sum,
                corrupt,
                misplaced,
                skipped_corrupt: skipped,
            };
            let who = format!("{}/{}", spec.name, gr.group);
            if !args.scribble {
                let mut fail = |what: &str, n: u64| {
                    if n > 0 {
                        report.failures.push(format!("{who}: {what} {n}"));
                    }
                };
                fail("corrupt", corrupt);
                fail("out of place", misplaced);
                fail("skipped as malformed", skipped);
                fail("wrong duplicates", sum.wrong_duplicates);
                fail("conflicting records", sum.conflicts);
                fail("delivered beyond the write offset", sum.beyond_end);
                match spec.overflow {
                    Overflow::Backpressure => fail("lost (backpressure)", sum.lost),
                    _ => fail("lost without a Lagged report", sum.lost_unreported),
                }
            }
            report.delivered = report.delivered.saturating_add(sum.delivered);
            match spec.overflow {
                Overflow::Backpressure => {
                    report.lost_backpressure = report.lost_backpressure.saturating_add(sum.lost)
                }
                _ => report.lost_overwrite = report.lost_overwrite.saturating_add(sum.lost),
            }
            if spec.overflow == Overflow::Overwrite {
                report.lagged = report.lagged.saturating_add(sum.lagged);
                report.lost_unreported = report.lost_unreported.saturating_add(sum.lost_unreported);
            }
            report.redelivered = report.redelivered.saturating_add(sum.redelivered);
            report.late = report.late.saturating_add(sum.late);
            report.wrong_duplicates = report.wrong_duplicates.saturating_add(sum.wrong_duplicates);
            report.conflicts = report.conflicts.saturating_add(sum.conflicts);
            report.corrupt = report.corrupt.saturating_add(corrupt);
            report.misplaced = report.misplaced.saturating_add(misplaced);
            report.skipped_corrupt = report.skipped_corrupt.saturating_add(skipped);
            report.per_group.push(gr);
        }
    }
    report.msgs_per_s = report.messages as f64 / ran.as_secs_f64().max(1e-9);
    if report.messages == 0 {
        report.failures.push("no record was written".into());
    }
    Ok(report)
}

fn print_report(r: &SoakReport, format: Format) -> CliResult {
    let mut out = std::io::stdout().lock();
    if format == Format::Json {
        let s = serde_json::to_string_pretty(r).map_err(|e| CliError::failed(e.to_string()))?;
        writeln!(out, "{s}")?;
        return Ok(());
    }
    let verdict = if r.pass { "PASS" } else { "FAIL" };
    writeln!(
        out,
        "shmq soak: {verdict} after {} (seed {}): {} producers, {} groups x {} members per topic{}",
        fmt_duration_approx(Duration::from_secs_f64(r.duration_s)),
        r.seed,
        r.producers,
        r.groups,
        r.members,
        if r.scribble { ", scribbler on" } else { "" }
    )?;
    writeln!(
        out,
        "  messages  {} written ({:.2} M/s), {} deliveries verified (checksum, partition, seq = offset)",
        thousands(r.messages),
        r.msgs_per_s / 1e6,
        thousands(r.delivered)
    )?;
    writeln!(
        out,
        "  kills     {} producers, {} members (SIGKILL at random points, restarted at once); {} other child exits",
        thousands(r.kills.producers),
        thousands(r.kills.members),
        thousands(r.child_errors)
    )?;
    writeln!(
        out,
        "  lost      backpressure {} (must be 0); overwrite {} lapped, {} of them reported to the readers as Lagged, {} unreported (must be 0)",
        thousands(r.lost_backpressure),
        thousands(r.lost_overwrite),
        thousands(r.lost_overwrite - r.lost_unreported.min(r.lost_overwrite)),
        thousands(r.lost_unreported)
    )?;
    writeln!(
        out,
        "  duplicated {} redelivered after a member was killed or a rebalance (at-least-once), {} wrong, {} conflicting{}",
        thousands(r.redelivered),
        thousands(r.wrong_duplicates),
        thousands(r.conflicts),
        if r.late > 0 {
            format!(
                "; {} reported late (below a commit seconds old, not classified)",
                thousands(r.late)
            )
        } else {
            String::new()
        }
    )?;
    writeln!(
        out,
        "  corrupt   {} delivered with a bad checksum, {} out of place, {} skipped as malformed",
        thousands(r.corrupt),
        thousands(r.misplaced),
        thousands(r.skipped_corrupt)
    )?;
    if r.scribble {
        writeln!(out, "  scribbles {}", thousands(r.scribbles))?;
    }
    writeln!(
        out,
        "  peak RSS  soak {} MiB, producer {} MiB, member {} MiB",
        r.peak_rss_kib.soak / 1024,
        r.peak_rss_kib.producer / 1024,
        r.peak_rss_kib.member / 1024
    )?;
    let rows: Vec<Vec<String>> = r
        .per_group
        .iter()
        .map(|g| {
            vec![
                g.topic.clone(),
                g.overflow.to_string(),
                g.group.clone(),
                thousands(g.messages),
                thousands(g.tally.delivered),
                thousands(g.tally.lost),
                thousands(g.tally.lagged),
                thousands(g.tally.redelivered),
                thousands(g.tally.wrong_duplicates),
                thousands(g.corrupt + g.misplaced),
            ]
        })
        .collect();
    write!(
        out,
        "{}",
        crate::util::table(
            &[
                "topic",
                "overflow",
                "group",
                "written",
                "delivered",
                "lost",
                "lagged",
                "redelivered",
                "wrong dup",
                "corrupt"
            ],
            &rows
        )
    )?;
    for f in &r.failures {
        writeln!(out, "  failure: {f}")?;
    }
    Ok(())
}

mod scribble {
    //! The optional scribbler: writes garbage into the shared fields of the
    //! soak's regions through the files in /dev/shm (`pwrite`, no mapping).

    use std::fs::File;
    use std::os::unix::fs::FileExt;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::time::Duration;

    use shmq::protocol::layout::{self, GroupPartition, MemberEntry, PartitionHeader};

    use super::Rng;

    fn path(ns: &str, topic: &str, part: Option<u32>) -> String {
        match part {
            Some(p) => format!("/dev/shm/shmq.{ns}.{topic}.p{p}"),
            None => format!("/dev/shm/shmq.{ns}.{topic}.meta"),
        }
    }

    /// A hostile value for an 8-byte word currently holding `cur`.
    fn value(rng: &mut Rng, cur: u64) -> u64 {
        match rng.below(8) {
            0 => 0,
            1 => u64::MAX,
            2 => 1 << 63,
            3 => cur.wrapping_add(1),
            4 => cur.wrapping_sub(rng.below(64)),
            5 => cur.wrapping_add(rng.below(1 << 20)),
            _ => rng.next(),
        }
    }

    fn poke(f: &File, rng: &mut Rng, at: u64) -> bool {
        let mut cur = [0u8; 8];
        if f.read_exact_at(&mut cur, at).is_err() {
            return false;
        }
        let v = value(rng, u64::from_le_bytes(cur));
        f.write_all_at(&v.to_le_bytes(), at).is_ok()
    }

    /// Scribble every `every` until `stop`.
    pub(super) fn run(
        ns: &str,
        topics: &[String],
        every: Duration,
        seed: u64,
        count: &AtomicU64,
        stop: &AtomicBool,
    ) {
        let mut rng = Rng(seed.rotate_left(17) | 1);
        while !stop.load(Ordering::Acquire) {
            std::thread::sleep(every);
            let topic = &topics[rng.below(topics.len() as u64) as usize];
            let opened = |p| {
                File::options()
                    .read(true)
                    .write(true)
                    .open(path(ns, topic, p))
                    .ok()
            };
            let done = if rng.below(4) == 0 {
                // The group table: committed offsets, owners, member entries.
                let Some(f) = opened(None) else { continue };
                let Ok(meta) = f.metadata() else { continue };
                let len = meta.len();
                let hdr = layout::META_HEADER as u64;
                let line = layout::LINE as u64;
                if len <= hdr + line {
                    continue;
                }
                // Any 64-byte line after the meta header: group header,
                // member entry or partition line; pick a field inside.
                let lines = (len - hdr) / line;
                let at = hdr + rng.below(lines) * line;
                let field = match rng.below(4) {
                    0 => std::mem::offset_of!(GroupPartition, committed),
                    1 => std::mem::offset_of!(GroupPartition, owner),
                    2 => std::mem::offset_of!(MemberEntry, heartbeat_ns),
                    _ => std::mem::offset_of!(MemberEntry, work_lo),
                } as u64;
                poke(&f, &mut rng, at + field)
            } else {
                let p = rng.below(64) as u32;
                let Some(f) = opened(Some(p)).or_else(|| opened(Some(0))) else {
                    continue;
                };
                let Ok(meta) = f.metadata() else { continue };
                let len = meta.len();
                let hdr = layout::PARTITION_HEADER as u64;
                match rng.below(10) {
                    0 => poke(
                        &f,
                        &mut rng,
                        std::mem::offset_of!(PartitionHeader, cursor) as u64,
                    ),
                    1 => poke(
                        &f,
                        &mut rng,
                        std::mem::offset_of!(PartitionHeader, writer) as u64,
                    ),
                    _ => {
                        // A slot's sequence word or its length words.
                        let mut stride = [0u8; 8];
                        let off = std::mem::offset_of!(PartitionHeader, stride) as u64;
                        if f.read_exact_at(&mut stride, off).is_err() {
                            continue;
                        }
                        let stride = u64::from_le_bytes(stride).max(64);
                        if len <= hdr + stride {
                            continue;
                        }
                        let slots = (len - hdr) / stride;
                        let at = hdr + rng.below(slots) * stride + 8 * rng.below(2);
                        poke(&f, &mut rng, at)
                    }
                }
            };
            if done {
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_damage_is_caught() {
        for size in [MIN_SIZE, 25, 64, 1000] {
            let mut buf = vec![0u8; size];
            encode(&mut buf, 3, 7, 123);
            assert_eq!(decode(&buf), Some((3, 7, 123)));
            for i in 0..size {
                let mut bad = buf.clone();
                bad[i] ^= 0x10;
                assert_eq!(decode(&bad), None, "size {size} byte {i}");
            }
            assert_eq!(decode(&buf[..size - 1]), None);
        }
    }

    fn run(start: u64, end: u64, span: u32, writer: u32) -> Run {
        Run {
            start,
            end,
            span,
            writer,
        }
    }

    #[test]
    fn tally_tells_redelivery_from_wrong_duplicates_and_counts_loss() {
        // Member 1 reads 0..100 and dies having committed 60; member 2
        // resumes at 60 (a redelivery of 60..100) and reads to 200.
        let rep = Reports {
            runs: vec![(run(0, 100, 1, 9), 1), (run(60, 200, 1, 9), 2)],
            lagged: vec![],
            ..Reports::default()
        };
        let t = rep.finish(200);
        assert_eq!((t.delivered, t.lost, t.redelivered), (200, 0, 40));
        assert_eq!((t.wrong_duplicates, t.conflicts), (0, 0));

        // The same member and span twice over 10 offsets: wrong.
        let rep = Reports {
            runs: vec![(run(0, 50, 1, 9), 1), (run(40, 80, 1, 9), 1)],
            lagged: vec![],
            ..Reports::default()
        };
        let t = rep.finish(100);
        assert_eq!(
            (t.delivered, t.lost, t.wrong_duplicates, t.redelivered),
            (80, 20, 10, 0)
        );
        // ... but not after the member was given the partition again.
        let rep = Reports {
            runs: vec![(run(0, 50, 1, 9), 1), (run(40, 80, 2, 9), 1)],
            lagged: vec![],
            ..Reports::default()
        };
        assert_eq!(rep.finish(80).wrong_duplicates, 0);

        // Two producer instances at the same offsets: a conflict.
        let rep = Reports {
            runs: vec![(run(0, 50, 1, 9), 1), (run(45, 60, 1, 10), 2)],
            lagged: vec![],
            ..Reports::default()
        };
        assert_eq!(rep.finish(60).conflicts, 5);
    }

    #[test]
    fn tally_matches_loss_against_lag_reports() {
        // Lapped: 100..300 reported lost by one member, 250..400 by another
        // (overlapping reports count once); 400..420 missing, unreported.
        let rep = Reports {
            runs: vec![(run(0, 100, 1, 1), 1), (run(420, 500, 1, 1), 2)],
            lagged: vec![(100, 300), (250, 400)],
            ..Reports::default()
        };
        let t = rep.finish(500);
        assert_eq!(t.delivered, 180);
        assert_eq!(t.lost, 320);
        assert_eq!(t.lagged, 300);
        assert_eq!(t.lost_unreported, 20);
        // Delivered beyond the final write offset is counted apart.
        let rep = Reports {
            runs: vec![(run(0, 10, 1, 1), 1)],
            lagged: vec![],
            ..Reports::default()
        };
        let t = rep.finish(8);
        assert_eq!((t.delivered, t.beyond_end, t.lost), (8, 2, 0));
    }

    #[test]
    fn compaction_adds_up_to_the_same_account() {
        let rep = Reports {
            runs: vec![
                (run(0, 100, 1, 1), 1),
                (run(60, 180, 1, 1), 2),
                (run(170, 175, 1, 1), 2),
                (run(250, 400, 1, 2), 2),
                (run(390, 420, 3, 2), 1),
            ],
            lagged: vec![(180, 240), (230, 250)],
            ..Reports::default()
        };
        let whole = rep.finish(450);
        assert_eq!(whole.delivered, 350);
        assert_eq!((whole.lagged, whole.lost_unreported), (70, 30));
        assert_eq!((whole.redelivered, whole.wrong_duplicates), (50, 5));
        for cuts in [vec![50], vec![100, 200], vec![10, 175, 300, 395, 450]] {
            let mut r = rep.clone();
            for &c in &cuts {
                r.compact(c);
            }
            assert_eq!(r.finish(450), whole, "cuts {cuts:?}");
        }
        // A delivery reported after its offsets were added up is late.
        let mut r = rep.clone();
        r.compact(300);
        r.runs.push((run(280, 310, 9, 2), 3));
        let t = r.finish(450);
        assert_eq!((t.late, t.redelivered), (20, 60));
    }

    #[test]
    fn member_state_breaks_runs_on_span_writer_and_gaps() {
        let mut st = MemberState {
            open: HashMap::new(),
            span: HashMap::new(),
            assigned: Vec::new(),
            rejoins: 0,
            lines: Vec::new(),
        };
        let rec = |p, w, seq| {
            let mut b = vec![0u8; 32];
            encode(&mut b, p, w, seq);
            b
        };
        st.reassigned(vec![0, 1], 0);
        for o in 0..5 {
            st.deliver(0, o, &rec(0, 1, o));
        }
        st.deliver(0, 5, &rec(0, 2, 5)); // new producer instance
        st.deliver(0, 7, &rec(0, 2, 7)); // gap (lag)
        st.deliver(1, 0, &rec(0, 2, 0)); // wrong partition
        st.deliver(1, 1, b"garbage garbage garbage garbage!"); // bad checksum
        st.reassigned(vec![0], 1); // re-join: new span for 0
        st.deliver(0, 3, &rec(0, 1, 3));
        st.close_all();
        let text = String::from_utf8(st.lines).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "R 0 0 5 1 1",
                "R 0 5 6 1 2",
                "M 1 0 0 0",
                "X 1 1",
                "R 0 7 8 1 2",
                "R 0 3 4 2 1"
            ]
        );
    }
}
