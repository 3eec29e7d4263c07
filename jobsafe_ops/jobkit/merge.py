"""Post-merge contamination check (INV-9).

After merging a category's artifacts, assert the category column holds only the expected
values: AP-17's merge of "long" chunks silently pulled in "short" ones (8.7 M mixed rows),
and the same mistake seen from the other side found 0 chunks - so an empty merge is an
error too unless the caller says it may be empty. Dependency-free: rows are mappings
(dicts, csv.DictReader rows, `df.to_dict("records")`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterable, Mapping
from typing import Any

from .errors import ContaminationError, JobkitError


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


MISSING: Any = _Missing()  # counted for rows that lack the column


def validate_merged(rows: Iterable[Mapping[str, Any]], column: str,
                    expected: Iterable[Hashable], *, allow_empty: bool = False) -> Counter[Any]:
    """Raise ContaminationError listing every unexpected value of `column` with its count;
    return the count per value otherwise. A row without the column counts as `<missing>`."""
    def values() -> Iterable[Any]:
        for i, row in enumerate(rows):
            if not isinstance(row, Mapping):
                raise JobkitError(f"validate_merged: row {i} is a {type(row).__name__}, not a "
                                  "mapping; pass dict rows, or use validate_values for plain "
                                  "values")
            yield row.get(column, MISSING)
    return validate_values(values(), expected, what=f"column {column!r}",
                           allow_empty=allow_empty)


def validate_values(values: Iterable[Hashable], expected: Iterable[Hashable], *,
                    what: str = "values", allow_empty: bool = False) -> Counter[Any]:
    """`validate_merged` for a plain sequence of category values (one per row)."""
    allowed = frozenset(expected)
    try:
        counts: Counter[Any] = Counter(values)
    except TypeError as exc:
        raise JobkitError(f"validate_merged: {what} holds an unhashable value ({exc}); "
                          "category values must be strings or numbers") from None
    if not counts and not allow_empty:
        raise ContaminationError(
            f"INV-9: merged {what} is empty (expected {_show(allowed)}); the merge found no "
            "artifacts - check the scoped glob's category values, or pass allow_empty=True")
    bad = {v: n for v, n in counts.items() if v not in allowed}
    if bad:
        listed = ", ".join(f"{v!r} x{n}" for v, n in
                           sorted(bad.items(), key=lambda kv: (-kv[1], repr(kv[0]))))
        raise ContaminationError(
            f"INV-9: merged {what} holds unexpected values {listed} (expected only "
            f"{_show(allowed)}); the merge read another category's artifacts - build its "
            "input list with scoped_glob pinned to one category (AP-17)")
    return counts


def _show(allowed: frozenset[Hashable]) -> str:
    return "{" + ", ".join(sorted(map(repr, allowed))) + "}"
