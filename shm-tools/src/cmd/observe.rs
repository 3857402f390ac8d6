//! Read-only snapshots of one namespace (or all) for `shmq metrics` and
//! `shmq top`.
//!
//! Observing never renews a lease or changes any state of a topic: topics
//! are opened under [`RenewalPolicy::Manual`] (opening does not renew) and
//! read with [`shmq::Topic::stats`], as `shmq list` and `shmq info` do; liveness
//! tokens are probed with a lock *query*, never taken. The one thing an
//! observer adds to a namespace is its own liveness token file (every
//! [`TopicManager`] has one; it goes away when the observer exits).
//!
//! Opened topics are kept between snapshots, so a scrape of a steady
//! deployment maps nothing new. A topic that disappears from `/dev/shm` or
//! is marked reclaimed is dropped at the next snapshot, so an observer never
//! keeps the memory of a deleted topic mapped for longer than one interval.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use shmq::protocol::name::{self, RegionName};
use shmq::protocol::token::{self, Liveness};
use shmq::{Error, RenewalPolicy, Topic, TopicManager, TopicStats};

use crate::util::unix_ns;

/// Where `/dev/shm` regions live.
const SHM_DIR: &str = "/dev/shm";

/// What an observer found of one topic.
#[derive(Clone, Debug)]
pub enum TopicState {
    /// Open and read.
    Ok {
        /// The figures.
        stats: Box<TopicStats>,
    },
    /// Marked reclaimed (deleted, or its lease expired and the supervisor
    /// took it) but not yet gone from `/dev/shm`.
    Reclaimed,
    /// It could not be opened or read.
    Error(String),
}

/// One topic in a snapshot.
#[derive(Clone, Debug)]
pub struct TopicSnap {
    /// Namespace.
    pub namespace: String,
    /// Topic name.
    pub topic: String,
    /// What was found.
    pub state: TopicState,
}

impl TopicSnap {
    /// The stats, if the topic was read.
    pub fn stats(&self) -> Option<&TopicStats> {
        match &self.state {
            TopicState::Ok { stats, .. } => Some(stats),
            _ => None,
        }
    }

    /// `"ok"`, `"reclaimed"` or `"error"`.
    pub fn state_name(&self) -> &'static str {
        match self.state {
            TopicState::Ok { .. } => "ok",
            TopicState::Reclaimed => "reclaimed",
            TopicState::Error(_) => "error",
        }
    }
}

/// One namespace in a snapshot.
#[derive(Clone, Debug, Default)]
pub struct NamespaceSnap {
    /// Namespace.
    pub namespace: String,
    /// Region files (meta and partitions) in `/dev/shm`.
    pub regions: u64,
    /// Their total size in bytes.
    pub shm_bytes: u64,
    /// Token files whose process is alive (the observer's own included).
    pub live_tokens: u64,
    /// Token files of dead processes (the supervisor removes them).
    pub dead_tokens: u64,
    /// Its topics, by name.
    pub topics: Vec<TopicSnap>,
}

/// One look at everything observed.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// When it was taken (for rates).
    pub at: Instant,
    /// Unix ns when it was taken (for lease time left).
    pub now_ns: u64,
    /// Namespaces, by name.
    pub namespaces: Vec<NamespaceSnap>,
}

impl Snapshot {
    /// Every topic of every namespace.
    pub fn topics(&self) -> impl Iterator<Item = &TopicSnap> {
        self.namespaces.iter().flat_map(|n| n.topics.iter())
    }
}

/// Takes [`Snapshot`]s of one namespace or of all.
pub struct Observer {
    namespace: String,
    all: bool,
    managers: HashMap<String, TopicManager>,
    open: HashMap<(String, String), Topic>,
}

impl Observer {
    /// An observer of `namespace`, or of every namespace in `/dev/shm` when
    /// `all`.
    pub fn new(namespace: &str, all: bool) -> Observer {
        Observer {
            namespace: namespace.to_string(),
            all,
            managers: HashMap::new(),
            open: HashMap::new(),
        }
    }

