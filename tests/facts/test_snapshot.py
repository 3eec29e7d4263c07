"""Snapshots (snapshot.py): groups by label, group_all_done, a snapshot's exit code, the
real poll run locally against a scripted pueue (filter and plain fallback), host health."""

from __future__ import annotations

from typing import Any

import pytest

from jobsafe_ops.errors import RemoteError
from jobsafe_ops.facts.snapshot import GroupView, Health, Options, group_all_done, read_snapshot
from jobsafe_ops.inventory import Host
from jobsafe_ops.remote import LocalRemote
from tests.status_data import QUEUED, RUNNING, done, snap_of, state, task

# ---- groups by label -------------------------------------------------------------------------

def test_requeued_label_is_judged_by_its_newest_attempt() -> None:
    data = state(task(3, "BTC@250", done({"Failed": 1})), task(7, "BTC@250", done("Success")),
                 task(4, "ETH@250", done("Success")))
    snap = snap_of(data)
    g = snap.view("p1")
    assert g.counts == {"success": 2} and g.total == 2 and g.superseded == 1
    assert g.all_done and snap.exit_code == 0
    # and the other way round: the re-run failed after a success
    data = state(task(3, "BTC@250", done("Success")), task(7, "BTC@250", done({"Failed": 2})))
    g = snap_of(data).view("p1")
    assert [(t.label, t.exit_code, t.attempts) for t in g.failed] == [("BTC@250", 2, 2)]


def test_requeued_label_still_running_is_not_done() -> None:
    data = state(task(3, "BTC@250", done({"Failed": 1})), task(8, "BTC@250", QUEUED))
    snap = snap_of(data)
    assert not snap.view("p1").all_done and snap.exit_code == 3


def test_blocked_dependents_in_a_paused_group() -> None:
    data = state(task(1, "sweep:a", done({"Failed": 1})), task(2, "sweep:b", done("Success")),
                 task(3, "optimize", QUEUED, deps=(1, 2)), task(4, "validate", QUEUED, deps=(3,)),
                 groups={"p1": "Paused"})
    g = snap_of(data).view("p1")
    assert {t.label: t.after for t in g.blocked} == {"optimize": ("sweep:a",),
                                                      "validate": ("optimize",)}
    assert g.settled and not g.all_done and g.failures == 3 and g.outcome == "failed"


# ---- group_all_done and exit codes -----------------------------------------------------------

@pytest.mark.parametrize("counts,expected", [
    ({"success": 3}, True),
    ({"success": 1, "failed": 1}, True),
    ({}, False),
    ({"success": 1, "queued": 1}, False),
    ({"success": 1, "running": 1}, False),
    ({"success": 1, "paused": 1}, False),
    ({"success": 1, "stashed": 1}, False),  # a delayed task will still run
    ({"success": 1, "blocked": 1}, False),
])
def test_group_all_done(counts: dict[str, int], expected: bool) -> None:
    g = GroupView("p1", "Running", 2, counts, total=sum(counts.values()))
    assert group_all_done(g) is expected


def test_exit_codes_single_host() -> None:
    ok = snap_of(state(task(1, "a", done("Success"))))
    failed = snap_of(state(task(1, "a", done({"Failed": 1})), task(2, "b", RUNNING)))
    running = snap_of(state(task(1, "a", done("Success")), task(2, "b", RUNNING)))
    empty = snap_of(state())  # nothing selected: 6
    assert (ok.exit_code, failed.exit_code, running.exit_code, empty.exit_code) == (0, 1, 3, 6)


# ---- the real command, run locally against a scripted pueue (conftest.py) ------------------

