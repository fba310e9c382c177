"""kafka-python producer and consumer (assign(), no group: group_id=None)."""

from __future__ import annotations

import time

import pytest

kafka = pytest.importorskip("kafka")
from kafka import KafkaConsumer, KafkaProducer, TopicPartition  # noqa: E402

from helpers import CALL_TIMEOUT, CONSUME_TIMEOUT, topic_name  # noqa: E402

MS = int(CALL_TIMEOUT * 1000)


def producer(bootstrap: str, **kw) -> KafkaProducer:
    conf = dict(
        bootstrap_servers=bootstrap,
        acks="all",
        request_timeout_ms=MS,
        max_block_ms=MS,
        retries=3,
    )
    # kafka-python 3 turns idempotence on by default: left on (the broker
    # serves InitProducerId and checks sequences).
    conf.update(kw)
    return KafkaProducer(**conf)


def consumer(bootstrap: str) -> KafkaConsumer:
    return KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        request_timeout_ms=MS + 5000,
        consumer_timeout_ms=MS,
    )


def partitions(c: KafkaConsumer, topic: str) -> list[TopicPartition]:
    deadline = time.monotonic() + CALL_TIMEOUT
    while True:
        parts = c.partitions_for_topic(topic)
        if parts:
            return [TopicPartition(topic, p) for p in sorted(parts)]
        assert time.monotonic() < deadline, f"no metadata for {topic}"
        time.sleep(0.1)


def poll_all(c: KafkaConsumer, expected: int, settle: float = 1.0):
    got = []
    deadline = time.monotonic() + CONSUME_TIMEOUT
    extra_until = None
    while time.monotonic() < deadline:
        if extra_until is None and len(got) >= expected:
            extra_until = time.monotonic() + settle
        if extra_until is not None and time.monotonic() >= extra_until:
            break
        for _, records in c.poll(timeout_ms=200).items():
            got.extend(records)
    assert len(got) >= expected, f"consumed {len(got)} of {expected}"
    return got


@pytest.mark.broker_set("num.partitions=2")
@pytest.mark.parametrize("compression", [None, "gzip"])
def test_round_trip(bootstrap, compression):
    topic = topic_name("kp")
    p = producer(bootstrap, compression_type=compression)
    ts0 = int(time.time() * 1000) - 10_000
    sent = []
    for i in range(300):
        f = p.send(
            topic,
            key=f"k{i % 10}".encode(),
            value=f"value {i}".encode(),
            headers=[("i", str(i).encode())],
            timestamp_ms=ts0 + i,
        )
        sent.append(f)
    p.flush(timeout=CALL_TIMEOUT)
    meta = [f.get(timeout=CALL_TIMEOUT) for f in sent]
    p.close(timeout=CALL_TIMEOUT)
    assert {m.partition for m in meta} == {0, 1}

    c = consumer(bootstrap)
    try:
        tps = partitions(c, topic)
        assert [tp.partition for tp in tps] == [0, 1]
        c.assign(tps)
        c.seek_to_beginning()
        got = poll_all(c, 300)
    finally:
        c.close()
    assert len(got) == 300
    by_pos = {(r.partition, r.offset): r for r in got}
    assert len(by_pos) == 300
    for i, m in enumerate(meta):
        r = by_pos[(m.partition, m.offset)]
        assert r.key == f"k{i % 10}".encode()
        assert r.value == f"value {i}".encode()
        assert r.headers == [("i", str(i).encode())]
        assert r.timestamp == ts0 + i
        assert r.timestamp_type == 0  # CreateTime


@pytest.mark.broker_set("num.partitions=3")
def test_list_offsets(bootstrap):
    topic = topic_name("kpo")
    p = producer(bootstrap)
    counts = {0: 7, 1: 0, 2: 13}
    futures = [p.send(topic, value=b"v", partition=part) for part, n in counts.items() for _ in range(n)]
    p.flush(timeout=CALL_TIMEOUT)
    for f in futures:
        f.get(timeout=CALL_TIMEOUT)
    p.close(timeout=CALL_TIMEOUT)
    c = consumer(bootstrap)
    try:
        tps = partitions(c, topic)
        assert c.beginning_offsets(tps) == {tp: 0 for tp in tps}
        assert c.end_offsets(tps) == {tp: counts[tp.partition] for tp in tps}
        # offsets_for_times: every record is from the last minute; a future
        # time has no offset.
        past = int(time.time() * 1000) - 60_000
        found = c.offsets_for_times({tp: past for tp in tps})
        assert found[tps[0]].offset == 0
        assert found[tps[1]] is None
        assert found[tps[2]].offset == 0
        future = int(time.time() * 1000) + 3_600_000
        assert c.offsets_for_times({tp: future for tp in tps}) == {tp: None for tp in tps}
    finally:
        c.close()
