"""Playbooks: playbooks/*.toml loaded into the frozen values of model.py, and the pure planner.

`plan_batch(playbook, host)` expands matrix x epoch split into JobSpecs (placeholder
values shell-quoted in commands) and runs the plan-time invariants of invariants.py
(INV-1/5/9, placeholders, labels) before anything touches a host: every error is a
ConfigError, exit 2.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

from ..config import read_toml
from ..errors import ConfigError
from ..inventory import Host, parse_size
from ..secrecy import check_playbook as check_secrets
from .invariants import (
    check_categories,
    check_command,
    check_env,
    check_label,
    check_templates,
    check_unique,
    check_unquoted,
    require_known,
)
from .model import (
    DEFAULT_RETRY_BUDGET,
    DEFAULT_UNIT_PARALLEL,
    DEFAULT_UNIT_SIZE,
    PATH_KINDS,
    RESERVED,
    AfterStep,
    Draft,
    JobSpec,
    Phase,
    Plan,
    Playbook,
    Scalar,
    Split,
    workdir,
)
from .templates import IDENT, fields, fields_cached, render

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


# ---- loading ----------------------------------------------------------------------------

_TOP = {"name", "description", "group", "workdir", "command", "label", "memory_max",
        *PATH_KINDS, "categories", "cleanup", "merge", "env_overrides", "pass_env",
        "retry_budget", "matrix", "split", "env", "phases", "after", "units",
        "after_scope"}
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
        if not IDENT.match(key) or key in RESERVED:
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


def _workdir(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: workdir must be a directory path, got {value!r}; "
                          "write workdir = \"~/project\" or leave it out")
    if "{" in value:
        raise ConfigError(f"{where}: workdir {value!r} takes no placeholders (one directory "
                          "per phase); use a fixed path and put the parameter in the command")
    return value


def _env(data: Any, where: str) -> tuple[tuple[str, str], ...]:
    if data is None:
        return ()
    if not isinstance(data, dict) or not all(
            IDENT.match(k) and isinstance(v, Scalar) for k, v in data.items()):
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
        workdir=_workdir(merged.get("workdir"), where),
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
            group=_str(a, "group", awhere, data.get("group")), workdir=_workdir(a.get(
                "workdir", data.get("workdir")), awhere),
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
            raise ConfigError(f"{where}: {key} must be a positive integer, got {value!r}; "
                              f"write {key.rpartition('.')[2]} = "
                              f"{DEFAULT_RETRY_BUDGET if key == 'retry_budget' else 4}")
    scope = data.get("after_scope", "fleet")
    if scope not in ("fleet", "host"):
        raise ConfigError(f"{where}: after_scope must be \"host\" (each host of a --spread "
                          f"runs the chain after its own share) or \"fleet\", got {scope!r}")
    return Playbook(
        after_scope=scope, name=name, source=source, phases=tuple(phases), after=tuple(after),
        categories=_strs(data, "categories", where), cleanup=_strs(data, "cleanup", where),
        merge=_strs(data, "merge", where), env_overrides=_strs(data, "env_overrides", where),
        pass_env=_strs(data, "pass_env", where), retry_budget=ints["retry_budget"],
        unit_size=ints["units.size"], unit_parallel=ints["units.parallel"],
    )


def playbook_path(spec: str, directory: str | Path | None = None) -> Path:
    """--playbook: a file path, or a name looked up in $JOBSAFE_PLAYBOOKS, else in the ops
    repo's playbooks/ (jobsafe_ops.config: the repo of the inventory in use)."""
    path = Path(spec)
    if path.is_file():
        return path
    if not directory and not os.environ.get("JOBSAFE_PLAYBOOKS"):
        from ..config import active

        directory = active().playbooks
    base = Path(directory or os.environ["JOBSAFE_PLAYBOOKS"])
    candidate = base / (spec if spec.endswith(".toml") else f"{spec}.toml")
    if candidate.is_file():
        return candidate
    known = ", ".join(sorted(p.stem for p in base.glob("*.toml"))) if base.is_dir() else "none"
    raise ConfigError(f"playbook {spec!r} not found (looked at {path} and {candidate}; "
                      f"known: {known or 'none'})")


def load_playbook(spec: str | Path) -> Playbook:
    path = playbook_path(str(spec))
    return parse_playbook(read_toml(path, "playbook (name, group, command, label, ...)"),
                          str(path))


# ---- planning ---------------------------------------------------------------------------

