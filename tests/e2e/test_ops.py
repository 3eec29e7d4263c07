"""Day-to-day operations by label on a real sshd host (issue 18): logs of a label's newest
attempt (or attempt N, a units-mode command, --follow), cancel by label or playbook
(verify before mutate, recorded as cancelled: never failed, never retried), pause/resume
of a group (resume refused under another operator's deploy lock), and the team journal
on the host that every mutation reaches."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.pueue_setup import add, settle
from tests.jsonout import result_of
from tests.world import SimHost, World

REPO = Path(__file__).resolve().parents[2]
GROUPS = {g: {"parallel": 1, "min": 1, "max": 4} for g in ("ol", "ou", "oc", "od", "op", "or")}
PASS = 'pass_env = ["JOBSAFE_WORLD", "JOBSAFE_WORLD_HOST"]\n'


@pytest.fixture(scope="module")
def host(world: World) -> SimHost:
    if not world.pueue_available:
        pytest.skip("no pueue stand-in and no real pueue")
    h = world.add_host("ops", groups=GROUPS)
    for g in GROUPS:
        h.run(f"pueue group add {g} --parallel 1", check=True)
    return h


def inv(world: World, *args: str, timeout: float = 120) -> tuple[int, Any, str]:
    proc = subprocess.run(["inv", "-r", str(REPO), *args], env=world.env(),
                          capture_output=True, text=True, timeout=timeout, cwd=world.root,
                          stdin=subprocess.DEVNULL)
    out: Any = proc.stdout
    if "--json" in args and proc.stdout.strip():
        out = result_of(proc.stdout)
    return proc.returncode, out, proc.stderr


def tasks(host: SimHost, group: str) -> dict[str, dict[str, Any]]:
    return {t["label"]: t for t in host.pueue_status()["tasks"].values() if t["group"] == group}


def state(task: dict[str, Any]) -> str:
    return next(iter(task["status"]))


def host_journal(host: SimHost) -> list[dict[str, Any]]:
    path = host.home / ".local/state/jobsafe-ops/journal.ndjson"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def book(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(f'name = "{name}"\n' + PASS + body)
    return path


def wait_running(host: SimHost, group: str, timeout: float = 30) -> str:
    """The label of the one task running in the group (parallel 1), once it runs."""
    deadline = time.monotonic() + timeout
    while True:
        running = [lbl for lbl, t in tasks(host, group).items() if state(t) == "Running"]
        if running:
            return running[0]
        assert time.monotonic() < deadline, tasks(host, group)
        time.sleep(0.1)


def test_logs_show_the_newest_attempt_or_attempt_n(world: World, host: SimHost) -> None:
    add(host, "ol", "job:a", "echo first run; exit 3")
    add(host, "ol", "job:a-retry-1", "echo second run")
    settle(host, "ol")
    code, out, err = inv(world, "logs", "--host", "ops", "--label", "job:a")
    assert code == 0, err
    assert out.strip() == "second run" and "attempt 1 of 2" in err
    code, doc, err = inv(world, "logs", "--host", "ops", "--label", "job:a", "--attempt", "0",
                         "--json")
    assert code == 0, err
    assert (doc["shown"], doc["state"], doc["group"]) == ("job:a", "failed", "ol")
    assert doc["output"].strip() == "first run" and doc["attempts"] == ["job:a", "job:a-retry-1"]
    assert "id" not in json.dumps(doc).replace("\"ids\"", "")  # never a pueue id
    code, _, err = inv(world, "logs", "--host", "ops", "--label", "job:nope")
    assert code == 6 and "job:nope" in err and len(err.strip().splitlines()) == 1
    code, _, err = inv(world, "logs", "--host", "ops", "--label", "job:a", "--attempt", "5")
    assert code == 6 and "job:a-retry-1" in err


def test_logs_follow_streams_until_the_job_ends(world: World, host: SimHost) -> None:
    add(host, "ol", "job:slow", "echo one; sleep 1.5; echo two")
    started = time.monotonic()
    code, out, err = inv(world, "logs", "--host", "ops", "--label", "job:slow", "--follow")
    assert code == 0, err
    assert out.split() == ["one", "two"] and time.monotonic() - started > 1.0


def test_logs_follow_ends_on_ctrl_c_with_130(world: World, host: SimHost) -> None:
    add(host, "od", "f:long", "echo started; sleep 60")
    proc = subprocess.Popen(["inv", "-r", str(REPO), "logs", "--host", "ops", "--label",
                             "f:long", "--follow"], env=world.env(), cwd=world.root,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "started"  # streaming, not at the end
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    code, doc, err = inv(world, "cancel", "--host", "ops", "--label", "f:long", "--json")
    assert code == 0 and doc["killed"] == ["f:long"], err


def test_monitor_shows_percent_rate_and_eta(world: World, host: SimHost) -> None:
    add(host, "ol", "job:later", "true")
    settle(host, "ol")
    host.run("pueue pause --group ol", check=True)
    add(host, "ol", "job:waits", "true")
    try:
        code, doc, err = inv(world, "monitor", "--host", "ops", "--group", "ol", "--once",
                             "--json")
        assert code == 3, err  # still work queued
        [g] = doc["groups"]
        p = g["progress"]
        assert (p["total"], p["done"], p["remaining"]) == (4, 3, 1)
        assert p["percent"] == 75.0 and p["per_hour"] > 0 and p["eta_seconds"] > 0
        code, text, err = inv(world, "monitor", "--host", "ops", "--group", "ol", "--once")
        assert "75% ·" in text and "ETA" in text
    finally:
        host.run("pueue start --group ol", check=True)
    settle(host, "ol")


def test_logs_of_a_units_mode_command(world: World, host: SimHost, tmp_path: Path) -> None:
    path = book(tmp_path, "opu", """
