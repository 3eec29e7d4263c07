"""Fault injection against real sshd hosts on loopback: the connection dropped in every
deploy step and at every feeder position, the pueue daemon down, every kind of connection
failure, and a host disk refusing the upload. Each run that meets a fault fails with one
line naming the host (exit 4); a plain rerun converges (no label lost or duplicated, the
deploy lock released, or reported stale and breakable).

Faults are injected on the host side, never by test-only branches in jobsafe_ops: this
module's world runs every SSH session through a login wrapper (sshd's ForceCommand) that
obeys rule files in the host's ``~/.fault/``:

* ``rule``: ``N MODE TEXT``: the Nth session command containing TEXT drops the connection,
  ``before`` running it or ``after`` it ran (its reply lost), or ``idle``: it runs and
  answers, and the connection dies a moment later, while the client is idle;
* ``listener``: a drop also kills the listening sshd (the host's sshd is gone until the
  test restarts it), not only this connection's sshd;
* ``add-rule``: ``N count`` (the Nth ``pueue add``) or ``1 after`` (the first ``--after``
  add) drops the connection from inside the feeder, through a ``pueue`` shim on PATH;
* ``fsize``: the session runs under ``ulimit -f`` (a per-file size cap, as root too).

A drop (``fault-drop.sh``) SIGKILLs the session's sshd process(es) and the command's whole
process group (feeder and in-flight ``pueue add`` included): what a dead link or a killed
sshd leaves behind.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cli import inv
from tests.e2e.deploy_helpers import (
    add,
    deploy_host,
    fresh,
    head,
    lock_exists,
    make_wheel,
    start_pypiserver,
    state_of,
    tasks,
    venv_version,
    wait_for,
    with_checkpoints,
)
from tests.e2e.deploy_helpers import deploy as run_deploy
from tests.jsonout import result_of
from tests.world import LOOPBACK, SimHost, World, free_port

BATCHES = ".local/state/jobsafe-ops/batches"
JOURNAL = ".local/state/jobsafe-ops/journal.ndjson"

WRAPPER = r"""#!/bin/sh
# jobsafe e2e world (tests/e2e/test_faults.py): every SSH session starts in the simulated
# host's $HOME, through the fault hooks described in that module.
cd "$HOME" || exit 1
cmd=$SSH_ORIGINAL_COMMAND
unset SSH_ORIGINAL_COMMAND
FAULT_DIR="$HOME/.fault"
if [ -d "$FAULT_DIR/bin" ]; then PATH="$FAULT_DIR/bin:$PATH"; export PATH; fi
if [ -f "$FAULT_DIR/fsize" ]; then ulimit -f "$(cat "$FAULT_DIR/fsize")"; trap '' XFSZ; fi
if [ -f "$FAULT_DIR/rule" ]; then
  read -r n mode text < "$FAULT_DIR/rule"
  case "$cmd" in
    *"$text"*)
      seen=$(( $(cat "$FAULT_DIR/seen" 2>/dev/null || echo 0) + 1 ))
      echo "$seen" > "$FAULT_DIR/seen"
      if [ "$seen" -eq "$n" ]; then
        rm -f "$FAULT_DIR/rule"
        if [ "$mode" = idle ]; then
          setsid @IDLE@ $$ </dev/null >/dev/null 2>&1 &
        else
          [ "$mode" = after ] && "${SHELL:-/bin/sh}" -c "$cmd"
          exec @DROP@
        fi
      fi ;;
  esac
fi
case "$cmd" in
  internal-sftp*) exec @SFTP@ ;;
  "") exec "${SHELL:-/bin/sh}" -i ;;
