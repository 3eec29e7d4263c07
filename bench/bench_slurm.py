"""submit-batch and monitor on a Slurm host: a real single-node Slurm (munged + slurmctld +
slurmd on loopback, jobsafe_ops/testing/slurm.py) whose login node is a loopback sshd world
host. The partition is set DOWN first, so this measures submission only (nothing runs).

    python bench/bench_slurm.py [--jobs 100000] [--sample 50] [--finished 10000]
                                [--unit-size 500]

Prints, for N commands: SSH connections, sbatch calls (goal <= ceil(N / MaxArraySize) per
group and phase), wall time to submitted, versus one `ssh login sbatch` per job timed on a
sample and extrapolated; the same N in units mode (`--units`: one element per unit of
--unit-size commands; goal <= ceil(units / MaxArraySize) sbatch calls, and elements = units);
and one monitor poll (time, bytes) over a batch whose ledger holds --finished outcomes.
PASS/FAIL per goal.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

GROUP = "bench"


def playbook_text(name: str, n: int) -> str:
    b = 1000 if n >= 1000 else n
    return f"""
name = "{name}"
group = "{GROUP}"
command = "true {{a}} {{b}}"
label = "{name}:{{a}}.{{b}}"
[matrix]
a = {list(range(n // b))}
b = {list(range(b))}
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=100_000)
    ap.add_argument("--sample", type=int, default=50, help="jobs of the naive sbatch loop")
    ap.add_argument("--finished", type=int, default=10_000)
    ap.add_argument("--unit-size", type=int, default=500, help="commands per unit (--units)")
    args = ap.parse_args()
    from jobsafe_ops.batch.playbook import parse_playbook, plan_batch
    from jobsafe_ops.batch.slurm_submit import submit
    from jobsafe_ops.facts.slurm_snapshot import read_slurm_snapshot
    from jobsafe_ops.facts.snapshot import Options, Snapshot
    from jobsafe_ops.inventory import load_inventory
    from jobsafe_ops.remote import session
    from jobsafe_ops.testing.slurm import PARTITION, SlurmCluster, missing_programs
    from jobsafe_ops.testing.world import World

    if missing_programs():
        raise SystemExit(f"missing: {', '.join(missing_programs())} (see .ci/run)")
    results: list[tuple[str, bool]] = []
    # MaxJobCount counts every array element (default 10,000)
    limit = (f"MaxJobCount={2 * args.jobs + 10_000}",)
    with tempfile.TemporaryDirectory(prefix="jbsl-") as tmp, \
            SlurmCluster(Path(tmp) / "slurm", extra_conf=limit) as cluster, \
            World(Path(tmp) / "w") as world:
        subprocess.run(["scontrol", "update", f"PartitionName={PARTITION}", "State=DOWN"],
                       env=cluster.client_env(), check=True)
        world.add_host("login", groups={GROUP: {"parallel": 8, "min": 1, "max": 16,
                                                "job_memory": "100M"}},
                       pueue=False, project=False, extra_env=cluster.env,
                       host_keys={"scheduler": "slurm"})
        (world["login"].home / "project").mkdir()
        os.environ.update(world.env())
        host = load_inventory(world.inventory)["login"]
        print(f"cluster: Slurm single node, partition {PARTITION} DOWN (submission only)")

        t0 = time.perf_counter()
        for i in range(args.sample):
            # the naive baseline, on purpose  # jobsafe: ignore[sbatch-per-job]
            subprocess.run(world.ssh_argv("login", f"cd ~/project && sbatch --parsable "
                                          f"--job-name=naive --mem=100M --wrap 'true {i}'"),
                           env=world.env(), check=True, capture_output=True,
                           stdin=subprocess.DEVNULL)
        per_job = (time.perf_counter() - t0) / args.sample
        subprocess.run(["scancel", "--name=naive"], env=cluster.client_env(), check=True)
        print(f"naive loop: {args.sample} x `ssh login sbatch` = {per_job * 1000:.0f} ms/job")

        name = "sl"
        t0 = time.perf_counter()
        plan = plan_batch(parse_playbook(tomllib.loads(playbook_text(name, args.jobs)), name),
                          host)
        t_plan = time.perf_counter() - t0
        with session(host) as remote:
            report = submit(remote, plan, allow_uncapped=True, units=False)  # (not auto)
        wall = time.perf_counter() - t0
        arrays = len({tid for _, tid in report.added})
        max_array = 1001
        goal = math.ceil(args.jobs / max_array)
        print(f"\n{args.jobs:,} commands: plan {t_plan:.1f} s, submitted in {wall:.1f} s "
              f"({args.jobs / wall:,.0f} jobs/s); {report.connections} SSH connection(s), "
              f"{report.round_trips} round trips, {arrays} sbatch call(s)")
        est = per_job * args.jobs
        print(f"naive estimate: {est / 3600:.1f} h -> {est / wall:,.0f}x faster")
        results.append((f"1 SSH connection (got {report.connections})",
                        report.connections == 1))
        results.append((f"sbatch calls <= ceil(N / MaxArraySize) = {goal} (got {arrays})",
                        arrays <= goal))
        results.append((f"every label submitted ({len(report.added):,})",
                        len(report.added) == args.jobs))

        # units mode: the same N commands, one array element per unit
        name = "su"
        plan = plan_batch(parse_playbook(tomllib.loads(playbook_text(name, args.jobs)), name),
                          host)
        t0 = time.perf_counter()
        with session(host) as remote:
            units = submit(remote, plan, allow_uncapped=True, units=True,
                           unit_size=args.unit_size)
        wall = time.perf_counter() - t0
        unit_arrays = len({tid for _, tid in units.added})
        n_units = math.ceil(args.jobs / args.unit_size)
        unit_goal = math.ceil(n_units / max_array)
        print(f"units mode (--unit-size {args.unit_size}): {len(units.added):,} elements "
              f"for {args.jobs:,} commands in {wall:.1f} s; {unit_arrays} sbatch call(s) "
              f"vs {arrays} without units")
        results.append((f"units: sbatch calls <= ceil(units / MaxArraySize) = {unit_goal} "
                        f"(got {unit_arrays}; {arrays} without units)",
                        unit_arrays <= unit_goal))
        results.append((f"units: one element per unit ({len(units.added):,} = {n_units:,})",
                        len(units.added) == n_units))

        # monitor: a batch whose ledger holds `finished` outcomes
        bdir = world["login"].home / ".local/state/jobsafe-ops/batches/done"
        bdir.mkdir(parents=True)
        with open(bdir / "ledger.ndjson", "w") as fh:
            for i in range(args.finished):
                fh.write(json.dumps({"v": 1, "label": f"done:{i}", "group": GROUP,
                                     "batch": "done", "attempt": 0, "event": "end",
                                     "exit": 0 if i % 100 else 1,
                                     "outcome": "success" if i % 100 else "failed",
                                     "start": "2026-12-01T00:00:00.000000Z",
                                     "end": "2026-12-01T00:00:01.000000Z"},
                                    separators=(",", ":")) + "\n")
        def poll() -> tuple[float, Snapshot]:
            with session(host) as remote:
                t0 = time.perf_counter()
                snap = read_slurm_snapshot(remote, Options(group=GROUP, label_glob="done:*"))
                return time.perf_counter() - t0, snap

        busy, snap = poll()
        print(f"\nmonitor poll, {args.finished:,} finished + {args.jobs:,} pending elements: "
              f"{busy:.2f} s, received {snap.received:,} B")
        subprocess.run(["scancel", "--me"], env=cluster.client_env(), check=False)
        while subprocess.run(["squeue", "-h", "--me"], env=cluster.client_env(),
                             capture_output=True, text=True).stdout.strip():
            time.sleep(0.5)
        seconds, snap = poll()
        g = snap.view(GROUP)
        print(f"monitor poll, {args.finished:,} finished elements: {seconds:.2f} s, sent "
              f"{snap.sent:,} B, received {snap.received:,} B; total {g.total:,}, "
              f"failed {g.count('failed')}")
        results.append((f"monitor poll <= 1 s (got {seconds:.2f} s)", seconds <= 1.0))
        results.append((f"monitor poll received <= 64 KB (got {snap.received:,} B)",
                        snap.received <= 64 * 1024))
    print()
    for what, ok in results:
        print(f"{'PASS' if ok else 'FAIL'}  {what}")
    sys.exit(0 if all(ok for _, ok in results) else 1)


if __name__ == "__main__":
    main()
