"""Atomic writes, a forgiving JSON loader and idempotent removal.

Atomic state writes (INV-4): a reader, or a job restarted after a kill, sees the complete
old file or the complete new one, never a torn one. Idempotent cleanup (INV-3): removing a
file that is already gone is not an error, and is never check-then-delete.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
import time
from os import PathLike
from pathlib import Path
from typing import Any

from .errors import CursorRemovalRefused

TEMP_PREFIX = ".ckpt_"
TEMP_SUFFIX = ".tmp"
STALE_TEMP_AGE = 3600.0  # seconds; a live writer renames its temp within moments
# A cursor file written by Checkpoint starts with this key, so remove() can recognise one
# in any process, long after the job that declared it has exited (AP-15).
CURSOR_HEAD = b'{"jobkit_cursor":'

StrPath = str | PathLike[str]


def atomic_write(path: StrPath, data: str | bytes, *, mode: int | None = None,
                 parents: bool = True) -> Path:
    """Write `data` (str as UTF-8) to `path` so it is never seen partial.

    A temp file in the same directory (same filesystem, so the rename is atomic) is written,
    flushed and fsynced, renamed over `path` with os.replace, then the directory is fsynced
    so the rename itself survives a power cut. On any failure the temp file is removed and
    `path` is untouched. A SIGKILL can leave a `.ckpt_*.tmp` behind, never a partial `path`.
    The file is created 0600 (mkstemp) unless `mode` says otherwise."""
    target = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    if parents:
        target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
            if mode is not None:
                os.fchmod(fh.fileno(), mode)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)  # KeyboardInterrupt included: no temp litter
        raise
    _fsync_dir(target.parent)
    return target


def atomic_write_json(path: StrPath, obj: Any, **kw: Any) -> Path:
    """`atomic_write` of `obj` as JSON (one document, newline-terminated)."""
    return atomic_write(path, json.dumps(obj, ensure_ascii=False) + "\n", **kw)


def load_json(path: StrPath) -> Any | None:
    """The JSON document at `path`, or None when it is missing or undecodable, so a job
    starts fresh instead of crashing on a file torn by a writer that was not atomic (INV-4).
    Other errors (permissions, a directory) are real problems and propagate."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        return None
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


def remove(path: StrPath, *, reason: str | None = None) -> None:
    """Delete `path`; a file already gone is fine (INV-3: `unlink(missing_ok=True)`, no
    exists() check to race with).

    A cursor/checkpoint file (written by `Checkpoint`) is refused unless `reason` says why:
    deleting a cursor on success turns the next incremental run into a full re-run (AP-15).
    The legitimate case - a checkpoint of a job killed and requeued fresh - states it, which
    keeps that decision visible in the code that makes it."""
    target = Path(path)
    if not (reason and reason.strip()) and is_cursor(target):
        raise CursorRemovalRefused(
            f"refusing to remove {str(target)!r}: it is a cursor/checkpoint, and deleting it "
            "makes the next run start over (AP-15); keep it (Checkpoint.mark_complete records "
            "completion), or pass reason='...' when the job is really starting fresh")
    target.unlink(missing_ok=True)


def sweep_temps(directory: StrPath, *, older_than: float = STALE_TEMP_AGE) -> int:
    """Remove the `.ckpt_*.tmp` files that writers killed mid-save left in `directory`
    (only ours, and only those not modified for `older_than` seconds, so a live writer's
    temp is never touched); a temp gone meanwhile is fine. Returns how many were removed.
    `Checkpoint.load()` calls it, so temps do not pile up over restarts."""
    cutoff = time.time() - older_than
    removed = 0
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return 0
    for entry in entries:
        if not (entry.name.startswith(TEMP_PREFIX) and entry.name.endswith(TEMP_SUFFIX)):
            continue
        try:
            if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime < cutoff:
                os.unlink(entry.path)
                removed += 1
        except FileNotFoundError:
            continue  # another process swept it first (INV-3)
    return removed


def is_cursor(path: StrPath) -> bool:
    """Whether `path` holds a Checkpoint cursor (reads only its first bytes)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(len(CURSOR_HEAD))
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        return False  # gone (unlink will shrug) or not a file we wrote
    return head == CURSOR_HEAD


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise  # some filesystems cannot fsync a directory; the rename is still atomic
    finally:
        os.close(fd)
