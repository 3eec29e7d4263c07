"""pueue adapter: pure parsing of `pueue status --json` (v3 and v4) and argv builders.

Nothing here does I/O. Identity is (group, label): task ids are max(existing)+1 and are
reused after `clean`/`remove`, so no state is keyed on them across commands (INV-8).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..errors import ConfigError, RemoteError
from ..hostside.model import add_words, blocked_ids, task_status
from ..hostside.model import parse_ts as _ts

# The normalised state (states, "blocked", tasks by label) is scheduler-neutral: base.py.
from .base import ACTIVE as ACTIVE
from .base import FAILED_RESULTS as FAILED_RESULTS
from .base import TRANSIENT_EXIT_CODES as TRANSIENT_EXIT_CODES
from .base import Group as Group
from .base import PueueState as PueueState
from .base import Task as Task


def parse_status(text: str | bytes) -> PueueState:
    """Parse `pueue status --json` (or the state file) of pueue v3 or v4."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RemoteError(f"pueue status --json returned invalid JSON ({exc})") from None
    return parse_state(data)


def parse_state(data: Mapping[str, Any]) -> PueueState:
    if not isinstance(data, Mapping) or "tasks" not in data or "groups" not in data:
        raise RemoteError("pueue status --json: expected an object with 'tasks' and 'groups'")
    tasks: list[Task] = []
    schemas: set[str] = set()
    for key, raw in data["tasks"].items():
        try:
            state, body, schema = task_status(raw)
        except ValueError as exc:
            raise RemoteError(f"pueue task {key}: {exc}") from None
        schemas.add(schema)
        tasks.append(Task(
            id=int(raw.get("id", key)),
            group=str(raw.get("group", "default")),
            label=raw.get("label"),
            command=str(raw.get("original_command") or raw.get("command") or ""),
            path=str(raw.get("path", "")),
            state=state,
            exit_code=body.get("exit_code"),
            dependencies=tuple(int(d) for d in raw.get("dependencies") or ()),
            start=_ts(body.get("start")),
            end=_ts(body.get("end")),
            enqueued_at=_ts(body.get("enqueued_at")),
            detail=body.get("detail"),
            env_names=tuple(sorted(raw.get("envs") or ())),
        ))
    tasks.sort(key=lambda t: t.id)
    groups = {
        name: Group(name=name, status=str(g.get("status", "Running")),
                    parallel=int(g.get("parallel_tasks", 1)))
        for name, g in data["groups"].items()
    }
    schema = "v3" if "v3" in schemas else ("v4" if schemas else "empty")
    return PueueState(tasks=tuple(tasks), groups=groups, schema=schema,
                      blocked_ids=_blocked(tasks))


def _blocked(tasks: Sequence[Task]) -> frozenset[int]:
    """Queued/stashed tasks that can never start (model.blocked_ids: a dependency failed or
    is blocked; one absent from the listing is not a reason)."""
    return frozenset(blocked_ids({t.id: (t.state, t.dependencies) for t in tasks}))


def parse_version(text: str) -> str | None:
    """'pueue 4.0.4' -> '4.0.4'."""
    parts = text.strip().split()
    return parts[-1] if len(parts) >= 2 and parts[0] == "pueue" else None


