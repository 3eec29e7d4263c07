"""The monitor's rich view: one renderable over every host, rebuilt from data on each poll
and handed to `rich.live.Live.update` (redrawn in place, no clearing, so no flicker)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from rich.console import Group as RGroup
from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from ..facts.probe import Verdict
from ..facts.snapshot import FAILED, Snapshot
from ..facts.views import LEVEL_STYLE, _dur, _gib
from ..inventory import Host
from .board import HostResult, board_exit_code

COUNT_COLUMNS = ("queued", "running", "paused", "stashed", "blocked", "success", "failed")
OUTCOME_STYLE = {"done": "green", "running": "cyan", "empty": "dim", "failing": "yellow",
                 "failed": "bold red"}
EXIT_TEXT = {0: "all done, all succeeded", 1: "some failed", 3: "still running",
             4: "host unreachable", 2: "bad input", 5: "some hosts failed (see their rows)",
             6: "nothing selected (no task in the group, or none matches --label-glob)"}


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    return f"{n / 1024:.0f} KB" if n < 1024**2 else f"{n / 1024**2:.1f} MB"


def _styled(v: Verdict | None, text: str) -> str:
    if v is None:
        return text
    return f"[{LEVEL_STYLE[v.level]}]{text}[/]"


def health_row(snap: Snapshot, host: Host) -> list[str]:
    h = snap.health
    by = {v.name: v for v in h.verdicts(host)}
    if h.load and h.nproc:
        load = f"{h.load[0]:.2f} of {h.nproc} cores (limit {0.9 * h.nproc:.1f})"
    else:
        load = "?"
    if h.swap_in is None or h.swap_out is None:
        swap = "?"
    else:
        over = f" in {h.swap_window:.0f}s" if h.swap_window and h.swap_window >= 1 else ""
        swap = f"si {h.swap_in} so {h.swap_out}{over}"
    used = h.mem_used
    mem = _gib(h.mem_available) + ("" if used is None else f" ({used:.0%} used)")
    sv = by.get("state file")
    state = _size(h.state_size) + (f" {sv.level}" if sv and sv.level != "ok" else "")
    return [snap.host, _styled(by.get("load"), load), _styled(by.get("swap"), swap),
            _styled(by.get("memory"), mem), _styled(sv, state)]


def monitor_view(board: Sequence[HostResult], hosts: Mapping[str, Host],
                 now: datetime | None = None) -> RenderableType:
    now = now or datetime.now(UTC)
    snaps = [r.snapshot for r in board if r.snapshot is not None]
    group = snaps[0].group if snaps else None
    glob = snaps[0].label_glob if snaps else None
    code = board_exit_code(board)
    title = f"monitor {group or 'all groups'}" + (f" labels {glob}" if glob else "")
    header = Text.from_markup(
        f"[bold]{title}[/] at {now:%H:%M:%S} UTC  exit {code}: {EXIT_TEXT.get(code, '?')}")
    parts: list[RenderableType] = [header]

    counts = Table(title="groups", title_justify="left")
    for col in ("host", "group", "labels by state", "total", "progress", "verdict"):
        counts.add_column(col, justify="right" if col == "total" else "left")
    for r in board:
        if r.snapshot is None:
            host_code = r.error.exit_code if r.error else 4
            counts.add_row(r.host, group or "-", Text(str(r.error or "unreachable")), "-",
                           "-", f"[bold red]failed (exit {host_code})")
            continue
        for g in r.snapshot.watched:
            by_state = "  ".join(
                f"{c}={n}" for c in COUNT_COLUMNS
                if (n := g.count(*FAILED) if c == "failed" else g.count(c)))
            extra = f" (+{g.superseded} earlier attempts)" if g.superseded else ""
            info = "" if g.status == "Running" else f" [yellow]group {g.status.lower()}[/]"
            counts.add_row(r.host, f"{g.name} (parallel {g.parallel})", (by_state or "empty")
                           + extra, str(g.total), g.progress.text(),
                           f"[{OUTCOME_STYLE[g.outcome]}]{g.outcome}[/]{info}")
    parts.append(counts)

    running = [(s.host, t) for s in snaps for g in s.watched for t in g.running]
    if running:
        t = Table(title="running", title_justify="left")
        for col in ("host", "label", "state", "runtime"):
            t.add_column(col)
        for host, v in sorted(running, key=lambda x: -(x[1].runtime or 0)):
            t.add_row(host, v.label, v.state, _dur(v.runtime))
        parts.append(t)

    failed = [(s.host, t) for s in snaps for g in s.watched for t in g.failed]
    if failed:
        t = Table(title="failed", title_justify="left")
        for col in ("host", "label", "result", "exit", "last log lines"):
            t.add_column(col, overflow="fold")
        for host, v in failed:
            result = f"{v.state} ({v.slurm_state}, sacct)" if v.slurm_state else v.state
            t.add_row(host, v.label, result, "-" if v.exit_code is None else str(v.exit_code),
                      Text("\n".join(v.log)) if v.log else Text("-", style="dim"))
        parts.append(t)

    blocked = [(s.host, t) for s in snaps for g in s.watched for t in g.blocked]
    if blocked:
        t = Table(title="blocked dependents (a dependency failed; they will never start)",
                  title_justify="left")
        for col in ("host", "label", "waiting on"):
            t.add_column(col)
        for host, v in blocked:
            t.add_row(host, v.label, ", ".join(v.after))
        parts.append(t)

    more = [f"{s.host}/{g.name}: {n} more {kind}" for s in snaps for g in s.watched
            for kind, n in g.truncated.items()]
    if more:
        parts.append(Text("not shown: " + "; ".join(more), style="dim"))

    health = Table(title="health", title_justify="left")
    for col in ("host", "load (limit 0.9 x nproc)", "swap", "memory available", "state file"):
        health.add_column(col)
    for s in snaps:
        health.add_row(*health_row(s, hosts[s.host]))
    parts.append(health)
    return RGroup(*parts)
