"""A 3-broker Odradek cluster of real processes on loopback, with a
fault-injecting TCP proxy on every directed inter-broker link.

Broker i reaches broker j's Raft transport through proxy (i, j), so a
network partition is a matter of blocking proxies: a blocked proxy closes
its connections and refuses new ones. Brokers are killed with SIGKILL,
paused with SIGSTOP/SIGCONT, stopped with SIGTERM, restarted on their data
directories.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

from conftest import Broker


_taken: set[int] = set()


def free_port() -> int:
    """A port below Linux's ephemeral range (32768-60999): a port the kernel
    hands out for bind(0) or an outgoing connection could be taken by the
    time a broker binds it (this happened in CI), one from here cannot."""
    import random

    lo, hi = ephemeral_range()
    for _ in range(1000):
        port = random.randrange(10000, lo if lo > 11000 else 32768)
        if port in _taken or lo <= port <= hi:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _taken.add(port)
        return port
    raise RuntimeError("no free port below the ephemeral range")


def ephemeral_range() -> tuple[int, int]:
    try:
        lo, hi = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999


class Proxy:
    """Forward 127.0.0.1:<port> to `target`, unless blocked."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.blocked = False
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(64)
        self.port = self.server.getsockname()[1]
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                c, _ = self.server.accept()
            except OSError:
                return
            if self.blocked:
                c.close()
                continue
            try:
                u = socket.create_connection(self.target, timeout=2)
                u.settimeout(None)
            except OSError:
                c.close()
                continue
            with self.lock:
                self.conns += [c, u]
            threading.Thread(target=self._pipe, args=(c, u), daemon=True).start()
            threading.Thread(target=self._pipe, args=(u, c), daemon=True).start()

    def _pipe(self, a: socket.socket, b: socket.socket):
        try:
            while True:
                data = a.recv(65536)
                if not data or self.blocked:
                    break
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.close()
            except OSError:
                pass

    def block(self):
        self.blocked = True
        with self.lock:
            conns, self.conns = self.conns, []
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass

    def unblock(self):
        self.blocked = False

    def close(self):
        self.closed = True
        self.block()
        self.server.close()


class Cluster:
    def __init__(self, tmp: Path, n: int = 3, settings=()):
        self.ids = list(range(1, n + 1))
        self.kafka = {i: free_port() for i in self.ids}
        self.raft = {i: free_port() for i in self.ids}
        self.proxies = {
            (i, j): Proxy(("127.0.0.1", self.raft[j]))
            for i in self.ids
            for j in self.ids
            if i != j
        }
        brokers_spec = ",".join(f"{i}@127.0.0.1:{self.kafka[i]}" for i in self.ids)
        self.brokers: dict[int, Broker] = {}
        for i in self.ids:
            voters = ",".join(
                f"{j}@127.0.0.1:{self.raft[j] if j == i else self.proxies[(i, j)].port}"
                for j in self.ids
            )
            b = Broker(
                tmp / f"node{i}",
                tmp / f"node{i}.log",
                [
                    f"node.id={i}",
                    f"controller.quorum.voters={voters}",
                    f"cluster.brokers={brokers_spec}",
                    *settings,
                ],
            )
            b.listen = f"127.0.0.1:{self.kafka[i]}"
            self.brokers[i] = b

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{self.kafka[i]}" for i in self.ids)

    def start(self, i: int):
        self.brokers[i].start(listen=self.brokers[i].listen)

    def start_all(self):
        for i in self.ids:
            self.start(i)

    def kill(self, i: int):
        """SIGKILL: no flush, no goodbye."""
        b = self.brokers[i]
        proc, b.proc = b.proc, None
        proc.kill()
        proc.wait(10)

    def pause(self, i: int):
        self.brokers[i].proc.send_signal(19)  # SIGSTOP

    def resume(self, i: int):
        self.brokers[i].proc.send_signal(18)  # SIGCONT

    def isolate(self, i: int):
        """Cut broker i off from the others, both ways."""
        for (a, b), p in self.proxies.items():
            if i in (a, b):
                p.block()

    def heal(self):
        for p in self.proxies.values():
            p.unblock()

    def stop_all(self) -> list[str]:
        failures = []
        for b in self.brokers.values():
            if b.proc is None:
                continue
            if b.proc.poll() is None:
                b.proc.send_signal(18)
            rc = b.stop()
            if rc != 0:
                failures.append(f"{b.data_dir}: exit {rc}\n{b.log_tail()}")
        for p in self.proxies.values():
            p.close()
        return failures

    def metadata(self, admin, topic: str, timeout: float = 10.0):
        md = admin.list_topics(topic, timeout=timeout)
        return md.topics[topic]

    def wait(self, what: str, cond, timeout: float = 30.0, every: float = 0.2):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                last = cond()
                if last:
                    return last
            except Exception as e:  # noqa: BLE001 - retried until the deadline
                last = e
            time.sleep(every)
        raise AssertionError(f"timed out waiting for {what}: {last!r}")


def batch_headers(partition_dir: Path):
    """(base_offset, last_offset, leader_epoch, producer_id, producer_epoch,
    base_sequence) of every batch in a partition directory's segments, read
    straight from the files: the evidence a failed run leaves behind."""
    import struct

    out = []
    for seg in sorted(Path(partition_dir).glob("*.log")):
        data = seg.read_bytes()
        pos = 0
        while pos + 61 <= len(data):
            base, length, epoch = struct.unpack_from(">qii", data, pos)
            if length <= 0 or pos + 12 + length > len(data):
                break
            last_delta = struct.unpack_from(">i", data, pos + 23)[0]
            pid, pepoch, seq = struct.unpack_from(">qhi", data, pos + 43)
            out.append((base, base + last_delta, epoch, pid, pepoch, seq))
            pos += 12 + length
    return out


def describe_offsets(cluster: "Cluster", topic: str, partition: int, offsets) -> str:
    """The batch headers around `offsets` on every broker, for a failure message."""
    lines = []
    lo, hi = min(offsets) - 3, max(offsets) + 3
    for i, b in cluster.brokers.items():
        d = b.data_dir / f"{topic}-{partition}"
        rows = [h for h in batch_headers(d) if h[1] >= lo and h[0] <= hi]
        lines.append(f"broker {i} (base, last, leader_epoch, pid, epoch, seq):")
        lines += [f"  {r}" for r in rows]
        log = b.log_path.read_text(errors="replace").splitlines() if b.log_path.exists() else []
        mentions = [l for l in log if f"{topic}-{partition}" in l or "WARN" in l or "ERROR" in l]
        lines.append(f"broker {i} log lines about {topic}-{partition}, warnings and errors (last 40):")
        lines += [f"  {l}" for l in mentions[-40:]]
    return "\n".join(lines)
