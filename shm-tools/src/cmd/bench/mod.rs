//! `shmq bench`: cross-process benchmarks, each figure printed beside a
//! floor measured in the same run by the same tool, with the ratio and the
//! performance target shmq sets itself for that figure (PASS/MISS).
//!
//! Every experiment runs between two OS processes: this one and a child (this
//! binary re-executed as `shmq bench --child ROLE ...`, with hidden
//! arguments), pinned to separate CPUs where two are allowed. Topics and
//! scratch regions live in a private namespace `bench<pid>` and are deleted
//! before the command returns.
//!
//! | mode | shmq | floor |
//! |---|---|---|
//! | `latency` | ping-pong round trips over two topics, busy-poll and parked; async (tokio, both sides) | raw cache-line ping-pong; pipe and Unix-socket ping-pong |
//! | `throughput` | 64 B, one producer process → one consumer process, `send` (overwrite topic: the records the consumer lost are counted) and `send_batch` | a minimal SPSC ring in shared memory |
//! | `bandwidth` | 4 KiB, 64 KiB, 1 MiB; copy (`poll_into`) and zero-copy (`poll_with`) reads | single-thread `memcpy` |
//! | `steady` | 100,000 msg/s for 2 s, 64 B, default wait strategy: one-way latency and the consumer's CPU use | (absolute targets) |
//!
//! and always the syscall check: `send` with no parked consumer, under a
//! seccomp filter that kills the process at any system call.

mod asynk;
mod floors;
mod harness;
mod plot;
mod queue;

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use shmq::{Overflow, TopicManager};

use crate::cli::Format;
use crate::error::{CliError, CliResult};
use harness::{Cpus, Latency, Progress};
use queue::{How, Read, Send, Wait};

/// Which experiments `shmq bench` runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Everything (the default).
    All,
    /// Round-trip latency, busy-poll and parked, against raw/pipe/socket floors.
    Latency,
    /// 64-byte messages per second against a minimal SPSC ring.
    Throughput,
    /// 4 KiB / 64 KiB / 1 MiB messages against memcpy.
    Bandwidth,
    /// A steady 100,000 msg/s for 2 s with the default wait strategy:
    /// one-way latency percentiles and the consumer's CPU use.
    Steady,
}

/// Arguments of `shmq bench`.
///
/// Examples: `shmq bench` (everything, about 15 s), `shmq bench latency
/// --size 256 --runs 5`, `shmq bench --runs 3 --format json --plot lat.svg`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// What to run; everything when omitted.
    #[arg(value_enum)]
    pub mode: Option<Mode>,
    /// Message size of the latency ping-pong, in bytes.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(8..=1 << 20))]
    pub size: u64,
    /// Repeat the whole run N times and report the median of each figure
    /// (ratios are the median of the per-run ratios).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=99))]
    pub runs: u64,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Also write a latency percentile plot (shmq vs. floors) to this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Do not pin the two processes to separate CPUs.
    #[arg(long)]
    pub no_pin: bool,
    /// Multiply every iteration count by this (e.g. 0.05 for a smoke run).
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
    /// No progress lines on stderr.
    #[arg(long, short)]
    pub quiet: bool,

    // ---- hidden: the child-process roles ----
    /// Child role (internal).
    #[arg(long, hide = true)]
    pub child: Option<String>,
    /// CPU the child pins itself to (internal).
    #[arg(long, hide = true)]
    pub child_cpu: Option<usize>,
    /// Scratch region or socket name (internal).
    #[arg(long, hide = true)]
    pub region: Option<String>,
    /// Iterations or messages (internal).
    #[arg(long, hide = true, default_value_t = 0)]
    pub count: u64,
    /// Ring slots or commit interval (internal).
    #[arg(long, hide = true, default_value_t = 0)]
    pub slots: usize,
    /// `busy` or `park` (internal).
    #[arg(long, hide = true)]
    pub wait: Option<String>,
    /// `copy` or `zero-copy` (internal).
    #[arg(long, hide = true)]
    pub read: Option<String>,
}

