//! Thread-per-core shards.
//!
//! A [`ShardPool`] runs one thread per shard (default: one per CPU), each
//! pinned to its core with its own compio io_uring runtime. A shard owns a
//! set of partition logs and is the only thread that touches them: other
//! threads send it closures ([`ShardPool::run_on`]) and get the answer back
//! over a channel. Nothing on the data path takes a lock shared between
//! threads.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::io::uring::UringStorage;
use crate::log::{LogConfig, LogError, PartitionLog, RecoveryReport};

/// A partition of a topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    pub topic: Arc<str>,
    pub partition: i32,
}

impl TopicPartition {
    pub fn new(topic: &str, partition: i32) -> Self {
        Self {
            topic: topic.into(),
            partition,
        }
    }

    /// The partition's directory name, as Kafka names it.
    pub fn dir_name(&self) -> String {
        format!("{}-{}", self.topic, self.partition)
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

/// Settings of the shard pool.
#[derive(Debug, Clone)]
pub struct ShardConfig {
    /// Number of shards; 0 means one per available CPU.
    pub shards: usize,
    /// Pin shard `i` to CPU `i % cpus`.
    pub pin: bool,
    /// Partition directories live under here.
    pub data_dir: PathBuf,
    /// How often time-based flushes are checked.
    pub tick: Duration,
    /// How often retention runs (Kafka's `log.retention.check.interval.ms`).
    pub retention_check: Duration,
    /// How often compacted partitions are checked for cleaning (Kafka's
    /// `log.cleaner.backoff.ms`); a partition is compacted when its dirty
    /// ratio reached `min.cleanable.dirty.ratio`.
    pub cleaner_backoff: Duration,
    /// Page cache a shard's partitions keep of their newest durable data,
    /// shared evenly among them (at least [`MIN_CACHE_WINDOW`] each); older
    /// pages are dropped once synced, so the cache recycles memory (see
    /// `PartitionLog::set_cache_window`). `None` leaves caching to the OS.
    pub cache_bytes: Option<u64>,
}

/// Default of [`ShardConfig::cache_bytes`].
pub const DEFAULT_SHARD_CACHE_BYTES: u64 = 1 << 30;
/// The least cache window a partition gets, however many share a shard.
pub const MIN_CACHE_WINDOW: u64 = 16 << 20;

impl ShardConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            shards: 0,
            pin: true,
            data_dir: data_dir.into(),
            tick: Duration::from_millis(10),
            retention_check: Duration::from_secs(300),
            cleaner_backoff: Duration::from_secs(15),
            cache_bytes: Some(DEFAULT_SHARD_CACHE_BYTES),
        }
    }
}

/// The log type shards hold.
pub type Log = PartitionLog<UringStorage>;

/// The state of one shard, reachable only from its own thread.
pub struct Shard {
    pub id: usize,
    /// The other shards (and this one), for work that crosses them.
    pub peers: Shards,
    pub storage: UringStorage,
    data_dir: PathBuf,
    partitions: RefCell<HashMap<TopicPartition, Rc<Log>>>,
    cache_bytes: Option<u64>,
}

impl Shard {
    /// The open log of `tp`, if this shard has it.
    pub fn partition(&self, tp: &TopicPartition) -> Option<Rc<Log>> {
        self.partitions.borrow().get(tp).cloned()
    }

