"""The scheduler seam: what jobsafe asks of a batch scheduler, by group and label.

A `Scheduler` is pure, like the rest of planning: each verb returns the argv to run on the
host (Remote runs it, the dry run prints it), each `parse_*` reads that command's output.
Jobs are named by (group, label), never by the scheduler's own ids: pueue reuses task ids
after `clean` (INV-8), Slurm ids mean nothing on another cluster. The verbs that act on
existing jobs (kill, log, add --after) take the `PueueState` of this session's status read
and resolve the labels in it; the ids stay inside the argv and are never returned or kept.

The state a scheduler returns is the normalised model (hostside/model.py: states, blocked,
the retry grammar), so audit, monitor, retry and deploy judge a Slurm job and a pueue task
the same way. `scheduler.for_host(host)` picks the implementation (pueue, or Slurm's
`SlurmScheduler` on a `scheduler = "slurm"` host).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from ..hostside.model import ACTIVE as ACTIVE
from ..hostside.model import FAILED
from ..hostside.model import TRANSIENT_EXIT_CODES as TRANSIENT_EXIT_CODES

FAILED_RESULTS = FAILED


@dataclass(frozen=True)
class Task:
    id: int
    group: str
    label: str | None
    command: str
    path: str
    state: str  # queued|stashed|running|paused|locked|success|failed|killed|...
    exit_code: int | None = None
    dependencies: tuple[int, ...] = ()
    start: datetime | None = None
    end: datetime | None = None
    enqueued_at: datetime | None = None
    detail: str | None = None  # FailedToSpawn message
    env_names: tuple[str, ...] = ()  # names of the add-time environment (values never kept)

    @property
    def is_done(self) -> bool:
        return self.state == "success" or self.state in FAILED_RESULTS

    @property
    def is_failed(self) -> bool:
        return self.state in FAILED_RESULTS

    @property
    def is_active(self) -> bool:
        return self.state in ACTIVE

    @property
    def transient_failure(self) -> bool:
        """137/143/Killed may succeed on a retry; exit 1/2 are usually persistent."""
        return self.state == "killed" or (
            self.state == "failed" and self.exit_code in TRANSIENT_EXIT_CODES
        )

    def runtime(self, now: datetime) -> float | None:
        if self.start is None:
            return None
        return ((self.end or now) - self.start).total_seconds()

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "group": self.group, "label": self.label, "command": self.command,
            "path": self.path, "state": self.state, "exit_code": self.exit_code,
            "dependencies": list(self.dependencies),
            "start": self.start.isoformat() if self.start else None,
            "end": self.end.isoformat() if self.end else None,
        }


@dataclass(frozen=True)
class Group:
    name: str
    status: str  # Running | Paused | Reset
    parallel: int


@dataclass(frozen=True)
class PueueState:
    """A scheduler's queue as one status read sees it, in the model's vocabulary (the name
    is historical: a Slurm scheduler returns the same type from squeue/sacct)."""

    tasks: tuple[Task, ...]
    groups: Mapping[str, Group]
    schema: str  # "v3" | "v4" | "empty"
    blocked_ids: frozenset[int] = field(default_factory=frozenset)

    def in_group(self, group: str | None) -> list[Task]:
        return [t for t in self.tasks if group is None or t.group == group]

    def by_label(self, group: str | None = None) -> dict[str, list[Task]]:
        out: dict[str, list[Task]] = {}
        for t in self.in_group(group):
            if t.label is not None:
                out.setdefault(t.label, []).append(t)
        return out

    def state_of(self, task: Task) -> str:
        """The state shown to operators: 'blocked' for tasks that can never start."""
        return "blocked" if task.id in self.blocked_ids else task.state

    def counts(self, group: str | None = None) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in self.in_group(group):
            s = self.state_of(t)
            out[s] = out.get(s, 0) + 1
        return out


QueueState = PueueState  # the scheduler-neutral name of the same type


@runtime_checkable
class Scheduler(Protocol):
    """Every verb by group and label; each returns argv (one word per value)."""

    name: str  # "pueue" | "slurm": shown in reports and journal lines

    def status(self, group: str | None = None) -> list[str]:
        """Read the queue (all groups, or one)."""
        ...

    def parse_status(self, text: str) -> PueueState:
        """The `status` command's output -> the normalised state."""
        ...

    def add(self, command: str, *, group: str, label: str, workdir: str,
            after: Sequence[str] = (), state: PueueState | None = None) -> list[str]:
        """Queue one job; `after`: labels of jobs it waits for, resolved in `state`."""
        ...

    def kill(self, state: PueueState, group: str, labels: Sequence[str],
             signal: str | None = None) -> list[str]:
        """Stop the active jobs with these labels in `group`."""
        ...

    def pause(self, group: str) -> list[str]:
        """No new starts in `group`; running jobs finish."""
        ...

    def resume(self, group: str) -> list[str]:
        """Let `group` start jobs again."""
        ...

    def parallel(self, group: str, n: int) -> list[str]:
        """At most `n` (>= 1) jobs of `group` at once."""
        ...

    def clean(self, group: str, successful_only: bool = False) -> list[str]:
        """Forget the finished jobs of one group (never every group)."""
        ...

    def log(self, state: PueueState, group: str, labels: Sequence[str],
            lines: int = 20) -> list[str]:
        """The last `lines` lines of output of the newest attempt of each label."""
        ...

    def parse_log(self, state: PueueState, group: str, text: str) -> dict[str, str]:
        """The `log` command's output -> {label: output}."""
        ...
