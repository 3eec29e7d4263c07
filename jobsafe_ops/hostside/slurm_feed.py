#!/usr/bin/env python3
"""jobsafe-ops Slurm feeder: uploaded with feeder.py next to a commands file and run ON the
cluster's login node with its python3 (standard library only, like feeder.py).

Modes
  submit COMMANDS --batch-dir B --playbook P   one `sbatch --array` per chunk, once per label
  element CHUNK --ledger L --group G            one array element: run line $SLURM_ARRAY_TASK_ID
  status --batch-dir B --playbook P [--group G] this batch's queued/running elements, by label
  board --root R [--group G] [--glob X]         the monitor's summary over every batch under R
  records --root R --group G                    retry-failed's facts (outcomes, active labels)
  report --root R --group G [--batch B]         jobsafe report's payload: every attempt

Commands file: JSON lines {"label", "group", "workdir" (absolute), "command", "after":
[labels], "chunk" (the array it belongs to: same group, phase, workdir, memory), "mem"
(bytes or null), "cpus", "throttle"} and, for a unit (units mode), "unit_file" +
"unit_commands" as feeder.py takes them. Consecutive lines of one chunk become arrays of at
most --max-array elements.

Exactly once per label: under the batch lock, the labels squeue shows active for this
batch (job name `jobsafe:<playbook>:<group>`; the array's --comment names its chunk file
`<B>/arrays/<digest>.jsonl`, written before the sbatch), the labels the ledger records
as succeeded and those `jobsafe cancel` recorded as cancelled are left out; a kill between
the chunk file and the sbatch leaves a file no array points at (harmless), a kill after
the sbatch leaves an array squeue shows (its labels are skipped by the rerun).

Each element runs its line through feeder.py's `run` wrapper (same ledger records, same
signal forwarding), its output in `<B>/logs/<label>.log`. A unit's element runs feeder.py's
`unit` runner instead (no record of the unit itself, as on a pueue host): each command
records its own outcome by its label and writes its own log. While a unit's element is
queued or running, its commands count as active.

With accounting (sacct answers), an element that ended without a ledger line - Slurm
killed the run wrapper first: SIGKILL, OOM, a lost node - gets one made from sacct (state,
exit code, times), so the board, submit's decisions and retry-failed see it as failed or
killed; a line the ledger has always wins.

stdout: one `@@summary {json}` line. Exit codes: 0 ok, 1 some arrays not submitted, 2 bad
input (a commands file whose sha256/line count differs: a torn upload is never submitted).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
from typing import TYPE_CHECKING, Any

from .model import JOURNAL, LEAN_ENV, attempt_of, base_label, epoch, health_samples, log_name
from .slurm_model import (
    SACCT_ENDED,
    SACCT_FORMAT,
    SQUEUE_FORMAT,
    cancelled_jobs,
    expand_indices,
    is_cancelled,
    job_name,
    ledger_outcomes,
    parse_sacct,
    read_chunk,
)

if TYPE_CHECKING:
    from . import feeder
else:  # uploaded next to this file, on a host without jobsafe_ops; `board` is also sent
    # inline (python3 -c, no __file__, no feeder.py next to it) and needs neither
    sys.path.insert(0, os.path.dirname(os.path.abspath(globals().get("__file__", "."))))
    try:
        import feeder
    except ImportError:
        feeder = None

TIMEOUT = 120.0
SACCT_TIMEOUT = 30.0  # a board poll does not wait longer for slurmdbd
LEDGER_NAME = "ledger.ndjson"  # feeder.LEDGER_NAME (the board runs without feeder.py)


def read_unit(path: str) -> list[dict[str, Any]]:
    """A unit's commands ({label, workdir, command} lines); [] if unreadable."""
    try:
        with open(path, encoding="utf-8") as fh:
            return [json.loads(raw) for raw in fh if raw.strip()]
    except (OSError, ValueError):
        return []


