//! `shmq list` (placeholder until its owner lands it).

use clap::Args;

use crate::error::{CliError, CliResult};

/// Arguments of `shmq list`.
#[derive(Debug, Args)]
pub struct ListArgs {}

/// Run `shmq list`.
pub fn run(_ns: &str, _args: ListArgs) -> CliResult {
    Err(CliError::failed("`shmq list` is not built yet"))
}
