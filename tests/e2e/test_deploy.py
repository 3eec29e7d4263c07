"""`inv deploy` / `inv retry-failed` against real sshd hosts on loopback.

Hosts: alpha (editable install) for the protocol and the policies; beta (editable, with a
declared checkpoint pattern) for kill and for the crash-at-every-step convergence; gamma
(wheel install) for AP-5 and the upgrade through a real package index (pypiserver) on
loopback. Every test resets pueue on its host first; the git origin is shared, so tests
compare against `world.origin_head()` instead of fixed commits.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests import cli
from tests.cli import REPO, inv
from tests.e2e.deploy_helpers import (
    LOCK,
    add,
    deploy,
    fresh,
    head,
    lock_exists,
    make_wheel,
    quote,
    start_pypiserver,
    state_of,
    step,
    tasks,
    venv_version,
    wait_for,
    with_checkpoints,
)
from tests.e2e.deploy_helpers import deploy_host as _host
from tests.jsonout import result_of
from tests.world import LOOPBACK, SimHost, World

# ---- helpers (the shared ones: tests/e2e/deploy_helpers.py) ------------------------------

def journal(world: World, host: SimHost, action: str | None = None) -> list[dict[str, Any]]:
    path = world.laptop / ".local" / "state" / "jobsafe-ops" / "journal.ndjson"
    if not path.exists():
        return []
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [e for e in lines if e["host"] == host.name and (action is None or
                                                           e["action"] == action)]


def raw_task(host: SimHost, label: str) -> dict[str, Any]:
    return next(t for t in host.pueue_status()["tasks"].values() if t["label"] == label)


def started_at(text: str) -> datetime:
    """RFC 3339 with up to 9 fractional digits (pueue) -> aware datetime."""
    head, _, rest = text.replace("Z", "+00:00").partition(".")
    if not rest:
        return datetime.fromisoformat(head)
    digits = "".join(c for c in rest if c.isdigit())
    return datetime.fromisoformat(f"{head}.{digits[:6]}{rest[len(digits):]}")


# ---- hosts -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def alpha(world: World) -> SimHost:
    return _host(world, "alpha")


@pytest.fixture(scope="module")
def beta(world: World) -> SimHost:
    return _host(world, "beta")


@pytest.fixture(scope="module")
def gamma(world: World) -> SimHost:
    return _host(world, "gamma", editable=False)


# ---- the protocol ---------------------------------------------------------------------------

def test_happy_path_then_a_rerun_has_nothing_to_do(world: World, alpha: SimHost) -> None:
    fresh(alpha)
    flaky = "test -e ~/flag-{n} || {{ touch ~/flag-{n}; exit 137; }}"
    add(alpha, "H@oom", flaky.format(n="h1"))  # OOM-killed once, fine on retry
    add(alpha, "H@bug", "exit 1", group="p2")  # a persistent failure: never retried blindly
    wait_for(lambda: state_of(alpha, "H@oom") == "Failed" and
             state_of(alpha, "H@bug") == "Failed", what="failures")
    before = head(alpha)
    target = world.bump_version("1.1.0")
    world.commit_to_origin({"src/mypkg/core.py": "def fixed(x):\n    return x + 1  # FIX-42\n"},
                           "fix 42")
    target = world.origin_head()

    r, rep = deploy(world, alpha, "--expect-version", "1.1.0",
                    "--expect-code", "mypkg.core:fixed:FIX-42", "--watch", "2")
    assert [s["name"] for s in rep["steps"]] == ["audit", "lock", "decide", "pull", "verify",
                                                 "upgrade", "restart", "monitor"]
    assert all(s["seconds"] >= 0 for s in rep["steps"])
    assert rep["commit_before"] == before and rep["commit_after"] == target == head(alpha)
    assert step(rep, "verify")["data"]["editable"] is True
    assert step(rep, "upgrade")["status"] == "skipped"  # AP-5: the pull was the upgrade
    readd = step(rep, "restart")["data"]["re_added"]
    assert [(x["label"], x["from"]) for x in readd] == [("H@oom-retry-1", "H@oom")]
    t = tasks(alpha)
    assert "H@bug-retry-1" not in t
    assert t["H@oom-retry-1"]["path"] == str(alpha.project_dir)  # same -w, absolute
    assert t["H@oom-retry-1"]["command"] == flaky.format(n="h1")
    mon = step(rep, "monitor")
    assert "1/1 re-added started, 0 failed" in mon["detail"]
    healthy = all(s["load_ok"] and s["swap_ok"] for s in mon["data"]["samples"])
    assert r.returncode == (0 if healthy else 1), r.stderr  # the shared machine may be busy
    assert rep["verdict"].startswith("alpha: OK" if healthy else "alpha: ATTENTION")
    assert not lock_exists(alpha)
    actions = [e["action"] for e in journal(world, alpha)]
    assert actions == ["reset", "re-add"]
    assert journal(world, alpha, "reset")[0]["after"] == target

    r, rep = deploy(world, alpha, "--watch", "0")
    assert r.returncode == 0, r.stderr
    assert "already at" in step(rep, "pull")["detail"]
    assert step(rep, "restart")["data"]["re_added"] == []
    assert [e["action"] for e in journal(world, alpha)] == ["reset", "re-add"]  # no mutation


def test_abort_is_the_default_without_a_tty(world: World, alpha: SimHost) -> None:
    fresh(alpha)
    add(alpha, "A@run", "sleep 30")
    wait_for(lambda: state_of(alpha, "A@run") == "Running", what="running")
    world.commit_to_origin({"NOTES": "abort\n"}, "abort test")
    before, journaled = head(alpha), len(journal(world, alpha))

    r, rep = deploy(world, alpha, "--watch", "0")
    assert r.returncode == 3
    assert "1 running: p1/A@run; nothing changed" in r.stderr + json.dumps(rep)
    assert head(alpha) == before and state_of(alpha, "A@run") == "Running"
    assert len(journal(world, alpha)) == journaled and not lock_exists(alpha)


def test_wait_then_deploy_and_wait_timeout_refuses(world: World, alpha: SimHost) -> None:
    fresh(alpha)
    add(alpha, "W@short", "sleep 1.5")
    wait_for(lambda: state_of(alpha, "W@short") == "Running", what="running")
    world.commit_to_origin({"NOTES": "wait\n"}, "wait test")
    r, rep = deploy(world, alpha, "--on-running", "wait", "--wait-timeout", "20", "--watch", "0")
    assert r.returncode == 0, r.stderr
    assert state_of(alpha, "W@short") == "Success"  # it finished on its own
    assert head(alpha) == world.origin_head()

    add(alpha, "W@long", "sleep 30")
    wait_for(lambda: state_of(alpha, "W@long") == "Running", what="running")
    world.commit_to_origin({"NOTES": "wait 2\n"}, "wait test 2")
    before = head(alpha)
    r, rep = deploy(world, alpha, "--on-running", "wait", "--wait-timeout", "1.5",
                    "--watch", "0")
    assert r.returncode == 3 and "still running after 1.5s: p1/W@long" in r.stderr
    assert head(alpha) == before and state_of(alpha, "W@long") == "Running"
    assert not lock_exists(alpha)


def test_keep_lets_running_tasks_finish_on_the_old_code(world: World, alpha: SimHost) -> None:
    fresh(alpha)
    task_id = add(alpha, "K@run", "sleep 30")
    wait_for(lambda: state_of(alpha, "K@run") == "Running", what="running")
    world.commit_to_origin({"NOTES": "keep\n"}, "keep test")
    r, rep = deploy(world, alpha, "--on-running", "keep", "--watch", "0")
    assert r.returncode == 0, r.stderr
    assert "finish on the OLD code: p1/K@run" in step(rep, "decide")["detail"]
    assert "kept running on the old code" in rep["verdict"]
    kept = tasks(alpha)["K@run"]
    assert (kept["state"], kept["id"]) == ("Running", task_id)  # untouched
    assert head(alpha) == world.origin_head()


def test_kill_records_kills_cleans_declared_checkpoints_and_readds(world: World,
                                                                   beta: SimHost) -> None:
    fresh(beta)
    with_checkpoints(world, beta, "~/ckpt/{label}.json")
    beta.run("mkdir -p ~/ckpt && touch ~/ckpt/KL@1.json ~/ckpt/KL@other.json "
             "~/ckpt/KL@2.json.bak", check=True)
    add(beta, "KL@1", "sleep 30")
    add(beta, "KL@q", "sleep 30", group="p2")
    add(beta, "KL@waiting", "sleep 30", group="p2")  # queued behind KL@q
    wait_for(lambda: state_of(beta, "KL@1") == "Running" and
             state_of(beta, "KL@q") == "Running", what="running")
    world.commit_to_origin({"NOTES": "kill\n"}, "kill test")

    r, rep = deploy(world, beta, "--on-running", "kill", "--watch", "0")
    assert r.returncode == 0, r.stderr
    t = tasks(beta)
    assert t["KL@1"]["state"] == "Killed" and t["KL@q"]["state"] == "Killed"
    assert t["KL@1-retry-1"]["state"] in ("Queued", "Running")
    assert t["KL@1-retry-1"]["command"] == "sleep 30"
    assert t["KL@1-retry-1"]["path"] == str(beta.project_dir)
    # the queued task did not start on the old code in the slot the kill freed: the kill
    # paused its group first, so it started only after the pull (or still waits)
    reset_at = started_at(journal(world, beta, "reset")[0]["time"])
    waiting = raw_task(beta, "KL@waiting")["status"]
    if "Queued" not in waiting:
        assert started_at(next(iter(waiting.values()))["start"]) > reset_at
    ck = beta.home / "ckpt"
    assert not (ck / "KL@1.json").exists()  # declared pattern, killed label: removed
    assert (ck / "KL@other.json").exists() and (ck / "KL@2.json.bak").exists()
    groups = beta.pueue_status()["groups"]
    assert groups["p1"]["status"] == groups["p2"]["status"] == "Running"  # resumed
    actions = [e["action"] for e in journal(world, beta)]
    assert actions[0] == "kill" and journal(world, beta)[0]["result"] == "recorded"
    recorded = {x["label"]: x for x in journal(world, beta)[0]["tasks"]}
    assert recorded["KL@1"]["workdir"] == str(beta.project_dir)
    assert recorded["KL@1"]["command"] == "sleep 30" and recorded["KL@1"]["group"] == "p1"
    assert actions.index("kill") < actions.index("group-pause") < actions.index(
        "checkpoint-remove") < actions.index("reset") < actions.index("re-add") < actions.index(
        "group-start")
    readd = {e["labels"][0] for e in journal(world, beta, "re-add")}
    assert readd == {"KL@1-retry-1", "KL@q-retry-1"}


KILLER = r"""
import os, signal, sys
from jobsafe_ops.deploy import steps as d
from jobsafe_ops.deploy.context import DeployContext, DeployOptions
from jobsafe_ops.inventory import inventory_dir, load_inventory
from jobsafe_ops.remote import session

