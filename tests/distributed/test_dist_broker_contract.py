"""The broker contract: the same behaviour from RedisBroker and MemoryBroker."""

from __future__ import annotations

import time

import pytest
from conftest import VISIBILITY

from tasker.distributed import Broker, Delivery, Outgoing, Record, Settlement
from tasker.testing import wait_until


def out(task_id: str, queue: str = "q", *, priority: bool = False, **options: object) -> Outgoing:
    record = Record(task_id, "scheduled" if options.get("delay") else "queued", b"{}")
    return Outgoing(task_id, queue, f"body-{task_id}".encode(), priority, record=record, **options)  # type: ignore[arg-type]


def fetch_all(broker: Broker, count: int = 100, consumer: str = "c1") -> list[Delivery]:
    return broker.fetch(["q"], consumer, count, 0.2)


def test_published_messages_are_fetched_once_and_gone_after_settle(broker: Broker) -> None:
    assert broker.publish([out("a"), out("b")]) == ["a", "b"]
    got = fetch_all(broker)
    assert [(d.task_id, d.body, d.deliveries, d.queue) for d in got] == [
        ("a", b"body-a", 1, "q"),
        ("b", b"body-b", 1, "q"),
    ]
    assert broker.fetch(["q"], "c2", 10, 0.05) == []  # owned by c1 now
    broker.settle([Settlement(d) for d in got])
    # Waiting past the visibility timeout: settled messages never come back.
    assert broker.fetch(["q"], "c2", 10, VISIBILITY * 1.5) == []


def test_priority_messages_are_read_before_normal_ones_fifo_within_each(broker: Broker) -> None:
    broker.publish([out("n1"), out("n2"), out("p1", priority=True), out("p2", priority=True)])
    assert [d.task_id for d in fetch_all(broker)] == ["p1", "p2", "n1", "n2"]


def test_fetch_takes_no_more_than_asked(broker: Broker) -> None:
    broker.publish([out(f"m{i}") for i in range(5)])
    assert [d.task_id for d in broker.fetch(["q"], "c1", 2, 0.1)] == ["m0", "m1"]
    assert [d.task_id for d in broker.fetch(["q"], "c1", 10, 0.1)] == ["m2", "m3", "m4"]


def test_fetch_waits_for_a_message_published_meanwhile(broker: Broker) -> None:
    import threading

    timer = threading.Timer(0.1, lambda: broker.publish([out("late")]))
    timer.start()
    try:
        got = broker.fetch(["q"], "c1", 10, 2.0)
    finally:
        timer.join()
    assert [d.task_id for d in got] == ["late"]


def test_unacknowledged_message_is_redelivered_after_the_visibility_timeout(
    broker: Broker,
) -> None:
    broker.publish([out("a")])
    (first,) = fetch_all(broker, consumer="dead-consumer")
    deliveries: list[Delivery] = []
    wait_until(
        lambda: deliveries.extend(broker.fetch(["q"], "c2", 10, 0.1)) or deliveries,
        timeout=VISIBILITY * 5,
    )
    (again,) = deliveries
    assert (again.task_id, again.body, again.deliveries) == ("a", b"body-a", 2)
    broker.settle([Settlement(again)])
    broker.settle([Settlement(first)])  # the dead consumer's late settle: no effect
    assert broker.fetch(["q"], "c3", 10, VISIBILITY * 1.5) == []


def test_touch_keeps_a_held_message_from_being_redelivered(broker: Broker) -> None:
    broker.publish([out("a")])
    held = fetch_all(broker)
    deadline = time.monotonic() + VISIBILITY * 2
    while time.monotonic() < deadline:
        broker.touch("c1", held)
        assert broker.fetch(["q"], "c2", 10, VISIBILITY / 4) == []
    broker.settle([Settlement(d) for d in held])


def test_message_delivered_more_than_max_deliveries_is_dead_lettered(broker: Broker) -> None:
    broker.publish([out("poison")])
    seen = []
    wait_until(
        lambda: seen.extend(broker.fetch(["q"], "c", 10, 0.1)) or broker.dead_letters(),
        timeout=VISIBILITY * 8,
    )
    assert [d.deliveries for d in seen] == [1, 2, 3]  # max_deliveries=3
    (dead,) = broker.dead_letters()
    assert (dead.task_id, dead.queue, dead.body, dead.deliveries) == (
        "poison",
        "q",
        b"body-poison",
        4,
    )
    assert "delivered 4 times (max_deliveries=3)" in dead.reason
    (record,) = broker.get_records(["poison"])
    assert record is not None
    assert record.state == "failed"
    assert record.note is not None
    assert "max_deliveries=3" in record.note


