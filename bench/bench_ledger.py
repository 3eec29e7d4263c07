"""The outcome ledger's host-side scan (what every `inv monitor` poll and submit-batch rerun
pays on the host): a ledger of N finished jobs in the watched group, a few failed and
retried, plus another batch's ledger of N jobs in another group.

    python bench/bench_ledger.py [--jobs 50000] [--runs 3]

Goal: the scan of the watched group (read + the records that matter) in <= 0.5 s at 50,000
jobs on this 2-core box; printed as PASS/FAIL with the median.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from jobsafe_ops.hostside import monitor_filter  # noqa: E402

GOAL = 0.5


def write(path: Path, group: str, jobs: int, failures: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        for i in range(jobs):
            failed = i < failures
            rec = {"v": 1, "label": f"BTC@{i}:sweep", "group": group, "batch": path.parent.name,
                   "attempt": 0, "event": "end", "exit": 1 if failed else 0,
                   "outcome": "failed" if failed else "success",
                   "start": "2026-01-01T00:00:00.000000Z", "end": "2026-01-01T00:00:09.000000Z"}
            if failed:
                rec.update(command=f"python sweep.py --n {i}", workdir="/home/u/project")
            fh.write(json.dumps(rec, separators=(",", ":")) + "\n")
        for i in range(failures // 2):  # half the failures retried successfully
            rec = {"v": 1, "label": f"BTC@{i}:sweep-retry-1", "group": group, "attempt": 1,
                   "batch": path.parent.name, "event": "end", "exit": 0, "outcome": "success"}
            fh.write(json.dumps(rec, separators=(",", ":")) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write(root / "sweep" / "ledger.ndjson", "p1", args.jobs, 20)
        write(root / "other" / "ledger.ndjson", "p2", args.jobs, 20)
        times, found = [], 0
        for _ in range(args.runs):
            started = time.perf_counter()
            found = len(monitor_filter.ledger_records("p1", str(root)))
            times.append(time.perf_counter() - started)
        median = statistics.median(times)
        size = sum(p.stat().st_size for p in root.glob("*/ledger.ndjson"))
    verdict = "PASS" if median <= GOAL else "FAIL"
    print(f"ledger scan: {args.jobs} jobs in the group + {args.jobs} in another "
          f"({size / 1e6:.1f} MB): {median:.3f} s median, {found} records that matter "
          f"(goal <= {GOAL} s at 50,000: {verdict})")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
