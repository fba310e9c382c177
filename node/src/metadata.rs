//! The topic registry: which topics exist, their ids, partition counts and
//! config overrides.
//!
//! Readers on every shard take a lock-free snapshot (`ArcSwap`); admin
//! changes are serialized by a mutex, persisted to `topics.json` in the log
//! directory (write, fsync, rename, fsync the directory) and then published.
//! Replication will move this into a controller Raft group.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use kafka_protocol::ResponseError;
use odradek_engine::log::{CleanupPolicy, FlushPolicy, LogConfig};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::config::BrokerConfig;

/// One topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMeta {
    pub name: String,
    pub id: Uuid,
    pub partitions: i32,
    /// Topic-level overrides, Kafka names (`retention.ms`, ...).
    #[serde(default)]
    pub configs: BTreeMap<String, String>,
}

/// An immutable view of all topics.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Topics {
    pub topics: BTreeMap<String, Arc<TopicMeta>>,
}

impl Topics {
    pub fn get(&self, name: &str) -> Option<&Arc<TopicMeta>> {
        self.topics.get(name)
    }

    pub fn by_id(&self, id: Uuid) -> Option<&Arc<TopicMeta>> {
        self.topics.values().find(|t| t.id == id)
    }
}

/// Why an admin change was refused, as a Kafka error code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminError {
    pub code: ResponseError,
    pub message: String,
}

