"""Checks the pueue stand-in (jobsafe_ops/testing/pueue) against real pueue 4.0.4 outputs.

The fixtures were recorded with real pueue/pueued 4.0.4 (see their README.md).  The
module-scoped `scenario` replays commands.log against the stand-in in a temporary
"lab" laid out like the recording's /home/op/lab, and every output is compared with
the recorded one: JSON field by field (timestamp values differ, so only their format
and order are checked), plain text exactly, errors by exit code, stdout and stderr.
"""

from __future__ import annotations

import contextlib
import ctypes
import gzip
import json
import os
import re
import select
import shlex
import signal
import struct
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

FAKE_DIR = Path(__file__).resolve().parents[2] / "jobsafe_ops" / "testing" / "pueue"
PUEUE = str(FAKE_DIR / "pueue")
PUEUED = str(FAKE_DIR / "pueued")

sys.path.insert(0, str(FAKE_DIR))
import _pueue_fake as pf  # noqa: E402


def _find_fixtures() -> Path | None:
    candidates = [
        os.environ.get("PUEUE_FIXTURES_DIR"),
        Path(__file__).resolve().parents[1] / "fixtures" / "pueue",
    ]
    for candidate in candidates:
        if candidate and (Path(candidate) / "status-mixed.json").is_file():
            return Path(candidate)
    return None


FIXTURES = _find_fixtures()
pytestmark = pytest.mark.skipif(FIXTURES is None, reason="real pueue fixtures not found")

RECORDED_ROOT = "/home/op/lab"  # where the fixtures were recorded
TASK_KEYS = [
    "id", "created_at", "original_command", "command", "path", "envs",
    "group", "dependencies", "priority", "label", "status",
]  # fmt: skip
TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3}|\.\d{6}|\.\d{9})?(Z|[+-]\d\d:\d\d)$")

CONFIG = """\
shared:
  pueue_directory: {root}/data
  runtime_directory: {root}/runtime
  use_unix_socket: true
  unix_socket_path: {root}/runtime/pueue_test.socket
  pid_path: {root}/runtime/pueue.pid
client: {{}}
daemon: {daemon}
profiles: {{}}
"""


# ---------------------------------------------------------------------------
# A lab: config, directories and a stand-in daemon, like the recording's setup
# ---------------------------------------------------------------------------


class Lab:
    def __init__(self, root: Path, compress: bool = False):
        self.root = root.resolve()
        for name in ("cwd", "work", "home"):
            (self.root / name).mkdir(parents=True, exist_ok=True)
        daemon = "\n  compress_state_file: true" if compress else "{}"
        self.config = self.root / "pueue.yml"
        self.config.write_text(CONFIG.format(root=self.root, daemon=daemon))
        self.data = self.root / "data"
        # The same minimal environment the fixtures were recorded with.
        self.env = {
            "HOME": str(self.root / "home"),
            "PATH": "/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "USER": "root",
            "SHELL": "/bin/sh",
        }

    def pueue(self, *args: str, cwd: Path | None = None, timeout: float = 30):
        return subprocess.run(
            [PUEUE, "-c", str(self.config), "--color", "never", *args],
            cwd=cwd or self.root / "cwd",
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def ok(self, *args: str) -> str:
        result = self.pueue(*args)
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        return result.stdout

    def start_daemon(self):
        result = subprocess.run(
            [PUEUED, "-c", str(self.config), "-d"],
            cwd=self.root / "cwd",
            env=self.env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 0, result.stderr
        return result

    def status(self, *args: str) -> dict:
        return json.loads(self.ok("status", "--json", *args))

    def wait_for(self, predicate, timeout: float = 10.0, what: str = "condition") -> dict:
        deadline = time.monotonic() + timeout
        while True:
            state = self.status()
            if predicate(state):
                return state
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}: {state}")
            time.sleep(0.05)

    def daemon_alive(self) -> bool:
        return pf.daemon_alive(pf.Settings(str(self.config)))

    @contextlib.contextmanager
    def daemon_frozen(self):
        """SIGSTOP the stand-in daemon (at a moment it holds no state lock), SIGCONT after.

        While it is stopped, nothing starts or finishes: the clients work on the files.
        """
        settings = pf.Settings(str(self.config))
        pid = pf.daemon_pid(settings)
        assert pid and self.daemon_alive()
        # The daemon changes the state only under this lock: stopped while we hold it,
        # it cannot be holding it (it is at most waiting for it).
        with pf.Store(settings):
            os.kill(pid, signal.SIGSTOP)
            wait_until_stopped(pid)
        try:
            yield
        finally:
            os.kill(pid, signal.SIGCONT)

    def add_then_wait(self, add_args, wait_args):
        """`pueue add ...`, then `pueue wait ...` sure to see the new task unfinished.

        `wait` reports a task's result only if its first poll found the task unfinished
        (real wait.rs: a task already Done at the first poll is recorded silently).  The
        recording's daemon took >= 0.3 s per task and its wait client ~2 ms to start;
        here a loaded machine can start the Python client after the task is done.  So
        the daemon stays frozen until `wait` has read the state once.
        """
        with self.daemon_frozen():
            added = self.pueue("add", *add_args)
            with StateReads(self.data) as reads:
                wait = subprocess.Popen(
                    [PUEUE, "-c", str(self.config), "--color", "never", *wait_args],
                    cwd=self.root / "cwd",
                    env=self.env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                try:
                    reads.wait_for("state.json", timeout=60)
                except BaseException:
                    wait.kill()
                    wait.communicate()
                    raise
        try:
            stdout, stderr = wait.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            wait.kill()
            stdout, stderr = wait.communicate()
        return added, subprocess.CompletedProcess(wait.args, wait.returncode, stdout, stderr)

    def teardown(self):
        if self.daemon_alive():
            self.pueue("shutdown")
        kill_leftover_children(self.data)


def wait_until_stopped(pid: int, timeout: float = 30.0):
    """Until the process is in job-control stop (`T`): kill() only queues SIGSTOP."""
    deadline = time.monotonic() + timeout
    while True:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] in ("T", "t"):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"process {pid} did not stop: {stat}")
        time.sleep(0.005)


