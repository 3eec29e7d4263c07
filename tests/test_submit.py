"""jobsafe_ops.submit: creating a missing group when another submit-batch may be creating
it at the same moment (the soak bench's concurrent runs found this race)."""

from __future__ import annotations

import json

import pytest

from jobsafe_ops.errors import RemoteError
from jobsafe_ops.inventory import Host
from jobsafe_ops.remote import Remote, Result
from jobsafe_ops.submit import ensure_group

HOST = Host(name="h", ssh="x", project_dir="/p", package="x")
EXISTS = 'Group "p1" already exists'  # pueue 4's answer to a second `group add`


class Scripted(Remote):
    """Answers `pueue group add` with `add` and `pueue status` with a daemon's groups."""

    def __init__(self, add: Result, groups: list[str]) -> None:
        super().__init__(HOST)
        self.add, self.groups = add, groups
        self.commands: list[str] = []

    def _run(self, text: str, *, timeout: float | None, stdin: str | None) -> Result:
        self.commands.append(text)
        if " group add " in text:
            return self.add
        status = {"tasks": {}, "groups": {g: {"status": "Running", "parallel_tasks": 1}
                                          for g in self.groups}}
        return Result(text, json.dumps(status), "", 0)


def test_group_created_by_a_concurrent_run_is_fine() -> None:
    remote = Scripted(Result("", "", EXISTS, 1), ["default", "p1"])
    ensure_group(remote, "p1", 2)
    assert len(remote.commands) == 2 and "status" in remote.commands[1]  # verified after


def test_created_here_needs_no_second_look() -> None:
    remote = Scripted(Result("", "", "", 0), ["default"])
    ensure_group(remote, "p1", 2)
    assert len(remote.commands) == 1


def test_group_still_missing_after_a_failed_add_is_an_error() -> None:
    remote = Scripted(Result("", "", "permission denied", 1), ["default"])
    with pytest.raises(RemoteError, match="group add p1 --parallel 2.*permission denied"):
        ensure_group(remote, "p1", 2)
