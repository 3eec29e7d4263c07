"""Audit: what is running, queued, failed and blocked, by group and label (never by id).

Pure `build_audit(state)`; `read_state(remote)` is the one read. Deploy's AUDIT step and
`inv audit` share it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ..errors import RemoteError
from ..hostside.model import STARTED
from ..scheduler.pueue import (
    FAILED_RESULTS,
    PueueState,
    Task,
    parse_status,
    status_argv,
    status_failure,
)

if TYPE_CHECKING:  # annotations only: the planner loads this without the SSH transport
    from ..remote import Remote


@dataclass(frozen=True)
class TaskView:
    label: str | None
    group: str
    state: str
    command: str
    path: str
    exit_code: int | None = None
    runtime: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "group": self.group, "state": self.state,
                "command": self.command, "path": self.path, "exit_code": self.exit_code,
                "runtime": None if self.runtime is None else round(self.runtime, 1)}


@dataclass(frozen=True)
class GroupAudit:
    group: str
    status: str
    parallel: int
    counts: dict[str, int]
    running: tuple[TaskView, ...] = ()
    queued: tuple[TaskView, ...] = ()
    failed: tuple[TaskView, ...] = ()
    blocked: tuple[TaskView, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "group": self.group, "status": self.status, "parallel": self.parallel,
            "counts": self.counts,
            **{k: [t.to_dict() for t in getattr(self, k)]
               for k in ("running", "queued", "failed", "blocked")},
        }


@dataclass(frozen=True)
class Audit:
    host: str
    at: datetime
    groups: tuple[GroupAudit, ...] = field(default_factory=tuple)

    @property
    def running(self) -> list[TaskView]:
        return [t for g in self.groups for t in g.running]

    @property
    def failed(self) -> list[TaskView]:
        return [t for g in self.groups for t in g.failed]

    def to_dict(self) -> dict[str, Any]:
        return {"host": self.host, "at": self.at.isoformat(),
                "groups": [g.to_dict() for g in self.groups]}


def view(state: PueueState, task: Task, now: datetime) -> TaskView:
    return TaskView(task.label, task.group, state.state_of(task), task.command, task.path,
                    task.exit_code, task.runtime(now))


def build_audit(host: str, state: PueueState, group: str | None = None,
                now: datetime | None = None) -> Audit:
    now = now or datetime.now(UTC)
    names = [group] if group else sorted(state.groups)
    out = []
    for name in names:
        g = state.groups.get(name)
        tasks = state.in_group(name)

        def pick(*states: str, tasks: list[Task] = tasks) -> tuple[TaskView, ...]:
            return tuple(view(state, t, now) for t in tasks if state.state_of(t) in states)

        out.append(GroupAudit(
            group=name, status=g.status if g else "missing", parallel=g.parallel if g else 0,
            counts=state.counts(name),
            running=pick(*STARTED),
            queued=pick("queued", "stashed", "locked"),
            failed=pick(*FAILED_RESULTS),
            blocked=pick("blocked"),
        ))
    return Audit(host=host, at=now, groups=tuple(out))


def read_state(remote: Remote, group: str | None = None, *,
               readonly: bool = False) -> PueueState:
    """`pueue status --json [--group G]`: --group filters tasks on the host (groups stay).
    `readonly`: a poll that may reconnect if the connection dropped (remote.Remote)."""
    result = remote.run(status_argv(remote.host.pueue, group), check=False,
                        readonly=readonly)
    if not result.ok:
        text = result.stderr + result.stdout
        raise RemoteError(f"{remote.host.name}: {status_failure(text, result.exited)}")
    return parse_status(result.stdout)
