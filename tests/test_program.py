"""The installed `jobsafe` command: the same tasks as `inv` in this checkout."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]


def run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=60)


def test_version_is_the_packages_own(tmp_path: Path) -> None:
    out = run([str(BIN / "jobsafe"), "--version"], tmp_path)
    assert out.returncode == 0 and out.stdout.strip() == f"jobsafe {version('jobsafe-ops')}"


def test_jobsafe_lists_the_same_tasks_as_inv_in_the_checkout(tmp_path: Path) -> None:
    """Run from an unrelated directory (no tasks.py there), jobsafe still has every task."""
    ours = run([str(BIN / "jobsafe"), "--list"], tmp_path)
    theirs = run([str(BIN / "inv"), "--list"], ROOT)
    assert ours.returncode == 0 and theirs.returncode == 0, ours.stderr + theirs.stderr

    def names(text: str) -> list[str]:
        return [line.split()[0] for line in text.splitlines() if line.startswith("  ")
                and not line.startswith("   ")]

    assert names(ours.stdout) == names(theirs.stdout)
    assert {"deploy", "submit-batch", "monitor", "retry-failed", "lint"} <= set(names(ours.stdout))
