"""The pure half of submit-batch: per-label decisions, memory-cap policy, state hygiene,
units, and the commands file the feeder reads. No SSH here."""

from __future__ import annotations

import json
import shlex
import tomllib
from typing import Any

import pytest

from jobsafe_ops.batch.model import JobSpec, Plan
from jobsafe_ops.batch.plan import (
    BatchReport,
    Item,
    Memcap,
    command_line,
    commands_file,
    decide,
    hygiene,
    make_units,
    memcap_policy,
    parse_receipts,
    unfinished_chain,
)
from jobsafe_ops.batch.playbook import parse_playbook, plan_batch
from jobsafe_ops.hostside import feeder
from jobsafe_ops.inventory import GroupSpec, Host
from jobsafe_ops.scheduler.pueue import PueueState, add_argv, parse_state

T = "2026-11-22T10:00:00Z"


def host(**kw: Any) -> Host:
    groups = {"p1": GroupSpec("p1", 2, 1, 4), "p2": GroupSpec("p2", 1, 1, 2)}
    base: dict[str, Any] = dict(name="h", ssh="local", project_dir="~/project",
                                package="mypkg", groups=groups, memory_cap=False)
    return Host(**{**base, **kw})


PLAYBOOK = """
name = "t"
group = "p1"
command = "run {symbol}"
label = "{symbol}"
retry_budget = 2
[matrix]
symbol = ["A", "B", "C"]
[[after]]
label = "t:optimize"
command = "optimize"
[[after]]
label = "t:validate"
command = "validate"
"""


def make_plan(text: str = PLAYBOOK, h: Host | None = None) -> Plan:
    return plan_batch(parse_playbook(tomllib.loads(text), "pb.toml"), h or host())


def specs(p: Plan) -> list[JobSpec]:
    jobs = list(p.jobs)
    return [*jobs, *p.after]


_STATUS = {
    "queued": {"Queued": {"enqueued_at": T}},
    "running": {"Running": {"enqueued_at": T, "start": T}},
    "success": {"Done": {"enqueued_at": T, "start": T, "end": T, "result": "Success"}},
    "killed": {"Done": {"enqueued_at": T, "start": T, "end": T, "result": "Killed"}},
    "dependency_failed": {"Done": {"enqueued_at": T, "start": T, "end": T,
                                   "result": "DependencyFailed"}},
}


def state(*tasks: tuple[Any, ...], groups: tuple[str, ...] = ("p1",)) -> PueueState:
    """tasks: (id, label, state[, exit code or deps])."""
    raw = {}
    for t in tasks:
        tid, label, st = t[:3]
        extra = t[3] if len(t) > 3 else None
        if st == "failed":
            status = {"Done": {"enqueued_at": T, "start": T, "end": T,
                               "result": {"Failed": extra}}}
        else:
            status = _STATUS[st]
        raw[str(tid)] = {"id": tid, "label": label, "group": "p1", "status": status,
                         "command": "x", "original_command": "x", "path": "/p",
                         "dependencies": list(extra) if isinstance(extra, tuple) else []}
    return parse_state({"tasks": raw, "groups": {
        g: {"status": "Running", "parallel_tasks": 2} for g in groups}})


def by_label(items: list[Item]) -> dict[str, Item]:
    return {i.label: i for i in items}


# ---- decide ------------------------------------------------------------------------------

def test_fresh_host_adds_everything_and_chains_on_all_jobs() -> None:
    items = by_label(decide(specs(make_plan()), state(), {}, budget=2))
    assert [i.action for i in items.values()] == ["add"] * 5
    assert items["A"].new_label == "A" and items["A"].after == ()
    assert items["t:optimize"].after == ("A", "B", "C")
    assert items["t:validate"].after == ("t:optimize",)


def test_verify_before_mutate_skips_queued_running_succeeded() -> None:
    st = state((0, "A", "success"), (1, "B", "running"), (2, "C", "queued"))
    items = by_label(decide(specs(make_plan()), st, {}, budget=2))
    assert {k: i.action for k, i in items.items()} == {
        "A": "skip", "B": "skip", "C": "skip", "t:optimize": "add", "t:validate": "add"}
    assert "succeeded" in items["A"].reason and "running as B" in items["B"].reason
    # the chain waits for the active ones only: a finished task needs no wait
    assert items["t:optimize"].after == ("B", "C")


def test_rerun_of_a_converged_batch_adds_nothing() -> None:
    st = state((0, "A", "queued"), (1, "B", "queued"), (2, "C", "queued"),
               (3, "t:optimize", "queued", (0, 1, 2)), (4, "t:validate", "queued", (3,)))
    items = decide(specs(make_plan()), st, {}, budget=2)
    assert all(i.action == "skip" for i in items)
    assert commands_file(items, wrap=False, units={}) == ""


