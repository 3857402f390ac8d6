//! Consumer groups: members registered in the topic's meta region claim
//! partitions, so the processes of a group split a topic between them and
//! take over the partitions of a member that dies or stalls.
//!
//! * [`ConsumerGroup`] is one membership: [`ConsumerGroup::join`] takes a
//!   member entry (its id is this process's liveness token plus a
//!   generation), [`ConsumerGroup::claim`] runs one claim pass (evict stale
//!   members, take free or orphaned partitions up to the fair share, release
//!   partitions above it), [`ConsumerGroup::heartbeat`],
//!   [`ConsumerGroup::leave`] (also on drop) hands everything back at once.
//! * [`GroupConsumer`] is a [`Consumer`] driven by a membership: every poll
//!   heartbeats and re-claims at a fraction of the stale threshold, so its
//!   assignment follows rebalances without user code; a newly claimed
//!   partition starts at the group's committed offset.
//!
//! A member is *stale* when its process is dead (its kernel-held liveness
//! token is free, noticed at the next claim pass of a peer) or when it has
//! not heartbeaten for the group's stale threshold (a live but stuck
//! process). Delivery is at-least-once: records a member processed but did
//! not commit before losing a partition are delivered again to the next
//! owner. The protocol itself is in `crate::group_protocol`.
//!
//! Capacities are set when the topic is created
//! ([`crate::TopicConfig::max_groups`], default 16, [`Error::GroupTableFull`];
//! [`crate::TopicConfig::max_members`], default 32,
//! [`Error::MemberTableFull`]; entries of dead members are recycled). A group
//! with no live member and no sign of life for the topic's
//! [`crate::TopicConfig::group_retention`] is freed; [`ConsumerGroup::delete`]
//! and [`Topic::delete_group`] free one at once. A member of a deleted group
//! gets [`Error::GroupDeleted`] at its next heartbeat or commit.

use std::time::Duration;

use crate::consumer::{Consumer, Cursor, Polled, Record, SeekPolicy};
use crate::deadline::Deadline;
use crate::error::{Error, Result};
use crate::group_protocol::{self as proto, Health, Me};
use crate::group_table::Table;
use crate::os;
use crate::region::GroupView;
use crate::ring;
use crate::sync::Ordering;
use crate::token;
use crate::topic::{Topic, TopicInner};

/// Default stale threshold of a group.
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(10);
/// How far in the future a group's last sign of life may lie before a member
/// takes it for a scribble (clocks of processes on one host agree closely).
const FUTURE_SLACK_NS: u64 = 60_000_000_000;

/// Smallest stale threshold accepted.
pub const MIN_STALE_AFTER: Duration = Duration::from_millis(10);

/// How a member takes part in its group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupOptions {
    /// A member that has not heartbeaten for this long is stale and loses its
    /// partitions. Stored in the group on first use; the group's value wins
    /// over a later member's (so all members judge alike). Default 10 s.
    pub stale_after: Duration,
    /// How often a [`GroupConsumer`] (or competing consumer) heartbeats and
    /// runs a claim pass; `None` (the default) = a quarter of the group's
    /// stale threshold. Capped at half the threshold (at least 1 ms).
    pub rebalance_every: Option<Duration>,
}

impl Default for GroupOptions {
    fn default() -> Self {
        GroupOptions {
            stale_after: DEFAULT_STALE_AFTER,
            rebalance_every: None,
        }
    }
}

impl GroupOptions {
    /// Set the stale threshold.
    pub fn stale_after(mut self, d: Duration) -> Self {
        self.stale_after = d;
        self
    }
    /// Set the heartbeat / claim interval.
    pub fn rebalance_every(mut self, d: Duration) -> Self {
        self.rebalance_every = Some(d);
        self
    }
    fn validate(&self) -> Result<u32> {
        if self.stale_after < MIN_STALE_AFTER || self.stale_after.as_millis() > u128::from(u32::MAX)
        {
            return Err(Error::InvalidConfig(format!(
                "stale_after = {:?}; must be between {MIN_STALE_AFTER:?} and {} ms",
                self.stale_after,
                u32::MAX
            )));
        }
        if self.rebalance_every.is_some_and(|d| d.is_zero()) {
            return Err(Error::InvalidConfig(
                "rebalance_every must be positive".into(),
            ));
        }
        Ok(self.stale_after.as_millis() as u32)
    }
}

