"""Consumer groups with real clients: confluent-kafka (librdkafka),
kafka-python and kcat -G against the group coordinator, committed offsets in
__consumer_offsets, and the group admin APIs."""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid

import pytest

confluent_kafka = pytest.importorskip("confluent_kafka")
from confluent_kafka import Consumer, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

from helpers import CALL_TIMEOUT, ck_produce, ck_producer, topic_name  # noqa: E402

# Fast groups for tests: the first generation waits only briefly for more
# members, and sessions may be short.
FAST = pytest.mark.broker_set(
    "group.initial.rebalance.delay.ms=200",
    "group.min.session.timeout.ms=1000",
    "offsets.topic.num.partitions=8",
)


def admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 10000})


def create(bootstrap: str, topic: str, partitions: int) -> None:
    a = admin(bootstrap)  # keep the handle alive until the result is in
    fs = a.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    fs[topic].result(timeout=CALL_TIMEOUT)


def produce_spread(bootstrap: str, topic: str, n: int, partitions: int) -> None:
    p = ck_producer(bootstrap)
    msgs = [{"value": f"m{i}".encode(), "key": f"k{i}".encode(), "partition": i % partitions} for i in range(n)]
    reports = ck_produce(p, topic, msgs)
    assert all(err is None for err, _, _ in reports)


def group_consumer(bootstrap: str, group: str, **conf) -> Consumer:
    base = {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 500,
        "socket.timeout.ms": 10000,
    }
    base.update(conf)
    return Consumer(base)


def drain(consumers, until, timeout: float = 40.0, commit: bool = True):
    """Poll every consumer in turn (committing what each read) until
    `until(seen)` holds; `seen` maps consumer index -> list of (partition,
    offset, value)."""
    seen = {i: [] for i in range(len(consumers))}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for i, c in enumerate(consumers):
            msgs = c.consume(num_messages=500, timeout=0.1)
            got = [m for m in msgs if m.error() is None]
            for m in msgs:
                if m.error() is not None and not m.error().code() == confluent_kafka.KafkaError._PARTITION_EOF:
                    raise AssertionError(f"consumer {i}: {m.error()}")
            seen[i].extend((m.partition(), m.offset(), m.value()) for m in got)
            if got and commit:
                # Commit exactly what this consumer has read.
                upto = {}
                for m in got:
                    upto[m.partition()] = max(upto.get(m.partition(), 0), m.offset() + 1)
                c.commit(offsets=[TopicPartition(m.topic(), p, o) for p, o in upto.items()], asynchronous=False)
        if until(seen):
            return seen
    raise AssertionError(
        f"condition not reached in {timeout}s; seen per consumer: {[len(v) for v in seen.values()]}, "
        f"assignments: {[sorted(assignment(c)) for c in consumers]}"
    )


def assignment(c: Consumer) -> set[int]:
    return {tp.partition for tp in c.assignment()}


@FAST
def test_two_members_split_partitions_and_survivor_takes_over(bootstrap):
    topic, group = topic_name("grp"), f"g-{uuid.uuid4().hex[:8]}"
    create(bootstrap, topic, 4)
    produce_spread(bootstrap, topic, 400, 4)
    c1, c2 = group_consumer(bootstrap, group), group_consumer(bootstrap, group)
    c1.subscribe([topic])
    c2.subscribe([topic])
    try:
        # Both in the group: disjoint assignments covering all partitions.
        both = lambda _: (assignment(c1) and assignment(c2) and assignment(c1) | assignment(c2) == {0, 1, 2, 3})  # noqa: E731
        early = drain([c1, c2], both)
        a1, a2 = assignment(c1), assignment(c2)
        assert a1.isdisjoint(a2) and a1 | a2 == {0, 1, 2, 3}, f"{a1} / {a2}"
        # Read about half, committing as we go.
        seen = drain([c1, c2], lambda s: sum(map(len, s.values())) + sum(map(len, early.values())) >= 150)
        for i in early:
            seen[i] += early[i]
        c2.close()  # LeaveGroup: c1 must take every partition
        # More data on every partition: only c1 is left to read it.
        p = ck_producer(bootstrap)
        more = [{"value": f"m{i}".encode(), "partition": i % 4} for i in range(400, 800)]
        assert all(err is None for err, _, _ in ck_produce(p, topic, more))

        def done(s):
            got = {v for lst in seen.values() for _, _, v in lst} | {v for _, _, v in s[0]}
            return assignment(c1) == {0, 1, 2, 3} and len(got) >= 800

        rest = drain([c1], done)
        values = [v for lst in seen.values() for _, _, v in lst] + [v for _, _, v in rest[0]]
        assert set(values) == {f"m{i}".encode() for i in range(800)}, "nothing lost across the rebalance"
        assert {p for p, _, _ in rest[0]} == {0, 1, 2, 3}, "the survivor read every partition"
        committed = c1.committed([TopicPartition(topic, p) for p in range(4)], timeout=CALL_TIMEOUT)
        assert [tp.offset for tp in committed] == [200, 200, 200, 200]
    finally:
        c1.close()


