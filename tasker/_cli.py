"""The ``tasker`` command: ``tasker demo`` and ``tasker run package.module:factory``.

Both build a :class:`ServiceRunner` from the ``TASKER_*`` configuration (flags win over
variables, variables over a ``.env`` file), serve ``/metrics``, show a terminal view,
turn SIGINT/SIGTERM into a graceful stop and end with a block whose first line starts
with ``Summary``.

Exit codes: 0 after a graceful stop; 1 when a module failed to start or the shutdown
failed or overran its budget (naming what was still running); 2 for a configuration or
usage error, reported on one line of stderr without a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import inspect
import logging
import os
import sys
import textwrap
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TextIO

from tasker._config import (
    ConfigError,
    ServiceConfig,
    _load,
    describe_variables,
    read_env_file,
)
from tasker._demo import TaskMix, make_manager
from tasker._manager import TaskManager
from tasker._modules import GeneratorModule, ManagerModule, MetricsModule
from tasker._service import Module, ModuleError, ServiceRunner, StopReport, describe_stop
from tasker._view import ViewModule, format_seconds, rich_available

__all__ = ["cli", "main"]

_PROG = "tasker"


class UsageError(Exception):
    """A bad command line or target: one line on stderr, exit 2."""


class Failure(Exception):
    """The user's code failed (a factory raised): one line on stderr, exit 1."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (no usage block) and exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _variables_epilog() -> str:
    rows = describe_variables()
    width = max(len(v) for v, _, _ in rows)
    lines = [f"  {v:<{width}}  {meaning} (default {default})" for v, default, meaning in rows]
    return (
        "configuration (flags win over variables, variables over the .env file):\n"
        + "\n".join(lines)
        + "\n\ndurations: seconds (0.05) or with a unit: 50ms, 2s, 1m"
    )


# flag dest -> the variable it overrides
_FLAG_VARIABLES = {
    "count": "TASKER_GENERATOR_COUNT",
    "interval": "TASKER_GENERATOR_INTERVAL",
    "workers": "TASKER_WORKERS",
    "max_workers": "TASKER_MAX_WORKERS",
    "metrics_port": "TASKER_METRICS_PORT",
    "view": "TASKER_VIEW",
    "shutdown_timeout": "TASKER_SHUTDOWN_TIMEOUT",
}


