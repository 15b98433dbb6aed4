"""Building a TaskManager: argument validation, defaults, and resources made up front."""

from __future__ import annotations

import functools
import logging
import math
import re
import sys
import threading
from typing import Any

import pytest

import tasker
from tasker.testing import Resource, Resources, wait_until


def _manager_threads(name: str) -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(f"{name}-") and t.is_alive()]


def _waiting_for_workers(thread: threading.Thread) -> bool:
    """True if ``thread`` is asleep on a lock inside ``TaskManager.__init__``.

    Waiting inside ``Thread.start()`` (for a new thread to boot) does not count, so
    this looks at one snapshot of the stack (``tasker.testing.is_blocked`` cannot
    exclude a frame).
    """
    assert thread.ident is not None
    frame = sys._current_frames().get(thread.ident)
    if frame is None or frame.f_code is not threading.Condition.wait.__code__:
        return False
    codes = []
    while frame is not None:
        codes.append(frame.f_code)
        frame = frame.f_back
    return (
        tasker.TaskManager.__init__.__code__ in codes
        and threading.Thread.start.__code__ not in codes
    )


class _RecordingPolicy:
    """A scaling policy that changes nothing and remembers what it was shown."""

    def __init__(self) -> None:
        self.samples: list[tasker.ScalingSample] = []
        self.called = threading.Event()

    def decide(self, sample: tasker.ScalingSample) -> tasker.ScalingDecision:
        self.samples.append(sample)
        self.called.set()
        return tasker.ScalingDecision()


class _DuckLogger:
    def __init__(self) -> None:
        self.infos: list[str] = []

    def debug(self, msg: str, *args: Any) -> None:
        pass

    def info(self, msg: str, *args: Any) -> None:
        self.infos.append(msg % args)

    def warning(self, msg: str, *args: Any) -> None:
        pass

    def error(self, msg: str, *args: Any) -> None:
        pass

    def exception(self, msg: str, *args: Any) -> None:
        pass


class _InfoOnlyLogger:
    def info(self, msg: str, *args: Any) -> None:
        pass


class _ArrivalOnlyCollector:
    def record_arrival(self) -> None:
        pass


def _second(value: int, r: Resource) -> int:
    return value


# -- validation -------------------------------------------------------------------------


