//! Admin APIs against a real broker over TCP: CreateTopics, DeleteTopics,
//! CreatePartitions, DescribeConfigs, IncrementalAlterConfigs.

mod common;

use common::{batch, start, Client};
use kafka_protocol::messages::create_partitions_request::{
    CreatePartitionsAssignment, CreatePartitionsTopic,
};
use kafka_protocol::messages::create_topics_request::{
    CreatableReplicaAssignment, CreatableTopic, CreatableTopicConfig,
};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::describe_configs_response::DescribeConfigsResult;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use odradek_engine::log::LogConfig;
use odradek_engine::shard::TopicPartition;
use odradek_node::protocol::served;
use odradek_node::server::Server;
use uuid::Uuid;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn tn(v: &str) -> TopicName {
    TopicName(s(v))
}

fn code(e: ResponseError) -> i16 {
    e.code()
}

fn topic(name: &str, partitions: i32, configs: &[(&str, &str)]) -> CreatableTopic {
    let mut t = CreatableTopic::default();
    t.name = tn(name);
    t.num_partitions = partitions;
    t.replication_factor = -1;
    t.configs = configs
        .iter()
        .map(|(k, v)| {
            let mut c = CreatableTopicConfig::default();
            c.name = s(k);
            c.value = Some(s(v));
            c
        })
        .collect();
    t
}

fn create(
    c: &mut Client,
    version: i16,
    topics: Vec<CreatableTopic>,
    validate_only: bool,
) -> CreateTopicsResponse {
    let mut req = CreateTopicsRequest::default();
    req.topics = topics;
    req.timeout_ms = 5000;
    req.validate_only = validate_only;
    c.send(ApiKey::CreateTopics, version, &req)
}

/// Metadata v12 for `names` (None: all topics), no auto-creation.
fn metadata(c: &mut Client, names: Option<&[&str]>) -> MetadataResponse {
    let mut req = MetadataRequest::default();
    req.allow_auto_topic_creation = false;
    req.topics = names.map(|ns| {
        ns.iter()
            .map(|n| {
                let mut t = MetadataRequestTopic::default();
                t.name = Some(tn(n));
                t
            })
            .collect()
    });
    c.send(ApiKey::Metadata, 12, &req)
}

/// (error code, partition count) of one topic in Metadata.
fn topic_state(c: &mut Client, name: &str) -> (i16, usize) {
    let m = metadata(c, Some(&[name]));
    let t = &m.topics[0];
    (t.error_code, t.partitions.len())
}

fn all_topics(c: &mut Client) -> Vec<String> {
    metadata(c, None)
        .topics
        .iter()
        .map(|t| t.name.as_ref().unwrap().0.to_string())
        .collect()
}

fn describe(
    c: &mut Client,
    version: i16,
    resource_type: i8,
    name: &str,
    keys: Option<&[&str]>,
    synonyms: bool,
) -> DescribeConfigsResult {
    let mut r = DescribeConfigsResource::default();
    r.resource_type = resource_type;
    r.resource_name = s(name);
    r.configuration_keys = keys.map(|ks| ks.iter().map(|k| s(k)).collect());
    let mut req = DescribeConfigsRequest::default();
    req.resources = vec![r];
    req.include_synonyms = synonyms;
    if version >= 3 {
        req.include_documentation = true;
    }
    let mut resp: DescribeConfigsResponse = c.send(ApiKey::DescribeConfigs, version, &req);
    assert_eq!(resp.results.len(), 1);
    resp.results.remove(0)
}

/// (value, source) of config `key` of a topic.
fn topic_config(c: &mut Client, name: &str, key: &str) -> (String, i8) {
    let r = describe(c, 4, 2, name, Some(&[key]), false);
    assert_eq!(r.error_code, 0, "{:?}", r.error_message);
    assert_eq!(r.configs.len(), 1, "{key}");
    let e = &r.configs[0];
    (e.value.as_ref().unwrap().to_string(), e.config_source)
}

