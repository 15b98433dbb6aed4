"""Basic usage: a calculator resource, two workers, a few tasks, stats, a clean stop.

Run it with ``make demo`` or ``python examples/basic.py``.
"""

from __future__ import annotations

import threading
import time

import tasker


class Calculator:
    """Stands in for an expensive resource such as a connection to a math service."""

    def __init__(self) -> None:
        self.name = threading.current_thread().name
        print(f"  created a Calculator in {self.name}")

    def close(self) -> None:
        print(f"  destroyed the Calculator of {self.name}")


def add(calc: Calculator) -> int:
    time.sleep(0.05)  # pretend to talk to the service
    return 10 + 25


def subtract(calc: Calculator) -> int:
    time.sleep(0.07)
    return 100 - 40


def main() -> None:
    print("--- tasker basic example ---")
    manager: tasker.TaskManager[Calculator, int] = tasker.TaskManager(
        Calculator, on_destroy=Calculator.close, workers=2, resource_pool_size=0
    )
    with manager:
        start = time.perf_counter()
        handles = {"10 + 25": manager.submit(add), "100 - 40": manager.submit(subtract)}
        for label, handle in handles.items():
            print(f"  {label} = {handle.result()}  (task {handle.id})")
        print(f"  both done in {time.perf_counter() - start:.3f}s (they ran concurrently)")
        print(f"  squares: {list(manager.map(lambda calc, x: x * x, range(6)))}")
        stats = manager.stats()
        print(
            f"  stats: active_workers={stats.active_workers} queued={stats.queued_tasks} "
            f"busy={stats.busy_workers}"
        )
        m = manager.metrics()
        print(f"  metrics: completed={m.total_completed} p50={m.p50_execution_time * 1000:.1f}ms")
    print("--- stopped: every resource destroyed ---")


if __name__ == "__main__":
    main()
