"""jobsafe_ops.deploy without SSH: option checks, parsers, the uv outcome classifier, the
verify script, checkpoint paths, journal-driven convergence, the step runner (lock release
on every exit path), a scripted host for the dry run and the refusals, and the rendering."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from jobsafe_ops import deploy as d
from jobsafe_ops import lock as locking
from jobsafe_ops.errors import ConfigError, RefusedError, RemoteError
from jobsafe_ops.inventory import Host, load_inventory
from jobsafe_ops.remote import Remote, Result
from jobsafe_ops.views import deploy_view

DATA = Path(__file__).parent / "data" / "probe"
HOSTS = load_inventory(Path(__file__).resolve().parents[1] / "hosts")
HEAD = "a" * 40
NEW = "b" * 40


# ---- options ----------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, needle", [
    ({"on_running": "nuke"}, "--on-running"),
    ({"wait_timeout": -1}, "--wait-timeout"),
    ({"watch": -5}, "--watch"),
    ({"retry_budget": -1}, "--retry-budget"),
    ({"version": "1.2", "expect_version": "1.3"}, "disagree"),
    ({"ref": "--upload-pack=evil"}, "--ref"),
    ({"version": " "}, "--version"),
    ({"expect_code": "mypkg"}, "--expect-code"),
    ({"expect_code": "my pkg:f"}, "--expect-code"),
    ({"expect_code": "mypkg:"}, "--expect-code"),
])
def test_bad_options_are_exit_2_before_any_host(kwargs: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError) as exc:
        d.DeployOptions(**kwargs).validate()
    assert needle in str(exc.value) and exc.value.exit_code == 2


def test_good_options() -> None:
    opts = d.DeployOptions(on_running="kill", expect_code="mypkg.core:Cls.method:x * 2",
                           version="1.2.0", expect_version="1.2.0")
    opts.validate()
    assert opts.expected_version == "1.2.0"
    # the lock outlives the longest legitimate run (wait + upgrade + watch), no more
    assert opts.lock_ttl > opts.wait_timeout + opts.upgrade_timeout + opts.watch


# ---- parsers ----------------------------------------------------------------------------

def test_parse_git_facts() -> None:
    text = (f"@@head\n{HEAD}\n@@branch\nmain\n@@changes\n M src/mypkg/__init__.py\n"
            f"@@ref\n{NEW}\n@@end\n")
    g = d.parse_git_facts(text, "h:~/project")
    assert (g.head, g.branch, g.ref_target) == (HEAD, "main", NEW)
    assert g.changes == (" M src/mypkg/__init__.py",)


def test_not_a_checkout_is_a_config_error() -> None:
    text = "@@head\nfatal: not a git repository (or any of the parent directories): .git\n@@end\n"
    with pytest.raises(ConfigError, match="not a git checkout"):
        d.parse_git_facts(text, "h:~/project")


def test_parse_install() -> None:
    out = "noise\n" + json.dumps({"version": "1.1.0", "dist_version": "1.0.0",
                                  "file": "/p/src/m/__init__.py", "editable": True}) + "\n"
    inst = d.parse_install(out)
    assert (inst.version, inst.dist_version, inst.editable, inst.kind) == \
        ("1.1.0", "1.0.0", True, "editable")
    assert d.parse_install("").error


# Real uv 0.13 outputs (captured against pypiserver on loopback).
UV_NO_VERSION = ("Using Python 3.11.7 environment at: v\nerror: No solution found when resolving "
                 "dependencies\n  cause: Because there is no version of mypkg==1.1.0 and you "
                 "require mypkg==1.1.0, we can conclude that your requirements are "
                 "unsatisfiable.\n")
UV_NO_PACKAGE = ("error: No solution found when resolving dependencies\n  cause: Because mypkg "
                 "was not found in the package registry and you require mypkg==1.1.0, we can "
                 "conclude that your requirements are unsatisfiable.\n")
UV_CONNECT = ("error: Request failed after 3 retries in 8.8s\n  cause: Failed to fetch: "
              "http://127.0.0.1:18799/simple/mypkg/\n  cause: tcp connect error\n  cause: "
              "Connection refused (os error 111)\n")
UV_DEPENDENCY = ("error: No solution found when resolving dependencies\n  cause: Because foo was"
                 " not found in the package registry and mypkg==1.1.0 depends on foo, we can "
                 "conclude that mypkg==1.1.0 cannot be used.\n")


@pytest.mark.parametrize("exited, output, outcome", [
    (0, "Installed 1 package", "ok"),
    (1, UV_NO_VERSION, "not-found"),
    (1, UV_NO_PACKAGE, "not-found"),
    (1, "Because only mypkg<=1.0.0 is available and you require mypkg==1.1.0, we can", "not-found"),
    (1, "ERROR: No matching distribution found for mypkg==1.1.0", "not-found"),
    (2, UV_CONNECT, "error"),  # network: fail fast
    (1, UV_DEPENDENCY, "error"),  # a dependency is missing, not our version
    (1, UV_NO_VERSION.replace("1.1.0", "1.2.0"), "error"),  # another version's message
    (1, "error: Failed to read from zip file", "error"),
])
def test_install_outcome(exited: int, output: str, outcome: str) -> None:
    assert d.install_outcome(exited, output, "mypkg", "1.1.0") == outcome


def test_install_outcome_normalizes_the_distribution_name() -> None:
    text = "Because there is no version of my-pkg==2.0 and you require my-pkg==2.0"
    assert d.install_outcome(1, text, "My_Pkg", "2.0") == "not-found"


# ---- expectations -----------------------------------------------------------------------

def install(**kw: Any) -> d.Install:
    base: dict[str, Any] = dict(version="1.1.0", dist_version="1.1.0", file="/x", editable=False)
    base.update(kw)
    return d.Install(**base)


def test_expectations() -> None:
    opts = d.DeployOptions(expect_version="1.1.0", expect_code="mypkg:compute:x * 3")
    ok = install(code={"target": "mypkg:compute", "needle": "x * 3", "needle_found": True,
                       "matches_checkout": True})
    assert d.check_expectations(ok, opts) == []
    assert "version is 1.0.0, expected 1.1.0" in d.check_expectations(
        install(version="1.0.0", code=ok.code), opts)[0]
    lacks = install(code={**(ok.code or {}), "needle_found": False})
    assert "FIX NOT APPLIED" in d.check_expectations(lacks, opts)[0]
    stale = install(code={"target": "mypkg:compute", "matches_checkout": False})
    assert "differs from the checkout" in d.check_expectations(stale, opts)[0]
    missing = install(code={"target": "mypkg:nope", "error": "AttributeError: nope"})
    assert "AttributeError" in d.check_expectations(missing, opts)[0]
    assert d.check_expectations(install(error="import mypkg failed"), opts) == \
        ["import mypkg failed"]


def _run_verify_script(tmp_path: Path, pythonpath: Path, code: str) -> dict[str, Any]:
    # the deployed form runs with -I; here PYTHONPATH stands in for the venv's site-packages
    out = subprocess.run(
        [sys.executable, "-c", d.VERIFY_SCRIPT, "mypkg", "mypkg", str(tmp_path / "project"),
         code],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(pythonpath)},
        cwd=tmp_path, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_verify_script_editable_vs_stale_wheel(tmp_path: Path) -> None:
    src = tmp_path / "project" / "src" / "mypkg"
    src.mkdir(parents=True)
    (src / "__init__.py").write_text('__version__ = "1.1.0"\n\n\ndef compute(x):\n'
                                     '    return x * 3\n')
    editable = _run_verify_script(tmp_path, src.parent, "mypkg:compute:x * 3")
    assert editable["editable"] is True and editable["version"] == "1.1.0"
    assert editable["code"]["needle_found"] and editable["code"]["matches_checkout"]

    site = tmp_path / "venv" / "site-packages" / "mypkg"
    site.mkdir(parents=True)
    (site / "__init__.py").write_text('__version__ = "1.0.0"\n\n\ndef compute(x):\n'
                                      '    return x * 2\n')
    wheel = _run_verify_script(tmp_path, site.parent, "mypkg:compute")
    assert wheel["editable"] is False and wheel["version"] == "1.0.0"
    assert wheel["code"]["matches_checkout"] is False  # AP-5: old code still installed
    gone = _run_verify_script(tmp_path, site.parent, "mypkg:missing")
    assert "AttributeError" in gone["code"]["error"]


# ---- checkpoints and journal-driven convergence -----------------------------------------

def test_checkpoint_paths_only_from_declared_patterns() -> None:
    host = Host(name="h", ssh="h", project_dir="~/project", package="p",
                checkpoints=("~/.cache/ck/{label}.json", "out/{group}/{label}.part", "/abs/x"))
    killed = [d.KilledTask("p1", "BTC@250-retry-1", "c", "/w", 1),
              d.KilledTask("p1", "../evil", "c", "/w", 2)]
    paths = d.checkpoint_paths(host, killed, lambda p: p.replace("~", "/home/op", 1))
    assert paths == ["/home/op/.cache/ck/BTC@250.json", "/home/op/project/out/p1/BTC@250.part",
                     "/abs/x"]
    assert d.checkpoint_paths(Host(name="h", ssh="h", project_dir="~/p", package="p"),
                              killed, str) == []


def test_pending_kills_and_paused_groups_from_the_journal() -> None:
    entries = [
        {"action": "kill", "result": "recorded",
         "tasks": [{"group": "p1", "label": "A"}, {"group": "p1", "label": "B"}]},
        {"action": "group-pause", "group": "p1"},
        {"action": "kill", "result": "ok", "labels": ["A", "B"]},
        {"action": "re-add", "result": "ok", "group": "p1", "from_label": "A",
         "labels": ["A-retry-1"]},
        {"action": "group-pause", "group": "p2"},
        {"action": "group-start", "group": "p2"},
    ]
    assert d.pending_kills(entries) == [("p1", "B")]
    assert d.paused_by_deploy(entries) == ["p1"]


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


def ctx_for(remote: ScriptedRemote, **opts: Any) -> d.DeployContext:
    return d.DeployContext(host=remote.host, remote=remote, options=d.DeployOptions(**opts))


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

def _owned(ctx: d.DeployContext) -> d.StepResult:
    ctx.lock_owner = locking.this_process()
    ctx.lock_path = "~/lock"
    return d.StepResult("lock", "ok")


def _runner_ctx() -> d.DeployContext:
    return ctx_for(scripted())


@pytest.mark.parametrize("boom, code", [
    (RefusedError("no"), 3), (RemoteError("gone"), 4), (ConfigError("bad"), 2)])
def test_runner_stops_at_an_error_and_releases(monkeypatch: pytest.MonkeyPatch,
                                               boom: Exception, code: int) -> None:
    released: list[str] = []
    monkeypatch.setattr(locking, "release", lambda r, p, o: released.append(p) or True)

    def failing(ctx: d.DeployContext) -> d.StepResult:
        raise boom

    def never(ctx: d.DeployContext) -> d.StepResult:
        raise AssertionError("steps after a failure never run")

    report = d.run_deploy(_runner_ctx(), [_owned, failing, never])
    assert report.exit_code == code and released == ["~/lock"]
    assert report.steps[-1].name == "failing" and str(boom) in report.verdict


def test_ctrl_c_releases_the_lock_and_propagates(monkeypatch: pytest.MonkeyPatch) -> None:
    released: list[str] = []
    monkeypatch.setattr(locking, "release", lambda r, p, o: released.append(p) or True)

    def interrupted(ctx: d.DeployContext) -> d.StepResult:
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
    def slow(ctx: d.DeployContext) -> d.StepResult:
        import time

        time.sleep(0.05)
        return d.StepResult("slow", "ok")

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
        steps=(d.StepResult("audit", "ok", 0.52, "1 running"),
               d.StepResult("pull", "dry", 0.0, "would fetch")),
        planned=("git -C /home/op/project reset --quiet --hard origin/main",))
    text = render(deploy_view(report))
    assert "bigblack: dry run" in text
    assert "audit" in text and "0.52s" in text and "would fetch" in text
    assert "git -C /home/op/project reset --quiet --hard origin/main" in text
    assert "VERDICT bigblack: DRY RUN" in text
    assert json.loads(json.dumps(report.to_dict()))["steps"][0]["seconds"] == 0.52



# ---- command plumbing ---------------------------------------------------------------------

def _report(host: str, code: int, error: str = "") -> d.DeployReport:
    return d.DeployReport(host=host, dry=False, steps=(), exit_code=code,
                          verdict=f"{host}: verdict", error=error)


def test_several_hosts_some_failed_is_partial(capsys: pytest.CaptureFixture[str]) -> None:
    from jobsafe_ops.cli import Outcome

    ok, refused = _report("a", 0), _report("b", 3, "b: locked by x since t")
    assert d._finish([Outcome("a", ok), Outcome("b", refused)], json_out=True) == 5
    assert d._finish([Outcome("b", refused)], json_out=True) == 3
    assert d._finish([Outcome("a", ok), Outcome("c", error=RemoteError("c: gone"))],
                     json_out=True) == 5
    out = capsys.readouterr()
    assert "error: b: locked by x since t" in " ".join(out.err.split())
    assert json.loads(out.out.split("\n}\n")[0] + "\n}")["hosts"][0]["host"] == "a"


def test_tty_prompt_shows_the_audit_and_asks(monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    from jobsafe_ops.audit import build_audit
    from jobsafe_ops.probe import parse_probe

    probe = parse_probe("bigblack", (DATA / "bigblack-busy-swapping.txt").read_text())
    assert probe.state is not None
    answers = iter(["nuke", "kill"])  # an invalid answer is asked again
    monkeypatch.setattr("builtins.input", lambda *a: next(answers))
    assert d.prompt_policy(build_audit("bigblack", probe.state)) == "kill"
    err = capsys.readouterr().err
    assert "BTCUSDT@500" in err and "abort" in err
