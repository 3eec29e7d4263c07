"""The day-to-day commands on a Slurm host, against the real single-node Slurm cluster
(tests/e2e/conftest.py `slurm_cluster`) through its login node `hpc`: logs of a finished
label, of a retry attempt and --follow of a running element; cancel --dry, then cancel of
running and pending elements of one array (scancelled, recorded cancelled, never submitted
again by submit-batch nor by retry-failed; dependants refuse it); pause/resume holding and
releasing pending elements (resume refused under another operator's deploy lock); the team
journal on the host showing each of them."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from jobsafe_ops.testing.slurm import SlurmCluster
from tests.e2e.slurm_helpers import (
    REPO,
    inv,
    ledger,
    playbook,
    slurm_host,
    submit,
    wait_ended,
)
from tests.jsonout import result_of
from tests.world import SimHost, World


@pytest.fixture(scope="module")
def host(world: World, slurm_cluster: SlurmCluster) -> SimHost:
    return slurm_host(world, slurm_cluster)


def run(world: World, *args: str) -> tuple[int, Any, str]:
    """(exit code, the --json result or the plain stdout, stderr) of one command."""
    proc = inv(world, *args)
    doc = result_of(proc.stdout) if "--json" in args and proc.stdout.strip() else proc.stdout
    return proc.returncode, doc, proc.stderr


def elements(cluster: SlurmCluster, name: str) -> dict[str, tuple[str, str]]:
    """Element id -> (state, reason) of the batch's elements squeue shows."""
    out = subprocess.run(["squeue", "-h", "-r", "-o", "%i|%j|%T|%r"], env=cluster.client_env(),
                         capture_output=True, text=True, timeout=30, check=True).stdout
    found = {}
    for line in out.splitlines():
        jid, job, state, reason = line.split("|")
        if job.startswith(f"jobsafe:{name}:"):
            found[jid] = (state, reason)
    return found


