"""Playbooks: playbooks/*.toml loaded into frozen dataclasses, and the pure planner.

`plan_batch(playbook, host)` expands matrix x epoch split into JobSpecs and enforces the
plan-time invariants before anything touches a host (every error is a ConfigError, exit 2):

* INV-1: a parameter that varies across jobs appears in the label and in every shared
  path template (artifacts, checkpoints, temp dirs, locks) - AP-2's FileNotFoundError.
* INV-9: artifact templates carry every category dimension; cleanup/merge globs are scoped
  to one category - AP-17's mixed Parquet.
* unique labels; no unknown placeholders; placeholder values are shell-quoted here, so a
  template must not quote them itself.
* INV-5 (config is the single source of truth): a per-job environment override is refused
  unless the playbook declares it in `env_overrides`.
"""

from __future__ import annotations

import calendar
import fnmatch
import functools
import itertools
import os
import re
import shlex
import string
import tomllib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .inventory import Host, parse_size
from .remote import quote
from .retry import attempt_of

PATH_KINDS = ("artifacts", "checkpoints", "temp_dirs", "locks")
SPLIT_NAMES = ("epoch", "start", "end")  # one dimension, three spellings
RESERVED = frozenset({"label", "group", "phase", "playbook", *SPLIT_NAMES})
DEFAULT_RETRY_BUDGET = 2
DEFAULT_UNIT_SIZE = 500
DEFAULT_UNIT_PARALLEL = 4
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ASSIGN = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=")

Scalar = str | int | float | bool


# ---- data -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Split:
    by: str  # year | month
    start: date
    end: date

    def epochs(self) -> list[dict[str, str]]:
        """[{epoch, start, end}] with inclusive ISO dates, clamped to start..end."""
        out = []
        y, m = self.start.year, self.start.month
        while date(y, m, 1) <= self.end:
            if self.by == "year":
                lo, hi, name = date(y, 1, 1), date(y, 12, 31), f"{y}"
                y += 1
            else:
                lo = date(y, m, 1)
                hi = date(y, m, calendar.monthrange(y, m)[1])
                name = f"{y}-{m:02d}"
                y, m = (y + 1, 1) if m == 12 else (y, m + 1)
            out.append({"epoch": name, "start": max(lo, self.start).isoformat(),
                        "end": min(hi, self.end).isoformat()})
        return out


@dataclass(frozen=True)
class Phase:
    name: str  # "" when the playbook has no [[phases]]
    command: str
    label: str
    group: str
    workdir: str | None
    memory_max: int | None
    matrix: tuple[tuple[str, tuple[str, ...]], ...]
    split: Split | None
    paths: tuple[tuple[str, str, str], ...]  # (kind, template, where)
    env: tuple[tuple[str, str], ...] = ()
    after_phase: str | None = None


@dataclass(frozen=True)
class AfterStep:
    label: str
    command: str
    group: str
    workdir: str | None
    memory_max: int | None


@dataclass(frozen=True)
class Playbook:
    name: str
    source: str
    phases: tuple[Phase, ...]
    after: tuple[AfterStep, ...] = ()
    categories: tuple[str, ...] = ()
    cleanup: tuple[str, ...] = ()
    merge: tuple[str, ...] = ()
    env_overrides: tuple[str, ...] = ()
    pass_env: tuple[str, ...] = ()
    retry_budget: int = DEFAULT_RETRY_BUDGET
    unit_size: int = DEFAULT_UNIT_SIZE
    unit_parallel: int = DEFAULT_UNIT_PARALLEL


@dataclass(frozen=True)
class JobSpec:
    label: str
    group: str
    workdir: str  # as written (may start with ~); batch.py makes it absolute on the host
    command: str  # rendered; placeholder values already quoted
    memory_max: int | None = None
    env: tuple[tuple[str, str], ...] = ()
    after: tuple[str, ...] = ()  # labels this job waits for (pueue --after)
    phase: str = ""
    kind: str = "job"  # job | after
    params: tuple[tuple[str, str], ...] = ()
    paths: tuple[tuple[str, str], ...] = ()  # (kind, rendered path)

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "group": self.group, "workdir": self.workdir,
                "command": self.command, "memory_max": self.memory_max,
                "env": dict(self.env), "after": list(self.after), "phase": self.phase,
                "kind": self.kind, "params": dict(self.params),
                "paths": [list(p) for p in self.paths]}


