"""`inv lint` rules: the table (id, severity, what it catches, the fix in Python and in
shell, the invariants it guards), the Finding value, and the name patterns the checkers share.

The checkers are pure functions over text or a syntax tree, one module per language:
`shell.py` over tree-sitter-bash (job scripts, commands files, command strings inside TOML
and Python) and `python.py` (ast). `run.py` is the driver (files, config, suppression),
`output.py` the formats, `docs.py` each rule's `--explain` text.

Invariant ids are the project's one numbering, defined in docs/glossary.md (INV-5 = config
is the single source of truth, as in playbook.py); `INVARIANTS` names each one the rules
guard.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Rule:
    id: str          # stable kebab-case id, used in suppressions, config and every format
    catches: str
    fix: str         # the fix as Python (or in general)
    guards: tuple[str, ...]
    severity: str = "error"   # error | warning (SARIF level; `::error`/`::warning`)
    shell_fix: str = ""       # the fix written in shell, when it differs


@dataclass(frozen=True)
class Finding:
    file: str
    line: int
    col: int
    rule: str
    message: str
    fix: str
    severity: str = "error"
    source: str = "jobsafe"       # jobsafe | shellcheck
    fingerprint: str = ""         # hash of the finding's source line (baseline, SARIF)

    def to_dict(self) -> dict[str, Any]:
        rule = RULES.get(self.rule)
        return {"file": self.file, "line": self.line, "col": self.col,
                "severity": self.severity, "rule": self.rule, "message": self.message,
                "fix": self.fix, "guards": list(rule.guards) if rule else [],
                "source": self.source, "fingerprint": self.fingerprint}


INVARIANTS: dict[str, str] = {
    "INV-3": "idempotent file ops",
    "INV-4": "atomic state writes",
    "INV-5": "config file is the single source of truth",
    "INV-6": "parallelism within safe margins",
    "INV-7": "per-job memory caps",
    "INV-8": "monitor by stable identifiers",
    "INV-9": "derived artifacts carry every category",
}

_RULE_LIST = [
    Rule("check-then-delete",
         "`exists()`/`os.path.exists` then `unlink()`/`os.remove`, `[ -f X ] && rm X`: "
         "a concurrent job can delete in between (TOCTOU)",
         "drop the check: `path.unlink(missing_ok=True)`", ("INV-3", "AP-2"),
         shell_fix='drop the test: `rm -f "$F"`'),
    Rule("delete-without-missing-ok",
         "`Path.unlink()` without `missing_ok=True`, `os.remove` outside a `try` that catches "
         "FileNotFoundError; in shell `rm` without `-f` on a checkpoint, state, lock or data "
         "file: a second run (or a sibling job) fails",
         "`path.unlink(missing_ok=True)`", ("INV-3", "AP-2"), severity="warning",
         shell_fix='`rm -f "$F"`'),
    Rule("non-atomic-checkpoint-write",
         "`open(<checkpoint|ckpt|cursor|state|progress>, 'w')`, `write_text`, `> $CURSOR` "
         "with no temp file + rename: a kill mid-write leaves a torn checkpoint",
         "mkstemp in the same dir -> write -> fsync -> `os.replace`", ("INV-4",),
         shell_fix='`printf \'%s\\n\' "$pos" > "$CURSOR.tmp" && mv "$CURSOR.tmp" "$CURSOR"`'),
    Rule("unscoped-glob-delete",
         "a glob over data artifacts (parquet, csv, json, chunk files...) with no category "
         "before the first `*` (`*.parquet`, `_chunk_*.parquet`) whose matches are deleted "
         "or merged: one phase eats another's artifacts",
         "pin the category in the pattern: `f\"_chunk_{direction}_*.parquet\"` or a "
         "per-category directory", ("INV-9", "AP-17"),
         shell_fix='pin the category: `rm -f "$OUT/_chunk_${DIRECTION}_"*.parquet` or '
                   '`"$OUT/$PHASE"/*.parquet`'),
    Rule("pueue-restart",
         "`pueue restart` in a script: v4 makes a copy without dependencies; in a loop it "
         "multiplied 60 jobs into 12,800 tasks",
         "add a fresh task labelled `<label>-retry-N` under a budget (`inv retry-failed`)",
         ("AP-3", "INV-8"),
         shell_fix='`pueue add -w "$P" --label "$label-retry-1" -- cmd` under a budget, or '
                   '`inv retry-failed`'),
    Rule("hardcoded-task-id",
         "a literal pueue task id (`.tasks.\"14\"`, `grep \"^14|\"`, `pueue log 14`, "
         "`--after 14`): ids are reused after clean/remove",
         "select by group + label; capture ids with `--print-task-id` in the same session",
         ("INV-8", "AP-8"),
         shell_fix='`id=$(pueue add -p ...)` in the same script, or select by label: '
                   '`jq --arg l "$LABEL" \'.tasks[] | select(.label == $l)\'`'),
    Rule("ssh-per-job",
         "`ssh host pueue add` inside a loop or xargs: one SSH round trip per job "
         "(300 K jobs x 75 ms = 6 h)",
         "upload one commands file and run the feeder on the host (`inv submit-batch`)",
         ("AP-12",), severity="warning",
         shell_fix='`scp jobs.tsv h:` once, then one `ssh h bash -s <<\'EOF\'` whose loop '
                   'runs `pueue add` on the host (or `inv submit-batch`)'),
    Rule("sbatch-per-job",
         "`sbatch` inside a loop or xargs: one submission per job (a scheduler RPC and, "
         "over SSH, a round trip each; MaxJobCount fills up)",
         "one job array per group (`sbatch --array=0-K%P`, what `inv submit-batch` does on "
         'a scheduler = "slurm" host)',
         ("AP-12",), severity="warning",
         shell_fix="one `sbatch --array=0-$((N-1))%P job.sh` whose script reads line "
                   "$SLURM_ARRAY_TASK_ID of the commands file (or `inv submit-batch`)"),
    Rule("remote-add-without-workdir",
         "`pueue add` over SSH without `-w` and without `cd`: the job runs in $HOME and "
         "its relative paths fail",
         "`pueue add -w <absolute project dir>` (or `cd <dir> &&` in the same remote command)",
         ("AP-11", "G-12"),
         shell_fix='`ssh h "pueue add -w ~/project -- cmd"` (or `cd ~/project && pueue add`)'),
    Rule("env-override-add",
         "`env VAR=... pueue add` / `VAR=... pueue add`: overrides a configured default for "
         "one job, invisibly (not in the command pueue shows), with the whole client env",
         "fix the default in `.env`/`.mise.toml`, or declare it in the playbook's "
         "`env_overrides` + `[env]`, or `pueue add -- env VAR=... cmd`", ("INV-5",),
         severity="warning", shell_fix='`pueue add -w "$P" -- env VAR=value cmd`'),
    Rule("pipefail-head",
         "`... | head` under `set -o pipefail`: head exits early, the writer gets SIGPIPE and "
         "the pipeline fails with 141",
         "write to a temp file and `head` the file (or `head -n N file`)", ("AP-13", "G-13"),
         severity="warning", shell_fix='`ls out > "$tmp"; head -n 3 "$tmp"`'),
    Rule("parallel-zero",
         "`pueue parallel 0`: pueue reads 0 as unlimited, not stopped",
         "a number >= 1 (pause a group with `pueue pause -g G`)", ("INV-6",),
         shell_fix="`pueue parallel 1 -g G`, or `pueue pause -g G` to stop it"),
    Rule("mise-env-secret",
         "a secret-looking key in a mise `[env]`: pueue/cron jobs run without mise "
         "activation and see it empty; it is also committed in plain text",
         "keep it in `.env` (git-ignored) read by python-dotenv; mise `[env]` only "
         "`_.file = \".env\"` for interactive tasks", ("AP-16", "G-15", "INV-5")),
    Rule("memorymax-without-swapmax",
         "`systemd-run ... MemoryMax=` without `MemorySwapMax=0`: the job swaps past its cap",
         "add `-p MemorySwapMax=0`", ("INV-7", "G-10"),
         shell_fix="`systemd-run --user --scope -p MemoryMax=8G -p MemorySwapMax=0 cmd`"),
    Rule("memory-without-swap-limit",
         "`docker run -m X` / `podman run --memory X` without `--memory-swap X`: the "
         "container may use as much swap again, so the cap is soft",
         "`--memory-swap` equal to `--memory` (no swap on top)", ("INV-7", "G-10"),
         shell_fix="`docker run --memory 8g --memory-swap 8g image cmd`"),
    Rule("cursor-deleted-on-success",
         "a checkpoint/cursor deleted after the work succeeded: the next run redoes "
         "everything instead of resuming incrementally",
         "keep the cursor on success; delete only on an explicit force-refresh "
         "(`if force_refresh: ckpt.unlink(missing_ok=True)`)",
         ("AP-15", "G-17"),
         shell_fix='keep it; reset only on request: '
                   '`if [ "$FORCE_REFRESH" = 1 ]; then rm -f "$CURSOR"; fi`'),
    Rule("unknown-suppression",
         "`# jobsafe: ignore[...]` or `ignore-file[...]` naming no rule (a typo would "
         "silently suppress nothing)",
         "use a rule id from `inv lint --rules`", (), severity="warning"),
    Rule("syntax-error",
         "a file that does not parse (Python, TOML, shell: `if [ x; then` with no `]`/`fi`): "
         "nothing in it can be checked; exit 2 after every other file is checked",
         "fix the syntax at the line:col given (or exclude the file)", ()),
    Rule("io-error",
         "a file that cannot be read (permissions, a dangling link): exit 2 after every "
         "other file is checked",
         "make it readable, or exclude it", ()),
]
RULES: dict[str, Rule] = {r.id: r for r in _RULE_LIST}
# Findings no configuration, suppression or baseline removes: the file was not checked.
UNCHECKED = frozenset({"syntax-error", "io-error"})
SHELLCHECK_ID = re.compile(r"SC\d{4}")


def finding(file: str, line: int, rule: str, message: str, col: int = 1, *,
            shell: bool = False) -> Finding:
    """A finding with its rule's fix hint (the shell one for shell code) and severity."""
    r = RULES[rule]
    return Finding(file, line, col, rule, message, (r.shell_fix or r.fix) if shell else r.fix,
                   r.severity)


