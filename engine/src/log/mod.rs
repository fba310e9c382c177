//! A partition log: segments of RecordBatch v2 bytes in one directory.
//!
//! [`PartitionLog`] drives the pure [`state::LogState`] through a
//! [`Storage`]: it performs the writes, reads, fdatasyncs and file changes
//! the state asks for. One partition log belongs to one shard; its methods
//! take `&self` and never hold a `RefCell` borrow across an `.await`.
//! Appends and structural changes (roll, truncate, retention) are serialized
//! by an async lock; reads run beside them and see only committed batches.
//! Durability uses group commit: one fdatasync in flight per log, covering
//! every append written before it started; callers waiting for durability
//! are woken with the new durable end offset.

mod compaction;
pub mod state;

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;

use crate::batch::{self, BatchError, HEADER_LEN};
use crate::index::{OffsetIndex, TimeIndex};
use crate::io::{Storage, StorageFile};
use crate::producer::{ProducerError, ProducerStates};
use crate::segment::{
    self, Segment, INDEX_SUFFIX, LOG_SUFFIX, PRODUCER_SNAPSHOT_SUFFIX, TIME_INDEX_SUFFIX,
};
pub use compaction::CompactionReport;
pub use state::{AppendPlan, CleanableRange, FileRange, FlushTicket, LogState, ValidRecords};
use state::{Locate, ReadPlan};

/// When appended bytes are fdatasynced. Any trigger that is set starts a
/// flush; a flush is one group-commit fdatasync of the active segment.
///
/// The default ([`FlushPolicy::DEFAULT`]) flushes *on demand*: as soon as
/// someone waits for durability ([`PartitionLog::wait_durable`], i.e. an
/// acks=all produce), with every append written meanwhile sharing that
/// fdatasync; and in the background every 4 MiB or 100 ms of unflushed
/// data, so acks=0/1 producers, which wait for no fdatasync, do not pay one
/// per append but their data is still on disk within about 100 ms.
///
/// Why 4 MiB and not more: while a flush runs, appends to its file wait
/// longer (they go through io-wq and share the disk with the writeback), so
/// the acks=1 latency tail grows with the size of each flush: at half the
/// max rate, p99 ~2 ms with 4 MiB against 3–4 ms with 16 MiB and 5–11 ms
/// with 64 MiB, for 3–7 % of the max rate (docs/benchmarks.md). A flush
/// covers what is unsynced when it starts, so under load they grow by
/// themselves and the cadence never caps throughput.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlushPolicy {
    /// After every append (group commit shares one fdatasync among the
    /// appends that arrive while one is in flight).
    pub every_append: bool,
    /// Once this many bytes are unflushed. Never more than
    /// [`state::MAX_UNSYNCED_BYTES`] (64 MiB) are left unflushed, whatever
    /// this says (so a roll's sync, which appends wait for, stays short).
    pub every_bytes: Option<u64>,
    /// Once the last flush is this old and bytes are unflushed (checked by
    /// [`PartitionLog::tick`]).
    pub every_ms: Option<u64>,
    /// A waiter for durability starts a flush at once. Off: a waiter waits
    /// for the next flush the other triggers make.
    pub on_demand: bool,
}

impl FlushPolicy {
    /// Sync when waited for, else every 4 MiB or 100 ms (see the type).
    pub const DEFAULT: Self = Self {
        every_append: false,
        every_bytes: Some(4 << 20),
        every_ms: Some(100),
        on_demand: true,
    };
    pub const EVERY_APPEND: Self = Self {
        every_append: true,
        every_bytes: None,
        every_ms: None,
        on_demand: true,
    };
    /// Every `n` unflushed bytes; a waiter does not wait for the threshold.
    pub fn every_bytes(n: u64) -> Self {
        Self {
            every_append: false,
            every_bytes: Some(n),
            every_ms: None,
            on_demand: true,
        }
    }
    /// Every `ms` milliseconds; waiters wait for that timer (batching
    /// fdatasyncs at the cost of latency).
    pub fn every_ms(ms: u64) -> Self {
        Self {
            every_append: false,
            every_bytes: None,
            every_ms: Some(ms),
            on_demand: false,
        }
    }
}

impl Default for FlushPolicy {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// `cleanup.policy`: what happens to old data. Kafka's `compact` alone
/// turns time and size retention off; `compact,delete` does both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CleanupPolicy {
    /// `delete`: `retention.ms` / `retention.bytes` delete old segments.
    pub delete: bool,
    /// `compact`: the cleaner keeps only the latest record of each key.
    pub compact: bool,
}

impl CleanupPolicy {
    pub const DELETE: Self = Self {
        delete: true,
        compact: false,
    };
    pub const COMPACT: Self = Self {
        delete: false,
        compact: true,
    };
    pub const COMPACT_DELETE: Self = Self {
        delete: true,
        compact: true,
    };

    /// Kafka's list syntax: `delete`, `compact`, `compact,delete` (any
    /// order, spaces allowed).
    pub fn parse(s: &str) -> Option<Self> {
        let mut p = Self {
            delete: false,
            compact: false,
        };
        for part in s.split(',') {
            match part.trim() {
                "delete" => p.delete = true,
                "compact" => p.compact = true,
                _ => return None,
            }
        }
        (p.delete || p.compact).then_some(p)
    }

    /// As Kafka spells it in DescribeConfigs.
    pub fn as_str(&self) -> &'static str {
        match (self.compact, self.delete) {
            (true, true) => "compact,delete",
            (true, false) => "compact",
            _ => "delete",
        }
    }
}

impl Default for CleanupPolicy {
    fn default() -> Self {
        Self::DELETE
    }
}

/// Per-partition settings (Kafka names in comments).
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// `segment.bytes`: roll when the active segment would grow past this.
    pub segment_bytes: u64,
    /// `segment.ms`: roll a non-empty segment this old.
    pub segment_ms: u64,
    /// `retention.ms`: delete segments whose newest record is older.
    pub retention_ms: Option<u64>,
    /// `retention.bytes`: delete oldest segments while the log is larger.
    pub retention_bytes: Option<u64>,
    /// `index.interval.bytes`: spacing of sparse index entries.
    pub index_interval_bytes: u32,
    /// `max.message.bytes`: largest batch accepted.
    pub max_batch_bytes: usize,
    /// `flush.messages` / `flush.ms`, as a group-commit policy.
    pub flush: FlushPolicy,
    /// `cleanup.policy`.
    pub cleanup_policy: CleanupPolicy,
    /// `delete.retention.ms`: how long compaction keeps a tombstone (the
    /// latest record of a key with a null value), counted from its batch's
    /// max timestamp.
    pub delete_retention_ms: u64,
    /// `min.cleanable.dirty.ratio`: compact once the sealed bytes not yet
    /// cleaned are at least this share of all cleanable sealed bytes.
    pub min_cleanable_dirty_ratio: f64,
    /// `min.compaction.lag.ms`: a segment whose newest record is younger
    /// than this is not compacted yet.
    pub min_compaction_lag_ms: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            retention_ms: Some(7 * 24 * 3600 * 1000),
            retention_bytes: None,
            index_interval_bytes: 4096,
            max_batch_bytes: 1_048_588,
            flush: FlushPolicy::default(),
            cleanup_policy: CleanupPolicy::DELETE,
            delete_retention_ms: 86_400_000,
            min_cleanable_dirty_ratio: 0.5,
            min_compaction_lag_ms: 0,
        }
    }
}

/// Errors of the partition log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("invalid record batch: {0}")]
    InvalidBatch(#[from] BatchError),
    #[error("offset {offset} is out of range [{log_start}, {log_end}]")]
    OffsetOutOfRange {
        offset: u64,
        log_start: u64,
        log_end: u64,
    },
    #[error("too many records in one append")]
    TooManyRecords,
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("log {0} failed earlier and takes no more writes")]
    Failed(PathBuf),
    #[error("segment file {path} changed under a read")]
    Raced { path: PathBuf },
    /// An idempotent producer's batch failed its epoch or sequence check.
    #[error(transparent)]
    Producer(#[from] ProducerError),
    /// A record the topic cannot take (Kafka's INVALID_RECORD): a keyless
    /// record for a compacted topic, or records that do not decode there.
    #[error("invalid record: {0}")]
    InvalidRecord(String),
    /// Stored bytes that are not a batch where one must start (found by
    /// compaction in a sealed segment; recovery would cut there).
    #[error("segment {path} holds no valid batch at position {position}")]
    CorruptSegment { path: PathBuf, position: u64 },
    /// A replicated append that does not start at the log end: the caller
    /// and the log disagree on the Raft log's offsets.
    #[error("replicated batch expected at offset {expected}, log ends at {log_end}")]
    NotAtOffset { expected: u64, log_end: u64 },
}

