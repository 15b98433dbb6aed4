"""Schedules across machines: every worker computes the same run times; one enqueues.

A schedule's run times are pure functions of wall-clock time (multiples of the interval
since the epoch, or the cron expression's matches), so every worker agrees on them
without talking to the others. At each run time every worker with the schedule tries to
publish the run with the unique key ``schedule:{key}:{due_ms}``; the broker lets the
first one through and drops the rest: one run per due time, however many workers.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo
from typing import TYPE_CHECKING, Any

from tasker._schedule import parse_cron

if TYPE_CHECKING:
    from tasker.distributed._app import App

__all__ = ["RemoteSchedule", "ScheduleRunner", "cron_due", "interval_due"]

NextDue = Callable[[float], float]
"""UNIX time -> the first run time strictly after it."""


def interval_due(interval: float) -> NextDue:
    def next_due(after: float) -> float:
        return (math.floor(after / interval) + 1) * interval

    return next_due


def cron_due(expr: str, tz: tzinfo) -> NextDue:
    if not isinstance(tz, tzinfo):
        raise TypeError(f"tz must be a datetime.tzinfo (got tz={tz!r})")
    cron_sim = parse_cron(expr)  # the local scheduler's check: same errors, same words

    def next_due(after: float) -> float:
        start = datetime.fromtimestamp(after, tz=tz) + timedelta(microseconds=1)
        upcoming: datetime = next(cron_sim(expr, start))
        return upcoming.timestamp()

    return next_due


@dataclass(frozen=True, slots=True)
class RemoteSchedule:
    """A recurring task registered on an :class:`App`; its workers enqueue the runs.

    Attributes:
        key: Identifies the schedule across workers (default: the task name).
        task: The task name each run enqueues.
        payload: The payload of every run.
        description: ``every Ns`` or ``cron '...'``.
    """

    key: str
    task: str
    payload: Any
    next_due: NextDue = field(repr=False)
    description: str = ""


class ScheduleRunner:
    """One thread per worker that publishes each schedule's runs when due.

    Runs missed while no worker was up are not replayed: after a (re)start the next
    run is the first due time after now.
    """

    def __init__(
        self,
        app: App,
        clock: Callable[[], float],
        name: str,
    ) -> None:
        self._app = app
        self._clock = clock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"{name}-schedules", daemon=True)
        self.published: list[tuple[str, float]] = []  # (key, due) of the runs this one won

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()

    def _run(self) -> None:
        app = self._app
        now = self._clock()
        due = {key: s.next_due(now) for key, s in app.schedules.items()}
        while due:
            key = min(due, key=due.__getitem__)
            if self._stop.wait(max(0.0, due[key] - self._clock())):
                return
            schedule = app.schedules[key]
            try:
                if app._enqueue_run(schedule, due[key]):
                    self.published.append((key, due[key]))
            except Exception as exc:
                app.log.warning(
                    "schedule %r: could not enqueue the run due at %.3f: %r", key, due[key], exc
                )
            due[key] = schedule.next_due(max(due[key], self._clock()))
