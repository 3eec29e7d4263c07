#!/usr/bin/env python3
"""jobsafe-ops feeder: uploaded whole next to a commands file and run ON the host with the
host's python3 (standard library only; keep it that way - the host has no jobsafe_ops). It
imports the shared pueue model (`.model`); the uploaded copy has it inlined (bundle.py).

Why it exists (AP-12): one `ssh host pueue add` per job costs an SSH handshake each (300 K
jobs = days). Instead the laptop uploads one commands file and starts this script in one
SSH session; every `pueue add` then runs locally on the host.

Modes
  feed  COMMANDS --receipts R --pueue P     add every job of the commands file to pueue
  unit  UNIT_FILE --done D --parallel N     run a unit's commands (units mode, > 10 K jobs;
                                            --logs DIR: each command's output in its own file)
  run   --ledger L --label X --group G -- ARGV   run one job, record its outcome (the ledger)

The ledger (`<batch>/ledger.ndjson`): every job records, ON the host, one `end` line when
it ends (label, group, batch, attempt, exit code, outcome, start, end; the command and
workdir of a failure), one JSON object per line, appended with flock + fsync, never
rewritten. While it runs, `<batch>/running/<digest>.json` holds its start (pid, boot id);
the end removes it, so a marker whose process is gone (SIGKILL) reads as "killed".

Commands file: JSON lines {"label", "group", "workdir" (absolute), "command", "after":
[labels]} and, for a unit, "unit_file" + "unit_commands" ([{label, workdir, command}]).

Exactly once per label, keyed by label, never by line number (GNU parallel's --resume
pitfall): before adding, the feeder reads `pueue status --json --group G` once per group
and the receipts file; a label found in either is skipped. Each add appends `label<TAB>id`
to the receipts (flock + fsync) right away, so after a kill at any point a rerun adds only
the labels that are still missing: a kill between `pueue add` and its receipt is covered by
the status read, a kill before the add by the missing receipt.

`--after` wiring uses ids from this session's status read and adds (AP-7): a dependency
is named by label and resolved here, never carried over from an older session (pueue
reuses ids after `clean`).

stdout protocol for the laptop: `@@progress DONE TOTAL` lines, then one `@@summary {json}`.
Exit codes: 0 ok, 1 some lines failed (see summary), 2 bad input (including a commands
file whose sha256 or line count differs from `--sha256`/`--count`: a torn upload is never
fed), 75 another feeder holds the batch lock (still, after --lock-wait seconds).
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from .model import (
    GROUP_NAME,
    LEAN_ENV,
    MAX_COMMAND,
    MAX_LABEL,
    add_words,
    attempt_of,
    base_label,
    log_name,
)

EXIT_OK = 0
EXIT_SOME_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_LOCKED = 75
# A receipt written for a job whose command records its outcome in the ledger ends in this
# mark: after a clean, such a label is done only when the ledger says it succeeded. Older
# receipts (no mark) keep meaning "finished and cleaned".
LEDGER_MARK = ":L"
LEDGER_NAME = "ledger.ndjson"
RUNNING_DIR = "running"
ADD_TIMEOUT = 120.0
PROGRESS_EVERY = 0.2  # seconds between progress lines
REGENERATE = "regenerate it with `inv submit-batch`"  # the fix for a bad commands file

def lean_env(extra: list[str]) -> dict[str, str]:
    keep = set(LEAN_ENV) | set(extra)
    return {k: v for k, v in os.environ.items() if k in keep}


class Log:
    """Append-only `label<TAB>value` lines: flock-serialized, fsynced, one write per line.
    Only newline-terminated lines count, so a torn last line from a kill is ignored."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.offset = 0
        self.values: dict[str, str] = {}

    def refresh(self) -> dict[str, str]:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                data = fh.read()
        except FileNotFoundError:
            return self.values
        end = data.rfind(b"\n")
        if end < 0:
            return self.values
        self.offset += end + 1
        for raw in data[: end + 1].decode("utf-8", "replace").splitlines():
            label, sep, value = raw.rpartition("\t")
            if sep and label:
                self.values[label] = value
        return self.values

    def append(self, label: str, value: str) -> None:
        line = (label + "\t" + value + "\n").encode()
        with self.lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
            self.values[label] = value