impl AdminError {
    pub fn new(code: ResponseError, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// Topic configs this broker understands, with what they control.
pub const TOPIC_CONFIGS: &[&str] = &[
    "retention.ms",
    "retention.bytes",
    "segment.bytes",
    "segment.ms",
    "max.message.bytes",
    "index.interval.bytes",
    "flush.messages",
    "flush.ms",
    "cleanup.policy",
    "delete.retention.ms",
    "min.cleanable.dirty.ratio",
    "min.compaction.lag.ms",
];

/// Topics the broker manages itself: clients may read them but not
/// delete or grow them (a group's coordinator partition is a hash of the
/// partition count).
pub fn refuse_internal(name: &str, what: &str) -> Result<(), AdminError> {
    if name == crate::groups::OFFSETS_TOPIC {
        return Err(AdminError::new(
            ResponseError::InvalidRequest,
            format!("`{name}` is an internal topic: it cannot be {what} by clients"),
        ));
    }
    Ok(())
}

/// The most partitions a topic may have.
pub const MAX_PARTITIONS: i32 = 100_000;

/// Kafka's legal topic names.
pub fn validate_topic_name(name: &str) -> Result<(), AdminError> {
    let ok = !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'.' || c == b'_' || c == b'-');
    if ok {
        Ok(())
    } else {
        Err(AdminError::new(
            ResponseError::InvalidTopicException,
            format!("invalid topic name `{name}`: use 1-249 of [a-zA-Z0-9._-]"),
        ))
    }
}

fn bad_config(key: &str, value: &str) -> AdminError {
    AdminError::new(
        ResponseError::InvalidConfig,
        format!("invalid value `{value}` for `{key}`"),
    )
}

/// The effective log settings of a topic: broker defaults, then overrides.
pub fn topic_log_config(
    broker: &BrokerConfig,
    configs: &BTreeMap<String, String>,
) -> Result<LogConfig, AdminError> {
    let mut c = broker.log_config();
    for (k, v) in configs {
        let num = || v.trim().parse::<i64>().map_err(|_| bad_config(k, v));
        let limit = || match num()? {
            -1 => Ok(None),
            n if n >= 0 => Ok(Some(n as u64)),
            _ => Err(bad_config(k, v)),
        };
        let positive = || match num()? {
            n if n > 0 => Ok(n as u64),
            _ => Err(bad_config(k, v)),
        };
        match k.as_str() {
            "retention.ms" => c.retention_ms = limit()?,
            "retention.bytes" => c.retention_bytes = limit()?,
            "segment.bytes" => {
                let n = positive()?;
                if !(1024..=i32::MAX as u64).contains(&n) {
                    return Err(bad_config(k, v));
                }
                c.segment_bytes = n;
            }
            "segment.ms" => c.segment_ms = positive()?,
            "max.message.bytes" => c.max_batch_bytes = positive()? as usize,
            "index.interval.bytes" => {
                c.index_interval_bytes = u32::try_from(positive()?).map_err(|_| bad_config(k, v))?
            }
            "flush.messages" => {
                let n = positive()?;
                c.flush = if n <= 1 {
                    FlushPolicy::EVERY_APPEND
                } else {
                    FlushPolicy {
                        every_append: false,
                        every_bytes: Some(n.saturating_mul(1024)),
                        ..c.flush
                    }
                };
            }
            "flush.ms" => {
                c.flush.every_append = false;
                c.flush.every_ms = Some(positive()?);
            }
            "cleanup.policy" => {
                c.cleanup_policy = CleanupPolicy::parse(v).ok_or_else(|| bad_config(k, v))?
            }
            "delete.retention.ms" => c.delete_retention_ms = limit()?.unwrap_or(u64::MAX),
            "min.compaction.lag.ms" => c.min_compaction_lag_ms = limit()?.unwrap_or(0),
            "min.cleanable.dirty.ratio" => {
                c.min_cleanable_dirty_ratio = match v.trim().parse::<f64>() {
                    Ok(r) if (0.0..=1.0).contains(&r) => r,
                    _ => return Err(bad_config(k, v)),
                }
            }
            _ => {
                return Err(AdminError::new(
                    ResponseError::InvalidConfig,
                    format!("unknown topic config `{k}`"),
                ))
            }
        }
    }
    Ok(c)
}

type ConfigChange<'a> =
    Box<dyn FnOnce(&BTreeMap<String, String>) -> Result<BTreeMap<String, String>, AdminError> + 'a>;

/// The registry, shared by every shard.
pub struct Registry {
    current: ArcSwap<Topics>,
    write: Mutex<()>,
    /// `None`: not persisted (a cluster member rebuilds its topics from
    /// the controller log).
    path: Option<PathBuf>,
}

const FILE: &str = "topics.json";

impl Registry {
    /// Load `topics.json` from the log directory (or start empty).
    pub fn load(log_dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(log_dir)?;
        let path = log_dir.join(FILE);
        let topics = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{}: {e}", path.display()),
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Topics::default(),
            Err(e) => return Err(e),
        };
        Ok(Self {
            current: ArcSwap::from_pointee(topics),
            write: Mutex::new(()),
            path: Some(path),
        })
    }

    /// An empty registry kept in memory only.
    pub fn in_memory() -> Self {
        Self {
            current: ArcSwap::from_pointee(Topics::default()),
            write: Mutex::new(()),
            path: None,
        }
    }

    /// Put `meta` in as it is (the controller decided it), replacing a
    /// topic of that name.
    pub fn install(&self, meta: TopicMeta) {
        let _ = self.update(|t| {
            t.topics.insert(meta.name.clone(), Arc::new(meta));
            Ok(())
        });
    }

    /// Drop a topic the controller deleted.
    pub fn remove(&self, name: &str) {
        let _ = self.update(|t| {
            t.topics.remove(name);
            Ok(())
        });
    }

    pub fn snapshot(&self) -> Arc<Topics> {
        self.current.load_full()
    }