@dataclass(frozen=True)
class Plan:
    playbook: str
    host: str
    jobs: tuple[JobSpec, ...]
    after: tuple[JobSpec, ...] = ()
    retry_budget: int = DEFAULT_RETRY_BUDGET
    unit_size: int = DEFAULT_UNIT_SIZE
    unit_parallel: int = DEFAULT_UNIT_PARALLEL
    pass_env: tuple[str, ...] = ()
    source: str = ""

    @property
    def groups(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(j.group for j in (*self.jobs, *self.after)))

    @property
    def wants_memory_cap(self) -> bool:
        return any(j.memory_max for j in (*self.jobs, *self.after))

    def to_dict(self) -> dict[str, Any]:
        return {"playbook": self.playbook, "host": self.host, "count": len(self.jobs),
                "groups": list(self.groups), "jobs": [j.to_dict() for j in self.jobs],
                "after": [j.to_dict() for j in self.after]}


# ---- templates --------------------------------------------------------------------------

_FORMATTER = string.Formatter()


def fields(template: str, where: str) -> list[str]:
    """Placeholder names of a template; only bare `{name}` (no format spec, no index)."""
    try:
        parts = list(_FORMATTER.parse(template))
    except ValueError as exc:
        raise ConfigError(f"{where}: bad template {template!r} ({exc}); write {{{{ for a "
                          "literal brace") from None
    names = []
    for _, name, spec, conv in parts:
        if name is None:
            continue
        if not _IDENT.match(name) or spec or conv:
            raise ConfigError(f"{where}: placeholder {{{name}{'!' + conv if conv else ''}"
                              f"{':' + spec if spec else ''}}} in {template!r} is not a bare "
                              "{name}; format specs and indexing are not supported")
        names.append(name)
    return names


@functools.lru_cache(maxsize=256)
def _fields_cached(template: str, where: str) -> tuple[str, ...]:
    return tuple(fields(template, where))


def render(template: str, values: Mapping[str, str], *, shell: bool = False) -> str:
    """Substitute placeholders; with shell=True each value goes through `quote` (the one
    quoting helper), so `--symbol {symbol}` survives spaces and metacharacters."""
    out = []
    for literal, name, _, _ in _FORMATTER.parse(template):
        out.append(literal)
        if name is not None:
            value = values[name]
            out.append(quote(value) if shell else value)
    return "".join(out)


def _check_unquoted(template: str, where: str) -> None:
    """Placeholders in a command are quoted for the shell by us; a template that quotes
    them too would break on the first value with a space (''BTC USDT'')."""
    quote_char = None
    i = 0
    while i < len(template):
        ch = template[i]
        if ch == "\\" and quote_char != "'":
            i += 2
            continue
        if quote_char is None and ch in "'\"":
            quote_char = ch
        elif ch == quote_char:
            quote_char = None
        elif ch == "{" and quote_char is not None:
            if template.startswith("{{", i):
                i += 2
                continue
            raise ConfigError(f"{where}: placeholder inside quotes in {template!r}; remove the "
                              "quotes - every value is shell-quoted for you")
        i += 1


def env_assignments(command: str) -> list[str]:
    """Names a shell command assigns for itself: `K=V cmd`, `env [-i] K=V cmd`, `export K=V`.
    These override the project's configured defaults for this job only (INV-5)."""
    try:
        lexer = shlex.shlex(command, posix=True, punctuation_chars=";&|()")
        lexer.whitespace_split = True
        tokens = list(lexer)
    except ValueError:
        return []
    names: list[str] = []
    at_start, after_env, skip = True, False, False
    for tok in tokens:
        if skip:  # the argument of `env -u NAME` / `env -C DIR`
            skip = False
            continue
        if tok and set(tok) <= set(";&|()"):
            at_start, after_env = True, False
            continue
        m = _ASSIGN.match(tok)
        if m and (at_start or after_env):
            names.append(m.group(1))
            continue
        if at_start and tok in ("env", "export"):
            after_env, at_start = True, False
            continue
        if after_env and tok.startswith("-"):
            skip = tok in ("-u", "--unset", "-C", "--chdir")
            continue
        at_start = after_env = False
    return names


# ---- loading ----------------------------------------------------------------------------

_TOP = {"name", "description", "group", "workdir", "command", "label", "memory_max",
        *PATH_KINDS, "categories", "cleanup", "merge", "env_overrides", "pass_env",
        "retry_budget", "matrix", "split", "env", "phases", "after", "units"}
