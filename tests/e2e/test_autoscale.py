"""The autoscaler loop against a loopback host whose load/memory readings are driven by the
test (injected reader), with real `pueue parallel` calls verified via `pueue status --json`;
and the CLI (one-shot, --loop --ticks, --dry) with thresholds that make the decision
deterministic on any machine."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobsafe_ops import journal
from jobsafe_ops.errors import JobsafeError
from jobsafe_ops.facts.snapshot import Snapshot
from jobsafe_ops.inventory import Host, load_inventory
from jobsafe_ops.ops.autoscale import Autoscaler, Readings, Slot, Tick, run_loop
from jobsafe_ops.remote import connect
from tests.cli import inv
from tests.jsonout import lines_of, result_of
from tests.world import SimHost, World

GiB = 1024**3
GROUPS = {"p1": {"parallel": 1, "min": 1, "max": 3, "job_memory": "1G", "job_cpu": 0.25},
          "p2": {"parallel": 1, "min": 1, "max": 2}}  # p2: no job_memory -> never up


def parallel(host: SimHost, group: str) -> int:
    return int(host.pueue_status()["groups"][group]["parallel_tasks"])


def queue_work(host: SimHost, group: str, n: int, tag: str = "job") -> None:
    for i in range(n):
        host.run(f'pueue add --group {group} --label {group}-{tag}{i} --working-directory "$HOME"'
                 " -- sleep 60", check=True)


class Script:
    """Scripted readings: load as % of 10 cores, memory used % of 100 GiB."""

    def __init__(self, plan: list[tuple[float, float]]) -> None:
        self.plan = plan
        self.seen: list[Snapshot] = []

    def __call__(self, snap: Snapshot) -> Readings:
        self.seen.append(snap)
        load, mem = self.plan[len(self.seen) - 1]
        return Readings(nproc=10, load1=load / 10, mem_total=100 * GiB,
                        mem_available=int((100 - mem) * GiB), swap_in=0, swap_out=0)


@pytest.fixture(scope="module")
def a1(world: World) -> SimHost:
    host = world.add_host("a1", project=False, groups=GROUPS)
    for g in GROUPS:
        host.run(f"pueue group add {g} --parallel 1", check=True)
        queue_work(host, g, 5)
    return host


@pytest.fixture
def env(world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("JOBSAFE_INVENTORY", str(world.inventory))
    monkeypatch.setenv("JOBSAFE_SSH_CONFIG", str(world.ssh_config))
    path = tmp_path / "journal.ndjson"
    monkeypatch.setenv("JOBSAFE_JOURNAL", str(path))
    yield path


def loop(host: Host, script: Script, ticks: int, observe: SimHost) -> list[tuple[Tick, int]]:
    out: list[tuple[Tick, int]] = []

    def on_tick(h: Host, res: Tick | JobsafeError) -> None:
        assert isinstance(res, Tick), res
        out.append((res, parallel(observe, "p1")))  # what pueue itself now says

    run_loop([Slot(host)], lambda h: Autoscaler(h, connect(h), reader=script),
             interval=0.05, ticks=ticks, on_tick=on_tick)
    return out


def test_loop_steps_up_and_down_within_bounds(a1: SimHost, world: World, env: Path) -> None:
    a1.run("pueue parallel 1 --group p1", check=True)
    host = load_inventory(world.inventory)["a1"]
    idle, hot = (10.0, 20.0), (90.0, 30.0)
    script = Script([idle] * 4 + [hot] * 4)
    ticks = loop(host, script, 8, a1)
    assert [p for _, p in ticks] == [2, 3, 3, 3, 2, 1, 1, 1]  # max 3, min 1, one step a tick
    assert parallel(a1, "p2") == 1  # no job_memory estimate: never scaled up
    assert "job_memory" in next(a.reason for a in ticks[0][0].actions if a.group == "p2")
    # every change is journaled, and checked on the next tick
    changes = [(e["group"], e["before"], e["after"])
               for e in journal.entries(host="a1", action="autoscale")]
    assert changes == [("p1", 1, 2), ("p1", 2, 3), ("p1", 3, 2), ("p1", 2, 1)]
    checks = [t.check.ok if t.check else None for t, _ in ticks]
    assert checks == [None, True, True, None, None, False, False, None]
    assert any("load 9.00 >= 0.9 x 10" in p for p in ticks[5][0].check.problems)  # type: ignore[union-attr]
    # one snapshot per tick, and it carried pueue's real parallel values
    assert [s.view("p1").parallel for s in script.seen] == [1, 2, 3, 3, 3, 2, 1, 1]


def test_a_group_above_max_only_steps_down(a1: SimHost, world: World, env: Path) -> None:
    a1.run("pueue parallel 6 --group p1", check=True)  # set by hand, above max 3
    host = load_inventory(world.inventory)["a1"]
    ticks = loop(host, Script([(10.0, 20.0)] * 5), 5, a1)  # idle host: still no jump
    assert [p for _, p in ticks] == [5, 4, 3, 3, 3]


def test_parallel_0_is_never_left_unlimited(a1: SimHost, world: World, env: Path) -> None:
    a1.run("pueue parallel 0 --group p1", check=True)
    host = load_inventory(world.inventory)["a1"]
    ticks = loop(host, Script([(50.0, 50.0)] * 2), 2, a1)
    assert [p for _, p in ticks] == [3, 3]


# ---- the CLI ---------------------------------------------------------------------------------

# up below 100000 % load and 99 % memory: "idle" on any machine (down thresholds unreachable)
IDLE = ["--up-load", "100000", "--up-mem", "99", "--down-load", "100000", "--down-mem", "100"]


def autoscale(world: World, *args: str) -> tuple[int, str, str]:
    proc = inv(world, "autoscale", *args, env={"JOBSAFE_CONNECT_ATTEMPTS": "1"}, timeout=120)
    return proc.returncode, proc.stdout, proc.stderr


def laptop_journal(world: World) -> list[dict[str, Any]]:
    path = world.laptop / ".local" / "state" / "jobsafe-ops" / "journal.ndjson"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_cli_dry_run_reads_and_plans_but_changes_nothing(a1: SimHost, world: World) -> None:
    a1.run("pueue parallel 1 --group p1", check=True)
    queue_work(a1, "p1", 3, tag="dry")  # earlier tests' jobs may all be running by now
    before = len(laptop_journal(world))
    rc, out, err = autoscale(world, "--host", "a1", "--dry", "--json", *IDLE)
    assert rc == 0, err
    doc = result_of(out)
    assert doc["dry"] and doc["applied"] == []
    p1 = next(a for a in doc["actions"] if a["group"] == "p1")
    assert (p1["before"], p1["after"]) == (1, 2)
    assert parallel(a1, "p1") == 1 and len(laptop_journal(world)) == before


def test_cli_applies_one_step_then_loops_with_a_post_bump_check(a1: SimHost,
                                                                world: World) -> None:
    a1.run("pueue parallel 1 --group p1", check=True)
    queue_work(a1, "p1", 3, tag="cli")
    rc, out, err = autoscale(world, "--host", "a1", "--json", *IDLE)
    assert rc == 0, err
    assert result_of(out)["applied"][0]["after"] == 2 and parallel(a1, "p1") == 2
    rc, out, err = autoscale(world, "--host", "a1", "--loop", "--ticks", "2", "--interval",
                             "0.2", "--json", *IDLE)
    assert rc == 0, err
    lines = lines_of(out)  # NDJSON, one line per tick
    assert len(lines) == 2
    assert lines[0]["check"]["changes"][0]["after"] == 2  # the previous run's change
    assert lines[0]["applied"][0]["after"] == 3 and lines[1]["check"]["changes"][0]["after"] == 3
    assert lines[1]["applied"] == [] and parallel(a1, "p1") == 3  # at max: hold
    actions = [e["action"] for e in laptop_journal(world) if e["host"] == "a1"]
    assert actions.count("autoscale") == 2 and actions.count("autoscale-check") == 2
    # the same entries reach the host's team journal (the other operators' history)
    team = a1.home / ".local/state/jobsafe-ops/journal.ndjson"
    on_host = [json.loads(line)["action"] for line in team.read_text().splitlines()]
    assert on_host.count("autoscale") == 2 and on_host.count("autoscale-check") == 2
    rc, out, _ = autoscale(world, "--host", "a1", *IDLE, "--dry")
    assert rc == 0 and "p1 3 [hold] at max 3" in out
