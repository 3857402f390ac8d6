//! Async consumers and producers (cargo feature `tokio`).
//!
//! * [`AsyncConsumer`], [`AsyncGroupConsumer`] and [`AsyncCompetingConsumer`]
//!   wrap their blocking counterparts: each is a
//!   [`Stream`](futures_core::Stream) of `Result<Record>` and has
//!   `recv().await` (plus [`AsyncConsumer::recv_into`], which copies into a
//!   reused [`RecordBuf`] and allocates nothing per record).
//! * [`AsyncProducer`] wraps a [`Producer`]: `send(..).await` waits for room
//!   on a backpressure topic without blocking a runtime thread.
//!
//! A record is taken from the ring only in the poll that returns it, so
//! **dropping a `recv` future loses nothing** (e.g. the losing branch of a
//! `select!`, or a timeout): the next `recv` returns the record. A dropped
//! `recv` also takes its futex announcement back at once; a `Stream` whose
//! `next()` was dropped stays announced until it is polled again, its record
//! arrives (one wake-up), or it is dropped.
//!
//! ```no_run
//! # async fn demo() -> shmq::Result<()> {
//! use futures_util::StreamExt;
//! use shmq::{AsyncConsumer, AsyncProducer, Consumer, Producer, TopicConfig, TopicManager};
//!
//! let mgr = TopicManager::new()?;
//! let topic = mgr.open_or_create("events", TopicConfig::default())?;
//! let mut producer = AsyncProducer::new(Producer::new(&topic)?)?;
//! producer.send(b"hello").await?;
//!
//! let mut consumer = AsyncConsumer::new(Consumer::new(&topic, "printer")?)?;
//! while let Some(record) = consumer.next().await {
//!     let record = record?;
//!     println!("{}@{} {:?}", record.partition, record.offset, record.value);
//! #   break;
//! }
//! # Ok(()) }
//! ```
//!
//! # How a waiting task is woken: a thread per topic on the futex
//!
//! shmq's wake-up is a futex word in shared memory (the meta region's
//! `notify`, see `crate::wait`): a writer calls `FUTEX_WAKE` on it only if a
//! reader announced itself in the partition's `waiters` count, so a publish
//! with nobody waiting makes no system call. A futex cannot be registered
//! with epoll, and the writer is another process that knows nothing of this
//! process's event loop, so *something in this process has to sleep on the
//! word*. The choices were:
//!
//! * an `eventfd` (or pipe) per reader, polled through tokio's `AsyncFd`:
//!   the writer would have to find and write every reader's descriptor, a
//!   cross-process registry of file descriptors (passed over Unix sockets)
//!   in the hot path, and a syscall per wake per reader: rejected;
//! * `spawn_blocking` per `recv`: a blocking-pool thread per waiting task,
//!   and a cancelled `recv` leaves its thread parked until the next record:
//!   rejected;
//! * **one small thread per open topic in this process (the hub)**, started
//!   with the topic's first async consumer: it announces nothing itself; the
//!   async consumers announce themselves exactly like blocking readers do,
//!   and register a `Waker` with the hub. The hub sleeps on `notify` while
//!   any of them waits, and on each wake-up wakes the tasks whose
//!   partitions moved. Chosen: the writer side is unchanged (same futex, same
//!   `waiters` counts, still no syscall when nobody waits), one thread
//!   serves every async consumer of the topic, and nothing depends on the
//!   runtime — it works on tokio's current-thread and multi-thread runtimes
//!   (and any other executor).
//!
//! A process-wide timer thread (`park_timeout`, woken only locally) fires the
//! deadlines: a group member's heartbeat / claim interval, a 100 ms check
//! that the topic was not reclaimed (as blocking readers park at most
//! 100 ms), and the steps of a producer waiting for room. The protocol is
//! detailed in the `wake` module (and model-checked in
//! `loom-tests/tests/async_hub.rs`). The cost is one thread hand-off more
//! than a parked blocking reader pays (the futex wakes the hub, the hub
//! wakes the runtime), measured by `shmq bench` ("async round trip") beside
//! the parked and busy-poll round trips.
//!
//! # Backpressure
//!
//! A blocked producer learns of consumer progress the same way as a blocking
//! one (`crate::backpressure`): consumers do not signal commits, so it looks
//! again at the holding groups' committed offsets in growing steps (here:
//! first by yielding to the executor a few times, then on the timer thread
//! every 20 µs growing to 100 µs, where the blocking producer sleeps the same
//! steps). The runtime thread is free in between. The producer's
//! [`Producer::with_send_timeout`] bounds the wait ([`crate::Error::Full`]).

