"""The outcome ledger: the wrapper (feeder.py run) as the host runs it, reading ledgers
(torn last lines, concurrent appends), the merge into pueue's state, and submit-batch's
rules after a clean (a label is done only when an outcome says it succeeded)."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from jobsafe_ops.batch.model import JobSpec
from jobsafe_ops.batch.plan import decide, make_units
from jobsafe_ops.facts import ledger
from jobsafe_ops.hostside import monitor_filter
from jobsafe_ops.hostside.bundle import write_bundle
from jobsafe_ops.hostside.feeder import LEDGER_MARK, append_record, inner_command
from jobsafe_ops.scheduler.pueue import PueueState, Task

# the feeder as a host runs it: bundled with the shared model, alone in its directory
_FEEDER_DIR = tempfile.TemporaryDirectory(prefix="jobsafe-feeder-")
FEEDER = write_bundle("feeder", Path(_FEEDER_DIR.name))


def run(tmp_path: Path, label: str, *argv: str, **kw: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, str(FEEDER), "run", "--ledger",
                             str(tmp_path / "ledger.ndjson"), "--label", label, "--group", "g",
                             "--", *argv], cwd=tmp_path, **kw)


def records(tmp_path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (tmp_path / "ledger.ndjson").read_text().splitlines()]


# ---- the wrapper ---------------------------------------------------------------------------

def markers(tmp_path: Path) -> list[dict[str, Any]]:
    return monitor_filter.read_markers(str(tmp_path / "ledger.ndjson"))


def wait_marker(tmp_path: Path) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while not markers(tmp_path):
        assert time.monotonic() < deadline, "the wrapper wrote no start marker"
        time.sleep(0.02)
    [start] = markers(tmp_path)
    return start


def test_wrapper_keeps_the_exit_code_and_records_the_end(tmp_path: Path) -> None:
    assert run(tmp_path, "j-retry-2", "sh", "-c", "echo out; exit 3").wait() == 3
    [end] = records(tmp_path)  # one line per job: the end
    assert (end["event"], end["outcome"], end["exit"], end["label"], end["group"]) == (
        "end", "failed", 3, "j-retry-2", "g")
    assert end["attempt"] == 2 and end["start"] <= end["end"]
    assert end["command"] == "echo out; exit 3" and end["workdir"] == str(tmp_path)
    assert end["batch"] == tmp_path.name and markers(tmp_path) == []  # the end removes it
    assert run(tmp_path, "ok", "true").wait() == 0
    assert records(tmp_path)[-1]["outcome"] == "success"
    assert "command" not in records(tmp_path)[-1]  # successes stay small


def test_wrapper_reports_a_missing_program_as_127(tmp_path: Path) -> None:
    assert run(tmp_path, "x", "/nonexistent/prog").wait() == 127
    assert records(tmp_path)[-1]["exit"] == 127


def test_a_terminated_job_is_recorded_killed(tmp_path: Path) -> None:
    proc = run(tmp_path, "t", "sh", "-c", "sleep 30")
    wait_marker(tmp_path)
    time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 143
    end = records(tmp_path)[-1]
    assert (end["outcome"], end["signal"], end["exit"]) == ("killed", "SIGTERM", 143)


def test_a_sigkilled_wrapper_leaves_a_start_read_as_killed(tmp_path: Path) -> None:
    proc = run(tmp_path, "k", "sh", "-c", "sleep 30", start_new_session=True)
    start = wait_marker(tmp_path)
    assert start["pid"] == proc.pid and monitor_filter.outcome(start) == "running"
    path = str(tmp_path / "ledger.ndjson")
    assert monitor_filter.ledger_records("g", paths=[path]) == []  # running: not a failure
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    [lost] = monitor_filter.ledger_records("g", paths=[path])
    assert (lost["label"], lost["_outcome"]) == ("k", "killed")


# ---- reading ---------------------------------------------------------------------------------

def latest(path: Path, group: str) -> dict[tuple[str, str], dict[str, Any]]:
    return monitor_filter.decoded(monitor_filter.read_ledger(str(path), group))


def test_torn_and_foreign_lines_are_ignored_and_the_last_record_wins(tmp_path: Path) -> None:
    path = tmp_path / "ledger.ndjson"
    good = {"label": "a", "group": "g", "event": "end", "exit": 1, "outcome": "failed"}
    path.write_text(json.dumps(good, separators=(",", ":")) + "\nnot json\n[1]\n"
                    + json.dumps({**good, "group": "other"}, separators=(",", ":")) + "\n"
                    + json.dumps({**good, "exit": 0, "outcome": "success"},
                                 separators=(",", ":"))[:-5])  # torn: no newline
    got = latest(path, "g")
    assert list(got) == [("g", "a")] and got[("g", "a")]["exit"] == 1
    append_record(str(path), {**good, "exit": 0, "outcome": "success"})  # after the torn tail
    assert latest(path, "g")[("g", "a")]["outcome"] == "success"
    assert len(path.read_text().splitlines()) == 6  # the torn line was ended, not rewritten


def test_concurrent_appends_never_interleave(tmp_path: Path) -> None:
    path = str(tmp_path / "ledger.ndjson")
    pad = "x" * 5000  # longer than one pipe buffer: flock, not luck, keeps lines whole

    def one(i: int) -> None:
        append_record(path, {"label": f"l{i}", "group": "g", "event": "end", "exit": 0,
                             "outcome": "success", "pad": pad})

    root = str(Path(ledger.__file__).parents[2])
    script = (f"import sys; sys.path.insert(0, {root!r})\n"
              "from jobsafe_ops.hostside.feeder import append_record\n"
              "for i in range(50): append_record(sys.argv[1], {'label': sys.argv[2] + str(i), "
              "'group': 'g', 'event': 'end', 'exit': 0, 'outcome': 'success', "
              "'pad': sys.argv[3]})")
    procs = [subprocess.Popen([sys.executable, "-c", script, path, f"p{n}-", pad])
             for n in range(4)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(100)))
    assert all(p.wait() == 0 for p in procs)
    lines = Path(path).read_text().splitlines()
    assert len(lines) == 300 and all(json.loads(x)["pad"] == pad for x in lines)


def rec(label: str, outcome: str, exit_code: int, **kw: Any) -> dict[str, Any]:
    return {"label": label, "group": "g", "event": "end", "outcome": outcome, "exit": exit_code,
            "start": "2026-01-01T00:00:00Z", "end": "2026-01-01T00:00:01Z",
            "command": "sh job.sh", "workdir": "/w", "_ledger": "/b/p/ledger.ndjson", **kw}


def test_only_jobs_with_a_failure_on_record_are_relevant(tmp_path: Path) -> None:
    path = tmp_path / "ledger.ndjson"
    for r in (rec("a", "failed", 1), rec("a-retry-1", "success", 0), rec("b", "success", 0),
              rec("c", "killed", 143), rec("u1", "success", 0, unit="p:unit-00000-abcdef01"),
              rec("u2", "failed", 2, unit="p:unit-00000-abcdef01"),
              rec("x", "failed", 1, group="other"), rec('q"uote', "failed", 1)):
        r.pop("_ledger")
        append_record(str(path), {"v": 1, "label": r.pop("label"), "group": r.pop("group"),
                                  **r})
    raws = monitor_filter.read_ledger(str(path), "g")
    got = sorted(r["label"] for r in monitor_filter.relevant(raws, boot=""))
    assert got == ["a", "a-retry-1", "c", "q\"uote", "u1", "u2"]  # b: every attempt succeeded
    assert all(r["_ledger"] == str(path) for r in monitor_filter.relevant(raws, boot=""))


# ---- merging into pueue's state ----------------------------------------------------------

def task(tid: int, label: str, state: str, code: int | None = None) -> Task:
    return Task(tid, "g", label, "cmd", "/w", state, code)


def test_merge_adds_cleaned_outcomes_and_pueue_wins_for_labels_it_has() -> None:
    state = PueueState((task(0, "a-retry-1", "queued"), task(1, "b", "success", 0)), {}, "v4")
    merged = ledger.merge(state, [
        {**rec("a", "failed", 1), "_outcome": "failed"},
        {**rec("b", "failed", 1), "_outcome": "failed"},  # pueue still has b: ignored
        {**rec("c", "failed", 137), "_outcome": "failed"}])
    by = {t.label: t for t in merged.tasks}
    assert set(by) == {"a", "a-retry-1", "b", "c"} and by["b"].state == "success"
    assert by["a"].state == "failed" and by["a"].id < 0 and by["c"].exit_code == 137
    assert by["a"].path == "/w"
    # a retry of a recorded failure runs wrapped again, under its own new label
    inner = ledger.unwrap(ledger.relabel(by["c"].command, "c-retry-1", "g"))
    assert inner == ("/b/p", "c-retry-1", "sh job.sh")
    assert inner_command(by["c"].command) == "sh job.sh" == inner_command("sh job.sh")


def test_a_cancelled_attempt_is_skipped_by_a_rerun_unless_a_newer_one_exists(
        tmp_path: Path) -> None:
    """submit-batch's scan lists the newest cancelled attempt per job; merged, a rerun
    skips it (not run again), while a newer attempt pueue has keeps its own state."""
    path = tmp_path / "ledger.ndjson"
    for label, outcome in (("a", "failed"), ("a-retry-1", "cancelled"), ("b", "cancelled"),
                           ("d", "cancelled")):
        append_record(str(path), {"v": 1, "event": "end", "label": label, "group": "g",
                                  "outcome": outcome, "exit": None, "command": "x"})
    out = subprocess.run([sys.executable, "-c", "import sys; from jobsafe_ops.hostside import "
                          "monitor_filter as m; sys.exit(m.main(sys.argv[1:]))", "ledger",
                          "--ledger", str(path), "--succeeded"],
                         capture_output=True, text=True, check=True).stdout
    scan = ledger.parse_scan(out)
    assert scan["cancelled"] == [["g", "a-retry-1"], ["g", "b"], ["g", "d"]]
    assert scan["records"] == []  # a's failure is covered by the cancel of a newer attempt
    state = PueueState((task(0, "d-retry-1", "running"),), {}, "v4")
    merged = ledger.merge(state, scan["records"], scan["cancelled"])
    assert sorted((t.label, t.state) for t in merged.tasks) == [
        ("a-retry-1", "cancelled"), ("b", "cancelled"), ("d-retry-1", "running")]
    specs = [JobSpec(label=x, group="g", command="x", workdir="/w") for x in ("a", "b", "d")]
    by = {i.label: i for i in decide(specs, merged, {}, budget=2)}
    assert by["a"].action == by["b"].action == "skip" and "cancelled" in by["b"].reason
    assert by["d"].action == "skip" and "running" in by["d"].reason


def test_monitor_summary_shows_cleaned_failures_until_a_retry_succeeds() -> None:
    data: dict[str, Any] = {"tasks": {}, "groups": {"g": {"status": "Running",
                                                           "parallel_tasks": 1}}}
    added = monitor_filter.merge_ledger(data, [
        {**rec("a", "failed", 1), "_outcome": "failed"},
        {**rec("b", "failed", 1), "_outcome": "failed"},
        {**rec("b-retry-1", "success", 0), "_outcome": "success"}])
    assert added == 3
    summary, wanted = monitor_filter.summarize(data, "g")
    g = summary["groups"]["g"]
    assert [e["label"] for e in g["failed"]] == ["a"] and g["counts"] == {
        "failed": 1, "success": 1}
    assert wanted == {}  # ledger-only ids never reach `pueue log`


def test_a_failed_unit_is_replaced_by_its_commands() -> None:
    unit = "p:unit-00000-abcdef01"
    data: dict[str, Any] = {"tasks": {"4": {
        "id": 4, "group": "g", "label": unit, "command": "python3 feeder.py unit",
        "dependencies": [], "status": {"Done": {"result": {"Failed": 1}}}}},
        "groups": {"g": {"status": "Running", "parallel_tasks": 1}}}
    monitor_filter.merge_ledger(data, [
        {**rec("c1", "failed", 1, unit=unit), "_outcome": "failed"},
        {**rec("c2", "failed", 137, unit=unit), "_outcome": "failed"},
        {**rec("c3", "success", 0, unit=unit), "_outcome": "success"}])
    summary, _ = monitor_filter.summarize(data, "g")
    assert sorted(e["label"] for e in summary["groups"]["g"]["failed"]) == ["c1", "c2"]
    summary, _ = monitor_filter.summarize(data, "g", glob="c2")
    assert [e["label"] for e in summary["groups"]["g"]["failed"]] == ["c2"]


# ---- submit-batch's rules after a clean --------------------------------------------------------

def spec(label: str, **kw: Any) -> JobSpec:
    return JobSpec(label=label, group="g", workdir="/w", command=f"run {label}", **kw)


def empty() -> PueueState:
    return PueueState((), {}, "v4")


def test_a_cleaned_label_is_done_only_when_an_outcome_says_so() -> None:
    receipts = {"ok": "1" + LEDGER_MARK, "lost": "2" + LEDGER_MARK, "old": "3"}
    items = {i.label: i for i in decide([spec("ok"), spec("lost"), spec("old")], empty(),
                                        receipts, budget=2, succeeded={"ok"})}
    assert items["ok"].action == "skip" and items["old"].action == "skip"  # pre-ledger receipt
    assert (items["lost"].action, items["lost"].new_label) == ("add", "lost-retry-1")
    spent = decide([spec("lost")], empty(), receipts, budget=1, used={("g", "lost"): 1})
    assert spent[0].action == "refused"


def test_cleaned_failures_follow_the_retry_rules() -> None:
    merged = ledger.merge(empty(), [{**rec("oom", "failed", 137), "_outcome": "failed"},
                                    {**rec("bad", "failed", 1), "_outcome": "failed"}])
    receipts = {"oom": "1" + LEDGER_MARK, "bad": "2" + LEDGER_MARK}
    items = {i.label: i for i in decide([spec("oom"), spec("bad")], merged, receipts,
                                        budget=2)}
    assert (items["oom"].action, items["oom"].new_label) == ("add", "oom-retry-1")
    assert items["bad"].action == "failed"  # persistent: exit 1 for the run
    exhausted = decide([spec("oom")], merged, receipts, budget=1, used={("g", "oom"): 1})
    assert exhausted[0].action == "refused"


def test_units_mode_reruns_judge_each_command() -> None:
    jobs = [spec(f"c{i}") for i in range(3)]
    [unit] = make_units(jobs, playbook="p", size=10, parallel=2, batch_dir="/b/p", wrap=False)
    words = shlex.split(unit.spec.command)
    assert words[words.index("--ledger") + 1] == "/b/p/ledger.ndjson"
    assert words[words.index("--label") + 1] == unit.spec.label
    merged = ledger.merge(empty(), [
        {**rec("c0", "success", 0, unit=unit.spec.label), "_outcome": "success"},
        {**rec("c1", "failed", 137, unit=unit.spec.label), "_outcome": "failed"},
        {**rec("c2", "failed", 1, unit=unit.spec.label), "_outcome": "failed"}])
    items = decide([unit.spec], merged, {unit.spec.label: "5" + LEDGER_MARK}, budget=2,
                   units={unit.spec.label: unit.jobs})
    got = {i.label: (i.action, i.new_label) for i in items}
    assert got == {unit.spec.label: ("skip", None), "c0": ("skip", None),
                   "c1": ("add", "c1-retry-1"), "c2": ("failed", None)}
    # all commands succeeded and the unit was cleaned: done, nothing re-added
    again = decide([unit.spec], empty(), {unit.spec.label: "5" + LEDGER_MARK}, budget=2,
                   succeeded={"c0", "c1-retry-1", "c2-retry-1"},
                   units={unit.spec.label: unit.jobs})
    assert [(i.label, i.action) for i in again] == [(unit.spec.label, "skip")]


def test_receipts_of_recording_jobs_are_marked() -> None:
    from jobsafe_ops.hostside.feeder import mark

    wrapped = ledger.wrap("sh job.sh", "/home/a b/.local/state/jobsafe-ops/batches/p", "L", "g")
    assert mark({"command": wrapped}) == LEDGER_MARK  # a path with a space, quoted
    [unit] = make_units([spec("c0")], playbook="p", size=1, parallel=1, batch_dir="/b/p",
                        wrap=False)
    assert mark({"command": unit.spec.command}) == LEDGER_MARK
    assert mark({"command": "sh job.sh"}) == ""  # not recorded: a clean still means done


def test_the_wrapper_stays_outside_the_memory_cap() -> None:
    from jobsafe_ops.batch.plan import commands_file

    [item] = decide([spec("m", memory_max=256 * 1024**2)], empty(), {}, budget=1)
    [line] = [json.loads(x) for x in commands_file([item], True, {}, "/b/p").splitlines()]
    batch, label, inner = ledger.unwrap(line["command"]) or ("", "", "")
    assert (batch, label) == ("/b/p", "m")
    assert shlex.split(inner)[:3] == ["systemd-run", "--user", "--scope"]  # capped inside
