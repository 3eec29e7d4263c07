"""Append-only NDJSON logs shared by concurrent jobs.

Several jobs append progress to one file. An O_APPEND write is only atomic up to PIPE_BUF
(4096 bytes) for pipes and not guaranteed for files at all, so big records or multi-line
blocks from two writers can interleave mid-line. Every append therefore takes an exclusive
flock on a sidecar `<path>.lock` - the same lock the bash form uses
(`flock "$LOG.lock" bash -c 'cat tmp >> "$LOG"'`, INV-4 atomic state writes) - and writes the
whole block with one write call, so a block's lines stay together and in order.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from .errors import JobkitError
from .files import StrPath

LOCK_SUFFIX = ".lock"


def lock_path(path: StrPath) -> Path:
    return Path(f"{os.fspath(path)}{LOCK_SUFFIX}")


def append_ndjson(path: StrPath, records: Iterable[Any], *, fsync: bool = True) -> int:
    """Append each record as one JSON line, all of them as one block under the lock.
    Returns the number of records appended (0 leaves the file untouched)."""
    lines = []
    for i, record in enumerate(records):
        try:
            lines.append(json.dumps(record, ensure_ascii=False, separators=(",", ":")))
        except (TypeError, ValueError) as exc:
            raise JobkitError(f"append_ndjson {os.fspath(path)!r}: record {i} is not JSON "
                              f"({exc}); nothing was appended - pass plain dicts, lists, "
                              "strings and numbers") from None
    if not lines:
        return 0
    block = ("\n".join(lines) + "\n").encode("utf-8")  # json.dumps never emits a raw newline
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    lock_fd = os.open(lock_path(target), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            view = memoryview(block)
            while view:  # one call normally; a short write (signal, quota) continues here
                view = view[os.write(fd, view):]
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
    finally:
        os.close(lock_fd)  # closing the descriptor releases the flock
    return len(lines)


def read_ndjson(path: StrPath) -> Iterator[Any]:
    """The records of an NDJSON file in order; nothing when it is missing. A line that does
    not decode (torn by a writer that did not lock) is skipped, never fatal to the reader."""
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        return
    with fh:
        for raw in fh:
            if not raw.endswith(b"\n"):
                return  # a last line still being written, or torn by a kill
            try:
                yield json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
