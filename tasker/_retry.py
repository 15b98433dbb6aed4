"""Retry policies for a task's own errors: pure delay arithmetic, seeded randomness.

``RetryPolicy.delay(retry, rng)`` is a pure function of the retry number and a random
source, so every strategy is tested exactly. The runtime holds no worker while a retry
waits: the task sits in the timer heap in state ``RETRYING``.
"""

from __future__ import annotations

import enum
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tasker._validate import check_callable, check_int, check_seconds

__all__ = ["RetryPolicy", "RetryStrategy", "retry_wanted"]


class RetryStrategy(enum.Enum):
    """How the delay grows from one retry to the next (``base`` = ``base_delay``).

    - ``IMMEDIATE``: no delay.
    - ``FIXED``: ``base`` every time.
    - ``LINEAR``: ``base * n`` for the n-th retry.
    - ``EXPONENTIAL``: ``base * 2 ** (n - 1)``.
    - ``EXPONENTIAL_JITTER``: uniform in ``[0, base * 2 ** (n - 1)]`` ("full jitter"),
      so many tasks failing together do not retry together.

    Every delay is capped at ``max_delay``, jitter included.
    """

    IMMEDIATE = "immediate"
    FIXED = "fixed"
    LINEAR = "linear"
    EXPONENTIAL = "exponential"
    EXPONENTIAL_JITTER = "exponential_jitter"


def _retry_every_exception(exc: BaseException) -> bool:
    return isinstance(exc, Exception)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Retry a task's own errors, with a delay between attempts.

    Args:
        max_retries: Re-runs after the first failure (>= 0).
        base_delay: Seconds; the unit each strategy scales.
        max_delay: Seconds; no delay is ever longer.
        strategy: A :class:`RetryStrategy`.
        should_retry: ``(exc) -> bool``; default: retry every ``Exception`` (not
            ``KeyboardInterrupt``/``SystemExit``). A ``TaskTimeout`` is an ``Exception``.

    Example:
        >>> policy = tasker.RetryPolicy(max_retries=5, base_delay=0.5, max_delay=10,
        ...                             should_retry=lambda e: isinstance(e, IOError))
        >>> manager.submit(fetch, retry=policy)
    """

    max_retries: int = 3
    base_delay: float = 1.0
    max_delay: float = 60.0
    strategy: RetryStrategy = RetryStrategy.EXPONENTIAL_JITTER
    should_retry: Callable[[BaseException], bool] = field(default=_retry_every_exception)

    def __post_init__(self) -> None:
        check_int("max_retries", self.max_retries, minimum=0)
        check_seconds("base_delay", self.base_delay, allow_zero=True)
        check_seconds("max_delay", self.max_delay, allow_zero=True)
        if self.max_delay < self.base_delay:
            raise ValueError(
                f"max_delay must be >= base_delay (got max_delay={self.max_delay!r}, "
                f"base_delay={self.base_delay!r})"
            )
        if not isinstance(self.strategy, RetryStrategy):
            raise TypeError(
                f"strategy must be a tasker.RetryStrategy (got strategy={self.strategy!r})"
            )
        check_callable("should_retry", self.should_retry)

    def delay(self, retry: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before the ``retry``-th re-run (1-based).

        Args:
            retry: 1 for the first retry, 2 for the second, ...
            rng: Random source for jitter (inject a seeded one in tests).
        """
        check_int("retry", retry, minimum=1)
        base, cap = self.base_delay, self.max_delay
        strategy = self.strategy
        if strategy is RetryStrategy.IMMEDIATE:
            return 0.0
        if strategy is RetryStrategy.FIXED:
            return min(base, cap)
        if strategy is RetryStrategy.LINEAR:
            return min(base * retry, cap)
        # 2 ** 1024 overflows a float; past ~60 doublings every delay is the cap anyway.
        grown = base * math.ldexp(1.0, min(retry - 1, 1000)) if base else 0.0
        ceiling = min(grown, cap)
        if strategy is RetryStrategy.EXPONENTIAL:
            return ceiling
        return (rng or random).uniform(0.0, ceiling)

    def wants_retry(self, exc: BaseException, retries_done: int) -> bool:
        """Whether a run that raised ``exc`` after ``retries_done`` retries runs again.

        Raises whatever ``should_retry`` raises; the runtime logs that and gives up.
        """
        return retries_done < self.max_retries and bool(self.should_retry(exc))


def retry_wanted(
    policy: RetryPolicy | None,
    exc: BaseException,
    retries_done: int,
    log: Any,
    task_id: str,
) -> bool:
    """Whether a failed run is retried; a ``should_retry`` that raises means no (logged)."""
    if policy is None:
        return False
    try:
        return policy.wants_retry(exc, retries_done)
    except Exception as policy_exc:
        log.warning("should_retry raised %r for task %s; not retrying it", policy_exc, task_id)
        return False
