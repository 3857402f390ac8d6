//! `shmq top`: a live terminal view of a namespace (or all), refreshed
//! every second: messages per second in and out of each topic, the lag of
//! each consumer group, a sparkline of the rate, writers and lease time
//! left. Keys sort, filter and drill into a topic's partitions and groups;
//! `q` or Ctrl-C exits and restores the terminal (also on SIGTERM, SIGHUP
//! and on a panic). Like `shmq metrics` it only observes (see
//! [`super::observe`]). Log lines (`RUST_LOG`) are dropped while the view
//! owns the terminal.
//!
//! `--once` prints one view for scripts: `--format json` one document,
//! otherwise the 80×24 screen as text. Rates need two looks: `--once`
//! takes them `--interval` apart.
//!
//! JSON (`--once --format json`), field names stable:
//!
//! ```text
//! { "namespaces": [..], "interval_ms",
//!   "topics": [ { "namespace", "topic", "state" ("ok" | "reclaimed" | "error"),
//!                 "error" (null unless state is "error"), "partitions",
//!                 "messages", "in_per_sec", "out_per_sec", "max_lag",
//!                 "writers": { "live", "dead", "none" }, "lease_left_ms",
//!                 "partition_list": [ { "partition", "write_offset", "in_per_sec",
//!                                       "depth", "writer_pid", "writer_alive",
//!                                       "writer_epoch", "lease_left_ms" } ],
//!                 "groups": [ { "name", "members", "live_members", "lag",
//!                               "partition_lag": [..], "out_per_sec" } ] } ] }
//! ```

pub mod model;
pub mod ui;

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use crossterm::event::{self, Event};
use ratatui::backend::TestBackend;
use ratatui::Terminal;
use serde_json::json;

use super::observe::Observer;
use crate::cli::Format;
use crate::error::{CliError, CliResult};
use crate::util::parse_duration;
use model::Model;
use ui::App;

/// Arguments of `shmq top`.
#[derive(Debug, Args)]
#[command(after_help = "\
Keys: up/down (j/k) select, enter drill into a topic, esc back, s sort
(in/s, lag, name), / filter by namespace/topic substring, q or ctrl-c quit.

Examples:
  shmq top
  shmq top --all-namespaces
  shmq top --once --format json | jq '.topics[] | {topic, in_per_sec, max_lag}'")]
pub struct TopArgs {
    /// Observe every namespace found in /dev/shm, not just --namespace.
    #[arg(long)]
    pub all_namespaces: bool,
    /// Time between refreshes (and between the two looks of --once).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub interval: Duration,
    /// Print one view and exit (no terminal needed).
    #[arg(long)]
    pub once: bool,
    /// Output of --once.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// Screen size of `--once` as text.
pub const ONCE_SIZE: (u16, u16) = (80, 24);

/// Run `shmq top`.
pub fn run(ns: &str, args: TopArgs) -> CliResult {
    if args.interval.is_zero() {
        return Err(CliError::usage("--interval must be more than 0"));
    }
    let mut obs = Observer::new(ns, args.all_namespaces);
    let mut model = Model::default();
    model.update(obs.snapshot()?);
    if args.once {
        std::thread::sleep(args.interval);
        model.update(obs.snapshot()?);
        return print_once(model, &args);
    }
    if args.format == Format::Json {
        return Err(CliError::usage(
            "--format json needs --once (the live view is for a terminal)",
        ));
    }
    interactive(&mut obs, model, args.interval)
}

fn print_once(model: Model, args: &TopArgs) -> CliResult {
    let mut out = std::io::stdout().lock();
    match args.format {
        Format::Json => {
            let v = json!({
                "namespaces": model.namespaces,
                "interval_ms": args.interval.as_millis() as u64,
                "topics": model.rows.iter().map(|r| r.json()).collect::<Vec<_>>(),
            });
            writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(&v).unwrap_or_default()
            )?;
        }
        Format::Table => {
            let app = App::new(model);
            out.write_all(screen_text(&app, ONCE_SIZE.0, ONCE_SIZE.1).as_bytes())?;
        }
    }
    Ok(())
}

/// The screen `app` draws on a `w`×`h` terminal, as lines of text.
pub fn screen_text(app: &App, w: u16, h: u16) -> String {
    let Ok(mut term) = Terminal::new(TestBackend::new(w, h)) else {
        return String::new();
    };
    if term.draw(|f| app.draw(f)).is_err() {
        return String::new();
    }
    let buf = term.backend().buffer();
    let mut s = String::new();
    for y in 0..h {
        let mut line = String::new();
        for x in 0..w {
            line.push_str(buf[(x, y)].symbol());
        }
        s.push_str(line.trim_end());
        s.push('\n');
    }
    s
}

/// Puts the terminal back (raw mode off, main screen, cursor shown) and
/// lets log lines through again when dropped, whatever way `interactive`
/// leaves.
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        ratatui::restore();
        crate::logging::mute(false);
    }
}

fn interactive(obs: &mut Observer, model: Model, interval: Duration) -> CliResult {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ] {
        signal_hook::flag::register(sig, stop.clone())
            .map_err(|e| CliError::failed(format!("cannot install signal handler: {e}")))?;
    }
    // try_init also installs a panic hook that restores the terminal.
    let mut term = ratatui::try_init()
        .map_err(|e| CliError::failed(format!("cannot set up the terminal: {e}")))?;
    let _restore = Restore;
    crate::logging::mute(true);
    let mut app = App::new(model);
    let mut next = Instant::now() + interval;
    loop {
        term.draw(|f| app.draw(f))?;
        let wait = next
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(100));
        if event::poll(wait)? {
            if let Event::Key(k) = event::read()? {
                app.on_key(k);
            }
        }
        if app.quit || stop.load(Ordering::Relaxed) {
            break;
        }
        if Instant::now() >= next {
            match obs.snapshot() {
                Ok(s) => {
                    app.model.update(s);
                    app.error = None;
                }
                Err(e) => app.error = Some(e.to_string()),
            }
            next += interval;
            // Fell behind (a suspended process): do not catch up in a burst.
            if next < Instant::now() {
                next = Instant::now() + interval;
            }
        }
    }
    Ok(())
}
