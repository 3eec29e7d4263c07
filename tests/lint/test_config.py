"""Configuration ([tool.jobsafe.lint], jobsafe.toml [lint], the same as flags), file-level
suppression, baselines, and going on past files that cannot be read or parsed - through the
real `jobsafe lint` where the behaviour is the command's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jobsafe_ops.errors import ConfigError
from jobsafe_ops.lint import config as lint_config
from jobsafe_ops.lint.run import lint_text
from tests.jsonout import envelope_of, result_of

BIN = Path(sys.executable).parent


def jobsafe(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    env.pop("JOBSAFE_INVENTORY", None)
    return subprocess.run([str(BIN / "jobsafe"), "lint", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def rules_of(r: subprocess.CompletedProcess[str]) -> list[tuple[str, str]]:
    return [(f["file"], f["rule"]) for f in result_of(r.stdout)["findings"]]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "retry.sh").write_text('pueue restart "$id"\n')
    (tmp_path / "scripts" / "scale.sh").write_text("pueue parallel 0 -g p1\n")
    (tmp_path / "legacy").mkdir()
    (tmp_path / "legacy" / "old.sh").write_text("pueue parallel 0\n")
    return tmp_path


ALL = [("legacy/old.sh", "parallel-zero"), ("scripts/retry.sh", "pueue-restart"),
       ("scripts/scale.sh", "parallel-zero")]


def test_pyproject_table_selects_ignores_excludes(repo: Path) -> None:
    assert rules_of(jobsafe("--json", cwd=repo)) == ALL
    (repo / "pyproject.toml").write_text(
        '[project]\nname = "x"\n\n[tool.jobsafe.lint]\nexclude = ["legacy"]\n'
        'per-file-ignores = { "scripts/retry.sh" = ["pueue-restart"] }\n')
    assert rules_of(jobsafe("--json", cwd=repo)) == [("scripts/scale.sh", "parallel-zero")]
    # exclude holds for a named file too (pre-commit names files)
    r = jobsafe("--json", "--", "legacy/old.sh", cwd=repo)
    assert r.returncode == 0 and rules_of(r) == []
    (repo / "pyproject.toml").write_text('[tool.jobsafe.lint]\nselect = ["pueue-restart"]\n')
    assert rules_of(jobsafe("--json", cwd=repo)) == [("scripts/retry.sh", "pueue-restart")]
    # from a subdirectory: the same config, patterns relative to it
    (repo / "pyproject.toml").write_text('[tool.jobsafe.lint]\nignore = ["parallel-zero"]\n')
    assert rules_of(jobsafe("--json", "--", ".", cwd=repo / "scripts")) == [
        ("retry.sh", "pueue-restart")]


def test_jobsafe_toml_lint_table(repo: Path) -> None:
    (repo / "jobsafe.toml").write_text('connect_timeout = 5\n\n[lint]\n'
                                       'ignore = ["parallel-zero"]\n')
    assert rules_of(jobsafe("--json", cwd=repo)) == [("scripts/retry.sh", "pueue-restart")]
    # the other commands still read that jobsafe.toml ([lint] is an allowed key)
    from jobsafe_ops.config import load_settings
    assert load_settings(repo).connect_timeout == 5


def test_flags_say_the_same(repo: Path) -> None:
    assert rules_of(jobsafe("--json", "--exclude", "legacy", "--per-file-ignores",
                            "scripts/retry.sh:pueue-restart", cwd=repo)) == [
        ("scripts/scale.sh", "parallel-zero")]
    assert rules_of(jobsafe("--json", "--select", "pueue-restart", cwd=repo)) == [
        ("scripts/retry.sh", "pueue-restart")]
    assert rules_of(jobsafe("--json", "--ignore", "parallel-zero", cwd=repo)) == [
        ("scripts/retry.sh", "pueue-restart")]
    # after `--` too (a pre-commit hook's args come before the file names)
    assert rules_of(jobsafe("--", "--ignore", "parallel-zero", "--output-format", "json",
                            "scripts", cwd=repo)) == [("scripts/retry.sh", "pueue-restart")]
    # --select on the command line replaces the file's select
    (repo / "pyproject.toml").write_text('[tool.jobsafe.lint]\nselect = ["pueue-restart"]\n')
    assert rules_of(jobsafe("--json", "--select", "parallel-zero", "--exclude", "legacy",
                            cwd=repo)) == [("scripts/scale.sh", "parallel-zero")]


@pytest.mark.parametrize("text, error", [
    ('[tool.jobsafe.lint]\nselct = ["x"]\n', "unknown key 'selct'"),
    ('[tool.jobsafe.lint]\nignore = ["pueue-restrat"]\n', "unknown rule 'pueue-restrat'"),
    ('[tool.jobsafe.lint]\nexclude = "legacy"\n', "exclude must be a list of strings"),
    ('[tool.jobsafe.lint]\nwith-shellcheck = "yes"\n', "with-shellcheck must be true or false"),
])
def test_bad_config_is_one_line_exit_2(repo: Path, text: str, error: str) -> None:
    (repo / "pyproject.toml").write_text(text)
    r = jobsafe(cwd=repo)
    assert r.returncode == 2 and r.stdout == ""
    [line] = r.stderr.strip().splitlines()
    assert error in line and "pyproject.toml [tool.jobsafe.lint]" in line


def test_bad_flags_are_exit_2(repo: Path) -> None:
    r = jobsafe("--select", "nope", cwd=repo)
    assert r.returncode == 2 and "--select: unknown rule 'nope'" in r.stderr
    r = jobsafe("--per-file-ignores", "no-colon", cwd=repo)
    assert r.returncode == 2 and "PATTERN:RULE" in r.stderr
    for args in (["--bogus", "scripts"], ["--select"]):  # after `--`: one line too
        r = jobsafe("--", *args, cwd=repo)
        assert r.returncode == 2 and r.stdout == ""
        [line] = r.stderr.strip().splitlines()
        assert line.startswith("error: lint: after `--`: ")


def test_patterns() -> None:
    base = Path("/r")
    assert lint_config.pattern("legacy", base).matches(Path("/r/a/legacy/x.sh"))
    assert lint_config.pattern("*.bash", base).matches(Path("/r/a/x.bash"))
    assert not lint_config.pattern("*.bash", base).matches(Path("/r/a/x.sh"))
    assert lint_config.pattern("vendor/*.sh", base).matches(Path("/r/vendor/x.sh"))
    assert not lint_config.pattern("vendor/*.sh", base).matches(Path("/r/a/vendor/x.sh"))
    assert lint_config.pattern("scripts/**/old_*.sh", base).matches(Path("/r/scripts/a/b/old_1.sh"))
    assert lint_config.pattern("scripts/", base).matches(Path("/r/scripts/a/x.sh"))


def test_ignore_file_suppresses_the_rule_in_the_whole_file() -> None:
    text = '#!/bin/bash\n# jobsafe: ignore-file[pueue-restart]\npueue restart "$a"\n' \
           'pueue parallel 0\n'
    assert [f.rule for f in lint_text("f.sh", "shell", text)] == ["parallel-zero"]
    py = ('"""doc"""\n# jobsafe: ignore-file[delete-without-missing-ok]\n'
          'from pathlib import Path\nPath("a").unlink()\n')
    assert lint_text("f.py", "python", py) == []
    # a typo, or one buried below the top, is reported and suppresses nothing
    bad = "# jobsafe: ignore-file[pueue-restrat]\npueue restart \"$a\"\n"
    assert [f.rule for f in lint_text("f.sh", "shell", bad)] == ["unknown-suppression",
                                                                  "pueue-restart"]
    late = "\n" * 12 + "# jobsafe: ignore-file[pueue-restart]\npueue restart \"$a\"\n"
    assert [f.rule for f in lint_text("f.sh", "shell", late)] == ["unknown-suppression",
                                                                   "pueue-restart"]


def test_baseline_adopts_the_existing_findings(repo: Path) -> None:
    r = jobsafe("--add-baseline", "lint-baseline.json", cwd=repo)
    assert r.returncode == 0 and "wrote 3 finding(s)" in r.stderr
    doc = json.loads((repo / "lint-baseline.json").read_text())
    assert {x["file"] for x in doc["findings"]} == {f for f, _ in ALL}
    assert '"$id"' not in (repo / "lint-baseline.json").read_text()  # hashes, not lines
    r = jobsafe("--baseline", "lint-baseline.json", cwd=repo)
    assert r.returncode == 0 and "clean: 3 file(s) checked (3 in the baseline)" in r.stdout
    # lines moving keep their findings known; a new finding is reported
    retry = repo / "scripts" / "retry.sh"
    retry.write_text('echo first\n\npueue restart "$id"\npueue log 14\n')
    r = jobsafe("--json", "--baseline", "lint-baseline.json", cwd=repo)
    assert r.returncode == 1 and rules_of(r) == [("scripts/retry.sh", "hardcoded-task-id")]
    # a second copy of a known line is new
    retry.write_text('pueue restart "$id"\npueue restart "$id"\n')
    r = jobsafe("--json", "--baseline", "lint-baseline.json", cwd=repo)
    assert rules_of(r) == [("scripts/retry.sh", "pueue-restart")]
    # from another directory: the baseline's paths are relative to the baseline file
    r = jobsafe("--json", "--baseline", str(repo / "lint-baseline.json"), "--",
                str(repo / "legacy"), cwd=repo / "scripts")
    assert r.returncode == 0, r.stdout
    r = jobsafe("--baseline", "missing.json", cwd=repo)
    assert r.returncode == 2 and "--add-baseline missing.json" in r.stderr


def test_keeps_going_past_unparsable_and_unreadable_files(repo: Path) -> None:
    (repo / "bad.py").write_text("def f(:\n    pass\n")
    (repo / "bad.toml").write_text('name = "x"\ncommand = \n')
    (repo / "broken.sh").write_text("if [ x; then\n  echo\n")
    (repo / "gone.sh").symlink_to(repo / "nowhere.sh")
    r = jobsafe("--json", cwd=repo)
    assert r.returncode == 2, r.stderr
    doc = envelope_of(r.stdout)
    assert doc["exit_code"] == 2 and doc["error"] is None
    got = [(f["file"], f["line"], f["col"], f["rule"]) for f in doc["result"]["findings"]]
    assert ("bad.py", 1, 7, "syntax-error") in got
    assert ("bad.toml", 2, 11, "syntax-error") in got
    assert ("broken.sh", 1, 4, "syntax-error") in got
    assert ("gone.sh", 1, 1, "io-error") in got
    # ... and every other file was checked
    assert {(f, r) for f, _, _, r in got} >= set(ALL)
    assert doc["result"]["summary"]["unchecked_files"] == 4
    text = jobsafe(cwd=repo)
    assert text.returncode == 2 and "4 file(s) could not be read or parsed" in text.stdout
    # they are not configurable away: --ignore syntax-error still exits 2
    assert jobsafe("--ignore", "syntax-error", cwd=repo).returncode == 2


def test_a_missing_path_is_bad_input(repo: Path) -> None:
    r = jobsafe("--", "scripts", "missing.sh", cwd=repo)
    assert r.returncode == 2 and r.stdout == ""
    assert "missing.sh: no such file or directory" in r.stderr


def test_config_loader_errors_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "jobsafe.toml").write_text("[lint]\nignore = []\n")
    (tmp_path / "pyproject.toml").write_text("[tool.jobsafe.lint]\nignore = []\n")
    with pytest.raises(ConfigError, match="both configure lint"):
        lint_config.load(start=tmp_path)
    with pytest.raises(ConfigError, match="--config nope.toml: no such file"):
        lint_config.load("nope.toml")