def test_receipt_without_task_means_finished_and_cleaned() -> None:
    items = by_label(decide(specs(make_plan()), state(), {"A": "0", "B-retry-1": "7"},
                            budget=2))
    assert items["A"].action == items["B"].action == "skip"
    assert "cleaned" in items["A"].reason
    assert items["C"].action == "add"
    assert items["t:optimize"].after == ("C",)


def test_transient_failure_is_re_added_with_retry_label() -> None:
    st = state((0, "A", "failed", 137), (1, "B", "killed"), (2, "C", "success"))
    items = by_label(decide(specs(make_plan()), st, {}, budget=2))
    assert items["A"].action == "add" and items["A"].new_label == "A-retry-1"
    assert items["B"].new_label == "B-retry-1"
    assert items["t:optimize"].after == ("A-retry-1", "B-retry-1")


def test_persistent_failure_is_reported_and_holds_the_chain() -> None:
    st = state((0, "A", "failed", 1), (1, "B", "success"), (2, "C", "success"))
    items = by_label(decide(specs(make_plan()), st, {}, budget=2))
    assert items["A"].action == "failed" and "persistent" in items["A"].reason
    assert items["t:optimize"].action == "held" and "A" in items["t:optimize"].reason
    assert items["t:validate"].action == "held"
    report = _report(list(items.values()))
    assert report.exit_code == 1


def test_budget_spent_is_refused() -> None:
    st = state((0, "A", "killed"), (1, "A-retry-1", "killed"), (2, "A-retry-2", "killed"),
               (3, "B", "success"), (4, "C", "success"))
    items = by_label(decide(specs(make_plan()), st, {}, budget=2))
    assert items["A"].action == "refused" and "budget" in items["A"].reason
    assert _report(list(items.values())).exit_code == 3
    # budget counted from the journal too (a lost state must not reset it)
    st = state((0, "A", "killed"), (1, "B", "success"), (2, "C", "success"))
    items = by_label(decide(specs(make_plan()), st, {}, budget=2, used={("p1", "A"): 2}))
    assert items["A"].action == "refused"


def test_dependency_failed_chain_is_resubmitted_after_the_retried_job() -> None:
    st = state((0, "A", "killed"), (1, "B", "success"), (2, "C", "success"),
               (3, "t:optimize", "dependency_failed", (0, 1, 2)),
               (4, "t:validate", "dependency_failed", (3,)))
    items = by_label(decide(specs(make_plan()), st, {}, budget=2))
    assert items["A"].new_label == "A-retry-1"
    assert items["t:optimize"].new_label == "t:optimize-retry-1"
    assert items["t:optimize"].after == ("A-retry-1",)
    assert items["t:validate"].new_label == "t:validate-retry-1"
    assert items["t:validate"].after == ("t:optimize-retry-1",)


def test_blocked_task_is_held_not_duplicated() -> None:
    # optimize queued behind a failed job (a paused group keeps it queued forever)
    st = state((0, "A", "failed", 1), (1, "B", "success"), (2, "C", "success"),
               (3, "t:optimize", "queued", (0, 1, 2)))
    items = by_label(decide(specs(make_plan()), st, {}, budget=2))
    assert items["t:optimize"].action == "held" and "blocked" in items["t:optimize"].reason
    assert _report(list(items.values())).exit_code == 1


def test_identity_is_group_and_label() -> None:
    # the same label in another group is somebody else's job
    raw = state((0, "A", "running"))
    moved = PueueState(tasks=tuple(t.__class__(**{**t.__dict__, "group": "p2"})
                                   for t in raw.tasks), groups=raw.groups, schema="v4")
    items = by_label(decide(specs(make_plan()), moved, {}, budget=2))
    assert items["A"].action == "add"


# ---- memory caps (INV-7) ----------------------------------------------------------------

CAPPED = PLAYBOOK.replace('retry_budget = 2', 'retry_budget = 2\nmemory_max = "8G"')


def test_memcap_not_required() -> None:
    m = memcap_policy(make_plan(), host(), False, "no systemd", allow_uncapped=False)
    assert not m.required and not m.wrap and m.refusal is None


def test_memcap_wraps_when_the_probe_says_it_works() -> None:
    m = memcap_policy(make_plan(CAPPED), host(), True, "ok", allow_uncapped=False)
    assert m.wrap and m.refusal is None


