"""BurstManager: the thread that samples the runtime and applies scaling decisions.

Every ``interval`` seconds it builds a :class:`ScalingSample` (rates from the
collector's totals over the last interval, so they describe *now*), asks the policy,
clamps the answer to ``[workers, max_workers]`` and idle workers, and applies it:
new burst workers start at once; retired ones finish their current task (they are
idle, so they have none) and destroy their resource.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from tasker._scaling import ScalingDecision, ScalingPolicy, ScalingSample
from tasker._worker import WorkerKind

if TYPE_CHECKING:
    from tasker._manager import TaskManager

__all__ = ["BurstManager"]


class BurstManager:
    """Samples and scales one manager; private to the runtime."""

    def __init__(self, manager: TaskManager[Any, Any], policy: ScalingPolicy, interval: float):
        self._manager = manager
        self._policy = policy
        self._interval = interval
        self._stopped = threading.Event()
        self._nudged = threading.Event()
        # An arrival that finds every worker busy may trigger a round early, but at most
        # one extra round per min_gap, so a saturated pool does not spin.
        self._min_gap = interval / 4
        self._thread = threading.Thread(target=self._run, name=f"{manager.name}-burst", daemon=True)
        self._last: tuple[float, int, int] | None = None

    def start(self) -> None:
        m = self._manager
        metrics = m._collector.metrics()
        # A baseline now, so the very first round already measures rates.
        self._last = (
            m._clock(),
            metrics.total_arrived,
            metrics.total_completed + metrics.total_failed,
        )
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._nudged.set()

    def nudge(self) -> None:
        """Ask for a round now (called by the queue when tasks wait for a worker)."""
        self._nudged.set()

    def join(self) -> None:
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()

    def _run(self) -> None:
        m = self._manager
        last = m._clock()
        while True:
            nudged = self._nudged.wait(max(0.0, last + self._interval - m._clock()))
            if self._stopped.is_set():
                return
            if nudged:
                gap = last + self._min_gap - m._clock()
                if gap > 0 and self._stopped.wait(gap):
                    return
            self._nudged.clear()
            m._queue.rearm_starved()
            try:
                self.tick()
            except Exception:
                m._log.exception("burst manager of %r failed a scaling round", m.name)
            last = m._clock()

    def sample(self) -> ScalingSample:
        """Measure the manager now."""
        m = self._manager
        now = m._clock()
        metrics = m._collector.metrics()
        ended = metrics.total_completed + metrics.total_failed
        arrival_rate = completion_rate = 0.0
        if self._last is not None:
            then, arrived, done = self._last
            elapsed = now - then
            if elapsed > 0:
                arrival_rate = (metrics.total_arrived - arrived) / elapsed
                completion_rate = (ended - done) / elapsed
        self._last = (now, metrics.total_arrived, ended)
        # A retired worker may still be finishing its exit: it no longer counts.
        live = [w for w in list(m._live.values()) if not w.slot.retire]
        idle = [
            (w.id, now - since)
            for w in live
            if (since := w.slot.idle_since) is not None and w.current is None
        ]
        idle.sort(key=lambda pair: -pair[1])
        return ScalingSample(
            arrival_rate=arrival_rate,
            completion_rate=completion_rate,
            execution_time=metrics.average_execution_time,
            queued=len(m._queue.main),
            priority_queued=len(m._queue.prio),
            busy_workers=sum(1 for w in live if w.current is not None),
            idle_workers=len(idle),
            active_workers=len(live),
            base_workers=m._base,
            max_workers=m._max,
            idle_times=tuple(idle),
        )

    def tick(self) -> ScalingDecision:
        """One scaling round: sample, decide, apply. Returns what was applied."""
        m = self._manager
        sample = self.sample()
        decision = self._policy.decide(sample)
        add = max(0, min(decision.add, m._max - sample.active_workers))
        if add:
            add = sum(1 for _ in range(add) if m._spawn(WorkerKind.BURST) is not None)
        if add:
            m._log.info(
                "task manager %r scaling up %d -> %d workers (%s)",
                m.name,
                sample.active_workers,
                sample.active_workers + add,
                decision.reason,
            )
            return ScalingDecision(add=add, reason=decision.reason)
        idle_ids = {wid for wid, _ in sample.idle_times}
        spare = sample.active_workers - m._base
        retire = tuple(wid for wid in decision.retire if wid in idle_ids)[: max(spare, 0)]
        retire = tuple(
            wid for wid in retire if (w := m._live.get(wid)) is not None and m._queue.retire(w.slot)
        )
        if retire:
            m._log.info(
                "task manager %r scaling down %d -> %d workers (%s)",
                m.name,
                sample.active_workers,
                sample.active_workers - len(retire),
                decision.reason,
            )
        return ScalingDecision(retire=retire, reason=decision.reason)