# ---- names shared by the checkers -----------------------------------------------------
# "Checkpoint-looking" names. `state` only as a word of its own (state_path, self.state)
# so that `statement` or `estate` are not checkpoints.
CURSORISH = re.compile(r"(?i)checkpoint|ckpt|cursor|progress|resume")
STATEISH = re.compile(r"(?i)checkpoint|ckpt|cursor|progress|resume|(?<![a-z])state(?![a-z])")
TMPISH = re.compile(r"(?i)tmp|temp|partial|\.new\b|incoming")
# An `if` around a deletion that names one of these is a deliberate reset, not a success
# path: `if force_refresh: ckpt.unlink(missing_ok=True)`.
RESET_WORDS = re.compile(r"(?i)force|refresh|reset|fresh|corrupt|invalid|stale|rebuild|"
                         r"clean|error|fail|exc")
SUCCESS_WORDS = re.compile(r"(?i)done|complete|success|succeeded|finish|\bok\b")
MERGE_WORDS = re.compile(r"(?i)concat|merge|combine|read_parquet|scan_parquet|read_csv|"
                         r"read_json|ParquetDataset|union")
SECRET_NAME = re.compile(r"(?i)token|secret|passw(or)?d|api_?key|access_?key|private_?key|"
                         r"credential|auth|dsn|webhook")
# Data artifacts a phase writes and another may merge or delete (AP-17): the unscoped-glob
# rule fires on globs over these, not on `*.pyc`, `*.log` or `*.tmp` cleanup.
ARTIFACT = re.compile(r"(?i)\.(parquet|pq|csv|tsv|jsonl?|ndjson|arrow|feather|avro|orc|npy|"
                      r"npz|pkl|pickle|h5|hdf5|nc|zarr|sqlite|db|ckpt|pt)\b|chunk|shard|"
                      r"(?<![a-z])part(?![a-z])|checkpoint|cursor")
# What a plain `rm X` (no -f) must not fail on twice: job state and data, not any file.
JOB_FILE = re.compile(r"(?i)checkpoint|ckpt|cursor|progress|resume|(?<![a-z])state(?![a-z])|"
                      r"\.lock\b|(?<![a-z])lock(?![a-z])|\.pid\b|" + ARTIFACT.pattern[4:])
