"""`inv deploy`: AUDIT -> LOCK -> DECIDE -> PULL -> VERIFY -> UPGRADE -> RESTART -> MONITOR.

Each step is `step(ctx) -> StepResult`; `STEPS` below is the whole protocol, read top to
bottom. Facts first (the audit reads pueue, the probe and git in two round trips), every
refusal before the first mutation, every mutation journaled, one SSH connection for all of
it. `--dry` runs the same steps: reads for real, mutations only recorded as the exact
commands they would run (an Ansible-style check mode that skips reads plans from nothing).

The lock is taken right after the audit and released on every exit path (`run_deploy`'s
finally: errors, refusals, Ctrl-C). `retry_failed_cmd` (`inv retry-failed`) reuses the
RESTART step under the same lock.
"""

from __future__ import annotations

import json
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    retry_if_result,
    stop_before_delay,
    wait_exponential,
    wait_fixed,
)

from . import journal
from . import lock as locking
from . import retry as retries
from .audit import Audit, build_audit, read_state
from .errors import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_PARTIAL,
    EXIT_REFUSED,
    ConfigError,
    JobsafeError,
    RefusedError,
    RemoteError,
)
from .inventory import Host
from .probe import Probe, run_probe, verdicts
from .pueue import PueueState, Task, add_argv, kill_argv, parse_task_id
from .remote import Remote, join

POLICIES = ("abort", "wait", "keep", "kill")
RUNNING = ("running", "paused")
AUDIT_SWAP_SAMPLE = 0.2  # seconds; the monitor samples longer
LOCK_MARGIN = 900.0  # seconds added to the longest possible run for the lock's TTL

Say = Callable[[str], None]


# ---- options, results, context ------------------------------------------------------------

@dataclass(frozen=True)
class DeployOptions:
    on_running: str | None = None  # None: ask on a TTY, else abort
    wait_timeout: float = 600.0
    ref: str | None = None
    version: str | None = None  # target: upgrade a wheel install to it; also expected
    expect_version: str | None = None  # expected only, never installs
    expect_code: str | None = None  # "module:function[:text]"
    discard_local_changes: bool = False
    break_lock: bool = False
    retry_all: bool = False
    retry_budget: int = retries.DEFAULT_BUDGET
    upgrade_timeout: float = 300.0
    watch: float = 300.0
    dry: bool = False
    poll: float | None = None  # poll interval for wait/kill/monitor (default: derived)
    kill_grace: float = 10.0  # SIGTERM, then SIGKILL after this long

    @property
    def expected_version(self) -> str | None:
        return self.version or self.expect_version

    @property
    def lock_ttl(self) -> float:
        return self.wait_timeout + self.upgrade_timeout + self.watch + 2 * self.kill_grace \
            + LOCK_MARGIN

    def validate(self) -> None:
        """Bad input is exit 2 before anything touches a host."""
        if self.on_running is not None and self.on_running not in POLICIES:
            raise ConfigError(f"--on-running {self.on_running!r}: use one of "
                              f"{', '.join(POLICIES)}")
        for flag, value in (("--wait-timeout", self.wait_timeout),
                            ("--upgrade-timeout", self.upgrade_timeout),
                            ("--watch", self.watch)):
            if value < 0:
                raise ConfigError(f"{flag} {value:g}: must be >= 0 seconds")
        if self.retry_budget < 0:
            raise ConfigError(f"--retry-budget {self.retry_budget}: must be >= 0")
        if self.version and self.expect_version and self.version != self.expect_version:
            raise ConfigError(f"--version {self.version} and --expect-version "
                              f"{self.expect_version} disagree; pass one")
        for flag, text in (("--ref", self.ref), ("--version", self.version),
                           ("--expect-version", self.expect_version)):
            if text is not None and (not text.strip() or text.startswith("-")):
                raise ConfigError(f"{flag} {text!r}: not a valid value")
        if self.expect_code is not None:
            mod, _, rest = self.expect_code.partition(":")
            fn = rest.partition(":")[0]
            if not mod or not fn or not all(p.isidentifier() for p in
                                            (*mod.split("."), *fn.split("."))):
                raise ConfigError(f"--expect-code {self.expect_code!r}: use module:function "
                                  "or module:function:text (e.g. mypkg.core:compute)")


@dataclass(frozen=True)
class StepResult:
    """One protocol step. status: ok | changed | skipped | dry | warn | refused | failed."""

    name: str
    status: str
    seconds: float = 0.0
    detail: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "seconds": round(self.seconds, 3),
                "detail": self.detail, "data": self.data}


@dataclass(frozen=True)
class KilledTask:
    """What a killed task needs to be re-added fresh; recorded *before* the kill."""

    group: str
    label: str
    command: str
    workdir: str
    id: int

    def to_dict(self) -> dict[str, Any]:
        return {"group": self.group, "label": self.label, "command": self.command,
                "workdir": self.workdir, "id": self.id}


