"""`inv submit-batch`: plan every host before connecting to any, then per host, over one
connection (the decisions themselves are pure, in batch.py):

1. probe (one round trip: state, home, memcap, state-file size) + facts (receipts,
   working dirs) - verify before mutate (INV-2);
2. decide per label; refuse uncapped memory (INV-7) unless --allow-uncapped or the host
   file's memory_cap = false (then uncapped, said in the summary, JSON and journal);
3. `pueue clean -g G --successful-only` when the state file is large (AP-10); create
   missing groups (parallel never 0);
4. upload feeder.py (the shared model inlined) + one commands file (temp name + rename), run
   the feeder in the same session; it adds each missing label exactly once and wires
   `--after` by label (AP-7);
5. journal what was added. Rendering lives in submit_view.py.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from .. import journal
from ..cli import fan_out, finish, hosts_for, positive_int, require
from ..console import console
from ..errors import ConfigError, RefusedError, RemoteError
from ..facts import ledger, programs
from ..facts.audit import read_state
from ..facts.probe import Probe, run_probe, sections
from ..hostside.bundle import bundle
from ..hostside.model import BATCH_ROOT
from ..hostside.monitor_filter import STATUS_FAILED
from ..inventory import Host
from ..remote import Remote, session
from ..scheduler.pueue import clean_argv, group_add_argv, status_failure
from ..shell import exports, quote
from .model import UNITS_THRESHOLD, JobSpec, Plan
from .plan import (
    BatchReport,
    Item,
    Unit,
    absolute,
    command_line,
    commands_file,
    decide,
    hygiene,
    make_units,
    memcap_policy,
    parse_receipts,
    problem_line,
)
from .playbook import load_playbook, plan_batch
from .record import counted, journal_submit
from .retry import RE_ADD_ACTION, used_from_journal
from .view import batch_view, progress_bars

FEED_JOBS = 4  # concurrent `pueue add` calls inside the feeder
# what is uploaded to `{batch_dir}/feeder.py` (queued unit tasks call that path, so it stays):
# the feeder with the shared pueue model inlined, one self-contained file, one upload
FEEDER = "feeder"
EXIT_FEEDER_LOCKED = 75
# two runs of one playbook at once: the second feeder waits this long for the first, then
# adds only what is still missing (nothing, usually) instead of refusing
FEEDER_LOCK_WAIT = 300.0

Progress = Callable[[int, int], None]


# ---- acting (the only functions that touch the host) ----------------------------------

def facts_script(batch_dir: str, workdirs: Sequence[str],
                 checks: Sequence[programs.Check] = ()) -> str:
    """One round trip: receipts, the batch ledger's outcomes (failures in full, the labels
    that succeeded), count of finished unit commands, missing working dirs, and the jobs'
    first programs that do not resolve (programs.check_script)."""
    d = quote(batch_dir)
    dirs = " ".join(quote(w) for w in workdirs)
    scan = ledger.scan_command(None, [ledger.ledger_path(batch_dir)], succeeded=True)
    return (f"echo @@receipts; cat {d}/receipts.tsv 2>/dev/null; echo; echo @@ledger; "
            f"if [ -d {d} ]; then {scan} 2>/dev/null; fi; "
            "echo; echo @@done; "
            f"awk -F '\\t' '$2 == \"0\" {{print $1}}' {d}/done.tsv 2>/dev/null "
            f"| sort -u | wc -l; echo @@missing; "
            f"for w in {dirs}; do [ -d \"$w\" ] || printf '%s\\n' \"$w\"; done"
            + (f"\necho @@unresolved\n{programs.check_script(checks)}" if checks else ""))


def prepare(remote: Remote, plan: Plan, *, allow_uncapped: bool, units: bool | None,
            unit_size: int | None, dry: bool,
            probe: Probe | None = None) -> tuple[BatchReport, dict[str, Unit]]:
    """Every read, no write: probe (`probe`: one read just now over this session, as
    --spread does) + facts, then the pure decisions."""
    host = remote.host
    probe = probe or run_probe(remote, swap_interval=0)
    if probe.state is None:
        raise RemoteError(f"{host.name}: cannot read the pueue state: {probe.pueue_error}")
    batch_dir = probe.expand(f"{BATCH_ROOT}/{plan.playbook}")
    memcap = memcap_policy(plan, host, probe.memcap, probe.memcap_reason, allow_uncapped)
    jobs = [absolute(j, probe.expand) for j in plan.jobs]
    after = [absolute(j, probe.expand) for j in plan.after]
    use_units = units if units is not None else len(jobs) > UNITS_THRESHOLD
    unit_map: dict[str, Unit] = {}
    specs: list[JobSpec] = jobs
    if use_units:
        unit_list = make_units(jobs, playbook=plan.playbook, size=unit_size or plan.unit_size,
                               parallel=plan.unit_parallel, batch_dir=batch_dir,
                               wrap=memcap.wrap)
        unit_map = {u.spec.label: u for u in unit_list}
        specs = [u.spec for u in unit_list]
    if after:  # the chain's first step waits for every job (or unit)
        after[0] = replace(after[0], after=tuple(s.label for s in specs))
    specs = [*specs, *after]
    workdirs = sorted({s.workdir for s in specs})
    # each label once: without units, specs are the jobs themselves (plus the chain)
    checked = {s.label: s for s in (*jobs, *specs)}.values()
    checks, check_of = programs.job_checks(
        [(s.label, s.workdir, s.command, exports(s.env) if s.env else "") for s in checked])
    facts = sections(remote.run(facts_script(batch_dir, workdirs, checks),
                                check=False).stdout)
    missing = [w for w in facts.get("missing", []) if w.strip()]
    if missing:
        raise ConfigError(f"{host.name}: working directory {missing[0]} does not exist "
                          "(pueue >= 4.0.3 rejects it; AP-11); deploy first or fix workdir")
    receipts = parse_receipts("\n".join(facts.get("receipts", [])))
    scanned = ledger.parse_scan("\n".join(facts.get("ledger", [])))
    state = ledger.merge(probe.state, scanned.get("records") or [],
                         scanned.get("cancelled") or ())
    done_count = int((facts.get("done") or ["0"])[0].strip() or 0)
    used = used_from_journal(journal.entries(host=host.name, action=RE_ADD_ACTION), host.name)
    items = decide(specs, state, receipts, budget=plan.retry_budget, used=used,
                   succeeded=frozenset(scanned.get("succeeded") or ()),
                   units={label: u.jobs for label, u in unit_map.items()})
    refused = programs.first_refusal(host, checks, check_of, facts.get("unresolved", []),
                                     _adding(items, unit_map))
    if refused:  # item 3: a job that would exit 127; nothing was changed on the host
        raise ConfigError(refused)
    readds = [i for i in items if i.action == "add" and i.new_label != i.label]
    if readds:  # every operator's re-adds count: the host's journal (one more read, only now)
        from ..ops import teamjournal

        shared, on_host = teamjournal.team_readds(
            remote, journal.entries(host=host.name, action=RE_ADD_ACTION))
        items = decide(specs, state, receipts, budget=plan.retry_budget,
                       used=used_from_journal(shared, host.name),
                       succeeded=frozenset(scanned.get("succeeded") or ()),
                       units={label: u.jobs for label, u in unit_map.items()})
        teamjournal.guard_readds(remote, on_host, len(
            [i for i in items if i.action == "add" and i.new_label != i.label]))
    groups = [s.group for s in specs]
    new_groups = tuple((g, host.group(g).parallel)
                       for g in dict.fromkeys(groups) if g not in probe.state.groups)
    cleans = hygiene(probe.state, list(dict.fromkeys(groups)), probe.state_size,
                     host.state_warn_mb)
    sample = tuple(
        (unit_map[i.label].commands[0][2] if i.label in unit_map else
         command_line(i.job, memcap.wrap)) for i in items if i.action == "add" and i.job
    )[:3]
    report = BatchReport(
        host=host.name, playbook=plan.playbook, dry=dry,
        mode="units" if use_units else "jobs", planned=len(jobs), items=tuple(items),
        memcap=memcap, cleans=tuple(cleans), groups=tuple(dict.fromkeys(groups)),
        new_groups=new_groups, batch_dir=batch_dir,
        pueue=probe.expand(host.pueue), sample=sample, units=len(unit_map),
        done_inside_units=done_count)
    return report, unit_map


def _adding(items: Sequence[Item], unit_map: dict[str, Unit]) -> list[str]:
    """The labels whose commands would run: each added job, each added unit and its jobs."""
    out = []
    for it in items:
        if it.action == "add":
            out.append(it.label)
            unit = unit_map.get(it.label)
            if unit is not None:
                out.extend(label for label, _, _ in unit.commands)
    return out


def submit(remote: Remote, plan: Plan, *, dry: bool = False, allow_uncapped: bool = False,
           units: bool | None = None, unit_size: int | None = None,
           progress: Progress | None = None, probe: Probe | None = None) -> BatchReport:
    host = remote.host
    report, unit_map = prepare(remote, plan, allow_uncapped=allow_uncapped, units=units,
                               unit_size=unit_size, dry=dry, probe=probe)
    if dry:
        return counted(report, remote)
    if report.memcap.refusal:
        raise RefusedError(f"{host.name}: {report.memcap.refusal}")
    for c in report.cleans:
        if c.run:
            remote.run(clean_argv(host.pueue, c.group, successful_only=True))
    for g, parallel in report.new_groups:
        ensure_group(remote, g, parallel)
    text = commands_file(report.items, report.memcap.wrap, unit_map, report.batch_dir)
    if not text:  # a rerun of a converged batch: nothing to upload, nothing to add
        return counted(report, remote)
    bdir = report.batch_dir
    remote.run(["mkdir", "-p", f"{bdir}/units"])
    remote.put_text(bundle(FEEDER), f"{bdir}/feeder.py", 0o755)
    remote.put_text(text, f"{bdir}/commands.jsonl")
    summary = run_feeder(remote, bdir, report.pueue, plan.pass_env, progress, text)
    added = tuple((str(lbl), int(tid)) for lbl, tid in summary.get("added", []))
    errors = tuple((str(lbl), str(e)) for lbl, e in summary.get("errors", []))
    existing = tuple(str(lbl) for lbl, _ in summary.get("existing", []))
    journal_submit(host, plan, report, added, errors)
    return counted(replace(report, added=added, errors=errors, existing=existing), remote)


def ensure_group(remote: Remote, group: str, parallel: int) -> None:
    """`pueue group add`, tolerant of a concurrent submit-batch that created the group
    between our status read and our add (pueue then says "already exists"): verify after
    the failure, and only a group still missing is an error."""
    argv = group_add_argv(remote.host.pueue, group, parallel)
    result = remote.run(argv, check=False)
    if result.ok or group in read_state(remote).groups:
        return
    detail = (result.stderr.strip() or result.stdout.strip()).splitlines()
    raise RemoteError(f"{remote.host.name}: `{' '.join(argv)}` failed: "
                      f"{detail[-1] if detail else f'exit {result.exited}'}")


def run_feeder(remote: Remote, batch_dir: str, pueue: str, pass_env: Sequence[str],
               progress: Progress | None, commands: str) -> dict[str, Any]:
    """Run the uploaded feeder; it refuses a commands file that is not `commands` (sha256
    and line count), so a torn or stale upload is never fed."""
    host = remote.host
    argv = ["python3", f"{batch_dir}/feeder.py", "feed", f"{batch_dir}/commands.jsonl",
            "--receipts", f"{batch_dir}/receipts.tsv", "--pueue", pueue,
            "--jobs", str(FEED_JOBS), "--lock-wait", str(FEEDER_LOCK_WAIT),
            *(f"--pass-env={n}" for n in pass_env),
            "--sha256", hashlib.sha256(commands.encode()).hexdigest(),
            "--count", str(commands.count("\n"))]
    summary: dict[str, Any] = {}

    def on_line(line: str) -> None:
        if line.startswith("@@progress ") and progress is not None:
            done, total = line.split()[1:3]
            progress(int(done), int(total))
        elif line.startswith("@@summary "):
            summary.update(json.loads(line[len("@@summary "):]))

    result = remote.stream(argv, on_line, check=False)
    if result.exited == EXIT_FEEDER_LOCKED:
        raise RefusedError(f"{host.name}: another submit-batch is still feeding {batch_dir} "
                           f"after {FEEDER_LOCK_WAIT:g}s; wait for it to finish, then rerun "
                           "(it converges)")
    if "fatal" in summary:
        fatal = str(summary["fatal"])
        if fatal.startswith(STATUS_FAILED):  # pueue's multi-line report -> one line + fix
            fatal = status_failure(fatal[len(STATUS_FAILED):])
        raise RemoteError(f"{host.name}: feeder: {fatal}")
    if not summary:
        detail = (result.stderr.strip() or result.stdout.strip() or "no output").splitlines()
        raise RemoteError(f"{host.name}: feeder failed (exit {result.exited}): "
                          f"{detail[-1] if detail else ''}")
    return summary




# ---- the command ----------------------------------------------------------------------

def submit_batch_cmd(host: str, playbook: str, dry: bool, allow_uncapped: bool, units: bool,
                     unit_size: int | None, inventory: str | None, json_out: bool,
                     spread: bool = False, reassign_from: str | None = None) -> int:
    from . import fleet

    require(host, "--host")
    require(playbook, "--playbook")
    size = positive_int(unit_size, "--unit-size")
    book = load_playbook(playbook)
    hosts = hosts_for(host, inventory)
    slurm = [h.name for h in hosts if h.is_slurm]
    if spread and slurm:
        raise ConfigError(f"--spread is for pueue hosts; {', '.join(slurm)} "
                          "take(s) the whole batch as job arrays: list it alone")
    # plan-time invariants (INV-1/5/9, labels, placeholders) fail here, before any SSH
    plans = (fleet.plans_for(book, hosts) if spread else
             {h.name: plan_batch(book, h) for h in hosts})
    if reassign_from is not None and not spread:
        raise ConfigError("--reassign-from moves labels of a spread batch; add --spread")
    if spread:  # one batch over the hosts, each label on one host (batch/fleet.py)
        fleet.check_plans(book, plans)
        gone = hosts_for(reassign_from, inventory)[0] if reassign_from else None
        return fleet.spread_cmd(
            hosts, book, plans, dry=dry, reassign_from=gone, json_out=json_out,
            submit_one=lambda remote, plan, bar, probe: submit(
                remote, plan, dry=dry, allow_uncapped=allow_uncapped,
                units=True if units else None, unit_size=size, progress=bar, probe=probe))
    if len(hosts) > 1:
        fleet.refuse_if_spread(hosts, book.name)
    with progress_bars(enabled=not json_out) as bar:
        def one(h: Host) -> BatchReport:
            with session(h) as remote:
                if h.is_slurm:  # job arrays on the cluster (batch/slurm_submit.py)
                    from . import slurm_submit

                    return slurm_submit.submit(remote, plans[h.name], dry=dry,
                                               allow_uncapped=allow_uncapped,
                                               units=True if units else None, unit_size=size)
                return submit(remote, plans[h.name], dry=dry, allow_uncapped=allow_uncapped,
                              units=True if units else None, unit_size=size,
                              progress=bar(h.name))

        outcomes = fan_out(hosts, one)
    return finish(outcomes, json_out, lambda r: console.print(batch_view(r)),
                  lambda r: int(r.exit_code), error_of=problem_line,
                  summary=lambda r: ", ".join(f"{k} {n}" for k, n in r.counts.items() if n))


