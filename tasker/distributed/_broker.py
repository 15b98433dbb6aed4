"""The broker protocol: what a message transport must do for tasker, and nothing more.

A broker moves opaque message bodies (bytes) between processes and keeps a small
record per task. It never decodes a body: decoding, signing and the meaning of a record
belong to the :class:`~tasker.distributed.App`. Two implementations ship:
:class:`~tasker.distributed.RedisBroker` (Redis Streams) and
:class:`~tasker.distributed.MemoryBroker` (in-process); the protocol is small enough for
a third (NATS JetStream: publish with ``Nats-Msg-Id`` for ``unique_key``, a pull consumer
for ``fetch``, ``InProgress`` for ``touch``, KV for records, ack/term for ``settle``).

Delivery guarantee: **at least once**. A fetched message stays owned by its consumer
until ``settle`` acknowledges it; if the consumer stops touching it for
``visibility_timeout`` seconds (it crashed, or lost its connection), the message is
delivered again to whoever fetches next, and after ``max_deliveries`` deliveries it is
moved to the dead-letter stream instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = [
    "TERMINAL_STATES",
    "Broker",
    "DeadLetter",
    "Delivery",
    "Outgoing",
    "Record",
    "Settlement",
    "StoredRecord",
]

TERMINAL_STATES = frozenset({"completed", "failed", "cancelled"})
"""Record states that a non-terminal write never overwrites (a late duplicate run's
"running" must not hide a result already stored)."""


@dataclass(frozen=True, slots=True)
class Record:
    """A task record to store: its state (a ``TaskState`` value), the app's JSON data,
    and how long to keep it (``ttl`` seconds; None keeps it until a later write)."""

    task_id: str
    state: str
    data: bytes
    ttl: float | None = None


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """A record as read back. ``note`` is set when the broker itself changed the state
    (a dead-lettered message: the reason)."""

    state: str
    data: bytes
    note: str | None = None


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message to publish.

    Attributes:
        id: The task id (also the dedup identity of the message).
        queue: The queue name.
        body: The encoded message.
        priority: Deliver before the queue's normal messages.
        delay: Seconds from now (the broker's clock) before it may be delivered.
        record: The record to store with it, atomically.
        unique_key: If set and held by another task, publish nothing and return that
            task's id; else hold the key for ``unique_for`` seconds.
        unique_for: Seconds the unique key is held.
    """

    id: str
    queue: str
    body: bytes
    priority: bool = False
    delay: float = 0.0
    record: Record | None = None
    unique_key: str | None = None
    unique_for: float = 0.0


@dataclass(frozen=True, slots=True)
class Delivery:
    """A fetched message, owned by the fetching consumer until settled.

    Attributes:
        queue: The queue it came from.
        priority: Whether it came from the priority lane.
        receipt: The broker's handle for acknowledging it (a stream entry id).
        task_id: The task id it was published with ("" if unknown).
        body: The encoded message, undecoded.
        deliveries: How many times it has been delivered, this time included.
    """

    queue: str
    priority: bool
    receipt: str
    task_id: str
    body: bytes
    deliveries: int = 1


@dataclass(frozen=True, slots=True)
class Settlement:
    """What to do, atomically, when a delivery's outcome is known.

    Store ``records``, publish ``publish`` (a retry, or a chain's next link), then
    acknowledge the delivery. With ``dead_reason`` set the delivery goes to the
    dead-letter stream with that reason instead. If the delivery was already
    acknowledged (a duplicate settle, or another consumer settled a redelivered copy),
    nothing is done, so a chain's next link is never published twice by one message.
    """

    delivery: Delivery
    records: tuple[Record, ...] = ()
    publish: tuple[Outgoing, ...] = ()
    dead_reason: str | None = None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message in the dead-letter stream.

    Attributes:
        id: Its id in the dead-letter stream (pass it to ``redrive``).
        queue: The queue it came from.
        priority: Whether it was a priority message.
        task_id: Its task id, "" if the body could not be read.
        body: The message as it was.
        reason: Why it was dead-lettered.
        deliveries: How many times it had been delivered.
        failed_at: UNIX time it was dead-lettered.
    """

    id: str
    queue: str
    priority: bool
    task_id: str
    body: bytes
    reason: str
    deliveries: int
    failed_at: float


@runtime_checkable
class Broker(Protocol):
    """A transport for tasker messages with at-least-once delivery.

    Every method may raise the transport's connection errors; the worker retries them
    with backoff, the producer API wraps them in ``BrokerUnavailable``.
    """

    def publish(self, messages: Sequence[Outgoing]) -> list[str]:
        """Publish all of ``messages`` atomically (with their records).

        Returns the task id behind each message: its own, or for a ``unique_key``
        already held, the id of the task holding it (nothing is published for it).
        """
        ...

    def fetch(
        self, queues: Sequence[str], consumer: str, count: int, timeout: float
    ) -> list[Delivery]:
        """Take up to ``count`` deliveries for ``consumer``, waiting up to ``timeout`` s.

        Priority messages first, then normal ones, FIFO within each; messages whose
        consumer stopped touching them for the visibility timeout are redelivered; due
        delayed messages are moved to their queue; over-delivered ones are dead-lettered.
        """
        ...

    def touch(self, consumer: str, deliveries: Sequence[Delivery]) -> None:
        """Tell the broker ``consumer`` is still working on ``deliveries``."""
        ...

    def settle(self, settlements: Sequence[Settlement]) -> None:
        """Apply each settlement atomically, in order."""
        ...

    def put_records(self, records: Sequence[Record]) -> None:
        """Store records (a non-terminal state never overwrites a terminal one)."""
        ...

    def get_records(self, task_ids: Sequence[str]) -> list[StoredRecord | None]:
        """Read the records of ``task_ids`` (None where unknown or expired)."""
        ...

    def dead_letters(self, count: int = 100) -> list[DeadLetter]:
        """The oldest ``count`` dead letters."""
        ...

    def redrive(self, dead_ids: Sequence[str], records: Sequence[Record] = ()) -> int:
        """Publish the given dead letters to their queues again (storing ``records``);
        returns how many were found and moved."""
        ...

    def purge_dead_letters(self, dead_ids: Sequence[str] | None = None) -> int:
        """Delete the given dead letters (all if None); returns how many."""
        ...

    def close(self) -> None:
        """Release connections. Idempotent."""
        ...
