"""jobsafe_ops.batch.submit: creating a missing group when another submit-batch may be creating
it at the same moment (the soak bench's concurrent runs found this race)."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from jobsafe_ops.batch.playbook import parse_playbook, plan_batch
from jobsafe_ops.batch.submit import ensure_group, submit
from jobsafe_ops.errors import ConfigError, RemoteError
from jobsafe_ops.inventory import GroupSpec, Host
from jobsafe_ops.remote import Result
from jobsafe_ops.testing.fake_remote import FakeRemote, Sent

HOST = Host(name="h", ssh="x", project_dir="/p", package="x")
EXISTS = 'Group "p1" already exists'  # pueue 4's answer to a second `group add`


def scripted(add: Result, groups: list[str]) -> FakeRemote:
    """Answers `pueue group add` with `add` and `pueue status` with a daemon's groups."""
    status = {"tasks": {}, "groups": {g: {"status": "Running", "parallel_tasks": 1}
                                      for g in groups}}
    return FakeRemote(HOST).on((HOST.pueue, "group", "add"), add, mutates=True) \
        .on((HOST.pueue, "status", "--json"), json.dumps(status))


def test_group_created_by_a_concurrent_run_is_fine() -> None:
    remote = scripted(Result("", "", EXISTS, 1), ["default", "p1"])
    ensure_group(remote, "p1", 2)
    assert [a[1] for a in remote.argvs] == ["group", "status"]  # verified after


def test_created_here_needs_no_second_look() -> None:
    remote = scripted(Result("", "", "", 0), ["default"])
    ensure_group(remote, "p1", 2)
    assert len(remote.sent) == 1


def test_group_still_missing_after_a_failed_add_is_an_error() -> None:
    remote = scripted(Result("", "", "permission denied", 1), ["default"])
    with pytest.raises(RemoteError, match="group add p1 --parallel 2.*permission denied"):
        ensure_group(remote, "p1", 2)


# ---- item 3: a job whose first program does not resolve --------------------------------

PROBE_TEXT = (Path(__file__).parents[1] / "data" / "probe"
              / "bigblack-busy-swapping.txt").read_text()
UV_BOOK = """
name = "uvb"
group = "p1"
workdir = "/w"
command = "FOO=1 uv run python job.py {n}"
env_overrides = ["FOO"]
label = "uvb:{n}"
[matrix]
n = ["a", "b"]
[[after]]
label = "uvb:merge"
command = "python3 merge.py"
"""


def facts_host(host: Host, unresolved: str) -> FakeRemote:
    """The probe from a recorded host, facts with the given `@@unresolved` lines; any other
    command is a mutation, which fails the test (FakeRemote answers nothing else)."""

    def facts(sent: Sent) -> str:
        # the check runs in the same round trip as the receipts (no extra one)
        assert "command -v uv" in sent.command and "command -v python3" in sent.command
        return f"@@receipts\n\n@@done\n0\n@@missing\n@@unresolved\n{unresolved}"

    return FakeRemote(host).on_script("@@nproc", PROBE_TEXT).on_script("@@receipts", facts)


@pytest.mark.parametrize("units", [None, True])
def test_a_job_program_not_found_refuses_before_any_change(units: bool | None) -> None:
    host = Host(name="h", ssh="x", project_dir="/w", package="x", memory_cap=False,
                groups={"p1": GroupSpec("p1", 2, 1, 4)}, path=(), source="hosts/h.toml")
    plan = plan_batch(parse_playbook(tomllib.loads(UV_BOOK), "uvb.toml"), host)
    remote = facts_host(host, "0\n")  # check 0: uv
    for dry in (False, True):
        with pytest.raises(ConfigError) as err:
            submit(remote, plan, dry=dry, units=units)
        assert str(err.value).startswith("h: uv not found for job 'uvb:a'")
        assert "nothing was queued" in str(err.value)
    assert len(remote.sent) == 4  # probe + facts, twice: nothing else
    ok = facts_host(host, "")  # every program resolves: the run goes on to mutate
    with pytest.raises(AssertionError, match="no answer for"):
        submit(ok, plan, units=units)
