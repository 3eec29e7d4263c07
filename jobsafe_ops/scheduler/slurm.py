"""Slurm adapter: pure argv builders and parsers of `scontrol show config`, `sinfo` and
`squeue` output. Nothing here does I/O; `SlurmScheduler` runs its argv through a runner it
is given (a Remote's `run`), so it can stand behind the scheduler seam next to pueue.

Identity is (group, label), never a Slurm job id: an array's elements are named by the
chunk file of the batch directory they run (the array's `--comment` is its digest), so a
job id is only ever read back from `squeue` for the labels asked about (INV-8).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from ..hostside.slurm_model import SQUEUE_FORMAT, expand_indices, job_name
from ..hostside.slurm_model import TRANSIENT_STATES as TRANSIENT_STATES

# what `squeue` prints per element (-r: one line per array element, pending ones too)
SQUEUE_FIELDS = ("id", "array_id", "index", "name", "state", "reason", "comment")
# Slurm job states -> the normalised states the board and retry rules use (pueue's words)
STATE_MAP = {
    "PENDING": "queued", "CONFIGURING": "queued", "REQUEUED": "queued",
    "REQUEUE_HOLD": "stashed", "REQUEUE_FED": "queued", "RESV_DEL_HOLD": "stashed",
    "RUNNING": "running", "COMPLETING": "running", "STAGE_OUT": "running",
    "SIGNALING": "running", "RESIZING": "running",
    "SUSPENDED": "paused", "STOPPED": "paused",
    "COMPLETED": "success",
    "FAILED": "failed", "BOOT_FAIL": "failed", "DEADLINE": "failed", "TIMEOUT": "failed",
    "CANCELLED": "killed", "REVOKED": "killed", "SPECIAL_EXIT": "failed",
    "OUT_OF_MEMORY": "failed", "NODE_FAIL": "failed", "PREEMPTED": "killed",
}
# a dependant whose afterok can never be met stays PENDING with this reason
NEVER = "DependencyNeverSatisfied"
DEFAULT_MAX_ARRAY = 1001
_SIZE_UNITS = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024**2}


# ---- scontrol show config ---------------------------------------------------------------

def parse_config(text: str) -> dict[str, str]:
    """`scontrol show config` (slurm.conf, then cgroup.conf's section) -> {Key: value}."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        key = key.strip()
        if sep and key and " " not in key:
            out.setdefault(key, value.strip())
    return out


def _yes(value: str | None) -> bool:
    return (value or "").strip().lower() in ("yes", "true", "1")


def memory_enforcement(cfg: Mapping[str, str]) -> tuple[bool, str]:
    """INV-7 on a Slurm cluster: `--mem` is a hard cap only with TaskPlugin=task/cgroup and
    cgroup.conf's ConstrainRAMSpace=yes, and without swap only with ConstrainSwapSpace=yes
    and AllowedSwapSpace=0 (the MemorySwapMax=0 equivalent). -> (capped, why)."""
    plugins = cfg.get("TaskPlugin", "")
    if "task/cgroup" not in plugins:
        return False, (f"TaskPlugin={plugins or '?'}: --mem is not enforced (needs "
                       "TaskPlugin=task/cgroup + ConstrainRAMSpace=yes in cgroup.conf)")
    if not _yes(cfg.get("ConstrainRAMSpace")):
        return False, ("task/cgroup without ConstrainRAMSpace=yes in cgroup.conf: --mem is "
                       "not enforced")
    if not _yes(cfg.get("ConstrainSwapSpace")):
        return False, ("ConstrainRAMSpace=yes but ConstrainSwapSpace is not yes: a job over "
                       "--mem swaps instead of being stopped (soft cap)")
    allowed = cfg.get("AllowedSwapSpace", "0").split()[0].rstrip("%")
    if allowed not in ("0", "0.0", "0.00"):
        return False, (f"AllowedSwapSpace={allowed}%: a job may swap beyond --mem; set "
                       "AllowedSwapSpace=0")
    return True, ("task/cgroup: ConstrainRAMSpace=yes, ConstrainSwapSpace=yes, "
                  "AllowedSwapSpace=0 (--mem is a hard cap, no swap)")


def max_array_size(cfg: Mapping[str, str]) -> int:
    """MaxArraySize: indices are 0..MaxArraySize-1, so that many elements per array."""
    try:
        return max(1, int(cfg.get("MaxArraySize", str(DEFAULT_MAX_ARRAY)).split()[0]))
    except ValueError:
        return DEFAULT_MAX_ARRAY


def max_job_count(cfg: Mapping[str, str]) -> int | None:
    """MaxJobCount: slurmctld's limit on job records, every array element counting as one
    (sbatch blocks, "temporarily unable to accept job", once it is reached)."""
    try:
        return int(cfg.get("MaxJobCount", "").split()[0])
    except (ValueError, IndexError):
        return None


def accounting(cfg: Mapping[str, str]) -> tuple[bool, str]:
    kind = cfg.get("AccountingStorageType", "")
    if not kind or kind.endswith("/none"):
        return False, f"AccountingStorageType={kind or '?'}: no sacct (finished jobs leave " \
            f"squeue after MinJobAge={cfg.get('MinJobAge', '?')}; the ledger keeps outcomes)"
    return True, f"AccountingStorageType={kind}: sacct available"


# ---- sinfo ------------------------------------------------------------------------------

SINFO_NODES = "%N|%P|%c|%m|%T"


@dataclass(frozen=True)
class Node:
    name: str
    partition: str  # without the default mark
    default: bool
    cpus: int
    memory_mb: int
    state: str


def parse_sinfo(text: str) -> tuple[Node, ...]:
    """`sinfo -h -N -o '%N|%P|%c|%m|%T'` -> one Node per (node, partition)."""
    out = []
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) != 5:
            continue
        name, part, cpus, mem, state = parts
        try:
            out.append(Node(name, part.rstrip("*"), part.endswith("*"), int(cpus),
                            int(mem.rstrip("+")), state))
        except ValueError:
            continue
    return tuple(out)


