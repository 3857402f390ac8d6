//! `shmq consume`: print a topic's messages as a consumer group.
//!
//! `--format json` prints JSON lines, one per message, with stable fields:
//!
//! ```text
//! {"partition":0,"offset":41,"timestamp_ns":1714560000123456789,
//!  "timestamp":"2024-05-01T10:40:00.123456789Z",
//!  "key":null,"key_encoding":null,
//!  "value":"hello","value_encoding":"utf8",
//!  "headers":[{"name":"trace-id","value":"4bf9","encoding":"utf8"}]}
//! ```
//!
//! `key`/`value` are the bytes as a UTF-8 string when they are valid UTF-8
//! (`*_encoding: "utf8"`), else standard base64 (`*_encoding: "base64"`);
//! each header's value likewise (`encoding`). `headers` lists the record's
//! headers in the order they were sent (a name may repeat), `[]` if none.
//! Loss (an overwrite topic lapping this reader) and skipped malformed
//! records are reported on stderr.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde_json::json;
use shmq::{Consumer, Polled, Record, SeekPolicy, TopicManager};

use crate::error::{CliError, CliResult};
use crate::util::{encode_bytes, fmt_unix_ns};

/// Output format of `consume`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum ConsumeFormat {
    /// Each message's value followed by a newline.
    #[default]
    Raw,
    /// One JSON object per line (partition, offset, timestamp, key, value).
    Json,
}

/// Where to start reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StartAt(pub SeekPolicy);

fn parse_from(s: &str) -> Result<StartAt, String> {
    Ok(StartAt(match s {
        "earliest" => SeekPolicy::Earliest,
        "latest" => SeekPolicy::Latest,
        "committed" => SeekPolicy::Committed,
        n => SeekPolicy::Offset(n.parse().map_err(|_| {
            format!("invalid start {s:?}: use earliest, latest, committed or an offset number")
        })?),
    }))
}

/// Arguments of `shmq consume`.
#[derive(Debug, Args)]
#[command(after_help = "\
Without --follow, prints what is there and exits. With --follow, waits for
more like `tail -f` until interrupted (Ctrl-C), then commits (with --commit)
and exits 0. --commit stores the position after the printed messages, so the
next `consume --group` of the same group resumes there.

Without --commit nothing is registered: the reader holds no group entry and
never makes a backpressure writer wait.

Examples:
  shmq consume orders --from earliest --format json
  shmq consume orders --group billing --commit --max 100
  shmq consume orders --from latest --follow")]
pub struct ConsumeArgs {
    /// Topic name.
    pub topic: String,
    /// Consumer group (its committed offsets are shared by every process).
    /// Needed with --commit. Without --commit the command reads without
    /// joining anything (it takes no group-table entry and never holds a
    /// backpressure writer back); --group then only chooses where
    /// `--from committed` starts.
    #[arg(long)]
    pub group: Option<String>,
    /// Start at: earliest, latest, committed (the group's position; earliest
    /// if it never committed), or an offset number (on every partition).
    #[arg(long, value_name = "WHERE", default_value = "committed", value_parser = parse_from)]
    pub from: StartAt,
    /// Read only these partitions (repeatable).
    #[arg(long, value_name = "N")]
    pub partition: Vec<u32>,
    /// Stop after this many messages.
    #[arg(long, value_name = "N")]
    pub max: Option<u64>,
    /// Keep waiting for new messages until interrupted.
    #[arg(long)]
    pub follow: bool,
    /// Commit the group's position after printing.
    #[arg(long)]
    pub commit: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ConsumeFormat::Raw)]
    pub format: ConsumeFormat,
}

fn write_record(out: &mut impl Write, r: &Record, format: ConsumeFormat) -> std::io::Result<()> {
    match format {
        ConsumeFormat::Raw => {
            out.write_all(&r.value)?;
            out.write_all(b"\n")
        }
        ConsumeFormat::Json => {
            let (key, key_encoding) = match &r.key {
                Some(k) => {
                    let (s, e) = encode_bytes(k);
                    (Some(s), Some(e))
                }
                None => (None, None),
            };
            let (value, value_encoding) = encode_bytes(&r.value);
            let v = json!({
                "partition": r.partition,
                "offset": r.offset,
                "timestamp_ns": r.timestamp_ns,
                "timestamp": fmt_unix_ns(r.timestamp_ns),
                "key": key,
                "key_encoding": key_encoding,
                "value": value,
                "value_encoding": value_encoding,
                "headers": headers_json(r),
            });
            serde_json::to_writer(&mut *out, &v)?;
            out.write_all(b"\n")
        }
    }
}

