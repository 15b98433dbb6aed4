"""ServiceConfig.from_env: TASKER_* variables and .env files, typed and validated."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import tasker
from tasker import ConfigError, ServiceConfig


def read(**variables: str) -> ServiceConfig:
    return ServiceConfig.from_env(variables)


def test_defaults_when_nothing_is_set() -> None:
    config = read()
    assert config == ServiceConfig()
    assert config.modules == ("manager", "generator", "metrics", "view")
    assert (config.workers, config.max_workers, config.queue_size) == (2, None, 0)
    assert (config.burst_interval, config.burst_hold, config.max_retries) == (0.1, 2.0, 3)
    assert (config.shutdown_timeout, config.start_timeout) == (10.0, 10.0)
    assert (config.metrics_host, config.metrics_port) == ("127.0.0.1", 0)
    assert (config.generator_count, config.generator_interval) == (300, 0.02)
    assert (config.view, config.view_interval, config.log_level) == ("auto", 1.0, "WARNING")


def test_every_variable_is_read() -> None:
    config = read(
        TASKER_MODULES="metrics, manager",
        TASKER_WORKERS="4",
        TASKER_MAX_WORKERS="16",
        TASKER_QUEUE_SIZE="100",
        TASKER_BURST_INTERVAL="50ms",
        TASKER_BURST_HOLD="1.5s",
        TASKER_MAX_RETRIES="0",
        TASKER_SHUTDOWN_TIMEOUT="1m",
        TASKER_START_TIMEOUT="2",
        TASKER_METRICS_HOST="0.0.0.0",
        TASKER_METRICS_PORT="9464",
        TASKER_GENERATOR_COUNT="0",
        TASKER_GENERATOR_INTERVAL="0.005",
        TASKER_VIEW="Plain",
        TASKER_VIEW_INTERVAL="250ms",
        TASKER_LOG_LEVEL="debug",
    )
    assert config == ServiceConfig(
        modules=("manager", "metrics"),  # always in start order
        workers=4,
        max_workers=16,
        queue_size=100,
        burst_interval=0.05,
        burst_hold=1.5,
        max_retries=0,
        shutdown_timeout=60.0,
        start_timeout=2.0,
        metrics_host="0.0.0.0",
        metrics_port=9464,
        generator_count=0,
        generator_interval=0.005,
        view="plain",
        view_interval=0.25,
        log_level="DEBUG",
    )


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0.05", 0.05),
        ("2", 2.0),
        (".5", 0.5),
        ("1e-3", 0.001),
        ("50ms", 0.05),
        ("2s", 2.0),
        ("1.5m", 90.0),
        (" 10 ms ", 0.01),
    ],
)
def test_durations_are_seconds_with_optional_units(text: str, seconds: float) -> None:
    assert tasker.parse_duration("X", text) == pytest.approx(seconds)


def test_zero_turns_bursting_off() -> None:
    config = read(TASKER_BURST_INTERVAL="0")
    assert config.burst_interval == 0.0
    assert config.manager_kwargs()["burst_interval"] is None


def test_an_empty_value_means_the_default() -> None:
    assert read(TASKER_WORKERS="", TASKER_MAX_WORKERS="  ") == ServiceConfig()


INTEGER_1 = "an integer >= 1"
INTEGER_0 = "an integer >= 0"
PORT = "an integer from 0 to 65535"
DURATION = "a duration > 0 in seconds, such as 0.05, 50ms, 2s or 1m"
DURATION_0 = "a duration >= 0 in seconds, such as 0.05, 50ms, 2s or 1m"
MODULES = "a comma-separated list of modules from manager, generator, metrics, view"


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("TASKER_WORKERS", "zero", INTEGER_1),
        ("TASKER_WORKERS", "0", INTEGER_1),
        ("TASKER_WORKERS", "2.5", INTEGER_1),
        ("TASKER_MAX_WORKERS", "-1", INTEGER_1),
        ("TASKER_QUEUE_SIZE", "-5", INTEGER_0),
        ("TASKER_MAX_RETRIES", "many", INTEGER_0),
        ("TASKER_GENERATOR_COUNT", "1e3", INTEGER_0),
        ("TASKER_METRICS_PORT", "70000", PORT),
        ("TASKER_METRICS_PORT", "http", PORT),
        ("TASKER_METRICS_HOST", "local host", "a host name or address such as 127.0.0.1"),
        ("TASKER_BURST_INTERVAL", "fast", DURATION_0),
        ("TASKER_BURST_INTERVAL", "-0.1", DURATION_0),
        ("TASKER_BURST_HOLD", "0", DURATION),
        ("TASKER_SHUTDOWN_TIMEOUT", "10h", DURATION),
        ("TASKER_SHUTDOWN_TIMEOUT", "inf", DURATION),
        ("TASKER_SHUTDOWN_TIMEOUT", "1e999", DURATION),
        ("TASKER_START_TIMEOUT", "nan", DURATION),
        ("TASKER_GENERATOR_INTERVAL", "0ms", DURATION),
        ("TASKER_VIEW_INTERVAL", "1 minute", DURATION),
        ("TASKER_VIEW", "fancy", "one of auto, live, plain, off"),
        ("TASKER_LOG_LEVEL", "loud", "one of debug, info, warning, error, critical"),
        ("TASKER_MODULES", "manager,db", MODULES),
        ("TASKER_MODULES", "view,view", MODULES),
        ("TASKER_MODULES", ",", MODULES),
    ],
)
def test_a_bad_value_names_the_variable_the_value_and_what_was_expected(
    variable: str, value: str, expected: str
) -> None:
    message = f"{variable} must be {expected} (got {variable}={value!r})"
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$") as info:
        read(**{variable: value})
    assert info.value.variable == variable
    assert info.value.value == value
    assert info.value.expected == expected


def test_config_errors_are_tasker_errors_and_value_errors() -> None:
    assert issubclass(ConfigError, tasker.TaskerError)
    assert issubclass(ConfigError, ValueError)


def test_max_workers_below_workers_names_both_variables() -> None:
    with pytest.raises(
        ConfigError,
        match=r"TASKER_MAX_WORKERS must be >= TASKER_WORKERS "
        r"\(got TASKER_MAX_WORKERS='2', TASKER_WORKERS='4'\)",
    ):
        read(TASKER_WORKERS="4", TASKER_MAX_WORKERS="2")


def test_a_misspelt_variable_is_refused_with_a_suggestion() -> None:
    with pytest.raises(
        ConfigError, match=r"unknown variable TASKER_WORKER='4': did you mean TASKER_WORKERS\?"
    ):
        read(TASKER_WORKER="4")


def test_other_variables_are_left_alone() -> None:
    assert read(TASKER_APP_DATABASE="postgres://", PATH="/bin", HOME="/root") == ServiceConfig()


def test_os_environ_is_read_when_no_mapping_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKER_WORKERS", "7")
    assert ServiceConfig.from_env().workers == 7


def test_manager_kwargs_build_a_working_manager() -> None:
    config = read(TASKER_WORKERS="3", TASKER_MAX_WORKERS="5", TASKER_BURST_HOLD="0.5")
    kwargs = config.manager_kwargs()
    assert kwargs["scaling_policy"].hold == 0.5
    manager: tasker.TaskManager[object, int] = tasker.TaskManager(object, **kwargs)
    try:
        assert manager.stats().base_workers == 3
        assert manager.max_workers == 5
        assert manager.queue_task(lambda r: 1) == 1
    finally:
        manager.stop()


def test_max_workers_is_left_to_the_manager_when_unset() -> None:
    assert "max_workers" not in read().manager_kwargs()


# -- .env files --------------------------------------------------------------------------------


def test_an_env_file_is_read_beneath_the_environment(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text(
        "# tasker settings\n"
        "\n"
        "TASKER_WORKERS=3\n"
        "export TASKER_MAX_WORKERS = 9  # room to burst\n"
        "TASKER_METRICS_HOST='0.0.0.0'\n"
        'TASKER_SHUTDOWN_TIMEOUT="5s"\n'
        "UNRELATED=x\n"
    )
    config = ServiceConfig.from_env({"TASKER_WORKERS": "4"}, env_file=env)
    assert config.workers == 4  # the environment wins
    assert config.max_workers == 9
    assert config.metrics_host == "0.0.0.0"
    assert config.shutdown_timeout == 5.0


def test_a_bad_value_in_an_env_file_names_the_variable(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("TASKER_QUEUE_SIZE=big\n")
    with pytest.raises(ConfigError, match=r"TASKER_QUEUE_SIZE must be an integer >= 0"):
        ServiceConfig.from_env({}, env_file=env)


def test_a_line_that_is_not_key_value_names_the_file_and_line(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("TASKER_WORKERS=2\nthis is not a setting\n")
    with pytest.raises(
        ConfigError, match=r"\.env line 2 must be KEY=VALUE \(got 'this is not a setting'\)"
    ):
        ServiceConfig.from_env({}, env_file=env)


def test_a_missing_env_file_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.env"
    with pytest.raises(ConfigError, match=r"env file '.*nope.env' cannot be read: No such file"):
        ServiceConfig.from_env({}, env_file=missing)


def test_the_example_env_file_documents_every_variable_with_its_default(tmp_path: Path) -> None:
    from tasker._config import VARIABLES

    text = (Path(__file__).resolve().parent.parent / ".env.example").read_text()
    for variable in VARIABLES:
        assert f"# {variable}=" in text, f"{variable} missing from .env.example"
    # Uncommented, the example is a valid configuration equal to the defaults.
    uncommented = tmp_path / ".env"
    uncommented.write_text(
        "\n".join(
            line.removeprefix("# ") if line.startswith("# TASKER_") else line
            for line in text.splitlines()
        )
    )
    assert ServiceConfig.from_env({}, env_file=uncommented) == ServiceConfig()
