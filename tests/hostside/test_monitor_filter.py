"""The monitor's remote filter (monitor_filter.py): states normalised like the pueue
parser, the summary by label, picking one group out of a big status, the state dir."""

from __future__ import annotations

import contextlib
import gzip
import io
import json
from pathlib import Path
from typing import Any

from jobsafe_ops.hostside import monitor_filter as mf
from jobsafe_ops.scheduler.pueue import parse_status
from tests.status_data import NOW, QUEUED, RUNNING, done, load, snap_of, state, task

# ---- the filter's normalisation agrees with jobsafe_ops.scheduler.pueue ------------------

def test_filter_states_match_the_pueue_parser_on_every_fixture(fixtures: Path) -> None:
    names = [p.name for p in fixtures.glob("*.json") if not p.name.startswith("log-")]
    assert len(names) >= 10
    for name in names:
        data = load(fixtures, name)
        parsed = parse_status(json.dumps(data))
        ours = mf.normalise(data)
        blocked = mf.blocked_ids({i: (t["state"], t["deps"]) for i, t in ours.items()})
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


def test_dependency_in_another_group_is_not_blocked_when_it_is_listed() -> None:
    data = state(task(1, "a", RUNNING, group="p2"), task(2, "opt", QUEUED, deps=(1,)),
                 groups={"p1": "Running", "p2": "Running"})
    g = snap_of(data).view("p1")
    assert g.count("queued") == 1 and not g.blocked and g.ready == 0
    # a --group listing lacks the dependency: not evidence that it is gone, and even gone
    # it would not block (pueue 4.0.4 starts a task whose dependency is absent); the audit
    # parser says the same (tests/hostside/test_model.py: the case the two disagreed on)
    only_p1 = {"tasks": {"2": data["tasks"]["2"]}, "groups": data["groups"]}
    summary, _ = mf.summarize(only_p1, "p1", now=NOW)
    assert summary["groups"]["p1"]["blocked"] == []
    assert summary["groups"]["p1"]["counts"] == {"queued": 1}


def test_a_fresh_retry_supersedes_the_failed_attempts() -> None:
    # retry-failed re-adds `X-retry-N`: once it succeeds, X is done, not failed (AP-3)
    data = state(task(1, "BTC@250", done({"Failed": 1})),
                 task(2, "BTC@250-retry-1", done({"Failed": 1})),
                 task(3, "BTC@250-retry-2", done("Success")), task(4, "ETH@250", done("Success")),
                 task(5, "ETH@250-retry-x", done({"Failed": 2})))
    g = snap_of(data).view("p1")
    assert g.total == 3 and g.count("success") == 2
    assert [t.label for t in g.failed] == ["ETH@250-retry-x"]  # not a retry suffix: its own job
    summary, _ = mf.summarize(data, "p1", now=NOW)
    assert summary["groups"]["p1"]["superseded"] == 2
    # a retry still running keeps the job running
    data = state(task(1, "BTC@250", done({"Failed": 1})), task(2, "BTC@250-retry-1", RUNNING))
    g = snap_of(data).view("p1")
    assert [t.label for t in g.running] == ["BTC@250-retry-1"] and not g.failed


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


def test_state_dir_follows_pueue_config(tmp_path: Path) -> None:
    cfg = tmp_path / "pueue.yml"
    cfg.write_text("shared:\n  pueue_directory: ~/data/pq\n  runtime_directory: /r\n")
    env = {"HOME": "/home/u", "PUEUE_CONFIG_PATH": str(cfg)}
    assert mf.state_dir(env) == "/home/u/data/pq"
    assert mf.state_dir({"HOME": "/home/u"}) == "/home/u/.local/share/pueue"
    assert mf.state_dir({"HOME": "/h", "XDG_DATA_HOME": "/x"}) == "/x/pueue"


def test_scan_finds_a_task_whose_envs_start_with_id() -> None:
    # `"envs":{"id":...` also reads `{"id":`; the task must still be found (pueue keeps
    # envs in a HashMap, so any variable can come first)
    t = task(1, "a", QUEUED)
    t["envs"] = {"id": "7", "group": "p1"}
    data = state(t, task(2, "b", done("Success"), group="p2"),
                 groups={"p1": "Running", "p2": "Running"})
    assert sorted(mf.load_state(compact(data), "p1")["tasks"]) == ["1"]


# ---- the filter reads pueue's state file on the host (issue 12 item 10) ---------------------

FAKE_CLIENT = """#!/bin/sh
echo "$*" >> "$0.calls"
if [ -f "$0.down" ]; then
  echo 'Error: Failed to initialize client. ... while connecting to daemon. Did you start it?' >&2
  exit 1
fi
case "$1" in group) echo '{}';; *) echo "only group is cheap" >&2; exit 9;; esac
"""


