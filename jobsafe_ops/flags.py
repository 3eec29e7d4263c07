"""Every task's flags, in one place: short flags, typed values, choices, value names.

- Short flags: one table (SHORTS) gives each flag name the same short flag in every task;
  Invoke's automatic short flags (first free letter: `-d` was `--dry` in four tasks and
  `--discard-local-changes` in deploy) are off (`auto_shortflags=False`). A destructive flag
  (DESTRUCTIVE) never gets one, and `-h` stays Invoke's help.
- Typed values: Invoke casts a flag's text with its argument's kind (`type(default)`, or
  the `kinds=` given to `task` here) while it parses the command line, before any task body
  runs, and lets a ValueError escape as a traceback with exit 1. The kinds built here
  (number, count, choice) re-check the text and raise Invoke's `Exit(message, code=2)`,
  which Invoke prints as one line. So `--wait-timeout abc` stops before anything is
  imported or connected. Ranges (>= 0, > 0) stay with the commands, which know what a
  value means.
- Value names: each kind carries a `metavar` that `--help` shows (`--watch=SECONDS`,
  `--on-running=abort|wait|keep|kill`); Invoke itself only names str and int values.
- The same parsing for values that arrive as text after parse time (a flag without a
  default, an environment variable): positive_int, seconds, env_number raise ConfigError.

Imported by tasks.py at load time: this module must stay cheap (Invoke only).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from invoke.exceptions import Exit
from invoke.parser.context import ParserContext
from invoke.tasks import Task
from invoke.tasks import task as invoke_task

from .errors import EXIT_BAD_INPUT, ConfigError

T = TypeVar("T")

# A year: longer waits are a typo (and time.sleep overflows on 1e300).
MAX_SECONDS = 365 * 24 * 3600.0

# One meaning per short flag across every task. Not -h (help), -d (Invoke's --debug and the
# old ambiguous --dry/--discard-local-changes), nor any core flag letter that would read as
# a different thing (-V version, -l list).
SHORTS: dict[str, str] = {
    "host": "H",      # as fab -H
    "group": "g",     # as pueue -g
    "dry": "n",       # as make -n, rsync -n, git clean -n: change nothing
    "json": "j",
    "playbook": "p",
    "follow": "f",    # as tail -f
}
# Options that change or remove something beyond the normal run: long form only.
DESTRUCTIVE = frozenset({"discard_local_changes", "break_lock", "retry_all", "on_running",
                         "allow_uncapped"})


def _refuse(flag: str, text: object, what: str, example: object) -> Exit:
    return Exit(f"error: {flag} {text!r} is not {what}; e.g. {flag} {example}",
                code=EXIT_BAD_INPUT)


def number(flag: str, default: float, *, limit: float = MAX_SECONDS,
           what: str = "a number of seconds", metavar: str = "SECONDS") -> float:
    """A float flag (seconds, percent, factor) whose bad text exits 2 at parse time."""

    def new(cls: type[float], text: object = default) -> float:
        try:
            value = float.__new__(cls, text)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise _refuse(flag, text, what, f"{default:g}") from None
        if not math.isfinite(value) or abs(value) > limit:
            raise _refuse(flag, text, f"{what} up to {limit:g}", f"{default:g}")
        return value

    kind = type("NumberFlag", (float,), {"__new__": new, "__slots__": (), "metavar": metavar})
    return _default(kind(default))  # type: ignore[no-any-return]


def count(flag: str, default: int, *, limit: int = 1_000_000, minimum: int | None = None,
          metavar: str = "N") -> int:
    """An int flag (retries, lines, sizes) whose bad text exits 2 at parse time."""
    what = "a whole number" if minimum is None else f"a whole number >= {minimum}"

    def new(cls: type[int], text: object = default) -> int:
        try:
            value = int.__new__(cls, text)  # type: ignore[call-overload]
        except (TypeError, ValueError):
            raise _refuse(flag, text, what, default) from None
        if abs(value) > limit:
            raise _refuse(flag, text, f"{what} up to {limit}", default)
        if minimum is not None and value < minimum:
            raise _refuse(flag, text, what, default)
        return value  # type: ignore[no-any-return]

    kind = type("CountFlag", (int,), {"__new__": new, "__slots__": (), "metavar": metavar})
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


def count_kind(flag: str, example: int, *, minimum: int = 1) -> type:
    """The kind of an optional whole-number flag (no default): --ticks, --unit-size."""
    return type(count(flag, example, minimum=minimum))


def seconds_kind(flag: str, example: float) -> type:
    """The kind of an optional seconds flag (no default): monitor --timeout."""
    return type(number(flag, example))


def choice(flag: str, choices: Iterable[str]) -> type:
    """The kind of a flag taking one of `choices`: anything else exits 2 at parse time,
    with one line listing them."""
    options = tuple(choices)
    listed = "|".join(options)

    def new(cls: type[str], text: object = "") -> str:
        if text not in options:
            raise Exit(f"error: {flag} {text!r} is not one of {listed}; e.g. {flag} "
                       f"{options[0]}", code=EXIT_BAD_INPUT)
        return str.__new__(cls, text)

    return type("ChoiceFlag", (str,), {"__new__": new, "__slots__": (), "metavar": listed,
                                       "choices": options})


def check_choice(value: str | None, flag: str, choices: Iterable[str]) -> str | None:
    """The same rule for a value handed over in Python (tests, deploy options)."""
    options = tuple(choices)
    if value is not None and value not in options:
        raise ConfigError(f"{flag} {value!r} is not one of {'|'.join(options)}; "
                          f"e.g. {flag} {options[0]}")
    return value


def positive_int(value: Any, flag: str) -> int | None:
    """An optional whole-number flag's text: None stays None, anything but an integer >= 1
    is bad input."""
    if value in (None, ""):
        return None
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise ConfigError(f"{flag} must be a positive integer, got {value!r}; e.g. {flag} 10")
    return n


def seconds(value: str | float | None, flag: str) -> float | None:
    """An optional seconds flag's text: None/'' stays None, a non-number is bad input."""
    if value is None or value == "":
        return None
    try:
        n = float(value)
    except ValueError:
        raise ConfigError(f"{flag} {value!r} is not a number of seconds") from None
    if not math.isfinite(n) or abs(n) > MAX_SECONDS:
        raise ConfigError(f"{flag} {value!r} is not a number of seconds up to "
                          f"{MAX_SECONDS:g}")
    return n


