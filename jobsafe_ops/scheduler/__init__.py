"""Batch schedulers behind one seam (base.Scheduler): pueue, and Slurm (slurm.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from .base import Scheduler

if TYPE_CHECKING:
    from ..inventory import Host
    from .slurm import Runner, SlurmScheduler


def for_host(host: Host, run: Runner | None = None, playbook: str = "",
             labels: Mapping[tuple[str, int], tuple[str, str]] | None = None
             ) -> Scheduler | SlurmScheduler:
    """The scheduler that runs `host`'s jobs: pueue at the host file's `pueue` path, or on
    a `scheduler = "slurm"` host the `SlurmScheduler` of one batch (`playbook`, its chunk
    labels), running its squeue/scancel/scontrol argv through `run` (a Remote's run)."""
    if host.is_slurm:
        from .slurm import SlurmScheduler

        if run is None:
            raise ValueError(f"{host.name}: a Slurm scheduler needs a runner (argv -> stdout "
                             "on the login node)")
        return SlurmScheduler(run, playbook, labels or {})
    from .pueue import PueueScheduler

    return PueueScheduler(host.pueue)


__all__ = ["Scheduler", "for_host"]
