//! The group coordinator: group state machines ([`super::state`]) per
//! `__consumer_offsets` partition, the channels that answer parked
//! JoinGroup/SyncGroup requests, and the records that make groups and
//! committed offsets durable.
//!
//! A group belongs to partition `partition_for(group)` of the offsets
//! topic; that partition's owner shard writes its records. The state of a
//! partition's groups sits behind its own mutex: handlers on any shard
//! lock it for a few microseconds (never across an `.await`), and only log
//! writes hop to the owner shard, through one writer task per partition
//! so records land in the order the state machine decided them.
//!
//! In a cluster the offsets topic is replicated like any other topic, and
//! the coordinator of a group is the Raft leader of its offsets partition:
//! a slot is loaded only while this broker leads that partition (once
//! everything from earlier terms is committed), unloaded when it stops
//! leading, and its writer proposes through Raft with acks=all.

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::ResponseError as E;
use odradek_engine::batch::{self, BatchBuilder, Record};
use odradek_engine::shard::{Log, TopicPartition};

use super::records::{self, GroupValue, Key, MemberValue, OffsetValue};
use super::state::{Committed, Group, JoinArgs, JoinResult, Limits, Output, SyncResult, Waiter};
use crate::broker::Ctx;
use crate::replication::group::GroupHandle;
use crate::replication::replica::Acks;
use crate::replication::{ProduceError, Role};

/// The internal topic holding groups and committed offsets.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// How often sessions and rebalance deadlines are checked.
const TICK: Duration = Duration::from_millis(100);

/// In a cluster: how often offsets partitions' leadership is checked.
const WATCH: Duration = Duration::from_millis(50);

/// In a cluster: how long a replicated write may wait for a majority
/// (Kafka's `offsets.commit.timeout.ms` default).
const REPLICATED_WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// The partition of the offsets topic that coordinates `group`: Kafka's
/// rule (Java `String.hashCode`, sign bit cleared, modulo the count), so a
/// group lands where it would on Kafka.
pub fn partition_for(group: &str, partitions: i32) -> i32 {
    let mut h: i32 = 0;
    for u in group.encode_utf16() {
        h = h.wrapping_mul(31).wrapping_add(u as i32);
    }
    (h & 0x7fff_ffff) % partitions.max(1)
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Why a write to the offsets log did not become durable.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    /// This broker no longer leads the offsets partition (cluster).
    #[error("not the leader of the offsets partition")]
    NotLeader,
    /// The partition's Raft group refused or did not commit it (cluster).
    #[error("not replicated: {0}")]
    Replication(String),
    #[error("offsets log: {0}")]
    Log(String),
    #[error("the offsets writer is gone")]
    WriterGone,
}

impl WriteError {
    /// The Kafka error a client gets.
    pub fn code(&self) -> E {
        match self {
            WriteError::NotLeader => E::NotCoordinator,
            WriteError::Replication(_) => E::RequestTimedOut,
            WriteError::Log(_) | WriteError::WriterGone => E::CoordinatorNotAvailable,
        }
    }
}

impl From<ProduceError> for WriteError {
    fn from(e: ProduceError) -> Self {
        match e {
            ProduceError::NotLeader { .. } => WriteError::NotLeader,
            other => WriteError::Replication(other.to_string()),
        }
    }
}

type WriteResult = Result<u64, WriteError>;

/// A write to the offsets log and who waits for it to be durable.
struct Write {
    batch: Bytes,
    /// Base offset of the batch once durable, or why not.
    done: Option<flume::Sender<WriteResult>>,
}

/// The groups of one offsets partition.
#[derive(Default)]
struct Groups {
    map: HashMap<String, Group>,
    joins: HashMap<Waiter, flume::Sender<JoinResult>>,
    syncs: HashMap<Waiter, flume::Sender<SyncResult>>,
}

const UNLOADED: u8 = 0;
const LOADING: u8 = 1;
const LOADED: u8 = 2;

struct Slot {
    groups: Mutex<Groups>,
    /// Locked after `groups` when both are.
    writer: Mutex<Option<flume::Sender<Write>>>,
    load: AtomicU8,
    /// Cluster: the Raft term the groups were (are being) loaded in.
    term: AtomicU64,
    /// Cluster: this broker's replica of the partition, once it has one.
    replica: OnceLock<GroupHandle>,
}

impl Slot {
    fn new() -> Self {
        Slot {
            groups: Mutex::new(Groups::default()),
            writer: Mutex::new(None),
            load: AtomicU8::new(UNLOADED),
            term: AtomicU64::new(0),
            replica: OnceLock::new(),
        }
    }

    /// Cluster: whether the groups held are this leadership's. A broker
    /// that lost and regained leadership since they were loaded holds
    /// state another leader may have changed: the watcher reloads it.
    fn current(&self) -> Result<(), E> {
        match self.replica.get().and_then(GroupHandle::leader_term) {
            None => Err(E::NotCoordinator),
            Some(t) if t == self.term.load(Ordering::Acquire) => Ok(()),
            Some(_) => Err(E::CoordinatorLoadInProgress),
        }
    }

    fn set_writer(&self, w: Option<flume::Sender<Write>>) {
        *self.writer.lock().unwrap_or_else(|e| e.into_inner()) = w;
    }
}

/// What the leadership watcher does with a slot (cluster).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotAction {
    Nothing,
    /// (Re)load for this term: a new leadership, or a failed load retried.
    Load(u64),
    /// This broker stopped leading the partition.
    Unload,
}

/// `leading`: the term this broker leads the partition in, if it does;
/// `load`/`loaded_term`: the slot's state and the term it was loaded in.
fn slot_action(leading: Option<u64>, load: u8, loaded_term: u64) -> SlotAction {
    match leading {
        None if load == UNLOADED => SlotAction::Nothing,
        None => SlotAction::Unload,
        Some(t) if t == loaded_term && load != UNLOADED => SlotAction::Nothing,
        Some(t) => SlotAction::Load(t),
    }
}

/// A new leader may serve its partition's groups once everything its log
/// held when it took over is committed: the entries of earlier terms are
/// committed only with its own term's first entry.
fn caught_up(high_watermark: u64, log_end_at_election: u64) -> bool {
    high_watermark >= log_end_at_election
}