class StateReads:
    """Tells when some process has read a file of a directory to its end and closed it
    (inotify IN_CLOSE_NOWRITE).  Only events after construction count."""

    IN_CLOSE_NOWRITE = 0x10
    EVENT = struct.Struct("iIII")  # struct inotify_event without its name

    def __init__(self, directory: Path):
        libc = ctypes.CDLL(None, use_errno=True)
        self.fd = libc.inotify_init1(os.O_CLOEXEC | os.O_NONBLOCK)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        if libc.inotify_add_watch(self.fd, os.fsencode(directory), self.IN_CLOSE_NOWRITE) < 0:
            error = ctypes.get_errno()
            os.close(self.fd)
            raise OSError(error, f"inotify_add_watch {directory}")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        os.close(self.fd)

    def wait_for(self, name: str, timeout: float):
        deadline = time.monotonic() + timeout
        wanted = os.fsencode(name)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"nobody read {name} within {timeout}s")
            readable, _, _ = select.select([self.fd], [], [], remaining)
            if not readable:
                continue
            data = os.read(self.fd, 65536)
            offset = 0
            while offset < len(data):
                _, _, _, length = self.EVENT.unpack_from(data, offset)
                start = offset + self.EVENT.size
                if data[start : start + length].rstrip(b"\0") == wanted:
                    return
                offset = start + length


def kill_leftover_children(data_dir: Path):
    """Kill task processes a killed (not shut down) daemon left behind."""
    try:
        children = json.loads((data_dir / "fake_children.json").read_text())
    except (OSError, ValueError):
        return
    for child in children.values():
        try:
            os.killpg(child["pid"], signal.SIGKILL)
        except OSError:
            pass


def kind_of(task: dict) -> str:
    return next(iter(task["status"]))


def result_of(task: dict):
    return task["status"].get("Done", {}).get("result")


def remap(obj, root: Path):
    """Fixture paths (/home/op/lab/...) -> the same paths inside our lab."""
    if isinstance(obj, str):
        return obj.replace(RECORDED_ROOT, str(root))
    if isinstance(obj, list):
        return [remap(item, root) for item in obj]
    if isinstance(obj, dict):
        return {key: remap(value, root) for key, value in obj.items()}
    return obj


def load_fixture(name: str, root: Path):
    return remap(json.loads((FIXTURES / name).read_text()), root)


def fixture_text(name: str) -> str:
    return (FIXTURES / name).read_text()


# ---------------------------------------------------------------------------
# Field-by-field comparison
# ---------------------------------------------------------------------------


def assert_status_matches(actual: dict, expected: dict, where: str):
    assert list(actual) == list(expected), (where, actual, expected)
    kind = next(iter(expected))
    actual_body, expected_body = actual[kind], expected[kind]
    assert list(actual_body) == list(expected_body), (where, actual_body, expected_body)
    for key, value in expected_body.items():
        if key == "result":
            assert actual_body[key] == value, (where, actual_body[key], value)
        elif key == "previous_status":
            assert_status_matches(actual_body[key], value, where)
        elif value is None:
            assert actual_body[key] is None, (where, key)
        else:
            assert TS_RE.match(actual_body[key]), (where, key, actual_body[key])
    # Timestamps of one status never go backwards.
    times = [
        pf.parse_ts(actual_body[key])
        for key in ("enqueued_at", "start", "end")
        if actual_body.get(key)
    ]
    assert times == sorted(times), (where, actual_body)


def assert_task_matches(actual: dict, expected: dict, where: str):
    assert list(actual) == TASK_KEYS, where
    assert list(expected) == TASK_KEYS, where
    for key in ("id", "original_command", "command", "path", "group", "dependencies",
                "priority", "label"):  # fmt: skip
        assert actual[key] == expected[key], (where, key, actual[key], expected[key])
    assert actual["envs"] == expected["envs"], (where, actual["envs"], expected["envs"])
    assert TS_RE.match(actual["created_at"]), (where, actual["created_at"])
    assert_status_matches(actual["status"], expected["status"], where)


def assert_state_matches(actual: dict, expected: dict, name: str):
    assert list(actual) == ["tasks", "groups"], name
    assert list(actual["tasks"]) == list(expected["tasks"]), name
    for task_id, expected_task in expected["tasks"].items():
        assert_task_matches(actual["tasks"][task_id], expected_task, f"{name} task {task_id}")
    assert actual["groups"] == expected["groups"], name
    assert list(actual["groups"]) == list(expected["groups"]), name


def assert_compact_json_line(stdout: str):
    """serde_json output: one compact line."""
    assert stdout.endswith("\n") and stdout.count("\n") == 1
    assert pf.dumps(json.loads(stdout)) == stdout[:-1]


def assert_log_matches(actual: dict, expected: dict, name: str):
    assert list(actual) == list(expected), name
    for task_id, entry in expected.items():
        assert list(actual[task_id]) == ["task", "output"], name
        assert actual[task_id]["task"]["envs"] == {} == entry["task"]["envs"], name
        assert_task_matches(actual[task_id]["task"], entry["task"], f"{name} task {task_id}")
        assert actual[task_id]["output"] == entry["output"], (name, task_id)