/// Liveness of tokens by kernel-held lock, memoised for one pass.
pub(crate) fn token_judge(ns: &str, me: u32) -> impl FnMut(u32) -> bool + '_ {
    let mut seen: Vec<(u32, bool)> = Vec::new();
    move |t| {
        if t == me {
            return true;
        }
        if let Some(&(_, alive)) = seen.iter().find(|(x, _)| *x == t) {
            return alive;
        }
        let alive = !token::probe(ns, t).is_dead();
        seen.push((t, alive));
        alive
    }
}

/// A member entry of this process in group `g`: shared by [`ConsumerGroup`]
/// and the competing consumer.
pub(crate) struct Membership {
    pub(crate) topic: Topic,
    pub(crate) name: String,
    pub(crate) g: u32,
    /// The group entry's READY word when we joined: another word means the
    /// group was deleted (or freed) since.
    pub(crate) gword: u64,
    pub(crate) index: usize,
    pub(crate) id: u64,
    pub(crate) role: u32,
    pub(crate) stale_ns: u64,
    pub(crate) every_ns: u64,
    pub(crate) active: bool,
    pub(crate) rejoins: u64,
}

impl Membership {
    pub(crate) fn join(topic: &Topic, group: &str, opts: &GroupOptions, role: u32) -> Result<Self> {
        let stale_ms = opts.validate()?;
        let inner = &topic.inner;
        if inner.reclaimed() {
            return Err(inner.expired());
        }
        let mut m = Membership {
            topic: topic.clone(),
            name: group.to_string(),
            g: 0,
            gword: 0,
            index: 0,
            id: 0,
            role,
            stale_ns: 0,
            every_ns: 0,
            active: false,
            rejoins: 0,
        };
        // A group being freed at this very moment (retention, delete) is
        // noticed by `take_entry` and created anew.
        let mut tries = 0;
        loop {
            let found = Table::of(inner).find_or_create(group)?;
            m.g = found.index;
            m.gword = found.word;
            let view = inner.group(m.g);
            // First setter wins, so every member judges staleness alike.
            let effective = match view.header.stale_ms.compare_exchange(
                0,
                stale_ms,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => stale_ms,
                Err(0) => stale_ms,
                Err(theirs) => theirs.max(MIN_STALE_AFTER.as_millis() as u32),
            };
            m.stale_ns = u64::from(effective) * 1_000_000;
            m.every_ns = opts
                .rebalance_every
                .map_or(m.stale_ns / 4, |d| {
                    d.as_nanos().min(u128::from(u64::MAX)) as u64
                })
                .min(m.stale_ns / 2)
                .max(1_000_000);
            match m.take_entry() {
                Err(Error::GroupDeleted { .. }) if tries < 8 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(1));
                }
                r => return r.map(|()| m),
            }
        }
    }

    pub(crate) fn inner(&self) -> &TopicInner {
        &self.topic.inner
    }

    pub(crate) fn view(&self) -> GroupView<'_> {
        self.topic.inner.group(self.g)
    }

    fn take_entry(&mut self) -> Result<()> {
        let inner = &self.topic.inner;
        let view = inner.group(self.g);
        let token = inner.token.id();
        let mut joined = proto::join(view.members, token, os::pid(), self.role, os::now_ns());
        if joined.is_none() {
            // Recycle the entries of dead or stale members, then retry.
            let now = os::now_ns();
            let mut alive = token_judge(&inner.ns, token);
            for m in view.members {
                let (id, h) = proto::judge(m, now, self.stale_ns, &mut alive);
                if h == Health::Stale && m.work_lo.load(Ordering::Acquire) == 0 {
                    proto::evict(m, id);
                }
            }
            joined = proto::join(view.members, token, os::pid(), self.role, os::now_ns());
        }
        let Some((index, id)) = joined else {
            self.check_group()?;
            return Err(Error::MemberTableFull {
                group: self.name.clone(),
                capacity: view.members.len() as u32,
            });
        };
        // SYNC POINT "free vs join": a freer that did not see our entry is
        // seen here, and we back out.
        if !proto::still_ready(&view.header.state, self.gword) {
            proto::leave(view.members, view.partitions, index, id);
            return Err(self.deleted());
        }
        self.index = index;
        self.id = id;
        self.active = true;
        self.touch(os::now_ns());
        Ok(())
    }

    fn deleted(&self) -> Error {
        Error::GroupDeleted {
            topic: self.topic.name().to_string(),
            group: self.name.clone(),
        }
    }

    /// [`Error::GroupDeleted`] if the group entry no longer holds the word we
    /// joined (deleted, or freed and reused).
    ///
    /// Hostile-peer repair: a member is the one process that knows what its
    /// group entry should hold. A state word no protocol step writes (see
    /// `group_protocol::restorable`) is put back by one CAS, and a scribbled
    /// name (which would make finders miss the group and create a second
    /// one) is rewritten. The state is put back if the entry still holds our
    /// member id (or our pid) or our name; the name only if it holds our
    /// member id or pid (the entry was not reset by a new creator).
    pub(crate) fn check_group(&self) -> Result<()> {
        let view = self.view();
        let mut w = view.header.state.load(Ordering::Acquire);
        // A few tries: a peer scribbling at this moment may change the word
        // between our load and our CAS.
        let mut tries = 0;
        while w != self.gword {
            if tries == 4
                || !proto::restorable(w, self.gword)
                || !(self.holds_entry() || self.name_bytes_ours())
            {
                return Err(self.deleted());
            }
            tries += 1;
            match view.header.state.compare_exchange(
                w,
                self.gword,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(actual) => w = actual,
            }
        }
        if !self.name_matches() && (self.holds_entry() || self.name_bytes_ours()) {
            // The entry is READY under our word and holds us: the name is
            // ours (it was checked at join), only its bytes were scribbled.
            let inner = self.inner();
            inner
                .meta
                .write_group_name(inner.meta_geo, self.g, self.name.as_bytes());
        }
        Ok(())
    }

    /// Whether the entry's name is ours.
    fn name_matches(&self) -> bool {
        let h = self.view().header;
        let name = self.name.as_bytes();
        h.name_len as usize == name.len() && h.name[..name.len()] == *name
    }

    /// Whether the entry's name bytes begin with ours.
    ///
    /// The length word is not consulted: it is the one part of the name a
    /// peer scribbles without touching the bytes, and a scribbled length
    /// together with a scribbled member id and pid (each put back only
    /// while the others hold) left a member refused for good. The caller
    /// asks this only about a state word no protocol step writes.
    fn name_bytes_ours(&self) -> bool {
        let h = self.view().header;
        let name = self.name.as_bytes();
        h.name[..name.len()] == *name
    }

    /// Whether this member's entry still holds its id (or it is between
    /// memberships, having been evicted: then the table was not reset under
    /// it as far as it can tell).
    ///
    /// A scribbled id alone does not hide it: the entry still names this
    /// process as its pid (a creator resets the member table; another
    /// process's member entry holds its own pid).
    fn holds_entry(&self) -> bool {
        !self.active
            || self.view().members.get(self.index).is_some_and(|m| {
                m.id.load(Ordering::Acquire) == self.id
                    || m.pid.load(Ordering::Relaxed) == os::pid()
            })
    }

    /// Mark the group alive (for backpressure) as of `now`.
    pub(crate) fn touch(&self, now: u64) {
        let last = &self.view().header.last_active_ns;
        let seen = last.fetch_max(now, Ordering::Relaxed);
        // Hostile-peer repair: a sign of life far in the future (scribbled)
        // would keep the group "recent" for good once its members are gone,
        // holding a backpressure writer and escaping retention. A member's
        // clock is the truth: put it back.
        if seen > now.saturating_add(FUTURE_SLACK_NS) {
            let _ = last.compare_exchange(seen, now, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    pub(crate) fn me(&self) -> Me {
        Me {
            index: self.index,
            id: self.id,
        }
    }

    /// Heartbeat; joins again (new id, no claims) if we were evicted.
    /// Returns `true` if it had to join again.
    pub(crate) fn heartbeat(&mut self) -> Result<bool> {
        let inner = self.inner();
        if inner.reclaimed() {
            return Err(inner.expired());
        }
        let now = os::now_ns();
        self.check_group()?;
        if !self.active {
            self.take_entry()?;
            return Ok(true);
        }
        let entry = &self.view().members[self.index];
        if proto::heartbeat(entry, self.id, now) {
            // Our own entry's role is ours alone: put back a scribbled one
            // (peers count claiming members by role).
            if entry.role.load(Ordering::Relaxed) != self.role {
                entry.role.store(self.role, Ordering::Relaxed);
            }
            self.touch(now);
            return Ok(false);
        }
        self.active = false;
        self.rejoins += 1;
        self.take_entry()?;
        Ok(true)
    }

    pub(crate) fn leave(&mut self) {
        if !self.active {
            return;
        }
        self.active = false;
        let view = self.view();
        proto::leave(view.members, view.partitions, self.index, self.id);
        self.touch(os::now_ns());
    }
}

/// One membership of this process in a consumer group, claiming partitions.
///
/// # Examples
/// ```no_run
/// # let mgr = shmq::TopicManager::new()?;
/// use shmq::{ConsumerGroup, GroupOptions};
/// let topic = mgr.open_or_create("orders", shmq::TopicConfig::default())?;
/// let mut member = ConsumerGroup::join(&topic, "billing", GroupOptions::default())?;
/// let mine = member.claim()?; // e.g. [0, 1] while another process holds [2, 3]
/// println!("processing partitions {mine:?}");
/// member.leave();
/// # Ok::<(), shmq::Error>(())
/// ```
pub struct ConsumerGroup {
    m: Membership,
    owned: Vec<u32>,
    last_claim_ns: u64,
}

impl std::fmt::Debug for ConsumerGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerGroup")
            .field("topic", &self.m.topic.name())
            .field("group", &self.m.name)
            .field("member", &self.m.index)
            .field("id", &format_args!("{:016x}", self.m.id))
            .field("owned", &self.owned)
            .finish()
    }
}

