"""Scoped globs over a category-scoped artifact family (INV-9, AP-17).

AP-17: phase A's merge globbed `_chunk_*.parquet`, read phase B's chunks and wrote an
8.7 M-row mixed Parquet; its cleanup deleted them. So a glob here is built from the family's
declaration, every category must be pinned to one value, and a wildcard in a category is an
error naming the dimension. Parameters may stay open (`symbol="*"` or simply left out).
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import ParamError, UnscopedGlobError
from .paths import CheckpointSpec, Value, encode_value

WILDCARD = "*"


def scoped_glob(spec: CheckpointSpec, **pinned: Value) -> list[Path]:
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