def parse_errors_txt() -> list[dict]:
    """errors.txt blocks: `$ pueue ...`, `exit code: N`, stdout/stderr as `  | ` lines."""
    entries = []
    current = None
    section = None
    for line in fixture_text("errors.txt").splitlines():
        if line.startswith("$ "):
            current = {"args": shlex.split(line[2:])[1:], "stdout": [], "stderr": []}
            entries.append(current)
        elif line.startswith("exit code: "):
            current["code"] = int(line.split(": ")[1])
        elif line in ("stdout:", "stderr:"):
            section = line[:-1]
        elif line.startswith("  | "):
            current[section].append(line[4:])
        elif line.startswith("  |"):
            current[section].append("")
    for entry in entries:
        entry["stdout"] = "\n".join(entry["stdout"])
        entry["stderr"] = "\n".join(entry["stderr"])
    return entries


ERRORS = parse_errors_txt() if FIXTURES else []
ERRORS_WITH_DAEMON = [e for e in ERRORS if e["args"] != ["status"]]
ERROR_DAEMON_DOWN = [e for e in ERRORS if e["args"] == ["status"]]


# ---------------------------------------------------------------------------
# The recorded scenario (commands.log), replayed against the stand-in
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    lab = Lab(tmp_path_factory.mktemp("lab"))
    out = {}
    try:
        out["before-daemon"] = lab.pueue("status")
        lab.start_daemon()
        out["status-empty.json"] = lab.pueue("status", "--json")
        out["status-empty.txt"] = lab.pueue("status")
        out["group-add-p1.txt"] = lab.pueue("group", "add", "p1", "-p", "2")
        out["status-after-group-add.json"] = lab.pueue("status", "--json")
        out["add-print-task-id.txt"], out["wait-0"] = lab.add_then_wait(
            ("-g", "p1", "-l", "BTCUSDT@250", "--print-task-id", "--", "true"), ("wait", "0")
        )
        out["add-plain-output.txt"], out["wait-1"] = lab.add_then_wait(
            ("-g", "p1", "-l", "ETHUSDT@250", "--", "echo failing; exit 3"), ("wait", "1")
        )
        lab.ok("add", "-g", "p1", "-l", "SOLUSDT@250", "--", "sleep 300")
        lab.wait_for(lambda s: kind_of(s["tasks"]["2"]) == "Running", what="task 2 running")
        out["kill-output.txt"] = lab.pueue("kill", "2")
        lab.wait_for(lambda s: kind_of(s["tasks"]["2"]) == "Done", what="task 2 killed")
        adds = [
            ("-l", "BTCUSDT@500", "-p", "--", "sleep 300"),
            ("-l", "ETHUSDT@500", "-p", "-w", str(lab.root / "work"), "--", "pwd; sleep 300"),
            ("-l", "SOLUSDT@500", "-p", "--", "echo queued"),
            ("-l", "BTCUSDT@1000", "-p", "--after", "3", "--", "echo after-3"),
            ("-l", "ETHUSDT@1000", "-p", "--stashed", "--", "echo stashed"),
            ("-l", "SOLUSDT@1000", "-p", "--delay", "1h", "--", "echo delayed"),
            ("-l", "XRPUSDT@250", "-p", "--after", "1", "--", "echo depends-on-failed"),
        ]
        out["add-ids"] = [lab.ok("add", "-g", "p1", *args) for args in adds]
        for add_args, name in (
            (("-l", "default-ok", "-p", "--", "echo hello from default"), "wait-default-1"),
            (("-l", "default-fail", "-p", "--", "exit 3"), "wait-default-2"),
        ):
            added, out[name] = lab.add_then_wait(add_args, ("wait", "-g", "default"))
            assert added.returncode == 0, added.stderr
            out["add-ids"].append(added.stdout)
        out["add-ids"].append(lab.ok("add", "-l", "default-running", "-p", "--", "sleep 300"))
        lab.wait_for(
            lambda s: (
                kind_of(s["tasks"]["4"]) == "Running"
                and kind_of(s["tasks"]["12"]) == "Running"
                and kind_of(s["tasks"]["9"]) == "Done"
                and (lab.data / "task_logs" / "4.log").read_text() != ""
            ),
            what="tasks 4 and 12 running",
        )
        out["pause-task-output.txt"] = lab.pueue("pause", "4")
        out["status-mixed.json"] = lab.pueue("status", "--json")
        out["status-mixed.txt"] = lab.pueue("status")
        out["status-group-p1.json"] = lab.pueue("status", "--json", "--group", "p1")
        out["state-file.json"] = (lab.data / "state.json").read_text()
        for task_id, name in ((0, "task0-success"), (1, "task1-failed"), (2, "task2-killed"),
                              (4, "task4-paused")):  # fmt: skip
            out[f"log-json-{name}.json"] = lab.pueue("log", str(task_id), "--json")
        out["log-json-default.json"] = lab.pueue("log", "--json")
        out["log-json-all.json"] = lab.pueue("log", "--json", "--all")
        out["log-task1.txt"] = lab.pueue("log", "1")
        out["restart-before.json"] = lab.pueue("status", "--json")
        out["restart-output.txt"] = lab.pueue("restart", "1")
        time.sleep(0.3)  # give the daemon a chance to (wrongly) start task 13
        out["restart-after.json"] = lab.pueue("status", "--json")
        out["restart-inplace-before.json"] = lab.pueue("status", "--json", "--group", "default")
        out["restart-inplace-output.txt"] = lab.pueue("restart", "--in-place", "11")
        out["restart-inplace-after.json"] = lab.pueue("status", "--json", "--group", "default")
        for entry in ERRORS_WITH_DAEMON:
            out["error: " + shlex.join(entry["args"])] = lab.pueue(*entry["args"])
        out["parallel-p1-3-output.txt"] = lab.pueue("parallel", "3", "--group", "p1")
        lab.wait_for(lambda s: kind_of(s["tasks"]["13"]) == "Done", what="task 13 done")
        out["parallel-after.json"] = lab.pueue("status", "--json")
        out["clean-p1-output.txt"] = lab.pueue("clean", "-g", "p1")
        out["clean-after.json"] = lab.pueue("status", "--json")
        out["state-file-end.json"] = (lab.data / "state.json").read_text()
        out["logs-after-clean"] = sorted(p.name for p in (lab.data / "task_logs").iterdir())
        out["kill-all"] = lab.pueue("kill", "--all")
        out["after-kill-all-at-once.json"] = lab.pueue("status", "--json")
        lab.wait_for(
            lambda s: all(kind_of(s["tasks"][i]) == "Done" for i in ("3", "4", "12")),
            what="killed tasks reaped",
        )
        out["after-kill-all.json"] = lab.pueue("status", "--json")
        out["shutdown"] = lab.pueue("shutdown")
        out["daemon-alive-after-shutdown"] = lab.daemon_alive()
        for entry in ERROR_DAEMON_DOWN:
            out["error: " + shlex.join(entry["args"])] = lab.pueue(*entry["args"])
        out["state-after-shutdown"] = json.loads((lab.data / "state.json").read_text())
        yield lab, out
    finally:
        lab.teardown()


