//! `shmq supervise`: the long-running supervisor.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use shmq::protocol::reclaim::ReapOptions;

use crate::cli::Format;
use crate::error::{CliError, CliResult};
use crate::util::parse_duration;

/// Arguments of `shmq supervise`.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  shmq supervise --interval 1s\n  shmq supervise --all-namespaces --format json"
)]
pub struct SuperviseArgs {
    /// Time between passes.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub interval: Duration,
    /// Reclaim only leases expired at least this long ago.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub grace: Duration,
    /// Also remove malformed files named like shmq regions.
    #[arg(long)]
    pub force: bool,
    /// Supervise every namespace found in /dev/shm, not just --namespace.
    #[arg(long)]
    pub all_namespaces: bool,
    /// Stop after this many passes (default: run until SIGINT/SIGTERM).
    #[arg(long)]
    pub passes: Option<u64>,
    /// Log format: one line per action, human or JSON lines.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// Run `shmq supervise`.
pub fn run(ns: &str, args: SuperviseArgs) -> CliResult {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone())
            .map_err(|e| CliError::failed(format!("cannot install signal handler: {e}")))?;
    }
    let opts = ReapOptions {
        grace: args.grace,
        dry_run: false,
        force: args.force,
    };
    let scope = if args.all_namespaces {
        "all namespaces".to_string()
    } else {
        format!("namespace {ns:?}")
    };
    eprintln!(
        "shmq supervise: watching {scope} every {:?} (grace {:?})",
        args.interval, args.grace
    );
    tracing::info!(scope = %scope, interval = ?args.interval, grace = ?args.grace, force = args.force, "supervisor started");
    let mut passes = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        // A failing pass (e.g. /dev/shm unreadable for a moment) is logged,
        // never fatal: the supervisor must outlive transient trouble.
        match super::reap::pass(ns, args.all_namespaces, opts) {
            Ok(reports) => {
                tracing::debug!(pass = passes + 1, namespaces = reports.len(), actions = reports.iter().map(|r| r.actions.len()).sum::<usize>(), took = ?started.elapsed(), "supervisor pass");
                for r in &reports {
                    for a in &r.actions {
                        let mut out = std::io::stdout().lock();
                        match args.format {
                            Format::Json => writeln!(
                                out,
                                "{}",
                                super::reap::action_json(&r.namespace, a, false)
                            )?,
                            Format::Table => writeln!(out, "{}: {a}", r.namespace)?,
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "supervisor pass failed");
                eprintln!("shmq supervise: pass failed: {e}")
            }
        }
        passes += 1;
        if args.passes.is_some_and(|n| passes >= n) {
            break;
        }
        // Sleep in small steps so a signal stops us promptly.
        while !stop.load(Ordering::Relaxed) && started.elapsed() < args.interval {
            std::thread::sleep(Duration::from_millis(20).min(args.interval));
        }
    }
    tracing::info!(passes, "supervisor stopped");
    eprintln!("shmq supervise: stopped after {passes} passes");
    Ok(())
}
