"""`inv deploy`: AUDIT -> LOCK -> DECIDE -> PULL -> VERIFY -> UPGRADE -> RESTART -> MONITOR.

Each step is `step(ctx) -> StepResult` (context.py); `STEPS` below is the whole protocol,
read top to bottom. AUDIT reads the facts (pueue and the probe, then git and the deploy
lock: two round trips) and freezes them (`context.Facts`); every later step is a
`context.PlannedStep`: it plans its actions (argv + why) from those facts and the re-reads
it must make at mutate time, every refusal comes before the first mutation, and one
`plan.Executor` lists the plan (`--dry`: the reads run for real, nothing is sent that
changes the host) or runs it, journaled, over one SSH connection. Each step's typed result
(`StepResult.value`) is what later steps and the verdict read.

The lock is taken right after the audit and released on every exit path (`run_deploy`'s
finally: errors, refusals, Ctrl-C). `inv retry-failed` (`retry_failed_steps`) reuses the
RESTART step under the same lock. The commands themselves are in cli.py. A Slurm host runs
the same protocol with the scheduler's own AUDIT, DECIDE, RESTART and MONITOR
(slurm_steps.STEPS; LOCK, PULL, VERIFY and UPGRADE are these).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from tenacity import Retrying, retry_if_result, stop_before_delay, wait_fixed

from .. import journal
from ..errors import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_REFUSED,
    JobsafeError,
    RefusedError,
    RemoteError,
    StepFailed,
)
from ..facts.audit import build_audit
from ..facts.checks import CheckResult
from ..facts.probe import run_probe, verdicts
from ..scheduler.pueue import FAILED_RESULTS
from . import lock as locking
from .context import (
    DecideOutcome,
    DeployContext,
    Facts,
    Install,
    LockOutcome,
    MonitorOutcome,
    PlannedStep,
    PullOutcome,
    ReAdded,
    RestartOutcome,
    Step,
)
from .decide import decide
from .install import upgrade, verify
from .plan import Action, Executor, Plan, StepResult, script
from .pull import pull, read_git_facts
from .restart import restart, restart_group

AUDIT_SWAP_SAMPLE = 0.2  # seconds; the monitor samples longer


# ---- 1. AUDIT --------------------------------------------------------------------------

def _read_pueue(ctx: DeployContext, group: str | None = None,
                **more: Any) -> Facts:
    """The probe (host facts and pueue state in one round trip) and the audit built on it."""
    probe = run_probe(ctx.remote, swap_interval=AUDIT_SWAP_SAMPLE)
    if probe.state is None:
        raise RemoteError(f"{ctx.host.name}: cannot audit pueue: {probe.pueue_error}")
    return Facts(probe, probe.state, build_audit(ctx.host.name, probe.state, group), **more)


def audit(ctx: DeployContext) -> StepResult:
    """Mandatory, also in --dry: pueue state by group (running / queued / failed / blocked
    with labels, commands, working dirs, exit codes), host resources, git checkout and the
    deploy lock (read with the git facts, one round trip)."""
    pueue = _read_pueue(ctx)
    git, lock_state = read_git_facts(ctx.host, ctx.remote, pueue.probe.expand, ctx.options.ref,
                                     locking.lock_path(ctx.host))
    facts = replace(pueue, git=git, lock=lock_state)
    ctx.learned(facts)
    probe, a = facts.probe, facts.audit
    counts = {k: sum(len(getattr(g, k)) for g in a.groups)
              for k in ("running", "queued", "failed", "blocked")}
    detail = ", ".join(f"{n} {k}" for k, n in counts.items())
    detail += f" in {len(a.groups)} group(s); HEAD {git.head[:10]} on {git.branch}"
    if git.changes:
        detail += f"; {len(git.changes)} local change(s)"
    return StepResult("audit", "ok", detail=detail, data={
        "audit": a.to_dict(), "probe": probe.to_dict(), "git": git.to_dict()}, value=facts)


def group_audit(group: str) -> Step:
    """`inv retry-failed`'s AUDIT: pueue only, one group."""
    def audit(ctx: DeployContext) -> StepResult:
        facts = _read_pueue(ctx, group)
        ctx.learned(facts)
        a = facts.audit
        g = a.groups[0]
        return StepResult("audit", "ok", detail=f"{group}: {len(g.running)} running, "
                          f"{len(g.queued)} queued, {len(g.failed)} failed, "
                          f"{len(g.blocked)} blocked", data={"audit": a.to_dict()},
                          value=facts)
    return audit


