"""Shared code of the pueue 4.0.4 stand-in (`pueue` client and `pueued` daemon).

Real pueue talks over a unix socket to a daemon that owns the state in memory.  The
stand-in has no protocol at all: the client and the daemon both do read-modify-write
cycles on `<pueue_directory>/state.json` under one `flock` lock.  The daemon only adds
what a client cannot do: it owns the child processes (spawn, reap, slot accounting).

Files in `pueue_directory` (the `fake_*` ones do not exist with real pueue):

* `state.json` / `state.json.gz`  exactly the real format (see the fixtures)
* `task_logs/<id>.log`            stdout+stderr of a task
* `fake_state.lock`               the lock every read-modify-write takes
* `fake_state.gen`                a token rewritten on every save, so the daemon notices
                                  changes without re-parsing the state on every tick
                                  (inode+mtime alone can repeat on coarse clocks)
* `fake_children.json`            `{"<task id>": {"pid": N, "start": T}}` of running
                                  children, so a client can signal them
* `fake_start_requests.json`      ids a client asked to start right away (`start <id>`
                                  of a queued task, `add --immediate`, `restart -k`)

Only the standard library is used, and only cheap modules are imported at the top:
`pueue add` must stay fast.
"""

import fcntl
import json
import os
import re
import sys
import time

VERSION = "4.0.4"
DEFAULT_GROUP = "default"

# ---------------------------------------------------------------------------
# Timestamps: chrono's RFC 3339 serialisation (SecondsFormat::AutoSi, use_z=true)
# ---------------------------------------------------------------------------


