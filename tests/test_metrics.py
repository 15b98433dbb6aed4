"""Metrics: windowed time statistics, sliding-window rates, totals, constant memory.

The default collector is driven directly with a fake clock, so every number is exact.
Times used below are binary fractions (0.125, 0.5, 2.0 ...) so that differences of
timestamps are exact floats too.
"""

from __future__ import annotations

import sys
import threading

import pytest

import tasker
from tasker import DefaultCollector, Metrics, MetricsCollector, NullCollector, TaskTimestamps
from tasker.testing import FakeClock, Resource, Resources, wait_until


def _run(collector: DefaultCollector, clock: FakeClock, *, execution: float, wait: float) -> None:
    """Record one successful run that finished now, having waited then executed."""
    now = clock()
    collector.record_completion(TaskTimestamps(now - wait - execution, now - execution, now))


def _fail(collector: DefaultCollector, clock: FakeClock, *, execution: float, wait: float) -> None:
    now = clock()
    collector.record_failure(TaskTimestamps(now - wait - execution, now - execution, now))


# -- totals -----------------------------------------------------------------------------


def test_totals_count_every_kind_of_event() -> None:
    clock = FakeClock()
    collector = DefaultCollector(clock=clock)
    for _ in range(7):
        collector.record_arrival()
    for _ in range(3):
        _run(collector, clock, execution=0.5, wait=0.25)
    _fail(collector, clock, execution=0.5, wait=0.25)
    collector.record_retry()
    collector.record_retry()
    collector.record_cancel()

    m = collector.metrics()

    assert m.total_arrived == 7
    assert m.total_completed == 3
    assert m.total_failed == 1
    assert m.total_retried == 2
    assert m.total_cancelled == 1


def test_success_and_failure_rates_are_fractions_of_finished_runs() -> None:
    clock = FakeClock()
    collector = DefaultCollector(clock=clock)
    for _ in range(3):
        _run(collector, clock, execution=0.5, wait=0.0)
    _fail(collector, clock, execution=0.5, wait=0.0)

    m = collector.metrics()

    assert m.success_rate == 0.75
    assert m.failure_rate == 0.25


def test_metrics_of_an_empty_collector_are_all_zero() -> None:
    clock = FakeClock()
    collector = DefaultCollector(clock=clock)
    assert collector.metrics() == Metrics()
    clock.advance(10.0)
    assert collector.metrics() == Metrics()


# -- time statistics over the sample window ---------------------------------------------


def test_execution_and_wait_statistics_are_exact() -> None:
    # 100 runs sorted by time: 60 x 0.125 s, 37 x 0.5 s, 3 x 2.0 s. Neighbours around
    # the 50th, 95th and 99th percentile ranks are equal, so every percentile
    # definition gives the same answer.
    clock = FakeClock()
    collector = DefaultCollector(window=100, clock=clock)
    for execution, count in ((0.125, 60), (0.5, 37), (2.0, 3)):
        for _ in range(count):
            clock.advance(1.0)
            _run(collector, clock, execution=execution, wait=execution * 2)

    m = collector.metrics()

    assert m.average_execution_time == pytest.approx(0.32)  # (7.5 + 18.5 + 6) / 100
    assert m.min_execution_time == 0.125
    assert m.max_execution_time == 2.0
    assert m.p50_execution_time == 0.125
    assert m.p95_execution_time == 0.5
    assert m.p99_execution_time == 2.0
    assert m.average_wait_time == pytest.approx(0.64)
    assert m.p95_wait_time == 1.0
    assert m.p99_wait_time == 4.0


def test_time_statistics_cover_only_the_most_recent_window_of_runs() -> None:
    clock = FakeClock()
    collector = DefaultCollector(window=4, clock=clock)
    for _ in range(4):
        _run(collector, clock, execution=2.0, wait=8.0)  # slow: must fall out
    for _ in range(4):
        _run(collector, clock, execution=0.125, wait=0.25)

    m = collector.metrics()

    for value in (
        m.average_execution_time,
        m.min_execution_time,
        m.max_execution_time,
        m.p50_execution_time,
        m.p95_execution_time,
        m.p99_execution_time,
    ):
        assert value == 0.125
    assert m.average_wait_time == m.p95_wait_time == m.p99_wait_time == 0.25
    assert m.total_completed == 8  # totals still count everything


