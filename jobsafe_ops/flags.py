"""Typed Invoke flags: a bad number is bad input (one line, exit 2), not a traceback.

Invoke casts a flag's value with the type of its default (`kind = type(default)`) while it
parses the command line, before any task body runs, and lets a ValueError escape as a
traceback with exit 1. A default built here is a float/int whose type re-checks the text
and raises Invoke's `Exit(message, code=2)` instead, which Invoke prints as one line. So
`--wait-timeout abc` stops before anything is imported or connected. Ranges (>= 0, > 0)
stay with the commands, which know what a value means.

Imported by tasks.py at load time: this module must stay cheap (Invoke only).
"""

from __future__ import annotations

import math
from typing import TypeVar

from invoke.exceptions import Exit

from .errors import EXIT_BAD_INPUT

T = TypeVar("T")

# A year: longer waits are a typo (and time.sleep overflows on 1e300).
MAX_SECONDS = 365 * 24 * 3600.0


def _refuse(flag: str, text: object, what: str, example: object) -> Exit:
    return Exit(f"error: {flag} {text!r} is not {what}; e.g. {flag} {example}",
                code=EXIT_BAD_INPUT)


def number(flag: str, default: float, *, limit: float = MAX_SECONDS,
           what: str = "a number of seconds") -> float:
    """A float flag (seconds, percent, factor) whose bad text exits 2 at parse time."""

    def new(cls: type[float], text: object = default) -> float:
        try:
            value = float.__new__(cls, text)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise _refuse(flag, text, what, f"{default:g}") from None
        if not math.isfinite(value) or abs(value) > limit:
            raise _refuse(flag, text, f"{what} up to {limit:g}", f"{default:g}")
        return value

    kind = type("NumberFlag", (float,), {"__new__": new, "__slots__": ()})
    return _default(kind(default))  # type: ignore[no-any-return]


def count(flag: str, default: int, *, limit: int = 1_000_000) -> int:
    """An int flag (retries, lines, sizes) whose bad text exits 2 at parse time."""

    def new(cls: type[int], text: object = default) -> int:
        try:
            value = int.__new__(cls, text)  # type: ignore[call-overload]
        except (TypeError, ValueError):
            raise _refuse(flag, text, "a whole number", default) from None
        if abs(value) > limit:
            raise _refuse(flag, text, f"a whole number up to {limit}", default)
        return value  # type: ignore[no-any-return]

    kind = type("CountFlag", (int,), {"__new__": new, "__slots__": ()})
    return _default(kind(default))  # type: ignore[no-any-return]


# The default objects themselves: Invoke hands a task its default object when the flag was
# not given, and a new object cast from the text when it was (even `--interval 60`), so
# identity tells a config file's default (jobsafe_ops.config.setting) from a typed flag.
_DEFAULTS: dict[int, object] = {}


def _default(value: T) -> T:
    _DEFAULTS[id(value)] = value  # kept alive: the id stays unique
    return value


def is_default(value: object) -> bool:
    """True when `value` is a flag's default object (the flag was not given)."""
    return _DEFAULTS.get(id(value)) is value
