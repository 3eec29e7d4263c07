"""The one way tests run the command line: `inv -r REPO TASK ...` and the installed `jobsafe`.

Both run the CLI as an operator (or cron) does: stdin is /dev/null unless a test says
otherwise (so deploy's ``--on-running`` policy is the non-interactive one, and a prompt fails
the test instead of hanging it), output captured as text, and a timeout.

- ``inv(world, "deploy", "--host", "a", ...)``: the environment is ``world.env()`` (the world's
  inventory and ssh_config, a throwaway laptop HOME) and the working directory the world's
  root, outside any ops repo; with ``world=None`` (unit tests, no hosts) it is this process's
  environment without ``JOBSAFE_*`` settings, in the current directory.
- ``jobsafe(world, "probe", ..., cwd=...)``: the same for the installed ``jobsafe`` program,
  which finds its ops repo from ``cwd``.

Options, for the few behaviours tests need: ``env`` (added to the environment), ``unset``
(names removed from it), ``cwd``, ``timeout`` (seconds), ``stdin`` (anything
``subprocess.run`` takes). ``argv()`` gives the argv of a task for tests that start the process
themselves (``Popen``: signals, concurrent runs, reacting to its stderr).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, Any

from jobsafe_ops.testing.world import World

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
INV = (sys.executable, "-m", "invoke", "-r", str(REPO))
JOBSAFE = str(BIN / "jobsafe")
TIMEOUT = 300.0

Stdin = int | IO[Any] | None


def argv(*args: str) -> list[str]:
    """`inv -r REPO ARGS...` with this interpreter (no PATH lookup of `inv`)."""
    return [*INV, *args]


def environment(world: World | None, env: Mapping[str, str] | None = None,
                unset: Iterable[str] = ()) -> dict[str, str]:
    """The CLI's environment: the world's (see the module doc), ``env`` added, ``unset`` gone."""
    if world is not None:
        out = world.env()
    else:
        out = {k: v for k, v in os.environ.items() if not k.startswith("JOBSAFE_")}
    out.update(env or {})
    for name in unset:
        out.pop(name, None)
    return out


def run(command: list[str], world: World | None, *, env: Mapping[str, str] | None = None,
        unset: Iterable[str] = (), cwd: Path | str | None = None, timeout: float = TIMEOUT,
        stdin: Stdin = subprocess.DEVNULL) -> subprocess.CompletedProcess[str]:
    if cwd is None and world is not None:
        cwd = world.root
    return subprocess.run(command, env=environment(world, env, unset), cwd=cwd, text=True,
                          capture_output=True, timeout=timeout, stdin=stdin)


def inv(world: World | None, *args: str, env: Mapping[str, str] | None = None,
        unset: Iterable[str] = (), cwd: Path | str | None = None, timeout: float = TIMEOUT,
        stdin: Stdin = subprocess.DEVNULL) -> subprocess.CompletedProcess[str]:
    """`inv -r REPO ARGS...`, run to completion (see the module doc)."""
    return run(argv(*args), world, env=env, unset=unset, cwd=cwd, timeout=timeout, stdin=stdin)


def jobsafe(world: World | None, *args: str, env: Mapping[str, str] | None = None,
            unset: Iterable[str] = (), cwd: Path | str | None = None,
            timeout: float = TIMEOUT,
            stdin: Stdin = subprocess.DEVNULL) -> subprocess.CompletedProcess[str]:
    """The installed `jobsafe ARGS...` (its ops repo found from ``cwd``)."""
    return run([JOBSAFE, *args], world, env=env, unset=unset, cwd=cwd, timeout=timeout,
               stdin=stdin)
