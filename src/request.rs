//! Request/reply over two kinds of topic: the sidecar pattern.
//!
//! * The **service topic** (one per service, e.g. `"resize"`) carries
//!   requests. Each [`Requester`] writes a partition of its own
//!   ([`Partitions::AnyFree`]`(1)`: the topic grows by one partition per
//!   requester process, up to its `max_partitions`). The [`Responder`]s are
//!   the members of one consumer group on it, so several responder
//!   processes share the requesters' partitions and rebalance when one
//!   comes or goes; a request is answered once by one of them.
//! * Each requester owns a **reply topic** (`<service>-rp-<token>-<n>`,
//!   created by the requester, deleted when it is dropped). A request
//!   carries two headers: [`CORRELATION_HEADER`] (a number unique per
//!   requester) and [`REPLY_TO_HEADER`] (the reply topic's name). A
//!   responder replies into that topic, on a partition of its own there (so
//!   any number of responders can answer one requester without sharing a
//!   writer), with the same correlation id. Replies therefore reach only
//!   the requester that asked, and it matches each to its request by id.
//!
//! Requests time out ([`Error::Timeout`]); a reply that comes after its
//! request timed out is recognised by its id and dropped. The reply topic
//! overwrites (a responder never waits for a slow or vanished requester):
//! a requester that does not collect replies faster than its ring turns
//! over loses them, and then its requests time out. The service topic
//! applies backpressure, so a burst of requests waits for the responders
//! instead of overwriting requests not yet answered.
//!
//! A responder commits what it polled only once every request of the batch
//! was handed out by [`Responder::recv`] (and so, normally, answered): a
//! responder killed mid-batch leaves those requests to the group's next
//! owner of the partition (at-least-once; a request may be answered twice).
//!
//! ```no_run
//! use std::time::Duration;
//! use shmq::{Requester, Responder, TopicManager};
//!
//! let mgr = TopicManager::new()?;
//! // The sidecar (any number of processes): answer each request.
//! let mut responder = Responder::new(&mgr, "upper", "sidecars")?;
//! responder.serve(Duration::from_millis(100), |req| req.record.value().to_ascii_uppercase())?;
//!
//! // A client (any number of processes): ask and wait for the answer.
//! let mut requester = Requester::new(&mgr, "upper")?;
//! let reply = requester.request(b"hello", Duration::from_secs(1))?;
//! assert_eq!(reply.value(), b"HELLO");
//! # Ok::<(), shmq::Error>(())
//! ```

use crate::sync::{AtomicU32, Ordering};
use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use crate::config::{Overflow, TopicConfig};
use crate::consumer::{Consumer, Record};
use crate::deadline::Deadline;
use crate::error::{Error, Result};
use crate::group::{GroupConsumer, GroupOptions};
use crate::headers::Headers;
use crate::producer::{Partitions, Producer, Sent};
use crate::topic::{Topic, TopicManager};

/// Header carrying a request's correlation id (decimal ASCII), copied into
/// its reply.
pub const CORRELATION_HEADER: &str = "shmq-correlation-id";
/// Header naming the topic a request's reply goes to.
pub const REPLY_TO_HEADER: &str = "shmq-reply-to";

/// Reply topics one responder keeps a producer open for; beyond this the
/// least recently used is closed (it is reopened if that requester asks
/// again).
const REPLY_CACHE: usize = 256;

/// The service topic's configuration when a requester or responder has to
/// create it: one partition to start with (each requester process adds
/// its own), backpressure.
pub fn service_config() -> TopicConfig {
    TopicConfig::default()
        .partitions(1)
        .slots(256)
        .overflow(Overflow::Backpressure)
}

/// Reply topics: one partition to start with (each responder that answers
/// adds its own), overwrite, and a short retention: the requester renews
/// it while it lives, and the supervisor reclaims it a minute after a
/// killed requester stopped renewing.
fn reply_config(slot_size: u64) -> TopicConfig {
    TopicConfig::default()
        .partitions(1)
        .slots(256)
        .slot_size(slot_size)
        .overflow(Overflow::Overwrite)
        .retention(Duration::from_secs(60))
}

/// Numbers the reply topics of this process.
static REPLY_TOPICS: AtomicU32 = AtomicU32::new(0);

