"""remote.py without a network: the retry policy and quoting (e2e covers real sshd)."""

from __future__ import annotations

import shlex

import paramiko
import pytest
from paramiko.ssh_exception import NoValidConnectionsError

from jobsafe_ops import remote, shell, sshconf
from jobsafe_ops.errors import ConnectionDropped, HostKeyError, RemoteError, TransientConnectError


class FlakyConn:
    host, port, user = "10.0.0.1", 22, "op"

    def __init__(self, exc: BaseException, fail_times: int = 99) -> None:
        self.exc, self.fail_times, self.calls = exc, fail_times, 0

    def open(self) -> None:
        self.calls += 1
        if self.calls <= self.fail_times:
            raise self.exc


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch):
    monkeypatch.setattr(remote._open.retry, "sleep", lambda s: None)  # type: ignore[attr-defined]


def test_transient_failures_are_retried_then_succeed():
    conn = FlakyConn(NoValidConnectionsError({("10.0.0.1", 22): ConnectionRefusedError()}), 2)
    remote._open(conn, "h")
    assert conn.calls == 3


def test_transient_failures_give_up_after_the_budget():
    conn = FlakyConn(ConnectionResetError("reset"))
    with pytest.raises(TransientConnectError):
        remote._open(conn, "h")
    assert conn.calls == remote.CONNECT_ATTEMPTS


@pytest.mark.parametrize("exc", [
    paramiko.AuthenticationException("denied"),
    HostKeyError("unknown host key"),
])
def test_auth_and_host_key_failures_are_never_retried(exc):
    conn = FlakyConn(exc)
    with pytest.raises(RemoteError):
        remote._open(conn, "h")
    assert conn.calls == 1


def test_changed_key_names_both_fingerprints():
    key_a = paramiko.RSAKey.generate(1024)
    key_b = paramiko.RSAKey.generate(1024)
    conn = FlakyConn(paramiko.BadHostKeyException("10.0.0.1", key_a, key_b))
    with pytest.raises(HostKeyError) as err:
        remote._open(conn, "h")
    assert conn.calls == 1
    text = str(err.value)
    assert sshconf.fingerprint(key_a) in text and sshconf.fingerprint(key_b) in text
    assert "CHANGED" in text


@pytest.mark.parametrize("value", ["plain", "a b", "x'y", "$(rm -rf /)", "`id`", "a;b|c&d", ""])
def test_join_round_trips_through_the_shell(value):
    argv = ["/usr/bin/printf", "%s", value]
    assert shlex.split(shell.join(argv)) == argv


def test_dns_failure_is_one_error_and_never_retried():
    import socket

    conn = FlakyConn(socket.gaierror(-2, "Name or service not known"))
    with pytest.raises(RemoteError) as err:
        remote._open(conn, "h")
    assert conn.calls == 1 and "cannot resolve 10.0.0.1" in str(err.value)


def test_refused_is_named_as_such():
    conn = FlakyConn(NoValidConnectionsError({("10.0.0.1", 22): ConnectionRefusedError(
        111, "Connection refused")}))
    with pytest.raises(TransientConnectError, match="^Connection refused$"):
        remote._open(conn, "h")
    assert conn.calls == remote.CONNECT_ATTEMPTS


# ---- put_text: temp name, verified on the host, then renamed ---------------------------

