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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
