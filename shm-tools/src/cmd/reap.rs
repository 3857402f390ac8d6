//! `shmq reap` (placeholder until its owner lands it).

use clap::Args;

use crate::error::{CliError, CliResult};

/// Arguments of `shmq reap`.
#[derive(Debug, Args)]
pub struct ReapArgs {}

/// Run `shmq reap`.
pub fn run(_ns: &str, _args: ReapArgs) -> CliResult {
    Err(CliError::failed("`shmq reap` is not built yet"))
}