host = load_inventory(inventory_dir())[sys.argv[1]]
opts = DeployOptions(on_running="kill", watch=0, kill_grace=3, break_lock=True)


def die(ctx):
    os.kill(os.getpid(), signal.SIGKILL)  # no finally, no release: a real crash


steps = []
for s in d.STEPS:
    steps.append(s)
    if s.__name__ == sys.argv[2]:
        steps.append(die)
with session(host) as remote:
    d.run_deploy(DeployContext(host=host, remote=remote, options=opts), steps)
"""


# audit, verify and (for an editable install) upgrade only read: a crash after them leaves
# the state of the step before, so these four cover every distinct state a crash can leave.
@pytest.mark.parametrize("crash_after", ["lock", "decide", "pull", "restart"])
def test_rerun_after_a_crash_at_each_step_converges(world: World, beta: SimHost,
                                                    crash_after: str) -> None:
    """Killed hard (SIGKILL: no finally, the lock stays) after a step, then rerun: every
    label ends up with exactly one live attempt (none lost, none duplicated), the groups
    the crashed run paused are running again, and the lock is free."""
    fresh(beta)
    with_checkpoints(world, beta, "~/ckpt/{label}.json")
    run_label, flaky_label = f"C{crash_after}@run", f"C{crash_after}@oom"
    add(beta, run_label, "sleep 30")
    add(beta, flaky_label, f"test -e ~/flag-{crash_after} || "
                           f"{{ touch ~/flag-{crash_after}; exit 137; }}", group="p2")
    wait_for(lambda: state_of(beta, run_label) == "Running" and
             state_of(beta, flaky_label) == "Failed", what="setup")
    world.commit_to_origin({"NOTES": f"crash {crash_after}\n"}, f"crash after {crash_after}")

    crashed = subprocess.run([sys.executable, "-c", KILLER, beta.name, crash_after],
                             env=world.env(), cwd=REPO, capture_output=True, text=True,
                             timeout=60)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    assert lock_exists(beta)  # left behind: the rerun must break it explicitly

    r, rep = deploy(world, beta, "--on-running", "kill", "--break-lock", "--watch", "0")
    assert r.returncode == 0, r.stdout + r.stderr
    t = tasks(beta)
    live = ("Queued", "Running", "Success")
    for base in (run_label, flaky_label):
        attempts = {label: x["state"] for label, x in t.items()
                    if label == base or label.startswith(f"{base}-retry-")}
        alive = [label for label, s in attempts.items() if s in live]
        assert len(alive) == 1, (crash_after, attempts)
    assert all(g["status"] == "Running" for g in beta.pueue_status()["groups"].values())
    assert head(beta) == world.origin_head() and not lock_exists(beta)


# ---- the lock ----------------------------------------------------------------------------

def test_two_concurrent_deploys_exactly_one_wins(world: World, alpha: SimHost) -> None:
    fresh(alpha)
    # The winner holds the lock while it waits for this task, which runs until the loser
    # has given up: however slowly either deploy starts, their lock attempts overlap.
    gate = alpha.home / "gate-L"
    gate.unlink(missing_ok=True)
    add(alpha, "L@busy", f"until test -e {gate}; do sleep 0.1; done")
    wait_for(lambda: state_of(alpha, "L@busy") == "Running", what="running")
    argv = [*cli.INV, "deploy", "--host", alpha.name, "--on-running", "wait",
            "--wait-timeout", "120", "--watch", "0"]
    with tempfile.TemporaryDirectory() as tmp:
        procs = []
        for i in range(2):
            with open(f"{tmp}/{i}.out", "w") as out, open(f"{tmp}/{i}.err", "w") as err:
                procs.append(subprocess.Popen(argv, env=world.env(), text=True, stdout=out,
                                              stderr=err, stdin=subprocess.DEVNULL))
        try:
            wait_for(lambda: any(p.poll() is not None for p in procs), timeout=90,
                     what="the loser to give up")
        finally:
            gate.touch()  # L@busy ends: the winner goes on
        for p in procs:
            p.wait(timeout=90)
        outs = [(Path(f"{tmp}/{i}.out").read_text(), Path(f"{tmp}/{i}.err").read_text())
                for i in range(2)]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 3], outs
    winner = next(p for p in procs if p.returncode == 0)
    loser_err = next(o[1] for p, o in zip(procs, outs, strict=True) if p.returncode == 3)
    assert "locked by " in loser_err
    assert f"(pid {winner.pid}, deploy) since 20" in " ".join(loser_err.split())
    assert not lock_exists(alpha)


def test_stale_lock_is_reported_and_only_broken_on_request(world: World, alpha: SimHost) -> None:
    fresh(alpha)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    owner = {"operator": "bob@laptop", "pid": gone.pid, "hostname": socket.gethostname(),
             "started": "2026-01-01T00:00:00+00:00", "ttl": 3600.0, "token": "x",
             "command": "deploy", "proc_start": ""}
    alpha.run(f"mkdir -p ~/{LOCK} && printf '%s\\n' {quote(json.dumps(owner))} "
              f"> ~/{LOCK}/owner.json", check=True)

    r, _ = deploy(world, alpha, "--watch", "0")
    assert r.returncode == 3
    text = " ".join(r.stderr.split())
    assert f"locked by bob@laptop (pid {gone.pid}, deploy) since 2026-01-01" in text
    assert "stale" in text and "is gone" in text and "--break-lock" in text
    assert lock_exists(alpha)  # never cleared silently

    r, rep = deploy(world, alpha, "--break-lock", "--watch", "0")
    assert r.returncode == 0, r.stderr
    assert "broke the lock of bob@laptop" in step(rep, "lock")["detail"]
    [entry] = journal(world, alpha, "lock-break")[-1:]
    assert entry["owner"]["operator"] == "bob@laptop" and "gone" in entry["stale"]
    assert not lock_exists(alpha)

    # another laptop's lock: its pid cannot be checked from here, the TTL decides
    owner.update(hostname="elsewhere", ttl=60.0, operator="carol@elsewhere")
    alpha.run(f"mkdir -p ~/{LOCK} && printf '%s\\n' {quote(json.dumps(owner))} "
              f"> ~/{LOCK}/owner.json && touch -d '-2 hours' ~/{LOCK}", check=True)
    r, _ = deploy(world, alpha, "--watch", "0")
    assert r.returncode == 3 and "older than its TTL" in " ".join(r.stderr.split())
    alpha.run(f"rm -rf ~/{LOCK}", check=True)


def test_ctrl_c_releases_the_lock(world: World, alpha: SimHost) -> None:
    fresh(alpha)
    add(alpha, "I@run", "sleep 30")
    wait_for(lambda: state_of(alpha, "I@run") == "Running", what="running")
    proc = subprocess.Popen([*cli.INV, "deploy", "--host", alpha.name,
                             "--on-running", "wait", "--wait-timeout", "60", "--watch", "0"],
                            env=world.env(), text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    # the owner file is the acquire's last write on the host (the client may still be
    # waiting for its reply: a Ctrl-C then must release the lock all the same)
    wait_for(lambda: (alpha.home / LOCK / "owner.json").exists(), what="the lock")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert not lock_exists(alpha)
    assert state_of(alpha, "I@run") == "Running"


# ---- pull ------------------------------------------------------------------------------------

def test_local_changes_are_refused_unless_discarded(world: World, alpha: SimHost) -> None:
    fresh(alpha)
    world.commit_to_origin({"NOTES": "local changes\n"}, "local changes test")
    alpha.run("echo '# hotfix' >> ~/project/src/mypkg/__init__.py", check=True)
    before = head(alpha)
    r, rep = deploy(world, alpha, "--watch", "0")
    assert r.returncode == 3
    assert "local changes in ~/project: M src/mypkg/__init__.py" in " ".join(r.stderr.split())
    assert "--discard-local-changes" in r.stderr
    assert head(alpha) == before
    assert "# hotfix" in (alpha.project_dir / "src/mypkg/__init__.py").read_text()

    r, rep = deploy(world, alpha, "--discard-local-changes", "--watch", "0")
    assert r.returncode == 0, r.stderr
    assert "# hotfix" not in (alpha.project_dir / "src/mypkg/__init__.py").read_text()
    assert journal(world, alpha, "discard-local-changes")[-1]["files"] == \
        [" M src/mypkg/__init__.py"]


def test_ref_rollback_goes_through_the_same_checks(world: World, alpha: SimHost) -> None:
    fresh(alpha)
    old = world.bump_version("1.4.0", tag="v1.4.0")
    world.bump_version("1.5.0")
    r, rep = deploy(world, alpha, "--expect-version", "1.5.0", "--watch", "0")
    assert r.returncode == 0, r.stderr  # now on 1.5.0: roll back to the tag

    r, rep = deploy(world, alpha, "--ref", "v1.4.0", "--expect-version", "1.4.0",
                    "--watch", "0")
    assert r.returncode == 0, r.stderr
    assert head(alpha) == old and "rolled to" in step(rep, "pull")["detail"]
    assert venv_version(alpha)[0] == "1.4.0"
    assert journal(world, alpha, "reset")[-1]["ref"] == "v1.4.0"

    r, _ = deploy(world, alpha, "--ref", "v9.9.9-nope", "--watch", "0")
    assert r.returncode == 2 and "no such commit or tag" in r.stderr
    assert head(alpha) == old

    r, _ = deploy(world, alpha, "--ref", "v1.4.0", "--expect-version", "1.5.0", "--watch", "0")
    assert r.returncode == 1 and "version is 1.4.0, expected 1.5.0" in r.stderr


# ---- verify / upgrade (AP-5) -----------------------------------------------------------------

def test_a_wheel_install_runs_stale_code_until_upgraded(world: World, alpha: SimHost,
                                                        gamma: SimHost) -> None:
    fresh(gamma)
    fresh(alpha)
    world.commit_to_origin({"src/mypkg/__init__.py": (world.work / "src/mypkg/__init__.py")
                            .read_text().replace("return x * 2", "return x * 2  # FIX-7")},
                           "fix 7")
    r, rep = deploy(world, gamma, "--expect-code", "mypkg:compute:FIX-7", "--watch", "0")
    assert r.returncode == 1
    assert step(rep, "verify")["data"]["editable"] is False
    assert "FIX NOT APPLIED" in r.stderr
    assert head(gamma) == world.origin_head()  # pulled, yet the wheel is old (AP-5)

    r, rep = deploy(world, alpha, "--expect-code", "mypkg:compute:FIX-7", "--watch", "0")
    assert r.returncode == 0, r.stderr
    assert step(rep, "verify")["data"]["code"]["matches_checkout"] is True


@pytest.fixture
def index(world: World, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real package index on loopback: pypiserver serving a directory."""
    packages = tmp_path / "packages"
    packages.mkdir()
    server, port = start_pypiserver(packages)
    saved = world.index_url
    try:
        world.index_url = f"http://{LOOPBACK}:{port}/simple/"
        yield world.index_url, packages
    finally:
        world.index_url = saved
        server.terminate()
        server.wait(timeout=10)


