"""Test setup on a simulated host's own pueue (added by label straight on the host, not
through jobsafe_ops): shared by the clean and monitor e2e tests."""

from __future__ import annotations

import shlex
import time

from tests.world import SimHost


def add(host: SimHost, group: str, label: str, command: str, after: tuple[int, ...] = ()) -> int:
    deps = f"--after {' '.join(map(str, after))} " if after else ""
    out = host.run(f'pueue add --group {group} --label {shlex.quote(label)} --print-task-id '
                   f'--working-directory "$HOME" {deps}-- {shlex.quote(command)}', check=True)
    return int(out.stdout.strip())


def settle(host: SimHost, group: str, timeout: float = 30) -> None:
    """Wait until nothing in the group is queued or running (pueue wait polls every 2 s)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tasks = host.pueue_status()["tasks"].values()
        if not any(next(iter(t["status"])) in ("Queued", "Running")
                   for t in tasks if t["group"] == group):
            return
        time.sleep(0.1)
    raise AssertionError(f"group {group} on {host.name} did not settle in {timeout}s")
