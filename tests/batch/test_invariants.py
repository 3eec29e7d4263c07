"""The plan-time invariants (invariants.py), each through the planner on a playbook
text: INV-1, INV-9, unique labels, placeholders, INV-5. No SSH in this file."""

from __future__ import annotations

import pytest

from jobsafe_ops.batch.invariants import env_assignments
from tests.playbook_data import BASE, PHASES, error, host, plan

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


# ---- placeholders and labels -------------------------------------------------------------

def test_placeholder_inside_quotes_is_refused() -> None:
    msg = error(BASE.replace("--symbol {symbol}", "--symbol '{symbol}'"))
    assert "inside quotes" in msg


def test_unknown_placeholder_is_named() -> None:
    msg = error(BASE.replace("--threshold {threshold}", "--threshold {threshold} {thresh}"))
    assert "{thresh}" in msg and "unknown placeholder" in msg


def test_format_specs_are_refused() -> None:
    assert "not a bare" in error(BASE.replace("{threshold}\"", "{threshold:05d}\"", 1))


def test_reserved_retry_suffix() -> None:
    assert "-retry-N" in error(BASE.replace('"{symbol}@{threshold}"',
                                            '"{symbol}@{threshold}-retry-1"'))


# ---- INV-5 -------------------------------------------------------------------------------

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


# ---- labels and commands that cannot reach pueue intact ---------------------------------

@pytest.mark.parametrize(("old", "new", "needle"), [
    ('label = "{symbol}@{threshold}"', 'label = "{symbol}\\u0000{threshold}"', "NUL"),
    ('label = "{symbol}@{threshold}"', 'label = "{symbol}\\n{threshold}"', "tab/newline"),
    ('label = "{symbol}@{threshold}"', 'label = "' + "x" * 300 + '{symbol}{threshold}"',
     "longer than 256"),
    ('--threshold {threshold}"', '--threshold {threshold}\\r"', "carriage return"),
    ('--threshold {threshold}"', '--threshold {threshold}\\u0000"', "a NUL"),
    ('--threshold {threshold}"', '--threshold {threshold} ' + "y" * 140_000 + '"',
     "over the 131072-byte limit"),
])
def test_labels_and_commands_pueue_cannot_take(old: str, new: str, needle: str) -> None:
    msg = error(BASE.replace(old, new))
    assert needle in msg and "pb.toml" in msg
    assert len(msg) < 400  # a huge value is cut short in the one line


def test_quotes_dollar_and_backticks_in_labels_are_fine() -> None:
    p = plan(BASE.replace('label = "{symbol}@{threshold}"',
                          'label = "q\'\\"$(x)`y`:{symbol}@{threshold}"'))
    assert p.jobs[0].label == "q'\"$(x)`y`:BTC@250"


def test_duplicate_labels_from_collapsing_values() -> None:
    msg = error(BASE.replace('["BTC", "ETH"]', '["x-", "x"]').replace(
        "[250, 500]", '["y", "-y"]').replace('"{symbol}@{threshold}"', '"{symbol}{threshold}"'))
    assert "'x-y' is produced twice" in msg
