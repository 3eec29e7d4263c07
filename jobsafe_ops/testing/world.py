"""The e2e test world: simulated remote hosts, each a real OpenSSH server on loopback.

Used by ``tests/e2e`` (through ``tests/e2e/conftest.py``, as ``tests.world``), by ``bench/``
scripts and by ``jobsafe demo``, so this module imports nothing from pytest; it ships in the
package (``jobsafe_ops.testing``) so that the demo runs from an installed wheel.

Every simulated host is a separate "machine" although all of them run as the local user:

* ``root/<name>/`` holds the host's ed25519 host key, its ``sshd_config`` and ``sshd.log``;
* ``root/<name>/home`` is the host's HOME: ``~/project`` (a clone of the world's bare
  origin with a ``.venv`` made by uv), the XDG directories and pueue as a real host has
  it: no config until pueued's first start writes ``~/.config/pueue/pueue.yml`` (the
  default file, every path ``null``), so state, socket and pid file live in
  ``~/.local/share/pueue``;
* sshd's ``SetEnv`` sets HOME, PATH and the XDG variables (not XDG_RUNTIME_DIR, not
  PUEUE_CONFIG_PATH) for every session. PATH is the Debian non-login one (``LEAN_PATH``):
  pueue, pueued and uv live in the host's ``~/.local/bin`` only, as their official
  installers put them, and the host files say ``path = ["~/.local/bin"]``
  (``add_host(path=...)`` changes that). sshd always starts a session in the *passwd*
  home directory, so a small ``ForceCommand`` wrapper (``root/login.sh``) changes to
  ``$HOME`` first and then runs the requested command with the login shell, exactly as
  sshd would (SFTP requests are handed to ``sftp-server``, which then starts in ``$HOME``
  too).

``host.run(cmd)`` runs a command locally as a login shell on the host would (the same
environment with ``~/.local/bin`` on PATH), for test setup and inspection without SSH.
``world.inventory`` is what the toolkit reads: ``ssh_config``, ``known_hosts`` and one
``<name>.toml`` per host. ``world.env()`` is the environment for running the toolkit's
CLI as a subprocess on a throwaway "laptop" HOME.

pueue: the stand-in in ``jobsafe_ops/testing/pueue`` unless ``JOBSAFE_REAL_PUEUE=1``, or unless
real ``pueue``/``pueued`` binaries are on PATH (``JOBSAFE_REAL_PUEUE=0`` forces the
stand-in).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FAKE_PUEUE_DIR = Path(__file__).resolve().parent / "pueue"
DEFAULT_INDEX_URL = "https://pypi.org/simple/"
LOOPBACK = "127.0.0.1"

# Variables copied from the local environment into every host's environment when set:
# without the CA bundle uv cannot reach the package index behind a TLS-inspecting proxy.
PASSTHROUGH_ENV = (
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "PIP_CERT",
    "GIT_SSL_CAINFO",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "UV_INDEX_URL",
    "UV_DEFAULT_INDEX",
    "UV_EXTRA_INDEX_URL",
    "UV_NATIVE_TLS",
    "UV_SYSTEM_CERTS",
    "UV_OFFLINE",
    "PIP_INDEX_URL",
    "PIP_EXTRA_INDEX_URL",
    "TZ",
)

# sshd's SetEnv PATH: what a Debian non-login SSH session gets (/etc/profile is not read),
# without ~/.local/bin, where pueue, pueued and uv are placed (as their official installers
# do); the host files say `path = ["~/.local/bin"]` (HOST_PATH), as the README's setup does.
LEAN_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/games"
HOST_PATH: tuple[str, ...] = ("~/.local/bin",)
LOCAL_BIN_PROGRAMS = ("pueue", "pueued", "uv")

DEFAULT_GROUPS: dict[str, dict[str, Any]] = {
    "p1": {"parallel": 2, "min": 1, "max": 4, "job_memory": "1G"},
    "p2": {"parallel": 1, "min": 1, "max": 3, "job_memory": "1G"},
}

SFTP_SERVER_CANDIDATES = (
    "/usr/lib/openssh/sftp-server",  # Debian, Ubuntu
    "/usr/libexec/openssh/sftp-server",  # Fedora, RHEL
    "/usr/lib/ssh/sftp-server",  # Arch
    "/usr/libexec/sftp-server",  # Alpine, BSDs
)

# Runs as sshd's ForceCommand: sshd always starts a session in the passwd home, but each
# simulated host has its own HOME (set by SetEnv). Everything else is what sshd itself does:
# the command goes to the login shell with -c; no command means an interactive shell.
LOGIN_WRAPPER = """#!/bin/sh
# jobsafe e2e world: start every SSH session in the simulated host's $HOME.
cd "$HOME" || exit 1
# opt-in (SimHost.log_sessions): one line per session, outside HOME
[ -f ../sessions.log ] && echo session >>../sessions.log
cmd=$SSH_ORIGINAL_COMMAND
unset SSH_ORIGINAL_COMMAND
case "$cmd" in
  internal-sftp*) exec {sftp_server} ;;
  "") exec "${{SHELL:-/bin/sh}}" -i ;;