def _parser() -> _Parser:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = _Parser(
        prog=_PROG,
        description="Run tasker services: a live demo, or your own modules and managers.",
        epilog="Without a command, runs the demo. " + _variables_epilog(),
        formatter_class=formatter,
    )
    from tasker import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    common = _Parser(add_help=False)
    common.add_argument(
        "--env-file",
        metavar="PATH",
        help="read variables from PATH (default: ./.env when it exists; '' for none)",
    )
    common.add_argument("--metrics-port", metavar="PORT", help="port for /metrics; 0 = any free")
    common.add_argument(
        "--view",
        metavar="MODE",
        help="auto (live on a terminal, plain lines otherwise), live, plain or off",
    )
    common.add_argument(
        "--shutdown-timeout", metavar="DURATION", help="budget for the graceful stop"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = commands.add_parser(
        "demo",
        parents=[common],
        help="a generator feeding a bursting manager, with a live view and /metrics",
        description=textwrap.fill(
            "Run the demo: a generator module submits a mix of short, long, failing, "
            "unhealthy, flaky and priority tasks to a manager module with bursting on, "
            "while a terminal view shows workers, queues, throughput, latency percentiles, "
            "failures and retries and /metrics is served. Ends when the generator's tasks "
            "are done, or on Ctrl-C/SIGTERM, with a graceful stop and a summary."
        ),
        epilog=_variables_epilog(),
        formatter_class=formatter,
    )
    demo.add_argument("--count", metavar="N", help="tasks to submit; 0 = until stopped")
    demo.add_argument("--interval", metavar="DURATION", help="time between submissions")
    demo.add_argument("--workers", metavar="N", help="base workers")
    demo.add_argument("--max-workers", metavar="N", help="base + burst cap")
    demo.add_argument("--seed", metavar="N", type=int, help="seed for the task mix")
    run = commands.add_parser(
        "run",
        parents=[common],
        help="run your factory's manager or modules (like `celery -A app worker`)",
        description=textwrap.fill(
            "Run TARGET, a factory 'package.module:function' returning a TaskManager, a "
            "Module, a list of modules or a ServiceRunner. A factory that takes an argument "
            "is given the tasker.ServiceConfig read from the environment (use "
            "config.manager_kwargs() for the TaskManager). Runs until Ctrl-C/SIGTERM, or "
            "until every finite module has finished, then stops gracefully. TASKER_MODULES "
            "picks the built-in metrics and view modules added around yours; a returned "
            "ServiceRunner's modules run under these settings (TASKER_SHUTDOWN_TIMEOUT...)."
        ),
        epilog=_variables_epilog(),
        formatter_class=formatter,
    )
    run.add_argument("target", metavar="TARGET", help="package.module:factory")
    worker = commands.add_parser(
        "worker",
        parents=[common],
        help="run a distributed worker of package.module:app (needs tasker-pool[redis])",
        description=textwrap.fill(
            "Run a worker for TARGET, a tasker.distributed.App ('package.module:app', or a "
            "function returning one): it reads the app's queues from its broker and runs "
            "the tasks on a TaskManager with per-worker resources, bursting and retries, "
            "serves /metrics, and stops gracefully on Ctrl-C/SIGTERM, finishing and "
            "acknowledging what it holds. TASKER_WORKERS, TASKER_MAX_WORKERS, "
            "TASKER_METRICS_PORT and TASKER_SHUTDOWN_TIMEOUT apply."
        ),
        epilog=_variables_epilog(),
        formatter_class=formatter,
    )
    worker.add_argument("target", metavar="TARGET", help="package.module:app")
    worker.add_argument("-Q", "--queues", metavar="NAMES", help="comma-separated queues")
    worker.add_argument("--workers", metavar="N", help="base workers")
    worker.add_argument("--max-workers", metavar="N", help="base + burst cap")
    worker.add_argument("--prefetch", metavar="N", type=int, default=0, help="extra messages held")
    dead = commands.add_parser(
        "dead-letters",
        help="list, re-drive or purge the dead letters of package.module:app",
        description="List dead letters as JSON lines, or re-drive or purge them.",
    )
    dead.add_argument("target", metavar="TARGET", help="package.module:app")
    action = dead.add_mutually_exclusive_group()
    action.add_argument("--redrive", action="store_true", help="publish them again")
    action.add_argument("--purge", action="store_true", help="delete them")
    dead.add_argument("ids", nargs="*", help="dead-letter ids (default: all)")
    return parser


@dataclass
class _Service:
    """What a command runs: its modules and the parts the view and summary need."""

    modules: list[Module]
    managers: list[ManagerModule[Any, Any]]
    generator: GeneratorModule[Any, Any] | None = None


def _configure(args: argparse.Namespace) -> ServiceConfig:
    values: dict[str, tuple[str, str]] = {}
    env_file, label = args.env_file, "--env-file"
    if env_file is None:
        env_file, label = (".env" if Path(".env").is_file() else ""), "env file"
    if env_file:
        for key, value in read_env_file(env_file, label=label).items():
            values[key] = (key, value)
    for key, value in os.environ.items():
        values[key] = (key, value)
    for dest, variable in _FLAG_VARIABLES.items():
        raw = getattr(args, dest, None)
        if raw is not None:
            values[variable] = ("--" + dest.replace("_", "-"), raw)
    return _load(values)


class _StderrHandler(logging.Handler):
    """Writes to whatever ``sys.stderr`` is now (the live view redirects it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:
            self.handleError(record)


@contextlib.contextmanager
def _logging_to_stderr(config: ServiceConfig) -> Iterator[None]:
    """Send the ``tasker`` loggers to stderr at the configured level, for this run only."""
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("tasker")
    demo = logging.getLogger("tasker.demo")
    saved = (logger.level, logger.propagate, demo.level)
    logger.addHandler(handler)
    logger.setLevel(config.log_level)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
        demo.setLevel(saved[2])


def _view_mode(config: ServiceConfig, stream: TextIO) -> str:
    mode = config.view
    if mode == "auto":
        return "live" if stream.isatty() and rich_available() else "plain"
    if mode == "live" and not rich_available():
        raise ConfigError(
            "TASKER_VIEW=live needs rich: pip install 'tasker-pool[cli]' "
            "(or use TASKER_VIEW=plain)",
            variable="TASKER_VIEW",
            value="live",
            expected="plain or off without rich",
        )
    return mode


def _add_extras(
    service: _Service, config: ServiceConfig, stream: TextIO, title: str
) -> MetricsModule | None:
    """Add the metrics and view modules that ``config.modules`` asks for."""
    if not service.managers:
        if {"metrics", "view"} & set(config.modules):
            print(
                f"{_PROG}: note: no TaskManager among the modules: no /metrics, no view",
                file=sys.stderr,
            )
        return None
    metrics = None
    if "metrics" in config.modules:
        metrics = MetricsModule(
            *service.managers, port=config.metrics_port, host=config.metrics_host
        )
        # Serve from the start: right after the last manager, before what feeds it.
        last = max(i for i, m in enumerate(service.modules) if isinstance(m, ManagerModule))
        service.modules.insert(last + 1, metrics)
    mode = _view_mode(config, stream)
    if "view" in config.modules and mode != "off":
        view = ViewModule(
            service.managers,
            mode="live" if mode == "live" else "plain",
            interval=config.view_interval,
            stream=stream,
            generator=service.generator,
            metrics=metrics,
            title=title,
        )
        service.modules.append(view)
    return metrics


def _demo_service(config: ServiceConfig, args: argparse.Namespace) -> _Service:
    needs_manager = [m for m in config.modules if m != "manager"]
    if needs_manager and "manager" not in config.modules:
        raise ConfigError(
            f"TASKER_MODULES must include manager for {', '.join(needs_manager)} "
            f"(got TASKER_MODULES={','.join(config.modules)!r})",
            variable="TASKER_MODULES",
            value=",".join(config.modules),
            expected="a list including manager",
        )
    level = logging.getLevelName(config.log_level)
    demo_logger = logging.getLogger("tasker.demo")
    # The demo's failures are staged: show their warnings only when asked for detail.
    demo_logger.setLevel(level if level <= logging.INFO else max(level, logging.ERROR))
    manager = ManagerModule(lambda: make_manager(config, demo_logger))
    service = _Service(modules=[manager], managers=[manager])
    if "generator" in config.modules:
        service.generator = GeneratorModule(
            manager,
            TaskMix(args.seed),
            count=config.generator_count,
            interval=config.generator_interval,
        )
        service.modules.append(service.generator)
    return service


def _cwd_importable() -> None:
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # like `python -m`: the current directory's modules


def _load_target(target: str) -> Callable[..., Any]:
    module_name, sep, attribute = target.partition(":")
    parts = [*module_name.split("."), *attribute.split(".")]
    if not sep or not all(p.isidentifier() for p in parts):
        raise UsageError(f"TARGET must be package.module:factory (got TARGET={target!r})")
    _cwd_importable()
    try:
        obj: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise UsageError(
                f"TARGET module {module_name!r} cannot be imported: {exc} (got TARGET={target!r})"
            ) from None
        raise Failure(f"importing {module_name!r} failed: {exc!r}") from exc
    except Exception as exc:
        raise Failure(f"importing {module_name!r} failed: {exc!r}") from exc
    for part in attribute.split("."):
        if not hasattr(obj, part):
            raise UsageError(
                f"TARGET names {attribute!r}, which {module_name!r} does not have "
                f"(got TARGET={target!r})"
            )
        obj = getattr(obj, part)
    if not callable(obj):
        raise UsageError(f"TARGET must name a callable factory (got TARGET={target!r})")
    return obj  # type: ignore[no-any-return]


def _call_factory(factory: Callable[..., Any], config: ServiceConfig, target: str) -> Any:
    try:
        takes_config = inspect.signature(factory).bind(config) is not None
    except (TypeError, ValueError):
        takes_config = False
    try:
        return factory(config) if takes_config else factory()
    except Exception as exc:
        raise Failure(f"factory {target} raised {exc!r}") from exc


def _run_service(config: ServiceConfig, target: str) -> _Service:
    result = _call_factory(_load_target(target), config, target)
    if isinstance(result, ServiceRunner):
        modules: list[Module] = list(result.modules)
    elif isinstance(result, TaskManager):
        modules = [ManagerModule(result)]
    elif isinstance(result, Module):
        modules = [result]
    elif isinstance(result, list | tuple) and all(isinstance(m, Module) for m in result):
        modules = list(result)
    else:
        raise UsageError(
            "TARGET factory must return a TaskManager, a Module, a list of modules or a "
            f"ServiceRunner (got {type(result).__name__}; TARGET={target!r})"
        )
    managers = [m for m in modules if isinstance(m, ManagerModule)]
    generators = [m for m in modules if isinstance(m, GeneratorModule)]
    return _Service(modules, managers, generators[0] if len(generators) == 1 else None)


def _serve(service: _Service, config: ServiceConfig, title: str, out: TextIO, prog: str) -> int:
    metrics = _add_extras(service, config, out, title)
    try:
        runner = ServiceRunner(
            service.modules,
            shutdown_timeout=config.shutdown_timeout,
            start_timeout=config.start_timeout,
        )
    except (TypeError, ValueError) as exc:
        for manager in service.managers:  # a factory may have started it already
            with contextlib.suppress(TimeoutError):
                manager.stop(config.shutdown_timeout)
        raise UsageError(str(exc)) from None
    began = time.monotonic()
    with runner.handling_signals():
        try:
            runner.start()
        except ModuleError as exc:
            report = runner.stop()
            print(f"{prog}: error: {exc}", file=sys.stderr)
            for line in report.problems():
                print(f"{prog}: error: {line}", file=sys.stderr)
            return 1
        view = next((m for m in service.modules if isinstance(m, ViewModule)), None)
        say = view.announce if view is not None else lambda line: _say(out, line)
        try:
            if metrics is not None:
                say(f"metrics: {metrics.url}")
            say(
                f"running: {', '.join(m.name for m in runner.modules)} "
                "(Ctrl-C or SIGTERM stops gracefully)"
            )
            runner.wait()
        finally:
            report = runner.stop()
        elapsed = time.monotonic() - began
        out.write(_summary(service, report, elapsed, view))
        out.flush()
    if not report.ok:
        print(f"{prog}: error: {describe_stop(report)}", file=sys.stderr)
        return 1
    return 0


def _say(out: TextIO, line: str) -> None:
    out.write(line + "\n")
    out.flush()


def _summary(service: _Service, report: StopReport, elapsed: float, view: ViewModule | None) -> str:
    if report.ok:
        head = f"Summary: stopped gracefully ({report.reason}) after {elapsed:.2f}s"
    else:
        head = f"Summary: {describe_stop(report, details=False)} after {elapsed:.2f}s"
    lines = [head]
    for module in service.managers:
        try:
            manager = module.manager
        except RuntimeError:
            continue
        m, st = manager.metrics(), manager.stats()
        ended = m.total_completed + m.total_failed
        peak = view.peak_workers.get(manager.name) if view else None
        seen = f", peak {peak} ({peak - st.base_workers} burst)" if peak else ""
        lines += [
            f"  {manager.name}: {m.total_arrived} tasks arrived, {m.total_completed} completed, "
            f"{m.total_failed} failed, {m.total_retried} retried, {m.total_cancelled} "
            f"cancelled ({ended / elapsed if elapsed else 0.0:.1f} tasks/s)",
            f"  {manager.name}: execution p50 {format_seconds(m.p50_execution_time)}, p95 "
            f"{format_seconds(m.p95_execution_time)}, p99 "
            f"{format_seconds(m.p99_execution_time)}; wait p95 "
            f"{format_seconds(m.p95_wait_time)}, p99 {format_seconds(m.p99_wait_time)}",
            f"  {manager.name}: workers base {st.base_workers}{seen}, max {manager.max_workers}",
        ]
    if service.generator is not None:
        g = service.generator
        lines.append(f"  {g.name}: {g.submitted} tasks submitted, {g.errors} submit errors")
    stopped = ", ".join(report.stopped) or "none"
    lines.append(
        f"  shutdown: {report.elapsed:.2f}s of a {report.budget:g}s budget; "
        f"stopped in order: {stopped}"
    )
    lines += [f"  still running: {line}" for line in report.problems()]
    return "\n".join(lines) + "\n"


def cli(argv: Sequence[str] | None = None, *, out: TextIO | None = None) -> int:
    """Run the ``tasker`` command with ``argv``; return the exit code."""
    out = sys.stdout if out is None else out
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args(["demo"])
    prog = f"{_PROG} {args.command}"
    if args.command in ("worker", "dead-letters"):
        _cwd_importable()
    if args.command == "dead-letters":
        return _distributed(prog, lambda d: d.main(["dead-letters", *(argv or sys.argv[1:])[1:]]))
    try:
        config = _configure(args)
        if args.command == "worker":
            return _distributed(prog, lambda d: _run_worker(d, config, args))
        with _logging_to_stderr(config):
            if args.command == "demo":
                service = _demo_service(config, args)
                _announce(service, config, out)
                return _serve(service, config, "tasker demo", out, prog)
            service = _run_service(config, args.target)
            return _serve(service, config, f"tasker run {args.target}", out, prog)
    except (ConfigError, UsageError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except Failure as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1


def _distributed(prog: str, command: Callable[[Any], int]) -> int:
    """Run a command of ``tasker.distributed``; its extra may not be installed."""
    try:
        import tasker.distributed as distributed
    except ImportError as exc:
        print(
            f"{prog}: error: needs the redis extra: pip install 'tasker-pool[redis]' ({exc})",
            file=sys.stderr,
        )
        return 2
    return command(distributed)


def _run_worker(distributed: Any, config: ServiceConfig, args: argparse.Namespace) -> int:
    try:
        app = distributed.load_app(args.target)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return int(
        distributed.run_worker(
            app,
            queues=args.queues.split(",") if args.queues else None,
            workers=config.workers,
            max_workers=config.max_workers,
            prefetch=args.prefetch,
            metrics_port=config.metrics_port,
            metrics_host=config.metrics_host,
            shutdown_timeout=config.shutdown_timeout,
        )
    )


def _announce(service: _Service, config: ServiceConfig, out: TextIO) -> None:
    g = service.generator
    if g is None:
        return
    amount = f"{g.count} tasks" if g.count else "tasks until stopped"
    print(
        f"tasker demo: {amount}, one every {format_seconds(g.interval)}; workers "
        f"{config.workers}, max {config.max_workers or config.workers * 2}, bursting "
        f"{'every ' + format_seconds(config.burst_interval) if config.burst_interval else 'off'}",
        file=out,
        flush=True,
    )


def main() -> NoReturn:
    """Console entry point: ``tasker`` and ``python -m tasker``."""
    try:
        code = cli()
    except KeyboardInterrupt:  # before the signal handlers were in place
        code = 130
    except BrokenPipeError:  # `tasker demo | head`: the reader left; the run was stopped
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    if code == 1:
        # The run failed, and maybe its shutdown overran: tasks may still be running on
        # threads that a normal exit would wait for (the managers' exit hook stops them
        # without a limit). The budget is spent and everything is reported, so leave now.
        os._exit(code)
    sys.exit(code)
