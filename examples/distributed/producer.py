"""Enqueue work from a process that has no handler code running: by name, as JSON.

python examples/distributed/producer.py
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from app import app

handle = app.enqueue("resize", {"id": 7, "width": 256})
print(f"enqueued resize {handle.id}: {handle.status().value}")
print(f"resize result: {handle.result(timeout=30)}")

again = app.enqueue("resize", {"id": 7, "width": 256}, unique_key="resize-7-256")
same = app.enqueue("resize", {"id": 7, "width": 256}, unique_key="resize-7-256")
print(f"unique_key: second enqueue returned the same task: {again.id == same.id}")

group = app.group([("resize", {"id": i, "width": 64}) for i in range(8)])
widths = [r["width"] for r in group.results(timeout=30)]
workers = {r["by"] for r in group.results(timeout=30)}
print(f"group of {len(group)} resized to {set(widths)} by {len(workers)} worker process(es)")

chain = app.chain("resize", "publish", payload={"id": 42, "width": 512})
print(f"chain: {chain.result(timeout=30)}")

flaky = app.enqueue("flaky", 9)
print(f"flaky: {flaky.result(timeout=30)} after {flaky.info().attempts} attempts")

later = app.enqueue("resize", {"id": 99}, delay=0.5)
print(f"delayed: {later.status().value}, then {later.result(timeout=30)['id']}")
app.close()
