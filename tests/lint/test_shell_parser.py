"""The shell checks on tree-sitter-bash: commands inside functions and `case`, remote code
(ssh heredocs, `ssh host "..."`, `cat <<EOF | ssh`), columns, broken files, and the
ordinary scripts that must stay quiet."""

from __future__ import annotations

import textwrap

import pytest

from jobsafe_ops.lint.run import lint_text


def found(text: str, kind: str = "shell") -> list[tuple[int, int, str]]:
    text = textwrap.dedent(text).lstrip("\n")
    return [(f.line, f.col, f.rule) for f in lint_text("f.sh", kind, text)]


def rules(text: str) -> list[str]:
    return [r for _, _, r in found(text)]


def test_pueue_calls_inside_functions_and_case_arms() -> None:
    assert found("""
        retry() {
          pueue restart --in-place "$1"
        }
        case "$mode" in
          all) pueue parallel 0 -g p1 ;;
          *) echo "$mode" ;;
        esac
        """) == [(2, 3, "pueue-restart"), (5, 8, "parallel-zero")]


def test_columns_point_at_the_command() -> None:
    assert found('echo start; pueue restart "$id"\n') == [(1, 13, "pueue-restart")]
    # inside an `ssh host "..."` string: the column of the command within the string
    assert found('ssh h "cd /p; pueue restart $id"\n') == [(1, 15, "pueue-restart")]
    # a non-ASCII line: columns count characters, not bytes
    assert found('echo "é"; pueue parallel 0\n') == [(1, 11, "parallel-zero")]


def test_substitutions_pipelines_and_lists_are_walked() -> None:
    assert rules('x=$(pueue log 14)\necho `pueue restart "$i"`\n'
                 'true && pueue parallel 0 | cat\n') == [
        "hardcoded-task-id", "pueue-restart", "parallel-zero"]


def test_ssh_heredoc_body_is_the_remote_program() -> None:
    assert found("""
        ssh h bash -s <<'EOF'
        cd ~/p
        pueue add -- run
        EOF
        ssh h <<EOF
        pueue add -- run
        EOF
        """) == [(6, 1, "remote-add-without-workdir")]
    # a heredoc fed to a local `cat` is data, not code
    assert found("cat <<'EOF' > notes.txt\npueue restart 3\nEOF\n") == []


def test_heredoc_piped_into_ssh_and_bash_c() -> None:
    assert found("cat <<EOF | ssh h bash\npueue add -- x\nEOF\n") == [
        (2, 1, "remote-add-without-workdir")]
    assert found("bash -c 'pueue parallel 0 -g p1'\n") == [(1, 10, "parallel-zero")]


def test_ssh_heredoc_in_a_loop_is_per_job() -> None:
    assert found("""
        for s in A B; do
          ssh h bash <<EOF
        pueue add -w /p -- run $s
        EOF
        done
        """) == [(2, 3, "ssh-per-job")]


@pytest.mark.parametrize("script", [
    "if [ x; then\n  echo hi\n",
    "if [ -f x ]; then\n  echo hi\n",
    "while true; do\n  echo\n",
    "echo )\n",
    "[ -f x && rm -f x\n",
])
def test_a_broken_script_is_a_syntax_error(script: str) -> None:
    found_rules = rules(script)
    assert found_rules[:1] == ["syntax-error"]


def test_syntax_error_message_and_position() -> None:
    [f] = lint_text("f.sh", "shell", "echo ok\nif [ x; then echo; fi\n")
    assert (f.line, f.col, f.rule) == (2, 4, "syntax-error")
    assert "`[` without its closing `]`" in f.message
    [f] = lint_text("f.sh", "shell", "while true; do\n  echo\n")
    assert f.rule == "syntax-error" and "bash:" in f.message  # bash -n agrees


@pytest.mark.parametrize("script", [
    "case $x in a|b) echo ;; esac\n",
    "f() { local -a xs=(1 2); echo \"${xs[@]}\"; }\n",
    "[[ $a =~ ^[0-9]+$ ]] && echo ok\n",
    "cat <<-EOF\n\thi\n\tEOF\n",
    "for ((i = 0; i < 3; i++)); do echo $i; done\n",
    "while read -r a b; do echo \"$a\"; done < <(sort x)\n",
    "echo $(( 1 + 2 )) ${x:-y} ${#x} ${x//a/b}\n",
])
def test_valid_bash_is_not_a_syntax_error(script: str) -> None:
    assert found(script) == []


@pytest.mark.parametrize("script", [
    "find . -name '*.pyc' -delete",
    "cat logs/*.log > all.log",
    'rm "$DIR"/*.tmp',
    "rm x",
    "rm -r build",
    "rm notes.txt old.log",
    "find /tmp -name '*.tmp' -mtime +1 -exec rm {} +",
    'echo "pueue restart 3"',
    "grep -c pueue notes.txt",
])
def test_ordinary_scripts_are_quiet(script: str) -> None:
    assert found(script + "\n") == []


def test_the_seed_patterns_still_fire() -> None:
    assert rules("rm out/cursor.json\n") == ["delete-without-missing-ok"]
    assert rules("rm run.lock\n") == ["delete-without-missing-ok"]
    assert rules("rm -f out/_chunk_*.parquet\n") == ["unscoped-glob-delete"]
    assert rules("find out -name '*.parquet' -delete\n") == ["unscoped-glob-delete"]
    assert rules("cat out/*.csv > all.csv\n") == ["unscoped-glob-delete"]


def test_shell_findings_carry_a_shell_fix() -> None:
    for text in ("rm -f out/_chunk_*.parquet\n", "rm out/cursor.json\n",
                 'echo "$pos" > "$CURSOR"\n', 'python job.py && rm -f "$CURSOR"\n'):
        [f] = lint_text("f.sh", "shell", text)
        assert "f\"" not in f.fix and "unlink" not in f.fix and "os.replace" not in f.fix, f
    [f] = lint_text("f.py", "python", "import glob, os\nfor p in glob.glob('*.parquet'):\n"
                                      "    os.remove(p)\n")[:1]
    assert f.rule == "unscoped-glob-delete" and 'f"_chunk_{direction}' in f.fix


def test_every_file_of_the_project_parses() -> None:
    """tree-sitter-bash (and ast, tomllib) read every file of this repo; only the
    deliberately malformed TOML fixtures are syntax errors."""
    from pathlib import Path

    from jobsafe_ops.lint.config import LintConfig, pattern
    from jobsafe_ops.lint.run import run_lint

    repo = Path(__file__).resolve().parents[2]
    report = run_lint([str(repo)], LintConfig(exclude=(pattern("tests/data/bad_input", repo),)))
    assert report.files > 100
    assert [f for f in report.findings if f.rule in ("syntax-error", "io-error")] == []
