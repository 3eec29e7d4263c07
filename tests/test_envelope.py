"""--json prints one versioned envelope (schema jobsafe/1) for every task, host count and
outcome, bad input included; each command's JSON Schema ships in the package and every
test that reads a task's --json checks it (tests/jsonout.py). Internal errors exit 70, a
closed stdout ends quietly with 141."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import jsonschema
import pytest

from jobsafe_ops import cli, tasks
from jobsafe_ops.errors import EXIT_CLOSED_STDOUT, EXIT_INTERNAL, ConfigError
from tests.cli import inv
from tests.jsonout import envelope_of, result_of, schema_for

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
JSON_TASKS = sorted(n.replace("_", "-") for n, t in tasks.ns.tasks.items()
                    if "json" in {a.name for a in t.get_arguments()})
HOST = 'ssh = "nobody@127.0.0.1"\nproject_dir = "~/project"\npackage = "mypkg"\n' \
       '[groups.p1]\nparallel = 2\nmin = 1\nmax = 4\njob_memory = "1G"\n'


def run(*argv: str, cwd: Path = REPO,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return inv(None, *argv, cwd=cwd, timeout=60,
               env={"PATH": f"{BIN}:{os.environ['PATH']}", **(env or {})})


def test_every_json_task_ships_a_valid_schema_in_the_package() -> None:
    assert "demo" not in JSON_TASKS and {"probe", "deploy", "lint"} <= set(JSON_TASKS)
    for name in [*JSON_TASKS, "jobsafe"]:
        schema = schema_for(name)  # checks it against the 2020-12 metaschema
        assert schema["properties"]["schema"] == {"const": "jobsafe/1"}
    shipped = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "schemas/*.json" in shipped["tool"]["setuptools"]["package-data"]["jobsafe_ops"]


def test_a_schema_rejects_another_shape() -> None:
    doc = {"schema": "jobsafe/1", "command": "probe", "exit_code": 0, "error": None,
           "hosts": [{"host": "a", "ok": True, "exit_code": 0, "error": None,
                      "result": {"nproc": 4}}], "result": None}
    with pytest.raises(jsonschema.ValidationError):  # a probe row lacks the probe's keys
        envelope_of(json.dumps(doc))
    with pytest.raises(jsonschema.ValidationError):  # the old bare report is refused
        envelope_of(json.dumps({**doc, "command": "lint", "findings": []}))


# every task, bad input: exit 2, one stderr line, and the envelope carrying the error
BAD = {
    "hosts": ["--inventory", "{inv}/missing"],
    "probe": ["--host", "nosuch"],
    "audit": ["--host", "nosuch"],
    "monitor": ["--host", "h", "--group", "p1", "--once", "--interval", "0"],
    "autoscale": ["--host", "nosuch"],
    "clean": ["--host", "h"],
    "deploy": ["--host", "h", "--version", "-x"],
    "retry-failed": ["--host", "h", "--group", "nosuch"],
    "submit-batch": ["--host", "h"],
    "lint": ["--path", "{inv}/missing.sh"],
    "logs": ["--host", "h"],
    "cancel": ["--host", "h", "--label", "a", "--playbook", "b"],
    "pause": ["--host", "h"],
    "resume": ["--host", "h", "--group", ""],
    "journal": ["--host", "h", "--since", "yesterday"],
    "report": ["--host", "h", "--html", ""],
}


@pytest.mark.parametrize("name", JSON_TASKS)
def test_bad_input_is_an_envelope_with_exit_2(name: str, tmp_path: Path) -> None:
    (tmp_path / "h.toml").write_text(HOST)
    argv = [a.format(inv=tmp_path) for a in BAD[name]]
    inventory = [] if name in ("hosts", "lint") else ["--inventory", str(tmp_path)]
    proc = run(name, *argv, "--json", *inventory)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    doc = envelope_of(proc.stdout)  # validated against schemas/<name>.json
    assert doc["command"] == name and doc["exit_code"] == 2 and doc["hosts"] == []
    [line] = proc.stderr.strip().splitlines()
    assert line == f"error: {doc['error']}"


def test_hosts_json_is_one_row_per_host(tmp_path: Path) -> None:
    (tmp_path / "h.toml").write_text(HOST)
    (tmp_path / "g.toml").write_text(HOST)
    proc = run("hosts", "--inventory", str(tmp_path), "--json")
    assert proc.returncode == 0, proc.stderr
    doc = envelope_of(proc.stdout)
    assert [(r["host"], r["ok"], r["exit_code"]) for r in doc["hosts"]] == [
        ("g", True, 0), ("h", True, 0)]
    assert result_of(proc.stdout)["h"]["groups"]["p1"]["parallel"] == 2


def test_lint_json_validates_findings_and_rules(tmp_path: Path) -> None:
    (tmp_path / "a.sh").write_text("pueue parallel 0 -g p1\n")
    proc = run("lint", "--json", "--path", str(tmp_path / "a.sh"))
    assert proc.returncode == 1
    assert envelope_of(proc.stdout)["exit_code"] == 1
    assert result_of(proc.stdout)["summary"]["findings"] == 1
    rules = run("lint", "--rules", "--json")
    assert rules.returncode == 0 and result_of(rules.stdout)["rules"]


def test_internal_error_exits_70_with_one_line_and_the_envelope(
        capsys: pytest.CaptureFixture[str]) -> None:
    def probe_cmd(json_out: bool) -> int:
        raise RuntimeError("boom")

    with pytest.raises(SystemExit) as exc:
        cli.main(probe_cmd, json_out=True)
    assert exc.value.code == EXIT_INTERNAL == 70
    out = capsys.readouterr()
    doc = envelope_of(out.out)
    assert (doc["command"], doc["exit_code"]) == ("probe", 70)
    assert doc["error"] == "internal error: RuntimeError: boom"
    assert len(out.err.strip().splitlines()) <= 2 and "internal error" in out.err
    assert cli.RUN.command == "jobsafe"  # reset for the next command


def test_errors_after_the_envelope_print_no_second_one(
        capsys: pytest.CaptureFixture[str]) -> None:
    def probe_cmd(json_out: bool) -> int:
        cli.print_json(0)
        raise ConfigError("late")

    with pytest.raises(SystemExit) as exc:
        cli.main(probe_cmd, json_out=True)
    assert exc.value.code == 2
    envelope_of(capsys.readouterr().out)  # exactly one JSON document


def test_interrupt_is_an_envelope_with_130(capsys: pytest.CaptureFixture[str]) -> None:
    def audit_cmd(json_out: bool) -> int:
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as exc:
        cli.main(audit_cmd, json_out=True)
    assert exc.value.code == 130
    assert envelope_of(capsys.readouterr().out)["error"].startswith("interrupted")


def _closed_stdout(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """The reader is gone before the first write, as `| head -1` is after one line."""
    r, w = os.pipe()
    os.close(r)
    try:
        return subprocess.run(argv, stdout=w, stderr=subprocess.PIPE, text=True, timeout=60,
                              cwd=REPO, stdin=subprocess.DEVNULL,
                              env={**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"})
    finally:
        os.close(w)


@pytest.mark.parametrize("argv", [
    ["jobsafe", "--list"],
    ["jobsafe", "lint", "--rules"],
    ["jobsafe", "lint", "--rules", "--json"],
    ["inv", "lint", "--rules", "--json"],
    ["inv", "hosts", "--inventory", "{inv}"],
    ["inv", "hosts", "--inventory", "{inv}", "--json"],
])
def test_a_closed_stdout_ends_quietly_with_141(argv: list[str], tmp_path: Path) -> None:
    (tmp_path / "h.toml").write_text(HOST)
    proc = _closed_stdout([str(BIN / argv[0]), *(a.format(inv=tmp_path) for a in argv[1:])])
    assert (proc.returncode, proc.stderr) == (EXIT_CLOSED_STDOUT, "")
