"""The shortest path through the library works."""

from __future__ import annotations

import tasker
from tasker.testing import Resources


def test_queue_task_returns_the_result(resources: Resources) -> None:
    with tasker.TaskManager(resources.create, on_destroy=resources.destroy, workers=2) as m:
        assert m.queue_task(lambda r: r.number) in {1, 2, 3, 4}
    assert resources.created == resources.destroyed == 4  # 2 pool + 2 workers
