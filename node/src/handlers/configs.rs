//! DescribeConfigs (v1–v4) and IncrementalAlterConfigs (v0–v1).
//!
//! Topics (resource type 2) have the configs of [`TOPIC_CONFIGS`]: a topic
//! override (source DYNAMIC_TOPIC_CONFIG) or the broker's setting (source
//! STATIC_BROKER_CONFIG when the broker's config file, environment or flags
//! changed it, DEFAULT_CONFIG otherwise). The broker (type 4) describes its
//! static settings, read-only. IncrementalAlterConfigs changes topic
//! overrides: SET, DELETE, and APPEND/SUBTRACT for the list-typed
//! `cleanup.policy`; the new settings reach the open partition logs at once.

use std::collections::{BTreeMap, HashMap};

use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::incremental_alter_configs_request::AlterConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{
    ApiKey, DescribeConfigsRequest, DescribeConfigsResponse, IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use odradek_engine::log::LogConfig;
use odradek_engine::shard::TopicPartition;

use crate::broker::Ctx;
use crate::config::BrokerConfig;
use crate::connection::{frame, Pending};
use crate::metadata::{topic_log_config, AdminError, TopicMeta, TOPIC_CONFIGS};
use crate::protocol::{decode_body, encode_response, FrameError, Request};

/// Kafka's `ConfigResource.Type` codes.
pub const RESOURCE_TOPIC: i8 = 2;
pub const RESOURCE_BROKER: i8 = 4;

/// Kafka's `ConfigSource` codes.
pub const SOURCE_DYNAMIC_TOPIC: i8 = 1;
pub const SOURCE_STATIC_BROKER: i8 = 4;
pub const SOURCE_DEFAULT: i8 = 5;

/// Kafka's `ConfigType` codes (DescribeConfigs v3+).
const TYPE_BOOLEAN: i8 = 1;
const TYPE_STRING: i8 = 2;
const TYPE_INT: i8 = 3;
const TYPE_SHORT: i8 = 4;
const TYPE_LONG: i8 = 5;
const TYPE_DOUBLE: i8 = 6;
const TYPE_LIST: i8 = 7;

/// IncrementalAlterConfigs operations.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

/// Kafka's "no limit" for flush settings (`Long.MAX_VALUE`).
const LONG_MAX: &str = "9223372036854775807";

/// One described config, independent of the message it goes into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    pub name: String,
    pub value: String,
    pub source: i8,
    pub read_only: bool,
    pub config_type: i8,
    pub doc: &'static str,
    /// (name, value, source), most specific first, the entry's own source
    /// included, as Kafka lists them.
    pub synonyms: Vec<(String, String, i8)>,
}

/// A topic config's broker-level name, Kafka type and documentation.
fn topic_config_info(key: &str) -> (&'static str, i8, &'static str) {
    match key {
        "retention.ms" => (
            "log.retention.ms",
            TYPE_LONG,
            "Delete a segment once its newest record is older than this; -1: never.",
        ),
        "retention.bytes" => (
            "log.retention.bytes",
            TYPE_LONG,
            "Delete the oldest segments while a partition is larger than this; -1: no limit.",
        ),
        "segment.bytes" => (
            "log.segment.bytes",
            TYPE_INT,
            "Roll to a new segment file when the active one would exceed this size.",
        ),
        "segment.ms" => (
            "log.roll.ms",
            TYPE_LONG,
            "Roll a non-empty segment once it is this old.",
        ),
        "max.message.bytes" => (
            "message.max.bytes",
            TYPE_INT,
            "Largest record batch accepted.",
        ),
        "index.interval.bytes" => (
            "log.index.interval.bytes",
            TYPE_INT,
            "Bytes of batches between two offset index entries.",
        ),
        "flush.messages" => (
            "log.flush.interval.messages",
            TYPE_LONG,
            "1: fdatasync every append (group commit); n > 1: after about n KiB of appends.",
        ),
        "flush.ms" => (
            "log.flush.interval.ms",
            TYPE_LONG,
            "fdatasync once the oldest unflushed append is this old.",
        ),
        "cleanup.policy" => (
            "log.cleanup.policy",
            TYPE_LIST,
            "delete: retention removes old segments; compact: keep the latest record per key (and no time or size retention); compact,delete: both.",
        ),
        "delete.retention.ms" => (
            "log.cleaner.delete.retention.ms",
            TYPE_LONG,
            "How long compaction keeps a tombstone, from its batch's max timestamp.",
        ),
        "min.cleanable.dirty.ratio" => (
            "log.cleaner.min.cleanable.ratio",
            TYPE_DOUBLE,
            "Compact once this share of the sealed bytes is not yet cleaned.",
        ),
        "min.compaction.lag.ms" => (
            "log.cleaner.min.compaction.lag.ms",
            TYPE_LONG,
            "Segments with records younger than this are not compacted yet.",
        ),
        _ => ("", TYPE_STRING, ""),
    }
}

