"""`inv deploy`: AUDIT -> LOCK -> DECIDE -> PULL -> VERIFY -> UPGRADE -> RESTART -> MONITOR.

Each step is `step(ctx) -> StepResult` (deploy_context.py); `STEPS` below is the whole
protocol, read top to bottom. Facts first (the audit reads pueue, the probe and git in two
round trips), every refusal before the first mutation, every mutation journaled, one SSH
connection for all of it. `--dry` runs the same steps: reads for real, mutations only
recorded as the exact commands they would run (an Ansible-style check mode that skips
reads plans from nothing).

The lock is taken right after the audit and released on every exit path (`run_deploy`'s
finally: errors, refusals, Ctrl-C). `inv retry-failed` (`retry_failed_steps`) reuses the
RESTART step under the same lock. The commands themselves are in deploy_cli.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from tenacity import Retrying, retry_if_result, stop_before_delay, wait_fixed

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
from ..facts.probe import run_probe, verdicts
from ..scheduler.pueue import FAILED_RESULTS
from ..shell import program
from . import lock as locking
from .context import DeployContext, Step, StepResult
from .decide import decide
from .install import upgrade, verify
from .pull import pull, read_git_facts
from .restart import restart, restart_group

AUDIT_SWAP_SAMPLE = 0.2  # seconds; the monitor samples longer


# ---- 1. AUDIT --------------------------------------------------------------------------

def _read_pueue(ctx: DeployContext, group: str | None = None) -> None:
    """The probe (host facts and pueue state in one round trip) and the audit built on it."""
    probe = run_probe(ctx.remote, swap_interval=AUDIT_SWAP_SAMPLE)
    if probe.state is None:
        raise RemoteError(f"{ctx.host.name}: cannot audit pueue: {probe.pueue_error}")
    ctx.probe, ctx.state = probe, probe.state
    ctx.audit = build_audit(ctx.host.name, probe.state, group)


def audit(ctx: DeployContext) -> StepResult:
    """Mandatory, also in --dry: pueue state by group (running / queued / failed / blocked
    with labels, commands, working dirs, exit codes), host resources, git checkout."""
    _read_pueue(ctx)
    assert ctx.probe is not None and ctx.audit is not None
    ctx.git = read_git_facts(ctx)
    ctx.commit_before = ctx.git.head
    a = ctx.audit
    counts = {k: sum(len(getattr(g, k)) for g in a.groups)
              for k in ("running", "queued", "failed", "blocked")}
    detail = ", ".join(f"{n} {k}" for k, n in counts.items())
    detail += f" in {len(a.groups)} group(s); HEAD {ctx.git.head[:10]} on {ctx.git.branch}"
    if ctx.git.changes:
        detail += f"; {len(ctx.git.changes)} local change(s)"
    return StepResult("audit", "ok", detail=detail, data={
        "audit": a.to_dict(), "probe": ctx.probe.to_dict(), "git": ctx.git.to_dict()})


def group_audit(group: str) -> Step:
    """`inv retry-failed`'s AUDIT: pueue only, one group."""
    def audit(ctx: DeployContext) -> StepResult:
        _read_pueue(ctx, group)
        assert ctx.audit is not None
        g = ctx.audit.groups[0]
        return StepResult("audit", "ok", detail=f"{group}: {len(g.running)} running, "
                          f"{len(g.queued)} queued, {len(g.failed)} failed, "
                          f"{len(g.blocked)} blocked", data={"audit": ctx.audit.to_dict()})
    return audit


# ---- 2. LOCK ---------------------------------------------------------------------------

