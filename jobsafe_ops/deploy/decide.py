"""DECIDE (step 3): every refusal before the first mutation (local changes, an unknown
--ref, running tasks under `abort`), then the running-tasks policy (AP-1): `keep` lets them
finish on the old code, `wait` polls until their groups are idle, `kill` records them,
pauses their groups, kills them and removes their declared checkpoints; RESTART
(restart.py) re-adds them and resumes the groups."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from tenacity import RetryCallState, Retrying, retry_if_result, stop_before_delay, wait_fixed

from .. import journal
from ..batch import retry as retries
from ..errors import ConfigError, RefusedError, RemoteError
from ..facts.audit import read_state
from ..inventory import Host
from ..scheduler.pueue import PueueState, Task, kill_argv, pause_group_argv
from .context import DecideOutcome, DeployContext, KilledTask, PlannedStep
from .plan import Action, Executor, Plan, StepResult
from .restart import as_killed, journal_used

RUNNING = ("running", "paused")


# ---- 3. DECIDE -------------------------------------------------------------------------

KillPlanner = Callable[[DeployContext, tuple[Action, ...], list[str], dict[str, Any]], Plan]


def plan_decide(ctx: DeployContext, kill: KillPlanner | None = None,
                poll: str = "`pueue status` until {groups} are idle") -> Plan:
    """Every refusal before the first mutation: local changes, an unknown --ref, running
    tasks under `abort`. Then the running-tasks policy: wait / keep / kill (AP-1). `kill`
    and `poll`: the scheduler's own (deploy/slurm.py: scancel, squeue), pueue's by default."""
    facts, opts = ctx.facts, ctx.options
    git = facts.checkout
    refusals: list[str] = []
    if git.changes and not opts.discard_local_changes:
        refusals.append(f"local changes in {ctx.host.project_dir}: {', '.join(git.changes)}; "
                        "commit and push them, or rerun with --discard-local-changes")
    pre: tuple[Action, ...] = ()
    if opts.ref and not git.ref_target:
        # an unknown --ref is bad input (exit 2), found before anything is killed
        pre = (Action(tuple(ctx.git_argv("fetch", "--quiet", "--tags", "origin")),
                      f"--ref {opts.ref} is not on the host yet: fetch, then check that it "
                      "names a commit (exit 2 if not) before anything is killed"),)
    running = facts.audit.running
    common = {"pre": pre, "ref_target": git.ref_target}
    if not running:
        policy = opts.on_running or "none"
        return _plan(policy, pre, refusals, "ok", "nothing running: no policy needed", common)
    # cron / no TTY (and every --dry): the safe default; a TTY gets the audit and a question
    policy = opts.on_running or (ctx.ask(facts.audit) if ctx.ask else "abort")
    if policy == "abort":
        refusals.append(f"{len(running)} running: {_labels(running)}; nothing changed. Rerun "
                        "with --on-running wait|keep|kill")
        return _plan(policy, pre, refusals, "refused", f"abort: {len(running)} running", common)
    if policy == "keep":
        return _plan(policy, pre, refusals, "warn", f"keep: {len(running)} running task(s) "
                     f"finish on the OLD code: {_labels(running)}", common)
    if policy == "wait":
        groups = sorted({t.group for t in running})
        labels = sorted(f"{t.group}/{t.label}" for t in running)
        return _plan(policy, pre, refusals, "dry", "wait: would poll "
                     + poll.format(groups=groups, labels=", ".join(labels))
                     + f", up to {opts.wait_timeout:g}s (still running then: refused, nothing "
                     "changed)", {**common, "groups": groups})
    return (kill or _plan_kill)(ctx, pre, refusals, common)


def _plan(policy: str, pre: tuple[Action, ...], refusals: list[str], status: str, detail: str,
          facts: dict[str, Any], actions: tuple[Action, ...] = (),
          outcome: DecideOutcome | None = None, **data: Any) -> Plan:
    outcome = outcome or DecideOutcome(policy, ref_target=facts["ref_target"])
    return Plan((*pre, *actions), tuple(refusals), StepResult(
        "decide", status, detail=detail, data={"policy": policy, **data}, value=outcome),
        handoff={**facts, "policy": policy, "status": status, "detail": detail, "data": data,
               "outcome": outcome})


def _busy(ctx: DeployContext, groups: set[str], ids: set[int] | None,
          seen: list[PueueState]) -> list[Task]:
    state = read_state(ctx.remote, readonly=True)  # a poll: may reconnect, noted
    seen.append(state)
    return [t for t in state.tasks if t.group in groups and t.state in RUNNING
            and (ids is None or t.id in ids)]


def _poll_until_idle(ctx: DeployContext, groups: set[str], window: float,
                     what: str, ids: set[int] | None = None,
                     seen: list[PueueState] | None = None) -> list[Task]:
    """Poll pueue until nothing runs in ``groups`` (or of ``ids``) or ``window`` passes."""

    def note(rs: RetryCallState) -> None:
        left = rs.outcome.result() if rs.outcome else []
        ctx.say(f"{what}: {len(left)} still running ({_labels(left, 3)})")

    result: list[Task] = Retrying(
        stop=stop_before_delay(window), wait=wait_fixed(ctx.poll_interval(window)),
        retry=retry_if_result(bool), before_sleep=note,
        retry_error_callback=lambda rs: rs.outcome.result() if rs.outcome else [],
    )(_busy, ctx, groups, ids, seen if seen is not None else [])
    return result


def checkpoint_paths(host: Host, tasks: Sequence[KilledTask],
                     expand: Callable[[str], str]) -> list[str]:
    """The killed jobs' checkpoint files, only from patterns the host file declares
    ({label} = the job's base label: the job itself never sees our -retry-N suffix).
    Labels that could escape the pattern's directory are never substituted (INV-1)."""
    out: list[str] = []
    for t in tasks:
        label = retries.base_label(t.label)
        if "/" in label or label in (".", ".."):
            continue
        for pattern in host.checkpoints:
            if not pattern.startswith(("/", "~")):  # relative: to the project checkout
                pattern = f"{host.project_dir.rstrip('/')}/{pattern}"
            out.append(expand(pattern.replace("{label}", label).replace("{group}", t.group)))
    return list(dict.fromkeys(out))


def _plan_kill(ctx: DeployContext, pre: tuple[Action, ...], refusals: list[str],
               common: dict[str, Any]) -> Plan:
    """Record -> pause -> SIGTERM -> SIGKILL what is still running -> remove declared
    checkpoints; the RESTART step re-adds. Never kill then requeue without cleaning
    checkpoints (deployment checklist). Planned from a fresh `pueue status`."""
    host, pueue, grace = ctx.host, ctx.host.pueue, ctx.options.kill_grace
    state = read_state(ctx.remote)  # re-check, fresh
    victims = [t for t in state.tasks if t.state in RUNNING]
    if not victims:
        return _plan("kill", pre, refusals, "ok",
                     "kill: everything finished meanwhile; nothing killed", common)
    unlabelled = [t for t in victims if t.label is None]
    if unlabelled:
        refusals.append(f"kill: task(s) {', '.join(str(t.id) for t in unlabelled)} have no "
                        "label, so they could not be re-added by label; use --on-running "
                        "wait or keep")
    records = tuple(KilledTask(t.group, t.label or "", t.command, t.path, t.id)
                    for t in victims)
    # Refuse before killing anything whose re-add the budget would forbid: a kill must
    # never lose a job.
    plan = retries.plan_retries(as_killed(state, records), budget=ctx.options.retry_budget,
                                used=journal_used(ctx), retry_all=ctx.options.retry_all,
                                forced=[(r.group, r.label) for r in records])
    spent = [d for d in plan.exhausted if (d.group, d.label) in
             {(r.group, r.label) for r in records}]
    if spent:
        refusals.append(f"kill: the retry budget of {_labels(spent)} is spent, so a kill would "
                        "lose them; use --on-running wait or keep, or raise --retry-budget")
    ids = [r.id for r in records]
    groups = tuple(sorted({r.group for r in records}))
    paths = checkpoint_paths(host, records, ctx.path)
    labels = tuple(r.label for r in records)
    # Pause (without stopping what runs) so queued tasks do not start on the old code in
    # the slots the kill frees; RESTART resumes the groups after the pull.
    actions: list[Action] = [
        Action(tuple(pause_group_argv(pueue, g)), f"no new starts in {g} on the old code",
               journal="group-pause", fields=(("group", g),
                                              ("reason", "deploy --on-running kill")))
        for g in groups]
    actions.append(Action(tuple(kill_argv(pueue, ids, signal="sigterm")),
                          f"stop {_labels(records)} gracefully", check=False))
    actions.append(Action(tuple(kill_argv(pueue, ids)), "SIGKILL", check=False,
                          when=f"for those of them still running {grace:g}s after the "
                          "SIGTERM (the run sends their ids alone)"))
    if paths:
        actions.append(Action(("rm", "-f", "--", *paths), "remove the killed jobs' declared "
                              "checkpoints (once every one of them has stopped)",
                              journal="checkpoint-remove", labels=labels,
                              fields=(("paths", paths),)))
    data = {"tasks": [r.to_dict() for r in records], "checkpoints": paths,
            "paused": list(groups)}
    outcome = DecideOutcome("kill", records, groups, common["ref_target"])
    return _plan("kill", pre, refusals, "dry", f"kill: would pause {', '.join(groups)}, "
                 f"SIGTERM {_labels(records)}, SIGKILL any still running after {grace:g}s, "
                 "and re-add them", {**common, "records": records, "ids": ids, "paths": paths},
                 tuple(actions), outcome, **data)


Waiter = Callable[[DeployContext, set[str], DecideOutcome], StepResult]
Killer = Callable[[DeployContext, Plan, Executor, DecideOutcome], StepResult]


def apply_decide(ctx: DeployContext, plan: Plan, ex: Executor, wait: Waiter | None = None,
                 kill: Killer | None = None) -> StepResult:
    f = plan.handoff
    outcome: DecideOutcome = f["outcome"]
    ref_target = _check_ref(ctx, ex, f["pre"]) if f["pre"] else f["ref_target"]
    outcome = replace(outcome, ref_target=ref_target)
    row = StepResult("decide", f["status"], detail=f["detail"],
                     data={"policy": f["policy"], **f["data"]}, value=outcome)
    if "groups" in f:  # wait, with something running ("nothing running" needs no wait)
        return (wait or _wait_idle)(ctx, set(f["groups"]), outcome)
    if "records" in f:  # kill, with something to kill
        return (kill or _kill)(ctx, plan, ex, outcome)
    return row


def _check_ref(ctx: DeployContext, ex: Executor, pre: Sequence[Action]) -> str:
    for action in pre:
        ex.run(action)
    ref = ctx.options.ref
    found = ctx.remote.run(ctx.git_argv("rev-parse", "--verify", "--quiet",
                                        f"{ref}^{{commit}}"), check=False)
    if not found.ok:
        raise ConfigError(f"{ctx.host.name}: --ref {ref}: no such commit or tag in origin")
    return found.stdout.strip()


def _wait_idle(ctx: DeployContext, groups: set[str], outcome: DecideOutcome) -> StepResult:
    timeout = ctx.options.wait_timeout
    started = time.monotonic()
    seen: list[PueueState] = []
    left = _poll_until_idle(ctx, groups, timeout, "waiting", seen=seen)
    if left:
        raise RefusedError(
            f"{ctx.host.name}: still running after {timeout:g}s: {_labels(left)}; nothing "
            "changed (raise --wait-timeout, or --on-running keep|kill)")
    return StepResult("decide", "ok", detail=f"wait: groups {', '.join(sorted(groups))} idle "
                      f"after {time.monotonic() - started:.1f}s", data={"policy": "wait"},
                      value=replace(outcome, state=seen[-1]))  # RESTART plans from it


def _kill(ctx: DeployContext, plan: Plan, ex: Executor, outcome: DecideOutcome) -> StepResult:
    f = plan.handoff
    host, pueue, grace = ctx.host, ctx.host.pueue, ctx.options.kill_grace
    records: tuple[KilledTask, ...] = f["records"]
    ids: list[int] = f["ids"]
    labels = [r.label for r in records]
    actions = [a for a in plan.actions if a not in f["pre"]]
    pauses = [a for a in actions if a.journal == "group-pause"]
    sigterm, sigkill = actions[len(pauses)], actions[len(pauses) + 1]
    remove = actions[len(pauses) + 2:]
    # Recorded first: a crash after the kill still leaves what is needed to re-add them.
    journal.append(host.name, "kill", labels, result="recorded", tasks=f["data"]["tasks"])
    for action in pauses:
        ex.run(action)
    groups = set(outcome.paused)
    ex.run(sigterm)
    left = _poll_until_idle(ctx, groups, grace, "stopping", set(ids))
    if left:
        ex.run(replace(sigkill, argv=tuple(kill_argv(pueue, [t.id for t in left]))))
        left = _poll_until_idle(ctx, groups, grace, "killing", set(ids))
    if left:
        journal.append(host.name, "kill", labels, result="failed", still=_labels(left))
        raise RemoteError(f"{host.name}: could not kill {_labels(left)}")
    for action in remove:
        ex.run(action)
    journal.append(host.name, "kill", labels, result="ok", ids=ids)
    return StepResult("decide", "changed", detail=f"kill: paused {', '.join(outcome.paused)}; "
                      f"killed {_labels(records)}; removed {len(f['paths'])} checkpoint "
                      "file(s); RESTART re-adds them and resumes the groups",
                      data={"policy": "kill", **f["data"]}, value=outcome)


def _labels(tasks: Sequence[Any], limit: int = 8) -> str:
    names = [f"{t.group}/{t.label or '#' + str(getattr(t, 'id', '?'))}" for t in tasks]
    more = f" (+{len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


decide = PlannedStep("decide", plan_decide, apply_decide)