def parse_task_id(text: str) -> int:
    """`pueue add --print-task-id` prints only the id."""
    try:
        return int(text.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise RemoteError(f"pueue add did not print a task id: {text.strip()!r}") from None


# ---- argv builders (every value becomes one argv word; remote.py quotes the line) ----

def _require_abs(workdir: str) -> None:
    # AP-11/G-12: a job without -w runs in $HOME over SSH; pueue >= 4.0.3 canonicalizes
    # -w on the client, so it must be absolute and exist on the host.
    if not workdir or not workdir.startswith("/"):
        raise ConfigError(
            f"working directory {workdir!r} must be an absolute path on the host"
        )


def add_argv(
    pueue: str,
    command: str,
    *,
    group: str,
    label: str,
    workdir: str,
    after: Iterable[int] = (),
    print_task_id: bool = True,
    stashed: bool = False,
    priority: int | None = None,
) -> list[str]:
    _require_abs(workdir)
    if not label:
        raise ConfigError("every job needs a label (jobs are identified by group and label)")
    return add_words(pueue, command, group, label, workdir, after, print_task_id, stashed,
                     priority)


def parallel_argv(pueue: str, group: str, n: int) -> list[str]:
    if n < 1:
        raise ConfigError(f"parallel {n} for group {group!r}: pueue reads 0 as unlimited; use >= 1")
    return [pueue, "parallel", str(n), "--group", group]


def group_add_argv(pueue: str, group: str, parallel: int) -> list[str]:
    if parallel < 1:
        raise ConfigError(f"group {group!r}: parallel must be >= 1 (0 means unlimited)")
    return [pueue, "group", "add", group, "--parallel", str(parallel)]


def clean_argv(pueue: str, group: str, successful_only: bool = False) -> list[str]:
    # AP-10: always scoped to one group, never a global clean.
    if not group:
        raise ConfigError("pueue clean must be scoped to a group")
    return [pueue, "clean", "--group", group, *(["--successful-only"] if successful_only else [])]


def kill_argv(pueue: str, ids: Iterable[int], signal: str | None = None) -> list[str]:
    ids = list(ids)
    if not ids:
        raise ConfigError("kill needs task ids resolved from labels in the same session")
    return [pueue, "kill", *(["--signal", signal] if signal else []), *map(str, ids)]


def remove_argv(pueue: str, ids: Iterable[int]) -> list[str]:
    return [pueue, "remove", *map(str, ids)]


def log_argv(pueue: str, ids: Iterable[int], lines: int = 20) -> list[str]:
    return [pueue, "log", "--json", "--lines", str(lines), *map(str, ids)]


def pause_group_argv(pueue: str, group: str) -> list[str]:
    """Pause a group but let its running tasks finish (`--wait`): no new starts."""
    return [pueue, "pause", "--group", group, "--wait"]


def start_group_argv(pueue: str, group: str) -> list[str]:
    """Resume a group (also needed after `kill -g`, which pauses it: G-5)."""
    return [pueue, "start", "--group", group]


def status_argv(pueue: str, group: str | None = None) -> list[str]:
    return [pueue, "status", "--json", *(["--group", group] if group else [])]


def parse_log(text: str) -> dict[int, str]:
    """`pueue log --json` -> {id: output}."""
    try:
        data = json.loads(text or "{}")
    except json.JSONDecodeError:
        return {}
    return {int(k): str(v.get("output", "")) for k, v in data.items() if isinstance(v, dict)}


DAEMON_DOWN = ("pueue daemon not running (`pueue status` cannot connect to it); start it "
               "on the host: `pueued -d` or `systemctl --user start pueued`, then rerun")


def status_failure(text: str, rc: int | str = 1) -> str:
    """A failed `pueue status` as one line with the fix. pueue's error is an eyre report
    whose first line is a bare "Error:"; the numbered causes under it say what happened."""
    if "connecting to daemon" in text or "Did you start it" in text:
        return DAEMON_DOWN
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if "not found" in text or str(rc) in ("127", "rc 127"):
        from ..facts.programs import missing_program

        name = missing_program(text) or "pueue"  # the program, not the shell's wording
        return f"{name} not found on the host (exit 127); " \
               "install it, or set `pueue` in the host file to its full path or add its " \
               "directory to `path` (e.g. path = [\"~/.local/bin\"])"
    causes = [m.group(1) for ln in lines if (m := re.match(r"^\d+:\s*(.+)$", ln))]
    if causes:
        return "pueue status failed: " + "; ".join(causes)
    return "pueue status failed: " + (lines[0] if lines else f"exit {rc}")


# ---- the Scheduler seam (base.py) on top of the builders and parsers above ----------------

def _newest(tasks: Sequence[Task]) -> Task:
    """The newest task of one label: ids are max+1, so among coexisting tasks the highest."""
    return max(tasks, key=lambda t: t.id)


class PueueScheduler:
    """`base.Scheduler` for pueue: the builders above, with labels resolved to the task ids
    of this session's status read (never kept: ids are reused after clean, INV-8)."""

    name = "pueue"

    def __init__(self, pueue: str = "pueue") -> None:
        self.pueue = pueue

    def status(self, group: str | None = None) -> list[str]:
        return status_argv(self.pueue, group)

    def parse_status(self, text: str) -> PueueState:
        return parse_status(text)

    def add(self, command: str, *, group: str, label: str, workdir: str,
            after: Sequence[str] = (), state: PueueState | None = None) -> list[str]:
        ids = []
        if after:
            if state is None:
                raise ConfigError(f"{label}: --after needs the status read of this session "
                                  "to resolve its upstream labels")
            known = state.by_label()
            for upstream in after:
                if upstream not in known:
                    raise ConfigError(f"{label}: upstream job {upstream!r} is not in pueue; "
                                      "add it first, in the same session (AP-7)")
                ids.append(_newest(known[upstream]).id)
        return add_argv(self.pueue, command, group=group, label=label, workdir=workdir,
                        after=ids)

    def kill(self, state: PueueState, group: str, labels: Sequence[str],
             signal: str | None = None) -> list[str]:
        by_label = state.by_label(group)
        ids = sorted(t.id for label in labels for t in by_label.get(label, ()) if t.is_active)
        if not ids:
            shown = ", ".join(repr(label) for label in labels[:3]) or "(none)"
            raise ConfigError(f"kill: no queued or running job labelled {shown} in group "
                              f"{group!r}; nothing to stop")
        return kill_argv(self.pueue, ids, signal)

    def pause(self, group: str) -> list[str]:
        return pause_group_argv(self.pueue, group)

    def resume(self, group: str) -> list[str]:
        return start_group_argv(self.pueue, group)

    def parallel(self, group: str, n: int) -> list[str]:
        return parallel_argv(self.pueue, group, n)

    def clean(self, group: str, successful_only: bool = False) -> list[str]:
        return clean_argv(self.pueue, group, successful_only)

    def log(self, state: PueueState, group: str, labels: Sequence[str],
            lines: int = 20) -> list[str]:
        by_label = state.by_label(group)
        missing = [label for label in labels if label not in by_label]
        if missing or not labels:
            raise ConfigError(f"log: no job labelled {(missing or ['(none)'])[0]!r} in group "
                              f"{group!r}")
        return log_argv(self.pueue, sorted(_newest(by_label[lb]).id for lb in labels), lines)

    def parse_log(self, state: PueueState, group: str, text: str) -> dict[str, str]:
        label_of = {t.id: t.label for t in state.in_group(group) if t.label is not None}
        return {label_of[tid]: out for tid, out in parse_log(text).items() if tid in label_of}