/// What a child role needs from the command line.
#[derive(Debug)]
pub struct ChildArgs {
    count: u64,
    size: usize,
    slots: usize,
    region: Option<String>,
    wait: Option<String>,
    read: Option<String>,
}

impl ChildArgs {
    fn region(&self) -> CliResult<&str> {
        self.region
            .as_deref()
            .ok_or_else(|| CliError::usage("bench child needs --region"))
    }
}

/// Run `shmq bench`.
pub fn run(ns: &str, args: BenchArgs) -> CliResult {
    if let Some(role) = args.child.clone() {
        // Children get the bench's private namespace as `--namespace`.
        return run_child(ns, &role, args);
    }
    if !(args.scale > 0.0 && args.scale <= 100.0) {
        return Err(CliError::usage("--scale must be in (0, 100]"));
    }
    // The bench's own namespace, whatever --namespace says: it creates and
    // deletes topics freely and must never touch a real deployment's.
    let ns = format!("bench{}", std::process::id());
    let result = Bench::new(&ns, &args).and_then(|mut b| {
        let placement = b.cpus.describe();
        b.run_all().map(|r| (r, placement))
    });
    cleanup(&ns);
    let ((runs, curves), placement) = result?;
    let summary = Summary::new(&runs);
    if let Some(path) = &args.plot {
        let series: Vec<(&str, &Latency)> = curves.iter().map(|(n, l)| (*n, l)).collect();
        plot::latency_svg(
            path,
            &format!("shmq round trip, {} B, two processes", args.size),
            &series,
        )?;
    }
    match args.format {
        Format::Json => {
            let doc = serde_json::json!({
                "setup": summary.setup(&args, &placement),
                "median": summary.median,
                "targets": summary.targets(),
                "runs": runs,
            });
            println!(
                "{}",
                serde_json::to_string_pretty(&doc).map_err(|e| CliError::failed(e.to_string()))?
            );
        }
        Format::Table => print!("{}", summary.table(&args, &placement)),
    }
    Ok(())
}

/// Which wake-up / claim barrier the bench's processes use: every process of
/// shmq decides once (`shmq::protocol::os::barrier_mode`), and the bench's
/// children run this binary on this kernel with this environment, so this
/// process's decision is theirs (`SHMQ_NO_MEMBARRIER=1` forces the fallback
/// in all of them).
fn wakeup_path() -> String {
    use shmq::protocol::os::{barrier_mode, BarrierMode};
    match barrier_mode() {
        BarrierMode::Membarrier => format!(
            "{} (send: plain cursor store + compiler fence; park/takeover: membarrier)",
            BarrierMode::Membarrier.name()
        ),
        BarrierMode::SeqCstFence => format!(
            "{} (send and park: SeqCst fence)",
            BarrierMode::SeqCstFence.name()
        ),
    }
}

/// Remove whatever the bench left in its namespace (topics, scratch regions,
/// dead children's tokens).
fn cleanup(ns: &str) {
    if let Ok(mgr) = TopicManager::with_namespace(ns) {
        if let Ok(topics) = mgr.list() {
            for t in topics {
                let _ = mgr.delete(&t);
            }
        }
    }
    let prefix = format!("shmq.{ns}.");
    if let Ok(names) = shmq::protocol::os::list_shm(&prefix) {
        for n in names {
            let _ = shmq::protocol::os::shm_remove(&n);
        }
    }
}

fn run_child(ns: &str, role: &str, args: BenchArgs) -> CliResult {
    if let Some(cpu) = args.child_cpu {
        // Best effort: an unpinned child still measures correctly.
        let _ = shmq::protocol::os::pin_to_cpu(cpu);
    }
    let c = ChildArgs {
        count: args.count,
        size: args.size as usize,
        slots: args.slots,
        region: args.region,
        wait: args.wait,
        read: args.read,
    };
    match role {
        "raw-echo" => floors::raw_echo(&c),
        "spsc-consumer" => floors::spsc_consumer(&c),
        "pipe-echo" => floors::pipe_echo(&c),
        "unix-echo" => floors::unix_echo(&c),
        "shmq-echo" => queue::echo(ns, &c),
        "shmq-consumer" => queue::consume(ns, &c),
        "nosys" => queue::nosys(ns, &c),
        "shmq-async-echo" => asynk::echo(ns, &c),
        "shmq-steady" => queue::steady_consume(ns, &c),
        other => Err(CliError::usage(format!(
            "unknown bench child role {other:?}"
        ))),
    }
}