mod wake;

use std::future::poll_fn;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures_core::Stream;

use crate::competing::CompetingConsumer;
use crate::consumer::{Consumer, Delivered, Growth, Polled, Record};
use crate::deadline::Deadline;
use crate::error::Result;
use crate::group::GroupConsumer;
use crate::producer::{Producer, Sent};
use crate::ring::RecordBuf;
use crate::topic::Topic;
use wake::{HubSlot, TimerSlot};

/// Longest an async consumer sleeps without looking at its topic (whether
/// it was reclaimed), as a blocking reader parks at most 100 ms at a time.
const NAP: Duration = Duration::from_millis(100);

/// How one async handle waits: its hub slot and its timer entry.
struct Wait {
    hub: HubSlot,
    timer: TimerSlot,
}

impl Wait {
    fn new(topic: &Topic) -> Result<Wait> {
        Ok(Wait {
            hub: HubSlot::new(topic)?,
            timer: TimerSlot::new()?,
        })
    }

    /// Stop waiting (take announcements back, cancel the deadline).
    fn settle(&mut self) {
        self.hub.disarm();
        self.timer.disarm();
    }

    /// Arm for `parts` and a deadline `nap` from now. Returns `true` if
    /// progress was seen after the announcement (poll again now).
    fn park(
        &mut self,
        waker: &Waker,
        parts: impl Iterator<Item = (u32, u64)> + Clone,
        grown_past: Option<u32>,
        nap: Duration,
    ) -> bool {
        if self.hub.arm(waker, parts, grown_past) {
            return true;
        }
        self.timer.arm(waker, nap);
        false
    }
}

/// The handles that own a [`Wait`] (for the drop guard of their futures).
trait Waiting {
    fn wait_state(&mut self) -> &mut Wait;
}

/// Settles the handle's wait when a future is dropped, finished or not (a
/// cancelled `recv` takes its announcements back at once).
struct Settle<'a, T: Waiting>(&'a mut T);

impl<T: Waiting> Drop for Settle<'_, T> {
    fn drop(&mut self) {
        self.0.wait_state().settle();
    }
}

/// Poll `attempt` until it yields, arming `wait` through `arm` when it finds
/// nothing (and trying again if the re-check after arming saw progress).
fn poll_loop<S, T>(
    src: &mut S,
    wait: &mut Wait,
    cx: &mut Context<'_>,
    mut attempt: impl FnMut(&mut S) -> Result<Option<T>>,
    mut arm: impl FnMut(&S, &mut Wait, &Waker) -> bool,
) -> Poll<Result<T>> {
    loop {
        // A wait still armed from the last poll stays armed while nothing
        // comes (see `HubSlot::arm`); it is settled once something does.
        match attempt(src) {
            Err(e) => {
                wait.settle();
                return Poll::Ready(Err(e));
            }
            Ok(Some(t)) => {
                wait.settle();
                return Poll::Ready(Ok(t));
            }
            Ok(None) => {}
        }
        if !arm(src, wait, cx.waker()) {
            return Poll::Pending;
        }
    }
}

fn first(mut p: Polled) -> Option<Record> {
    // Lag and damage are counted by the consumer (`missed`, `corrupt`).
    p.records.pop()
}

fn non_empty(p: Polled) -> Option<Polled> {
    (!p.is_empty()).then_some(p)
}

// ---------------------------------------------------------------------------
// AsyncConsumer
// ---------------------------------------------------------------------------

/// A [`Consumer`] for async code: a [`Stream`] of records, `recv().await`.
///
/// Made from any consumer ([`Consumer::new`], [`Consumer::reader`],
/// [`Consumer::with_store`], after `seek` or `assign`); reach the consumer
/// itself (commit, seek, lag) through [`AsyncConsumer::get_mut`].
///
/// The stream never ends: it yields `Err` for an error (e.g.
/// [`crate::Error::LeaseExpired`], which then repeats) and can be polled again.
///
/// # Examples
/// ```no_run
/// # async fn demo() -> shmq::Result<()> {
/// use std::time::Duration;
/// let mgr = shmq::TopicManager::new()?;
/// let topic = mgr.open_or_create("events", shmq::TopicConfig::default())?;
/// let mut consumer = shmq::AsyncConsumer::new(shmq::Consumer::new(&topic, "printer")?)?;
/// loop {
///     tokio::select! {
///         r = consumer.recv() => println!("{:?}", r?.value), // nothing lost if the timer wins
///         _ = tokio::time::sleep(Duration::from_secs(1)) => break,
///     }
/// }
/// consumer.get_mut().commit()?;
/// # Ok(()) }
/// ```
pub struct AsyncConsumer {
    consumer: Consumer,
    wait: Wait,
}