def test_upgrade_waits_for_a_late_publish_on_a_real_index(
        world: World, gamma: SimHost, index: tuple[str, Path]) -> None:
    fresh(gamma)
    url, packages = index
    init = world.work / "src/mypkg/__init__.py"
    make_wheel(packages, "1.0.0", init.read_text())
    world.bump_version("1.6.0")
    # 1.6.0 is published right after the first attempt missed it (not after a fixed delay,
    # which a slow machine could spend before its first attempt).
    started = time.monotonic()
    r, rep = deploy(world, gamma, "--version", "1.6.0", "--upgrade-timeout", "40",
                    "--expect-code", "mypkg:compute", "--watch", "0",
                    on_stderr=("upgrade attempt 1: not-found",
                               lambda: make_wheel(packages, "1.6.0", init.read_text())))
    assert r.returncode == 0, r.stderr
    up = step(rep, "upgrade")
    outcomes = [a["outcome"] for a in up["data"]["attempts"]]
    assert outcomes[0] == "not-found" and outcomes[-1] == "ok" and len(outcomes) >= 2
    assert "upgrade attempt 1: not-found" in r.stderr and "next attempt in" in r.stderr
    assert time.monotonic() - started < 40
    version, file = venv_version(gamma)
    assert version == "1.6.0" and "site-packages" in file
    assert journal(world, gamma, "upgrade")[-1]["result"] == "ok"


