"""Distributed mode end to end through one local Redis: tasker vs Celery, same run.

    .venv/bin/python bench/distributed.py [--tasks 20000] [--latency-tasks 1000]

For each system: 2 worker processes (4 threads each, Celery's default prefetch of 4 per
thread), one producer process (this one), waiting until every task has run and been
acknowledged.

- throughput: N no-op tasks, first enqueue to last acknowledgement, enqueued one at a
  time (``app.enqueue`` / ``task.delay``) and in batches of 500 (``app.enqueue_many`` /
  ``group(...).apply_async()``);
- latency: tasks enqueued one by one, 2 ms apart, on idle workers; the handler records
  ``time.time() - payload["t"]`` (enqueue to start) in a Redis list; p50 / p99;
- ceiling: ``redis-benchmark``'s XADD rate on this machine (pipelined and not).

Both systems acknowledge after the task ran (tasker always; Celery with
``task_acks_late=True``), Celery keeps no results (``ignore_result``) while tasker stores a
record per task. Celery is optional: without it installed the bench says so and runs
tasker alone (``pip install celery`` into the venv; it is not a dependency).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tasker.distributed import App, RedisBroker, run_worker  # noqa: E402

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
PREFIX = os.environ.get("BENCH_PREFIX", "tasker-bench")
THREADS = 4
PREFETCH = 4 * THREADS  # Celery's default prefetch: 4 x concurrency per worker
LATENCY_KEY = f"{PREFIX}:latency"


# -- tasker ---------------------------------------------------------------------------


def tasker_app() -> App:
    broker = RedisBroker.from_url(REDIS_URL, prefix=PREFIX)
    app = App(broker, result_ttl=600)

    @app.task(name="noop")
    def noop(resource: Any, payload: Any) -> None:
        return None

    @app.task(name="stamp")
    def stamp(resource: redis.Redis, payload: dict[str, float]) -> None:
        resource.rpush(LATENCY_KEY, time.time() - payload["t"])

    app.resource(lambda: redis.Redis.from_url(REDIS_URL), on_destroy=lambda r: r.close())
    return app


def tasker_pending(client: redis.Redis) -> int:
    # Settled messages are deleted from the stream: its length is what is left.
    return int(client.xlen(f"{PREFIX}:q:default")) + int(client.zcard(f"{PREFIX}:delayed"))


# -- celery ---------------------------------------------------------------------------


def celery_app() -> Any:
    from celery import Celery

    app = Celery("bench", broker=REDIS_URL)
    app.conf.update(
        task_acks_late=True,
        task_ignore_result=True,
        worker_prefetch_multiplier=4,
        task_default_queue=f"{PREFIX}-celery",
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
    )

    @app.task(name="noop")
    def noop() -> None:
        return None

    @app.task(name="stamp")
    def stamp(t: float) -> None:
        client = _celery_client()
        client.rpush(LATENCY_KEY, time.time() - t)

    return app


_client: redis.Redis | None = None


def _celery_client() -> redis.Redis:
    global _client
    if _client is None:
        _client = redis.Redis.from_url(REDIS_URL)
    return _client


def celery_pending(client: redis.Redis) -> int:
    queue = f"{PREFIX}-celery"
    return int(client.llen(queue)) + int(client.hlen("unacked"))


# -- harness --------------------------------------------------------------------------


def start_workers(system: str) -> list[subprocess.Popen[bytes]]:
    return [
        subprocess.Popen(
            [sys.executable, __file__, "--role", f"{system}-worker"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(2)
    ]


def stop_workers(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_drained(pending: Any, client: redis.Redis, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while pending(client) > 0:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{pending(client)} tasks still pending after {timeout}s")
        time.sleep(0.002)


def warm_up(enqueue: Any, pending: Any, client: redis.Redis) -> None:
    for _ in range(200):
        enqueue()
    wait_drained(pending, client)


BATCH = 500


def measure(system: str, tasks: int, latency_tasks: int, client: redis.Redis) -> dict[str, float]:
    if system == "tasker":
        app = tasker_app()

        def one() -> None:
            app.enqueue("noop")

        def batch(n: int) -> None:
            app.enqueue_many("noop", [None] * n)

        def stamp() -> None:
            app.enqueue("stamp", {"t": time.time()})

        pending = tasker_pending
    else:
        from celery import group

        capp = celery_app()
        noop_task, stamp_task = capp.tasks["noop"], capp.tasks["stamp"]

        def one() -> None:
            noop_task.delay()

        def batch(n: int) -> None:
            group(noop_task.s() for _ in range(n)).apply_async()

        def stamp() -> None:
            stamp_task.delay(time.time())

        pending = celery_pending
    procs = start_workers(system)
    result: dict[str, float] = {}
    try:
        time.sleep(2.0)  # workers connect and subscribe
        warm_up(one, pending, client)
        for mode in ("one", "batch"):
            started = time.perf_counter()
            if mode == "one":
                for _ in range(tasks):
                    one()
            else:
                for sent in range(0, tasks, BATCH):
                    batch(min(BATCH, tasks - sent))
            enqueued = time.perf_counter()
            wait_drained(pending, client)
            finished = time.perf_counter()
            result[f"{mode}_throughput"] = tasks / (finished - started)
            result[f"{mode}_enqueue_rate"] = tasks / (enqueued - started)
        client.delete(LATENCY_KEY)
        for _ in range(latency_tasks):
            stamp()
            time.sleep(0.002)
        wait_drained(pending, client)
        deadline = time.monotonic() + 30
        while client.llen(LATENCY_KEY) < latency_tasks and time.monotonic() < deadline:
            time.sleep(0.01)
        samples = sorted(float(x) for x in client.lrange(LATENCY_KEY, 0, -1))
    finally:
        stop_workers(procs)
    result["p50_ms"] = 1000 * statistics.median(samples)
    result["p99_ms"] = 1000 * samples[min(len(samples) - 1, int(len(samples) * 0.99))]
    return result


def xadd_ceiling() -> dict[str, float]:
    exe = shutil.which("redis-benchmark")
    if exe is None:
        return {}
    key = f"{PREFIX}:xadd-ceiling"
    out: dict[str, float] = {}
    for pipeline in (1, 16):
        done = subprocess.run(
            [exe, "-q", "-n", "200000", "-P", str(pipeline), "XADD", key, "*", "f", "v"],
            capture_output=True,
            text=True,
            check=False,
        )
        line = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
        for part in line.replace("\r", " ").split(":"):
            if "requests per second" in part:
                out[f"P{pipeline}"] = float(part.split("requests per second")[0].strip())
    redis.Redis.from_url(REDIS_URL).delete(key)
    return out


def clean(client: redis.Redis) -> None:
    for pattern in (f"{PREFIX}:*", f"{PREFIX}-celery*", "unacked*", "_kombu*"):
        keys = list(client.scan_iter(match=pattern, count=1000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i : i + 500])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--latency-tasks", type=int, default=1000)
    parser.add_argument("--role", default="bench", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "tasker-worker":
        os.environ.setdefault("TASKER_BENCH", "1")
        sys.exit(
            run_worker(
                tasker_app(),
                workers=THREADS,
                max_workers=THREADS,
                prefetch=PREFETCH - THREADS,
                out=open(os.devnull, "w"),  # noqa: SIM115
                name=f"bench-{uuid.uuid4().hex[:4]}",
            )
        )
    if args.role == "celery-worker":
        celery_app().worker_main(
            ["worker", "--pool=threads", f"--concurrency={THREADS}", "--loglevel=WARNING"]
        )
        return

    client = redis.Redis.from_url(REDIS_URL)
    clean(client)
    print(f"{args.tasks} no-op tasks, 2 worker processes x {THREADS} threads, local Redis")
    ceiling = xadd_ceiling()
    if ceiling:
        print(
            "redis-benchmark XADD ceiling: "
            + ", ".join(f"{v:,.0f}/s ({k.replace('P', 'pipeline ')})" for k, v in ceiling.items())
        )
    results = {"tasker": measure("tasker", args.tasks, args.latency_tasks, client)}
    clean(client)
    try:
        import celery  # noqa: F401
    except ImportError:
        print("celery is not installed: skipping it (pip install celery into the venv)")
    else:
        results["celery"] = measure("celery", args.tasks, args.latency_tasks, client)
        clean(client)
    print(
        f"{'':8} {'one-by-one e2e':>15} {'(enqueue)':>11} {'batched e2e':>13} {'(enqueue)':>11}"
        f" {'p50 start':>10} {'p99 start':>10}"
    )
    for name, r in results.items():
        print(
            f"{name:8} {r['one_throughput']:>13,.0f}/s {r['one_enqueue_rate']:>9,.0f}/s"
            f" {r['batch_throughput']:>11,.0f}/s {r['batch_enqueue_rate']:>9,.0f}/s"
            f" {r['p50_ms']:>8.2f}ms {r['p99_ms']:>8.2f}ms"
        )
    if "celery" in results:
        for mode in ("one", "batch"):
            ratio = (
                results["tasker"][f"{mode}_throughput"] / results["celery"][f"{mode}_throughput"]
            )
            print(f"tasker / celery end-to-end throughput, {mode}: {ratio:.1f}x")
    client.close()


if __name__ == "__main__":
    main()
