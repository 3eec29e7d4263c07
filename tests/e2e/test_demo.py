"""The README's first quick-start command: `inv demo` runs end to end on a throwaway host
(a real sshd on loopback, like the rest of tests/e2e)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.cli import inv
from tests.e2e.conftest import require_sshd


@pytest.mark.skipif(shutil.which("git") is None or shutil.which("uv") is None,
                    reason="the demo needs git and uv (installed by ./dev)")
def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    require_sshd()
    unset = [k for k in os.environ if k.startswith(("PUEUE_", "XDG_"))]
    proc = inv(None, "demo", env={"HOME": str(tmp_path), "COLUMNS": "200"}, unset=unset,
               timeout=600)
    out = proc.stdout
    for step in ("inv probe", "inv audit", "inv deploy", "inv submit-batch", "inv monitor"):
        assert step in out, (step, out[-3000:], proc.stderr[-2000:])
    assert "deployed" in out and "1.0.1" in out  # the pushed fix was pulled and verified
    assert "demo finished" in out
    if proc.returncode != 0:
        # the one machine-dependent verdict: the post-deploy load window on a busy box
        assert proc.returncode == 1 and "monitor FAILED" in out and "load" in out, out[-3000:]
    assert "12 jobs" in out and "all done, all succeeded" in out
