"""pueue status documents built in code (tasks by label, groups) and the snapshots made
from them: shared by the monitor filter, snapshot, monitor and monitor view tests."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jobsafe_ops.facts.snapshot import Options, Snapshot, snapshot_from
from jobsafe_ops.hostside import monitor_filter as mf

NOW = datetime(2026, 11, 22, 18, 0, tzinfo=UTC)


def load(fixtures: Path, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((fixtures / name).read_text())
    return data


def task(tid: int, label: str | None, status: Any, group: str = "p1",
         deps: tuple[int, ...] = (), command: str = "true") -> dict[str, Any]:
    return {"id": tid, "created_at": "2026-11-22T17:00:00Z", "original_command": command,
            "command": command, "path": "/w", "envs": {}, "group": group,
            "dependencies": list(deps), "priority": 0, "label": label, "status": status}


def done(result: Any, start: str = "2026-11-22T17:00:01Z") -> dict[str, Any]:
    return {"Done": {"enqueued_at": start, "start": start, "end": start, "result": result}}


QUEUED = {"Queued": {"enqueued_at": "2026-11-22T17:00:00Z"}}
RUNNING = {"Running": {"enqueued_at": "2026-11-22T17:00:00Z", "start": "2026-11-22T17:50:00Z"}}


def state(*tasks: dict[str, Any], groups: dict[str, str] | None = None) -> dict[str, Any]:
    groups = groups or {"p1": "Running"}
    return {"tasks": {str(t["id"]): t for t in tasks},
            "groups": {g: {"status": s, "parallel_tasks": 2} for g, s in groups.items()}}


def snap_of(data: dict[str, Any], group: str | None = "p1", glob: str | None = None,
            host: str = "h") -> Snapshot:
    summary, _ = mf.summarize(data, group, glob, now=NOW)
    mf.attach_logs(summary, {}, 0)
    return snapshot_from(host, {**summary, "health": {}}, Options(group=group, label_glob=glob),
                         at=NOW)
