//! Reclamation: what the supervisor (`shmq reap`, `shmq supervise`) does.
//!
//! One pass over a namespace's files in `/dev/shm`:
//!
//! * **topics**: a topic lives and dies by its meta region's lease (attached
//!   processes renew meta and partitions together, meta first). If the meta
//!   lease expired more than `grace` ago, the pass reclaims it with one CAS
//!   (`lease::try_reclaim`); a renewal that lands first wins and the topic
//!   stays. Having won, it marks every partition reclaimed (so a process still
//!   mapped gets `LeaseExpired` on its next send or poll instead of writing
//!   into a ghost) and unlinks partitions, then the meta region. A region
//!   already marked reclaimed (a delete or a supervisor that died half-way) is
//!   unlinked.
//! * **orphan partitions** (no meta region: left by a topic deleted or
//!   reclaimed half-way) are marked and unlinked. The meta region is created
//!   first and removed last, so a partition without meta is never part of a
//!   topic being created.
//! * **consumer groups** of live topics: an entry left half-made by a process
//!   that died creating or freeing it is freed, and so is a group with no
//!   live member and no sign of life for the topic's group retention
//!   (`TopicConfig::group_retention`; see `crate::group_table`). Not in a
//!   dry run.
//! * **liveness tokens** of dead processes (file present, lock free) are removed.
//! * **malformed** files named like regions (wrong magic, version, size) are
//!   reported and left alone, unless `force` is set.
//!
//! * **durable topics** (files in a data directory, found through their
//!   registry stub in `/dev/shm` or in the data directory given to
//!   [`reap_in`]): their files are removed at expiry only when the topic
//!   was created with a retention (`TopicConfig::expire_files`); otherwise
//!   they are live topics whatever their lease says (a reboot, or a week
//!   with nobody attached, must not lose a durable log). The stub goes last.
//!
//! Two supervisors may run at once: every destructive step is decided by a
//! CAS on the lease or is idempotent (unlinking twice is harmless).

use std::time::Duration;

use crate::error::{Error, Result};
use crate::group_table;
use crate::layout::{KIND_META, KIND_PARTITION};
use crate::lease::{self, Reclaim};
use crate::name::{self, RegionName};
use crate::os;
use crate::region::Region;
use crate::storage::{self, Lookup, Storage};
use crate::token::{self, Liveness};

/// Options of one reclamation pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReapOptions {
    /// How long past its expiry a lease must be before it is reclaimed (covers
    /// small clock differences and renewal jitter). Default 1 s.
    pub grace: Duration,
    /// Report what would be done, change nothing.
    pub dry_run: bool,
    /// Also remove malformed files named like shmq regions.
    pub force: bool,
}

impl Default for ReapOptions {
    fn default() -> Self {
        ReapOptions {
            grace: Duration::from_secs(1),
            dry_run: false,
            force: false,
        }
    }
}

/// What the pass did (or, in a dry run, would do) to one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReapAction {
    /// A topic whose lease expired: all its regions were reclaimed.
    ReclaimedTopic {
        /// Topic name.
        topic: String,
        /// Regions unlinked.
        regions: Vec<String>,
        /// How long ago the lease expired.
        expired_for: Duration,
    },
    /// Regions already marked reclaimed (by a delete or another supervisor)
    /// were unlinked.
    RemovedReclaimed {
        /// Region name.
        region: String,
    },
    /// A partition without its topic's meta region.
    RemovedOrphan {
        /// Region name.
        region: String,
    },
    /// The token file of a dead process.
    RemovedDeadToken {
        /// File name.
        file: String,
        /// Pid recorded in it.
        pid: u32,
    },
    /// A consumer-group entry freed in a live topic: abandoned half-made
    /// (`idle_for` is `None`), or idle past the group retention with no live
    /// member.
    FreedGroup {
        /// Topic name.
        topic: String,
        /// Group name (empty for an entry abandoned while being created).
        group: String,
        /// Entry index in the group table.
        index: u32,
        /// How long the group had shown no sign of life.
        idle_for: Option<Duration>,
    },
    /// A malformed file named like a region: reported, and removed only with
    /// `force`.
    Malformed {
        /// File name.
        file: String,
        /// What is wrong with it.
        problem: String,
        /// Whether it was removed (`force`).
        removed: bool,
    },
}

