"""jobsafe_ops.batch.retry: classification, -retry-N labels, budget, idempotency (pure)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobsafe_ops.batch.retry import (
    DEPENDENCY,
    PERSISTENT,
    RE_ADD_ACTION,
    TRANSIENT,
    attempt_of,
    base_label,
    classify,
    plan_retries,
    retry_label,
    used_from_journal,
)
from jobsafe_ops.scheduler.pueue import Group, PueueState, Task, parse_status


def task(id: int, label: str | None, state: str, exit_code: int | None = None,
         group: str = "p1", command: str = "python job.py", path: str = "/h/project") -> Task:
    return Task(id=id, group=group, label=label, command=command, path=path, state=state,
                exit_code=exit_code)


def state(*tasks: Task) -> PueueState:
    groups = {g: Group(g, "Running", 2) for g in {t.group for t in tasks} | {"p1"}}
    return PueueState(tasks=tuple(tasks), groups=groups, schema="v4")


def decisions(plan):  # type: ignore[no-untyped-def]
    return {(d.group, d.label): (d.action, d.new_label) for d in plan.decisions}


# ---- labels -----------------------------------------------------------------------------

@pytest.mark.parametrize("label, base, n", [
    ("BTC@250", "BTC@250", 0),
    ("BTC@250-retry-1", "BTC@250", 1),
    ("BTC@250-retry-12", "BTC@250", 12),
    ("BTC@250:2019-retry-3", "BTC@250:2019", 3),
    ("a-retry-x", "a-retry-x", 0),  # not a number: part of the job's own label
    ("a-retry-0", "a-retry-0", 0),  # we never produce retry 0
    ("-retry-2", "-retry-2", 0),  # nothing before the suffix: not ours
])
def test_base_label_and_attempt(label: str, base: str, n: int) -> None:
    assert base_label(label) == base
    assert attempt_of(label) == n


def test_retry_label_strips_an_existing_suffix_instead_of_stacking() -> None:
    assert retry_label("BTC@250", 1) == "BTC@250-retry-1"
    assert retry_label("BTC@250-retry-1", 2) == "BTC@250-retry-2"
    with pytest.raises(ValueError):
        retry_label("x", 0)


@given(st.text(min_size=1, max_size=30).filter(lambda s: "\n" not in s),
       st.integers(min_value=1, max_value=10_000))
def test_retry_label_round_trips(label: str, n: int) -> None:
    new = retry_label(label, n)
    assert attempt_of(new) == n
    assert base_label(new) == base_label(label)


# ---- classification ---------------------------------------------------------------------

@pytest.mark.parametrize("state_, code, kind", [
    ("failed", 137, TRANSIENT),  # SIGKILL / OOM (G-10)
    ("failed", 143, TRANSIENT),  # SIGTERM
    ("killed", None, TRANSIENT),
    ("failed", 1, PERSISTENT),
    ("failed", 2, PERSISTENT),  # missing script (AP-11)
    ("failed_to_spawn", None, PERSISTENT),
    ("errored", None, PERSISTENT),
    ("dependency_failed", None, DEPENDENCY),
])
def test_classify(state_: str, code: int | None, kind: str) -> None:
    assert classify(task(0, "x", state_, code)) == kind


def test_real_pueue_fixture_plan(fixtures: Path) -> None:
    s = parse_status((fixtures / "status-mixed.json").read_text())
    plan = plan_retries(s)
    got = decisions(plan)
    # killed SOLUSDT@250 is transient: re-added; ETHUSDT@250 exit 3 is not (no --retry-all)
    assert got[("p1", "SOLUSDT@250")] == ("add", "SOLUSDT@250-retry-1")
    assert got[("p1", "ETHUSDT@250")] == ("skip", None)
    assert got[("default", "default-fail")] == ("skip", None)
    # a dependency failure is never re-added alone (it would skip its --after chain)
    assert got[("p1", "XRPUSDT@250")] == ("skip", None)
    # running / queued / succeeded labels are not candidates at all
    assert ("p1", "BTCUSDT@500") not in got and ("p1", "BTCUSDT@250") not in got
    add = plan.to_add[0]
    assert add.command == "sleep 300" and add.workdir.startswith("/")

    everything = decisions(plan_retries(s, retry_all=True))
    assert everything[("p1", "ETHUSDT@250")] == ("add", "ETHUSDT@250-retry-1")
    assert everything[("p1", "XRPUSDT@250")] == ("skip", None)


# ---- idempotency: a rerun converges ----------------------------------------------------

@pytest.mark.parametrize("newer", ["queued", "running", "paused", "stashed"])
def test_label_already_requeued_is_not_added_again(newer: str) -> None:
    s = state(task(0, "X", "killed"), task(5, "X-retry-1", newer))
    plan = plan_retries(s)
    assert plan.to_add == []
    assert plan.skipped[0].reason.startswith(f"already {newer}")


def test_latest_attempt_succeeded_means_done() -> None:
    s = state(task(0, "X", "killed"), task(1, "X-retry-1", "success", 0))
    assert plan_retries(s).decisions == ()


def test_latest_failed_attempt_gets_the_next_number() -> None:
    s = state(task(0, "X", "killed"), task(1, "X-retry-1", "failed", 137))
    assert decisions(plan_retries(s))[("p1", "X-retry-1")] == ("add", "X-retry-2")


def test_groups_are_separate_identities() -> None:
    s = state(task(0, "X", "killed", group="p1"), task(1, "X", "running", group="p2"))
    got = decisions(plan_retries(s))
    assert got == {("p1", "X"): ("add", "X-retry-1")}
    assert decisions(plan_retries(s, groups=["p2"])) == {}


def test_unlabelled_tasks_are_never_planned() -> None:
    assert plan_retries(state(task(0, None, "killed"))).decisions == ()


# ---- budget ------------------------------------------------------------------------------

def test_budget_counts_the_journal_across_runs() -> None:
    s = state(task(0, "X", "killed"))
    entries = [
        {"action": RE_ADD_ACTION, "result": "ok", "host": "h", "group": "p1",
         "labels": ["X-retry-1"]},
        {"action": RE_ADD_ACTION, "result": "ok", "host": "h", "group": "p1",
         "labels": ["X-retry-2"]},
        {"action": RE_ADD_ACTION, "result": "failed", "host": "h", "group": "p1",
         "labels": ["X-retry-3"]},  # a failed add spent nothing
        {"action": RE_ADD_ACTION, "result": "ok", "host": "other", "group": "p1",
         "labels": ["X-retry-1"]},
        {"action": "kill", "result": "ok", "host": "h", "group": "p1", "labels": ["X"]},
    ]
    used = used_from_journal(entries, host="h")
    assert used == {("p1", "X"): 2}
    plan = plan_retries(s, used=used, budget=3)
    assert decisions(plan)[("p1", "X")] == ("add", "X-retry-3")
    spent = plan_retries(s, used=used, budget=2)
    assert spent.to_add == [] and spent.exhausted[0].base == "X"
    assert "budget spent (2/2)" in spent.exhausted[0].reason


def test_budget_counts_the_state_when_the_journal_is_lost() -> None:
    s = state(task(0, "X", "failed", 137), task(1, "X-retry-3", "failed", 137))
    plan = plan_retries(s, budget=3, used={})
    assert plan.exhausted and plan.exhausted[0].used == 3


def test_runaway_is_bounded() -> None:
    """The 2026-03-04 incident: blind restarts grew 60 jobs to ~12,800. Re-running the
    planner on its own output adds at most `budget` attempts per label, ever."""
    tasks = [task(i, f"J{i}", "failed", 137) for i in range(60)]
    next_id = 60
    used: dict[tuple[str, str], int] = {}
    for _ in range(10):
        plan = plan_retries(state(*tasks), budget=3, used=used)
        for d in plan.to_add:
            assert d.new_label is not None
            used[(d.group, d.base)] = used.get((d.group, d.base), 0) + 1
            tasks.append(task(next_id, d.new_label, "failed", 137))  # it fails again
            next_id += 1
    assert len(tasks) == 60 * 4
    assert len(plan_retries(state(*tasks), budget=3, used=used).exhausted) == 60


def test_forced_labels_are_retried_whatever_their_exit_code() -> None:
    s = state(task(0, "X", "failed", 1))
    assert plan_retries(s).to_add == []
    forced = plan_retries(s, forced=[("p1", "X")])
    assert decisions(forced)[("p1", "X")] == ("add", "X-retry-1")
    assert "killed by this deploy" in forced.to_add[0].reason


def test_negative_budget_is_rejected() -> None:
    with pytest.raises(ValueError):
        plan_retries(state(), budget=-1)


def test_plan_to_dict_is_json_ready() -> None:
    import json

    plan = plan_retries(state(task(0, "X", "killed")))
    d = json.loads(json.dumps(plan.to_dict()))
    assert d["decisions"][0]["new_label"] == "X-retry-1"


# ---- the re-add keeps the playbook's pass_env names, never values or secrets ---------------

def test_re_add_carries_the_failed_tasks_pass_env_names() -> None:
    lean = ("HOME", "PATH", "LANG")
    t = Task(id=0, group="p1", label="X", command="python job.py", path="/h/project",
             state="killed",
             env_names=(*lean, "CUDA_VISIBLE_DEVICES", "GH_TOKEN", "OMP_NUM_THREADS"))
    (d,) = plan_retries(state(t)).to_add
    assert d.env_names == ("CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS")  # no lean, no secret


def test_a_whole_login_environment_is_not_carried() -> None:
    # a task added by hand over SSH holds the session's whole environment: the retry stays lean
    names = tuple(f"VAR_{i}" for i in range(40))
    t = Task(id=0, group="p1", label="X", command="c", path="/h", state="killed",
             env_names=names)
    (d,) = plan_retries(state(t)).to_add
    assert d.env_names == ()


def test_status_parse_keeps_env_names_not_values() -> None:
    from tests.status_data import done
    from tests.status_data import state as status_state
    from tests.status_data import task as status_task

    raw = status_task(3, "X", done({"Failed": 1}))
    raw["envs"] = {"PATH": "/usr/bin", "API_TOKEN": "s3cr3t"}
    (parsed,) = parse_status(json.dumps(status_state(raw))).tasks
    assert parsed.env_names == ("API_TOKEN", "PATH")
    assert "s3cr3t" not in repr(parsed)
