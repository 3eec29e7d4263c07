"""[[checks]] in a host file against a real sshd host on loopback: probe runs them in its one
round trip (one SSH session) and shows each verdict in the health table and `--json`; deploy
judges its deploy-watch checks in the monitor window (a failing one: exit 1); a bad entry is
exit 2 before any SSH."""

from __future__ import annotations

import pytest

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


def with_checks(world: World, host: SimHost, text: str = CHECKS) -> None:
    """The world's host file for `host` plus `text` ([[checks]] tables come last)."""
    world.write_inventory()
    path = world.inventory / f"{host.name}.toml"
    path.write_text(path.read_text() + text)


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
        assert {c["name"]: c["level"] for c in sample["checks"]} == {"home-set": "ok",
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
