//! Plumbing shared by every bench case: child processes (this binary
//! re-executed as `shmq bench --child ROLE ...`), CPU pinning, scratch
//! shared-memory regions, latency statistics and progress messages.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use shmq::protocol::os::{self, Mapping};

use crate::error::{CliError, CliResult};

/// CPUs the parent and the child run on, if the process may use two.
#[derive(Clone, Copy, Debug)]
pub struct Cpus {
    /// The parent's CPU.
    pub parent: Option<usize>,
    /// The child's CPU.
    pub child: Option<usize>,
}

impl Cpus {
    /// Pin this process to the first allowed CPU and reserve the second for
    /// children. With fewer than two CPUs (or `--no-pin`) nothing is pinned.
    pub fn setup(pin: bool) -> Cpus {
        let cpus = os::allowed_cpus();
        if !pin || cpus.len() < 2 {
            return Cpus {
                parent: None,
                child: None,
            };
        }
        let parent = cpus[0];
        let child = cpus[1];
        match os::pin_to_cpu(parent) {
            Ok(()) => Cpus {
                parent: Some(parent),
                child: Some(child),
            },
            Err(_) => Cpus {
                parent: None,
                child: None,
            },
        }
    }

    /// How the processes are placed, for the report.
    pub fn describe(&self) -> String {
        match (self.parent, self.child) {
            (Some(p), Some(c)) => format!("parent pinned to CPU {p}, child to CPU {c}"),
            _ => "not pinned (fewer than two CPUs allowed, or --no-pin)".to_string(),
        }
    }
}

/// A child process of the bench, killed if still running when dropped.
pub struct Kid {
    child: Child,
    /// The child's stdin (the parent's commands or a data pipe).
    pub stdin: Option<ChildStdin>,
    /// The child's stdout (its reports or a data pipe).
    pub stdout: Option<BufReader<ChildStdout>>,
}

impl Kid {
    /// Start `shmq --namespace NS bench --child ROLE ARGS...`, pinned to `cpu`.
    pub fn spawn(ns: &str, role: &str, cpu: Option<usize>, args: &[String]) -> CliResult<Kid> {
        let exe = std::env::current_exe()?;
        let mut cmd = Command::new(exe);
        cmd.args(["--namespace", ns, "bench", "--child", role]);
        if let Some(cpu) = cpu {
            cmd.args(["--child-cpu", &cpu.to_string()]);
        }
        cmd.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn()?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().map(BufReader::new);
        Ok(Kid {
            child,
            stdin,
            stdout,
        })
    }

    /// Read the child's next report line; it must start with `key`. Returns
    /// the rest, parsed as `name=value` pairs.
    pub fn expect(&mut self, key: &str) -> CliResult<Vec<(String, String)>> {
        let out = self
            .stdout
            .as_mut()
            .ok_or_else(|| CliError::failed("child stdout already taken"))?;
        let mut line = String::new();
        if out.read_line(&mut line)? == 0 {
            let status = self.child.wait()?;
            return Err(CliError::failed(format!(
                "bench child exited ({status}) before saying {key:?}"
            )));
        }
        let line = line.trim_end();
        let rest = line.strip_prefix(key).ok_or_else(|| {
            CliError::failed(format!("bench child said {line:?}, expected {key:?}"))
        })?;
        Ok(rest
            .split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect())
    }

    /// Wait for the child to exit (at most 60 s) and require success.
    pub fn finish(mut self) -> CliResult {
        drop(self.stdin.take());
        let status = self.wait_timeout(Duration::from_secs(60))?;
        if !status.success() {
            return Err(CliError::failed(format!("bench child failed: {status}")));
        }
        Ok(())
    }

