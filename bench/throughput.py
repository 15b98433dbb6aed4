"""Throughput and round-trip latency: tasker against ThreadPoolExecutor, same run.

Batch: submit N no-op tasks, then wait for all of them (tasks/s).
Round trip: one caller submits one no-op task and waits, repeatedly (p50/p99 us).

The two contenders alternate within each round and the median over rounds is
reported, so drift in the machine's load hits both alike.

    python bench/throughput.py [--tasks 100000] [--rounds 5] [--workers 4]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial

import tasker


def _noop(_resource: object = None) -> None:
    return None


def batch(submit: Callable[[], Future[None]], n: int) -> float:
    start = time.perf_counter()
    handles = [submit() for _ in range(n)]
    for handle in handles:
        handle.result()
    return n / (time.perf_counter() - start)


def round_trip(submit: Callable[[], Future[None]], n: int) -> tuple[float, float]:
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        submit().result()
        samples.append(time.perf_counter() - start)
    samples.sort()
    return samples[n // 2] * 1e6, samples[int(n * 0.99)] * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--latency-samples", type=int, default=5_000)
    args = parser.parse_args()

    results: dict[str, dict[str, list[float]]] = {
        name: {"batch": [], "p50": [], "p99": []} for name in ("tasker", "ThreadPoolExecutor")
    }
    for _ in range(args.rounds):
        with ThreadPoolExecutor(args.workers) as pool:

            def tpe_submit(pool: ThreadPoolExecutor = pool) -> Future[None]:
                return pool.submit(_noop)

            tpe_submit().result()  # start its threads outside the timing
            results["ThreadPoolExecutor"]["batch"].append(batch(tpe_submit, args.tasks))
            p50, p99 = round_trip(tpe_submit, args.latency_samples)
            results["ThreadPoolExecutor"]["p50"].append(p50)
            results["ThreadPoolExecutor"]["p99"].append(p99)

        manager: tasker.TaskManager[object, None] = tasker.TaskManager(
            object, workers=args.workers, burst_interval=None
        )
        with manager:
            submit = partial(manager.submit, _noop)
            results["tasker"]["batch"].append(batch(submit, args.tasks))
            p50, p99 = round_trip(submit, args.latency_samples)
            results["tasker"]["p50"].append(p50)
            results["tasker"]["p99"].append(p99)

    med = {k: {m: statistics.median(v) for m, v in d.items()} for k, d in results.items()}
    print(f"{args.tasks} no-op tasks, {args.workers} workers, median of {args.rounds} rounds")
    print(f"{'':20} {'batch tasks/s':>14} {'rt p50 us':>10} {'rt p99 us':>10}")
    for name, m in med.items():
        print(f"{name:20} {m['batch']:14,.0f} {m['p50']:10.1f} {m['p99']:10.1f}")
    t, p = med["tasker"], med["ThreadPoolExecutor"]
    print(
        f"ratio tasker/TPE: batch throughput {t['batch'] / p['batch']:.2f}x, "
        f"round-trip p50 {t['p50'] / p['p50']:.2f}x (lower is better)"
    )


if __name__ == "__main__":
    main()