def test_a_partly_refreshed_window_mixes_old_and_new_runs() -> None:
    clock = FakeClock()
    collector = DefaultCollector(window=4, clock=clock)
    for _ in range(4):
        _run(collector, clock, execution=2.0, wait=0.0)
    for _ in range(2):
        _run(collector, clock, execution=0.5, wait=0.0)

    m = collector.metrics()

    assert m.min_execution_time == 0.5
    assert m.max_execution_time == 2.0
    assert m.average_execution_time == 1.25  # (2 + 2 + 0.5 + 0.5) / 4


def test_memory_stays_constant_however_many_runs_are_recorded() -> None:
    clock = FakeClock()
    collector = DefaultCollector(window=256, clock=clock)
    exec_bytes, wait_bytes = collector._exec.nbytes, collector._wait.nbytes
    runs = 100_000
    for i in range(runs):
        clock.advance(0.0078125)  # 1/128 s: many rate buckets go by as well
        collector.record_arrival()
        _run(collector, clock, execution=0.25 if i < runs - 256 else 0.5, wait=0.0)

    m = collector.metrics()

    assert collector._exec.size == collector._wait.size == 256
    assert (collector._exec.nbytes, collector._wait.nbytes) == (exec_bytes, wait_bytes)
    assert m.total_arrived == m.total_completed == runs
    assert m.min_execution_time == m.max_execution_time == 0.5  # only the last 256 count


# -- rates over a sliding time window ----------------------------------------------------


def test_rates_fall_to_zero_once_the_window_has_passed_without_events() -> None:
    clock = FakeClock()
    collector = DefaultCollector(rate_window=5.0, clock=clock)
    for i in range(100):  # 100 arrivals and completions within the first second
        clock.set(1000.0 + i * 0.0078125)
        collector.record_arrival()
        _run(collector, clock, execution=0.0, wait=0.0)
    clock.set(1001.0)
    assert collector.metrics().arrival_rate > 0

    clock.set(1011.0)  # ten silent seconds
    m = collector.metrics()

    assert m.arrival_rate == 0.0
    assert m.completion_rate == 0.0
    assert m.total_arrived == 100  # the totals remember them


def _steady(
    collector: DefaultCollector,
    clock: FakeClock,
    *,
    start: float,
    seconds: int,
    per_second: int,
) -> float:
    """Record ``per_second`` arrivals and completions per second, evenly, mid-interval."""
    step = 1.0 / per_second
    for i in range(seconds * per_second):
        clock.set(start + i * step + step / 2)
        collector.record_arrival()
        _run(collector, clock, execution=0.0, wait=0.0)
    return start + seconds


def test_rates_of_a_steady_load_equal_its_rate() -> None:
    clock = FakeClock()
    collector = DefaultCollector(rate_window=5.0, clock=clock)
    end = _steady(collector, clock, start=1000.0, seconds=60, per_second=10)
    clock.set(end)

    m = collector.metrics()

    assert m.arrival_rate == pytest.approx(10.0)
    assert m.completion_rate == pytest.approx(10.0)


def test_rates_follow_a_change_of_load_not_the_lifetime_average() -> None:
    clock = FakeClock()
    collector = DefaultCollector(rate_window=5.0, clock=clock)
    end = _steady(collector, clock, start=1000.0, seconds=60, per_second=10)
    end = _steady(collector, clock, start=end, seconds=10, per_second=2)
    clock.set(end)

    m = collector.metrics()

    assert m.arrival_rate == pytest.approx(2.0)  # a lifetime average would be 8.86/s
    assert m.completion_rate == pytest.approx(2.0)


