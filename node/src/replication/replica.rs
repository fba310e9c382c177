//! One partition replica: a raft-rs `RawNode` over a [`LogStore`], driven
//! by events and returning work. The caller (a shard, or the simulator):
//!
//! 1. calls [`Replica::tick`] on its clock, [`Replica::step`] with messages
//!    from peers, [`Replica::propose`] with producers' batches;
//! 2. takes [`Replica::ready`]: sends `send` now; carries out `writes`
//!    in order, persists `meta`, syncs, and then calls
//!    [`Replica::synced`] and sends `send_after_sync`; reads `fetch`;
//! 3. answers producers from [`Replica::take_completions`].
//!
//! Raft's safety needs a replica to acknowledge only what is synced: the
//! follower's append responses are in `send_after_sync`, and the leader
//! counts itself toward a commit only after `synced`. So the high
//! watermark (commit) never covers data a majority could lose in a crash.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use raft::eraftpb::{ConfChange, ConfChangeV2, EntryType, Message, MessageType};
use raft::{RawNode, StateRole};

use super::entry;
use super::store::{FetchRequest, LogStore, LogWrite, RaftMeta};
use raft::Storage as _;

#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    /// This broker's node id (never 0).
    pub id: u64,
    /// Ticks without a leader's word before a follower campaigns.
    pub election_tick: usize,
    /// raft-rs draws each election timeout from `[min, max)` ticks with
    /// its own thread RNG; 0 means its default (`election_tick ..
    /// 2 * election_tick`). The simulator pins it (`max = min + 1`) and
    /// randomizes per replica with its seeded RNG, to stay deterministic.
    pub min_election_tick: usize,
    pub max_election_tick: usize,
    pub heartbeat_tick: usize,
    /// A follower is in sync while it caught up with the commit at most
    /// this long ago (`replica.lag.time.max.ms`).
    pub lag_max_ms: u64,
    pub max_size_per_msg: u64,
    pub max_inflight_msgs: usize,
    /// Cached entry bytes beyond which applied entries are evicted even
    /// if a follower still needs them (it is then sent them from the log).
    pub cache_bytes: usize,
    /// Applied entries kept above the Raft log's anchor when it is
    /// compacted (so a briefly lagging follower still gets entries, not a
    /// snapshot).
    pub keep_entries: u64,
    /// The preferred leader (the first replica): a leader hands leadership
    /// to it once it is fully caught up, so leadership spreads as placed.
    pub preferred: Option<u64>,
}

