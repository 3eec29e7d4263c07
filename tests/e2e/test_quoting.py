"""Shell metacharacters through every host-touching task's parameters, end to end.

One loopback host is driven through a host file whose project_dir and pueue path hold
quotes, `$(...)`, backticks, `;`, `|`, `&`, `>`, `*`, spaces and a leading `-` (real
directories and a real pueue wrapper by those names exist on the host), with playbook
matrix values, labels, env values and [[after]] labels made of the same, and with --group,
--ref, --expect-code and --label-glob values made of the same. Every task runs: probe,
audit, monitor, submit-batch, retry-failed, autoscale --dry, clean, deploy --dry and a
real deploy. Afterwards no canary file exists anywhere (each `$(touch ...)` would have made
one), and every value that is legitimately accepted arrived verbatim (labels in pueue's
status, matrix values in the job's own argv, the env value in the job's environment).

tests/e2e/test_submit_batch.py covers matrix values in labels and argv for submit-batch
alone; this module covers the rest of the parameters and tasks.
"""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path
from typing import Any

import pytest

from tests.cli import inv
from tests.jsonout import result_of
from tests.world import SimHost, World

NAME = "qh"  # the inventory name; its ssh alias is the world host "qt"
# a file name holding every metacharacter (no '/', which would make it a path)
WEIRD = "-x we'ird \"q\" $(touch pwned1) `touch pwned2`;touch pwned3|&>*"
PASS = 'pass_env = ["JOBSAFE_WORLD", "JOBSAFE_WORLD_HOST"]\n'
JOB = ".venv/bin/python scripts/job.py"
VALUES = ["a;b", "$(touch pwned4)", "`touch pwned5`", "it's", 'x"y', "p|q&r>s", "*",
          "sp ace", "-dash"]


@pytest.fixture(scope="module")
def canary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("canary")


@pytest.fixture(scope="module")
def host(world: World, canary: Path) -> SimHost:
    if not world.pueue_available:
        pytest.skip("no pueue stand-in and no real pueue")
    h = world.add_host("qt")
    # the checkout and a pueue wrapper under names made of metacharacters (the checkout
    # really lives there; ~/project points to it for the world's own helpers)
    h.project_dir.rename(h.home / WEIRD)
    h.project_dir.symlink_to(WEIRD)
    bin_dir = h.home / f"bin {WEIRD}"
    bin_dir.mkdir()
    wrapper = bin_dir / "pueue"
    wrapper.write_text('#!/bin/sh\nexec pueue "$@"\n')
    wrapper.chmod(0o755)
    h.run("pueue group add p1 && pueue group add p2", check=True)
    (world.inventory / f"{NAME}.toml").write_text(
        'ssh = "qt"\n'
        f"project_dir = {json.dumps('~/' + WEIRD)}\n"
        'package = "mypkg"\nmemory_cap = false\n'
        f"pueue = {json.dumps(f'~/bin {WEIRD}/pueue')}\n"
        '[groups.p1]\nparallel = 4\nmax = 8\n[groups.p2]\nparallel = 2\nmax = 4\n')
    return h


def run_json(world: World, *args: str, codes: tuple[int, ...] = (0,)) -> Any:
    proc = inv(world, *args, "--json")
    assert proc.returncode in codes, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return result_of(proc.stdout)


def labels(host: SimHost, group: str) -> dict[str, dict[str, Any]]:
    return {t["label"]: t for t in host.pueue_status()["tasks"].values() if t["group"] == group}


