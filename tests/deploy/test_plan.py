"""jobsafe_ops.deploy.plan (actions, the executor) and testing.fake_remote (argv dispatch):
the two halves of "the dry run is the plan"."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jobsafe_ops import journal
from jobsafe_ops.deploy import lock as locking
from jobsafe_ops.deploy import steps as d
from jobsafe_ops.deploy.plan import Action, Executor, Later, script, wrapped
from jobsafe_ops.inventory import Host
from jobsafe_ops.shell import lean_env_line
from jobsafe_ops.testing.fake_remote import FakeRemote, result
from tests.deploy.test_deploy import BigBlack, ctx_for

HOST = Host(name="h", ssh="x", project_dir="/p", package="x", path=())


def test_an_action_with_a_later_value_matches_only_its_own_lines() -> None:
    reset = Action(("git", "-C", "/my project", "reset", "--hard", Later("origin/main after "
                                                                        "the fetch")),
                   "move", suffix=" && git rev-parse HEAD", when="if it moved")
    assert reset.line == ("git -C '/my project' reset --hard '<origin/main after the fetch>'"
                          " && git rev-parse HEAD")
    sha = "c" * 40
    assert reset.matches(reset.bind(sha).line)
    assert not reset.matches(f"git -C '/my project' reset --hard {sha}")  # suffix missing
    assert not reset.matches(f"git -C /other reset --hard {sha} && git rev-parse HEAD")
    assert "# move; only if it moved" in reset.text()
    with pytest.raises(ValueError):
        reset.bind(sha, sha)
    plain = Action(("rm", "-f", "--", "a b"), "why")
    assert plain.matches("rm -f -- 'a b'") and not plain.matches("rm -f -- a b")


def test_the_listing_is_one_line_whatever_a_label_holds() -> None:
    a = Action(("pueue", "kill", "3"), "stop p1/evil\nrm -rf ~", when="if\nstill running")
    assert "\n" not in a.text() and a.text().startswith("pueue kill 3  # stop p1/evil rm")


def test_wrapped_keeps_the_argv_of_the_call_inside_the_line() -> None:
    argv = ["pueue", "add", "--group", "p1", "--", "echo $HOME"]
    a = wrapped(lean_env_line(argv), argv, "re-add")
    assert a.line == lean_env_line(argv) and a.argv == tuple(argv)
    with pytest.raises(ValueError):
        wrapped("something else", argv, "re-add")


def test_the_executor_runs_through_the_remote_and_journals(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBSAFE_JOURNAL", str(tmp_path / "j.ndjson"))
    remote = FakeRemote(HOST).on(("pueue", "pause"), "", mutates=True) \
        .on(("pueue", "start"), result(stderr="no such group", exited=1), mutates=True)
    ex = Executor(remote, HOST.name, dry=False)
    pause = Action(("pueue", "pause", "--group", "p1"), "why", journal="group-pause",
                   fields=(("group", "p1"),))
    ex.run(pause)
    assert remote.argvs == [("pueue", "pause", "--group", "p1")] and ex.done == [pause]
    [entry] = journal.entries(action="group-pause")
    assert entry["group"] == "p1" and entry["host"] == "h"
    from jobsafe_ops.errors import RemoteError

    with pytest.raises(RemoteError, match="no such group"):  # Remote._checked judges it
        ex.run(Action(("pueue", "start", "--group", "p9"), "why"))
    with pytest.raises(ValueError, match="values for"):
        ex.run(Action(("git", "reset", Later("x")), "why"))
    listing = Executor(remote, HOST.name, dry=True)
    listing.show([script("echo RELEASED", "release", at_end=True), pause])
    assert [a.why for a in listing.plan] == ["why", "release"]  # at_end comes last
    with pytest.raises(AssertionError):
        listing.run(pause)


def test_fake_remote_answers_by_argv_never_by_a_substring() -> None:
    remote = FakeRemote(HOST).on(("pueue", "status"), "{}").on_script("@@nproc", "probe")
    # an argv whose words hold the script marker is still an argv command
    with pytest.raises(AssertionError, match="no answer"):
        remote.run(["echo", "@@nproc"])
    assert remote.run("echo @@nproc; nproc").stdout == "probe"
    assert remote.run(["pueue", "status", "--json"]).stdout == "{}"
    # a shell line wrapping one call is answered by the argv passed alongside
    line = lean_env_line(["pueue", "status"])
    assert remote.run(line, argv=["pueue", "status"]).stdout == "{}"
    with pytest.raises(AssertionError, match="no answer"):
        remote.run(line)  # the same line without its argv: a script, no marker
    assert [s.argv for s in remote.sent][-2:] == [("pueue", "status"), None]
    assert remote.round_trips == len(remote.sent)


def test_a_stale_lock_is_broken_on_request_as_planned(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBSAFE_JOURNAL", str(tmp_path / "j.ndjson"))
    ghost = locking.LockOwner("bob@elsewhere", 1, "elsewhere", "2026-01-01T00:00:00+00:00",
                              60.0, "t0k")
    held = f"HELD\n{ghost.to_json()}\n10000\n100\n"  # older than its TTL
    owner = locking.this_process(600)
    opts = {"on_running": "keep", "watch": 0, "break_lock": True}
    dry = d.run_deploy(ctx_for(BigBlack(lock=held), owner, dry=True, **opts))
    assert dry.exit_code == 0 and "after breaking" in dry.steps[1].detail
    remote = BigBlack(lock=held).on_script("echo BROKEN", "BROKEN\n", mutates=True)
    run = d.run_deploy(ctx_for(remote, owner, **opts))
    assert run.exit_code == 0 and "broke the lock of bob@elsewhere" in run.steps[1].detail
    sent = [s.command for s in remote.mutations]
    assert "echo BROKEN" in sent[0] and "echo ACQUIRED" in sent[1]
    assert [a.line for a in dry.actions][:2] == sent[:2]  # the very lock it looked at
    [entry] = journal.entries(action="lock-break")
    assert entry["owner"]["operator"] == "bob@elsewhere" and "TTL" in entry["stale"]
    assert json.dumps(run.to_dict())  # the report stays JSON


def test_a_lock_being_taken_at_audit_time_is_left_to_the_mkdir(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Held without an owner file yet (an acquire between its mkdir and its owner write):
    not refused from the audit's look; the mkdir attempt decides and names the holder."""
    monkeypatch.setenv("JOBSAFE_JOURNAL", str(tmp_path / "j.ndjson"))
    taking = "HELD\n\n100\n100\n"
    opts = {"on_running": "keep", "watch": 0}
    assert d.run_deploy(ctx_for(BigBlack(lock=taking), **opts)).exit_code == 0  # it went away
    theirs = locking.this_process()
    remote = BigBlack(lock=taking).on_script(
        "echo ACQUIRED", f"HELD\n{theirs.to_json()}\n100\n100\n", mutates=True)
    report = d.run_deploy(ctx_for(remote, **opts))
    assert report.exit_code == 3 and f"locked by {theirs.operator}" in report.verdict
    assert [s for s in remote.mutations if "echo RELEASED" in s.command] == []  # not ours


@pytest.mark.parametrize("policy", ["wait", "kill", "keep"])
def test_a_policy_with_nothing_running_sends_nothing_for_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, policy: str) -> None:
    monkeypatch.setenv("JOBSAFE_JOURNAL", str(tmp_path / "j.ndjson"))
    remote = BigBlack()
    for t in remote.status["tasks"].values():  # everything finished before the deploy
        kind = next(iter(t["status"]))
        if kind in ("Running", "Paused"):
            s = t["status"][kind]
            t["status"] = {"Done": {**s, "end": s["start"], "result": "Success"}}
    report = d.run_deploy(ctx_for(remote, on_running=policy, watch=0))
    assert report.exit_code == 0, report.verdict
    assert report.steps[2].detail == "nothing running: no policy needed"
    assert not any(s.argv and s.argv[1] in ("kill", "pause") for s in remote.mutations)
