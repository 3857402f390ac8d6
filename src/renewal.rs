//! Lease renewal: keep the regions of every open topic alive, at a fraction of
//! their TTL, never per message.
//!
//! [`RenewalPolicy::Background`] (the default) registers each opened topic with
//! one process-wide thread that renews every registered topic four times per
//! TTL (at least every second, at most every 5 ms). Dropping the last handle of
//! a topic unregisters it; the process dying stops renewal too, and then the
//! lease runs out and the supervisor reclaims the regions.
//!
//! [`RenewalPolicy::Manual`] leaves it to the caller: call
//! [`crate::Topic::renew`] from your own loop at least every TTL/2.

use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::time::Duration;

use crate::topic::TopicInner;

/// How a [`crate::TopicManager`]'s topics renew their leases.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RenewalPolicy {
    /// A process-wide background thread renews at TTL/4.
    #[default]
    Background,
    /// The caller renews with [`crate::Topic::renew`] or a
    /// [`RenewalManager`]. Opening a topic does not renew it, so this is also
    /// the policy for processes that only observe (`shmq list`, `info`).
    Manual,
}

struct Registry {
    topics: Mutex<Vec<Weak<TopicInner>>>,
    wake: Condvar,
}

fn registry() -> &'static Registry {
    static REG: OnceLock<Registry> = OnceLock::new();
    REG.get_or_init(|| {
        std::thread::Builder::new()
            .name("shmq-renewal".into())
            .spawn(run)
            .expect("spawn the shmq lease renewal thread");
        Registry {
            topics: Mutex::new(Vec::new()),
            wake: Condvar::new(),
        }
    })
}

/// Register `topic` for background renewal.
pub(crate) fn register(topic: &Arc<TopicInner>) {
    let reg = registry();
    reg.topics
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(Arc::downgrade(topic));
    reg.wake.notify_one();
}

fn run() {
    let reg = registry();
    let mut topics = reg.topics.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let mut interval = Duration::from_secs(1);
        topics.retain(|w| match w.upgrade() {
            Some(t) => {
                let ttl = t.config.retention;
                interval = interval.min(ttl / 4).max(Duration::from_millis(5));
                // A reclaimed topic stays registered (its handles report
                // LeaseExpired themselves) until its last handle drops.
                let _ = t.renew();
                true
            }
            None => false,
        });
        // Release the lock while sleeping; a new registration wakes us early.
        topics = reg
            .wake
            .wait_timeout(topics, interval)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
}

/// Renewal driven by the caller's own loop (for [`RenewalPolicy::Manual`]
/// managers): register topics, call [`RenewalManager::tick`] often (every few
/// milliseconds is fine: it only touches shared memory when a topic's lease is
/// due, at a quarter of its TTL).
///
/// # Examples
/// ```no_run
/// use shmq::{RenewalManager, RenewalPolicy, TopicConfig, TopicManager};
/// let mgr = TopicManager::new()?.with_renewal(RenewalPolicy::Manual);
/// let topic = mgr.open_or_create("events", TopicConfig::default())?;
/// let mut renewals = RenewalManager::new();
/// renewals.register(&topic);
/// loop {
///     // ... your event loop ...
///     renewals.tick()?;
/// #   break;
/// }
/// # Ok::<(), shmq::Error>(())
/// ```
#[derive(Debug, Default)]
pub struct RenewalManager {
    topics: Vec<(crate::Topic, std::time::Instant)>,
}

impl RenewalManager {
    /// An empty manager.
    pub fn new() -> Self {
        Self::default()
    }

    /// Renew `topic` from now on (keeps a handle to it).
    pub fn register(&mut self, topic: &crate::Topic) {
        self.topics.push((topic.clone(), std::time::Instant::now()));
    }

    /// Stop renewing the topic named `name`; returns whether it was registered.
    pub fn unregister(&mut self, name: &str) -> bool {
        let before = self.topics.len();
        self.topics.retain(|(t, _)| t.name() != name);
        before != self.topics.len()
    }

    /// Renew every registered topic whose last renewal is a quarter of its
    /// TTL old. Returns how many were renewed.
    ///
    /// # Errors
    /// [`crate::Error::LeaseExpired`] for the first topic found reclaimed (it
    /// is unregistered; the others are still renewed on the next tick).
    pub fn tick(&mut self) -> crate::Result<usize> {
        let now = std::time::Instant::now();
        let mut renewed = 0;
        let mut expired = None;
        self.topics.retain_mut(|(topic, last)| {
            if now.duration_since(*last) < topic.config().retention / 4 {
                return true;
            }
            match topic.renew() {
                Ok(()) => {
                    *last = now;
                    renewed += 1;
                    true
                }
                Err(e) => {
                    expired.get_or_insert(e);
                    false
                }
            }
        });
        expired.map_or(Ok(renewed), Err)
    }
}
