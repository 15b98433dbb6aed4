"""The terminal view of a running service: a live table on a terminal, plain lines otherwise.

A module like any other: it starts last (it depends on what it shows) and stops first.
The live view needs ``rich`` (the ``cli`` extra); the plain view needs nothing. Both
read ``stats()`` and ``metrics()`` only, so they cost the task path nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TextIO

from tasker._manager import Stats
from tasker._metrics import Metrics
from tasker._modules import GeneratorModule, ManagerModule, MetricsModule

if TYPE_CHECKING:
    from rich.console import RenderableType
    from rich.live import Live

__all__ = ["Sample", "ViewModule", "format_seconds", "rich_available"]

_LIVE_REFRESH = 0.25  # seconds between frames of the live view


def rich_available() -> bool:
    """True if ``rich`` can be imported (the ``cli`` extra is installed)."""
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    return True


def format_seconds(seconds: float) -> str:
    """``0.0123`` -> ``12.3ms``; ``1.5`` -> ``1.50s``."""
    if seconds < 1.0:
        return f"{seconds * 1000:.1f}ms"
    return f"{seconds:.2f}s"


@dataclass(frozen=True, slots=True)
class Sample:
    """One manager's numbers at one moment."""

    name: str
    stats: Stats
    metrics: Metrics
    max_workers: int