def test_filter_command_end_to_end_locally(scripted: dict[str, Any]) -> None:
    remote = LocalRemote(scripted["host"])
    snap = read_snapshot(remote, Options(group="p1", swap_window=0.05))
    assert remote.round_trips == 1 and snap.via == "filter"
    g = snap.view("p1")
    assert g.total == 10 and g.failures == 3 and snap.exit_code == 1
    logs = {t.label: t.log for t in g.failed}
    assert logs["ETHUSDT@250"] == ("line1", "line2", "boom 1")
    calls = scripted["calls"].read_text().splitlines()
    # the daemon answered its cheap `group` call, so the state file was read, not `status`
    assert calls == ["group --json", "log --json --lines 5 1 2 9"]
    assert snap.source == "state_file"
    h = snap.health
    assert h.nproc and h.nproc >= 1 and h.state_size == scripted["state"].stat().st_size
    assert h.swap_window is not None and h.swap_window >= 0.05
    # what came back is the summary, far smaller than the state
    assert snap.received < scripted["state"].stat().st_size


def test_log_tails_are_read_from_pueues_task_logs(scripted: dict[str, Any]) -> None:
    logs = scripted["state"].parent / "task_logs"
    logs.mkdir()
    for tid in (1, 2, 9):
        (logs / f"{tid}.log").write_text("".join(f"line {n}\n" for n in range(100)) + f"t{tid}\n")
    snap = read_snapshot(LocalRemote(scripted["host"]), Options(group="p1", log_lines=2,
                                                                 swap_window=0))
    assert {t.label: t.log for t in snap.view("p1").failed}["ETHUSDT@250"] == ("line 99", "t1")
    assert scripted["calls"].read_text().splitlines() == ["group --json"]  # no `pueue log`


def test_fallback_without_python3_gives_the_same_summary(scripted: dict[str, Any]) -> None:
    remote = LocalRemote(scripted["host"])
    filtered = read_snapshot(remote, Options(group="p1", swap_window=0))
    plain = read_snapshot(remote, Options(group="p1", python="no-such-python3"))
    assert plain.via == "plain"
    assert [g.to_dict() for g in plain.groups] == [
        {**g.to_dict(), "running": [{**t, "runtime": pytest.approx(t["runtime"], abs=5)}
                                    for t in g.to_dict()["running"]]}
        for g in filtered.groups]
    assert plain.health.state_size == filtered.health.state_size
    assert plain.health.load is not None and plain.health.nproc == filtered.health.nproc


def test_daemon_down_is_a_remote_error(scripted: dict[str, Any],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_PUEUE_DOWN", "1")
    with pytest.raises(RemoteError, match="pueue daemon not running .*pueued -d"):
        read_snapshot(LocalRemote(scripted["host"]), Options(group="p1", swap_window=0))
    with pytest.raises(RemoteError, match="pueue daemon not running .*pueued -d"):
        read_snapshot(LocalRemote(scripted["host"]),
                      Options(group="p1", python="no-such-python3"))


# ---- health ----------------------------------------------------------------------------------

def test_swap_activity_is_measured_over_the_interval() -> None:
    first = Health(swap_counters=(100, 50), swap_in=0, swap_out=0, swap_window=0.25)
    second = Health(swap_counters=(130, 50), swap_in=0, swap_out=0, swap_window=0.25)
    assert second.since(first, 60).swap_in == 30 and second.since(first, 60).swap_window == 60
    assert second.since(None, 60) == second
    rebooted = Health(swap_counters=(1, 0), swap_in=0, swap_out=0)
    assert rebooted.since(first, 60).swap_in == 0


def test_health_verdicts_reuse_the_probe_rules() -> None:
    host = Host(name="h", ssh="local", project_dir="~/p", package="x")
    h = Health(nproc=4, load=(3.7, 1, 1), mem_total=100, mem_available=50, swap_in=0,
               swap_out=3, state_size=12 * 1024**2, state_file="/s/state.json")
    by = {v.name: v for v in h.verdicts(host)}
    assert set(by) == {"load", "swap", "memory", "state file"}
    assert by["load"].level == "alarm" and "0.9 x 4" in by["load"].detail
    assert by["swap"].level == "alarm" and by["memory"].level == "ok"
    assert by["state file"].level == "warn"
    assert {v.name: v.level for v in Health(state_size=60 * 1024**2).verdicts(host)}[
        "state file"] == "alarm"
