"""The repo's `.pre-commit-hooks.yaml`, run by the real pre-commit against a temp git repo
(`pre-commit try-repo`: it clones this source tree, builds the hook's virtualenv with pip
from the package registry, and runs `jobsafe lint --` on the staged files). One test: the
environment build is the slow part (~30 s), the second run reuses it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", "-c", "user.email=t@example.com", "-c", "user.name=t", *args],
                   cwd=cwd, check=True, capture_output=True, timeout=60)


def source_copy(dest: Path) -> Path:
    """This source tree as it is now (tracked and new files, .gitignore applied), as a git
    repo of its own: what try-repo clones."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO,
                           check=True, capture_output=True, text=True).stdout.split("\n")
    for name in filter(None, files):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    git("init", "-q", cwd=dest)
    git("add", "-A", cwd=dest)
    git("commit", "-qm", "source", cwd=dest)
    return dest


def test_hook_definition() -> None:
    [hook] = yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text())
    assert hook["id"] == "jobsafe-lint" and hook["entry"] == "jobsafe lint --"
    assert hook["language"] == "python" and set(hook["types_or"]) == {"shell", "python", "toml"}


def test_pre_commit_runs_the_hook_on_a_temp_repo(tmp_path: Path) -> None:
    src = source_copy(tmp_path / "src")
    work = tmp_path / "work"
    work.mkdir()
    git("init", "-q", cwd=work)
    (work / "job.sh").write_text("#!/bin/bash\npueue parallel 0 -g p1\n")
    (work / "notes.txt").write_text("pueue parallel 0\n")  # not a file type the hook takes
    git("add", "-A", cwd=work)
    env = {**os.environ, "PRE_COMMIT_HOME": str(tmp_path / "cache"),
           "PATH": f"{BIN}:{os.environ['PATH']}", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("PYTHONPATH", None)

    def pre_commit(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BIN / "pre-commit"), "try-repo", str(src), "jobsafe-lint",
                               *args], cwd=work, env=env, capture_output=True, text=True,
                              timeout=600)

    r = pre_commit("--all-files")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "job.sh:2:1: error parallel-zero" in r.stdout
    assert "notes.txt" not in r.stdout.split("Using config", 1)[-1].split("=====")[-1]
    # fixed: the hook passes (the environment is reused: no second install)
    (work / "job.sh").write_text("#!/bin/bash\npueue parallel 2 -g p1\n")
    git("add", "-A", cwd=work)
    r = pre_commit("--all-files")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Passed" in r.stdout
