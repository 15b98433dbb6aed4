"""Factories for ``tasker run tests.cli_factories:NAME`` (loaded by the CLI under test)."""

from __future__ import annotations

import threading
from typing import Any

import tasker


class Conn:
    """A stand-in resource."""


def manager() -> tasker.TaskManager[Conn, int]:
    """A bare TaskManager: the service runs until SIGINT/SIGTERM."""
    return tasker.TaskManager(Conn, workers=1, burst_interval=None, name="helper")


def configured(config: tasker.ServiceConfig) -> tasker.TaskManager[Conn, int]:
    """Takes the configuration: the TASKER_* variables reach the manager."""
    print(f"factory got workers={config.workers} max_workers={config.max_workers}", flush=True)
    return tasker.TaskManager(Conn, name="configured", **config.manager_kwargs())


def finite_modules(config: tasker.ServiceConfig) -> list[tasker.Module]:
    """A manager and a generator of five tasks: the service ends by itself."""
    module: tasker.ManagerModule[Conn, int] = tasker.ManagerModule(
        lambda: tasker.TaskManager(Conn, workers=1, burst_interval=None, name="finite")
    )
    generator = tasker.GeneratorModule(
        module, lambda m, i: m.submit(lambda conn: i), count=5, interval=0.001
    )
    return [generator, module]  # in the wrong order on purpose: the runner sorts them


def stuck() -> tasker.TaskManager[Conn, Any]:
    """A manager running a task that ignores cancellation and outlives any budget."""
    m: tasker.TaskManager[Conn, Any] = tasker.TaskManager(
        Conn, workers=1, burst_interval=None, name="stuck"
    )

    def hang(conn: Conn) -> None:
        print("stuck task started", flush=True)
        threading.Event().wait(60)

    m.submit(hang, name="hang")
    return m


def cyclic() -> list[tasker.Module]:
    """Two modules that depend on each other."""
    a: tasker.ManagerModule[Conn, int] = tasker.ManagerModule(
        lambda: tasker.TaskManager(Conn), name="a", dependencies=["b"]
    )
    b: tasker.ManagerModule[Conn, int] = tasker.ManagerModule(
        lambda: tasker.TaskManager(Conn), name="b", dependencies=["a"]
    )
    return [a, b]


def not_a_service() -> int:
    return 42


def broken() -> tasker.TaskManager[Conn, int]:
    raise RuntimeError("database is down")


NOT_CALLABLE = 7
