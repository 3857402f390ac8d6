//! `shmq bridge`: export a topic to a NATS JetStream stream, or import a
//! stream into a topic (the `shmq-nats` crate does the work).

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use shmq_nats::{
    default_stream, Bridge, BridgeError, ExportBridge, ExportConfig, FileConfig, ImportBridge,
    ImportConfig, NatsOptions, Stop, SubjectTemplate,
};

use crate::error::{CliError, CliResult};
use crate::util::parse_duration;

const EXAMPLES: &str = "\
Examples (host A exports, host B imports, one NATS server or cluster between):
  # on A: topic `orders` of namespace `a` to stream SHMQ_a_orders (created if missing),
  #       subjects shmq.a.orders.<partition>
  SHMQ_NAMESPACE=a shmq bridge export orders --server nats://nats.example:4222 --creds a.creds
  # on B: that stream into topic `orders` of namespace `b` (the topic must exist)
  SHMQ_NAMESPACE=b shmq bridge import orders --stream SHMQ_a_orders --server nats://nats.example:4222
  # custom subject and stream, settings from a file (flags win over the file)
  shmq bridge export orders --subject 'east.{topic}.p{partition}' --stream EAST_ORDERS
  shmq bridge import --config bridge.toml

The file (TOML; the connection keys are the nats CLI's):
  url = \"nats://nats.example:4222\"
  creds = \"/etc/shmq/bridge.creds\"
  [export]
  topic = \"orders\"
  stream = \"SHMQ_a_orders\"
  subject = \"shmq.{ns}.{topic}.{partition}\"
  [import]
  topic = \"orders\"
  stream = \"SHMQ_a_orders\"
  consumer = \"orders-into-b\"

Output: one JSON line per --progress-interval on stdout: records, rate (records/s),
lag, duplicates, connected, disconnects, retries, last_error; the last line has
state \"stopped\". SIGINT/SIGTERM stop it cleanly. A lost server is retried with
backoff; a configuration error exits 2 (3: topic not found, 7: another process
writes the import topic).";

/// Arguments of `shmq bridge`.
#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct BridgeArgs {
    /// Direction.
    #[command(subcommand)]
    pub direction: Direction,
}

/// Export or import.
#[derive(Debug, Subcommand)]
pub enum Direction {
    /// A shmq topic to a JetStream stream (at least once, de-duplicated by
    /// Nats-Msg-Id = <ns>/<topic>/<partition>/<offset>).
    #[command(after_help = EXAMPLES)]
    Export(ExportArgs),
    /// A JetStream stream to a shmq topic (no duplicates across restarts;
    /// slows down on a full backpressure topic).
    #[command(after_help = EXAMPLES)]
    Import(ImportArgs),
}

/// Connection flags (NATS tools' names and environment variables).
#[derive(Debug, Args)]
pub struct NatsArgs {
    /// NATS server URL(s), comma-separated [default: nats://127.0.0.1:4222].
    #[arg(long, short = 's', env = "NATS_URL", visible_alias = "url")]
    pub server: Option<String>,
    /// NATS credentials file (.creds).
    #[arg(long, env = "NATS_CREDS")]
    pub creds: Option<PathBuf>,
    /// NATS user (with --password).
    #[arg(long, env = "NATS_USER")]
    pub user: Option<String>,
    /// NATS password.
    #[arg(long, env = "NATS_PASSWORD")]
    pub password: Option<String>,
    /// NATS token.
    #[arg(long, env = "NATS_TOKEN")]
    pub token: Option<String>,
    /// How long to wait for a publish acknowledgement or an API answer.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// A TOML file with the connection and [export]/[import] settings.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Time between progress lines.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub progress_interval: Duration,
}

/// Arguments of `shmq bridge export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The topic to export (or `topic` in the file's [export]).
    pub topic: Option<String>,
    /// JetStream stream [default: SHMQ_<ns>_<topic>].
    #[arg(long)]
    pub stream: Option<String>,
    /// Subject template; placeholders {ns}, {topic}, {partition}
    /// [default: shmq.{ns}.{topic}.{partition}].
    #[arg(long)]
    pub subject: Option<String>,
    /// The consumer group the bridge reads through [default: nats-export].
    #[arg(long)]
    pub group: Option<String>,
    /// Records per publish round.
    #[arg(long, default_value_t = 256)]
    pub batch: usize,
    /// Commit acknowledged offsets at most this often (0: every round).
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub commit_interval: Duration,
    /// Duplicate window of the stream when the bridge creates it.
    #[arg(long, default_value = "2m", value_parser = parse_duration)]
    pub duplicate_window: Duration,
    /// Fail instead of creating a missing stream.
    #[arg(long)]
    pub no_create_stream: bool,
    /// Connection.
    #[command(flatten)]
    pub nats: NatsArgs,
}