impl std::fmt::Debug for AsyncConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncConsumer")
            .field("consumer", &self.consumer)
            .finish()
    }
}

impl Waiting for AsyncConsumer {
    fn wait_state(&mut self) -> &mut Wait {
        &mut self.wait
    }
}

/// Arm `wait` for a plain consumer's cursors.
fn arm_consumer(c: &Consumer, wait: &mut Wait, waker: &Waker, nap: Duration) -> bool {
    let parts = c.cursors.iter().map(|c| (c.partition, c.next));
    let grown = (c.growth != Growth::Off).then_some(c.seen);
    wait.park(waker, parts, grown, nap)
}

impl AsyncConsumer {
    /// Wrap `consumer`.
    ///
    /// # Errors
    /// [`crate::Error::Os`] if the wake-up thread cannot be started.
    pub fn new(consumer: Consumer) -> Result<AsyncConsumer> {
        let wait = Wait::new(&consumer.topic)?;
        Ok(AsyncConsumer { consumer, wait })
    }

    /// The consumer.
    pub fn get_ref(&self) -> &Consumer {
        &self.consumer
    }

    /// The consumer, e.g. to commit or seek.
    pub fn get_mut(&mut self) -> &mut Consumer {
        &mut self.consumer
    }

    /// Unwrap the consumer.
    pub fn into_inner(self) -> Consumer {
        self.consumer
    }

    /// Wait for the next record. Cancel-safe: a dropped `recv` took nothing.
    ///
    /// # Errors
    /// [`crate::Error::LeaseExpired`], offset-store errors (as [`Consumer::poll`]).
    pub async fn recv(&mut self) -> Result<Record> {
        let g = Settle(self);
        poll_fn(|cx| g.0.poll_recv(cx)).await
    }

    /// Wait for the next record and copy it into `buf` (no allocation once
    /// `buf` has grown, as [`Consumer::poll_into`]). Cancel-safe.
    ///
    /// # Errors
    /// As [`AsyncConsumer::recv`].
    pub async fn recv_into(&mut self, buf: &mut RecordBuf) -> Result<Delivered> {
        let g = Settle(self);
        poll_fn(|cx| {
            let AsyncConsumer { consumer, wait } = &mut *g.0;
            poll_loop(
                consumer,
                wait,
                cx,
                |c| c.poll_into(buf),
                |c, w, k| arm_consumer(c, w, k, NAP),
            )
        })
        .await
    }

    /// Wait until at least one record (or loss event) is there, and return
    /// up to `max` records. Cancel-safe.
    ///
    /// # Errors
    /// As [`AsyncConsumer::recv`].
    pub async fn recv_batch(&mut self, max: usize) -> Result<Polled> {
        let g = Settle(self);
        poll_fn(|cx| {
            let AsyncConsumer { consumer, wait } = &mut *g.0;
            poll_loop(
                consumer,
                wait,
                cx,
                |c| c.poll(max).map(non_empty),
                |c, w, k| arm_consumer(c, w, k, NAP),
            )
        })
        .await
    }

    /// Poll for the next record (what the [`Stream`] does).
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<Record>> {
        let AsyncConsumer { consumer, wait } = self;
        poll_loop(
            consumer,
            wait,
            cx,
            |c| c.poll(1).map(first),
            |c, w, k| arm_consumer(c, w, k, NAP),
        )
    }
}

impl Stream for AsyncConsumer {
    type Item = Result<Record>;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_recv(cx).map(Some)
    }
}

// ---------------------------------------------------------------------------
// AsyncGroupConsumer
// ---------------------------------------------------------------------------