/// Flat figures of one run: `name → value`.
type Figures = BTreeMap<String, f64>;

struct Bench<'a> {
    args: &'a BenchArgs,
    mgr: TopicManager,
    cpus: Cpus,
    progress: Progress,
}

/// Latency curves kept for the plot (from the first run).
type Curves = Vec<(&'static str, Latency)>;

impl<'a> Bench<'a> {
    fn new(ns: &str, args: &'a BenchArgs) -> CliResult<Bench<'a>> {
        // `Kid::spawn` passes the namespace to children as `--namespace`.
        let mgr = TopicManager::with_namespace(ns)?;
        Ok(Bench {
            args,
            mgr,
            cpus: Cpus::setup(!args.no_pin),
            progress: Progress::new(!args.quiet),
        })
    }

    fn n(&self, base: u64) -> u64 {
        ((base as f64 * self.args.scale) as u64).max(10)
    }

    fn wants(&self, m: Mode) -> bool {
        matches!(self.args.mode, None | Some(Mode::All)) || self.args.mode == Some(m)
    }

    fn run_all(&mut self) -> CliResult<(Vec<Figures>, Curves)> {
        let mut runs = Vec::new();
        let mut curves = Vec::new();
        for r in 0..self.args.runs {
            let mut f = Figures::new();
            let keep = if r == 0 { Some(&mut curves) } else { None };
            self.run_once(r, &mut f, keep)?;
            runs.push(f);
        }
        Ok((runs, curves))
    }

    fn step(&self, run: u64, what: &str) {
        self.progress
            .step(&format!("run {}/{}: {what}", run + 1, self.args.runs));
    }

    fn run_once(
        &mut self,
        run: u64,
        f: &mut Figures,
        mut curves: Option<&mut Curves>,
    ) -> CliResult {
        let ns = self.mgr.namespace().to_string();
        let cpus = self.cpus;
        let size = self.args.size as usize;
        let lat = |f: &mut Figures, key: &str, l: &Latency| {
            for (k, v) in [
                ("p50", l.p50),
                ("p90", l.p90),
                ("p99", l.p99),
                ("p999", l.p999),
                ("max", l.max),
            ] {
                f.insert(format!("lat.{key}.{k}"), v);
            }
        };
        let mut keep = |name: &'static str, l: &Latency| {
            if let Some(c) = curves.as_deref_mut() {
                c.push((name, l.clone()));
            }
        };
        if self.wants(Mode::Latency) {
            let (w, n) = (self.n(20_000), self.n(200_000));
            self.step(run, "latency: raw cache-line ping-pong (floor)");
            let raw = floors::raw_pingpong(&ns, cpus, w, n)?;
            self.step(run, &format!("latency: shmq busy-poll, {size} B"));
            let busy = queue::latency(&self.mgr, cpus, Wait::Busy, size, w, n)?;
            let (w, n) = (self.n(1_000), self.n(20_000));
            self.step(run, "latency: pipe ping-pong (floor)");
            let pipe = floors::pipe_pingpong(&ns, cpus, size, w, n)?;
            self.step(run, "latency: Unix socket ping-pong (floor)");
            let unix = floors::unix_pingpong(&ns, cpus, size, w, n)?;
            self.step(run, &format!("latency: shmq parked (futex), {size} B"));
            let park = queue::latency(&self.mgr, cpus, Wait::Park, size, w, n)?;
            self.step(
                run,
                &format!("latency: shmq default strategy (adaptive backoff), {size} B"),
            );
            let backoff = queue::latency(&self.mgr, cpus, Wait::Backoff, size, w, n)?;
            lat(f, "raw", &raw);
            lat(f, "busy", &busy);
            lat(f, "pipe", &pipe);
            lat(f, "unix", &unix);
            lat(f, "park", &park);
            lat(f, "backoff", &backoff);
            self.step(
                run,
                &format!("latency: shmq async (tokio, woken by the hub thread), {size} B"),
            );
            let asy = asynk::latency(&self.mgr, cpus, size, w, n)?;
            lat(f, "async", &asy);
            f.insert("ratio.async_park_p50".into(), asy.p50 / park.p50);
            f.insert("ratio.async_busy_p50".into(), asy.p50 / busy.p50);
            keep("shmq async (tokio)", &asy);
            f.insert("ratio.busy_p50".into(), busy.p50 / raw.p50);
            f.insert("ratio.busy_p999".into(), busy.p999 / raw.p999);
            f.insert("ratio.park_p50".into(), park.p50 / pipe.p50);
            keep("raw cache-line ping-pong (floor)", &raw);
            keep("shmq busy-poll", &busy);
            keep("pipe ping-pong (floor)", &pipe);
            keep("Unix socket ping-pong (floor)", &unix);
            keep("shmq parked (futex)", &park);
            keep("shmq default strategy (adaptive backoff)", &backoff);
        }
        if self.wants(Mode::Throughput) {
            let n = self.n(10_000_000);
            let slots = 4096;
            self.step(run, "throughput: minimal SPSC ring (floor)");
            let spsc = floors::spsc_ring(&ns, cpus, slots, n)?;
            self.step(
                run,
                "throughput: shmq send, overwrite topic, consumer poll_into_batch",
            );
            let (single, wakes1) = queue::stream(
                &self.mgr,
                cpus,
                64,
                slots as u64,
                n,
                How {
                    send: Send::Single,
                    read: Read::Batch,
                    overflow: Overflow::Overwrite,
                },
            )?;
            self.step(run, "throughput: shmq send_batch(64)");
            let (batch, wakes2) = queue::stream(
                &self.mgr,
                cpus,
                64,
                slots as u64,
                n,
                How {
                    send: Send::Batch(64),
                    read: Read::Batch,
                    overflow: Overflow::Backpressure,
                },
            )?;
            for (k, s) in [("spsc", &spsc), ("single", &single), ("batch", &batch)] {
                f.insert(format!("tput.{k}.msgs_per_sec"), s.msgs_per_sec);
                f.insert(format!("tput.{k}.gb_per_sec"), s.gb_per_sec);
                f.insert(format!("tput.{k}.lost"), s.lost as f64);
                f.insert(format!("tput.{k}.corrupt"), s.corrupt as f64);
            }
            f.insert("tput.single.stall_us".into(), single.stall_ns as f64 / 1e3);
            f.insert("tput.wake_syscalls".into(), (wakes1 + wakes2) as f64);
            f.insert("tput.sends".into(), (2 * n) as f64);
            f.insert(
                "ratio.single".into(),
                single.msgs_per_sec / spsc.msgs_per_sec,
            );
            f.insert("ratio.batch".into(), batch.msgs_per_sec / spsc.msgs_per_sec);
        }
        if self.wants(Mode::Bandwidth) {
            for (size, slots) in [(4096usize, 256u64), (65536, 32), (1 << 20, 8)] {
                let bytes = (self.n(1 << 30) as f64) as u64;
                let count = (bytes / size as u64).max(16);
                let label = human_size(size);
                self.step(run, &format!("bandwidth {label}: memcpy (floor)"));
                let memcpy = floors::memcpy(size, bytes);
                self.step(run, &format!("bandwidth {label}: shmq copy"));
                let (copy, _) = queue::stream(
                    &self.mgr,
                    cpus,
                    size,
                    slots,
                    count,
                    How {
                        send: Send::Single,
                        read: Read::Copy,
                        overflow: Overflow::Backpressure,
                    },
                )?;
                self.step(run, &format!("bandwidth {label}: shmq zero-copy read"));
                let (zc, _) = queue::stream(
                    &self.mgr,
                    cpus,
                    size,
                    slots,
                    count,
                    How {
                        send: Send::Single,
                        read: Read::ZeroCopy,
                        overflow: Overflow::Backpressure,
                    },
                )?;
                f.insert(format!("bw.{size}.memcpy"), memcpy);
                f.insert(format!("bw.{size}.copy"), copy.gb_per_sec);
                f.insert(format!("bw.{size}.zerocopy"), zc.gb_per_sec);
                f.insert(format!("bw.{size}.lost"), (copy.lost + zc.lost) as f64);
                f.insert(
                    format!("bw.{size}.corrupt"),
                    (copy.corrupt + zc.corrupt) as f64,
                );
                f.insert(format!("ratio.bw.{size}.copy"), copy.gb_per_sec / memcpy);
                f.insert(format!("ratio.bw.{size}.zerocopy"), zc.gb_per_sec / memcpy);
            }
        }
        if self.wants(Mode::Steady) || self.wants(Mode::Latency) {
            let rate = 100_000;
            let n = self.n(2 * rate);
            self.step(
                run,
                &format!("steady rate: {rate} msg/s for {n} messages, default strategy"),
            );
            let st = queue::steady(&self.mgr, cpus, rate, n, false)?;
            self.step(
                run,
                &format!("steady rate: {rate} msg/s for {n} messages, busy-poll (floor)"),
            );
            let floor = queue::steady(&self.mgr, cpus, rate, n, true)?;
            lat(f, "steady", &st.latency);
            lat(f, "steady_busy", &floor.latency);
            f.insert("steady_busy.cpu_percent".into(), floor.cpu_percent);
            f.insert(
                "ratio.steady_p99".into(),
                st.latency.p99 / floor.latency.p99,
            );
            f.insert("steady.rate".into(), rate as f64);
            f.insert("steady.messages".into(), n as f64);
            f.insert("steady.cpu_percent".into(), st.cpu_percent);
            f.insert("steady.lost".into(), st.lost as f64);
            f.insert("steady.parks_per_msg".into(), st.parks_per_msg);
            f.insert("steady.spins_per_msg".into(), st.spins_per_msg);
        }
        let n = self.n(1_000_000);
        self.step(
            run,
            "syscalls: send with no parked consumer, under a seccomp filter",
        );
        let sent = queue::no_syscall_sends(&self.mgr, cpus, n)?;
        f.insert("nosys.sends".into(), sent as f64);
        f.insert(
            "nosys.syscalls".into(),
            if sent == n { 0.0 } else { f64::NAN },
        );
        Ok(())
    }
}

fn human_size(n: usize) -> String {
    if n >= 1 << 20 {
        format!("{} MiB", n >> 20)
    } else if n >= 1 << 10 {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} B")
    }
}