def active(batch_dir: str, playbook: str,
           with_lines: bool = False) -> dict[str, dict[str, Any]]:
    """label -> {group, id, array, state, reason} of this batch's elements squeue shows; a
    unit's commands too (with "unit": its label), so none is retried while it may run.
    `with_lines`: with each job's command and workdir, what deploy re-adds a kill from (a
    unit's commands then stand for its element: the unit itself is never re-added)."""
    proc = subprocess.run(["squeue", "-h", "-r", "--me", "-o", SQUEUE_FORMAT],
                          capture_output=True, text=True, timeout=TIMEOUT)
    if proc.returncode != 0:
        raise SystemExit(f"squeue failed: {(proc.stderr or proc.stdout).strip()}")
    prefix = job_name(playbook, "")
    chunks: dict[str, list[dict[str, Any]]] = {}
    out: dict[str, dict[str, Any]] = {}
    for line in proc.stdout.splitlines():
        parts = [p.strip() for p in line.split("|", 6)]
        if len(parts) != 7 or not parts[3].startswith(prefix):
            continue
        jid, array_id, index, _name, state, reason, comment = parts
        if comment not in chunks:
            chunks[comment] = read_chunk(batch_dir, comment)
        lines = chunks[comment]
        for i in expand_indices(index) or [0]:
            if i < len(lines):
                item = lines[i]
                info = {"group": item["group"], "id": f"{array_id}_{i}", "array": array_id,
                        "state": state, "reason": reason}
                unit = read_unit(item["unit_file"]) if item.get("unit_file") else []
                if not (with_lines and unit):
                    out[item["label"]] = {**info, **({"command": item.get("command", ""),
                                                      "workdir": item.get("workdir", "")}
                                                     if with_lines else {})}
                for cmd in unit:
                    extra = {"command": cmd.get("command", ""),
                             "workdir": cmd.get("workdir", "")} if with_lines else {}
                    out.setdefault(str(cmd.get("label")),
                                   {**info, **extra, "unit": item["label"]})
    return out


def batch_arrays(batch_dir: str) -> dict[str, str]:
    """array id -> chunk digest of every array this batch submitted (arrays.ndjson)."""
    out: dict[str, str] = {}
    try:
        with open(os.path.join(batch_dir, "arrays.ndjson"), encoding="utf-8") as fh:
            for raw in fh:
                try:
                    rec = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(rec, dict) and str(rec.get("array", "")).isdigit():
                    out[str(rec["array"])] = str(rec.get("chunk", ""))
    except OSError:
        pass
    return out