impl ConsumerGroup {
    /// Join `group` on `topic` as a new member (creating the group if
    /// needed). Claims nothing yet: call [`ConsumerGroup::claim`].
    ///
    /// # Errors
    /// [`Error::InvalidName`], [`Error::InvalidConfig`] for bad options,
    /// [`Error::GroupTableFull`], [`Error::MemberTableFull`],
    /// [`Error::LeaseExpired`].
    pub fn join(topic: &Topic, group: &str, opts: GroupOptions) -> Result<ConsumerGroup> {
        Ok(ConsumerGroup {
            m: Membership::join(topic, group, &opts, 0)?,
            owned: Vec::new(),
            last_claim_ns: 0,
        })
    }

    /// The group name.
    pub fn name(&self) -> &str {
        &self.m.name
    }

    /// The topic.
    pub fn topic(&self) -> &Topic {
        &self.m.topic
    }

    /// This member's id: `generation << 32 | liveness token`.
    pub fn member_id(&self) -> u64 {
        self.m.id
    }

    /// Index of this member's entry in the member table.
    pub fn member_index(&self) -> u32 {
        self.m.index as u32
    }

    /// The group's stale threshold (the first member's choice).
    pub fn stale_after(&self) -> Duration {
        Duration::from_nanos(self.m.stale_ns)
    }

