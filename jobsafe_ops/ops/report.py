"""`jobsafe report --host H --group G [--playbook P] [--html FILE]`: what a group's batch
did, by label, as one self-contained HTML page (ops/report_html.py) or a table.

One SSH round trip: the monitor filter's `report` mode (hostside/monitor_filter.py, sent
bundled like every poll) reads on the host pueue's state (state file, or `pueue status`),
every `end` line of the outcome ledgers (or only the playbook's batch) and the start
markers of jobs still running, the log tails of the newest failed attempts pueue still
has, and the host's health sample; it prints one JSON line. Task ids never leave the host.

On a Slurm host (`scheduler = "slurm"`) the same round trip runs slurm_feed.py's `report`
(sent inline like the monitor's board): every `end` line of the batches' ledgers, and what
is running, queued, blocked or held from squeue - not from start markers, which compute
nodes write under another boot id - with log tails from `<batch>/logs/<label>.log` and
the cluster's allocated CPUs and memory (sinfo) as its health.

Exit codes: 0 report written (or printed); 2 bad input (no --group, an empty --html, a group
neither on the daemon nor on record nor in the host file); 4 unreachable or
pueue not answering; 6 nothing selected (no label in the group or the playbook's batch).
The report is not a verdict: failed jobs do not make it exit 1 (monitor does that).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, NothingSelected, RemoteError
from ..facts.snapshot import FILTER_LOADER, health_of
from ..hostside import monitor_filter
from ..hostside.model import BATCH_ROOT, SAMPLED, parse_ts
from ..inventory import Host
from ..scheduler.pueue import status_failure
from ..secrecy import redact_text
from ..shell import home_word, join
from .report_html import HealthRow, Report, Run, Sample, render

if TYPE_CHECKING:
    from ..remote import Remote

LOG_LINES = 20  # lines of each failed attempt's log
LOG_LABELS = 20  # failed attempts whose logs are read (newest first)


def check_args(group: str | None, html: str | None, log_lines: int) -> None:
    if not group or not group.strip():
        raise ConfigError("--group is required: the pueue group the batch ran in, e.g. "
                          "--group p1")
    if html is not None and not html.strip():
        raise ConfigError("--html '' is empty; pass the file to write, e.g. "
                          "--html report.html, or leave --html out for a table")
    if html is not None and Path(html).is_dir():
        raise ConfigError(f"--html {html!r} is a directory; pass a file name, e.g. "
                          f"--html {os.path.join(html, 'report.html')}")
    if log_lines < 0:
        raise ConfigError(f"--log-lines {log_lines}: must be >= 0")


def report_line(host: Host, group: str, batch: str | None, log_lines: int = LOG_LINES,
                log_labels: int = LOG_LABELS) -> str:
    """The one shell line of the read: the monitor filter's `report` on a pueue host,
    slurm_feed.py's (sent inline like the board) on a Slurm login node."""
    if not host.is_slurm:
        return join(report_argv(host, group, batch, log_lines, log_labels))
    from ..facts.slurm_snapshot import BOARD_LOADER

    argv = ["report", "--group", group, "--log-lines", str(log_lines), "--log-labels",
            str(log_labels), *(["--batch", batch] if batch is not None else [])]
    return (f"{join(['python3', '-c', BOARD_LOADER])} {join(argv)} "
            f"--root {home_word(BATCH_ROOT)}")


def report_argv(host: Host, group: str, batch: str | None, log_lines: int = LOG_LINES,
                log_labels: int = LOG_LABELS) -> list[str]:
    argv = ["python3", "-c", FILTER_LOADER, "report", "--pueue", host.pueue, "--group", group,
            "--log-lines", str(log_lines), "--log-labels", str(log_labels)]
    if batch is not None:
        argv += ["--batch", batch]
    return argv


