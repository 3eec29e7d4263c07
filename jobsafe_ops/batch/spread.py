"""`submit-batch --spread`: which host runs which label of one batch. Pure: data in, data
out (batch/fleet.py reads the hosts, calls `assign`, and feeds each host its share).

The rule, per label of the plan, in plan order:

1. **present**: the label (any attempt of it) is queued, running, done or receipted on a
   host that answered: it stays there (never added anywhere else; a failed one is retried
   on the host that ran it). Found on two hosts (added there before any assignment was
   recorded), it keeps the recorded host, else the first; the others are `conflicts`.
2. **kept**: an assignment recorded on any host's batch dir (`spread.tsv`) keeps its host,
   also when that host is down now (its labels are then *pending* on it, never moved
   silently).
3. **moved**: `--reassign-from H`: a label of H that is not present on H (H is gone, or it
   failed there) is assigned again as in 4; present on a live H, queued/running refuses the
   run (`refusal`), succeeded stays.
4. **new**: to the healthy host whose group finishes its queue first: load / slots, where
   load = tasks of the group already queued or running there + labels given to it in this
   run, and slots = min(the group's max (or parallel, if larger), cores, available memory /
   job_memory), at least 1. Ties go to the host listed first. Over many labels the shares
   approach the capacity weights (slots), minus what is already queued.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError, RefusedError
from ..scheduler.pueue import PueueState
from .retry import base_label

SPREAD_FILE = "spread.tsv"  # label<TAB>host, every label of the batch, on every host
ACTIVE_STATES = frozenset({"queued", "running", "paused", "stashed", "locked"})
AFTER_SCOPES = ("fleet", "host")


# ---- plan time ------------------------------------------------------------------------

def check_chains(source: str, has_after: bool, has_after_phase: bool, scope: str) -> None:
    """pueue cannot wait on another host's task: a spread batch with [[after]] or
    after_phase is refused unless the playbook says each host chains its own share."""
    if scope == "host" or not (has_after or has_after_phase):
        return
    what = "[[after]] steps" if has_after else "a phase with after_phase"
    raise ConfigError(
        f"{source}: --spread with {what}: pueue cannot wait on another host's task. Set "
        "after_scope = \"host\" in the playbook (each host runs the chain after its own "
        "share), or run a fleet-wide chain on one host (no --spread) or with the Slurm "
        "scheduler")


# ---- capacity ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Capacity:
    """One host's room for one group: `slots` tasks at once, `backlog` already waiting."""

    host: str
    group: str
    slots: int
    backlog: int
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"group": self.group, "slots": self.slots, "backlog": self.backlog,
                "reason": self.reason}


def capacity(host: str, group: str, *, parallel: int, max_parallel: int,
             job_memory: int | None, nproc: int | None, mem_available: int | None,
             backlog: int) -> Capacity:
    """slots = min(max(parallel, max), cores, available memory // job_memory), >= 1."""
    limits = [(max(parallel, max_parallel), f"max {max(parallel, max_parallel)}")]
    if nproc:
        limits.append((nproc, f"{nproc} cores"))
    if job_memory and mem_available is not None:
        fit = mem_available // job_memory
        limits.append((fit, f"{_gib(mem_available)} free / {_gib(job_memory)} per job = {fit}"))
    slots, why = min(limits, key=lambda lim: lim[0])
    slots = max(1, slots)
    return Capacity(host, group, slots, backlog,
                    f"{slots} slot(s) ({why}), {backlog} already queued/running")


def backlog(state: PueueState | None, group: str) -> int:
    if state is None:
        return 0
    return sum(1 for t in state.in_group(group) if t.state in ACTIVE_STATES)


def _gib(n: int) -> str:
    return f"{n / 1024**3:.1f}G"


# ---- what each host says ---------------------------------------------------------------

@dataclass(frozen=True)
class HostView:
    """One answering host's facts about this batch."""

    host: str
    present: Mapping[str, str]  # base label -> queued|running|success|failed|submitted
    recorded: Mapping[str, str]  # its spread.tsv: label -> host
    capacity: Mapping[str, Capacity]  # group -> capacity


