"""Every example runs to completion and prints what it promises."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"{name} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_basic_example_runs_tasks_concurrently_and_cleans_up() -> None:
    out = run_example("basic.py")
    assert "10 + 25 = 35" in out
    assert "100 - 40 = 60" in out
    assert "squares: [0, 1, 4, 9, 16, 25]" in out
    created = out.count("created a Calculator")
    assert created >= 2  # two base workers, and any burst worker the load called for
    assert out.count("destroyed the Calculator") == created


def test_intermediate_example_replaces_the_broken_connection() -> None:
    out = run_example("intermediate.py")
    assert "health retries: 1" in out
    assert "workers still: 1 (the broken one was replaced)" in out
    assert "ran before the waiting normal tasks" in out
    assert out.count("open connection") == out.count("close connection")


@pytest.mark.timeout(90)
def test_advanced_example_bursts_and_serves_metrics() -> None:
    out = run_example("advanced.py", "--seconds", "1.5")
    assert "priority task answered" in out
    assert 'scraped /metrics: tasker_workers{kind="base",manager="api"} 2.0' in out
    burst_sizes = [
        int(line.split("(burst")[1].split(")")[0]) for line in out.splitlines() if "(burst" in line
    ]
    assert max(burst_sizes) > 0, "the load never made it burst"
    assert "--- stopped:" in out


def test_scheduling_example_shows_retries_timeouts_and_status() -> None:
    out = run_example("scheduling.py")
    assert "status: completed after 3 attempts" in out
    assert "timed out after 0.2s" in out
    assert "cron 'nightly-report' next runs at" in out
    assert "next_run=None" in out
