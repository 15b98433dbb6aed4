"""Scheduling, retries with backoff, timeouts and status lookups.

- a recurring job every 0.2 s (runs never overlap; missed runs are not replayed);
- a cron job (every minute; we only show when it would run next);
- a delayed job that fails twice and succeeds on its third attempt, with backoff;
- a job that hangs past its timeout: the caller gets TaskTimeout, the worker is replaced;
- status lookups by id along the way.

    python examples/scheduling.py
"""

from __future__ import annotations

import itertools
import logging
import threading
import time

import tasker


class Feed:
    """Stands in for a client of a flaky upstream service."""

    def __init__(self) -> None:
        self.calls = itertools.count(1)

    def fetch(self) -> str:
        call = next(self.calls)
        if call <= 2:
            raise ConnectionError(f"upstream unavailable (call {call})")
        return f"payload from call {call}"


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="  log %(levelname)s %(message)s")
    print("--- tasker scheduling example ---")
    feed = Feed()
    manager: tasker.TaskManager[Feed, object] = tasker.TaskManager(
        lambda: feed, workers=2, burst_interval=None, name="jobs"
    )
    with manager:
        ticks = itertools.count(1)
        heartbeat = manager.schedule_recurring(lambda _: next(ticks), 0.2, name="heartbeat")
        nightly = manager.schedule_cron(lambda _: "report", "0 3 * * *", name="nightly-report")
        print(f"  cron 'nightly-report' next runs at {nightly.next_run:%Y-%m-%d %H:%M %Z}")

        retry = tasker.RetryPolicy(
            max_retries=3,
            base_delay=0.05,
            max_delay=1.0,
            strategy=tasker.RetryStrategy.EXPONENTIAL_JITTER,
        )
        delayed = manager.schedule(lambda f: f.fetch(), 0.1, name="fetch", retry=retry)
        print(f"  {delayed.id} is {manager.status(delayed.id).state.value}")
        print(f"  {delayed.id} -> {delayed.result(timeout=5)!r}")
        info = manager.status(delayed.id)
        print(
            f"  status: {info.state.value} after {info.attempts} attempts, "
            f"last error {info.last_error!r}"
        )

        release = threading.Event()
        hung = manager.submit(lambda _: release.wait(30), timeout=0.2, name="hangs")
        try:
            hung.result(timeout=5)
        except tasker.TaskTimeout as exc:
            print(f"  {exc}")
        print(f"  workers still {manager.stats().active_workers}: the stuck one was replaced")
        release.set()

        time.sleep(0.5)  # let the heartbeat tick a few times
        heartbeat.cancel()
        last = heartbeat.last.id if heartbeat.last else None
        print(f"  heartbeat ran {heartbeat.runs} times; last run {last}")
        m = manager.metrics()
        done = m.total_completed
        print(f"  retried {m.total_retried}, timed out {m.total_timeouts}, completed {done}")
    print(f"--- stopped; the cron schedule is over: next_run={nightly.next_run} ---")


if __name__ == "__main__":
    main()
