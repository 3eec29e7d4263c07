"""--notify / --notify-command: the messages (verdict, counts, alarms), the once-per-alarm
rule, redaction of secrets, masking of notify URLs, checking the flags before any SSH, and
the sender's failure rule (one stderr line, the outcome unchanged)."""

from __future__ import annotations

import os
import re
import socket
import stat
from dataclasses import replace
from pathlib import Path

import pytest

from jobsafe_ops.deploy.cli import deploy_alarms
from jobsafe_ops.deploy.plan import StepResult
from jobsafe_ops.deploy.steps import DeployReport
from jobsafe_ops.errors import ConfigError, RemoteError
from jobsafe_ops.facts.snapshot import Health
from jobsafe_ops.monitor.board import HostResult
from jobsafe_ops.monitor.watch import end_of
from jobsafe_ops.notifier import Notifier, notifier_for
from jobsafe_ops.notify import (
    FAILURES,
    STATE_FILE,
    SWAPPING,
    Alarm,
    AlarmGate,
    alarm_message,
    end_message,
    health_alarms,
    mask_url,
    mask_urls_in,
    snapshot_alarms,
    snapshot_counts,
)
from jobsafe_ops.ops.autoscale import PostCheck, Readings, Tick, tick_alarms
from tests.cli import inv
from tests.playbook_data import host
from tests.status_data import NOW, QUEUED, RUNNING, done, snap_of, state, task

MB = 1024**2
TOKEN = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when the block ends


# ---- messages ---------------------------------------------------------------------------

def test_the_end_message_has_command_hosts_group_verdict_counts_and_exit_code() -> None:
    data = state(task(1, "ok@1", done("Success")), task(2, "bad@1", done({"Failed": 7})),
                 task(3, "run@1", RUNNING), task(4, "next@1", QUEUED))
    board = [HostResult("h", snap_of(data))]
    msg = end_of("monitor --until-done --host h --group p1", board, "p1")
    assert msg.kind == "end" and msg.verdict == "failed" and msg.level == "failure"
    assert msg.title == "jobsafe monitor: failed (exit 1) on h group p1"
    lines = msg.body.splitlines()
    assert "command: jobsafe monitor --until-done --host h --group p1" in lines
    assert "host(s): h" in lines and "group: p1" in lines
    assert "verdict: failed (exit 1: some failed)" in lines
    assert "counts: done 1, failed 1, running 1, queued 1" in lines


def test_counts_add_up_over_hosts_and_an_unread_host_is_named() -> None:
    a = snap_of(state(task(1, "x", done("Success"))), host="a")
    b = snap_of(state(task(1, "y", done("Success")), task(2, "z", done("Success"))), host="b")
    assert snapshot_counts([a, b]) == {"done": 3, "failed": 0, "running": 0, "queued": 0}
    board = [HostResult("a", a), HostResult("c", error=RemoteError("c: connection refused"))]
    msg = end_of("monitor", board, "p1")
    assert msg.verdict == "partial" and "exit 5" in msg.title
    assert "c: c: connection refused" in msg.body.splitlines()


def test_a_done_run_is_a_success_message() -> None:
    msg = end_of("monitor", [HostResult("h", snap_of(state(task(1, "x", done("Success")))))],
                 "p1")
    assert (msg.verdict, msg.level) == ("done", "success") and "exit 0" in msg.title


def test_failures_swapping_and_the_state_file_alarm_come_from_the_verdicts() -> None:
    h = host(state_alarm_mb=500.0, state_warn_mb=100.0)
    snap = snap_of(state(task(1, "bad@1", done({"Failed": 7})), task(2, "bad@2",
                                                                     done({"Failed": 1})),
                         task(3, "bad@3", done({"Failed": 1}))))
    hot = replace(snap.health, swap_in=12, swap_out=3, state_file="/s/state.json",
                  state_size=812 * MB)
    alarms = snapshot_alarms(replace(snap, health=hot), h)
    assert [a.kind for a in alarms] == [FAILURES, SWAPPING, STATE_FILE]
    assert re.fullmatch(r"3 failures in group p1 \(e\.g\. bad@[123] exit [17]\)",
                        alarms[0].text), alarms[0].text
    assert alarms[1].text == "host swapping (si=12 so=3)"
    assert alarms[2].text == "pueue state file 812.0 MB over its alarm 500 MB"
    # a warning is not an alarm, nor is a healthy host
    calm = Health(swap_in=0, swap_out=0, state_size=200 * MB, state_file="/s")
    assert health_alarms("h", calm, h) == []
    assert snapshot_alarms(snap_of(state(task(1, "a", done("Success")))), h) == []


