"""`inv demo`: a throwaway local host (this machine, no SSH) with its own pueue daemon,
HOME and inventory under a temp dir, driven through the same commands an operator uses.

pueue: the real binaries when on PATH, otherwise the stand-in shipped under tests/.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .console import console
from .errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
FAKE_PUEUE = REPO / "tests" / "fakes" / "pueue"

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
"""


def _pueue_dir() -> Path | None:
    """None: real pueue is on PATH. Otherwise the stand-in's directory."""
    if shutil.which("pueue") and shutil.which("pueued") and not os.environ.get(
            "JOBSAFE_DEMO_FAKE_PUEUE"):
        return None
    if not (FAKE_PUEUE / "pueued").exists():
        raise ConfigError("no pueue on PATH and no stand-in at tests/fakes/pueue; "
                          "install pueue or run from a checkout of the repo")
    return FAKE_PUEUE


@contextmanager
def demo_host(keep: bool = False) -> Iterator[Path]:
    """Set up the throwaway host; yields the inventory dir. Restores the environment."""
    root = Path(tempfile.mkdtemp(prefix="jobsafe-demo-"))
    saved = dict(os.environ)
    home = root / "home"
    runtime = root / "runtime"
    for d in (home, runtime, root / "inventory"):
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
    (root / "inventory" / "demo.toml").write_text(DEMO_HOST)
    fake = _pueue_dir()
    os.environ.update(
        HOME=str(home), PUEUE_CONFIG_PATH=str(cfg), XDG_STATE_HOME=str(home / ".local/state"),
        XDG_DATA_HOME=str(home / ".local/share"), XDG_CONFIG_HOME=str(home / ".config"),
        JOBSAFE_INVENTORY=str(root / "inventory"),
    )
    if fake is not None:
        os.environ["PATH"] = f"{fake}{os.pathsep}{os.environ['PATH']}"
    _make_project(home / "project")
    subprocess.run(["pueued", "-c", str(cfg), "-d"], check=True, capture_output=True)
    try:
        yield root / "inventory"
    finally:
        subprocess.run(["pueue", "-c", str(cfg), "shutdown"], capture_output=True)
        os.environ.clear()
        os.environ.update(saved)
        if keep:
            console.print(f"[dim]kept the demo host at {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def _make_project(path: Path) -> None:
    (path / "scripts").mkdir(parents=True)
    (path / "scripts" / "process.py").write_text(
        "import sys, time\n"
        "args = dict(zip(sys.argv[1::2], sys.argv[2::2]))\n"
        "time.sleep(float(args.get('--sleep', '0.5')))\n"
        "print('processed', args)\n"
    )


def run_demo(keep: bool = False) -> int:
    from . import cli

    steps: list[tuple[str, Callable[[], int]]] = []
    with demo_host(keep) as inventory:
        inv = str(inventory)
        steps = [
            ("probe", lambda: cli.probe_cmd(host="demo", inventory=inv, json_out=False)),
            ("audit", lambda: cli.audit_cmd(host="demo", group=None, inventory=inv,
                                            json_out=False)),
        ]
        worst = 0
        for name, step in steps:
            console.rule(f"[bold]inv {name} --host demo")
            worst = max(worst, step())
    console.rule("[bold green]demo finished")
    return worst