def test_upgrade_that_never_appears_fails_after_the_budget(
        world: World, gamma: SimHost, index: tuple[str, Path]) -> None:
    fresh(gamma)
    started = time.monotonic()
    r, rep = deploy(world, gamma, "--version", "9.9.9", "--upgrade-timeout", "3", "--watch", "0")
    assert r.returncode == 4
    assert "mypkg==9.9.9 still not on" in " ".join(r.stderr.split())
    assert time.monotonic() - started < 30
    attempts = journal(world, gamma, "upgrade")[-1]
    assert attempts["result"] == "failed" and attempts["attempts"] >= 2

    # a broken artifact is not "not published yet": one attempt, then fail fast
    _, packages = index
    (packages / "mypkg-9.9.8-py3-none-any.whl").write_bytes(b"not a zip file")
    r, _ = deploy(world, gamma, "--version", "9.9.8", "--upgrade-timeout", "30", "--watch", "0")
    assert r.returncode == 4 and "(not retried)" in " ".join(r.stderr.split())
    assert "upgrade attempt 2" not in r.stderr


# ---- dry run and retry-failed ---------------------------------------------------------------

def test_dry_run_reads_for_real_prints_every_command_and_mutates_nothing(
        world: World, alpha: SimHost) -> None:
    fresh(alpha)
    add(alpha, "D@run", "sleep 30")
    add(alpha, "D@oom", "exit 137", group="p2")
    wait_for(lambda: state_of(alpha, "D@run") == "Running" and
             state_of(alpha, "D@oom") == "Failed", what="setup")
    world.commit_to_origin({"NOTES": "dry\n"}, "dry test")
    before, snapshot, journaled = head(alpha), tasks(alpha), len(journal(world, alpha))
    r = inv(world, "deploy", "--host", alpha.name, "--dry", "--on-running", "kill")
    assert r.returncode == 0, r.stderr
    out = " ".join(r.stdout.split())
    assert "1 running, 0 queued, 1 failed" in out  # the real audit
    for needle in ("pause --group p1 --wait", "kill --signal sigterm", "fetch --quiet origin main",
                   "reset --quiet --hard <origin/main after the fetch>", "--label D@oom-retry-1",
                   "--label D@run-retry-1", "nothing was changed"):
        assert needle in out.replace("'", ""), needle
    assert head(alpha) == before and tasks(alpha) == snapshot
    assert len(journal(world, alpha)) == journaled and not lock_exists(alpha)