def test_delayed_messages_wait_then_all_due_ones_are_delivered_together(broker: Broker) -> None:
    broker.publish([out(f"d{i}", delay=0.4) for i in range(50)])
    assert [r.state for r in broker.get_records(["d0"]) if r] == ["scheduled"]
    assert broker.fetch(["q"], "c", 100, 0.1) == []
    got: list[Delivery] = []
    wait_until(lambda: got.extend(broker.fetch(["q"], "c", 100, 0.1)) or len(got) >= 50)
    assert sorted(d.task_id for d in got) == sorted(f"d{i}" for i in range(50))
    assert [r.state for r in broker.get_records(["d0"]) if r] == ["queued"]


def test_unique_key_publishes_once_and_returns_the_holder(broker: Broker) -> None:
    first = out("one", unique_key="k", unique_for=0.3)
    assert broker.publish([first]) == ["one"]
    assert broker.publish([out("two", unique_key="k", unique_for=0.3)]) == ["one"]
    assert [d.task_id for d in fetch_all(broker)] == ["one"]
    assert broker.get_records(["two"]) == [None]
    # Once the key expires a new task goes through.
    wait_until(lambda: broker.publish([out("three", unique_key="k", unique_for=0.3)]) == ["three"])


def test_settle_stores_records_publishes_follow_ups_and_acks_once(broker: Broker) -> None:
    broker.publish([out("a")])
    (held,) = fetch_all(broker)
    settlement = Settlement(
        held,
        records=(Record("a", "completed", b'{"result": 1}', ttl=60),),
        publish=(out("next"),),
    )
    broker.settle([settlement])
    broker.settle([settlement])  # a duplicate settle publishes nothing more
    (record,) = broker.get_records(["a"])
    assert record is not None
    assert (record.state, record.data) == ("completed", b'{"result": 1}')
    assert [d.task_id for d in fetch_all(broker)] == ["next"]


def test_a_non_terminal_record_never_overwrites_a_terminal_one(broker: Broker) -> None:
    broker.put_records([Record("t", "completed", b"done", ttl=60)])
    broker.put_records([Record("t", "running", b"late duplicate")])
    (record,) = broker.get_records(["t"])
    assert record is not None
    assert (record.state, record.data) == ("completed", b"done")
    broker.put_records([Record("t", "failed", b"terminal over terminal", ttl=60)])
    assert [r.state for r in broker.get_records(["t"]) if r] == ["failed"]


def test_records_expire_after_their_ttl(broker: Broker) -> None:
    broker.put_records([Record("short", "completed", b"x", ttl=0.2)])
    assert broker.get_records(["short", "unknown"])[1] is None
    wait_until(lambda: broker.get_records(["short"]) == [None], timeout=3)


def test_dead_letters_are_listed_redriven_and_purged(broker: Broker) -> None:
    broker.publish([out("x"), out("y")])
    held = fetch_all(broker)
    broker.settle([Settlement(d, dead_reason=f"bad {d.task_id}") for d in held])
    letters = broker.dead_letters()
    assert [(d.task_id, d.reason, d.body) for d in letters] == [
        ("x", "bad x", b"body-x"),
        ("y", "bad y", b"body-y"),
    ]
    assert broker.redrive([letters[0].id], [Record("x", "queued", b"{}")]) == 1
    assert [r.state for r in broker.get_records(["x"]) if r] == ["queued"]
    (again,) = fetch_all(broker)
    assert (again.task_id, again.body) == ("x", b"body-x")
    broker.settle([Settlement(again)])
    assert [d.task_id for d in broker.dead_letters()] == ["y"]
    assert broker.purge_dead_letters() == 1
    assert broker.dead_letters() == []


def test_queues_are_separate(broker: Broker) -> None:
    broker.publish([out("img", "images"), out("mail", "emails")])
    assert [d.task_id for d in broker.fetch(["emails"], "c", 10, 0.1)] == ["mail"]
    assert [d.task_id for d in broker.fetch(["images", "emails"], "c", 10, 0.1)] == ["img"]


@pytest.mark.parametrize("count", [0])
def test_fetch_of_nothing_returns_at_once(broker: Broker, count: int) -> None:
    started = time.monotonic()
    assert broker.fetch(["q"], "c", count, 5.0) == []
    assert time.monotonic() - started < 1.0
