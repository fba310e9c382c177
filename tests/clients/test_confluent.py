"""confluent-kafka (librdkafka) producer, consumer (assign(), no group
coordination) and AdminClient against the real broker."""

from __future__ import annotations

import time
from collections import Counter, defaultdict

import pytest

confluent_kafka = pytest.importorskip("confluent_kafka")
from confluent_kafka import (  # noqa: E402
    OFFSET_END,
    TIMESTAMP_CREATE_TIME,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import (  # noqa: E402
    AdminClient,
    ConfigResource,
    NewPartitions,
    NewTopic,
)

from helpers import (  # noqa: E402
    CALL_TIMEOUT,
    CODEC_IDS,
    ck_consume_all,
    ck_consumer,
    ck_partitions,
    ck_produce,
    ck_producer,
    stored_batches,
    stored_codecs,
    topic_name,
)

def admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 10000})


def admin_create(bootstrap: str, topic: str, partitions: int) -> None:
    a = admin(bootstrap)  # keep the handle alive until the result is in
    fs = a.create_topics(
        [NewTopic(topic, num_partitions=partitions, replication_factor=1)],
        operation_timeout=CALL_TIMEOUT,
        request_timeout=CALL_TIMEOUT,
    )
    fs[topic].result(timeout=CALL_TIMEOUT + 5)


def make_topic(bootstrap: str, topic: str, partitions: int) -> str:
    """Create `topic` with CreateTopics if the broker serves it, else by
    auto-create (the broker must then run with num.partitions=partitions).
    Either way the topic must end up with `partitions` partitions."""
    try:
        admin_create(bootstrap, topic, partitions)
        how = "CreateTopics"
    except KafkaException as e:
        # A broker without CreateTopics closes the connection on it.
        if e.args[0].code() != KafkaError._TRANSPORT:
            raise
        how = "auto-create"
    # A producer's Metadata request allows auto-creation (a consumer's does not).
    parts = ck_partitions(ck_producer(bootstrap), topic, want=partitions)
    assert parts == list(range(partitions)), f"{how}: {parts}"
    return how


# -- partitioning and ordering --------------------------------------------


@pytest.mark.broker_set("num.partitions=4")
def test_keyed_messages_stay_in_one_partition_in_order(bootstrap):
    topic = topic_name("keyed")
    make_topic(bootstrap, topic, 4)
    keys = [f"user-{k}" for k in range(16)]
    msgs = [{"key": k, "value": f"{k}:{seq}"} for seq in range(25) for k in keys]
    p = ck_producer(bootstrap, acks="all")
    reports = ck_produce(p, topic, msgs)
    assert all(err is None for err, _, _ in reports), reports
    got = ck_consume_all(bootstrap, topic, len(msgs))
    assert len(got) == len(msgs)
    by_key = defaultdict(list)
    for m in sorted(got, key=lambda m: (m["partition"], m["offset"])):
        by_key[m["key"].decode()].append(m)
    assert sorted(by_key) == sorted(keys)
    for k, ms in by_key.items():
        assert {m["partition"] for m in ms} == {ms[0]["partition"]}, f"key {k} spread over partitions"
        # In order within the partition: sequence numbers increase with offsets.
        assert [m["value"].decode() for m in ms] == [f"{k}:{seq}" for seq in range(25)]
    # 16 keys over 4 partitions: the hash should not put them all in one.
    assert len({ms[0]["partition"] for ms in by_key.values()}) > 1
    # The delivery reports agree with what was read.
    for (err, part, off), m in zip(reports, msgs):
        assert part == by_key[m["key"]][0]["partition"]


@pytest.mark.broker_set("num.partitions=4")
def test_keyless_messages_spread_over_partitions(bootstrap):
    topic = topic_name("keyless")
    make_topic(bootstrap, topic, 4)
    # No sticky batching, so each keyless message picks a partition.
    p = ck_producer(bootstrap, **{"sticky.partitioning.linger.ms": 0, "linger.ms": 0})
    msgs = [{"value": f"v{i}"} for i in range(400)]
    reports = ck_produce(p, topic, msgs)
    assert all(err is None for err, _, _ in reports)
    per_partition = Counter(part for _, part, _ in reports)
    assert set(per_partition) == {0, 1, 2, 3}, per_partition
    got = ck_consume_all(bootstrap, topic, len(msgs))
    assert Counter(m["partition"] for m in got) == per_partition
    assert sorted(m["value"] for m in got) == sorted(m["value"].encode() for m in msgs)


# -- exactly once from earliest, headers, timestamps ----------------------