def emit(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def read_json_lines(path: str) -> list[dict[str, Any]]:
    """JSON objects, one per line (blank lines skipped; a UTF-8 BOM and CRLF endings are
    accepted). Anything else is refused with the file, the line and the fix."""
    regen = REGENERATE
    out = []
    try:
        with open(path, encoding="utf-8-sig") as fh:
            raw_lines = list(fh)
    except UnicodeDecodeError as exc:
        raise SystemExit(f"{path}: not UTF-8 (byte {exc.start}); {regen}") from None
    for n, raw in enumerate(raw_lines, 1):
        if not raw.strip():
            continue
        try:
            item = json.loads(raw)
        except ValueError as exc:
            raise SystemExit(f"{path}:{n}: not JSON ({exc}); {regen}") from None
        if not isinstance(item, dict):
            raise SystemExit(f"{path}:{n}: a JSON {type(item).__name__}, not an object; {regen}")
        out.append(item)
    if not out:
        raise SystemExit(f"{path}: the file is empty: nothing to feed; {regen}")
    return out


def check_upload(path: str, sha256: str | None, count: int | None) -> None:
    """Refuse a commands file that is not the one the laptop sent (a torn or stale upload):
    its sha256 and its number of lines must be the ones given on the command line. Checked
    before anything is read from it, so a partial file is never fed."""
    with open(path, "rb") as fh:
        data = fh.read()
    lines = sum(1 for raw in data.splitlines() if raw.strip())
    if count is not None and lines != count:
        raise SystemExit(f"{path}: {lines} line(s), expected {count}: incomplete upload; "
                         "nothing added (rerun submit-batch to upload it again)")
    digest = hashlib.sha256(data).hexdigest()
    if sha256 is not None and digest != sha256.lower():
        raise SystemExit(f"{path}: sha256 {digest[:12]}... differs from the uploaded "
                         f"{sha256[:12]}...: corrupt or replaced; nothing added (rerun "
                         "submit-batch to upload it again)")


LINE_KEYS = {"label", "group", "workdir", "command", "after", "unit_file", "unit_commands"}
UNIT_KEYS = {"label", "workdir", "command"}


def _check_job(where: str, item: dict[str, Any], keys: set[str], required: tuple[str, ...],
               regen: str) -> None:
    unknown = sorted(set(item) - keys)
    if unknown:
        raise SystemExit(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(keys))})"
                         f"; {regen}")
    for key in required:
        if not isinstance(item.get(key), str) or not item[key].strip():
            raise SystemExit(f"{where}: {key!r} is missing or not a non-empty string; {regen}")
    label = item["label"]
    if any(ch in label for ch in "\t\n\r\0") or len(label) > MAX_LABEL:
        raise SystemExit(f"{where}: label {label[:60]!r} holds a tab/newline/NUL or is longer "
                         f"than {MAX_LABEL} characters (receipts are label<TAB>id lines); "
                         f"{regen}")
    if not item["workdir"].startswith("/"):
        raise SystemExit(f"{where}: workdir {item['workdir'][:60]!r} is not absolute (jobs get "
                         f"an explicit working directory); {regen}")
    command = item["command"]
    if "\0" in command or "\r" in command or len(command.encode()) > MAX_COMMAND:
        raise SystemExit(f"{where}: command {command[:60]!r} holds a NUL or carriage return, or "
                         f"is over {MAX_COMMAND} bytes; {regen}")


