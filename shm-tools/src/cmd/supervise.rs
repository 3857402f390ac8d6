//! `shmq supervise` (placeholder until its owner lands it).

use clap::Args;

use crate::error::{CliError, CliResult};

/// Arguments of `shmq supervise`.
#[derive(Debug, Args)]
pub struct SuperviseArgs {}

/// Run `shmq supervise`.
pub fn run(_ns: &str, _args: SuperviseArgs) -> CliResult {
    Err(CliError::failed("`shmq supervise` is not built yet"))
}
