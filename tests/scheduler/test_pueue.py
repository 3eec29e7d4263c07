"""jobsafe_ops.scheduler.pueue against real pueue 4.0.4 outputs (shared fixtures) and v3."""

from __future__ import annotations

import json
import shlex

import pytest

from jobsafe_ops.errors import ConfigError, RemoteError
from jobsafe_ops.scheduler.pueue import (
    add_argv,
    clean_argv,
    group_add_argv,
    parallel_argv,
    parse_log,
    parse_status,
    parse_task_id,
    parse_version,
)
from jobsafe_ops.shell import join

# Expected per task of status-mixed.json (fixtures README table).
MIXED = {
    0: ("p1", "BTCUSDT@250", "success", 0),
    1: ("p1", "ETHUSDT@250", "failed", 3),
    2: ("p1", "SOLUSDT@250", "killed", None),
    3: ("p1", "BTCUSDT@500", "running", None),
    4: ("p1", "ETHUSDT@500", "paused", None),
    5: ("p1", "SOLUSDT@500", "queued", None),
    6: ("p1", "BTCUSDT@1000", "queued", None),
    7: ("p1", "ETHUSDT@1000", "stashed", None),
    8: ("p1", "SOLUSDT@1000", "stashed", None),
    9: ("p1", "XRPUSDT@250", "dependency_failed", None),
    10: ("default", "default-ok", "success", 0),
    11: ("default", "default-fail", "failed", 3),
    12: ("default", "default-running", "running", None),
}


def test_v4_status_mixed_every_state(fixtures):
    state = parse_status((fixtures / "status-mixed.json").read_text())
    assert state.schema == "v4"
    got = {t.id: (t.group, t.label, t.state, t.exit_code) for t in state.tasks}
    assert got == MIXED
    by_id = {t.id: t for t in state.tasks}
    assert by_id[6].dependencies == (3,)
    assert by_id[4].path == "/home/op/lab/work"
    assert by_id[1].command == "echo failing; exit 3"
    assert by_id[3].start is not None and by_id[3].end is None
    assert by_id[0].end is not None and by_id[0].end > by_id[0].start
    assert {g: (x.status, x.parallel) for g, x in state.groups.items()} == {
        "default": ("Running", 1), "p1": ("Running", 2)}


def test_transient_classification(fixtures):
    state = parse_status((fixtures / "status-mixed.json").read_text())
    by_id = {t.id: t for t in state.tasks}
    assert by_id[2].transient_failure  # Killed
    assert not by_id[1].transient_failure  # exit 3 is persistent


def test_group_filter_and_locked(fixtures):
    state = parse_status((fixtures / "status-group-p1.json").read_text())
    assert {t.group for t in state.tasks} == {"p1"}
    assert set(state.groups) == {"default", "p1"}  # groups stay complete
    locked = parse_status((fixtures / "status-locked-during-edit.json").read_text())
    assert [t.id for t in locked.tasks if t.state == "locked"] == [5]


def test_empty_and_state_file_same_shape(fixtures):
    assert parse_status((fixtures / "status-empty.json").read_text()).tasks == ()
    a = parse_status((fixtures / "state-file.json").read_text())
    b = parse_status((fixtures / "status-mixed.json").read_text())
    assert [(t.id, t.state) for t in a.tasks] == [(t.id, t.state) for t in b.tasks]


def test_restart_creates_new_task_with_same_label(fixtures):
    after = parse_status((fixtures / "restart-after.json").read_text())
    eth = [t for t in after.tasks if t.label == "ETHUSDT@250"]
    assert [(t.id, t.state) for t in eth] == [(1, "failed"), (13, "queued")]
    # identity by label: both copies are found by group + label, not by id
    assert len(after.by_label("p1")["ETHUSDT@250"]) == 2


V3 = {
    "tasks": {
        "0": {"id": 0, "original_command": "sleep 60", "command": "sleep 60", "path": "/w",
              "envs": {}, "group": "p1", "dependencies": [], "label": "a@1",
              "status": "Running", "prev_status": "Queued",
              "start": "2022-05-09T18:41:29.27+02:00", "end": None},
        "1": {"id": 1, "original_command": "x", "command": "x", "path": "/w", "envs": {},
              "group": "p1", "dependencies": [], "label": "b@1",
              "status": {"Done": {"Failed": 2}}, "prev_status": "Running",
              "start": "2022-05-09T18:41:29.27+02:00", "end": "2022-05-09T18:42:00+02:00"},
        "2": {"id": 2, "original_command": "y", "command": "y", "path": "/w", "envs": {},
              "group": "p1", "dependencies": [1], "label": "c@1", "status": "Queued",
              "prev_status": "Queued", "start": None, "end": None},
        "3": {"id": 3, "original_command": "z", "command": "z", "path": "/w", "envs": {},
              "group": "p1", "dependencies": [], "label": None,
              "status": {"Done": "Success"}, "prev_status": "Running",
              "start": "2022-05-09T18:41:29+02:00", "end": "2022-05-09T18:41:30+02:00"},
        "4": {"id": 4, "original_command": "s", "command": "s", "path": "/w", "envs": {},
              "group": "p1", "dependencies": [], "label": "s@1",
              "status": {"Stashed": {"enqueue_at": None}}, "prev_status": "Stashed",
              "start": None, "end": None},
    },
    "groups": {"p1": {"status": "Paused", "parallel_tasks": 3}},
}