def lock(ctx: DeployContext) -> StepResult:
    """Atomic `mkdir` lock on the host, held until the run ends (see run_deploy)."""
    path = locking.lock_path(ctx.host)
    ctx.lock_path = path
    if ctx.options.dry:
        seen = locking.read(ctx.remote, path)
        # the real command also writes owner.json inside and reads a held lock's owner
        ctx.would(f"mkdir {program(path)}  # the deploy lock, "
                  "owner.json inside; removed at the end")
        if seen.held and not ctx.options.break_lock:
            ctx.refuse(seen.describe())
            ctx.refusals_shown = len(ctx.refusals)
            return StepResult("lock", "refused", detail=seen.describe(), data=seen.to_dict())
        return StepResult("lock", "dry", detail=f"would take {path}"
                          + (f" after breaking: {seen.describe()}" if seen.held else ""),
                          data=seen.to_dict())
    owner = locking.this_process(ctx.options.lock_ttl)
    # Set before the round trip: a Ctrl-C while it is in flight may come after the mkdir
    # on the host, and the release (which only removes a lock whose owner file is ours)
    # must still run. Cleared when the lock is known to be someone else's.
    ctx.lock_owner = owner
    try:
        broken = locking.acquire(ctx.remote, ctx.host, path, owner,
                                 break_stale=ctx.options.break_lock)
    except RefusedError:
        ctx.lock_owner = None
        raise
    detail = f"held: {path}"
    if broken is not None:
        who = broken.owner.describe() if broken.owner else "an unknown owner"
        detail += f" (broke the lock of {who}" + (f"; stale: {broken.stale})" if broken.stale
                                                   else ")")
    return StepResult("lock", "changed" if broken else "ok", detail=detail,
                      data={"path": path, "owner": owner.to_dict(),
                            "broken": broken.to_dict() if broken else None})


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

    @property
    def failed(self) -> list[str]:
        return [k for k, s in self.tasks.items() if s in FAILED_RESULTS]


def take_sample(ctx: DeployContext, started: float, swap_interval: float) -> Sample:
    probe = run_probe(ctx.remote, swap_interval=swap_interval, readonly=True)  # a poll
    vs = {v.name: v for v in verdicts(probe, ctx.host)}
    by_key = {(t.group, t.label): t for t in (probe.state.tasks if probe.state else ())}
    tasks = {f"{r.group}/{r.label}": (by_key[(r.group, r.label)].state
                                      if (r.group, r.label) in by_key else "missing")
             for r in ctx.re_added}
    paused = tuple(sorted(n for n, g in (probe.state.groups.items() if probe.state else ())
                          if g.status == "Paused"))
    load, swap = vs["load"], vs["swap"]
    return Sample(round(time.monotonic() - started, 1), load.ok, swap.ok,
                  f"{load.value} ({load.detail})", swap.value, tasks, paused)


def monitor(ctx: DeployContext) -> StepResult:
    """A post-deploy window (--watch, default 5 min): load < 0.9 x nproc, swap si/so = 0,
    and the re-added tasks start and do not fail. Ends early on a failed task."""
    watch = ctx.options.watch
    if watch <= 0:
        return StepResult("monitor", "skipped", detail="--watch 0")
    if ctx.options.dry:
        return StepResult("monitor", "dry", detail=f"would watch {watch:g}s: load < 0.9 x "
                          "nproc, swap si/so = 0, re-added tasks start and do not fail")
    samples: list[Sample] = []
    started = time.monotonic()
    swap_interval = min(1.0, max(0.2, watch / 10))

    def one() -> Sample:
        s = take_sample(ctx, started, swap_interval)
        samples.append(s)
        return s

    Retrying(stop=stop_before_delay(watch), wait=wait_fixed(ctx.poll_interval(watch)),
             retry=retry_if_result(lambda s: not s.failed),
             retry_error_callback=lambda rs: rs.outcome.result() if rs.outcome else None)(one)
    last = samples[-1]
    failed = sorted({k for s in samples for k in s.failed})
    waiting = [k for k, st in last.tasks.items() if st in ("queued", "stashed")]
    stuck = [k for k in waiting if k.split("/", 1)[0] in last.paused_groups]
    ok = all(s.load_ok and s.swap_ok for s in samples) and not failed and not stuck
    ctx.monitor_ok = ok
    worst_load = next((s for s in samples if not s.load_ok), last)
    worst_swap = next((s for s in samples if not s.swap_ok), last)
    parts = [f"{len(samples)} sample(s) over {time.monotonic() - started:.0f}s",
             f"load {worst_load.load}", f"swap {worst_swap.swap}"]
    if ctx.re_added:
        started_n = len(ctx.re_added) - len(waiting)
        parts.append(f"{started_n}/{len(ctx.re_added)} re-added started, {len(failed)} failed"
                     + (f" ({', '.join(failed)})" if failed else ""))
    if stuck:
        parts.append(f"queued in a paused group: {', '.join(stuck)} (pueue start --group G)")
    elif waiting:
        parts.append(f"still queued (group full): {', '.join(waiting)}")
    status = "ok" if ok and not waiting else "warn" if ok else "failed"
    return StepResult("monitor", status, detail="; ".join(parts),
                      data={"samples": [asdict(s) for s in samples], "ok": ok})


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
    planned: tuple[str, ...] = ()
    error: str = ""  # the refusal or failure that stopped the run
    notes: tuple[str, ...] = ()  # reconnects of read-only polls (remote.Remote)

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
    results: list[StepResult] = []
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
                results.append(replace(partial, seconds=time.monotonic() - started))
                code, error = exc.exit_code, str(exc)
                break
            results.append(replace(result, seconds=time.monotonic() - started))
    finally:
        _release(ctx)
    if not error:
        code = _final_code(ctx)
    return DeployReport(ctx.host.name, ctx.options.dry, tuple(results), code,
                        _verdict(ctx, code, error), ctx.policy, ctx.commit_before,
                        ctx.commit_after or (None if ctx.options.dry else ctx.commit_before),
                        tuple(ctx.planned), error, tuple(ctx.remote.reconnects))


