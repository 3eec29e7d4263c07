"""`inv lint` configuration: `[tool.jobsafe.lint]` in pyproject.toml, or `[lint]` in
jobsafe.toml, of the ops repo found from the current directory (jobsafe_ops.config.find_root),
or the file given with `--config`. The flags say the same things and add to it (`--select`
replaces the file's select).

    [tool.jobsafe.lint]
    select = ["pueue-restart", "parallel-zero"]   # default: every rule
    ignore = ["delete-without-missing-ok"]
    exclude = ["legacy", "vendor/*.sh"]           # never linted, even when named
    per-file-ignores = { "scripts/admin/*.sh" = ["pueue-restart"] }
    with-shellcheck = true

Patterns are relative to the config file's directory (the flags': the current directory).
A pattern without `/` matches a file or directory name anywhere (`legacy`, `*.bash`); one
with `/` matches the path from there (`vendor/*.sh`, `scripts/**/old_*.sh`), a directory
everything below it. Unknown keys, unknown rule ids and bad values are bad input (exit 2).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .rules import RULES, SHELLCHECK_ID

KEYS = ("select", "ignore", "exclude", "per-file-ignores", "with-shellcheck")


@dataclass(frozen=True)
class Pattern:
    text: str
    base: Path
    regex: re.Pattern[str]

    def matches(self, path: Path) -> bool:
        try:
            rel = path.absolute().relative_to(self.base.absolute())
        except ValueError:
            rel = path
        parts = rel.parts
        if "/" not in self.text:
            return any(self.regex.fullmatch(p) for p in parts)
        return any(self.regex.fullmatch("/".join(parts[:n])) for n in range(1, len(parts) + 1))


def pattern(text: str, base: Path) -> Pattern:
    glob = text.strip().removeprefix("./").strip("/")
    out, i = [], 0
    while i < len(glob):
        if glob.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif glob.startswith("**", i):
            out.append(".*")
            i += 2
        elif glob[i] == "*":
            out.append("[^/]*")
            i += 1
        elif glob[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(glob[i]))
            i += 1
    return Pattern(glob, base, re.compile("".join(out)))


@dataclass(frozen=True)
class LintConfig:
    select: frozenset[str] | None = None  # None: every rule
    ignore: frozenset[str] = frozenset()
    exclude: tuple[Pattern, ...] = ()
    per_file_ignores: tuple[tuple[Pattern, frozenset[str]], ...] = ()
    with_shellcheck: bool = False
    source: str = ""  # the file it came from ("" = none)

    def enabled(self, rule: str, path: Path) -> bool:
        if self.select is not None and rule not in self.select:
            return False
        if rule in self.ignore:
            return False
        return not any(rule in ids and p.matches(path) for p, ids in self.per_file_ignores)

    def excluded(self, path: Path) -> bool:
        return any(p.matches(path) for p in self.exclude)

    def merged(self, flags: LintConfig) -> LintConfig:
        return LintConfig(
            select=flags.select if flags.select is not None else self.select,
            ignore=self.ignore | flags.ignore,
            exclude=self.exclude + flags.exclude,
            per_file_ignores=self.per_file_ignores + flags.per_file_ignores,
            with_shellcheck=self.with_shellcheck or flags.with_shellcheck,
            source=self.source)


def rule_ids(values: Iterable[Any], where: str) -> frozenset[str]:
    out = set()
    for v in values:
        if not isinstance(v, str) or not (v in RULES or SHELLCHECK_ID.fullmatch(v)):
            raise ConfigError(f"{where}: unknown rule {v!r}; use a rule id from "
                              "`jobsafe lint --rules` (or a ShellCheck code such as SC2086)")
        out.add(v)
    return frozenset(out)


def _strings(value: Any, where: str, key: str, example: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: {key} must be a list of strings, got {value!r}; "
                          f"write {key} = {example}")
    return value


def parse(data: Mapping[str, Any], where: str, base: Path) -> LintConfig:
    """A `[lint]` table, checked; an unknown key or bad value is one line (exit 2)."""
    for key in data:
        if key not in KEYS:
            raise ConfigError(f"{where}: unknown key {key!r}; allowed: {', '.join(KEYS)} "
                              "(fix the spelling or remove it)")
    select = None
    if "select" in data:
        select = rule_ids(_strings(data["select"], where, "select", '["pueue-restart"]'),
                          f"{where} select")
    ignore = rule_ids(_strings(data.get("ignore", []), where, "ignore",
                               '["delete-without-missing-ok"]'), f"{where} ignore")
    exclude = tuple(pattern(p, base) for p in
                    _strings(data.get("exclude", []), where, "exclude", '["legacy"]'))
    pfi = data.get("per-file-ignores", {})
    if not isinstance(pfi, dict):
        raise ConfigError(f"{where}: per-file-ignores must be a table of pattern = [rules]; "
                          'write per-file-ignores = { "scripts/*.sh" = ["pueue-restart"] }')
    per_file = tuple((pattern(k, base), rule_ids(
        _strings(v, where, f"per-file-ignores {k!r}", '["pueue-restart"]'),
        f"{where} per-file-ignores {k!r}")) for k, v in pfi.items())
    shellcheck = data.get("with-shellcheck", False)
    if not isinstance(shellcheck, bool):
        raise ConfigError(f"{where}: with-shellcheck must be true or false, got "
                          f"{shellcheck!r}; write with-shellcheck = true")
    return LintConfig(select, ignore, exclude, per_file, shellcheck, where)


def _read(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"lint config {path}: cannot read ({exc.strerror}); fix "
                          "--config") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"lint config {path}: not valid TOML ({exc})") from exc


def _table(path: Path) -> tuple[dict[str, Any], str] | None:
    """The lint table of a jobsafe.toml (`[lint]`) or pyproject.toml
    (`[tool.jobsafe.lint]`), None when it has none."""
    data = _read(path)
    if path.name == "pyproject.toml":
        tool = data.get("tool", {})
        data = tool.get("jobsafe", {}) if isinstance(tool, dict) else {}
        where = f"{path} [tool.jobsafe.lint]"
    else:
        where = f"{path} [lint]"
    table = data.get("lint") if isinstance(data, dict) else None
    if table is None:
        return None
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: must be a table; write [{where.rsplit('[', 1)[1]}")
    return table, where


def load(explicit: str | None = None, start: Path | None = None) -> LintConfig:
    """The lint config: `--config FILE`, else the ops repo's found from `start`."""
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"lint: --config {explicit}: no such file (give a jobsafe.toml "
                              "or a pyproject.toml)")
        found = _table(path)
        return parse(found[0], found[1], path.parent) if found else LintConfig(source=str(path))
    from ..config import CONFIG_FILE, find_root

    start = (start or Path.cwd()).absolute()
    root = find_root(start)
    if root is None:
        for d in (start, *start.parents):  # a plain project: its pyproject.toml
            if (d / "pyproject.toml").is_file():
                root = d
                break
    if root is None:
        return LintConfig()
    tables = [t for p in (root / CONFIG_FILE, root / "pyproject.toml")
              if p.is_file() and (t := _table(p)) is not None]
    if len(tables) > 1:
        raise ConfigError(f"{root / CONFIG_FILE} [lint] and {root / 'pyproject.toml'} "
                          "[tool.jobsafe.lint] both configure lint; keep one of them")
    if not tables:
        return LintConfig()
    return parse(tables[0][0], tables[0][1], root)


@dataclass
class Flags:
    """The lint flags, as text from the command line."""

    select: str | None = None
    ignore: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    per_file_ignores: list[str] = field(default_factory=list)
    with_shellcheck: bool = False

    def config(self, cwd: Path | None = None) -> LintConfig:
        base = (cwd or Path.cwd()).absolute()
        split = _split
        select = rule_ids(split([self.select]), "--select") if self.select else None
        pfi = []
        for item in self.per_file_ignores:
            glob, sep, ids = item.rpartition(":")
            if not sep or not glob.strip() or not ids.strip():
                raise ConfigError(f"--per-file-ignores {item!r} is not PATTERN:RULE[,RULE]; "
                                  "e.g. --per-file-ignores 'scripts/*.sh:pueue-restart'")
            pfi.append((pattern(glob, base), rule_ids(split([ids]),
                                                      f"--per-file-ignores {item!r}")))
        return LintConfig(select, rule_ids(split(self.ignore), "--ignore"),
                          tuple(pattern(p, base) for p in split(self.exclude)), tuple(pfi),
                          self.with_shellcheck)


def _split(values: Iterable[str | None]) -> list[str]:
    return [x for v in values if v for x in (s.strip() for s in v.split(",")) if x]
