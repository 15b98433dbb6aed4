"""Soak: concurrent producers, random errors, a random stop() or kill(): every handle ends."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import random
import threading
from typing import Any

import pytest

import tasker
from tasker.testing import Resource, Resources, wait_until

LONG = 30.0  # a safety net against hangs, never reached when the test passes
NAME = "soak"
PRODUCERS = 4
CAP = 5000  # tasks per producer at most; producers go on until the manager refuses them
MAX_RETRIES = 1

Manager = tasker.TaskManager[Resource, Any]


class Unhealthy(Exception):
    """An error ``check_health`` rejects: the worker that raised it is replaced."""


KINDS = ["ok", "ok", "ok", "slow", "error", "unhealthy", "flaky"]


@dataclasses.dataclass(frozen=True)
class Spec:
    """One task a producer made up: what it does and how it was submitted."""

    kind: str
    value: int
    priority: bool
    once: bool

    def __call__(self, resource: Resource) -> int:
        context = tasker.current_task()
        assert context is not None
        if self.kind == "slow":
            context.cancelled.wait(0.002)  # cooperates with kill(): returns early
        elif self.kind == "error":
            raise ValueError(f"task {self.value} failed")
        elif self.kind == "unhealthy":
            raise Unhealthy(f"task {self.value} broke its worker")
        elif self.kind == "flaky" and context.attempt == 1:
            raise Unhealthy(f"task {self.value} broke its worker once")
        return self.value


def check_outcome(handle: tasker.TaskHandle[int], spec: Spec, how: str) -> str:
    """Assert that the handle ended the way its spec allows; return how it ended."""
    if handle.cancelled():
        assert how == "kill", f"stop() cancelled {spec}"
        with pytest.raises(concurrent.futures.CancelledError):
            handle.result(0)
        return "cancelled"
    error = handle.exception(0)
    if error is None:
        assert spec.kind in {"ok", "slow", "flaky"}, spec
        assert not (spec.kind == "flaky" and spec.once), spec
        assert handle.result(0) == spec.value
        return "completed"
    if isinstance(error, ValueError):
        assert spec.kind == "error", (spec, error)
    elif isinstance(error, Unhealthy):
        assert spec.kind in {"unhealthy", "flaky"}, (spec, error)
        assert spec.once, f"a task that may be retried got the raw error: {spec}"
        assert handle.attempts == 1
    elif isinstance(error, tasker.RetriesExhausted):
        assert spec.kind == "unhealthy", (spec, error)
        assert not spec.once, spec
        assert isinstance(error.__cause__, Unhealthy)
        assert error.attempts == handle.attempts == MAX_RETRIES + 1
    else:
        pytest.fail(f"{spec} ended with an unexpected {error!r}")
    return "failed"


def manager_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(f"{NAME}-") and t.is_alive()]


@pytest.mark.parametrize("how", ["stop", "kill"])
@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_every_handle_ends_when_a_loaded_manager_is_shut_down_at_a_random_moment(
    seed: int, how: str
) -> None:
    rng = random.Random(seed)
    resources = Resources(
        # A few later on_create calls fail: replacements retry, burst workers give up.
        fail_creates=set(rng.sample(range(5, 40), 3)),
        fail_destroys=rng.random() < 0.3,
    )
    m: Manager = tasker.TaskManager(
        resources.create,
        on_destroy=resources.destroy,
        workers=2,
        max_workers=4,
        resource_pool_size=1,
        check_health=lambda exc: not isinstance(exc, Unhealthy),
        max_retries=MAX_RETRIES,
        burst_interval=0.01,
        queue_size=rng.choice([0, 8, 64]),
        name=NAME,
    )
    accepted: list[tuple[tasker.TaskHandle[int], Spec]] = []
    inline: list[tuple[str, Spec]] = []
    lock = threading.Lock()
    refused: list[str] = []  # why each producer was turned away

    def produce(number: int) -> None:
        mine = random.Random(seed * 1000 + number)
        for n in range(CAP):
            spec = Spec(
                kind=mine.choice(KINDS),
                value=number * CAP + n,
                priority=mine.random() < 0.3,
                once=mine.random() < 0.3,
            )
            try:
                if mine.random() < 0.05:
                    inline.append((run_inline(spec), spec))
                    continue
                if mine.random() < 0.5:
                    handle = m.submit(spec, priority=spec.priority, once=spec.once)
                else:
                    try:
                        handle = m.try_submit(spec, priority=spec.priority, once=spec.once)
                    except tasker.QueueFull:
                        handle = m.submit(spec, priority=spec.priority, once=spec.once)
            except tasker.ManagerClosed as exc:
                with lock:
                    refused.append(str(exc))
                return
            with lock:
                accepted.append((handle, spec))

    def run_inline(spec: Spec) -> str:
        try:
            assert m.run_task(spec) == spec.value
        except tasker.ResourceCreationError:
            return "no resource"  # a temporary resource hit an injected on_create failure
        except (ValueError, Unhealthy):
            assert spec.kind in {"error", "unhealthy", "flaky"}
            return "failed"
        assert spec.kind in {"ok", "slow", "flaky"}
        return "completed"

    threads = [threading.Thread(target=produce, args=(i,), daemon=True) for i in range(PRODUCERS)]
    for thread in threads:
        thread.start()
    try:
        moment = rng.randrange(20, 1000)
        wait_until(lambda: len(accepted) >= moment, timeout=LONG)
    finally:
        if how == "stop":
            m.stop()
        else:
            m.kill()

    # Checked the moment shutdown returns: nothing may still be winding down.
    assert manager_threads() == []
    assert resources.live == 0, f"{resources.live} resources leaked"
    assert resources.created == resources.destroyed
    for thread in threads:
        thread.join(LONG)
        assert not thread.is_alive()
    assert len(refused) == PRODUCERS, "a producer was never refused"
    assert all("shutting down" in reason for reason in refused), refused

    not_done = [handle.id for handle, _ in accepted if not handle.done()]
    assert not_done == [], "handles still pending after shutdown returned"
    ended = [check_outcome(handle, spec, how) for handle, spec in accepted]

    ran_inline = [outcome for outcome, _ in inline if outcome != "no resource"]
    metrics = m.metrics()
    assert metrics.total_arrived == len(accepted) + len(ran_inline)
    assert metrics.total_cancelled == ended.count("cancelled")
    assert metrics.total_completed == ended.count("completed") + ran_inline.count("completed")
    assert metrics.total_failed == ended.count("failed") + ran_inline.count("failed")
