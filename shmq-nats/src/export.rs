//! Export: a shmq topic to a JetStream stream, at least once, de-duplicated
//! by message id.
//!
//! The bridge reads the topic as a member of its own consumer group. Each
//! round it publishes a batch (all publishes in flight at once), then awaits
//! every acknowledgement. Per partition, the offsets up to the first failed
//! publish are committed to the group (at once, or every
//! `commit_interval`); from the first failure on, the partition is sought
//! back and sent again after a backoff. So a committed offset always means
//! "stored in the stream", and what a killed bridge published but had not
//! committed is sent again by its successor, with the same
//! `Nats-Msg-Id = <ns>/<topic>/<partition>/<offset>`, which the stream drops
//! as a duplicate within its duplicate window.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::message::PublishMessage as Publish;
use async_nats::jetstream::stream::{Config as StreamConfig, StorageType};
use async_nats::HeaderMap;
use base64::Engine as _;
use shmq::{GroupConsumer, GroupOptions, Record, SeekPolicy, Topic, TopicManager};

use crate::config::ExportConfig;
use crate::conn::{self, backoff, Health};
use crate::error::{BridgeError, Result};
use crate::progress::{Meter, Progress};
use crate::{headers as h, Stop};

/// Exports one shmq topic to one JetStream stream.
///
/// # Examples
/// ```no_run
/// use shmq_nats::{ExportBridge, ExportConfig, Stop};
/// let mut cfg = ExportConfig::new("prod", "orders");
/// cfg.nats.url = "nats://10.0.0.5:4222".into();
/// let bridge = ExportBridge::new(cfg)?;
/// let rt = tokio::runtime::Runtime::new().unwrap();
/// let last = rt.block_on(bridge.run(Stop::new(), |p| println!("{p:?}")))?;
/// # Ok::<(), shmq_nats::BridgeError>(())
/// ```
#[derive(Debug)]
pub struct ExportBridge {
    cfg: ExportConfig,
    topic: Topic,
}

impl ExportBridge {
    /// Check the configuration and open the topic.
    ///
    /// # Errors
    /// [`BridgeError::Config`] for a bad setting; [`BridgeError::Shmq`] if
    /// the topic cannot be opened (e.g. [`shmq::Error::TopicNotFound`]).
    pub fn new(cfg: ExportConfig) -> Result<ExportBridge> {
        cfg.validate()?;
        let mgr = TopicManager::with_namespace(&cfg.namespace)?;
        let topic = mgr.open(&cfg.topic)?;
        Ok(ExportBridge { cfg, topic })
    }

    /// The configuration.
    pub fn config(&self) -> &ExportConfig {
        &self.cfg
    }

