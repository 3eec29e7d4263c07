"""Scoped globs over a category-scoped artifact family (INV-9, AP-17).

AP-17: phase A's merge globbed `_chunk_*.parquet`, read phase B's chunks and wrote an
8.7 M-row mixed Parquet; its cleanup deleted them. So a glob here is built from the family's
declaration, every category must be pinned to one value, and a wildcard in a category is an
error naming the dimension. Parameters may stay open (`symbol="*"` or simply left out).

For a family without a declaration there is the pattern form, `scoped_glob(dir, pattern,
**category)`: every `{name}` placeholder of the pattern is a category and must be given one
value (escaped, so it matches literally), no category may be given that the pattern does not
hold, a pattern without a placeholder is refused (it cannot be scoped), and a `*`, `?` or `[`
right next to a placeholder is refused (`chunk_{phase}*` would also match phase `ab`).
"""

from __future__ import annotations

import glob
import os
import re
from os import PathLike
from pathlib import Path

from .errors import ParamError, UnscopedGlobError
from .paths import CheckpointSpec, Value, encode_value

WILDCARD = "*"
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_GLOB_CHARS = "*?["


def scoped_glob(family: CheckpointSpec | str | PathLike[str], pattern: str | None = None, /,
                **pinned: Value) -> list[Path]:
    """`scoped_glob(spec, **pinned)` for a declared family, or `scoped_glob(dir, pattern,
    **category)` for a glob pattern with `{category}` placeholders (see the module doc)."""
    if isinstance(family, CheckpointSpec):
        if pattern is not None:
            raise ParamError("scoped_glob(spec, ...): the family's names come from the spec; "
                             "pass categories and parameters as keywords, not a pattern")
        return _spec_glob(family, pinned)
    if pattern is None:
        raise ParamError(f"scoped_glob({str(family)!r}): no pattern; pass a pattern with "
                         "{category} placeholders, e.g. '_chunk_{phase}_*.parquet'")
    return _pattern_glob(Path(family).expanduser(), pattern, pinned)


def _pattern_glob(directory: Path, pattern: str, pinned: dict[str, Value]) -> list[Path]:
    names = _PLACEHOLDER.findall(pattern)
    if not names:
        raise UnscopedGlobError(
            f"scoped_glob pattern {pattern!r} has no {{category}} placeholder: it matches "
            "every category's artifacts (AP-17, INV-9); write the category into it, e.g. "
            "'_chunk_{phase}_*.parquet', and pass phase=<one value>")
    for name in names:
        if not name.isidentifier():
            raise ParamError(f"scoped_glob pattern {pattern!r}: placeholder {{{name}}} is not "
                             "a name; use {phase}-style placeholders")
        if name not in pinned:
            raise UnscopedGlobError(
                f"scoped_glob pattern {pattern!r}: category {name!r} is not pinned (AP-17, "
                f"INV-9); pass {name}=<one value> and loop over the values you mean")
    extra = sorted(set(pinned) - set(names))
    if extra:
        raise ParamError(f"scoped_glob pattern {pattern!r}: {', '.join(map(repr, extra))} is "
                         "not a placeholder of the pattern; add {" + extra[0] + "} to it or "
                         "do not pass it")
    for m in _PLACEHOLDER.finditer(pattern):
        before, after = pattern[m.start() - 1 : m.start()], pattern[m.end() : m.end() + 1]
        if (before and before in _GLOB_CHARS + "]") or (after and after in _GLOB_CHARS):
            raise UnscopedGlobError(
                f"scoped_glob pattern {pattern!r}: a wildcard touches {{{m.group(1)}}}, so "
                "it also matches longer values of another category (AP-17); put a separator "
                "between them, e.g. '{phase}_*'")
    literal: dict[str, str] = {}
    for name in dict.fromkeys(names):
        value = pinned[name]
        text = value if isinstance(value, str) else encode_value(value)
        if not text or "*" in text or "?" in text or "/" in text:  # '[' is escaped below
            raise UnscopedGlobError(
                f"scoped_glob pattern {pattern!r}: category {name!r} is pinned to {text!r}; "
                f"pass {name}=<one plain value> (no wildcard, no '/') and loop over the "
                "values you mean")
        literal[name] = glob.escape(text)
    rendered = _PLACEHOLDER.sub(lambda m: literal[m.group(1)], pattern)
    return sorted(Path(p) for p in glob.glob(str(directory / rendered)))


def _spec_glob(spec: CheckpointSpec, pinned: dict[str, Value]) -> list[Path]:
    """Existing files of `spec`'s family in `spec.base_dir` whose categories equal the pinned
    values (every category must be pinned) and whose pinned parameters match; sorted.

    Names are matched field by field (not with fnmatch), so a `*` can never stretch across
    the `_` separator into another category or another family with a longer stem."""
    wanted = _pinned_fields(spec, pinned)
    try:
        entries = sorted(os.listdir(spec.base_dir))
    except FileNotFoundError:
        return []  # nothing written yet: an empty family, not an error
    found = []
    for name in entries:
        values = spec.parse(name)
        if values is None:
            continue
        if all(encode_value(values[f]) == v for f, v in wanted.items()):
            found.append(spec.base_dir / name)
    return found


def _pinned_fields(spec: CheckpointSpec, pinned: dict[str, Value]) -> dict[str, str]:
    unknown = sorted(set(pinned) - set(spec.fields))
    if unknown:
        raise ParamError(f"scoped_glob over {spec.stem!r}: {', '.join(map(repr, unknown))} is "
                         f"not declared (declared: {', '.join(spec.fields) or 'none'}); "
                         "pin only declared categories and parameters")
    for category in spec.categories:
        if category not in pinned:
            raise UnscopedGlobError(
                f"scoped_glob over {spec.stem!r}: category {category!r} is not pinned; a glob "
                "across categories touches other phases' artifacts (AP-17, INV-9). Pass "
                f"{category}=<one value> and loop over the values you mean")
        value = pinned[category]
        if isinstance(value, str) and WILDCARD in value:
            raise UnscopedGlobError(
                f"scoped_glob over {spec.stem!r}: category {category!r} is pinned to "
                f"{value!r}; a wildcard in a category position mixes categories (AP-17, "
                f"INV-9). Pass {category}=<one value> and loop over the values you mean")
    return {f: encode_value(v) for f, v in pinned.items()
            if not (f in spec.params and v == WILDCARD)}
