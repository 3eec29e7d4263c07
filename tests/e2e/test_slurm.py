"""Slurm as the scheduler behind the same commands, against a real single-node Slurm
(munged + slurmctld + slurmd on loopback, tests/e2e/conftest.py `slurm_cluster`), its login
node a world host reached over the world's real sshd: probe, submit-batch with job arrays
(exactly once, chained with afterok, reruns and kills converging), failures re-added."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from jobsafe_ops.testing.slurm import PARTITION, SlurmCluster
from tests.e2e.slurm_helpers import (
    JOB,
    REPO,
    batch_dir,
    inv,
    ledger,
    monitor,
    playbook,
    slurm_host,
    squeue,
    submit,
    wait_ended,
)
from tests.jsonout import result_of
from tests.world import SimHost, World


@pytest.fixture(scope="module")
def host(world: World, slurm_cluster: SlurmCluster) -> SimHost:
    return slurm_host(world, slurm_cluster)


def test_probe_reports_the_clusters_facts_and_that_mem_is_not_enforced(
        world: World, host: SimHost) -> None:
    proc = inv(world, "probe", "--host", "hpc", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    p = result_of(proc.stdout)
    assert p["scheduler"] == "slurm" and p["error"] is None
    assert p["partitions"] == [PARTITION] and p["default_partition"] == PARTITION
    assert p["cpus"] >= 1 and p["memory_mb"] > 0 and p["nodes"][0]["state"] == "idle"
    assert p["max_array"] == 1001 and p["max_jobs"] == 10000
    # the recipe's cluster: TaskPlugin=task/none, no accounting storage
    assert p["memcap"] is False and "task/none" in p["memcap_reason"]
    assert p["accounting"] is False
    assert all(p["programs"][name] for name in ("sbatch", "squeue", "python3"))
    rich = inv(world, "probe", "--host", "hpc")
    assert rich.returncode == 0 and "MaxArraySize" in rich.stdout and "debug" in rich.stdout


def test_memory_cap_true_refuses_unless_allow_uncapped(
        world: World, host: SimHost, slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    # the job takes 200M under --mem=100M: this cluster does not enforce it (task/none)
    hog = "python3 -c 'import sys; b = bytearray(200 * 1024 * 1024)' {i}"
    body = f'group = "p1"\nlabel = "mc:{{i}}"\ncommand = "{hog}"\n' \
        'memory_max = "100M"\n[matrix]\ni = [1]\n'
    path = playbook(tmp_path, "memcap", body)
    toml = world.inventory / "hpc.toml"
    toml.write_text(toml.read_text().replace("memory_cap = false", "memory_cap = true"))
    try:
        proc = inv(world, "submit-batch", "--host", "hpc", "--playbook", str(path))
        assert proc.returncode == 3, proc.stdout + proc.stderr
        assert "INV-7" in proc.stdout + proc.stderr and "task/none" in proc.stdout + proc.stderr
        assert squeue(slurm_cluster, "memcap") == []  # nothing was submitted
        out = submit(world, path, "--allow-uncapped")
        assert out["memcap"]["uncapped_by"] == "--allow-uncapped"
        assert [a["label"] for a in out["added"]] == ["mc:1"]
        assert "UNCAPPED" in out["memcap"]["reason"]
        ends = wait_ended(host, slurm_cluster, "memcap", {"mc:1"})
        assert ends["mc:1"]["outcome"] == "success"  # over --mem, and nothing stopped it
    finally:
        world.write_inventory()


def test_arrays_exactly_once_chained_with_afterok(world: World, host: SimHost,
                                                  slurm_cluster: SlurmCluster,
                                                  tmp_path: Path) -> None:
    body = f"""
