//! Topics: create, open, delete and list, scoped to a namespace.

use std::sync::Arc;
use std::time::Duration;

use crate::config::{Overflow, TopicConfig};
use crate::error::{Error, RegionProblem, Result};
use crate::layout::{Geometry, MetaHeader, PartitionHeader, KIND_META, KIND_PARTITION};
use crate::lease::{self, LeaseExpired};
use crate::name::{self, RegionName};
use crate::os;
use crate::region::{GroupView, MetaGeometry, Region};
use crate::renewal::{self, RenewalPolicy};
use crate::slots::MappedSlots;
use crate::token::Token;

/// Environment variable that selects the default namespace.
pub const NAMESPACE_ENV: &str = "SHMQ_NAMESPACE";

/// Entry point: manages the topics of one namespace.
///
/// Holds this process's liveness token for the namespace (shared by every
/// producer and consumer created from it), so keep it alive as long as you
/// use its topics.
///
/// # Examples
/// ```no_run
/// use shmq::{TopicManager, TopicConfig};
/// let mgr = TopicManager::new()?; // namespace from SHMQ_NAMESPACE or "default"
/// let topic = mgr.open_or_create("orders", TopicConfig::default())?;
/// # Ok::<(), shmq::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct TopicManager {
    ns: String,
    token: Arc<Token>,
    renewal: RenewalPolicy,
}

impl TopicManager {
    /// A manager for the namespace in `SHMQ_NAMESPACE`, or `default`.
    ///
    /// # Errors
    /// An invalid namespace name, or `/dev/shm` unusable for the token.
    pub fn new() -> Result<Self> {
        let ns = std::env::var(NAMESPACE_ENV).unwrap_or_else(|_| "default".to_string());
        Self::with_namespace(&ns)
    }

    /// A manager for namespace `ns`.
    ///
    /// # Errors
    /// An invalid namespace name, or `/dev/shm` unusable for the token.
    pub fn with_namespace(ns: &str) -> Result<Self> {
        name::validate_namespace(ns)?;
        let token = Arc::new(Token::acquire(ns)?);
        Ok(TopicManager {
            ns: ns.to_string(),
            token,
            renewal: RenewalPolicy::Background,
        })
    }

    /// Choose how topics opened from now on renew their leases.
    pub fn with_renewal(mut self, policy: RenewalPolicy) -> Self {
        self.renewal = policy;
        self
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.ns
    }

    /// This process's liveness token id in the namespace.
    pub fn token_id(&self) -> u32 {
        self.token.id()
    }

    /// Create a topic.
    ///
    /// # Errors
    /// [`Error::TopicExists`], [`Error::InvalidName`], [`Error::InvalidConfig`],
    /// [`Error::NoSpace`] when `/dev/shm` is full, [`Error::PermissionDenied`].
    pub fn create(&self, topic: &str, config: TopicConfig) -> Result<Topic> {
        name::validate_topic(topic)?;
        let geo = config.validate()?;
        let now = os::now_ns();
        let ttl = config.retention.as_nanos().min(u128::from(u64::MAX / 4)) as u64;
        let meta_name = name::meta_region(&self.ns, topic);
        let header = MetaHeader::new(
            config.partitions,
            config.overflow.code(),
            config.slots,
            config.slot_size,
            ttl,
            config.mode,
            config.dead_group_timeout.as_millis() as u32,
            now,
        );
        let meta = Region::create_meta(&meta_name, header, config.mode).map_err(|e| match e {
            Error::Os(os) if os.errno == nix::errno::Errno::EEXIST => Error::TopicExists {
                namespace: self.ns.clone(),
                topic: topic.to_string(),
            },
            e => e,
        })?;
        let mut parts = Vec::with_capacity(config.partitions as usize);
        for p in 0..config.partitions {
            let pname = name::partition_region(&self.ns, topic, p);
            let created = match Region::create_partition(
                &pname,
                geo,
                p,
                config.overflow.code(),
                config.mode,
                now,
                ttl,
            ) {
                Err(Error::Os(e)) if e.errno == nix::errno::Errno::EEXIST => {
                    // We hold the meta name exclusively, so this is an orphan of
                    // an earlier topic: fence whoever still maps it, then replace.
                    retire(&pname);
                    Region::create_partition(
                        &pname,
                        geo,
                        p,
                        config.overflow.code(),
                        config.mode,
                        now,
                        ttl,
                    )
                }
                r => r,
            };
            match created {
                Ok(r) => parts.push(Partition { region: r, geo }),
                Err(e) => {
                    for q in 0..p {
                        let _ = os::shm_remove(&name::partition_region(&self.ns, topic, q));
                    }
                    let _ = os::shm_remove(&meta_name);
                    return Err(e);
                }
            }
        }
        meta.publish_meta();
        let meta_geo = meta.meta_geometry()?;
        Ok(self.finish(topic, config, meta, meta_geo, parts))
    }

