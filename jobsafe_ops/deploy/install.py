"""The installed package: VERIFY (step 5) imports it in the host's venv and checks
--expect-version / --expect-code; UPGRADE (step 6) installs --version into a wheel install
with uv, retried (tenacity) only while the index does not list that version yet (AP-4)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    wait_exponential,
)

from .. import journal
from ..errors import RemoteError, StepFailed, VersionNotVisible
from .context import DeployContext, DeployOptions, Install, PlannedStep
from .plan import Action, Executor, Plan, StepResult

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


def plan_verify(ctx: DeployContext) -> Plan:
    """Import the package in the venv: version, __file__, editable or wheel (AP-5), and
    --expect-version / --expect-code (the fix by its source text, inspect.getsource).
    Reads only; in --dry it runs before the pull, so a mismatch is a warning there."""
    install = inspect_install(ctx)
    data = install.to_dict()
    if install.error:
        message = f"{ctx.host.name}: verify failed: {install.error}"
        return Plan(dry=StepResult("verify", "warn", detail=install.error, data=data,
                                   value=install),
                    handoff={"failed": message, "install": install})
    what = (f"{ctx.host.package} {install.version or install.dist_version} ({install.kind}"
            f"{': the pull is the upgrade (AP-5)' if install.editable else ''}) "
            f"from {install.file}")
    if _needs_upgrade(install, ctx.options):
        row = StepResult("verify", "ok", detail=f"{what}; upgrade to {ctx.options.version} "
                         "next, checks after it", data=data, value=install)
        return Plan(dry=row, handoff={"row": row})
    problems = check_expectations(install, ctx.options)
    if problems:
        return Plan(dry=StepResult("verify", "warn", detail=f"{what}; before the pull: "
                                   + "; ".join(problems), data=data, value=install),
                    handoff={"failed": f"{ctx.host.name}: verify failed: " + "; ".join(problems),
                           "install": install})
    checked = [c for c in (ctx.options.expected_version and "version",
                           ctx.options.expect_code and "code") if c]
    row = StepResult("verify", "ok", detail=what + (f"; {' and '.join(checked)} as expected"
                                                    if checked else ""), data=data,
                     value=install)
    return Plan(dry=row, handoff={"row": row})


def apply_verify(ctx: DeployContext, plan: Plan, ex: Executor) -> StepResult:
    if "failed" in plan.handoff:
        message, install = plan.handoff["failed"], plan.handoff["install"]
        raise StepFailed(message, StepResult("verify", "failed", detail=message,
                                             data=install.to_dict(), value=install))
    row: StepResult = plan.handoff["row"]
    return row


verify = PlannedStep("verify", plan_verify, apply_verify)


# ---- 6. UPGRADE ------------------------------------------------------------------------

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


class Deadline:
    """tenacity stop and wait that spend the whole --upgrade-timeout: each back-off sleep
    is cut to the time left, so the last attempt runs at the deadline, never after it.
    (`stop_before_delay` gave up as soon as the next full back-off would cross the
    deadline: 20 s stopped after 11 s, 300 s up to a minute early.)"""

    def __init__(self, budget: float, first_wait: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.deadline = clock() + budget
        self.backoff = wait_exponential(multiplier=first_wait, min=first_wait, max=60)

    def remaining(self) -> float:
        return max(0.0, self.deadline - self.clock())

    def stop(self, state: RetryCallState) -> bool:
        """After a failed attempt: stop once the deadline is reached (that was the last)."""
        return self.remaining() <= 0

    def wait(self, state: RetryCallState) -> float:
        return min(float(self.backoff(state)), self.remaining())


def upgrade_argv(ctx: DeployContext, version: str) -> list[str]:
    dist = ctx.host.dist_name
    return [ctx.host.uv, "pip", "install", "--python", ctx.python, "--refresh-package", dist,
            "--index-url", ctx.host.index_url, f"{dist}=={version}"]


def plan_upgrade(ctx: DeployContext) -> Plan:
    """Wheel installs only, when --version asks for another version. Bounded tenacity
    retry with exponential back-off on "not found" only; each attempt printed."""
    opts, install = ctx.options, ctx.outcome(Install)
    if install is None:
        raise RuntimeError("the verify step runs first")
    if not opts.version:
        return Plan(dry=StepResult("upgrade", "skipped", detail="no --version requested"))
    if install.editable:
        return Plan(dry=StepResult("upgrade", "skipped", detail="editable install: the pull "
                                   "updated the code; no package upgrade needed (AP-5)"))
    if not _needs_upgrade(install, opts):
        return Plan(dry=StepResult("upgrade", "ok", detail=f"{ctx.host.dist_name} "
                                   f"{opts.version} is already installed"))
    action = Action(tuple(upgrade_argv(ctx, opts.version)),
                    f"install {ctx.host.dist_name}=={opts.version} (wheel "
                    f"{install.dist_version})", check=False,
                    repeat=f"sent again while the index lacks it, up to "
                    f"{opts.upgrade_timeout:g}s")
    return Plan((action,), dry=StepResult(
        "upgrade", "dry", detail=f"would install {ctx.host.dist_name}=={opts.version} (wheel "
        f"{install.dist_version}), retrying up to {opts.upgrade_timeout:g}s while the index "
        "lacks it"), handoff={"install": install})


def apply_upgrade(ctx: DeployContext, plan: Plan, ex: Executor) -> StepResult:
    if not plan.actions:
        return plan.row
    opts, install = ctx.options, plan.handoff["install"]
    (action,) = plan.actions
    version = opts.version
    assert version is not None
    attempts: list[dict[str, Any]] = []
    started = time.monotonic()
    first_wait = min(5.0, max(0.5, opts.upgrade_timeout / 30))
    budget = Deadline(opts.upgrade_timeout, first_wait)

    def attempt() -> None:
        r = ex.run(action, timeout=max(10.0, budget.remaining()))
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

    try:
        Retrying(retry=retry_if_exception_type(VersionNotVisible), stop=budget.stop,
                 wait=budget.wait, before_sleep=note, reraise=True)(attempt)
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
    after = inspect_install(ctx)
    problems = check_expectations(after, opts)
    data = {"attempts": attempts, "install": after.to_dict()}
    if problems:
        message = f"{ctx.host.name}: after the upgrade: " + "; ".join(problems)
        raise StepFailed(message, StepResult("upgrade", "failed", detail=message, data=data,
                                             value=after))
    return StepResult("upgrade", "changed", detail=f"{ctx.host.dist_name} "
                      f"{install.dist_version} -> {after.dist_version} after {len(attempts)} "
                      f"attempt(s); checks passed", data=data, value=after)


upgrade = PlannedStep("upgrade", plan_upgrade, apply_upgrade)
