"""Shared fixtures: every test fails if it leaks a tasker thread or a resource."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from tasker.testing import Resources, wait_until


def _tasker_threads(before: set[threading.Thread]) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t not in before and t.is_alive()]


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Fail a test that leaves a thread it started running."""
    before = set(threading.enumerate())
    yield
    try:
        wait_until(lambda: not _tasker_threads(before), timeout=5)
    except AssertionError:
        names = [t.name for t in _tasker_threads(before)]
        pytest.fail(f"test leaked threads: {names}")


@pytest.fixture
def resources() -> Iterator[Resources]:
    """Counting on_create/on_destroy; the test fails if a resource is left alive."""
    res = Resources()
    yield res
    assert res.live == 0, f"{res.live} resources leaked: created {res.created}"
