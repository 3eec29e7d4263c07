"""The custom checks' remote side (`[[checks]]`, model in jobsafe_ops/checks.py): the one
snippet run inside another command's round trip, the parser of its framed output, and the
judging into verdict rows like the built-in ones. Pure: no I/O.

Framing: each check's stdout and stderr are written to files and sent back base64-encoded
on one line each, after a header line carrying a per-round-trip nonce, so nothing a command
prints (a `@@section` line, our own header) can be read as the probe's facts or as another
check's result.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..checks import Check
from ..secrecy import redact_text
from ..shell import quote

KILL_AFTER = 5  # seconds after the timeout's TERM: KILL
STDOUT_BYTES = 4096  # the stdout judged (the first bytes)
STDERR_BYTES = 512  # the stderr tail kept for the message
SHOWN = 80  # characters of output shown in the table and --json
TIMED_OUT = (124, 137)  # timeout(1): TERM sent / KILL sent


def new_nonce() -> str:
    return secrets.token_hex(8)


def script(checks: Sequence[Check], nonce: str) -> str:
    """Shell lines run inside another command's round trip: each check under `timeout`,
    `bash -c` its command, stdin closed, then one header line and two base64 lines. No
    output for a check = it did not run (mktemp failed, the round trip was cut)."""
    if not checks:
        return ""
    lines = ['_jc_d=$(mktemp -d 2>/dev/null) && {']
    for i, c in enumerate(checks):
        lines.append(
            f"timeout -k {KILL_AFTER} {c.timeout} bash -c {quote(c.command)} </dev/null "
            '>"$_jc_d/o" 2>"$_jc_d/e"; _jc_rc=$?; '
            f'echo "@@check {nonce} {i} $_jc_rc"; '
            f'head -c {STDOUT_BYTES} "$_jc_d/o" | base64 | tr -d \'\\n\'; echo; '
            f'tail -c {STDERR_BYTES} "$_jc_d/e" | base64 | tr -d \'\\n\'; echo')
    lines.append('rm -rf "$_jc_d"; }')
    return "\n".join(lines)


@dataclass(frozen=True)
class Ran:
    """One check's raw result: exit status, stdout (its first bytes), stderr (its tail)."""

    rc: int
    stdout: str
    stderr: str


def _b64(text: str) -> str:
    try:
        return base64.b64decode(text.strip(), validate=True).decode("utf-8", "replace")
    except (binascii.Error, ValueError):
        return ""


def split(text: str, nonce: str) -> tuple[str, dict[int, Ran]]:
    """A round trip's output -> (the output without the checks' frames, index -> Ran)."""
    header = f"@@check {nonce} "
    lines = text.splitlines(keepends=True)
    rest: list[str] = []
    ran: dict[int, Ran] = {}
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith(header):
            fields = line[len(header):].split()
            body = lines[i + 1:i + 3]
            i += 1 + len(body)
            if len(fields) == 2 and fields[0].isdigit() and \
                    fields[1].lstrip("-").isdigit() and len(body) == 2:
                ran[int(fields[0])] = Ran(int(fields[1]), _b64(body[0]), _b64(body[1]))
            continue
        rest.append(line)
        i += 1
    return "".join(rest), ran


# ---- judging -----------------------------------------------------------------------------

@dataclass(frozen=True)
class CheckResult:
    """One row like the built-in verdicts: ok, level (ok | warn | alarm), what was seen."""

    name: str
    ok: bool
    level: str
    observed: str  # stripped stdout, shortened, credentials masked ("" when it did not run)
    expected: str
    message: str
    exit_code: int | None = None

    @property
    def alarm(self) -> bool:
        return self.level == "alarm"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "verdict": self.level,
                "observed": self.observed, "expected": self.expected,
                "exit_code": self.exit_code, "message": self.message}


def shown(text: str, limit: int = SHOWN) -> str:
    """Output for a table cell: one line, at most `limit` characters, credentials masked."""
    flat = " | ".join(ln.strip() for ln in text.strip().splitlines() if ln.strip())
    flat = redact_text(flat)
    return flat if len(flat) <= limit else flat[:limit - 3] + "..."


def judge(check: Check, ran: Ran | None) -> CheckResult:
    """A check's raw result -> its verdict row. A command that did not exit 0, timed out or
    did not report fails like an unmet expect (at the check's severity)."""
    bad = check.severity

    def row(ok: bool, observed: str, message: str, rc: int | None) -> CheckResult:
        return CheckResult(check.name, ok, "ok" if ok else bad, observed, check.expect.text,
                           message, rc)

    if ran is None:
        return row(False, "", "no result from the host (the check did not run: mktemp -d "
                   "failed or the round trip was cut short)", None)
    out = ran.stdout.strip()
    seen = shown(out)
    if ran.rc in TIMED_OUT:
        return row(False, seen, f"timed out after {check.timeout}s (timeout = "
                   f"{check.timeout} in the check; make the command faster or raise it)", ran.rc)
    if ran.rc != 0:
        tail = shown(ran.stderr.strip().splitlines()[-1] if ran.stderr.strip() else "", 200)
        why = " (command not found?)" if ran.rc == 127 else ""
        return row(False, seen, f"exit {ran.rc}{why}" + (f": {tail}" if tail else
                                                         " (no stderr)"), ran.rc)
    ok, why = check.expect.holds(out)
    if ok:
        return row(True, seen, f"output {seen!r} is {check.expect.text}", 0)
    what = f"output {seen!r}" if out else "no output"
    return row(False, seen, f"{what} is not {check.expect.text}" + (f" ({why})" if why else ""),
               0)


def judge_all(checks: Sequence[Check], ran: Mapping[int, Ran]) -> tuple[CheckResult, ...]:
    return tuple(judge(c, ran.get(i)) for i, c in enumerate(checks))


def results(checks: Sequence[Check], text: str, nonce: str
            ) -> tuple[str, tuple[CheckResult, ...]]:
    """split + judge_all: (the rest of the output, one row per check, in order)."""
    rest, ran = split(text, nonce)
    return rest, judge_all(checks, ran)