/// What DescribeGroups reports.
pub struct Described {
    pub state: &'static str,
    pub protocol_type: String,
    pub protocol: String,
    /// (id, instance id, client id, client host, metadata, assignment)
    pub members: Vec<(String, Option<String>, String, String, Bytes, Bytes)>,
}

/// One offset to commit.
pub struct CommitArgs {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
}

/// A commit on its way to the log.
pub struct PendingCommit {
    group: String,
    values: Vec<(String, i32, OffsetValue)>,
    rx: flume::Receiver<WriteResult>,
}

/// The broker's group coordinator.
pub struct Coordinator {
    slots: OnceLock<Vec<Slot>>,
    next_waiter: AtomicU64,
    pub limits: Limits,
    /// A cluster member: the offsets topic is replicated and a group's
    /// coordinator is its partition's leader.
    clustered: bool,
    /// A creation of the offsets topic is in flight (cluster).
    creating: AtomicBool,
}

impl Coordinator {
    pub fn new(limits: Limits, clustered: bool) -> Self {
        Self {
            slots: OnceLock::new(),
            next_waiter: AtomicU64::new(1),
            limits,
            clustered,
            creating: AtomicBool::new(false),
        }
    }

    fn slots(&self) -> Result<&[Slot], E> {
        self.slots
            .get()
            .map(Vec::as_slice)
            .ok_or(if self.clustered {
                E::NotCoordinator
            } else {
                E::CoordinatorNotAvailable
            })
    }

    /// The partition of `group` and its state, if loaded here. In a
    /// cluster, a broker that does not lead the partition answers
    /// NOT_COORDINATOR (the client looks the coordinator up again).
    fn slot(&self, group: &str) -> Result<(i32, &Slot), E> {
        let slots = self.slots()?;
        let p = partition_for(group, slots.len() as i32);
        let slot = &slots[p as usize];
        if self.clustered {
            slot.current()?;
        }
        match slot.load.load(Ordering::Acquire) {
            LOADED => Ok((p, slot)),
            _ => Err(E::CoordinatorLoadInProgress),
        }
    }

    /// Wait for a write's outcome (in a cluster, at most
    /// [`REPLICATED_WRITE_TIMEOUT`]).
    async fn written(&self, rx: flume::Receiver<WriteResult>) -> Result<u64, WriteError> {
        let r = if self.clustered {
            match compio::time::timeout(REPLICATED_WRITE_TIMEOUT, rx.recv_async()).await {
                Ok(r) => r,
                Err(_) => {
                    return Err(WriteError::Replication(
                        "not committed by a majority in time".into(),
                    ))
                }
            }
        } else {
            rx.recv_async().await
        };
        r.unwrap_or(Err(WriteError::WriterGone))
    }

    fn lock(slot: &Slot) -> MutexGuard<'_, Groups> {
        // A panic while holding the lock leaves plain data behind; go on.
        slot.groups.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn waiter(&self) -> Waiter {
        self.next_waiter.fetch_add(1, Ordering::Relaxed)
    }

    fn init_slots(&self, partitions: i32) -> &[Slot] {
        self.slots
            .get_or_init(|| (0..partitions.max(1)).map(|_| Slot::new()).collect())
    }

    /// Whether groups can be served: the offsets topic exists and every
    /// partition is loaded. Creates the topic on first use, like Kafka.
    /// In a cluster: the replicated topic exists (created through the
    /// controller by whichever broker needs it first); loading follows
    /// leadership ([`Coordinator::run_leadership`]).
    pub async fn ensure(&self, ctx: &Ctx) -> Result<(), E> {
        if let Some(c) = ctx.broker.cluster.as_ref().filter(|_| self.clustered) {
            return self.ensure_replicated(ctx, c).await;
        }
        if let Some(slots) = self.slots.get() {
            if slots
                .iter()
                .all(|s| s.load.load(Ordering::Acquire) == LOADED)
            {
                return Ok(());
            }
        }
        let snap = ctx.broker.registry.snapshot();
        let meta = match snap.get(OFFSETS_TOPIC) {
            Some(m) => m.clone(),
            None => {
                let configs = offsets_topic_configs(&ctx.broker.config);
                let n = ctx.broker.config.offsets_topic_num_partitions;
                match crate::handlers::metadata::create_internal_topic(
                    ctx,
                    OFFSETS_TOPIC,
                    n,
                    1,
                    configs,
                )
                .await
                {
                    Ok(m) => {
                        tracing::info!(partitions = n, "created {OFFSETS_TOPIC}");
                        m
                    }
                    Err(e) if e.code == E::TopicAlreadyExists => ctx
                        .broker
                        .registry
                        .snapshot()
                        .get(OFFSETS_TOPIC)
                        .cloned()
                        .ok_or(E::CoordinatorNotAvailable)?,
                    Err(e) => {
                        tracing::warn!("cannot create {OFFSETS_TOPIC}: {}", e.message);
                        return Err(E::CoordinatorNotAvailable);
                    }
                }
            }
        };
        let slots = self.init_slots(meta.partitions);
        ctx.open_partitions(&meta, 0, slots.len() as i32)
            .await
            .map_err(|e| {
                tracing::warn!("cannot open {OFFSETS_TOPIC}: {e}");
                E::CoordinatorNotAvailable
            })?;
        let mut busy = false;
        for (p, slot) in slots.iter().enumerate() {
            if slot
                .load
                .compare_exchange(UNLOADED, LOADING, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                busy |= slot.load.load(Ordering::Acquire) != LOADED;
                continue;
            }
            let tp = TopicPartition::new(OFFSETS_TOPIC, p as i32);
            let broker = ctx.broker.clone();
            let loaded = ctx
                .with_log(&tp, move |log| async move {
                    load_partition(&broker, p, log).await
                })
                .await;
            match loaded {
                Ok(Some(Ok(()))) => slot.load.store(LOADED, Ordering::Release),
                other => {
                    slot.load.store(UNLOADED, Ordering::Release);
                    let why = match other {
                        Ok(Some(Err(e))) => e,
                        Ok(None) => "partition not open".into(),
                        Err(e) => e.to_string(),
                        Ok(Some(Ok(()))) => unreachable!(),
                    };
                    tracing::warn!(partition = p, "loading groups failed: {why}");
                    return Err(E::CoordinatorNotAvailable);
                }
            }
        }
        if busy {
            return Err(E::CoordinatorLoadInProgress);
        }
        Ok(())
    }