    /// Run until `stop` is set: connect (retrying with backoff), make sure
    /// the stream exists, then move records. Calls `emit` with a progress
    /// report every `progress_interval` and once more at the end, and
    /// returns that last report.
    ///
    /// The shmq side never blocks: the bridge polls without waiting and
    /// sleeps (1 ms, then 10 ms when idle for long) on the runtime's timer,
    /// so it can share a runtime with other tasks.
    ///
    /// # Errors
    /// [`BridgeError::Config`] (authentication refused, a missing stream
    /// with `create_stream` off), [`BridgeError::Shmq`] (the topic was
    /// deleted or reclaimed, the group table is full).
    pub async fn run(self, stop: Stop, mut emit: impl FnMut(&Progress)) -> Result<Progress> {
        let cfg = &self.cfg;
        let health = Arc::new(Health::default());
        let mut meter = Meter::new("export", cfg.progress_interval);
        let Some(client) = conn::connect(&cfg.nats, &health, &mut meter, &stop, &mut emit).await?
        else {
            return Ok(finish(&mut meter, &mut emit));
        };
        let js = conn::jetstream(client, &cfg.nats);
        if !self
            .ensure_stream(&js, &mut meter, &stop, &mut emit)
            .await?
        {
            return Ok(finish(&mut meter, &mut emit));
        }
        let mut group = GroupConsumer::join(&self.topic, &cfg.group, GroupOptions::default())?;
        let mut subjects: Vec<String> = Vec::new();
        let mut to_commit: BTreeMap<u32, u64> = BTreeMap::new();
        let mut last_commit = Instant::now();
        let mut idle = 0u32;
        let mut failures = 0u32;
        loop {
            if stop.stopped() {
                break;
            }
            let polled = group.poll(cfg.batch)?;
            meter.p.missed += polled.lagged.iter().map(|l| l.missed).sum::<u64>();
            if polled.records.is_empty() {
                commit(&mut group, &mut to_commit)?;
                self.report(&mut meter, &group, &health, &mut emit, false);
                idle = idle.saturating_add(1);
                let nap = if idle < 1000 { 1 } else { 10 };
                tokio::time::sleep(Duration::from_millis(nap)).await;
                continue;
            }
            idle = 0;
            // Publish the whole batch, then await the acknowledgements.
            let mut acks = Vec::with_capacity(polled.records.len());
            for r in &polled.records {
                let p = r.partition as usize;
                while subjects.len() <= p {
                    let n = subjects.len() as u32;
                    subjects.push(cfg.subject.render(&cfg.namespace, &cfg.topic, n));
                }
                let msg = self.message(r);
                match js.send_publish(subjects[p].clone(), msg).await {
                    Ok(fut) => acks.push(Ok(fut)),
                    Err(e) => acks.push(Err(e)),
                }
            }
            // Await them together: each has its own timeout, and a server
            // gone mid-batch must cost one timeout, not one per record.
            let results = futures_util::future::join_all(acks.into_iter().map(|ack| async {
                match ack {
                    Ok(fut) => fut.await,
                    Err(e) => Err(e),
                }
            }))
            .await;
            let mut first_failed: BTreeMap<u32, u64> = BTreeMap::new();
            for (r, res) in polled.records.iter().zip(results) {
                let failed_before = first_failed.contains_key(&r.partition);
                match res {
                    Ok(ack) => {
                        meter.p.records += 1;
                        if ack.duplicate {
                            meter.p.duplicates += 1;
                        }
                        if failed_before {
                            // Stored after an earlier record of its
                            // partition failed: the stream holds the two
                            // out of order (the earlier one is re-sent).
                            meter.p.reordered += 1;
                        } else {
                            to_commit.insert(r.partition, r.offset + 1);
                        }
                    }
                    Err(e) => {
                        if !failed_before {
                            first_failed.insert(r.partition, r.offset);
                            meter.error(format!(
                                "publish of {}/{}/{}/{}: {e}",
                                cfg.namespace, cfg.topic, r.partition, r.offset
                            ));
                        }
                    }
                }
            }
            if cfg.commit_interval.is_zero() || last_commit.elapsed() >= cfg.commit_interval {
                commit(&mut group, &mut to_commit)?;
                last_commit = Instant::now();
            }
            if first_failed.is_empty() {
                failures = 0;
            } else {
                for (&p, &offset) in &first_failed {
                    // A partition lost to a rebalance meanwhile is its new
                    // owner's to send: nothing to seek then.
                    let _ = group.seek_partition(p, SeekPolicy::Offset(offset));
                }
                meter.p.retries += 1;
                let wait = backoff(failures);
                failures = failures.saturating_add(1);
                self.report(&mut meter, &group, &health, &mut emit, false);
                tokio::time::sleep(wait).await;
            }
            self.report(&mut meter, &group, &health, &mut emit, false);
        }
        commit(&mut group, &mut to_commit)?;
        self.report(&mut meter, &group, &health, &mut emit, false);
        Ok(finish(&mut meter, &mut emit))
    }

