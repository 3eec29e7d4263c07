"""`inv lint PATH...`: scan job scripts, Python, TOML (mise, playbooks) and commands files
for the anti-patterns in lint_rules.RULES; print `file:line rule-id message fix: hint`,
exit 1 on findings, 0 when clean, 2 on a missing path or unreadable file.

Kinds, by name first, then by shebang:
* shell: `*.sh`, `*.bash`, or a `#!` line naming sh/bash/zsh/dash/ksh;
* python: `*.py`, or a python shebang;
* mise: `.mise.toml`, `mise.toml`, `mise.<env>.toml`, `.mise.<env>.toml`, `.mise/config.toml`
  - the `[env]` secret rule plus every task's `run` through the shell checks;
* toml (playbooks, anything else): every string under a `command`/`run`/`cmd`/`script`
  key through the shell checks (playbook globs are already checked at plan time, INV-9);
* commands: `*.cmds`, `*.commands`, `commands*.txt` (one shell command per line) and
  `commands*.jsonl`, the file submit-batch uploads (`{"command": ...}` per line, units'
  `unit_commands` too).
Directories are walked (skipping .git, .venv, __pycache__, node_modules and the like);
files there of no known kind are skipped, a named file of no known kind is an error.

Suppression: `# jobsafe: ignore[rule-id]` (or `ignore[a,b]`) on the finding's line or the
line above. A suppression naming an unknown rule, or none, is itself reported
(unknown-suppression), so a typo never silently hides nothing.
"""

from __future__ import annotations

import io
import json
import os
import re
import tokenize
import tomllib
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text

from ..cli import print_json
from ..console import console
from ..errors import ConfigError
from .python import lint_python
from .rules import INVARIANTS, RULES, SECRET_NAME, Finding, finding
from .shell import lint_command, lint_shell

SKIP_DIRS = {".git", ".hg", ".venv", "venv", "__pycache__", "node_modules", ".mypy_cache",
             ".ruff_cache", ".pytest_cache", ".tox", "build", "dist"}
_SHELLS = re.compile(r"^#!.*\b(ba|z|da|k)?sh\b")
_SUPPRESS = re.compile(r"#\s*jobsafe:\s*ignore(?:\[([^\]]*)\])?")
_COMMAND_KEYS = {"command", "run", "cmd", "script"}


@dataclass(frozen=True)
class Report:
    files: int
    findings: tuple[Finding, ...]

    def to_dict(self) -> dict[str, Any]:
        by_rule = Counter(f.rule for f in self.findings)
        return {"findings": [f.to_dict() for f in self.findings],
                "summary": {"files": self.files, "findings": len(self.findings),
                            "by_rule": dict(sorted(by_rule.items()))}}


def kind_of(path: Path, head: str = "") -> str | None:
    """shell | python | mise | toml | commands | commands-jsonl, or None (not ours)."""
    name = path.name
    if re.fullmatch(r"\.?mise(\.[\w-]+)?(\.local)?\.toml", name) or (
            name == "config.toml" and path.parent.name == ".mise"):
        return "mise"
    if name.endswith(".toml"):
        return "toml"
    if name.endswith((".sh", ".bash")):
        return "shell"
    if name.endswith(".py"):
        return "python"
    if name.endswith((".cmds", ".commands")) or re.fullmatch(r"commands.*\.txt", name):
        return "commands"
    if re.fullmatch(r"commands.*\.jsonl", name):
        return "commands-jsonl"
    first = head.splitlines()[0] if head else ""
    if first.startswith("#!"):
        if "python" in first:
            return "python"
        if _SHELLS.match(first):
            return "shell"
    return None


def discover(paths: Iterable[str]) -> list[tuple[Path, str]]:
    """Named paths -> [(file, kind)], in a stable order; ConfigError for a missing path."""
    out: list[tuple[Path, str]] = []
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise ConfigError(f"lint: {raw}: no such file or directory (give existing paths: "
                              "inv lint -- PATH...)")
        if p.is_dir():
            out.extend(_walk(p))
            continue
        kind = kind_of(p, _head(p))
        if kind is None:
            raise ConfigError(f"lint: {raw}: not a shell script, Python, TOML or commands file "
                              "(.sh/.py/.toml/.cmds/commands*.txt/commands*.jsonl or a "
                              "shebang)")
        out.append((p, kind))
    unique: dict[Path, tuple[Path, str]] = {}
    for p, k in out:  # a file named twice (or as a/x and ./a/x) is linted once
        unique.setdefault(p.resolve(), (p, k))
    return list(unique.values())


