"""`monitor --host a,b --group G [--playbook P]`: one board by label across the hosts of a
spread batch. Pure over the polls (watch.HostResult); the per-host boards stay as they are.

* totals: every answering host's counts of the group added up; per host: its own counts;
* failures: each failed (or blocked) label with the host it failed on, so `retry-failed
  --host H` (or `submit-batch --spread`, which retries a label where it ran) knows where;
* on several hosts: a label seen running or failed on more than one host (it ran twice);
* --playbook P selects one batch: the hosts read only labels under the batch's common
  label prefix (`label_glob`), and failures are kept to the batch's own labels.

Exit code: the per-host rule (watch.board_exit_code) unchanged.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from os.path import commonprefix
from typing import Any

from rich.console import Group as RGroup
from rich.console import RenderableType
from rich.table import Table

from ..batch.retry import base_label
from ..errors import ConfigError
from .board import HostResult, board_exit_code

STATES = ("queued", "running", "paused", "stashed", "blocked", "success", "failed", "killed",
          "dependency_failed")
SHOWN = 20


def batch_glob(labels: Sequence[str], playbook: str) -> str:
    """The label glob selecting one batch: its labels' common prefix (glob characters
    bracketed), `*`. A batch without one cannot be selected on the host."""
    prefix = commonprefix(list(labels))
    if not prefix:
        raise ConfigError(f"--playbook {playbook}: its labels share no common prefix, so the "
                          "hosts cannot select them; pass --label-glob instead")
    return "".join(f"[{c}]" if c in "*?[]" else c for c in prefix) + "*"


@dataclass(frozen=True)
class Failure:
    label: str
    host: str
    state: str
    exit_code: int | None

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "host": self.host, "state": self.state,
                "exit_code": self.exit_code}


@dataclass(frozen=True)
class FleetBoard:
    group: str
    totals: dict[str, int]
    per_host: dict[str, dict[str, int]]
    unread: dict[str, str]  # host -> why it could not be read
    failures: tuple[Failure, ...]
    twice: tuple[tuple[str, tuple[str, ...]], ...]  # label -> hosts it ran/failed on
    exit_code: int

    def to_dict(self) -> dict[str, Any]:
        return {"group": self.group, "totals": self.totals, "per_host": self.per_host,
                "unread": self.unread, "failures": [f.to_dict() for f in self.failures],
                "twice": [{"label": lbl, "hosts": list(hs)} for lbl, hs in self.twice],
                "exit_code": self.exit_code}


def build(board: Sequence[HostResult], group: str,
          labels: Collection[str] | None = None) -> FleetBoard:
    """`labels`: the batch's own labels (--playbook); others under its prefix are left out
    of the failures."""
    totals: dict[str, int] = {}
    per_host: dict[str, dict[str, int]] = {}
    unread: dict[str, str] = {}
    failures: list[Failure] = []
    seen: dict[str, list[str]] = {}
    for r in board:
        if r.snapshot is None:
            unread[r.host] = str(r.error) if r.error else "not read"
            continue
        view = r.snapshot.view(group)
        counts = {s: n for s, n in view.counts.items() if n}
        per_host[r.host] = counts
        for s, n in counts.items():
            totals[s] = totals.get(s, 0) + n
        for t in (*view.failed, *view.blocked):
            if labels is None or base_label(t.label) in labels:
                failures.append(Failure(t.label, r.host, t.state, t.exit_code))
        for t in (*view.running, *view.failed):
            hosts = seen.setdefault(base_label(t.label), [])
            if r.host not in hosts:
                hosts.append(r.host)
    twice = tuple((lbl, tuple(hs)) for lbl, hs in seen.items() if len(hs) > 1)
    return FleetBoard(group, totals, per_host, unread, tuple(failures), twice,
                      board_exit_code(board))


def fleet_view(fb: FleetBoard) -> RenderableType:
    t = Table(title=f"fleet: group {fb.group} over {len(fb.per_host) + len(fb.unread)} host(s)")
    states = [s for s in STATES if fb.totals.get(s)] or ["queued", "running", "success"]
    t.add_column("host")
    for s in states:
        t.add_column(s, justify="right")
    for host, counts in fb.per_host.items():
        t.add_row(host, *(str(counts.get(s, 0)) for s in states))
    for host in fb.unread:
        t.add_row(f"[bold red]{host}", *("?" for _ in states))
    t.add_row("[bold]total", *(f"[bold]{fb.totals.get(s, 0)}" for s in states))
    parts: list[RenderableType] = [t]
    if fb.failures:
        f = Table(title=f"failed labels ({len(fb.failures)}), by host")
        for col in ("label", "host", "state", "exit"):
            f.add_column(col, overflow="fold")
        for x in fb.failures[:SHOWN]:
            f.add_row(x.label, x.host, x.state, "" if x.exit_code is None else str(x.exit_code))
        parts.append(f)
        if len(fb.failures) > SHOWN:
            parts.append(f"... and {len(fb.failures) - SHOWN} more (--json lists all)")
    for label, hosts in fb.twice[:SHOWN]:
        parts.append(f"[bold red]{label} ran on {', '.join(hosts)}[/]")
    return RGroup(*parts)


def with_fleet(base: RenderableType, board: Sequence[HostResult], group: str,
               labels: Collection[str] | None, on: bool) -> RenderableType:
    """The monitor's view, plus the fleet board when it is `on` (several hosts, or
    --playbook)."""
    return RGroup(base, fleet_view(build(board, group, labels))) if on else base


def select(playbook: str | None, label_glob: str | None, hosts: Sequence[Any]
           ) -> tuple[str | None, frozenset[str] | None]:
    """--playbook P -> (the batch's label glob, its labels); without it, as given."""
    if playbook is None:
        return label_glob, None
    if label_glob is not None:
        raise ConfigError("--playbook and --label-glob exclude each other; pick one")
    from ..batch.playbook import load_playbook, plan_batch

    plan = plan_batch(load_playbook(playbook), hosts[0])
    labels = [j.label for j in (*plan.jobs, *plan.after)]
    return batch_glob(labels, plan.playbook), frozenset(labels)