def presence(labels: Iterable[tuple[str, str]], state: PueueState | None,
             receipts: Iterable[str] = (), succeeded: Iterable[str] = (),
             done: Mapping[str, str] | None = None) -> dict[str, str]:
    """base label -> what the host has of it: its latest pueue state (active beats done),
    else `success`/`failed` from the ledger or units' done receipts, else `submitted` (a
    receipt: added here once, outcome unknown). Only (label, group) pairs of the plan."""
    wanted = dict(labels)
    out: dict[str, str] = {}
    for label in receipts:
        if base_label(label) in wanted:
            out[base_label(label)] = "submitted"
    for label, code in (done or {}).items():
        if label in wanted:
            out[label] = "success" if code == "0" else "failed"
    for label in succeeded:
        if base_label(label) in wanted:
            out[base_label(label)] = "success"
    best: dict[str, str] = {}
    for t in state.tasks if state is not None else ():
        if t.label is None:
            continue
        base = base_label(t.label)
        if wanted.get(base) != t.group:
            continue
        now = "queued" if t.state in ACTIVE_STATES and t.state != "running" else t.state
        now = now if now in ("queued", "running", "success") else "failed"
        if _rank(now) >= _rank(best.get(base, "")):
            best[base] = now
    out.update(best)
    return out


def _rank(state: str) -> int:
    return {"": 0, "failed": 1, "success": 2, "queued": 3, "running": 3}.get(state, 0)


