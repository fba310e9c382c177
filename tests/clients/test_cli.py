"""The admin CLI (`odradek topic|produce|consume|group ...`, the same binary
as the broker) against data and groups written by kcat (librdkafka)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time

import pytest

from conftest import broker_bin
from helpers import CODEC_IDS, stored_codecs, topic_name

KCAT = shutil.which("kcat") or shutil.which("kafkacat")
pytestmark = pytest.mark.skipif(KCAT is None, reason="kcat not installed")
TIMEOUT = 30


def kcat(bootstrap: str, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess:
    res = subprocess.run(
        [KCAT, "-b", bootstrap, "-X", "socket.timeout.ms=10000", *args],
        input=input, capture_output=True, timeout=TIMEOUT, check=False,
    )
    assert res.returncode == 0, f"kcat {args}: {res.stderr.decode(errors='replace')}"
    return res


def cli(bootstrap: str, *args: str, input: bytes = b"", code: int = 0) -> str:
    res = subprocess.run(
        [str(broker_bin()), "--bootstrap", bootstrap, *args],
        input=input, capture_output=True, timeout=TIMEOUT, check=False,
    )
    err = res.stderr.decode(errors="replace")
    assert res.returncode == code, f"odradek {args} exited {res.returncode}: {err}"
    assert "panicked" not in err, err
    return res.stdout.decode()


def test_cli_reads_what_kcat_wrote(bootstrap):
    topic = topic_name("cli-kcat")
    cli(bootstrap, "topic", "create", topic, "--partitions", "3")
    lines = "".join(f"k{i % 5}:value {i}\n" for i in range(30)).encode()
    # murmur2_random: librdkafka's Java-compatible partitioner.
    kcat(bootstrap, "-P", "-t", topic, "-K:", "-H", "origin=kcat", "-X", "partitioner=murmur2_random", input=lines)
    recs = [json.loads(l) for l in cli(bootstrap, "--json", "consume", topic, "--from-beginning", "--exit-at-end").splitlines()]
    assert len(recs) == 30
    assert sorted(r["value"] for r in recs) == sorted(f"value {i}" for i in range(30))
    assert all(r["headers"] == {"origin": "kcat"} for r in recs)
    kcat_partition = {r["key"]: r["partition"] for r in recs}
    # Offsets agree with kcat's view of the same records.
    mine = {(r["partition"], r["offset"], r["key"], r["value"]) for r in recs}
    theirs = kcat(bootstrap, "-C", "-t", topic, "-o", "beginning", "-e", "-q", "-f", "%p\t%o\t%k\t%s\n").stdout.decode()
    assert mine == {(int(p), int(o), k, v) for p, o, k, v in (l.split("\t") for l in theirs.splitlines())}
    desc = json.loads(cli(bootstrap, "--json", "topic", "describe", topic))
    assert sum(p["log_end_offset"] for p in desc["topics"][0]["partitions"]) == 30

    # The CLI's keyed produce lands where the Java partitioner (murmur2) would.
    topic2 = topic_name("cli-keys")
    cli(bootstrap, "topic", "create", topic2, "--partitions", "3")
    cli(bootstrap, "produce", topic2, "--key-separator", ":", input=b"".join(f"k{i}:x\n".encode() for i in range(5)))
    got = kcat(bootstrap, "-C", "-t", topic2, "-o", "beginning", "-e", "-q", "-f", "%k %p\n").stdout.decode()
    assert {l.split()[0]: int(l.split()[1]) for l in got.splitlines()} == kcat_partition


def test_cli_describes_a_kcat_group_with_lag(bootstrap):
    topic = topic_name("cli-group")
    group = topic_name("g")
    cli(bootstrap, "topic", "create", topic, "--partitions", "2")
    cli(bootstrap, "produce", topic, "--partition", "0", input=b"".join(b"m%d\n" % i for i in range(6)))
    # A kcat group member that stays: its assignment shows up decoded.
    proc = subprocess.Popen(
        [KCAT, "-b", bootstrap, "-G", group, topic, "-q", "-X", "auto.offset.reset=earliest",
         "-X", "enable.auto.commit=true", "-X", "auto.commit.interval.ms=100"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            res = subprocess.run([str(broker_bin()), "--bootstrap", bootstrap, "--json", "group", "describe", group],
                                 capture_output=True, timeout=TIMEOUT)
            if res.returncode == 0:
                d = json.loads(res.stdout)
                committed = {o["partition"]: o["committed_offset"] for o in d["offsets"]}
                if d["state"] == "Stable" and d["members"] and committed.get(0) == 6:
                    break
            assert time.monotonic() < deadline, f"group never settled: {res.stdout!r} {res.stderr!r}"
            time.sleep(0.3)
        (m,) = d["members"]
        assert m["assignment"] == [{"topic": topic, "partitions": [0, 1]}]
        p0 = next(o for o in d["offsets"] if o["partition"] == 0)
        assert (p0["log_end_offset"], p0["lag"], p0["member_id"]) == (6, 0, m["member_id"])
        # Two more records: lag 2 unless kcat already read them; either way
        # lag = end - committed.
        cli(bootstrap, "produce", topic, "--partition", "0", input=b"a\nb\n")
        d = json.loads(cli(bootstrap, "--json", "group", "describe", group))
        p0 = next(o for o in d["offsets"] if o["partition"] == 0)
        assert p0["log_end_offset"] == 8
        assert p0["lag"] == 8 - p0["committed_offset"]
        listed = json.loads(cli(bootstrap, "--json", "group", "list"))
        assert any(g["group"] == group and g["protocol_type"] == "consumer" for g in listed["groups"])
    finally:
        proc.terminate()
        proc.wait(timeout=TIMEOUT)


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4"])
def test_cli_reads_compressed_batches(broker, codec):
    bootstrap = broker.bootstrap
    topic = topic_name(f"cli-{codec}")
    cli(bootstrap, "topic", "create", topic)
    # Compressible enough that librdkafka keeps the compressed batch.
    lines = [f"line {i} of the same old text again and again" for i in range(500)]
    kcat(bootstrap, "-P", "-t", topic, "-z", codec, "-K:", input="".join(f"k{i}:{l}\n" for i, l in enumerate(lines)).encode())
    # The broker stores batches as sent, so this proves they are compressed.
    assert stored_codecs(broker.partition_dir(topic, 0)) == {CODEC_IDS[codec]}
    out = cli(bootstrap, "consume", topic, "--from-beginning", "--exit-at-end", "-f", "%o %k %v\n")
    assert out.splitlines() == [f"{i} k{i} {l}" for i, l in enumerate(lines)]


def test_cli_reads_zstd_batches(bootstrap):
    topic = topic_name("cli-zstd")
    cli(bootstrap, "topic", "create", topic)
    lines = [f"zstd line {i} " + "x" * (i % 7) for i in range(500)]
    res = subprocess.run([KCAT, "-b", bootstrap, "-P", "-t", topic, "-z", "zstd"],
                         input=("\n".join(lines) + "\n").encode(), capture_output=True, timeout=TIMEOUT)
    if res.returncode != 0:
        pytest.skip(f"kcat cannot write zstd: {res.stderr!r}")
    res = subprocess.run([str(broker_bin()), "--bootstrap", bootstrap, "consume", topic, "--from-beginning", "--exit-at-end"],
                         capture_output=True, timeout=TIMEOUT)
    assert res.returncode == 0, res.stderr
    assert res.stdout.decode().splitlines() == lines


def wait_for_members(bootstrap: str, group: str, sizes: list[int]) -> dict:
    deadline = time.monotonic() + 30
    while True:
        res = subprocess.run([str(broker_bin()), "--bootstrap", bootstrap, "--json", "group", "describe", group],
                             capture_output=True, timeout=TIMEOUT)
        if res.returncode == 0:
            d = json.loads(res.stdout)
            got = sorted(len((m["assignment"] or [{"partitions": []}])[0]["partitions"]) for m in d["members"])
            if d["state"] == "Stable" and got == sizes:
                return d
        assert time.monotonic() < deadline, f"group never reached {sizes}: {res.stdout!r} {res.stderr!r}"
        time.sleep(0.3)


def test_cli_group_member_shares_partitions_with_kcat(bootstrap):
    topic = topic_name("cli-share")
    group = topic_name("share")
    cli(bootstrap, "topic", "create", topic, "--partitions", "2")
    peer = subprocess.Popen(
        [KCAT, "-b", bootstrap, "-G", group, topic, "-q", "-X", "partition.assignment.strategy=range"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    mine = None
    try:
        wait_for_members(bootstrap, group, [2])
        mine = subprocess.Popen(
            [str(broker_bin()), "--bootstrap", bootstrap, "consume", topic, "--group", group,
             "--max-messages", "1", "--timeout-ms", "30000", "-f", "%p:%v\\n"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        d = wait_for_members(bootstrap, group, [1, 1])
        cli_member = next(m for m in d["members"] if m["client_id"] == "odradek-cli")
        (assigned,) = cli_member["assignment"][0]["partitions"]
        cli(bootstrap, "produce", topic, "--partition", "0", input=b"zero\n")
        cli(bootstrap, "produce", topic, "--partition", "1", input=b"one\n")
        out, err = mine.communicate(timeout=TIMEOUT)
        assert mine.returncode == 0, err
        assert out.decode() == {0: "0:zero\n", 1: "1:one\n"}[assigned]
    finally:
        if mine is not None and mine.poll() is None:
            mine.kill()
        peer.terminate()
        peer.wait(timeout=TIMEOUT)
