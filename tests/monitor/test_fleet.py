"""jobsafe_ops.monitor.fleet: one board by label across the hosts of a spread batch, built
from real host-side summaries (monitor_filter over pueue status documents)."""

from __future__ import annotations

import fnmatch

import pytest
from rich.console import Console

from jobsafe_ops.errors import ConfigError, RemoteError
from jobsafe_ops.monitor.fleet import batch_glob, build, fleet_view
from jobsafe_ops.monitor.watch import HostResult
from tests.status_data import QUEUED, RUNNING, done, snap_of, state, task


def board() -> list[HostResult]:
    a = state(task(0, "sw:1", done("Success")), task(1, "sw:2", done({"Failed": 3})),
              task(2, "sw:3", RUNNING), task(3, "other:9", done({"Failed": 1})))
    b = state(task(0, "sw:4", done("Success")), task(1, "sw:5", QUEUED),
              task(2, "sw:3", done({"Failed": 1})))
    return [HostResult("a", snapshot=snap_of(a, host="a")),
            HostResult("b", snapshot=snap_of(b, host="b")),
            HostResult("c", error=RemoteError("c: unreachable"))]


def test_totals_per_host_counts_and_failures_with_their_host() -> None:
    fb = build(board(), "p1")
    assert fb.per_host["a"] == {"success": 1, "failed": 2, "running": 1}
    assert fb.per_host["b"] == {"success": 1, "queued": 1, "failed": 1}
    assert fb.totals == {"success": 2, "failed": 3, "running": 1, "queued": 1}
    assert {(f.label, f.host, f.exit_code) for f in fb.failures} == {
        ("sw:2", "a", 3), ("other:9", "a", 1), ("sw:3", "b", 1)}
    assert fb.unread == {"c": "c: unreachable"}
    assert fb.twice == (("sw:3", ("a", "b")),)  # running on a, failed on b: it ran twice
    assert fb.exit_code == 5  # the per-host rule: one host unread among several
    d = fb.to_dict()
    assert d["failures"][0]["host"] in ("a", "b") and d["exit_code"] == 5


def test_a_playbook_keeps_only_its_own_labels_in_the_failures() -> None:
    fb = build(board(), "p1", labels={f"sw:{i}" for i in range(1, 6)})
    assert sorted(f.label for f in fb.failures) == ["sw:2", "sw:3"]


def test_the_view_names_each_host_and_each_failure_with_its_host() -> None:
    console = Console(width=120, record=True)
    console.print(fleet_view(build(board(), "p1")))
    text = console.export_text()
    assert "fleet: group p1 over 3 host(s)" in text
    row = next(line for line in text.splitlines() if "sw:2" in line)
    assert "│ a" in row and "3" in row
    assert "sw:3 ran on a, b" in text


def test_batch_glob_is_the_common_prefix_with_glob_characters_bracketed() -> None:
    assert batch_glob(["sw:BTC@1", "sw:ETH@2"], "sw") == "sw:*"
    glob = batch_glob(["a[1]*x", "a[1]*y"], "p")
    assert fnmatch.fnmatchcase("a[1]*x-retry-1", glob)
    assert not fnmatch.fnmatchcase("a1x", glob)
    with pytest.raises(ConfigError, match="share no common prefix.*--label-glob"):
        batch_glob(["x:1", "y:1"], "p")
