"""MemoryBroker: the broker protocol in one process, with no server.

It keeps the same semantics as the Redis broker (lanes, visibility timeout and
redelivery, max deliveries, delayed messages, unique keys, records with TTL, dead
letters), so the distributed API, its tests and a demo run without Redis. Everything
lives under one lock; ``fetch`` waits on its condition.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tasker._validate import check_int, check_seconds
from tasker.distributed._broker import (
    TERMINAL_STATES,
    DeadLetter,
    Delivery,
    Outgoing,
    Record,
    Settlement,
    StoredRecord,
)

__all__ = ["MemoryBroker"]


@dataclass(slots=True)
class _Entry:
    receipt: str
    queue: str
    priority: bool
    task_id: str
    body: bytes


@dataclass(slots=True)
class _Pending:
    entry: _Entry
    consumer: str
    deliveries: int
    touched: float


@dataclass(slots=True)
class _Stored:
    state: str
    data: bytes
    note: str | None
    expires: float | None


class MemoryBroker:
    """An in-process broker with the semantics of :class:`RedisBroker`.

    Share one instance between the producing code and the workers of one process.

    Args:
        visibility_timeout: Seconds a fetched message may go untouched before it is
            delivered again.
        max_deliveries: Deliveries after which a message is dead-lettered instead.
        clock: UNIX seconds (inject a fake one in tests).
    """

    def __init__(
        self,
        *,
        visibility_timeout: float = 30.0,
        max_deliveries: int = 5,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.visibility_timeout = check_seconds("visibility_timeout", visibility_timeout)
        self.max_deliveries = check_int("max_deliveries", max_deliveries, minimum=1)
        self._clock = clock
        self._cond = threading.Condition()
        self._lanes: dict[tuple[str, bool], deque[_Entry]] = {}
        self._pending: OrderedDict[str, _Pending] = OrderedDict()
        self._delayed: list[tuple[float, int, _Entry]] = []
        self._records: dict[str, _Stored] = {}
        self._unique: dict[str, tuple[str, float]] = {}
        self._dead: OrderedDict[str, DeadLetter] = OrderedDict()
        self._seq = itertools.count(1)
        self._closed = False

    def __repr__(self) -> str:
        return f"<MemoryBroker pending={len(self._pending)} dead={len(self._dead)}>"

    # -- publishing -----------------------------------------------------------------------

    def publish(self, messages: Sequence[Outgoing]) -> list[str]:
        with self._cond:
            now = self._clock()
            ids = []
            for out in messages:
                ids.append(self._publish(out, now))
            self._cond.notify_all()
            return ids

    def _publish(self, out: Outgoing, now: float) -> str:
        if out.unique_key is not None:
            held = self._unique.get(out.unique_key)
            if held is not None and held[1] > now:
                return held[0]
            self._unique[out.unique_key] = (out.id, now + out.unique_for)
        if out.record is not None:
            self._store(out.record, now, force=True)
        entry = _Entry(f"{next(self._seq)}-0", out.queue, out.priority, out.id, out.body)
        if out.delay > 0:
            heapq.heappush(self._delayed, (now + out.delay, next(self._seq), entry))
        else:
            self._lane(out.queue, out.priority).append(entry)
        return out.id

    def _lane(self, queue: str, priority: bool) -> deque[_Entry]:
        lane = self._lanes.get((queue, priority))
        if lane is None:
            lane = self._lanes[(queue, priority)] = deque()
        return lane

    # -- consuming ------------------------------------------------------------------------

    def fetch(
        self, queues: Sequence[str], consumer: str, count: int, timeout: float
    ) -> list[Delivery]:
        if count <= 0:
            return []
        deadline = self._clock() + timeout
        with self._cond:
            while True:
                now = self._clock()
                self._promote(now)
                out = self._reclaim(set(queues), consumer, count, now)
                for priority in (True, False):
                    for queue in queues:
                        lane = self._lanes.get((queue, priority))
                        while lane and len(out) < count:
                            entry = lane.popleft()
                            self._pending[entry.receipt] = _Pending(entry, consumer, 1, now)
                            out.append(_delivery(entry, 1))
                if out or now >= deadline or self._closed:
                    return out
                wake = min(deadline, self._next_event(now))
                self._cond.wait(max(0.0, wake - now))

    def _next_event(self, now: float) -> float:
        wake = now + 1.0
        if self._delayed:
            wake = min(wake, self._delayed[0][0])
        if self._pending:
            oldest = min(p.touched for p in self._pending.values())
            wake = min(wake, oldest + self.visibility_timeout)
        return wake

    def _promote(self, now: float) -> None:
        while self._delayed and self._delayed[0][0] <= now:
            entry = heapq.heappop(self._delayed)[2]
            self._lane(entry.queue, entry.priority).append(entry)
            stored = self._records.get(entry.task_id)
            if stored is not None and stored.state in ("scheduled", "retrying"):
                stored.state = "queued"

    def _reclaim(self, queues: set[str], consumer: str, count: int, now: float) -> list[Delivery]:
        out: list[Delivery] = []
        stale = [
            p
            for p in self._pending.values()
            if p.entry.queue in queues and now - p.touched >= self.visibility_timeout
        ]
        for pending in stale:
            if len(out) >= count:
                break
            pending.deliveries += 1
            entry = pending.entry
            if pending.deliveries > self.max_deliveries:
                del self._pending[entry.receipt]
                reason = (
                    f"delivered {pending.deliveries} times (max_deliveries="
                    f"{self.max_deliveries}); its workers kept dying or losing it"
                )
                self._bury(entry, reason, pending.deliveries, now)
                self._mark_dead(entry.task_id, reason)
                continue
            pending.consumer, pending.touched = consumer, now
            self._pending.move_to_end(entry.receipt)
            out.append(_delivery(entry, pending.deliveries))
        return out

    def touch(self, consumer: str, deliveries: Sequence[Delivery]) -> None:
        with self._cond:
            now = self._clock()
            for delivery in deliveries:
                pending = self._pending.get(delivery.receipt)
                if pending is not None:
                    pending.consumer, pending.touched = consumer, now

    # -- settling -------------------------------------------------------------------------

    def settle(self, settlements: Sequence[Settlement]) -> None:
        with self._cond:
            now = self._clock()
            for s in settlements:
                pending = self._pending.pop(s.delivery.receipt, None)
                if pending is None:
                    continue  # settled already, by us or by whoever got it redelivered
                for record in s.records:
                    self._store(record, now, force=False)
                if s.dead_reason is not None:
                    self._bury(pending.entry, s.dead_reason, pending.deliveries, now)
                for out in s.publish:
                    self._publish(out, now)
            self._cond.notify_all()

    def _bury(self, entry: _Entry, reason: str, deliveries: int, now: float) -> None:
        dead_id = f"{next(self._seq)}-0"
        self._dead[dead_id] = DeadLetter(
            dead_id, entry.queue, entry.priority, entry.task_id, entry.body, reason, deliveries, now
        )

    def _mark_dead(self, task_id: str, reason: str) -> None:
        stored = self._records.get(task_id)
        if stored is not None:
            stored.state, stored.note = "failed", reason

    # -- records --------------------------------------------------------------------------

    def _store(self, record: Record, now: float, *, force: bool) -> None:
        current = self._records.get(record.task_id)
        if (
            not force
            and current is not None
            and current.state in TERMINAL_STATES
            and record.state not in TERMINAL_STATES
            and (current.expires is None or current.expires > now)
        ):
            return
        expires = None if record.ttl is None else now + record.ttl
        self._records[record.task_id] = _Stored(record.state, record.data, None, expires)

    def put_records(self, records: Sequence[Record]) -> None:
        with self._cond:
            now = self._clock()
            for record in records:
                self._store(record, now, force=False)

    def get_records(self, task_ids: Sequence[str]) -> list[StoredRecord | None]:
        with self._cond:
            now = self._clock()
            out: list[StoredRecord | None] = []
            for task_id in task_ids:
                stored = self._records.get(task_id)
                if stored is not None and stored.expires is not None and stored.expires <= now:
                    del self._records[task_id]
                    stored = None
                out.append(
                    None if stored is None else StoredRecord(stored.state, stored.data, stored.note)
                )
            return out

    # -- dead letters ---------------------------------------------------------------------

    def dead_letters(self, count: int = 100) -> list[DeadLetter]:
        with self._cond:
            return list(itertools.islice(self._dead.values(), count))

    def redrive(self, dead_ids: Sequence[str], records: Sequence[Record] = ()) -> int:
        with self._cond:
            now = self._clock()
            moved = 0
            for dead_id in dead_ids:
                dead = self._dead.pop(dead_id, None)
                if dead is None:
                    continue
                entry = _Entry(
                    f"{next(self._seq)}-0", dead.queue, dead.priority, dead.task_id, dead.body
                )
                self._lane(dead.queue, dead.priority).append(entry)
                moved += 1
            for record in records:
                self._store(record, now, force=True)
            self._cond.notify_all()
            return moved

    def purge_dead_letters(self, dead_ids: Sequence[str] | None = None) -> int:
        with self._cond:
            if dead_ids is None:
                purged = len(self._dead)
                self._dead.clear()
                return purged
            return sum(1 for d in dead_ids if self._dead.pop(d, None) is not None)

    # -- inspection and shutdown ----------------------------------------------------------

    def pending_count(self) -> int:
        """Messages fetched and not yet settled (for tests and monitoring)."""
        with self._cond:
            return len(self._pending)

    def queued_count(self) -> int:
        """Messages waiting in lanes or in the delayed set."""
        with self._cond:
            return sum(len(lane) for lane in self._lanes.values()) + len(self._delayed)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


def _delivery(entry: _Entry, deliveries: int) -> Delivery:
    return Delivery(
        entry.queue, entry.priority, entry.receipt, entry.task_id, entry.body, deliveries
    )
