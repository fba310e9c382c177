"""Log compaction against a real broker with confluent-kafka: a compacted
topic keeps the latest value per key (every codec), refuses keyless
records, and __consumer_offsets stays bounded under a commit storm and
still has the latest commits after a restart."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

confluent_kafka = pytest.importorskip("confluent_kafka")
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

from helpers import CALL_TIMEOUT, ck_consumer, ck_produce, ck_producer, stored_batches, topic_name  # noqa: E402

# The cleaner checks every 200 ms.
FAST_CLEANER = pytest.mark.broker_set("log.cleaner.backoff.ms=200")


def dir_bytes(d: Path) -> int:
    return sum(f.stat().st_size for f in d.iterdir() if f.is_file())


def read_from_start(bootstrap: str, topic: str, timeout: float = 15.0):
    """Every message of partition 0 as (offset, key, value), reading until
    the high watermark."""
    c = ck_consumer(bootstrap)
    try:
        _, high = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=CALL_TIMEOUT)
        c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        got = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if got and got[-1][0] >= high - 1:
                break
            for m in c.consume(num_messages=1000, timeout=0.2):
                assert m.error() is None, m.error()
                got.append((m.offset(), m.key(), m.value()))
        return got, high
    finally:
        c.close()


def c_low(bootstrap: str, topic: str) -> int:
    c = ck_consumer(bootstrap)
    try:
        low, _ = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=CALL_TIMEOUT)
        return low
    finally:
        c.close()


@FAST_CLEANER
def test_compacted_topic_keeps_the_latest_value_per_key(broker, bootstrap):
    topic = topic_name("compact")
    a = AdminClient({"bootstrap.servers": bootstrap})
    cfg = {"cleanup.policy": "compact", "segment.bytes": "4096", "min.cleanable.dirty.ratio": "0.01"}
    a.create_topics([NewTopic(topic, 1, 1, config=cfg)])[topic].result(timeout=CALL_TIMEOUT)
    described = a.describe_configs([confluent_kafka.admin.ConfigResource("topic", topic)])
    entries = list(described.values())[0].result(timeout=CALL_TIMEOUT)
    assert entries["cleanup.policy"].value == "compact"
    assert entries["delete.retention.ms"].value == "86400000"
    assert entries["min.cleanable.dirty.ratio"].value == "0.01"

    latest = {}
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"]:
        p = ck_producer(bootstrap, compression_type=codec, linger_ms=2)
        msgs = []
        for i in range(400):
            k = f"key-{i % 7}".encode()
            v = f"{codec}-{i}-{'x' * 30}".encode()
            latest[k] = v
            msgs.append({"key": k, "value": v, "partition": 0})
        reports = ck_produce(p, topic, msgs)
        assert all(err is None for err, _, _ in reports)
    # A keyless record is refused, as Kafka does for compacted topics.
    p = ck_producer(bootstrap, message_send_max_retries=0)
    (err, _, _), = ck_produce(p, topic, [{"value": b"no key", "partition": 0}])
    assert err is not None and err.code() == KafkaError.INVALID_RECORD, err

    pdir = broker.partition_dir(topic, 0)
    before, high = read_from_start(bootstrap, topic)
    assert high == 2000
    # The active segment (largest base offset) is never compacted.
    active_base = max(int(f.name[:20]) for f in pdir.glob("*.log"))
    assert active_base > 1000, "most records are in sealed segments"

    def sealed_keys_unique(got):
        keys = [k for o, k, _ in got if o < active_base]
        return len(keys) == len(set(keys))

    # Wait for the cleaner: each key once in the sealed segments.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        got, high2 = read_from_start(bootstrap, topic)
        if sealed_keys_unique(got):
            break
        time.sleep(0.5)
    assert high2 == high, "compaction never changes the log end"
    assert sealed_keys_unique(got), f"{len(got)} of 2000 records left"
    assert len(got) <= 7 + (2000 - active_base)
    assert [o for o, _, _ in got if o >= active_base] == list(range(active_base, 2000)), "active segment untouched"
    offsets = [o for o, _, _ in got]
    assert offsets == sorted(set(offsets)), "offsets strictly increase"
    by_offset = {o: (k, v) for o, k, v in before}
    last = {}
    for o, k, v in got:
        assert by_offset[o] == (k, v), f"record at {o} changed"
        last[k] = v
    assert last == latest
    # The first segment lost every record but keeps one empty batch (so the
    # log start does not move), which the consumer above read past.
    first = stored_batches(pdir)[0]
    assert first[2] == 0, f"first stored batch {first}"
    assert c_low(bootstrap, topic) == 0, "compaction never moves the log start"


@FAST_CLEANER
@pytest.mark.broker_set(
    "offsets.topic.num.partitions=1",
    "offsets.topic.segment.bytes=16384",
    "group.initial.rebalance.delay.ms=0",
)
def test_offsets_topic_stays_bounded_under_a_commit_storm(broker, bootstrap):
    topic = topic_name("storm")
    a = AdminClient({"bootstrap.servers": bootstrap})
    a.create_topics([NewTopic(topic, 1, 1)])[topic].result(timeout=CALL_TIMEOUT)
    group = f"storm-{uuid.uuid4().hex[:8]}"
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        for i in range(1, 5001):
            c.commit(offsets=[TopicPartition(topic, 0, i)], asynchronous=False)
    finally:
        c.close()
    odir = broker.partition_dir("__consumer_offsets", 0)
    deadline = time.monotonic() + 20
    size = dir_bytes(odir)
    while time.monotonic() < deadline and size > 64_000:
        time.sleep(0.3)
        size = dir_bytes(odir)
    # 5000 commits are ~500 KB uncompacted; what stays is the active
    # segment (16 KiB) plus a few small cleaned ones and their indexes.
    assert size <= 64_000, f"__consumer_offsets-0 holds {size} bytes: {sorted(p.name for p in odir.iterdir())}"

    broker.restart()
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        committed = c.committed([TopicPartition(topic, 0)], timeout=CALL_TIMEOUT)
        assert committed[0].offset == 5000
    finally:
        c.close()
