"""Run a worker of ``app.py``: the same as ``tasker worker app:app`` from this folder.

    python examples/distributed/worker.py [--workers 2] [--metrics-port 9464]

Stops gracefully on Ctrl-C or SIGTERM: it stops reading, finishes and acknowledges
what it holds, and prints a summary.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tasker.distributed import run_worker

parser = argparse.ArgumentParser()
parser.add_argument("--workers", type=int, default=2)
parser.add_argument("--max-workers", type=int, default=4)
parser.add_argument("--metrics-port", type=int, default=None)
args = parser.parse_args()

sys.exit(
    run_worker(
        "app:app",
        workers=args.workers,
        max_workers=args.max_workers,
        metrics_port=args.metrics_port,
    )
)
