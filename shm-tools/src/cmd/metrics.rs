//! `shmq metrics`: Prometheus metrics of a namespace (or all) over HTTP.
//!
//! `GET /metrics` answers with the text exposition format (OpenMetrics
//! text, which Prometheus reads natively), encoded by `prometheus-client`
//! and served by `tiny_http`; every scrape reads shared memory afresh
//! (see [`super::observe`]: it never renews a lease or changes state).
//! `--once` prints one scrape to stdout instead of serving.
//!
//! Families (labels in braces; `namespace` and `topic` everywhere):
//!
//! ```text
//! shmq_namespace_topics{namespace}                 gauge
//! shmq_namespace_regions{namespace}                gauge   meta + partition files
//! shmq_namespace_shm_bytes{namespace}              gauge   their size in /dev/shm
//! shmq_namespace_live_tokens{namespace}            gauge
//! shmq_namespace_dead_tokens{namespace}            gauge   reaped by the supervisor
//! shmq_topic_up{..,topic}                          gauge   1 read, 0 reclaimed or unreadable
//! shmq_topic_partitions{..,topic}                  gauge
//! shmq_topic_lease_seconds_left{..,topic}          gauge   meta region's lease
//! shmq_partition_write_offset_total{..,partition}  counter records ever published
//! shmq_partition_depth{..,partition}               gauge   records retained
//! shmq_partition_writer_alive{..,partition}        gauge   1 live writer, 0 dead or none
//! shmq_partition_writer_epoch{..,partition}        gauge
//! shmq_partition_takeovers_total{..,partition}     counter
//! shmq_partition_full_events_total{..,partition}   counter try_send found the ring full
//! shmq_partition_lease_seconds_left{..,partition}  gauge
//! shmq_group_members{..,group}                     gauge
//! shmq_group_live_members{..,group}                gauge
//! shmq_group_committed_offset{..,group,partition}  gauge   absent until the group commits
//! shmq_group_lag{..,group,partition}               gauge   write offset - committed
//! shmq_group_nacks_total{..,group,partition}       counter
//! shmq_group_dead_lettered_total{..,group,partition} counter
//! shmq_scrape_duration_seconds                     gauge   time to read and encode this scrape
//! ```

use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Metric, Registry};

use super::observe::{seconds_left, Observer, Snapshot};
use crate::error::{CliError, CliResult};

/// Content type of the answer (what `prometheus-client` encodes).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Arguments of `shmq metrics`.
#[derive(Debug, Args)]
#[command(after_help = "\
Serves GET /metrics until SIGINT/SIGTERM. Reading never renews a lease or
changes a topic. Port 0 picks a free port; the address served is printed
on stdout.

Examples:
  shmq metrics --listen 127.0.0.1:9898
  shmq metrics --listen 0.0.0.0:9898 --all-namespaces
  shmq metrics --once | grep shmq_group_lag")]
