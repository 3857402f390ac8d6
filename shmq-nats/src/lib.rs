//! # shmq-nats — a bridge between shmq topics and NATS JetStream
//!
//! shmq moves records between processes on one host; to go beyond it, this
//! crate bridges topics to an existing distributed log, NATS JetStream,
//! rather than speaking a network protocol of its own:
//!
//! * [`ExportBridge`]: a shmq topic → a JetStream stream. At least once,
//!   de-duplicated by the server: each record is published with
//!   `Nats-Msg-Id = <ns>/<topic>/<partition>/<offset>`, and shmq offsets are
//!   committed only after JetStream acknowledged the publish, so a restarted
//!   bridge re-sends only what the stream then drops as duplicates.
//! * [`ImportBridge`]: a JetStream durable consumer → a shmq topic. Acks to
//!   NATS after the shmq send; a checkpoint written before each send lets a
//!   restarted bridge go on without writing any record twice (see the
//!   `import` module's notes), and a full backpressure topic slows it down
//!   instead of dropping.
//!
//! Two hosts: `shmq bridge export` on host A, `shmq bridge import` on host
//! B, both pointed at the same NATS server or cluster.
//!
//! Message format: the record's value is the NATS payload; its key, source
//! partition and offset, and timestamp travel as headers ([`headers`]).
//!
//! Both bridges report progress as [`Progress`] (the CLI prints JSON lines),
//! reconnect with backoff when the server goes away, and fail with
//! [`BridgeError::Config`] on a configuration error.

#![warn(missing_docs)]

mod config;
mod conn;
mod error;
mod export;
mod import;
mod progress;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub use config::{
    default_stream, ExportConfig, ExportSection, FileConfig, ImportConfig, ImportSection,
    NatsOptions, SubjectTemplate, DEFAULT_EXPORT_GROUP, DEFAULT_SUBJECT, DEFAULT_URL,
};
pub use error::{BridgeError, Result};
pub use export::ExportBridge;
pub use import::{Checkpoint, ImportBridge, CHECKPOINT_LEN};
pub use progress::Progress;

/// The NATS headers a bridged record carries.
pub mod headers {
    /// JetStream's de-duplication id: `<ns>/<topic>/<partition>/<offset>`.
    pub const MSG_ID: &str = "Nats-Msg-Id";
    /// `<ns>/<topic>` the record came from.
    pub const SOURCE: &str = "Shmq-Source";
    /// Source partition (decimal).
    pub const PARTITION: &str = "Shmq-Partition";
    /// Source offset (decimal).
    pub const OFFSET: &str = "Shmq-Offset";
    /// The record's timestamp, Unix-epoch nanoseconds (decimal).
    pub const TIMESTAMP: &str = "Shmq-Timestamp";
    /// The record's key, base64 (standard alphabet, padded); absent without key.
    pub const KEY: &str = "Shmq-Key";
    /// One record header per value, in record order (the name may repeat):
    /// `base64(name) "." base64(value)`, so any header name and any value
    /// bytes survive NATS' header syntax.
    pub const RECORD_HEADER: &str = "Shmq-Header";
}

/// Tells a running bridge to stop (cheap to clone; set from a signal
/// handler or another task). The bridge finishes the record in hand,
/// commits and returns.
#[derive(Clone, Debug, Default)]
pub struct Stop(Arc<AtomicBool>);

impl Stop {
    /// A handle that is not set.
    pub fn new() -> Stop {
        Stop::default()
    }
    /// Ask the bridge to stop.
    pub fn stop(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    /// Whether stop was asked.
    pub fn stopped(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
    /// The flag itself (e.g. for `signal_hook::flag::register`).
    pub fn flag(&self) -> &Arc<AtomicBool> {
        &self.0
    }
}

/// Either bridge, for callers that pick one at run time (`shmq bridge`).
#[derive(Debug)]
pub enum Bridge {
    /// A topic to a stream.
    Export(Box<ExportBridge>),
    /// A stream to a topic.
    Import(Box<ImportBridge>),
}

impl Bridge {
    /// Run the bridge until `stop` (see [`ExportBridge::run`],
    /// [`ImportBridge::run`]).
    ///
    /// # Errors
    /// As the bridge's own `run`.
    pub async fn run(self, stop: Stop, emit: impl FnMut(&Progress)) -> Result<Progress> {
        match self {
            Bridge::Export(b) => (*b).run(stop, emit).await,
            Bridge::Import(b) => (*b).run(stop, emit).await,
        }
    }

    /// Run on a runtime of its own (two worker threads for the NATS client;
    /// the bridge loop runs on the calling thread).
    ///
    /// # Errors
    /// As [`Bridge::run`], and [`BridgeError::Nats`] if the runtime cannot
    /// be built.
    pub fn run_blocking(self, stop: Stop, emit: impl FnMut(&Progress)) -> Result<Progress> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| BridgeError::Nats(format!("starting the async runtime: {e}")))?;
        rt.block_on(self.run(stop, emit))
    }
}

/// Whether a JetStream API error says "stream not found".
pub(crate) fn is_not_found(e: &async_nats::jetstream::context::GetStreamError) -> bool {
    use async_nats::jetstream::context::GetStreamErrorKind;
    use async_nats::jetstream::ErrorCode;
    matches!(e.kind(), GetStreamErrorKind::JetStream(j) if j.error_code() == ErrorCode::STREAM_NOT_FOUND)
}

/// A record header as one `Shmq-Header` NATS header value:
/// `base64(name) "." base64(value)` (standard alphabet, which has no `.`).
pub(crate) fn encode_record_header(name: &str, value: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    format!("{}.{}", b64.encode(name), b64.encode(value))
}

/// The inverse of [`encode_record_header`]; `None` for anything it did not
/// produce (the caller reports the message as malformed).
pub(crate) fn decode_record_header(v: &str) -> Option<(String, Vec<u8>)> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let (name, value) = v.split_once('.')?;
    let name = String::from_utf8(b64.decode(name).ok()?).ok()?;
    Some((name, b64.decode(value).ok()?))
}

#[cfg(test)]
mod record_header_tests {
    use super::{decode_record_header, encode_record_header};

    #[test]
    fn record_headers_round_trip_any_name_and_bytes() {
        for (name, value) in [
            ("content-type", &b"text/plain"[..]),
            ("a b:c.d", &[0u8, 255, b'.', b'\n'][..]),
            ("", &[][..]),
        ] {
            let enc = encode_record_header(name, value);
            assert!(!enc.contains(['\r', '\n', ' ']), "{enc:?}");
            assert_eq!(
                decode_record_header(&enc),
                Some((name.to_string(), value.to_vec()))
            );
        }
        assert_eq!(decode_record_header("no-dot"), None);
        assert_eq!(decode_record_header("!!.AA=="), None);
    }
}