PLAN_THEN_RUN = r"""
import json, sys
from jobsafe_ops import deploy as d
from jobsafe_ops.deploy import lock as locking
from jobsafe_ops.deploy.context import DeployContext, DeployOptions
from jobsafe_ops.inventory import inventory_dir, load_inventory
from jobsafe_ops.remote import session

host = load_inventory(inventory_dir())[sys.argv[1]]
owner = locking.this_process(3600)  # the lock's command carries it: the same for both
out = {}
for dry in (True, False):
    with session(host) as remote:
        received = []
        transport = remote._run

        def spy(text, **kw):  # what the SSH transport was handed
            received.append(text)
            return transport(text, **kw)

        remote._run = spy
        opts = DeployOptions(on_running="kill", watch=0, kill_grace=5, dry=dry)
        report = d.run_deploy(DeployContext(host=host, remote=remote, options=opts,
                                            owner=owner))
    out[dry] = (report, received)
(plan, _), (run, received) = out[True], out[False]
sent = [a.line for a in run.actions]
print(json.dumps({
    "exit": [plan.exit_code, run.exit_code], "verdict": run.verdict,
    "plan": [{"line": a.line, "when": a.when} for a in plan.actions], "sent": sent,
    "match": [[i for i, a in enumerate(plan.actions) if a.matches(line)] for line in sent],
    "reached": [any(r.endswith(line) for r in received) for line in sent]}))
"""