impl ReapAction {
    /// Short machine-readable kind (`reclaimed_topic`, `removed_reclaimed`,
    /// `removed_orphan`, `removed_dead_token`, `malformed`, `freed_group`).
    pub fn kind(&self) -> &'static str {
        match self {
            ReapAction::ReclaimedTopic { .. } => "reclaimed_topic",
            ReapAction::RemovedReclaimed { .. } => "removed_reclaimed",
            ReapAction::RemovedOrphan { .. } => "removed_orphan",
            ReapAction::RemovedDeadToken { .. } => "removed_dead_token",
            ReapAction::Malformed { .. } => "malformed",
            ReapAction::FreedGroup { .. } => "freed_group",
        }
    }
}

impl std::fmt::Display for ReapAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReapAction::ReclaimedTopic {
                topic,
                regions,
                expired_for,
            } => write!(
                f,
                "reclaimed topic {topic:?}: lease expired {:.1}s ago; removed {}",
                expired_for.as_secs_f64(),
                crate::error::plural(regions.len() as u64, "region")
            ),
            ReapAction::RemovedReclaimed { region } => {
                write!(f, "removed {region}: already marked reclaimed")
            }
            ReapAction::RemovedOrphan { region } => {
                write!(f, "removed {region}: partition without its topic")
            }
            ReapAction::RemovedDeadToken { file, pid } => {
                write!(f, "removed {file}: liveness token of dead process {pid}")
            }
            ReapAction::FreedGroup {
                topic,
                group,
                index,
                idle_for,
            } => match idle_for {
                Some(d) => write!(
                    f,
                    "freed consumer group {group:?} of topic {topic:?}: no live member, idle {:.1}s (group retention)",
                    d.as_secs_f64()
                ),
                None => write!(
                    f,
                    "freed group entry {index} of topic {topic:?}: its creator died half-way"
                ),
            },
            ReapAction::Malformed {
                file,
                problem,
                removed,
            } => write!(
                f,
                "{} {file}: {problem}",
                if *removed {
                    "removed malformed"
                } else {
                    "left malformed (use --force to remove)"
                }
            ),
        }
    }
}

/// Outcome of one pass.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReapReport {
    /// Namespace scanned.
    pub namespace: String,
    /// Whether this was a dry run.
    pub dry_run: bool,
    /// What was done.
    pub actions: Vec<ReapAction>,
    /// Live topics left in place.
    pub live_topics: usize,
    /// Live tokens left in place.
    pub live_tokens: usize,
}

/// Namespaces that have at least one file in `/dev/shm`.
///
/// # Errors
/// `/dev/shm` cannot be listed.
pub fn namespaces() -> Result<Vec<String>> {
    let mut out: Vec<String> = os::list_shm(&format!("{}.", name::PREFIX))?
        .into_iter()
        .filter_map(|f| f.split('.').nth(1).map(str::to_string))
        .filter(|ns| name::validate_namespace(ns).is_ok())
        .collect();
    out.dedup();
    Ok(out)
}

/// Run one reclamation pass over namespace `ns`.
///
/// # Errors
/// An invalid namespace name, or `/dev/shm` cannot be listed. Problems with
/// single files are reported as actions, never as errors.
pub fn reap(ns: &str, opts: ReapOptions) -> Result<ReapReport> {
    reap_in(ns, opts, None)
}