def test_memcap_refused_with_the_probe_reason() -> None:
    """memory_cap = true (the default) and caps that do not work: refused (INV-7) unless
    --allow-uncapped is typed."""
    m = memcap_policy(make_plan(CAPPED), host(memory_cap=True), False,
                      "Failed to connect to bus", allow_uncapped=False)
    assert not m.wrap and m.refusal and "Failed to connect to bus" in m.refusal
    assert "--allow-uncapped" in m.refusal
    allowed = memcap_policy(make_plan(CAPPED), host(memory_cap=True), False,
                            "Failed to connect to bus", allow_uncapped=True)
    assert allowed.refusal is None and not allowed.wrap and "UNCAPPED" in allowed.reason
    assert allowed.uncapped_by == "--allow-uncapped"


def test_memcap_false_in_the_host_file_runs_uncapped_and_says_so() -> None:
    """The host file's memory_cap = false is the operator's decision: a playbook with
    memory_max is not refused there (it was, exit 3, without --allow-uncapped)."""
    h = host(memory_cap=False, source="hosts/h.toml")
    m = memcap_policy(make_plan(CAPPED), h, False, "Failed to connect to bus",
                      allow_uncapped=False)
    assert m.refusal is None and not m.wrap and m.uncapped_by == "memory_cap = false"
    assert m.reason.startswith("UNCAPPED (memory_cap = false in hosts/h.toml)")
    assert "Failed to connect to bus" in m.reason
    assert m.to_dict()["uncapped_by"] == "memory_cap = false"
    # caps that work are still applied to the jobs that ask for them
    works = memcap_policy(make_plan(CAPPED), h, True, "ok", allow_uncapped=False)
    assert works.wrap and works.refusal is None and works.uncapped_by is None


def test_host_memory_cap_needs_a_value() -> None:
    m = memcap_policy(make_plan(), host(memory_cap=True), True, "ok", allow_uncapped=False)
    assert m.refusal and "memory_max" in m.refusal
    m = memcap_policy(make_plan(), host(memory_cap=True), False, "no bus",
                      allow_uncapped=False)
    assert m.refusal and "no bus" in m.refusal


def test_command_line_wrapping_and_env_scoping() -> None:
    text = CAPPED.replace('retry_budget', 'env_overrides = ["T"]\nretry_budget') + \
        '[env]\nT = "a b"\n'
    job = make_plan(text).jobs[0]
    words = shlex.split(command_line(job, wrap=True))
    assert words[:10] == ["systemd-run", "--user", "--scope", "--quiet", "-p",
                          "MemoryMax=8G", "-p", "MemorySwapMax=0", "--", "sh"]
    assert words[10] == "-c" and words[11] == "export T='a b'; run A"
    assert command_line(job, wrap=False) == "export T='a b'; run A"


# ---- state hygiene (AP-10) --------------------------------------------------------------

def test_hygiene_below_threshold_does_nothing() -> None:
    assert hygiene(state((0, "A", "success")), ["p1"], 5 * 1024**2, 10) == []
    assert hygiene(state((0, "A", "success")), ["p1"], None, 10) == []


def test_hygiene_cleans_groups_with_successes() -> None:
    out = hygiene(state((0, "A", "success")), ["p1"], 11 * 1024**2, 10)
    assert [(c.group, c.run) for c in out] == [("p1", True)]
    assert "11.0 MB > 10 MB" in out[0].reason
    assert hygiene(state((0, "A", "running")), ["p1"], 11 * 1024**2, 10) == []


def test_hygiene_never_touches_an_unfinished_chain() -> None:
    st = state((0, "A", "success"), (1, "B", "running"), (2, "t:optimize", "queued", (0, 1)))
    assert [t.label for t in unfinished_chain(st, "p1")] == ["t:optimize"]
    out = hygiene(st, ["p1"], 60 * 1024**2, 10)
    assert [(c.group, c.run) for c in out] == [("p1", False)]
    assert "t:optimize" in out[0].reason


# ---- units mode ------------------------------------------------------------------------------

def _many(n: int, extra: str = "") -> Plan:
    text = f"""
name = "big"
group = "p1"
command = "true {{i}}"
label = "job-{{i}}"
{extra}
[matrix]
i = {list(range(n))}
"""
    return make_plan(text)


