"""Shared helpers for the client tests: unique names, bounded consume loops,
and a reader of the broker's segment files (to check what was stored)."""

from __future__ import annotations

import struct
import time
import uuid
from pathlib import Path

# Bound on every single client call, seconds.
CALL_TIMEOUT = 10.0
# Bound on a whole consume loop, seconds.
CONSUME_TIMEOUT = 30.0

CODEC_IDS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}


def topic_name(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def stored_batches(partition_dir: Path):
    """(base_offset, attributes, record_count, size) of every RecordBatch in a
    partition's segment files, in offset order (Kafka layout: 61-byte
    header, attributes at byte 21, record count at 57)."""
    out = []
    for seg in sorted(Path(partition_dir).glob("*.log")):
        data = seg.read_bytes()
        at = 0
        while at + 61 <= len(data):
            base_offset, batch_length = struct.unpack_from(">qi", data, at)
            if batch_length <= 0 or at + 12 + batch_length > len(data):
                break  # preallocated tail / end of segment
            magic = data[at + 16]
            assert magic == 2, f"{seg}: batch at {at} has magic {magic}"
            (attributes,) = struct.unpack_from(">h", data, at + 21)
            (count,) = struct.unpack_from(">i", data, at + 57)
            out.append((base_offset, attributes, count, 12 + batch_length))
            at += 12 + batch_length
    return out


def stored_codecs(partition_dir: Path) -> set[int]:
    return {attrs & 0x07 for (_, attrs, _, _) in stored_batches(partition_dir)}


# -- confluent-kafka ---------------------------------------------------------


def ck_producer(bootstrap: str, **conf):
    from confluent_kafka import Producer

    base = {
        "bootstrap.servers": bootstrap,
        "enable.idempotence": False,
        "message.timeout.ms": 20000,
        "socket.timeout.ms": 10000,
        "linger.ms": 5,
    }
    base.update({k.replace("_", "."): v for k, v in conf.items()})
    return Producer(base)


def ck_produce(producer, topic: str, messages, timeout: float = CONSUME_TIMEOUT):
    """Produce dicts (kwargs of Producer.produce) and wait for every delivery
    report. Returns the reports as (error, partition, offset) in produce
    order."""
    reports: list = [None] * len(messages)

    def cb(i):
        def on_delivery(err, msg):
            reports[i] = (err, msg.partition(), msg.offset())

        return on_delivery

    for i, m in enumerate(messages):
        while True:
            try:
                producer.produce(topic, on_delivery=cb(i), **m)
                break
            except BufferError:
                producer.poll(0.1)
    left = producer.flush(timeout)
    assert left == 0, f"{left} messages still undelivered after {timeout}s"
    assert all(r is not None for r in reports), "a delivery report is missing"
    return reports


def ck_consumer(bootstrap: str, **conf):
    from confluent_kafka import Consumer

    base = {
        "bootstrap.servers": bootstrap,
        # Required by the client; no coordinator is used (assign(), no commits).
        "group.id": f"g-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "socket.timeout.ms": 10000,
    }
    base.update({k.replace("_", "."): v for k, v in conf.items()})
    return Consumer(base)


def ck_partitions(client, topic: str, want: int | None = None, timeout: float = CALL_TIMEOUT) -> list[int]:
    """Partition ids of `topic` from Metadata (retrying until `want` exist)."""
    deadline = time.monotonic() + timeout
    while True:
        md = client.list_topics(topic, timeout=CALL_TIMEOUT)
        t = md.topics.get(topic)
        parts = sorted(t.partitions) if t is not None and t.error is None else []
        if parts and (want is None or len(parts) >= want):
            return parts
        if time.monotonic() > deadline:
            raise AssertionError(f"topic {topic}: partitions {parts}, wanted {want}")
        time.sleep(0.1)


def ck_consume_all(bootstrap: str, topic: str, expected: int, partitions=None, timeout: float = CONSUME_TIMEOUT, settle: float = 1.0):
    """Assign every partition of `topic` from the beginning and read until
    `expected` messages arrived (plus `settle` seconds to catch extras, i.e.
    duplicates). Returns the messages as dicts."""
    from confluent_kafka import OFFSET_BEGINNING, TopicPartition

    c = ck_consumer(bootstrap)
    try:
        parts = partitions if partitions is not None else ck_partitions(c, topic)
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        got = []
        deadline = time.monotonic() + timeout
        extra_until = None
        while time.monotonic() < deadline:
            if extra_until is None and len(got) >= expected:
                extra_until = time.monotonic() + settle
            if extra_until is not None and time.monotonic() >= extra_until:
                break
            for m in c.consume(num_messages=1000, timeout=0.2):
                if m.error():
                    # Partition EOF is not enabled; anything else is a failure.
                    raise AssertionError(f"consume error: {m.error()}")
                got.append(
                    {
                        "partition": m.partition(),
                        "offset": m.offset(),
                        "key": m.key(),
                        "value": m.value(),
                        "headers": m.headers() or [],
                        "timestamp": m.timestamp(),
                    }
                )
        assert len(got) >= expected, f"consumed {len(got)} of {expected} messages in {timeout}s"
        return got
    finally:
        c.close()