def sacct_ended(batch_dirs: list[str]) -> tuple[bool, dict[str, dict[str, dict[str, Any]]]]:
    """One `sacct` over every array of these batches, ended elements only (not COMPLETED):
    (sacct answered, batch dir -> label -> an end record as the ledger would have it,
    with "slurm_state" and "source": "sacct"; a unit's element -> one per command).
    Without accounting sacct refuses at once: (False, {})."""
    arrays: dict[str, tuple[str, str]] = {}
    for bdir in batch_dirs:
        for array_id, digest in batch_arrays(bdir).items():
            arrays[array_id] = (bdir, digest)
    if not arrays:
        return False, {}
    try:
        proc = subprocess.run(
            ["sacct", "-X", "-n", "-P", "-j", ",".join(sorted(arrays, key=int)),
             "-S", "2000-01-01", "-E", "now", "-s", ",".join(SACCT_ENDED),
             "-o", SACCT_FORMAT], capture_output=True, text=True, timeout=SACCT_TIMEOUT,
            stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return False, {}
    if proc.returncode != 0:
        return False, {}
    chunks: dict[tuple[str, str], list[dict[str, Any]]] = {}
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for array_id, index, state, outcome, code, workdir, start, end in \
            parse_sacct(proc.stdout):
        if array_id not in arrays:
            continue
        key = arrays[array_id]
        if key not in chunks:
            chunks[key] = read_chunk(*key)
        if index >= len(chunks[key]):
            continue
        item = chunks[key][index]
        # a unit's element: its commands had the unit's fate (those that wrote their own
        # end keep it, outcomes_of); the unit itself is never judged, as on a pueue host
        jobs = [(str(c.get("label")), c.get("command", ""), c.get("workdir", workdir),
                 base_label(str(item["label"]))) for c in read_unit(item["unit_file"])] \
            if item.get("unit_file") else [(str(item["label"]), item.get("command", ""),
                                            workdir, None)]
        for label, command, wd, unit in jobs:
            rec = {"v": 1, "event": "end", "label": label, "group": item["group"],
                   "batch": os.path.basename(key[0]), "attempt": attempt_of(label),
                   "exit": code, "outcome": outcome, "slurm_state": state, "start": start,
                   "end": end, "command": command, "workdir": wd, "source": "sacct"}
            if unit:
                rec["unit"] = unit
            out.setdefault(key[0], {})[label] = rec
    return True, out


def outcomes_of(batch_dir: str, from_sacct: dict[str, dict[str, dict[str, Any]]]
                ) -> dict[str, dict[str, Any]]:
    """label -> its end: the ledger's, else the one sacct knows (the wrapper never wrote)."""
    out = dict(from_sacct.get(batch_dir) or {})
    out.update(ledger_outcomes(os.path.join(batch_dir, LEDGER_NAME)))
    return out


def lean_export(extra: list[str]) -> str:
    names = [n for n in (*LEAN_ENV, *extra) if n in os.environ]
    return ",".join(dict.fromkeys(names)) or "NONE"


def pieces(lines: list[dict[str, Any]], max_array: int) -> list[list[dict[str, Any]]]:
    """Consecutive lines of one chunk, at most max_array per array."""
    out: list[list[dict[str, Any]]] = []
    for line in lines:
        if out and out[-1][0]["chunk"] == line["chunk"] and len(out[-1]) < max_array:
            out[-1].append(line)
        else:
            out.append([line])
    return out


def write_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def submit(args: argparse.Namespace) -> int:
    feeder.check_upload(args.commands, args.sha256, args.count)
    lines = feeder.read_json_lines(args.commands)
    bdir = os.path.abspath(args.batch_dir)
    for sub in ("arrays", "logs", "slurm"):
        os.makedirs(os.path.join(bdir, sub), exist_ok=True)
    lock = os.open(os.path.join(bdir, "slurm.lock"), os.O_RDWR | os.O_CREAT, 0o644)
    if not feeder.wait_for_lock(lock, args.lock_wait):
        print("@@summary " + json.dumps({"fatal": "locked"}), flush=True)
        return feeder.EXIT_LOCKED
    ledger = os.path.join(bdir, feeder.LEDGER_NAME)
    running = active(bdir, args.playbook)
    outcomes = ledger_outcomes(ledger)
    done = {lbl for lbl, rec in outcomes.items() if rec.get("outcome") == "success"}
    # a label `jobsafe cancel` stopped (this attempt or a newer one) is not run again
    stopped = cancelled_jobs(outcomes)
    cancelled = {ln["label"] for ln in lines
                 if is_cancelled(ln["group"], ln["label"], stopped)} - done
    existing = [ln["label"] for ln in lines if ln["label"] in running or ln["label"] in done
                or ln["label"] in cancelled]
    todo = [ln for ln in lines if ln["label"] not in running and ln["label"] not in done
            and ln["label"] not in cancelled]
    array_of = {lbl: info["array"] for lbl, info in running.items()}
    added: list[list[str]] = []
    errors: list[list[str]] = []
    arrays: list[list[Any]] = []
    export = lean_export(args.pass_env)
    me = os.path.abspath(__file__)
    for piece in pieces(todo, max(1, args.max_array)):
        head = piece[0]
        deps: set[str] = set()
        missing = ""
        for ln in piece:
            for dep in ln.get("after") or []:
                if dep in array_of:
                    deps.add(array_of[dep])
                elif dep not in done:
                    missing = dep
        if missing:
            reason = (f"waits for {missing}, which was cancelled (jobsafe cancel); cancel "
                      "this one too, or submit a new batch") if missing in cancelled else \
                f"waits for {missing}, which neither ran nor is queued; rerun submit-batch"
            for ln in piece:
                errors.append([ln["label"], reason])
            continue
        for ln in piece:  # a unit's commands, on the shared filesystem before its sbatch
            if ln.get("unit_file"):
                feeder.write_unit(ln)
        body = "".join(json.dumps({
            "label": ln["label"], "group": ln["group"], "command": ln["command"],
            **({"unit_file": ln["unit_file"]} if ln.get("unit_file") else {})},
            separators=(",", ":")) + "\n" for ln in piece)
        digest = hashlib.sha256(f"{head['chunk']}\n{body}".encode()).hexdigest()[:20]
        chunk_file = os.path.join(bdir, "arrays", digest + ".jsonl")
        write_atomic(chunk_file, body)
        wrap = " ".join(shlex.quote(w) for w in (
            "python3", me, "element", chunk_file, "--ledger", ledger, "--group", head["group"]))
        argv = ["sbatch", "--parsable", f"--array=0-{len(piece) - 1}%{max(1, head['throttle'])}",
                f"--job-name={job_name(args.playbook, head['group'])}", f"--comment={digest}",
                f"--chdir={head['workdir']}", f"--output={bdir}/slurm/%A_%a.out",
                f"--export={export}"]
        if head.get("mem"):
            argv.append(f"--mem={max(1, -(-int(head['mem']) // 1024**2))}M")
        if head.get("cpus"):
            argv.append(f"--cpus-per-task={int(head['cpus'])}")
        argv += list(args.sbatch_opt)
        if deps:
            argv.append("--dependency=afterok:" + ":".join(sorted(deps, key=int)))
        argv.append(f"--wrap={wrap}")
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT)
        jid = proc.stdout.strip().split(";")[0]
        if proc.returncode != 0 or not jid.isdigit():
            why = (proc.stderr or proc.stdout).strip().splitlines()
            for ln in piece:
                errors.append([ln["label"], f"sbatch: {why[-1] if why else proc.returncode}"])
            continue
        feeder.append_record(os.path.join(bdir, "arrays.ndjson"),
                             {"array": jid, "chunk": digest, "group": head["group"],
                              "count": len(piece), "at": feeder.now_iso()})
        arrays.append([jid, head["group"], len(piece)])
        for i, ln in enumerate(piece):
            array_of[ln["label"]] = jid
            added.append([ln["label"], f"{jid}_{i}"])
    print("@@summary " + json.dumps({"added": added, "existing": existing, "errors": errors,
                                     "cancelled": sorted(cancelled),
                                     "arrays": arrays, "sbatch": len(arrays) +
                                     len({e[0] for e in errors if e[1].startswith("sbatch")})}),
          flush=True)
    os.close(lock)
    return feeder.EXIT_SOME_FAILED if errors else feeder.EXIT_OK