/// One performance target: a figure, its floor and the ratio shmq aims for.
#[derive(Debug, serde::Serialize)]
struct Target {
    figure: &'static str,
    shmq: f64,
    floor_name: &'static str,
    floor: f64,
    ratio: f64,
    target: &'static str,
    pass: bool,
}

struct Summary {
    median: Figures,
    runs: usize,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| !x.is_nan());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

impl Summary {
    fn new(runs: &[Figures]) -> Summary {
        let mut median_of = Figures::new();
        if let Some(first) = runs.first() {
            for k in first.keys() {
                let vals = runs.iter().filter_map(|r| r.get(k).copied()).collect();
                median_of.insert(k.clone(), median(vals));
            }
        }
        Summary {
            median: median_of,
            runs: runs.len(),
        }
    }

    fn get(&self, k: &str) -> Option<f64> {
        self.median.get(k).copied()
    }

    fn setup(&self, args: &BenchArgs, placement: &str) -> serde_json::Value {
        serde_json::json!({
            "runs": self.runs,
            "latency_size": args.size,
            "placement": placement,
            "scale": args.scale,
            "wakeup": wakeup_path(),
        })
    }

    fn targets(&self) -> Vec<Target> {
        let mut t = Vec::new();
        let mut add = |figure,
                       shmq: Option<f64>,
                       floor_name,
                       floor: Option<f64>,
                       ratio: Option<f64>,
                       target,
                       le: Option<f64>,
                       ge: Option<f64>| {
            if let (Some(shmq), Some(floor), Some(ratio)) = (shmq, floor, ratio) {
                let pass = le.is_none_or(|b| ratio <= b) && ge.is_none_or(|b| ratio >= b);
                t.push(Target {
                    figure,
                    shmq,
                    floor_name,
                    floor,
                    ratio,
                    target,
                    pass,
                });
            }
        };
        add(
            "round trip p50, busy-poll (ns)",
            self.get("lat.busy.p50"),
            "raw cache-line ping-pong p50",
            self.get("lat.raw.p50"),
            self.get("ratio.busy_p50"),
            "<= 1.5x",
            Some(1.5),
            None,
        );
        add(
            "round trip p99.9, busy-poll (ns)",
            self.get("lat.busy.p999"),
            "raw cache-line ping-pong p99.9",
            self.get("lat.raw.p999"),
            self.get("ratio.busy_p999"),
            "<= 3x",
            Some(3.0),
            None,
        );
        add(
            "throughput, 64 B, send (msg/s)",
            self.get("tput.single.msgs_per_sec"),
            "minimal SPSC ring",
            self.get("tput.spsc.msgs_per_sec"),
            self.get("ratio.single"),
            ">= 0.5x",
            None,
            Some(0.5),
        );
        add(
            "throughput, 64 B, send_batch (msg/s)",
            self.get("tput.batch.msgs_per_sec"),
            "minimal SPSC ring",
            self.get("tput.spsc.msgs_per_sec"),
            self.get("ratio.batch"),
            ">= 0.8x",
            None,
            Some(0.8),
        );
        let m = 1usize << 20;
        add(
            "1 MiB messages, copy path (GB/s)",
            self.get(&format!("bw.{m}.copy")),
            "single-thread memcpy",
            self.get(&format!("bw.{m}.memcpy")),
            self.get(&format!("ratio.bw.{m}.copy")),
            ">= 0.5x",
            None,
            Some(0.5),
        );
        add(
            "parked round trip p50 (ns)",
            self.get("lat.park.p50"),
            "pipe round trip p50",
            self.get("lat.pipe.p50"),
            self.get("ratio.park_p50"),
            "<= 0.5x",
            Some(0.5),
            None,
        );
        for (figure, key, bound, target) in [
            (
                "steady 100k msg/s p99, default (ns)",
                "lat.steady.p99",
                10_000.0,
                "<= 10 us",
            ),
            (
                "steady 100k msg/s p99.9, default (ns)",
                "lat.steady.p999",
                50_000.0,
                "<= 50 us",
            ),
        ] {
            if let Some(v) = self.get(key) {
                t.push(Target {
                    figure,
                    shmq: v,
                    floor_name: "absolute bound",
                    floor: bound,
                    ratio: v / bound,
                    target,
                    pass: v <= bound,
                });
            }
        }
        if let (Some(sys), Some(sends)) = (self.get("nosys.syscalls"), self.get("nosys.sends")) {
            t.push(Target {
                figure: "syscalls per send, no parked consumer",
                shmq: sys,
                floor_name: "sends under a kill-on-syscall seccomp filter",
                floor: sends,
                ratio: sys,
                target: "0",
                pass: sys == 0.0,
            });
        }
        t
    }

