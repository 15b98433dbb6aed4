"""A pipeline: a dispatcher feeds chains of fetch -> parse -> store, with hooks.

Documents arrive on a ``queue.Queue`` (as they would from a socket or a file watcher).
A dispatcher moves them into the manager in batches; each document becomes a chain of
three tasks running on the workers' connections, each link a task of its own (own id,
retries, status). A hook counts stages and failures; the structured-logging hook from
``examples/logging_hook.py`` could sit beside it.

    python examples/pipeline.py [--documents 200]
"""

from __future__ import annotations

import argparse
import collections
import queue
import random
import threading
from typing import Any, ClassVar

import tasker


class Store:
    """Stands in for a database connection, one per worker."""

    saved: ClassVar[collections.Counter[str]] = collections.Counter()
    lock: ClassVar[threading.Lock] = threading.Lock()

    def fetch(self, doc_id: int) -> str:
        if random.random() < 0.05:
            raise ConnectionError(f"fetch {doc_id}: connection reset")
        return f"id={doc_id};words={' '.join(['word'] * (doc_id % 7 + 1))}"

    def save(self, doc_id: int, words: int) -> int:
        with self.lock:
            self.saved[f"doc-{doc_id}"] = words
        return words


class StageCounter:
    """A hook: counts finished tasks per stage name, and retries."""

    def __init__(self) -> None:
        self.done: collections.Counter[str] = collections.Counter()
        self.retries = 0
        self._lock = threading.Lock()

    def on_success(self, info: tasker.TaskInfo) -> None:
        with self._lock:
            self.done[(info.name or "?").split(".")[-1]] += 1

    def on_retry(self, info: tasker.TaskInfo) -> None:
        with self._lock:
            self.retries += 1


def document_pipeline(manager: tasker.TaskManager[Store, Any], doc_id: int) -> Any:
    """The work item the dispatcher submits: it starts the document's chain."""

    def fetch(store: Store) -> str:
        return store.fetch(doc_id)

    def parse(_: Store, text: str) -> int:
        return len(text.split("words=")[1].split())

    def store(store: Store, words: int) -> int:
        return store.save(doc_id, words)

    retry = tasker.RetryPolicy(max_retries=5, strategy=tasker.RetryStrategy.IMMEDIATE)
    return manager.chain(fetch, parse, store, retry=retry)


def main() -> None:
    parser = argparse.ArgumentParser(description="tasker pipeline example")
    parser.add_argument("--documents", type=int, default=200)
    args = parser.parse_args()
    random.seed(7)
    counter = StageCounter()
    manager: tasker.TaskManager[Store, Any] = tasker.TaskManager(
        Store, workers=4, max_workers=8, hooks=[counter], name="pipeline"
    )
    chains: list[tasker.TaskHandle[Any]] = []
    inbox: queue.Queue[Any] = queue.Queue()

    def start_chain(_: Store, doc_id: int) -> None:
        chains.append(document_pipeline(manager, doc_id))

    with manager:
        dispatcher = manager.dispatch(inbox, batch_size=25, flush_interval=0.02)
        for doc_id in range(args.documents):
            inbox.put(lambda store, doc_id=doc_id: start_chain(store, doc_id))
        inbox.put(None)  # end of input
        dispatcher.join()
        for handle in list(chains):
            handle.result(timeout=30)
    print(f"--- tasker pipeline: {args.documents} documents ---")
    print(f"  dispatcher: submitted {dispatcher.submitted}, failed {dispatcher.failed}")
    print(f"  chains completed: {sum(1 for h in chains if h.done() and not h.exception())}")
    print(
        f"  stages done: fetch={counter.done['fetch']} parse={counter.done['parse']} "
        f"store={counter.done['store']}; retries={counter.retries}"
    )
    print(f"  documents stored: {len(Store.saved)}")


if __name__ == "__main__":
    main()
