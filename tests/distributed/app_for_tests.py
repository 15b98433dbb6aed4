"""The tasks the distributed tests run, in-process and in worker processes.

Worker processes import ``app`` (configured from ``REDIS_URL``, ``TEST_PREFIX`` and the
other ``TEST_*`` variables); in-process tests call :func:`register` on their own app.
"""

from __future__ import annotations

import os
import signal
from typing import Any

import tasker
from tasker.distributed import App, RedisBroker

RUNS: dict[str, int] = {}  # in-process tests: how often each "count" key ran


def register(app: App) -> App:
    @app.task(name="add")
    def add(resource: Any, payload: dict[str, int]) -> int:
        return payload["a"] + payload["b"]

    @app.task(name="double")
    def double(resource: Any, payload: int) -> int:
        return payload * 2

    @app.task(name="whoami")
    def whoami(resource: Any, payload: Any) -> dict[str, Any]:
        return {"pid": os.getpid(), "payload": payload}

    @app.task(name="count")
    def count(resource: Any, payload: dict[str, str]) -> str:
        # Counted in Redis when the worker has a client resource (worker processes),
        # else in this process.
        key = payload["key"]
        if resource is not None:
            resource.incr(f"{os.environ['TEST_PREFIX']}:runs:{key}")
        else:
            RUNS[key] = RUNS.get(key, 0) + 1
        return key

    @app.task(name="slow")
    def slow(resource: Any, payload: dict[str, Any]) -> dict[str, Any]:
        context = tasker.current_task()
        assert context is not None
        context.cancelled.wait(float(payload.get("seconds", 0.2)))
        return {"pid": os.getpid(), "n": payload.get("n")}

    @app.task(name="boom", retry=tasker.RetryPolicy(max_retries=2, base_delay=0.05, max_delay=0.1))
    def boom(resource: Any, payload: Any) -> None:
        raise ValueError(f"boom {payload}")

    @app.task(name="die")
    def die(resource: Any, payload: Any) -> None:
        os.kill(os.getpid(), signal.SIGKILL)  # a poison message: kills every worker

    @app.task(name="nothing", store_result=False)
    def nothing(resource: Any, payload: Any) -> Any:
        return payload

    return app


def _redis_resource() -> Any:
    import redis

    return redis.Redis.from_url(os.environ["REDIS_URL"])


def _from_env() -> App:
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15")
    broker = RedisBroker.from_url(
        url,
        prefix=os.environ.get("TEST_PREFIX", "tasker-test"),
        visibility_timeout=float(os.environ.get("TEST_VISIBILITY", "1.0")),
        max_deliveries=int(os.environ.get("TEST_MAX_DELIVERIES", "3")),
        claim_interval=0.1,
        delay_poll=0.05,
        client_name=f"{os.environ.get('TEST_PREFIX', 'tasker-test')}-worker",
    )
    app = register(App(broker, signing_key=os.environ.get("TEST_SIGNING_KEY") or None))
    app.resource(_redis_resource, on_destroy=lambda client: client.close())
    if os.environ.get("TEST_SCHEDULE"):
        app.schedule_recurring("count", float(os.environ["TEST_SCHEDULE"]), {"key": "beat"})
    return app


app = _from_env()