/// [`reap`], and also the durable topics of namespace `ns` whose files are
/// in `data_dir` but which `/dev/shm` no longer knows (after a reboot).
///
/// # Errors
/// As [`reap`].
pub fn reap_in(
    ns: &str,
    opts: ReapOptions,
    data_dir: Option<&std::path::Path>,
) -> Result<ReapReport> {
    name::validate_namespace(ns)?;
    let now = os::now_ns();
    let grace = opts.grace.as_nanos().min(u128::from(u64::MAX)) as u64;
    let mut report = ReapReport {
        namespace: ns.to_string(),
        dry_run: opts.dry_run,
        ..Default::default()
    };
    let files = os::list_shm(&name::namespace_prefix(ns))?;
    let exists = |f: &str| files.iter().any(|x| x == f);

    for file in &files {
        match name::parse(ns, file) {
            Some(RegionName::Meta { topic }) => match storage::lookup(ns, &topic) {
                Ok(Lookup::File(dir)) => {
                    let store = Storage::File { dir };
                    let parts = store
                        .list(&name::topic_prefix(ns, &topic))
                        .unwrap_or_default();
                    reap_topic(
                        &store,
                        ns,
                        &topic,
                        file,
                        &parts,
                        now,
                        grace,
                        opts,
                        &mut report,
                    );
                }
                _ => reap_topic(
                    &Storage::Shm,
                    ns,
                    &topic,
                    file,
                    &files,
                    now,
                    grace,
                    opts,
                    &mut report,
                ),
            },
            Some(RegionName::Partition { topic, .. }) => {
                if exists(&name::meta_region(ns, &topic)) {
                    continue; // handled with its topic
                }
                // Re-check right before acting: the listing may be stale.
                if os::shm_open_existing(&name::meta_region(ns, &topic)).is_ok() {
                    continue;
                }
                match Region::attach(file, KIND_PARTITION) {
                    Ok(Some(r)) => {
                        if !opts.dry_run {
                            lease::mark_reclaimed(&r.partition_header().lease);
                            let _ = os::shm_remove(file);
                        }
                        report.actions.push(ReapAction::RemovedOrphan {
                            region: file.clone(),
                        });
                    }
                    Ok(None) => {}
                    Err(e) => malformed(file, &e, opts, &mut report),
                }
            }
            Some(RegionName::Token { id }) => match token::probe(ns, id) {
                Liveness::Dead { pid } => {
                    if !opts.dry_run {
                        let _ = os::shm_remove(file);
                    }
                    report.actions.push(ReapAction::RemovedDeadToken {
                        file: file.clone(),
                        pid,
                    });
                }
                Liveness::Alive { .. } => report.live_tokens += 1,
                Liveness::Missing => {}
            },
            None => {
                // Named like ours but not parseable: report, never touch
                // without force.
                let problem =
                    "name does not follow shmq.<ns>.<topic>.{meta,p<N>} or _tok.<id>".to_string();
                let removed = opts.force && !opts.dry_run && os::shm_remove(file).is_ok();
                report.actions.push(ReapAction::Malformed {
                    file: file.clone(),
                    problem,
                    removed,
                });
            }
        }
    }
    // Durable topics without a stub (after a reboot).
    if let Some(dir) = data_dir {
        let store = Storage::File {
            dir: std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf()),
        };
        for topic in storage::topics_in(dir, ns) {
            let meta = name::meta_region(ns, &topic);
            if exists(&meta) {
                continue; // its stub was seen above
            }
            let parts = store
                .list(&name::topic_prefix(ns, &topic))
                .unwrap_or_default();
            reap_topic(
                &store,
                ns,
                &topic,
                &meta,
                &parts,
                now,
                grace,
                opts,
                &mut report,
            );
        }
    }
    for a in &report.actions {
        tracing::info!(namespace = ns, dry_run = opts.dry_run, kind = a.kind(), action = ?a, "shmq: reclaim");
    }
    Ok(report)
}

