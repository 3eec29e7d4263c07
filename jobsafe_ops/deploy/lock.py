"""The deploy lock: one directory on the host, created with `mkdir` (atomic: exactly one of
two concurrent creators succeeds), holding `owner.json` (operator user@laptop, pid, laptop
hostname, start time, TTL, a random token).

Deployer's lock is a non-atomic test-then-write and goes stale after Ctrl-C
(deployphp/deployer#1368, #3335): here there is no check-then-create, the lock is released
on every exit path (`held` is a context manager; Ctrl-C unwinds through it), and a lock left
behind by a killed run or a dropped SSH session is *detected* (TTL expired, or its owner
process on this very laptop is gone) and reported. It is only cleared by an explicit
`--break-lock`, which is journaled.

Pure parts (`LockOwner`, `stale_reason`, `parse_*`) are unit-tested; the functions taking a
`Remote` are one round trip each.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from tenacity import retry, retry_if_result, stop_after_attempt, wait_fixed

from .. import journal
from ..errors import RefusedError
from ..inventory import Host
from ..remote import Remote
from ..shell import program, quote

# Lock paths go to the shell through remote.program, which keeps '~/' expanding on the host
# (quoting the whole word would not).
LOCK_ROOT = "~/.local/state/jobsafe-ops"
OWNER_FILE = "owner.json"
DEFAULT_TTL = 3600.0
# A lock directory without an owner file is an acquire in progress; after this long it is
# an acquire that died between mkdir and the owner write.
OWNERLESS_GRACE = 60.0


def lock_path(host: Host, kind: str = "deploy") -> str:
    """One lock per project checkout on the host, outside the checkout (git never sees it)."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", host.project_dir.strip("~/")) or "home"
    return f"{LOCK_ROOT}/{kind}-{slug}.lock"


@dataclass(frozen=True)
class LockOwner:
    operator: str  # user@laptop
    pid: int
    hostname: str  # the laptop (where pid lives)
    started: str  # ISO 8601 UTC
    ttl: float  # seconds after which the lock is stale whoever holds it
    token: str  # tells our lock from a lock re-taken by someone else
    command: str = "deploy"
    proc_start: str = ""  # /proc/<pid>/stat start time: guards against pid reuse

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, text: str) -> LockOwner | None:
        try:
            data = json.loads(text)
            return cls(operator=str(data["operator"]), pid=int(data["pid"]),
                       hostname=str(data["hostname"]), started=str(data["started"]),
                       ttl=float(data["ttl"]), token=str(data["token"]),
                       command=str(data.get("command", "deploy")),
                       proc_start=str(data.get("proc_start", "")))
        except (ValueError, KeyError, TypeError):
            return None

    def describe(self) -> str:
        return f"{self.operator} (pid {self.pid}, {self.command}) since {self.started}"


def _proc_start(pid: int) -> str:
    """Start time of a local process in clock ticks since boot ('' when unknown)."""
    try:
        stat = open(f"/proc/{pid}/stat").read()  # noqa: SIM115 - tiny read
    except OSError:
        return ""
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else ""


def this_process(ttl: float = DEFAULT_TTL, command: str = "deploy") -> LockOwner:
    pid = os.getpid()
    return LockOwner(
        operator=journal.operator(), pid=pid, hostname=socket.gethostname(),
        started=datetime.now(UTC).isoformat(timespec="seconds"), ttl=float(ttl),
        token=secrets.token_hex(8), command=command, proc_start=_proc_start(pid),
    )


def local_process_alive(pid: int, proc_start: str = "") -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if proc_start:
        now = _proc_start(pid)
        if now and now != proc_start:
            return False  # the pid was reused by another process
    return True


