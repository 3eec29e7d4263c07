"""What `ssh <alias>` would use: a host's options resolved by OpenSSH itself (`ssh -G`),
mapped onto paramiko/Fabric, and known_hosts read the way OpenSSH reads it.

* `resolve(alias, config)` runs `ssh -G [-F config] alias` when `ssh` is installed (so
  Include, Match, Host patterns and defaults are OpenSSH's own), else falls back to
  paramiko's SSHConfig parser; `Resolved.resolver` says which.
* `connect_kwargs(r)` -> paramiko `connect()` arguments: the existing IdentityFiles,
  IdentitiesOnly, IdentityAgent (`none` disables the agent; a socket path is used instead
  of $SSH_AUTH_SOCK, see `agent_at`), CertificateFile (loaded onto its matching key).
* `KnownHosts` parses known_hosts files line by line: plain, hashed and `[host]:port`
  entries go to paramiko's HostKeys; `@revoked` and `@cert-authority` lines are kept
  apart (paramiko's own loader crashes on them), unparsable lines are skipped as ssh does.
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import hmac
import os
import re
import shutil
import socket
import struct
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError

SSH_G = "ssh -G"
PARAMIKO = "paramiko"
DEFAULT_GLOBAL_KNOWN_HOSTS = ("/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2")
DEFAULT_USER_KNOWN_HOSTS = ("~/.ssh/known_hosts", "~/.ssh/known_hosts2")
# ssh -G lists these even when no IdentityFile is configured (OpenSSH's defaults)
DEFAULT_IDENTITIES = tuple(f"~/.ssh/id_{t}" for t in
                           ("rsa", "ecdsa", "ecdsa_sk", "ed25519", "ed25519_sk", "xmss",
                            "dsa"))
MULTI = ("identityfile", "certificatefile")  # repeated keys: every value, in order


@dataclass(frozen=True)
class Resolved:
    """A host's options as `ssh` would use them (paths expanded)."""

    alias: str
    hostname: str
    port: int
    user: str
    resolver: str  # SSH_G | PARAMIKO
    identity_files: tuple[str, ...] = ()
    certificate_files: tuple[str, ...] = ()
    identity_agent: str | None = None  # None: $SSH_AUTH_SOCK; "none": no agent; a path
    identities_only: bool = False
    proxy_jump: str | None = None
    user_known_hosts: tuple[str, ...] = DEFAULT_USER_KNOWN_HOSTS
    global_known_hosts: tuple[str, ...] = DEFAULT_GLOBAL_KNOWN_HOSTS
    connect_timeout: int | None = None

    @property
    def missing_identities(self) -> list[str]:
        """IdentityFiles the config names (not OpenSSH's defaults) that do not exist."""
        defaults = {os.path.expanduser(p) for p in DEFAULT_IDENTITIES}
        return [p for p in self.identity_files
                if p not in defaults and not os.path.exists(p)]


def resolver_name() -> str:
    return SSH_G if shutil.which("ssh") else PARAMIKO


def split_target(target: str) -> tuple[str | None, str, int | None]:
    """`[user@]host[:port]` (an inventory `ssh` value or a ProxyJump hop) -> parts."""
    target = target.removeprefix("ssh://")
    user, _, rest = target.rpartition("@")
    host, port = rest, None
    if rest.startswith("["):
        inner, _, tail = rest[1:].partition("]")
        host = inner
        if tail.startswith(":") and tail[1:].isdigit():
            port = int(tail[1:])
    elif rest.count(":") == 1:
        h, _, p = rest.partition(":")
        if p.isdigit():
            host, port = h, int(p)
    return user or None, host, port


