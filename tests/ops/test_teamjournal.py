"""The team journal's pure parts (ops/teamjournal.py), the mirror line a session sends in
front of its next command, and the argument checks of cancel, pause/resume and logs."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from jobsafe_ops import mirror
from jobsafe_ops.deploy.lock import LockOwner, LockState
from jobsafe_ops.errors import ConfigError, RefusedError
from jobsafe_ops.ops import cancel, logs, pause, teamjournal

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def readd(minutes_ago: float, labels: list[str], result: str = "ok") -> dict[str, object]:
    return {"time": (NOW - timedelta(minutes=minutes_ago)).isoformat(), "action": "re-add",
            "labels": labels, "result": result, "operator": "a@b"}


def test_since_takes_a_time_or_a_span() -> None:
    assert teamjournal.parse_since("6h", NOW) == "2026-12-02T06:00:00+00:00"
    assert teamjournal.parse_since("90m", NOW) == "2026-12-02T10:30:00+00:00"
    assert teamjournal.parse_since("2026-12-01T08:00", NOW) == "2026-12-01T08:00:00+00:00"
    assert teamjournal.parse_since(None, NOW) is None
    with pytest.raises(ConfigError, match="--since 'yesterday'"):
        teamjournal.parse_since("yesterday", NOW)


def test_the_host_wide_readd_budget_counts_every_operator() -> None:
    entries = [readd(10, ["a-retry-1", "b-retry-1"]), readd(50, ["c-retry-1"]),
               readd(70, ["old-retry-1"]), readd(5, ["x-retry-1"], result="failed"),
               {"time": NOW.isoformat(), "action": "cancel", "labels": ["z"]}]
    assert teamjournal.readds_last_hour(entries, NOW) == 3
    teamjournal.check_readd_budget("h", entries, 2, limit=5, now=NOW)
    with pytest.raises(RefusedError, match="max_readds_per_hour = 5 has 2 left"):
        teamjournal.check_readd_budget("h", entries, 3, limit=5, now=NOW)
    teamjournal.check_readd_budget("h", entries, 0, limit=0, now=NOW)  # nothing to add


def test_host_and_local_entries_merge_once() -> None:
    shared = readd(1, ["a-retry-1"])
    merged = teamjournal.merged([shared, readd(2, ["b-retry-1"])], [dict(shared),
                                                                   readd(3, ["c-retry-1"])])
    assert sorted(e["labels"][0] for e in merged) == ["a-retry-1", "b-retry-1", "c-retry-1"]


def test_entries_wait_for_an_open_session_and_ride_on_its_next_command(
        tmp_path: Path) -> None:
    mirror.queue({"host": "h", "action": "clean"})  # no session: not kept
    assert mirror.pending_line("h") == ""
    mirror.opened("h")
    try:
        mirror.queue({"host": "h", "action": "clean", "labels": ["it's $(x)"]})
        line = mirror.pending_line("h")
        assert line and mirror.pending_line("h") == ""  # taken once
    finally:
        mirror.closed("h")
    journal = tmp_path / "journal.ndjson"
    line = line.replace(" append >", f" append --journal {journal} >")
    proc = subprocess.run(["sh", "-c", line + "echo its own output; exit 3"],
                          capture_output=True, text=True, timeout=30)
    assert (proc.returncode, proc.stdout) == (3, "its own output\n")
    [entry] = [json.loads(x) for x in journal.read_text().splitlines()]
    assert entry["labels"] == ["it's $(x)"] and entry["where"] == "laptop"


def test_resume_waits_only_for_another_operators_live_lock() -> None:
    owner = LockOwner("other@laptop", 1, "laptop", "t", 3600, "tok")
    held = LockState("p", True, owner)
    assert "other@laptop" in (pause.blocking(held, "me@here") or "")
    assert pause.blocking(held, "other@laptop") is None  # my own deploy's lock
    assert pause.blocking(LockState("p", True, owner, stale="old"), "me@here") is None
    assert pause.blocking(LockState("p", False), "me@here") is None
    assert pause.blocking(LockState("p", True, None), "me@here")  # an acquire in progress


def test_cancel_takes_exactly_one_selector() -> None:
    with pytest.raises(ConfigError, match="exactly one of --label"):
        cancel.selector(None, None, "p1")
    with pytest.raises(ConfigError, match="exactly one of --label"):
        cancel.selector("a*", "sweep", None)
    with pytest.raises(ConfigError, match="--group '' is empty"):
        cancel.selector("a*", None, " ")
    assert cancel.selector("a*", None, "p1") == {"group": "p1", "glob": "a*"}
    assert cancel.selector(None, "gone-book", None)["batch"] == "gone-book"
    with pytest.raises(ConfigError):
        cancel.selector(None, "../x y", None)


def test_logs_needs_a_label() -> None:
    with pytest.raises(ConfigError, match="--label is required"):
        logs.check_args("", None, None)
    with pytest.raises(ConfigError, match="--attempt -1"):
        logs.check_args("x", None, -1)
    logs.check_args("x", "p1", 0)
