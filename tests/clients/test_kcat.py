"""kcat (librdkafka, simple consumer: no group) against the real broker."""

from __future__ import annotations

import json
import shutil
import subprocess
import time

import pytest

from helpers import CODEC_IDS, stored_batches, stored_codecs, topic_name

KCAT = shutil.which("kcat") or shutil.which("kafkacat")
pytestmark = pytest.mark.skipif(KCAT is None, reason="kcat not installed")

KCAT_TIMEOUT = 30


def kcat(bootstrap: str, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess:
    """Run kcat with a hard timeout; a hang fails the test."""
    return subprocess.run(
        [KCAT, "-b", bootstrap, "-X", "socket.timeout.ms=10000", *args],
        input=input,
        capture_output=True,
        timeout=KCAT_TIMEOUT,
        check=False,
    )


def ok(res: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert res.returncode == 0, f"kcat exited {res.returncode}: {res.stderr.decode(errors='replace')}"
    return res


def consume(bootstrap: str, topic: str, fmt: str, *extra: str) -> list[str]:
    res = ok(kcat(bootstrap, "-C", "-t", topic, "-o", "beginning", "-e", "-q", "-f", fmt, *extra))
    return res.stdout.decode().splitlines()


def test_metadata_lists_the_broker(bootstrap):
    host, port = bootstrap.rsplit(":", 1)
    # Text form.
    text = ok(kcat(bootstrap, "-L")).stdout.decode()
    assert "1 brokers:" in text, text
    assert f"broker 0 at {host}:{port}" in text, text
    # JSON form, after auto-creating a topic via produce.
    topic = topic_name("meta")
    ok(kcat(bootstrap, "-P", "-t", topic, input=b"x\n"))
    md = json.loads(ok(kcat(bootstrap, "-L", "-J", "-t", topic)).stdout)
    assert [(b["id"], b["name"]) for b in md["brokers"]] == [(0, f"{host}:{port}")]
    (t,) = md["topics"]
    assert t["topic"] == topic
    assert [p["partition"] for p in t["partitions"]] == [0]
    assert t["partitions"][0]["leader"] == 0


def test_keyed_produce_with_headers_and_consume_back(bootstrap):
    topic = topic_name("keys")
    lines = [f"key{i}:value {i} with : colon" for i in range(50)]
    before = int(time.time() * 1000)
    ok(
        kcat(
            bootstrap, "-P", "-t", topic, "-K:", "-H", "h1=one", "-H", "trace=abc",
            input=("\n".join(lines) + "\n").encode(),
        )
    )
    after = int(time.time() * 1000)
    out = consume(bootstrap, topic, "%k|%s|%o|%p|%T|%h\n")
    assert len(out) == 50, out
    for i, line in enumerate(out):
        key, value, offset, partition, ts, headers = line.split("|")
        assert key == f"key{i}"
        # -K: splits on the first delimiter only.
        assert value == f"value {i} with : colon"
        assert int(offset) == i
        assert int(partition) == 0
        assert before - 1000 <= int(ts) <= after + 1000, (before, ts, after)
        assert headers == "h1=one,trace=abc"


def test_consume_from_offset_and_end(bootstrap):
    topic = topic_name("offs")
    ok(kcat(bootstrap, "-P", "-t", topic, input=b"".join(b"m%d\n" % i for i in range(20))))
    res = ok(kcat(bootstrap, "-C", "-t", topic, "-o", "15", "-e", "-q", "-f", "%o:%s\n"))
    assert res.stdout.decode().splitlines() == [f"{i}:m{i}" for i in range(15, 20)]
    # Relative to the end: the last 3.
    res = ok(kcat(bootstrap, "-C", "-t", topic, "-o", "-3", "-e", "-q", "-f", "%o:%s\n"))
    assert res.stdout.decode().splitlines() == [f"{i}:m{i}" for i in range(17, 20)]


CODECS = [
    "gzip",
    "snappy",
    "lz4",
    "zstd",
]


def produce_compressed(bootstrap: str, topic: str, codec: str) -> list[str]:
    # Compressible values, so each batch really is worth compressing.
    values = [f"{codec}-{i:04d}-" + "abcdefgh" * 20 for i in range(300)]
    ok(
        kcat(
            bootstrap, "-P", "-t", topic, "-z", codec, "-X", "linger.ms=50",
            input=("\n".join(values) + "\n").encode(),
        )
    )
    return values


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_compression_round_trip(broker, codec):
    topic = topic_name(f"z{codec}")
    values = produce_compressed(broker.bootstrap, topic, codec)
    out = consume(broker.bootstrap, topic, "%o %s\n")
    assert out == [f"{i} {v}" for i, v in enumerate(values)]
    assert sum(c for (_, _, c, _) in stored_batches(broker.partition_dir(topic, 0))) == 300


@pytest.mark.parametrize("codec", CODECS)
def test_compression_is_stored_as_sent(broker, codec):
    topic = topic_name(f"s{codec}")
    values = produce_compressed(broker.bootstrap, topic, codec)
    # The broker stores batches as sent: compressed with this codec.
    pdir = broker.partition_dir(topic, 0)
    assert stored_codecs(pdir) == {CODEC_IDS[codec]}, stored_batches(pdir)
    # And a compressed batch is served back intact.
    out = consume(broker.bootstrap, topic, "%o %s\n")
    assert out == [f"{i} {v}" for i, v in enumerate(values)]
