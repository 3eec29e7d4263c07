"""submit-batch's decisions, pure: data in, data out, no I/O (submit.py is the one that
talks to the host and calls these).

* `decide` per label: skip queued/running/succeeded, re-add failed ones under retry.py's
  rules as `<label>-retry-N`, hold dependants of failures;
* `memcap_policy`: refuse uncapped memory (INV-7) unless --allow-uncapped or the host
  file declares `memory_cap = false` (then run uncapped, and say so); refuse nothing
  else silently; `command_line` wraps each job in its cap;
* `hygiene`: `pueue clean -g G --successful-only` when the state file is large (AP-10),
  never in a group whose dependency chain is unfinished;
* `make_units` (units mode) and `commands_file`, the JSON lines the on-host feeder reads;
* `BatchReport`: the result of a run, its exit code and its `--json` dict.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence, Set
from dataclasses import dataclass, field, replace
from typing import Any

from ..errors import ConfigError, RefusedError, RemoteError
from ..facts.ledger import ledger_path
from ..facts.ledger import wrap as wrap_command
from ..hostside.feeder import LEDGER_MARK
from ..hostside.model import unit_label
from ..inventory import Host
from ..scheduler.pueue import PueueState, Task
from ..shell import exports, join
from .model import JobSpec, Plan
from .retry import (
    DEPENDENCY,
    attempt_of,
    base_label,
    classify,
    latest_attempt,
    plan_retries,
    retry_label,
)

# ---- decisions (pure) -------------------------------------------------------------------

@dataclass(frozen=True)
class Item:
    """What submit-batch does with one label of the plan."""

    label: str  # the playbook's label (attempt 0)
    group: str
    action: str  # add | skip | failed | refused | held
    reason: str
    new_label: str | None = None  # the label added: label, or label-retry-N
    after: tuple[str, ...] = ()  # resolved labels the new task waits for
    kind: str = "job"  # job | after | unit
    job: JobSpec | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "group": self.group, "action": self.action,
                "reason": self.reason, "new_label": self.new_label, "kind": self.kind,
                "after": len(self.after)}


def decide(specs: Sequence[JobSpec], state: PueueState, receipts: Mapping[str, str], *,
           budget: int, used: Mapping[tuple[str, str], int] | None = None,
           succeeded: Set[str] = frozenset(),
           units: Mapping[str, Sequence[JobSpec]] | None = None) -> list[Item]:
    """Per label, in plan order (upstream before dependants). Identity is (group, label)
    and every attempt of a label shares its base (INV-8); the dedup memory is the pueue
    state (merged with the ledger's outcomes of cleaned tasks, ledger.merge) plus the
    host's receipts. A receipted label pueue no longer has is done only if the ledger
    says it succeeded (`succeeded`), or if its receipt predates the ledger (no mark).
    `units`: a unit's jobs; a finished unit whose commands have outcomes on record is
    judged per command label, exactly like direct mode."""
    retry = plan_retries(state, groups={s.group for s in specs}, budget=budget, used=used)
    ruling = {(d.group, d.base): d for d in retry.decisions}
    attempts: dict[tuple[str, str], list[Task]] = {}
    for t in state.tasks:
        if t.label is not None:
            attempts.setdefault((t.group, base_label(t.label)), []).append(t)
    receipted = {base_label(label) for label in receipts}
    proven = {base_label(label) for label in succeeded} | {
        base_label(label) for label, value in receipts.items() if not value.endswith(LEDGER_MARK)}
    unproven = receipted - proven
    # base label -> ("add", new) | ("active", label) | ("done", None) | ("bad", label)
    outcome: dict[str, Outcome] = {}
    items: list[Item] = []
    for spec in specs:
        members = (units or {}).get(spec.label)
        if members and not attempts.get((spec.group, spec.label)) and any(
                attempts.get((j.group, j.label)) for j in members):
            inner = decide([replace(j, after=()) for j in members], state, receipts,
                           budget=budget, used=used, succeeded=succeeded)
            bad = [i for i in inner if i.action not in ("add", "skip")]
            retried = [i for i in inner if i.action == "add"]
            items.append(Item(spec.label, spec.group, "skip", "finished; its commands are "
                              "judged one by one (units mode)", kind=spec.kind, job=spec))
            items.extend(inner)
            outcome[spec.label] = (("bad", f"{spec.label} (failed commands)") if bad else
                                   ("bad", f"{spec.label} (commands re-added; rerun after "
                                    "they finish)") if retried else ("done", None))
            continue
        if spec.label in unproven and not attempts.get((spec.group, spec.label)) and not (
                members and all(base_label(j.label) in proven for j in members)):
            item, result = _lost(spec, used or {}, budget, outcome)
            outcome[spec.label] = result
            items.append(item)
            continue
        item, result = _one(spec, state, attempts.get((spec.group, spec.label), []),
                            receipted, ruling, outcome)
        if item.action == "add":
            item = _wire(item, spec, outcome)
            result = ("add", item.new_label) if item.action == "add" else (
                "bad", f"{spec.label} held")
        outcome[spec.label] = result
        items.append(item)
    return items


Outcome = tuple[str, str | None]


def _lost(spec: JobSpec, used: Mapping[tuple[str, str], int], budget: int,
          outcome: Mapping[str, Outcome]) -> tuple[Item, Outcome]:
    """Submitted (marked receipt), cleaned from pueue, and no outcome on record: it never
    ran (its dependency failed, or it was removed), so it is not done: re-added fresh."""
    def item(action: str, reason: str, new: str | None = None) -> Item:
        return Item(spec.label, spec.group, action, reason, new, kind=spec.kind, job=spec)

    failed_up = [u for u in spec.after if outcome.get(u, ("bad", ""))[0] == "bad"]
    if failed_up:
        return item("held", f"cleaned without an outcome, and {failed_up[0]} is not "
                    "retried"), ("bad", spec.label)
    spent = used.get((spec.group, spec.label), 0)
    if spent >= budget:
        return item("refused", f"cleaned without an outcome on record; retry budget spent "
                    f"({spent}/{budget})"), ("bad", spec.label)
    new = retry_label(spec.label, spent + 1)
    return item("add", "cleaned from pueue without an outcome on record (it never ran); "
                f"retry {spent + 1}/{budget}", new), ("add", new)


def _one(spec: JobSpec, state: PueueState, tasks: list[Task], receipted: set[str],
         ruling: Mapping[tuple[str, str], Any],
         outcome: Mapping[str, Outcome]) -> tuple[Item, Outcome]:
    """-> (item, what dependants see: add/active/done/bad)."""
    def item(action: str, reason: str, new: str | None = None) -> Item:
        return Item(spec.label, spec.group, action, reason, new, kind=spec.kind, job=spec)

    bad: Outcome = ("bad", spec.label)
    if not tasks:
        if spec.label in receipted:
            return item("skip", "submitted before (receipt on the host); no longer in the "
                        "pueue state, so it finished and was cleaned"), ("done", None)
        return item("add", "new", spec.label), ("add", spec.label)
    active = [t for t in tasks if t.is_active]
    latest = latest_attempt(tasks)
    if active:
        t = latest_attempt(active)
        if state.state_of(t) == "blocked":
            return item("held", f"{t.label} is queued behind a failed or missing dependency "
                        "(blocked); repair the chain first"), bad
        return item("skip", f"already {t.state} as {t.label}"), ("active", t.label)
    if latest.state == "cancelled":  # `jobsafe cancel` recorded it (ledger.merge, slurm_submit)
        return item("skip", f"cancelled as {latest.label} (jobsafe cancel): not run "
                    "again"), ("bad", "cancelled")
    if latest.state == "success":
        return item("skip", f"succeeded as {latest.label}"), ("done", None)
    if classify(latest) == DEPENDENCY:
        failed_up = [u for u in spec.after if outcome.get(u, bad)[0] == "bad"]
        if failed_up:
            return item("held", f"its dependency failed and {failed_up[0]} is not retried"), bad
        spent = max(attempt_of(t.label or "") for t in tasks)
        new = retry_label(spec.label, spent + 1)
        return item("add", "its dependency failed; resubmitted after the retried upstream",
                    new), ("add", new)
    d = ruling.get((spec.group, spec.label))
    if d is None:  # not reachable: plan_retries rules on every failed latest attempt
        return item("failed", f"{latest.label} {latest.state}"), bad
    if d.action == "add":
        return item("add", d.reason, d.new_label), ("add", d.new_label)
    if d.action == "exhausted":
        return item("refused", d.reason), bad
    return item("failed", d.reason), bad


def _wire(item: Item, spec: JobSpec, outcome: Mapping[str, Outcome]) -> Item:
    """Dependencies by label: wait for new or active upstream tasks; a finished one needs no
    wait (and pueue rejects --after on ids that were cleaned); a failed one holds us."""
    deps: list[str] = []
    for up in spec.after:
        kind, value = outcome.get(up, ("bad", f"{up} is unknown"))
        if kind == "bad":
            return replace(item, action="held", new_label=None,
                           reason=f"waits for {up}, which is {value or 'not runnable'}")
        if kind in ("add", "active") and value:
            deps.append(value)
    return replace(item, after=tuple(deps))


@dataclass(frozen=True)
class Memcap:
    required: bool
    wrap: bool
    probe_ok: bool
    reason: str
    refusal: str | None = None
    # who decided that jobs the playbook caps run without a cap: "memory_cap = false"
    # (the host file) or "--allow-uncapped" (this run); None when nothing is uncapped
    uncapped_by: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"required": self.required, "wrap": self.wrap, "probe_ok": self.probe_ok,
                "reason": self.reason, "refusal": self.refusal,
                "uncapped_by": self.uncapped_by}


def memcap_policy(plan: Plan, host: Host, probe_ok: bool, probe_reason: str,
                  allow_uncapped: bool) -> Memcap:
    """INV-7: on a host with memory_cap = true (the default) every job runs under
    systemd-run MemoryMax + MemorySwapMax=0, or not at all unless --allow-uncapped.

    `memory_cap = false` is the operator's declaration that caps are not required on the
    host: a job with memory_max is still capped where the probe says caps work; where
    they do not, it runs uncapped instead of being refused (no --allow-uncapped needed),
    and the summary, the JSON (`uncapped_by`) and the journal say so."""
    specs = (*plan.jobs, *plan.after)
    if not host.memory_cap:
        wanted = [s.label for s in specs if s.memory_max]
        if not wanted:
            return Memcap(False, False, probe_ok, "no memory_max in the playbook and "
                          f"memory_cap = false for {host.name}")
        if probe_ok:
            return Memcap(False, True, probe_ok, "systemd-run --user --scope MemoryMax + "
                          "MemorySwapMax=0 on the jobs with memory_max (memory_cap = false: "
                          "the others run uncapped)")
        return Memcap(False, False, probe_ok,
                      f"UNCAPPED (memory_cap = false in {host.source or 'the host file'}): "
                      f"{len(wanted)} job(s) with memory_max run without a memory cap "
                      f"(caps do not work on {host.name}: {probe_reason})",
                      uncapped_by="memory_cap = false")
    uncapped = [s.label for s in specs if not s.memory_max]
    problem = None
    if not probe_ok:
        problem = f"memory caps do not work on {host.name}: {probe_reason}"
    elif uncapped:
        problem = (f"{host.name} requires memory caps (memory_cap = true) but {len(uncapped)} "
                   f"job(s) have no memory_max (e.g. {uncapped[0]!r}); set memory_max in "
                   "the playbook")
    if problem is None:
        return Memcap(True, True, probe_ok, "systemd-run --user --scope MemoryMax + "
                      "MemorySwapMax=0 on every job")
    if allow_uncapped:
        return Memcap(True, probe_ok, probe_ok, f"UNCAPPED (--allow-uncapped): {problem}",
                      uncapped_by="--allow-uncapped")
    return Memcap(True, False, probe_ok, problem,
                  refusal=f"{problem}; refusing to run jobs without a hard memory cap "
                  "(INV-7). Fix the host or rerun with --allow-uncapped")


def _size_text(n: int) -> str:
    for unit, div in (("T", 1024**4), ("G", 1024**3), ("M", 1024**2), ("K", 1024)):
        if n % div == 0:
            return f"{n // div}{unit}"
    return str(n)


def command_line(spec: JobSpec, wrap: bool) -> str:
    """The command pueue runs (via sh -c). Env overrides are scoped to this one task's
    shell (INV-5: never a global export); the cap wraps the whole command (INV-7, G-10:
    without MemorySwapMax=0 the cap is soft)."""
    inner = spec.command
    if spec.env:
        inner = exports(spec.env) + "; " + inner
    if wrap and spec.memory_max:
        return join(["systemd-run", "--user", "--scope", "--quiet",
                     "-p", f"MemoryMax={_size_text(spec.memory_max)}",
                     "-p", "MemorySwapMax=0", "--", "sh", "-c", inner])
    return inner


@dataclass(frozen=True)
class Clean:
    group: str
    run: bool
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"group": self.group, "run": self.run, "reason": self.reason}


def unfinished_chain(state: PueueState, group: str) -> list[Task]:
    """Unfinished tasks that wait on tasks of `group`, or sit in it with dependencies:
    ids are reused after a clean, so such a chain must finish first (AP-7, Slurm pains)."""
    in_group = {t.id for t in state.in_group(group)}
    return [t for t in state.tasks if not t.is_done and t.dependencies
            and (t.group == group or in_group.intersection(t.dependencies))]


def hygiene(state: PueueState, groups: Sequence[str], state_size: int | None,
            warn_mb: float) -> list[Clean]:
    """AP-10: every add rewrites the whole state file. Past the warn size, clean the
    batch's groups first, successful tasks only (failed ones are the retry evidence)."""
    if state_size is None or state_size <= warn_mb * 1024**2:
        return []
    why = f"state file {state_size / 1024**2:.1f} MB > {warn_mb:g} MB"
    out = []
    for g in groups:
        chain = unfinished_chain(state, g)
        if chain:
            out.append(Clean(g, False, f"{why}, but not cleaned: {chain[0].label or chain[0].id}"
                             " waits on an unfinished dependency chain"))
        elif any(t.state == "success" for t in state.in_group(g)):
            out.append(Clean(g, True, why))
    return out


# ---- units mode (pure) ------------------------------------------------------------------

@dataclass(frozen=True)
class Unit:
    spec: JobSpec  # kind="unit": one pueue task running `feeder.py unit FILE`
    file: str
    commands: tuple[tuple[str, str, str], ...]  # (label, workdir, command)
    jobs: tuple[JobSpec, ...] = field(default=(), compare=False, repr=False)


def make_units(jobs: Sequence[JobSpec], *, playbook: str, size: int, parallel: int,
               batch_dir: str, wrap: bool, logs: str | None = None) -> list[Unit]:
    """Chunk each phase's jobs into units of `size`. A unit's label carries a digest of its
    member labels, so a changed job list yields new units (the done receipts inside keep
    already-finished commands from running twice). `logs`: a directory where each command
    writes its own `<label>.log` (Slurm) instead of the unit's output."""
    by_phase: dict[str, list[JobSpec]] = {}
    phase_of: dict[str, str] = {}
    for j in jobs:
        by_phase.setdefault(j.phase, []).append(j)
        phase_of[j.label] = j.phase
    units: list[Unit] = []
    phase_units: dict[str, list[str]] = {}
    for phase, members in by_phase.items():
        # every job of a phase waits for the same upstream phase (after_phase)
        upstream = members[0].after
        after = tuple(phase_units.get(phase_of[upstream[0]], ())) if upstream else ()
        for start in range(0, len(members), size):
            chunk = members[start:start + size]
            digest = hashlib.sha1("\n".join(j.label for j in chunk).encode()).hexdigest()[:8]
            label = unit_label(playbook, phase, len(units), digest)
            file = f"{batch_dir}/units/{hashlib.sha1(label.encode()).hexdigest()[:16]}.jsonl"
            command = join(["python3", f"{batch_dir}/feeder.py", "unit", file,
                            "--done", f"{batch_dir}/done.tsv",
                            "--ledger", ledger_path(batch_dir), "--group", chunk[0].group,
                            "--label", label, "--parallel", str(parallel),
                            *(["--logs", logs] if logs else [])])
            spec = JobSpec(label=label, group=chunk[0].group, workdir=chunk[0].workdir,
                           command=command, after=after, phase=phase, kind="unit")
            units.append(Unit(spec, file, tuple(
                (j.label, j.workdir, command_line(j, wrap)) for j in chunk), tuple(chunk)))
            phase_units.setdefault(phase, []).append(label)
    return units


def commands_file(items: Sequence[Item], wrap: bool, units: Mapping[str, Unit],
                  batch_dir: str | None = None) -> str:
    """The JSON-lines file the feeder reads: only the labels to add, upstream first. With
    `batch_dir`, each job's command is wrapped to record its outcome in the batch's ledger
    (ledger.wrap) under the label it is added as."""
    lines = []
    for it in items:
        if it.action != "add" or it.job is None or it.new_label is None:
            continue
        line: dict[str, Any] = {"label": it.new_label, "group": it.group,
                                "workdir": it.job.workdir, "after": list(it.after)}
        unit = units.get(it.label)
        if unit is not None:
            line["command"] = unit.spec.command
            line["unit_file"] = unit.file
            line["unit_commands"] = [{"label": lbl, "workdir": wd, "command": cmd}
                                     for lbl, wd, cmd in unit.commands]
        else:
            line["command"] = command_line(it.job, wrap)
            if batch_dir:
                line["command"] = wrap_command(line["command"], batch_dir, it.new_label,
                                               it.group)
        lines.append(json.dumps(line, ensure_ascii=False))
    return "".join(line + "\n" for line in lines)


def absolute(spec: JobSpec, expand: Callable[[str], str]) -> JobSpec:
    wd = expand(spec.workdir)
    if not wd.startswith("/"):
        raise ConfigError(f"working directory {spec.workdir!r} of {spec.label!r} is not "
                          "absolute on the host (AP-11)")
    return replace(spec, workdir=wd)


def parse_receipts(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        label, sep, value = line.rpartition("\t")
        if sep and label:
            out[label] = value
    return out


# ---- report -----------------------------------------------------------------------------

@dataclass(frozen=True)
class BatchReport:
    host: str
    playbook: str
    dry: bool
    mode: str  # jobs | units
    planned: int  # jobs in the plan (commands, in units mode)
    items: tuple[Item, ...]
    memcap: Memcap
    cleans: tuple[Clean, ...] = ()
    groups: tuple[str, ...] = ()
    new_groups: tuple[tuple[str, int], ...] = ()  # missing on the daemon: (group, parallel)
    batch_dir: str = ""
    pueue: str = ""  # the pueue binary, absolute when the host file says ~/...
    sample: tuple[str, ...] = ()
    units: int = 0
    done_inside_units: int = 0
    added: tuple[tuple[str, int], ...] = ()
    existing: tuple[str, ...] = ()
    errors: tuple[tuple[str, str], ...] = ()
    connections: int = 0
    round_trips: int = 0

    def count(self, action: str) -> int:
        return sum(1 for i in self.items if i.action == action)

    @property
    def counts(self) -> dict[str, int]:
        out = {a: self.count(a) for a in ("add", "skip", "failed", "refused", "held")}
        out["retries"] = sum(1 for i in self.items if i.action == "add"
                             and i.new_label != i.label)
        if not self.dry:
            out["added"] = len(self.added)
            out["errors"] = len(self.errors)
        return out

    @property
    def exit_code(self) -> int:
        if self.errors:
            return RemoteError.exit_code
        if self.memcap.refusal or self.count("refused"):
            return RefusedError.exit_code
        # a failed label, or one held behind a failure, is work that will not run
        return 1 if self.count("failed") or self.count("held") else 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "host": self.host, "playbook": self.playbook, "dry": self.dry, "mode": self.mode,
            "planned": self.planned, "counts": self.counts, "memcap": self.memcap.to_dict(),
            "groups": list(self.groups), "clean": [c.to_dict() for c in self.cleans],
            "new_groups": [{"group": g, "parallel": p} for g, p in self.new_groups],
            "batch_dir": self.batch_dir, "sample": list(self.sample), "units": self.units,
            "done_inside_units": self.done_inside_units,
            "items": [i.to_dict() for i in self.items],
            "added": [{"label": lbl, "id": tid} for lbl, tid in self.added],
            "existing": list(self.existing),
            "errors": [{"label": lbl, "error": e} for lbl, e in self.errors],
            "ssh": {"connections": self.connections, "round_trips": self.round_trips},
            "exit_code": self.exit_code,
        }

def problem_line(r: BatchReport) -> str:
    """A host whose submission did not complete: its one line for the hosts table."""
    if r.errors:
        label, error = r.errors[0]
        return (f"{r.host}: {len(r.errors)} label(s) not added, first {label}: {error}; "
                "rerun to converge")
    if r.memcap.refusal:
        return f"{r.host}: {r.memcap.refusal}"
    return f"{r.host}: {r.count('refused')} label(s) refused (retry budget spent)"
