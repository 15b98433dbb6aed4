"""Scaling policies: pure decisions about how many workers to add or retire.

A policy sees one :class:`ScalingSample` per ``burst_interval`` and returns a
:class:`ScalingDecision`. It starts no threads and reads no clock: the burst manager
(in the runtime) measures, asks, and applies the answer, so policies are tested with
scripted samples and exact numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from tasker._validate import check_int, check_seconds

__all__ = ["DefaultScalingPolicy", "ScalingDecision", "ScalingPolicy", "ScalingSample"]


@dataclass(frozen=True, slots=True)
class ScalingSample:
    """What the burst manager measured for one decision.

    Attributes:
        arrival_rate: Tasks accepted per second over the last interval.
        completion_rate: Task runs ended per second over the last interval.
        execution_time: Mean seconds per task run over recent runs (0.0 if none yet).
        queued: Tasks waiting in the main queue.
        priority_queued: Tasks waiting in the priority queue.
        busy_workers: Workers running a task now.
        idle_workers: Workers waiting for a task now.
        active_workers: Live workers, base and burst.
        base_workers: The configured ``workers``; never retire below it.
        max_workers: Never grow above it.
        idle_times: ``(worker_id, seconds idle)`` for each idle worker, longest first.
    """

    arrival_rate: float
    completion_rate: float
    execution_time: float
    queued: int
    priority_queued: int
    busy_workers: int
    idle_workers: int
    active_workers: int
    base_workers: int
    max_workers: int
    idle_times: tuple[tuple[int, float], ...] = ()

    @property
    def backlog(self) -> int:
        """Tasks waiting in either queue."""
        return self.queued + self.priority_queued


@dataclass(frozen=True, slots=True)
class ScalingDecision:
    """Add ``add`` workers, or retire the workers whose ids are in ``retire``."""

    add: int = 0
    retire: tuple[int, ...] = ()
    reason: str = ""


NO_CHANGE = ScalingDecision()


@runtime_checkable
class ScalingPolicy(Protocol):
    """Decides, from one sample, how the worker count should change.

    The runtime clamps the answer: it never exceeds ``max_workers`` nor retires below
    ``base_workers``, and only retires workers that are idle.
    """

    def decide(self, sample: ScalingSample) -> ScalingDecision:
        """Return the change to apply now."""
        ...


class DefaultScalingPolicy:
    """Size the pool from demand (Little's law) plus what it takes to clear the backlog.

    Each interval it wants ``ceil(arrival_rate * execution_time + backlog *
    execution_time / drain_time)`` workers: enough to keep up with arrivals, plus
    enough to drain what waits within ``drain_time`` seconds. When tasks wait and every
    worker is busy it adds at least one worker; before any run has finished (zero
    measured throughput) it gives every waiting task a worker, since tasks that have
    not finished within an interval are slow ones. A burst worker is retired only once
    it has been idle for ``hold`` seconds and the backlog is empty, so a flapping load
    does not thrash.

    Args:
        hold: Seconds a worker must have been idle before it may be retired.
        drain_time: Seconds within which a backlog should be cleared.
        max_step: Most workers added in one interval (None: no limit but max_workers).
    """

    def __init__(
        self, *, hold: float = 2.0, drain_time: float = 0.1, max_step: int | None = None
    ) -> None:
        self.hold = check_seconds("hold", hold, allow_zero=True)
        self.drain_time = check_seconds("drain_time", drain_time)
        self.max_step = None if max_step is None else check_int("max_step", max_step, minimum=1)

    def wanted(self, s: ScalingSample) -> int:
        """How many workers the sample calls for, before clamping."""
        if s.execution_time > 0:
            demand = s.arrival_rate * s.execution_time
            drain = s.backlog * s.execution_time / self.drain_time
            want = math.ceil(demand + drain - 1e-9)
        else:
            # Nothing finished yet, so the tasks are slow: give each waiting task a worker.
            want = s.busy_workers + s.backlog
        if s.backlog and not s.idle_workers:
            want = max(want, s.active_workers + 1)
        return want

    def decide(self, sample: ScalingSample) -> ScalingDecision:
        want = min(self.wanted(sample), sample.max_workers)
        if want > sample.active_workers:
            step = want - sample.active_workers
            if self.max_step is not None:
                step = min(step, self.max_step)
            return ScalingDecision(
                add=step,
                reason=(
                    f"backlog={sample.backlog} arrival_rate={sample.arrival_rate:.1f}/s "
                    f"execution_time={sample.execution_time:.4f}s busy={sample.busy_workers}"
                    f"/{sample.active_workers} wants {want}"
                ),
            )
        if sample.backlog:
            return NO_CHANGE
        spare = sample.active_workers - max(sample.base_workers, want)
        retire = tuple(wid for wid, idle in sample.idle_times if idle >= self.hold)[:spare]
        if not retire or spare <= 0:
            return NO_CHANGE
        return ScalingDecision(
            retire=retire,
            reason=f"{len(retire)} worker(s) idle >= {self.hold}s, backlog=0, wants {want}",
        )
