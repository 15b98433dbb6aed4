"""The app: task names and handlers, shared by the producer and the workers.

Producers need only the names; workers import this module to run the handlers::

    python examples/distributed/worker.py          # one or more, on any machine
    python examples/distributed/producer.py        # from anywhere else

Configured from ``TASKER_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``) and
``TASKER_REDIS_PREFIX`` (default ``tasker-example``).
"""

from __future__ import annotations

import os
import time
from typing import Any

import tasker
from tasker.distributed import App


class Thumbnailer:
    """Stands in for an expensive resource: a model, a GPU handle, an API client."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        print(f"[worker {self.pid}] opened a Thumbnailer", flush=True)

    def resize(self, image_id: int, width: int) -> dict[str, Any]:
        time.sleep(0.05)  # the real work
        return {"id": image_id, "width": width, "by": self.pid}

    def close(self) -> None:
        print(f"[worker {self.pid}] closed a Thumbnailer", flush=True)


app = App(
    os.environ.get("TASKER_REDIS_URL", "redis://127.0.0.1:6379/0"),
    prefix=os.environ.get("TASKER_REDIS_PREFIX", "tasker-example"),
    signing_key=os.environ.get("TASKER_SIGNING_KEY") or None,
)
app.resource(Thumbnailer, on_destroy=Thumbnailer.close)


@app.task(
    name="resize",
    queue="images",
    retry=tasker.RetryPolicy(max_retries=3, base_delay=0.1, max_delay=2.0),
    timeout=10,
)
def resize(thumbnailer: Thumbnailer, payload: dict[str, int]) -> dict[str, Any]:
    return thumbnailer.resize(payload["id"], payload.get("width", 128))


@app.task(name="publish", queue="images")
def publish(thumbnailer: Thumbnailer, payload: dict[str, Any]) -> str:
    return f"image {payload['id']} published at {payload['width']}px"


attempts: dict[int, int] = {}


@app.task(name="flaky", queue="images", retry=tasker.RetryPolicy(max_retries=2, base_delay=0.1))
def flaky(thumbnailer: Thumbnailer, payload: int) -> str:
    attempts[payload] = attempts.get(payload, 0) + 1
    if attempts[payload] < 2:
        raise ConnectionError("storage hiccup")  # retried after a backoff, in Redis
    return f"stored {payload}"
