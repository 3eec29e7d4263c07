"""`submit-batch --host a,b,c --spread`: one batch over a fleet, each label on one host.

Over one SSH session per host (hosts in parallel):

1. plan time (no SSH): every host's plan, the same labels on each; [[after]] / after_phase
   refused unless `after_scope = "host"` (spread.check_chains, exit 2);
2. read every listed host (and the --reassign-from host, if it answers): probe (cores,
   memory, the pueue state) and, in one round trip, its `spread.tsv`, receipts, the
   ledger's outcomes and units' done receipts: what it has of this batch;
3. `spread.assign` (pure): sticky, exactly once; a host that failed to answer gets no new
   work, its labels are reported pending on it; --reassign-from H refused while H still
   has one of them queued/running (exit 3, nothing changed);
4. per healthy host: `spread.tsv` (the whole assignment) written to its batch dir and the
   assignment journaled *before* anything is added; then submit.submit over the same
   session with the host's share of the plan (its dedup, retry and units rules apply).

Two spread submits of one batch from this machine are serialized by a local lock; the
second then reads the first's assignment and adds nothing twice.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from rich.table import Table

from .. import journal
from ..cli import (
    VERDICTS,
    HostRow,
    Outcome,
    combined_exit_code,
    each,
    host_rows_table,
    print_error,
    print_json,
)
from ..console import console, err_console
from ..errors import ConfigError, JobsafeError, RefusedError, RemoteError
from ..facts import ledger
from ..facts.probe import Probe, run_probe, sections
from ..hostside.model import BATCH_ROOT
from ..inventory import Host
from ..remote import Remote, connect
from ..shell import quote
from . import spread
from .model import Plan, Playbook
from .plan import BatchReport, parse_receipts, problem_line

ASSIGN_ACTION = "spread-assign"
REASSIGN_ACTION = "spread-reassign"
LOCK_WAIT = 300.0  # seconds a second spread submit of the same batch waits for the first
# submit.submit with the run's flags: (remote, the host's share, progress, the probe read)
SubmitOne = Callable[[Remote, Plan, Callable[[int, int], None] | None, Probe], BatchReport]


# ---- plan time ---------------------------------------------------------------------------

def check_plans(book: Playbook, plans: Mapping[str, Plan]) -> list[tuple[str, str]]:
    """(label, group) of the batch, the same on every host, or ConfigError (exit 2)."""
    spread.check_chains(book.source, bool(book.after),
                        any(p.after_phase for p in book.phases), book.after_scope)
    first, *others = plans.values()
    labels = [(j.label, j.group) for j in first.jobs]
    for plan in others:
        if [(j.label, j.group) for j in plan.jobs] != labels:
            raise ConfigError(f"{book.source}: the playbook gives {first.host} and {plan.host} "
                              "different labels; --spread needs one batch for every host")
    return labels


def plans_for(book: Playbook, hosts: Sequence[Host]) -> dict[str, Plan]:
    """Plan once: hosts alike in what the plan reads of them (project dir, declared groups,
    checkpoint patterns) share one plan_batch (100,000 jobs take seconds to plan)."""
    from .playbook import plan_batch

    cache: dict[tuple[Any, ...], Plan] = {}
    out = {}
    for h in hosts:
        key = (h.project_dir, tuple(sorted(h.groups)), tuple(h.checkpoints))
        if key not in cache:
            cache[key] = plan_batch(book, h)
        out[h.name] = replace(cache[key], host=h.name)
    return out


def share_plan(plan: Plan, labels: set[str]) -> Plan:
    """The host's part of the plan: its jobs; an after_phase wait only on upstream labels
    of the same host (after_scope = "host"); the [[after]] chain only if it has jobs."""
    jobs = tuple(replace(j, after=tuple(u for u in j.after if u in labels))
                 for j in plan.jobs if j.label in labels)
    return replace(plan, jobs=jobs, after=plan.after if jobs else ())


# ---- reading a host ----------------------------------------------------------------------

def read_script(batch_dir: str) -> str:
    d = quote(batch_dir)
    scan = ledger.scan_command(None, [ledger.ledger_path(batch_dir)], succeeded=True)
    return (f"echo @@spread; cat {d}/{spread.SPREAD_FILE} 2>/dev/null; echo; "
            f"echo @@receipts; cat {d}/receipts.tsv 2>/dev/null; echo; "
            f"echo @@done; cat {d}/done.tsv 2>/dev/null; echo; "
            f"echo @@ledger; if [ -d {d} ]; then {scan} 2>/dev/null; fi; echo")


@dataclass
class Read:
    host: Host
    remote: Remote
    probe: Probe
    batch_dir: str
    view: spread.HostView


def read_host(host: Host, remote: Remote, plan: Plan,
              labels: Sequence[tuple[str, str]]) -> Read:
    probe = run_probe(remote, swap_interval=0)
    if probe.state is None:
        raise RemoteError(f"{host.name}: cannot read the pueue state: {probe.pueue_error}")
    batch_dir = probe.expand(f"{BATCH_ROOT}/{plan.playbook}")
    facts = sections(remote.run(read_script(batch_dir), check=False).stdout)
    scanned = ledger.parse_scan("\n".join(facts.get("ledger", [])))
    state = ledger.merge(probe.state, scanned.get("records") or [],
                         scanned.get("cancelled") or ())
    done = parse_receipts("\n".join(facts.get("done", [])))
    caps = {}
    for group in dict.fromkeys(g for _, g in labels):
        spec = host.groups.get(group)
        live = probe.state.groups.get(group)
        parallel = live.parallel if live else spec.parallel if spec else 1
        caps[group] = spread.capacity(
            host.name, group, parallel=parallel, max_parallel=spec.max if spec else parallel,
            job_memory=spec.job_memory if spec else None, nproc=probe.nproc,
            mem_available=probe.mem_available, backlog=spread.backlog(probe.state, group))
    view = spread.HostView(
        host.name,
        spread.presence(labels, state,
                        parse_receipts("\n".join(facts.get("receipts", []))),
                        scanned.get("succeeded") or (), done),
        spread.parse_spread("\n".join(facts.get("spread", []))), caps)
    return Read(host, remote, probe, batch_dir, view)


# ---- the command -------------------------------------------------------------------------

@contextmanager
def batch_lock(playbook: str, wait: float = LOCK_WAIT) -> Iterator[None]:
    """One spread submit of a batch at a time from this machine (released by the OS if
    this process dies)."""
    path = journal.journal_path().parent / f"spread-{playbook}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise RefusedError(f"another submit-batch --spread of {playbook} is still "
                                       f"running after {wait:g}s; rerun when it is done "
                                       "(it converges)") from None
                time.sleep(0.1)
        yield
    finally:
        os.close(fd)


def spread_cmd(hosts: list[Host], book: Playbook, plans: Mapping[str, Plan], *, dry: bool,
               reassign_from: Host | None, json_out: bool,
               submit_one: SubmitOne) -> int:
    """Everything after plan time; `submit_one` is submit.submit with the run's flags."""
    from .view import batch_view, progress_bars

    labels = check_plans(book, plans)
    names = [h.name for h in hosts]
    targets = [*hosts, *([reassign_from] if reassign_from and reassign_from.name not in names
                         else [])]
    lock = batch_lock(book.name) if not dry else _nothing()
    remotes: dict[str, Remote] = {}
    with lock:
        try:
            opened = each(targets, _open)
            errors: dict[str, JobsafeError] = {}
            for h, got in zip(targets, opened, strict=True):
                if isinstance(got, JobsafeError):
                    errors[h.name] = got
                else:
                    remotes[h.name] = got
            plan_of = {h.name: plans.get(h.name) or next(iter(plans.values())) for h in targets}
            live = [h for h in targets if h.name in remotes]
            reads: dict[str, Read] = {}
            for h, got in zip(live, each(live, lambda h: _try(
                    lambda: read_host(h, remotes[h.name], plan_of[h.name], labels)))
                    if live else [], strict=True):  # each() needs at least one host
                if isinstance(got, JobsafeError):
                    errors[h.name] = got
                else:
                    reads[h.name] = got
            down = {n: _line(e) for n, e in errors.items()}
            assignment = spread.assign(
                labels, names, {n: r.view for n, r in reads.items()},
                down={n: d for n, d in down.items() if n in names},
                reassign_from=reassign_from.name if reassign_from else None)
            with progress_bars(enabled=not json_out) as bar:
                def one(h: Host) -> Outcome:
                    if h.name in errors:
                        return Outcome(h.name, error=_pending(errors[h.name], assignment,
                                                              h.name))
                    try:
                        return Outcome(h.name, _feed(reads[h.name], plans[h.name], assignment,
                                                     book, dry, submit_one, bar(h.name)))
                    except JobsafeError as exc:
                        return Outcome(h.name, error=_pending(exc, assignment, h.name))

                outcomes = each(hosts, one)
            # a host that failed while being fed: its labels are pending on it too
            assignment = replace(assignment, down={**assignment.down, **{
                o.host: _line(o.error) for o in outcomes if o.error is not None}})
        finally:
            for r in remotes.values():
                r.close()
    rows = [o.row(lambda r: int(r.exit_code), VERDICTS, problem_line) for o in outcomes]
    code = combined_exit_code([(r.ok, r.exit_code) for r in rows])
    _show(outcomes, rows, assignment, code, json_out, batch_view)
    return code


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def _open(h: Host) -> Remote | JobsafeError:
    try:
        return connect(h)
    except JobsafeError as exc:
        return exc