@pytest.mark.broker_set("num.partitions=3")
def test_consume_from_earliest_gets_everything_exactly_once(bootstrap):
    topic = topic_name("all")
    base_ts = int(time.time() * 1000) - 3_600_000
    msgs = [
        {
            "key": f"k{i % 37}",
            "value": f"value-{i}".encode() * (1 + i % 7),
            "headers": [("seq", str(i).encode()), ("empty", b""), ("dup", b"1"), ("dup", b"2")],
            "timestamp": base_ts + i,
        }
        for i in range(1000)
    ]
    p = ck_producer(bootstrap, acks="all", **{"batch.num.messages": 100})
    reports = ck_produce(p, topic, msgs)
    assert all(err is None for err, _, _ in reports)
    got = ck_consume_all(bootstrap, topic, len(msgs), settle=2.0)
    assert len(got) == len(msgs), "duplicates or losses"
    # Offsets are dense per partition and match the delivery reports.
    seen = {(m["partition"], m["offset"]): m for m in got}
    assert len(seen) == len(got)
    for part in {m["partition"] for m in got}:
        offs = sorted(o for (p_, o) in seen if p_ == part)
        assert offs == list(range(len(offs)))
    for i, (err, part, off) in enumerate(reports):
        m = seen[(part, off)]
        assert m["key"] == msgs[i]["key"].encode()
        assert m["value"] == msgs[i]["value"]
        assert m["headers"] == [("seq", str(i).encode()), ("empty", b""), ("dup", b"1"), ("dup", b"2")]
        assert m["timestamp"] == (TIMESTAMP_CREATE_TIME, base_ts + i)


# -- compression ------------------------------------------------------------



def produce_with_codec(broker, codec):
    topic = topic_name(f"c{codec}")
    p = ck_producer(broker.bootstrap, **{"compression.type": codec, "linger.ms": 20})
    msgs = [{"key": f"k{i}", "value": (f"{codec} {i} " + "payload " * 30).encode()} for i in range(500)]
    reports = ck_produce(p, topic, msgs)
    assert all(err is None for err, _, _ in reports)
    return topic, msgs


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_compression_round_trip(broker, codec):
    topic, msgs = produce_with_codec(broker, codec)
    got = ck_consume_all(broker.bootstrap, topic, len(msgs))
    assert [(m["offset"], m["key"], m["value"]) for m in got] == [
        (i, m["key"].encode(), m["value"]) for i, m in enumerate(msgs)
    ]


@pytest.mark.parametrize(
    "codec",
    [
        "gzip",
        "snappy",
        "lz4",
        "zstd",
    ],
)
def test_compressed_batches_are_stored_compressed(broker, codec):
    topic, msgs = produce_with_codec(broker, codec)
    pdir = broker.partition_dir(topic, 0)
    assert stored_codecs(pdir) == {CODEC_IDS[codec]}, stored_batches(pdir)
    assert sum(c for (_, _, c, _) in stored_batches(pdir)) == len(msgs)


# -- acks ---------------------------------------------------------------------


@pytest.mark.parametrize("acks", ["0", "1", "all"])
def test_acks_levels_deliver(bootstrap, acks):
    topic = topic_name(f"acks{acks}")
    p = ck_producer(bootstrap, acks=acks)
    msgs = [{"key": b"k", "value": f"m{i}".encode()} for i in range(200)]
    reports = ck_produce(p, topic, msgs)
    assert all(err is None for err, _, _ in reports), reports[:5]
    if acks == "0":
        # No response, so no offsets in the reports: check by consuming.
        # (librdkafka reports the offset as unknown: None.)
        assert {off for _, _, off in reports} <= {None, -1001}
    else:
        assert [off for _, _, off in reports] == list(range(200))
    got = ck_consume_all(bootstrap, topic, len(msgs))
    assert [(m["offset"], m["value"]) for m in got] == [(i, m["value"]) for i, m in enumerate(msgs)]


# -- ListOffsets ----------------------------------------------------------


def test_list_offsets_watermarks_and_times(bootstrap):
    topic = topic_name("lo")
    t0 = int(time.time() * 1000) - 100_000
    msgs = [{"value": f"m{i}".encode(), "timestamp": t0 + 1000 * i} for i in range(10)]
    p = ck_producer(bootstrap, acks="all", **{"linger.ms": 0})
    # One message per batch, so each offset has its own timestamp boundary.
    for m in msgs:
        ck_produce(p, topic, [m])
    c = ck_consumer(bootstrap)
    try:
        tp = TopicPartition(topic, 0)
        assert c.get_watermark_offsets(tp, timeout=CALL_TIMEOUT) == (0, 10)

        def at(ts):
            (r,) = c.offsets_for_times([TopicPartition(topic, 0, ts)], timeout=CALL_TIMEOUT)
            assert r.error is None, r.error
            return r.offset

        assert at(t0 - 50_000) == 0  # before the first record
        assert at(t0) == 0
        assert at(t0 + 3000) == 3  # exact
        assert at(t0 + 3500) == 4  # first record at or after
        assert at(t0 + 9000) == 9  # the last
        # After the last record: no such offset (-1, librdkafka's OFFSET_END).
        assert at(t0 + 9001) == OFFSET_END == -1
        assert at(int(time.time() * 1000) + 3_600_000) == -1
    finally:
        c.close()


