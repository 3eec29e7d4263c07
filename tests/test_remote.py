"""remote.py without a network: the retry policy and quoting (e2e covers real sshd)."""

from __future__ import annotations

import shlex

import paramiko
import pytest
from paramiko.ssh_exception import NoValidConnectionsError

from jobsafe_ops import remote
from jobsafe_ops.errors import HostKeyError, RemoteError


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
    with pytest.raises(remote.TransientConnectError):
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
    assert remote.fingerprint(key_a) in text and remote.fingerprint(key_b) in text
    assert "CHANGED" in text


@pytest.mark.parametrize("value", ["plain", "a b", "x'y", "$(rm -rf /)", "`id`", "a;b|c&d", ""])
def test_join_round_trips_through_the_shell(value):
    argv = ["/usr/bin/printf", "%s", value]
    assert shlex.split(remote.join(argv)) == argv
