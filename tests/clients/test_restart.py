"""Durability across a clean restart: SIGTERM, start again on the same data
directory, read everything back."""

from __future__ import annotations

import hashlib

import pytest

from helpers import CALL_TIMEOUT, ck_consume_all, ck_consumer, ck_produce, ck_producer, topic_name
from confluent_kafka import TopicPartition


def payload(i: int) -> bytes:
    # Distinct, self-checking values of varying size.
    body = hashlib.sha256(str(i).encode()).hexdigest().encode() * (1 + i % 20)
    return b"%d:" % i + body


@pytest.mark.broker_set("num.partitions=3")
def test_acked_messages_survive_restart(broker):
    n = 3000
    topics = [topic_name("r"), topic_name("r")]
    msgs = [
        {"key": f"k{i % 50}", "value": payload(i), "headers": [("i", str(i).encode())]}
        for i in range(n)
    ]
    p = ck_producer(broker.bootstrap, acks="all", **{"compression.type": "zstd"})
    reports = {t: ck_produce(p, t, msgs) for t in topics}
    for t, rs in reports.items():
        assert all(err is None for err, _, _ in rs), t
    del p
    c = ck_consumer(broker.bootstrap)
    before = {
        (t, part): c.get_watermark_offsets(TopicPartition(t, part), timeout=CALL_TIMEOUT)
        for t in topics
        for part in range(3)
    }
    c.close()

    broker.restart()  # asserts exit code 0

    c = ck_consumer(broker.bootstrap)
    after = {
        (t, part): c.get_watermark_offsets(TopicPartition(t, part), timeout=CALL_TIMEOUT)
        for t in topics
        for part in range(3)
    }
    c.close()
    assert after == before
    for t in topics:
        got = ck_consume_all(broker.bootstrap, t, n)
        assert len(got) == n
        seen = {(m["partition"], m["offset"]): m for m in got}
        for i, (_, part, off) in enumerate(reports[t]):
            m = seen[(part, off)]
            assert m["key"] == msgs[i]["key"].encode()
            assert m["value"] == msgs[i]["value"]
            assert m["headers"] == msgs[i]["headers"]

    # The restarted broker takes new writes after the recovered ones.
    p = ck_producer(broker.bootstrap, acks="all")
    (err, part, off), = ck_produce(p, topics[0], [{"value": b"after", "partition": 0}])
    assert err is None and off == before[(topics[0], 0)][1]


def test_restart_twice_empty_and_with_data(broker):
    topic = topic_name("r2")
    broker.restart()  # nothing written yet
    p = ck_producer(broker.bootstrap, acks="all")
    ck_produce(p, topic, [{"value": b"one"}])
    del p
    broker.restart()
    p = ck_producer(broker.bootstrap, acks="all")
    ck_produce(p, topic, [{"value": b"two"}])
    del p
    broker.restart()
    got = ck_consume_all(broker.bootstrap, topic, 2)
    assert [(m["offset"], m["value"]) for m in got] == [(0, b"one"), (1, b"two")]


def test_topic_metadata_survives_restart(broker):
    """Topics made by CreateTopics/CreatePartitions/IncrementalAlterConfigs
    keep their partitions and configs across a restart; a deleted one stays
    deleted."""
    from confluent_kafka.admin import (
        AdminClient,
        AlterConfigOpType,
        ConfigEntry,
        ConfigResource,
        NewPartitions,
        NewTopic,
    )

    def admin():
        return AdminClient({"bootstrap.servers": broker.bootstrap})

    kept, grown, gone = topic_name("kept"), topic_name("grown"), topic_name("gone")
    a = admin()
    fs = a.create_topics(
        [
            NewTopic(kept, 2, 1, config={"retention.ms": "7200000"}),
            NewTopic(grown, 1, 1),
            NewTopic(gone, 1, 1),
        ],
        request_timeout=CALL_TIMEOUT,
    )
    for f in fs.values():
        assert f.result(timeout=CALL_TIMEOUT + 5) is None
    a.create_partitions([NewPartitions(grown, 3)], request_timeout=CALL_TIMEOUT)[grown].result(
        timeout=CALL_TIMEOUT + 5
    )
    res = ConfigResource(
        ConfigResource.Type.TOPIC,
        kept,
        incremental_configs=[
            ConfigEntry("retention.bytes", "123456789", incremental_operation=AlterConfigOpType.SET)
        ],
    )
    a.incremental_alter_configs([res], request_timeout=CALL_TIMEOUT)[res].result(timeout=CALL_TIMEOUT + 5)
    a.delete_topics([gone], request_timeout=CALL_TIMEOUT)[gone].result(timeout=CALL_TIMEOUT + 5)
    p = ck_producer(broker.bootstrap, acks="all")
    ck_produce(p, grown, [{"value": b"p2", "partition": 2}])
    del p, a

    broker.restart()

    a = admin()
    md = a.list_topics(timeout=CALL_TIMEOUT)
    assert sorted(md.topics[kept].partitions) == [0, 1]
    assert sorted(md.topics[grown].partitions) == [0, 1, 2]
    assert gone not in md.topics
    plain = ConfigResource(ConfigResource.Type.TOPIC, kept)
    cfg = a.describe_configs([plain], request_timeout=CALL_TIMEOUT)[plain].result(timeout=CALL_TIMEOUT + 5)
    assert cfg["retention.ms"].value == "7200000"
    assert cfg["retention.bytes"].value == "123456789"
    got = ck_consume_all(broker.bootstrap, grown, 1)
    assert [(m["partition"], m["offset"], m["value"]) for m in got] == [(2, 0, b"p2")]
