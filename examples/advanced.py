"""Bursting under load: 20 producers, periodic stats, a priority task, /metrics.

Twenty producer threads submit I/O-like tasks in waves. Watch the burst manager add
workers while the backlog grows and retire them once they have been idle for the hold
period. Midway a priority task jumps the queue. Meanwhile ``/metrics`` is served for
Prometheus; the example scrapes it once itself. Ends with a graceful stop and the final
numbers.

    python examples/advanced.py [--seconds 4]
"""

from __future__ import annotations

import argparse
import random
import threading
import time
import urllib.request

import tasker
from tasker.prometheus import serve_metrics


class ApiClient:
    """Stands in for an HTTP client with a connection pool of its own."""

    def call(self, latency: float) -> float:
        time.sleep(latency)
        return latency


def producer(manager: tasker.TaskManager[ApiClient, float], until: float, seed: int) -> None:
    rng = random.Random(seed)
    while time.monotonic() < until:
        burst = rng.randint(5, 15)
        for _ in range(burst):
            latency = rng.uniform(0.005, 0.03)
            try:
                manager.submit(lambda client, s=latency: client.call(s))
            except tasker.ManagerClosed:
                return
        time.sleep(rng.uniform(0.1, 0.4))  # think time between waves of requests


def main() -> None:
    parser = argparse.ArgumentParser(description="tasker bursting example")
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args()

    manager: tasker.TaskManager[ApiClient, float] = tasker.TaskManager(
        ApiClient,
        workers=2,
        max_workers=24,
        burst_interval=0.1,
        scaling_policy=tasker.DefaultScalingPolicy(hold=0.5),
        name="api",
    )
    server = serve_metrics(manager)
    print(f"--- tasker advanced example: /metrics at {server.url} ---")
    until = time.monotonic() + args.seconds
    producers = [
        threading.Thread(target=producer, args=(manager, until, seed)) for seed in range(20)
    ]
    for thread in producers:
        thread.start()

    ticks = 0
    while time.monotonic() < until + 1.0:
        time.sleep(0.25)
        ticks += 1
        s, m = manager.stats(), manager.metrics()
        print(
            f"  t={ticks * 0.25:4.2f}s workers={s.active_workers:2d} (burst {s.burst_workers:2d}) "
            f"busy={s.busy_workers:2d} queued={s.queued_tasks:3d} "
            f"in={m.arrival_rate:6.1f}/s out={m.completion_rate:6.1f}/s "
            f"p95={m.p95_execution_time * 1000:5.1f}ms"
        )
        if ticks == 8:
            answer = manager.queue_task_with_priority(lambda client: client.call(0.001))
            print(f"  priority task answered in the middle of the load ({answer * 1000:.0f}ms)")
        if ticks == 10:
            with urllib.request.urlopen(server.url, timeout=5) as response:
                lines = response.read().decode().splitlines()
            workers = [line for line in lines if line.startswith("tasker_workers{")]
            print(f"  scraped /metrics: {', '.join(workers)}")

    for thread in producers:
        thread.join()
    manager.stop()
    server.close()
    m = manager.metrics()
    print(
        f"--- stopped: {m.total_completed} completed, {m.total_failed} failed, "
        f"p50={m.p50_execution_time * 1000:.1f}ms p99={m.p99_execution_time * 1000:.1f}ms, "
        f"waited p95={m.p95_wait_time * 1000:.1f}ms ---"
    )


if __name__ == "__main__":
    main()
