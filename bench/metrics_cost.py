"""What the default metrics collector costs, in time and in memory.

1. Throughput of no-op tasks with the default collector vs ``NullCollector``,
   alternating, median of several rounds (the cost is the relative drop).
2. Memory (tracemalloc, bytes held by the collector) after 10^4 and 10^6 recorded
   tasks: it must not grow beyond the fixed window.
3. ``metrics()`` call time after 10^3 and 10^6 tasks: it must not grow either.

    python bench/metrics_cost.py [--tasks 100000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
import tracemalloc

import tasker
from tasker.testing import FakeClock


def _noop(_: object) -> None:
    return None


def throughput(collector: tasker.MetricsCollector, n: int, workers: int) -> float:
    manager: tasker.TaskManager[object, None] = tasker.TaskManager(
        object, workers=workers, burst_interval=None, collector=collector
    )
    with manager:
        start = time.perf_counter()
        handles = [manager.submit(_noop) for _ in range(n)]
        for handle in handles:
            handle.result()
        return n / (time.perf_counter() - start)


def feed(collector: tasker.DefaultCollector, clock: FakeClock, n: int) -> None:
    for _ in range(n):
        now = clock.advance(0.0001)
        collector.record_arrival()
        collector.record_completion(tasker.TaskTimestamps(now - 0.002, now - 0.001, now))


def memory_after(n: int) -> int:
    clock = FakeClock()
    tracemalloc.start()
    collector = tasker.DefaultCollector(clock=clock)
    feed(collector, clock, n)
    collector.metrics()
    current, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return current


def metrics_call_us(n: int) -> float:
    clock = FakeClock()
    collector = tasker.DefaultCollector(clock=clock)
    feed(collector, clock, n)
    runs = 200
    start = time.perf_counter()
    for _ in range(runs):
        collector.metrics()
    return (time.perf_counter() - start) / runs * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()

    default, null = [], []
    for _ in range(args.rounds):
        default.append(throughput(tasker.DefaultCollector(), args.tasks, args.workers))
        null.append(throughput(tasker.NullCollector(), args.tasks, args.workers))
    d, z = statistics.median(default), statistics.median(null)
    print(f"no-op tasks/s, {args.workers} workers, median of {args.rounds} rounds:")
    print(f"  DefaultCollector {d:12,.0f}")
    print(f"  NullCollector    {z:12,.0f}")
    print(f"  metrics cost: {1 - d / z:.1%} of no-op-task throughput")

    memory_after(1_000)  # warm-up: NumPy allocates caches on first use
    small, large = memory_after(10_000), memory_after(1_000_000)
    print(
        f"collector memory after 10^4 tasks: {small:,} B; after 10^6: {large:,} B "
        f"(growth {large - small:+,} B)"
    )
    early, late = metrics_call_us(1_000), metrics_call_us(1_000_000)
    print(f"metrics() after 10^3 tasks: {early:.0f} us; after 10^6: {late:.0f} us")


if __name__ == "__main__":
    main()
