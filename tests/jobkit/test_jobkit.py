"""jobkit: param-complete paths, atomic writes, the cursor, scoped globs, NDJSON, merge check.
(Concurrency and kill tests: test_jobkit_concurrency.py.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from jobsafe_ops.errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_REFUSED, JobsafeError
from jobsafe_ops.jobkit import (
    Checkpoint,
    CheckpointSpec,
    ContaminationError,
    CursorRemovalRefused,
    JobkitError,
    ParamError,
    UnscopedGlobError,
    append_ndjson,
    atomic_write,
    atomic_write_json,
    checkpoint_path,
    decode_value,
    encode_value,
    is_cursor,
    load_json,
    read_ndjson,
    remove,
    scoped_glob,
    sweep_temps,
    validate_merged,
    validate_values,
)

JOB = dict(symbol="BTCUSDT", threshold=1000, start="2024-01-01", end="2024-12-31")


def spec(tmp_path: Path, **kw: object) -> CheckpointSpec:
    return CheckpointSpec(tmp_path, "process", params=("symbol", "threshold", "start", "end"),
                          **kw)  # type: ignore[arg-type]


# ---- paths (INV-1, INV-9) ---------------------------------------------------------------


def test_path_carries_every_parameter_in_declared_order(tmp_path):
    p = checkpoint_path(spec(tmp_path), **JOB)
    assert p == tmp_path / "process_BTCUSDT_1000_2024-01-01_2024-12-31.json"
    # the INV-1 test (docs/glossary.md): jobs differing only in threshold never share a checkpoint.
    assert p != checkpoint_path(spec(tmp_path), **{**JOB, "threshold": 750})


def test_categories_come_first_and_are_required(tmp_path):
    s = CheckpointSpec(tmp_path, "chunk", params=("symbol",), categories=("direction",),
                       suffix=".parquet")
    assert s.name(direction="long", symbol="BTC") == "chunk_long_BTC.parquet"
    with pytest.raises(ParamError, match=r"missing parameter 'direction'"):
        s.path(symbol="BTC")


def test_missing_parameter_is_named_with_the_fix(tmp_path):
    job = {k: v for k, v in JOB.items() if k != "threshold"}
    with pytest.raises(ParamError) as err:
        checkpoint_path(spec(tmp_path), **job)
    msg = str(err.value)
    assert "missing parameter 'threshold'" in msg
    assert "pass threshold=" in msg and "INV-1" in msg


def test_extra_parameter_is_named_with_the_fix(tmp_path):
    with pytest.raises(ParamError) as err:
        checkpoint_path(spec(tmp_path), **JOB, verbose=True)
    assert "'verbose' is not declared" in str(err.value)
    assert "add it to params=" in str(err.value)


def test_values_render_like_the_label(tmp_path):
    s = spec(tmp_path)
    assert s.path(**{**JOB, "threshold": "1000"}) == s.path(**JOB)
    assert s.path(**{**JOB, "start": date(2024, 1, 1)}) == s.path(**JOB)


@pytest.mark.parametrize("value, why", [("", "is empty"), (None, "is a NoneType"),
                                        (["a"], "is a list")])
def test_unusable_values_are_refused(tmp_path, value, why):
    with pytest.raises(ParamError, match=rf"parameter 'symbol' {why}"):
        spec(tmp_path).path(**{**JOB, "symbol": value})


def test_separator_and_slash_in_values_cannot_collide_or_escape(tmp_path):
    s = CheckpointSpec(tmp_path, "x", params=("a", "b"))
    assert s.name(a="p_q", b="r") != s.name(a="p", b="q_r")
    assert s.name(a="p%5Fq", b="r") != s.name(a="p_q", b="r")
    escaped = s.path(a="../../etc", b="/passwd")
    assert escaped.parent == tmp_path
    assert s.parse(escaped) == {"a": "../../etc", "b": "/passwd"}


@given(st.dictionaries(st.sampled_from(["a", "b", "c"]), st.text(min_size=1, max_size=6),
                       min_size=3, max_size=3),
       st.dictionaries(st.sampled_from(["a", "b", "c"]), st.text(min_size=1, max_size=6),
                       min_size=3, max_size=3))
def test_different_parameter_sets_never_share_a_path(one, two):
    s = CheckpointSpec("/ckpt", "job", params=("a", "b", "c"))
    assume(one != two)
    n1, n2 = s.name(**one), s.name(**two)
    assert n1 != n2
    for name, values in ((n1, one), (n2, two)):
        assert "/" not in name and "\0" not in name and not name.startswith(".")
        assert s.parse(name) == values


def test_parse_rejects_names_of_other_families(tmp_path):
    s = CheckpointSpec(tmp_path, "chunk", params=("symbol",), categories=("direction",))
    for name in ["chunk_long.json", "chunk_long_BTC_x.json", "chunky_long_BTC.json",
                 "chunk_long_BTC.parquet", "chunk_long_%2f.json", "chunk_%41_BTC.json",
                 ".ckpt_abc.tmp", "chunk_long_BTC.json.lock"]:
        assert s.parse(name) is None, name
    assert decode_value("%2F") == "/" and decode_value("%2f") is None


def test_declaration_errors_say_the_fix(tmp_path):
    with pytest.raises(ParamError, match=r"no '_'.*'range-bars'"):
        CheckpointSpec(tmp_path, "range_bars", params=("symbol",))
    with pytest.raises(ParamError, match="declared twice"):
        CheckpointSpec(tmp_path, "x", params=("phase",), categories=("phase",))
    with pytest.raises(ParamError, match="not an identifier"):
        CheckpointSpec(tmp_path, "x", params=("sym bol",))
    with pytest.raises(ParamError, match="suffix"):
        CheckpointSpec(tmp_path, "x", suffix="json")


def test_name_over_the_filesystem_limit_is_refused(tmp_path):
    s = CheckpointSpec(tmp_path, "x", params=("a",))
    with pytest.raises(ParamError, match="over the 255-byte limit"):
        s.path(a="é" * 100)  # 600 bytes once %-encoded
    assert len(s.name(a="a" * 240).encode()) <= 255


def test_errors_are_value_errors_with_the_package_exit_codes():
    # jobkit's own tree (it imports nothing outside itself): a ValueError a stdlib-only job
    # can catch, never a JobsafeError, with the exit codes of the package's table
    assert issubclass(JobkitError, ValueError) and not issubclass(JobkitError, JobsafeError)
    assert ParamError.exit_code == EXIT_BAD_INPUT
    assert CursorRemovalRefused.exit_code == EXIT_REFUSED
    assert ContaminationError.exit_code == EXIT_FAILED


# ---- atomic_write / load_json / remove (INV-4, INV-3) -----------------------------------


def temps(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if p.name.startswith(".ckpt_")]


def test_atomic_write_str_bytes_and_json(tmp_path):
    target = tmp_path / "sub" / "state.json"
    assert atomic_write(target, "héllo") == target  # parent created
    assert target.read_text(encoding="utf-8") == "héllo"
    atomic_write(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    atomic_write_json(target, {"done": [1, 2]})
    assert load_json(target) == {"done": [1, 2]}
    assert temps(target.parent) == []


def test_atomic_write_mode(tmp_path):
    target = atomic_write(tmp_path / "a", "x", mode=0o640)
    assert target.stat().st_mode & 0o777 == 0o640


def test_failed_write_leaves_old_file_and_no_temp(tmp_path):
    blocker = tmp_path / "state.json"
    blocker.mkdir()
    (blocker / "keep").write_text("old")  # os.replace cannot put a file over a full directory
    with pytest.raises(OSError):
        atomic_write(blocker, "new")
    assert (blocker / "keep").read_text() == "old"
    assert temps(tmp_path) == []


def test_load_json_returns_none_on_missing_or_torn(tmp_path):
    assert load_json(tmp_path / "missing.json") is None
    (tmp_path / "torn.json").write_text('{"done": [1, 2')
    assert load_json(tmp_path / "torn.json") is None
    (tmp_path / "bin.json").write_bytes(b"\xff\xfe")
    assert load_json(tmp_path / "bin.json") is None
    (tmp_path / "ok.json").write_text("[1]")
    assert load_json(tmp_path / "ok.json") == [1]


def test_remove_is_idempotent(tmp_path):
    target = tmp_path / "artifact.parquet"
    target.write_text("x")
    remove(target)
    remove(target)  # already gone: no error (INV-3)
    assert not target.exists()


def test_remove_does_not_hide_a_directory(tmp_path):
    with pytest.raises(OSError):
        remove(tmp_path)


def test_remove_refuses_a_cursor_without_a_reason(tmp_path):
    ckpt = Checkpoint(tmp_path / "c.json")
    ckpt.save({"pos": 3})
    assert is_cursor(ckpt.path)
    with pytest.raises(CursorRemovalRefused) as err:
        remove(ckpt.path)
    assert "AP-15" in str(err.value) and "reason=" in str(err.value)
    with pytest.raises(CursorRemovalRefused):
        remove(ckpt.path, reason="  ")
    assert ckpt.load() is not None
    remove(ckpt.path, reason="job killed by deploy, requeued fresh")
    assert not ckpt.path.exists()
    remove(ckpt.path, reason="again")  # still idempotent


# ---- Checkpoint (AP-15) -----------------------------------------------------------------


def test_checkpoint_save_load_complete(tmp_path):
    ckpt = Checkpoint.for_job(spec(tmp_path), **JOB)
    assert ckpt.path == checkpoint_path(spec(tmp_path), **JOB)
    assert ckpt.load() is None
    ckpt.save({"pos": 1})
    saved = ckpt.load()
    assert saved is not None and saved.state == {"pos": 1} and not saved.complete
    ckpt.mark_complete()
    saved = ckpt.load()
    assert saved is not None and saved.complete and saved.state == {"pos": 1}
    doc = json.loads(ckpt.path.read_text())
    assert doc["params"]["threshold"] == "1000"
    ckpt.save({"pos": 2})  # the next incremental run continues from the kept cursor
    saved = ckpt.load()
    assert saved is not None and saved.state == {"pos": 2} and not saved.complete


def test_checkpoint_has_no_delete_path():
    assert not [n for n in dir(Checkpoint) if n in {"delete", "remove", "unlink", "clear"}]


def test_checkpoint_for_job_needs_every_parameter(tmp_path):
    with pytest.raises(ParamError, match="'end'"):
        Checkpoint.for_job(spec(tmp_path), symbol="BTC", threshold=1, start="2024")


def test_torn_checkpoint_loads_as_none_foreign_json_is_an_error(tmp_path):
    ckpt = Checkpoint(tmp_path / "c.json")
    ckpt.path.write_text('{"jobkit_cursor": 1, "sta')
    assert ckpt.load() is None
    ckpt.path.write_text('{"rows": 5}')
    with pytest.raises(JobkitError, match="not a jobkit cursor"):
        ckpt.load()


def test_sweep_temps_removes_only_old_stranded_temps(tmp_path):
    old = time.time() - 7200
    for name in (".ckpt_old.tmp", "keep.tmp", ".ckpt_x.json"):
        (tmp_path / name).write_text("x")
        os.utime(tmp_path / name, (old, old))
    (tmp_path / ".ckpt_live.tmp").write_text("a writer's temp, seconds old")
    assert sweep_temps(tmp_path) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [".ckpt_live.tmp", ".ckpt_x.json",
                                                          "keep.tmp"]
    assert sweep_temps(tmp_path / "missing") == 0


def test_checkpoint_state_must_be_json(tmp_path):
    ckpt = Checkpoint(tmp_path / "c.json")
    with pytest.raises(JobkitError, match="state is not JSON"):
        ckpt.save({"when": date(2024, 1, 1)})
    assert not ckpt.path.exists() and temps(tmp_path) == []


# ---- scoped_glob (AP-17, INV-9) ---------------------------------------------------------


@pytest.fixture
def chunks(tmp_path):
    s = CheckpointSpec(tmp_path, "chunk", params=("symbol", "threshold"),
                       categories=("direction",), suffix=".parquet")
    for direction in ("long", "short"):
        for symbol in ("BTC", "ETH"):
            s.path(direction=direction, symbol=symbol, threshold=250).write_text(direction)
    for noise in ("chunk-long_BTC_250.parquet", "chunk_long_BTC.parquet", ".ckpt_x.tmp",
                  "chunk_long_BTC_250_extra.parquet", "chunk_long_BTC_250.parquet.lock"):
        (tmp_path / noise).write_text("noise")
    return s


def test_scoped_glob_returns_one_category(chunks):
    got = scoped_glob(chunks, direction="long")
    assert [p.name for p in got] == ["chunk_long_BTC_250.parquet", "chunk_long_ETH_250.parquet"]
    assert {p.read_text() for p in got} == {"long"}
    assert scoped_glob(chunks, direction="long", symbol="*") == got
    assert [p.name for p in scoped_glob(chunks, direction="short", symbol="ETH")] == [
        "chunk_short_ETH_250.parquet"]


def test_scoped_glob_refuses_an_unpinned_category(chunks):
    with pytest.raises(UnscopedGlobError) as err:
        scoped_glob(chunks, symbol="BTC")
    assert "category 'direction' is not pinned" in str(err.value)
    assert "direction=<one value>" in str(err.value)


def test_scoped_glob_refuses_a_wildcard_category(chunks):
    for pattern in ("*", "lo*"):
        with pytest.raises(UnscopedGlobError, match=r"category 'direction' is pinned to"):
            scoped_glob(chunks, direction=pattern)


def test_scoped_glob_unknown_field_and_missing_dir(chunks, tmp_path):
    with pytest.raises(ParamError, match="'phase' is not declared"):
        scoped_glob(chunks, direction="long", phase="a")
    empty = CheckpointSpec(tmp_path / "nope", "chunk", categories=("direction",))
    assert scoped_glob(empty, direction="long") == []


@pytest.fixture
def merged_dir(tmp_path):
    """Phase a's and phase ab's chunks side by side, plus a value with glob characters."""
    for name in ("_chunk_a_1.parquet", "_chunk_a_2.parquet", "_chunk_ab_1.parquet",
                 "_chunk_b_1.parquet", "_chunk_[x]_1.parquet", "_chunk_x_1.parquet"):
        (tmp_path / name).write_text(name)
    return tmp_path


def test_scoped_glob_pattern_form_matches_one_category(merged_dir):
    got = scoped_glob(merged_dir, "_chunk_{phase}_*.parquet", phase="a")
    assert [p.name for p in got] == ["_chunk_a_1.parquet", "_chunk_a_2.parquet"]
    # a value is matched literally: '[x]' is not the character class matching 'x'
    got = scoped_glob(merged_dir, "_chunk_{phase}_*.parquet", phase="[x]")
    assert [p.name for p in got] == ["_chunk_[x]_1.parquet"]
    assert scoped_glob(merged_dir / "nope", "_chunk_{phase}_*", phase="a") == []


@pytest.mark.parametrize(("pattern", "pinned", "error", "says"), [
    ("_chunk_*.parquet", {}, UnscopedGlobError, "has no {category} placeholder"),
    ("_chunk_{phase}_*.parquet", {}, UnscopedGlobError, "category 'phase' is not pinned"),
    ("_chunk_{phase}*.parquet", {"phase": "a"}, UnscopedGlobError, "a wildcard touches"),
    ("*{phase}_1.parquet", {"phase": "a"}, UnscopedGlobError, "a wildcard touches"),
    ("_chunk_{phase}_*.parquet", {"phase": "*"}, UnscopedGlobError, "pinned to '*'"),
    ("_chunk_{phase}_*.parquet", {"phase": "a?"}, UnscopedGlobError, "pinned to 'a?'"),
    ("_chunk_{phase}_*.parquet", {"phase": "../a"}, UnscopedGlobError, "no '/'"),
    ("_chunk_{phase}_*.parquet", {"phase": "a", "side": "long"}, ParamError,
     "'side' is not a placeholder"),
    ("_chunk_{1x}_*.parquet", {}, ParamError, "is not a name"),
])
def test_scoped_glob_pattern_form_refuses(merged_dir, pattern, pinned, error, says):
    with pytest.raises(error) as err:
        scoped_glob(merged_dir, pattern, **pinned)
    assert says in str(err.value)


def test_scoped_glob_forms_are_not_mixed(chunks, tmp_path):
    with pytest.raises(ParamError, match="not a pattern"):
        scoped_glob(chunks, "chunk_*", direction="long")
    with pytest.raises(ParamError, match="no pattern"):
        scoped_glob(tmp_path, phase="a")


# ---- append_ndjson / read_ndjson --------------------------------------------------------


def test_append_ndjson_block_and_read_back(tmp_path):
    log = tmp_path / "logs" / "progress.ndjson"
    assert append_ndjson(log, [{"step": 1}, {"step": 2, "note": "a\nb"}]) == 2
    assert append_ndjson(log, iter([{"step": 3}])) == 1
    assert log.read_text().count("\n") == 3
    assert [r["step"] for r in read_ndjson(log)] == [1, 2, 3]
    assert Path(f"{log}.lock").exists()


def test_append_ndjson_nothing_or_unserializable_appends_nothing(tmp_path):
    log = tmp_path / "p.ndjson"
    assert append_ndjson(log, []) == 0
    assert not log.exists()
    with pytest.raises(JobkitError, match="record 1 is not JSON"):
        append_ndjson(log, [{"ok": 1}, {"bad": object()}])
    assert not log.exists()


def test_read_ndjson_skips_torn_lines(tmp_path):
    log = tmp_path / "p.ndjson"
    assert list(read_ndjson(log)) == []
    log.write_bytes(b'{"a":1}\n{"a":\n{"a":2}\n{"a":3')  # torn middle, unfinished last
    assert list(read_ndjson(log)) == [{"a": 1}, {"a": 2}]


# ---- validate_merged (INV-9) ------------------------------------------------------------


def test_validate_merged_accepts_expected_values():
    rows = [{"direction": "long"}] * 3
    assert validate_merged(rows, "direction", {"long"}) == {"long": 3}


def test_validate_merged_lists_unexpected_values_with_counts():
    rows = ([{"direction": "long"}] * 5 + [{"direction": "short"}] * 3
            + [{"direction": "B_reverse"}] + [{"other": 1}])
    with pytest.raises(ContaminationError) as err:
        validate_merged(rows, "direction", ["long"])
    msg = str(err.value)
    assert "'short' x3, 'B_reverse' x1, <missing> x1" in msg
    assert "expected only {'long'}" in msg and "scoped_glob" in msg


def test_validate_merged_empty_and_bad_rows():
    with pytest.raises(ContaminationError, match="is empty"):
        validate_merged([], "direction", {"long"})
    assert validate_merged([], "direction", {"long"}, allow_empty=True) == {}
    with pytest.raises(JobkitError, match="row 0 is a str"):
        validate_merged(["long"], "direction", {"long"})  # type: ignore[list-item]


def test_validate_values_for_plain_sequences():
    assert validate_values(["A_mirrored", "B_reverse"], {"A_mirrored", "B_reverse"})
    with pytest.raises(ContaminationError, match="'standard' x2"):
        validate_values(["A_mirrored", "standard", "standard"], {"A_mirrored"})


# ---- stdlib only ------------------------------------------------------------------------


def test_import_pulls_in_only_the_standard_library():
    code = ("import sys; before = set(sys.modules); import jobsafe_ops.jobkit; "
            "print('\\n'.join(sorted(set(sys.modules) - before)))")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, check=True).stdout.split()
    ours = {m for m in out if m.split(".")[0] == "jobsafe_ops"}
    assert ours and all(m == "jobsafe_ops" or m.startswith("jobsafe_ops.jobkit")
                        for m in ours), ours
    foreign = [m for m in out if m.split(".")[0] not in sys.stdlib_module_names
               and m.split(".")[0] != "jobsafe_ops" and not m.startswith("_")]
    assert foreign == []
    assert not {"fabric", "invoke", "rich", "paramiko", "tenacity"} & {m.split(".")[0]
                                                                      for m in out}


def test_encode_value_is_stable():
    # Checkpoints written by one release must be found by the next: pin the encoding.
    assert encode_value("BTC/USD_1 %") == "BTC%2FUSD%5F1%20%25"
    assert encode_value(2.5) == "2.5" and encode_value("é") == "%C3%A9"
