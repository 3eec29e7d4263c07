"""jobsafe_ops.deploy.lock: owner records, the staleness rule, and the mkdir lock itself on a
local transport (a real shell and file system, no SSH)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from jobsafe_ops import journal
from jobsafe_ops.deploy import lock as locking
from jobsafe_ops.errors import RefusedError
from jobsafe_ops.inventory import Host
from jobsafe_ops.remote import LocalRemote
from jobsafe_ops.testing.fake_remote import FakeRemote

HOSTNAME = socket.gethostname()


def owner(**kw: object) -> locking.LockOwner:
    base = dict(operator="alice@laptop", pid=4242, hostname="laptop",
                started="2026-01-01T10:00:00+00:00", ttl=600.0, token="t0k")
    base.update(kw)
    return locking.LockOwner(**base)  # type: ignore[arg-type]


# ---- pure -----------------------------------------------------------------------------

def test_owner_json_round_trip_and_garbage() -> None:
    o = locking.this_process(ttl=120, command="deploy")
    assert locking.LockOwner.from_json(o.to_json()) == o
    assert o.pid == os.getpid() and o.hostname == HOSTNAME and "@" in o.operator
    assert locking.LockOwner.from_json("{not json") is None
    assert locking.LockOwner.from_json(json.dumps({"operator": "x"})) is None


def test_lock_path_is_outside_the_checkout_and_per_project() -> None:
    a = Host(name="a", ssh="a", project_dir="~/project", package="p")
    b = Host(name="b", ssh="b", project_dir="/srv/other project", package="p")
    assert locking.lock_path(a) == "~/.local/state/jobsafe-ops/deploy-project.lock"
    assert locking.lock_path(b) == "~/.local/state/jobsafe-ops/deploy-srv_other_project.lock"


def never_alive(pid: int, start: str) -> bool:
    return False


def always_alive(pid: int, start: str) -> bool:
    return True


def test_live_owner_is_respected() -> None:
    assert locking.stale_reason(owner(), 10, local_hostname="laptop",
                                alive=always_alive) is None


def test_owner_gone_on_this_machine_is_stale() -> None:
    why = locking.stale_reason(owner(), 10, local_hostname="laptop", alive=never_alive)
    assert why is not None and "4242" in why and "gone" in why


def test_other_laptops_pid_cannot_be_checked_so_only_ttl_applies() -> None:
    assert locking.stale_reason(owner(), 10, local_hostname="mine",
                                alive=never_alive) is None
    why = locking.stale_reason(owner(), 601, local_hostname="mine", alive=always_alive)
    assert why is not None and "TTL" in why


def test_ownerless_lock_is_an_acquire_in_progress_then_stale() -> None:
    assert locking.stale_reason(None, 5, local_hostname="x") is None
    assert "no owner file" in (locking.stale_reason(None, 61, local_hostname="x") or "")


def test_process_alive_detects_pid_reuse() -> None:
    me = os.getpid()
    start = locking._proc_start(me)
    assert locking.local_process_alive(me, start)
    if start:  # Linux
        assert not locking.local_process_alive(me, str(int(start) + 1))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert not locking.local_process_alive(dead.pid)


# ---- the lock on a real shell ---------------------------------------------------------

@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Host:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("JOBSAFE_JOURNAL", str(tmp_path / "journal.ndjson"))
    (tmp_path / "home").mkdir()
    return Host(name="h", ssh="local", project_dir="~/project", package="p")


def lockdir(host: Host) -> Path:
    return Path(os.path.expanduser(locking.lock_path(host)))


def test_acquire_writes_owner_then_release_removes(host: Host) -> None:
    remote = LocalRemote(host)
    me = locking.this_process(ttl=60)
    with locking.held(remote, host, me) as broken:
        assert broken is None
        written = json.loads((lockdir(host) / "owner.json").read_text())
        assert written["pid"] == os.getpid() and written["token"] == me.token
        state = locking.read(remote, locking.lock_path(host))
        assert state.held and state.owner == me and state.stale is None
    assert not lockdir(host).exists()
    assert not locking.read(remote, locking.lock_path(host)).held


def test_released_when_the_body_is_interrupted(host: Host) -> None:
    remote = LocalRemote(host)
    with pytest.raises(KeyboardInterrupt), locking.held(remote, host, locking.this_process()):
        raise KeyboardInterrupt
    assert not lockdir(host).exists()


def test_concurrent_acquires_exactly_one_wins(host: Host) -> None:
    path = locking.lock_path(host)
    owners = [locking.this_process() for _ in range(12)]

    def attempt(o: locking.LockOwner) -> locking.LockState | None:
        return locking.try_acquire(LocalRemote(host), path, o)

    with ThreadPoolExecutor(max_workers=12) as pool:
        results = list(pool.map(attempt, owners))
    winners = [o for o, r in zip(owners, results, strict=True) if r is None]
    assert len(winners) == 1
    on_disk = json.loads((lockdir(host) / "owner.json").read_text())
    assert on_disk["token"] == winners[0].token
    # every loser saw the winner (or an acquire in progress), never "free"
    for r in results:
        assert r is None or (r.held and r.owner in (None, winners[0]))


def test_second_acquire_is_refused_with_owner_and_time(host: Host) -> None:
    remote = LocalRemote(host)
    first = locking.this_process()
    locking.acquire(remote, host, locking.lock_path(host), first)
    with pytest.raises(RefusedError) as exc:
        locking.acquire(remote, host, locking.lock_path(host), locking.this_process())
    text = str(exc.value)
    assert f"locked by {first.operator}" in text and f"since {first.started}" in text
    assert exc.value.exit_code == 3
    assert "stale" not in text  # our own process is alive


def test_release_never_removes_someone_elses_lock(host: Host) -> None:
    remote = LocalRemote(host)
    path = locking.lock_path(host)
    mine, theirs = locking.this_process(), locking.this_process()
    locking.acquire(remote, host, path, theirs)
    assert locking.release(remote, path, mine) is False
    assert lockdir(host).exists()
    assert locking.release(remote, path, theirs) is True


def test_stale_lock_is_reported_then_broken_explicitly_and_journaled(host: Host) -> None:
    remote = LocalRemote(host)
    path = locking.lock_path(host)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    ghost = owner(pid=dead.pid, hostname=HOSTNAME, operator="bob@here")
    locking.acquire(remote, host, path, ghost)

    with pytest.raises(RefusedError) as exc:
        locking.acquire(remote, host, path, locking.this_process())
    assert "stale" in str(exc.value) and "--break-lock" in str(exc.value)
    assert lockdir(host).exists()  # detected, never cleared silently

    me = locking.this_process()
    broken = locking.acquire(remote, host, path, me, break_stale=True)
    assert broken is not None and broken.owner == ghost
    assert json.loads((lockdir(host) / "owner.json").read_text())["token"] == me.token
    [entry] = list(journal.entries(action="lock-break"))
    assert entry["owner"]["operator"] == "bob@here" and "gone" in entry["stale"]


def test_break_does_not_remove_a_lock_retaken_meanwhile(host: Host) -> None:
    remote = LocalRemote(host)
    path = locking.lock_path(host)
    locking.acquire(remote, host, path, owner(hostname=HOSTNAME, pid=1, token="old"))
    seen = locking.read(remote, path)
    locking.release(remote, path, owner(hostname=HOSTNAME, pid=1, token="old"))
    newer = locking.this_process()
    locking.acquire(remote, host, path, newer)
    assert locking.break_lock(remote, host, path, seen) is False
    assert json.loads((lockdir(host) / "owner.json").read_text())["token"] == newer.token


def scripted(*outputs: str) -> FakeRemote:
    """A host answering each `mkdir` lock attempt with the next scripted stdout."""
    replies = iter(outputs)
    host = Host(name="h", ssh="x", project_dir="~/p", package="p", path=())
    return FakeRemote(host).on_script("echo ACQUIRED", lambda sent: next(replies),
                                      mutates=True)


def test_a_lock_without_owner_file_yet_is_read_again_to_name_its_holder() -> None:
    # the holder's single command is between its mkdir and its owner write: look again
    holder = owner(hostname="elsewhere")
    remote = scripted("HELD\n\n100\n100\n", f"HELD\n{holder.to_json()}\n100\n100\n")
    seen = locking.try_acquire(remote, "~/l.lock", owner())
    assert seen is not None and seen.owner == holder and len(remote.sent) == 2
    # an acquire that died halfway (ownerless for > OWNERLESS_GRACE) is reported at once
    remote = scripted("HELD\n\n1000\n100\n")
    seen = locking.try_acquire(remote, "~/l.lock", owner())
    assert seen is not None and seen.owner is None and seen.stale
    assert len(remote.sent) == 1
