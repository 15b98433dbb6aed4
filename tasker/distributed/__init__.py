"""tasker.distributed: named tasks on Redis, run by workers on many machines.

An :class:`App` registers handlers by name, ``fn(resource, payload) -> result``, with
JSON payloads and results (never pickles). Any process enqueues by name and gets a
:class:`RemoteHandle`; workers (``app.worker(...)``) feed a :class:`tasker.TaskManager`
from the broker, so per-worker resources, health checks, bursting, timeouts and metrics
apply on every machine. Delivery is **at least once**: a message is acknowledged only
with its stored outcome, and a dead worker's messages are redelivered elsewhere.

Needs ``pip install 'tasker-pool[redis]'`` for :class:`RedisBroker`;
:class:`MemoryBroker` runs the same API in one process with no server.

Example:
    >>> from tasker.distributed import App
    >>> app = App("redis://127.0.0.1:6379/0")
    >>> @app.task(name="add")
    ... def add(resource, payload):
    ...     return payload["a"] + payload["b"]
    >>> worker = app.worker(workers=2)               # usually another process
    >>> app.enqueue("add", {"a": 1, "b": 2}).result(timeout=5)
    3
    >>> worker.stop()
"""

from typing import TYPE_CHECKING

from tasker.distributed._app import App as App
from tasker.distributed._app import Task as Task
from tasker.distributed._broker import Broker as Broker
from tasker.distributed._broker import DeadLetter as DeadLetter
from tasker.distributed._broker import Delivery as Delivery
from tasker.distributed._broker import Outgoing as Outgoing
from tasker.distributed._broker import Record as Record
from tasker.distributed._broker import Settlement as Settlement
from tasker.distributed._broker import StoredRecord as StoredRecord
from tasker.distributed._errors import BadMessage as BadMessage
from tasker.distributed._errors import BrokerUnavailable as BrokerUnavailable
from tasker.distributed._errors import RemoteTaskError as RemoteTaskError
from tasker.distributed._handles import ChainHandle as ChainHandle
from tasker.distributed._handles import GroupHandle as GroupHandle
from tasker.distributed._handles import RemoteHandle as RemoteHandle
from tasker.distributed._memory import MemoryBroker as MemoryBroker
from tasker.distributed._metrics import WorkerCollector as WorkerCollector
from tasker.distributed._run import load_app as load_app
from tasker.distributed._run import main as main
from tasker.distributed._run import run_worker as run_worker
from tasker.distributed._schedules import RemoteSchedule as RemoteSchedule
from tasker.distributed._worker import Worker as Worker
from tasker.distributed._worker import WorkerStats as WorkerStats

if TYPE_CHECKING:
    from tasker.distributed._redis import RedisBroker as RedisBroker

# Grouped by concept, not sorted (hence the noqa): the groups are the documentation.
__all__ = [  # noqa: RUF022
    # the app and its handles
    "App",
    "Task",
    "RemoteHandle",
    "ChainHandle",
    "GroupHandle",
    "RemoteSchedule",
    # workers
    "Worker",
    "WorkerStats",
    "WorkerCollector",
    "run_worker",
    "load_app",
    "main",
    # the broker protocol and its implementations
    "Broker",
    "Delivery",
    "Outgoing",
    "Record",
    "StoredRecord",
    "Settlement",
    "DeadLetter",
    "MemoryBroker",
    "RedisBroker",
    # errors
    "RemoteTaskError",
    "BrokerUnavailable",
    "BadMessage",
]


def __getattr__(name: str) -> object:
    # RedisBroker imports redis-py, an optional dependency: load it on first use only.
    if name == "RedisBroker":
        from tasker.distributed._redis import RedisBroker

        return RedisBroker
    raise AttributeError(f"module 'tasker.distributed' has no attribute {name!r}")
