"""Deploy with nothing to do, over loopback: SSH connections opened (goal: 1 per host),
remote round trips and wall time, against a naive shell script doing one `ssh` per step
(the skill's AUDIT / lock / local-changes / PULL / VERIFY / unlock as separate commands).

    python bench/bench_deploy.py [--hosts 2] [--runs 5]

Three figures per run, medians over --runs:
* library: `run_deploy` in this process (connections and round trips counted by Remote);
* inv: `inv deploy --host h1,h2 --watch 0` as an operator runs it (Python start-up, imports,
  fan-out in parallel, one connection per host);
* naive: one `ssh` per step per host, hosts one after the other, with OpenSSH's own client
  (no connection sharing: no ControlMaster, as in the skill's examples).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

NAIVE_STEPS = [
    "pueue status --json",  # AUDIT
    "mkdir ~/.naive-deploy.lock",  # LOCK
    "git -C ~/project status --porcelain --untracked-files=no",  # local changes
    "git -C ~/project rev-parse HEAD",  # record the commit
    "git -C ~/project fetch -q origin main",  # PULL
    "git -C ~/project reset -q --hard origin/main",
    "~/project/.venv/bin/python -c 'import mypkg; print(mypkg.__version__, mypkg.__file__)'",
    "rmdir ~/.naive-deploy.lock",  # unlock
]


def naive_script(ssh_config: Path, hosts: list[str]) -> str:
    lines = ["set -e"]
    for h in hosts:
        for cmd in NAIVE_STEPS:
            lines.append(f"ssh -F {ssh_config} {h} {cmd!r} >/dev/null")
    return "\n".join(lines) + "\n"


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--hosts", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()

    from jobsafe_ops.deploy import steps as d
    from jobsafe_ops.deploy.context import DeployContext, DeployOptions
    from jobsafe_ops.inventory import load_inventory
    from jobsafe_ops.remote import connect
    from tests.world import World, find_sshd

    if find_sshd() is None:
        sys.exit("sshd not found: apt-get install openssh-server")
    with tempfile.TemporaryDirectory(prefix="jb-") as tmp, World(Path(tmp)) as world:
        names = [f"h{i + 1}" for i in range(args.hosts)]
        for name in names:
            world.add_host(name).run("pueue group add p1 -p 2 && pueue group add p2 -p 1",
                                     check=True)
        env = world.env()
        os.environ.update(env)
        inventory = load_inventory(world.inventory)
        opts = DeployOptions(watch=0)

        lib_wall, conns, trips = [], [], []
        for _ in range(args.runs):
            for name in names:
                t0 = time.perf_counter()
                remote = connect(inventory[name])
                try:
                    report = d.run_deploy(DeployContext(host=inventory[name], remote=remote,
                                                        options=opts))
                finally:
                    remote.close()
                lib_wall.append(time.perf_counter() - t0)
                assert report.exit_code == 0, report.verdict
                conns.append(remote.connections_opened)
                trips.append(remote.round_trips)

        inv_wall = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            subprocess.run(["inv", "-r", str(REPO), "deploy", "--host", ",".join(names),
                            "--watch", "0", "--json"], env=env, check=True, capture_output=True,
                           stdin=subprocess.DEVNULL)
            inv_wall.append(time.perf_counter() - t0)

        script = Path(tmp) / "naive.sh"
        script.write_text(naive_script(world.ssh_config, names))
        naive_wall = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            subprocess.run(["sh", str(script)], env=env, check=True, capture_output=True,
                           stdin=subprocess.DEVNULL)
            naive_wall.append(time.perf_counter() - t0)

    n = len(names)
    naive_conns = len(NAIVE_STEPS)
    lib_host = median(lib_wall)
    print(f"deploy with nothing to do, {n} host(s) on loopback, median of {args.runs} run(s)")
    print(f"  library  : {max(conns)} SSH connection(s) per host, {median(trips):.0f} round "
          f"trips per host, {lib_host:.2f} s per host")
    print(f"  inv      : {median(inv_wall):.2f} s for all {n} host(s) (start-up + imports + "
          "parallel fan-out)")
    print(f"  naive sh : {naive_conns} SSH connections per host ({naive_conns * n} in all), "
          f"{median(naive_wall):.2f} s for {n} host(s) ({median(naive_wall) / n:.2f} s per host)")
    print(f"  ratio connections naive/ours = {naive_conns / max(conns):.0f}x per host")
    print(f"  ratio wall naive/inv         = {median(naive_wall) / median(inv_wall):.2f}x")
    print(f"  ratio wall naive/library     = {median(naive_wall) / n / lib_host:.2f}x per host")
    ok = max(conns) == 1
    print(f"goal: 1 connection per host -> {'OK' if ok else 'FAIL'}")
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
