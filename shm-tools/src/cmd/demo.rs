//! `shmq demo` (placeholder until its owner lands it).

use clap::Args;

use crate::error::{CliError, CliResult};

/// Arguments of `shmq demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {}

/// Run `shmq demo`.
pub fn run(_ns: &str, _args: DemoArgs) -> CliResult {
    Err(CliError::failed("`shmq demo` is not built yet"))
}
