"""Shared code of the pueue 4.0.4 stand-in (`pueue` client and `pueued` daemon).

Real pueue talks over a unix socket to a daemon that owns the state in memory.  The
stand-in has no protocol at all: the client and the daemon both do read-modify-write
cycles on `<pueue_directory>/state.json` under one `flock` lock.  The daemon only adds
what a client cannot do: it owns the child processes (spawn, reap, slot accounting).

Files in `pueue_directory` (the `fake_*` ones do not exist with real pueue):

* `state.json` / `state.json.gz`  exactly the real format (see the fixtures)
* `task_logs/<id>.log`            stdout+stderr of a task
* `fake_state.lock`               the lock every read-modify-write takes
* `fake_state.meta`               rewritten with every state write: a token (so the
                                  daemon notices changes without parsing; inode+mtime
                                  alone can repeat on coarse clocks), the file layout
                                  and a journal of appended tasks (see Store)
* `fake_children.json`            `{"<task id>": {"pid": N, "start": T}}` of running
                                  children, so a client can signal them
* `fake_start_requests.json`      ids a client asked to start right away (`start <id>`
                                  of a queued task, `add --immediate`, `restart -k`)

Only the standard library is used, and only cheap modules are imported at the top:
`pueue add` must stay fast.

Known deviations from real pueue 4.0.4 (the e2e tests must not rely on them; they also
run against real pueue with JOBSAFE_REAL_PUEUE=1):

* timing: the daemon loops every 0.1 s (real: 300 ms) and `wait` polls every 0.25 s
  (real: 2 s, or 250 ms with PUEUED_TEST_ENV_VARIABLE set);
* `pueued -d` returns once the daemon is ready, with its stdio on /dev/null (real: spawns
  the daemon with the caller's stdout/stderr and returns at once, before it answers);
* `shutdown` returns once the daemon is gone (real: at once);
* `edit` and `restart --edit` are not implemented; the `status` query language is a
  subset; usage errors look like clap's but are not word for word.

Like real pueue, `kill` only sends the signal (the daemon records Done/Killed when it
reaps the process) and `reset` only marks the groups (the daemon removes their tasks).
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
        text += f".{frac // 1_000_000:03d}"
    elif frac % 1000 == 0:
        text += f".{frac // 1000:06d}"
    else:
        text += f".{frac:09d}"
    offset = local.tm_gmtoff or 0
    if offset == 0:
        return text + "Z"
    sign = "+" if offset > 0 else "-"
    offset = abs(offset)
    return f"{text}{sign}{offset // 3600:02d}:{offset % 3600 // 60:02d}"


_TS_RE = re.compile(
    r"^(\d{4})-(\d\d)-(\d\d)[T ](\d\d):(\d\d):(\d\d)(?:\.(\d+))?(Z|[+-]\d\d:?\d\d)?$"
)


def parse_ts(text):
    """RFC 3339 timestamp -> epoch seconds (float).  Naive times are local."""
    match = _TS_RE.match(text.strip())
    if not match:
        raise ValueError(f"not an RFC 3339 timestamp: {text!r}")
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
            escapes = {"n": "\n", "t": "\t", '"': '"', "\\": "\\"}
            inner = re.sub(r"\\(.)", lambda m: escapes.get(m.group(1), m.group(0)), inner)
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


def _home():
    """`dirs::home_dir()`: $HOME when set and not empty, else the passwd entry."""
    home = os.environ.get("HOME")
    if home:
        return home
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_dir
    except (ImportError, KeyError):
        return "/"


def _expand(path):
    """`shellexpand::tilde`: a leading `~` alone or before `/` is the home directory."""
    if not isinstance(path, str) or not path:
        return None  # null, `~`, empty or a nested map: unset
    if path == "~" or path.startswith("~/"):
        return _home() + path[1:]
    return path


def _xdg_dir(name, fallback):
    """The `dirs` crate on Linux: an XDG variable counts only when it is absolute."""
    value = os.environ.get(name) or ""
    return value if os.path.isabs(value) else os.path.join(_home(), fallback)


DEFAULT_CONFIG_FILE = os.path.join(os.path.dirname(os.path.realpath(__file__)),
                                   "default-pueue.yml")


class ConfigError(Exception):
    pass


class Settings:
    """The settings of pueue.yml the stand-in honours (pueue_lib/src/settings.rs).

    The file: `-c`, else $PUEUE_CONFIG_PATH (both must exist), else the first existing
    of `<config dir>/pueue/pueue.yml` and `./pueue.yml`; none found = defaults, and the
    daemon then writes the default file (`save_path`) on its first start, exactly the
    bytes real pueued 4.0.4 writes (default-pueue.yml: every path `null` = unset)."""

    def __init__(self, config_path=None):
        explicit = config_path or os.environ.get("PUEUE_CONFIG_PATH")
        self.save_path = explicit or os.path.join(
            _xdg_dir("XDG_CONFIG_HOME", ".config"), "pueue", "pueue.yml")
        candidates = [explicit] if explicit else [self.save_path, "pueue.yml"]
        self.config_path = None
        data = {}
        for path in candidates:
            if not explicit and not os.path.isfile(path):
                continue
            try:
                with open(path, encoding="utf-8") as handle:
                    data = parse_yaml_subset(handle.read())
            except OSError as error:
                raise ConfigError(
                    eyre_report(
                        [(0, "Error while reading configuration."),
                         (1, f'Io Error while opening config file at path "{path}": '
                             f"{os_error_text(error.errno or 0)}")],
                        "pueue/src/daemon/mod.rs:40",
                    )
                ) from None
            self.config_path = path
            break
        self.config_found = self.config_path is not None
        shared = data.get("shared") or {}
        daemon = data.get("daemon") or {}
        client = data.get("client") or {}

        self.pueue_directory = _expand(shared.get("pueue_directory")) or os.path.join(
            _xdg_dir("XDG_DATA_HOME", os.path.join(".local", "share")), "pueue"
        )
        runtime = os.environ.get("XDG_RUNTIME_DIR") or ""
        self.runtime_directory = (
            _expand(shared.get("runtime_directory"))
            or (runtime if os.path.isabs(runtime) else None)
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

    def write_default_config(self):
        """pueued's first start without any config: `Settings::default().save()`."""
        with open(DEFAULT_CONFIG_FILE, "rb") as handle:
            data = handle.read()
        os.makedirs(os.path.dirname(self.save_path) or ".", exist_ok=True)
        with open(self.save_path, "wb") as handle:
            handle.write(data)

    @property
    def socket_path(self):
        if self._socket_path:
            return self._socket_path
        return os.path.join(self.runtime_directory, f"pueue_{current_user()}.socket")


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
        self.meta_path = os.path.join(self.dir, "fake_state.meta")
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
    #
    # Every writer leaves `fake_state.meta` next to the state: a token that changes on
    # each write, the file's layout (where `,"groups":` starts, the highest id) and a
    # journal of tasks appended since the last full rewrite.  With it `add` can splice
    # one task into the file without parsing it, and the daemon can pick up appended
    # tasks without re-parsing a state of thousands of tasks after every add.

    def read_bytes(self):
        """The state file's JSON bytes (decompressed), or None when there is none."""
        try:
            with open(self.state_path, "rb") as handle:
                data = handle.read()
        except FileNotFoundError:
            return None
        if self.compress:
            import gzip

            data = gzip.decompress(data)
        return data

    def read_raw(self):
        data = self.read_bytes()
        return None if data is None else data.decode("utf-8", "surrogateescape")

    def load(self):
        data = self.read_bytes()
        if data is None:
            return fresh_state()
        return json.loads(data.decode("utf-8", "surrogateescape"))

    def read_groups(self):
        """Only the groups, without parsing the tasks: `pueue group` asks the real daemon
        for its groups alone, which costs the same at 50,000 tasks as at none."""
        data = self.read_bytes()
        if data is None:
            return fresh_state()["groups"]
        at = data.rfind(b'},"groups":')
        if at >= 0 and data.endswith(b"}"):
            try:
                groups = json.loads(data[at + 11 : -1])
            except ValueError:
                groups = None
            if isinstance(groups, dict):
                return groups
        return self.load()["groups"]

    def save(self, state):
        """Rewrite the whole state (serde's layout: tasks first, then groups)."""
        groups = dict(sorted(state["groups"].items()))
        tasks = state["tasks"]
        state.clear()
        state.update(tasks=tasks, groups=groups)
        head = b'{"tasks":' + _encode(dumps(tasks))
        data = head + b',"groups":' + _encode(dumps(groups)) + b"}"
        max_id = max(map(int, tasks), default=-1)
        self._write(data, groups_at=len(head), max_id=max_id, journal=[])

    def _write(self, data, groups_at, max_id, journal):
        """Atomically replace the state (`<file>.partial`, then rename), then the meta."""
        payload = data
        if self.compress:
            import gzip

            payload = gzip.compress(data)
        with open(self.partial_path, "wb") as handle:
            handle.write(payload)
        os.replace(self.partial_path, self.state_path)
        st = os.stat(self.state_path)
        token = f"{time.time_ns()}:{os.getpid()}"
        if journal:
            journal[-1]["token"] = token
        meta = {
            "token": token,
            "stat": [st.st_ino, st.st_mtime_ns, st.st_size],
            "size": len(data),
            "groups_at": groups_at,
            "max_id": max_id,
            "journal": journal,
        }
        self._write_json(self.meta_path, meta)
        return token

    def read_meta(self):
        """The meta, or None when it doesn't describe the current state file
        (missing, or the state was written by something else)."""
        meta = self._read_json(self.meta_path, None)
        try:
            st = os.stat(self.state_path)
        except FileNotFoundError:
            return None
        if not meta or meta.get("stat") != [st.st_ino, st.st_mtime_ns, st.st_size]:
            return None
        return meta

    def signature(self):
        """Changes whenever anybody wrote the state (cheap: no parsing)."""
        try:
            with open(self.meta_path, "rb") as handle:
                meta = handle.read()
        except FileNotFoundError:
            meta = b""
        try:
            st = os.stat(self.state_path)
            stat_part = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stat_part = None
        return meta, stat_part

    def appender(self):
        """What `add` needs, the fast way when the meta allows it (lock held)."""
        meta = self.read_meta()
        data = self.read_bytes() if meta else None
        if data is not None and len(data) == meta["size"]:
            at = meta["groups_at"]
            if data[at - 1 : at + 10] == b'},"groups":' and data.endswith(b"}"):
                try:
                    groups = json.loads(data[at + 10 : -1])
                except ValueError:
                    groups = None
                if isinstance(groups, dict):
                    return _SplicingAppender(self, meta, data, groups)
        return _LoadingAppender(self)

    def appended_tasks_since(self, token):
        """Tasks appended since `token` as [(key, task)], or None if anything else
        changed (then the whole state has to be loaded)."""
        meta = self.read_meta()
        if meta is None:
            return None
        if meta["token"] == token:
            return []
        journal = meta["journal"]
        first = next((i for i, entry in enumerate(journal) if entry["prev"] == token), None)
        if first is None:
            return None
        data = self.read_bytes()
        if data is None or len(data) != meta["size"]:
            return None
        appended = []
        for entry in journal[first:]:
            pair = json.loads(b"{" + data[entry["start"] : entry["end"]] + b"}")
            appended.extend(pair.items())
        return appended

    def current_token(self):
        meta = self.read_meta()
        return meta["token"] if meta else None

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
        return os.path.join(self.logs_dir, f"{task_id}.log")

    def remove_log(self, task_id):
        try:
            os.unlink(self.log_path(task_id))
        except FileNotFoundError:
            pass


