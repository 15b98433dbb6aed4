"""RetryPolicy (DESIGN §4): the backoff of every strategy, exactly; pure, no threads.

``RetryPolicy.delay(retry, rng)`` is a pure function of the 1-based retry number and a
random source, so every strategy is checked value by value, jitter through a seeded
``random.Random``. No delay ever exceeds ``max_delay``, however large the retry number.
"""

from __future__ import annotations

import dataclasses
import math
import random
from typing import Any

import pytest

import tasker
from tasker import RetryPolicy, RetryStrategy

S = RetryStrategy

RETRY_NUMBERS = [*range(1, 80), 100, 1023, 1024, 1025, 5000, 10**6]


def policy(strategy: RetryStrategy, base: float = 0.5, cap: float = 60.0) -> RetryPolicy:
    return RetryPolicy(max_retries=10, base_delay=base, max_delay=cap, strategy=strategy)


# -- every strategy's delays, exactly ------------------------------------------------------


def test_defaults_are_those_of_the_design() -> None:
    default = RetryPolicy()

    assert default.max_retries == 3
    assert default.base_delay == 1.0
    assert default.max_delay == 60.0
    assert default.strategy is RetryStrategy.EXPONENTIAL_JITTER


def test_there_are_exactly_the_five_documented_strategies() -> None:
    assert {s.name for s in RetryStrategy} == {
        "IMMEDIATE",
        "FIXED",
        "LINEAR",
        "EXPONENTIAL",
        "EXPONENTIAL_JITTER",
    }


def test_immediate_never_waits() -> None:
    p = policy(S.IMMEDIATE, base=2.0)

    assert [p.delay(n) for n in (1, 2, 3, 10, 5000)] == [0.0] * 5


def test_fixed_waits_base_delay_every_time() -> None:
    p = policy(S.FIXED, base=2.5)

    assert [p.delay(n) for n in (1, 2, 3, 10, 5000)] == [2.5] * 5


def test_linear_waits_base_delay_times_the_retry_number_up_to_max_delay() -> None:
    p = policy(S.LINEAR, base=1.5, cap=10.0)

    assert [p.delay(n) for n in range(1, 10)] == [1.5, 3.0, 4.5, 6.0, 7.5, 9.0, 10.0, 10.0, 10.0]
    assert p.delay(5000) == 10.0


def test_exponential_doubles_from_base_delay_up_to_max_delay() -> None:
    p = policy(S.EXPONENTIAL, base=0.25, cap=5.0)

    assert [p.delay(n) for n in range(1, 9)] == [0.25, 0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]


def test_exponential_with_zero_base_delay_never_waits() -> None:
    p = policy(S.EXPONENTIAL, base=0.0, cap=5.0)

    assert [p.delay(n) for n in (1, 2, 60, 5000)] == [0.0] * 4


@pytest.mark.parametrize("strategy", [S.FIXED, S.LINEAR, S.EXPONENTIAL])
def test_deterministic_strategies_ignore_the_random_source(strategy: RetryStrategy) -> None:
    p = policy(strategy, base=0.5, cap=30.0)

    for n in range(1, 12):
        assert p.delay(n, random.Random(1)) == p.delay(n, random.Random(2)) == p.delay(n)


def test_exponential_jitter_is_deterministic_with_a_seeded_random_source() -> None:
    p = policy(S.EXPONENTIAL_JITTER, base=0.5, cap=30.0)
    first, second = random.Random(42), random.Random(42)

    delays = [p.delay(n, first) for n in range(1, 20)]

    assert delays == [p.delay(n, second) for n in range(1, 20)]
    assert delays != [p.delay(n, random.Random(43)) for n in range(1, 20)]


def test_exponential_jitter_stays_between_zero_and_the_exponential_delay() -> None:
    base, cap = 0.5, 30.0
    p = policy(S.EXPONENTIAL_JITTER, base=base, cap=cap)

    for seed in range(50):
        rng = random.Random(seed)
        for n in range(1, 40):
            ceiling = min(cap, base * 2 ** (n - 1))
            assert 0.0 <= p.delay(n, rng) <= ceiling, (seed, n)


def test_exponential_jitter_spreads_over_its_whole_range() -> None:
    """Full jitter: draws land near 0 and near the ceiling, not only at one end."""
    p = policy(S.EXPONENTIAL_JITTER, base=1.0, cap=60.0)
    ceiling = 8.0  # retry 4: 1.0 * 2 ** 3

    draws = [p.delay(4, random.Random(seed)) for seed in range(200)]

    assert min(draws) < 0.1 * ceiling
    assert max(draws) > 0.9 * ceiling
    assert len(set(draws)) > 150