    /// Look at everything now.
    ///
    /// # Errors
    /// `/dev/shm` cannot be listed, or (single namespace) its name is
    /// invalid. A topic that cannot be read is reported in its
    /// [`TopicSnap::state`], never as an error.
    pub fn snapshot(&mut self) -> Result<Snapshot, Error> {
        if !self.all {
            name::validate_namespace(&self.namespace)?;
        }
        let files = shmq::protocol::os::list_shm(&format!("{}.", name::PREFIX))?;
        // Namespace -> its files.
        let mut by_ns: BTreeMap<String, Vec<&str>> = BTreeMap::new();
        if !self.all {
            by_ns.insert(self.namespace.clone(), Vec::new());
        }
        for f in &files {
            let Some(ns) = f.split('.').nth(1) else {
                continue;
            };
            if name::validate_namespace(ns).is_err() || (!self.all && ns != self.namespace) {
                continue;
            }
            by_ns.entry(ns.to_string()).or_default().push(f);
        }
        let mut seen = Vec::new();
        let mut namespaces = Vec::with_capacity(by_ns.len());
        for (ns, files) in by_ns {
            let mut snap = NamespaceSnap {
                namespace: ns.clone(),
                ..Default::default()
            };
            let mut topics = Vec::new();
            for f in files {
                match name::parse(&ns, f) {
                    Some(RegionName::Meta { topic }) => {
                        snap.regions += 1;
                        snap.shm_bytes += file_len(f);
                        topics.push(topic);
                    }
                    Some(RegionName::Partition { .. }) => {
                        snap.regions += 1;
                        snap.shm_bytes += file_len(f);
                    }
                    Some(RegionName::Token { id }) => match token::probe(&ns, id) {
                        Liveness::Dead { .. } => snap.dead_tokens += 1,
                        Liveness::Alive { .. } => snap.live_tokens += 1,
                        Liveness::Missing => {}
                    },
                    None => {}
                }
            }
            topics.sort();
            for topic in topics {
                let state = self.read(&ns, &topic);
                seen.push((ns.clone(), topic.clone()));
                snap.topics.push(TopicSnap {
                    namespace: ns.clone(),
                    topic,
                    state,
                });
            }
            namespaces.push(snap);
        }
        // Unmap topics that are gone, and give up the token of a namespace
        // where nothing is open any more (so an observer leaves nothing in
        // a namespace whose topics were all deleted).
        self.open.retain(|k, _| seen.contains(k));
        let open = &self.open;
        self.managers
            .retain(|ns, _| open.keys().any(|(n, _)| n == ns));
        Ok(Snapshot {
            at: Instant::now(),
            now_ns: unix_ns(),
            namespaces,
        })
    }

    fn read(&mut self, ns: &str, topic: &str) -> TopicState {
        let key = (ns.to_string(), topic.to_string());
        if self.open.get(&key).is_some_and(Topic::is_reclaimed) {
            self.open.remove(&key);
        }
        if !self.open.contains_key(&key) {
            let mgr = match self.managers.get(ns) {
                Some(m) => m,
                None => match TopicManager::with_namespace(ns) {
                    Ok(m) => self
                        .managers
                        .entry(ns.to_string())
                        .or_insert(m.with_renewal(RenewalPolicy::Manual)),
                    Err(e) => return TopicState::Error(e.to_string()),
                },
            };
            match mgr.open(topic) {
                Ok(t) => {
                    self.open.insert(key.clone(), t);
                }
                Err(Error::LeaseExpired { .. }) => return TopicState::Reclaimed,
                Err(e) => return TopicState::Error(e.to_string()),
            }
        }
        let Some(t) = self.open.get(&key) else {
            return TopicState::Error("not open".into());
        };
        match t.stats() {
            Ok(_) if t.is_reclaimed() => {
                self.open.remove(&key);
                TopicState::Reclaimed
            }
            Ok(stats) => TopicState::Ok {
                stats: Box::new(stats),
            },
            Err(e) => TopicState::Error(e.to_string()),
        }
    }
}

fn file_len(f: &str) -> u64 {
    std::fs::metadata(format!("{SHM_DIR}/{f}")).map_or(0, |m| m.len())
}

/// Seconds until `expiry_ns` (0 once past), `None` once reclaimed.
pub fn seconds_left(expiry_ns: u64, now_ns: u64) -> Option<f64> {
    (!shmq::protocol::stats::is_reclaimed_expiry(expiry_ns))
        .then(|| expiry_ns.saturating_sub(now_ns) as f64 / 1e9)
}
