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
from jobsafe_ops.deploy.context import DeployContext, DeployOptions, StepResult
from jobsafe_ops.errors import ConfigError, RefusedError, RemoteError
from jobsafe_ops.facts.views import deploy_view
from jobsafe_ops.inventory import Host, load_inventory
from jobsafe_ops.remote import Remote, Result

DATA = Path(__file__).parents[1] / "data" / "probe"
HOSTS = load_inventory(Path(__file__).resolve().parents[2] / "hosts")
HEAD = "a" * 40


# ---- a scripted host ----------------------------------------------------------------------

class ScriptedRemote(Remote):
    """Answers reads from recorded outputs; records every command it is given."""

    def __init__(self, host: Host, answers: dict[str, str]) -> None:
        super().__init__(host)
        self.answers = answers
        self.commands: list[str] = []

    def _run(self, text: str, *, timeout: float | None, stdin: str | None) -> Result:
        self.commands.append(text)
        for key, out in self.answers.items():
            if key in text:
                return Result(text, out, "", 0)
        return Result(text, "", "", 0)


def scripted(changes: str = "", lock_free: bool = False) -> ScriptedRemote:
    probe = (DATA / "bigblack-busy-swapping.txt").read_text()
    status = probe.split("@@status\n", 1)[1].split("\nrc 0", 1)[0]
    git = f"@@head\n{HEAD}\n@@branch\nmain\n@@changes\n{changes}@@end\n"
    verify = json.dumps({"version": "1.0.0", "dist_version": "1.0.0", "editable": True,
                         "file": "/home/op/project/src/mypkg/__init__.py"})
    return ScriptedRemote(HOSTS["bigblack"], {
        **({"if mkdir": "ACQUIRED\n"} if lock_free else {}),
        "@@nproc": probe, "@@head": git, "status --json": status, "import_module": verify,
        "echo HELD": "FREE\n",
    })


def ctx_for(remote: ScriptedRemote, **opts: Any) -> DeployContext:
    return DeployContext(host=remote.host, remote=remote, options=DeployOptions(**opts))


MUTATING = ("mkdir", "pueue' kill", "kill ", "reset", "pueue' add", " add ", "rm -f", "pause",
            "fetch", "uv")


def test_dry_run_reads_for_real_and_changes_nothing(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBSAFE_JOURNAL", str(tmp_path / "j.ndjson"))
    remote = scripted()
    report = d.run_deploy(ctx_for(remote, dry=True, on_running="kill", version="1.1.0"))
    sent = "\n".join(remote.commands)
    assert "@@nproc" in sent and "@@head" in sent and "import_module" in sent  # real reads
    for c in remote.commands:  # ... and nothing else
        assert not any(m in c for m in MUTATING if m not in ("kill ",)) or "@@" in c \
            or "import_module" in c, c
    planned = "\n".join(report.planned)
    assert "pueue kill --signal sigterm 3 4 12" in planned.replace("'", "")
    assert "reset --quiet --hard origin/main" in planned
    assert "pueue add --group p1 --label SOLUSDT@250-retry-1" in planned.replace("'", "")
    assert "BTCUSDT@500-retry-1" in planned  # the killed tasks are re-added
    assert "rm -f --" in planned and ".cache/mypkg/checkpoints/BTCUSDT@500.json" in planned
    assert "pause --group p1 --wait" in planned.replace("'", "")
    assert report.exit_code == 0 and report.dry
    assert [s.name for s in report.steps] == [f.__name__ for f in d.STEPS]
    assert not (tmp_path / "j.ndjson").exists()  # nothing journaled: nothing changed


def test_dry_run_reports_the_refusal_with_exit_3(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBSAFE_JOURNAL", str(tmp_path / "j.ndjson"))
    report = d.run_deploy(ctx_for(scripted(" M setup.py\n"), dry=True))
    assert report.exit_code == 3
    decide = next(s for s in report.steps if s.name == "decide")
    assert decide.status == "refused" and "local changes" in decide.detail
    assert "running" in decide.detail  # abort is the default without a TTY
    assert "would be REFUSED" in report.verdict
    assert len(report.steps) == len(d.STEPS)  # the walk-through goes on


def test_abort_refuses_before_any_mutation_and_releases_the_lock(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBSAFE_JOURNAL", str(tmp_path / "j.ndjson"))
    remote = scripted(lock_free=True)
    released: list[str] = []
    monkeypatch.setattr(locking, "release", lambda r, p, o: released.append(p) or True)
    report = d.run_deploy(ctx_for(remote))
    assert report.exit_code == 3
    assert [s.status for s in report.steps] == ["ok", "ok", "refused"]
    assert "BTCUSDT@500" in report.steps[-1].detail
    assert released == [locking.lock_path(remote.host)]
    assert not any("fetch" in c or "pueue' kill" in c for c in remote.commands)


def test_a_tty_answer_is_the_policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBSAFE_JOURNAL", str(tmp_path / "j.ndjson"))
    remote = scripted(lock_free=True)
    monkeypatch.setattr(locking, "release", lambda r, p, o: True)
    asked: list[str] = []
    ctx = ctx_for(remote)
    ctx.ask = lambda audit: asked.append(audit.host) or "keep"
    report = d.run_deploy(ctx, d.STEPS[:3])
    assert asked == ["bigblack"] and report.policy == "keep" and report.exit_code == 0
    assert "OLD code" in report.steps[2].detail


# ---- the runner ---------------------------------------------------------------------------

def _owned(ctx: DeployContext) -> StepResult:
    ctx.lock_owner = locking.this_process()
    ctx.lock_path = "~/lock"
    return StepResult("lock", "ok")


def _runner_ctx() -> DeployContext:
    return ctx_for(scripted())


@pytest.mark.parametrize("boom, code", [
    (RefusedError("no"), 3), (RemoteError("gone"), 4), (ConfigError("bad"), 2)])
def test_runner_stops_at_an_error_and_releases(monkeypatch: pytest.MonkeyPatch,
                                               boom: Exception, code: int) -> None:
    released: list[str] = []
    monkeypatch.setattr(locking, "release", lambda r, p, o: released.append(p) or True)

    def failing(ctx: DeployContext) -> StepResult:
        raise boom

    def never(ctx: DeployContext) -> StepResult:
        raise AssertionError("steps after a failure never run")

    report = d.run_deploy(_runner_ctx(), [_owned, failing, never])
    assert report.exit_code == code and released == ["~/lock"]
    assert report.steps[-1].name == "failing" and str(boom) in report.verdict


def test_ctrl_c_releases_the_lock_and_propagates(monkeypatch: pytest.MonkeyPatch) -> None:
    released: list[str] = []
    monkeypatch.setattr(locking, "release", lambda r, p, o: released.append(p) or True)

    def interrupted(ctx: DeployContext) -> StepResult:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        d.run_deploy(_runner_ctx(), [_owned, interrupted])
    assert released == ["~/lock"]


def test_release_failure_does_not_mask_the_outcome(monkeypatch: pytest.MonkeyPatch) -> None:
    def unreachable(r: Any, p: Any, o: Any) -> bool:
        raise RemoteError("connection lost")

    monkeypatch.setattr(locking, "release", unreachable)
    said: list[str] = []
    ctx = _runner_ctx()
    ctx.say = said.append
    report = d.run_deploy(ctx, [_owned])
    assert report.exit_code == 0 and "stale" in said[0]


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
