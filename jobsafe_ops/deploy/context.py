"""What every `inv deploy` step shares: the options, the `DeployContext` a step receives,
the frozen `Facts` AUDIT reads, the `StepResult` each step returns with its own typed
value (`LockOutcome`, `DecideOutcome`, `PullOutcome`, `Install`, `RestartOutcome`,
`MonitorOutcome`), and the small values the steps hand each other.

The steps live by protocol phase: AUDIT, LOCK, MONITOR and the runner in steps.py, DECIDE
in decide.py, PULL in pull.py, VERIFY and UPGRADE in install.py, RESTART in restart.py;
plan.py is the plan and its executor (no step branches on --dry); the commands
(`inv deploy`, `inv retry-failed`) are in cli.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from ..batch import retry as retries
from ..errors import ConfigError
from ..facts.audit import Audit
from ..facts.probe import Probe
from ..facts.slurm_probe import SlurmProbe
from ..flags import check_choice
from ..inventory import Host
from ..remote import Remote
from ..scheduler.pueue import PueueState
from . import lock as locking
from .plan import Executor, Plan, StepResult

POLICIES = ("abort", "wait", "keep", "kill")
# PEP 440 (packaging's VERSION_PATTERN, without the legacy spellings): what `uv pip install
# <dist>==V` and the package's __version__ can hold. Anything else is a typo.
VERSION = re.compile(
    r"^v?(?:\d+!)?\d+(?:\.\d+)*(?:[-_.]?(?:a|b|c|rc|alpha|beta|pre|preview)[-_.]?\d*)?"
    r"(?:-\d+|[-_.]?(?:post|rev|r)[-_.]?\d*)?(?:[-_.]?dev[-_.]?\d*)?"
    r"(?:\+[a-z0-9]+(?:[-_.][a-z0-9]+)*)?$", re.IGNORECASE)
# never part of one commit, tag or revision (HEAD~1 is fine; a..b is a range)
_BAD_REF = re.compile(r"[\x00-\x20\x7f]|\.\.")
T = TypeVar("T")
LOCK_MARGIN = 900.0  # seconds added to the longest possible run for the lock's TTL

Say = Callable[[str], None]


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
        check_choice(self.on_running, "--on-running", POLICIES)
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
            # a leading '-' would reach git/uv as an option (--upload-pack=...)
            if text is not None and (not text.strip() or text.startswith("-")):
                raise ConfigError(f"{flag} {text!r}: not a valid value; pass a "
                                  + ("commit or tag" if flag == "--ref" else "version"))
        if self.ref is not None and _BAD_REF.search(self.ref):
            raise ConfigError(f"--ref {self.ref!r} names no single commit (spaces, "
                              "control characters or '..'); e.g. --ref v1.1.0 or a SHA")
        for flag, text in (("--version", self.version),
                           ("--expect-version", self.expect_version)):
            if text is not None and not VERSION.match(text):
                raise ConfigError(f"{flag} {text!r} is not a version (PEP 440); "
                                  "write e.g. 1.2.0 or 1.2.0rc1")
        if self.expect_code is not None:
            mod, _, rest = self.expect_code.partition(":")
            fn = rest.partition(":")[0]
            if not mod or not fn or not all(p.isidentifier() for p in
                                            (*mod.split("."), *fn.split("."))):
                raise ConfigError(f"--expect-code {self.expect_code!r}: use module:function "
                                  "or module:function:text (e.g. mypkg.core:compute)")



@dataclass(frozen=True)
class KilledTask:
    """What a killed task needs to be re-added fresh; recorded *before* the kill."""

    group: str
    label: str
    command: str
    workdir: str
    id: int
    element: str = ""  # Slurm: the element id squeue showed ("12_3"); pueue: ""
    batch: str = ""  # Slurm: the batch dir its re-add is submitted from

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"group": self.group, "label": self.label,
                             "command": self.command, "workdir": self.workdir, "id": self.id}
        if self.element:
            d.update(element=self.element, batch=self.batch)
        return d


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


@dataclass(frozen=True)
class Facts:
    """What AUDIT read, frozen: every later step plans from it (and re-reads what it must
    re-check at mutate time). `git`/`lock` are None for retry-failed's one-group audit."""

    probe: Probe | SlurmProbe  # SlurmProbe on a `scheduler = "slurm"` host (deploy/slurm.py)
    state: PueueState
    audit: Audit
    git: GitFacts | None = None
    lock: locking.LockState | None = None

    def path(self, path: str) -> str:
        """'~/x' -> absolute on the host: pueue -w and quoted arguments never expand ~."""
        return self.probe.expand(path)

    @property
    def checkout(self) -> GitFacts:
        if self.git is None:
            raise RuntimeError("deploy's audit reads the git checkout; retry-failed's does not")
        return self.git


