"""Fixtures for the real-client integration tests.

Every test gets its own broker: the real `odradek` binary (env `ODRADEK_BIN`,
default `target/debug/odradek` under the repository root) on a free port,
with a fresh data directory and 2 shards. Teardown sends SIGTERM and asserts
a clean exit (code 0) within a timeout. `broker.restart()` stops the broker
the same way and starts it again on the same data directory.

Extra broker settings: `@pytest.mark.broker_set("num.partitions=4", ...)`
(each becomes `--set KEY=VALUE`).

Every test is bounded in time: client calls carry their own timeouts, and a
SIGALRM watchdog (env `ODRADEK_TEST_TIMEOUT`, seconds, default 120) turns a
hang anywhere else into a failure.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
LISTENING = re.compile(r"odradek broker listening on (\S+:\d+)")
METRICS = re.compile(r"metrics and health on (http://\S+)/metrics")
START_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0
TEST_TIMEOUT = int(os.environ.get("ODRADEK_TEST_TIMEOUT", "120"))


def broker_bin() -> Path:
    p = Path(os.environ.get("ODRADEK_BIN", "target/debug/odradek"))
    if not p.is_absolute():
        p = REPO_ROOT / p
    return p


class Broker:
    """One `odradek serve` process on a data directory that outlives it."""

    def __init__(self, data_dir: Path, log_path: Path, settings=(), shards: int = 2):
        self.data_dir = Path(data_dir)
        self.log_path = Path(log_path)
        self.settings = list(settings)
        self.shards = shards
        self.proc: subprocess.Popen | None = None
        self.bootstrap: str | None = None
        self.metrics_url: str | None = None
        self.starts = 0

    # -- lifecycle -------------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT, listen: str = "127.0.0.1:0") -> str:
        assert self.proc is None, "broker already running"
        binary = broker_bin()
        if not binary.exists():
            pytest.fail(f"broker binary {binary} not found (cargo build -p odradek, or set ODRADEK_BIN)")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            str(binary), "serve",
            "--listeners", listen,
            "--log-dirs", str(self.data_dir),
            "--shards", str(self.shards),
            "--metrics-listener", "127.0.0.1:0",
        ]
        for s in self.settings:
            args += ["--set", s]
        # The log goes to a file, so a chatty broker can never block on a
        # full pipe; each start appends to the same file.
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = open(self.log_path, "ab")
        # The broker reads every ODRADEK_* variable as a setting and refuses
        # unknown ones: pass on only its logging variables, not ours
        # (ODRADEK_BIN, ODRADEK_VENV, ODRADEK_TEST_TIMEOUT, ...).
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("ODRADEK_") or k in ("ODRADEK_LOG", "ODRADEK_LOG_FORMAT")
        }
        env.setdefault("ODRADEK_LOG", "info")
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env)
        log.close()
        self.starts += 1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self._log_text(offset)
            m = LISTENING.search(text)
            if m:
                self.bootstrap = m.group(1)
                mm = METRICS.search(text)
                self.metrics_url = mm.group(1) if mm else None
                return self.bootstrap
            if self.proc.poll() is not None:
                rc = self.proc.returncode
                self.proc = None
                pytest.fail(f"broker exited with {rc} before listening:\n{text[-4000:]}")
            time.sleep(0.02)
        self.proc.kill()
        self.proc.wait(5)
        self.proc = None
        pytest.fail(f"broker did not report listening within {timeout}s:\n{self._log_text(offset)[-4000:]}")

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, then wait; a broker that does not exit in time is killed
        and the test fails. Returns the exit code."""
        assert self.proc is not None, "broker not running"
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
            pytest.fail(f"broker did not exit within {timeout}s of SIGTERM:\n{self.log_tail()}")
        self.bootstrap = None
        return rc

    def stop_clean(self, timeout: float = STOP_TIMEOUT) -> None:
        rc = self.stop(timeout)
        assert rc == 0, f"broker exited with {rc} after SIGTERM:\n{self.log_tail()}"

    def restart(self) -> str:
        """Clean stop (asserting exit 0), then start on the same data dir.
        The port changes: use the returned (or `.bootstrap`) address."""
        self.stop_clean()
        return self.start()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -- inspection ------------------------------------------------------

    def _log_text(self, offset: int = 0) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, n: int = 4000) -> str:
        return self._log_text()[-n:]

    def partition_dir(self, topic: str, partition: int) -> Path:
        return self.data_dir / f"{topic}-{partition}"


@pytest.fixture
def broker_factory(tmp_path):
    """Make brokers (`factory(settings=(...))`); all still running at the end
    are stopped with SIGTERM and must exit 0."""
    made: list[Broker] = []

    def make(settings=(), shards: int = 2, start: bool = True) -> Broker:
        n = len(made)
        b = Broker(tmp_path / f"data{n}", tmp_path / f"broker{n}.log", settings, shards)
        made.append(b)
        if start:
            b.start()
        return b

    yield make
    failures = []
    for b in made:
        if b.proc is None:
            continue
        rc = b.stop()
        if rc != 0:
            failures.append(f"broker on {b.data_dir} exited with {rc}:\n{b.log_tail()}")
    if failures:
        pytest.fail("\n".join(failures))


@pytest.fixture
def broker(request, broker_factory) -> Broker:
    settings = []
    for m in request.node.iter_markers("broker_set"):
        settings.extend(m.args)
    return broker_factory(settings=settings)


@pytest.fixture
def bootstrap(broker) -> str:
    return broker.bootstrap


@pytest.fixture(autouse=True)
def _watchdog():
    """Fail (instead of block) a test that runs longer than TEST_TIMEOUT."""
    if TEST_TIMEOUT <= 0 or not hasattr(signal, "SIGALRM"):
        yield
        return

    def fire(signum, frame):
        raise TimeoutError(f"test exceeded {TEST_TIMEOUT}s (ODRADEK_TEST_TIMEOUT)")

    old = signal.signal(signal.SIGALRM, fire)
    signal.alarm(TEST_TIMEOUT)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def pytest_configure(config):
    config.addinivalue_line("markers", "broker_set(*kv): extra `--set KEY=VALUE` settings for the broker fixture")