def check_state_output(scenario, name: str, fixture: str | None = None):
    lab, out = scenario
    result = out[name]
    assert result.returncode == 0, result.stderr
    assert_compact_json_line(result.stdout)
    assert_state_matches(json.loads(result.stdout), load_fixture(fixture or name, lab.root), name)


@pytest.mark.parametrize(
    "name",
    [
        "status-empty.json",
        "status-after-group-add.json",
        "status-mixed.json",
        "status-group-p1.json",
        "restart-before.json",
        "restart-after.json",
        "restart-inplace-before.json",
        "restart-inplace-after.json",
        "parallel-after.json",
        "clean-after.json",
    ],
)
def test_status_json_matches_fixture(scenario, name):
    check_state_output(scenario, name)


def test_restart_inplace_keeps_waiting_like_fixture(scenario):
    # restart-inplace-after-1s: task 11 is still Queued behind the running task 12.
    check_state_output(scenario, "restart-inplace-after.json", "restart-inplace-after-1s.json")


@pytest.mark.parametrize("name", ["state-file.json", "state-file-end.json"])
def test_state_file_matches_fixture(scenario, name):
    lab, out = scenario
    text = out[name]
    assert "\n" not in text  # pueue writes one compact line without a newline
    assert pf.dumps(json.loads(text)) == text
    assert_state_matches(json.loads(text), load_fixture(name, lab.root), name)


def test_state_file_equals_status_output(scenario):
    _, out = scenario
    assert json.loads(out["state-file.json"]) == json.loads(out["status-mixed.json"].stdout)


@pytest.mark.parametrize(
    "name",
    [
        "status-empty.txt",
        "group-add-p1.txt",
        "add-print-task-id.txt",
        "add-plain-output.txt",
        "kill-output.txt",
        "pause-task-output.txt",
        "restart-output.txt",
        "restart-inplace-output.txt",
        "parallel-p1-3-output.txt",
        "clean-p1-output.txt",
        "log-task1.txt",
    ],
)
def test_plain_output_matches_fixture(scenario, name):
    _, out = scenario
    result = out[name]
    assert result.returncode == 0, result.stderr
    assert result.stdout == fixture_text(name)


def test_add_print_task_id_sequence(scenario):
    _, out = scenario
    assert out["add-ids"] == [f"{task_id}\n" for task_id in range(3, 13)]


def test_wait_output_like_commands_log(scenario):
    _, out = scenario
    expected = {
        "wait-0": "Task 0 succeeded with 0",
        "wait-1": "Task 1 failed with 3",
        "wait-default-1": "Task 10 succeeded with 0",
        "wait-default-2": "Task 11 failed with 3",
    }
    for name, text in expected.items():
        result = out[name]
        assert (result.returncode, result.stderr) == (0, ""), (name, result.stderr)
        # The first poll saw the task Queued (see Lab.add_then_wait).  The recording's
        # client polled every 2 s and so saw it Done next; ours polls faster and may also
        # see it Running in between.
        assert result.stdout, name
        *before, last = result.stdout.splitlines()
        task_id = text.split()[1]
        for line in before:
            assert re.fullmatch(
                rf"\d\d:\d\d:\d\d - Task {task_id} changed from Queued to Running", line
            ), (name, result.stdout)
        assert re.fullmatch(r"\d\d:\d\d:\d\d - " + re.escape(text), last), (name, result.stdout)


@pytest.mark.parametrize(
    "name",
    [
        "log-json-task0-success.json",
        "log-json-task1-failed.json",
        "log-json-task2-killed.json",
        "log-json-task4-paused.json",
        "log-json-default.json",
        "log-json-all.json",
    ],
)
def test_log_json_matches_fixture(scenario, name):
    lab, out = scenario
    result = out[name]
    assert result.returncode == 0, result.stderr
    assert_compact_json_line(result.stdout)
    assert_log_matches(json.loads(result.stdout), load_fixture(name, lab.root), name)


