//! `shmq info`: one topic's partitions, writers and consumer groups.
//!
//! JSON (`--format json`), one document; field names are stable:
//!
//! ```text
//! { "namespace", "topic",
//!   "config": { "partitions", "slots", "slot_size", "overflow", "retention_ms",
//!               "mode" ("0600"), "dead_group_timeout_ms",
//!               "group_retention_ms" (0 = never), "max_groups", "max_members",
//!               "max_partitions",                  // "partitions": the count now
//!               "storage" ("shm" | "file"), "data_dir" (null for shm),
//!               "sync", "expire_files" },
//!   "lease_expiry_ns", "lease_left_ms",          // null once reclaimed
//!   "messages",                                  // sum of write offsets
//!   "partitions": [ { "partition", "write_offset", "depth",
//!                     "lease_expiry_ns", "lease_left_ms",
//!                     "writer": null | { "token", "pid", "epoch", "alive" },
//!                     "writer_epoch", "takeovers", "full_events" } ],
//!   "groups": [ { "name", "members", "live_members", "last_active_ns", "lag",
//!                 "partitions": [ { "partition", "committed" (null: never),
//!                                   "lag", "nacks", "dead_lettered" } ] } ] }
//! ```
//!
//! Lease figures are read *before* this command attaches: attaching renews
//! a topic's leases like any other user of it, so they show what the topic
//! had left, not the renewal this command caused.

use std::io::Write;
use std::time::Duration;

use clap::Args;
use serde_json::{json, Value};
use shmq::protocol::layout::RECLAIMED;
use shmq::{RenewalPolicy, Topic, TopicManager, TopicStats, WriterInfo};

use crate::cli::Format;
use crate::cmd::create::overflow_name;
use crate::error::CliResult;
use crate::util::{fmt_duration, fmt_duration_approx, plural, table, unix_ns};

/// Arguments of `shmq info`.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  shmq info orders
  shmq info orders --format json | jq '.groups[] | {name, lag}'")]