def test_exponential_jitter_without_a_random_source_still_stays_in_range() -> None:
    p = policy(S.EXPONENTIAL_JITTER, base=1.0, cap=3.0)

    for n, ceiling in [(1, 1.0), (2, 2.0), (3, 3.0), (50, 3.0), (5000, 3.0)]:
        assert 0.0 <= p.delay(n) <= ceiling


# -- no delay ever exceeds max_delay -------------------------------------------------------


@pytest.mark.parametrize("strategy", list(RetryStrategy))
@pytest.mark.parametrize(
    ("base", "cap"),
    [(0.0, 0.0), (0.001, 0.001), (0.1, 7.0), (1.0, 60.0), (3.0, 3.0), (1e6, 1e9), (1e300, 1e308)],
)
def test_no_delay_ever_exceeds_max_delay(strategy: RetryStrategy, base: float, cap: float) -> None:
    p = RetryPolicy(max_retries=1, base_delay=base, max_delay=cap, strategy=strategy)

    for seed in range(5):
        rng = random.Random(seed)
        for n in RETRY_NUMBERS:
            delay = p.delay(n, rng)
            assert isinstance(delay, float)
            assert math.isfinite(delay)
            assert 0.0 <= delay <= cap, (strategy, base, cap, seed, n, delay)


@pytest.mark.parametrize("strategy", list(RetryStrategy))
def test_huge_retry_numbers_do_not_overflow(strategy: RetryStrategy) -> None:
    p = RetryPolicy(base_delay=2.0, max_delay=45.0, strategy=strategy)
    rng = random.Random(0)

    for n in (1024, 1025, 5000, 10**9):
        delay = p.delay(n, rng)  # no OverflowError
        if strategy is S.FIXED:
            assert delay == 2.0
        elif strategy in (S.LINEAR, S.EXPONENTIAL):
            assert delay == 45.0
        elif strategy is S.IMMEDIATE:
            assert delay == 0.0
        else:
            assert 0.0 <= delay <= 45.0


def test_the_jittered_delay_of_a_large_retry_number_uses_the_whole_capped_range() -> None:
    """Past the cap, jitter is uniform in [0, max_delay], not pinned at max_delay."""
    p = RetryPolicy(base_delay=1.0, max_delay=10.0, strategy=S.EXPONENTIAL_JITTER)

    draws = [p.delay(5000, random.Random(seed)) for seed in range(100)]

    assert all(0.0 <= d <= 10.0 for d in draws)
    assert min(draws) < 2.0
    assert max(draws) > 8.0


