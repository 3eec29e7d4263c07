"""RESTART (step 7): re-add, fresh, the failed tasks of every group and those DECIDE
killed (`pueue add` of the same command, group and working dir as <label>-retry-N; planned
by retry.py: classified, budgeted, idempotent), then resume the groups a kill paused. A run
interrupted between its kill and its RESTART is converged from the journal by the next
one. `inv retry-failed` runs `restart_group` alone."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from .. import journal
from ..batch import retry as retries
from ..errors import ConfigError
from ..facts import programs
from ..facts.audit import build_audit, read_state
from ..facts.ledger import read_merged, relabel
from ..ops import teamjournal
from ..scheduler.pueue import PueueState, add_argv, parse_task_id, start_group_argv
from ..shell import lean_env_line
from .context import (
    DecideOutcome,
    DeployContext,
    KilledTask,
    PlannedStep,
    ReAdded,
    RestartOutcome,
    Step,
)
from .plan import Action, Executor, Plan, StepResult, wrapped

# ---- 7. RESTART ---------------------------------------------------------------------


@dataclass(frozen=True)
class ReAdds:
    """The planned re-adds: one action per decision that has one, and the decisions
    whose add could not even be built (bad label or command)."""

    plan: retries.RetryPlan
    actions: tuple[tuple[retries.RetryDecision, Action], ...] = ()
    errors: tuple[str, ...] = ()
    checks: tuple[Any, ...] = ()
    check_of: Any = None


def plan_readds(ctx: DeployContext, plan: retries.RetryPlan) -> ReAdds:
    """Fresh `pueue add` per planned retry (never `pueue restart`: in v4 it drops the
    dependencies and, looped, caused the 60 -> 12,800 task runaway), in the lean add
    environment plus the failed task's `pass_env` names (retry.carried_env). The first add
    carries the check that every command's first program resolves (item 3): a job that
    would exit 127 refuses the whole re-add (exit 2) before anything is queued."""
    checks, check_of = programs.job_checks(
        [(d.new_label or d.label, d.workdir, d.command, "") for d in plan.to_add])
    guard = programs.guard(checks) if checks else ""
    actions, errors = [], []
    for d in plan.to_add:
        assert d.new_label is not None
        try:
            # a wrapped job records its outcome under its new label (ledger.relabel)
            argv = add_argv(ctx.host.pueue, relabel(d.command, d.new_label, d.group),
                            group=d.group, label=d.new_label, workdir=d.workdir)
        except ConfigError as exc:
            errors.append(f"{d.group}/{d.label}: {exc}")
            continue
        # lean env: the SSH session's environment (and any secret in it) must not be
        # stored with the task; the old task's `envs` are never copied either
        why = f"re-add {d.group}/{d.label} fresh as {d.new_label} ({d.reason})"
        if guard:
            why += "; first checks that every job's program resolves (exit 2 if not)"
        actions.append((d, wrapped(guard + lean_env_line(argv, d.env_names), argv, why,
                                   check=False)))
        guard = ""
    return ReAdds(plan, tuple(actions), tuple(errors), tuple(checks), check_of)


def run_readds(ctx: DeployContext, ex: Executor, adds: ReAdds) -> tuple[list[ReAdded],
                                                                          list[str]]:
    re_added, errors = [], list(adds.errors)
    for i, (d, action) in enumerate(adds.actions):
        r = ex.run(action)
        if i == 0 and adds.checks:
            refused = programs.guarded_refusal(
                ctx.host, list(adds.checks), adds.check_of, r.stdout,
                [x.new_label or x.label for x in adds.plan.to_add])
            if refused:
                raise ConfigError(refused)
        if not r.ok:
            why = (r.stderr.strip() or r.stdout.strip() or f"exit {r.exited}").splitlines()
            errors.append(f"{d.group}/{d.new_label}: {why[-1] if why else ''}")
            journal.append(ctx.host.name, retries.RE_ADD_ACTION, [d.new_label or ""],
                           result="failed", group=d.group, from_label=d.label,
                           reason=why[-1] if why else "")
            continue
        task_id = parse_task_id(r.stdout)
        assert d.new_label is not None
        re_added.append(ReAdded(d.group, d.new_label, d.label, task_id))
        journal.append(ctx.host.name, retries.RE_ADD_ACTION, [d.new_label], result="ok",
                       group=d.group, from_label=d.label, task_id=task_id, reason=d.reason)
    return re_added, errors


def readd(ctx: DeployContext, plan: retries.RetryPlan) -> RestartOutcome:
    """Plan and run the re-adds of a retry plan (no --dry: `restart` lists them)."""
    re_added, errors = run_readds(ctx, ctx.executor, plan_readds(ctx, plan))
    return RestartOutcome(tuple(re_added), add_errors=tuple(errors))


def plan_restart(ctx: DeployContext) -> Plan:
    """Re-add, fresh, the failed tasks of every group and those DECIDE killed: same group,
    command and absolute working dir, label <label>-retry-N; classified, budgeted,
    idempotent (see retry.py). Then resume the groups a deploy paused. Planned from a
    fresh `pueue status` (labels added meanwhile), with DECIDE's kill and pauses applied
    (in --dry they did not happen)."""
    facts, decided = ctx.facts, ctx.outcome(DecideOutcome)
    killed = decided.killed if decided else ()
    entries = list(journal.entries(host=ctx.host.name))
    forced = sorted({(k.group, k.label) for k in killed} | set(pending_kills(entries)))
    plan = retries.RetryPlan((), ctx.options.retry_budget, ctx.options.retry_all)
    audited = build_audit(ctx.host.name, decided.state) if decided and decided.state \
        else facts.audit
    state = decided.state if decided and decided.state else facts.state
    if audited.failed or forced:
        state = as_killed(read_state(ctx.remote), killed)
        shared, on_host = teamjournal.team_readds(ctx.remote, entries)  # every operator's
        plan = retries.plan_retries(state, budget=ctx.options.retry_budget,
                                    used=retries.used_from_journal(shared),
                                    retry_all=ctx.options.retry_all, forced=forced)
        teamjournal.guard_readds(ctx.remote, on_host, len(plan.to_add))  # exit 3 before any
    adds = plan_readds(ctx, plan)
    paused = decided.paused if decided else ()
    state = as_paused(state, paused)
    wanted = sorted(set(paused_by_deploy(entries)) | set(paused))
    resume = [g for g in wanted if g in state.groups]
    starts = tuple(Action(tuple(start_group_argv(ctx.host.pueue, g)), f"resume {g}, paused by "
                          "a deploy, now that its tasks are re-added", journal="group-start",
                          fields=(("group", g),
                                  ("reason", "resumed after deploy re-added its tasks")))
                   for g in resume if state.groups[g].status == "Paused")
    exhausted = tuple(f"{d.group}/{d.label}" for d in plan.exhausted)
    would = RestartOutcome(exhausted=exhausted, add_errors=adds.errors, resumed=tuple(resume))
    return Plan((*(a for _, a in adds.actions), *starts), dry=_restart_result(
        plan, would, {"plan": plan.to_dict(), "re_added": [], "errors": list(adds.errors),
                      "resumed": list(resume)}, would_add=bool(adds.actions)),
        handoff={"adds": adds, "starts": starts, "resume": resume, "plan": plan})


def apply_restart(ctx: DeployContext, plan: Plan, ex: Executor) -> StepResult:
    adds: ReAdds = plan.handoff["adds"]
    re_added, errors = run_readds(ctx, ex, adds)
    for action in plan.handoff["starts"]:
        ex.run(action)
    started = {dict(a.fields)["group"] for a in plan.handoff["starts"]}
    for g in plan.handoff["resume"]:  # wanted, but running already: noted as resumed
        if g not in started:
            journal.append(ctx.host.name, "group-start", [], group=g,
                           reason="resumed after deploy re-added its tasks")
    rp: retries.RetryPlan = plan.handoff["plan"]
    outcome = RestartOutcome(tuple(re_added), tuple(f"{d.group}/{d.label}"
                                                    for d in rp.exhausted),
                             tuple(errors), tuple(plan.handoff["resume"]))
    result = _restart_result(rp, outcome, {
        "plan": rp.to_dict(), "re_added": [r.to_dict() for r in re_added], "errors": errors,
        "resumed": list(outcome.resumed)})
    if outcome.resumed:
        result = replace(result, detail=f"{result.detail}; resumed {', '.join(outcome.resumed)}")
    return result


def _restart_result(plan: retries.RetryPlan, outcome: RestartOutcome, data: dict[str, Any],
                    would_add: bool = False) -> StepResult:
    parts = []
    if would_add:
        parts.append(f"would re-add {', '.join(d.new_label or '' for d in plan.to_add)}")
    elif outcome.re_added:
        parts.append(f"re-added {', '.join(r.label for r in outcome.re_added)}")
    skipped = plan.skipped
    if skipped:
        parts.append(f"{len(skipped)} not retried ("
                     + "; ".join(f"{d.label}: {d.reason}" for d in skipped[:3])
                     + (" ..." if len(skipped) > 3 else "") + ")")
    if plan.exhausted:
        parts.append(f"retry budget spent: {', '.join(outcome.exhausted)}")
    if outcome.add_errors:
        parts.append(f"{len(outcome.add_errors)} add(s) failed: "
                     f"{'; '.join(outcome.add_errors)}")
    status = ("warn" if outcome.add_errors or plan.exhausted
              else "dry" if would_add
              else "changed" if outcome.re_added else "ok")
    return StepResult("restart", status, detail="; ".join(parts) or "nothing to re-add",
                      data=data, value=outcome)


restart = PlannedStep("restart", plan_restart, apply_restart)


# ---- inv retry-failed: the RESTART of one group -------------------------------------

def restart_group(group: str) -> Step:
    def plan(ctx: DeployContext) -> Plan:
        state = read_state(ctx.remote, group)
        state = read_merged(ctx.remote, state, group)  # failures a clean removed, too
        shared, on_host = teamjournal.team_readds(
            ctx.remote, journal.entries(host=ctx.host.name, action=retries.RE_ADD_ACTION))
        rp = retries.plan_retries(state, groups=[group], budget=ctx.options.retry_budget,
                                  used=retries.used_from_journal(shared),
                                  retry_all=ctx.options.retry_all)
        teamjournal.guard_readds(ctx.remote, on_host, len(rp.to_add))
        adds = plan_readds(ctx, rp)
        would = RestartOutcome(exhausted=tuple(f"{d.group}/{d.label}" for d in rp.exhausted),
                               add_errors=adds.errors)
        return Plan(tuple(a for _, a in adds.actions), dry=_restart_result(
            rp, would, {"plan": rp.to_dict(), "re_added": [], "errors": list(adds.errors)},
            would_add=bool(adds.actions)), handoff={"adds": adds, "plan": rp})

    def apply(ctx: DeployContext, plan: Plan, ex: Executor) -> StepResult:
        rp: retries.RetryPlan = plan.handoff["plan"]
        re_added, errors = run_readds(ctx, ex, plan.handoff["adds"])
        outcome = RestartOutcome(tuple(re_added), tuple(f"{d.group}/{d.label}"
                                                        for d in rp.exhausted), tuple(errors))
        return _restart_result(rp, outcome, {"plan": rp.to_dict(), "re_added": [
            r.to_dict() for r in re_added], "errors": errors})

    return PlannedStep("restart", plan, apply)


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


def as_paused(state: PueueState, groups: Sequence[str]) -> PueueState:
    """The state with these groups paused (DECIDE's pauses, also when --dry skipped them)."""
    if not groups:
        return state
    return replace(state, groups={n: replace(g, status="Paused") if n in groups else g
                                  for n, g in state.groups.items()})
