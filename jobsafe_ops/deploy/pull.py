"""The host's git checkout: the facts AUDIT reads (HEAD, branch, local changes, --ref), the
--ref preflight DECIDE runs before anything is killed, and the PULL step (step 4)."""

from __future__ import annotations

from dataclasses import replace

from .. import journal
from ..errors import ConfigError, RefusedError, RemoteError
from ..facts.probe import sections
from ..shell import join
from .context import DeployContext, GitFacts, StepResult

# ---- facts (read at AUDIT) ----------------------------------------------------------------

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
    s = sections(text)
    head = (s.get("head") or [""])[0].strip()
    if len(head) != 40 or any(c not in "0123456789abcdef" for c in head):
        raise ConfigError(f"{where}: not a git checkout with a commit ({head or 'no output'}); "
                          "clone the project there first")
    ref = [ln.strip() for ln in s.get("ref", []) if ln.strip()]
    return GitFacts(head=head, branch=(s.get("branch") or ["?"])[0].strip(),
                    changes=tuple(ln.rstrip() for ln in s.get("changes", []) if ln.strip()),
                    ref_target=ref[0] if ref else None)


def read_git_facts(ctx: DeployContext) -> GitFacts:
    return parse_git_facts(ctx.remote.run(git_facts_command(ctx), check=False).stdout,
                           f"{ctx.host.name}:{ctx.host.project_dir}")


def preflight_ref(ctx: DeployContext) -> None:
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