# ---- squeue -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Element:
    """One array element (or a plain job) as squeue shows it."""

    id: str  # what scancel takes: "12_3", or "12" for a plain job
    array_id: str
    index: int | None
    name: str
    state: str  # Slurm's (PENDING, RUNNING, ...)
    reason: str
    comment: str

    @property
    def status(self) -> str:
        if self.state == "PENDING" and self.reason == NEVER:
            return "blocked"
        return STATE_MAP.get(self.state, "queued")


def squeue_argv(user: str | None = None) -> list[str]:
    argv = ["squeue", "-h", "-r", "-o", SQUEUE_FORMAT]
    return [*argv, "-u", user] if user else [*argv, "--me"]


def parse_squeue(text: str, prefix: str = "") -> tuple[Element, ...]:
    """squeue -h -r -o SQUEUE_FORMAT -> elements, only job names starting with `prefix`.
    A pending array not yet split into elements shows its range (`3_[4-9%2]`): each
    index of it is one element."""
    out: list[Element] = []
    for line in text.splitlines():
        parts = line.rstrip("\n").split("|", len(SQUEUE_FIELDS) - 1)
        if len(parts) != len(SQUEUE_FIELDS):
            continue
        jid, array_id, index, name, state, reason, comment = (p.strip() for p in parts)
        if prefix and not name.startswith(prefix):
            continue
        indices = expand_indices(index)
        if not indices:
            out.append(Element(jid, array_id, None, name, state, reason, comment))
        for i in indices:
            out.append(Element(f"{array_id}_{i}", array_id, i, name, state, reason, comment))
    return tuple(out)


# ---- argv builders ----------------------------------------------------------------------

def mem_arg(memory_max: int | None) -> str | None:
    """bytes -> sbatch --mem's whole MiB (at least 1)."""
    return None if not memory_max else f"{max(1, -(-memory_max // 1024**2))}M"


def parse_mem(text: str) -> int | None:
    """'21694' / '100M' / '2G' (sinfo, scontrol) -> MiB."""
    m = re.match(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)", text or "", re.IGNORECASE)
    if not m:
        return None
    return int(float(m.group(1)) * _SIZE_UNITS.get(m.group(2).upper() or "M", 1))


def sbatch_argv(*, count: int, throttle: int, name: str, comment: str, workdir: str,
                wrap: str, output: str, memory_max: int | None = None,
                cpus: int | None = None, partition: str = "", account: str = "",
                qos: str = "", after: Sequence[str] = (),
                export: Sequence[str] = ()) -> list[str]:
    """One `sbatch` of a job array of `count` elements, `throttle` at a time (never 0)."""
    if count < 1:
        raise ConfigError("an array needs at least one element")
    if not workdir.startswith("/"):
        raise ConfigError(f"--chdir {workdir!r} must be absolute on the login node (AP-11)")
    argv = ["sbatch", "--parsable", f"--array=0-{count - 1}%{max(1, throttle)}",
            f"--job-name={name}", f"--comment={comment}", f"--chdir={workdir}",
            f"--output={output}", f"--export={','.join(export) if export else 'NONE'}"]
    mem = mem_arg(memory_max)
    if mem:
        argv.append(f"--mem={mem}")
    if cpus:
        argv.append(f"--cpus-per-task={cpus}")
    for flag, value in (("partition", partition), ("account", account), ("qos", qos)):
        if value:
            argv.append(f"--{flag}={value}")
    if after:
        argv.append("--dependency=afterok:" + ":".join(sorted(set(after), key=_num)))
    return [*argv, f"--wrap={wrap}"]


