//! One module per verb. Each exposes `XxxArgs` (clap) and `run`.

pub mod bench;
pub mod bridge;
pub mod consume;
pub mod create;
pub mod delete;
pub mod demo;
pub mod group;
pub mod info;
pub mod list;
pub mod metrics;
pub mod observe;
pub mod produce;
pub mod reap;
pub mod soak;
pub mod supervise;
pub mod top;

use crate::cli::{Cli, Command};
use crate::error::CliResult;

/// Run the chosen verb.
pub fn dispatch(cli: Cli) -> CliResult {
    // `demo` runs in a private namespace unless one was chosen.
    let chosen = cli.namespace.clone();
    let ns = cli.namespace.unwrap_or_else(|| "default".to_string());
    // `--storage DIR` on any verb: the library reads SHMQ_DATA_DIR (set
    // here, before any thread starts).
    if let Some(dir) = &cli.storage {
        std::env::set_var(shmq::DATA_DIR_ENV, dir);
    }
    match cli.command {
        Command::Demo(a) => demo::run(chosen.as_deref(), a),
        Command::Create(a) => create::run(&ns, a),
        Command::List(a) => list::run(&ns, a),
        Command::Info(a) => info::run(&ns, a),
        Command::Produce(a) => produce::run(&ns, a),
        Command::Consume(a) => consume::run(&ns, a),
        Command::Delete(a) => delete::run(&ns, a),
        Command::Reap(a) => reap::run(&ns, a),
        Command::Supervise(a) => supervise::run(&ns, a),
        Command::Bench(a) => bench::run(&ns, a),
        Command::DemoProducer(a) => demo::run_producer(&ns, a),
        Command::DemoConsumer(a) => demo::run_consumer(&ns, a),
        Command::Group(a) => group::run(&ns, a),
        Command::Soak(a) => soak::run(&ns, a),
        Command::Metrics(a) => metrics::run(&ns, a),
        Command::Top(a) => top::run(&ns, a),
        Command::Bridge(a) => bridge::run(&ns, a),
    }
}
