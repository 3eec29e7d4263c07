"""Snapshots: one poll of a host -> the state of its groups by label (never by id) and
its health. The monitor watches them; clean and autoscale take one as their facts.

One poll = one remote command: the filter in `monitor_filter.py` runs on the host and
returns a summary whose size grows with the watched group, not with the state file
(AP-10). Hosts without python3 get the plain `pueue status --json` and the same summary is
computed here.

A snapshot's exit code (cron): 0 every label of the group done and succeeded; 1 some failed
(or are blocked forever behind a failed dependency); 3 still running or queued.
"""

from __future__ import annotations

import base64
import json
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ..checks import Check
from ..errors import EXIT_FAILED, EXIT_NOTHING_SELECTED, EXIT_OK, EXIT_REFUSED, RemoteError
from ..hostside import monitor_filter
from ..hostside.bundle import bundle
from ..hostside.health import health_facts, parse_swap_counters
from ..hostside.model import ACTIVE
from ..hostside.model import FAILED as FAILED
from ..inventory import Host
from ..scheduler.pueue import log_argv, parse_log, status_argv, status_failure
from ..shell import join, program
from . import checks as custom
from .probe import (
    LOADAVG,
    MEMINFO,
    NPROC,
    PUEUE_DIR,
    STATE_FILES,
    VMSTAT_SWAP,
    Probe,
    Verdict,
    parse_int,
    parse_load,
    parse_meminfo,
    parse_state_file,
    sections,
    verdicts,
)

if TYPE_CHECKING:  # annotations only: the planner loads this without the SSH transport
    from ..remote import Remote

EXIT_STILL_RUNNING = EXIT_REFUSED  # 3: the errors.py table documents it for monitor
PENDING = ACTIVE  # queued, running, paused, stashed, locked
HEALTH_CHECKS = ("load", "swap", "memory", "state file")
# The filter with the shared model and health parsers inlined: one self-contained source.
FILTER_SOURCE = bundle("monitor_filter")
# Sent compressed on every poll (~21 KB instead of ~49 KB): nothing is left on the host and
# the bytes per poll stay constant whatever the state file's size.
FILTER_LOADER = (
    "import base64,zlib;exec(zlib.decompress(base64.b64decode('"
    + base64.b64encode(zlib.compress(FILTER_SOURCE.encode(), 9)).decode()
    + "')))"
)


@dataclass(frozen=True)
class Options:
    """What one poll asks the host for."""

    group: str | None = None
    label_glob: str | None = None
    log_lines: int = 5
    log_labels: int = 5  # failed labels per group whose log tail is fetched
    limit: int = 200  # labels per list (running/failed/blocked); the rest are counted
    swap_window: float = 0.25
    all_tasks: bool = False  # summarize from every group's tasks (clean's chain check)
    python: str = "python3"
    state_file: bool = True  # read pueue's state file on the host (False: `pueue status`)


# ---- snapshot model ----------------------------------------------------------------------

@dataclass(frozen=True)
class Health:
    nproc: int | None = None
    load: tuple[float, float, float] | None = None
    mem_total: int | None = None
    mem_available: int | None = None
    swap_total: int | None = None
    swap_in: int | None = None  # pages swapped in during `swap_window` seconds
    swap_out: int | None = None
    swap_window: float | None = None
    swap_counters: tuple[int, int] | None = None  # cumulative pswpin/pswpout
    state_file: str | None = None
    state_size: int | None = None

    @property
    def load_ratio(self) -> float | None:
        return None if not self.load or not self.nproc else self.load[0] / self.nproc

    @property
    def mem_used(self) -> float | None:
        if not self.mem_total or self.mem_available is None:
            return None
        return 1 - self.mem_available / self.mem_total

    def since(self, previous: Health | None, seconds: float) -> Health:
        """Swap activity over the whole interval since the previous poll, not just this
        poll's short sample: swapping between polls is what the post-bump check is for."""
        if previous is None or not previous.swap_counters or not self.swap_counters:
            return self
        (i0, o0), (i1, o1) = previous.swap_counters, self.swap_counters
        if i1 < i0 or o1 < o0:  # counters reset (reboot): keep this poll's own sample
            return self
        return replace(self, swap_in=i1 - i0, swap_out=o1 - o0, swap_window=round(seconds, 3))

    def as_probe(self, host: str) -> Probe:
        return Probe(
            host=host, nproc=self.nproc, mem_total=self.mem_total,
            mem_available=self.mem_available, swap_total=self.swap_total, load=self.load,
            swap_in=self.swap_in, swap_out=self.swap_out, home="", pueue_version=None,
            pueue_error=None, state_file=self.state_file, state_size=self.state_size,
            cgroup_fs=None, memcap=False, memcap_reason="",
        )

    def verdicts(self, host: Host) -> list[Verdict]:
        """The probe's verdicts for load (< 0.9 x nproc), swap (si/so = 0), memory and the
        state file (warn/alarm at the host's MB limits), each with the number behind it."""
        return [v for v in verdicts(self.as_probe(host.name), host) if v.name in HEALTH_CHECKS]

    def to_dict(self) -> dict[str, Any]:
        return {
            "nproc": self.nproc, "load": list(self.load) if self.load else None,
            "mem_total": self.mem_total, "mem_available": self.mem_available,
            "swap_total": self.swap_total, "swap_in": self.swap_in, "swap_out": self.swap_out,
            "swap_window": self.swap_window, "state_file": self.state_file,
            "state_size": self.state_size,
        }


