"""submit-batch benchmark against a loopback sshd host (pueue stand-in, or real pueue when
it is on PATH): SSH connections opened per host (must stay 1-2 whatever N), wall time and
jobs/s for 10,000 and 100,000 commands, against the naive loop of one `ssh host pueue add`
per job (AP-12), timed on a sample and extrapolated. Goal: >= 100x at 100,000.

    python bench/bench_submit.py [--quick] [--direct]

--quick: 10,000 commands (units mode) and a 50-job naive sample, no 100,000 run.
Default: 10,000 (units mode, forced) and 100,000 (units mode, automatic above 10,000),
naive loop timed on 200 jobs. --direct adds 10,000 fed as one pueue task each (no units):
it shows why units exist (every add rewrites the whole state file, AP-10; about 20 min
with the stand-in on a 2-core box). The group is paused: this measures submission only.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

GROUP = "bench"


@dataclass
class Run:
    label: str
    n: int
    seconds: float
    plan_seconds: float
    connections: int
    round_trips: int
    pueue_tasks: int

    @property
    def rate(self) -> float:
        return self.n / self.seconds


def playbook_text(name: str, n: int) -> str:
    # a x b = n, so the TOML stays small; every job has its own label (INV-1)
    b = 1000 if n >= 1000 else n
    a = n // b
    return f"""
name = "{name}"
group = "{GROUP}"
command = "true {{a}} {{b}}"
label = "{name}:{{a}}.{{b}}"
pass_env = ["JOBSAFE_WORLD"]
[units]
size = 500
parallel = 8
[matrix]
a = {list(range(a))}
b = {list(range(b))}
[[after]]
label = "{name}:after"
command = "true"
"""


def submit_run(world: object, host_name: str, name: str, n: int, units: bool | None) -> Run:
    import tomllib

    from jobsafe_ops.batch.playbook import parse_playbook, plan_batch
    from jobsafe_ops.batch.submit import submit
    from jobsafe_ops.inventory import load_inventory
    from jobsafe_ops.remote import session

    host = load_inventory(world.inventory)[host_name]  # type: ignore[attr-defined]
    t0 = time.perf_counter()
    plan = plan_batch(parse_playbook(tomllib.loads(playbook_text(name, n)), name), host)
    t_plan = time.perf_counter() - t0
    with session(host) as remote:
        report = submit(remote, plan, units=units)
    seconds = time.perf_counter() - t0
    if report.errors or report.count("add") != len(report.added):
        raise SystemExit(f"{name}: feeder errors {report.errors[:3]}")
    return Run(f"{n:,} commands ({report.mode}{f', {report.units} units' if report.units else ''})",
               n, seconds, t_plan, report.connections, report.round_trips, len(report.added))


def naive(world: object, host_name: str, sample: int) -> float:
    """Seconds per job of `ssh host pueue add ...`, one SSH connection per job."""
    argv = world.ssh_argv  # type: ignore[attr-defined]
    env = world.env()  # type: ignore[attr-defined]
    t0 = time.perf_counter()
    for i in range(sample):
        # the world's hosts have pueue in ~/.local/bin only (not on the non-login PATH)
        cmd = (f"~/.local/bin/pueue add --group {GROUP} --label naive-{i} "
               "--working-directory ~/project --print-task-id -- true")
        subprocess.run(argv(host_name, cmd), env=env, check=True, capture_output=True,
                       stdin=subprocess.DEVNULL)
    return (time.perf_counter() - t0) / sample


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="10,000 only, 50-job naive sample")
    ap.add_argument("--direct", action="store_true",
                    help="also 10,000 as one pueue task per job (slow: shows AP-10)")
    args = ap.parse_args()
    from tests.world import World, find_sshd

    if find_sshd() is None:
        raise SystemExit("sshd not found (apt-get install openssh-server)")
    sample = 50 if args.quick else 200
    with tempfile.TemporaryDirectory(prefix="jbs-") as tmp, World(Path(tmp)) as world:
        groups = {GROUP: {"parallel": 4, "min": 1, "max": 8}}
        world.add_host("bench", groups=groups)
        os.environ.update(world.env())
        host = world["bench"]
        host.run(f"pueue group add {GROUP} --parallel 4 && pueue pause --group {GROUP}",
                 check=True)
        pueue = "real pueue" if world.real_pueue else "pueue stand-in"
        print(f"host: loopback sshd, {pueue}; group {GROUP!r} paused (submission only)")
        per_job = naive(world, "bench", sample)
        print(f"naive loop: {sample} x `ssh bench pueue add` = {per_job * 1000:.0f} ms/job "
              f"({1 / per_job:.1f} jobs/s), one SSH connection per job")
        runs = [submit_run(world, "bench", "u10k", 10_000, units=True)]
        if not args.quick:
            runs.append(submit_run(world, "bench", "u100k", 100_000, units=None))
        if args.direct:
            runs.append(submit_run(world, "bench", "d10k", 10_000, units=False))
        print()
        head = (f"{'batch':<34} {'ssh conns':>9} {'round trips':>11} {'pueue adds':>10} "
                f"{'plan s':>7} {'wall s':>8} {'jobs/s':>9} {'naive est.':>11} {'speed-up':>9}")
        print(head)
        print("-" * len(head))
        for r in runs:
            est = per_job * r.n
            print(f"{r.label:<34} {r.connections:>9} {r.round_trips:>11} {r.pueue_tasks:>10} "
                  f"{r.plan_seconds:>7.1f} {r.seconds:>8.1f} {r.rate:>9.0f} "
                  f"{_dur(est):>11} {est / r.seconds:>8.0f}x")
        worst = max(r.connections for r in runs)
        print(f"\nSSH connections per host per submit: {worst} (goal: 1-2 whatever N)")
        big = [r for r in runs if r.n == 100_000]
        if big:
            ratio = per_job * big[0].n / big[0].seconds
            verdict = "met" if ratio >= 100 else "NOT met"
            print(f"100,000 commands: {ratio:.0f}x faster than the naive loop "
                  f"(goal >= 100x: {verdict})")


def _dur(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.0f} s"


if __name__ == "__main__":
    main()
