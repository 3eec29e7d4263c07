"""submit-batch's rich rendering: a progress bar per host while the feeder runs, then a
summary table per host (--json bypasses it)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Group as RGroup
from rich.console import RenderableType
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from ..console import err_console
from .plan import BatchReport, Item

SHOWN = 10  # labels listed per section in the rich view (--json lists all)
ACTION_STYLE = {"add": "green", "skip": "dim", "failed": "bold red", "refused": "bold red",
                "held": "yellow"}



@contextmanager
def progress_bars(enabled: bool) -> Iterator[Callable[[str], Callable[[int, int], None] | None]]:
    """One bar per host, on stderr (stdout stays clean for --json); fed by the feeder's
    `@@progress DONE TOTAL` lines."""
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                        MofNCompleteColumn(), TimeElapsedColumn(), console=err_console,
                        transient=True,
                        # not a terminal (cron, CI): no bar, and no blank line left behind
                        disable=not enabled or not err_console.is_terminal)
    tasks: dict[str, Any] = {}

    def for_host(name: str) -> Callable[[int, int], None] | None:
        if not enabled:
            return None

        def update(done: int, total: int) -> None:
            if name not in tasks:
                tasks[name] = progress.add_task(f"{name}: feeding", total=total)
            progress.update(tasks[name], completed=done, total=total)

        return update

    with progress:
        yield for_host


def _labels(items: list[Item], limit: int = SHOWN) -> Table:
    t = Table(show_header=True, box=None, pad_edge=False)
    for col in ("label", "action", "why"):
        t.add_column(col, overflow="fold")
    for it in items[:limit]:
        shown = it.label if it.new_label in (None, it.label) else f"{it.label} -> {it.new_label}"
        t.add_row(shown, f"[{ACTION_STYLE.get(it.action, '')}]{it.action}", it.reason)
    if len(items) > limit:
        t.add_row(f"... and {len(items) - limit} more", "", "(--json lists all)")
    return t


def batch_view(r: BatchReport) -> RenderableType:
    c = r.counts
    title = f"submit-batch {r.playbook} -> {r.host}" + (" (dry run: nothing changed)"
                                                         if r.dry else "")
    summary = Table(title=title, show_header=False)
    summary.add_column("what", style="bold")
    summary.add_column("value", overflow="fold")
    each = "one array element" if r.pueue == "sbatch" else "one pueue task"  # (Slurm)
    unit = f" ({r.units} units; {each} each)" if r.mode == "units" else ""
    summary.add_row("planned", f"{r.planned} jobs{unit}")
    if r.mode == "units" and r.done_inside_units:
        summary.add_row("done inside units", str(r.done_inside_units))
    verb = "to add" if r.dry else "added"
    added = c["add"] if r.dry else c.get("added", 0)
    summary.add_row(verb, f"[green]{added}[/] (retries: {c['retries']})")
    summary.add_row("skipped", f"{c['skip']} (queued, running, succeeded or cleaned)")
    for key in ("failed", "refused", "held"):
        if c[key]:
            summary.add_row(key, f"[{ACTION_STYLE[key]}]{c[key]}")
    if not r.dry and c.get("errors"):
        summary.add_row("errors", f"[bold red]{c['errors']}")
    m = r.memcap
    cap = ("[green]on: " if m.wrap else "[bold red]refused: " if m.refusal
           else "[yellow]off: " if m.required or m.uncapped_by else "off: ") + m.reason
    summary.add_row("memory cap", cap)
    for cl in r.cleans:
        summary.add_row("state hygiene", f"{'pueue clean -g ' + cl.group if cl.run else 'skip'}"
                        f" ({cl.reason})")
    new = dict(r.new_groups)
    summary.add_row("groups", ", ".join(
        f"{g} (new: parallel {new[g]})" if g in new else g for g in r.groups))
    summary.add_row("batch dir", r.batch_dir)
    summary.add_row("ssh", f"{r.connections} connection(s), {r.round_trips} round trips"
                    if r.connections else f"local host (no SSH), {r.round_trips} commands")
    parts: list[RenderableType] = [summary]
    if r.dry and r.sample:
        parts.append(Text("sample of rendered commands:", style="bold"))
        parts.extend(Text(f"  {cmd}") for cmd in r.sample)
    items = list(r.items)
    trouble = [i for i in items if i.action in ("failed", "refused", "held")]
    if trouble:
        parts.append(Text("not submitted:", style="bold red"))
        parts.append(_labels(trouble))
    if r.dry:
        skipped = [i for i in items if i.action == "skip"]
        if skipped:
            parts.append(Text("would skip:", style="bold"))
            parts.append(_labels(skipped))
    if r.errors:
        t = Table(title="feeder errors (rerun to converge)")
        t.add_column("label")
        t.add_column("error", overflow="fold")
        for label, err in r.errors[:SHOWN]:
            t.add_row(label, err)
        parts.append(t)
    return RGroup(*parts)
