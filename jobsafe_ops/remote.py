"""The one module that does remote I/O: strict-host-key Fabric connections and a local
transport for a host that is this machine. Transport only: the command lines it sends are
composed in shell.py (quoting, program paths, lean env lines), its errors live in errors.py.

Fabric hard-codes an auto-adding host key policy and never loads known_hosts (fabric#1804,
#2071): we load the user's known_hosts, the inventory's known_hosts, ssh_config's
UserKnownHostsFile and the global files, and refuse unknown, changed or @revoked keys with
the offered fingerprint. A host's options are what `ssh <alias>` would use (sshconf).
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import hashlib
import logging
import os
import re
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tenacity import (
    RetryCallState,
    retry,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from . import mirror, sshconf
from .errors import (
    ConfigError,
    ConnectionDropped,
    HostKeyError,
    RemoteError,
    TransientConnectError,
    UploadRefused,
)
from .flags import env_number
from .inventory import Host
from .shell import path_prefix, shell_line, verify_and_rename

# paramiko's transport thread logs a traceback for every failed handshake through the
# logging module's last-resort handler (stderr): the operator gets our one line instead.
logging.getLogger("paramiko").addHandler(logging.NullHandler())


def _env_setting(name: str, default: float, cast: Callable[[str], float] = float,
                 minimum: float = 0.0) -> tuple[float, ConfigError | None]:
    """Read at import (the retry policy is built from it), refused at connect(): a bad
    value is one line with exit 2 from inside the command, never an import traceback."""
    try:
        return env_number(name, default, cast, minimum=minimum), None
    except ConfigError as exc:
        return default, exc


CONNECT_TIMEOUT, _TIMEOUT_ERROR = _env_setting("JOBSAFE_CONNECT_TIMEOUT", 10.0)
_ATTEMPTS, _ATTEMPTS_ERROR = _env_setting("JOBSAFE_CONNECT_ATTEMPTS", 3, int, minimum=1)
CONNECT_ATTEMPTS = int(_ATTEMPTS)


def _argv_of(command: str | Sequence[str], argv: Sequence[str] | None) -> tuple[str, ...] | None:
    if argv is not None:
        return tuple(argv)
    return None if isinstance(command, str) else tuple(command)


@dataclass(frozen=True)
class Result:
    command: str
    stdout: str
    stderr: str
    exited: int

    @property
    def ok(self) -> bool:
        return self.exited == 0



class Remote:
    """A transport bound to one host; counts connections and round trips (for bench/).

    `run(..., readonly=True)` marks a command that only reads and is safe to send again
    (the polls of deploy's --on-running wait and monitor): if the connection is found dead,
    or dies under it, it is reopened within the connect-retry policy, the command is sent
    once more, and `reconnects` says so (the deploy report shows it). Every other command
    counts as mutating (the fail-safe default): a dead connection ends the run with exit 4,
    never silently reopened."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.connections_opened = 0
        self.round_trips = 0
        self.reconnects: list[str] = []  # one note per reopened connection
        self.ssh_resolver: str | None = None  # "ssh -G" | "paramiko" (sshconf); None: local

    def run(self, command: str | Sequence[str], *, check: bool = True,
            timeout: float | None = None, stdin: str | None = None,
            readonly: bool = False, argv: Sequence[str] | None = None) -> Result:
        """`argv`: for a shell line that wraps one program call (an `env -i ... pueue add`
        line), that call's argv; an argv command is its own. The transports send the line;
        the hook receives both (testing.fake_remote answers by argv)."""
        text = shell_line(command)
        self.round_trips += 1
        wired = path_prefix(self.host) + mirror.pending_line(self.host.name) + text
        return self._checked(text, self._run(wired, argv=_argv_of(command, argv),
                                             timeout=timeout, stdin=stdin), check)

    def stream(self, command: str | Sequence[str], on_line: Callable[[str], None], *,
               check: bool = True, timeout: float | None = None,
               argv: Sequence[str] | None = None) -> Result:
        """Like `run`, but hands each stdout line to `on_line` as it arrives (the feeder's
        progress lines drive a progress bar while it runs on the host)."""
        text = shell_line(command)
        self.round_trips += 1
        wired = path_prefix(self.host) + mirror.pending_line(self.host.name) + text
        return self._checked(text, self._stream(wired, on_line, argv=_argv_of(command, argv),
                                                timeout=timeout), check)

    def reopen_if_dropped(self, purpose: str) -> str | None:
        """Reopen a dead connection on purpose for one idempotent clean-up of our own
        (deploy's lock release, which removes only a lock whose owner file is ours); the
        note is returned and kept in `reconnects`. No-op while the connection is alive."""
        return None

    def _checked(self, text: str, result: Result, check: bool) -> Result:
        if result.exited < 0:
            # No exit status: the session was killed or the connection dropped mid-command
            # (paramiko reports -1, subprocess -signal). Its output is cut short, so it is
            # never an answer, not even for check=False callers that read non-zero exits.
            raise ConnectionDropped(f"{self.host.name}: `{_short(text)}` died without an "
                                    "exit status (connection dropped or the session was "
                                    "killed); rerun the same command once the host is back "
                                    "(it converges)")
        if result.exited == 127:  # the shell (or env) found no such program
            from .facts.programs import looked_up, missing_program, not_found

            name = missing_program(result.stderr)
            if name and looked_up(name):
                raise RemoteError(not_found(self.host, name, f"`{_short(text, 40)}`"))
        if check and not result.ok:
            first = (result.stderr.strip() or result.stdout.strip()).splitlines()
            detail = first[0] if first else f"exit {result.exited}"
            # A remote command's own exit status never leaks out as ours (RemoteError: exit 4).
            raise RemoteError(f"{self.host.name}: `{_short(text)}` failed: {detail}")
        return result

    def _stream(self, text: str, on_line: Callable[[str], None], *,
                argv: tuple[str, ...] | None, timeout: float | None) -> Result:
        result = self._run(text, argv=argv, timeout=timeout, stdin=None)
        for line in result.stdout.splitlines():
            on_line(line)
        return result

    def put_text(self, text: str, remote_path: str, mode: int = 0o644) -> None:
        """Write a file on the host atomically: upload to a temp name, check its size and
        sha256 on the host, then rename. A refused or torn upload (read-only or full disk,
        dropped connection) never takes the final name; its temp file is removed."""
        tmp = f"{remote_path}.tmp.{os.getpid()}"
        data = text.encode()
        try:
            self._put_text(text, tmp, mode)
        except (RemoteError, UploadRefused) as exc:
            with suppress(RemoteError):  # the connection may be gone too
                self.run(["rm", "-f", tmp], check=False)
            if isinstance(exc, UploadRefused):
                raise RemoteError(f"{self.host.name}: cannot upload {remote_path}: {exc}; "
                                  "check free space and permissions of that directory on "
                                  "the host") from None
            raise
        result = self.run(verify_and_rename(tmp, remote_path, len(data),
                                            hashlib.sha256(data).hexdigest()), check=False)
        if not result.ok:
            detail = (result.stderr.strip() or result.stdout.strip()
                      or f"exit {result.exited}").splitlines()[-1]
            raise RemoteError(f"{self.host.name}: upload of {remote_path} refused: {detail}")

    def _run(self, text: str, *, argv: tuple[str, ...] | None, timeout: float | None,
             stdin: str | None) -> Result:
        raise NotImplementedError

    def _put_text(self, text: str, path: str, mode: int) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


_PATH_PREFIX = re.compile(r'^export PATH=[^;]*:"\$PATH"; ')


def _short(text: str, limit: int = 80) -> str:
    """A command for a message: one line, at most `limit` characters, without the
    `path_prefix` every command carries (the operator never typed it)."""
    text = " ".join(_PATH_PREFIX.sub("", text, count=1).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class LocalRemote(Remote):
    """A host that is this machine (`ssh = "local"`): same interface, no SSH."""

    def __init__(self, host: Host) -> None:
        super().__init__(host)
        self.connections_opened = 0

    def _run(self, text: str, *, argv: tuple[str, ...] | None, timeout: float | None,
             stdin: str | None) -> Result:
        try:
            proc = subprocess.run(
                ["sh", "-c", text], capture_output=True, text=True, timeout=timeout,
                input=stdin if stdin is not None else "",
            )
        except subprocess.TimeoutExpired:
            raise RemoteError(f"{self.host.name}: `{_short(text)}` timed out") from None
        return Result(text, proc.stdout, proc.stderr, proc.returncode)

    def _stream(self, text: str, on_line: Callable[[str], None], *,
                argv: tuple[str, ...] | None, timeout: float | None) -> Result:
        proc = subprocess.Popen(["sh", "-c", text], stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stderr is not None
        stderr = proc.stderr
        err: list[str] = []
        reader = threading.Thread(target=lambda: err.append(stderr.read()), daemon=True)
        reader.start()
        out: list[str] = []
        for line in proc.stdout:
            out.append(line)
            on_line(line.rstrip("\n"))
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise RemoteError(f"{self.host.name}: `{_short(text)}` timed out") from None
        reader.join()
        return Result(text, "".join(out), "".join(err), proc.returncode)

    def _put_text(self, text: str, path: str, mode: int) -> None:
        p = Path(os.path.expanduser(path))
        try:
            p.write_text(text)
            p.chmod(mode)
        except OSError as exc:
            raise UploadRefused.of(exc) from None


class SSHRemote(Remote):
    """Fabric's Connection reopens itself on `run`/`sftp` whenever its transport is gone
    (fabric.connection's `@opens` calls `open()`, a no-op only while `is_connected`): a
    killed session was silently replaced by a new one mid-deploy. Here the connection is
    reopened only explicitly, for a read-only command (see Remote); `_connection_class`
    refuses any other reopening."""

    def __init__(self, host: Host, connection: Any) -> None:
        super().__init__(host)
        self.conn = connection

    def run(self, command: str | Sequence[str], *, check: bool = True,
            timeout: float | None = None, stdin: str | None = None,
            readonly: bool = False, argv: Sequence[str] | None = None) -> Result:
        if not readonly:
            return super().run(command, check=check, timeout=timeout, stdin=stdin, argv=argv)
        text = shell_line(command)
        if not self.conn.is_connected:
            self._reopen(f"before `{_short(text)}`")
        try:
            return super().run(command, check=check, timeout=timeout, stdin=stdin, argv=argv)
        except ConnectionDropped:
            self._reopen(f"while `{_short(text)}` ran")
        return super().run(command, check=check, timeout=timeout, stdin=stdin, argv=argv)

    def reopen_if_dropped(self, purpose: str) -> str | None:
        if self.conn.is_connected:
            return None
        self._reopen("between commands", f"reopened {purpose}")
        return self.reconnects[-1]

    def _reopen(self, when: str, what: str = "reopened for that read-only poll "
                "(nothing was changed over the lost connection)") -> None:
        """A new connection (host keys still checked), within the connect-retry policy."""
        with suppress(*_connection_lost()):
            self.conn.close()
        self.conn._sftp = None  # an SFTP client of the dead transport is never reused
        self.conn.allow_reopen = True
        started = time.monotonic()
        try:
            _open(self.conn, self.host.name)
        except TransientConnectError as exc:
            raise RemoteError(
                f"{self.host.name}: the connection dropped {when} and the host is "
                f"unreachable after {CONNECT_ATTEMPTS} attempts in "
                f"{time.monotonic() - started:.1f}s: {exc}") from None
        finally:
            self.conn.allow_reopen = False
        self.connections_opened += 1
        self.reconnects.append(f"connection dropped {when}; {what}")

    def _alive(self, text: str) -> None:
        """Before a mutating command: a dead connection is the end of this host's run."""
        if not self.conn.is_connected:
            raise ConnectionDropped(
                f"{self.host.name}: connection lost before `{_short(text)}`; not reopened "
                "for a command that changes the host; rerun the same command once the "
                "host is back (it converges)")

    def _run(self, text: str, *, argv: tuple[str, ...] | None, timeout: float | None,
             stdin: str | None) -> Result:
        import io

        from invoke.exceptions import CommandTimedOut

        self._alive(text)
        try:
            r = self.conn.run(
                text, hide=True, warn=True, timeout=timeout,
                in_stream=io.StringIO(stdin) if stdin is not None else False,
            )
        except CommandTimedOut:
            raise RemoteError(f"{self.host.name}: `{_short(text)}` timed out") from None
        except _connection_lost() as exc:
            raise self._lost(exc) from None
        return Result(text, r.stdout, r.stderr, r.exited)

    def _stream(self, text: str, on_line: Callable[[str], None], *,
                argv: tuple[str, ...] | None, timeout: float | None) -> Result:
        from invoke.exceptions import CommandTimedOut

        sink = _LineSink(on_line)
        self._alive(text)
        try:
            r = self.conn.run(text, hide=False, warn=True, timeout=timeout, in_stream=False,
                              out_stream=sink, err_stream=_LineSink(lambda _line: None))
        except CommandTimedOut:
            raise RemoteError(f"{self.host.name}: `{_short(text)}` timed out") from None
        except _connection_lost() as exc:
            raise self._lost(exc) from None
        sink.close()
        return Result(text, r.stdout, r.stderr, r.exited)

    def _put_text(self, text: str, path: str, mode: int) -> None:
        # SFTP does not expand ~ (fabric/transfer.py): relative paths are from $HOME.
        rel = path[2:] if path.startswith("~/") else path
        self._alive(f"upload {path}")
        try:
            sftp = self.conn.sftp()
        except _connection_lost() as exc:
            raise self._lost(exc) from None
        try:
            with sftp.open(rel, "w") as fh:
                fh.set_pipelined(True)
                fh.write(text.encode())
            sftp.chmod(rel, mode)
        except _connection_lost() as exc:
            if not self.conn.is_connected:
                raise self._lost(exc) from None
            raise UploadRefused.of(exc) from None

    def _lost(self, exc: BaseException) -> RemoteError:
        detail = str(exc) or type(exc).__name__
        return ConnectionDropped(f"{self.host.name}: connection lost ({detail}); "
                                 "rerun the same command once the host is back (it converges)")

    def close(self) -> None:
        try:
            self.conn.close()
        except _connection_lost():  # closing a connection the host already dropped
            pass


@functools.cache
def _connection_lost() -> tuple[type[BaseException], ...]:
    """A dropped connection surfaces as a socket error, an EOF, or paramiko's "SSH session
    not active" / "Server connection dropped" (SSHException) at the next channel. paramiko
    is imported lazily: planning and --help never pay for it."""
    import paramiko

    return (OSError, EOFError, paramiko.SSHException)


class _LineSink:
    """A write()-able stream that calls `on_line` per complete line (Invoke mirrors remote
    stdout into it while the command runs)."""

    def __init__(self, on_line: Callable[[str], None]) -> None:
        self.on_line = on_line
        self.buffer = ""

    def write(self, data: str) -> int:
        self.buffer += data
        *lines, self.buffer = self.buffer.split("\n")
        for line in lines:
            self.on_line(line)
        return len(data)

    def flush(self) -> None:
        """Invoke flushes after every chunk; a partial line waits for its newline."""

    def close(self) -> None:
        if self.buffer:
            line, self.buffer = self.buffer, ""
            self.on_line(line)


# ---- strict host keys ------------------------------------------------------------------

def _ssh_config_path(inventory: Path | None = None) -> str | None:
    """$JOBSAFE_SSH_CONFIG, else the host's inventory's ssh_config (`inventory`: the
    directory its host file was loaded from)."""
    env = os.environ.get("JOBSAFE_SSH_CONFIG")
    if env:
        return env
    from .inventory import inventory_dir

    candidate = (inventory or inventory_dir()) / "ssh_config"
    return str(candidate) if candidate.exists() else None


def known_hosts_files(ssh_config: dict[str, Any], inventory: Path | None = None) -> list[Path]:
    from .inventory import inventory_dir

    files = [Path("~/.ssh/known_hosts").expanduser(),
             (inventory or inventory_dir()) / "known_hosts"]
    for option in ("userknownhostsfile", "globalknownhostsfile"):  # global: /etc/ssh/...
        extra = ssh_config.get(option)
        for item in (extra if isinstance(extra, list) else [extra] if extra else []):
            for part in str(item).split():
                files.append(Path(os.path.expanduser(part)))
    return [f for f in dict.fromkeys(files) if f.exists()]


def _trust_hint(hostname: str, port: int) -> str:
    target = hostname if port == 22 else f"-p {port} {hostname}"
    return (f"verify the fingerprint out of band, then add the key with "
            f"`ssh-keyscan {target} >> ~/.ssh/known_hosts` (or the inventory's known_hosts)")


def _harden(conn: Any, name: str, inventory: Path | None = None) -> None:
    """RejectPolicy + known_hosts on a Connection and every ProxyJump gateway hop:
    plain/hashed/[host]:port lines trusted, `@revoked` keys refused, `@cert-authority`
    lines never break other hosts (sshconf.KnownHosts). `inventory`: the directory whose
    known_hosts belongs to this host (inventory.host_inventory)."""
    import paramiko

    known = sshconf.KnownHosts()

    class Refuse(paramiko.MissingHostKeyPolicy):  # type: ignore[misc]  # paramiko: untyped
        def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
            ca = known.authority_line(hostname)
            if ca is not None:
                raise HostKeyError(
                    f"{name}: {hostname} is trusted only through @cert-authority "
                    f"({ca}); host certificates are not supported (paramiko), so its own "
                    f"key ({key.get_name()} {sshconf.fingerprint(key)}) must be listed: "
                    + _trust_hint(conn.host, conn.port))
            raise HostKeyError(
                f"{name}: unknown host key for {hostname} "
                f"({key.get_name()} {sshconf.fingerprint(key)}); refusing to connect. "
                + _trust_hint(conn.host, conn.port)
            )

    client = conn.client
    client.set_missing_host_key_policy(Refuse())
    resolved = getattr(conn, "resolved", None)
    options = dict(conn.ssh_config) if resolved is None else {
        "userknownhostsfile": list(resolved.user_known_hosts),
        "globalknownhostsfile": list(resolved.global_known_hosts)}
    for path in known_hosts_files(options, inventory):
        try:
            known.read(path)
        except OSError as exc:
            raise RemoteError(f"cannot read known_hosts {path}: {exc}") from None
    known.fill(client.get_host_keys())
    conn.connect_kwargs["transport_factory"] = sshconf.transport_factory(
        known, name, conn.host, conn.port)
    gateway = getattr(conn, "gateway", None)
    if gateway is not None and gateway is not False and not isinstance(gateway, str):
        _harden(gateway, f"{name} (via ProxyJump {gateway.host})", inventory)


# Network-level failures worth a retry; any other OSError (a missing key file...) is not.
_TRANSIENT_ERRNOS = frozenset({errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED,
                               errno.ETIMEDOUT, errno.EHOSTUNREACH, errno.ENETUNREACH,
                               errno.EHOSTDOWN, errno.ENETDOWN, errno.EPIPE})


def _log_attempt(state: RetryCallState) -> None:
    """Shown to a person at a terminal only: cron and --json callers get the final line
    alone ("unreachable ... after N attempts"), stderr stays one line per host."""
    exc = state.outcome.exception() if state.outcome else None
    from rich.markup import escape

    from .console import err_console

    if err_console.is_terminal:
        err_console.print(f"[yellow]connect attempt {state.attempt_number} failed: "
                          f"{escape(str(exc))}; retrying")


@retry(
    retry=retry_if_exception_type(TransientConnectError),
    stop=stop_after_attempt(CONNECT_ATTEMPTS),
    wait=wait_exponential(multiplier=0.5, max=5),
    before_sleep=_log_attempt,
    reraise=True,
)
def _open(conn: Any, name: str) -> None:
    import paramiko
    from paramiko.ssh_exception import NoValidConnectionsError

    try:
        conn.open()
    except HostKeyError:
        raise
    except paramiko.BadHostKeyException as exc:
        raise HostKeyError(
            f"{name}: host key for {exc.hostname} CHANGED: offered {exc.key.get_name()} "
            f"{sshconf.fingerprint(exc.key)}, known_hosts has "
            f"{sshconf.fingerprint(exc.expected_key)}; "
            "refusing (possible man-in-the-middle). If the host was reinstalled, "
            "remove the old line and " + _trust_hint(conn.host, conn.port)
        ) from None
    except paramiko.AuthenticationException as exc:
        raise _auth_failed(conn, name, exc) from None
    except NoValidConnectionsError as exc:
        # paramiko's text is "[Errno None] Unable to connect to port P on H"; say why
        reasons = {os.strerror(e.errno) if getattr(e, "errno", None) else str(e)
                   for e in exc.errors.values()}
        raise TransientConnectError(", ".join(sorted(reasons)) or str(exc)) from None
    except (ConnectionRefusedError, ConnectionResetError, TimeoutError) as exc:
        raise TransientConnectError(str(exc) or type(exc).__name__) from None
    except paramiko.SSHException as exc:
        if "No authentication methods available" in str(exc):  # no key, no agent key
            raise _auth_failed(conn, name, exc) from None
        if "Error reading SSH protocol banner" in str(exc):
            raise TransientConnectError(str(exc)) from None
        raise RemoteError(f"{name}: ssh failed: {exc}") from None
    except socket.gaierror as exc:
        raise RemoteError(f"{name}: cannot resolve {conn.host} ({exc})") from None
    except OSError as exc:
        if exc.errno in _TRANSIENT_ERRNOS or isinstance(exc, (ConnectionError, socket.timeout)):
            raise TransientConnectError(str(exc)) from None
        # e.g. an IdentityFile that does not exist: no retry fixes the laptop's own config
        raise RemoteError(f"{name}: cannot connect as {conn.user}@{conn.host}:{conn.port}: "
                          f"{exc}; check IdentityFile / ssh_config") from None


def _auth_failed(conn: Any, name: str, exc: BaseException) -> RemoteError:
    """One line: an encrypted key no agent holds names the key and `ssh-add` (paramiko
    never prompts; neither does cron); a configured IdentityFile that is missing is named."""
    resolved = getattr(conn, "resolved", None)
    keys = list(getattr(conn, "connect_kwargs", {}).get("key_filename") or [])
    locked = sshconf.encrypted_identities(keys)
    if locked:
        return RemoteError(
            f"{name}: private key {locked[0]} is encrypted and no ssh-agent offered it "
            f"(no passphrase is ever asked); run `ssh-add {locked[0]}` in the agent this "
            "command sees ($SSH_AUTH_SOCK or IdentityAgent), or use a key without a "
            "passphrase for unattended runs")
    missing = resolved.missing_identities if resolved is not None else []
    gone = f"; IdentityFile {missing[0]} does not exist" if missing else ""
    return RemoteError(
        f"{name}: authentication failed as {conn.user}@{conn.host}:{conn.port} ({exc}){gone}; "
        "check IdentityFile / ssh-agent")


def _runner_class() -> Any:
    """Fabric's remote runner without invoke's quadratic capture: `Runner.respond` joins
    the whole output buffer for every 1000-byte chunk, even with no watchers, so a 40 MB
    `pueue status --json` (AP-10 sizes) took many minutes. We use no watchers."""
    from fabric.runners import Remote as FabricRunner

    class Runner(FabricRunner):  # type: ignore[misc]
        read_chunk_size = 65536

        def respond(self, buffer_: list[str]) -> None:
            if self.watchers:
                super().respond(buffer_)

    return Runner


@functools.cache
def _connection_class() -> Any:
    """Fabric's Connection that opens once: a later `open()` (Fabric's implicit reopen on
    `run`/`sftp` after the transport died) fails as a dropped connection, unless SSHRemote
    reopens it on purpose (`allow_reopen`, read-only commands only)."""
    import paramiko
    from fabric import Connection

    class Once(Connection):  # type: ignore[misc]  # fabric: untyped
        # class attributes on purpose: invoke's DataProxy turns a set of an attribute the
        # class lacks into a config key
        allow_reopen = False
        opened_once = False
        resolved = None  # sshconf.Resolved: what `ssh <alias>` would use

        def open(self) -> Any:
            if self.is_connected:
                return None
            if self.opened_once and not self.allow_reopen:
                raise paramiko.SSHException("the connection dropped; not reopened")
            agent = self.resolved.identity_agent if self.resolved is not None else None
            if agent not in (None, "none") and self.connect_kwargs.get("allow_agent", True):
                from .sshconf import agent_at

                self.client._agent = agent_at(agent)  # IdentityAgent, not $SSH_AUTH_SOCK
            result = super().open()
            self.opened_once = True
            return result

    return Once


def connection(host: Host) -> Any:
    """The Fabric Connection for a host, not yet opened. Fabric's remote runner defaults to
    `replace_env=True` and `run.env` is empty, and we never pass `env=`: nothing of the
    laptop's environment reaches the host (no `export K=V &&` prefix from inline_ssh_env,
    no SSH env requests). tests/test_env_hygiene.py checks it through SSHRemote."""
    from .inventory import host_inventory

    cfg_path = _ssh_config_path(host_inventory(host))
    return _connection_for(sshconf.resolve(host.ssh, cfg_path), cfg_path)


def _connection_for(resolved: Any, cfg_path: str | None, depth: int = 0) -> Any:
    """A Connection from resolved options (sshconf.resolve: `ssh -G`, else paramiko's
    parser); ProxyJump hops are resolved the same way, first hop first, as ssh does."""
    import paramiko
    from fabric import Config

    gateway: Any = False
    if resolved.proxy_jump and depth < 8:
        for i, hop in enumerate(resolved.proxy_jump.split(",")):
            hop_resolved = sshconf.resolve(hop.strip(), cfg_path)
            if i > 0:  # a later hop goes through the one before it (its own jump ignored)
                hop_resolved = dataclasses.replace(hop_resolved, proxy_jump=None)
            previous = gateway
            gateway = _connection_for(hop_resolved, cfg_path, depth + 1)
            if previous:
                gateway.gateway = previous
    # the options are resolved already: Fabric must not look the host up again
    config = Config(ssh_config=paramiko.SSHConfig())
    config.runners.remote = _runner_class()
    timeout = connect_timeout(resolved.connect_timeout)
    conn = _connection_class()(resolved.hostname, user=resolved.user, port=resolved.port,
                               config=config, connect_timeout=int(timeout), gateway=gateway,
                               connect_kwargs=sshconf.connect_kwargs(resolved))
    conn.resolved = resolved
    return conn


def connect_timeout(ssh_config: float | None = None) -> int:
    """Seconds: $JOBSAFE_CONNECT_TIMEOUT, else the config file's connect_timeout, else
    ssh_config's ConnectTimeout (`ssh_config`), else 10."""
    if "JOBSAFE_CONNECT_TIMEOUT" in os.environ:
        return max(1, int(CONNECT_TIMEOUT))
    from .config import active

    configured = active().settings.connect_timeout
    if configured is None:
        configured = ssh_config
    return max(1, int(configured if configured is not None else CONNECT_TIMEOUT))


def connect(host: Host) -> Remote:
    """One connection per host per command; every step reuses it."""
    for bad in (_TIMEOUT_ERROR, _ATTEMPTS_ERROR):
        if bad is not None:
            raise bad
    if host.is_local:
        return LocalRemote(host)
    conn = connection(host)
    from .inventory import host_inventory

    _harden(conn, host.name, host_inventory(host))
    started = time.monotonic()
    try:
        _open(conn, host.name)
    except TransientConnectError as exc:
        raise RemoteError(
            f"{host.name}: unreachable ({conn.user}@{conn.host}:{conn.port}) after "
            f"{CONNECT_ATTEMPTS} attempts in {time.monotonic() - started:.1f}s: {exc}"
        ) from None
    remote = SSHRemote(host, conn)
    remote.connections_opened = 1
    remote.ssh_resolver = conn.resolved.resolver
    return remote


@contextmanager
def session(host: Host) -> Iterator[Remote]:
    remote = connect(host)
    mirror.opened(host.name)
    try:
        yield remote
    finally:
        try:
            with suppress(Exception):  # never masks the body's own outcome
                line = mirror.pending_line(host.name)  # what is left: one round trip
                if line:
                    remote.run(line + "true", check=False)
        finally:
            mirror.closed(host.name)
            remote.close()