_INVALID: list[tuple[dict[str, Any], type[Exception], str]] = [
    ({"on_destroy": "close"}, TypeError, r"on_destroy.*'close'"),
    ({"workers": 0}, ValueError, r"\bworkers=0\b"),
    ({"workers": -1}, ValueError, r"\bworkers=-1\b"),
    ({"workers": 1.5}, TypeError, r"\bworkers=1\.5\b"),
    ({"workers": "2"}, TypeError, r"\bworkers='2'"),
    ({"workers": True}, TypeError, r"\bworkers=True\b"),
    ({"max_workers": 0}, ValueError, r"max_workers=0\b"),
    ({"max_workers": "4"}, TypeError, r"max_workers='4'"),
    (
        {"workers": 4, "max_workers": 2},
        ValueError,
        r"max_workers must be >= workers \(got max_workers=2, workers=4\)",
    ),
    ({"resource_pool_size": -1}, ValueError, r"resource_pool_size=-1\b"),
    ({"resource_pool_size": "1"}, TypeError, r"resource_pool_size='1'"),
    ({"resource_pool_size": 1.0}, TypeError, r"resource_pool_size=1\.0\b"),
    ({"check_health": True}, TypeError, r"check_health=True\b"),
    ({"max_retries": -1}, ValueError, r"max_retries=-1\b"),
    ({"max_retries": 1.5}, TypeError, r"max_retries=1\.5\b"),
    ({"max_retries": None}, TypeError, r"max_retries=None\b"),
    ({"burst_interval": -0.1}, ValueError, r"burst_interval=-0\.1\b"),
    ({"burst_interval": math.nan}, ValueError, r"burst_interval=nan\b"),
    ({"burst_interval": math.inf}, ValueError, r"burst_interval=inf\b"),
    ({"burst_interval": "0.1"}, TypeError, r"burst_interval='0\.1'"),
    ({"queue_size": -1}, ValueError, r"queue_size=-1\b"),
    ({"queue_size": "10"}, TypeError, r"queue_size='10'"),
    ({"queue_size": 2.5}, TypeError, r"queue_size=2\.5\b"),
    ({"logger": object()}, TypeError, r"logger=<object object"),
    ({"logger": "tasker"}, TypeError, r"logger='tasker'"),
    ({"logger": _InfoOnlyLogger()}, TypeError, r"logger=<.*_InfoOnlyLogger"),
    ({"collector": object()}, TypeError, r"collector=<object object"),
    ({"collector": _ArrivalOnlyCollector()}, TypeError, r"collector=<.*_ArrivalOnlyCollector"),
    ({"name": ""}, ValueError, r"name=''"),
    ({"name": 5}, TypeError, r"name=5\b"),
    ({"scaling_policy": object()}, TypeError, r"scaling_policy=<object object"),
    ({"clock": "now"}, TypeError, r"clock='now'"),
]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    _INVALID,
    ids=[",".join(f"{k}={v!r}" for k, v in kwargs.items()) for kwargs, _, _ in _INVALID],
)
def test_invalid_argument_is_rejected_naming_it_and_its_value(
    resources: Resources, kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    options: dict[str, Any] = {"on_destroy": resources.destroy, **kwargs}
    with pytest.raises(error, match=match):
        tasker.TaskManager(resources.create, **options)
    assert resources.created == 0


@pytest.mark.parametrize("on_create", [None, 42, "open"])
def test_on_create_must_be_callable(on_create: Any) -> None:
    with pytest.raises(TypeError, match=rf"on_create.*{re.escape(repr(on_create))}"):
        tasker.TaskManager(on_create)


def test_arguments_after_on_create_are_keyword_only(resources: Resources) -> None:
    with pytest.raises(TypeError, match="positional"):
        tasker.TaskManager(resources.create, resources.destroy)  # type: ignore[call-arg]
    assert resources.created == 0


# -- accepted edge values and defaults ---------------------------------------------------


def test_max_workers_defaults_to_twice_workers(resources: Resources) -> None:
    policy = _RecordingPolicy()
    with tasker.TaskManager(
        resources.create,
        on_destroy=resources.destroy,
        workers=3,
        burst_interval=0.01,
        scaling_policy=policy,
    ) as m:
        assert m.max_workers == 6
        assert policy.called.wait(timeout=10)
        assert policy.samples[0].max_workers == 6
        assert policy.samples[0].base_workers == 3


def test_resource_pool_size_defaults_to_workers(resources: Resources) -> None:
    with tasker.TaskManager(resources.create, on_destroy=resources.destroy, workers=3) as m:
        stats = m.stats()
        assert stats.available_resources == 3
        assert stats.base_workers == stats.active_workers == 3
        assert resources.created == 6


def test_defaults_give_one_worker_and_one_pooled_resource(resources: Resources) -> None:
    with tasker.TaskManager(resources.create, on_destroy=resources.destroy) as m:
        stats = m.stats()
        assert (stats.base_workers, stats.active_workers, stats.available_resources) == (1, 1, 1)
        assert m.max_workers == 2


def test_resource_pool_size_zero_keeps_no_pooled_resource(resources: Resources) -> None:
    with tasker.TaskManager(
        resources.create, on_destroy=resources.destroy, workers=2, resource_pool_size=0
    ) as m:
        assert m.stats().available_resources == 0
        assert resources.created == 2
        # run_task still works, on a temporary resource destroyed afterwards
        assert isinstance(m.run_task(lambda r: r), Resource)
        assert resources.created == 3
        assert resources.live == 2


def test_resource_pool_size_may_exceed_workers(resources: Resources) -> None:
    with tasker.TaskManager(
        resources.create, on_destroy=resources.destroy, workers=1, resource_pool_size=4
    ) as m:
        assert m.stats().available_resources == 4
        assert resources.created == 5


def test_max_workers_equal_to_workers_is_accepted(resources: Resources) -> None:
    with tasker.TaskManager(
        resources.create, on_destroy=resources.destroy, workers=2, max_workers=2
    ) as m:
        assert m.max_workers == 2
        assert m.stats().active_workers == 2


@pytest.mark.parametrize("burst_interval", [None, 0, 0.0])
def test_none_or_zero_burst_interval_disables_bursting(
    resources: Resources, burst_interval: float | None
) -> None:
    policy = _RecordingPolicy()
    with tasker.TaskManager(
        resources.create,
        on_destroy=resources.destroy,
        workers=2,
        max_workers=8,
        burst_interval=burst_interval,
        scaling_policy=policy,
        name="noburst",
    ) as m:
        assert m.queue_task(lambda r: 1) == 1
        # the manager's only threads are its two base workers: nobody samples or scales
        threads = _manager_threads("noburst")
        assert len(threads) == 2
        assert all(re.fullmatch(r"noburst-worker-\d+", t) for t in threads)
    assert policy.samples == []


def test_positive_burst_interval_runs_the_scaling_policy(resources: Resources) -> None:
    policy = _RecordingPolicy()
    with tasker.TaskManager(
        resources.create,
        on_destroy=resources.destroy,
        workers=1,
        max_workers=4,
        burst_interval=0.01,
        scaling_policy=policy,
    ):
        assert policy.called.wait(timeout=10)
        sample = policy.samples[0]
        assert (sample.base_workers, sample.max_workers) == (1, 4)


def test_queue_size_zero_means_unbounded(resources: Resources) -> None:
    release = threading.Event()
    m = tasker.TaskManager(
        resources.create,
        on_destroy=resources.destroy,
        workers=1,
        burst_interval=None,
        queue_size=0,
    )
    try:
        m.submit(lambda r: release.wait(timeout=10))
        handles = [m.try_submit(functools.partial(_second, i)) for i in range(1000)]
    finally:
        release.set()
        m.stop()
    assert [h.result() for h in handles] == list(range(1000))


def test_duck_typed_logger_collector_and_policy_are_accepted(resources: Resources) -> None:
    logger = _DuckLogger()
    collector = tasker.NullCollector()
    with tasker.TaskManager(
        resources.create,
        on_destroy=resources.destroy,
        logger=logger,
        collector=collector,
        scaling_policy=_RecordingPolicy(),
        name="ducks",
    ) as m:
        assert m.queue_task(lambda r: 7) == 7
        assert m.metrics() == collector.metrics()
    assert any("ducks" in line for line in logger.infos)


def test_a_logging_logger_is_accepted(
    resources: Resources, caplog: pytest.LogCaptureFixture
) -> None:
    logger = logging.getLogger("test_construction.custom")
    with caplog.at_level(logging.INFO, logger="test_construction.custom"):
        m = tasker.TaskManager(
            resources.create, on_destroy=resources.destroy, logger=logger, name="logged"
        )
        m.stop()
    assert any(
        r.name == "test_construction.custom" and "logged" in r.getMessage() for r in caplog.records
    )


# -- resources are made before the constructor returns ---------------------------------


def test_constructor_returns_after_every_resource_is_created(resources: Resources) -> None:
    with tasker.TaskManager(
        resources.create,
        on_destroy=resources.destroy,
        workers=3,
        resource_pool_size=2,
        burst_interval=None,
    ) as m:
        # no waiting: pool and base worker resources exist as soon as __init__ returns
        assert resources.created == 5
        assert resources.live == 5
        assert m.stats().active_workers == 3
        assert m.stats().available_resources == 2
    assert resources.destroyed == 5


def test_constructor_waits_for_slow_worker_resources(resources: Resources) -> None:
    constructing = threading.current_thread()

    def slow_create() -> Resource:
        if threading.current_thread() is not constructing:
            # a worker's resource: finish only once the constructor is visibly waiting
            wait_until(lambda: _waiting_for_workers(constructing))
        return resources.create()

    with tasker.TaskManager(
        slow_create, on_destroy=resources.destroy, workers=3, burst_interval=None
    ) as m:
        assert resources.created == 6
        assert m.stats().active_workers == 3


def test_each_base_worker_creates_its_resource_in_its_own_thread(resources: Resources) -> None:
    with tasker.TaskManager(
        resources.create,
        on_destroy=resources.destroy,
        workers=3,
        resource_pool_size=0,
        burst_interval=None,
        name="own",
    ) as m:
        threads = [r.thread for r in resources.made]
        assert len(threads) == 3
        assert len(set(threads)) == 3
        assert all(re.fullmatch(r"own-worker-\d+", t) for t in threads)
        assert threading.current_thread().name not in threads

        # each worker then runs its tasks on the resource it created
        barrier = threading.Barrier(3)

        def probe(r: Resource) -> tuple[str, str]:
            barrier.wait(timeout=10)
            return r.thread, threading.current_thread().name

        pairs = [h.result(timeout=10) for h in [m.submit(probe) for _ in range(3)]]
        assert all(made_in == runs_in for made_in, runs_in in pairs)
        assert {runs_in for _, runs_in in pairs} == set(threads)


# -- a failing on_create ----------------------------------------------------------------


def test_failing_pool_resource_raises_resource_creation_error_and_cleans_up() -> None:
    res = Resources(fail_creates={2})
    with pytest.raises(
        tasker.ResourceCreationError,
        match=r"on_create failed for a run_task pool resource .*'poolfail'",
    ) as info:
        tasker.TaskManager(
            res.create, on_destroy=res.destroy, workers=2, resource_pool_size=3, name="poolfail"
        )
    assert isinstance(info.value.__cause__, ConnectionError)
    assert str(info.value.__cause__) == "cannot create resource (call 2)"
    assert res.created == 1
    assert res.live == 0
    assert _manager_threads("poolfail") == []


def test_failing_base_worker_resource_raises_resource_creation_error_and_cleans_up() -> None:
    res = Resources(fail_creates={3})
    with pytest.raises(
        tasker.ResourceCreationError,
        match=r"on_create failed for worker \d+'s resource .*'workerfail'",
    ) as info:
        tasker.TaskManager(
            res.create, on_destroy=res.destroy, workers=3, resource_pool_size=0, name="workerfail"
        )
    assert isinstance(info.value.__cause__, ConnectionError)
    assert str(info.value.__cause__) == "cannot create resource (call 3)"
    assert res.created == 2
    assert res.destroyed == 2
    assert _manager_threads("workerfail") == []


def test_failing_worker_resource_also_destroys_the_pool_resources() -> None:
    res = Resources(fail_creates={4})
    with pytest.raises(tasker.ResourceCreationError) as info:
        tasker.TaskManager(
            res.create, on_destroy=res.destroy, workers=2, resource_pool_size=2, name="allfail"
        )
    assert isinstance(info.value.__cause__, ConnectionError)
    assert res.created == 3
    assert res.destroyed == 3
    assert _manager_threads("allfail") == []


def test_resource_creation_error_is_a_tasker_error() -> None:
    res = Resources(fail_creates={1})
    with pytest.raises(tasker.TaskerError):
        tasker.TaskManager(res.create, on_destroy=res.destroy)
    assert res.live == 0


def test_failing_on_destroy_during_a_failed_start_still_raises_resource_creation_error() -> None:
    res = Resources(fail_creates={2}, fail_destroys=True)
    with pytest.raises(tasker.ResourceCreationError) as info:
        tasker.TaskManager(res.create, on_destroy=res.destroy, workers=2, resource_pool_size=0)
    assert isinstance(info.value.__cause__, ConnectionError)
    assert res.created == 1
    assert res.live == 0