def test_plain_log_header_goes_to_stderr(scenario):
    _, out = scenario
    stderr = out["log-task1.txt"].stderr.splitlines()
    assert "Task 1:" in stderr[1] and "failed with exit code 3" in stderr[1]
    assert stderr[3].startswith("Command: echo failing; exit 3")
    assert stderr[5].strip().startswith("Label: ETHUSDT@250")
    assert stderr[-1] == "output:"


def test_plain_status_lists_groups(scenario):
    _, out = scenario
    text = out["status-mixed.txt"].stdout
    assert 'Group "default" (1 parallel): running' in text
    assert 'Group "p1" (2 parallel): running' in text
    assert "Dependency failed" in text and "Failed (3)" in text


@pytest.mark.parametrize(
    "entry", ERRORS_WITH_DAEMON + ERROR_DAEMON_DOWN, ids=lambda e: shlex.join(e["args"])
)
def test_errors_match_fixture(scenario, entry):
    lab, out = scenario
    result = out["error: " + shlex.join(entry["args"])]
    assert result.returncode == entry["code"]
    assert result.stdout.rstrip("\n") == remap(entry["stdout"], lab.root)
    assert result.stderr.rstrip("\n") == remap(entry["stderr"], lab.root)


def test_client_fails_like_fixture_before_daemon_start(scenario):
    lab, out = scenario
    expected = ERROR_DAEMON_DOWN[0]
    assert out["before-daemon"].returncode == 1
    assert out["before-daemon"].stderr.rstrip("\n") == remap(expected["stderr"], lab.root)


def test_clean_removes_logs_of_removed_tasks(scenario):
    _, out = scenario
    # Tasks 3 and 4 ran and are kept; 0, 1, 2, 5 and 13 ran and were cleaned.
    assert out["logs-after-clean"] == ["10.log", "11.log", "12.log", "3.log", "4.log"]


def test_kill_all_and_shutdown(scenario):
    _, out = scenario
    assert out["kill-all"].stdout == "All tasks are being killed. All groups will be paused!!!\n"
    at_once = json.loads(out["after-kill-all-at-once.json"].stdout)
    assert {g["status"] for g in at_once["groups"].values()} == {"Paused"}  # by kill itself
    state = json.loads(out["after-kill-all.json"].stdout)
    # Groups with queued work get paused; every process is Killed.
    assert {g["status"] for g in state["groups"].values()} == {"Paused"}
    for task_id in ("3", "4", "12"):
        assert result_of(state["tasks"][task_id]) == "Killed"
    assert out["shutdown"].stdout == "Daemon is shutting down\n"
    assert out["daemon-alive-after-shutdown"] is False
    assert kind_of(out["state-after-shutdown"]["tasks"]["6"]) == "Queued"


# ---------------------------------------------------------------------------
# Behaviour beyond the recorded scenario (each with its own daemon)
# ---------------------------------------------------------------------------


def test_timestamp_format_is_chrono_autosi(monkeypatch):
    # The fixtures show 6 digits when the nanoseconds end in 000 (`17.705748Z`).
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    try:
        base = 1795369277 * 10**9  # 2026-11-22T17:41:17Z
        assert pf.format_ts(base) == "2026-11-22T17:41:17Z"
        assert pf.format_ts(base + 705_000_000) == "2026-11-22T17:41:17.705Z"
        assert pf.format_ts(base + 705_748_000) == "2026-11-22T17:41:17.705748Z"
        assert pf.format_ts(base + 120_011_444) == "2026-11-22T17:41:17.120011444Z"
        assert pf.parse_ts("2026-11-22T17:41:17.120011444Z") == pytest.approx(1795369277.120011444)
        assert pf.parse_ts("2026-11-22T18:41:17+01:00") == 1795369277
        monkeypatch.setenv("TZ", "Europe/Berlin")
        time.tzset()
        assert pf.format_ts(base) == "2026-11-22T18:41:17+01:00"
    finally:
        monkeypatch.undo()
        time.tzset()


@pytest.fixture
def lab(tmp_path):
    lab = Lab(tmp_path)
    lab.start_daemon()
    yield lab
    lab.teardown()


def test_version_and_path_resolution(tmp_path):
    env = {"PATH": f"{FAKE_DIR}:/usr/bin:/bin", "HOME": str(tmp_path)}
    for binary, expected in (("pueue", "pueue 4.0.4\n"), ("pueued", "pueued 4.0.4\n")):
        for flag in ("--version", "-V"):
            result = subprocess.run([binary, flag], env=env, capture_output=True, text=True)
            assert result.stdout == expected


def test_second_daemon_is_refused(lab):
    result = subprocess.run(
        [PUEUED, "-c", str(lab.config), "-d"], env=lab.env, capture_output=True, text=True
    )
    assert result.returncode == 1
    assert "another daemon seems to be running" in result.stderr
    assert lab.daemon_alive()