impl ReplicaConfig {
    pub fn new(id: u64) -> Self {
        Self {
            id,
            election_tick: 10,
            min_election_tick: 0,
            max_election_tick: 0,
            heartbeat_tick: 2,
            lag_max_ms: 30_000,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            cache_bytes: 64 << 20,
            keep_entries: 4096,
            preferred: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Leader,
    Candidate,
    Follower,
}

/// When a producer is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// acks=1: once the leader wrote the batch.
    Leader,
    /// acks=all: once Raft committed it (a majority synced it).
    All,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProduceError {
    #[error("not the leader (leader is {leader:?})")]
    NotLeader { leader: Option<u64> },
    #[error("{isr} replicas in sync, {min} required")]
    NotEnoughReplicas { isr: usize, min: usize },
    #[error("invalid batch: {0}")]
    InvalidBatch(String),
    /// An idempotent producer's batch out of sequence or of a fenced epoch.
    #[error(transparent)]
    Producer(#[from] odradek_engine::producer::ProducerError),
}

/// A producer's answer: the batch's first and last offset, or why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    pub token: u64,
    pub result: Result<(u64, u64), ProduceError>,
}

/// Work from one [`Replica::ready`] call.
#[derive(Debug, Default)]
pub struct Ready {
    /// Pass to [`Replica::synced`] once `writes` and `meta` are durable
    /// (and those of every earlier `Ready`: completion is in order).
    pub number: u64,
    /// Send now.
    pub send: Vec<Message>,
    /// Carry out in order.
    pub writes: Vec<LogWrite>,
    /// Persist (atomically replace the partition's Raft state).
    pub meta: Option<RaftMeta>,
    /// Send after the sync.
    pub send_after_sync: Vec<Message>,
    /// Old entries to read from the log for a lagging follower.
    pub fetch: Option<FetchRequest>,
}

#[derive(Debug)]
struct Pending {
    index: u64,
    term: u64,
    token: u64,
    acks: Acks,
}

/// What the replica stopped on: a Raft or storage invariant broke.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    #[error(transparent)]
    Entry(#[from] entry::EntryError),
}

pub struct Replica {
    node: RawNode<LogStore>,
    id: u64,
    lag_max_ms: u64,
    cache_cap: usize,
    now_ms: u64,
    role: Role,
    leader: Option<u64>,
    /// Offset below which data is committed (the high watermark).
    hw: u64,
    applied: u64,
    pending: VecDeque<Pending>,
    completions: Vec<Completion>,
    /// Last time each follower had everything committed (leader only).
    caught_up_ms: HashMap<u64, u64>,
    /// Last time each follower answered the leader.
    heard_ms: HashMap<u64, u64>,
    preferred: Option<u64>,
    keep_entries: u64,
    /// An installed snapshot's `Ready` number and anchor offset, until synced.
    snapshot_hw: Option<(u64, u64)>,
    /// When leadership was last handed to the preferred replica.
    transfer_at: u64,
}

impl Replica {
    pub fn new(cfg: &ReplicaConfig, store: LogStore, now_ms: u64) -> Result<Self, ReplicaError> {
        let commit = raft::Storage::initial_state(&store)?.hard_state.commit;
        let hw = store.end_offset(commit).unwrap_or(store.anchor().offset);
        let rc = raft::Config {
            id: cfg.id,
            election_tick: cfg.election_tick,
            min_election_tick: cfg.min_election_tick,
            max_election_tick: cfg.max_election_tick,
            heartbeat_tick: cfg.heartbeat_tick,
            applied: commit,
            max_size_per_msg: cfg.max_size_per_msg,
            max_inflight_msgs: cfg.max_inflight_msgs,
            pre_vote: true,
            check_quorum: true,
            ..raft::Config::default()
        };
        rc.validate()?;
        let logger = slog::Logger::root(TracingDrain, slog::o!("raft_id" => cfg.id));
        // Not `set_batch_append(true)`: raft-rs 0.7 then merges entries
        // into an empty append of another index (`is_continuous_ents` is
        // true for an empty message) and the follower acknowledges entries
        // it does not hold — found by the simulator (seed 2). The
        // transport coalesces a peer's messages instead.
        let node = RawNode::new(&rc, store, &logger)?;
        Ok(Self {
            node,
            id: cfg.id,
            lag_max_ms: cfg.lag_max_ms,
            cache_cap: cfg.cache_bytes,
            now_ms,
            role: Role::Follower,
            leader: None,
            hw,
            applied: commit,
            pending: VecDeque::new(),
            completions: Vec::new(),
            caught_up_ms: HashMap::new(),
            heard_ms: HashMap::new(),
            preferred: cfg.preferred.filter(|&p| p != cfg.id),
            keep_entries: cfg.keep_entries,
            snapshot_hw: None,
            transfer_at: 0,
        })
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn leader(&self) -> Option<u64> {
        self.leader
    }

    /// The current Raft term: the partition's leader epoch.
    pub fn term(&self) -> u64 {
        self.node.raft.term
    }

    /// Offset below which everything is committed: what consumers may read.
    pub fn high_watermark(&self) -> u64 {
        self.hw
    }

    /// Offset the next entry will get (this replica's log end).
    pub fn log_end_offset(&self) -> u64 {
        self.node.store().next_offset()
    }

    pub fn commit_index(&self) -> u64 {
        self.node.raft.raft_log.committed
    }

    pub fn store(&self) -> &LogStore {
        self.node.store()
    }

    /// OffsetForLeaderEpoch as this replica's log answers it (see
    /// [`LogStore::end_offset_for_epoch`]); a leader's own epoch ends at
    /// its log end even before its first entry of that term is in the log.
    pub fn end_offset_for_epoch(&self, epoch: u64) -> Option<(u64, u64)> {
        if self.role == Role::Leader && epoch == self.term() {
            return Some((epoch, self.log_end_offset()));
        }
        self.node.store().end_offset_for_epoch(epoch)
    }

    /// Drop the epoch history of batches retention deleted.
    pub fn forget_epochs_below(&mut self, log_start: u64) {
        self.node.mut_store().forget_epochs_below(log_start);
    }

    /// The other voters that answered this leader within `within_ms`
    /// (empty unless leader): the controller's view of which brokers live.
    pub fn live_peers(&self, within_ms: u64) -> Vec<u64> {
        if self.role != Role::Leader {
            return Vec::new();
        }
        let mut v: Vec<u64> = self
            .heard_ms
            .iter()
            .filter(|(_, &t)| self.now_ms.saturating_sub(t) <= within_ms)
            .map(|(&id, _)| id)
            .collect();
        v.sort_unstable();
        v
    }

    /// The voters of the group (the partition's replicas).
    pub fn voters(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self.node.store().conf_state().voters.clone();
        v.sort_unstable();
        v
    }

    /// The raft index a follower is known to hold (leader only).
    pub fn matched(&self, peer: u64) -> Option<u64> {
        self.node.raft.prs().get(peer).map(|p| p.matched)
    }

    /// The in-sync replicas: the leader and every follower that held all
    /// committed entries within `lag_max_ms`. Empty unless leader. A
    /// follower counts only from acknowledged (synced) data, and a new
    /// leader admits followers only once they answer it, so a replica that
    /// lost data in a crash is not in sync until it has caught up again.
    pub fn isr(&self) -> Vec<u64> {
        if self.role != Role::Leader {
            return Vec::new();
        }
        let mut isr: Vec<u64> = std::iter::once(self.id)
            .chain(self.in_sync_followers())
            .collect();
        isr.sort_unstable();
        isr
    }

    /// `isr().len()` without building it (checked on every acks=all).
    fn isr_count(&self) -> usize {
        match self.role {
            Role::Leader => 1 + self.in_sync_followers().count(),
            _ => 0,
        }
    }

    fn in_sync_followers(&self) -> impl Iterator<Item = u64> + '_ {
        self.caught_up_ms.iter().filter_map(|(&peer, &at)| {
            (self.now_ms.saturating_sub(at) <= self.lag_max_ms
                && self.node.raft.prs().get(peer).is_some())
            .then_some(peer)
        })
    }

    pub fn tick(&mut self, now_ms: u64) {
        self.now_ms = now_ms;
        self.node.tick();
        self.track_isr();
        self.maybe_transfer();
    }

    /// Give leadership to the preferred replica when it holds everything
    /// (at most every 10 s, so a flapping replica cannot bounce it).
    fn maybe_transfer(&mut self) {
        let Some(p) = self.preferred else { return };
        if self.role != Role::Leader || self.now_ms < self.transfer_at + 10_000 {
            return;
        }
        let last = self.node.raft.raft_log.last_index();
        let caught_up = self
            .node
            .raft
            .prs()
            .get(p)
            .is_some_and(|pr| pr.matched == last && pr.recent_active);
        if caught_up && self.isr().contains(&p) {
            self.transfer_at = self.now_ms;
            tracing::debug!(id = self.id, to = p, "leadership to the preferred replica");
            self.node.transfer_leader(p);
        }
    }

    /// A message from a peer. Stale or unknown-peer messages are dropped.
    pub fn step(&mut self, m: Message) {
        if matches!(
            m.get_msg_type(),
            MessageType::MsgAppendResponse | MessageType::MsgHeartbeatResponse
        ) && !m.reject
        {
            self.heard_ms.insert(m.from, self.now_ms);
        }
        let from = m.from;
        if let Err(e) = self.node.step(m) {
            tracing::debug!(id = self.id, error = %e, "raft message dropped");
        }
        if self.heard_ms.contains_key(&from) {
            self.track_isr();
        }
    }

    /// Start an election now (tests, leadership transfer, bootstrap).
    pub fn campaign(&mut self) {
        if let Err(e) = self.node.campaign() {
            tracing::debug!(id = self.id, error = %e, "campaign refused");
        }
    }

    /// Propose one producer batch. `min_insync` applies to acks=all.
    pub fn propose(
        &mut self,
        token: u64,
        acks: Acks,
        min_insync: usize,
        batch: Bytes,
    ) -> Result<(), ProduceError> {
        if self.role != Role::Leader {
            return Err(ProduceError::NotLeader {
                leader: self.leader,
            });
        }
        entry::single_batch(&batch).map_err(ProduceError::InvalidBatch)?;
        if acks == Acks::All {
            let isr = self.isr_count();
            if isr < min_insync {
                return Err(ProduceError::NotEnoughReplicas {
                    isr,
                    min: min_insync,
                });
            }
        }
        // Stepping a proposal (rather than `RawNode::propose`, which takes
        // a Vec) keeps the producer's bytes uncopied.
        let before = self.node.raft.raft_log.last_index();
        let stepped = self.node.step(self.proposal(batch));
        let index = self.node.raft.raft_log.last_index();
        if stepped.is_err() || index != before + 1 {
            return Err(ProduceError::NotLeader {
                leader: self.leader,
            });
        }
        self.pending.push_back(Pending {
            index,
            term: self.node.raft.term,
            token,
            acks,
        });
        Ok(())
    }

    /// Answer `token` when the entry already in the log at `first..=last`
    /// (an idempotent producer's original of a retried batch) is done by
    /// `acks` (the caller answers acks=1 retries itself: the original is
    /// written), as Kafka answers a duplicate: with the original's offsets,
    /// once the original commits — or NOT_LEADER if this replica steps
    /// down first (a new leader may truncate it; the producer retries).
    pub fn await_entry(
        &mut self,
        token: u64,
        acks: Acks,
        first: u64,
        last: u64,
    ) -> Result<(), ProduceError> {
        if self.role != Role::Leader {
            return Err(ProduceError::NotLeader {
                leader: self.leader,
            });
        }
        let Some((index, term)) = self.node.store().entry_spanning(first, last) else {
            // Below the anchor: long committed.
            if last < self.hw {
                self.completions.push(Completion {
                    token,
                    result: Ok((first, last)),
                });
                return Ok(());
            }
            return Err(ProduceError::NotLeader {
                leader: self.leader,
            });
        };
        let p = Pending {
            index,
            term,
            token,
            acks,
        };
        if index <= self.applied {
            let r = self.outcome(&p);
            self.completions.push(Completion { token, result: r });
            return Ok(());
        }
        // `apply` answers pending proposals in index order.
        let at = self.pending.partition_point(|q| q.index <= index);
        self.pending.insert(at, p);
        Ok(())
    }

    /// Hand a batch to the group's leader, wherever it is: raft-rs forwards
    /// a follower's proposal to the leader it knows. Nobody is answered;
    /// the caller watches for the entry's effect (the controller's
    /// commands, proposed from any broker, work this way).
    pub fn forward(&mut self, batch: Bytes) -> Result<(), ProduceError> {
        entry::single_batch(&batch).map_err(ProduceError::InvalidBatch)?;
        if self.role != Role::Leader && self.leader.is_none() {
            return Err(ProduceError::NotLeader { leader: None });
        }
        let m = self.proposal(batch);
        self.node.step(m).map_err(|_| ProduceError::NotLeader {
            leader: self.leader,
        })
    }

    /// Move the Raft log's anchor up (its batches stay in the partition
    /// log): to what every voter holds, or, past `keep_entries` of lag, to
    /// `keep_entries` below the applied index (a follower further behind
    /// then gets a snapshot: its log restarts at the anchor). Returns the
    /// state to persist when the anchor moved.
    pub fn compact_log(&mut self) -> Option<RaftMeta> {
        let keep_from = self.applied.saturating_sub(self.keep_entries);
        let target = if self.role == Role::Leader {
            let min_match = self.min_match();
            min_match.min(self.applied).max(keep_from)
        } else {
            keep_from
        };
        if target <= self.node.store().anchor().index {
            return None;
        }
        self.node.mut_store().compact_to(target);
        Some(self.node.store().meta())
    }

    /// A proposal message of one batch from this replica.
    fn proposal(&self, batch: Bytes) -> Message {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgPropose);
        m.from = self.id;
        m.mut_entries().push(raft::eraftpb::Entry {
            data: batch,
            ..Default::default()
        });
        m
    }

    /// A proposal's answer once its index is written or committed: its
    /// offsets if the entry there is still the one proposed.
    fn outcome(&self, p: &Pending) -> Result<(u64, u64), ProduceError> {
        let store = self.node.store();
        match (store.term(p.index), store.base_offset(p.index)) {
            (Ok(t), Some(base)) if t == p.term => {
                Ok((base, store.end_offset(p.index).unwrap_or(base + 1) - 1))
            }
            _ => Err(ProduceError::NotLeader {
                leader: self.leader,
            }),
        }
    }

    /// The next round of work, if any.
    pub fn ready(&mut self) -> Result<Option<Ready>, ReplicaError> {
        if !self.node.has_ready() {
            return Ok(None);
        }
        let mut rd = self.node.ready();
        let mut out = Ready {
            number: rd.number(),
            send: rd.take_messages(),
            ..Ready::default()
        };
        if let Some(ss) = rd.ss() {
            self.set_role(ss.raft_state, ss.leader_id);
        }
        let mut meta_changed = false;
        if !rd.snapshot().is_empty() {
            let offset = self.node.mut_store().apply_snapshot(rd.snapshot());
            out.writes.push(LogWrite::Reset { offset });
            // Visible once the reset is durable (`synced`), not before.
            self.snapshot_hw = Some((out.number, offset));
            self.applied = rd.snapshot().get_metadata().index;
            meta_changed = true;
        }
        meta_changed |= self.apply(rd.take_committed_entries())?;
        out.writes
            .extend(self.node.mut_store().append(rd.entries())?);
        if let Some(hs) = rd.hs() {
            self.node.mut_store().set_hardstate(hs.clone());
            meta_changed = true;
        }
        out.send_after_sync = rd.take_persisted_messages();
        self.node.advance_append_async(rd);
        self.advance_apply();
        // A snapshot carries only the anchor: once handed to the caller it
        // is done (lost on the way, the follower's next answer re-probes).
        for m in out.send.iter().chain(&out.send_after_sync) {
            if m.get_msg_type() == MessageType::MsgSnapshot {
                let to = m.to;
                self.node.report_snapshot(to, raft::SnapshotStatus::Finish);
            }
        }
        if meta_changed {
            out.meta = Some(self.node.store().meta());
        }
        self.evict();
        out.fetch = self.node.store().take_fetch_request();
        self.track_isr();
        Ok(Some(out))
    }

    /// Everything of `Ready`s up to `number` is durable.
    pub fn synced(&mut self, number: u64) {
        self.node.on_persist_ready(number);
        if let Some((n, offset)) = self.snapshot_hw {
            if n <= number {
                self.snapshot_hw = None;
                self.hw = self.hw.max(offset);
            }
        }
        self.advance_apply();
    }

    /// Tell raft-rs what is applied — never past what is persisted (an
    /// installed snapshot counts once its `Ready` is synced).
    fn advance_apply(&mut self) {
        let log = &self.node.raft.raft_log;
        let to = self.applied.min(log.persisted).min(log.committed);
        if to > log.applied {
            self.node.advance_apply_to(to);
        }
    }

    /// Appends up to raft index `index` are written (page cache): acks=1
    /// proposals up to there are answered.
    pub fn written(&mut self, index: u64) {
        let mut keep = VecDeque::with_capacity(self.pending.len());
        for p in std::mem::take(&mut self.pending) {
            if p.acks == Acks::Leader && p.index <= index {
                let r = self.outcome(&p);
                self.completions.push(Completion {
                    token: p.token,
                    result: r,
                });
            } else {
                keep.push_back(p);
            }
        }
        self.pending = keep;
    }

    /// Batches read for `ready().fetch`.
    pub fn entries_fetched(
        &mut self,
        req: &FetchRequest,
        batches: impl IntoIterator<Item = (u64, u64, Bytes)>,
    ) {
        for ctx in self.node.store().fetched(req, batches) {
            self.node.on_entries_fetched(ctx);
        }
    }

    pub fn take_completions(&mut self) -> Vec<Completion> {
        std::mem::take(&mut self.completions)
    }

    fn set_role(&mut self, state: StateRole, leader: u64) {
        let role = match state {
            StateRole::Leader => Role::Leader,
            StateRole::Candidate | StateRole::PreCandidate => Role::Candidate,
            StateRole::Follower => Role::Follower,
        };
        if self.role == Role::Leader && role != Role::Leader {
            // Not answered as committed: the producer retries on the new
            // leader (idempotence removes a duplicate if it did commit).
            for p in self.pending.drain(..) {
                self.completions.push(Completion {
                    token: p.token,
                    result: Err(ProduceError::NotLeader {
                        leader: (leader != 0).then_some(leader),
                    }),
                });
            }
        }
        if role == Role::Leader && self.role != Role::Leader {
            self.caught_up_ms.clear();
            self.heard_ms.clear();
            self.transfer_at = self.now_ms;
        }
        self.role = role;
        self.leader = (leader != 0).then_some(leader);
    }

    /// Committed entries: move the high watermark, apply configuration
    /// changes, answer acks=all proposals. Returns whether the conf changed.
    fn apply(&mut self, entries: Vec<raft::eraftpb::Entry>) -> Result<bool, ReplicaError> {
        let mut conf_changed = false;
        for e in &entries {
            match e.get_entry_type() {
                EntryType::EntryConfChange => {
                    let cc: ConfChange = protobuf::Message::parse_from_bytes(&e.data)
                        .map_err(raft::Error::CodecError)?;
                    let cs = self.node.apply_conf_change(&cc)?;
                    self.node.mut_store().set_conf_state(cs);
                    conf_changed = true;
                }
                EntryType::EntryConfChangeV2 => {
                    let cc: ConfChangeV2 = protobuf::Message::parse_from_bytes(&e.data)
                        .map_err(raft::Error::CodecError)?;
                    let cs = self.node.apply_conf_change(&cc)?;
                    self.node.mut_store().set_conf_state(cs);
                    conf_changed = true;
                }
                EntryType::EntryNormal => {}
            }
            self.applied = e.index;
        }
        if !entries.is_empty() {
            if let Some(end) = self.node.store().end_offset(self.applied) {
                self.hw = self.hw.max(end);
            }
        }
        while let Some(p) = self.pending.front() {
            if p.index > self.applied {
                break;
            }
            let p = self.pending.pop_front().expect("checked");
            let r = self.outcome(&p);
            // acks=1 proposals not yet answered by `written` are answered
            // here: committed implies written.
            self.completions.push(Completion {
                token: p.token,
                result: r,
            });
        }
        Ok(conf_changed)
    }

    /// The lowest index every voter holds (leader's view).
    fn min_match(&self) -> u64 {
        self.node
            .raft
            .prs()
            .iter()
            .map(|(_, p)| p.matched)
            .min()
            .unwrap_or(0)
    }

    /// Drop cached entries every replica has (or, past the cap, applied
    /// ones: a lagging follower is then served from the log).
    fn evict(&mut self) {
        let through = if self.role == Role::Leader {
            let min_match = self.min_match();
            if self.node.store().cached_bytes() > self.cache_cap {
                self.applied
            } else {
                self.applied.min(min_match)
            }
        } else {
            self.applied
        };
        self.node.mut_store().evict_through(through);
    }

    fn track_isr(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        let commit = self.commit_index();
        let now = self.now_ms;
        let id = self.id;
        // Caught up as of when the follower last answered: a dead follower
        // whose match stays at an idle commit still drops out in time.
        let _ = now;
        for (&peer, p) in self.node.raft.prs().iter() {
            if peer == id || p.matched < commit {
                continue;
            }
            if let Some(&heard) = self.heard_ms.get(&peer) {
                self.caught_up_ms.insert(peer, heard);
            }
        }
    }
}

/// raft-rs logs through slog; forward to `tracing` at debug level.
struct TracingDrain;

impl slog::Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;
    fn log(&self, record: &slog::Record, _: &slog::OwnedKVList) -> Result<(), slog::Never> {
        match record.level() {
            slog::Level::Critical | slog::Level::Error => {
                tracing::error!(target: "raft", "{}", record.msg())
            }
            slog::Level::Warning => tracing::warn!(target: "raft", "{}", record.msg()),
            _ => tracing::debug!(target: "raft", "{}", record.msg()),
        }
        Ok(())
    }
}
