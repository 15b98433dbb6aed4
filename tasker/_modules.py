"""Ready-made modules: a TaskManager, a generator that feeds it, a ``/metrics`` server.

Each implements :class:`tasker.Module`; wire them into a :class:`tasker.ServiceRunner`.
The generator and the metrics server depend on the manager module they are given, so
the runner starts the manager first and stops it last.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from tasker._errors import ManagerClosed
from tasker._manager import TaskManager
from tasker._validate import check_int, check_seconds

if TYPE_CHECKING:
    from tasker.prometheus import MetricsServer

__all__ = ["GeneratorModule", "ManagerModule", "MetricsModule"]

R = TypeVar("R")
E = TypeVar("E")


class ManagerModule(Generic[R, E]):
    """A :class:`TaskManager` as a module: made on ``start()``, stopped gracefully.

    Args:
        source: A factory ``() -> TaskManager`` (called in ``start()``), or a manager
            that is already running.
        name: The module's name.
        dependencies: Modules to start before this one.

    The module is ready once the manager is built (its base workers have their
    resources). ``stop(timeout)`` drains the manager; if workers are still running
    tasks when the time is up it raises ``TimeoutError`` saying how many.

    Example:
        >>> manager = tasker.ManagerModule(lambda: tasker.TaskManager(make_client, workers=4))
    """

    def __init__(
        self,
        source: TaskManager[R, E] | Callable[[], TaskManager[R, E]],
        *,
        name: str = "manager",
        dependencies: Sequence[str] = (),
    ) -> None:
        if isinstance(source, TaskManager):
            self._factory: Callable[[], TaskManager[R, E]] | None = None
            self._manager: TaskManager[R, E] | None = source
        elif callable(source):
            self._factory, self._manager = source, None
        else:
            raise TypeError(
                f"source must be a TaskManager or a factory returning one (got source={source!r})"
            )
        self.name = name
        self.dependencies = tuple(dependencies)
        self._ready = threading.Event()

    @property
    def manager(self) -> TaskManager[R, E]:
        """The running manager (raises ``RuntimeError`` before ``start()``)."""
        if self._manager is None:
            raise RuntimeError(f"module {self.name!r} is not started: it has no manager yet")
        return self._manager

    def start(self) -> None:
        if self._manager is None:
            assert self._factory is not None
            manager = self._factory()
            if not isinstance(manager, TaskManager):
                raise TypeError(
                    f"the factory of module {self.name!r} must return a TaskManager "
                    f"(got {manager!r})"
                )
            self._manager = manager
        self._ready.set()

    def wait_ready(self, timeout: float | None) -> bool:
        return self._ready.wait(timeout)

    def stop(self, timeout: float | None) -> None:
        manager = self._manager
        if manager is None:
            return
        manager.stop(timeout)
        stats = manager.stats()
        if stats.active_workers:
            raise TimeoutError(
                f"task manager {manager.name!r} still running {stats.busy_workers} task(s) "
                f"on {stats.active_workers} worker(s), {stats.queued_tasks + stats.priority_tasks}"
                f" queued, after {_seconds(timeout)}"
            )

    def __repr__(self) -> str:
        return f"<ManagerModule {self.name!r} {self._manager!r}>"


class GeneratorModule(Generic[R, E]):
    """Submits tasks to a manager module at a steady interval, forever or ``count`` times.

    Args:
        target: The :class:`ManagerModule` to feed (it becomes a dependency).
        submit: ``(manager, i) -> Future``; submits task number ``i`` (from 0) however it
            likes (``submit``, ``priority=True``, ``retry=``...) and returns its handle.
        count: Tasks to submit; 0 means until stopped.
        interval: Seconds between submissions (the pace holds without drift; after a
            stall it does not catch up in a burst).
        name: The module's name.
        dependencies: Extra modules to start before this one.

    ``finished`` is set once ``count`` tasks were submitted and every one of them has
    ended, so a :class:`ServiceRunner` running it ends by itself. ``submit`` errors are
    logged and counted in ``errors``; the generator ends quietly when the manager closes.
    """

    def __init__(
        self,
        target: ManagerModule[R, E],
        submit: Callable[[TaskManager[R, E], int], Future[Any]],
        *,
        count: int = 0,
        interval: float = 0.05,
        name: str = "generator",
        dependencies: Sequence[str] = (),
        logger: logging.Logger | None = None,
    ) -> None:
        if not isinstance(target, ManagerModule):
            raise TypeError(f"target must be a ManagerModule (got target={target!r})")
        if not callable(submit):
            raise TypeError(f"submit must be a callable (got submit={submit!r})")
        self._target = target
        self._submit = submit
        self.count = check_int("count", count, minimum=0)
        self.interval = check_seconds("interval", interval)
        self.name = name
        self.dependencies = (target.name, *(d for d in dependencies if d != target.name))
        self._log = logger or logging.getLogger("tasker.service")
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self.finished = threading.Event()
        self.submitted = 0
        self.ended = 0
        self.errors = 0
        self._done_submitting = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        manager = self._target.manager
        self._thread = threading.Thread(
            target=self._run, args=(manager,), name=f"{self.name}", daemon=True
        )
        self._thread.start()
        self._ready.set()

    def wait_ready(self, timeout: float | None) -> bool:
        return self._ready.wait(timeout)

    def _run(self, manager: TaskManager[R, E]) -> None:
        next_at = time.monotonic()
        i = 0
        while self.count == 0 or i < self.count:
            if self._stopping.wait(max(0.0, next_at - time.monotonic())):
                break
            try:
                handle = self._submit(manager, i)
            except ManagerClosed:
                break
            except Exception as exc:
                with self._lock:
                    self.errors += 1
                self._log.warning("generator %r: submitting task %d failed: %r", self.name, i, exc)
            else:
                with self._lock:
                    self.submitted += 1
                handle.add_done_callback(self._ended)
            i += 1
            now = time.monotonic()
            next_at = max(next_at + self.interval, now - self.interval)
        with self._lock:
            self._done_submitting = not self._stopping.is_set()
            self._check_finished()

    def _ended(self, _: Future[Any]) -> None:
        with self._lock:
            self.ended += 1
            self._check_finished()

    def _check_finished(self) -> None:
        """Set ``finished`` once every task is submitted and ended (``_lock`` held)."""
        if self._done_submitting and self.ended >= self.submitted:
            self.finished.set()

    def stop(self, timeout: float | None) -> None:
        self._stopping.set()
        thread = self._thread
        if thread is None:
            return
        thread.join(timeout)
        if thread.is_alive():
            raise TimeoutError(
                f"generator {self.name!r} still submitting (waiting for room in the queue) "
                f"after {_seconds(timeout)}"
            )

    def __repr__(self) -> str:
        return (
            f"<GeneratorModule {self.name!r} submitted={self.submitted} "
            f"count={self.count or 'unbounded'}>"
        )


class MetricsModule:
    """Serves ``/metrics`` (Prometheus) for one or more manager modules.

    Args:
        targets: The :class:`ManagerModule`\\ s to export (they become dependencies).
        port: Port to bind; 0 picks a free one (see ``url`` once started).
        host: Address to bind (default 127.0.0.1; ``0.0.0.0`` exposes it).
        name: The module's name.

    Ready once the server is listening.
    """

    def __init__(
        self,
        *targets: ManagerModule[Any, Any],
        port: int = 0,
        host: str = "127.0.0.1",
        name: str = "metrics",
    ) -> None:
        if not targets:
            raise ValueError("MetricsModule needs at least one ManagerModule to export")
        for target in targets:
            if not isinstance(target, ManagerModule):
                raise TypeError(f"targets must be ManagerModules (got {target!r})")
        check_int("port", port, minimum=0)
        if port > 65535:
            raise ValueError(f"port must be an int in 0..65535 (got port={port!r})")
        self._targets = targets
        self.port = port
        self.host = host
        self.name = name
        self.dependencies = tuple(t.name for t in targets)
        self._server: MetricsServer | None = None
        self._ready = threading.Event()

    @property
    def url(self) -> str:
        """The address to scrape (raises ``RuntimeError`` before ``start()``)."""
        if self._server is None:
            raise RuntimeError(f"module {self.name!r} is not started: no URL yet")
        return self._server.url

    def start(self) -> None:
        from tasker.prometheus import serve_metrics

        managers = [t.manager for t in self._targets]
        self._server = serve_metrics(*managers, port=self.port, host=self.host)
        self._ready.set()

    def wait_ready(self, timeout: float | None) -> bool:
        return self._ready.wait(timeout)

    def stop(self, timeout: float | None) -> None:
        if self._server is not None:
            self._server.close()  # polls for shutdown every 50 ms: well inside any budget

    def __repr__(self) -> str:
        where = self._server.url if self._server else f"{self.host}:{self.port}"
        return f"<MetricsModule {self.name!r} {where}>"


def _seconds(timeout: float | None) -> str:
    return "waiting without a limit" if timeout is None else f"{timeout:.2f}s"