group = "p1"
command = "{JOB} --name ch_{{i}} --value {{i}} --sleep 0.3"
label = "ch:{{i}}"
[matrix]
i = [1, 2, 3, 4, 5, 6]
[[after]]
label = "ch:merge"
command = "ls out/ch_1.json out/ch_2.json out/ch_3.json out/ch_4.json out/ch_5.json out/ch_6.json"
[[after]]
label = "ch:report"
command = "true"
"""
    path = playbook(tmp_path, "chain", body)
    dry = submit(world, path, "--dry")
    assert dry["counts"]["add"] == 8 and dry["ssh"]["connections"] == 1
    assert squeue(slurm_cluster, "chain") == []  # --dry submitted nothing
    host.log_sessions()
    first = submit(world, path)
    # one connection; its channels: the facts, mkdir, 3 uploads, the submission, and at
    # close the journal lines for the host's team journal - not per job
    assert host.sessions() <= 8
    assert first["counts"]["added"] == 8 and first["ssh"]["connections"] == 1
    arrays = {a["id"] for a in first["added"]}
    assert len(arrays) == 3  # the 6 jobs in one array, each [[after]] step its own
    again = submit(world, path)  # while they are queued or running: nothing twice
    assert again["counts"]["added"] == 0 and again["counts"]["skip"] == 8
    ends = wait_ended(host, slurm_cluster, "chain", {f"ch:{i}" for i in range(1, 7)} |
                      {"ch:merge", "ch:report"})
    assert all(r["outcome"] == "success" for r in ends.values()), ends
    jobs_end = max(ends[f"ch:{i}"]["end"] for i in range(1, 7))
    assert ends["ch:merge"]["start"] >= jobs_end  # afterok: after every element
    assert ends["ch:report"]["start"] >= ends["ch:merge"]["end"]
    # --chdir = the project: scripts/job.py ran there and wrote out/
    assert (host.project_dir / "out" / "ch_6.json").exists()
    logs = batch_dir(host, "chain") / "logs"
    assert '"name": "ch_3"' in (logs / "ch_3.log").read_text()  # output per label
    assert len([r for r in ledger(host, "chain") if r["label"] == "ch:1"]) == 1
    final = submit(world, path)
    assert final["counts"]["added"] == 0 and final["counts"]["skip"] == 8
    board = monitor(world, "--group", "p1", "--label-glob", "ch:*", code=0)
    [g] = board["groups"]
    assert board["verdict"] == "done" and g["total"] == 8 and g["counts"] == {"success": 8}
    assert g["parallel"] == 3  # the array throttle of the host file


def test_a_failure_holds_its_dependants_and_a_rerun_retries_it(
        world: World, host: SimHost, slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    # rt:oom is SIGKILLed the first time (exit 137: transient, as an OOM kill), then works
    case = ("case {mode} in ok) true;; bad) exit 3;; "
            "oom) test -e rt.flag || (touch rt.flag; kill -KILL $$);; esac")
    body = f"""
group = "p2"
command = "{case}"
label = "rt:{{mode}}"
[matrix]
mode = ["ok", "bad", "oom"]
[[after]]
label = "rt:after"
command = "true"
"""
    path = playbook(tmp_path, "retry", body)
    submit(world, path)
    ends = wait_ended(host, slurm_cluster, "retry", {"rt:ok", "rt:bad", "rt:oom"})
    assert ends["rt:bad"]["exit"] == 3 and ends["rt:ok"]["outcome"] == "success"
    assert ends["rt:oom"]["exit"] == 137
    # the after step waits on an afterok that can never be met
    deadline = time.monotonic() + 30
    while not any("DependencyNeverSatisfied" in q for q in squeue(slurm_cluster, "retry")):
        assert time.monotonic() < deadline, squeue(slurm_cluster, "retry")
        time.sleep(0.3)
    out = submit(world, path, code=1)
    by = {i["label"]: i for i in out["items"]}
    assert by["rt:ok"]["action"] == "skip"
    assert by["rt:bad"]["action"] == "failed" and "persistent" in by["rt:bad"]["reason"]
    assert by["rt:oom"]["action"] == "add" and by["rt:oom"]["new_label"] == "rt:oom-retry-1"
    assert by["rt:after"]["action"] == "held"
    assert [a["label"] for a in out["added"]] == ["rt:oom-retry-1"]
    retried = wait_ended(host, slurm_cluster, "retry", {"rt:oom-retry-1"})
    assert retried["rt:oom-retry-1"]["outcome"] == "success"
    assert retried["rt:oom-retry-1"]["attempt"] == 1
    again = submit(world, path, code=1)  # the retry is not submitted twice
    assert again["counts"]["added"] == 0
    board = monitor(world, "--group", "p2", "--label-glob", "rt:*", code=1)
    [g] = board["groups"]
    assert board["verdict"] == "failed" and g["total"] == 4 and g["superseded"] == 1
    assert [f["label"] for f in g["failed"]] == ["rt:bad"] and g["failed"][0]["exit_code"] == 3
    assert [b["label"] for b in g["blocked"]] == ["rt:after"]
    assert g["counts"] == {"success": 2, "failed": 1, "blocked": 1}


def test_killed_submissions_converge_to_each_label_once(
        world: World, host: SimHost, slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    body = f"""
