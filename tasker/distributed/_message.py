"""The wire format: one JSON object per message, optionally signed with HMAC-SHA256.

::

    unsigned:  {"v":1,"id":"…","task":"resize","queue":"images","payload":{…},…}
    signed:    s1:<64 hex digits of HMAC-SHA256(key, json)>:{"v":1,…}

The signature covers the exact JSON bytes that follow it, so no re-serialisation is
needed to check it and any language can produce or verify a message. Nothing here ever
unpickles: a body is either valid JSON with the fields below or it is rejected with a
reason (:class:`BadMessage`), which the worker records in the dead-letter stream.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import dataclass, field
from typing import Any

from tasker.distributed._errors import BadMessage

__all__ = ["Link", "Message", "Signer", "check_name", "dumps"]

VERSION = 1
_SIGNED = b"s1:"
_SIG_LEN = 64
_NAME = re.compile(r"[A-Za-z0-9_.:\-]{1,200}\Z")


def check_name(what: str, value: object) -> str:
    """Validate a task or queue name: 1-200 of ``A-Z a-z 0-9 _ . : -``."""
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str (got {what}={value!r})")
    if not _NAME.match(value):
        raise ValueError(
            f"{what} must be 1-200 characters from A-Z a-z 0-9 _ . : - (got {what}={value!r})"
        )
    return value


def dumps(value: Any, what: str) -> str:
    """Strict JSON (no NaN), or a TypeError that says what could not be encoded."""
    try:
        return json.dumps(value, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{what} must be JSON-serialisable: {exc}") from exc


@dataclass(frozen=True, slots=True)
class Link:
    """A later link of a chain: which task runs next, with the previous link's result."""

    id: str
    task: str
    queue: str
    priority: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "task": self.task, "queue": self.queue, "prio": self.priority}


@dataclass(frozen=True, slots=True)
class Message:
    """One run request of a named task.

    Attributes:
        id: The task's id, the same for every retry of it.
        task: The registered handler name.
        queue: The queue it was published to.
        payload: The JSON value handed to the handler.
        priority: Read before the queue's normal messages.
        retries: Retries its :class:`~tasker.RetryPolicy` granted before this message.
        runs: Runs of this task before this message (retries and redeliveries).
        submitted: UNIX time the task was first enqueued.
        sent: UNIX time this message was due (enqueue time, or its delay's end).
        chain: The links still to run after this one.
        group: The id of the group it belongs to, if any.
        last_error: ``{"type", "message"}`` of the failure that led to this retry.
    """

    id: str
    task: str
    queue: str
    payload: Any
    priority: bool = False
    retries: int = 0
    runs: int = 0
    submitted: float = 0.0
    sent: float = 0.0
    chain: tuple[Link, ...] = field(default=())
    group: str | None = None
    last_error: dict[str, str] | None = None

    def to_json(self) -> str:
        data: dict[str, Any] = {
            "v": VERSION,
            "id": self.id,
            "task": self.task,
            "queue": self.queue,
            "payload": self.payload,
            "prio": self.priority,
            "retries": self.retries,
            "runs": self.runs,
            "submitted": self.submitted,
            "sent": self.sent,
        }
        if self.chain:
            data["chain"] = [link.to_json() for link in self.chain]
        if self.group is not None:
            data["group"] = self.group
        if self.last_error is not None:
            data["error"] = self.last_error
        return dumps(data, f"the payload of task {self.task!r}")

    @classmethod
    def from_json(cls, text: bytes) -> Message:
        try:
            data = json.loads(text)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BadMessage(f"undecodable message: not JSON ({exc})") from None
        if not isinstance(data, dict):
            raise BadMessage(f"undecodable message: a JSON {type(data).__name__}, not an object")
        if data.get("v") != VERSION:
            raise BadMessage(f"undecodable message: unknown version {data.get('v')!r}")
        try:
            chain = tuple(
                Link(str(c["id"]), str(c["task"]), str(c["queue"]), bool(c.get("prio", False)))
                for c in data.get("chain", ())
            )
            group = data.get("group")
            error = data.get("error")
            return cls(
                id=_text(data["id"]),
                task=_text(data["task"]),
                queue=_text(data["queue"]),
                payload=data.get("payload"),
                priority=bool(data.get("prio", False)),
                retries=int(data.get("retries", 0)),
                runs=int(data.get("runs", 0)),
                submitted=float(data.get("submitted", 0.0)),
                sent=float(data.get("sent", 0.0)),
                chain=chain,
                group=None if group is None else _text(group),
                last_error=(
                    {"type": str(error.get("type")), "message": str(error.get("message"))}
                    if isinstance(error, dict)
                    else None
                ),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BadMessage(f"undecodable message: bad or missing field {exc}") from None


def _text(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise TypeError(f"expected a non-empty string, got {value!r}")
    return value


class Signer:
    """Signs outgoing message bodies and checks incoming ones.

    With no key, bodies are plain JSON and signed bodies are accepted unchecked (the
    broker is trusted). With a key, every body is signed and a body that is unsigned or
    whose signature does not match is refused.
    """

    __slots__ = ("_key",)

    def __init__(self, key: bytes | str | None) -> None:
        if isinstance(key, str):
            key = key.encode()
        if key is not None and not isinstance(key, bytes):
            raise TypeError(f"signing_key must be bytes, str or None (got {type(key).__name__})")
        if key is not None and len(key) < 16:
            raise ValueError(
                f"signing_key must be at least 16 bytes (got {len(key)}); use e.g. "
                "secrets.token_hex(32)"
            )
        self._key = key

    @property
    def enabled(self) -> bool:
        return self._key is not None

    def seal(self, message: Message) -> bytes:
        body = message.to_json().encode()
        if self._key is None:
            return body
        digest = hmac.new(self._key, body, hashlib.sha256).hexdigest().encode()
        return _SIGNED + digest + b":" + body

    def open(self, body: bytes) -> Message:
        """Check and decode a body; raise :class:`BadMessage` with the reason if refused."""
        if body.startswith(_SIGNED):
            head = len(_SIGNED) + _SIG_LEN
            digest, payload = body[len(_SIGNED) : head], body[head + 1 :]
            if body[head : head + 1] != b":":
                raise BadMessage("undecodable message: malformed signature header")
            if self._key is not None:
                expected = hmac.new(self._key, payload, hashlib.sha256).hexdigest().encode()
                if not hmac.compare_digest(expected, digest):
                    raise BadMessage("bad signature: the message was not signed with this key")
            return Message.from_json(payload)
        if self._key is not None:
            raise BadMessage("unsigned message refused: this worker requires signed messages")
        return Message.from_json(body)