group = "ou"
command = "echo output of {n}"
label = "u:{n}"
[matrix]
n = [1, 2, 3]
""")
    code, out, err = inv(world, "submit-batch", "--host", "ops", "--playbook", str(path),
                         "--units", "--unit-size", "10", "--json")
    assert code == 0 and out["units"] == 1, err
    code, doc, err = inv(world, "logs", "--host", "ops", "--label", "u:2", "--follow", "--json")
    assert code == 0, err
    assert doc["unit"] and doc["state"] == "success" and "output of 2" in doc["output"]
    assert "output of 1" not in doc["output"]


def test_cancel_by_playbook_is_verified_recorded_and_never_retried(
        world: World, host: SimHost, tmp_path: Path) -> None:
    path = book(tmp_path, "opc", """
group = "oc"
command = "sleep 60 # {n}"
label = "c:{n}"
[matrix]
n = [1, 2, 3]
""")
    code, _, err = inv(world, "submit-batch", "--host", "ops", "--playbook", str(path))
    assert code == 0, err
    add(host, "oc", "other:job", "sleep 60")  # not the playbook's: left alone
    first = wait_running(host, "oc")
    rest = sorted({"c:1", "c:2", "c:3"} - {first})
    time.sleep(0.3)  # the run wrapper has written its start
    code, doc, err = inv(world, "cancel", "--host", "ops", "--playbook", str(path), "--dry",
                         "--json")
    assert code == 0, err
    assert [r["label"] for r in doc["running"]] == [first]
    assert sorted(r["label"] for r in doc["queued"]) == rest
    assert len(tasks(host, "oc")) == 4 and doc["killed"] == doc["removed"] == []
    code, doc, err = inv(world, "cancel", "--host", "ops", "--playbook", "opc", "--json")
    assert code == 0, err
    assert doc["killed"] == [first] and sorted(doc["removed"]) == rest
    assert list(tasks(host, "oc")) == ["other:job"]
    ledger = host.home / ".local/state/jobsafe-ops/batches/opc/ledger.ndjson"
    last = {}
    for line in ledger.read_text().splitlines():
        rec = json.loads(line)
        last[rec["label"]] = rec["outcome"] if rec.get("event") == "end" else "start"
    assert last == {"c:1": "cancelled", "c:2": "cancelled", "c:3": "cancelled"}
    [entry] = [e for e in host_journal(host) if e["action"] == "cancel" and e.get("batch")]
    assert sorted(entry["labels"]) == ["c:1", "c:2", "c:3"] and entry["result"] == "ok"
    assert "@" in entry["operator"] and entry["batch"] == "opc"
    # not failed, not retried: retry-failed has nothing to add, audit nothing failed
    code, doc, err = inv(world, "retry-failed", "--host", "ops", "--group", "oc", "--json",
                         "--retry-all")
    assert code == 0, json.dumps(doc)[:3000]
    steps = {s["name"]: s for s in doc["steps"]}
    plan = (steps.get("restart", {}).get("data") or {}).get("plan") or {"decisions": []}
    assert [d for d in plan["decisions"] if d["action"] == "add"] == []
    code, doc, err = inv(world, "audit", "--host", "ops", "--group", "oc", "--json")
    assert code == 0 and [g["failed"] for g in doc["groups"]] == [[]], doc
    # a rerun (cron's, say) does not undo the cancel: each label is skipped as cancelled
    code, doc, err = inv(world, "submit-batch", "--host", "ops", "--playbook", str(path),
                         "--json")
    assert code == 0 and doc["added"] == [], err
    assert {i["label"]: (i["action"], "cancelled" in i["reason"]) for i in doc["items"]} == {
        "c:1": ("skip", True), "c:2": ("skip", True), "c:3": ("skip", True)}
    assert list(tasks(host, "oc")) == ["other:job"]
    code, _, err = inv(world, "cancel", "--host", "ops", "--label", "other:*", "--group", "oc")
    assert code == 0, err
    code, _, err = inv(world, "cancel", "--host", "ops", "--label", "c:*")
    assert code == 6 and "nothing cancelled" in err


def test_cancel_of_a_unit_covers_its_commands(world: World, host: SimHost,
                                             tmp_path: Path) -> None:
    path = book(tmp_path, "opv", """