    fn table(&self, args: &BenchArgs, placement: &str) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let g = |k: &str| self.get(k);
        let _ = writeln!(
            s,
            "shmq bench: two processes, {placement}; {} run(s), median of each figure",
            self.runs
        );
        let _ = writeln!(s, "wake-up path: {}\n", wakeup_path());
        if g("lat.raw.p50").is_some() {
            let _ = writeln!(s, "LATENCY: round trip, {} B (ns)          p50      p90      p99    p99.9      max   ratio", args.size);
            let row = |s: &mut String, name: &str, key: &str, ratio: String| {
                let v = |k: &str| g(&format!("lat.{key}.{k}")).unwrap_or(f64::NAN);
                let _ = writeln!(
                    s,
                    "  {name:<36}{:>8.0} {:>8.0} {:>8.0} {:>8.0} {:>8.0}   {ratio}",
                    v("p50"),
                    v("p90"),
                    v("p99"),
                    v("p999"),
                    v("max")
                );
            };
            row(
                &mut s,
                "raw cache-line ping-pong (floor)",
                "raw",
                String::new(),
            );
            row(
                &mut s,
                "shmq busy-poll",
                "busy",
                format!(
                    "{:.2}x p50, {:.2}x p99.9 of raw",
                    g("ratio.busy_p50").unwrap_or(f64::NAN),
                    g("ratio.busy_p999").unwrap_or(f64::NAN)
                ),
            );
            row(&mut s, "pipe ping-pong (floor)", "pipe", String::new());
            row(
                &mut s,
                "Unix socket ping-pong (floor)",
                "unix",
                String::new(),
            );
            row(
                &mut s,
                "shmq parked (futex wake)",
                "park",
                format!(
                    "{:.2}x p50 of pipe",
                    g("ratio.park_p50").unwrap_or(f64::NAN)
                ),
            );
            row(
                &mut s,
                "shmq default strategy (adaptive)",
                "backoff",
                String::new(),
            );
            if g("lat.async.p50").is_some() {
                row(
                    &mut s,
                    "shmq async round trip (tokio)",
                    "async",
                    format!(
                        "{:.2}x p50 of parked, {:.2}x of busy-poll",
                        g("ratio.async_park_p50").unwrap_or(f64::NAN),
                        g("ratio.async_busy_p50").unwrap_or(f64::NAN)
                    ),
                );
            }
            s.push('\n');
        }
        if g("lat.steady.p50").is_some() {
            let _ = writeln!(
                s,
                "STEADY RATE: {:.0} msg/s, 64 B, one-way (ns)     p50      p90      p99    p99.9      max   consumer CPU",
                g("steady.rate").unwrap_or(f64::NAN)
            );
            for (name, key) in [
                ("busy-poll, same stream (floor)", "steady_busy"),
                ("steady rate, default strategy", "steady"),
            ] {
                let v = |k: &str| g(&format!("lat.{key}.{k}")).unwrap_or(f64::NAN);
                let _ = writeln!(
                    s,
                    "  {:<36}{:>8.0} {:>8.0} {:>8.0} {:>8.0} {:>8.0}   {:.0} % of a core",
                    name,
                    v("p50"),
                    v("p90"),
                    v("p99"),
                    v("p999"),
                    v("max"),
                    g(&format!("{key}.cpu_percent")).unwrap_or(f64::NAN)
                );
            }
            let _ = writeln!(
                s,
                "  {:.0} messages, lost {:.0}; the consumer's wait per message: {:.2} parks, {:.0} spin rounds\n",
                g("steady.messages").unwrap_or(f64::NAN),
                g("steady.lost").unwrap_or(f64::NAN),
                g("steady.parks_per_msg").unwrap_or(f64::NAN),
                g("steady.spins_per_msg").unwrap_or(f64::NAN)
            );
        }
        if g("tput.spsc.msgs_per_sec").is_some() {
            let _ = writeln!(s, "THROUGHPUT: 64 B, producer process -> consumer process   msg/s      GB/s    lost  corrupt   ratio");
            for (name, key, ratio) in [
                ("minimal SPSC ring (floor)", "spsc", None),
                ("shmq send (overwrite topic)", "single", g("ratio.single")),
                ("shmq send_batch(64)", "batch", g("ratio.batch")),
            ] {
                let v = |k: &str| g(&format!("tput.{key}.{k}")).unwrap_or(f64::NAN);
                let _ = writeln!(
                    s,
                    "  {name:<53}{:>9.2}M {:>8.2} {:>7.0} {:>8.0}   {}",
                    v("msgs_per_sec") / 1e6,
                    v("gb_per_sec"),
                    v("lost"),
                    v("corrupt"),
                    ratio.map_or(String::new(), |r| format!("{r:.2}x of SPSC"))
                );
            }
            let lost = g("tput.single.lost").unwrap_or(f64::NAN);
            let _ = writeln!(
                s,
                "  one consumer (poll_into_batch) behind one producer's send on an overwrite topic: {}",
                if lost == 0.0 {
                    "kept up, 0 records lost".to_string()
                } else {
                    format!(
                        "fell behind, lost {lost:.0} records (its longest pause between two polls: {:.0} us)",
                        g("tput.single.stall_us").unwrap_or(f64::NAN)
                    )
                }
            );
            let _ = writeln!(
                s,
                "  FUTEX_WAKE calls during {:.0} streamed sends: {:.0}\n",
                g("tput.sends").unwrap_or(f64::NAN),
                g("tput.wake_syscalls").unwrap_or(f64::NAN)
            );
        }
        if g("bw.4096.memcpy").is_some() {
            let _ = writeln!(s, "BANDWIDTH: GB/s (ratio to memcpy)               4 KiB            64 KiB             1 MiB");
            for (name, key) in [
                ("memcpy, one thread (floor)", "memcpy"),
                ("shmq copy (send + poll_into)", "copy"),
                ("shmq zero-copy read (send + poll_with)", "zerocopy"),
            ] {
                let _ = write!(s, "  {name:<40}");
                for size in [4096usize, 65536, 1 << 20] {
                    let v = g(&format!("bw.{size}.{key}")).unwrap_or(f64::NAN);
                    match g(&format!("ratio.bw.{size}.{key}")) {
                        Some(r) => {
                            let _ = write!(s, "{:>10.2} ({r:.2}x)", v);
                        }
                        None => {
                            let _ = write!(s, "{:>10.2}        ", v);
                        }
                    }
                }
                s.push('\n');
            }
            let lost: f64 = [4096usize, 65536, 1 << 20]
                .iter()
                .filter_map(|z| g(&format!("bw.{z}.lost")))
                .sum();
            let corrupt: f64 = [4096usize, 65536, 1 << 20]
                .iter()
                .filter_map(|z| g(&format!("bw.{z}.corrupt")))
                .sum();
            let _ = writeln!(s, "  lost {lost:.0}, corrupt {corrupt:.0} (the zero-copy reader checks each message's sequence tags in place)\n");
        }
        let _ = writeln!(
            s,
            "SYSCALLS: {:.0} sends with no parked consumer under a kill-on-any-syscall seccomp filter: {} syscalls\n",
            g("nosys.sends").unwrap_or(f64::NAN),
            g("nosys.syscalls").map_or("?".to_string(), |v| format!("{v:.0}"))
        );
        let _ = writeln!(s, "TARGETS (shmq's goal for each figure)      shmq          floor   ratio  target    result");
        for t in self.targets() {
            let _ = writeln!(
                s,
                "  {:<38}{:>12} {:>12}  {:>6.2}  {:<8}  {}",
                t.figure,
                fmt_num(t.shmq),
                fmt_num(t.floor),
                t.ratio,
                t.target,
                if t.pass { "PASS" } else { "MISS" }
            );
        }
        s
    }
}

fn fmt_num(v: f64) -> String {
    if v.is_nan() {
        "?".into()
    } else if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        args: BenchArgs,
    }

    #[test]
    fn the_report_speaks_to_its_user() {
        let args = Wrap::parse_from(["bench"]).args;
        let mut f = Figures::new();
        for k in ["lat.busy.p50", "lat.raw.p50", "ratio.busy_p50"] {
            f.insert(k.to_string(), 1.0);
        }
        let text = Summary::new(&[f]).table(&args, "cpus 0 and 1");
        assert!(text.contains("TARGETS"), "{text}");
        assert!(!text.to_lowercase().contains("issue"), "{text}");
    }
}
