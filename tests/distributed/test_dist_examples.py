"""examples/distributed: a worker process and a producer process on a real Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import redis
from conftest import delete_prefix

from tasker.testing import wait_until

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "distributed"


def test_producer_and_worker_examples(redis_url: str, prefix: str, tmp_path: Path) -> None:
    env = {**os.environ, "TASKER_REDIS_URL": redis_url, "TASKER_REDIS_PREFIX": prefix}
    log = tmp_path / "worker.log"
    with log.open("w") as out:
        worker = subprocess.Popen(
            [sys.executable, str(EXAMPLE / "worker.py")],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        wait_until(lambda: " ready: " in log.read_text(), timeout=20)
        done = subprocess.run(
            [sys.executable, str(EXAMPLE / "producer.py")],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        out = done.stdout
        assert "resize result: {'id': 7, 'width': 256" in out
        assert "unique_key: second enqueue returned the same task: True" in out
        assert "group of 8 resized to {64}" in out
        assert "chain: image 42 published at 512px" in out
        assert "flaky: stored 9 after 2 attempts" in out
        assert "delayed: scheduled, then 99" in out
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0
        text = log.read_text()
        assert "Summary: worker" in text
        assert text.count("opened a Thumbnailer") == text.count("closed a Thumbnailer") >= 2
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        client = redis.Redis.from_url(redis_url)
        client.close()
        delete_prefix(redis_url, prefix)