    async fn ensure_replicated(
        &self,
        ctx: &Ctx,
        c: &crate::cluster::runtime::Cluster,
    ) -> Result<(), E> {
        if self.slots.get().is_some() {
            return Ok(());
        }
        if let Some(t) = c.topic(OFFSETS_TOPIC) {
            self.init_slots(t.meta.partitions);
            return Ok(());
        }
        if self.creating.swap(true, Ordering::AcqRel) {
            return Err(E::CoordinatorNotAvailable); // the client retries
        }
        // Cleared however this ends (a dropped request future too).
        struct Creating<'a>(&'a AtomicBool);
        impl Drop for Creating<'_> {
            fn drop(&mut self) {
                self.0.store(false, Ordering::Release);
            }
        }
        let creating = Creating(&self.creating);
        let cfg = &ctx.broker.config;
        let n = cfg.offsets_topic_num_partitions;
        let created = crate::handlers::metadata::create_internal_topic(
            ctx,
            OFFSETS_TOPIC,
            n,
            cfg.offsets_topic_replication_factor,
            offsets_topic_configs(cfg),
        )
        .await;
        drop(creating);
        match created {
            Ok(m) => {
                tracing::info!(
                    partitions = m.partitions,
                    "created the replicated {OFFSETS_TOPIC}"
                );
            }
            // Another broker created it first: one topic either way.
            Err(e) if e.code == E::TopicAlreadyExists => {}
            Err(e) => {
                tracing::warn!("cannot create {OFFSETS_TOPIC}: {}", e.message);
                return Err(E::CoordinatorNotAvailable);
            }
        }
        let t = c.topic(OFFSETS_TOPIC).ok_or(E::CoordinatorNotAvailable)?;
        self.init_slots(t.meta.partitions);
        Ok(())
    }

    /// Cluster: the broker that coordinates `group`, i.e. the leader of
    /// its offsets partition as this broker's replica knows it.
    pub fn coordinator_of(
        &self,
        cluster: &crate::cluster::runtime::Cluster,
        group: &str,
    ) -> Result<u64, E> {
        let slots = self.slots.get().ok_or(E::CoordinatorNotAvailable)?;
        let p = partition_for(group, slots.len() as i32);
        // The local replica's view where there is one, else the leader the
        // controller has on record (a broker need not hold the partition).
        let topic = cluster
            .topic(OFFSETS_TOPIC)
            .ok_or(E::CoordinatorNotAvailable)?;
        cluster
            .partition_view(&topic, p)
            .leader
            .and_then(|l| u64::try_from(l).ok())
            .ok_or(E::CoordinatorNotAvailable)
    }

    /// Cluster: whether `group` is coordinated here but still loading.
    pub fn loading_here(&self, group: &str) -> bool {
        matches!(self.slot(group), Err(E::CoordinatorLoadInProgress))
    }

    /// Carry out a state machine's outputs (with its partition locked).
    fn dispatch(&self, p: i32, slot: &Slot, groups: &mut Groups, group: &str, out: Vec<Output>) {
        if let Some(g) = groups.map.get(group) {
            tracing::debug!(
                group,
                state = g.state.name(),
                generation = g.generation,
                members = g.members.len(),
                ?out,
                "group outputs"
            );
        }
        for o in out {
            match o {
                Output::Join(w, r) => {
                    if let Some(tx) = groups.joins.remove(&w) {
                        let _ = tx.send(r);
                    }
                }
                Output::Sync(w, r) => {
                    if let Some(tx) = groups.syncs.remove(&w) {
                        let _ = tx.send(r);
                    }
                }
                Output::Persist => {
                    let Some(g) = groups.map.get(group) else {
                        continue;
                    };
                    let batch = build_batch(&[(records::group_key(group), Some(group_value(g)))]);
                    self.write(p, slot, batch, None);
                }
            }
        }
    }

    fn write(&self, p: i32, slot: &Slot, batch: Bytes, done: Option<flume::Sender<WriteResult>>) {
        let w = slot.writer.lock().unwrap_or_else(|e| e.into_inner());
        match w.as_ref() {
            Some(w) if w.send(Write { batch, done }).is_ok() => {}
            _ => tracing::warn!(
                partition = p,
                "offsets writer gone; a group record was not written"
            ),
        }
    }

    /// JoinGroup: the answer comes through the receiver (at once, or when
    /// the generation completes).
    pub fn join(&self, group: &str, args: JoinArgs) -> Result<flume::Receiver<JoinResult>, E> {
        let (p, slot) = self.slot(group)?;
        let mut gs = Self::lock(slot);
        let w = self.waiter();
        let (tx, rx) = flume::bounded(1);
        gs.joins.insert(w, tx);
        let mut out = Vec::new();
        let g = gs
            .map
            .entry(group.to_string())
            .or_insert_with(|| Group::new(group));
        g.join(args, w, now_ms(), &self.limits, &mut out);
        self.dispatch(p, slot, &mut gs, group, out);
        Ok(rx)
    }

    /// SyncGroup: the answer comes through the receiver.
    #[allow(clippy::too_many_arguments)]
    pub fn sync(
        &self,
        group: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        protocol_type: Option<&str>,
        protocol_name: Option<&str>,
        assignments: Vec<(String, Bytes)>,
    ) -> Result<flume::Receiver<SyncResult>, E> {
        let (p, slot) = self.slot(group)?;
        let mut gs = Self::lock(slot);
        let Some(g) = gs.map.get_mut(group) else {
            return Err(E::UnknownMemberId);
        };
        let w = self.next_waiter.fetch_add(1, Ordering::Relaxed);
        let mut out = Vec::new();
        g.sync(
            member_id,
            instance_id,
            generation,
            protocol_type,
            protocol_name,
            assignments,
            w,
            now_ms(),
            &mut out,
        );
        let (tx, rx) = flume::bounded(1);
        gs.syncs.insert(w, tx);
        self.dispatch(p, slot, &mut gs, group, out);
        Ok(rx)
    }

    pub fn heartbeat(
        &self,
        group: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<(), E> {
        let (_, slot) = self.slot(group)?;
        let mut gs = Self::lock(slot);
        let r = match gs.map.get_mut(group) {
            Some(g) => g.heartbeat(member_id, instance_id, generation, now_ms()),
            None => Err(E::UnknownMemberId),
        };
        tracing::trace!(group, member_id, generation, ?r, "heartbeat");
        r
    }

    /// LeaveGroup: an error code per (member id, instance id).
    pub fn leave(
        &self,
        group: &str,
        members: &[(String, Option<String>)],
    ) -> Result<Vec<Result<(), E>>, E> {
        let (p, slot) = self.slot(group)?;
        let mut gs = Self::lock(slot);
        let Some(g) = gs.map.get_mut(group) else {
            return Err(E::UnknownMemberId);
        };
        let mut out = Vec::new();
        let now = now_ms();
        let codes = members
            .iter()
            .map(|(m, i)| g.leave(m, i.as_deref(), now, &mut out))
            .collect();
        self.dispatch(p, slot, &mut gs, group, out);
        Ok(codes)
    }

    /// OffsetCommit, first phase: validate the member and queue one batch
    /// with every offset (so pipelined commits keep their order).
    pub fn commit_start(
        &self,
        group: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        offsets: Vec<CommitArgs>,
    ) -> Result<PendingCommit, E> {
        let (p, slot) = self.slot(group)?;
        let now = now_ms();
        let (tx, rx) = flume::bounded(1);
        let mut gs = Self::lock(slot);
        let g = gs
            .map
            .entry(group.to_string())
            .or_insert_with(|| Group::new(group));
        g.check_commit(member_id, instance_id, generation, now)?;
        let values: Vec<(String, i32, OffsetValue)> = offsets
            .into_iter()
            .map(|o| {
                let v = OffsetValue {
                    offset: o.offset,
                    leader_epoch: o.leader_epoch,
                    metadata: o.metadata,
                    commit_timestamp: now as i64,
                };
                (o.topic, o.partition, v)
            })
            .collect();
        if !values.is_empty() {
            let recs: Vec<(Bytes, Option<Bytes>)> = values
                .iter()
                .map(|(t, part, v)| (records::offset_key(group, t, *part), Some(v.encode())))
                .collect();
            self.write(p, slot, build_batch(&recs), Some(tx));
        }
        Ok(PendingCommit {
            group: group.to_string(),
            values,
            rx,
        })
    }

    /// OffsetCommit, second phase: once the batch is durable, make the
    /// offsets visible.
    pub async fn commit_finish(&self, c: PendingCommit) -> Result<(), E> {
        if c.values.is_empty() {
            return Ok(());
        }
        let base = match self.written(c.rx).await {
            Ok(base) => base,
            Err(why) => {
                tracing::warn!(group = c.group, "offset commit not written: {why}");
                return Err(why.code());
            }
        };
        let (_, slot) = self.slot(&c.group)?;
        let mut gs = Self::lock(slot);
        let g = gs
            .map
            .entry(c.group.clone())
            .or_insert_with(|| Group::new(&c.group));
        for (i, (t, part, v)) in c.values.into_iter().enumerate() {
            apply_offset(g, t, part, v, base + i as u64);
        }
        Ok(())
    }

    /// OffsetFetch: committed offsets of the listed partitions (`None`: all
    /// the group has).
    pub fn fetch(
        &self,
        group: &str,
        wanted: Option<Vec<(String, Vec<i32>)>>,
    ) -> Result<Vec<(String, i32, Option<Committed>)>, E> {
        let (_, slot) = self.slot(group)?;
        let gs = Self::lock(slot);
        let g = gs.map.get(group);
        Ok(match wanted {
            Some(list) => list
                .into_iter()
                .flat_map(|(t, ps)| ps.into_iter().map(move |p| (t.clone(), p)))
                .map(|(t, p)| {
                    let c = g.and_then(|g| g.offsets.get(&(t.clone(), p)).cloned());
                    (t, p, c)
                })
                .collect(),
            None => g
                .map(|g| {
                    g.offsets
                        .iter()
                        .map(|((t, p), c)| (t.clone(), *p, Some(c.clone())))
                        .collect()
                })
                .unwrap_or_default(),
        })
    }

    /// Every committed offset: (group, topic, partition, offset), for lag.
    pub fn all_offsets(&self) -> Vec<(String, String, i32, i64)> {
        let slots = self.slots.get().map(Vec::as_slice).unwrap_or(&[]);
        let mut out = Vec::new();
        for slot in slots {
            let gs = Self::lock(slot);
            for g in gs.map.values() {
                for ((t, p), c) in &g.offsets {
                    out.push((g.id.clone(), t.clone(), *p, c.offset));
                }
            }
        }
        out.sort();
        out
    }

    /// ListGroups: (group, protocol type, state) of every group here.
    pub fn list(&self) -> Result<Vec<(String, String, &'static str)>, E> {
        let slots = self.slots.get().map(Vec::as_slice).unwrap_or(&[]);
        let mut out = Vec::new();
        for slot in slots {
            // In a cluster a broker lists the groups it coordinates.
            if self.clustered {
                match slot.current() {
                    Err(E::NotCoordinator) => continue,
                    Err(e) => return Err(e),
                    Ok(()) => {}
                }
            }
            if slot.load.load(Ordering::Acquire) != LOADED {
                return Err(E::CoordinatorLoadInProgress);
            }
            let gs = Self::lock(slot);
            for g in gs.map.values() {
                out.push((
                    g.id.clone(),
                    g.protocol_type.clone().unwrap_or_default(),
                    g.state.name(),
                ));
            }
        }
        out.sort();
        Ok(out)
    }

    /// DescribeGroups of one group (`Dead` if it does not exist, as Kafka).
    pub fn describe(&self, group: &str) -> Result<Described, E> {
        let (_, slot) = self.slot(group)?;
        let gs = Self::lock(slot);
        let Some(g) = gs.map.get(group) else {
            return Ok(Described {
                state: "Dead",
                protocol_type: String::new(),
                protocol: String::new(),
                members: Vec::new(),
            });
        };
        let protocol = g.protocol.clone();
        Ok(Described {
            state: g.state.name(),
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            protocol: protocol.clone().unwrap_or_default(),
            members: g
                .members
                .values()
                .map(|m| {
                    (
                        m.id.clone(),
                        m.instance_id.clone(),
                        m.client_id.clone(),
                        m.client_host.clone(),
                        m.metadata(protocol.as_deref()),
                        m.assignment.clone(),
                    )
                })
                .collect(),
        })
    }

    /// DeleteGroups of one group: only an empty group goes, with its
    /// offsets (tombstones for all its keys).
    pub async fn delete_group(&self, group: &str) -> Result<(), E> {
        let (p, slot) = self.slot(group)?;
        let (tx, rx) = flume::bounded(1);
        {
            let mut gs = Self::lock(slot);
            let Some(g) = gs.map.get(group) else {
                return Err(E::GroupIdNotFound);
            };
            if !g.is_empty() {
                return Err(E::NonEmptyGroup);
            }
            let mut recs: Vec<(Bytes, Option<Bytes>)> = g
                .offsets
                .keys()
                .map(|(t, part)| (records::offset_key(group, t, *part), None))
                .collect();
            recs.push((records::group_key(group), None));
            gs.map.remove(group);
            self.write(p, slot, build_batch(&recs), Some(tx));
        }
        self.written(rx).await.map(|_| ()).map_err(|e| e.code())
    }

    /// OffsetDelete: drop committed offsets of partitions the group is not
    /// subscribed to. The group-level error, and one per partition.
    pub async fn offset_delete(
        &self,
        group: &str,
        partitions: Vec<(String, i32)>,
    ) -> Result<Vec<Result<(), E>>, E> {
        let (p, slot) = self.slot(group)?;
        let (tx, rx) = flume::bounded(1);
        let codes: Vec<Result<(), E>>;
        {
            let mut gs = Self::lock(slot);
            let Some(g) = gs.map.get_mut(group) else {
                return Err(E::GroupIdNotFound);
            };
            let subscribed = g.subscribed_topics();
            let mut recs = Vec::new();
            codes = partitions
                .iter()
                .map(|(t, part)| {
                    if subscribed.contains(t) {
                        return Err(E::GroupSubscribedToTopic);
                    }
                    if g.offsets.remove(&(t.clone(), *part)).is_some() {
                        recs.push((records::offset_key(group, t, *part), None));
                    }
                    Ok(())
                })
                .collect();
            if recs.is_empty() {
                return Ok(codes);
            }
            self.write(p, slot, build_batch(&recs), Some(tx));
        }
        self.written(rx).await.map(|_| codes).map_err(|e| e.code())
    }

    /// Expire sessions and end rebalances whose time is up; with
    /// `expire`, also drop offsets past their retention and forget dead
    /// groups (tombstones for both).
    pub fn tick(&self, expire: bool) {
        let Some(slots) = self.slots.get() else {
            return;
        };
        let now = now_ms();
        for (p, slot) in slots.iter().enumerate() {
            if slot.load.load(Ordering::Acquire) != LOADED
                || (self.clustered && slot.current().is_err())
            {
                continue;
            }
            let mut gs = Self::lock(slot);
            let ids: Vec<String> = gs.map.keys().cloned().collect();
            for id in ids {
                let mut out = Vec::new();
                if let Some(g) = gs.map.get_mut(&id) {
                    g.tick(now, &mut out);
                }
                if !out.is_empty() {
                    self.dispatch(p as i32, slot, &mut gs, &id, out);
                }
                if !expire {
                    continue;
                }
                let Some(g) = gs.map.get_mut(&id) else {
                    continue;
                };
                let mut recs: Vec<(Bytes, Option<Bytes>)> = g
                    .expire_offsets(now, self.limits.offsets_retention_ms)
                    .into_iter()
                    .map(|(t, part)| (records::offset_key(&id, &t, part), None))
                    .collect();
                if g.is_dead() {
                    gs.map.remove(&id);
                    recs.push((records::group_key(&id), None));
                }
                if !recs.is_empty() {
                    tracing::info!(group = %id, tombstones = recs.len(), "expired group offsets");
                    self.write(p as i32, slot, build_batch(&recs), None);
                }
            }
        }
    }

    /// Ticks for as long as the broker runs (spawned on one shard).
    pub async fn run_ticks(ctx: Ctx) {
        let every = ctx.broker.config.offsets_retention_check_ms.max(1);
        let mut last_expiry = now_ms();
        while !ctx.broker.is_stopping() {
            compio::time::sleep(TICK).await;
            let now = now_ms();
            let expire = now >= last_expiry + every;
            if expire {
                last_expiry = now;
            }
            ctx.broker.groups.tick(expire);
        }
    }

    /// Cluster: follow the leadership of every offsets partition, for as
    /// long as the broker runs (spawned on one shard). A slot is loaded
    /// while this broker leads its partition, in the term it leads it in;
    /// a new term reloads it even if this broker leads again.
    pub async fn run_leadership(ctx: Ctx) {
        let Some(cluster) = ctx.broker.cluster.clone() else {
            return;
        };
        let coord = &ctx.broker.groups;
        if !coord.clustered {
            return;
        }
        while !ctx.broker.is_stopping() {
            compio::time::sleep(WATCH).await;
            let slots = match coord.slots.get() {
                Some(s) => s.as_slice(),
                None => match cluster.topic(OFFSETS_TOPIC) {
                    Some(t) => coord.init_slots(t.meta.partitions),
                    None => continue,
                },
            };
            for (p, slot) in slots.iter().enumerate() {
                if slot.replica.get().is_none() {
                    let tp = TopicPartition::new(OFFSETS_TOPIC, p as i32);
                    match cluster.group(&tp) {
                        Some(h) => {
                            let _ = slot.replica.set(h);
                        }
                        None => continue, // not a replica (yet)
                    }
                }
                let Some(replica) = slot.replica.get() else {
                    continue;
                };
                let st = replica.status();
                let leading = (st.role == Some(Role::Leader)).then_some(st.term);
                let action = {
                    let _gs = Self::lock(slot);
                    slot_action(
                        leading,
                        slot.load.load(Ordering::Acquire),
                        slot.term.load(Ordering::Acquire),
                    )
                };
                match action {
                    SlotAction::Nothing => {}
                    SlotAction::Unload => coord.unload(p, slot),
                    SlotAction::Load(term) => {
                        coord.unload(p, slot);
                        {
                            let _gs = Self::lock(slot);
                            slot.term.store(term, Ordering::Release);
                            slot.load.store(LOADING, Ordering::Release);
                        }
                        tracing::debug!(
                            partition = p,
                            term,
                            log_end = st.log_end,
                            high_watermark = st.high_watermark,
                            "leading an offsets partition: loading its groups once caught up"
                        );
                        compio::runtime::spawn(load_replicated(
                            ctx.clone(),
                            p,
                            replica.clone(),
                            term,
                            st.log_end,
                        ))
                        .detach();
                    }
                }
            }
        }
    }

    /// Cluster: drop a slot's groups (this broker stopped leading its
    /// partition, or reloads it for a new term). Parked joins and syncs
    /// get NOT_COORDINATOR (their channels close), and the writer goes.
    fn unload(&self, p: usize, slot: &Slot) {
        let mut gs = Self::lock(slot);
        let was = slot.load.swap(UNLOADED, Ordering::AcqRel);
        let groups = gs.map.len();
        gs.map.clear();
        gs.joins.clear();
        gs.syncs.clear();
        slot.set_writer(None);
        if was == LOADED && groups > 0 {
            tracing::info!(partition = p, groups, "groups unloaded: no longer leading");
        } else if was != UNLOADED {
            tracing::debug!(partition = p, "offsets partition unloaded");
        }
    }
}