@FAST
def test_commit_resume_metadata_restart_and_independent_groups(broker):
    bootstrap = broker.bootstrap
    topic, group = topic_name("resume"), f"g-{uuid.uuid4().hex[:8]}"
    create(bootstrap, topic, 2)
    produce_spread(bootstrap, topic, 200, 2)
    c = group_consumer(bootstrap, group)
    c.subscribe([topic])
    first = drain([c], lambda s: len(s[0]) >= 60, commit=False)[0]
    # Commit exactly what was read, with metadata.
    upto = {}
    for p, o, _ in first:
        upto[p] = max(upto.get(p, -1), o + 1)
    c.commit(offsets=[TopicPartition(topic, p, o, metadata=f"meta-{p}") for p, o in upto.items()], asynchronous=False)
    c.close()

    broker.restart()
    bootstrap = broker.bootstrap
    c = group_consumer(bootstrap, group)
    try:
        got = c.committed([TopicPartition(topic, p) for p in upto], timeout=CALL_TIMEOUT)
        assert {tp.partition: tp.offset for tp in got} == upto, "offsets survive a restart"
        assert {tp.partition: tp.metadata for tp in got} == {p: f"meta-{p}" for p in upto}, "metadata round-trips"
        c.subscribe([topic])
        rest = drain([c], lambda s: len(s[0]) >= 200 - sum(upto.values()))[0]
        for p, o, _ in rest:
            assert o >= upto.get(p, 0), f"partition {p} resumed at {o}, before the commit {upto.get(p)}"
        assert len(rest) == 200 - sum(upto.values()), "resumes exactly at the commit: no loss, no repeat"
    finally:
        c.close()

    # A second group is independent: it starts at offset 0.
    other = group_consumer(bootstrap, f"other-{uuid.uuid4().hex[:6]}")
    other.subscribe([topic])
    try:
        all_msgs = drain([other], lambda s: len(s[0]) >= 200)[0]
        assert sorted(v for _, _, v in all_msgs) == sorted(f"m{i}".encode() for i in range(200))
    finally:
        other.close()


@FAST
def test_group_admin_list_describe_offsets_delete(bootstrap):
    from confluent_kafka import ConsumerGroupTopicPartitions

    topic, group = topic_name("adm"), f"g-{uuid.uuid4().hex[:8]}"
    create(bootstrap, topic, 1)
    produce_spread(bootstrap, topic, 10, 1)
    c = group_consumer(bootstrap, group)
    c.subscribe([topic])
    drain([c], lambda s: len(s[0]) >= 10)
    a = admin(bootstrap)
    listed = a.list_consumer_groups(request_timeout=CALL_TIMEOUT).result(timeout=CALL_TIMEOUT + 5)
    assert group in {g.group_id for g in listed.valid}
    desc = a.describe_consumer_groups([group], request_timeout=CALL_TIMEOUT)[group].result(timeout=CALL_TIMEOUT + 5)
    assert str(desc.state).endswith("STABLE"), desc.state
    assert len(desc.members) == 1 and not desc.is_simple_consumer_group
    assert desc.partition_assignor in ("range", "roundrobin"), desc.partition_assignor
    assert {tp.partition for tp in desc.members[0].assignment.topic_partitions} == {0}
    offs = a.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group].result(timeout=CALL_TIMEOUT + 5)
    assert [(tp.topic, tp.partition, tp.offset) for tp in offs.topic_partitions] == [(topic, 0, 10)]
    # A group with a member cannot be deleted; an empty one can.
    with pytest.raises(Exception, match="NON_EMPTY_GROUP|not empty"):
        a.delete_consumer_groups([group], request_timeout=CALL_TIMEOUT)[group].result(timeout=CALL_TIMEOUT + 5)
    c.close()
    a.delete_consumer_groups([group], request_timeout=CALL_TIMEOUT)[group].result(timeout=CALL_TIMEOUT + 5)
    listed = a.list_consumer_groups(request_timeout=CALL_TIMEOUT).result(timeout=CALL_TIMEOUT + 5)
    assert group not in {g.group_id for g in listed.valid}
    # Its offsets went with it: a new member starts from the beginning.
    c = group_consumer(bootstrap, group)
    try:
        got = c.committed([TopicPartition(topic, 0)], timeout=CALL_TIMEOUT)
        assert got[0].offset < 0, "no committed offset after DeleteGroups"
    finally:
        c.close()


@FAST
def test_kafka_python_group_consumer_commits(bootstrap):
    kafka = pytest.importorskip("kafka")
    topic, group = topic_name("kp"), f"g-{uuid.uuid4().hex[:8]}"
    create(bootstrap, topic, 3)
    produce_spread(bootstrap, topic, 90, 3)
    c = kafka.KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=15000,
        session_timeout_ms=6000,
        heartbeat_interval_ms=500,
        request_timeout_ms=30000,
    )
    try:
        values = []
        for m in c:
            values.append(m.value)
            if len(values) == 90:
                break
        assert sorted(values) == sorted(f"m{i}".encode() for i in range(90))
        c.commit()
        tp = kafka.TopicPartition(topic, 1)
        assert c.committed(tp) == 30
    finally:
        c.close()
    # A second kafka-python member of the group has nothing left to read.
    c = kafka.KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest", consumer_timeout_ms=3000, session_timeout_ms=6000)
    try:
        assert list(c) == []
    finally:
        c.close()


@FAST
def test_kcat_balanced_consumer(bootstrap):
    if shutil.which("kcat") is None:
        pytest.skip("kcat not installed")
    topic, group = topic_name("kc"), f"g-{uuid.uuid4().hex[:8]}"
    create(bootstrap, topic, 2)
    produce_spread(bootstrap, topic, 20, 2)
    cmd = ["kcat", "-b", bootstrap, "-G", group, "-X", "auto.offset.reset=earliest", "-e", "-q", "-f", "%s\\n", topic]
    out = subprocess.run(cmd, capture_output=True, timeout=60, text=True)
    assert out.returncode == 0, out.stderr
    assert sorted(out.stdout.split()) == sorted(f"m{i}" for i in range(20))
    # The group committed as it went: a second run reads nothing new.
    out = subprocess.run(cmd, capture_output=True, timeout=60, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == []
