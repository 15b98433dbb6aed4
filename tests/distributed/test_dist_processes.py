"""Across processes on a real Redis: worker processes started with the ``tasker worker``
command (``python -m tasker worker app_for_tests:app``), killed, cut off."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from app_for_tests import register
from conftest import make_redis_broker

from tasker.distributed import App, RemoteTaskError
from tasker.testing import wait_until


@pytest.fixture
def app(redis_client: redis.Redis, redis_url: str, prefix: str) -> Iterator[App]:
    broker = make_redis_broker(redis_url, prefix)
    yield register(App(broker))
    broker.close()


def stop(worker: Any) -> str:
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.finish() == 0, worker.output
    return str(worker.output)


def test_a_task_enqueued_here_runs_in_a_worker_process(app: App, worker_process: Any) -> None:
    worker = worker_process("--workers", "2").wait_ready()
    handle = app.enqueue("whoami", {"x": 1})
    assert handle.result(timeout=20) == {"pid": worker.proc.pid, "payload": {"x": 1}}
    assert app.enqueue("add", {"a": 20, "b": 22}).result(timeout=20) == 42
    output = stop(worker)
    assert "Summary: worker" in output
    assert "completed 2, failed 0" in output


def test_a_worker_killed_mid_task_loses_nothing(app: App, worker_process: Any) -> None:
    first = worker_process("--workers", "2", "--max-workers", "2").wait_ready()
    handles = [app.enqueue("slow", {"seconds": 0.3, "n": i}) for i in range(20)]
    wait_until(lambda: sum(h.status().value == "running" for h in handles) >= 2)
    first.proc.kill()  # SIGKILL: no chance to acknowledge or hand anything back
    assert first.finish() == -signal.SIGKILL
    second = worker_process("--workers", "4").wait_ready()
    results = [h.result(timeout=30) for h in handles]
    assert sorted(r["n"] for r in results) == list(range(20))  # 0 lost of 20
    assert any(r["pid"] == second.proc.pid for r in results)
    output = stop(second)
    redelivered = int(output.split("(redelivered ")[1].split(")")[0])
    assert redelivered >= 2  # what the killed worker held ran here


def test_workers_reconnect_after_their_connections_are_killed(
    app: App, worker_process: Any, redis_client: redis.Redis, prefix: str
) -> None:
    worker = worker_process("--workers", "4").wait_ready()
    handles = [app.enqueue("slow", {"seconds": 0.005, "n": i}) for i in range(300)]
    name = f"{prefix}-worker"
    killed = 0
    for round_ in range(3):
        wait_until(lambda r=round_: sum(h.done() for h in handles[::10]) >= (r + 1) * 6)
        # A storm of kills for a while, so reconnecting fails too now and then.
        storm_until = time.monotonic() + 0.3
        while time.monotonic() < storm_until:
            for client in redis_client.client_list():
                if client.get("name") == name:
                    redis_client.client_kill_filter(_id=client["id"])
                    killed += 1
    assert killed >= 3
    results = [h.result(timeout=30) for h in handles]
    assert sorted(r["n"] for r in results) == list(range(300))  # 0 lost of 300
    assert "completed 300" in stop(worker)


def test_a_poison_message_that_kills_workers_is_dead_lettered(
    app: App, worker_process: Any
) -> None:
    handle = app.enqueue("die")
    for _ in range(2):  # max_deliveries=2: two workers die of it ...
        victim = worker_process(TEST_MAX_DELIVERIES="2")
        assert victim.finish(timeout=20) == -signal.SIGKILL
    survivor = worker_process(TEST_MAX_DELIVERIES="2").wait_ready()  # ... the third buries it
    with pytest.raises(
        RemoteTaskError, match=r"DeadLetter: delivered 3 times \(max_deliveries=2\)"
    ):
        handle.result(timeout=20)
    (letter,) = app.dead_letters()
    assert (letter.task_id, letter.deliveries) == (handle.id, 3)
    assert app.enqueue("add", {"a": 1, "b": 1}).result(timeout=20) == 2  # still working
    stop(survivor)


def test_chain_and_group_across_two_worker_processes(app: App, worker_process: Any) -> None:
    workers = [
        worker_process("--workers", "2", "--max-workers", "2").wait_ready() for _ in range(2)
    ]
    group = app.group([("slow", {"seconds": 0.2, "n": i}) for i in range(12)])
    results = group.results(timeout=30)
    assert [r["n"] for r in results] == list(range(12))
    assert {r["pid"] for r in results} == {w.proc.pid for w in workers}
    chain = app.chain("add", "double", "double", "whoami", payload={"a": 1, "b": 2})
    final = chain.result(timeout=30)
    assert final["payload"] == 12
    assert final["pid"] in {w.proc.pid for w in workers}
    for worker in workers:
        stop(worker)


def test_a_schedule_runs_once_per_due_time_across_three_worker_processes(
    app: App, worker_process: Any, redis_client: redis.Redis, prefix: str
) -> None:
    workers = [worker_process(TEST_SCHEDULE="0.2").wait_ready() for _ in range(3)]
    runs_key = f"{prefix}:runs:beat"
    wait_until(lambda: int(redis_client.get(runs_key) or 0) >= 5, timeout=20)
    for worker in workers:
        stop(worker)
    runs = int(redis_client.get(runs_key) or 0)
    published = len(list(redis_client.scan_iter(match=f"{prefix}:u:schedule:count:*")))
    assert 5 <= runs <= published  # never more runs than due times published
    assert published - runs <= 3  # (a run published as the workers stopped may not run)


def test_a_worker_refuses_forged_messages(
    redis_url: str, prefix: str, worker_process: Any, redis_client: redis.Redis
) -> None:
    key = "a-shared-secret-of-32-characters!"
    broker = make_redis_broker(redis_url, prefix)
    try:
        good = register(App(broker, signing_key=key))
        forged = register(App(broker, signing_key="not-the-shared-secret-at-all"))
        worker = worker_process(TEST_SIGNING_KEY=key).wait_ready()
        bad = forged.enqueue("add", {"a": 1, "b": 1})
        assert good.enqueue("add", {"a": 2, "b": 2}).result(timeout=20) == 4
        wait_until(lambda: len(good.dead_letters()) == 1)
        (letter,) = good.dead_letters()
        assert letter.task_id == bad.id
        assert letter.reason.startswith("bad signature")
        stop(worker)
    finally:
        broker.close()


def test_cli_reports_a_bad_target_in_one_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tasker", "worker", "no_such_module:app"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ},
    )
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert "cannot import module 'no_such_module'" in done.stderr


def test_dead_letters_command_lists_and_redrives(
    app: App, worker_process: Any, redis_url: str, prefix: str
) -> None:
    from conftest import HERE

    App(app.broker).enqueue("not-registered", {"x": 1})
    worker = worker_process().wait_ready()
    wait_until(lambda: len(app.dead_letters()) == 1)
    stop(worker)
    env = {
        **os.environ,
        "PYTHONPATH": str(HERE),
        "REDIS_URL": redis_url,
        "TEST_PREFIX": prefix,
    }
    command = [sys.executable, "-m", "tasker", "dead-letters", "app_for_tests:app"]
    listed = subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=30, check=True
    )
    assert "unknown task name 'not-registered'" in listed.stdout
    redriven = subprocess.run(
        [*command, "--redrive"], capture_output=True, text=True, env=env, timeout=30, check=True
    )
    assert "re-drove 1 dead letters" in redriven.stdout


def test_worker_command_takes_the_tasker_environment_configuration(
    app: App, worker_process: Any
) -> None:
    worker = worker_process(TASKER_WORKERS="3", TASKER_MAX_WORKERS="3").wait_ready()
    handles = [app.enqueue("slow", {"seconds": 1.0, "n": i}) for i in range(4)]
    wait_until(lambda: sum(h.status().value == "running" for h in handles) == 3)
    # Three workers and no more: the fourth waits until one of them is free.
    assert [h.status().value for h in handles].count("running") == 3
    assert sorted(h.result(timeout=20)["n"] for h in handles) == [0, 1, 2, 3]
    stop(worker)


def test_worker_command_refuses_a_bad_variable_in_one_line(redis_url: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tasker", "worker", "app_for_tests:app"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ, "TASKER_WORKERS": "many", "REDIS_URL": redis_url},
    )
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert "TASKER_WORKERS must be an integer >= 1 (got TASKER_WORKERS='many')" in done.stderr


def test_worker_command_serves_its_counters_and_its_managers_on_metrics(
    app: App, worker_process: Any
) -> None:
    import re
    import urllib.request

    worker = worker_process("--metrics-port", "0").wait_ready()
    assert app.enqueue("add", {"a": 1, "b": 1}).result(timeout=20) == 2
    url = re.search(r"metrics at (http://\S+/metrics)", worker.output)
    assert url is not None, worker.output
    with urllib.request.urlopen(url.group(1), timeout=5) as response:
        text = response.read().decode()
    assert "tasker_worker_messages_received_total{" in text
    assert "tasker_worker_broker_connected{" in text
    assert "tasker_tasks_completed_total{" in text
    stop(worker)
