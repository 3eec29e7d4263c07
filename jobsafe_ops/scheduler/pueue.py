"""pueue adapter: pure parsing of `pueue status --json` (v3 and v4) and argv builders.

Nothing here does I/O. Identity is (group, label): task ids are max(existing)+1 and are
reused after `clean`/`remove`, so no state is keyed on them across commands (INV-8).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..errors import ConfigError, RemoteError

# Normalised states. "blocked" is derived: queued behind a dependency that failed.
ACTIVE = ("queued", "running", "paused", "stashed", "locked")
FAILED_RESULTS = ("failed", "killed", "dependency_failed", "errored", "failed_to_spawn")
TRANSIENT_EXIT_CODES = frozenset({137, 143})  # SIGKILL (OOM) / SIGTERM: maybe transient


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


_FRACTION = re.compile(r"\.\d+")


def _ts(value: Any) -> datetime | None:
    if not value or not isinstance(value, str):
        return None
    # Python 3.11 fromisoformat accepts at most 6 fractional digits; pueue prints 9.
    text = _FRACTION.sub(lambda m: m.group(0)[:7], value.replace("Z", "+00:00"))
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


_RESULT_NAMES = {
    "Success": "success", "Killed": "killed", "Errored": "errored",
    "DependencyFailed": "dependency_failed",
}


def _result(result: Any) -> tuple[str, int | None, str | None]:
    if isinstance(result, str):
        return _RESULT_NAMES.get(result, result.lower()), (0 if result == "Success" else None), None
    if isinstance(result, dict) and "Failed" in result:
        return "failed", int(result["Failed"]), None
    if isinstance(result, dict) and "FailedToSpawn" in result:
        return "failed_to_spawn", None, str(result["FailedToSpawn"])
    raise ValueError(f"unknown task result {result!r}")


def _status(raw: Mapping[str, Any]) -> tuple[str, dict[str, Any], str]:
    """-> (state, status-owned fields, schema). v3: unit variants are bare strings and
    start/end are top-level; v4: every status is an object and Done carries `result`."""
    status = raw.get("status")
    if isinstance(status, str):  # v3 unit variant: Queued / Running / Paused / Locked
        return status.lower(), {"start": raw.get("start"), "end": raw.get("end"),
                                "enqueued_at": raw.get("enqueued_at")}, "v3"
    if not isinstance(status, dict) or len(status) != 1:
        raise ValueError(f"unknown task status {status!r}")
    kind, body = next(iter(status.items()))
    if kind == "Done":
        if isinstance(body, dict) and "result" in body:  # v4
            state, code, detail = _result(body["result"])
            return state, {**body, "exit_code": code, "detail": detail}, "v4"
        state, code, detail = _result(body)  # v3: {"Done": "Success"} / {"Done": {"Failed": 2}}
        return state, {"start": raw.get("start"), "end": raw.get("end"), "exit_code": code,
                       "detail": detail, "enqueued_at": raw.get("enqueued_at")}, "v3"
    if kind == "Locked":
        return "locked", {}, "v4"
    body = body if isinstance(body, dict) else {}
    schema = "v3" if "prev_status" in raw or "start" in raw else "v4"
    if schema == "v3":
        body = {**body, "start": raw.get("start"), "enqueued_at": raw.get("enqueued_at")}
    return kind.lower(), body, schema


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
            state, body, schema = _status(raw)
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
    """Queued tasks that can never start: a dependency failed (pueue does not mark them
    DependencyFailed while the group is paused). Transitive. A dependency absent from the
    listing is not proof of anything: `status --group` hides other groups' tasks, and pueue
    neither accepts --after on absent ids nor cleans tasks that still have dependants."""
    by_id = {t.id: t for t in tasks}
    blocked: set[int] = set()
    changed = True
    while changed:
        changed = False
        for t in tasks:
            if t.id in blocked or t.state not in ("queued", "stashed"):
                continue
            for d in t.dependencies:
                dep = by_id.get(d)
                if (dep is not None and dep.is_failed) or d in blocked:
                    blocked.add(t.id)
                    changed = True
                    break
    return frozenset(blocked)


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
    argv = [pueue, "add", "--group", group, "--label", label, "--working-directory", workdir]
    if print_task_id:
        argv.append("--print-task-id")
    if stashed:
        argv.append("--stashed")
    if priority is not None:
        argv += ["--priority", str(priority)]
    deps = sorted(set(after))
    if deps:
        argv += ["--after", *map(str, deps)]
    return [*argv, "--", command]


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