/// Cluster: once the new leader's high watermark reaches the log end it
/// had when it took over, load the groups from the committed log and
/// start a replicated writer, unless leadership moved on meanwhile.
async fn load_replicated(ctx: Ctx, p: usize, replica: GroupHandle, term: u64, target: u64) {
    loop {
        let st = replica.status();
        if st.role != Some(Role::Leader) || st.term != term {
            return; // the watcher unloads or reloads
        }
        if caught_up(st.high_watermark, target) {
            break;
        }
        compio::time::sleep(Duration::from_millis(10)).await;
    }
    let tp = TopicPartition::new(OFFSETS_TOPIC, p as i32);
    let broker = ctx.broker.clone();
    let loaded = ctx
        .with_log(&tp, move |log| async move {
            let coord = &broker.groups;
            let slot = coord
                .slots
                .get()
                .and_then(|s| s.get(p))
                .ok_or_else(|| "no slot".to_string())?;
            let groups = read_groups(p, &log, log.visible_end()).await?;
            let n = groups.len();
            let mut gs = Coordinator::lock(slot);
            if slot.term.load(Ordering::Acquire) != term
                || slot.load.load(Ordering::Acquire) != LOADING
            {
                return Ok(None); // superseded
            }
            gs.map = groups;
            let (tx, rx) = flume::unbounded::<Write>();
            slot.set_writer(Some(tx));
            compio::runtime::spawn(replicated_write_loop(p as i32, replica, term, rx)).detach();
            slot.load.store(LOADED, Ordering::Release);
            drop(gs);
            Ok::<_, String>(Some(n))
        })
        .await;
    match loaded {
        Ok(Some(Ok(Some(groups)))) if groups > 0 => {
            tracing::info!(
                partition = p,
                term,
                groups,
                "coordinating the groups of this offsets partition"
            )
        }
        Ok(Some(Ok(Some(_)))) => {
            tracing::debug!(partition = p, term, "coordinating this offsets partition")
        }
        Ok(Some(Ok(None))) => {}
        other => {
            let why = match other {
                Ok(Some(Err(e))) => e,
                Ok(None) => "partition not open".into(),
                Err(e) => e.to_string(),
                Ok(Some(Ok(_))) => return,
            };
            tracing::warn!(partition = p, term, "loading groups failed: {why}");
            if let Some(slot) = ctx.broker.groups.slots.get().and_then(|s| s.get(p)) {
                let _gs = Coordinator::lock(slot);
                if slot.term.load(Ordering::Acquire) == term
                    && slot.load.load(Ordering::Acquire) == LOADING
                {
                    slot.load.store(UNLOADED, Ordering::Release); // retried
                }
            }
        }
    }
}