/// A topic config's value under `log`, in Kafka's string form.
fn log_config_value(key: &str, log: &LogConfig) -> String {
    let limit = |v: Option<u64>| v.map_or_else(|| "-1".to_string(), |n| n.to_string());
    match key {
        "retention.ms" => limit(log.retention_ms),
        "retention.bytes" => limit(log.retention_bytes),
        "segment.bytes" => log.segment_bytes.to_string(),
        "segment.ms" => log.segment_ms.to_string(),
        "max.message.bytes" => log.max_batch_bytes.to_string(),
        "index.interval.bytes" => log.index_interval_bytes.to_string(),
        "flush.messages" => {
            if log.flush.every_append {
                "1".into()
            } else {
                match log.flush.every_bytes {
                    // Read back as the "n KiB records" the setting means.
                    Some(b) => b.div_ceil(1024).max(2).to_string(),
                    None => LONG_MAX.into(),
                }
            }
        }
        "flush.ms" => log
            .flush
            .every_ms
            .map_or_else(|| LONG_MAX.to_string(), |n| n.to_string()),
        "cleanup.policy" => log.cleanup_policy.as_str().into(),
        "delete.retention.ms" => log.delete_retention_ms.to_string(),
        "min.cleanable.dirty.ratio" => log.min_cleanable_dirty_ratio.to_string(),
        "min.compaction.lag.ms" => log.min_compaction_lag_ms.to_string(),
        _ => String::new(),
    }
}

/// Every topic config with its effective value: the topic's override, or
/// what the broker's settings give.
pub fn topic_config_entries(
    broker: &BrokerConfig,
    overrides: &BTreeMap<String, String>,
) -> Vec<ConfigEntry> {
    let effective = topic_log_config(broker, overrides).unwrap_or_else(|_| broker.log_config());
    let broker_log = broker.log_config();
    let builtin_log = BrokerConfig::default().log_config();
    TOPIC_CONFIGS
        .iter()
        .map(|&key| {
            let (broker_key, config_type, doc) = topic_config_info(key);
            let broker_value = log_config_value(key, &broker_log);
            let builtin_value = log_config_value(key, &builtin_log);
            let broker_source = if broker_value == builtin_value {
                SOURCE_DEFAULT
            } else {
                SOURCE_STATIC_BROKER
            };
            let mut synonyms = Vec::new();
            let (value, source) = match overrides.get(key) {
                Some(v) => {
                    synonyms.push((key.to_string(), v.clone(), SOURCE_DYNAMIC_TOPIC));
                    (v.clone(), SOURCE_DYNAMIC_TOPIC)
                }
                None => (log_config_value(key, &effective), broker_source),
            };
            if broker_source == SOURCE_STATIC_BROKER {
                synonyms.push((broker_key.to_string(), broker_value, SOURCE_STATIC_BROKER));
            }
            synonyms.push((broker_key.to_string(), builtin_value, SOURCE_DEFAULT));
            ConfigEntry {
                name: key.to_string(),
                value,
                source,
                read_only: false,
                config_type,
                doc,
                synonyms,
            }
        })
        .collect()
}