pub struct InfoArgs {
    /// Topic name.
    pub topic: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// Milliseconds until `expiry_ns` (0 once past), `None` if reclaimed/unknown.
pub fn left_ms(expiry_ns: Option<u64>, now_ns: u64) -> Option<u64> {
    match expiry_ns {
        Some(e) if e != RECLAIMED => Some(e.saturating_sub(now_ns) / 1_000_000),
        _ => None,
    }
}

/// Human rendering of [`left_ms`].
pub fn fmt_left(expiry_ns: Option<u64>, now_ns: u64) -> String {
    match expiry_ns {
        Some(RECLAIMED) => "reclaimed".into(),
        Some(e) if e <= now_ns => "expired".into(),
        Some(e) => fmt_duration_approx(Duration::from_nanos(e - now_ns)),
        None => "?".into(),
    }
}

/// JSON of a writer lease holder.
pub fn writer_json(w: &Option<WriterInfo>) -> Value {
    match w {
        None => Value::Null,
        Some(w) => json!({
            "token": format!("{:08x}", w.token),
            "pid": w.pid,
            "epoch": w.epoch,
            "alive": w.alive,
        }),
    }
}

fn writer_text(w: &Option<WriterInfo>) -> String {
    match w {
        None => "-".into(),
        Some(w) => {
            let pid = w.pid.map_or_else(|| "?".to_string(), |p| p.to_string());
            let state = if w.alive { "alive" } else { "dead" };
            format!("pid {pid}, epoch {}, {state}", w.epoch)
        }
    }
}

/// Everything `info` shows, as JSON.
pub fn info_json(ns: &str, topic: &Topic, stats: &TopicStats) -> Value {
    let c = topic.config();
    let now = unix_ns();
    let meta_expiry = Some(stats.lease_expiry_ns);
    let parts: Vec<Value> = stats
        .partitions
        .iter()
        .map(|p| {
            let exp = Some(p.lease_expiry_ns);
            json!({
                "partition": p.partition,
                "write_offset": p.write_offset,
                "depth": p.depth,
                "lease_expiry_ns": exp.filter(|&e| e != RECLAIMED),
                "lease_left_ms": left_ms(exp, now),
                "writer": writer_json(&p.writer),
                "writer_epoch": p.writer_epoch,
                "takeovers": p.takeovers,
                "full_events": p.full_events,
            })
        })
        .collect();
    let groups: Vec<Value> = stats
        .groups
        .iter()
        .map(|g| {
            json!({
                "name": g.name,
                "members": g.members,
                "live_members": g.live_members,
                "last_active_ns": g.last_active_ns,
                "lag": g.partitions.iter().map(|p| p.lag).sum::<u64>(),
                "partitions": g.partitions.iter().map(|p| json!({
                    "partition": p.partition,
                    "committed": p.committed,
                    "lag": p.lag,
                    "nacks": p.nacks,
                    "dead_lettered": p.dead_lettered,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "namespace": ns,
        "topic": topic.name(),
        "config": {
            "partitions": stats.partitions.len(),
            "slots": c.slots,
            "slot_size": c.slot_size,
            "overflow": overflow_name(c.overflow),
            "retention_ms": c.retention.as_millis() as u64,
            "mode": format!("{:04o}", c.mode),
            "dead_group_timeout_ms": c.dead_group_timeout.as_millis() as u64,
            "group_retention_ms": c.group_retention.as_millis() as u64,
            "max_groups": c.max_groups,
            "max_members": c.max_members,
            "max_partitions": c.max_partitions,
            "storage": if c.storage.is_file() { "file" } else { "shm" },
            "data_dir": c.storage.dir().map(|d| d.display().to_string()),
            "sync": c.sync.to_string(),
            "expire_files": c.storage.is_file() && c.expire_files,
        },
        "lease_expiry_ns": meta_expiry.filter(|&e| e != RECLAIMED),
        "lease_left_ms": left_ms(meta_expiry, now),
        "messages": stats.partitions.iter().map(|p| p.write_offset).sum::<u64>(),
        "partitions": parts,
        "groups": groups,
    })
}

/// Where a topic lives, for tables: `shm`, or `file:<dir>, sync <policy>`
/// (and whether the supervisor removes the files at expiry).
pub fn storage_text(c: &shmq::TopicConfig) -> String {
    match &c.storage {
        shmq::Storage::Shm => "shm".to_string(),
        shmq::Storage::File { dir } => format!(
            "file:{}, sync {}, {}",
            dir.display(),
            c.sync,
            if c.expire_files {
                "files removed at expiry"
            } else {
                "kept until deleted"
            }
        ),
    }
}

/// Run `shmq info`.
pub fn run(ns: &str, args: InfoArgs) -> CliResult {
    // Short-lived: no renewal thread (attaching still renews once; see the
    // module docs).
    let mgr = TopicManager::with_namespace(ns)?.with_renewal(RenewalPolicy::Manual);
    shmq::protocol::name::validate_topic(&args.topic)?;
    let topic = mgr.open(&args.topic)?;
    let stats = topic.stats()?;
    let mut out = std::io::stdout().lock();
    match args.format {
        Format::Json => {
            let v = info_json(ns, &topic, &stats);
            writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(&v).unwrap_or_default()
            )?;
        }
        Format::Table => {
            let c = topic.config();
            let now = unix_ns();
            writeln!(
                out,
                "topic {:?} (namespace {:?}): {} x {} of {}, {}, retention {}, mode {:04o}; lease left {}",
                topic.name(),
                ns,
                plural(stats.partitions.len() as u64, "partition"),
                plural(c.slots, "slot"),
                plural(c.slot_size, "byte"),
                overflow_name(c.overflow),
                fmt_duration(c.retention),
                c.mode,
                fmt_left(Some(stats.lease_expiry_ns), now),
            )?;
            writeln!(out, "storage: {}", storage_text(c))?;
            writeln!(out)?;
            let rows: Vec<Vec<String>> = stats
                .partitions
                .iter()
                .map(|p| {
                    let exp = Some(p.lease_expiry_ns);
                    vec![
                        p.partition.to_string(),
                        p.write_offset.to_string(),
                        p.depth.to_string(),
                        fmt_left(exp, now),
                        writer_text(&p.writer),
                    ]
                })
                .collect();
            out.write_all(
                table(
                    &["PARTITION", "WRITE_OFFSET", "DEPTH", "LEASE_LEFT", "WRITER"],
                    &rows,
                )
                .as_bytes(),
            )?;
            writeln!(out)?;
            if stats.groups.is_empty() {
                writeln!(out, "no consumer groups")?;
            } else {
                let mut rows = Vec::new();
                for g in &stats.groups {
                    for (i, p) in g.partitions.iter().enumerate() {
                        rows.push(vec![
                            if i == 0 {
                                g.name.clone()
                            } else {
                                String::new()
                            },
                            if i == 0 {
                                format!("{}/{}", g.live_members, g.members)
                            } else {
                                String::new()
                            },
                            p.partition.to_string(),
                            p.committed
                                .map_or_else(|| "-".to_string(), |c| c.to_string()),
                            p.lag.to_string(),
                        ]);
                    }
                }
                out.write_all(
                    table(
                        &[
                            "GROUP",
                            "MEMBERS(LIVE/ALL)",
                            "PARTITION",
                            "COMMITTED",
                            "LAG",
                        ],
                        &rows,
                    )
                    .as_bytes(),
                )?;
            }
        }
    }
    Ok(())
}
