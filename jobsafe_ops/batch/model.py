"""The batch's values: a playbook as loaded (Playbook, Phase, AfterStep, Split), its
expansion (Draft, filled in as its label renders) and the plan (JobSpec, Plan); pure,
frozen but for Draft.

The loader (playbook.py) builds them and runs the checks (invariants.py, secrecy.py) over
them; the checks import these values, never the loader, so neither imports the other.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from ..errors import ConfigError
from ..inventory import Host

SPLIT_NAMES = ("epoch", "start", "end")  # one dimension, three spellings
PATH_KINDS = ("artifacts", "checkpoints", "temp_dirs", "locks")
RESERVED = frozenset({"label", "group", "phase", "playbook", *SPLIT_NAMES})
DEFAULT_RETRY_BUDGET = 2
DEFAULT_UNIT_SIZE = 500
DEFAULT_UNIT_PARALLEL = 4
UNITS_THRESHOLD = 10_000  # above 10 K jobs, units mode by default (docs/glossary.md)

Scalar = str | int | float | bool


# ---- data -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Split:
    by: str  # year | month
    start: date
    end: date

    def epochs(self) -> list[dict[str, str]]:
        """[{epoch, start, end}] with inclusive ISO dates, clamped to start..end."""
        out = []
        y, m = self.start.year, self.start.month
        while date(y, m, 1) <= self.end:
            if self.by == "year":
                lo, hi, name = date(y, 1, 1), date(y, 12, 31), f"{y}"
                y += 1
            else:
                lo = date(y, m, 1)
                hi = date(y, m, calendar.monthrange(y, m)[1])
                name = f"{y}-{m:02d}"
                y, m = (y + 1, 1) if m == 12 else (y, m + 1)
            out.append({"epoch": name, "start": max(lo, self.start).isoformat(),
                        "end": min(hi, self.end).isoformat()})
        return out


@dataclass(frozen=True)
class Phase:
    name: str  # "" when the playbook has no [[phases]]
    command: str
    label: str
    group: str
    workdir: str | None
    memory_max: int | None
    matrix: tuple[tuple[str, tuple[str, ...]], ...]
    split: Split | None
    paths: tuple[tuple[str, str, str], ...]  # (kind, template, where)
    env: tuple[tuple[str, str], ...] = ()
    after_phase: str | None = None


@dataclass(frozen=True)
class AfterStep:
    label: str
    command: str
    group: str
    workdir: str | None
    memory_max: int | None


@dataclass(frozen=True)
class Playbook:
    name: str
    source: str
    phases: tuple[Phase, ...]
    after: tuple[AfterStep, ...] = ()
    categories: tuple[str, ...] = ()
    cleanup: tuple[str, ...] = ()
    merge: tuple[str, ...] = ()
    env_overrides: tuple[str, ...] = ()
    pass_env: tuple[str, ...] = ()
    retry_budget: int = DEFAULT_RETRY_BUDGET
    unit_size: int = DEFAULT_UNIT_SIZE
    unit_parallel: int = DEFAULT_UNIT_PARALLEL
    after_scope: str = "fleet"  # submit-batch --spread: "host" chains each host's share


@dataclass(frozen=True)
class JobSpec:
    label: str
    group: str
    workdir: str  # as written (may start with ~); batch.py makes it absolute on the host
    command: str  # rendered; placeholder values already quoted
    memory_max: int | None = None
    env: tuple[tuple[str, str], ...] = ()
    after: tuple[str, ...] = ()  # labels this job waits for (pueue --after)
    phase: str = ""
    kind: str = "job"  # job | after
    params: tuple[tuple[str, str], ...] = ()
    paths: tuple[tuple[str, str], ...] = ()  # (kind, rendered path)

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "group": self.group, "workdir": self.workdir,
                "command": self.command, "memory_max": self.memory_max,
                "env": dict(self.env), "after": list(self.after), "phase": self.phase,
                "kind": self.kind, "params": dict(self.params),
                "paths": [list(p) for p in self.paths]}


@dataclass(frozen=True)
class Plan:
    playbook: str
    host: str
    jobs: tuple[JobSpec, ...]
    after: tuple[JobSpec, ...] = ()
    retry_budget: int = DEFAULT_RETRY_BUDGET
    unit_size: int = DEFAULT_UNIT_SIZE
    unit_parallel: int = DEFAULT_UNIT_PARALLEL
    pass_env: tuple[str, ...] = ()
    source: str = ""

    @property
    def groups(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(j.group for j in (*self.jobs, *self.after)))

    @property
    def wants_memory_cap(self) -> bool:
        return any(j.memory_max for j in (*self.jobs, *self.after))

    def to_dict(self) -> dict[str, Any]:
        return {"playbook": self.playbook, "host": self.host, "count": len(self.jobs),
                "groups": list(self.groups), "jobs": [j.to_dict() for j in self.jobs],
                "after": [j.to_dict() for j in self.after]}


@dataclass
class Draft:
    """One job of the expansion before its JobSpec: the phase, its parameters, and (once
    its label is rendered) every placeholder value."""

    phase: Phase
    params: dict[str, str]
    values: dict[str, str] = field(default_factory=dict)


def workdir(value: str | None, host: Host) -> str:
    """Default: the host's project dir; a relative path is taken inside it (AP-11: a job
    without -w runs in $HOME over SSH)."""
    if not value:
        return host.project_dir
    if "{" in value:
        raise ConfigError(f"workdir {value!r} takes no placeholders: one directory per phase")
    if value.startswith(("/", "~")):
        return value
    return f"{host.project_dir.rstrip('/')}/{value}"