fn alter(
    c: &mut Client,
    version: i16,
    name: &str,
    ops: &[(&str, i8, Option<&str>)],
    validate_only: bool,
) -> (i16, Option<String>) {
    let mut r = AlterConfigsResource::default();
    r.resource_type = 2;
    r.resource_name = s(name);
    r.configs = ops
        .iter()
        .map(|(k, op, v)| {
            let mut a = AlterableConfig::default();
            a.name = s(k);
            a.config_operation = *op;
            a.value = v.map(s);
            a
        })
        .collect();
    let mut req = IncrementalAlterConfigsRequest::default();
    req.resources = vec![r];
    req.validate_only = validate_only;
    let resp: IncrementalAlterConfigsResponse =
        c.send(ApiKey::IncrementalAlterConfigs, version, &req);
    let r = &resp.responses[0];
    assert_eq!(r.resource_name.as_str(), name);
    (
        r.error_code,
        r.error_message.as_ref().map(|m| m.to_string()),
    )
}

fn grow(
    c: &mut Client,
    version: i16,
    name: &str,
    count: i32,
    validate_only: bool,
) -> (i16, Option<String>) {
    let mut t = CreatePartitionsTopic::default();
    t.name = tn(name);
    t.count = count;
    // Null, as the Java admin client sends when the broker places them.
    t.assignments = None;
    let mut req = CreatePartitionsRequest::default();
    req.topics = vec![t];
    req.timeout_ms = 5000;
    req.validate_only = validate_only;
    let resp: CreatePartitionsResponse = c.send(ApiKey::CreatePartitions, version, &req);
    let r = &resp.results[0];
    (
        r.error_code,
        r.error_message.as_ref().map(|m| m.to_string()),
    )
}

/// The settings of an open partition log, read on its owner shard.
fn log_config(server: &Server, name: &str, partition: i32) -> Option<LogConfig> {
    let tp = TopicPartition::new(name, partition);
    let shards = &server.broker.shards;
    shards
        .call(shards.owner_of(&tp), move |shard| async move {
            shard.partition(&tp).map(|l| l.config())
        })
        .unwrap()
}

fn partition_dir(server: &Server, name: &str, partition: i32) -> std::path::PathBuf {
    server
        .broker
        .config
        .log_dir
        .join(TopicPartition::new(name, partition).dir_name())
}