# ---- 2. LOCK ---------------------------------------------------------------------------

def release_action(path: str, owner: locking.LockOwner) -> Action:
    return script(locking.release_command(path, owner),
                  "release the lock (only if its owner file is still ours)", at_end=True,
                  when="at the end of the run, on every exit path")


def _break_action(path: str, seen: locking.LockState, owner: locking.LockOwner) -> Action:
    return script(locking.break_command(path, seen, owner.token),
                  f"--break-lock: {seen.describe()}; "
                  "removes only that very lock (same owner file), journaled")


def plan_lock(ctx: DeployContext) -> Plan:
    """Atomic `mkdir` lock on the host, held until the run ends (see run_deploy). A lock the
    audit saw held is refused (or broken first, with --break-lock)."""
    path = locking.lock_path(ctx.host)
    seen = ctx.facts.lock or locking.read(ctx.remote, path)  # retry-failed reads it here
    if seen.held and seen.owner is None and not seen.stale:
        # another acquire between its mkdir and its owner write: our mkdir attempt looks
        # again and names the holder (locking.acquire_by), or takes it if it went away
        seen = locking.LockState(path, False)
    owner = ctx.owner or locking.this_process(ctx.options.lock_ttl)
    if seen.held and not ctx.options.break_lock:
        return Plan(refusals=(locking.refusal(seen),), dry=StepResult(
            "lock", "refused", detail=seen.describe(), data=seen.to_dict()))
    acquire = script(locking.acquire_command(path, owner),
                     "take the deploy lock: mkdir is the test-and-set, owner.json inside")
    actions: tuple[Action, ...] = (acquire, release_action(path, owner))
    if seen.held:
        actions = (_break_action(path, seen, owner), *actions)
    return Plan(actions, dry=StepResult(
        "lock", "dry", detail=f"would take {path}" + (f" after breaking: {seen.describe()}"
                                                      if seen.held else ""),
        data=seen.to_dict(), value=LockOutcome(path, owner, seen if seen.held else None)),
        handoff={"path": path, "owner": owner, "seen": seen, "acquire": acquire})


def apply_lock(ctx: DeployContext, plan: Plan, ex: Executor) -> StepResult:
    path, owner = plan.handoff["path"], plan.handoff["owner"]
    seen: locking.LockState = plan.handoff["seen"]
    acquire: Action = plan.handoff["acquire"]
    # Set before the round trip: a Ctrl-C while it is in flight may come after the mkdir
    # on the host, and the release (which only removes a lock whose owner file is ours)
    # must still run. Cleared when the lock is known to be someone else's.
    ctx.held = LockOutcome(path, owner)
    broken = _break(ctx, ex, plan.actions[0], seen) if seen.held else None
    held = locking.acquire_by(lambda: ex.run(acquire).stdout, path)
    if held is not None and broken is None and ctx.options.break_lock:
        # taken after the audit, by a run the operator says is dead: break it, try again
        broken = _break(ctx, ex, _break_action(path, held, owner), held)
        held = locking.acquire_by(lambda: ex.run(acquire).stdout, path)
    if held is not None:
        ctx.held = None
        raise RefusedError(f"{ctx.host.name}: " + (
            f"lock re-taken right after --break-lock: {held.describe()}" if broken
            else locking.refusal(held)))
    outcome = LockOutcome(path, owner, broken)
    ctx.held = outcome
    detail = f"held: {path}"
    if broken is not None:
        who = broken.owner.describe() if broken.owner else "an unknown owner"
        detail += f" (broke the lock of {who}" + (f"; stale: {broken.stale})" if broken.stale
                                                   else ")")
    return StepResult("lock", "changed" if broken else "ok", detail=detail,
                      data={"path": path, "owner": owner.to_dict(),
                            "broken": broken.to_dict() if broken else None}, value=outcome)


def _break(ctx: DeployContext, ex: Executor, action: Action,
           seen: locking.LockState) -> locking.LockState:
    ok = ex.run(action).stdout.strip() == "BROKEN"
    journal.append(ctx.host.name, "lock-break", result="ok" if ok else "changed",
                   path=seen.path, owner=seen.owner.to_dict() if seen.owner else None,
                   stale=seen.stale, age=seen.age)
    return seen


