"""jobsafe_ops.deploy.context: option checks (bad input is exit 2 before any host)."""

from __future__ import annotations

from typing import Any

import pytest

from jobsafe_ops.deploy.context import DeployOptions
from jobsafe_ops.errors import ConfigError

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
    ({"version": "not a version"}, "PEP 440"),
    ({"expect_version": "1.0;touch x"}, "--expect-version"),
    ({"ref": "v1..v2"}, "--ref"),
    ({"ref": "v1 v2"}, "--ref"),
    ({"ref": "v1\nrm"}, "--ref"),
])
def test_bad_options_are_exit_2_before_any_host(kwargs: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError) as exc:
        DeployOptions(**kwargs).validate()
    assert needle in str(exc.value) and exc.value.exit_code == 2


def test_good_options() -> None:
    opts = DeployOptions(on_running="kill", expect_code="mypkg.core:Cls.method:x * 2",
                           version="1.2.0", expect_version="1.2.0")
    opts.validate()
    assert opts.expected_version == "1.2.0"
    # the lock outlives the longest legitimate run (wait + upgrade + watch), no more
    assert opts.lock_ttl > opts.wait_timeout + opts.upgrade_timeout + opts.watch


@pytest.mark.parametrize("version", ["1.2.0", "1.2.0rc1", "2!1.0.post3.dev4+local.1", "v1.0"])
def test_pep440_versions_pass(version: str) -> None:
    DeployOptions(version=version).validate()


@pytest.mark.parametrize("ref", ["v1.1.0", "HEAD~1", "0123abc", "release/2026-01"])
def test_commit_and_tag_names_pass(ref: str) -> None:
    DeployOptions(ref=ref).validate()
