"""Environment hygiene: every `pueue add` runs with the lean allow-list (the feeder's
LEAN_ENV), Fabric forwards nothing of the laptop's environment, the journal and error lines
are redacted, and the probe reports the project's .env mode without reading it."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from rich.console import Console

from jobsafe_ops import cli, journal, shell
from jobsafe_ops import remote as remote_mod
from jobsafe_ops.batch.retry import RetryDecision, RetryPlan
from jobsafe_ops.deploy.context import DeployContext, DeployOptions
from jobsafe_ops.deploy.restart import readd
from jobsafe_ops.errors import ConfigError, RemoteError
from jobsafe_ops.facts.probe import dotenv_script, parse_probe, probe_script, verdicts
from jobsafe_ops.facts.views import probe_view
from jobsafe_ops.hostside.feeder import LEAN_ENV, lean_env
from jobsafe_ops.inventory import GroupSpec, Host

SECRET = "planted-" + "Vq8rT3zL" * 3
DATA = Path(__file__).parent / "data" / "probe"

# A pueue stand-in that records the environment each `pueue add` ran with.
RECORDING_PUEUE = """#!{python}
import json, os, sys
with open(os.environ.get("HOME") + "/add-env.json", "a") as fh:
    fh.write(json.dumps({{"argv": sys.argv[1:], "env": dict(os.environ)}}) + "\\n")