def stale_reason(owner: LockOwner | None, age: float | None, *, local_hostname: str,
                 alive: Callable[[int, str], bool] = local_process_alive) -> str | None:
    """Why a held lock is stale, or None when it must be respected.

    ``age``: seconds since the lock directory was created, measured on the host's clock
    (no laptop/host clock skew). The pid check only applies when the owner's laptop is
    this machine: another laptop's process table cannot be seen from here."""
    if owner is None:
        if age is not None and age > OWNERLESS_GRACE:
            return f"no owner file for {age:.0f}s (an acquire died halfway)"
        return None
    if age is not None and age > owner.ttl:
        return f"older than its TTL ({age:.0f}s > {owner.ttl:.0f}s)"
    if owner.hostname == local_hostname and not alive(owner.pid, owner.proc_start):
        return f"owner process {owner.pid} on this machine ({local_hostname}) is gone"
    return None


@dataclass(frozen=True)
class LockState:
    path: str
    held: bool
    owner: LockOwner | None = None
    age: float | None = None
    stale: str | None = None  # why the lock is stale, if it is
    raw: str = ""  # the owner file as read: --break-lock removes only this very lock
    race: bool = False  # released between our mkdir and our read: try again

    def describe(self) -> str:
        who = self.owner.describe() if self.owner else "an unknown owner (no owner file yet)"
        text = f"locked by {who}"
        if self.stale:
            text += f"; the lock looks stale: {self.stale}"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "held": self.held,
                "owner": self.owner.to_dict() if self.owner else None,
                "age": self.age, "stale": self.stale}


def _held_state(path: str, lines: list[str]) -> LockState:
    """Parse the HELD branch: owner json line (maybe empty), host now, dir mtime."""
    owner = LockOwner.from_json(lines[0]) if lines and lines[0].strip() else None
    age = None
    try:
        age = max(0.0, float(lines[1]) - float(lines[2]))
    except (IndexError, ValueError):
        pass
    stale = stale_reason(owner, age, local_hostname=socket.gethostname())
    return LockState(path, True, owner, age, stale, raw=lines[0].strip() if lines else "")


def _read_script(d: str) -> str:
    owner = f"{d}/{OWNER_FILE}"
    return (f"if [ -d {d} ]; then echo HELD; (tr -d '\\n' < {owner}) 2>/dev/null; echo; "
            f"date +%s; stat -c %Y {d} 2>/dev/null; else echo FREE; fi")


def read_command(path: str) -> str:
    """Read-only: HELD + owner file, host clock, directory mtime; or FREE."""
    return _read_script(program(path))


def parse_read(path: str, lines: list[str]) -> LockState:
    if lines and lines[0] == "HELD":
        return _held_state(path, lines[1:])
    return LockState(path, False)


def read(remote: Remote, path: str) -> LockState:
    """Read-only: who holds the lock (for --dry and for reports)."""
    return parse_read(path, remote.run(read_command(path), check=False).stdout.splitlines())


def acquire_command(path: str, owner: LockOwner) -> str:
    """One round trip: `mkdir` is the test-and-set; the owner file is written inside the
    new directory (temp + rename, so a reader never sees half of it). On failure, report
    who holds it instead."""
    d = program(path)
    parent = program(path.rsplit("/", 1)[0])
    tmp, final = f"{d}/.{OWNER_FILE}.tmp", f"{d}/{OWNER_FILE}"
    return (f"mkdir -p {parent} && if mkdir {d} 2>/dev/null; then "
            f"printf '%s\\n' {quote(owner.to_json())} > {tmp} && mv -f {tmp} {final} "
            f"&& echo ACQUIRED; else {_read_script(d)}; fi")


def _look_again(seen: LockState | None) -> bool:
    """Released between our mkdir and our read (try to take it), or held without an owner
    file yet: another acquire is between its mkdir and its owner write, and a moment
    later the refusal can name the holder instead of "an unknown owner"."""
    return seen is not None and (seen.race or (seen.owner is None and not seen.stale))


def parse_acquire(path: str, stdout: str) -> LockState | None:
    """None when acquired; else the state of the lock someone else holds."""
    out = stdout.splitlines()
    if out and out[0] == "ACQUIRED":
        return None
    if out and out[0] == "HELD":
        return _held_state(path, out[1:])
    # FREE: the holder released it between our mkdir and our read: a fresh attempt
    return LockState(path, True, race=True)


@retry(retry=retry_if_result(_look_again), stop=stop_after_attempt(5), wait=wait_fixed(0.1),
       retry_error_callback=lambda rs: rs.outcome.result() if rs.outcome else None)