    /// How often a [`GroupConsumer`] of this membership re-claims.
    pub fn rebalance_every(&self) -> Duration {
        Duration::from_nanos(self.m.every_ns)
    }

    /// Times this member found itself evicted (it had stalled past the stale
    /// threshold) and joined again.
    pub fn rejoins(&self) -> u64 {
        self.m.rejoins
    }

    /// The partitions this member claimed at its last pass, ascending.
    pub fn assignment(&self) -> &[u32] {
        &self.owned
    }

    /// Whether this member still claims `partition` (one shared load).
    pub fn owns(&self, partition: u32) -> bool {
        self.m.active
            && self
                .m
                .view()
                .partitions
                .get(partition as usize)
                .is_some_and(|gp| proto::owns(gp, self.m.me().word()))
    }

    /// Record a heartbeat. If this member had been evicted as stale, it joins
    /// again under a new id (and claims nothing until the next
    /// [`ConsumerGroup::claim`]).
    ///
    /// # Errors
    /// [`Error::LeaseExpired`], [`Error::MemberTableFull`] on a re-join.
    pub fn heartbeat(&mut self) -> Result<()> {
        if self.m.heartbeat()? {
            self.owned.clear();
        }
        Ok(())
    }

    /// Heartbeat and run one claim pass: evict stale members, release
    /// partitions above this member's fair share, take free or orphaned ones
    /// up to it. Returns the partitions now claimed, ascending.
    ///
    /// # Errors
    /// As [`ConsumerGroup::heartbeat`].
    pub fn claim(&mut self) -> Result<Vec<u32>> {
        Ok(self.claim_detailed()?.owned)
    }

