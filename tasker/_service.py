"""Modules with dependencies, started in order and stopped in reverse: the service runner.

Lifecycle of a :class:`ServiceRunner`::

    NEW ──start()──► STARTING ──(every module ready)──► RUNNING
                        │ a module raised or was not ready in time         │
                        ▼                                                  │ stop(), SIGINT,
                     STOPPING ◄────────────────────────────────────────────┘ SIGTERM, every
                        │  reverse order, one shutdown budget for all       finite module done
                        ▼
                     STOPPED (a StopReport says what stopped, failed or overran)

A module's ``start`` and ``stop`` run on a helper thread that the runner waits for with
a deadline, so a module that hangs is reported and left behind instead of hanging the
modules after it. Python cannot kill a thread: a hung call keeps its (daemon) thread
until it returns.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import signal
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Protocol, runtime_checkable

from tasker._errors import TaskerError
from tasker._validate import check_seconds

__all__ = ["FiniteModule", "Module", "ModuleError", "ServiceRunner", "StopReport"]

# A module whose budget was used up by an earlier one still gets this long to return
# from stop(): enough to start its own shutdown (a manager's stop(0) returns at once).
_MIN_STOP_WAIT = 0.1
# A module is asked to finish this much before the runner stops waiting for it, so one
# that honours its timeout has the time to return and say what it left running.
_STOP_MARGIN = 0.1
_TICK = 0.1  # how often run() looks at finite modules; signals wake it at once anyway


@runtime_checkable
class Module(Protocol):
    """A part of a service that the :class:`ServiceRunner` starts and stops.

    ``start()`` should launch the module's work and return; ``wait_ready(timeout)``
    returns True once it can serve (a manager whose workers have their resources, a
    server that is listening), False if ``timeout`` passed first. ``stop(timeout)``
    stops it within ``timeout`` seconds and raises ``TimeoutError`` (naming what is
    still running) if it could not. Modules named in ``dependencies`` start before and
    stop after this one.

    Example:
        >>> class Cache:
        ...     name, dependencies = "cache", ("manager",)
        ...     def start(self) -> None: ...
        ...     def wait_ready(self, timeout: float | None) -> bool: return True
        ...     def stop(self, timeout: float | None) -> None: ...
    """

    @property
    def name(self) -> str: ...

    @property
    def dependencies(self) -> Sequence[str]: ...

    def start(self) -> None: ...

    def wait_ready(self, timeout: float | None) -> bool: ...

    def stop(self, timeout: float | None) -> None: ...


@runtime_checkable
class FiniteModule(Module, Protocol):
    """A module whose work can end by itself (a generator with a count).

    ``finished`` is set when it is done. :meth:`ServiceRunner.run` ends once every
    finite module of the service has finished (a service with none runs until stopped).
    """

    @property
    def finished(self) -> threading.Event: ...


class ModuleError(TaskerError, RuntimeError):
    """A module raised in ``start()``, or was not ready within the start timeout.

    ``module`` is its name; ``__cause__`` is what it raised, if it raised. The modules
    started before it were stopped (in reverse order) before this was raised, and
    :meth:`ServiceRunner.stop` returns the report of that stop.
    """

    def __init__(self, message: str, *, module: str) -> None:
        super().__init__(message)
        self.module = module


@dataclass(frozen=True)
class StopReport:
    """How a service stopped.

    Attributes:
        reason: Why it stopped: ``"SIGINT"``, ``"SIGTERM"``, ``"generator finished"``,
            ``"stop() called"``, ``"module 'x' failed to start"``, or what was passed to
            :meth:`ServiceRunner.request_stop`.
        stopped: Modules that stopped cleanly, in the order they stopped.
        failed: Module name -> the exception its ``stop()`` raised.
        overran: Module name -> what was still running when the budget ran out (its
            ``stop()`` raised ``TimeoutError`` or did not return in time).
        elapsed: Seconds the whole stop took.
        budget: The shutdown budget in seconds.
    """

    reason: str
    stopped: tuple[str, ...] = ()
    failed: Mapping[str, BaseException] = field(default_factory=dict)
    overran: Mapping[str, str] = field(default_factory=dict)
    elapsed: float = 0.0
    budget: float = 0.0

    @property
    def ok(self) -> bool:
        """True if every module stopped cleanly within the budget."""
        return not self.failed and not self.overran

    def problems(self) -> list[str]:
        """One line per module that failed to stop or overran the budget."""
        lines = [f"{name}: {text}" for name, text in self.overran.items()]
        lines += [f"{name}: stop() raised {exc!r}" for name, exc in self.failed.items()]
        return lines


class _State(enum.Enum):
    NEW = "new"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


def _ordered(modules: Sequence[Module]) -> list[Module]:
    """Dependency order (dependencies first), stable in the given order otherwise.

    Raises:
        ValueError: Duplicate names, an unknown dependency, or a cycle; the message
            names the modules involved.
    """
    by_name: dict[str, Module] = {}
    for module in modules:
        if module.name in by_name:
            raise ValueError(f"two modules are named {module.name!r}: module names must be unique")
        by_name[module.name] = module
    for module in modules:
        unknown = [d for d in module.dependencies if d not in by_name]
        if unknown:
            raise ValueError(
                f"module {module.name!r} depends on unknown module(s) "
                f"{', '.join(repr(d) for d in unknown)} (known: {', '.join(sorted(by_name))})"
            )
    order: list[Module] = []
    done: set[str] = set()
    visiting: list[str] = []

    def visit(module: Module) -> None:
        if module.name in done:
            return
        if module.name in visiting:
            cycle = [*visiting[visiting.index(module.name) :], module.name]
            raise ValueError(f"module dependencies form a cycle: {' -> '.join(cycle)}")
        visiting.append(module.name)
        for dependency in module.dependencies:
            visit(by_name[dependency])
        visiting.pop()
        done.add(module.name)
        order.append(module)

    for module in modules:
        visit(module)
    return order


class ServiceRunner:
    """Starts modules in dependency order and stops them in reverse within a budget.

    Args:
        modules: The modules; names must be unique and dependencies known and acyclic.
        shutdown_timeout: Seconds that stopping every module may take in all. A module
            that overruns it is reported and left behind; the rest are still stopped.
        start_timeout: Seconds each module has to return from ``start()`` and be ready.
        logger: Where start/stop events and problems go (default
            ``logging.getLogger("tasker.service")``).

    Raises:
        TypeError: Something in ``modules`` is not a :class:`Module`.
        ValueError: Duplicate names, an unknown dependency or a cycle, naming them.

    Example:
        >>> manager = tasker.ManagerModule(lambda: tasker.TaskManager(make_client))
        >>> runner = tasker.ServiceRunner([manager, tasker.MetricsModule(manager)])
        >>> report = runner.run()  # until SIGINT/SIGTERM; then stops in reverse order
    """

    def __init__(
        self,
        modules: Iterable[Module],
        *,
        shutdown_timeout: float = 10.0,
        start_timeout: float = 10.0,
        logger: logging.Logger | None = None,
    ) -> None:
        given = list(modules)
        for module in given:
            if not isinstance(module, Module):
                raise TypeError(
                    "modules must implement tasker.Module (name, dependencies, start, "
                    f"wait_ready, stop) (got {module!r})"
                )
        self._modules = _ordered(given)
        self.shutdown_timeout = check_seconds("shutdown_timeout", shutdown_timeout)
        self.start_timeout = check_seconds("start_timeout", start_timeout)
        self._log = logger or logging.getLogger("tasker.service")
        self._lock = threading.Lock()
        self._state = _State.NEW
        self._started: list[Module] = []
        self._stop_requested = threading.Event()
        self._reason: str | None = None
        self._report: StopReport | None = None
        self._stopped = threading.Event()

    @property
    def modules(self) -> tuple[Module, ...]:
        """The modules in start order (dependencies first)."""
        return tuple(self._modules)

    @property
    def stop_reason(self) -> str | None:
        """Why a stop was requested, or None while none was."""
        return self._reason

    # -- starting ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start every module in dependency order, waiting for each to be ready.

        A stop requested meanwhile (a signal, :meth:`request_stop`) ends the start
        after the current module, without an error.

        Raises:
            ModuleError: A module raised in ``start()`` or was not ready within
                ``start_timeout``; the modules started so far were stopped first.
            RuntimeError: The runner was already started.
        """
        with self._lock:
            if self._state is not _State.NEW:
                raise RuntimeError(f"service runner already {self._state.value}: start() is once")
            self._state = _State.STARTING
        for module in self._modules:
            if self._stop_requested.is_set():
                break
            with self._lock:
                self._started.append(module)  # stop() covers a half-started module too
            error = self._start_one(module)
            if error is not None:
                self.request_stop(f"module {module.name!r} failed to start")
                self.stop()
                raise error
        with self._lock:
            if self._state is _State.STARTING:
                self._state = _State.RUNNING
        if not self._stop_requested.is_set():
            self._log.info("service started: %s", ", ".join(m.name for m in self._modules))

    def _start_one(self, module: Module) -> ModuleError | None:
        timeout = self.start_timeout
        outcome: list[BaseException | bool] = []

        def start() -> None:
            try:
                module.start()
                outcome.append(module.wait_ready(timeout))
            except BaseException as exc:
                outcome.append(exc)

        thread = threading.Thread(target=start, name=f"start-{module.name}", daemon=True)
        thread.start()
        thread.join(timeout + _MIN_STOP_WAIT)
        if not outcome:
            return ModuleError(
                f"module {module.name!r} did not start within {timeout:g}s", module=module.name
            )
        result = outcome[0]
        if isinstance(result, BaseException):
            self._log.error("module %r failed to start: %r", module.name, result)
            error = ModuleError(
                f"module {module.name!r} failed to start: {result!r}", module=module.name
            )
            error.__cause__ = result
            return error
        if not result:
            return ModuleError(
                f"module {module.name!r} was not ready within {timeout:g}s", module=module.name
            )
        self._log.info("module %r ready", module.name)
        return None

    # -- running ----------------------------------------------------------------------------

    def request_stop(self, reason: str = "stop requested") -> None:
        """Ask :meth:`run`/:meth:`wait` to end; thread-safe, the first reason is kept."""
        with self._lock:
            if self._reason is None:
                self._reason = reason
        self._stop_requested.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until a stop is requested or every finite module has finished.

        Returns:
            True if the service should stop now, False if ``timeout`` passed first.
        """
        finite = [m for m in self._modules if isinstance(m, FiniteModule)]
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if finite and all(m.finished.is_set() for m in finite):
                self.request_stop(f"{', '.join(m.name for m in finite)} finished")
            remaining = None if deadline is None else deadline - time.monotonic()
            tick = _TICK if remaining is None else max(0.0, min(_TICK, remaining))
            if self._stop_requested.wait(tick):
                return True
            if remaining is not None and remaining <= tick:
                return self._stop_requested.is_set()

    @contextlib.contextmanager
    def handling_signals(self) -> Iterator[None]:
        """Within the block, SIGINT and SIGTERM request a graceful stop.

        The previous handlers come back on exit. Outside the main thread (where Python
        cannot install handlers) it does nothing.
        """
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self._stop_requested.is_set():
            self._log.warning(
                "%s received while stopping: still stopping within the %gs budget",
                name,
                self.shutdown_timeout,
            )
            return
        self._log.info("%s received: stopping gracefully", name)
        self.request_stop(name)

    def run(self, *, handle_signals: bool = True) -> StopReport:
        """Start, wait for a stop (signal, :meth:`request_stop`, finite modules done), stop.

        Args:
            handle_signals: Turn SIGINT/SIGTERM into a graceful stop while running.

        Raises:
            ModuleError: A module failed to start (the others were stopped).
        """
        signals = self.handling_signals() if handle_signals else contextlib.nullcontext()
        with signals:
            try:
                self.start()
                self.wait()
            finally:
                report = self.stop()
        return report

    # -- stopping ---------------------------------------------------------------------------

    def stop(self, timeout: float | None = None) -> StopReport:
        """Stop the started modules in reverse order within ``timeout`` seconds in all.

        Idempotent: a second call (or a concurrent one) waits for the first and returns
        its report. A module whose ``stop()`` raises or overruns is reported in the
        result and logged; the modules after it are still stopped.

        Args:
            timeout: The budget (default ``shutdown_timeout``).
        """
        budget = self.shutdown_timeout if timeout is None else check_seconds("timeout", timeout)
        with self._lock:
            if self._state in (_State.STOPPING, _State.STOPPED):
                first = False
            else:
                first = True
                self._state = _State.STOPPING
                if self._reason is None:
                    self._reason = "stop() called"
                started = list(reversed(self._started))
        if not first:
            self._stopped.wait()
            assert self._report is not None
            return self._report
        self._stop_requested.set()
        began = time.monotonic()
        deadline = began + budget
        stopped: list[str] = []
        failed: dict[str, BaseException] = {}
        overran: dict[str, str] = {}
        for module in started:
            remaining = max(deadline - time.monotonic(), 0.0)
            outcome = self._stop_one(module, remaining)
            if outcome is None:
                stopped.append(module.name)
            elif isinstance(outcome, str):
                overran[module.name] = outcome
                self._log.warning("module %r overran the shutdown budget: %s", module.name, outcome)
            else:
                failed[module.name] = outcome
                self._log.error("module %r failed to stop: %r", module.name, outcome)
        assert self._reason is not None
        report = StopReport(
            reason=self._reason,
            stopped=tuple(stopped),
            failed=failed,
            overran=overran,
            elapsed=time.monotonic() - began,
            budget=budget,
        )
        with self._lock:
            self._report = report
            self._state = _State.STOPPED
        self._stopped.set()
        self._log.info("service stopped (%s) in %.2fs", report.reason, report.elapsed)
        return report

    def _stop_one(self, module: Module, remaining: float) -> BaseException | str | None:
        """Stop one module; None if it stopped, an error, or a text saying what overran."""
        outcome: list[BaseException | None] = []

        asked = max(remaining - _STOP_MARGIN, 0.0)

        def stop() -> None:
            try:
                module.stop(asked)
                outcome.append(None)
            except BaseException as exc:
                outcome.append(exc)

        thread = threading.Thread(target=stop, name=f"stop-{module.name}", daemon=True)
        thread.start()
        thread.join(max(remaining, _MIN_STOP_WAIT))
        if not outcome:
            return f"stop() still running after {remaining:.2f}s (budget used up)"
        result = outcome[0]
        if isinstance(result, TimeoutError):
            return str(result) or f"did not stop within {remaining:.2f}s"
        return result

    # -- context manager --------------------------------------------------------------------

    def __enter__(self) -> ServiceRunner:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        names = ", ".join(m.name for m in self._modules)
        return f"<ServiceRunner {self._state.value} [{names}]>"


def describe_stop(report: StopReport, *, details: bool = True) -> str:
    """One line: how the service stopped (and, with ``details``, each problem)."""
    if report.ok:
        return f"stopped gracefully ({report.reason}) in {report.elapsed:.2f}s"
    what = f"overran its {report.budget:g}s budget" if report.overran else "failed"
    head = f"shutdown {what} ({report.reason})"
    return head + ": " + "; ".join(report.problems()) if details else head
