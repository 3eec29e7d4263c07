"""[[checks]] in a host file against real sshd hosts on loopback: probe runs them in its one
round trip (one SSH session) and shows each verdict in the health table and `--json`; deploy
judges its deploy-watch checks in the monitor window (a failing one: exit 1); the autoscaler
runs its after-scale checks in the poll after a change and holds scale-ups while one fails
(real `pueue parallel`, readings injected); a bad entry is exit 2 before any SSH."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobsafe_ops import journal
from jobsafe_ops.inventory import load_inventory
from jobsafe_ops.ops.autoscale import Autoscaler, Readings
from jobsafe_ops.remote import connect
from tests.cli import inv
from tests.e2e.deploy_helpers import deploy, deploy_host, fresh, step
from tests.jsonout import result_of
from tests.world import SimHost, World

CHECKS = """
[[checks]]
name = "home-set"
command = "test -n \\"$HOME\\" && echo ok"
expect = "ok"
when = ["probe", "deploy-watch"]

[[checks]]
name = "flags"
command = "ls ~/flagdir | wc -l"
expect = "0"
when = ["probe", "deploy-watch"]

[[checks]]
name = "scale-only"
command = "echo 99"
expect = "0"
when = "after-scale"
"""


EXTRA: dict[str, str] = {}  # host -> the [[checks]] text its host file ends with


def with_checks(world: World, host: SimHost, text: str = CHECKS) -> None:
    """The world's host files, `host`'s ending with `text` ([[checks]] tables come last)."""
    EXTRA[host.name] = text
    world.write_inventory()
    for name, extra in EXTRA.items():
        path = world.inventory / f"{name}.toml"
        path.write_text(path.read_text() + extra)


@pytest.fixture(scope="module")
def checked(world: World) -> SimHost:
    host = deploy_host(world, "checked")
    with_checks(world, host)
    return host


def flags(host: SimHost, n: int) -> None:
    host.run("rm -rf ~/flagdir && mkdir ~/flagdir" + "".join(
        f" && touch ~/flagdir/f{i}" for i in range(n)), check=True)


def test_probe_shows_a_passing_and_a_failing_check_in_one_round_trip(
        world: World, checked: SimHost) -> None:
    flags(checked, 2)
    checked.log_sessions()
    before = checked.sessions()
    r = inv(world, "probe", "--host", checked.name, "--json")
    assert checked.sessions() - before == 1, "the checks must ride in the probe's session"
    assert r.returncode == 0, r.stderr  # like a built-in alarm: probe reports, exits 0
    rows = {c["name"]: c for c in result_of(r.stdout)["checks"]}
    assert list(rows) == ["home-set", "flags"]  # after-scale only: not run by probe
    assert rows["home-set"] == {"name": "home-set", "ok": True, "verdict": "ok",
                                "observed": "ok", "expected": "== ok", "exit_code": 0,
                                "message": "output 'ok' is == ok"}
    assert rows["flags"]["ok"] is False and rows["flags"]["verdict"] == "alarm"
    assert rows["flags"]["observed"] == "2" and rows["flags"]["expected"] == "== 0"
    human = inv(world, "probe", "--host", checked.name)
    assert human.returncode == 0, human.stderr
    text = " ".join(human.stdout.split())
    assert "check home-set │ ok" in text and "check flags │ alarm │ 2" in text
    flags(checked, 0)
    again = result_of(inv(world, "probe", "--host", checked.name, "--json").stdout)
    assert all(c["ok"] for c in again["checks"])


def test_deploy_fails_on_a_failing_deploy_watch_check(world: World, checked: SimHost) -> None:
    fresh(checked)
    flags(checked, 1)
    r, rep = deploy(world, checked, "--watch", "1")
    mon = step(rep, "monitor")
    assert r.returncode == 1, r.stderr
    assert mon["status"] == "failed" and "check flags ALARM: output '1' is not == 0" in \
        mon["detail"]
    assert "monitor FAILED" in rep["verdict"]
    for sample in mon["data"]["samples"]:
        assert {c["name"]: c["verdict"] for c in sample["checks"]} == {"home-set": "ok",
                                                                     "flags": "alarm"}
    flags(checked, 0)
    r, rep = deploy(world, checked, "--watch", "1")
    mon = step(rep, "monitor")
    assert "checks 2/2 ok" in mon["detail"]
    healthy = all(s["load_ok"] and s["swap_ok"] for s in mon["data"]["samples"])
    assert r.returncode == (0 if healthy else 1), r.stderr  # the shared machine may be busy


def test_a_bad_check_is_exit_2_before_any_ssh(world: World, checked: SimHost) -> None:
    with_checks(world, checked, CHECKS.replace('expect = "0"\nwhen = "after-scale"',
                                               'expect = "< lots"\nwhen = "after-scale"'))
    try:
        checked.log_sessions()
        before = checked.sessions()
        r = inv(world, "probe", "--host", checked.name)
        assert r.returncode == 2
        errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
        assert len(errors) == 1 and "[[checks]] #3 'scale-only': field 'expect'" in errors[0]
        assert f"{checked.name}.toml" in r.stderr
        assert checked.sessions() == before
    finally:
        with_checks(world, checked)


AFTER_SCALE = """
[[checks]]
name = "flags"
command = "ls ~/flagdir | wc -l"
expect = "0"
when = "after-scale"
"""


def test_a_failing_after_scale_check_holds_scale_ups_until_it_passes(
        world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not world.pueue_available:
        pytest.skip("no pueue stand-in and no real pueue")
    host = world.add_host("scaled", project=False, groups={
        "p1": {"parallel": 1, "min": 1, "max": 4, "job_memory": "1G"}})
    host.run("pueue group add p1 --parallel 1", check=True)
    for i in range(5):
        host.run(f'pueue add --group p1 --label w{i} --working-directory "$HOME" -- sleep 60',
                 check=True)
    with_checks(world, host, AFTER_SCALE)
    monkeypatch.setenv("JOBSAFE_INVENTORY", str(world.inventory))
    monkeypatch.setenv("JOBSAFE_SSH_CONFIG", str(world.ssh_config))
    monkeypatch.setenv("JOBSAFE_JOURNAL", str(tmp_path / "journal.ndjson"))
    h = load_inventory(world.inventory)["scaled"]
    idle = Readings(nproc=10, load1=1.0, mem_total=100 * 1024**3, mem_available=90 * 1024**3,
                    swap_in=0, swap_out=0)  # every tick would scale p1 up
    scaler = Autoscaler(h, connect(h), reader=lambda snap: idle)

    def parallel() -> int:
        return int(host.pueue_status()["groups"]["p1"]["parallel_tasks"])

    try:
        first = scaler.tick()
        assert first.check is None and parallel() == 2
        flags(host, 1)
        host.log_sessions()
        before = host.sessions()
        held = scaler.tick()  # the post-bump poll carries the check: still one session
        assert host.sessions() - before == 1
        assert held.check is not None and held.check.blocking == ["flags"]
        assert "after-scale check flags failed: no scale-up" in held.actions[0].reason
        assert parallel() == 2
        again = scaler.tick()  # no change to check, but it failed last time: run it again
        assert again.check is not None and not again.check.ok and parallel() == 2
        flags(host, 0)
        passed = scaler.tick()
        assert passed.check is not None and passed.check.ok and parallel() == 3
    finally:
        scaler.remote.close()
    logged = [(e["result"], [c["verdict"] for c in e["checks"]])
              for e in journal.entries(host="scaled", action="autoscale-check")]
    assert logged == [("failed", ["alarm"]), ("failed", ["alarm"]), ("ok", ["ok"])]