def element(args: argparse.Namespace) -> int:
    """One array element: its line of the chunk file through feeder.py's run wrapper, its
    output appended to <batch>/logs/<label>.log."""
    lines = feeder.read_json_lines(args.chunk)
    index = int(os.environ.get("SLURM_ARRAY_TASK_ID", "0"))
    if not 0 <= index < len(lines):
        sys.stderr.write(f"slurm_feed element: no line {index} in {args.chunk}\n")
        return feeder.EXIT_BAD_INPUT
    line = lines[index]
    bdir = os.path.dirname(os.path.abspath(args.ledger))
    log = os.open(os.path.join(bdir, "logs", log_name(line["label"])),
                  os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    if line.get("unit_file"):  # feeder.py unit: each command records its own outcome
        return feeder.exit_of(subprocess.call(["sh", "-c", line["command"]],
                                              stdin=subprocess.DEVNULL))
    ns = argparse.Namespace(ledger=args.ledger, label=line["label"], group=args.group,
                            argv=["sh", "-c", line["command"]])
    return feeder.run_wrapped(ns)


def status(args: argparse.Namespace) -> int:
    """This batch's labels: the active ones (squeue) and the ledger's outcomes, filtered by
    group here so a poll moves only what the board shows."""
    bdir = os.path.abspath(args.batch_dir)
    running = active(bdir, args.playbook)
    outcomes = outcomes_of(bdir, sacct_ended([bdir])[1])
    keep = ("group", "exit", "outcome", "start", "end", "attempt", "signal", "slurm_state")
    out = {
        "active": {k: v for k, v in running.items() if args.group in (None, v["group"])},
        "ended": {k: {f: v[f] for f in keep if f in v} for k, v in outcomes.items()
                  if args.group in (None, v.get("group")) and k not in running},
    }
    print(json.dumps(out, separators=(",", ":")), flush=True)
    return 0


_RETRY = re.compile(r"-retry-([1-9][0-9]*)$")
LOG_BYTES = 4096


def _tail(path: str, lines: int) -> list[str]:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - LOG_BYTES))
            return fh.read().decode("utf-8", "replace").splitlines()[-lines:]
    except OSError:
        return []


def _iso_seconds(stamp: str) -> float | None:
    import calendar
    import time as _time
    try:
        head = stamp.split(".")[0].rstrip("Z")
        return float(calendar.timegm(_time.strptime(head, "%Y-%m-%dT%H:%M:%S")))
    except (ValueError, AttributeError):
        return None