@dataclass(frozen=True)
class LabelState:
    label: str
    state: str
    exit_code: int | None = None
    runtime: float | None = None  # seconds, measured on the host's clock
    start: str | None = None  # as pueue printed it (host's zone)
    attempts: int = 1
    log: tuple[str, ...] = ()
    after: tuple[str, ...] = ()  # blocked: the failed/missing dependencies, by label
    slurm_state: str | None = None  # how sacct says it ended (no ledger line: OOM, scancel)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"label": self.label, "state": self.state}
        if self.state in FAILED:
            d["exit_code"] = self.exit_code
            d["log"] = list(self.log)
        if self.slurm_state:
            d["slurm_state"] = self.slurm_state
        if self.start is not None:
            d["start"] = self.start
        if self.runtime is not None:
            d["runtime"] = self.runtime
        if self.after:
            d["after"] = list(self.after)
        if self.attempts > 1:
            d["attempts"] = self.attempts
        return d


@dataclass(frozen=True)
class GroupView:
    name: str
    status: str  # Running | Paused | missing
    parallel: int
    counts: Mapping[str, int]
    total: int = 0
    superseded: int = 0  # older attempts of re-queued labels (not counted in `total`)
    ready: int = 0  # queued and not waiting on any unfinished dependency
    running: tuple[LabelState, ...] = ()
    failed: tuple[LabelState, ...] = ()
    blocked: tuple[LabelState, ...] = ()
    truncated: Mapping[str, int] = field(default_factory=dict)
    recent: Mapping[str, Any] = field(default_factory=dict)  # jobs ended lately (ops/eta)

    @property
    def progress(self) -> Any:
        from ..ops.eta import progress

        return progress(self.counts, self.total, self.recent)

    def count(self, *states: str) -> int:
        return sum(self.counts.get(s, 0) for s in states)

    @property
    def all_done(self) -> bool:
        return group_all_done(self)

    @property
    def settled(self) -> bool:
        """Nothing left that can still run: done, or only blocked-forever tasks remain."""
        return self.total > 0 and self.count(*PENDING) == 0

    @property
    def failures(self) -> int:
        return self.count(*FAILED, "blocked")

    @property
    def outcome(self) -> str:
        if self.failures and self.settled:
            return "failed"
        if self.failures:
            return "failing"
        if self.all_done:
            return "done"
        return "empty" if self.total == 0 else "running"

    def to_dict(self) -> dict[str, Any]:
        return {
            "group": self.name, "status": self.status, "parallel": self.parallel,
            "counts": dict(self.counts), "total": self.total, "superseded": self.superseded,
            "ready": self.ready, "all_done": self.all_done, "outcome": self.outcome,
            "running": [t.to_dict() for t in self.running],
            "failed": [t.to_dict() for t in self.failed],
            "blocked": [t.to_dict() for t in self.blocked],
            "truncated": dict(self.truncated),
            "progress": self.progress.to_dict(),
        }


def group_all_done(view: GroupView) -> bool:
    """At least one task, and nothing queued, running, paused, stashed, locked or blocked.

    Stashed/locked count as not done (a delayed or edited task will still run; a monitor
    testing the status's `keys[0]` wrongly counts them as done), and a blocked task is not
    done either: it waits forever behind a failed dependency."""
    return view.total > 0 and view.count(*PENDING, "blocked") == 0


