"""Progress per group (ops/eta.py, monitor_filter.recent): percent done, jobs per hour over
the last window measured on the host's clock, ETA; the board and --json carry them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from jobsafe_ops.hostside import monitor_filter as mf
from jobsafe_ops.ops.eta import duration, progress

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def ago(minutes: float) -> datetime:
    return NOW - timedelta(minutes=minutes)


def test_the_window_counts_recent_ends_over_the_span_they_took() -> None:
    ended = [(ago(5), ago(10)), (ago(20), ago(30)), (ago(90), ago(100))]  # (end, start)
    assert mf.recent(ended, NOW) == {"window": 3600.0, "ended": 2, "span": 1500.0}
    old = [(ago(5), ago(300))]  # a long job: from the window's start, not its own start
    assert mf.recent(old, NOW)["span"] == 3300.0
    assert mf.recent([], NOW) == {"window": 3600.0, "ended": 0, "span": 0.0}


def test_percent_rate_and_eta() -> None:
    p = progress({"success": 30, "failed": 10, "running": 4, "queued": 56}, 100,
                 {"window": 3600, "ended": 20, "span": 1800})
    assert (p.percent, p.per_hour, p.remaining) == (40.0, 40.0, 60)
    assert p.eta_seconds == 5400.0 and p.text() == "40% · 40/h · ETA 1h30m"
    settled = progress({"success": 3, "blocked": 1}, 4, {"window": 3600, "ended": 0,
                                                         "span": 3600})
    assert (settled.percent, settled.eta_seconds, settled.text()) == (75.0, 0.0, "75% · -/h · done")
    stuck = progress({"queued": 5}, 5, {})
    assert (stuck.percent, stuck.per_hour, stuck.eta_seconds) == (0.0, None, None)
    assert progress({}, 0, None).percent is None


def test_durations_read_at_a_glance() -> None:
    assert [duration(s) for s in (42, 90, 3900, 200000)] == ["42s", "1m30s", "1h05m", "2d07h"]


def test_the_summary_carries_the_window_per_group() -> None:
    def task(tid: int, label: str, status: object) -> dict[str, object]:
        return {"id": tid, "group": "p1", "label": label, "status": status,
                "dependencies": []}

    done = {"Done": {"start": ago(30).isoformat(), "end": ago(10).isoformat(),
                     "result": "Success"}}
    data = {"groups": {"p1": {"status": "Running", "parallel_tasks": 2}},
            "tasks": {"0": task(0, "a", done), "1": task(1, "b", {"Queued": {}}),
                      "2": task(2, "c", {"Done": {**done["Done"], "result": {"Failed": 1}}})}}
    summary, _ = mf.summarize(data, "p1", now=NOW)
    assert summary["groups"]["p1"]["recent"] == {"window": 3600.0, "ended": 2, "span": 1200.0}
