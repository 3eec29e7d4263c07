"""Custom health checks: `[[checks]]` in a host file (issue 18). Pure: no I/O.

A check is the operator's own shell command, run on the host (`bash -c`, under `timeout`)
inside the round trip a command makes anyway: probe's facts (`when = "probe"`), deploy's
monitor samples (`"deploy-watch"`), the autoscaler's poll after it changed parallelism
(`"after-scale"`). Here: the model and its validation (one line naming the file, the check,
the field and the fix: exit 2 before any SSH) and the `expect` grammar. The remote snippet,
its framed output and the judging into verdict rows are in facts/checks.py.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError

WHENS = ("probe", "deploy-watch", "after-scale")
DEFAULT_WHEN = ("probe",)
SEVERITIES = ("alarm", "warn")  # the health table's levels: alarm fails, warn reports
NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
DEFAULT_TIMEOUT = 30  # seconds
MAX_TIMEOUT = 600
ORDERING = ("<=", ">=", "<", ">")
OPERATORS = ("<=", ">=", "==", "!=", "<", ">")  # longest first
_NUMBER = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$")
FIELDS = ("name", "command", "expect", "when", "severity", "timeout")
EXPECT_HELP = ('write expect = "0" (the output equals 0), or a comparison: "< 5", "<= 5", '
               '"> 0", ">= 1", "== ok", "!= 0"')


def number(text: str) -> float | None:
    """'12' / '-0.5' / '1e3' -> a finite float; anything else None."""
    text = text.strip()
    if not _NUMBER.match(text):
        return None
    value = float(text)
    return value if math.isfinite(value) else None


@dataclass(frozen=True)
class Expect:
    """What the check's stripped stdout must be: `op operand`. Equality compares numbers
    when both sides parse as numbers ("0.0" == "0"), else the text; ordering needs numbers."""

    op: str
    operand: str

    @property
    def text(self) -> str:
        return f"{self.op} {self.operand}"

    def holds(self, observed: str) -> tuple[bool, str]:
        """(satisfied, why not) for the stripped stdout."""
        want, got = number(self.operand), number(observed)
        if self.op in ORDERING:
            if got is None:
                return False, "not a number"
            assert want is not None  # parse_expect refuses an ordering without a number
            ok = {"<": got < want, "<=": got <= want, ">": got > want, ">=": got >= want}
            return ok[self.op], ""
        same = got == want if got is not None and want is not None else observed == self.operand
        return (same if self.op == "==" else not same), ""


def parse_expect(text: str) -> Expect:
    """`"0"` (equals), `"< 5"`, `"<= 5"`, `"> 0"`, `">= 1"`, `"== ok"`, `"!= 0"` -> Expect;
    ValueError naming what is wrong."""
    body = text.strip()
    if not body:
        raise ValueError("is empty")
    op = next((o for o in OPERATORS if body.startswith(o)), "")
    operand = body[len(op):].strip()
    if not operand:
        raise ValueError(f"{text!r} has nothing after {op!r}")
    if op in ORDERING and number(operand) is None:
        raise ValueError(f"{text!r}: {op!r} compares numbers and {operand!r} is not one")
    return Expect(op or "==", operand)


@dataclass(frozen=True)
class Check:
    name: str
    command: str
    expect: Expect
    when: tuple[str, ...] = DEFAULT_WHEN
    severity: str = "alarm"
    timeout: int = DEFAULT_TIMEOUT

    def to_dict(self) -> dict[str, Any]:
        # the command is the operator's and may carry a credential: not in reports
        return {"name": self.name, "expect": self.expect.text, "when": list(self.when),
                "severity": self.severity, "timeout": self.timeout}


def parse_checks(value: Any, where: str, scheduler: str = "pueue") -> tuple[Check, ...]:
    """The host file's `checks` value (a list of tables) -> Checks; ConfigError (exit 2) with
    one line naming the file, the check and the field, and the fix."""
    if not isinstance(value, list) or not all(isinstance(c, dict) for c in value):
        raise ConfigError(f"{where}: field 'checks' must be an array of tables; write "
                          '[[checks]] with name = "...", command = "...", expect = "0"')
    if value and scheduler != "pueue":
        raise ConfigError(f"{where}: [[checks]] run on pueue hosts only (probe, deploy, "
                          f"autoscale); remove them from this scheduler = {scheduler!r} host")
    out: list[Check] = []
    for i, data in enumerate(value, 1):
        check = _check(data, f"{where} [[checks]] #{i}")
        if any(c.name == check.name for c in out):
            raise ConfigError(f"{where} [[checks]] #{i}: name {check.name!r} is used twice; "
                              "give each check its own name (it is its row in the health "
                              "table)")
        out.append(check)
    return tuple(out)


def _check(data: Mapping[str, Any], where: str) -> Check:
    for key in data:
        if key not in FIELDS:
            raise ConfigError(f"{where}: unknown key {key!r}; allowed: {', '.join(FIELDS)} "
                              "(fix the spelling or remove it)")
    for key, example in (("name", 'name = "clickhouse-errors"'),
                         ("command", 'command = "ls ~/flagdir | wc -l"'),
                         ("expect", 'expect = "0"')):
        if key not in data:
            raise ConfigError(f"{where}: missing required field {key!r}; add {example}")
        if not isinstance(data[key], str):
            raise ConfigError(f"{where}: field {key!r} must be a string, got "
                              f"{type(data[key]).__name__}; write {example}")
    name = data["name"]
    where = f"{where} {name!r}" if name else where
    if not NAME.match(name):
        raise ConfigError(f"{where}: name {name!r}: use 1-64 letters, digits, '.', '_', '-' "
                          '(e.g. name = "clickhouse-errors")')
    command = data["command"]
    if not command.strip() or "\0" in command:
        raise ConfigError(f"{where}: field 'command' is empty; write the shell command run "
                          'on the host, e.g. command = "ls ~/flagdir | wc -l"')
    try:
        expect = parse_expect(data["expect"])
    except ValueError as exc:
        raise ConfigError(f"{where}: field 'expect' {exc}; {EXPECT_HELP}") from None
    return Check(name, command, expect, _when(data.get("when", list(DEFAULT_WHEN)), where),
                 _severity(data.get("severity", "alarm"), where),
                 _timeout(data.get("timeout", DEFAULT_TIMEOUT), where))


def _when(value: Any, where: str) -> tuple[str, ...]:
    fix = 'write when = ["probe"], or any of "probe", "deploy-watch", "after-scale"'
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise ConfigError(f"{where}: field 'when' must be a string or a non-empty list; {fix}")
    for w in items:
        if w not in WHENS:
            raise ConfigError(f"{where}: when {w!r} is unknown; {fix}")
    return tuple(dict.fromkeys(items))


def _severity(value: Any, where: str) -> str:
    if value not in SEVERITIES:
        raise ConfigError(f"{where}: severity {value!r} is unknown; write severity = "
                          '"alarm" (the default: a failing check fails) or "warn" (reported '
                          "only)")
    return str(value)


def _timeout(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or \
            not 1 <= value <= MAX_TIMEOUT:
        raise ConfigError(f"{where}: timeout {value!r} is invalid; write the seconds the "
                          f"command may take, 1..{MAX_TIMEOUT} (default {DEFAULT_TIMEOUT})")
    return value


def selected(checks: Sequence[Check], when: str) -> tuple[Check, ...]:
    return tuple(c for c in checks if when in c.when)