@dataclass(frozen=True)
class GitFacts:
    head: str
    branch: str
    changes: tuple[str, ...]
    ref_target: str | None = None  # --ref resolved from the objects already on the host

    def to_dict(self) -> dict[str, Any]:
        return {"head": self.head, "branch": self.branch, "changes": list(self.changes),
                "ref_target": self.ref_target}


@dataclass(frozen=True)
class Install:
    version: str | None  # the module's __version__ (follows the checkout when editable)
    dist_version: str | None  # installed distribution metadata
    file: str | None
    editable: bool
    code: dict[str, Any] | None = None
    error: str | None = None

    @property
    def kind(self) -> str:
        return "editable" if self.editable else "wheel"

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "dist_version": self.dist_version, "file": self.file,
                "editable": self.editable, "kind": self.kind, "code": self.code,
                "error": self.error}


@dataclass(frozen=True)
class ReAdded:
    group: str
    label: str
    from_label: str
    id: int

    def to_dict(self) -> dict[str, Any]:
        return {"group": self.group, "label": self.label, "from": self.from_label,
                "id": self.id}


@dataclass
class DeployContext:
    """Everything the steps share: the host, its one Remote, the options and what the run
    has learned or done so far."""

    host: Host
    remote: Remote
    options: DeployOptions
    say: Say = lambda text: None
    ask: Callable[[Audit], str] | None = None  # the TTY prompt; None = not interactive
    command: str = "deploy"  # or "retry-failed" (the RESTART step alone)
    probe: Probe | None = None
    state: PueueState | None = None
    audit: Audit | None = None
    git: GitFacts | None = None
    lock_owner: locking.LockOwner | None = None
    lock_path: str = ""
    policy: str = ""
    killed: list[KilledTask] = field(default_factory=list)
    paused: list[str] = field(default_factory=list)  # groups this run paused, not resumed yet
    commit_before: str | None = None
    commit_after: str | None = None
    install: Install | None = None
    re_added: list[ReAdded] = field(default_factory=list)
    exhausted: list[str] = field(default_factory=list)
    add_errors: list[str] = field(default_factory=list)
    monitor_ok: bool | None = None
    planned: list[str] = field(default_factory=list)  # --dry: the mutations, verbatim
    refusals: list[str] = field(default_factory=list)  # --dry: what would be refused
    refusals_shown: int = 0

    def path(self, path: str) -> str:
        """'~/x' -> absolute on the host: pueue -w and quoted arguments never expand ~."""
        assert self.probe is not None, "the audit step runs first"
        return self.probe.expand(path)

    @property
    def project(self) -> str:
        return self.path(self.host.project_dir)

    @property
    def python(self) -> str:
        return self.path(self.host.python_path)

    def git_argv(self, *args: str) -> list[str]:
        return ["git", "-C", self.project, *args]

    def refuse(self, message: str) -> None:
        """A safety refusal: exit 3 now, or in --dry noted and the walk-through goes on."""
        if self.options.dry:
            self.refusals.append(message)
            return
        raise RefusedError(f"{self.host.name}: {message}")

    def would(self, command: str | Sequence[str]) -> str:
        text = command if isinstance(command, str) else join(command)
        self.planned.append(text)
        return text


Step = Callable[[DeployContext], StepResult]