def test_an_alarm_is_sent_once_and_again_only_after_it_cleared() -> None:
    gate = AlarmGate()
    three = Alarm(FAILURES, "a", "3 failures")
    swap = Alarm(SWAPPING, "a", "host swapping")
    assert gate.update([three], ["a"]) == [three]
    assert gate.update([Alarm(FAILURES, "a", "5 failures")], ["a"]) == []  # still raised
    assert gate.update([three, swap], ["a"]) == [swap]
    assert gate.update([], []) == []  # host not read this poll: its alarms stay raised
    assert gate.update([three, swap], ["a"]) == []
    assert gate.update([three], ["a"]) == []  # swapping cleared ...
    assert gate.update([three, swap], ["a"]) == [swap]  # ... and came back: sent again
    other = Alarm(SWAPPING, "b", "host swapping")
    assert gate.update([other], ["b"]) == [other]  # per host
    assert [a.text for a in gate.seen.values()] == ["3 failures", "host swapping",
                                                    "host swapping"]


def test_no_secret_reaches_a_message() -> None:
    leaky = RemoteError(f"h: `GH_TOKEN={TOKEN} python run.py` failed: API_KEY=s3cr3tvalue9")
    board = [HostResult("h", error=leaky), HostResult("g", snap_of(state(
        task(1, f"job-{TOKEN}", done({"Failed": 1}))), host="g"))]
    alarms = [a for r in board if r.snapshot for a in snapshot_alarms(r.snapshot, host())]
    for msg in (end_of("monitor", board, "p1", alarms), alarm_message("monitor", alarms)):
        text = msg.title + msg.body
        assert TOKEN not in text and "s3cr3tvalue9" not in text, text
        assert "GH_TOKEN=***" in msg.body or msg.kind == "alarm"


# ---- deploy and autoscale alarms --------------------------------------------------------

def _report(samples: list[dict[str, object]]) -> DeployReport:
    return DeployReport("h", False, (StepResult("monitor", "failed", data={"samples": samples}),),
                        1, "h: ATTENTION (exit 1): monitor FAILED")


def test_deploy_alarms_come_from_its_monitor_window() -> None:
    sample = {"at": 1.0, "load_ok": True, "swap_ok": True, "load": "0.1", "swap": "si=0 so=0",
              "tasks": {"p1/a": "running"}, "paused_groups": []}
    assert deploy_alarms(_report([sample])) == []
    bad = {**sample, "swap_ok": False, "swap": "si=9 so=0", "tasks": {"p1/a": "failed"}}
    got = deploy_alarms(_report([sample, bad]))
    assert [(a.kind, a.text) for a in got] == [
        (FAILURES, "1 re-added task failed: p1/a"),
        (SWAPPING, "host swapping (si=9 so=0) in the monitor window")]


def test_autoscale_tick_alarms() -> None:
    h = host()
    readings = Readings(4, 1.0, 100, 50, 0, 0)
    check = PostCheck(False, (), 9.0, 3.6, 0, 0, ("load 9.00 >= 0.9 x 4 = 3.6",))
    tick = Tick("h", NOW, readings, (), False, check, {}, Health(swap_in=4, swap_out=0))
    assert [a.text for a in tick_alarms(h, tick)] == [
        "post-bump check failed: load 9.00 >= 0.9 x 4 = 3.6", "host swapping (si=4 so=0)"]
    [failed] = tick_alarms(h, RemoteError("h: unreachable"))
    assert failed.text == "tick failed (exit 4): h: unreachable"


# ---- URLs: masked, checked ---------------------------------------------------------------

@pytest.mark.parametrize(("url", "shown"), [
    ("json://127.0.0.1:8080/hook", "json://127.0.0.1:8080/hook"),
    ("ntfy://jobsafe-alerts-9f3k2", "ntfy://j***2"),
    ("slack://T01ABCDEF/B02GHIJKL/xoxbsecrettoken123", "slack://T***F/B***L/x***3"),
    ("mailto://ops:hunter2pass@mail.example.com", "mailto://***@mail.example.com"),
    ("json://host.example.com/x?token=abc#frag", "json://host.example.com/x?***"),
    ("xyz", "xyz"),
])
def test_mask_url(url: str, shown: str) -> None:
    assert mask_url(url) == shown


def test_urls_inside_a_reason_are_masked() -> None:
    reason = "Failed to send to https://hooks.example.com/services/T0/B0/webhooksecret99: 404"
    assert mask_urls_in(reason) == \
        "Failed to send to https://hooks.example.com/s***s/T0/B0/w***9: 404"


