"""`inv clean`: a group-scoped `pueue clean -g G` (AP-10: the state file grows with every
finished task and every add rewrites it), reporting the state-file size before and after.

Verify before mutate: one fresh read (the monitor's filter over every group's tasks, so
dependants in other groups are seen) right before the clean; refused while any unfinished
task depends on a task of the group. Those chains reference tasks by id, and ids are reused
after a clean (max+1), so a chain must finish (or be repaired) first.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .. import journal
from ..errors import ConfigError, RefusedError
from ..facts.snapshot import Options, Snapshot, read_snapshot
from ..remote import Remote
from ..scheduler.pueue import clean_argv

ACTION = "clean"


@dataclass(frozen=True)
class CleanReport:
    host: str
    group: str
    dry: bool
    argv: tuple[str, ...]
    successful_only: bool
    state_file: str | None
    size_before: int | None
    size_after: int | None
    counts_before: Mapping[str, int]
    counts_after: Mapping[str, int]
    tasks_before: int
    tasks_after: int

    @property
    def removed(self) -> int:
        return self.tasks_before - self.tasks_after

    def to_dict(self) -> dict[str, Any]:
        return {
            "host": self.host, "group": self.group, "dry": self.dry,
            "command": list(self.argv), "successful_only": self.successful_only,
            "state_file": self.state_file, "size_before": self.size_before,
            "size_after": self.size_after, "counts_before": dict(self.counts_before),
            "counts_after": dict(self.counts_after), "removed": self.removed,
        }


def _tasks(snap: Snapshot, group: str) -> int:
    g = snap.view(group)
    return g.total + g.superseded


def check_clean(snap: Snapshot, group: str) -> None:
    """Refuse (exit 3) while unfinished tasks depend on tasks of `group`. Pure."""
    if snap.view(group).status == "missing":
        known = ", ".join(g.name for g in snap.groups if g.status != "missing") or "none"
        raise ConfigError(f"{snap.host}: group {group!r} does not exist on the pueue daemon; "
                          f"check --group (daemon has: {known})")
    if snap.chains:
        shown = "; ".join(f"{c['label']} ({c['group']}, {c['state']}) after "
                          f"{', '.join(c['after'])}" for c in snap.chains[:5])
        more = f" and {len(snap.chains) - 5} more" if len(snap.chains) > 5 else ""
        raise RefusedError(
            f"{snap.host}: refusing to clean group {group!r}: unfinished dependency chain: "
            f"{shown}{more}. Wait for the chain to finish (inv monitor --group "
            f"{snap.chains[0]['group']} --until-done), or repair it, then clean"
        )


SLURM_NOTHING = ("nothing to clean: Slurm drops finished jobs from squeue by itself "
                 "(MinJobAge); the ledger of outcomes is kept")


def slurm_clean(host: str, group: str, dry: bool) -> CleanReport:
    """clean on a Slurm host: nothing to run (no state file grows with finished jobs)."""
    return CleanReport(host=host, group=group, dry=dry, argv=(), successful_only=False,
                       state_file=None, size_before=None, size_after=None, counts_before={},
                       counts_after={}, tasks_before=0, tasks_after=0)


def run_clean(remote: Remote, group: str, *, successful_only: bool = False,
              dry: bool = False) -> CleanReport:
    opts = Options(group=group, all_tasks=True, log_lines=0, log_labels=0, limit=0,
                   swap_window=0)
    before = read_snapshot(remote, opts)
    check_clean(before, group)
    argv = clean_argv(remote.host.pueue, group, successful_only)
    after = before
    if not dry:
        remote.run(argv)
        after = read_snapshot(remote, opts)
    g0, g1 = before.view(group), after.view(group)
    report = CleanReport(
        host=remote.host.name, group=group, dry=dry, argv=tuple(argv),
        successful_only=successful_only,
        state_file=after.health.state_file or before.health.state_file,
        size_before=before.health.state_size, size_after=after.health.state_size,
        counts_before=g0.counts, counts_after=g1.counts,
        tasks_before=_tasks(before, group), tasks_after=_tasks(after, group),
    )
    if not dry:
        fields = {k: v for k, v in report.to_dict().items() if k not in ("host", "dry")}
        journal.append(remote.host.name, ACTION, result="ok", **fields)
    return report


def clean_cmd(host: str, group: str | None, successful_only: bool, dry: bool,
              inventory: str | None, json_out: bool) -> int:
    from rich.table import Table

    from ..cli import fan_out, finish, hosts_for
    from ..console import console
    from ..inventory import Host
    from ..remote import session

    if not group:
        raise ConfigError("--group is required: clean is always scoped to one group (AP-10)")
    hosts = hosts_for(host, inventory)

    def one(h: Host) -> CleanReport:
        if h.is_slurm:  # Slurm forgets finished jobs itself; the ledger is kept
            h.group(group)  # an undeclared group is still a typo (exit 2)
            return slurm_clean(h.name, group, dry)
        with session(h) as remote:
            return run_clean(remote, group, successful_only=successful_only, dry=dry)

    def mb(n: int | None) -> str:
        return "?" if n is None else f"{n / 1024**2:.2f} MB ({n} bytes)"

    def render(r: CleanReport) -> None:
        if not r.argv:
            console.print(f"{r.host}: {SLURM_NOTHING}")
            return
        t = Table(title=f"clean {r.host} group {r.group}" + (" (dry run)" if r.dry else ""),
                  show_header=False)
        t.add_column("what", style="bold")
        t.add_column("value")
        t.add_row("command", " ".join(r.argv) + ("  [not run: --dry]" if r.dry else ""))
        t.add_row("state file", r.state_file or "?")
        t.add_row("size before", mb(r.size_before))
        t.add_row("size after", "-" if r.dry else mb(r.size_after))
        t.add_row("tasks before", f"{r.tasks_before} " + str(dict(r.counts_before)))
        t.add_row("tasks after", "-" if r.dry else f"{r.tasks_after} " + str(dict(r.counts_after)))
        console.print(t)

    return finish(fan_out(hosts, one), json_out, render)
