"""The monitor's remote filter: summarize pueue's state ON the host (stdlib only).

Sent whole as `python3 -c <this file> ARGS` (no upload, nothing left on the host), it reads
pueue's state file (once the daemon answered `pueue group --json`; else it runs
`pueue status --json`), and prints one compact JSON line with only what a view
needs: counts per state, running labels with their start, failed labels with exit code and
last log lines, blocked dependents, and the host's health facts. So what crosses SSH per
poll grows with the group watched, not with the state file (AP-10: 50 K finished tasks are
tens of MB of JSON). Task ids never leave the host: they are resolved from labels and used
only for `pueue log` inside the same run (INV-8).

Its `report` mode (`report --group G [--batch B]`, for `jobsafe report`) lists instead every
attempt of the group with its outcome and times (pueue's tasks and every `end` line of the
ledgers), the log tails of the newest failed ones and the health facts, in one JSON line.

It is also imported locally: the fallback for hosts without python3 ships the plain JSON
and calls `summarize` here, so both paths give the same summary. Keep it Python 3.8
compatible (it runs on whatever python3 the host has); it imports only hostside modules
(the shared pueue model, the health parsers), which are inlined into the source sent.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import shlex
import subprocess
import sys
import time
from datetime import datetime
from typing import Any

from .health import health_facts, largest_state_file, parse_meminfo, parse_swap_counters
from .model import (
    ACTIVE,
    BATCH_ROOT,
    FAILED,
    JOURNAL,
    STARTED,
    UNIT_RE,
    UTC,
    attempt_of,
    base_label,
    blocked_ids,
    epoch,
    health_samples,
    parse_ts,
    task_status,
)

SCHEMA = 1
STATUS_FAILED = "pueue status failed: "
_NOT_IN_STATE = "missing"
# ---- pueue status (v3 and v4) ------------------------------------------------------------

def task_state(raw: dict[str, Any]) -> tuple[str, int | None, str | None]:
    """-> (state, exit code, start), normalised by the shared model (model.task_status);
    "unknown" for a status the model does not know (the summary still counts it)."""
    try:
        state, fields, _ = task_status(raw)
    except ValueError:
        return "unknown", None, None
    return state, fields.get("exit_code"), fields.get("start")


def normalise(data: dict[str, Any]) -> dict[int, dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {}
    for key, raw in (data.get("tasks") or {}).items():
        state, code, start = task_state(raw)
        tid = int(raw.get("id", key))
        out[tid] = {
            "id": tid, "group": str(raw.get("group", "default")), "label": raw.get("label"),
            "command": str(raw.get("original_command") or raw.get("command") or ""),
            "state": state, "exit_code": code, "start": start, "end": _end(raw),
            "deps": [int(d) for d in raw.get("dependencies") or ()],
        }
    return out


def _end(raw: dict[str, Any]) -> Any:
    status = raw.get("status")
    if isinstance(status, dict) and isinstance(status.get("Done"), dict) \
            and "end" in status["Done"]:
        return status["Done"]["end"]
    return raw.get("end")


RECENT_WINDOW = 3600.0  # seconds of finished jobs the rate is taken over (ops/eta.py)


def recent(ended: list[tuple[datetime, datetime | None]], now: datetime,
           window: float = RECENT_WINDOW) -> dict[str, Any]:
    """Jobs that ended in the `window` before `now` (host clock), and the span they took:
    from the earliest start among them (or the window's start, if earlier) to the latest
    end. Recorded times only, so two reads of the same tasks agree. Pure."""
    cut = now.timestamp() - window
    inside = [(end, start) for end, start in ended if end.timestamp() >= cut]
    if not inside:
        return {"window": window, "ended": 0, "span": 0.0}
    starts = [st.timestamp() for _, st in inside if st is not None]
    begin = max(cut, min(starts)) if starts else cut
    last = max(end.timestamp() for end, _ in inside)
    return {"window": window, "ended": len(inside), "span": round(max(0.0, last - begin), 3)}


_FIRST_TASK = re.compile(r'\{"tasks":\{"(\d+)":\{"id":(\d+),')
_GROUPS_KEY = '},"groups":{'


def load_state(text: str, group: str | None) -> dict[str, Any]:
    """`pueue status --json` text -> the tasks a summary of `group` needs, and all groups.

    Watching one group must not cost a full parse of a 40 MB state (AP-10): pueue prints
    compact serde JSON in which every task object starts with `"<id>":{"id":<id>,`, and an
    unescaped quote cannot occur inside a JSON string, so `,"group":"G",` and `{"id":` are
    structural. Only the group's tasks (and, on demand, the tasks they depend on) are
    decoded; any other layout falls back to a full parse.
    """
    if group is None:
        data: dict[str, Any] = json.loads(text)
        return data
    try:
        return _scan(text.strip(), group)
    except ValueError:
        data = json.loads(text)
        return data


_KEY_BEFORE = re.compile(r'"(\d+)":$')


def _task_at(text: str, pos: int, decoder: json.JSONDecoder) -> dict[str, Any]:
    """The task object around `pos`: the nearest `"<id>":{"id":<id>,` before it (an env
    var named `id` first in `envs` also reads `{"id":`, but not after `"<id>":`)."""
    start = pos
    while True:
        start = text.rfind('{"id":', 0, start)
        if start < 0:
            raise ValueError("no task start")
        key = _KEY_BEFORE.search(text, max(0, start - 24), start)
        if key and text.startswith('{"id":' + key.group(1) + ",", start):
            break
    task, _ = decoder.raw_decode(text, start)
    if not isinstance(task, dict):
        raise ValueError("not a task")
    return task


def _scan(text: str, group: str) -> dict[str, Any]:
    at = text.rfind(_GROUPS_KEY)  # the top-level key comes after every task
    first = _FIRST_TASK.match(text)
    empty = text.startswith('{"tasks":{}')
    if at < 0 or not (empty or (first and first.group(1) == first.group(2))):
        raise ValueError("not pueue's compact layout")
    decoder = json.JSONDecoder()
    groups, end = decoder.raw_decode(text, at + len(_GROUPS_KEY) - 1)
    if text[end:] != "}":
        raise ValueError("not pueue's compact layout")
    picked: dict[str, Any] = {}
    needle = ',"group":' + json.dumps(group) + ","
    count = text.count(needle, 0, at)
    if count > 1000 and 2 * count > text.count('{"id":', 0, at):
        # most tasks are the group's: one json.loads is cheaper than a decode per task
        raise ValueError("mostly this group")
    pos = text.find(needle, 0, at)
    while pos >= 0:
        task = _task_at(text, pos, decoder)
        if task.get("group") == group:  # an env var named "group" must not fool us
            picked[str(task["id"])] = task
        pos = text.find(needle, pos + len(needle), at)
    pending = [d for t in picked.values() for d in t.get("dependencies") or ()]
    where: dict[int, int] | None = None
    while pending:  # dependencies in other groups decide "blocked"
        dep = pending.pop()
        if str(dep) in picked:
            continue
        if where is None:  # one index of every task start, built only when needed
            where = {int(m.group(1)): m.end(1) + 2
                     for m in re.finditer(r'"(\d+)":\{"id":\1,', text[:at + 1])}
        if dep in where:
            task, _ = decoder.raw_decode(text, where[dep])
            picked[str(dep)] = task
            pending.extend(task.get("dependencies") or ())
    return {"tasks": picked, "groups": groups}


def _name(t: dict[str, Any]) -> str:
    # Unlabelled tasks are shown by their command, never by id (ids are reused, INV-8).
    if t["label"] is not None:
        return str(t["label"])
    cmd = " ".join(t["command"].split())
    return "(no label) " + (cmd if len(cmd) <= 60 else cmd[:57] + "...")


def summarize(
    data: dict[str, Any],
    group: str | None = None,
    glob: str | None = None,
    limit: int = 200,
    log_labels: int = 5,
    now: datetime | None = None,
    chains: bool = False,
) -> tuple[dict[str, Any], dict[int, tuple[str, str]]]:
    """pueue status JSON -> (summary, {task id: (group, label)} whose logs to fetch).

    One entry per job: the newest attempt (highest id; ids are max+1, so among tasks
    that coexist a higher id is always newer) decides the job's state, so a label
    re-queued after a failure, or re-added fresh as `<label>-retry-N`, is judged by its new
    task (INV-8). Older attempts are counted in `superseded`.
    """
    now = now or datetime.now(UTC)
    tasks = normalise(data)
    blocked = blocked_ids({tid: (t["state"], t["deps"]) for tid, t in tasks.items()})
    for tid in blocked:
        tasks[tid]["state"] = "blocked"
    groups: dict[str, Any] = {}
    names = [group] if group else sorted(data.get("groups") or {})
    raw_groups = data.get("groups") or {}
    for name in names:
        g = raw_groups.get(name)
        groups[name] = {
            "status": str(g.get("status", "Running")) if isinstance(g, dict) else _NOT_IN_STATE,
            "parallel": int(g.get("parallel_tasks", 1)) if isinstance(g, dict) else 0,
            "counts": {}, "total": 0, "superseded": 0, "ready": 0,
            "running": [], "failed": [], "blocked": [], "truncated": {},
        }
    ended: dict[str, list[tuple[datetime, datetime | None]]] = {n: [] for n in groups}
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    attempts: dict[tuple[str, str], int] = {}
    # the highest retry number wins, then the highest id (ledger outcomes have ids < 0)
    for tid in sorted(tasks, key=lambda i: (attempt_of(tasks[i]["label"]), i)):
        t = tasks[tid]
        if t["group"] not in groups:
            continue
        if glob is not None and (t["label"] is None or not fnmatch.fnmatchcase(t["label"], glob)):
            continue
        key = (t["group"], base_label(t["label"]) if t["label"] is not None else f"#{tid}")
        attempts[key] = attempts.get(key, 0) + 1
        latest[key] = t
    wanted: dict[int, tuple[str, str]] = {}
    for key, t in latest.items():
        g = groups[t["group"]]
        state = t["state"]
        g["counts"][state] = g["counts"].get(state, 0) + 1
        g["total"] += 1
        g["superseded"] += attempts[key] - 1
        entry: dict[str, Any] = {"label": _name(t), "state": state}
        if state == "success" or state in FAILED:
            end = parse_ts(t.get("end"))
            if end is not None:
                ended[t["group"]].append((end, parse_ts(t["start"])))
        if attempts[key] > 1:
            entry["attempts"] = attempts[key]
        if state == "queued" and all(
            tasks.get(d, {}).get("state") == "success" for d in t["deps"]
        ):
            g["ready"] += 1
        if state in STARTED:
            start = parse_ts(t["start"])
            entry["start"] = t["start"]
            entry["runtime"] = None if start is None else round((now - start).total_seconds(), 1)
            kind = "running"
        elif state in FAILED:
            entry["exit_code"] = t["exit_code"]
            entry["_id"] = t["id"]
            kind = "failed"
        elif state == "blocked":
            entry["after"] = [_name(tasks[d]) for d in t["deps"]
                              if d in tasks and tasks[d]["state"] in (*FAILED, "blocked")]
            kind = "blocked"
        else:
            continue
        g[kind].append(entry)
    for name, g in groups.items():
        g["recent"] = recent(ended[name], now)
        # newest failures first: those are the ones whose logs are worth the bytes
        g["failed"].sort(key=lambda e: -e["_id"])
        for kind in ("running", "failed", "blocked"):
            if len(g[kind]) > limit:
                g["truncated"][kind] = len(g[kind]) - limit
                del g[kind][limit:]
        for e in g["failed"][:log_labels]:
            if e["_id"] >= 0:  # < 0: cleaned from pueue, known from the ledger only
                wanted[e["_id"]] = (e["label"], e["state"])
        for e in g["failed"]:
            e["_log_id"] = e.pop("_id")
    summary: dict[str, Any] = {"schema": SCHEMA, "group": group, "glob": glob,
                               "groups": groups}
    if chains and group:
        summary["chains"] = pending_dependants(tasks, group)
    return summary, wanted


def pending_dependants(tasks: dict[int, dict[str, Any]], group: str) -> list[dict[str, Any]]:
    """Unfinished tasks (any group) that depend on a task of `group`: cleaning the group
    while they wait would break the chain (pueue rejects or skips absent ids)."""
    out = []
    for t in tasks.values():
        if t["state"] not in (*ACTIVE, "blocked"):
            continue
        on = [tasks[d] for d in t["deps"] if d in tasks and tasks[d]["group"] == group]
        if on:
            out.append({"label": _name(t), "group": t["group"], "state": t["state"],
                        "after": sorted({_name(d) for d in on})})
    return sorted(out, key=lambda e: (e["group"], e["label"]))


def attach_logs(summary: dict[str, Any], logs: dict[str, Any], lines: int) -> None:
    """`pueue log --json` output -> last `lines` lines on each failed entry; strip ids."""
    for g in summary["groups"].values():
        for e in g["failed"]:
            item = logs.get(str(e.pop("_log_id", None)))
            if isinstance(item, dict) and lines > 0:
                text = str(item.get("output") or "")
                e["log"] = text.rstrip("\n").splitlines()[-lines:]


def log_tails(directory: str, ids: list[int], lines: int,
              max_bytes: int = 256 * 1024) -> dict[str, Any] | None:
    """The last `lines` lines of `<pueue_directory>/task_logs/<id>.log` (pueue's own log
    layout; the files are truncated when a task spawns and removed by `clean`), in
    `pueue log --json` shape. None when a file is missing: the caller asks `pueue log`.
    Reading the tail directly costs O(lines); `pueue log` in the test stand-in parses the
    whole state file (1 s at 50 K tasks)."""
    out: dict[str, Any] = {}
    for tid in ids:
        path = os.path.join(directory, "task_logs", f"{tid}.log")
        try:
            with open(path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                size = fh.tell()
                fh.seek(max(0, size - max_bytes))
                data = fh.read()
        except OSError:
            return None
        text = data.decode("utf-8", "replace").rstrip("\n")
        out[str(tid)] = {"output": "\n".join(text.splitlines()[-lines:])}
    return out


# ---- the ledger: outcomes recorded on the host (feeder.py `run` / `unit`) ---------------

LEDGER_ROOT = BATCH_ROOT
LEDGER_NAME = "ledger.ndjson"  # feeder.LEDGER_NAME


_PREFIX = b'{"v":1,"label":"'  # the writer's fixed head: {"v":1,"label":…,"group":…,
_PREFIX_LEN = len(_PREFIX)
_GROUP_KEY = b'","group":"'
RUNNING_DIR = "running"  # feeder.RUNNING_DIR: the starts of jobs not ended (yet)
_UNIT_KEY = re.compile(rb'"unit":("(?:[^"\\]|\\.)*")')


def _json_key(value: str) -> bytes:
    return json.dumps(value, ensure_ascii=True).encode()  # as the writer encodes it


def read_ledger(path: str, group: str | None = None,
                into: dict[tuple[bytes, bytes], tuple[bytes, str]] | None = None
                ) -> dict[tuple[bytes, bytes], tuple[bytes, str]]:
    """The last line per (group, label) of one ledger, in one sequential scan (the file is
    append-only and may be large: nothing is rebuilt, and lines are not decoded here: the
    key is sliced from the writer's fixed `{"v":1,"label":…,"group":…,` head). A line
    without its newline (a torn last write) is skipped. With `group`, lines are pre-filtered on the
    compact `"group":"G",` the writer prints. Keys are the JSON-encoded group and label."""
    out = {} if into is None else into
    needle = b'"group":' + _json_key(group) + b"," if group is not None else None
    try:
        fh = open(path, "rb")
    except OSError:
        return out
    with fh:
        for raw in fh:
            if not raw.endswith(b"\n") or (needle is not None and needle not in raw):
                continue
            cut = raw.find(_GROUP_KEY, _PREFIX_LEN) if raw.startswith(_PREFIX) else -1
            gend = raw.find(b'",', cut + len(_GROUP_KEY)) if cut > 0 else -1
            if gend > 0:  # unescaped quotes are structural: no label can fake this
                key = (raw[cut + len(_GROUP_KEY) - 1:gend + 1], raw[_PREFIX_LEN - 1:cut + 1])
            else:  # another writer's layout: decode to find the key
                rec = _decode((raw, path))
                if rec is None:
                    continue
                key = (_json_key(rec["group"]), _json_key(rec["label"]))
            if group is not None and key[0] != _json_key(group):
                continue
            out[key] = (raw, path)
    return out


def _decode(entry: tuple[bytes, str]) -> dict[str, Any] | None:
    try:
        rec = json.loads(entry[0])
    except ValueError:
        return None
    if not isinstance(rec, dict) or not isinstance(rec.get("label"), str) \
            or not isinstance(rec.get("group"), str):
        return None
    rec["_ledger"] = entry[1]
    return rec


def decoded(raws: dict[tuple[bytes, bytes], tuple[bytes, str]]
            ) -> dict[tuple[str, str], dict[str, Any]]:
    """Every last line decoded, by (group, label) (small ledgers and tests)."""
    out = {}
    for entry in raws.values():
        rec = _decode(entry)
        if rec is not None:
            out[(rec["group"], rec["label"])] = rec
    return out


def _succeeded(raw: bytes) -> bool:
    # unescaped quotes only occur structurally in JSON: no string can fake these
    return b'"event":"end"' in raw and b'"outcome":"success"' in raw


def _alive(rec: dict[str, Any], boot: str) -> bool:
    pid = rec.get("pid")
    if not isinstance(pid, int) or pid <= 0 or (rec.get("boot") and rec.get("boot") != boot):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def _boot_id() -> str:
    return _read("/proc/sys/kernel/random/boot_id").strip()


def outcome(rec: dict[str, Any], boot: str | None = None) -> str:
    """success | failed | killed | cancelled | running for the last record of a label: an
    `end` says (`cancelled`: written by `jobsafe cancel`, ops_agent.py); a `start` alone is
    running while its process lives, else it was killed (SIGKILL)."""
    if rec.get("event") == "end":
        value = rec.get("outcome")
        if value in ("success", "failed", "killed", "cancelled"):
            return str(value)
        return "success" if rec.get("exit") == 0 else "failed"
    return "running" if _alive(rec, _boot_id() if boot is None else boot) else "killed"


def read_markers(ledger: str, group: str | None = None) -> list[dict[str, Any]]:
    """The start markers next to a ledger: jobs running now, or killed by SIGKILL."""
    directory = os.path.join(os.path.dirname(ledger), RUNNING_DIR)
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return []
    out = []
    for name in names:
        try:
            with open(os.path.join(directory, name), "rb") as fh:
                rec = _decode((fh.read(), ledger))
        except OSError:
            continue
        if rec is not None and (group is None or rec["group"] == group):
            out.append(rec)
    return out


def with_markers(raws: dict[tuple[bytes, bytes], Any], markers: list[dict[str, Any]],
                 boot: str) -> None:
    """A live marker: the label is running (its older record no longer decides); a dead
    one whose end is not on record: it was killed (a start record stands for it)."""
    for m in markers:
        key = (_json_key(m["group"]), _json_key(m["label"]))
        if _alive(m, boot):
            raws.pop(key, None)
            continue
        last = raws.get(key)
        ended = _decode(last) if isinstance(last, tuple) else last
        if ended is None or ended.get("start") != m.get("start"):
            raws[key] = m


def relevant(raws: dict[tuple[bytes, bytes], Any], boot: str | None = None,
             markers: list[dict[str, Any]] | None = None,
             cancelled: dict[tuple[str, str], int] | None = None) -> list[dict[str, Any]]:
    """Records that can change what a view or a rerun decides: every attempt of a job
    (group, base label) and every command of a unit that has a failure on record. A job
    whose attempts all succeeded adds nothing to a failure view; successes are decoded
    only when a failure of their job or unit makes them matter (keeps the scan cheap).
    `cancelled` (filled in): (group, base label) -> the newest attempt `jobsafe cancel`
    recorded; that attempt and the older ones are left out of the records."""
    boot = _boot_id() if boot is None else boot
    if markers:
        with_markers(raws, markers, boot)
    bad_jobs: set[tuple[str, str]] = set()
    bad_units: set[tuple[bytes, bytes]] = set()
    cancelled = {} if cancelled is None else cancelled
    out: list[dict[str, Any]] = []
    successes: list[tuple[tuple[bytes, bytes], tuple[bytes, str]]] = []
    for key, entry in raws.items():
        if isinstance(entry, dict):  # a marker
            rec: dict[str, Any] | None = entry
        elif _succeeded(entry[0]):
            if b'"unit":' in entry[0]:  # only a unit's failure can make it matter by unit
                successes.append((key, entry))
            continue
        else:
            rec = _decode(entry)
        if rec is None:
            continue
        rec["_outcome"] = outcome(rec, boot)
        if rec["_outcome"] == "running":
            continue
        if rec["_outcome"] == "cancelled":  # the job and its older attempts: not failed
            job = (rec["group"], base_label(rec["label"]))
            cancelled[job] = max(cancelled.get(job, -1), attempt_of(rec["label"]))
            continue
        out.append(rec)
        if rec["_outcome"] in ("failed", "killed"):
            bad_jobs.add((rec["group"], base_label(rec["label"])))
            if isinstance(rec.get("unit"), str):
                bad_units.add((key[0], _json_key(rec["unit"])))
    if not bad_jobs and not bad_units:
        return _uncancelled(out, cancelled)
    picked: dict[tuple[bytes, bytes], tuple[bytes, str]] = {}
    for group, base in bad_jobs:  # looked up, not scanned: a job's attempts are -retry-1..N
        g, b = _json_key(group), _json_key(base)
        n = 0
        while True:
            key = (g, b if n == 0 else b[:-1] + b"-retry-%d\"" % n)
            entry = raws.get(key)
            if entry is None and n > 0:
                break
            if isinstance(entry, tuple) and _succeeded(entry[0]):
                picked[key] = entry
            n += 1
    if bad_units:  # a unit's commands share nothing but the unit: scan the successes
        for key, entry in successes:
            unit = _UNIT_KEY.search(entry[0])
            if unit is not None and (key[0], unit.group(1)) in bad_units:
                picked[key] = entry
    for entry in picked.values():
        rec = _decode(entry)
        if rec is not None:
            rec["_outcome"] = "success"
            out.append(rec)
    return _uncancelled(out, cancelled)


def _uncancelled(records: list[dict[str, Any]], cancelled: dict[tuple[str, str], int]
                 ) -> list[dict[str, Any]]:
    """Drop the attempts a cancel covers (that attempt and older ones of the job)."""
    if not cancelled:
        return records
    return [r for r in records if attempt_of(r["label"]) >
            cancelled.get((r["group"], base_label(r["label"])), -1)]


def ledger_paths(root: str = LEDGER_ROOT) -> list[str]:
    root = os.path.expanduser(root)
    try:
        names = sorted(os.listdir(root))
    except OSError:
        return []
    paths = [os.path.join(root, n, LEDGER_NAME) for n in names]
    return [p for p in paths
            if os.path.isfile(p) or os.path.isdir(os.path.join(os.path.dirname(p), RUNNING_DIR))]


def ledger_task(rec: dict[str, Any], tid: int) -> dict[str, Any]:
    """A ledger record as a pueue v4 status task (so every reader judges it the same way),
    id < 0: it is no longer in pueue, and its id must never reach `pueue log`."""
    state = rec.get("_outcome") or outcome(rec)
    times = {"enqueued_at": rec.get("start"), "start": rec.get("start"), "end": rec.get("end")}
    result: Any = {"Failed": int(rec.get("exit") or 1)} if state == "failed" else (
        "Killed" if state == "killed" else "Success")
    return {
        "id": tid, "group": rec["group"], "label": rec["label"],
        "original_command": str(rec.get("command") or ""),
        "command": str(rec.get("command") or ""), "path": str(rec.get("workdir") or ""),
        "envs": {}, "dependencies": [], "priority": 0, "created_at": rec.get("start"),
        "status": {"Done": {**times, "result": result}},
        "ledger": rec.get("_ledger"), "unit": rec.get("unit"), "exit": rec.get("exit"),
    }


def merge_ledger(data: dict[str, Any], records: list[dict[str, Any]]) -> int:
    """Add to a `pueue status --json` dict the recorded outcomes of labels pueue no longer
    has (cleaned): a cleaned failure stays failed until a later attempt succeeds. A failed
    or killed unit whose failures are on record per command is replaced by its commands
    (units mode: each command is judged by its own label). Returns how many were added."""
    tasks = data.setdefault("tasks", {})
    present = {(t.get("group"), t.get("label")) for t in tasks.values()}
    failed_units = {(r["group"], str(r.get("unit"))) for r in records
                    if r.get("unit") and r.get("_outcome") in ("failed", "killed")}
    for key, raw in list(tasks.items()):
        label = raw.get("label")
        if isinstance(label, str) and UNIT_RE.search(base_label(label)) and \
                (raw.get("group"), base_label(label)) in failed_units and \
                task_state(raw)[0] in FAILED:
            del tasks[key]
    new = [r for r in records if (r["group"], r["label"]) not in present]
    new.sort(key=lambda r: (attempt_of(r["label"]), str(r.get("end") or r.get("start"))))
    for n, rec in enumerate(new):
        tid = n - len(new)  # -len .. -1: the newest record gets the highest id
        tasks[str(tid)] = ledger_task(rec, tid)
    return len(new)


def ledger_records(group: str | None, root: str = LEDGER_ROOT,
                   paths: list[str] | None = None) -> list[dict[str, Any]]:
    records: dict[tuple[bytes, bytes], Any] = {}
    markers: list[dict[str, Any]] = []
    for path in ledger_paths(root) if paths is None else paths:
        read_ledger(path, group, records)
        markers.extend(read_markers(path, group))
    return relevant(records, markers=markers)


def ledger_main(argv: list[str]) -> int:
    """`ledger [--group G] [--ledger PATH]...`: the relevant records as one JSON line
    (submit-batch, audit and retry-failed merge them into the pueue state they read)."""
    parser = argparse.ArgumentParser(prog="jobsafe-monitor-filter ledger")
    parser.add_argument("--group")
    parser.add_argument("--root", default=LEDGER_ROOT)
    parser.add_argument("--ledger", action="append", help="read only these ledgers")
    parser.add_argument("--succeeded", action="store_true",
                        help="also list every label whose last outcome is a success")
    args = parser.parse_args(argv)
    records: dict[tuple[bytes, bytes], Any] = {}
    markers: list[dict[str, Any]] = []
    paths = ledger_paths(args.root) if args.ledger is None else [
        os.path.expanduser(p) for p in args.ledger]
    for path in paths:
        read_ledger(path, args.group, records)
        markers.extend(read_markers(path, args.group))
    cancelled: dict[tuple[str, str], int] = {}
    out: dict[str, Any] = {"records": relevant(records, markers=markers, cancelled=cancelled)}
    if args.succeeded:  # submit-batch's read: also what a rerun must not run again
        out["succeeded"] = sorted({json.loads(key[1]) for key, entry in records.items()
                                   if isinstance(entry, tuple) and _succeeded(entry[0])})
        out["cancelled"] = sorted([g, b if n == 0 else f"{b}-retry-{n}"]
                                  for (g, b), n in cancelled.items())
    sys.stdout.write(json.dumps(out, separators=(",", ":")) + "\n")
    return 0


# ---- host health -------------------------------------------------------------------------

def _read(path: str) -> str:
    try:
        with open(path) as fh:
            return fh.read()
    except OSError:
        return ""


def swap_counters() -> tuple[int, int] | None:
    return parse_swap_counters(_read("/proc/vmstat").splitlines())


# ---- pueue's settings: config file, state directory, pid file (pueue_lib settings.rs) ----
#
# The one resolver of where pueue keeps its files, run ON the host: the filter uses it to
# read the state file and the task logs, and probe.PUEUE_DIR (the shell twin, for hosts
# without python3) is checked against it on one table of cases (tests/test_pueue_paths.py).
# pueue 4.0.4 rules: the config is `-c`, else $PUEUE_CONFIG_PATH, else the first existing
# of `<config dir>/pueue/pueue.yml` (config dir = $XDG_CONFIG_HOME when absolute, else
# ~/.config) and `./pueue.yml`; no file = defaults (pueued then writes the default file,
# every path `null`). A null, `~` or empty value means "unset": pueue_directory is then
# `<data dir>/pueue` (data dir = $XDG_DATA_HOME when absolute, else ~/.local/share);
# runtime_directory is $XDG_RUNTIME_DIR when absolute, else pueue_directory; pid_path is
# `<runtime>/pueue.pid`. A leading `~` (alone or `~/`) is the home directory.

_YAML_NULL = ("", "~", "null", "Null", "NULL")
_YAML_KEY = re.compile(r"^( *)([A-Za-z_][A-Za-z0-9_]*) *:(?: +(.*?))? *$")


def _yaml_scalar(text: str) -> Any:
    """One YAML scalar as serde_yaml writes pueue.yml: quoted strings, null, bools."""
    if text[:1] == "'":
        end = re.match(r"'((?:[^']|'')*)'", text)
        return end.group(1).replace("''", "'") if end else text
    if text[:1] == '"':
        end = re.match(r'"((?:[^"\\]|\\.)*)"', text)
        return re.sub(r"\\(.)", r"\1", end.group(1)) if end else text
    text = re.sub(r"(^| +)#.*$", "", text).strip()  # a comment
    if text in _YAML_NULL:
        return None
    if text in ("true", "True", "TRUE", "false", "False", "FALSE"):
        return text.lower() == "true"
    return text


def pueue_yaml(text: str) -> dict[str, dict[str, Any]]:
    """pueue.yml -> {section: {key: scalar}} for the top-level sections (`shared`,
    `daemon`, `client`); block scalars (`|-`) and nested maps (`profiles`) are skipped."""
    out: dict[str, dict[str, Any]] = {}
    section: dict[str, Any] | None = None
    child = skip = -1
    for raw in text.replace("\r\n", "\n").split("\n"):
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        indent = len(raw) - len(raw.lstrip(" "))
        if skip >= 0 and indent > skip:
            continue  # inside a block scalar or a deeper map
        skip = -1
        m = _YAML_KEY.match(raw)
        if not m:
            continue
        value = m.group(3) or ""
        if indent == 0:
            section = out.setdefault(m.group(2), {}) if not value else None
            child = -1
            continue
        if section is None:
            continue
        if child < 0:
            child = indent
        if indent != child:
            continue
        if value[:1] in ("|", ">") or not value:
            section.setdefault(m.group(2), None)  # null, or a block/map: not a path
            skip = indent  # its lines are more indented than the key
            continue
        section.setdefault(m.group(2), _yaml_scalar(value))
    return out


def _home(env: dict[str, str]) -> str:
    return env.get("HOME") or os.path.expanduser("~")


def _xdg(env: dict[str, str], name: str, fallback: str) -> str:
    value = env.get(name) or ""
    return value if value.startswith("/") else fallback


def _tilde(path: str, home: str) -> str:
    return home + path[1:] if path == "~" or path.startswith("~/") else path


def pueue_config_path(env: dict[str, str] | None = None, config: str | None = None,
                      cwd: str = ".") -> str | None:
    """The pueue.yml pueue reads (`config` = its `-c`), or None: no file, defaults."""
    env = dict(os.environ) if env is None else env
    explicit = config or env.get("PUEUE_CONFIG_PATH")
    if explicit:
        return explicit
    config_dir = _xdg(env, "XDG_CONFIG_HOME", os.path.join(_home(env), ".config"))
    for path in (os.path.join(config_dir, "pueue", "pueue.yml"),
                 os.path.join(cwd, "pueue.yml")):
        if os.path.isfile(path):
            return path
    return None


def pueue_paths(env: dict[str, str] | None = None, config: str | None = None,
                cwd: str = ".") -> dict[str, Any]:
    """Where pueue keeps its files: config, pueue_directory, runtime_directory, pid_path,
    compress (daemon.compress_state_file) and state_file (the one the daemon writes)."""
    env = dict(os.environ) if env is None else env
    home = _home(env)
    path = pueue_config_path(env, config, cwd)
    settings = pueue_yaml(_read(path)) if path else {}
    shared, daemon = settings.get("shared", {}), settings.get("daemon", {})

    def setting(key: str) -> str | None:
        value = shared.get(key)
        return _tilde(value, home) if isinstance(value, str) and value else None

    directory = setting("pueue_directory") or os.path.join(
        _xdg(env, "XDG_DATA_HOME", os.path.join(home, ".local", "share")), "pueue")
    runtime = setting("runtime_directory") or _xdg(env, "XDG_RUNTIME_DIR", "") or directory
    compress = daemon.get("compress_state_file") is True
    return {
        "config": path, "pueue_directory": directory, "runtime_directory": runtime,
        "pid_path": setting("pid_path") or os.path.join(runtime, "pueue.pid"),
        "compress": compress,
        "state_file": os.path.join(directory, "state.json.gz" if compress else "state.json"),
    }


def state_dir(env: dict[str, str] | None = None, config: str | None = None,
              cwd: str = ".") -> str:
    """pueue's state directory (state.json, task_logs/), resolved as pueue does."""
    return str(pueue_paths(env, config, cwd)["pueue_directory"])


def health(env: dict[str, str] | None = None) -> dict[str, Any]:
    """The health facts (health.health_facts); `run` adds the swap sample around its work."""
    try:
        nproc: int | None = len(os.sched_getaffinity(0))  # what `nproc` prints
    except (AttributeError, OSError):
        nproc = os.cpu_count()
    try:
        load: tuple[float, float, float] | None = os.getloadavg()
    except OSError:
        load = None
    directory = state_dir(env)
    sizes = []
    for name in ("state.json", "state.json.gz"):  # gz when compress_state_file is on
        path = os.path.join(directory, name)
        try:
            sizes.append((os.stat(path).st_size, path))
        except OSError:
            continue
    state_file, state_size = largest_state_file(sizes)
    return health_facts(nproc, load, parse_meminfo(_read("/proc/meminfo").splitlines()),
                        None, state_file, state_size)


# ---- the run on the host -----------------------------------------------------------------

def _pueue(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)


def daemon_answers(pueue: str) -> bool:
    """`pueue group --json`: one round trip to the daemon that costs the same at 50,000
    tasks as at none (the daemon answers with its groups only). A state file outlives its
    daemon; it is read only after the daemon answered, so a stopped daemon is reported by
    `pueue status`' own "cannot connect" error, never read as a healthy state."""
    try:
        return _pueue([pueue, "group", "--json"]).returncode == 0
    except OSError:
        return False


def read_state_file(path: str) -> str | None:
    """The daemon's state file as text (gunzipped for state.json.gz), None if unreadable.
    pueued replaces it atomically (`state.json.partial`, then rename), so one read gets
    one whole state, the same JSON `pueue status --json` prints."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
        if path.endswith(".gz"):
            import gzip

            data = gzip.decompress(data)
        return data.decode("utf-8")
    except (OSError, EOFError, ValueError):  # zlib.error and UnicodeError are ValueErrors
        return None


def _from_state_file(args: argparse.Namespace, paths: dict[str, Any],
                     pueue: str) -> dict[str, Any] | None:
    """AP-10: `pueue status --json` makes the daemon serialize its whole state (2.4 s at
    50,000 tasks, whatever the group); the file is the same JSON, read in ~0.1 s. None:
    ask `pueue status` instead (daemon not answering, file missing/unreadable/unparseable)."""
    if args.no_state_file or not os.path.isfile(str(paths["state_file"])):
        return None
    if not daemon_answers(pueue):
        return None
    text = read_state_file(str(paths["state_file"]))
    if text is None:
        return None
    try:
        data = load_state(text, None if args.all_tasks else args.group)
    except ValueError:
        return None
    return data if isinstance(data.get("tasks"), dict) else None


def _from_status(pueue: str, out: dict[str, Any]) -> str | None:
    # The whole status, not `--group`: pueue's client gets the full state from the daemon
    # either way, and with every task at hand a dependency in another group is judged
    # correctly; the group is then picked out without parsing the rest (load_state).
    status_argv = [pueue, "status", "--json"]
    try:
        proc = _pueue(status_argv)
    except OSError as exc:
        proc = subprocess.CompletedProcess(status_argv, 127, "", str(exc))
    if proc.returncode != 0:
        # every line: the laptop turns pueue's multi-line report into one line + the fix
        out["error"] = STATUS_FAILED + ((proc.stderr or proc.stdout).strip()
                                        or f"exit {proc.returncode}")
        return None
    return proc.stdout


def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.monotonic()
    before = swap_counters()
    pueue = os.path.expanduser(args.pueue)
    paths = pueue_paths()
    out: dict[str, Any] = {}
    data = _from_state_file(args, paths, pueue)
    out["source"] = "state_file" if data is not None else "status"
    if data is None:
        text = _from_status(pueue, out)
        if text is not None:
            try:
                data = load_state(text, None if args.all_tasks else args.group)
            except ValueError as exc:
                out["error"] = f"pueue status --json returned invalid JSON ({exc})"
    if data is not None and args.group and not args.all_tasks and not args.no_ledger:
        merge_ledger(data, ledger_records(args.group, args.ledger_root))
    if data is not None:
        summary, wanted = summarize(data, args.group, args.glob, args.limit,
                                    args.log_labels, chains=args.all_tasks)
        logs: dict[str, Any] = {}
        if wanted and args.log_lines > 0:
            logs = log_tails(str(paths["pueue_directory"]), sorted(wanted),
                             args.log_lines) or {}
        if wanted and args.log_lines > 0 and not logs:
            try:
                lp = _pueue([pueue, "log", "--json", "--lines", str(args.log_lines),
                             *map(str, sorted(wanted))])
                logs = json.loads(lp.stdout or "{}") if lp.returncode == 0 else {}
            except (OSError, ValueError):
                logs = {}
        attach_logs(summary, logs, args.log_lines)
        out.update(summary)
    out["health"] = health()
    sampled_swap(out["health"], before, started, args.swap_window)
    out["via"] = "filter"
    return out


def sampled_swap(h: dict[str, Any], before: Any, started: float, window: float) -> None:
    """Swap activity over at least `window` seconds since `started` (pages, like vmstat's
    si/so), into the health dict `h`: one reading of the cumulative counters says nothing
    about *active* swapping."""
    rest = window - (time.monotonic() - started)
    if rest > 0:
        time.sleep(rest)
    after = swap_counters()
    h["swap_counters"] = list(after) if after else None
    h["swap_window"] = round(time.monotonic() - started, 3)
    h["swap_in"] = after[0] - before[0] if before and after else None
    h["swap_out"] = after[1] - before[1] if before and after else None


# ---- the report: every attempt of a group with its times (jobsafe report) -----------------

REPORT_LOGS = 20  # failed attempts whose log tail is read


def batch_of_command(command: str) -> str | None:
    """The batch a task was fed by: its command is `python3 <batches>/<name>/feeder.py
    run|unit ...` (the run wrapper or the unit runner); None for any other command."""
    try:
        words = shlex.split(command)
    except ValueError:
        return None
    if len(words) < 3 or not words[1].endswith("/feeder.py") or words[2] not in ("run", "unit"):
        return None
    return os.path.basename(os.path.dirname(words[1])) or None


def ledger_lines(path: str, group: str) -> list[dict[str, Any]]:
    """Every `end` line of one ledger for `group` (the report wants every attempt's times,
    not only the last line per label that the monitor's scan keeps)."""
    needle = b'"group":' + _json_key(group) + b","
    out: list[dict[str, Any]] = []
    try:
        fh = open(path, "rb")
    except OSError:
        return out
    with fh:
        for raw in fh:
            if not raw.endswith(b"\n") or needle not in raw:
                continue
            rec = _decode((raw, path))
            if rec is not None and rec["group"] == group and rec.get("event") == "end":
                out.append(rec)
    return out


def report_runs(data: dict[str, Any], records: list[dict[str, Any]],
                markers: list[dict[str, Any]], group: str, batch: str | None,
                boot: str | None = None) -> tuple[list[dict[str, Any]], dict[int, int]]:
    """pueue's tasks of `group` and the ledger's records -> one run per attempt: label,
    attempt, outcome, exit, start, end (epoch seconds, host clock), and {task id: run index}
    of the failed attempts pueue still has (their logs). The ledger decides a finished
    wrapped job (its exit and times are the job's own); pueue adds what the ledger cannot
    know: queued, running and blocked tasks, and tasks not fed through the run wrapper. Pure
    except the liveness check of a start marker."""
    boot = _boot_id() if boot is None else boot
    tasks = normalise(data)
    blocked = blocked_ids({tid: (t["state"], t["deps"]) for tid, t in tasks.items()})
    runs: list[dict[str, Any]] = []
    ended: set[tuple[str, Any]] = set()
    recorded: set[str] = set()
    units: set[str] = set()
    live: set[str] = set()
    for rec in records:
        label = rec["label"]
        recorded.add(label)
        ended.add((label, rec.get("start")))
        if isinstance(rec.get("unit"), str):
            units.add(rec["unit"])
        runs.append({"label": label, "attempt": attempt_of(label), "outcome": outcome(rec, boot),
                     "exit": rec.get("exit"), "start": epoch(rec.get("start")),
                     "end": epoch(rec.get("end")), "source": "ledger",
                     "unit": rec.get("unit")})
    for m in markers:
        if (m["label"], m.get("start")) in ended:
            continue
        state = outcome(m, boot)
        if state == "running":
            live.add(m["label"])
        runs.append({"label": m["label"], "attempt": attempt_of(m["label"]), "outcome": state,
                     "exit": None, "start": epoch(m.get("start")), "end": None,
                     "source": "marker", "unit": m.get("unit")})
    logs: dict[int, int] = {}
    for tid in sorted(tasks):
        t = tasks[tid]
        label = t["label"]
        if t["group"] != group or not isinstance(label, str):
            continue
        if batch is not None and batch_of_command(t["command"]) != batch:
            continue
        state = "blocked" if tid in blocked else t["state"]
        done = state not in ACTIVE and state != "blocked"
        if done and UNIT_RE.search(base_label(label)) and base_label(label) in units:
            continue  # a unit whose commands the ledger records by their own labels
        if (done and label in recorded) or (state in STARTED and label in live):
            if done and state in FAILED:  # the ledger's run of it: its log is pueue's
                for i in range(len(runs) - 1, -1, -1):
                    if runs[i]["label"] == label and runs[i]["source"] == "ledger":
                        logs[tid] = i
                        break
            continue
        runs.append({"label": label, "attempt": attempt_of(label), "outcome": state,
                     "exit": t["exit_code"], "start": epoch(t["start"]),
                     "end": epoch(t["end"]) if done else None, "source": "pueue",
                     "unit": None})
        if state in FAILED:
            logs[tid] = len(runs) - 1
    return runs, logs


def report_main(argv: list[str]) -> int:
    """`report --group G [--batch NAME] [--log-lines N]`: every attempt of the group's labels
    (pueue's tasks and every ledger's records, or one batch's), the log tails of the newest
    failed attempts and the host's health, as one JSON line (jobsafe report)."""
    parser = argparse.ArgumentParser(prog="jobsafe-monitor-filter report")
    parser.add_argument("--pueue", default="pueue")
    parser.add_argument("--group", required=True)
    parser.add_argument("--batch")
    parser.add_argument("--log-lines", type=int, default=20)
    parser.add_argument("--log-labels", type=int, default=REPORT_LOGS)
    parser.add_argument("--ledger-root", default=LEDGER_ROOT)
    parser.add_argument("--swap-window", type=float, default=0.25)
    parser.add_argument("--journal", default=JOURNAL)
    args = parser.parse_args(argv)
    started = time.monotonic()
    before = swap_counters()
    pueue = os.path.expanduser(args.pueue)
    paths = pueue_paths()
    out: dict[str, Any] = {"schema": SCHEMA, "group": args.group, "batch": args.batch}
    opts = argparse.Namespace(no_state_file=False, all_tasks=True, group=None)
    data = _from_state_file(opts, paths, pueue)
    if data is None:
        text = _from_status(pueue, out)
        if text is not None:
            try:
                data = json.loads(text)
            except ValueError as exc:
                out["error"] = f"pueue status --json returned invalid JSON ({exc})"
    if data is not None:
        root = os.path.expanduser(args.ledger_root)
        ledgers = ledger_paths(args.ledger_root) if args.batch is None else [
            os.path.join(root, args.batch, LEDGER_NAME)]
        records: list[dict[str, Any]] = []
        markers: list[dict[str, Any]] = []
        for path in ledgers:
            records.extend(ledger_lines(path, args.group))
            markers.extend(read_markers(path, args.group))
        runs, failed = report_runs(data, records, markers, args.group, args.batch)
        wanted = sorted(failed, key=lambda tid: -tid)[:max(0, args.log_labels)]
        logs: dict[str, Any] = {}
        if wanted and args.log_lines > 0:
            logs = log_tails(str(paths["pueue_directory"]), wanted, args.log_lines) or {}
            if not logs:
                try:
                    lp = _pueue([pueue, "log", "--json", "--lines", str(args.log_lines),
                                 *map(str, wanted)])
                    logs = json.loads(lp.stdout or "{}") if lp.returncode == 0 else {}
                except (OSError, ValueError):
                    logs = {}
        for tid in wanted:
            item = logs.get(str(tid))
            if isinstance(item, dict):
                text = str(item.get("output") or "").rstrip("\n")
                runs[failed[tid]]["log"] = text.splitlines()[-args.log_lines:]
        g = (data.get("groups") or {}).get(args.group)
        out["known"] = isinstance(g, dict) or bool(records or markers)
        out["groups"] = sorted(data.get("groups") or {})
        out["status"] = str(g.get("status", "Running")) if isinstance(g, dict) else None
        out["runs"] = runs
        starts = [r["start"] for r in runs if r["start"] is not None]
        out["samples"] = health_samples(args.journal, min(starts) if starts else None)
    out["now"] = round(time.time(), 3)
    out["health"] = health()
    sampled_swap(out["health"], before, started, args.swap_window)
    sys.stdout.write(json.dumps(out, separators=(",", ":")) + "\n")
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="jobsafe-monitor-filter")
    parser.add_argument("--pueue", default="pueue")
    parser.add_argument("--group")
    parser.add_argument("--glob")
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--log-labels", type=int, default=5)
    parser.add_argument("--log-lines", type=int, default=5)
    parser.add_argument("--swap-window", type=float, default=0.25)
    parser.add_argument("--all-tasks", action="store_true")
    parser.add_argument("--ledger-root", default=LEDGER_ROOT)
    parser.add_argument("--no-ledger", action="store_true")
    parser.add_argument("--no-state-file", action="store_true")  # always ask pueue status
    if argv[:1] == ["ledger"]:
        return ledger_main(argv[1:])
    if argv[:1] == ["report"]:
        return report_main(argv[1:])
    args = parser.parse_args(argv)
    sys.stdout.write(json.dumps(run(args), separators=(",", ":")) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
