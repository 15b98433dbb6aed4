"""Health checks, priority tasks and run_task.

A flaky "connection" sometimes breaks; ``check_health`` tells tasker that a
``BrokenConnection`` means the worker's connection is unusable, so the worker is
destroyed and replaced and the task retried on a fresh one. Priority tasks jump the
queue; ``run_task`` runs urgent work at once in the caller's thread on a pooled
connection.
"""

from __future__ import annotations

import itertools
import logging
import sys
import threading
import time

import tasker


def say(line: str) -> None:
    sys.stdout.write(f"  {line}\n")  # one write, so lines from workers never interleave


class BrokenConnection(Exception):
    """The connection is dead; the worker holding it must be replaced."""


class Connection:
    _numbers = itertools.count(1)
    _broke_one = False

    def __init__(self) -> None:
        self.number = next(self._numbers)
        self.queries = 0
        say(f"open connection #{self.number}")

    def query(self, sql: str) -> str:
        self.queries += 1
        if self.queries == 2 and not Connection._broke_one:  # one connection dies, once
            Connection._broke_one = True
            raise BrokenConnection(f"connection #{self.number} lost")
        time.sleep(0.01)
        return f"{sql!r} on #{self.number}"

    def close(self) -> None:
        say(f"close connection #{self.number}")


def healthy(exc: BaseException) -> bool:
    return not isinstance(exc, BrokenConnection)


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="  log %(levelname)s %(message)s")
    print("--- tasker intermediate example ---")
    manager: tasker.TaskManager[Connection, str] = tasker.TaskManager(
        Connection,
        on_destroy=Connection.close,
        workers=1,
        resource_pool_size=1,
        check_health=healthy,
        max_retries=2,
        burst_interval=None,
    )
    with manager:
        started, gate = threading.Event(), threading.Event()

        def warm_up(conn: Connection) -> str:
            started.set()
            gate.wait()  # hold the only worker so the next tasks have to wait
            return conn.query("warm-up")

        blocker = manager.submit(warm_up)
        started.wait()
        normal = [manager.submit(lambda c, i=i: c.query(f"select {i}")) for i in range(3)]
        urgent = manager.submit(lambda c: c.query("select urgent"), priority=True)
        gate.set()
        print(f"  {blocker.result()}")
        print(f"  priority: {urgent.result()} (ran before the waiting normal tasks)")
        for handle in normal:
            print(f"  {handle.result()}  attempts={handle.attempts}")
        print(f"  run_task: {manager.run_task(lambda c: c.query('select now()'))}")
        m = manager.metrics()
        print(f"  health retries: {m.total_retried}, completed: {m.total_completed}")
        print(f"  workers still: {manager.stats().active_workers} (the broken one was replaced)")
    print("--- stopped ---")


if __name__ == "__main__":
    main()
