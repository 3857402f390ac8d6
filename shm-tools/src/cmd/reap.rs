//! `shmq reap`: one supervisor pass.

use std::io::Write;
use std::time::Duration;

use clap::Args;
use serde_json::json;
use shmq::protocol::reclaim::{self, ReapAction, ReapOptions, ReapReport};

use crate::cli::Format;
use crate::error::CliResult;
use crate::util::{parse_duration, plural};

/// Arguments of `shmq reap`.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  shmq reap --dry-run\n  shmq reap --all-namespaces --format json"
)]
pub struct ReapArgs {
    /// Report what would be reclaimed; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Also remove malformed files named like shmq regions.
    #[arg(long)]
    pub force: bool,
    /// Reclaim only leases expired at least this long ago.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub grace: Duration,
    /// Scan every namespace found in /dev/shm, not just --namespace.
    #[arg(long)]
    pub all_namespaces: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// Run one pass over the chosen namespaces.
pub fn pass(ns: &str, all: bool, opts: ReapOptions) -> CliResult<Vec<ReapReport>> {
    // Durable topics /dev/shm forgot are found in --storage / SHMQ_DATA_DIR.
    let data_dir = shmq::protocol::storage::data_dir_from_env();
    let mut namespaces = if all {
        reclaim::namespaces()?
    } else {
        vec![ns.to_string()]
    };
    if let (true, Some(dir)) = (all, &data_dir) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if let Ok(n) = entry.file_name().into_string() {
                if shmq::protocol::name::validate_namespace(&n).is_ok() && !namespaces.contains(&n)
                {
                    namespaces.push(n);
                }
            }
        }
    }
    let mut reports = Vec::new();
    for ns in namespaces {
        reports.push(reclaim::reap_in(&ns, opts, data_dir.as_deref())?);
    }
    Ok(reports)
}

/// JSON form of one action (stable field names: `kind`, `namespace`,
/// `region`/`topic`/`file`, `detail`, `removed`).
pub fn action_json(ns: &str, a: &ReapAction, dry_run: bool) -> serde_json::Value {
    let mut v = match a {
        ReapAction::ReclaimedTopic {
            topic,
            regions,
            expired_for,
        } => json!({
            "topic": topic, "regions": regions, "expired_for_ms": expired_for.as_millis() as u64, "removed": !dry_run,
        }),
        ReapAction::RemovedReclaimed { region } | ReapAction::RemovedOrphan { region } => {
            json!({ "region": region, "removed": !dry_run })
        }
        ReapAction::RemovedDeadToken { file, pid } => {
            json!({ "file": file, "pid": pid, "removed": !dry_run })
        }
        ReapAction::Malformed {
            file,
            problem,
            removed,
        } => json!({ "file": file, "problem": problem, "removed": removed }),
        ReapAction::FreedGroup {
            topic,
            group,
            index,
            idle_for,
        } => json!({
            "topic": topic, "group": group, "index": index,
            "idle_for_ms": idle_for.map(|d| d.as_millis() as u64), "removed": !dry_run,
        }),
    };
    v["kind"] = json!(a.kind());
    v["namespace"] = json!(ns);
    v["detail"] = json!(a.to_string());
    v
}

/// Run `shmq reap`.
pub fn run(ns: &str, args: ReapArgs) -> CliResult {
    let opts = ReapOptions {
        grace: args.grace,
        dry_run: args.dry_run,
        force: args.force,
    };
    let reports = pass(ns, args.all_namespaces, opts)?;
    match args.format {
        Format::Json => {
            let actions: Vec<_> = reports
                .iter()
                .flat_map(|r| {
                    r.actions
                        .iter()
                        .map(move |a| action_json(&r.namespace, a, r.dry_run))
                })
                .collect();
            let doc = json!({
                "dry_run": args.dry_run,
                "namespaces": reports.iter().map(|r| json!({
                    "namespace": r.namespace, "live_topics": r.live_topics, "live_tokens": r.live_tokens,
                })).collect::<Vec<_>>(),
                "actions": actions,
            });
            writeln!(std::io::stdout().lock(), "{doc}")?;
        }
        Format::Table => {
            for r in &reports {
                let verb = if r.dry_run { "would: " } else { "" };
                for a in &r.actions {
                    writeln!(std::io::stdout().lock(), "{}: {verb}{a}", r.namespace)?;
                }
                writeln!(
                    std::io::stdout().lock(),
                    "{}: {}, {}, {}{}",
                    r.namespace,
                    plural(r.actions.len() as u64, "action"),
                    plural(r.live_topics as u64, "live topic"),
                    plural(r.live_tokens as u64, "live process"),
                    if r.dry_run {
                        " (dry run: nothing changed)"
                    } else {
                        ""
                    }
                )?;
            }
        }
    }
    Ok(())
}