def parse_payload(host: Host, payload: Mapping[str, Any], group: str,
                  playbook: str | None) -> Report:
    """The host's JSON line -> Report (log tails redacted). Raises for a host-side error
    (4), a group unknown everywhere (2) and an empty selection (6). Pure."""
    if payload.get("error"):
        error = str(payload["error"])
        if error.startswith(monitor_filter.STATUS_FAILED):
            error = status_failure(error[len(monitor_filter.STATUS_FAILED):])
        raise RemoteError(f"{host.name}: {error}")
    if "runs" not in payload:
        raise RemoteError(f"{host.name}: the report read returned no tasks")
    if not payload.get("known") and group not in host.groups:
        known = ", ".join(payload.get("groups") or []) or "none"
        raise ConfigError(f"{host.name}: group {group!r} is neither on the pueue daemon "
                          f"(it has: {known}) nor on record nor in the host file; check "
                          "--group")
    runs = tuple(
        Run(label=str(r["label"]), attempt=int(r.get("attempt") or 0),
            outcome=str(r.get("outcome") or "unknown"),
            exit=r.get("exit") if isinstance(r.get("exit"), int) else None,
            start=_num(r.get("start")), end=_num(r.get("end")),
            source=str(r.get("source") or "pueue"),
            unit=r.get("unit") if isinstance(r.get("unit"), str) else None,
            log=tuple(redact_text(str(line)) for line in r.get("log") or ()))
        for r in payload.get("runs") or () if isinstance(r, Mapping) and r.get("label"))
    if not runs:
        what = f"the batch of playbook {playbook!r} in group {group!r}" if playbook \
            else f"group {group!r}"
        raise NothingSelected(f"{host.name}: nothing selected: {what} has no labels (none "
                              "in pueue, none on record); check --group"
                              + (" and --playbook" if playbook else ""))
    h = dict(payload.get("health") or {})
    verdicts = tuple(HealthRow(v.name, v.level, v.value, v.detail)
                     for v in health_of(h).verdicts(host))
    now = _num(payload.get("now")) or max((r.end or r.start or 0.0) for r in runs)
    samples = [sample_of(x) for x in payload.get("samples") or () if isinstance(x, Mapping)]
    health = health_of(h)
    if health.load_ratio is not None or health.mem_used is not None:
        samples.append(Sample(
            now, None if health.load_ratio is None else round(100 * health.load_ratio, 1),
            None if health.mem_used is None else round(100 * health.mem_used, 1),
            bool(health.swap_in or health.swap_out), "report"))
    return Report(host=host.name, group=group, playbook=playbook, generated_at=now,
                  runs=runs, status=payload.get("status"),
                  health={k: v for k, v in h.items() if k != "swap_counters"},
                  verdicts=verdicts,
                  samples=tuple(sorted((x for x in samples if x is not None),
                                       key=lambda x: x.time)))


def sample_of(entry: Mapping[str, Any]) -> Sample | None:
    """A journal reading (autoscale's `load1`, `nproc`, `mem_pct`, swap pages) -> Sample."""
    stamp, load, nproc = _num(entry.get("time")), _num(entry.get("load1")), entry.get("nproc")
    if stamp is None:
        return None
    pct = round(100 * load / nproc, 1) if load is not None and isinstance(nproc, int) \
        and nproc > 0 else None
    return Sample(stamp, pct, _num(entry.get("mem_pct")),
                  bool(entry.get("swap_in") or entry.get("swap_out")), "journal")


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        else None


def gather(remote: Remote, group: str, playbook: str | None, batch: str | None,
           log_lines: int = LOG_LINES) -> Report:
    """One round trip: the host's report line, parsed."""
    host = remote.host
    result = remote.run(report_line(host, group, batch, log_lines), check=False,
                        readonly=True)
    text = result.stdout.strip()
    try:
        payload = json.loads(text.splitlines()[-1]) if text else {}
    except json.JSONDecodeError:
        payload = {}
    if not payload:
        first = result.stderr.strip() or text or f"exit {result.exited}"
        raise RemoteError(f"{host.name}: the report read failed on the host: "
                          f"{first.splitlines()[-1]} (python3 is required on the host, "
                          "as for submit-batch)")
    return parse_payload(host, with_local_samples(payload, host.name), group, playbook)


