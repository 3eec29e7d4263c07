"""jobsafe-ops operations agent: sent whole as `python3 -c <this file> MODE ARGS` (nothing is
left on the host) and run ON the host with its python3 (standard library only, Python 3.8+;
hostside/bundle.py inlines what it imports from model.py and slurm_model.py).

It resolves labels to pueue task ids and uses them in the same run only (INV-8: ids never
cross SSH, are never kept, never shown), and appends every mutation it makes to the team
journal on the host in the same run (one SSH round trip for the mutation and its record).

Modes (pueue; with `--scheduler slurm` logs, cancel and group read squeue and the Slurm
batch dirs under --root instead, and act through scancel / scontrol uhold / release)
  logs    --group G --label L [--attempt N] [--follow]   the output of one attempt of a label
  cancel  [--group G] (--glob GLOB | --batch NAME) [--dry] --entry JSON
                                                          remove queued, kill running matches
  group   --group G --action pause|resume --entry JSON    pueue's own pause/start of a group
  journal [--since ISO] [--glob GLOB]                     the host's journal lines
  append  --entry JSON                                    one journal line (the laptop's
                                                          mirrored mutations)

stdout protocol: `@@meta {json}` first (what was resolved or done), then for `logs` the
output itself. Errors are `@@error {json}` with exit 2 (bad input), 3 (refused) or 6
(nothing matches).
"""

from __future__ import annotations

import argparse
import fcntl
import fnmatch
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import time
from typing import Any

from .model import ACTIVE, BATCH_ROOT, JOURNAL, attempt_of, base_label, log_name
from .slurm_model import SQUEUE_FORMAT, expand_indices, ledger_outcomes, read_chunk

LEDGER_NAME = "ledger.ndjson"
RUNNING_DIR = "running"  # feeder.RUNNING_DIR; markers named as feeder.marker_path
_UNIT_RE = re.compile(r":unit-[0-9]{5}-[0-9a-f]{8}$")
_BLOCK = re.compile(r"^=== (?P<label>.+?)(?: \(exit (?P<exit>-?[0-9]+)\)|: cannot start \(.*\))$")
WAIT_KILLED = 30.0  # seconds a killed task has to end before cancel gives up on it
EXIT_BAD_INPUT, EXIT_REFUSED, EXIT_NOTHING = 2, 3, 6