def _release(ctx: DeployContext) -> None:
    if ctx.lock_owner is None:
        return
    try:
        # idempotent and only ever our own lock: worth a fresh connection if the run's
        # died (noted in the report), unlike the mutating steps themselves
        note = ctx.remote.reopen_if_dropped("to release the deploy lock")
        if note:
            ctx.say(note)
        if not locking.release(ctx.remote, ctx.lock_path, ctx.lock_owner):
            ctx.say(f"the lock {ctx.lock_path} was no longer ours (broken by someone else?)")
    except Exception as exc:  # noqa: BLE001 - never mask the run's own outcome
        ctx.say(f"could not release the lock {ctx.lock_path}: {exc}; it will read as stale")
    ctx.lock_owner = None


def _final_code(ctx: DeployContext) -> int:
    if ctx.refusals or ctx.exhausted:
        return EXIT_REFUSED
    if ctx.add_errors or ctx.monitor_ok is False:
        return EXIT_FAILED
    return EXIT_OK


def _verdict(ctx: DeployContext, code: int, error: str) -> str:
    name = ctx.host.name
    if ctx.options.dry:
        if ctx.refusals:
            return f"{name}: DRY RUN: would be REFUSED: {ctx.refusals[0]}"
        return f"{name}: DRY RUN: {len(ctx.planned)} remote command(s) would run; nothing changed"
    if error:
        paused = ", ".join(ctx.paused)
        return f"{name}: FAILED (exit {code}): {error}" + (
            f"; groups {paused} stay paused (their queued tasks wait) until a deploy "
            f"completes, or `pueue start --group G`" if paused else "")
    before, after = (ctx.commit_before or "?")[:10], (ctx.commit_after or "?")[:10]
    if ctx.command == "deploy":
        parts = [f"deployed {after}" + (f" (was {before})" if before != after
                                        else " (unchanged)")]
    else:
        parts = [ctx.command]
    if ctx.install is not None:
        parts.append(f"{ctx.host.package} {ctx.install.version or ctx.install.dist_version} "
                     f"({ctx.install.kind})")
    if ctx.killed:
        parts.append(f"killed {len(ctx.killed)}")
    if ctx.re_added:
        parts.append(f"re-added {len(ctx.re_added)}")
    if ctx.policy == "keep" and ctx.audit and ctx.audit.running:
        parts.append(f"{len(ctx.audit.running)} kept running on the old code")
    if ctx.exhausted:
        parts.append(f"retry budget spent for {', '.join(ctx.exhausted)}")
    if ctx.monitor_ok is not None:
        parts.append("monitor OK" if ctx.monitor_ok else "monitor FAILED")
    if ctx.remote.reconnects:
        parts.append(f"reconnected {len(ctx.remote.reconnects)}x for read-only polls "
                     "(see notes)")
    word = "OK" if code == EXIT_OK else f"ATTENTION (exit {code})"
    return f"{name}: {word}: " + "; ".join(parts)