def validate(path: str, lines: list[dict[str, Any]]) -> None:
    """Every line is checked before the first add: a bad line anywhere adds nothing."""
    regen = REGENERATE
    position: dict[str, int] = {}
    for n, line in enumerate(lines, 1):
        where = f"{path}:{n}"
        _check_job(where, line, LINE_KEYS, ("label", "group", "workdir", "command"), regen)
        if line["label"] in position:
            raise SystemExit(f"{where}: label {line['label']!r} appears twice (labels identify "
                             f"jobs); {regen}")
        position[line["label"]] = n
        if not GROUP_NAME.fullmatch(line["group"]):
            raise SystemExit(f"{where}: group {line['group'][:60]!r} is not a pueue group name "
                             f"(letters, digits, '.', '_', '-'); {regen}")
        if "unit_file" in line or "unit_commands" in line:
            _check_unit(where, line, regen)
    for n, line in enumerate(lines, 1):
        after = line.get("after", [])
        if not isinstance(after, list) or not all(isinstance(d, str) and d for d in after):
            raise SystemExit(f"{path}:{n}: 'after' must be a list of labels; {regen}")
        # a label not in the file is an upstream added by an earlier run: resolved at add time
        later = [d for d in after if position.get(d, 0) >= n]
        if later:
            raise SystemExit(f"{path}:{n}: 'after' names {later[0]!r}, which is this line or "
                             f"a later one (upstream jobs come first); {regen}")


def _check_unit(where: str, line: dict[str, Any], regen: str) -> None:
    unit_file, inner = line.get("unit_file"), line.get("unit_commands")
    if not isinstance(unit_file, str) or not unit_file.startswith("/"):
        raise SystemExit(f"{where}: 'unit_file' must be an absolute path next to "
                         f"'unit_commands'; {regen}")
    if not isinstance(inner, list) or not inner:
        raise SystemExit(f"{where}: 'unit_commands' must be a non-empty list; {regen}")
    for k, cmd in enumerate(inner):
        if not isinstance(cmd, dict):
            raise SystemExit(f"{where}: unit_commands[{k}] is not an object; {regen}")
        _check_job(f"{where}: unit_commands[{k}]", cmd, UNIT_KEYS,
                   ("label", "workdir", "command"), regen)


def add_argv(pueue: str, line: dict[str, Any], after: list[int]) -> list[str]:
    """One line's `pueue add` (model.add_words: the argv scheduler.pueue.add_argv builds)."""
    return add_words(pueue, line["command"], line["group"], line["label"], line["workdir"],
                     after)


def mark(line: dict[str, Any]) -> str:
    """The receipt mark of a line whose command records outcomes (the `run` wrapper, or a
    unit whose runner writes the ledger)."""
    try:
        words = shlex.split(line["command"])
    except ValueError:
        return ""
    return LEDGER_MARK if len(words) > 2 and words[1].endswith("feeder.py") and \
        words[2] in ("run", "unit") and "--ledger" in words else ""


def unwrap(command: str) -> tuple[str, str, str] | None:
    """A command wrapped by the `run` wrapper (ledger.wrap) -> (batch dir, label, the job's
    own shell command); None if it is not wrapped."""
    try:
        words = shlex.split(command)
    except ValueError:
        return None
    if len(words) < 11 or not words[1].endswith("/feeder.py") or words[2] != "run" \
            or words[-4:-1] != ["--", "sh", "-c"]:
        return None
    opts = dict(zip(words[3:-4:2], words[4:-4:2]))  # noqa: B905 - strict= is 3.10+ (host python3)
    if "--label" not in opts or "--ledger" not in opts:
        return None
    return words[1].rsplit("/", 1)[0], opts["--label"], words[-1]


def inner_command(command: str) -> str:
    """The job's own shell command inside the `run` wrapper, else `command`: what a check
    of the job's first program must look at."""
    parts = unwrap(command)
    return command if parts is None else parts[2]