/// The client side: sends requests on the service topic and waits for
/// their replies on its own reply topic. See the module docs.
pub struct Requester {
    mgr: TopicManager,
    producer: Producer,
    replies: Consumer,
    reply_topic: String,
    next_id: u64,
    headers: Headers,
}

impl std::fmt::Debug for Requester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Requester")
            .field("service", &self.producer.topic().name())
            .field("reply_topic", &self.reply_topic)
            .finish()
    }
}

impl Requester {
    /// A requester of `service` (opened, or created with
    /// [`service_config`]), with a fresh reply topic.
    ///
    /// # Errors
    /// [`Error::InvalidName`] (the service name must leave room for the
    /// reply topic's suffix: at most 40 bytes), [`Error::PartitionLimit`] /
    /// [`Error::NoFreePartitions`] when the service topic has as many
    /// requesters as its `max_partitions`, creation errors.
    pub fn new(mgr: &TopicManager, service: &str) -> Result<Requester> {
        Self::with_config(mgr, service, service_config())
    }

    /// Like [`Requester::new`], creating the service topic with `config` if
    /// it does not exist.
    ///
    /// # Errors
    /// As [`Requester::new`], and [`Error::ConfigMismatch`].
    pub fn with_config(
        mgr: &TopicManager,
        service: &str,
        config: TopicConfig,
    ) -> Result<Requester> {
        if service.len() > 40 {
            return Err(Error::InvalidName {
                what: "service",
                name: service.to_string(),
                reason: "request/reply service names are at most 40 bytes (the reply topics add a suffix)".into(),
            });
        }
        let topic = mgr.open_or_create(service, config)?;
        let n = REPLY_TOPICS.fetch_add(1, Ordering::Relaxed);
        let reply_topic = format!("{service}-rp-{:x}-{n}", mgr.token_id());
        // The name holds this process's live token: a topic of that name
        // can only be left over by a process that had our token before.
        mgr.delete(&reply_topic)?;
        let replies = mgr.create(&reply_topic, reply_config(topic.config().slot_size))?;
        let made = (|| -> Result<(Producer, Consumer)> {
            let producer = Producer::with_partitions(&topic, Partitions::AnyFree(1))?;
            let replies = Consumer::reader(&replies)?;
            Ok((producer, replies))
        })();
        match made {
            Ok((producer, replies)) => Ok(Requester {
                mgr: mgr.clone(),
                producer,
                replies,
                reply_topic,
                next_id: 1,
                headers: Headers::new(),
            }),
            Err(e) => {
                drop(replies);
                let _ = mgr.delete(&reply_topic);
                Err(e)
            }
        }
    }

    /// The name of this requester's reply topic.
    pub fn reply_topic(&self) -> &str {
        &self.reply_topic
    }

    /// Send `body` and wait up to `timeout` for its reply.
    ///
    /// # Errors
    /// [`Error::Timeout`] if no reply came in time (a late reply is
    /// dropped when it comes); [`Error::Full`] if the service topic stayed
    /// full for the whole timeout; as [`Producer::send`].
    pub fn request(&mut self, body: &[u8], timeout: Duration) -> Result<Record> {
        self.request_with(None, &Headers::new(), body, timeout)
    }

    /// Like [`Requester::request`], with a key and headers of the caller's
    /// (names starting with `shmq-` are reserved).
    ///
    /// # Errors
    /// As [`Requester::request`].
    pub fn request_with(
        &mut self,
        key: Option<&[u8]>,
        headers: &Headers,
        body: &[u8],
        timeout: Duration,
    ) -> Result<Record> {
        let deadline = Deadline::after(timeout);
        let id = self.send(key, headers, body, timeout)?;
        self.wait_reply(id, deadline)
    }

    /// Send a request without waiting; returns its correlation id, to wait
    /// for with [`Requester::wait`] (several may be outstanding).
    ///
    /// # Errors
    /// As [`Producer::send`]; [`Error::Full`] after `timeout` on a full
    /// service topic.
    pub fn send(
        &mut self,
        key: Option<&[u8]>,
        headers: &Headers,
        body: &[u8],
        timeout: Duration,
    ) -> Result<u64> {
        let id = self.next_id;
        self.next_id += 1;
        self.headers.clear();
        for (n, v) in headers {
            self.headers.push(n, v)?;
        }
        self.headers.push(CORRELATION_HEADER, id.to_string())?;
        self.headers.push(REPLY_TO_HEADER, &self.reply_topic)?;
        self.producer.send_timeout = Some(timeout);
        let sent = self.producer.send_with(key, &self.headers, body);
        self.producer.send_timeout = None;
        sent.map(|_| id)
    }