#[test]
fn create_topics_checks_each_topic() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(
        dir.path(),
        &[
            ("num.partitions", "2"),
            ("auto.create.topics.enable", "false"),
        ],
    );
    let mut c = Client::connect(server.local_addr);

    // A topic with an override, at the newest version.
    let resp = create(
        &mut c,
        7,
        vec![topic("a", 3, &[("retention.ms", "1000")])],
        false,
    );
    let r = &resp.topics[0];
    assert_eq!(
        (r.name.0.as_str(), r.error_code),
        ("a", 0),
        "{:?}",
        r.error_message
    );
    assert_eq!(r.error_message, None);
    assert_eq!((r.num_partitions, r.replication_factor), (3, 1));
    assert!(!r.topic_id.is_nil());
    let configs = r.configs.as_ref().unwrap();
    let get = |k: &str| configs.iter().find(|c| c.name.as_str() == k).unwrap();
    assert_eq!(get("retention.ms").value.as_deref(), Some("1000"));
    assert_eq!(get("retention.ms").config_source, 1);
    assert_eq!(get("segment.bytes").config_source, 5);
    assert_eq!(topic_state(&mut c, "a"), (0, 3));
    let m = metadata(&mut c, Some(&["a"]));
    assert_eq!(m.topics[0].topic_id, r.topic_id);
    for p in 0..3 {
        assert!(partition_dir(&server, "a", p).is_dir());
    }
    assert_eq!(
        log_config(&server, "a", 0).unwrap().retention_ms,
        Some(1000)
    );

    // Already exists.
    let r = &create(&mut c, 7, vec![topic("a", 1, &[])], false).topics[0];
    assert_eq!(r.error_code, code(ResponseError::TopicAlreadyExists));
    assert!(r.error_message.as_ref().is_some_and(|m| !m.is_empty()));

    // validate_only: answered like a creation, nothing created.
    let r = &create(&mut c, 7, vec![topic("b", 4, &[])], true).topics[0];
    assert_eq!(r.error_code, 0, "{:?}", r.error_message);
    assert_eq!(r.num_partitions, 4);
    assert_eq!(
        topic_state(&mut c, "b").0,
        code(ResponseError::UnknownTopicOrPartition)
    );
    assert!(!partition_dir(&server, "b", 0).exists());
    // ... and it still refuses what a creation would.
    let r = &create(&mut c, 7, vec![topic("a", 1, &[])], true).topics[0];
    assert_eq!(r.error_code, code(ResponseError::TopicAlreadyExists));

    // A name twice in one request: one INVALID_REQUEST answer, nothing made.
    let resp = create(
        &mut c,
        7,
        vec![topic("c", 1, &[]), topic("c", 1, &[]), topic("c2", 1, &[])],
        false,
    );
    assert_eq!(resp.topics.len(), 2);
    assert_eq!(resp.topics[0].name.0.as_str(), "c");
    assert_eq!(
        resp.topics[0].error_code,
        code(ResponseError::InvalidRequest)
    );
    assert_eq!(resp.topics[1].error_code, 0);
    assert_eq!(
        topic_state(&mut c, "c").0,
        code(ResponseError::UnknownTopicOrPartition)
    );

    // Bad configs.
    let resp = create(
        &mut c,
        7,
        vec![
            topic("d", 1, &[("retention.ms", "soon")]),
            topic("e", 1, &[("no.such.config", "1")]),
            topic("e2", 1, &[("segment.bytes", "10")]),
        ],
        false,
    );
    for r in &resp.topics {
        assert_eq!(r.error_code, code(ResponseError::InvalidConfig), "{r:?}");
        assert!(r.error_message.as_ref().is_some_and(|m| !m.is_empty()));
        assert_eq!(r.num_partitions, -1);
    }
    let msg = resp.topics[0].error_message.as_ref().unwrap();
    assert!(msg.contains("retention.ms"), "{msg}");
    assert!(!all_topics(&mut c)
        .iter()
        .any(|t| t.starts_with('d') || t.starts_with('e')));

    // Replication factor 3: not yet.
    let mut t = topic("f", 1, &[]);
    t.replication_factor = 3;
    let r = &create(&mut c, 7, vec![t], false).topics[0];
    assert_eq!(r.error_code, code(ResponseError::InvalidReplicationFactor));
    assert!(r.error_message.as_ref().unwrap().contains('3'));
    let mut t = topic("f", 1, &[]);
    t.replication_factor = 0;
    let r = &create(&mut c, 7, vec![t], false).topics[0];
    assert_eq!(r.error_code, code(ResponseError::InvalidReplicationFactor));

    // Manual assignments: not supported.
    let mut t = topic("g", -1, &[]);
    let mut a = CreatableReplicaAssignment::default();
    a.partition_index = 0;
    a.broker_ids = vec![BrokerId(0)];
    t.assignments = vec![a];
    let r = &create(&mut c, 7, vec![t], false).topics[0];
    assert_eq!(r.error_code, code(ResponseError::InvalidRequest));

    // Bad partition counts and names.
    let resp = create(
        &mut c,
        7,
        vec![topic("h", 0, &[]), topic("bad name", 1, &[])],
        false,
    );
    assert_eq!(
        resp.topics[0].error_code,
        code(ResponseError::InvalidPartitions)
    );
    assert_eq!(
        resp.topics[1].error_code,
        code(ResponseError::InvalidTopicException)
    );

    // -1 partitions: the broker's num.partitions; replication factor 1 is fine.
    let mut t = topic("i", -1, &[]);
    t.replication_factor = 1;
    let r = &create(&mut c, 7, vec![t], false).topics[0];
    assert_eq!((r.error_code, r.num_partitions), (0, 2));
    assert_eq!(topic_state(&mut c, "i"), (0, 2));

    // Every served version encodes and decodes.
    let (lo, hi) = served(ApiKey::CreateTopics).unwrap();
    for v in lo..=hi {
        let name = format!("v{v}");
        let resp = create(&mut c, v, vec![topic(&name, 1, &[])], false);
        assert_eq!(resp.topics[0].error_code, 0, "v{v}");
        let again = create(&mut c, v, vec![topic(&name, 1, &[])], false);
        assert_eq!(
            again.topics[0].error_code,
            code(ResponseError::TopicAlreadyExists),
            "v{v}"
        );
        assert_eq!(topic_state(&mut c, &name), (0, 1));
    }
    server.shutdown();
}

