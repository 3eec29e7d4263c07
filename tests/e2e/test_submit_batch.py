"""`inv submit-batch` end to end against loopback hosts (real sshd, pueue stand-in or real
pueue): plan-time refusals with zero remote commands, exactly-once submission, --after
chains, memory-cap refusal, working dirs, quoting, state hygiene, and units mode."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from tests.cli import inv
from tests.jsonout import result_of
from tests.world import SimHost, World

GROUPS = {g: {"parallel": 4, "min": 1, "max": 8} for g in ("p1", "p2", "p3", "p4", "p5", "p6")}
# pueue copies the add-time environment into each task; the feeder keeps a lean one, so
# the world's marker (used to sweep leftovers) must be passed on explicitly.
PASS = 'pass_env = ["JOBSAFE_WORLD", "JOBSAFE_WORLD_HOST"]\n'
JOB = ".venv/bin/python scripts/job.py"


@pytest.fixture(scope="module")
def host(world: World) -> SimHost:
    if not world.pueue_available:
        pytest.skip("no pueue stand-in and no real pueue")
    return world.add_host("sb", groups=GROUPS)


def playbook(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(f'name = "{name}"\n' + PASS + body)
    return path


def submit(world: World, path: Path, *args: str, code: int = 0) -> dict[str, Any]:
    proc = inv(world, "submit-batch", "--host", "sb", "--playbook", str(path), "--json", *args)
    assert proc.returncode == code, proc.stdout + proc.stderr
    return result_of(proc.stdout)  # type: ignore[no-any-return]


def tasks(host: SimHost, prefix: str = "") -> list[dict[str, Any]]:
    return [t for t in host.pueue_status()["tasks"].values()
            if (t["label"] or "").startswith(prefix)]


def wait_done(host: SimHost, prefix: str, count: int, timeout: float = 60) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        ts = tasks(host, prefix)
        if len(ts) >= count and all("Done" in t["status"] for t in ts):
            return ts
        assert time.monotonic() < deadline, f"not done in {timeout}s: {ts}"
        time.sleep(0.2)


def result(t: dict[str, Any]) -> Any:
    return t["status"]["Done"]["result"]


def ts(value: str) -> float:
    from datetime import datetime

    head, _, rest = value.replace("Z", "+00:00").partition(".")
    digits = "".join(c for c in rest if c.isdigit())
    tz = rest[len(digits):]
    return datetime.fromisoformat(f"{head}.{digits[:6] or '0'}{tz}").timestamp()


# ---- plan-time refusals: nothing reaches a host ----------------------------------------

def ghost_inventory(world: World, tmp_path: Path) -> Path:
    """A copy of the inventory whose host points at a closed port: any attempt to connect
    would exit 4 (unreachable), so exit 2 proves no remote command was sent."""
    inv_dir = tmp_path / "inv"
    shutil.copytree(world.inventory, inv_dir)
    text = (inv_dir / "sb.toml").read_text().replace('ssh = "sb"', 'ssh = "nobody@127.0.0.1:1"')
    (inv_dir / "sb.toml").write_text(text)
    return inv_dir


SWEEP = f"""
group = "p1"
command = "{JOB} --name {{symbol}}_{{threshold}} --value {{threshold}}"
label = "{{symbol}}@{{threshold}}"
[matrix]
symbol = ["BTC", "ETH"]
threshold = [250, 500]
"""


def test_inv1_and_inv9_violations_caught_with_zero_remote_commands(
        world: World, host: SimHost, tmp_path: Path) -> None:
    ghost = ghost_inventory(world, tmp_path)
    good = playbook(tmp_path, "inv1", SWEEP)
    proc = inv(world, "submit-batch", "--host", "sb", "--playbook", str(good),
               "--inventory", str(ghost), env={"JOBSAFE_CONNECT_ATTEMPTS": "1"})
    assert proc.returncode == 4  # control: this inventory would really try to connect
    bad = playbook(tmp_path, "inv1", 'artifacts = ["out/{symbol}.json"]\n' + SWEEP)
    proc = inv(world, "submit-batch", "--host", "sb", "--playbook", str(bad),
               "--inventory", str(ghost))
    assert proc.returncode == 2, proc.stderr
    assert "INV-1" in proc.stderr and "'threshold'" in proc.stderr
    assert "artifacts[0]" in proc.stderr and "out/{symbol}.json" in proc.stderr
    inv9 = playbook(tmp_path, "inv9", 'categories = ["symbol"]\n'
                    'artifacts = ["out/{symbol}_{threshold}.json"]\n'
                    'merge = ["out/*_{threshold}.json"]\n' + SWEEP)
    proc = inv(world, "submit-batch", "--host", "sb", "--playbook", str(inv9),
               "--inventory", str(ghost), "--dry")
    assert proc.returncode == 2 and "INV-9" in proc.stderr and "merge[0]" in proc.stderr
    # and against the real host: nothing was added, no batch directory was made
    proc = inv(world, "submit-batch", "--host", "sb", "--playbook", str(bad))
    assert proc.returncode == 2
    assert tasks(host) == []
    assert not (host.home / ".local/state/jobsafe-ops/batches/inv1").exists()


# ---- submit, dry, rerun -----------------------------------------------------------------------

def test_dry_then_submit_then_rerun_submits_nothing(world: World, host: SimHost,
                                                    tmp_path: Path) -> None:
    body = SWEEP.replace('group = "p1"', 'group = "p2"').replace(
        'label = "{symbol}@{threshold}"', 'label = "rr:{symbol}@{threshold}"')
    path = playbook(tmp_path, "rerun", body)
    dry = submit(world, path, "--dry")
    assert dry["dry"] and dry["counts"]["add"] == 4 and dry["planned"] == 4
    assert dry["new_groups"] == [{"group": "p2", "parallel": 4}]
    assert dry["sample"][0] == f"{JOB} --name BTC_250 --value 250"
    assert dry["ssh"]["connections"] == 1
    assert tasks(host, "rr:") == []  # --dry mutated nothing
    first = submit(world, path)
    assert first["counts"]["added"] == 4 and first["ssh"]["connections"] == 1
    assert sorted(a["label"] for a in first["added"]) == [
        "rr:BTC@250", "rr:BTC@500", "rr:ETH@250", "rr:ETH@500"]
    assert host.pueue_status()["groups"]["p2"]["parallel_tasks"] == 4  # host file's parallel
    again = submit(world, path)
    assert again["counts"]["added"] == 0 and again["counts"]["skip"] == 4
    assert again["ssh"]["round_trips"] == 2  # probe + facts: no upload, no feeder
    assert len(tasks(host, "rr:")) == 4
    done = wait_done(host, "rr:", 4)
    assert all(result(t) == "Success" for t in done)
    dry = submit(world, path, "--dry")
    assert dry["counts"]["add"] == 0
    assert {i["reason"].split(" as ")[0] for i in dry["items"]} == {"succeeded"}


def test_working_dir_is_always_set_and_absolute(world: World, host: SimHost,
                                                tmp_path: Path) -> None:
    body = SWEEP.replace('group = "p1"', 'group = "p3"').replace(
        'label = "{symbol}@{threshold}"', 'label = "wd:{symbol}@{threshold}"')
    submit(world, playbook(tmp_path, "workdir", body))
    done = wait_done(host, "wd:", 4)
    project = str(host.project_dir.resolve())
    assert {t["path"] for t in done} == {project}
    assert all(result(t) == "Success" for t in done)  # scripts/job.py found via -w
    assert (host.project_dir / "out" / "ETH_500.json").exists()


def test_labels_with_spaces_and_metacharacters_survive_quoting(
        world: World, host: SimHost, tmp_path: Path) -> None:
    values = ["BTC USDT", "a;b&c|d", "$(touch PWNED)", "it's", 'x"y', "`id`", "*"]
    body = f"""