def test_the_dry_run_lists_the_commands_the_run_then_sends(world: World, alpha: SimHost) -> None:
    """--dry, then the real deploy, on the same host state: each command the run sent over
    SSH is the next one the dry run listed; what it listed and the run did not send is
    marked conditional (e.g. SIGKILL: the job stopped at SIGTERM)."""
    fresh(alpha)
    add(alpha, "P@run", "sleep 30")
    add(alpha, "P@oom", "exit 137", group="p2")
    wait_for(lambda: state_of(alpha, "P@run") == "Running" and
             state_of(alpha, "P@oom") == "Failed", what="setup")
    world.commit_to_origin({"NOTES": "plan\n"}, "plan test")
    r = subprocess.run([sys.executable, "-c", PLAN_THEN_RUN, alpha.name], env=world.env(),
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.splitlines()[-1])
    assert out["exit"] == [0, 0], out["verdict"]
    assert all(out["reached"])  # the executor's record is what went over SSH
    matched = [m[0] for m in out["match"] if m]
    assert len(matched) == len(out["sent"]), [s for s, m in zip(out["sent"], out["match"],
                                                                 strict=True) if not m]
    assert matched == sorted(set(matched))  # in the planned order, none twice
    skipped = [p for i, p in enumerate(out["plan"]) if i not in matched]
    assert all(p["when"] for p in skipped), skipped
    [sigkill] = skipped  # SIGKILL: the job stopped at SIGTERM
    assert " kill " in sigkill["line"] and "--signal" not in sigkill["line"], sigkill
    assert out["plan"][-1]["when"] and "RELEASED" in out["sent"][-1]
    assert state_of(alpha, "P@run-retry-1") is not None and not lock_exists(alpha)