def parse_ssh_g(text: str) -> dict[str, list[str]]:
    """`ssh -G` output (one lowercase `key value` per line) -> key -> values in order."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        key, _, value = line.strip().partition(" ")
        if key:
            out.setdefault(key.lower(), []).append(value.strip())
    return out


def expand(path: str, *, hostname: str, user: str, port: int, alias: str) -> str:
    """~ and the ssh_config tokens of IdentityFile/CertificateFile/UserKnownHostsFile
    (`ssh -G` prints those unexpanded): %d %u %h %r %p %n %l %L %i %%."""
    home = os.path.expanduser("~")
    local = socket.gethostname()
    tokens = {"d": home, "u": getpass.getuser(), "h": hostname, "r": user, "p": str(port),
              "n": alias, "l": local, "L": local.split(".")[0], "i": str(os.getuid()),
              "%": "%"}
    out, i = [], 0
    while i < len(path):
        if path[i] == "%" and i + 1 < len(path) and path[i + 1] in tokens:
            out.append(tokens[path[i + 1]])
            i += 2
        else:
            out.append(path[i])
            i += 1
    return os.path.expanduser("".join(out))


def _agent(value: str | None) -> str | None:
    """IdentityAgent -> None (use $SSH_AUTH_SOCK), "none", or a socket path."""
    if not value or value == "SSH_AUTH_SOCK":
        return None
    if value.lower() == "none":
        return "none"
    if value.startswith("$"):
        return os.environ.get(value[1:].strip("{}")) or "none"
    return os.path.expanduser(value)


def from_options(alias: str, opts: dict[str, list[str]], resolver: str) -> Resolved:
    """The options of one host (ssh -G's keys, or paramiko's lookup as lists)."""
    def one(key: str) -> str | None:
        values = opts.get(key)
        return values[0] if values else None

    hostname = one("hostname") or alias
    user = one("user") or getpass.getuser()
    port = int(one("port") or 22)

    def exp(p: str) -> str:
        return expand(p, hostname=hostname, user=user, port=port, alias=alias)

    def files(key: str, default: Sequence[str]) -> tuple[str, ...]:
        values = opts.get(key)
        parts = [p for v in values for p in v.split()] if values else list(default)
        return tuple(exp(p) for p in parts if p.lower() != "none")

    jump = one("proxyjump")
    timeout = one("connecttimeout")
    return Resolved(
        alias=alias, hostname=hostname, port=port, user=user, resolver=resolver,
        identity_files=tuple(exp(p) for p in opts.get("identityfile", [])
                             if p.lower() != "none"),
        certificate_files=tuple(exp(p) for p in opts.get("certificatefile", [])
                                if p.lower() != "none"),
        identity_agent=_agent(one("identityagent")),
        identities_only=(one("identitiesonly") or "no").lower() == "yes",
        proxy_jump=None if not jump or jump.lower() == "none" else jump,
        user_known_hosts=files("userknownhostsfile", DEFAULT_USER_KNOWN_HOSTS),
        global_known_hosts=files("globalknownhostsfile", DEFAULT_GLOBAL_KNOWN_HOSTS),
        connect_timeout=int(timeout) if timeout and timeout.isdigit() else None,
    )


def resolve(target: str, config: str | None) -> Resolved:
    """A host's options as `ssh target` (with `-F config`) would use them."""
    user, host, port = split_target(target)
    if resolver_name() == SSH_G:
        argv = ["ssh", "-G"]
        if config:
            argv += ["-F", config]
        if user:
            argv += ["-l", user]
        if port:
            argv += ["-p", str(port)]
        argv += ["--", host]
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=30,
                                  stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ConfigError(f"`ssh -G {host}` failed: {exc}") from None
        if proc.returncode != 0:
            lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
            detail = lines[0] if lines else f"exit {proc.returncode}"
            raise ConfigError(f"ssh_config{f' {config}' if config else ''} rejected by "
                              f"`ssh -G {host}`: {detail}; fix that line (check with "
                              f"`ssh -G{f' -F {config}' if config else ''} {host}`)")
        return from_options(target, parse_ssh_g(proc.stdout), SSH_G)
    return _paramiko_resolve(target, user, host, port, config)


def _paramiko_resolve(target: str, user: str | None, host: str, port: int | None,
                      config: str | None) -> Resolved:
    import paramiko

    path = config or os.path.expanduser("~/.ssh/config")
    try:
        cfg = paramiko.SSHConfig.from_path(path) if os.path.exists(path) else None
    except (OSError, paramiko.SSHException, ValueError) as exc:
        raise ConfigError(f"cannot read ssh_config {path}: {exc}") from None
    looked = dict(cfg.lookup(host)) if cfg else {"hostname": host}
    opts = {k: (v if isinstance(v, list) else [str(v)]) for k, v in looked.items()}
    if user:
        opts["user"] = [user]
    if port:
        opts["port"] = [str(port)]
    return from_options(target, opts, PARAMIKO)