_PHASE = {"name", "group", "workdir", "command", "label", "memory_max", *PATH_KINDS,
          "matrix", "split", "env", "after_phase"}
_AFTER = {"label", "command", "group", "workdir", "memory_max"}
_SPLIT = {"by", "start", "end", "state_resets_per_epoch"}
_UNITS = {"size", "parallel"}


def _unknown(data: Mapping[str, Any], allowed: Iterable[str], where: str) -> None:
    allowed = set(allowed)
    for key in data:
        if key not in allowed:
            raise ConfigError(f"{where}: unknown key {key!r}; allowed: "
                              f"{', '.join(sorted(allowed))} (fix the spelling or remove it)")


def _str(data: Mapping[str, Any], key: str, where: str, default: str | None = None) -> str:
    value = data.get(key, default)
    if not isinstance(value, str) or not value.strip():
        if value is None:
            raise ConfigError(f"{where}: missing required field {key!r}; add {key} = \"...\"")
        raise ConfigError(f"{where}: field {key!r} must be a non-empty string, got {value!r}")
    return value


def _strs(data: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{where}: field {key!r} must be a list of strings")
    return tuple(value)


def _size(value: Any, where: str) -> int | None:
    if value is None:
        return None
    try:
        return parse_size(str(value))
    except ValueError as exc:
        raise ConfigError(f"{where}: memory_max: {exc}") from None


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _matrix(data: Any, where: str) -> dict[str, tuple[str, ...]]:
    if not isinstance(data, dict):
        raise ConfigError(f"{where} [matrix]: must be a table of name = [values]")
    out = {}
    for key, values in data.items():
        if not _IDENT.match(key) or key in RESERVED:
            raise ConfigError(f"{where} [matrix]: {key!r} is not a usable parameter name "
                              f"(identifiers only; reserved: {', '.join(sorted(RESERVED))})")
        if not isinstance(values, list) or not values or not all(
                isinstance(v, Scalar) for v in values):
            raise ConfigError(f"{where} [matrix]: {key} must be a non-empty list of "
                              "strings or numbers")
        texts = tuple(_scalar(v) for v in values)
        if len(set(texts)) != len(texts):
            raise ConfigError(f"{where} [matrix]: {key} lists a value twice: {list(texts)}")
        out[key] = texts
    return out


def _split(data: Any, where: str) -> Split:
    w = f"{where} [split]"
    if not isinstance(data, dict):
        raise ConfigError(f"{w}: must be a table with by, start, end")
    _unknown(data, _SPLIT, w)
    if data.get("state_resets_per_epoch") is not True:
        raise ConfigError(
            f"{w}: per-epoch jobs are only safe when the job resets its state at every epoch "
            "boundary (AP-9); say so with state_resets_per_epoch = true, or remove [split]")
    by = data.get("by")
    if by not in ("year", "month"):
        raise ConfigError(f"{w}: by must be \"year\" or \"month\", got {by!r}")
    try:
        start, end = (d if isinstance(d, date) else date.fromisoformat(str(d))
                      for d in (data.get("start"), data.get("end")))
    except ValueError:
        raise ConfigError(f"{w}: start and end must be dates (YYYY-MM-DD)") from None
    if end < start:
        raise ConfigError(f"{w}: end {end} is before start {start}")
    return Split(by=by, start=start, end=end)


def _env(data: Any, where: str) -> tuple[tuple[str, str], ...]:
    if data is None:
        return ()
    if not isinstance(data, dict) or not all(
            _IDENT.match(k) and isinstance(v, Scalar) for k, v in data.items()):
        raise ConfigError(f"{where} [env]: must be a table of NAME = \"value\"")
    return tuple((k, _scalar(v)) for k, v in data.items())


def _paths(data: Mapping[str, Any], prefix: str, where: str) -> list[tuple[str, str, str]]:
    return [(kind, t, f"{prefix}{kind}[{i}]")
            for kind in PATH_KINDS for i, t in enumerate(_strs(data, kind, where))]


def _phase(top: Mapping[str, Any], data: Mapping[str, Any], name: str, prefix: str,
           where: str) -> Phase:
    merged = {**top, **{k: v for k, v in data.items() if k != "matrix"}}
    matrix = {**_matrix(top.get("matrix", {}), where), **_matrix(data.get("matrix", {}), where)}
    split_data = merged.get("split")
    # path templates defined in the phase replace the inherited ones; `where` tells which
    own = {k for k in PATH_KINDS if k in data}
    paths = [p for p in _paths(top, "", where) if p[0] not in own]
    paths += _paths(data, prefix, where)
    env = dict(_env(top.get("env"), where))
    env.update(_env(data.get("env"), where))
    return Phase(
        name=name,
        command=_str(merged, "command", where),
        label=_str(merged, "label", where),
        group=_str(merged, "group", where),
        workdir=merged.get("workdir"),
        memory_max=_size(merged.get("memory_max"), where),
        matrix=tuple(matrix.items()),
        split=_split(split_data, where) if split_data is not None else None,
        paths=tuple(paths),
        env=tuple(env.items()),
        after_phase=data.get("after_phase"),
    )


def parse_playbook(data: Mapping[str, Any], source: str) -> Playbook:
    where = source
    _unknown(data, _TOP, where)
    name = _str(data, "name", where)
    if not _NAME.match(name):
        raise ConfigError(f"{where}: name {name!r} may hold letters, digits, '.', '_', '-' "
                          "(it names the batch directory on the host)")
    raw_phases = data.get("phases")
    phases: list[Phase] = []
    if raw_phases is None:
        phases.append(_phase(data, {}, "", "", where))
    else:
        if not isinstance(raw_phases, list) or not raw_phases:
            raise ConfigError(f"{where}: [[phases]] must be a non-empty array of tables")
        for i, p in enumerate(raw_phases):
            pwhere = f"{where} phases[{i}]"
            _unknown(p, _PHASE, pwhere)
            pname = _str(p, "name", pwhere)
            if not _NAME.match(pname) or pname in (q.name for q in phases):
                raise ConfigError(f"{pwhere}: phase name {pname!r} must be unique and simple")
            ap = p.get("after_phase")
            if ap is not None and ap not in (q.name for q in phases):
                raise ConfigError(f"{pwhere}: after_phase {ap!r} must name an earlier phase")
            phases.append(_phase(data, p, pname, f"phases[{i}].", pwhere))
    after = []
    for i, a in enumerate(data.get("after", [])):
        awhere = f"{where} after[{i}]"
        if not isinstance(a, dict):
            raise ConfigError(f"{awhere}: [[after]] entries are tables with label and command")
        _unknown(a, _AFTER, awhere)
        after.append(AfterStep(
            label=_str(a, "label", awhere), command=_str(a, "command", awhere),
            group=_str(a, "group", awhere, data.get("group")), workdir=a.get(
                "workdir", data.get("workdir")),
            memory_max=_size(a.get("memory_max", data.get("memory_max")), awhere)))
    units = data.get("units", {})
    if not isinstance(units, dict):
        raise ConfigError(f"{where} [units]: must be a table with size and parallel")
    _unknown(units, _UNITS, f"{where} [units]")
    ints = {"retry_budget": data.get("retry_budget", DEFAULT_RETRY_BUDGET),
            "units.size": units.get("size", DEFAULT_UNIT_SIZE),
            "units.parallel": units.get("parallel", DEFAULT_UNIT_PARALLEL)}
    for key, value in ints.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < (
                0 if key == "retry_budget" else 1):
            raise ConfigError(f"{where}: {key} must be a positive integer, got {value!r}")
    return Playbook(
        name=name, source=source, phases=tuple(phases), after=tuple(after),
        categories=_strs(data, "categories", where), cleanup=_strs(data, "cleanup", where),
        merge=_strs(data, "merge", where), env_overrides=_strs(data, "env_overrides", where),
        pass_env=_strs(data, "pass_env", where), retry_budget=ints["retry_budget"],
        unit_size=ints["units.size"], unit_parallel=ints["units.parallel"],
    )


def playbook_path(spec: str, directory: str | Path | None = None) -> Path:
    """--playbook: a file path, or a name looked up in ./playbooks (or $JOBSAFE_PLAYBOOKS)."""
    path = Path(spec)
    if path.is_file():
        return path
    base = Path(directory or os.environ.get("JOBSAFE_PLAYBOOKS") or Path.cwd() / "playbooks")
    candidate = base / (spec if spec.endswith(".toml") else f"{spec}.toml")
    if candidate.is_file():
        return candidate
    known = ", ".join(sorted(p.stem for p in base.glob("*.toml"))) if base.is_dir() else "none"
    raise ConfigError(f"playbook {spec!r} not found (looked at {path} and {candidate}; "
                      f"known: {known or 'none'})")


def load_playbook(spec: str | Path) -> Playbook:
    path = playbook_path(str(spec))
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc}); fix the syntax") from None
    return parse_playbook(data, str(path))