@pytest.mark.parametrize(
    ("retry", "error", "match"),
    [
        (0, ValueError, r"retry must be >= 1 \(got retry=0\)"),
        (-3, ValueError, r"retry must be >= 1 \(got retry=-3\)"),
        (1.0, TypeError, r"retry must be an int >= 1 \(got retry=1\.0\)"),
        (True, TypeError, r"retry must be an int >= 1 \(got retry=True\)"),
    ],
)
def test_delay_rejects_a_retry_number_below_one_or_not_an_int(
    retry: Any, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        RetryPolicy().delay(retry)


# -- wants_retry: max_retries and should_retry -------------------------------------------


def test_wants_retry_until_max_retries_retries_were_done() -> None:
    p = RetryPolicy(max_retries=3)
    error = ValueError("boom")

    assert [p.wants_retry(error, done) for done in range(6)] == [
        True,
        True,
        True,
        False,
        False,
        False,
    ]


def test_max_retries_zero_never_retries() -> None:
    assert RetryPolicy(max_retries=0).wants_retry(ValueError("boom"), 0) is False


def test_wants_retry_asks_should_retry_with_the_exception() -> None:
    seen: list[BaseException] = []

    def only_io(exc: BaseException) -> bool:
        seen.append(exc)
        return isinstance(exc, OSError)

    p = RetryPolicy(max_retries=2, should_retry=only_io)
    io_error, value_error = OSError("disk"), ValueError("bad")

    assert p.wants_retry(io_error, 0) is True
    assert p.wants_retry(value_error, 0) is False
    assert seen == [io_error, value_error]


def test_should_retry_is_not_asked_once_max_retries_are_spent() -> None:
    seen: list[BaseException] = []

    def record(exc: BaseException) -> bool:
        seen.append(exc)
        return True

    p = RetryPolicy(max_retries=1, should_retry=record)

    assert p.wants_retry(ValueError("x"), 1) is False
    assert seen == []


def test_wants_retry_lets_an_exception_from_should_retry_through() -> None:
    def broken(exc: BaseException) -> bool:
        raise RuntimeError("should_retry is broken")

    with pytest.raises(RuntimeError, match="should_retry is broken"):
        RetryPolicy(should_retry=broken).wants_retry(ValueError("x"), 0)


@pytest.mark.parametrize(
    "error",
    [
        ValueError("x"),
        OSError("x"),
        RuntimeError("x"),
        tasker.TaskTimeout("task 'x' (tasker-1) timed out after 1.0s"),
        tasker.ManagerClosed("x"),
    ],
)
def test_default_should_retry_retries_every_exception(error: Exception) -> None:
    assert RetryPolicy().should_retry(error) is True
    assert RetryPolicy().wants_retry(error, 0) is True


@pytest.mark.parametrize("error", [KeyboardInterrupt(), SystemExit(1), GeneratorExit()])
def test_default_should_retry_does_not_retry_base_exceptions(error: BaseException) -> None:
    assert RetryPolicy().should_retry(error) is False
    assert RetryPolicy().wants_retry(error, 0) is False


# -- validation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"max_retries": -1}, ValueError, r"max_retries must be >= 0 \(got max_retries=-1\)"),
        ({"max_retries": 1.5}, TypeError, r"max_retries must be an int .*max_retries=1\.5"),
        ({"max_retries": "3"}, TypeError, r"max_retries must be an int .*max_retries='3'"),
        ({"max_retries": True}, TypeError, r"max_retries must be an int .*max_retries=True"),
        ({"max_retries": None}, TypeError, r"max_retries must be an int .*max_retries=None"),
        ({"base_delay": -0.5}, ValueError, r"base_delay must be .*>= 0 .*base_delay=-0\.5"),
        ({"base_delay": math.nan}, ValueError, r"base_delay must be a finite .*base_delay=nan"),
        ({"base_delay": math.inf}, ValueError, r"base_delay must be a finite .*base_delay=inf"),
        ({"base_delay": "1"}, TypeError, r"base_delay must be a number .*base_delay='1'"),
        ({"base_delay": None}, TypeError, r"base_delay must be a number .*base_delay=None"),
        ({"max_delay": -1.0}, ValueError, r"max_delay must be .*>= 0 .*max_delay=-1\.0"),
        ({"max_delay": math.inf}, ValueError, r"max_delay must be a finite .*max_delay=inf"),
        ({"max_delay": math.nan}, ValueError, r"max_delay must be a finite .*max_delay=nan"),
        ({"max_delay": "60"}, TypeError, r"max_delay must be a number .*max_delay='60'"),
        ({"max_delay": False}, TypeError, r"max_delay must be a number .*max_delay=False"),
        (
            {"base_delay": 2.0, "max_delay": 1.0},
            ValueError,
            r"max_delay must be >= base_delay \(got max_delay=1\.0, base_delay=2\.0\)",
        ),
        (
            {"strategy": "exponential"},
            TypeError,
            r"strategy must be a tasker\.RetryStrategy \(got strategy='exponential'\)",
        ),
        ({"strategy": None}, TypeError, r"strategy must be a tasker\.RetryStrategy"),
        ({"should_retry": True}, TypeError, r"should_retry must be a callable .*=True"),
        ({"should_retry": None}, TypeError, r"should_retry must be a callable .*=None"),
    ],
)
def test_every_field_is_validated_and_the_message_names_it(
    options: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        RetryPolicy(**options)


def test_zero_delays_and_ints_are_accepted() -> None:
    p = RetryPolicy(max_retries=0, base_delay=0, max_delay=0, strategy=S.FIXED)

    assert p.delay(1) == 0.0
    assert RetryPolicy(base_delay=1, max_delay=1).max_delay == 1


def test_max_delay_equal_to_base_delay_is_accepted() -> None:
    p = RetryPolicy(base_delay=2.0, max_delay=2.0, strategy=S.EXPONENTIAL)

    assert [p.delay(n) for n in (1, 2, 3)] == [2.0, 2.0, 2.0]


# -- an immutable value -------------------------------------------------------------------


def test_policy_is_a_frozen_dataclass() -> None:
    p = RetryPolicy(max_retries=2)

    assert dataclasses.is_dataclass(p)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.max_retries = 5  # type: ignore[misc]
    assert p.max_retries == 2


def test_equal_policies_compare_equal_and_hash_alike() -> None:
    a = RetryPolicy(max_retries=2, base_delay=0.5, strategy=S.LINEAR)
    b = RetryPolicy(max_retries=2, base_delay=0.5, strategy=S.LINEAR)

    assert a == b
    assert hash(a) == hash(b)
    assert a != dataclasses.replace(a, max_retries=3)


def test_replace_validates_the_new_values() -> None:
    p = RetryPolicy(base_delay=1.0, max_delay=5.0)

    with pytest.raises(ValueError, match=r"max_delay must be >= base_delay"):
        dataclasses.replace(p, max_delay=0.5)