# ---- paramiko connect() arguments -------------------------------------------------------

def _fields_after(blob: bytes, skip: int) -> bytes:
    """The bytes of an SSH wire blob after its first `skip` strings."""
    offset = 0
    for _ in range(skip):
        (n,) = struct.unpack(">I", blob[offset:offset + 4])
        offset += 4 + n
    return blob[offset:]


def cert_matches(key: Any, cert_blob: bytes) -> bool:
    """An OpenSSH certificate certifies `key`: after (type, nonce) its blob carries the
    same public fields as the key's own blob after (type)."""
    fields = _fields_after(key.asbytes(), 1)
    return _fields_after(cert_blob, 2)[: len(fields)] == fields


def load_key(path: str) -> Any:
    """A private key without passphrase (raises paramiko.PasswordRequiredException)."""
    import paramiko

    try:
        return paramiko.PKey.from_path(path)
    except TypeError as exc:  # cryptography: "Key is password-protected, but ..."
        if "password" not in str(exc).lower():
            raise ValueError(str(exc)) from None
        raise paramiko.PasswordRequiredException(str(exc)) from None


def certified_key(r: Resolved) -> Any | None:
    """The first (unencrypted) IdentityFile a CertificateFile certifies, with that
    certificate loaded (paramiko's `pkey`); None without a CertificateFile or a match."""
    import paramiko

    for cert in r.certificate_files:
        if not os.path.isfile(cert):
            continue
        try:
            blob = paramiko.PublicBlob.from_file(cert)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{r.alias}: CertificateFile {cert} is not an OpenSSH "
                              f"certificate ({exc}); regenerate it with ssh-keygen -s") from None
        for path in r.identity_files:
            if not os.path.isfile(path):
                continue
            try:
                key = load_key(path)
            except (paramiko.SSHException, OSError, ValueError):
                continue  # encrypted or unreadable: the agent may still hold it
            if cert_matches(key, blob.key_blob):
                key.load_certificate(cert)
                return key
    return None


def connect_kwargs(r: Resolved) -> dict[str, Any]:
    """paramiko `SSHClient.connect` arguments for a resolved host (Fabric passes them)."""
    kwargs: dict[str, Any] = {
        "key_filename": [p for p in r.identity_files if os.path.isfile(p)],
        # IdentitiesOnly: only the configured files (and the agent, tried after them)
        "look_for_keys": not r.identities_only and not r.identity_files,
        "allow_agent": r.identity_agent != "none",
    }
    pkey = certified_key(r)
    if pkey is not None:
        kwargs["pkey"] = pkey
    return kwargs


def agent_at(path: str) -> Any:
    """A paramiko agent client on the socket `path` (IdentityAgent): SSHClient uses an
    agent object it already has (`client._agent`) instead of reading $SSH_AUTH_SOCK, which
    is process-wide and so not settable per host. An unreachable socket gives no keys, as
    ssh (which warns and goes on)."""
    from paramiko.agent import Agent, AgentSSH

    class PathAgent(Agent):  # type: ignore[misc]  # paramiko: untyped
        def __init__(self) -> None:
            AgentSSH.__init__(self)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(path)
            except OSError:
                sock.close()
                return
            self._connect(sock)

    return PathAgent()


def encrypted_identities(paths: Iterable[str]) -> list[str]:
    """The key files among `paths` that need a passphrase."""
    import paramiko

    out = []
    for p in paths:
        try:
            load_key(p)
        except paramiko.PasswordRequiredException:
            out.append(p)
        except (paramiko.SSHException, OSError, ValueError):
            pass
    return out


# ---- known_hosts ------------------------------------------------------------------------

@dataclass(frozen=True)
class Marked:
    """A `@revoked` or `@cert-authority` line: where, its host patterns, its key blob."""

    where: str  # file:line
    patterns: tuple[str, ...]
    key_type: str
    blob: bytes