esac
exec "${SHELL:-/bin/sh}" -c "$cmd"
"""

DROP = r"""#!/bin/sh
# Drop this SSH connection: SIGKILL the sshd processes above this one (up to, not including,
# the listening sshd; that one too with ~/.fault/listener), then this process group (the
# session's command: feeder and in-flight `pueue add`s included). Found from /proc, not from
# the environment: the feeder runs `pueue add` with a lean one.
listener=$(cat "$HOME/../sshd.pid" 2>/dev/null || echo 0)
echo drop >> "$HOME/.fault/drops"
pgid=$(awk '{print $5}' "/proc/$$/stat")
p=$(awk '{print $4}' "/proc/$$/stat")
while [ "${p:-0}" -gt 1 ] && [ "$p" != "$listener" ]; do
  next=$(awk '{print $4}' "/proc/$p/stat" 2>/dev/null)
  case "$(cat "/proc/$p/comm" 2>/dev/null)" in sshd*) kill -9 "$p" ;; esac
  p=$next
done
[ -f "$HOME/.fault/listener" ] && kill -9 "$listener"
kill -9 -- "-$pgid"
"""

IDLE_DROP = r"""#!/bin/sh
# Drop an SSH connection while its client is idle: note the sshd processes above session
# command $1 (up to the listening sshd), wait until that command has exited (its exit
# status is on its way), then SIGKILL them a moment later.
listener=$(cat "$HOME/../sshd.pid" 2>/dev/null || echo 0)
pids=
p=$(awk '{print $4}' "/proc/$1/stat")
while [ "${p:-0}" -gt 1 ] && [ "$p" != "$listener" ]; do
  next=$(awk '{print $4}' "/proc/$p/stat" 2>/dev/null)
  case "$(cat "/proc/$p/comm" 2>/dev/null)" in sshd*) pids="$pids $p" ;; esac
  p=$next
done
while kill -0 "$1" 2>/dev/null; do sleep 0.05; done
sleep 0.3
echo drop >> "$HOME/.fault/drops"
kill -9 $pids
"""

PUEUE_SHIM = r"""#!/bin/sh
# the feeder's `pueue add`s pass here; ~/.fault/add-rule picks the one that drops the link
FAULT_DIR="$HOME/.fault"
if [ "$1" = add ] && [ -f "$FAULT_DIR/add-rule" ]; then
  read -r n kind < "$FAULT_DIR/add-rule"
  if [ "$kind" = after ]; then
    case " $* " in *" --after "*) mv "$FAULT_DIR/add-rule" "$FAULT_DIR/fired.$$" \
      2>/dev/null && exec @DROP@ ;; esac
  else
    echo . >> "$FAULT_DIR/adds"
    if [ "$(wc -l < "$FAULT_DIR/adds")" -ge "$n" ]; then
      mv "$FAULT_DIR/add-rule" "$FAULT_DIR/fired.$$" 2>/dev/null && exec @DROP@
    fi
  fi