# ---- planning ---------------------------------------------------------------------------

def _combos(phase: Phase) -> Iterator[dict[str, str]]:
    names = [k for k, _ in phase.matrix]
    epochs: list[dict[str, str]] = phase.split.epochs() if phase.split else [{}]
    for values in itertools.product(*(v for _, v in phase.matrix)):
        for epoch in epochs:
            yield {**dict(zip(names, values, strict=True)), **epoch}


def _dimension(name: str) -> str:
    return "epoch" if name in SPLIT_NAMES else name


def _covered(names: Iterable[str]) -> set[str]:
    return {_dimension(n) for n in names}


def _varying(jobs: Sequence[Mapping[str, str]]) -> dict[str, list[str]]:
    """Dimension -> distinct values, for dimensions with more than one value."""
    seen: dict[str, dict[str, None]] = {}  # ordered sets
    for params in jobs:
        for k, v in params.items():
            if k in ("start", "end"):
                continue  # the epoch dimension is tracked under `epoch`
            seen.setdefault(k, {})[v] = None
    return {k: list(v) for k, v in seen.items() if len(v) > 1}


def _show(values: Sequence[str], limit: int = 4) -> str:
    head = ", ".join(values[:limit])
    return head + (f", ... ({len(values)} values)" if len(values) > limit else "")