class ViewModule:
    """Shows workers, queues, throughput, latency percentiles, failures and retries.

    Args:
        targets: The manager modules to show, one row (or line) each.
        mode: ``"live"`` (rich, refreshed in place) or ``"plain"`` (a line per manager
            every ``interval``).
        interval: Seconds between plain lines.
        stream: Where to write (a terminal for ``live``).
        generator: A generator whose progress to show.
        metrics: A metrics module whose URL to show.
        title: The first words of the header.
    """

    def __init__(
        self,
        targets: Sequence[ManagerModule[Any, Any]],
        *,
        mode: Literal["live", "plain"],
        interval: float,
        stream: TextIO,
        generator: GeneratorModule[Any, Any] | None = None,
        metrics: MetricsModule | None = None,
        title: str = "tasker",
        name: str = "view",
    ) -> None:
        self.name = name
        self._targets = list(targets)
        extra = [m.name for m in (generator, metrics) if m is not None]
        self.dependencies = (*(t.name for t in self._targets), *extra)
        self.mode = mode
        self.interval = _LIVE_REFRESH if mode == "live" else interval
        self._stream = stream
        self._generator = generator
        self._metrics = metrics
        self._title = title
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._live: Live | None = None
        self._began = time.monotonic()
        self.peak_workers: dict[str, int] = {}
        self._closed_stream = False

    # -- module -----------------------------------------------------------------------------

    def start(self) -> None:
        self._began = time.monotonic()
        if self.mode == "live":
            from rich.console import Console
            from rich.live import Live

            console = Console(file=self._stream)
            self._live = Live(self._render(self._sample()), console=console, auto_refresh=False)
            self._live.start(refresh=True)
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        self._ready.set()

    def wait_ready(self, timeout: float | None) -> bool:
        return self._ready.wait(timeout)

    def stop(self, timeout: float | None) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._live is not None:
            self._live.update(self._render(self._sample()), refresh=True)
            self._live.stop()
            if not self._live.console.is_terminal:
                self._live.console.line()  # off a terminal the last frame has no newline

    def announce(self, line: str) -> None:
        """Write ``line`` to the stream; above the table while the live view is on."""
        if self._live is not None and self._live.is_started:
            self._live.console.print(line, markup=False, highlight=False, soft_wrap=True)
        else:
            self._stream.write(line + "\n")
            self._stream.flush()

    # -- sampling and drawing -----------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping.wait(self.interval):
            samples = self._sample()
            if self._live is not None:
                self._live.update(self._render(samples), refresh=True)
            else:
                self._write_lines(samples)

    def _sample(self) -> list[Sample]:
        samples = []
        for target in self._targets:
            manager = target.manager
            stats = manager.stats()
            name = manager.name
            self.peak_workers[name] = max(self.peak_workers.get(name, 0), stats.active_workers)
            samples.append(Sample(name, stats, manager.metrics(), manager.max_workers))
        return samples

    def _elapsed(self) -> float:
        return time.monotonic() - self._began

    def _progress(self) -> str:
        g = self._generator
        if g is None:
            return ""
        of = f"/{g.count}" if g.count else ""
        return f"submitted {g.submitted}{of}"

    def _write_lines(self, samples: list[Sample]) -> None:
        if self._closed_stream:
            return
        lines = [
            f"[{self._elapsed():6.1f}s] {plain_line(s)}"
            + (f" | {self._progress()}" if self._generator else "")
            for s in samples
        ]
        try:
            self._stream.write("".join(line + "\n" for line in lines))
            self._stream.flush()
        except (BrokenPipeError, ValueError):  # the reader went away (`tasker demo | head`)
            self._closed_stream = True

    def _render(self, samples: list[Sample]) -> RenderableType:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        header = Text()
        header.append(f"{self._title} ", style="bold")
        header.append(f"{self._elapsed():.1f}s", style="cyan")
        if self._generator is not None:
            header.append(f"  {self._progress()}")
        if self._metrics is not None:
            header.append(f"  {self._metrics.url}", style="dim")
        parts: list[RenderableType] = [header]
        for s in samples:
            st, m = s.stats, s.metrics
            grid = Table.grid(padding=(0, 2))
            grid.add_column(style="bold", min_width=10)
            grid.add_column()
            workers = Text(workers_bar(st, s.max_workers) + " ", style="green")
            workers.append(
                f"base {st.active_workers - st.burst_workers}  burst {st.burst_workers}  "
                f"max {s.max_workers}  busy {st.busy_workers}",
                style="default",
            )
            grid.add_row("workers", workers)
            grid.add_row(
                "queues",
                f"main {st.queued_tasks}  priority {st.priority_tasks}  "
                f"scheduled {st.scheduled_tasks}  retrying {st.retrying_tasks}",
            )
            grid.add_row("throughput", f"in {m.arrival_rate:.1f}/s  out {m.completion_rate:.1f}/s")
            grid.add_row(
                "latency",
                f"p50 {format_seconds(m.p50_execution_time)}  "
                f"p95 {format_seconds(m.p95_execution_time)}  "
                f"p99 {format_seconds(m.p99_execution_time)}  "
                f"(wait p95 {format_seconds(m.p95_wait_time)})",
            )
            tasks = Text(f"completed {m.total_completed}  ")
            tasks.append(f"failed {m.total_failed}", style="red" if m.total_failed else "")
            tasks.append(f"  retried {m.total_retried}  cancelled {m.total_cancelled}")
            grid.add_row("tasks", tasks)
            parts += [Text(s.name, style="bold magenta"), grid]
        return Group(*parts)


def workers_bar(stats: Stats, max_workers: int, width: int = 32) -> str:
    """``███░░··``: busy workers, idle ones, and room to burst, up to ``width`` cells."""
    scale = min(1.0, width / max(max_workers, 1))
    busy = round(stats.busy_workers * scale)
    live = max(busy, round(stats.active_workers * scale))
    room = max(live, round(max_workers * scale))
    return "█" * busy + "░" * (live - busy) + "·" * (room - live)


def plain_line(s: Sample) -> str:
    """One manager's numbers on one line."""
    st, m = s.stats, s.metrics
    return (
        f"{s.name}: workers {st.active_workers - st.burst_workers}+{st.burst_workers}"
        f"/{s.max_workers} busy {st.busy_workers} | queue main {st.queued_tasks} "
        f"prio {st.priority_tasks} | in {m.arrival_rate:.1f}/s out {m.completion_rate:.1f}/s | "
        f"p50 {format_seconds(m.p50_execution_time)} p95 {format_seconds(m.p95_execution_time)} "
        f"p99 {format_seconds(m.p99_execution_time)} | completed {m.total_completed} "
        f"failed {m.total_failed} retried {m.total_retried}"
    )
