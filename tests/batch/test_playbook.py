"""Playbook loading and the pure planner's expansion (matrix x epochs, phases, after
steps, quoting); the plan-time invariants are in test_invariants.py. No SSH in this file."""

from __future__ import annotations

import shlex
import tomllib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobsafe_ops.batch.model import Split
from jobsafe_ops.batch.playbook import (
    load_playbook,
    parse_playbook,
    plan_batch,
    playbook_path,
)
from jobsafe_ops.errors import ConfigError
from tests.playbook_data import BASE, PHASES, error, host, plan

REPO = Path(__file__).resolve().parents[2]


# ---- the shipped examples ----------------------------------------------------------------

def test_sweep_example_matches_design_sketch() -> None:
    p = plan_batch(load_playbook(REPO / "playbooks" / "sweep.toml"), host())
    assert len(p.jobs) == 2 * 4 * 8
    assert len({j.label for j in p.jobs}) == 64
    first = p.jobs[0]
    assert first.label == "BTCUSDT@250:2019-01-01"
    assert "--start 2019-01-01 --end 2019-12-31" in first.command
    assert first.memory_max == 8 * 1024**3
    assert first.workdir == "~/project"
    # the chain: optimize waits for all 64 jobs, validate for optimize
    assert [a.label for a in p.after] == ["sweep:optimize", "sweep:validate"]
    assert set(p.after[0].after) == {j.label for j in p.jobs}
    assert p.after[1].after == ("sweep:optimize",)


def test_directions_example_phases_and_env() -> None:
    p = plan_batch(load_playbook(REPO / "playbooks" / "directions.toml"), host())
    long = [j for j in p.jobs if j.phase == "long"]
    short = [j for j in p.jobs if j.phase == "short"]
    assert len(long) == len(short) == 6
    assert p.groups == ("p1", "p2")
    assert all(set(j.after) == {x.label for x in long} for j in short)
    assert all(not j.after for j in long)
    assert short[0].memory_max == 1024**3 and long[0].memory_max == 512 * 1024**2
    assert dict(short[0].env) == {"MYPKG_THREADS": "2"}


def test_playbook_path_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "x.toml").write_text(BASE)
    monkeypatch.setenv("JOBSAFE_PLAYBOOKS", str(tmp_path))
    assert playbook_path("x") == tmp_path / "x.toml"
    with pytest.raises(ConfigError, match="known: x"):
        playbook_path("nope")


# ---- expansion ---------------------------------------------------------------------------

def test_matrix_times_epochs_in_order() -> None:
    p = plan(BASE)
    assert [j.label for j in p.jobs] == ["BTC@250", "BTC@500", "ETH@250", "ETH@500"]
    assert p.jobs[1].command == "run --symbol BTC --threshold 500"
    assert p.jobs[0].group == "p1"


def test_split_by_month_clamps_first_and_last_epoch() -> None:
    epochs = Split("month", *map(__import__("datetime").date.fromisoformat,
                                 ("2024-01-15", "2024-03-10"))).epochs()
    assert epochs == [
        {"epoch": "2024-01", "start": "2024-01-15", "end": "2024-01-31"},
        {"epoch": "2024-02", "start": "2024-02-01", "end": "2024-02-29"},
        {"epoch": "2024-03", "start": "2024-03-01", "end": "2024-03-10"},
    ]


def test_split_requires_state_reset_declaration() -> None:
    text = BASE.replace("{threshold}\"", "{threshold}:{epoch}\"", 1) + """
[split]
by = "year"
start = "2020-01-01"
end = "2021-12-31"
"""
    msg = error(text)
    assert "state_resets_per_epoch" in msg and "AP-9" in msg


@given(st.lists(st.text(alphabet="abcXYZ09 $'\";&|*", min_size=1, max_size=6),
                min_size=1, max_size=5, unique=True),
       st.lists(st.integers(0, 10_000), min_size=1, max_size=4, unique=True))