    pub fn partitions(&self) -> Vec<(TopicPartition, Rc<Log>)> {
        let map = self.partitions.borrow();
        let mut v: Vec<_> = map.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Open (creating or recovering) the log of `tp`; returns the open one
    /// if it is already open.
    pub async fn open_partition(
        &self,
        tp: &TopicPartition,
        config: LogConfig,
    ) -> Result<(Rc<Log>, Option<RecoveryReport>), LogError> {
        if let Some(log) = self.partition(tp) {
            return Ok((log, None));
        }
        let dir = self.data_dir.join(tp.dir_name());
        let (log, report) = PartitionLog::open(self.storage.clone(), dir, config).await?;
        // Another task may have opened it while we recovered.
        let log = self
            .partitions
            .borrow_mut()
            .entry(tp.clone())
            .or_insert(log)
            .clone();
        self.share_cache();
        Ok((log, Some(report)))
    }

    /// Split the cache budget evenly among the open partitions.
    fn share_cache(&self) {
        let parts = self.partitions.borrow();
        let n = parts.len().max(1) as u64;
        let window = self.cache_bytes.map(|b| (b / n).max(MIN_CACHE_WINDOW));
        for log in parts.values() {
            log.set_cache_window(window);
        }
    }

    /// Close and delete the log of `tp` with its files. False if absent.
    pub async fn delete_partition(&self, tp: &TopicPartition) -> Result<bool, LogError> {
        let log = self.partitions.borrow_mut().remove(tp);
        self.share_cache();
        match log {
            Some(log) => log.delete().await.map(|_| true),
            None => Ok(false),
        }
    }

    async fn close_all(&self) {
        let logs: Vec<_> = self.partitions.borrow_mut().drain().collect();
        for (tp, log) in logs {
            if let Err(e) = log.close().await {
                tracing::error!(partition = %tp, "close failed: {e}");
            }
        }
    }
}

type Job = Box<dyn FnOnce(Rc<Shard>) -> Pin<Box<dyn Future<Output = ()>>> + Send>;

enum Msg {
    Job(Job),
    Stop,
}

/// The shard is gone (shut down or its thread died).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("shard {0} is not running")]
pub struct ShardGone(pub usize);

/// A cheap, cloneable, `Send` handle to the running shards: what any thread
/// (or a task on another shard) uses to reach them.
#[derive(Clone)]
pub struct Shards {
    senders: Arc<[flume::Sender<Msg>]>,
}

impl Shards {
    pub fn len(&self) -> usize {
        self.senders.len()
    }

    pub fn is_empty(&self) -> bool {
        self.senders.is_empty()
    }

    /// The shard that owns `tp`: a stable hash of topic and partition.
    pub fn owner_of(&self, tp: &TopicPartition) -> usize {
        owner_of(tp, self.len())
    }

    fn send_job<T, F, Fut>(&self, shard: usize, f: F) -> Result<flume::Receiver<T>, ShardGone>
    where
        T: Send + 'static,
        F: FnOnce(Rc<Shard>) -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
    {
        let (tx, rx) = flume::bounded(1);
        let job: Job = Box::new(move |s| {
            Box::pin(async move {
                let _ = tx.send(f(s).await);
            })
        });
        let sender = self.senders.get(shard).ok_or(ShardGone(shard))?;
        sender.send(Msg::Job(job)).map_err(|_| ShardGone(shard))?;
        Ok(rx)
    }

    /// Run `f` on shard `shard` and get its result back. The closure is
    /// sent to the shard thread; the future it returns runs there as its
    /// own task, beside the shard's other work.
    pub fn run_on<T, F, Fut>(
        &self,
        shard: usize,
        f: F,
    ) -> impl Future<Output = Result<T, ShardGone>> + Send + 'static
    where
        T: Send + 'static,
        F: FnOnce(Rc<Shard>) -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
    {
        let rx = self.send_job(shard, f);
        async move { rx?.recv_async().await.map_err(|_| ShardGone(shard)) }
    }