impl LogError {
    /// The same error for another waiter (I/O errors are not `Clone`).
    fn duplicate(&self) -> LogError {
        match self {
            LogError::InvalidBatch(e) => LogError::InvalidBatch(e.clone()),
            LogError::OffsetOutOfRange {
                offset,
                log_start,
                log_end,
            } => LogError::OffsetOutOfRange {
                offset: *offset,
                log_start: *log_start,
                log_end: *log_end,
            },
            LogError::TooManyRecords => LogError::TooManyRecords,
            LogError::Io { path, source } => LogError::Io {
                path: path.clone(),
                source: std::io::Error::new(source.kind(), source.to_string()),
            },
            LogError::Failed(p) => LogError::Failed(p.clone()),
            LogError::Raced { path } => LogError::Raced { path: path.clone() },
            LogError::Producer(e) => LogError::Producer(e.clone()),
            LogError::InvalidRecord(s) => LogError::InvalidRecord(s.clone()),
            LogError::CorruptSegment { path, position } => LogError::CorruptSegment {
                path: path.clone(),
                position: *position,
            },
            LogError::NotAtOffset { expected, log_end } => LogError::NotAtOffset {
                expected: *expected,
                log_end: *log_end,
            },
        }
    }
}

/// A byte range of one segment file holding whole batches: what a fetch
/// sends (by splice) without reading it into memory.
#[derive(Debug, Clone)]
pub struct FileSlice<F> {
    pub file: F,
    pub position: u64,
    pub len: u64,
    /// Base offset of the first batch in the range.
    pub first_offset: u64,
}

/// The outcome of an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: u64,
    pub last_offset: u64,
    pub max_timestamp: i64,
    /// Every batch was an idempotent producer's retry of a batch already in
    /// the log: nothing was written, and the offsets are the original ones
    /// (Kafka answers such a retry with success and those offsets).
    pub duplicate: bool,
}

/// What recovery found and cut when the log was opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    pub segments: usize,
    /// Segments whose data was scanned batch by batch (the active one, and
    /// any whose indexes were missing or bad).
    pub scanned_segments: usize,
    pub rebuilt_indexes: usize,
    /// Bytes cut from a torn or corrupt tail.
    pub truncated_bytes: u64,
    /// Whole segments dropped because they followed a corrupt one.
    pub dropped_segments: usize,
    /// Why the tail was cut, if it was.
    pub reason: Option<String>,
    /// The producer-state snapshot recovery started from (its offset);
    /// `None`: producer state came from walking every segment.
    pub producer_snapshot: Option<u64>,
}

type Waiter = flume::Sender<Result<u64, String>>;

/// An append waiting for the writer.
struct Queued {
    set: ValidRecords,
    leader_epoch: i32,
    reply: flume::Sender<Result<AppendInfo, LogError>>,
}

/// What a roll leaves for its seal task (see [`PartitionLog::roll`]).
struct Seal<F> {
    /// The old segment as it was sealed (its indexes to write).
    sealed: Segment<F>,
    /// The producer snapshot at `base`, encoded at the roll.
    snapshot: Vec<u8>,
    /// The new segment's base.
    base: u64,
}

/// Bounds of one combined write. 1 MiB, not more: io_uring hands a large
/// buffered write to an io-wq worker, so an 8 MiB round of 1 MiB batches
/// copied into the page cache on another thread, serialized behind the
/// previous round, and ran at 0.35-0.56 of plain `pwrite`; with 1 MiB
/// rounds the same batches run at 0.88-1.44 (docs/benchmarks.md).
const MAX_ROUND_BYTES: usize = 1 << 20;
const MAX_ROUND_SETS: usize = 256;

/// One partition's log on storage `S`.
pub struct PartitionLog<S: Storage> {
    storage: S,
    dir: PathBuf,
    state: RefCell<LogState<S::File>>,
    append_lock: async_lock::Mutex<()>,
    /// Held by the block reservation in flight (at most one, see
    /// [`Self::reserve_blocks`]).
    reserving: std::sync::Arc<async_lock::Mutex<()>>,
    /// Held by the seal in flight (at most one, see [`Self::roll`]).
    sealing: std::sync::Arc<async_lock::Mutex<()>>,
    /// Appends validated and waiting for the writer task.
    queue: RefCell<std::collections::VecDeque<Queued>>,
    /// The writer task is running.
    writing: Cell<bool>,
    waiters: RefCell<BTreeMap<u64, Vec<Waiter>>>,
    /// Readers waiting for the log end to move (fetch long polls).
    data_waiters: RefCell<Vec<flume::Sender<()>>>,
    flushing: Cell<bool>,
    flush_again: Cell<bool>,
    failed: RefCell<Option<String>>,
    /// A compaction pass is running (one at a time per log).
    compacting: Cell<bool>,
    /// Test hook: simulate a crash inside compaction's file protocol.
    #[cfg(test)]
    crash_after: Cell<Option<u32>>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> LogError + '_ {
    move |source| LogError::Io {
        path: path.to_owned(),
        source,
    }
}

impl<S: Storage> PartitionLog<S> {
    /// Open (or create) the log in `dir`, recovering what is there.
    pub async fn open(
        storage: S,
        dir: impl Into<PathBuf>,
        config: LogConfig,
    ) -> Result<(Rc<Self>, RecoveryReport), LogError> {
        let dir = dir.into();
        let (segments, producers, report) = recover(&storage, &dir, &config).await?;
        let now = storage.now_ms();
        let log = Rc::new(Self {
            state: RefCell::new(LogState::new(config, segments, now).with_producers(producers)),
            storage,
            dir,
            append_lock: async_lock::Mutex::new(()),
            reserving: Default::default(),
            sealing: Default::default(),
            queue: RefCell::new(Default::default()),
            writing: Cell::new(false),
            waiters: RefCell::new(BTreeMap::new()),
            data_waiters: RefCell::new(Vec::new()),
            flushing: Cell::new(false),
            flush_again: Cell::new(false),
            failed: RefCell::new(None),
            compacting: Cell::new(false),
            #[cfg(test)]
            crash_after: Cell::new(None),
        });
        Ok((log, report))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn log_start_offset(&self) -> u64 {
        self.state.borrow().log_start_offset()
    }

    pub fn log_end_offset(&self) -> u64 {
        self.state.borrow().log_end_offset()
    }

    /// Every offset below this survives a crash.
    pub fn durable_end_offset(&self) -> u64 {
        self.state.borrow().durable_end_offset()
    }

    pub fn size_bytes(&self) -> u64 {
        self.state.borrow().size_bytes()
    }

    pub fn segment_count(&self) -> usize {
        self.state.borrow().segment_count()
    }

    /// Base offsets of the segments, oldest first.
    pub fn segment_bases(&self) -> Vec<u64> {
        self.state
            .borrow()
            .segments()
            .map(|s| s.base_offset)
            .collect()
    }

    pub fn config(&self) -> LogConfig {
        self.state.borrow().config.clone()
    }

    /// Let compaction clean only segments wholly below `limit` (for a
    /// replicated log: its committed offset, so a truncation never cuts a
    /// key's newer record after its older one was cleaned away).
    pub fn set_compaction_limit(&self, limit: Option<u64>) {
        self.state.borrow_mut().set_compaction_limit(limit);
    }

    /// Retention deletes only segments wholly below `limit` (a replicated
    /// log keeps what its Raft log still holds).
    pub fn set_retention_limit(&self, limit: Option<u64>) {
        self.state.borrow_mut().set_retention_limit(limit);
    }

    /// Drop every segment and start again, empty, at `offset` (a replica
    /// that installs its leader's snapshot).
    pub async fn reset(self: &Rc<Self>, offset: u64) -> Result<(), LogError> {
        let _guard = self.lock_settled().await;
        self.check_failed()?;
        self.reset_to(offset).await?;
        self.wake_readers();
        Ok(())
    }

    /// Change settings (retention, segment size, flush policy); takes effect
    /// from the next append or retention pass.
    pub fn set_config(&self, config: LogConfig) {
        self.state.borrow_mut().config = config;
    }

    /// Keep only the newest `window` bytes of durable data in the page
    /// cache (`None`: leave caching to the OS, as Kafka does). Durable
    /// bytes further behind the flushed end are dropped after each flush,
    /// so the cache recycles its pages: writing into pages the machine has
    /// not used recently costs several times a copy into recycled ones (on
    /// the benchmark VM 3.9 against 0.55 CPU s/GiB, docs/benchmarks.md).
    /// Readers further behind read from disk. The shard sets it, sharing
    /// its cache budget among its partitions.
    pub fn set_cache_window(&self, window: Option<u64>) {
        self.state.borrow_mut().cache_window = window;
    }

    fn check_failed(&self) -> Result<(), LogError> {
        match &*self.failed.borrow() {
            Some(_) => Err(LogError::Failed(self.dir.clone())),
            None => Ok(()),
        }
    }

    fn path(&self, base: u64, suffix: &str) -> PathBuf {
        self.dir.join(segment::file_name(base, suffix))
    }

    /// Append a producer's record set (one or more RecordBatch v2). Offsets
    /// and the leader epoch are assigned on the way to disk (the producer's
    /// bytes are written untouched beside small rewritten headers); the
    /// bytes are in the page cache when this returns. Pair with
    /// [`Self::wait_durable`] for acks that need durability.
    ///
    /// Validation (CRC included) runs here, in the caller's task; then the
    /// set joins the log's queue. One writer task drains the queue: every
    /// set waiting while a write is in flight goes out in the next single
    /// vectored write (write combining), in arrival order.
    pub async fn append(
        self: &Rc<Self>,
        records: impl Into<Bytes>,
        leader_epoch: i32,
    ) -> Result<AppendInfo, LogError> {
        self.submit(records, leader_epoch)?.await
    }

    /// [`Self::append`] in two steps: validate the set and queue it now,
    /// behind every set submitted before; the future gives the outcome. A
    /// caller can so keep several appends in order without awaiting each
    /// (a connection's pipelined produce requests: the next one is read
    /// while this one is written, and both may go out in one write).
    pub fn submit(
        self: &Rc<Self>,
        records: impl Into<Bytes>,
        leader_epoch: i32,
    ) -> Result<impl Future<Output = Result<AppendInfo, LogError>> + 'static, LogError> {
        self.check_failed()?;
        let (max, compacted) = {
            let st = self.state.borrow();
            (st.config.max_batch_bytes, st.config.cleanup_policy.compact)
        };
        let bytes = records.into();
        let set = ValidRecords::new(bytes.clone(), max)?;
        if compacted {
            // Kafka refuses keyless records for compacted topics: they could
            // never be cleaned. Compressed batches are decompressed to look.
            crate::compact::check_keys(&bytes, crate::compact::decompress_cap(max))
                .map_err(|e| LogError::InvalidRecord(e.to_string()))?;
        }
        Ok(self.enqueue(set, leader_epoch))
    }