group = "ou"
command = "sleep 30 # {n}"
label = "v:{n}"
[matrix]
n = [1, 2]
""")
    code, _, err = inv(world, "submit-batch", "--host", "ops", "--playbook", str(path),
                       "--units", "--unit-size", "10")
    assert code == 0, err
    unit = wait_running(host, "ou")
    time.sleep(0.5)  # the unit's commands have started (their start markers written)
    code, doc, err = inv(world, "cancel", "--host", "ops", "--playbook", "opv", "--json")
    assert code == 0 and doc["killed"] == [unit], err
    code, doc, err = inv(world, "audit", "--host", "ops", "--group", "ou", "--json")
    assert code == 0 and [g["failed"] for g in doc["groups"]] == [[]], doc


def test_cancel_refuses_while_a_dependant_waits_outside_the_match(
        world: World, host: SimHost) -> None:
    tid = add(host, "od", "d:first", "sleep 30")
    add(host, "op", "d:after", "true", after=(tid,))
    code, _, err = inv(world, "cancel", "--host", "ops", "--label", "d:first")
    assert code == 3 and "d:after" in err and len(err.strip().splitlines()) == 1
    assert set(tasks(host, "od")) == {"d:first"} and set(tasks(host, "op")) == {"d:after"}
    code, doc, err = inv(world, "cancel", "--host", "ops", "--label", "d:*", "--json")
    assert code == 0 and sorted(doc["removed"] + doc["killed"]) == ["d:after", "d:first"], err
    code, _, err = inv(world, "cancel", "--host", "ops", "--group", "od")
    assert code == 2 and "--label" in err


def test_pause_resume_and_the_deploy_lock(world: World, host: SimHost) -> None:
    code, doc, err = inv(world, "pause", "--host", "ops", "--group", "op", "--json")
    assert code == 0 and doc["status"] == "Paused", err
    assert host.pueue_status()["groups"]["op"]["status"] == "Paused"
    lock = host.home / ".local/state/jobsafe-ops/deploy-project.lock"
    lock.mkdir(parents=True)
    (lock / "owner.json").write_text(json.dumps({
        "operator": "someone@elsewhere", "pid": 1, "hostname": "elsewhere",
        "started": "2026-01-01T00:00:00+00:00", "ttl": 1e9, "token": "t"}))
    try:
        code, _, err = inv(world, "resume", "--host", "ops", "--group", "op")
        assert code == 3 and "someone@elsewhere" in err
        assert host.pueue_status()["groups"]["op"]["status"] == "Paused"
    finally:
        (lock / "owner.json").unlink()
        lock.rmdir()
    code, doc, err = inv(world, "resume", "--host", "ops", "--group", "op", "--json")
    assert code == 0 and doc["status"] == "Running", err
    actions = [(e["action"], e.get("group")) for e in host_journal(host)]
    assert ("group-pause", "op") in actions and ("group-resume", "op") in actions
    code, _, err = inv(world, "pause", "--host", "ops", "--group", "nosuch")
    assert code == 2 and "nosuch" in err


def test_the_team_journal_on_the_host(world: World, host: SimHost) -> None:
    # a mutation made elsewhere (clean) reaches the host journal in its own session
    code, _, err = inv(world, "clean", "--host", "ops", "--group", "ol")
    assert code == 0, err
    assert "clean" in [e["action"] for e in host_journal(host)]
    code, doc, err = inv(world, "journal", "--host", "ops", "--json")
    assert code == 0, err
    actions = [e["action"] for e in doc["entries"]]
    assert {"cancel", "group-pause", "clean"} <= set(actions)
    code, doc, err = inv(world, "journal", "--host", "ops", "--label", "c:*", "--json")
    # submit-batch's own entry, mirrored from the laptop, and cancel's, written on the host
    assert code == 0, err
    assert {(e["action"], e["where"]) for e in doc["entries"]} == {
        ("submit-batch", "laptop"), ("cancel", "host")}
    code, doc, err = inv(world, "journal", "--host", "ops", "--since", "1h", "--json")
    assert code == 0 and len(doc["entries"]) == len(host_journal(host))
    code, _, err = inv(world, "journal", "--host", "ops", "--since", "yesterday")
    assert code == 2 and "--since" in err


def test_retry_budgets_are_shared_through_the_host_journal(world: World, host: SimHost) -> None:
    """Another operator's re-adds (on the host's journal only) count against this laptop's
    per-label budget and against the host-wide max_readds_per_hour."""
    host_file = world.inventory / "ops.toml"
    original = host_file.read_text()
    host_file.write_text("max_readds_per_hour = 3\n" + original)
    for n in (1, 2, 3):
        add(host, "or", f"r:{n}", "exit 137")
    settle(host, "or")
    path = host.home / ".local/state/jobsafe-ops/journal.ndjson"
    when = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(time.time() - 600))
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fh.write(json.dumps({"time": when, "operator": "other@laptop", "host": "ops",
                             "action": "re-add", "labels": ["r:1-retry-1", "r:1-retry-2"],
                             "result": "ok", "group": "or"}) + "\n")
    try:
        code, _, err = inv(world, "retry-failed", "--host", "ops", "--group", "or",
                           "--retry-budget", "2")
        assert code == 3 and "max_readds_per_hour = 3 has 1 left" in err, err
        assert set(tasks(host, "or")) == {"r:1", "r:2", "r:3"}  # nothing re-added
    finally:
        host_file.write_text(original)
    code, doc, err = inv(world, "retry-failed", "--host", "ops", "--group", "or",
                         "--retry-budget", "2", "--json")
    steps = {s["name"]: s for s in doc["steps"]}
    actions = {d["label"]: d["action"] for d in steps["restart"]["data"]["plan"]["decisions"]}
    assert actions == {"r:1": "exhausted", "r:2": "add", "r:3": "add"}, err
    assert {"r:2-retry-1", "r:3-retry-1"} <= set(tasks(host, "or"))


def test_probe_prints_the_sizing_formula_per_group(world: World, host: SimHost) -> None:
    code, doc, err = inv(world, "probe", "--host", "ops", "--json")
    assert code == 0, err
    rows = {z["group"]: z for z in doc["sizing"]}
    assert set(rows) == set(GROUPS)
    nproc = doc["nproc"]
    z = rows["ol"]  # no job_memory declared: the cores bind
    assert (z["by_memory"], z["by_cpu"], z["max"]) == (None, int(nproc * 0.8), 4)
    assert z["allowed"] == z["by_cpu"] and z["parallel"] == 1
    code, text, err = inv(world, "probe", "--host", "ops")
    assert code == 0 and "sizing" in text and "by cpu" in text, err