#[test]
fn configs_describe_alter_and_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[("log.retention.bytes", "1000000000")]);
    let mut c = Client::connect(server.local_addr);
    let r = &create(
        &mut c,
        7,
        vec![topic("t", 2, &[("segment.bytes", "1048576")])],
        false,
    )
    .topics[0];
    assert_eq!(r.error_code, 0);

    // Defaults vs overrides vs broker settings, with synonyms and docs.
    let r = describe(&mut c, 4, 2, "t", None, true);
    assert_eq!(r.error_code, 0);
    assert_eq!(r.resource_name.as_str(), "t");
    let names: Vec<&str> = r.configs.iter().map(|c| c.name.as_str()).collect();
    for k in odradek_node::metadata::TOPIC_CONFIGS {
        assert!(names.contains(k), "{k} missing from {names:?}");
    }
    let get = |k: &str| r.configs.iter().find(|c| c.name.as_str() == k).unwrap();
    let seg = get("segment.bytes");
    assert_eq!(seg.value.as_deref(), Some("1048576"));
    assert_eq!(
        (seg.config_source, seg.read_only, seg.is_sensitive),
        (1, false, false)
    );
    assert_eq!(seg.synonyms[0].source, 1);
    assert!(seg
        .synonyms
        .iter()
        .any(|s| s.name.as_str() == "log.segment.bytes" && s.source == 5));
    let ret = get("retention.ms");
    assert_eq!(ret.value.as_deref(), Some("604800000"));
    assert_eq!(ret.config_source, 5);
    assert_eq!(ret.config_type, 5); // LONG
    assert!(ret.documentation.as_ref().is_some_and(|d| !d.is_empty()));
    // Set in the broker's settings: STATIC_BROKER_CONFIG.
    let bytes = get("retention.bytes");
    assert_eq!(bytes.value.as_deref(), Some("1000000000"));
    assert_eq!(bytes.config_source, 4);
    assert_eq!(get("cleanup.policy").value.as_deref(), Some("delete"));
    assert_eq!(get("cleanup.policy").config_type, 7); // LIST

    // The key filter, and no synonyms unless asked.
    let r = describe(&mut c, 4, 2, "t", Some(&["retention.ms", "no.such"]), false);
    assert_eq!(r.configs.len(), 1);
    assert!(r.configs[0].synonyms.is_empty());

    // Every served version.
    let (lo, hi) = served(ApiKey::DescribeConfigs).unwrap();
    for v in lo..=hi {
        let r = describe(&mut c, v, 2, "t", None, true);
        assert_eq!(r.error_code, 0, "v{v}");
        assert_eq!(r.configs.len(), odradek_node::metadata::TOPIC_CONFIGS.len());
    }

    // Unknown topic; the broker; other resource types.
    let r = describe(&mut c, 4, 2, "nope", None, false);
    assert_eq!(r.error_code, code(ResponseError::UnknownTopicOrPartition));
    let r = describe(&mut c, 4, 4, "0", None, false);
    assert_eq!(r.error_code, 0);
    let np = r
        .configs
        .iter()
        .find(|c| c.name.as_str() == "num.partitions")
        .unwrap();
    assert_eq!((np.value.as_deref(), np.read_only), (Some("1"), true));
    assert!(r
        .configs
        .iter()
        .any(|c| c.name.as_str() == "log.retention.bytes" && c.config_source == 4));
    let r = describe(&mut c, 4, 4, "", None, false);
    assert_eq!((r.error_code, r.configs.len()), (0, 0));
    let r = describe(&mut c, 4, 4, "7", None, false);
    assert_eq!(r.error_code, code(ResponseError::InvalidRequest));
    let r = describe(&mut c, 4, 32, "g", None, false);
    assert_eq!(r.error_code, code(ResponseError::InvalidRequest));

    // SET and DELETE in one go; the open logs follow at once.
    let (err, msg) = alter(
        &mut c,
        1,
        "t",
        &[
            ("retention.ms", 0, Some("3600000")),
            ("segment.bytes", 1, None),
        ],
        false,
    );
    assert_eq!(err, 0, "{msg:?}");
    assert_eq!(
        topic_config(&mut c, "t", "retention.ms"),
        ("3600000".into(), 1)
    );
    assert_eq!(
        topic_config(&mut c, "t", "segment.bytes"),
        ("1073741824".into(), 5)
    );
    for p in 0..2 {
        let cfg = log_config(&server, "t", p).unwrap();
        assert_eq!(cfg.retention_ms, Some(3_600_000));
        assert_eq!(cfg.segment_bytes, 1 << 30);
    }
    // -1 is Kafka's "forever".
    assert_eq!(
        alter(&mut c, 0, "t", &[("retention.bytes", 0, Some("-1"))], false).0,
        0
    );
    assert_eq!(
        topic_config(&mut c, "t", "retention.bytes"),
        ("-1".into(), 1)
    );
    assert_eq!(log_config(&server, "t", 1).unwrap().retention_bytes, None);

    // validate_only changes nothing.
    let (err, _) = alter(&mut c, 1, "t", &[("retention.ms", 0, Some("5"))], true);
    assert_eq!(err, 0);
    assert_eq!(topic_config(&mut c, "t", "retention.ms").0, "3600000");

    // Refusals: bad value, unknown key, append to a number, unknown topic,
    // a key twice, null SET.
    let (err, msg) = alter(&mut c, 1, "t", &[("retention.ms", 0, Some("soon"))], false);
    assert_eq!(err, code(ResponseError::InvalidConfig));
    assert!(msg.unwrap().contains("soon"));
    let (err, _) = alter(&mut c, 1, "t", &[("no.such", 0, Some("1"))], false);
    assert_eq!(err, code(ResponseError::InvalidConfig));
    let (err, _) = alter(&mut c, 1, "t", &[("retention.ms", 2, Some("1"))], false);
    assert_eq!(err, code(ResponseError::InvalidRequest));
    let (err, _) = alter(&mut c, 1, "t", &[("retention.ms", 3, Some("1"))], false);
    assert_eq!(err, code(ResponseError::InvalidRequest));
    let (err, _) = alter(&mut c, 1, "nope", &[("retention.ms", 0, Some("1"))], false);
    assert_eq!(err, code(ResponseError::UnknownTopicOrPartition));
    let (err, _) = alter(
        &mut c,
        1,
        "t",
        &[("retention.ms", 0, Some("1")), ("retention.ms", 1, None)],
        false,
    );
    assert_eq!(err, code(ResponseError::InvalidRequest));
    let (err, _) = alter(&mut c, 1, "t", &[("retention.ms", 0, None)], false);
    assert_eq!(err, code(ResponseError::InvalidRequest));
    assert_eq!(topic_config(&mut c, "t", "retention.ms").0, "3600000");

    // APPEND / SUBTRACT on the list-typed cleanup.policy.
    assert_eq!(
        alter(
            &mut c,
            1,
            "t",
            &[("cleanup.policy", 2, Some("compact"))],
            false
        )
        .0,
        0
    );
    assert_eq!(
        topic_config(&mut c, "t", "cleanup.policy"),
        ("delete,compact".into(), 1)
    );
    assert_eq!(
        alter(
            &mut c,
            1,
            "t",
            &[("cleanup.policy", 3, Some("compact"))],
            false
        )
        .0,
        0
    );
    assert_eq!(topic_config(&mut c, "t", "cleanup.policy").0, "delete");

    // A restart on the same directory keeps the overrides, and the
    // recovered logs run with them.
    drop(c);
    server.shutdown();
    let server = start(dir.path(), &[]);
    let mut c = Client::connect(server.local_addr);
    assert_eq!(
        topic_config(&mut c, "t", "retention.ms"),
        ("3600000".into(), 1)
    );
    assert_eq!(
        topic_config(&mut c, "t", "retention.bytes"),
        ("-1".into(), 1)
    );
    assert_eq!(topic_config(&mut c, "t", "segment.bytes").1, 5);
    assert_eq!(
        log_config(&server, "t", 0).unwrap().retention_ms,
        Some(3_600_000)
    );
    server.shutdown();
}

