"""Soak: many CLI runs at once against one loopback host. Per round, all at the same time:
--monitors `inv monitor --once --json` processes and 5 `inv submit-batch` runs (3 distinct
playbooks + 2 more runs of the first one: exactly once per label must hold under
concurrency). Then the host's pueue state is checked label by label.

    python bench/bench_soak.py [--monitors 20] [--jobs 20] [--rounds 2] [--timeout 300]

Reports errors (must be 0), duplicate labels (0), lost labels (0), labels added summed
over every submit run (= the number of labels: each added by exactly one run), p50/p95/max
latency per command kind and the total wall time; exits 1 when any of these is off.
Outcomes are classified by meaning: `monitor --once` exiting 3 ("still running") while the
batches are being fed is an answer, not an error; a non-zero exit of submit-batch, a
monitor exit other than 0/3, unparsable --json, a traceback or a timeout is an error.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.jsonout import result_of  # noqa: E402 - the envelope, checked against its schema

HOST = "soak"
GROUP = "p1"
MONITOR_OK = {0, 3}  # done, or still running: both are answers


@dataclass(frozen=True)
class Run:
    kind: str
    name: str
    code: int | None  # None: timed out (killed)
    seconds: float
    error: str  # "" when the outcome is what the command means to say
    added: int = 0  # submit: labels this run added (the sum over runs must be the total)


def playbook(directory: Path, name: str, jobs: int) -> Path:
    path = directory / f"{name}.toml"
    path.write_text(
        f'name = "{name}"\ngroup = "{GROUP}"\nworkdir = "~"\n'
        f'command = "sleep 0.05 # {name} {{n}}"\nlabel = "{name}:{{n}}"\n'
        # the world's marker, so its teardown finds the jobs
        'pass_env = ["JOBSAFE_WORLD", "JOBSAFE_WORLD_HOST"]\n'
        f"[matrix]\nn = {list(range(jobs))}\n")
    return path


def run(kind: str, name: str, argv: list[str], env: dict[str, str], timeout: float) -> Run:
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return Run(kind, name, None, time.perf_counter() - t0, f"timed out after {timeout}s")
    seconds = time.perf_counter() - t0
    error = classify(kind, proc)
    added = 0 if error or kind != "submit" else result_of(proc.stdout)["counts"]["added"]
    return Run(kind, name, proc.returncode, seconds, error, added)


def classify(kind: str, proc: subprocess.CompletedProcess[str]) -> str:
    if "Traceback" in proc.stderr or "internal error" in proc.stderr:
        return "traceback: " + proc.stderr.strip().splitlines()[-1]
    try:
        doc = result_of(proc.stdout)
    except Exception:  # noqa: BLE001 - not JSON, or not the command's schema
        return f"exit {proc.returncode}, no JSON: {proc.stderr.strip()[:200]}"
    if kind == "monitor":
        if proc.returncode not in MONITOR_OK or doc.get("exit_code") != proc.returncode:
            return f"exit {proc.returncode}: {proc.stderr.strip()[:200]}"
        return ""
    if proc.returncode != 0:
        return f"exit {proc.returncode}: {proc.stderr.strip()[:200]}"
    return ""


def pct(xs: list[float], p: float) -> float:
    if len(xs) == 1:
        return xs[0]
    return statistics.quantiles(xs, n=100, method="inclusive")[int(p) - 1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--monitors", type=int, default=20, help="parallel monitor --once runs")
    ap.add_argument("--jobs", type=int, default=20, help="jobs per playbook")
    ap.add_argument("--rounds", type=int, default=2,
                    help="rounds (a later round reruns the same playbooks: all skipped)")
    ap.add_argument("--timeout", type=float, default=300.0,
                    help="seconds before one command counts as an error (and is killed)")
    args = ap.parse_args()
    if min(args.monitors, args.jobs, args.rounds) < 1 or args.timeout <= 0:
        sys.exit("--monitors, --jobs, --rounds must be >= 1 and --timeout > 0")

    from tests.world import World, find_sshd

    if find_sshd() is None:
        sys.exit("sshd not found: apt-get install openssh-server")
    runs: list[Run] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="jb-") as tmp, World(Path(tmp)) as world:
        host = world.add_host(HOST, project=False)
        env = world.env()
        inv = [sys.executable, "-m", "invoke", "-r", str(REPO)]
        books = {n: playbook(Path(tmp), n, args.jobs) for n in ("soak-a", "soak-b", "soak-c")}
        # 3 distinct playbooks + the first one twice more, all at once
        submits = ["soak-a", "soak-b", "soak-c", "soak-a", "soak-a"]
        for _ in range(args.rounds):
            commands = [("submit", n, [*inv, "submit-batch", "--host", HOST, "--playbook",
                                       str(books[n]), "--json"]) for n in submits]
            commands += [("monitor", f"m{i}", [*inv, "monitor", "--host", HOST, "--group",
                                               GROUP, "--once", "--json"])
                         for i in range(args.monitors)]
            with ThreadPoolExecutor(max_workers=len(commands)) as pool:
                runs += pool.map(lambda c: run(c[0], c[1], c[2], env, args.timeout), commands)
        tasks = host.pueue_status()["tasks"].values()
        seen = Counter(t["label"] for t in tasks if t["group"] == GROUP)
    wall = time.perf_counter() - started

    expected = {f"{n}:{i}" for n in books for i in range(args.jobs)}
    duplicates = {lbl: c for lbl, c in seen.items() if c > 1}
    lost = sorted(expected - set(seen))
    errors = [r for r in runs if r.error]
    print(f"soak: 1 loopback host, {args.rounds} round(s) of {args.monitors} x monitor --once "
          f"+ 5 x submit-batch (3 playbooks + 2 reruns of one, {args.jobs} jobs each), "
          "all at once")
    print(f"  {'command':<14}{'runs':>5}{'p50 s':>8}{'p95 s':>8}{'max s':>8}  exit codes")
    for kind in ("submit", "monitor"):
        mine = [r for r in runs if r.kind == kind]
        secs = [r.seconds for r in mine]
        codes = Counter("timeout" if r.code is None else str(r.code) for r in mine)
        print(f"  {kind:<14}{len(mine):>5}{pct(secs, 50):>8.2f}{pct(secs, 95):>8.2f}"
              f"{max(secs):>8.2f}  {dict(sorted(codes.items()))}")
    added = sum(r.added for r in runs)
    print(f"  labels: {len(expected)} expected, {len(seen)} distinct on the host, "
          f"{added} added over all submit runs")
    print(f"  errors: {len(errors)}   duplicate labels: {len(duplicates)}   "
          f"lost labels: {len(lost)}   wall: {wall:.1f} s")
    for r in errors[:10]:
        print(f"    error {r.kind} {r.name}: {r.error}")
    if duplicates:
        print(f"    duplicates: {dict(list(duplicates.items())[:10])}")
    if lost:
        print(f"    lost: {lost[:10]}")
    ok = not errors and not duplicates and not lost and added == len(expected)
    print(f"goal: 0 errors, 0 duplicates, 0 lost -> {'OK' if ok else 'FAIL'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