# -- message.max.bytes --------------------------------------------------------


@pytest.mark.broker_set("message.max.bytes=10000")
def test_oversized_message_is_rejected_then_producer_recovers(bootstrap):
    topic = topic_name("big")
    # The client's own limit stays at its default (1 MB), so the broker decides.
    p = ck_producer(bootstrap, acks="all", **{"linger.ms": 0, "retries": 0})
    # Make the topic exist first so the first produce is the big one.
    (err, _, _), = ck_produce(p, topic, [{"value": b"hello"}])
    assert err is None
    (err, _, off), = ck_produce(p, topic, [{"value": b"x" * 20_000}])
    assert err is not None, "a 20 kB batch was accepted over message.max.bytes=10000"
    assert err.code() == KafkaError.MSG_SIZE_TOO_LARGE, err
    (err, _, off), = ck_produce(p, topic, [{"value": b"small again"}])
    assert err is None, err
    assert off == 1
    got = ck_consume_all(bootstrap, topic, 2)
    assert [m["value"] for m in got] == [b"hello", b"small again"]


# -- AdminClient --------------------------------------------------------------


def test_admin_create_describe_grow_delete(bootstrap):
    a = admin(bootstrap)
    topic = topic_name("adm")
    fs = a.create_topics(
        [NewTopic(topic, num_partitions=3, replication_factor=1, config={"retention.ms": "3600000"})],
        operation_timeout=CALL_TIMEOUT,
        request_timeout=CALL_TIMEOUT,
    )
    assert fs[topic].result(timeout=CALL_TIMEOUT + 5) is None
    # Creating it again is an error (TOPIC_ALREADY_EXISTS).
    fs = a.create_topics([NewTopic(topic, 3, 1)], request_timeout=CALL_TIMEOUT)
    with pytest.raises(KafkaException) as e:
        fs[topic].result(timeout=CALL_TIMEOUT + 5)
    assert e.value.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS

    md = a.list_topics(topic, timeout=CALL_TIMEOUT)
    assert sorted(md.topics[topic].partitions) == [0, 1, 2]

    res = ConfigResource(ConfigResource.Type.TOPIC, topic)
    cfg = a.describe_configs([res], request_timeout=CALL_TIMEOUT)[res].result(timeout=CALL_TIMEOUT + 5)
    assert cfg["retention.ms"].value == "3600000"

    fs = a.create_partitions([NewPartitions(topic, 5)], request_timeout=CALL_TIMEOUT)
    assert fs[topic].result(timeout=CALL_TIMEOUT + 5) is None
    c = ck_consumer(bootstrap)
    try:
        assert ck_partitions(c, topic, want=5) == [0, 1, 2, 3, 4]
    finally:
        c.close()
    # The new partitions take writes.
    p = ck_producer(bootstrap)
    reports = ck_produce(p, topic, [{"value": b"x", "partition": 4}])
    assert reports[0][0] is None and reports[0][1:] == (4, 0)

    fs = a.delete_topics([topic], operation_timeout=CALL_TIMEOUT, request_timeout=CALL_TIMEOUT)
    assert fs[topic].result(timeout=CALL_TIMEOUT + 5) is None
    deadline = time.monotonic() + CALL_TIMEOUT
    while topic in a.list_topics(timeout=CALL_TIMEOUT).topics:
        assert time.monotonic() < deadline, "deleted topic still listed"
        time.sleep(0.1)


def test_admin_incremental_alter_configs(bootstrap):
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry

    a = admin(bootstrap)
    topic = topic_name("alt")
    admin_create(bootstrap, topic, 1)
    res = ConfigResource(
        ConfigResource.Type.TOPIC,
        topic,
        incremental_configs=[ConfigEntry("retention.ms", "120000", incremental_operation=AlterConfigOpType.SET)],
    )
    fs = a.incremental_alter_configs([res], request_timeout=CALL_TIMEOUT)
    assert fs[res].result(timeout=CALL_TIMEOUT + 5) is None
    plain = ConfigResource(ConfigResource.Type.TOPIC, topic)
    cfg = a.describe_configs([plain], request_timeout=CALL_TIMEOUT)[plain].result(timeout=CALL_TIMEOUT + 5)
    assert cfg["retention.ms"].value == "120000"


