"""submit_many against a loop of submit: enqueueing 10^5 no-op tasks, same run.

Times the enqueue step alone (the part submit_many changes: one lock round per batch
instead of one per task) and the whole submit-and-wait, alternating the two ways
within each round; reports medians.

    python bench/batch.py [--tasks 100000] [--rounds 5] [--workers 4]
"""

from __future__ import annotations

import argparse
import statistics
import time

import tasker


def _noop(_: object) -> None:
    return None


def run(way: str, n: int, workers: int) -> tuple[float, float]:
    manager: tasker.TaskManager[object, None] = tasker.TaskManager(
        object, workers=workers, burst_interval=None
    )
    fns = [_noop] * n
    with manager:
        start = time.perf_counter()
        if way == "submit_many":
            handles = manager.submit_many(fns)
        else:
            handles = [manager.submit(fn) for fn in fns]
        enqueued = time.perf_counter()
        for handle in handles:
            handle.result()
        done = time.perf_counter()
    return enqueued - start, done - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()
    times: dict[str, list[tuple[float, float]]] = {"loop of submit": [], "submit_many": []}
    for _ in range(args.rounds):
        times["loop of submit"].append(run("loop", args.tasks, args.workers))
        times["submit_many"].append(run("submit_many", args.tasks, args.workers))
    print(f"{args.tasks} no-op tasks, {args.workers} workers, median of {args.rounds} rounds")
    med = {}
    for way, samples in times.items():
        enqueue = statistics.median(s[0] for s in samples)
        total = statistics.median(s[1] for s in samples)
        med[way] = (enqueue, total)
        print(
            f"  {way:15} enqueue {args.tasks / enqueue:12,.0f} tasks/s   "
            f"submit-and-wait {args.tasks / total:10,.0f} tasks/s"
        )
    loop, many = med["loop of submit"], med["submit_many"]
    print(
        f"submit_many vs loop: enqueue {loop[0] / many[0]:.2f}x faster, "
        f"submit-and-wait {loop[1] / many[1]:.2f}x"
    )


if __name__ == "__main__":
    main()
