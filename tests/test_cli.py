"""The `tasker` command end to end: demo, run, signals, /metrics, exit codes, errors.

Subprocess tests run the installed console script (and `python -m tasker`) in a fresh
directory, with no TASKER_* variables but those each test sets. In-process tests call
``tasker._cli.cli`` for the many error paths, which fail before anything starts.
"""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tasker._cli import cli

REPO = Path(__file__).resolve().parent.parent
SCRIPT = Path(sys.executable).with_name("tasker")


def clean_env(**variables: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKER_")}
    env.update(PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1", TASKER_VIEW_INTERVAL="0.1")
    env.update(variables)
    return env


def run(
    *args: str, cwd: Path, timeout: float = 30, **variables: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=clean_env(**variables),
        check=False,
    )


class Running:
    """A `tasker` process whose stdout the test reads as it comes."""

    def __init__(self, *args: str, cwd: Path, **variables: str) -> None:
        self.proc = subprocess.Popen(
            [str(SCRIPT), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=cwd,
            env=clean_env(**variables),
        )
        self.seen: list[str] = []

    def read_until(self, prefix: str) -> str:
        """Return the first stdout line starting with ``prefix`` (the test timeout bounds it)."""
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.seen.append(line)
            if line.startswith(prefix):
                return line.strip()
        raise AssertionError(f"no line starting with {prefix!r} in:\n{''.join(self.seen)}")

    def finish(self, sig: signal.Signals | None = None) -> tuple[int, str, str]:
        if sig is not None:
            self.proc.send_signal(sig)
        out, err = self.proc.communicate(timeout=30)
        return self.proc.returncode, "".join(self.seen) + out, err


@pytest.fixture
def running() -> Iterator[list[Running]]:
    """Processes started by a test; killed if the test failed before they ended."""
    started: list[Running] = []
    yield started
    for r in started:
        if r.proc.poll() is None:
            r.proc.kill()
            r.proc.communicate()


def start(running: list[Running], *args: str, cwd: Path, **variables: str) -> Running:
    r = Running(*args, cwd=cwd, **variables)
    running.append(r)
    return r


def summary(out: str) -> list[str]:
    lines = [re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", line) for line in out.splitlines()]
    firsts = [i for i, line in enumerate(lines) if line.startswith("Summary")]
    assert len(firsts) == 1, f"expected one Summary block in:\n{out}"
    return lines[firsts[0] :]


# -- tasker demo ---------------------------------------------------------------------------


def test_demo_with_a_small_count_exits_0_and_prints_the_summary(tmp_path: Path) -> None:
    done = run("demo", "--count", "30", "--interval", "0.005", "--seed", "1", cwd=tmp_path)

    assert done.returncode == 0, done.stderr
    block = summary(done.stdout)
    assert block[0].startswith("Summary: stopped gracefully (generator finished)")
    text = "\n".join(block)
    assert "demo: 30 tasks arrived" in text
    assert "execution p50" in text
    assert "p95" in text
    assert "p99" in text
    assert "generator: 30 tasks submitted" in text
    assert "stopped in order: view, generator, metrics, manager" in text
    assert done.stderr == ""


def test_the_plain_view_shows_workers_queues_throughput_latency_failures(
    tmp_path: Path,
) -> None:
    done = run("demo", "--count", "40", "--interval", "0.01", "--seed", "2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("[")]
    assert lines, done.stdout
    for part in ("demo: workers 2+", "queue main", "prio", "/s out", "p50", "p95", "p99"):
        assert part in lines[0]
    assert "failed" in lines[0]
    assert "retried" in lines[0]
    assert "submitted" in lines[0]


def test_sigterm_during_a_run_stops_gracefully_with_exit_0(
    tmp_path: Path, running: list[Running]
) -> None:
    demo = start(running, "demo", "--count", "0", cwd=tmp_path)
    demo.read_until("running:")
    demo.read_until("[")  # a view line: tasks are flowing

    code, out, err = demo.finish(signal.SIGTERM)

    assert code == 0, err
    block = summary(out)
    assert block[0].startswith("Summary: stopped gracefully (SIGTERM)")
    assert "tasks submitted" in "\n".join(block)


def test_metrics_answer_during_the_run_and_ctrl_c_stops_it(
    tmp_path: Path, running: list[Running]
) -> None:
    demo = start(running, "demo", "--count", "0", cwd=tmp_path, TASKER_METRICS_PORT="0")
    url = demo.read_until("metrics:").removeprefix("metrics:").strip()
    demo.read_until("running:")
    assert url.startswith("http://127.0.0.1:")
    assert url.endswith("/metrics")

    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.status == 200
        text = response.read().decode()

    assert 'tasker_workers{kind="base",manager="demo"} 2.0' in text
    assert "tasker_tasks_arrived_total" in text
    code, out, err = demo.finish(signal.SIGINT)
    assert code == 0, err
    assert summary(out)[0].startswith("Summary: stopped gracefully (SIGINT)")
    assert "Traceback" not in err


# -- tasker run -------------------------------------------------------------------------------


def test_run_a_factory_from_a_test_module_until_its_modules_finish(tmp_path: Path) -> None:
    done = run("run", "tests.cli_factories:finite_modules", cwd=tmp_path)

    assert done.returncode == 0, done.stderr
    block = summary(done.stdout)
    assert block[0].startswith("Summary: stopped gracefully (generator finished)")
    assert "finite: 5 tasks arrived, 5 completed, 0 failed" in "\n".join(block)


def test_run_gives_the_configuration_to_a_factory_and_stops_on_sigterm(
    tmp_path: Path, running: list[Running]
) -> None:
    (tmp_path / ".env").write_text("TASKER_WORKERS=2\nTASKER_MAX_WORKERS=5\n")
    service = start(
        running, "run", "tests.cli_factories:configured", cwd=tmp_path, TASKER_WORKERS="3"
    )
    # The environment wins over .env, and .env fills in the rest.
    assert service.read_until("factory got") == "factory got workers=3 max_workers=5"
    service.read_until("running: manager, metrics, view")

    code, out, err = service.finish(signal.SIGTERM)

    assert code == 0, err
    block = "\n".join(summary(out))
    assert "configured: workers base 3" in block
    assert "max 5" in block


def test_a_shutdown_that_overruns_its_budget_exits_1_naming_what_was_running(
    tmp_path: Path, running: list[Running]
) -> None:
    service = start(
        running,
        "run",
        "tests.cli_factories:stuck",
        cwd=tmp_path,
        TASKER_SHUTDOWN_TIMEOUT="0.3",
        TASKER_MODULES="manager",
    )
    service.read_until("running: manager")

    code, out, err = service.finish(signal.SIGTERM)

    assert code == 1
    assert summary(out)[0].startswith("Summary: shutdown overran its 0.3s budget (SIGTERM)")
    last = err.strip().splitlines()[-1]
    assert last.startswith("tasker run: error: shutdown overran its 0.3s budget (SIGTERM)")
    # The module, and what it left running (in the manager's words when its stop()
    # could return in time, else the runner's).
    assert re.search(
        r"manager: (task manager 'stuck' still running 1 task|stop\(\) still running)", last
    )


# -- errors: one line, the right exit code --------------------------------------------------------


def test_a_usage_error_exits_2_with_one_line_on_stderr(tmp_path: Path) -> None:
    done = run("demo", "--count", "lots", cwd=tmp_path)

    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "tasker demo: error: --count must be an integer >= 0 (got --count='lots')"
    ]
    assert done.stdout == ""


def test_a_bad_variable_exits_2_naming_it_also_under_python_m(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tasker", "demo"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
        env=clean_env(TASKER_WORKERS="zero"),
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "tasker demo: error: TASKER_WORKERS must be an integer >= 1 (got TASKER_WORKERS='zero')"
    ]


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """In-process runs: a clean directory and no TASKER_* variables."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(REPO))
    for key in list(os.environ):
        if key.startswith("TASKER_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("TASKER_VIEW_INTERVAL", "0.1")
    return tmp_path


def call(*argv: str, out: io.StringIO | None = None) -> int:
    try:
        return cli(list(argv), out=out or io.StringIO())
    except SystemExit as exc:  # argparse's own errors and --help
        return int(exc.code or 0)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["bogus"], "tasker: error: argument COMMAND: invalid choice: 'bogus'"),
        (["run"], "tasker run: error: the following arguments are required: TARGET"),
        (["demo", "--seed", "x"], "tasker demo: error: argument --seed: invalid int value: 'x'"),
        (["demo", "--view", "fancy"], "--view must be one of auto, live, plain, off"),
        (["demo", "--interval", "-1"], "--interval must be a duration > 0 in seconds"),
        (["demo", "--workers", "4", "--max-workers", "2"], "--max-workers must be >= --workers"),
        (["demo", "--metrics-port", "99999"], "--metrics-port must be an integer from 0"),
        (["demo", "--shutdown-timeout", "soon"], "--shutdown-timeout must be a duration"),
        (["demo", "--env-file", "missing.env"], "--env-file 'missing.env' cannot be read"),
        (["run", "nocolon"], "TARGET must be package.module:factory (got TARGET='nocolon')"),
        (["run", "tests.nope:f"], "TARGET module 'tests.nope' cannot be imported"),
        (
            ["run", "tests.cli_factories:missing"],
            "TARGET names 'missing', which 'tests.cli_factories' does not have",
        ),
        (["run", "tests.cli_factories:NOT_CALLABLE"], "TARGET must name a callable factory"),
        (
            ["run", "tests.cli_factories:not_a_service"],
            "TARGET factory must return a TaskManager, a Module, a list of modules or a "
            "ServiceRunner (got int",
        ),
        (["run", "tests.cli_factories:cyclic"], "module dependencies form a cycle: a -> b -> a"),
    ],
)
def test_usage_and_configuration_errors_are_one_line_and_exit_2(
    in_tmp: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert call(*argv) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    assert message in err


def test_a_module_list_without_the_manager_is_a_configuration_error(
    in_tmp: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TASKER_MODULES", "generator,view")
    assert call("demo") == 2
    assert capsys.readouterr().err == (
        "tasker demo: error: TASKER_MODULES must include manager for generator, view "
        "(got TASKER_MODULES='generator,view')\n"
    )


def test_a_factory_that_raises_exits_1_with_one_line(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert call("run", "tests.cli_factories:broken") == 1
    assert capsys.readouterr().err == (
        "tasker run: error: factory tests.cli_factories:broken raised "
        "RuntimeError('database is down')\n"
    )


@pytest.mark.parametrize("argv", [["--help"], ["demo", "--help"], ["run", "--help"]])
def test_every_command_has_help(
    in_tmp: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    assert call(*argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: tasker")
    assert "TASKER_SHUTDOWN_TIMEOUT" in out  # the variables are documented in the help


# -- the view without and with rich --------------------------------------------------------------


def test_the_plain_view_needs_no_rich(
    in_tmp: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "rich", None)  # `import rich` now fails
    out = io.StringIO()
    assert call("demo", "--count", "5", "--interval", "0.001", "--seed", "3", out=out) == 0
    assert summary(out.getvalue())[0].startswith("Summary: stopped gracefully")

    monkeypatch.setenv("TASKER_VIEW", "live")
    assert call("demo") == 2
    assert "TASKER_VIEW=live needs rich: pip install 'tasker-pool[cli]'" in capsys.readouterr().err


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_the_view_refreshes_in_place(in_tmp: Path) -> None:
    pytest.importorskip("rich")
    out = FakeTerminal()
    assert call("demo", "--count", "5", "--interval", "0.001", "--seed", "4", out=out) == 0
    text = out.getvalue()
    assert "\x1b[1A" in text
    assert "\x1b[2K" in text
    # Other output goes above the table (its lines erased first), never into a row of it.
    assert re.search(r"(\n|\x1b\[2K)metrics: http://127\.0\.0\.1:\d+/metrics\n", text)
    assert "throughput" in text
    assert "latency" in text
    assert "workers" in text
    assert summary(text)[0].startswith("Summary: stopped gracefully")