def _require(template: str, where: str, names: Sequence[str], known: set[str]) -> None:
    for n in names:
        if n not in known:
            raise ConfigError(f"{where}: unknown placeholder {{{n}}} in {template!r}; known: "
                              f"{', '.join('{' + k + '}' for k in sorted(known))}")


def _inv1(template: str, where: str, names: Sequence[str], varying: Mapping[str, list[str]],
          what: str) -> None:
    if "label" in names:
        return  # the label carries every varying parameter (checked first)
    covered = _covered(names)
    for dim, values in varying.items():
        if dim not in covered:
            spell = "{start}, {end} or {epoch}" if dim == "epoch" else "{" + dim + "}"
            raise ConfigError(
                f"INV-1: parameter {dim!r} varies across jobs ({_show(values)}) but {where} "
                f"{template!r} does not include it; {what}. Add {spell} to the template")


@dataclass
class _Draft:
    phase: Phase
    params: dict[str, str]
    values: dict[str, str] = field(default_factory=dict)


def plan_batch(playbook: Playbook, host: Host) -> Plan:
    """Pure: playbook x host -> Plan, or ConfigError naming the rule, parameter and template."""
    src = playbook.source
    drafts: list[_Draft] = []
    for phase in playbook.phases:
        host.group(phase.group)  # unknown group: ConfigError naming the host file
        for params in _combos(phase):
            if phase.name:
                params = {**params, "phase": phase.name}
            drafts.append(_Draft(phase, params))
    if not drafts:
        raise ConfigError(f"{src}: the playbook expands to no jobs")
    _check_env(playbook)
    by_template: dict[tuple[str, str], list[_Draft]] = {}
    for d in drafts:
        ph = d.phase
        base = {**d.params, "playbook": playbook.name, "group": ph.group}
        known = set(base)
        lwhere = f"{src}: label" if not ph.name else f"{src}: phase {ph.name!r} label"
        _require(ph.label, lwhere, _fields_cached(ph.label, lwhere), known)
        label = render(ph.label, base)
        _check_label(label, lwhere)
        d.values = {**base, "label": label}
        by_template.setdefault((ph.label, "label"), []).append(d)
        by_template.setdefault((ph.command, "command"), []).append(d)
        for kind, template, where in ph.paths:
            by_template.setdefault((template, f"{kind}|{where}"), []).append(d)
    known_all = {"playbook", "group", "label"}
    for (template, tag), group in by_template.items():
        varying = _varying([d.params for d in group])
        ph = group[0].phase
        if tag == "label":
            where = "the label template" + (f" of phase {ph.name!r}" if ph.name else "")
            _inv1(template, where, fields(template, src), varying,
                  "two jobs would share one pueue label, so dedup and monitoring by label break")
        elif tag == "command":
            where = "command" + (f" of phase {ph.name!r}" if ph.name else "")
            names = fields(template, f"{src}: {where}")
            _require(template, f"{src}: {where}", names, set(group[0].values))
            _check_unquoted(template, f"{src}: {where}")
            _inv1(template, where, names, varying, "those jobs would run the same command")
        else:
            kind, _, where = tag.partition("|")
            names = fields(template, f"{src}: {where}")
            _require(template, f"{src}: {where}", names, set(group[0].values) | known_all)
            _inv1(template, where, names, varying,
                  "concurrent jobs would share (and delete) one file")
    jobs = [_job(d, host) for d in drafts]
    _check_unique(jobs, playbook, host)
    _check_categories(playbook, drafts, jobs)
    by_phase: dict[str, list[str]] = {}
    for j in jobs:
        by_phase.setdefault(j.phase, []).append(j.label)
    jobs = [j if not d.phase.after_phase else _with_after(j, by_phase[d.phase.after_phase])
            for j, d in zip(jobs, drafts, strict=True)]
    after = _after_steps(playbook, host, [j.label for j in jobs])
    _check_unique([*jobs, *after], playbook, host)
    return Plan(playbook=playbook.name, host=host.name, jobs=tuple(jobs), after=tuple(after),
                retry_budget=playbook.retry_budget, unit_size=playbook.unit_size,
                unit_parallel=playbook.unit_parallel, pass_env=playbook.pass_env, source=src)


