//! Broker settings, with Kafka's names.
//!
//! Sources, later ones winning: embedded defaults, a TOML file
//! (`--config`; keys may be written dotted or quoted, `log.retention.ms = 1`
//! and `"log.retention.ms" = 1` are the same key), environment variables
//! (`ODRADEK_LOG_RETENTION_MS=1` sets `log.retention.ms`), then flags
//! (`--listeners`, ..., or any key with `--set key=value`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use odradek_engine::log::{CleanupPolicy, FlushPolicy, LogConfig};

/// A bad setting: which key, and why.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("unknown setting `{0}`")]
    Unknown(String),
    #[error("setting `{key}`: {why}")]
    Invalid { key: String, why: String },
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
}

/// Every setting `BrokerConfig::set` knows (aliases after their main name).
/// The sample config `node/packaging/odradek.toml` documents each one; a
/// test keeps the two in step.
pub const SETTINGS: &[&str] = &[
    "node.id",
    "broker.id",
    "listeners",
    "advertised.listeners",
    "metrics.listener",
    "log.dirs",
    "log.dir",
    "num.shards",
    "shards",
    "log.segment.bytes",
    "log.roll.ms",
    "log.roll.hours",
    "log.index.interval.bytes",
    "log.retention.ms",
    "log.retention.minutes",
    "log.retention.hours",
    "log.retention.bytes",
    "log.retention.check.interval.ms",
    "log.flush.interval.messages",
    "log.flush.interval.bytes",
    "log.flush.interval.ms",
    "log.cache.bytes.per.shard",
    "message.max.bytes",
    "socket.request.max.bytes",
    "num.partitions",
    "auto.create.topics.enable",
    "offsets.topic.num.partitions",
    "offsets.topic.segment.bytes",
    "offsets.topic.replication.factor",
    "offset.metadata.max.bytes",
    "offsets.retention.minutes",
    "offsets.retention.check.interval.ms",
    "group.min.session.timeout.ms",
    "group.max.session.timeout.ms",
    "group.initial.rebalance.delay.ms",
    "log.cleanup.policy",
    "log.cleaner.delete.retention.ms",
    "log.cleaner.min.cleanable.ratio",
    "log.cleaner.min.compaction.lag.ms",
    "log.cleaner.backoff.ms",
    "controller.quorum.voters",
    "cluster.brokers",
    "default.replication.factor",
    "min.insync.replicas",
    "replica.lag.time.max.ms",
];

/// Shards to run for `num.shards = n`: `n`, or for 0 one per CPU but one
/// (at least one). The CPU left over runs what the kernel does for the
/// shards: network softirqs, the io-wq workers that run fdatasyncs, page
/// cache writeback. On a 2-CPU machine (one shard) that moved 2.3x the
/// acks=1 bytes of two shards at under half the broker CPU per GB, because
/// two shards also pay a cross-shard hand-off (an eventfd wake-up and a
/// context switch) for every request to a partition the other one owns
/// (docs/benchmarks.md). Not measured on larger machines.
pub fn resolve_shards(n: usize) -> usize {
    if n > 0 {
        return n;
    }
    let cpus = std::thread::available_parallelism().map_or(1, |c| c.get());
    cpus.saturating_sub(1).max(1)
}

