"""Bursting under an open-loop step load: tasker(workers=1, max_workers=32) vs a static pool.

The load: ``rate`` tasks/s of ``task_ms`` of I/O-like work (a sleep) for ``seconds``,
submitted on schedule whatever the pool does (open loop). Reported per contender:

- makespan: first submit to last completion, against the ideal (load duration + one task);
- p95 submit-to-done: scheduled submit time to completion;
- worker-seconds: the integral of live workers over the makespan (a static pool pays
  for all of its workers all the time).

Optionally writes a PNG of tasker's workers and queue depth over time (``--plot``).

    python bench/burst.py [--rate 400] [--task-ms 20] [--seconds 3] [--plot docs/burst.png]
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import pairwise

import tasker
from tasker.testing import wait_until


def io_task(seconds: float) -> Callable[..., float]:
    def run(_resource: object = None) -> float:
        time.sleep(seconds)
        return time.perf_counter()

    return run


def drive(
    submit: Callable[[Callable[..., float]], Future[float]],
    rate: float,
    seconds: float,
    task_s: float,
) -> tuple[list[float], list[float], float]:
    """Submit on schedule; return (scheduled times, completion times, start)."""
    n = int(rate * seconds)
    start = time.perf_counter()
    scheduled = [start + i / rate for i in range(n)]
    futures = []
    task = io_task(task_s)
    for due in scheduled:
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        futures.append(submit(task))
    done = [f.result() for f in futures]
    return scheduled, done, start


def summarise(
    name: str, scheduled: list[float], done: list[float], start: float
) -> dict[str, float]:
    latencies = sorted(d - s for s, d in zip(scheduled, done, strict=True))
    return {
        "makespan": max(done) - start,
        "p95": latencies[int(len(latencies) * 0.95)],
        "p50": statistics.median(latencies),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=400.0)
    parser.add_argument("--task-ms", type=float, default=20.0)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--max-workers", type=int, default=32)
    parser.add_argument("--plot", default="", help="write a PNG of workers/queue over time")
    args = parser.parse_args()
    task_s = args.task_ms / 1000
    ideal = args.seconds + task_s

    # Static pool: its threads all exist from the start (pre-started), as a static pool's would.
    with ThreadPoolExecutor(args.max_workers) as pool:
        barrier = threading.Barrier(args.max_workers + 1)
        for _ in range(args.max_workers):
            pool.submit(barrier.wait)
        barrier.wait()
        tpe = summarise("tpe", *drive(lambda fn: pool.submit(fn), args.rate, args.seconds, task_s))
    tpe["worker_seconds"] = args.max_workers * tpe["makespan"]

    manager: tasker.TaskManager[object, float] = tasker.TaskManager(
        object, workers=1, max_workers=args.max_workers, name="burst"
    )
    timeline: list[tuple[float, int, int]] = []
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            s = manager.stats()
            timeline.append((time.perf_counter(), s.active_workers, s.queued_tasks))
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        scheduled, done, start = drive(manager.submit, args.rate, args.seconds, task_s)
        if args.plot:  # watch the burst workers retire after the hold period, for the plot
            wait_until(lambda: manager.stats().burst_workers == 0, timeout=10)
            time.sleep(0.3)
    finally:
        sampling.set()
        sampler.join()
        manager.stop()
    ours = summarise("tasker", scheduled, done, start)
    end = max(done)
    points = [(t, w) for t, w, _ in timeline if start <= t <= end]
    ours["worker_seconds"] = sum(w * (t2 - t1) for (t1, w), (t2, _) in pairwise(points))

    print(
        f"open-loop step load: {args.rate:.0f} tasks/s of {args.task_ms:.0f} ms for "
        f"{args.seconds:.1f} s; ideal makespan {ideal:.3f} s"
    )
    print(f"{'':34} {'makespan s':>10} {'vs ideal':>9} {'p50 ms':>8} {'p95 ms':>8} {'worker-s':>9}")
    for name, r in (
        (f"tasker(workers=1, max={args.max_workers})", ours),
        (f"ThreadPoolExecutor({args.max_workers}) static", tpe),
    ):
        print(
            f"{name:34} {r['makespan']:10.3f} {r['makespan'] / ideal - 1:+8.1%} "
            f"{r['p50'] * 1000:8.1f} {r['p95'] * 1000:8.1f} {r['worker_seconds']:9.1f}"
        )
    print(
        f"tasker vs static: p95 {ours['p95'] / tpe['p95']:.2f}x, "
        f"worker-seconds {ours['worker_seconds'] / tpe['worker_seconds']:.0%}"
    )
    if args.plot:
        plot(args.plot, timeline, start)


def plot(path: str, timeline: list[tuple[float, int, int]], start: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    times = [t - start for t, _, _ in timeline]
    fig, ax = plt.subplots(figsize=(8, 3.5), dpi=110)
    ax.plot(times, [w for _, w, _ in timeline], label="live workers", color="tab:blue")
    ax.plot(times, [q for _, _, q in timeline], label="queued tasks", color="tab:orange")
    ax.set_xlabel("seconds since the load started")
    ax.set_title("tasker(workers=1, max_workers=32): a 3 s step of 400 tasks/s of 20 ms tasks")
    ax.legend(loc="upper right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