def board(args: argparse.Namespace) -> int:
    """The monitor's payload (snapshot.snapshot_from's shape) for every batch under --root:
    the elements squeue shows (named through their chunk files; a unit's by its commands)
    and the ledgers' outcomes (with accounting, sacct's for elements that ended without
    one), by group and label, the latest attempt of each label deciding (older ones
    superseded). Filtered here, so a poll moves only the watched group's lists."""
    import fnmatch
    import time as _time

    root = os.path.abspath(args.root)
    batches = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d))) \
        if os.path.isdir(root) else []
    proc = subprocess.run(["squeue", "-h", "-r", "--me", "-o", SQUEUE_FORMAT],
                          capture_output=True, text=True, timeout=TIMEOUT)
    if proc.returncode != 0:
        print(json.dumps({"error": "squeue failed: " + (proc.stderr or proc.stdout).strip()}))
        return 0
    attempts: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}

    def want(group: str, label: str) -> bool:
        return args.group in (None, group) and (
            args.glob is None or fnmatch.fnmatchcase(label, args.glob))

    def put(group: str, label: str, info: dict[str, Any]) -> None:
        if want(group, label):
            base = _RETRY.sub("", label)
            attempts.setdefault((group, base), {})[label] = info

    sacct_ok, from_sacct = sacct_ended([os.path.join(root, b) for b in batches])
    ended: dict[tuple[str, str], str] = {}  # (batch, label) -> its outcome
    for b in batches:
        bdir = os.path.join(root, b)
        for label, rec in outcomes_of(bdir, from_sacct).items():
            group = str(rec.get("group", ""))
            ended[(b, label)] = str(rec.get("outcome", "failed"))
            put(group, label, {"state": str(rec.get("outcome", "failed")), "exit_code":
                               rec.get("exit"), "start": rec.get("start"),
                               "slurm_state": rec.get("slurm_state"),
                               "log": os.path.join(bdir, "logs", log_name(label))})
    chunks: dict[str, list[dict[str, Any]]] = {}
    now = _time.time()

    def put_active(batch: str, group: str, label: str, st: str, eid: str) -> None:
        marker = os.path.join(root, batch, feeder_marker(group, label))
        start = _start_of(marker)
        put(group, label, {
            "state": st, "start": start, "id": eid,
            "runtime": None if start is None or _iso_seconds(start) is None
            else round(now - float(_iso_seconds(start) or now), 1)})

    for line in proc.stdout.splitlines():
        parts = [p.strip() for p in line.split("|", 6)]
        if len(parts) != 7 or not parts[3].startswith("jobsafe:"):
            continue
        _jid, array_id, index, name, state, reason, comment = parts
        batch = name.split(":")[1] if name.count(":") >= 2 else ""
        if comment not in chunks:
            chunks[comment] = read_chunk(os.path.join(root, batch), comment) if batch in \
                batches else []
        for i in expand_indices(index) or [0]:
            if i >= len(chunks[comment]):
                continue
            item = chunks[comment][i]
            st = {"RUNNING": "running", "COMPLETING": "running", "SUSPENDED": "paused"}.get(
                state, "queued")
            if state == "PENDING" and reason == "DependencyNeverSatisfied":
                st = "blocked"
            elif state not in ("PENDING", "RUNNING", "COMPLETING", "SUSPENDED", "CONFIGURING"):
                continue  # ended; the ledger has (or will have) its outcome
            eid = f"{array_id}_{i}"
            commands = read_unit(item["unit_file"]) if item.get("unit_file") and \
                args.group in (None, item["group"]) else []
            if not commands:
                put_active(batch, item["group"], item["label"], st, eid)
                continue
            for cmd in commands:  # a unit: each command by its label
                label = str(cmd.get("label"))
                before = ended.get((batch, label))
                if st == "running" and os.path.exists(os.path.join(
                        root, batch, feeder_marker(item["group"], label))):
                    put_active(batch, item["group"], label, "running", eid)
                elif before == "success" or (before and st == "running"):
                    continue  # done (or ended in this run): the ledger says how
                else:
                    put_active(batch, item["group"], label,
                               "queued" if st == "running" else st, eid)
    groups: dict[str, dict[str, Any]] = {}
    for (group, _base), tries in sorted(attempts.items()):
        g = groups.setdefault(group, {"status": "Running", "parallel": 0, "counts": {},
                                      "total": 0, "superseded": 0, "ready": 0,
                                      "running": [], "failed": [], "blocked": [],
                                      "truncated": {}})
        def order(label: str) -> int:
            m = _RETRY.search(label)
            return int(m.group(1)) if m else 0
        latest = max(tries, key=order)
        info = tries[latest]
        g["total"] += 1
        g["superseded"] += len(tries) - 1
        st = info["state"]
        g["counts"][st] = g["counts"].get(st, 0) + 1
        entry: dict[str, Any] = {"label": latest, "state": st, "attempts": len(tries)}
        if info.get("start"):
            entry["start"] = info["start"]
        if st == "queued":
            g["ready"] += 1
        kind = {"running": "running", "failed": "failed", "killed": "failed",
                "blocked": "blocked"}.get(st)
        if kind is None:
            continue
        if kind == "running" and info.get("runtime") is not None:
            entry["runtime"] = info["runtime"]
        if kind == "failed":
            entry["exit_code"] = info.get("exit_code")
            entry["log"] = _tail(info.get("log", ""), args.log_lines)
            if info.get("slurm_state"):
                entry["slurm_state"] = info["slurm_state"]
        if len(g[kind]) < args.limit:
            g[kind].append(entry)
        else:
            g["truncated"][kind] = g["truncated"].get(kind, 0) + 1
    throttles = _throttles()
    for group, g in groups.items():
        seen = [n for (grp, _a), n in throttles.items() if grp == group]
        g["parallel"] = max(seen) if seen else 0  # 0: no array waiting (the laptop fills in)
        g["arrays"] = sorted({a for (grp, a) in throttles if grp == group}, key=int)
    source = "squeue+ledger+sacct" if sacct_ok else "squeue+ledger"
    print(json.dumps({"via": "slurm", "source": source, "groups": groups,
                      "health": _cluster_health()}, separators=(",", ":")), flush=True)
    return 0


