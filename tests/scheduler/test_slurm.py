"""jobsafe_ops.scheduler.slurm against real Slurm 22.05 outputs (tests/fixtures/slurm, recorded
from the test cluster of jobsafe_ops/testing/slurm.py), the Slurm keys of a host file, and the
Slurm probe's parser."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import pytest

from jobsafe_ops.errors import ConfigError
from jobsafe_ops.facts import slurm_probe
from jobsafe_ops.hostside import slurm_feed
from jobsafe_ops.inventory import load_host_file
from jobsafe_ops.scheduler import slurm

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "slurm"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


# ---- scontrol show config ---------------------------------------------------------------

def test_show_config_of_the_test_cluster() -> None:
    cfg = slurm.parse_config(fixture("show_config_task_none.txt"))
    assert cfg["TaskPlugin"] == "task/none"
    assert slurm.max_array_size(cfg) == 1001
    capped, why = slurm.memory_enforcement(cfg)
    assert not capped and "task/none" in why and "ConstrainRAMSpace" in why
    acct, why = slurm.accounting(cfg)
    assert not acct and "accounting_storage/none" in why and "300 sec" in why


CGROUP = {"TaskPlugin": "task/affinity,task/cgroup", "ConstrainRAMSpace": "yes",
          "ConstrainSwapSpace": "yes", "AllowedSwapSpace": "0.0%"}


@pytest.mark.parametrize(("change", "capped", "said"), [
    ({}, True, "hard cap"),
    ({"ConstrainRAMSpace": "no"}, False, "ConstrainRAMSpace"),
    ({"ConstrainSwapSpace": "no"}, False, "soft cap"),
    ({"AllowedSwapSpace": "10.0%"}, False, "AllowedSwapSpace=10.0"),
    ({"TaskPlugin": "task/affinity"}, False, "task/affinity"),
])
def test_memory_enforcement_verdict(change: dict[str, str], capped: bool, said: str) -> None:
    ok, why = slurm.memory_enforcement({**CGROUP, **change})
    assert ok is capped and said in why


def test_accounting_with_slurmdbd() -> None:
    assert slurm.accounting({"AccountingStorageType": "accounting_storage/slurmdbd"})[0]


# ---- sinfo / squeue ---------------------------------------------------------------------

def test_sinfo_nodes() -> None:
    [node] = slurm.parse_sinfo(fixture("sinfo_nodes.txt"))
    assert node.partition == "debug" and node.default and node.cpus == 8
    assert node.memory_mb > 0 and node.state == "idle"


def test_squeue_elements_pending_running_and_a_dependant() -> None:
    els = slurm.parse_squeue(fixture("squeue_r.txt"), "jobsafe:fx:")
    by = {e.id: e for e in els}
    assert by["1_0"].status == "running" and by["1_0"].comment == "abc123"
    assert [by[f"1_{i}"].status for i in range(1, 5)] == ["queued"] * 4
    assert by["2"].index is None and by["2"].reason == "Dependency"
    assert slurm.parse_squeue(fixture("squeue_r.txt"), "jobsafe:other:") == ()


def test_a_pending_range_is_one_element_per_index() -> None:
    els = slurm.parse_squeue("7_[3-5,9%2]|7|3-5,9%2|jobsafe:b:g|PENDING|JobArrayTaskLimit|c\n")
    assert [e.id for e in els] == ["7_3", "7_4", "7_5", "7_9"]
    assert slurm.expand_indices("N/A") == [] and slurm_feed.expand_indices("[4-6]") == [4, 5, 6]


def test_never_satisfiable_dependency_is_blocked() -> None:
    [e] = slurm.parse_squeue(f"3|3|N/A|jobsafe:b:g|PENDING|{slurm.NEVER}|c\n")
    assert e.status == "blocked"


def test_transient_states() -> None:
    assert {"OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED"} <= slurm.TRANSIENT_STATES
    assert slurm.STATE_MAP["OUT_OF_MEMORY"] == "failed"
    assert slurm.STATE_MAP["PREEMPTED"] == "killed"


# ---- argv builders ----------------------------------------------------------------------

def test_sbatch_argv_for_one_array() -> None:
    argv = slurm.sbatch_argv(count=1000, throttle=4, name="jobsafe:b:p1", comment="d1",
                             workdir="/home/u/project", wrap="python3 x.py element f",
                             output="/b/slurm/%A_%a.out", memory_max=5 * 1024**3, cpus=2,
                             partition="batch", after=["12", "9"], export=["HOME", "PATH"])
    assert argv[:3] == ["sbatch", "--parsable", "--array=0-999%4"]
    assert "--mem=5120M" in argv and "--cpus-per-task=2" in argv
    assert "--partition=batch" in argv and "--dependency=afterok:9:12" in argv
    assert "--chdir=/home/u/project" in argv and "--export=HOME,PATH" in argv
    assert argv[-1] == "--wrap=python3 x.py element f"


def test_sbatch_argv_refuses_a_relative_workdir_and_never_throttles_to_zero() -> None:
    with pytest.raises(ConfigError, match="absolute"):
        slurm.sbatch_argv(count=1, throttle=1, name="n", comment="c", workdir="~/p",
                          wrap="true", output="o")
    argv = slurm.sbatch_argv(count=2, throttle=0, name="n", comment="c", workdir="/p",
                             wrap="true", output="o")
    assert "--array=0-1%1" in argv and "--export=NONE" in argv


def test_scancel_takes_only_ids_read_from_squeue() -> None:
    assert slurm.scancel_argv(["12_3", "14"]) == ["scancel", "12_3", "14"]
    for bad in ([], ["12; rm -rf ~"], ["-u"]):
        with pytest.raises(ConfigError):
            slurm.scancel_argv(bad)


def test_throttle_argv_never_zero() -> None:
    assert slurm.throttle_argv("12", 3) == ["scontrol", "update", "JobId=12",
                                            "ArrayTaskThrottle=3"]
    with pytest.raises(ConfigError):
        slurm.throttle_argv("12", 0)


def test_feed_pieces_split_chunks_at_max_array() -> None:
    lines = [{"chunk": "a", "label": str(i)} for i in range(5)] + [{"chunk": "b", "label": "x"}]
    sizes = [len(p) for p in slurm_feed.pieces(lines, 2)]
    assert sizes == [2, 2, 1, 1]


def test_scheduler_seam_kills_by_label_via_squeue_ids() -> None:
    calls: list[list[str]] = []

    def run(argv: Sequence[str]) -> str:
        calls.append(list(argv))
        return fixture("squeue_r.txt") if argv[0] == "squeue" else ""

    labels = {("abc123", i): ("p1", f"fx:{i}") for i in range(5)}
    sched = slurm.SlurmScheduler(run, "fx", labels)
    assert sched.status("p1")["fx:0"] == "running"
    assert sched.kill("p1", ["fx:0", "fx:3"]) == ["1_0", "1_3"]
    assert calls[-1] == ["scancel", "1_0", "1_3"]
    assert sched.parallel("p1", 2) == ["1"] and calls[-1][-1] == "ArrayTaskThrottle=2"


# ---- the host file ----------------------------------------------------------------------

BASE = 'ssh = "login"\nproject_dir = "~/project"\npackage = "mypkg"\n'


def host_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hpc.toml"
    path.write_text(BASE + text)
    return path


def test_slurm_host_file(tmp_path: Path) -> None:
    h = load_host_file(host_file(tmp_path, 'scheduler = "slurm"\npartition = "batch"\n'
                                 'account = "proj-1"\nqos = "normal"\n[groups.p1]\n'
                                 'parallel = 8\nmin = 1\nmax = 32\njob_memory = "2G"\n'
                                 'cpus = 4\n'))
    assert h.is_slurm and (h.partition, h.account, h.qos) == ("batch", "proj-1", "normal")
    assert h.groups["p1"].cpus == 4 and h.groups["p1"].job_memory == 2 * 1024**3
    assert not load_host_file(host_file(tmp_path, "")).is_slurm  # pueue by default


@pytest.mark.parametrize(("text", "said"), [
    ('scheduler = "sge"\n', "scheduler 'sge' is unknown"),
    ('partition = "batch"\n', "partition is a Slurm setting"),
    ('scheduler = "slurm"\npartition = "a b"\n', "not a Slurm name"),
    ('scheduler = "slurm"\nqos = "x;rm"\n', "not a Slurm name"),
    ('scheduler = "slurm"\n[groups.p1]\nparallel = 1\ncpus = 0\n', "cpus = 0 is invalid"),
    ('[groups.p1]\nparallel = 1\ncpus = 2\n', "cpus is a Slurm setting"),
    ('scheduler = "slurm"\nslurm_partition = "x"\n', "unknown key 'slurm_partition'"),
])
def test_bad_slurm_keys_one_line(tmp_path: Path, text: str, said: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_host_file(host_file(tmp_path, text))
    assert said in str(exc.value) and "\n" not in str(exc.value)


# ---- the probe --------------------------------------------------------------------------

def test_probe_parser_on_recorded_sections() -> None:
    text = ("@@home\n/home/u\n@@path\n/usr/bin\n@@programs\nsbatch\t/usr/bin/sbatch\n"
            "python3\t\n@@config\n" + fixture("show_config_task_none.txt") + "rc 0\n"
            "@@sinfo\n" + fixture("sinfo_nodes.txt") + "rc 0\n@@end\n")
    p = slurm_probe.parse_probe("hpc", text)
    assert p.error is None and p.version and p.version.startswith("22.05")
    assert p.partitions == ["debug"] and p.cpus == 8 and p.max_array == 1001
    assert not p.memcap and p.unresolved == ["python3"]
    assert p.expand("~/x") == "/home/u/x"
    down = slurm_probe.parse_probe("hpc", "@@home\n/h\n@@config\nslurm_load_ctl_conf error: "
                                   "Unable to contact slurm controller\nrc 1\n@@end\n")
    assert down.error and "Unable to contact" in down.error


# ---- lint: sbatch per job ---------------------------------------------------------------

def test_lint_flags_sbatch_per_job_not_one_array() -> None:
    from tests.lint.test_lint import py, sh

    assert sh("""
        for s in A B; do
          sbatch --mem=1G --wrap "python run.py $s"
        done
        xargs -I{} sbatch --wrap "run {}" < jobs
        ssh login 'for s in A B; do sbatch run.sh $s; done'
        sbatch --array=0-999%8 run_line.sh
        for s in A B; do sbatch --array=0-9 run.sh $s; done
        """) == [(2, "sbatch-per-job"), (4, "sbatch-per-job"), (5, "sbatch-per-job")]
    assert py("""
        import subprocess
        def submit(jobs):
            for j in jobs:
                subprocess.run(["sbatch", "--wrap", j], check=True)
            subprocess.run(["sbatch", "--array=0-9", "x.sh"], check=True)
        """) == [(4, "sbatch-per-job")]


# ---- submit-batch's pure parts ----------------------------------------------------------

def test_batch_status_becomes_the_state_decide_reads() -> None:
    from jobsafe_ops.batch.slurm_submit import batch_status_state

    state = batch_status_state({
        "ended": {"a": {"group": "g", "outcome": "success", "exit": 0},
                  "b": {"group": "g", "outcome": "failed", "exit": 137, "command": "x",
                        "workdir": "/w"}},
        "active": {"c": {"group": "g", "id": "4_0", "array": "4", "state": "RUNNING",
                         "reason": "None"},
                   "d": {"group": "g", "id": "5", "array": "5", "state": "PENDING",
                         "reason": slurm.NEVER}}})
    by = {t.label: t for t in state.tasks}
    assert by["a"].state == "success" and by["b"].transient_failure
    assert by["c"].state == "running" and state.state_of(by["d"]) == "blocked"


def test_commands_file_groups_lines_into_chunks(tmp_path: Path) -> None:
    from jobsafe_ops.batch.plan import Item
    from jobsafe_ops.batch.playbook import JobSpec
    from jobsafe_ops.batch.slurm_submit import commands_file

    h = load_host_file(host_file(tmp_path, 'scheduler = "slurm"\n[groups.g]\nparallel = 3\n'
                                 'job_memory = "1G"\ncpus = 2\n'))
    jobs = [JobSpec(f"j{i}", "g", "/w", f"run {i}") for i in range(3)]
    after = JobSpec("merge", "g", "/w", "merge", kind="after", after=("j0", "j1", "j2"))
    items = [Item(j.label, "g", "add", "new", j.label, job=j) for j in jobs] + [
        Item("merge", "g", "add", "new", "merge", ("j0", "j1", "j2"), "after", after),
        Item("old", "g", "skip", "succeeded")]
    lines = [json.loads(x) for x in commands_file(items, h).splitlines()]
    assert [x["label"] for x in lines] == ["j0", "j1", "j2", "merge"]
    assert len({x["chunk"] for x in lines[:3]}) == 1 and lines[3]["chunk"] != lines[0]["chunk"]
    assert lines[0]["mem"] == 1024**3 and lines[0]["cpus"] == 2 and lines[0]["throttle"] == 3
    assert lines[3]["after"] == ["j0", "j1", "j2"]


def test_commands_file_units_one_line_per_unit_sized_for_its_parallel(tmp_path: Path) -> None:
    from jobsafe_ops.batch.plan import Item, make_units
    from jobsafe_ops.batch.playbook import JobSpec
    from jobsafe_ops.batch.slurm_submit import commands_file

    h = load_host_file(host_file(tmp_path, 'scheduler = "slurm"\n[groups.g]\nparallel = 3\n'
                                 'job_memory = "1G"\ncpus = 2\n'))
    jobs = [JobSpec(f"j{i}", "g", "/w", f"run {i}") for i in range(5)]
    units = make_units(jobs, playbook="pb", size=3, parallel=4, batch_dir="/b/pb", wrap=False,
                       logs="/b/pb/logs")
    assert "--logs /b/pb/logs" in units[0].spec.command
    items = [Item(u.spec.label, "g", "add", "new", u.spec.label, job=u.spec) for u in units]
    lines = [json.loads(x) for x in commands_file(
        items, h, {u.spec.label: u for u in units}, parallel=4).splitlines()]
    assert [len(x["unit_commands"]) for x in lines] == [3, 2]
    assert lines[0]["unit_file"] == units[0].file and lines[0]["command"] == units[0].spec.command
    assert lines[0]["unit_commands"][1] == {"label": "j1", "workdir": "/w", "command": "run 1"}
    # 3 commands run at once (parallel 4, 3 in the unit): 3 x 1G, 3 x 2 CPUs; the last, 2 x
    assert (lines[0]["mem"], lines[0]["cpus"]) == (3 * 1024**3, 6)
    assert (lines[1]["mem"], lines[1]["cpus"]) == (2 * 1024**3, 4)
    assert lines[0]["chunk"] == lines[1]["chunk"]  # one array for the phase's units


# ---- sacct (accounting) -------------------------------------------------------------------

# `sacct -X -n -P -o JobID,State,ExitCode,WorkDir,Start,End` as Slurm 22.05 prints it
SACCT = """\
12_0|CANCELLED by 0|0:0|/w|2026-12-02T07:04:41|2026-12-02T07:04:42
12_1|FAILED|0:9|/w|2026-12-02T07:04:42|2026-12-02T07:04:50
12_2|FAILED|3:0|/w|2026-12-02T07:04:42|2026-12-02T07:04:43
12_3|OUT_OF_MEMORY|0:125|/w|2026-12-02T07:04:42|2026-12-02T07:04:44
12_4|TIMEOUT|0:15|/w|2026-12-02T07:04:42|2026-12-02T07:05:42
12_5|RUNNING|0:0|/w|2026-12-02T07:04:42|Unknown
12_[6-9%2]|PENDING|0:0|/w|Unknown|Unknown
13|FAILED|1:0|/w|2026-12-02T07:04:42|2026-12-02T07:04:43
"""


def test_sacct_end_states_read_as_the_ledgers_outcomes() -> None:
    from jobsafe_ops.hostside.slurm_model import parse_sacct

    rows = {(a, i): (state, outcome, code) for a, i, state, outcome, code, *_ in
            parse_sacct(SACCT)}
    assert rows == {("12", 0): ("CANCELLED", "killed", 0),
                    ("12", 1): ("FAILED", "failed", 137),  # SIGKILL: 128 + 9
                    ("12", 2): ("FAILED", "failed", 3),
                    ("12", 3): ("OUT_OF_MEMORY", "killed", 137),
                    ("12", 4): ("TIMEOUT", "failed", 143)}  # running, pending, plain: out
    # the retry rules read them as they read a wrapper's record
    from jobsafe_ops.batch.retry import classify
    from jobsafe_ops.scheduler.pueue import Task

    kinds = {i: classify(Task(i, "g", f"l{i}", "c", "/w", outcome, code))
             for (_, i), (_, outcome, code) in rows.items()}
    assert kinds == {0: "transient", 1: "transient", 2: "persistent", 3: "transient",
                     4: "transient"}


def test_a_ledger_line_wins_over_what_sacct_says(tmp_path: Path) -> None:
    (tmp_path / "ledger.ndjson").write_text(json.dumps(
        {"event": "end", "label": "a", "group": "g", "outcome": "failed", "exit": 3}) + "\n")
    from_sacct = {str(tmp_path): {
        "a": {"label": "a", "outcome": "failed", "exit": 1, "slurm_state": "FAILED"},
        "b": {"label": "b", "outcome": "killed", "exit": 0, "slurm_state": "CANCELLED"}}}
    out = slurm_feed.outcomes_of(str(tmp_path), from_sacct)
    assert out["a"]["exit"] == 3 and "slurm_state" not in out["a"]
    assert out["b"]["slurm_state"] == "CANCELLED"


def test_sacct_gives_a_killed_units_commands_its_state(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """One sacct call over the batch's arrays (arrays.ndjson); a unit's element -> one record
    per command (the unit itself is never judged); no accounting -> nothing, no error."""
    bdir = tmp_path / "pb"
    (bdir / "arrays").mkdir(parents=True)
    unit_file = bdir / "units" / "u.jsonl"
    unit_file.parent.mkdir()
    unit_file.write_text("".join(json.dumps({"label": f"c{i}", "workdir": "/w",
                                             "command": f"run {i}"}) + "\n" for i in range(3)))
    (bdir / "arrays" / "d1d1d1d1d1.jsonl").write_text(
        json.dumps({"label": "j", "group": "g", "command": "one"}) + "\n" +
        json.dumps({"label": "pb:unit-00000-0123abcd", "group": "g", "command": "unit",
                    "unit_file": str(unit_file)}) + "\n")
    (bdir / "arrays.ndjson").write_text(json.dumps({"array": "12", "chunk": "d1d1d1d1d1"}) + "\n")
    fake = tmp_path / "bin" / "sacct"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho \"$@\" > \"$(dirname \"$0\")/args\"\n"
                    "printf '12_0|FAILED|0:9|/w|s|e\\n12_1|NODE_FAIL|0:0|/w|s|e\\n'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    ok, found = slurm_feed.sacct_ended([str(bdir)])
    args = (fake.parent / "args").read_text().split()
    assert ok and args[args.index("-j") + 1] == "12" and "-X" in args
    recs = found[str(bdir)]
    assert recs["j"]["exit"] == 137 and recs["j"]["command"] == "one"
    assert sorted(recs) == ["c0", "c1", "c2", "j"]  # the unit's commands, not the unit
    assert recs["c1"]["outcome"] == "killed" and recs["c1"]["slurm_state"] == "NODE_FAIL"
    assert recs["c1"]["command"] == "run 1" and recs["c1"]["unit"] == "pb:unit-00000-0123abcd"
    fake.write_text("#!/bin/sh\necho 'sacct: error: Slurm accounting storage is disabled' >&2\n"
                    "exit 1\n")
    assert slurm_feed.sacct_ended([str(bdir)]) == (False, {})
