"""audit.py: by group and label, on the real pueue 4.0.4 status fixture; the rich view."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pytest
from rich.console import Console

from jobsafe_ops.facts.audit import build_audit
from jobsafe_ops.facts.views import audit_view
from jobsafe_ops.scheduler.pueue import parse_status

NOW = datetime(2026, 11, 22, 17, 42, 23, tzinfo=UTC)


def test_audit_of_mixed_state(fixtures):
    state = parse_status((fixtures / "status-mixed.json").read_text())
    audit = build_audit("bigblack", state, now=NOW)
    groups = {g.group: g for g in audit.groups}
    p1 = groups["p1"]
    assert [t.label for t in p1.running] == ["BTCUSDT@500", "ETHUSDT@500"]  # paused counts
    assert p1.running[0].runtime == pytest.approx(59.562657)  # since its start
    assert sorted((t.label, t.state, t.exit_code) for t in p1.failed) == [
        ("ETHUSDT@250", "failed", 3), ("SOLUSDT@250", "killed", None),
        ("XRPUSDT@250", "dependency_failed", None)]
    assert {t.label for t in p1.queued} == {"SOLUSDT@500", "BTCUSDT@1000", "ETHUSDT@1000",
                                             "SOLUSDT@1000"}
    assert groups["default"].counts == {"success": 1, "failed": 1, "running": 1}
    assert {t.label for t in audit.failed} >= {"default-fail", "ETHUSDT@250"}


def test_audit_single_group_and_view(fixtures):
    state = parse_status((fixtures / "status-group-p1.json").read_text())
    audit = build_audit("bigblack", state, group="p1", now=NOW)
    assert [g.group for g in audit.groups] == ["p1"]
    buf = io.StringIO()
    Console(file=buf, width=120, color_system=None).print(audit_view(audit))
    out = buf.getvalue()
    assert "audit bigblack" in out and "ETHUSDT@250" in out and "dependency_failed" in out
    data = audit.to_dict()
    assert data["groups"][0]["failed"][0]["label"] == "ETHUSDT@250"


def test_unknown_group_is_reported_missing(fixtures):
    state = parse_status((fixtures / "status-empty.json").read_text())
    (g,) = build_audit("h", state, group="p9", now=NOW).groups
    assert (g.status, g.counts) == ("missing", {})