def test_admin_errors(bootstrap):
    a = admin(bootstrap)
    topic = topic_name("adme")

    def error_of(fs, key):
        with pytest.raises(KafkaException) as e:
            fs[key].result(timeout=CALL_TIMEOUT + 5)
        return e.value.args[0].code()

    # Zero partitions, an illegal name.
    fs = a.create_topics([NewTopic(topic, 0, 1)], request_timeout=CALL_TIMEOUT)
    assert error_of(fs, topic) == KafkaError.INVALID_PARTITIONS
    fs = a.create_topics([NewTopic("bad/name", 1, 1)], request_timeout=CALL_TIMEOUT)
    assert error_of(fs, "bad/name") == KafkaError.TOPIC_EXCEPTION
    # Neither was created.
    md = a.list_topics(timeout=CALL_TIMEOUT)
    assert topic not in md.topics and "bad/name" not in md.topics

    admin_create(bootstrap, topic, 2)
    # Partitions can be added, never removed.
    fs = a.create_partitions([NewPartitions(topic, 1)], request_timeout=CALL_TIMEOUT)
    assert error_of(fs, topic) == KafkaError.INVALID_PARTITIONS
    fs = a.create_partitions([NewPartitions(topic, 2)], request_timeout=CALL_TIMEOUT)
    assert error_of(fs, topic) == KafkaError.INVALID_PARTITIONS
    # Unknown topics.
    missing = topic_name("missing")
    fs = a.delete_topics([missing], request_timeout=CALL_TIMEOUT)
    assert error_of(fs, missing) == KafkaError.UNKNOWN_TOPIC_OR_PART
    fs = a.create_partitions([NewPartitions(missing, 3)], request_timeout=CALL_TIMEOUT)
    assert error_of(fs, missing) == KafkaError.UNKNOWN_TOPIC_OR_PART
    # The topic is unchanged.
    assert sorted(a.list_topics(topic, timeout=CALL_TIMEOUT).topics[topic].partitions) == [0, 1]


def test_deleted_topic_is_gone_and_can_be_recreated_empty(bootstrap):
    a = admin(bootstrap)
    topic = topic_name("recreate")
    admin_create(bootstrap, topic, 1)
    p = ck_producer(bootstrap, acks="all")
    assert all(e is None for e, _, _ in ck_produce(p, topic, [{"value": b"old"}] * 5))
    fs = a.delete_topics([topic], operation_timeout=CALL_TIMEOUT, request_timeout=CALL_TIMEOUT)
    assert fs[topic].result(timeout=CALL_TIMEOUT + 5) is None
    admin_create(bootstrap, topic, 1)
    c = ck_consumer(bootstrap)
    try:
        assert c.get_watermark_offsets(TopicPartition(topic, 0), timeout=CALL_TIMEOUT) == (0, 0)
    finally:
        c.close()
    p = ck_producer(bootstrap, acks="all")
    ((err, _, off),) = ck_produce(p, topic, [{"value": b"new"}])
    assert err is None and off == 0
    got = ck_consume_all(bootstrap, topic, 1)
    assert [m["value"] for m in got] == [b"new"]


# -- fetch long poll, large messages -----------------------------------------


def test_waiting_consumer_gets_new_messages_promptly(bootstrap):
    topic = topic_name("tail")
    p = ck_producer(bootstrap, acks="all", **{"linger.ms": 0})
    ck_produce(p, topic, [{"value": b"first"}])
    c = ck_consumer(bootstrap, **{"fetch.wait.max.ms": 5000})
    try:
        c.assign([TopicPartition(topic, 0, 1)])  # the end: nothing to read yet
        assert c.poll(1.0) is None
        latencies = []
        for i in range(5):
            t0 = time.monotonic()
            ck_produce(p, topic, [{"value": b"n%d" % i}])
            m = None
            while m is None and time.monotonic() - t0 < 10:
                m = c.poll(0.05)
            assert m is not None and m.error() is None, f"message {i} not delivered in 10 s"
            assert (m.offset(), m.value()) == (1 + i, b"n%d" % i)
            latencies.append(time.monotonic() - t0)
        # A fetch parked in the long poll is woken by the append, not by
        # fetch.wait.max.ms (5 s) running out.
        assert max(latencies) < 2.0, latencies
    finally:
        c.close()


def test_large_messages_round_trip(bootstrap):
    topic = topic_name("large")
    p = ck_producer(bootstrap, acks="all", **{"linger.ms": 0})
    values = [bytes([i]) * (900_000 + i) for i in range(5)]
    reports = ck_produce(p, topic, [{"value": v} for v in values])
    assert [(e, off) for e, _, off in reports] == [(None, i) for i in range(5)]
    got = ck_consume_all(bootstrap, topic, 5)
    assert [m["value"] for m in got] == values
