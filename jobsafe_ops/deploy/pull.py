"""The host's git checkout: the facts AUDIT reads (HEAD, branch, local changes, --ref), the
--ref preflight DECIDE runs before anything is killed, and the PULL step (step 4)."""

from __future__ import annotations

from collections.abc import Callable

from .. import journal
from ..errors import ConfigError, RefusedError, RemoteError
from ..facts.probe import sections
from ..inventory import Host
from ..remote import Remote
from ..shell import join
from . import lock as locking
from .context import DeployContext, GitFacts, PlannedStep, PullOutcome
from .plan import Action, Executor, Later, Plan, StepResult

# ---- facts (read at AUDIT) ----------------------------------------------------------------

def git_facts_command(project: str, ref: str | None, lock_path: str | None = None) -> str:
    def git(*args: str) -> str:
        return join(["git", "-C", project, *args])

    parts = [
        "echo @@head", git("rev-parse", "HEAD") + " 2>&1",
        "echo @@branch", git("rev-parse", "--abbrev-ref", "HEAD") + " 2>&1",
        "echo @@changes", git("status", "--porcelain", "--untracked-files=no") + " 2>&1",
    ]
    if ref:
        parts += ["echo @@ref", git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")]
    if lock_path:  # the deploy lock, read in the same round trip
        parts += ["echo @@lock", locking.read_command(lock_path)]
    return "; ".join([*parts, "echo @@end"])


def parse_git_facts(text: str, where: str) -> GitFacts:
    s = sections(text)
    head = (s.get("head") or [""])[0].strip()
    if len(head) != 40 or any(c not in "0123456789abcdef" for c in head):
        raise ConfigError(f"{where}: not a git checkout with a commit ({head or 'no output'}); "
                          "clone the project there first")
    ref = [ln.strip() for ln in s.get("ref", []) if ln.strip()]
    return GitFacts(head=head, branch=(s.get("branch") or ["?"])[0].strip(),
                    changes=tuple(ln.rstrip() for ln in s.get("changes", []) if ln.strip()),
                    ref_target=ref[0] if ref else None)


def read_git_facts(host: Host, remote: Remote, expand: Callable[[str], str], ref: str | None,
                   lock_path: str) -> tuple[GitFacts, locking.LockState]:
    """The checkout and the deploy lock, one round trip."""
    out = remote.run(git_facts_command(expand(host.project_dir), ref, lock_path),
                     check=False).stdout
    lock_state = locking.parse_read(lock_path, sections(out).get("lock", []))
    return parse_git_facts(out, f"{host.name}:{host.project_dir}"), lock_state


# ---- 4. PULL ---------------------------------------------------------------------------

def plan_pull(ctx: DeployContext) -> Plan:
    """Record the commit, fetch, re-check local changes, `reset --hard` to origin/<branch>
    or --ref (a rollback goes through the same checks). Nothing to do: no reset."""
    git, opts = ctx.facts.checkout, ctx.options
    before = git.head
    target_name = opts.ref or f"origin/{ctx.host.branch}"
    fetch = (ctx.git_argv("fetch", "--quiet", "--tags", "origin") if opts.ref
             else ctx.git_argv("fetch", "--quiet", "origin", ctx.host.branch))
    resolve = ctx.git_argv("rev-parse", "--verify", "--quiet", f"{target_name}^{{commit}}")
    status = ctx.git_argv("status", "--porcelain", "--untracked-files=no")
    fetched = Action(tuple(fetch), f"fetch, resolve {target_name}, re-check local changes",
                     suffix=f" && echo @@target && {join(resolve)}; echo @@changes; "
                     f"{join(status)}", check=False)
    reset = Action((*ctx.git_argv("reset", "--quiet", "--hard"),
                    Later(f"{target_name} after the fetch")),
                   f"move the checkout from {before[:10]}",
                   suffix=f" && {join(ctx.git_argv('rev-parse', 'HEAD'))}", check=False,
                   when=f"if that commit is not HEAD {before[:10]}, or local changes are "
                   "discarded")
    return Plan((fetched, reset), dry=StepResult(
        "pull", "dry", detail=f"would fetch and move {before[:10]} -> {target_name} (may "
        "change: the fetch decides)", data={"before": before, "target": target_name},
        value=PullOutcome(before, None)),
        handoff={"before": before, "target_name": target_name})


def apply_pull(ctx: DeployContext, plan: Plan, ex: Executor) -> StepResult:
    opts = ctx.options
    before, target_name = plan.handoff["before"], plan.handoff["target_name"]
    fetched, reset = plan.actions
    out = ex.run(fetched)
    s = sections(out.stdout)
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
        return StepResult("pull", "ok", detail=f"already at {before[:10]} ({target_name})",
                          data=data, value=PullOutcome(before, before))
    if changes:
        journal.append(ctx.host.name, "discard-local-changes", [], files=changes)
    moved = ex.run(reset, target)
    after = moved.stdout.strip().splitlines()[-1] if moved.ok and moved.stdout.strip() else ""
    journal.append(ctx.host.name, "reset", [], result="ok" if after == target else "failed",
                   before=before, after=after, ref=target_name)
    if after != target:
        raise RemoteError(f"{ctx.host.name}: git reset --hard {target[:10]} failed: "
                          f"{moved.stderr.strip() or moved.stdout.strip()}")
    verb = "rolled to" if opts.ref else "moved to"
    return StepResult("pull", "changed", detail=f"{before[:10]} {verb} {after[:10]} "
                      f"({target_name})" + (f"; discarded {len(changes)} local change(s)"
                                            if changes else ""),
                      data={**data, "after": after, "discarded": changes},
                      value=PullOutcome(before, after))


pull = PlannedStep("pull", plan_pull, apply_pull)
