//! `shmq delete`: delete a topic and everything in it.

use std::io::Write;

use clap::Args;
use shmq::{Error, TopicManager};

use crate::error::{CliError, CliResult};

/// Arguments of `shmq delete`.
#[derive(Debug, Args)]
#[command(after_help = "\
Processes still attached get a 'lease expired' error on their next send or
poll; their messages are gone.

Examples:
  shmq delete orders
  shmq delete orders --namespace prod")]
pub struct DeleteArgs {
    /// Topic name.
    pub topic: String,
}

/// Run `shmq delete`.
pub fn run(ns: &str, args: DeleteArgs) -> CliResult {
    let mgr = TopicManager::with_namespace(ns)?;
    if !mgr.delete(&args.topic)? {
        return Err(CliError::from(Error::TopicNotFound {
            namespace: ns.to_string(),
            topic: args.topic,
        }));
    }
    writeln!(
        std::io::stdout().lock(),
        "deleted topic {:?} from namespace {ns:?}",
        args.topic
    )?;
    Ok(())
}
