"""Running a worker from the command line: ``package.module:app`` to a running worker.

:func:`run_worker` is what ``tasker worker package.module:app`` calls;
:func:`main` is a small argument parser over it (also ``python -m tasker.distributed``),
with ``dead-letters`` to list, re-drive or purge the dead-letter stream.
"""

from __future__ import annotations

import argparse
import importlib
import json
import signal
import sys
import threading
import time
from collections.abc import Sequence
from types import FrameType
from typing import Any, TextIO

from tasker.distributed._app import App

__all__ = ["load_app", "main", "run_worker"]


def load_app(target: str) -> App:
    """Import ``package.module:name``; ``name`` is an :class:`App` or a function
    returning one.

    Raises:
        ValueError: The target is malformed, cannot be imported, or is not an App (the
            message says which; a CLI prints it as one line).
    """
    if not isinstance(target, str) or target.count(":") != 1:
        raise ValueError(f"target must look like package.module:app (got {target!r})")
    module_name, attr = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(
            f"cannot import module {module_name!r} of target {target!r}: {exc}"
        ) from exc
    try:
        value: Any = getattr(module, attr)
    except AttributeError:
        raise ValueError(f"module {module_name!r} has no attribute {attr!r}") from None
    if not isinstance(value, App) and callable(value):
        value = value()
    if not isinstance(value, App):
        raise ValueError(
            f"{target} must be a tasker.distributed.App or a function returning one "
            f"(got {type(value).__name__})"
        )
    return value


def run_worker(
    target: str | App,
    *,
    queues: Sequence[str] | None = None,
    workers: int | None = None,
    max_workers: int | None = None,
    prefetch: int = 0,
    metrics_port: int | None = None,
    metrics_host: str = "127.0.0.1",
    shutdown_timeout: float | None = 30.0,
    stop: threading.Event | None = None,
    handle_signals: bool = True,
    out: TextIO | None = None,
    **worker_options: Any,
) -> int:
    """Run a worker of ``target`` until SIGINT/SIGTERM (or ``stop`` is set).

    Prints one line when the worker is ready (``worker ... ready``), and a block
    starting with ``Summary`` when it has stopped. ``/metrics`` is served on
    ``metrics_host:metrics_port`` if a port is given (0 picks a free one).

    Returns:
        The exit status: 0 after a graceful stop, 1 if the shutdown overran
        ``shutdown_timeout`` (the summary names what was still held).

    Raises:
        ValueError: ``target`` cannot be loaded (see :func:`load_app`).
    """
    out = out or sys.stdout
    app = target if isinstance(target, App) else load_app(target)
    stop = stop or threading.Event()
    options = dict(worker_options)
    if queues is not None:
        options["queues"] = list(queues)
    if workers is not None:
        options["workers"] = workers
    if max_workers is not None:
        options["max_workers"] = max_workers
    previous = _install_signals(stop) if handle_signals else {}
    server = None
    try:
        worker = app.worker(prefetch=prefetch, **options)
        try:
            if metrics_port is not None:
                from prometheus_client import CollectorRegistry

                from tasker.distributed._metrics import WorkerCollector
                from tasker.prometheus import serve_metrics

                registry = CollectorRegistry(auto_describe=True)
                registry.register(WorkerCollector(worker))
                server = serve_metrics(
                    worker.manager, port=metrics_port, host=metrics_host, registry=registry
                )
            where = f", metrics at {server.url}" if server is not None else ""
            print(
                f"worker {worker.name!r} ready: consumer {worker.consumer}, queues "
                f"{', '.join(worker.queues)}, tasks {', '.join(sorted(app.tasks))}{where}",
                file=out,
                flush=True,
            )
            began = time.monotonic()
            stop.wait()
            print("stopping: finishing and acknowledging held messages ...", file=out, flush=True)
            worker.stop(shutdown_timeout)
        finally:
            if server is not None:
                server.close()
        stats = worker.stats()
        print(
            f"Summary: worker {worker.name!r} ran {time.monotonic() - began:.1f}s\n"
            f"  received {stats.received} (redelivered {stats.redelivered}), completed "
            f"{stats.completed}, failed {stats.failed}, retried {stats.retried}, "
            f"dead-lettered {stats.dead_lettered}, broker errors {stats.broker_errors}",
            file=out,
            flush=True,
        )
        if stats.unacked or stats.in_flight:
            print(
                f"  shutdown overran {shutdown_timeout}s: {stats.in_flight} tasks still "
                f"running, {stats.unacked} messages left for redelivery",
                file=out,
                flush=True,
            )
            return 1
        return 0
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _install_signals(stop: threading.Event) -> dict[int, Any]:
    if threading.current_thread() is not threading.main_thread():
        return {}

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous: dict[int, Any] = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        previous[signum] = signal.signal(signum, handler)
    return previous


def main(argv: Sequence[str] | None = None) -> int:
    """``worker TARGET [options]`` or ``dead-letters TARGET [--redrive|--purge] [IDS]``.

    Errors in the arguments or the target are one line on stderr and exit status 2.
    """
    parser = argparse.ArgumentParser(prog="tasker", description="tasker distributed mode")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("worker", help="run a worker of package.module:app")
    run.add_argument("target", help="package.module:app")
    run.add_argument("-Q", "--queues", help="comma-separated queues (default: the app's)")
    run.add_argument("--workers", type=int, help="base workers (threads, one resource each)")
    run.add_argument("--max-workers", type=int, help="cap with burst workers")
    run.add_argument("--prefetch", type=int, default=0, help="messages held beyond max-workers")
    run.add_argument("--metrics-port", type=int, help="serve /metrics on this port")
    run.add_argument("--shutdown-timeout", type=float, default=30.0, help="seconds")
    dead = commands.add_parser("dead-letters", help="list, re-drive or purge dead letters")
    dead.add_argument("target", help="package.module:app")
    action = dead.add_mutually_exclusive_group()
    action.add_argument("--redrive", action="store_true", help="publish them again")
    action.add_argument("--purge", action="store_true", help="delete them")
    dead.add_argument("ids", nargs="*", help="dead-letter ids (default: all)")
    args = parser.parse_args(argv)
    try:
        app = load_app(args.target)
    except ValueError as exc:
        print(f"tasker: {exc}", file=sys.stderr)
        return 2
    if args.command == "worker":
        queues = args.queues.split(",") if args.queues else None
        try:
            return run_worker(
                app,
                queues=queues,
                workers=args.workers,
                max_workers=args.max_workers,
                prefetch=args.prefetch,
                metrics_port=args.metrics_port,
                shutdown_timeout=args.shutdown_timeout,
            )
        except (TypeError, ValueError) as exc:
            print(f"tasker: {exc}", file=sys.stderr)
            return 2
    ids = args.ids or None
    if args.redrive:
        print(f"re-drove {app.redrive(ids)} dead letters")
    elif args.purge:
        print(f"purged {app.purge_dead_letters(ids)} dead letters")
    else:
        for letter in app.dead_letters(1000):
            if ids is None or letter.id in ids:
                print(
                    json.dumps(
                        {
                            "id": letter.id,
                            "queue": letter.queue,
                            "task_id": letter.task_id,
                            "reason": letter.reason,
                            "deliveries": letter.deliveries,
                            "failed_at": letter.failed_at,
                            "body": letter.body.decode(errors="replace")[:500],
                        }
                    )
                )
    return 0
