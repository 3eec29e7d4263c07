"""Progress of a group for the monitor: percent done, jobs per hour over the last window,
and an ETA. Pure: the numbers come from one poll's summary, where the host counted the
jobs that ended in the window before *its* clock (monitor_filter.recent, `now` injected),
so no laptop/host clock skew enters the rate.

- percent: finished jobs (succeeded or failed; each job counted once, by its newest
  attempt) over every job of the group; blocked-forever jobs count as not done;
- rate: jobs ended in the window / the span they took (from the earliest start among
  them, or the window's start, to the latest end), per hour; None when none ended in it;
- ETA: the jobs still to run (queued, running, paused, stashed, locked) / the rate; None
  without a rate or when nothing is left (0 when the group is settled).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

PENDING = ("queued", "running", "paused", "stashed", "locked")
FINISHED_OK = ("success",)
FINISHED_BAD = ("failed", "killed", "dependency_failed", "errored", "failed_to_spawn")
MIN_SPAN = 1.0  # seconds: a rate over less than this says nothing


@dataclass(frozen=True)
class Progress:
    total: int
    done: int
    remaining: int
    percent: float | None
    per_hour: float | None
    eta_seconds: float | None
    window: float

    def to_dict(self) -> dict[str, Any]:
        return {"total": self.total, "done": self.done, "remaining": self.remaining,
                "percent": self.percent, "per_hour": self.per_hour,
                "eta_seconds": self.eta_seconds, "window": self.window}

    def text(self) -> str:
        """`42% · 120/h · ETA 1h05m` for the board."""
        parts = ["-" if self.percent is None else f"{self.percent:.0f}%"]
        parts.append("-/h" if self.per_hour is None else f"{self.per_hour:.3g}/h")
        if self.remaining == 0:
            parts.append("done")
        else:
            eta = self.eta_seconds
            parts.append("ETA ?" if eta is None else f"ETA {duration(eta)}")
        return " · ".join(parts)


def progress(counts: Mapping[str, int], total: int, recent: Mapping[str, Any] | None
             ) -> Progress:
    done = sum(counts.get(s, 0) for s in (*FINISHED_OK, *FINISHED_BAD))
    remaining = sum(counts.get(s, 0) for s in PENDING)
    recent = recent or {}
    window = float(recent.get("window") or 0.0)
    ended = int(recent.get("ended") or 0)
    span = float(recent.get("span") or 0.0)
    per_hour = ended / span * 3600.0 if ended > 0 and span >= MIN_SPAN else None
    if remaining == 0:
        eta: float | None = 0.0
    elif per_hour:
        eta = remaining / per_hour * 3600.0
    else:
        eta = None
    percent = round(done / total * 100.0, 1) if total > 0 else None
    return Progress(total=total, done=done, remaining=remaining, percent=percent,
                    per_hour=None if per_hour is None else round(per_hour, 2),
                    eta_seconds=None if eta is None else round(eta, 1), window=window)


def duration(seconds: float) -> str:
    """90 -> 1m30s, 3900 -> 1h05m, 200000 -> 2d07h."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"
