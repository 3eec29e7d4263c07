"""Programs that live in ~/.local/bin, against hosts set up like the README's: pueue, pueued
and uv only in ~/.local/bin (their official installers' place), sshd's PATH the Debian
non-login one without it (tests/world.py). The host `bare` says `path = []` and the full
`pueue` path: uv does not resolve there, and every command that needs it must say so in one
line naming uv, the host and the `path` key, before anything is changed. The same host with
`path = ["~/.local/bin"]` (the world's default) upgrades and runs `uv run` jobs."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.cli import inv
from tests.e2e.deploy_helpers import (
    deploy,
    make_wheel,
    start_pypiserver,
    step,
    venv_version,
    wait_for,
)
from tests.jsonout import result_of
from tests.world import HOST_PATH, SimHost, World

PASS = 'pass_env = ["JOBSAFE_WORLD", "JOBSAFE_WORLD_HOST"]\n'
# the README's playbooks use `uv run python ...`; --no-sync: the venv is there, no index
UV_JOB = "uv run --no-sync python scripts/job.py --name {n}"


@pytest.fixture(scope="module")
def bare(world: World) -> SimHost:
    if not world.pueue_available:
        pytest.skip("no pueue stand-in and no real pueue")
    host = world.add_host("bare", editable=False, path=(), pueue_key="~/.local/bin/pueue")
    host.run("pueue group add p1 -p 2", check=True)
    return host


@contextmanager
def host_path(world: World, host: SimHost, dirs: tuple[str, ...]) -> Iterator[None]:
    """The host file says `path = dirs` for the block (the world writes the inventory)."""
    saved = host.path
    host.path = dirs
    world.write_inventory()
    try:
        yield
    finally:
        host.path = saved
        world.write_inventory()


def error_lines(r: subprocess.CompletedProcess[str]) -> list[str]:
    return [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]


def assert_names_uv(line: str, host: SimHost) -> None:
    """The one line: the program, the host, the host file and the key to set."""
    assert "uv not found" in line and host.name in line, line
    assert "path (e.g. path = [\"~/.local/bin\"])" in line and f"{host.name}.toml" in line, line
    assert "command not found" not in line


def test_probe_reports_where_each_program_resolves(world: World, bare: SimHost) -> None:
    r = inv(world, "probe", "--host", "bare", "--json")
    assert r.returncode == 0, r.stderr
    report = result_of(r.stdout)
    programs = report["programs"]
    assert programs["uv"] is None
    assert programs["pueue"] == f"{bare.local_bin}/pueue"  # through the `pueue` key
    assert programs["python3"] and programs["git"]
    assert report["path"] == bare.env["PATH"]  # the non-login PATH, nothing in front
    human = inv(world, "probe", "--host", "bare")
    text = " ".join(human.stdout.split())
    assert "uv NOT FOUND" in text and "missing: uv" in text

    with host_path(world, bare, HOST_PATH):
        report = result_of(inv(world, "probe", "--host", "bare", "--json").stdout)
    assert report["programs"]["uv"] == f"{bare.local_bin}/uv"
    assert report["path"].split(":")[0] == str(bare.local_bin)


def test_deploy_upgrade_needs_uv_from_the_host_file(world: World, bare: SimHost,
                                                    tmp_path: Path) -> None:
    packages = tmp_path / "packages"
    packages.mkdir()
    server, port = start_pypiserver(packages)
    saved = world.index_url
    try:
        world.index_url = f"http://127.0.0.1:{port}/simple/"
        make_wheel(packages, "1.2.0", (world.work / "src/mypkg/__init__.py").read_text()
                   .replace('"1.0.0"', '"1.2.0"'))
        r, rep = deploy(world, bare, "--version", "1.2.0", "--on-running", "keep",
                        "--watch", "0")
        assert r.returncode == 4, r.stderr
        assert step(rep, "upgrade")["status"] == "failed"
        (line,) = error_lines(r)
        assert_names_uv(line, bare)
        assert venv_version(bare)[0] == "1.0.0"

        # the same host, the same command: only the host file's `path` differs
        with host_path(world, bare, HOST_PATH):
            r, rep = deploy(world, bare, "--version", "1.2.0", "--on-running", "keep",
                            "--watch", "0")
        assert r.returncode == 0, r.stderr
        assert step(rep, "upgrade")["status"] == "changed"
        assert venv_version(bare)[0] == "1.2.0"
    finally:
        world.index_url = saved
        server.terminate()
        server.wait(timeout=10)


def _tasks(host: SimHost) -> dict[str, Any]:
    return dict(host.pueue_status()["tasks"])


def test_submit_batch_refuses_a_job_that_would_exit_127(world: World, bare: SimHost,
                                                        tmp_path: Path) -> None:
    book = tmp_path / "uvsweep.toml"
    book.write_text('name = "uvsweep"\n' + PASS + 'group = "p1"\nworkdir = "~/project"\n'
                    f'command = "{UV_JOB}"\nlabel = "uvsweep:{{n}}"\n'
                    '[matrix]\nn = ["a", "b"]\n')
    before = bare.pueue_status()
    for extra in ((), ("--dry",), ("--units", "--unit-size", "1")):
        r = inv(world, "submit-batch", "--host", "bare", "--playbook", str(book), *extra)
        assert r.returncode == 2, r.stdout + r.stderr
        (line,) = error_lines(r)
        assert_names_uv(line, bare)
        assert "nothing was queued" in line and "uvsweep:a" in line
    assert bare.pueue_status() == before  # no task, no group, nothing cleaned
    assert not (bare.home / ".local/state/jobsafe-ops/batches/uvsweep").exists()

    # with the key, the jobs run under a PATH that has it (uv is only in ~/.local/bin)
    with host_path(world, bare, HOST_PATH):
        r = inv(world, "submit-batch", "--host", "bare", "--playbook", str(book), "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    assert result_of(r.stdout)["counts"]["added"] == 2

    def done() -> list[Any]:
        ts = [t for t in _tasks(bare).values() if t["label"].startswith("uvsweep:")]
        return ts if len(ts) == 2 and all("Done" in t["status"] for t in ts) else []

    for t in wait_for(done, timeout=60, what="uv run jobs"):
        assert t["status"]["Done"]["result"] == "Success", t
    assert json.loads((bare.project_dir / "out" / "a.json").read_text())["result"] == 2


def test_retry_failed_refuses_before_re_adding(world: World, bare: SimHost) -> None:
    # failed at a login shell, where uv resolves; a re-add over SSH would exit 127
    bare.run("pueue add -g p1 -l R@uv -w ~/project -- "
             "\"uv run --no-sync python -c 'raise SystemExit(3)'\"", check=True)
    wait_for(lambda: any(t["label"] == "R@uv" and "Done" in t["status"]
                         for t in _tasks(bare).values()), what="R@uv failed")
    before = _tasks(bare)
    r = inv(world, "retry-failed", "--host", "bare", "--group", "p1", "--retry-all")
    assert r.returncode == 2, r.stdout + r.stderr
    (line,) = error_lines(r)
    assert_names_uv(line, bare)
    assert "R@uv-retry-1" in line and "nothing was queued" in line
    assert _tasks(bare) == before

    with host_path(world, bare, HOST_PATH):
        r = inv(world, "retry-failed", "--host", "bare", "--group", "p1", "--retry-all")
    assert r.returncode == 0, r.stdout + r.stderr
    assert any(t["label"] == "R@uv-retry-1" for t in _tasks(bare).values())


def test_pueue_without_its_key_is_one_line_naming_it(world: World, bare: SimHost) -> None:
    """No `pueue` key and no `path`: every command stops with the one line, exit 4."""
    bare.pueue_key = None
    world.write_inventory()
    try:
        for args in (("audit", "--host", "bare"), ("retry-failed", "--host", "bare",
                                                   "--group", "p1")):
            r = inv(world, *args)
            assert r.returncode == 4, r.stdout + r.stderr
            (line,) = error_lines(r)
            assert line.startswith("error: bare: ") and "pueue not found on the host" in line
            assert 'set pueue = "/full/path/to/pueue"' in line or "set `pueue`" in line, line
            assert "path" in line and "command not found" not in line
        report = result_of(inv(world, "probe", "--host", "bare", "--json").stdout)
        assert report["programs"]["pueue"] is None
    finally:
        bare.pueue_key = "~/.local/bin/pueue"
        world.write_inventory()


def test_deploy_kill_refuses_to_re_add_a_job_that_would_exit_127(world: World,
                                                                  bare: SimHost) -> None:
    bare.run("pueue add -g p1 -l K@uv -w ~/project -- "
             "\"uv run --no-sync python -c 'import time; time.sleep(120)'\"", check=True)
    wait_for(lambda: any(t["label"] == "K@uv" and "Running" in t["status"]
                         for t in _tasks(bare).values()), what="K@uv running")
    world.commit_to_origin({"NOTES": "programs\n"}, "programs test")
    r, rep = deploy(world, bare, "--on-running", "kill", "--watch", "0")
    assert r.returncode == 2, r.stderr
    assert step(rep, "restart")["status"] == "failed"
    (line,) = error_lines(r)
    assert_names_uv(line, bare)
    assert "K@uv-retry-1" in line and "nothing was queued" in line
    labels = {t["label"] for t in _tasks(bare).values()}
    assert "K@uv" in labels and "K@uv-retry-1" not in labels

    # fixed host file: the next deploy re-adds the job the first one killed (journal)
    with host_path(world, bare, HOST_PATH):
        r, rep = deploy(world, bare, "--on-running", "kill", "--watch", "0")
    assert r.returncode == 0, r.stderr
    assert "K@uv-retry-1" in {t["label"] for t in _tasks(bare).values()}
    assert bare.pueue_status()["groups"]["p1"]["status"] == "Running"