/// Everything the broker needs to start.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// `node.id` (`broker.id`).
    pub node_id: i32,
    /// `listeners`: where to accept connections.
    pub listener: SocketAddr,
    /// `advertised.listeners`: what Metadata tells clients.
    pub advertised: (String, u16),
    /// `log.dirs`: where partition directories live.
    pub log_dir: PathBuf,
    /// `num.io.threads`-like: shards (0 = one per CPU but one, see
    /// [`resolve_shards`]).
    pub shards: usize,
    /// `num.partitions`: default partition count of new topics.
    pub num_partitions: i32,
    /// `auto.create.topics.enable`.
    pub auto_create_topics: bool,
    /// `socket.request.max.bytes`: largest request accepted.
    pub socket_request_max_bytes: usize,
    /// `message.max.bytes`: largest record batch accepted.
    pub message_max_bytes: usize,
    /// Topic defaults: `log.retention.ms`, `log.retention.bytes`,
    /// `log.segment.bytes`, `log.roll.ms`, `log.index.interval.bytes`,
    /// `log.flush.interval.messages`/`.bytes`/`.ms` (the flush policy).
    pub log_retention_ms: Option<u64>,
    pub log_retention_bytes: Option<u64>,
    pub log_segment_bytes: u64,
    pub log_roll_ms: u64,
    pub log_index_interval_bytes: u32,
    /// `log.cache.bytes.per.shard` (Odradek's; -1 = leave caching to the
    /// OS): see [`odradek_engine::shard::ShardConfig::cache_bytes`].
    pub log_cache_bytes_per_shard: Option<u64>,
    pub flush: FlushPolicy,
    /// `log.retention.check.interval.ms`.
    pub retention_check: Duration,
    /// `log.cleanup.policy`.
    pub log_cleanup_policy: CleanupPolicy,
    /// `log.cleaner.delete.retention.ms`.
    pub log_cleaner_delete_retention_ms: u64,
    /// `log.cleaner.min.cleanable.ratio`.
    pub log_cleaner_min_cleanable_ratio: f64,
    /// `log.cleaner.min.compaction.lag.ms`.
    pub log_cleaner_min_compaction_lag_ms: u64,
    /// `log.cleaner.backoff.ms`: how often compacted partitions are checked.
    pub log_cleaner_backoff: Duration,
    /// `offsets.topic.num.partitions`: partitions of `__consumer_offsets`.
    pub offsets_topic_num_partitions: i32,
    /// `offsets.topic.segment.bytes`.
    pub offsets_topic_segment_bytes: u64,
    /// `offsets.topic.replication.factor` (a cluster caps it at the live
    /// brokers when it creates the topic).
    pub offsets_topic_replication_factor: i16,
    /// `offsets.commit.metadata.max.bytes` (Kafka: `offset.metadata.max.bytes`).
    pub offset_metadata_max_bytes: usize,
    /// `group.min.session.timeout.ms`, `group.max.session.timeout.ms`.
    pub group_min_session_timeout_ms: i32,
    pub group_max_session_timeout_ms: i32,
    /// `group.initial.rebalance.delay.ms`.
    pub group_initial_rebalance_delay_ms: u64,
    /// `offsets.retention.minutes` (in ms).
    pub offsets_retention_ms: u64,
    /// `offsets.retention.check.interval.ms`.
    pub offsets_retention_check_ms: u64,
    /// `metrics.listener`: where `/metrics` and `/health` are served
    /// (`none` turns them off).
    pub metrics_listener: Option<SocketAddr>,
    /// `controller.quorum.voters` (`1@host:port,2@host:port,...`): every
    /// broker of a cluster and the address its inter-broker Raft transport
    /// listens on. Empty: a single broker without replication.
    pub voters: BTreeMap<u64, SocketAddr>,
    /// `cluster.brokers` (`1@host:port,...`): the address clients reach
    /// each broker at (what Metadata lists); defaults to the voters' hosts
    /// with this broker's advertised port for itself only.
    pub cluster_brokers: BTreeMap<u64, (String, u16)>,
    /// `default.replication.factor`.
    pub default_replication_factor: i16,
    /// `min.insync.replicas`: acks=all needs this many in the ISR.
    pub min_insync_replicas: usize,
    /// `replica.lag.time.max.ms`.
    pub replica_lag_time_max_ms: u64,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        let log = LogConfig::default();
        Self {
            node_id: 0,
            listener: "127.0.0.1:9092".parse().expect("valid default"),
            advertised: ("127.0.0.1".into(), 9092),
            log_dir: PathBuf::from("./data"),
            shards: 0,
            num_partitions: 1,
            auto_create_topics: true,
            socket_request_max_bytes: 100 * 1024 * 1024,
            message_max_bytes: log.max_batch_bytes,
            log_retention_ms: log.retention_ms,
            log_retention_bytes: log.retention_bytes,
            log_segment_bytes: log.segment_bytes,
            log_roll_ms: log.segment_ms,
            log_index_interval_bytes: log.index_interval_bytes,
            flush: log.flush,
            log_cache_bytes_per_shard: Some(odradek_engine::shard::DEFAULT_SHARD_CACHE_BYTES),
            retention_check: Duration::from_secs(300),
            log_cleanup_policy: log.cleanup_policy,
            log_cleaner_delete_retention_ms: log.delete_retention_ms,
            log_cleaner_min_cleanable_ratio: log.min_cleanable_dirty_ratio,
            log_cleaner_min_compaction_lag_ms: log.min_compaction_lag_ms,
            log_cleaner_backoff: Duration::from_secs(15),
            offsets_topic_num_partitions: 50,
            offsets_topic_segment_bytes: 100 * 1024 * 1024,
            offsets_topic_replication_factor: 3,
            offset_metadata_max_bytes: 4096,
            group_min_session_timeout_ms: 6_000,
            group_max_session_timeout_ms: 1_800_000,
            group_initial_rebalance_delay_ms: 3_000,
            offsets_retention_ms: 7 * 24 * 3_600_000,
            offsets_retention_check_ms: 600_000,
            metrics_listener: Some("127.0.0.1:9644".parse().expect("valid default")),
            voters: BTreeMap::new(),
            cluster_brokers: BTreeMap::new(),
            default_replication_factor: 1,
            min_insync_replicas: 1,
            replica_lag_time_max_ms: 30_000,
        }
    }
}

