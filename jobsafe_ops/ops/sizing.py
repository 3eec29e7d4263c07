"""Sizing (INV-6): the parallelism a group's jobs allow on a host, the seed's formula

    min(available_memory x 0.8 / job_memory, cores x 0.8 / job_cpu)

(`job_memory` and `job_cpu` from the host file's group; job_cpu defaults to 1). Probe
prints it per declared group beside the current `parallel` and `max`; the autoscaler
never steps a group above it. Pure."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from ..inventory import GroupSpec

SHARE = 0.8  # of memory and cores: the rest is the host's own headroom


@dataclass(frozen=True)
class Sizing:
    group: str
    parallel: int | None  # on the daemon now (None: the group is not there yet)
    max: int
    by_memory: int | None  # None: no job_memory, or memory unread
    by_cpu: int | None  # None: cores unread
    allowed: int | None  # min of the two known limits; None when neither is known

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def limits(mem_available: int | None, nproc: int | None, spec: GroupSpec
           ) -> tuple[int | None, int | None]:
    by_memory = (math.floor(mem_available * SHARE / spec.job_memory)
                 if spec.job_memory and mem_available is not None else None)
    by_cpu = math.floor(nproc * SHARE / spec.job_cpu + 1e-9) if nproc else None
    return by_memory, by_cpu


def allowed(mem_available: int | None, nproc: int | None, spec: GroupSpec) -> int | None:
    known = [n for n in limits(mem_available, nproc, spec) if n is not None]
    return min(known) if known else None


def sizing(mem_available: int | None, nproc: int | None, specs: dict[str, GroupSpec],
           current: dict[str, int]) -> tuple[Sizing, ...]:
    out = []
    for name in sorted(specs):
        spec = specs[name]
        by_memory, by_cpu = limits(mem_available, nproc, spec)
        out.append(Sizing(name, current.get(name), spec.max, by_memory, by_cpu,
                          allowed(mem_available, nproc, spec)))
    return tuple(out)