esac
exec "${{SHELL:-/bin/sh}}" -c "$cmd"
"""

PROJECT_FILES: dict[str, str] = {
    ".gitignore": ".venv/\n__pycache__/\n*.egg-info/\nbuild/\ndist/\nout/\n",
    "pyproject.toml": """[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "mypkg"
version = "1.0.0"
description = "Toy project deployed by the jobsafe-ops e2e tests"
requires-python = ">=3.9"
dependencies = []
""",
    "src/mypkg/__init__.py": '''"""Toy package deployed to the simulated hosts."""

__version__ = "1.0.0"


def compute(x):
    return x * 2
''',
    "scripts/job.py": '''"""Tiny job: writes out/<name>.json atomically; --fail exits 3."""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import mypkg

parser = argparse.ArgumentParser()
parser.add_argument("--name", required=True)
parser.add_argument("--value", type=int, default=1)
parser.add_argument("--sleep", type=float, default=0.0)
parser.add_argument("--fail", action="store_true")
parser.add_argument("--out", default="out")
args = parser.parse_args()

time.sleep(args.sleep)
if args.fail:
    print(f"{args.name}: failing on purpose", file=sys.stderr)
    sys.exit(3)
out = Path(args.out)
out.mkdir(parents=True, exist_ok=True)
result = {"name": args.name, "value": args.value, "result": mypkg.compute(args.value),
          "version": mypkg.__version__}
tmp = out / f".{args.name}.json.tmp"
tmp.write_text(json.dumps(result))
os.replace(tmp, out / f"{args.name}.json")
print(json.dumps(result))
''',
}


class WorldError(RuntimeError):
    """The test world could not be set up (sshd, pueue, git or uv failed)."""


def find_sshd() -> str | None:
    """Absolute path of the OpenSSH server binary, or None when it is not installed."""
    found = shutil.which("sshd")
    if found:
        return str(Path(found).resolve())
    for candidate in ("/usr/sbin/sshd", "/usr/local/sbin/sshd"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def find_sftp_server() -> str | None:
    for candidate in SFTP_SERVER_CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def _real_pueue_dir() -> Path | None:
    """Directory holding real pueue + pueued on the local PATH (the stand-in excluded)."""
    path = os.pathsep.join(
        p
        for p in os.environ.get("PATH", "").split(os.pathsep)
        if p and Path(p).resolve() != FAKE_PUEUE_DIR and not (Path(p) / STANDIN_MARK).exists()
    )
    pueue, pueued = shutil.which("pueue", path=path), shutil.which("pueued", path=path)
    if not pueue or not pueued:
        return None
    if Path(pueue).parent != Path(pueued).parent:
        return None
    return Path(pueue).parent


STANDIN_MARK = "_pueue_fake.py"  # a directory holding it is the stand-in, never real pueue


def pueue_standin_dir() -> Path:
    """The stand-in's directory, its scripts executable. An installer may drop the mode
    bits of package data (a wheel records them; not every installer restores them, and
    site-packages can be read-only), so then a private executable copy is made once."""
    scripts = [FAKE_PUEUE_DIR / "pueue", FAKE_PUEUE_DIR / "pueued"]
    if all(os.access(s, os.X_OK) for s in scripts):
        return FAKE_PUEUE_DIR
    global _STANDIN_COPY
    if _STANDIN_COPY is None or not (_STANDIN_COPY / "pueued").exists():
        import tempfile

        copy = Path(tempfile.mkdtemp(prefix="jobsafe-pueue-")) / "pueue"
        shutil.copytree(FAKE_PUEUE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
        for s in scripts:
            (copy / s.name).chmod(0o755)
        atexit.register(shutil.rmtree, copy.parent, True)
        _STANDIN_COPY = copy
    return _STANDIN_COPY


_STANDIN_COPY: Path | None = None


def detect_real_pueue() -> Path | None:
    """Where real pueue lives when the world should use it, else None (use the stand-in)."""
    flag = os.environ.get("JOBSAFE_REAL_PUEUE", "").strip()
    if flag == "0":
        return None
    found = _real_pueue_dir()
    if flag == "1" and found is None:
        raise WorldError("JOBSAFE_REAL_PUEUE=1 but pueue/pueued are not on PATH")
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _login_shell() -> str:
    shell = pwd.getpwuid(os.getuid()).pw_shell
    if not shell or not os.access(shell, os.X_OK) or shell.endswith(("nologin", "false")):
        return "/bin/sh"
    return shell


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def find_uv() -> str | None:
    """uv on this machine: next to the test interpreter (the `test` extra installs it
    there), else on PATH."""
    for d in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        if os.access(Path(d) / "uv", os.X_OK):
            return str(Path(d) / "uv")
    return shutil.which("uv")


def _default_uv_cache() -> str | None:
    if os.environ.get("UV_CACHE_DIR"):
        return os.environ["UV_CACHE_DIR"]
    uv = find_uv()
    if uv is None:
        return None
    try:
        out = subprocess.run([uv, "cache", "dir"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie still answers kill(0); it is dead for our purposes
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def _check(result: subprocess.CompletedProcess[str], what: str) -> subprocess.CompletedProcess[str]:
    if result.returncode != 0:
        raise WorldError(
            f"{what} failed (exit {result.returncode}):\n"
            f"stdout: {result.stdout.strip()}\nstderr: {result.stderr.strip()}"
        )
    return result


@dataclass(eq=False)
class SimHost:
    """One simulated remote host: an sshd on 127.0.0.1:port plus its own HOME and pueued."""

    name: str
    dir: Path
    port: int
    env: dict[str, str]
    sshd_bin: str
    memory_cap: bool = False
    editable: bool = True
    # the host file's `path` key; None writes no key (the toolkit's default applies)
    path: tuple[str, ...] | None = HOST_PATH
    pueue_key: str | None = None  # the host file's `pueue` (e.g. "~/.local/bin/pueue")
    # more top-level keys of the host file (e.g. scheduler = "slurm", partition = "debug")
    host_keys: dict[str, Any] = field(default_factory=dict)
    groups: dict[str, dict[str, Any]] = field(default_factory=lambda: dict(DEFAULT_GROUPS))
    # the host key line in the inventory's known_hosts; rotate_host_key leaves it stale
    trusted_key: str = ""
    sshd: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    # -- layout -------------------------------------------------------------------------
    @property
    def home(self) -> Path:
        return self.dir / "home"

    @property
    def host_key(self) -> Path:
        return self.dir / "ssh_host_ed25519_key"

    @property
    def sshd_config(self) -> Path:
        return self.dir / "sshd_config"

    @property
    def sshd_log(self) -> Path:
        return self.dir / "sshd.log"

    @property
    def pueue_config(self) -> Path:
        """Written by pueued itself on its first start (the real default: paths null)."""
        return self.home / ".config" / "pueue" / "pueue.yml"

    @property
    def runtime_dir(self) -> Path:
        return self.pueue_dir  # runtime_directory null, no XDG_RUNTIME_DIR: pueue_directory

    @property
    def pueue_pid_file(self) -> Path:
        return self.runtime_dir / "pueue.pid"

    @property
    def pueue_socket(self) -> Path:
        return self.runtime_dir / f"pueue_{pwd.getpwuid(os.getuid()).pw_name}.socket"

    @property
    def pueue_dir(self) -> Path:
        return self.home / ".local" / "share" / "pueue"

    @property
    def state_file(self) -> Path:
        return self.pueue_dir / "state.json"

    @property
    def project_dir(self) -> Path:
        return self.home / "project"

    @property
    def python(self) -> Path:
        return self.project_dir / ".venv" / "bin" / "python"

    @property
    def local_bin(self) -> Path:
        """~/.local/bin: pueue, pueued and uv live here only (not on the SSH PATH)."""
        return self.home / ".local" / "bin"

    @property
    def login_env(self) -> dict[str, str]:
        """The environment of a login shell on the host: the SSH session's, with
        ~/.local/bin in front of PATH (Debian's ~/.profile adds it when it exists)."""
        return {**self.env, "PATH": f"{self.local_bin}:{self.env['PATH']}"}

    @property
    def session_log(self) -> Path:
        return self.dir / "sessions.log"

    def log_sessions(self) -> None:
        """From now on the login wrapper counts every SSH session (SFTP included)."""
        self.session_log.touch()

    def sessions(self) -> int:
        """SSH sessions opened since `log_sessions` (0 when not logging)."""
        try:
            return len(self.session_log.read_text().splitlines())
        except OSError:
            return 0

    @property
    def host_key_line(self) -> str:
        """The current host key as a known_hosts line: ``[127.0.0.1]:PORT ssh-ed25519 AAAA``."""
        kind, blob = self.host_key.with_suffix(".pub").read_text().split()[:2]
        return f"[{LOOPBACK}]:{self.port} {kind} {blob}"

    # -- local commands in the host's environment ---------------------------------------
    def run(
        self,
        cmd: str,
        *,
        check: bool = False,
        timeout: float = 120,
        input: str | None = None,
        cwd: str | Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a shell command locally as the host's user at a login shell would (its env
        with ~/.local/bin on PATH; cwd = its HOME): test setup and inspection."""
        user = pwd.getpwuid(os.getuid()).pw_name
        # what sshd adds on top of SetEnv
        session = {"USER": user, "LOGNAME": user, "SHELL": _login_shell()}
        result = subprocess.run(
            [_login_shell(), "-c", cmd],
            cwd=str(cwd or self.home),
            env={**session, **self.login_env},
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
        if check:
            _check(result, f"[{self.name}] {cmd}")
        return result

    # -- sshd ----------------------------------------------------------------------------
    @property
    def sshd_running(self) -> bool:
        return self.sshd is not None and self.sshd.poll() is None

    def start_sshd(self, timeout: float = 30.0) -> None:
        """Start sshd on this host's port and wait until it sends its SSH banner."""
        if self.sshd_running:
            return
        if os.geteuid() == 0:
            # sshd run as root refuses to start without its privilege-separation directory
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        with open(self.sshd_log, "ab") as log:
            self.sshd = subprocess.Popen(
                [self.sshd_bin, "-D", "-e", "-f", str(self.sshd_config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._sshd_env(),
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.sshd.poll() is not None:
                raise WorldError(
                    f"sshd for {self.name} exited with {self.sshd.returncode}: "
                    f"{self.sshd_log.read_text(errors='replace').strip()}"
                )
            if self._banner():
                return
            if time.monotonic() > deadline:
                self.stop_sshd()
                raise WorldError(
                    f"sshd for {self.name} not answering on {LOOPBACK}:{self.port} after "
                    f"{timeout}s: {self.sshd_log.read_text(errors='replace').strip()}"
                )
            time.sleep(0.02)

    def _sshd_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "TZ")}
        # lets close() find session processes left behind by this host's sshd
        env["JOBSAFE_WORLD"] = self.env["JOBSAFE_WORLD"]
        return env

    def _banner(self) -> bool:
        try:
            # generous: a busy machine may take a while to fork the session's sshd
            with socket.create_connection((LOOPBACK, self.port), timeout=5.0) as sock:
                return sock.recv(64).startswith(b"SSH-")
        except OSError:
            return False

    def stop_sshd(self, timeout: float = 5.0) -> None:
        """Stop the listening sshd (open sessions end when their clients disconnect)."""
        if self.sshd is None:
            return
        if self.sshd.poll() is None:
            self.sshd.terminate()
            try:
                self.sshd.wait(timeout)
            except subprocess.TimeoutExpired:
                self.sshd.kill()
                self.sshd.wait(timeout)
        self.sshd = None

    # -- pueue ---------------------------------------------------------------------------
    def pueued_pid(self) -> int | None:
        try:
            pid = int(self.pueue_pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _pid_alive(pid) else None

    def start_pueued(self, timeout: float = 30.0) -> None:
        """``pueued -d`` in the host's environment (the first start writes its default
        ``~/.config/pueue/pueue.yml``, like real pueued); returns once it answers."""
        if self.pueued_pid() is not None and self.run("pueue status").returncode == 0:
            return
        # the daemon must not hold our capture pipes open, or run() waits for it to exit
        log = self.dir / "pueued.log"
        _check(
            self.run(f"pueued -d >>{log} 2>&1", timeout=timeout),
            f"[{self.name}] pueued -d (log: {log})",
        )
        deadline = time.monotonic() + timeout
        while True:
            status = self.run("pueue status --json", timeout=timeout)
            if status.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise WorldError(
                    f"pueued on {self.name} not answering after {timeout}s: {status.stderr.strip()}"
                )
            time.sleep(0.05)

    def stop_pueued(self, timeout: float = 10.0) -> None:
        """``pueue shutdown``, then make sure the daemon process is gone."""
        pid = self.pueued_pid()
        if pid is None:
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.run("pueue shutdown", timeout=timeout)
        deadline = time.monotonic() + timeout
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if not _pid_alive(pid):
                break
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            time.sleep(0.5)

    def pueue_status(self) -> dict[str, Any]:
        """``pueue status --json`` run locally on this host, parsed."""
        out = self.run("pueue status --json", check=True)
        data: dict[str, Any] = json.loads(out.stdout)
        return data


class World:
    """A set of simulated hosts sharing one user key, one git origin and one inventory."""

    def __init__(
        self,
        root: Path | str,
        *,
        index_url: str | None = None,
        uv_cache: str | Path | None = None,
    ) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.hosts: dict[str, SimHost] = {}
        self._index_url = index_url
        self._closed = False
        sshd = find_sshd()
        if sshd is None:
            raise WorldError("sshd not found: apt-get install openssh-server")
        self.sshd_bin = sshd
        self.user = pwd.getpwuid(os.getuid()).pw_name
        real = detect_real_pueue()
        self.real_pueue: bool = real is not None
        self.pueue_bin_dir: Path = real if real is not None else pueue_standin_dir()
        self.uv_cache = str(uv_cache) if uv_cache else _default_uv_cache()
        # SFTP must work (Fabric's put); without sftp-server sessions start in the passwd home
        self.sftp_server = find_sftp_server()

        self.key = self.root / "id_ed25519"
        self.authorized_keys = self.root / "authorized_keys"
        self.login_wrapper = self.root / "login.sh"
        self.origin = self.root / "origin.git"
        self.work = self.root / "work"
        self.inventory = self.root / "inventory"
        self.ssh_config = self.inventory / "ssh_config"
        self.known_hosts = self.inventory / "known_hosts"
        self.laptop = self.root / "laptop"
        atexit.register(self.close)

        self._keygen(self.key, comment=f"jobsafe-world@{self.root.name}")
        self.authorized_keys.write_text(self.key.with_suffix(".pub").read_text())
        if self.sftp_server:
            self.login_wrapper.write_text(LOGIN_WRAPPER.format(sftp_server=self.sftp_server))
            self.login_wrapper.chmod(0o755)
        self.inventory.mkdir(exist_ok=True)
        (self.laptop / ".ssh").mkdir(parents=True, exist_ok=True)
        self._init_origin()
        self.write_inventory()

    # -- context manager -----------------------------------------------------------------
    def __enter__(self) -> World:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getitem__(self, name: str) -> SimHost:
        return self.hosts[name]

    def __iter__(self) -> Iterator[SimHost]:
        return iter(list(self.hosts.values()))

    @property
    def pueue_available(self) -> bool:
        """False while the stand-in is not written yet and no real pueue is installed."""
        return all(os.access(self.pueue_bin_dir / b, os.X_OK) for b in ("pueue", "pueued"))

    @property
    def index_url(self) -> str:
        return self._index_url or DEFAULT_INDEX_URL

    @index_url.setter
    def index_url(self, value: str | None) -> None:
        self._index_url = value
        self.write_inventory()

    # -- hosts ---------------------------------------------------------------------------
    def add_host(
        self,
        name: str,
        *,
        memory_cap: bool = False,
        editable: bool = True,
        groups: Mapping[str, Mapping[str, Any]] | None = None,
        pueue: bool = True,
        project: bool = True,
        extra_env: Mapping[str, str] | None = None,
        path: tuple[str, ...] | None = HOST_PATH,
        pueue_key: str | None = None,
        host_keys: Mapping[str, Any] | None = None,
    ) -> SimHost:
        """Create and start host ``name``: sshd, pueued (``pueue``), ~/project (``project``).
        ``extra_env``: more variables of the host's login environment (sshd SetEnv), e.g. a
        secret an operator exported in their shell profile. ``path``: the host file's
        `path` key (None: no key); pueue, pueued and uv are in ~/.local/bin either way.
        ``pueue_key``: the host file's `pueue` key (None: no key). ``host_keys``: more
        top-level keys of the host file (a Slurm login node: ``scheduler = "slurm"``)."""
        if self._closed:
            raise WorldError("this world is closed")
        if name in self.hosts:
            raise WorldError(f"host {name!r} already exists")
        if not name.replace("-", "").replace("_", "").isalnum():
            raise WorldError(f"host name {name!r}: use letters, digits, '-' and '_'")
        hdir = self.root / name
        host = SimHost(
            name=name,
            dir=hdir,
            port=free_port(),
            env={},
            sshd_bin=self.sshd_bin,
            memory_cap=memory_cap,
            editable=editable,
            path=None if path is None else tuple(path),
            pueue_key=pueue_key,
            host_keys=dict(host_keys or {}),
            groups={g: dict(v) for g, v in (groups or DEFAULT_GROUPS).items()},
        )
        if len(str(host.pueue_socket)) > 100:  # sun_path holds 108 bytes
            raise WorldError(f"world root too deep for a unix socket: {host.pueue_socket}")
        self.hosts[name] = host
        for d in (host.home, host.pueue_dir):
            d.mkdir(parents=True, exist_ok=True)
        self._place_programs(host)
        host.env = self._host_env(host, extra_env)
        for key in ("XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME"):
            Path(host.env[key]).mkdir(parents=True, exist_ok=True)
        self._keygen(host.host_key, comment=name)
        host.trusted_key = host.host_key_line
        self._start_sshd_on_free_port(host)
        self.write_inventory()
        if pueue:
            if not self.pueue_available:
                raise WorldError(f"no pueue stand-in at {self.pueue_bin_dir} and no real pueue")
            host.start_pueued()
        if project:
            self.install_project(host)
        return host

    def _start_sshd_on_free_port(self, host: SimHost, attempts: int = 3) -> None:
        for attempt in range(attempts):
            host.sshd_config.write_text(self._sshd_config(host))
            try:
                host.start_sshd()
                return
            except WorldError as exc:
                # another process took the port between free_port() and sshd's bind
                if "Address already in use" not in str(exc) or attempt == attempts - 1:
                    raise
                host.port = free_port()
                host.trusted_key = host.host_key_line

    def _place_programs(self, host: SimHost) -> None:
        """pueue, pueued and uv in ~/.local/bin only, as their official installers put them
        (symlinks: the stand-in finds its module through realpath); python3 and git come
        from the system, as on a Debian host (python3 too when the system has none)."""
        host.local_bin.mkdir(parents=True, exist_ok=True)
        found = {"pueue": self.pueue_bin_dir / "pueue", "pueued": self.pueue_bin_dir / "pueued"}
        uv = find_uv()
        if uv is not None:
            found["uv"] = Path(uv)
        if not shutil.which("python3", path=LEAN_PATH):
            found["python3"] = Path(sys.executable)
        for name, target in found.items():
            link = host.local_bin / name
            if not link.is_symlink() and not link.exists():
                link.symlink_to(target)

    def _host_env(self, host: SimHost, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        home = host.home
        path = LEAN_PATH.split(os.pathsep)  # pueue and uv are in ~/.local/bin, not here
        env = {k: os.environ[k] for k in PASSTHROUGH_ENV if os.environ.get(k)}
        env.update(
            {
                "HOME": str(home),
                "PATH": os.pathsep.join(path),
                "XDG_DATA_HOME": str(home / ".local" / "share"),
                "XDG_CONFIG_HOME": str(home / ".config"),
                "XDG_STATE_HOME": str(home / ".local" / "state"),
                "XDG_CACHE_HOME": str(home / ".cache"),
                "LANG": "C.UTF-8",
                # never fetch a Python build: the index is the only network a host has
                "UV_PYTHON_DOWNLOADS": "never",
                "JOBSAFE_WORLD": str(self.root),
                "JOBSAFE_WORLD_HOST": host.name,
            }
        )
        if self.uv_cache:
            # one cache for every host: the index is fetched once per run, not once per host
            env["UV_CACHE_DIR"] = self.uv_cache
        env.update(extra or {})
        for key, value in env.items():
            if '"' in value or "\n" in value or "\\" in value:
                raise WorldError(f"cannot pass {key}={value!r} through sshd_config SetEnv")
        return env

    def _sshd_config(self, host: SimHost) -> str:
        setenv = " ".join(f'"{k}={v}"' for k, v in host.env.items())
        lines = [
            f"ListenAddress {LOOPBACK}:{host.port}",
            f"PidFile {host.dir / 'sshd.pid'}",
            f"HostKey {host.host_key}",
            f"AuthorizedKeysFile {self.authorized_keys}",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PubkeyAuthentication yes",
            "PermitRootLogin prohibit-password",
            "StrictModes no",
            "UsePAM no",
            "PrintMotd no",
            "PrintLastLog no",
            "X11Forwarding no",
            # fan-out tests open many sessions at once; the default 10:30:100 drops some
            "MaxStartups 100",
            "MaxSessions 100",
            "Subsystem sftp internal-sftp",
            "LogLevel ERROR",
            f"SetEnv {setenv}",
        ]
        if self.sftp_server:
            lines.append(f"ForceCommand {self.login_wrapper}")
        return "\n".join(lines) + "\n"

    def rotate_host_key(self, name: str) -> None:
        """New host key for ``name``, sshd restarted on the same port; known_hosts untouched."""
        host = self.hosts[name]
        host.stop_sshd()
        self._keygen(host.host_key, comment=name)
        host.start_sshd()

    def trust_host_key(self, name: str) -> None:
        """Write ``name``'s current host key into the inventory's known_hosts."""
        self.hosts[name].trusted_key = self.hosts[name].host_key_line
        self.write_inventory()

    # -- inventory -----------------------------------------------------------------------
    def write_inventory(self) -> None:
        """(Re)write ssh_config, known_hosts and one <name>.toml per host."""
        blocks, known = [], []
        for host in self.hosts.values():
            blocks.append(
                f"Host {host.name}\n"
                f"    HostName {LOOPBACK}\n"
                f"    Port {host.port}\n"
                f"    User {self.user}\n"
                f"    IdentityFile {self.key}\n"
                "    IdentitiesOnly yes\n"
                f"    UserKnownHostsFile {self.known_hosts}\n"
                "    StrictHostKeyChecking yes\n"
                "    BatchMode yes\n"
            )
            known.append(host.trusted_key)
            (self.inventory / f"{host.name}.toml").write_text(self._host_toml(host))
        self.ssh_config.write_text("\n".join(blocks))
        self.known_hosts.write_text("".join(line + "\n" for line in known))

    def _host_toml(self, host: SimHost) -> str:
        lines = [
            f"ssh = {_toml_value(host.name)}",
            'project_dir = "~/project"',
            'python = ".venv/bin/python"',
            'package = "mypkg"',
            'branch = "main"',
            f"index_url = {_toml_value(self.index_url)}",
            f"memory_cap = {_toml_value(host.memory_cap)}",
        ]
        if host.path is not None:
            lines.append(f"path = {_toml_value(host.path)}")
        if host.pueue_key is not None:
            lines.append(f"pueue = {_toml_value(host.pueue_key)}")
        lines.extend(f"{k} = {_toml_value(v)}" for k, v in host.host_keys.items())
        for group, spec in host.groups.items():
            lines.append(f"[groups.{group}]")
            lines.extend(f"{k} = {_toml_value(v)}" for k, v in spec.items())
        return "\n".join(lines) + "\n"

    def env(self, **extra: str) -> dict[str, str]:
        """Environment for the toolkit's CLI: this world's inventory, a throwaway laptop HOME."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("XDG_", "SSH_", "JOBSAFE_", "PUEUE_"))
        }
        laptop = self.laptop
        env.update(
            {
                "HOME": str(laptop),
                "XDG_STATE_HOME": str(laptop / ".local" / "state"),
                "XDG_CONFIG_HOME": str(laptop / ".config"),
                "XDG_DATA_HOME": str(laptop / ".local" / "share"),
                "JOBSAFE_INVENTORY": str(self.inventory),
                "JOBSAFE_SSH_CONFIG": str(self.ssh_config),
            }
        )
        if self.uv_cache and "UV_CACHE_DIR" not in env:
            env["UV_CACHE_DIR"] = self.uv_cache
        env.update(extra)
        return env

    # -- clients -------------------------------------------------------------------------
    def ssh_argv(self, name: str, cmd: str) -> list[str]:
        """argv for the system ssh client with the inventory's ssh_config (strict keys)."""
        return ["ssh", "-F", str(self.ssh_config), name, cmd]

    def ssh(
        self,
        name: str,
        cmd: str,
        *,
        timeout: float = 60,
        check: bool = False,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            self.ssh_argv(name, cmd),
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            env=self.env(),
        )
        if check:
            _check(result, f"ssh {name} {cmd}")
        return result

    def paramiko_client(self, name: str, *, timeout: float = 10) -> Any:
        """A connected paramiko SSHClient: RejectPolicy + the inventory's known_hosts only."""
        import paramiko

        host = self.hosts[name]
        client = paramiko.SSHClient()
        client.load_host_keys(str(self.known_hosts))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            client.connect(
                LOOPBACK,
                port=host.port,
                username=self.user,
                key_filename=str(self.key),
                look_for_keys=False,
                allow_agent=False,
                timeout=timeout,
                banner_timeout=timeout,
                auth_timeout=timeout,
            )
        except BaseException:
            client.close()
            raise
        return client

    # -- git origin + project ------------------------------------------------------------
    def _git(self, *args: str, cwd: Path | None = None) -> str:
        env = {
            **os.environ,
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_AUTHOR_NAME": "jobsafe world",
            "GIT_AUTHOR_EMAIL": "world@jobsafe.invalid",
            "GIT_COMMITTER_NAME": "jobsafe world",
            "GIT_COMMITTER_EMAIL": "world@jobsafe.invalid",
        }
        result = subprocess.run(
            ["git", *args],
            cwd=str(cwd or self.root),
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        return _check(result, "git " + " ".join(args)).stdout.strip()

    def _init_origin(self) -> None:
        self._git("init", "-q", "--bare", "-b", "main", str(self.origin))
        self._git("init", "-q", "-b", "main", str(self.work))
        self._git("remote", "add", "origin", str(self.origin), cwd=self.work)
        self.commit_to_origin(PROJECT_FILES, "mypkg 1.0.0")

    def commit_to_origin(self, files: Mapping[str, str | None], message: str) -> str:
        """Write ``files`` (path -> text; None deletes) in the work clone, commit, push main."""
        for rel, text in files.items():
            path = self.work / rel
            if text is None:
                path.unlink(missing_ok=True)
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        self._git("add", "-A", cwd=self.work)
        self._git("commit", "-q", "--allow-empty", "-m", message, cwd=self.work)
        self._git("push", "-q", "origin", "HEAD:main", cwd=self.work)
        return self._git("rev-parse", "HEAD", cwd=self.work)

    def bump_version(self, version: str, *, tag: str | None = None) -> str:
        """Commit ``version`` to pyproject.toml and ``__version__``; push, and ``tag`` if given."""
        pyproject = (self.work / "pyproject.toml").read_text()
        init = (self.work / "src/mypkg/__init__.py").read_text()
        old = next(line for line in pyproject.splitlines() if line.startswith("version = "))
        old_init = next(line for line in init.splitlines() if line.startswith("__version__"))
        sha = self.commit_to_origin(
            {
                "pyproject.toml": pyproject.replace(old, f'version = "{version}"'),
                "src/mypkg/__init__.py": init.replace(old_init, f'__version__ = "{version}"'),
            },
            f"mypkg {version}",
        )
        if tag:
            self._git("tag", tag, cwd=self.work)
            self._git("push", "-q", "origin", tag, cwd=self.work)
        return sha

    def origin_head(self) -> str:
        return self._git("--git-dir", str(self.origin), "rev-parse", "main")

    def install_project(self, host: SimHost) -> None:
        """``git clone`` the origin to ~/project, ``uv venv``, install mypkg (editable or not)."""
        if not host.project_dir.exists():
            host.run(f"git clone -q {self.origin} project", check=True)
        host.run(
            f"uv venv -q .venv --python {sys.executable}",
            cwd=host.project_dir,
            check=True,
            timeout=300,
        )
        target = "-e ." if host.editable else "."
        host.run(
            f"uv pip install -q --python .venv/bin/python {target}",
            cwd=host.project_dir,
            check=True,
            timeout=600,
        )

    # -- keys ----------------------------------------------------------------------------
    @staticmethod
    def _keygen(path: Path, *, comment: str) -> None:
        for p in (path, path.with_suffix(".pub")):
            p.unlink(missing_ok=True)
        result = subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
            capture_output=True,
            text=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
        )
        _check(result, f"ssh-keygen {path}")

    # -- teardown ------------------------------------------------------------------------
    def close(self) -> None:
        """Stop every pueued and sshd of this world, then anything they left running."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            atexit.unregister(self.close)
        for host in list(self.hosts.values()):
            with contextlib.suppress(Exception):
                host.stop_pueued(timeout=5)
            with contextlib.suppress(Exception):
                host.stop_sshd()
        self._sweep()

    def _sweep(self) -> None:
        # pueue tasks, feeders and SSH session processes carry JOBSAFE_WORLD=<root> in their
        # environment (SetEnv, or the env pueue copies into each task): end exactly those.
        proc = Path("/proc")
        if not proc.is_dir():
            return
        marker = f"JOBSAFE_WORLD={self.root}".encode()
        me = os.getpid()
        victims = []
        for entry in proc.iterdir():
            if not entry.name.isdigit() or int(entry.name) == me:
                continue
            try:
                environ = (entry / "environ").read_bytes()
            except OSError:
                continue
            if marker in environ.split(b"\0"):
                victims.append(int(entry.name))
        for sig in (signal.SIGTERM, signal.SIGKILL):
            alive = [pid for pid in victims if _pid_alive(pid)]
            if not alive:
                return
            for pid in alive:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + 2
            while time.monotonic() < deadline and any(_pid_alive(p) for p in alive):
                time.sleep(0.05)