class Stop(Exception):
    def __init__(self, code: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.code, self.extra = code, extra


def emit(kind: str, doc: dict[str, Any]) -> None:
    sys.stdout.write("@@" + kind + " " + json.dumps(doc, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def now_iso() -> str:
    stamp = time.time()
    millis = int(stamp % 1 * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(stamp)) + f".{millis:03d}+00:00"


# ---- pueue ---------------------------------------------------------------------------

def pueue(argv: list[str], timeout: float = 120.0) -> subprocess.CompletedProcess:  # type: ignore[type-arg]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


def state_of(raw: dict[str, Any]) -> str:
    status = raw.get("status")
    if isinstance(status, str):
        return status.lower()
    if not isinstance(status, dict) or len(status) != 1:
        return "unknown"
    kind, body = next(iter(status.items()))
    if kind != "Done":
        return str(kind).lower()
    result = body.get("result") if isinstance(body, dict) and "result" in body else body
    if result == "Success":
        return "success"
    if isinstance(result, dict) and "Failed" in result:
        return "failed"
    return str(result).lower() if isinstance(result, str) else "failed"


def read_tasks(prog: str, group: str | None = None) -> list[dict[str, Any]]:
    argv = [prog, "status", "--json"] + (["--group", group] if group else [])
    proc = pueue(argv)
    if proc.returncode != 0:
        raise Stop(4, "pueue status failed: " + (proc.stderr or proc.stdout).strip()[:300])
    data = json.loads(proc.stdout or "{}")
    if group and group not in (data.get("groups") or {}):
        known = ", ".join(sorted(data.get("groups") or {})) or "none"
        raise Stop(EXIT_BAD_INPUT, f"group {group!r} does not exist on the pueue daemon; check "
                   f"--group (daemon has: {known})")
    out = []
    for key, raw in (data.get("tasks") or {}).items():
        t = dict(raw)
        t["id"] = int(raw.get("id", key))
        t["state"] = state_of(raw)
        out.append(t)
    out.sort(key=lambda t: t["id"])
    return out


def public(t: dict[str, Any]) -> dict[str, Any]:
    """What leaves the host about a task: never its id, command or environment."""
    return {"label": t.get("label"), "group": t.get("group"), "state": t["state"],
            "attempt": attempt_of(t.get("label"))}


# ---- the team journal on the host ------------------------------------------------------

def append_journal(path: str, entry: dict[str, Any]) -> None:
    """One NDJSON line, flock-serialized and fsynced, in one write (INV-3)."""
    path = os.path.expanduser(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    line = (json.dumps(entry, separators=(",", ":"), default=str) + "\n").encode()
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":  # a torn line: end it first
            line = b"\n" + line
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def record(args: argparse.Namespace, result: str, labels: list[str], **extra: Any
           ) -> dict[str, Any]:
    entry = dict(json.loads(args.entry or "{}"))
    entry.update({"time": now_iso(), "labels": labels, "result": result, "where": "host"})
    entry.update(extra)
    append_journal(args.journal, entry)
    return entry


def journal_lines(path: str, since: str | None, glob: str | None,
                  action: str | None = None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    try:
        fh = open(os.path.expanduser(path), "rb")
    except OSError:
        return out
    with fh:
        for raw in fh:
            if not raw.endswith(b"\n"):
                continue
            try:
                entry = json.loads(raw)
            except ValueError:
                continue
            if not isinstance(entry, dict):
                continue
            if since and str(entry.get("time", "")) < since:
                continue
            if action and entry.get("action") != action:
                continue
            if glob and not any(fnmatch.fnmatchcase(str(lbl), glob)
                                for lbl in entry.get("labels") or ()):
                continue
            out.append(entry)
    return out


# ---- logs ------------------------------------------------------------------------------

def attempts_of(tasks: list[dict[str, Any]], group: str, base: str) -> list[dict[str, Any]]:
    found = [t for t in tasks if t.get("group") == group and isinstance(t.get("label"), str)
             and base_label(t["label"]) == base]
    return sorted(found, key=lambda t: (attempt_of(t["label"]), t["id"]))


def pick(attempts: list[dict[str, Any]], attempt: int | None) -> dict[str, Any] | None:
    if attempt is None:
        return attempts[-1] if attempts else None
    chosen = [t for t in attempts if attempt_of(t["label"]) == attempt]
    return chosen[-1] if chosen else None


def full_log(prog: str, tid: int) -> str:
    proc = pueue([prog, "log", "--json", "--full", str(tid)])
    if proc.returncode != 0:
        return ""
    try:
        data = json.loads(proc.stdout or "{}")
    except ValueError:
        return ""
    item = data.get(str(tid)) or {}
    return str(item.get("output") or "")


def unit_block(text: str, label: str) -> str | None:
    """The section of a unit's log written for one command (feeder.py `unit`)."""
    lines = text.splitlines(True)
    out: list[str] | None = None
    for line in lines:
        m = _BLOCK.match(line.rstrip("\n"))
        if m or line.startswith("=== unit done:"):
            if out is not None:
                break
            if m and m.group("label") == label:
                out = [line]
            continue
        if out is not None:
            out.append(line)
    return None if out is None else "".join(out)


def unit_of(tasks: list[dict[str, Any]], group: str, label: str) -> str | None:
    """The base label of the unit whose unit file lists `label` (units mode)."""
    needle = json.dumps(label)
    for t in tasks:
        lbl = t.get("label")
        if t.get("group") != group or not isinstance(lbl, str) or \
                not _UNIT_RE.search(base_label(lbl)):
            continue
        try:
            words = shlex.split(str(t.get("original_command") or t.get("command") or ""))
        except ValueError:
            continue
        if len(words) < 4 or words[2] != "unit":
            continue
        try:
            with open(os.path.expanduser(words[3]), encoding="utf-8") as fh:
                if any('"label": ' + needle in ln or '"label":' + needle in ln for ln in fh):
                    return base_label(lbl)
        except OSError:
            continue
    return None


def logs(args: argparse.Namespace) -> int:
    label, attempt = args.label, args.attempt
    if attempt is None and attempt_of(label):
        attempt = attempt_of(label)
    base = base_label(label)
    tasks = read_tasks(args.pueue, args.group)
    if not args.group:  # the label's group, when it is in one only
        groups = sorted({str(t.get("group")) for t in tasks if isinstance(t.get("label"), str)
                         and base_label(t["label"]) == base})
        if len(groups) > 1:
            raise Stop(EXIT_BAD_INPUT, "label {!r} is in groups {}; pass --group".format(
                label, ", ".join(groups)))
        args.group = groups[0] if groups else None
    if not args.group:
        every = sorted({str(t.get("group")) for t in tasks})
        groups = [g for g in every if unit_of(tasks, g, label)]
        args.group = groups[0] if groups else None
    if not args.group:
        raise Stop(EXIT_NOTHING, f"no task labelled {label!r} in any group (nor a units-mode "
                   "command of that label); check --label")
    attempts = attempts_of(tasks, args.group, base)
    if attempts:
        chosen = pick(attempts, attempt)
        if chosen is None:
            names = ", ".join(t["label"] for t in attempts)
            raise Stop(EXIT_NOTHING, f"{base} has no attempt {attempt} in group {args.group} "
                       f"(attempts: {names})")
        meta = dict(public(chosen), attempts=[t["label"] for t in attempts], unit=None)
        emit("meta", meta)
        if args.follow and chosen["state"] in ACTIVE:
            proc = subprocess.Popen([args.pueue, "follow", str(chosen["id"])],
                                    stdout=subprocess.PIPE)
            assert proc.stdout is not None
            for chunk in iter(lambda: proc.stdout.readline(), b""):  # type: ignore[union-attr]
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
            proc.wait()
            # the end state: follow returns when the task stops running
            again = pick(attempts_of(read_tasks(args.pueue, args.group), args.group, base),
                         attempt_of(chosen["label"]))
            emit("end", public(again or chosen))
            return 0
        sys.stdout.write(full_log(args.pueue, chosen["id"]))
        sys.stdout.flush()
        emit("end", public(chosen))
        return 0
    unit = unit_of(tasks, args.group, label)
    if unit is None:
        known = sorted({base_label(t["label"]) for t in tasks
                        if t.get("group") == args.group and isinstance(t.get("label"), str)})
        hint = ", ".join(known[:5]) + (" ..." if len(known) > 5 else "")
        raise Stop(EXIT_NOTHING, "no task labelled {!r} in group {} (nor a units-mode command "
                   "of that label); check --label (group has: {})".format(label, args.group,
                                                                      hint or "no labels"))
    return unit_logs(args, label, unit)


def unit_logs(args: argparse.Namespace, label: str, unit: str) -> int:
    """A units-mode command: its section of the newest unit attempt that ran it."""
    emitted = False
    while True:
        units = attempts_of(read_tasks(args.pueue, args.group), args.group, unit)
        for t in reversed(units):
            block = unit_block(full_log(args.pueue, t["id"]), label)
            if block is not None:
                m = _BLOCK.match(block.splitlines()[0])
                code = m.group("exit") if m else None
                state = "success" if code == "0" else "failed"
                meta = {"label": label, "group": args.group, "state": state,
                        "attempt": attempt_of(t["label"]), "unit": t["label"],
                        "attempts": [u["label"] for u in units]}
                if not emitted:
                    emit("meta", meta)
                sys.stdout.write(block)
                emit("end", meta)
                return 0
        running = [t for t in units if t["state"] in ACTIVE]
        if not args.follow or not running:
            meta = {"label": label, "group": args.group, "attempt": 0,
                    "state": running[-1]["state"] if running else "not run",
                    "unit": units[-1]["label"] if units else unit,
                    "attempts": [u["label"] for u in units]}
            if not emitted:
                emit("meta", meta)
            emit("end", meta)
            return 0
        if not emitted:
            emit("meta", {"label": label, "group": args.group, "attempt": 0,
                          "state": running[-1]["state"], "unit": running[-1]["label"],
                          "attempts": [u["label"] for u in units]})
            emitted = True
        time.sleep(1.0)


# ---- cancel ----------------------------------------------------------------------------

def batch_of(t: dict[str, Any]) -> str | None:
    """The batch (playbook) name of a task whose command is the feeder's run wrapper or
    unit runner: `python3 <batches>/<name>/feeder.py run|unit ...`."""
    try:
        words = shlex.split(str(t.get("original_command") or t.get("command") or ""))
    except ValueError:
        return None
    if len(words) < 3 or not words[1].endswith("/feeder.py") or words[2] not in ("run", "unit"):
        return None
    return os.path.basename(os.path.dirname(words[1]))


def ledger_of(t: dict[str, Any]) -> str | None:
    try:
        words = shlex.split(str(t.get("original_command") or t.get("command") or ""))
    except ValueError:
        return None
    if "--ledger" in words and words.index("--ledger") + 1 < len(words):
        return os.path.expanduser(words[words.index("--ledger") + 1])
    return None


def matches(tasks: list[dict[str, Any]], group: str | None, glob: str | None,
            batch: str | None) -> list[dict[str, Any]]:
    out = []
    for t in tasks:
        label = t.get("label")
        if not isinstance(label, str) or (group and t.get("group") != group):
            continue
        if glob is not None and not (fnmatch.fnmatchcase(label, glob)
                                     or fnmatch.fnmatchcase(base_label(label), glob)):
            continue
        if batch is not None and batch_of(t) != batch:
            continue
        out.append(t)
    return out


def dependants(tasks: list[dict[str, Any]], chosen: list[dict[str, Any]]
               ) -> list[dict[str, Any]]:
    """Unfinished tasks outside `chosen` that wait (transitively) on a chosen task."""
    ids = {t["id"] for t in chosen}
    out: list[dict[str, Any]] = []
    changed = True
    while changed:
        changed = False
        for t in tasks:
            if t["id"] in ids or t["state"] not in ACTIVE:
                continue
            if any(int(d) in ids for d in t.get("dependencies") or ()):
                ids.add(t["id"])
                out.append(t)
                changed = True
    return out


def unfinished(t: dict[str, Any]) -> list[str]:
    """The commands of a unit (units mode) without an exit-0 receipt in its done log: the
    ones a cancel of the unit stops or never lets start."""
    try:
        words = shlex.split(str(t.get("original_command") or t.get("command") or ""))
    except ValueError:
        return []
    if len(words) < 4 or words[2] != "unit" or "--done" not in words:
        return []
    done: dict[str, str] = {}
    try:
        with open(os.path.expanduser(words[words.index("--done") + 1]), encoding="utf-8") as fh:
            for line in fh:
                label, sep, code = line.rstrip("\n").rpartition("\t")
                if sep:
                    done[label] = code
    except (OSError, IndexError):
        pass
    out = []
    try:
        with open(os.path.expanduser(words[3]), encoding="utf-8") as fh:
            for line in fh:
                try:
                    label = json.loads(line).get("label")
                except ValueError:
                    continue
                if isinstance(label, str) and done.get(label) != "0":
                    out.append(label)
    except OSError:
        return []
    return out


def cancelled_record(t: dict[str, Any], operator: str) -> dict[str, Any]:
    label = str(t["label"])
    rec = {"v": 1, "label": label, "group": t["group"], "batch": batch_of(t) or "",
           "attempt": attempt_of(label), "event": "end", "exit": None,
           "outcome": "cancelled", "end": now_iso().replace("+00:00", "Z"),
           "by": operator}
    return rec


def record_cancelled(path: str, rec: dict[str, Any], meta: dict[str, Any]) -> None:
    """One `cancelled` end line in an outcome ledger, and the label's start marker gone."""
    try:
        append_journal(path, rec)
    except OSError as exc:
        meta.setdefault("ledger_errors", []).append(str(exc))
        return
    # a SIGKILLed wrapper leaves its start marker (read as "killed"): the job has ended
    # (the scheduler says so), and its last word is now the cancel
    digest = hashlib.sha1(f"{rec['group']}\0{rec['label']}".encode()).hexdigest()[:24]
    try:
        os.unlink(os.path.join(os.path.dirname(path), RUNNING_DIR, digest + ".json"))
    except OSError:
        pass


def cancel(args: argparse.Namespace) -> int:
    tasks = read_tasks(args.pueue)
    if args.group and args.group not in {t.get("group") for t in tasks}:
        read_tasks(args.pueue, args.group)  # an unknown group: one line naming it
    found = matches(tasks, args.group, args.glob, args.batch)
    active = [t for t in found if t["state"] in ACTIVE]
    queued = [t for t in active if t["state"] != "running"]
    running = [t for t in active if t["state"] == "running"]
    finished = [t for t in found if t["state"] not in ACTIVE]
    deps = dependants(tasks, active)
    meta: dict[str, Any] = {
        "matched": len(found), "queued": [public(t) for t in queued],
        "running": [public(t) for t in running], "finished": [public(t) for t in finished],
        "dependants": [public(t) for t in deps], "dry": bool(args.dry),
        "removed": [], "killed": [], "not_stopped": [],
    }
    if not found:
        emit("meta", meta)
        raise Stop(EXIT_NOTHING, "no task matches {}{}; nothing cancelled".format(
            f"--label {args.glob!r}" if args.glob is not None else f"--playbook {args.batch!r}",
            f" in group {args.group}" if args.group else ""))
    if deps:
        emit("meta", meta)
        shown = ", ".join(f"{t['label']} ({t['group']}, {t['state']})" for t in deps[:5])
        more = " ..." if len(deps) > 5 else ""
        raise Stop(EXIT_REFUSED, f"refusing to cancel: {len(deps)} unfinished task(s) outside "
                   f"the match wait on it: {shown}{more}; cancel them too (widen --label) or "
                   "wait for them to finish")
    if args.dry or not active:
        emit("meta", meta)
        return 0
    operator = str(json.loads(args.entry or "{}").get("operator", ""))
    if queued:
        proc = pueue([args.pueue, "remove"] + [str(t["id"]) for t in queued])
        if proc.returncode != 0:
            meta["error"] = (proc.stderr or proc.stdout).strip()[:300]
    if running:
        proc = pueue([args.pueue, "kill"] + [str(t["id"]) for t in running])
        if proc.returncode != 0:
            meta["error"] = (proc.stderr or proc.stdout).strip()[:300]
    # wait for the killed tasks to end (the run wrapper records their end first), then
    # take them out of pueue's list too: a cancelled label is neither failed nor retried
    deadline = time.monotonic() + WAIT_KILLED
    ids = {t["id"] for t in running}
    while ids and time.monotonic() < deadline:
        now = {t["id"]: t for t in read_tasks(args.pueue) if t["id"] in ids}
        if all(now[i]["state"] not in ACTIVE for i in now):
            break
        time.sleep(0.2)
    after = {t["id"]: t for t in read_tasks(args.pueue)}
    stopped = [t for t in running if t["id"] not in after
               or after[t["id"]]["state"] not in ACTIVE]
    if stopped:
        pueue([args.pueue, "remove"] + [str(t["id"]) for t in stopped])
    gone = [t for t in queued if t["id"] not in after]
    meta["removed"] = [t["label"] for t in gone]
    meta["killed"] = [t["label"] for t in stopped]
    meta["not_stopped"] = [t["label"] for t in active if t not in gone and t not in stopped]
    for t in gone + stopped:  # the outcome ledger: cancelled, after the wrapper's own end
        path = ledger_of(t)
        if not path or not os.path.isdir(os.path.dirname(path)):
            continue
        records = [cancelled_record(t, operator)]
        records += [dict(cancelled_record(dict(t, label=label), operator),
                         unit=base_label(str(t["label"]))) for label in unfinished(t)]
        for rec in records:
            record_cancelled(path, rec, meta)
    result = "ok" if not meta["not_stopped"] else "partial"
    record(args, result, [str(t["label"]) for t in gone + stopped], group=args.group,
           removed=meta["removed"], killed=meta["killed"], not_stopped=meta["not_stopped"])
    emit("meta", meta)
    return 0


# ---- pause / resume ----------------------------------------------------------------------

def group_action(args: argparse.Namespace) -> int:
    tasks = read_tasks(args.pueue, args.group)
    del tasks
    if args.action == "pause":
        argv = [args.pueue, "pause", "--group", args.group, "--wait"]
    else:
        argv = [args.pueue, "start", "--group", args.group]
    proc = pueue(argv)
    result = "ok" if proc.returncode == 0 else "failed"
    detail = (proc.stderr or proc.stdout).strip()[:300]
    record(args, result, [], group=args.group, **({"error": detail} if proc.returncode else {}))
    data = json.loads(pueue([args.pueue, "status", "--json", "--group", args.group]).stdout
                      or "{}")
    status = ((data.get("groups") or {}).get(args.group) or {}).get("status")
    emit("meta", {"group": args.group, "action": args.action, "result": result,
                  "status": status, "error": detail if proc.returncode else None})
    return 0 if proc.returncode == 0 else 4


# ---- Slurm hosts (--scheduler slurm): the same modes over squeue and the batch dirs ------
#
# A Slurm batch dir (`<root>/<playbook>/`, slurm_feed.py's) holds the chunk files that
# name each array's elements (the array's --comment), each label's output
# (`logs/<label>.log`) and the outcome ledger. Element ids (`<array>_<index>`) are read
# from squeue here and used in the same run only, like pueue ids (INV-8).

SLURM_ACTIVE = {"PENDING": "queued", "CONFIGURING": "queued", "REQUEUED": "queued",
                "REQUEUE_FED": "queued", "RUNNING": "running", "COMPLETING": "running",
                "STAGE_OUT": "running", "SIGNALING": "running", "RESIZING": "running",
                "SUSPENDED": "paused", "STOPPED": "paused"}
HELD = "JobHeldUser"  # squeue's reason of an element `scontrol uhold` holds
NEVER = "DependencyNeverSatisfied"
_JOB_ID = re.compile(r"^([0-9]+)")
_ELEMENT_ID = re.compile(r"^[0-9]+(_[0-9]+)?$")
FOLLOW_POLL = 0.5  # seconds between reads of a followed log (squeue every other read)
IDS_PER_CALL = 1000  # element ids per scancel / scontrol call (argv stays far below limits)


def slurm_calls(argv: list[str], ids: list[str], joined: bool = False) -> tuple[int, str]:
    """`argv + ids` in slices of IDS_PER_CALL (scontrol takes one comma-joined word) ->
    (the first failing exit code or 0, its message)."""
    for i in range(0, len(ids), IDS_PER_CALL):
        part = ids[i:i + IDS_PER_CALL]
        proc = pueue(argv + ([",".join(part)] if joined else part))
        if proc.returncode != 0:
            return proc.returncode, (proc.stderr or proc.stdout).strip()[:300]
    return 0, ""


def slurm_batches(root: str) -> dict[str, str]:
    """batch name -> dir of every Slurm batch under root (those slurm_feed.py set up)."""
    root = os.path.expanduser(root)
    try:
        names = sorted(os.listdir(root))
    except OSError:
        return {}
    return {n: os.path.join(root, n) for n in names
            if os.path.isfile(os.path.join(root, n, "slurm_feed.py"))}


def element_state(slurm: str, reason: str) -> str | None:
    """squeue's state and reason -> the state pueue hosts show; None: it has ended."""
    state = SLURM_ACTIVE.get(slurm)
    if state == "queued" and reason == NEVER:
        return "blocked"
    if state == "queued" and reason == HELD:
        return "paused"
    return state


def waits_on(dependency: str) -> list[str]:
    """squeue's %E ('afterok:41_*(unfulfilled),afterok:42(failed)', 'afterany:7:8',
    '(null)') -> the job (array) ids it waits on."""
    out: set[str] = set()
    for part in re.split(r"[,?]", dependency):
        kind, sep, rest = part.partition(":")
        if not sep or not kind.startswith("after"):
            continue
        for word in rest.split(":"):
            m = _JOB_ID.match(word)
            if m:
                out.add(m.group(1))
    return sorted(out, key=int)


def parse_elements(text: str, batches: dict[str, str]) -> list[dict[str, Any]]:
    """`squeue -h -r -o SQUEUE_FORMAT|%E` -> this user's jobsafe elements, named by their
    chunk files: label, group, batch, id, array, state (and Slurm's), reason, the arrays
    they wait on. Pure but for the chunk files read."""
    chunks: dict[tuple[str, str], list[dict[str, Any]]] = {}
    out: list[dict[str, Any]] = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) != 8 or not parts[3].startswith("jobsafe:") or parts[3].count(":") < 2:
            continue
        _jid, array_id, index, name, slurm, reason, comment, after = parts
        batch = name.split(":")[1]
        state = element_state(slurm, reason)
        if batch not in batches or state is None:
            continue
        key = (batch, comment)
        if key not in chunks:
            chunks[key] = read_chunk(batches[batch], comment)
        indices = expand_indices(index)
        for i in indices or [0]:
            if i >= len(chunks[key]):
                continue
            item = chunks[key][i]
            out.append({"label": str(item["label"]), "group": str(item["group"]),
                        "batch": batch, "dir": batches[batch],
                        "id": f"{array_id}_{i}" if indices else array_id,
                        "array": array_id, "state": state, "slurm": slurm, "reason": reason,
                        "after": waits_on(after)})
    return out


def slurm_elements(batches: dict[str, str]) -> list[dict[str, Any]]:
    if not batches:  # no Slurm batch on this login node: nothing of ours can be queued
        return []
    proc = pueue(["squeue", "-h", "-r", "--me", "-o", SQUEUE_FORMAT + "|%E"])
    if proc.returncode != 0:
        raise Stop(4, "squeue failed: " + (proc.stderr or proc.stdout).strip()[:300])
    return parse_elements(proc.stdout, batches)


def slurm_ended(batches: dict[str, str]) -> list[dict[str, Any]]:
    """The newest end record of every label of every batch, with its batch and dir."""
    out = []
    for batch, bdir in batches.items():
        for label, rec in ledger_outcomes(os.path.join(bdir, LEDGER_NAME)).items():
            value = rec.get("outcome")
            state = str(value) if value in ("success", "failed", "killed", "cancelled") \
                else "success" if rec.get("exit") == 0 else "failed"
            out.append({"label": label, "group": str(rec.get("group", "")), "batch": batch,
                        "dir": bdir, "state": state, "end": str(rec.get("end") or ""),
                        "unit": rec.get("unit") if isinstance(rec.get("unit"), str)
                        else None})
    return out


def slurm_known(elements: list[dict[str, Any]], ended: list[dict[str, Any]]
                ) -> dict[tuple[str, str], dict[str, Any]]:
    """(group, label) -> where it is now: its active element, else its newest end record
    (a label in two batches: the active one, else the latest end). Pure."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for rec in sorted(ended, key=lambda r: r["end"]):
        out[(rec["group"], rec["label"])] = rec
    for e in elements:
        out[(e["group"], e["label"])] = e
    return out


def slurm_logs(args: argparse.Namespace) -> int:
    label, attempt = args.label, args.attempt
    if attempt is None and attempt_of(label):
        attempt = attempt_of(label)
    base = base_label(label)
    batches = slurm_batches(args.root)
    known = slurm_known(slurm_elements(batches), slurm_ended(batches))
    groups = sorted({g for g, lbl in known if base_label(lbl) == base
                     and args.group in (None, g)})
    if len(groups) > 1:
        raise Stop(EXIT_BAD_INPUT, "label {!r} is in groups {}; pass --group".format(
            label, ", ".join(groups)))
    if not groups:
        where = f" in group {args.group}" if args.group else ""
        raise Stop(EXIT_NOTHING, f"no Slurm element or ledger record labelled {label!r}"
                   f"{where} in any batch; check --label")
    group = groups[0]
    attempts = sorted((lbl for g, lbl in known if g == group and base_label(lbl) == base),
                      key=attempt_of)
    chosen = [lbl for lbl in attempts if attempt is None or attempt_of(lbl) == attempt]
    if not chosen:
        raise Stop(EXIT_NOTHING, f"{base} has no attempt {attempt} in group {group} "
                   f"(attempts: {', '.join(attempts)})")
    shown = chosen[-1]
    found = known[(group, shown)]
    unit = found.get("unit")
    meta = {"label": shown, "group": group, "state": found["state"],
            "attempt": attempt_of(shown), "attempts": attempts, "unit": unit}
    emit("meta", meta)
    path = os.path.join(found["dir"], "logs", log_name(shown))
    if unit and not os.path.exists(path):  # a units-mode command: its unit's section
        try:
            with open(os.path.join(found["dir"], "logs", log_name(unit)),
                      encoding="utf-8", errors="replace") as fh:
                sys.stdout.write(unit_block(fh.read(), shown) or "")
        except OSError:
            pass
        emit("end", meta)
        return 0
    offset = copy_new(path, 0)
    if args.follow and "id" in found:
        polls = 0
        while True:
            time.sleep(FOLLOW_POLL)
            offset = copy_new(path, offset)
            polls += 1
            if polls % 2:
                continue
            now = slurm_known(slurm_elements(batches), [])
            if (group, shown) not in now:
                break
        offset = copy_new(path, offset)
        ended = slurm_known([], slurm_ended({found["batch"]: found["dir"]}))
        end = ended.get((group, shown))
        emit("end", dict(meta, state=end["state"] if end else "ended"))
        return 0
    emit("end", meta)
    return 0


def copy_new(path: str, offset: int) -> int:
    """Write what the log has past `offset` to stdout, as bytes; -> the new offset. A log
    not written yet (a pending element) is empty."""
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except OSError:
        return offset
    if data:
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    return offset + len(data)


def slurm_match(item: dict[str, Any], group: str | None, glob: str | None,
                batch: str | None) -> bool:
    label = item["label"]
    if group and item["group"] != group:
        return False
    if glob is not None and not (fnmatch.fnmatchcase(label, glob)
                                 or fnmatch.fnmatchcase(base_label(label), glob)):
        return False
    return batch is None or item["batch"] == batch


def slurm_dependants(elements: list[dict[str, Any]], chosen: list[dict[str, Any]]
                     ) -> list[dict[str, Any]]:
    """Pending elements outside `chosen` whose array waits (afterok, transitively) on an
    array with a chosen element: a cancel would leave them DependencyNeverSatisfied."""
    arrays = {e["array"] for e in chosen}
    picked = {id(e) for e in chosen}
    out: list[dict[str, Any]] = []
    changed = True
    while changed:
        changed = False
        for e in elements:
            if id(e) in picked or e["state"] == "running":
                continue
            if arrays & set(e["after"]):
                picked.add(id(e))
                arrays.add(e["array"])
                out.append(e)
                changed = True
    return out


def slurm_cancel(args: argparse.Namespace) -> int:
    batches = slurm_batches(args.root)
    elements = slurm_elements(batches)
    ended = slurm_ended(batches)
    if args.group and args.group not in {x["group"] for x in elements + ended}:
        known = ", ".join(sorted({x["group"] for x in elements + ended})) or "none"
        raise Stop(EXIT_NOTHING, f"group {args.group!r} has no Slurm element nor ledger "
                   f"record (groups with some: {known}); check --group")
    active = [e for e in elements if slurm_match(e, args.group, args.glob, args.batch)]
    live = {(e["group"], e["label"]) for e in elements}
    finished = [r for (g, lbl), r in slurm_known([], ended).items()
                if (g, lbl) not in live and slurm_match(r, args.group, args.glob, args.batch)]
    queued = [e for e in active if e["state"] != "running"]
    running = [e for e in active if e["state"] == "running"]
    deps = slurm_dependants(elements, active)
    meta: dict[str, Any] = {
        "matched": len(active) + len(finished), "queued": [public(e) for e in queued],
        "running": [public(e) for e in running],
        "finished": [public(r) for r in sorted(finished, key=lambda r: r["label"])],
        "dependants": [public(e) for e in deps], "dry": bool(args.dry),
        "removed": [], "killed": [], "not_stopped": [],
    }
    if not active and not finished:
        emit("meta", meta)
        raise Stop(EXIT_NOTHING, "no Slurm element matches {}{}; nothing cancelled".format(
            f"--label {args.glob!r}" if args.glob is not None else f"--playbook {args.batch!r}",
            f" in group {args.group}" if args.group else ""))
    if deps:
        emit("meta", meta)
        shown = ", ".join(f"{e['label']} ({e['group']}, {e['state']})" for e in deps[:5])
        more = " ..." if len(deps) > 5 else ""
        raise Stop(EXIT_REFUSED, f"refusing to cancel: {len(deps)} pending element(s) outside "
                   f"the match wait on it (afterok: they would stay pending as {NEVER}): "
                   f"{shown}{more}; cancel them too (widen --label) or wait for them to finish")
    if args.dry or not active:
        emit("meta", meta)
        return 0
    operator = str(json.loads(args.entry or "{}").get("operator", ""))
    ids = [e["id"] for e in active]
    if not all(_ELEMENT_ID.match(i) for i in ids):  # only what squeue printed, never typed
        raise Stop(4, f"squeue gave element ids scancel cannot take: {ids[:5]}")
    failed, detail = slurm_calls(["scancel"], ids)
    if failed:
        meta["error"] = detail
    # wait for the elements to leave squeue (a running one's wrapper records `killed`
    # first), so the cancel is the label's last word in the ledger
    wanted = {(e["group"], e["label"]) for e in active}
    deadline = time.monotonic() + WAIT_KILLED
    left = wanted
    while left:
        left = wanted & {(e["group"], e["label"]) for e in slurm_elements(batches)}
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    gone = [e for e in active if (e["group"], e["label"]) not in left]
    meta["removed"] = [e["label"] for e in gone if e["state"] != "running"]
    meta["killed"] = [e["label"] for e in gone if e["state"] == "running"]
    meta["not_stopped"] = [e["label"] for e in active if (e["group"], e["label"]) in left]
    for e in gone:
        rec = {"v": 1, "label": e["label"], "group": e["group"], "batch": e["batch"],
               "attempt": attempt_of(e["label"]), "event": "end", "exit": None,
               "outcome": "cancelled", "end": now_iso().replace("+00:00", "Z"),
               "by": operator}
        record_cancelled(os.path.join(e["dir"], LEDGER_NAME), rec, meta)
    result = "ok" if not meta["not_stopped"] else "partial"
    record(args, result, [e["label"] for e in gone], group=args.group,
           removed=meta["removed"], killed=meta["killed"], not_stopped=meta["not_stopped"],
           scheduler="slurm")
    emit("meta", meta)
    return 0


def slurm_group(args: argparse.Namespace) -> int:
    """pause: `scontrol uhold` the group's pending elements (running ones finish, held ones
    never start); resume: `scontrol release` the ones held so."""
    batches = slurm_batches(args.root)
    mine = [e for e in slurm_elements(batches) if e["group"] == args.group]
    if args.action == "pause":
        chosen = [e for e in mine if e["slurm"] == "PENDING" and e["reason"] != HELD]
        verb = "uhold"
    else:
        chosen = [e for e in mine if e["slurm"] == "PENDING" and e["reason"] == HELD]
        verb = "release"
    ids = [e["id"] for e in chosen]
    detail, code = "", 0
    if ids:
        if not all(_ELEMENT_ID.match(i) for i in ids):
            raise Stop(4, f"squeue gave element ids scontrol cannot take: {ids[:5]}")
        code, detail = slurm_calls(["scontrol", verb], ids, joined=True)
    result = "ok" if code == 0 else "failed"
    labels = [e["label"] for e in chosen]
    record(args, result, labels, group=args.group, scheduler="slurm",
           **({"error": detail} if code else {}))
    after = [e for e in slurm_elements(batches) if e["group"] == args.group]
    status = "Paused" if any(e["reason"] == HELD for e in after) else "Running"
    emit("meta", {"group": args.group, "action": args.action, "result": result,
                  "status": status, "labels": labels, "error": detail if code else None})
    return 0 if code == 0 else 4


SLURM_MODES = {"logs": slurm_logs, "cancel": slurm_cancel, "group": slurm_group}


# ---- main ------------------------------------------------------------------------------

def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="jobsafe-ops-agent")
    parser.add_argument("mode", choices=("logs", "cancel", "group", "journal", "append"))
    parser.add_argument("--pueue", default="pueue")
    parser.add_argument("--group")
    parser.add_argument("--label")
    parser.add_argument("--attempt", type=int)
    parser.add_argument("--follow", action="store_true")
    parser.add_argument("--glob")
    parser.add_argument("--batch")
    parser.add_argument("--dry", action="store_true")
    parser.add_argument("--action")  # group: pause|resume; journal: only this action
    parser.add_argument("--entry")
    parser.add_argument("--since")
    parser.add_argument("--journal", default=JOURNAL)
    parser.add_argument("--scheduler", choices=("pueue", "slurm"), default="pueue")
    parser.add_argument("--root", default=BATCH_ROOT)  # slurm: the batch dirs
    args = parser.parse_args(argv)
    args.pueue = os.path.expanduser(args.pueue)
    try:
        if args.scheduler == "slurm" and args.mode in SLURM_MODES:
            return int(SLURM_MODES[args.mode](args))
        if args.mode == "logs":
            return logs(args)
        if args.mode == "cancel":
            return cancel(args)
        if args.mode == "group":
            return group_action(args)
        if args.mode == "append":
            for line in sys.stdin.read().splitlines():
                if line.strip():
                    append_journal(args.journal, json.loads(line))
            return 0
        entries = journal_lines(args.journal, args.since, args.glob, args.action)
        emit("meta", {"entries": len(entries)})
        for entry in entries:
            sys.stdout.write(json.dumps(entry, separators=(",", ":")) + "\n")
        return 0
    except Stop as exc:
        emit("error", dict(exc.extra, message=str(exc), code=exc.code))
        return exc.code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
