"""`inv lint`: every rule finds its anti-pattern (right line, right id) and leaves the
correct pattern alone; suppression; JSON; exit codes through the real `inv`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

from jobsafe_ops.batch.plan import commands_file, decide
from jobsafe_ops.batch.playbook import parse_playbook, plan_batch
from jobsafe_ops.errors import ConfigError
from jobsafe_ops.inventory import GroupSpec, Host
from jobsafe_ops.lint.rules import RULES
from jobsafe_ops.lint.run import discover, kind_of, lint_cmd, lint_text, run_lint
from jobsafe_ops.scheduler.pueue import parse_state
from tests.jsonout import result_of

REPO = Path(__file__).resolve().parents[2]


def hits(kind: str, text: str) -> list[tuple[int, str]]:
    text = textwrap.dedent(text).lstrip("\n")
    return [(f.line, f.rule) for f in lint_text("f", kind, text)]


def sh(text: str) -> list[tuple[int, str]]:
    return hits("shell", text)


def py(text: str) -> list[tuple[int, str]]:
    return hits("python", text)


def rules(found: list[tuple[int, str]]) -> set[str]:
    return {r for _, r in found}


# ---- check-then-delete / delete-without-missing-ok (INV-3) -------------------------------

def test_check_then_delete_python() -> None:
    found = py("""
        import os
        def f(p, q):
            if p.exists():
                p.unlink()
            if os.path.exists(q):
                os.remove(q)
        """)
    assert found == [(3, "check-then-delete"), (5, "check-then-delete")]


def test_check_then_delete_shell() -> None:
    assert sh('[ -f "$F" ] && rm "$F"\n') == [(1, "check-then-delete")]
    assert sh('if [ -e out.json ]; then\n  rm out.json\nfi\n') == [(2, "check-then-delete")]


def test_idempotent_delete_is_clean() -> None:
    assert py("""
        import contextlib, os
        def f(p, q):
            p.unlink(missing_ok=True)
            if p.exists():
                p.unlink(missing_ok=True)
            try:
                os.remove(q)
            except FileNotFoundError:
                pass
            with contextlib.suppress(FileNotFoundError):
                os.unlink(q)
        """) == []
    assert sh('rm -f "$F"\n[ -f "$F" ] && rm -f "$F"\nrm -rf "$DIR"\n') == []


def test_delete_without_missing_ok() -> None:
    assert py("""
        import os
        from pathlib import Path
        Path("a").unlink()
        os.remove("b")
        """) == [(3, "delete-without-missing-ok"), (4, "delete-without-missing-ok")]
    assert sh("rm out.json\n") == [(1, "delete-without-missing-ok")]


# ---- non-atomic-checkpoint-write (INV-4) -------------------------------------------------

def test_non_atomic_checkpoint_write() -> None:
    assert py("""
        import json
        def save(ckpt_path, data):
            with open(ckpt_path, "w") as f:
                json.dump(data, f)
        def save_progress(path, n):
            path.write_text(str(n))
        """) == [(3, "non-atomic-checkpoint-write"), (6, "non-atomic-checkpoint-write")]
    assert sh('echo "$pos" > "$CURSOR_FILE"\n') == [(1, "non-atomic-checkpoint-write")]


def test_atomic_checkpoint_write_is_clean() -> None:
    assert py("""
        import json, os, tempfile
        def atomic_write(path, data):
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".ckpt_", suffix=".tmp")
            with os.fdopen(fd, "w") as f:
                json.dump(data, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        def save_state(path, text):
            tmp = path.with_suffix(".tmp")
            tmp.write_text(text)
            tmp.replace(path)
        def report(out, text):
            open(out / "report.txt", "w").write(text)
        def run_resumable_job(out, result):
            (out / "result.json").write_text(result)
        """) == []
    assert sh('echo "$pos" > "$CURSOR.tmp" && mv "$CURSOR.tmp" "$CURSOR"\n'
              'echo done >> progress.log\n') == []


# ---- unscoped-glob-delete (INV-9, AP-17) -------------------------------------------------

def test_unscoped_glob_feeding_delete_or_merge() -> None:
    found = py("""
        import glob, os
        import pandas as pd
        def merge(out):
            files = sorted(glob.glob(f"{out}/_chunk_*.parquet"))
            return pd.concat([pd.read_parquet(f) for f in files])
        def clean(out):
            for p in out.glob("*.json"):
                os.remove(p)
        """)
    assert found == [(4, "unscoped-glob-delete"), (7, "unscoped-glob-delete"),
                     (8, "delete-without-missing-ok")]
    assert sh("rm -f out/*.parquet\nfind \"$OUT\" -name '_chunk_*.parquet' -delete\n"
              "cat out/*.jsonl > all.jsonl\n") == [
        (1, "unscoped-glob-delete"), (2, "unscoped-glob-delete"), (3, "unscoped-glob-delete")]


def test_scoped_or_read_only_glob_is_clean() -> None:
    assert py("""
        import glob
        import pandas as pd
        def merge(out, direction, phase):
            files = glob.glob(f"{out}/_chunk_{direction}_*.parquet")
            df = pd.concat([pd.read_parquet(f) for f in files])
            for p in (out / phase).glob("*.json"):
                p.unlink(missing_ok=True)
            print(len(glob.glob(f"{out}/*.parquet")))
            return df
        """) == []
    assert sh('rm -f "$OUT/${PHASE}"_*.parquet "$OUT/$PHASE"/*.json\nls out/*.json\n') == []


# ---- pueue usage --------------------------------------------------------------------------

def test_pueue_restart() -> None:
    assert sh("pueue restart --in-place \"$id\"\n") == [(1, "pueue-restart")]
    assert py('import subprocess\nsubprocess.run(["pueue", "restart", id_])\n') == [
        (2, "pueue-restart")]


def test_fresh_retry_and_docstrings_are_clean() -> None:
    assert sh('pueue add -w "$P" --label "$label-retry-1" -- run\n') == []
    assert py('"""Never `pueue restart`: add a fresh task."""\n') == []


@pytest.mark.parametrize("line", [
    "pueue status --json | jq '.tasks.\"14\".status'",
    "pueue status --json | jq '.tasks[\"14\"]'",
    'pueue status | grep "^14|"',
    "pueue log 14",
    "pueue kill -s SIGTERM 7",
    'pueue add -w "$P" --after 14 -- optimize',
    "pueue env set 3 KEY value",
])
def test_hardcoded_task_id(line: str) -> None:
    assert sh(line + "\n") == [(1, "hardcoded-task-id")]


def test_task_ids_from_this_session_or_options_are_clean() -> None:
    assert sh('id=$(pueue add -p -w "$P" -- run)\npueue add -w "$P" --after "$id" -- opt\n'
              "pueue log --lines 20\npueue parallel 4 -g p1\npueue start -g p1\n") == []
    assert py('state = {}\nstate["tasks"]["14"]\n') == [(2, "hardcoded-task-id")]
    assert py('by_label = {}\nby_label["14"]\n') == []


def test_ssh_per_job() -> None:
    found = sh("""
        for s in A B; do
          ssh bigblack "cd ~/p && pueue add -- run $s"
        done
        xargs -I{} ssh bigblack pueue add -w /p -- run {} < jobs
        """)
    assert found == [(2, "ssh-per-job"), (4, "ssh-per-job")]
    assert py("""
        import subprocess
        def submit(conn, jobs):
            for j in jobs:
                conn.run(f"pueue add -w /p -- {j}")
        """) == [(4, "ssh-per-job")]


def test_one_session_feeding_on_the_host_is_clean() -> None:
    assert sh("""
        scp jobs.tsv h:/tmp/jobs.tsv
        ssh h bash -s <<'EOF'
        while read -r label cmd; do
          pueue add -w /p --label "$label" -- $cmd
        done < /tmp/jobs.tsv
        EOF
        ssh h python3 feeder.py feed commands.jsonl
        """) == []


def test_remote_add_without_workdir() -> None:
    assert sh('ssh h "pueue add -- python scripts/run.py"\n') == [
        (1, "remote-add-without-workdir")]
    assert sh("ssh h bash <<EOF\npueue add -- run\nEOF\n") == [
        (2, "remote-add-without-workdir")]


def test_remote_add_with_workdir_or_cd_is_clean() -> None:
    assert sh('ssh h "pueue add -w ~/p -- run"\nssh -p 22 h "cd ~/p && pueue add -- run"\n'
              "ssh h ~/.local/bin/pueue add --working-directory=/p -- run\n") == []


def test_env_override_add() -> None:
    assert sh('env THREADS=4 pueue add -w /p -- run\nTHREADS=4 pueue add -w /p -- run\n') == [
        (1, "env-override-add"), (2, "env-override-add")]


def test_lean_env_and_in_command_env_are_clean() -> None:
    assert sh('env -i HOME="$HOME" PATH="$PATH" pueue add -w /p -- run\n'
              'pueue add -w /p -- env PATH="$HOME/.cargo/bin:$PATH" run\n') == []


def test_pipefail_head() -> None:
    assert sh("set -euo pipefail\nls out | head -3\n") == [(2, "pipefail-head")]
    assert sh("set -o errexit -o pipefail\nfind . -print0 | head -z -n 1\n") == [
        (2, "pipefail-head")]


def test_head_without_pipefail_or_on_a_file_is_clean() -> None:
    assert sh("ls out | head -3\n") == []
    assert sh("set -euo pipefail\nls out > l.txt\nhead -n 3 l.txt\n"
              "set +o pipefail\nls | head\n") == []


def test_parallel_zero() -> None:
    assert sh("pueue parallel 0 -g p1\npueue parallel --group p2 0\n") == [
        (1, "parallel-zero"), (2, "parallel-zero")]
    assert sh("pueue parallel 1 -g p1\n") == []


def test_memorymax_without_swapmax() -> None:
    assert sh("systemd-run --user --scope -p MemoryMax=8G \\\n  python x.py\n") == [
        (1, "memorymax-without-swapmax")]
    assert sh("systemd-run --user --scope -p MemoryMax=8G -p MemorySwapMax=0 python x.py\n"
              ) == []


def test_container_memory_without_swap_limit() -> None:
    assert sh("docker run --rm -m 8g img python x.py\n") == [(1, "memory-without-swap-limit")]
    assert sh("sudo podman run --memory=2G --memory-swap -1 img run\n") == [
        (1, "memory-without-swap-limit")]  # -1: unlimited swap
    assert sh("docker container run -m4g --memory-swap=8g img run\n") == [
        (1, "memory-without-swap-limit")]  # 4 GB of swap on top
    assert sh("docker run -m 8g --memory-swap 8G img python x.py\n") == []
    assert sh("docker run --rm img python -m x\n") == []  # no cap asked for: not this rule
    assert sh("docker ps -m 3\n") == [] and sh("docker build -m 2g .\n") == []
    # Slurm's --mem has no per-job swap limit: the cluster's cgroup.conf is judged by probe
    assert sh("sbatch --array=0-9%2 --mem=1G job.sh\n") == []


# ---- cursor-deleted-on-success (AP-15, G-17) ---------------------------------------------

def test_cursor_deleted_on_success() -> None:
    assert py("""
        def run(items, ckpt):
            for i in items:
                print(i)
            ckpt.unlink(missing_ok=True)
        def job(cursor_path):
            try:
                work()
            except OSError:
                raise
            else:
                cursor_path.unlink(missing_ok=True)
        """) == [(4, "cursor-deleted-on-success"), (11, "cursor-deleted-on-success")]
    assert sh('python job.py && rm -f "$CURSOR"\nif python job.py; then\n'
              '  rm -f "$CHECKPOINT"\nfi\n') == [
        (1, "cursor-deleted-on-success"), (3, "cursor-deleted-on-success")]


def test_cursor_kept_or_reset_on_purpose_is_clean() -> None:
    assert py("""
        def run(items, ckpt, force_refresh):
            if force_refresh:
                ckpt.unlink(missing_ok=True)
            try:
                data = ckpt.read_text()
            except ValueError:
                ckpt.unlink(missing_ok=True)
            for i in items:
                print(i)
            # the cursor stays: the next run resumes (AP-15)
        """) == []
    assert sh('if [ "$FORCE_REFRESH" = 1 ]; then\n  rm -f "$CURSOR"\nfi\n'
              'python job.py || rm -f "$CURSOR.tmp"\n') == []


# ---- TOML: mise and playbooks -------------------------------------------------------------

def test_mise_env_secret() -> None:
    text = '[env]\n_.file = ".env"\nMYPKG_THREADS = "4"\nGH_TOKEN = "ghp_x"\n'
    assert hits("mise", text) == [(4, "mise-env-secret")]
    assert hits("mise", '[env]\n_.file = ".env"\nMYPKG_THREADS = "4"\n') == []
    assert hits("toml", text) == []  # a playbook's [env] is exported per job, not mise


def test_commands_inside_toml_keep_their_line() -> None:
    playbook = ('name = "x"\ngroup = "p1"\ncommand = "run {symbol}"\n\n[[after]]\n'
                'label = "x:fix"\ncommand = "pueue restart --failed-in-group p1"\n')
    assert hits("toml", playbook) == [(7, "pueue-restart")]
    mise = '[tasks.go]\nrun = [\n  "inv deploy --host h",\n  "pueue parallel 0 -g p1",\n]\n'
    assert hits("mise", mise) == [(4, "parallel-zero")]


# ---- commands files -----------------------------------------------------------------------

def test_commands_file_one_job_per_line() -> None:
    text = "# one job per line\nrun --symbol A\nrun --symbol B && rm -f cursor.json\n"
    assert hits("commands", text) == [(3, "cursor-deleted-on-success")]
    jsonl = (json.dumps({"label": "a", "command": "run a"}) + "\n" +
             json.dumps({"label": "u", "command": "unit", "unit_commands": [
                 {"label": "b", "command": "systemd-run -p MemoryMax=1G run b"}]}) + "\n")
    assert hits("commands-jsonl", jsonl) == [(2, "memorymax-without-swapmax")]


def test_submit_batch_commands_file_is_clean() -> None:
    """What submit-batch uploads for the repo's sweep playbook (capped) passes lint."""
    groups = {"p1": GroupSpec("p1", 2, 1, 4)}
    host = Host(name="h", ssh="local", project_dir="/home/ops/project", package="mypkg",
                groups=groups, memory_cap=True)
    pb = parse_playbook(tomllib.loads((REPO / "playbooks/sweep.toml").read_text()), "sweep")
    plan = plan_batch(pb, host)
    empty = parse_state({"tasks": {}, "groups": {"p1": {"status": "Running",
                                                       "parallel_tasks": 2}}})
    items = decide([*plan.jobs, *plan.after], empty, {}, budget=2)
    text = commands_file(items, wrap=True, units={})
    assert "MemorySwapMax=0" in text
    assert hits("commands-jsonl", text) == []


# ---- suppression ---------------------------------------------------------------------------

def test_suppression_on_the_line_or_the_line_above() -> None:
    assert sh("pueue restart 3  # jobsafe: ignore[pueue-restart,hardcoded-task-id]\n") == []
    assert sh("# jobsafe: ignore[pueue-restart]\npueue restart \"$id\"\n") == []
    assert sh("# jobsafe: ignore[pueue-restart]\n\npueue restart \"$id\"\n") == [
        (3, "pueue-restart")]
    assert py("from pathlib import Path\n"
              "Path('x').unlink()  # jobsafe: ignore[delete-without-missing-ok]\n") == []


def test_unknown_suppression_is_reported_and_suppresses_nothing() -> None:
    assert sh("pueue restart \"$id\"  # jobsafe: ignore[pueue-restrat]\n") == [
        (1, "pueue-restart"), (1, "unknown-suppression")]
    assert sh("# jobsafe: ignore\n") == [(1, "unknown-suppression")]
    # only comments count: a string showing the syntax neither suppresses nor is reported
    assert py('HELP = "# jobsafe: ignore[rule-id]"\n') == []
    assert sh('echo "# jobsafe: ignore[pueue-restart]"; pueue restart "$id"\n') == [
        (1, "pueue-restart")]


# ---- files, kinds, output -------------------------------------------------------------------

def test_kinds_by_name_and_shebang(tmp_path: Path) -> None:
    assert kind_of(Path("a.sh")) == "shell"
    assert kind_of(Path("submit"), "#!/usr/bin/env bash\n") == "shell"
    assert kind_of(Path("job"), "#!/usr/bin/env python3\n") == "python"
    assert kind_of(Path(".mise.toml")) == "mise" and kind_of(Path("mise.local.toml")) == "mise"
    assert kind_of(Path("sweep.toml")) == "toml"
    assert kind_of(Path("commands.txt")) == "commands"
    assert kind_of(Path("jobs.cmds")) == "commands"
    assert kind_of(Path("commands.jsonl")) == "commands-jsonl"
    assert kind_of(Path("notes.txt")) is None
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / "x.sh").write_text("pueue restart 1\n")
    (tmp_path / "run").write_text("#!/bin/sh\npueue parallel 0\n")
    (tmp_path / "README.md").write_text("pueue restart 1\n")
    assert [(p.name, k) for p, k in discover([str(tmp_path)])] == [("run", "shell")]
    with pytest.raises(ConfigError, match="README.md: not a shell script"):
        discover([str(tmp_path / "README.md")])
    with pytest.raises(ConfigError, match="nope: no such file"):
        discover([str(tmp_path / "nope")])


