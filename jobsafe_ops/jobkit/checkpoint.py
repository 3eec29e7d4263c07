"""A job's cursor: `load()`, `save(state)`, `mark_complete()` - and no way to delete it.

AP-15: a cursor deleted on success makes the next run redo everything instead of continuing
incrementally. So completion is recorded *inside* the file (`"complete": true`), this class
has no delete method, and `jobkit.remove()` refuses a cursor file unless given a reason.
Every save is atomic (INV-4): after a kill the file holds the last complete state.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from .errors import JobkitError
from .files import StrPath, atomic_write, load_json, sweep_temps
from .paths import CheckpointSpec, Value

CURSOR_KEY = "jobkit_cursor"
CURSOR_VERSION = 1
_KEEP: Any = object()


@dataclass(frozen=True)
class Saved:
    """What a cursor holds: the job's own state, whether it ran to the end, and when."""

    state: Any
    complete: bool
    saved_at: str


class Checkpoint:
    """The cursor of one job. Build it from a spec so its path carries every parameter:
    `Checkpoint.for_job(spec, symbol="BTC", threshold=250, ...)`."""

    def __init__(self, path: StrPath, *, params: Mapping[str, str] | None = None) -> None:
        self.path = Path(path)
        self.params = dict(params or {})

    @classmethod
    def for_job(cls, spec: CheckpointSpec, **values: Value) -> Checkpoint:
        path = spec.path(**values)  # raises on a missing or extra parameter (INV-1)
        return cls(path, params={k: _text(v) for k, v in values.items()})

    def load(self) -> Saved | None:
        """The last saved cursor, or None when there is none or it is undecodable (the job
        then starts fresh, INV-4). A decodable file that is not a cursor is an error: it
        belongs to something else and must not be overwritten. Temps stranded by earlier
        kills mid-save (over an hour old) are swept from the directory first."""
        sweep_temps(self.path.parent)
        data = load_json(self.path)
        if data is None:
            return None
        if not isinstance(data, dict) or data.get(CURSOR_KEY) != CURSOR_VERSION:
            raise JobkitError(f"{str(self.path)!r} is JSON but not a jobkit cursor (no "
                              f"{CURSOR_KEY!r}: {CURSOR_VERSION}); another program owns this "
                              "path - give the checkpoint its own spec/stem or move the file")
        return Saved(state=data.get("state"), complete=bool(data.get("complete")),
                     saved_at=str(data.get("saved_at", "")))

    def save(self, state: Any) -> None:
        """Atomically replace the cursor with `state` (any JSON value); marks it in progress."""
        self._write(state, complete=False)

    def mark_complete(self, state: Any = _KEEP) -> None:
        """Record that the job ran to the end, keeping the file (AP-15). Without `state`,
        the last saved state is kept, so the next run can continue from it."""
        if state is _KEEP:
            saved = self.load()
            state = saved.state if saved else None
        self._write(state, complete=True)

    def _write(self, state: Any, *, complete: bool) -> None:
        # CURSOR_KEY first: the file then starts with CURSOR_HEAD, which remove() looks for.
        doc = {CURSOR_KEY: CURSOR_VERSION, "complete": complete,
               "saved_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
               "params": self.params, "state": state}
        try:
            text = json.dumps(doc, ensure_ascii=False)
        except (TypeError, ValueError) as exc:
            raise JobkitError(f"checkpoint {str(self.path)!r}: state is not JSON ({exc}); "
                              "save plain dicts, lists, strings and numbers") from None
        atomic_write(self.path, text + "\n")

    def __repr__(self) -> str:
        return f"Checkpoint({str(self.path)!r})"


def _text(value: Value) -> str:
    # The string the path was built from, unescaped (a date as its isoformat).
    return value.isoformat() if isinstance(value, date) else str(value)
