"""A real single-node Slurm cluster for the e2e tests and bench/ (Debian `slurm-wlm` +
`munge`): munged, slurmctld and slurmd started by hand on loopback, every file
of theirs (munge key and socket, slurm.conf, state, spool, pid and log files) in one
directory, so several clusters never share anything with the machine's own /etc/slurm.

Clients find the cluster through ``SLURM_CONF`` (``cluster.env``): a world host that is a
Slurm login node gets it in its sshd ``SetEnv``, so `sbatch`/`squeue` run over the world's
real sshd reach this cluster. ``AuthInfo=socket=`` points every Slurm program at this
cluster's munged.

With ``accounting=True`` the cluster also keeps job accounting, as a site with `sacct`
does: a private MariaDB (``mariadb-install-db`` into ``<root>/db``, ``mariadbd`` on a free
loopback port, Debian `mariadb-server`) and a slurmdbd (Debian `slurmdbd`; its
``slurmdbd.conf`` mode 600 next to slurm.conf, where slurmdbd looks for it through
``SLURM_CONF``) that slurmctld reports to (``AccountingStorageType=accounting_storage/slurmdbd``).

The daemons run in the foreground (``-D``) as children of this process, in their own
session, and ``stop()`` ends them (and the job steps they started) by pid, nothing else.
Imports nothing from pytest.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .world import LOOPBACK, WorldError, free_port

MUNGED = "/usr/sbin/munged"
SLURMCTLD = "slurmctld"
SLURMD = "slurmd"
PROGRAMS = ("sbatch", "squeue", "sinfo", "scontrol", "scancel", "slurmctld", "slurmd")
INSTALL_HINT = ("slurm not installed: apt-get install --no-install-recommends slurm-wlm munge "
                "(see .ci/run)")
ACCOUNTING_PROGRAMS = ("slurmdbd", "sacctmgr", "sacct", "mariadbd", "mariadb-install-db")
ACCOUNTING_HINT = ("accounting needs slurmdbd and MariaDB: apt-get install "
                   "--no-install-recommends slurmdbd mariadb-server (see .ci/run)")
# slurmd is told the node has this many CPUs whatever the machine has (config_overrides):
# a 2-core CI machine still runs an array 4 at a time, as a real node would
NODE_CPUS = 8
PARTITION = "debug"


def missing_programs(accounting: bool = False) -> list[str]:
    """The Slurm/munge programs this machine lacks (empty: a cluster can start); with
    `accounting`, slurmdbd's and MariaDB's too."""
    wanted = (*PROGRAMS, *ACCOUNTING_PROGRAMS) if accounting else PROGRAMS
    out = [p for p in wanted if shutil.which(p) is None
           and not os.access(f"/usr/sbin/{p}", os.X_OK)]
    if not os.access(MUNGED, os.X_OK) and shutil.which("munged") is None:
        out.append("munged")
    return out


def _program(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    if os.access(f"/usr/sbin/{name}", os.X_OK):
        return f"/usr/sbin/{name}"
    raise WorldError(f"{name}: {INSTALL_HINT}")


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((LOOPBACK, port)) == 0


def _mem_total_mb() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    return 4096


@dataclass(eq=False)
class SlurmCluster:
    """One slurmctld + one slurmd (node = this machine) + a private munged."""

    root: Path
    ctld_port: int = 0
    slurmd_port: int = 0
    node: str = field(default_factory=lambda: socket.gethostname().split(".")[0])
    # more slurm.conf lines (bench: MaxJobCount above its 10,000 default, which counts
    # every array element)
    extra_conf: tuple[str, ...] = ()
    # slurmdbd + a private MariaDB: sacct answers (finished jobs' states, exit codes)
    accounting: bool = False
    dbd_port: int = 0
    db_port: int = 0
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, repr=False)

    # -- layout -------------------------------------------------------------------------
    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    @property
    def munge_dir(self) -> Path:
        return self.root / "munge"

    @property
    def munge_socket(self) -> Path:
        return self.munge_dir / "munge.socket"

    @property
    def log_dir(self) -> Path:
        return self.root / "log"

    @property
    def db_dir(self) -> Path:
        return self.root / "db"

    @property
    def dbd_conf(self) -> Path:
        return self.root / "slurmdbd.conf"

    @property
    def env(self) -> dict[str, str]:
        """What a client needs to reach this cluster (a login node's SetEnv)."""
        return {"SLURM_CONF": str(self.conf)}

    def client_env(self) -> dict[str, str]:
        return {**os.environ, **self.env}

    # -- config -------------------------------------------------------------------------
    def slurm_conf(self) -> str:
        r = self.root
        memory = max(1024, _mem_total_mb() * 9 // 10)
        return "\n".join([
            "ClusterName=jobsafe",
            f"SlurmctldHost={self.node}({LOOPBACK})",
            "SlurmUser=root",
            f"SlurmctldPort={self.ctld_port}",
            f"SlurmdPort={self.slurmd_port}",
            "AuthType=auth/munge",
            f"AuthInfo=socket={self.munge_socket}",
            f"StateSaveLocation={r / 'state'}",
            f"SlurmdSpoolDir={r / 'spool'}",
            f"SlurmctldPidFile={r / 'slurmctld.pid'}",
            f"SlurmdPidFile={r / 'slurmd.pid'}",
            f"SlurmctldLogFile={self.log_dir / 'slurmctld.log'}",
            f"SlurmdLogFile={self.log_dir / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SchedulerType=sched/builtin",
            # start array elements as soon as a slot frees (the default waits seconds)
            "SchedulerParameters=sched_min_interval=0,sched_interval=1,batch_sched_delay=0",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core_Memory",
            "SlurmdParameters=config_overrides",
            "ReturnToService=2",
            "MpiDefault=none",
            "JobAcctGatherType=jobacct_gather/none",
            *(["AccountingStorageType=accounting_storage/slurmdbd",
               f"AccountingStorageHost={LOOPBACK}", f"AccountingStoragePort={self.dbd_port}",
               # slurmctld and sacct reach slurmdbd through this munge socket (AuthInfo
               # does not cover those connections)
               f"AccountingStoragePass={self.munge_socket}"]
              if self.accounting else ["AccountingStorageType=accounting_storage/none"]),
            f"NodeName={self.node} NodeAddr={LOOPBACK} CPUs={NODE_CPUS} "
            f"RealMemory={memory} State=UNKNOWN",
            f"PartitionName={PARTITION} Nodes={self.node} Default=YES MaxTime=INFINITE "
            "State=UP",
            *self.extra_conf,
        ]) + "\n"

    def slurmdbd_conf(self) -> str:
        """slurmdbd's own config: MariaDB over loopback as root (no password: the private
        server's root, reachable only from this machine), state in the temp dir."""
        return "\n".join([
            "AuthType=auth/munge",
            f"AuthInfo=socket={self.munge_socket}",
            f"DbdAddr={LOOPBACK}",
            f"DbdHost={self.node}",
            f"DbdPort={self.dbd_port}",
            "SlurmUser=root",
            f"LogFile={self.log_dir / 'slurmdbd.log'}",
            f"PidFile={self.root / 'slurmdbd.pid'}",
            "StorageType=accounting_storage/mysql",
            f"StorageHost={LOOPBACK}",
            f"StoragePort={self.db_port}",
            "StorageUser=root",
            "StorageLoc=slurm_acct_db",
        ]) + "\n"

    def _mariadb_argv(self) -> list[str]:
        argv = [_program("mariadbd"), "--no-defaults", f"--datadir={self.db_dir}",
                f"--socket={self.root / 'mysql.sock'}", f"--bind-address={LOOPBACK}",
                f"--port={self.db_port}", f"--pid-file={self.root / 'mariadbd.pid'}",
                f"--log-error={self.log_dir / 'mariadbd.log'}",
                "--innodb-log-file-size=4M", "--innodb-buffer-pool-size=32M"]
        return [*argv, "--user=root"] if os.getuid() == 0 else argv

    def _start_accounting(self, timeout: float) -> None:
        """MariaDB, then slurmdbd, then the cluster's row in the database (slurmctld reports
        to it from its first start on)."""
        missing = missing_programs(accounting=True)
        if missing:
            raise WorldError(f"{', '.join(missing)} missing: {ACCOUNTING_HINT}")
        if not (self.db_dir / "mysql").is_dir():
            init = subprocess.run(
                [_program("mariadb-install-db"), "--no-defaults", f"--datadir={self.db_dir}",
                 "--auth-root-authentication-method=normal", "--skip-test-db",
                 "--innodb-log-file-size=4M",
                 *(["--user=root"] if os.getuid() == 0 else [])],
                capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
            if init.returncode != 0:
                tail = " | ".join((init.stderr or init.stdout).strip().splitlines()[-3:])
                raise WorldError(f"mariadb-install-db exited {init.returncode}: {tail}")
        self._spawn("mariadbd", self._mariadb_argv())
        self._wait(lambda: _listening(self.db_port), timeout, "mariadbd")
        self.dbd_conf.write_text(self.slurmdbd_conf())
        self.dbd_conf.chmod(0o600)  # slurmdbd refuses a config others can read
        self._spawn("slurmdbd", [_program("slurmdbd"), "-D"])
        self._wait(lambda: _listening(self.dbd_port), timeout, "slurmdbd")
        said: list[str] = []

        def registered() -> bool:
            shown = self._client("sacctmgr", "-n", "-P", "show", "cluster", "format=cluster")
            if "jobsafe" in shown.stdout.split():
                return True
            added = self._client("sacctmgr", "-i", "add", "cluster", "jobsafe")
            said[:] = [(added.stderr or added.stdout or shown.stderr).strip()]
            return False

        try:
            self._wait(registered, timeout, "slurmdbd")
        except WorldError as exc:
            raise WorldError(f"sacctmgr add cluster jobsafe: {said[-1] if said else '?'} "
                             f"({exc})") from None

    # -- lifecycle ----------------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> SlurmCluster:
        missing = missing_programs()
        if missing:
            raise WorldError(f"{', '.join(missing)} missing: {INSTALL_HINT}")
        self.root = Path(self.root).resolve()
        if len(str(self.munge_socket)) > 100:
            raise WorldError(f"cluster root too deep for munge's socket: {self.munge_socket}")
        for d in (self.root, self.munge_dir, self.log_dir, self.root / "state",
                  self.root / "spool"):
            d.mkdir(parents=True, exist_ok=True)
        # munged checks that no one else can write where its socket and key live
        self.munge_dir.chmod(0o755)
        self.ctld_port = self.ctld_port or free_port()
        self.slurmd_port = self.slurmd_port or free_port()
        if self.accounting:
            self.db_port = self.db_port or free_port()
            self.dbd_port = self.dbd_port or free_port()
        key = self.munge_dir / "munge.key"
        if not key.exists():
            key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        self.conf.write_text(self.slurm_conf())
        try:
            self._spawn("munged", [_program("munged"), "--foreground", "--force",
                                   f"--socket={self.munge_socket}", f"--key-file={key}",
                                   f"--log-file={self.log_dir / 'munged.log'}",
                                   f"--pid-file={self.munge_dir / 'munged.pid'}",
                                   f"--seed-file={self.munge_dir / 'munged.seed'}"])
            self._wait(lambda: self.munge_socket.exists(), timeout, "munged")
            if self.accounting:
                self._start_accounting(timeout)
            self._spawn("slurmctld", [_program(SLURMCTLD), "-D", "-i"])
            self._wait(lambda: "UP" in self._client("scontrol", "ping").stdout, timeout,
                       "slurmctld")
            self._spawn("slurmd", [_program(SLURMD), "-D"])
            self._wait(self._node_ready, timeout, "slurmd")
        except BaseException:
            self.stop()
            raise
        return self

    def _client(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(list(argv), env=self.client_env(), capture_output=True,
                              text=True, timeout=30, stdin=subprocess.DEVNULL)

    def _node_ready(self) -> bool:
        out = self._client("sinfo", "-h", "-N", "-o", "%T").stdout.split()
        return bool(out) and all(s.rstrip("*~#") in ("idle", "mixed", "allocated")
                                 for s in out)

    def _spawn(self, name: str, argv: list[str]) -> None:
        with open(self.log_dir / f"{name}.out", "ab") as log:
            self.procs[name] = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env={**self.client_env(), "JOBSAFE_SLURM": str(self.root)},
                start_new_session=True)

    def _wait(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while True:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise WorldError(f"{name} exited with {proc.returncode} while starting "
                                     f"{what}: {self._log_tail(name)}")
            if ready():
                return
            if time.monotonic() > deadline:
                raise WorldError(f"{what} not ready after {timeout:g}s: {self._log_tail(what)}")
            time.sleep(0.1)

    def _log_tail(self, name: str) -> str:
        for path in (self.log_dir / f"{name}.log", self.log_dir / f"{name}.out"):
            with contextlib.suppress(OSError):
                text = path.read_text(errors="replace").strip()
                if text:
                    return " | ".join(text.splitlines()[-5:])
        return "(no log)"

    def cancel_all(self) -> None:
        """scancel every job of the cluster (between tests that need an idle node)."""
        with contextlib.suppress(Exception):
            self._client("scancel", "--user", str(os.getuid()) if os.getuid() else "root")

    def stop(self) -> None:
        """Cancel the jobs, then end slurmd, slurmctld, slurmdbd, mariadbd and munged (by
        pid, in that order),
        and any job step process that outlived slurmd (it carries JOBSAFE_SLURM)."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            self.cancel_all()
        for name in ("slurmd", "slurmctld", "slurmdbd", "mariadbd", "munged"):
            proc = self.procs.pop(name, None)
            if proc is None:
                continue
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
        self._sweep()

    def _sweep(self) -> None:
        marker = f"JOBSAFE_SLURM={self.root}".encode()
        victims = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            with contextlib.suppress(OSError):
                if marker in (entry / "environ").read_bytes().split(b"\0"):
                    victims.append(int(entry.name))
        for pid in victims:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    def __enter__(self) -> SlurmCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