group = "p1"
command = "{JOB} --name kc_{{i}}"
label = "kc:{{i}}"
[matrix]
i = [{", ".join(str(i) for i in range(1, 21))}]
"""
    path = playbook(tmp_path, "killed", body)
    for delay in (0.8, 1.6, 2.4):
        proc = subprocess.Popen(["inv", "-r", str(REPO), "submit-batch", "--host", "hpc",
                                 "--playbook", str(path)], env=world.env(), cwd=world.root,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        time.sleep(delay)
        with contextlib.suppress(ProcessLookupError):  # (or it had finished already)
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    final = submit(world, path)
    assert final["counts"]["add"] + final["counts"]["skip"] == 20
    labels = {f"kc:{i}" for i in range(1, 21)}
    wait_ended(host, slurm_cluster, "killed", labels)
    time.sleep(1.0)  # nothing else still queued that could run a label a second time
    assert squeue(slurm_cluster, "killed") == []
    ends = [r["label"] for r in ledger(host, "killed") if r.get("event") == "end"]
    assert sorted(ends) == sorted(labels)  # each label ran exactly once


def test_clean_has_nothing_to_clean_and_keeps_the_ledger(world: World, host: SimHost) -> None:
    before = (batch_dir(host, "chain") / "ledger.ndjson").read_text()
    proc = inv(world, "clean", "--host", "hpc", "--group", "p1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "nothing to clean" in proc.stdout
    assert (batch_dir(host, "chain") / "ledger.ndjson").read_text() == before
    bad = inv(world, "clean", "--host", "hpc", "--group", "nope")
    assert bad.returncode == 2 and "nope" in bad.stderr


def test_autoscale_tunes_the_array_throttle_live_one_step(
        world: World, host: SimHost, slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    body = f"""
group = "p2"
command = "sleep 3 # {{i}}"
label = "as:{{i}}"
[matrix]
i = [{", ".join(str(i) for i in range(1, 13))}]
"""
    out = submit(world, playbook(tmp_path, "scale", body))
    [array] = {a["id"] for a in out["added"]}
    # the throttle drifted above the host file's max (4) behind our back
    subprocess.run(["scontrol", "update", f"JobId={array}", "ArrayTaskThrottle=6"],
                   env=slurm_cluster.client_env(), check=True, timeout=30)
    try:
        proc = inv(world, "autoscale", "--host", "hpc", "--json")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        tick = result_of(proc.stdout)
        [act] = [a for a in tick["actions"] if a["group"] == "p2"]
        assert (act["before"], act["after"]) == (6, 5)  # one step per tick, toward max
        pending = subprocess.run(["squeue", "-h", "-t", "PENDING", "-j", str(array), "-o",
                                  "%K"], env=slurm_cluster.client_env(), capture_output=True,
                                 text=True, timeout=30, check=True).stdout.split()
        assert pending and all(k.endswith("%5") for k in pending), pending
    finally:
        subprocess.run(["scancel", str(array)], env=slurm_cluster.client_env(), timeout=30)


def test_retry_failed_resubmits_transient_failures_as_a_fresh_array(
        world: World, host: SimHost, slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    case = ("case {mode} in ok) true;; bad) exit 3;; "
            "oom) test -e rf.flag || (touch rf.flag; kill -KILL $$);; esac")
    body = f"""
group = "p1"
command = "{case}"
label = "rf:{{mode}}"
[matrix]
mode = ["ok", "bad", "oom"]
"""
    submit(world, playbook(tmp_path, "rfail", body))
    wait_ended(host, slurm_cluster, "rfail", {"rf:ok", "rf:bad", "rf:oom"})
    proc = inv(world, "retry-failed", "--host", "hpc", "--group", "p1", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [step] = result_of(proc.stdout)["steps"]
    assert step["data"]["re_added"] == ["rf:oom-retry-1"]  # exit 137: transient
    by = {d["label"]: d for d in step["data"]["plan"]["decisions"]}
    assert by["rf:bad"]["action"] == "skip" and by["rf:bad"]["kind"] == "persistent"
    again = inv(world, "retry-failed", "--host", "hpc", "--group", "p1", "--json")
    assert again.returncode == 0  # while it is queued or running: not twice
    assert result_of(again.stdout)["steps"][0]["data"]["re_added"] == []
    ends = wait_ended(host, slurm_cluster, "rfail", {"rf:oom-retry-1"})
    assert ends["rf:oom-retry-1"]["outcome"] == "success"
    assert (batch_dir(host, "rfail") / "logs").is_dir()


def test_audit_reads_the_batches_by_group_and_label(world: World, host: SimHost) -> None:
    """The earlier tests left failures (rt:bad) and successes in the batches' ledgers: audit
    shows them by group and label, read-only, exit 1 because something failed."""
    root = host.home / ".local/state/jobsafe-ops/batches"
    before = {p: p.stat().st_mtime for p in root.rglob("*") if p.is_file()}
    proc = inv(world, "audit", "--host", "hpc", "--json")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    groups = {g["group"]: g for g in result_of(proc.stdout)["groups"]}
    failed = {t["label"] for g in groups.values() for t in g["failed"]}
    assert "rt:bad" in failed and groups["p2"]["counts"].get("success", 0) > 0, groups
    typo = inv(world, "audit", "--host", "hpc", "--group", "nosuch")
    assert typo.returncode == 2 and "nosuch" in typo.stderr
    assert {p: p.stat().st_mtime for p in before} == before  # nothing written