lock = PlannedStep("lock", plan_lock, apply_lock)


# ---- 8. MONITOR ------------------------------------------------------------------------

@dataclass(frozen=True)
class Sample:
    at: float
    load_ok: bool
    swap_ok: bool
    load: str
    swap: str
    tasks: dict[str, str]  # "group/label" -> state
    paused_groups: tuple[str, ...]
    checks: tuple[CheckResult, ...] = ()  # the host file's when = "deploy-watch" checks

    @property
    def failed(self) -> list[str]:
        return [k for k, s in self.tasks.items() if s in FAILED_RESULTS]


def take_sample(ctx: DeployContext, started: float, swap_interval: float,
                watched: Sequence[ReAdded] = ()) -> Sample:
    probe = run_probe(ctx.remote, swap_interval=swap_interval, readonly=True,  # a poll
                      checks=ctx.host.checks_for("deploy-watch"))  # in the same round trip
    vs = {v.name: v for v in verdicts(probe, ctx.host)}
    by_key = {(t.group, t.label): t for t in (probe.state.tasks if probe.state else ())}
    tasks = {f"{r.group}/{r.label}": (by_key[(r.group, r.label)].state
                                      if (r.group, r.label) in by_key else "missing")
             for r in watched}
    paused = tuple(sorted(n for n, g in (probe.state.groups.items() if probe.state else ())
                          if g.status == "Paused"))
    load, swap = vs["load"], vs["swap"]
    return Sample(round(time.monotonic() - started, 1), load.ok, swap.ok,
                  f"{load.value} ({load.detail})", swap.value, tasks, paused, probe.checks)


def plan_monitor(ctx: DeployContext) -> Plan:
    """A post-deploy window (--watch, default 5 min): load < 0.9 x nproc, swap si/so = 0,
    and the re-added tasks start and do not fail. Ends early on a failed task. Reads
    only: nothing to list."""
    watch = ctx.options.watch
    if watch <= 0:
        return Plan(dry=StepResult("monitor", "skipped", detail="--watch 0"))
    own = ", ".join(c.name for c in ctx.host.checks_for("deploy-watch"))
    return Plan(dry=StepResult("monitor", "dry", detail=f"would watch {watch:g}s: load < 0.9 "
                               "x nproc, swap si/so = 0, re-added tasks start and do not fail"
                               + (f", checks {own} pass" if own else "")))


Sampler = Callable[[DeployContext, float, float, Sequence[ReAdded]], Sample]


def apply_monitor(ctx: DeployContext, plan: Plan, ex: Executor,
                  sample: Sampler | None = None) -> StepResult:
    """`sample`: the scheduler's own poll (deploy/slurm.py), the pueue probe's by default."""
    watch = ctx.options.watch
    sampler = sample or take_sample
    if watch <= 0:
        return plan.row
    restarted = ctx.outcome(RestartOutcome)
    re_added = restarted.re_added if restarted else ()
    samples: list[Sample] = []
    started = time.monotonic()
    swap_interval = min(1.0, max(0.2, watch / 10))

    def one() -> Sample:
        s = sampler(ctx, started, swap_interval, re_added)
        samples.append(s)
        return s

    Retrying(stop=stop_before_delay(watch), wait=wait_fixed(ctx.poll_interval(watch)),
             retry=retry_if_result(lambda s: not s.failed),
             retry_error_callback=lambda rs: rs.outcome.result() if rs.outcome else None)(one)
    last = samples[-1]
    failed = sorted({k for s in samples for k in s.failed})
    waiting = [k for k, st in last.tasks.items() if st in ("queued", "stashed")]
    stuck = [k for k in waiting if k.split("/", 1)[0] in last.paused_groups]
    # a [[checks]] row failing in any sample fails the window like load or swap (warn:
    # reported, the window stays ok)
    bad = {c.name: c for s in reversed(samples) for c in s.checks if not c.ok}
    alarms = sorted(n for n, c in bad.items() if c.alarm)
    ok = all(s.load_ok and s.swap_ok for s in samples) and not failed and not stuck \
        and not alarms
    worst_load = next((s for s in samples if not s.load_ok), last)
    worst_swap = next((s for s in samples if not s.swap_ok), last)
    parts = [f"{len(samples)} sample(s) over {time.monotonic() - started:.0f}s",
             f"load {worst_load.load}", f"swap {worst_swap.swap}"]
    if re_added:
        started_n = len(re_added) - len(waiting)
        parts.append(f"{started_n}/{len(re_added)} re-added started, {len(failed)} failed"
                     + (f" ({', '.join(failed)})" if failed else ""))
    if last.checks:
        parts.append(f"checks {len(last.checks) - len(bad)}/{len(last.checks)} ok" + "".join(
            f"; check {n} {bad[n].level.upper()}: {bad[n].message}" for n in sorted(bad)))
    if stuck:
        parts.append(f"queued in a paused group: {', '.join(stuck)} (pueue start --group G)")
    elif waiting:
        parts.append(f"still queued (group full): {', '.join(waiting)}")
    status = "ok" if ok and not waiting and not bad else "warn" if ok else "failed"
    return StepResult("monitor", status, detail="; ".join(parts),
                      data={"samples": [{**asdict(s), "checks": [c.to_dict() for c in s.checks]}
                                        for s in samples], "ok": ok},
                      value=MonitorOutcome(ok))


