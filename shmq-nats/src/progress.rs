//! Progress and health: one JSON object per interval.

use std::time::{Duration, Instant};

use serde::Serialize;

/// One progress report (printed by `shmq bridge` as a JSON line).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Progress {
    /// Unix-epoch milliseconds.
    pub ts_ms: u64,
    /// `"export"` or `"import"`.
    pub role: &'static str,
    /// `"running"`, `"stopped"` (the last line of a clean stop).
    pub state: &'static str,
    /// Records moved since start (export: published and acknowledged;
    /// import: written to the topic).
    pub records: u64,
    /// Records per second over the last interval.
    pub rate: f64,
    /// Export: records in the topic not yet published (shmq write cursor
    /// minus the bridge's read position, over its partitions). Import:
    /// messages in the stream not yet delivered to the bridge.
    pub lag: u64,
    /// Export: publishes the stream reported as duplicates (a restarted
    /// bridge's re-sends, dropped by `Nats-Msg-Id`). Import: deliveries
    /// already written (skipped, acknowledged again).
    pub duplicates: u64,
    /// Export: offsets the topic overwrote before the bridge read them
    /// (overwrite topics only; a backpressure topic never loses).
    pub missed: u64,
    /// Export: records stored after an earlier record of their partition
    /// failed to publish (a connection lost mid-batch): the stream holds
    /// those out of order; 0 in a clean run.
    pub reordered: u64,
    /// Import: times a send waited because the backpressure topic was full.
    pub full_waits: u64,
    /// Whether the NATS connection is up.
    pub connected: bool,
    /// Connections lost since start.
    pub disconnects: u64,
    /// Failed attempts (publish, fetch, re-positioning) retried since start.
    pub retries: u64,
    /// The last error seen, if any (cleared by nothing: it is history).
    pub last_error: Option<String>,
}

/// Accumulates counters and decides when a line is due.
#[derive(Debug)]
pub(crate) struct Meter {
    pub(crate) p: Progress,
    every: Duration,
    last_at: Instant,
    last_records: u64,
}

impl Meter {
    pub(crate) fn new(role: &'static str, every: Duration) -> Meter {
        Meter {
            p: Progress {
                role,
                state: "running",
                connected: true,
                ..Progress::default()
            },
            every,
            last_at: Instant::now(),
            last_records: 0,
        }
    }

    pub(crate) fn error(&mut self, e: impl std::fmt::Display) {
        self.p.last_error = Some(e.to_string());
    }

    /// A report if one is due (or `force`).
    pub(crate) fn due(&mut self, force: bool) -> Option<Progress> {
        let now = Instant::now();
        let dt = now.duration_since(self.last_at);
        if !force && dt < self.every {
            return None;
        }
        let secs = dt.as_secs_f64();
        self.p.rate = if secs > 0.0 {
            ((self.p.records - self.last_records) as f64 / secs).round()
        } else {
            0.0
        };
        self.p.ts_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.last_at = now;
        self.last_records = self.p.records;
        Some(self.p.clone())
    }
}