def wait_settled(host: SimHost, group: str, count: int, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while True:
        ts = labels(host, group).values()
        if len(ts) >= count and all("Done" in t["status"] for t in ts):
            return
        assert time.monotonic() < deadline, f"{group} not settled: {list(ts)}"
        time.sleep(0.2)


def strings(doc: Any) -> set[str]:
    """Every string in a JSON document (values and keys)."""
    if isinstance(doc, str):
        return {doc}
    if isinstance(doc, dict):
        return set(doc) | {s for v in doc.values() for s in strings(v)}
    if isinstance(doc, list):
        return {s for v in doc for s in strings(v)}
    return set()


def assert_no_canary(host: SimHost, world: World, canary: Path) -> None:
    found = [p for root in (host.home, world.root, canary, Path.cwd())
             for p in root.rglob("pwned*")]
    assert found == []


def test_every_task_quotes_every_parameter(world: World, host: SimHost, canary: Path,
                                           tmp_path: Path) -> None:
    assert run_json(world, "probe", "--host", NAME)["pueue_version"]  # the weird wrapper ran

    # submit-batch: matrix values, labels, env value and an [[after]] label, default workdir
    # (the weird checkout); one failing job in p2 for the failure paths
    book = tmp_path / "quoting.toml"
    tag = f"$(touch {canary}/pwned6) `touch {canary}/pwned7` 'q' \"d\""
    book.write_text(
        'name = "quoting"\n' + PASS + 'env_overrides = ["TAG"]\n'
        '[[phases]]\nname = "ok"\ngroup = "p1"\n'
        f'command = "{JOB} --name={{v}} --value 1 && printf %s \\"$TAG\\" > out/tag.txt"\n'
        'label = "q:{v}"\n'
        f"[phases.env]\nTAG = {json.dumps(tag)}\n"
        f"[phases.matrix]\nv = {json.dumps(VALUES)}\n"
        '[[phases]]\nname = "bad"\ngroup = "p2"\n'
        f'command = "{JOB} --name=f --fail"\n'
        "label = \"f:'$(touch pwned8)\\\";`touch pwned9`{phase}\"\n"
        f"[[after]]\nlabel = {json.dumps('q:after $(touch pwned10) `x` ;|&')}\n"
        'group = "p2"\ncommand = "true"\n')
    out = run_json(world, "submit-batch", "--host", NAME, "--playbook", str(book))
    assert out["counts"]["added"] == len(VALUES) + 2
    wait_settled(host, "p1", len(VALUES))
    wait_settled(host, "p2", 2)
    p1 = labels(host, "p1")
    assert set(p1) == {f"q:{v}" for v in VALUES}  # verbatim in pueue's own status
    assert all(t["status"]["Done"]["result"] == "Success" for t in p1.values())
    out_dir = host.project_dir / "out"
    for v in VALUES:  # each value reached the job as one argument, unchanged
        assert json.loads((out_dir / f"{v}.json").read_text())["name"] == v
    assert (out_dir / "tag.txt").read_text() == tag  # the env value, verbatim
    failed = "f:'$(touch pwned8)\";`touch pwned9`bad"
    after = "q:after $(touch pwned10) `x` ;|&"
    assert set(labels(host, "p2")) == {failed, after}
    assert {t["path"] for t in p1.values()} == {str(host.home / WEIRD)}  # pueue -w verbatim

    # audit / monitor: the failed label comes back verbatim; weird --group / --label-glob
    audit = run_json(world, "audit", "--host", NAME, "--group", "p2", codes=(1,))
    assert failed in strings(audit)
    # the glob matches no label: exit 6, nothing selected
    mon = run_json(world, "monitor", "--host", NAME, "--group", "p2", "--once",
                   "--label-glob", "f:'$(touch pwned11)*", codes=(6,))
    assert "f:'$(touch pwned11)*" in strings(mon)  # the glob travelled verbatim
    for task in ("audit", "monitor", "clean"):
        proc = inv(world, task, "--host", NAME, "--group", "p1;touch pwned12 `touch pwned13`",
                   *(("--once",) if task == "monitor" else ()))
        # no such group: bad input found by a read, the name shown verbatim
        assert proc.returncode == 2, proc.stderr
        assert "'p1;touch pwned12 `touch pwned13`'" in proc.stderr

    # retry-failed: re-adds the failed label fresh, verbatim plus -retry-1
    proc = inv(world, "retry-failed", "--host", NAME, "--group", "p2", "--retry-all")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{failed}-retry-1" in labels(host, "p2")

    # autoscale (weird pueue path, group names) and clean (scoped, weird pueue path)
    run_json(world, "autoscale", "--host", NAME, "--dry")
    wait_settled(host, "p2", 3)
    clean = run_json(world, "clean", "--host", NAME, "--group", "p1")
    assert clean["removed"] == len(VALUES) and labels(host, "p1") == {}

    # deploy: --dry with a weird --ref and --expect-code text, then for real (git -C, the
    # venv python and the lock all under the weird checkout path)
    proc = inv(world, "deploy", "--host", NAME, "--dry", "--on-running", "keep",
               "--ref", "v1;`touch${IFS}pwned14`$(touch${IFS}pwned15)",
               "--expect-code", "mypkg:compute:$(touch pwned16)")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "v1;`touch${IFS}pwned14`$(touch${IFS}pwned15)" in proc.stdout  # shown verbatim
    real = run_json(world, "deploy", "--host", NAME, "--on-running", "keep", "--watch", "0",
                    "--expect-code", "mypkg:compute:x * 2")
    assert real["exit_code"] == 0, real

    assert_no_canary(host, world, canary)
    head = host.run(f"git -C {shlex.quote(WEIRD)} status --porcelain", check=True).stdout
    assert head.strip() in ("", "?? out/")
