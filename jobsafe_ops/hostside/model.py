"""THE pueue status model: one meaning of every state, shared by the laptop and the host.

Stdlib only, Python >= 3.8 (it runs on whatever python3 a host has), and it imports nothing
outside `jobsafe_ops/hostside` (tests/hostside/test_hostside_rules.py enforces both). The
feeder and the monitor filter carry it to the host inlined (`hostside/bundle.py`); on the
laptop `scheduler/pueue.py`, `batch/retry.py`, `batch/plan.py` and the facts import it.

What it defines, once:
* how a raw pueue task status (v3 or v4 JSON) normalises to one lower-case state;
* the state tuples (ACTIVE, FAILED, WAITING) and what "blocked" means;
* the label grammar: `-retry-N` (every attempt of a job shares its base label), units;
* the limits every `pueue add` line obeys and the argv of that add;
* LEAN_ENV, the environment a task is added with.
The host's health facts have their own module beside it (health.py).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

UTC = timezone.utc  # noqa: UP017 - datetime.UTC is 3.11+; this runs on the host's python3

# ---- states ------------------------------------------------------------------------------

ACTIVE = ("queued", "running", "paused", "stashed", "locked")  # can still run or is running
FAILED = ("failed", "killed", "dependency_failed", "errored", "failed_to_spawn")
WAITING = ("queued", "stashed")  # not started: these are the ones that can be blocked
STARTED = ("running", "paused")  # started and not finished: they have a start and a runtime
BLOCKED = "blocked"  # derived: waiting behind a failed (or blocked) dependency, forever
TRANSIENT_EXIT_CODES = frozenset({137, 143})  # SIGKILL (OOM) / SIGTERM: maybe transient
RESULT_NAMES = {"Success": "success", "Killed": "killed", "Errored": "errored",
                "DependencyFailed": "dependency_failed"}

def _result(result: Any) -> tuple[str, int | None, str | None]:
    """A Done result -> (state, exit code, FailedToSpawn detail)."""
    if isinstance(result, str):
        return RESULT_NAMES.get(result, result.lower()), (0 if result == "Success" else None), None
    if isinstance(result, dict) and "Failed" in result:
        return "failed", int(result["Failed"]), None
    if isinstance(result, dict) and "FailedToSpawn" in result:
        return "failed_to_spawn", None, str(result["FailedToSpawn"])
    raise ValueError(f"unknown task result {result!r}")


def task_status(raw: Mapping[str, Any]) -> tuple[str, dict[str, Any], str]:
    """A raw task -> (state, its fields, schema): the fields are exit_code, detail, start,
    end and enqueued_at where pueue has them. v3: unit variants are bare strings and the
    times are top-level; v4: every status is an object and Done carries `result`.
    Raises ValueError for a status it does not know."""
    status = raw.get("status")
    top = {"start": raw.get("start"), "end": raw.get("end"),
           "enqueued_at": raw.get("enqueued_at")}
    if isinstance(status, str):  # v3 unit variant: Queued / Running / Paused / Locked
        return status.lower(), {**top, "exit_code": None, "detail": None}, "v3"
    if not isinstance(status, dict) or len(status) != 1:
        raise ValueError(f"unknown task status {status!r}")
    kind, body = next(iter(status.items()))
    if kind == "Done":
        if isinstance(body, dict) and "result" in body:  # v4
            state, code, detail = _result(body["result"])
            return state, {**body, "exit_code": code, "detail": detail}, "v4"
        state, code, detail = _result(body)  # v3: {"Done": "Success"} / {"Done": {"Failed": 2}}
        return state, {**top, "exit_code": code, "detail": detail}, "v3"
    if kind == "Locked":
        return "locked", {"exit_code": None, "detail": None}, "v4"
    body = dict(body) if isinstance(body, dict) else {}
    schema = "v3" if "prev_status" in raw or "start" in raw else "v4"
    if schema == "v3":
        body.update(start=raw.get("start"), enqueued_at=raw.get("enqueued_at"))
    body.update(exit_code=None, detail=None)
    return kind.lower(), body, schema


def parse_ts(text: Any) -> datetime | None:
    """pueue's RFC 3339 time (nanoseconds; fromisoformat takes at most 6 digits, and no
    `Z` before 3.11) -> an aware datetime (UTC when it has no zone), None if unreadable."""
    if not isinstance(text, str) or not text:
        return None
    text = text.replace("Z", "+00:00")
    if "." in text:
        head, _, rest = text.partition(".")
        digits = re.match(r"\d*", rest).group(0)  # type: ignore[union-attr]
        text = head + "." + (digits[:6] or "0") + rest[len(digits):]
    try:
        stamp = datetime.fromisoformat(text)
    except ValueError:
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


def epoch(text: Any) -> float | None:
    """parse_ts as epoch seconds (3 decimals), None if unreadable."""
    ts = parse_ts(text)
    return None if ts is None else round(ts.timestamp(), 3)


# ---- the team journal on the host ---------------------------------------------------------

JOURNAL = "~/.local/state/jobsafe-ops/journal.ndjson"  # every operator's mutations (flock)
SAMPLED = ("autoscale", "autoscale-check")  # its actions that carry the host's readings
MAX_SAMPLES = 500


def health_samples(path: str, since: float | None, most: int = MAX_SAMPLES
                   ) -> list[dict[str, Any]]:
    """The host's load and memory as recorded in the team journal (autoscale journals its
    readings with every change and check): the newest `most` since `since` (epoch s)."""
    out: list[dict[str, Any]] = []
    try:
        fh = open(os.path.expanduser(path), "rb")
    except OSError:
        return out
    with fh:
        for raw in fh:
            if not raw.endswith(b"\n") or b'"load1"' not in raw:
                continue
            try:
                entry = json.loads(raw)
            except ValueError:
                continue
            if not isinstance(entry, dict) or entry.get("action") not in SAMPLED:
                continue
            stamp = epoch(entry.get("time"))
            if stamp is None or (since is not None and stamp < since):
                continue
            out.append({"time": stamp, "action": entry.get("action"),
                        **{k: entry.get(k) for k in ("nproc", "load1", "mem_pct", "swap_in",
                                                      "swap_out")}})
    out.sort(key=lambda e: e["time"])
    return out[-most:] if most > 0 else []


def blocked_ids(tasks: Mapping[int, tuple[str, Sequence[int]]]) -> set[int]:
    """{id: (state, dependency ids)} -> the ids of the waiting tasks that can never start.

    Blocked = queued or stashed behind a dependency that failed or is itself blocked
    (pueue does not mark them DependencyFailed while the group is paused). Transitive.
    A dependency absent from the listing is NOT a reason: pueue 4.0.4 starts a task whose
    dependency is gone (its scheduler skips absent ids), never accepts `--after` on an
    absent id ("Unable to setup dependencies"), and `clean`/`remove` keep any task that
    has an unfinished dependant; and a `status --group` listing hides other groups."""
    blocked: set[int] = set()
    changed = True
    while changed:
        changed = False
        for tid, (state, deps) in tasks.items():
            if tid in blocked or state not in WAITING:
                continue
            for dep in deps:
                known = tasks.get(dep)
                if dep in blocked or (known is not None and known[0] in FAILED):
                    blocked.add(tid)
                    changed = True
                    break
    return blocked


# ---- labels: the `-retry-N` grammar ------------------------------------------------------
# A fresh re-add of a failed job is labelled `<base>-retry-N` (N >= 1, no leading zero, never
# stacked): every attempt of a job shares the base label; the highest N is the newest.

RETRY_RE = re.compile(r"^(?P<base>.+)-retry-(?P<n>[1-9][0-9]*)$")


def base_label(label: str) -> str:
    """'X-retry-2' -> 'X'; 'X' -> 'X'. Strips one -retry-N suffix (we never stack them)."""
    m = RETRY_RE.match(label)
    return m.group("base") if m else label


def attempt_of(label: str | None) -> int:
    """'X' -> 0, 'X-retry-2' -> 2 (None: an unlabelled task, attempt 0)."""
    m = RETRY_RE.match(label or "")
    return int(m.group("n")) if m else 0


def retry_label(label: str, n: int) -> str:
    """The label of retry number `n` of the job labelled `label` (or of its base)."""
    if n < 1:
        raise ValueError(f"retry number must be >= 1, got {n}")
    return f"{base_label(label)}-retry-{n}"


# A unit (units mode: one pueue task runs many jobs) is labelled
# `<playbook>:[<phase>:]unit-<5-digit index>-<8 hex of its members' labels>`.
UNIT_RE = re.compile(r":unit-[0-9]{5}-[0-9a-f]{8}$")


def unit_label(playbook: str, phase: str, index: int, digest: str) -> str:
    """The label of unit number `index` of a playbook's phase ("" = no phase)."""
    label = f"{playbook}:{phase + ':' if phase else ''}unit-{index:05d}-{digest[:8]}"
    if not UNIT_RE.search(label):
        raise ValueError(f"unit label {label!r}: the digest must be 8 hex digits")
    return label