def status_labels(pueue: str, group: str, env: dict[str, str]) -> dict[str, int]:
    """label -> newest task id in the group (one `pueue status --json --group G` read)."""
    proc = subprocess.run([pueue, "status", "--json", "--group", group], env=env,
                          capture_output=True, text=True, timeout=ADD_TIMEOUT)
    if proc.returncode != 0:
        raise SystemExit(f"pueue status failed: {(proc.stderr or proc.stdout).strip()}")
    tasks = json.loads(proc.stdout).get("tasks", {})
    out: dict[str, int] = {}
    for key, task in tasks.items():
        label = task.get("label")
        if label is not None and task.get("group", group) == group:
            tid = int(task.get("id", key))
            out[label] = max(out.get(label, -1), tid)
    return out


def write_unit(line: dict[str, Any]) -> None:
    """Unit files are content-addressed by the unit label: write once, atomically."""
    path = line["unit_file"]
    if os.path.exists(path):
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        for cmd in line["unit_commands"]:
            fh.write(json.dumps(cmd) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class Feeder:
    def __init__(self, args: argparse.Namespace, lines: list[dict[str, Any]],
                 lock_fd: int | None = None) -> None:
        self.args = args
        self.lines = lines
        # Every `pueue add` child holds the batch lock too (an inherited flock'd fd): a
        # feeder killed mid-add leaves its adds running, and a rerun must not read the
        # status before they have finished, or it would add their labels a second time.
        self.hold = (lock_fd,) if lock_fd is not None else ()
        self.env = lean_env(args.pass_env)
        self.receipts = Log(args.receipts)
        self.known: dict[str, int] = {}  # label -> id, from the status read and our adds
        self.added: list[tuple[str, int]] = []
        self.existing: list[tuple[str, int | None]] = []
        self.errors: list[tuple[str, str]] = []
        self.done = 0
        self.last_progress = 0.0
        self.mutex = threading.Lock()

    def progress(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self.last_progress >= PROGRESS_EVERY:
            self.last_progress = now
            emit(f"@@progress {self.done} {len(self.lines)}")

    def finish_line(self) -> None:
        with self.mutex:
            self.done += 1
            self.progress()

    def run(self) -> int:
        receipts = self.receipts.refresh()
        for group in dict.fromkeys(line["group"] for line in self.lines):
            self.known.update(status_labels(self.args.pueue, group, self.env))
        pending: dict[str, Future[None]] = {}
        with ThreadPoolExecutor(max_workers=max(1, self.args.jobs)) as pool:
            for line in self.lines:
                label = line["label"]
                if label in self.known or label in receipts:
                    tid = self.known.get(label)
                    if label not in receipts:  # added by a run killed before its receipt
                        self.receipts.append(label, str(tid) + mark(line))
                    self.existing.append((label, tid))
                    self.finish_line()
                    continue
                deps = line.get("after") or []
                if any(d in pending for d in deps):
                    for fut in pending.values():  # a dependency is in flight: let it land
                        fut.result()
                    pending.clear()
                pending[label] = pool.submit(self.add_one, line, receipts)
            for fut in pending.values():
                fut.result()
        self.progress(force=True)
        emit("@@summary " + json.dumps({
            "added": self.added, "existing": self.existing, "errors": self.errors,
            "total": len(self.lines)}))
        return EXIT_SOME_FAILED if self.errors else EXIT_OK

    def add_one(self, line: dict[str, Any], receipts: dict[str, str]) -> None:
        label = line["label"]
        try:
            after = []
            for dep in line.get("after") or []:
                with self.mutex:
                    tid = self.known.get(dep)
                if tid is not None:
                    after.append(tid)
                elif dep in receipts:
                    continue  # finished and cleaned since: nothing left to wait for
                else:
                    raise RuntimeError(f"dependency {dep!r} was not added; not adding "
                                       "this job, which must run after it (rerun to converge)")
            if not os.path.isdir(line["workdir"]):
                raise RuntimeError(f"working directory {line['workdir']} does not exist")
            if line.get("unit_file"):
                write_unit(line)
            proc = subprocess.run(add_argv(self.args.pueue, line, after), env=self.env,
                                  capture_output=True, text=True, timeout=ADD_TIMEOUT,
                                  pass_fds=self.hold)
            if proc.returncode != 0:
                raise RuntimeError((proc.stderr or proc.stdout).strip() or
                                   f"pueue add exited {proc.returncode}")
            tid = int(proc.stdout.strip().splitlines()[-1])
            self.receipts.append(label, str(tid) + mark(line))
            with self.mutex:
                self.known[label] = tid
                self.added.append((label, tid))
        except (RuntimeError, ValueError, IndexError, OSError,
                subprocess.TimeoutExpired) as exc:
            with self.mutex:
                self.errors.append((label, str(exc).splitlines()[0] if str(exc) else
                                    type(exc).__name__))
        self.finish_line()


def wait_for_lock(fd: int, seconds: float) -> bool:
    """The batch lock, waiting up to `seconds` for another feeder of the same batch (two
    submit-batch runs of one playbook at once): once it has finished, this one reads the
    status and receipts afresh and adds only what is still missing - usually nothing."""
    deadline = time.monotonic() + max(0.0, seconds)
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.2)


def feed(args: argparse.Namespace) -> int:
    try:
        check_upload(args.commands, args.sha256, args.count)
        lines = read_json_lines(args.commands)
        validate(args.commands, lines)
    except SystemExit as exc:
        emit("@@summary " + json.dumps({"fatal": str(exc)}))
        return EXIT_BAD_INPUT
    lock_fd = os.open(args.receipts + ".lock", os.O_WRONLY | os.O_CREAT, 0o644)
    if not wait_for_lock(lock_fd, args.lock_wait):
        os.close(lock_fd)
        emit("@@summary " + json.dumps({"fatal": "another feeder is running for this batch"}))
        return EXIT_LOCKED
    try:
        return Feeder(args, lines, lock_fd).run()
    except SystemExit as exc:  # pueue status unreadable: nothing was added
        emit("@@summary " + json.dumps({"fatal": str(exc)}))
        return EXIT_SOME_FAILED
    finally:
        os.close(lock_fd)


# ---- the ledger: outcomes recorded on the host -------------------------------------------

# a termination signal the wrapper forwards to the job (pueue kill --signal, a shutdown)
FORWARDED = ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2")


def now_iso() -> str:
    stamp = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(stamp)) + f".{int(stamp % 1 * 1e6):06d}Z"


def boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as fh:
            return fh.read().strip()
    except OSError:
        return ""


def append_record(path: str, record: dict[str, Any]) -> None:
    """One NDJSON line, flock-serialized and fsynced, in one write (readers ignore a torn
    last line). Compact separators: readers pre-filter lines on `"group":"G"`."""
    line = (json.dumps(record, separators=(",", ":"), ensure_ascii=True) + "\n").encode()
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":  # a torn line: end it, keep ours whole
            line = b"\n" + line
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


class Recorder:
    """The start and end lines of one job (a wrapped pueue task or a command of a unit)."""

    def __init__(self, ledger: str, label: str, group: str, unit: str | None = None) -> None:
        self.ledger = ledger
        self.base = {"v": 1, "label": label, "group": group,
                     "batch": os.path.basename(os.path.dirname(os.path.abspath(ledger))),
                     "attempt": attempt_of(label)}
        if unit:
            self.base["unit"] = unit
        self.start = ""
        self.marker = marker_path(ledger, group, label)

    def started(self, pid: int) -> None:
        """The start goes to a marker file, not the ledger (one ledger line per job keeps
        the scans cheap); the end removes it, so a marker whose process is gone is a job
        killed by SIGKILL."""
        self.start = now_iso()
        record = {**self.base, "event": "start", "start": self.start, "pid": pid,
                  "boot": boot_id()}
        try:
            os.makedirs(os.path.dirname(self.marker), exist_ok=True)
            with open(self.marker, "w", encoding="utf-8") as fh:
                fh.write(json.dumps(record, separators=(",", ":")) + "\n")
        except OSError as exc:
            sys.stderr.write(f"jobsafe ledger: cannot mark {self.base['label']}: {exc}\n")

    def ended(self, code: int, killed: str | None, command: str, workdir: str) -> None:
        outcome = "killed" if killed else "success" if code == 0 else "failed"
        record: dict[str, Any] = {"event": "end", "exit": code, "outcome": outcome,
                                  "start": self.start, "end": now_iso()}
        if killed:
            record["signal"] = killed
        if outcome != "success":  # what a retry needs once pueue has forgotten the task
            record["command"] = command
            record["workdir"] = workdir
        self.write(record)
        try:
            os.unlink(self.marker)
        except OSError:
            pass

    def write(self, fields: dict[str, Any]) -> None:
        try:
            append_record(self.ledger, {**self.base, **fields})
        except OSError as exc:  # the job's own result matters more than its record
            sys.stderr.write(f"jobsafe ledger: cannot record {self.base['label']}: {exc}\n")


