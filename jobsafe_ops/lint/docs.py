"""Each rule's documentation: what it catches, why (the incident or number behind it; the
codes are defined in docs/glossary.md), the fix and an example. `jobsafe lint --explain
RULE` prints it; SARIF carries the same text as the rule's help."""

from __future__ import annotations

from dataclasses import dataclass

from .rules import INVARIANTS, RULES


@dataclass(frozen=True)
class Doc:
    why: str
    bad: str            # flagged (tests/lint checks that it is, and that `good` is not)
    good: str
    kind: str = "shell"  # the language of bad/good: shell | python | mise
    py_bad: str = ""    # the same in Python, where the rule checks Python too
    py_good: str = ""


DOCS: dict[str, Doc] = {
    "check-then-delete": Doc(
        "Idempotent cleanup (INV-3): `delete(path)` must not raise when "
        "the file is already gone. A test and then a delete is a race (TOCTOU): a sibling job "
        "deletes the file in between and this one fails with FileNotFoundError (AP-2: a "
        "checkpoint shared by two parameter sets, one deletes it, the other crashes).",
        '[ -f "$CKPT" ] && rm "$CKPT"', 'rm -f "$CKPT"',
        py_bad="if p.exists():\n    p.unlink()", py_good="p.unlink(missing_ok=True)"),
    "delete-without-missing-ok": Doc(
        "Idempotent cleanup (INV-3): a rerun, or a sibling job that "
        "cleaned first, finds the file gone; `unlink()` raises and `rm` fails (and stops a "
        "`set -e` script). Shell `rm` is checked only on job files: checkpoints, cursors, "
        "state, locks and data artifacts, not every `rm x`.",
        'rm "$OUT/cursor.json"', 'rm -f "$OUT/cursor.json"',
        py_bad="Path(ckpt).unlink()", py_good="Path(ckpt).unlink(missing_ok=True)"),
    "non-atomic-checkpoint-write": Doc(
        "Atomic state writes (INV-4): a checkpoint is always the complete "
        "old or the complete new state. Opening it for writing truncates it first; a kill, "
        "an OOM (exit 137) or a full disk mid-write leaves it torn, and the next run either "
        "crashes on it or starts from zero.",
        'echo "$pos" > "$CURSOR"',
        'printf \'%s\\n\' "$pos" > "$CURSOR.tmp" && mv "$CURSOR.tmp" "$CURSOR"',
        py_bad='with open(ckpt_path, "w") as f:\n    json.dump(state, f)',
        py_good='fd, tmp = tempfile.mkstemp(dir=ckpt_path.parent, prefix=".ckpt_", '
                'suffix=".tmp")\nwith os.fdopen(fd, "w") as f:\n    json.dump(state, f)\n'
                "    f.flush()\n    os.fsync(f.fileno())\nos.replace(tmp, ckpt_path)"),
    "unscoped-glob-delete": Doc(
        "Derived-artifact category isolation (INV-9, AP-17): phases writing to one directory "
        "must read, merge and delete only their own files. The Gen720 incident: an unscoped "
        "glob merged both phases into an 8.7 M-row mixed Parquet, and the SHORT phase then "
        "found 0 chunks. Only globs over data artifacts (parquet, csv, json, chunk files) are "
        "checked; `*.pyc`, `*.log` and `*.tmp` cleanup is not.",
        'rm -f out/_chunk_*.parquet', 'rm -f "out/_chunk_${DIRECTION}_"*.parquet',
        py_bad='for f in glob.glob(f"{out}/_chunk_*.parquet"):\n    os.remove(f)',
        py_good='for f in glob.glob(f"{out}/_chunk_{direction}_*.parquet"):\n'
                '    os.remove(f)'),
    "pueue-restart": Doc(
        "pueue v4's `restart` adds a copy of the task, without its dependencies; looped over "
        "failures it is a runaway: on 2026-03-04 five agents restarting failed tasks turned "
        "60 jobs into about 12,800 tasks. A retry needs a failure classification and a "
        "budget (AP-3), and the job's identity is its label (INV-8).",
        'pueue restart "$id"',
        'pueue add -w "$P" --group p1 --label "$label-retry-1" -- "$cmd"   # or inv retry-failed'),
    "hardcoded-task-id": Doc(
        "Stable identifiers (INV-8, AP-8): pueue ids are max(existing)+1, so they are reused "
        "after `clean` or `remove`; a monitor or a chain holding `14` watches, kills or waits "
        "on some other job after a re-queue.",
        "pueue log 14\npueue status --json | jq '.tasks.\"14\".status'",
        'id=$(pueue add -p -w "$P" --label "$label" -- run)   # then --after "$id"\n'
        "pueue status --json | jq --arg l \"$label\" '.tasks[] | select(.label == $l)'"),
    "ssh-per-job": Doc(
        "Per-job SSH for bulk submission (AP-12): every `ssh host pueue add` costs a "
        "connection, 50-100 ms; 300 K jobs x 75 ms is 6.25 h of SSH alone, and each add "
        "also rewrites pueue's state. Upload one commands file and add the jobs on the host.",
        'for s in A B C; do\n  ssh bigblack "pueue add -w ~/p -- run $s"\ndone',
        "scp jobs.tsv bigblack:/tmp/jobs.tsv\nssh bigblack bash -s <<'EOF'\n"
        "while read -r s; do pueue add -w ~/p -- run \"$s\"; done < /tmp/jobs.tsv\nEOF\n"
        "# or: inv submit-batch --host bigblack --playbook sweep"),
    "sbatch-per-job": Doc(
        "Per-job submission on Slurm (AP-12): every `sbatch` is a controller RPC (and over "
        "SSH a round trip, ~0.3 s measured on the test cluster: 100,000 jobs take ~9 h) and "
        "one job record each, so MaxJobCount fills up. One job array per group submits up to "
        "MaxArraySize jobs in one call, its throttle (`%P`) capping how many run at once.",
        'for s in A B C; do\n  sbatch --mem=1G --wrap "python run.py $s"\ndone',
        "sbatch --array=0-2%2 --mem=1G job.sh  # job.sh runs line $SLURM_ARRAY_TASK_ID\n"
        "# or: inv submit-batch --host cluster --playbook sweep"),
    "remote-add-without-workdir": Doc(
        "Wrong working directory remotely (AP-11, G-12): `ssh host \"pueue add ...\"` records "
        "$HOME as the job's directory; a relative `scripts/run.py` then fails at once with "
        "exit 2, `[Errno 2] No such file or directory`.",
        'ssh h "pueue add -- python scripts/run.py"',
        'ssh h "pueue add -w ~/project -- python scripts/run.py"'),
    "env-override-add": Doc(
        "Config is the single source of truth (INV-5): an override in "
        "front of `pueue add` changes the client's environment, which pueue stores whole "
        "with the task (and persists to state.json); the override is invisible in the "
        "command pueue shows, and other defaults ride along.",
        "THREADS=4 pueue add -w /p -- run",
        "pueue add -w /p -- env THREADS=4 run   # or fix the default in .env / the playbook"),
    "pipefail-head": Doc(
        "SIGPIPE under `set -euo pipefail` (AP-13, G-13): `head` exits after its lines, the "
        "writer dies of SIGPIPE, and the whole pipeline fails with 141 - a script that "
        "worked on small input stops on large input.",
        "set -euo pipefail\nls out | head -3",
        'set -euo pipefail\nls out > "$tmp"\nhead -n 3 "$tmp"'),
    "parallel-zero": Doc(
        "Parallelism within safe margins (INV-6): pueue reads `parallel 0` as unlimited, "
        "not stopped; every queued job of the group starts at once (6 x 5 GB jobs on a "
        "61 GB host already swap it to load 50+).",
        "pueue parallel 0 -g p1",
        "pueue parallel 1 -g p1    # or stop it: pueue pause -g p1"),
    "mise-env-secret": Doc(
        "mise [env] for pueue/cron secrets (AP-16, G-15): pueue and cron start jobs without "
        "mise activation, so the value is empty inside the job; it is also committed in "
        "plain text.",
        '[env]\nGH_TOKEN = "ghp_..."',
        '[env]\n_.file = ".env"     # .env is git-ignored; the job loads it with python-dotenv',
        kind="mise"),
    "memorymax-without-swapmax": Doc(
        "Per-job memory isolation (INV-7, G-10): without `MemorySwapMax=0` the cap is soft; "
        "jobs that grow from 500 MB to 5+ GB swap past it, load climbs to 50+ and SSH stops "
        "answering.",
        "systemd-run --user --scope -p MemoryMax=8G python job.py",
        "systemd-run --user --scope -p MemoryMax=8G -p MemorySwapMax=0 python job.py"),
    "memory-without-swap-limit": Doc(
        "Per-job memory isolation (INV-7, G-10) for containers: Docker and Podman give a "
        "container with `--memory X` and no `--memory-swap` as much swap again (`-1`: "
        "unlimited), so a job that outgrows its cap swaps instead of being stopped. Set "
        "`--memory-swap` to the same value. Slurm's `sbatch --mem` has no per-job swap "
        "limit to add: there the limit is the cluster's cgroup.conf (`ConstrainSwapSpace=yes`, "
        "`AllowedSwapSpace=0`), which `jobsafe probe` judges (INV-7) and "
        "`memory_cap = true` enforces at submit, so the linter does not flag `--mem`.",
        "docker run --rm -m 8g -v \"$PWD\":/w img python /w/job.py",
        "docker run --rm -m 8g --memory-swap 8g -v \"$PWD\":/w img python /w/job.py"),
    "cursor-deleted-on-success": Doc(
        "Cursor file deleted on completion (AP-15, G-17): the next run finds no cursor and "
        "redoes everything instead of resuming incrementally. Keep it (record completion "
        "inside it); delete only on an explicit force-refresh.",
        'python job.py && rm -f "$CURSOR"',
        'python job.py   # the cursor stays\n'
        'if [ "$FORCE_REFRESH" = 1 ]; then rm -f "$CURSOR"; fi'),
    "unknown-suppression": Doc(
        "A suppression comment naming no rule (a typo) would silently suppress nothing, and "
        "the reader would believe the finding was reviewed.",
        "rm -f out/*.parquet  # jobsafe: ignore[unscoped-glob-delet]",
        "rm -f out/*.parquet  # jobsafe: ignore[unscoped-glob-delete] out/ holds one phase"),
    "syntax-error": Doc(
        "A file that does not parse cannot be checked: every rule would pass it silently. "
        "Shell files are parsed with tree-sitter-bash and confirmed with `bash -n`; the run "
        "goes on with the other files and exits 2 at the end.",
        "if [ -f x; then\n  rm -f x\n", "if [ -f x ]; then\n  rm -f x\nfi"),
    "io-error": Doc(
        "A file that cannot be read cannot be checked; the run goes on with the other files "
        "and exits 2 at the end.",
        "chmod 000 job.sh", "chmod 644 job.sh   # or exclude it in [tool.jobsafe.lint]"),
}


def explain(rule_id: str) -> str:
    """The rule's documentation as plain text (Markdown-friendly)."""
    r = RULES[rule_id]
    d = DOCS[rule_id]
    guards = ", ".join(f"{g} ({INVARIANTS[g]})" if g in INVARIANTS else g for g in r.guards)
    fix = r.fix if not r.shell_fix else f"{r.fix}\nShell: {r.shell_fix}"
    return (f"{r.id} ({r.severity})\n\n"
            f"What: {r.catches}.\n\n"
            f"Why: {d.why}\n\n"
            f"Fix: {fix}\n\n"
            f"Example, flagged:\n\n{_indent(d.bad)}\n\nFixed:\n\n{_indent(d.good)}\n"
            + (f"\nIn Python, flagged:\n\n{_indent(d.py_bad)}\n\nFixed:\n\n"
               f"{_indent(d.py_good)}\n" if d.py_bad else "")
            + (f"\nGuards: {guards}\n" if guards else "")
            + f"\nSuppress one: `# jobsafe: ignore[{r.id}]` on or above the line; a file: "
              f"`# jobsafe: ignore-file[{r.id}]` in its first 10 lines.\n")


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())
