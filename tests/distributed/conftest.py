"""Fixtures of the distributed-mode tests: brokers on a real Redis and in memory.

``REDIS_URL`` (default ``redis://127.0.0.1:6379/15``) names the server. Each test gets
its own key prefix and deletes only the keys under it. With no Redis reachable the
Redis tests skip, saying why, except under ``CI=true``, where that is an error.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tasker.distributed import Broker, MemoryBroker, RedisBroker
from tasker.testing import wait_until

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15")
HERE = Path(__file__).resolve().parent

# Short timeouts keep redelivery tests at a second or two.
VISIBILITY = 1.0
BROKER_OPTIONS = {"visibility_timeout": VISIBILITY, "max_deliveries": 3}
REDIS_OPTIONS = {**BROKER_OPTIONS, "claim_interval": 0.1, "delay_poll": 0.05}


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The test server's URL; skips (or under CI=true fails) if none answers."""
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1.0, socket_timeout=2.0)
    try:
        client.ping()
    except redis.RedisError as exc:
        reason = (
            f"no Redis server reachable at REDIS_URL={REDIS_URL} ({exc}); start one "
            "(redis-server) or point REDIS_URL at one to run the Redis tests"
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true and {reason}")
        pytest.skip(reason)
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture
def prefix() -> str:
    return f"tasker-test-{uuid.uuid4().hex[:12]}"


def delete_prefix(url: str, prefix: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
    finally:
        client.close()


@pytest.fixture
def redis_client(redis_url: str, prefix: str) -> Iterator[redis.Redis]:
    """A plain client for the test's own checks; the test's keys are deleted after."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()
    delete_prefix(redis_url, prefix)


def make_redis_broker(url: str, prefix: str, **options: object) -> RedisBroker:
    return RedisBroker.from_url(url, prefix=prefix, **{**REDIS_OPTIONS, **options})  # type: ignore[arg-type]


@pytest.fixture
def redis_broker(redis_client: redis.Redis, redis_url: str, prefix: str) -> Iterator[RedisBroker]:
    broker = make_redis_broker(redis_url, prefix)
    yield broker
    broker.close()


@pytest.fixture(params=["memory", "redis"])
def broker(request: pytest.FixtureRequest) -> Iterator[Broker]:
    """The contract runs against both implementations."""
    if request.param == "memory":
        memory = MemoryBroker(**BROKER_OPTIONS)  # type: ignore[arg-type]
        yield memory
        memory.close()
    else:
        yield request.getfixturevalue("redis_broker")


class WorkerProcess:
    """``tasker worker app_for_tests:app`` (as ``python -m tasker``) in a child process."""

    def __init__(self, url: str, prefix: str, tmp: Path, *args: str, **env: str) -> None:
        self.log = tmp / f"worker-{uuid.uuid4().hex[:6]}.log"
        environ = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
            "REDIS_URL": url,
            "TEST_PREFIX": prefix,
            **env,
        }
        self._out = self.log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tasker", "worker", "app_for_tests:app", *args],
            stdout=self._out,
            stderr=subprocess.STDOUT,
            env=environ,
        )

    @property
    def output(self) -> str:
        return self.log.read_text()

    def wait_ready(self, timeout: float = 20.0) -> WorkerProcess:
        wait_until(
            lambda: " ready: " in self.output or self.proc.poll() is not None,
            timeout=timeout,
            message="worker process never became ready",
        )
        assert self.proc.poll() is None, f"worker process exited early:\n{self.output}"
        return self

    def finish(self, timeout: float = 20.0) -> int:
        try:
            code = self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._out.close()
        return code


@pytest.fixture
def worker_process(
    redis_client: redis.Redis, redis_url: str, prefix: str, tmp_path: Path
) -> Iterator[type[WorkerProcess]]:
    """Start worker processes with ``worker_process(*args, **env)``; all are killed after."""
    started: list[WorkerProcess] = []

    def start(*args: str, **env: str) -> WorkerProcess:
        proc = WorkerProcess(redis_url, prefix, tmp_path, *args, **env)
        started.append(proc)
        return proc

    yield start  # type: ignore[misc]
    for proc in started:
        if proc.proc.poll() is None:
            proc.proc.kill()
        proc.finish()
