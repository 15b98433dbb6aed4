"""ServiceRunner: dependency order, readiness, reverse stop, budgets, signals, failures."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator, Sequence

import pytest

import tasker


class FakeModule:
    """A module that records what happens to it, with fault injection.

    Args:
        log: Shared list of ``"start a"``, ``"ready a"``, ``"stop a"`` entries.
        start_error / stop_error: Raised from start() / stop().
        ready: Set for wait_ready() to return True; default already set.
        start_gate / stop_gate: start() / stop() block until this is set.
    """

    def __init__(
        self,
        name: str,
        log: list[str],
        dependencies: Sequence[str] = (),
        *,
        start_error: BaseException | None = None,
        stop_error: BaseException | None = None,
        ready: threading.Event | None = None,
        start_gate: threading.Event | None = None,
        stop_gate: threading.Event | None = None,
    ) -> None:
        self.name = name
        self.dependencies = tuple(dependencies)
        self.log = log
        self.start_error = start_error
        self.stop_error = stop_error
        self.ready = ready or threading.Event()
        if ready is None:
            self.ready.set()
        self.start_gate = start_gate
        self.stop_gate = stop_gate
        self.started = threading.Event()
        self.stop_timeouts: list[float | None] = []

    def start(self) -> None:
        self.log.append(f"start {self.name}")
        self.started.set()
        if self.start_gate is not None:
            self.start_gate.wait()
        if self.start_error is not None:
            raise self.start_error

    def wait_ready(self, timeout: float | None) -> bool:
        ok = self.ready.wait(timeout)
        if ok:
            self.log.append(f"ready {self.name}")
        return ok

    def stop(self, timeout: float | None) -> None:
        self.stop_timeouts.append(timeout)
        self.log.append(f"stop {self.name}")
        if self.stop_gate is not None:
            self.stop_gate.wait()
        if self.stop_error is not None:
            raise self.stop_error


class FiniteFake(FakeModule):
    def __init__(self, name: str, log: list[str], dependencies: Sequence[str] = ()) -> None:
        super().__init__(name, log, dependencies)
        self.finished = threading.Event()


@pytest.fixture
def log() -> list[str]:
    return []


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    """An event the test sets at the end, so a module blocked on it always returns."""
    event = threading.Event()
    yield event
    event.set()


def starts(log: list[str]) -> list[str]:
    return [entry.split()[1] for entry in log if entry.startswith("start")]


def stops(log: list[str]) -> list[str]:
    return [entry.split()[1] for entry in log if entry.startswith("stop")]


# -- graph validation ----------------------------------------------------------------------


def test_modules_start_in_dependency_order_and_stop_in_reverse(log: list[str]) -> None:
    web = FakeModule("web", log, ["cache", "db"])
    cache = FakeModule("cache", log, ["db"])
    db = FakeModule("db", log)
    runner = tasker.ServiceRunner([web, cache, db])
    assert [m.name for m in runner.modules] == ["db", "cache", "web"]

    runner.start()
    report = runner.stop()

    assert starts(log) == ["db", "cache", "web"]
    assert stops(log) == ["web", "cache", "db"]
    assert report.stopped == ("web", "cache", "db")
    assert report.ok
    assert report.reason == "stop() called"


def test_independent_modules_keep_the_order_they_were_given(log: list[str]) -> None:
    runner = tasker.ServiceRunner([FakeModule(n, log) for n in ("c", "a", "b")])
    assert [m.name for m in runner.modules] == ["c", "a", "b"]


def test_unknown_dependency_is_refused_naming_both_modules(log: list[str]) -> None:
    with pytest.raises(ValueError, match=r"module 'web' depends on unknown module\(s\) 'db'"):
        tasker.ServiceRunner([FakeModule("web", log, ["db"])])


@pytest.mark.parametrize(
    ("edges", "cycle"),
    [
        ({"a": ["b"], "b": ["a"]}, "a -> b -> a"),
        ({"a": ["b"], "b": ["c"], "c": ["a"]}, "a -> b -> c -> a"),
        ({"a": ["a"]}, "a -> a"),
    ],
)
def test_a_dependency_cycle_is_refused_naming_the_modules(
    log: list[str], edges: dict[str, list[str]], cycle: str
) -> None:
    modules = [FakeModule(name, log, deps) for name, deps in edges.items()]
    with pytest.raises(ValueError, match=f"module dependencies form a cycle: {cycle}"):
        tasker.ServiceRunner(modules)


def test_duplicate_names_are_refused(log: list[str]) -> None:
    with pytest.raises(ValueError, match="two modules are named 'a'"):
        tasker.ServiceRunner([FakeModule("a", log), FakeModule("a", log)])


def test_something_that_is_not_a_module_is_refused() -> None:
    with pytest.raises(TypeError, match=r"modules must implement tasker.Module .* \(got 42\)"):
        tasker.ServiceRunner([42])  # type: ignore[list-item]


def test_bad_budgets_are_refused(log: list[str]) -> None:
    with pytest.raises(ValueError, match="shutdown_timeout must be a finite number"):
        tasker.ServiceRunner([FakeModule("a", log)], shutdown_timeout=-1)
    with pytest.raises(ValueError, match="start_timeout must be a finite number"):
        tasker.ServiceRunner([FakeModule("a", log)], start_timeout=0)


# -- starting --------------------------------------------------------------------------------


def test_each_module_is_ready_before_the_next_one_starts(
    log: list[str], gate: threading.Event
) -> None:
    db = FakeModule("db", log, ready=gate)
    web = FakeModule("web", log, ["db"])
    runner = tasker.ServiceRunner([web, db])
    starting = threading.Thread(target=runner.start)
    starting.start()

    db.started.wait(5)
    assert not web.started.is_set()  # the runner is waiting for db to be ready
    gate.set()
    starting.join(5)

    assert log[:3] == ["start db", "ready db", "start web"]
    runner.stop()


def test_a_module_that_raises_in_start_stops_those_started_before_it(log: list[str]) -> None:
    boom = RuntimeError("boom")
    modules = [
        FakeModule("a", log),
        FakeModule("b", log, ["a"], start_error=boom),
        FakeModule("c", log, ["b"]),
    ]
    runner = tasker.ServiceRunner(modules)

    with pytest.raises(
        tasker.ModuleError, match=r"module 'b' failed to start: RuntimeError"
    ) as info:
        runner.start()

    assert info.value.module == "b"
    assert info.value.__cause__ is boom
    assert isinstance(info.value, tasker.TaskerError)
    assert starts(log) == ["a", "b"]  # c never started
    assert stops(log) == ["b", "a"]  # the half-started one is stopped too
    report = runner.stop()  # the report of the stop that start() did
    assert report.reason == "module 'b' failed to start"
    assert report.stopped == ("b", "a")


def test_a_module_that_is_never_ready_fails_the_start(log: list[str]) -> None:
    never = threading.Event()
    runner = tasker.ServiceRunner(
        [FakeModule("a", log), FakeModule("slow", log, ["a"], ready=never)], start_timeout=0.05
    )
    with pytest.raises(tasker.ModuleError, match=r"module 'slow' was not ready within 0\.05s"):
        runner.start()
    assert stops(log) == ["slow", "a"]


def test_a_module_that_hangs_in_start_does_not_hang_the_runner(
    log: list[str], gate: threading.Event
) -> None:
    runner = tasker.ServiceRunner(
        [FakeModule("a", log), FakeModule("hung", log, ["a"], start_gate=gate)],
        start_timeout=0.05,
    )
    with pytest.raises(tasker.ModuleError, match=r"module 'hung' did not start within 0\.05s"):
        runner.start()
    assert stops(log) == ["hung", "a"]


def test_start_is_once(log: list[str]) -> None:
    runner = tasker.ServiceRunner([FakeModule("a", log)])
    runner.start()
    with pytest.raises(RuntimeError, match="already running: start\\(\\) is once"):
        runner.start()
    runner.stop()


def test_a_stop_requested_while_starting_ends_the_start_early(log: list[str]) -> None:
    runner: tasker.ServiceRunner

    class Stopper(FakeModule):
        def start(self) -> None:
            super().start()
            runner.request_stop("changed my mind")

    runner = tasker.ServiceRunner([Stopper("a", log), FakeModule("b", log, ["a"])])
    report = runner.run(handle_signals=False)
    assert starts(log) == ["a"]
    assert report.reason == "changed my mind"
    assert report.stopped == ("a",)


# -- stopping --------------------------------------------------------------------------------


def test_a_module_that_raises_in_stop_is_reported_and_the_rest_still_stop(
    log: list[str],
) -> None:
    error = OSError("disk gone")
    runner = tasker.ServiceRunner(
        [FakeModule("a", log), FakeModule("b", log, ["a"], stop_error=error), FakeModule("c", log)]
    )
    runner.start()
    report = runner.stop()

    assert stops(log) == ["c", "b", "a"]
    assert report.stopped == ("c", "a")
    assert report.failed == {"b": error}
    assert not report.ok
    assert report.problems() == ["b: stop() raised OSError('disk gone')"]


def test_a_module_that_hangs_in_stop_is_left_behind_within_the_budget(
    log: list[str], gate: threading.Event
) -> None:
    runner = tasker.ServiceRunner(
        [FakeModule("a", log), FakeModule("hung", log, ["a"], stop_gate=gate)],
        shutdown_timeout=0.2,
    )
    runner.start()
    report = runner.stop()

    assert stops(log) == ["hung", "a"]  # a still stopped after hung overran
    assert report.stopped == ("a",)
    assert list(report.overran) == ["hung"]
    assert "stop() still running after 0.20s" in report.overran["hung"]
    assert report.elapsed < 0.2 + 0.1 + 1.0  # the budget, a's minimum wait, slack
    gate.set()


def test_a_module_whose_stop_times_out_is_reported_with_its_own_words(log: list[str]) -> None:
    late = TimeoutError("3 tasks still running")
    runner = tasker.ServiceRunner([FakeModule("pool", log, stop_error=late)])
    runner.start()
    report = runner.stop()
    assert report.overran == {"pool": "3 tasks still running"}
    assert "overran its 10s budget" in tasker._service.describe_stop(report)


def test_each_stop_gets_the_budget_that_is_left(log: list[str]) -> None:
    a, b = FakeModule("a", log), FakeModule("b", log, ["a"])
    runner = tasker.ServiceRunner([a, b], shutdown_timeout=5)
    runner.start()
    runner.stop()
    (b_timeout,) = b.stop_timeouts
    (a_timeout,) = a.stop_timeouts
    assert b_timeout is not None
    assert a_timeout is not None
    assert 4.0 < a_timeout <= b_timeout <= 5


def test_stop_is_idempotent_and_returns_the_same_report(log: list[str]) -> None:
    runner = tasker.ServiceRunner([FakeModule("a", log)])
    runner.start()
    first = runner.stop()
    assert runner.stop() is first
    assert stops(log) == ["a"]


def test_the_runner_is_a_context_manager(log: list[str]) -> None:
    with tasker.ServiceRunner([FakeModule("a", log)]) as runner:
        assert starts(log) == ["a"]
    assert stops(log) == ["a"]
    assert runner.stop().ok


# -- running until told ----------------------------------------------------------------------


def test_run_ends_when_a_stop_is_requested(log: list[str]) -> None:
    a = FakeModule("a", log)
    runner = tasker.ServiceRunner([a])
    stopper = threading.Thread(target=lambda: (a.started.wait(5), runner.request_stop("done")))
    stopper.start()
    report = runner.run(handle_signals=False)
    stopper.join()
    assert report.reason == "done"
    assert stops(log) == ["a"]


def test_run_ends_once_every_finite_module_has_finished(log: list[str]) -> None:
    one, two = FiniteFake("one", log), FiniteFake("two", log)
    runner = tasker.ServiceRunner([one, two, FakeModule("forever", log)])
    assert isinstance(one, tasker.FiniteModule)

    waited: list[bool] = []

    def finish() -> None:
        one.finished.set()
        waited.append(runner.wait(0.05))  # one of two is not enough
        two.finished.set()

    finisher = threading.Thread(target=lambda: (two.started.wait(5), finish()))
    finisher.start()
    report = runner.run(handle_signals=False)
    finisher.join()
    assert waited == [False]
    assert report.reason == "one, two finished"
    assert report.stopped == ("forever", "two", "one")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigint_and_sigterm_stop_the_service_gracefully(
    log: list[str], sig: signal.Signals
) -> None:
    a = FakeModule("a", log)
    runner = tasker.ServiceRunner([a])

    # A safety net: if the runner did not install its handler, end the run anyway
    # (and fail on the reason) instead of killing the test process.
    def safety_net(signum: int, frame: object) -> None:
        runner.request_stop("not handled by the runner")

    previous = signal.signal(sig, safety_net)
    try:
        sender = threading.Thread(target=lambda: (a.started.wait(5), os.kill(os.getpid(), sig)))
        sender.start()
        report = runner.run()
        sender.join()
        assert report.reason == sig.name
        assert report.ok
        assert signal.getsignal(sig) is safety_net  # the previous handler is back
    finally:
        signal.signal(sig, previous)


def test_handling_signals_outside_the_main_thread_does_nothing(log: list[str]) -> None:
    runner = tasker.ServiceRunner([FakeModule("a", log)])
    before = signal.getsignal(signal.SIGTERM)
    seen: list[object] = []

    def inside() -> None:
        with runner.handling_signals():
            seen.append(signal.getsignal(signal.SIGTERM))

    thread = threading.Thread(target=inside)
    thread.start()
    thread.join()
    assert seen == [before]


def test_wait_returns_false_when_nothing_asked_it_to_stop(log: list[str]) -> None:
    runner = tasker.ServiceRunner([FakeModule("a", log)])
    assert runner.wait(0.01) is False
    runner.request_stop("now")
    assert runner.wait(0.01) is True
    assert runner.stop_reason == "now"
    assert runner.stop().reason == "now"