#[test]
fn create_partitions_only_grows() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[("auto.create.topics.enable", "false")]);
    let mut c = Client::connect(server.local_addr);
    assert_eq!(
        create(&mut c, 7, vec![topic("p", 1, &[])], false).topics[0].error_code,
        0
    );

    let (err, msg) = grow(&mut c, 3, "p", 3, false);
    assert_eq!(err, 0, "{msg:?}");
    assert_eq!(topic_state(&mut c, "p"), (0, 3));
    // The new partitions take records.
    for p in 1..3 {
        assert_eq!(c.produce("p", p, 1, batch(&["x", "y"])), (0, 0));
        assert_eq!(c.end_offset("p", p), (0, 2));
    }

    // Same or fewer: refused, with a message.
    for n in [3, 2] {
        let (err, msg) = grow(&mut c, 3, "p", n, false);
        assert_eq!(err, code(ResponseError::InvalidPartitions));
        assert!(msg.unwrap().contains('3'));
    }
    // validate_only: nothing changes.
    assert_eq!(grow(&mut c, 3, "p", 5, true).0, 0);
    assert_eq!(topic_state(&mut c, "p"), (0, 3));
    assert!(!partition_dir(&server, "p", 3).exists());
    // Unknown topic; assignments.
    assert_eq!(
        grow(&mut c, 3, "nope", 5, false).0,
        code(ResponseError::UnknownTopicOrPartition)
    );
    let mut t = CreatePartitionsTopic::default();
    t.name = tn("p");
    t.count = 4;
    let mut a = CreatePartitionsAssignment::default();
    a.broker_ids = vec![BrokerId(0)];
    t.assignments = Some(vec![a]);
    let mut req = CreatePartitionsRequest::default();
    req.topics = vec![t];
    let resp: CreatePartitionsResponse = c.send(ApiKey::CreatePartitions, 3, &req);
    assert_eq!(
        resp.results[0].error_code,
        code(ResponseError::InvalidReplicaAssignment)
    );

    // Every served version.
    let (lo, hi) = served(ApiKey::CreatePartitions).unwrap();
    for v in lo..=hi {
        let before = topic_state(&mut c, "p").1 as i32;
        assert_eq!(grow(&mut c, v, "p", before + 1, false).0, 0, "v{v}");
        assert_eq!(topic_state(&mut c, "p").1 as i32, before + 1);
    }
    // Grown partitions are reopened after a restart.
    let total = topic_state(&mut c, "p").1 as i32;
    drop(c);
    server.shutdown();
    let server = start(dir.path(), &[]);
    let mut c = Client::connect(server.local_addr);
    assert_eq!(topic_state(&mut c, "p"), (0, total as usize));
    assert_eq!(c.end_offset("p", 2), (0, 2));
    assert_eq!(c.produce("p", total - 1, 1, batch(&["z"])), (0, 0));
    server.shutdown();
}