    /// Append one batch of a replicated partition at exactly `base_offset`
    /// (where Raft placed its entry), with epoch `leader_epoch` (the entry's
    /// term). Idempotent producers' state is recorded but not judged: the
    /// leader judged the batch before proposing it, and every replica must
    /// write every entry. Compacted topics' key checks were the leader's too.
    pub async fn append_replicated(
        self: &Rc<Self>,
        base_offset: u64,
        batch: impl Into<Bytes>,
        leader_epoch: i32,
    ) -> Result<AppendInfo, LogError> {
        self.check_failed()?;
        let max = self.state.borrow().config.max_batch_bytes;
        // A control batch (Raft's own entry) is small; the bound on data
        // batches was applied by the leader, so use the larger of the two.
        let set = ValidRecords::replicated(batch.into(), max.max(1 << 20), base_offset)?;
        self.enqueue(set, leader_epoch).await
    }

    /// Queue `set` now (the writer starts if idle); the future waits for
    /// its outcome.
    fn enqueue(
        self: &Rc<Self>,
        set: ValidRecords,
        leader_epoch: i32,
    ) -> impl Future<Output = Result<AppendInfo, LogError>> + 'static {
        let (tx, rx) = flume::bounded(1);
        self.queue.borrow_mut().push_back(Queued {
            set,
            leader_epoch,
            reply: tx,
        });
        if !self.writing.replace(true) {
            let this = self.clone();
            self.storage.spawn(async move { this.write_queued().await });
        }
        let dir = self.dir.clone();
        async move {
            match rx.recv_async().await {
                Ok(r) => r,
                Err(_) => Err(LogError::Failed(dir)),
            }
        }
    }

    /// The writer: drain the queue in rounds until it is empty.
    async fn write_queued(self: Rc<Self>) {
        loop {
            let round = self.next_round();
            if round.is_empty() {
                self.writing.set(false);
                return;
            }
            let sets: Vec<ValidRecords> = round.iter().map(|q| q.set.clone()).collect();
            match self.write_round(&sets, round[0].leader_epoch).await {
                Ok(plan) => {
                    for (q, outcome) in round.into_iter().zip(plan.outcomes) {
                        let _ = q.reply.send(outcome.map_err(LogError::from));
                    }
                    self.wake_readers();
                    self.maybe_flush();
                }
                Err(e) => {
                    for q in round {
                        let _ = q.reply.send(Err(e.duplicate()));
                    }
                }
            }
        }
    }

    /// Queued sets for one write: consecutive, same leader epoch, bounded,
    /// and not past the active segment's end (so rolls fall where they would
    /// without combining).
    fn next_round(&self) -> Vec<Queued> {
        let room = {
            let st = self.state.borrow();
            st.config.segment_bytes.saturating_sub(st.active().size)
        };
        let limit = (MAX_ROUND_BYTES as u64).min(room) as usize;
        let mut q = self.queue.borrow_mut();
        let mut round: Vec<Queued> = Vec::new();
        let mut bytes = 0usize;
        while let Some(next) = q.front() {
            let same_epoch = round
                .first()
                .is_none_or(|f| f.leader_epoch == next.leader_epoch);
            let fits = round.is_empty()
                || (bytes + next.set.len() <= limit && round.len() < MAX_ROUND_SETS);
            if !same_epoch || !fits {
                break;
            }
            bytes += next.set.len();
            round.extend(q.pop_front());
        }
        round
    }

    async fn write_round(
        self: &Rc<Self>,
        sets: &[ValidRecords],
        leader_epoch: i32,
    ) -> Result<AppendPlan, LogError> {
        let _guard = self.append_lock.lock().await;
        self.check_failed()?;
        let now = self.storage.now_ms();
        let mut plan = self
            .state
            .borrow()
            .prepare_append(sets, leader_epoch, now)?;
        if plan.roll {
            self.roll(plan.base_offset).await?;
        }
        if plan.len > 0 {
            let (file, base) = {
                let st = self.state.borrow();
                (st.active().file.clone(), st.active().base_offset)
            };
            self.reserve_blocks(plan.position, plan.len);
            file.write_all_at(plan.position, std::mem::take(&mut plan.chunks))
                .await
                .map_err(io_err(&self.path(base, LOG_SUFFIX)))?;
            crate::stats::record_write(sets.len());
        }
        self.state.borrow_mut().commit_append(&plan);
        Ok(plan)
    }

    /// Reserve blocks ahead of an append (see [`StorageFile::reserve`]) in
    /// the background, so the append does not wait for it. At most one is
    /// in flight (the next append asks again); a roll or truncation waits
    /// for it, so no reservation lands on a file after it was cut to
    /// length. Not an error if the file system cannot: the write allocates.
    fn reserve_blocks(self: &Rc<Self>, position: u64, len: u64) {
        let Some(in_flight) = self.reserving.try_lock_arc() else {
            return;
        };
        let Some(r) = self.state.borrow_mut().take_reservation(position, len) else {
            return;
        };
        let log = self.clone();
        self.storage.spawn(async move {
            let _in_flight = in_flight;
            if let Err(e) = r.file.reserve(r.pos, r.len).await {
                tracing::debug!(dir = %log.dir.display(), error = %e, "cannot reserve segment blocks");
                log.state.borrow_mut().reserve_failed();
            }
        });
    }

    /// Wait for the reservation in flight, if any. Only called with the
    /// append lock held, under which no new one starts.
    async fn reservation_done(&self) {
        drop(self.reserving.lock().await);
    }

    /// A flush completed: drop what fell out of the cache window.
    fn drop_cache_behind(&self, ticket: &FlushTicket<S::File>) {
        let drops = self.state.borrow_mut().take_cache_drops(ticket);
        for r in drops {
            r.file.drop_cached(r.pos, r.len);
        }
    }

    /// Seal the active segment and start a new one at `base`. Called with
    /// the append lock held, so only what must come before the first write
    /// to the new segment is done here: the old segment's fdatasync. Were
    /// the new segment's bytes written first, writeback could put them on
    /// disk before the old tail, and a crash would leave a gap recovery
    /// cannot tell from a compacted hole (the log would not be a prefix of
    /// what was appended). The rest, four of the five syncs a roll used
    /// to make under the lock (indexes, producer snapshot, the new name's
    /// directory entry), runs in a seal task beside the appends
    /// (docs/benchmarks.md, "Rolls off the append path"); a flush takes its
    /// ticket only while no seal runs, so nothing in the new segment is
    /// durable before its name is. A crash before the seal finished leaves a sealed segment
    /// without indexes, which recovery rebuilds.
    async fn roll(self: &Rc<Self>, base: u64) -> Result<(), LogError> {
        // One seal at a time: a roll waits for the previous one.
        let sealing = self.sealing.lock_arc().await;
        // No reservation may land on the old file after the seal cut it.
        self.reservation_done().await;
        let (mut sealed, ticket) = {
            let st = self.state.borrow();
            // The flush that makes the whole old segment durable.
            (st.active().clone(), st.begin_flush())
        };
        sealed.seal();
        let log_path = self.path(sealed.base_offset, LOG_SUFFIX);
        let started = std::time::Instant::now();
        ticket.file.sync_data().await.map_err(io_err(&log_path))?;
        crate::stats::record_fsync(started.elapsed());
        let now = self.storage.now_ms();
        self.state.borrow_mut().complete_flush(&ticket, now);
        self.wake_waiters();
        self.drop_cache_behind(&ticket);
        let file = self.create_segment_file(base).await?;
        let seal = {
            let mut st = self.state.borrow_mut();
            // Producer state at exactly `base`, before appends move it on.
            let snapshot = st.producers().encode_snapshot(base);
            st.push_segment(Segment::new(base, file, self.storage.now_ms()));
            Seal {
                sealed,
                snapshot,
                base,
            }
        };
        tracing::info!(dir = %self.dir.display(), base, "segment rolled");
        let log = self.clone();
        self.storage.spawn(async move {
            log.seal(seal).await;
            drop(sealing);
        });
        Ok(())
    }

    /// The rest of a roll (see [`Self::roll`]). Indexes and snapshot are
    /// only logged when they cannot be written (the next open rebuilds
    /// them); a failed directory sync fails the log, as a failed flush does.
    async fn seal(self: &Rc<Self>, seal: Seal<S::File>) {
        let Seal {
            sealed,
            snapshot,
            base,
        } = seal;
        if sealed.reserved_to > sealed.size {
            // Truncating to the length frees the reserved blocks past it.
            if let Err(e) = sealed.file.set_len(sealed.size).await {
                let path = self.path(sealed.base_offset, LOG_SUFFIX);
                tracing::warn!(path = %path.display(), "freeing reserved blocks: {e}");
            }
        }
        if let Err(e) = write_indexes(&self.storage, &self.dir, &sealed).await {
            tracing::warn!(dir = %self.dir.display(), base = sealed.base_offset, "writing indexes: {e}; the next open rebuilds them");
        }
        self.write_producer_snapshot(base, snapshot).await;
        // The new segment's name (and the snapshot's), before any flush of it.
        if let Err(e) = self.storage.sync_dir(&self.dir).await {
            self.fail(format!("syncing {} failed: {e}", self.dir.display()));
        }
    }

    /// Wait for the seal in flight, if any, to finish.
    async fn seal_done(&self) {
        drop(self.sealing.lock().await);
    }

    /// The append lock, once no seal is in flight: for changes that cut,
    /// delete or replace files a seal could still be writing.
    async fn lock_settled(&self) -> async_lock::MutexGuard<'_, ()> {
        let guard = self.append_lock.lock().await;
        self.seal_done().await;
        guard
    }

    /// Flush if the policy says so (after an append, or on a timer tick).
    fn maybe_flush(self: &Rc<Self>) {
        let now = self.storage.now_ms();
        let due = self.state.borrow().flush_due(now);
        // Someone waits for durability: flush now, unless the policy leaves
        // it to its timer. A policy without a timer always flushes on demand
        // (a byte threshold alone might never be reached).
        let policy = self.state.borrow().config.flush;
        let on_demand = policy.on_demand || policy.every_append || policy.every_ms.is_none();
        let waited = on_demand && !self.waiters.borrow().is_empty();
        if due || waited {
            self.start_flush();
        }
    }

    /// The leader's check of an idempotent producer's batch before it is
    /// replicated: `Ok(None)` to write it, `Ok(Some((first, last)))` for a
    /// retry of a batch already in the log (its original offsets), or the
    /// epoch/sequence error. Non-idempotent batches are always `Ok(None)`.
    pub fn judge_producer(
        &self,
        h: &batch::BatchHeader,
    ) -> Result<Option<(u64, u64)>, ProducerError> {
        if !crate::producer::is_idempotent(h) {
            return Ok(None);
        }
        match self.state.borrow().judge_producer(h)? {
            crate::producer::Verdict::Duplicate(m) => Ok(Some((m.first_offset, m.last_offset))),
            crate::producer::Verdict::Append => Ok(None),
        }
    }

    /// Readers see offsets below this: the high watermark of a replicated
    /// log (see [`Self::set_high_watermark`]), else the log end.
    pub fn visible_end(&self) -> u64 {
        self.state.borrow().visible_end()
    }

    /// Make offsets below `hw` (a batch boundary: Raft's commit) visible to
    /// readers, and only those. Once set, data appended at or past the
    /// watermark stays invisible until the watermark passes it.
    pub async fn set_high_watermark(self: &Rc<Self>, hw: u64) -> Result<(), LogError> {
        let known = self.state.borrow().known_hw_position(hw);
        if let Some(pos) = known {
            self.state.borrow_mut().set_high_watermark(hw, pos);
            self.wake_readers();
            return Ok(());
        }
        // Written before a restart: find the batch by its header.
        let _guard = self.append_lock.lock().await;
        let (file, base, from, size) = {
            let st = self.state.borrow();
            let i = st.segment_index_for(hw);
            let s = st.segment(i);
            let rel = s.relative(hw).unwrap_or(0);
            let from = s.index.floor(rel).map_or(0, |(_, p)| p as u64);
            (s.file.clone(), s.base_offset, from, s.size)
        };
        let path = self.path(base, LOG_SUFFIX);
        let found = scan_headers(&file, from, size, |h| h.last_offset() as u64 >= hw)
            .await
            .map_err(io_err(&path))?;
        let pos = match found {
            Some(h) if h.base_offset as u64 == hw => Some((base, h.position)),
            Some(h) => {
                return Err(LogError::NotAtOffset {
                    expected: hw,
                    log_end: h.base_offset as u64,
                })
            }
            None => None,
        };
        self.state.borrow_mut().set_high_watermark(hw, pos);
        self.wake_readers();
        Ok(())
    }

    /// Run time-based flushing; call periodically (the shard does).
    pub fn tick(self: &Rc<Self>) {
        self.maybe_flush();
    }

    /// Start a group-commit flush, or ask the running one to go again.
    pub fn start_flush(self: &Rc<Self>) {
        if self.flushing.replace(true) {
            self.flush_again.set(true);
            return;
        }
        let this = self.clone();
        self.storage.spawn(async move {
            loop {
                this.flush_again.set(false);
                if this.failed.borrow().is_some() {
                    break;
                }
                // No roll can start while the guard is held, and a seal in
                // flight finishes first (see `roll`).
                let ticket = {
                    let _no_seal = this.sealing.lock().await;
                    this.state.borrow().begin_flush()
                };
                if ticket.end_offset > this.state.borrow().durable_end_offset() {
                    let started = std::time::Instant::now();
                    if let Err(e) = ticket.file.sync_data().await {
                        this.fail(format!("fdatasync failed: {e}"));
                        break;
                    }
                    crate::stats::record_fsync(started.elapsed());
                    let now = this.storage.now_ms();
                    this.state.borrow_mut().complete_flush(&ticket, now);
                    this.wake_waiters();
                    this.drop_cache_behind(&ticket);
                }
                if !this.flush_again.get() {
                    break;
                }
            }
            this.flushing.set(false);
        });
    }

    fn wake_readers(&self) {
        for w in self.data_waiters.borrow_mut().drain(..) {
            let _ = w.send(());
        }
    }

    /// Resolve once the log end passes `offset` (new data to read), or the
    /// log changes in a way a reader must look at (truncation, deletion).
    /// Callers put their own deadline on it.
    pub async fn wait_for_data(&self, offset: u64) {
        if self.visible_end() > offset || self.failed.borrow().is_some() {
            return;
        }
        let (tx, rx) = flume::bounded(1);
        {
            let mut w = self.data_waiters.borrow_mut();
            // Readers that gave up (their deadline passed) left dead senders.
            w.retain(|s| !s.is_disconnected());
            w.push(tx);
        }
        let _ = rx.recv_async().await;
    }

    /// After an fsync failure the page cache may have dropped our data: the
    /// log takes no more writes and every waiter learns it (no silent loss).
    fn fail(&self, why: String) {
        tracing::error!(dir = %self.dir.display(), "{why}; partition log is now failed");
        self.refuse_writes(why);
    }

    /// Take no more writes; fail everything waiting.
    fn refuse_writes(&self, why: String) {
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        for w in waiters.into_values().flatten() {
            let _ = w.send(Err(why.clone()));
        }
        *self.failed.borrow_mut() = Some(why);
        for q in self.queue.borrow_mut().drain(..) {
            let _ = q.reply.send(Err(LogError::Failed(self.dir.clone())));
        }
        self.wake_readers();
    }

    fn wake_waiters(&self) {
        let durable = self.durable_end_offset();
        let ready = {
            let mut w = self.waiters.borrow_mut();
            // Keys are the durable end each waiter needs.
            let rest = w.split_off(&(durable + 1));
            std::mem::replace(&mut *w, rest)
        };
        for w in ready.into_values().flatten() {
            let _ = w.send(Ok(durable));
        }
    }

    /// Wait until `offset` is durable; returns the durable end offset.
    /// Starts a flush (joining one in flight, group commit) unless the
    /// policy has a timer, whose next flush then wakes it.
    pub async fn wait_durable(self: &Rc<Self>, offset: u64) -> Result<u64, LogError> {
        self.check_failed()?;
        let durable = self.durable_end_offset();
        if offset < durable {
            return Ok(durable);
        }
        let (tx, rx) = flume::bounded(1);
        self.waiters
            .borrow_mut()
            .entry(offset + 1)
            .or_default()
            .push(tx);
        self.maybe_flush();
        match rx.recv_async().await {
            Ok(Ok(d)) => Ok(d),
            _ => Err(LogError::Failed(self.dir.clone())),
        }
    }

    /// fdatasync now and return the durable end offset.
    pub async fn flush(self: &Rc<Self>) -> Result<u64, LogError> {
        // A seal may still be writing indexes after its sync made the
        // durable end pass the old segment.
        self.seal_done().await;
        let end = self.log_end_offset();
        if end == 0 || end <= self.durable_end_offset() {
            return Ok(self.durable_end_offset());
        }
        let (tx, rx) = flume::bounded(1);
        self.waiters.borrow_mut().entry(end).or_default().push(tx);
        self.start_flush();
        match rx.recv_async().await {
            Ok(Ok(d)) => Ok(d),
            _ => Err(LogError::Failed(self.dir.clone())),
        }
    }

    /// Whole batches starting with the one that holds `offset`, up to
    /// `max_bytes` (but at least that first batch), as a file range.
    /// `Ok(None)` at the log end.
    pub async fn read(
        &self,
        offset: u64,
        max_bytes: u64,
    ) -> Result<Option<FileSlice<S::File>>, LogError> {
        for _ in 0..3 {
            let mut plan = match self.state.borrow().locate(offset)? {
                Locate::AtEnd => return Ok(None),
                Locate::Scan(p) => p,
            };
            let window = self.read_window(&plan).await?;
            if let Some(slice) = self
                .state
                .borrow()
                .slice_from_scan(&plan, &window, max_bytes)
            {
                return Ok(Some(slice));
            }
            if plan.scan_pos + (plan.scan_len as u64) < plan.scan_end {
                // The batch lies past the first window (a sparse index, or
                // an offset in a hole): walk headers to it, then read there.
                let path = self.path(plan.segment_base, LOG_SUFFIX);
                let found = scan_headers(&plan.file, plan.scan_pos, plan.scan_end, |h| {
                    h.last_offset() as u64 >= offset
                })
                .await
                .map_err(io_err(&path))?;
                if let Some(h) = found {
                    plan.scan_pos = h.position;
                    let window = self.read_window(&plan).await?;
                    if let Some(slice) = self
                        .state
                        .borrow()
                        .slice_from_scan(&plan, &window, max_bytes)
                    {
                        return Ok(Some(slice));
                    }
                }
            }
        }
        Err(LogError::Raced {
            path: self.dir.clone(),
        })
    }

    async fn read_window(&self, plan: &ReadPlan<S::File>) -> Result<Vec<u8>, LogError> {
        plan.file
            .read_at(plan.scan_pos, plan.scan_len)
            .await
            .map_err(io_err(&self.path(plan.segment_base, LOG_SUFFIX)))
    }

    /// Like [`Self::read`], but the bytes themselves.
    pub async fn read_bytes(&self, offset: u64, max_bytes: u64) -> Result<Bytes, LogError> {
        let Some(slice) = self.read(offset, max_bytes).await? else {
            return Ok(Bytes::new());
        };
        let bytes = slice
            .file
            .read_at(slice.position, slice.len as usize)
            .await
            .map_err(io_err(&self.dir))?;
        Ok(Bytes::from(bytes))
    }

    /// The first batch whose max timestamp is `>= timestamp`: its base offset
    /// and max timestamp. `None` if every record is older.
    pub async fn offset_for_timestamp(
        &self,
        timestamp: i64,
    ) -> Result<Option<(u64, i64)>, LogError> {
        let candidates: Vec<(S::File, u64, u64, u64)> = {
            let st = self.state.borrow();
            st.segments()
                .filter(|s| s.max_timestamp >= timestamp)
                .map(|s| {
                    let rel = s.time_index.search_start(timestamp).unwrap_or(0);
                    let pos = s.index.floor(rel).map_or(0, |(_, p)| p as u64);
                    (s.file.clone(), s.base_offset, pos, s.size)
                })
                .collect()
        };
        let start = self.log_start_offset();
        for (file, base, pos, size) in candidates {
            let found = scan_headers(&file, pos, size, |h| h.max_timestamp >= timestamp)
                .await
                .map_err(io_err(&self.path(base, LOG_SUFFIX)))?;
            if let Some(h) = found {
                return Ok(Some(((h.base_offset as u64).max(start), h.max_timestamp)));
            }
        }
        Ok(None)
    }

    /// The batch holding the largest timestamp in the log: its base offset
    /// and that timestamp (ListOffsets' MAX_TIMESTAMP).
    pub async fn max_timestamp_offset(&self) -> Result<Option<(u64, i64)>, LogError> {
        let max = self
            .state
            .borrow()
            .segments()
            .map(|s| s.max_timestamp)
            .max();
        match max {
            Some(t) if t >= 0 => self.offset_for_timestamp(t).await,
            _ => Ok(None),
        }
    }

    /// Remove every record at or after `offset` (Raft log truncation). Cuts
    /// at the start of the batch that holds `offset`; returns the new log end.
    pub async fn truncate_to(self: &Rc<Self>, offset: u64) -> Result<u64, LogError> {
        let _guard = self.lock_settled().await;
        self.check_failed()?;
        let (end, first_base) = {
            let st = self.state.borrow();
            (st.log_end_offset(), st.segment(0).base_offset)
        };
        if offset >= end {
            return Ok(end);
        }
        if offset <= first_base.max(self.log_start_offset()) {
            self.reset_to(offset).await?;
            return Ok(self.log_end_offset());
        }
        let (i, file, base, from, size) = {
            let st = self.state.borrow();
            let mut i = st.segment_index_for(offset);
            // Cutting at a segment's first batch empties it: keep the previous one.
            while i > 0 && st.segment(i).base_offset >= offset {
                i -= 1;
            }
            let s = st.segment(i);
            let rel = s.relative(offset).unwrap_or(u32::MAX);
            let from = s.index.floor(rel).map_or(0, |(_, p)| p as u64);
            (i, s.file.clone(), s.base_offset, from, s.size)
        };
        let path = self.path(base, LOG_SUFFIX);
        // Find where the batch holding `offset` starts.
        let cut = scan_headers(&file, from, size, |h| h.last_offset() as u64 >= offset)
            .await
            .map_err(io_err(&path))?;
        let (cut_pos, next_offset) = match cut {
            Some(h) if h.position == 0 => (0, base),
            Some(h) => {
                // The log now ends after the last batch kept. Without holes
                // that is the cut batch's base; after compaction it may lie
                // lower, and recovery would find that lower end in the data,
                // so use it here too.
                let from = {
                    let st = self.state.borrow();
                    let rel = (h.base_offset as u64).saturating_sub(base + 1);
                    let rel = u32::try_from(rel).unwrap_or(u32::MAX);
                    st.segment(i).index.floor(rel).map_or(0, |(_, p)| p as u64)
                };
                let mut last = None;
                scan_headers(&file, from, h.position, |x| {
                    last = Some(x.last_offset() as u64);
                    false
                })
                .await
                .map_err(io_err(&path))?;
                (h.position, last.map_or(base, |l| l + 1))
            }
            None => (size, self.state.borrow().segment(i).next_offset),
        };
        // Recompute the max timestamp of what remains: scan after the last
        // time-index entry that survives.
        let max_ts = {
            let st = self.state.borrow();
            let s = st.segment(i);
            let mut t = s.clone();
            t.trim_indexes(s.relative(next_offset).unwrap_or(u32::MAX));
            let last = t.time_index.last();
            let from_rel = last.map_or(0, |(_, r)| r);
            let from = s.index.floor(from_rel).map_or(0, |(_, p)| p as u64);
            (from, last.map_or(-1, |(ts, _)| ts))
        };
        let mut max_timestamp = max_ts.1;
        scan_headers(&file, max_ts.0, cut_pos, |h| {
            max_timestamp = max_timestamp.max(h.max_timestamp);
            false
        })
        .await
        .map_err(io_err(&path))?;
        // Snapshots past the cut describe batches about to go: remove them
        // first, so a crash in between cannot leave one behind.
        self.remove_producer_snapshots(|o| o > next_offset).await?;
        let gone = self
            .state
            .borrow_mut()
            .truncate(i, cut_pos, next_offset, max_timestamp);
        self.reservation_done().await;
        file.set_len(cut_pos).await.map_err(io_err(&path))?;
        file.sync_data().await.map_err(io_err(&path))?;
        // The in-memory trim above forgot the cut batches but also every
        // producer whose whole window was cut; the remaining log knows
        // their earlier batches.
        let producers = self.rebuild_producers().await?;
        self.state.borrow_mut().set_producers(producers);
        for b in [INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
            self.storage
                .remove(&self.path(base, b))
                .await
                .map_err(io_err(&path))?;
        }
        self.delete_segment_files(gone.iter().map(|s| s.base_offset))
            .await?;
        self.wake_readers();
        tracing::info!(dir = %self.dir.display(), offset, new_end = next_offset, "log truncated");
        Ok(next_offset)
    }

    /// Producer state rebuilt after a truncation: from the latest snapshot
    /// that still applies, then the batch headers of the segments after it
    /// (without a snapshot: of the whole log, read once, sequentially).
    async fn rebuild_producers(&self) -> Result<ProducerStates, LogError> {
        let segments: Vec<(S::File, u64, u64)> = self
            .state
            .borrow()
            .segments()
            .map(|s| (s.file.clone(), s.base_offset, s.size))
            .collect();
        let names = self
            .storage
            .list(&self.dir)
            .await
            .map_err(io_err(&self.dir))?;
        let bases: Vec<u64> = segments.iter().map(|s| s.1).collect();
        let (from, mut producers) =
            match load_latest_snapshot(&self.storage, &self.dir, &names, &bases).await {
                Some((at, p)) => (at, p),
                None => (0, ProducerStates::new()),
            };
        for (file, base, size) in segments.into_iter().filter(|s| s.1 >= from) {
            replay_headers(&file, size, &mut producers)
                .await
                .map_err(io_err(&self.path(base, LOG_SUFFIX)))?;
        }
        Ok(producers)
    }

    /// Write the producer state as the snapshot for offset `at` and keep
    /// only the two newest snapshots. Failure is logged, not returned: a
    /// missing or torn snapshot only makes the next open walk more of the
    /// log (a torn one fails its checksum).
    async fn write_producer_snapshot(&self, at: u64, bytes: Vec<u8>) {
        let path = self.path(at, PRODUCER_SNAPSHOT_SUFFIX);
        let written = async {
            let f = self.storage.open(&path, true).await?;
            f.set_len(0).await?;
            f.write_all_at(0, vec![Bytes::from(bytes)]).await?;
            f.sync_data().await
        }
        .await;
        if let Err(e) = written {
            tracing::warn!(path = %path.display(), "writing producer snapshot: {e}");
            let _ = self.storage.remove(&path).await;
            return;
        }
        let mut older: Vec<u64> = match self.storage.list(&self.dir).await {
            Ok(names) => names
                .iter()
                .filter_map(|n| segment::parse_file_name(n, PRODUCER_SNAPSHOT_SUFFIX))
                .filter(|&o| o < at)
                .collect(),
            Err(_) => Vec::new(),
        };
        older.sort_unstable();
        older.pop(); // keep the one before, too
        for o in older {
            let _ = self
                .storage
                .remove(&self.path(o, PRODUCER_SNAPSHOT_SUFFIX))
                .await;
        }
    }

    /// Remove the producer snapshots whose offset `doomed` selects.
    async fn remove_producer_snapshots(
        &self,
        doomed: impl Fn(u64) -> bool,
    ) -> Result<(), LogError> {
        let names = self
            .storage
            .list(&self.dir)
            .await
            .map_err(io_err(&self.dir))?;
        let mut removed = false;
        for o in names
            .iter()
            .filter_map(|n| segment::parse_file_name(n, PRODUCER_SNAPSHOT_SUFFIX))
            .filter(|&o| doomed(o))
        {
            let p = self.path(o, PRODUCER_SNAPSHOT_SUFFIX);
            self.storage.remove(&p).await.map_err(io_err(&p))?;
            removed = true;
        }
        if removed {
            self.storage
                .sync_dir(&self.dir)
                .await
                .map_err(io_err(&self.dir))?;
        }
        Ok(())
    }

    /// A copy of the idempotent producers' state (tests, diagnostics).
    pub fn producer_states(&self) -> ProducerStates {
        self.state.borrow().producers().clone()
    }

    /// A new, empty `.log` for a segment at `base`; its name is not yet
    /// durable (the caller syncs the directory).
    async fn create_segment_file(&self, base: u64) -> Result<S::File, LogError> {
        let path = self.path(base, LOG_SUFFIX);
        let file = self
            .storage
            .open(&path, true)
            .await
            .map_err(io_err(&path))?;
        file.set_len(0).await.map_err(io_err(&path))?;
        Ok(file)
    }

    /// Drop every segment and start empty at `offset`.
    async fn reset_to(self: &Rc<Self>, offset: u64) -> Result<(), LogError> {
        self.remove_producer_snapshots(|_| true).await?;
        let old: Vec<u64> = self.segment_bases();
        // The new segment may reuse the name of the first old one.
        self.delete_segment_files(old.iter().copied()).await?;
        let file = self.create_segment_file(offset).await?;
        self.storage
            .sync_dir(&self.dir)
            .await
            .map_err(io_err(&self.dir))?;
        let now = self.storage.now_ms();
        self.state
            .borrow_mut()
            .reset(Segment::new(offset, file, now));
        Ok(())
    }

    async fn delete_segment_files(&self, bases: impl Iterator<Item = u64>) -> Result<(), LogError> {
        for base in bases {
            for suffix in [LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
                let p = self.path(base, suffix);
                self.storage.remove(&p).await.map_err(io_err(&p))?;
            }
        }
        self.storage
            .sync_dir(&self.dir)
            .await
            .map_err(io_err(&self.dir))
    }

    /// Apply `retention.ms` / `retention.bytes`: delete whole old segments,
    /// never the active one. Returns how many were deleted. Idle
    /// idempotent producers expire on the same pass.
    pub async fn enforce_retention(self: &Rc<Self>) -> Result<usize, LogError> {
        let _guard = self.lock_settled().await;
        let now = self.storage.now_ms();
        let expired = self.state.borrow_mut().expire_producers(now);
        if expired > 0 {
            tracing::debug!(dir = %self.dir.display(), expired, "idle producers expired");
        }
        let n = self.state.borrow().retention_victims(now);
        if n == 0 {
            return Ok(0);
        }
        let gone = self.state.borrow_mut().remove_oldest(n);
        self.delete_segment_files(gone.iter().map(|s| s.base_offset))
            .await?;
        tracing::info!(dir = %self.dir.display(), segments = n, log_start = self.log_start_offset(), "retention deleted segments");
        Ok(n)
    }

    /// Flush and stop; the files stay for the next open.
    pub async fn close(self: &Rc<Self>) -> Result<(), LogError> {
        let _guard = self.lock_settled().await;
        if self.failed.borrow().is_none() {
            self.flush().await?;
        }
        Ok(())
    }

    /// Delete the partition: its directory and every file in it.
    pub async fn delete(self: &Rc<Self>) -> Result<(), LogError> {
        let _guard = self.lock_settled().await;
        self.refuse_writes("partition deleted".into());
        self.storage
            .remove_dir_all(&self.dir)
            .await
            .map_err(io_err(&self.dir))
    }
}