group = "p4"
command = "{JOB} --name {{symbol}} --value 1"
label = "q:{{symbol}}"
[matrix]
symbol = {json.dumps(values)}
"""
    out = submit(world, playbook(tmp_path, "quoting", body))
    assert out["counts"]["added"] == len(values)
    done = wait_done(host, "q:", len(values))
    assert sorted(t["label"] for t in done) == sorted(f"q:{v}" for v in values)
    assert all(result(t) == "Success" for t in done)
    for v in values:  # the job received each value as one argument, verbatim
        data = json.loads((host.project_dir / "out" / f"{v}.json").read_text())
        assert data["name"] == v
    assert not list(host.home.rglob("PWNED"))


# ---- --after chains ----------------------------------------------------------------------

def test_after_chain_runs_only_after_every_job(world: World, host: SimHost,
                                               tmp_path: Path) -> None:
    body = f"""
group = "p5"
command = "{JOB} --name ch_{{i}} --sleep 0.{{i}}"
label = "ch:{{i}}"
[matrix]
i = [1, 2, 3, 4, 5, 6]
[[after]]
label = "ch:optimize"
command = "ls out/ch_1.json out/ch_2.json out/ch_3.json out/ch_4.json out/ch_5.json out/ch_6.json"
[[after]]
label = "ch:validate"
command = "true"
"""
    out = submit(world, playbook(tmp_path, "chain", body))
    ids = {a["label"]: a["id"] for a in out["added"]}
    done = {t["label"]: t for t in wait_done(host, "ch:", 8)}
    assert all(result(t) == "Success" for t in done.values())
    jobs = [done[f"ch:{i}"] for i in range(1, 7)]
    opt, val = done["ch:optimize"], done["ch:validate"]
    assert sorted(opt["dependencies"]) == sorted(ids[f"ch:{i}"] for i in range(1, 7))
    assert val["dependencies"] == [ids["ch:optimize"]]
    last_end = max(ts(t["status"]["Done"]["end"]) for t in jobs)
    assert ts(opt["status"]["Done"]["start"]) >= last_end
    assert ts(val["status"]["Done"]["start"]) >= ts(opt["status"]["Done"]["end"])
    # idempotent: the chain is keyed by label too
    again = submit(world, playbook(tmp_path, "chain", body))
    assert again["counts"]["added"] == 0


RT_SCRIPT = """case "$1" in
  killed) test -f rt-fixed || kill -9 $$; echo fine ;;
  fails) echo broken >&2; exit 3 ;;
