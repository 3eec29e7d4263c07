"""Journal lines on their way to a host's team journal: `journal.append` queues each entry
for its host while a session to that host is open (`remote.session`), and the session puts
the queued lines in front of its next command (no extra round trip) or sends them when it
closes. The host side is hostside/ops_agent.py `append` (flock + fsync); ops/teamjournal.py
reads the host journal back."""

from __future__ import annotations

import json
import threading
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

from .hostside.bundle import bundle
from .shell import join, quote

AGENT_SOURCE = bundle("ops_agent")  # slurm_model inlined
# Compressed, in hex (only 0-9a-f: no word of a command can appear in it by chance, so a
# log or a test looking for `kill`/`uv`/`add` in what was sent never mistakes the blob)
AGENT_LOADER = (
    "import zlib;exec(zlib.decompress(bytes.fromhex('"
    + zlib.compress(AGENT_SOURCE.encode(), 9).hex()
    + "')))"
)

_lock = threading.Lock()
_pending: dict[str, list[dict[str, Any]]] = {}
_open: dict[str, int] = {}  # host -> sessions open to it (remote.session)


def opened(host: str) -> None:
    with _lock:
        _open[host] = _open.get(host, 0) + 1


def closed(host: str) -> None:
    with _lock:
        _open[host] = _open.get(host, 1) - 1
        if _open[host] <= 0:
            _open.pop(host, None)
            _pending.pop(host, None)


def queue(entry: Mapping[str, Any]) -> None:
    """Called by journal.append: with a session open to its host, the entry waits for the
    next command sent there (or the session's close)."""
    host = str(entry.get("host") or "")
    with _lock:
        if host in _open:
            _pending.setdefault(host, []).append({**entry, "where": "laptop"})


def take(host: str) -> list[dict[str, Any]]:
    with _lock:
        return _pending.pop(host, [])


def append_line(entries: Sequence[Mapping[str, Any]]) -> str:
    """One shell line appending `entries` to the host journal, whatever the command after
    it does: its own output and exit status are untouched (stdout/stderr to /dev/null;
    a host without python3 just has no team journal)."""
    text = "\n".join(json.dumps(dict(e), separators=(",", ":"), default=str)
                     for e in entries)
    agent = join(["python3", "-c", AGENT_LOADER, "append"])
    return f"printf '%s\\n' {quote(text)} | {agent} >/dev/null 2>&1; "


def pending_line(host: str) -> str:
    entries = take(host)
    return append_line(entries) if entries else ""
