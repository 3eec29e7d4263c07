"""Dry run = the plan: a mutating deploy step first *plans* (the actions it would take, each
an argv and why, from the facts and read-only commands), then one `Executor` either lists
the plan (`--dry`) or runs it through the host's `Remote` and journals it. No step module
asks whether it is a dry run: `context.PlannedStep` is the only place that does.

An action whose argv depends on what only the run learns names that value `Later(...)`
(the commit a fetch finds) and says so in `when` (SIGKILL only for the tasks SIGTERM left
running): the dry listing shows the condition instead of a command the run would not send.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from .. import journal
from ..errors import RefusedError
from ..remote import Remote, Result
from ..shell import join


@dataclass(frozen=True)
class Later:
    """An argument only the run knows (e.g. "the commit origin/main names after the fetch")."""

    what: str


Arg = str | Later


@dataclass(frozen=True)
class Action:
    """One remote mutation: `argv` (the program call), wrapped in `prefix`/`suffix` when the
    line does more around it (the lean-env `env -i`, a `&& git rev-parse HEAD` after a
    reset); `why` for the operator; `when` a condition only the run can check ("" =
    always); `repeat` how the run may send it again (the upgrade's retries); `at_end` runs
    after every other action, on every exit path (the lock release)."""

    argv: tuple[Arg, ...]
    why: str
    prefix: str = ""
    suffix: str = ""
    when: str = ""
    repeat: str = ""
    check: bool = True
    at_end: bool = False
    journal: str = ""  # the journal action written after it ran ("" = the step journals)
    labels: tuple[str, ...] = ()
    fields: tuple[tuple[str, Any], ...] = ()
    # files written on the host (Remote.put_text: atomic, checked) right before the line:
    # (path, text, mode); listed by path, sent through the same connection
    uploads: tuple[tuple[str, str, int], ...] = ()

    @property
    def later(self) -> list[Later]:
        return [a for a in self.argv if isinstance(a, Later)]

    def bind(self, *values: str) -> Action:
        """The action with its `Later` arguments filled in, in order."""
        it = iter(values)
        argv = tuple(next(it) if isinstance(a, Later) else a for a in self.argv)
        if next(it, None) is not None:
            raise ValueError("more values than Later arguments")
        return replace(self, argv=argv)

    def _line(self, later: Callable[[int, Later], str]) -> str:
        n = iter(range(len(self.argv)))
        argv = [later(next(n), a) if isinstance(a, Later) else a for a in self.argv]
        return self.prefix + join(argv) + self.suffix

    @property
    def line(self) -> str:
        """The shell line the run sends (with `<...>` for what only the run knows)."""
        return self._line(lambda i, a: f"<{a.what}>")

    def matches(self, line: str) -> bool:
        """Does a line the run sent come from this action (any values for `Later`)?"""
        if not self.later:
            return line == self.line
        marks = self._line(lambda i, a: f"@@later{i}@@")  # '@' is never quoted: one word
        pattern = r"\S+".join(re.escape(part) for part in re.split(r"@@later\d+@@", marks))
        return re.fullmatch(pattern, line) is not None

    def text(self) -> str:
        """The listing: the line, then why (and when / how often) as a shell comment."""
        notes = [self.why]
        if self.uploads:
            notes.append("after uploading " + ", ".join(p for p, _, _ in self.uploads))
        if self.when:
            notes.append(f"only {self.when}")
        if self.repeat:
            notes.append(self.repeat)
        # one line whatever a label holds: the comment never ends early in a pasted line
        return f"{self.line}  # {' '.join('; '.join(notes).split())}"

    def to_dict(self) -> dict[str, Any]:
        return {"argv": [a if isinstance(a, str) else f"<{a.what}>" for a in self.argv],
                "line": self.line, "why": self.why, "when": self.when}


def wrapped(line: str, argv: Sequence[str], why: str, **kw: Any) -> Action:
    """An action from a finished line that ends with `join(argv)` (lean_env_line, a guard)."""
    tail = join(argv)
    if not line.endswith(tail):
        raise ValueError("the line does not end with the argv it wraps")
    return Action(tuple(argv), why, prefix=line[: len(line) - len(tail)], **kw)


def script(line: str, why: str, **kw: Any) -> Action:
    """An action that is a composite shell script, not one program call (the lock's mkdir)."""
    return Action((), why, prefix=line, **kw)


@dataclass(frozen=True)
class StepResult:
    """One protocol step. status: ok | changed | skipped | dry | warn | refused | failed."""

    name: str
    status: str
    seconds: float = 0.0
    detail: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    value: Any = field(default=None, compare=False, repr=False)  # the step's typed result

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "seconds": round(self.seconds, 3),
                "detail": self.detail, "data": self.data}


@dataclass(frozen=True)
class Plan:
    """What a mutating step would do: refusals (exit 3 before its first action), the
    actions in order, and the step's report row for --dry."""

    actions: tuple[Action, ...] = ()
    refusals: tuple[str, ...] = ()
    dry: StepResult | None = None  # the --dry row (None: the step has nothing to do)
    handoff: Mapping[str, Any] = field(default_factory=dict)  # what apply needs from plan

    @property
    def row(self) -> StepResult:
        """The step's row when it has nothing to run (the same for --dry and the run)."""
        if self.dry is None:
            raise RuntimeError("this plan has no row of its own")
        return self.dry


class Executor:
    """Runs or lists actions. Real: through the `Remote` (mutating: never reconnected,
    `Remote._checked` judges the exit), then journaled; `done` keeps every action sent, in
    order. Dry: `listed` keeps them (an `at_end` action last) and nothing is sent."""

    def __init__(self, remote: Remote, host_name: str, dry: bool) -> None:
        self.remote = remote
        self.host_name = host_name
        self.dry = dry
        self.done: list[Action] = []
        self.listed: list[Action] = []
        self._listed_at_end: list[Action] = []
        self.refusals: list[str] = []  # --dry: the refusals the run would stop at

    def show(self, actions: Sequence[Action]) -> None:
        for a in actions:
            (self._listed_at_end if a.at_end else self.listed).append(a)

    @property
    def plan(self) -> list[Action]:
        return [*self.listed, *self._listed_at_end]

    def run(self, action: Action, *values: str, timeout: float | None = None,
            check: bool | None = None) -> Result:
        if self.dry:
            raise AssertionError("a dry run sends no mutation")  # PlannedStep never calls it
        bound = action.bind(*values) if values else action
        if bound.later:
            raise ValueError(f"{bound.line}: values for {bound.later} are needed to run it")
        argv = [a for a in bound.argv if isinstance(a, str)]
        for path, text, mode in bound.uploads:
            self.remote.put_text(text, path, mode)
        result = self.remote.run(bound.line, check=bound.check if check is None else check,
                                 timeout=timeout, argv=argv or None)
        self.done.append(bound)
        if bound.journal:
            journal.append(self.host_name, bound.journal, list(bound.labels),
                           **dict(bound.fields))
        return result

    def refuse(self, message: str) -> None:
        """A safety refusal: exit 3 now, or in --dry noted and the walk-through goes on."""
        if self.dry:
            self.refusals.append(message)
            return
        raise RefusedError(f"{self.host_name}: {message}")