def test_retry_failed_respects_the_budget_across_runs(world: World, alpha: SimHost) -> None:
    fresh(alpha)
    add(alpha, "B@oom", "exit 137")
    wait_for(lambda: state_of(alpha, "B@oom") == "Failed", what="failure")

    def retry() -> tuple[int, dict[str, Any]]:
        r = inv(world, "retry-failed", "--host", alpha.name, "--group", "p1",
                "--retry-budget", "2", "--json")
        return r.returncode, result_of(r.stdout)

    def plan(rep: dict[str, Any]) -> dict[str, Any]:
        [decision] = step(rep, "restart")["data"]["plan"]["decisions"]
        return decision  # type: ignore[no-any-return]

    code, rep = retry()
    assert code == 0 and plan(rep)["new_label"] == "B@oom-retry-1"
    wait_for(lambda: state_of(alpha, "B@oom-retry-1") == "Failed", what="retry 1 fails")
    alpha.run("pueue pause --group p1 --wait", check=True)
    code, rep = retry()
    assert code == 0 and state_of(alpha, "B@oom-retry-2") == "Queued"
    code, rep = retry()  # idempotent: retry-2 is queued, nothing is added
    assert code == 0 and plan(rep)["action"] == "skip"
    assert plan(rep)["reason"] == "already queued as B@oom-retry-2"
    assert "B@oom-retry-3" not in tasks(alpha)
    alpha.run("pueue start --group p1", check=True)
    wait_for(lambda: state_of(alpha, "B@oom-retry-2") == "Failed", what="retry 2 fails")

    code, rep = retry()
    assert code == 3
    assert plan(rep)["action"] == "exhausted" and "budget spent (2/2)" in plan(rep)["reason"]
    assert "B@oom-retry-3" not in tasks(alpha)
    readds = [e["labels"][0] for e in journal(world, alpha, "re-add") if
              e["labels"][0].startswith("B@oom")]
    assert readds == ["B@oom-retry-1", "B@oom-retry-2"]
