"""DECIDE (step 3): every refusal before the first mutation (local changes, an unknown
--ref, running tasks under `abort`), then the running-tasks policy (AP-1): `keep` lets them
finish on the old code, `wait` polls until their groups are idle, `kill` records them,
pauses their groups, kills them and removes their declared checkpoints; RESTART
(restart.py) re-adds them and resumes the groups."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from tenacity import RetryCallState, Retrying, retry_if_result, stop_before_delay, wait_fixed

from .. import journal
from ..batch import retry as retries
from ..errors import RefusedError, RemoteError
from ..facts.audit import build_audit, read_state
from ..inventory import Host
from ..scheduler.pueue import Task, kill_argv, pause_group_argv
from .context import DeployContext, KilledTask, StepResult
from .pull import preflight_ref
from .restart import as_killed, journal_used

RUNNING = ("running", "paused")


# ---- 3. DECIDE -------------------------------------------------------------------------

def decide(ctx: DeployContext) -> StepResult:
    """Every refusal before the first mutation: local changes, an unknown --ref, running
    tasks under `abort`. Then the running-tasks policy: wait / keep / kill (AP-1)."""
    assert ctx.audit is not None and ctx.git is not None
    if ctx.git.changes and not ctx.options.discard_local_changes:
        ctx.refuse(f"local changes in {ctx.host.project_dir}: {', '.join(ctx.git.changes)}; "
                   "commit and push them, or rerun with --discard-local-changes")
    preflight_ref(ctx)
    running = ctx.audit.running
    if not running:
        ctx.policy = ctx.options.on_running or "none"
        return _decided(ctx, "ok", "nothing running: no policy needed")
    policy = ctx.options.on_running
    if policy is None:
        # cron / no TTY: the safe default; a TTY gets the audit and a question
        policy = ctx.ask(ctx.audit) if ctx.ask and not ctx.options.dry else "abort"
    ctx.policy = policy
    if policy == "abort":
        ctx.refuse(f"{len(running)} running: {_labels(running)}; nothing changed. Rerun with "
                   "--on-running wait|keep|kill")
        return _decided(ctx, "refused", f"abort: {len(running)} running")
    if policy == "keep":
        return _decided(ctx, "warn", f"keep: {len(running)} running task(s) finish on the OLD "
                        f"code: {_labels(running)}")
    if policy == "wait":
        return _wait_idle(ctx, {t.group for t in running})
    return _kill_running(ctx)


def _decided(ctx: DeployContext, status: str, detail: str, **data: Any) -> StepResult:
    new = ctx.refusals[ctx.refusals_shown:]  # --dry: the refusals this step would raise
    ctx.refusals_shown = len(ctx.refusals)
    if new:
        status = "refused"
        detail = "; ".join([*new, detail])
    return StepResult("decide", status, detail=detail, data={"policy": ctx.policy, **data})


def _busy(ctx: DeployContext, groups: set[str], ids: set[int] | None) -> list[Task]:
    ctx.state = read_state(ctx.remote, readonly=True)  # a poll: may reconnect, noted
    return [t for t in ctx.state.tasks if t.group in groups and t.state in RUNNING
            and (ids is None or t.id in ids)]


def _poll_until_idle(ctx: DeployContext, groups: set[str], window: float,
                     what: str, ids: set[int] | None = None) -> list[Task]:
    """Poll pueue until nothing runs in ``groups`` (or of ``ids``) or ``window`` passes."""

    def note(rs: RetryCallState) -> None:
        left = rs.outcome.result() if rs.outcome else []
        ctx.say(f"{what}: {len(left)} still running ({_labels(left, 3)})")

    result: list[Task] = Retrying(
        stop=stop_before_delay(window), wait=wait_fixed(ctx.poll_interval(window)),
        retry=retry_if_result(bool), before_sleep=note,
        retry_error_callback=lambda rs: rs.outcome.result() if rs.outcome else [],
    )(_busy, ctx, groups, ids)
    return result


def _wait_idle(ctx: DeployContext, groups: set[str]) -> StepResult:
    timeout = ctx.options.wait_timeout
    if ctx.options.dry:
        return _decided(ctx, "dry", f"wait: would poll `pueue status` until {sorted(groups)} "
                        f"are idle, up to {timeout:g}s")
    started = time.monotonic()
    left = _poll_until_idle(ctx, groups, timeout, "waiting")
    if left:
        raise RefusedError(
            f"{ctx.host.name}: still running after {timeout:g}s: {_labels(left)}; nothing "
            "changed (raise --wait-timeout, or --on-running keep|kill)")
    assert ctx.state is not None
    ctx.audit = build_audit(ctx.host.name, ctx.state)  # the restart plans from fresh facts
    return _decided(ctx, "ok", f"wait: groups {', '.join(sorted(groups))} idle after "
                    f"{time.monotonic() - started:.1f}s")


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


def _kill_running(ctx: DeployContext) -> StepResult:
    """Record -> kill gracefully -> remove declared checkpoints; the RESTART step re-adds.
    Never kill then requeue without cleaning checkpoints (deployment checklist)."""
    host, pueue = ctx.host, ctx.host.pueue
    state = ctx.state if ctx.options.dry else read_state(ctx.remote)  # re-check, fresh
    assert state is not None
    victims = [t for t in state.tasks if t.state in RUNNING]
    if not victims:
        return _decided(ctx, "ok", "kill: everything finished meanwhile; nothing killed")
    unlabelled = [t for t in victims if t.label is None]
    if unlabelled:
        ctx.refuse(f"kill: task(s) {', '.join(str(t.id) for t in unlabelled)} have no label, "
                   "so they could not be re-added by label; use --on-running wait or keep")
    records = [KilledTask(t.group, t.label or "", t.command, t.path, t.id) for t in victims]
    # Refuse before killing anything whose re-add the budget would forbid: a kill must
    # never lose a job.
    plan = retries.plan_retries(as_killed(state, records), budget=ctx.options.retry_budget,
                                used=journal_used(ctx), retry_all=ctx.options.retry_all,
                                forced=[(r.group, r.label) for r in records])
    spent = [d for d in plan.exhausted if (d.group, d.label) in
             {(r.group, r.label) for r in records}]
    if spent:
        ctx.refuse(f"kill: the retry budget of {_labels(spent)} is spent, so a kill would lose "
                   "them; use --on-running wait or keep, or raise --retry-budget")
    ids = [r.id for r in records]
    groups = sorted({r.group for r in records})
    paths = checkpoint_paths(host, records, ctx.path)
    labels = [r.label for r in records]
    data = {"tasks": [r.to_dict() for r in records], "checkpoints": paths, "paused": groups}
    pause = [pause_group_argv(pueue, g) for g in groups]
    if ctx.options.dry:
        ctx.killed = records
        for argv in pause:
            ctx.would(argv)
        ctx.would(kill_argv(pueue, ids, signal="sigterm"))
        ctx.would(kill_argv(pueue, ids))
        if paths:
            ctx.would(["rm", "-f", "--", *paths])
        return _decided(ctx, "dry", f"kill: would pause {', '.join(groups)}, kill "
                        f"{_labels(records)} (SIGTERM, then SIGKILL after "
                        f"{ctx.options.kill_grace:g}s) and re-add them", **data)
    # Recorded first: a crash after the kill still leaves what is needed to re-add them.
    journal.append(host.name, "kill", labels, result="recorded", tasks=data["tasks"])
    ctx.killed = records
    # Pause (without stopping what runs) so queued tasks do not start on the old code in
    # the slots the kill frees; RESTART resumes the groups after the pull.
    for g, argv in zip(groups, pause, strict=True):
        ctx.remote.run(argv)
        journal.append(host.name, "group-pause", [], group=g, reason="deploy --on-running kill")
        ctx.paused.append(g)
    ctx.remote.run(kill_argv(pueue, ids, signal="sigterm"), check=False)
    left = _poll_until_idle(ctx, set(groups), ctx.options.kill_grace, "stopping", set(ids))
    if left:
        ctx.remote.run(kill_argv(pueue, [t.id for t in left]), check=False)
        left = _poll_until_idle(ctx, set(groups), ctx.options.kill_grace, "killing", set(ids))
    if left:
        journal.append(host.name, "kill", labels, result="failed", still=_labels(left))
        raise RemoteError(f"{host.name}: could not kill {_labels(left)}")
    if paths:
        ctx.remote.run(["rm", "-f", "--", *paths])
        journal.append(host.name, "checkpoint-remove", labels, paths=paths)
    journal.append(host.name, "kill", labels, result="ok", ids=ids)
    return _decided(ctx, "changed", f"kill: paused {', '.join(groups)}; killed "
                    f"{_labels(records)}; removed {len(paths)} checkpoint file(s); RESTART "
                    "re-adds them and resumes the groups", **data)


def _labels(tasks: Sequence[Any], limit: int = 8) -> str:
    names = [f"{t.group}/{t.label or '#' + str(getattr(t, 'id', '?'))}" for t in tasks]
    more = f" (+{len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more
