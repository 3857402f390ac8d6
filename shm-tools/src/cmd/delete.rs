//! `shmq delete` (placeholder until its owner lands it).

use clap::Args;

use crate::error::{CliError, CliResult};

/// Arguments of `shmq delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {}

/// Run `shmq delete`.
pub fn run(_ns: &str, _args: DeleteArgs) -> CliResult {
    Err(CliError::failed("`shmq delete` is not built yet"))
}