/// A batch header with the position it was found at.
#[derive(Debug, Clone, Copy)]
struct PositionedHeader {
    position: u64,
    header: batch::BatchHeader,
}

impl std::ops::Deref for PositionedHeader {
    type Target = batch::BatchHeader;
    fn deref(&self) -> &batch::BatchHeader {
        &self.header
    }
}

const SCAN_CHUNK: usize = 1 << 20;

/// Walk batch headers of `file` in `[from, to)` in chunks, returning the
/// first for which `want` is true.
async fn scan_headers<F: StorageFile>(
    file: &F,
    from: u64,
    to: u64,
    mut want: impl FnMut(&batch::BatchHeader) -> bool,
) -> std::io::Result<Option<PositionedHeader>> {
    let mut pos = from;
    while pos + HEADER_LEN as u64 <= to {
        let len = SCAN_CHUNK.min((to - pos) as usize);
        let chunk = file.read_at(pos, len).await?;
        let mut at = 0usize;
        let mut progressed = false;
        while let Ok(h) = batch::BatchHeader::parse(&chunk[at..]) {
            if h.batch_length < batch::MIN_BATCH_LENGTH as i32 {
                return Ok(None);
            }
            if want(&h) {
                return Ok(Some(PositionedHeader {
                    position: pos + at as u64,
                    header: h,
                }));
            }
            at += h.size();
            progressed = true;
            if at >= chunk.len() {
                break;
            }
        }
        if !progressed {
            return Ok(None);
        }
        pos += at as u64;
    }
    Ok(None)
}

