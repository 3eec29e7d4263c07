"""Retry planning for failed pueue tasks: pure, no I/O (deploy's RESTART, `inv retry-failed`,
and any other command that re-adds work import this).

Why a plan and not `pueue restart`: in v4 `restart` creates a new task *without* its
dependencies, and blind restarts in a loop once turned 60 jobs into ~12,800 (the 2026-03-04
incident). A retry here is a fresh `pueue add` of the same command in the same group and
working directory, labelled ``<base>-retry-N``, and only when all of these hold:

* identity is (group, label), never the task id (INV-8): every attempt of a job shares a
  *base label* (``X``, ``X-retry-1``, ``X-retry-2`` ... all have base ``X``);
* idempotent: if any attempt of that base is queued/running/paused/stashed, or the latest
  attempt succeeded, nothing is added (a rerun converges instead of duplicating);
* classified: a kill or exit 137 (SIGKILL / OOM) or 143 (SIGTERM) is *transient* and
  retried; any other exit (1 app error, 2 missing script...) is *persistent* and retried
  only with ``retry_all``; a dependency failure is never re-added alone (it would run
  without the inputs its ``--after`` chain guaranteed: resubmit the chain);
* budgeted: at most ``budget`` retries per (group, base label), counted as the larger of
  the re-adds recorded in the local journal (across runs) and the highest ``-retry-N``
  still visible in the pueue state (which survives a lost journal).

Public API: `base_label`, `attempt_of`, `retry_label` (the label grammar, defined once in
hostside/model.py and re-exported here), `latest_attempt`, `classify`,
`used_from_journal`, `plan_retries` -> `RetryPlan` (of `RetryDecision`), `RE_ADD_ACTION`,
`DEFAULT_BUDGET`.
A re-add is journaled as action ``RE_ADD_ACTION`` with ``group`` and ``labels=[new label]``;
`used_from_journal` counts exactly those lines.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..hostside.model import LEAN_ENV
from ..hostside.model import attempt_of as attempt_of
from ..hostside.model import base_label as base_label
from ..hostside.model import retry_label as retry_label
from ..scheduler.pueue import PueueState, Task
from ..secrecy import secret_name

DEFAULT_BUDGET = 3
RE_ADD_ACTION = "re-add"

# Why each kind of outcome is or is not retried (shown to the operator).
TRANSIENT = "transient"  # killed, 137, 143
PERSISTENT = "persistent"  # any other failure
DEPENDENCY = "dependency"  # its --after dependency failed: resubmit the chain instead

Key = tuple[str, str]  # (group, base label)


def classify(task: Task) -> str:
    """transient | persistent | dependency, for a failed task."""
    if task.state == "dependency_failed":
        return DEPENDENCY
    return TRANSIENT if task.transient_failure else PERSISTENT


def used_from_journal(entries: Iterable[Mapping[str, Any]], host: str | None = None
                      ) -> dict[Key, int]:
    """Retries already spent per (group, base label), from journal lines of RE_ADD_ACTION
    with result ok (a failed add spent nothing)."""
    used: dict[Key, int] = {}
    for e in entries:
        if e.get("action") != RE_ADD_ACTION or e.get("result") != "ok":
            continue
        if host is not None and e.get("host") != host:
            continue
        group = str(e.get("group", ""))
        for label in e.get("labels") or ():
            key = (group, base_label(str(label)))
            used[key] = used.get(key, 0) + 1
    return used


@dataclass(frozen=True)
class RetryDecision:
    group: str
    label: str  # the latest attempt's label (what failed)
    base: str
    action: str  # add | skip | exhausted
    reason: str
    new_label: str | None = None
    command: str = ""
    workdir: str = ""
    state: str = ""
    exit_code: int | None = None
    kind: str = ""  # transient | persistent | dependency | ""
    used: int = 0  # retries already spent before this decision
    env_names: tuple[str, ...] = ()  # the playbook's pass_env names the re-add carries over

    def to_dict(self) -> dict[str, Any]:
        return {
            "group": self.group, "label": self.label, "base": self.base,
            "action": self.action, "reason": self.reason, "new_label": self.new_label,
            "command": self.command, "workdir": self.workdir, "state": self.state,
            "exit_code": self.exit_code, "kind": self.kind, "used": self.used,
        }


@dataclass(frozen=True)
class RetryPlan:
    decisions: tuple[RetryDecision, ...]
    budget: int
    retry_all: bool

    @property
    def to_add(self) -> list[RetryDecision]:
        return [d for d in self.decisions if d.action == "add"]

    @property
    def exhausted(self) -> list[RetryDecision]:
        return [d for d in self.decisions if d.action == "exhausted"]

    @property
    def skipped(self) -> list[RetryDecision]:
        return [d for d in self.decisions if d.action == "skip"]

    def to_dict(self) -> dict[str, Any]:
        return {"budget": self.budget, "retry_all": self.retry_all,
                "decisions": [d.to_dict() for d in self.decisions]}


def latest_attempt(attempts: Sequence[Task]) -> Task:
    """The newest of a label's attempts: the highest retry number wins; within one label
    the highest id is the newest in this snapshot (ids are max+1; reuse only happens after
    the older task is gone)."""
    return max(attempts, key=lambda t: (attempt_of(t.label or ""), t.id))


def plan_retries(
    state: PueueState,
    *,
    groups: Iterable[str] | None = None,
    budget: int = DEFAULT_BUDGET,
    used: Mapping[Key, int] | None = None,
    retry_all: bool = False,
    forced: Iterable[Key] = (),
) -> RetryPlan:
    """Decide, per (group, base label) whose latest attempt failed, whether to re-add it.

    ``used``: retries already spent (from `used_from_journal`). ``forced``: (group, label)
    pairs that must be retried whatever their exit code (deploy killed them itself); they
    still respect idempotency and the budget.
    """
    if budget < 0:
        raise ValueError(f"retry budget must be >= 0, got {budget}")
    used = used or {}
    wanted = None if groups is None else set(groups)
    forced_keys = {(g, base_label(lbl)) for g, lbl in forced}
    by_key: dict[Key, list[Task]] = {}
    for t in state.tasks:
        if wanted is not None and t.group not in wanted:
            continue
        if t.label is None:
            continue  # unlabelled tasks cannot be tracked (INV-8); audit shows them
        by_key.setdefault((t.group, base_label(t.label)), []).append(t)

    decisions = [
        d for (group, base), attempts in sorted(by_key.items())
        if (d := _decide(base, attempts, budget=budget, used=used.get((group, base), 0),
                         retry_all=retry_all, forced=(group, base) in forced_keys)) is not None
    ]
    return RetryPlan(tuple(decisions), budget, retry_all)


MAX_CARRIED_ENV = 16
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def carried_env(names: Iterable[str]) -> tuple[str, ...]:
    """The extra environment *names* a fresh re-add keeps from the failed task: what the
    feeder added beyond its lean allow-list (a playbook's `pass_env`), so the retry runs
    like the original. Values are re-read on the host, never copied from pueue's state;
    secret-looking names are dropped; a task with more extras than `pass_env` would give
    was added outside jobsafe-ops with a whole login environment, and gets none."""
    extra = [n for n in names if n not in LEAN_ENV]
    if len(extra) > MAX_CARRIED_ENV:
        return ()
    return tuple(n for n in extra if _ENV_NAME.match(n) and not secret_name(n))


def _decide(base: str, attempts: list[Task], *, budget: int, used: int, retry_all: bool,
            forced: bool) -> RetryDecision | None:
    latest = latest_attempt(attempts)
    active = [t for t in attempts if t.is_active]
    if latest.state == "success" or not any(t.is_failed for t in attempts):
        return None  # done, or never failed: nothing to retry
    if active:
        latest = latest_attempt([t for t in attempts if t.is_failed])
    spent = max(used, max(attempt_of(t.label or "") for t in attempts))

    def decide(action: str, reason: str, kind: str = "", new: str | None = None
               ) -> RetryDecision:
        return RetryDecision(
            group=latest.group, label=latest.label or "", base=base, action=action,
            reason=reason, new_label=new, command=latest.command, workdir=latest.path,
            state=latest.state, exit_code=latest.exit_code, kind=kind, used=spent,
            env_names=carried_env(latest.env_names))

    if active:
        # a failed attempt was already re-added (queued/running...): never add a second
        return decide("skip", f"already {active[0].state} as {active[0].label}")
    kind = TRANSIENT if forced else classify(latest)
    code = "killed" if latest.state == "killed" else f"exit {latest.exit_code}"
    if kind == DEPENDENCY:
        return decide("skip", "its --after dependency failed: resubmit the whole chain (AP-6)",
                      kind)
    if kind == PERSISTENT and not retry_all:
        return decide("skip", f"persistent failure ({code}); fix the cause or pass --retry-all",
                      kind)
    if spent >= budget:
        return decide("exhausted", f"retry budget spent ({spent}/{budget}); investigate, then "
                      "clean the group or raise --retry-budget", kind)
    why = "killed by this deploy" if forced else f"{kind} failure ({code})"
    return decide("add", f"{why}; retry {spent + 1}/{budget}", kind, retry_label(base, spent + 1))