@dataclass(frozen=True)
class Snapshot:
    host: str
    at: datetime
    group: str | None
    label_glob: str | None
    groups: tuple[GroupView, ...]
    health: Health
    via: str = "filter"  # filter | plain (host without python3)
    sent: int = 0  # bytes of the command sent over SSH
    received: int = 0  # bytes of its output
    chains: tuple[Mapping[str, Any], ...] = ()  # pending dependants (clean's check)
    source: str = "status"  # what the tasks were read from: state_file | status
    checks: tuple[custom.CheckResult, ...] = ()  # [[checks]] run in this poll (autoscale)

    def view(self, group: str) -> GroupView:
        for g in self.groups:
            if g.name == group:
                return g
        return GroupView(group, "missing", 0, {})

    @property
    def watched(self) -> tuple[GroupView, ...]:
        return tuple(g for g in self.groups if self.group is None or g.name == self.group)

    @property
    def failures(self) -> int:
        return sum(g.failures for g in self.watched)

    @property
    def settled(self) -> bool:
        return all(g.settled for g in self.watched) and bool(self.watched)

    @property
    def empty(self) -> bool:
        """Nothing selected: no task in the watched group(s) (cleaned, never filled, or no
        label matches --label-glob). Not "still running": nothing can ever finish."""
        return sum(g.total for g in self.watched) == 0

    @property
    def verdict(self) -> str:
        if self.failures:
            return "failed"
        if self.empty:
            return "nothing_selected"
        return "done" if self.settled else "running"

    @property
    def exit_code(self) -> int:
        return {"failed": EXIT_FAILED, "nothing_selected": EXIT_NOTHING_SELECTED,
                "done": EXIT_OK}.get(self.verdict, EXIT_STILL_RUNNING)

    def nothing_selected(self) -> str:
        """The operator's one line for an empty selection (cron mails it)."""
        what = f"group {self.group!r}" if self.group else "every group"
        glob = f" matching --label-glob {self.label_glob!r}" if self.label_glob else ""
        return (f"{self.host}: nothing selected: {what} has no tasks{glob}; check --group"
                f"{' and --label-glob' if glob else ''} (or the group was cleaned)")

    def to_dict(self) -> dict[str, Any]:
        return {
            "host": self.host, "at": self.at.isoformat(), "group": self.group,
            "label_glob": self.label_glob, "exit_code": self.exit_code,
            "verdict": self.verdict,
            "groups": [g.to_dict() for g in self.watched], "health": self.health.to_dict(),
            "via": self.via, "source": self.source,
            "bytes": {"sent": self.sent, "received": self.received},
        }


# ---- one poll ----------------------------------------------------------------------------

def filter_argv(host: Host, opts: Options) -> list[str]:
    argv = ["--pueue", host.pueue, "--log-lines", str(opts.log_lines),
            "--log-labels", str(opts.log_labels), "--limit", str(opts.limit),
            "--swap-window", str(opts.swap_window)]
    if opts.group:
        argv += ["--group", opts.group]
    if opts.label_glob is not None:
        argv += ["--glob", opts.label_glob]
    if opts.all_tasks:
        argv.append("--all-tasks")
    if not opts.state_file:
        argv.append("--no-state-file")
    return argv


def poll_command(host: Host, opts: Options) -> str:
    """The filter when the host has python3, else the plain status plus health facts."""
    group = None if opts.all_tasks else opts.group
    filtered = join([opts.python, "-c", FILTER_LOADER, *filter_argv(host, opts)])
    status = join(status_argv(host.pueue, group))
    plain = f"""echo @@plain; {status} 2>&1; rc=$?; echo; echo "rc $rc"
{NPROC}
{MEMINFO}
{LOADAVG}
echo @@swap; {VMSTAT_SWAP}
{PUEUE_DIR}
echo @@statefile
{STATE_FILES}
echo @@end"""
    py = program(opts.python)
    return f"if command -v {py} >/dev/null 2>&1; then {filtered}; else\n{plain}\nfi"


def parse_plain(remote: Remote, text: str, opts: Options) -> dict[str, Any]:
    """Fallback for hosts without python3: the same payload the filter would print."""
    s = sections(text)
    lines = s.get("plain", [])
    rc = lines[-1] if lines else "rc 1"
    body = "\n".join(lines[:-1]).strip()
    payload: dict[str, Any] = {"via": "plain"}
    if rc != "rc 0" or not body.startswith("{"):
        payload["error"] = status_failure(body, rc)
    else:
        # the plain listing is `--group`-filtered: a dependency it lacks may live in
        # another group; the model never takes an absent dependency as "blocked"
        summary, wanted = monitor_filter.summarize(
            json.loads(body), opts.group, opts.label_glob, opts.limit, opts.log_labels,
            chains=opts.all_tasks)
        logs: dict[str, Any] = {}
        if wanted and opts.log_lines > 0:
            # ids resolved from labels in this same poll, used once, never kept (INV-8)
            out = remote.run(log_argv(remote.host.pueue, sorted(wanted), opts.log_lines),
                             check=False)
            logs = {str(k): {"output": v} for k, v in parse_log(out.stdout).items()}
        monitor_filter.attach_logs(summary, logs, opts.log_lines)
        payload.update(summary)
    state_file, state_size = parse_state_file(s.get("statefile", []))
    payload["health"] = {
        **health_facts(parse_int((s.get("nproc") or [""])[0]),
                       parse_load(s.get("loadavg", [])), parse_meminfo(s.get("meminfo", [])),
                       parse_swap_counters(s.get("swap", [])), state_file, state_size),
        "swap_in": None, "swap_out": None, "swap_window": None,
    }
    return payload


