"""Fixtures for the e2e tests: a world of simulated hosts, each a real sshd on loopback.

``world`` is shared by the tests of one module (hosts are added by the module, once);
``make_world`` builds private worlds for tests that break things (rotated keys, stopped
daemons). Both are closed at teardown, failed tests included.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from jobsafe_ops.testing.slurm import (  # noqa: E402
    ACCOUNTING_HINT,
    INSTALL_HINT,
    SlurmCluster,
    missing_programs,
)
from jobsafe_ops.testing.world import WorldError  # noqa: E402
from tests.world import World, find_sshd  # noqa: E402


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def require_sshd() -> None:
    """No sshd: fail in CI (the e2e suite must run there), skip on a developer's machine."""
    if find_sshd() is not None:
        return
    message = "sshd not found: apt-get install openssh-server"
    if in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def _skip_or_fail(message: str) -> NoReturn:
    if in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    """One real single-node Slurm cluster (munged + slurmctld + slurmd on loopback, files in
    a temp dir) for the whole session. Slurm missing: fail in CI, skip elsewhere."""
    missing = missing_programs()
    if missing:
        _skip_or_fail(f"{', '.join(missing)} not found; {INSTALL_HINT}")
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def slurm_cluster_acct(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    """A second cluster with job accounting (slurmdbd + a private MariaDB, ~4 s to start):
    sacct answers. slurmdbd or MariaDB missing, or not starting: fail in CI (.ci/run
    installs them), skip elsewhere with what failed."""
    missing = missing_programs(accounting=True)
    if missing:
        _skip_or_fail(f"{', '.join(missing)} not found; {ACCOUNTING_HINT}")
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurmacct"), accounting=True)
    try:
        cluster.start()
    except WorldError as exc:
        _skip_or_fail(f"the accounting cluster did not start: {exc}")
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """One world per test module; add hosts with ``world.add_host(name, ...)``."""
    require_sshd()
    # a short root: pueue's unix socket path must fit in 108 bytes
    w = World(tmp_path_factory.mktemp("w"))
    try:
        yield w
    finally:
        w.close()


@pytest.fixture
def make_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., World]]:
    """Factory for a private world (``make_world(index_url=...)``), closed after the test."""
    require_sshd()
    worlds: list[World] = []

    def factory(**kwargs: Any) -> World:
        w = World(tmp_path_factory.mktemp("w"), **kwargs)
        worlds.append(w)
        return w

    try:
        yield factory
    finally:
        for w in worlds:
            w.close()
