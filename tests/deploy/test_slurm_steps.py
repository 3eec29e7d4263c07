"""jobsafe_ops.deploy.slurm_steps without SSH: the deploy protocol on a scripted Slurm login
node (recorded `scontrol show config` / `sinfo`, a `records` payload kept as the commands
change it): the records -> state parser, abort refusing before any mutation, kill = one
scancel of the ids squeue showed then a fresh `-retry-N` array per batch (budget as on
pueue hosts), and the dry listing == what the run sent."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from jobsafe_ops import journal, scheduler
from jobsafe_ops.batch import retry as retries
from jobsafe_ops.deploy import lock as locking
from jobsafe_ops.deploy import slurm_steps as s
from jobsafe_ops.deploy.context import DeployContext, DeployOptions
from jobsafe_ops.deploy.steps import run_deploy
from jobsafe_ops.inventory import GroupSpec, Host
from jobsafe_ops.scheduler.slurm import SlurmScheduler
from jobsafe_ops.testing.fake_remote import ANY, FakeRemote, Sent
from tests.deploy.test_deploy import _follows

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "slurm"
HOME = "/home/op"
PROJECT = f"{HOME}/project"
BDIR = f"{HOME}/.local/state/jobsafe-ops/batches/sweep"
HEAD, NEW = "a" * 40, "b" * 40


def slurm_host() -> Host:
    return Host(name="hpc", ssh="hpc", project_dir="~/project", package="mypkg",
                scheduler="slurm", source="hosts/hpc.toml",
                groups={"p1": GroupSpec("p1", 2, 1, 4, job_memory=100 * 1024**2)})


def element(label: str, jid: str, state: str = "RUNNING") -> dict[str, Any]:
    return {"group": "p1", "id": jid, "array": jid.split("_")[0], "state": state,
            "reason": "None", "command": f"run {label}", "workdir": PROJECT}


class Login(FakeRemote):
    """A login node: `records` answers from `self.batches`; scancel ends those elements as
    killed in the ledger; a submit adds the uploaded lines as pending elements."""

    def __init__(self, running: tuple[str, ...] = ("a", "b"), failed: tuple[str, ...] = (),
                 host: Host | None = None) -> None:
        super().__init__(host or slurm_host())
        els = {lbl: element(lbl, f"7_{i}") for i, lbl in enumerate(running)}
        els["q"] = element("q", "7_9", "PENDING")
        ended = {lbl: {"group": "p1", "outcome": "failed", "exit": 137,
                       "command": f"run {lbl}", "workdir": PROJECT} for lbl in failed}
        self.batch: dict[str, Any] = {"dir": BDIR, "ended": ended, "elements": els}
        self.next_array = 20
        self.stubborn = False  # scancel stops nothing
        self.reads = 0  # records reads so far (the audit's included)
        self.on_read: Callable[[int], None] = lambda n: None
        config = (FIXTURES / "show_config_task_none.txt").read_text()
        sinfo = (FIXTURES / "sinfo_nodes.txt").read_text()
        probe = (f"@@home\n{HOME}\n@@path\n/usr/bin\n@@programs\nsbatch\t/usr/bin/sbatch\n"
                 f"@@config\n{config}rc 0\n@@sinfo\n{sinfo}rc 0\n")
        verify = json.dumps({"version": "1.0.0", "dist_version": "1.0.0", "editable": True,
                             "file": f"{PROJECT}/src/mypkg/__init__.py"})
        self.on_script("records --root", lambda _: self.records() + "\n")
        self.on_script("@@config", lambda _: f"{probe}@@records\n{self.records()}\n@@end\n")
        self.on_script("@@head", f"@@head\n{HEAD}\n@@branch\nmain\n@@changes\n@@lock\nFREE\n"
                       "@@end\n")
        self.on((ANY, "-I", "-c"), verify)
        self.on(("git", "-C", PROJECT, "fetch"), f"@@target\n{NEW}\n@@changes\n", mutates=True)
        self.on(("git", "-C", PROJECT, "reset"), f"{NEW}\n", mutates=True)
        self.on(("git", "-C", PROJECT, "rev-parse"), f"{NEW}\n")
        self.on_script("echo ACQUIRED", "ACQUIRED\n", mutates=True)
        self.on_script("echo RELEASED", "RELEASED\n", mutates=True)
        self.on_script("uploaded copy is incomplete", self._renamed)  # put_text's check
        self.on(("scancel",), self._scancel, mutates=True)
        self.on(("python3", "-c", ANY, "journal"), "")  # the host's team journal: empty
        self.on(("scontrol", "hold"), self._hold("JobHeldUser"), mutates=True)
        self.on(("scontrol", "release"), self._hold("None"), mutates=True)
        self.on(("python3", f"{BDIR}/slurm_feed.py", "submit"), self._submit, mutates=True)

    def records(self) -> str:
        self.reads += 1
        self.on_read(self.reads)
        b = self.batch
        return json.dumps({"sweep": {**b, "active": sorted(b["elements"])}})

    def _renamed(self, sent: Sent) -> str:
        tmp = next(p for p in self.files if p in sent.command and ".tmp." in p)
        self.files[tmp.rsplit(".tmp.", 1)[0]] = self.files.pop(tmp)
        return ""

    def _hold(self, reason: str) -> Any:
        def apply(sent: Sent) -> str:
            assert sent.argv is not None
            ids = set(sent.argv[2].split(","))
            for e in self.batch["elements"].values():
                if e["id"] in ids:
                    assert e["state"] == "PENDING"
                    e["reason"] = reason
            return ""
        return apply

    def _scancel(self, sent: Sent) -> str:
        assert sent.argv is not None
        if self.stubborn:
            return ""
        ids = set(sent.argv[1:])
        els = self.batch["elements"]
        for label in [lbl for lbl, e in els.items() if e["id"] in ids]:
            e = els.pop(label)
            self.batch["ended"][label] = {"group": "p1", "outcome": "killed", "exit": 143,
                                          "command": e["command"], "workdir": e["workdir"]}
        return ""

    def _submit(self, sent: Sent) -> str:
        text = self.files[f"{BDIR}/retry-commands.jsonl"]
        added = []
        for i, raw in enumerate(text.splitlines()):
            line = json.loads(raw)
            jid = f"{self.next_array}_{i}"
            self.batch["elements"][line["label"]] = element(line["label"], jid, "PENDING")
            added.append([line["label"], jid])
        self.next_array += 1
        return "@@summary " + json.dumps({"added": added, "existing": [], "errors": []}) + "\n"


def ctx_for(remote: FakeRemote, owner: locking.LockOwner | None = None,
            **opts: Any) -> DeployContext:
    return DeployContext(host=remote.host, remote=remote, options=DeployOptions(**opts),
                         owner=owner)


@pytest.fixture(autouse=True)
def _journal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBSAFE_JOURNAL", str(tmp_path / "j.ndjson"))


def test_records_become_the_state_audit_and_retry_read() -> None:
    remote = Login(failed=("f",))
    recs = s.parse_records(remote.host, json.loads(remote.records()))
    by = {t.label: t.state for t in recs.state.tasks}
    assert by == {"a": "running", "b": "running", "q": "queued", "f": "failed"}
    assert [k for k, _ in recs.running()] == [("p1", "a"), ("p1", "b")]
    assert recs.where[("p1", "f")] == BDIR and recs.elements[("p1", "a")]["id"] == "7_0"
    blocked = s.parse_records(remote.host, {"x": {"dir": BDIR, "ended": {}, "elements": {
        "d": {**element("d", "8_0", "PENDING"), "reason": "DependencyNeverSatisfied"}}}})
    assert blocked.state.state_of(blocked.state.tasks[0]) == "blocked"


def test_abort_refuses_with_exit_3_and_sends_only_the_lock() -> None:
    remote = Login()
    report = run_deploy(ctx_for(remote), s.STEPS)
    assert report.exit_code == 3 and "p1/a" in report.error and "p1/b" in report.error
    assert [st.status for st in report.steps] == ["ok", "ok", "refused"]
    assert len(remote.mutations) == 2  # mkdir and release of the lock, nothing else
    assert not any(x.argv and x.argv[0] == "scancel" for x in remote.sent)


def test_nothing_running_pulls_and_says_there_is_no_daemon() -> None:
    remote = Login(running=())
    report = run_deploy(ctx_for(remote, watch=0), s.STEPS)
    assert report.exit_code == 0, report.verdict
    assert report.commit_after == NEW and f"deployed {NEW[:10]}" in report.verdict
    restart = next(st for st in report.steps if st.name == "restart")
    assert "no daemon to restart on Slurm" in restart.detail


def test_kill_scancels_the_squeue_ids_and_resubmits_each_label_once() -> None:
    remote = Login(failed=("f",))
    report = run_deploy(ctx_for(remote, on_running="kill", watch=0, poll=0.01), s.STEPS)
    assert report.exit_code == 0, report.verdict
    scontrol = [x.argv for x in remote.mutations if x.argv and x.argv[0] in ("scancel",
                                                                             "scontrol")]
    # the running ones are scancelled by the ids squeue showed; q, pending in their group,
    # is held so it cannot start on the old code, and released after the re-adds
    assert scontrol == [("scontrol", "hold", "7_9"), ("scancel", "7_0", "7_1"),
                        ("scontrol", "release", "7_9")]
    assert remote.batch["elements"]["q"]["reason"] == "None"
    pulled = next(i for i, x in enumerate(remote.mutations) if x.argv and "reset" in x.argv)
    released = next(i for i, x in enumerate(remote.mutations) if x.argv and "release" in x.argv)
    assert pulled < released  # q starts on the new code
    submits = [x for x in remote.mutations if x.argv and "submit" in x.argv]
    assert len(submits) == 1  # one batch: one upload + one submit
    lines = [json.loads(x)["label"] for x in
             remote.files[f"{BDIR}/retry-commands.jsonl"].splitlines()]
    assert lines == ["a-retry-1", "b-retry-1", "f-retry-1"]
    assert set(remote.batch["elements"]) == {"q", "a-retry-1", "b-retry-1", "f-retry-1"}
    # the budget is spent the way a pueue deploy spends it: one re-add line per label
    used = retries.used_from_journal(journal.entries(host="hpc"))
    assert used == {("p1", "a"): 1, ("p1", "b"): 1, ("p1", "f"): 1}
    before = len(remote.mutations)
    again = run_deploy(ctx_for(remote, on_running="keep", watch=0), s.STEPS)
    assert again.exit_code == 0, again.verdict  # converged: nothing killed or re-added twice
    assert not any(x.argv and x.argv[0] in ("scancel", "python3")
                   for x in remote.mutations[before:])
    assert "re-added" not in again.verdict


def test_a_deploy_interrupted_after_its_hold_is_released_by_the_next() -> None:
    remote = Login()
    journal.append("hpc", "group-pause", [], group="p1", ids=["7_9"], reason="deploy")
    remote.batch["elements"]["q"]["reason"] = "JobHeldUser"
    remote.batch["elements"]["h"] = {**element("h", "7_8", "PENDING"),
                                     "reason": "JobHeldUser"}  # someone else's hold
    report = run_deploy(ctx_for(remote, on_running="keep", watch=0), s.STEPS)
    assert report.exit_code == 0, report.verdict
    releases = [x.argv for x in remote.mutations if x.argv and "release" in x.argv]
    assert releases == [("scontrol", "release", "7_9")]  # never 7_8
    assert s.held_by_deploy(journal.entries(host="hpc")) == []  # converged


def test_a_kill_interrupted_before_its_restart_is_re_added_by_the_next_run() -> None:
    remote = Login(running=("b",))
    journal.append("hpc", "kill", ["a"], result="recorded", tasks=[
        {"group": "p1", "label": "a", "command": "run a", "workdir": PROJECT, "id": 0}])
    remote.batch["ended"]["a"] = {"group": "p1", "outcome": "failed", "exit": 1,  # not
                                  "command": "run a", "workdir": PROJECT}  # transient
    report = run_deploy(ctx_for(remote, on_running="keep", watch=0), s.STEPS)
    assert report.exit_code == 0, report.verdict
    assert "a-retry-1" in remote.batch["elements"]  # re-added whatever its exit code
    again = run_deploy(ctx_for(remote, on_running="keep", watch=0), s.STEPS)
    assert "re-added" not in again.verdict


def test_the_host_wide_re_add_budget_holds_on_slurm_too() -> None:
    remote = Login(running=(), failed=("f",),
                   host=dataclasses.replace(slurm_host(), max_readds_per_hour=0))
    report = run_deploy(ctx_for(remote, watch=0), s.STEPS)
    assert report.exit_code == 3 and "max_readds_per_hour" in report.error
    assert "f-retry-1" not in remote.batch["elements"]


def test_wait_polls_until_the_running_labels_leave_squeue_and_re_adds_what_failed() -> None:
    remote = Login(running=("a",))

    def a_ends(n: int) -> None:  # at the third read (audit, poll, poll): OOM-killed
        if n == 3:
            remote.batch["elements"].pop("a")
            remote.batch["ended"]["a"] = {"group": "p1", "outcome": "failed", "exit": 137,
                                          "command": "run a", "workdir": PROJECT}

    remote.on_read = a_ends
    report = run_deploy(ctx_for(remote, on_running="wait", watch=0, poll=0.01), s.STEPS)
    assert report.exit_code == 0, report.verdict
    decide = next(st for st in report.steps if st.name == "decide")
    assert decide.status == "ok" and "left squeue" in decide.detail
    assert not any(x.argv and x.argv[0] == "scancel" for x in remote.sent)
    assert "a-retry-1" in remote.batch["elements"]  # it failed while we waited
    short = Login(running=("a",))
    refused = run_deploy(ctx_for(short, on_running="wait", wait_timeout=0.05, poll=0.01),
                         s.STEPS)
    assert refused.exit_code == 3 and "still running after" in refused.error
    assert not any(x.argv and "reset" in x.argv for x in short.mutations)


def test_a_kill_that_stops_nothing_fails_and_the_next_run_releases_the_held(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(s, "KILL_WAIT", 0.05)
    remote = Login()
    remote.stubborn = True
    report = run_deploy(ctx_for(remote, on_running="kill", kill_grace=0, poll=0.01), s.STEPS)
    assert report.exit_code == 4 and "scancel did not stop p1/a, p1/b" in report.error
    assert "stay paused" in report.verdict and "scontrol release" in report.verdict
    assert remote.batch["elements"]["q"]["reason"] == "JobHeldUser"
    assert not any(x.argv and ("reset" in x.argv or "submit" in x.argv)
                   for x in remote.mutations)  # nothing pulled, nothing re-added
    remote.stubborn = False
    again = run_deploy(ctx_for(remote, on_running="keep", watch=0), s.STEPS)
    assert again.exit_code == 0, again.verdict
    assert remote.batch["elements"]["q"]["reason"] == "None"  # released


def test_kill_is_refused_before_scancel_when_the_budget_is_spent() -> None:
    remote = Login()
    report = run_deploy(ctx_for(remote, on_running="kill", retry_budget=0, watch=0), s.STEPS)
    assert report.exit_code == 3 and "retry budget" in report.error
    assert not any(x.argv and x.argv[0] == "scancel" for x in remote.sent)


@pytest.mark.parametrize("opts", [{"on_running": "kill"}, {"on_running": "keep"},
                                  {"on_running": "kill", "version": "1.0.0"}],
                         ids=["kill", "keep", "kill-version"])
def test_the_dry_run_lists_exactly_the_commands_the_run_sends(opts: dict[str, Any]) -> None:
    owner = locking.this_process(600)
    common = {**opts, "watch": 0, "poll": 0.01}
    dry_host = Login(failed=("f",))
    dry = run_deploy(ctx_for(dry_host, owner, dry=True, **common), s.STEPS)
    run_host = Login(failed=("f",))
    run = run_deploy(ctx_for(run_host, owner, **common), s.STEPS)
    assert dry.exit_code == run.exit_code == 0, (dry.verdict, run.verdict)
    assert dry_host.mutations == [] and dry_host.files == {}  # nothing sent, nothing written
    sent = [x.command for x in run_host.mutations]
    assert sent == [a.line for a in run.actions]
    assert dry.planned == tuple(a.text() for a in dry.actions)
    _follows(list(dry.actions), sent)
    # what the run uploaded is what the dry run listed it would upload, byte for byte
    assert [u for a in dry.actions for u in a.uploads] == \
        [u for a in run.actions for u in a.uploads]
    assert set(run_host.files) == {p for a in dry.actions for p, _, _ in a.uploads}
    planned = "\n".join(dry.planned)
    assert ("scancel 7_0 7_1" in planned) is (opts["on_running"] == "kill")
    assert ("scontrol release 7_9" in planned) is (opts["on_running"] == "kill")
    assert "after uploading " + f"{BDIR}/feeder.py" in planned
    assert "no daemon to restart on Slurm" in next(
        st.detail for st in dry.steps if st.name == "restart")


def test_for_host_gives_the_slurm_scheduler_of_a_login_node() -> None:
    sched = scheduler.for_host(slurm_host(), run=lambda argv: "", playbook="sweep")
    assert isinstance(sched, SlurmScheduler) and sched.name == "slurm"
    with pytest.raises(ValueError, match="runner"):
        scheduler.for_host(slurm_host())
