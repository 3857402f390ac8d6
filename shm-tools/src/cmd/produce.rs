//! `shmq produce`: send one message per line of stdin (or of a file).

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde_json::json;
use shmq::{Headers, Partitions, Producer, TopicManager};

use crate::cli::Format;
use crate::error::{CliError, CliResult};
use crate::util::parse_duration;

/// Arguments of `shmq produce`.
#[derive(Debug, Args)]
#[command(after_help = "\
Each line (without its \\n or \\r\\n) is one message; bytes are sent as they are.
Without --partition, the command writes every partition that has no live
producer (round-robin), or, if other producers hold them all, a new partition:
the topic grows by one (up to its --max-partitions). So any number of
`shmq produce` processes can feed one topic at once. With --key, every message
goes to the same one of those partitions (order kept for this run). Each
--header NAME=VALUE (repeatable) is attached to every message; `shmq consume
--format json` shows them.

Examples:
  printf 'a\\nb\\n' | shmq produce orders
  shmq produce orders --key user-42 --file events.txt
  seq 1000 | shmq produce orders --partition 2 --format json
  echo '{}' | shmq produce orders --header content-type=application/json --header trace=1")]
pub struct ProduceArgs {
    /// Topic name.
    pub topic: String,
    /// Key for every message: they all go to one partition (the key's stable
    /// hash among the partitions this run writes), so their order is kept.
    #[arg(long)]
    pub key: Option<String>,
    /// Write only this partition.
    #[arg(long, value_name = "N")]
    pub partition: Option<u32>,
    /// Read lines from this file instead of stdin.
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// On a backpressure topic, give up (exit code 9) when a message waits
    /// longer than this for room; by default wait as long as it takes.
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Output format of the summary.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// A record header NAME=VALUE sent with every message (repeatable; the
    /// value is everything after the first `=`).
    #[arg(long = "header", value_name = "NAME=VALUE", value_parser = parse_header)]
    pub headers: Vec<(String, String)>,
}

fn parse_header(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_string(), value.to_string())),
        _ => Err(format!("expected NAME=VALUE, got {s:?}")),
    }
}

/// Run `shmq produce`.
pub fn run(ns: &str, args: ProduceArgs) -> CliResult {
    let mgr = TopicManager::with_namespace(ns)?;
    let topic = mgr.open(&args.topic)?;
    let key = args.key.as_deref().map(str::as_bytes);
    let target = args.partition;
    let which = target.map_or(Partitions::Auto, |p| Partitions::Only(vec![p]));
    let mut producer = Producer::with_partitions(&topic, which)
        .map_err(|e| CliError::from(e).context(format!("cannot write topic {:?}", args.topic)))?
        .with_send_timeout(args.timeout);

    let input: Box<dyn BufRead> = match &args.file {
        Some(path) => Box::new(BufReader::new(File::open(path).map_err(|e| {
            CliError::failed(format!("cannot read {}: {e}", path.display()))
        })?)),
        None => Box::new(std::io::stdin().lock()),
    };
    let mut per_partition = std::collections::BTreeMap::<u32, u64>::new();
    let mut sent = 0u64;
    let mut headers = Headers::new();
    for (name, value) in &args.headers {
        headers
            .push(name, value)
            .map_err(|e| CliError::from(e).context("--header"))?;
    }
    let result = send_lines(input, &mut producer, target, key, &headers, |p| {
        sent += 1;
        *per_partition.entry(p).or_default() += 1;
    });
    drop(producer);
    if let Err(e) = result {
        if sent > 0 {
            let noun = if sent == 1 {
                "message was"
            } else {
                "messages were"
            };
            eprintln!("shmq: {sent} {noun} sent before the error");
        }
        return Err(e);
    }
    let mut out = std::io::stdout().lock();
    match args.format {
        Format::Json => {
            let parts: Vec<_> = per_partition
                .iter()
                .map(|(p, &n)| json!({ "partition": p, "sent": n }))
                .collect();
            writeln!(
                out,
                "{}",
                json!({ "topic": args.topic, "sent": sent, "partitions": parts })
            )?;
        }
        Format::Table => {
            let noun = if sent == 1 { "message" } else { "messages" };
            writeln!(out, "sent {sent} {noun} to topic {:?}", args.topic)?;
        }
    }
    Ok(())
}

fn send_lines(
    mut input: Box<dyn BufRead>,
    producer: &mut Producer,
    target: Option<u32>,
    key: Option<&[u8]>,
    headers: &Headers,
    mut on_sent: impl FnMut(u32),
) -> CliResult {
    let mut line = Vec::new();
    let mut n = 0u64;
    loop {
        line.clear();
        let read = input
            .read_until(b'\n', &mut line)
            .map_err(|e| CliError::failed(format!("reading input: {e}")))?;
        if read == 0 {
            return Ok(());
        }
        n += 1;
        if line.last() == Some(&b'\n') {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
        }
        let sent = match (target, key) {
            (Some(p), key) if !headers.is_empty() => producer.send_with_to(p, key, headers, &line),
            (None, key) if !headers.is_empty() => producer.send_with(key, headers, &line),
            (Some(p), key) => producer.send_to(p, key, &line),
            (None, Some(k)) => producer.send_keyed(k, &line),
            (None, None) => producer.send(&line),
        }
        .map_err(|e| CliError::from(e).context(format!("line {n}")))?;
        on_sent(sent.partition);
    }
}
