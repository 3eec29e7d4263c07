"""`inv lint` rules: the table (id, what it catches, the fix, the invariants it guards), the
Finding value, and the name patterns the rule checkers share.

The checkers are pure functions over text or an AST, one module per language:
`lint_shell.py` over `lint_lex.py` (job scripts, commands files, command strings inside
TOML and Python) and
`lint_python.py` (ast). `lint.py` is the driver (files, suppression, output).

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
    id: str          # stable kebab-case id, used in suppressions and --json
    catches: str
    fix: str
    guards: tuple[str, ...]


@dataclass(frozen=True)
class Finding:
    file: str
    line: int
    rule: str
    message: str
    fix: str

    def to_dict(self) -> dict[str, Any]:
        rule = RULES.get(self.rule)
        return {"file": self.file, "line": self.line, "rule": self.rule,
                "message": self.message, "fix": self.fix,
                "guards": list(rule.guards) if rule else []}


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
         "drop the check: `path.unlink(missing_ok=True)` / `rm -f X`", ("INV-3", "AP-2")),
    Rule("delete-without-missing-ok",
         "`Path.unlink()` without `missing_ok=True`, `os.remove` outside a `try` that catches "
         "FileNotFoundError, `rm` without `-f`: a second run (or a sibling job) fails",
         "`path.unlink(missing_ok=True)` / `rm -f`", ("INV-3", "AP-2")),
    Rule("non-atomic-checkpoint-write",
         "`open(<checkpoint|ckpt|cursor|state|progress>, 'w')`, `write_text`, `> $CURSOR` "
         "with no temp file + rename: a kill mid-write leaves a torn checkpoint",
         "mkstemp in the same dir -> write -> fsync -> `os.replace` (shell: write a temp file, "
         "then `mv`)", ("INV-4",)),
    Rule("unscoped-glob-delete",
         "a glob with no category before the first `*` (`*.parquet`, `_chunk_*.parquet`) "
         "whose matches are deleted or merged: one phase eats another's artifacts",
         "pin the category in the pattern: `f\"_chunk_{direction}_*.parquet\"` or a "
         "per-category directory", ("INV-9", "AP-17")),
    Rule("pueue-restart",
         "`pueue restart` in a script: v4 makes a copy without dependencies; in a loop it "
         "multiplied 60 jobs into 12,800 tasks",
         "add a fresh task labelled `<label>-retry-N` under a budget (`inv retry-failed`)",
         ("AP-3", "INV-8")),
    Rule("hardcoded-task-id",
         "a literal pueue task id (`.tasks.\"14\"`, `grep \"^14|\"`, `pueue log 14`, "
         "`--after 14`): ids are reused after clean/remove",
         "select by group + label; capture ids with `--print-task-id` in the same session",
         ("INV-8", "AP-8")),
    Rule("ssh-per-job",
         "`ssh host pueue add` inside a loop or xargs: one SSH round trip per job "
         "(300 K jobs x 75 ms = 6 h)",
         "upload one commands file and run the feeder on the host (`inv submit-batch`)",
         ("AP-12",)),
    Rule("sbatch-per-job",
         "`sbatch` inside a loop or xargs: one submission per job (a scheduler RPC and, "
         "over SSH, a round trip each; MaxJobCount fills up)",
         "one job array per group (`sbatch --array=0-K%P`, what `inv submit-batch` does on "
         'a scheduler = "slurm" host)',
         ("AP-12",)),
    Rule("remote-add-without-workdir",
         "`pueue add` over SSH without `-w` and without `cd`: the job runs in $HOME and "
         "its relative paths fail",
         "`pueue add -w <absolute project dir>` (or `cd <dir> &&` in the same remote command)",
         ("AP-11", "G-12")),
    Rule("env-override-add",
         "`env VAR=... pueue add` / `VAR=... pueue add`: overrides a configured default for "
         "one job, invisibly (not in the command pueue shows), with the whole client env",
         "fix the default in `.env`/`.mise.toml`, or declare it in the playbook's "
         "`env_overrides` + `[env]`, or `pueue add -- env VAR=... cmd`", ("INV-5",)),
    Rule("pipefail-head",
         "`... | head` under `set -o pipefail`: head exits early, the writer gets SIGPIPE and "
         "the pipeline fails with 141",
         "write to a temp file and `head` the file (or `head -n N file`)", ("AP-13", "G-13")),
    Rule("parallel-zero",
         "`pueue parallel 0`: pueue reads 0 as unlimited, not stopped",
         "a number >= 1 (pause a group with `pueue pause -g G`)", ("INV-6",)),
    Rule("mise-env-secret",
         "a secret-looking key in a mise `[env]`: pueue/cron jobs run without mise "
         "activation and see it empty; it is also committed in plain text",
         "keep it in `.env` (git-ignored) read by python-dotenv; mise `[env]` only "
         "`_.file = \".env\"` for interactive tasks", ("AP-16", "G-15", "INV-5")),
    Rule("memorymax-without-swapmax",
         "`systemd-run ... MemoryMax=` without `MemorySwapMax=0`: the job swaps past its cap",
         "add `-p MemorySwapMax=0`", ("INV-7", "G-10")),
    Rule("cursor-deleted-on-success",
         "a checkpoint/cursor deleted after the work succeeded: the next run redoes "
         "everything instead of resuming incrementally",
         "keep the cursor on success; delete only on an explicit force-refresh",
         ("AP-15", "G-17")),
    Rule("unknown-suppression",
         "`# jobsafe: ignore[...]` naming no rule (a typo would silently suppress nothing)",
         "use a rule id from `inv lint --rules`", ()),
]
RULES: dict[str, Rule] = {r.id: r for r in _RULE_LIST}


def finding(file: str, line: int, rule: str, message: str) -> Finding:
    """A finding with its rule's fix hint."""
    return Finding(file, line, rule, message, RULES[rule].fix)


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