def _glob(pattern: str) -> re.Pattern[str]:
    """An OpenSSH pattern: `*` and `?` are wildcards, everything else (`[`, `]`) literal."""
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c)
                              for c in pattern.lower()))


def host_matches(patterns: Iterable[str], name: str) -> bool:
    """OpenSSH host pattern list (`*`, `?`, `!neg`, hashed `|1|salt|hash`) vs `name`
    (`host` or `[host]:port`, as known_hosts stores it)."""
    hit = False
    for pat in patterns:
        negated = pat.startswith("!")
        pat = pat[1:] if negated else pat
        if pat.startswith("|1|"):
            try:
                _, _, salt, digest = pat.split("|", 3)
                mac = hmac.new(base64.b64decode(salt), name.encode(), hashlib.sha1).digest()
                ok = hmac.compare_digest(mac, base64.b64decode(digest))
            except (ValueError, TypeError):
                ok = False
        else:
            ok = _glob(pat).fullmatch(name.lower()) is not None
        if ok and negated:
            return False
        hit = hit or ok
    return hit


@dataclass
class KnownHosts:
    """Every known_hosts line of some files, split the way OpenSSH reads them."""

    entries: list[tuple[str, str, Any]] = field(default_factory=list)  # (name, type, key)
    revoked: list[Marked] = field(default_factory=list)
    authorities: list[Marked] = field(default_factory=list)

    def read(self, path: Path) -> None:
        from paramiko.hostkeys import HostKeyEntry, InvalidHostKey
        from paramiko.ssh_exception import SSHException

        text = path.read_text(errors="replace")
        for lineno, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("@"):
                marker, _, rest = line.partition(" ")
                fields = rest.split()
                if len(fields) < 3:
                    continue
                try:
                    blob = base64.b64decode(fields[2], validate=True)
                except ValueError:
                    continue
                mark = Marked(f"{path}:{lineno}", tuple(fields[0].split(",")), fields[1], blob)
                if marker == "@revoked":
                    self.revoked.append(mark)
                elif marker == "@cert-authority":
                    self.authorities.append(mark)
                continue
            try:
                entry = HostKeyEntry.from_line(line, lineno)
            except (InvalidHostKey, SSHException, ValueError, TypeError):
                continue  # ssh skips a line it cannot parse; so do we
            if entry is not None:
                for name in entry.hostnames:
                    self.entries.append((name, entry.key.get_name(), entry.key))

    def fill(self, host_keys: Any) -> None:
        """Into paramiko's HostKeys (`client.get_host_keys()`)."""
        for name, key_type, key in self.entries:
            host_keys.add(name, key_type, key)

    def revoked_line(self, name: str, key: Any) -> str | None:
        """file:line of a `@revoked` entry for this key (and host), else None."""
        blob = key.asbytes()
        for mark in self.revoked:
            if mark.blob == blob and host_matches(mark.patterns, name):
                return mark.where
        return None

    def authority_line(self, name: str) -> str | None:
        for mark in self.authorities:
            if host_matches(mark.patterns, name):
                return mark.where
        return None


def known_hosts_name(hostname: str, port: int) -> str:
    return hostname if port == 22 else f"[{hostname}]:{port}"


def transport_factory(known: KnownHosts, name: str, hostname: str, port: int) -> Any:
    """paramiko's Transport, refusing a `@revoked` host key (with the file:line) before
    any key check or authentication: SSHClient.connect reads the key through
    `get_remote_server_key` right after the handshake."""
    from paramiko import Transport

    from .errors import HostKeyError

    entry = known_hosts_name(hostname, port)

    class Checked(Transport):  # type: ignore[misc]  # paramiko: untyped
        def get_remote_server_key(self) -> Any:
            key = super().get_remote_server_key()
            where = known.revoked_line(entry, key)
            if where is not None:
                self.close()
                raise HostKeyError(
                    f"{name}: host key of {entry} ({key.get_name()} {fingerprint(key)}) is "
                    f"marked @revoked in {where}; refusing to connect. If the host has a "
                    "new key, verify it out of band and replace the revoked line")
            return key

    return Checked


def fingerprint(key: Any) -> str:
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")
