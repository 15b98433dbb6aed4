"""Argument checks whose messages name the argument, the value and what was expected."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["check_callable", "check_int", "check_seconds"]


def check_int(name: str, value: Any, *, minimum: int) -> int:
    """Return ``value`` if it is an int >= ``minimum``; else raise naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int >= {minimum} (got {name}={value!r})")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum} (got {name}={value!r})")
    return value


def check_seconds(name: str, value: Any, *, allow_zero: bool = False) -> float:
    """Return ``value`` as float seconds if it is a finite number > 0 (or >= 0)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds (got {name}={value!r})")
    bound = ">= 0" if allow_zero else "> 0"
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(
            f"{name} must be a finite number of seconds {bound} (got {name}={value!r})"
        )
    return float(value)


def check_callable(name: str, value: Any, *, optional: bool = False) -> Any:
    """Return ``value`` if it is callable (or None when ``optional``)."""
    if value is None and optional:
        return None
    if not callable(value):
        expected = "a callable or None" if optional else "a callable"
        raise TypeError(f"{name} must be {expected} (got {name}={value!r})")
    return value
