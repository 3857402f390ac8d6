//! `shmq list`: the topics of a namespace.
//!
//! JSON (`--format json`), one document; field names are stable:
//!
//! ```text
//! { "namespace",
//!   "topics": [ { "topic", "state" ("ok" | "reclaimed" | "error"),
//!                 "error" (only when state is "error"),
//!                 "partitions", "slots", "slot_size", "overflow", "retention_ms",
//!                 "lease_expiry_ns", "lease_left_ms", "messages",
//!                 "writers": { "live", "dead", "none" }, "groups",
//!                 "storage" ("shm" | "file"), "data_dir" (durable topics),
//!                 "sync" ("none" | "every-batch" | "interval <dur>") } ] }
//! ```
//!
//! A topic that cannot be opened is listed with its state and error rather
//! than failing the whole listing. Lease figures are read before attaching
//! (see `info`).

use std::io::Write;

use clap::Args;
use serde_json::{json, Value};
use shmq::protocol::layout::RECLAIMED;
use shmq::{Error, RenewalPolicy, TopicManager};

use crate::cli::Format;
use crate::cmd::create::overflow_name;
use crate::cmd::info::{fmt_left, left_ms};
use crate::error::CliResult;
use crate::util::{fmt_duration, table, unix_ns};

/// Arguments of `shmq list`.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  shmq list
  shmq list --namespace prod --format json | jq -r '.topics[].topic'")]
pub struct ListArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

struct Row {
    json: Value,
    cells: Vec<String>,
}

fn describe(mgr: &TopicManager, name: &str) -> Row {
    let now = unix_ns();
    let opened = mgr.open(name).and_then(|t| t.stats().map(|s| (t, s)));
    let (topic, stats) = match opened {
        Ok(x) => x,
        Err(Error::LeaseExpired { .. }) => {
            return Row {
                json: json!({ "topic": name, "state": "reclaimed" }),
                cells: vec![name.into(), "reclaimed".into()],
            }
        }
        Err(e) => {
            return Row {
                json: json!({ "topic": name, "state": "error", "error": e.to_string() }),
                cells: vec![name.into(), format!("error: {e}")],
            }
        }
    };
    let c = topic.config();
    let (mut live, mut dead, mut none) = (0u32, 0u32, 0u32);
    for p in &stats.partitions {
        match p.writer {
            Some(w) if w.alive => live += 1,
            Some(_) => dead += 1,
            None => none += 1,
        }
    }
    let messages: u64 = stats.partitions.iter().map(|p| p.write_offset).sum();
    let expiry = Some(stats.lease_expiry_ns);
    let mut writers = format!("{live} live");
    if dead > 0 {
        writers.push_str(&format!(", {dead} dead"));
    }
    if none > 0 {
        writers.push_str(&format!(", {none} free"));
    }
    Row {
        json: json!({
            "topic": name,
            "state": "ok",
            "partitions": stats.partitions.len(),
            "slots": c.slots,
            "slot_size": c.slot_size,
            "overflow": overflow_name(c.overflow),
            "retention_ms": c.retention.as_millis() as u64,
            "lease_expiry_ns": expiry.filter(|&e| e != RECLAIMED),
            "lease_left_ms": left_ms(expiry, now),
            "messages": messages,
            "writers": { "live": live, "dead": dead, "none": none },
            "groups": stats.groups.len(),
            "storage": if c.storage.is_file() { "file" } else { "shm" },
            "data_dir": c.storage.dir().map(|d| d.display().to_string()),
            "sync": c.sync.to_string(),
        }),
        cells: vec![
            name.into(),
            "ok".into(),
            stats.partitions.len().to_string(),
            format!("{}x{}B", c.slots, c.slot_size),
            overflow_name(c.overflow).into(),
            messages.to_string(),
            format!("{} / {}", fmt_left(expiry, now), fmt_duration(c.retention)),
            writers,
            stats.groups.len().to_string(),
            crate::cmd::info::storage_text(c),
        ],
    }
}

/// Run `shmq list`.
pub fn run(ns: &str, args: ListArgs) -> CliResult {
    // Short-lived: no renewal thread (attaching still renews once; see the
    // module docs).
    let mgr = TopicManager::with_namespace(ns)?.with_renewal(RenewalPolicy::Manual);
    let mut names = mgr.list()?;
    names.sort();
    let rows: Vec<Row> = names.iter().map(|n| describe(&mgr, n)).collect();
    let mut out = std::io::stdout().lock();
    match args.format {
        Format::Json => {
            let v = json!({
                "namespace": ns,
                "topics": rows.into_iter().map(|r| r.json).collect::<Vec<_>>(),
            });
            writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(&v).unwrap_or_default()
            )?;
        }
        Format::Table if rows.is_empty() => {
            writeln!(out, "no topics in namespace {ns:?}")?;
        }
        Format::Table => {
            let cells: Vec<Vec<String>> = rows.into_iter().map(|r| r.cells).collect();
            out.write_all(
                table(
                    &[
                        "TOPIC",
                        "STATE",
                        "PARTITIONS",
                        "SLOTS",
                        "OVERFLOW",
                        "MESSAGES",
                        "LEASE_LEFT / RETENTION",
                        "WRITERS",
                        "GROUPS",
                        "STORAGE",
                    ],
                    &cells,
                )
                .as_bytes(),
            )?;
        }
    }
    Ok(())
}
