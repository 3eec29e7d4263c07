"""jobsafe_ops.cli: the exit code of a multi-host run, one row per host in the human table
and in --json, the bounded parallel fan-out, flag checks and the one-line error."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import pytest

from jobsafe_ops import cli
from jobsafe_ops.cli import (
    MAX_WORKERS,
    Outcome,
    combined_exit_code,
    each,
    errors_exit_code,
    fan_out,
    finish,
)
from jobsafe_ops.errors import ConfigError, JobsafeError, RefusedError, RemoteError
from jobsafe_ops.inventory import Host
from tests.jsonout import result_of

# ---- the exit-code rule --------------------------------------------------------------------


@pytest.mark.parametrize(("rows", "code"), [
    ([], 0),
    ([(True, 0)], 0),
    ([(False, 4)], 4),  # one host keeps its own code
    ([(False, 3)], 3),
    ([(True, 0), (True, 0), (True, 0)], 0),
    ([(False, 4), (False, 4)], 4),  # every host the same failure: that code
    ([(True, 1), (True, 1)], 1),
    ([(True, 0), (False, 4)], 5),  # some hosts failed: partial
    ([(True, 0), (False, 3), (True, 0)], 5),
    ([(False, 3), (False, 4)], 5),  # all failed, differently: partial, read the rows
    ([(True, 1), (False, 4)], 5),
    ([(True, 0), (True, 1)], 1),  # every host completed: the most urgent verdict
    ([(True, 0), (True, 3)], 3),  # monitor: still running somewhere
    ([(True, 3), (True, 1), (True, 0)], 1),
])
def test_combined_exit_code(rows: list[tuple[bool, int]], code: int) -> None:
    assert combined_exit_code(rows) == code


def test_errors_exit_code_counts_hosts_without_error_as_ok() -> None:
    assert errors_exit_code([], 3) == 0
    assert errors_exit_code([RemoteError("a")], 1) == 4
    assert errors_exit_code([RemoteError("a")], 3) == 5
    assert errors_exit_code([RemoteError("a"), RemoteError("b")], 2) == 4


# ---- finish: rows, JSON, stderr ------------------------------------------------------------

@dataclass
class Report:
    host: str
    exit_code: int = 0
    problem: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"host": self.host, "exit_code": self.exit_code, "n": 7}


def _finish(outcomes: list[Outcome], json_out: bool, **kw: Any) -> int:
    return finish(outcomes, json_out, lambda r: print(f"REPORT {r.host}"),
                  lambda r: r.exit_code, error_of=lambda r: r.problem or None,
                  summary=lambda r: f"summary of {r.host}", **kw)


def test_json_lists_every_host_in_one_shape(capsys: pytest.CaptureFixture[str]) -> None:
    outcomes = [Outcome("a", Report("a")), Outcome("b", error=RemoteError("b: refused")),
                Outcome("c", Report("c", 3, "c: locked by x since t"))]
    assert _finish(outcomes, True) == 5
    out = capsys.readouterr()
    doc = result_of(out.out)
    assert doc["exit_code"] == 5
    assert doc["hosts"] == [
        {"host": "a", "ok": True, "exit_code": 0, "error": None,
         "result": {"host": "a", "exit_code": 0, "n": 7}},
        {"host": "b", "ok": False, "exit_code": 4, "error": "b: refused", "result": None},
        {"host": "c", "ok": False, "exit_code": 3, "error": "c: locked by x since t",
         "result": {"host": "c", "exit_code": 3, "n": 7}},
    ]
    # stderr: exactly one line per failed host
    lines = out.err.strip().splitlines()
    assert len(lines) == 2 and "b: refused" in lines[0] and "c: locked" in lines[1]


def test_human_output_has_one_row_per_host(capsys: pytest.CaptureFixture[str]) -> None:
    outcomes = [Outcome("alpha", Report("alpha")),
                Outcome("beta", error=RemoteError("beta: connection refused"))]
    assert _finish(outcomes, False) == 5
    out = capsys.readouterr().out
    assert "REPORT alpha" in out and "REPORT beta" not in out
    rows = {line.split("│")[1].strip(): line for line in out.splitlines()
            if line.startswith("│") and line.split("│")[1].strip() in ("alpha", "beta")}
    assert "ok" in rows["alpha"] and "summary of alpha" in rows["alpha"]
    assert "failed" in rows["beta"] and "4" in rows["beta"]
    assert "beta: connection refused" in rows["beta"]


def test_one_host_keeps_its_report_shape_and_code(capsys: pytest.CaptureFixture[str]) -> None:
    assert _finish([Outcome("a", Report("a", 1))], True) == 1  # a verdict, not a failure
    doc = result_of(capsys.readouterr().out)
    assert doc == {"host": "a", "exit_code": 1, "n": 7}
    assert _finish([Outcome("a", error=ConfigError("a: bad"))], True) == 2
    out = capsys.readouterr()
    assert result_of(out.out)["hosts"][0]["error"] == "a: bad"
    assert out.err.count("\n") == 1


def test_verdicts_decide_what_a_failed_host_is(capsys: pytest.CaptureFixture[str]) -> None:
    ok, verify_failed = Outcome("a", Report("a")), Outcome("b", Report("b", 1, "b: FIX NOT"))
    assert _finish([ok, verify_failed], True) == 1  # default: 1 is a verdict (audit, submit)
    assert _finish([ok, verify_failed], True, verdicts={0}) == 5  # deploy: 1 is a failure
    capsys.readouterr()


# ---- the fan-out ---------------------------------------------------------------------------

def _hosts(n: int) -> list[Host]:
    return [Host(name=f"h{i}", ssh="local", project_dir="/p", package="x") for i in range(n)]


def test_fan_out_runs_hosts_together_and_one_failure_stops_nobody() -> None:
    arrived = threading.Barrier(3, timeout=10)  # only passes if 3 hosts run at once

    def work(h: Host) -> str:
        arrived.wait()
        if h.name == "h1":
            raise RefusedError("h1: locked")
        return f"done {h.name}"

    outcomes = fan_out(_hosts(3), work)
    assert [o.result for o in outcomes] == ["done h0", None, "done h2"]
    assert isinstance(outcomes[1].error, JobsafeError) and outcomes[1].error.exit_code == 3


def test_each_is_bounded_by_max_workers() -> None:
    lock, active, peak = threading.Lock(), [0], [0]
    gate = threading.Barrier(MAX_WORKERS, timeout=10)

    def work(i: int) -> int:
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        if i < MAX_WORKERS:
            gate.wait()  # the first MAX_WORKERS items are all in flight at once
        with lock:
            active[0] -= 1
        return i

    assert each(list(range(3 * MAX_WORKERS)), work) == list(range(3 * MAX_WORKERS))
    assert peak[0] == MAX_WORKERS


# ---- flag checks and the error line ----------------------------------------------------

@pytest.mark.parametrize("value", ["0", "-3", "abc", "1.5"])
def test_positive_int_refuses(value: str) -> None:
    with pytest.raises(ConfigError, match="--ticks must be a positive integer"):
        cli.positive_int(value, "--ticks")


def test_positive_int_accepts_and_passes_none() -> None:
    assert cli.positive_int("12", "--ticks") == 12
    assert cli.positive_int(None, "--ticks") is None


def test_empty_group_is_not_every_group() -> None:
    assert cli.optional_group(None) is None and cli.optional_group("p1") == "p1"
    with pytest.raises(ConfigError, match="leave --group out"):
        cli.optional_group(" ")


def test_error_line_keeps_toml_tables(capsys: pytest.CaptureFixture[str]) -> None:
    cli.print_error(ConfigError("h.toml: group 'x' is not declared; add [groups.x] there"))
    err = capsys.readouterr().err
    assert "add [groups.x] there" in err and err.count("\n") == 1