/// `1@host:port,2@host:port`: node ids and addresses.
fn parse_id_addresses(key: &str, v: &str) -> Result<BTreeMap<u64, (String, u16)>, ConfigError> {
    let mut out = BTreeMap::new();
    for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (id, addr) = item.split_once('@').ok_or_else(|| ConfigError::Invalid {
            key: key.into(),
            why: format!("`{item}`: expected ID@HOST:PORT"),
        })?;
        let id: u64 = parse_num(key, id)?;
        if id == 0 || id >= 1024 {
            return Err(ConfigError::Invalid {
                key: key.into(),
                why: "node ids of a cluster are 1 to 1023".into(),
            });
        }
        if out.insert(id, parse_listener(key, addr)?).is_some() {
            return Err(ConfigError::Invalid {
                key: key.into(),
                why: format!("node {id} is listed twice"),
            });
        }
    }
    Ok(out)
}

fn parse_num<T: std::str::FromStr>(key: &str, v: &str) -> Result<T, ConfigError> {
    v.trim().parse().map_err(|_| ConfigError::Invalid {
        key: key.into(),
        why: format!("`{v}` is not a valid number"),
    })
}

/// `-1` (Kafka's "unlimited") or a non-negative number.
fn parse_limit(key: &str, v: &str) -> Result<Option<u64>, ConfigError> {
    let n: i64 = parse_num(key, v)?;
    match n {
        -1 => Ok(None),
        n if n >= 0 => Ok(Some(n as u64)),
        _ => Err(ConfigError::Invalid {
            key: key.into(),
            why: "must be -1 or >= 0".into(),
        }),
    }
}

fn parse_bool(key: &str, v: &str) -> Result<bool, ConfigError> {
    match v.trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(ConfigError::Invalid {
            key: key.into(),
            why: format!("`{v}` is not true or false"),
        }),
    }
}

