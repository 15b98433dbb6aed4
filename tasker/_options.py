"""Task options: what ``submit`` and friends accept, checked in one place."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from tasker._handle import TaskHandle
from tasker._retry import RetryPolicy

__all__ = [
    "OPTIONS",
    "bind",
    "check_retry",
    "link_name",
    "results_in_order",
    "submit_options",
    "unwrap_work",
]

R = TypeVar("R")
E = TypeVar("E")
T = TypeVar("T")

OPTIONS = ("priority", "once", "name", "timeout", "retry")


def submit_options(options: dict[str, Any]) -> dict[str, Any]:
    """Check the ``**options`` of the schedule methods; fill in the defaults."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise TypeError(
            f"unexpected option(s) {', '.join(unknown)} (expected some of: {', '.join(OPTIONS)})"
        )
    return {
        "priority": bool(options.get("priority", False)),
        "once": bool(options.get("once", False)),
        "name": options.get("name"),
        "timeout": options.get("timeout"),
        "retry": options.get("retry"),
    }


def unwrap_work(work: Any, name: str | None) -> tuple[Callable[..., Any], str | None]:
    """A Work object's ``execute`` and name; TypeError for anything else."""
    execute = getattr(work, "execute", None)
    if not callable(execute):
        raise TypeError(
            "fn must be callable, or a Work object with an execute(resource) method "
            f"(got fn={work!r})"
        )
    if name is None:
        given = getattr(work, "name", None)
        name = given if isinstance(given, str) else type(work).__qualname__
    return execute, name


def link_name(link: Any) -> str:
    if not callable(link):
        given = getattr(link, "name", None)
        return given if isinstance(given, str) else type(link).__qualname__
    return str(getattr(link, "__qualname__", None) or getattr(link, "__name__", "link"))


def check_retry(retry: Any) -> RetryPolicy | None:
    if retry is not None and not isinstance(retry, RetryPolicy):
        raise TypeError(f"retry must be a tasker.RetryPolicy or None (got retry={retry!r})")
    return retry


def bind(fn: Callable[[R, T], E], item: T) -> Callable[[R], E]:
    def call(resource: R) -> E:
        return fn(resource, item)

    return call


def results_in_order(handles: list[TaskHandle[E]]) -> Iterator[E]:
    try:
        for handle in handles:
            yield handle.result()
    finally:
        for handle in handles:
            handle.cancel()
