"""`inv deploy` on a Slurm host (`scheduler = "slurm"`): the same protocol as steps.STEPS, on
the login node's checkout (the filesystem the compute nodes share). LOCK, PULL, VERIFY and
UPGRADE are the pueue host's own steps (the deploy lock, git and uv on the login node);
what differs is the scheduler's part, by group and label as everywhere:

- AUDIT: the probe (`scontrol show config`, `sinfo`) and `slurm_feed.py records` over every
  Slurm batch (the ledger's newest outcome per label and the elements `squeue` shows
  running or pending, with their ids) in one round trip, then git and the lock as on pueue.
- DECIDE: the same refusals and policies (decide.plan_decide); `kill` = hold the groups'
  pending elements (`scontrol hold`: a pueue group's pause), then one `scancel` of the
  element ids a fresh `records` read shows for the running labels (never a typed id),
  recorded first; `wait` polls until those labels are no longer active.
- RESTART: the failed labels of every group and those DECIDE killed, planned by
  batch.retry (same classification and budget as on pueue hosts: a kill spends one retry
  of the label, and is refused before it when the budget is spent), re-submitted fresh as
  `<label>-retry-N`: per batch one upload and one `slurm_feed.py submit` of a new array of
  just those lines (batch/slurm_retry.py), which rechecks squeue and the ledger under the
  batch lock; then releases what a deploy held. There is no daemon to restart: the
  arrays belong to slurmctld.
- MONITOR: the same window and row, the re-added labels' states from `records`; load and
  swap are the compute nodes' (slurmctld's), not judged on the login node.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from tenacity import Retrying, retry_if_result, stop_before_delay, wait_fixed

from .. import journal
from ..batch import retry as retries
from ..batch import slurm_retry
from ..errors import RefusedError, RemoteError
from ..facts import slurm_probe
from ..facts.audit import build_audit
from ..facts.probe import sections
from ..inventory import Host
from ..ops import teamjournal
from ..remote import Remote
from ..scheduler import slurm as sched
from ..scheduler.base import Group, PueueState, Task
from . import lock as locking
from .context import (
    DecideOutcome,
    DeployContext,
    Facts,
    KilledTask,
    PlannedStep,
    ReAdded,
    RestartOutcome,
    Step,
)
from .decide import RUNNING, _labels, _plan, apply_decide, checkpoint_paths, plan_decide
from .install import upgrade, verify
from .plan import Action, Executor, Plan, StepResult
from .pull import pull, read_git_facts
from .restart import _restart_result, journal_used, paused_by_deploy, pending_kills
from .steps import Sample, apply_monitor, lock, plan_monitor

Key = tuple[str, str]  # (group, label)
KILL_WAIT = 30.0  # seconds: Slurm's default KillWait between scancel's SIGTERM and SIGKILL
NO_DAEMON = ("no daemon to restart on Slurm: the arrays belong to slurmctld, and the "
             "re-added elements run the new checkout from the shared filesystem")


# ---- the facts: `slurm_feed.py records` over every batch -------------------------------

@dataclass(frozen=True)
class Records:
    """Every Slurm batch's labels in the model's vocabulary (`state`), where each label's
    batch dir is, and the active elements as squeue showed them (id, state, command,
    workdir) - the only place an element id comes from."""

    state: PueueState
    where: Mapping[Key, str]
    elements: Mapping[Key, Mapping[str, Any]]

    def running(self) -> list[tuple[Key, Mapping[str, Any]]]:
        return [(k, e) for k, e in sorted(self.elements.items())
                if sched.STATE_MAP.get(str(e.get("state")), "queued") in RUNNING]


def parse_records(host: Host, facts: Mapping[str, Any]) -> Records:
    """`records` (per batch: dir, ended {label: end record}, elements {label: element})
    -> the state audit, decide and retry read (groups: the host file's, Running)."""
    tasks: list[Task] = []
    blocked: set[int] = set()
    where: dict[Key, str] = {}
    elements: dict[Key, Mapping[str, Any]] = {}
    for name in sorted(facts):
        batch = facts[name]
        bdir = str(batch.get("dir") or "")
        active = batch.get("elements") or {}
        for label, rec in sorted((batch.get("ended") or {}).items()):
            if label in active:
                continue
            outcome = str(rec.get("outcome") or "failed")
            key = (str(rec.get("group", "")), label)
            tasks.append(Task(id=len(tasks), group=key[0], label=label,
                              command=str(rec.get("command") or ""),
                              path=str(rec.get("workdir") or ""),
                              state=outcome if outcome in ("success", "failed", "killed")
                              else "failed", exit_code=rec.get("exit")))
            where[key] = bdir
        for label, el in sorted(active.items()):
            key = (str(el.get("group", "")), label)
            state = str(el.get("state", ""))
            if state == "PENDING" and el.get("reason") == sched.NEVER:
                blocked.add(len(tasks))
            tasks.append(Task(id=len(tasks), group=key[0], label=label,
                              command=str(el.get("command") or ""),
                              path=str(el.get("workdir") or ""),
                              state=sched.STATE_MAP.get(state, "queued")))
            where[key] = bdir
            elements[key] = el
    groups = {n: Group(n, "Running", g.parallel) for n, g in host.groups.items()}
    for t in tasks:  # a batch's group the host file no longer declares: still audited
        groups.setdefault(t.group, Group(t.group, "Running", 0))
    return Records(PueueState(tuple(tasks), groups, "slurm", frozenset(blocked)), where,
                   elements)


def _records_json(host: Host, lines: Sequence[str], stderr: str) -> dict[str, Any]:
    for line in reversed(lines):
        if line.startswith("{"):
            try:
                facts = json.loads(line)
            except ValueError:
                break
            if isinstance(facts, dict):
                return facts
            break
    detail = (stderr.strip() or "\n".join(lines).strip() or "no output").splitlines()[-1]
    raise RemoteError(f"{host.name}: cannot read the Slurm batches' outcomes "
                      f"(slurm_feed.py records): {detail[-200:]}")


def read_records(remote: Remote, *, readonly: bool = False) -> Records:
    """A fresh `records` read (one round trip): DECIDE's kill, RESTART, the polls."""
    return parse_records(remote.host, slurm_retry.read_records(remote, None,
                                                               readonly=readonly))


# ---- 1. AUDIT ----------------------------------------------------------------------------

def audit(ctx: DeployContext) -> StepResult:
    """Mandatory, also in --dry: the cluster (probe) and this project's running, pending
    and failed array elements by group and label (records), one round trip; then the git
    checkout and the deploy lock on the login node (the second)."""
    host = ctx.host
    script = slurm_probe.probe_script(
        extra=f"echo @@records\n{slurm_retry.records_command(None)}\n")
    out = ctx.remote.run(script, check=False)
    probe = slurm_probe.parse_probe(host.name, out.stdout)
    if probe.error:
        raise RemoteError(f"{host.name}: cannot audit Slurm: {probe.error}")
    recs = parse_records(host, _records_json(host, sections(out.stdout).get("records", []),
                                             out.stderr))
    git, lock_state = read_git_facts(host, ctx.remote, probe.expand, ctx.options.ref,
                                     locking.lock_path(host))
    a = build_audit(host.name, recs.state)
    facts = Facts(probe, recs.state, a, git, lock_state)
    ctx.learned(facts)
    counts = {k: sum(len(getattr(g, k)) for g in a.groups)
              for k in ("running", "queued", "failed", "blocked")}
    detail = ", ".join(f"{n} {k}" for k, n in counts.items())
    detail += (f" array element(s) in {len(a.groups)} group(s) (slurm); HEAD "
               f"{git.head[:10]} on {git.branch}")
    if git.changes:
        detail += f"; {len(git.changes)} local change(s)"
    return StepResult("audit", "ok", detail=detail, data={
        "scheduler": "slurm", "audit": a.to_dict(), "probe": probe.to_dict(),
        "git": git.to_dict()}, value=facts)


# ---- 3. DECIDE: kill = scancel by the ids squeue shows; wait = until they left squeue ------

HELD = ("JobHeldUser", "JobHeldAdmin")


def is_held(element: Mapping[str, Any]) -> bool:
    return element.get("state") == "PENDING" and element.get("reason") in HELD


def held_by_deploy(entries: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """(group, element id) a deploy held and no later deploy released (the journal, in
    order), like restart.paused_by_deploy for pueue groups."""
    held: dict[str, list[str]] = {}
    for e in entries:
        if e.get("action") == "group-pause":
            held[str(e.get("group"))] = [str(i) for i in e.get("ids") or ()]
        elif e.get("action") == "group-start":
            held.pop(str(e.get("group")), None)
    return sorted((g, i) for g, ids in held.items() for i in ids)


def as_killed(state: PueueState, killed: Sequence[KilledTask]) -> PueueState:
    """The state with the killed labels ended as killed (their end record may be missing:
    a SIGKILL leaves the wrapper no time), from what was recorded before the kill."""
    keys = {(k.group, k.label): k for k in killed}
    tasks = [replace(t, state="killed") if (t.group, t.label) in keys else t
             for t in state.tasks]
    seen = {(t.group, t.label) for t in tasks}
    tasks += [Task(id=len(tasks) + i, group=k.group, label=k.label, command=k.command,
                   path=k.workdir, state="killed")
              for i, k in enumerate(k for key, k in keys.items() if key not in seen)]
    return replace(state, tasks=tuple(tasks))


def _plan_kill(ctx: DeployContext, pre: tuple[Action, ...], refusals: list[str],
               common: dict[str, Any]) -> Plan:
    """Record -> one scancel of the running elements' ids (from a fresh records read, on
    the login node: never typed) -> wait until squeue no longer shows them -> remove the
    declared checkpoints; RESTART re-adds them. Pending elements of those groups are held
    first (and released by RESTART)."""
    recs = read_records(ctx.remote)  # re-check, fresh: the ids come from here only
    victims = recs.running()
    if not victims:
        return _plan("kill", pre, refusals, "ok",
                     "kill: everything finished meanwhile; nothing killed", common)
    records = tuple(KilledTask(g, label, str(e.get("command") or ""),
                               str(e.get("workdir") or ""), i, element=str(e["id"]),
                               batch=recs.where[(g, label)])
                    for i, ((g, label), e) in enumerate(victims))
    plan = retries.plan_retries(as_killed(recs.state, records),
                                budget=ctx.options.retry_budget, used=journal_used(ctx),
                                retry_all=ctx.options.retry_all,
                                forced=[(r.group, r.label) for r in records])
    keys = {(r.group, r.label) for r in records}
    spent = [d for d in plan.exhausted if (d.group, d.label) in keys]
    if spent:  # a kill must never lose a job
        refusals.append(f"kill: the retry budget of {_labels(spent)} is spent, so a kill would "
                        "lose them; use --on-running wait or keep, or raise --retry-budget")
    ids = list(dict.fromkeys(r.element for r in records))  # a unit's commands: one element
    paths = checkpoint_paths(ctx.host, records, ctx.path)
    labels = tuple(r.label for r in records)
    window = ctx.options.kill_grace + KILL_WAIT
    groups = sorted({r.group for r in records})
    # Hold (the pause of a pueue group) the groups' pending elements, so none starts on
    # the old code in the slots the kill frees; RESTART releases them after the pull.
    held = tuple(dict.fromkeys((g, str(e["id"])) for (g, _), e in sorted(recs.elements.items())
                               if g in groups and e.get("state") == "PENDING"
                               and not is_held(e)))
    actions = [Action(tuple(sched.hold_argv(i for hg, i in held if hg == g)),
                      f"no new starts in {g} on the old code: hold its pending elements",
                      journal="group-pause",
                      fields=(("group", g), ("reason", "deploy --on-running kill"),
                              ("ids", [i for hg, i in held if hg == g])))
               for g in groups if any(hg == g for hg, _ in held)]
    actions.append(Action(tuple(sched.scancel_argv(ids)), f"scancel {_labels(records)}: "
                          "the element ids squeue shows for them now; Slurm sends SIGTERM, "
                          f"then SIGKILL after KillWait (polled up to {window:g}s)",
                          check=False))
    if paths:
        actions.append(Action(("rm", "-f", "--", *paths), "remove the killed jobs' declared "
                              "checkpoints (once squeue no longer shows any of them)",
                              journal="checkpoint-remove", labels=labels,
                              fields=(("paths", paths),)))
    paused = tuple(sorted({g for g, _ in held}))
    data = {"tasks": [r.to_dict() for r in records], "checkpoints": paths,
            "paused": list(paused), "held": [i for _, i in held]}
    outcome = DecideOutcome("kill", records, paused, common["ref_target"], held=held)
    hold = f"hold the pending elements of {', '.join(paused)}, " if paused else ""
    return _plan("kill", pre, refusals, "dry", f"kill: would {hold}scancel {_labels(records)} "
                 f"({', '.join(ids)}, read from squeue), wait until they leave squeue, and "
                 "re-add them", {**common, "records": records, "ids": ids, "paths": paths},
                 tuple(actions), outcome, **data)


def _poll_gone(ctx: DeployContext, keys: set[Key], window: float, what: str) -> list[Key]:
    """Poll records until squeue shows none of `keys` active, or `window` passes."""

    def left() -> list[Key]:
        return sorted(keys & set(read_records(ctx.remote, readonly=True).elements))

    def note(rs: Any) -> None:
        still = rs.outcome.result() if rs.outcome else []
        ctx.say(f"{what}: {len(still)} still in squeue ("
                + ", ".join(f"{g}/{lbl}" for g, lbl in still[:3]) + ")")

    result: list[Key] = Retrying(
        stop=stop_before_delay(window), wait=wait_fixed(ctx.poll_interval(window)),
        retry=retry_if_result(bool), before_sleep=note,
        retry_error_callback=lambda rs: rs.outcome.result() if rs.outcome else [],
    )(left)
    return result


def _kill(ctx: DeployContext, plan: Plan, ex: Executor, outcome: DecideOutcome) -> StepResult:
    f = plan.handoff
    host = ctx.host
    records: tuple[KilledTask, ...] = f["records"]
    labels = [r.label for r in records]
    actions = [a for a in plan.actions if a not in f["pre"]]
    holds = [a for a in actions if a.journal == "group-pause"]
    scancel, remove = actions[len(holds)], actions[len(holds) + 1:]
    # Recorded first: a crash after the kill still leaves what is needed to re-add them.
    journal.append(host.name, "kill", labels, result="recorded", tasks=f["data"]["tasks"],
                   scheduler="slurm")
    for action in holds:
        ex.run(action)
    ex.run(scancel)
    left = _poll_gone(ctx, {(r.group, r.label) for r in records},
                      ctx.options.kill_grace + KILL_WAIT, "stopping")
    if left:
        still = ", ".join(f"{g}/{lbl}" for g, lbl in left)
        journal.append(host.name, "kill", labels, result="failed", still=still)
        raise RemoteError(f"{host.name}: scancel did not stop {still}")
    for action in remove:
        ex.run(action)
    journal.append(host.name, "kill", labels, result="ok", ids=f["ids"])
    held = f"held the pending elements of {', '.join(outcome.paused)}; " \
        if outcome.paused else ""
    return StepResult("decide", "changed", detail=f"kill: {held}scancelled {_labels(records)} "
                      f"({', '.join(f['ids'])}); removed {len(f['paths'])} checkpoint "
                      "file(s); RESTART re-adds them and releases the held",
                      data={"policy": "kill", **f["data"]},
                      value=outcome)


def _wait(ctx: DeployContext, groups: set[str], outcome: DecideOutcome) -> StepResult:
    timeout = ctx.options.wait_timeout
    started = time.monotonic()
    keys = {(t.group, t.label or "") for t in ctx.facts.audit.running if t.group in groups}
    left = _poll_gone(ctx, keys, timeout, "waiting")
    if left:
        raise RefusedError(
            f"{ctx.host.name}: still running after {timeout:g}s: "
            + ", ".join(f"{g}/{lbl}" for g, lbl in left)
            + "; nothing changed (raise --wait-timeout, or --on-running keep|kill)")
    return StepResult("decide", "ok", detail=f"wait: {len(keys)} running label(s) left "
                      f"squeue after {time.monotonic() - started:.1f}s",
                      data={"policy": "wait"}, value=outcome)


decide = PlannedStep(
    "decide",
    lambda ctx: plan_decide(ctx, _plan_kill, "squeue until {labels} are no longer active"),
    lambda ctx, plan, ex: apply_decide(ctx, plan, ex, _wait, _kill))


# ---- 7. RESTART: fresh `<label>-retry-N` arrays, one upload + one submit per batch ---------

def plan_restart(ctx: DeployContext) -> Plan:
    """The failed labels of every group and those DECIDE killed (or an interrupted deploy
    killed: the journal), planned by batch.retry from a fresh records read, grouped by
    batch: one action each (upload the lines + `slurm_feed.py submit`)."""
    host, opts = ctx.host, ctx.options
    decided = ctx.outcome(DecideOutcome)
    killed = decided.killed if decided else ()
    entries = list(journal.entries(host=host.name))
    forced = sorted({(k.group, k.label) for k in killed} | set(pending_kills(entries)))
    plan = retries.RetryPlan((), opts.retry_budget, opts.retry_all)
    where: dict[Key, str] = {}
    paused = decided.paused if decided else ()
    wanted = sorted(set(paused_by_deploy(entries)) | set(paused))
    waited = bool(decided and decided.policy == "wait")  # what ran may have failed since
    recs = read_records(ctx.remote) if ctx.facts.audit.failed or forced or wanted or waited \
        else None
    if recs is not None:
        where = {**recs.where, **{(k.group, k.label): k.batch for k in killed}}
        shared, on_host = teamjournal.team_readds(ctx.remote, entries)  # every operator's
        plan = retries.plan_retries(as_killed(recs.state, killed), budget=opts.retry_budget,
                                    used=retries.used_from_journal(shared),
                                    retry_all=opts.retry_all, forced=forced)
        teamjournal.guard_readds(ctx.remote, on_host, len(plan.to_add))  # exit 3 before any
    errors: list[str] = []
    by_batch: dict[str, list[retries.RetryDecision]] = {}
    for d in plan.to_add:
        bdir = where.get((d.group, d.label))
        if not bdir:
            errors.append(f"{d.group}/{d.label}: no batch dir to re-submit it from")
            continue
        by_batch.setdefault(bdir, []).append(d)
    adds: list[tuple[list[retries.RetryDecision], Action]] = []
    for bdir, decisions in by_batch.items():
        text = slurm_retry.retry_text(host, decisions)
        reasons = "; ".join(f"{d.label}: {d.reason}" for d in decisions)
        adds.append((decisions, Action(
            tuple(slurm_retry.retry_argv(host, bdir, text)),
            "re-submit " + ", ".join(f"{d.group}/{d.label} as {d.new_label}" for d in decisions)
            + f": a fresh array of just those lines ({reasons}); rechecked under the batch "
            "lock, never twice", check=False, uploads=slurm_retry.retry_uploads(bdir, text))))
    # release what a deploy held: this one (in --dry: would have), or one interrupted
    # before its RESTART (its journaled ids that squeue still shows held; never a hold of
    # someone else's)
    still = {str(e["id"]) for e in (recs.elements.values() if recs else ()) if is_held(e)}
    held = set(decided.held if decided else ()) | {
        (g, i) for g, i in held_by_deploy(entries) if i in still}
    releases = tuple(Action(tuple(sched.release_argv(sorted(i for hg, i in held if hg == g))),
                            f"release {g}'s pending elements held by a deploy, now that its "
                            "tasks are re-added", check=False, journal="group-start",
                            fields=(("group", g),
                                    ("reason", "released after deploy re-added its tasks")))
                     for g in wanted if any(hg == g for hg, _ in held))
    exhausted = tuple(f"{d.group}/{d.label}" for d in plan.exhausted)
    would = RestartOutcome(exhausted=exhausted, add_errors=tuple(errors),
                           resumed=tuple(wanted))
    row = _restart_result(plan, would, {"plan": plan.to_dict(), "re_added": [],
                                        "errors": errors, "resumed": list(wanted)},
                          would_add=bool(adds))
    return Plan((*(a for _, a in adds), *releases), dry=_no_daemon(row),
                handoff={"adds": adds, "plan": plan, "errors": errors,
                         "releases": releases, "resume": wanted})


def _no_daemon(row: StepResult) -> StepResult:
    return replace(row, detail=f"{row.detail}; {NO_DAEMON}")


def apply_restart(ctx: DeployContext, plan: Plan, ex: Executor) -> StepResult:
    host = ctx.host
    rp: retries.RetryPlan = plan.handoff["plan"]
    errors: list[str] = list(plan.handoff["errors"])
    re_added: list[ReAdded] = []
    for decisions, action in plan.handoff["adds"]:
        r = ex.run(action)
        try:
            summary = slurm_retry.summary_of(host, r.stdout, r.stderr, r.exited)
        except RemoteError as exc:
            errors.append(str(exc))
            for d in decisions:
                journal.append(host.name, retries.RE_ADD_ACTION, [d.new_label or ""],
                               result="failed", group=d.group, from_label=d.label,
                               reason=str(exc))
            continue
        added = {str(lbl): str(jid) for lbl, jid in summary.get("added", [])}
        errors += [": ".join(map(str, e)) if isinstance(e, list) else str(e)
                   for e in summary.get("errors", [])]
        for d in decisions:
            if d.new_label not in added:
                continue
            re_added.append(ReAdded(d.group, d.new_label, d.label, 0))
            journal.append(host.name, retries.RE_ADD_ACTION, [d.new_label], result="ok",
                           group=d.group, from_label=d.label, element=added[d.new_label],
                           reason=d.reason, scheduler="slurm")
    for action in plan.handoff["releases"]:
        ex.run(action)
    released = {dict(a.fields)["group"] for a in plan.handoff["releases"]}
    for g in plan.handoff["resume"]:  # wanted, nothing held any more: noted as resumed
        if g not in released:
            journal.append(host.name, "group-start", [], group=g,
                           reason="released after deploy re-added its tasks")
    outcome = RestartOutcome(tuple(re_added), tuple(f"{d.group}/{d.label}"
                                                    for d in rp.exhausted), tuple(errors),
                             tuple(plan.handoff["resume"]))
    result = _restart_result(rp, outcome, {
        "plan": rp.to_dict(), "re_added": [r.to_dict() for r in re_added], "errors": errors,
        "resumed": list(outcome.resumed)})
    if outcome.resumed:
        result = replace(result, detail=f"{result.detail}; released "
                         f"{', '.join(outcome.resumed)}")
    return _no_daemon(result)


restart = PlannedStep("restart", plan_restart, apply_restart)


# ---- 8. MONITOR: the re-added labels' states from records ------------------------------

NODES = "n/a (Slurm: the compute nodes are slurmctld's)"


def take_sample(ctx: DeployContext, started: float, swap_interval: float,
                watched: Sequence[ReAdded] = ()) -> Sample:
    recs = read_records(ctx.remote, readonly=True)  # a poll
    by_key = {(t.group, t.label): recs.state.state_of(t) for t in recs.state.tasks}
    tasks = {f"{r.group}/{r.label}": by_key.get((r.group, r.label), "missing")
             for r in watched}
    return Sample(round(time.monotonic() - started, 1), True, True, NODES, NODES, tasks, ())


def _plan_monitor(ctx: DeployContext) -> Plan:
    p = plan_monitor(ctx)
    if p.dry is None or p.dry.status == "skipped":
        return p
    return replace(p, dry=replace(p.dry, detail=f"would watch {ctx.options.watch:g}s: the "
                                  "re-added elements start and do not fail (records)"))


monitor = PlannedStep("monitor", _plan_monitor,
                      lambda ctx, plan, ex: apply_monitor(ctx, plan, ex, take_sample))


# ---- the protocol on a Slurm host --------------------------------------------------------

STEPS: tuple[Step, ...] = (audit, lock, decide, pull, verify, upgrade, restart, monitor)