    pub(crate) fn claim_detailed(&mut self) -> Result<proto::ClaimOutcome> {
        self.heartbeat()?;
        let mut rejoined = false;
        loop {
            let inner = &self.m.topic.inner;
            let view = inner.group(self.m.g);
            // Only the partitions published so far (the group has lines for
            // every partition the topic may grow to).
            let n = (inner.refresh()? as usize).min(view.partitions.len());
            let now = os::now_ns();
            let alive = token_judge(&inner.ns, inner.token.id());
            match proto::claim_pass(
                view.members,
                &view.partitions[..n],
                self.m.me(),
                now,
                self.m.stale_ns,
                alive,
            ) {
                Ok(out) => {
                    if out.evicted > 0 {
                        tracing::info!(topic = %inner.name, evicted = out.evicted, "shmq: evicted stale group members");
                    }
                    self.owned.clone_from(&out.owned);
                    self.last_claim_ns = now;
                    return Ok(out);
                }
                Err(proto::Evicted) if !rejoined => {
                    tracing::warn!(topic = %inner.name, "shmq: this group member was evicted as stale; joining again");
                    rejoined = true;
                    self.m.active = false;
                    self.m.rejoins += 1;
                    self.owned.clear();
                    self.m.take_entry()?;
                }
                Err(proto::Evicted) => {
                    self.owned.clear();
                    return Ok(proto::ClaimOutcome::default());
                }
            }
        }
    }

    /// Commit `next_offset` (the next offset to process) for `partition` if
    /// this member still claims it; returns whether it did.
    ///
    /// # Errors
    /// [`Error::NoSuchPartition`].
    pub fn commit(&self, partition: u32, next_offset: u64) -> Result<bool> {
        self.m.topic.inner.partition(partition)?;
        self.m.check_group()?;
        if !self.owns(partition) {
            return Ok(false);
        }
        let view = self.m.view();
        // SYNC POINT "commit" (and "handover": it precedes a release).
        view.partitions[partition as usize]
            .committed
            .store(next_offset.saturating_add(1), Ordering::Release);
        self.m.touch(os::now_ns());
        self.m.topic.inner.after_commit()?;
        Ok(true)
    }

