"""Run from any directory: the ops repo (hosts/, playbooks/, jobsafe.toml) is found from the
current directory or its parents; --inventory beats $JOBSAFE_INVENTORY beats discovery."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

from jobsafe_ops import config, journal, remote
from jobsafe_ops.batch.playbook import playbook_path
from jobsafe_ops.errors import ConfigError
from jobsafe_ops.flags import number
from jobsafe_ops.init import init_cmd
from jobsafe_ops.inventory import host_inventory, inventory_dir, load_inventory
from tests.cli import jobsafe


@pytest.fixture
def ops(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An ops repo made by `jobsafe init`, the environment clear of JOBSAFE_*."""
    for k in list(os.environ):
        if k.startswith("JOBSAFE_"):
            monkeypatch.delenv(k)
    root = tmp_path / "ops"
    init_cmd(str(root))
    return root


def test_found_from_a_subdirectory_like_git(ops: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    deep = ops / "runs" / "2026" / "dec"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    repo = config.locate()
    assert (repo.root, repo.inventory, repo.inventory_from) == (ops, ops / "hosts", "discovered")
    assert list(load_inventory(inventory_dir())) == ["example"]
    # a playbook name resolves against that repo's playbooks/, not ./playbooks
    assert playbook_path("example") == ops / "playbooks" / "example.toml"


def test_flag_beats_env_beats_discovery(ops: Path, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    other = tmp_path / "other"
    init_cmd(str(other))
    monkeypatch.chdir(ops)
    monkeypatch.setenv("JOBSAFE_INVENTORY", str(other / "hosts"))
    assert config.locate().inventory == other / "hosts"
    assert config.locate().inventory_from == "JOBSAFE_INVENTORY"
    flagged = config.locate(str(ops / "hosts"))
    assert (flagged.inventory, flagged.inventory_from) == (ops / "hosts", "--inventory")
    # an explicit inventory brings its own ops repo: playbooks and config come from there
    assert config.locate().root == other and flagged.root == ops


def test_explicit_inventory_outside_a_repo_keeps_the_cwd_repo(
        ops: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loose = tmp_path / "loose" / "inv"
    loose.mkdir(parents=True)
    monkeypatch.chdir(ops / "playbooks")
    repo = config.locate(str(loose))
    assert repo.inventory == loose and repo.root == ops


def test_missing_inventory_names_where_it_looked_and_init(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOBSAFE_INVENTORY", raising=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = jobsafe(None, "hosts", cwd=empty, timeout=60)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(empty) in lines[0] and "jobsafe init" in lines[0], lines
    assert "Traceback" not in proc.stderr

    monkeypatch.chdir(empty)
    with pytest.raises(ConfigError,
                       match=r"nowhere \(from --inventory\) is not a directory.*jobsafe init DIR"):
        load_inventory(inventory_dir(str(empty / "nowhere")))


def test_hosts_use_their_own_inventorys_ssh_config_and_known_hosts(
        ops: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The --inventory DIR bug: ssh_config/known_hosts came from ./hosts or
    $JOBSAFE_INVENTORY while the host files came from DIR."""
    (ops / "hosts" / "lab.toml").write_text('ssh = "lab"\nproject_dir = "~/p"\npackage = "x"\n')
    (ops / "hosts" / "ssh_config").write_text("Host lab\n  HostName 127.0.0.1\n")
    (ops / "hosts" / "known_hosts").write_text("")
    decoy = tmp_path / "decoy"
    init_cmd(str(decoy))
    (decoy / "hosts" / "ssh_config").write_text("Host lab\n  HostName 10.9.9.9\n")
    (decoy / "hosts" / "known_hosts").write_text("")
    monkeypatch.chdir(decoy)
    monkeypatch.setenv("JOBSAFE_INVENTORY", str(decoy / "hosts"))
    host = load_inventory(inventory_dir(str(ops / "hosts")))["lab"]
    assert host_inventory(host) == ops / "hosts"
    assert remote._ssh_config_path(host_inventory(host)) == str(ops / "hosts" / "ssh_config")
    kh = remote.known_hosts_files({}, host_inventory(host))
    assert ops / "hosts" / "known_hosts" in kh and decoy / "hosts" / "known_hosts" not in kh
    conn = remote.connection(host)
    assert remote._ssh_config_path() == str(decoy / "hosts" / "ssh_config")  # the old lookup
    assert conn.host == "127.0.0.1"  # DIR's alias, not the decoy's


def test_config_file_sets_defaults_and_flags_override(
        ops: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (ops / "jobsafe.toml").write_text(
        'connect_timeout = 3\njournal = "state/journal.ndjson"\n'
        "[autoscale]\nup_load = 25\nheadroom = 1.5\n")
    monkeypatch.chdir(ops / "hosts")
    monkeypatch.delenv("JOBSAFE_CONNECT_TIMEOUT", raising=False)
    up_load, headroom, down_mem = (number("--up-load", 40.0), number("--headroom", 2.0),
                                   number("--down-mem", 80.0))
    with config.activated(None):
        assert config.setting(up_load, "autoscale", "up_load") == 25.0
        assert config.setting(headroom, "autoscale", "headroom") == 1.5
        assert config.setting(down_mem, "autoscale", "down_mem") == 80.0  # not in the file
        # a typed flag wins, even one equal to the built-in default
        given = type(up_load)("40")
        assert config.setting(given, "autoscale", "up_load") == 40.0
        assert journal.journal_path() == ops / "state" / "journal.ndjson"
        assert remote.connect_timeout() == 3
        monkeypatch.setenv("JOBSAFE_JOURNAL", "/tmp/j.ndjson")
        assert journal.journal_path() == Path("/tmp/j.ndjson")


def test_pyproject_tool_table_is_a_config_and_a_marker(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = tmp_path / "repo"
    (repo / "sub").mkdir(parents=True)
    (repo / "pyproject.toml").write_text('[project]\nname = "x"\n\n[tool.jobsafe]\n'
                                         "connect_timeout = 7\n")
    monkeypatch.delenv("JOBSAFE_INVENTORY", raising=False)
    found = config.locate(start=repo / "sub")
    assert found.root == repo and found.settings.connect_timeout == 7.0
    (repo / "jobsafe.toml").write_text("connect_timeout = 8\n")
    with pytest.raises(ConfigError, match="both configure jobsafe; keep one"):
        config.locate(start=repo / "sub")


@pytest.mark.parametrize(("text", "message"), [
    ("conect_timeout = 3\n", r"unknown key 'conect_timeout'; allowed: connect_timeout"),
    ("connect_timeout = 0\n", r"connect_timeout must be a number > 0, got 0"),
    ('connect_timeout = "10"\n', r"connect_timeout must be a number > 0"),
    ("journal = 3\n", r"journal must be a file path"),
    ("[autoscale]\nup_lod = 3\n", r"\[autoscale\]: unknown key 'up_lod'"),
    ("[autoscale]\nup_load = 140\n", r"up_load = 140 is a percentage"),
    ("[autoscale]\nheadroom = true\n", r"headroom must be a number > 0"),
    ("autoscale = 3\n", r"autoscale must be a table"),
    ("connect_timeout = \n", r"not valid TOML"),
])
def test_bad_config_is_one_line_exit_2(ops: Path, text: str, message: str) -> None:
    (ops / "jobsafe.toml").write_text(text)
    with pytest.raises(ConfigError, match=message) as exc:
        config.locate(start=ops)
    assert str(ops / "jobsafe.toml") in str(exc.value) and "\n" not in str(exc.value)
    proc = jobsafe(None, "hosts", cwd=ops, timeout=60)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_autoscale_takes_the_config_thresholds_unless_flagged(
        ops: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the real task defaults (jobsafe_ops.tasks): a flag left out takes
    [autoscale] from jobsafe.toml, a flag given wins."""
    from jobsafe_ops import tasks
    from jobsafe_ops.errors import RemoteError
    from jobsafe_ops.ops import autoscale

    (ops / "jobsafe.toml").write_text("[autoscale]\nup_load = 20\nheadroom = 3\n")
    monkeypatch.chdir(ops)
    seen = []

    def fake(host, remote, thresholds, dry, close):  # type: ignore[no-untyped-def]
        seen.append(thresholds)
        raise RemoteError("stop here")

    monkeypatch.setattr(autoscale, "session", lambda h: contextlib.nullcontext())
    monkeypatch.setattr(autoscale, "Autoscaler", fake)
    flags = dict(host="example", loop=False, interval=tasks.AUTOSCALE_INTERVAL, ticks=None,
                 dry=True, up_load=tasks.UP_LOAD, up_mem=tasks.UP_MEM,
                 down_load=tasks.DOWN_LOAD, down_mem=tasks.DOWN_MEM,
                 headroom=tasks.HEADROOM, inventory=None, json_out=True)
    with config.activated(None):
        autoscale.autoscale_cmd(**flags)
        autoscale.autoscale_cmd(**{**flags, "up_load": type(tasks.UP_LOAD)("35")})
    assert (seen[0].up_load, seen[0].up_mem, seen[0].headroom) == (0.20, 0.60, 3.0)
    assert (seen[1].up_load, seen[1].headroom) == (0.35, 3.0)
