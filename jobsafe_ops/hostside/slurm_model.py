"""What the laptop and the Slurm login node must read the same way (stdlib, Python >= 3.8):
the squeue format both parse, the job name that marks a batch's arrays, the array-index
grammar of squeue's %K, the batch dir's files (chunk files, logs, the ledger's outcomes),
what a cancel recorded there, and how sacct's end states read as the ledger's outcomes.
Inlined into slurm_feed.py and ops_agent.py by bundle.py; scheduler/slurm.py imports it on
the laptop."""

from __future__ import annotations

import json
import os
import re
from typing import Any

SQUEUE_FORMAT = "%i|%F|%K|%j|%T|%r|%k"


def job_name(playbook: str, group: str) -> str:
    """The name of every array of a batch's group: squeue finds a batch by its prefix."""
    return f"jobsafe:{playbook}:{group}"


def expand_indices(text: str) -> list[int]:
    """'3' -> [3]; '[4-6,9%2]' / '4-6,9' -> [4, 5, 6, 9]; 'N/A' -> []."""
    text = text.strip().strip("[]").split("%")[0]
    out: list[int] = []
    for part in text.split(","):
        lo, sep, hi = part.partition("-")
        if not lo.strip().isdigit():
            continue
        if sep and hi.strip().isdigit():
            out.extend(range(int(lo), int(hi) + 1))
        else:
            out.append(int(lo))
    return out


# ---- sacct (clusters with accounting) ------------------------------------------------------

# ended this way, a job may well succeed on a retry (the --mem kill, a lost node, preemption)
TRANSIENT_STATES = frozenset({"OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL"})
# what `sacct -X -n -P` prints per element; an element that ended in one of SACCT_ENDED's
# states (sacct -s takes these abbreviations) may have no ledger line: Slurm killed the run
# wrapper before it could write one (SIGKILL, OOM, a lost node, a time limit past KillWait)
SACCT_FORMAT = "JobID,State,ExitCode,WorkDir,Start,End"
SACCT_ENDED = ("CA", "F", "TO", "OOM", "NF", "PR", "BF", "DL", "RV")
# killed from outside the job (scancel, preemption) or by the cluster (OOM, a node lost):
# the ledger's "killed", which the retry rules call transient, as they do exit 137/143
KILLED_STATES = frozenset({"CANCELLED", "PREEMPTED", "REVOKED"}) | TRANSIENT_STATES


def sacct_outcome(state: str, exit_code: str) -> tuple[str, str, int | None]:
    """sacct's State ('CANCELLED by 0') and ExitCode ('0:9') -> (Slurm state, the ledger's
    outcome: killed | failed | success, exit code as a shell reports it: 128 + signal)."""
    name = (state.split() or [""])[0].rstrip("+")
    code, _, sig = exit_code.partition(":")
    exit_: int | None = None
    if sig.strip().isdigit() and 0 < int(sig) < 65:
        exit_ = 128 + int(sig)
    elif code.strip().isdigit():
        exit_ = int(code)
    if name == "OUT_OF_MEMORY":  # the OOM killer's SIGKILL (sacct says 0:125), as on pueue
        exit_ = 137
    if name == "COMPLETED":
        return name, "success", exit_
    return name, "killed" if name in KILLED_STATES else "failed", exit_


def parse_sacct(text: str) -> list[tuple[str, int, str, str, int | None, str, str, str]]:
    """`sacct -X -n -P -o SACCT_FORMAT` -> (array id, index, Slurm state, outcome, exit,
    workdir, start, end) per ended array element (pending ranges and plain jobs left out)."""
    out = []
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) != 6:
            continue
        jid, state, exit_code, workdir, start, end = parts
        array_id, sep, index = jid.partition("_")
        if not sep or not array_id.isdigit() or not index.isdigit():
            continue
        name, outcome, exit_ = sacct_outcome(state, exit_code)
        if name in ("PENDING", "RUNNING", "REQUEUED", "SUSPENDED", "COMPLETING"):
            continue
        out.append((array_id, int(index), name, outcome, exit_, workdir, start, end))
    return out


_RETRY_OF = re.compile(r"^(?P<base>.+)-retry-(?P<n>[1-9][0-9]*)$")


def read_chunk(batch_dir: str, digest: str) -> list[dict[str, Any]]:
    """An array's lines (its chunk file, named by the array's --comment); [] if unknown."""
    if not re.fullmatch(r"[0-9a-f]{8,64}", digest):
        return []
    path = os.path.join(batch_dir, "arrays", digest + ".jsonl")
    try:
        with open(path, encoding="utf-8") as fh:
            return [json.loads(raw) for raw in fh if raw.strip()]
    except (OSError, ValueError):
        return []


def ledger_outcomes(ledger: str) -> dict[str, dict[str, Any]]:
    """label -> its newest end record (the run wrapper's ledger)."""
    out: dict[str, dict[str, Any]] = {}
    try:
        with open(ledger, encoding="utf-8") as fh:
            for raw in fh:
                try:
                    rec = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(rec, dict) and rec.get("event") == "end" and "label" in rec:
                    out[str(rec["label"])] = rec
    except OSError:
        pass
    return out


def cancelled_jobs(outcomes: dict[str, dict[str, Any]]) -> dict[tuple[str, str], int]:
    """(group, base label) -> the newest attempt `jobsafe cancel` recorded as cancelled:
    that attempt and every older one of the job are neither failed nor to be run again
    (monitor_filter's reading of a pueue ledger)."""
    out: dict[tuple[str, str], int] = {}
    for label, rec in outcomes.items():
        if rec.get("outcome") != "cancelled":
            continue
        m = _RETRY_OF.match(label)
        key = (str(rec.get("group", "")), m.group("base") if m else label)
        out[key] = max(out.get(key, -1), int(m.group("n")) if m else 0)
    return out


def is_cancelled(group: str, label: str, cancelled: dict[tuple[str, str], int]) -> bool:
    """Whether a cancel covers this attempt of the job (it, or a newer attempt, was
    cancelled)."""
    m = _RETRY_OF.match(label)
    key = (group, m.group("base") if m else label)
    return key in cancelled and (int(m.group("n")) if m else 0) <= cancelled[key]