/// The broker's settings, as DescribeConfigs of resource type BROKER shows
/// them: read-only (they come from the config file, environment, flags).
pub fn broker_config_entries(c: &BrokerConfig) -> Vec<ConfigEntry> {
    fn values(c: &BrokerConfig) -> Vec<(&'static str, String, i8, &'static str)> {
        let log = c.log_config();
        let limit = |v: Option<u64>| v.map_or_else(|| "-1".to_string(), |n| n.to_string());
        vec![
            (
                "node.id",
                c.node_id.to_string(),
                TYPE_INT,
                "This broker's id.",
            ),
            (
                "broker.id",
                c.node_id.to_string(),
                TYPE_INT,
                "This broker's id (same as node.id).",
            ),
            (
                "listeners",
                format!("PLAINTEXT://{}", c.listener),
                TYPE_LIST,
                "Where the broker accepts connections.",
            ),
            (
                "advertised.listeners",
                format!("PLAINTEXT://{}:{}", c.advertised.0, c.advertised.1),
                TYPE_LIST,
                "The address Metadata gives clients.",
            ),
            (
                "log.dirs",
                c.log_dir.display().to_string(),
                TYPE_LIST,
                "Where partition directories live.",
            ),
            (
                "num.shards",
                c.shards.to_string(),
                TYPE_INT,
                "Shards (threads with their own io_uring); 0: one per CPU.",
            ),
            (
                "num.partitions",
                c.num_partitions.to_string(),
                TYPE_INT,
                "Default partition count of new topics.",
            ),
            (
                "default.replication.factor",
                "1".into(),
                TYPE_SHORT,
                "Replication factor of new topics (replication is not implemented yet).",
            ),
            (
                "min.insync.replicas",
                "1".into(),
                TYPE_INT,
                "Replicas that must have a write for acks=all.",
            ),
            (
                "auto.create.topics.enable",
                c.auto_create_topics.to_string(),
                TYPE_BOOLEAN,
                "Create unknown topics when Metadata asks for them.",
            ),
            (
                "socket.request.max.bytes",
                c.socket_request_max_bytes.to_string(),
                TYPE_INT,
                "Largest request accepted.",
            ),
            (
                "message.max.bytes",
                c.message_max_bytes.to_string(),
                TYPE_INT,
                "Largest record batch accepted (topic default).",
            ),
            (
                "log.retention.ms",
                limit(c.log_retention_ms),
                TYPE_LONG,
                "Topic default retention time; -1: forever.",
            ),
            (
                "log.retention.bytes",
                limit(c.log_retention_bytes),
                TYPE_LONG,
                "Topic default size limit per partition; -1: none.",
            ),
            (
                "log.segment.bytes",
                c.log_segment_bytes.to_string(),
                TYPE_INT,
                "Topic default segment size.",
            ),
            (
                "log.roll.ms",
                c.log_roll_ms.to_string(),
                TYPE_LONG,
                "Topic default segment age before a roll.",
            ),
            (
                "log.index.interval.bytes",
                c.log_index_interval_bytes.to_string(),
                TYPE_INT,
                "Topic default offset index spacing.",
            ),
            (
                "log.flush.interval.messages",
                log_config_value("flush.messages", &log),
                TYPE_LONG,
                "Topic default flush.messages.",
            ),
            (
                "log.flush.interval.ms",
                log_config_value("flush.ms", &log),
                TYPE_LONG,
                "Topic default flush.ms.",
            ),
            (
                "log.retention.check.interval.ms",
                c.retention_check.as_millis().to_string(),
                TYPE_LONG,
                "How often retention runs.",
            ),
            (
                "log.cleanup.policy",
                c.log_cleanup_policy.as_str().into(),
                TYPE_LIST,
                "Topic default cleanup.policy.",
            ),
            (
                "log.cleaner.delete.retention.ms",
                c.log_cleaner_delete_retention_ms.to_string(),
                TYPE_LONG,
                "Topic default delete.retention.ms.",
            ),
            (
                "log.cleaner.min.cleanable.ratio",
                c.log_cleaner_min_cleanable_ratio.to_string(),
                TYPE_DOUBLE,
                "Topic default min.cleanable.dirty.ratio.",
            ),
            (
                "log.cleaner.min.compaction.lag.ms",
                c.log_cleaner_min_compaction_lag_ms.to_string(),
                TYPE_LONG,
                "Topic default min.compaction.lag.ms.",
            ),
            (
                "log.cleaner.backoff.ms",
                c.log_cleaner_backoff.as_millis().to_string(),
                TYPE_LONG,
                "How often compacted partitions are checked for cleaning.",
            ),
        ]
    }
    let builtin = values(&BrokerConfig::default());
    values(c)
        .into_iter()
        .zip(builtin)
        .map(|((name, value, config_type, doc), (_, default, _, _))| {
            let source = if value == default {
                SOURCE_DEFAULT
            } else {
                SOURCE_STATIC_BROKER
            };
            let mut synonyms = vec![(name.to_string(), value.clone(), source)];
            if source != SOURCE_DEFAULT {
                synonyms.push((name.to_string(), default, SOURCE_DEFAULT));
            }
            ConfigEntry {
                name: name.to_string(),
                value,
                source,
                read_only: true,
                config_type,
                doc,
                synonyms,
            }
        })
        .collect()
}

