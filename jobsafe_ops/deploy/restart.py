"""RESTART (step 7): re-add, fresh, the failed tasks of every group and those DECIDE
killed (`pueue add` of the same command, group and working dir as <label>-retry-N; planned
by retry.py: classified, budgeted, idempotent), then resume the groups a kill paused. A run
interrupted between its kill and its RESTART is converged from the journal by the next
one. `inv retry-failed` runs `restart_group` alone."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from .. import journal
from ..batch import retry as retries
from ..errors import ConfigError
from ..facts import programs
from ..facts.audit import read_state
from ..facts.ledger import read_merged, relabel
from ..ops import teamjournal
from ..remote import lean_env_line
from ..scheduler.pueue import PueueState, add_argv, parse_task_id, start_group_argv
from .context import DeployContext, KilledTask, ReAdded, Step, StepResult

# ---- 7. RESTART ---------------------------------------------------------------------

def restart(ctx: DeployContext) -> StepResult:
    """Re-add, fresh, the failed tasks of every group and those DECIDE killed: same group,
    command and absolute working dir, label <label>-retry-N; classified, budgeted,
    idempotent (see retry.py). Then resume the groups the kill paused."""
    assert ctx.audit is not None and ctx.state is not None
    entries = list(journal.entries(host=ctx.host.name))
    forced = sorted({(k.group, k.label) for k in ctx.killed} | set(pending_kills(entries)))
    plan = retries.RetryPlan((), ctx.options.retry_budget, ctx.options.retry_all)
    if ctx.audit.failed or forced:
        if ctx.options.dry:
            state = as_killed(ctx.state, ctx.killed)
        else:
            state = read_state(ctx.remote)  # re-check at mutate time: labels added meanwhile
            ctx.state = state
        shared, on_host = teamjournal.team_readds(ctx.remote, entries)  # every operator's
        plan = retries.plan_retries(state, budget=ctx.options.retry_budget,
                                    used=retries.used_from_journal(shared),
                                    retry_all=ctx.options.retry_all, forced=forced)
        teamjournal.guard_readds(ctx.remote, on_host, len(plan.to_add))
        readd(ctx, plan)
    ctx.exhausted = [f"{d.group}/{d.label}" for d in plan.exhausted]
    resumed = _resume_groups(ctx)
    data = {"plan": plan.to_dict(), "re_added": [r.to_dict() for r in ctx.re_added],
            "errors": ctx.add_errors, "resumed": resumed}
    result = _restart_result(ctx, plan, data)
    if resumed:
        result = replace(result, detail=f"{result.detail}; resumed {', '.join(resumed)}")
    return result


def _restart_result(ctx: DeployContext, plan: retries.RetryPlan,
                    data: dict[str, Any]) -> StepResult:
    parts = []
    if ctx.options.dry and plan.to_add:
        parts.append(f"would re-add {', '.join(d.new_label or '' for d in plan.to_add)}")
    elif ctx.re_added:
        parts.append(f"re-added {', '.join(r.label for r in ctx.re_added)}")
    skipped = plan.skipped
    if skipped:
        parts.append(f"{len(skipped)} not retried ("
                     + "; ".join(f"{d.label}: {d.reason}" for d in skipped[:3])
                     + (" ..." if len(skipped) > 3 else "") + ")")
    if plan.exhausted:
        parts.append(f"retry budget spent: {', '.join(ctx.exhausted)}")
    if ctx.add_errors:
        parts.append(f"{len(ctx.add_errors)} add(s) failed: {'; '.join(ctx.add_errors)}")
    status = ("warn" if ctx.add_errors or plan.exhausted
              else "dry" if ctx.options.dry and plan.to_add
              else "changed" if ctx.re_added else "ok")
    return StepResult("restart", status, detail="; ".join(parts) or "nothing to re-add",
                      data=data)


def readd(ctx: DeployContext, plan: retries.RetryPlan) -> None:
    """Fresh `pueue add` per planned retry (never `pueue restart`: in v4 it drops the
    dependencies and, looped, caused the 60 -> 12,800 task runaway), in the lean add
    environment plus the failed task's `pass_env` names (retry.carried_env). The first add
    carries the check that every command's first program resolves (item 3): a job that
    would exit 127 refuses the whole re-add (exit 2) before anything is queued."""
    checks, check_of = programs.job_checks(
        [(d.new_label or d.label, d.workdir, d.command, "") for d in plan.to_add])
    guard = programs.guard(checks) if checks and not ctx.options.dry else ""
    for d in plan.to_add:
        assert d.new_label is not None
        try:
            # a wrapped job records its outcome under its new label (ledger.relabel)
            argv = add_argv(ctx.host.pueue, relabel(d.command, d.new_label, d.group),
                            group=d.group, label=d.new_label, workdir=d.workdir)
        except ConfigError as exc:
            ctx.add_errors.append(f"{d.group}/{d.label}: {exc}")
            continue
        if ctx.options.dry:
            ctx.would(argv)
            continue
        # lean env: the SSH session's environment (and any secret in it) must not be
        # stored with the task; the old task's `envs` are never copied either
        r = ctx.remote.run(guard + lean_env_line(argv, d.env_names), check=False)
        if guard:
            guard = ""
            refused = programs.guarded_refusal(ctx.host, checks, check_of, r.stdout,
                                               [x.new_label or x.label for x in plan.to_add])
            if refused:
                raise ConfigError(refused)
        if not r.ok:
            why = (r.stderr.strip() or r.stdout.strip() or f"exit {r.exited}").splitlines()
            ctx.add_errors.append(f"{d.group}/{d.new_label}: {why[-1] if why else ''}")
            journal.append(ctx.host.name, retries.RE_ADD_ACTION, [d.new_label],
                           result="failed", group=d.group, from_label=d.label,
                           reason=why[-1] if why else "")
            continue
        task_id = parse_task_id(r.stdout)
        ctx.re_added.append(ReAdded(d.group, d.new_label, d.label, task_id))
        journal.append(ctx.host.name, retries.RE_ADD_ACTION, [d.new_label], result="ok",
                       group=d.group, from_label=d.label, task_id=task_id, reason=d.reason)


def _resume_groups(ctx: DeployContext) -> list[str]:
    """Resume the groups a deploy paused (this run or an interrupted one), if still paused.
    Also G-5: a kill can leave its group paused, and re-added jobs would then wait forever."""
    assert ctx.state is not None
    wanted = paused_by_deploy(list(journal.entries(host=ctx.host.name)))
    if ctx.options.dry:
        wanted = sorted(set(wanted) | {k.group for k in ctx.killed})
    resumed = []
    for name in wanted:
        g = ctx.state.groups.get(name)
        argv = start_group_argv(ctx.host.pueue, name)
        if g is None:
            continue
        if ctx.options.dry:
            ctx.would(argv)
            continue
        if g.status == "Paused":
            ctx.remote.run(argv)
        journal.append(ctx.host.name, "group-start", [], group=name,
                       reason="resumed after deploy re-added its tasks")
        resumed.append(name)
        if name in ctx.paused:
            ctx.paused.remove(name)
    return resumed


# ---- inv retry-failed: the RESTART of one group -------------------------------------

def restart_group(group: str) -> Step:
    def restart(ctx: DeployContext) -> StepResult:
        state = ctx.state if ctx.options.dry else read_state(ctx.remote, group)
        assert state is not None
        state = read_merged(ctx.remote, state, group)  # failures a clean removed, too
        shared, on_host = teamjournal.team_readds(
            ctx.remote, journal.entries(host=ctx.host.name, action=retries.RE_ADD_ACTION))
        plan = retries.plan_retries(state, groups=[group], budget=ctx.options.retry_budget,
                                    used=retries.used_from_journal(shared),
                                    retry_all=ctx.options.retry_all)
        teamjournal.guard_readds(ctx.remote, on_host, len(plan.to_add))
        readd(ctx, plan)
        ctx.exhausted = [f"{d.group}/{d.label}" for d in plan.exhausted]
        return _restart_result(ctx, plan, {"plan": plan.to_dict(), "re_added": [
            r.to_dict() for r in ctx.re_added], "errors": ctx.add_errors})
    return restart


# ---- planning inputs: the journal and the killed state ------------------------------

def journal_used(ctx: DeployContext) -> dict[retries.Key, int]:
    return retries.used_from_journal(
        journal.entries(host=ctx.host.name, action=retries.RE_ADD_ACTION))


def pending_kills(entries: Sequence[dict[str, Any]]) -> list[retries.Key]:
    """(group, label) killed by a deploy and not re-added since (journal, in order): a run
    interrupted between its kill and its RESTART leaves them to the next run, which
    re-adds them whatever exit code the kill produced."""
    pending: dict[retries.Key, bool] = {}
    for e in entries:
        if e.get("action") == "kill" and e.get("result") == "recorded":
            for t in e.get("tasks") or ():
                pending[(str(t.get("group")), str(t.get("label")))] = True
        elif e.get("action") == retries.RE_ADD_ACTION and e.get("result") == "ok":
            pending.pop((str(e.get("group")), str(e.get("from_label"))), None)
    return sorted(pending)


def paused_by_deploy(entries: Sequence[dict[str, Any]]) -> list[str]:
    """Groups a deploy paused and no later deploy resumed (from the journal, in order):
    a run killed between its pause and its RESTART is converged by the next one."""
    paused: dict[str, bool] = {}
    for e in entries:
        if e.get("action") == "group-pause":
            paused[str(e.get("group"))] = True
        elif e.get("action") == "group-start":
            paused[str(e.get("group"))] = False
    return sorted(g for g, p in paused.items() if p)


def as_killed(state: PueueState, records: Sequence[KilledTask]) -> PueueState:
    ids = {r.id for r in records}
    tasks = tuple(replace(t, state="killed") if t.id in ids else t for t in state.tasks)
    return replace(state, tasks=tasks)