esac
"""


def test_failures_follow_the_retry_rules(world: World, host: SimHost, tmp_path: Path) -> None:
    (host.project_dir / "rt.sh").write_text(RT_SCRIPT)
    body = """
group = "p1"
retry_budget = 1
command = "sh rt.sh {mode}"
label = "rt:{mode}"
[matrix]
mode = ["killed", "fails"]
[[after]]
label = "rt:after"
command = "true"
"""
    path = playbook(tmp_path, "retry", body)
    submit(world, path)
    first = {t["label"]: t for t in wait_done(host, "rt:", 3)}
    assert result(first["rt:killed"]) in ("Killed", {"Failed": 137})
    assert result(first["rt:fails"]) == {"Failed": 3}
    assert result(first["rt:after"]) == "DependencyFailed"
    (host.project_dir / "rt-fixed").touch()
    out = submit(world, path, code=1)  # a persistent failure remains: exit 1
    items = {i["label"]: i for i in out["items"]}
    assert items["rt:killed"]["action"] == "add"
    assert items["rt:killed"]["new_label"] == "rt:killed-retry-1"  # fresh add, new label
    assert items["rt:fails"]["action"] == "failed"  # exit 3 is persistent: not re-added
    assert items["rt:after"]["action"] == "held"  # it would wait on the failed job
    second = {t["label"]: t for t in wait_done(host, "rt:", 4)}
    assert result(second["rt:killed-retry-1"]) == "Success"
    assert "rt:fails-retry-1" not in second


# ---- memory caps ---------------------------------------------------------------------------

def test_memory_cap_refused_where_unsupported(world: World, host: SimHost,
                                              tmp_path: Path) -> None:
    """memory_cap = true (the default) on a host whose caps do not work: refused (exit 3)
    unless --allow-uncapped is typed."""
    body = 'memory_max = "256M"\n' + SWEEP.replace(
        'label = "{symbol}@{threshold}"', 'label = "mc:{symbol}@{threshold}"')
    path = playbook(tmp_path, "memcap", body)
    inv_dir = tmp_path / "inv"  # the same host, declared able to cap
    shutil.copytree(world.inventory, inv_dir)
    text = (inv_dir / "sb.toml").read_text()
    assert "memory_cap = false" in text
    (inv_dir / "sb.toml").write_text(text.replace("memory_cap = false", "memory_cap = true"))
    proc = inv(world, "submit-batch", "--host", "sb", "--playbook", str(path),
               "--inventory", str(inv_dir))
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "memory caps do not work on sb" in proc.stderr and "--allow-uncapped" in proc.stderr
    assert tasks(host, "mc:") == []
    out = submit(world, path, "--allow-uncapped", "--inventory", str(inv_dir))
    assert out["counts"]["added"] == 4 and "UNCAPPED" in out["memcap"]["reason"]
    assert out["memcap"]["uncapped_by"] == "--allow-uncapped"
    assert all("systemd-run" not in t["command"] for t in tasks(host, "mc:"))  # nor wrapped


def test_memory_cap_false_in_the_host_file_runs_uncapped_and_says_so(
        world: World, host: SimHost, tmp_path: Path) -> None:
    """The host file's memory_cap = false is the operator's decision: a playbook with
    memory_max runs there uncapped, no --allow-uncapped needed (it was refused, exit 3,
    on every run), and the summary, the JSON and the journal say so."""
    assert "memory_cap = false" in (world.inventory / "sb.toml").read_text()
    body = 'memory_max = "256M"\n' + SWEEP.replace(
        'label = "{symbol}@{threshold}"', 'label = "mf:{symbol}@{threshold}"')
    path = playbook(tmp_path, "memfalse", body)
    journal = world.laptop / ".local/state/jobsafe-ops/journal.ndjson"
    before = journal.read_text().count("\n") if journal.exists() else 0
    proc = inv(world, "submit-batch", "--host", "sb", "--playbook", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    row = next(ln for ln in proc.stdout.splitlines() if "memory cap" in ln)
    assert "off: UNCAPPED (memory_cap = false" in row  # the summary's memory cap row
    assert len(tasks(host, "mf:")) == 4
    assert all("systemd-run" not in t["command"] for t in tasks(host, "mf:"))  # nor wrapped
    new = [json.loads(line) for line in journal.read_text().splitlines()[before:]]
    adds = [e for e in new if e["action"] == "submit-batch" and e["host"] == "sb"]
    assert adds and "UNCAPPED (memory_cap = false" in adds[-1]["uncapped"]
    out = submit(world, path)  # rerun: converged, and the JSON says it too
    assert out["counts"]["added"] == 0 and out["memcap"]["uncapped_by"] == "memory_cap = false"
    assert "4 job(s) with memory_max run without a memory cap" in out["memcap"]["reason"]
    assert out["memcap"]["refusal"] is None and out["memcap"]["wrap"] is False


# ---- state hygiene -------------------------------------------------------------------------

def test_large_state_is_cleaned_per_group_but_never_mid_chain(
        world: World, host: SimHost, tmp_path: Path) -> None:
    body = SWEEP.replace('group = "p1"', 'group = "p6"').replace(
        'label = "{symbol}@{threshold}"', 'label = "h0:{symbol}@{threshold}"')
    first = playbook(tmp_path, "hyg0", body)
    submit(world, first)
    assert all(result(t) == "Success" for t in wait_done(host, "h0:", 4))
    inv_dir = tmp_path / "inv"  # the same host, with a tiny warn size: any state is large
    shutil.copytree(world.inventory, inv_dir)
    text = (inv_dir / "sb.toml").read_text()
    (inv_dir / "sb.toml").write_text(text.replace("memory_cap", "state_warn_mb = 0.0001\n"
                                                  "memory_cap", 1))
    out = submit(world, playbook(tmp_path, "hyg1", body.replace("h0:", "h1:")),
                 "--inventory", str(inv_dir))
    assert [(c["group"], c["run"]) for c in out["clean"]] == [("p6", True)]
    assert tasks(host, "h0:") == []  # p6's successes are gone (failed ones would stay)
    assert len(tasks(host, "h1:")) == 4  # ...and the new batch is in
    # a rerun of the cleaned batch submits nothing: the host's receipts remember it
    again = submit(world, first)
    assert again["counts"]["added"] == 0 and tasks(host, "h0:") == []
    assert {i["reason"] for i in again["items"]} == {
        "submitted before (receipt on the host); no longer in the pueue state, so it "
        "finished and was cleaned"}
    wait_done(host, "h1:", 4)
    # a group whose dependency chain is unfinished is never cleaned
    host.run("pueue pause --group p6", check=True)
    try:
        chain = body.replace("h0:", "hc:") + '[[after]]\nlabel = "hc:after"\ncommand = "true"\n'
        submit(world, playbook(tmp_path, "hygc", chain))
        out = submit(world, playbook(tmp_path, "hyg2", body.replace("h0:", "h2:")),
                     "--inventory", str(inv_dir))
        assert [(c["group"], c["run"]) for c in out["clean"]] == [("p6", False)]
        assert "hc:after" in out["clean"][0]["reason"]
        assert len(tasks(host, "h1:")) == 4  # untouched
    finally:
        host.run("pueue start --group p6", check=True)
    wait_done(host, "h", 4 + 5 + 4)  # h1, hc (+ its after step), h2


def _finished_tasks(first_id: int, group: str, home: str, min_bytes: int) -> dict[str, Any]:
    """Finished tasks in pueue 4.0.4's state-file format, at least `min_bytes` of JSON."""
    envs = {"HOME": home, "PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8",
            "USER": "op", "PUEUE_GROUP": group, "PUEUE_WORKER_ID": "0"}
    t = "2026-11-01T00:00:00.123456789Z"
    out: dict[str, Any] = {}
    size, i = 0, first_id
    while size < min_bytes:
        cmd = f"uv run python scripts/process.py --part {i} --start 2019-01-01 --end 2026-12-31"
        task = {"id": i, "created_at": t, "original_command": cmd, "command": cmd,
                "path": f"{home}/project", "envs": envs, "group": group,
                "dependencies": [], "priority": 0, "label": f"old:{i}",
                "status": {"Done": {"enqueued_at": t, "start": t, "end": t,
                                    "result": "Success"}}}
        out[str(i)] = task
        size += len(json.dumps(task, separators=(",", ":"))) + len(str(i)) + 4
        i += 1
    return out


