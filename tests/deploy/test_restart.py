"""jobsafe_ops.deploy.restart: journal-driven convergence after an interrupted run."""

from __future__ import annotations

from jobsafe_ops.deploy.restart import paused_by_deploy, pending_kills


def test_pending_kills_and_paused_groups_from_the_journal() -> None:
    entries = [
        {"action": "kill", "result": "recorded",
         "tasks": [{"group": "p1", "label": "A"}, {"group": "p1", "label": "B"}]},
        {"action": "group-pause", "group": "p1"},
        {"action": "kill", "result": "ok", "labels": ["A", "B"]},
        {"action": "re-add", "result": "ok", "group": "p1", "from_label": "A",
         "labels": ["A-retry-1"]},
        {"action": "group-pause", "group": "p2"},
        {"action": "group-start", "group": "p2"},
    ]
    assert pending_kills(entries) == [("p1", "B")]
    assert paused_by_deploy(entries) == ["p1"]