def test_parallel_limit_is_respected(lab):
    lab.ok("group", "add", "lim", "-p", "2")
    for _ in range(3):
        lab.ok("add", "-g", "lim", "--", "sleep 30")
    lab.wait_for(
        lambda s: sum(kind_of(t) == "Running" for t in s["tasks"].values()) == 2,
        what="two running tasks",
    )
    time.sleep(0.5)  # several scheduler ticks: still only two
    state = lab.status()
    kinds = sorted(kind_of(task) for task in state["tasks"].values())
    assert kinds == ["Queued", "Running", "Running"]
    workers = sorted(state["tasks"][i]["envs"]["PUEUE_WORKER_ID"] for i in ("0", "1"))
    assert workers == ["0", "1"]
    # Lowering the limit doesn't stop running tasks; 0 means unlimited.
    lab.ok("parallel", "0", "-g", "lim")
    lab.wait_for(
        lambda s: all(kind_of(t) == "Running" for t in s["tasks"].values()), what="all running"
    )
    assert lab.ok("kill", "-g", "lim").startswith('All tasks of group "lim" are being killed')
    # Like pueue, kill only sends the signal; the daemon records the result when it reaps.
    state = lab.wait_for(
        lambda s: all(kind_of(t) == "Done" for t in s["tasks"].values()), what="all reaped"
    )
    assert {result_of(t) for t in state["tasks"].values()} == {"Killed"}
    # Nothing was queued, so (like pueue's should_pause_group) the group keeps running.
    assert state["groups"]["lim"]["status"] == "Running"


def test_after_chain_waits_and_dependency_failure_propagates(lab):
    lab.ok("parallel", "3")
    first = lab.ok("add", "-p", "--", "sleep 0.4").strip()
    second = lab.ok("add", "-p", "--after", first, "--", "true").strip()
    third = lab.ok("add", "-p", "--after", second, first, "--", "true").strip()
    state = lab.status()
    assert kind_of(state["tasks"][second]) == "Queued"
    assert state["tasks"][third]["dependencies"] == [int(first), int(second)]  # sorted
    bad = lab.ok("add", "-p", "--", "exit 1").strip()
    child = lab.ok("add", "-p", "--after", bad, "--", "true").strip()
    grandchild = lab.ok("add", "-p", "--after", child, "--", "true").strip()
    result = lab.pueue("wait", "--all", timeout=20)
    assert result.returncode == 0, result.stderr
    tasks = lab.status()["tasks"]
    assert [result_of(tasks[i]) for i in (first, second, third)] == ["Success"] * 3
    assert pf.parse_ts(tasks[second]["status"]["Done"]["start"]) >= pf.parse_ts(
        tasks[first]["status"]["Done"]["end"]
    )
    assert result_of(tasks[bad]) == {"Failed": 1}
    assert result_of(tasks[child]) == "DependencyFailed"
    assert result_of(tasks[grandchild]) == "DependencyFailed"
    assert "PUEUE_GROUP" not in tasks[child]["envs"]  # it never ran
    # `wait --status success` exits 1 once a watched task failed.
    assert lab.pueue("wait", bad, "--status", "success").returncode == 1


def test_dependency_failure_is_held_while_group_paused(lab):
    lab.ok("pause")
    bad = lab.ok("add", "-p", "--", "exit 2").strip()
    dependant = lab.ok("add", "-p", "--after", bad, "--", "true").strip()
    assert lab.ok("start", bad) == f"Tasks have been started/resumed: {bad}\n"
    lab.wait_for(lambda s: kind_of(s["tasks"][bad]) == "Done", what="forced start")
    time.sleep(0.4)
    assert kind_of(lab.status()["tasks"][dependant]) == "Queued"
    lab.ok("start")
    lab.wait_for(lambda s: result_of(s["tasks"][dependant]) == "DependencyFailed", what="dep fail")


def test_concurrent_adds_lose_nothing(lab):
    lab.ok("group", "add", "held")
    lab.ok("pause", "-g", "held")  # nothing runs; we only count tasks

    def add_three(worker):
        script = 'for i in 1 2 3; do "$0" -c "$1" add -g held -l "w%s-$i" -- true || exit 1; done'
        return subprocess.run(
            ["sh", "-c", script % worker, PUEUE, str(lab.config)],
            env=lab.env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(add_three, range(20)))
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    tasks = lab.status()["tasks"]
    assert sorted(map(int, tasks)) == list(range(60))
    labels = sorted(task["label"] for task in tasks.values())
    assert labels == sorted(f"w{w}-{i}" for w in range(20) for i in (1, 2, 3))


def test_add_splices_into_a_canonical_state_file(lab):
    """`add` inserts the task without re-serialising the state; the file must stay
    exactly what a full save would write, and the daemon must see the new tasks."""
    lab.ok("group", "add", "later", "-p", "0")
    lab.ok("pause", "-g", "later")
    for index in range(5):
        lab.ok("add", "-g", "later", "-l", f"täsk {index}", "--", f'echo "{index}"')
    text = (lab.data / "state.json").read_text()
    assert pf.dumps(json.loads(text)) == text
    meta = json.loads((lab.data / "fake_state.meta").read_text())
    assert len(meta["journal"]) == 5  # five appends since the last full write
    time.sleep(0.3)  # the daemon caught up (from the journal), without writing
    assert json.loads((lab.data / "fake_state.meta").read_text())["token"] == meta["token"]
    # Without a usable meta, add falls back to load + full save.
    (lab.data / "fake_state.meta").unlink()
    assert lab.ok("add", "-g", "later", "-p", "--after", "4", "--", "echo 5") == "5\n"
    assert json.loads((lab.data / "fake_state.meta").read_text())["journal"] == []
    lab.ok("start", "-g", "later")
    assert lab.pueue("wait", "-g", "later").returncode == 0
    state = lab.status()
    assert [result_of(t) for t in state["tasks"].values()] == ["Success"] * 6
    assert state["tasks"]["3"]["label"] == "täsk 3"


