"""RedisBroker: the broker protocol on Redis Streams (needs ``pip install 'tasker-pool[redis]'``).

Keys, all under ``prefix`` (default ``tasker``)::

    {prefix}:q:{queue}        stream of a queue's normal messages
    {prefix}:q:{queue}:prio   stream of its priority messages (read first)
    {prefix}:delayed          sorted set of delayed messages, scored by due time (ms)
    {prefix}:dead             dead-letter stream (queue, id, body, reason, deliveries, at)
    {prefix}:t:{task_id}      task record: hash {state, data[, note]}, TTL once finished
    {prefix}:u:{unique_key}   task id holding a unique key, with a TTL

Workers read with one consumer group (``XREADGROUP``, batched), priority streams before
normal ones. A message is acknowledged (``XACK`` + ``XDEL``) only by the settle script
that also stores its outcome and publishes what follows it (a retry, a chain's next
link), in one atomic step. Messages idle in the group for ``visibility_timeout`` (their
worker died, or lost its connection with them) are taken over with ``XAUTOCLAIM``;
workers ``touch`` what they hold so a long task is not taken from a live worker.
Delayed messages are moved to their streams by a Lua script, every due one at once, by
whichever worker fetches first.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from typing import Any, ParamSpec, TypeVar

from tasker._validate import check_int, check_seconds
from tasker.distributed._broker import (
    DeadLetter,
    Delivery,
    Outgoing,
    Record,
    Settlement,
    StoredRecord,
)
from tasker.distributed._errors import BrokerUnavailable
from tasker.distributed._scripts import PROMOTE, PUBLISH, RECLAIM, REDRIVE, SETTLE, WRITE_RECORDS

try:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "tasker.distributed.RedisBroker needs redis-py: pip install 'tasker-pool[redis]'"
    ) from exc

__all__ = ["RedisBroker"]

_PROMOTE_BATCH = 1000
P = ParamSpec("P")
T = TypeVar("T")


def _unavailable(fn: Callable[P, T]) -> Callable[P, T]:
    """Turn redis-py's connection failures into :class:`BrokerUnavailable`."""

    @functools.wraps(fn)
    def call(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return fn(*args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise BrokerUnavailable(f"cannot reach Redis: {exc}") from exc

    return call


def _ms(seconds: float) -> int:
    return max(0, round(seconds * 1000))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisBroker:
    """The broker protocol on Redis Streams.

    Args:
        client: A ``redis.Redis`` client (use :meth:`from_url` to make one from a URL).
        prefix: Every key starts with ``prefix:``; give each app or test its own.
        group: The consumer group name.
        visibility_timeout: Seconds a fetched message may go untouched before another
            worker may take it over (workers touch what they hold every third of it).
        max_deliveries: Deliveries after which a message is dead-lettered instead.
        claim_interval: Seconds between looks for idle messages to take over
            (default: a quarter of ``visibility_timeout``, at most 5 s).
        delay_poll: Seconds between looks for due delayed messages, at most; this is
            how late a delayed task may start.
        dead_letter_maxlen: Approximate cap on the dead-letter stream.
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = "tasker",
        group: str = "tasker",
        visibility_timeout: float = 30.0,
        max_deliveries: int = 5,
        claim_interval: float | None = None,
        delay_poll: float = 0.1,
        dead_letter_maxlen: int = 100_000,
    ) -> None:
        if not isinstance(client, redis.Redis):
            raise TypeError(f"client must be a redis.Redis (got client={client!r})")
        for what, value in (("prefix", prefix), ("group", group)):
            if not isinstance(value, str) or not value or " " in value:
                raise ValueError(f"{what} must be a non-empty str without spaces (got {value!r})")
        self.client = client
        self.prefix = prefix
        self.group = group
        self.visibility_timeout = check_seconds("visibility_timeout", visibility_timeout)
        self.max_deliveries = check_int("max_deliveries", max_deliveries, minimum=1)
        if claim_interval is None:
            claim_interval = min(5.0, visibility_timeout / 4)
        self.claim_interval = check_seconds("claim_interval", claim_interval)
        self.delay_poll = check_seconds("delay_poll", delay_poll)
        self.dead_letter_maxlen = check_int("dead_letter_maxlen", dead_letter_maxlen, minimum=1)
        self._stream_prefix = f"{prefix}:q:"
        self._record_prefix = f"{prefix}:t:"
        self._delayed = f"{prefix}:delayed"
        self._dead = f"{prefix}:dead"
        self._publish = client.register_script(PUBLISH)
        self._write = client.register_script(WRITE_RECORDS)
        self._settle = client.register_script(SETTLE)
        self._reclaim = client.register_script(RECLAIM)
        self._promote = client.register_script(PROMOTE)
        self._redrive = client.register_script(REDRIVE)
        self._groups: set[str] = set()
        self._cursors: dict[str, bytes | str] = {}
        self._next_claim = 0.0
        self._next_promote = 0.0

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        socket_timeout: float = 10.0,
        client_name: str | None = None,
        **options: Any,
    ) -> RedisBroker:
        """Connect lazily to ``redis://[[user]:password@]host[:port][/db]``,
        ``rediss://`` (TLS; ``?ssl_cert_reqs=...`` etc. as redis-py accepts) or
        ``unix://``. ``client_name`` labels the connections (``CLIENT LIST``).
        ``options`` are those of the constructor.
        """
        if not isinstance(url, str) or not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(
                f"url must start with redis://, rediss:// or unix:// (got url={url!r})"
            )
        client = redis.Redis.from_url(
            url,
            socket_timeout=socket_timeout,
            socket_connect_timeout=5.0,
            health_check_interval=30,
            # One immediate retry covers a pooled connection the server closed; beyond
            # that the worker's own backoff takes over (and never duplicates a settle).
            retry=Retry(NoBackoff(), 1),
            client_name=client_name,
        )
        return cls(client, **options)

    def __repr__(self) -> str:
        return f"<RedisBroker prefix={self.prefix!r}>"

    # -- keys -----------------------------------------------------------------------------

    def stream(self, queue: str, priority: bool = False) -> str:
        """The stream key of a queue's lane."""
        return f"{self._stream_prefix}{queue}{':prio' if priority else ''}"

    def _record_key(self, task_id: str) -> str:
        return f"{self._record_prefix}{task_id}"

    def _out_keys_args(self, out: Outgoing) -> tuple[list[str], list[Any]]:
        record = out.record
        keys = [
            self.stream(out.queue, out.priority),
            self._record_key(out.id),
            f"{self.prefix}:u:{out.unique_key}" if out.unique_key is not None else self._delayed,
        ]
        args: list[Any] = [
            out.id,
            out.queue,
            "1" if out.priority else "0",
            out.body,
            _ms(out.delay),
            record.state if record else "",
            record.data if record else b"",
            _ms(record.ttl) if record and record.ttl else 0,
            max(1, _ms(out.unique_for)) if out.unique_key is not None else "",
        ]
        return keys, args

    # -- publishing -----------------------------------------------------------------------

    @_unavailable
    def publish(self, messages: Sequence[Outgoing]) -> list[str]:
        keys: list[str] = [self._delayed]
        args: list[Any] = [len(messages)]
        for out in messages:
            k, a = self._out_keys_args(out)
            keys += k
            args += a
        ids = self._publish(keys=keys, args=args)
        return [_text(i) for i in ids]

    # -- consuming ------------------------------------------------------------------------

    def _ensure_groups(self, streams: Sequence[str]) -> None:
        for stream in streams:
            if stream in self._groups:
                continue
            try:
                # From id 0: messages published before any worker existed are read too.
                self.client.xgroup_create(stream, self.group, id="0", mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
            self._groups.add(stream)

    @_unavailable
    def fetch(
        self, queues: Sequence[str], consumer: str, count: int, timeout: float
    ) -> list[Delivery]:
        if count <= 0:
            return []
        lanes = {self.stream(q, True): (q, True) for q in queues}
        lanes.update({self.stream(q, False): (q, False) for q in queues})
        try:
            return self._fetch(lanes, consumer, count, timeout)
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self._groups.clear()  # a stream was deleted under us: recreate its group
            return self._fetch(lanes, consumer, count, timeout)

    def _fetch(
        self, lanes: dict[str, tuple[str, bool]], consumer: str, count: int, timeout: float
    ) -> list[Delivery]:
        self._ensure_groups(list(lanes))
        deadline = time.monotonic() + timeout
        prio_streams = [s for s, (_, p) in lanes.items() if p]
        while True:
            now = time.monotonic()
            if now >= self._next_promote:
                self._promote_due(now)
            out: list[Delivery] = []
            if now >= self._next_claim:
                self._next_claim = now + self.claim_interval
                for stream, (queue, prio) in lanes.items():
                    out += self._claim(stream, queue, prio, consumer, count - len(out))
                    if len(out) >= count:
                        return out
            out += self._read(lanes, prio_streams, consumer, count - len(out), None)
            if len(out) >= count:
                return out
            left = deadline - time.monotonic()
            block = None
            if not out and left > 0:
                # Wake for the next look at the delayed set and the idle messages.
                wake = min(self._next_promote, self._next_claim) - time.monotonic()
                block = max(0.001, min(left, wake))
            # Priority streams again too, so a priority message arriving while this read
            # blocks is taken at once.
            out += self._read(lanes, list(lanes), consumer, count - len(out), block)
            if out or time.monotonic() >= deadline:
                return out

    def _read(
        self,
        lanes: dict[str, tuple[str, bool]],
        streams: list[str],
        consumer: str,
        count: int,
        block: float | None,
    ) -> list[Delivery]:
        if count <= 0:
            return []
        reply: Any = self.client.xreadgroup(
            self.group,
            consumer,
            dict.fromkeys(streams, ">"),
            count=count,
            block=None if block is None else max(1, _ms(block)),
        )
        if not reply:
            return []
        items = reply.items() if isinstance(reply, dict) else reply
        prio_first: list[Delivery] = []
        normal: list[Delivery] = []
        for stream, entries in items:
            queue, prio = lanes[_text(stream)]
            if isinstance(entries, list) and entries and isinstance(entries[0], list):
                entries = entries[0]  # RESP3 wraps the entries once more
            for receipt, fields in entries:
                if fields is None:
                    continue
                delivery = Delivery(
                    queue,
                    prio,
                    _text(receipt),
                    _text(fields.get(b"id", b"")),
                    fields.get(b"body", b""),
                    1,
                )
                (prio_first if prio else normal).append(delivery)
        return prio_first + normal

    def _claim(
        self, stream: str, queue: str, prio: bool, consumer: str, count: int
    ) -> list[Delivery]:
        if count <= 0:
            return []
        cursor, claimed = self._reclaim(
            keys=[stream, self._dead],
            args=[
                self.group,
                consumer,
                _ms(self.visibility_timeout),
                count,
                self._cursors.get(stream, "0-0"),
                self.max_deliveries,
                queue,
                "1" if prio else "0",
                self.dead_letter_maxlen,
                self._record_prefix,
            ],
        )
        self._cursors[stream] = cursor
        return [
            Delivery(queue, prio, _text(receipt), _text(task_id), body, int(n))
            for receipt, task_id, body, n in claimed
        ]

    def _promote_due(self, now: float) -> None:
        """Move every due delayed message to its stream; note when to look again."""
        while True:
            moved, upcoming, server_ms = self._promote(
                keys=[self._delayed],
                args=[self._stream_prefix, self._record_prefix, _PROMOTE_BATCH],
            )
            if int(moved) < _PROMOTE_BATCH:
                break
        wait = self.delay_poll
        if upcoming:
            wait = min(wait, max(0.0, (float(upcoming) - float(server_ms)) / 1000))
        self._next_promote = now + wait

    @_unavailable
    def touch(self, consumer: str, deliveries: Sequence[Delivery]) -> None:
        by_stream: dict[str, list[str]] = {}
        for d in deliveries:
            by_stream.setdefault(self.stream(d.queue, d.priority), []).append(d.receipt)
        if not by_stream:
            return
        with self.client.pipeline(transaction=False) as pipe:
            for stream, receipts in by_stream.items():
                # XCLAIM by the holder with min-idle 0 resets the idle time; JUSTID does
                # not count it as a delivery.
                ids: list[Any] = list(receipts)
                pipe.xclaim(stream, self.group, consumer, 0, ids, justid=True)
            pipe.execute()

    # -- settling -------------------------------------------------------------------------

    @_unavailable
    def settle(self, settlements: Sequence[Settlement]) -> None:
        if not settlements:
            return
        with self.client.pipeline(transaction=False) as pipe:
            for s in settlements:
                d = s.delivery
                keys = [self.stream(d.queue, d.priority), self._dead, self._delayed]
                args: list[Any] = [
                    self.group,
                    d.receipt,
                    s.dead_reason or "",
                    d.deliveries,
                    d.queue,
                    "1" if d.priority else "0",
                    self.dead_letter_maxlen,
                    len(s.records),
                    len(s.publish),
                ]
                for record in s.records:
                    keys.append(self._record_key(record.task_id))
                    args += [record.state, record.data, _ms(record.ttl) if record.ttl else 0]
                for out in s.publish:
                    k, a = self._out_keys_args(out)
                    keys += k
                    args += a
                self._settle(keys=keys, args=args, client=pipe)
            pipe.execute()

    # -- records --------------------------------------------------------------------------

    @_unavailable
    def put_records(self, records: Sequence[Record]) -> None:
        if not records:
            return
        keys = [self._record_key(r.task_id) for r in records]
        args: list[Any] = []
        for r in records:
            args += [r.state, r.data, _ms(r.ttl) if r.ttl else 0]
        self._write(keys=keys, args=args)

    @_unavailable
    def get_records(self, task_ids: Sequence[str]) -> list[StoredRecord | None]:
        replies: list[Any]
        if len(task_ids) == 1:
            replies = [self.client.hmget(self._record_key(task_ids[0]), "state", "data", "note")]
        else:
            with self.client.pipeline(transaction=False) as pipe:
                for task_id in task_ids:
                    pipe.hmget(self._record_key(task_id), "state", "data", "note")
                replies = pipe.execute()
        out: list[StoredRecord | None] = []
        for state, data, note in replies:
            if state is None:
                out.append(None)
            else:
                out.append(
                    StoredRecord(_text(state), data or b"", None if note is None else _text(note))
                )
        return out

    # -- dead letters ---------------------------------------------------------------------

    @_unavailable
    def dead_letters(self, count: int = 100) -> list[DeadLetter]:
        entries: Any = self.client.xrange(self._dead, count=count)
        out = []
        for dead_id, f in entries:
            out.append(
                DeadLetter(
                    id=_text(dead_id),
                    queue=_text(f.get(b"queue", b"")),
                    priority=f.get(b"prio") == b"1",
                    task_id=_text(f.get(b"id", b"")),
                    body=f.get(b"body", b""),
                    reason=_text(f.get(b"reason", b"")),
                    deliveries=int(f.get(b"deliveries", 0)),
                    failed_at=int(f.get(b"at", 0)) / 1000,
                )
            )
        return out

    @_unavailable
    def redrive(self, dead_ids: Sequence[str], records: Sequence[Record] = ()) -> int:
        keys = [self._dead] + [self._record_key(r.task_id) for r in records]
        args: list[Any] = [self._stream_prefix, len(dead_ids), *dead_ids]
        for r in records:
            args += [r.state, r.data, _ms(r.ttl) if r.ttl else 0]
        return int(self._redrive(keys=keys, args=args))

    @_unavailable
    def purge_dead_letters(self, dead_ids: Sequence[str] | None = None) -> int:
        if dead_ids is None:
            length = int(self.client.xlen(self._dead))
            self.client.delete(self._dead)
            return length
        if not dead_ids:
            return 0
        return int(self.client.xdel(self._dead, *dead_ids))

    # -- inspection and shutdown ----------------------------------------------------------

    @_unavailable
    def pending_count(self, queues: Sequence[str]) -> int:
        """Messages fetched by some consumer and not yet settled, in ``queues``."""
        total = 0
        for queue in queues:
            for prio in (False, True):
                try:
                    info = self.client.xpending(self.stream(queue, prio), self.group)
                except redis.ResponseError:
                    continue
                total += int(info["pending"])
        return total

    @_unavailable
    def queued_count(self, queues: Sequence[str]) -> int:
        """Messages not yet delivered in ``queues``, plus every delayed message."""
        # Settled entries are deleted, so a stream holds exactly its undelivered and its
        # pending entries.
        total = int(self.client.zcard(self._delayed))
        for queue in queues:
            for prio in (False, True):
                stream = self.stream(queue, prio)
                total += int(self.client.xlen(stream))
        return total - self.pending_count(queues)

    def close(self) -> None:
        self.client.close()