class StepFailed(JobsafeError):
    """A step failed, and its result (facts gathered so far) belongs in the report."""

    def __init__(self, message: str, result: StepResult, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.result = result
        self.exit_code = exit_code


def _poll(ctx: DeployContext, window: float) -> float:
    return ctx.options.poll if ctx.options.poll else min(10.0, max(0.5, window / 20))


def _labels(tasks: Sequence[Any], limit: int = 8) -> str:
    names = [f"{t.group}/{t.label or '#' + str(getattr(t, 'id', '?'))}" for t in tasks]
    more = f" (+{len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


# ---- 1. AUDIT --------------------------------------------------------------------------

def _sections(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    current: str | None = None
    for line in text.splitlines():
        if line.startswith("@@"):
            current = line[2:].strip()
            out[current] = []
        elif current is not None:
            out[current].append(line)
    return out


def git_facts_command(ctx: DeployContext) -> str:
    parts = [
        "echo @@head", join(ctx.git_argv("rev-parse", "HEAD")) + " 2>&1",
        "echo @@branch", join(ctx.git_argv("rev-parse", "--abbrev-ref", "HEAD")) + " 2>&1",
        "echo @@changes",
        join(ctx.git_argv("status", "--porcelain", "--untracked-files=no")) + " 2>&1",
    ]
    if ctx.options.ref:
        parts += ["echo @@ref", join(ctx.git_argv(
            "rev-parse", "--verify", "--quiet", f"{ctx.options.ref}^{{commit}}"))]
    return "; ".join([*parts, "echo @@end"])


def parse_git_facts(text: str, where: str) -> GitFacts:
    s = _sections(text)
    head = (s.get("head") or [""])[0].strip()
    if len(head) != 40 or any(c not in "0123456789abcdef" for c in head):
        raise ConfigError(f"{where}: not a git checkout with a commit ({head or 'no output'}); "
                          "clone the project there first")
    ref = [ln.strip() for ln in s.get("ref", []) if ln.strip()]
    return GitFacts(head=head, branch=(s.get("branch") or ["?"])[0].strip(),
                    changes=tuple(ln.rstrip() for ln in s.get("changes", []) if ln.strip()),
                    ref_target=ref[0] if ref else None)


def audit(ctx: DeployContext) -> StepResult:
    """Mandatory, also in --dry: pueue state by group (running / queued / failed / blocked
    with labels, commands, working dirs, exit codes), host resources, git checkout."""
    probe = run_probe(ctx.remote, swap_interval=AUDIT_SWAP_SAMPLE)
    if probe.state is None:
        raise RemoteError(f"{ctx.host.name}: cannot audit pueue: {probe.pueue_error}")
    ctx.probe, ctx.state = probe, probe.state
    ctx.audit = build_audit(ctx.host.name, probe.state)
    ctx.git = parse_git_facts(ctx.remote.run(git_facts_command(ctx), check=False).stdout,
                              f"{ctx.host.name}:{ctx.host.project_dir}")
    ctx.commit_before = ctx.git.head
    a = ctx.audit
    counts = {k: sum(len(getattr(g, k)) for g in a.groups)
              for k in ("running", "queued", "failed", "blocked")}
    detail = ", ".join(f"{n} {k}" for k, n in counts.items())
    detail += f" in {len(a.groups)} group(s); HEAD {ctx.git.head[:10]} on {ctx.git.branch}"
    if ctx.git.changes:
        detail += f"; {len(ctx.git.changes)} local change(s)"
    return StepResult("audit", "ok", detail=detail, data={
        "audit": a.to_dict(), "probe": probe.to_dict(), "git": ctx.git.to_dict()})


# ---- 2. LOCK ---------------------------------------------------------------------------

def lock(ctx: DeployContext) -> StepResult:
    """Atomic `mkdir` lock on the host, held until the run ends (see run_deploy)."""
    path = locking.lock_path(ctx.host)
    ctx.lock_path = path
    if ctx.options.dry:
        seen = locking.read(ctx.remote, path)
        # the real command also writes owner.json inside and reads a held lock's owner
        ctx.would(f"mkdir {locking.lock_dir_arg(path)}  # the deploy lock, "
                  "owner.json inside; removed at the end")
        if seen.held and not ctx.options.break_lock:
            ctx.refuse(seen.describe())
            ctx.refusals_shown = len(ctx.refusals)
            return StepResult("lock", "refused", detail=seen.describe(), data=seen.to_dict())
        return StepResult("lock", "dry", detail=f"would take {path}"
                          + (f" after breaking: {seen.describe()}" if seen.held else ""),
                          data=seen.to_dict())
    owner = locking.this_process(ctx.options.lock_ttl)
    broken = locking.acquire(ctx.remote, ctx.host, path, owner,
                             break_stale=ctx.options.break_lock)
    ctx.lock_owner = owner
    detail = f"held: {path}"
    if broken is not None:
        who = broken.owner.describe() if broken.owner else "an unknown owner"
        detail += f" (broke the lock of {who}" + (f"; stale: {broken.stale})" if broken.stale
                                                   else ")")
    return StepResult("lock", "changed" if broken else "ok", detail=detail,
                      data={"path": path, "owner": owner.to_dict(),
                            "broken": broken.to_dict() if broken else None})


# ---- 3. DECIDE -------------------------------------------------------------------------

def decide(ctx: DeployContext) -> StepResult:
    """Every refusal before the first mutation: local changes, an unknown --ref, running
    tasks under `abort`. Then the running-tasks policy: wait / keep / kill (AP-1)."""
    assert ctx.audit is not None and ctx.git is not None
    if ctx.git.changes and not ctx.options.discard_local_changes:
        ctx.refuse(f"local changes in {ctx.host.project_dir}: {', '.join(ctx.git.changes)}; "
                   "commit and push them, or rerun with --discard-local-changes")
    _preflight_ref(ctx)
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


def _preflight_ref(ctx: DeployContext) -> None:
    """An unknown --ref is bad input (exit 2) found before anything is killed."""
    assert ctx.git is not None
    ref = ctx.options.ref
    if not ref or ctx.git.ref_target:
        return
    if ctx.options.dry:
        ctx.say(f"--ref {ref} is not known on the host yet; the pull fetches first")
        return
    ctx.remote.run(ctx.git_argv("fetch", "--quiet", "--tags", "origin"))
    found = ctx.remote.run(ctx.git_argv("rev-parse", "--verify", "--quiet",
                                        f"{ref}^{{commit}}"), check=False)
    if not found.ok:
        raise ConfigError(f"{ctx.host.name}: --ref {ref}: no such commit or tag in origin")
    ctx.git = replace(ctx.git, ref_target=found.stdout.strip())


def _busy(ctx: DeployContext, groups: set[str], ids: set[int] | None) -> list[Task]:
    ctx.state = read_state(ctx.remote)
    return [t for t in ctx.state.tasks if t.group in groups and t.state in RUNNING
            and (ids is None or t.id in ids)]


def _poll_until_idle(ctx: DeployContext, groups: set[str], window: float,
                     what: str, ids: set[int] | None = None) -> list[Task]:
    """Poll pueue until nothing runs in ``groups`` (or of ``ids``) or ``window`` passes."""

    def note(rs: RetryCallState) -> None:
        left = rs.outcome.result() if rs.outcome else []
        ctx.say(f"{what}: {len(left)} still running ({_labels(left, 3)})")

    result: list[Task] = Retrying(
        stop=stop_before_delay(window), wait=wait_fixed(_poll(ctx, window)),
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
    as_killed = _as_killed(state, records)
    plan = retries.plan_retries(as_killed, budget=ctx.options.retry_budget,
                                used=_journal_used(ctx), retry_all=ctx.options.retry_all,
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
    pause = [[pueue, "pause", "--group", g, "--wait"] for g in groups]
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
        argv = [ctx.host.pueue, "start", "--group", name]
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


def _as_killed(state: PueueState, records: Sequence[KilledTask]) -> PueueState:
    ids = {r.id for r in records}
    tasks = tuple(replace(t, state="killed") if t.id in ids else t for t in state.tasks)
    return replace(state, tasks=tasks)


# ---- 4. PULL ---------------------------------------------------------------------------

def pull(ctx: DeployContext) -> StepResult:
    """Record the commit, fetch, re-check local changes, `reset --hard` to origin/<branch>
    or --ref (a rollback goes through the same checks). Nothing to do: no reset."""
    assert ctx.git is not None
    opts, before = ctx.options, ctx.git.head
    target_name = opts.ref or f"origin/{ctx.host.branch}"
    fetch = (ctx.git_argv("fetch", "--quiet", "--tags", "origin") if opts.ref
             else ctx.git_argv("fetch", "--quiet", "origin", ctx.host.branch))
    if opts.dry:
        ctx.would(fetch)
        ctx.would(ctx.git_argv("reset", "--quiet", "--hard", ctx.git.ref_target or target_name))
        return StepResult("pull", "dry", detail=f"would fetch and move {before[:10]} -> "
                          f"{target_name} (may change: the fetch decides)",
                          data={"before": before, "target": target_name})
    resolve = ctx.git_argv("rev-parse", "--verify", "--quiet", f"{target_name}^{{commit}}")
    status = ctx.git_argv("status", "--porcelain", "--untracked-files=no")
    out = ctx.remote.run(f"{join(fetch)} && echo @@target && {join(resolve)}; "
                         f"echo @@changes; {join(status)}", check=False)
    s = _sections(out.stdout)
    if "target" not in s:
        raise RemoteError(f"{ctx.host.name}: git fetch failed: "
                          f"{(out.stderr.strip() or 'no output').splitlines()[-1]}")
    target = next((ln.strip() for ln in s["target"] if ln.strip()), "")
    if not target:
        raise ConfigError(f"{ctx.host.name}: {target_name}: no such commit after the fetch")
    changes = [ln.rstrip() for ln in s.get("changes", []) if ln.strip()]
    if changes and not opts.discard_local_changes:  # re-checked at mutate time
        raise RefusedError(f"{ctx.host.name}: local changes appeared in "
                           f"{ctx.host.project_dir}: {', '.join(changes)}")
    data = {"before": before, "target": target, "ref": target_name}
    if target == before and not changes:
        ctx.commit_after = before
        return StepResult("pull", "ok", detail=f"already at {before[:10]} ({target_name})",
                          data=data)
    if changes:
        journal.append(ctx.host.name, "discard-local-changes", [], files=changes)
    moved = ctx.remote.run(f"{join(ctx.git_argv('reset', '--quiet', '--hard', target))} && "
                           f"{join(ctx.git_argv('rev-parse', 'HEAD'))}", check=False)
    after = moved.stdout.strip().splitlines()[-1] if moved.ok and moved.stdout.strip() else ""
    journal.append(ctx.host.name, "reset", [], result="ok" if after == target else "failed",
                   before=before, after=after, ref=target_name)
    if after != target:
        raise RemoteError(f"{ctx.host.name}: git reset --hard {target[:10]} failed: "
                          f"{moved.stderr.strip() or moved.stdout.strip()}")
    ctx.commit_after = after
    verb = "rolled to" if opts.ref else "moved to"
    return StepResult("pull", "changed", detail=f"{before[:10]} {verb} {after[:10]} "
                      f"({target_name})" + (f"; discarded {len(changes)} local change(s)"
                                            if changes else ""),
                      data={**data, "after": after, "discarded": changes})


# ---- 5. VERIFY -------------------------------------------------------------------------

# Runs in the host's venv python (-I: the cwd and PYTHON* env cannot shadow the package).
# argv: package, dist, project dir, "module:function[:text]" or "".
VERIFY_SCRIPT = r"""
import hashlib, importlib, inspect, json, os, sys
import importlib.metadata as md
pkg, dist, project, code = sys.argv[1:5]
out = {"python": sys.executable}
try:
    m = importlib.import_module(pkg)
except Exception as e:
    out["error"] = "import %s failed: %s: %s" % (pkg, type(e).__name__, e)
    print(json.dumps(out)); sys.exit(0)
out["version"] = getattr(m, "__version__", None)
out["file"] = getattr(m, "__file__", None)
try:
    d = md.distribution(dist)
    out["dist_version"] = d.version
    du = d.read_text("direct_url.json")
    direct = json.loads(du) if du else {}
except md.PackageNotFoundError:
    out["dist_version"], direct = None, {}
proj = os.path.realpath(project)
f = os.path.realpath(out["file"] or "")
in_checkout = f.startswith(proj + os.sep) and "site-packages" not in f
out["editable"] = bool((direct.get("dir_info") or {}).get("editable")) or in_checkout
if code:
    mod, _, rest = code.partition(":")
    fn, _, needle = rest.partition(":")
    c = {"target": "%s:%s" % (mod, fn)}
    try:
        obj = modobj = importlib.import_module(mod)
        for part in fn.split("."):
            obj = getattr(obj, part)
        src = inspect.getsource(obj)
        c["sha256"] = hashlib.sha256(src.encode()).hexdigest()[:16]
        c["lines"] = len(src.splitlines())
        if needle:
            c["needle"] = needle
            c["needle_found"] = needle in src
        mf = inspect.getsourcefile(modobj) or ""
        rel = mod.replace(".", os.sep) + (
            os.sep + "__init__.py" if os.path.basename(mf) == "__init__.py" else ".py")
        cands = [os.path.join(proj, "src", rel), os.path.join(proj, rel)]
        co = next((p for p in cands if os.path.isfile(p)), None)
        c["checkout_file"] = co
        if co:
            with open(co, encoding="utf-8") as fh:
                c["matches_checkout"] = src in fh.read()
    except Exception as e:
        c["error"] = "%s: %s" % (type(e).__name__, e)
    out["code"] = c
print(json.dumps(out))
"""


def verify_argv(ctx: DeployContext) -> list[str]:
    return [ctx.python, "-I", "-c", VERIFY_SCRIPT, ctx.host.package, ctx.host.dist_name,
            ctx.project, ctx.options.expect_code or ""]


def parse_install(stdout: str) -> Install:
    lines = [ln for ln in stdout.strip().splitlines() if ln.startswith("{")]
    try:
        data = json.loads(lines[-1]) if lines else {}
    except json.JSONDecodeError:
        data = {}
    if not data:
        return Install(None, None, None, False, error="the venv python printed nothing useful")
    return Install(version=data.get("version"), dist_version=data.get("dist_version"),
                   file=data.get("file"), editable=bool(data.get("editable")),
                   code=data.get("code"), error=data.get("error"))


def inspect_install(ctx: DeployContext) -> Install:
    result = ctx.remote.run(verify_argv(ctx), check=False)
    install = parse_install(result.stdout)
    if install.error is None and not result.ok:
        first = (result.stderr.strip() or f"exit {result.exited}").splitlines()[-1]
        install = replace(install, error=f"{ctx.host.python}: {first}")
    return install


def check_expectations(install: Install, opts: DeployOptions) -> list[str]:
    """Mismatches between what is installed and what the operator expects (pure)."""
    problems = []
    if install.error:
        return [install.error]
    want = opts.expected_version
    have = install.version or install.dist_version
    if want and have != want:
        problems.append(f"version is {have}, expected {want}")
    code = install.code
    if opts.expect_code and code is not None:
        target = code.get("target", opts.expect_code)
        if code.get("error"):
            problems.append(f"FIX NOT APPLIED: {target}: {code['error']}")
        elif code.get("needle_found") is False:
            problems.append(f"FIX NOT APPLIED: {target} source lacks {code.get('needle')!r}")
        elif code.get("matches_checkout") is False:
            problems.append(f"FIX NOT APPLIED: installed {target} differs from the checkout "
                            f"({code.get('checkout_file')}): the running code is not the "
                            "pulled code (AP-5)")
    return problems


def _needs_upgrade(install: Install, opts: DeployOptions) -> bool:
    return bool(opts.version) and not install.editable and install.dist_version != opts.version


def verify(ctx: DeployContext) -> StepResult:
    """Import the package in the venv: version, __file__, editable or wheel (AP-5), and
    --expect-version / --expect-code (the fix by its source text, inspect.getsource)."""
    install = inspect_install(ctx)
    ctx.install = install
    data = install.to_dict()
    if install.error:
        if ctx.options.dry:
            return StepResult("verify", "warn", detail=install.error, data=data)
        message = f"{ctx.host.name}: verify failed: {install.error}"
        raise StepFailed(message, StepResult("verify", "failed", detail=message, data=data))
    what = (f"{ctx.host.package} {install.version or install.dist_version} ({install.kind}"
            f"{': the pull is the upgrade (AP-5)' if install.editable else ''}) "
            f"from {install.file}")
    if _needs_upgrade(install, ctx.options):
        return StepResult("verify", "ok", detail=f"{what}; upgrade to {ctx.options.version} "
                          "next, checks after it", data=data)
    problems = check_expectations(install, ctx.options)
    if problems and ctx.options.dry:
        return StepResult("verify", "warn", detail=f"{what}; before the pull: "
                          + "; ".join(problems), data=data)
    if problems:
        message = f"{ctx.host.name}: verify failed: " + "; ".join(problems)
        raise StepFailed(message, StepResult("verify", "failed", detail=message, data=data))
    checked = [c for c in (ctx.options.expected_version and "version",
                           ctx.options.expect_code and "code") if c]
    return StepResult("verify", "ok", detail=what + (f"; {' and '.join(checked)} as expected"
                                                     if checked else ""), data=data)


# ---- 6. UPGRADE ------------------------------------------------------------------------

class VersionNotVisible(RemoteError):
    """The index does not list the version (yet): the only outcome worth a retry (AP-4)."""


def install_outcome(exited: int, output: str, dist: str, version: str) -> str:
    """ok | not-found | error, from a `uv pip install dist==version` result (pure).

    Only "the index does not list this version (yet)" is retried: uv caches the index for
    10 minutes (astral-sh/uv#7207) and a CDN lags behind a publish (AP-4, G-9). The
    message must name *our* distribution: "foo was not found" for a dependency, a network
    error or a build failure fails fast."""
    if exited == 0:
        return "ok"
    text = " ".join(output.lower().split())
    name = re.sub(r"[-_.]+", "-", dist.lower())
    want = re.escape(f"{name}=={version.lower()}")
    patterns = (
        rf"there is no version of {want}\b",  # uv: the package exists, not this version
        rf"\b{re.escape(name)} was not found in the package registry",  # uv: no files at all
        rf"only (the following versions of )?{re.escape(name)}\b.*you require {want}\b",
        rf"no matching distribution found for {want}\b",  # pip's wording
    )
    return "not-found" if any(re.search(p, text) for p in patterns) else "error"


def upgrade_argv(ctx: DeployContext, version: str) -> list[str]:
    dist = ctx.host.dist_name
    return ["uv", "pip", "install", "--python", ctx.python, "--refresh-package", dist,
            "--index-url", ctx.host.index_url, f"{dist}=={version}"]


def upgrade(ctx: DeployContext) -> StepResult:
    """Wheel installs only, when --version asks for another version. Bounded tenacity
    retry with exponential back-off on "not found" only; each attempt printed."""
    opts, install = ctx.options, ctx.install
    assert install is not None
    if not opts.version:
        return StepResult("upgrade", "skipped", detail="no --version requested")
    if install.editable:
        return StepResult("upgrade", "skipped", detail="editable install: the pull updated "
                          "the code; no package upgrade needed (AP-5)")
    if not _needs_upgrade(install, opts):
        return StepResult("upgrade", "ok", detail=f"{ctx.host.dist_name} {opts.version} is "
                          "already installed")
    version = opts.version
    argv = upgrade_argv(ctx, version)
    if opts.dry:
        ctx.would(argv)
        return StepResult("upgrade", "dry", detail=f"would install {ctx.host.dist_name}=="
                          f"{opts.version} (wheel {install.dist_version}), retrying up to "
                          f"{opts.upgrade_timeout:g}s while the index lacks it")
    attempts: list[dict[str, Any]] = []
    started = time.monotonic()
    deadline = started + opts.upgrade_timeout

    def attempt() -> None:
        remaining = max(10.0, deadline - time.monotonic())
        r = ctx.remote.run(argv, check=False, timeout=remaining)
        outcome = install_outcome(r.exited, r.stdout + r.stderr, ctx.host.dist_name,
                                  version)
        lines = [ln.strip() for ln in (r.stderr or r.stdout).splitlines() if ln.strip()]
        why = next((ln for ln in lines if "cause:" in ln or "because" in ln.lower()),
                   lines[-1] if lines else "")
        attempts.append({"n": len(attempts) + 1, "outcome": outcome, "exit": r.exited,
                         "at": round(time.monotonic() - started, 1), "why": why})
        ctx.say(f"upgrade attempt {len(attempts)}: {outcome}" + (f" ({why})" if why else ""))
        if outcome == "not-found":
            raise VersionNotVisible(why)
        if outcome == "error":
            raise RemoteError(f"{ctx.host.name}: uv pip install {ctx.host.dist_name}=="
                              f"{opts.version} failed (not retried): {why}")

    def note(rs: RetryCallState) -> None:
        wait = rs.next_action.sleep if rs.next_action else 0
        ctx.say(f"  {ctx.host.dist_name}=={opts.version} not visible on {ctx.host.index_url}"
                f" yet; next attempt in {wait:.1f}s")

    first_wait = min(5.0, max(0.5, opts.upgrade_timeout / 30))
    try:
        Retrying(retry=retry_if_exception_type(VersionNotVisible),
                 stop=stop_before_delay(opts.upgrade_timeout),
                 wait=wait_exponential(multiplier=first_wait, min=first_wait, max=60),
                 before_sleep=note, reraise=True)(attempt)
    except RemoteError as exc:
        journal.append(ctx.host.name, "upgrade", [], result="failed", to=opts.version,
                       attempts=len(attempts), reason=str(exc))
        message = str(exc)
        if isinstance(exc, VersionNotVisible):
            message = (f"{ctx.host.name}: {ctx.host.dist_name}=={opts.version} still not on "
                       f"{ctx.host.index_url} after {len(attempts)} attempt(s) in "
                       f"{time.monotonic() - started:.0f}s (--upgrade-timeout "
                       f"{opts.upgrade_timeout:g}s): {exc}; check that it was published")
        raise StepFailed(message, StepResult("upgrade", "failed", detail=message,
                                             data={"attempts": attempts}),
                         exc.exit_code) from None
    journal.append(ctx.host.name, "upgrade", [], result="ok", before=install.dist_version,
                   to=opts.version, attempts=len(attempts))
    ctx.install = after = inspect_install(ctx)
    problems = check_expectations(after, opts)
    data = {"attempts": attempts, "install": after.to_dict()}
    if problems:
        message = f"{ctx.host.name}: after the upgrade: " + "; ".join(problems)
        raise StepFailed(message, StepResult("upgrade", "failed", detail=message, data=data))
    return StepResult("upgrade", "changed", detail=f"{ctx.host.dist_name} "
                      f"{install.dist_version} -> {after.dist_version} after {len(attempts)} "
                      f"attempt(s); checks passed", data=data)


# ---- 7. RESTART ------------------------------------------------------------------------

def _journal_used(ctx: DeployContext) -> dict[retries.Key, int]:
    return retries.used_from_journal(
        journal.entries(host=ctx.host.name, action=retries.RE_ADD_ACTION))


def readd(ctx: DeployContext, plan: retries.RetryPlan) -> None:
    """Fresh `pueue add` per planned retry (never `pueue restart`: in v4 it drops the
    dependencies and, looped, caused the 60 -> 12,800 task runaway)."""
    for d in plan.to_add:
        assert d.new_label is not None
        try:
            argv = add_argv(ctx.host.pueue, d.command, group=d.group, label=d.new_label,
                            workdir=d.workdir)
        except ConfigError as exc:
            ctx.add_errors.append(f"{d.group}/{d.label}: {exc}")
            continue
        if ctx.options.dry:
            ctx.would(argv)
            continue
        r = ctx.remote.run(argv, check=False)
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
            state = _as_killed(ctx.state, ctx.killed)
        else:
            state = read_state(ctx.remote)  # re-check at mutate time: labels added meanwhile
            ctx.state = state
        plan = retries.plan_retries(state, budget=ctx.options.retry_budget,
                                    used=retries.used_from_journal(
                                        e for e in entries
                                        if e.get("action") == retries.RE_ADD_ACTION),
                                    retry_all=ctx.options.retry_all, forced=forced)
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
    skipped = [d for d in plan.skipped]
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
        return [k for k, s in self.tasks.items() if s in
                ("failed", "killed", "errored", "failed_to_spawn", "dependency_failed")]


def take_sample(ctx: DeployContext, started: float, swap_interval: float) -> Sample:
    probe = run_probe(ctx.remote, swap_interval=swap_interval)
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

    Retrying(stop=stop_before_delay(watch), wait=wait_fixed(_poll(ctx, watch)),
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

    @property
    def ok(self) -> bool:
        return self.exit_code == EXIT_OK

    def to_dict(self) -> dict[str, Any]:
        return {"host": self.host, "dry": self.dry, "exit_code": self.exit_code,
                "verdict": self.verdict, "policy": self.policy,
                "commit_before": self.commit_before, "commit_after": self.commit_after,
                "steps": [s.to_dict() for s in self.steps], "planned": list(self.planned),
                "error": self.error}


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
                        tuple(ctx.planned), error)


def _release(ctx: DeployContext) -> None:
    if ctx.lock_owner is None:
        return
    try:
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
    word = "OK" if code == EXIT_OK else f"ATTENTION (exit {code})"
    return f"{name}: {word}: " + "; ".join(parts)


# ---- commands (tasks.py calls these through cli.main) ---------------------------------

_PROMPT_LOCK = threading.Lock()


def prompt_policy(audit_: Audit) -> str:
    """TTY only: show the audit, ask what to do with the running tasks."""
    from rich.prompt import Prompt

    from .console import err_console
    from .views import audit_view

    with _PROMPT_LOCK:  # several hosts: one question at a time
        err_console.print(audit_view(audit_))
        return Prompt.ask(f"{audit_.host}: {len(audit_.running)} task(s) running; what now",
                          choices=list(POLICIES), default="abort", console=err_console)


@contextmanager
def interrupts_as_keyboard_interrupt() -> Iterator[None]:
    """SIGTERM / SIGHUP (a closed terminal) unwind like Ctrl-C, so the lock is released."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        CANCELLED.set()
        raise KeyboardInterrupt

    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    for s in saved:
        signal.signal(s, handler)
    CANCELLED.clear()
    try:
        yield
    finally:
        for s, h in saved.items():
            signal.signal(s, h)


def _say_for(host: Host) -> Say:
    from .console import err_console

    return lambda text: err_console.print(f"[dim]{host.name}:[/] {text}", highlight=False,
                                          soft_wrap=True)


def deploy_host(host: Host, opts: DeployOptions,
                ask: Callable[[Audit], str] | None = None) -> DeployReport:
    from .remote import session

    with session(host) as remote:
        ctx = DeployContext(host=host, remote=remote, options=opts, say=_say_for(host),
                            ask=ask)
        return run_deploy(ctx)


def _finish(outcomes: list[Any], json_out: bool) -> int:
    """Tables (or JSON) per host, each stopped run's error as one line on stderr, and one
    exit code: the host's own, or 5 when only some of several hosts failed."""
    from .cli import finish
    from .console import console, err_console
    from .views import deploy_view

    code = finish(outcomes, json_out, lambda r: console.print(deploy_view(r)),
                  lambda r: int(r.exit_code))
    for o in outcomes:
        if o.error is None and o.result.error:
            err_console.print(f"[bold red]error:[/] {o.result.error}", highlight=False,
                              soft_wrap=True)
    codes = [o.error.exit_code if o.error else o.result.exit_code for o in outcomes]
    bad = [c for c in codes if c != EXIT_OK]
    if len(codes) > 1 and bad and len(bad) < len(codes):
        return EXIT_PARTIAL
    return code if len(codes) == 1 else max(codes, default=EXIT_OK)


def deploy_cmd(host: str, inventory: str | None, json_out: bool, **flags: Any) -> int:
    from .cli import fan_out, hosts_for

    opts = DeployOptions(**flags)
    opts.validate()
    hosts = hosts_for(host, inventory)
    interactive = opts.on_running is None and sys.stdin.isatty() and not opts.dry
    with interrupts_as_keyboard_interrupt():
        outcomes = fan_out(hosts, lambda h: deploy_host(h, opts,
                                                        prompt_policy if interactive else None))
    return _finish(outcomes, json_out)


def retry_failed_cmd(host: str, group: str, inventory: str | None, json_out: bool,
                     retry_all: bool = False, retry_budget: int = retries.DEFAULT_BUDGET,
                     dry: bool = False) -> int:
    """`inv retry-failed`: the RESTART step alone, for one group, under the deploy lock."""
    from .cli import fan_out, hosts_for, require

    require(group, "--group")
    if retry_budget < 0:
        raise ConfigError(f"--retry-budget {retry_budget}: must be >= 0")
    hosts = hosts_for(host, inventory)
    for h in hosts:
        h.group(group)  # unknown group: exit 2 before connecting
    opts = DeployOptions(retry_all=retry_all, retry_budget=retry_budget, dry=dry, watch=0)

    def one(h: Host) -> DeployReport:
        from .remote import session

        with session(h) as remote:
            ctx = DeployContext(host=h, remote=remote, options=opts, say=_say_for(h),
                                command=f"retry-failed --group {group}")
            return run_deploy(ctx, (_group_audit(group), lock, _restart_group(group)))

    with interrupts_as_keyboard_interrupt():
        outcomes = fan_out(hosts, one)
    return _finish(outcomes, json_out)


def _group_audit(group: str) -> Step:
    def audit(ctx: DeployContext) -> StepResult:
        probe = run_probe(ctx.remote, swap_interval=AUDIT_SWAP_SAMPLE)
        if probe.state is None:
            raise RemoteError(f"{ctx.host.name}: cannot audit pueue: {probe.pueue_error}")
        ctx.probe, ctx.state = probe, probe.state
        ctx.audit = build_audit(ctx.host.name, probe.state, group)
        g = ctx.audit.groups[0]
        return StepResult("audit", "ok", detail=f"{group}: {len(g.running)} running, "
                          f"{len(g.queued)} queued, {len(g.failed)} failed, "
                          f"{len(g.blocked)} blocked", data={"audit": ctx.audit.to_dict()})
    return audit


def _restart_group(group: str) -> Step:
    def restart(ctx: DeployContext) -> StepResult:
        state = ctx.state if ctx.options.dry else read_state(ctx.remote, group)
        assert state is not None
        plan = retries.plan_retries(state, groups=[group], budget=ctx.options.retry_budget,
                                    used=_journal_used(ctx), retry_all=ctx.options.retry_all)
        readd(ctx, plan)
        ctx.exhausted = [f"{d.group}/{d.label}" for d in plan.exhausted]
        return _restart_result(ctx, plan, {"plan": plan.to_dict(), "re_added": [
            r.to_dict() for r in ctx.re_added], "errors": ctx.add_errors})
    return restart