/// Arguments of `shmq bridge import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The destination topic, which must exist (or `topic` in the file's [import]).
    pub topic: Option<String>,
    /// The stream to read (required, here or in the file).
    #[arg(long)]
    pub stream: Option<String>,
    /// Durable consumer name [default: shmq-import-<ns>-<topic>].
    #[arg(long)]
    pub consumer: Option<String>,
    /// Only subjects matching this (wildcards allowed).
    #[arg(long)]
    pub filter_subject: Option<String>,
    /// The checkpoint topic [default: <topic>-nats-ckpt].
    #[arg(long)]
    pub checkpoint_topic: Option<String>,
    /// Messages per pull request.
    #[arg(long, default_value_t = 256)]
    pub batch: usize,
    /// The consumer's ack wait.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub ack_wait: Duration,
    /// Connection.
    #[command(flatten)]
    pub nats: NatsArgs,
}

fn config_err(e: BridgeError) -> CliError {
    match e {
        BridgeError::Config(m) => CliError::usage(m),
        BridgeError::Shmq(e) => CliError::from(e),
        other => CliError::failed(other.to_string()),
    }
}

fn nats_options(a: &NatsArgs, file: &FileConfig) -> NatsOptions {
    let mut o = NatsOptions::default();
    if let Some(u) = a.server.clone().or_else(|| file.url.clone()) {
        o.url = u;
    }
    o.creds = a.creds.clone().or_else(|| file.creds.clone());
    o.user = a.user.clone().or_else(|| file.user.clone());
    o.password = a.password.clone().or_else(|| file.password.clone());
    o.token = a.token.clone().or_else(|| file.token.clone());
    o.request_timeout = a.timeout;
    o
}

fn load(path: &Option<PathBuf>) -> CliResult<FileConfig> {
    match path {
        Some(p) => FileConfig::load(p).map_err(config_err),
        None => Ok(FileConfig::default()),
    }
}

/// Build the bridge a command line asks for (without running it).
fn build(ns: &str, args: BridgeArgs) -> CliResult<Bridge> {
    match args.direction {
        Direction::Export(a) => {
            let file = load(&a.nats.config)?;
            let sec = file.export.clone().unwrap_or_default();
            let topic = a.topic.or(sec.topic).ok_or_else(|| {
                CliError::usage("no topic to export: give TOPIC or `topic` in [export] of --config")
            })?;
            let mut cfg = ExportConfig::new(ns, &topic);
            cfg.nats = nats_options(&a.nats, &file);
            cfg.nats.name = format!("shmq-bridge-export-{ns}-{topic}");
            if let Some(s) = a.stream.or(sec.stream) {
                cfg.stream = s;
            }
            if let Some(s) = a.subject.or(sec.subject) {
                cfg.subject = SubjectTemplate::parse(&s).map_err(config_err)?;
            }
            if let Some(g) = a.group.or(sec.group) {
                cfg.group = g;
            }
            cfg.batch = a.batch;
            cfg.commit_interval = a.commit_interval;
            cfg.duplicate_window = a.duplicate_window;
            cfg.create_stream = !a.no_create_stream;
            cfg.progress_interval = a.nats.progress_interval;
            Ok(Bridge::Export(Box::new(
                ExportBridge::new(cfg).map_err(config_err)?,
            )))
        }
        Direction::Import(a) => {
            let file = load(&a.nats.config)?;
            let sec = file.import.clone().unwrap_or_default();
            let topic = a.topic.or(sec.topic).ok_or_else(|| {
                CliError::usage(
                    "no topic to import into: give TOPIC or `topic` in [import] of --config",
                )
            })?;
            let stream = a.stream.or(sec.stream).ok_or_else(|| {
                CliError::usage(format!(
                    "no stream to import: give --stream (an export of topic {topic:?} in \
                     namespace NS writes stream {})",
                    default_stream("NS", &topic)
                ))
            })?;
            let mut cfg = ImportConfig::new(ns, &topic, &stream);
            cfg.nats = nats_options(&a.nats, &file);
            cfg.nats.name = format!("shmq-bridge-import-{ns}-{topic}");
            if let Some(c) = a.consumer.or(sec.consumer) {
                cfg.consumer = c;
            }
            cfg.filter_subject = a.filter_subject.or(sec.filter_subject);
            if let Some(c) = a.checkpoint_topic.or(sec.checkpoint_topic) {
                cfg.checkpoint_topic = c;
            }
            cfg.batch = a.batch;
            cfg.ack_wait = a.ack_wait;
            cfg.progress_interval = a.nats.progress_interval;
            Ok(Bridge::Import(Box::new(
                ImportBridge::new(cfg).map_err(config_err)?,
            )))
        }
    }
}

/// Run `shmq bridge`.
pub fn run(ns: &str, args: BridgeArgs) -> CliResult {
    let bridge = build(ns, args)?;
    let stop = Stop::new();
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.flag().clone())
            .map_err(|e| CliError::failed(format!("cannot install signal handler: {e}")))?;
    }
    let mut write_err: Option<std::io::Error> = None;
    let stopper = stop.clone();
    let result = bridge.run_blocking(stop, |p| {
        let line = serde_json::to_string(p).unwrap_or_default();
        let mut out = std::io::stdout().lock();
        if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
            // Nobody reads the progress any more: stop cleanly.
            write_err.get_or_insert(e);
            stopper.stop();
        }
    });
    match result {
        Ok(_) => match write_err {
            Some(e) => Err(e.into()),
            None => Ok(()),
        },
        Err(e) => Err(config_err(e)),
    }
}
