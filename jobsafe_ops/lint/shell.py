"""Shell checks for `inv lint` on a real bash parser (tree-sitter-bash): job scripts,
commands-file lines, and command strings found in TOML (`command`, `run`) and Python
(argv lists, `c.run("...")`).

The parser gives every command with its line:col, inside functions, `case` arms, `if`
branches, loops, pipelines, `&&`/`||` lists, `$(...)` and `<(...)`; a file it cannot parse
is reported (syntax-error) and the rest of its tree is still checked. The walk keeps a small
state in document order: `set -o pipefail`/`set +o pipefail`, loop nesting (ssh-per-job),
the `if` around a command (a deletion in the then-branch of a test or of a command that
succeeded), and `cd` (remote-add-without-workdir).

Remote code is a program of its own ("unit"), parsed again: the command of `ssh host CMD...`
(so `ssh h "cd ~/p && pueue add -- x"` counts the `cd`), the body of a heredoc fed to
`ssh`, `bash` or `sh` (`ssh h bash -s <<'EOF'`), and the string of `bash -c "..."`.

Known blind spots, on purpose: options hidden in variables or arrays (`systemd-run
"${CAP[@]}"`), and functions called from loops.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from .rules import (
    ARTIFACT,
    CURSORISH,
    JOB_FILE,
    MERGE_WORDS,
    RESET_WORDS,
    STATEISH,
    SUCCESS_WORDS,
    TMPISH,
    Finding,
    finding,
)

Node = Any  # tree_sitter.Node (the package ships no type information mypy reads here)

WRAPPERS = {"xargs", "parallel", "timeout", "nohup", "env", "command", "exec", "sudo", "time",
            "nice", "ionice", "stdbuf", "flock"}
PER_JOB_WRAPPERS = {"xargs", "parallel"}
SHELLS = {"bash", "sh", "zsh", "dash", "ksh"}
_SSH_VALUE_OPTS = set("bcDEeFIiJLlmOopQRSWw")
# pueue options that take a value, so `pueue log --lines 20` is not task 20.
_PUEUE_VALUE_OPTS = {"-g", "--group", "-s", "--signal", "-l", "--lines", "-d", "--delay",
                     "--status", "-w", "--working-directory", "-o", "--priority", "-L",
                     "--label", "-p", "--profile", "-c", "--config", "--color"}
_ID_SUBCOMMANDS = {"log", "follow", "kill", "remove", "restart", "pause", "start", "stash",
                   "enqueue", "switch", "edit", "wait"}
# `pueue`, `~/.local/bin/pueue`, `"$PUEUE"`, `${pueue_bin}`.
_PUEUE_WORD = re.compile(r"(?:^|[/$\"'{])pueue\w*\}?$", re.IGNORECASE)
_JQ_TASK_ID = re.compile(r"\.tasks\s*(?:\.\s*\"\d+\"|\[\s*\"?\d+\"?\s*\])")
_GREP_TASK_ID = re.compile(r"[\"']?\^\d+\\?\|")
_FILE_TESTS = {"-e", "-f", "-s", "-a", "-L", "-h", "-d"}
_QUOTED = {"string", "raw_string", "ansi_c_string", "translated_string"}
_SKIP = {"comment", "ERROR", "heredoc_body", "heredoc_start", "heredoc_end"}


@cache
def _parser() -> Any:
    import tree_sitter
    import tree_sitter_bash

    return tree_sitter.Parser(tree_sitter.Language(tree_sitter_bash.language()))


def parse(source: bytes) -> Any:
    return _parser().parse(source)


# ---- where a finding is: positions inside a unit -------------------------------------------

@dataclass(frozen=True)
class Origin:
    """Maps a node of a unit's tree to the file: row 0 of the unit starts at (line, col)
    of the file (1-based). `fixed`: every finding at (line, col) (a TOML or Python string,
    whose escapes make inner offsets unreliable)."""

    line: int = 1
    col: int = 1
    fixed: bool = False


@dataclass
class _If:
    cond: str            # the condition's source text
    tests: list[str]     # file-test operands of a `[ -f X ]` condition
    is_test: bool
    in_else: bool = False


@dataclass
class Cmd:
    """A simple command as the rules see it: words (unquoted text), and which may glob."""

    node: Node
    argv: list[str]
    globs: list[bool]        # per word: an unquoted * or ? in it
    tests: list[str] = field(default_factory=list)  # `[ -f X ]`: the X


@dataclass
class Unit:
    """One shell program: a file, a remote `ssh` command, a heredoc body."""

    file: str
    text: str                      # the whole file: mv targets for the atomic-write rule
    source: bytes
    origin: Origin
    findings: list[Finding]
    remote: bool = False
    per_job: bool = False          # a remote unit started once per job (loop, xargs)
    pipefail: bool = False
    cd_seen: bool = False
    loops: int = 0
    adds: int = 0                  # remote `pueue add`s seen (ssh-per-job)
    ifs: list[_If] = field(default_factory=list)
    _lines: list[bytes] | None = None

    def at(self, node: Node) -> tuple[int, int]:
        if self.origin.fixed:
            return self.origin.line, self.origin.col
        row, col = node.start_point
        if self._lines is None:
            self._lines = self.source.split(b"\n")
        line = self._lines[row] if row < len(self._lines) else b""
        chars = len(line[:col].decode("utf-8", "replace"))
        return self.origin.line + row, (self.origin.col if row == 0 else 1) + chars

    def add(self, node: Node, rule: str, message: str) -> None:
        line, col = self.at(node)
        self.findings.append(finding(self.file, line, rule, message, col, shell=True))

    def child(self, source: bytes, origin: Origin, **kw: Any) -> Unit:
        return Unit(self.file, self.text, source, origin, self.findings, **kw)


def _text(node: Node) -> str:
    return bytes(node.text or b"").decode("utf-8", "replace")


# ---- entry points ---------------------------------------------------------------------------

def lint_shell(file: str, text: str, first_line: int = 1, *,
               check_syntax: bool = True) -> list[Finding]:
    """Every shell rule over a script; a syntax error is a finding of its own."""
    source = text.encode("utf-8", "surrogateescape")
    unit = Unit(file, text, source, Origin(first_line), [])
    tree = parse(source)
    if check_syntax and tree.root_node.has_error:
        error = syntax_error(tree.root_node, text)
        if error is not None:
            node, message = error
            unit.add(node, "syntax-error", message)
    _block(unit, tree.root_node)
    return unit.findings


def lint_command(file: str, line: int, col: int, command: str, full_text: str = "", *,
                 exact: bool = False) -> list[Finding]:
    """A single command string (TOML `command`, a Python argv, a commands-file line):
    findings at (line, col), or at their own column on that line when `exact`."""
    source = command.encode("utf-8", "surrogateescape")
    unit = Unit(file, full_text or command, source, Origin(line, col, fixed=not exact), [])
    _block(unit, parse(source).root_node)
    return unit.findings


def syntax_error(root: Node, text: str) -> tuple[Node, str] | None:
    """The first ERROR or MISSING node and what is wrong there, when bash agrees that the
    file is broken (`bash -n`): a gap in the grammar must not fail a valid script. A `[`
    without its `]` is reported either way (bash only finds it at run time)."""
    errors = list(_errors(root))
    node = next((n for n in errors if n.is_missing), errors[0] if errors else None)
    if node is None:
        return None
    first = node.children[0].type if node.child_count else ""
    if node.is_missing:
        message = f"syntax error: missing `{node.type}`"
    elif first in _CLOSERS:
        message = f"syntax error: `{first}` is never closed (no `{_CLOSERS[first]}`)"
    else:
        leaf = node
        while leaf.child_count:
            leaf = leaf.children[0]
        message = f"syntax error: unexpected `{_text(leaf)[:30]}`"
    bracket = node.is_missing and node.type in ("]", "]]")
    if not bracket and not node.is_missing:
        leaves = [n for n in _walk(node) if not n.child_count]
        kinds = [n.type for n in leaves]
        for open_, close in (("[[", "]]"), ("[", "]")):
            if open_ in kinds and close not in kinds:
                node, bracket = leaves[kinds.index(open_)], True
                message = f"syntax error: `{open_}` without its closing `{close}`"
                break
    verdict = _bash_n(text)
    if verdict is None or bracket:
        return node, message
    if verdict == "":
        return None
    return node, f"{message} (bash: {verdict})"


_CLOSERS = {"if": "fi", "while": "done", "until": "done", "for": "done", "select": "done",
            "case": "esac", "{": "}", "(": ")", "do": "done", "then": "fi"}


def _errors(node: Node) -> Iterator[Node]:
    if node.is_missing or node.type == "ERROR":
        yield node
        return
    if node.has_error:
        for c in node.children:
            yield from _errors(c)


def _bash_n(text: str) -> str | None:
    """bash's own syntax check: "" when it parses, its message when not, None without
    bash."""
    bash = shutil.which("bash")
    if bash is None:
        return None
    try:
        proc = subprocess.run([bash, "-n"], input=text, capture_output=True, text=True,
                              timeout=20, errors="replace")
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode == 0:
        return ""
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    return re.sub(r"^.*?line \d+: ", "", lines[0]) if lines else "syntax error"


# ---- the walk -------------------------------------------------------------------------------

def _block(unit: Unit, node: Node) -> None:
    for c in node.named_children:
        _stmt(unit, c, "", None)


def _stmt(unit: Unit, node: Node, sep: str, prev: Cmd | None) -> Cmd | None:
    """One statement; returns its last simple command (for a following `&&`)."""
    t = node.type
    if t in _SKIP:
        return None
    if t == "command":
        return _command(unit, node, sep, prev)
    if t == "test_command":
        _substitutions(unit, node)
        return Cmd(node, ["["], [False], _test_node_paths(node))
    if t == "redirected_statement":
        return _redirected(unit, node, sep, prev)
    if t == "list":
        kids = node.children
        left = _stmt(unit, kids[0], sep, prev)
        op = _text(kids[1]) if len(kids) > 2 else ""
        return _stmt(unit, kids[-1], op, left) if len(kids) > 2 else left
    if t == "pipeline":
        last, op = None, sep
        for c in node.children:
            if c.is_named:
                last = _stmt(unit, c, op, last if op != sep else prev)
            else:
                op = _text(c)
        return last
    if t in ("for_statement", "c_style_for_statement", "while_statement"):
        unit.loops += 1
        try:
            for c in node.named_children:
                _stmt(unit, c, "", None)
        finally:
            unit.loops -= 1
        return None
    if t == "if_statement":
        _if(unit, node)
        return None
    if t == "negated_command":
        for c in node.named_children:
            _stmt(unit, c, "!", None)
        return None
    if t in ("variable_assignment", "declaration_command", "unset_command"):
        _substitutions(unit, node)
        return None
    # program, compound_statement, subshell, do_group, function_definition, case_statement,
    # case_item, else/elif bodies handled by _if: walk the statements inside
    for c in node.named_children:
        if c.type in ("word", "string", "raw_string", "concatenation", "simple_expansion",
                      "expansion"):
            _substitutions(unit, c)  # `case "$(cmd)" in`, a function's name
            continue
        _stmt(unit, c, "", None)
    return None


def _if(unit: Unit, node: Node) -> None:
    cond: list[Node] = []
    body: list[Node] = []
    seen_then = False
    for c in node.children:
        if c.type == "then":
            seen_then = True
        elif c.type in ("elif_clause", "else_clause"):
            _clause(unit, c)
        elif c.is_named and c.type != "comment":
            (body if seen_then else cond).append(c)
    _branch(unit, cond, body)


def _branch(unit: Unit, cond: list[Node], body: list[Node]) -> None:
    for c in cond:
        _stmt(unit, c, "", None)
    text = " ".join(_text(c) for c in cond).strip()
    tests = [p for c in cond for p in _tests_of(c)]
    is_test = bool(cond) and (cond[0].type == "test_command" or
                              text.split(" ", 1)[0] in ("test", "[", "[["))
    unit.ifs.append(_If(text, tests, is_test))
    try:
        for c in body:
            _stmt(unit, c, "", None)
    finally:
        unit.ifs.pop()


def _clause(unit: Unit, node: Node) -> None:
    if node.type == "else_clause":
        top = unit.ifs[-1] if unit.ifs else None
        unit.ifs.append(_If(top.cond if top else "", [], False, in_else=True))
        try:
            for c in node.named_children:
                _stmt(unit, c, "", None)
        finally:
            unit.ifs.pop()
        return
    cond: list[Node] = []
    body: list[Node] = []
    seen_then = False
    for c in node.children:
        if c.type == "then":
            seen_then = True
        elif c.is_named and c.type != "comment":
            (body if seen_then else cond).append(c)
    _branch(unit, cond, body)


def _tests_of(node: Node) -> list[str]:
    if node.type == "test_command":
        return _test_node_paths(node)
    if node.type == "command":
        cmd = _cmd(node)
        return _test_paths(cmd.argv)
    if node.type in ("list", "redirected_statement", "negated_command"):
        return [p for c in node.named_children for p in _tests_of(c)]
    return []


def _test_node_paths(node: Node) -> list[str]:
    out = []
    for n in _walk(node):
        if n.type == "unary_expression" and n.child_count >= 2:
            op, arg = n.children[0], n.children[-1]
            if _text(op) in _FILE_TESTS:
                out.append(_word(arg)[0])
    return out


def _test_paths(argv: list[str]) -> list[str]:
    """The operands of `test -s X` (a command named test or [)."""
    if not argv or argv[0] not in ("[", "[[", "test"):
        return []
    return [b for a, b in zip(argv, argv[1:], strict=False) if a in _FILE_TESTS]


def _walk(node: Node) -> Iterator[Node]:
    yield node
    for c in node.children:
        yield from _walk(c)


def _substitutions(unit: Unit, node: Node) -> None:
    """`$(...)`, backquotes and `<(...)` anywhere under a node: each body is linted."""
    for c in node.children:
        if c.type in ("command_substitution", "process_substitution"):
            for s in c.named_children:
                _stmt(unit, s, "", None)
        elif c.child_count and c.type not in _SKIP:
            _substitutions(unit, c)


def _word(node: Node) -> tuple[str, bool]:
    """A word's text as the command receives it (quotes removed, `$X` kept), and whether
    an unquoted `*`/`?` in it globs."""
    t = node.type
    if t == "raw_string":
        return _text(node)[1:-1], False
    if t == "ansi_c_string":
        return _text(node)[2:-1], False
    if t in ("string", "translated_string"):
        raw = _text(node)
        return raw[raw.index('"') + 1:-1] if '"' in raw else raw, False
    if t == "concatenation":
        parts = [_word(c) for c in node.children]
        return "".join(p for p, _ in parts), any(g for _, g in parts)
    if t == "word":
        raw = _text(node)
        unescaped = re.sub(r"\\(.)", r"\1", raw)
        return unescaped, bool(re.search(r"(?<!\\)[*?]", raw))
    return _text(node), False


def _cmd(node: Node) -> Cmd:
    argv: list[str] = []
    globs: list[bool] = []
    for c in node.children:
        if c.type in ("comment", "file_redirect", "heredoc_redirect", "herestring_redirect"):
            continue
        if c.type == "command_name":
            c = c.children[0] if c.child_count else c
        if not c.is_named:
            continue
        text, glob = (_text(c), False) if c.type == "variable_assignment" else _word(c)
        argv.append(text)
        globs.append(glob)
    cmd = Cmd(node, argv, globs)
    cmd.tests = _test_paths(argv)
    return cmd


# ---- one simple command -----------------------------------------------------------------

def _command(unit: Unit, node: Node, sep: str, prev: Cmd | None,
             redirects: list[Node] | None = None) -> Cmd:
    _substitutions(unit, node)
    cmd = _cmd(node)
    argv = cmd.argv
    text = _text(node)
    if not argv:
        return cmd
    head = os.path.basename(argv[0])
    if "systemd-run" in text and "MemoryMax=" in text and "MemorySwapMax=0" not in text:
        unit.add(node, "memorymax-without-swapmax", "systemd-run caps MemoryMax but not swap")
    if head == "jq" and any(_JQ_TASK_ID.search(a) for a in argv[1:]) or (
            head == "grep" and any(_GREP_TASK_ID.match(a) for a in argv[1:])):
        unit.add(node, "hardcoded-task-id", "selects a pueue task by a literal id")
    if head == "set":
        _set(unit, argv)
    elif head == "cd":
        unit.cd_seen = True
    elif head == "head" and sep in ("|", "|&") and unit.pipefail:
        unit.add(node, "pipefail-head", "`| head` under `set -o pipefail` exits 141 on SIGPIPE")
    ssh = _ssh_index(argv)
    if ssh is not None:
        _ssh(unit, node, cmd, ssh, redirects or [])
        return cmd
    _shell_c(unit, node, cmd)
    _pueue(unit, node, argv)
    _sbatch(unit, node, argv)
    _container_memory(unit, node, argv)
    _rm(unit, cmd, sep, prev)
    _find_delete(unit, cmd)
    _merge(unit, cmd, redirects or [])
    for r in redirects or []:
        if _shell_fed(argv):
            _heredoc(unit, r, remote=unit.remote, per_job=unit.per_job)
    return cmd


def _redirected(unit: Unit, node: Node, sep: str, prev: Cmd | None) -> Cmd | None:
    body = node.child_by_field_name("body")
    redirects = [c for c in node.children if c is not body]
    for r in redirects:
        _substitutions(unit, r)
    cmd: Cmd | None
    if body is not None and body.type == "command":
        cmd = _command(unit, body, sep, prev, redirects)
    else:
        cmd = _stmt(unit, body, sep, prev) if body is not None else None
    for r in redirects:
        if r.type != "heredoc_redirect":
            continue
        # `cat <<EOF | ssh h bash`: the pipeline after the heredoc start, fed the body
        for c in r.named_children:
            if c.type in _SKIP or c.type in ("heredoc_start", "heredoc_end"):
                continue
            readers = [n for n in _walk(c) if n.type == "command"]
            _stmt(unit, c, "|", None)
            first = _cmd(readers[0]).argv if readers else []
            if _ssh_index(first) is not None:
                _heredoc(unit, r, remote=True, per_job=unit.loops > 0 or unit.per_job)
            elif _shell_fed(first):
                _heredoc(unit, r, remote=unit.remote, per_job=unit.per_job)
    for r in redirects:
        if r.type == "file_redirect":
            _redirect(unit, r)
    return cmd


def _set(unit: Unit, argv: list[str]) -> None:
    for k, tok in enumerate(argv[1:-1], start=1):
        if argv[k + 1] == "pipefail" and tok.lstrip("-+").endswith("o"):
            unit.pipefail = tok.startswith("-")


def _ssh_index(argv: list[str]) -> int | None:
    for k, tok in enumerate(argv):
        if os.path.basename(tok) == "ssh":
            return k if k == 0 or argv[0] in WRAPPERS else None
    return None


def _shell_fed(argv: list[str]) -> bool:
    """`bash`, `sh -s`, `sudo bash`: a command that runs its stdin as shell."""
    words = [os.path.basename(a) for a in argv if not a.startswith("-")]
    return bool(words) and (words[0] in SHELLS or (words[0] in WRAPPERS and
                                                   any(w in SHELLS for w in words[1:3])))


def _ssh(unit: Unit, node: Node, cmd: Cmd, k: int, redirects: list[Node]) -> None:
    argv = cmd.argv
    rest = list(range(k + 1, len(argv)))
    while rest and argv[rest[0]].startswith("-"):
        opt = argv[rest.pop(0)]
        if len(opt) == 2 and opt[1] in _SSH_VALUE_OPTS and rest:
            rest.pop(0)
    if not rest:
        return
    remote_idx = rest[1:]
    per_job = unit.loops > 0 or argv[0] in PER_JOB_WRAPPERS or unit.per_job
    words = [argv[i] for i in remote_idx]
    sub = unit.child(b"", Origin(), remote=True, per_job=per_job)
    if len(remote_idx) == 1:
        sub = _inline(unit, _arg_node(cmd.node, remote_idx[0]), words[0], remote=True,
                      per_job=per_job)
    elif words:
        line, col = unit.at(node)
        sub = unit.child(" ".join(words).encode("utf-8", "surrogateescape"),
                         Origin(line, col, fixed=True), remote=True, per_job=per_job)
        _block(sub, parse(sub.source).root_node)
    runs_shell = not words or os.path.basename(words[0]) in SHELLS
    for r in redirects:
        if runs_shell:
            _heredoc(unit, r, remote=True, per_job=per_job, into=sub)
    if sub.per_job and sub.adds:  # AP-12: adds pueue jobs, and itself runs once per job
        unit.add(node, "ssh-per-job", "one `ssh ... pueue add` per job (a round trip each)")


def _arg_node(node: Node, index: int) -> Node | None:
    """The index-th word node of a command (as counted in Cmd.argv)."""
    n = 0
    for c in node.children:
        if c.type in ("comment", "file_redirect", "heredoc_redirect", "herestring_redirect") \
                or not c.is_named:
            continue
        if n == index:
            return c
        n += 1
    return None


def _inline(unit: Unit, arg: Node | None, command: str, **kw: Any) -> Unit:
    """A command inside one argument (`ssh h "..."`, `bash -c '...'`) as its own unit, at
    its own line:col when the argument is a plain one-line string."""
    source = command.encode("utf-8", "surrogateescape")
    if arg is not None and arg.type in ("string", "raw_string") and "\\" not in command:
        line, col = unit.at(arg)
        origin = Origin(line, col + 1) if not unit.origin.fixed else unit.origin
    else:
        line, col = unit.at(arg) if arg is not None else (unit.origin.line, unit.origin.col)
        origin = Origin(line, col, fixed=True)
    sub = unit.child(source, origin, **kw)
    _block(sub, parse(source).root_node)
    return sub


def _shell_c(unit: Unit, node: Node, cmd: Cmd) -> None:
    argv = cmd.argv
    k = 0
    while k < len(argv) and os.path.basename(argv[k]) in WRAPPERS:
        k += 1
    if k < len(argv) - 2 and os.path.basename(argv[k]) in SHELLS and argv[k + 1] == "-c":
        _inline(unit, _arg_node(node, k + 2), argv[k + 2], remote=unit.remote,
                per_job=unit.per_job or argv[0] in PER_JOB_WRAPPERS)


def _heredoc(unit: Unit, redirect: Node, *, remote: bool, per_job: bool,
             into: Unit | None = None) -> None:
    """A heredoc body that runs as shell (here, or on the host of an `ssh`)."""
    if redirect.type != "heredoc_redirect":
        return
    body = next((c for c in redirect.children if c.type == "heredoc_body"), None)
    if body is None:
        return
    line, _ = unit.at(body)
    source = unit.source[body.start_byte:body.end_byte]
    if into is None:
        sub = unit.child(source, Origin(line, 1, unit.origin.fixed), remote=remote,
                         per_job=per_job, loops=unit.loops if not remote else 0)
    else:
        sub = into
        sub.source, sub.origin, sub._lines = source, Origin(line, 1, unit.origin.fixed), None
    _block(sub, parse(source).root_node)


def _sbatch(unit: Unit, node: Node, argv: list[str]) -> None:
    """AP-12 on Slurm: an sbatch run once per job (a loop, xargs, or a per-job ssh)."""
    k = next((n for n, t in enumerate(argv) if os.path.basename(t) == "sbatch"), None)
    if k is None or (k > 0 and os.path.basename(argv[0]) not in WRAPPERS):
        return
    if unit.loops > 0 or os.path.basename(argv[0]) in PER_JOB_WRAPPERS or unit.per_job:
        if not any(a.startswith("--array") or a == "-a" for a in argv[k + 1:]):
            unit.add(node, "sbatch-per-job", "one `sbatch` per job (use one job array)")


# `docker/podman run` options that take no value (the rest take one: `-v X`, `--name X`)
_RUN_FLAGS = {"--rm", "--init", "--privileged", "--read-only", "--detach", "--interactive",
              "--tty", "--no-healthcheck", "--oom-kill-disable", "--publish-all", "--quiet",
              "--replace", "--sig-proxy", "--disable-content-trust", "--use-api-socket"}


def _run_options(args: list[str]) -> dict[str, str]:
    """`docker run` options before the image -> {long or short name: value} (last wins).
    Short flags combine (`-it`, `-dit`); `-m8g` and `--memory=8g` carry their value."""
    out: dict[str, str] = {}
    n = 0
    while n < len(args):
        a = args[n]
        if a == "--" or not a.startswith("-") or a == "-":
            break  # the image: what follows is the container's own command
        if a.startswith("--"):
            name, eq, value = a.partition("=")
            if eq or name in _RUN_FLAGS:
                out[name] = value
                n += 1
                continue
        elif a[1:] and all(c in "ditPq" for c in a[1:]):
            n += 1
            continue
        elif len(a) > 2:  # -m8g
            out[a[:2]] = a[2:]
            n += 1
            continue
        else:
            name = a
        out[name] = args[n + 1] if n + 1 < len(args) else ""
        n += 2
    return out


def _container_memory(unit: Unit, node: Node, argv: list[str]) -> None:
    """INV-7 for `docker run` / `podman run` (also `container run`): `--memory` without a
    `--memory-swap` of the same size lets the container swap as much again."""
    k = next((n for n, t in enumerate(argv) if os.path.basename(t) in ("docker", "podman")),
             None)
    if k is None or (k > 0 and os.path.basename(argv[0]) not in WRAPPERS):
        return
    rest = argv[k + 1:]
    if rest[:2] == ["container", "run"]:
        rest = rest[1:]
    if not rest or rest[0] != "run":
        return
    opts = _run_options(rest[1:])
    memory = opts.get("--memory") or opts.get("-m")
    if not memory:
        return
    swap = opts.get("--memory-swap")
    if swap is None or swap.strip().lower() != memory.strip().lower():
        unit.add(node, "memory-without-swap-limit",
                 f"{os.path.basename(argv[k])} run caps --memory {memory} but not swap "
                 f"(--memory-swap {swap or 'unset: as much swap again'})")


def _pueue(unit: Unit, node: Node, argv: list[str]) -> None:
    j = 0
    while j < len(argv) and re.match(r"[A-Za-z_]\w*=", argv[j]):
        j += 1
    if j < len(argv) and _PUEUE_WORD.search(argv[j]):
        k: int | None = j
    elif j < len(argv) and os.path.basename(argv[j]) in WRAPPERS:
        k = next((n for n in range(j + 1, len(argv)) if _PUEUE_WORD.search(argv[n])), None)
    else:
        k = None
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
    if sub == "restart":
        unit.add(node, "pueue-restart",
                 "`pueue restart` copies the task (no dependencies, stale log)")
    if sub == "parallel" and "0" in positional:
        unit.add(node, "parallel-zero", "`pueue parallel 0` means unlimited parallelism")
    ids = [p for p in positional if p.isdigit()] if sub in _ID_SUBCOMMANDS else []
    if sub == "env" and len(positional) > 1 and positional[0] == "set":
        ids = [positional[1]] if positional[1].isdigit() else []
    if sub == "add":
        ids = [v for o, v in zip(args, args[1:], strict=False)
               if o in ("-a", "--after") and v.isdigit()]
        _add(unit, node, argv[:k], args)
    if ids:
        unit.add(node, "hardcoded-task-id",
                 f"literal pueue task id {', '.join(ids)} (ids are reused)")


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


def _add(unit: Unit, node: Node, before: list[str], args: list[str]) -> None:
    opts = args[:args.index("--")] if "--" in args else args
    assigns = [t for t in before if re.match(r"[A-Za-z_]\w*=", t)]
    lean = any(t in ("-i", "--ignore-environment", "-") for t in before)
    if assigns and not lean:
        names = ", ".join(a.split("=", 1)[0] for a in assigns)
        unit.add(node, "env-override-add", f"per-job override of {names} on the pueue client")
    if not unit.remote:
        return
    unit.adds += 1
    workdir = any(o in ("-w", "--working-directory") or
                  o.startswith(("-w=", "--working-directory=")) for o in opts)
    if not workdir and not unit.cd_seen:
        unit.add(node, "remote-add-without-workdir",
                 "`pueue add` over SSH without -w or cd: the job runs in $HOME")


def _rm(unit: Unit, cmd: Cmd, sep: str, prev: Cmd | None) -> None:
    argv, globs = cmd.argv, cmd.globs
    start = 1 if argv and argv[0] == "sudo" else 0
    if len(argv) <= start or os.path.basename(argv[start]) != "rm":
        return
    args = list(zip(argv[start + 1:], globs[start + 1:], strict=False))
    flags = [a for a, _ in args if a.startswith("-") and a != "--"]
    targets = [(a, g) for a, g in args if not a.startswith("-")]
    if not targets:
        return
    names = [a for a, _ in targets]
    force = any(a == "--force" or (not a.startswith("--") and "f" in a) for a in flags)
    top = unit.ifs[-1] if unit.ifs else None
    checked = set(prev.tests if prev is not None and sep == "&&" else [])
    if top is not None and not top.in_else:
        checked |= set(top.tests)
    node = cmd.node
    if not force and checked & set(names):
        unit.add(node, "check-then-delete", "file test then `rm`: races with a concurrent delete")
    elif not force and any(JOB_FILE.search(n) for n in names):
        unit.add(node, "delete-without-missing-ok",
                 "`rm` without -f fails when the file is already gone")
    for t, glob in targets:
        if glob and _unscoped(t):
            unit.add(node, "unscoped-glob-delete", f"`rm {t}` deletes every category's files")
    cursors = [t for t in names if CURSORISH.search(t) and not TMPISH.search(t)]
    if cursors and not checked & set(cursors) and _on_success(unit, sep, prev):
        unit.add(node, "cursor-deleted-on-success",
                 f"deletes {cursors[0]} after the work succeeded")


def _on_success(unit: Unit, sep: str, prev: Cmd | None) -> bool:
    if sep == "&&" and prev is not None and not prev.tests:
        return True
    if not unit.ifs or unit.ifs[-1].in_else:
        return False
    top = unit.ifs[-1]
    if RESET_WORDS.search(top.cond) or top.cond.startswith("!"):
        return False
    if top.is_test:
        return bool(SUCCESS_WORDS.search(top.cond) or re.search(r"(-eq|==|=)\s+0\b",
                                                                  top.cond))
    return True


def _unscoped(word: str) -> bool:
    """A glob over data artifacts with nothing variable before its first wildcard:
    `out/*.parquet`, `$OUT/_chunk_*`. A `$VAR` in the file name before the `*`, or in a
    directory below the base, pins it; `*.pyc`, `*.log`, `*.tmp` are no artifacts."""
    if "*" not in word and "?" not in word:
        return False
    head, _, base = word.rpartition("/")
    if not ARTIFACT.search(base):
        return False
    if "$" in re.split(r"[*?]", base, maxsplit=1)[0]:
        return False
    return not any("$" in part for part in head.split("/")[1:])


def _find_delete(unit: Unit, cmd: Cmd) -> None:
    argv = cmd.argv
    if not argv or argv[0] != "find" or not (
            "-delete" in argv or ("-exec" in argv and "rm" in argv)):
        return
    root = next((a for a in argv[1:] if not a.startswith("-")), ".")
    for opt, pat in zip(argv, argv[1:], strict=False):
        if opt in ("-name", "-iname", "-path") and _unscoped(f"{root}/{pat.split('/')[-1]}"):
            unit.add(cmd.node, "unscoped-glob-delete",
                     f"`find ... {opt} {pat} -delete` spans categories")


def _merge(unit: Unit, cmd: Cmd, redirects: list[Node]) -> None:
    argv = cmd.argv
    cat = argv[0] == "cat" and any(r.type == "file_redirect" for r in redirects)
    if cat:
        sources = [a for a, g in zip(argv[1:], cmd.globs[1:], strict=False) if g]
    elif any(MERGE_WORDS.search(a) for a in argv):
        sources = argv[1:]
    else:
        return
    for a in sources:
        if _unscoped(a):
            unit.add(cmd.node, "unscoped-glob-delete", f"merges `{a}` across every category")


def _redirect(unit: Unit, node: Node) -> None:
    op = next((c for c in node.children if not c.is_named), None)
    dest = node.child_by_field_name("destination")
    if op is None or dest is None or _text(op) not in (">", ">|"):
        return
    target, _ = _word(dest)
    if not STATEISH.search(target) or TMPISH.search(target) or target.startswith("/dev/"):
        return
    if re.search(r"\bmv\b[^\n]*" + re.escape(target), unit.text):
        return
    unit.add(node, "non-atomic-checkpoint-write", f"`> {target}` truncates the checkpoint in place")
