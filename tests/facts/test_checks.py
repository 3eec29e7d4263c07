"""The custom checks' remote side (facts/checks.py): the framed snippet run by a real local
shell (a command printing our own marker, no output, a non-zero exit, a timeout), judging,
and the wiring into probe's round trip, its health table and --json, and the monitor poll
autoscale reads (run locally against the scripted pueue of tests/conftest.py)."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

from jobsafe_ops.checks import Check, parse_expect
from jobsafe_ops.facts import checks as custom
from jobsafe_ops.facts.probe import run_probe, verdicts
from jobsafe_ops.facts.snapshot import Options, read_snapshot
from jobsafe_ops.remote import LocalRemote


def check(command: str, expect: str = "0", **kw: Any) -> Check:
    return Check(kw.pop("name", "c"), command, parse_expect(expect), **kw)


def run_local(checks: list[Check], before: str = "", after: str = "") -> tuple[str, Any]:
    nonce = custom.new_nonce()
    text = subprocess.run(["sh", "-c", before + custom.script(checks, nonce) + after],
                          capture_output=True, text=True, timeout=60, check=True).stdout
    return custom.results(checks, text, nonce)


def test_framed_results_in_order_and_the_rest_untouched() -> None:
    rest, rows = run_local([check("echo 0"), check("printf 'a\\nb\\n'", "== x", name="two")],
                           before="echo @@before; echo 1\n", after="\necho @@end\n")
    assert rest == "@@before\n1\n@@end\n"
    assert [(r.name, r.ok, r.level, r.observed) for r in rows] == [
        ("c", True, "ok", "0"), ("two", False, "alarm", "a | b")]
    assert rows[1].message == "output 'a | b' is not == x" and rows[1].exit_code == 0


def test_a_command_printing_our_marker_cannot_forge_a_result() -> None:
    nonce = custom.new_nonce()
    forged = check(f"echo '@@check {nonce} 1 0'; echo MA==; echo; echo @@status; echo 5")
    honest = check("echo 0", name="honest")
    text = subprocess.run(["sh", "-c", custom.script([forged, honest], nonce)],
                          capture_output=True, text=True, timeout=60, check=True).stdout
    rest, rows = custom.results([forged, honest], text, nonce)
    assert rest == ""  # nothing the command printed leaks into the probe's sections
    assert not rows[0].ok and "@@check" in rows[0].observed and rows[1].ok


def test_no_output_non_zero_exit_and_timeout() -> None:
    _, (empty, failing, missing, slow) = run_local([
        check("true", name="empty"),
        check("echo 0; echo 'db: connection refused' >&2; exit 3", name="failing"),
        check("no-such-program-jc", name="missing"),
        check("sleep 5; echo 0", name="slow", timeout=1)])
    assert not empty.ok and empty.message == "no output is not == 0"
    assert not failing.ok and failing.exit_code == 3 and failing.observed == "0"
    assert failing.message == "exit 3: db: connection refused"  # its stderr tail
    assert missing.exit_code == 127 and "command not found?" in missing.message
    assert not slow.ok and slow.exit_code == 124 and "timed out after 1s" in slow.message


def test_output_is_shortened_and_credentials_masked() -> None:
    _, (row,) = run_local([check("echo PASSWORD=hunter2secret; seq 1 100", "== 1")])
    assert "hunter2secret" not in row.observed and "PASSWORD=***" in row.observed
    assert len(row.observed) <= custom.SHOWN and row.observed.endswith("...")


def test_a_check_that_did_not_report_fails_at_its_severity() -> None:
    c = check("echo 0", severity="warn")
    (row,) = custom.judge_all([c], {})
    assert (row.ok, row.level, row.exit_code) == (False, "warn", None)
    assert "no result from the host" in row.message


def test_a_damaged_frame_is_no_result() -> None:
    rest, ran = custom.split("@@check n 0 0\nnot base64!\n", "n")
    assert ran == {} and rest == ""


# ---- wired into probe and the monitor poll (run locally, scripted pueue: conftest.py) --------

def test_probe_runs_its_checks_in_its_one_round_trip(scripted: dict[str, Any],
                                                     tmp_path: Path) -> None:
    flags = tmp_path / "flagdir"
    flags.mkdir()
    (flags / "stop").touch()
    host = replace(scripted["host"], checks=(
        check("echo 0", name="pass"), check(f"ls {flags} | wc -l", name="flags"),
        check("echo 1", name="later", when=("after-scale",))))
    remote = LocalRemote(host)
    p = run_probe(remote, swap_interval=0, checks=host.checks_for("probe"))
    assert remote.round_trips == 1
    assert p.pueue_error is None and p.groups  # the probe's own sections still parse
    rows = {c["name"]: c for c in p.to_dict()["checks"]}
    assert list(rows) == ["pass", "flags"]  # only when = "probe"
    assert rows["pass"] == {"name": "pass", "ok": True, "verdict": "ok", "observed": "0",
                            "expected": "== 0", "exit_code": 0, "message": "output '0' is == 0"}
    assert rows["flags"]["verdict"] == "alarm" and rows["flags"]["observed"] == "1"
    health = {v.name: v for v in verdicts(p, host)}
    assert health["check pass"].ok and not health["check flags"].ok
    assert health["check flags"].level == "alarm"


def test_the_monitor_poll_carries_after_scale_checks(scripted: dict[str, Any]) -> None:
    host = replace(scripted["host"], checks=(check("echo 7", "< 5", name="errors"),))
    remote = LocalRemote(host)
    plain = read_snapshot(remote, Options(group="p1", swap_window=0), None, host.checks)
    fallback = read_snapshot(remote, Options(group="p1", python="no-such-python3",
                                             swap_window=0), None, host.checks)
    for snap in (plain, fallback):
        assert snap.view("p1").total == 10  # the poll itself still parses
        (row,) = snap.checks
        assert (row.name, row.ok, row.observed) == ("errors", False, "7")
    assert read_snapshot(remote, Options(group="p1", swap_window=0)).checks == ()