def wait_for(what: str, check: Any, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"not {what} in {timeout}s"
        time.sleep(0.3)


def host_journal(host: SimHost) -> list[dict[str, Any]]:
    path = host.home / ".local/state/jobsafe-ops/journal.ndjson"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def newest_ends(host: SimHost, name: str) -> dict[str, dict[str, Any]]:
    return {r["label"]: r for r in ledger(host, name) if r.get("event") == "end"}


def test_logs_of_a_finished_label_and_of_each_attempt(
        world: World, host: SimHost, slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    # lg:flaky is SIGKILLed the first time (exit 137: transient), then succeeds
    case = ("case {mode} in ok) echo hello-ok;; flaky) if test -e lg.flag; then echo "
            "second-try; else touch lg.flag; echo first-try; kill -KILL $$; fi;; esac")
    path = playbook(tmp_path, "ologs", f'group = "p1"\nlabel = "lg:{{mode}}"\n'
                    f'command = "{case}"\n[matrix]\nmode = ["ok", "flaky"]\n')
    submit(world, path)
    wait_ended(host, slurm_cluster, "ologs", {"lg:ok", "lg:flaky"})
    code, doc, err = run(world, "retry-failed", "--host", "hpc", "--group", "p1", "--json")
    assert code == 0 and doc["steps"][0]["data"]["re_added"] == ["lg:flaky-retry-1"], err
    wait_ended(host, slurm_cluster, "ologs", {"lg:flaky-retry-1"})

    code, doc, err = run(world, "logs", "--host", "hpc", "--label", "lg:ok", "--json")
    assert code == 0, err
    assert doc["output"].split() == ["hello-ok"] and doc["state"] == "success"
    assert doc["attempts"] == ["lg:ok"] and doc["group"] == "p1"
    # the newest attempt by default: the retry, with every attempt listed
    code, doc, err = run(world, "logs", "--host", "hpc", "--label", "lg:flaky", "--json")
    assert code == 0, err
    assert doc["shown"] == "lg:flaky-retry-1" and doc["attempt"] == 1
    assert doc["output"].split() == ["second-try"] and doc["state"] == "success"
    assert doc["attempts"] == ["lg:flaky", "lg:flaky-retry-1"]
    code, doc, err = run(world, "logs", "--host", "hpc", "--label", "lg:flaky", "--attempt",
                         "0", "--json")
    assert code == 0 and doc["output"].split() == ["first-try"], err
    assert doc["shown"] == "lg:flaky" and doc["state"] == "failed"
    # for people: the log on stdout, the header on stderr
    code, out, err = run(world, "logs", "--host", "hpc", "--label", "lg:flaky")
    assert code == 0 and out.split() == ["second-try"] and "attempt 1 of 2" in err
    code, _, err = run(world, "logs", "--host", "hpc", "--label", "lg:nosuch")
    assert code == 6 and "lg:nosuch" in err
    code, _, err = run(world, "logs", "--host", "hpc", "--label", "lg:flaky", "--attempt", "5")
    assert code == 6 and "no attempt 5" in err


def test_logs_follow_streams_a_running_element_until_it_ends(
        world: World, host: SimHost, slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    path = playbook(tmp_path, "ofollow", 'group = "p1"\nlabel = "fo:{i}"\ncommand = "case {i} '
                    'in 1) echo begin; sleep 3; echo finish;; 2) echo started; sleep 60;; '
                    'esac"\n[matrix]\ni = [1, 2]\n')
    submit(world, path)
    wait_for("running", lambda: sum(s == "RUNNING" for s, _ in
                                    elements(slurm_cluster, "ofollow").values()) == 2)
    assert "fo:1" not in newest_ends(host, "ofollow")  # followed while it runs
    code, out, err = run(world, "logs", "--host", "hpc", "--label", "fo:1", "--follow")
    assert code == 0, err
    assert out.split() == ["begin", "finish"] and "ended: success" in err
    assert newest_ends(host, "ofollow")["fo:1"]["outcome"] == "success"
    # Ctrl-C while it streams: exit 130, the element goes on running
    proc = subprocess.Popen(["inv", "-r", str(REPO), "logs", "--host", "hpc", "--label",
                             "fo:2", "--follow"], env=world.env(), cwd=world.root,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "started"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert [s for s, _ in elements(slurm_cluster, "ofollow").values()] == ["RUNNING"]
    code, doc, err = run(world, "cancel", "--host", "hpc", "--label", "fo:2", "--json")
    assert code == 0 and doc["killed"] == ["fo:2"], err


def test_cancel_dry_then_cancel_running_and_pending_elements_of_an_array(
        world: World, host: SimHost, slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    # group p2 runs 2 at a time: cx:1, cx:2 run, cx:3, cx:4 pend; cx:4 is quick
    path = playbook(tmp_path, "ocancel", 'group = "p2"\nlabel = "cx:{i}"\ncommand = "case {i} '
                    'in 4) echo quick;; *) sleep 60;; esac"\n[matrix]\ni = [1, 2, 3, 4]\n')
    submit(world, path)
    wait_for("running", lambda: sum(s == "RUNNING" for s, _ in
                                    elements(slurm_cluster, "ocancel").values()) == 2)
    before = elements(slurm_cluster, "ocancel")
    journaled = len(host_journal(host))
    code, doc, err = run(world, "cancel", "--host", "hpc", "--label", "cx:[123]", "--dry",
                         "--json")
    assert code == 0, err
    assert sorted(r["label"] for r in doc["running"]) == ["cx:1", "cx:2"]
    assert [r["label"] for r in doc["queued"]] == ["cx:3"] and doc["queued"][0]["state"] == \
        "queued"
    assert doc["killed"] == doc["removed"] == [] and doc["dry"] is True
    assert elements(slurm_cluster, "ocancel").keys() == before.keys()  # nothing changed
    assert len(host_journal(host)) == journaled

    code, doc, err = run(world, "cancel", "--host", "hpc", "--label", "cx:[123]", "--json")
    assert code == 0, err
    assert sorted(doc["killed"]) == ["cx:1", "cx:2"] and doc["removed"] == ["cx:3"]
    assert doc["not_stopped"] == []
    ends = wait_ended(host, slurm_cluster, "ocancel", {"cx:4"})
    assert ends["cx:4"]["outcome"] == "success"  # the rest of the array ran on
    assert {lbl: ends[lbl]["outcome"] for lbl in ("cx:1", "cx:2", "cx:3")} == \
        dict.fromkeys(("cx:1", "cx:2", "cx:3"), "cancelled")
    assert elements(slurm_cluster, "ocancel") == {}
    [entry] = [e for e in host_journal(host) if e["action"] == "cancel"
               and "cx:3" in e["labels"]]
    assert sorted(entry["labels"]) == ["cx:1", "cx:2", "cx:3"] and entry["result"] == "ok"
    # cancelled is neither resubmitted nor retried
    again = submit(world, path)
    assert again["counts"]["added"] == 0 and elements(slurm_cluster, "ocancel") == {}
    code, doc, err = run(world, "retry-failed", "--host", "hpc", "--group", "p2", "--json")
    assert code == 0 and doc["steps"][0]["data"]["re_added"] == [], err
    assert elements(slurm_cluster, "ocancel") == {}
    code, doc, err = run(world, "cancel", "--host", "hpc", "--label", "cx:*", "--json")
    assert code == 0 and doc["killed"] == doc["removed"] == [], err  # all finished
    assert {r["label"] for r in doc["finished"]} == {"cx:1", "cx:2", "cx:3", "cx:4"}
    code, _, err = run(world, "cancel", "--host", "hpc", "--label", "cx:nosuch")
    assert code == 6 and "cx:nosuch" in err
    code, _, err = run(world, "cancel", "--host", "hpc", "--label", "cx:*", "--group", "nosuch")
    assert code == 2 and "nosuch" in err  # not in the host file: before any SSH


def test_cancel_refuses_while_a_dependant_waits_then_cancels_the_playbook(
        world: World, host: SimHost, slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    body = ('group = "p1"\nlabel = "dp:{i}"\ncommand = "sleep 60 # {i}"\n[matrix]\ni = [1, 2]\n'
            '[[after]]\nlabel = "dp:after"\ncommand = "true"\n')
    submit(world, playbook(tmp_path, "odeps", body))
    before = elements(slurm_cluster, "odeps")
    assert len(before) == 3
    code, _, err = run(world, "cancel", "--host", "hpc", "--label", "dp:1")
    assert code == 3 and "dp:after" in err and "DependencyNeverSatisfied" in err
    assert elements(slurm_cluster, "odeps").keys() == before.keys()
    code, doc, err = run(world, "cancel", "--host", "hpc", "--playbook", "odeps", "--json")
    assert code == 0, err
    assert sorted(doc["killed"] + doc["removed"]) == ["dp:1", "dp:2", "dp:after"]
    assert elements(slurm_cluster, "odeps") == {}
    assert all(r["outcome"] == "cancelled" for r in newest_ends(host, "odeps").values())


def test_pause_holds_pending_elements_and_resume_releases_them(
        world: World, host: SimHost, slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    # p1 runs 3 at a time: ps:1..3 run (4 s), ps:4..6 pend until the pause holds them
    path = playbook(tmp_path, "opause", 'group = "p1"\nlabel = "ps:{i}"\ncommand = "sleep 4 '
                    '# {i}"\n[matrix]\ni = [1, 2, 3, 4, 5, 6]\n')
    submit(world, path)
    wait_for("running", lambda: sum(s == "RUNNING" for s, _ in
                                    elements(slurm_cluster, "opause").values()) == 3)
    code, doc, err = run(world, "pause", "--host", "hpc", "--group", "p1", "--json")
    assert code == 0 and doc["status"] == "Paused", err
    assert sorted(doc["labels"]) == ["ps:4", "ps:5", "ps:6"]
    ends = wait_ended(host, slurm_cluster, "opause", {"ps:1", "ps:2", "ps:3"})
    time.sleep(2)  # slots are free: held elements stay pending
    assert sorted(elements(slurm_cluster, "opause").values()) == \
        [("PENDING", "JobHeldUser")] * 3
    assert set(newest_ends(host, "opause")) == set(ends) == {"ps:1", "ps:2", "ps:3"}
    lock = host.home / ".local/state/jobsafe-ops/deploy-project.lock"
    lock.mkdir(parents=True)
    (lock / "owner.json").write_text(json.dumps({
        "operator": "someone@elsewhere", "pid": 1, "hostname": "elsewhere",
        "started": "2026-01-01T00:00:00+00:00", "ttl": 1e9, "token": "t"}))
    try:
        code, _, err = run(world, "resume", "--host", "hpc", "--group", "p1")
        assert code == 3 and "someone@elsewhere" in err
        assert len(elements(slurm_cluster, "opause")) == 3
        assert all(r == "JobHeldUser" for _, r in elements(slurm_cluster, "opause").values())
    finally:
        (lock / "owner.json").unlink()
        lock.rmdir()
    code, doc, err = run(world, "resume", "--host", "hpc", "--group", "p1", "--json")
    assert code == 0 and doc["status"] == "Running", err
    assert sorted(doc["labels"]) == ["ps:4", "ps:5", "ps:6"]
    ends = wait_ended(host, slurm_cluster, "opause", {f"ps:{i}" for i in range(1, 7)})
    assert all(r["outcome"] == "success" for r in ends.values())
    code, _, err = run(world, "pause", "--host", "hpc", "--group", "nosuch")
    assert code == 2 and "nosuch" in err


def test_the_team_journal_on_the_host_shows_each_mutation(world: World,
                                                          host: SimHost) -> None:
    code, doc, err = run(world, "journal", "--host", "hpc", "--json")
    assert code == 0, err
    actions = {(e["action"], e.get("scheduler")) for e in doc["entries"]}
    assert {("cancel", "slurm"), ("group-pause", "slurm"), ("group-resume", "slurm")} <= actions
    code, doc, err = run(world, "journal", "--host", "hpc", "--label", "ps:*", "--json")
    assert code == 0, err
    assert {e["action"] for e in doc["entries"]} >= {"group-pause", "group-resume"}
    assert all(any(lbl.startswith("ps:") for lbl in e["labels"]) for e in doc["entries"])


def test_report_of_a_slurm_batch_takes_running_from_squeue(
        world: World, host: SimHost, slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    path = playbook(tmp_path, "oreport", 'group = "p1"\nlabel = "rp:{i}"\ncommand = "case {i} '
                    'in 1) true;; 2) echo boom; exit 3;; *) sleep 60;; esac"\n[matrix]\n'
                    'i = [1, 2, 3]\n')
    submit(world, path)
    wait_ended(host, slurm_cluster, "oreport", {"rp:1", "rp:2"})
    wait_for("running", lambda: [s for s, _ in elements(slurm_cluster, "oreport").values()]
             == ["RUNNING"])
    page = tmp_path / "report.html"
    code, doc, err = run(world, "report", "--host", "hpc", "--group", "p1", "--playbook",
                         str(path), "--html", str(page), "--json")
    assert code == 0, err
    by = {r["label"]: r for r in doc["runs"]}
    assert set(by) == {"rp:1", "rp:2", "rp:3"}  # this playbook's batch only
    assert by["rp:1"]["outcome"] == "success" and by["rp:1"]["source"] == "ledger"
    assert by["rp:2"]["outcome"] == "failed" and by["rp:2"]["exit"] == 3
    assert by["rp:2"]["log"] == ["boom"]
    # a compute node wrote its start marker: running, from squeue, never "killed"
    assert by["rp:3"]["outcome"] == "running" and by["rp:3"]["source"] == "squeue"
    assert by["rp:3"]["start"] is not None
    assert [f["label"] for f in doc["failures"]] == ["rp:2"]
    assert doc["health"]["nproc"] == 8  # the cluster's CPUs (sinfo), not the login node's
    html = page.read_text()
    assert "rp:3" in html and "boom" in html
    # the whole group, other batches' attempts too (the cancelled ones of the earlier tests)
    code, doc, err = run(world, "report", "--host", "hpc", "--group", "p1", "--json")
    assert code == 0, err
    outcomes = {r["label"]: r["outcome"] for r in doc["runs"]}
    assert outcomes["dp:after"] == "cancelled" and outcomes["lg:flaky-retry-1"] == "success"
    code, doc, err = run(world, "cancel", "--host", "hpc", "--label", "rp:3", "--json")
    assert code == 0 and doc["killed"] == ["rp:3"], err
