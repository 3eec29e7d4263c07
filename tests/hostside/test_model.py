"""The one pueue status model (hostside/model.py): states, "blocked", the label grammar.
The audit side (scheduler.pueue.parse_status) and the monitor side (monitor_filter.summarize)
both judge through it, so they must say the same thing on every case."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from jobsafe_ops.hostside import model
from jobsafe_ops.hostside import monitor_filter as mf
from jobsafe_ops.scheduler.pueue import parse_status
from tests.status_data import NOW, QUEUED, RUNNING, done, state, task

STASHED = {"Stashed": {"enqueue_at": None}}


def audit_states(data: dict[str, Any]) -> dict[str, str]:
    parsed = parse_status(json.dumps(data))
    return {t.label or "": parsed.state_of(t) for t in parsed.tasks}


def test_an_absent_dependency_does_not_block_on_either_side() -> None:
    """The case audit and monitor disagreed on: a queued task whose dependency is not in a
    full listing. pueue 4.0.4 starts such a task (its scheduler skips absent ids), so it is
    queued, not blocked forever - and pueue cannot even produce it: `--after` on an absent
    id is refused (errors.txt) and `clean` keeps tasks that unfinished ones depend on."""
    data = state(task(5, "opt", QUEUED, deps=(77,)), groups={"p1": "Paused"})
    assert audit_states(data) == {"opt": "queued"}
    summary, _ = mf.summarize(data, "p1", now=NOW)
    g = summary["groups"]["p1"]
    assert g["counts"] == {"queued": 1} and g["blocked"] == []
    assert model.blocked_ids({5: ("queued", (77,))}) == set()


def test_a_failed_dependency_blocks_transitively_on_both_sides() -> None:
    # paused group: pueue does not mark them DependencyFailed, they wait forever
    data = state(task(1, "a", done({"Failed": 2})), task(2, "b", QUEUED, deps=(1,)),
                 task(3, "c", STASHED, deps=(2,)), task(4, "d", QUEUED, deps=(9, 2)),
                 task(5, "e", RUNNING, deps=(1,)), task(6, "f", QUEUED, deps=(5,)),
                 groups={"p1": "Paused"})
    want = {"a": "failed", "b": "blocked", "c": "blocked", "d": "blocked", "e": "running",
            "f": "queued"}
    assert audit_states(data) == want
    summary, _ = mf.summarize(data, "p1", now=NOW)
    g = summary["groups"]["p1"]
    assert {e["label"]: e["state"] for e in g["blocked"]} == {"b": "blocked", "c": "blocked",
                                                               "d": "blocked"}
    # what blocks each one, by label (the absent 9 is not a cause)
    assert {e["label"]: e["after"] for e in g["blocked"]} == {"b": ["a"], "c": ["b"],
                                                               "d": ["b"]}


@pytest.mark.parametrize(("raw", "want"), [
    ({"status": {"Queued": {"enqueued_at": "T"}}}, ("queued", None, "v4")),
    ({"status": {"Locked": {"previous_status": {"Queued": {}}}}}, ("locked", None, "v4")),
    ({"status": {"Done": {"start": "S", "result": {"Failed": 3}}}}, ("failed", 3, "v4")),
    ({"status": {"Done": {"result": "DependencyFailed"}}}, ("dependency_failed", None, "v4")),
    ({"status": {"Done": {"result": {"FailedToSpawn": "no sh"}}}},
     ("failed_to_spawn", None, "v4")),
    ({"status": "Running", "start": "S"}, ("running", None, "v3")),
    ({"status": {"Done": {"Failed": 2}}, "start": "S"}, ("failed", 2, "v3")),
    ({"status": {"Done": "Success"}}, ("success", 0, "v3")),
    ({"status": {"Stashed": {"enqueue_at": None}}, "prev_status": "Queued"},
     ("stashed", None, "v3")),
])
def test_task_status_normalises_v3_and_v4(raw: dict[str, Any], want: tuple[Any, ...]) -> None:
    state_, fields, schema = model.task_status(raw)
    assert (state_, fields["exit_code"], schema) == want
    assert mf.task_state(raw)[:2] == want[:2]  # the filter's view is the same model


def test_unknown_statuses_are_refused_by_audit_and_counted_by_the_monitor() -> None:
    for raw in ({"status": {"Done": {"result": {"Odd": 1}}}}, {"status": {"A": 1, "B": 2}},
                {"status": None}):
        with pytest.raises(ValueError, match="unknown task"):
            model.task_status(raw)
        assert mf.task_state(raw) == ("unknown", None, None)


@pytest.mark.parametrize(("label", "base", "attempt"), [
    ("X", "X", 0), ("X-retry-1", "X", 1), ("X-retry-12", "X", 12),
    ("X-retry-0", "X-retry-0", 0), ("X-retry-01", "X-retry-01", 0),
    ("-retry-1", "-retry-1", 0), ("X-retry-1-retry-2", "X-retry-1", 2),
    ("X-retry-x", "X-retry-x", 0), ("a b;$(x)-retry-3", "a b;$(x)", 3),
])
def test_the_retry_grammar(label: str, base: str, attempt: int) -> None:
    assert (model.base_label(label), model.attempt_of(label)) == (base, attempt)
    assert model.retry_label(label, 4) == f"{base}-retry-4"
    assert model.attempt_of(model.retry_label(label, 4)) == 4


def test_retry_label_refuses_zero_and_unlabelled_is_attempt_zero() -> None:
    with pytest.raises(ValueError, match=">= 1"):
        model.retry_label("X", 0)
    assert model.attempt_of(None) == 0


def test_parse_ts_takes_pueue_nanoseconds_and_zones() -> None:
    ns = model.parse_ts("2026-11-22T17:41:17.120011444Z")
    assert ns == datetime(2026, 11, 22, 17, 41, 17, 120011, tzinfo=UTC)
    plus2 = model.parse_ts("2026-11-22T19:41:17.5+02:00")
    assert plus2 is not None and plus2.utcoffset() == timedelta(hours=2)
    assert plus2 == datetime(2026, 11, 22, 17, 41, 17, 500000, tzinfo=timezone.utc)  # noqa: UP017
    assert model.parse_ts("2026-11-22T17:41:17") == datetime(2026, 11, 22, 17, 41, 17,
                                                             tzinfo=UTC)
    for bad in ("", None, "yesterday", 12):
        assert model.parse_ts(bad) is None


def test_unit_labels_are_what_the_filter_recognises() -> None:
    """The planner names units with unit_label; the host-side ledger merge finds them by
    UNIT_RE: one grammar, so a unit's failures are always replaced by its commands."""
    for phase in ("", "post"):
        label = model.unit_label("play", phase, 7, "0123abcd")
        assert label == ("play:post:unit-00007-0123abcd" if phase else "play:unit-00007-0123abcd")
        assert model.UNIT_RE.search(label)
        assert model.UNIT_RE.search(model.base_label(model.retry_label(label, 2)))
    with pytest.raises(ValueError, match="8 hex"):
        model.unit_label("play", "", 1, "XYZ")
    assert not model.UNIT_RE.search("play:unit-7-0123abcd")