def test_state_warn_mb_cleans_with_the_daemons_default_config(
        world: World, tmp_path: Path) -> None:
    # Issue 12 item 1: on a host whose pueue.yml is the file pueued wrote itself
    # (`pueue_directory: null`), probe used to find no state file, so `state_warn_mb`
    # never fired. state_warn_mb = 1 and a 1.3 MB state: the batch's group is cleaned.
    if not world.pueue_available:
        pytest.skip("no pueue stand-in and no real pueue")
    sw = world.add_host("sw", groups=GROUPS)
    assert b"pueue_directory: null" in sw.pueue_config.read_bytes()
    sw.run("pueue group add p5 --parallel 4", check=True)
    sw.stop_pueued()
    state = json.loads(sw.state_file.read_text())
    state["tasks"].update(_finished_tasks(len(state["tasks"]), "p5", str(sw.home),
                                          int(1.3 * 1024**2)))
    # jobsafe: ignore[non-atomic-checkpoint-write] - the daemon is stopped
    sw.state_file.write_text(json.dumps(state, separators=(",", ":")))
    sw.start_pueued(timeout=120)
    before = sw.state_file.stat().st_size
    assert before > 1024**2
    toml = world.inventory / "sw.toml"
    toml.write_text(toml.read_text().replace("memory_cap", "state_warn_mb = 1\nmemory_cap", 1))
    body = SWEEP.replace('group = "p1"', 'group = "p5"').replace(
        'label = "{symbol}@{threshold}"', 'label = "sw:{symbol}@{threshold}"')
    proc = inv(world, "submit-batch", "--host", "sw", "--playbook",
               str(playbook(tmp_path, "warn", body)), "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = result_of(proc.stdout)
    assert [(c["group"], c["run"]) for c in out["clean"]] == [("p5", True)]
    assert "> 1 MB" in out["clean"][0]["reason"]
    assert [t for t in sw.pueue_status()["tasks"].values()
            if (t["label"] or "").startswith("old:")] == []
    assert sw.state_file.stat().st_size < 1024**2 < before
    assert len(wait_done(sw, "sw:", 4)) == 4


# ---- units mode ----------------------------------------------------------------------------

def test_units_mode_10000_jobs(world: World, host: SimHost, tmp_path: Path) -> None:
    body = f"""
group = "p3"
command = "test {{i}} -ge 0"
label = "u:{{i}}"
[units]
size = 1000
parallel = 8
[matrix]
i = [{", ".join(map(str, range(10_000)))}]
[[after]]
label = "u:after"
command = "true"
"""
    path = playbook(tmp_path, "units", body)
    out = submit(world, path, "--units")
    assert out["mode"] == "units" and out["planned"] == 10_000 and out["units"] == 10
    assert out["counts"]["added"] == 11 and out["ssh"]["connections"] == 1
    done = wait_done(host, "units:", 10, timeout=120)
    assert len(done) == 10 and all(result(t) == "Success" for t in done)
    after = wait_done(host, "u:after", 1)[0]
    assert result(after) == "Success"
    assert ts(after["status"]["Done"]["start"]) >= max(
        ts(t["status"]["Done"]["end"]) for t in done)
    receipts = (host.home / ".local/state/jobsafe-ops/batches/units/done.tsv").read_text()
    finished = dict(line.rsplit("\t", 1) for line in receipts.splitlines())
    assert len(finished) == 10_000 and set(finished.values()) == {"0"}
    again = submit(world, path, "--units")
    assert again["counts"]["added"] == 0 and again["done_inside_units"] == 10_000
