"""A 3-broker cluster of real processes: topics replicated by Raft,
confluent-kafka clients, and faults injected while an idempotent acks=all
producer runs — kill -9 of leaders, SIGSTOP/SIGCONT, restarts, and network
partitions on the inter-broker links. A checker reads everything back:
every acknowledged record is there exactly once, in order per partition.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections import defaultdict

import pytest

confluent_kafka = pytest.importorskip("confluent_kafka")
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition  # noqa: E402
from confluent_kafka import ConsumerGroupTopicPartitions  # noqa: E402
from confluent_kafka.admin import AdminClient, ConfigResource, NewPartitions, NewTopic  # noqa: E402

from cluster import Cluster, describe_offsets  # noqa: E402

QUIET = {"log_level": 3}


@pytest.fixture
def cluster(request, tmp_path):
    settings = []
    for m in request.node.iter_markers("broker_set"):
        settings.extend(m.args)
    c = Cluster(tmp_path, settings=settings)
    c.start_all()
    # The controller group elects its leader within a couple of seconds.
    admin = AdminClient({"bootstrap.servers": c.bootstrap, **QUIET})
    c.wait("a controller", lambda: admin.list_topics(timeout=5).controller_id > 0)
    yield c
    failures = c.stop_all()
    if failures:
        pytest.fail("\n".join(failures))


def create(c: Cluster, name: str, partitions: int, rf: int):
    admin = AdminClient({"bootstrap.servers": c.bootstrap, **QUIET})
    fs = admin.create_topics([NewTopic(name, partitions, rf)], request_timeout=20)
    fs[name].result(30)
    # Every partition has a leader and a full ISR.
    def ready():
        t = c.metadata(admin, name)
        return all(p.leader >= 0 for p in t.partitions.values()) and t
    c.wait(f"leaders of {name}", ready)
    return admin


def leader_of(c: Cluster, admin, topic: str, partition: int) -> int:
    return c.wait(
        f"a leader of {topic}-{partition}",
        lambda: (lambda p: p.leader if p.leader > 0 else None)(
            c.metadata(admin, topic).partitions[partition]
        ),
    )


def read_all(c: Cluster, topic: str, partitions: int, timeout: float = 30.0):
    """Every record of `topic` from the start, per partition, in order."""
    cons = Consumer(
        {
            "bootstrap.servers": c.bootstrap,
            "group.id": f"check-{time.monotonic_ns()}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": True,
            **QUIET,
        }
    )
    cons.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    # By offset: a consumer that re-fetches after a leader change may see
    # an offset twice; a record written twice has two offsets.
    out = defaultdict(dict)
    eof = set()
    deadline = time.monotonic() + timeout
    while len(eof) < partitions and time.monotonic() < deadline:
        m = cons.poll(0.5)
        if m is None:
            continue
        if m.error():
            if m.error().code() == KafkaError._PARTITION_EOF:
                eof.add(m.partition())
            continue
        eof.discard(m.partition())
        seen = out[m.partition()].setdefault(m.offset(), m.value())
        assert seen == m.value(), f"offset {m.offset()} read with two values"
    cons.close()
    assert len(eof) == partitions, f"did not reach the end of every partition: {sorted(eof)}"
    result = defaultdict(list)
    result.update({p: sorted(recs.items()) for p, recs in out.items()})
    return result


def test_replicated_topic_metadata_and_admin_errors(cluster):
    admin = create(cluster, "rep", 3, 3)
    t = cluster.metadata(admin, "rep")
    md = admin.list_topics(timeout=10)
    assert sorted(md.brokers) == [1, 2, 3]
    assert md.controller_id in (1, 2, 3)
    leaders = set()
    for p in t.partitions.values():
        assert sorted(p.replicas) == [1, 2, 3]
        leaders.add(p.replicas[0])
    # Preferred leaders are spread over the brokers.
    assert leaders == {1, 2, 3}
    # The leader reports the full ISR once the followers answered it
    # (kcat -L asks just the broker it is given).
    for pid in range(3):
        def isr():
            leader = leader_of(cluster, admin, "rep", pid)
            out = subprocess.run(
                ["kcat", "-b", f"127.0.0.1:{cluster.kafka[leader]}", "-L", "-t", "rep", "-J"],
                capture_output=True, timeout=10, check=True,
            ).stdout
            part = json.loads(out)["topics"][0]["partitions"][pid]
            return sorted(i["id"] for i in part["isrs"]) == [1, 2, 3]
        cluster.wait(f"ISR of rep-{pid}", isr)
    # More replicas than brokers: INVALID_REPLICATION_FACTOR.
    fs = admin.create_topics([NewTopic("toomany", 1, 4)], request_timeout=20)
    with pytest.raises(KafkaException) as e:
        fs["toomany"].result(30)
    assert e.value.args[0].code() == KafkaError.INVALID_REPLICATION_FACTOR
    # Existing topic: TOPIC_ALREADY_EXISTS.
    fs = admin.create_topics([NewTopic("rep", 3, 3)], request_timeout=20)
    with pytest.raises(KafkaException) as e:
        fs["rep"].result(30)
    assert e.value.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS
    # More partitions and a config change, through the controller, seen by
    # every broker.
    admin.create_partitions([NewPartitions("rep", 4)], request_timeout=20)["rep"].result(30)
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry

    res = ConfigResource(
        ConfigResource.Type.TOPIC,
        "rep",
        incremental_configs=[ConfigEntry("retention.ms", "123456", incremental_operation=AlterConfigOpType.SET)],
    )
    admin.incremental_alter_configs([res], request_timeout=20)[res].result(30)
    for i in cluster.ids:
        solo = AdminClient({"bootstrap.servers": f"127.0.0.1:{cluster.kafka[i]}", **QUIET})
        cluster.wait(f"4 partitions on {i}", lambda: len(solo.list_topics("rep", timeout=5).topics["rep"].partitions) == 4)
        got = solo.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, "rep")], request_timeout=10)
        cfg = list(got.values())[0].result(10)
        assert cfg["retention.ms"].value == "123456"
    # Delete through the controller; gone from every broker's metadata.
    admin.delete_topics(["rep"], request_timeout=20)["rep"].result(30)
    for i in cluster.ids:
        solo = AdminClient({"bootstrap.servers": f"127.0.0.1:{cluster.kafka[i]}", **QUIET})
        cluster.wait(f"rep deleted on {i}", lambda: "rep" not in solo.list_topics(timeout=5).topics)


LAG_MS = 2000
REPORT_MS = 500


@pytest.mark.broker_set(f"replica.lag.time.max.ms={LAG_MS}")
def test_every_broker_reports_the_isr_as_it_shrinks_and_grows_back(cluster):
    """The leader records leader, epoch and ISR in the controller, so a
    follower and a broker asked alone report the same ISR as the leader."""
    create(cluster, "isr", 1, 3)

    def solo(i):
        # A new client per question: before its first answer it knows only
        # broker i, so Metadata is asked of i (a client that has learnt the
        # other brokers may ask any of them).
        return AdminClient({"bootstrap.servers": f"127.0.0.1:{cluster.kafka[i]}", **QUIET})

    def views(ids):
        out = {}
        for i in ids:
            md = solo(i).list_topics("isr", timeout=5)
            p = md.topics["isr"].partitions[0]
            out[i] = (p.leader, tuple(sorted(p.isrs)))
        return out

    def agree(ids, isr):
        """Every broker of `ids` names one leader and the ISR `isr`."""
        def ok():
            v = views(ids)
            leaders = {leader for leader, _ in v.values()}
            if len(leaders) == 1 and all(got == isr for _, got in v.values()):
                return v
            # Shown by cluster.wait if it never agrees.
            raise AssertionError(f"(leader, ISR) per broker: {v}")
        return ok

    # A broker with no replica of a partition reports its leader and ISR
    # too (from the controller's record).
    create(cluster, "isr1", 1, 1)

    def lone():
        seen = set()
        for i in cluster.ids:
            p = solo(i).list_topics("isr1", timeout=5).topics["isr1"].partitions[0]
            seen.add((p.leader, tuple(p.isrs), tuple(p.replicas)))
        (leader, isr, replicas), = seen  # one answer from all
        assert leader > 0 and isr == (leader,) and replicas == (leader,), seen
        return True

    cluster.wait("RF=1 leader and ISR on every broker", lone)
    full = agree(cluster.ids, (1, 2, 3))
    v = cluster.wait("the full ISR on every broker", full)
    leader = next(iter(v.values()))[0]
    # A follower that is not the controller's leader if there is one: the
    # report then does not wait for a controller election.
    controller = solo(leader).list_topics(timeout=5).controller_id
    followers = [i for i in cluster.ids if i != leader]
    follower = next((i for i in followers if i != controller), followers[0])
    live = [i for i in cluster.ids if i != follower]
    cluster.kill(follower)
    t0 = time.monotonic()
    shrunk = tuple(sorted(live))
    # Out of the leader's ISR after replica.lag.time.max.ms, recorded at
    # the next report; slack for a loaded machine and a debug build.
    budget = (LAG_MS + REPORT_MS) / 1000 + 4.0
    cluster.wait(f"ISR {shrunk} on {live}", agree(live, shrunk), timeout=budget)
    took = time.monotonic() - t0
    print(f"ISR shrank on every live broker {took:.1f} s after the kill")
    cluster.start(follower)
    cluster.wait("the ISR grown back on every broker", full, timeout=40)


@pytest.mark.broker_set("min.insync.replicas=3", "replica.lag.time.max.ms=1500")
def test_acks_all_refused_when_the_isr_is_below_min_insync(cluster):
    admin = create(cluster, "strict", 1, 3)
    p = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all", **QUIET})
    errors = []
    p.produce("strict", b"ok", on_delivery=lambda e, m: errors.append(e))
    p.flush(20)
    assert errors == [None]
    leader = leader_of(cluster, admin, "strict", 0)
    follower = next(i for i in cluster.ids if i != leader)
    cluster.kill(follower)
    time.sleep(3)
    p = Producer(
        {"bootstrap.servers": cluster.bootstrap, "acks": "all", "message.timeout.ms": 4000, **QUIET}
    )
    errors = []
    p.produce("strict", b"refused", on_delivery=lambda e, m: errors.append(e))
    p.flush(20)
    assert len(errors) == 1 and errors[0] is not None
    assert errors[0].code() in (KafkaError.NOT_ENOUGH_REPLICAS, KafkaError._MSG_TIMED_OUT), errors[0]
    cluster.start(follower)
    out = read_all(cluster, "strict", 1)
    assert [v for _, v in out[0]] == [b"ok"], "a refused record must not be readable"


def test_idempotent_acks_all_survives_kills_pauses_and_partitions(cluster):
    """The fault run: every acknowledged record present exactly once, in
    order per partition, after leaders are killed, brokers paused and
    restarted, and a broker is cut off from the others."""
    partitions = 3
    admin = create(cluster, "faults", partitions, 3)
    acked = defaultdict(list)  # partition -> [value] in ack order
    failed = []
    stop = threading.Event()

    def produce():
        p = Producer(
            {
                "bootstrap.servers": cluster.bootstrap,
                "acks": "all",
                "enable.idempotence": True,
                "message.timeout.ms": 60000,
                "linger.ms": 5,
                **QUIET,
            }
        )

        def done(err, msg):
            if err is None:
                acked[msg.partition()].append(msg.value())
            else:
                failed.append(err)

        n = 0
        while not stop.is_set():
            try:
                p.produce("faults", f"{n:08d}".encode(), partition=n % partitions, on_delivery=done)
                n += 1
            except BufferError:
                p.poll(0.05)
            p.poll(0)
            if n % 50 == 0:
                time.sleep(0.01)
        p.flush(90)

    # A consumer group member reads along through all the faults; it may
    # see a record twice (a rebalance or a coordinator failover replays
    # from its last commit: auto commits are not synchronous), never miss
    # one.
    live = set()
    live_errors = []
    live_last = {}  # partition -> (last offset read, when)
    live_stop = threading.Event()

    def consume():
        cons = Consumer(
            {
                "bootstrap.servers": cluster.bootstrap,
                "group.id": "live",
                "auto.offset.reset": "earliest",
                "auto.commit.interval.ms": 500,
                "session.timeout.ms": 6000,
                **QUIET,
            }
        )
        cons.subscribe(["faults"])
        while not live_stop.is_set():
            m = cons.poll(0.2)
            if m is None:
                continue
            if m.error():
                live_errors.append(f"{time.strftime('%T')} {m.error()}")
            else:
                live.add(m.value())
                live_last[m.partition()] = (m.offset(), time.strftime("%T"))
        live_last["assignment"] = [(tp.partition, tp.offset) for tp in cons.position(cons.assignment())]
        cons.close()

    lt = threading.Thread(target=consume, daemon=True)
    lt.start()
    t = threading.Thread(target=produce, daemon=True)
    t.start()
    time.sleep(2)
    # 1. kill -9 the leader of partition 0, restart it later.
    victim = leader_of(cluster, admin, "faults", 0)
    cluster.kill(victim)
    time.sleep(4)
    cluster.start(victim)
    time.sleep(2)
    # 2. SIGSTOP another broker for longer than an election timeout.
    paused = leader_of(cluster, admin, "faults", 1)
    cluster.pause(paused)
    time.sleep(4)
    cluster.resume(paused)
    time.sleep(2)
    # 3. Cut a broker off from the others (it keeps its clients).
    cut = leader_of(cluster, admin, "faults", 2)
    cluster.isolate(cut)
    time.sleep(5)
    cluster.heal()
    time.sleep(2)
    # 4. kill -9 the controller's leader.
    ctl = admin.list_topics(timeout=10).controller_id
    cluster.kill(ctl)
    time.sleep(3)
    cluster.start(ctl)
    time.sleep(3)
    stop.set()
    t.join(120)
    assert not t.is_alive(), "producer did not finish"
    assert not failed, f"acks=all deliveries failed: {failed[:3]}"
    total = sum(len(v) for v in acked.values())
    assert total > 500, f"too little was produced to mean anything: {total}"
    everything = {v for vs in acked.values() for v in vs}
    try:
        cluster.wait("the live consumer to read every acknowledged record", lambda: everything <= live, timeout=60)
    except AssertionError as e:
        live_stop.set()
        lt.join(20)
        unread = {
            pid: (len(m), min(m), max(m))
            for pid in range(partitions)
            if (m := set(acked[pid]) - live)
        }
        raise AssertionError(
            f"{e}; unread per partition (count, first, last): {unread}; acked per partition: "
            f"{ {p: len(v) for p, v in acked.items()} }; last read (offset, when) and positions: {live_last}; "
            f"consumer errors: {live_errors[-10:]}"
        ) from None
    finally:
        live_stop.set()
        lt.join(20)
    out = read_all(cluster, "faults", partitions)
    for pid in range(partitions):
        values = [v for _, v in out[pid]]
        seen = {}
        dups = []
        for o, v in out[pid]:
            if v in seen:
                dups.append((seen[v], o, v))
            seen[v] = o
        if dups:
            where = [o for d in dups[:8] for o in d[:2]]
            detail = describe_offsets(cluster, "faults", pid, where)
            raise AssertionError(
                f"partition {pid}: {len(dups)} duplicates (first offset, again at, value): {dups[:5]}\n{detail}"
            )
        assert values == sorted(values), f"partition {pid}: out of order"
        missing = set(acked[pid]) - set(values)
        assert not missing, f"partition {pid}: {len(missing)} acknowledged records lost"
        offsets = [o for o, _ in out[pid]]
        assert offsets == sorted(offsets)


@pytest.mark.broker_set("log.retention.check.interval.ms=500")
def test_retention_deletes_old_segments_of_replicated_partitions_and_brokers_restart(cluster):
    """Retention runs below the Raft log's anchor (moved up every 10 s), so
    old segments go and a restarted broker recovers its Raft log."""
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap, **QUIET})
    fs = admin.create_topics(
        [NewTopic("ret", 1, 3, config={"segment.bytes": "65536", "retention.bytes": "65536"})],
        request_timeout=20,
    )
    fs["ret"].result(30)
    leader_of(cluster, admin, "ret", 0)
    p = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all", "linger.ms": 5, **QUIET})
    for i in range(3000):
        p.produce("ret", b"x" * 200 + f"{i:06d}".encode(), partition=0)
        p.poll(0)
    assert p.flush(30) == 0
    cons = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": "wm", **QUIET})
    start = cluster.wait(
        "old segments deleted",
        lambda: (lambda lo: lo if lo > 0 else None)(
            cons.get_watermark_offsets(TopicPartition("ret", 0), timeout=5)[0]
        ),
        timeout=40,
    )
    # Every broker restarts on its trimmed log and the partition keeps going.
    for i in cluster.ids:
        cluster.brokers[i].stop_clean()
        cluster.start(i)
    p = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all", **QUIET})
    errs = []
    for i in range(10):
        p.produce("ret", f"after-{i}".encode(), partition=0, on_delivery=lambda e, m: errs.append(e))
    p.flush(60)
    assert errs == [None] * 10
    # ListOffsets is answered by the leader only (NOT_LEADER_OR_FOLLOWER
    # elsewhere, as in Kafka): the consumer's metadata may still name the
    # leader from before the restarts, and this call does not retry. A
    # follower only trims what is 4096 entries below its applied index, so
    # its log may still start at 0 if it leads for a while after the
    # restarts; leadership goes back to the preferred (trimmed) replica.
    def trimmed():
        lo, hi = cons.get_watermark_offsets(TopicPartition("ret", 0), timeout=10)
        return (lo, hi) if lo >= start and hi > lo else None

    cluster.wait("the trimmed log's watermarks from the leader", trimmed, timeout=40)
    cons.close()


def test_a_down_broker_is_fenced_and_gets_no_new_replicas(cluster):
    """The controller fences a broker it stops hearing from: a replication
    factor above the brokers that are up is refused, and the broker is
    unfenced when it is back."""
    admin = create(cluster, "before", 1, 3)
    ctl = admin.list_topics(timeout=10).controller_id
    victim = next(i for i in cluster.ids if i != ctl)
    cluster.kill(victim)

    def refused():
        fs = admin.create_topics([NewTopic(f"rf3-{time.monotonic_ns()}", 1, 3)], request_timeout=20)
        try:
            list(fs.values())[0].result(30)
            return None
        except KafkaException as e:
            return e.args[0].code() == KafkaError.INVALID_REPLICATION_FACTOR or None

    cluster.wait("RF 3 refused with a broker down", refused, timeout=40, every=1.0)
    # Two replicas still fit on the live brokers.
    create(cluster, "rf2", 1, 2)
    assert victim not in cluster.metadata(admin, "rf2").partitions[0].replicas
    cluster.start(victim)
    cluster.wait("RF 3 accepted again", lambda: create(cluster, f"back-{time.monotonic_ns()}", 1, 3) is not None, timeout=40, every=1.0)


def offsets_partition(group: str, partitions: int) -> int:
    """Kafka's rule: Java's String.hashCode of the group, sign bit cleared,
    modulo the partition count."""
    h = 0
    data = group.encode("utf-16-be")
    for i in range(0, len(data), 2):
        h = (31 * h + int.from_bytes(data[i : i + 2], "big")) & 0xFFFFFFFF
    return (h & 0x7FFFFFFF) % partitions


def test_group_offsets_fail_over_with_their_offsets_partition(cluster):
    """A group's coordinator is the Raft leader of its replicated
    __consumer_offsets partition. A synchronous commit is acknowledged once
    a majority has it: kill -9 the coordinator, and a new member of the
    group resumes exactly at the committed offsets, which every surviving
    broker reports."""
    topic, partitions, group = "resume", 2, "failover"
    admin = create(cluster, topic, partitions, 3)
    # Every broker is asked for a coordinator at once (librdkafka sends the
    # requests from its own threads), so they race to create the offsets
    # topic: all of them must end up answering. (OffsetFetch, not
    # DescribeGroups: librdkafka 2.16 aborts on a retried DescribeGroups of
    # an unknown group, "rd_kafka_enq_once_del_source_return: Assertion".)
    # It also aborts on a retry after a timed-out coordinator lookup, so
    # this is one attempt each, with a generous timeout.
    admins = {i: AdminClient({"bootstrap.servers": f"127.0.0.1:{cluster.kafka[i]}", **QUIET}) for i in cluster.ids}
    pending = {
        i: a.list_consumer_group_offsets([ConsumerGroupTopicPartitions(f"race-{i}")], request_timeout=30)[f"race-{i}"]
        for i, a in admins.items()
    }
    retriable = (KafkaError.COORDINATOR_LOAD_IN_PROGRESS, KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_NOT_AVAILABLE)
    for i, f in pending.items():
        try:
            f.result(40)
        except KafkaException as e:
            # A broker's answer (not a client timeout) may be retried.
            assert e.args[0].code() in retriable, e
            cluster.wait(
                f"the offsets of race-{i} from broker {i}",
                lambda: admins[i]
                .list_consumer_group_offsets([ConsumerGroupTopicPartitions(f"race-{i}")], request_timeout=30)[f"race-{i}"]
                .result(40),
                every=1.0,
            )
    offsets_topic = cluster.metadata(admin, "__consumer_offsets")
    assert len(offsets_topic.partitions) == 50
    assert all(len(p.replicas) == 3 for p in offsets_topic.partitions.values())
    p = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all", **QUIET})
    for i in range(200):
        p.produce(topic, f"{i:04d}".encode(), partition=i % partitions)
    assert p.flush(30) == 0
    conf = {
        "bootstrap.servers": cluster.bootstrap,
        "group.id": group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 6000,
        **QUIET,
    }
    c1 = Consumer(conf)
    c1.subscribe([topic])
    last = {}
    deadline = time.monotonic() + 60
    while not (len(last) == partitions and all(o >= 20 for o in last.values())):
        assert time.monotonic() < deadline, f"the first member read too little: {last}"
        m = c1.poll(0.5)
        if m is not None and not m.error():
            last[m.partition()] = m.offset()
    # What it read, capped below the end (a partition may have been read
    # to its end before the other started): data is left to resume on.
    committed = {part: min(o + 1, 40 + part) for part, o in last.items()}
    done = c1.commit(
        offsets=[TopicPartition(topic, part, o) for part, o in committed.items()],
        asynchronous=False,
    )
    assert all(tp.error is None for tp in done), done
    c1.close()

    # The coordinator is the leader of the group's offsets partition.
    n = len(cluster.metadata(admin, "__consumer_offsets").partitions)
    meta = cluster.metadata(admin, "__consumer_offsets").partitions[offsets_partition(group, n)]
    assert len(meta.replicas) == 3, meta.replicas

    def coordinator(a):
        d = a.describe_consumer_groups([group], request_timeout=10)[group].result(15)
        return d.coordinator.id if d.coordinator.id > 0 else None

    victim = cluster.wait("the group's coordinator", lambda: coordinator(admin))
    leader = cluster.wait(
        "the offsets partition's leader",
        lambda: (lambda l: l if l > 0 else None)(
            cluster.metadata(admin, "__consumer_offsets").partitions[offsets_partition(group, n)].leader
        ),
    )
    assert victim == leader, f"coordinator {victim}, offsets partition led by {leader}"
    cluster.kill(victim)
    survivors = [i for i in cluster.ids if i != victim]

    # Another broker takes over the group, with its offsets.
    for i in survivors:
        a = AdminClient({"bootstrap.servers": f"127.0.0.1:{cluster.kafka[i]}", **QUIET})

        def offsets():
            r = a.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)], request_timeout=10)
            got = r[group].result(15)
            return {tp.partition: tp.offset for tp in got.topic_partitions if tp.topic == topic} or None

        assert cluster.wait(f"the committed offsets from broker {i}", offsets, timeout=40) == committed
    new = cluster.wait(
        "a new coordinator", lambda: (lambda c: c if c != victim else None)(coordinator(a)), timeout=40
    )
    assert new in survivors

    # A new member resumes at the commits, not at auto.offset.reset.
    c2 = Consumer(conf)
    c2.subscribe([topic])
    first = {}
    deadline = time.monotonic() + 60
    while len(first) < partitions:
        assert time.monotonic() < deadline, f"the new member read too little: {first}"
        m = c2.poll(0.5)
        if m is not None and not m.error():
            first.setdefault(m.partition(), m.offset())
    c2.close()
    assert first == committed, f"resumed at {first}, committed {committed}"


def test_the_cli_follows_a_leader_kill_and_a_group_resumes_at_its_commits(cluster):
    """The README's walk-through: the admin CLI produces and consumes
    across kill -9 of a partition's leader (it looks the leader up again
    instead of exiting), and a group read with the CLI resumes at what it
    committed."""
    from conftest import broker_bin

    def cli(*args: str, input: bytes = b"") -> str:
        res = subprocess.run(
            [str(broker_bin()), "--bootstrap", cluster.bootstrap, *args],
            input=input, capture_output=True, timeout=60, check=False,
        )
        err = res.stderr.decode(errors="replace")
        assert res.returncode == 0, f"odradek {args} exited {res.returncode}: {err}"
        return res.stdout.decode()

    admin = create(cluster, "walk", 1, 3)
    leader_of(cluster, admin, "walk", 0)
    cli("produce", "walk", input="".join(f"{i}\n" for i in range(300)).encode())
    first = cli("consume", "walk", "--group", "walkers", "--from-beginning", "--max-messages", "100")
    assert first.split() == [str(i) for i in range(100)]
    cluster.kill(leader_of(cluster, admin, "walk", 0))
    cli("produce", "walk", input="".join(f"{i}\n" for i in range(300, 400)).encode())
    rest = cli("consume", "walk", "--group", "walkers", "--exit-at-end")
    assert rest.split() == [str(i) for i in range(100, 400)], "resumed at the commit, read to the end"
