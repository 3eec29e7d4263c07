"""Autoscaler: decide() examples, hypothesis properties for the bounds, the post-bump check,
and the loop driver against a scripted transport (one read per tick, journaled changes)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobsafe_ops import journal
from jobsafe_ops.errors import ConfigError
from jobsafe_ops.facts.snapshot import Options, snapshot_from
from jobsafe_ops.inventory import GroupSpec, Host
from jobsafe_ops.ops.autoscale import (
    DEFAULT_THRESHOLDS,
    Action,
    Autoscaler,
    GroupLoad,
    Readings,
    ScaleSnapshot,
    Thresholds,
    decide,
    pending_changes,
    post_check,
)
from jobsafe_ops.testing.fake_remote import FakeRemote, Sent

GiB = 1024**3


def readings(load_pct: float, mem_pct: float, nproc: int = 10, total: int = 100 * GiB,
             swap: int = 0) -> Readings:
    return Readings(nproc=nproc, load1=nproc * load_pct / 100, mem_total=total,
                    mem_available=int(total * (1 - mem_pct / 100)), swap_in=swap, swap_out=0)


def spec(name: str = "p1", parallel: int = 2, lo: int = 1, hi: int = 4,
         job_memory: int | None = GiB) -> GroupSpec:
    return GroupSpec(name, parallel, lo, hi, job_memory)


def one(r: Readings, parallel: int, *, ready: int = 5, s: GroupSpec | None = None,
        status: str = "Running", thresholds: Thresholds = DEFAULT_THRESHOLDS) -> Action:
    s = s or spec()
    actions = decide(ScaleSnapshot("h", r, {s.name: GroupLoad(s.name, parallel, status, ready)}),
                     {s.name: s}, thresholds)
    assert len(actions) == 1
    return actions[0]


# ---- examples --------------------------------------------------------------------------------

def test_idle_host_with_queued_work_steps_up_by_one() -> None:
    a = one(readings(10, 20), 2)
    assert (a.before, a.after) == (2, 3) and "ready" in a.reason


def test_pressure_steps_down_by_one() -> None:
    assert one(readings(85, 20), 3).after == 2  # load > 80 %
    assert one(readings(10, 85), 3).after == 2  # memory > 80 %


def test_between_thresholds_holds() -> None:
    assert not one(readings(50, 20), 2).changed  # load not < 40 %
    assert not one(readings(10, 70), 2).changed  # memory not < 60 %
    exact = Readings(nproc=10, load1=8.0, mem_total=100, mem_available=20)
    assert not one(exact, 2).changed  # strict comparisons: 80 % is not > 80 %


def test_no_scale_up_without_queued_work_or_estimate_or_headroom() -> None:
    assert "no queued work" in one(readings(10, 20), 2, ready=0).reason
    assert "job_memory" in one(readings(10, 20), 2, s=spec(job_memory=None)).reason
    tight = readings(10, 20, total=10 * GiB)  # 8 GiB free < 2 x 5 GiB
    a = one(tight, 2, s=spec(job_memory=5 * GiB))
    assert not a.changed and "free memory" in a.reason
    assert not one(readings(10, 20), 2, status="Paused").changed
    assert not one(readings(10, 20, swap=12), 2).changed  # swapping: no scale-up


def test_bounds() -> None:
    assert "at max" in one(readings(10, 20), 4).reason
    assert not one(readings(95, 95), 1).changed  # at min: hold even under pressure
    above = one(readings(10, 20), 16, s=spec(hi=8))  # BigBlack p1 = 16 vs max 8
    assert (above.before, above.after) == (16, 15)  # one step, never clamped by a jump
    assert one(readings(10, 20), 0).after == 4  # 0 = unlimited -> max
    below = one(readings(50, 50), 1, s=spec(lo=3, hi=6, parallel=3))
    assert below.after == 2


def test_memory_headroom_is_shared_between_groups_in_one_tick() -> None:
    specs = {"p1": spec("p1", job_memory=3 * GiB), "p2": spec("p2", job_memory=3 * GiB)}
    r = Readings(nproc=10, load1=1, mem_total=16 * GiB, mem_available=8 * GiB)  # 50 % used
    snap = ScaleSnapshot("h", r, {n: GroupLoad(n, 1, "Running", 3) for n in specs})
    got = {a.group: a.after for a in decide(snap, specs)}
    # p1: 8 GiB free >= 2 x 3 GiB -> +1, reserving 3 GiB; p2: 5 GiB left < 6 GiB -> hold
    assert got == {"p1": 2, "p2": 1}


def test_thresholds_are_configurable_and_validated() -> None:
    t = Thresholds(up_load=0.6, up_mem=0.7, down_load=0.9, down_mem=0.9)
    assert one(readings(50, 65), 2, thresholds=t).after == 3
    with pytest.raises(ConfigError):
        Thresholds(up_load=0.9, down_load=0.5)
    with pytest.raises(ConfigError):
        Thresholds(headroom=0.5)


def test_groups_not_declared_or_not_on_the_daemon_are_left_alone() -> None:
    snap = ScaleSnapshot("h", readings(10, 10), {"default": GroupLoad("default", 1, ready=9)})
    assert decide(snap, {"p1": spec()}) == []


def test_unreadable_host_holds() -> None:
    r = Readings(nproc=None, load1=None, mem_total=None, mem_available=None)
    assert not one(r, 2).changed


# ---- properties ------------------------------------------------------------------------------

@st.composite
def cases(draw: st.DrawFn) -> tuple[ScaleSnapshot, dict[str, GroupSpec], Thresholds]:
    names = draw(st.lists(st.sampled_from(["p1", "p2", "p3", "p4"]), min_size=1, max_size=4,
                          unique=True))
    specs: dict[str, GroupSpec] = {}
    groups: dict[str, GroupLoad] = {}
    for n in names:
        lo = draw(st.integers(1, 8))
        hi = draw(st.integers(lo, 16))
        jm = draw(st.one_of(st.none(), st.integers(1, 64 * GiB)))
        specs[n] = GroupSpec(n, lo, lo, hi, jm)
        groups[n] = GroupLoad(n, draw(st.integers(0, 24)), draw(st.sampled_from(
            ["Running", "Running", "Paused"])), draw(st.integers(0, 5)))
    total = draw(st.one_of(st.none(), st.integers(1, 512 * GiB)))
    avail = None if total is None else draw(st.integers(0, total))
    r = Readings(nproc=draw(st.one_of(st.none(), st.integers(1, 128))),
                 load1=draw(st.one_of(st.none(), st.floats(0, 300))),
                 mem_total=total, mem_available=avail,
                 swap_in=draw(st.one_of(st.none(), st.integers(0, 3))), swap_out=0)
    up_load = draw(st.floats(0.05, 0.9))
    up_mem = draw(st.floats(0.05, 0.9))
    t = Thresholds(up_load, up_mem, draw(st.floats(up_load, 1.0)), draw(st.floats(up_mem, 1.0)),
                   draw(st.floats(1, 4)))
    return ScaleSnapshot("h", r, groups), specs, t


@settings(max_examples=300, deadline=None)
@given(cases())
def test_property_bounds(case: tuple[ScaleSnapshot, dict[str, GroupSpec], Thresholds]) -> None:
    snap, specs, t = case
    actions = decide(snap, specs, t)
    assert len({a.group for a in actions}) == len(actions)  # at most one action per group
    for a in actions:
        s, before = specs[a.group], snap.groups[a.group].parallel
        assert a.before == before
        assert a.after >= 1  # never 0 (unlimited)
        if before == 0:
            assert a.after == s.max
            continue
        assert abs(a.after - before) <= 1  # one step per tick
        if s.min <= before <= s.max:
            assert s.min <= a.after <= s.max
        elif before > s.max:
            assert a.after <= before  # only ever stepped down
        else:  # below min (set by hand): only ever stepped up towards it
            assert before <= a.after <= s.min


@settings(max_examples=300, deadline=None)
@given(cases())
def test_property_no_scale_up_without_work_or_headroom(
        case: tuple[ScaleSnapshot, dict[str, GroupSpec], Thresholds]) -> None:
    snap, specs, t = case
    reserved = 0
    for a in sorted(decide(snap, specs, t), key=lambda a: a.group):
        s, g = specs[a.group], snap.groups[a.group]
        if a.after > a.before and g.parallel >= s.min:
            r = snap.readings
            assert g.ready > 0 and g.status == "Running" and s.job_memory is not None
            assert r.load_ratio is not None and r.load_ratio < t.up_load
            assert r.mem_used is not None and r.mem_used < t.up_mem
            assert r.mem_available is not None
            assert r.mem_available - reserved >= t.headroom * s.job_memory
            assert not r.swapping
            reserved += s.job_memory
        if a.after < a.before and s.min <= g.parallel <= s.max:
            r = snap.readings
            assert r.load_ratio is not None and r.mem_used is not None
            assert r.load_ratio > t.down_load or r.mem_used > t.down_mem


# ---- post-bump check -------------------------------------------------------------------------

def snapshot(groups: Mapping[str, int], queued: int = 3) -> Any:
    payload = {"groups": {n: {"status": "Running", "parallel": p, "counts": {"queued": queued},
                              "total": queued, "superseded": 0, "ready": queued, "running": [],
                              "failed": [], "blocked": [], "truncated": {}}
                          for n, p in groups.items()},
               "health": {}}
    return snapshot_from("h", payload, Options())


def test_post_check() -> None:
    changes = [{"group": "p1", "before": 2, "after": 3}]
    good = post_check(changes, snapshot({"p1": 3}), readings(50, 50))
    assert good.ok and good.limit == 9.0
    hot = post_check(changes, snapshot({"p1": 3}), readings(95, 50))
    assert not hot.ok and "load 9.50 >= 0.9 x 10" in hot.problems[0]
    swapping = post_check(changes, snapshot({"p1": 3}), readings(50, 50, swap=40))
    assert not swapping.ok and "swapping" in swapping.problems[0]
    reverted = post_check(changes, snapshot({"p1": 2}), readings(50, 50))
    assert not reverted.ok and "expected 3" in reverted.problems[0]


def test_pending_changes_come_from_the_journal(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBSAFE_JOURNAL", str(tmp_path / "j.ndjson"))
    journal.append("h", "autoscale", group="p1", before=1, after=2)
    journal.append("other", "autoscale", group="p1", before=1, after=2)
    journal.append("h", "autoscale", group="p1", before=2, after=3)
    assert [(c["group"], c["after"]) for c in pending_changes("h")] == [("p1", 3)]
    journal.append("h", "autoscale-check", result="ok")
    assert pending_changes("h") == []
    journal.append("h", "autoscale", group="p2", before=1, after=2)
    later = datetime.now(UTC) + timedelta(hours=2)
    assert pending_changes("h", now=later) == []  # stale: today's load says nothing


# ---- the loop driver over a scripted transport -----------------------------------------------

class ScriptedHost(FakeRemote):
    """Answers the monitor filter (the poll, a script) with a summary built from
    `parallel`, and applies `pueue parallel N --group G` (by argv) to it."""

    def __init__(self, host: Host, parallel: dict[str, int], queued: int = 3) -> None:
        super().__init__(host, default=self._summary)
        self.parallel = dict(parallel)
        self.queued = queued
        self.on((host.pueue, "parallel"), self._set, mutates=True)

    def _set(self, sent: Sent) -> str:
        assert sent.argv is not None
        argv = list(sent.argv)
        self.parallel[argv[argv.index("--group") + 1]] = int(argv[argv.index("parallel") + 1])
        return "Parallel tasks setting adjusted\n"

    def _summary(self, sent: Sent) -> str:
        payload = {
            "groups": {n: {"status": "Running", "parallel": p, "counts": {"queued": self.queued},
                           "total": self.queued, "superseded": 0, "ready": self.queued,
                           "running": [], "failed": [], "blocked": [], "truncated": {}}
                       for n, p in self.parallel.items()},
            "health": {"nproc": 10, "load": [0, 0, 0], "mem_total": 100 * GiB,
                       "mem_available": 90 * GiB, "swap_in": 0, "swap_out": 0}}
        return json.dumps(payload) + "\n"


def test_loop_steps_within_bounds_journals_and_checks(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBSAFE_JOURNAL", str(tmp_path / "j.ndjson"))
    host = Host(name="h", ssh="x", project_dir="~/p", package="x",
                groups={"p1": spec("p1", 1, 1, 3)})
    remote = ScriptedHost(host, {"p1": 1, "default": 1})
    script = iter([readings(10, 10)] * 4 + [readings(95, 10)] * 4)
    scaler = Autoscaler(host, remote, reader=lambda snap: next(script))
    seen = []
    for _ in range(8):
        before = remote.round_trips
        tick = scaler.tick()
        changed = [a for a in tick.actions if a.changed]
        assert remote.round_trips - before == 1 + len(changed)  # ONE read per tick
        seen.append((remote.parallel["p1"], tick.check.ok if tick.check else None))
    assert [p for p, _ in seen] == [2, 3, 3, 3, 2, 1, 1, 1]
    assert remote.parallel["default"] == 1  # undeclared group never touched
    # each change is checked on the next tick: ok at 10 % load, failed once load is 95 %
    assert [ok for _, ok in seen] == [None, True, True, None, None, False, False, None]
    entries = list(journal.entries(host="h", action="autoscale"))
    assert [(e["before"], e["after"]) for e in entries] == [(1, 2), (2, 3), (3, 2), (2, 1)]
    assert all(e["result"] == "ok" and e["reason"] for e in entries)


def test_dry_run_reads_and_decides_but_never_applies(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBSAFE_JOURNAL", str(tmp_path / "j.ndjson"))
    host = Host(name="h", ssh="x", project_dir="~/p", package="x",
                groups={"p1": spec("p1", 1, 1, 3)})
    remote = ScriptedHost(host, {"p1": 1})
    tick = Autoscaler(host, remote, dry=True).tick()
    assert [a.after for a in tick.actions] == [2]
    assert remote.parallel == {"p1": 1} and remote.round_trips == 1
    assert not list(journal.entries())
    assert tick.to_dict()["applied"] == []


def test_tick_line_says_what_changed_and_why() -> None:
    from jobsafe_ops.ops.autoscale import PostCheck, Tick, tick_line

    tick = Tick("bigblack", datetime(2026, 11, 22, 12, 0, tzinfo=UTC), readings(10, 20),
                (Action("p1", 2, 3, "load 10% mem 20% below 40%/60%"),
                 Action("p2", 1, 1, "no queued work ready to start")), dry=False,
                check=PostCheck(False, ({"group": "p1", "after": 2},), 9.5, 9.0, 0, 0,
                                ("load 9.50 >= 0.9 x 10 = 9.0",)))
    text = tick_line(tick)
    assert "12:00:00 bigblack: load 1.00/10 (10%) mem 20%" in text
    assert "p1 2 -> 3 [set] load 10%" in text and "p2 1 [hold] no queued work" in text
    assert "post-bump check (p1=2): FAILED: load 9.50 >= 0.9 x 10 = 9.0" in text
    assert "[would set]" in tick_line(Tick("h", tick.at, tick.readings, tick.actions, dry=True))


# ---- after-scale [[checks]]: in the same poll, a failing one holds scale-ups -----------------

class CheckedHost(ScriptedHost):
    """ScriptedHost whose poll also answers the after-scale checks it carries (framed as
    checks.script frames them): `errors` prints self.errors."""

    def __init__(self, host: Host, parallel: dict[str, int]) -> None:
        super().__init__(host, parallel)
        self.errors = 0
        self.checked = 0  # polls that carried the checks

    def _summary(self, sent: Sent) -> str:
        import base64
        import re

        out = super()._summary(sent)
        m = re.search(r'echo "@@check ([0-9a-f]+) 0 ', sent.command)
        if m is None:
            return out
        self.checked += 1
        body = base64.b64encode(f"{self.errors}\n".encode()).decode()
        return out + f"@@check {m.group(1)} 0 0\n{body}\n\n"


def test_a_failing_after_scale_check_holds_scale_ups_until_it_passes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from jobsafe_ops.checks import Check, parse_expect

    monkeypatch.setenv("JOBSAFE_JOURNAL", str(tmp_path / "j.ndjson"))
    errors = Check("errors", "count-errors", parse_expect("0"), ("after-scale",))
    host = Host(name="h", ssh="x", project_dir="~/p", package="x",
                groups={"p1": spec("p1", 1, 1, 4)}, checks=(errors,))
    remote = CheckedHost(host, {"p1": 1})
    scaler = Autoscaler(host, remote, reader=lambda snap: readings(10, 10))
    first = scaler.tick()  # no change before it: the checks are not run
    assert remote.checked == 0 and first.check is None and remote.parallel["p1"] == 2
    remote.errors = 3
    before = remote.round_trips
    held = scaler.tick()  # checks the change: in the same poll, one round trip
    assert remote.checked == 1 and remote.round_trips - before == 1
    assert held.check is not None and not held.check.ok and held.check.blocking == ["errors"]
    assert "check errors alarm: output '3' is not == 0" in held.check.problems
    (a,) = held.actions
    assert not a.changed and "after-scale check errors failed: no scale-up" in a.reason
    again = scaler.tick()  # no change to check, but the last check failed: run them again
    assert remote.checked == 2 and not again.actions[0].changed and remote.parallel["p1"] == 2
    remote.errors = 0
    passed = scaler.tick()
    assert passed.check is not None and passed.check.ok and remote.parallel["p1"] == 3
    logged = [e["result"] for e in journal.entries(host="h", action="autoscale-check")]
    assert logged == ["failed", "failed", "ok"]
    row = next(journal.entries(host="h", action="autoscale-check"))["checks"][0]
    assert (row["name"], row["verdict"], row["observed"]) == ("errors", "alarm", "3")


def test_a_warn_after_scale_check_is_reported_only() -> None:
    from jobsafe_ops.facts.checks import CheckResult

    snap = replace(snapshot({"p1": 3}), checks=(
        CheckResult("slow", False, "warn", "9", "< 5", "output '9' is not < 5", 0),))
    check = post_check([{"group": "p1", "before": 2, "after": 3}], snap, readings(50, 50))
    assert check.ok and check.blocking == [] and "check slow warn" in check.problems[0]
