"""Idempotent producers against the real broker through a TCP proxy that
cuts connections mid-stream: every message must arrive exactly once and in
order.

The proxy cuts a connection right after the broker has answered a request
(it swallows the answer and closes both sides), so the client must resend a
batch the broker already wrote: without deduplication it would be stored
twice. The broker advertises the proxy's address, so every connection of
the clients goes through it.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest

from helpers import CALL_TIMEOUT, ck_consume_all, ck_partitions, ck_producer, stored_batches, topic_name

DEDUP_LOG = "idempotent retry answered with its original offsets"


class CuttingProxy:
    """Forwards 127.0.0.1:<port> to the broker. `cut_next(n)` arms it to
    kill the next `n` connections that carry Produce requests at the moment
    a broker answer arrives: the answer is dropped, both sockets closed."""

    def __init__(self):
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.upstream: tuple[str, int] | None = None
        self.lock = threading.Lock()
        self.armed = 0
        self.cuts = 0
        self.closing = False
        self.socks: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def point_at(self, bootstrap: str) -> None:
        host, port = bootstrap.rsplit(":", 1)
        self.upstream = (host, int(port))

    def cut_next(self, n: int = 1) -> None:
        with self.lock:
            self.armed += n

    def _take_cut(self) -> bool:
        with self.lock:
            if self.armed > 0:
                self.armed -= 1
                self.cuts += 1
                return True
            return False

    def _accept(self):
        while not self.closing:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.upstream is None:
                client.close()
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self.lock:
                self.socks += [client, server]
            conn = {"produce_corrs": set()}
            threading.Thread(target=self._pump, args=(client, server, conn, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, conn, True), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, conn: dict, from_broker: bool):
        # Both directions follow the frames (size i32, then the header). The
        # client side notes the correlation ids of Produce requests; the
        # broker side cuts, when armed, exactly at the start of an answer to
        # one of them: that batch was written (acks=all answers after the
        # write), so the client's resend must be deduplicated.
        pending = bytearray()
        skip = 0
        cut = False
        try:
            while not cut:
                data = src.recv(65536)
                if not data:
                    break
                pending += data
                out = bytearray()
                while True:
                    if skip:
                        n = min(skip, len(pending))
                        out += pending[:n]
                        del pending[:n]
                        skip -= n
                        if skip:
                            break
                    if len(pending) < 12:
                        break
                    size = int.from_bytes(pending[:4], "big")
                    if from_broker:
                        corr = int.from_bytes(pending[4:8], "big", signed=True)
                        if corr in conn["produce_corrs"] and self._take_cut():
                            cut = True  # the answer is lost: the client must retry
                            break
                    else:
                        if int.from_bytes(pending[4:6], "big") == 0:
                            conn["produce_corrs"].add(int.from_bytes(pending[8:12], "big", signed=True))
                    skip = 4 + size
                if out:
                    dst.sendall(out)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self):
        self.closing = True
        self.listener.close()
        with self.lock:
            socks, self.socks = self.socks, []
        for s in socks:
            try:
                s.close()
            except OSError:
                pass


@pytest.fixture
def proxied(broker_factory, monkeypatch):
    """A broker (one partition per topic) that advertises a cutting proxy,
    with the produce handler's debug log on to count duplicates."""
    monkeypatch.setenv("ODRADEK_LOG", "info,odradek_node::handlers=trace,odradek_node::connection=debug")
    proxy = CuttingProxy()
    broker = broker_factory(settings=["num.partitions=1", f"advertised.listeners={proxy.address}"], start=False)
    broker.start()
    proxy.point_at(broker.bootstrap)
    try:
        yield broker, proxy
    finally:
        proxy.close()


def stored_records(broker, topic: str) -> int:
    return sum(count for (_, _, count, _) in stored_batches(broker.partition_dir(topic, 0)))


def produce_with_cuts(send, flush, total: int, proxy: CuttingProxy, cuts: int):
    """Call send(i) for every message, arming one cut every total/(cuts+1)
    messages, then flush."""
    step = total // (cuts + 1)
    for i in range(total):
        if i and i % step == 0 and proxy.cuts + proxy.armed < cuts:
            proxy.cut_next()
        send(i)
    flush()


