"""`inv submit-batch` on a Slurm host (`scheduler = "slurm"`): the same plan (INV-1/5/9 at
plan time), the same decisions (batch.plan.decide) and the same report, with job arrays:

1. one round trip: the cluster's facts (facts.slurm_probe: memory enforcement, MaxArraySize),
   this batch's elements in squeue and outcomes in the ledger (`slurm_feed.py status`), and
   the working directories that do not exist - verify before mutate;
2. decide per label exactly as on a pueue host (skip active or succeeded, re-add a failure
   as `<label>-retry-N` within the budget, hold the dependants of failures); INV-7 with
   Slurm's verdict (`--mem` is a hard cap only under task/cgroup + ConstrainRAMSpace +
   ConstrainSwapSpace, AllowedSwapSpace=0);
3. upload feeder.py, slurm_feed.py and ONE commands file; in the same session slurm_feed.py
   submits one `sbatch --array=0-K%P` per chunk (same group, phase, workdir, memory, after;
   at most MaxArraySize elements), rechecking squeue and the ledger under the batch lock so
   a rerun, or a run after a kill at any point, submits each label once;
4. journal what was submitted (the same lines as on pueue hosts).

Units mode (`--units`, automatic above UNITS_THRESHOLD jobs, as on a pueue host): one array
element per unit of commands (batch.plan.make_units), run `[units] parallel` at a time by
feeder.py's unit runner inside the element, each command with its own ledger lines and
log; the element asks for that many times a job's --mem and --cpus-per-task. The decisions
are batch.plan.decide's units rules: a finished unit is judged per command label, a failed
command re-added alone as `<label>-retry-N` (a direct element).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from .. import journal
from ..errors import ConfigError, RefusedError, RemoteError
from ..facts import slurm_probe
from ..facts.probe import sections
from ..hostside.bundle import bundle
from ..hostside.feeder import EXIT_LOCKED
from ..hostside.slurm_model import cancelled_jobs, is_cancelled
from ..inventory import Host
from ..remote import Remote
from ..scheduler import slurm
from ..scheduler.pueue import PueueState, Task
from ..shell import home_word, quote
from .model import UNITS_THRESHOLD, JobSpec, Plan
from .plan import (
    BatchReport,
    Item,
    Unit,
    absolute,
    command_line,
    decide,
    make_units,
    memcap_policy,
)
from .record import counted, journal_submit
from .retry import RE_ADD_ACTION, used_from_journal

BATCH_ROOT = "~/.local/state/jobsafe-ops/batches"
LOCK_WAIT = 300.0


def batch_status_state(status: Mapping[str, Any] | None) -> PueueState:
    """`slurm_feed.py status` (active elements + ledger outcomes) as the state decide()
    reads: one task per label (the ids are positions, never Slurm's), an element pending
    on an afterok that can never be met is blocked. An attempt `jobsafe cancel` recorded is
    a `cancelled` task (decide skips it: not run again) and the older attempts of its job
    are left out (not failed, never retried)."""
    tasks: list[Task] = []
    blocked: set[int] = set()
    status = status or {}
    ended = status.get("ended") or {}
    stopped = cancelled_jobs(ended)
    for label, e in ended.items():
        outcome = str(e.get("outcome") or "failed")
        if outcome != "cancelled" and is_cancelled(str(e.get("group", "")), label, stopped):
            continue
        if outcome == "cancelled":
            tasks.append(Task(id=len(tasks), group=str(e.get("group", "")), label=label,
                              command="", path="", state="cancelled"))
            continue
        tasks.append(Task(id=len(tasks), group=str(e.get("group", "")), label=label,
                          command=str(e.get("command") or ""), path=str(e.get("workdir") or ""),
                          state=outcome if outcome in ("success", "failed", "killed")
                          else "failed", exit_code=e.get("exit")))
    for label, e in (status.get("active") or {}).items():
        el = slurm.Element(str(e.get("id", "")), str(e.get("array", "")), None, "",
                           str(e.get("state", "")), str(e.get("reason", "")), "")
        if el.status == "blocked":
            blocked.add(len(tasks))
        tasks.append(Task(id=len(tasks), group=str(e.get("group", "")), label=label,
                          command="", path="", state="queued" if el.status == "blocked"
                          else el.status))
    return PueueState(tasks=tuple(tasks), groups={}, schema="slurm",
                      blocked_ids=frozenset(blocked))


def chunk_key(spec: JobSpec, after: Sequence[str]) -> str:
    """Jobs that can share one array: same group, phase, kind, workdir, memory and wait."""
    return chunk_key_of(spec.group, spec.workdir, spec.memory_max, spec.phase, spec.kind,
                        after)


def chunk_key_of(group: str, workdir: str, memory: int | None, phase: str = "",
                 kind: str = "job", after: Sequence[str] = ()) -> str:
    raw = json.dumps([group, phase, kind, workdir, memory, sorted(after)])
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def unit_resources(unit: Unit, host: Host, parallel: int) -> tuple[int | None, int]:
    """(--mem bytes, --cpus-per-task) of a unit's element: it runs up to `parallel` of its
    commands at once, so that many times the most one of them asks for."""
    g = host.group(unit.spec.group)
    at_once = max(1, min(parallel, len(unit.commands)))
    mems = [j.memory_max or g.job_memory for j in unit.jobs]
    mem = max((m for m in mems if m), default=None)
    return (mem * at_once if mem else None), (g.cpus or 1) * at_once


def commands_file(items: Sequence[Item], host: Host,
                  units: Mapping[str, Unit] | None = None, parallel: int = 1) -> str:
    """The JSON lines slurm_feed.py submits: every label to add, in plan order (a unit with
    its unit file and commands, written on the login node before its sbatch)."""
    lines = []
    for it in items:
        if it.action != "add" or it.job is None:
            continue
        spec = it.job
        g = host.group(spec.group)
        line: dict[str, Any] = {
            "label": it.new_label or it.label, "group": spec.group, "workdir": spec.workdir,
            "command": command_line(spec, False), "after": list(it.after),
            "chunk": chunk_key(spec, it.after), "mem": spec.memory_max or g.job_memory,
            "cpus": g.cpus, "throttle": g.parallel}
        unit = (units or {}).get(it.label)
        if unit is not None:
            line["command"] = unit.spec.command
            line["mem"], line["cpus"] = unit_resources(unit, host, parallel)
            line["unit_file"] = unit.file
            line["unit_commands"] = [{"label": lbl, "workdir": wd, "command": cmd}
                                     for lbl, wd, cmd in unit.commands]
        lines.append(json.dumps(line, separators=(",", ":")))
    return "".join(line + "\n" for line in lines)


def workdirs_script(workdirs: Sequence[str]) -> str:
    """The working directories (as written, ~ expanded there) that do not exist."""
    return "echo @@missing\n" + "".join(
        f"[ -d {home_word(w)} ] || printf '%s\\n' {quote(w)}\n" for w in workdirs)


def prepare(remote: Remote, plan: Plan, *, allow_uncapped: bool, dry: bool,
            units: bool | None = None, unit_size: int | None = None
            ) -> tuple[BatchReport, slurm_probe.SlurmProbe, dict[str, Unit]]:
    host = remote.host
    bdir_rel = f"{BATCH_ROOT}/{plan.playbook}"
    workdirs = sorted({j.workdir for j in (*plan.jobs, *plan.after)})
    text = remote.run(slurm_probe.probe_script((bdir_rel, plan.playbook),
                                               workdirs_script(workdirs)), check=False).stdout
    probe = slurm_probe.parse_probe(host.name, text)
    if probe.error:
        raise RemoteError(f"{host.name}: {probe.error}")
    missing = [w for w in sections(text).get("missing", []) if w.strip()]
    if missing:
        raise ConfigError(f"{host.name}: working directory {missing[0]} does not exist on the "
                          "login node (AP-11); deploy first or fix workdir")
    batch_dir = probe.expand(bdir_rel)
    memcap = memcap_policy(plan, host, probe.memcap, probe.memcap_reason, allow_uncapped)
    if memcap.wrap:  # Slurm's --mem is the cap; never a systemd-run scope inside a job
        memcap = replace(memcap, wrap=False, reason=memcap.reason.replace(
            "systemd-run --user --scope MemoryMax + MemorySwapMax=0", "sbatch --mem under "
            "task/cgroup (ConstrainRAMSpace + ConstrainSwapSpace, AllowedSwapSpace=0)"))
    jobs = [absolute(j, probe.expand) for j in plan.jobs]
    after = [absolute(j, probe.expand) for j in plan.after]
    use_units = units if units is not None else len(jobs) > UNITS_THRESHOLD
    unit_map: dict[str, Unit] = {}
    specs: list[JobSpec] = jobs
    if use_units:  # one array element per unit of commands
        unit_list = make_units(jobs, playbook=plan.playbook, size=unit_size or plan.unit_size,
                               parallel=plan.unit_parallel, batch_dir=batch_dir, wrap=False,
                               logs=f"{batch_dir}/logs")
        unit_map = {u.spec.label: u for u in unit_list}
        specs = [u.spec for u in unit_list]
    if after:  # the chain's first step waits for every job (or unit)
        after[0] = replace(after[0], after=tuple(s.label for s in specs))
    specs = [*specs, *after]
    state = batch_status_state(probe.status)
    used = used_from_journal(journal.entries(host=host.name, action=RE_ADD_ACTION), host.name)
    succeeded = frozenset(t.label for t in state.tasks if t.label and t.state == "success")
    items = decide(specs, state, {}, budget=plan.retry_budget, used=used, succeeded=succeeded,
                   units={label: u.jobs for label, u in unit_map.items()})
    sample = tuple((unit_map[i.label].commands[0][2] if i.label in unit_map else
                    command_line(i.job, False)) for i in items
                   if i.action == "add" and i.job)[:3]
    report = BatchReport(host=host.name, playbook=plan.playbook, dry=dry,
                         mode="units" if use_units else "arrays", planned=len(jobs),
                         items=tuple(items), memcap=memcap,
                         groups=tuple(dict.fromkeys(s.group for s in specs)),
                         batch_dir=batch_dir, pueue="sbatch", sample=sample,
                         units=len(unit_map))
    return report, probe, unit_map


def submit(remote: Remote, plan: Plan, *, dry: bool = False, allow_uncapped: bool = False,
           units: bool | None = None, unit_size: int | None = None) -> BatchReport:
    host = remote.host
    report, probe, unit_map = prepare(remote, plan, allow_uncapped=allow_uncapped, dry=dry,
                                      units=units, unit_size=unit_size)
    if dry:
        return counted(report, remote)
    if report.memcap.refusal:
        raise RefusedError(f"{host.name}: {report.memcap.refusal}")
    adding = report.count("add")
    if probe.max_jobs and adding > probe.max_jobs:
        raise RefusedError(f"{host.name}: {adding} jobs to submit but the cluster's "
                           f"MaxJobCount is {probe.max_jobs} (each array element counts; "
                           "sbatch would block): split the playbook into phases/batches "
                           "or have MaxJobCount raised")
    text = commands_file(report.items, host, unit_map, plan.unit_parallel)
    if not text:  # converged: nothing to upload, nothing to submit
        return counted(report, remote)
    bdir = report.batch_dir
    remote.run(["mkdir", "-p", f"{bdir}/arrays", f"{bdir}/logs", f"{bdir}/slurm",
                f"{bdir}/units"])
    remote.put_text(bundle("feeder"), f"{bdir}/feeder.py", 0o755)
    remote.put_text(bundle("slurm_feed"), f"{bdir}/slurm_feed.py", 0o755)
    remote.put_text(text, f"{bdir}/commands.jsonl")
    summary = run_feed(remote, bdir, plan, probe.max_array, text)
    added = tuple((str(lbl), int(str(eid).split("_")[0])) for lbl, eid in summary["added"])
    errors = tuple((str(lbl), str(e)) for lbl, e in summary.get("errors", []))
    existing = tuple(str(lbl) for lbl in summary.get("existing", []))
    journal_submit(host, plan, report, added, errors)
    return counted(replace(report, added=added, errors=errors, existing=existing), remote)


def feed_argv(batch_dir: str, plan: Plan, host: Host, max_array: int,
              commands: str) -> list[str]:
    return feed_argv_for(batch_dir, plan.playbook, host, commands, max_array=max_array,
                         pass_env=plan.pass_env)


def feed_argv_for(batch_dir: str, playbook: str, host: Host, text: str, *,
                  commands: str | None = None, max_array: int = slurm.DEFAULT_MAX_ARRAY,
                  pass_env: Sequence[str] = ()) -> list[str]:
    """`slurm_feed.py submit` of an uploaded commands file whose content is `text`."""
    opts = [f"--{k}={v}" for k, v in (("partition", host.partition),
                                      ("account", host.account), ("qos", host.qos)) if v]
    return ["python3", f"{batch_dir}/slurm_feed.py", "submit",
            commands or f"{batch_dir}/commands.jsonl",
            "--batch-dir", batch_dir, "--playbook", playbook,
            "--max-array", str(max_array), "--lock-wait", str(LOCK_WAIT),
            *(f"--sbatch-opt={o}" for o in opts),
            *(f"--pass-env={n}" for n in pass_env),
            "--sha256", hashlib.sha256(text.encode()).hexdigest(),
            "--count", str(text.count("\n"))]


def run_feed(remote: Remote, batch_dir: str, plan: Plan, max_array: int,
             commands: str) -> dict[str, Any]:
    host = remote.host
    result = remote.run(feed_argv(batch_dir, plan, host, max_array, commands), check=False)
    summary: dict[str, Any] = {}
    for line in result.stdout.splitlines():
        if line.startswith("@@summary "):
            summary = json.loads(line[len("@@summary "):])
    if result.exited == EXIT_LOCKED:
        raise RefusedError(f"{host.name}: another submit-batch is still submitting "
                           f"{batch_dir} after {LOCK_WAIT:g}s; wait for it, then rerun "
                           "(it converges)")
    if "fatal" in summary:
        raise RemoteError(f"{host.name}: slurm_feed: {summary['fatal']}")
    if "added" not in summary:
        detail = (result.stderr.strip() or result.stdout.strip() or "no output").splitlines()
        raise RemoteError(f"{host.name}: slurm_feed failed (exit {result.exited}): "
                          f"{detail[-1] if detail else ''}")
    return summary
