"""Where programs resolve on a host, and the one line for a program that does not (pure).

A non-login SSH session's PATH (`/usr/local/bin:/usr/bin:/bin:/usr/games` on Debian) lacks
`~/.local/bin`, where the official uv and pueue installers put them; the host file's `path`
is prepended to it for every remote command and job (remote.py). Three users:

* `missing_program`: a command that exited 127 -> the program its shell could not find;
  remote.py turns it into `not_found` (exit 4) instead of bash's "command not found";
* `first_program`: a job's command -> the program it starts (env assignments, builtins,
  `sh -c`, our `systemd-run ... -- sh -c` memory-cap wrapper seen through);
* `check_script`: one shell fragment that runs `command -v` for each (workdir, program)
  under the job's environment and prints the index of each that does not resolve;
  submit-batch runs it inside its facts round trip, deploy's re-add before its first add.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from ..hostside.feeder import inner_command
from ..inventory import Host

# what probe reports, in order; each with the host-file key that names it (or None)
PROBED = ("pueue", "uv", "python3", "git", "systemd-run")

# bash: "bash: line 1: uv: command not found"; dash/busybox: "sh: 1: uv: not found";
# zsh: "zsh:1: command not found: uv"; coreutils env (lean `env -i ... pueue add`):
# "env: 'pueue': No such file or directory" (or with ‘’ quotes in a UTF-8 locale)
_NOT_FOUND = (
    re.compile(r"^\S*sh: (?:line \d+: |\d+: )?(?P<p>[^:\s]+): (?:command )?not found\s*$"),
    re.compile(r"^\S*sh:\d*: command not found: (?P<p>\S+)\s*$"),
    re.compile(r"^\S*sh: (?:line \d+: |\d+: )?(?P<p>/[^:]+): No such file or directory\s*$"),
    re.compile(r"^env: ['‘`\"]?(?P<p>[^'’`\"]+)['’`\"]?: No such file or directory\s*$"),
)


def looked_up(name: str) -> bool:
    """A program found through PATH or the host file's pueue/uv keys: `not_found` names
    the key that fixes it. Another missing path (a venv's python) is its caller's to say."""
    return "/" not in name or name.rsplit("/", 1)[-1] in ("pueue", "pueued", "uv")


def missing_program(stderr: str) -> str | None:
    """The program a shell (or env) could not find, from its exit-127 stderr, or None."""
    for line in stderr.splitlines():
        for pattern in _NOT_FOUND:
            m = pattern.match(line.strip())
            if m:
                return m.group("p")
    return None


def host_file(host: Host) -> str:
    return host.source or f"hosts/{host.name}.toml"


def path_shown(host: Host) -> str:
    return "path = [" + ", ".join(f'"{d}"' for d in host.path) + "]"


def key_fix(host: Host, name: str) -> str:
    """How to make `name` resolve: the host-file key to set."""
    base = name.rsplit("/", 1)[-1]
    where = host_file(host)
    dirs = '"~/.local/bin"' if "~/.local/bin" not in host.path else '"/DIR/OF/IT"'
    keyed = {"pueue": "pueue", "pueued": "pueue", "uv": "uv"}.get(base)
    if keyed:
        return (f'set {keyed} = "/full/path/to/{keyed}" or add its directory to path '
                f"(e.g. path = [{dirs}]) in {where}")
    return f"add its directory to path (e.g. path = [{dirs}]) in {where}"


def not_found(host: Host, name: str, what: str = "") -> str:
    """One line: the program, the host, what needed it, and the key to set."""
    needed = f" (needed by {what})" if what else ""
    return (f"{host.name}: {name} not found on the host{needed}: not on the SSH session's "
            f"PATH nor in {path_shown(host)}; install it or {key_fix(host, name)}")


# ---- a job's first program ----------------------------------------------------------

_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_OPERATORS = {";", "&&", "||", "|", "&", "\n", ";;", "|&"}
# run the rest of the simple command as a program: skip the word (and its options)
_PREFIXES = {"exec", "command", "nohup", "time", "env", "nice", "!", "{", "(", "then", "do",
             "else", "elif", "if", "while", "until"}
# builtins that do not start a program: the next simple command is the job
_BUILTINS = {"cd", "export", "set", "unset", "umask", "ulimit", "trap", "source", ".", ":",
             "true", "shopt", "readonly", "declare", "local", "alias", "pushd", "popd",
             "echo", "printf", "test", "[", "wait"}
# keywords whose body we do not follow (loops, case, functions): nothing checked
_OPAQUE = {"for", "case", "select", "function", "coproc", "[[", "}", ")", "fi", "done", "esac"}
_SHELLS = {"sh", "bash", "dash", "zsh", "ksh"}
_OPTION_VALUE = {"nice": {"-n"}, "env": {"-u", "-C", "-S"}}


def _words(command: str) -> list[str] | None:
    lex = shlex.shlex(command, posix=True, punctuation_chars=";&|()\n")
    lex.whitespace = " \t"
    lex.whitespace_split = True
    lex.commenters = "#"
    try:
        return list(lex)
    except ValueError:  # an unbalanced quote: the shell will say so at run time
        return None


def first_program(command: str, depth: int = 0) -> str | None:
    """The program a job's command starts, or None when it cannot be told statically (a
    variable, a substitution, a loop) or is a shell builtin. `FOO=1 uv run x` -> uv,
    `cd sub && uv run x` -> uv (but `cd sub && ./run.sh` -> None: relative to sub),
    `exec python3 -u x` -> python3, `sh -c '...'` and `systemd-run ... -- sh -c '...'`
    (the memory-cap wrapper) -> the inner command's."""
    words = _words(command)
    if not words or depth > 4:
        return None
    i, moved = 0, False
    while i < len(words):
        w = words[i]
        if w in _OPERATORS or w in _PREFIXES or _ASSIGNMENT.match(w):
            if w in _OPTION_VALUE:
                i += 1
                while i < len(words) and words[i].startswith("-"):
                    i += 2 if words[i] in _OPTION_VALUE[w] else 1
                continue
            i += 1
            continue
        if w in _OPAQUE or "$" in w or "`" in w or w.startswith(("-", "<", ">")):
            return None
        if w in _BUILTINS:  # skip to the next simple command
            moved = moved or w in ("cd", "pushd", "popd")
            while i < len(words) and words[i] not in _OPERATORS:
                i += 1
            continue
        rest = words[i + 1:]
        base = w.rsplit("/", 1)[-1]
        if base == "systemd-run" and "--" in rest:
            inner = rest[rest.index("--") + 1:]
            return first_program(shlex.join(inner), depth + 1) if inner else w
        if base in _SHELLS and rest and rest[0].startswith("-") and "c" in rest[0] \
                and len(rest) > 1 and not rest[0].startswith("--"):
            return first_program(rest[1], depth + 1)
        if moved and "/" in w and not w.startswith(("/", "~")):
            return None  # relative to a directory we do not follow
        return w
    return None


