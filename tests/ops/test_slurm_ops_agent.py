"""The operations agent's Slurm branch (hostside/ops_agent.py `--scheduler slurm`), its
pure parts: squeue lines named through the batch's chunk files, where a label is now,
cancel's matching and afterok dependants; and a cancelled ledger record read the same way
by submit's exactly-once (slurm_model) and retry-failed on Slurm (batch/slurm_retry)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from jobsafe_ops.batch import slurm_retry
from jobsafe_ops.hostside import model, slurm_model
from jobsafe_ops.hostside import ops_agent as agent
from jobsafe_ops.hostside.bundle import bundle
from jobsafe_ops.mirror import AGENT_LOADER, AGENT_SOURCE


def batch(tmp_path: Path, name: str, digest: str, labels: list[str], group: str = "p1"
          ) -> str:
    bdir = tmp_path / name
    (bdir / "arrays").mkdir(parents=True)
    (bdir / "slurm_feed.py").write_text("")
    (bdir / "arrays" / f"{digest}.jsonl").write_text("".join(
        json.dumps({"label": lbl, "group": group, "command": "true"}) + "\n" for lbl in labels))
    return str(bdir)


def test_squeue_elements_are_named_by_their_chunk_files(tmp_path: Path) -> None:
    bdir = batch(tmp_path, "sweep", "ab12cd34ef", ["s:1", "s:2", "s:3", "s:4"])
    other = batch(tmp_path, "dep", "0123456789", ["d:after"])
    batches = agent.slurm_batches(str(tmp_path))
    assert batches == {"dep": other, "sweep": bdir}
    text = ("41_0|41|0|jobsafe:sweep:p1|RUNNING|None|ab12cd34ef|(null)\n"
            "41_[1-2%2]|41|1-2%2|jobsafe:sweep:p1|PENDING|JobArrayTaskLimit|ab12cd34ef|(null)\n"
            "41_3|41|3|jobsafe:sweep:p1|PENDING|JobHeldUser|ab12cd34ef|(null)\n"
            "42_0|42|0|jobsafe:dep:p1|PENDING|Dependency|0123456789|afterok:41_*(unfulfilled)\n"
            "43|43|N/A|someone-else|RUNNING|None||(null)\n"
            "44_0|44|0|jobsafe:gone:p1|RUNNING|None|ab12cd34ef|(null)\n"
            "41_9|41|9|jobsafe:sweep:p1|RUNNING|None|ab12cd34ef|(null)\n")
    els = agent.parse_elements(text, batches)
    by = {e["label"]: e for e in els}
    assert list(by) == ["s:1", "s:2", "s:3", "s:4", "d:after"]  # no line 9, no other batch
    assert (by["s:1"]["id"], by["s:1"]["state"]) == ("41_0", "running")
    assert [by[x]["id"] for x in ("s:2", "s:3")] == ["41_1", "41_2"]  # one per index
    assert by["s:2"]["state"] == "queued" and by["s:4"]["state"] == "paused"  # held
    assert by["d:after"]["after"] == ["41"] and by["d:after"]["batch"] == "dep"
    assert agent.element_state("PENDING", agent.NEVER) == "blocked"
    assert agent.element_state("COMPLETED", "None") is None  # ended: the ledger says how
    assert all("command" not in e for e in els)


def test_a_label_is_where_squeue_shows_it_else_its_newest_end() -> None:
    ended = [{"label": "x", "group": "p1", "batch": "a", "dir": "/a", "state": "failed",
              "end": "2026-12-01T10:00:00Z"},
             {"label": "x", "group": "p1", "batch": "b", "dir": "/b", "state": "success",
              "end": "2026-12-01T11:00:00Z"},
             {"label": "y", "group": "p1", "batch": "a", "dir": "/a", "state": "failed",
              "end": "2026-12-01T09:00:00Z"}]
    known = agent.slurm_known([], ended)
    assert known[("p1", "x")]["batch"] == "b"  # the later end of a label in two batches
    running = {"label": "y", "group": "p1", "batch": "a", "dir": "/a", "state": "running",
               "id": "7_0"}
    assert agent.slurm_known([running], ended)[("p1", "y")]["state"] == "running"


def el(label: str, array: str, state: str = "queued", after: tuple[str, ...] = (),
       group: str = "p1", batch_name: str = "b") -> dict[str, Any]:
    return {"label": label, "group": group, "batch": batch_name, "array": array,
            "id": f"{array}_0", "state": state, "after": list(after)}


def test_cancel_matches_by_glob_or_batch_and_finds_afterok_dependants() -> None:
    els = [el("s:1", "5", "running"), el("s:2", "5"), el("s:3", "5"),
           el("m:merge", "6", after=("5",)), el("m:report", "7", after=("6",)),
           el("o:1", "8", group="p2", batch_name="other")]
    assert agent.slurm_match(els[0], None, "s:*", None)
    assert agent.slurm_match(el("s:1-retry-2", "9"), None, "s:1", None)  # its base label
    assert not agent.slurm_match(els[0], "p2", "s:*", None)
    assert [e["label"] for e in els if agent.slurm_match(e, None, None, "other")] == ["o:1"]
    chosen = [e for e in els if agent.slurm_match(e, None, "s:[12]", None)]
    # the merge waits on array 5 (a cancelled element never lets afterok be met), and the
    # report on the merge; s:3 is in the same array, not waiting on it
    assert [e["label"] for e in agent.slurm_dependants(els, chosen)] == ["m:merge", "m:report"]
    assert agent.slurm_dependants(els, [els[4]]) == []


def test_a_cancelled_attempt_and_its_older_ones_are_never_run_again() -> None:
    outcomes = {"a": {"group": "p1", "outcome": "failed"},
                "a-retry-1": {"group": "p1", "outcome": "cancelled"},
                "b": {"group": "p1", "outcome": "cancelled"},
                "c-retry-1": {"group": "p1", "outcome": "failed"}}
    stopped = slurm_model.cancelled_jobs(outcomes)
    assert stopped == {("p1", "a"): 1, ("p1", "b"): 0}
    assert slurm_model.is_cancelled("p1", "a", stopped)  # older than the cancel
    assert slurm_model.is_cancelled("p1", "a-retry-1", stopped)
    assert not slurm_model.is_cancelled("p1", "a-retry-2", stopped)  # a newer attempt
    assert not slurm_model.is_cancelled("p2", "b", stopped)
    assert not slurm_model.is_cancelled("p1", "c", stopped)


def test_retry_failed_on_slurm_never_retries_a_cancelled_job() -> None:
    def rec(outcome: str, code: int | None) -> dict[str, Any]:
        return {"group": "p1", "outcome": outcome, "exit": code, "command": "true",
                "workdir": "/w"}

    facts = {"b": {"dir": "/b", "active": [], "ended": {
        "k": rec("failed", 137), "k-retry-1": rec("cancelled", None),
        "z": rec("failed", 137)}}}
    state, where = slurm_retry.state_of(facts, "p1")
    assert sorted(t.label or "" for t in state.tasks) == ["z"]
    assert where["z"] == "/b"


def test_the_agent_sent_is_one_file_with_the_slurm_model_inlined(tmp_path: Path) -> None:
    assert AGENT_SOURCE == bundle("ops_agent")
    tree = ast.parse(AGENT_SOURCE, feature_version=(3, 8))
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level]
    journal = tmp_path / "j.ndjson"
    journal.write_text(json.dumps({"action": "cancel", "labels": ["a"]}) + "\n")
    proc = subprocess.run([sys.executable, "-I", "-c", AGENT_LOADER, "journal", "--journal",
                           str(journal)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == '@@meta {"entries":1}'
    # a Slurm logs of a label no batch knows: exit 6, one line (squeue is never reached
    # when there is no batch at all, so this runs without Slurm)
    proc = subprocess.run([sys.executable, "-I", "-c", AGENT_LOADER, "logs", "--scheduler",
                           "slurm", "--root", str(tmp_path / "none"), "--label", "q:1"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 6, proc.stderr
    assert "no Slurm element or ledger record labelled 'q:1'" in proc.stdout


def test_submit_batch_on_slurm_skips_a_cancelled_label_and_holds_its_dependants() -> None:
    from jobsafe_ops.batch.model import JobSpec
    from jobsafe_ops.batch.plan import decide
    from jobsafe_ops.batch.slurm_submit import batch_status_state

    def rec(outcome: str, code: int | None) -> dict[str, Any]:
        return {"group": "p1", "outcome": outcome, "exit": code}

    state = batch_status_state({"active": {}, "ended": {
        "c:1": rec("failed", 137), "c:1-retry-1": rec("cancelled", None),
        "c:2": rec("cancelled", None), "c:3": rec("success", 0)}})
    assert sorted((t.label or "", t.state) for t in state.tasks) == [
        ("c:1-retry-1", "cancelled"), ("c:2", "cancelled"), ("c:3", "success")]
    specs = [JobSpec(label=f"c:{i}", group="p1", command="true", workdir="/w")
             for i in (1, 2, 3)]
    specs.append(JobSpec(label="c:merge", group="p1", command="true", workdir="/w",
                         after=("c:2", "c:3")))
    by = {i.label: i for i in decide(specs, state, {}, budget=3)}
    assert by["c:1"].action == "skip" and "cancelled as c:1-retry-1" in by["c:1"].reason
    assert by["c:2"].action == "skip" and by["c:3"].action == "skip"
    assert by["c:merge"].action == "held" and "c:2" in by["c:merge"].reason


def test_the_slurm_report_takes_running_and_pending_from_squeue(tmp_path: Path) -> None:
    from jobsafe_ops.hostside import slurm_feed

    batch(tmp_path, "sweep", "ab12cd34ef", ["s:1", "s:2", "s:3", "s:4"])
    marker = tmp_path / "sweep" / slurm_feed.feeder_marker("p1", "s:1")
    marker.parent.mkdir()
    marker.write_text(json.dumps({"start": "2026-12-01T10:00:00.5Z", "boot": "other"}) + "\n")
    ledger = tmp_path / "sweep" / "ledger.ndjson"
    ledger.write_text("".join(json.dumps(r) + "\n" for r in [
        {"event": "end", "label": "s:0", "group": "p1", "exit": 3, "outcome": "failed",
         "start": "2026-12-01T09:00:00Z", "end": "2026-12-01T09:00:01Z"},
        {"event": "end", "label": "s:0-retry-1", "group": "p1", "exit": None,
         "outcome": "cancelled", "end": "2026-12-01T09:30:00Z"},
        {"event": "end", "label": "o:1", "group": "p2", "exit": 0}]))
    ended = slurm_feed.ended_runs(str(ledger), "p1")
    assert [(r["label"], r["attempt"], r["outcome"], r["exit"]) for r in ended] == [
        ("s:0", 0, "failed", 3), ("s:0-retry-1", 1, "cancelled", None)]
    assert ended[0]["end"] - ended[0]["start"] == 1.0
    squeue = ("41_0|41|0|jobsafe:sweep:p1|RUNNING|None|ab12cd34ef\n"
              "41_[1-2]|41|1-2|jobsafe:sweep:p1|PENDING|JobHeldUser|ab12cd34ef\n"
              "41_3|41|3|jobsafe:sweep:p1|PENDING|DependencyNeverSatisfied|ab12cd34ef\n"
              "50_0|50|0|jobsafe:sweep:p1|COMPLETED|None|ab12cd34ef\n")
    runs, held = slurm_feed.queued_runs(squeue, str(tmp_path), ["sweep"], "p1", None)
    assert [(r["label"], r["outcome"]) for r in runs] == [
        ("s:1", "running"), ("s:2", "paused"), ("s:3", "paused"), ("s:4", "blocked")]
    assert held and runs[0]["start"] is not None and runs[0]["source"] == "squeue"
    # the marker's foreign boot id does not make it read as killed: squeue says running
    assert slurm_feed.queued_runs(squeue, str(tmp_path), ["sweep"], "p2", None) == ([], False)
    assert slurm_feed.queued_runs(squeue, str(tmp_path), ["sweep"], "p1", "other")[0] == []


def test_slurm_logs_picks_the_attempt_and_a_units_mode_commands_section(
        tmp_path: Path, monkeypatch: Any, capsys: Any) -> None:
    bdir = Path(batch(tmp_path, "sweep", "ab12cd34ef", ["x"]))
    (bdir / "logs").mkdir()
    (bdir / "logs" / "x.log").write_text("first\n")
    (bdir / "logs" / "x-retry-1.log").write_text("second\n")
    unit = "sweep:unit-00001-0123abcd"
    (bdir / "logs" / (model.log_name(unit))).write_text(
        "=== u:1 (exit 0)\none\n=== u:2 (exit 3)\ntwo\n=== unit done: 2 commands, 1 failed\n")
    (bdir / "ledger.ndjson").write_text("".join(json.dumps(r) + "\n" for r in [
        {"event": "end", "label": "x", "group": "p1", "exit": 1, "outcome": "failed"},
        {"event": "end", "label": "u:2", "group": "p1", "exit": 3, "outcome": "failed",
         "unit": unit}]))
    running = {"label": "x-retry-1", "group": "p1", "batch": "sweep", "dir": str(bdir),
               "state": "running", "id": "9_0", "array": "9"}
    monkeypatch.setattr(agent, "slurm_elements", lambda batches: [running])

    def logs(*extra: str) -> tuple[int, list[str]]:
        code = agent.main(["logs", "--scheduler", "slurm", "--root", str(tmp_path), *extra])
        return code, capsys.readouterr().out.splitlines()

    code, out = logs("--label", "x")
    assert code == 0 and out[1] == "second"  # the newest attempt, running now
    meta = json.loads(out[0].split(" ", 1)[1])
    assert meta["attempts"] == ["x", "x-retry-1"] and meta["state"] == "running"
    code, out = logs("--label", "x", "--attempt", "0")
    assert code == 0 and out[1] == "first" and '"state":"failed"' in out[0]
    code, out = logs("--label", "u:2")
    assert code == 0 and out[1:3] == ["=== u:2 (exit 3)", "two"]
    assert json.loads(out[0].split(" ", 1)[1])["unit"] == unit
    code, out = logs("--label", "x", "--group", "p2")
    assert code == 6 and "in group p2" in out[-1]


def test_scancel_and_scontrol_take_the_ids_in_slices(tmp_path: Path, monkeypatch: Any) -> None:
    calls = tmp_path / "calls"
    monkeypatch.setattr(agent, "IDS_PER_CALL", 2)
    argv = ["sh", "-c", f'echo "$*" >> {calls}', "sh"]
    assert agent.slurm_calls(argv, ["1_0", "1_1", "1_2", "2_0", "2_1"]) == (0, "")
    assert calls.read_text().splitlines() == ["1_0 1_1", "1_2 2_0", "2_1"]
    calls.unlink()
    assert agent.slurm_calls(argv, ["1_0", "1_1", "1_2"], joined=True) == (0, "")
    assert calls.read_text().splitlines() == ["1_0,1_1", "1_2"]
    code, message = agent.slurm_calls(["sh", "-c", "echo no such job >&2; exit 1", "sh"],
                                      ["1_0"])
    assert code == 1 and message == "no such job"


def test_the_arrays_an_element_waits_on_from_squeues_dependency_column() -> None:
    assert agent.waits_on("afterok:41_*(unfulfilled),afterok:42_*(failed)") == ["41", "42"]
    assert agent.waits_on("afterany:7:8") == ["7", "8"] and agent.waits_on("(null)") == []
    assert agent.waits_on("afterok:12_3(unfulfilled)?afternotok:9") == ["9", "12"]
    assert agent.waits_on("singleton") == []
