"""--notify / --notify-command against real receivers on loopback: an HTTP server in the
test receiving apprise's json:// POSTs, and a local script writing its stdin to a file;
monitor --until-done over a batch with one failing job, autoscale --loop and a real deploy
on the world's sshd hosts. A receiver that is not there (a closed port) costs one stderr
line per message and never the exit code."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests import cli
from tests.cli import inv
from tests.e2e.deploy_helpers import add as deploy_add
from tests.e2e.deploy_helpers import deploy, deploy_host, fresh, state_of, step, wait_for
from tests.e2e.pueue_setup import add, settle
from tests.jsonout import envelope_of, lines_of
from tests.world import SimHost, World

ENV = {"JOBSAFE_CONNECT_ATTEMPTS": "1", "JOBSAFE_CONNECT_TIMEOUT": "3",
       "JOBSAFE_NOTIFY_TIMEOUT": "20"}


class Receiver:
    """json://127.0.0.1:PORT/hook: every POSTed JSON document, in order."""

    def __init__(self) -> None:
        got: list[dict[str, Any]] = []
        self.got = got

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                got.append({"path": self.path, **json.loads(body)})
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"json://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    try:
        yield r
    finally:
        r.close()


@pytest.fixture
def script(tmp_path: Path) -> tuple[Path, Path]:
    """A --notify-command writing argc, $JOBSAFE_NOTIFY_VERDICT and its stdin, one record
    per message (separated by a line of ====)."""
    out = tmp_path / "messages.txt"
    path = tmp_path / "page-me"
    path.write_text(f'#!/bin/sh\n{{ echo "argc=$# verdict=$JOBSAFE_NOTIFY_VERDICT"; cat; '
                    f'echo ====; }} >> {out}\n')
    path.chmod(0o755)
    return path, out


