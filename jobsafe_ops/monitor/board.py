"""The monitor's board: one result per host of a poll, and the exit code the board gives
cron. Pure data, imported by the watch loop (watch.py) and the view (view.py) alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..cli import HostRow, combined_exit_code
from ..errors import EXIT_FAILED, EXIT_NOTHING_SELECTED, EXIT_OK, EXIT_UNREACHABLE, JobsafeError
from ..facts.snapshot import EXIT_STILL_RUNNING, Snapshot

MONITOR_VERDICTS = frozenset({EXIT_OK, EXIT_FAILED, EXIT_STILL_RUNNING, EXIT_NOTHING_SELECTED})


@dataclass(frozen=True)
class HostResult:
    host: str
    snapshot: Snapshot | None = None
    error: JobsafeError | None = None

    @property
    def row(self) -> HostRow:
        if self.snapshot is not None:
            return HostRow(self.host, True, self.snapshot.exit_code, None, self.snapshot)
        code = self.error.exit_code if self.error else EXIT_UNREACHABLE
        return HostRow(self.host, False, code, str(self.error), None)

    def to_dict(self) -> dict[str, Any]:
        return self.row.to_dict()


def board_exit_code(board: Sequence[HostResult]) -> int:
    """cli.combined_exit_code over the hosts: one host keeps its code; a host that could
    not be read among several that could gives 5; every host read: failures anywhere (1)
    win over work still pending (3), then 0."""
    return combined_exit_code([(r.row.ok, r.row.exit_code) for r in board])