    /// Wait for the child to exit, whatever its status (at most `timeout`).
    pub fn wait_timeout(&mut self, timeout: Duration) -> CliResult<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                return Err(CliError::failed("bench child did not exit in time"));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Drop for Kid {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Look a `name=value` pair up in a child's report.
pub fn field<T: std::str::FromStr>(kv: &[(String, String)], name: &str) -> CliResult<T> {
    kv.iter()
        .find(|(k, _)| k == name)
        .and_then(|(_, v)| v.parse().ok())
        .ok_or_else(|| CliError::failed(format!("bench child report lacks {name}")))
}

/// In a child: tell the parent one line.
pub fn report(line: &str) -> CliResult {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

/// In a child: wait for the parent's "go" (one line on stdin).
pub fn wait_go() -> CliResult {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(())
}

/// In the parent: tell the child to start.
pub fn go(kid: &mut Kid) -> CliResult {
    let stdin = kid
        .stdin
        .as_mut()
        .ok_or_else(|| CliError::failed("child stdin already taken"))?;
    stdin.write_all(b"go\n")?;
    stdin.flush()?;
    Ok(())
}

/// A scratch shared-memory object for the floors (not a shmq topic), named
/// `shmq.<ns>._bench.<what>`, unlinked on drop.
pub struct Scratch {
    name: String,
    map: Mapping,
    owner: bool,
}

impl Scratch {
    /// Name of the scratch object `what` in namespace `ns`.
    pub fn name(ns: &str, what: &str) -> String {
        format!("shmq.{ns}._bench.{what}")
    }

    /// Create it (`len` bytes, zeroed, mode 0600).
    pub fn create(ns: &str, what: &str, len: usize) -> CliResult<Scratch> {
        let name = Self::name(ns, what);
        let fd = os::shm_create(&name, len, 0o600).map_err(|e| CliError::failed(e.to_string()))?;
        let map = fd.map(len).map_err(|e| {
            let _ = os::shm_remove(&name);
            CliError::failed(e.to_string())
        })?;
        Ok(Scratch {
            name,
            map,
            owner: true,
        })
    }

    /// Open one the parent created.
    pub fn open(name: &str) -> CliResult<Scratch> {
        let fd = os::shm_open_existing(name).map_err(|e| CliError::failed(e.to_string()))?;
        let len = fd.stat().map_err(|e| CliError::failed(e.to_string()))?.size as usize;
        let map = fd.map(len).map_err(|e| CliError::failed(e.to_string()))?;
        Ok(Scratch {
            name: name.to_string(),
            map,
            owner: false,
        })
    }

    /// Its name.
    pub fn region_name(&self) -> &str {
        &self.name
    }

    /// The object as 64-bit atomic words.
    pub fn words(&self) -> &[std::sync::atomic::AtomicU64] {
        self.map.as_atomic_u64s()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.owner {
            let _ = os::shm_remove(&self.name);
        }
    }
}

/// Latency percentiles of one series of round trips, in nanoseconds.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Latency {
    /// Round trips measured.
    pub samples: usize,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Slowest.
    pub max: f64,
    /// The sorted samples thinned to at most a few hundred points along the
    /// percentile axis, for the plot: `(percentile 0..100, ns)`.
    #[serde(skip)]
    pub curve: Vec<(f64, f64)>,
}

impl Latency {
    /// Percentiles of `samples` (ns); sorts them.
    pub fn from_samples(samples: &mut [u64]) -> Latency {
        samples.sort_unstable();
        let n = samples.len();
        if n == 0 {
            return Latency::default();
        }
        let at = |q: f64| samples[((q * n as f64) as usize).min(n - 1)] as f64;
        // Points spaced evenly in "nines" (0, 90, 99, 99.9, ...).
        let curve = (0..=(40.0 * (n as f64).log10()) as usize)
            .map(|k| {
                let q = 1.0 - 10f64.powf(-(k as f64) / 40.0);
                (q * 100.0, at(q))
            })
            .chain(std::iter::once((100.0, samples[n - 1] as f64)))
            .collect();
        Latency {
            samples: n,
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            p999: at(0.999),
            max: samples[n - 1] as f64,
            curve,
        }
    }
}

/// Progress on stderr, for a run longer than a second: one line per case.
pub struct Progress {
    enabled: bool,
    start: Instant,
}

impl Progress {
    /// Progress reporting (silent when `enabled` is false).
    pub fn new(enabled: bool) -> Progress {
        Progress {
            enabled,
            start: Instant::now(),
        }
    }

    /// Say what starts now.
    pub fn step(&self, what: &str) {
        if self.enabled {
            eprintln!("[{:6.1}s] {what}", self.start.elapsed().as_secs_f64());
        }
    }
}

/// Read exactly `buf.len()` bytes or fail.
pub fn read_exact(r: &mut impl Read, buf: &mut [u8]) -> CliResult {
    r.read_exact(buf)?;
    Ok(())
}
