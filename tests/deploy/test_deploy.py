"""jobsafe_ops.deploy.steps without SSH: the step runner (lock release on every exit path), a
scripted host for the dry run and the refusals, and the rendering. The steps' own parsers
and checks are tested beside their modules (test_pull, test_install, test_decide,
test_restart); options in test_deploy_context, the commands in test_deploy_cli."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from jobsafe_ops.deploy import lock as locking
from jobsafe_ops.deploy import steps as d
from jobsafe_ops.deploy.context import DeployContext, DeployOptions, LockOutcome
from jobsafe_ops.deploy.plan import StepResult
from jobsafe_ops.errors import ConfigError, RefusedError, RemoteError
from jobsafe_ops.facts.views import deploy_view
from jobsafe_ops.inventory import load_inventory
from jobsafe_ops.testing.fake_remote import ANY, FakeRemote, Sent, result

DATA = Path(__file__).parents[1] / "data" / "probe"
HOSTS = load_inventory(Path(__file__).resolve().parents[2] / "hosts")
HEAD = "a" * 40
NEW = "b" * 40
PROJECT = "/home/op/project"


# ---- a scripted host ----------------------------------------------------------------------

class BigBlack(FakeRemote):
    """The recorded bigblack (tasks 3, 4 and 12 running, SOLUSDT@250 failed), answering by
    argv and keeping pueue's state as the commands change it: pause/start a group, kill
    (SIGTERM ignored when `stubborn`), add."""

    def __init__(self, changes: str = "", lock: str = "FREE\n", stubborn: bool = False,
                 fetched: str = NEW) -> None:
        host = HOSTS["bigblack"]
        super().__init__(host)
        probe = (DATA / "bigblack-busy-swapping.txt").read_text()
        self.status = json.loads(probe.split("@@status\n", 1)[1].split("\nrc 0", 1)[0])
        self.stubborn = stubborn
        git = f"@@head\n{HEAD}\n@@branch\nmain\n@@changes\n{changes}@@lock\n{lock}@@end\n"
        verify = json.dumps({"version": "1.0.0", "dist_version": "1.0.0", "editable": True,
                             "file": f"{PROJECT}/src/mypkg/__init__.py"})
        pueue = host.pueue
        head, rest = probe.split("@@status\n", 1)
        tail = "\nrc 0" + rest.split("\nrc 0", 1)[1]
        self.on_script("@@nproc", lambda s: f"{head}@@status\n{json.dumps(self.status)}{tail}")
        self.on_script("@@head", git)
        self.on((pueue, "status", "--json"), lambda s: json.dumps(self.status))
        self.on((ANY, "-I", "-c"), verify)  # the venv python's VERIFY script
        self.on(("git", "-C", PROJECT, "fetch"), f"@@target\n{fetched}\n@@changes\n",
                mutates=True)
        self.on(("git", "-C", PROJECT, "reset"), f"{fetched}\n", mutates=True)
        self.on(("git", "-C", PROJECT, "rev-parse"), f"{fetched}\n")
        self.on_script("echo ACQUIRED", "ACQUIRED\n", mutates=True)
        self.on_script("echo RELEASED", "RELEASED\n", mutates=True)
        self.on((pueue, "pause", "--group"), self._group("Paused"), mutates=True)
        self.on((pueue, "start", "--group"), self._group("Running"), mutates=True)
        self.on((pueue, "kill"), self._kill, mutates=True)
        self.on((pueue, "add"), self._add, mutates=True)
        self.on(("rm", "-f", "--"), "", mutates=True)
        self.on(("python3", "-c", ANY, "journal"), "")  # the host's team journal: empty

    def _group(self, status: str) -> Any:
        def apply(sent: Sent) -> str:
            assert sent.argv is not None
            self.status["groups"][sent.argv[3]]["status"] = status
            return ""
        return apply

    def _kill(self, sent: Sent) -> str:
        assert sent.argv is not None
        term = "--signal" in sent.argv
        if term and self.stubborn:
            return ""
        for i in sent.argv[4 if term else 2:]:
            task = self.status["tasks"][i]
            start = next(iter(task["status"].values()))
            task["status"] = {"Done": {**start, "end": start["start"], "result": "Killed"}}
        return ""

    def _add(self, sent: Sent) -> str:
        assert sent.argv is not None
        argv = list(sent.argv)
        new = str(max(int(k) for k in self.status["tasks"]) + 1)
        template = dict(self.status["tasks"]["5"])  # a queued task
        self.status["tasks"][new] = {**template, "id": int(new),
                                     "label": argv[argv.index("--label") + 1],
                                     "group": argv[argv.index("--group") + 1],
                                     "command": argv[-1]}
        return f"{new}\n"


def ctx_for(remote: FakeRemote, owner: locking.LockOwner | None = None,
            **opts: Any) -> DeployContext:
    return DeployContext(host=remote.host, remote=remote, options=DeployOptions(**opts),
                         owner=owner)


def test_dry_run_reads_for_real_and_changes_nothing(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBSAFE_JOURNAL", str(tmp_path / "j.ndjson"))
    remote = BigBlack()
    report = d.run_deploy(ctx_for(remote, dry=True, on_running="kill", version="1.1.0"))
    sent = "\n".join(remote.lines())
    assert "@@nproc" in sent and "@@head" in sent and "import_module" in sent  # real reads
    assert remote.mutations == []  # ... and nothing else
    planned = "\n".join(report.planned)
    assert "pueue kill --signal sigterm 3 4 12" in planned.replace("'", "")
    # the reset target is the commit the fetch finds: the listing says so (it used to
    # print `reset --hard origin/main`, which the run never sends)
    assert "reset --quiet --hard <origin/main after the fetch>" in planned.replace("'", "")
    assert "only if that commit is not HEAD aaaaaaaaaa" in planned
    assert "pueue kill 3 4 12  # SIGKILL; only for those of them still running" in \
        planned.replace("'", "")
    assert "pueue add --group p1 --label SOLUSDT@250-retry-1" in planned.replace("'", "")
    assert "BTCUSDT@500-retry-1" in planned  # the killed tasks are re-added
    assert "rm -f --" in planned and ".cache/mypkg/checkpoints/BTCUSDT@500.json" in planned
    assert "pause --group p1 --wait" in planned.replace("'", "")
    assert "start --group p1" in planned.replace("'", "")  # resumed after the re-adds
    assert "if mkdir" in report.planned[0] and "RELEASED" in report.planned[-1]
    assert report.exit_code == 0 and report.dry
    assert [s.name for s in report.steps] == [f.__name__ for f in d.STEPS]
    assert not (tmp_path / "j.ndjson").exists()  # nothing journaled: nothing changed


def test_dry_run_reports_the_refusal_with_exit_3(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBSAFE_JOURNAL", str(tmp_path / "j.ndjson"))
    report = d.run_deploy(ctx_for(BigBlack(" M setup.py\n"), dry=True))
    assert report.exit_code == 3
    decide = next(s for s in report.steps if s.name == "decide")
    assert decide.status == "refused" and "local changes" in decide.detail
    assert "running" in decide.detail  # abort is the default without a TTY
    assert "would be REFUSED" in report.verdict
    assert len(report.steps) == len(d.STEPS)  # the walk-through goes on


def test_a_held_lock_refuses_before_any_mutation(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBSAFE_JOURNAL", str(tmp_path / "j.ndjson"))
    theirs = locking.this_process()
    held = f"HELD\n{theirs.to_json()}\n100\n90\n"
    for dry in (True, False):
        remote = BigBlack(lock=held)
        report = d.run_deploy(ctx_for(remote, dry=dry, on_running="keep"))
        assert report.exit_code == 3 and f"locked by {theirs.operator}" in report.verdict
        assert remote.mutations == []  # the audit saw it: not even a mkdir


def _released(remote: FakeRemote) -> list[Sent]:
    return [s for s in remote.mutations if "echo RELEASED" in s.command]


def test_abort_refuses_before_any_mutation_and_releases_the_lock(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBSAFE_JOURNAL", str(tmp_path / "j.ndjson"))
    remote = BigBlack()
    report = d.run_deploy(ctx_for(remote))
    assert report.exit_code == 3
    assert [s.status for s in report.steps] == ["ok", "ok", "refused"]
    assert "BTCUSDT@500" in report.steps[-1].detail
    assert [s.command for s in remote.mutations] == [a.line for a in report.actions]
    assert len(remote.mutations) == 2 and len(_released(remote)) == 1  # mkdir, release
    assert locking.lock_path(remote.host).split("/")[-1] in _released(remote)[0].command
    assert not any(s.argv and ("fetch" in s.argv or "kill" in s.argv) for s in remote.sent)


def test_a_tty_answer_is_the_policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBSAFE_JOURNAL", str(tmp_path / "j.ndjson"))
    remote = BigBlack()
    asked: list[str] = []
    ctx = ctx_for(remote)
    ctx.ask = lambda audit: asked.append(audit.host) or "keep"
    report = d.run_deploy(ctx, d.STEPS[:3])
    assert asked == ["bigblack"] and report.policy == "keep" and report.exit_code == 0
    assert "OLD code" in report.steps[2].detail


# ---- dry run = the plan -------------------------------------------------------------------

def _follows(plan: list[Any], sent: list[str]) -> None:
    """Every line the run sent is the next planned action (a conditional one may have
    been skipped: the run found its condition false); nothing unplanned was sent."""
    i = 0
    for line in sent:
        while i < len(plan) and not plan[i].matches(line):
            assert plan[i].when, f"planned, never sent: {plan[i].line}"
            i += 1
        assert i < len(plan), f"sent, never planned: {line}"
        i += 1
    assert all(a.when for a in plan[i:]), [a.line for a in plan[i:]]


@pytest.mark.parametrize("stubborn", [False, True], ids=["sigterm-stops", "sigkill-needed"])
@pytest.mark.parametrize("opts", [
    {"on_running": "kill"},
    {"on_running": "kill", "discard_local_changes": True, "version": None},
    {"on_running": "keep"},
], ids=["kill", "kill-discard", "keep"])
def test_the_dry_run_lists_exactly_the_commands_the_run_sends(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stubborn: bool,
        opts: dict[str, Any]) -> None:
    owner = locking.this_process(600)  # the owner record is part of the lock's command
    common = {**opts, "watch": 0, "kill_grace": 0.3, "poll": 0.05}
    monkeypatch.setenv("JOBSAFE_JOURNAL", str(tmp_path / "dry.ndjson"))
    dry_host = BigBlack(stubborn=stubborn)
    dry = d.run_deploy(ctx_for(dry_host, owner, dry=True, **common))
    monkeypatch.setenv("JOBSAFE_JOURNAL", str(tmp_path / "run.ndjson"))
    run_host = BigBlack(stubborn=stubborn)
    run = d.run_deploy(ctx_for(run_host, owner, **common))
    assert dry.exit_code == run.exit_code == 0, (dry.verdict, run.verdict)
    assert dry_host.mutations == []
    sent = [s.command for s in run_host.mutations]
    # what the executor says it ran is what reached the host, and nothing else changed it
    assert sent == [a.line for a in run.actions]
    assert dry.planned == tuple(a.text() for a in dry.actions)
    _follows(list(dry.actions), sent)
    unconditional = [a.line for a in dry.actions if not a.when or a.at_end]
    conditional_sent = [line for line in sent if line not in unconditional]
    if opts["on_running"] == "kill":
        sigkill = [a for a in dry.actions if a.why == "SIGKILL"]
        assert len(sigkill) == 1 and sigkill[0].when
        # SIGKILL went out exactly when SIGTERM left them running, with the planned ids
        assert (sigkill[0].line in sent) is stubborn
        assert [line for line in conditional_sent if "reset" not in line] == \
            ([sigkill[0].line] if stubborn else [])
    assert any("reset --quiet --hard " + NEW in line for line in sent)


def test_nothing_to_pull_sends_no_reset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBSAFE_JOURNAL", str(tmp_path / "j.ndjson"))
    owner = locking.this_process(600)
    dry = d.run_deploy(ctx_for(BigBlack(fetched=HEAD), owner, dry=True, on_running="keep",
                               watch=0))
    remote = BigBlack(fetched=HEAD)
    run = d.run_deploy(ctx_for(remote, owner, on_running="keep", watch=0))
    sent = [s.command for s in remote.mutations]
    _follows(list(dry.actions), sent)
    reset = next(a for a in dry.actions if "reset" in a.line)
    assert reset.when and not any(reset.matches(line) for line in sent)
    assert run.exit_code == 0 and "(unchanged)" in run.verdict


# ---- the runner ---------------------------------------------------------------------------

def _owned(ctx: DeployContext) -> StepResult:
    ctx.held = LockOutcome("~/lock", locking.this_process())
    return StepResult("lock", "ok")


def _runner_host() -> FakeRemote:
    return BigBlack().on_script("echo RELEASED", "RELEASED\n", mutates=True)


def _runner_ctx(remote: FakeRemote | None = None) -> DeployContext:
    return ctx_for(remote or _runner_host())


def _released_paths(remote: FakeRemote) -> list[str]:
    return ["~/lock" for s in _released(remote) if "/lock" in s.command]


@pytest.mark.parametrize("boom, code", [
    (RefusedError("no"), 3), (RemoteError("gone"), 4), (ConfigError("bad"), 2)])
def test_runner_stops_at_an_error_and_releases(boom: Exception, code: int) -> None:
    remote = _runner_host()

    def failing(ctx: DeployContext) -> StepResult:
        raise boom

    def never(ctx: DeployContext) -> StepResult:
        raise AssertionError("steps after a failure never run")

    report = d.run_deploy(_runner_ctx(remote), [_owned, failing, never])
    assert report.exit_code == code and _released_paths(remote) == ["~/lock"]
    assert report.steps[-1].name == "failing" and str(boom) in report.verdict


def test_ctrl_c_releases_the_lock_and_propagates() -> None:
    remote = _runner_host()

    def interrupted(ctx: DeployContext) -> StepResult:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        d.run_deploy(_runner_ctx(remote), [_owned, interrupted])
    assert _released_paths(remote) == ["~/lock"]


def test_release_failure_does_not_mask_the_outcome() -> None:
    def unreachable(sent: Sent) -> str:
        raise RemoteError("connection lost")

    remote = _runner_host().on_script("echo RELEASED", unreachable, mutates=True)
    said: list[str] = []
    ctx = _runner_ctx(remote)
    ctx.say = said.append
    report = d.run_deploy(ctx, [_owned])
    assert report.exit_code == 0 and "stale" in said[0]


def test_release_of_a_lock_someone_else_took_says_so() -> None:
    remote = _runner_host().on_script("echo RELEASED", result("NOT_OURS\n"), mutates=True)
    said: list[str] = []
    ctx = _runner_ctx(remote)
    ctx.say = said.append
    assert d.run_deploy(ctx, [_owned]).exit_code == 0
    assert "no longer ours" in said[0]


def test_steps_are_timed() -> None:
    def slow(ctx: DeployContext) -> StepResult:
        import time

        time.sleep(0.05)
        return StepResult("slow", "ok")

    report = d.run_deploy(_runner_ctx(), [slow])
    assert report.steps[0].seconds >= 0.05


# ---- rendering ----------------------------------------------------------------------------

def render(obj: Any) -> str:
    buf = io.StringIO()
    Console(file=buf, width=120, color_system=None, force_terminal=False).print(obj)
    return buf.getvalue()


def test_render_step_table_and_verdict() -> None:
    report = d.DeployReport(
        host="bigblack", dry=True, exit_code=0, verdict="bigblack: DRY RUN: 1 remote command",
        steps=(StepResult("audit", "ok", 0.52, "1 running"),
               StepResult("pull", "dry", 0.0, "would fetch")),
        planned=("git -C /home/op/project reset --quiet --hard origin/main",))
    text = render(deploy_view(report))
    assert "bigblack: dry run" in text
    assert "audit" in text and "0.52s" in text and "would fetch" in text
    assert "git -C /home/op/project reset --quiet --hard origin/main" in text
    assert "VERDICT bigblack: DRY RUN" in text
    assert json.loads(json.dumps(report.to_dict()))["steps"][0]["seconds"] == 0.52


# ---- MONITOR with the host file's deploy-watch [[checks]] ----------------------------------

class Calm(BigBlack):
    """BigBlack at rest (low load, no swapping) whose probe also answers its deploy-watch
    checks (bigblack's clickhouse-errors) with `self.errors`."""

    def __init__(self) -> None:
        super().__init__()
        self.errors = "0"
        self.carried = 0  # probes that carried the checks
        busy = next(h.reply for h in reversed(self._handlers) if h.marker == "@@nproc")
        assert callable(busy)

        def calm(sent: Sent) -> str:
            text = str(busy(sent)).replace("30.50 28.10 25.00", "1.00 1.00 1.00")
            text = text.replace("pswpin 1012\npswpout 2030", "pswpin 1000\npswpout 2000")
            return self._framed(text, sent)

        self.on_script("@@nproc", calm)

    def _framed(self, text: str, sent: Sent) -> str:
        import base64
        import re

        m = re.search(r'echo "@@check ([0-9a-f]+) 0 ', sent.command)
        if m is None:
            return text
        self.carried += 1
        body = base64.b64encode(self.errors.encode()).decode()
        return text.replace("@@end", f"@@check {m.group(1)} 0 0\n{body}\n\n@@end")


@pytest.mark.parametrize(("errors", "status", "ok"), [("0", "ok", True), ("3", "failed", False)])
def test_the_monitor_window_judges_the_deploy_watch_checks(errors: str, status: str,
                                                           ok: bool) -> None:
    remote = Calm()
    remote.errors = errors
    ctx = ctx_for(remote, watch=0.3, poll=0.1)
    row = d.monitor(ctx)
    assert remote.carried >= 1  # in each sample's probe round trip, none of their own
    assert len(remote.sent) == remote.carried
    assert row.status == status and row.value.ok is ok
    if ok:
        assert "checks 1/1 ok" in row.detail
    else:
        assert "check clickhouse-errors ALARM: output '3' is not == 0" in row.detail
    sample = row.data["samples"][0]["checks"][0]
    assert (sample["name"], sample["verdict"], sample["observed"]) == (
        "clickhouse-errors", "ok" if ok else "alarm", errors)