def test_json_shape(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a.sh").write_text("set -o pipefail\nls | head\n")
    assert lint_cmd([f"{tmp_path / 'a.sh'},{tmp_path}"], json_out=True) == 1
    out = result_of(capsys.readouterr().out)
    assert out["summary"] == {"files": 1, "findings": 1, "by_rule": {"pipefail-head": 1},
                              "unchecked_files": 0, "shellcheck": "off",
                              "baseline_suppressed": 0}
    f = out["findings"][0]
    assert (f["line"], f["col"], f["rule"], f["severity"]) == (2, 6, "pipefail-head", "warning")
    assert f["guards"] == ["AP-13", "G-13"] and f["fix"] and f["file"].endswith("a.sh")


def test_every_rule_names_its_fix_and_guards() -> None:
    for rule in RULES.values():
        assert rule.fix and rule.catches
        assert rule.guards or rule.id in ("unknown-suppression", "syntax-error", "io-error")


def test_project_playbooks_and_examples_are_clean() -> None:
    report = run_lint([str(REPO / "playbooks"), str(REPO / "examples")])
    assert report.files >= 4 and report.findings == ()


# ---- the real `inv` ------------------------------------------------------------------------

def inv(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "invoke", "-r", str(REPO), "lint", *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_inv_lint_exit_codes_and_path_forms(tmp_path: Path) -> None:
    bad = tmp_path / "bad.sh"
    bad.write_text("#!/bin/bash\npueue parallel 0 -g p1\n")
    good = tmp_path / "good.sh"
    good.write_text("pueue parallel 2 -g p1\n")
    r = inv("--", "bad.sh", "good.sh", cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "bad.sh:2:1: error parallel-zero `pueue parallel 0` means unlimited " \
                       "parallelism"
    assert lines[1].startswith("    fix: `pueue parallel 1 -g G`")
    assert "1 finding(s) in 1 of 2 file(s)" in lines[-1]
    r = inv("--path", "good.sh", "--path", str(tmp_path / "good.sh") + ",good.sh", cwd=tmp_path)
    assert r.returncode == 0 and "clean: 1 file(s) checked" in r.stdout, r.stderr
    r = inv("--json", "--", "bad.sh", cwd=tmp_path)
    assert r.returncode == 1 and result_of(r.stdout)["summary"]["findings"] == 1
    r = inv("--", "missing.sh", cwd=tmp_path)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip().count("\n") == 0 and "missing.sh: no such file" in r.stderr


def test_readme_shows_formats_config_and_hook() -> None:
    import yaml

    readme = (REPO / "README.md").read_text()
    section = readme.split("### `jobsafe lint` (`inv lint`): the linter", 1)[1].split(
        "\n## ", 1)[0]
    for fmt in ("text", "json", "jsonl", "github", "sarif"):
        assert f"| `{fmt}`" in section
    toml = section.split("```toml\n", 1)[1].split("```", 1)[0]
    from jobsafe_ops.lint.config import parse
    cfg = parse(tomllib.loads(toml)["tool"]["jobsafe"]["lint"], "README", REPO)
    assert cfg.select and cfg.ignore and cfg.exclude and cfg.per_file_ignores
    hook = yaml.safe_load(section.split("```yaml\n", 1)[1].split("```", 1)[0])
    [shipped] = yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text())
    assert hook["repos"][0]["hooks"][0]["id"] == shipped["id"] == "jobsafe-lint"


def test_readme_lists_every_rule_and_its_suppression_example_works() -> None:
    readme = (REPO / "README.md").read_text()
    section = readme.split("### `inv lint` rules", 1)[1].split("\n## ", 1)[0]
    for rule in RULES:
        assert f"| `{rule}` |" in section
    example = next(ln for ln in section.splitlines() if "jobsafe: ignore[" in ln
                   and ln.startswith("rm "))
    assert sh(example + "\n") == []
    assert sh(example.split("#")[0] + "\n") == [(1, "unscoped-glob-delete")]


@pytest.mark.parametrize("rule", sorted(set(RULES) - {"io-error"}))
def test_every_rules_documented_example_is_flagged_and_its_fix_is_not(rule: str) -> None:
    """The --explain/SARIF examples are real: `bad` fires the rule, `good` does not (io-error
    is about permissions, not text)."""
    from jobsafe_ops.lint.docs import DOCS

    doc = DOCS[rule]
    pairs = [(doc.kind, doc.bad, doc.good)]
    if doc.py_bad:
        pairs.append(("python", "import glob, json, os, tempfile\nfrom pathlib import Path\n"
                      + doc.py_bad + "\n", doc.py_good))
    for kind, bad, good in pairs:
        prefix = bad.split(doc.py_bad)[0] if kind == "python" else ""
        assert rule in {f.rule for f in lint_text("f", kind, bad + "\n")}, (kind, bad)
        assert rule not in {f.rule for f in lint_text("f", kind, prefix + good + "\n")}, good
