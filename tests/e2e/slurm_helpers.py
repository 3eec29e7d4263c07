"""What the Slurm e2e modules share: the login node `hpc` of a world, the `inv` runner, a
playbook file, submit-batch and monitor on it, and the batch dir's ledger and what the real
cluster's `squeue` shows, read back."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

from jobsafe_ops.testing.slurm import PARTITION, SlurmCluster
from tests.jsonout import result_of
from tests.world import SimHost, World

REPO = Path(__file__).resolve().parents[2]
JOB = ".venv/bin/python scripts/job.py"
GROUPS = {"p1": {"parallel": 3, "min": 1, "max": 6, "job_memory": "100M"},
          "p2": {"parallel": 2, "min": 1, "max": 4, "job_memory": "100M", "cpus": 1}}
PASS = 'pass_env = ["JOBSAFE_WORLD", "JOBSAFE_WORLD_HOST"]\n'


def slurm_host(world: World, slurm_cluster: SlurmCluster) -> SimHost:
    """The world's login node `hpc` of the Slurm cluster (a module fixture calls this)."""
    # memory_cap = false: this cluster does not enforce --mem (task/none), said in reports
    return world.add_host("hpc", groups=GROUPS, pueue=False, extra_env=slurm_cluster.env,
                          host_keys={"scheduler": "slurm", "partition": PARTITION})


def inv(world: World, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["inv", "-r", str(REPO), *args], env=world.env(),
                          capture_output=True, text=True, timeout=timeout, cwd=world.root)


def playbook(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(f'name = "{name}"\n' + PASS + body)
    return path


def submit(world: World, path: Path, *args: str, code: int = 0,
           host: str = "hpc") -> dict[str, Any]:
    proc = inv(world, "submit-batch", "--host", host, "--playbook", str(path), "--json", *args)
    assert proc.returncode == code, proc.stdout + proc.stderr
    return result_of(proc.stdout)  # type: ignore[no-any-return]


def batch_dir(host: SimHost, name: str) -> Path:
    return host.home / ".local/state/jobsafe-ops/batches" / name


def ledger(host: SimHost, name: str) -> list[dict[str, Any]]:
    path = batch_dir(host, name) / "ledger.ndjson"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def squeue(cluster: SlurmCluster, name: str) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-r", "-o", "%i|%j|%T|%r"], env=cluster.client_env(),
                         capture_output=True, text=True, timeout=30, check=True).stdout
    return [line for line in out.splitlines() if f"|jobsafe:{name}:" in line]


def wait_ended(host: SimHost, cluster: SlurmCluster, name: str, labels: set[str],
               timeout: float = 90) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        ends = {r["label"]: r for r in ledger(host, name) if r.get("event") == "end"}
        if labels <= set(ends):
            return ends
        assert time.monotonic() < deadline, (
            f"not ended in {timeout}s: {sorted(labels - set(ends))}; squeue: "
            f"{squeue(cluster, name)}")
        time.sleep(0.3)


def monitor(world: World, *args: str, code: int) -> dict[str, Any]:
    proc = inv(world, "monitor", "--host", "hpc", "--once", "--json", *args)
    assert proc.returncode == code, proc.stdout + proc.stderr
    return result_of(proc.stdout)  # type: ignore[no-any-return]