def _with_after(job: JobSpec, labels: list[str]) -> JobSpec:
    return replace(job, after=tuple(labels))


def _job(d: _Draft, host: Host) -> JobSpec:
    ph = d.phase
    paths = tuple((kind, render(t, d.values)) for kind, t, _ in ph.paths)
    env = tuple((k, render(v, d.values)) for k, v in ph.env)
    return JobSpec(
        label=d.values["label"], group=ph.group, workdir=workdir(ph.workdir, host),
        command=render(ph.command, d.values, shell=True), memory_max=ph.memory_max, env=env,
        phase=ph.name, params=tuple(sorted(d.params.items())), paths=paths)


def workdir(value: str | None, host: Host) -> str:
    """Default: the host's project dir; a relative path is taken inside it (AP-11: a job
    without -w runs in $HOME over SSH)."""
    if not value:
        return host.project_dir
    if "{" in value:
        raise ConfigError(f"workdir {value!r} takes no placeholders: one directory per phase")
    if value.startswith(("/", "~")):
        return value
    return f"{host.project_dir.rstrip('/')}/{value}"


def _check_label(label: str, where: str) -> None:
    if not label.strip() or any(ch in label for ch in "\t\n\r"):
        raise ConfigError(f"{where}: rendered label {label!r} is empty or holds a tab/newline "
                          "(receipts are label<TAB>id lines)")
    if attempt_of(label) > 0:
        raise ConfigError(f"{where}: label {label!r} ends like a retry (-retry-N), which is "
                          "reserved for fresh re-adds of failed jobs")


def _check_unique(jobs: Sequence[JobSpec], playbook: Playbook, host: Host) -> None:
    seen: dict[str, JobSpec] = {}
    paths: dict[str, JobSpec] = {}
    for j in jobs:
        if j.label in seen:
            raise ConfigError(f"{playbook.source}: label {j.label!r} is produced twice "
                              f"({dict(seen[j.label].params)} and {dict(j.params)}); labels "
                              "must be unique (INV-8)")
        seen[j.label] = j
        for kind, path in j.paths:
            other = paths.get(path)
            if other is not None and other.label != j.label:
                raise ConfigError(f"INV-1: jobs {other.label!r} and {j.label!r} both use "
                                  f"{kind} path {path!r}; make the template unique per job")
            paths[path] = j
    for pattern in host.checkpoints:
        names = fields(pattern, f"{host.source}: checkpoints")
        if len(jobs) > 1 and "label" not in names:
            raise ConfigError(f"INV-1: host checkpoint pattern {pattern!r} ({host.source}) "
                              "lacks {label}; every job would share one checkpoint")