/// `HOST:PORT`, optionally with a Kafka listener name (`PLAINTEXT://`);
/// the first of a comma-separated list.
pub fn parse_listener(key: &str, v: &str) -> Result<(String, u16), ConfigError> {
    let first = v.split(',').next().unwrap_or("").trim();
    let addr = first.rsplit("://").next().unwrap_or(first);
    let bad = |why: &str| ConfigError::Invalid {
        key: key.into(),
        why: format!("`{v}`: {why}"),
    };
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| bad("expected HOST:PORT"))?;
    let port: u16 = port.parse().map_err(|_| bad("bad port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = if host.is_empty() { "0.0.0.0" } else { host };
    Ok((host.to_string(), port))
}

impl BrokerConfig {
    /// Apply one `key = value` setting (Kafka's name).
    pub fn set(&mut self, key: &str, v: &str) -> Result<(), ConfigError> {
        let invalid = |why: String| ConfigError::Invalid {
            key: key.into(),
            why,
        };
        match key {
            "node.id" | "broker.id" => self.node_id = parse_num(key, v)?,
            "listeners" => {
                let (h, p) = parse_listener(key, v)?;
                self.listener =
                    format!("{}:{p}", if h.contains(':') { format!("[{h}]") } else { h })
                        .parse()
                        .map_err(|_| invalid(format!("`{v}` is not an IP address and port")))?;
            }
            "advertised.listeners" => self.advertised = parse_listener(key, v)?,
            "log.dirs" | "log.dir" => {
                let first = v.split(',').next().unwrap_or("").trim();
                if first.is_empty() {
                    return Err(invalid("empty path".into()));
                }
                self.log_dir = PathBuf::from(first);
            }
            "num.shards" | "shards" => self.shards = parse_num(key, v)?,
            "num.partitions" => {
                self.num_partitions = parse_num(key, v)?;
                if self.num_partitions < 1 {
                    return Err(invalid("must be >= 1".into()));
                }
            }
            "auto.create.topics.enable" => self.auto_create_topics = parse_bool(key, v)?,
            "socket.request.max.bytes" => self.socket_request_max_bytes = parse_num(key, v)?,
            "message.max.bytes" => self.message_max_bytes = parse_num(key, v)?,
            "log.retention.ms" => self.log_retention_ms = parse_limit(key, v)?,
            "log.retention.minutes" => {
                self.log_retention_ms = parse_limit(key, v)?.map(|m| m * 60_000)
            }
            "log.retention.hours" => {
                self.log_retention_ms = parse_limit(key, v)?.map(|h| h * 3_600_000)
            }
            "log.retention.bytes" => self.log_retention_bytes = parse_limit(key, v)?,
            "log.segment.bytes" => {
                self.log_segment_bytes = parse_num(key, v)?;
                if self.log_segment_bytes < 1024 || self.log_segment_bytes > i32::MAX as u64 {
                    return Err(invalid("must be between 1024 and 2147483647".into()));
                }
            }
            "log.roll.ms" => self.log_roll_ms = parse_num(key, v)?,
            "log.roll.hours" => self.log_roll_ms = parse_num::<u64>(key, v)? * 3_600_000,
            "log.index.interval.bytes" => self.log_index_interval_bytes = parse_num(key, v)?,
            // These set when data nobody waits for is flushed. A waiter
            // (acks=all) always starts a group-commit flush at once
            // (`FlushPolicy::on_demand` stays set), so no setting here
            // delays an acks=all answer or lets one go out before its
            // fdatasync.
            "log.flush.interval.messages" => {
                // 1 = every append; larger values are read as a byte
                // threshold of that many 1 KiB records.
                let n: u64 = parse_num(key, v)?;
                self.flush.every_append = n <= 1;
                if n > 1 {
                    self.flush.every_bytes = Some(n.saturating_mul(1024));
                }
            }
            "log.flush.interval.bytes" => {
                self.flush.every_append = false;
                self.flush.every_bytes = Some(parse_num(key, v)?);
            }
            "log.flush.interval.ms" => {
                self.flush.every_append = false;
                self.flush.every_ms = Some(parse_num(key, v)?);
            }
            "log.cache.bytes.per.shard" => self.log_cache_bytes_per_shard = parse_limit(key, v)?,
            "log.retention.check.interval.ms" => {
                self.retention_check = Duration::from_millis(parse_num(key, v)?)
            }
            "log.cleanup.policy" => {
                self.log_cleanup_policy = CleanupPolicy::parse(v)
                    .ok_or_else(|| invalid(format!("`{v}` is not delete, compact or both")))?
            }
            "log.cleaner.delete.retention.ms" => {
                self.log_cleaner_delete_retention_ms = parse_num(key, v)?
            }
            "log.cleaner.min.cleanable.ratio" => {
                let r: f64 = parse_num(key, v)?;
                if !(0.0..=1.0).contains(&r) {
                    return Err(invalid("must be between 0 and 1".into()));
                }
                self.log_cleaner_min_cleanable_ratio = r;
            }
            "log.cleaner.min.compaction.lag.ms" => {
                self.log_cleaner_min_compaction_lag_ms = parse_num(key, v)?
            }
            "log.cleaner.backoff.ms" => {
                self.log_cleaner_backoff = Duration::from_millis(parse_num::<u64>(key, v)?.max(1))
            }
            "offsets.topic.num.partitions" => {
                self.offsets_topic_num_partitions = parse_num(key, v)?;
                if !(1..=1000).contains(&self.offsets_topic_num_partitions) {
                    return Err(invalid("must be between 1 and 1000".into()));
                }
            }
            "offsets.topic.segment.bytes" => {
                self.offsets_topic_segment_bytes = parse_num(key, v)?;
                if !(1024..=i32::MAX as u64).contains(&self.offsets_topic_segment_bytes) {
                    return Err(invalid("must be between 1024 and 2147483647".into()));
                }
            }
            "offsets.topic.replication.factor" => {
                self.offsets_topic_replication_factor = parse_num(key, v)?;
                if self.offsets_topic_replication_factor < 1 {
                    return Err(invalid("must be >= 1".into()));
                }
            }
            "offset.metadata.max.bytes" => self.offset_metadata_max_bytes = parse_num(key, v)?,
            "controller.quorum.voters" => {
                let mut voters = BTreeMap::new();
                for (id, (h, p)) in parse_id_addresses(key, v)? {
                    let addr = std::net::ToSocketAddrs::to_socket_addrs(&(h.as_str(), p))
                        .ok()
                        .and_then(|mut a| a.next())
                        .ok_or_else(|| invalid(format!("cannot resolve `{h}:{p}`")))?;
                    voters.insert(id, addr);
                }
                self.voters = voters;
            }
            "cluster.brokers" => self.cluster_brokers = parse_id_addresses(key, v)?,
            "default.replication.factor" => {
                self.default_replication_factor = parse_num(key, v)?;
                if self.default_replication_factor < 1 {
                    return Err(invalid("must be >= 1".into()));
                }
            }
            "min.insync.replicas" => {
                self.min_insync_replicas = parse_num(key, v)?;
                if self.min_insync_replicas < 1 {
                    return Err(invalid("must be >= 1".into()));
                }
            }
            "replica.lag.time.max.ms" => self.replica_lag_time_max_ms = parse_num(key, v)?,
            "group.min.session.timeout.ms" => {
                self.group_min_session_timeout_ms = parse_num(key, v)?
            }
            "group.max.session.timeout.ms" => {
                self.group_max_session_timeout_ms = parse_num(key, v)?
            }
            "metrics.listener" => {
                self.metrics_listener = if matches!(v.trim(), "" | "none" | "off") {
                    None
                } else {
                    let (h, p) = parse_listener(key, v)?;
                    let host = if h.contains(':') { format!("[{h}]") } else { h };
                    Some(
                        format!("{host}:{p}")
                            .parse()
                            .map_err(|_| invalid(format!("`{v}` is not an IP address and port")))?,
                    )
                }
            }
            "offsets.retention.minutes" => {
                self.offsets_retention_ms = parse_num::<u64>(key, v)?.saturating_mul(60_000)
            }
            "offsets.retention.check.interval.ms" => {
                self.offsets_retention_check_ms = parse_num(key, v)?
            }
            "group.initial.rebalance.delay.ms" => {
                self.group_initial_rebalance_delay_ms = parse_num(key, v)?
            }
            _ => return Err(ConfigError::Unknown(key.into())),
        }
        Ok(())
    }

    /// Apply every setting of a TOML document; returns the keys it set.
    pub fn apply_toml(
        &mut self,
        text: &str,
        path: &std::path::Path,
    ) -> Result<Vec<String>, ConfigError> {
        let value: toml::Table = toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })?;
        let mut flat = BTreeMap::new();
        flatten("", &toml::Value::Table(value), &mut flat);
        for (k, v) in &flat {
            self.set(k, v)?;
        }
        Ok(flat.into_keys().collect())
    }

    /// Apply `ODRADEK_*` environment variables.
    /// An `ODRADEK_*` variable that names no setting is not an error (other
    /// tools share the prefix); its name is returned so it can be logged. A
    /// known setting with a bad value is an error.
    pub fn apply_env(
        &mut self,
        vars: impl Iterator<Item = (String, String)>,
    ) -> Result<Vec<String>, ConfigError> {
        let mut ignored = Vec::new();
        for (k, v) in vars {
            if let Some(rest) = k.strip_prefix("ODRADEK_") {
                if rest == "LOG" || rest == "LOG_FORMAT" {
                    continue; // logging, read by main
                }
                let key = rest.to_ascii_lowercase().replace('_', ".");
                match self.set(&key, &v) {
                    Err(ConfigError::Unknown(_)) => ignored.push(k),
                    other => other?,
                }
            }
        }
        Ok(ignored)
    }

    /// Bounds the group coordinator enforces.
    pub fn group_limits(&self) -> crate::groups::state::Limits {
        crate::groups::state::Limits {
            min_session_timeout_ms: self.group_min_session_timeout_ms,
            max_session_timeout_ms: self.group_max_session_timeout_ms,
            initial_rebalance_delay_ms: self.group_initial_rebalance_delay_ms,
            offsets_retention_ms: self.offsets_retention_ms,
        }
    }

    /// The log settings a new topic starts with.
    pub fn log_config(&self) -> LogConfig {
        LogConfig {
            segment_bytes: self.log_segment_bytes,
            segment_ms: self.log_roll_ms,
            retention_ms: self.log_retention_ms,
            retention_bytes: self.log_retention_bytes,
            index_interval_bytes: self.log_index_interval_bytes,
            max_batch_bytes: self.message_max_bytes,
            flush: self.flush,
            cleanup_policy: self.log_cleanup_policy,
            delete_retention_ms: self.log_cleaner_delete_retention_ms,
            min_cleanable_dirty_ratio: self.log_cleaner_min_cleanable_ratio,
            min_compaction_lag_ms: self.log_cleaner_min_compaction_lag_ms,
        }
    }
}