fi
exec @PUEUE@ "$@"
"""


# ---- the world -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def faulty(world: World) -> World:
    if not world.pueue_available:
        pytest.skip("no pueue stand-in and no real pueue")
    if not world.sftp_server:
        pytest.skip("no sftp-server: the login wrapper cannot hand SFTP over")
    drop = world.root / "fault-drop.sh"
    drop.write_text(DROP)
    drop.chmod(0o755)
    idle = world.root / "fault-idle-drop.sh"
    idle.write_text(IDLE_DROP)
    idle.chmod(0o755)
    world.login_wrapper.write_text(WRAPPER.replace("@DROP@", shlex.quote(str(drop)))
                                   .replace("@IDLE@", shlex.quote(str(idle)))
                                   .replace("@SFTP@", shlex.quote(world.sftp_server)))
    world.login_wrapper.chmod(0o755)
    return world


def _host(world: World, name: str, **kw: Any) -> SimHost:
    host = deploy_host(world, name, **kw)  # groups p1 (2) and p2 (1), as in test_deploy
    (host.home / ".fault").mkdir()
    return host


@pytest.fixture(scope="module")
def fd(faulty: World) -> SimHost:
    """deploy: editable install."""
    return _host(faulty, "fd")


@pytest.fixture(scope="module")
def fs(faulty: World) -> SimHost:
    """submit-batch, pueued down, connection failures. The shim must come before
    ~/.local/bin, which the host file's `path` puts in front of the session's PATH."""
    host = _host(faulty, "fs", path=("~/.fault/bin", "~/.local/bin"))
    shim = host.home / ".fault" / "bin" / "pueue"
    shim.parent.mkdir()
    shim.write_text(PUEUE_SHIM.replace("@DROP@", shlex.quote(str(faulty.root / "fault-drop.sh")))
                    .replace("@PUEUE@", shlex.quote(str(faulty.pueue_bin_dir / "pueue"))))
    shim.chmod(0o755)
    return host


def arm(host: SimHost, text: str, *, n: int = 1, mode: str = "before",
        listener: bool = False) -> None:
    fault = host.home / ".fault"
    for f in ("seen", "drops", "listener", "adds"):
        (fault / f).unlink(missing_ok=True)
    if listener:
        (fault / "listener").touch()
    (fault / "rule").write_text(f"{n} {mode} {text}\n")


def dropped(host: SimHost) -> bool:
    return (host.home / ".fault" / "drops").exists()


def disarm(host: SimHost) -> None:
    fault = host.home / ".fault"
    for f in fault.iterdir():
        if f.is_file():
            f.unlink()
    if not host.sshd_running:
        host.start_sshd()


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


def one_line_error(r: subprocess.CompletedProcess[str], host: str, *,
                   notes: bool = False) -> str:
    """Exit 4 and stderr exactly one line, naming the host, without a traceback. With
    ``notes``, other stderr lines may precede it (deploy's progress notes), yet only one
    is an error."""
    lines = error_lines(r.stderr)
    assert r.returncode == 4, (r.returncode, r.stdout[-2000:], r.stderr)
    if notes:
        lines = [line for line in lines if line.startswith("error:")]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(f"error: {host}: "), lines
    assert "Traceback" not in r.stderr + r.stdout
    print(lines[0])  # shown with -s: the line an operator reads
    return lines[0]


# ---- 1. the connection dropped in each deploy step ------------------------------------------

# step -> (text of the command the drop hits, its occurrence, before/after it ran, whether
# the listening sshd dies too). "after" steps lose the reply of a command that did run on
# the host (the lock taken, the checkout reset, a task added); with the listener gone the
# run cannot release its lock, which must then read as stale and be breakable.
DEPLOY_DROPS = {
    "audit": ("@@nproc", 1, "before", False),
    "lock": ("if mkdir", 1, "after", True),
    "decide": ("kill --signal", 1, "before", False),
    "pull": ("reset --quiet --hard", 1, "after", True),
    "verify": ("import hashlib, importlib", 1, "before", False),
    "upgrade": ("pip install", 1, "before", True),
    "restart": ("pueue add --group p2", 1, "after", False),
    "monitor": ("@@nproc", 2, "before", True),
}


@pytest.fixture(scope="module")
def index(faulty: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A real package index (pypiserver) for the UPGRADE step's wheel host."""
    packages = tmp_path_factory.mktemp("index")
    server, port = start_pypiserver(packages)
    faulty.index_url = f"http://{LOOPBACK}:{port}/simple/"
    try:
        yield packages
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture(scope="module")
def fw(faulty: World, index: Path) -> SimHost:
    """deploy's UPGRADE step: a wheel install upgraded from the index."""
    return _host(faulty, "fw", editable=False)


@pytest.mark.parametrize("step", list(DEPLOY_DROPS))
def test_deploy_dropped_in_each_step_then_rerun_converges(
        faulty: World, request: pytest.FixtureRequest, step: str) -> None:
    host: SimHost = request.getfixturevalue("fw" if step == "upgrade" else "fd")
    text, n, mode, listener = DEPLOY_DROPS[step]
    fresh(host)
    with_checkpoints(faulty, host, "~/ckpt/{label}.json")
    run, oom = f"D{step}@run", f"D{step}@oom"
    add(host, run, "sleep 30")
    add(host, oom, f"test -e ~/flag-{step} || {{ touch ~/flag-{step}; exit 137; }}",
        group="p2")
    wait_for(lambda: state_of(host, run) == "Running" and state_of(host, oom) == "Failed",
             what="setup")
    args = ["deploy", "--host", host.name, "--on-running", "kill",
            "--watch", "2" if step == "monitor" else "0"]
    if step == "upgrade":
        version = "1.7.0"
        faulty.bump_version(version)
        make_wheel(request.getfixturevalue("index"), version,
                   (faulty.work / "src/mypkg/__init__.py").read_text())
        args += ["--version", version]
    else:
        faulty.commit_to_origin({"NOTES": f"drop in {step}\n"}, f"drop in {step}")
    target = faulty.origin_head()

    arm(host, text, n=n, mode=mode, listener=listener)
    try:
        r = inv(faulty, *args)
        assert dropped(host), f"the fault never fired: {r.stderr}"
        line = one_line_error(r, host.name, notes=True)
        assert any(w in line for w in ("connection lost", "died without an exit status",
                                       "unreachable")), line
    finally:
        disarm(host)  # sshd back, no rule

    if listener:
        # the run could not release it (the host was gone): reported stale, its owner
        # process being gone, and kept until --break-lock
        assert lock_exists(host)
        again = inv(faulty, *args)
        assert again.returncode == 3, again.stderr
        said = " ".join(again.stderr.split())
        assert "stale" in said and "is gone" in said and "--break-lock" in said
        assert lock_exists(host)
        args.append("--break-lock")
    else:
        assert not lock_exists(host)  # released over a fresh connection

    # the rerun's own --watch window would judge this shared machine's load: skip it
    w = args.index("--watch")
    r = inv(faulty, *args[:w], "--watch", "0", *args[w + 2:])
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr
    assert head(host) == target and not lock_exists(host)
    labels = Counter(t["label"] for t in host.pueue_status()["tasks"].values())
    assert all(c == 1 for c in labels.values()), labels  # no label added twice
    t = tasks(host)
    for base in (run, oom):
        live = [lbl for lbl, x in t.items() if (lbl == base or lbl.startswith(f"{base}-retry-"))
                and x["state"] in ("Queued", "Running", "Success")]
        assert len(live) == 1, (step, base, t)  # none lost, none duplicated
    assert all(g["status"] == "Running" for g in host.pueue_status()["groups"].values())
    if step == "upgrade":
        assert venv_version(host)[0] == "1.7.0"


# ---- 1b. reconnects: read-only polls may, mutating commands never ---------------------------

def kill_sessions(host: SimHost) -> int:
    """SIGKILL every per-connection sshd process of the host (`sshd: user@notty` and its
    privileged parent), not the listener: what the issue's operator did by hand."""
    listener = int((host.home.parent / "sshd.pid").read_text())
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            name = stat.with_name("comm").read_text().strip()
        except OSError:
            continue
        if name.startswith("sshd"):
            parents[int(stat.parent.name)] = int(fields[1])
    killed = 0
    for pid in parents:
        p = parents.get(pid)
        while p is not None and p != listener:
            p = parents.get(p)
        if p == listener:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
                killed += 1
    return killed


def test_deploy_wait_poll_reconnects_after_a_killed_session_and_says_so(
        faulty: World, fd: SimHost) -> None:
    """The issue: the session killed while `--on-running wait` polled. The poll only reads,
    so it reconnects (connect-retry policy) and the deploy goes on, and the report says so
    (it used to reopen silently)."""
    fresh(fd)
    add(fd, "Wpoll@run", "sleep 4")
    wait_for(lambda: state_of(fd, "Wpoll@run") == "Running", what="setup")
    faulty.commit_to_origin({"NOTES": "wait-poll reconnect\n"}, "wait-poll reconnect")
    target = faulty.origin_head()
    killed: list[int] = []
    # --wait-timeout 20: a poll every second (about 20 per window)
    r, report = deploy_json(faulty, fd, "--on-running", "wait", "--wait-timeout", "20",
                            "--watch", "0",
                            on_stderr=("waiting: 1 still running",
                                       lambda: killed.append(kill_sessions(fd))))
    assert killed and killed[0] >= 1, "no session was killed"
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr
    notes = report["notes"]
    assert len(notes) == 1 and "connection dropped" in notes[0], notes
    assert "reopened for that read-only poll" in notes[0] and "status" in notes[0]
    assert "reconnected 1x for read-only polls" in report["verdict"]
    assert head(fd) == target and not lock_exists(fd)
    assert not [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]


def test_deploy_mutating_step_on_a_dropped_connection_ends_with_exit_4(
        faulty: World, fw: SimHost) -> None:
    """The connection dies while deploy is idle between two mutating commands (UPGRADE's
    back-off between two `uv pip install` attempts): Fabric would reopen it on the next
    `run`; the host's run ends instead, exit 4 and one line, and the lock is released."""
    fresh(fw)
    arm(fw, "pip install", mode="idle")  # attempt 1 answers "not found", then the link dies
    try:
        r = inv(faulty, "deploy", "--host", fw.name, "--on-running", "keep", "--watch", "0",
                "--version", "8.8.8", "--upgrade-timeout", "60")
        assert dropped(fw), f"the fault never fired: {r.stderr}"
        line = one_line_error(r, fw.name, notes=True)
        assert "connection lost before `uv pip install" in line, line
        assert "not reopened for a command that changes the host" in line
        assert "upgrade attempt 1: not-found" in r.stderr
        assert "upgrade attempt 2" not in r.stderr  # never resent on a new connection
        assert not lock_exists(fw)  # the release reconnects to remove our own lock
        assert "reopened to release the deploy lock" in r.stderr
    finally:
        disarm(fw)


def deploy_json(world: World, host: SimHost, *args: str,
                on_stderr: tuple[str, Any]) -> tuple[subprocess.CompletedProcess[str],
                                                     dict[str, Any]]:
    return run_deploy(world, host, *args, on_stderr=on_stderr)


# ---- 2. the connection dropped at each feeder position ---------------------------------------

CHAIN = ["fb:merge", "fb:report"]


def batch_playbook(tmp_path: Path, jobs: int = 8, pad: int = 0) -> Path:
    path = tmp_path / "fb.toml"
    path.write_text(
        'name = "fb"\ngroup = "p1"\n'
        'pass_env = ["JOBSAFE_WORLD", "JOBSAFE_WORLD_HOST"]\n'
        f'command = "true {"x" * pad} {{i}}"\nlabel = "fb:{{i}}"\n'
        f"[matrix]\ni = {list(range(jobs))}\n"
        '[[after]]\nlabel = "fb:merge"\ncommand = "true"\n'
        '[[after]]\nlabel = "fb:report"\ncommand = "true"\n')
    return path


def reset_batch(host: SimHost) -> None:
    fresh(host)
    host.run(f"rm -rf ~/{BATCHES}/fb", check=True)


def submit(faulty: World, host: SimHost, path: Path) -> subprocess.CompletedProcess[str]:
    return inv(faulty, "submit-batch", "--host", host.name, "--playbook", str(path))


# position -> how the drop is armed: a wrapper rule (session commands) or the pueue shim
FEED_DROPS = {
    "before-upload": ("rule", "1 before internal-sftp"),
    "after-upload-before-feed": ("rule", "1 before feeder.py feed"),
    "mid-feed-after-3-adds": ("add", "4 count"),
    "after-the-adds-before-the-chain": ("add", "1 after"),
}


@pytest.mark.parametrize("position", list(FEED_DROPS))
def test_submit_dropped_at_each_feeder_position_then_rerun_converges(
        faulty: World, fs: SimHost, tmp_path: Path, position: str) -> None:
    reset_batch(fs)
    path = batch_playbook(tmp_path)
    kind, spec = FEED_DROPS[position]
    if kind == "rule":
        n, mode, text = spec.split(" ", 2)
        arm(fs, text, n=int(n), mode=mode)
    else:
        arm(fs, "never-matches")
        (fs.home / ".fault" / "add-rule").write_text(spec + "\n")
    try:
        r = submit(faulty, fs, path)
        assert dropped(fs), f"the fault never fired: {r.stderr}"
        one_line_error(r, fs.name)
    finally:
        disarm(fs)
    leftovers = list((fs.home / BATCHES / "fb").glob("*.tmp.*"))
    assert leftovers == [] or position == "before-upload", leftovers

    r = submit(faulty, fs, path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr
    labels = Counter(t["label"] for t in fs.pueue_status()["tasks"].values())
    assert labels == Counter([f"fb:{i}" for i in range(8)] + CHAIN), labels  # each once
    by_label = {t["label"]: t for t in fs.pueue_status()["tasks"].values()}
    jobs = {by_label[f"fb:{i}"]["id"]: by_label[f"fb:{i}"] for i in range(8)}
    deps = set(by_label["fb:merge"]["dependencies"])
    assert deps <= set(jobs)  # the chain waits for jobs of this batch, wired by label...
    for tid in set(jobs) - deps:  # ...except those that had already succeeded when added
        assert jobs[tid]["status"]["Done"]["result"] == "Success", jobs[tid]
    assert by_label["fb:report"]["dependencies"] == [by_label["fb:merge"]["id"]]


# ---- 3. the pueue daemon down ----------------------------------------------------------------

def test_daemon_down_every_host_command_exits_4_and_changes_nothing(
        faulty: World, fs: SimHost, tmp_path: Path) -> None:
    """Probe reports the daemon down and succeeds (exit 0): it is the fact-finding command
    and its other facts are still true. Every other command stops with exit 4 and one
    line naming the host and the fix, before any mutation."""
    reset_batch(fs)
    faulty.commit_to_origin({"NOTES": "daemon down\n"}, "daemon down")
    before, journal = head(fs), _journal_lines(faulty)
    fs.stop_pueued()
    try:
        probe = inv(faulty, "probe", "--host", fs.name, "--json")
        assert probe.returncode == 0, probe.stderr
        error = result_of(probe.stdout)["pueue_error"]
        assert error.startswith("pueue daemon not running") and "pueued -d" in error
        commands = [
            ["audit"], ["deploy", "--on-running", "kill", "--watch", "0"],
            ["submit-batch", "--playbook", str(batch_playbook(tmp_path))],
            ["monitor", "--group", "p1", "--once"], ["retry-failed", "--group", "p1"],
            ["autoscale"], ["clean", "--group", "p1"],
        ]
        for argv in commands:
            r = inv(faulty, argv[0], "--host", fs.name, *argv[1:])
            line = one_line_error(r, fs.name)
            assert "pueue daemon not running" in line, (argv, line)
            assert "`pueued -d`" in line and "systemctl --user start pueued" in line, line
    finally:
        fs.start_pueued()
    assert head(fs) == before  # the checkout untouched
    assert not lock_exists(fs) and not (fs.home / BATCHES / "fb").exists()
    assert _journal_lines(faulty) == journal  # nothing was done, so nothing journaled


def _journal_lines(world: World) -> list[str]:
    path = world.laptop / JOURNAL
    return path.read_text().splitlines() if path.exists() else []


# ---- 4. connection failures: one line, exit 4, no retry storm -----------------------------

class Counting:
    """A TCP forwarder to the host's sshd that counts the connections it accepts (or, with
    ``target=None``, accepts and resets them: a transient failure)."""

    def __init__(self, target: int | None) -> None:
        self.accepts = 0
        self.target = target
        self.sock = socket.socket()
        self.sock.bind((LOOPBACK, 0))
        self.sock.listen(32)
        self.port = int(self.sock.getsockname()[1])
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            self.accepts += 1
            if self.target is None:
                client.close()
                continue
            upstream = socket.create_connection((LOOPBACK, self.target))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.sock.close()


def _point(world: World, host: SimHost, *, port: int | None = None, hostname: str | None = None,
           identity: Path | None = None, key_line: str | None = None) -> None:
    """Rewrite the inventory's ssh_config / known_hosts for ``host`` (restored by
    world.write_inventory())."""
    world.write_inventory()
    cfg = world.ssh_config.read_text()
    block = f"Host {host.name}\n"
    start = cfg.index(block)
    end = cfg.find("\nHost ", start + 1)
    end = len(cfg) if end < 0 else end
    mine = cfg[start:end]
    if port is not None:
        mine = mine.replace(f"Port {host.port}\n", f"Port {port}\n")
    if hostname is not None:
        mine = mine.replace(f"HostName {LOOPBACK}\n", f"HostName {hostname}\n")
    if identity is not None:
        mine = mine.replace(f"IdentityFile {world.key}\n", f"IdentityFile {identity}\n")
    world.ssh_config.write_text(cfg[:start] + mine + cfg[end:])
    if key_line is not None:
        world.known_hosts.write_text(world.known_hosts.read_text() + key_line + "\n")


@pytest.fixture
def other_key(faulty: World, tmp_path: Path) -> Path:
    key = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
                   check=True, capture_output=True)
    return key


def _kind(line: str) -> str:
    return line.split(": ", 2)[-1]


@pytest.mark.parametrize("failure", ["host-key-changed", "host-key-unknown", "auth",
                                     "identity-file-missing"])
def test_refused_connections_are_one_line_and_never_retried(
        faulty: World, fs: SimHost, other_key: Path, failure: str) -> None:
    proxy = Counting(fs.port)
    blob = fs.host_key.with_suffix(".pub").read_text().split()[:2]
    stranger = other_key.with_suffix(".pub").read_text().split()[:2]
    real_line = f"[{LOOPBACK}]:{proxy.port} {' '.join(blob)}"
    try:
        _point(faulty, fs, port=proxy.port, key_line=real_line)
        ok = inv(faulty, "audit", "--host", fs.name)
        assert ok.returncode in (0, 1) and proxy.accepts == 1, ok.stderr  # the counter works
        proxy.accepts = 0
        if failure == "host-key-changed":
            _point(faulty, fs, port=proxy.port,
                   key_line=f"[{LOOPBACK}]:{proxy.port} {' '.join(stranger)}")
            expect = "CHANGED"
        elif failure == "host-key-unknown":
            _point(faulty, fs, port=proxy.port)
            expect = "unknown host key"
        elif failure == "auth":  # a key the host does not authorize
            _point(faulty, fs, port=proxy.port, key_line=real_line, identity=other_key)
            expect = "authentication failed"
        else:
            _point(faulty, fs, port=proxy.port, key_line=real_line,
                   identity=other_key.with_name("no-such-key"))
            expect = "check IdentityFile"
        r = inv(faulty, "audit", "--host", fs.name)
        line = one_line_error(r, fs.name)
        assert expect in line, line
        assert proxy.accepts == 1, f"{proxy.accepts} connection attempts for {failure}"
    finally:
        proxy.close()
        faulty.write_inventory()


def test_dns_failure_is_one_line_and_not_retried(faulty: World, fs: SimHost) -> None:
    try:
        _point(faulty, fs, hostname="nohost.invalid")
        started = time.monotonic()
        r = inv(faulty, "audit", "--host", fs.name)
        line = one_line_error(r, fs.name)
        assert "cannot resolve nohost.invalid" in line and "attempts" not in line, line
        print(f"dns failure reported in {time.monotonic() - started:.1f}s")
    finally:
        faulty.write_inventory()


def test_refused_and_reset_are_retried_a_bounded_few_times(faulty: World, fs: SimHost) -> None:
    """Transient failures get CONNECT_ATTEMPTS (3) tries with back-off, then one line."""
    resetting = Counting(None)
    try:
        _point(faulty, fs, port=resetting.port)
        r = inv(faulty, "audit", "--host", fs.name)
        line = one_line_error(r, fs.name)
        assert "unreachable" in line and "after 3 attempts" in line, line
        assert resetting.accepts == 3
        closed = free_port()  # nothing listens there: refused
        _point(faulty, fs, port=closed)
        r = inv(faulty, "audit", "--host", fs.name)
        line = one_line_error(r, fs.name)
        assert "after 3 attempts" in line and "Connection refused" in line, line
    finally:
        resetting.close()
        faulty.write_inventory()


# ---- 5. the host's disk refuses the upload -------------------------------------------------

def _immutable(path: Path) -> bool:
    """A directory nobody may write into, root included: chattr +i (ext4, xfs, btrfs with
    CAP_LINUX_IMMUTABLE); a plain chmod when not root."""
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode == 0:
        return True
    if os.geteuid() != 0:
        path.chmod(0o555)
        return True
    return False


def _mutable(path: Path) -> None:
    subprocess.run(["chattr", "-i", str(path)], capture_output=True)
    path.chmod(0o755)


def _mount_full(path: Path, size_kb: int) -> bool:
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(path)],
                       capture_output=True)
    return r.returncode == 0