def _try(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except JobsafeError as exc:
        return exc


def _line(exc: JobsafeError) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _pending(exc: JobsafeError, assignment: spread.Assignment, host: str) -> JobsafeError:
    n = sum(1 for label, h in assignment.owner.items()
            if h == host and assignment.how[label] != "present")
    if not n:
        return exc
    return type(exc)(f"{exc}; {n} label(s) of this batch are pending on {host} (rerun when it "
                     f"is back, or move them: --reassign-from {host})")


def _feed(read: Read, plan: Plan, assignment: spread.Assignment, book: Playbook, dry: bool,
          submit_one: SubmitOne, progress: Callable[[int, int], None] | None) -> BatchReport:
    """Record the assignment on the host, journal it, then submit the host's share."""
    name = read.host.name
    mine = set(assignment.share(name))
    if not dry:
        if assignment.changed_for(read.view.recorded):
            read.remote.run(["mkdir", "-p", read.batch_dir])
            read.remote.put_text(spread.spread_text(assignment.owner),
                                 f"{read.batch_dir}/{spread.SPREAD_FILE}")
        given = [lbl for lbl in assignment.owner if assignment.owner[lbl] == name
                 and assignment.how[lbl] in ("new", "moved")]
        if given:
            journal.append(name, ASSIGN_ACTION, given, "ok", playbook=book.name,
                           hosts=list(assignment.hosts))
        moved = [m for m in assignment.moved if m[2] == name]
        if moved:
            journal.append(moved[0][1], REASSIGN_ACTION, [lbl for lbl, _, _ in moved], "ok",
                           playbook=book.name, to=name)
    return submit_one(read.remote, share_plan(plan, mine), progress, read.probe)


# ---- output ------------------------------------------------------------------------------

def assignment_table(a: spread.Assignment) -> Table:
    t = Table(title=f"spread: {len(a.owner)} label(s) over {len(a.hosts)} host(s)")
    for col in ("host", "labels", "new", "kept", "present", "moved in", "pending", "why"):
        t.add_column(col, overflow="fold")
    pending = a.pending()
    for h, n in a.counts().items():
        t.add_row(h, str(n["labels"]), str(n["new"]), str(n["kept"]), str(n["present"]),
                  str(n["moved"]), str(pending.get(h, 0)) if h in pending else "",
                  a.why(h))
    return t


def _show(outcomes: Sequence[Outcome], rows: Sequence[HostRow], a: spread.Assignment,
          code: int, json_out: bool, render: Callable[[BatchReport], Any]) -> None:
    if json_out:
        print_json(code, rows, result=a)
    else:
        for o in outcomes:
            if o.error is None:
                console.print(render(o.result))
        console.print(assignment_table(a))
        console.print(host_rows_table(rows, lambda r: ", ".join(
            f"{k} {n}" for k, n in r.counts.items() if n)))
    for label, on in a.conflicts[:3]:
        err_console.print(f"[yellow]warning:[/] {label} is on {', '.join(on)} (added there "
                          f"before a spread was recorded); kept on {a.owner[label]} only")
    for r in rows:
        if not r.ok and r.error:
            print_error(r.error)


# ---- the guard for submits without --spread -------------------------------------------------

def refuse_if_spread(hosts: Sequence[Host], playbook: str) -> None:
    """A multi-host submit without --spread would run the whole batch on every host: once
    a spread assignment exists on any of them, refuse (exit 3) before anything is added."""
    path = f"{BATCH_ROOT}/{playbook}/{spread.SPREAD_FILE}".removeprefix("~/")

    def check(h: Host) -> bool:
        try:
            remote = connect(h)
        except JobsafeError:
            return False  # the submit itself reports it
        try:
            return remote.run(f'test -f "$HOME"/{quote(path)}', check=False).ok
        except JobsafeError:
            return False
        finally:
            remote.close()

    spread_on = [h.name for h, yes in zip(hosts, each(list(hosts), check), strict=True) if yes]
    if spread_on:
        raise RefusedError(f"{playbook} has a spread assignment on {', '.join(spread_on)}: "
                           "without --spread every host would run every label; rerun with "
                           "--spread (each label stays on its host)")
