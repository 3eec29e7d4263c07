"""`jobsafe report`: the host side (monitor_filter.py `report`: one run per attempt from
pueue's tasks and the outcome ledgers) and the laptop side (ops/report.py: bad input before
SSH, the host's line parsed into a Report, log tails redacted, the page written atomically)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from jobsafe_ops.errors import ConfigError, NothingSelected, RemoteError
from jobsafe_ops.facts.snapshot import FILTER_LOADER
from jobsafe_ops.hostside import monitor_filter as mf
from jobsafe_ops.inventory import GroupSpec, Host
from jobsafe_ops.ops import report as rp
from tests.status_data import QUEUED, RUNNING, done, state, task

BOOT = "boot-1"
FEED = "python3 /home/u/.local/state/jobsafe-ops/batches/{b}/feeder.py run --ledger x " \
       "--label {l} --group p1 -- sh -c 'true'"


def end(label: str, outcome: str, code: int | None, start: str, stop: str,
        **extra: Any) -> dict[str, Any]:
    return {"v": 1, "label": label, "group": "p1", "batch": "sweep",
            "attempt": mf.attempt_of(label), "event": "end", "exit": code,
            "outcome": outcome, "start": start, "end": stop, **extra}


def by_label(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["label"]: r for r in runs}


# ---- host side: one run per attempt ------------------------------------------------------

def test_the_ledger_decides_finished_wrapped_jobs_and_pueue_adds_the_rest() -> None:
    data = state(
        task(1, "a", done({"Failed": 137}), command=FEED.format(b="sweep", l="a")),
        task(2, "a-retry-1", done("Success"), command=FEED.format(b="sweep", l="a-retry-1")),
        task(3, "b", RUNNING, command=FEED.format(b="sweep", l="b")),
        task(4, "c", QUEUED, command=FEED.format(b="sweep", l="c")),
        task(5, "plain", done({"Failed": 2})),  # added by hand: no ledger line
    )
    records = [end("a", "failed", 137, "2026-11-22T17:00:02.000000Z", "2026-11-22T17:00:12Z"),
               end("a-retry-1", "success", 0, "2026-11-22T17:01:00Z", "2026-11-22T17:01:30Z"),
               end("gone", "failed", 1, "2026-11-22T16:00:00Z", "2026-11-22T16:00:05Z")]
    runs, logs = mf.report_runs(data, records, [], "p1", None, boot=BOOT)
    got = by_label(runs)
    assert set(got) == {"a", "a-retry-1", "gone", "b", "c", "plain"}
    assert (got["a"]["outcome"], got["a"]["exit"], got["a"]["source"]) == ("failed", 137,
                                                                          "ledger")
    assert got["a"]["end"] - got["a"]["start"] == pytest.approx(10.0)
    assert got["a-retry-1"]["attempt"] == 1 and got["gone"]["source"] == "ledger"
    assert (got["b"]["outcome"], got["b"]["end"]) == ("running", None)
    assert got["b"]["start"] is not None and got["c"]["start"] is None
    assert (got["plain"]["outcome"], got["plain"]["exit"]) == ("failed", 2)
    # the failed attempts pueue still has: their logs are read, by id, on the host only
    assert {runs[i]["label"] for i in logs.values()} == {"a", "plain"}
    assert sorted(logs) == [1, 5]


def test_a_playbook_selects_its_batch_only() -> None:
    data = state(task(1, "a", QUEUED, command=FEED.format(b="sweep", l="a")),
                 task(2, "z", QUEUED, command=FEED.format(b="other", l="z")),
                 task(3, "hand", QUEUED))
    runs, _ = mf.report_runs(data, [], [], "p1", "sweep", boot=BOOT)
    assert [r["label"] for r in runs] == ["a"]
    assert mf.batch_of_command(FEED.format(b="sweep", l="a")) == "sweep"
    assert mf.batch_of_command("sh -c 'python3 feeder.py run'") is None


def test_a_marker_of_a_dead_process_is_a_killed_attempt(tmp_path: Path) -> None:
    marker = {"v": 1, "label": "k", "group": "p1", "event": "start",
              "start": "2026-11-22T17:00:00Z", "pid": 999_999_999, "boot": BOOT}
    runs, _ = mf.report_runs(state(), [], [marker], "p1", None, boot=BOOT)
    assert [(r["label"], r["outcome"], r["source"]) for r in runs] == [("k", "killed",
                                                                         "marker")]
    alive = {**marker, "pid": os.getpid()}
    runs, _ = mf.report_runs(state(task(1, "k", RUNNING)), [], [alive], "p1", None, boot=BOOT)
    assert [(r["outcome"], r["source"]) for r in runs] == [("running", "marker")]  # once


def test_units_show_their_commands_not_the_unit_task() -> None:
    unit = "u:unit-00001-0123abcd"
    data = state(task(1, unit, done({"Failed": 1})))
    records = [end("cmd:1", "success", 0, "2026-11-22T17:00:00Z", "2026-11-22T17:00:01Z",
                   unit=unit),
               end("cmd:2", "failed", 3, "2026-11-22T17:00:01Z", "2026-11-22T17:00:02Z",
                   unit=unit)]
    runs, _ = mf.report_runs(data, records, [], "p1", None, boot=BOOT)
    assert sorted(r["label"] for r in runs) == ["cmd:1", "cmd:2"]


def test_ledger_lines_reads_every_end_of_the_group(tmp_path: Path) -> None:
    path = tmp_path / "ledger.ndjson"
    lines = [end("a", "failed", 1, "t0", "t1"), end("a", "success", 0, "t2", "t3"),
             {**end("b", "success", 0, "t0", "t1"), "group": "p2"}]
    path.write_text("".join(json.dumps(x, separators=(",", ":")) + "\n" for x in lines)
                    + '{"v":1,"label":"torn"')
    got = mf.ledger_lines(str(path), "p1")
    assert [(r["label"], r["outcome"]) for r in got] == [("a", "failed"), ("a", "success")]


def test_the_bundled_filter_answers_report_in_one_line(tmp_path: Path) -> None:
    """The source sent over SSH, run as the host runs it (a stand-in `pueue` script that
    prints a status; the daemon 'not answering' `group`, so `status` is asked)."""
    status = state(task(4242, "a", done({"Failed": 4}), command=FEED.format(b="sweep", l="a")))
    prog = tmp_path / "pueue"
    prog.write_text("#!/bin/sh\n"
                    'if [ "$1" = group ]; then exit 1; fi\n'
                    'if [ "$1" = status ]; then cat "$0.json"; exit 0; fi\n'
                    'if [ "$1" = log ]; then cat "$0.log"; exit 0; fi\nexit 2\n')
    prog.chmod(0o755)
    (tmp_path / "pueue.json").write_text(json.dumps(status))
    (tmp_path / "pueue.log").write_text(json.dumps({"4242": {"output": "one\ntwo\nboom\n"}}))
    batch = tmp_path / "home/.local/state/jobsafe-ops/batches/sweep"
    batch.mkdir(parents=True)
    (batch / "ledger.ndjson").write_text(json.dumps(
        end("a", "failed", 4, "2026-11-22T17:00:00Z", "2026-11-22T17:00:03Z"),
        separators=(",", ":")) + "\n")
    env = {"HOME": str(tmp_path / "home"), "PATH": os.environ["PATH"]}
    proc = subprocess.run([sys.executable, "-I", "-c", FILTER_LOADER, "report", "--pueue",
                           str(prog), "--group", "p1", "--log-lines", "2",
                           "--swap-window", "0"], capture_output=True, text=True, env=env,
                          check=True)
    [line] = proc.stdout.splitlines()
    doc = json.loads(line)
    [run] = doc["runs"]
    assert (run["label"], run["outcome"], run["exit"], run["log"]) == ("a", "failed", 4,
                                                                        ["two", "boom"])
    assert doc["known"] and doc["health"]["nproc"] and "id" not in run
    assert "4242" not in json.dumps(doc["runs"])  # no task id leaves the host


# ---- laptop side ---------------------------------------------------------------------

HOST = Host(name="h1", ssh="u@h", project_dir="~/p", package="pkg",
            groups={"p1": GroupSpec(name="p1", parallel=1, min=1, max=2)})


def payload(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "known": True, "groups": ["p1"], "status": "Running", "now": 1000.0,
        "runs": [{"label": "a", "attempt": 0, "outcome": "failed", "exit": 1, "start": 10.0,
                  "end": 20.0, "source": "ledger",
                  "log": ["export API_TOKEN=abcd1234secret", "boom"]}],
        "health": {"nproc": 4, "load": [1.0, 1.0, 1.0], "mem_total": 8 << 30,
                   "mem_available": 4 << 30, "swap_in": 0, "swap_out": 0,
                   "swap_counters": [1, 2], "state_file": "/s", "state_size": 10},
    }
    base.update(kw)
    return base


def test_the_hosts_line_becomes_a_report_with_secrets_masked() -> None:
    r = rp.parse_payload(HOST, payload(), "p1", "sweep")
    [run] = r.runs
    assert run.log[1] == "boom" and "abcd1234secret" not in run.log[0]
    assert (r.host, r.group, r.playbook, r.generated_at, r.status) == ("h1", "p1", "sweep",
                                                                     1000.0, "Running")
    assert {v.name for v in r.verdicts} >= {"load", "memory"}
    assert "swap_counters" not in r.health


def test_an_empty_selection_is_exit_6_and_an_unknown_group_exit_2() -> None:
    with pytest.raises(NothingSelected) as exc:
        rp.parse_payload(HOST, payload(runs=[]), "p1", "sweep")
    assert exc.value.exit_code == 6 and "sweep" in str(exc.value)
    with pytest.raises(ConfigError) as bad:
        rp.parse_payload(HOST, payload(known=False, groups=["x", "y"]), "nope", None)
    assert "x, y" in str(bad.value) and bad.value.exit_code == 2
    # declared in the host file but never filled: nothing selected, not bad input
    with pytest.raises(NothingSelected):
        rp.parse_payload(HOST, payload(known=False, runs=[]), "p1", None)


def test_a_host_side_failure_is_exit_4() -> None:
    with pytest.raises(RemoteError) as exc:
        rp.parse_payload(HOST, {"error": mf.STATUS_FAILED + "cannot connect"}, "p1", None)
    assert exc.value.exit_code == 4


@pytest.mark.parametrize(("group", "html", "lines", "word"), [
    (None, None, 20, "--group"), ("", None, 20, "--group"), ("p1", "", 20, "--html"),
    ("p1", ".", 20, "directory"), ("p1", None, -1, "--log-lines")])
def test_bad_input_is_refused_before_any_ssh(group: str | None, html: str | None,
                                             lines: int, word: str) -> None:
    with pytest.raises(ConfigError) as exc:
        rp.check_args(group, html, lines)
    assert word in str(exc.value)


def test_a_slurm_host_reads_slurm_feeds_report_inline_every_value_quoted() -> None:
    import base64
    import shlex
    import zlib
    from dataclasses import replace

    from jobsafe_ops.hostside.bundle import bundle
    from jobsafe_ops.shell import join

    line = rp.report_line(replace(HOST, scheduler="slurm"), "p1; rm -rf ~", "b'x", 5)
    words = shlex.split(line)
    assert words[:2] == ["python3", "-c"]
    blob = words[2].split("b64decode('")[1].split("')")[0]
    assert zlib.decompress(base64.b64decode(blob)).decode() == bundle("slurm_feed")
    assert words[3:9] == ["report", "--group", "p1; rm -rf ~", "--log-lines", "5",
                          "--log-labels"]
    assert words[words.index("--batch") + 1] == "b'x" and "--root" in words
    assert "pueue" not in words[3:]  # the monitor filter's read is for pueue hosts
    assert rp.report_line(HOST, "p1", None) == join(rp.report_argv(HOST, "p1", None))


def test_the_remote_line_quotes_every_value() -> None:
    from jobsafe_ops.shell import join

    line = join(rp.report_argv(HOST, "p1; rm -rf ~", "b'x", 5))
    assert "'p1; rm -rf ~'" in line and "--batch" in line


def test_the_page_is_written_atomically(tmp_path: Path) -> None:
    target = tmp_path / "r.html"
    target.write_text("old")
    rp.write_atomic(str(target), "<p>new</p>")
    assert target.read_text() == "<p>new</p>"
    assert [p.name for p in tmp_path.iterdir()] == ["r.html"]  # no temp file left
    with pytest.raises(ConfigError):
        rp.write_atomic(str(tmp_path / "missing" / "r.html"), "x")


# ---- health samples over the batch ---------------------------------------------------

def test_health_samples_come_from_the_journals_autoscale_readings(tmp_path: Path) -> None:
    from jobsafe_ops.hostside import model

    path = tmp_path / "journal.ndjson"
    entries = [
        {"time": "2026-11-22T17:00:00+00:00", "action": "autoscale", "load1": 1.0, "nproc": 4,
         "mem_pct": 20.0},
        {"time": "2026-11-22T16:00:00+00:00", "action": "autoscale", "load1": 9.0, "nproc": 4},
        {"time": "2026-11-22T17:05:00.123+00:00", "action": "autoscale-check", "load1": 3.0,
         "nproc": 4, "mem_pct": 50.0, "swap_in": 3},
        {"time": "2026-11-22T17:06:00+00:00", "action": "cancel", "labels": ["load1"]},
    ]
    path.write_text("".join(json.dumps(e) + "\n" for e in entries) + '{"load1": 1')
    since = model.epoch("2026-11-22T16:30:00Z")
    got = model.health_samples(str(path), since)
    assert [(g["action"], g["load1"]) for g in got] == [("autoscale", 1.0),
                                                        ("autoscale-check", 3.0)]
    assert model.health_samples(str(path), None, most=1)[0]["load1"] == 3.0  # the newest
    assert model.health_samples(str(tmp_path / "none"), None) == []


def test_journal_samples_and_the_reports_own_make_the_health_series() -> None:
    samples = [{"time": 15.0, "action": "autoscale", "nproc": 4, "load1": 2.0,
                "mem_pct": 30.0, "swap_in": 0, "swap_out": 5},
               {"time": 12.0, "action": "autoscale-check", "nproc": None, "load1": 1.0,
                "mem_pct": None}]
    r = rp.parse_payload(HOST, payload(samples=samples), "p1", None)
    assert [(x.time, x.load_pct, x.mem_pct, x.swapping, x.source) for x in r.samples] == [
        (12.0, None, None, False, "journal"), (15.0, 50.0, 30.0, True, "journal"),
        (1000.0, 25.0, 50.0, False, "report")]  # the read's own: load 1.0 / 4, 4 of 8 GiB


def test_this_laptops_autoscale_readings_join_the_hosts_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "journal.ndjson"
    monkeypatch.setenv("JOBSAFE_JOURNAL", str(path))
    lines = [
        {"time": "1970-01-01T00:00:20.000+00:00", "host": "h1", "action": "autoscale",
         "load1": 2.0, "nproc": 4, "mem_pct": 10.0},  # also mirrored to the host: once
        {"time": "1970-01-01T00:00:30.000+00:00", "host": "h1", "action": "autoscale-check",
         "load1": 1.0, "nproc": 4},
        {"time": "1970-01-01T00:00:31.000+00:00", "host": "other", "action": "autoscale",
         "load1": 9.0, "nproc": 4},
        {"time": "1970-01-01T00:00:01.000+00:00", "host": "h1", "action": "autoscale",
         "load1": 9.0, "nproc": 4},  # before the batch started
    ]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    hosts = [{"time": 20.0, "action": "autoscale", "load1": 2.0, "nproc": 4, "mem_pct": 10.0}]
    merged = rp.with_local_samples(payload(samples=hosts), "h1")
    assert sorted((x["time"], x["load1"]) for x in merged["samples"]) == [(20.0, 2.0),
                                                                         (30.0, 1.0)]