def test_units_chunk_and_label_by_content() -> None:
    p = _many(1050, 'memory_max = "1G"')
    jobs = [j.__class__(**{**j.__dict__, "workdir": "/home/u/project"}) for j in p.jobs]
    units = make_units(jobs, playbook="big", size=500, parallel=8, batch_dir="/b", wrap=True)
    assert [len(u.commands) for u in units] == [500, 500, 50]
    assert len({u.spec.label for u in units}) == 3
    assert units[0].spec.label.startswith("big:unit-00000-")
    assert units[0].commands[0][0] == "job-0" and units[0].commands[0][1] == "/home/u/project"
    assert units[0].commands[0][2].startswith("systemd-run")  # every command capped
    words = shlex.split(units[0].spec.command)
    assert words[:3] == ["python3", "/b/feeder.py", "unit"] and words[-2:] == ["--parallel", "8"]
    again = make_units(jobs, playbook="big", size=500, parallel=8, batch_dir="/b", wrap=True)
    assert [u.spec.label for u in again] == [u.spec.label for u in units]
    changed = make_units(jobs[1:], playbook="big", size=500, parallel=8, batch_dir="/b",
                         wrap=True)
    assert changed[0].spec.label != units[0].spec.label


def test_units_follow_phase_order() -> None:
    text = """
name = "ph"
group = "p1"
command = "run {phase} {i}"
[matrix]
i = [1, 2, 3]
[[phases]]
name = "a"
label = "a:{i}"
[[phases]]
name = "b"
label = "b:{i}"
after_phase = "a"
"""
    jobs = [j.__class__(**{**j.__dict__, "workdir": "/w"}) for j in make_plan(text).jobs]
    units = make_units(jobs, playbook="ph", size=2, parallel=1, batch_dir="/b", wrap=False)
    a = [u for u in units if u.spec.phase == "a"]
    b = [u for u in units if u.spec.phase == "b"]
    assert len(a) == len(b) == 2
    assert all(u.spec.after == tuple(x.spec.label for x in a) for u in b)


def test_commands_file_lines() -> None:
    items = decide(specs(make_plan()), state((0, "A", "success")), {}, budget=2)
    lines = [json.loads(x) for x in commands_file(items, wrap=False, units={}).splitlines()]
    assert [x["label"] for x in lines] == ["B", "C", "t:optimize", "t:validate"]
    assert lines[0] == {"label": "B", "group": "p1", "workdir": "~/project", "after": [],
                        "command": "run B"}
    assert lines[2]["after"] == ["B", "C"]


def test_parse_receipts_ignores_junk() -> None:
    assert parse_receipts("a b\t3\nnot a receipt\nx\t\n\n") == {"a b": "3", "x": ""}


def test_feeder_add_argv_mirrors_pueue_add_argv() -> None:
    line = {"label": "a b;$(x)", "group": "p1", "workdir": "/w", "command": "run 'x'"}
    assert feeder.add_argv("pueue", line, [3, 1, 3]) == add_argv(
        "pueue", "run 'x'", group="p1", label="a b;$(x)", workdir="/w", after=[1, 3])


def _report(items: list[Item]) -> BatchReport:
    return BatchReport(host="h", playbook="t", dry=True, mode="jobs", planned=3,
                       items=tuple(items), memcap=Memcap(False, False, True, ""))


def test_exit_codes() -> None:
    assert _report([]).exit_code == 0
    refused = BatchReport(host="h", playbook="t", dry=True, mode="jobs", planned=0,
                          items=(), memcap=Memcap(True, False, False, "x", refusal="x"))
    assert refused.exit_code == 3
    errors = BatchReport(host="h", playbook="t", dry=False, mode="jobs", planned=0, items=(),
                         memcap=Memcap(False, False, True, ""), errors=(("A", "boom"),))
    assert errors.exit_code == 4


@pytest.mark.parametrize("n", [0, 1])
def test_report_to_dict_is_json(n: int) -> None:
    items = decide(specs(make_plan()), state(), {}, budget=2)[: n + 1]
    d = _report(items).to_dict()
    assert json.loads(json.dumps(d))["counts"]["add"] == n + 1


def test_rich_view_of_a_dry_run() -> None:
    from io import StringIO

    from rich.console import Console

    from jobsafe_ops.batch.view import batch_view

    st = state((0, "A", "success"), (1, "B", "failed", 1))
    items = decide(specs(make_plan()), st, {}, budget=2)
    report = BatchReport(host="h", playbook="t", dry=True, mode="jobs", planned=3,
                         items=tuple(items), groups=("p1",), new_groups=(("p1", 2),),
                         memcap=Memcap(True, False, False, "no bus", refusal="no bus"),
                         sample=("run C",), batch_dir="/b")
    buf = StringIO()
    Console(file=buf, width=100, color_system=None).print(batch_view(report))
    text = buf.getvalue()
    assert "submit-batch t -> h (dry run: nothing changed)" in text
    assert "p1 (new: parallel 2)" in text and "refused: no bus" in text
    assert "run C" in text and "would skip:" in text and "succeeded as A" in text
    assert "not submitted:" in text and "persistent failure" in text