/// A [`GroupConsumer`] for async code: a [`Stream`] of records,
/// `recv().await`. Heartbeats and rebalances keep going while it waits (it
/// wakes at the group's `rebalance_every`, or 100 ms if that is longer).
///
/// # Examples
/// ```no_run
/// # async fn demo() -> shmq::Result<()> {
/// use futures_util::StreamExt;
/// use shmq::{AsyncGroupConsumer, GroupConsumer, GroupOptions};
/// let mgr = shmq::TopicManager::new()?;
/// let topic = mgr.open_or_create("orders", shmq::TopicConfig::default())?;
/// let mut member = AsyncGroupConsumer::new(GroupConsumer::join(&topic, "billing", GroupOptions::default())?)?;
/// while let Some(record) = member.next().await {
///     let record = record?;
///     println!("{}@{}", record.partition, record.offset);
///     member.get_mut().commit()?;
/// }
/// # Ok(()) }
/// ```
pub struct AsyncGroupConsumer {
    consumer: GroupConsumer,
    wait: Wait,
}

impl std::fmt::Debug for AsyncGroupConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncGroupConsumer")
            .field("consumer", &self.consumer)
            .finish()
    }
}

impl Waiting for AsyncGroupConsumer {
    fn wait_state(&mut self) -> &mut Wait {
        &mut self.wait
    }
}

fn arm_group(g: &GroupConsumer, wait: &mut Wait, waker: &Waker) -> bool {
    let nap = g.group().rebalance_every().min(NAP);
    arm_consumer(g.consumer(), wait, waker, nap)
}

impl AsyncGroupConsumer {
    /// Wrap `consumer`.
    ///
    /// # Errors
    /// [`crate::Error::Os`] if the wake-up thread cannot be started.
    pub fn new(consumer: GroupConsumer) -> Result<AsyncGroupConsumer> {
        let wait = Wait::new(consumer.group().topic())?;
        Ok(AsyncGroupConsumer { consumer, wait })
    }

    /// The group consumer.
    pub fn get_ref(&self) -> &GroupConsumer {
        &self.consumer
    }

    /// The group consumer, e.g. to commit.
    pub fn get_mut(&mut self) -> &mut GroupConsumer {
        &mut self.consumer
    }

    /// Unwrap the group consumer.
    pub fn into_inner(self) -> GroupConsumer {
        self.consumer
    }

    /// Wait for the next record. Cancel-safe.
    ///
    /// # Errors
    /// As [`GroupConsumer::poll`].
    pub async fn recv(&mut self) -> Result<Record> {
        let g = Settle(self);
        poll_fn(|cx| g.0.poll_recv(cx)).await
    }

    /// Wait until at least one record (or loss event) is there, and return
    /// up to `max` records. Cancel-safe.
    ///
    /// # Errors
    /// As [`GroupConsumer::poll`].
    pub async fn recv_batch(&mut self, max: usize) -> Result<Polled> {
        let g = Settle(self);
        poll_fn(|cx| {
            let AsyncGroupConsumer { consumer, wait } = &mut *g.0;
            poll_loop(
                consumer,
                wait,
                cx,
                |c| c.poll(max).map(non_empty),
                arm_group,
            )
        })
        .await
    }

    /// Poll for the next record (what the [`Stream`] does).
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<Record>> {
        let AsyncGroupConsumer { consumer, wait } = self;
        poll_loop(consumer, wait, cx, |c| c.poll(1).map(first), arm_group)
    }
}

impl Stream for AsyncGroupConsumer {
    type Item = Result<Record>;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_recv(cx).map(Some)
    }
}

// ---------------------------------------------------------------------------
// AsyncCompetingConsumer
// ---------------------------------------------------------------------------

/// A [`CompetingConsumer`] for async code: a [`Stream`] of records (each a
/// batch of one, marked done by the next poll, as
/// [`CompetingConsumer::recv`]), `recv().await`. Heartbeats keep going while
/// it waits.
///
/// # Examples
/// ```no_run
/// # async fn demo() -> shmq::Result<()> {
/// use shmq::{AsyncCompetingConsumer, CompetingConsumer, GroupOptions};
/// let mgr = shmq::TopicManager::new()?;
/// let topic = mgr.open_or_create("jobs", shmq::TopicConfig::default().partitions(1))?;
/// let worker = CompetingConsumer::join(&topic, "workers", 0, GroupOptions::default())?;
/// let mut worker = AsyncCompetingConsumer::new(worker)?;
/// let job = worker.recv().await?;
/// println!("job at offset {}", job.offset);
/// worker.get_mut().commit()?;
/// # Ok(()) }
/// ```
pub struct AsyncCompetingConsumer {
    consumer: CompetingConsumer,
    wait: Wait,
}