    /// [`Self::run_on`] for a plain (non-shard) thread: blocks for the answer.
    pub fn call<T, F, Fut>(&self, shard: usize, f: F) -> Result<T, ShardGone>
    where
        T: Send + 'static,
        F: FnOnce(Rc<Shard>) -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
    {
        self.send_job(shard, f)?
            .recv()
            .map_err(|_| ShardGone(shard))
    }
}

/// A running set of shards; dropping it stops them.
pub struct ShardPool {
    shards: Shards,
    threads: Vec<JoinHandle<()>>,
}

impl std::ops::Deref for ShardPool {
    type Target = Shards;
    fn deref(&self) -> &Shards {
        &self.shards
    }
}

impl ShardPool {
    /// Start the shard threads; each builds its ring before this returns.
    pub fn start(config: ShardConfig) -> std::io::Result<Self> {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let n = if config.shards == 0 {
            cpus
        } else {
            config.shards
        };
        let (senders, receivers): (Vec<_>, Vec<_>) =
            (0..n).map(|_| flume::unbounded::<Msg>()).unzip();
        let shards = Shards {
            senders: senders.into(),
        };
        let mut threads = Vec::with_capacity(n);
        let (ready_tx, ready_rx) = flume::bounded::<std::io::Result<()>>(n);
        for (id, rx) in receivers.into_iter().enumerate() {
            let cfg = config.clone();
            let ready = ready_tx.clone();
            let peers = shards.clone();
            let handle = std::thread::Builder::new()
                .name(format!("odradek-shard-{id}"))
                .spawn(move || run_shard(id, id % cpus, cfg, peers, rx, ready))?;
            threads.push(handle);
        }
        drop(ready_tx);
        let pool = Self { shards, threads };
        for _ in 0..n {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(std::io::Error::other("a shard thread died while starting")),
            }
        }
        tracing::info!(shards = n, "shards started");
        Ok(pool)
    }

    /// A handle to the shards for other threads.
    pub fn handle(&self) -> Shards {
        self.shards.clone()
    }

    /// Flush and close every partition, then stop the threads.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        for s in self.shards.senders.iter() {
            let _ = s.send(Msg::Stop);
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for ShardPool {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Owner shard of `tp` among `shards` (FNV-1a; stable across restarts).
pub fn owner_of(tp: &TopicPartition, shards: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in tp.topic.bytes().chain(tp.partition.to_be_bytes()) {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % shards.max(1) as u64) as usize
}

fn run_shard(
    id: usize,
    cpu: usize,
    cfg: ShardConfig,
    peers: Shards,
    rx: flume::Receiver<Msg>,
    ready: flume::Sender<std::io::Result<()>>,
) {
    let mut builder = compio::runtime::RuntimeBuilder::new();
    if cfg.pin {
        builder.thread_affinity([cpu].into_iter().collect());
    }
    let rt = match builder.build() {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let shard = Rc::new(Shard {
        id,
        peers,
        storage: UringStorage,
        data_dir: cfg.data_dir.clone(),
        partitions: RefCell::new(HashMap::new()),
        cache_bytes: cfg.cache_bytes,
    });
    let _ = ready.send(Ok(()));
    drop(ready);
    rt.block_on(async {
        let ticker = {
            let shard = shard.clone();
            compio::runtime::spawn(async move {
                let every = cfg.tick.max(Duration::from_millis(1));
                let retention_every = (cfg.retention_check.as_millis() / every.as_millis()).max(1);
                let cleaner_every = (cfg.cleaner_backoff.as_millis() / every.as_millis()).max(1);
                let mut n: u128 = 0;
                loop {
                    compio::time::sleep(every).await;
                    n += 1;
                    for (_, log) in shard.partitions() {
                        log.tick();
                        if n.is_multiple_of(retention_every) {
                            let log = log.clone();
                            compio::runtime::spawn(async move {
                                if let Err(e) = log.enforce_retention().await {
                                    tracing::error!("retention failed: {e}");
                                }
                            })
                            .detach();
                        }
                        if n.is_multiple_of(cleaner_every) && log.config().cleanup_policy.compact {
                            // Its own task: it reads and yields in chunks, and
                            // holds the append lock only to swap a segment in.
                            let log = log.clone();
                            compio::runtime::spawn(async move {
                                if let Err(e) = log.maybe_compact().await {
                                    tracing::error!(dir = %log.dir().display(), "compaction failed: {e}");
                                }
                            })
                            .detach();
                        }
                    }
                }
            })
        };
        while let Ok(msg) = rx.recv_async().await {
            match msg {
                Msg::Job(job) => compio::runtime::spawn(job(shard.clone())).detach(),
                Msg::Stop => break,
            }
        }
        drop(ticker);
        shard.close_all().await;
    });
}