class TornUpload(remote.LocalRemote):
    """Writes only the first half, as a full disk or a dropped link would leave it."""

    def _put_text(self, text: str, path: str, mode: int) -> None:
        super()._put_text(text[: len(text) // 2], path, mode)


def _local(tmp_path, cls=remote.LocalRemote):
    from jobsafe_ops.inventory import Host

    return cls(Host(name="h1", ssh="local", project_dir=str(tmp_path), package="x"))


def test_put_text_verifies_then_renames(tmp_path):
    target = tmp_path / "commands.jsonl"
    _local(tmp_path).put_text("a\nb\n", str(target), 0o600)
    assert target.read_text() == "a\nb\n" and oct(target.stat().st_mode & 0o777) == "0o600"
    assert [p.name for p in tmp_path.iterdir()] == ["commands.jsonl"]  # no temp left


def test_a_torn_upload_never_takes_the_final_name(tmp_path):
    target = tmp_path / "commands.jsonl"
    target.write_text("old\n")
    with pytest.raises(RemoteError) as err:
        _local(tmp_path, TornUpload).put_text("x" * 1000 + "\n", str(target))
    assert "h1: upload of" in str(err.value) and "incomplete or corrupt" in str(err.value)
    assert target.read_text() == "old\n"  # the previous file stays whole
    assert [p.name for p in tmp_path.iterdir()] == ["commands.jsonl"]  # temp removed


def test_a_refused_write_is_one_remote_error_naming_the_host(tmp_path):
    (tmp_path / "batch").write_text("a file where a directory should be")
    with pytest.raises(RemoteError) as err:
        _local(tmp_path).put_text("a\n", str(tmp_path / "batch" / "commands.jsonl"))
    text = str(err.value)
    assert text.startswith("h1: cannot upload ") and "Not a directory" in text
    assert "\n" not in text


def test_a_command_without_an_exit_status_is_never_an_answer(tmp_path):
    """Killed mid-command (or the link dropped): even check=False raises, naming the host;
    a cut-short output must not be read as, e.g., "no receipts"."""
    with pytest.raises(RemoteError) as err:
        _local(tmp_path).run("echo partial; kill -9 $$", check=False)
    assert str(err.value).startswith("h1: `echo partial; kill -9 $$` died without an exit")
    assert _local(tmp_path).run("exit 3", check=False).exited == 3  # a real status is fine


def test_a_local_config_problem_is_not_retried_as_unreachable():
    """A missing IdentityFile surfaces from paramiko as FileNotFoundError: an OSError, yet
    no retry can fix it, and "unreachable" would send the operator the wrong way."""
    conn = FlakyConn(FileNotFoundError(2, "No such file or directory"))
    with pytest.raises(RemoteError) as err:
        remote._open(conn, "h")
    assert conn.calls == 1
    assert "check IdentityFile" in str(err.value) and "unreachable" not in str(err.value)


def test_network_oserrors_are_transient():
    import errno

    conn = FlakyConn(OSError(errno.EHOSTUNREACH, "No route to host"), 1)
    remote._open(conn, "h")
    assert conn.calls == 2


# ---- a dropped connection: never reopened silently (read-only polls excepted) -------------

class DroppingConn:
    """Fabric's Connection as SSHRemote uses it: `is_connected`, `open`, `close`, `run`.
    `drop_after`: the link dies once that many commands ran; `die_mid`: that command dies
    without an exit status (paramiko's -1) and takes the link with it."""

    host, port, user = "10.0.0.1", 22, "op"

    def __init__(self, drop_after: int | None = None, die_mid: int | None = None,
                 refuse_opens: bool = False) -> None:
        self.connected, self.opens, self.commands = True, 0, []
        self.drop_after, self.die_mid, self.refuse_opens = drop_after, die_mid, refuse_opens
        self.allow_reopen = False
        self._sftp = None

    @property
    def is_connected(self) -> bool:
        return self.connected

    def open(self) -> None:
        self.opens += 1
        if self.refuse_opens:
            raise ConnectionRefusedError("refused")
        self.connected = True

    def close(self) -> None:
        self.connected = False

    def run(self, text, **kw):  # noqa: ANN001, ANN003, ANN201 - fabric's untyped signature
        assert self.connected, "a command was sent over a dead connection"
        self.commands.append(text)
        n = len(self.commands)
        exited = 0
        if self.die_mid == n:
            self.connected, exited = False, -1
        elif self.drop_after == n:
            self.connected = False
        return type("R", (), {"stdout": f"out {n}", "stderr": "", "exited": exited})()


def ssh(conn: DroppingConn) -> remote.SSHRemote:
    from jobsafe_ops.inventory import Host

    host = Host(name="h", ssh="op@10.0.0.1", project_dir="~/p", package="x", groups={}, path=())
    return remote.SSHRemote(host, conn)


def test_a_mutating_command_on_a_dropped_connection_ends_the_run():
    conn = DroppingConn(drop_after=1)
    r = ssh(conn)
    r.run("pueue status --json", readonly=True)
    with pytest.raises(ConnectionDropped) as err:
        r.run(["git", "reset", "--hard"])  # mutating: the default
    assert err.value.exit_code == 4
    assert "h: connection lost before `git reset --hard`; not reopened" in str(err.value)
    assert conn.opens == 0 and conn.commands == ["pueue status --json"]
    assert r.reconnects == []
    with pytest.raises(ConnectionDropped):
        r.stream(["python3", "feeder.py"], lambda line: None)
    assert conn.opens == 0


def test_a_read_only_poll_reconnects_once_and_says_so():
    conn = DroppingConn(drop_after=1)
    r = ssh(conn)
    r.run("pueue status --json", readonly=True)
    out = r.run("pueue status --json", readonly=True)
    assert out.stdout == "out 2" and conn.opens == 1 and r.connections_opened == 1
    assert len(r.reconnects) == 1
    assert "dropped before `pueue status --json`; reopened" in r.reconnects[0]
    assert not conn.allow_reopen  # only ever allowed for that one reopening
    r.run(["git", "reset", "--hard"])  # the new connection serves the rest of the run


def test_a_read_only_poll_that_dies_mid_command_is_resent_once():
    conn = DroppingConn(die_mid=1)
    r = ssh(conn)
    out = r.run("pueue status --json", readonly=True)
    assert out.stdout == "out 2" and out.exited == 0 and conn.opens == 1
    assert conn.commands == ["pueue status --json"] * 2
    assert "while `pueue status --json` ran" in r.reconnects[0]


def test_a_mutating_command_that_dies_mid_command_is_never_resent():
    conn = DroppingConn(die_mid=1)
    r = ssh(conn)
    with pytest.raises(ConnectionDropped, match="died without an exit status"):
        r.run(["pueue", "add", "--", "true"])
    assert conn.opens == 0 and len(conn.commands) == 1


def test_a_read_only_reconnect_within_the_connect_retry_policy():
    conn = DroppingConn(drop_after=1, refuse_opens=True)
    r = ssh(conn)
    r.run("pueue status --json", readonly=True)
    with pytest.raises(RemoteError, match="unreachable after") as err:
        r.run("pueue status --json", readonly=True)
    assert err.value.exit_code == 4
    assert conn.opens == remote.CONNECT_ATTEMPTS  # bounded, then one line


def test_fabric_never_reopens_a_dropped_connection_on_its_own(monkeypatch):
    """Fabric's `run`/`sftp` call `open()` whenever the transport is gone (`@opens`): the
    Connection we build refuses a second opening unless SSHRemote asks for it."""
    from types import SimpleNamespace

    import fabric.connection

    opened: list[int] = []

    def fake_open(self):  # noqa: ANN001, ANN202
        opened.append(1)
        self.transport = SimpleNamespace(active=True)

    monkeypatch.setattr(fabric.connection.Connection, "open", fake_open)
    from jobsafe_ops.inventory import Host

    host = Host(name="h", ssh="op@h.invalid:2222", project_dir="~/p", package="x", groups={},
                path=())  # commands as sent, without a PATH prefix
    conn = remote.connection(host)
    conn.open()
    conn.transport = SimpleNamespace(active=False)  # the session's sshd was killed
    with pytest.raises(paramiko.SSHException, match="not reopened"):
        conn.open()
    assert len(opened) == 1
    conn.allow_reopen = True
    conn.open()
    assert len(opened) == 2


def test_the_lock_release_may_reopen_on_purpose_and_says_so():
    conn = DroppingConn(drop_after=1)
    r = ssh(conn)
    assert r.reopen_if_dropped("to release the deploy lock") is None  # alive: no-op
    r.run(["mkdir", "lock"])
    note = r.reopen_if_dropped("to release the deploy lock")
    assert note == ("connection dropped between commands; reopened to release the "
                    "deploy lock")
    assert conn.opens == 1 and r.reconnects == [note]


def test_messages_name_the_command_not_the_path_prefix() -> None:
    """Every command carries `export PATH=...; ` (the host file's `path`); a message about
    it shows what the operator's command was."""
    from jobsafe_ops.remote import _short

    assert _short('export PATH="$HOME"/.local/bin:\'/opt/my tools\':"$PATH"; uv pip install x') \
        == "uv pip install x"
    assert _short("uv pip install x") == "uv pip install x"