    /// Wait up to `timeout` for the reply to request `id` (from
    /// [`Requester::send`]). Replies to other requests that arrive
    /// meanwhile are dropped, so wait for outstanding requests in the order
    /// they were sent.
    ///
    /// # Errors
    /// [`Error::Timeout`], [`Error::LeaseExpired`].
    pub fn wait(&mut self, id: u64, timeout: Duration) -> Result<Record> {
        self.wait_reply(id, Deadline::after(timeout))
    }

    fn wait_reply(&mut self, id: u64, deadline: Deadline) -> Result<Record> {
        loop {
            let got = self
                .replies
                .poll_timeout(16, deadline.remaining_at_most(Duration::from_secs(3600)))?;
            let mut found = None;
            for r in got.records {
                if correlation(&r) == Some(id) && found.is_none() {
                    found = Some(r);
                }
                // Anything else is a reply to a request that timed out.
            }
            if let Some(r) = found {
                return Ok(r);
            }
            if deadline.passed() {
                return Err(Error::Timeout);
            }
        }
    }
}

impl Drop for Requester {
    fn drop(&mut self) {
        // Responders that still hold the topic open get LeaseExpired at
        // their next reply and close it.
        let _ = self.mgr.delete(&self.reply_topic);
    }
}

/// The correlation id of a request or reply.
pub fn correlation(record: &Record) -> Option<u64> {
    record.headers().get_str(CORRELATION_HEADER)?.parse().ok()
}

/// A request received by a [`Responder`].
#[derive(Clone, Debug)]
pub struct Request {
    /// The request record (key, headers, body in `value`).
    pub record: Record,
    /// Its correlation id.
    pub correlation_id: u64,
    /// The topic its reply goes to.
    pub reply_to: String,
}

/// The service side: a member of a consumer group on the service topic
/// that answers each request on its requester's reply topic. See the
/// module docs.
pub struct Responder {
    mgr: TopicManager,
    consumer: GroupConsumer,
    pending: VecDeque<Request>,
    dirty: bool,
    replies: HashMap<String, (Producer, u64)>,
    uses: u64,
    malformed: u64,
    headers: Headers,
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Responder")
            .field("consumer", &self.consumer)
            .field("pending", &self.pending.len())
            .finish()
    }
}

impl Responder {
    /// A responder of `service` (opened, or created with
    /// [`service_config`]) in consumer group `group`: start one in as many
    /// processes as you like with the same group to share the load.
    ///
    /// # Errors
    /// As [`GroupConsumer::join`], [`TopicManager::open_or_create`].
    pub fn new(mgr: &TopicManager, service: &str, group: &str) -> Result<Responder> {
        Self::with_options(
            mgr,
            service,
            group,
            service_config(),
            GroupOptions::default(),
        )
    }

    /// Like [`Responder::new`] with the service topic's configuration (if
    /// it has to be created) and the group's options.
    ///
    /// # Errors
    /// As [`Responder::new`], and [`Error::ConfigMismatch`].
    pub fn with_options(
        mgr: &TopicManager,
        service: &str,
        group: &str,
        config: TopicConfig,
        opts: GroupOptions,
    ) -> Result<Responder> {
        let topic = mgr.open_or_create(service, config)?;
        Ok(Responder {
            mgr: mgr.clone(),
            consumer: GroupConsumer::join(&topic, group, opts)?,
            pending: VecDeque::new(),
            dirty: false,
            replies: HashMap::new(),
            uses: 0,
            malformed: 0,
            headers: Headers::new(),
        })
    }

    /// The group membership (assignment, lag...).
    pub fn consumer(&self) -> &GroupConsumer {
        &self.consumer
    }

    /// Records on the service topic that were not requests (no
    /// correlation id or reply-to header), skipped.
    pub fn malformed(&self) -> u64 {
        self.malformed
    }

