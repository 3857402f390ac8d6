//! Import: a JetStream stream into a shmq topic, with no duplicate after a
//! crash.
//!
//! # How a restart avoids duplicates
//!
//! JetStream redelivers a message that was delivered but not acknowledged,
//! so a bridge killed between its shmq send and its NATS ack would, on its
//! own, write that record twice. The bridge therefore keeps its position on
//! the shmq side, where the records are:
//!
//! 1. Messages are handled one at a time, in stream order. Before sending
//!    message `seq` to partition `p`, whose next offset is `o` (the bridge
//!    holds the writer lease of every partition of the topic, so it knows
//!    `o` exactly), it sends the record `(seq, p, o)` to a small checkpoint
//!    topic (`<topic>-nats-ckpt`).
//! 2. It sends the record to `p` and checks that it landed at `o`.
//! 3. It acknowledges `seq` to NATS.
//!
//! At start, the last checkpoint `(seq, p, o)` says where it was: if
//! partition `p` now ends past `o`, the record was written and the bridge
//! goes on at `seq + 1`; if not (killed between 1 and 2, or in the middle
//! of 2: the writer's resume discards a half-written slot), it goes on at
//! `seq`. It then deletes and re-creates its durable consumer to deliver
//! from there, so whatever the dead bridge had in flight comes again in
//! order and nothing written comes twice. Acks to NATS are still sent after
//! each write (they drive the stream's retention and monitoring), but the
//! checkpoint, not the ack floor, is the position.
//!
//! # Order
//!
//! A message carries its source partition (header `Shmq-Partition`), and
//! goes to the same partition of the destination (modulo its partition
//! count), in stream order: per-partition order is kept. Messages from
//! other publishers go by key hash, or round-robin by sequence.
//!
//! While running, a message lost in transit (a connection dropped with
//! deliveries in flight) must not be overtaken by later ones: the bridge
//! watches the consumer's delivery sequence, and on a gap, or on any lost
//! connection, re-positions the consumer at the message after the last one
//! it wrote before going on.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use async_nats::jetstream::message::AckKind;
use async_nats::jetstream::{self, Message};
use base64::Engine as _;
use futures_util::StreamExt;
use shmq::{
    Consumer, Overflow, Partitions, Producer, SeekPolicy, Topic, TopicConfig, TopicManager,
};

use crate::config::ImportConfig;
use crate::conn::{self, backoff, Health};
use crate::error::{BridgeError, Result};
use crate::progress::{Meter, Progress};
use crate::{headers as h, Stop};

/// Bytes of one checkpoint record: stream sequence (u64), partition (u32),
/// offset (u64), little-endian.
pub const CHECKPOINT_LEN: usize = 20;

/// One checkpoint: stream sequence `seq` is (about to be) at `offset` of
/// `partition`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// JetStream stream sequence.
    pub seq: u64,
    /// Destination partition.
    pub partition: u32,
    /// The offset it gets there.
    pub offset: u64,
}

impl Checkpoint {
    /// Encode.
    pub fn encode(&self) -> [u8; CHECKPOINT_LEN] {
        let mut b = [0u8; CHECKPOINT_LEN];
        b[..8].copy_from_slice(&self.seq.to_le_bytes());
        b[8..12].copy_from_slice(&self.partition.to_le_bytes());
        b[12..].copy_from_slice(&self.offset.to_le_bytes());
        b
    }

    /// Decode; `None` unless exactly [`CHECKPOINT_LEN`] bytes.
    pub fn decode(b: &[u8]) -> Option<Checkpoint> {
        if b.len() != CHECKPOINT_LEN {
            return None;
        }
        Some(Checkpoint {
            seq: u64::from_le_bytes(b[..8].try_into().ok()?),
            partition: u32::from_le_bytes(b[8..12].try_into().ok()?),
            offset: u64::from_le_bytes(b[12..].try_into().ok()?),
        })
    }
}

/// Imports one JetStream stream into one shmq topic.
///
/// # Examples
/// ```no_run
/// use shmq_nats::{ImportBridge, ImportConfig, Stop};
/// let cfg = ImportConfig::new("b", "orders", "SHMQ_a_orders");
/// let bridge = ImportBridge::new(cfg)?;
/// let rt = tokio::runtime::Runtime::new().unwrap();
/// rt.block_on(bridge.run(Stop::new(), |p| println!("{p:?}")))?;
/// # Ok::<(), shmq_nats::BridgeError>(())
/// ```
pub struct ImportBridge {
    cfg: ImportConfig,
    topic: Topic,
    producer: Producer,
    ckpt: Producer,
    /// The destination partitions, ascending.
    owned: Vec<u32>,
    /// Where to go on: the first stream sequence not yet written (from the
    /// checkpoint), `None` when there is no checkpoint.
    resume_at: Option<u64>,
}