    /// The group's committed offset on `partition` (next to process).
    pub fn committed(&self, partition: u32) -> Option<u64> {
        self.m
            .view()
            .partitions
            .get(partition as usize)?
            .committed
            .load(Ordering::Acquire)
            .checked_sub(1)
    }

    /// Leave the group: release every claimed partition and free the member
    /// entry at once (peers take the partitions at their next pass). Also
    /// done on drop.
    pub fn leave(&mut self) {
        self.m.leave();
        self.owned.clear();
    }

    /// Leave, then delete the group: its entry, committed offsets and
    /// counters are freed at once.
    ///
    /// # Errors
    /// [`Error::GroupBusy`] if another member is a live process (see
    /// [`Topic::delete_group`] to force it), [`Error::GroupNotFound`].
    pub fn delete(mut self) -> Result<()> {
        self.leave();
        self.m.topic.delete_group(&self.m.name, false)
    }

    /// A consumer driven by this membership.
    ///
    /// # Errors
    /// As [`Consumer::new`].
    pub fn into_consumer(self) -> Result<GroupConsumer> {
        GroupConsumer::from_group(self)
    }
}

impl Drop for ConsumerGroup {
    fn drop(&mut self) {
        self.m.leave();
    }
}

/// A [`Consumer`] whose assignment is the partitions its [`ConsumerGroup`]
/// membership claims: every poll heartbeats and, every
/// [`ConsumerGroup::rebalance_every`], runs a claim pass, keeps the position
/// of partitions it still holds, drops lost ones and positions newly claimed
/// ones at the group's committed offset (or the earliest retained record).
///
/// Keep the time between two polls below the group's stale threshold, or
/// the member is judged stuck and its partitions move to its peers.
///
/// # Examples
/// ```no_run
/// # let mgr = shmq::TopicManager::new()?;
/// use shmq::{GroupConsumer, GroupOptions};
/// use std::time::Duration;
/// let topic = mgr.open_or_create("orders", shmq::TopicConfig::default())?;
/// let mut consumer = GroupConsumer::join(&topic, "billing", GroupOptions::default())?;
/// loop {
///     let batch = consumer.poll_timeout(100, Duration::from_millis(100))?;
///     for record in &batch.records {
///         println!("{}@{}", record.partition, record.offset);
///     }
///     consumer.commit()?; // only the partitions it still owns
/// #   break;
/// }
/// # Ok::<(), shmq::Error>(())
/// ```
pub struct GroupConsumer {
    group: ConsumerGroup,
    pub(crate) consumer: Consumer,
    /// Where this member last was on each partition it read: everything
    /// below was delivered, so a partition taken again never starts below
    /// it (a scribbled low committed offset would count the ring's whole
    /// history as missed).
    last_pos: Vec<(u32, u64)>,
}

impl std::fmt::Debug for GroupConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupConsumer")
            .field("group", &self.group)
            .finish()
    }
}

impl GroupConsumer {
    /// Join `group` on `topic` and claim this member's share at once.
    ///
    /// # Errors
    /// As [`ConsumerGroup::join`].
    pub fn join(topic: &Topic, group: &str, opts: GroupOptions) -> Result<GroupConsumer> {
        ConsumerGroup::join(topic, group, opts)?.into_consumer()
    }

    fn from_group(group: ConsumerGroup) -> Result<GroupConsumer> {
        // Its polls are the group's signs of life, but a deleted group must
        // not be re-created by a poll: the membership's group word decides.
        let mut consumer = Consumer::with_store(
            group.topic(),
            group.name(),
            Box::new(crate::offset::ShmOffsetStore),
        )?;
        consumer.group_index = Some(group.m.g);
        consumer.group_word = group.m.gword;
        consumer.reregister = false;
        consumer.cursors.clear();
        consumer.rr = 0;
        // The group decides the assignment; growth only triggers a rebalance.
        consumer.growth = crate::consumer::Growth::Notify;
        let mut gc = GroupConsumer {
            group,
            consumer,
            last_pos: Vec::new(),
        };
        gc.rebalance()?;
        Ok(gc)
    }