pub struct MetricsArgs {
    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9898")]
    pub listen: SocketAddr,
    /// Observe every namespace found in /dev/shm, not just --namespace.
    #[arg(long)]
    pub all_namespaces: bool,
    /// Print one scrape to stdout and exit instead of serving.
    #[arg(long)]
    pub once: bool,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NsLabels {
    namespace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TopicLabels {
    namespace: String,
    topic: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartLabels {
    namespace: String,
    topic: String,
    partition: u32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupLabels {
    namespace: String,
    topic: String,
    group: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupPartLabels {
    namespace: String,
    topic: String,
    group: String,
    partition: u32,
}

type GaugeF = Gauge<f64, AtomicU64>;

fn family<L, M>(reg: &mut Registry, name: &str, help: &str) -> Family<L, M>
where
    L: EncodeLabelSet + Clone + std::hash::Hash + Eq + std::fmt::Debug + Send + Sync + 'static,
    M: Metric + Default,
    Family<L, M>: Metric + Clone,
{
    let f = Family::<L, M>::default();
    reg.register(name, help, f.clone());
    f
}

fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Render `snap` in the text exposition format. `scrape_seconds`, if
/// given, is reported as `shmq_scrape_duration_seconds`.
pub fn render(snap: &Snapshot, scrape_seconds: Option<f64>) -> String {
    let mut reg = Registry::with_prefix("shmq");
    let ns_topics: Family<NsLabels, Gauge> =
        family(&mut reg, "namespace_topics", "Topics in the namespace");
    let ns_regions: Family<NsLabels, Gauge> = family(
        &mut reg,
        "namespace_regions",
        "Region files (meta and partitions) of the namespace in /dev/shm",
    );
    let ns_bytes: Family<NsLabels, Gauge> = family(
        &mut reg,
        "namespace_shm_bytes",
        "Size of the namespace's region files in /dev/shm, bytes",
    );
    let ns_live: Family<NsLabels, Gauge> = family(
        &mut reg,
        "namespace_live_tokens",
        "Liveness tokens of live processes (observers included)",
    );
    let ns_dead: Family<NsLabels, Gauge> = family(
        &mut reg,
        "namespace_dead_tokens",
        "Liveness tokens of dead processes, not yet removed by the supervisor",
    );
    let t_up: Family<TopicLabels, Gauge> = family(
        &mut reg,
        "topic_up",
        "1 if the topic was read, 0 if it is reclaimed or could not be read",
    );
    let t_parts: Family<TopicLabels, Gauge> =
        family(&mut reg, "topic_partitions", "Partitions of the topic now");
    let t_lease: Family<TopicLabels, GaugeF> = family(
        &mut reg,
        "topic_lease_seconds_left",
        "Seconds until the topic's (meta region's) lease expires unless renewed",
    );
    let p_write: Family<PartLabels, Counter> = family(
        &mut reg,
        "partition_write_offset",
        "Next offset to be written: records ever published to the partition",
    );
    let p_depth: Family<PartLabels, Gauge> = family(
        &mut reg,
        "partition_depth",
        "Records the partition's ring retains",
    );
    let p_alive: Family<PartLabels, Gauge> = family(
        &mut reg,
        "partition_writer_alive",
        "1 if a live process holds the partition's writer lease, else 0",
    );
    let p_epoch: Family<PartLabels, Gauge> = family(
        &mut reg,
        "partition_writer_epoch",
        "Epoch of the partition's writer lease (grows on every change of writer)",
    );
    let p_takeovers: Family<PartLabels, Counter> = family(
        &mut reg,
        "partition_takeovers",
        "Writer takeovers of the partition (a new writer replacing a dead one)",
    );
    let p_full: Family<PartLabels, Counter> = family(
        &mut reg,
        "partition_full_events",
        "Sends that found the partition's ring full (backpressure)",
    );
    let p_lease: Family<PartLabels, GaugeF> = family(
        &mut reg,
        "partition_lease_seconds_left",
        "Seconds until the partition region's lease expires unless renewed",
    );
    let g_members: Family<GroupLabels, Gauge> = family(
        &mut reg,
        "group_members",
        "Members registered in the consumer group",
    );
    let g_live: Family<GroupLabels, Gauge> = family(
        &mut reg,
        "group_live_members",
        "Members of the consumer group whose process is alive",
    );
    let g_committed: Family<GroupPartLabels, Gauge> = family(
        &mut reg,
        "group_committed_offset",
        "The group's committed offset (next to process); absent until it commits",
    );
    let g_lag: Family<GroupPartLabels, Gauge> = family(
        &mut reg,
        "group_lag",
        "Records published but not committed by the group",
    );
    let g_nacks: Family<GroupPartLabels, Counter> =
        family(&mut reg, "group_nacks", "Records the group nacked");
    let g_dead: Family<GroupPartLabels, Counter> = family(
        &mut reg,
        "group_dead_lettered",
        "Records the group routed to its dead-letter topic",
    );
    for ns in &snap.namespaces {
        let l = NsLabels {
            namespace: ns.namespace.clone(),
        };
        ns_topics.get_or_create(&l).set(ns.topics.len() as i64);
        ns_regions.get_or_create(&l).set(int(ns.regions));
        ns_bytes.get_or_create(&l).set(int(ns.shm_bytes));
        ns_live.get_or_create(&l).set(int(ns.live_tokens));
        ns_dead.get_or_create(&l).set(int(ns.dead_tokens));
        for t in &ns.topics {
            let tl = TopicLabels {
                namespace: t.namespace.clone(),
                topic: t.topic.clone(),
            };
            let Some(s) = t.stats() else {
                t_up.get_or_create(&tl).set(0);
                continue;
            };
            t_up.get_or_create(&tl).set(1);
            t_parts.get_or_create(&tl).set(s.partitions.len() as i64);
            if let Some(left) = seconds_left(s.lease_expiry_ns, snap.now_ns) {
                t_lease.get_or_create(&tl).set(left);
            }
            for p in &s.partitions {
                let pl = PartLabels {
                    namespace: t.namespace.clone(),
                    topic: t.topic.clone(),
                    partition: p.partition,
                };
                p_write.get_or_create(&pl).inc_by(p.write_offset);
                p_depth.get_or_create(&pl).set(int(p.depth));
                let alive = p.writer.is_some_and(|w| w.alive);
                p_alive.get_or_create(&pl).set(i64::from(alive));
                p_epoch.get_or_create(&pl).set(i64::from(p.writer_epoch));
                p_takeovers.get_or_create(&pl).inc_by(p.takeovers);
                p_full.get_or_create(&pl).inc_by(p.full_events);
                if let Some(left) = seconds_left(p.lease_expiry_ns, snap.now_ns) {
                    p_lease.get_or_create(&pl).set(left);
                }
            }
            for g in &s.groups {
                let gl = GroupLabels {
                    namespace: t.namespace.clone(),
                    topic: t.topic.clone(),
                    group: g.name.clone(),
                };
                g_members.get_or_create(&gl).set(i64::from(g.members));
                g_live.get_or_create(&gl).set(i64::from(g.live_members));
                for p in &g.partitions {
                    let gp = GroupPartLabels {
                        namespace: t.namespace.clone(),
                        topic: t.topic.clone(),
                        group: g.name.clone(),
                        partition: p.partition,
                    };
                    if let Some(c) = p.committed {
                        g_committed.get_or_create(&gp).set(int(c));
                    }
                    g_lag.get_or_create(&gp).set(int(p.lag));
                    g_nacks.get_or_create(&gp).inc_by(p.nacks);
                    g_dead.get_or_create(&gp).inc_by(p.dead_lettered);
                }
            }
        }
    }
    if let Some(secs) = scrape_seconds {
        let g = GaugeF::default();
        g.set(secs);
        reg.register(
            "scrape_duration_seconds",
            "Time the previous scrape took to read shared memory and encode, seconds",
            g,
        );
    }
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &reg);
    out
}

/// One scrape: snapshot and render. `last` is the previous scrape's cost.
pub fn scrape(obs: &mut Observer, last: Option<f64>) -> Result<(String, f64), shmq::Error> {
    let started = Instant::now();
    let snap = obs.snapshot()?;
    let read = started.elapsed();
    let text = render(&snap, last);
    tracing::debug!(?read, encode = ?started.elapsed().saturating_sub(read), bytes = text.len(), "metrics scrape");
    Ok((text, started.elapsed().as_secs_f64()))
}

/// Run `shmq metrics`.
pub fn run(ns: &str, args: MetricsArgs) -> CliResult {
    let mut obs = Observer::new(ns, args.all_namespaces);
    if args.once {
        let (text, _) = scrape(&mut obs, None)?;
        std::io::stdout().lock().write_all(text.as_bytes())?;
        return Ok(());
    }
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone())
            .map_err(|e| CliError::failed(format!("cannot install signal handler: {e}")))?;
    }
    let server = tiny_http::Server::http(args.listen)
        .map_err(|e| CliError::failed(format!("cannot listen on {}: {e}", args.listen)))?;
    let addr = server
        .server_addr()
        .to_ip()
        .map_or_else(|| args.listen.to_string(), |a| a.to_string());
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "shmq metrics: serving http://{addr}/metrics")?;
        out.flush()?;
    }
    tracing::info!(%addr, all_namespaces = args.all_namespaces, "metrics server started");
    let mut last: Option<f64> = None;
    while !stop.load(Ordering::Relaxed) {
        let req = match server.recv_timeout(Duration::from_millis(100)) {
            Ok(Some(r)) => r,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "metrics: accept failed");
                continue;
            }
        };
        let path = req.url().split('?').next().unwrap_or("").to_string();
        let is_get = matches!(
            req.method(),
            tiny_http::Method::Get | tiny_http::Method::Head
        );
        let resp = match (is_get, path.as_str()) {
            (true, "/metrics") => match scrape(&mut obs, last) {
                Ok((text, took)) => {
                    last = Some(took);
                    typed(tiny_http::Response::from_string(text), CONTENT_TYPE)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics scrape failed");
                    tiny_http::Response::from_string(format!("scrape failed: {e}\n"))
                        .with_status_code(500)
                }
            },
            (true, "/") => typed(
                tiny_http::Response::from_string(
                    "shmq metrics: scrape /metrics (Prometheus text format)\n",
                ),
                "text/plain; charset=utf-8",
            ),
            (true, _) => {
                tiny_http::Response::from_string("not found: try /metrics\n").with_status_code(404)
            }
            (false, _) => {
                tiny_http::Response::from_string("method not allowed\n").with_status_code(405)
            }
        };
        if let Err(e) = req.respond(resp) {
            tracing::debug!(error = %e, "metrics: client went away");
        }
    }
    tracing::info!("metrics server stopped");
    Ok(())
}

/// `resp` with a `Content-Type` header (left out if it were malformed;
/// ours are ASCII constants).
fn typed<R: std::io::Read>(
    resp: tiny_http::Response<R>,
    content_type: &str,
) -> tiny_http::Response<R> {
    match tiny_http::Header::from_bytes(&b"Content-Type"[..], content_type.as_bytes()) {
        Ok(h) => resp.with_header(h),
        Err(()) => resp,
    }
}