def test_a_url_apprise_cannot_parse_is_bad_input_with_the_url_masked() -> None:
    with pytest.raises(ConfigError) as exc:
        Notifier(["xyz"])
    assert str(exc.value) == ("--notify 'xyz': not an apprise URL (e.g. ntfy://topic, "
                              "json://host/path); see apprise docs")
    with pytest.raises(ConfigError) as exc:
        Notifier(["https//hooks.example.com/services/T0/B0/supersecretwebhook"])
    assert "supersecretwebhook" not in str(exc.value)
    assert notifier_for(None, None) is None and notifier_for([], None) is None


def test_a_notify_command_must_be_a_program() -> None:
    for bad, says in (("", "is empty"), ("'unclosed", "No closing quotation"),
                      ("/nonexistent/page-me", "not found")):
        with pytest.raises(ConfigError, match=says):
            Notifier([], bad)


# ---- sending ------------------------------------------------------------------------------

def test_a_failed_send_is_one_stderr_line_and_never_raises(
        capsys: pytest.CaptureFixture[str]) -> None:
    port = closed_port()
    n = Notifier([f"json://127.0.0.1:{port}/hook"], timeout=10)
    [d] = n.send(end_message("monitor", ["h"], "done", 0, {"done": 1}))
    assert not d.ok and d.error and d.to == f"json://127.0.0.1:{port}/hook"
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"notify: json://127.0.0.1:{port}/hook: ")
    assert n.to_list() == [{"to": d.to, "kind": "end", "ok": False, "error": d.error}]


def test_a_command_gets_the_message_on_stdin_and_in_env_never_in_argv(tmp_path: Path) -> None:
    out = tmp_path / "got"
    script = tmp_path / "page-me"
    script.write_text(f'#!/bin/sh\n{{ printf "%s|" "$#" "$JOBSAFE_NOTIFY_VERDICT" '
                      f'"$JOBSAFE_NOTIFY_TITLE"; cat; }} > {out}\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    n = Notifier([], f"{script}", timeout=10)
    msg = end_message("monitor", ["h"], "failed", 1, {"done": 0, "failed": 1}, group="p1")
    [d] = n.send(msg)
    assert d.ok and d.to == "command page-me"
    argc, verdict, title, stdin = out.read_text().split("|", 3)
    assert (argc, verdict, title) == ("0", "failed", msg.title)
    assert stdin == f"{msg.title}\n\n{msg.body}\n"


def test_a_failing_command_is_reported_with_its_exit_code(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    script = tmp_path / "broken"
    script.write_text("#!/bin/sh\necho 'no route' >&2\nexit 3\n")
    script.chmod(0o755)
    [d] = Notifier([], str(script), timeout=10).send(end_message("x", ["h"], "ok", 0, {}))
    assert (d.ok, d.error) == (False, "exit 3: no route")
    assert capsys.readouterr().err.strip() == "notify: command broken: exit 3: no route"


# ---- the flags ------------------------------------------------------------------------------

HOST = 'ssh = "nobody@127.0.0.1"\nproject_dir = "~/project"\npackage = "mypkg"\n' \
       '[groups.p1]\nparallel = 2\nmin = 1\nmax = 4\n'


@pytest.mark.parametrize(("argv", "says"), [
    (["monitor", "--host", "h", "--group", "p1", "--until-done", "--notify", "xyz"],
     "error: --notify 'xyz': not an apprise URL"),
    (["monitor", "--host", "h", "--group", "p1", "--once", "--notify", "json://127.0.0.1/x"],
     "error: --notify/--notify-command need --until-done"),
    (["autoscale", "--host", "h", "--notify-command", "true"],
     "error: --notify/--notify-command need --loop"),
    (["deploy", "--host", "h", "--notify", "json://127.0.0.1/x", "--notify", "bogus"],
     "error: --notify 'bogus': not an apprise URL"),
])
def test_bad_notify_flags_exit_2_with_one_line_before_any_ssh(
        tmp_path: Path, argv: list[str], says: str) -> None:
    (tmp_path / "h.toml").write_text(HOST)
    proc = inv(None, *argv, "--inventory", str(tmp_path), timeout=60,
               env={"PATH": os.environ["PATH"], "JOBSAFE_CONNECT_ATTEMPTS": "1"})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith(says), line


def test_apprise_is_imported_only_when_a_notify_url_is_given() -> None:
    import subprocess
    import sys

    code = ("import sys\n"
            "import jobsafe_ops.tasks, jobsafe_ops.monitor.watch, jobsafe_ops.deploy.cli\n"
            "import jobsafe_ops.ops.autoscale, jobsafe_ops.notifier\n"
            "from jobsafe_ops.notifier import notifier_for\n"
            "notifier_for([], None)\n"
            "assert 'apprise' not in sys.modules, 'apprise imported without --notify'\n"
            "notifier_for(['json://127.0.0.1/x'], None)\n"
            "assert 'apprise' in sys.modules\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