class _Daemon:
    """A host HOME with the real default pueue.yml, a state file, and a pueue client that
    answers only the cheap `pueue group --json` (a `status` call fails loudly)."""

    def __init__(self, tmp_path: Path, monkeypatch: Any, fixtures: Path) -> None:
        self.home = tmp_path / "home"
        cfg = self.home / ".config" / "pueue" / "pueue.yml"
        cfg.parent.mkdir(parents=True)
        cfg.write_bytes((fixtures / "default-pueue.yml").read_bytes())  # nulls: defaults
        self.dir = self.home / ".local" / "share" / "pueue"
        self.dir.mkdir(parents=True)
        self.state = self.dir / "state.json"
        self.state.write_bytes((fixtures / "state-file.json").read_bytes())
        for key in ("PUEUE_CONFIG_PATH", "XDG_CONFIG_HOME", "XDG_DATA_HOME",
                    "XDG_RUNTIME_DIR"):
            monkeypatch.delenv(key, raising=False)
        monkeypatch.setenv("HOME", str(self.home))
        monkeypatch.chdir(self.home)
        self.pueue = tmp_path / "pueue"
        self.pueue.write_text(FAKE_CLIENT)
        self.pueue.chmod(0o755)

    def stop(self) -> None:
        Path(str(self.pueue) + ".down").write_text("")  # the daemon is gone

    def calls(self) -> list[str]:
        path = Path(str(self.pueue) + ".calls")
        return path.read_text().splitlines() if path.exists() else []

    def run(self, *extra: str) -> dict[str, Any]:
        args = ["--pueue", str(self.pueue), "--group", "p1", "--swap-window", "0",
                "--log-lines", "0", *extra]
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            assert mf.main(args) == 0
        out: dict[str, Any] = json.loads(buf.getvalue())
        return out


def test_filter_reads_the_state_file_when_the_daemon_runs(
        tmp_path: Path, monkeypatch: Any, fixtures: Path) -> None:
    d = _Daemon(tmp_path, monkeypatch, fixtures)
    try:
        out = d.run()
        assert out["source"] == "state_file" and "error" not in out
        assert d.calls() == ["group --json"]  # the cheap liveness round trip, no status
        want, _ = mf.summarize(load(fixtures, "status-mixed.json"), "p1", log_labels=5)
        assert out["groups"]["p1"]["counts"] == want["groups"]["p1"]["counts"]
        assert out["health"]["state_file"] == str(d.state)
        assert out["health"]["state_size"] == d.state.stat().st_size
        # compress_state_file: the daemon writes state.json.gz instead
        cfg = d.home / ".config" / "pueue" / "pueue.yml"
        cfg.write_text(cfg.read_text().replace("compress_state_file: false",
                                               "compress_state_file: true"))
        gz = d.dir / "state.json.gz"
        gz.write_bytes(gzip.compress(d.state.read_bytes()))
        d.state.write_text("{not json")  # the stale plain file is not read
        out = d.run()
        assert out["source"] == "state_file"
        assert out["groups"]["p1"]["counts"] == want["groups"]["p1"]["counts"]
        gz.write_bytes(b"\x1f\x8b broken")  # unreadable: ask pueue (which fails here)
        out = d.run()
        assert out["source"] == "status" and out["error"].startswith(mf.STATUS_FAILED)
        assert d.calls()[-2:] == ["group --json", "status --json"]
    finally:
        d.stop()


def test_filter_never_reads_the_state_file_of_a_stopped_daemon(
        tmp_path: Path, monkeypatch: Any, fixtures: Path) -> None:
    d = _Daemon(tmp_path, monkeypatch, fixtures)
    assert d.run()["source"] == "state_file"
    d.stop()  # the state file stays behind, as after a crash
    out = d.run()
    # `pueue status` decides, with pueue's own words: the error path, never "healthy"
    assert out["source"] == "status" and out["error"].startswith(mf.STATUS_FAILED)
    assert "Did you start it?" in out["error"] and "groups" not in out


def test_no_state_file_flag_asks_pueue(tmp_path: Path, monkeypatch: Any,
                                       fixtures: Path) -> None:
    d = _Daemon(tmp_path, monkeypatch, fixtures)
    assert d.run("--no-state-file")["source"] == "status"
    assert d.calls() == ["status --json"]


def test_a_group_holding_most_tasks_is_parsed_once_and_still_picked() -> None:
    many = [task(i, f"a{i}", done("Success")) for i in range(1, 1300)]
    data = state(*many, task(1300, "other", QUEUED, group="p2"),
                 groups={"p1": "Running", "p2": "Running"})
    got = mf.load_state(compact(data), "p1")
    # the cheaper full parse serves it; the summary only counts p1 either way
    summary, _ = mf.summarize(got, "p1", now=NOW)
    assert summary["groups"]["p1"]["total"] == 1299