def _throttles() -> dict[tuple[str, str], int]:
    """(group, array id) -> ArrayTaskThrottle of this user's jobsafe arrays that still have
    pending elements (squeue shows their range as `2-5%2`)."""
    proc = subprocess.run(["squeue", "-h", "--me", "-t", "PENDING", "-o", "%F|%K|%j"],
                          capture_output=True, text=True, timeout=TIMEOUT)
    out: dict[tuple[str, str], int] = {}
    for line in proc.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 3 and parts[2].startswith("jobsafe:") and "%" in parts[1]:
            tail = parts[1].rsplit("%", 1)[1]
            if tail.isdigit() and parts[0].isdigit():
                out[(parts[2].rsplit(":", 1)[1], parts[0])] = int(tail)
    return out


def _cluster_health() -> dict[str, Any]:
    """The cluster's load as the board reads a host's: allocated of all CPUs (as the 1-min
    load over nproc) and free of all memory (sinfo %C, %m, %e per node)."""
    proc = subprocess.run(["sinfo", "-h", "-N", "-o", "%N|%C|%m|%e"], capture_output=True,
                          text=True, timeout=TIMEOUT)
    nodes: dict[str, tuple[int, int, int, int]] = {}
    for line in proc.stdout.splitlines():
        parts = line.strip().split("|")
        try:
            alloc, _idle, _other, total = (int(x) for x in parts[1].split("/"))
            nodes[parts[0]] = (alloc, total, int(parts[2]) * 1024**2,
                               int(parts[3]) * 1024**2 if parts[3].isdigit() else 0)
        except (ValueError, IndexError):
            continue
    if not nodes:
        return {}
    alloc = sum(n[0] for n in nodes.values())
    total = sum(n[1] for n in nodes.values())
    return {"nproc": total, "load": [alloc, alloc, alloc],
            "mem_total": sum(n[2] for n in nodes.values()),
            "mem_available": sum(min(n[3], n[2]) for n in nodes.values()),
            "swap_in": 0, "swap_out": 0}


