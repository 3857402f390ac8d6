//! Command-line shape (clap derive). One module per verb lives in `cmd/`.

use clap::{Args, Parser, Subcommand, ValueEnum};

/// shmq: a lock-free shared-memory message queue for processes on one host.
#[derive(Debug, Parser)]
#[command(
    name = "shmq",
    version,
    about,
    long_about = None,
    propagate_version = true,
    after_help = "\
Start with `shmq demo`. Every verb has --help with examples.

Exit codes: 0 success (also when the output pipe closes), 1 failure (demo
verification, OS error), 2 usage (bad argument, name, duration, mode or
config), 3 topic (or group) not found, 4 topic already exists, 5 message too large for
the topic's slots, 6 permission denied, 7 partition held by another live
producer (or fenced), 8 lease expired / topic reclaimed, 9 timed out / full,
10 consumer group has live members (group delete without --force), 11 group
or member table full."
)]
pub struct Cli {
    /// Namespace (isolates deployments); default from SHMQ_NAMESPACE, else
    /// "default" (for `demo`: a private one).
    #[arg(long, global = true, env = "SHMQ_NAMESPACE")]
    pub namespace: Option<String>,
    /// Data directory of durable topics: `create` makes the topic's files
    /// there (`DIR/<namespace>/<topic>.{meta,p<N>}`), and every verb finds
    /// durable topics there when /dev/shm no longer knows them (after a
    /// reboot). Default from SHMQ_DATA_DIR.
    #[arg(long, global = true, value_name = "DIR", env = "SHMQ_DATA_DIR")]
    pub storage: Option<std::path::PathBuf>,
    /// The verb.
    #[command(subcommand)]
    pub command: Command,
    /// Format of the structured logs on stderr (levels from RUST_LOG, e.g.
    /// RUST_LOG=info; quiet by default).
    #[arg(long, global = true, value_enum, default_value_t = crate::logging::LogFormat::Text, env = "SHMQ_LOG_FORMAT")]
    pub log_format: crate::logging::LogFormat,
}

/// Output format for listings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Human-readable table.
    #[default]
    Table,
    /// One JSON document (or JSON lines for streams).
    Json,
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the end-to-end demo: a producer process and a consumer process
    /// exchange 1,000,000 messages through a private topic, verified.
    ///
    /// Example: shmq demo --messages 100000
    Demo(crate::cmd::demo::DemoArgs),
    /// Create a topic.
    ///
    /// Example: shmq create orders --partitions 4 --slots 4096 --slot-size 1000 --retention 1h
    Create(crate::cmd::create::CreateArgs),
    /// List the topics of the namespace.
    ///
    /// Example: shmq list --format json
    List(crate::cmd::list::ListArgs),
    /// Show a topic's partitions, writers and consumer groups.
    ///
    /// Example: shmq info orders --format json
    Info(crate::cmd::info::InfoArgs),
    /// Send one message per line of stdin (or of --file).
    ///
    /// Example: printf 'a\nb\n' | shmq produce orders --key user-42
    Produce(crate::cmd::produce::ProduceArgs),
    /// Print messages of a topic as a consumer group.
    ///
    /// Example: shmq consume orders --group audit --from earliest --format json --commit
    Consume(crate::cmd::consume::ConsumeArgs),
    /// Delete a topic and everything in it.
    ///
    /// Example: shmq delete orders
    Delete(crate::cmd::delete::DeleteArgs),
    /// One supervisor pass: reclaim regions whose lease expired and tokens of
    /// dead processes.
    ///
    /// Example: shmq reap --dry-run --format json
    Reap(crate::cmd::reap::ReapArgs),
    /// Run the supervisor until SIGINT/SIGTERM.
    ///
    /// Example: shmq supervise --interval 1s
    Supervise(crate::cmd::supervise::SuperviseArgs),
    /// Cross-process benchmarks against same-run floors.
    ///
    /// Example: shmq bench latency
    Bench(crate::cmd::bench::BenchArgs),
    /// Internal: the producer process of `shmq demo`.
    #[command(hide = true)]
    DemoProducer(crate::cmd::demo::ProducerArgs),
    /// Internal: the consumer process of `shmq demo`.
    #[command(hide = true)]
    DemoConsumer(crate::cmd::demo::ConsumerArgs),
    /// List or delete a topic's consumer groups.
    ///
    /// Example: shmq group list orders; shmq group delete orders billing
    Group(crate::cmd::group::GroupArgs),
    /// Kill-and-restart soak: producers and consumer-group members in
    /// separate processes, random SIGKILLs, every record verified.
    ///
    /// Example: shmq soak --duration 60s
    Soak(crate::cmd::soak::SoakArgs),
    /// Serve Prometheus metrics of the namespace (or all) over HTTP.
    ///
    /// Example: shmq metrics --listen 127.0.0.1:9898 --all-namespaces
    Metrics(crate::cmd::metrics::MetricsArgs),
    /// Live terminal view: rates, lag per group, writers, leases.
    ///
    /// Example: shmq top --all-namespaces; shmq top --once --format json
    Top(crate::cmd::top::TopArgs),
    /// Bridge a topic to NATS JetStream (export) or a stream to a topic
    /// (import), for processes on other hosts.
    ///
    /// Example: shmq bridge export orders --server nats://nats.example:4222
    Bridge(crate::cmd::bridge::BridgeArgs),
}

/// Output format option shared by several verbs.
#[derive(Clone, Copy, Debug, Args)]
pub struct FormatArg {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}
