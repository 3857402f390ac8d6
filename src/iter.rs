//! Blocking iterators: `for record in consumer.iter() { ... }`.
//!
//! Each step is the consumer's blocking `recv()`: it waits however long it
//! takes (with the consumer's [`crate::WaitStrategy`]), so the iterator never
//! ends on its own. An error is yielded as `Err` and iteration may go on
//! (a reclaimed topic yields [`crate::Error::LeaseExpired`] at every step:
//! stop on the first error unless you know better).

use crate::competing::CompetingConsumer;
use crate::consumer::{Consumer, Record};
use crate::error::Result;
use crate::group::GroupConsumer;

/// A blocking iterator over the records of a consumer, from
/// [`Consumer::iter`], [`GroupConsumer::iter`] or
/// [`CompetingConsumer::iter`].
#[derive(Debug)]
pub struct Iter<'a> {
    source: Source<'a>,
}

#[derive(Debug)]
enum Source<'a> {
    Plain(&'a mut Consumer),
    Group(&'a mut GroupConsumer),
    Competing(&'a mut CompetingConsumer),
}

impl Iterator for Iter<'_> {
    type Item = Result<Record>;

    /// Wait for the next record (never `None`).
    fn next(&mut self) -> Option<Result<Record>> {
        Some(match &mut self.source {
            Source::Plain(c) => c.recv(),
            Source::Group(c) => c.recv(),
            Source::Competing(c) => c.recv(),
        })
    }
}

impl Consumer {
    /// A blocking iterator: each step waits for the next record
    /// ([`Consumer::recv`]); it never ends by itself. Commit as you go
    /// through the consumer after the loop, or break out to commit.
    ///
    /// # Examples
    /// ```no_run
    /// # let mgr = shmq::TopicManager::new()?;
    /// let topic = mgr.open_or_create("events", shmq::TopicConfig::default())?;
    /// let mut consumer = shmq::Consumer::new(&topic, "printer")?;
    /// for record in consumer.iter().take(100) {
    ///     let record = record?;
    ///     println!("{}@{} {:?}", record.partition, record.offset, record.value);
    /// }
    /// consumer.commit()?;
    /// # Ok::<(), shmq::Error>(())
    /// ```
    pub fn iter(&mut self) -> Iter<'_> {
        Iter {
            source: Source::Plain(self),
        }
    }
}

impl GroupConsumer {
    /// A blocking iterator: each step waits for the next record
    /// ([`GroupConsumer::recv`], heartbeating and rebalancing while it
    /// waits); it never ends by itself.
    ///
    /// # Examples
    /// ```no_run
    /// # let mgr = shmq::TopicManager::new()?;
    /// use shmq::{GroupConsumer, GroupOptions};
    /// let topic = mgr.open_or_create("orders", shmq::TopicConfig::default())?;
    /// let mut member = GroupConsumer::join(&topic, "billing", GroupOptions::default())?;
    /// for record in member.iter().take(10) {
    ///     println!("{}", record?.offset);
    /// }
    /// member.commit()?;
    /// # Ok::<(), shmq::Error>(())
    /// ```
    pub fn iter(&mut self) -> Iter<'_> {
        Iter {
            source: Source::Group(self),
        }
    }
}

impl CompetingConsumer {
    /// A blocking iterator: each step waits for the next record
    /// ([`CompetingConsumer::recv`]: a batch of one, marked done by the next
    /// step); it never ends by itself.
    ///
    /// # Examples
    /// ```no_run
    /// # let mgr = shmq::TopicManager::new()?;
    /// use shmq::{CompetingConsumer, GroupOptions};
    /// let topic = mgr.open_or_create("jobs", shmq::TopicConfig::default().partitions(1))?;
    /// let mut worker = CompetingConsumer::join(&topic, "workers", 0, GroupOptions::default())?;
    /// for job in worker.iter().take(10) {
    ///     println!("job {}", job?.offset);
    /// }
    /// worker.commit()?;
    /// # Ok::<(), shmq::Error>(())
    /// ```
    pub fn iter(&mut self) -> Iter<'_> {
        Iter {
            source: Source::Competing(self),
        }
    }
}
