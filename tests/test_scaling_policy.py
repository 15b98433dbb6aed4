"""The default scaling policy: a pure function of scripted samples, exact numbers.

Sizing rule under test (see ``DefaultScalingPolicy``): keep up with arrivals (Little's
law, ``arrival_rate * execution_time`` workers) plus clear the backlog within
``drain_time``; at least one more worker when tasks wait and every worker is busy;
never above ``max_workers``; retire only workers idle for ``hold`` seconds, only with
an empty backlog, never below ``base_workers``, longest idle first.
"""

from __future__ import annotations

import dataclasses

import pytest

from tasker import DefaultScalingPolicy, ScalingDecision, ScalingPolicy, ScalingSample


def sample(**changes: object) -> ScalingSample:
    """A quiet manager of 1 base worker (max 8), changed by keyword."""
    base = ScalingSample(
        arrival_rate=0.0,
        completion_rate=0.0,
        execution_time=0.0,
        queued=0,
        priority_queued=0,
        busy_workers=0,
        idle_workers=1,
        active_workers=1,
        base_workers=1,
        max_workers=8,
        idle_times=((1, 0.0),),
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def busy(active: int, **changes: object) -> ScalingSample:
    """Every one of ``active`` workers busy, none idle."""
    return sample(
        busy_workers=active, idle_workers=0, active_workers=active, idle_times=(), **changes
    )


def idle(times: dict[int, float], **changes: object) -> ScalingSample:
    """Every worker idle for the given seconds (worker id -> seconds), longest first."""
    ordered = tuple(sorted(times.items(), key=lambda item: -item[1]))
    return sample(
        busy_workers=0,
        idle_workers=len(times),
        active_workers=len(times),
        idle_times=ordered,
        **changes,
    )


def test_default_policy_satisfies_the_protocol() -> None:
    assert isinstance(DefaultScalingPolicy(), ScalingPolicy)


def test_a_quiet_manager_does_not_change() -> None:
    decision = DefaultScalingPolicy().decide(sample())
    assert (decision.add, decision.retire) == (0, ())


# -- stepping up ------------------------------------------------------------------------


def test_arrivals_outpacing_completions_size_the_step_by_littles_law() -> None:
    # 400 tasks/s of 20 ms each keep 8 workers busy; 1 is running, so add 7.
    s = busy(1, arrival_rate=400.0, completion_rate=50.0, execution_time=0.02, max_workers=32)

    decision = DefaultScalingPolicy().decide(s)

    assert decision.add == 7
    assert decision.retire == ()
    assert decision.reason


def test_a_growing_backlog_is_sized_to_drain_within_drain_time() -> None:
    # 200 waiting tasks of 20 ms, to clear in 1 s: 4 workers; 2 are running.
    s = busy(2, queued=150, priority_queued=50, execution_time=0.02, max_workers=32)

    decision = DefaultScalingPolicy(drain_time=1.0).decide(s)

    assert decision.add == 2
    assert decision.reason


def test_arrivals_and_backlog_add_up() -> None:
    # 8 workers for the arrivals + 2 for 100 waiting tasks within 1 s = 10; 1 running.
    s = busy(1, arrival_rate=400.0, queued=100, execution_time=0.02, max_workers=32)

    assert DefaultScalingPolicy(drain_time=1.0).decide(s).add == 9


def test_adds_a_worker_when_tasks_wait_and_all_are_busy_before_any_run_finished() -> None:
    # No run has finished yet: zero measured throughput, execution_time 0.
    s = busy(2, arrival_rate=50.0, queued=5, execution_time=0.0)

    decision = DefaultScalingPolicy().decide(s)

    assert decision.add >= 1
    assert decision.reason


def test_adds_a_worker_when_tasks_wait_and_all_are_busy_even_if_throughput_suffices() -> None:
    # The measured rate says 1 worker would do, but a task is waiting on 4 busy ones.
    s = busy(4, queued=1, execution_time=0.001)

    assert DefaultScalingPolicy().decide(s).add >= 1


def test_never_grows_above_max_workers() -> None:
    s = busy(3, arrival_rate=1000.0, queued=500, execution_time=0.1, max_workers=4)

    assert DefaultScalingPolicy().decide(s).add == 1


def test_adds_nothing_once_the_cap_is_reached() -> None:
    s = busy(4, arrival_rate=1000.0, queued=500, execution_time=0.1, max_workers=4)

    decision = DefaultScalingPolicy().decide(s)

    assert (decision.add, decision.retire) == (0, ())


def test_adds_nothing_at_the_cap_with_zero_throughput() -> None:
    s = busy(4, queued=10, execution_time=0.0, max_workers=4)

    assert DefaultScalingPolicy().decide(s).add == 0


def test_max_step_limits_one_step() -> None:
    s = busy(1, arrival_rate=400.0, execution_time=0.02, max_workers=32)

    assert DefaultScalingPolicy(max_step=2).decide(s).add == 2
    assert DefaultScalingPolicy(max_step=100).decide(s).add == 7


# -- stepping down ----------------------------------------------------------------------


def test_retires_burst_workers_idle_for_the_hold_period_longest_idle_first() -> None:
    s = idle({1: 0.5, 2: 1.0, 3: 3.0, 4: 5.0}, execution_time=0.02)

    decision = DefaultScalingPolicy(hold=2.0).decide(s)

    assert decision.retire == (4, 3)
    assert decision.add == 0
    assert decision.reason


def test_default_hold_is_two_seconds() -> None:
    policy = DefaultScalingPolicy()

    assert policy.decide(idle({1: 1.99, 2: 1.99})).retire == ()
    assert policy.decide(idle({1: 2.0, 2: 2.0})).retire != ()


def test_never_retires_below_base_workers() -> None:
    times = {1: 100.0, 2: 90.0, 3: 80.0, 4: 70.0}
    policy = DefaultScalingPolicy(hold=2.0)

    assert policy.decide(idle(times, base_workers=2)).retire == (1, 2)
    assert policy.decide(idle(times, base_workers=4)).retire == ()


def test_retires_the_longest_idle_when_only_some_may_go() -> None:
    s = idle({5: 4.0, 6: 3.0, 7: 9.0}, base_workers=2)

    assert DefaultScalingPolicy(hold=2.0).decide(s).retire == (7,)


def test_never_retires_while_tasks_wait() -> None:
    s = idle({1: 10.0, 2: 10.0, 3: 10.0}, queued=1)

    assert DefaultScalingPolicy(hold=2.0).decide(s).retire == ()


def test_a_flapping_load_never_retires_a_worker() -> None:
    policy = DefaultScalingPolicy(hold=2.0)
    decisions: list[ScalingDecision] = []
    for round_ in range(20):
        if round_ % 2 == 0:  # a burst: all busy, tasks waiting, at the cap
            s = busy(4, arrival_rate=200.0, queued=20, execution_time=0.02, max_workers=4)
        else:  # a lull: everyone idle, but not for long
            lull = 0.1 * (round_ % 5 + 1)
            s = idle({1: lull, 2: lull, 3: lull / 2, 4: lull / 4}, max_workers=4)
        decisions.append(policy.decide(s))

    assert all(d.retire == () for d in decisions)
    # and once the load is really gone, the burst workers do go
    after = idle({1: 2.5, 2: 2.5, 3: 2.5, 4: 2.5}, max_workers=4)
    assert len(policy.decide(after).retire) == 3


# -- purity and validation ----------------------------------------------------------------


def test_decide_is_a_pure_function_of_the_sample() -> None:
    policy = DefaultScalingPolicy(hold=2.0)
    up = busy(1, arrival_rate=400.0, execution_time=0.02, max_workers=32)
    down = idle({1: 3.0, 2: 3.0})

    first = [policy.decide(up), policy.decide(down)]
    second = [policy.decide(up), policy.decide(down)]

    assert first == second


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"hold": -1.0}, r"hold.*-1\.0"),
        ({"hold": float("nan")}, r"hold.*nan"),
        ({"drain_time": 0}, r"drain_time.*\b0\b"),
        ({"drain_time": -0.5}, r"drain_time.*-0\.5"),
        ({"max_step": 0}, r"max_step.*\b0\b"),
        ({"max_step": -2}, r"max_step.*-2"),
    ],
)
def test_invalid_settings_are_rejected_naming_the_argument(
    kwargs: dict[str, float], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        DefaultScalingPolicy(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"hold": "2"}, r"hold.*'2'"),
        ({"drain_time": None}, r"drain_time.*None"),
        ({"max_step": 1.5}, r"max_step.*1\.5"),
    ],
)
def test_settings_of_the_wrong_type_are_rejected_naming_the_argument(
    kwargs: dict[str, object], match: str
) -> None:
    with pytest.raises(TypeError, match=match):
        DefaultScalingPolicy(**kwargs)  # type: ignore[arg-type]
