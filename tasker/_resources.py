"""ResourcePool: resources kept ready for ``run_task`` in the caller's thread."""

from __future__ import annotations

import threading
from collections import deque
from typing import Generic, TypeVar

__all__ = ["ResourcePool"]

R = TypeVar("R")


class ResourcePool(Generic[R]):
    """A closable stack of idle resources.

    Once closed, ``put`` refuses resources (the caller destroys them) and ``close``
    hands every idle one to the closer, exactly once, so each resource is destroyed by
    exactly one party.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: deque[R] = deque()
        self._closed = False

    def __len__(self) -> int:
        return len(self._idle)

    def take(self) -> tuple[bool, R | None]:
        """Return ``(True, resource)``, or ``(False, None)`` if none is idle."""
        with self._lock:
            if self._idle:
                return True, self._idle.pop()
            return False, None

    def put(self, resource: R) -> bool:
        """Return a resource; False if the pool is closed (destroy it yourself)."""
        with self._lock:
            if self._closed:
                return False
            self._idle.append(resource)
            return True

    def close(self) -> list[R]:
        """Close the pool and return the idle resources for destruction."""
        with self._lock:
            self._closed = True
            idle = list(self._idle)
            self._idle.clear()
            return idle