fn offsets_topic_configs(cfg: &crate::config::BrokerConfig) -> BTreeMap<String, String> {
    let mut configs = BTreeMap::new();
    configs.insert("cleanup.policy".to_string(), "compact".to_string());
    configs.insert(
        "segment.bytes".to_string(),
        cfg.offsets_topic_segment_bytes.to_string(),
    );
    configs
}

fn apply_offset(g: &mut Group, topic: String, partition: i32, v: OffsetValue, record_offset: u64) {
    let key = (topic, partition);
    if g.offsets
        .get(&key)
        .is_some_and(|c| c.record_offset > record_offset)
    {
        return; // a later commit is already visible
    }
    g.offsets.insert(
        key,
        Committed {
            offset: v.offset,
            leader_epoch: v.leader_epoch,
            metadata: v.metadata,
            commit_timestamp: v.commit_timestamp,
            record_offset,
        },
    );
}

fn group_value(g: &Group) -> Bytes {
    GroupValue {
        protocol_type: g.protocol_type.clone().unwrap_or_default(),
        generation: g.generation,
        protocol: g.protocol.clone(),
        leader: g.leader.clone(),
        state_timestamp: now_ms() as i64,
        members: g
            .members
            .values()
            .map(|m| MemberValue {
                member_id: m.id.clone(),
                instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                rebalance_timeout_ms: m.rebalance_timeout_ms as i32,
                session_timeout_ms: m.session_timeout_ms as i32,
                subscription: m.metadata(g.protocol.as_deref()),
                assignment: m.assignment.clone(),
            })
            .collect(),
    }
    .encode()
}