    /// Open an existing topic by name.
    ///
    /// # Errors
    /// [`Error::TopicNotFound`], or [`Error::BadRegion`] if a region of the
    /// topic is malformed, [`Error::LeaseExpired`] if it was reclaimed.
    pub fn open(&self, topic: &str) -> Result<Topic> {
        name::validate_topic(topic)?;
        let meta_name = name::meta_region(&self.ns, topic);
        let meta = Region::attach(&meta_name, KIND_META)?.ok_or_else(|| Error::TopicNotFound {
            namespace: self.ns.clone(),
            topic: topic.to_string(),
        })?;
        let meta_geo = meta.meta_geometry()?;
        let h = meta.meta_header();
        if lease::is_reclaimed(&h.lease) {
            return Err(Error::LeaseExpired {
                topic: topic.to_string(),
            });
        }
        let bad = |problem: RegionProblem| Error::BadRegion {
            region: meta_name.clone(),
            problem,
        };
        let overflow = Overflow::from_code(h.overflow).ok_or_else(|| {
            bad(RegionProblem::BadGeometry(format!(
                "overflow policy {}",
                h.overflow
            )))
        })?;
        let config = TopicConfig {
            partitions: meta_geo.partitions,
            slots: h.slots,
            slot_size: h.slot_size,
            retention: Duration::from_nanos(h.retention_ns),
            overflow,
            mode: h.mode,
            dead_group_timeout: Duration::from_millis(u64::from(h.dead_group_ms)),
        };
        let geo = Geometry::new(config.slots, config.slot_size).ok_or_else(|| {
            bad(RegionProblem::BadGeometry(format!(
                "slots {} slot_size {}",
                h.slots, h.slot_size
            )))
        })?;
        let mut parts = Vec::with_capacity(config.partitions as usize);
        for p in 0..config.partitions {
            let pname = name::partition_region(&self.ns, topic, p);
            let region =
                Region::attach(&pname, KIND_PARTITION)?.ok_or_else(|| Error::BadRegion {
                    region: pname.clone(),
                    problem: RegionProblem::BadGeometry(
                        "partition region missing (topic reclaimed?)".into(),
                    ),
                })?;
            let pgeo = region.partition_geometry()?;
            let ph = region.partition_header();
            if pgeo != geo || ph.partition != p {
                return Err(Error::BadRegion {
                    region: pname,
                    problem: RegionProblem::BadGeometry(format!(
                        "partition {} with {} slots of {} bytes does not match topic's {} slots of {} bytes",
                        ph.partition, pgeo.slots, pgeo.slot_size, geo.slots, geo.slot_size
                    )),
                });
            }
            if lease::is_reclaimed(&ph.lease) {
                return Err(Error::LeaseExpired {
                    topic: topic.to_string(),
                });
            }
            parts.push(Partition { region, geo });
        }
        Ok(self.finish(topic, config, meta, meta_geo, parts))
    }

    /// Open the topic, creating it with `config` if it does not exist.
    /// Either side of a producer/consumer pair may start first this way.
    ///
    /// # Errors
    /// As [`TopicManager::create`] and [`TopicManager::open`].
    pub fn open_or_create(&self, topic: &str, config: TopicConfig) -> Result<Topic> {
        for _ in 0..3 {
            match self.open(topic) {
                Err(Error::TopicNotFound { .. }) => {}
                r => return r,
            }
            match self.create(topic, config.clone()) {
                Err(Error::TopicExists { .. }) => {}
                r => return r,
            }
        }
        self.open(topic)
    }

    fn finish(
        &self,
        topic: &str,
        config: TopicConfig,
        meta: Region,
        meta_geo: MetaGeometry,
        parts: Vec<Partition>,
    ) -> Topic {
        let inner = Arc::new(TopicInner {
            ns: self.ns.clone(),
            name: topic.to_string(),
            config,
            meta,
            meta_geo,
            parts,
            token: self.token.clone(),
        });
        // Only a manager that renews in the background renews on open: under
        // `Manual` (what observers such as `shmq list`/`info` use) opening a
        // topic must not extend its life.
        if self.renewal == RenewalPolicy::Background {
            let _ = inner.renew();
            renewal::register(&inner);
        }
        Topic { inner }
    }

    /// Delete a topic: mark every region reclaimed (attached processes get
    /// [`Error::LeaseExpired`] on their next operation) and unlink them.
    /// Returns whether anything was removed.
    ///
    /// # Errors
    /// [`Error::InvalidName`], or an OS error while unlinking.
    pub fn delete(&self, topic: &str) -> Result<bool> {
        name::validate_topic(topic)?;
        let prefix = name::topic_prefix(&self.ns, topic);
        let mut removed = false;
        let mut names = os::list_shm(&prefix)?;
        // Partitions first, meta last: an opener never sees a meta whose
        // partitions are already gone without also seeing them reclaimed.
        names.sort_by_key(|n| n.ends_with(".meta"));
        for region in names {
            if let Some(RegionName::Meta { .. } | RegionName::Partition { .. }) =
                name::parse(&self.ns, &region)
            {
                retire(&region);
                removed = true;
            }
        }
        Ok(removed)
    }