def test_ids_are_reused_after_clean_and_remove(lab):
    for _ in range(3):
        lab.ok("add", "--", "true")
    assert lab.pueue("wait", "--all").returncode == 0
    assert lab.ok("remove", "2") == "Tasks removed from list: 2\n"
    assert lab.ok("add", "-p", "--", "true") == "2\n"
    assert lab.pueue("wait", "--all").returncode == 0
    assert lab.ok("clean") == "All finished tasks have been removed\n"
    assert lab.status()["tasks"] == {}
    assert lab.ok("add", "-p", "--", "true") == "0\n"


def test_daemon_restart_kills_running_and_pauses_queued_groups(lab):
    lab.ok("group", "add", "idle")
    lab.ok("add", "--", "sleep 30")
    lab.ok("add", "--", "true")  # queued behind it (default has one slot)
    lab.wait_for(lambda s: kind_of(s["tasks"]["0"]) == "Running", what="task 0 running")
    # Crash the daemon (SIGKILL: no cleanup), then start a new one.
    pid = int(Path(pf.Settings(str(lab.config)).pid_path).read_text())
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while lab.daemon_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert lab.pueue("status").returncode == 1
    kill_leftover_children(lab.data)
    lab.start_daemon()
    state = lab.status()
    assert result_of(state["tasks"]["0"]) == "Killed"
    assert_status_matches(
        state["tasks"]["0"]["status"],
        {"Done": {"enqueued_at": "t", "start": "t", "end": "t", "result": "Killed"}},
        "restored",
    )
    assert kind_of(state["tasks"]["1"]) == "Queued"
    assert state["groups"]["default"]["status"] == "Paused"
    assert state["groups"]["idle"]["status"] == "Running"
    time.sleep(0.3)
    assert kind_of(lab.status()["tasks"]["1"]) == "Queued"  # nothing drains by itself
    lab.ok("start")
    lab.wait_for(lambda s: result_of(s["tasks"]["1"]) == "Success", what="queue resumed")


def test_kill_only_signals_the_daemon_records_the_result(lab):
    lab.ok("add", "--", "sleep 30")
    lab.wait_for(lambda s: kind_of(s["tasks"]["0"]) == "Running", what="running")
    with lab.daemon_frozen():
        assert lab.ok("kill", "0") == "Tasks are being killed: 0\n"
        assert kind_of(lab.status()["tasks"]["0"]) == "Running"  # until the daemon reaps it
    lab.wait_for(lambda s: result_of(s["tasks"]["0"]) == "Killed", what="reaped")


def test_reset_is_finished_by_the_daemon(lab):
    lab.ok("group", "add", "other")
    lab.ok("add", "--", "sleep 30")
    lab.ok("add", "-g", "other", "--", "true")
    lab.wait_for(lambda s: kind_of(s["tasks"]["0"]) == "Running", what="running")
    pid = json.loads((lab.data / "fake_children.json").read_text())["0"]["pid"]
    with lab.daemon_frozen():
        assert lab.ok("reset", "--force") == "Everything is being reset right now.\n"
        state = lab.status()
        # the groups read "Reset" and keep their tasks until the daemon's next loop
        assert {g["status"] for g in state["groups"].values()} == {"Reset"}
        assert sorted(state["tasks"]) == ["0", "1"]
    state = lab.wait_for(lambda s: not s["tasks"], what="tasks removed")
    assert {g["status"] for g in state["groups"].values()} == {"Running"}
    assert process_state(pid) in ("gone", "Z")  # the daemon reaped it before removing
    assert lab.ok("add", "-p", "--", "true") == "0\n"  # ids start over


def process_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def test_compressed_state_file(tmp_path):
    lab = Lab(tmp_path, compress=True)
    lab.start_daemon()
    try:
        lab.ok("add", "-l", "zipped", "--", "echo hi")
        assert lab.pueue("wait", "0").returncode == 0
        assert not (lab.data / "state.json").exists()
        raw = (lab.data / "state.json.gz").read_bytes()
        assert raw[:2] == b"\x1f\x8b"
        on_disk = json.loads(gzip.decompress(raw))
        assert on_disk == lab.status()
        assert result_of(on_disk["tasks"]["0"]) == "Success"
        assert json.loads(lab.ok("log", "0", "--json"))["0"]["output"] == "hi"
    finally:
        lab.teardown()


def test_delayed_task_is_enqueued_when_due(lab):
    assert lab.ok("add", "-p", "--delay", "1s", "--", "true") == "0\n"
    task = lab.status()["tasks"]["0"]
    assert kind_of(task) == "Stashed" and TS_RE.match(task["status"]["Stashed"]["enqueue_at"])
    lab.wait_for(lambda s: result_of(s["tasks"]["0"]) == "Success", what="delayed task ran")


def test_task_environment_and_working_directory(lab):
    lab.ok("group", "add", "envs", "-p", "3")
    lab.ok("add", "-g", "envs", "-w", str(lab.root / "work"), "--",
           'echo "$PUEUE_GROUP/$PUEUE_WORKER_ID/$HOME/$(pwd)/${SHELL}"')  # fmt: skip
    assert lab.pueue("wait", "-g", "envs").returncode == 0
    log = json.loads(lab.ok("log", "0", "--json"))["0"]
    assert log["output"] == "envs/0/{}/{}//bin/sh".format(lab.env["HOME"], lab.root / "work")
    assert lab.status()["tasks"]["0"]["envs"] == {
        **lab.env,
        "PUEUE_GROUP": "envs",
        "PUEUE_WORKER_ID": "0",
    }