def acquire_by(send: Callable[[], str], path: str) -> LockState | None:
    """`send()` sends `acquire_command` and returns its stdout (deploy sends it through its
    executor); None when acquired, else the lock someone else holds."""
    return parse_acquire(path, send())


def try_acquire(remote: Remote, path: str, owner: LockOwner) -> LockState | None:
    """None when acquired; else the state of the lock someone else holds."""
    return acquire_by(lambda: remote.run(acquire_command(path, owner)).stdout, path)


def refusal(seen: LockState) -> str:
    """Why the lock cannot be taken, and what to do (exit 3; the caller names the host)."""
    hint = ("; if its owner is really gone, rerun with --break-lock" if seen.stale
            else "; wait for it to finish (or --break-lock if you know it is dead)")
    return f"{seen.describe()}{hint}"


def _owner_is(d: str, owner_json: str) -> str:
    return f'[ "$(cat {d}/{OWNER_FILE} 2>/dev/null)" = {quote(owner_json)} ]'


def release_command(path: str, owner: LockOwner) -> str:
    d = program(path)
    # only our own lock: if it was broken and re-taken, the other owner keeps it
    return f"if {_owner_is(d, owner.to_json())}; then rm -rf {d} && echo RELEASED; " \
           "else echo NOT_OURS; fi"


def release(remote: Remote, path: str, owner: LockOwner) -> bool:
    return remote.run(release_command(path, owner)).stdout.strip() == "RELEASED"


def break_command(path: str, seen: LockState, tag: str | None = None) -> str:
    """Remove the lock only if it is still the one we looked at (same owner file), by
    renaming it away first: two concurrent breakers cannot both win. `tag` names the
    renamed copy (deploy: its own owner token, so the planned command is the one sent)."""
    d = program(path)
    gone = f"{d}.broken.{tag or f'{os.getpid()}.{secrets.token_hex(4)}'}"
    if seen.raw:
        same = _owner_is(d, seen.raw)
    else:
        same = f"[ ! -e {d}/{OWNER_FILE} ]"
    return f"if [ -d {d} ] && {same}; then mv {d} {gone} && rm -rf {gone} && echo BROKEN; " \
           "else echo CHANGED; fi"


def break_lock(remote: Remote, host: Host, path: str, seen: LockState) -> bool:
    ok = remote.run(break_command(path, seen)).stdout.strip() == "BROKEN"
    journal.append(host.name, "lock-break", result="ok" if ok else "changed", path=path,
                   owner=seen.owner.to_dict() if seen.owner else None, stale=seen.stale,
                   age=seen.age)
    return ok


def acquire(remote: Remote, host: Host, path: str, owner: LockOwner, *,
            break_stale: bool = False) -> LockState | None:
    """Take the lock or raise RefusedError (exit 3) "locked by X since T".
    ``break_stale`` (--break-lock): clear a held lock first, journaled. Returns the lock
    that was broken, if any."""
    seen = try_acquire(remote, path, owner)
    if seen is None:
        return None
    if not break_stale:
        raise RefusedError(f"{host.name}: {refusal(seen)}")
    break_lock(remote, host, path, seen)
    again = try_acquire(remote, path, owner)
    if again is not None:
        raise RefusedError(f"{host.name}: lock re-taken right after --break-lock: "
                           f"{again.describe()}")
    return seen


@contextmanager
def held(remote: Remote, host: Host, owner: LockOwner, *, path: str | None = None,
         break_stale: bool = False, on_release_error: Callable[[str], None] | None = None,
         ) -> Iterator[LockState | None]:
    """Hold the lock for the body; released on every exit path (exceptions, Ctrl-C). A
    release that cannot reach the host leaves a lock that reads as stale next time."""
    path = path or lock_path(host)
    broken = acquire(remote, host, path, owner, break_stale=break_stale)
    try:
        yield broken
    finally:
        try:
            release(remote, path, owner)
        except Exception as exc:  # noqa: BLE001 - never mask the body's own error
            if on_release_error:
                on_release_error(f"{host.name}: could not release the lock {path}: {exc}")
