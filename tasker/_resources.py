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
        self._holes = 0  # resources lost to failed refills, to be filled later

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

    def note_hole(self) -> None:
        """A resource was lost and could not be replaced: remember to fill its place."""
        with self._lock:
            self._holes += 1

    def fill_hole(self, resource: R) -> bool:
        """Keep ``resource`` if the pool has a hole; False if it has none (or is closed)."""
        with self._lock:
            if self._closed or not self._holes:
                return False
            self._holes -= 1
            self._idle.append(resource)
            return True

    def close(self) -> list[R]:
        """Close the pool and return the idle resources for destruction."""
        with self._lock:
            self._closed = True
            idle = list(self._idle)
            self._idle.clear()
            return idle