def ends(got: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(the alarm messages, the one end message, which comes last). A machine under load
    may swap during a test: its alarm then joins, so tests look for their own alarm."""
    *alarms, end = got
    assert all(" ALARM " in a["title"] for a in alarms) and " ALARM " not in end["title"], got
    return alarms, end


def records(out: Path) -> list[str]:
    return [r.strip() for r in out.read_text().split("====") if r.strip()] \
        if out.exists() else []


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(world: World, *args: str, timeout: float = 120) -> Any:
    return inv(world, *args, env=ENV, timeout=timeout)


@pytest.fixture(scope="module")
def n1(world: World) -> SimHost:
    host = world.add_host("n1", project=False)
    host.run("pueue group add gn --parallel 2", check=True)
    add(host, "gn", "ok@1", "true")
    add(host, "gn", "ok@2", "echo fine")
    add(host, "gn", "bad@1", "echo 'GH_TOKEN=ghp_A1b2C3d4E5f6G7h8I9j0K1l2M3n4' >&2; exit 7")
    settle(host, "gn")
    return host


# ---- monitor --until-done ------------------------------------------------------------------

def test_monitor_sends_one_failure_alarm_and_one_end_message(
        world: World, n1: SimHost, receiver: Receiver, script: tuple[Path, Path]) -> None:
    command, out = script
    proc = run(world, "monitor", "--host", "n1", "--group", "gn", "--until-done", "--interval",
               "1", "--json", "--notify", receiver.url, "--notify-command", str(command))
    assert proc.returncode == 1, proc.stderr  # a failed job: the verdict, notify or not
    assert "notify:" not in proc.stderr
    [alarm], end = ends(receiver.got)  # one poll (settled): one alarm message, then the end
    assert alarm["path"] == "/hook" and alarm["type"] == "failure"
    assert alarm["title"].startswith("jobsafe monitor: ALARM failures")
    assert "alarm: n1: 1 failure in group gn (e.g. bad@1 exit 7)" in alarm["message"]
    assert end["title"] == "jobsafe monitor: failed (exit 1) on n1 group gn"
    body = end["message"].splitlines()
    assert "verdict: failed (exit 1: some failed)" in body
    assert "counts: done 2, failed 1, running 0, queued 0" in body
    assert "ghp_" not in alarm["message"] + end["message"]  # the job's log is not sent
    # the command got the same two messages, on stdin, nothing in argv
    sent = records(out)
    assert [r.splitlines()[0] for r in sent] == ["argc=0 verdict=alarm",
                                                 "argc=0 verdict=failed"]
    assert sent[1].splitlines()[1] == end["title"]
    doc = envelope_of(proc.stdout)
    assert [(n["kind"], n["ok"]) for n in doc["notifications"]] == [
        ("alarm", True), ("alarm", True), ("end", True), ("end", True)]
    assert {n["to"] for n in doc["notifications"]} == {receiver.url, "command page-me"}


def test_a_receiver_that_is_not_there_is_one_line_per_message_and_the_same_exit_code(
        world: World, n1: SimHost) -> None:
    plain = run(world, "monitor", "--host", "n1", "--group", "gn", "--until-done",
                "--interval", "1")
    dead = f"json://127.0.0.1:{closed_port()}/hook"
    proc = run(world, "monitor", "--host", "n1", "--group", "gn", "--until-done",
               "--interval", "1", "--notify", dead)
    assert proc.returncode == plain.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 2 and all(x.startswith(f"notify: {dead}: ") for x in lines), lines


# ---- autoscale --loop ----------------------------------------------------------------------

IDLE = ["--up-load", "100000", "--up-mem", "99", "--down-load", "100000", "--down-mem", "100"]


def test_autoscale_loop_sends_a_state_file_alarm_once_and_an_end_message(
        world: World, receiver: Receiver) -> None:
    # alarm at a few bytes: pueue's state file is over it on every tick
    host = world.add_host("n2", project=False, groups={"p1": {"parallel": 1, "min": 1,
                                                               "max": 2}},
                          host_keys={"state_warn_mb": 0.00001, "state_alarm_mb": 0.00002})
    host.run("pueue group add p1 --parallel 1", check=True)
    proc = run(world, "autoscale", "--host", "n2", "--loop", "--ticks", "3", "--interval",
               "0.2", "--dry", "--json", "--notify", receiver.url, *IDLE)
    assert proc.returncode == 0, proc.stderr
    assert len(lines_of(proc.stdout)) == 3  # the NDJSON stream is unchanged
    alarms, end = ends(receiver.got)
    [alarm] = [a for a in alarms if "state file" in a["title"]]  # three ticks over it: once
    assert "n2: pueue state file" in alarm["message"]
    assert "over its alarm 2e-05 MB" in alarm["message"]
    assert end["title"] == "jobsafe autoscale: ok (exit 0) on n2"
    assert "counts: ticks 3, changes 0, hosts ok 1, hosts failed 0" in end["message"]
    assert "alarms during the run: n2: pueue state file" in end["message"]


def test_autoscale_loop_stopped_by_ctrl_c_says_so(world: World, receiver: Receiver) -> None:
    host = world.add_host("n4", project=False, groups={"p1": {"parallel": 1, "min": 1,
                                                               "max": 2}})
    host.run("pueue group add p1 --parallel 1", check=True)
    proc = subprocess.Popen(cli.argv("autoscale", "--host", "n4", "--loop", "--interval", "30",
                                     "--dry", "--json", "--notify", receiver.url, *IDLE),
                            env=world.env(**ENV), cwd=world.root, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        assert json.loads(proc.stdout.readline())["exit_code"] == 0  # the first tick is done
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    _, end = ends(receiver.got)
    assert end["title"] == "jobsafe autoscale: interrupted (exit 130) on n4"
    assert "counts: ticks 1, changes 0, hosts ok 1, hosts failed 0" in end["message"]


# ---- deploy ---------------------------------------------------------------------------------

def test_deploy_sends_the_alarm_of_its_monitor_window_and_its_verdict(
        world: World, receiver: Receiver) -> None:
    host = deploy_host(world, "n3")
    fresh(host)
    deploy_add(host, "D@oom", "exit 137")  # OOM-killed: re-added by the deploy, fails again
    wait_for(lambda: state_of(host, "D@oom") == "Failed", what="the OOM failure")
    r, rep = deploy(world, host, "--watch", "10", "--notify", receiver.url)
    assert r.returncode == 1, r.stderr
    assert "1 failed" in step(rep, "monitor")["detail"]
    [alarm], end = ends(receiver.got)  # the monitor window's alarms: one message
    assert alarm["title"].startswith("jobsafe deploy: ALARM failures")
    assert "1 re-added task failed: p1/D@oom-retry-1" in alarm["message"]
    assert end["title"] == "jobsafe deploy: attention (exit 1) on n3"
    assert rep["verdict"] in end["message"].splitlines()
    assert "counts: hosts ok 0, hosts failed 1" in end["message"]
    doc = envelope_of(r.stdout)
    assert [(n["kind"], n["ok"]) for n in doc["notifications"]] == [("alarm", True),
                                                                    ("end", True)]
