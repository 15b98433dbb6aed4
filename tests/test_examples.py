"""Every example runs to completion and prints what it promises."""

from __future__ import annotations

import json
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


def test_pipeline_example_runs_every_chain_to_the_end() -> None:
    out = run_example("pipeline.py", "--documents", "60")
    assert "dispatcher: submitted 60, failed 0" in out
    assert "chains completed: 60" in out
    assert "stages done: fetch=60 parse=60 store=60" in out
    assert "documents stored: 60" in out


def test_logging_hook_example_prints_one_json_line_per_event() -> None:
    lines = [json.loads(line) for line in run_example("logging_hook.py").splitlines()]
    events = [(line["name"], line["event"]) for line in lines]
    assert events[:5] == [
        ("flaky", "submit"),
        ("flaky", "start"),
        ("flaky", "retry"),
        ("flaky", "start"),
        ("flaky", "success"),
    ]
    assert events[-1][1] == "failure"
    assert "ZeroDivisionError" in lines[-1]["error"]