monitor = PlannedStep("monitor", plan_monitor, apply_monitor)


# ---- the protocol ----------------------------------------------------------------------

STEPS: tuple[Step, ...] = (audit, lock, decide, pull, verify, upgrade, restart, monitor)


def retry_failed_steps(group: str) -> tuple[Step, ...]:
    """`inv retry-failed --group G`: the RESTART step alone, for one group, under the lock."""
    return (group_audit(group), lock, restart_group(group))


CANCELLED = threading.Event()  # Ctrl-C seen by the main thread; workers stop between steps


@dataclass(frozen=True)
class DeployReport:
    host: str
    dry: bool
    steps: tuple[StepResult, ...]
    exit_code: int
    verdict: str
    policy: str = ""
    commit_before: str | None = None
    commit_after: str | None = None
    planned: tuple[str, ...] = ()  # --dry: the listing of `actions`
    error: str = ""  # the refusal or failure that stopped the run
    notes: tuple[str, ...] = ()  # reconnects of read-only polls (remote.Remote)
    actions: tuple[Action, ...] = ()  # --dry: the plan; else the mutations sent, in order

    @property
    def ok(self) -> bool:
        return self.exit_code == EXIT_OK

    def to_dict(self) -> dict[str, Any]:
        return {"host": self.host, "dry": self.dry, "exit_code": self.exit_code,
                "verdict": self.verdict, "policy": self.policy,
                "commit_before": self.commit_before, "commit_after": self.commit_after,
                "steps": [s.to_dict() for s in self.steps], "planned": list(self.planned),
                "error": self.error, "notes": list(self.notes)}


def run_deploy(ctx: DeployContext, steps: Sequence[Step] = STEPS) -> DeployReport:
    """Run the steps in order; stop at the first error or refusal (in --dry, walk through
    all of them). The lock is released on every exit path, Ctrl-C included."""
    code, error = EXIT_OK, ""
    try:
        for step in steps:
            if CANCELLED.is_set():
                raise KeyboardInterrupt
            started = time.monotonic()
            try:
                result = step(ctx)
            except JobsafeError as exc:
                status = "refused" if isinstance(exc, RefusedError) else "failed"
                partial = exc.result if isinstance(exc, StepFailed) else \
                    StepResult(step.__name__, status, detail=str(exc))
                ctx.results.append(replace(partial, seconds=time.monotonic() - started))
                code, error = exc.exit_code, str(exc)
                break
            ctx.results.append(replace(result, seconds=time.monotonic() - started))
    finally:
        _release(ctx)
    ex = ctx.executor
    if not error:
        code = _final_code(ctx)
    pull_ = ctx.outcome(PullOutcome)
    decided = ctx.outcome(DecideOutcome)
    before = _commit_before(ctx)
    after = pull_.after if pull_ and pull_.after else (None if ex.dry else before)
    return DeployReport(ctx.host.name, ex.dry, tuple(ctx.results), code,
                        _verdict(ctx, code, error), decided.policy if decided else "",
                        before, after, tuple(a.text() for a in ex.plan) if ex.dry else (),
                        error, tuple(ctx.remote.reconnects),
                        tuple(ex.plan) if ex.dry else tuple(ex.done))