/// Write (replacing) a sealed segment's `.index` and `.timeindex`, synced.
async fn write_indexes<S: Storage>(
    storage: &S,
    dir: &Path,
    seg: &Segment<S::File>,
) -> Result<(), LogError> {
    let files = [
        (INDEX_SUFFIX, seg.index.encode()),
        (TIME_INDEX_SUFFIX, seg.time_index.encode()),
    ];
    for (suffix, bytes) in files {
        let path = dir.join(segment::file_name(seg.base_offset, suffix));
        let f = storage.open(&path, true).await.map_err(io_err(&path))?;
        f.set_len(0).await.map_err(io_err(&path))?;
        f.write_all_at(0, vec![Bytes::from(bytes)])
            .await
            .map_err(io_err(&path))?;
        f.sync_data().await.map_err(io_err(&path))?;
    }
    Ok(())
}

/// Open every segment in `dir`: trust sealed segments whose indexes load
/// and agree with the data, scan the rest, cut a bad tail.
///
/// Producer state is rebuilt on the way, from the newest producer snapshot
/// (written at each roll, so it covers every sealed segment) plus the batch
/// headers after it, in log order (no record is decoded): the active
/// segment's recovery scan feeds it. Only without a usable snapshot (logs
/// from before snapshots, a torn or damaged one, or data cut below it) are
/// all sealed segments walked: one sequential read of the whole log.
async fn recover<S: Storage>(
    storage: &S,
    dir: &Path,
    config: &LogConfig,
) -> Result<(Vec<Segment<S::File>>, ProducerStates, RecoveryReport), LogError> {
    storage.create_dir_all(dir).await.map_err(io_err(dir))?;
    let mut names = storage.list(dir).await.map_err(io_err(dir))?;
    if compaction::finish_swaps(storage, dir, &names).await? {
        names = storage.list(dir).await.map_err(io_err(dir))?;
    }
    let mut bases: Vec<u64> = names
        .iter()
        .filter_map(|n| segment::parse_file_name(n, LOG_SUFFIX))
        .collect();
    bases.sort_unstable();
    // State below `snap_at` comes from the snapshot; batches below it that a
    // scan meets go to `scratch`. Any cut or drop below it voids it.
    let (snap_at, mut producers) = match load_latest_snapshot(storage, dir, &names, &bases).await {
        Some((at, p)) => (Some(at), p),
        None => (None, ProducerStates::new()),
    };
    let mut scratch = ProducerStates::new();
    let mut snapshot_ok = true;
    let below_snapshot = |base: u64| snap_at.is_some_and(|at| base < at);
    let now = storage.now_ms();
    let mut report = RecoveryReport::default();
    let mut segments: Vec<Segment<S::File>> = Vec::new();
    let mut cut = false;
    for (k, &base) in bases.iter().enumerate() {
        let path = dir.join(segment::file_name(base, LOG_SUFFIX));
        if cut
            || segments
                .last()
                .is_some_and(|s: &Segment<_>| base < s.next_offset)
        {
            // Follows a corrupt segment, or overlaps the one before: drop it.
            report.dropped_segments += 1;
            snapshot_ok &= !below_snapshot(base);
            for suffix in [LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
                let p = dir.join(segment::file_name(base, suffix));
                storage.remove(&p).await.map_err(io_err(&p))?;
            }
            continue;
        }
        let file = storage.open(&path, false).await.map_err(io_err(&path))?;
        let len = file.len().await.map_err(io_err(&path))?;
        let mut seg = Segment::new(base, file.clone(), now);
        let is_last = k + 1 == bases.len();
        let next_base = bases.get(k + 1).copied();
        if !is_last {
            if let Some(next_base) = next_base {
                if load_indexes(storage, dir, &mut seg, len, next_base).await {
                    if !below_snapshot(base) {
                        replay_headers(&file, seg.size, &mut producers)
                            .await
                            .map_err(io_err(&path))?;
                    }
                    segments.push(seg);
                    continue;
                }
                report.rebuilt_indexes += 1;
            }
        }
        report.scanned_segments += 1;
        let feed = if below_snapshot(base) {
            &mut scratch
        } else {
            &mut producers
        };
        let stop = scan_file(&file, &mut seg, len, config.index_interval_bytes, feed)
            .await
            .map_err(io_err(&path))?;
        if let Some(why) = stop {
            snapshot_ok &= !below_snapshot(base);
            report.truncated_bytes += len - seg.size;
            report.reason = Some(why);
            file.set_len(seg.size).await.map_err(io_err(&path))?;
            file.sync_data().await.map_err(io_err(&path))?;
            cut = true;
            tracing::warn!(path = %path.display(), cut = len - seg.size, reason = report.reason.as_deref().unwrap_or(""), "recovery truncated a bad tail");
        }
        if !is_last {
            seg.seal();
            if !cut {
                // Rebuilt indexes are kept, so the next open trusts them.
                write_indexes(storage, dir, &seg).await?;
            }
        }
        segments.push(seg);
    }
    // An empty segment before the last holds nothing and would leave an
    // offset range with no data: drop it (the log starts later).
    let last_base = segments.last().map(|s| s.base_offset);
    let mut kept = Vec::with_capacity(segments.len());
    for seg in segments {
        if seg.is_empty() && Some(seg.base_offset) != last_base {
            report.dropped_segments += 1;
            for suffix in [LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
                let p = dir.join(segment::file_name(seg.base_offset, suffix));
                storage.remove(&p).await.map_err(io_err(&p))?;
            }
        } else {
            kept.push(seg);
        }
    }
    let mut segments = kept;
    // Remove index files that have no segment.
    for n in &names {
        let orphan = [INDEX_SUFFIX, TIME_INDEX_SUFFIX].iter().any(|sfx| {
            segment::parse_file_name(n, sfx)
                .is_some_and(|b| !segments.iter().any(|s| s.base_offset == b))
        });
        if orphan {
            let p = dir.join(n);
            storage.remove(&p).await.map_err(io_err(&p))?;
        }
    }
    if let Some(last) = segments.last_mut() {
        last.sealed = false;
        last.created_ms = now;
        if cut || report.dropped_segments > 0 {
            // Indexes of the (now) active segment are rebuilt in memory; stale files go.
            for sfx in [INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
                let p = dir.join(segment::file_name(last.base_offset, sfx));
                storage.remove(&p).await.map_err(io_err(&p))?;
            }
        }
        // What recovery kept is what is durable from now on.
        let p = dir.join(segment::file_name(last.base_offset, LOG_SUFFIX));
        last.file.sync_data().await.map_err(io_err(&p))?;
    } else {
        let p = dir.join(segment::file_name(0, LOG_SUFFIX));
        let file = storage.open(&p, true).await.map_err(io_err(&p))?;
        storage.sync_dir(dir).await.map_err(io_err(dir))?;
        segments.push(Segment::new(0, file, now));
    }
    if let Some(at) = snap_at {
        let end = segments.last().map_or(0, |s| s.next_offset);
        if snapshot_ok && segments.iter().any(|s| s.base_offset == at) {
            report.producer_snapshot = Some(at);
        } else {
            tracing::warn!(dir = %dir.display(), snapshot = at, "producer snapshot does not match the recovered log; walking every segment");
            producers = ProducerStates::new();
            for seg in &segments {
                let p = dir.join(segment::file_name(seg.base_offset, LOG_SUFFIX));
                replay_headers(&seg.file, seg.size, &mut producers)
                    .await
                    .map_err(io_err(&p))?;
            }
        }
        // Snapshots past the recovered end describe data that is gone.
        for o in names
            .iter()
            .filter_map(|n| segment::parse_file_name(n, PRODUCER_SNAPSHOT_SUFFIX))
            .filter(|&o| o > end)
        {
            let p = dir.join(segment::file_name(o, PRODUCER_SNAPSHOT_SUFFIX));
            storage.remove(&p).await.map_err(io_err(&p))?;
        }
    }
    report.segments = segments.len();
    Ok((segments, producers, report))
}