def marker_path(ledger: str, group: str, label: str) -> str:
    """`<batch>/running/<digest>.json`: the start of a job that has not ended (yet)."""
    digest = hashlib.sha1(f"{group}\0{label}".encode()).hexdigest()[:24]
    return os.path.join(os.path.dirname(os.path.abspath(ledger)), RUNNING_DIR, digest + ".json")


def exit_of(returncode: int) -> int:
    """subprocess's -N (killed by signal N) -> 128 + N, as a shell reports it."""
    return returncode if returncode >= 0 else 128 - returncode


def run_wrapped(args: argparse.Namespace) -> int:
    """Run ARGV (the job), record its outcome in the ledger, exit with its exit code. A
    termination signal sent to the wrapper is passed on to the job; its end is then
    recorded as "killed". The job stays in the wrapper's process group, so pueue's kill
    of the group reaches it; SIGKILL leaves only the start line (read as "killed")."""
    argv = list(args.argv)
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        sys.stderr.write("feeder.py run: no command after --\n")
        return EXIT_BAD_INPUT
    command = argv[2] if len(argv) == 3 and argv[:2] == ["sh", "-c"] else " ".join(
        shlex.quote(a) for a in argv)
    rec = Recorder(args.ledger, args.label, args.group)
    received: list[str] = []
    child: list[subprocess.Popen[bytes]] = []

    def forward(signum: int, _frame: Any) -> None:
        received.append(signal.Signals(signum).name)
        if child and child[0].poll() is None:
            try:
                child[0].send_signal(signum)
            except OSError:
                pass

    for name in FORWARDED:
        signal.signal(getattr(signal, name), forward)
    rec.started(os.getpid())
    try:
        child.append(subprocess.Popen(argv))
    except OSError as exc:
        sys.stderr.write(f"cannot start {argv[0]}: {exc}\n")
        rec.ended(127, None, command, os.getcwd())
        return 127
    if received:  # a signal between the start line and the spawn
        forward(getattr(signal, received.pop()), None)
    code = exit_of(child[0].wait())
    rec.ended(code, received[0] if received else None, command, os.getcwd())
    return code


# ---- units mode -------------------------------------------------------------------------

def _slot(label: str) -> int:
    return int.from_bytes(hashlib.sha1(label.encode()).digest()[:4], "big") & 0x7FFFFFFF


