"""Programs on the host: the host file's `path` (validated, prepended to every remote
command), the exit-127 line naming the key, a job's first program, and the check script,
run for real with sh against a directory layout like a host's."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from jobsafe_ops.batch.model import JobSpec
from jobsafe_ops.batch.plan import command_line
from jobsafe_ops.errors import ConfigError, RemoteError
from jobsafe_ops.facts import programs
from jobsafe_ops.facts.probe import parse_probe, programs_script, programs_verdict
from jobsafe_ops.inventory import Host, load_host_file
from jobsafe_ops.remote import LocalRemote
from jobsafe_ops.shell import path_prefix

BASE = 'ssh = "h"\nproject_dir = "~/project"\npackage = "mypkg"\n'
LEAN = "/usr/local/bin:/usr/bin:/bin:/usr/games"


def host_file(tmp_path: Path, extra: str = "") -> Host:
    path = tmp_path / "h.toml"
    path.write_text(BASE + extra)
    return load_host_file(path)


# ---- the host file ----------------------------------------------------------------------

def test_path_defaults_to_local_bin_and_can_be_emptied(tmp_path: Path) -> None:
    assert host_file(tmp_path).path == ("~/.local/bin",)
    assert host_file(tmp_path, "path = []\n").path == ()
    dirs = host_file(tmp_path, 'path = ["~/.cargo/bin", "/opt/x/bin"]\nuv = "/opt/uv"\n')
    assert dirs.path == ("~/.cargo/bin", "/opt/x/bin") and dirs.uv == "/opt/uv"


@pytest.mark.parametrize("value, needle", [
    ('"~/.local/bin"', "field 'path' must be a list"),
    ('["bin"]', "path entry 'bin' must be an absolute or ~/ directory"),
    ('["/a:/b"]', "without ':'"),
    ('[""]', "must be a list of directories"),
    ("[1]", "must be a list of directories"),
])
def test_bad_path_is_one_line_naming_file_and_fix(tmp_path: Path, value: str,
                                                  needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        host_file(tmp_path, f"path = {value}\n")
    text = str(err.value)
    assert needle in text and "h.toml" in text and "\n" not in text
    assert "path = [" in text  # the fix is spelled out


# ---- every remote command gets it ------------------------------------------------------

def tool_home(tmp_path: Path) -> Path:
    """A HOME with ~/.local/bin/mytool (exit 0, prints its PATH)."""
    home = tmp_path / "home"
    tool = home / ".local" / "bin" / "mytool"
    tool.parent.mkdir(parents=True)
    tool.write_text('#!/bin/sh\nprintf "%s\\n" "$PATH"\n')
    tool.chmod(0o755)
    return home


def local(dirs: tuple[str, ...]) -> LocalRemote:
    return LocalRemote(Host(name="h", ssh="local", project_dir="~/p", package="x",
                            path=dirs, source="hosts/h.toml"))


def test_path_is_prepended_to_every_command(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    home = tool_home(tmp_path)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("PATH", LEAN)
    out = local(("~/.local/bin", "/opt/none")).run(["mytool"]).stdout.strip()
    assert out == f"{home}/.local/bin:/opt/none:{LEAN}"
    # and what runs under `env -i PATH="$PATH"` (every pueue add) sees it too
    r = local(("~/.local/bin",)).run('env -i PATH="$PATH" mytool')
    assert r.stdout.startswith(f"{home}/.local/bin:")


def test_a_program_that_does_not_resolve_is_one_line_naming_the_key(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tool_home(tmp_path)))
    monkeypatch.setenv("PATH", LEAN)
    for check in (True, False):  # also for callers that read the exit status themselves
        with pytest.raises(RemoteError) as err:
            local(()).run(["mytool", "--x"], check=check)
        text = str(err.value)
        assert text.startswith("h: mytool not found on the host (needed by `mytool --x`)")
        assert 'path (e.g. path = ["~/.local/bin"]) in hosts/h.toml' in text
        assert "command not found" not in text and "\n" not in text


def test_a_missing_venv_python_is_left_to_its_caller(tmp_path: Path) -> None:
    """No PATH key fixes a missing .venv/bin/python: deploy's VERIFY reports it itself."""
    r = local(()).run([str(tmp_path / ".venv/bin/python"), "-c", "1"], check=False)
    assert r.exited == 127 and "python: not found" in r.stderr  # dash's wording
    with pytest.raises(RemoteError, match="failed: sh: 1: .*python: not found"):
        local(()).run([str(tmp_path / ".venv/bin/python")])