@settings(max_examples=60, deadline=None)
def test_labels_unique_and_values_survive_the_shell(symbols: list[str],
                                                    thresholds: list[int]) -> None:
    """Property: count = product; labels unique; every placeholder value comes back
    verbatim from the shell's word splitting (the quoting helper did its job)."""
    data = tomllib.loads(BASE)
    data["matrix"] = {"symbol": symbols, "threshold": thresholds}
    p = plan_batch(parse_playbook(data, "pb.toml"), host())
    assert len(p.jobs) == len(symbols) * len(thresholds)
    assert len({j.label for j in p.jobs}) == len(p.jobs)
    for j in p.jobs:
        words = shlex.split(j.command)
        params = dict(j.params)
        assert words == ["run", "--symbol", params["symbol"], "--threshold",
                         params["threshold"]]


def test_metacharacters_are_quoted_not_executed() -> None:
    p = plan(BASE.replace('["BTC", "ETH"]', '["BTC USDT", "$(touch /tmp/pwned)"]'))
    cmd = p.jobs[2].command
    assert "'$(touch /tmp/pwned)'" in cmd
    assert p.jobs[2].label == "$(touch /tmp/pwned)@250"


def test_workdir_defaults_to_project_dir_and_joins_relative() -> None:
    assert plan(BASE).jobs[0].workdir == "~/project"
    assert plan('workdir = "sub"\n' + BASE).jobs[0].workdir == "~/project/sub"
    assert plan('workdir = "/srv/x"\n' + BASE).jobs[0].workdir == "/srv/x"


# ---- loading and validation --------------------------------------------------------------

def test_after_phase_must_be_earlier() -> None:
    text = PHASES.replace('name = "long"', 'name = "long"\nafter_phase = "short"')
    assert "earlier phase" in error(text)


def test_unknown_keys_and_groups() -> None:
    assert "unknown key 'matrx'" in error(BASE + "[matrx]\nx = [1]\n")
    msg = error(BASE.replace('group = "p1"', 'group = "gpu"'))
    assert "'gpu' is not declared" in msg and "hosts/h.toml" in msg


def test_name_must_be_a_directory_name() -> None:
    assert "may hold letters" in error(BASE.replace('name = "t"', 'name = "a/b"'))


# ---- the bad-input corpus's rules (tests/e2e/test_bad_input.py runs them through inv) ----

def test_unknown_group_names_the_playbook_the_host_file_and_the_fix() -> None:
    msg = error(BASE.replace('group = "p1"', 'group = "gpu"'))
    assert "pb.toml" in msg and "hosts/h.toml" in msg and "add [groups.gpu]" in msg


@pytest.mark.parametrize(("old", "new", "needle"), [
    ('group = "p1"', 'group = "p1"\nworkdir = "~/{symbol}"', "use a fixed path"),
    ('group = "p1"', 'group = "p1"\nworkdir = 5', "workdir must be a directory path"),
    ('group = "p1"', 'group = "p1"\nretry_budget = "2"', "write retry_budget = 2"),
    ('group = "p1"', 'group = "p1"\nmemory_max = "9999999T"', "out of range"),
])
def test_bad_values_name_the_playbook(old: str, new: str, needle: str) -> None:
    msg = error(BASE.replace(old, new))
    assert needle in msg and "pb.toml" in msg


def test_bom_crlf_and_empty_files(tmp_path: Path) -> None:
    plain = tmp_path / "plain.toml"
    plain.write_text(BASE)
    want = plan_batch(load_playbook(plain), host()).jobs
    for name, raw in (("bom", b"\xef\xbb\xbf" + BASE.encode()),
                      ("crlf", BASE.replace("\n", "\r\n").encode())):
        (tmp_path / f"{name}.toml").write_bytes(raw)
        assert plan_batch(load_playbook(tmp_path / f"{name}.toml"), host()).jobs == want
    (tmp_path / "empty.toml").write_text("\n")
    with pytest.raises(ConfigError, match="empty.toml: the file is empty"):
        load_playbook(tmp_path / "empty.toml")
