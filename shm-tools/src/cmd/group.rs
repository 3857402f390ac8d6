//! `shmq group`: list and delete a topic's consumer groups.
//!
//! `shmq group list TOPIC --format json` prints one document with stable
//! field names:
//!
//! ```text
//! { "namespace", "topic", "max_groups", "max_members",
//!   "group_retention_ms" (0 = never), "dead_group_timeout_ms",
//!   "groups": [ { "name", "members", "live_members", "last_active_ns",
//!                 "idle_ms", "lag",
//!                 "member_list": [ { "index", "pid", "alive", "heartbeat_ns",
//!                                    "competing" (null | partition) } ],
//!                 "partitions": [ { "partition", "committed" (null: never),
//!                                   "lag" } ] } ] }
//! ```

use std::io::Write;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::json;
use shmq::{RenewalPolicy, TopicManager};

use crate::cli::Format;
use crate::error::CliResult;
use crate::util::{fmt_duration_approx, table, unix_ns};

/// Arguments of `shmq group`.
#[derive(Debug, Args)]
pub struct GroupArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: GroupAction,
}

/// `shmq group` sub-verbs.
#[derive(Debug, Subcommand)]
pub enum GroupAction {
    /// List a topic's consumer groups: members, lag, last activity.
    ///
    /// Example: shmq group list orders --format json
    List(ListArgs),
    /// Delete a consumer group (its committed offsets go with it). Refused
    /// while a member is a live process, unless --force.
    ///
    /// Example: shmq group delete orders billing
    Delete(DeleteArgs),
}

/// Arguments of `shmq group list`.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  shmq group list orders
  shmq group list orders --format json | jq '.groups[] | {name, lag, idle_ms}'")]
pub struct ListArgs {
    /// Topic name.
    pub topic: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// Arguments of `shmq group delete`.
#[derive(Debug, Args)]
#[command(after_help = "\
Exit code 10 when the group has live members and --force was not given,
3 when the topic or the group does not exist.

Examples:
  shmq group delete orders billing
  shmq group delete orders billing --force   # its live members get an error")]
pub struct DeleteArgs {
    /// Topic name.
    pub topic: String,
    /// Group name.
    pub group: String,
    /// Delete even if members are live processes (they get "group deleted"
    /// at their next heartbeat or commit).
    #[arg(long)]
    pub force: bool,
}

/// Run `shmq group`.
pub fn run(ns: &str, args: GroupArgs) -> CliResult {
    match args.action {
        GroupAction::List(a) => list(ns, a),
        GroupAction::Delete(a) => delete(ns, a),
    }
}

fn list(ns: &str, args: ListArgs) -> CliResult {
    // An observer: opening must not renew the topic's lease.
    let mgr = TopicManager::with_namespace(ns)?.with_renewal(RenewalPolicy::Manual);
    let topic = mgr.open(&args.topic)?;
    let stats = topic.stats()?;
    let c = topic.config();
    let now = unix_ns();
    let mut out = std::io::stdout().lock();
    match args.format {
        Format::Json => {
            let groups: Vec<_> = stats
                .groups
                .iter()
                .map(|g| {
                    json!({
                        "name": g.name,
                        "members": g.members,
                        "live_members": g.live_members,
                        "last_active_ns": g.last_active_ns,
                        "idle_ms": now.saturating_sub(g.last_active_ns) / 1_000_000,
                        "lag": g.partitions.iter().map(|p| p.lag).sum::<u64>(),
                        "member_list": g.member_list.iter().map(|m| json!({
                            "index": m.index,
                            "pid": m.pid,
                            "alive": m.alive,
                            "heartbeat_ns": m.heartbeat_ns,
                            "competing": m.competing,
                        })).collect::<Vec<_>>(),
                        "partitions": g.partitions.iter().map(|p| json!({
                            "partition": p.partition,
                            "committed": p.committed,
                            "lag": p.lag,
                        })).collect::<Vec<_>>(),
                    })
                })
                .collect();
            let doc = json!({
                "namespace": ns,
                "topic": topic.name(),
                "max_groups": c.max_groups,
                "max_members": c.max_members,
                "group_retention_ms": c.group_retention.as_millis() as u64,
                "dead_group_timeout_ms": c.dead_group_timeout.as_millis() as u64,
                "groups": groups,
            });
            serde_json::to_writer_pretty(&mut out, &doc).map_err(std::io::Error::from)?;
            writeln!(out)?;
        }
        Format::Table => {
            let retention = if c.group_retention.is_zero() {
                "never".to_string()
            } else {
                fmt_duration_approx(c.group_retention)
            };
            writeln!(
                out,
                "topic {:?}: {} of {} groups; idle groups without live members are freed after {}",
                topic.name(),
                stats.groups.len(),
                c.max_groups,
                retention
            )?;
            let rows: Vec<Vec<String>> = stats
                .groups
                .iter()
                .map(|g| {
                    let pids: Vec<String> = g
                        .member_list
                        .iter()
                        .map(|m| format!("{}{}", m.pid, if m.alive { "" } else { "(dead)" }))
                        .collect();
                    vec![
                        g.name.clone(),
                        format!("{}/{}", g.live_members, g.members),
                        if pids.is_empty() {
                            "-".to_string()
                        } else {
                            pids.join(",")
                        },
                        g.partitions.iter().map(|p| p.lag).sum::<u64>().to_string(),
                        format!(
                            "{} ago",
                            fmt_duration_approx(Duration::from_nanos(
                                now.saturating_sub(g.last_active_ns)
                            ))
                        ),
                    ]
                })
                .collect();
            if !rows.is_empty() {
                out.write_all(
                    table(
                        &["GROUP", "LIVE/MEMBERS", "PIDS", "LAG", "LAST_ACTIVE"],
                        &rows,
                    )
                    .as_bytes(),
                )?;
            }
        }
    }
    Ok(())
}

fn delete(ns: &str, args: DeleteArgs) -> CliResult {
    let mgr = TopicManager::with_namespace(ns)?.with_renewal(RenewalPolicy::Manual);
    let topic = mgr.open(&args.topic)?;
    topic.delete_group(&args.group, args.force)?;
    writeln!(
        std::io::stdout().lock(),
        "deleted consumer group {:?} of topic {:?}",
        args.group,
        args.topic
    )?;
    Ok(())
}