@pytest.mark.parametrize("start", [1000.0, 1000.03, 1234.567])
def test_a_young_collector_reports_rates_over_its_real_age(start: float) -> None:
    # One second old, ten arrivals: 10/s, not diluted over the 5 s window (2/s) and
    # not missing the arrivals of its very first instants.
    clock = FakeClock(start)
    collector = DefaultCollector(rate_window=5.0, clock=clock)
    for _ in range(10):
        clock.set(start + 0.005)
        collector.record_arrival()
    clock.set(start + 1.0)

    assert collector.metrics().arrival_rate == pytest.approx(10.0)


def test_rate_window_is_configurable() -> None:
    clock = FakeClock()
    collector = DefaultCollector(rate_window=20.0, clock=clock)
    end = _steady(collector, clock, start=1000.0, seconds=10, per_second=4)
    clock.set(end + 10.0)  # 10 silent seconds: half of a 20 s window

    assert collector.metrics().arrival_rate == pytest.approx(2.0)  # 40 arrivals / 20 s


# -- validation and protocol -------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"window": 0}, ValueError, r"\bwindow\b.*\b0\b"),
        ({"window": -3}, ValueError, r"\bwindow\b.*-3"),
        ({"window": 2.5}, TypeError, r"\bwindow\b.*2\.5"),
        ({"window": True}, TypeError, r"\bwindow\b.*True"),
        ({"rate_window": 0}, ValueError, r"rate_window.*\b0\b"),
        ({"rate_window": -1.0}, ValueError, r"rate_window.*-1\.0"),
        ({"rate_window": float("inf")}, ValueError, r"rate_window.*inf"),
        ({"rate_window": float("nan")}, ValueError, r"rate_window.*nan"),
        ({"rate_window": "5"}, TypeError, r"rate_window.*'5'"),
    ],
)
def test_invalid_windows_are_rejected_naming_the_argument(
    kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        DefaultCollector(**kwargs)  # type: ignore[arg-type]


def test_null_collector_records_nothing() -> None:
    collector = NullCollector()
    collector.record_arrival()
    collector.record_completion(TaskTimestamps(1.0, 2.0, 3.0))
    collector.record_failure(TaskTimestamps(1.0, 2.0, 3.0))
    collector.record_retry()
    collector.record_cancel()
    assert collector.metrics() == Metrics()


def test_metrics_collector_protocol_is_checkable_at_runtime() -> None:
    assert isinstance(DefaultCollector(), MetricsCollector)
    assert isinstance(NullCollector(), MetricsCollector)
    assert not isinstance(object(), MetricsCollector)


# -- concurrency -------------------------------------------------------------------------


def test_concurrent_recording_loses_no_event() -> None:
    collector = DefaultCollector(window=64)  # real clock: bucket boundaries get crossed
    threads_count, per_thread = 4, 10_000
    barrier = threading.Barrier(threads_count)

    def record() -> None:
        barrier.wait()
        for i in range(per_thread):
            collector.record_arrival()
            stamps = TaskTimestamps(0.0, 0.5, 1.0)
            if i % 10:
                collector.record_completion(stamps)
            else:
                collector.record_failure(stamps)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads often to provoke interleavings
    try:
        threads = [threading.Thread(target=record) for _ in range(threads_count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)

    m = collector.metrics()
    assert m.total_arrived == threads_count * per_thread
    assert m.total_completed == threads_count * per_thread * 9 // 10
    assert m.total_failed == threads_count * per_thread // 10


# -- with a real TaskManager --------------------------------------------------------------


def test_manager_metrics_count_what_ran(resources: Resources) -> None:
    attempts: list[int] = []

    def unhealthy_once(resource: object) -> str:
        attempts.append(1)
        if len(attempts) == 1:
            raise ConnectionError("connection dropped")
        return "ok"

    def bad(resource: object) -> None:
        raise ValueError("bad input")

    manager: tasker.TaskManager[Resource, object] = tasker.TaskManager(
        resources.create,
        on_destroy=resources.destroy,
        workers=2,
        burst_interval=None,
        check_health=lambda exc: not isinstance(exc, ConnectionError),
        max_retries=1,
    )
    with manager:
        handles = [manager.submit(lambda r: r) for _ in range(5)]
        failing = [manager.submit(bad) for _ in range(2)]
        retried = manager.submit(unhealthy_once)
        for handle in handles:
            handle.result()
        for handle in failing:
            with pytest.raises(ValueError, match="bad input"):
                handle.result()
        assert retried.result() == "ok"

        wait_until(lambda: manager.metrics().total_completed == 6)
        m = manager.metrics()
        assert m.total_arrived == 8
        assert m.total_completed == 6
        assert m.total_failed == 2
        assert m.total_retried == 1
        assert m.total_cancelled == 0
        assert m.success_rate == 0.75
    assert resources.created == resources.destroyed


def test_manager_metrics_count_tasks_cancelled_by_kill(resources: Resources) -> None:
    started = threading.Event()

    def until_cancelled(resource: object) -> str:
        started.set()
        task = tasker.current_task()
        assert task is not None
        task.cancelled.wait()
        return "stopped"

    manager: tasker.TaskManager[Resource, object] = tasker.TaskManager(
        resources.create, on_destroy=resources.destroy, workers=1, burst_interval=None
    )
    try:
        running = manager.submit(until_cancelled)
        started.wait()
        queued = [manager.submit(lambda r: r) for _ in range(3)]
    finally:
        manager.kill()

    assert running.result() == "stopped"
    assert all(handle.cancelled() for handle in queued)
    m = manager.metrics()
    assert m.total_arrived == 4
    assert m.total_cancelled == 3
    assert m.total_completed == 1
    assert resources.created == resources.destroyed


class RecordingCollector:
    """A user-supplied collector that remembers every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, TaskTimestamps | None]] = []
        self._lock = threading.Lock()
        self.snapshot = Metrics(total_arrived=42)

    def _add(self, name: str, t: TaskTimestamps | None = None) -> None:
        with self._lock:
            self.calls.append((name, t))

    def record_arrival(self) -> None:
        self._add("arrival")

    def record_completion(self, t: TaskTimestamps) -> None:
        self._add("completion", t)

    def record_failure(self, t: TaskTimestamps) -> None:
        self._add("failure", t)

    def record_retry(self) -> None:
        self._add("retry")

    def record_cancel(self) -> None:
        self._add("cancel")

    def metrics(self) -> Metrics:
        return self.snapshot

    def names(self) -> list[str]:
        with self._lock:
            return [name for name, _ in self.calls]

    def stamps(self, name: str) -> list[TaskTimestamps | None]:
        with self._lock:
            return [t for n, t in self.calls if n == name]


def test_a_custom_collector_receives_every_event_with_exact_timestamps(
    resources: Resources,
) -> None:
    clock = FakeClock(1000.0)
    collector = RecordingCollector()
    started, release = threading.Event(), threading.Event()

    def blocker(resource: object) -> str:
        started.set()
        release.wait()
        return "done"

    def bad(resource: object) -> None:
        raise ValueError("bad input")

    def count(name: str) -> int:
        return collector.names().count(name)

    manager: tasker.TaskManager[Resource, object] = tasker.TaskManager(
        resources.create,
        on_destroy=resources.destroy,
        workers=1,
        burst_interval=None,
        collector=collector,
        clock=clock,
    )
    with manager:
        assert manager.metrics() is collector.snapshot
        first = manager.submit(blocker)  # queued at 1000, starts at 1000
        started.wait()
        failing = manager.submit(bad)  # queued at 1000
        doomed = manager.submit(lambda r: r)
        assert doomed.cancel()
        clock.set(1002.0)
        release.set()  # first ends at 1002; failing starts and ends at 1002

        assert first.result() == "done"
        with pytest.raises(ValueError, match="bad input"):
            failing.result()
        wait_until(lambda: count("cancel") == 1)

    assert count("arrival") == 3
    assert collector.stamps("completion") == [TaskTimestamps(1000.0, 1000.0, 1002.0)]
    assert collector.stamps("failure") == [TaskTimestamps(1000.0, 1002.0, 1002.0)]
    assert count("cancel") == 1
    assert count("retry") == 0
    assert resources.created == resources.destroyed
