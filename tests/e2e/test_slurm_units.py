"""Units mode on a Slurm host, on the real single-node cluster (conftest `slurm_cluster`):
`submit-batch --units --unit-size 3` runs one array element per unit of three commands,
each command with its own ledger line, log and label - so the sbatch count falls to
⌈units / MaxArraySize⌉, monitor shows commands by label, retry-failed re-adds a failed
command alone as a direct element, and reruns converge to each command label once."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from jobsafe_ops.hostside.model import UNIT_RE
from jobsafe_ops.testing.slurm import PARTITION, SlurmCluster
from tests.e2e.slurm_helpers import PASS, batch_dir, inv, ledger, squeue, wait_ended
from tests.jsonout import result_of
from tests.world import SimHost, World

GROUPS = {"u1": {"parallel": 2, "min": 1, "max": 4, "job_memory": "50M", "cpus": 1}}
LABELS = {f"un:{i}" for i in range(1, 8)}


@pytest.fixture(scope="module")
def host(world: World, slurm_cluster: SlurmCluster) -> SimHost:
    return world.add_host("hpc", groups=GROUPS, pueue=False, extra_env=slurm_cluster.env,
                          host_keys={"scheduler": "slurm", "partition": PARTITION})


def submit(world: World, path: Path, *args: str, code: int = 0) -> dict[str, Any]:
    proc = inv(world, "submit-batch", "--host", "hpc", "--playbook", str(path), "--json",
               "--units", "--unit-size", "3", *args)
    assert proc.returncode == code, proc.stdout + proc.stderr
    return result_of(proc.stdout)  # type: ignore[no-any-return]


def monitor(world: World, *args: str, code: int) -> dict[str, Any]:
    proc = inv(world, "monitor", "--host", "hpc", "--once", "--json", "--group", "u1", *args)
    assert proc.returncode == code, proc.stdout + proc.stderr
    return result_of(proc.stdout)  # type: ignore[no-any-return]


def test_units_one_element_per_unit_each_command_by_its_label(
        world: World, host: SimHost, slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    # every command waits for un.go (the test's signal); un:5 is then SIGKILLed the first
    # time (exit 137: transient) and works the second
    command = ("while [ ! -e un.go ]; do sleep 0.1; done; "
               "case {i} in 5) test -e un5.flag || (touch un5.flag; kill -KILL $$);; esac; "
               "echo out-{i}")
    path = tmp_path / "units.toml"
    path.write_text(f'name = "units"\n{PASS}group = "u1"\nlabel = "un:{{i}}"\n'
                    f'command = "{command}"\n[units]\nparallel = 3\n'
                    f"[matrix]\ni = [1, 2, 3, 4, 5, 6, 7]\n")
    first = submit(world, path)
    assert first["mode"] == "units" and first["units"] == 3  # 3 + 3 + 1 commands
    units = [a["label"] for a in first["added"]]
    assert len(units) == 3 and all(UNIT_RE.search(u) for u in units), units
    # one sbatch: the three units are one array of three elements (not seven)
    assert len({a["id"] for a in first["added"]}) == 1
    arrays = (batch_dir(host, "units") / "arrays.ndjson").read_text().splitlines()
    assert len(arrays) == 1 and '"count":3' in arrays[0]
    again = submit(world, path)  # while the units are queued or running: nothing twice
    assert again["counts"]["added"] == 0
    # each element asks for 3 x the job's CPUs and memory: it runs 3 commands at once
    [array] = {a["id"] for a in first["added"]}
    shown = subprocess.run(["scontrol", "show", "job", f"{array}_0"], capture_output=True,
                           text=True, env=slurm_cluster.client_env(), timeout=30).stdout
    assert "NumCPUs=3" in shown and "MinMemoryNode=150M" in shown, shown
    # the board while they run: commands by label, never the units (all 7 when the node has
    # room: 2 units at a time (%2) of 3 running commands each, the third unit's one queued)
    deadline = time.monotonic() + 60
    while True:
        [g] = monitor(world, code=3)["groups"]
        assert g["total"] == 7 and set(g["counts"]) <= {"running", "queued"}, g
        if g["counts"].get("running", 0) >= 3:  # a unit has started its 3 commands
            break
        assert time.monotonic() < deadline, g
        time.sleep(0.5)
    assert {r["label"] for r in g["running"]} <= LABELS
    (host.project_dir / "un.go").touch()

    ends = wait_ended(host, slurm_cluster, "units", LABELS)
    records = [r for r in ledger(host, "units") if r["event"] == "end"]
    assert sorted(r["label"] for r in records) == sorted(LABELS)  # each command once
    assert not any(UNIT_RE.search(r["label"]) for r in records)  # the unit: no line
    assert {r["unit"] for r in records} == set(units)
    assert ends["un:5"]["exit"] == 137 and ends["un:3"]["outcome"] == "success"
    logs = batch_dir(host, "units") / "logs"
    assert (logs / "un_3.log").read_text().strip() == "out-3"  # a log per command

    board = monitor(world, code=1)
    [g] = board["groups"]
    assert board["source"] == "squeue+ledger"  # no accounting here: sacct refuses, not read
    assert g["total"] == 7 and g["counts"] == {"success": 6, "failed": 1}
    assert [f["label"] for f in g["failed"]] == ["un:5"] and g["failed"][0]["exit_code"] == 137
    picked = monitor(world, "--label-glob", "un:[12]", code=0)
    assert picked["groups"][0]["total"] == 2

    proc = inv(world, "retry-failed", "--host", "hpc", "--group", "u1", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [step] = result_of(proc.stdout)["steps"]
    assert step["data"]["re_added"] == ["un:5-retry-1"]
    retried = wait_ended(host, slurm_cluster, "units", {"un:5-retry-1"})
    assert retried["un:5-retry-1"]["outcome"] == "success"
    assert "unit" not in retried["un:5-retry-1"]  # a direct element, not a unit again
    assert (logs / "un_5-retry-1.log").read_text().strip() == "out-5"

    dry = inv(world, "submit-batch", "--host", "hpc", "--playbook", str(path), "--dry",
              "--units", "--unit-size", "3")
    assert dry.returncode == 0 and "3 units; one array element each" in dry.stdout, dry.stdout
    final = submit(world, path)  # converged: every command label succeeded once
    assert final["counts"]["added"] == 0
    by = {i["label"]: i for i in final["items"]}
    assert all(by[u]["action"] == "skip" and "one by one" in by[u]["reason"] for u in units)
    assert by["un:5"]["action"] == "skip" and "un:5-retry-1" in by["un:5"]["reason"]
    board = monitor(world, code=0)
    [g] = board["groups"]
    assert board["verdict"] == "done" and g["counts"] == {"success": 7}
    assert g["superseded"] == 1
    assert squeue(slurm_cluster, "units") == []


def test_a_rerun_re_adds_a_failed_command_alone(
        world: World, host: SimHost, slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    command = ("case {i} in 2) test -e ur2.flag || (touch ur2.flag; kill -KILL $$);; "
               "3) exit 3;; esac")
    path = tmp_path / "urerun.toml"
    path.write_text(f'name = "urerun"\n{PASS}group = "u1"\nlabel = "ur:{{i}}"\n'
                    f'command = "{command}"\n[matrix]\ni = [1, 2, 3, 4]\n'
                    '[[after]]\nlabel = "ur:after"\ncommand = "true"\n')
    first = submit(world, path)
    assert first["units"] == 2
    try:
        rerun_converges(world, host, slurm_cluster, path)
    finally:  # ur:after waits on an afterok that can never be met
        subprocess.run(["scancel", "--name=jobsafe:urerun:u1"], env=slurm_cluster.client_env(),
                       timeout=30)


def rerun_converges(world: World, host: SimHost, slurm_cluster: SlurmCluster,
                    path: Path) -> None:
    wait_ended(host, slurm_cluster, "urerun", {f"ur:{i}" for i in range(1, 5)})
    out = submit(world, path, code=1)
    by = {i["label"]: i for i in out["items"]}
    assert by["ur:2"]["action"] == "add" and by["ur:2"]["new_label"] == "ur:2-retry-1"
    assert by["ur:3"]["action"] == "failed" and "persistent" in by["ur:3"]["reason"]
    assert by["ur:1"]["action"] == "skip" and by["ur:4"]["action"] == "skip"
    assert by["ur:after"]["action"] == "held"  # behind the unit with a failed command
    assert [a["label"] for a in out["added"]] == ["ur:2-retry-1"]
    assert re.fullmatch(r"\d+", str(out["added"][0]["id"]))
    ends = wait_ended(host, slurm_cluster, "urerun", {"ur:2-retry-1"})
    assert ends["ur:2-retry-1"]["outcome"] == "success"
    again = submit(world, path, code=1)  # ur:3 stays failed; nothing submitted twice
    assert again["counts"]["added"] == 0