# A job's output file in `<batch>/logs/` (a Slurm element's, and each command's of a unit
# run with `--logs`): the label, anything outside [A-Za-z0-9._@+=-] as "_".
_LOG_UNSAFE = re.compile(r"[^A-Za-z0-9._@+=-]")


def log_name(label: str) -> str:
    return _LOG_UNSAFE.sub("_", label)[:200] + ".log"


# ---- one `pueue add` ---------------------------------------------------------------------

MAX_LABEL = 256  # a label is stored in every status read and receipt line (AP-10)
MAX_COMMAND = 131072  # one argv string over this fails with E2BIG (Linux MAX_ARG_STRLEN)
GROUP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

# pueue stores the add-time client environment in every task (state.json grows, secrets
# land on disk - docs/glossary.md): add with this allow-list only, plus --pass-env.
# Every batch has its own dir on the host: BATCH_ROOT/<playbook> (feeder, commands, receipts,
# the outcome ledger); the monitor filter scans the ledgers under it.
BATCH_ROOT = "~/.local/state/jobsafe-ops/batches"


LEAN_ENV = (
    "HOME", "PATH", "USER", "LOGNAME", "SHELL", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR",
    "XDG_RUNTIME_DIR", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME",
    "DBUS_SESSION_BUS_ADDRESS", "PUEUE_CONFIG_PATH",
)


def add_words(pueue: str, command: str, group: str, label: str, workdir: str,
              after: Iterable[int] = (), print_task_id: bool = True, stashed: bool = False,
              priority: int | None = None) -> list[str]:
    """The argv of one `pueue add` (every value one word; the caller checks the values)."""
    argv = [pueue, "add", "--group", group, "--label", label, "--working-directory", workdir]
    if print_task_id:
        argv.append("--print-task-id")
    if stashed:
        argv.append("--stashed")
    if priority is not None:
        argv += ["--priority", str(priority)]
    deps = sorted(set(after))
    if deps:
        argv += ["--after"] + [str(d) for d in deps]
    return argv + ["--", command]