    fn message(&self, r: &Record) -> Publish {
        let cfg = &self.cfg;
        let mut hm = HeaderMap::new();
        hm.insert(
            h::MSG_ID,
            format!(
                "{}/{}/{}/{}",
                cfg.namespace, cfg.topic, r.partition, r.offset
            ),
        );
        hm.insert(h::SOURCE, format!("{}/{}", cfg.namespace, cfg.topic));
        hm.insert(h::PARTITION, r.partition.to_string());
        hm.insert(h::OFFSET, r.offset.to_string());
        hm.insert(h::TIMESTAMP, r.timestamp_ns.to_string());
        if let Some(key) = &r.key {
            hm.insert(
                h::KEY,
                base64::engine::general_purpose::STANDARD.encode(key),
            );
        }
        for (name, value) in r.headers() {
            hm.append(h::RECORD_HEADER, crate::encode_record_header(name, value));
        }
        Publish::build()
            .headers(hm)
            .payload(bytes::Bytes::copy_from_slice(&r.value))
    }

    /// Find the stream, or create it. Returns false if stopped meanwhile.
    async fn ensure_stream(
        &self,
        js: &async_nats::jetstream::Context,
        meter: &mut Meter,
        stop: &Stop,
        emit: &mut dyn FnMut(&Progress),
    ) -> Result<bool> {
        let cfg = &self.cfg;
        let mut attempt = 0u32;
        loop {
            if stop.stopped() {
                return Ok(false);
            }
            let err = match js.get_stream(&cfg.stream).await {
                Ok(_) => return Ok(true),
                Err(e) if crate::is_not_found(&e) => {
                    if !cfg.create_stream {
                        return Err(BridgeError::Config(format!(
                            "stream {:?} does not exist; create it (subjects {:?}) or let the \
                             bridge create it",
                            cfg.stream,
                            cfg.subject.wildcard(&cfg.namespace, &cfg.topic)
                        )));
                    }
                    let sc = StreamConfig {
                        name: cfg.stream.clone(),
                        subjects: vec![cfg.subject.wildcard(&cfg.namespace, &cfg.topic)],
                        duplicate_window: cfg.duplicate_window,
                        storage: StorageType::File,
                        ..Default::default()
                    };
                    match js.create_stream(sc).await {
                        Ok(_) => return Ok(true),
                        Err(e) => {
                            let text = e.to_string();
                            // The server's word on a bad config (overlapping
                            // subjects, ...) will not change by retrying.
                            if text.contains("overlap") || text.contains("invalid") {
                                return Err(BridgeError::Nats(format!(
                                    "creating stream {:?}: {text}",
                                    cfg.stream
                                )));
                            }
                            text
                        }
                    }
                }
                Err(e) => e.to_string(),
            };
            meter.p.retries += 1;
            meter.error(format!("stream {:?}: {err}", cfg.stream));
            if let Some(p) = meter.due(attempt == 0) {
                emit(&p);
            }
            tokio::time::sleep(backoff(attempt)).await;
            attempt = attempt.saturating_add(1);
        }
    }

    fn report(
        &self,
        meter: &mut Meter,
        group: &GroupConsumer,
        health: &Health,
        emit: &mut dyn FnMut(&Progress),
        force: bool,
    ) {
        health.sync(meter);
        if let Some(mut p) = meter.due(force) {
            p.lag = group
                .assignment()
                .iter()
                .map(|&part| {
                    let end = self.topic.write_offset(part).unwrap_or(0);
                    end.saturating_sub(group.position(part).unwrap_or(end))
                })
                .sum();
            meter.p.lag = p.lag;
            emit(&p);
        }
    }
}

fn commit(group: &mut GroupConsumer, to_commit: &mut BTreeMap<u32, u64>) -> Result<()> {
    for (p, next) in std::mem::take(to_commit) {
        // false: the partition went to another member; its offsets are its.
        group.commit_offset(p, next)?;
    }
    Ok(())
}

fn finish(meter: &mut Meter, emit: &mut dyn FnMut(&Progress)) -> Progress {
    meter.p.state = "stopped";
    let p = meter.due(true).unwrap_or_else(|| meter.p.clone());
    emit(&p);
    p
}