@pytest.mark.parametrize("refusal", ["read-only", "full-disk", "file-size-limit"])
def test_a_refused_upload_is_one_line_and_never_fed(
        faulty: World, fs: SimHost, tmp_path: Path, refusal: str) -> None:
    """The commands file is ~160 KB; feeder.py (~16 KB) fits where it is refused."""
    reset_batch(fs)
    batch = fs.home / BATCHES / "fb"
    batch.mkdir(parents=True)
    (batch / "units").mkdir()  # as a first run leaves it: the upload is what is refused
    path = batch_playbook(tmp_path, jobs=20, pad=8000)
    undo: list[Any] = []
    if refusal == "read-only":
        if not _immutable(batch):
            pytest.skip("root without CAP_LINUX_IMMUTABLE (chattr +i refused): no way to "
                        "make a directory read-only for root")
        undo.append(lambda: _mutable(batch))
    elif refusal == "full-disk":
        (batch / "units").rmdir()
        if not _mount_full(batch, 64):
            pytest.skip("cannot mount a small tmpfs here (needs root with CAP_SYS_ADMIN); "
                        "the file-size-limit case covers a write cut short")
        undo.append(lambda: subprocess.run(["umount", "-l", str(batch)], check=False))
    else:
        (fs.home / ".fault" / "fsize").write_text("64\n")  # 64 blocks: 32-64 KB a file
    try:
        r = submit(faulty, fs, path)
        line = one_line_error(r, fs.name)
        assert "cannot upload" in line or "upload of" in line, line
        assert not (batch / "commands.jsonl").exists()  # never under its final name
        assert not list(batch.glob("commands.jsonl.tmp.*"))  # and the torn copy removed
        assert not [t for t in fs.pueue_status()["tasks"].values()
                    if (t["label"] or "").startswith("fb:")]  # nothing fed
    finally:
        for u in undo:
            u()
        disarm(fs)
    r = submit(faulty, fs, path)  # the disk is fine again: the rerun converges
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr
    labels = Counter(t["label"] for t in fs.pueue_status()["tasks"].values())
    assert len(labels) == 22 and set(labels.values()) == {1}