fn flatten(prefix: &str, v: &toml::Value, out: &mut BTreeMap<String, String>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        toml::Value::String(s) => {
            out.insert(prefix.to_string(), s.clone());
        }
        toml::Value::Array(a) => {
            let items: Vec<String> = a
                .iter()
                .map(|x| match x {
                    toml::Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect();
            out.insert(prefix.to_string(), items.join(","));
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = include_str!("../packaging/odradek.toml");

    #[test]
    fn sample_config_documents_every_setting_with_its_default() {
        // Every known setting is named in the sample (set or commented),
        // except aliases, which share the main name's comment.
        let aliases = [
            "broker.id",
            "log.dir",
            "shards",
            "log.roll.hours",
            "log.retention.minutes",
            "log.retention.hours",
        ];
        for key in SETTINGS {
            if aliases.contains(key) {
                assert!(
                    SAMPLE.contains(key),
                    "alias `{key}` is mentioned in the sample config"
                );
                continue;
            }
            let named = SAMPLE.lines().any(|l| {
                l.trim_start_matches(['#', ' '])
                    .starts_with(&format!("{key} ="))
            });
            assert!(named, "`{key}` has a line in node/packaging/odradek.toml");
            // And `set` knows it (a value it accepts: the sample's or a number).
            let mut c = BrokerConfig::default();
            assert!(
                !matches!(c.set(key, "1"), Err(ConfigError::Unknown(_))),
                "`{key}` is a setting"
            );
        }
        // Applied to the defaults, the sample changes only log.dirs.
        let mut c = BrokerConfig::default();
        c.apply_toml(SAMPLE, std::path::Path::new("odradek.toml"))
            .expect("sample config loads");
        assert_eq!(c.log_dir, PathBuf::from("/var/lib/odradek"));
        c.log_dir = BrokerConfig::default().log_dir;
        assert_eq!(
            format!("{c:?}"),
            format!("{:?}", BrokerConfig::default()),
            "the sample's values are the defaults"
        );
    }

    #[test]
    fn toml_env_and_flags_layer_with_kafka_names() {
        let mut c = BrokerConfig::default();
        let text = r#"
            listeners = "PLAINTEXT://127.0.0.1:19092"
            "advertised.listeners" = "localhost:19092"
            log.retention.ms = 1000
            log.dirs = "/tmp/x"
            num.partitions = 3
            auto.create.topics.enable = false
        "#;
        c.apply_toml(text, std::path::Path::new("t.toml")).unwrap();
        assert_eq!(c.listener, "127.0.0.1:19092".parse().unwrap());
        assert_eq!(c.advertised, ("localhost".to_string(), 19092));
        assert_eq!(c.log_retention_ms, Some(1000));
        assert_eq!(c.num_partitions, 3);
        assert!(!c.auto_create_topics);
        let env = [
            ("ODRADEK_LOG_RETENTION_MS".to_string(), "-1".to_string()),
            ("ODRADEK_BIN".to_string(), "x".to_string()),
        ];
        assert_eq!(
            c.apply_env(env.into_iter()).unwrap(),
            vec!["ODRADEK_BIN".to_string()]
        );
        let bad = [("ODRADEK_NUM_PARTITIONS".to_string(), "many".to_string())];
        assert!(c.apply_env(bad.into_iter()).is_err());
        assert_eq!(c.log_retention_ms, None);
        c.set("message.max.bytes", "2000").unwrap();
        assert_eq!(c.log_config().max_batch_bytes, 2000);
        assert!(matches!(
            c.set("no.such", "1"),
            Err(ConfigError::Unknown(_))
        ));
        assert!(c.set("num.partitions", "zero").is_err());
        assert!(c.set("num.partitions", "0").is_err());
        assert!(c.set("listeners", "nohost").is_err());
    }
}
