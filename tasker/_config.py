"""``TASKER_*`` configuration: an explicit, typed, validated read of the environment.

Nothing here runs at import. :meth:`ServiceConfig.from_env` reads the variables (and,
if asked, a ``.env`` file beneath them), checks every value and returns a frozen
:class:`ServiceConfig`; a bad value raises :class:`ConfigError` naming the variable, the
value and what was expected. Values from the real environment win over the file.

Durations are seconds as decimal numbers (``0.05``), or with a ``ms``, ``s`` or ``m``
suffix (``50ms``, ``2s``, ``1.5m``). An empty value means "use the default".
"""

from __future__ import annotations

import difflib
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from tasker._errors import TaskerError
from tasker._scaling import DefaultScalingPolicy

__all__ = ["BUILTIN_MODULES", "ConfigError", "ServiceConfig", "parse_duration"]

T = TypeVar("T")

#: The ready-made modules that ``TASKER_MODULES`` can switch on, in start order.
BUILTIN_MODULES = ("manager", "generator", "metrics", "view")

ViewMode = Literal["auto", "live", "plain", "off"]
_VIEW_MODES: tuple[ViewMode, ...] = ("auto", "live", "plain", "off")
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class ConfigError(TaskerError, ValueError):
    """A configuration value (a ``TASKER_*`` variable, a ``.env`` line or a flag) is invalid.

    The caller's fault: fix the value the message names. ``variable`` is the variable or
    flag, ``value`` the text it had and ``expected`` what would have been accepted.
    """

    def __init__(self, message: str, *, variable: str, value: str, expected: str) -> None:
        super().__init__(message)
        self.variable = variable
        self.value = value
        self.expected = expected


def _fail(label: str, raw: str, expected: str) -> ConfigError:
    return ConfigError(
        f"{label} must be {expected} (got {label}={raw!r})",
        variable=label,
        value=raw,
        expected=expected,
    )


_DURATION = re.compile(r"(?P<number>\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?\s*(?P<unit>ms|s|m)?")
_UNITS = {None: 1.0, "s": 1.0, "ms": 0.001, "m": 60.0}


def parse_duration(label: str, raw: str, *, allow_zero: bool = False) -> float:
    """Parse ``raw`` as a duration in seconds (``0.05``, ``50ms``, ``2s``, ``1m``).

    Args:
        label: The variable or flag the value came from, for the error message.
        raw: The text to parse.
        allow_zero: Accept ``0`` (for settings where zero means "off").

    Raises:
        ConfigError: ``raw`` is not a finite, non-negative duration (or is zero when
            ``allow_zero`` is false).
    """
    bound = ">= 0" if allow_zero else "> 0"
    expected = f"a duration {bound} in seconds, such as 0.05, 50ms, 2s or 1m"
    text = raw.strip()
    match = _DURATION.fullmatch(text)
    if match is None:
        raise _fail(label, raw, expected)
    unit = match.group("unit")
    number = text[: len(text) - len(unit)] if unit else text
    seconds = float(number) * _UNITS[unit]
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not allow_zero):
        raise _fail(label, raw, expected)
    return seconds


def _parse_int(label: str, raw: str, *, minimum: int, maximum: int | None = None) -> int:
    expected = (
        f"an integer >= {minimum}" if maximum is None else f"an integer from {minimum} to {maximum}"
    )
    text = raw.strip()
    if not re.fullmatch(r"[-+]?\d+", text):
        raise _fail(label, raw, expected)
    value = int(text)
    if value < minimum or (maximum is not None and value > maximum):
        raise _fail(label, raw, expected)
    return value


def _parse_choice(label: str, raw: str, choices: tuple[str, ...], *, upper: bool = False) -> str:
    text = raw.strip().upper() if upper else raw.strip().lower()
    if text not in choices:
        shown = [c.lower() for c in choices] if upper else list(choices)
        raise _fail(label, raw, f"one of {', '.join(shown)}")
    return text


def _parse_modules(label: str, raw: str) -> tuple[str, ...]:
    expected = f"a comma-separated list of modules from {', '.join(BUILTIN_MODULES)}"
    names = [part.strip().lower() for part in raw.split(",") if part.strip()]
    if not names or any(n not in BUILTIN_MODULES for n in names) or len(set(names)) < len(names):
        raise _fail(label, raw, expected)
    return tuple(n for n in BUILTIN_MODULES if n in names)


def _parse_host(label: str, raw: str) -> str:
    host = raw.strip()
    if not host or any(c.isspace() for c in host):
        raise _fail(label, raw, "a host name or address such as 127.0.0.1")
    return host


@dataclass(frozen=True, slots=True)
class _Setting:
    field: str
    variable: str
    parse: Callable[[str, str], Any]
    help: str


def _seconds(*, allow_zero: bool = False) -> Callable[[str, str], float]:
    return lambda label, raw: parse_duration(label, raw, allow_zero=allow_zero)


def _integer(minimum: int, maximum: int | None = None) -> Callable[[str, str], int]:
    return lambda label, raw: _parse_int(label, raw, minimum=minimum, maximum=maximum)