    /// The membership.
    pub fn group(&self) -> &ConsumerGroup {
        &self.group
    }

    /// The underlying consumer (read-only: its assignment belongs to the group).
    pub fn consumer(&self) -> &Consumer {
        &self.consumer
    }

    /// The partitions currently assigned, in polling order.
    pub fn assignment(&self) -> Vec<u32> {
        self.consumer.assignment()
    }

    /// The next offset this consumer reads on `partition`, if assigned.
    pub fn position(&self, partition: u32) -> Option<u64> {
        self.consumer.position(partition)
    }

    /// Offsets lost to lapping (overwrite topics) since creation.
    pub fn missed(&self) -> u64 {
        self.consumer.missed()
    }

    /// Run a claim pass now and update the assignment. Returns whether it
    /// changed.
    ///
    /// # Errors
    /// As [`ConsumerGroup::claim`].
    pub fn rebalance(&mut self) -> Result<bool> {
        self.consumer.seen = self.group.m.topic.inner.refresh()?;
        let out = self.group.claim_detailed()?;
        let inner = &self.group.m.topic.inner;
        let view = inner.group(self.group.m.g);
        let old = std::mem::take(&mut self.consumer.cursors);
        for c in &old {
            match self.last_pos.iter_mut().find(|(p, _)| *p == c.partition) {
                Some((_, pos)) => *pos = c.next,
                None => self.last_pos.push((c.partition, c.next)),
            }
        }
        let mut cursors = Vec::with_capacity(out.owned.len());
        for &p in &out.owned {
            let kept = old.iter().find(|c| c.partition == p).copied();
            let c = match kept {
                Some(c) if !out.taken.contains(&p) => c,
                _ => {
                    let part = inner.partition(p)?;
                    let next = match view.partitions[p as usize]
                        .committed
                        .load(Ordering::Acquire)
                        .checked_sub(1)
                    {
                        // Hostile-peer repair (ring work): a committed
                        // offset beyond the write end was scribbled; waiting
                        // there would stall this member for good.
                        //
                        // A partition this member read before and takes
                        // again (it lost the claim to a scribbled owner
                        // word, or rejoined): never start below where it
                        // already was. Everything below was delivered, so a
                        // scribbled low committed offset would only count
                        // the ring's whole history as missed.
                        Some(o) => o
                            .max(kept.map_or(0, |c| c.next))
                            .max(
                                self.last_pos
                                    .iter()
                                    .find(|(q, _)| *q == p)
                                    .map_or(0, |&(_, pos)| pos),
                            )
                            .min(ring::checked_latest(part.header(), &part.slots())),
                        None => {
                            // Never committed: hold a backpressure writer from
                            // here, not from offset 0.
                            let start = ring::checked_earliest(part.header(), &part.slots());
                            proto::publish_start(&view.partitions[p as usize], start);
                            start
                        }
                    };
                    Cursor::at(p, next)
                }
            };
            cursors.push(c);
        }
        let changed = old.len() != cursors.len()
            || old
                .iter()
                .zip(&cursors)
                .any(|(a, b)| a.partition != b.partition);
        if self.consumer.rr >= cursors.len() {
            self.consumer.rr = 0;
        }
        self.consumer.cursors = cursors;
        Ok(changed)
    }

    pub(crate) fn maintain(&mut self) -> Result<()> {
        self.group.m.check_group()?;
        let now = os::now_ns();
        if now.saturating_sub(self.group.last_claim_ns) >= self.group.m.every_ns
            || !self.group.m.active
            || self.consumer.grew()
        {
            self.rebalance()?;
        }
        Ok(())
    }