fn s(v: impl Into<String>) -> StrBytes {
    StrBytes::from_string(v.into())
}

/// Resources that appear more than once in a request, by (type, name).
fn duplicates<'a>(keys: impl Iterator<Item = (i8, &'a str)>) -> HashMap<(i8, String), usize> {
    let mut seen: HashMap<(i8, String), usize> = HashMap::new();
    for (t, n) in keys {
        *seen.entry((t, n.to_string())).or_default() += 1;
    }
    seen.retain(|_, n| *n > 1);
    seen
}

pub async fn handle_describe(ctx: &Ctx, req: &Request) -> Result<Pending, FrameError> {
    let body: DescribeConfigsRequest = decode_body(req, "DescribeConfigs request")?;
    let dups = duplicates(
        body.resources
            .iter()
            .map(|r| (r.resource_type, r.resource_name.as_str())),
    );
    let mut answered = std::collections::HashSet::new();
    let mut resp = DescribeConfigsResponse::default();
    for r in &body.resources {
        let key = (r.resource_type, r.resource_name.to_string());
        if dups.contains_key(&key) {
            // One answer per duplicated resource, as Kafka does.
            if answered.insert(key) {
                resp.results.push(describe_error(
                    r,
                    &AdminError::new(
                        ResponseError::InvalidRequest,
                        "resource listed more than once",
                    ),
                ));
            }
            continue;
        }
        resp.results.push(describe_one(
            ctx,
            r,
            body.include_synonyms,
            req.version >= 3 && body.include_documentation,
            req.version,
        ));
    }
    frame(encode_response(
        ApiKey::DescribeConfigs,
        req.version,
        req.header.correlation_id,
        &resp,
    ))
}

fn describe_error(r: &DescribeConfigsResource, e: &AdminError) -> DescribeConfigsResult {
    let mut out = DescribeConfigsResult::default();
    out.resource_type = r.resource_type;
    out.resource_name = r.resource_name.clone();
    out.error_code = e.code.code();
    out.error_message = Some(s(e.message.clone()));
    out
}