/// Replay the producer state of every batch header in `file` below `size`.
async fn replay_headers<F: StorageFile>(
    file: &F,
    size: u64,
    producers: &mut ProducerStates,
) -> std::io::Result<()> {
    scan_headers(file, 0, size, |h| {
        producers.replay(h);
        false
    })
    .await
    .map(|_| ())
}

/// The newest producer snapshot in `names` that sits at a segment base
/// and decodes: its offset and state. Bad ones are skipped (and logged).
async fn load_latest_snapshot<S: Storage>(
    storage: &S,
    dir: &Path,
    names: &[String],
    bases: &[u64],
) -> Option<(u64, ProducerStates)> {
    let mut offsets: Vec<u64> = names
        .iter()
        .filter_map(|n| segment::parse_file_name(n, PRODUCER_SNAPSHOT_SUFFIX))
        .filter(|o| bases.contains(o))
        .collect();
    offsets.sort_unstable();
    for at in offsets.into_iter().rev() {
        let p = dir.join(segment::file_name(at, PRODUCER_SNAPSHOT_SUFFIX));
        let read = async {
            let f = storage.open(&p, false).await?;
            let n = f.len().await?;
            // Bounded: at most 64 MiB of state (a million producers).
            if n > 64 << 20 {
                return Err(std::io::Error::other("snapshot too large"));
            }
            f.read_at(0, n as usize).await
        };
        match read.await {
            Ok(bytes) => match ProducerStates::decode_snapshot(&bytes) {
                Ok((o, p)) if o == at => return Some((at, p)),
                Ok((o, _)) => {
                    tracing::warn!(path = %p.display(), covers = o, "producer snapshot names another offset; ignored")
                }
                Err(e) => tracing::warn!(path = %p.display(), "producer snapshot ignored: {e}"),
            },
            Err(e) => tracing::warn!(path = %p.display(), "reading producer snapshot: {e}"),
        }
    }
    None
}

