"""jobsafe_ops.deploy.install: the install parser, the uv outcome classifier (real uv outputs),
the expectation checks and the verify script (run for real against a fake venv)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from tenacity import Retrying, retry_if_exception_type

from jobsafe_ops.deploy import install as i
from jobsafe_ops.deploy.context import DeployOptions, Install
from jobsafe_ops.deploy.install import Deadline
from jobsafe_ops.errors import VersionNotVisible


def test_parse_install() -> None:
    out = "noise\n" + json.dumps({"version": "1.1.0", "dist_version": "1.0.0",
                                  "file": "/p/src/m/__init__.py", "editable": True}) + "\n"
    inst = i.parse_install(out)
    assert (inst.version, inst.dist_version, inst.editable, inst.kind) == \
        ("1.1.0", "1.0.0", True, "editable")
    assert i.parse_install("").error


# Real uv 0.13 outputs (captured against pypiserver on loopback).
UV_NO_VERSION = ("Using Python 3.11.7 environment at: v\nerror: No solution found when resolving "
                 "dependencies\n  cause: Because there is no version of mypkg==1.1.0 and you "
                 "require mypkg==1.1.0, we can conclude that your requirements are "
                 "unsatisfiable.\n")
UV_NO_PACKAGE = ("error: No solution found when resolving dependencies\n  cause: Because mypkg "
                 "was not found in the package registry and you require mypkg==1.1.0, we can "
                 "conclude that your requirements are unsatisfiable.\n")
UV_CONNECT = ("error: Request failed after 3 retries in 8.8s\n  cause: Failed to fetch: "
              "http://127.0.0.1:18799/simple/mypkg/\n  cause: tcp connect error\n  cause: "
              "Connection refused (os error 111)\n")
UV_DEPENDENCY = ("error: No solution found when resolving dependencies\n  cause: Because foo was"
                 " not found in the package registry and mypkg==1.1.0 depends on foo, we can "
                 "conclude that mypkg==1.1.0 cannot be used.\n")


@pytest.mark.parametrize("exited, output, outcome", [
    (0, "Installed 1 package", "ok"),
    (1, UV_NO_VERSION, "not-found"),
    (1, UV_NO_PACKAGE, "not-found"),
    (1, "Because only mypkg<=1.0.0 is available and you require mypkg==1.1.0, we can", "not-found"),
    (1, "ERROR: No matching distribution found for mypkg==1.1.0", "not-found"),
    (2, UV_CONNECT, "error"),  # network: fail fast
    (1, UV_DEPENDENCY, "error"),  # a dependency is missing, not our version
    (1, UV_NO_VERSION.replace("1.1.0", "1.2.0"), "error"),  # another version's message
    (1, "error: Failed to read from zip file", "error"),
])
def test_install_outcome(exited: int, output: str, outcome: str) -> None:
    assert i.install_outcome(exited, output, "mypkg", "1.1.0") == outcome


def test_install_outcome_normalizes_the_distribution_name() -> None:
    text = "Because there is no version of my-pkg==2.0 and you require my-pkg==2.0"
    assert i.install_outcome(1, text, "My_Pkg", "2.0") == "not-found"


# ---- expectations -----------------------------------------------------------------------

def install(**kw: Any) -> Install:
    base: dict[str, Any] = dict(version="1.1.0", dist_version="1.1.0", file="/x", editable=False)
    base.update(kw)
    return Install(**base)


def test_expectations() -> None:
    opts = DeployOptions(expect_version="1.1.0", expect_code="mypkg:compute:x * 3")
    ok = install(code={"target": "mypkg:compute", "needle": "x * 3", "needle_found": True,
                       "matches_checkout": True})
    assert i.check_expectations(ok, opts) == []
    assert "version is 1.0.0, expected 1.1.0" in i.check_expectations(
        install(version="1.0.0", code=ok.code), opts)[0]
    lacks = install(code={**(ok.code or {}), "needle_found": False})
    assert "FIX NOT APPLIED" in i.check_expectations(lacks, opts)[0]
    stale = install(code={"target": "mypkg:compute", "matches_checkout": False})
    assert "differs from the checkout" in i.check_expectations(stale, opts)[0]
    missing = install(code={"target": "mypkg:nope", "error": "AttributeError: nope"})
    assert "AttributeError" in i.check_expectations(missing, opts)[0]
    assert i.check_expectations(install(error="import mypkg failed"), opts) == \
        ["import mypkg failed"]


def _run_verify_script(tmp_path: Path, pythonpath: Path, code: str) -> dict[str, Any]:
    # the deployed form runs with -I; here PYTHONPATH stands in for the venv's site-packages
    out = subprocess.run(
        [sys.executable, "-c", i.VERIFY_SCRIPT, "mypkg", "mypkg", str(tmp_path / "project"),
         code],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(pythonpath)},
        cwd=tmp_path, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_verify_script_editable_vs_stale_wheel(tmp_path: Path) -> None:
    src = tmp_path / "project" / "src" / "mypkg"
    src.mkdir(parents=True)
    (src / "__init__.py").write_text('__version__ = "1.1.0"\n\n\ndef compute(x):\n'
                                     '    return x * 3\n')
    editable = _run_verify_script(tmp_path, src.parent, "mypkg:compute:x * 3")
    assert editable["editable"] is True and editable["version"] == "1.1.0"
    assert editable["code"]["needle_found"] and editable["code"]["matches_checkout"]

    site = tmp_path / "venv" / "site-packages" / "mypkg"
    site.mkdir(parents=True)
    (site / "__init__.py").write_text('__version__ = "1.0.0"\n\n\ndef compute(x):\n'
                                      '    return x * 2\n')
    wheel = _run_verify_script(tmp_path, site.parent, "mypkg:compute")
    assert wheel["editable"] is False and wheel["version"] == "1.0.0"
    assert wheel["code"]["matches_checkout"] is False  # AP-5: old code still installed
    gone = _run_verify_script(tmp_path, site.parent, "mypkg:missing")
    assert "AttributeError" in gone["code"]["error"]


class FakeClock:
    """Time that moves only when the retry loop sleeps (or an attempt takes time)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.now += seconds


