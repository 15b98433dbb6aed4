"""Schedule: a recurring job (fixed interval or cron) whose runs are ordinary tasks.

Each run is submitted on the manager's timer thread as a new task with its own id.
Runs never overlap unless ``overlap=True`` (a run due while the previous one is still
queued or running is skipped), and a run missed because the process was busy is not
replayed in a burst: the next due time is the first one after now.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, tzinfo
from typing import TYPE_CHECKING, Any

from tasker._errors import ManagerClosed, QueueFull
from tasker._handle import TaskHandle

if TYPE_CHECKING:
    from tasker._manager import TaskManager
    from tasker._timer import TimerEntry

__all__ = ["Schedule", "cron_next", "interval_next"]

_ids = itertools.count(1)

NextDue = Callable[[float, float], float]
"""(previous due time, now) -> next due time, all in clock seconds."""


def interval_next(interval: float) -> NextDue:
    """Every ``interval`` seconds, skipping (not replaying) runs that were missed."""

    def next_due(previous: float, now: float) -> float:
        missed = max(0, math.floor((now - previous) / interval))
        return previous + (missed + 1) * interval

    return next_due


def parse_cron(expr: str) -> Any:
    """Check ``expr`` now, so a bad expression fails at ``schedule_cron``."""
    try:
        from cronsim import CronSim, CronSimError
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError(
            "schedule_cron needs the 'cronsim' package: pip install 'tasker-pool[cron]'"
        ) from exc
    if not isinstance(expr, str):
        raise TypeError(f"expr must be a cron expression string (got expr={expr!r})")
    try:
        CronSim(expr, datetime.now(UTC))
    except CronSimError as exc:
        raise ValueError(f"invalid cron expression {expr!r}: {exc}") from exc
    return CronSim


def cron_next(expr: str, tz: tzinfo, wall: Callable[[float], float]) -> NextDue:
    """The next time ``expr`` matches in time zone ``tz``, strictly after now."""
    cron_sim = parse_cron(expr)

    def next_due(previous: float, now: float) -> float:
        here = datetime.fromtimestamp(wall(now), tz=tz)
        # CronSim yields matches after its start; start a hair after now so a match at
        # exactly "now" (the run that is firing) is not returned again.
        upcoming: datetime = next(cron_sim(expr, here + timedelta(microseconds=1)))
        return now + (upcoming - here).total_seconds()

    return next_due


class Schedule:
    """A recurring job made by ``schedule_recurring`` or ``schedule_cron``.

    Attributes:
        id: The schedule's id.
        runs: How many runs have started (been submitted).
        last: The :class:`TaskHandle` of the latest run, or None before the first.
    """

    def __init__(
        self,
        manager: TaskManager[Any, Any],
        fn: Any,
        options: dict[str, Any],
        next_due: NextDue,
        overlap: bool,
    ) -> None:
        self.id = f"{manager.name}-schedule-{next(_ids)}"
        self.runs = 0
        self.last: TaskHandle[Any] | None = None
        self._manager = manager
        self._fn = fn
        self._options = options
        self._next_due = next_due
        self._overlap = overlap
        self._lock = threading.Lock()
        self._due: float | None = None
        self._entry: TimerEntry | None = None
        self._cancelled = False

    def __repr__(self) -> str:
        return f"<Schedule {self.id} runs={self.runs} next_run={self.next_run}>"

    @property
    def next_run(self) -> datetime | None:
        """When the next run is due (aware UTC), or None once cancelled or stopped."""
        due = self._due
        if due is None:
            return None
        return datetime.fromtimestamp(self._manager._to_wall(due), tz=UTC)

    @property
    def active(self) -> bool:
        """False once cancelled or stopped."""
        return self._due is not None

    def cancel(self) -> None:
        """Stop scheduling runs. A run already submitted is not affected. Idempotent."""
        with self._lock:
            self._cancelled = True
            self._due = None
            if self._entry is not None:
                self._entry.cancel()
                self._entry = None
        self._manager._forget_schedule(self)

    def _start(self, now: float) -> None:
        self._arm(self._next_due(now, now))

    def _arm(self, due: float) -> None:
        with self._lock:
            if self._cancelled:
                return
            self._due = due
            self._entry = self._manager._timer.call_at(due, self._fire)

    def _fire(self) -> None:
        with self._lock:
            due = self._due
            if due is None or self._cancelled:
                return
        m = self._manager
        last = self.last
        if not self._overlap and last is not None and not last.done():
            m._log.debug("schedule %s: previous run %s still going; run skipped", self.id, last.id)
        else:
            try:
                self.last = m.try_submit(self._fn, **self._options)
                self.runs += 1
            except ManagerClosed:
                self.cancel()
                return
            except QueueFull:
                m._log.warning("schedule %s: queue full, run skipped", self.id)
        self._arm(self._next_due(due, m._clock()))
