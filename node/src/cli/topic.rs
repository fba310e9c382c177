//! `odradek topic ...`: CreateTopics, Metadata, ListOffsets,
//! DescribeConfigs, CreatePartitions, IncrementalAlterConfigs, DeleteTopics.

use std::collections::{BTreeMap, HashMap};

use clap::Subcommand;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest, DescribeConfigsRequest,
    IncrementalAlterConfigsRequest, ListOffsetsRequest, MetadataResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use serde_json::{json, Value};

use super::client::{Cluster, Conn};
use super::error::{check, CliError, Result};
use super::output;
use super::{key_value, GlobalArgs};

#[derive(Subcommand, Debug)]
pub enum TopicCommand {
    /// Create a topic.
    Create {
        name: String,
        /// Number of partitions.
        #[arg(long, default_value_t = 1)]
        partitions: i32,
        /// Replicas per partition (-1: the broker's default).
        #[arg(long, default_value_t = -1)]
        replication_factor: i16,
        /// Topic config, repeatable: --config retention.ms=60000
        #[arg(long = "config", value_name = "KEY=VALUE", value_parser = key_value)]
        configs: Vec<(String, String)>,
        /// Succeed (exit 0) when the topic already exists.
        #[arg(long)]
        if_not_exists: bool,
    },
    /// List topics.
    List {
        /// Leave out internal topics (__consumer_offsets).
        #[arg(long)]
        exclude_internal: bool,
    },
    /// Partitions (leader, replicas, ISR, log start and end offsets) and configs.
    Describe {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Add partitions, set or delete configs.
    Alter {
        name: String,
        /// New (larger) partition count.
        #[arg(long)]
        partitions: Option<i32>,
        /// Set a config, repeatable: --config retention.ms=60000
        #[arg(long = "config", value_name = "KEY=VALUE", value_parser = key_value)]
        configs: Vec<(String, String)>,
        /// Remove a config override (back to the default), repeatable.
        #[arg(long = "delete-config", value_name = "KEY")]
        delete_configs: Vec<String>,
    },
    /// Delete topics.
    Delete {
        #[arg(required = true)]
        names: Vec<String>,
    },
}

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn tn(s: &str) -> TopicName {
    TopicName(sb(s))
}

fn msg(m: &Option<StrBytes>) -> Option<&str> {
    m.as_deref()
}

pub fn run(cmd: TopicCommand, g: &GlobalArgs) -> Result<()> {
    let mut cluster = Cluster::connect(&g.bootstrap, g.timeout())?;
    match cmd {
        TopicCommand::Create {
            name,
            partitions,
            replication_factor,
            configs,
            if_not_exists,
        } => create(
            &mut cluster,
            g,
            &name,
            partitions,
            replication_factor,
            &configs,
            if_not_exists,
        ),
        TopicCommand::List { exclude_internal } => list(&mut cluster, g, exclude_internal),
        TopicCommand::Describe { names } => describe(&mut cluster, g, &names),
        TopicCommand::Alter {
            name,
            partitions,
            configs,
            delete_configs,
        } => alter(
            &mut cluster,
            g,
            &name,
            partitions,
            &configs,
            &delete_configs,
        ),
        TopicCommand::Delete { names } => delete(&mut cluster, g, &names),
    }
}

/// The broker admin requests go to: the controller when Metadata names
/// one we can reach (pre-KRaft Kafka insists), else the bootstrap broker.
fn admin_conn(cluster: &mut Cluster) -> Result<&mut Conn> {
    let md = cluster.metadata(Some(&[]))?;
    let controller = md.controller_id.0;
    if controller >= 0 && md.brokers.iter().any(|b| b.node_id.0 == controller) {
        cluster.broker(controller)
    } else {
        Ok(&mut cluster.bootstrap)
    }
}

fn timeout_ms(g: &GlobalArgs) -> i32 {
    i32::try_from(g.request_timeout_ms).unwrap_or(i32::MAX)
}

fn create(
    cluster: &mut Cluster,
    g: &GlobalArgs,
    name: &str,
    partitions: i32,
    replication_factor: i16,
    configs: &[(String, String)],
    if_not_exists: bool,
) -> Result<()> {
    let mut t = CreatableTopic::default();
    t.name = tn(name);
    t.num_partitions = partitions;
    t.replication_factor = replication_factor;
    t.configs = configs
        .iter()
        .map(|(k, v)| {
            let mut c = CreatableTopicConfig::default();
            c.name = sb(k);
            c.value = Some(sb(v));
            c
        })
        .collect();
    let mut req = CreateTopicsRequest::default();
    req.topics = vec![t];
    req.timeout_ms = timeout_ms(g);
    let conn = admin_conn(cluster)?;
    let (_, resp) = conn.send(&req, 2, 7)?;
    let r = resp.topics.first().ok_or_else(|| CliError::Malformed {
        addr: conn.addr().into(),
        detail: "CreateTopics answered no topic".into(),
    })?;
    let existed = r.error_code == 36 && if_not_exists; // TOPIC_ALREADY_EXISTS
    if !existed {
        check(
            || format!("creating topic {name}"),
            r.error_code,
            msg(&r.error_message),
        )?;
    }
    if g.json {
        output::json(&json!({
            "name": name,
            "created": !existed,
            "partitions": partitions,
            "topic_id": (!r.topic_id.is_nil()).then(|| r.topic_id.to_string()),
        }))
    } else if existed {
        output::line(&format!("topic {name} already exists"))
    } else {
        output::line(&format!(
            "created topic {name} with {partitions} partition(s)"
        ))
    }
}

fn list(cluster: &mut Cluster, g: &GlobalArgs, exclude_internal: bool) -> Result<()> {
    let md = cluster.metadata(None)?;
    let mut topics: Vec<(String, usize, bool)> = md
        .topics
        .iter()
        .filter(|t| !(exclude_internal && t.is_internal))
        .filter_map(|t| {
            t.name
                .as_ref()
                .map(|n| (n.0.to_string(), t.partitions.len(), t.is_internal))
        })
        .collect();
    topics.sort();
    if g.json {
        let v: Vec<Value> = topics
            .iter()
            .map(|(n, p, i)| json!({"name": n, "partitions": p, "internal": i}))
            .collect();
        output::json(&json!({ "topics": v }))
    } else {
        let rows: Vec<Vec<String>> = topics
            .iter()
            .map(|(n, p, i)| {
                vec![
                    n.clone(),
                    p.to_string(),
                    if *i { "yes".into() } else { String::new() },
                ]
            })
            .collect();
        output::table(&["TOPIC", "PARTITIONS", "INTERNAL"], &rows)
    }
}

/// Offsets for `(topic, partition)` pairs, asked of each partition's
/// leader: `timestamp` -2 is the log start, -1 the log end. A partition
/// whose answer carried an error maps to `Err(code)`.
pub fn list_offsets(
    cluster: &mut Cluster,
    md: &MetadataResponse,
    wanted: &[(String, i32)],
    timestamp: i64,
) -> Result<HashMap<(String, i32), std::result::Result<i64, i16>>> {
    let mut leaders: HashMap<(String, i32), i32> = HashMap::new();
    for t in &md.topics {
        let Some(name) = &t.name else { continue };
        for p in &t.partitions {
            leaders.insert((name.0.to_string(), p.partition_index), p.leader_id.0);
        }
    }
    let mut by_leader: BTreeMap<i32, BTreeMap<String, Vec<i32>>> = BTreeMap::new();
    let mut out = HashMap::new();
    for (t, p) in wanted {
        match leaders.get(&(t.clone(), *p)) {
            Some(&l) if l >= 0 => by_leader
                .entry(l)
                .or_default()
                .entry(t.clone())
                .or_default()
                .push(*p),
            // LEADER_NOT_AVAILABLE or UNKNOWN_TOPIC_OR_PARTITION
            Some(_) => {
                out.insert((t.clone(), *p), Err(5));
            }
            None => {
                out.insert((t.clone(), *p), Err(3));
            }
        }
    }
    for (leader, topics) in by_leader {
        let mut req = ListOffsetsRequest::default();
        req.replica_id = (-1).into();
        req.topics = topics
            .iter()
            .map(|(t, ps)| {
                let mut lt = ListOffsetsTopic::default();
                lt.name = tn(t);
                lt.partitions = ps
                    .iter()
                    .map(|&p| {
                        let mut lp = ListOffsetsPartition::default();
                        lp.partition_index = p;
                        lp.timestamp = timestamp;
                        lp
                    })
                    .collect();
                lt
            })
            .collect();
        // v1: the first with a single offset; v8: the newest Odradek serves
        // (v9+ add timestamp kinds we do not use).
        let (_, resp) = cluster.broker(leader)?.send(&req, 1, 8)?;
        for t in resp.topics {
            for p in t.partitions {
                let v = if p.error_code == 0 {
                    Ok(p.offset)
                } else {
                    Err(p.error_code)
                };
                out.insert((t.name.0.to_string(), p.partition_index), v);
            }
        }
    }
    Ok(out)
}

/// name, value (None: null or sensitive), source, read-only.
type ConfigEntry = (String, Option<String>, &'static str, bool);

/// Kafka's names for DescribeConfigs sources.
fn source_name(s: i8) -> &'static str {
    match s {
        1 => "DYNAMIC_TOPIC_CONFIG",
        2 => "DYNAMIC_BROKER_CONFIG",
        3 => "DYNAMIC_DEFAULT_BROKER_CONFIG",
        4 => "STATIC_BROKER_CONFIG",
        5 => "DEFAULT_CONFIG",
        6 => "DYNAMIC_BROKER_LOGGER_CONFIG",
        7 => "CLIENT_METRICS_CONFIG",
        8 => "GROUP_CONFIG",
        _ => "UNKNOWN",
    }
}

fn offset_json(v: Option<&std::result::Result<i64, i16>>) -> Value {
    match v {
        Some(Ok(o)) => json!(o),
        _ => Value::Null,
    }
}

fn offset_text(v: Option<&std::result::Result<i64, i16>>) -> String {
    match v {
        Some(Ok(o)) => o.to_string(),
        Some(Err(c)) => super::error::error_name(*c),
        None => "-".into(),
    }
}

fn describe(cluster: &mut Cluster, g: &GlobalArgs, names: &[String]) -> Result<()> {
    let md = cluster.metadata(Some(names))?;
    for t in &md.topics {
        let name = t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default();
        check(|| format!("describing topic {name}"), t.error_code, None)?;
    }
    let mut wanted = Vec::new();
    for t in &md.topics {
        let Some(name) = &t.name else { continue };
        for p in &t.partitions {
            wanted.push((name.0.to_string(), p.partition_index));
        }
    }
    let starts = list_offsets(cluster, &md, &wanted, -2)?;
    let ends = list_offsets(cluster, &md, &wanted, -1)?;

    let mut req = DescribeConfigsRequest::default();
    req.resources = names
        .iter()
        .map(|n| {
            let mut r = DescribeConfigsResource::default();
            r.resource_type = 2; // topic
            r.resource_name = sb(n);
            r.configuration_keys = None;
            r
        })
        .collect();
    // A broker without DescribeConfigs still gets its partitions described.
    let results = match cluster.bootstrap.send(&req, 1, 4) {
        Ok((_, cfg)) => cfg.results,
        Err(e @ CliError::Unsupported { .. }) => {
            eprintln!("odradek: {e}; configs not shown");
            Vec::new()
        }
        Err(e) => return Err(e),
    };
    let mut configs: HashMap<String, Vec<ConfigEntry>> = HashMap::new();
    for r in &results {
        check(
            || format!("describing configs of {}", r.resource_name),
            r.error_code,
            msg(&r.error_message),
        )?;
        let mut cs: Vec<_> = r
            .configs
            .iter()
            .map(|c| {
                let value = if c.is_sensitive {
                    None
                } else {
                    c.value.as_ref().map(|v| v.to_string())
                };
                (
                    c.name.to_string(),
                    value,
                    source_name(c.config_source),
                    c.read_only,
                )
            })
            .collect();
        cs.sort();
        configs.insert(r.resource_name.to_string(), cs);
    }

    let mut docs = Vec::new();
    let mut topics: Vec<_> = md.topics.iter().collect();
    topics.sort_by_key(|t| t.name.as_ref().map(|n| n.0.to_string()));
    for t in topics {
        let name = t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default();
        let mut parts: Vec<_> = t.partitions.iter().collect();
        parts.sort_by_key(|p| p.partition_index);
        let key = |p: i32| (name.clone(), p);
        let topic_configs = configs.get(&name).cloned().unwrap_or_default();
        if g.json {
            let ps: Vec<Value> = parts
                .iter()
                .map(|p| {
                    json!({
                        "partition": p.partition_index,
                        "leader": p.leader_id.0,
                        "leader_epoch": p.leader_epoch,
                        "replicas": p.replica_nodes.iter().map(|b| b.0).collect::<Vec<_>>(),
                        "isr": p.isr_nodes.iter().map(|b| b.0).collect::<Vec<_>>(),
                        "log_start_offset": offset_json(starts.get(&key(p.partition_index))),
                        "log_end_offset": offset_json(ends.get(&key(p.partition_index))),
                        "error": (p.error_code != 0).then(|| super::error::error_name(p.error_code)),
                    })
                })
                .collect();
            let cs: serde_json::Map<String, Value> = topic_configs
                .iter()
                .map(|(k, v, s, ro)| (k.clone(), json!({"value": v, "source": s, "read_only": ro})))
                .collect();
            docs.push(json!({
                "name": name,
                "topic_id": (!t.topic_id.is_nil()).then(|| t.topic_id.to_string()),
                "internal": t.is_internal,
                "partitions": ps,
                "configs": cs,
            }));
        } else {
            let id = if t.topic_id.is_nil() {
                String::new()
            } else {
                format!("  id: {}", t.topic_id)
            };
            output::line(&format!(
                "Topic: {name}{id}  partitions: {}{}",
                parts.len(),
                if t.is_internal { "  (internal)" } else { "" }
            ))?;
            let join = |v: &[kafka_protocol::messages::BrokerId]| {
                v.iter()
                    .map(|b| b.0.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            };
            let rows: Vec<Vec<String>> = parts
                .iter()
                .map(|p| {
                    vec![
                        p.partition_index.to_string(),
                        p.leader_id.0.to_string(),
                        join(&p.replica_nodes),
                        join(&p.isr_nodes),
                        offset_text(starts.get(&key(p.partition_index))),
                        offset_text(ends.get(&key(p.partition_index))),
                    ]
                })
                .collect();
            output::table(
                &["PARTITION", "LEADER", "REPLICAS", "ISR", "START", "END"],
                &rows,
            )?;
            let rows: Vec<Vec<String>> = topic_configs
                .iter()
                .map(|(k, v, s, _)| {
                    vec![
                        k.clone(),
                        v.clone().unwrap_or_else(|| "-".into()),
                        s.to_string(),
                    ]
                })
                .collect();
            output::line("")?;
            output::table(&["CONFIG", "VALUE", "SOURCE"], &rows)?;
            output::line("")?;
        }
    }
    if g.json {
        output::json(&json!({ "topics": docs }))?;
    }
    Ok(())
}

fn alter(
    cluster: &mut Cluster,
    g: &GlobalArgs,
    name: &str,
    partitions: Option<i32>,
    configs: &[(String, String)],
    delete_configs: &[String],
) -> Result<()> {
    if partitions.is_none() && configs.is_empty() && delete_configs.is_empty() {
        return Err(CliError::Usage(
            "topic alter: nothing to do (give --partitions, --config or --delete-config)".into(),
        ));
    }
    let timeout = timeout_ms(g);
    let conn = admin_conn(cluster)?;
    let mut done = Vec::new();
    let mut configs_req = None;
    if !configs.is_empty() || !delete_configs.is_empty() {
        let mut res = AlterConfigsResource::default();
        res.resource_type = 2;
        res.resource_name = sb(name);
        for (k, v) in configs {
            let mut c = AlterableConfig::default();
            c.name = sb(k);
            c.config_operation = 0; // SET
            c.value = Some(sb(v));
            res.configs.push(c);
            done.push(format!("{k}={v}"));
        }
        for k in delete_configs {
            let mut c = AlterableConfig::default();
            c.name = sb(k);
            c.config_operation = 1; // DELETE
            c.value = None;
            res.configs.push(c);
            done.push(format!("-{k}"));
        }
        let mut req = IncrementalAlterConfigsRequest::default();
        req.resources = vec![res];
        configs_req = Some(req);
    }
    let alter_configs =
        |conn: &mut Conn, req: &mut IncrementalAlterConfigsRequest, validate_only| -> Result<()> {
            req.validate_only = validate_only;
            let (_, resp) = conn.send(&*req, 0, 1)?;
            for r in &resp.responses {
                check(
                    || format!("altering configs of {name}"),
                    r.error_code,
                    msg(&r.error_message),
                )?;
            }
            Ok(())
        };
    if let Some(count) = partitions {
        // Two requests cannot be atomic; at least do not add partitions and
        // then fail on a config the broker refuses.
        if let Some(req) = configs_req.as_mut() {
            alter_configs(conn, req, true)?;
        }
        let mut t = CreatePartitionsTopic::default();
        t.name = tn(name);
        t.count = count;
        t.assignments = None;
        let mut req = CreatePartitionsRequest::default();
        req.topics = vec![t];
        req.timeout_ms = timeout;
        let (_, resp) = conn.send(&req, 0, 3)?;
        for r in &resp.results {
            check(
                || format!("adding partitions to {name}"),
                r.error_code,
                msg(&r.error_message),
            )?;
        }
        done.insert(0, format!("partitions={count}"));
    }
    if let Some(req) = configs_req.as_mut() {
        alter_configs(conn, req, false)?;
    }
    if g.json {
        output::json(&json!({"name": name, "altered": done}))
    } else {
        output::line(&format!("altered topic {name}: {}", done.join(" ")))
    }
}

fn delete(cluster: &mut Cluster, g: &GlobalArgs, names: &[String]) -> Result<()> {
    let timeout = timeout_ms(g);
    let conn = admin_conn(cluster)?;
    let version = conn.version::<DeleteTopicsRequest>(1, 6)?;
    let mut req = DeleteTopicsRequest::default();
    req.timeout_ms = timeout;
    if version >= 6 {
        req.topics = names
            .iter()
            .map(|n| {
                let mut s = DeleteTopicState::default();
                s.name = Some(tn(n));
                s
            })
            .collect();
    } else {
        req.topic_names = names.iter().map(|n| tn(n)).collect();
    }
    let resp = conn.send_at(&req, version)?;
    let mut first_err = None;
    let mut deleted = Vec::new();
    for r in &resp.responses {
        let n = r.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default();
        match check(
            || format!("deleting topic {n}"),
            r.error_code,
            msg(&r.error_message),
        ) {
            Ok(()) => deleted.push(n),
            // Every failure is reported; the first decides the exit code.
            Err(e) if first_err.is_none() => first_err = Some(e),
            Err(e) => eprintln!("odradek: {e}"),
        }
    }
    if g.json {
        output::json(&json!({ "deleted": deleted }))?;
    } else {
        for n in &deleted {
            output::line(&format!("deleted topic {n}"))?;
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