@pytest.mark.parametrize(("budget", "attempt_takes"), [(20.0, 0.0), (20.0, 0.7), (300.0, 1.3),
                                                       (2.0, 0.0)])
def test_upgrade_deadline_spends_the_whole_budget(budget: float, attempt_takes: float) -> None:
    """--upgrade-timeout 20 used to stop after 11 s (stop_before_delay will not start a
    sleep that crosses the deadline): the last attempt now runs at the deadline, none after."""
    clock = FakeClock()
    start = clock.now
    first_wait = min(5.0, max(0.5, budget / 30))
    deadline = Deadline(budget, first_wait, clock=clock)
    at: list[float] = []

    def attempt() -> None:
        at.append(clock.now - start)
        clock.now += attempt_takes
        raise VersionNotVisible("not on the index yet")

    with pytest.raises(VersionNotVisible):
        Retrying(retry=retry_if_exception_type(VersionNotVisible), stop=deadline.stop,
                 wait=deadline.wait, sleep=clock.sleep, reraise=True)(attempt)
    assert at[-1] == pytest.approx(budget)  # the last attempt is at the deadline
    assert all(t <= budget + 1e-9 for t in at)  # and never after it
    assert at == sorted(at) and len(at) >= 3
    assert at[1] - at[0] == pytest.approx(first_wait + attempt_takes)  # back-off kept


def test_upgrade_deadline_stops_when_an_attempt_overruns_it() -> None:
    clock = FakeClock()
    deadline = Deadline(10.0, 1.0, clock=clock)
    at: list[float] = []

    def attempt() -> None:
        at.append(clock.now)
        clock.now += 30.0  # one slow attempt eats the whole budget
        raise VersionNotVisible("not yet")

    with pytest.raises(VersionNotVisible):
        Retrying(retry=retry_if_exception_type(VersionNotVisible), stop=deadline.stop,
                 wait=deadline.wait, sleep=clock.sleep, reraise=True)(attempt)
    assert len(at) == 1