def _num(jid: str) -> tuple[int, str]:
    head = jid.split("_")[0]
    return (int(head), jid) if head.isdigit() else (0, jid)


def _element_key(jid: str) -> tuple[int, int]:
    head, _, tail = jid.partition("_")
    return (int(head) if head.isdigit() else 0, int(tail) if tail.isdigit() else -1)


def scancel_argv(ids: Iterable[str], signal: str | None = None) -> list[str]:
    ids = list(ids)
    if not ids or not all(re.fullmatch(r"\d+(_\d+)?", i) for i in ids):
        raise ConfigError(f"scancel needs job ids read from squeue, got {ids!r}")
    return ["scancel", *([f"--signal={signal}", "--full"] if signal else []), *ids]


def throttle_argv(array_id: str, n: int) -> list[str]:
    """Live parallelism of one array (the autoscaler's knob); never 0 (= unlimited)."""
    if n < 1 or not array_id.isdigit():
        raise ConfigError(f"ArrayTaskThrottle {n} for array {array_id!r}: need an id and n >= 1")
    return ["scontrol", "update", f"JobId={array_id}", f"ArrayTaskThrottle={n}"]


def throttle_script(group: str, n: int) -> str:
    """One round trip on the login node: ArrayTaskThrottle=n on every array of `group`
    that still has pending elements, the ids read from squeue right there (never typed)."""
    if n < 1:
        raise ConfigError(f"ArrayTaskThrottle {n}: never 0 (Slurm reads it as unlimited)")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", group):
        raise ConfigError(f"group {group!r}: not a plain group name")
    return (f"squeue -h --me -t PENDING -o '%F|%j' | awk -F'|' -v g=':{group}' "
            "'index($2, \"jobsafe:\") == 1 && substr($2, length($2) - length(g) + 1) == g "
            "{print $1}' | sort -u | while read -r a; do "
            f"scontrol update JobId=\"$a\" ArrayTaskThrottle={n} || exit 1; done")


def hold_argv(ids: Iterable[str]) -> list[str]:
    return ["scontrol", "hold", ",".join(ids)]


def release_argv(ids: Iterable[str]) -> list[str]:
    return ["scontrol", "release", ",".join(ids)]


# ---- the scheduler seam -----------------------------------------------------------------

Runner = Callable[[Sequence[str]], str]


class SlurmScheduler:
    """What the commands do to a Slurm cluster, by group and label, through `run` (argv ->
    stdout, on the login node). Labels are resolved to job ids from one squeue read and
    the batch's chunk files (`labels`: (comment digest, index) -> (group, label))."""

    name = "slurm"

    def __init__(self, run: Runner, playbook: str,
                 labels: Mapping[tuple[str, int], tuple[str, str]]) -> None:
        self._run = run
        self.playbook = playbook
        self.labels = dict(labels)

    def elements(self) -> list[tuple[str, str, Element]]:
        """(group, label, element) of this batch's elements squeue shows."""
        text = self._run(squeue_argv())
        out = []
        for e in parse_squeue(text, job_name(self.playbook, "")):
            key = self.labels.get((e.comment, e.index if e.index is not None else 0))
            if key:
                out.append((key[0], key[1], e))
        return out

    def status(self, group: str | None = None) -> dict[str, str]:
        """label -> normalised state of its active element."""
        return {lbl: e.status for g, lbl, e in self.elements() if group in (None, g)}

    def kill(self, group: str, labels: Iterable[str]) -> list[str]:
        wanted = set(labels)
        ids = sorted((e.id for g, lbl, e in self.elements() if g == group and lbl in wanted),
                     key=_element_key)
        if ids:
            self._run(scancel_argv(ids))
        return ids

    def pause(self, group: str) -> None:
        ids = [e.id for g, _, e in self.elements() if g == group and e.state == "PENDING"]
        if ids:
            self._run(hold_argv(ids))

    def resume(self, group: str) -> None:
        ids = [e.id for g, _, e in self.elements() if g == group and e.state == "PENDING"]
        if ids:
            self._run(release_argv(ids))

    def parallel(self, group: str, n: int) -> list[str]:
        arrays = sorted({e.array_id for g, _, e in self.elements() if g == group})
        for a in arrays:
            self._run(throttle_argv(a, n))
        return arrays

    def clean(self, group: str) -> str:
        return ("nothing to clean: Slurm forgets finished jobs itself (MinJobAge); the "
                "ledger keeps their outcomes")

    def add(self, *_: Any) -> None:
        raise NotImplementedError("Slurm jobs are submitted by submit-batch's arrays "
                                  "(jobsafe_ops.batch.slurm_submit), one sbatch per chunk")
