"""`inv clean --host H --group G`: scoped, state-file size before/after, refused while an
unfinished dependency chain hangs on the group (verify before mutate), --dry changes nothing."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.cli import inv
from tests.e2e.pueue_setup import add, settle
from tests.jsonout import result_of
from tests.world import SimHost, World


def clean(world: World, *args: str) -> tuple[int, Any, str]:
    proc = inv(world, "clean", *args, env={"JOBSAFE_CONNECT_ATTEMPTS": "1"}, timeout=120)
    out: Any = proc.stdout
    if "--json" in args and proc.returncode == 0:
        out = result_of(proc.stdout)
    return proc.returncode, out, proc.stderr


def groups_tasks(host: SimHost, group: str) -> list[dict[str, Any]]:
    return [t for t in host.pueue_status()["tasks"].values() if t["group"] == group]


@pytest.fixture(scope="module")
def c1(world: World) -> SimHost:
    host = world.add_host("c1", project=False)
    for g in ("gc", "gkeep", "gx", "gy"):
        host.run(f"pueue group add {g} --parallel 4", check=True)
    return host


def test_clean_is_scoped_and_reports_the_state_file(world: World, c1: SimHost) -> None:
    for i in range(15):
        add(c1, "gc", f"done{i}", "true")
    add(c1, "gc", "broken", "exit 3")
    add(c1, "gkeep", "other-group", "true")
    settle(c1, "gc")
    settle(c1, "gkeep")
    size = c1.state_file.stat().st_size
    rc, out, err = clean(world, "--host", "c1", "--group", "gc", "--dry", "--json")
    assert rc == 0, err
    assert out["dry"] and out["command"][-2:] == ["--group", "gc"]
    assert len(groups_tasks(c1, "gc")) == 16  # --dry changed nothing
    rc, out, err = clean(world, "--host", "c1", "--group", "gc", "--successful-only", "--json")
    assert rc == 0, err
    assert out["state_file"] == str(c1.state_file)  # found through the null pueue.yml
    assert out["size_before"] >= size > out["size_after"] == c1.state_file.stat().st_size
    assert out["removed"] == 15 and out["counts_after"] == {"failed": 1}
    assert len(groups_tasks(c1, "gkeep")) == 1  # another group is never touched (AP-10)
    rc, text, err = clean(world, "--host", "c1", "--group", "gc")
    assert rc == 0, err
    assert "size before" in text and "size after" in text and groups_tasks(c1, "gc") == []
    journal = world.laptop / ".local/state/jobsafe-ops/journal.ndjson"
    entries = [json.loads(line) for line in journal.read_text().splitlines()]
    assert [(e["action"], e["group"], e["removed"]) for e in entries if e["host"] == "c1"] == [
        ("clean", "gc", 15), ("clean", "gc", 1)]


def test_clean_refuses_while_a_chain_hangs_on_the_group(world: World, c1: SimHost) -> None:
    first = add(c1, "gx", "sweep:a", "true")
    settle(c1, "gx")
    c1.run("pueue pause --group gy", check=True)
    add(c1, "gy", "sweep:optimize", "true", after=(first,))  # waits in a paused group
    rc, _, err = clean(world, "--host", "c1", "--group", "gx")
    assert rc == 3
    assert "sweep:optimize" in err and "sweep:a" in err
    assert [t["label"] for t in groups_tasks(c1, "gx")] == ["sweep:a"]  # untouched
    c1.run("pueue start --group gy", check=True)
    settle(c1, "gy")
    rc, out, err = clean(world, "--host", "c1", "--group", "gx", "--json")
    assert rc == 0 and out["removed"] == 1, err


def test_clean_needs_an_existing_group(world: World, c1: SimHost) -> None:
    rc, _, err = clean(world, "--host", "c1", "--group", "nope")
    assert rc == 2 and "nope" in err
    rc, _, err = clean(world, "--host", "c1")
    assert rc == 2 and "--group" in err
