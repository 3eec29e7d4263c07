"""Playbook texts and a host for the planner tests (test_playbook.py, test_invariants.py):
`plan` parses and plans a TOML text, `error` returns the ConfigError it must raise."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest

from jobsafe_ops.batch.playbook import parse_playbook, plan_batch
from jobsafe_ops.errors import ConfigError
from jobsafe_ops.inventory import GroupSpec, Host


def host(**kw: Any) -> Host:
    groups = {"p1": GroupSpec("p1", 2, 1, 4), "p2": GroupSpec("p2", 1, 1, 2)}
    base: dict[str, Any] = dict(name="h", ssh="local", project_dir="~/project",
                                package="mypkg", groups=groups, source="hosts/h.toml")
    return Host(**{**base, **kw})


BASE = """
name = "t"
group = "p1"
command = "run --symbol {symbol} --threshold {threshold}"
label = "{symbol}@{threshold}"
[matrix]
symbol = ["BTC", "ETH"]
threshold = [250, 500]
"""


def plan(text: str, h: Host | None = None) -> Any:
    return plan_batch(parse_playbook(tomllib.loads(text), "pb.toml"), h or host())


def error(text: str, h: Host | None = None) -> str:
    with pytest.raises(ConfigError) as exc:
        plan(text, h)
    return str(exc.value)


PHASES = """
name = "ph"
group = "p1"
command = "run --phase {phase} --symbol {symbol}"
[matrix]
symbol = ["BTC", "ETH"]
[[phases]]
name = "long"
label = "long:{symbol}"
[[phases]]
name = "short"
label = "short:{symbol}"
after_phase = "long"
group = "p2"
"""