fn malformed(file: &str, e: &Error, opts: ReapOptions, report: &mut ReapReport) {
    let removed = opts.force && !opts.dry_run && os::shm_remove(file).is_ok();
    report.actions.push(ReapAction::Malformed {
        file: file.to_string(),
        problem: e.to_string(),
        removed,
    });
}

#[allow(clippy::too_many_arguments)]
fn reap_topic(
    store: &Storage,
    ns: &str,
    topic: &str,
    meta_file: &str,
    files: &[String],
    now: u64,
    grace: u64,
    opts: ReapOptions,
    report: &mut ReapReport,
) {
    let meta = match Region::attach_in(store, meta_file, KIND_META) {
        Ok(Some(m)) => m,
        Ok(None) => return,
        // A durable topic's files are never removed as malformed: report.
        Err(e) if store.is_file() => {
            return malformed(
                meta_file,
                &e,
                ReapOptions {
                    force: false,
                    ..opts
                },
                report,
            )
        }
        Err(e) => return malformed(meta_file, &e, opts, report),
    };
    if store.is_file() && meta.meta_header().storage_flags & storage::FLAG_EXPIRE_FILES == 0 {
        // Created without a retention: kept until deleted.
        report.live_topics += 1;
        if !opts.dry_run {
            sweep_groups(ns, topic, &meta, now, report);
        }
        return;
    }
    let lease = &meta.meta_header().lease;
    let expiry = lease.expiry.load(crate::sync::Ordering::Acquire);
    let decision = if opts.dry_run {
        match expiry {
            crate::layout::RECLAIMED => Reclaim::AlreadyReclaimed,
            e if now >= e.saturating_add(grace) => Reclaim::Reclaimed,
            e => Reclaim::Alive(e),
        }
    } else {
        lease::try_reclaim(lease, now, grace)
    };
    let partitions: Vec<&String> = files
        .iter()
        .filter(|f| matches!(name::parse(ns, f), Some(RegionName::Partition { topic: t, .. }) if t == topic))
        .collect();
    let mut regions = Vec::new();
    match decision {
        Reclaim::Alive(_) => {
            report.live_topics += 1;
            if !opts.dry_run {
                sweep_groups(ns, topic, &meta, now, report);
            }
            return;
        }
        Reclaim::Reclaimed | Reclaim::AlreadyReclaimed => {
            for p in &partitions {
                if !opts.dry_run {
                    if let Ok(Some(r)) = Region::attach_in(store, p, KIND_PARTITION) {
                        lease::mark_reclaimed(&r.partition_header().lease);
                    }
                    let _ = store.remove(p);
                }
                regions.push(store.display(p));
            }
            if !opts.dry_run {
                let _ = store.remove(meta_file);
                if store.is_file() {
                    store.sync_names(ns);
                    storage::unregister(ns, topic);
                }
            }
            regions.push(store.display(meta_file));
        }
    }
    match decision {
        Reclaim::Reclaimed => report.actions.push(ReapAction::ReclaimedTopic {
            topic: topic.to_string(),
            regions,
            expired_for: Duration::from_nanos(now.saturating_sub(expiry)),
        }),
        _ => {
            for region in regions {
                report.actions.push(ReapAction::RemovedReclaimed { region });
            }
        }
    }
}

/// Free the abandoned and retention-expired consumer groups of a live topic.
fn sweep_groups(ns: &str, topic: &str, meta: &Region, now: u64, report: &mut ReapReport) {
    let Ok(geo) = meta.meta_geometry() else {
        return;
    };
    let table = group_table::Table {
        meta,
        geo,
        ns,
        topic,
        me: 0,
        retention_ns: u64::from(meta.meta_header().group_retention_ms) * 1_000_000,
    };
    for f in group_table::sweep(&table, now) {
        report.actions.push(ReapAction::FreedGroup {
            topic: topic.to_string(),
            group: f.name,
            index: f.index,
            idle_for: match f.reason {
                group_table::FreedReason::Abandoned => None,
                group_table::FreedReason::Retention { idle } => Some(idle),
            },
        });
    }
}
