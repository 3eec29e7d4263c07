#!/usr/bin/env python3
"""A resumable batch job on jobsafe_ops.jobkit (standard library + jobkit only).

    python examples/resumable_job.py --symbol BTC --threshold 250 --start 2024 --end 2025 \
        --out /tmp/x

It processes one month at a time from January of --start to December of --end. After each
month it appends a progress record to a log shared by every job (flock-serialized) and saves
its cursor atomically; killed at any point and rerun with the same parameters, it continues
after the last saved month. At the end it writes its result and records completion inside the
cursor, which it keeps (AP-15): a rerun of a finished job does nothing.

Job parameters (symbol, threshold, start, end) name the cursor and the result (INV-1), so
jobs differing in any of them never share a file. --out and --max-steps are per-run settings
and stay out of the names. This is the `pueue add` command of a playbook, e.g.
`command = "python examples/resumable_job.py --symbol {symbol} --threshold {threshold} ..."`.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

from jobsafe_ops.jobkit import (
    Checkpoint,
    CheckpointSpec,
    JobkitError,
    append_ndjson,
    atomic_write_json,
)

PARAMS = ("symbol", "threshold", "start", "end")


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--symbol", required=True, help="instrument, e.g. BTCUSDT")
    ap.add_argument("--threshold", required=True, type=int, help="bar threshold (> 0)")
    ap.add_argument("--start", required=True, type=int, help="first year, e.g. 2024")
    ap.add_argument("--end", required=True, type=int, help="last year (inclusive)")
    ap.add_argument("--out", required=True, type=Path, help="output directory")
    ap.add_argument("--max-steps", type=int, default=0,
                    help="stop after this many months in this run (0: run to the end)")
    args = ap.parse_args(argv)
    # Gate before compute (validate first): bad parameters stop the job before any file is touched.
    if args.threshold <= 0 or args.start > args.end or not args.symbol.strip():
        ap.error("need --threshold > 0, --start <= --end and a non-empty --symbol")
    return args


def months(start: int, end: int) -> list[str]:
    return [f"{year}-{month:02d}" for year in range(start, end + 1) for month in range(1, 13)]


def process_month(symbol: str, threshold: int, month: str) -> int:
    """Stand-in for the real work (fetch, compute bars): a deterministic bar count."""
    digest = hashlib.sha256(f"{symbol}|{threshold}|{month}".encode()).digest()
    return int.from_bytes(digest[:2], "big") % 1000


def run(args: argparse.Namespace) -> int:
    params = {name: getattr(args, name) for name in PARAMS}
    label = f"{args.symbol}@{args.threshold}:{args.start}-{args.end}"
    cursor = Checkpoint.for_job(CheckpointSpec(args.out / "checkpoints", "bars", params=PARAMS),
                                **params)
    result_path = CheckpointSpec(args.out / "results", "bars", params=PARAMS).path(**params)
    progress_log = args.out / "progress.ndjson"  # shared by every job: locked appends

    saved = cursor.load()  # None: first run, or a cursor torn by a non-atomic writer
    if saved is not None and saved.complete:
        print(f"{label}: already complete ({cursor.path}); nothing to do")
        return 0
    state = saved.state if saved is not None else {"done": 0, "bars": 0}
    todo = months(args.start, args.end)[state["done"]:]
    if saved is not None:
        print(f"{label}: resuming after {state['done']} months from {cursor.path}")

    for step, month in enumerate(todo, 1):
        bars = process_month(args.symbol, args.threshold, month)
        # Log first, then move the cursor: a kill in between repeats this month's record on
        # the rerun (at-least-once; readers key on job+month) rather than losing it.
        append_ndjson(progress_log, [{"job": label, "month": month, "bars": bars}])
        state = {"done": state["done"] + 1, "bars": state["bars"] + bars}
        cursor.save(state)  # atomic (INV-4): after a kill, the last complete state
        if args.max_steps and step >= args.max_steps and step < len(todo):
            print(f"{label}: stopped after {step} months this run; rerun to continue")
            return 0

    atomic_write_json(result_path, {"job": label, **params, "months": state["done"],
                                    "bars": state["bars"]})
    cursor.mark_complete()  # completion recorded in the cursor, which is kept (AP-15)
    print(f"{label}: done, {state['done']} months, {state['bars']} bars -> {result_path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return run(args)
    except JobkitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