fn describe_one(
    ctx: &Ctx,
    r: &DescribeConfigsResource,
    synonyms: bool,
    docs: bool,
    version: i16,
) -> DescribeConfigsResult {
    let broker = &ctx.broker;
    let name = r.resource_name.as_str();
    let entries = match r.resource_type {
        RESOURCE_TOPIC => match broker.registry.snapshot().get(name) {
            Some(meta) => topic_config_entries(&broker.config, &meta.configs),
            None => {
                return describe_error(
                    r,
                    &AdminError::new(
                        ResponseError::UnknownTopicOrPartition,
                        format!("no topic `{name}`"),
                    ),
                )
            }
        },
        RESOURCE_BROKER => {
            if name.is_empty() {
                // The cluster-wide dynamic defaults: there are none.
                Vec::new()
            } else if name == broker.config.node_id.to_string() {
                broker_config_entries(&broker.config)
            } else {
                return describe_error(
                    r,
                    &AdminError::new(
                        ResponseError::InvalidRequest,
                        format!(
                            "unexpected broker id, expected {} or empty string, but received {name}",
                            broker.config.node_id
                        ),
                    ),
                );
            }
        }
        other => {
            return describe_error(
                r,
                &AdminError::new(
                    ResponseError::InvalidRequest,
                    format!(
                        "resource type {other} is not supported (only topics (2) and brokers (4))"
                    ),
                ),
            )
        }
    };
    let wanted = |n: &str| {
        r.configuration_keys
            .as_ref()
            .is_none_or(|keys| keys.iter().any(|k| k.as_str() == n))
    };
    let mut out = DescribeConfigsResult::default();
    out.resource_type = r.resource_type;
    out.resource_name = r.resource_name.clone();
    out.error_message = None;
    out.configs = entries
        .into_iter()
        .filter(|e| wanted(&e.name))
        .map(|e| {
            let mut c = DescribeConfigsResourceResult::default();
            c.name = s(e.name);
            c.value = Some(s(e.value));
            c.read_only = e.read_only;
            c.config_source = e.source;
            c.is_sensitive = false;
            if synonyms {
                c.synonyms = e
                    .synonyms
                    .into_iter()
                    .map(|(n, v, src)| {
                        let mut syn = DescribeConfigsSynonym::default();
                        syn.name = s(n);
                        syn.value = Some(s(v));
                        syn.source = src;
                        syn
                    })
                    .collect();
            }
            if version >= 3 {
                c.config_type = e.config_type;
                c.documentation = docs.then(|| s(e.doc));
            }
            c
        })
        .collect();
    out
}

pub async fn handle_incremental_alter(ctx: &Ctx, req: &Request) -> Result<Pending, FrameError> {
    let body: IncrementalAlterConfigsRequest = decode_body(req, "IncrementalAlterConfigs request")?;
    let dups = duplicates(
        body.resources
            .iter()
            .map(|r| (r.resource_type, r.resource_name.as_str())),
    );
    let mut answered = std::collections::HashSet::new();
    let mut resp = IncrementalAlterConfigsResponse::default();
    for r in &body.resources {
        let key = (r.resource_type, r.resource_name.to_string());
        let result = if dups.contains_key(&key) {
            if !answered.insert(key) {
                continue;
            }
            Err(AdminError::new(
                ResponseError::InvalidRequest,
                "resource listed more than once",
            ))
        } else {
            alter_one(ctx, r, body.validate_only).await
        };
        let mut out = AlterConfigsResourceResponse::default();
        out.resource_type = r.resource_type;
        out.resource_name = r.resource_name.clone();
        match result {
            Ok(()) => out.error_message = None,
            Err(e) => {
                out.error_code = e.code.code();
                out.error_message = Some(s(e.message));
            }
        }
        resp.responses.push(out);
    }
    frame(encode_response(
        ApiKey::IncrementalAlterConfigs,
        req.version,
        req.header.correlation_id,
        &resp,
    ))
}

