"""Shell checks for `inv lint`: job scripts, commands-file lines, and command strings found
in TOML (`command`, `run`) and Python (argv lists, `c.run("...")`).

Not a shell parser, but more than a regex per line, so that the common shapes come out
right: comments are stripped outside quotes, backslash continuations and multi-line quotes
are joined into one logical line (reported at its first physical line), heredoc bodies are
skipped unless they feed a shell (`ssh host bash <<EOF`, `bash <<EOF`), and each logical
line is split into simple commands on unquoted `; && || | &`, then tokenized with shlex.
A small state follows the file top to bottom: `set -o pipefail`/`set +o pipefail`,
`for/while/until ... done` nesting (ssh-per-job), `if ... then/else ... fi` (a deletion in
the then-branch of a command that succeeded), and `cd` (remote-add-without-workdir).
The remote part of `ssh host CMD...` is linted as its own shell program ("remote" unit),
so `ssh h "cd ~/p && pueue add -- x"` counts the `cd`.

Known blind spots, on purpose: arrays and variables holding options (`systemd-run
"${CAP[@]}"`), functions called from loops, and `set -e` success paths without `&&`/`if`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from .lexer import Logical, logical_lines, split_commands, substitutions, tokens
from .rules import (
    CURSORISH,
    MERGE_WORDS,
    RESET_WORDS,
    STATEISH,
    SUCCESS_WORDS,
    TMPISH,
    Finding,
    finding,
)

WRAPPERS = {"xargs", "parallel", "timeout", "nohup", "env", "command", "exec", "sudo", "time",
            "nice", "ionice", "stdbuf", "flock"}
PER_JOB_WRAPPERS = {"xargs", "parallel"}
_KEYWORDS = {"do", "then", "else", "elif", "if", "while", "until", "for", "!", "{", "}",
             "(", ")", "time"}
_SSH_VALUE_OPTS = set("bcDEeFIiJLlmOopQRSWw")
# pueue options that take a value, so `pueue log --lines 20` is not task 20.
_PUEUE_VALUE_OPTS = {"-g", "--group", "-s", "--signal", "-l", "--lines", "-d", "--delay",
                     "--status", "-w", "--working-directory", "-o", "--priority", "-L",
                     "--label", "-p", "--profile", "-c", "--config", "--color"}
_ID_SUBCOMMANDS = {"log", "follow", "kill", "remove", "restart", "pause", "start", "stash",
                   "enqueue", "switch", "edit", "wait"}
# `pueue`, `~/.local/bin/pueue`, `"$PUEUE"`, `${pueue_bin}`, `$("$pueue"` (inside $(...)).
_PUEUE_WORD = re.compile(r"(?:^|[/($\"'{])pueue\w*\}?$", re.IGNORECASE)
_JQ_TASK_ID = re.compile(r"\.tasks\s*(?:\.\s*\"\d+\"|\[\s*\"?\d+\"?\s*\])")
_GREP_TASK_ID = re.compile(r"\bgrep\b[^|;&]*?[\"']?\^\d+\\?\|")
_REDIRECT = re.compile(r"(?<![>&0-9])>(?![>&])\s*([^\s;|&<>()]+)")


@dataclass
class _If:
    cond: list[str]
    in_else: bool = False


@dataclass
class Unit:
    """One shell program: a file, a remote `ssh` command, a heredoc body."""
    file: str
    text: str                      # the whole file: mv targets for the atomic-write rule
    remote: bool = False
    inline: bool = False           # an `ssh h "..."` string: its line was checked already
    per_job: bool = False          # a remote unit started once per job (loop, xargs)
    pipefail: bool = False
    cd_seen: bool = False
    loops: int = 0
    adds: int = 0                  # remote `pueue add`s seen (ssh-per-job)
    ifs: list[_If] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)


def lint_shell(file: str, text: str, first_line: int = 1) -> list[Finding]:
    """Every shell rule over a script (or a commands file: one job per line)."""
    unit = Unit(file, text)
    _run_unit(unit, text, first_line)
    return unit.findings


def lint_command(file: str, line: int, command: str, full_text: str = "") -> list[Finding]:
    """A single command string (TOML `command`, a Python argv): every finding at `line`."""
    unit = Unit(file, full_text or command)
    for logical in logical_lines(command):
        logical.line = line
        _logical(unit, logical)
    return unit.findings


def _run_unit(unit: Unit, text: str, first_line: int) -> None:
    for logical in logical_lines(text, first_line):
        _logical(unit, logical)


def _logical(unit: Unit, logical: Logical) -> None:
    code, line = logical.code, logical.line
    if not unit.inline:
        if "systemd-run" in code and "MemoryMax=" in code and "MemorySwapMax=0" not in code:
            unit.findings.append(finding(unit.file, line, "memorymax-without-swapmax",
                                         "systemd-run caps MemoryMax but not swap"))
        for rx in (_JQ_TASK_ID, _GREP_TASK_ID):
            if rx.search(code):
                unit.findings.append(finding(unit.file, line, "hardcoded-task-id",
                                             "selects a pueue task by a literal id"))
    prev: list[str] = []
    for sep, command in split_commands(code):
        command, bodies = substitutions(command)
        for body in bodies:
            _logical(unit, Logical(line, body))
        argv = _command(unit, line, sep, command, prev)
        if "<<" in command:
            _ssh_heredoc(unit, logical, argv)
        prev = argv


def _ssh_heredoc(unit: Unit, logical: Logical, argv: list[str]) -> None:
    """`ssh host bash <<EOF ... EOF`: the body runs on the host, once per loop pass."""
    if logical.heredoc is None:
        return
    is_ssh = bool(argv) and any(os.path.basename(t) == "ssh" for t in argv[:2])
    sub = Unit(unit.file, unit.text, remote=is_ssh or unit.remote,
               per_job=(unit.per_job or unit.loops > 0) if is_ssh else unit.per_job,
               loops=unit.loops if not is_ssh else 0, findings=unit.findings)
    _run_unit(sub, logical.heredoc[1], logical.heredoc[0])
    logical.heredoc = None
    if is_ssh:
        _per_job(sub, logical.line)


def _command(unit: Unit, line: int, sep: str, command: str, prev: list[str]) -> list[str]:
    """One simple command: update the state, append findings; returns its argv."""
    argv = tokens(command)
    while argv and (argv[0] in _KEYWORDS or argv[0].startswith(("(", "{"))):
        word = argv.pop(0)
        if word in ("for", "while", "until"):
            unit.loops += 1
            return argv
        if word in ("if", "elif"):
            if word == "elif" and unit.ifs:
                unit.ifs.pop()
            unit.ifs.append(_If(argv))
            return argv
        if word == "else" and unit.ifs:
            unit.ifs[-1].in_else = True
        if word.startswith(("(", "{")) and word.strip("({"):
            argv.insert(0, word.lstrip("({"))
            break
    if argv and argv[-1] in (")", "}", "))"):
        argv.pop()
    if not argv:
        return argv
    head = argv[0]
    if head == "done":
        unit.loops = max(0, unit.loops - 1)
        return argv
    if head == "fi":
        if unit.ifs:
            unit.ifs.pop()
        return argv
    if head == "set":
        _set(unit, argv)
    elif head == "cd":
        unit.cd_seen = True
    elif head == "head" and sep == "|" and unit.pipefail:
        unit.findings.append(finding(unit.file, line, "pipefail-head",
                                     "`| head` under `set -o pipefail` exits 141 on SIGPIPE"))
    ssh = _ssh_index(argv)
    if ssh is not None:
        _ssh(unit, line, argv, ssh)
        return argv
    _pueue(unit, line, argv)
    _sbatch(unit, line, argv)
    _rm(unit, line, sep, argv, prev)
    _find_delete(unit, line, argv)
    _merge(unit, line, command, argv)
    _redirect(unit, line, command)
    return argv


def _set(unit: Unit, argv: list[str]) -> None:
    for k, tok in enumerate(argv[1:-1], start=1):
        if argv[k + 1] == "pipefail" and tok.lstrip("-+").endswith("o"):
            unit.pipefail = tok.startswith("-")


def _ssh_index(argv: list[str]) -> int | None:
    for k, tok in enumerate(argv):
        if os.path.basename(tok) == "ssh":
            return k if k == 0 or argv[0] in WRAPPERS else None
    return None


def _ssh(unit: Unit, line: int, argv: list[str], k: int) -> None:
    rest = argv[k + 1:]
    while rest and rest[0].startswith("-"):
        opt = rest.pop(0)
        if len(opt) == 2 and opt[1] in _SSH_VALUE_OPTS and rest:
            rest.pop(0)
    if not rest:
        return
    remote = " ".join(rest[1:])
    per_job = unit.loops > 0 or argv[0] in PER_JOB_WRAPPERS or unit.per_job
    sub = Unit(unit.file, unit.text, remote=True, inline=True, per_job=per_job,
               findings=unit.findings)
    for logical in logical_lines(remote):
        logical.line = line
        _logical(sub, logical)
    _per_job(sub, line)


def _per_job(sub: Unit, line: int) -> None:
    """AP-12: an ssh that adds pueue jobs and itself runs once per job."""
    if sub.per_job and sub.adds:
        sub.findings.append(finding(sub.file, line, "ssh-per-job",
                                    "one `ssh ... pueue add` per job (a round trip each)"))


def _sbatch(unit: Unit, line: int, argv: list[str]) -> None:
    """AP-12 on Slurm: an sbatch run once per job (a loop, xargs, or a per-job ssh)."""
    k = next((n for n, t in enumerate(argv) if os.path.basename(t) == "sbatch"), None)
    if k is None or (k > 0 and argv[0] not in WRAPPERS):
        return
    if unit.loops > 0 or argv[0] in PER_JOB_WRAPPERS or unit.per_job:
        if not any(a.startswith("--array") or a == "-a" for a in argv[k + 1:]):
            unit.findings.append(finding(unit.file, line, "sbatch-per-job",
                                         "one `sbatch` per job (use one job array)"))


def _pueue(unit: Unit, line: int, argv: list[str]) -> None:
    k = next((n for n, t in enumerate(argv) if _PUEUE_WORD.search(t)), None)
    if k is None:
        return
    rest = argv[k + 1:]
    while rest and rest[0].startswith("-"):
        opt = rest.pop(0)
        if opt in _PUEUE_VALUE_OPTS and rest:
            rest.pop(0)
    if not rest:
        return
    sub, args = rest[0], rest[1:]
    positional = _positional(args)
    f = unit.findings
    if sub == "restart":
        f.append(finding(unit.file, line, "pueue-restart",
                         "`pueue restart` copies the task (no dependencies, stale log)"))
    if sub == "parallel" and "0" in positional:
        f.append(finding(unit.file, line, "parallel-zero",
                         "`pueue parallel 0` means unlimited parallelism"))
    ids = [p for p in positional if p.isdigit()] if sub in _ID_SUBCOMMANDS else []
    if sub == "env" and len(positional) > 1 and positional[0] == "set":
        ids = [positional[1]] if positional[1].isdigit() else []
    if sub == "add":
        ids = [v for o, v in zip(args, args[1:], strict=False)
               if o in ("-a", "--after") and v.isdigit()]
        _add(unit, line, argv[:k], args)
    if ids:
        f.append(finding(unit.file, line, "hardcoded-task-id",
                         f"literal pueue task id {', '.join(ids)} (ids are reused)"))


def _positional(args: list[str]) -> list[str]:
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
        elif a == "--":
            break
        elif a.startswith("-"):
            skip = a in _PUEUE_VALUE_OPTS
        else:
            out.append(a)
    return out


def _add(unit: Unit, line: int, before: list[str], args: list[str]) -> None:
    opts = args[:args.index("--")] if "--" in args else args
    f = unit.findings
    assigns = [t for t in before if re.match(r"[A-Za-z_]\w*=", t)]
    lean = any(t in ("-i", "--ignore-environment", "-") for t in before)
    if assigns and not lean:
        names = ", ".join(a.split("=", 1)[0] for a in assigns)
        f.append(finding(unit.file, line, "env-override-add",
                         f"per-job override of {names} on the pueue client"))
    if not unit.remote:
        return
    unit.adds += 1
    workdir = any(o in ("-w", "--working-directory") or
                  o.startswith(("-w=", "--working-directory=")) for o in opts)
    if not workdir and not unit.cd_seen:
        f.append(finding(unit.file, line, "remote-add-without-workdir",
                         "`pueue add` over SSH without -w or cd: the job runs in $HOME"))


def _test_paths(argv: list[str]) -> list[str]:
    """The operands of `[ -f X ]`, `[[ -e X ]]`, `test -s X` (empty if not a file test)."""
    if not argv or argv[0] not in ("[", "[[", "test"):
        return []
    return [b for a, b in zip(argv, argv[1:], strict=False)
            if a in ("-e", "-f", "-s", "-a", "-L", "-h", "-d")]


def _rm(unit: Unit, line: int, sep: str, argv: list[str], prev: list[str]) -> None:
    if argv[0] == "sudo":
        argv = argv[1:]
    if not argv or argv[0] != "rm":
        return
    flags = [a for a in argv[1:] if a.startswith("-") and a != "--"]
    targets = [a for a in argv[1:] if not a.startswith("-")]
    if not targets:
        return
    force = any(a == "--force" or (not a.startswith("--") and "f" in a) for a in flags)
    top = unit.ifs[-1] if unit.ifs else None
    checked = set(_test_paths(prev) if sep == "&&" else [])
    if top is not None and not top.in_else:
        checked |= set(_test_paths(top.cond))
    f = unit.findings
    if not force and checked & set(targets):
        f.append(finding(unit.file, line, "check-then-delete",
                         "file test then `rm`: races with a concurrent delete"))
    elif not force:
        f.append(finding(unit.file, line, "delete-without-missing-ok",
                         "`rm` without -f fails when the file is already gone"))
    for t in targets:
        if _unscoped(t):
            f.append(finding(unit.file, line, "unscoped-glob-delete",
                             f"`rm {t}` deletes every category's files"))
    cursors = [t for t in targets if CURSORISH.search(t) and not TMPISH.search(t)]
    if cursors and not checked & set(cursors) and _on_success(unit, sep, prev):
        f.append(finding(unit.file, line, "cursor-deleted-on-success",
                         f"deletes {cursors[0]} after the work succeeded"))


def _on_success(unit: Unit, sep: str, prev: list[str]) -> bool:
    if sep == "&&" and prev and not _test_paths(prev):
        return True
    if not unit.ifs or unit.ifs[-1].in_else:
        return False
    cond = " ".join(unit.ifs[-1].cond)
    if RESET_WORDS.search(cond) or cond.startswith("!"):
        return False
    if unit.ifs[-1].cond[:1] in (["["], ["[["], ["test"]):
        return bool(SUCCESS_WORDS.search(cond) or re.search(r"(-eq|==|=)\s+0\b", cond))
    return True


def _unscoped(word: str) -> bool:
    """A glob with nothing variable before its first wildcard: `out/*.json`, `$OUT/_c_*`.
    A `$VAR` in the file name before the `*`, or in a directory below the base, pins it."""
    if "*" not in word and "?" not in word:
        return False
    head, _, base = word.rpartition("/")
    if "$" in re.split(r"[*?]", base, maxsplit=1)[0]:
        return False
    return not any("$" in part for part in head.split("/")[1:])


def _find_delete(unit: Unit, line: int, argv: list[str]) -> None:
    if argv[0] != "find" or not ("-delete" in argv or ("-exec" in argv and "rm" in argv)):
        return
    root = next((a for a in argv[1:] if not a.startswith("-")), ".")
    for opt, pat in zip(argv, argv[1:], strict=False):
        if opt in ("-name", "-iname", "-path") and _unscoped(f"{root}/{pat.split('/')[-1]}"):
            unit.findings.append(finding(unit.file, line, "unscoped-glob-delete",
                                         f"`find ... {opt} {pat} -delete` spans categories"))


def _merge(unit: Unit, line: int, command: str, argv: list[str]) -> None:
    merging = (argv[0] == "cat" and ">" in command) or any(MERGE_WORDS.search(a) for a in argv)
    if not merging:
        return
    for a in argv[1:]:
        if _unscoped(a):
            unit.findings.append(finding(unit.file, line, "unscoped-glob-delete",
                                         f"merges `{a}` across every category"))


def _redirect(unit: Unit, line: int, command: str) -> None:
    for m in _REDIRECT.finditer(command):
        target = m.group(1).strip("\"'")
        if not STATEISH.search(target) or TMPISH.search(target) or target.startswith("/dev/"):
            continue
        if re.search(r"\bmv\b[^\n]*" + re.escape(target), unit.text):
            continue
        unit.findings.append(finding(unit.file, line, "non-atomic-checkpoint-write",
                                     f"`> {target}` truncates the checkpoint in place"))
