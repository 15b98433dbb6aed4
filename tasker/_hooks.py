"""Lifecycle hooks: user objects told about each task's submit, start, retry and end.

A hook is any object with some of ``on_submit``, ``on_start``, ``on_retry``,
``on_success``, ``on_failure``, ``on_cancel``, each taking the task's
:class:`~tasker.TaskInfo`. On the way in (submit, start, retry) hooks run in list order;
on the way out (success, failure, cancel) in reverse, like nested context managers, so
a tracing hook first in the list opens the outermost span and closes it last.

A hook that raises is logged at WARNING and the remaining hooks still run; the task and
the worker never notice. With no hooks the task path pays one attribute test per event.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

from tasker._state import TaskInfo

if TYPE_CHECKING:
    from tasker._handle import TaskHandle
    from tasker._manager import Logger
    from tasker._registry import TaskRegistry

__all__ = ["Hook", "HookRunner", "Work", "check_hooks"]


class Hook(Protocol):
    """Documents the hook methods; implement any subset (none is required).

    Example:
        >>> class Timing:
        ...     def on_start(self, info: tasker.TaskInfo) -> None:
        ...         print("start", info.id)
        ...     def on_success(self, info: tasker.TaskInfo) -> None:
        ...         print("done", info.id, info.finished_at - info.started_at)
        >>> manager = tasker.TaskManager(make_conn, hooks=[Timing()])
    """


R_contra = TypeVar("R_contra", contravariant=True)
E_co = TypeVar("E_co", covariant=True)


@runtime_checkable
class Work(Protocol[R_contra, E_co]):
    """An object that can be submitted instead of a callable: ``execute(resource)``.

    An optional ``name`` attribute becomes the task's name.

    Example:
        >>> class Resize:
        ...     name = "resize"
        ...     def __init__(self, image_id: int) -> None:
        ...         self.image_id = image_id
        ...     def execute(self, client: ImageClient) -> bytes:
        ...         return client.resize(self.image_id)
        >>> manager.submit(Resize(7)).result()
    """

    def execute(self, resource: R_contra, /) -> E_co:
        """Run the work on the worker's resource and return its result."""
        ...


_EVENTS = ("on_submit", "on_start", "on_retry", "on_success", "on_failure", "on_cancel")
_REVERSED = {"on_success", "on_failure", "on_cancel"}

HookMethod = Callable[[TaskInfo], object]


class HookRunner:
    """Calls the hooks of one manager; private to the runtime."""

    def __init__(self, hooks: Sequence[object], registry: TaskRegistry, log: Logger) -> None:
        self._registry = registry
        self._log = log
        methods: dict[str, list[HookMethod]] = {}
        for event in _EVENTS:
            found = [m for h in hooks if callable(m := getattr(h, event, None))]
            methods[event] = found[::-1] if event in _REVERSED else found
        # Empty lists are falsy: the runtime tests them before building a TaskInfo.
        self.submit_hooks = methods["on_submit"]
        self.start_hooks = methods["on_start"]
        self.retry_hooks = methods["on_retry"]
        self.success_hooks = methods["on_success"]
        self.failure_hooks = methods["on_failure"]
        self.cancel_hooks = methods["on_cancel"]

    def call(self, methods: list[HookMethod], handle: TaskHandle[Any]) -> None:
        """Call each of ``methods`` with the task's info; log and go on if one raises."""
        if not methods:
            return
        info = self._registry.info(handle)
        for method in methods:
            try:
                method(info)
            except Exception as exc:
                self._log.warning(
                    "hook %s raised %r for task %s; ignored",
                    getattr(method, "__qualname__", method),
                    exc,
                    handle.id,
                )


def check_hooks(hooks: Any) -> list[object]:
    if isinstance(hooks, str | bytes) or not isinstance(hooks, Iterable):
        raise TypeError(f"hooks must be a list of hook objects (got hooks={hooks!r})")
    found: list[object] = list(hooks)
    for i, hook in enumerate(found):
        if not any(callable(getattr(hook, event, None)) for event in _EVENTS):
            raise TypeError(
                f"hooks[{i}] has none of the hook methods {', '.join(_EVENTS)} (got {hook!r})"
            )
    return found


_EVENTS = ("on_submit", "on_start", "on_retry", "on_success", "on_failure", "on_cancel")
