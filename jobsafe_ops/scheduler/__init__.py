"""Batch schedulers behind one seam (base.Scheduler): pueue today, Slurm next."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Scheduler

if TYPE_CHECKING:
    from ..inventory import Host


def for_host(host: Host) -> Scheduler:
    """The scheduler that runs `host`'s jobs (pueue, at the host file's `pueue` path)."""
    from .pueue import PueueScheduler

    return PueueScheduler(host.pueue)


__all__ = ["Scheduler", "for_host"]
