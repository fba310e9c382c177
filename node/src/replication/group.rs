//! Runs one Raft group on the shard that owns its log: the I/O half of
//! [`Replica`]. A task per group takes inputs (peer messages, proposals)
//! from a channel any thread may send to, ticks the replica, and carries
//! out each `Ready` against the partition log: appends (all of a `Ready`
//! in one combined write), truncations, the Raft state file; then the
//! fsync runs beside the task, which goes on with the next inputs and
//! `Ready`s (raft-rs's asynchronous persistence) and calls `synced`, and
//! sends what waited for the sync, once the fsync is done. So a proposal
//! that comes during an fsync is written (and, acks=1, answered) without
//! waiting for it, and the next fsync covers every `Ready` written
//! meanwhile: group commit.

use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use odradek_engine::batch::{self, BatchHeader};
use odradek_engine::log::LogError;
use odradek_engine::shard::Log;
use raft::eraftpb::Message;

use super::replica::{Acks, ReplicaError};
use super::store::{LogStore, LogWrite, RaftMeta, RecoverError};
use super::{ProduceError, Replica, ReplicaConfig, Role};

/// How often the Raft log's anchor is moved up.
const COMPACT_EVERY_MS: u64 = 10_000;

/// The Raft state file in a partition's directory.
pub const META_FILE: &str = "raft-state.json";

/// Where a group's messages go: the transport (or a test's router).
pub trait Outbox: 'static {
    fn send(&self, msgs: Vec<Message>);
}

/// What the rest of the broker may read about a group without a round
/// trip to its shard (Metadata, produce routing).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupStatus {
    pub role: Option<Role>,
    pub leader: Option<u64>,
    pub term: u64,
    pub voters: Vec<u64>,
    pub isr: Vec<u64>,
    /// Leader only: the other voters heard from within the last 6 s.
    pub live_peers: Vec<u64>,
    pub high_watermark: u64,
    pub log_end: u64,
}

/// A proposal's answer: base and last offset.
pub type ProposeResult = Result<(u64, u64), ProduceError>;

/// A replica's leader epoch (Raft term) and whether it leads, read
/// together (one atomic word).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leadership {
    pub epoch: u64,
    pub leads: bool,
}

impl Leadership {
    fn pack(self) -> u64 {
        (self.epoch << 1) | u64::from(self.leads)
    }

    fn unpack(v: u64) -> Self {
        Self {
            epoch: v >> 1,
            leads: v & 1 == 1,
        }
    }
}

/// What the group's task answers about leader epochs (OffsetForLeaderEpoch,
/// ListOffsets), all from one state of the replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochAnswer {
    pub leadership: Leadership,
    /// For the asked epoch: the largest epoch <= it and where it ends;
    /// `None` = UNDEFINED (or nothing was asked).
    pub end: Option<(u64, u64)>,
    /// The epoch of the batch holding the asked offset, if known.
    pub at_offset: Option<u64>,
}

enum Input {
    Step(Message),
    Propose {
        batch: Bytes,
        acks: Acks,
        min_insync: usize,
        reply: flume::Sender<ProposeResult>,
    },
    Forward {
        batch: Bytes,
        reply: flume::Sender<Result<(), ProduceError>>,
    },
    Epochs {
        end_for: Option<u64>,
        at_offset: Option<u64>,
        reply: flume::Sender<EpochAnswer>,
    },
    /// The fsync started after `Ready` `number` was written ended.
    Synced {
        number: u64,
        ok: bool,
    },
    Stop,
}

/// A handle to a running group: `Send + Clone`, usable from any shard or
/// the transport's thread.
#[derive(Clone)]
pub struct GroupHandle {
    tx: flume::Sender<Input>,
    status: Arc<Mutex<GroupStatus>>,
    /// Whether this replica leads, and its epoch ([`Leadership`] packed):
    /// read on every produce and fetch, so an atomic rather than the
    /// status lock.
    leads: Arc<AtomicU64>,
}