# ---- checking them on the host -------------------------------------------------------

@dataclass(frozen=True)
class Check:
    """One program to resolve: in `workdir`, after `prelude` (the job's own exports)."""

    workdir: str
    program: str
    prelude: str = ""


def check_script(checks: Sequence[Check]) -> str:
    """Shell lines printing the index of each check whose program does not resolve
    (`command -v` in a subshell: cd to the workdir, the job's exports, the session PATH -
    which is the job's, the feeder passes it on). Every value quoted."""
    from ..shell import program, quote

    lines = []
    for n, c in enumerate(checks):
        prelude = f"{c.prelude}; " if c.prelude else ""
        lines.append(f"(cd {quote(c.workdir)} 2>/dev/null && {prelude}command -v "
                     f"{program(c.program)} >/dev/null 2>&1) || echo {n}")
    return "\n".join(lines)


def unresolved(checks: Sequence[Check], lines: Sequence[str]) -> list[Check]:
    """The checks named by `check_script`'s output lines."""
    out = []
    for line in lines:
        text = line.strip()
        if text.isdigit() and int(text) < len(checks):
            out.append(checks[int(text)])
    return out


def refusal(host: Host, check: Check, label: str) -> str:
    """The one line for a job whose program does not resolve: nothing was queued."""
    where = "" if check.program.startswith(("/", "~")) or "/" not in check.program else \
        f" (relative to its working directory {check.workdir})"
    dirs = '"~/.local/bin"' if "~/.local/bin" not in host.path else '"/DIR/OF/IT"'
    fix = ("fix the path in the command" if "/" in check.program else
           f"add its directory to path (e.g. path = [{dirs}]) in {host_file(host)}, or use "
           "its full path in the command")
    return (f"{host.name}: {check.program} not found for job {label!r}{where}: not on the "
            f"PATH jobs get (the SSH session's, with {path_shown(host)} in front); nothing "
            f"was queued. Fix: {fix}")


def job_checks(jobs: Sequence[tuple[str, str, str, str]]) -> tuple[list[Check], dict[str, int]]:
    """(label, workdir, command, prelude) per job -> the distinct checks, and each job's
    check index (a job whose first program cannot be told statically has none). A job
    wrapped by the outcome ledger's `run` wrapper is judged by its own command inside."""
    checks: list[Check] = []
    index: dict[Check, int] = {}
    by_label: dict[str, int] = {}
    for label, workdir, command, prelude in jobs:
        name = first_program(inner_command(command))
        if name is None:
            continue
        check = Check(workdir, name, prelude)
        if check not in index:
            index[check] = len(checks)
            checks.append(check)
        by_label[label] = index[check]
    return checks, by_label


def first_refusal(host: Host, checks: Sequence[Check], by_label: dict[str, int],
                  failed: Sequence[str], labels: Sequence[str]) -> str | None:
    """The refusal for the first of `labels` whose check is among the `check_script`
    output lines `failed`, or None when every one resolves."""
    bad = {checks.index(c) for c in unresolved(checks, failed)}
    for label in labels:
        n = by_label.get(label)
        if n is not None and n in bad:
            return refusal(host, checks[n], label)
    return None


GUARD_MARK = "@@unresolved"


def guard(checks: Sequence[Check]) -> str:
    """A prefix for a mutating command: when a check fails, print GUARD_MARK and the
    failed indices and stop (exit 0) before the command runs. (`$( (` keeps its space:
    `$((` would open an arithmetic expansion.)"""
    return (f"m=$( {check_script(checks)}\n); if [ -n \"$m\" ]; then echo {GUARD_MARK}; "
            "printf '%s\\n' \"$m\"; exit 0; fi; ")


def guarded_refusal(host: Host, checks: Sequence[Check], by_label: dict[str, int],
                    stdout: str, labels: Sequence[str]) -> str | None:
    """The refusal when a `guard`ed command stopped at its check, else None."""
    lines = stdout.splitlines()
    if not lines or lines[0].strip() != GUARD_MARK:
        return None
    return first_refusal(host, checks, by_label, lines[1:], labels) or \
        f"{host.name}: a job's program does not resolve; nothing was queued"