#[test]
fn delete_topics_removes_logs() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[("auto.create.topics.enable", "false")]);
    let mut c = Client::connect(server.local_addr);
    let resp = create(
        &mut c,
        7,
        vec![
            topic("d1", 2, &[]),
            topic("d2", 1, &[]),
            topic("d3", 1, &[]),
            topic("d4", 1, &[]),
        ],
        false,
    );
    assert!(resp.topics.iter().all(|t| t.error_code == 0));
    let d2_id = resp.topics[1].topic_id;
    for p in 0..2 {
        assert_eq!(c.produce("d1", p, 1, batch(&["a", "b", "c"])).0, 0);
    }

    // By name (v4), with an unknown one beside it.
    let mut req = DeleteTopicsRequest::default();
    req.topic_names = vec![tn("d1"), tn("nope")];
    req.timeout_ms = 5000;
    let resp: DeleteTopicsResponse = c.send(ApiKey::DeleteTopics, 4, &req);
    assert_eq!(resp.responses.len(), 2);
    assert_eq!(resp.responses[0].name.as_ref().unwrap().0.as_str(), "d1");
    assert_eq!(resp.responses[0].error_code, 0);
    assert_eq!(
        resp.responses[1].error_code,
        code(ResponseError::UnknownTopicOrPartition)
    );
    for p in 0..2 {
        assert!(!partition_dir(&server, "d1", p).exists(), "d1-{p} left");
        assert!(log_config(&server, "d1", p).is_none());
    }
    assert!(!all_topics(&mut c).contains(&"d1".to_string()));
    assert_eq!(
        topic_state(&mut c, "d1").0,
        code(ResponseError::UnknownTopicOrPartition)
    );
    assert_eq!(
        c.produce("d1", 0, 1, batch(&["late"])).0,
        code(ResponseError::UnknownTopicOrPartition)
    );

    // A new topic of the same name starts empty.
    assert_eq!(
        create(&mut c, 7, vec![topic("d1", 1, &[])], false).topics[0].error_code,
        0
    );
    assert_eq!(c.end_offset("d1", 0), (0, 0));

    // By id (v6); unknown id; name and id both; a topic twice.
    let mut by_id = DeleteTopicState::default();
    by_id.name = None;
    by_id.topic_id = d2_id;
    let mut unknown = DeleteTopicState::default();
    unknown.name = None;
    unknown.topic_id = Uuid::new_v4();
    let mut both = DeleteTopicState::default();
    both.name = Some(tn("d3"));
    both.topic_id = Uuid::new_v4();
    let mut twice = DeleteTopicState::default();
    twice.name = Some(tn("d4"));
    let mut req = DeleteTopicsRequest::default();
    req.topics = vec![by_id, unknown.clone(), both, twice.clone(), twice];
    let resp: DeleteTopicsResponse = c.send(ApiKey::DeleteTopics, 6, &req);
    assert_eq!(resp.responses.len(), 4);
    let r = &resp.responses[0];
    assert_eq!(
        (
            r.name.as_ref().unwrap().0.as_str(),
            r.topic_id,
            r.error_code
        ),
        ("d2", d2_id, 0)
    );
    let r = &resp.responses[1];
    assert_eq!(
        (r.topic_id, r.error_code),
        (unknown.topic_id, code(ResponseError::UnknownTopicId))
    );
    assert!(r.error_message.is_some());
    assert_eq!(
        resp.responses[2].error_code,
        code(ResponseError::InvalidRequest)
    );
    assert_eq!(
        resp.responses[3].error_code,
        code(ResponseError::InvalidRequest)
    );
    assert!(!partition_dir(&server, "d2", 0).exists());
    let left = all_topics(&mut c);
    assert!(!left.contains(&"d2".to_string()));
    assert!(left.contains(&"d3".to_string()) && left.contains(&"d4".to_string()));

    // Every served version (by name).
    let (lo, hi) = served(ApiKey::DeleteTopics).unwrap();
    for v in lo..=hi {
        let name = format!("dv{v}");
        assert_eq!(
            create(&mut c, 7, vec![topic(&name, 1, &[])], false).topics[0].error_code,
            0
        );
        let mut req = DeleteTopicsRequest::default();
        if v >= 6 {
            let mut t = DeleteTopicState::default();
            t.name = Some(tn(&name));
            req.topics = vec![t];
        } else {
            req.topic_names = vec![tn(&name)];
        }
        let resp: DeleteTopicsResponse = c.send(ApiKey::DeleteTopics, v, &req);
        assert_eq!(resp.responses[0].error_code, 0, "v{v}");
        assert!(!partition_dir(&server, &name, 0).exists());
    }

    // After a restart the deleted topics stay deleted.
    drop(c);
    server.shutdown();
    let server = start(dir.path(), &[("auto.create.topics.enable", "false")]);
    let mut c = Client::connect(server.local_addr);
    let mut left = all_topics(&mut c);
    left.sort();
    assert_eq!(left, ["d1", "d3", "d4"]);
    server.shutdown();
}

