"""Foundation benchmark: `inv --list` startup vs `python -c "import fabric"`, and SSH
connections opened / round trips per `inv probe` against a loopback sshd host (must be 1).

    python bench/bench_startup.py [--runs N]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def timed(argv: list[str], runs: int) -> float:
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(argv, cwd=REPO, check=True, capture_output=True)
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def probe_connections() -> tuple[int, int, float] | None:
    from jobsafe_ops.facts.probe import run_probe
    from jobsafe_ops.inventory import load_inventory
    from jobsafe_ops.remote import connect
    from tests.world import World, find_sshd

    if find_sshd() is None:
        print("sshd not found: skipping the connection count (apt-get install openssh-server)")
        return None
    import os

    with tempfile.TemporaryDirectory(prefix="jb-") as tmp, World(Path(tmp)) as world:
        world.add_host("bench", project=False)
        os.environ.update(world.env())
        host = load_inventory(world.inventory)["bench"]
        t0 = time.perf_counter()
        remote = connect(host)
        try:
            run_probe(remote)
        finally:
            remote.close()
        return remote.connections_opened, remote.round_trips, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    inv_list = timed([sys.executable, "-m", "invoke", "--list"], args.runs)
    fabric = timed([sys.executable, "-c", "import fabric"], args.runs)
    bare = timed([sys.executable, "-c", "pass"], args.runs)
    print(f"inv --list                : {inv_list * 1000:7.1f} ms (median of {args.runs})")
    print(f"python -c 'import fabric' : {fabric * 1000:7.1f} ms")
    print(f"python -c 'pass'          : {bare * 1000:7.1f} ms")
    print(f"ratio inv --list / import fabric = {inv_list / fabric:.2f} "
          "(tasks import jobsafe_ops lazily, so listing never loads fabric/paramiko)")
    counted = probe_connections()
    if counted:
        conns, trips, secs = counted
        print(f"inv probe: {conns} SSH connection(s), {trips} round trip(s), {secs:.2f} s "
              f"(goal: 1 connection) -> {'OK' if conns == 1 else 'FAIL'}")


if __name__ == "__main__":
    main()
