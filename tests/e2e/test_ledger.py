"""The outcome ledger end to end (issue 12 items 4 and 5): jobs record their outcome on the
host when they end, so after `inv clean` a failure is not forgotten: a rerun of
submit-batch re-adds it within the retry rules or reports it (exit 1), monitor and audit
keep showing it failed, retry-failed retries it; in units mode every command is judged by
its own label. Everything here uses only pueue's own behaviour (valid against real pueue)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from jobsafe_ops.hostside import monitor_filter
from tests.cli import inv
from tests.jsonout import result_of
from tests.world import SimHost, World

GROUPS = {g: {"parallel": 4, "min": 1, "max": 8} for g in ("lg", "lu", "lk")}
PASS = 'pass_env = ["JOBSAFE_WORLD", "JOBSAFE_WORLD_HOST"]\n'
# exit 137 (transient: an OOM kill) or 1 (persistent) until the fix file exists
SCRIPT = """case "$1" in
  oom) test -f fixed && exit 0; exit 137 ;;
  bad) test -f fixed && exit 0; echo broken >&2; exit 1 ;;
  *) exit 0 ;;
esac
"""


@pytest.fixture(scope="module")
def host(world: World) -> SimHost:
    if not world.pueue_available:
        pytest.skip("no pueue stand-in and no real pueue")
    h = world.add_host("lg", groups=GROUPS)
    (h.project_dir / "job.sh").write_text(SCRIPT)
    return h


def inv_json(world: World, *args: str, code: int | None = None) -> tuple[int, Any]:
    """`inv ARGS --json`: the exit code and the result (None without output)."""
    proc = inv(world, *args, "--json")
    if code is not None:
        assert proc.returncode == code, proc.stdout + proc.stderr
    return proc.returncode, result_of(proc.stdout) if proc.stdout.strip() else None


def book(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(f'name = "{name}"\n' + PASS + body)
    return path


def labels(host: SimHost, group: str) -> dict[str, dict[str, Any]]:
    return {t["label"]: t for t in host.pueue_status()["tasks"].values() if t["group"] == group}


def settle(host: SimHost, group: str, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        ts = labels(host, group)
        if len(ts) >= count and all("Done" in t["status"] for t in ts.values()):
            return
        assert time.monotonic() < deadline, f"{group} not done in {timeout}s: {ts}"
        time.sleep(0.2)


def ledger(host: SimHost, playbook: str) -> list[dict[str, Any]]:
    path = host.home / f".local/state/jobsafe-ops/batches/{playbook}/ledger.ndjson"
    return [json.loads(line) for line in path.read_text().splitlines()]


def failed(doc: dict[str, Any]) -> dict[str, Any]:
    [g] = doc["groups"]
    return {e["label"]: e for e in g["failed"]}


def monitor(world: World, group: str, *extra: str) -> tuple[int, dict[str, Any]]:
    code, doc = inv_json(world, "monitor", "--host", "lg", "--group", group, "--once", *extra)
    return code, doc


def test_a_cleaned_failure_is_not_forgotten(world: World, host: SimHost,
                                            tmp_path: Path) -> None:
    path = book(tmp_path, "lgb", """
group = "lg"
retry_budget = 2
command = "sh job.sh {mode}"
label = "lg:{mode}"
[matrix]
mode = ["oom", "bad", "ok"]
""")
    inv_json(world, "submit-batch", "--host", "lg", "--playbook", str(path), code=0)
    settle(host, "lg", 3)
    ends = {r["label"]: r for r in ledger(host, "lgb") if r["event"] == "end"}
    assert {k: (r["outcome"], r["exit"]) for k, r in ends.items()} == {
        "lg:oom": ("failed", 137), "lg:bad": ("failed", 1), "lg:ok": ("success", 0)}
    assert ends["lg:bad"]["command"] == "sh job.sh bad" and ends["lg:ok"]["attempt"] == 0

    inv_json(world, "clean", "--host", "lg", "--group", "lg", code=0)
    assert labels(host, "lg") == {}
    code, doc = monitor(world, "lg")  # pueue forgot them; the ledger did not
    assert code == 1
    assert {k: e["exit_code"] for k, e in failed(doc).items()} == {"lg:oom": 137, "lg:bad": 1}
    code, audit = inv_json(world, "audit", "--host", "lg", "--group", "lg")
    assert code == 1
    assert sorted(t["label"] for t in audit["groups"][0]["failed"]) == ["lg:bad", "lg:oom"]

    (host.project_dir / "fixed").touch()
    code, out = inv_json(world, "submit-batch", "--host", "lg", "--playbook", str(path))
    assert code == 1, out  # not "added 0, skipped 2, exit 0"
    items = {i["label"]: i for i in out["items"]}
    assert items["lg:oom"]["action"] == "add" and items["lg:oom"]["new_label"] == "lg:oom-retry-1"
    assert items["lg:bad"]["action"] == "failed"  # persistent: reported, not re-added
    assert items["lg:ok"]["action"] == "skip"
    settle(host, "lg", 1)
    assert labels(host, "lg")["lg:oom-retry-1"]["status"]["Done"]["result"] == "Success"
    code, doc = monitor(world, "lg")
    assert code == 1 and list(failed(doc)) == ["lg:bad"]

    code, rep = inv_json(world, "retry-failed", "--host", "lg", "--group", "lg", "--retry-all")
    assert code == 0, rep
    settle(host, "lg", 2)
    retried = labels(host, "lg")["lg:bad-retry-1"]
    assert retried["status"]["Done"]["result"] == "Success"
    assert retried["path"] == str(host.project_dir)
    assert any(r["label"] == "lg:bad-retry-1" and r["event"] == "end"
               and r["outcome"] == "success" for r in ledger(host, "lgb"))
    code, doc = monitor(world, "lg")
    assert code == 0, doc

    inv_json(world, "clean", "--host", "lg", "--group", "lg", code=0)
    code, out = inv_json(world, "submit-batch", "--host", "lg", "--playbook", str(path))
    assert code == 0 and out["counts"]["added"] == 0, out  # done: every outcome succeeded


def test_units_mode_judges_each_command_by_its_label(world: World, host: SimHost,
                                                      tmp_path: Path) -> None:
    (host.project_dir / "fixed").unlink(missing_ok=True)
    path = book(tmp_path, "lgu", """