impl GroupHandle {
    /// A message from a peer (dropped if the group stopped).
    pub fn step(&self, m: Message) {
        let _ = self.tx.send(Input::Step(m));
    }

    /// Propose a producer's batch; resolves when `acks` is satisfied.
    pub async fn propose(&self, batch: Bytes, acks: Acks, min_insync: usize) -> ProposeResult {
        let rx = self.propose_queued(batch, acks, min_insync)?;
        rx.recv_async()
            .await
            .unwrap_or(Err(ProduceError::NotLeader { leader: None }))
    }

    /// Queue a proposal now (so proposals made one after the other keep
    /// their order without waiting for each other); the answer comes on
    /// the receiver.
    pub fn propose_queued(
        &self,
        batch: Bytes,
        acks: Acks,
        min_insync: usize,
    ) -> Result<flume::Receiver<ProposeResult>, ProduceError> {
        let (reply, rx) = flume::bounded(1);
        self.tx
            .send(Input::Propose {
                batch,
                acks,
                min_insync,
                reply,
            })
            .map_err(|_| ProduceError::NotLeader { leader: None })?;
        Ok(rx)
    }

    /// Propose through whichever replica leads (see [`Replica::forward`]).
    pub async fn forward(&self, batch: Bytes) -> Result<(), ProduceError> {
        let (reply, rx) = flume::bounded(1);
        let gone = || ProduceError::NotLeader { leader: None };
        self.tx
            .send(Input::Forward { batch, reply })
            .map_err(|_| gone())?;
        rx.recv_async().await.unwrap_or_else(|_| Err(gone()))
    }

    pub fn is_leader(&self) -> bool {
        self.leadership().leads
    }

    /// The current leader epoch (Raft term) and whether this replica leads.
    pub fn leadership(&self) -> Leadership {
        Leadership::unpack(self.leads.load(Ordering::Relaxed))
    }

    /// Ask the group's task, after its current round of work, for the end
    /// of epoch `end_for` and the epoch at offset `at_offset`. `None` if
    /// the group stopped.
    pub async fn epochs(
        &self,
        end_for: Option<u64>,
        at_offset: Option<u64>,
    ) -> Option<EpochAnswer> {
        let (reply, rx) = flume::bounded(1);
        self.tx
            .send(Input::Epochs {
                end_for,
                at_offset,
                reply,
            })
            .ok()?;
        rx.recv_async().await.ok()
    }

    /// The term this replica leads in, if it leads (without the status
    /// lock).
    pub fn leader_term(&self) -> Option<u64> {
        let l = self.leadership();
        l.leads.then_some(l.epoch)
    }