# ---- each step's own result (StepResult.value) ---------------------------------------------

@dataclass(frozen=True)
class LockOutcome:
    path: str
    owner: locking.LockOwner
    broken: locking.LockState | None = None


@dataclass(frozen=True)
class DecideOutcome:
    policy: str
    killed: tuple[KilledTask, ...] = ()  # (in --dry: would be killed)
    paused: tuple[str, ...] = ()  # groups paused (in --dry: would be)
    ref_target: str | None = None  # --ref as resolved (after a fetch when it was unknown)
    state: PueueState | None = None  # pueue after `wait` (fresh facts for RESTART)
    held: tuple[tuple[str, str], ...] = ()  # Slurm: (group, element id) held instead of a pause


@dataclass(frozen=True)
class PullOutcome:
    before: str
    after: str | None  # None in --dry: the fetch decides


@dataclass(frozen=True)
class RestartOutcome:
    re_added: tuple[ReAdded, ...] = ()
    exhausted: tuple[str, ...] = ()
    add_errors: tuple[str, ...] = ()
    resumed: tuple[str, ...] = ()


@dataclass(frozen=True)
class MonitorOutcome:
    ok: bool


@dataclass
class DeployContext:
    """What the steps share: the host, its one Remote, the options, the executor (the one
    place that lists or runs mutations), the frozen `Facts` from AUDIT and the results of
    the steps so far (each with its typed `value`). The only state a step changes is
    `held`: the lock to release on every exit path."""

    host: Host
    remote: Remote
    options: DeployOptions
    say: Say = lambda text: None
    ask: Callable[[Audit], str] | None = None  # the TTY prompt; None = not interactive
    command: str = "deploy"  # or "retry-failed" (the RESTART step alone)
    owner: locking.LockOwner | None = None  # the lock owner record (default: this process)
    results: list[StepResult] = field(default_factory=list)  # appended by run_deploy
    held: LockOutcome | None = None  # set before the lock's round trip, cleared on release
    _facts: Facts | None = None
    executor: Executor = field(init=False)

    def __post_init__(self) -> None:
        self.executor = Executor(self.remote, self.host.name, self.options.dry)

    @property
    def facts(self) -> Facts:
        if self._facts is None:
            raise RuntimeError("the audit step runs first")
        return self._facts

    def learned(self, facts: Facts) -> None:
        """AUDIT's facts, once."""
        if self._facts is not None:
            raise RuntimeError("the facts are read once, at AUDIT")
        self._facts = facts

    def outcome(self, kind: type[T]) -> T | None:
        """The latest step result of that type (None: no such step ran)."""
        return next((r.value for r in reversed(self.results) if isinstance(r.value, kind)),
                    None)

    def path(self, path: str) -> str:
        return self.facts.path(path)

    @property
    def project(self) -> str:
        return self.path(self.host.project_dir)

    @property
    def python(self) -> str:
        return self.path(self.host.python_path)

    def git_argv(self, *args: str) -> list[str]:
        return ["git", "-C", self.project, *args]

    def poll_interval(self, window: float) -> float:
        """--poll, or about 20 looks per waiting window (0.5 s to 10 s apart)."""
        return self.options.poll if self.options.poll else min(10.0, max(0.5, window / 20))


Step = Callable[[DeployContext], StepResult]


class PlannedStep:
    """A mutating step: `plan(ctx)` (facts and reads only), then in --dry the plan is
    listed and `Plan.dry` is the step's row; otherwise `apply(ctx, plan, executor)` runs
    it. Refusals stop the run before the first action (in --dry they are noted)."""

    def __init__(self, name: str, plan: Callable[[DeployContext], Plan],
                 apply: Callable[[DeployContext, Plan, Executor], StepResult]) -> None:
        self.__name__ = name
        self.plan = plan
        self.apply = apply

    def __call__(self, ctx: DeployContext) -> StepResult:
        ex = ctx.executor
        plan = self.plan(ctx)
        seen = len(ex.refusals)
        for message in plan.refusals:
            ex.refuse(message)
        if not ex.dry:
            return self.apply(ctx, plan, ex)
        ex.show(plan.actions)
        row = plan.dry or StepResult(self.__name__, "ok", detail="nothing to do")
        new = ex.refusals[seen:]
        if new:
            row = replace(row, status="refused", detail="; ".join([*new, row.detail]))
        return row