/// One uncompressed batch of keyed records (value `None`: tombstone).
fn build_batch(recs: &[(Bytes, Option<Bytes>)]) -> Bytes {
    let mut b = BatchBuilder::new(now_ms() as i64);
    for (k, v) in recs {
        b.push(&Record {
            key: Some(k.to_vec()),
            value: v.as_ref().map(|v| v.to_vec()),
            ..Record::default()
        });
    }
    b.build().freeze()
}

/// On the owner shard: rebuild partition `p`'s groups from its log, then
/// start its writer.
async fn load_partition(
    broker: &crate::broker::Broker,
    p: usize,
    log: Rc<Log>,
) -> Result<(), String> {
    let coord = &broker.groups;
    let slot = &coord.slots.get().ok_or("no slots")?[p];
    let groups = read_groups(p, &log, log.log_end_offset()).await?;
    {
        let mut gs = Coordinator::lock(slot);
        let mut out = Vec::new();
        for g in gs.map.values_mut() {
            g.take_waiters(&mut out);
        }
        // Parked requests of the groups replaced here get NOT_COORDINATOR.
        let old: Vec<String> = gs.map.keys().cloned().collect();
        for id in old {
            coord.dispatch(p as i32, slot, &mut gs, &id, std::mem::take(&mut out));
        }
        gs.map = groups;
    }
    let (tx, rx) = flume::unbounded::<Write>();
    {
        let mut w = slot.writer.lock().unwrap_or_else(|e| e.into_inner());
        if w.is_some() {
            return Ok(()); // a writer from an earlier load runs already
        }
        *w = Some(tx);
    }
    compio::runtime::spawn(write_loop(log, rx)).detach();
    Ok(())
}

