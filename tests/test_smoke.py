"""The shortest path through the library works."""

from __future__ import annotations

import tasker
from tasker.testing import Resources


def test_queue_task_returns_the_result(resources: Resources) -> None:
    with tasker.TaskManager(resources.create, on_destroy=resources.destroy, workers=2) as m:
        assert m.queue_task(lambda r: r.number) in {1, 2, 3, 4}
    assert resources.created == resources.destroyed == 4  # 2 pool + 2 workers


def test_every_public_name_is_exported_once() -> None:
    public = {n for n in dir(tasker) if not n.startswith("_") and n[0].isupper()}
    public |= {"current_task", "parse_duration"}
    modules = {"prometheus", "testing"}  # sub-namespaces, imported on demand
    assert sorted(tasker.__all__) == sorted(set(tasker.__all__))
    assert set(tasker.__all__) == public - modules
