"""The operations agent's pure parts (hostside/ops_agent.py) and its protocol on the laptop
(ops/agent.py): attempts by label, units-mode log sections, cancel's matching and
dependants, the host journal's append; a cancelled ledger record is neither failed nor
retried by the monitor filter's ledger merge."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from jobsafe_ops.errors import ConfigError, NothingSelected, RefusedError, RemoteError
from jobsafe_ops.hostside import monitor_filter as mf
from jobsafe_ops.hostside import ops_agent as agent
from jobsafe_ops.ops import agent as laptop


def t(tid: int, label: str, state: str = "queued", group: str = "p1",
      command: str = "true", deps: tuple[int, ...] = ()) -> dict[str, Any]:
    return {"id": tid, "label": label, "group": group, "state": state,
            "original_command": command, "dependencies": list(deps)}


def test_the_newest_attempt_or_attempt_n_by_label() -> None:
    tasks = [t(7, "x-retry-2", "failed"), t(3, "x", "failed"), t(5, "x-retry-1", "success"),
             t(9, "y"), t(1, "x", group="p2")]
    attempts = agent.attempts_of(tasks, "p1", "x")
    assert [a["label"] for a in attempts] == ["x", "x-retry-1", "x-retry-2"]
    assert agent.pick(attempts, None)["id"] == 7  # the highest retry number, not the id
    assert agent.pick(attempts, 1)["id"] == 5 and agent.pick(attempts, 0)["id"] == 3
    assert agent.pick(attempts, 4) is None
    assert "id" not in agent.public(tasks[0])  # ids never leave the host


def test_a_units_mode_command_is_its_own_section_of_the_unit_log() -> None:
    log = ("=== a:1 (exit 0)\nout one\n=== a:2 (exit 3)\nout two\nmore\n"
           "=== a:3: cannot start (no such file)\n=== unit done: 3 commands, 2 failed\n")
    assert agent.unit_block(log, "a:2") == "=== a:2 (exit 3)\nout two\nmore\n"
    assert agent.unit_block(log, "a:1") == "=== a:1 (exit 0)\nout one\n"
    assert agent.unit_block(log, "a:9") is None


def test_the_unit_of_a_command_is_found_in_its_unit_file(tmp_path: Path) -> None:
    unit_file = tmp_path / "u.jsonl"
    unit_file.write_text(json.dumps({"label": "u:2", "workdir": "/", "command": "x"}) + "\n")
    command = f"python3 /b/feeder.py unit {unit_file} --done /b/done.tsv"
    tasks = [t(1, "pb:unit-00001-0123abcd-retry-1", command=command),
             t(2, "pb:unit-00002-0123abcd", command="python3 /b/feeder.py unit /nope")]
    assert agent.unit_of(tasks, "p1", "u:2") == "pb:unit-00001-0123abcd"
    assert agent.unit_of(tasks, "p1", "u:3") is None
    assert agent.unit_of(tasks, "p2", "u:2") is None


def test_cancel_matches_by_label_glob_or_batch_and_finds_dependants() -> None:
    wrapped = "python3 /h/.local/state/jobsafe-ops/batches/sweep/feeder.py run --ledger " \
              "/h/.local/state/jobsafe-ops/batches/sweep/ledger.ndjson --label a --group p1 " \
              "-- sh -c 'sleep 1'"
    tasks = [t(1, "a", "running", command=wrapped), t(2, "a-retry-1", command=wrapped),
             t(3, "b", "success"), t(4, "c", deps=(1,), group="p2"), t(5, "d", deps=(4,)),
             t(6, "ab", group="p2")]
    assert [m["id"] for m in agent.matches(tasks, None, "a", None)] == [1, 2]
    assert [m["id"] for m in agent.matches(tasks, None, "a*", None)] == [1, 2, 6]
    assert [m["id"] for m in agent.matches(tasks, "p2", "a*", None)] == [6]
    assert [m["id"] for m in agent.matches(tasks, None, None, "sweep")] == [1, 2]
    assert agent.batch_of(tasks[0]) == "sweep" and agent.batch_of(tasks[2]) is None
    assert agent.ledger_of(tasks[0]).endswith("batches/sweep/ledger.ndjson")
    chosen = agent.matches(tasks, None, "a", None)
    assert [d["label"] for d in agent.dependants(tasks, chosen)] == ["c", "d"]  # transitive
    assert agent.dependants(tasks, agent.matches(tasks, None, "[acd]*", None)) == []


def test_the_host_journal_appends_whole_lines(tmp_path: Path) -> None:
    path = tmp_path / "j" / "journal.ndjson"
    agent.append_journal(str(path), {"time": "2026-01-01T00:00:00", "action": "a",
                                     "labels": ["x"]})
    with path.open("ab") as fh:
        fh.write(b'{"torn": ')  # a crash mid-write elsewhere
    agent.append_journal(str(path), {"time": "2026-01-02T00:00:00", "action": "b",
                                     "labels": ["y"]})
    assert [e["action"] for e in agent.journal_lines(str(path), None, None)] == ["a", "b"]
    assert [e["action"] for e in agent.journal_lines(str(path), "2026-01-01T12", None)] == ["b"]
    assert [e["action"] for e in agent.journal_lines(str(path), None, "x*")] == ["a"]
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_a_cancelled_record_is_neither_failed_nor_retried(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.ndjson"
    cancelled = agent.cancelled_record(t(4, "x-retry-1", group="p1"), "op@laptop")
    lines = [
        {"v": 1, "label": "x", "group": "p1", "batch": "b", "attempt": 0, "event": "end",
         "exit": 137, "outcome": "killed", "start": "s", "end": "e"},
        {"v": 1, "label": "x-retry-1", "group": "p1", "batch": "b", "attempt": 1,
         "event": "end", "exit": 143, "outcome": "killed", "start": "s", "end": "e"},
        cancelled,
        {"v": 1, "label": "y", "group": "p1", "batch": "b", "attempt": 0, "event": "end",
         "exit": 1, "outcome": "failed", "start": "s", "end": "e"},
    ]
    ledger.write_text("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in lines))
    raws = mf.read_ledger(str(ledger), "p1")
    records = mf.relevant(raws, boot="b")
    assert [r["label"] for r in records] == ["y"]  # x and its retry: cancelled, not failed
    data: dict[str, Any] = {"tasks": {}}
    mf.merge_ledger(data, records)
    assert [v["label"] for v in data["tasks"].values()] == ["y"]


def test_the_agent_protocol_and_its_errors() -> None:
    reply = laptop.parse_reply('@@meta {"label":"x","attempt":1}\nline one\n'
                               '@@end {"state":"success"}\n')
    assert reply.meta["attempt"] == 1 and reply.body == ["line one"]
    assert reply.end == {"state": "success"}
    for code, kind in ((2, ConfigError), (3, RefusedError), (6, NothingSelected),
                       (4, RemoteError)):
        bad = laptop.parse_reply(f'@@error {{"message":"no","code":{code}}}\n')
        with pytest.raises(kind, match="^h: no$"):
            laptop.raise_for("h", bad, code, "")
    with pytest.raises(RemoteError, match="python3 is required"):
        laptop.raise_for("h", laptop.parse_reply(""), 127, "python3: not found")


def test_the_agent_line_quotes_every_value() -> None:
    line = laptop.agent_line("cancel", "~/.local/bin/pueue", {
        "glob": "a b;$(rm -rf ~)", "dry": True, "group": None, "follow": False})
    assert "'a b;$(rm -rf ~)'" in line and " --dry" in line
    assert "--group" not in line and "--follow" not in line


def test_the_agent_runs_under_the_hosts_python3(tmp_path: Path) -> None:
    """The loader line runs as sent: here `journal` mode over a real file."""
    path = tmp_path / "journal.ndjson"
    path.write_text(json.dumps({"time": "t", "action": "cancel", "labels": ["x"]}) + "\n")
    line = laptop.agent_line("journal", "pueue", {"journal": str(path)})
    proc = subprocess.run(["sh", "-c", line], capture_output=True, text=True, timeout=30)
    reply = laptop.parse_reply(proc.stdout)
    assert proc.returncode == 0 and reply.meta == {"entries": 1}
    assert json.loads(reply.body[0])["action"] == "cancel"


def test_cancelling_a_unit_covers_its_commands_not_done_yet(tmp_path: Path) -> None:
    unit_file = tmp_path / "u.jsonl"
    unit_file.write_text("".join(json.dumps({"label": f"u:{n}", "workdir": "/",
                                             "command": "x"}) + "\n" for n in (1, 2, 3)))
    done = tmp_path / "done.tsv"
    done.write_text("u:1\t0\nu:2\t1\n")  # u:1 succeeded, u:2 failed, u:3 never ran
    command = f"python3 /b/feeder.py unit {unit_file} --done {done} --ledger /b/l --group p1"
    assert agent.unfinished(t(1, "pb:unit-00001-0123abcd", command=command)) == ["u:2", "u:3"]
    assert agent.unfinished(t(2, "plain", command="sleep 1")) == []