def env_number(name: str, default: float, cast: Callable[[str], float] = float, *,
               minimum: float = 0.0, environ: Mapping[str, str] | None = None) -> float:
    """A numeric environment variable (JOBSAFE_CONNECT_TIMEOUT...): unset is `default`,
    bad text or a value below `minimum` is one line of bad input (exit 2)."""
    text = (os.environ if environ is None else environ).get(name)
    if text is None or not text.strip():
        return default
    kind = "a whole number" if cast is int else "a number"
    try:
        value = cast(text.strip())
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < minimum:
        raise ConfigError(f"{name}={text!r} is not {kind} >= {minimum:g}; unset it or set "
                          f"e.g. {name}={default:g}")
    return value


# ---- the task decorator --------------------------------------------------------------

class JobsafeTask(Task[Any]):
    """An Invoke Task whose short flags come from SHORTS only and whose flags may name
    their kind (`kinds=`) even without a default."""

    def __init__(self, body: Callable[..., Any], *args: Any,
                 kinds: Mapping[str, type] | None = None, **kwargs: Any) -> None:
        kwargs["auto_shortflags"] = False
        self.kinds = dict(kinds or {})
        super().__init__(body, *args, **kwargs)

    def arg_opts(self, name: str, default: str, taken_names: set[str]) -> dict[str, Any]:
        opts: dict[str, Any] = super().arg_opts(name, default, taken_names)
        short = SHORTS.get(name)
        if short is not None and short not in taken_names:
            opts["names"] = [*opts["names"], short]
        if name in self.kinds:
            opts["kind"] = self.kinds[name]
        return opts


def task(*args: Any, **kwargs: Any) -> Any:
    """`invoke.task` with JobsafeTask: `@task(help=..., kinds={"on_running": choice(...)})`."""
    kwargs.setdefault("klass", JobsafeTask)
    return invoke_task(*args, **kwargs)


# ---- --help shows each kind's value name ---------------------------------------------

_invoke_help_for = ParserContext.help_for


def _help_for(self: ParserContext, flag: str) -> tuple[str, str]:
    """Invoke names only str/int values (`--x=STRING`) and shows other kinds as boolean
    flags; a kind built here shows its metavar (`--watch=SECONDS`, `-H STRING`)."""
    arg = self.flags.get(flag)
    metavar = getattr(getattr(arg, "kind", None), "metavar", None)
    if arg is None or not metavar:
        return _invoke_help_for(self, flag)
    names = [f"{n} {metavar}" if len(n.strip("-")) == 1 else f"{n}={metavar}"
             for n in self.names_for(flag)]
    return ", ".join(sorted(names, key=len)), arg.help or ""


ParserContext.help_for = _help_for  # type: ignore[method-assign]