def records(args: argparse.Namespace) -> int:
    """retry-failed's and deploy's facts: per batch under --root, the group's (no --group:
    every group's) labels squeue shows active and the ledger's newest outcome per label (a
    failure with its command and workdir); `elements`: each active label's element id,
    state, command and workdir (deploy's kill and re-add)."""
    root = os.path.abspath(args.root)
    out: dict[str, Any] = {}
    batches = [os.path.join(root, b) for b in sorted(os.listdir(root))
               if os.path.isfile(os.path.join(root, b, "slurm_feed.py"))] \
        if os.path.isdir(root) else []  # (not a pueue batch)
    from_sacct = sacct_ended(batches)[1]
    for bdir in batches:
        b = os.path.basename(bdir)
        ended = {k: v for k, v in outcomes_of(bdir, from_sacct).items()
                 if args.group in (None, v.get("group"))}
        running = {k: v for k, v in active(bdir, b, with_lines=True).items()
                   if args.group in (None, v["group"])}
        if ended or running:
            out[b] = {"dir": bdir, "ended": ended, "active": sorted(running),
                      "elements": running}
    print(json.dumps(out, separators=(",", ":")), flush=True)
    return 0


def feeder_marker(group: str, label: str) -> str:
    """Mirror of feeder.marker_path, relative to the batch dir."""
    digest = hashlib.sha1(f"{group}\0{label}".encode()).hexdigest()[:24]
    return os.path.join("running", digest + ".json")


def _start_of(marker: str) -> str | None:
    try:
        with open(marker, encoding="utf-8") as fh:
            return str(json.loads(fh.readline()).get("start") or "") or None
    except (OSError, ValueError):
        return None


# ---- report: every attempt of a group (jobsafe report on a Slurm host) --------------------

def ended_runs(ledger: str, group: str) -> list[dict[str, Any]]:
    """Every `end` line of one ledger for `group`, as the report's runs (each attempt's own
    times; the monitor keeps only a label's last line)."""
    out: list[dict[str, Any]] = []
    try:
        fh = open(ledger, encoding="utf-8")
    except OSError:
        return out
    with fh:
        for raw in fh:
            try:
                rec = json.loads(raw)
            except ValueError:
                continue
            if not isinstance(rec, dict) or rec.get("event") != "end" or \
                    rec.get("group") != group or "label" not in rec:
                continue
            label = str(rec["label"])
            value = rec.get("outcome")
            m = _RETRY.search(label)
            out.append({"label": label, "attempt": int(m.group(1)) if m else 0,
                        "outcome": str(value) if value in ("success", "failed", "killed",
                                                          "cancelled")
                        else "success" if rec.get("exit") == 0 else "failed",
                        "exit": rec.get("exit") if isinstance(rec.get("exit"), int) else None,
                        "start": epoch(rec.get("start")), "end": epoch(rec.get("end")),
                        "source": "ledger", "unit": rec.get("unit")})
    return out


def queued_runs(squeue: str, root: str, batches: list[str], group: str,
                batch: str | None) -> tuple[list[dict[str, Any]], bool]:
    """The group's elements squeue shows (running, queued, blocked, held) as runs: Slurm
    decides what is running (a start marker written on a compute node carries another
    boot id, so its liveness cannot be read here); the marker gives the start. -> (runs,
    whether an element is held)."""
    out: list[dict[str, Any]] = []
    held = False
    chunks: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for line in squeue.splitlines():
        parts = [p.strip() for p in line.split("|", 6)]
        if len(parts) != 7 or not parts[3].startswith("jobsafe:") or parts[3].count(":") < 2:
            continue
        _jid, _array, index, name, state, reason, comment = parts
        b = name.split(":")[1]
        if b not in batches or (batch is not None and b != batch):
            continue
        st = {"RUNNING": "running", "COMPLETING": "running", "SUSPENDED": "paused",
              "PENDING": "queued", "CONFIGURING": "queued"}.get(state)
        if st is None:
            continue  # ended: the ledger has its outcome
        if state == "PENDING" and reason == "DependencyNeverSatisfied":
            st = "blocked"
        elif state == "PENDING" and reason == "JobHeldUser":
            st = "paused"
        key = (b, comment)
        if key not in chunks:
            chunks[key] = read_chunk(os.path.join(root, b), comment)
        for i in expand_indices(index) or [0]:
            if i >= len(chunks[key]) or chunks[key][i].get("group") != group:
                continue
            item = chunks[key][i]
            held = held or st == "paused"
            start = _start_of(os.path.join(root, b, feeder_marker(group, item["label"]))) \
                if st == "running" else None
            m = _RETRY.search(item["label"])
            out.append({"label": item["label"], "attempt": int(m.group(1)) if m else 0,
                        "outcome": st, "exit": None, "start": epoch(start), "end": None,
                        "source": "squeue", "unit": None})
    return out, held