/// Load a sealed segment's indexes; true if they are consistent with the
/// data (the last index entry points at a batch with the right offset).
async fn load_indexes<S: Storage>(
    storage: &S,
    dir: &Path,
    seg: &mut Segment<S::File>,
    len: u64,
    next_base: u64,
) -> bool {
    let base = seg.base_offset;
    let Some(rel_limit) = next_base.checked_sub(base) else {
        return false;
    };
    let read_all = |suffix: &'static str| async move {
        let p = dir.join(segment::file_name(base, suffix));
        let f = storage.open(&p, false).await.ok()?;
        let n = f.len().await.ok()?;
        // An index larger than its segment could describe is bad, not a reason to allocate.
        if n > len.saturating_mul(2) + 4096 {
            return None;
        }
        f.read_at(0, n as usize).await.ok()
    };
    let (Some(ix), Some(tx)) = (
        read_all(INDEX_SUFFIX).await,
        read_all(TIME_INDEX_SUFFIX).await,
    ) else {
        return false;
    };
    let (Ok(index), Ok(time_index)) = (
        OffsetIndex::decode(&ix, len, rel_limit),
        TimeIndex::decode(&tx, rel_limit),
    ) else {
        return false;
    };
    let Some((rel, pos)) = index.last() else {
        return false;
    };
    let Ok(head) = seg.file.read_at(pos as u64, HEADER_LEN).await else {
        return false;
    };
    let Ok(h) = batch::BatchHeader::parse(&head) else {
        return false;
    };
    if h.base_offset != (base + rel as u64) as i64
        || h.magic != 2
        || pos as u64 + h.size() as u64 > len
    {
        return false;
    }
    // The segment may end after the last indexed batch. If its batches run
    // into the next segment's offsets, the pair is inconsistent: refuse, so
    // the scan drops the overlapping segment.
    let Some(next_offset) = last_offset_from(seg, pos as u64, len).await else {
        return false;
    };
    if next_offset > next_base {
        return false;
    }
    seg.restore(len, next_offset, index, time_index);
    true
}

