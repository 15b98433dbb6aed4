"""Logging: lifecycle at INFO on "tasker" (or the logger given); per-task detail at DEBUG."""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

import pytest

import tasker
from tasker.testing import Resource, Resources

LONG = 30.0  # a safety net against hangs, never reached when the test passes

Manager = tasker.TaskManager[Resource, Any]


def make_manager(resources: Resources, **options: Any) -> Manager:
    options.setdefault("burst_interval", None)
    options.setdefault("name", "logs")
    return tasker.TaskManager(resources.create, on_destroy=resources.destroy, **options)


def messages(caplog: pytest.LogCaptureFixture, logger: str, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger and r.levelno == level]


def assert_logged(texts: list[str], pattern: str) -> None:
    assert any(re.search(pattern, text) for text in texts), f"no {pattern!r} in {texts}"


class RecordingLogger:
    """A logger-like object that is not a ``logging.Logger`` (the ``Logger`` protocol)."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def _log(self, level: str, msg: str, *args: Any) -> None:
        with self._lock:
            self.lines.append((level, msg % args if args else msg))

    def debug(self, msg: str, *args: Any) -> None:
        self._log("debug", msg, *args)

    def info(self, msg: str, *args: Any) -> None:
        self._log("info", msg, *args)

    def warning(self, msg: str, *args: Any) -> None:
        self._log("warning", msg, *args)

    def error(self, msg: str, *args: Any) -> None:
        self._log("error", msg, *args)

    def exception(self, msg: str, *args: Any) -> None:
        self._log("exception", msg, *args)


def test_start_stopping_and_stopped_are_logged_at_info_on_the_tasker_logger(
    resources: Resources, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tasker")
    m = make_manager(resources, workers=2)
    assert_logged(messages(caplog, "tasker", logging.INFO), r"'logs'.*started")
    m.queue_task(lambda r: None)
    m.stop()
    info = messages(caplog, "tasker", logging.INFO)
    assert_logged(info, r"'logs'.*stopping")
    assert_logged(info, r"'logs'.*stopped")
    assert [t for t in info if "stopped" in t] == [info[-1]]  # logged once, last


def test_kill_is_logged_at_info_on_the_tasker_logger(
    resources: Resources, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tasker")
    m = make_manager(resources, workers=1)
    m.kill()
    info = messages(caplog, "tasker", logging.INFO)
    assert_logged(info, r"'logs'.*started")
    assert_logged(info, r"'logs'.*killed")


def test_a_logger_passed_in_gets_the_lifecycle_and_the_tasker_logger_nothing(
    resources: Resources, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    mine = logging.getLogger("myapp.tasks")
    m = make_manager(resources, workers=1, logger=mine)
    m.queue_task(lambda r: None)
    m.stop()
    info = messages(caplog, "myapp.tasks", logging.INFO)
    assert_logged(info, r"started")
    assert_logged(info, r"stopping")
    assert_logged(info, r"stopped")
    assert [r for r in caplog.records if r.name.startswith("tasker")] == []


def test_a_logger_like_object_gets_the_lifecycle(resources: Resources) -> None:
    mine = RecordingLogger()
    m = make_manager(resources, workers=1, logger=mine)
    m.kill()
    info = [text for level, text in mine.lines if level == "info"]
    assert_logged(info, r"'logs'.*started")
    assert_logged(info, r"'logs'.*killed")


@pytest.mark.parametrize("check_health", [None, lambda exc: True], ids=["no-check", "healthy"])
def test_task_outcomes_are_logged_only_at_debug(
    resources: Resources, caplog: pytest.LogCaptureFixture, check_health: Any
) -> None:
    caplog.set_level(logging.DEBUG, logger="tasker")
    m = make_manager(resources, workers=2, check_health=check_health)
    try:
        caplog.clear()  # only what running tasks logs from here on

        def fail(resource: Resource) -> None:
            raise ValueError("task failed on purpose")

        ok = [m.submit(lambda r, i=i: i) for i in range(300)]
        failed = [m.submit(fail, priority=i % 2 == 0) for i in range(300)]
        inline = [m.run_task(lambda r: "inline") for _ in range(20)]
        for handle in ok + failed:
            handle.exception(LONG)
        for _ in range(20):
            with pytest.raises(ValueError, match="on purpose"):
                m.run_task(fail)

        loud = [r for r in caplog.records if r.levelno > logging.DEBUG]
        assert loud == [], [r.getMessage() for r in loud]
        debug = messages(caplog, "tasker", logging.DEBUG)
        assert_logged(debug, rf"{re.escape(failed[0].id)}\b.*on purpose")
        assert [h.result(0) for h in ok] == list(range(300))
        assert inline == ["inline"] * 20
    finally:
        m.stop()