/// The groups and offsets of partition `p`'s log below `end`: later
/// records win, tombstones delete, control batches are skipped.
async fn read_groups(p: usize, log: &Rc<Log>, end: u64) -> Result<HashMap<String, Group>, String> {
    let mut groups: HashMap<String, Group> = HashMap::new();
    let mut offset = log.log_start_offset();
    let now = now_ms();
    let (mut n_records, mut bad) = (0u64, 0u64);
    'read: while offset < end {
        let bytes = log
            .read_bytes(offset, 1 << 20)
            .await
            .map_err(|e| e.to_string())?;
        if bytes.is_empty() {
            break;
        }
        let mut next = offset;
        for (pos, h) in batch::headers(&bytes) {
            if h.base_offset as u64 >= end {
                break 'read;
            }
            next = h.last_offset() as u64 + 1;
            if h.is_control() {
                continue;
            }
            let mut one = bytes.slice(pos..pos + h.size());
            let set = match kafka_protocol::records::RecordBatchDecoder::decode(&mut one) {
                Ok(s) => s,
                Err(e) => {
                    bad += 1;
                    tracing::warn!(
                        partition = p,
                        offset = h.base_offset,
                        "unreadable batch in {OFFSETS_TOPIC}: {e}"
                    );
                    continue;
                }
            };
            for r in set.records {
                n_records += 1;
                let Some(key) = r.key.as_deref() else {
                    continue;
                };
                match records::decode_key(key) {
                    Ok(k) => replay(&mut groups, k, r.value.as_deref(), r.offset as u64, now),
                    Err(e) => {
                        bad += 1;
                        tracing::warn!(partition = p, offset = r.offset, "skipping record: {e}");
                    }
                }
            }
        }
        if next <= offset {
            break;
        }
        offset = next;
    }
    if !groups.is_empty() || bad > 0 {
        tracing::info!(
            partition = p,
            groups = groups.len(),
            records = n_records,
            skipped = bad,
            "groups loaded from {OFFSETS_TOPIC}"
        );
    }
    Ok(groups)
}

fn replay(
    groups: &mut HashMap<String, Group>,
    key: Key,
    value: Option<&[u8]>,
    record_offset: u64,
    now: u64,
) {
    match key {
        Key::Offset {
            group,
            topic,
            partition,
        } => match value {
            None => {
                if let Some(g) = groups.get_mut(&group) {
                    g.offsets.remove(&(topic, partition));
                }
            }
            Some(v) => match OffsetValue::decode(v) {
                Ok(v) => {
                    let g = groups
                        .entry(group.clone())
                        .or_insert_with(|| Group::new(&group));
                    apply_offset(g, topic, partition, v, record_offset);
                }
                Err(e) => tracing::warn!(group, "skipping offset record: {e}"),
            },
        },
        Key::Group(group) => match value {
            None => {
                groups.remove(&group);
            }
            Some(v) => match GroupValue::decode(v) {
                Ok(v) => {
                    let members = v
                        .members
                        .into_iter()
                        .map(|m| {
                            Group::stored_member(
                                m.member_id,
                                m.instance_id,
                                m.client_id,
                                m.client_host,
                                m.session_timeout_ms.max(0) as u64,
                                m.rebalance_timeout_ms.max(0) as u64,
                                v.protocol.clone().map(|p| (p, m.subscription)),
                                m.assignment,
                            )
                        })
                        .collect();
                    let offsets = groups.remove(&group).map(|g| g.offsets).unwrap_or_default();
                    let protocol_type = (!v.protocol_type.is_empty()).then_some(v.protocol_type);
                    let mut g = Group::restore(
                        &group,
                        protocol_type,
                        v.generation,
                        v.protocol,
                        v.leader,
                        members,
                        now,
                    );
                    g.offsets = offsets;
                    groups.insert(group, g);
                }
                Err(e) => tracing::warn!(group, "skipping group record: {e}"),
            },
        },
    }
}

/// Appends in order; durability is awaited beside, so the next append
/// does not wait for the previous one's fsync.
async fn write_loop(log: Rc<Log>, rx: flume::Receiver<Write>) {
    while let Ok(w) = rx.recv_async().await {
        match log.append(w.batch, 0).await {
            Ok(info) => {
                let log = log.clone();
                compio::runtime::spawn(async move {
                    let r = log
                        .wait_durable(info.last_offset)
                        .await
                        .map(|_| info.base_offset)
                        .map_err(|e| WriteError::Log(e.to_string()));
                    if let Some(done) = w.done {
                        let _ = done.send(r);
                    }
                })
                .detach();
            }
            Err(e) => {
                tracing::warn!("writing to {OFFSETS_TOPIC}: {e}");
                if let Some(done) = w.done {
                    let _ = done.send(Err(WriteError::Log(e.to_string())));
                }
            }
        }
    }
}

/// Cluster: proposes each batch through the partition's Raft group, in
/// order, with acks=all; a batch is answered once a majority has synced
/// it. Only while this replica leads in `term`: a writer of an older
/// leadership refuses, since its groups may be stale.
async fn replicated_write_loop(
    partition: i32,
    replica: GroupHandle,
    term: u64,
    rx: flume::Receiver<Write>,
) {
    while let Ok(w) = rx.recv_async().await {
        let current = replica.leader_term() == Some(term);
        let queued = if current {
            // The ISR check is moot here: acks=all waits for a majority.
            replica
                .propose_queued(w.batch, Acks::All, 1)
                .map_err(WriteError::from)
        } else {
            Err(WriteError::NotLeader)
        };
        let done = w.done;
        match queued {
            Ok(reply) => {
                compio::runtime::spawn(async move {
                    let r = match reply.recv_async().await {
                        Ok(r) => r.map(|(base, _)| base).map_err(WriteError::from),
                        Err(_) => Err(WriteError::NotLeader),
                    };
                    answer_write(partition, done, r);
                })
                .detach();
            }
            Err(e) => answer_write(partition, done, Err(e)),
        }
    }
}