def _check_env(playbook: Playbook) -> None:
    declared = set(playbook.env_overrides)
    for ph in playbook.phases:
        where = f"{playbook.source}" + (f" phase {ph.name!r}" if ph.name else "")
        for name, _ in ph.env:
            if name not in declared:
                raise ConfigError(
                    f"INV-5: {where} [env] overrides {name} for its jobs; configuration "
                    "defaults live in the project config. If this per-job override is "
                    f"intended, declare it: env_overrides = [\"{name}\"]")
        for name in env_assignments(ph.command):
            if name not in declared:
                raise ConfigError(
                    f"INV-5: {where} command sets {name} inline, overriding the configured "
                    f"default for this job; declare it with env_overrides = [\"{name}\"] "
                    "(and prefer [env]) if that is intended")
    for step in playbook.after:
        for name in env_assignments(step.command):
            if name not in declared:
                raise ConfigError(f"INV-5: {playbook.source} after step {step.label!r} sets "
                                  f"{name} inline; declare it with env_overrides = "
                                  f"[\"{name}\"] if intended")


def _check_categories(playbook: Playbook, drafts: Sequence[_Draft],
                      jobs: Sequence[JobSpec]) -> None:
    """INV-9: artifacts of different categories never share names, and every declared
    cleanup/merge glob only ever matches one category's artifacts."""
    src = playbook.source
    categories = list(playbook.categories)
    if not categories and len(playbook.phases) > 1:
        categories = ["phase"]  # phases writing to a shared directory are categories
    dims = {_dimension(k) for d in drafts for k in d.params}
    for c in categories:
        if _dimension(c) not in dims:
            raise ConfigError(f"{src}: category {c!r} is not a parameter of the playbook "
                              f"(parameters: {', '.join(sorted(dims))})")
    for ph in playbook.phases:
        for kind, template, where in ph.paths:
            if kind != "artifacts":
                continue
            covered = _covered(fields(template, where))
            for c in categories:
                if _dimension(c) not in covered:
                    raise ConfigError(
                        f"INV-9: artifact template {where} {template!r} lacks category "
                        f"dimension {{{c}}}; artifacts of different categories would mix. "
                        f"Add {{{c}}} to the file name")
    artifacts = [(path, d) for d, j in zip(drafts, jobs, strict=True)
                 for kind, path in j.paths if kind == "artifacts"]
    for kind, globs in (("cleanup", playbook.cleanup), ("merge", playbook.merge)):
        for i, glob in enumerate(globs):
            where = f"{kind}[{i}]"
            names = fields(glob, f"{src}: {where}")
            for c in categories:
                if _dimension(c) not in _covered(names):
                    raise ConfigError(
                        f"INV-9: {where} glob {glob!r} is not scoped to one category: it "
                        f"lacks {{{c}}} and would touch every category's artifacts (AP-17)")
            known = {k for d in drafts for k in d.values}
            _require(glob, f"{src}: {where}", names, known)
            rendered = {render(glob, d.values): d for d in drafts
                        if all(n in d.values for n in names)}
            for pattern, owner in rendered.items():
                mine = tuple(owner.params.get(c, "") for c in categories)
                for path, d in artifacts:
                    theirs = tuple(d.params.get(c, "") for c in categories)
                    if theirs != mine and fnmatch.fnmatchcase(path, pattern):
                        cat = dict(zip(categories, theirs, strict=True))
                        raise ConfigError(
                            f"INV-9: {where} glob {glob!r} renders to {pattern!r}, which also "
                            f"matches {path!r} of category {cat}; "
                            "make the glob stop at the category value")


def _after_steps(playbook: Playbook, host: Host, labels: Sequence[str]) -> list[JobSpec]:
    out: list[JobSpec] = []
    values = {"playbook": playbook.name}
    for i, step in enumerate(playbook.after):
        host.group(step.group)
        where = f"{playbook.source}: after[{i}]"
        vals = {**values, "group": step.group}
        for template in (step.label, step.command):
            _require(template, where, fields(template, where), set(vals) | {"label"})
        label = render(step.label, vals)
        _check_label(label, where)
        _check_unquoted(step.command, where)
        # the first step waits for every job; each later one for the step before it (AP-7)
        deps = tuple(labels) if i == 0 else (out[-1].label,)
        out.append(JobSpec(
            label=label, group=step.group, workdir=workdir(step.workdir, host),
            command=render(step.command, {**vals, "label": label}, shell=True),
            memory_max=step.memory_max, after=deps, kind="after"))
    return out