def test_path_prefix_quotes_and_expands_home() -> None:
    host = Host(name="h", ssh="x", project_dir="/p", package="x",
                path=("~", "~/my tools", "/opt/$x"))
    assert path_prefix(host) == "export PATH=\"$HOME\":\"$HOME\"/'my tools':'/opt/$x':\"$PATH\"; "
    assert path_prefix(Host(name="h", ssh="x", project_dir="/p", package="x", path=())) == ""


@pytest.mark.parametrize("stderr, name", [
    ("bash: line 1: uv: command not found", "uv"),
    ("/bin/bash: line 1: uv: command not found", "uv"),
    ("sh: 1: uv: not found", "uv"),
    ("zsh:1: command not found: uv", "uv"),
    ("env: 'pueue': No such file or directory", "pueue"),
    ("env: ‘pueue’: No such file or directory", "pueue"),
    ("bash: line 1: /home/op/.local/bin/pueue: No such file or directory",
     "/home/op/.local/bin/pueue"),
    ("error: could not find the file", None),
    ("Traceback ...\nFileNotFoundError: x", None),
])
def test_missing_program_reads_every_shell(stderr: str, name: str | None) -> None:
    assert programs.missing_program(stderr) == name


def test_fix_names_the_pueue_and_uv_keys() -> None:
    host = Host(name="h", ssh="x", project_dir="/p", package="x", source="hosts/h.toml")
    assert 'set pueue = "/full/path/to/pueue"' in programs.not_found(host, "pueue")
    assert 'set uv = "/full/path/to/uv"' in programs.not_found(host, "uv")
    assert "set " not in programs.not_found(host, "git")
    # ~/.local/bin is already there: do not suggest it again
    assert '"/DIR/OF/IT"' in programs.key_fix(host, "git")


# ---- a job's first program -------------------------------------------------------------

WRAPPED = command_line(JobSpec(label="a", group="p1", workdir="/w", memory_max=1024**3,
                               env=(("K", "v w"),), command="FOO=1 uv run python x.py"),
                       wrap=True)


@pytest.mark.parametrize("command, first", [
    ("uv run python x.py", "uv"),
    ("FOO=1 BAR='a b' uv run x", "uv"),
    (WRAPPED, "uv"),  # the memory-cap wrapper and the job's exports seen through
    ("exec python3 -u x", "python3"),
    ("env -i -u X A=1 nice -n 5 ~/bin/tool a", "~/bin/tool"),
    ("cd sub && uv run x", "uv"),
    ("cd sub && ./run.sh", None),  # relative to sub: not checked against the workdir
    ("./run.sh --x", "./run.sh"),
    ("(cd x; make)", "make"),
    ("set -e\nuv run x", "uv"),
    ("sh -c 'uv run x'", "uv"),
    ("bash -lc \"python3 -c 'print(1)'\"", "python3"),
    ("if uv run x; then echo ok; fi", "uv"),
    ("$PY x", None),
    ("for i in 1 2; do x; done", None),
    ("echo hi", None),
    ("echo 'unbalanced", None),
])
def test_first_program(command: str, first: str | None) -> None:
    assert programs.first_program(command) == first


# ---- the check, run for real -----------------------------------------------------------

def test_check_script_resolves_like_the_job_would(tmp_path: Path) -> None:
    """PATH lookups, workdir-relative paths, the job's own exports; quoting holds."""
    work = tmp_path / "my work"
    (work / "bin").mkdir(parents=True)
    tool = work / "bin" / "run it.sh"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    checks = [
        programs.Check(str(work), "sh"),  # 0 on PATH
        programs.Check(str(work), "bin/run it.sh"),  # 1 relative to the workdir
        programs.Check(str(tmp_path), "bin/run it.sh"),  # 2 not relative to this one
        programs.Check(str(work), "no-such-tool-$(id)"),  # 3 quoted, never run
        programs.Check(str(work), "run it.sh", f"export PATH='{work}/bin':\"$PATH\""),  # 4
        programs.Check(str(tmp_path / "gone"), "sh"),  # 5 the workdir is missing
    ]
    out = subprocess.run(["sh", "-c", programs.check_script(checks)], capture_output=True,
                         text=True, env={"PATH": os.environ["PATH"]}, check=True).stdout
    assert [checks.index(c) for c in programs.unresolved(checks, out.splitlines())] == [2, 3, 5]


