"""Throughput and round-trip latency: tasker against ThreadPoolExecutor, same run.

Batch: submit N no-op tasks, then wait for all of them (tasks/s).
Round trip: one caller submits one no-op task and waits, repeatedly (p50/p99 us),
the two contenders' samples taken alternately, one by one.

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


def round_trips(
    submits: dict[str, Callable[[], Future[None]]], n: int
) -> dict[str, tuple[float, float]]:
    """p50/p99 round trip (us) of each contender, sampled alternately one by one.

    On a shared VM a wake-up across cores costs ~3x one on the same core, and which one
    a run gets can change between rounds; pairing the samples gives both contenders the
    same conditions.
    """
    samples: dict[str, list[float]] = {name: [] for name in submits}
    for _ in range(n):
        for name, submit in submits.items():
            start = time.perf_counter()
            submit().result()
            samples[name].append(time.perf_counter() - start)
    out = {}
    for name, values in samples.items():
        values.sort()
        out[name] = (values[n // 2] * 1e6, values[int(n * 0.99)] * 1e6)
    return out


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
        manager: tasker.TaskManager[object, None] = tasker.TaskManager(
            object, workers=args.workers, burst_interval=None
        )
        with ThreadPoolExecutor(args.workers) as pool, manager:
            tpe_submit = partial(pool.submit, _noop)
            tasker_submit = partial(manager.submit, _noop)
            tpe_submit().result()  # start the pool's threads outside the timing
            results["ThreadPoolExecutor"]["batch"].append(batch(tpe_submit, args.tasks))
            results["tasker"]["batch"].append(batch(tasker_submit, args.tasks))
            trips = round_trips(
                {"ThreadPoolExecutor": tpe_submit, "tasker": tasker_submit},
                args.latency_samples,
            )
            for name, (p50, p99) in trips.items():
                results[name]["p50"].append(p50)
                results[name]["p99"].append(p99)

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
