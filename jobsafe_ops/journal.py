"""Local append-only NDJSON journal of every mutation (time, operator, host, action,
labels, result). Appends are serialized with flock and fsynced (INV-4). Every entry is
redacted first (secrecy.redact): a killed task's command or a remote error can carry a
credential, and the journal is kept forever."""

from __future__ import annotations

import fcntl
import getpass
import json
import os
import socket
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import mirror
from .secrecy import redact


def journal_path() -> Path:
    """$JOBSAFE_JOURNAL, else the ops repo's config `journal`, else the XDG state dir."""
    explicit = os.environ.get("JOBSAFE_JOURNAL")
    if explicit:
        return Path(explicit)
    from .config import active

    configured = active().settings.journal
    if configured is not None:
        return configured
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "jobsafe-ops" / "journal.ndjson"


def operator() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def append(host: str, action: str, labels: Iterable[str] = (), result: str = "ok",
           **extra: Any) -> dict[str, Any]:
    """Append locally; with an SSH session open to `host`, the entry is also mirrored to
    the team journal on the host (mirror.py: on the session's next command)."""
    entry = append_local(host, action, labels, result, **extra)
    mirror.queue(entry)
    return entry


def append_local(host: str, action: str, labels: Iterable[str] = (), result: str = "ok",
                 **extra: Any) -> dict[str, Any]:
    """Append to the local journal only: the host's journal has the entry already (written
    in the mutation's own run: logs, cancel, pause, resume)."""
    entry: dict[str, Any] = redact({
        "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "operator": operator(), "host": host, "action": action,
        "labels": list(labels), "result": result, **extra,
    })
    line = (json.dumps(entry, sort_keys=False, default=str) + "\n").encode()
    path = journal_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # one writer at a time: lines never interleave
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
    return entry


def entries(host: str | None = None, action: str | None = None) -> Iterator[dict[str, Any]]:
    path = journal_path()
    if not path.exists():
        return
    with path.open() as fh:
        for line in fh:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn line from a crash elsewhere never breaks the reader
            if host and entry.get("host") != host:
                continue
            if action and entry.get("action") != action:
                continue
            yield entry
