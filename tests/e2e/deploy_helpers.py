"""Helpers shared by the deploy-shaped e2e tests (test_deploy, test_faults, test_programs):
running `inv deploy --json`, setting up and reading a host's pueue straight on the host, the
project checkout and venv, wheels and a real package index (pypiserver) on loopback."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shlex
import socket
import subprocess
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests import cli
from tests.jsonout import result_of
from tests.world import LOOPBACK, SimHost, World, free_port

GROUPS = "pueue group add p1 -p 2 && pueue group add p2 -p 1"
LOCK = ".local/state/jobsafe-ops/deploy-project.lock"


def deploy(world: World, host: SimHost, *args: str, timeout: float = 120,
           on_stderr: tuple[str, Callable[[], Any]] | None = None,
           ) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """`inv deploy --json`; ``on_stderr=(text, action)`` runs action once, as soon as the
    deploy has printed a stderr line containing text."""
    argv = ["deploy", "--host", host.name, "--json", *args]
    r = cli.inv(world, *argv, timeout=timeout) if on_stderr is None else \
        inv_reacting(world, argv, *on_stderr, timeout=timeout)
    try:
        report = result_of(r.stdout)
    except json.JSONDecodeError:
        raise AssertionError(f"no JSON (exit {r.returncode}):\n{r.stdout}\n{r.stderr}") from None
    return r, report



def inv_reacting(world: World, args: list[str], text: str, action: Callable[[], Any],
                 timeout: float) -> subprocess.CompletedProcess[str]:
    """`inv` like inv(), with ``action()`` run when a stderr line contains ``text``."""
    with tempfile.TemporaryFile("w+") as stdout:
        proc = subprocess.Popen(cli.argv(*args), env=world.env(), text=True,
                                stdout=stdout, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, cwd=world.root)
        err: list[str] = []

        def follow() -> None:
            assert proc.stderr is not None
            for line in proc.stderr:
                if text in line and not any(text in seen for seen in err):
                    action()
                err.append(line)

        reader = threading.Thread(target=follow, daemon=True)
        reader.start()
        try:
            proc.wait(timeout=timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        reader.join(timeout=10)
        stdout.seek(0)
        return subprocess.CompletedProcess(proc.args, proc.returncode, stdout.read(),
                                           "".join(err))


def step(report: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in report["steps"] if s["name"] == name)


def fresh(host: SimHost) -> None:
    """Empty pueue, groups running, no lock, checkout clean at its current commit."""
    host.run("pueue reset --force", check=True)

    def reset_done() -> bool:
        # real pueue resets asynchronously: groups read "Reset" until its next loop has
        # removed their tasks, and a task added before that would be removed as well
        status = host.pueue_status()
        return not status["tasks"] and all(g["status"] == "Running"
                                           for g in status["groups"].values())

    wait_for(reset_done, what="pueue reset")
    host.run(f"rm -rf ~/{LOCK}; git -C ~/project checkout -q -- .", check=True)


def add(host: SimHost, label: str, command: str, group: str = "p1") -> int:
    r = host.run(f"pueue add -p -g {group} -l '{label}' -w ~/project -- {quote(command)}",
                 check=True)
    return int(r.stdout.strip())


def quote(text: str) -> str:
    return shlex.quote(text)


def tasks(host: SimHost) -> dict[str, dict[str, Any]]:
    """label -> {"state", "id", "command", "path", "group"} (latest id per label)."""
    out: dict[str, dict[str, Any]] = {}
    for t in sorted(host.pueue_status()["tasks"].values(), key=lambda t: t["id"]):
        status = t["status"]
        kind = next(iter(status)) if isinstance(status, dict) else status
        state = kind
        if kind == "Done":
            result = status["Done"]["result"]
            state = result if isinstance(result, str) else next(iter(result))
        out[t["label"]] = {"state": state, "id": t["id"], "command": t["command"],
                           "path": t["path"], "group": t["group"]}
    return out


def wait_for(cond: Callable[[], Any], timeout: float = 20, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def state_of(host: SimHost, label: str) -> str | None:
    return tasks(host).get(label, {}).get("state")


def head(host: SimHost) -> str:
    return host.run("git -C ~/project rev-parse HEAD", check=True).stdout.strip()




def lock_exists(host: SimHost) -> bool:
    return (host.home / LOCK).exists()


def venv_version(host: SimHost) -> tuple[str, str]:
    r = host.run(".venv/bin/python -c 'import mypkg; print(mypkg.__version__, mypkg.__file__)'",
                 cwd=host.project_dir, check=True)
    version, file = r.stdout.split()
    return version, file


def with_checkpoints(world: World, host: SimHost, *patterns: str) -> None:
    """Declare checkpoint patterns in the host file (before its [groups.*] tables)."""
    path = world.inventory / f"{host.name}.toml"
    text = path.read_text()
    if "checkpoints" not in text:
        path.write_text(f"checkpoints = {json.dumps(list(patterns))}\n" + text)


def make_wheel(directory: Path, version: str, init_text: str, name: str = "mypkg") -> Path:
    """A minimal, valid pure-Python wheel (no build backend, no network)."""
    info = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": init_text,
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: jobsafe-tests\nRoot-Is-Purelib: true\n"
                         "Tag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{path},sha256={digest.decode()},{len(text.encode())}")
    files[f"{info}/RECORD"] = "\n".join([*record, f"{info}/RECORD,,"]) + "\n"
    tmp = directory / f".{name}-{version}.tmp"
    with zipfile.ZipFile(tmp, "w") as zf:
        for path, text in files.items():
            zf.writestr(path, text)
    final = directory / f"{name}-{version}-py3-none-any.whl"
    os.replace(tmp, final)  # the index never serves half a wheel
    return final



def deploy_host(world: World, name: str, **kw: Any) -> SimHost:
    """A host of the deploy tests: pueue groups p1 (2 slots) and p2 (1 slot)."""
    if not world.pueue_available:
        pytest.skip("no pueue stand-in and no real pueue")
    host = world.add_host(name, **kw)
    host.run(GROUPS, check=True)
    return host


def _pypiserver_up(server: subprocess.Popen[bytes], port: int) -> bool | None:
    """True once it answers on the port; None if it exited (the port was taken since
    free_port(), or it failed); False while it is starting."""
    if server.poll() is not None:
        return None
    with socket.socket() as s:
        return s.connect_ex((LOOPBACK, port)) == 0 and server.poll() is None


def start_pypiserver(packages: Path) -> tuple[subprocess.Popen[bytes], int]:
    for _ in range(3):
        port = free_port()
        server = subprocess.Popen(
            ["pypi-server", "run", "-i", LOOPBACK, "-p", str(port), "--disable-fallback",
             "--backend", "simple-dir", str(packages)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while (ready := _pypiserver_up(server, port)) is False and time.monotonic() < deadline:
            time.sleep(0.1)
        if ready:
            return server, port
        server.kill()
        server.wait(timeout=10)
        if ready is False:
            break  # still not answering after a minute: no point in another port
    raise AssertionError("pypiserver did not start")