def test_refusal_names_the_first_label_to_add_and_nothing_else() -> None:
    host = Host(name="h", ssh="x", project_dir="/p", package="x", path=(),
                source="hosts/h.toml")
    checks, by_label = programs.job_checks([
        ("a", "/w", "uv run x", ""), ("b", "/w", "uv run y", ""), ("c", "/w", "./go", ""),
        ("d", "/w", "$X", "")])
    assert len(checks) == 2 and "d" not in by_label  # distinct programs, one check each
    line = programs.first_refusal(host, checks, by_label, ["0", "1"], ["b", "c"])
    assert line is not None and line.startswith("h: uv not found for job 'b'")
    assert 'path = ["~/.local/bin"]) in hosts/h.toml' in line and "nothing was queued" in line
    assert programs.first_refusal(host, checks, by_label, ["0"], ["c"]) is None
    relative = programs.first_refusal(host, checks, by_label, ["1"], ["c"])
    assert relative is not None and "relative to its working directory /w" in relative


def test_guard_stops_the_command_when_a_check_fails(tmp_path: Path) -> None:
    host = Host(name="h", ssh="x", project_dir="/p", package="x", source="hosts/h.toml")
    checks, by_label = programs.job_checks([("a", str(tmp_path), "no-such-tool x", "")])
    marker = tmp_path / "added"
    line = programs.guard(checks) + f"touch '{marker}'"
    out = subprocess.run(["sh", "-c", line], capture_output=True, text=True, check=True).stdout
    assert not marker.exists()
    refused = programs.guarded_refusal(host, checks, by_label, out, ["a"])
    assert refused is not None and "no-such-tool not found for job 'a'" in refused
    checks, by_label = programs.job_checks([("a", str(tmp_path), "sh -c true", "")])
    out = subprocess.run(["sh", "-c", programs.guard(checks) + f"touch '{marker}'; echo 7"],
                         capture_output=True, text=True, check=True).stdout
    assert marker.exists() and out == "7\n"
    assert programs.guarded_refusal(host, checks, by_label, out, ["a"]) is None


# ---- probe -----------------------------------------------------------------------------

def test_probe_programs_section_runs_and_parses(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    home = tool_home(tmp_path)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("PATH", LEAN)
    remote = local(("~/.local/bin",))
    out = remote.run(programs_script("~/.local/bin/mytool", "no-such-uv")).stdout
    p = parse_probe("h", out)
    found = dict(p.programs)
    assert list(found) == list(programs.PROBED)
    assert found["pueue"] == f"{home}/.local/bin/mytool" and found["uv"] is None
    assert p.path == f"{home}/.local/bin:{LEAN}"
    assert p.to_dict()["programs"]["uv"] is None and "uv" in p.unresolved
    v = programs_verdict(p, remote.host)
    assert not v.ok and v.value.startswith("missing: ") and "uv" in v.value
    assert programs_verdict(parse_probe("h", "@@programs\ngit\t/usr/bin/git\n"),
                            remote.host).ok


def test_a_job_wrapped_by_the_outcome_ledger_is_checked_by_its_own_program() -> None:
    """retry-failed and deploy re-add commands recorded by the ledger wrapper
    (`python3 feeder.py run ... -- sh -c CMD`): python3 always resolves, the job's uv may not."""
    from jobsafe_ops.facts import ledger

    wrapped = ledger.wrap("uv run python scripts/job.py --x 1", "/b/sweep", "a", "p1")
    checks, by_label = programs.job_checks([("a", "/w", wrapped, "")])
    assert [c.program for c in checks] == ["uv"] and by_label == {"a": 0}
