"""A Slurm cluster with job accounting (tests/e2e/conftest.py `slurm_cluster_acct`: slurmdbd
+ a private MariaDB next to slurmctld, all on loopback): probe says sacct is there, and an
element Slurm killed before its run wrapper could write its ledger line - SIGKILL of the
batch step and its children, `scancel --signal=KILL --batch`, as the OOM killer would - is
shown by monitor as failed with sacct's state, re-submitted by retry-failed and by a rerun of
submit-batch, never lost. (A plain `scancel` sends SIGTERM, which the wrapper records.)"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from jobsafe_ops.testing.slurm import PARTITION, SlurmCluster
from tests.e2e.slurm_helpers import PASS, batch_dir, inv, ledger, squeue, wait_ended
from tests.jsonout import result_of
from tests.world import SimHost, World

GROUPS = {"acc": {"parallel": 3, "min": 1, "max": 4, "job_memory": "100M", "cpus": 1}}


@pytest.fixture(scope="module")
def host(world: World, slurm_cluster_acct: SlurmCluster) -> SimHost:
    return world.add_host("hpc", groups=GROUPS, pueue=False, extra_env=slurm_cluster_acct.env,
                          host_keys={"scheduler": "slurm", "partition": PARTITION})


def monitor(world: World, *args: str) -> dict[str, Any]:
    proc = inv(world, "monitor", "--host", "hpc", "--once", "--json", "--group", "acc", *args)
    assert proc.returncode in (0, 1, 3), proc.stdout + proc.stderr
    return result_of(proc.stdout)  # type: ignore[no-any-return]


def test_probe_reports_accounting(world: World, host: SimHost) -> None:
    proc = inv(world, "probe", "--host", "hpc", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    p = result_of(proc.stdout)
    assert p["error"] is None and p["accounting"] is True
    assert "accounting_storage/slurmdbd" in p["accounting_reason"]
    rich = inv(world, "probe", "--host", "hpc")
    assert rich.returncode == 0 and "sacct" in rich.stdout


def test_an_element_killed_before_its_ledger_line_is_known_from_sacct(
        world: World, host: SimHost, slurm_cluster_acct: SlurmCluster, tmp_path: Path) -> None:
    # ac:kill writes its Slurm job id, then sleeps until the test SIGKILLs the element (the
    # wrapper dies with it: no end line); its retry finds the flag and succeeds
    case = ("case {mode} in ok) true;; bad) exit 3;; kill) test -e ac.flag || "
            "{{ touch ac.flag; echo $SLURM_JOB_ID > ac-kill.id; sleep 300; }};; esac")
    path = tmp_path / "acct.toml"
    path.write_text(f'name = "acct"\n{PASS}group = "acc"\nlabel = "ac:{{mode}}"\n'
                    f'command = "{case}"\n[matrix]\nmode = ["ok", "bad", "kill"]\n')
    proc = inv(world, "submit-batch", "--host", "hpc", "--playbook", str(path), "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    wait_ended(host, slurm_cluster_acct, "acct", {"ac:ok", "ac:bad"})
    id_file = host.project_dir / "ac-kill.id"
    deadline = time.monotonic() + 60
    while not id_file.exists() or not id_file.read_text().strip():
        assert time.monotonic() < deadline, squeue(slurm_cluster_acct, "acct")
        time.sleep(0.3)
    subprocess.run(["scancel", "--signal=KILL", "--batch", id_file.read_text().strip()],
                   env=slurm_cluster_acct.client_env(), check=True, timeout=30)
    # sacct has it a moment after slurmctld; the ledger never will
    deadline = time.monotonic() + 60
    while True:
        board = monitor(world)
        [g] = board["groups"]
        failed = {f["label"]: f for f in g["failed"]}
        if "ac:kill" in failed:
            break
        assert time.monotonic() < deadline, board
        time.sleep(1.0)
    assert board["source"] == "squeue+ledger+sacct"
    # SIGKILL: exit 137, as a job killed inside records it (transient)
    assert failed["ac:kill"]["state"] == "failed", failed
    assert failed["ac:kill"]["slurm_state"] == "FAILED" and failed["ac:kill"]["exit_code"] == 137
    assert failed["ac:bad"]["exit_code"] == 3 and "slurm_state" not in failed["ac:bad"]
    assert g["counts"] == {"success": 1, "failed": 2} and board["exit_code"] == 1
    assert "ac:kill" not in {r["label"] for r in ledger(host, "acct") if r["event"] == "end"}
    rich = inv(world, "monitor", "--host", "hpc", "--once", "--group", "acc")
    assert "FAILED, sacct" in rich.stdout

    # retry-failed: killed is transient (exit 3 is not), re-submitted once
    proc = inv(world, "retry-failed", "--host", "hpc", "--group", "acc", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [step] = result_of(proc.stdout)["steps"]
    assert step["data"]["re_added"] == ["ac:kill-retry-1"]
    by = {d["label"]: d for d in step["data"]["plan"]["decisions"]}
    assert by["ac:kill"]["kind"] == "transient" and by["ac:bad"]["kind"] == "persistent"
    ends = wait_ended(host, slurm_cluster_acct, "acct", {"ac:kill-retry-1"})
    assert ends["ac:kill-retry-1"]["outcome"] == "success"
    board = monitor(world)
    [g] = board["groups"]
    assert g["counts"] == {"success": 2, "failed": 1} and g["superseded"] == 1
    # a rerun of submit-batch reads the same: ac:bad failed (persistent), nothing re-added
    proc = inv(world, "submit-batch", "--host", "hpc", "--playbook", str(path), "--json")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    out = result_of(proc.stdout)
    assert out["counts"]["added"] == 0
    assert {i["label"]: i["action"] for i in out["items"]} == {
        "ac:ok": "skip", "ac:bad": "failed", "ac:kill": "skip"}
    assert (batch_dir(host, "acct") / "arrays.ndjson").exists()


def test_a_rerun_resubmits_a_sacct_only_failure_as_a_retry(
        world: World, host: SimHost, slurm_cluster_acct: SlurmCluster, tmp_path: Path) -> None:
    case = "test -e rr.flag || {{ touch rr.flag; echo $SLURM_JOB_ID > rr.id; sleep 300; }}"
    path = tmp_path / "rerun.toml"
    path.write_text(f'name = "rerun"\n{PASS}group = "acc"\nlabel = "rr:{{i}}"\n'
                    f'command = "{case} # {{i}}"\n[matrix]\ni = [1]\n')
    proc = inv(world, "submit-batch", "--host", "hpc", "--playbook", str(path), "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    id_file = host.project_dir / "rr.id"
    deadline = time.monotonic() + 60
    while not id_file.exists() or not id_file.read_text().strip():
        assert time.monotonic() < deadline, squeue(slurm_cluster_acct, "rerun")
        time.sleep(0.3)
    subprocess.run(["scancel", "--signal=KILL", "--batch", id_file.read_text().strip()],
                   env=slurm_cluster_acct.client_env(), check=True, timeout=30)
    deadline = time.monotonic() + 60
    while True:
        proc = inv(world, "submit-batch", "--host", "hpc", "--playbook", str(path), "--json",
                   "--dry")
        assert proc.returncode in (0, 1), proc.stdout + proc.stderr
        [item] = result_of(proc.stdout)["items"]
        # until the element has left squeue AND slurmdbd has recorded its end (it lags
        # behind squeue under load; till then the label looks never-run: a plain add)
        if item["action"] == "add" and item.get("new_label") != "rr:1":
            break
        assert time.monotonic() < deadline, item
        time.sleep(1.0)
    assert item["new_label"] == "rr:1-retry-1" and "exit 137" in item["reason"]
    proc = inv(world, "submit-batch", "--host", "hpc", "--playbook", str(path), "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [a["label"] for a in result_of(proc.stdout)["added"]] == ["rr:1-retry-1"]
    ends = wait_ended(host, slurm_cluster_acct, "rerun", {"rr:1-retry-1"})
    assert ends["rr:1-retry-1"]["outcome"] == "success"