/// The topic overrides after applying `r`'s operations to `current`.
pub fn apply_ops(
    broker: &BrokerConfig,
    current: &BTreeMap<String, String>,
    r: &AlterConfigsResource,
) -> Result<BTreeMap<String, String>, AdminError> {
    let mut next = current.clone();
    let mut seen = std::collections::HashSet::new();
    for op in &r.configs {
        let key = op.name.as_str();
        if !seen.insert(key) {
            return Err(AdminError::new(
                ResponseError::InvalidRequest,
                format!("config `{key}` appears more than once"),
            ));
        }
        if !TOPIC_CONFIGS.contains(&key) {
            return Err(AdminError::new(
                ResponseError::InvalidConfig,
                format!("unknown topic config `{key}`"),
            ));
        }
        let value = op.value.as_ref().map(|v| v.to_string());
        match op.config_operation {
            OP_SET => {
                let Some(v) = value else {
                    return Err(AdminError::new(
                        ResponseError::InvalidRequest,
                        format!("null value for `{key}`"),
                    ));
                };
                next.insert(key.to_string(), v);
            }
            OP_DELETE => {
                next.remove(key);
            }
            OP_APPEND | OP_SUBTRACT => {
                let (_, config_type, _) = topic_config_info(key);
                if config_type != TYPE_LIST {
                    return Err(AdminError::new(
                        ResponseError::InvalidRequest,
                        format!("config value append or subtract is not allowed for config key `{key}`: it is not a list"),
                    ));
                }
                let Some(v) = value else {
                    return Err(AdminError::new(
                        ResponseError::InvalidRequest,
                        format!("null value for `{key}`"),
                    ));
                };
                let now = match next.get(key) {
                    Some(v) => v.clone(),
                    None => log_config_value(key, &broker.log_config()),
                };
                let mut items: Vec<String> = now
                    .split(',')
                    .map(|x| x.trim().to_string())
                    .filter(|x| !x.is_empty())
                    .collect();
                for item in v.split(',').map(str::trim).filter(|x| !x.is_empty()) {
                    if op.config_operation == OP_APPEND {
                        if !items.iter().any(|x| x == item) {
                            items.push(item.to_string());
                        }
                    } else {
                        items.retain(|x| x != item);
                    }
                }
                next.insert(key.to_string(), items.join(","));
            }
            other => {
                return Err(AdminError::new(
                    ResponseError::InvalidRequest,
                    format!("unknown config operation {other} for `{key}`"),
                ))
            }
        }
    }
    // Check the result as a whole (bad values are refused here).
    topic_log_config(broker, &next)?;
    Ok(next)
}

async fn alter_one(
    ctx: &Ctx,
    r: &AlterConfigsResource,
    validate_only: bool,
) -> Result<(), AdminError> {
    let name = r.resource_name.to_string();
    match r.resource_type {
        RESOURCE_TOPIC => {}
        RESOURCE_BROKER => {
            return Err(AdminError::new(
                ResponseError::InvalidRequest,
                "broker configs are static: set them in the config file, environment or flags and restart",
            ))
        }
        other => {
            return Err(AdminError::new(
                ResponseError::InvalidRequest,
                format!("resource type {other} is not supported (only topics (2))"),
            ))
        }
    }
    let broker = ctx.broker.clone();
    let Some(meta) = broker.registry.snapshot().get(&name).cloned() else {
        return Err(AdminError::new(
            ResponseError::UnknownTopicOrPartition,
            format!("no topic `{name}`"),
        ));
    };
    // Check the request against the current configs now (clear errors
    // without touching the registry), then apply it to whatever the configs
    // are under the registry's lock, so concurrent changes compose.
    let wanted = apply_ops(&broker.config, &meta.configs, r)?;
    if let Some(c) = broker.replicated(&name) {
        // Every replica applies the controller's decision.
        if validate_only {
            return Ok(());
        }
        let changes = wanted
            .iter()
            .map(|(k, v)| (k.clone(), Some(v.clone())))
            .collect();
        let cmd = c.with_state(|ctl| ctl.alter_configs(&name, changes, true))?;
        let n = name.clone();
        return c
            .submit(cmd, move |s| {
                s.topic(&n).is_some_and(|t| t.meta.configs == wanted)
            })
            .await;
    }
    let name2 = name.clone();
    let r2 = r.clone();
    let meta = ctx
        .registry(move |b| {
            b.registry.update_configs(
                &b.config,
                &name2,
                |current| apply_ops(&b.config, current, &r2),
                validate_only,
            )
        })
        .await?;
    if validate_only {
        return Ok(());
    }
    tracing::info!(topic = %name, configs = ?meta.configs, "topic configs changed");
    push_log_config(ctx, &meta).await
}

/// Give every open partition of a topic its (new) effective settings.
pub async fn push_log_config(ctx: &Ctx, meta: &TopicMeta) -> Result<(), AdminError> {
    let config = topic_log_config(&ctx.broker.config, &meta.configs)?;
    for p in 0..meta.partitions {
        let tp = TopicPartition::new(&meta.name, p);
        let cfg = config.clone();
        if let Err(e) = ctx
            .with_log(&tp, move |log| async move { log.set_config(cfg) })
            .await
        {
            return Err(AdminError::new(
                ResponseError::KafkaStorageError,
                format!("configs saved, but partition {tp} could not be updated: {e}"),
            ));
        }
    }
    Ok(())
}
