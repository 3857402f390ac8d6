//! The async round trip: the latency ping-pong of `queue::latency`, with
//! both processes on a tokio current-thread runtime, sending with
//! `AsyncProducer::send(..).await` and receiving with
//! `AsyncConsumer::recv_into(..).await`. A reader that finds nothing arms its
//! topic's hub (a library thread parked on the futex) and the runtime
//! sleeps, so each one-way hop costs the futex wake-up of the parked row
//! plus the hub's hand-off to the runtime thread: the figure is the price of
//! not blocking a runtime thread.

use std::time::{Duration, Instant};

use shmq::{
    AsyncConsumer, AsyncProducer, Consumer, Overflow, Producer, RecordBuf, SeekPolicy, Topic,
    TopicConfig, TopicManager,
};

use super::harness::{report, Cpus, Kid, Latency};
use super::ChildArgs;
use crate::error::{CliError, CliResult};

/// Group name of the bench's async consumers.
const GROUP: &str = "bench-async";

/// Topic names (apart from the blocking rows' so the rows never share one).
const PING: &str = "async-ping";
const PONG: &str = "async-pong";

fn topic(mgr: &TopicManager, name: &str, size: usize) -> CliResult<Topic> {
    let config = TopicConfig::default()
        .partitions(1)
        .slots(256)
        .slot_size(size.max(8) as u64)
        .overflow(Overflow::Overwrite);
    let _ = mgr.delete(name);
    Ok(mgr.create(name, config)?)
}

fn runtime() -> CliResult<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| CliError::failed(format!("cannot start a tokio runtime: {e}")))
}

/// Round trips through two topics (`async-ping` parent → child,
/// `async-pong` back), both sides async.
pub fn latency(
    mgr: &TopicManager,
    cpus: Cpus,
    size: usize,
    warmup: u64,
    count: u64,
) -> CliResult<Latency> {
    let ping = topic(mgr, PING, size)?;
    let pong = topic(mgr, PONG, size)?;
    let total = warmup + count;
    let mut producer = AsyncProducer::new(Producer::new(&ping)?)?;
    let mut consumer = Consumer::new(&pong, GROUP)?;
    consumer.seek(SeekPolicy::Latest)?;
    let mut consumer = AsyncConsumer::new(consumer)?;
    let mut kid = Kid::spawn(
        mgr.namespace(),
        "shmq-async-echo",
        cpus.child,
        &[
            "--count".into(),
            total.to_string(),
            "--size".into(),
            size.to_string(),
        ],
    )?;
    kid.expect("ready")?;
    let rt = runtime()?;
    let mut msg = vec![0u8; size.max(8)];
    let mut buf = RecordBuf::default();
    let mut samples = Vec::with_capacity(count as usize);
    let run: CliResult = rt.block_on(async {
        let mut t = Instant::now();
        for i in 0..total {
            msg[..8].copy_from_slice(&i.to_le_bytes());
            producer.send(&msg).await?;
            tokio::time::timeout(Duration::from_secs(10), consumer.recv_into(&mut buf))
                .await
                .map_err(|_| CliError::failed("async ping-pong: no echo within 10 s"))??;
            let now = Instant::now();
            if buf.value().get(..8) != Some(&msg[..8]) {
                return Err(CliError::failed("async ping-pong echo mismatch"));
            }
            if i >= warmup {
                samples.push((now - t).as_nanos() as u64);
            }
            t = now;
        }
        Ok(())
    });
    run?;
    kid.finish()?;
    drop((producer, consumer, ping, pong));
    mgr.delete(PING)?;
    mgr.delete(PONG)?;
    Ok(Latency::from_samples(&mut samples))
}

/// Child side of [`latency`]: echo every ping as a pong, async.
pub fn echo(ns: &str, args: &ChildArgs) -> CliResult {
    let mgr = TopicManager::with_namespace(ns)?;
    let ping = mgr.open(PING)?;
    let pong = mgr.open(PONG)?;
    let mut consumer = Consumer::new(&ping, GROUP)?;
    consumer.seek(SeekPolicy::Latest)?;
    let mut consumer = AsyncConsumer::new(consumer)?;
    let mut producer = AsyncProducer::new(Producer::new(&pong)?)?;
    let rt = runtime()?;
    let mut buf = RecordBuf::default();
    report("ready")?;
    rt.block_on(async {
        for _ in 0..args.count {
            tokio::time::timeout(Duration::from_secs(10), consumer.recv_into(&mut buf))
                .await
                .map_err(|_| CliError::failed("async echo: no ping within 10 s"))??;
            producer.send(buf.value()).await?;
        }
        Ok(())
    })
}
