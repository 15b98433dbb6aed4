"""Bursting at runtime: the burst manager samples a real TaskManager and applies decisions.

Most tests disable the burst thread (``burst_interval=None``), build a
``BurstManager`` over the manager themselves and call ``tick()`` with a scripted
policy, so every scaling round happens exactly when the test says. One end-to-end test
runs the real burst thread with the default policy.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

import pytest

import tasker
from tasker import DefaultScalingPolicy, ScalingDecision, ScalingSample, TaskHandle, TaskManager
from tasker._burst import BurstManager
from tasker.testing import FakeClock, Resource, Resources, wait_until


class Scripted:
    """A scaling policy that answers whatever the test set last, and keeps the samples."""

    def __init__(self) -> None:
        self.answer = ScalingDecision()
        self.samples: list[ScalingSample] = []

    def decide(self, sample: ScalingSample) -> ScalingDecision:
        self.samples.append(sample)
        return self.answer


def manager_for(resources: Resources, **options: Any) -> TaskManager[Resource, Any]:
    """A manager without its own burst thread and without run_task pool resources."""
    return tasker.TaskManager(
        resources.create,
        on_destroy=resources.destroy,
        resource_pool_size=0,
        burst_interval=None,
        **options,
    )


def occupy(manager: TaskManager[Resource, Any], n: int, release: threading.Event) -> list[Any]:
    """Submit ``n`` tasks that hold a worker each until ``release``; wait until all run."""
    busy_before = manager.stats().busy_workers
    handles = [manager.submit(lambda r: release.wait()) for _ in range(n)]
    wait_until(lambda: manager.stats().busy_workers == busy_before + n)
    return handles


def idle_ids(burst: BurstManager) -> set[int]:
    return {wid for wid, _ in burst.sample().idle_times}


def worker_id_of(manager: TaskManager[Resource, Any], thread: threading.Thread) -> int:
    return next(w.id for w in list(manager._live.values()) if w.thread is thread)


# -- adding -----------------------------------------------------------------------------


def test_add_starts_burst_workers_that_run_tasks(resources: Resources) -> None:
    policy = Scripted()
    release = threading.Event()
    with manager_for(resources, workers=1, max_workers=4) as manager:
        burst = BurstManager(manager, policy, 0.1)
        policy.answer = ScalingDecision(add=2, reason="scripted")

        applied = burst.tick()

        assert applied.add == 2
        stats = manager.stats()
        assert (stats.active_workers, stats.burst_workers) == (3, 2)
        wait_until(lambda: resources.created == 3)  # each made its own resource
        handles = occupy(manager, 3, release)  # three tasks run at once
        release.set()
        assert all(h.result() is True for h in handles)
    assert resources.created == resources.destroyed == 3


def test_add_is_clamped_to_max_workers(resources: Resources) -> None:
    policy = Scripted()
    with manager_for(resources, workers=1, max_workers=4) as manager:
        burst = BurstManager(manager, policy, 0.1)
        policy.answer = ScalingDecision(add=10, reason="scripted")

        assert burst.tick().add == 3
        assert manager.stats().active_workers == 4
        assert burst.tick().add == 0
        assert manager.stats().active_workers == 4
        assert manager.stats().burst_workers == 3
    assert resources.created == resources.destroyed == 4


# -- retiring ---------------------------------------------------------------------------


def test_retire_only_retires_idle_workers(resources: Resources) -> None:
    policy = Scripted()
    release = threading.Event()
    with manager_for(resources, workers=1, max_workers=4) as manager:
        burst = BurstManager(manager, policy, 0.1)
        policy.answer = ScalingDecision(add=3, reason="scripted")
        burst.tick()
        wait_until(lambda: len(idle_ids(burst)) == 4)
        handles = occupy(manager, 2, release)
        idle = idle_ids(burst)
        assert len(idle) == 2
        policy.answer = ScalingDecision(retire=tuple(manager._live), reason="scripted")

        applied = burst.tick()

        assert set(applied.retire) == idle
        wait_until(lambda: manager.stats().active_workers == 2)
        assert manager.stats().busy_workers == 2  # the busy ones kept their tasks
        release.set()
        assert all(h.result() is True for h in handles)
    assert resources.created == resources.destroyed == 4


def test_retire_never_goes_below_base_workers(resources: Resources) -> None:
    policy = Scripted()
    with manager_for(resources, workers=2, max_workers=4) as manager:
        burst = BurstManager(manager, policy, 0.1)
        policy.answer = ScalingDecision(add=2, reason="scripted")
        burst.tick()
        wait_until(lambda: len(idle_ids(burst)) == 4)
        policy.answer = ScalingDecision(retire=tuple(manager._live), reason="scripted")

        assert len(burst.tick().retire) == 2
        wait_until(lambda: manager.stats().active_workers == 2)
        wait_until(lambda: len(idle_ids(burst)) == 2)
        policy.answer = ScalingDecision(retire=tuple(manager._live), reason="scripted")
        assert burst.tick().retire == ()

        assert manager.stats().active_workers == 2
        assert manager.submit(lambda r: "still served").result(timeout=10) == "still served"
    assert resources.created == resources.destroyed == 4


def test_retire_never_goes_below_base_while_a_retired_worker_is_still_exiting(
    resources: Resources,
) -> None:
    # A retired worker stays registered while on_destroy runs (closing a connection
    # can take a while); the next rounds must not count it as spare capacity.
    slow_destroy, destroying, finish_destroy = (threading.Event() for _ in range(3))

    def destroy(resource: Resource) -> None:
        if slow_destroy.is_set():
            destroying.set()
            finish_destroy.wait()
        resources.destroy(resource)

    policy = Scripted()
    manager: TaskManager[Resource, Any] = tasker.TaskManager(
        resources.create,
        on_destroy=destroy,
        workers=1,
        max_workers=2,
        resource_pool_size=0,
        burst_interval=None,
    )
    try:
        burst = BurstManager(manager, policy, 0.1)
        base_ids = set(manager._live)
        policy.answer = ScalingDecision(add=1, reason="scripted")
        burst.tick()
        wait_until(lambda: len(idle_ids(burst)) == 2)
        (burst_id,) = set(manager._live) - base_ids
        retiring = manager._live[burst_id].thread
        slow_destroy.set()
        policy.answer = ScalingDecision(retire=(burst_id,), reason="scripted")
        assert burst.tick().retire == (burst_id,)
        destroying.wait()

        policy.answer = ScalingDecision(retire=tuple(manager._live), reason="scripted")
        applied = burst.tick()

        finish_destroy.set()
        wait_until(lambda: not retiring.is_alive())
        assert applied.retire == ()
        assert manager.stats().active_workers == 1
    finally:
        finish_destroy.set()
        manager.stop()
    assert resources.created == resources.destroyed


def test_a_retired_worker_destroys_its_resource_and_its_thread_exits(
    resources: Resources,
) -> None:
    policy = Scripted()
    with manager_for(resources, workers=1, max_workers=2) as manager:
        burst = BurstManager(manager, policy, 0.1)
        base_ids = set(manager._live)
        policy.answer = ScalingDecision(add=1, reason="scripted")
        burst.tick()
        wait_until(lambda: len(idle_ids(burst)) == 2)
        (burst_id,) = set(manager._live) - base_ids
        thread = manager._live[burst_id].thread
        policy.answer = ScalingDecision(retire=(burst_id,), reason="scripted")

        assert burst.tick().retire == (burst_id,)

        wait_until(lambda: not thread.is_alive())
        assert resources.destroyed == 1
        assert resources.destroyed_list[0].thread == thread.name  # its own resource
        stats = manager.stats()
        assert (stats.active_workers, stats.burst_workers) == (1, 0)
        assert resources.live == 1  # the base worker's
    assert resources.created == resources.destroyed == 2


# -- sampling ---------------------------------------------------------------------------


def test_sample_reports_queue_depths_and_busy_and_idle_workers(resources: Resources) -> None:
    clock = FakeClock()
    release_a, release_b = threading.Event(), threading.Event()
    threads: dict[str, threading.Thread] = {}

    def hold(name: str, release: threading.Event) -> Any:
        def task(resource: Resource) -> None:
            threads[name] = threading.current_thread()
            release.wait()

        return task

    with manager_for(resources, workers=2, max_workers=4, clock=clock) as manager:
        burst = BurstManager(manager, Scripted(), 0.1)
        wait_until(lambda: len(idle_ids(burst)) == 2)
        first = manager.submit(hold("a", release_a))
        second = manager.submit(hold("b", release_b))
        wait_until(lambda: manager.stats().busy_workers == 2)
        waiting: list[TaskHandle[None]] = [manager.submit(lambda r: None) for _ in range(3)]
        waiting += [manager.submit(lambda r: None, priority=True) for _ in range(2)]

        s = burst.sample()

        assert (s.queued, s.priority_queued, s.backlog) == (3, 2, 5)
        assert (s.busy_workers, s.idle_workers, s.active_workers) == (2, 0, 2)
        assert (s.base_workers, s.max_workers) == (2, 4)
        assert s.idle_times == ()

        release_a.set()  # worker a drains the queue, then goes idle at 1000 s
        first.result()
        for handle in waiting:
            handle.result()
        wait_until(lambda: burst.sample().idle_workers == 1)
        clock.advance(2.0)
        release_b.set()  # worker b goes idle at 1002 s
        second.result()
        wait_until(lambda: burst.sample().idle_workers == 2)
        clock.advance(1.0)

        s = burst.sample()

        a, b = worker_id_of(manager, threads["a"]), worker_id_of(manager, threads["b"])
        assert s.idle_times == ((a, 3.0), (b, 1.0))  # longest idle first
        assert (s.busy_workers, s.idle_workers, s.backlog) == (0, 2, 0)


def test_sample_rates_cover_the_last_interval_only(resources: Resources) -> None:
    clock = FakeClock()

    def quarter_second(resource: Resource) -> None:
        clock.advance(0.25)  # runs take 0.25 s of fake time, one after another

    with manager_for(resources, workers=1, max_workers=2, clock=clock) as manager:
        burst = BurstManager(manager, Scripted(), 0.1)
        burst.sample()  # the interval starts now
        handles = [manager.submit(quarter_second) for _ in range(4)]
        for handle in handles:
            handle.result()
        wait_until(lambda: manager.metrics().total_completed == 4)
        clock.advance(1.0)  # the interval lasted 2 s: 1 s of runs, 1 s idle

        s = burst.sample()

        assert s.arrival_rate == 2.0
        assert s.completion_rate == 2.0
        assert s.execution_time == 0.25

        clock.advance(1.0)  # a quiet interval
        s = burst.sample()
        assert (s.arrival_rate, s.completion_rate) == (0.0, 0.0)


# -- logging ----------------------------------------------------------------------------


def test_scale_events_are_logged_at_info_with_their_numbers(
    resources: Resources, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tasker")
    policy = Scripted()

    def events(reason: str) -> list[str]:
        return [
            r.getMessage()
            for r in caplog.records
            if r.levelno == logging.INFO and reason in r.getMessage()
        ]

    with manager_for(resources, workers=1, max_workers=4, name="burst-log") as manager:
        burst = BurstManager(manager, policy, 0.1)
        policy.answer = ScalingDecision(add=2, reason="scripted up: backlog=seven")
        burst.tick()
        (up,) = events("scripted up: backlog=seven")
        assert re.search(r"\b1\b\D+\b3\b", up), up  # from 1 to 3 workers

        wait_until(lambda: len(idle_ids(burst)) == 3)
        retire = tuple(sorted(idle_ids(burst)))[:2]
        policy.answer = ScalingDecision(retire=retire, reason="scripted down: idle")
        burst.tick()
        (down,) = events("scripted down: idle")
        assert re.search(r"\b3\b\D+\b1\b", down), down  # from 3 to 1 worker

        logged = len(caplog.records)
        policy.answer = ScalingDecision(reason="scripted: nothing to do")
        burst.tick()
        assert len(caplog.records) == logged  # a round that changes nothing stays quiet


# -- end to end -------------------------------------------------------------------------


def test_a_backlog_scales_up_to_max_workers_and_back_down_to_base(resources: Resources) -> None:
    release = threading.Event()
    peak = 0

    def at_max() -> bool:
        nonlocal peak
        stats = manager.stats()
        peak = max(peak, stats.active_workers)
        return stats.active_workers == 4 and stats.busy_workers == 4

    manager: TaskManager[Resource, Any] = tasker.TaskManager(
        resources.create,
        on_destroy=resources.destroy,
        workers=1,
        max_workers=4,
        resource_pool_size=0,
        burst_interval=0.02,
        scaling_policy=DefaultScalingPolicy(hold=0.05),
    )
    try:
        handles = [manager.submit(lambda r: release.wait()) for _ in range(8)]
        wait_until(at_max, message=f"did not reach 4 busy workers: {manager.stats()}")
        release.set()
        assert all(h.result() is True for h in handles)
        wait_until(
            lambda: manager.stats().active_workers == 1,
            message=f"did not scale back down: {manager.stats()}",
        )
        assert manager.stats().burst_workers == 0
        assert manager.queue_task(lambda r: "served") == "served"
    finally:
        release.set()
        manager.stop()
    assert peak == 4
    assert resources.created >= 4
    assert resources.created == resources.destroyed


def test_a_worker_woken_for_a_task_is_not_retired_and_the_task_runs(
    resources: Resources,
) -> None:
    # The sample sees a burst worker idle; before the decision is applied, a task
    # arrives and wakes exactly that worker (the top of the idle stack). Retiring it then
    # would leave the task queued while the other worker sleeps.
    manager = manager_for(resources, workers=1, max_workers=2)
    handles: list[TaskHandle[str]] = []

    class SubmitThenRetire:
        def decide(self, sample: ScalingSample) -> ScalingDecision:
            newest = max(wid for wid, _ in sample.idle_times)
            handles.append(manager.submit(lambda r: "ran"))
            return ScalingDecision(retire=(newest,), reason="scripted race")

    try:
        burst = BurstManager(manager, SubmitThenRetire(), 0.1)
        adder = Scripted()
        adder.answer = ScalingDecision(add=1, reason="scripted")
        BurstManager(manager, adder, 0.1).tick()
        wait_until(lambda: len(idle_ids(burst)) == 2)
        applied = burst.tick()

        assert handles[0].result(timeout=10) == "ran"
        assert applied.retire == ()  # it was not idle any more when the decision came
        assert manager.stats().active_workers == 2
    finally:
        manager.stop()
