"""The README's first quick-start command: `inv demo` runs end to end on a throwaway host."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("git") is None or shutil.which("uv") is None,
                    reason="the demo needs git and uv (installed by ./dev)")
def test_demo_runs_end_to_end(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("JOBSAFE_", "PUEUE_", "XDG_"))}
    env.update(HOME=str(tmp_path), COLUMNS="200")
    proc = subprocess.run([sys.executable, "-m", "invoke", "-r", str(REPO), "demo"],
                          capture_output=True, text=True, env=env, timeout=600)
    out = proc.stdout
    for step in ("inv probe", "inv audit", "inv deploy", "inv submit-batch", "inv monitor"):
        assert step in out, (step, out[-3000:], proc.stderr[-2000:])
    assert "deployed" in out and "1.0.1" in out  # the pushed fix was pulled and verified
    assert "demo finished" in out
    if proc.returncode != 0:
        # the one machine-dependent verdict: the post-deploy load window on a busy box
        assert proc.returncode == 1 and "monitor FAILED" in out and "load" in out, out[-3000:]
    assert "12 jobs" in out and "all done, all succeeded" in out
