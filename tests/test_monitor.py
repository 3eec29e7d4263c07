"""Monitor: the remote filter (pure summary + the real command run locally against a
scripted pueue), snapshots by label, group_all_done, exit codes, the watch loop, the view."""

from __future__ import annotations

import io
import json
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from jobsafe_ops import monitor_filter as mf
from jobsafe_ops.errors import ConfigError, RemoteError
from jobsafe_ops.inventory import GroupSpec, Host
from jobsafe_ops.monitor import (
    GroupView,
    Health,
    HostResult,
    Options,
    Snapshot,
    Watcher,
    board_exit_code,
    group_all_done,
    read_snapshot,
    snapshot_from,
    watch,
)
from jobsafe_ops.monitor_view import monitor_view
from jobsafe_ops.pueue import parse_status
from jobsafe_ops.remote import LocalRemote

NOW = datetime(2026, 11, 22, 18, 0, tzinfo=UTC)


def load(fixtures: Path, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((fixtures / name).read_text())
    return data


def task(tid: int, label: str | None, status: Any, group: str = "p1",
         deps: tuple[int, ...] = (), command: str = "true") -> dict[str, Any]:
    return {"id": tid, "created_at": "2026-11-22T17:00:00Z", "original_command": command,
            "command": command, "path": "/w", "envs": {}, "group": group,
            "dependencies": list(deps), "priority": 0, "label": label, "status": status}


def done(result: Any, start: str = "2026-11-22T17:00:01Z") -> dict[str, Any]:
    return {"Done": {"enqueued_at": start, "start": start, "end": start, "result": result}}


QUEUED = {"Queued": {"enqueued_at": "2026-11-22T17:00:00Z"}}
RUNNING = {"Running": {"enqueued_at": "2026-11-22T17:00:00Z", "start": "2026-11-22T17:50:00Z"}}


def state(*tasks: dict[str, Any], groups: dict[str, str] | None = None) -> dict[str, Any]:
    groups = groups or {"p1": "Running"}
    return {"tasks": {str(t["id"]): t for t in tasks},
            "groups": {g: {"status": s, "parallel_tasks": 2} for g, s in groups.items()}}


def snap_of(data: dict[str, Any], group: str | None = "p1", glob: str | None = None,
            host: str = "h") -> Snapshot:
    summary, _ = mf.summarize(data, group, glob, now=NOW)
    mf.attach_logs(summary, {}, 0)
    return snapshot_from(host, {**summary, "health": {}}, Options(group=group, label_glob=glob),
                         at=NOW)


# ---- the filter's normalisation agrees with jobsafe_ops.pueue -------------------------------

def test_filter_states_match_the_pueue_parser_on_every_fixture(fixtures: Path) -> None:
    names = [p.name for p in fixtures.glob("*.json") if not p.name.startswith("log-")]
    assert len(names) >= 10
    for name in names:
        data = load(fixtures, name)
        parsed = parse_status(json.dumps(data))
        ours = mf.normalise(data)
        blocked = mf.blocked_ids(ours)
        for t in parsed.tasks:
            state = "blocked" if t.id in blocked else ours[t.id]["state"]
            assert state == parsed.state_of(t), (name, t.id)
            assert ours[t.id]["exit_code"] == t.exit_code, (name, t.id)
            assert ours[t.id]["label"] == t.label


def test_v3_statuses_are_normalised() -> None:
    assert mf.task_state({"status": "Running", "start": "x"}) == ("running", None, "x")
    assert mf.task_state({"status": {"Done": {"Failed": 2}}}) == ("failed", 2, None)
    assert mf.task_state({"status": {"Done": "Success"}})[:2] == ("success", 0)
    assert mf.task_state({"status": {"Done": "DependencyFailed"}})[0] == "dependency_failed"


# ---- summary by label ------------------------------------------------------------------------

def test_mixed_fixture_summary_by_label(fixtures: Path) -> None:
    summary, wanted = mf.summarize(load(fixtures, "status-mixed.json"), "p1", now=NOW)
    g = summary["groups"]["p1"]
    assert g["counts"] == {"success": 1, "failed": 1, "killed": 1, "running": 1, "paused": 1,
                           "queued": 2, "stashed": 2, "dependency_failed": 1}
    assert g["total"] == 10 and g["ready"] == 1  # SOLUSDT@500; BTCUSDT@1000 waits on 3
    assert {e["label"]: e["state"] for e in g["running"]} == {
        "BTCUSDT@500": "running", "ETHUSDT@500": "paused"}
    assert all(e["runtime"] > 0 for e in g["running"])
    failed = {e["label"]: (e["state"], e["exit_code"]) for e in g["failed"]}
    assert failed == {"ETHUSDT@250": ("failed", 3), "SOLUSDT@250": ("killed", None),
                      "XRPUSDT@250": ("dependency_failed", None)}
    assert sorted(wanted) == [1, 2, 9]  # ids resolved from labels in this poll, used for logs


def test_no_task_id_leaves_the_summary(fixtures: Path) -> None:
    summary, _ = mf.summarize(load(fixtures, "status-mixed.json"), "p1", now=NOW)
    mf.attach_logs(summary, load(fixtures, "log-json-task1-failed.json"), 5)
    text = json.dumps(summary)
    assert '"id"' not in text and "_log_id" not in text
    failed = {e["label"]: e for e in summary["groups"]["p1"]["failed"]}
    assert failed["ETHUSDT@250"]["log"] == ["failing"]


def test_requeued_label_is_judged_by_its_newest_attempt() -> None:
    data = state(task(3, "BTC@250", done({"Failed": 1})), task(7, "BTC@250", done("Success")),
                 task(4, "ETH@250", done("Success")))
    snap = snap_of(data)
    g = snap.view("p1")
    assert g.counts == {"success": 2} and g.total == 2 and g.superseded == 1
    assert g.all_done and snap.exit_code == 0
    # and the other way round: the re-run failed after a success
    data = state(task(3, "BTC@250", done("Success")), task(7, "BTC@250", done({"Failed": 2})))
    g = snap_of(data).view("p1")
    assert [(t.label, t.exit_code, t.attempts) for t in g.failed] == [("BTC@250", 2, 2)]


def test_requeued_label_still_running_is_not_done() -> None:
    data = state(task(3, "BTC@250", done({"Failed": 1})), task(8, "BTC@250", QUEUED))
    snap = snap_of(data)
    assert not snap.view("p1").all_done and snap.exit_code == 3


def test_blocked_dependents_in_a_paused_group() -> None:
    data = state(task(1, "sweep:a", done({"Failed": 1})), task(2, "sweep:b", done("Success")),
                 task(3, "optimize", QUEUED, deps=(1, 2)), task(4, "validate", QUEUED, deps=(3,)),
                 groups={"p1": "Paused"})
    g = snap_of(data).view("p1")
    assert {t.label: t.after for t in g.blocked} == {"optimize": ("sweep:a",),
                                                      "validate": ("optimize",)}
    assert g.settled and not g.all_done and g.failures == 3 and g.outcome == "failed"


def test_dependency_in_another_group_is_not_blocked_when_it_is_listed() -> None:
    data = state(task(1, "a", RUNNING, group="p2"), task(2, "opt", QUEUED, deps=(1,)),
                 groups={"p1": "Running", "p2": "Running"})
    g = snap_of(data).view("p1")
    assert g.count("queued") == 1 and not g.blocked and g.ready == 0
    # a --group listing lacks the dependency: not evidence that it is gone
    only_p1 = {"tasks": {"2": data["tasks"]["2"]}, "groups": data["groups"]}
    summary, _ = mf.summarize(only_p1, "p1", now=NOW, complete=False)
    assert summary["groups"]["p1"]["blocked"] == []
    summary, _ = mf.summarize(only_p1, "p1", now=NOW)
    assert summary["groups"]["p1"]["blocked"][0]["after"] == ["missing"]


# ---- picking one group out of a big status without parsing the rest -------------------------

def compact(data: dict[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":"))


def test_scan_picks_the_group_and_its_dependencies(fixtures: Path) -> None:
    data = state(task(1, "a", done("Success"), group="p2"), task(2, "opt", QUEUED, deps=(1,)),
                 task(3, "b", done({"Failed": 1})), task(4, "x", RUNNING, group="p2"),
                 groups={"p1": "Running", "p2": "Running"})
    picked = mf.load_state(compact(data), "p1")
    assert sorted(picked["tasks"]) == ["1", "2", "3"] and picked["groups"] == data["groups"]
    for name in ("status-mixed.json", "state-file.json", "status-empty.json"):
        raw = (fixtures / name).read_text()
        full = json.loads(raw)
        for group in ("p1", "default", "nope"):
            want = {k: t for k, t in full["tasks"].items() if t["group"] == group}
            got = mf.load_state(raw, group)
            assert {k: v for k, v in got["tasks"].items() if k in want} == want
            assert got["groups"] == full["groups"]


def test_scan_is_not_fooled_by_strings_or_envs() -> None:
    sneaky = task(1, "p1-lookalike", done("Success"), group="p2",
                  command='echo \'"group":"p1",\' {"id":7,')
    sneaky["envs"] = {"A": "0", "group": "p1", "X": "1"}  # `,"group":"p1",` in envs
    data = state(sneaky, task(2, "real", QUEUED), groups={"p1": "Running", "p2": "Running"})
    assert sorted(mf.load_state(compact(data), "p1")["tasks"]) == ["2"]


def test_scan_falls_back_to_a_full_parse_for_other_layouts() -> None:
    data = state(task(1, "a", done("Success")), task(2, "b", done("Success"), group="p2"),
                 groups={"p1": "Running", "p2": "Running"})
    pretty = json.dumps(data, indent=2)
    assert mf.load_state(pretty, "p1") == data  # full parse: every task, still correct
    summary, _ = mf.summarize(mf.load_state(pretty, "p1"), "p1", now=NOW)
    assert summary["groups"]["p1"]["total"] == 1


def test_label_glob_filters_on_the_host() -> None:
    data = state(task(1, "BTC@250", done("Success")), task(2, "ETH@250", done({"Failed": 1})),
                 task(3, None, RUNNING, command="sleep 10"))
    g = snap_of(data, glob="BTC*").view("p1")
    assert g.total == 1 and g.all_done
    g = snap_of(data).view("p1")
    assert [t.label for t in g.running] == ["(no label) sleep 10"]


def test_lists_are_capped_and_counted() -> None:
    data = state(*[task(i, f"job{i}", done({"Failed": 1})) for i in range(30)])
    summary, wanted = mf.summarize(data, "p1", limit=10, log_labels=3, now=NOW)
    g = summary["groups"]["p1"]
    assert len(g["failed"]) == 10 and g["truncated"] == {"failed": 20}
    assert g["counts"] == {"failed": 30} and len(wanted) == 3
    assert [e["label"] for e in g["failed"][:3]] == ["job29", "job28", "job27"]  # newest first


def test_pending_dependants_for_clean() -> None:
    data = state(task(1, "a", done("Success")), task(2, "opt", QUEUED, group="p2", deps=(1,)),
                 task(3, "b", done("Success")),
                 groups={"p1": "Running", "p2": "Running"})
    summary, _ = mf.summarize(data, "p1", chains=True, now=NOW)
    assert summary["chains"] == [{"label": "opt", "group": "p2", "state": "queued",
                                  "after": ["a"]}]


# ---- group_all_done and exit codes -----------------------------------------------------------

@pytest.mark.parametrize("counts,expected", [
    ({"success": 3}, True),
    ({"success": 1, "failed": 1}, True),
    ({}, False),
    ({"success": 1, "queued": 1}, False),
    ({"success": 1, "running": 1}, False),
    ({"success": 1, "paused": 1}, False),
    ({"success": 1, "stashed": 1}, False),  # a delayed task will still run
    ({"success": 1, "blocked": 1}, False),
])
def test_group_all_done(counts: dict[str, int], expected: bool) -> None:
    g = GroupView("p1", "Running", 2, counts, total=sum(counts.values()))
    assert group_all_done(g) is expected


def test_exit_codes_single_host() -> None:
    ok = snap_of(state(task(1, "a", done("Success"))))
    failed = snap_of(state(task(1, "a", done({"Failed": 1})), task(2, "b", RUNNING)))
    running = snap_of(state(task(1, "a", done("Success")), task(2, "b", RUNNING)))
    empty = snap_of(state())
    assert (ok.exit_code, failed.exit_code, running.exit_code, empty.exit_code) == (0, 1, 3, 3)


def test_board_exit_code_precedence() -> None:
    ok = HostResult("a", snap_of(state(task(1, "a", done("Success"))), host="a"))
    running = HostResult("b", snap_of(state(task(1, "a", RUNNING)), host="b"))
    failed = HostResult("c", snap_of(state(task(1, "a", done({"Failed": 9}))), host="c"))
    down = HostResult("d", error=RemoteError("d: unreachable"))
    bad = HostResult("e", error=ConfigError("e: group 'x' is nowhere"))
    assert board_exit_code([ok]) == 0
    assert board_exit_code([ok, running]) == 3
    assert board_exit_code([ok, down, running]) == 4
    assert board_exit_code([failed, down]) == 1
    assert board_exit_code([bad]) == 2


# ---- the real command, run locally against a scripted pueue ----------------------------------

FAKE_PUEUE = textwrap.dedent("""\
    #!{python}
    import json, os, sys
    args = sys.argv[1:]
    with open(os.environ["FAKE_PUEUE_CALLS"], "a") as fh:
        fh.write(" ".join(args) + "\\n")
    if os.environ.get("FAKE_PUEUE_DOWN"):
        sys.stderr.write("Error: Failed to initialize client. Did you start it?\\n")
        sys.exit(1)
    if args[0] == "status":
        data = json.load(open(os.environ["FAKE_PUEUE_STATE"]))
        if "--group" in args:
            g = args[args.index("--group") + 1]
            data["tasks"] = {{k: t for k, t in data["tasks"].items() if t["group"] == g}}
        print(json.dumps(data))
    elif args[0] == "log":
        ids = [a for a in args[4:]]
        print(json.dumps({{i: {{"output": "line1\\nline2\\nboom " + i + "\\n"}} for i in ids}}))
""")


@pytest.fixture
def scripted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fixtures: Path) -> dict[str, Any]:
    pueue = tmp_path / "bin" / "pueue"
    pueue.parent.mkdir()
    pueue.write_text(FAKE_PUEUE.format(python=sys.executable))
    pueue.chmod(0o755)
    home = tmp_path / "home"
    (home / ".local/share/pueue").mkdir(parents=True)
    statefile = home / ".local/share/pueue/state.json"
    statefile.write_text((fixtures / "status-mixed.json").read_text())
    calls = tmp_path / "calls"
    calls.write_text("")
    for key in ("PUEUE_CONFIG_PATH", "XDG_CONFIG_HOME", "XDG_DATA_HOME"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("FAKE_PUEUE_STATE", str(statefile))
    monkeypatch.setenv("FAKE_PUEUE_CALLS", str(calls))
    host = Host(name="local", ssh="local", project_dir="~/project", package="mypkg",
                pueue=str(pueue), groups={"p1": GroupSpec("p1", 2, 1, 4)})
    return {"host": host, "calls": calls, "state": statefile}


def test_filter_command_end_to_end_locally(scripted: dict[str, Any]) -> None:
    remote = LocalRemote(scripted["host"])
    snap = read_snapshot(remote, Options(group="p1", swap_window=0.05))
    assert remote.round_trips == 1 and snap.via == "filter"
    g = snap.view("p1")
    assert g.total == 10 and g.failures == 3 and snap.exit_code == 1
    logs = {t.label: t.log for t in g.failed}
    assert logs["ETHUSDT@250"] == ("line1", "line2", "boom 1")
    calls = scripted["calls"].read_text().splitlines()
    assert calls == ["status --json", "log --json --lines 5 1 2 9"]
    h = snap.health
    assert h.nproc and h.nproc >= 1 and h.state_size == scripted["state"].stat().st_size
    assert h.swap_window is not None and h.swap_window >= 0.05
    # what came back is the summary, far smaller than the state
    assert snap.received < scripted["state"].stat().st_size


def test_log_tails_are_read_from_pueues_task_logs(scripted: dict[str, Any]) -> None:
    logs = scripted["state"].parent / "task_logs"
    logs.mkdir()
    for tid in (1, 2, 9):
        (logs / f"{tid}.log").write_text("".join(f"line {n}\n" for n in range(100)) + f"t{tid}\n")
    snap = read_snapshot(LocalRemote(scripted["host"]), Options(group="p1", log_lines=2,
                                                                 swap_window=0))
    assert {t.label: t.log for t in snap.view("p1").failed}["ETHUSDT@250"] == ("line 99", "t1")
    assert scripted["calls"].read_text().splitlines() == ["status --json"]  # no `pueue log`


def test_fallback_without_python3_gives_the_same_summary(scripted: dict[str, Any]) -> None:
    remote = LocalRemote(scripted["host"])
    filtered = read_snapshot(remote, Options(group="p1", swap_window=0))
    plain = read_snapshot(remote, Options(group="p1", python="no-such-python3"))
    assert plain.via == "plain"
    assert [g.to_dict() for g in plain.groups] == [
        {**g.to_dict(), "running": [{**t, "runtime": pytest.approx(t["runtime"], abs=5)}
                                    for t in g.to_dict()["running"]]}
        for g in filtered.groups]
    assert plain.health.state_size == filtered.health.state_size
    assert plain.health.load is not None and plain.health.nproc == filtered.health.nproc


def test_daemon_down_is_a_remote_error(scripted: dict[str, Any],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_PUEUE_DOWN", "1")
    with pytest.raises(RemoteError, match="Did you start it"):
        read_snapshot(LocalRemote(scripted["host"]), Options(group="p1", swap_window=0))
    with pytest.raises(RemoteError, match="Did you start it"):
        read_snapshot(LocalRemote(scripted["host"]),
                      Options(group="p1", python="no-such-python3"))


def test_unknown_group_nowhere_declared_is_bad_input(scripted: dict[str, Any]) -> None:
    w = Watcher(scripted["host"], Options(group="nope", swap_window=0), LocalRemote)
    result = w.poll()
    assert isinstance(result.error, ConfigError)
    assert board_exit_code([result]) == 2


def test_state_dir_follows_pueue_config(tmp_path: Path) -> None:
    cfg = tmp_path / "pueue.yml"
    cfg.write_text("shared:\n  pueue_directory: ~/data/pq\n  runtime_directory: /r\n")
    env = {"HOME": "/home/u", "PUEUE_CONFIG_PATH": str(cfg)}
    assert mf.state_dir(env) == "/home/u/data/pq"
    assert mf.state_dir({"HOME": "/home/u"}) == "/home/u/.local/share/pueue"
    assert mf.state_dir({"HOME": "/h", "XDG_DATA_HOME": "/x"}) == "/x/pueue"


# ---- health ----------------------------------------------------------------------------------

def test_swap_activity_is_measured_over_the_interval() -> None:
    first = Health(swap_counters=(100, 50), swap_in=0, swap_out=0, swap_window=0.25)
    second = Health(swap_counters=(130, 50), swap_in=0, swap_out=0, swap_window=0.25)
    assert second.since(first, 60).swap_in == 30 and second.since(first, 60).swap_window == 60
    assert second.since(None, 60) == second
    rebooted = Health(swap_counters=(1, 0), swap_in=0, swap_out=0)
    assert rebooted.since(first, 60).swap_in == 0


def test_health_verdicts_reuse_the_probe_rules() -> None:
    host = Host(name="h", ssh="local", project_dir="~/p", package="x")
    h = Health(nproc=4, load=(3.7, 1, 1), mem_total=100, mem_available=50, swap_in=0,
               swap_out=3, state_size=12 * 1024**2, state_file="/s/state.json")
    by = {v.name: v for v in h.verdicts(host)}
    assert set(by) == {"load", "swap", "memory", "state file"}
    assert by["load"].level == "alarm" and "0.9 x 4" in by["load"].detail
    assert by["swap"].level == "alarm" and by["memory"].level == "ok"
    assert by["state file"].level == "warn"
    assert {v.name: v.level for v in Health(state_size=60 * 1024**2).verdicts(host)}[
        "state file"] == "alarm"


# ---- the watch loop --------------------------------------------------------------------------

class Scripted:
    """A watcher whose polls come from a list (the last one repeats)."""

    def __init__(self, results: list[HostResult]) -> None:
        self.results = results
        self.polls = 0

    def poll(self) -> HostResult:
        self.polls += 1
        return self.results[min(self.polls - 1, len(self.results) - 1)]

    def close(self) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s


def test_until_done_stops_when_settled() -> None:
    running = HostResult("h", snap_of(state(task(1, "a", RUNNING))))
    finished = HostResult("h", snap_of(state(task(1, "a", done("Success")))))
    w, clock = Scripted([running, running, finished]), Clock()
    board = watch([w], interval=10, timeout=100, sleep=clock.sleep, clock=clock)  # type: ignore[list-item]
    assert w.polls == 3 and clock.t == 20 and board_exit_code(board) == 0


def test_until_done_timeout_gives_still_running() -> None:
    running = HostResult("h", snap_of(state(task(1, "a", RUNNING))))
    w, clock = Scripted([running]), Clock()
    board = watch([w], interval=10, timeout=25, sleep=clock.sleep, clock=clock)  # type: ignore[list-item]
    assert clock.t == 25 and w.polls == 4 and board_exit_code(board) == 3


def test_a_blocked_chain_ends_the_wait_as_failed() -> None:
    data = state(task(1, "a", done({"Failed": 1})), task(2, "b", QUEUED, deps=(1,)),
                 groups={"p1": "Paused"})
    w, clock = Scripted([HostResult("h", snap_of(data))]), Clock()
    board = watch([w], interval=10, timeout=100, sleep=clock.sleep, clock=clock)  # type: ignore[list-item]
    assert w.polls == 1 and board_exit_code(board) == 1


def test_a_host_error_is_retried_on_the_next_poll() -> None:
    down = HostResult("h", error=RemoteError("h: connection lost"))
    finished = HostResult("h", snap_of(state(task(1, "a", done("Success")))))
    w, clock = Scripted([down, finished]), Clock()
    board = watch([w], interval=5, timeout=60, sleep=clock.sleep, clock=clock)  # type: ignore[list-item]
    assert w.polls == 2 and board_exit_code(board) == 0


# ---- the view --------------------------------------------------------------------------------

def render(board: list[HostResult], hosts: dict[str, Host]) -> str:
    buf = io.StringIO()
    Console(file=buf, width=140, color_system=None, force_terminal=False).print(
        monitor_view(board, hosts, now=NOW))
    return buf.getvalue()


def test_view_shows_counts_running_failed_logs_blocked_and_health(fixtures: Path) -> None:
    data = load(fixtures, "status-mixed.json")
    data["tasks"]["20"] = task(20, "optimize", QUEUED, deps=(1,))
    data["groups"]["p1"]["status"] = "Paused"
    summary, _ = mf.summarize(data, "p1", now=NOW)
    mf.attach_logs(summary, {"1": {"output": "Traceback\nValueError: bad input\n"}}, 5)
    health = {"nproc": 4, "load": [3.9, 2.0, 1.0], "mem_total": 8 * 1024**3,
              "mem_available": 6 * 1024**3, "swap_in": 0, "swap_out": 0, "swap_window": 60,
              "state_file": "/s/state.json", "state_size": 11 * 1024**2}
    snap = snapshot_from("bigblack", {**summary, "health": health}, Options(group="p1"), at=NOW)
    host = Host(name="bigblack", ssh="x", project_dir="~/p", package="x")
    down = HostResult("littleblack", error=RemoteError("littleblack: unreachable"))
    out = render([HostResult("bigblack", snap), down], {"bigblack": host})
    assert "exit 1: some failed" in out
    assert "BTCUSDT@500" in out and "ETHUSDT@250" in out and "ValueError: bad input" in out
    assert "optimize" in out and "blocked dependents" in out
    assert "3.90 of 4 cores (limit 3.6)" in out
    for token in ("queued=2", "running=1", "paused=1", "stashed=2", "blocked=1", "success=1",
                  "failed=3", "group paused"):
        assert token in out
    assert "si 0 so 0 in 60s" in out and "6.0 GiB (25% used)" in out
    assert "11.0 MB warn" in out
    assert "error: littleblack: unreachable" in out