impl std::fmt::Debug for AsyncCompetingConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncCompetingConsumer")
            .field("consumer", &self.consumer)
            .finish()
    }
}

impl Waiting for AsyncCompetingConsumer {
    fn wait_state(&mut self) -> &mut Wait {
        &mut self.wait
    }
}

fn arm_competing(c: &CompetingConsumer, wait: &mut Wait, waker: &Waker) -> bool {
    let (partition, offset, every) = c.wait_point();
    wait.park(
        waker,
        std::iter::once((partition, offset)),
        None,
        every.min(NAP),
    )
}

impl AsyncCompetingConsumer {
    /// Wrap `consumer`.
    ///
    /// # Errors
    /// [`crate::Error::Os`] if the wake-up thread cannot be started.
    pub fn new(consumer: CompetingConsumer) -> Result<AsyncCompetingConsumer> {
        let wait = Wait::new(consumer.topic())?;
        Ok(AsyncCompetingConsumer { consumer, wait })
    }

    /// The competing consumer.
    pub fn get_ref(&self) -> &CompetingConsumer {
        &self.consumer
    }

    /// The competing consumer, e.g. to commit or retry.
    pub fn get_mut(&mut self) -> &mut CompetingConsumer {
        &mut self.consumer
    }

    /// Unwrap the competing consumer.
    pub fn into_inner(self) -> CompetingConsumer {
        self.consumer
    }

    /// Wait for the next record (a batch of one). Cancel-safe.
    ///
    /// # Errors
    /// As [`CompetingConsumer::poll`].
    pub async fn recv(&mut self) -> Result<Record> {
        let g = Settle(self);
        poll_fn(|cx| g.0.poll_recv(cx)).await
    }

    /// Wait until at least one record (or loss event) is there, and take up
    /// to `max` records (a batch, as [`CompetingConsumer::poll`]).
    /// Cancel-safe.
    ///
    /// # Errors
    /// As [`CompetingConsumer::poll`].
    pub async fn recv_batch(&mut self, max: usize) -> Result<Polled> {
        let g = Settle(self);
        poll_fn(|cx| {
            let AsyncCompetingConsumer { consumer, wait } = &mut *g.0;
            poll_loop(
                consumer,
                wait,
                cx,
                |c| c.poll(max).map(non_empty),
                arm_competing,
            )
        })
        .await
    }

    /// Poll for the next record (what the [`Stream`] does).
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<Record>> {
        let AsyncCompetingConsumer { consumer, wait } = self;
        poll_loop(consumer, wait, cx, |c| c.poll(1).map(first), arm_competing)
    }
}

impl Stream for AsyncCompetingConsumer {
    type Item = Result<Record>;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_recv(cx).map(Some)
    }
}

// ---------------------------------------------------------------------------
// AsyncProducer
// ---------------------------------------------------------------------------

/// Rounds a waiting producer first yields to the executor before it uses
/// the timer.
const YIELDS: u32 = 4;

/// A [`Producer`] for async code: `send(..).await` waits for room on a
/// backpressure topic without blocking the runtime thread (on an overwrite
/// topic it never waits). The producer's
/// [`send timeout`](Producer::with_send_timeout) bounds the wait.
///
/// # Examples
/// ```no_run
/// # async fn demo() -> shmq::Result<()> {
/// use shmq::{AsyncProducer, Overflow, Producer, TopicConfig};
/// let mgr = shmq::TopicManager::new()?;
/// let topic = mgr.open_or_create("jobs", TopicConfig::default().overflow(Overflow::Backpressure))?;
/// let mut producer = AsyncProducer::new(Producer::new(&topic)?)?;
/// producer.send(b"job 1").await?;
/// producer.send_keyed(b"user-42", b"job 2").await?;
/// # Ok(()) }
/// ```
pub struct AsyncProducer {
    producer: Producer,
    timer: TimerSlot,
    room: crate::backpressure::RoomCache,
}

impl std::fmt::Debug for AsyncProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncProducer")
            .field("producer", &self.producer)
            .finish()
    }
}

/// Cancels the producer's deadline when a send future goes.
struct DisarmTimer<'a>(&'a mut AsyncProducer);

impl Drop for DisarmTimer<'_> {
    fn drop(&mut self) {
        self.0.timer.disarm();
    }
}

