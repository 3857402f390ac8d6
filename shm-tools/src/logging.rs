//! Structured logs: one `tracing` subscriber for the whole `shmq` process.
//!
//! The library (`shmq`) only emits events at its rare moments — a writer
//! takeover, a write refused by fencing or an expired lease, a reclaim, a
//! group member evicted, malformed records skipped — and never installs a
//! subscriber; this binary installs one here, on stderr.
//!
//! Quiet by default: only errors, of which the library emits none, so a
//! command prints exactly what it printed before. `RUST_LOG` picks levels
//! and targets in the usual `tracing-subscriber` syntax
//! (`RUST_LOG=info`, `RUST_LOG=shmq::producer=warn,shmq::cmd=info`: the
//! library's targets are `shmq::<module>`, this binary's `shmq::cmd::<verb>`), and
//! `--log-format json` (or `SHMQ_LOG_FORMAT=json`) writes one JSON object
//! per line instead of text.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;

/// While set, log lines are dropped (a full-screen view owns the terminal).
static MUTED: AtomicBool = AtomicBool::new(false);

/// Drop log lines while `muted` (e.g. while `shmq top` draws on the
/// terminal, where stderr lines would scribble over the screen).
pub fn mute(muted: bool) {
    MUTED.store(muted, Ordering::Relaxed);
}

fn writer() -> Box<dyn Write> {
    if MUTED.load(Ordering::Relaxed) {
        Box::new(std::io::sink())
    } else {
        Box::new(std::io::stderr())
    }
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (`timestamp`, `level`, `fields`, `target`).
    Json,
}

/// The filter when `RUST_LOG` is unset or invalid: errors only.
pub const DEFAULT_FILTER: &str = "error";

/// Install the process-wide subscriber (stderr). Call once, first thing in
/// `main`; a second call (or another subscriber already set) is ignored.
pub fn init(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_target(true);
    let _ = match format {
        LogFormat::Text => builder.with_ansi(false).try_init(),
        LogFormat::Json => builder.json().flatten_event(false).try_init(),
    };
}