    /// The next request, waiting up to `timeout`; `None` on timeout.
    ///
    /// # Errors
    /// As [`GroupConsumer::poll`], [`GroupConsumer::commit`].
    pub fn recv(&mut self, timeout: Duration) -> Result<Option<Request>> {
        let deadline = Deadline::after(timeout);
        loop {
            if let Some(r) = self.pending.pop_front() {
                return Ok(Some(r));
            }
            // Everything polled before was handed out: commit it.
            if self.dirty {
                self.consumer.commit()?;
                self.dirty = false;
            }
            let got = self
                .consumer
                .poll_timeout(64, deadline.remaining_at_most(Duration::from_secs(3600)))?;
            for record in got.records {
                self.dirty = true;
                let id = correlation(&record);
                let to = record
                    .headers()
                    .get_str(REPLY_TO_HEADER)
                    .map(str::to_string);
                match (id, to) {
                    (Some(correlation_id), Some(reply_to)) => self.pending.push_back(Request {
                        record,
                        correlation_id,
                        reply_to,
                    }),
                    _ => self.malformed += 1,
                }
            }
            if self.pending.is_empty() && deadline.passed() {
                return Ok(None);
            }
        }
    }

    /// Answer `request` with `body`.
    ///
    /// # Errors
    /// [`Error::TopicNotFound`] / [`Error::LeaseExpired`] if its requester
    /// is gone (the reply is dropped; nothing else to do), as
    /// [`Producer::send`].
    pub fn reply(&mut self, request: &Request, body: &[u8]) -> Result<Sent> {
        self.reply_with(request, &Headers::new(), body)
    }

    /// Like [`Responder::reply`], with headers of the caller's.
    ///
    /// # Errors
    /// As [`Responder::reply`].
    pub fn reply_with(
        &mut self,
        request: &Request,
        headers: &Headers,
        body: &[u8],
    ) -> Result<Sent> {
        self.headers.clear();
        for (n, v) in headers {
            self.headers.push(n, v)?;
        }
        self.headers
            .push(CORRELATION_HEADER, request.correlation_id.to_string())?;
        self.uses += 1;
        let uses = self.uses;
        if !self.replies.contains_key(&request.reply_to) {
            if self.replies.len() >= REPLY_CACHE {
                let oldest = self
                    .replies
                    .iter()
                    .min_by_key(|(_, (_, used))| *used)
                    .map(|(k, _)| k.clone());
                if let Some(k) = oldest {
                    self.replies.remove(&k);
                }
            }
            let topic: Topic = self.mgr.open(&request.reply_to)?;
            let producer = Producer::with_partitions(&topic, Partitions::AnyFree(1))?;
            self.replies
                .insert(request.reply_to.clone(), (producer, uses));
        }
        let Some((producer, used)) = self.replies.get_mut(&request.reply_to) else {
            return Err(Error::Timeout);
        };
        *used = uses;
        let sent = producer.send_with(None, &self.headers, body);
        if sent.is_err() {
            // The requester is gone (its topic deleted or reclaimed).
            self.replies.remove(&request.reply_to);
        }
        sent
    }

    /// Answer the requests that arrive within `timeout` with `handler`'s
    /// reply, until none is left; returns how many were answered. A reply
    /// whose requester has gone is dropped (not counted).
    ///
    /// # Errors
    /// As [`Responder::recv`].
    pub fn serve(
        &mut self,
        timeout: Duration,
        mut handler: impl FnMut(&Request) -> Vec<u8>,
    ) -> Result<usize> {
        let mut answered = 0;
        let mut wait = timeout;
        while let Some(req) = self.recv(wait)? {
            let body = handler(&req);
            if self.reply(&req, &body).is_ok() {
                answered += 1;
            }
            wait = Duration::ZERO;
        }
        Ok(answered)
    }

    /// Commit what was handed out so far (also done by the next
    /// [`Responder::recv`] that finds nothing pending).
    ///
    /// # Errors
    /// As [`GroupConsumer::commit`].
    pub fn commit(&mut self) -> Result<()> {
        if self.pending.is_empty() && self.dirty {
            self.consumer.commit()?;
            self.dirty = false;
        }
        Ok(())
    }
}
