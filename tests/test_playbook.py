"""Playbook loading and the pure planner: every invariant is enforced before any host is
touched (plan_batch takes data and returns data; no SSH in this file)."""

from __future__ import annotations

import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobsafe_ops.errors import ConfigError
from jobsafe_ops.inventory import GroupSpec, Host
from jobsafe_ops.playbook import (
    Split,
    env_assignments,
    load_playbook,
    parse_playbook,
    plan_batch,
    playbook_path,
)

REPO = Path(__file__).resolve().parents[1]


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


def test_placeholder_inside_quotes_is_refused() -> None:
    msg = error(BASE.replace("--symbol {symbol}", "--symbol '{symbol}'"))
    assert "inside quotes" in msg


def test_workdir_defaults_to_project_dir_and_joins_relative() -> None:
    assert plan(BASE).jobs[0].workdir == "~/project"
    assert plan('workdir = "sub"\n' + BASE).jobs[0].workdir == "~/project/sub"
    assert plan('workdir = "/srv/x"\n' + BASE).jobs[0].workdir == "/srv/x"


# ---- INV-1 ---------------------------------------------------------------------------------

def test_inv1_label_missing_a_varying_parameter() -> None:
    msg = error(BASE.replace('label = "{symbol}@{threshold}"', 'label = "{symbol}"'))
    assert msg.startswith("INV-1") and "'threshold'" in msg and "label" in msg


@pytest.mark.parametrize("kind", ["artifacts", "checkpoints", "temp_dirs", "locks"])
def test_inv1_every_shared_path_template(kind: str) -> None:
    template = "out/{symbol}.json"
    msg = error(f'{kind} = ["{template}"]\n' + BASE)
    assert "INV-1" in msg and "'threshold'" in msg
    assert f"{kind}[0]" in msg and repr(template) in msg


def test_inv1_label_placeholder_covers_every_parameter() -> None:
    assert plan('locks = ["/tmp/{label}.lock"]\n' + BASE).jobs[0].paths == (
        ("locks", "/tmp/BTC@250.lock"),)


def test_inv1_parameter_with_one_value_need_not_appear() -> None:
    text = BASE.replace("threshold = [250, 500]", "threshold = [250]").replace(
        'label = "{symbol}@{threshold}"', 'label = "{symbol}"')
    assert [j.label for j in plan(text).jobs] == ["BTC", "ETH"]


def test_inv1_epoch_dimension_any_spelling() -> None:
    split = """
[split]
by = "year"
start = "2020-01-01"
end = "2021-12-31"
state_resets_per_epoch = true
"""
    ok = BASE.replace('"{symbol}@{threshold}"', '"{symbol}@{threshold}:{start}"').replace(
        "--threshold {threshold}", "--threshold {threshold} --year {epoch}")
    ok = 'artifacts = ["out/{symbol}_{threshold}_{end}.json"]\n' + ok
    assert len(plan(ok + split).jobs) == 8
    bad = 'artifacts = ["out/{symbol}_{threshold}.json"]\n' + ok.split("\n", 1)[1]
    msg = error(bad + split)
    assert "'epoch'" in msg and "{start}, {end} or {epoch}" in msg


def test_inv1_command_must_use_varying_parameters() -> None:
    msg = error(BASE.replace(" --threshold {threshold}", ""))
    assert "INV-1" in msg and "same command" in msg


def test_inv1_rendered_paths_must_differ() -> None:
    # both parameters appear, yet two jobs still render one path: caught on the values
    text = BASE.replace('["BTC", "ETH"]', '["a_1", "a"]').replace(
        "[250, 500]", '["2", "1_2"]')
    msg = error('artifacts = ["out/{symbol}_{threshold}.json"]\n' + text)
    assert "INV-1" in msg and "out/a_1_2.json" in msg


def test_host_checkpoint_pattern_without_label() -> None:
    msg = error(BASE, host(checkpoints=("~/.cache/ck/{group}.json",)))
    assert "INV-1" in msg and "lacks {label}" in msg


# ---- INV-9 ---------------------------------------------------------------------------------

DIRS = """
name = "d"
group = "p1"
command = "run --dir {direction} --symbol {symbol}"
label = "{direction}:{symbol}"
categories = ["direction"]
[matrix]
direction = ["A", "A_mirrored"]
symbol = ["BTC", "ETH"]
"""


def test_inv9_artifact_must_carry_category() -> None:
    msg = error('artifacts = ["out/_chunk_{symbol}_{label}.parquet"]\n' + DIRS)
    assert msg.startswith("INV-9") and "{direction}" in msg


def test_inv9_glob_must_be_scoped_to_a_category() -> None:
    arts = 'artifacts = ["out/_chunk_{direction}_{symbol}.parquet"]\n'
    msg = error(arts + 'merge = ["out/_chunk_*.parquet"]\n' + DIRS)
    assert "INV-9" in msg and "merge[0]" in msg and "AP-17" in msg


