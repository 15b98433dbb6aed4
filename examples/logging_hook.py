"""A structured-logging hook: one JSON line per task event.

Drop it into any manager with ``hooks=[JsonLogHook()]``; each line carries the task's
id, name, state, attempts and, at the end, its duration and error. Ship these lines to
whatever indexes your logs.

    python examples/logging_hook.py
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

import tasker


class JsonLogHook:
    """Logs every task event as one JSON object on ``logger``."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger or logging.getLogger("tasker.events")

    def _emit(self, event: str, info: tasker.TaskInfo, **extra: Any) -> None:
        record = {
            "event": event,
            "task_id": info.id,
            "name": info.name,
            "state": info.state.value,
            "attempts": info.attempts,
            **extra,
        }
        self.logger.info(json.dumps(record, default=str))

    def on_submit(self, info: tasker.TaskInfo) -> None:
        self._emit("submit", info)

    def on_start(self, info: tasker.TaskInfo) -> None:
        self._emit("start", info)

    def on_retry(self, info: tasker.TaskInfo) -> None:
        self._emit("retry", info, error=repr(info.last_error))

    def on_success(self, info: tasker.TaskInfo) -> None:
        self._emit("success", info, seconds=_duration(info))

    def on_failure(self, info: tasker.TaskInfo) -> None:
        self._emit("failure", info, seconds=_duration(info), error=repr(info.last_error))

    def on_cancel(self, info: tasker.TaskInfo) -> None:
        self._emit("cancel", info)


def _duration(info: tasker.TaskInfo) -> float | None:
    if info.started_at is None or info.finished_at is None:
        return None
    return round((info.finished_at - info.started_at).total_seconds(), 6)


def main() -> None:
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(message)s")
    logging.getLogger("tasker").setLevel(logging.WARNING)  # lifecycle chatter off...
    logging.getLogger("tasker.events").setLevel(logging.INFO)  # ...task events on
    attempts = iter(range(10))

    def flaky(_: object) -> str:
        if next(attempts) == 0:
            raise ConnectionError("first try fails")
        return "ok"

    retry = tasker.RetryPolicy(max_retries=2, strategy=tasker.RetryStrategy.IMMEDIATE)
    with tasker.TaskManager(object, hooks=[JsonLogHook()], burst_interval=None) as manager:
        manager.submit(flaky, name="flaky", retry=retry).result()
        try:
            manager.queue_task(lambda _: 1 / 0)
        except ZeroDivisionError:
            pass


if __name__ == "__main__":
    main()