def unit(args: argparse.Namespace) -> int:
    """Run one unit's commands, at most --parallel at a time (xargs -P style, but argv
    lists: no re-parsing of lines as shell). A command with an exit-0 receipt in the done
    log is skipped, so a retried unit (or an overlapping one) converges; a per-label
    record lock keeps two units from running the same label at once."""
    commands = read_json_lines(args.unit_file)
    unit_label = base_label(args.label) if args.label else None
    done = Log(args.done)
    done.refresh()
    lock_fd = os.open(args.done + ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    out_lock = threading.Lock()
    failed: list[str] = []

    def run_one(cmd: dict[str, Any]) -> None:
        label = cmd["label"]
        with done.lock:
            if done.values.get(label) == "0":
                return
        slot = _slot(label)
        rec: Recorder | None = None
        fcntl.lockf(lock_fd, fcntl.LOCK_EX, 1, slot)
        try:
            with done.lock:
                if done.refresh().get(label) == "0":
                    return
            rec = (Recorder(args.ledger, label, args.group, unit_label)
                   if args.ledger and args.group else None)
            if rec is not None:
                rec.started(os.getpid())
            if getattr(args, "logs", None):  # <logs>/<label>.log, as a Slurm element
                with open(os.path.join(args.logs, log_name(label)), "ab") as out:
                    proc = subprocess.run(["sh", "-c", cmd["command"]], cwd=cmd["workdir"],
                                          stdout=out, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL)
            else:
                proc = subprocess.run(["sh", "-c", cmd["command"]], cwd=cmd["workdir"],
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL)
            code = exit_of(proc.returncode)
            done.append(label, str(code))
            if rec is not None:
                rec.ended(code, None, cmd["command"], cmd["workdir"])
        except OSError as exc:
            code = 127
            proc = None
            done.append(label, str(code))
            if rec is not None:
                rec.ended(code, None, cmd["command"], cmd["workdir"])
            with out_lock:
                print(f"=== {label}: cannot start ({exc})", flush=True)
        finally:
            fcntl.lockf(lock_fd, fcntl.LOCK_UN, 1, slot)
        with out_lock:
            if proc is not None:
                sys.stdout.write(f"=== {label} (exit {code})\n")
                sys.stdout.write((proc.stdout or b"").decode("utf-8", "replace"))
                sys.stdout.flush()
            if code != 0:
                failed.append(label)

    with ThreadPoolExecutor(max_workers=max(1, args.parallel)) as pool:
        for fut in [pool.submit(run_one, c) for c in commands]:
            fut.result()
    os.close(lock_fd)
    print(f"=== unit done: {len(commands)} commands, {len(failed)} failed", flush=True)
    return EXIT_SOME_FAILED if failed else EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="feeder.py", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    f = sub.add_parser("feed", help="add the commands file's jobs to pueue, once per label")
    f.add_argument("commands")
    f.add_argument("--receipts", required=True)
    f.add_argument("--pueue", default="pueue")
    f.add_argument("--jobs", type=int, default=4, help="concurrent `pueue add` calls")
    f.add_argument("--pass-env", action="append", default=[])
    f.add_argument("--lock-wait", type=float, default=0.0,
                   help="seconds to wait for another feeder of this batch (default: none)")
    f.add_argument("--sha256", help="refuse the commands file unless its sha256 is this")
    f.add_argument("--count", type=int, help="refuse it unless it has this many lines")
    u = sub.add_parser("unit", help="run one unit's commands with bounded parallelism")
    u.add_argument("unit_file")
    u.add_argument("--done", required=True)
    u.add_argument("--parallel", type=int, default=4)
    u.add_argument("--ledger", help="record each command's outcome here (per command label)")
    u.add_argument("--group", help="the unit's pueue group (recorded with each outcome)")
    u.add_argument("--label", help="the unit's label (recorded with each outcome)")
    u.add_argument("--logs", help="write each command's output to DIR/<label>.log (Slurm)")
    r = sub.add_parser("run", help="run one job and record its outcome in the ledger")
    r.add_argument("--ledger", required=True)
    r.add_argument("--label", required=True)
    r.add_argument("--group", required=True)
    r.add_argument("argv", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.mode == "run":
        return run_wrapped(args)
    return feed(args) if args.mode == "feed" else unit(args)


if __name__ == "__main__":
    sys.exit(main())
