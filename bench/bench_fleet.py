"""submit-batch --spread benchmark over three loopback sshd hosts (pueue stand-in, or real
pueue when it is on PATH): a spread of 10,000 and 100,000 commands (units mode), with

* SSH connections per host (each host's report; goal: 1 each, hosts in parallel);
* wall time against the slowest single-host submit of its share (the same commands as a
  fresh batch on that host alone, timed the same way, in process; goal: <= 1.3x);
* the same against the three solo shares submitted at the same time from one process:
  on loopback the "hosts" share this box's cores, and the laptop side of every host's
  submit (planning, deciding, the per-job program check) shares one Python process (the
  GIL), so the shares cannot run side by side as on three machines; this ratio is the cost
  of spreading itself (reads, assignment, spread.tsv), goal <= 1.3x too;
* balance: each host's share against the capacity weights the assignment used (slots from
  cores, free memory / job_memory and the group's max; goal: within 1 % of the labels).

The hosts' job_memory differs so the weights do (host fb fits one job, fa and fc two).
The groups are paused: this measures submission only.

    python bench/bench_fleet.py [--quick]      # --quick: 10,000 only
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

GROUP = "bench"
NAMES = ("fa", "fb", "fc")
RATIO_GOAL = 1.3
BALANCE_GOAL = 0.01


def playbook_text(name: str, n: int) -> str:
    b = 1000 if n >= 1000 else n
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
a = {list(range(n // b))}
b = {list(range(b))}
"""


@dataclass
class Spread:
    n: int
    seconds: float
    sessions: dict[str, int]
    shares: dict[str, int]
    weights: dict[str, int]
    solo: dict[str, float]
    together: float  # the three solo shares submitted at once from this process

    @property
    def ratio(self) -> float:
        return self.seconds / max(self.solo.values())

    @property
    def overhead(self) -> float:
        return self.seconds / self.together

    @property
    def imbalance(self) -> float:
        total = sum(self.weights.values())
        return max(abs(self.shares[h] / self.n - w / total) for h, w in self.weights.items())


def spread_run(world: object, name: str, n: int) -> Spread:
    from jobsafe_ops.batch.fleet import plans_for, share_plan
    from jobsafe_ops.batch.playbook import parse_playbook
    from jobsafe_ops.batch.submit import submit, submit_batch_cmd
    from jobsafe_ops.cli import each
    from jobsafe_ops.config import activated
    from jobsafe_ops.inventory import load_inventory
    from jobsafe_ops.remote import session

    inv = load_inventory(world.inventory)  # type: ignore[attr-defined]
    path = Path(world.root) / f"{name}.toml"  # type: ignore[attr-defined]
    path.write_text(playbook_text(name, n))
    out = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(out), activated(str(world.inventory)):  # type: ignore[attr-defined]
        code = submit_batch_cmd(",".join(NAMES), str(path), dry=False, allow_uncapped=False,
                                units=True, unit_size=None, inventory=None, json_out=True,
                                spread=True)
    seconds = time.perf_counter() - t0
    doc = json.loads(out.getvalue())
    if code != 0:
        raise SystemExit(f"{name}: spread exited {code}: {doc['hosts']}")
    rows = {r["host"]: r["result"]["ssh"] for r in doc["hosts"]}
    sessions = {h: rows[h]["connections"] for h in NAMES}
    hosts = {h["host"]: h for h in doc["result"]["hosts"]}
    shares = {h: hosts[h]["labels"] for h in NAMES}
    weights = {h: hosts[h]["capacity"][0]["slots"] for h in NAMES}
    # each share alone, as a fresh batch on its host: planned and submitted the same way
    owner = {}
    for h in NAMES:
        text = (Path(world[h].home) / ".local/state/jobsafe-ops/batches"  # type: ignore[index]
                / name / "spread.tsv").read_text()
        owner.update(line.rsplit("\t", 1) for line in text.splitlines())
    def alone(h: str, batch: str) -> float:
        book = parse_playbook(tomllib.loads(playbook_text(batch, n)), batch)
        mine = {f"{batch}:{lbl.split(':', 1)[1]}" for lbl, o in owner.items() if o == h}
        t1 = time.perf_counter()
        with activated(str(world.inventory)):  # type: ignore[attr-defined]
            plan = share_plan(plans_for(book, [inv[h]])[h], mine)
            with session(inv[h]) as remote:
                report = submit(remote, plan, units=True)
        if report.errors:
            raise SystemExit(f"{h}: solo errors {report.errors[:3]}")
        return time.perf_counter() - t1

    solo = {h: alone(h, f"{name}solo") for h in NAMES}
    t2 = time.perf_counter()
    each(list(NAMES), lambda h: alone(h, f"{name}conc"))
    together = time.perf_counter() - t2
    return Spread(n, seconds, sessions, shares, weights, solo, together)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="10,000 only")
    args = ap.parse_args()
    from tests.world import World, find_sshd

    if find_sshd() is None:
        raise SystemExit("sshd not found (apt-get install openssh-server)")
    avail = next(int(line.split()[1]) * 1024 for line in Path("/proc/meminfo").read_text()
                 .splitlines() if line.startswith("MemAvailable:"))
    fits = {"fa": 2.5, "fb": 1.5, "fc": 2.5}  # jobs of job_memory that fit in free memory
    with tempfile.TemporaryDirectory(prefix="jbf-") as tmp, World(Path(tmp)) as world:
        for h in NAMES:
            mem = f"{int(avail / fits[h]) // 1024**2}M"
            world.add_host(h, groups={GROUP: {"parallel": 2, "min": 1, "max": 2,
                                              "job_memory": mem}}, project=True)
            world[h].run(f"pueue group add {GROUP} --parallel 2 && pueue pause --group {GROUP}",
                         check=True)
        os.environ.update(world.env())
        pueue = "real pueue" if world.real_pueue else "pueue stand-in"
        print(f"3 hosts: loopback sshd, {pueue}; group {GROUP!r} paused (submission only)")
        spread_run(world, "warm", 100)  # imports and first connections: not measured
        runs = [spread_run(world, "s10k", 10_000)]
        if not args.quick:
            runs.append(spread_run(world, "s100k", 100_000))
    head = (f"{'commands':>9} {'conns/host':>11} {'shares (weights)':>26} {'spread s':>9} "
            f"{'slowest solo s':>15} {'ratio':>6} {'solos at once s':>16} {'ratio':>6} "
            f"{'imbalance':>10}")
    print()
    print(head)
    print("-" * len(head))
    ok = fair = True
    for r in runs:
        shares = " ".join(f"{r.shares[h]}({r.weights[h]})" for h in NAMES)
        print(f"{r.n:>9,} {'/'.join(str(r.sessions[h]) for h in NAMES):>11} {shares:>26} "
              f"{r.seconds:>9.1f} {max(r.solo.values()):>15.1f} {r.ratio:>5.2f}x "
              f"{r.together:>16.1f} {r.overhead:>5.2f}x {r.imbalance:>9.2%}")
        ok &= all(s == 1 for s in r.sessions.values())
        ok &= r.ratio <= RATIO_GOAL and r.imbalance <= BALANCE_GOAL
        fair &= r.overhead <= RATIO_GOAL
    print(f"\ngoals: 1 SSH connection per host; wall <= {RATIO_GOAL}x the slowest single-host "
          f"share; shares within {BALANCE_GOAL:.0%} of the capacity weights")
    print(f"spread vs the solo shares at once (the cost of spreading, on {os.cpu_count()} "
          f"core(s)): {'PASS' if fair else 'FAIL'}")
    print("PASS" if ok else "FAIL")


if __name__ == "__main__":
    main()