def test_confluent_idempotent_producer_survives_cut_connections(proxied):
    from confluent_kafka import KafkaError

    broker, proxy = proxied
    topic = topic_name("idem-ck")
    total, cuts = 2000, 5
    p = ck_producer(
        proxy.address,
        **{
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 2,
            "batch.num.messages": 20,
            "retry.backoff.ms": 50,
            "message.timeout.ms": 60000,
        },
    )
    ck_partitions(p, topic, want=1)
    errors = []
    delivered = []

    def on_delivery(err, msg):
        if err is not None:
            errors.append(err)
        else:
            delivered.append(msg.offset())

    def send(i):
        while True:
            try:
                p.produce(topic, value=f"m-{i:05d}".encode(), on_delivery=on_delivery)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
        # Pace the stream a little so cuts land while batches are in flight.
        if i % 50 == 0:
            time.sleep(0.02)

    def flush():
        left = p.flush(60)
        assert left == 0, f"{left} messages undelivered"

    produce_with_cuts(send, flush, total, proxy, cuts)
    assert not errors, f"delivery errors: {errors[:5]}"
    assert proxy.cuts >= 1, "the proxy never cut a connection"
    assert len(delivered) == total
    # Each acknowledged offset belongs to exactly one message.
    assert sorted(delivered) == list(range(total)), "acknowledged offsets have gaps or repeats"
    got = ck_consume_all(proxy.address, topic, total, partitions=[0])
    values = [m["value"].decode() for m in got]
    assert values == [f"m-{i:05d}" for i in range(total)], "messages lost, duplicated or reordered"
    assert stored_records(broker, topic) == total
    dups = broker.log_tail(10_000_000).count(DEDUP_LOG)
    print(f"confluent: {proxy.cuts} cuts, {dups} duplicate batches answered from the log")
    assert dups >= 1, f"no retry was deduplicated ({proxy.cuts} cuts): the test did not exercise dedup"
    # Not a fatal idempotence error on the client side either.
    assert all(e.code() != KafkaError._FATAL for e in errors)


def test_kafka_python_defaults_are_idempotent_and_exactly_once(proxied):
    kafka = pytest.importorskip("kafka")
    from kafka import KafkaProducer

    if int(kafka.__version__.split(".")[0]) < 3:
        pytest.skip("kafka-python < 3 does not enable idempotence by default")
    broker, proxy = proxied
    topic = topic_name("idem-kp")
    total, cuts = 1000, 3
    # Only what the test needs to be bounded; idempotence, acks and retries
    # are kafka-python 3's defaults.
    p = KafkaProducer(
        bootstrap_servers=proxy.address,
        request_timeout_ms=int(CALL_TIMEOUT * 1000),
        max_block_ms=int(CALL_TIMEOUT * 1000),
        linger_ms=2,
        batch_size=2048,
        retry_backoff_ms=50,
    )
    assert p.config.get("enable_idempotence") is True, "kafka-python 3 should enable idempotence by default"
    futures = []

    def send(i):
        futures.append(p.send(topic, value=f"k-{i:05d}".encode()))
        if i % 50 == 0:
            time.sleep(0.02)

    def flush():
        p.flush(timeout=60)

    try:
        produce_with_cuts(send, flush, total, proxy, cuts)
        offsets = [f.get(timeout=CALL_TIMEOUT).offset for f in futures]
    finally:
        p.close(timeout=10)
    assert proxy.cuts >= 1, "the proxy never cut a connection"
    assert sorted(offsets) == list(range(total)), "acknowledged offsets have gaps or repeats"
    got = ck_consume_all(proxy.address, topic, total, partitions=[0])
    values = [m["value"].decode() for m in got]
    assert values == [f"k-{i:05d}" for i in range(total)], "messages lost, duplicated or reordered"
    assert stored_records(broker, topic) == total
    dups = broker.log_tail(10_000_000).count(DEDUP_LOG)
    print(f"kafka-python: {proxy.cuts} cuts, {dups} duplicate batches answered from the log")
