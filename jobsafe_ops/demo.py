"""`inv demo`: the main job end to end against a throwaway local host.

The host is this machine (`ssh = "local"`, no SSH) with its own HOME, pueue daemon, git
origin, project checkout and uv venv under a temp dir. The demo drives it through the same
commands an operator uses: probe → audit → deploy (a fix pushed to origin) → submit-batch
(a playbook with two phases and an --after chain) → monitor --until-done → audit.

pueue: the real binaries when on PATH, otherwise the stand-in shipped in the package
(jobsafe_ops/testing/pueue). Needs python3, git and uv (the package's `demo` extra, or PATH),
nothing from a checkout: it runs from an installed wheel in an empty directory.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .console import console
from .errors import ConfigError

PLAYBOOK = Path(__file__).resolve().parent / "testing" / "directions.toml"

DEMO_HOST = """\
ssh = "local"
project_dir = "~/project"
package = "mypkg"
memory_cap = false

[groups.p1]
parallel = 2
min = 1
max = 4
job_memory = "256M"

[groups.p2]
parallel = 2
min = 1
max = 4
job_memory = "256M"
"""

FIX = '''"""Toy package deployed by the jobsafe-ops demo."""

__version__ = "1.0.1"


def compute(x):
    # FIX-1: results are now rounded to ints
    return int(x) * 2
'''

GIT_ENV = {
    "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "demo", "GIT_AUTHOR_EMAIL": "demo@jobsafe.invalid",
    "GIT_COMMITTER_NAME": "demo", "GIT_COMMITTER_EMAIL": "demo@jobsafe.invalid",
}


def _project_files() -> dict[str, str]:
    """The toy project shared with the e2e test world (jobsafe_ops/testing/world.py)."""
    from .testing.world import PROJECT_FILES

    return dict(PROJECT_FILES)


def _pueue_dir() -> Path | None:
    """None: real pueue is on PATH. Otherwise the packaged stand-in's directory."""
    from .testing.world import pueue_standin_dir

    if shutil.which("pueue") and shutil.which("pueued") and not os.environ.get(
            "JOBSAFE_DEMO_FAKE_PUEUE"):
        return None
    return pueue_standin_dir()


def _uv() -> str:
    """uv from PATH, else the one the `demo` extra installs next to this Python."""
    found = shutil.which("uv") or shutil.which("uv", path=str(Path(sys.executable).parent))
    if found:
        return found
    try:
        from uv import find_uv_bin  # the PyPI `uv` package (jobsafe-ops[demo])

        return str(find_uv_bin())
    except (ImportError, FileNotFoundError):
        pass
    raise ConfigError("the demo needs uv: install jobsafe-ops[demo] (uv tool install "
                      "'jobsafe-ops[demo]') or put uv on PATH (https://docs.astral.sh/uv/)")


def _need_git() -> None:
    if shutil.which("git") is None:
        raise ConfigError("the demo needs git on PATH (Debian: apt-get install git)")


