"""Composition: chains of tasks and a dispatcher that feeds a manager in batches.

A chain is a sequence of ordinary tasks: each link is submitted when the previous one
completes, with its result, so each link has its own id, state and retries, and holds
a worker only while it runs. The chain's own handle ends with the last link's result,
the first error that a link's retries did not absorb, or cancellation.

A dispatcher moves callables from an iterable or a ``queue.Queue`` into the manager in
batches (``submit_many``: one lock round per batch), flushing a partial batch after
``flush_interval`` and on ``stop()``; nothing it took from its source is dropped
silently: what could not be submitted is counted in ``failed`` and logged.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from tasker._handle import TaskHandle
from tasker._validate import check_int, check_seconds

if TYPE_CHECKING:
    from tasker._manager import TaskManager

__all__ = ["Chain", "Dispatcher"]

E = TypeVar("E")
_END: Any = object()  # the source is exhausted (our feeder's last word)
_WAKE: Any = object()  # stop() was called


class Chain:
    """Drives one chain; private. The caller holds ``handle``."""

    def __init__(
        self,
        manager: TaskManager[Any, Any],
        links: Sequence[Any],
        options: dict[str, Any],
        handle: TaskHandle[Any],
    ) -> None:
        self._m = manager
        self._links = links
        self._options = options
        self.handle = handle
        self._lock = threading.Lock()
        self._current: TaskHandle[Any] | None = None
        handle.add_done_callback(self._chain_done)

    def start(self) -> None:
        self._submit(0, None)

    def _submit(self, index: int, previous: Any) -> None:
        link = self._links[index]
        fn = link if index == 0 else _with_previous(link, previous)
        task = self._m._link_handle(fn, link, self._options)
        with self._lock:
            if self.handle.done():  # the chain was cancelled meanwhile
                self._m._cancel_waiting(task)
                return
            self._current = task
        task.add_done_callback(lambda done: self._link_done(index, done))
        self._m._enqueue_accepted(task, first=index == 0)

    def _link_done(self, index: int, task: Any) -> None:
        chain = self.handle
        if task.cancelled():
            if chain.cancel():
                self._m._cancel_waiting(chain)
            return
        error = task.exception()
        if error is not None:
            self._finish(error=error)
        elif index + 1 == len(self._links):
            self._finish(result=task.result())
        else:
            self._submit(index + 1, task.result())

    def _finish(self, *, result: Any = None, error: BaseException | None = None) -> None:
        chain = self.handle
        with chain._lock:
            if chain._state != "PENDING":
                return  # cancelled by its caller while the last link ran
            chain._state = "RUNNING"
        if error is not None:
            chain.set_exception(error)
        else:
            chain.set_result(result)
        self._m._registry.finished(chain)

    def _chain_done(self, chain: Any) -> None:
        if not chain.cancelled():
            return
        with self._lock:
            current = self._current
        if current is not None:
            current.cancel()  # a link not yet started never runs; a running one finishes
        self._m._cancel_waiting(chain)


def _with_previous(link: Any, previous: Any) -> Callable[[Any], Any]:
    # A later link gets the previous result: fn(resource, previous), or for a Work
    # object, execute(resource, previous).
    run = link if callable(link) else link.execute

    def call(resource: Any) -> Any:
        return run(resource, previous)

    call.__qualname__ = getattr(link, "__qualname__", "link")
    return call


class Dispatcher:
    """Feeds callables from a source into a manager in batches, on a background thread.

    Made by :meth:`TaskManager.dispatch`. An iterable source ends when exhausted; a
    ``queue.Queue`` source when it yields ``None`` or on :meth:`stop`.

    Attributes:
        submitted: Callables submitted so far.
        failed: Callables taken from the source that could not be submitted (the manager
            closed under the dispatcher).
    """

    def __init__(
        self,
        manager: TaskManager[Any, Any],
        source: Iterable[Callable[..., Any]] | queue.Queue[Any],
        *,
        batch_size: int,
        flush_interval: float,
        options: dict[str, Any],
    ) -> None:
        self._m = manager
        self._batch_size = check_int("batch_size", batch_size, minimum=1)
        self._flush_interval = check_seconds("flush_interval", flush_interval)
        self._options = options
        self.submitted = 0
        self.failed = 0
        self._stopping = threading.Event()
        self._feeder: threading.Thread | None = None
        if isinstance(source, queue.Queue):
            self._queue: queue.Queue[Any] = source
        elif isinstance(source, Iterable):
            # Pull a (possibly slow) iterable on its own thread, so a partial batch is
            # still flushed on time while the iterable makes the next item.
            self._queue = queue.Queue(maxsize=batch_size * 2)
            self._feeder = threading.Thread(
                target=self._feed,
                args=(source,),
                name=f"{manager.name}-dispatch-feed",
                daemon=True,
            )
        else:
            raise TypeError(
                f"source must be an iterable or a queue.Queue of callables (got {source!r})"
            )
        self._thread = threading.Thread(
            target=self._run, name=f"{manager.name}-dispatcher", daemon=True
        )

    def _start(self) -> None:
        if self._feeder is not None:
            self._feeder.start()
        self._thread.start()

    def stop(self) -> None:
        """Flush the partial batch now and end, whatever the source still holds.

        Items already taken from the source are submitted (or counted in ``failed``);
        items still in a ``queue.Queue`` source stay there.
        """
        self._stopping.set()
        if self._feeder is not None:
            self._queue.put(_WAKE)  # our own buffer: wake the dispatcher at once

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the dispatcher ended; False if ``timeout`` passed first."""
        self._thread.join(timeout)
        if self._feeder is not None and not self._thread.is_alive():
            self._feeder.join(timeout)
        return not self._thread.is_alive()

    @property
    def running(self) -> bool:
        """True until the source ended, ``stop()`` was called or the manager closed."""
        return self._thread.is_alive()

    def __repr__(self) -> str:
        return f"<Dispatcher submitted={self.submitted} failed={self.failed}>"

    def _feed(self, source: Iterable[Callable[..., Any]]) -> None:
        try:
            for item in source:
                self._queue.put(item)  # the dispatcher always drains, even when stopping
                if self._stopping.is_set():
                    return
        except Exception:
            self._m._log.exception("dispatcher source raised; ending the dispatch")
        finally:
            self._queue.put(_END)

    def _next(self, deadline: float | None) -> Any:
        """The next item, ``_END``/``_WAKE``, or None when the flush deadline came."""
        if self._feeder is None:
            # A caller's queue: nothing of ours may be put into it to wake a get(), so
            # look at the stop flag every 50 ms while waiting.
            if self._stopping.is_set():
                return _END
            step = 0.05 if deadline is None else min(0.05, max(0.0, deadline - time.monotonic()))
            try:
                item = self._queue.get(timeout=step)
            except queue.Empty:
                return None
            return _END if item is None else item
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def _run(self) -> None:
        batch: list[Callable[..., Any]] = []
        deadline: float | None = None
        while True:
            item = self._next(deadline)
            if item is None or item is _WAKE:
                due = deadline is not None and time.monotonic() >= deadline
                if batch and (due or item is _WAKE):  # flush on time, or at once on stop()
                    if not self._flush(batch):
                        return self._discard_buffer()
                    batch, deadline = [], None
                continue  # after stop(), read our buffer to the feeder's _END
            if item is _END:
                self._flush(batch)
                return None
            if not batch:
                deadline = time.monotonic() + self._flush_interval
            batch.append(item)
            if len(batch) >= self._batch_size:
                if not self._flush(batch):
                    return self._discard_buffer()
                batch, deadline = [], None

    def _discard_buffer(self) -> None:
        """The manager closed: count what the feeder already took as not submitted."""
        if self._feeder is None:
            return
        self._stopping.set()
        lost = 0
        while (item := self._queue.get()) is not _END:
            lost += item is not _WAKE
        if lost:
            self.failed += lost
            self._m._log.warning("dispatcher: %d more callables were not submitted", lost)

    def _flush(self, batch: list[Callable[..., Any]]) -> bool:
        """Submit ``batch``; False if the manager closed (the dispatcher must end)."""
        if not batch:
            return True
        try:
            handles, error = self._m._submit_batch(batch, self._options)
        except (TypeError, ValueError):
            if len(batch) == 1:
                self.failed += 1
                self._m._log.warning("dispatcher: %r is not a task; not submitted", batch[0])
                return True
            # A bad item refuses the whole batch: submit one by one to isolate it.
            return all(self._flush([item]) for item in batch)
        self.submitted += len(handles)
        if error is None:
            return True
        self.failed += len(batch) - len(handles)
        self._m._log.warning(
            "dispatcher: task manager %r closed; %d callables could not be submitted",
            self._m.name,
            len(batch) - len(handles),
        )
        self._stopping.set()
        return False