    fn persist(&self, topics: &Topics) -> Result<(), AdminError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let io = |e: std::io::Error| {
            AdminError::new(
                ResponseError::KafkaStorageError,
                format!("writing {}: {e}", path.display()),
            )
        };
        let bytes = serde_json::to_vec_pretty(topics).map_err(|e| io(std::io::Error::other(e)))?;
        crate::durable::replace_file(path, &bytes).map_err(io)
    }

    /// Apply `change` to a copy of the topics, persist, publish.
    fn update<T>(
        &self,
        change: impl FnOnce(&mut Topics) -> Result<T, AdminError>,
    ) -> Result<T, AdminError> {
        let _g = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = (*self.current.load_full()).clone();
        let out = change(&mut next)?;
        self.persist(&next)?;
        self.current.store(Arc::new(next));
        Ok(out)
    }

    /// Check a new topic without creating it.
    pub fn validate_new(
        &self,
        broker: &BrokerConfig,
        name: &str,
        partitions: i32,
        configs: &BTreeMap<String, String>,
    ) -> Result<(), AdminError> {
        validate_topic_name(name)?;
        if self.snapshot().get(name).is_some() {
            return Err(AdminError::new(
                ResponseError::TopicAlreadyExists,
                format!("topic `{name}` already exists"),
            ));
        }
        if !(1..=MAX_PARTITIONS).contains(&partitions) {
            return Err(AdminError::new(
                ResponseError::InvalidPartitions,
                format!("partition count {partitions} must be between 1 and {MAX_PARTITIONS}"),
            ));
        }
        topic_log_config(broker, configs).map(|_| ())
    }

    pub fn create(
        &self,
        broker: &BrokerConfig,
        name: &str,
        partitions: i32,
        configs: BTreeMap<String, String>,
    ) -> Result<Arc<TopicMeta>, AdminError> {
        self.validate_new(broker, name, partitions, &configs)?;
        self.update(|t| {
            if t.topics.contains_key(name) {
                return Err(AdminError::new(
                    ResponseError::TopicAlreadyExists,
                    format!("topic `{name}` already exists"),
                ));
            }
            let meta = Arc::new(TopicMeta {
                name: name.to_string(),
                id: Uuid::new_v4(),
                partitions,
                configs,
            });
            t.topics.insert(name.to_string(), meta.clone());
            Ok(meta)
        })
    }

    pub fn delete(&self, name: &str) -> Result<Arc<TopicMeta>, AdminError> {
        refuse_internal(name, "deleted")?;
        self.update(|t| {
            t.topics.remove(name).ok_or_else(|| {
                AdminError::new(
                    ResponseError::UnknownTopicOrPartition,
                    format!("no topic `{name}`"),
                )
            })
        })
    }

    /// Grow a topic to `total` partitions (never shrink).
    pub fn set_partitions(
        &self,
        name: &str,
        total: i32,
        validate_only: bool,
    ) -> Result<(Arc<TopicMeta>, i32), AdminError> {
        refuse_internal(name, "given more partitions")?;
        let check = |t: &Topics| {
            let meta = t.get(name).ok_or_else(|| {
                AdminError::new(
                    ResponseError::UnknownTopicOrPartition,
                    format!("no topic `{name}`"),
                )
            })?;
            if total <= meta.partitions || total > MAX_PARTITIONS {
                return Err(AdminError::new(
                    ResponseError::InvalidPartitions,
                    format!(
                        "topic `{name}` has {} partitions; the new count {total} must be larger",
                        meta.partitions
                    ),
                ));
            }
            Ok(meta.clone())
        };
        if validate_only {
            let meta = check(&self.snapshot())?;
            let old = meta.partitions;
            return Ok((meta, old));
        }
        self.update(|t| {
            let meta = check(t)?;
            let old = meta.partitions;
            let grown = Arc::new(TopicMeta {
                partitions: total,
                ..(*meta).clone()
            });
            t.topics.insert(name.to_string(), grown.clone());
            Ok((grown, old))
        })
    }

    /// Change a topic's config overrides: `change` maps the current ones to
    /// the new ones under the write lock, so concurrent changes compose.
    pub fn update_configs(
        &self,
        broker: &BrokerConfig,
        name: &str,
        change: impl FnOnce(&BTreeMap<String, String>) -> Result<BTreeMap<String, String>, AdminError>,
        validate_only: bool,
    ) -> Result<Arc<TopicMeta>, AdminError> {
        let apply = |t: &Topics, change: ConfigChange| {
            let meta = t.get(name).ok_or_else(|| {
                AdminError::new(
                    ResponseError::UnknownTopicOrPartition,
                    format!("no topic `{name}`"),
                )
            })?;
            let configs = change(&meta.configs)?;
            topic_log_config(broker, &configs)?;
            Ok(Arc::new(TopicMeta {
                configs,
                ..(**meta).clone()
            }))
        };
        let change: ConfigChange = Box::new(change);
        if validate_only {
            return apply(&self.snapshot(), change);
        }
        self.update(|t| {
            let meta = apply(t, change)?;
            t.topics.insert(name.to_string(), meta.clone());
            Ok(meta)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compaction_configs_map_to_the_log_config() {
        let mut broker = BrokerConfig::default();
        broker.set("log.cleaner.backoff.ms", "250").unwrap();
        broker
            .set("log.cleaner.min.cleanable.ratio", "0.25")
            .unwrap();
        assert!(broker.set("log.cleanup.policy", "shred").is_err());
        let cfg = |pairs: &[(&str, &str)]| {
            let m: BTreeMap<String, String> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            topic_log_config(&broker, &m)
        };
        let c = cfg(&[]).unwrap();
        assert_eq!(c.cleanup_policy, CleanupPolicy::DELETE);
        assert_eq!(c.delete_retention_ms, 86_400_000);
        assert_eq!(c.min_cleanable_dirty_ratio, 0.25);
        let c = cfg(&[
            ("cleanup.policy", "delete, compact"),
            ("delete.retention.ms", "1000"),
            ("min.cleanable.dirty.ratio", "0.1"),
            ("min.compaction.lag.ms", "5"),
        ])
        .unwrap();
        assert_eq!(c.cleanup_policy, CleanupPolicy::COMPACT_DELETE);
        assert_eq!(
            (
                c.delete_retention_ms,
                c.min_cleanable_dirty_ratio,
                c.min_compaction_lag_ms
            ),
            (1000, 0.1, 5)
        );
        for bad in [
            ("cleanup.policy", "compact,shred"),
            ("cleanup.policy", ""),
            ("min.cleanable.dirty.ratio", "1.5"),
            ("delete.retention.ms", "-2"),
        ] {
            assert!(cfg(&[bad]).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn topics_persist_and_validate() {
        let dir = tempfile::tempdir().unwrap();
        let broker = BrokerConfig::default();
        let r = Registry::load(dir.path()).unwrap();
        let t = r.create(&broker, "a.b-c_1", 3, BTreeMap::new()).unwrap();
        assert_eq!(t.partitions, 3);
        assert_eq!(
            r.create(&broker, "a.b-c_1", 3, BTreeMap::new())
                .unwrap_err()
                .code,
            ResponseError::TopicAlreadyExists
        );
        assert_eq!(
            r.create(&broker, "bad name", 1, BTreeMap::new())
                .unwrap_err()
                .code,
            ResponseError::InvalidTopicException
        );
        assert_eq!(
            r.create(&broker, "z", 0, BTreeMap::new()).unwrap_err().code,
            ResponseError::InvalidPartitions
        );
        let mut bad = BTreeMap::new();
        bad.insert("retention.ms".to_string(), "soon".to_string());
        assert_eq!(
            r.create(&broker, "z", 1, bad).unwrap_err().code,
            ResponseError::InvalidConfig
        );
        assert_eq!(
            r.set_partitions("a.b-c_1", 2, false).unwrap_err().code,
            ResponseError::InvalidPartitions
        );
        r.set_partitions("a.b-c_1", 5, false).unwrap();
        let again = Registry::load(dir.path()).unwrap();
        let t2 = again.snapshot().get("a.b-c_1").cloned().unwrap();
        assert_eq!(t2.partitions, 5);
        assert_eq!(t2.id, t.id);
        again.delete("a.b-c_1").unwrap();
        assert!(Registry::load(dir.path())
            .unwrap()
            .snapshot()
            .topics
            .is_empty());
    }
}
