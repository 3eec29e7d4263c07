"""`inv monitor` against loopback hosts with a pueue daemon: done / failed / running /
blocked detection, the cron exit codes, --until-done with a timeout, monitoring by label
across a re-queue (new task ids), two hosts in one view, unreachable hosts."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from jobsafe_ops.facts.snapshot import Options, read_snapshot
from jobsafe_ops.inventory import load_inventory
from jobsafe_ops.remote import session
from tests.cli import inv
from tests.e2e.pueue_setup import add, settle
from tests.jsonout import result_of
from tests.world import SimHost, World

ACTIVE = ("Queued", "Running", "Paused", "Locked", "Stashed")


# ---- helpers ----------------------------------------------------------------------------------

def make_group(host: SimHost, group: str, parallel: int = 2) -> None:
    host.run(f"pueue group add {group} --parallel {parallel}", check=True)


def wait_running(host: SimHost, group: str, n: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tasks = host.pueue_status()["tasks"].values()
        if sum(next(iter(t["status"])) == "Running" for t in tasks if t["group"] == group) >= n:
            return
        time.sleep(0.1)
    raise AssertionError(f"{n} tasks of {group} not running on {host.name}")


def monitor(world: World, *args: str, timeout: float = 90) -> tuple[int, Any, str]:
    """Run `inv monitor` as cron would (no TTY); parse --json output when asked."""
    proc = inv(world, "monitor", *args, timeout=timeout,
               env={"JOBSAFE_CONNECT_ATTEMPTS": "1", "JOBSAFE_CONNECT_TIMEOUT": "3"})
    out: Any = proc.stdout
    if "--json" in args and proc.stdout.strip():
        out = result_of(proc.stdout)
    return proc.returncode, out, proc.stderr


def group_of(doc: dict[str, Any]) -> dict[str, Any]:
    doc = doc["result"] if "result" in doc else doc  # one host's row of a multi-host run
    assert len(doc["groups"]) == 1
    g: dict[str, Any] = doc["groups"][0]
    return g


@pytest.fixture(scope="module")
def hosts(world: World) -> tuple[SimHost, SimHost]:
    return world.add_host("m1", project=False), world.add_host("m2", project=False)


@pytest.fixture
def m1(hosts: tuple[SimHost, SimHost]) -> SimHost:
    return hosts[0]


# ---- detection and exit codes ----------------------------------------------------------------

def test_all_done_and_succeeded_exits_0(world: World, m1: SimHost) -> None:
    make_group(m1, "gdone")
    add(m1, "gdone", "BTC@250", "true")
    add(m1, "gdone", "ETH@250", "echo ok")
    settle(m1, "gdone")
    rc, doc, err = monitor(world, "--host", "m1", "--group", "gdone", "--once", "--json")
    assert rc == 0, err
    g = group_of(doc)
    assert g["all_done"] and g["counts"] == {"success": 2} and g["outcome"] == "done"
    assert doc["via"] == "filter" and doc["health"]["nproc"] >= 1
    assert doc["health"]["state_size"] > 0
    rc, doc, _ = monitor(world, "--host", "m1", "--group", "gdone", "--label-glob", "BTC*",
                         "--once", "--json")
    assert rc == 0 and group_of(doc)["total"] == 1


def test_failed_label_exits_1_with_exit_code_and_log_tail(world: World, m1: SimHost) -> None:
    make_group(m1, "gfail")
    add(m1, "gfail", "ok@1", "true")
    add(m1, "gfail", "bad@1", "echo loading; echo 'ValueError: bad threshold' >&2; exit 7")
    settle(m1, "gfail")
    rc, doc, err = monitor(world, "--host", "m1", "--group", "gfail", "--once", "--json",
                           "--log-lines", "2")
    assert rc == 1, err
    g = group_of(doc)
    assert g["counts"] == {"success": 1, "failed": 1} and g["outcome"] == "failed"
    [failed] = g["failed"]
    assert failed["label"] == "bad@1" and failed["exit_code"] == 7
    assert failed["log"][-1] == "ValueError: bad threshold"
    # the rich view (no TTY: printed once) names the label, its exit code and the log line
    rc, text, _ = monitor(world, "--host", "m1", "--group", "gfail", "--once")
    assert rc == 1 and "bad@1" in text and "ValueError: bad threshold" in text


def test_running_work_exits_3_with_runtime(world: World, m1: SimHost) -> None:
    make_group(m1, "grun", parallel=1)
    add(m1, "grun", "long@1", "sleep 60")
    add(m1, "grun", "next@1", "true")
    wait_running(m1, "grun", 1)
    rc, doc, err = monitor(world, "--host", "m1", "--group", "grun", "--once", "--json")
    assert rc == 3, err
    g = group_of(doc)
    assert [r["label"] for r in g["running"]] == ["long@1"]
    assert g["running"][0]["runtime"] >= 0 and g["running"][0]["start"]
    assert g["counts"] == {"running": 1, "queued": 1} and g["ready"] == 1 and not g["all_done"]


def test_blocked_dependents_are_flagged_and_end_the_wait(world: World, m1: SimHost) -> None:
    make_group(m1, "gblk")
    failed = add(m1, "gblk", "sweep:a", "exit 1")
    settle(m1, "gblk")
    m1.run("pueue pause --group gblk", check=True)
    # pueue does not mark dependants DependencyFailed while the group is paused
    add(m1, "gblk", "sweep:optimize", "true", after=(failed,))
    start = time.monotonic()
    rc, doc, err = monitor(world, "--host", "m1", "--group", "gblk", "--until-done",
                           "--timeout", "20", "--interval", "0.5", "--json")
    assert rc == 1, err
    assert time.monotonic() - start < 15  # blocked forever = settled: no waiting for timeout
    g = group_of(doc)
    assert g["blocked"] == [{"label": "sweep:optimize", "state": "blocked",
                             "after": ["sweep:a"]}]
    assert not g["all_done"] and g["outcome"] == "failed"


# ---- --until-done ----------------------------------------------------------------------------

def test_until_done_waits_for_the_group(world: World, m1: SimHost) -> None:
    make_group(m1, "guntil")
    add(m1, "guntil", "a", "sleep 1.5")
    add(m1, "guntil", "b", "sleep 1.5")
    add(m1, "guntil", "c", "true")
    start = time.monotonic()
    rc, doc, err = monitor(world, "--host", "m1", "--group", "guntil", "--until-done",
                           "--timeout", "40", "--interval", "0.5", "--json")
    assert rc == 0, err
    assert time.monotonic() - start >= 1.5
    assert group_of(doc)["counts"] == {"success": 3}


def test_until_done_timeout_exits_3(world: World, m1: SimHost) -> None:
    make_group(m1, "gslow")
    add(m1, "gslow", "slow", "sleep 60")
    wait_running(m1, "gslow", 1)
    start = time.monotonic()
    rc, doc, err = monitor(world, "--host", "m1", "--group", "gslow", "--until-done",
                           "--timeout", "2", "--interval", "0.5", "--json")
    elapsed = time.monotonic() - start
    assert rc == 3, err
    assert 2 <= elapsed < 20
    assert [r["label"] for r in group_of(doc)["running"]] == ["slow"]


def test_empty_selection_exits_6_and_until_done_stops(world: World, m1: SimHost) -> None:
    """A cleaned group and a --label-glob that matches nothing: "nothing selected" (exit 6),
    not "exit 3: still running", and --until-done without --timeout ends (from cron it
    used to poll forever)."""
    make_group(m1, "gclean")
    add(m1, "gclean", "BTC@250", "true")
    settle(m1, "gclean")
    m1.run("pueue clean --group gclean", check=True)  # the group is now empty
    start = time.monotonic()
    rc, doc, err = monitor(world, "--host", "m1", "--group", "gclean", "--until-done",
                           "--interval", "0.5", "--json", timeout=60)
    assert rc == 6, err
    assert time.monotonic() - start < 30
    assert doc["exit_code"] == 6 and doc["verdict"] == "nothing_selected"
    assert group_of(doc)["total"] == 0
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "m1: nothing selected: group 'gclean' has no tasks" in lines[0]

    add(m1, "gclean", "BTC@250:2020", "sleep 60")
    wait_running(m1, "gclean", 1)
    rc, text, err = monitor(world, "--host", "m1", "--group", "gclean", "--label-glob",
                            "BCT*", "--until-done", "--interval", "0.5", timeout=60)
    assert rc == 6, err
    assert "exit 6: nothing selected" in " ".join(text.split())
    assert "matching --label-glob 'BCT*'" in err
    rc, _, err = monitor(world, "--host", "m1", "--group", "gclean", "--label-glob", "BTC*",
                         "--once")
    assert rc == 3, err  # the right glob: still running
    m1.run("pueue kill --group gclean", check=True)


# ---- identity by label -----------------------------------------------------------------------

def test_monitoring_by_label_survives_a_requeue_with_new_ids(world: World, m1: SimHost) -> None:
    make_group(m1, "greq")
    # fails the first time, succeeds when run again (a transient failure)
    first = add(m1, "greq", "BTC@250:2019", "test -f flaky.flag || { touch flaky.flag; exit 9; }")
    add(m1, "greq", "ETH@250:2019", "true")
    settle(m1, "greq")
    rc, doc, _ = monitor(world, "--host", "m1", "--group", "greq", "--once", "--json")
    assert rc == 1 and group_of(doc)["failed"][0]["label"] == "BTC@250:2019"
    # pueue's own re-queue: `restart` copies the task under a NEW id, same label
    m1.run(f"pueue restart {first}", check=True)
    settle(m1, "greq")
    ids = sorted(int(k) for k, t in m1.pueue_status()["tasks"].items() if t["group"] == "greq")
    assert len(ids) == 3 and first in ids
    rc, doc, err = monitor(world, "--host", "m1", "--group", "greq", "--once", "--json")
    assert rc == 0, err
    g = group_of(doc)
    assert g["counts"] == {"success": 2} and g["superseded"] == 1 and g["all_done"]
    assert '"id"' not in json.dumps(doc)  # never an id in what we report


# ---- several hosts ---------------------------------------------------------------------------

def test_two_hosts_in_one_view(world: World, hosts: tuple[SimHost, SimHost]) -> None:
    m1, m2 = hosts
    for h in hosts:
        make_group(h, "gmulti")
        add(h, "gmulti", f"{h.name}:done", "true")
    settle(m1, "gmulti")
    settle(m2, "gmulti")
    rc, doc, err = monitor(world, "--host", "m1,m2", "--group", "gmulti", "--once", "--json")
    assert rc == 0, err
    assert [d["host"] for d in doc["hosts"]] == ["m1", "m2"] and doc["exit_code"] == 0
    add(m2, "gmulti", "m2:long", "sleep 60")
    wait_running(m2, "gmulti", 1)
    rc, doc, _ = monitor(world, "--host", "m1,m2", "--group", "gmulti", "--once", "--json")
    assert rc == 3
    running = {d["host"]: [r["label"] for r in group_of(d)["running"]] for d in doc["hosts"]}
    assert running == {"m1": [], "m2": ["m2:long"]}
    add(m1, "gmulti", "m1:bad", "exit 2")
    settle(m1, "gmulti")
    rc, text, _ = monitor(world, "--host", "all", "--group", "gmulti", "--once")
    assert rc == 1  # a failure anywhere wins over work still running elsewhere
    assert "m1:bad" in text and "m2:long" in text and "m1" in text and "m2" in text


def test_unreachable_host_and_dead_daemon_exit_4(world: World,
                                                hosts: tuple[SimHost, SimHost]) -> None:
    m1 = hosts[0]
    m3 = world.add_host("m3", project=False)
    make_group(m3, "gdown")
    make_group(m1, "gok")
    add(m1, "gok", "fine", "true")
    settle(m1, "gok")
    m3.stop_pueued()
    rc, _, err = monitor(world, "--host", "m3", "--group", "gdown", "--once", "--json")
    assert rc == 4 and "m3: pueue daemon not running" in err and "pueued -d" in err
    m3.stop_sshd()
    rc, doc, err = monitor(world, "--host", "m3", "--group", "gdown", "--once", "--json")
    assert rc == 4 and "m3" in err
    rc, doc, err = monitor(world, "--host", "m1,m3", "--group", "gok", "--once", "--json")
    assert rc == 5  # one host unreadable among several: partial
    assert doc["hosts"][0]["exit_code"] == 0 and doc["hosts"][1]["exit_code"] == 4
    assert doc["hosts"][1]["ok"] is False and "m3" in doc["hosts"][1]["error"]


def test_unknown_group_is_bad_input(world: World, m1: SimHost) -> None:
    rc, _, err = monitor(world, "--host", "m1", "--group", "no-such-group", "--once")
    assert rc == 2 and "no-such-group" in err
    rc, _, err = monitor(world, "--host", "m1", "--once")
    assert rc == 2 and "--group" in err


# ---- the fallback for hosts without python3, over real SSH -----------------------------------

@pytest.fixture
def inventory_env(world: World, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("JOBSAFE_INVENTORY", str(world.inventory))
    monkeypatch.setenv("JOBSAFE_SSH_CONFIG", str(world.ssh_config))
    yield


def test_plain_fallback_matches_the_filter_over_ssh(world: World, m1: SimHost,
                                                   inventory_env: None) -> None:
    make_group(m1, "gplain")
    add(m1, "gplain", "x@1", "true")
    add(m1, "gplain", "y@1", "echo nope; exit 4")
    settle(m1, "gplain")
    host = load_inventory(world.inventory)["m1"]
    with session(host) as remote:
        filtered = read_snapshot(remote, Options(group="gplain", swap_window=0))
        plain = read_snapshot(remote, Options(group="gplain", python="no-such-python3"))
        asked = read_snapshot(remote, Options(group="gplain", swap_window=0, state_file=False))
    assert (filtered.via, plain.via) == ("filter", "plain")
    # the filter read pueue's state file (found through the null pueue.yml pueued wrote),
    # and it says what `pueue status` says
    assert (filtered.source, asked.source) == ("state_file", "status")
    assert [g.to_dict() for g in asked.groups] == [g.to_dict() for g in filtered.groups]
    assert plain.health.state_file == filtered.health.state_file == str(m1.state_file)
    assert [g.to_dict() for g in plain.groups] == [g.to_dict() for g in filtered.groups]
    assert plain.view("gplain").failed[0].log == ("nope",)
    assert plain.health.state_size == filtered.health.state_size
    assert filtered.received < plain.received  # the point of filtering on the host