def _sh(argv: list[str], cwd: Path | None = None) -> None:
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **GIT_ENV}, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise ConfigError(f"demo setup: `{' '.join(argv)}` failed: "
                          f"{(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@contextmanager
def demo_host(keep: bool = False) -> Iterator[tuple[Path, Path]]:
    """Set up the throwaway host; yields (inventory dir, work clone of the origin)."""
    _need_git()
    uv_dir = str(Path(_uv()).parent)  # on PATH: the deploy runs uv on the host too
    fake = _pueue_dir()
    root = Path(tempfile.mkdtemp(prefix="jobsafe-demo-"))
    saved = dict(os.environ)
    home, runtime, inventory = root / "home", root / "run", root / "inventory"
    for d in (home, runtime, inventory):
        d.mkdir(parents=True)
    cfg = root / "pueue.yml"
    cfg.write_text(
        "shared:\n"
        f"  pueue_directory: {home}/.local/share/pueue\n"
        f"  runtime_directory: {runtime}\n"
        "  use_unix_socket: true\n"
        f"  unix_socket_path: {runtime}/pueue.socket\n"
        f"  pid_path: {runtime}/pueue.pid\n"
        "client: {}\ndaemon: {}\nprofiles: {}\n"
    )
    (inventory / "demo.toml").write_text(DEMO_HOST)
    os.environ.update(
        HOME=str(home), PUEUE_CONFIG_PATH=str(cfg), XDG_STATE_HOME=str(home / ".local/state"),
        XDG_DATA_HOME=str(home / ".local/share"), XDG_CONFIG_HOME=str(home / ".config"),
        JOBSAFE_INVENTORY=str(inventory), UV_PYTHON_DOWNLOADS="never",
    )
    # the throwaway host's own journal, never the operator's (nor an ops repo's `journal`)
    os.environ["JOBSAFE_JOURNAL"] = str(home / ".local/state/jobsafe-ops/journal.ndjson")
    os.environ["PATH"] = os.pathsep.join(
        [*([str(fake)] if fake is not None else []), uv_dir, os.environ.get("PATH", "")])
    try:
        with console.status("setting up the throwaway host (git origin, checkout, uv venv)"):
            work = _make_project(root, home)
            _start_pueued(cfg, runtime / "pueued.log")
        yield inventory, work
    finally:
        _stop_pueued(cfg, runtime / "pueue.pid")
        os.environ.clear()
        os.environ.update(saved)
        if keep:
            console.print(f"[dim]kept the demo host at {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def _start_pueued(cfg: Path, log: Path, timeout: float = 15.0) -> None:
    """`pueued -d`. Real pueued's background child keeps the caller's stdout/stderr (a
    captured pipe would never close) and may not answer yet when `-d` returns."""
    with open(log, "ab") as out:
        proc = subprocess.run(["pueued", "-c", str(cfg), "-d"], stdin=subprocess.DEVNULL,
                              stdout=out, stderr=out)
    if proc.returncode != 0:
        raise ConfigError(f"demo setup: `pueued -d` failed (exit {proc.returncode}; log: {log})")
    deadline = time.monotonic() + timeout
    while subprocess.run(["pueue", "-c", str(cfg), "status", "--json"], capture_output=True,
                         stdin=subprocess.DEVNULL).returncode != 0:
        if time.monotonic() > deadline:
            raise ConfigError(f"demo setup: pueued not answering after {timeout:g}s (log: {log})")
        time.sleep(0.1)


def _stop_pueued(cfg: Path, pid_file: Path, timeout: float = 10.0) -> None:
    """`pueue shutdown`, then wait for the daemon to exit (real pueue's shutdown returns
    at once), so that it does not write into the host directory being removed."""
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        pid = None
    subprocess.run(["pueue", "-c", str(cfg), "shutdown"], capture_output=True,
                   stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while pid is not None and _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except ProcessLookupError:
        return False
    except (OSError, IndexError):
        return True  # exists, state unknown
    return state != "Z"


def _make_project(root: Path, home: Path) -> Path:
    origin, work, project = root / "origin.git", root / "work", home / "project"
    _sh(["git", "init", "-q", "--bare", "-b", "main", str(origin)])
    _sh(["git", "init", "-q", "-b", "main", str(work)])
    _write(work, _project_files())
    _sh(["git", "add", "-A"], work)
    _sh(["git", "commit", "-qm", "mypkg 1.0.0"], work)
    _sh(["git", "push", "-q", str(origin), "HEAD:main"], work)
    _sh(["git", "clone", "-q", str(origin), str(project)])
    uv = _uv()
    _sh([uv, "venv", "-q", ".venv", "--python", sys.executable], project)
    _sh([uv, "pip", "install", "-q", "--python", ".venv/bin/python", "-e", "."], project)
    return work


def _push_fix(work: Path) -> int:
    """A demo step like the commands: it returns an exit code (0; a failure raises)."""
    _write(work, {"src/mypkg/__init__.py": FIX})
    _sh(["git", "commit", "-qam", "FIX-1: round results (1.0.1)"], work)
    _sh(["git", "push", "-q", str(work.parent / "origin.git"), "HEAD:main"], work)
    return 0


def run_demo(keep: bool = False) -> int:
    from . import cli
    from .batch.submit import submit_batch_cmd
    from .deploy.cli import audit_cmd, deploy_cmd
    from .monitor.watch import monitor_cmd

    with demo_host(keep) as (inventory, work):
        inv = str(inventory)
        common: dict[str, Any] = {"host": "demo", "inventory": inv, "json_out": False}
        deploy_flags: dict[str, Any] = dict(
            on_running="abort", wait_timeout=60.0, ref=None, version=None,
            expect_version="1.0.1", expect_code="mypkg:compute:FIX-1",
            discard_local_changes=False, break_lock=False, retry_all=False, retry_budget=3,
            upgrade_timeout=60.0, watch=3.0, dry=False)
        steps: list[tuple[str, Callable[[], int]]] = [
            ("inv probe --host demo", lambda: cli.probe_cmd(**common)),
            ("inv audit --host demo", lambda: audit_cmd(group=None, **common)),
            ("git push a fix to origin (mypkg 1.0.1, FIX-1)", lambda: _push_fix(work)),
            ("inv deploy --host demo --expect-version 1.0.1 --expect-code mypkg:compute:FIX-1",
             lambda: deploy_cmd(**common, **deploy_flags)),
            ("inv submit-batch --host demo --playbook directions --allow-uncapped",
             lambda: submit_batch_cmd(playbook=str(PLAYBOOK), dry=False, allow_uncapped=True,
                                      units=False, unit_size=None, **common)),
            ("inv submit-batch ... again (converges: nothing is added twice)",
             lambda: submit_batch_cmd(playbook=str(PLAYBOOK), dry=False, allow_uncapped=True,
                                      units=False, unit_size=None, **common)),
            ("inv monitor --host demo --group p2 --until-done",
             lambda: monitor_cmd(group="p2", label_glob=None, once=False, until_done=True,
                                 timeout=180.0, interval=1.0, log_lines=3, **common)),
            ("inv audit --host demo", lambda: audit_cmd(group=None, **common)),
        ]
        worst = 0
        for title, step in steps:
            console.rule(f"[bold]{title}")
            code = step()
            worst = max(worst, code)
            if code not in (0,):
                console.print(f"[yellow]step exited {code}")
    verdict = "[bold green]demo finished: every step succeeded" if worst == 0 else \
        f"[bold red]demo finished with exit code {worst}"
    console.rule(verdict)
    return worst
