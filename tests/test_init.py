"""`jobsafe init [DIR]`: a commented ops repo whose examples pass the tool's own checks, and
never a file overwritten."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from jobsafe_ops import config
from jobsafe_ops.batch.playbook import load_playbook, plan_batch
from jobsafe_ops.errors import ConfigError
from jobsafe_ops.init import FILES, init_cmd
from jobsafe_ops.inventory import load_inventory
from jobsafe_ops.program import positional_init
from tests import cli
from tests.jsonout import result_of


def jobsafe(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The installed `jobsafe ARGV` in cwd, without the caller's JOBSAFE_* settings."""
    return cli.jobsafe(None, *argv, cwd=cwd, timeout=60)


def test_examples_pass_the_tools_own_loaders(tmp_path: Path) -> None:
    root = tmp_path / "ops"
    assert init_cmd(str(root)) == 0
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) == \
        sorted(FILES)
    host = load_inventory(root / "hosts")["example"]
    playbook = load_playbook(root / "playbooks" / "example.toml")
    plan = plan_batch(playbook, host)  # INV checks of the planner: group, labels, paths
    assert len(plan.jobs) == 4 and len(plan.after) == 1
    assert set(plan.groups) <= set(host.groups)
    s = config.load_settings(root)  # all commented out: the defaults
    assert (s.connect_timeout, s.journal, dict(s.autoscale)) == (None, None, {})
    # and the lint finds nothing to warn about in the example playbook
    out = jobsafe("lint", "--json", "--path", str(root / "playbooks"), cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert result_of(out.stdout)["findings"] == []


def test_commented_config_keys_are_the_real_ones(tmp_path: Path) -> None:
    """Uncommenting every line of the example jobsafe.toml gives a valid config."""
    init_cmd(str(tmp_path))
    text = (tmp_path / "jobsafe.toml").read_text()
    live = "\n".join(line[2:] if line.startswith("# ") and "=" in line or
                     line.startswith("# [") else line for line in text.splitlines())
    (tmp_path / "jobsafe.toml").write_text(live)
    s = config.load_settings(tmp_path)
    assert s.connect_timeout == 10 and s.journal == tmp_path / "journal.ndjson"
    assert set(s.autoscale) == set(config.AUTOSCALE_KEYS)


def test_never_overwrites_and_writes_nothing_then(tmp_path: Path) -> None:
    (tmp_path / "playbooks").mkdir()
    mine = tmp_path / "playbooks" / "example.toml"
    mine.write_text("# mine\n")
    with pytest.raises(ConfigError, match=r"playbooks/example.toml already exists"):
        init_cmd(str(tmp_path))
    assert mine.read_text() == "# mine\n"
    assert not (tmp_path / "hosts").exists() and not (tmp_path / "README.md").exists()


def test_cli_positional_dir_and_exit_2_naming_the_file(tmp_path: Path) -> None:
    made = jobsafe("init", "new/ops", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert (tmp_path / "new" / "ops" / "hosts" / "example.toml").is_file()
    listed = jobsafe("hosts", "--json", cwd=tmp_path / "new" / "ops" / "playbooks")
    assert listed.returncode == 0 and "example" in result_of(listed.stdout), listed.stderr
    again = jobsafe("init", "new/ops", cwd=tmp_path)
    assert again.returncode == 2
    assert again.stderr.strip().splitlines() == [
        "error: new/ops/hosts/example.toml already exists; jobsafe init never overwrites a "
        "file: move it away or pick a new directory (jobsafe init DIR)"]
    here = tmp_path / "here"
    here.mkdir()
    assert jobsafe("init", cwd=here).returncode == 0 and (here / "jobsafe.toml").is_file()
    (tmp_path / "afile").write_text("")
    bad = jobsafe("init", "afile", cwd=tmp_path)
    assert bad.returncode == 2 and "is not a directory" in bad.stderr


@pytest.mark.parametrize(("argv", "expected"), [
    (["jobsafe", "init", "d"], ["jobsafe", "init", "--directory=d"]),
    (["jobsafe", "--debug", "init", "d"], ["jobsafe", "--debug", "init", "--directory=d"]),
    (["jobsafe", "init"], ["jobsafe", "init"]),
    (["jobsafe", "init", "--debug"], ["jobsafe", "init", "--debug"]),
    (["jobsafe", "hosts", "init"], ["jobsafe", "hosts", "init"]),
])
def test_positional_init(argv: list[str], expected: list[str]) -> None:
    assert positional_init(argv) == expected


def test_a_broken_config_around_does_not_stop_init(tmp_path: Path) -> None:
    (tmp_path / "jobsafe.toml").write_text("bogus = 1\n")
    assert jobsafe("init", "inner", cwd=tmp_path).returncode == 0
    bad = jobsafe("hosts", cwd=tmp_path)  # but a host command says what is wrong
    assert bad.returncode == 2 and "unknown key 'bogus'" in bad.stderr