    /// Names of the topics in this namespace.
    ///
    /// # Errors
    /// `/dev/shm` cannot be listed.
    pub fn list(&self) -> Result<Vec<String>> {
        let prefix = name::namespace_prefix(&self.ns);
        Ok(os::list_shm(&prefix)?
            .into_iter()
            .filter_map(|f| match name::parse(&self.ns, &f) {
                Some(RegionName::Meta { topic }) => Some(topic),
                _ => None,
            })
            .collect())
    }
}

/// Mark a region reclaimed if it is a valid shmq region, then unlink it.
fn retire(region: &str) {
    for kind in [KIND_PARTITION, KIND_META] {
        if let Ok(Some(r)) = Region::attach(region, kind) {
            match kind {
                KIND_PARTITION => lease::mark_reclaimed(&r.partition_header().lease),
                _ => lease::mark_reclaimed(&r.meta_header().lease),
            };
            break;
        }
    }
    let _ = os::shm_remove(region);
}

/// An open topic: its configuration and mapped regions. Cheap to clone; the
/// regions stay mapped (and leased) while any clone, producer or consumer of
/// it is alive.
#[derive(Clone, Debug)]
pub struct Topic {
    pub(crate) inner: Arc<TopicInner>,
}

#[derive(Debug)]
pub(crate) struct TopicInner {
    pub(crate) ns: String,
    pub(crate) name: String,
    pub(crate) config: TopicConfig,
    pub(crate) meta: Region,
    pub(crate) meta_geo: MetaGeometry,
    pub(crate) parts: Vec<Partition>,
    pub(crate) token: Arc<Token>,
}

#[derive(Debug)]
pub(crate) struct Partition {
    pub(crate) region: Region,
    pub(crate) geo: Geometry,
}

impl Partition {
    #[inline]
    pub(crate) fn header(&self) -> &PartitionHeader {
        self.region.partition_header()
    }
    #[inline]
    pub(crate) fn slots(&self) -> MappedSlots<'_> {
        MappedSlots::new(&self.region, self.geo)
    }
}

impl TopicInner {
    /// Renew every lease of the topic.
    pub(crate) fn renew(&self) -> Result<(), LeaseExpired> {
        let now = os::now_ns();
        lease::renew(&self.meta.meta_header().lease, now)?;
        for p in &self.parts {
            lease::renew(&p.header().lease, now)?;
        }
        Ok(())
    }

    pub(crate) fn reclaimed(&self) -> bool {
        lease::is_reclaimed(&self.meta.meta_header().lease)
    }

    pub(crate) fn group(&self, g: u32) -> GroupView<'_> {
        self.meta.group(self.meta_geo, g)
    }

    /// The API error for a refused ring write on `partition`.
    pub(crate) fn write_error(&self, partition: u32, e: crate::ring::WriteError) -> Error {
        match e {
            crate::ring::WriteError::Fenced { current } => Error::Fenced {
                topic: self.name.clone(),
                partition,
                epoch: crate::writer_lease::unpack(current).0,
            },
            crate::ring::WriteError::LeaseExpired => self.expired(),
        }
    }

    pub(crate) fn expired(&self) -> Error {
        Error::LeaseExpired {
            topic: self.name.clone(),
        }
    }

    pub(crate) fn partition(&self, p: u32) -> Result<&Partition> {
        self.parts
            .get(p as usize)
            .ok_or_else(|| Error::NoSuchPartition {
                topic: self.name.clone(),
                partition: p,
                partitions: self.config.partitions,
            })
    }
}

impl Topic {
    /// Topic name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }
    /// Namespace.
    pub fn namespace(&self) -> &str {
        &self.inner.ns
    }
    /// The configuration the topic was created with.
    pub fn config(&self) -> &TopicConfig {
        &self.inner.config
    }
    /// Number of partitions.
    pub fn partitions(&self) -> u32 {
        self.inner.config.partitions
    }
    /// Renew the topic's leases now (what the background renewal does; call
    /// it yourself, at a fraction of the retention, under
    /// [`RenewalPolicy::Manual`]).
    ///
    /// # Errors
    /// [`Error::LeaseExpired`] if the supervisor already reclaimed the topic.
    pub fn renew(&self) -> Result<()> {
        self.inner.renew().map_err(|_| self.inner.expired())
    }
    /// The topic lease's expiry (Unix-epoch ns; `u64::MAX` once reclaimed).
    /// Renewals move it forward; the supervisor reclaims the topic once it is
    /// in the past.
    pub fn lease_expiry_ns(&self) -> u64 {
        self.inner
            .meta
            .meta_header()
            .lease
            .expiry
            .load(crate::sync::Ordering::Acquire)
    }
    /// Whether the topic was deleted or reclaimed under us.
    pub fn is_reclaimed(&self) -> bool {
        self.inner.reclaimed()
    }
    /// Next offset the writer of `partition` will publish.
    ///
    /// # Errors
    /// [`Error::NoSuchPartition`].
    pub fn write_offset(&self, partition: u32) -> Result<u64> {
        let part = self.inner.partition(partition)?;
        Ok(crate::ring::checked_latest(part.header(), &part.slots()))
    }
}