fn headers_json(r: &Record) -> serde_json::Value {
    let list: Vec<_> = r
        .headers()
        .iter()
        .map(|(name, value)| {
            let (value, encoding) = encode_bytes(value);
            json!({ "name": name, "value": value, "encoding": encoding })
        })
        .collect();
    serde_json::Value::Array(list)
}

fn report_loss(p: &Polled) {
    for l in &p.lagged {
        eprintln!(
            "shmq: partition {}: {} overwritten before this consumer read {}; resumed at offset {}",
            l.partition,
            if l.missed == 1 {
                "1 message was".to_string()
            } else {
                format!("{} messages were", l.missed)
            },
            if l.missed == 1 { "it" } else { "them" },
            l.resumed_at
        );
    }
    if p.corrupt > 0 {
        eprintln!("shmq: skipped {} malformed records", p.corrupt);
    }
}

/// Run `shmq consume`.
pub fn run(ns: &str, args: ConsumeArgs) -> CliResult {
    let mgr = TopicManager::with_namespace(ns)?;
    let topic = mgr.open(&args.topic)?;
    // Only a committing consumer registers its group in shared memory: a
    // read-only look is a reader without a group, which takes no table
    // entry and never makes a backpressure writer wait for it.
    let mut consumer = match (&args.group, args.commit) {
        (Some(group), true) => Consumer::new(&topic, group)?,
        (None, true) => {
            return Err(CliError::usage(
                "--commit needs --group GROUP (the group whose position is stored)",
            ))
        }
        (_, false) => Consumer::reader(&topic)?,
    };
    if !args.partition.is_empty() {
        consumer.assign(&args.partition)?;
    }
    match (args.from.0, &args.group) {
        (SeekPolicy::Committed, Some(group)) if !args.commit => {
            // Read the group's committed offsets without joining it.
            for p in consumer.assignment() {
                if let Some(o) = topic.committed(group, p)? {
                    consumer.seek_partition(p, SeekPolicy::Offset(o))?;
                }
            }
        }
        (SeekPolicy::Committed, _) => {}
        (policy, _) => consumer.seek(policy)?,
    }

    let stop = Arc::new(AtomicBool::new(false));
    if args.follow {
        for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            // A second signal while we finish up exits at once.
            signal_hook::flag::register_conditional_shutdown(sig, 130, stop.clone())
                .and_then(|_| signal_hook::flag::register(sig, stop.clone()))
                .map_err(|e| CliError::failed(format!("cannot handle signals: {e}")))?;
        }
    }

    // Without --follow, read what was there when we started: stop once every
    // partition reached its write offset of now, even if a producer goes on.
    let assigned = consumer.assignment();
    let mut ends = Vec::with_capacity(assigned.len());
    for &p in &assigned {
        ends.push((p, topic.write_offset(p)?));
    }
    let caught_up = |c: &Consumer| {
        ends.iter()
            .all(|&(p, end)| c.position(p).is_none_or(|pos| pos >= end))
    };

    let mut out = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout().lock());
    let mut remaining = args.max.unwrap_or(u64::MAX);
    while remaining > 0 && !stop.load(Ordering::Relaxed) {
        if !args.follow && caught_up(&consumer) {
            break;
        }
        let batch = remaining.min(1024) as usize;
        let polled = if args.follow {
            consumer.poll_timeout(batch, Duration::from_millis(200))?
        } else {
            consumer.poll(batch)?
        };
        report_loss(&polled);
        if polled.is_empty() {
            if args.follow {
                continue;
            }
            break;
        }
        remaining -= polled.records.len() as u64;
        for r in &polled.records {
            write_record(&mut out, r, args.format)?;
        }
        out.flush()?;
        if args.commit {
            consumer.commit()?;
        }
    }
    out.flush()?;
    if args.commit {
        consumer.commit()?;
    }
    Ok(())
}