def format_ts(ns=None):
    """Format epoch nanoseconds like chrono serialises `DateTime<Local>`.

    AutoSi prints 0, 3, 6 or 9 fraction digits (the fewest that are exact), and a
    zero offset is written as `Z` (the fixtures were made with TZ=UTC).
    """
    if ns is None:
        ns = time.time_ns()
    sec, frac = divmod(ns, 1_000_000_000)
    local = time.localtime(sec)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", local)
    if frac == 0:
        pass
    elif frac % 1_000_000 == 0:
        text += ".%03d" % (frac // 1_000_000)
    elif frac % 1000 == 0:
        text += ".%06d" % (frac // 1000)
    else:
        text += ".%09d" % frac
    offset = local.tm_gmtoff or 0
    if offset == 0:
        return text + "Z"
    sign = "+" if offset > 0 else "-"
    offset = abs(offset)
    return text + "%s%02d:%02d" % (sign, offset // 3600, offset % 3600 // 60)


_TS_RE = re.compile(
    r"^(\d{4})-(\d\d)-(\d\d)[T ](\d\d):(\d\d):(\d\d)(?:\.(\d+))?(Z|[+-]\d\d:?\d\d)?$"
)


def parse_ts(text):
    """RFC 3339 timestamp -> epoch seconds (float).  Naive times are local."""
    match = _TS_RE.match(text.strip())
    if not match:
        raise ValueError("not an RFC 3339 timestamp: %r" % text)
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    fraction = float("0." + match.group(7)) if match.group(7) else 0.0
    zone = match.group(8)
    fields = (year, month, day, hour, minute, second, 0, 0, -1)
    if zone is None:
        return time.mktime(fields) + fraction
    import calendar

    epoch = calendar.timegm(fields)
    if zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        digits = zone[1:].replace(":", "")
        epoch -= sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)
    return epoch + fraction


def local_time_of(ts_text, fmt):
    """Format a stored timestamp in local time with a strftime pattern."""
    return time.strftime(fmt, time.localtime(parse_ts(ts_text)))


# ---------------------------------------------------------------------------
# Configuration (the small YAML subset pueue.yml files use)
# ---------------------------------------------------------------------------


def _yaml_scalar(value):
    if value in ("{}",):
        return {}
    if value in ("[]",):
        return []
    if value in ("~", "null", "Null", "NULL"):
        return None
    if value in ("true", "True", "TRUE"):
        return True
    if value in ("false", "False", "FALSE"):
        return False
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        inner = value[1:-1]
        if value[0] == '"':
            inner = inner.encode("utf-8").decode("unicode_escape") if "\\" in inner else inner
        else:
            inner = inner.replace("''", "'")
        return inner
    if re.fullmatch(r"-?\d+", value):
        return int(value)
    return value


def _strip_yaml_comment(line):
    """Drop a `# comment` that is not inside quotes."""
    quote = None
    for index, char in enumerate(line):
        if quote:
            if char == quote:
                quote = None
        elif char in "\"'":
            quote = char
        elif char == "#" and (index == 0 or line[index - 1] in " \t"):
            return line[:index]
    return line


def parse_yaml_subset(text):
    """Nested `key: value` mappings by indentation; lists and anchors are ignored."""
    root = {}
    stack = [(-1, root)]
    for raw in text.splitlines():
        line = _strip_yaml_comment(raw).rstrip()
        if not line.strip() or line.lstrip().startswith(("-", "---")):
            continue
        indent = len(line) - len(line.lstrip(" "))
        match = re.match(r"^\s*([^:]+?)\s*:(?:\s+(.*))?$", line)
        if not match:
            continue
        key, value = match.group(1).strip("\"'"), (match.group(2) or "").strip()
        while stack[-1][0] >= indent:
            stack.pop()
        parent = stack[-1][1]
        if value == "":
            child = {}
            parent[key] = child
            stack.append((indent, child))
        else:
            parent[key] = _yaml_scalar(value)
    return root


def _expand(path):
    return os.path.expandvars(os.path.expanduser(path)) if path else path


class Settings:
    """The few settings of pueue.yml the stand-in honours (pueue_lib/src/settings.rs)."""

    def __init__(self, config_path=None):
        path = config_path or os.environ.get("PUEUE_CONFIG_PATH")
        if not path:
            config_home = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
            path = os.path.join(config_home, "pueue", "pueue.yml")
        self.config_path = path
        data = {}
        try:
            with open(path, encoding="utf-8") as handle:
                data = parse_yaml_subset(handle.read())
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            pass  # a missing config file means defaults
        shared = data.get("shared") or {}
        daemon = data.get("daemon") or {}
        client = data.get("client") or {}

        data_home = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
        self.pueue_directory = _expand(shared.get("pueue_directory")) or os.path.join(
            data_home, "pueue"
        )
        self.runtime_directory = (
            _expand(shared.get("runtime_directory"))
            or os.environ.get("XDG_RUNTIME_DIR")
            or self.pueue_directory
        )
        self._socket_path = _expand(shared.get("unix_socket_path"))
        self.pid_path = _expand(shared.get("pid_path")) or os.path.join(
            self.runtime_directory, "pueue.pid"
        )
        self.compress_state_file = daemon.get("compress_state_file") is True
        self.pause_group_on_failure = daemon.get("pause_group_on_failure") is True
        self.pause_all_on_failure = daemon.get("pause_all_on_failure") is True
        self.restart_in_place = client.get("restart_in_place") is True

    @property
    def socket_path(self):
        if self._socket_path:
            return self._socket_path
        return os.path.join(self.runtime_directory, "pueue_%s.socket" % current_user())


def current_user():
    """The user name the way `whoami::username()` finds it (passwd entry first)."""
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError):
        return os.environ.get("USER") or os.environ.get("LOGNAME") or "unknown"


# ---------------------------------------------------------------------------
# Task helpers
# ---------------------------------------------------------------------------


def status_kind(task):
    status = task["status"]
    return status if isinstance(status, str) else next(iter(status))


def status_body(task):
    status = task["status"]
    return {} if isinstance(status, str) else status[next(iter(status))]


def task_result(task):
    """The `result` of a Done task, else None."""
    return status_body(task).get("result") if status_kind(task) == "Done" else None


def is_done(task):
    return status_kind(task) == "Done"


def is_running(task):
    """`Task::is_running`: the task has a process (Running or Paused)."""
    return status_kind(task) in ("Running", "Paused")


def is_failed(task):
    """`Task::failed`: Done with anything but Success."""
    return is_done(task) and task_result(task) != "Success"


def is_queued(task):
    """`Task::is_queued`: Queued, or Stashed with an enqueue time."""
    kind = status_kind(task)
    return kind == "Queued" or (kind == "Stashed" and status_body(task).get("enqueue_at"))


def fresh_state():
    return {"tasks": {}, "groups": {DEFAULT_GROUP: {"status": "Running", "parallel_tasks": 1}}}


def is_task_removable(tasks, task_id, to_delete):
    """`InternalState::is_task_removable`: no unfinished dependants left behind."""
    dependants = [
        task["id"]
        for task in tasks.values()
        if task_id in task["dependencies"] and not is_done(task)
    ]
    if not dependants:
        return True
    if not all(dep in to_delete for dep in dependants):
        return False
    return all(is_task_removable(tasks, dep, to_delete) for dep in dependants)


def dumps(obj):
    """serde_json::to_string: compact, UTF-8 kept as is."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


# ---------------------------------------------------------------------------
# The on-disk store shared by client and daemon
# ---------------------------------------------------------------------------


class Store:
    def __init__(self, settings):
        self.settings = settings
        self.dir = settings.pueue_directory
        self.compress = settings.compress_state_file
        name = "state.json.gz" if self.compress else "state.json"
        self.state_path = os.path.join(self.dir, name)
        self.partial_path = self.state_path + ".partial"
        self.lock_path = os.path.join(self.dir, "fake_state.lock")
        self.gen_path = os.path.join(self.dir, "fake_state.gen")
        self.children_path = os.path.join(self.dir, "fake_children.json")
        self.requests_path = os.path.join(self.dir, "fake_start_requests.json")
        self.logs_dir = os.path.join(self.dir, "task_logs")
        self._lock_fd = None

    # -- locking -----------------------------------------------------------

    def __enter__(self):
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        self._lock_fd = fd
        return self

    def __exit__(self, *exc):
        fd, self._lock_fd = self._lock_fd, None
        os.close(fd)  # closing releases the flock

    # -- state -------------------------------------------------------------

    def read_raw(self):
        """The state file's JSON text (decompressed), or None when there is none."""
        try:
            with open(self.state_path, "rb") as handle:
                data = handle.read()
        except FileNotFoundError:
            return None
        if self.compress:
            import gzip

            data = gzip.decompress(data)
        return data.decode("utf-8", "surrogateescape")

    def load(self):
        raw = self.read_raw()
        if raw is None:
            return fresh_state()
        return json.loads(raw)

    def save(self, state):
        """Rewrite the whole state atomically: `<file>.partial`, then rename."""
        state["groups"] = dict(sorted(state["groups"].items()))
        data = dumps(state).encode("utf-8", "surrogateescape")
        if self.compress:
            import gzip

            data = gzip.compress(data)
        with open(self.partial_path, "wb") as handle:
            handle.write(data)
        os.replace(self.partial_path, self.state_path)
        with open(self.gen_path, "w") as handle:
            handle.write("%d:%d" % (time.time_ns(), os.getpid()))

    def signature(self):
        """Changes whenever anybody saved the state (cheap: no parsing)."""
        try:
            with open(self.gen_path, "rb") as handle:
                gen = handle.read()
        except FileNotFoundError:
            gen = b""
        try:
            st = os.stat(self.state_path)
            stat_part = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stat_part = None
        return gen, stat_part

    # -- side files --------------------------------------------------------

    def _read_json(self, path, default):
        try:
            with open(path, encoding="utf-8") as handle:
                return json.load(handle)
        except (FileNotFoundError, ValueError):
            return default

    def _write_json(self, path, obj):
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(obj, handle)
        os.replace(tmp, path)

    def read_children(self):
        return self._read_json(self.children_path, {})

    def write_children(self, children):
        self._write_json(self.children_path, children)

    def add_start_requests(self, task_ids):
        """Ask the daemon to spawn these tasks now (call with the lock held)."""
        pending = self._read_json(self.requests_path, [])
        pending.extend(task_ids)
        self._write_json(self.requests_path, pending)

    def take_start_requests(self):
        """Pop all pending start requests (call with the lock held)."""
        pending = self._read_json(self.requests_path, [])
        try:
            os.unlink(self.requests_path)
        except FileNotFoundError:
            pass
        return pending

    def has_start_requests(self):
        return os.path.exists(self.requests_path)

    # -- logs --------------------------------------------------------------

    def log_path(self, task_id):
        return os.path.join(self.logs_dir, "%d.log" % task_id)

    def remove_log(self, task_id):
        try:
            os.unlink(self.log_path(task_id))
        except FileNotFoundError:
            pass


# ---------------------------------------------------------------------------
# Daemon liveness: the daemon holds an exclusive flock on its pid file
# ---------------------------------------------------------------------------


def daemon_alive(settings):
    """True while a daemon holds the lock on the pid file.

    A lock (unlike `kill -0 <pid>`) cannot be fooled by a stale pid file or a reused
    pid, and the kernel drops it however the daemon dies.
    """
    try:
        fd = os.open(settings.pid_path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def daemon_pid(settings):
    try:
        with open(settings.pid_path) as handle:
            return int(handle.read().strip() or 0) or None
    except (OSError, ValueError):
        return None


def eyre_report(messages, location):
    """A color-eyre error report as the Rust binaries print it (colours stripped)."""
    lines = ["Error: "]
    for index, message in messages:
        lines.append("   %d: %s" % (index, message))
    lines += [
        "",
        "Location:",
        "   " + location,
        "",
        "Backtrace omitted. Run with RUST_BACKTRACE=1 environment variable to display it.",
        "Run with RUST_BACKTRACE=full to include source snippets.",
    ]
    return "\n".join(lines)


def os_error_text(errno_value):
    """Rust's `io::Error` display: `No such file or directory (os error 2)`."""
    return "%s (os error %d)" % (os.strerror(errno_value), errno_value)


def eprint(*parts):
    print(*parts, file=sys.stderr)
