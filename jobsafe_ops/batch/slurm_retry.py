"""`inv retry-failed --group G` on a Slurm host: the failed labels of the group, across
its batches, re-submitted fresh as `<label>-retry-N` (a new job array of just those lines,
same command, workdir and group), classified and budgeted by batch.retry exactly as on a
pueue host (exit 137/143 and killed transient). With accounting, an element Slurm killed
before its ledger line is among them, its outcome read from sacct (slurm_model.sacct_outcome:
CANCELLED, OUT_OF_MEMORY, NODE_FAIL, PREEMPTED -> killed); a failed command of a unit is
re-submitted alone, as a direct element.

One round trip of facts (`slurm_feed.py records`: the ledger's newest outcome per label and
what squeue shows active; an attempt `jobsafe cancel` recorded as cancelled, and the older
attempts of its job, are left out: cancelled is not failed), then per batch one upload
and one `slurm_feed.py submit` - which rechecks squeue and the ledger under the batch
lock, so a rerun never submits a retry twice.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .. import journal
from ..deploy.plan import StepResult
from ..deploy.steps import DeployReport
from ..errors import EXIT_OK, RefusedError, RemoteError
from ..hostside.bundle import bundle
from ..hostside.model import BATCH_ROOT
from ..hostside.slurm_model import cancelled_jobs, is_cancelled
from ..inventory import Host
from ..remote import Remote
from ..scheduler.pueue import PueueState, Task
from ..shell import home_word, quote
from . import retry as retries
from .slurm_submit import chunk_key_of, feed_argv_for

RETRY_COMMANDS = "retry-commands.jsonl"


def records_command(group: str | None) -> str:
    """`slurm_feed.py records` of one group (None: every group, deploy's audit)."""
    feed = "$(ls -d " + home_word(BATCH_ROOT) + "/*/slurm_feed.py 2>/dev/null | head -n1)"
    only = f" --group {quote(group)}" if group is not None else ""
    return (f"f={feed}; if [ -n \"$f\" ]; then python3 \"$f\" records --root "
            f"{home_word(BATCH_ROOT)}{only}; else echo '{{}}'; fi")


def read_records(remote: Remote, group: str | None, *,
                 readonly: bool = False) -> dict[str, Any]:
    """One round trip: `records` of one group (None: every group), per batch name."""
    out = remote.run(records_command(group), check=False, readonly=readonly)
    try:
        facts = json.loads(out.stdout.strip().splitlines()[-1]) if out.stdout.strip() else {}
    except json.JSONDecodeError:
        facts = None
    if not isinstance(facts, dict):
        raise RemoteError(f"{remote.host.name}: cannot read the "
                          f"{'group' if group else 'groups'}' outcomes: "
                          f"{(out.stderr or out.stdout).strip()[-200:]}")
    return facts


def state_of(facts: Mapping[str, Any], group: str) -> tuple[PueueState, dict[str, str]]:
    """The group's labels as decide/plan_retries read them; label -> batch dir."""
    tasks: list[Task] = []
    where: dict[str, str] = {}
    for batch in facts.values():
        ended = batch.get("ended") or {}
        stopped = cancelled_jobs(ended)
        for label, rec in ended.items():
            outcome = str(rec.get("outcome") or "failed")
            if is_cancelled(str(rec.get("group", "")), label, stopped):
                continue  # `jobsafe cancel` stopped it (or a newer attempt): never retried
            tasks.append(Task(id=len(tasks), group=str(rec.get("group", "")), label=label,
                              command=str(rec.get("command") or ""),
                              path=str(rec.get("workdir") or ""),
                              state=outcome if outcome in ("success", "failed", "killed")
                              else "failed", exit_code=rec.get("exit")))
            where[label] = str(batch["dir"])
        for label in batch.get("active") or []:
            tasks.append(Task(id=len(tasks), group=group, label=label, command="", path="",
                              state="queued"))
            where[label] = str(batch["dir"])
    return PueueState(tasks=tuple(tasks), groups={}, schema="slurm"), where


def retry_failed(remote: Remote, group: str, *, budget: int, retry_all: bool,
                 dry: bool) -> DeployReport:
    host = remote.host
    host.group(group)  # declared (cli checked it before connecting)
    facts = read_records(remote, group)
    state, where = state_of(facts, group)
    entries = list(journal.entries(host=host.name))
    plan = retries.plan_retries(state, groups=[group], budget=budget,
                                used=retries.used_from_journal(entries), retry_all=retry_all)
    added: list[str] = []
    errors: list[list[str]] = []
    if not dry:
        by_batch: dict[str, list[retries.RetryDecision]] = {}
        for d in plan.to_add:
            by_batch.setdefault(where[d.label], []).append(d)
        for bdir, decisions in by_batch.items():
            summary = _submit(remote, host, bdir, decisions)
            added += [str(lbl) for lbl, _ in summary.get("added", [])]
            errors += summary.get("errors", [])
        if added:  # retry.py counts budgets from these lines
            journal.append(host.name, retries.RE_ADD_ACTION, added, "ok", group=group)
    data = {"plan": plan.to_dict(), "re_added": added, "errors": errors, "resumed": []}
    if errors:
        code, status = RemoteError.exit_code, "failed"
    elif plan.exhausted:
        code, status = RefusedError.exit_code, "refused"
    else:
        code, status = EXIT_OK, "dry" if dry else ("changed" if added else "ok")
    detail = (f"would re-submit {', '.join(d.new_label or '' for d in plan.to_add)}" if dry
              and plan.to_add else f"re-submitted {', '.join(added)}" if added
              else "nothing to retry")
    if plan.exhausted:
        detail += f"; retry budget spent: {', '.join(d.label for d in plan.exhausted)}"
    step = StepResult("restart", status, detail=detail, data=data)
    verdict = {EXIT_OK: "OK"}.get(code, "FAILED" if errors else "REFUSED")
    return DeployReport(host.name, dry, (step,), code, verdict,
                        error="" if code == EXIT_OK else detail)


def retry_text(host: Host, decisions: list[retries.RetryDecision]) -> str:
    """The commands file of a fresh array of just these lines, as `<label>-retry-N`."""
    lines = []
    for d in decisions:
        spec = host.group(d.group)
        lines.append(json.dumps({
            "label": d.new_label, "group": d.group, "workdir": d.workdir,
            "command": d.command, "after": [],
            "chunk": chunk_key_of(d.group, d.workdir, spec.job_memory),
            "mem": spec.job_memory, "cpus": spec.cpus, "throttle": spec.parallel},
            separators=(",", ":")))
    return "".join(line + "\n" for line in lines)


def retry_uploads(bdir: str, text: str) -> tuple[tuple[str, str, int], ...]:
    """What one re-submit writes into the batch dir first: the feeders and the lines."""
    return ((f"{bdir}/feeder.py", bundle("feeder"), 0o755),
            (f"{bdir}/slurm_feed.py", bundle("slurm_feed"), 0o755),
            (f"{bdir}/{RETRY_COMMANDS}", text, 0o644))


def retry_argv(host: Host, bdir: str, text: str) -> list[str]:
    playbook = bdir.rstrip("/").rsplit("/", 1)[-1]
    return feed_argv_for(bdir, playbook, host, text, commands=f"{bdir}/{RETRY_COMMANDS}")


def summary_of(host: Host, stdout: str, stderr: str, exited: int) -> dict[str, Any]:
    """slurm_feed submit's `@@summary` line (a fatal one, or none, is a RemoteError)."""
    for line in stdout.splitlines():
        if line.startswith("@@summary "):
            summary: dict[str, Any] = json.loads(line[len("@@summary "):])
            if "fatal" in summary:
                raise RemoteError(f"{host.name}: slurm_feed: {summary['fatal']}")
            return summary
    raise RemoteError(f"{host.name}: slurm_feed failed (exit {exited}): "
                      f"{(stderr or stdout).strip()[-200:]}")


def _submit(remote: Remote, host: Host, bdir: str,
            decisions: list[retries.RetryDecision]) -> dict[str, Any]:
    text = retry_text(host, decisions)
    for path, content, mode in retry_uploads(bdir, text):
        remote.put_text(content, path, mode)
    result = remote.run(retry_argv(host, bdir, text), check=False)
    return summary_of(host, result.stdout, result.stderr, result.exited)
