"""Named tasks end to end in one process, on both brokers: results, retries, timeouts,
health, chains, groups, unique keys, signing, dead letters, graceful stop."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import CancelledError
from typing import Any

import pytest
from app_for_tests import RUNS, register

import tasker
from tasker.distributed import (
    App,
    Broker,
    BrokerUnavailable,
    Outgoing,
    RemoteTaskError,
    Worker,
)
from tasker.testing import Resources, wait_until

KEY = "0123456789abcdef-test-signing-key"


@pytest.fixture
def app(broker: Broker) -> App:
    return register(App(broker, result_ttl=60))


@pytest.fixture
def start_worker(app: App) -> Iterator[Any]:
    workers: list[Worker[Any]] = []

    def start(target: App | None = None, **options: Any) -> Worker[Any]:
        options.setdefault("poll_interval", 0.1)
        worker = (target or app).worker(**options)
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop(timeout=10)


def test_enqueue_runs_the_named_handler_and_returns_its_json_result(
    app: App, start_worker: Any
) -> None:
    start_worker(workers=2)
    handle = app.enqueue("add", {"a": 2, "b": 40})
    assert handle.result(timeout=10) == 42
    assert handle.status() is tasker.TaskState.COMPLETED
    info = handle.info()
    assert (info.id, info.name, info.attempts, info.last_error) == (handle.id, "add", 1, None)
    assert info.submitted_at is not None
    assert info.started_at is not None
    assert info.finished_at is not None
    assert info.submitted_at <= info.started_at <= info.finished_at
    assert app.handle(handle.id).result(timeout=1) == 42  # any process can ask by id


def test_status_moves_from_queued_through_running_to_completed(app: App, start_worker: Any) -> None:
    handle = app.enqueue("slow", {"seconds": 0.5})
    assert handle.status() is tasker.TaskState.QUEUED
    start_worker()
    wait_until(lambda: handle.status() is tasker.TaskState.RUNNING)
    handle.result(timeout=10)
    assert handle.status() is tasker.TaskState.COMPLETED


def test_a_failing_task_retries_with_backoff_in_the_broker_then_fails(
    app: App, start_worker: Any
) -> None:
    worker = start_worker()
    handle = app.enqueue("boom", "x")
    with pytest.raises(RemoteTaskError, match=r"'boom' .* failed: ValueError: boom x") as caught:
        handle.result(timeout=10)
    assert (caught.value.type_name, caught.value.message) == ("ValueError", "boom x")
    info = handle.info()
    assert info.state is tasker.TaskState.FAILED
    assert info.attempts == 3
    assert isinstance(info.last_error, RemoteTaskError)
    assert worker.stats().retried == 2
    assert worker.manager.stats().retrying_tasks == 0  # no retry ever waited in a thread


def test_a_retry_waits_in_the_broker_in_state_retrying(app: App, start_worker: Any) -> None:
    calls: list[float] = []

    @app.task(
        name="flaky",
        retry=tasker.RetryPolicy(
            max_retries=1, base_delay=0.4, strategy=tasker.RetryStrategy.FIXED
        ),
    )
    def flaky(resource: Any, payload: Any) -> str:
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise ConnectionError("first try fails")
        return "second try"

    worker = start_worker()
    handle = app.enqueue("flaky")
    wait_until(lambda: handle.status() is tasker.TaskState.RETRYING)
    assert worker.stats().in_flight == 0  # nothing holds a worker while it waits
    assert handle.result(timeout=10) == "second try"
    assert calls[1] - calls[0] >= 0.35
    info = handle.info()
    assert info.attempts == 2
    assert isinstance(info.last_error, RemoteTaskError)
    assert info.last_error.type_name == "ConnectionError"


def test_a_task_past_its_timeout_fails_with_task_timeout(app: App, start_worker: Any) -> None:
    @app.task(name="stuck", timeout=0.2)
    def stuck(resource: Any, payload: Any) -> None:
        context = tasker.current_task()
        assert context is not None
        context.cancelled.wait(5)

    start_worker()
    with pytest.raises(RemoteTaskError, match="TaskTimeout"):
        app.enqueue("stuck").result(timeout=10)


def test_per_worker_resources_and_health_checks_apply(app: App, start_worker: Any) -> None:
    resources = Resources()
    seen: list[int] = []

    @app.task(name="use")
    def use(resource: Any, payload: Any) -> int:
        seen.append(resource.number)
        if payload == "break" and len(seen) == 1:
            raise OSError("connection lost")
        return int(resource.number)

    worker = start_worker(
        on_create=resources.create,
        on_destroy=resources.destroy,
        check_health=lambda exc: not isinstance(exc, OSError),
        workers=1,
        max_workers=1,
    )
    number = app.enqueue("use", "break").result(timeout=10)
    assert seen[0] != number  # re-run on a fresh resource after the unhealthy error
    worker.stop()
    assert resources.live == 0
    assert resources.created >= 2


def test_chain_passes_each_result_to_the_next_link(app: App, start_worker: Any) -> None:
    start_worker(workers=2)
    chain = app.chain("add", "double", "nothing", "double", payload={"a": 1, "b": 2})
    assert chain.result(timeout=10) == 12  # "nothing" keeps no result yet passes it on
    assert [h.status() for h in chain.handles] == [tasker.TaskState.COMPLETED] * 4
    assert chain.handles[2].result(timeout=1) is None  # store_result=False
    assert chain.status() is tasker.TaskState.COMPLETED


def test_a_failing_link_ends_the_chain_and_cancels_the_rest(app: App, start_worker: Any) -> None:
    start_worker()
    chain = app.chain("add", "boom", "double", payload={"a": 1, "b": 2})
    with pytest.raises(RemoteTaskError, match="boom 3"):
        chain.result(timeout=10)
    assert chain.handles[2].status() is tasker.TaskState.CANCELLED
    with pytest.raises(CancelledError):
        chain.handles[2].result(timeout=1)
    assert chain.status() is tasker.TaskState.FAILED


def test_later_links_are_scheduled_until_their_turn(app: App) -> None:
    chain = app.chain("add", "double", payload={"a": 1, "b": 1})
    assert [h.status() for h in chain.handles] == [
        tasker.TaskState.QUEUED,
        tasker.TaskState.SCHEDULED,
    ]


def test_group_fans_out_and_collects_results_in_order(app: App, start_worker: Any) -> None:
    start_worker(workers=3)
    group = app.group([("add", {"a": i, "b": i}) for i in range(20)])
    assert group.results(timeout=10) == [2 * i for i in range(20)]
    assert group.completed_count() == 20


def test_group_results_raise_the_first_failure(app: App, start_worker: Any) -> None:
    start_worker()
    group = app.group([("add", {"a": 1, "b": 1}), ("boom", "g")])
    with pytest.raises(RemoteTaskError, match="boom g"):
        group.results(timeout=10)


def test_unique_key_makes_enqueue_idempotent(app: App, start_worker: Any) -> None:
    RUNS.clear()
    first = app.enqueue("count", {"key": "u"}, unique_key="order-7")
    again = [app.enqueue("count", {"key": "u"}, unique_key="order-7") for _ in range(5)]
    assert {h.id for h in again} == {first.id}
    start_worker()
    assert first.result(timeout=10) == "u"
    assert RUNS == {"u": 1}


def test_delayed_task_is_scheduled_then_runs(app: App, start_worker: Any) -> None:
    start_worker()
    started = time.monotonic()
    handle = app.enqueue("add", {"a": 1, "b": 1}, delay=0.3)
    assert handle.status() is tasker.TaskState.SCHEDULED
    assert handle.result(timeout=10) == 2
    assert time.monotonic() - started >= 0.29


def test_priority_tasks_run_before_waiting_normal_ones(app: App, start_worker: Any) -> None:
    normal = [app.enqueue("whoami", f"n{i}") for i in range(5)]
    urgent = app.enqueue("whoami", "p", priority=True)
    start_worker(workers=1, max_workers=1)
    urgent.result(timeout=10)
    for handle in normal:
        handle.result(timeout=10)
    assert urgent.info().started_at <= min(h.info().started_at for h in normal)  # type: ignore[operator]


def test_undecodable_and_unknown_messages_are_dead_lettered_and_the_worker_goes_on(
    app: App, broker: Broker, start_worker: Any
) -> None:
    body = json.dumps({"v": 1, "id": "u1", "task": "no-such-task", "queue": "default"}).encode()
    broker.publish(
        [
            Outgoing("bad1", "default", b"\xff not json"),
            Outgoing("bad2", "default", b'["a list"]'),
            Outgoing("u1", "default", body),
        ]
    )
    worker = start_worker()
    assert app.enqueue("add", {"a": 1, "b": 1}).result(timeout=10) == 2
    wait_until(lambda: len(app.dead_letters()) == 3)
    reasons = {d.task_id: d.reason for d in app.dead_letters()}
    assert reasons["bad1"].startswith("undecodable message: not JSON")
    assert "not an object" in reasons["bad2"]
    assert reasons["u1"].startswith("unknown task name 'no-such-task' (this worker runs: add,")
    assert worker.stats().dead_lettered == 3


def test_dead_letters_can_be_redriven(app: App, broker: Broker, start_worker: Any) -> None:
    other = App(broker)  # a producer that knows a task the worker does not yet run
    handle = other.enqueue("late-task", {"x": 1})
    worker = start_worker()
    wait_until(lambda: len(app.dead_letters()) == 1)
    with pytest.raises(RemoteTaskError, match="unknown task name"):
        handle.result(timeout=5)
    worker.stop()

    @app.task(name="late-task")
    def late(resource: Any, payload: Any) -> str:
        return "ran after redrive"

    assert app.redrive() == 1
    start_worker()
    assert handle.result(timeout=10) == "ran after redrive"
    assert app.dead_letters() == []


def test_signed_messages_run_and_forged_or_unsigned_ones_are_refused(
    broker: Broker, start_worker: Any
) -> None:
    signed = register(App(broker, signing_key=KEY))
    forger = register(App(broker, signing_key="another-key-of-16-bytes-or-more"))
    unsigned = register(App(broker))
    start_worker(signed)
    assert signed.enqueue("add", {"a": 1, "b": 2}).result(timeout=10) == 3
    forged = forger.enqueue("add", {"a": 1, "b": 2})
    plain = unsigned.enqueue("add", {"a": 1, "b": 2})
    wait_until(lambda: len(signed.dead_letters()) == 2)
    reasons = {d.task_id: d.reason for d in signed.dead_letters()}
    assert reasons[forged.id].startswith("bad signature")
    assert reasons[plain.id].startswith("unsigned message refused")
    # A refused message never touches records: a forger cannot fake an outcome.
    assert forged.status() is tasker.TaskState.QUEUED


def test_payloads_must_be_json(app: App) -> None:
    with pytest.raises(TypeError, match="must be JSON-serialisable"):
        app.enqueue("add", {"a": object()})
    with pytest.raises(TypeError, match="must be JSON-serialisable"):
        app.enqueue("add", float("nan"))


def test_a_result_that_is_not_json_fails_the_task(app: App, start_worker: Any) -> None:
    @app.task(name="setty")
    def setty(resource: Any, payload: Any) -> set[int]:
        return {1, 2}

    start_worker()
    with pytest.raises(RemoteTaskError, match="TypeError: the result of task 'setty'"):
        app.enqueue("setty").result(timeout=10)


def test_unknown_id_and_waiting_too_long(app: App) -> None:
    with pytest.raises(tasker.TaskNotFound, match="no record of task nope"):
        app.handle("nope").status()
    handle = app.enqueue("add", {"a": 1, "b": 1})
    with pytest.raises(TimeoutError, match=r"not finished within 0\.05s"):
        handle.result(timeout=0.05)


def test_prefetch_is_bounded_by_free_capacity(app: App, broker: Broker, start_worker: Any) -> None:
    handles = [app.enqueue("slow", {"seconds": 0.3, "n": i}) for i in range(8)]
    worker = start_worker(workers=1, max_workers=2, burst_interval=None)
    # What it holds and has not finished running is bounded by its capacity (max_workers
    # + prefetch): it never hoards work an idle worker could run. (``unacked`` may pass
    # that for a moment: a finished run frees capacity before its ack is stored.)
    peak = 0
    while not all(h.done() for h in handles):
        peak = max(peak, worker.stats().in_flight)
        time.sleep(0.01)
    assert 1 <= peak <= 2


def test_graceful_stop_finishes_and_acknowledges_everything_it_holds(
    app: App, broker: Broker, start_worker: Any
) -> None:
    handles = [app.enqueue("slow", {"seconds": 0.2, "n": i}) for i in range(6)]
    worker = start_worker(workers=2, max_workers=3, burst_interval=None)
    wait_until(lambda: worker.stats().unacked == 3)
    worker.stop()
    stats = worker.stats()
    assert (stats.unacked, stats.in_flight) == (0, 0)
    finished = [h for h in handles if h.done()]
    assert len(finished) == stats.completed == 3  # what it held ran and was acknowledged
    assert all(h.status() is tasker.TaskState.QUEUED for h in handles if h not in finished)
    # Nothing it ran is redelivered: a second worker runs only the other three.
    second = start_worker(workers=3)
    for handle in handles:
        handle.result(timeout=10)
    wait_until(lambda: second.stats().completed == 3)
    assert second.stats().redelivered == 0


def test_a_killed_worker_leaves_unstarted_messages_for_redelivery(
    app: App, start_worker: Any
) -> None:
    handles = [app.enqueue("slow", {"seconds": 0.3, "n": i}) for i in range(4)]
    worker = start_worker(workers=1, max_workers=1, prefetch=3, burst_interval=None)
    wait_until(lambda: worker.stats().unacked == 4)
    # One runs (and is acknowledged when it returns); three wait unstarted in the worker.
    wait_until(lambda: sum(h.status() is tasker.TaskState.RUNNING for h in handles) == 1)
    worker.kill()
    second = start_worker(workers=4)
    assert sorted(h.result(timeout=15)["n"] for h in handles) == [0, 1, 2, 3]
    assert second.stats().redelivered == 3


def test_delayed_tasks_with_three_workers_each_run_exactly_once(
    app: App, start_worker: Any
) -> None:
    RUNS.clear()
    for _ in range(3):
        start_worker(workers=2)
    handles = [app.enqueue("count", {"key": f"d{i}"}, delay=0.2 + i * 0.01) for i in range(30)]
    for handle in handles:
        handle.result(timeout=10)
    assert {f"d{i}": 1 for i in range(30)} == RUNS


def test_a_recurring_schedule_runs_once_per_due_time_with_three_workers(
    app: App, broker: Broker, start_worker: Any
) -> None:
    RUNS.clear()
    schedule = app.schedule_recurring("count", 0.1, {"key": "beat"})
    assert schedule.description == "every 0.1s"
    workers = [start_worker() for _ in range(3)]
    wait_until(lambda: RUNS.get("beat", 0) >= 6, timeout=10)
    for worker in workers:
        worker.stop()
    runs = RUNS["beat"]
    won = [w._schedules.published for w in workers if w._schedules]
    assert sum(len(dues) for dues in won) == runs  # every published run ran once ...
    all_dues = [due for dues in won for due in dues]
    assert len(set(all_dues)) == len(all_dues)  # ... and no due time was published twice
    assert sum(1 for dues in won if dues) >= 1


def test_invalid_cron_expression_is_refused(app: App) -> None:
    with pytest.raises(ValueError, match="invalid cron expression 'not cron'"):
        app.schedule_cron("add", "not cron")


def test_a_cron_schedule_runs_once_per_match_with_three_workers(
    app: App, start_worker: Any
) -> None:
    RUNS.clear()
    app.schedule_cron("count", "* * * * * *", {"key": "cron"})  # every second
    workers = [start_worker() for _ in range(3)]
    wait_until(lambda: RUNS.get("cron", 0) >= 2, timeout=10)
    for worker in workers:
        worker.stop()
    won = [due for w in workers if w._schedules for _, due in w._schedules.published]
    assert len(won) == len(set(won)) == RUNS["cron"]
    assert all(due == int(due) for due in won)  # on the second


class FlakyBroker:
    """Delegates to a broker, but every call fails while ``down`` is set."""

    def __init__(self, inner: Broker) -> None:
        self.inner = inner
        self.down = False
        self.failures = 0

    def __getattr__(self, name: str) -> Any:
        target = getattr(self.inner, name)
        if not callable(target) or name == "close":
            return target

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.down:
                self.failures += 1
                time.sleep(0.005)
                raise BrokerUnavailable("injected outage")
            return target(*args, **kwargs)

        return call


def test_a_worker_rides_out_a_broker_outage_and_loses_nothing(
    broker: Broker, start_worker: Any, caplog: pytest.LogCaptureFixture
) -> None:
    flaky = FlakyBroker(broker)
    app = register(App(flaky, result_ttl=60))  # type: ignore[arg-type]
    producer = register(App(broker))
    worker = start_worker(app, workers=2)
    first = [producer.enqueue("slow", {"seconds": 0.2, "n": i}) for i in range(4)]
    wait_until(lambda: worker.stats().in_flight == 4 or worker.stats().completed > 0)
    flaky.down = True  # outcomes of the running tasks cannot be stored; fetches fail
    during = [producer.enqueue("add", {"a": i, "b": 0}) for i in range(10)]
    wait_until(lambda: not worker.stats().connected and flaky.failures >= 3)
    assert not any(h.done() for h in first)  # held in memory, not acknowledged
    flaky.down = False
    assert sorted(h.result(timeout=10)["n"] for h in first) == [0, 1, 2, 3]
    assert [h.result(timeout=10) for h in during] == list(range(10))
    wait_until(lambda: worker.stats().connected)
    stats = worker.stats()
    assert stats.broker_errors >= 1
    assert stats.redelivered == 0
    messages = [r.getMessage() for r in caplog.records]
    assert any("broker unavailable while" in m for m in messages)
    assert any("broker reachable again" in m for m in messages)