def _commit_before(ctx: DeployContext) -> str | None:
    facts = ctx.outcome(Facts)
    return facts.git.head if facts and facts.git else None


def _release(ctx: DeployContext) -> None:
    held = ctx.held
    if held is None:
        return
    try:
        # idempotent and only ever our own lock: worth a fresh connection if the run's
        # died (noted in the report), unlike the mutating steps themselves
        note = ctx.remote.reopen_if_dropped("to release the deploy lock")
        if note:
            ctx.say(note)
        released = ctx.executor.run(release_action(held.path, held.owner)).stdout.strip()
        if released != "RELEASED":
            ctx.say(f"the lock {held.path} was no longer ours (broken by someone else?)")
    except Exception as exc:  # noqa: BLE001 - never mask the run's own outcome
        ctx.say(f"could not release the lock {held.path}: {exc}; it will read as stale")
    ctx.held = None


def _final_code(ctx: DeployContext) -> int:
    restarted = ctx.outcome(RestartOutcome)
    monitored = ctx.outcome(MonitorOutcome)
    if ctx.executor.refusals or (restarted and restarted.exhausted):
        return EXIT_REFUSED
    if (restarted and restarted.add_errors) or (monitored and not monitored.ok):
        return EXIT_FAILED
    return EXIT_OK


def _still_paused(ctx: DeployContext) -> list[str]:
    """Groups this run paused and did not resume (from what it sent)."""
    paused: dict[str, bool] = {}
    for a in ctx.executor.done:
        group = dict(a.fields).get("group")
        if a.journal in ("group-pause", "group-start") and group is not None:
            paused[str(group)] = a.journal == "group-pause"
    return [g for g, p in paused.items() if p]


def _verdict(ctx: DeployContext, code: int, error: str) -> str:
    name, ex = ctx.host.name, ctx.executor
    if ex.dry:
        if ex.refusals:
            return f"{name}: DRY RUN: would be REFUSED: {ex.refusals[0]}"
        return f"{name}: DRY RUN: {len(ex.plan)} remote command(s) would run; nothing changed"
    if error:
        paused = ", ".join(_still_paused(ctx))
        undo = "`scontrol release` of the held elements" if ctx.host.is_slurm \
            else "`pueue start --group G`"
        return f"{name}: FAILED (exit {code}): {error}" + (
            f"; groups {paused} stay paused (their queued tasks wait) until a deploy "
            f"completes, or {undo}" if paused else "")
    pulled = ctx.outcome(PullOutcome)
    before = _commit_before(ctx)
    after = pulled.after if pulled and pulled.after else before
    if ctx.command == "deploy":
        b, a = (before or "?")[:10], (after or "?")[:10]
        parts = [f"deployed {a}" + (f" (was {b})" if b != a else " (unchanged)")]
    else:
        parts = [ctx.command]
    install = ctx.outcome(Install)
    if install is not None:
        parts.append(f"{ctx.host.package} {install.version or install.dist_version} "
                     f"({install.kind})")
    decided = ctx.outcome(DecideOutcome)
    restarted = ctx.outcome(RestartOutcome)
    monitored = ctx.outcome(MonitorOutcome)
    if decided and decided.killed:
        parts.append(f"killed {len(decided.killed)}")
    if restarted and restarted.re_added:
        parts.append(f"re-added {len(restarted.re_added)}")
    facts = ctx.outcome(Facts)
    if decided and decided.policy == "keep" and facts and facts.audit.running:
        parts.append(f"{len(facts.audit.running)} kept running on the old code")
    if restarted and restarted.exhausted:
        parts.append(f"retry budget spent for {', '.join(restarted.exhausted)}")
    if monitored is not None:
        parts.append("monitor OK" if monitored.ok else "monitor FAILED")
    if ctx.remote.reconnects:
        parts.append(f"reconnected {len(ctx.remote.reconnects)}x for read-only polls "
                     "(see notes)")
    word = "OK" if code == EXIT_OK else f"ATTENTION (exit {code})"
    return f"{name}: {word}: " + "; ".join(parts)