impl std::fmt::Debug for ImportBridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImportBridge")
            .field("cfg", &self.cfg)
            .field("resume_at", &self.resume_at)
            .finish()
    }
}

impl ImportBridge {
    /// Check the configuration, open the destination topic (it must exist),
    /// take the writer lease of all its partitions, open (or create) the
    /// checkpoint topic and read where the last run stopped.
    ///
    /// # Errors
    /// [`BridgeError::Config`]; [`BridgeError::Shmq`], e.g.
    /// [`shmq::Error::TopicNotFound`], or [`shmq::Error::PartitionHeld`] when
    /// another live process (another import bridge) writes the topic.
    pub fn new(cfg: ImportConfig) -> Result<ImportBridge> {
        cfg.validate()?;
        let mgr = TopicManager::with_namespace(&cfg.namespace)?;
        let topic = mgr.open(&cfg.topic)?;
        let producer = Producer::with_partitions(&topic, Partitions::All)?
            .with_send_timeout(Some(Duration::ZERO));
        let ckpt_cfg = TopicConfig::default()
            .partitions(1)
            .max_partitions(1)
            .slots(16)
            .slot_size(CHECKPOINT_LEN as u64)
            .overflow(Overflow::Overwrite)
            .retention(topic.config().retention);
        let ckpt_topic = mgr.open_or_create(&cfg.checkpoint_topic, ckpt_cfg)?;
        let ckpt = Producer::with_partitions(&ckpt_topic, Partitions::All)?;
        let owned = producer.partitions();
        let resume_at = match last_checkpoint(&ckpt_topic)? {
            None => None,
            Some(c) => {
                let end = topic.write_offset(c.partition)?;
                Some(if end > c.offset { c.seq + 1 } else { c.seq })
            }
        };
        Ok(ImportBridge {
            cfg,
            topic,
            producer,
            ckpt,
            owned,
            resume_at,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ImportConfig {
        &self.cfg
    }

    /// The first stream sequence this bridge will write (read from the
    /// checkpoint at [`ImportBridge::new`]); `None` when there is no
    /// checkpoint (a first run: the durable consumer's own position).
    pub fn resume_at(&self) -> Option<u64> {
        self.resume_at
    }

    /// Run until `stop` is set. Calls `emit` with a progress report every
    /// `progress_interval` and once more at the end, and returns the last.
    ///
    /// # Errors
    /// [`BridgeError::Config`] (no such stream, authentication refused),
    /// [`BridgeError::Shmq`] (the topic was deleted or reclaimed, or its
    /// writer fenced), [`BridgeError::Conflict`] (someone else writes the
    /// topic's partitions).
    pub async fn run(mut self, stop: Stop, mut emit: impl FnMut(&Progress)) -> Result<Progress> {
        let health = Arc::new(Health::default());
        let mut meter = Meter::new("import", self.cfg.progress_interval);
        let Some(client) =
            conn::connect(&self.cfg.nats, &health, &mut meter, &stop, &mut emit).await?
        else {
            return Ok(finish(&mut meter, &mut emit));
        };
        let js = conn::jetstream(client, &self.cfg.nats);
        // The last stream sequence written (by this run or, per the
        // checkpoint, an earlier one).
        let mut last_done: Option<u64> = self.resume_at.map(|s| s.saturating_sub(1));
        let mut reposition = self.resume_at.is_some();
        let mut started = false;
        let mut attempt = 0u32;
        'outer: loop {
            if stop.stopped() {
                break;
            }
            let seen_disconnects = health.disconnects.load(Ordering::SeqCst);
            let consumer = match self.consumer(&js, last_done, reposition).await {
                Ok(c) => c,
                // A missing stream is fatal at start; later (a server
                // still recovering its streams after a restart) it is retried.
                Err(e @ BridgeError::Config(_)) if !started => return Err(e),
                Err(e) => {
                    meter.p.retries += 1;
                    meter.error(&e);
                    health.sync(&mut meter);
                    if let Some(p) = meter.due(false) {
                        emit(&p);
                    }
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt = attempt.saturating_add(1);
                    continue;
                }
            };
            reposition = true; // any later (re)start of the stream re-positions
            started = true;
            let mut messages = match consumer
                .stream()
                .max_messages_per_batch(self.cfg.batch)
                .expires(Duration::from_secs(5))
                .heartbeat(Duration::from_secs(1))
                .messages()
                .await
            {
                Ok(m) => m,
                Err(e) => {
                    meter.p.retries += 1;
                    meter.error(format!("pulling from {:?}: {e}", self.cfg.stream));
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt = attempt.saturating_add(1);
                    continue;
                }
            };
            // Deliveries of this consumer incarnation are numbered from 1
            // when it was (re)created here; a jump means one was lost.
            let mut last_delivery: Option<u64> = None;
            loop {
                if stop.stopped() {
                    break 'outer;
                }
                if health.disconnects.load(Ordering::SeqCst) != seen_disconnects {
                    meter.error("connection lost; re-positioning the consumer");
                    continue 'outer;
                }
                health.sync(&mut meter);
                if let Some(p) = meter.due(false) {
                    emit(&p);
                }
                let next =
                    match tokio::time::timeout(Duration::from_millis(200), messages.next()).await {
                        Err(_) => continue, // nothing for a while: check stop, report
                        Ok(None) => {
                            meter.error("message stream ended");
                            continue 'outer;
                        }
                        Ok(Some(Err(e))) => {
                            meter.p.retries += 1;
                            meter.error(format!("pulling from {:?}: {e}", self.cfg.stream));
                            tokio::time::sleep(backoff(attempt)).await;
                            attempt = attempt.saturating_add(1);
                            continue 'outer;
                        }
                        Ok(Some(Ok(m))) => m,
                    };
                let Ok(info) = next.info() else {
                    meter.error("a message without JetStream metadata; skipped");
                    continue;
                };
                let (seq, delivery, pending) =
                    (info.stream_sequence, info.consumer_sequence, info.pending);
                meter.p.lag = pending;
                if let Some(d) = last_delivery {
                    if delivery > d + 1 {
                        meter.error(format!(
                            "deliveries {} to {} never arrived; re-positioning the consumer",
                            d + 1,
                            delivery - 1
                        ));
                        meter.p.retries += 1;
                        continue 'outer;
                    }
                }
                last_delivery = Some(delivery.max(last_delivery.unwrap_or(0)));
                if last_done.is_some_and(|l| seq <= l) {
                    meter.p.duplicates += 1;
                    let _ = next.ack().await;
                    continue;
                }
                match self.write(&next, seq, &mut meter, &stop).await? {
                    true => {}
                    false => break 'outer, // stopped while the topic was full
                }
                last_done = Some(seq);
                meter.p.records += 1;
                attempt = 0;
                if let Err(e) = next.ack().await {
                    // Redelivered later and skipped as written.
                    meter.error(format!("ack of stream sequence {seq}: {e}"));
                }
            }
        }
        Ok(finish(&mut meter, &mut emit))
    }

    /// Get the durable consumer, re-created to deliver from the message after
    /// `last_done` when `reposition` (and a position is known).
    async fn consumer(
        &self,
        js: &jetstream::Context,
        last_done: Option<u64>,
        reposition: bool,
    ) -> Result<jetstream::consumer::Consumer<pull::Config>> {
        let cfg = &self.cfg;
        let stream = match js.get_stream(&cfg.stream).await {
            Ok(s) => s,
            Err(e) if crate::is_not_found(&e) => {
                return Err(BridgeError::Config(format!(
                    "stream {:?} does not exist on the server; start the export first (it \
                     creates the stream) or give the right --stream",
                    cfg.stream
                )))
            }
            Err(e) => return Err(BridgeError::Nats(format!("stream {:?}: {e}", cfg.stream))),
        };
        let config = |deliver_policy| pull::Config {
            durable_name: Some(cfg.consumer.clone()),
            deliver_policy,
            ack_policy: AckPolicy::Explicit,
            ack_wait: cfg.ack_wait,
            filter_subject: cfg.filter_subject.clone().unwrap_or_default(),
            max_ack_pending: (cfg.batch as i64).saturating_mul(4).max(1000),
            ..Default::default()
        };
        match (reposition, last_done) {
            (true, Some(done)) => {
                if let Err(e) = stream.delete_consumer(&cfg.consumer).await {
                    if !e.to_string().contains("not found") {
                        return Err(BridgeError::Nats(format!(
                            "deleting consumer {:?} to re-position it: {e}",
                            cfg.consumer
                        )));
                    }
                }
                let start = DeliverPolicy::ByStartSequence {
                    start_sequence: done + 1,
                };
                stream
                    .create_consumer(config(start))
                    .await
                    .map_err(|e| BridgeError::Nats(format!("consumer {:?}: {e}", cfg.consumer)))
            }
            _ => stream
                .get_or_create_consumer(&cfg.consumer, config(DeliverPolicy::All))
                .await
                .map_err(|e| BridgeError::Nats(format!("consumer {:?}: {e}", cfg.consumer))),
        }
    }

    /// Write one message: checkpoint, then send (waiting, never dropping,
    /// while a backpressure topic is full). Returns false if stopped while
    /// waiting.
    async fn write(
        &mut self,
        m: &Message,
        seq: u64,
        meter: &mut Meter,
        stop: &Stop,
    ) -> Result<bool> {
        let headers = m.headers.as_ref();
        let get = |name: &str| {
            headers
                .and_then(|hm| hm.get(name))
                .map(|v| v.as_str().to_string())
        };
        let key = match get(h::KEY) {
            Some(k) => Some(
                base64::engine::general_purpose::STANDARD
                    .decode(k.as_bytes())
                    .map_err(|e| {
                        BridgeError::Conflict(format!(
                            "stream sequence {seq}: bad {} header: {e}",
                            h::KEY
                        ))
                    })?,
            ),
            None => None,
        };
        let n = self.owned.len().max(1) as u64;
        let index = match get(h::PARTITION).and_then(|p| p.parse::<u64>().ok()) {
            Some(p) => p % n,
            None => match &key {
                Some(k) => u64::from(shmq::key_partition(k, n as u32)),
                None => seq % n,
            },
        };
        let partition = self.owned[index as usize];
        let offset = self.topic.write_offset(partition)?;
        let c = Checkpoint {
            seq,
            partition,
            offset,
        };
        self.ckpt.send(&c.encode())?;
        let mut record_headers = shmq::Headers::new();
        if let Some(hm) = headers {
            for v in hm.get_all(h::RECORD_HEADER) {
                let (name, value) = crate::decode_record_header(v.as_str()).ok_or_else(|| {
                    BridgeError::Conflict(format!(
                        "stream sequence {seq}: bad {} header {:?}",
                        h::RECORD_HEADER,
                        v.as_str()
                    ))
                })?;
                record_headers.push(&name, value)?;
            }
        }
        let mut waited = 0u32;
        let mut last_progress = Instant::now();
        loop {
            match self
                .producer
                .send_with_to(partition, key.as_deref(), &record_headers, &m.payload)
            {
                Ok(sent) => {
                    if sent.offset != offset {
                        return Err(BridgeError::Conflict(format!(
                            "stream sequence {seq} landed at {}/{} offset {} instead of {offset}: \
                             another process writes this topic's partitions; an import bridge \
                             must be their only writer",
                            self.cfg.topic, partition, sent.offset
                        )));
                    }
                    return Ok(true);
                }
                Err(shmq::Error::Full { .. }) => {
                    // A backpressure topic: slow down, keep the message.
                    meter.p.full_waits += 1;
                    if stop.stopped() {
                        return Ok(false);
                    }
                    if last_progress.elapsed() >= self.cfg.ack_wait / 3 {
                        let _ = m.ack_with(AckKind::Progress).await;
                        last_progress = Instant::now();
                    }
                    tokio::time::sleep(Duration::from_millis(1u64 << waited.min(5))).await;
                    waited = waited.saturating_add(1);
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// The last complete checkpoint record, if any.
fn last_checkpoint(ckpt: &Topic) -> Result<Option<Checkpoint>> {
    let end = ckpt.write_offset(0)?;
    if end == 0 {
        return Ok(None);
    }
    let mut reader = Consumer::reader(ckpt)?;
    reader.seek_partition(0, SeekPolicy::Offset(end - 1))?;
    let got = reader.poll(1)?;
    match got.records.first() {
        Some(r) => match Checkpoint::decode(&r.value) {
            Some(c) => Ok(Some(c)),
            None => Err(BridgeError::Config(format!(
                "checkpoint topic {:?} holds a record of {} bytes, not a checkpoint; give \
                 another --checkpoint-topic",
                ckpt.name(),
                r.value.len()
            ))),
        },
        None => Ok(None),
    }
}

fn finish(meter: &mut Meter, emit: &mut dyn FnMut(&Progress)) -> Progress {
    meter.p.state = "stopped";
    let p = meter.due(true).unwrap_or_else(|| meter.p.clone());
    emit(&p);
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_round_trips_and_rejects_other_lengths() {
        let c = Checkpoint {
            seq: u64::MAX - 3,
            partition: 7,
            offset: 1 << 40,
        };
        assert_eq!(Checkpoint::decode(&c.encode()), Some(c));
        assert_eq!(Checkpoint::decode(&[0u8; 19]), None);
        assert_eq!(Checkpoint::decode(&[0u8; 21]), None);
    }
}