def test_env_set_and_unset(lab):
    lab.ok("add", "--stashed", "--", 'echo "$FOO"')
    assert lab.ok("env", "set", "0", "FOO", "bar") == "Environment variable set.\n"
    assert lab.status()["tasks"]["0"]["envs"]["FOO"] == "bar"
    assert lab.ok("env", "unset", "0", "FOO") == "Environment variable unset.\n"
    assert "FOO" not in lab.status()["tasks"]["0"]["envs"]
    lab.ok("env", "set", "0", "FOO", "baz")
    assert lab.ok("enqueue", "0") == "Stashed tasks have been enqueued: 0\n"
    assert lab.pueue("wait", "0").returncode == 0
    assert json.loads(lab.ok("log", "0", "--json"))["0"]["output"] == "baz"
    result = lab.pueue("env", "set", "0", "FOO", "late")
    assert (result.returncode, result.stderr) == (1, "You can only edit stashed or queued tasks\n")


def test_failed_to_spawn(lab):
    lab.ok("pause")
    gone = lab.root / "gone"
    gone.mkdir()
    lab.ok("add", "-w", str(gone), "--", "true")
    gone.rmdir()
    lab.ok("start")
    state = lab.wait_for(lambda s: kind_of(s["tasks"]["0"]) == "Done", what="spawn failure")
    result = result_of(state["tasks"]["0"])
    assert list(result) == ["FailedToSpawn"]
    assert result["FailedToSpawn"].startswith("Failed to spawn child 0 with err: Os { code: 2")


def test_pause_and_resume_running_task(lab):
    lab.ok("add", "--", "sleep 30")
    lab.wait_for(lambda s: kind_of(s["tasks"]["0"]) == "Running", what="running")
    assert lab.ok("pause") == 'Group "default" is being paused.\n'
    state = lab.status()
    assert kind_of(state["tasks"]["0"]) == "Paused"
    assert state["groups"]["default"]["status"] == "Paused"
    assert lab.ok("start", "0") == "Tasks have been started/resumed: 0\n"
    assert kind_of(lab.status()["tasks"]["0"]) == "Running"
    lab.ok("kill", "0")  # a paused (stopped) process dies of SIGKILL all the same
    lab.wait_for(lambda s: result_of(s["tasks"]["0"]) == "Killed", what="killed")
    # With --signal the process decides; a signal death is reaped as Killed too.
    lab.ok("start")  # `start 0` resumed the task only; the group is still paused
    lab.ok("add", "--", "sleep 30")
    lab.wait_for(lambda s: kind_of(s["tasks"]["1"]) == "Running", what="running")
    assert lab.ok("kill", "-s", "SIGTERM", "1") == "Tasks are being killed: 1\n"
    lab.wait_for(lambda s: result_of(s["tasks"]["1"]) == "Killed", what="signalled")


# ---------------------------------------------------------------------------
# First start without a config: pueued writes the default file and honours it
# ---------------------------------------------------------------------------


def _bare_env(home: Path, **extra: str) -> dict[str, str]:
    return {"HOME": str(home), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", **extra}


@pytest.mark.parametrize("where", ["home", "xdg", "env"])
def test_first_start_writes_the_real_default_config(tmp_path: Path, where: str) -> None:
    home = tmp_path / "h"
    home.mkdir()
    extra = {}
    cfg = home / ".config" / "pueue" / "pueue.yml"
    if where == "xdg":
        extra["XDG_CONFIG_HOME"] = str(tmp_path / "xdg")
        cfg = tmp_path / "xdg" / "pueue" / "pueue.yml"
    env = _bare_env(home, **extra)
    if where == "env":  # PUEUE_CONFIG_PATH must name an existing file, like -c
        env["PUEUE_CONFIG_PATH"] = str(tmp_path / "missing.yml")
        result = subprocess.run([PUEUED, "-d"], env=env, capture_output=True, text=True,
                                timeout=30)
        assert result.returncode == 1 and "Error while reading configuration" in result.stderr
        assert not (tmp_path / "missing.yml").exists() and not cfg.exists()
        return
    try:
        subprocess.run([PUEUED, "-d"], env=env, check=True, timeout=30, cwd=tmp_path)
        assert FIXTURES is not None
        assert cfg.read_bytes() == (FIXTURES / "default-pueue.yml").read_bytes()
        # null = unset: state, pid file and socket in ~/.local/share/pueue
        data = home / ".local" / "share" / "pueue"
        user = pf.current_user()
        assert (data / "state.json").is_file() and (data / "pueue.pid").is_file()
        assert (data / f"pueue_{user}.socket").is_socket()
        assert not (home / "null").exists() and not (tmp_path / "null").exists()
        out = subprocess.run([PUEUE, "status", "--json"], env=env, capture_output=True,
                             text=True, timeout=30, check=True)
        assert out.stdout == (FIXTURES / "status-empty.json").read_text()
    finally:
        subprocess.run([PUEUE, "shutdown"], env=env, capture_output=True, timeout=30)


def test_an_existing_config_is_not_rewritten(tmp_path: Path) -> None:
    home = tmp_path / "h"
    cfg = home / ".config" / "pueue" / "pueue.yml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text(f"shared:\n  pueue_directory: ~/pq\n  pid_path: {tmp_path}/d.pid\n")
    env = _bare_env(home)
    try:
        subprocess.run([PUEUED, "-d"], env=env, check=True, timeout=30)
        assert cfg.read_text().startswith("shared:\n  pueue_directory: ~/pq\n")
        assert (home / "pq" / "state.json").is_file() and (tmp_path / "d.pid").is_file()
    finally:
        subprocess.run([PUEUE, "shutdown"], env=env, capture_output=True, timeout=30)