def parse_spread(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        label, sep, host = line.rpartition("\t")
        if sep and label and host:
            out[label] = host
    return out


def spread_text(owner: Mapping[str, str]) -> str:
    return "".join(f"{label}\t{host}\n" for label, host in owner.items())


# ---- the assignment ----------------------------------------------------------------------

@dataclass(frozen=True)
class Assignment:
    hosts: tuple[str, ...]  # the listed hosts, in order
    owner: Mapping[str, str]  # label -> host, every label of the plan, plan order
    how: Mapping[str, str]  # label -> present | kept | new | moved
    capacity: Mapping[str, tuple[Capacity, ...]] = field(default_factory=dict)  # by host
    down: Mapping[str, str] = field(default_factory=dict)  # failing host -> its error
    moved: tuple[tuple[str, str, str], ...] = ()  # (label, from, to)
    conflicts: tuple[tuple[str, tuple[str, ...]], ...] = ()  # label on several hosts
    reassign_from: str | None = None

    def share(self, host: str) -> list[str]:
        return [label for label, h in self.owner.items() if h == host]

    def counts(self) -> dict[str, dict[str, int]]:
        """host -> {labels, present, kept, new, moved}; every owner host, listed or not."""
        out: dict[str, dict[str, int]] = {}
        for h in (*self.hosts, *self.owner.values()):
            out.setdefault(h, {"labels": 0, "present": 0, "kept": 0, "new": 0, "moved": 0})
        for label, h in self.owner.items():
            out[h]["labels"] += 1
            out[h][self.how[label]] += 1
        return out

    def pending(self) -> dict[str, int]:
        """Labels whose host did not take work this run (down, or not listed)."""
        out: dict[str, int] = {}
        for h, n in self.counts().items():
            if (h in self.down or h not in self.hosts) and n["labels"]:
                out[h] = n["labels"] - n["present"]
        return {h: n for h, n in out.items() if n}

    def why(self, host: str) -> str:
        if host in self.down:
            return f"no new work (failing: {self.down[host]})"
        if host not in self.hosts:
            return "not listed in --host: its labels wait for it"
        caps = self.capacity.get(host, ())
        return "; ".join(f"{c.group}: {c.reason}" for c in caps) or "no capacity read"

    def changed_for(self, recorded: Mapping[str, str]) -> bool:
        return dict(recorded) != dict(self.owner)

    def to_dict(self) -> dict[str, Any]:
        counts = self.counts()
        return {
            "hosts": [{"host": h, **n, "why": self.why(h),
                       "capacity": [c.to_dict() for c in self.capacity.get(h, ())],
                       "pending": self.pending().get(h, 0), "down": h in self.down}
                      for h, n in counts.items()],
            "labels": len(self.owner), "pending": self.pending(),
            "reassign_from": self.reassign_from,
            "moved": [{"label": lbl, "from": a, "to": b} for lbl, a, b in self.moved],
            "conflicts": [{"label": lbl, "hosts": list(hs)} for lbl, hs in self.conflicts],
        }


def assign(labels: Sequence[tuple[str, str]], hosts: Sequence[str],
           views: Mapping[str, HostView], *, down: Mapping[str, str] | None = None,
           reassign_from: str | None = None) -> Assignment:
    """The rule of this module's docstring. `labels`: (label, group) in plan order;
    `hosts`: the listed hosts; `views`: the hosts that answered (listed ones and, with
    --reassign-from, H); `down`: listed hosts that did not answer, with why."""
    down = dict(down or {})
    healthy = [h for h in hosts if h in views and h not in down and h != reassign_from]
    recorded: dict[str, str] = {}
    for h in (*hosts, *views):
        for label, host in views[h].recorded.items() if h in views else ():
            recorded.setdefault(label, host)
    gone = views.get(reassign_from) if reassign_from else None
    if gone is not None:
        busy = [label for label, _ in labels
                if gone.present.get(label) in ("queued", "running")
                and recorded.get(label, reassign_from) == reassign_from]
        if busy:
            raise RefusedError(  # --reassign-from H while H still runs some of them
                f"--reassign-from {reassign_from}: it still answers and has {len(busy)} of "
                f"its label(s) queued or running (first {busy[0]}); wait for them or kill "
                "them there first (nothing was changed)")
    owner: dict[str, str] = {}
    how: dict[str, str] = {}
    moved: list[tuple[str, str, str]] = []
    conflicts: list[tuple[str, tuple[str, ...]]] = []
    fresh: list[tuple[str, str]] = []
    order = [*hosts, *(h for h in views if h not in hosts)]
    for label, group in labels:
        on = tuple(h for h in order if h in views and label in views[h].present)
        if on:
            if len(on) > 1:
                conflicts.append((label, on))
            keep = recorded.get(label)
            owner[label] = keep if keep in on else on[0]
            how[label] = "present"
            if owner[label] != reassign_from or views[owner[label]].present[label] == "success":
                continue
            del owner[label], how[label]
        elif label in recorded and recorded[label] != reassign_from:
            owner[label], how[label] = recorded[label], "kept"
            continue
        fresh.append((label, group))
    group_of = dict(labels)
    loads: dict[tuple[str, str], int] = {}
    for label, h in owner.items():
        if how[label] == "kept":  # recorded, not on its host yet: it will be added there
            loads[(h, group_of[label])] = loads.get((h, group_of[label]), 0) + 1
    caps = {h: views[h].capacity for h in healthy}
    chosen = _fill(fresh, healthy, caps, loads)
    for label, _ in fresh:
        to = chosen.get(label)
        if to is None:
            continue  # no healthy host: the label waits, unassigned
        owner[label] = to
        was = recorded.get(label) or (reassign_from if label in (
            gone.present if gone is not None else {}) else None)
        if reassign_from and was == reassign_from:
            how[label] = "moved"
            moved.append((label, reassign_from, to))
        else:
            how[label] = "new"
    plan_order = {label: i for i, (label, _) in enumerate(labels)}
    owner = dict(sorted(owner.items(), key=lambda kv: plan_order[kv[0]]))
    return Assignment(
        hosts=tuple(hosts), owner=owner, how=how,
        capacity={h: tuple(views[h].capacity.values()) for h in hosts if h in views},
        down=down, moved=tuple(moved), conflicts=tuple(conflicts),
        reassign_from=reassign_from)


def _fill(fresh: Sequence[tuple[str, str]], healthy: Sequence[str],
          caps: Mapping[str, Mapping[str, Capacity]],
          loads: Mapping[tuple[str, str], int]) -> dict[str, str]:
    """Water-filling per group: each label to the host with the smallest (load + 1) /
    slots, ties to the host listed first. O(labels x log hosts)."""
    out: dict[str, str] = {}
    by_group: dict[str, list[str]] = {}
    for label, group in fresh:
        by_group.setdefault(group, []).append(label)
    for group, members in by_group.items():
        heap: list[tuple[float, int, int, int, str]] = []
        for i, h in enumerate(healthy):
            cap = caps[h].get(group)
            slots = cap.slots if cap else 1
            load = (cap.backlog if cap else 0) + loads.get((h, group), 0)
            heap.append(((load + 1) / slots, i, load, slots, h))
        heapq.heapify(heap)
        if not heap:
            continue
        for label in members:
            _, i, load, slots, h = heapq.heappop(heap)
            out[label] = h
            load += 1
            heapq.heappush(heap, ((load + 1) / slots, i, load, slots, h))
    return out
