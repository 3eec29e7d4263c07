"""Plan-time invariants: the pure checks `plan_batch` (playbook.py) runs on a playbook's
expansion before anything touches a host. Every violation is a ConfigError (exit 2) naming
the rule, the parameter and the template:

* INV-1: a parameter that varies across jobs appears in the label and in every shared
  path template (artifacts, checkpoints, temp dirs, locks) - AP-2's FileNotFoundError.
* INV-9: artifact templates carry every category dimension; cleanup/merge globs are scoped
  to one category - AP-17's mixed Parquet.
* unique labels (INV-8) that neither hold a tab/newline nor end like a retry; no unknown
  placeholders; placeholder values are shell-quoted by `render`, so a command template
  must not quote them itself.
* INV-5 (config is the single source of truth): a per-job environment override is refused
  unless the playbook declares it in `env_overrides`.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence

from ..errors import ConfigError

# the limits of one `pueue add` line, shared with the feeder that checks them on the host
from ..hostside.model import MAX_COMMAND as MAX_COMMAND
from ..hostside.model import MAX_LABEL as MAX_LABEL
from ..inventory import Host
from .model import SPLIT_NAMES, Draft, JobSpec, Playbook
from .retry import attempt_of
from .templates import fields, render

_ASSIGN = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=")


# ---- INV-1: the dimensions that vary across jobs -----------------------------------------

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


def require_known(template: str, where: str, names: Sequence[str], known: set[str]) -> None:
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


# ---- placeholders, labels, rendered paths ------------------------------------------------

def check_unquoted(template: str, where: str) -> None:
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


def check_templates(drafts: Sequence[Draft], src: str) -> None:
    """INV-1 on every template the jobs use (label, command, path templates), each over the
    jobs that share it; and every placeholder known, none quoted in a command."""
    by_template: dict[tuple[str, str], list[Draft]] = {}
    for d in drafts:
        ph = d.phase
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
            require_known(template, f"{src}: {where}", names, set(group[0].values))
            check_unquoted(template, f"{src}: {where}")
            _inv1(template, where, names, varying, "those jobs would run the same command")
        else:
            kind, _, where = tag.partition("|")
            names = fields(template, f"{src}: {where}")
            require_known(template, f"{src}: {where}", names, set(group[0].values) | known_all)
            _inv1(template, where, names, varying,
                  "concurrent jobs would share (and delete) one file")




def shown(value: str, limit: int = 60) -> str:
    """A value for a one-line error: repr, cut short when huge (a 1 MB label)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(value)} characters)"


def check_label(label: str, where: str) -> None:
    if not label.strip() or any(ch in label for ch in "\t\n\r\0"):
        raise ConfigError(f"{where}: rendered label {shown(label)} is empty or holds a "
                          "tab/newline/NUL (receipts are label<TAB>id lines); remove it from "
                          "the label template and its values")
    if len(label) > MAX_LABEL:
        raise ConfigError(f"{where}: rendered label {shown(label)} is longer than {MAX_LABEL} "
                          "characters; shorten the label template or its values")
    if attempt_of(label) > 0:
        raise ConfigError(f"{where}: label {label!r} ends like a retry (-retry-N), which is "
                          "reserved for fresh re-adds of failed jobs")


def check_command(command: str, template: str, where: str) -> None:
    """A rendered command that cannot reach pueue intact: a carriage return (a CRLF file's
    `\\r` escape, or pasted from Windows) would reach `sh -c` as part of the last word,
    a NUL cannot be an argv string at all, and one over MAX_COMMAND fails with E2BIG."""
    if "\0" in command or "\r" in command:
        bad = "a NUL" if "\0" in command else "a carriage return (\\r)"
        raise ConfigError(f"{where}: command {shown(template)} renders with {bad}; remove it "
                          "from the template and the matrix values (save with LF endings)")
    if len(command.encode()) > MAX_COMMAND:
        raise ConfigError(f"{where}: command {shown(template)} renders to "
                          f"{len(command.encode())} bytes, over the {MAX_COMMAND}-byte limit "
                          "of one argument; move the data to a file the job reads")


def check_unique(jobs: Sequence[JobSpec], playbook: Playbook, host: Host) -> None:
    seen: dict[str, JobSpec] = {}
    paths: dict[str, JobSpec] = {}
    for j in jobs:
        if j.label in seen:
            raise ConfigError(f"{playbook.source}: label {shown(j.label)} is produced twice "
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


# ---- INV-9 -------------------------------------------------------------------------------

def check_categories(playbook: Playbook, drafts: Sequence[Draft],
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
            require_known(glob, f"{src}: {where}", names, known)
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


# ---- INV-5 -------------------------------------------------------------------------------

def check_env(playbook: Playbook) -> None:
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