    /// Heartbeat / rebalance if due, then read up to `max` records from the
    /// claimed partitions without waiting.
    ///
    /// # Errors
    /// [`Error::LeaseExpired`], [`Error::MemberTableFull`] on a re-join.
    pub fn poll(&mut self, max: usize) -> Result<Polled> {
        self.maintain()?;
        self.consumer.poll(max)
    }

    /// Heartbeat / rebalance if due, then read up to `max` records from the
    /// claimed partitions into `batch` without waiting, as
    /// [`Consumer::poll_into_batch`]; returns how many.
    ///
    /// # Errors
    /// As [`GroupConsumer::poll`].
    pub fn poll_into_batch(&mut self, batch: &mut crate::RecordBatch, max: usize) -> Result<usize> {
        self.maintain()?;
        self.consumer.poll_into_batch(batch, max)
    }

    /// Like [`GroupConsumer::poll`], waiting up to `timeout` for a record
    /// (and keeping up heartbeats and rebalances while it waits). A timeout
    /// too large to represent as an instant (e.g. `Duration::MAX`) waits
    /// until something arrives.
    ///
    /// # Errors
    /// As [`GroupConsumer::poll`].
    pub fn poll_timeout(&mut self, max: usize, timeout: Duration) -> Result<Polled> {
        self.poll_until(max, Deadline::after(timeout))
    }

    fn poll_until(&mut self, max: usize, deadline: Deadline) -> Result<Polled> {
        loop {
            self.maintain()?;
            let slice = deadline.remaining_at_most(Duration::from_nanos(self.group.m.every_ns));
            let got = self.consumer.poll_timeout(max, slice)?;
            if !got.is_empty() || deadline.passed() {
                return Ok(got);
            }
        }
    }

    /// Wait for the next record, however long it takes.
    ///
    /// # Errors
    /// As [`GroupConsumer::poll`].
    pub fn recv(&mut self) -> Result<Record> {
        self.recv_until(Deadline::never())
    }

    /// Wait up to `timeout` for the next record (`Duration::MAX`: forever).
    ///
    /// # Errors
    /// [`Error::Timeout`], and as [`GroupConsumer::poll`].
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Record> {
        self.recv_until(Deadline::after(timeout))
    }

    fn recv_until(&mut self, deadline: Deadline) -> Result<Record> {
        loop {
            let mut got = self.poll_until(1, deadline)?;
            if let Some(r) = got.records.pop() {
                return Ok(r);
            }
            if deadline.passed() {
                return Err(Error::Timeout);
            }
        }
    }

    /// Reposition one assigned partition (e.g. back to a record to redeliver).
    ///
    /// # Errors
    /// [`Error::NoSuchPartition`] if it is not assigned.
    pub fn seek_partition(&mut self, partition: u32, policy: SeekPolicy) -> Result<()> {
        self.consumer.seek_partition(partition, policy)
    }

    /// Commit the position of every assigned partition this member still
    /// claims (a partition lost to a peer is skipped: its new owner commits).
    ///
    /// # Errors
    /// [`Error::LeaseExpired`].
    pub fn commit(&mut self) -> Result<()> {
        if self.group.m.topic.inner.reclaimed() {
            return Err(self.group.m.topic.inner.expired());
        }
        for i in 0..self.consumer.cursors.len() {
            let c = self.consumer.cursors[i];
            self.group.commit(c.partition, c.next)?;
        }
        Ok(())
    }

    /// Commit `next_offset` for one partition if this member still claims it;
    /// returns whether it did.
    ///
    /// # Errors
    /// [`Error::NoSuchPartition`].
    pub fn commit_offset(&mut self, partition: u32, next_offset: u64) -> Result<bool> {
        self.group.commit(partition, next_offset)
    }

    /// Leave the group now (also on drop).
    pub fn leave(mut self) {
        self.group.leave();
    }
}
