"""The scheduler seam: PueueScheduler satisfies base.Scheduler, every verb is by group and
label (ids are resolved from the session's status read and stay inside the argv), the
refusals of the builders hold, and the verbs drive a real pueue daemon (the stand-in, or
real pueue when it is on PATH)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from jobsafe_ops import scheduler
from jobsafe_ops.errors import ConfigError
from jobsafe_ops.inventory import Host
from jobsafe_ops.scheduler import pueue as p
from jobsafe_ops.scheduler.base import PueueState, QueueState, Scheduler
from jobsafe_ops.scheduler.pueue import PueueScheduler
from tests.world import FAKE_PUEUE_DIR, detect_real_pueue


def mixed(fixtures: Path) -> PueueState:
    return p.parse_status((fixtures / "status-mixed.json").read_text())


def test_for_host_gives_the_pueue_scheduler_at_the_host_files_path() -> None:
    host = Host(name="h", ssh="h", project_dir="~/p", package="pkg",
                pueue="~/.local/bin/pueue")
    s = scheduler.for_host(host)
    assert isinstance(s, Scheduler) and isinstance(s, PueueScheduler) and s.name == "pueue"
    assert s.status("p1") == ["~/.local/bin/pueue", "status", "--json", "--group", "p1"]
    assert QueueState is PueueState


def test_verbs_are_the_builders(fixtures: Path) -> None:
    s = PueueScheduler("pueue")
    assert s.status() == p.status_argv("pueue")
    assert s.pause("p1") == p.pause_group_argv("pueue", "p1")
    assert s.resume("p1") == p.start_group_argv("pueue", "p1")
    assert s.parallel("p1", 3) == p.parallel_argv("pueue", "p1", 3)
    assert s.clean("p1", successful_only=True) == p.clean_argv("pueue", "p1", True)
    assert s.add("run x", group="p1", label="x", workdir="/w") == p.add_argv(
        "pueue", "run x", group="p1", label="x", workdir="/w")
    text = (fixtures / "status-mixed.json").read_text()
    assert s.parse_status(text) == p.parse_status(text)


def test_the_builders_refusals_hold_through_the_seam() -> None:
    s = PueueScheduler()
    with pytest.raises(ConfigError, match="unlimited"):
        s.parallel("p1", 0)
    with pytest.raises(ConfigError, match="scoped"):
        s.clean("")
    with pytest.raises(ConfigError, match="absolute"):
        s.add("true", group="p1", label="a", workdir="~/w")


def test_labels_are_resolved_in_the_session_state(fixtures: Path) -> None:
    s, state = PueueScheduler(), mixed(fixtures)
    # BTCUSDT@500 is task 3 (running), SOLUSDT@500 task 5 (queued): ids only inside argv
    assert s.kill(state, "p1", ["BTCUSDT@500", "SOLUSDT@500"], "SIGTERM") == \
        ["pueue", "kill", "--signal", "SIGTERM", "3", "5"]
    with pytest.raises(ConfigError, match="no queued or running job labelled 'BTCUSDT@250'"):
        s.kill(state, "p1", ["BTCUSDT@250"])  # done: nothing to stop
    with pytest.raises(ConfigError, match="in group 'default'"):
        s.kill(state, "default", ["BTCUSDT@500"])  # the label lives in p1, not default
    assert s.log(state, "p1", ["ETHUSDT@250"], 5) == ["pueue", "log", "--json", "--lines",
                                                      "5", "1"]
    with pytest.raises(ConfigError, match="no job labelled 'nope'"):
        s.log(state, "p1", ["nope"])
    logs = s.parse_log(state, "p1", (fixtures / "log-json-task1-failed.json").read_text())
    assert logs == {"ETHUSDT@250": "failing"}
    assert s.add("post", group="p1", label="post", workdir="/w", after=["BTCUSDT@500"],
                 state=state)[-4:] == ["--after", "3", "--", "post"]
    with pytest.raises(ConfigError, match="'gone' is not in pueue"):
        s.add("post", group="p1", label="post", workdir="/w", after=["gone"], state=state)


def test_log_and_kill_pick_the_newest_attempt_of_a_label(fixtures: Path) -> None:
    # after `pueue restart 1` (not in place) ETHUSDT@250 is task 1 (failed) and 13 (queued)
    state = p.parse_status((fixtures / "restart-after.json").read_text())
    s = PueueScheduler()
    assert s.log(state, "p1", ["ETHUSDT@250"])[-1] == "13"
    assert s.kill(state, "p1", ["ETHUSDT@250"])[-1] == "13"


# ---- the verbs against a real daemon --------------------------------------------------------

class Daemon:
    def __init__(self, root: Path) -> None:
        bindir = detect_real_pueue() or FAKE_PUEUE_DIR
        runtime = root / "rt"
        runtime.mkdir(parents=True)
        cfg = root / "pueue.yml"
        cfg.write_text("shared:\n"
                       f"  pueue_directory: {root / 'data'}\n"
                       f"  runtime_directory: {runtime}\n"
                       "  use_unix_socket: true\n"
                       f"  unix_socket_path: {runtime / 'pueue.socket'}\n"
                       f"  pid_path: {runtime / 'pueue.pid'}\n"
                       "client: {}\ndaemon: {}\nprofiles: {}\n")
        self.env = {"HOME": str(root), "LANG": "C.UTF-8", "PUEUE_CONFIG_PATH": str(cfg),
                    "PATH": f"{bindir}:{Path(sys.executable).parent}:/usr/bin:/bin"}
        subprocess.run(["pueued", "-d"], env=self.env, check=True, capture_output=True)
        self.wait(lambda: self.run(["pueue", "status"]).returncode == 0, "pueued answers")

    def run(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, env=self.env, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL)

    def ok(self, argv: list[str]) -> str:
        proc = self.run(argv)
        assert proc.returncode == 0, (argv, proc.stdout, proc.stderr)
        return proc.stdout

    @staticmethod
    def wait(check: Callable[[], bool], what: str, seconds: float = 15) -> None:
        deadline = time.monotonic() + seconds
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for: {what}")
            time.sleep(0.05)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = Daemon(tmp_path_factory.mktemp("seam"))
    try:
        yield d
    finally:
        d.run(["pueue", "shutdown"])


def test_the_verbs_drive_pueue_by_label(daemon: Daemon, tmp_path: Path) -> None:
    s: Scheduler = PueueScheduler("pueue")
    daemon.ok(p.group_add_argv("pueue", "seam", 1))
    daemon.ok(s.pause("seam"))
    work = str(tmp_path)

    def state() -> PueueState:
        return s.parse_status(daemon.ok(s.status("seam")))

    daemon.ok(s.add("echo first; exit 3", group="seam", label="first", workdir=work))
    daemon.ok(s.add("echo then", group="seam", label="then", workdir=work,
                    after=["first"], state=state()))
    daemon.ok(s.add("sleep 30", group="seam", label="long", workdir=work))
    now = state()
    assert {t.label: now.state_of(t) for t in now.tasks} == {
        "first": "queued", "then": "queued", "long": "queued"}
    daemon.ok(s.parallel("seam", 2))
    daemon.ok(s.resume("seam"))
    daemon.wait(lambda: {t.label: t.state for t in state().tasks}.get("long") == "running"
                and state().by_label()["first"][0].is_failed, "first fails, long runs")
    daemon.ok(s.pause("seam"))
    now = state()
    daemon.ok(s.kill(now, "seam", ["long"]))
    daemon.wait(lambda: state().by_label()["long"][0].state == "killed", "long killed")
    now = state()
    # `then` waits behind a failed dependency (DependencyFailed, or blocked while paused)
    assert now.state_of(now.by_label()["then"][0]) in ("dependency_failed", "blocked")
    logs = s.parse_log(now, "seam", daemon.ok(s.log(now, "seam", ["first"], 5)))
    assert list(logs) == ["first"] and logs["first"].strip() == "first"
    daemon.ok(s.resume("seam"))
    daemon.wait(lambda: all(t.is_done for t in state().tasks), "every task done")
    daemon.ok(s.clean("seam"))
    assert state().tasks == ()