def _labels(items: Iterable[Mapping[str, Any]]) -> tuple[LabelState, ...]:
    return tuple(
        LabelState(
            label=str(e["label"]), state=str(e["state"]), exit_code=e.get("exit_code"),
            runtime=e.get("runtime"), start=e.get("start"), attempts=int(e.get("attempts", 1)),
            log=tuple(e.get("log") or ()), after=tuple(e.get("after") or ()),
            slurm_state=e.get("slurm_state") or None,
        )
        for e in items
    )


def health_of(h: Mapping[str, Any]) -> Health:
    """The filter's health facts (health.health_facts plus the swap sample) -> Health."""
    load = h.get("load")
    counters = h.get("swap_counters")
    return Health(
        nproc=h.get("nproc"), load=tuple(load) if load else None,
        mem_total=h.get("mem_total"), mem_available=h.get("mem_available"),
        swap_total=h.get("swap_total"), swap_in=h.get("swap_in"), swap_out=h.get("swap_out"),
        swap_window=h.get("swap_window"),
        swap_counters=(int(counters[0]), int(counters[1])) if counters else None,
        state_file=h.get("state_file"), state_size=h.get("state_size"),
    )


def snapshot_from(host: str, payload: Mapping[str, Any], opts: Options, *,
                  at: datetime | None = None, sent: int = 0, received: int = 0) -> Snapshot:
    """Filter output (or the plain fallback's equivalent) -> Snapshot. Pure."""
    if payload.get("error"):
        error = str(payload["error"])
        if error.startswith(monitor_filter.STATUS_FAILED):  # pueue's own words, all lines
            error = status_failure(error[len(monitor_filter.STATUS_FAILED):])
        raise RemoteError(f"{host}: {error}")
    health = health_of(payload.get("health") or {})
    groups = tuple(
        GroupView(
            name=name, status=str(g["status"]), parallel=int(g["parallel"]),
            counts=dict(g["counts"]), total=int(g["total"]), superseded=int(g["superseded"]),
            ready=int(g.get("ready", 0)), running=_labels(g["running"]),
            failed=_labels(g["failed"]), blocked=_labels(g["blocked"]),
            truncated=dict(g.get("truncated") or {}),
            recent=dict(g.get("recent") or {}),
        )
        for name, g in (payload.get("groups") or {}).items()
    )
    return Snapshot(
        host=host, at=at or datetime.now(UTC), group=opts.group, label_glob=opts.label_glob,
        groups=groups, health=health, via=str(payload.get("via", "filter")), sent=sent,
        received=received, chains=tuple(payload.get("chains") or ()),
        source=str(payload.get("source") or "status"),
    )


def read_snapshot(remote: Remote, opts: Options, previous: Snapshot | None = None,
                  checks: Sequence[Check] = ()) -> Snapshot:
    """One poll, one remote command (two on a host without python3 with failed labels).
    `checks`: custom checks run after the poll in the same command (Snapshot.checks)."""
    nonce = custom.new_nonce()
    command = poll_command(remote.host, opts)
    if checks:
        command += "\n" + custom.script(checks, nonce)
    result = remote.run(command, check=False, readonly=True)  # a poll: may reconnect
    text, rows = custom.results(checks, result.stdout, nonce)
    if text.lstrip().startswith("@@plain"):
        payload = parse_plain(remote, text, opts)
    else:
        try:
            payload = json.loads(text.strip().splitlines()[-1]) if text.strip() else {}
        except json.JSONDecodeError:
            payload = {}
        if not payload:
            first = (result.stderr.strip() or text.strip() or f"exit {result.exited}")
            raise RemoteError(f"{remote.host.name}: monitor filter failed: "
                              f"{first.splitlines()[-1]}")
    snap = snapshot_from(remote.host.name, payload, opts, sent=len(command.encode()),
                         received=len(result.stdout.encode()))
    if rows:
        snap = replace(snap, checks=rows)
    if previous is not None:
        seconds = (snap.at - previous.at).total_seconds()
        snap = replace(snap, health=snap.health.since(previous.health, seconds))
    return snap


