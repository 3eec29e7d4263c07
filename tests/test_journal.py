"""journal.py: flock-serialized NDJSON appends; readers survive a torn line."""

from __future__ import annotations

import json
import multiprocessing as mp

from jobsafe_ops import journal


def _writer(path: str, n: int, who: int) -> None:
    import os

    os.environ["JOBSAFE_JOURNAL"] = path
    for i in range(n):
        journal.append("h", "add", [f"w{who}-{i}" * 50], "ok")  # long lines: tear if unlocked


def test_concurrent_appends_never_interleave(tmp_path, monkeypatch):
    path = tmp_path / "j.ndjson"
    monkeypatch.setenv("JOBSAFE_JOURNAL", str(path))
    procs = [mp.get_context("fork").Process(target=_writer, args=(str(path), 100, w))
             for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    lines = path.read_text().splitlines()
    assert len(lines) == 400
    assert all(json.loads(line)["action"] == "add" for line in lines)


def test_entries_filter_and_skip_torn_lines(tmp_path, monkeypatch):
    path = tmp_path / "j.ndjson"
    monkeypatch.setenv("JOBSAFE_JOURNAL", str(path))
    journal.append("a", "kill", ["x@1"], "ok", group="p1")
    with path.open("a") as fh:
        fh.write('{"host": "a", "act')  # a crash mid-write elsewhere
        fh.write("\n")
    journal.append("b", "add", ["y@1"], "ok")
    got = list(journal.entries(host="a"))
    assert [(e["action"], e["labels"], e["group"]) for e in got] == [("kill", ["x@1"], "p1")]
    assert [e["host"] for e in journal.entries(action="add")] == ["b"]
    assert "@" in got[0]["operator"]


def test_default_path_is_xdg_state(tmp_path, monkeypatch):
    monkeypatch.delenv("JOBSAFE_JOURNAL", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert journal.journal_path() == tmp_path / "jobsafe-ops" / "journal.ndjson"