# One row per variable: the field it sets, how it is parsed, what it means. The order is
# the order of .env.example and of `tasker --help`.
_SETTINGS = (
    _Setting("modules", "TASKER_MODULES", _parse_modules, "built-in modules to run"),
    _Setting("workers", "TASKER_WORKERS", _integer(1), "base workers"),
    _Setting("max_workers", "TASKER_MAX_WORKERS", _integer(1), "base + burst cap"),
    _Setting("queue_size", "TASKER_QUEUE_SIZE", _integer(0), "bound on waiting tasks; 0 = none"),
    _Setting(
        "burst_interval",
        "TASKER_BURST_INTERVAL",
        _seconds(allow_zero=True),
        "time between scaling decisions; 0 = no bursting",
    ),
    _Setting("burst_hold", "TASKER_BURST_HOLD", _seconds(), "idle time before a burst retires"),
    _Setting("max_retries", "TASKER_MAX_RETRIES", _integer(0), "re-runs after unhealthy errors"),
    _Setting(
        "shutdown_timeout", "TASKER_SHUTDOWN_TIMEOUT", _seconds(), "budget for a graceful stop"
    ),
    _Setting(
        "start_timeout", "TASKER_START_TIMEOUT", _seconds(), "time each module has to be ready"
    ),
    _Setting("metrics_host", "TASKER_METRICS_HOST", _parse_host, "address /metrics binds"),
    _Setting(
        "metrics_port", "TASKER_METRICS_PORT", _integer(0, 65535), "port for /metrics; 0 = any free"
    ),
    _Setting(
        "generator_count",
        "TASKER_GENERATOR_COUNT",
        _integer(0),
        "tasks to submit; 0 = until stopped",
    ),
    _Setting(
        "generator_interval", "TASKER_GENERATOR_INTERVAL", _seconds(), "time between submissions"
    ),
    _Setting(
        "view",
        "TASKER_VIEW",
        lambda label, raw: _parse_choice(label, raw, _VIEW_MODES),
        "auto, live, plain or off",
    ),
    _Setting("view_interval", "TASKER_VIEW_INTERVAL", _seconds(), "time between plain view lines"),
    _Setting(
        "log_level",
        "TASKER_LOG_LEVEL",
        lambda label, raw: _parse_choice(label, raw, _LOG_LEVELS, upper=True),
        "debug, info, warning, error or critical",
    ),
)