def report(args: argparse.Namespace) -> int:
    """jobsafe report's payload (monitor_filter `report`'s shape) for a Slurm host: every
    attempt of the group in the ledgers of every batch under --root (or --batch's), the
    elements squeue shows, the log tails of the newest failed attempts, the cluster's load."""
    import time as _time

    root = os.path.abspath(args.root)
    batches = sorted(d for d in os.listdir(root)
                     if os.path.isfile(os.path.join(root, d, "slurm_feed.py"))) \
        if os.path.isdir(root) else []
    out: dict[str, Any] = {"group": args.group, "batch": args.batch, "via": "slurm"}
    proc = subprocess.run(["squeue", "-h", "-r", "--me", "-o", SQUEUE_FORMAT],
                          capture_output=True, text=True, timeout=TIMEOUT)
    if proc.returncode != 0:
        out["error"] = "squeue failed: " + (proc.stderr or proc.stdout).strip()[:300]
        print(json.dumps(out, separators=(",", ":")), flush=True)
        return 0
    runs: list[dict[str, Any]] = []
    groups: set[str] = set()
    for b in batches if args.batch is None else [b for b in batches if b == args.batch]:
        ledger = os.path.join(root, b, "ledger.ndjson")
        for run in ended_runs(ledger, args.group):
            runs.append(dict(run, _log=os.path.join(root, b, "logs", log_name(run["label"]))))
        groups.update(str(v.get("group")) for v in ledger_outcomes(ledger).values())
    for i in sorted((i for i, r in enumerate(runs) if r["outcome"] in ("failed", "killed")),
                    key=lambda i: -(runs[i]["end"] or 0))[:max(0, args.log_labels)]:
        if args.log_lines > 0:
            runs[i]["log"] = _tail(runs[i]["_log"], args.log_lines)
    for run in runs:
        del run["_log"]
    active, held = queued_runs(proc.stdout, root, batches, args.group, args.batch)
    runs.extend(active)
    out["known"] = bool(runs) or args.group in groups
    out["groups"] = sorted(groups)
    out["status"] = "Paused" if held else "Running"
    out["runs"] = runs
    starts = [r["start"] for r in runs if r["start"] is not None]
    out["samples"] = health_samples(args.journal, min(starts) if starts else None)
    out["now"] = round(_time.time(), 3)
    out["health"] = _cluster_health()
    print(json.dumps(out, separators=(",", ":")), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="slurm_feed.py", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("submit")
    s.add_argument("commands")
    s.add_argument("--batch-dir", required=True)
    s.add_argument("--playbook", required=True)
    s.add_argument("--max-array", type=int, default=1001)
    s.add_argument("--sbatch-opt", action="append", default=[])
    s.add_argument("--pass-env", action="append", default=[])
    s.add_argument("--lock-wait", type=float, default=0.0)
    s.add_argument("--sha256")
    s.add_argument("--count", type=int)
    e = sub.add_parser("element")
    e.add_argument("chunk")
    e.add_argument("--ledger", required=True)
    e.add_argument("--group", required=True)
    t = sub.add_parser("status")
    t.add_argument("--batch-dir", required=True)
    t.add_argument("--playbook", required=True)
    t.add_argument("--group")
    b = sub.add_parser("board")
    b.add_argument("--root", required=True)
    b.add_argument("--group")
    b.add_argument("--glob")
    b.add_argument("--limit", type=int, default=200)
    b.add_argument("--log-lines", type=int, default=5)
    r = sub.add_parser("records")
    r.add_argument("--root", required=True)
    r.add_argument("--group")
    p = sub.add_parser("report")
    p.add_argument("--root", required=True)
    p.add_argument("--group", required=True)
    p.add_argument("--batch")
    p.add_argument("--log-lines", type=int, default=20)
    p.add_argument("--log-labels", type=int, default=20)
    p.add_argument("--journal", default=JOURNAL)
    args = parser.parse_args(argv)
    modes = {"submit": submit, "element": element, "status": status, "board": board,
             "records": records, "report": report}
    try:
        return int(modes[args.mode](args))
    except SystemExit as exc:  # a bad or torn commands file, squeue failing: one line
        if isinstance(exc.code, str):
            print("@@summary " + json.dumps({"fatal": exc.code}), flush=True)
            return feeder.EXIT_BAD_INPUT
        raise


if __name__ == "__main__":
    sys.exit(main())