def with_local_samples(payload: Mapping[str, Any], host: str) -> dict[str, Any]:
    """The host journal's readings plus this laptop's journal's for the host (an entry
    mirrored to the host is in both: once), since the batch's first start."""
    from .. import journal

    starts = [r["start"] for r in payload.get("runs") or ()
              if isinstance(r, Mapping) and isinstance(r.get("start"), (int, float))]
    since = min(starts) if starts else None
    samples = [dict(x) for x in payload.get("samples") or () if isinstance(x, Mapping)]
    seen = {(x.get("action"), round(float(x.get("time") or 0), 2)) for x in samples}
    for entry in journal.entries(host):
        if entry.get("action") not in SAMPLED or "load1" not in entry:
            continue
        stamp = parse_ts(entry.get("time"))
        if stamp is None or (since is not None and stamp.timestamp() < since):
            continue
        key = (entry.get("action"), round(stamp.timestamp(), 2))
        if key in seen:
            continue
        seen.add(key)
        samples.append({"time": stamp.timestamp(), "action": entry.get("action"),
                        **{k: entry.get(k) for k in ("nproc", "load1", "mem_pct", "swap_in",
                                                      "swap_out")}})
    return {**payload, "samples": samples}


def write_atomic(path: str, text: str) -> None:
    """The page next to its final name, fsynced, renamed over it: a reader (a browser, a
    CI artifact upload) never sees half a file."""
    target = os.path.abspath(path)
    directory = os.path.dirname(target)
    if not os.path.isdir(directory):
        raise ConfigError(f"--html {path!r}: directory {directory} does not exist; create it "
                          "or pass another path")
    fd, tmp = tempfile.mkstemp(prefix=".report-", suffix=".html", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def report_cmd(host: str, group: str | None, playbook: str | None, html: str | None,
               log_lines: int, inventory: str | None, json_out: bool) -> int:
    from ..cli import HostRow, hosts_for, print_json
    from ..remote import session
    from .cancel import batch_name

    check_args(group, html, log_lines)
    assert group is not None
    hosts = hosts_for(host, inventory)
    if len(hosts) != 1:
        raise ConfigError(f"--host {host!r} selects {len(hosts)} hosts; a report is one "
                          "host's batch: name one host")
    batch = batch_name(playbook) if playbook is not None else None
    if html is not None:  # a bad path is bad input before any SSH
        directory = os.path.dirname(os.path.abspath(html))
        if not os.path.isdir(directory):
            raise ConfigError(f"--html {html!r}: directory {directory} does not exist; "
                              "create it or pass another path")
    with session(hosts[0]) as remote:
        report = gather(remote, group, batch, batch, log_lines)
    if html is not None:
        write_atomic(html, render(report))
        report = replace(report, html=os.path.abspath(html))
    if json_out:
        print_json(0, [HostRow(report.host, True, 0, None, report)])
    else:
        show(report)
    return 0


def show(report: Report) -> None:
    from rich.markup import escape
    from rich.table import Table

    from ..console import console
    from .report_html import counts

    latest = report.latest
    t = Table(title=f"report {report.host} group {report.group}"
              + (f" playbook {report.playbook}" if report.playbook else ""))
    t.add_column("outcome")
    t.add_column("labels", justify="right")
    t.add_column("attempts", justify="right")
    by_label, by_attempt = counts(latest.values()), counts(report.runs)
    for name in sorted(set(by_label) | set(by_attempt), key=lambda o: (o != "success", o)):
        t.add_row(escape(name), str(by_label.get(name, 0)), str(by_attempt.get(name, 0)))
    console.print(t)
    bad = report.failures
    if bad:
        f = Table(title="failures")
        for col in ("label", "outcome", "exit", "last log line"):
            f.add_column(col, overflow="fold")
        for run in bad[:20]:
            f.add_row(escape(run.label), escape(run.outcome),
                      "" if run.exit is None else str(run.exit),
                      escape(run.log[-1]) if run.log else "")
        console.print(f)
    if report.html:
        console.print(f"wrote {escape(report.html)} ({len(latest)} labels, "
                      f"{len(report.runs)} attempts, {len(bad)} failed)", highlight=False)