    pub fn status(&self) -> GroupStatus {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    pub fn stop(&self) {
        let _ = self.tx.send(Input::Stop);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error("partition log: {0}")]
    Log(#[from] LogError),
    #[error("raft state file {path}: {reason}")]
    Meta { path: PathBuf, reason: String },
    #[error("recovering the raft log: {0}")]
    Recover(#[from] RecoverError),
    #[error(transparent)]
    Replica(#[from] ReplicaError),
}

/// Read the Raft state persisted beside the log, or start one for
/// `voters` when there is none (a new replica).
pub fn load_meta(dir: &Path, voters: &[u64], log_start: u64) -> Result<RaftMeta, GroupError> {
    let path = dir.join(META_FILE);
    match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| GroupError::Meta {
            path,
            reason: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Ok(RaftMeta::new(voters.to_vec(), log_start))
        }
        Err(e) => Err(GroupError::Meta {
            path,
            reason: e.to_string(),
        }),
    }
}

/// The batches of `log` from `from` to its end, as (offset, epoch, bytes).
pub async fn read_batches(
    log: &Rc<Log>,
    mut from: u64,
    to: u64,
) -> Result<Vec<(u64, u64, Bytes)>, LogError> {
    let mut out = Vec::new();
    while from < to.min(log.log_end_offset()) {
        let bytes = log.read_bytes(from, 1 << 20).await?;
        let before = from;
        for (at, h) in batch::headers(&bytes) {
            if h.base_offset as u64 >= to {
                break;
            }
            out.push((
                h.base_offset as u64,
                h.partition_leader_epoch.max(0) as u64,
                bytes.slice(at..at + h.size()),
            ));
            from = h.last_offset() as u64 + 1;
        }
        // Nothing readable here (a damaged batch): stop rather than spin;
        // the caller's recovery then refuses the gap.
        if from == before {
            break;
        }
    }
    Ok(out)
}

/// Open a group over `log` (recovering its Raft state from the log and
/// the state file) and spawn its task on the current (owner) shard.
pub async fn start(
    cfg: ReplicaConfig,
    voters: Vec<u64>,
    log: Rc<Log>,
    outbox: Rc<dyn Outbox>,
    tick: Duration,
) -> Result<GroupHandle, GroupError> {
    let meta = load_meta(log.dir(), &voters, log.log_start_offset())?;
    let batches = read_batches(&log, meta.anchor.offset, u64::MAX).await?;
    let (store, lost) = LogStore::recover(&meta, batches)?;
    if let Some(commit) = lost {
        tracing::error!(dir = %log.dir().display(), commit, "raft log lost committed entries; continuing from what the log holds");
    }
    let started = Instant::now();
    let replica = Replica::new(&cfg, store, 0)?;
    log.set_high_watermark(replica.high_watermark()).await?;
    let (tx, rx) = flume::unbounded();
    let to_self = tx.downgrade();
    let status = Arc::new(Mutex::new(GroupStatus::default()));
    let leads = Arc::new(AtomicU64::new(0));
    let handle = GroupHandle {
        tx,
        status: status.clone(),
        leads: leads.clone(),
    };
    let group = Group {
        replica,
        log,
        outbox,
        rx,
        to_self,
        unsynced: VecDeque::new(),
        synced: 0,
        status,
        leads,
        persisted: meta,
        started,
        tick,
        waiting: HashMap::new(),
        failed: Cell::new(false),
    };
    compio::runtime::spawn(group.run()).detach();
    Ok(handle)
}

struct Group {
    replica: Replica,
    log: Rc<Log>,
    outbox: Rc<dyn Outbox>,
    rx: flume::Receiver<Input>,
    /// The group's own channel, for its fsyncs' ends (weak: the group
    /// still stops once every handle is dropped).
    to_self: flume::WeakSender<Input>,
    /// `Ready`s written whose fsync has not ended: number, and the
    /// messages to send after it.
    unsynced: VecDeque<(u64, Vec<Message>)>,
    /// The last `Ready` number passed to `Replica::synced`.
    synced: u64,
    status: Arc<Mutex<GroupStatus>>,
    leads: Arc<AtomicU64>,
    /// The Raft state last written to the state file.
    persisted: RaftMeta,
    started: Instant,
    tick: Duration,
    /// Proposals waiting for their answer, by token.
    waiting: HashMap<u64, flume::Sender<ProposeResult>>,
    failed: Cell<bool>,
}

impl Group {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    async fn run(mut self) {
        let mut next_tick = Instant::now() + self.tick;
        let mut token = 0u64;
        // Proposals accepted since the last `drive` (not yet written).
        let mut unwritten = false;
        let mut next_compaction = COMPACT_EVERY_MS;
        // Epoch questions, answered once this round's work is done (role,
        // term and log then agree).
        let mut questions = Vec::new();
        self.limit_log();
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            let first = compio::time::timeout(wait, self.rx.recv_async()).await;
            let mut inputs = Vec::new();
            match first {
                Ok(Ok(i)) => inputs.push(i),
                Ok(Err(_)) => return, // every handle dropped
                Err(_) => {}
            }
            inputs.extend(self.rx.try_iter());
            for input in inputs {
                match input {
                    Input::Step(m) => self.replica.step(m),
                    Input::Propose {
                        batch,
                        acks,
                        min_insync,
                        reply,
                    } => {
                        // An idempotent producer's batch is judged against
                        // the written log: write what is proposed first.
                        let idempotent = BatchHeader::parse(&batch)
                            .ok()
                            .filter(odradek_engine::producer::is_idempotent);
                        if let Some(h) = idempotent {
                            if unwritten {
                                unwritten = false;
                                if let Err(e) = self.drive().await {
                                    let _ =
                                        reply.send(Err(ProduceError::NotLeader { leader: None }));
                                    tracing::error!(dir = %self.log.dir().display(), error = %e, "raft group stopped");
                                    self.fail_waiting();
                                    return;
                                }
                            }
                            if self.replica.role() == Role::Leader {
                                match self.log.judge_producer(&h) {
                                    Ok(None) => {}
                                    Ok(Some((first, last))) => {
                                        tracing::debug!(
                                            first,
                                            last,
                                            "idempotent retry answered with its original offsets"
                                        );
                                        if last < self.replica.high_watermark()
                                            || acks == Acks::Leader
                                        {
                                            let _ = reply.send(Ok((first, last)));
                                            continue;
                                        }
                                        // Answered when the original commits.
                                        token += 1;
                                        match self.replica.await_entry(token, acks, first, last) {
                                            Ok(()) => {
                                                self.waiting.insert(token, reply);
                                                self.answer();
                                            }
                                            Err(e) => {
                                                let _ = reply.send(Err(e));
                                            }
                                        }
                                        continue;
                                    }
                                    Err(e) => {
                                        // Rare, and what a client does next
                                        // (an epoch bump) matters: say so.
                                        tracing::info!(dir = %self.log.dir().display(), error = %e, "idempotent batch refused");
                                        let _ = reply.send(Err(ProduceError::Producer(e)));
                                        continue;
                                    }
                                }
                            }
                        }
                        token += 1;
                        match self.replica.propose(token, acks, min_insync, batch) {
                            Ok(()) => {
                                unwritten = true;
                                self.waiting.insert(token, reply);
                            }
                            Err(e) => {
                                let _ = reply.send(Err(e));
                            }
                        }
                    }
                    Input::Forward { batch, reply } => {
                        let _ = reply.send(self.replica.forward(batch));
                    }
                    Input::Epochs {
                        end_for,
                        at_offset,
                        reply,
                    } => questions.push((end_for, at_offset, reply)),
                    Input::Synced { number, ok } => {
                        if !ok {
                            tracing::error!(dir = %self.log.dir().display(), "raft group stopped: fsync failed");
                            self.failed.set(true);
                            self.fail_waiting();
                            return;
                        }
                        self.synced_up_to(number);
                    }
                    Input::Stop => {
                        self.fail_waiting();
                        return;
                    }
                }
            }
            if Instant::now() >= next_tick {
                let now = self.now_ms();
                self.replica.tick(now);
                next_tick = Instant::now() + self.tick;
                if now >= next_compaction {
                    next_compaction = now + COMPACT_EVERY_MS;
                    self.replica
                        .forget_epochs_below(self.log.log_start_offset());
                    if let Some(meta) = self.replica.compact_log() {
                        if let Err(e) = self.persist_meta(meta).await {
                            tracing::error!(dir = %self.log.dir().display(), error = %e, "raft group stopped");
                            self.fail_waiting();
                            return;
                        }
                        self.limit_log();
                    }
                }
            }
            unwritten = false;
            if let Err(e) = self.drive().await {
                tracing::error!(dir = %self.log.dir().display(), error = %e, "raft group stopped");
                self.failed.set(true);
                self.fail_waiting();
                return;
            }
            for (end_for, at_offset, reply) in questions.drain(..) {
                let _ = reply.send(self.answer_epochs(end_for, at_offset));
            }
        }
    }

    fn answer_epochs(&self, end_for: Option<u64>, at_offset: Option<u64>) -> EpochAnswer {
        let r = &self.replica;
        EpochAnswer {
            leadership: Leadership {
                epoch: r.term(),
                leads: r.role() == Role::Leader,
            },
            end: end_for.and_then(|e| r.end_offset_for_epoch(e)),
            // The log end belongs to the epoch the next batch will get.
            at_offset: at_offset.and_then(|o| {
                r.store()
                    .epoch_at_offset(o)
                    .or_else(|| (o == r.log_end_offset()).then(|| r.term()))
            }),
        }
    }

    /// Carry out every pending `Ready`.
    async fn drive(&mut self) -> Result<(), GroupError> {
        while let Some(rd) = self.replica.ready()? {
            self.outbox.send(rd.send);
            if rd
                .writes
                .iter()
                .any(|w| !matches!(w, LogWrite::Append { .. }))
            {
                // A truncation or reset must not race an fsync of what it
                // replaces: settle those first.
                self.sync_now().await?;
            }
            // The meta file is synced by `persist_meta` itself.
            let wrote = !rd.writes.is_empty();
            let mut last_index = None;
            let mut appends = Vec::new();
            for w in rd.writes {
                match w {
                    LogWrite::Truncate { offset } => {
                        self.flush_appends(&mut appends).await?;
                        self.log.truncate_to(offset).await?;
                    }
                    LogWrite::Append {
                        index,
                        term,
                        base_offset,
                        data,
                    } => {
                        appends.push((base_offset, data, term));
                        last_index = Some(index);
                    }
                    LogWrite::Reset { offset } => {
                        self.flush_appends(&mut appends).await?;
                        // The leader's snapshot: this replica was behind its
                        // anchor; its log restarts there.
                        tracing::warn!(dir = %self.log.dir().display(), offset, "installing the leader's snapshot: the log restarts at its anchor");
                        self.log.reset(offset).await?;
                    }
                }
            }
            self.flush_appends(&mut appends).await?;
            if let Some(i) = last_index {
                self.replica.written(i);
                self.answer();
            }
            if let Some(meta) = rd.meta {
                self.persist_meta(meta).await?;
            }
            if wrote || !self.unsynced.is_empty() {
                self.sync_behind(rd.number, rd.send_after_sync);
            } else {
                // Nothing of this `Ready` or any before it waits for the
                // disk (a leader's round of answers, a heartbeat): no task.
                self.unsynced.push_back((rd.number, rd.send_after_sync));
                self.synced_up_to(rd.number);
            }
            if let Some(req) = rd.fetch {
                let batches = read_batches(&self.log, req.from_offset, req.to_offset).await?;
                self.replica.entries_fetched(&req, batches);
            }
            self.show_high_watermark().await?;
            self.answer();
            self.publish();
        }
        // A sync's end may have moved the watermark without a `Ready`.
        self.show_high_watermark().await?;
        self.answer();
        self.publish();
        Ok(())
    }

    /// Readers see the log up to the replica's high watermark.
    async fn show_high_watermark(&self) -> Result<(), GroupError> {
        let hw = self.replica.high_watermark();
        if self.log.visible_end() != hw.min(self.log.log_end_offset()) {
            self.log.set_high_watermark(hw).await?;
        }
        Ok(())
    }

    /// Start the fsync of what `Ready` `number` wrote, beside this task;
    /// its end comes back as [`Input::Synced`]. Messages that must wait
    /// for it are kept until then.
    fn sync_behind(&mut self, number: u64, after: Vec<Message>) {
        self.unsynced.push_back((number, after));
        let log = self.log.clone();
        let to_self = self.to_self.clone();
        compio::runtime::spawn(async move {
            let ok = log.flush().await.is_ok();
            if let Some(tx) = to_self.upgrade() {
                let _ = tx.send(Input::Synced { number, ok });
            }
        })
        .detach();
    }

    /// fsync here and now: every `Ready` written so far is durable.
    async fn sync_now(&mut self) -> Result<(), GroupError> {
        let Some(&(last, _)) = self.unsynced.back() else {
            return Ok(());
        };
        self.log.flush().await?;
        self.synced_up_to(last);
        Ok(())
    }

    /// `Ready`s up to `number` are durable (each fsync covers every write
    /// made before it started, so a later one's end covers the earlier
    /// ones, in whatever order the ends arrive).
    fn synced_up_to(&mut self, number: u64) {
        if number <= self.synced {
            return;
        }
        self.synced = number;
        self.replica.synced(number);
        while self.unsynced.front().is_some_and(|&(n, _)| n <= number) {
            if let Some((_, msgs)) = self.unsynced.pop_front() {
                self.outbox.send(msgs);
            }
        }
    }

    /// Retention and the cleaner keep off the batches that are still Raft
    /// entries (above the anchor).
    fn limit_log(&self) {
        let anchor = self.replica.store().anchor().offset;
        self.log.set_retention_limit(Some(anchor));
        self.log.set_compaction_limit(Some(anchor));
    }

    /// Write queued appends together (the engine combines them into one
    /// vectored write, in order).
    async fn flush_appends(&self, appends: &mut Vec<(u64, Bytes, u64)>) -> Result<(), GroupError> {
        if appends.is_empty() {
            return Ok(());
        }
        let futs = appends
            .drain(..)
            .map(|(base, data, term)| self.log.append_replicated(base, data, term as i32));
        for r in futures_util::future::join_all(futs).await {
            r?;
        }
        Ok(())
    }

    /// Term, vote, voters and anchor must be durable before the messages
    /// that depend on them go out; the commit index alone may lag (Raft
    /// recovers it), so a state that differs only there is not written.
    async fn persist_meta(&mut self, meta: RaftMeta) -> Result<(), GroupError> {
        let same_but_commit = RaftMeta {
            commit: self.persisted.commit,
            ..meta.clone()
        } == self.persisted;
        if same_but_commit {
            return Ok(());
        }
        let path = self.log.dir().join(META_FILE);
        let bytes = serde_json::to_vec(&meta).map_err(|e| GroupError::Meta {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let p = path.clone();
        compio::runtime::spawn_blocking(move || crate::durable::replace_file(&p, &bytes))
            .await
            .map_err(|_| GroupError::Meta {
                path: path.clone(),
                reason: "writer panicked".into(),
            })?
            .map_err(|e| GroupError::Meta {
                path,
                reason: e.to_string(),
            })?;
        self.persisted = meta;
        Ok(())
    }

    fn answer(&mut self) {
        for c in self.replica.take_completions() {
            if let Some(reply) = self.waiting.remove(&c.token) {
                let _ = reply.send(c.result);
            }
        }
    }

    fn fail_waiting(&mut self) {
        for (_, reply) in self.waiting.drain() {
            let _ = reply.send(Err(ProduceError::NotLeader { leader: None }));
        }
    }

    fn publish(&self) {
        let r = &self.replica;
        let leadership = Leadership {
            epoch: r.term(),
            leads: r.role() == Role::Leader,
        };
        self.leads.store(leadership.pack(), Ordering::Relaxed);
        let s = GroupStatus {
            role: Some(r.role()),
            leader: r.leader(),
            term: r.term(),
            voters: r.voters(),
            isr: r.isr(),
            live_peers: r.live_peers(6_000),
            high_watermark: r.high_watermark(),
            log_end: r.log_end_offset(),
        };
        if let Ok(mut g) = self.status.lock() {
            *g = s;
        }
    }
}