#: Every variable :meth:`ServiceConfig.from_env` reads, in documentation order.
VARIABLES = tuple(s.variable for s in _SETTINGS)


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    """Settings for a service run, read from ``TASKER_*`` variables by :meth:`from_env`.

    Attributes:
        modules: Built-in modules to run (``TASKER_MODULES``), from
            ``manager, generator, metrics, view``.
        workers: Base workers (``TASKER_WORKERS``).
        max_workers: Base + burst cap (``TASKER_MAX_WORKERS``); None means the manager's
            default, ``workers * 2``.
        queue_size: Bound on waiting tasks, 0 for none (``TASKER_QUEUE_SIZE``).
        burst_interval: Seconds between scaling decisions; 0 disables bursting
            (``TASKER_BURST_INTERVAL``).
        burst_hold: Seconds a burst worker stays idle before it retires
            (``TASKER_BURST_HOLD``).
        max_retries: Re-runs after an unhealthy failure (``TASKER_MAX_RETRIES``).
        shutdown_timeout: Budget in seconds for stopping every module
            (``TASKER_SHUTDOWN_TIMEOUT``).
        start_timeout: Seconds each module has to start and be ready
            (``TASKER_START_TIMEOUT``).
        metrics_host: Address ``/metrics`` binds (``TASKER_METRICS_HOST``).
        metrics_port: Port for ``/metrics``; 0 picks a free one (``TASKER_METRICS_PORT``).
        generator_count: Tasks the demo generator submits; 0 means until stopped
            (``TASKER_GENERATOR_COUNT``).
        generator_interval: Seconds between the generator's submissions
            (``TASKER_GENERATOR_INTERVAL``).
        view: Terminal view: ``auto`` (live on a terminal, plain lines otherwise),
            ``live``, ``plain`` or ``off`` (``TASKER_VIEW``).
        view_interval: Seconds between the plain view's lines (``TASKER_VIEW_INTERVAL``).
        log_level: Level of the ``tasker`` loggers (``TASKER_LOG_LEVEL``).
    """

    modules: tuple[str, ...] = BUILTIN_MODULES
    workers: int = 2
    max_workers: int | None = None
    queue_size: int = 0
    burst_interval: float = 0.1
    burst_hold: float = 2.0
    max_retries: int = 3
    shutdown_timeout: float = 10.0
    start_timeout: float = 10.0
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 0
    generator_count: int = 300
    generator_interval: float = 0.02
    view: ViewMode = "auto"
    view_interval: float = 1.0
    log_level: str = "WARNING"

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        env_file: str | os.PathLike[str] | None = None,
    ) -> ServiceConfig:
        """Read and check every ``TASKER_*`` variable.

        Args:
            environ: The variables to read (default ``os.environ``).
            env_file: A ``.env`` file of ``KEY=VALUE`` lines read beneath ``environ``:
                a variable set in both takes the value from ``environ``. The file is
                only read, never exported into ``os.environ``.

        Raises:
            ConfigError: A value is invalid, the file cannot be read or has a line that
                is not ``KEY=VALUE``, or a ``TASKER_*`` variable looks like a misspelt
                known one (``TASKER_WORKER``).

        Example:
            >>> config = ServiceConfig.from_env({"TASKER_WORKERS": "4"})
            >>> manager = tasker.TaskManager(make_client, **config.manager_kwargs())
        """
        values: dict[str, tuple[str, str]] = {}
        if env_file is not None:
            for key, value in read_env_file(env_file).items():
                values[key] = (key, value)
        source = os.environ if environ is None else environ
        for key, value in source.items():
            values[key] = (key, value)
        return _load(values)

    def manager_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :class:`tasker.TaskManager` from these settings.

        ``workers``, ``max_workers`` (when set), ``queue_size``, ``burst_interval``
        (None when 0), ``max_retries`` and a ``DefaultScalingPolicy`` with ``burst_hold``.
        """
        kwargs: dict[str, Any] = {
            "workers": self.workers,
            "queue_size": self.queue_size,
            "burst_interval": self.burst_interval or None,
            "max_retries": self.max_retries,
            "scaling_policy": DefaultScalingPolicy(hold=self.burst_hold),
        }
        if self.max_workers is not None:
            kwargs["max_workers"] = self.max_workers
        return kwargs


def _load(values: Mapping[str, tuple[str, str]]) -> ServiceConfig:
    """Build a config from ``variable -> (label, raw text)``; the label names the source.

    The CLI passes flags with the flag as the label, so an error names what the user
    typed.
    """
    _check_spelling(values)
    changes: dict[str, Any] = {}
    for setting in _SETTINGS:
        entry = values.get(setting.variable)
        if entry is None or not entry[1].strip():
            continue
        label, raw = entry
        changes[setting.field] = setting.parse(label, raw)
    config = ServiceConfig(**changes)
    if config.max_workers is not None and config.max_workers < config.workers:
        max_label, max_raw = values["TASKER_MAX_WORKERS"]
        workers_label, workers_raw = values.get("TASKER_WORKERS", ("TASKER_WORKERS", "2"))
        raise ConfigError(
            f"{max_label} must be >= {workers_label} "
            f"(got {max_label}={max_raw!r}, {workers_label}={workers_raw!r})",
            variable=max_label,
            value=max_raw,
            expected=f"an integer >= {workers_label} ({config.workers})",
        )
    return config


def _check_spelling(values: Mapping[str, tuple[str, str]]) -> None:
    """Refuse a ``TASKER_*`` variable that is a near miss of a known one.

    A misspelt variable would otherwise be ignored in silence and its default used;
    other unknown ``TASKER_*`` variables are left alone (an application may have its own).
    """
    for key, (label, raw) in values.items():
        if not key.startswith("TASKER_") or key in VARIABLES:
            continue
        close = difflib.get_close_matches(key, VARIABLES, n=1, cutoff=0.85)
        if close:
            raise ConfigError(
                f"unknown variable {label}={raw!r}: did you mean {close[0]}?",
                variable=label,
                value=raw,
                expected=f"a known variable such as {close[0]}",
            )


_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def read_env_file(path: str | os.PathLike[str], *, label: str = "env file") -> dict[str, str]:
    """Read a ``.env`` file: ``KEY=VALUE`` lines, ``#`` comments, optional ``export``.

    Values may be quoted with ``'`` or ``"``; an unquoted value ends at `` #``.

    Args:
        path: The file.
        label: How to name the file's source in an error (the CLI passes the flag).

    Raises:
        ConfigError: The file cannot be read or a line is not ``KEY=VALUE``.
    """
    where = os.fspath(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(
            f"{label} {where!r} cannot be read: {reason}",
            variable=label,
            value=where,
            expected="a readable UTF-8 file of KEY=VALUE lines",
        ) from None
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("export "):
            stripped = stripped[len("export ") :].lstrip()
        key, sep, value = stripped.partition("=")
        key = key.strip()
        if not sep or not _KEY.fullmatch(key):
            raise ConfigError(
                f"{where} line {number} must be KEY=VALUE (got {line.strip()!r})",
                variable=f"{where} line {number}",
                value=line,
                expected="KEY=VALUE",
            )
        values[key] = _unquote(value.strip())
    return values


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    comment = value.find(" #")
    return value[:comment].rstrip() if comment >= 0 else value


def describe_variables() -> list[tuple[str, str, str]]:
    """``(variable, default, meaning)`` for every variable, for help texts."""
    defaults = ServiceConfig()
    rows = []
    for setting in _SETTINGS:
        default = getattr(defaults, setting.field)
        if isinstance(default, tuple):
            shown = ",".join(default)
        elif default is None:
            shown = "(workers x 2)"
        elif isinstance(default, float):
            shown = f"{default:g}"
        else:
            shown = str(default)
        rows.append((setting.variable, shown, setting.help))
    return rows
