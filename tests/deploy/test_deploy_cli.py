"""jobsafe_ops.deploy.cli: one exit code for several hosts, and the TTY prompt."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobsafe_ops.deploy import cli as deploy_cli
from jobsafe_ops.deploy.steps import DeployReport
from jobsafe_ops.errors import RemoteError
from tests.jsonout import result_of

DATA = Path(__file__).parents[1] / "data" / "probe"


# ---- command plumbing ---------------------------------------------------------------------

def _report(host: str, code: int, error: str = "") -> DeployReport:
    return DeployReport(host=host, dry=False, steps=(), exit_code=code,
                          verdict=f"{host}: verdict", error=error)


def test_several_hosts_some_failed_is_partial(capsys: pytest.CaptureFixture[str]) -> None:
    from jobsafe_ops.cli import Outcome

    ok, refused = _report("a", 0), _report("b", 3, "b: locked by x since t")
    assert deploy_cli._finish([Outcome("a", ok), Outcome("b", refused)], json_out=True) == 5
    assert deploy_cli._finish([Outcome("b", refused)], json_out=True) == 3
    assert deploy_cli._finish([Outcome("a", ok), Outcome("c", error=RemoteError("c: gone"))],
                     json_out=True) == 5
    out = capsys.readouterr()
    assert "error: b: locked by x since t" in " ".join(out.err.split())
    assert result_of(out.out.split("\n}\n")[0] + "\n}")["hosts"][0]["host"] == "a"


def test_tty_prompt_shows_the_audit_and_asks(monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    from jobsafe_ops.facts.audit import build_audit
    from jobsafe_ops.facts.probe import parse_probe

    probe = parse_probe("bigblack", (DATA / "bigblack-busy-swapping.txt").read_text())
    assert probe.state is not None
    answers = iter(["nuke", "kill"])  # an invalid answer is asked again
    monkeypatch.setattr("builtins.input", lambda *a: next(answers))
    assert deploy_cli.prompt_policy(build_audit("bigblack", probe.state)) == "kill"
    err = capsys.readouterr().err
    assert "BTCUSDT@500" in err and "abort" in err