def _walk(root: Path) -> Iterator[tuple[Path, str]]:
    for d, dirs, files in os.walk(root):
        dirs[:] = sorted(x for x in dirs if x not in SKIP_DIRS)
        for name in sorted(files):
            p = Path(d) / name
            kind = kind_of(p, _head(p) if "." not in name else "")
            if kind is not None:
                yield p, kind


def _head(p: Path) -> str:
    try:
        with p.open("rb") as fh:
            return fh.read(200).decode("utf-8", "replace")
    except OSError:
        return ""


def lint_text(file: str, kind: str, text: str) -> list[Finding]:
    """The findings for one file's text (suppressions applied). Pure."""
    if kind == "shell":
        found = lint_shell(file, text)
    elif kind == "python":
        try:
            found = lint_python(file, text)
        except SyntaxError as exc:
            raise ConfigError(f"lint: {file}:{exc.lineno}: not valid Python ({exc.msg}); fix "
                              "it or leave it out of the paths") from exc
    elif kind in ("mise", "toml"):
        found = _lint_toml(file, kind, text)
    elif kind == "commands":
        found = [f for n, line in enumerate(text.splitlines(), start=1)
                 if line.strip() and not line.lstrip().startswith("#")
                 for f in lint_command(file, n, line, text)]
    else:
        found = _lint_jsonl(file, text)
    return _suppress(file, kind, text, found)


def comments(kind: str, text: str) -> Iterator[tuple[int, str]]:
    """(line, comment text): Python's from tokenize, the others' from the first `#` outside
    quotes, so a string that merely shows the syntax suppresses nothing."""
    if kind == "python":
        try:
            for tok in tokenize.generate_tokens(io.StringIO(text).readline):
                if tok.type == tokenize.COMMENT:
                    yield tok.start[0], tok.string
        except (tokenize.TokenError, SyntaxError):
            return
        return
    for n, line in enumerate(text.splitlines(), start=1):
        quote = ""
        for i, c in enumerate(line):
            if quote:
                quote = "" if c == quote else quote
            elif c in "'\"":
                quote = c
            elif c == "#" and (i == 0 or line[i - 1] in " \t"):
                yield n, line[i:]
                break


def _suppress(file: str, kind: str, text: str, found: list[Finding]) -> list[Finding]:
    allowed: dict[int, set[str]] = {}
    out: list[Finding] = []
    for n, comment in comments(kind, text):
        for m in _SUPPRESS.finditer(comment):
            ids = {x.strip() for x in (m.group(1) or "").split(",") if x.strip()}
            unknown = sorted(ids - RULES.keys()) or ([] if ids else ["(none named)"])
            for u in unknown:
                out.append(finding(file, n, "unknown-suppression",
                                   f"`jobsafe: ignore[...]` names no rule: {u}"))
            allowed.setdefault(n, set()).update(ids)
    for f in found:
        if f.rule in allowed.get(f.line, set()) | allowed.get(f.line - 1, set()):
            continue
        out.append(f)
    return sorted(set(out), key=lambda f: (f.line, f.rule, f.message))


def _strings(data: Any, key: str = "") -> Iterator[tuple[str, str]]:
    """(key, string) for every command-like string value, in document order."""
    if isinstance(data, dict):
        for k, v in data.items():
            yield from _strings(v, k)
    elif isinstance(data, list):
        for v in data:
            yield from _strings(v, key)
    elif isinstance(data, str) and key in _COMMAND_KEYS:
        yield key, data


def _line_of(text: str, value: str, claimed: set[int]) -> int:
    """The line a TOML string value starts on (tomllib keeps no positions): the first
    unclaimed place its opening words appear, escapes aside."""
    first = value.strip().splitlines()[0] if value.strip() else value
    needle = re.split(r"[\"'\\]", first, maxsplit=1)[0][:60]
    start = 0
    while needle and (pos := text.find(needle, start)) >= 0:
        if pos not in claimed:
            claimed.add(pos)
            return text.count("\n", 0, pos) + 1
        start = pos + 1
    return 1