def _combos(phase: Phase) -> Iterator[dict[str, str]]:
    names = [k for k, _ in phase.matrix]
    epochs: list[dict[str, str]] = phase.split.epochs() if phase.split else [{}]
    for values in itertools.product(*(v for _, v in phase.matrix)):
        for epoch in epochs:
            yield {**dict(zip(names, values, strict=True)), **epoch}


def plan_batch(playbook: Playbook, host: Host) -> Plan:
    """Pure: playbook x host -> Plan, or ConfigError naming the rule, parameter and template."""
    src = playbook.source
    drafts: list[Draft] = []
    for phase in playbook.phases:
        _declared(phase.group, host, src)
        for params in _combos(phase):
            if phase.name:
                params = {**params, "phase": phase.name}
            drafts.append(Draft(phase, params))
    if not drafts:
        raise ConfigError(f"{src}: the playbook expands to no jobs")
    check_secrets(playbook, host.project_dir)  # before INV-5: a secret is never "declared"
    check_env(playbook)
    for d in drafts:
        ph = d.phase
        base = {**d.params, "playbook": playbook.name, "group": ph.group}
        known = set(base)
        lwhere = f"{src}: label" if not ph.name else f"{src}: phase {ph.name!r} label"
        require_known(ph.label, lwhere, fields_cached(ph.label, lwhere), known)
        label = render(ph.label, base)
        check_label(label, lwhere)
        d.values = {**base, "label": label}
    check_templates(drafts, src)
    jobs = [_job(d, host) for d in drafts]
    for j, d in zip(jobs, drafts, strict=True):
        check_command(j.command, d.phase.command, f"{src}: label {j.label!r}")
    check_unique(jobs, playbook, host)
    check_categories(playbook, drafts, jobs)
    by_phase: dict[str, list[str]] = {}
    for j in jobs:
        by_phase.setdefault(j.phase, []).append(j.label)
    jobs = [j if not d.phase.after_phase else _with_after(j, by_phase[d.phase.after_phase])
            for j, d in zip(jobs, drafts, strict=True)]
    after = _after_steps(playbook, host, [j.label for j in jobs])
    check_unique([*jobs, *after], playbook, host)
    return Plan(playbook=playbook.name, host=host.name, jobs=tuple(jobs), after=tuple(after),
                retry_budget=playbook.retry_budget, unit_size=playbook.unit_size,
                unit_parallel=playbook.unit_parallel, pass_env=playbook.pass_env, source=src)


def _declared(group: str, host: Host, src: str) -> None:
    """An unknown group is a ConfigError naming the playbook, the host file and the fix."""
    if group not in host.groups:
        known = ", ".join(sorted(host.groups)) or "none"
        raise ConfigError(f"{src}: group {group!r} is not declared in {host.source} "
                          f"(known: {known}); use one of those, or add [groups.{group}] there")


def _with_after(job: JobSpec, labels: list[str]) -> JobSpec:
    return replace(job, after=tuple(labels))


def _job(d: Draft, host: Host) -> JobSpec:
    ph = d.phase
    paths = tuple((kind, render(t, d.values)) for kind, t, _ in ph.paths)
    env = tuple((k, render(v, d.values)) for k, v in ph.env)
    return JobSpec(
        label=d.values["label"], group=ph.group, workdir=workdir(ph.workdir, host),
        command=render(ph.command, d.values, shell=True), memory_max=ph.memory_max, env=env,
        phase=ph.name, params=tuple(sorted(d.params.items())), paths=paths)


def _after_steps(playbook: Playbook, host: Host, labels: Sequence[str]) -> list[JobSpec]:
    out: list[JobSpec] = []
    values = {"playbook": playbook.name}
    for i, step in enumerate(playbook.after):
        _declared(step.group, host, playbook.source)
        where = f"{playbook.source}: after[{i}]"
        vals = {**values, "group": step.group}
        for template in (step.label, step.command):
            require_known(template, where, fields(template, where), set(vals) | {"label"})
        label = render(step.label, vals)
        check_label(label, where)
        check_unquoted(step.command, where)
        check_command(render(step.command, {**vals, "label": label}, shell=True),
                      step.command, where)
        # the first step waits for every job; each later one for the step before it (AP-7)
        deps = tuple(labels) if i == 0 else (out[-1].label,)
        out.append(JobSpec(
            label=label, group=step.group, workdir=workdir(step.workdir, host),
            command=render(step.command, {**vals, "label": label}, shell=True),
            memory_max=step.memory_max, after=deps, kind="after"))
    return out
