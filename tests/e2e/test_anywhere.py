"""`jobsafe` from any directory against a real sshd host: the ops repo is found from the
current directory, and `--inventory DIR` uses DIR's own ssh_config and known_hosts (the bug:
they came from ./hosts or $JOBSAFE_INVENTORY, and the alias did not resolve)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.cli import jobsafe
from tests.jsonout import result_of
from tests.world import SimHost, World

NAME = "anywhere"


@pytest.fixture(scope="module")
def host(world: World) -> SimHost:
    if not world.pueue_available:
        pytest.skip("no pueue stand-in and no real pueue")
    return world.add_host(NAME, project=False)


def ops_repo(world: World, root: Path) -> Path:
    """An ops repo laid out as `jobsafe init` writes it, hosts/ copied from the world."""
    shutil.copytree(world.inventory, root / "hosts")
    (root / "playbooks").mkdir()
    (root / "jobsafe.toml").write_text("connect_timeout = 5\n")
    return root


def decoy(root: Path) -> Path:
    """Another inventory whose ssh_config and known_hosts know nothing of the host."""
    (root / "hosts").mkdir(parents=True)
    (root / "hosts" / "ssh_config").write_text("Host elsewhere\n  HostName 192.0.2.1\n")
    (root / "hosts" / "known_hosts").write_text("")
    return root


def from_here(world: World, argv: list[str], cwd: Path,
              **env: str) -> subprocess.CompletedProcess[str]:
    """`jobsafe ARGV` in cwd, without the world's JOBSAFE_SSH_CONFIG (that shortcut would
    hide the bug) and without its JOBSAFE_INVENTORY unless given."""
    unset = ["JOBSAFE_SSH_CONFIG"] + ([] if "JOBSAFE_INVENTORY" in env else ["JOBSAFE_INVENTORY"])
    return jobsafe(world, *argv, cwd=cwd, env=env, unset=unset, timeout=120)


def test_inventory_flag_uses_that_inventorys_ssh_config(
        world: World, host: SimHost, tmp_path: Path) -> None:
    ops = ops_repo(world, tmp_path / "ops")
    here = decoy(tmp_path / "here")
    other = decoy(tmp_path / "other")
    proc = from_here(world, ["probe", "--host", NAME, "--inventory", str(ops / "hosts"),
                             "--json"], cwd=here, JOBSAFE_INVENTORY=str(other / "hosts"))
    assert proc.returncode == 0, proc.stderr
    assert result_of(proc.stdout)["host"] == NAME


def test_found_from_a_subdirectory_of_the_ops_repo(
        world: World, host: SimHost, tmp_path: Path) -> None:
    ops = ops_repo(world, tmp_path / "ops")
    deep = ops / "playbooks" / "drafts"
    deep.mkdir()
    proc = from_here(world, ["probe", "--host", NAME, "--json"], cwd=deep)
    assert proc.returncode == 0, proc.stderr
    assert result_of(proc.stdout)["host"] == NAME
    listed = from_here(world, ["hosts", "--json"], cwd=deep)
    assert NAME in result_of(listed.stdout)