def _lint_toml(file: str, kind: str, text: str) -> list[Finding]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"lint: {file}: not valid TOML ({exc}); fix it or leave it out "
                          "of the paths") from exc
    out: list[Finding] = []
    claimed: set[int] = set()
    for _key, value in _strings(data):
        out.extend(lint_command(file, _line_of(text, value, claimed), value, text))
    if kind == "mise":
        out.extend(_mise_env(file, text, data))
    return out


def _mise_env(file: str, text: str, data: dict[str, Any]) -> list[Finding]:
    """AP-16/G-15: pueue and cron start jobs without mise activation, so a secret in
    `[env]` is empty there (and sits committed in plain text). `_.file`/`_.path`
    directives and empty values are fine."""
    env = data.get("env", {})
    out = []
    for key, value in env.items() if isinstance(env, dict) else ():
        if key.startswith("_") or not SECRET_NAME.search(key) or value in ("", None):
            continue
        m = re.search(rf"(?m)^\s*{re.escape(key)}\s*=", text)
        line = text.count("\n", 0, m.start()) + 1 if m else 1
        out.append(finding(file, line, "mise-env-secret",
                           f"{key} in mise [env]: empty in pueue/cron jobs, committed in "
                           "plain text"))
    return out


def _lint_jsonl(file: str, text: str) -> list[Finding]:
    out: list[Finding] = []
    for n, line in enumerate(text.splitlines(), start=1):
        try:
            item = json.loads(line) if line.strip() else None
        except json.JSONDecodeError:
            continue  # a half-written last line: the feeder skips it too
        if not isinstance(item, dict):
            continue
        commands = [item.get("command")] + [u.get("command") for u in
                                            item.get("unit_commands") or [] if isinstance(u, dict)]
        for c in commands:
            if isinstance(c, str):
                out.extend(lint_command(file, n, c, text))
    return out


def _display(p: Path) -> str:
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(p)


def run_lint(paths: Iterable[str]) -> Report:
    files = discover(paths)
    found: list[Finding] = []
    for p, kind in files:
        try:
            text = p.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise ConfigError(f"lint: {p}: cannot read ({exc.strerror})") from exc
        found.extend(lint_text(_display(p), kind, text))
    return Report(len(files), tuple(found))


def split_paths(values: Iterable[str]) -> list[str]:
    """`--path a,b --path c` and the `-- a b` remainder -> [a, b, c]."""
    return [p for v in values for p in (x.strip() for x in v.split(",")) if p]


def lint_cmd(paths: list[str], json_out: bool, list_rules: bool = False) -> int:
    if list_rules:
        return _print_rules(json_out)
    paths = split_paths(paths)
    if not paths:
        raise ConfigError("lint: no paths given: inv lint -- PATH... (or --path PATH, "
                          "comma-separated or repeated)")
    report = run_lint(paths)
    code = 1 if report.findings else 0
    if json_out:
        print_json(code, result=report.to_dict())
    else:
        for f in report.findings:
            console.print(finding_line(f), soft_wrap=True)
        console.print(summary_line(report), soft_wrap=True)
    return code


def finding_line(f: Finding) -> Text:
    """`file:line rule-id message fix: hint` (one line, no markup interpretation)."""
    t = Text()
    t.append(f"{f.file}:{f.line}", style="bold")
    t.append(" ")
    t.append(f.rule, style="red")
    t.append(f" {f.message} ")
    t.append(f"fix: {f.fix}", style="dim")
    return t


def summary_line(report: Report) -> Text:
    n, files = len(report.findings), report.files
    if not n:
        return Text(f"clean: {files} file(s) checked", style="green")
    hit = len({f.file for f in report.findings})
    return Text(f"{n} finding(s) in {hit} of {files} file(s) checked; suppress a deliberate "
                "one with `# jobsafe: ignore[rule-id]` on or above its line", style="bold red")


def rules_table() -> Table:
    t = Table(title="inv lint rules")
    t.add_column("rule", no_wrap=True)
    for col in ("catches", "fix", "guards"):
        t.add_column(col)
    for r in RULES.values():
        t.add_row(r.id, r.catches, r.fix, ", ".join(r.guards) or "-")
    return t


def _print_rules(json_out: bool) -> int:
    if json_out:
        print_json(0, result={"rules": [{"rule": r.id, "catches": r.catches, "fix": r.fix,
                                         "guards": list(r.guards)} for r in RULES.values()],
                              "invariants": INVARIANTS})
    else:
        console.print(rules_table())
    return 0