def test_inv9_glob_that_bleeds_into_another_category() -> None:
    arts = 'artifacts = ["out/_chunk_{direction}_{symbol}.parquet"]\n'
    # "_chunk_A*" also matches A_mirrored's files
    msg = error(arts + 'cleanup = ["out/_chunk_{direction}*.parquet"]\n' + DIRS)
    assert "INV-9" in msg and "cleanup[0]" in msg and "A_mirrored" in msg
    # so does "_chunk_A_*": the check runs on the rendered names, not on the template
    assert "A_mirrored" in error(arts + 'cleanup = ["out/_chunk_{direction}_*.parquet"]\n'
                                 + DIRS)
    arts = 'artifacts = ["out/_chunk_{symbol}.{direction}.parquet"]\n'
    ok = plan(arts + 'cleanup = ["out/_chunk_*.{direction}.parquet"]\n' + DIRS)
    assert len(ok.jobs) == 4


def test_inv9_category_must_be_a_parameter() -> None:
    assert "category 'side'" in error('categories = ["side"]\n' + BASE)


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


def test_phases_are_categories_by_default() -> None:
    msg = error('artifacts = ["out/{symbol}.json"]\n' + PHASES)
    assert "'phase'" in msg  # shared template: the phase varies across its jobs
    p = plan('artifacts = ["out/{phase}_{symbol}.json"]\n' + PHASES)
    assert [j.label for j in p.jobs] == ["long:BTC", "long:ETH", "short:BTC", "short:ETH"]
    assert p.jobs[2].after == ("long:BTC", "long:ETH") and p.jobs[2].group == "p2"


def test_duplicate_labels_across_phases() -> None:
    # different templates, same rendered label
    text = PHASES.replace('label = "long:{symbol}"', 'label = "{playbook}-{symbol}"')
    msg = error(text.replace('label = "short:{symbol}"', 'label = "ph-{symbol}"'))
    assert "label 'ph-BTC' is produced twice" in msg


def test_after_label_clashing_with_a_job() -> None:
    msg = error(BASE + '[[after]]\nlabel = "BTC@250"\ncommand = "optimize"\n')
    assert "produced twice" in msg


def test_after_phase_must_be_earlier() -> None:
    text = PHASES.replace('name = "long"', 'name = "long"\nafter_phase = "short"')
    assert "earlier phase" in error(text)


# ---- templates, INV-5, validation --------------------------------------------------------

def test_unknown_placeholder_is_named() -> None:
    msg = error(BASE.replace("--threshold {threshold}", "--threshold {threshold} {thresh}"))
    assert "{thresh}" in msg and "unknown placeholder" in msg


def test_format_specs_are_refused() -> None:
    assert "not a bare" in error(BASE.replace("{threshold}\"", "{threshold:05d}\"", 1))


def test_reserved_retry_suffix() -> None:
    assert "-retry-N" in error(BASE.replace('"{symbol}@{threshold}"',
                                            '"{symbol}@{threshold}-retry-1"'))


def test_unknown_keys_and_groups() -> None:
    assert "unknown key 'matrx'" in error(BASE + "[matrx]\nx = [1]\n")
    msg = error(BASE.replace('group = "p1"', 'group = "gpu"'))
    assert "'gpu' is not declared" in msg and "hosts/h.toml" in msg


@pytest.mark.parametrize("command", [
    "FOO=1 run {symbol} {threshold}",
    "env -i FOO=1 run {symbol} {threshold}",
    "cd x && FOO=1 run {symbol} {threshold}",
    "export FOO=1; run {symbol} {threshold}",
])
def test_inv5_inline_env_override_refused_unless_declared(command: str) -> None:
    text = BASE.replace('"run --symbol {symbol} --threshold {threshold}"', f'"{command}"')
    msg = error(text)
    assert msg.startswith("INV-5") and "FOO" in msg and "env_overrides" in msg
    assert len(plan('env_overrides = ["FOO"]\n' + text).jobs) == 4


def test_inv5_env_table_needs_declaration() -> None:
    msg = error(BASE + '[env]\nTHREADS = "4"\n')
    assert "INV-5" in msg and "THREADS" in msg
    p = plan('env_overrides = ["THREADS"]\n' + BASE + '[env]\nTHREADS = "{threshold}"\n')
    assert dict(p.jobs[1].env) == {"THREADS": "500"}


def test_env_assignments_parser() -> None:
    assert env_assignments("A=1 B=2 cmd C=3 --x=4") == ["A", "B"]
    assert env_assignments("env -u X Y=1 cmd; Z=2 other | W=3 x") == ["Y", "Z", "W"]
    assert env_assignments("python run.py --threshold=5") == []


def test_name_must_be_a_directory_name() -> None:
    assert "may hold letters" in error(BASE.replace('name = "t"', 'name = "a/b"'))