group = "lu"
retry_budget = 2
command = "sh job.sh {mode} {n}"
label = "cmd:{n}:{mode}"
[matrix]
n = [1, 2, 3]
mode = ["ok", "oom", "bad"]
""")
    out = inv_json(world, "submit-batch", "--host", "lg", "--playbook", str(path), "--units",
                   "--unit-size", "10", code=0)[1]
    assert out["units"] == 1
    settle(host, "lu", 1)
    code, doc = monitor(world, "lu")
    assert code == 1
    bad = failed(doc)
    assert sorted(bad) == sorted(f"cmd:{n}:{m}" for n in (1, 2, 3) for m in ("oom", "bad"))
    assert bad["cmd:2:oom"]["exit_code"] == 137 and bad["cmd:3:bad"]["exit_code"] == 1
    code, doc = monitor(world, "lu", "--label-glob", "cmd:2:*")
    assert code == 1 and sorted(failed(doc)) == ["cmd:2:bad", "cmd:2:oom"]

    inv_json(world, "clean", "--host", "lg", "--group", "lu", code=0)
    code, doc = monitor(world, "lu", "--label-glob", "*:bad")
    assert code == 1 and sorted(failed(doc)) == ["cmd:1:bad", "cmd:2:bad", "cmd:3:bad"]

    (host.project_dir / "fixed").touch()
    code, out = inv_json(world, "submit-batch", "--host", "lg", "--playbook", str(path),
                         "--units", "--unit-size", "10")
    assert code == 1, out
    items = {i["label"]: i for i in out["items"] if i["kind"] == "job"}
    assert {k: i["new_label"] for k, i in items.items() if i["action"] == "add"} == {
        f"cmd:{n}:oom": f"cmd:{n}:oom-retry-1" for n in (1, 2, 3)}
    assert sorted(k for k, i in items.items() if i["action"] == "failed") == [
        "cmd:1:bad", "cmd:2:bad", "cmd:3:bad"]
    settle(host, "lu", 3)
    code, rep = inv_json(world, "retry-failed", "--host", "lg", "--group", "lu", "--retry-all")
    assert code == 0, rep
    settle(host, "lu", 6)
    assert all(t["status"]["Done"]["result"] == "Success" for t in labels(host, "lu").values())
    code, doc = monitor(world, "lu")
    assert code == 0, doc


def test_a_killed_job_is_remembered_as_killed_and_retried(world: World, host: SimHost,
                                                          tmp_path: Path) -> None:
    path = book(tmp_path, "lgk", """
group = "lk"
retry_budget = 1
command = "test -f unstuck || sleep 120"
label = "lk:stuck"
""")
    inv_json(world, "submit-batch", "--host", "lg", "--playbook", str(path), code=0)
    deadline = time.monotonic() + 30
    while "Running" not in labels(host, "lk").get("lk:stuck", {}).get("status", {}):
        assert time.monotonic() < deadline, labels(host, "lk")
        time.sleep(0.2)
    ledger = host.home / ".local/state/jobsafe-ops/batches/lgk/ledger.ndjson"
    while not monitor_filter.read_markers(str(ledger)):  # the wrapper's start marker
        assert time.monotonic() < deadline, "the run wrapper wrote no start marker"
        time.sleep(0.1)
    host.run("pueue kill --group lk", check=True)  # SIGKILL to the task's process group
    settle(host, "lk", 1)
    inv_json(world, "clean", "--host", "lg", "--group", "lk", code=0)
    code, doc = monitor(world, "lk")
    assert code == 1 and failed(doc)["lk:stuck"]["state"] == "killed", doc
    (host.project_dir / "unstuck").touch()
    code, out = inv_json(world, "submit-batch", "--host", "lg", "--playbook", str(path))
    assert code == 0, out  # killed is transient: re-added within the budget
    assert [(i["action"], i["new_label"]) for i in out["items"]] == [("add", "lk:stuck-retry-1")]
    settle(host, "lk", 1)
    code, doc = monitor(world, "lk")
    assert code == 0, doc
