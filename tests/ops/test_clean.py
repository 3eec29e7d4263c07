"""clean's verify-before-mutate check (pure): refused while a chain hangs on the group."""

from __future__ import annotations

from typing import Any

import pytest

from jobsafe_ops.errors import ConfigError, RefusedError
from jobsafe_ops.facts.snapshot import Options, Snapshot, snapshot_from
from jobsafe_ops.hostside import monitor_filter as mf
from jobsafe_ops.ops.clean import check_clean


def task(tid: int, label: str, status: Any, group: str, deps: tuple[int, ...] = ()) -> Any:
    return {"id": tid, "group": group, "label": label, "command": "true", "path": "/w",
            "dependencies": list(deps), "status": status}


DONE = {"Done": {"result": "Success", "start": "2026-11-22T17:00:00Z"}}
QUEUED = {"Queued": {"enqueued_at": "2026-11-22T17:00:00Z"}}


def snap(*tasks: Any) -> Snapshot:
    data = {"tasks": {str(t["id"]): t for t in tasks},
            "groups": {"p1": {"status": "Running", "parallel_tasks": 1},
                       "p2": {"status": "Paused", "parallel_tasks": 1}}}
    summary, _ = mf.summarize(data, "p1", chains=True, limit=0)
    mf.attach_logs(summary, {}, 0)
    return snapshot_from("h", {**summary, "health": {}}, Options(group="p1", all_tasks=True))


def test_clean_allowed_when_nothing_waits_on_the_group() -> None:
    check_clean(snap(task(1, "a", DONE, "p1"), task(2, "b", QUEUED, "p2")), "p1")


def test_clean_refused_while_a_dependant_waits_in_any_group() -> None:
    s = snap(task(1, "sweep:a", DONE, "p1"), task(2, "optimize", QUEUED, "p2", deps=(1,)))
    with pytest.raises(RefusedError, match=r"optimize \(p2, queued\) after sweep:a"):
        check_clean(s, "p1")


def test_clean_refused_for_a_chain_inside_the_group() -> None:
    s = snap(task(1, "sweep:a", DONE, "p1"), task(2, "optimize", QUEUED, "p1", deps=(1,)))
    with pytest.raises(RefusedError):
        check_clean(s, "p1")


def test_clean_of_a_missing_group_is_bad_input() -> None:
    data = {"tasks": {}, "groups": {}}
    summary, _ = mf.summarize(data, "p9", chains=True)
    s = snapshot_from("h", {**summary, "health": {}}, Options(group="p9"))
    with pytest.raises(ConfigError):
        check_clean(s, "p9")