impl AsyncProducer {
    /// Wrap `producer`.
    ///
    /// # Errors
    /// [`crate::Error::Os`] if the timer thread cannot be started.
    pub fn new(producer: Producer) -> Result<AsyncProducer> {
        Ok(AsyncProducer {
            producer,
            timer: TimerSlot::new()?,
            room: Default::default(),
        })
    }

    /// The producer.
    pub fn get_ref(&self) -> &Producer {
        &self.producer
    }

    /// The producer (e.g. for `try_send` or a batch).
    pub fn get_mut(&mut self) -> &mut Producer {
        &mut self.producer
    }

    /// Unwrap the producer.
    pub fn into_inner(self) -> Producer {
        self.producer
    }

    /// Send `value` to the next partition in round-robin order, waiting for
    /// room on a backpressure topic. Cancel-safe: a dropped `send` sent
    /// nothing, or everything.
    ///
    /// # Errors
    /// As [`Producer::send`]: [`crate::Error::Full`] once the send timeout passes.
    pub async fn send(&mut self, value: &[u8]) -> Result<Sent> {
        let p = &mut self.producer;
        let partition = p.owned[p.rr].partition;
        p.rr = if p.rr + 1 >= p.owned.len() {
            0
        } else {
            p.rr + 1
        };
        self.send_to(partition, None, value).await
    }

    /// Send a keyed record (to the partition [`Producer::send_keyed`]
    /// would), waiting for room.
    ///
    /// # Errors
    /// As [`AsyncProducer::send`].
    pub async fn send_keyed(&mut self, key: &[u8], value: &[u8]) -> Result<Sent> {
        let partition = self.producer.partition_for_key(key);
        self.send_to(partition, Some(key), value).await
    }

    /// Send to a chosen partition, with an optional key, waiting for room.
    ///
    /// # Errors
    /// As [`Producer::send_to`], and [`crate::Error::Full`] once the send timeout
    /// passes.
    pub async fn send_to(
        &mut self,
        partition: u32,
        key: Option<&[u8]>,
        value: &[u8],
    ) -> Result<Sent> {
        let deadline = Deadline::from_timeout(self.producer.send_timeout);
        let mut round = 0u32;
        let g = DisarmTimer(self);
        poll_fn(|cx| {
            g.0.poll_send(cx, partition, key, value, deadline, &mut round)
        })
        .await
    }

    fn poll_send(
        &mut self,
        cx: &mut Context<'_>,
        partition: u32,
        key: Option<&[u8]>,
        value: &[u8],
        deadline: Deadline,
        round: &mut u32,
    ) -> Poll<Result<Sent>> {
        self.timer.disarm();
        if *round == 0 {
            self.room.reset();
        }
        if self.has_room(partition)? || deadline.passed() || self.producer.topic.inner.reclaimed() {
            // With room the send does not wait; past the deadline it makes
            // the counted `Error::Full` (or sends, if room just appeared).
            let saved = self.producer.send_timeout.replace(Duration::ZERO);
            let r = self.producer.send_to(partition, key, value);
            self.producer.send_timeout = saved;
            return Poll::Ready(r);
        }
        *round = round.saturating_add(1);
        if *round <= YIELDS {
            cx.waker().wake_by_ref();
        } else {
            // 20 µs growing to 100 µs, as the blocking producer's sleeps.
            let step = Duration::from_micros(u64::from((*round - YIELDS).min(5)) * 20);
            self.timer.arm(cx.waker(), deadline.remaining_at_most(step));
        }
        Poll::Pending
    }

    /// Whether `partition` has room for the next record (refreshing the
    /// cached limit); `true` on overwrite topics.
    fn has_room(&mut self, partition: u32) -> Result<bool> {
        let p = &mut self.producer;
        if !p.backpressure {
            return Ok(true);
        }
        let i = match p.by_partition.get(partition as usize) {
            Some(&i) if i != usize::MAX => i,
            // Not ours: `send_to` makes the error.
            _ => return Ok(true),
        };
        let o = &mut p.owned[i];
        let next = o.writer.next_offset();
        if next < o.limit {
            return Ok(true);
        }
        match crate::backpressure::room(&p.topic.inner, o.partition, next, &mut self.room) {
            Some(limit) => {
                o.limit = limit;
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

/// Every async handle can move to another task or thread (`tokio::spawn`).
const _: () = {
    const fn is_send<T: Send>() {}
    is_send::<AsyncConsumer>();
    is_send::<AsyncGroupConsumer>();
    is_send::<AsyncCompetingConsumer>();
    is_send::<AsyncProducer>();
};