def test_v3_bare_string_statuses_and_top_level_times():
    state = parse_status(json.dumps(V3))
    assert state.schema == "v3"
    got = {t.id: (t.state, t.exit_code) for t in state.tasks}
    assert got == {0: ("running", None), 1: ("failed", 2), 2: ("queued", None),
                   3: ("success", 0), 4: ("stashed", None)}
    running = state.tasks[0]
    assert running.start is not None and running.start.utcoffset().total_seconds() == 7200
    assert state.counts("p1")["running"] == 1  # the skill's v4-only counter reported 0 here


def test_blocked_queued_behind_failed_dependency():
    # pueue does not mark DependencyFailed while the group is paused: we still show blocked
    state = parse_status(json.dumps(V3))
    assert state.state_of(state.tasks[2]) == "blocked"
    assert state.counts("p1").get("blocked") == 1


def test_invalid_json_is_a_remote_error():
    with pytest.raises(RemoteError, match="invalid JSON"):
        parse_status("Error: Failed to initialize client")


def test_add_argv_quotes_every_value():
    label = "weird label; rm -rf / $(x) `y` 'q'"
    argv = add_argv("pueue", "echo 'a b'; exit 3", group="p1", label=label,
                    workdir="/home/op/project", after=[5, 3, 5])
    assert argv[-2:] == ["--", "echo 'a b'; exit 3"]
    assert argv[argv.index("--after") + 1: argv.index("--")] == ["3", "5"]
    assert "--print-task-id" in argv and argv[argv.index("--label") + 1] == label
    assert shlex.split(join(argv)) == argv  # the shell sees exactly these words


def test_add_argv_requires_absolute_workdir_and_label():
    with pytest.raises(ConfigError, match="absolute"):
        add_argv("pueue", "true", group="p1", label="a", workdir="~/project")
    with pytest.raises(ConfigError, match="label"):
        add_argv("pueue", "true", group="p1", label="", workdir="/w")


def test_parallel_never_zero_and_clean_scoped():
    assert parallel_argv("pueue", "p1", 3) == ["pueue", "parallel", "3", "--group", "p1"]
    with pytest.raises(ConfigError, match="unlimited"):
        parallel_argv("pueue", "p1", 0)
    with pytest.raises(ConfigError):
        group_add_argv("pueue", "p1", 0)
    assert clean_argv("pueue", "p1") == ["pueue", "clean", "--group", "p1"]
    with pytest.raises(ConfigError, match="scoped"):
        clean_argv("pueue", "")


def test_program_path_keeps_tilde_expandable():
    assert join(["~/.local/bin/pueue", "status"]) == '"$HOME"/.local/bin/pueue status'


def test_small_parsers(fixtures):
    assert parse_version("pueue 4.0.4\n") == "4.0.4"
    assert parse_task_id((fixtures / "add-print-task-id.txt").read_text()) == 0
    with pytest.raises(RemoteError):
        parse_task_id((fixtures / "add-plain-output.txt").read_text())
    logs = parse_log((fixtures / "log-json-task1-failed.json").read_text())
    assert logs == {1: "failing"}
    assert parse_log("{}") == {}


def test_dependency_in_another_group_is_not_blocked():
    # `status --group p2` hides p1's tasks: a dependency on one is not a failed dependency
    data = json.loads(json.dumps(V3))
    data["tasks"]["2"]["dependencies"] = [77]
    state = parse_status(json.dumps(data))
    assert state.state_of(state.tasks[2]) == "queued"


# pueue 4's eyre report when the daemon is down (the stand-in prints the same shape)
DAEMON_DOWN_REPORT = """Error:
   0: Failed to initialize client.
   1: Failed to initialize stream.
   2: I/O error at path "/run/user/1000/pueue.socket" while connecting to daemon. Did you \
start it?:
   2: Connection refused (os error 111)

Location:
   pueue_lib/src/network/client.rs:85
"""


def test_status_failure_names_a_stopped_daemon_and_the_fix():
    from jobsafe_ops.scheduler.pueue import status_failure

    text = status_failure(DAEMON_DOWN_REPORT, 1)
    assert text.startswith("pueue daemon not running")
    assert "`pueued -d`" in text and "systemctl --user start pueued" in text
    assert "\n" not in text


def test_status_failure_keeps_the_causes_of_any_other_report():
    from jobsafe_ops.scheduler.pueue import status_failure

    report = "Error: \n   0: Failed to read state\n   1: Permission denied (os error 13)\n"
    assert status_failure(report, 1) == \
        "pueue status failed: Failed to read state; Permission denied (os error 13)"
    assert status_failure("sh: 1: pueue: not found", 127).startswith("pueue not found")
    full = status_failure("bash: line 5: /opt/pueue: No such file or directory", "rc 127")
    assert full.startswith("/opt/pueue not found on the host (exit 127); install it, or set "
                           "`pueue` in the host file") and "bash" not in full
    assert status_failure("", 3) == "pueue status failed: exit 3"