/// Offset after the last batch, walking headers from `pos` to `len`;
/// `None` if the headers' offsets are not increasing within the segment
/// (then the segment is scanned and checked batch by batch instead).
async fn last_offset_from<F: StorageFile>(seg: &Segment<F>, pos: u64, len: u64) -> Option<u64> {
    let mut next = seg.base_offset;
    let mut ok = true;
    let mut seen = false;
    scan_headers(&seg.file, pos, len, |h| {
        let fits = h.base_offset >= 0 && h.base_offset as u64 >= next && h.last_offset() < i64::MAX;
        if !fits {
            ok = false;
            return true; // stop
        }
        next = h.last_offset() as u64 + 1;
        seen = true;
        false
    })
    .await
    .ok()?;
    (ok && seen).then_some(next)
}

/// Validate every batch of a segment file (CRC included) in chunks,
/// building its indexes and replaying producer state. Returns why it
/// stopped early, if it did.
async fn scan_file<F: StorageFile>(
    file: &F,
    seg: &mut Segment<F>,
    len: u64,
    index_interval: u32,
    producers: &mut ProducerStates,
) -> std::io::Result<Option<String>> {
    while seg.size < len {
        let pos = seg.size;
        let head = file
            .read_at(pos, HEADER_LEN.min((len - pos) as usize))
            .await?;
        let need = match batch::BatchHeader::parse(&head) {
            Ok(h) if h.batch_length >= batch::MIN_BATCH_LENGTH as i32 => h.size() as u64,
            Ok(h) => {
                return Ok(Some(format!(
                    "batch length {} at position {pos}",
                    h.batch_length
                )))
            }
            Err(e) => return Ok(Some(format!("{e} at position {pos}"))),
        };
        if pos + need > len {
            return Ok(Some(format!(
                "batch at position {pos} runs past the end of the file"
            )));
        }
        // Read whole batches, up to a chunk at a time (a bigger batch alone).
        let want = need.max(SCAN_CHUNK as u64).min(len - pos) as usize;
        let chunk = file.read_at(pos, want).await?;
        let mut at = 0usize;
        while at < chunk.len() {
            match seg.scan_next(&chunk[at..], index_interval) {
                Ok(n) => {
                    if let Ok(h) = batch::BatchHeader::parse(&chunk[at..]) {
                        producers.replay(&h);
                    }
                    at += n;
                }
                Err(_) if at > 0 => break, // maybe cut by the chunk: reread from here
                Err(e) => return Ok(Some(format!("{e} at position {pos}"))),
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests;