fn answer_write(partition: i32, done: Option<flume::Sender<WriteResult>>, r: WriteResult) {
    match done {
        Some(d) => {
            let _ = d.send(r);
        }
        None => {
            if let Err(e) = r {
                tracing::warn!(partition, error = %e, "a group record was not replicated");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_for_matches_java_string_hash() {
        // "my-group".hashCode() == 1_138_580_986 in Java... computed here
        // from the definition, then checked against Kafka's rule.
        let h = "my-group"
            .encode_utf16()
            .fold(0i32, |h, u| h.wrapping_mul(31).wrapping_add(u as i32));
        assert_eq!(partition_for("my-group", 50), (h & 0x7fff_ffff) % 50);
        // Known values of Java's String.hashCode.
        let java = |s: &str| {
            s.encode_utf16()
                .fold(0i32, |h, u| h.wrapping_mul(31).wrapping_add(u as i32))
        };
        assert_eq!(java("a"), 97);
        assert_eq!(java("hello"), 99_162_322);
        assert_eq!(partition_for("hello", 50), 99_162_322 % 50);
        for g in ["", "x", "ümlaut", "a-very-long-group-name-that-overflows"] {
            assert!((0..50).contains(&partition_for(g, 50)));
        }
    }

    #[test]
    fn slots_follow_leadership_terms() {
        use SlotAction::*;
        // Not leading: nothing to hold, or drop what is held.
        assert_eq!(slot_action(None, UNLOADED, 0), Nothing);
        assert_eq!(slot_action(None, LOADING, 3), Unload);
        assert_eq!(slot_action(None, LOADED, 3), Unload);
        // Leading: load for the term, once.
        assert_eq!(slot_action(Some(3), UNLOADED, 0), Load(3));
        assert_eq!(slot_action(Some(3), LOADING, 3), Nothing);
        assert_eq!(slot_action(Some(3), LOADED, 3), Nothing);
        // A failed load (back to UNLOADED in the same term) is retried.
        assert_eq!(slot_action(Some(3), UNLOADED, 3), Load(3));
        // Leading again in a later term: what was loaded may be stale.
        assert_eq!(slot_action(Some(5), LOADED, 3), Load(5));
        assert_eq!(slot_action(Some(5), LOADING, 3), Load(5));
    }

    #[test]
    fn a_new_leader_waits_for_its_earlier_log_to_commit() {
        assert!(!caught_up(10, 12));
        assert!(caught_up(12, 12));
        assert!(caught_up(13, 12));
        assert!(caught_up(0, 0));
    }

    #[test]
    fn write_errors_map_to_retriable_kafka_errors() {
        assert_eq!(
            WriteError::from(ProduceError::NotLeader { leader: Some(2) }).code(),
            E::NotCoordinator
        );
        assert_eq!(
            WriteError::from(ProduceError::NotEnoughReplicas { isr: 1, min: 2 }).code(),
            E::RequestTimedOut
        );
        assert_eq!(
            WriteError::Replication("timeout".into()).code(),
            E::RequestTimedOut
        );
        assert_eq!(
            WriteError::Log("disk".into()).code(),
            E::CoordinatorNotAvailable
        );
    }

    #[test]
    fn a_clustered_coordinator_without_its_topic_is_not_the_coordinator() {
        let lone = Coordinator::new(Limits::default(), false);
        assert_eq!(
            lone.heartbeat("g", "m", None, 1).err(),
            Some(E::CoordinatorNotAvailable)
        );
        let member = Coordinator::new(Limits::default(), true);
        assert_eq!(
            member.heartbeat("g", "m", None, 1).err(),
            Some(E::NotCoordinator)
        );
        // Slots exist but no replica of the partition leads here.
        member.init_slots(4);
        assert_eq!(
            member.heartbeat("g", "m", None, 1).err(),
            Some(E::NotCoordinator)
        );
        assert_eq!(member.list().map(|l| l.len()), Ok(0));
    }

    #[test]
    fn replay_rebuilds_offsets_groups_and_tombstones() {
        let mut groups = HashMap::new();
        let v = |o: i64| OffsetValue {
            offset: o,
            leader_epoch: 0,
            metadata: "m".into(),
            commit_timestamp: 1,
        };
        let k = |t: &str, p| Key::Offset {
            group: "g".into(),
            topic: t.into(),
            partition: p,
        };
        replay(&mut groups, k("t", 0), Some(&v(5).encode()), 10, 0);
        replay(&mut groups, k("t", 0), Some(&v(9).encode()), 11, 0);
        replay(&mut groups, k("t", 1), Some(&v(3).encode()), 12, 0);
        replay(&mut groups, k("t", 1), None, 13, 0);
        let g = &groups["g"];
        assert_eq!(g.offsets[&("t".to_string(), 0)].offset, 9);
        assert!(!g.offsets.contains_key(&("t".to_string(), 1)));
        let gv = GroupValue {
            protocol_type: "consumer".into(),
            generation: 4,
            protocol: Some("range".into()),
            leader: Some("m1".into()),
            state_timestamp: 0,
            members: vec![MemberValue {
                member_id: "m1".into(),
                instance_id: None,
                client_id: "c".into(),
                client_host: "h".into(),
                rebalance_timeout_ms: 1000,
                session_timeout_ms: 1000,
                subscription: Bytes::new(),
                assignment: Bytes::from_static(b"a"),
            }],
        };
        replay(
            &mut groups,
            Key::Group("g".into()),
            Some(&gv.encode()),
            14,
            0,
        );
        let g = &groups["g"];
        assert_eq!(g.generation, 4);
        assert_eq!(g.state, super::super::state::GroupState::Stable);
        assert_eq!(g.offsets[&("t".to_string(), 0)].offset, 9, "offsets kept");
        replay(&mut groups, Key::Group("g".into()), None, 15, 0);
        assert!(!groups.contains_key("g"));
    }
}
