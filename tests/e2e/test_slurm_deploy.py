"""`inv deploy` on a Slurm login node, against the real single-node Slurm (`slurm_cluster`)
and a world host with the project checkout (git + uv on the login node): nothing running
(pull + verify, exit 0), `--on-running abort` (exit 3, nothing changed), `kill` (scancel by
the ids squeue showed, re-submitted once as `-retry-N`, a rerun converges) and `wait`."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from jobsafe_ops.testing.slurm import PARTITION, SlurmCluster
from tests.e2e.deploy_helpers import head, lock_exists, step
from tests.e2e.slurm_helpers import GROUPS, inv, ledger, playbook, squeue, submit, wait_ended
from tests.jsonout import result_of
from tests.world import SimHost, World

STEPS = ["audit", "lock", "decide", "pull", "verify", "upgrade", "restart", "monitor"]


@pytest.fixture(scope="module")
def host(world: World, slurm_cluster: SlurmCluster) -> SimHost:
    return world.add_host("hpcd", groups=GROUPS, pueue=False, extra_env=slurm_cluster.env,
                          host_keys={"scheduler": "slurm", "partition": PARTITION})


def deploy(world: World, *args: str, code: int) -> dict[str, Any]:
    proc = inv(world, "deploy", "--host", "hpcd", "--json", *args,
               timeout=240)
    assert proc.returncode == code, proc.stdout + proc.stderr
    out: dict[str, Any] = result_of(proc.stdout)
    return out


def journal(world: World, action: str) -> list[dict[str, Any]]:
    path = world.laptop / ".local" / "state" / "jobsafe-ops" / "journal.ndjson"
    lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()] \
        if path.exists() else []
    return [e for e in lines if e["host"] == "hpcd" and e["action"] == action]


def running(cluster: SlurmCluster, host: SimHost, name: str, n: int,
            timeout: float = 60) -> dict[str, str]:
    """Wait until `n` elements of the batch run and their commands have started (touched
    their flag: squeue says RUNNING before the wrapper starts the command); -> element id
    -> state."""
    deadline = time.monotonic() + timeout
    while True:
        rows = dict(line.split("|")[::2] for line in squeue(cluster, name))
        flags = list(host.home.glob(f"{name}-*.flag"))
        if sum(1 for s in rows.values() if s == "RUNNING") >= n and len(flags) >= n:
            return rows
        assert time.monotonic() < deadline, (rows, flags)
        time.sleep(0.3)


def sleepers(tmp_path: Path, host: SimHost, name: str, labels: list[str],
             seconds: int) -> Path:
    """Jobs that sleep on their first attempt only (a flag file outside the checkout)."""
    flag = f"{host.home}/{name}-{{i}}.flag"
    body = (f'group = "p1"\nlabel = "{name}:{{i}}"\n'
            f'command = "test -e {flag} || (touch {flag}; sleep {seconds})"\n'
            f"[matrix]\ni = {json.dumps(labels)}\n")
    return playbook(tmp_path, name, body)


def cancel(cluster: SlurmCluster, name: str) -> None:
    ids = [line.split("|")[0] for line in squeue(cluster, name)]
    if ids:
        subprocess.run(["scancel", *ids], env=cluster.client_env(), timeout=30)


def test_nothing_running_pulls_and_verifies_exit_0(world: World, host: SimHost) -> None:
    before = head(host)
    world.bump_version("1.1.0")
    r = deploy(world, "--expect-version", "1.1.0", "--watch", "0", code=0)
    assert [s["name"] for s in r["steps"]] == STEPS
    assert r["commit_before"] == before and r["commit_after"] == world.origin_head() == head(host)
    assert step(r, "audit")["data"]["scheduler"] == "slurm"
    assert step(r, "verify")["data"]["version"] == "1.1.0"  # the login node's venv
    assert step(r, "decide")["data"]["policy"] == "none"
    assert "no daemon to restart on Slurm" in step(r, "restart")["detail"]
    assert not lock_exists(host)
    dry = deploy(world, "--dry", "--watch", "0", code=0)
    assert dry["dry"] and any("if mkdir" in line for line in dry["planned"])
    rich = inv(world, "deploy", "--host", "hpcd", "--dry", "--watch", "0")
    assert rich.returncode == 0, rich.stdout + rich.stderr
    assert "VERDICT hpcd: DRY RUN" in rich.stdout and "if mkdir" in rich.stdout


def test_abort_with_running_elements_is_exit_3_and_changes_nothing(
        world: World, host: SimHost, slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    submit(world, sleepers(tmp_path, host, "sdabort", ["1", "2"], 15), host="hpcd")
    try:
        seen = running(slurm_cluster, host, "sdabort", 2)
        before = head(host)
        world.commit_to_origin({"NOTES.md": "abort\n"}, "a change that must not land")
        r = deploy(world, "--on-running", "abort", code=3)
        assert "sdabort:1" in r["error"] and "sdabort:2" in r["error"]
        assert [s["status"] for s in r["steps"]] == ["ok", "ok", "refused"]
        assert head(host) == before and not lock_exists(host)
        assert dict(line.split("|")[::2] for line in squeue(slurm_cluster, "sdabort")) == seen
        assert not [e for e in ledger(host, "sdabort") if e.get("event") == "end"]
    finally:  # they end on their own (a scancel here would leave failures to re-add)
        ends = wait_ended(host, slurm_cluster, "sdabort", {"sdabort:1", "sdabort:2"})
    assert all(e["outcome"] == "success" for e in ends.values())


def test_kill_scancels_by_squeue_ids_and_resubmits_each_label_once(
        world: World, host: SimHost, slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    labels = {"sdkill:1", "sdkill:2", "sdkill:3"}  # p1 runs 3 at once: sdkill:4 pends
    submit(world, sleepers(tmp_path, host, "sdkill", ["1", "2", "3", "4"], 120), host="hpcd")
    before = running(slurm_cluster, host, "sdkill", 3)
    ids = {i for i, state in before.items() if state == "RUNNING"}
    (host.home / "sdkill-4.flag").touch()  # once released, the pending one ends at once
    world.commit_to_origin({"NOTES.md": "kill\n"}, "deployed over a kill")
    r = deploy(world, "--on-running", "kill", "--watch", "5", code=0)
    assert r["commit_after"] == world.origin_head() == head(host)
    decide = step(r, "decide")
    assert {t["element"] for t in decide["data"]["tasks"]} == ids  # the ids squeue showed
    assert {t["label"] for t in decide["data"]["tasks"]} == labels
    [recorded] = [e for e in journal(world, "kill") if e.get("result") == "recorded"]
    assert set(recorded["labels"]) == labels
    # the pending element was held through the kill and the pull, then released
    [hold] = journal(world, "group-pause")
    assert hold["group"] == "p1" and hold["ids"] == decide["data"]["held"] and hold["ids"]
    assert [e["group"] for e in journal(world, "group-start")] == ["p1"]
    re_added = {x["label"]: x["from"] for x in step(r, "restart")["data"]["re_added"]}
    assert re_added == {f"{lbl}-retry-1": lbl for lbl in labels}
    # the retries' second attempt finds its flag: it ends at once, successfully
    ends = wait_ended(host, slurm_cluster, "sdkill", {*re_added, "sdkill:4"})
    assert all(ends[lbl]["outcome"] == "success" for lbl in {*re_added, "sdkill:4"})
    # the first attempts ended by the scancel (SIGTERM: killed, or exit 143 from the shell)
    assert all(ends[lbl]["outcome"] == "killed" or ends[lbl].get("exit") in (137, 143)
               for lbl in labels), [ends[lbl] for lbl in labels]
    ended = [e["label"] for e in ledger(host, "sdkill") if e.get("event") == "end"]
    assert sorted(ended) == sorted([*labels, *re_added, "sdkill:4"])  # each attempt once
    assert squeue(slurm_cluster, "sdkill") == []
    used = [e for e in journal(world, "re-add") if e.get("result") == "ok"]
    assert sorted(lbl for e in used for lbl in e["labels"]) == sorted(re_added)
    # a rerun converges: nothing left to kill, hold or re-add, and nothing submitted again
    again = deploy(world, "--on-running", "kill", "--watch", "0", code=0)
    assert "nothing running" in step(again, "decide")["detail"]
    assert step(again, "restart")["data"]["re_added"] == []
    assert len(journal(world, "group-pause")) == 1
    assert squeue(slurm_cluster, "sdkill") == []


def test_wait_waits_for_the_running_labels_then_deploys(
        world: World, host: SimHost, slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    submit(world, sleepers(tmp_path, host, "sdwait", ["1"], 12), host="hpcd")
    try:
        running(slurm_cluster, host, "sdwait", 1)
        before = head(host)
        world.commit_to_origin({"NOTES.md": "wait\n"}, "deployed after a wait")
        short = deploy(world, "--on-running", "wait", "--wait-timeout", "1", code=3)
        assert "still running after 1s" in short["error"]
        assert head(host) == before and not lock_exists(host)
        r = deploy(world, "--on-running", "wait", "--wait-timeout", "90", "--watch", "0",
                   code=0)
        assert step(r, "decide")["status"] == "ok" and "left squeue" in step(r, "decide")["detail"]
        assert r["commit_after"] == world.origin_head() == head(host)
        [end] = [e for e in ledger(host, "sdwait") if e.get("event") == "end"]
        assert end["outcome"] == "success"  # it was waited for, never killed
        assert step(r, "restart")["data"]["re_added"] == []
    finally:
        cancel(slurm_cluster, "sdwait")