print(7)
"""


def local_host(tmp_path: Path, pueue: str = "pueue") -> Host:
    return Host(name="local", ssh="local", project_dir=str(tmp_path), package="mypkg",
                pueue=pueue, groups={"p1": GroupSpec("p1", 2, 1, 4)})


def sh(line: str, env: dict[str, str]) -> str:
    return subprocess.run(["sh", "-c", line], env=env, capture_output=True, text=True,
                          check=True).stdout


# ---- the lean add line ------------------------------------------------------------------

def test_lean_env_line_keeps_only_the_allow_list(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "PATH": os.environ["PATH"], "LANG": "C.UTF-8 x  y",
           "API_TOKEN": SECRET, "SSH_CONNECTION": "1.2.3.4 5 6.7.8.9 22", "KEEP_ME": "k"}
    line = shell.lean_env_line(["env"], keep=["KEEP_ME"])
    assert SECRET not in line and "API_TOKEN" not in line  # only names travel
    out = dict(ln.split("=", 1) for ln in sh(line, env).splitlines())
    assert out == {"HOME": str(tmp_path), "PATH": env["PATH"], "LANG": "C.UTF-8 x  y",
                   "KEEP_ME": "k"}  # unset allow-list names are left out, not set empty


def test_lean_env_line_rejects_a_bad_name() -> None:
    with pytest.raises(ConfigError, match="not valid"):
        shell.lean_env_line(["pueue", "add"], keep=["A; rm -rf ~"])


def test_feeder_lean_env_drops_the_session_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_TOKEN", SECRET)
    monkeypatch.setenv("MY_EXTRA", "x")
    env = lean_env(["MY_EXTRA"])
    assert "API_TOKEN" not in env and env["MY_EXTRA"] == "x"
    assert set(env) <= {*LEAN_ENV, "MY_EXTRA"}


def test_retry_readd_runs_pueue_add_in_the_lean_env(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    pueue = tmp_path / "pueue"
    pueue.write_text(RECORDING_PUEUE.format(python=sys.executable))
    pueue.chmod(0o755)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("API_TOKEN", SECRET)  # the SSH session's environment on a host
    monkeypatch.setenv("JOBSAFE_JOURNAL", str(tmp_path / "journal.ndjson"))
    host = local_host(tmp_path, str(pueue))
    ctx = DeployContext(host=host, remote=remote_mod.LocalRemote(host),
                        options=DeployOptions(), command="retry-failed")
    decision = RetryDecision(group="p1", label="A", base="A", action="add", reason="killed",
                             new_label="A-retry-1", command="python job.py",
                             workdir=str(tmp_path), state="killed", kind="transient")
    out = readd(ctx, RetryPlan((decision,), budget=3, retry_all=False))
    assert [r.label for r in out.re_added] == ["A-retry-1"] and not out.add_errors
    (call,) = [json.loads(x) for x in (tmp_path / "add-env.json").read_text().splitlines()]
    assert call["argv"][:5] == ["add", "--group", "p1", "--label", "A-retry-1"]
    assert "API_TOKEN" not in call["env"]
    assert set(call["env"]) <= set(LEAN_ENV) and call["env"]["HOME"] == str(tmp_path)
    assert SECRET not in (tmp_path / "journal.ndjson").read_text()


# ---- Fabric sends nothing of the laptop's environment -----------------------------------

class FakeChannel:
    """The paramiko channel Fabric's runner talks to: records what would go to sshd."""

    def __init__(self) -> None:
        self.commands: list[str] = []
        self.env: list[dict[str, str]] = []

    def exec_command(self, command: str) -> None:
        self.commands.append(command)

    def update_environment(self, env: dict[str, str]) -> None:
        self.env.append(dict(env))

    def set_environment_variable(self, key: str, value: str) -> None:
        self.env.append({key: value})

    def recv(self, n: int) -> bytes:
        return b""

    recv_stderr = recv

    def exit_status_ready(self) -> bool:
        return True

    def recv_exit_status(self) -> int:
        return 0

    def shutdown_write(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_fabric_forwards_no_local_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_TOKEN", SECRET)
    host = Host(name="h", ssh="op@h.invalid:2222", project_dir="~/p", package="x", groups={})
    conn = remote_mod.connection(host)
    channel = FakeChannel()
    conn.open = lambda: None  # no network: the runner talks to the fake channel
    conn.create_session = lambda: channel
    conn.transport = SimpleNamespace(active=True)  # reads as connected (is_connected)
    ssh = remote_mod.SSHRemote(host, conn)
    ssh.run(["pueue", "status", "--json"])
    ssh.stream(["python3", "feeder.py"], lambda line: None)
    # no export of the laptop's environment: only the host file's `path` (default
    # ~/.local/bin, expanded on the host) goes in front
    prefix = 'export PATH="$HOME"/.local/bin:"$PATH"; '
    assert channel.commands == [prefix + "pueue status --json", prefix + "python3 feeder.py"]
    assert channel.env == []  # no SSH env requests either
    assert SECRET not in repr(channel.commands)


# ---- redaction at the edges ---------------------------------------------------------------

def test_journal_lines_are_redacted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBSAFE_JOURNAL", str(tmp_path / "j.ndjson"))
    journal.append("h", "kill", ["A"], result="recorded", group="p1",
                   tasks=[{"label": "A", "command": f"API_TOKEN={SECRET} run"}],
                   auth_token=SECRET)
    text = (tmp_path / "j.ndjson").read_text()
    assert SECRET not in text
    (entry,) = journal.entries()
    assert entry["tasks"][0]["command"] == "API_TOKEN=*** run"
    assert entry["labels"] == ["A"] and entry["group"] == "p1"


def test_error_lines_are_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    buf = io.StringIO()
    monkeypatch.setattr(cli, "err_console", Console(file=buf, width=300, color_system=None))
    error = RemoteError(f"h: `export GH_TOKEN={SECRET}; pueue add` failed: exit 1")
    cli.print_error(error)
    assert SECRET not in buf.getvalue() and "GH_TOKEN=***" in buf.getvalue()
    assert SECRET not in json.dumps(cli.error_dict("h", error))


# ---- probe: the project's .env --------------------------------------------------------------

def probe_with(dotenv: str | None) -> Any:
    text = (DATA / "bigblack-busy-swapping.txt").read_text()
    if dotenv is not None:
        text = text.replace("@@status", f"@@dotenv\n{dotenv}\n@@status")
    return parse_probe("bigblack", text, "~/project")


@pytest.mark.parametrize("mode,level,ok", [("600", "ok", True), ("400", "ok", True),
                                           ("640", "warn", False), ("644", "warn", False),
                                           ("absent", "ok", True)])
def test_dotenv_verdict(mode: str, level: str, ok: bool) -> None:
    p = probe_with(mode)
    host = local_host(Path("/tmp"))
    v = {x.name: x for x in verdicts(p, host)}[".env"]
    assert (v.level, v.ok) == (level, ok)
    if not ok:
        assert "chmod 600 ~/project/.env" in v.detail
    assert p.to_dict()["dotenv"] == mode and p.to_dict()["dotenv_path"] == "~/project/.env"


def test_no_dotenv_section_means_no_verdict() -> None:
    p = probe_with(None)
    assert p.dotenv is None
    assert ".env" not in {v.name for v in verdicts(p, local_host(Path("/tmp")))}


def test_dotenv_script_never_reads_the_file(tmp_path: Path) -> None:
    script = dotenv_script("~/project")
    assert '"$HOME"/project/.env' in script
    assert "cat" not in script and "<" not in script
    assert "@@dotenv" in probe_script("pueue", 0, "~/project")
    proj = tmp_path / "project"
    proj.mkdir()
    env = {"HOME": str(tmp_path), "PATH": os.environ["PATH"]}
    assert sh(dotenv_script("~/project"), env).split() == ["@@dotenv", "absent"]
    (proj / ".env").write_text(f"API_TOKEN={SECRET}\n")
    (proj / ".env").chmod(0o644)
    out = sh(dotenv_script("~/project"), env)
    assert out.split() == ["@@dotenv", "644"] and SECRET not in out


def test_probe_view_shows_the_dotenv_mode() -> None:
    buf = io.StringIO()
    host = Host(name="bigblack", ssh="local", project_dir="~/project", package="x", groups={})
    Console(file=buf, width=160, color_system=None).print(probe_view(probe_with("644"), host))
    out = buf.getvalue()
    assert "~/project/.env: mode 644" in out and "chmod 600 ~/project/.env" in out