JOURNAL_LIMIT = 256  # appends remembered for the daemon; older ones mean a reload


def _encode(text):
    return text.encode("utf-8", "surrogateescape")


class _SplicingAppender:
    """`add` without parsing the state: insert the new task's JSON right before the
    closing brace of `tasks`.  New ids are max+1, so the ids stay sorted."""

    def __init__(self, store, meta, data, groups):
        self.store = store
        self.meta = meta
        self.data = data
        self.groups = groups
        self.next_id = meta["max_id"] + 1

    def has_task(self, task_id):
        # Quotes inside JSON strings are escaped, so this only matches a task entry.
        return f'"{task_id}":{{"id":{task_id},'.encode() in self.data

    def commit(self, task):
        data = self.data
        end_of_tasks = self.meta["groups_at"] - 1  # the `}` closing `tasks`
        comma = b"" if data[end_of_tasks - 1 : end_of_tasks] == b"{" else b","
        entry = _encode(f'"{task["id"]}":' + dumps(task))
        start = end_of_tasks + len(comma)
        journal = self.meta["journal"][-(JOURNAL_LIMIT - 1) :] + [
            {"prev": self.meta["token"], "start": start, "end": start + len(entry)}
        ]
        self.store._write(
            data[:end_of_tasks] + comma + entry + data[end_of_tasks:],
            groups_at=self.meta["groups_at"] + len(comma) + len(entry),
            max_id=max(self.meta["max_id"], task["id"]),
            journal=journal,
        )


class _LoadingAppender:
    """The same interface on a fully loaded state (no usable meta)."""

    def __init__(self, store):
        self.store = store
        self.state = store.load()
        self.groups = self.state["groups"]
        self.next_id = max(map(int, self.state["tasks"]), default=-1) + 1

    def has_task(self, task_id):
        return str(task_id) in self.state["tasks"]

    def commit(self, task):
        self.state["tasks"][str(task["id"])] = task
        self.store.save(self.state)


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
        lines.append(f"   {index}: {message}")
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
    return f"{os.strerror(errno_value)} (os error {errno_value})"


def eprint(*parts):
    print(*parts, file=sys.stderr)
