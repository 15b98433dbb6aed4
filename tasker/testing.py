"""Helpers for testing code that uses tasker (and tasker itself).

- :class:`FakeClock`: a monotonic clock that moves only when told, for exact tests of
  metric windows, rates and policies.
- :func:`wait_until`: wait for a condition with a deadline instead of sleeping and
  hoping.
- :class:`Resources`: ``on_create``/``on_destroy`` that count what they made and can be
  told to fail, to check that nothing leaks.
"""

from __future__ import annotations

import itertools
import sys
import threading
import time
from collections.abc import Callable

__all__ = ["FakeClock", "Gate", "Resource", "Resources", "is_blocked", "wait_until"]


class FakeClock:
    """A clock for tests: call it for the time; ``advance`` moves it.

    Example:
        >>> clock = FakeClock()
        >>> collector = tasker.DefaultCollector(clock=clock)
        >>> clock.advance(1.5)
        >>> clock()
        1001.5
    """

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._lock = threading.Lock()
        self._listeners: list[Callable[[], object]] = []

    def __call__(self) -> float:
        return self._now

    def subscribe(self, listener: Callable[[], object]) -> None:
        """Call ``listener()`` whenever the clock moves (tasker's timer wakes up this way)."""
        with self._lock:
            self._listeners.append(listener)

    def _moved(self) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            listener()

    def advance(self, seconds: float) -> float:
        """Move the clock forward by ``seconds`` and return the new time."""
        if seconds < 0:
            raise ValueError(f"a monotonic clock cannot go back (got seconds={seconds!r})")
        with self._lock:
            self._now += seconds
            now = self._now
        self._moved()
        return now

    def set(self, now: float) -> None:
        """Jump to ``now`` (not earlier than the current time)."""
        with self._lock:
            if now < self._now:
                raise ValueError(f"a monotonic clock cannot go back (got {now} < {self._now})")
            self._now = now
        self._moved()


def wait_until(predicate: Callable[[], object], timeout: float = 10.0, message: str = "") -> None:
    """Return as soon as ``predicate()`` is true; raise ``AssertionError`` after ``timeout``.

    Polls with a short, growing pause. For conditions that nothing can signal directly
    (a thread exiting, a counter reaching a value).
    """
    deadline = time.monotonic() + timeout
    pause = 0.0005
    while not predicate():
        if time.monotonic() >= deadline:
            raise AssertionError(message or f"condition not met within {timeout}s: {predicate}")
        time.sleep(pause)
        pause = min(pause * 2, 0.02)


def is_blocked(thread: threading.Thread, inside: Callable[..., object] | None = None) -> bool:
    """True if ``thread`` is asleep in a blocking wait (optionally, inside ``inside``).

    Recognises the ways tasker and ``threading`` block: a Condition/Event wait, and a
    :class:`~tasker.TaskHandle` waiting for its result. Use it to know that a thread
    has really parked (in ``submit`` on a full queue, in ``result()``...) before acting.
    """
    from tasker._handle import TaskHandle

    frame = sys._current_frames().get(thread.ident or -1)
    if frame is None:
        return False
    parked = frame.f_code is TaskHandle._wait_done.__code__
    found = inside is None
    while frame is not None:
        code = frame.f_code
        if code.co_filename == threading.__file__ and code.co_name == "wait":
            parked = True
        if inside is not None and code is getattr(inside, "__code__", None):
            found = True
        frame = frame.f_back
    return parked and found


class Gate:
    """A task that holds its worker until ``release()``, or until it is cancelled.

    Submit it to occupy a worker for as long as a test needs; ``started`` tells when it
    runs. It returns ``result`` (default ``"released"``).

    Example:
        >>> gate = Gate()
        >>> manager.submit(gate)
        >>> gate.started.wait()      # the only worker is busy now
        >>> ...                      # queue more work, check stats()
        >>> gate.release()
    """

    def __init__(self, result: object = "released") -> None:
        self.started = threading.Event()
        self._release = threading.Event()
        self.result = result

    def __call__(self, resource: object) -> object:
        from tasker._context import current_task

        self.started.set()
        context = current_task()
        cancelled = context.cancelled if context is not None else threading.Event()
        while not (self._release.is_set() or cancelled.is_set()):
            self._release.wait(0.01)  # two events to watch: poll the second briefly
        return self.result

    def release(self) -> None:
        """Let the task return."""
        self._release.set()


class Resource:
    """A fake resource made by :class:`Resources`."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.thread = threading.current_thread().name
        self.destroyed = False

    def __repr__(self) -> str:
        return f"<Resource {self.number}{' destroyed' if self.destroyed else ''}>"


class Resources:
    """Counting ``on_create``/``on_destroy`` with fault injection.

    Args:
        fail_creates: Make the n-th calls of ``create`` (1-based) raise.
        fail_destroys: Make every ``destroy`` raise (after counting it).

    Example:
        >>> res = Resources()
        >>> manager = tasker.TaskManager(res.create, on_destroy=res.destroy)
        >>> manager.stop()
        >>> assert res.created == res.destroyed
    """

    def __init__(
        self, *, fail_creates: set[int] | None = None, fail_destroys: bool = False
    ) -> None:
        self._lock = threading.Lock()
        self._calls = itertools.count(1)
        self.fail_creates = set(fail_creates or ())
        self.fail_destroys = fail_destroys
        self.made: list[Resource] = []
        self.destroyed_list: list[Resource] = []

    def create(self) -> Resource:
        call = next(self._calls)
        if call in self.fail_creates:
            raise ConnectionError(f"cannot create resource (call {call})")
        resource = Resource(call)
        with self._lock:
            self.made.append(resource)
        return resource

    def destroy(self, resource: Resource) -> None:
        with self._lock:
            if resource.destroyed:
                raise AssertionError(f"{resource!r} destroyed twice")
            resource.destroyed = True
            self.destroyed_list.append(resource)
        if self.fail_destroys:
            raise OSError(f"cannot close {resource!r}")

    @property
    def created(self) -> int:
        return len(self.made)

    @property
    def destroyed(self) -> int:
        return len(self.destroyed_list)

    @property
    def live(self) -> int:
        return self.created - self.destroyed
