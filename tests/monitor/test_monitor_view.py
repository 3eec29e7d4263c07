"""The monitor's rich view (monitor_view.py), rendered at a fixed width without colour."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from jobsafe_ops.errors import RemoteError
from jobsafe_ops.facts.snapshot import Options, snapshot_from
from jobsafe_ops.hostside import monitor_filter as mf
from jobsafe_ops.inventory import Host
from jobsafe_ops.monitor.board import HostResult
from jobsafe_ops.monitor.view import monitor_view
from tests.status_data import NOW, QUEUED, load, task

# ---- the view --------------------------------------------------------------------------------

def render(board: list[HostResult], hosts: dict[str, Host]) -> str:
    buf = io.StringIO()
    Console(file=buf, width=140, color_system=None, force_terminal=False).print(
        monitor_view(board, hosts, now=NOW))
    return buf.getvalue()


def test_view_shows_counts_running_failed_logs_blocked_and_health(fixtures: Path) -> None:
    data = load(fixtures, "status-mixed.json")
    data["tasks"]["20"] = task(20, "optimize", QUEUED, deps=(1,))
    data["groups"]["p1"]["status"] = "Paused"
    summary, _ = mf.summarize(data, "p1", now=NOW)
    mf.attach_logs(summary, {"1": {"output": "Traceback\nValueError: bad input\n"}}, 5)
    health = {"nproc": 4, "load": [3.9, 2.0, 1.0], "mem_total": 8 * 1024**3,
              "mem_available": 6 * 1024**3, "swap_in": 0, "swap_out": 0, "swap_window": 60,
              "state_file": "/s/state.json", "state_size": 11 * 1024**2}
    snap = snapshot_from("bigblack", {**summary, "health": health}, Options(group="p1"), at=NOW)
    host = Host(name="bigblack", ssh="x", project_dir="~/p", package="x")
    down = HostResult("littleblack", error=RemoteError("littleblack: unreachable"))
    out = render([HostResult("bigblack", snap), down], {"bigblack": host})
    assert "exit 5: some hosts failed" in out  # one host unreadable among several
    assert "BTCUSDT@500" in out and "ETHUSDT@250" in out and "ValueError: bad input" in out
    assert "optimize" in out and "blocked dependents" in out
    assert "3.90 of 4 cores (limit 3.6)" in out
    for token in ("queued=2", "running=1", "paused=1", "stashed=2", "blocked=1", "success=1",
                  "failed=3", "group paused"):
        assert token in out
    assert "si 0 so 0 in 60s" in out and "6.0 GiB (25% used)" in out
    assert "11.0 MB warn" in out
    # the unreadable host keeps its row, with its error and its own exit code
    row = next(line for line in out.splitlines() if "littleblack" in line)
    assert "littleblack: unreachable" in row and "failed (exit 4)" in row