#[test]
fn api_versions_advertise_the_admin_apis() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    let mut c = Client::connect(server.local_addr);
    let resp: ApiVersionsResponse = c.send(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    for key in [
        ApiKey::CreateTopics,
        ApiKey::DeleteTopics,
        ApiKey::CreatePartitions,
        ApiKey::DescribeConfigs,
        ApiKey::IncrementalAlterConfigs,
    ] {
        let v = resp
            .api_keys
            .iter()
            .find(|v| v.api_key == key as i16)
            .unwrap_or_else(|| panic!("{key:?} not advertised"));
        let crate_range = key.valid_versions();
        assert!(v.min_version >= crate_range.min && v.max_version <= crate_range.max);
        assert_eq!(Some((v.min_version, v.max_version)), served(key));
    }
    server.shutdown();
}

/// docs/protocol.md lists every API key of the crate, with the served
/// versions of `SERVED` and status "served" exactly for those.
#[test]
fn protocol_doc_lists_every_api_key() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/protocol.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    let range = |lo: i16, hi: i16| {
        if lo == hi {
            lo.to_string()
        } else {
            format!("{lo}–{hi}")
        }
    };
    let mut rows = std::collections::BTreeMap::new();
    for line in doc.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 7 {
            continue;
        }
        if let Ok(key) = cells[1].parse::<i16>() {
            assert!(
                rows.insert(key, cells[2..6].to_vec()).is_none(),
                "key {key} listed twice"
            );
        }
    }
    let mut missing = Vec::new();
    for key in ApiKey::iter() {
        let Some(row) = rows.remove(&(key as i16)) else {
            missing.push(format!("{} {key:?}", key as i16));
            continue;
        };
        let crate_range = key.valid_versions();
        assert_eq!(row[0], format!("{key:?}"), "name of key {}", key as i16);
        assert_eq!(row[1], range(crate_range.min, crate_range.max), "{key:?}");
        match served(key) {
            Some((lo, hi)) => {
                assert_eq!(
                    (row[2], row[3]),
                    (range(lo, hi).as_str(), "served"),
                    "{key:?}"
                )
            }
            None => {
                assert_eq!(row[2], "—", "{key:?}");
                assert!(
                    row[3].starts_with("planned") || row[3] == "not planned",
                    "{key:?}"
                );
            }
        }
    }
    assert!(missing.is_empty(), "docs/protocol.md lacks {missing:?}");
    assert!(
        rows.is_empty(),
        "docs/protocol.md lists unknown keys {rows:?}"
    );
}
